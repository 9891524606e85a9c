//! Adaptive reaction through the engine (`[tuning] reaction = "adaptive"`): a scripted memory
//! signal against a cgroup limit, rungs that do nothing, an OOM-kill count the test raises,
//! and tokio's paused clock: urgency starts an episode, a climb without waiting out the
//! settle, skip-to-rung by learned relief, the counterfactual verdict, the guard band after
//! a breach and after an OOM kill. The same scripts with `reaction = "fixed"` show the
//! difference.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use perfpilot_strategies::{MemoryLimitSource, StrategyError, TriggerSpec};

use super::*;
use crate::budget::urgency::Reaction;
use crate::budget::{BudgetConfig, ReactionMode, ReactionTuning, FIRST_RUN_LATENCY};

/// A memory usage ratio against a cgroup limit (the kernel's: a kill line), and the cgroup's
/// OOM-kill count; the test sets both.
#[derive(Clone, Default)]
struct Cgroup(Arc<StdMutex<(f64, u64)>>);

impl Cgroup {
    fn set(&self, value: f64) {
        self.0.lock().unwrap().0 = value;
    }

    fn kill(&self) {
        self.0.lock().unwrap().1 += 1;
    }
}

impl fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cgroup")
    }
}

impl SignalSource for Cgroup {
    fn sample(&mut self) -> Snapshot {
        let (value, kills) = *self.0.lock().unwrap();
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.memory_usage_ratio = Some(value);
        snapshot.memory_limit_source = Some(MemoryLimitSource::Cgroup);
        snapshot.oom_kills = Some(kills);
        snapshot
    }
}

/// A rung that acts and changes nothing.
#[derive(Debug)]
struct Idle {
    name: &'static str,
    runs: Arc<AtomicU32>,
}

#[async_trait]
impl Strategy for Idle {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(Outcome::acted(self.name))
    }
}

struct Held {
    cgroup: Cgroup,
    runs: Vec<Arc<AtomicU32>>,
    handle: EngineHandle,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Held {
    fn runs(&self) -> Vec<u32> {
        self.runs.iter().map(|r| r.load(Ordering::SeqCst)).collect()
    }

    fn budget(&self) -> BudgetView {
        self.handle.view().budgets[0].clone()
    }
}

/// An engine sampling every second with one budget `memory` (goal 0.8, limit 1.0, settle
/// 2 s) over rung-only `purge` → `trim`, reacting as `mode` says.
fn hold(mode: ReactionMode) -> Held {
    hold_watched(mode, None)
}

/// [`hold`] with a fast watch's handle, to which the engine publishes reaction times.
fn hold_watched(mode: ReactionMode, watch: Option<WatchHandle>) -> Held {
    hold_with(mode, watch, |_| {})
}

/// [`hold_watched`] with the budget's configuration changed by `tweak` first.
fn hold_with(
    mode: ReactionMode,
    watch: Option<WatchHandle>,
    tweak: impl FnOnce(&mut BudgetConfig),
) -> Held {
    hold_sampled(mode, watch, Duration::from_secs(1), tweak)
}

/// [`hold_with`], sampling every `every` instead of every second.
fn hold_sampled(
    mode: ReactionMode,
    watch: Option<WatchHandle>,
    every: Duration,
    tweak: impl FnOnce(&mut BudgetConfig),
) -> Held {
    hold_sampled_up_to(mode, watch, IntervalControl::new(every, every * 8), tweak)
}

/// [`hold_sampled`] with the sampling interval `interval` controls.
fn hold_sampled_up_to(
    mode: ReactionMode,
    watch: Option<WatchHandle>,
    interval: IntervalControl,
    tweak: impl FnOnce(&mut BudgetConfig),
) -> Held {
    let cgroup = Cgroup::default();
    cgroup.set(0.3);
    let mut runs = Vec::new();
    let strategies = ["purge", "trim"]
        .into_iter()
        .map(|name| {
            let count = Arc::new(AtomicU32::new(0));
            runs.push(Arc::clone(&count));
            Registered {
                strategy: Arc::new(Idle { name, runs: count }),
                trigger: TriggerSpec::new(Signal::MemoryUsage, 0.99),
            }
        })
        .collect();
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 0.8, 1.0, &["purge", "trim"]);
    config.settle = Duration::from_secs(2);
    tweak(&mut config);
    let mut settings = EngineSettings::for_tests();
    settings.budgets = vec![("memory".to_owned(), config)];
    settings.rung_only = vec!["purge".to_owned(), "trim".to_owned()];
    settings.watch = watch;
    settings.interval = interval;
    settings.reaction = ReactionTuning {
        mode,
        ..ReactionTuning::ADAPTIVE
    };
    let shutdown = CancellationToken::new();
    let (handle, _task) = spawn(
        settings,
        strategies,
        Arc::new(Registry::default()),
        Box::new(cgroup.clone()),
        shutdown.clone(),
    );
    Held {
        cgroup,
        runs,
        handle,
        _shutdown: shutdown.drop_guard(),
    }
}

/// [`hold`], and half a sample's wait: the test then sets values between the engine's
/// samples (at whole seconds), each read by exactly one.
async fn start(mode: ReactionMode) -> Held {
    let held = hold(mode);
    tokio::time::sleep(Duration::from_millis(500)).await;
    held
}

/// [`hold_with`], and half a sample's wait (see [`start`]).
async fn start_with(mode: ReactionMode, tweak: impl FnOnce(&mut BudgetConfig)) -> Held {
    let held = hold_with(mode, None, tweak);
    tokio::time::sleep(Duration::from_millis(500)).await;
    held
}

/// The next finished record whose reason contains `text`, waited for at most 30 s.
async fn record_naming(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    text: &str,
) -> OptimizationRecord {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Event::OptimizationCompleted(record) = events.recv().await.unwrap() {
                if record.reason.contains(text) {
                    break OptimizationRecord::clone(&record);
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a record whose reason names {text:?} within 30 s"))
}

/// Sets the signal to each of `values`, one sample (1 s) apart.
async fn feed(held: &Held, values: &[f64]) {
    for &value in values {
        held.cgroup.set(value);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_steep_rise_under_goal_starts_the_ladder_before_the_goal_is_crossed() {
    // 0.15 a second toward the cgroup's limit: at 0.6 it is 2.7 s away, and purge needs
    // 100 ms + 2 s settle + 1 s between samples + as much again as margin (a kill line).
    let rising = [0.3, 0.45, 0.6, 0.75];
    let fixed = start(ReactionMode::Fixed).await;
    feed(&fixed, &rising).await;
    assert_eq!(fixed.runs(), [0, 0], "fixed: under goal, nothing runs");

    let held = start(ReactionMode::Adaptive).await;
    let mut events = held.handle.subscribe();
    feed(&held, &rising).await;
    assert_eq!(
        held.runs()[0],
        1,
        "purge ran under goal: {:?}",
        held.budget()
    );
    let view = held.budget();
    assert!(view.kill_line, "memory_usage against the cgroup's limit");
    assert_eq!(view.episode, Some(1));
    assert!(view.urgency.is_some_and(|u| u.urgent), "{view:?}");
    let record = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Event::OptimizationCompleted(record) = events.recv().await.unwrap() {
                break record;
            }
        }
    })
    .await
    .expect("purge's record within 30 s");
    assert!(
        record.reason.contains("under goal 0.8, urgent"),
        "{}",
        record.reason
    );
}

#[tokio::test(start_paused = true)]
async fn bursty_2_mib_steps_far_below_the_goal_start_no_episode() {
    // The browser test's demo, read every 20 ms: a 96 MiB budget, 16 MiB used, then one
    // 2 MiB chunk every 500 ms (4 MiB/s), each landing between two reads. The last five
    // reads after a step rise at 33 MiB/s, the limit 2.3 s away against purge's 4.3 s
    // (100 ms + 2 s settle + 20 ms, twice: a kill line); but over the 0.6 s that
    // extrapolation needs the rise is 2 MiB: 3.4 MiB/s, the limit 23 s away.
    let every = Duration::from_millis(20);
    let held = hold_sampled(ReactionMode::Adaptive, None, every, |_| {});
    held.cgroup.set(16.0 / 96.0);
    // Between two reads from here on.
    tokio::time::sleep(Duration::from_millis(1_010)).await;
    for step in 1..=10 {
        held.cgroup.set((16.0 + 2.0 * f64::from(step)) / 96.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let view = held.budget();
    assert_eq!(held.runs(), [0, 0], "{view:?}");
    assert_eq!(
        view.episode, None,
        "no episode at {:?}: {view:?}",
        view.value
    );
    assert!(view.urgency.is_some_and(|u| !u.urgent), "{view:?}");
    // A steady fill at the same read rate is urgent (3 % of the limit per read, 1.5/s).
    for step in 1..=10 {
        held.cgroup.set((36.0 + 3.0 * f64::from(step)) / 96.0);
        tokio::time::sleep(every).await;
    }
    assert_eq!(held.runs()[0], 1, "purge ran: {:?}", held.budget());
    assert_eq!(held.budget().episode, Some(1));
}

#[tokio::test(start_paused = true)]
async fn near_the_limit_the_engine_climbs_without_waiting_out_the_settle() {
    // Urgent at 0.7 (3 s from the limit): purge; still rising at the next sample, with the
    // limit nearer than purge's 2 s settle: trim at once, not 2 s later.
    let held = start(ReactionMode::Adaptive).await;
    feed(&held, &[0.5, 0.6, 0.7]).await;
    assert_eq!(held.runs(), [1, 0], "{:?}", held.budget());
    feed(&held, &[0.85]).await;
    assert_eq!(held.runs(), [1, 1], "{:?}", held.budget());

    let fixed = start(ReactionMode::Fixed).await;
    feed(&fixed, &[0.5, 0.6, 0.7, 0.85, 0.93]).await;
    assert_eq!(fixed.runs(), [1, 0], "fixed waits out the settle");
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_lowers_the_goal_held_and_it_survives_the_target_restart() {
    let held = start(ReactionMode::Adaptive).await;
    // A rise of 0.1 a second seen; then the kernel kills the target, which restarts low.
    feed(&held, &[0.3, 0.4, 0.5]).await;
    held.cgroup.kill();
    feed(&held, &[0.05, 0.05, 0.06, 0.06]).await;
    let view = held.budget();
    assert_eq!(view.goal, 0.8);
    // 0.1/s × (purge's latency, about 0 here, + 2 s settle + 1 s between samples) = 0.3.
    assert!(
        (view.effective_goal - 0.5).abs() < 0.02,
        "{}: {}",
        view.effective_goal,
        view.goal_why
    );
    assert!(
        view.goal_why.contains("OOM-killed (oom_kills 0 → 1"),
        "{}",
        view.goal_why
    );

    // The same with fixed reaction: nothing learned.
    let fixed = start(ReactionMode::Fixed).await;
    feed(&fixed, &[0.3, 0.4, 0.5]).await;
    fixed.cgroup.kill();
    feed(&fixed, &[0.05, 0.05]).await;
    assert_eq!(fixed.budget().effective_goal, 0.8);

    // Reset through the handle: back to the configured goal.
    assert_eq!(
        held.handle.reset_learning(Some("memory")).await,
        Ok(vec!["memory".to_owned()])
    );
    assert_eq!(held.budget().effective_goal, 0.8);
    assert!(matches!(
        held.handle.reset_learning(Some("cpu")).await,
        Err(ResetError::UnknownBudget { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn the_watch_is_told_the_reaction_the_budget_works_out_and_only_when_adaptive() {
    let watch = WatchHandle::for_tests();
    let held = hold_watched(ReactionMode::Adaptive, Some(watch.clone()));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // purge has not run: its first-run estimate, the budget's 2 s settle, and the 1 s
    // between the engine's samples (the watch puts in its own period).
    assert_eq!(
        watch.reaction("memory"),
        Some(
            Reaction::new(FIRST_RUN_LATENCY, Duration::from_secs(2))
                .watch_period(Duration::from_secs(1))
        ),
        "{:?}",
        held.budget()
    );

    let fixed_watch = WatchHandle::for_tests();
    let _fixed = hold_watched(ReactionMode::Fixed, Some(fixed_watch.clone()));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        fixed_watch.reaction("memory"),
        None,
        "fixed: urgency never wakes it"
    );
}

#[tokio::test(start_paused = true)]
async fn an_overshoot_past_what_the_first_rung_relieved_skips_to_the_rung_that_relieved_it() {
    let held = start(ReactionMode::Adaptive).await;
    // Episode 1: urgent at 0.6 (rising 0.125/s, the limit 3.2 s away): purge, and the rise
    // goes on (0.75: no relief against the trend); trim, and the signal falls; calm.
    feed(
        &held,
        &[0.3, 0.45, 0.6, 0.75, 0.45, 0.3, 0.3, 0.3, 0.3, 0.3],
    )
    .await;
    assert_eq!(held.runs(), [1, 1], "{:?}", held.budget());
    let view = held.budget();
    assert_eq!(view.episode, None, "episode 1 ended calm: {view:?}");
    assert_eq!(
        (view.rungs[0].judged, view.rungs[0].helped),
        (1, 0),
        "{view:?}"
    );
    assert_eq!(
        (view.rungs[1].judged, view.rungs[1].helped),
        (1, 1),
        "{view:?}"
    );

    // Episode 2: a jump to 0.9 at 0.15/s, forecast past the kill line before purge could
    // act; purge relieved nothing, trim did: straight to trim.
    let mut events = held.handle.subscribe();
    feed(&held, &[0.6, 0.9]).await;
    assert_eq!(held.runs(), [1, 2], "purge skipped: {:?}", held.budget());
    let view = held.budget();
    assert_eq!(view.episode, Some(2));
    assert_eq!(view.rung_strategy.as_deref(), Some("trim"), "{view:?}");
    let record = record_naming(&mut events, "skipped to trim").await;
    assert_eq!(record.strategy, "trim");
    assert!(
        record.reason.contains("purge relieves 0 %, trim relieves"),
        "{}",
        record.reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_rung_after_which_a_rise_plateaus_is_judged_helped_against_the_forecast() {
    // Urgent at 0.6, rising 0.15/s: purge runs, and the signal stays at 0.6. The trend
    // before it forecast 0.9 two seconds later (its settle): relief 0.3, helped.
    let held = start(ReactionMode::Adaptive).await;
    feed(&held, &[0.3, 0.45, 0.6, 0.6, 0.6]).await;
    let purge = &held.budget().rungs[0];
    assert_eq!(
        (purge.runs, purge.judged, purge.helped),
        (1, 1, 1),
        "{purge:?}"
    );
    let relief = purge.mean_relief.expect("purge was judged");
    assert!((relief - 0.3).abs() < 1e-6, "0.15/s × 2 s: {purge:?}");
    // Judged helped, and the plateau is not urgent: the last five samples still hold the
    // rise before it (a slope of 0.075/s), but the 1.3 s a 5.3 s extrapolation needs is flat.
    assert_eq!(held.runs(), [1, 0], "no climb to trim: {:?}", held.budget());

    // Fixed: a plateau after purge, judged by the level alone, did not help, and trim runs.
    let fixed = start(ReactionMode::Fixed).await;
    feed(&fixed, &[0.5, 0.7, 0.85, 0.85, 0.85, 0.85]).await;
    let purge = &fixed.budget().rungs[0];
    assert_eq!((purge.judged, purge.helped), (1, 0), "{purge:?}");
    assert_eq!(fixed.runs(), [1, 1]);
}

#[tokio::test(start_paused = true)]
async fn the_record_of_a_rung_after_which_a_rise_plateaus_says_it_helped() {
    // The rise and plateau above: the run's record (what recentOptimizations, the recorder
    // and the report show) takes the budget's counterfactual verdict, as its rung's
    // statistics do.
    let held = start(ReactionMode::Adaptive).await;
    let mut events = held.handle.subscribe();
    feed(&held, &[0.3, 0.45, 0.6, 0.6, 0.6]).await;
    let record = record_naming(&mut events, "(purge)").await;
    assert_eq!(record.helped, Some(true), "{record:?}");
    assert_eq!((record.before, record.after), (Some(0.6), Some(0.6)));
    let purge = &held.budget().rungs[0];
    assert_eq!((purge.judged, purge.helped), (1, 1), "{purge:?}");
    let stats = &held.handle.view().stats.per_strategy["purge"];
    assert_eq!((stats.judged, stats.helped), (1, 1), "{stats:?}");

    // Fixed: the level rule, in the record as in the rung.
    let fixed = start(ReactionMode::Fixed).await;
    let mut events = fixed.handle.subscribe();
    feed(&fixed, &[0.5, 0.7, 0.85, 0.85, 0.85, 0.85]).await;
    let record = record_naming(&mut events, "(purge)").await;
    assert_eq!(record.helped, Some(false), "{record:?}");
}

#[tokio::test(start_paused = true)]
async fn a_breach_of_the_limit_lowers_the_goal_held_by_the_overshoot_down_to_min_goal() {
    // A limit under the cgroup's (not a kill line): the signal peaks 0.05 over it.
    let breach = [0.3, 0.9, 1.0, 0.6, 0.6, 0.6];
    let held = start_with(ReactionMode::Adaptive, |c| c.limit = 0.95).await;
    feed(&held, &breach).await;
    let view = held.budget();
    assert!(!view.kill_line);
    assert_eq!(view.goal, 0.8, "the configured goal is shown as it is");
    assert!(
        (view.effective_goal - 0.75).abs() < 1e-9,
        "0.8 − (1.0 − 0.95): {}: {}",
        view.effective_goal,
        view.goal_why
    );
    assert!(
        view.goal_why
            .contains("the limit 0.95 was breached (peak 1, 0.05 over)"),
        "{}",
        view.goal_why
    );

    // 0.15 over a limit of 0.85 would take the goal to 0.65: min_goal 0.7 holds it.
    let floored = start_with(ReactionMode::Adaptive, |c| {
        c.limit = 0.85;
        c.min_goal = Some(0.7);
    })
    .await;
    feed(&floored, &breach).await;
    let view = floored.budget();
    assert!(
        (view.effective_goal - 0.7).abs() < 1e-9,
        "{}: {}",
        view.effective_goal,
        view.goal_why
    );
    assert!(view.goal_why.contains("min_goal"), "{}", view.goal_why);

    // Fixed: the goal stays where it was configured.
    let fixed = start_with(ReactionMode::Fixed, |c| c.limit = 0.95).await;
    feed(&fixed, &breach).await;
    assert_eq!(fixed.budget().effective_goal, 0.8);
    assert_eq!(fixed.budget().goal_why, "as configured");
}

/// The noise band's scripts: read every 100 ms (never slower), a 1 s settle and a 5 s cooldown (as
/// `examples/sidecar.toml`); against the cgroup's limit (a kill line) purge needs
/// (100 ms + 1 s + 100 ms) × 2 = 2.4 s.
fn hold_noisy() -> Held {
    let every = Duration::from_millis(100);
    let held = hold_sampled_up_to(
        ReactionMode::Adaptive,
        None,
        IntervalControl::new(every, every),
        |c| {
            c.settle = Duration::from_secs(1);
            c.cooldown = Duration::from_secs(5);
        },
    );
    // The scripts start at 0.42, from the first sample on.
    held.cgroup.set(0.42);
    held
}

/// `seconds` of a triangle swing from `low` to `high` and back every `period` reads, one
/// value per 100 ms read, starting at `low`.
fn swing(low: f64, high: f64, period: usize, seconds: usize) -> Vec<f64> {
    (0..seconds * 10)
        .map(|i| {
            let phase = (i % period) as f64 / period as f64;
            low + (high - low) * (1.0 - (2.0 * phase - 1.0).abs())
        })
        .collect()
}

/// Sets the signal to each of `values`, one read (100 ms) apart.
async fn feed_reads(held: &Held, values: &[f64]) {
    for &value in values {
        held.cgroup.set(value);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A band made slowly, one read per 100 ms: a second at 0.42, up to 0.64 at 0.1/s (at its
/// top the kill line is 3.6 s away, against purge's 2.4 s: never urgent), four seconds
/// there, and down again.
fn plateau() -> Vec<f64> {
    let up = (0..=22).map(|i| 0.42 + 0.01 * f64::from(i));
    std::iter::repeat_n(0.42, 10)
        .chain(up.clone())
        .chain(std::iter::repeat_n(0.64, 40))
        .chain(up.rev())
        .collect()
}

/// Feeds `values` one read apart until purge has run; returns at which of them.
async fn read_purge_runs_at(held: &Held, values: &[f64]) -> Option<usize> {
    for (index, &value) in values.iter().enumerate() {
        feed_reads(held, &[value]).await;
        if held.runs()[0] > 0 {
            return Some(index);
        }
    }
    None
}

/// A band formed slowly ([`plateau`]), then 20 s of the demo's fast swing 0.42–0.60 once a
/// second:
/// its up-leg rises 0.36/s and at 0.56 puts the kill line 1.2 s away, against purge's
/// 2.4 s. The old rule started an episode on it; inside the band, nothing runs. A rise past
/// the band's top then starts the episode at its first read above it.
#[tokio::test(start_paused = true)]
async fn a_swing_inside_the_noise_band_starts_no_episode_and_a_breakout_starts_one_at_once() {
    let held = hold_noisy();
    tokio::time::sleep(Duration::from_millis(50)).await;
    feed_reads(&held, &plateau()).await;
    assert_eq!(held.runs(), [0, 0], "the plateau: {:?}", held.budget());
    feed_reads(&held, &swing(0.42, 0.60, 10, 20)).await;
    let view = held.budget();
    assert_eq!(held.runs(), [0, 0], "the fast swing ran a rung: {view:?}");
    assert_eq!(view.episodes, 0, "{view:?}");

    // The up-leg once more, to the band's top (0.60): inside; one step further: urgent.
    let mut events = held.handle.subscribe();
    let up_leg = &swing(0.42, 0.60, 10, 1)[..6];
    feed_reads(&held, up_leg).await;
    assert_eq!(
        held.runs(),
        [0, 0],
        "at the band's top: {:?}",
        held.budget()
    );
    feed_reads(&held, &[0.636]).await;
    assert_eq!(held.runs(), [1, 0], "breakout: {:?}", held.budget());
    let record = record_naming(&mut events, "(purge)").await;
    assert!(
        record
            .reason
            .contains("memory_usage = 0.636 under goal 0.8, urgent (limit in"),
        "{}",
        record.reason
    );
}

/// The fast swing from the start: no band yet, its up-legs are urgent and start episodes
/// (as before; each down-leg is calm long enough to end one). Once the swing has made a
/// band, its readings are calm: the last episode ends and none starts, no rung runs again.
/// With the old rule an episode started on every swing whose rung had cooled down.
#[tokio::test(start_paused = true)]
async fn an_episode_a_swing_started_before_its_band_formed_ends_once_it_has() {
    let held = hold_noisy();
    tokio::time::sleep(Duration::from_millis(50)).await;
    feed_reads(&held, &swing(0.42, 0.60, 10, 12)).await;
    let early = held.runs();
    let episodes = held.budget().episodes;
    assert!(early[0] >= 1, "urgent before the band formed: {early:?}");
    feed_reads(&held, &swing(0.42, 0.60, 10, 30)).await;
    let view = held.budget();
    assert_eq!(view.episode, None, "the episode ended: {view:?}");
    assert_eq!(view.episodes, episodes, "no other started: {view:?}");
    assert_eq!(held.runs(), early, "nothing ran after 12 s: {view:?}");
}

/// A target restarted after swinging at 0.42–0.60 fills back from 0.05 at 0.6/s through the
/// range it swung in: a rise from below the band, urgent at the same read as the same fill
/// after 15 s flat at 0.05 (no band to speak of).
#[tokio::test(start_paused = true)]
async fn a_cold_fill_through_an_old_band_is_urgent_at_the_same_read_as_without_one() {
    let fill: Vec<f64> = (0..15).map(|i| 0.05 + 0.06 * f64::from(i)).collect();

    let flat = hold_noisy();
    tokio::time::sleep(Duration::from_millis(50)).await;
    feed_reads(&flat, &[0.05; 150]).await;
    let without = read_purge_runs_at(&flat, &fill).await;
    assert!(without.is_some(), "the fill is urgent: {:?}", flat.budget());

    let swung = hold_noisy();
    tokio::time::sleep(Duration::from_millis(50)).await;
    feed_reads(&swung, &plateau()).await;
    feed_reads(&swung, &swing(0.42, 0.60, 10, 8)).await;
    assert_eq!(swung.runs(), [0, 0], "the swing: {:?}", swung.budget());
    // The restart: a second at 0.05, then the fill.
    feed_reads(&swung, &[0.05; 10]).await;
    let with = read_purge_runs_at(&swung, &fill).await;
    assert_eq!(with, without, "{:?}", swung.budget());
}
