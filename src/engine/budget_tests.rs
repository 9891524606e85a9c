//! Scenario tests of budgets in the engine: a scripted memory signal, strategies that lower
//! it (or not), and tokio's paused clock. The budget reads each rung's effect from the
//! following regular samples.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use perfpilot_strategies::{StrategyError, TriggerSpec};

use super::test_memory::Memory;
use super::*;
use crate::budget::{AtLimit, BudgetConfig, BudgetState};

/// A rung: acts, and sets memory to `to` when given (else changes nothing).
#[derive(Debug)]
struct Rung {
    name: &'static str,
    to: Option<f64>,
    memory: Memory,
    runs: Arc<AtomicU32>,
}

#[async_trait]
impl Strategy for Rung {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some(to) = self.to {
            self.memory.set(to);
        }
        Ok(Outcome::acted(self.name))
    }
}

struct Budgeted {
    memory: Memory,
    runs: Vec<Arc<AtomicU32>>,
    handle: EngineHandle,
    telemetry: Arc<crate::prometheus::Telemetry>,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Budgeted {
    fn runs(&self) -> Vec<u32> {
        self.runs.iter().map(|r| r.load(Ordering::SeqCst)).collect()
    }

    fn budget(&self) -> BudgetView {
        self.handle.view().budgets[0].clone()
    }
}

/// An engine with one budget `memory` over `rungs` (name, memory after it runs) whose
/// triggers are never used (rung-only), unless `triggers` says otherwise.
fn start_budget(
    rungs: &[(&'static str, Option<f64>)],
    config: BudgetConfig,
    rung_only: bool,
) -> Budgeted {
    start_watched_budget(rungs, config, rung_only, None)
}

/// [`start_budget`] with a fast watch the test wakes by hand.
fn start_watched_budget(
    rungs: &[(&'static str, Option<f64>)],
    config: BudgetConfig,
    rung_only: bool,
    watch: Option<WatchHandle>,
) -> Budgeted {
    let memory = Memory::default();
    let mut counters = Vec::new();
    let strategies = rungs
        .iter()
        .map(|&(name, to)| {
            let runs = Arc::new(AtomicU32::new(0));
            counters.push(Arc::clone(&runs));
            Registered {
                strategy: Arc::new(Rung {
                    name,
                    to,
                    memory: memory.clone(),
                    runs,
                }),
                trigger: TriggerSpec::new(Signal::MemoryUsage, 0.5)
                    .cooldown(Duration::from_secs(1)),
            }
        })
        .collect();
    let mut settings = EngineSettings::for_tests();
    settings.budgets = vec![("memory".to_owned(), config)];
    settings.watch = watch;
    if rung_only {
        settings.rung_only = rungs.iter().map(|(name, _)| (*name).to_owned()).collect();
    }
    let shutdown = CancellationToken::new();
    let (handle, _task) = spawn(
        settings,
        strategies,
        Arc::new(Registry::default()),
        Box::new(memory.clone()),
        shutdown.clone(),
    );
    Budgeted {
        memory,
        runs: counters,
        telemetry: super::tests::follow(&handle),
        handle,
        _shutdown: shutdown.drop_guard(),
    }
}

fn config(ladder: &[&str]) -> BudgetConfig {
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 0.8, 0.95, ladder);
    config.settle = Duration::from_secs(2);
    config.cooldown = Duration::from_secs(10);
    config
}

async fn records_until(
    events: &mut broadcast::Receiver<Event>,
    count: usize,
) -> Vec<Arc<OptimizationRecord>> {
    let mut records = Vec::new();
    while records.len() < count {
        if let Event::OptimizationCompleted(record) = events.recv().await.unwrap() {
            records.push(record);
        }
    }
    records
}

#[tokio::test(start_paused = true)]
async fn the_ladder_climbs_until_a_rung_helps_and_the_episode_ends_after_calm_samples() {
    let b = start_budget(
        &[
            ("purge", None),
            ("soft-trim", None),
            ("hard-trim", Some(0.6)),
        ],
        config(&["purge", "soft-trim", "hard-trim"]),
        true,
    );
    let mut events = b.handle.subscribe();
    b.memory.set(0.5);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        b.runs(),
        [0, 0, 0],
        "in band: the rung-only triggers (0.5) never fire"
    );
    b.memory.set(0.9);
    let mut records = Vec::new();
    let mut arrived = Vec::new();
    for _ in 0..3 {
        records.push(records_until(&mut events, 1).await.pop().unwrap());
        arrived.push(Instant::now());
    }
    let steps: Vec<(&str, usize, u64)> = records
        .iter()
        .map(|r| {
            let step = r.budget.as_ref().expect("a budget run");
            (r.strategy.as_str(), step.rung, step.episode)
        })
        .collect();
    assert_eq!(
        steps,
        [("purge", 0, 1), ("soft-trim", 1, 1), ("hard-trim", 2, 1)]
    );
    // Each climb waited for the settle (2 s) of the rung before, read from regular samples.
    for pair in arrived.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_secs(2), "climbed after {gap:?}");
    }
    let why = &records[1].budget.as_ref().unwrap().why;
    assert!(
        why.contains("climbed to rung 2 of 3, purge did not help"),
        "{why}"
    );
    assert!(records[2]
        .reason
        .starts_with("budget memory, episode 1, rung 3 (hard-trim)"));
    // Back under goal: the episode ends after `calm` (3) samples once hard-trim is judged.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let view = b.budget();
    assert_eq!(view.episode, None, "{view:?}");
    assert_eq!(view.state, BudgetState::InBand);
    assert_eq!(view.rungs[2].helped, 1);
    assert_eq!(view.rungs[0].helped, 0);
    assert!(
        (4.0..=6.0).contains(&view.seconds_above_goal.total),
        "three rungs, 2 s apart: {view:?}"
    );
    assert_eq!(b.runs(), [1, 1, 1]);
    // The next episode starts from the bottom.
    b.memory.set(0.9);
    let record = records_until(&mut events, 1).await.pop().unwrap();
    assert_eq!(
        (
            record.strategy.as_str(),
            record.budget.as_ref().unwrap().episode
        ),
        ("purge", 2)
    );
}

#[tokio::test(start_paused = true)]
async fn an_unhelpful_rung_is_skipped_and_the_record_says_so() {
    let mut config = config(&["purge", "trim"]);
    config.skip_after = 2;
    config.calm = 1;
    let b = start_budget(&[("purge", None), ("trim", Some(0.6))], config, true);
    let mut events = b.handle.subscribe();
    for _ in 0..3 {
        b.memory.set(0.9);
        let mut trim = None;
        while trim.is_none() {
            let record = records_until(&mut events, 1).await.pop().unwrap();
            if record.strategy == "trim" {
                trim = Some(record);
            }
        }
        // wait for the episode to end before the next
        let mut view = b.handle.watch();
        view.wait_for(|v| v.budgets[0].episode.is_none())
            .await
            .unwrap();
        if b.runs()[0] == 2 {
            // purge has now failed twice: the third episode goes straight to trim.
            b.memory.set(0.9);
            let record = records_until(&mut events, 1).await.pop().unwrap();
            assert_eq!(record.strategy, "trim");
            let why = &record.budget.as_ref().unwrap().why;
            assert!(
                why.contains("skipped purge (no help in their last 2 runs)"),
                "{why}"
            );
            assert!(b.budget().rungs[0].skipped);
            return;
        }
    }
    panic!("purge was never skipped: runs {:?}", b.runs());
}

#[tokio::test(start_paused = true)]
async fn a_ladder_that_runs_out_above_the_limit_is_exhausted_with_an_event_and_a_counter() {
    let b = start_budget(
        &[("purge", None), ("trim", None)],
        config(&["purge", "trim"]),
        true,
    );
    let mut events = b.handle.subscribe();
    b.memory.set(0.97);
    let exhaustion = loop {
        if let Event::BudgetExhausted(e) = events.recv().await.unwrap() {
            break e;
        }
    };
    assert_eq!(
        (exhaustion.budget.as_str(), exhaustion.episode),
        ("memory", 1)
    );
    assert!(
        exhaustion.message.contains("purge → trim"),
        "{}",
        exhaustion.message
    );
    assert_eq!(b.runs(), [1, 1], "said so instead of repeating itself");
    assert_eq!(
        Event::BudgetExhausted(exhaustion).name(),
        "budget-exhausted"
    );
    let metrics = b.telemetry.encode_prometheus_text().unwrap();
    assert!(
        metrics.contains(
            "perfpilot_budget_exhausted_total{worker=\"engine-test\",budget=\"memory\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("perfpilot_budget_state{worker=\"engine-test\",budget=\"memory\"} 2"));
    let view = b.budget();
    assert!(
        view.exhausted && view.seconds_above_limit.episode > 0.0,
        "{view:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn at_limit_top_runs_the_top_rung_at_once() {
    let mut config = config(&["purge", "trim", "drop"]);
    config.at_limit = AtLimit::Top;
    let b = start_budget(
        &[("purge", None), ("trim", None), ("drop", Some(0.5))],
        config,
        true,
    );
    let mut events = b.handle.subscribe();
    b.memory.set(0.99);
    let record = records_until(&mut events, 1).await.pop().unwrap();
    assert_eq!(record.strategy, "drop");
    assert_eq!(record.level, Level::Critical);
    assert_eq!(b.runs(), [0, 0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_one_rung_budget_behaves_like_a_trigger() {
    // As `cooldown_spaces_automatic_runs_under_persistent_pressure` with a trigger at 0.8 and
    // a 10 s cooldown: runs at about 1 s, 11 s and 21 s under steady pressure.
    let b = start_budget(
        &[("test-strategy", Some(0.95))],
        config(&["test-strategy"]),
        true,
    );
    b.memory.set(0.95);
    tokio::time::sleep(Duration::from_millis(25_500)).await;
    assert_eq!(b.runs(), [3]);
    // And one that relieves the signal runs once per rise, like a trigger that re-arms.
    let b = start_budget(
        &[("test-strategy", Some(0.3))],
        config(&["test-strategy"]),
        true,
    );
    for _ in 0..3 {
        b.memory.set(0.9);
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    assert_eq!(b.runs(), [3]);
}

#[tokio::test(start_paused = true)]
async fn a_rung_with_its_own_trigger_still_fires_from_it() {
    // Not rung-only: the trigger at 0.5 (cooldown 1 s) fires under the goal.
    let b = start_budget(&[("purge", None)], config(&["purge"]), false);
    b.memory.set(0.6);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(b.runs()[0] >= 2, "{:?}", b.runs());
    assert_eq!(b.budget().episodes, 0, "under goal: no episode");
}

#[tokio::test(start_paused = true)]
async fn dry_run_shows_the_ladder_it_would_climb() {
    let b = {
        let memory = Memory::default();
        let strategies = ["purge", "trim"]
            .into_iter()
            .map(|name| Registered {
                strategy: Arc::new(Rung {
                    name,
                    to: Some(0.1),
                    memory: memory.clone(),
                    runs: Arc::new(AtomicU32::new(0)),
                }),
                trigger: TriggerSpec::new(Signal::MemoryUsage, 0.99),
            })
            .collect();
        let mut settings = EngineSettings::for_tests();
        settings.dry_run = true;
        settings.budgets = vec![("memory".to_owned(), config(&["purge", "trim"]))];
        let (handle, _task) = spawn(
            settings,
            strategies,
            Arc::new(Registry::default()),
            Box::new(memory.clone()),
            CancellationToken::new(),
        );
        memory.set(0.9);
        handle
    };
    let mut events = b.subscribe();
    let records = records_until(&mut events, 2).await;
    assert!(records.iter().all(|r| r.dry_run));
    let names: Vec<_> = records.iter().map(|r| r.strategy.as_str()).collect();
    assert_eq!(names, ["purge", "trim"]);
    assert!(b.view().budgets[0].rungs.iter().all(|r| r.judged == 0));
}

/// The path the real watch takes: a wake between samples makes the engine take a full sample
/// and judge the budget on it, so the episode starts at once, not at the next tick.
#[tokio::test(start_paused = true)]
async fn a_fast_watch_wake_between_samples_starts_the_episode_at_once() {
    let mut config = config(&["purge"]);
    config.watch_interval = Some(Duration::from_millis(20));
    let watch = WatchHandle::for_tests();
    let b = start_watched_budget(&[("purge", Some(0.5))], config, true, Some(watch.clone()));
    let mut view = b.handle.watch();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    b.memory.set(0.9);
    watch.wake(Signal::MemoryUsage, WatchMode::Poll);
    // Recorded (judged only by a later sample) within 100 ms: not at the next sample.
    let recorded = tokio::time::timeout(
        Duration::from_millis(100),
        view.wait_for(|v| !v.recent.is_empty()),
    )
    .await
    .expect("the wake's run recorded within 100 ms, not at the next sample")
    .expect("the engine runs")
    .clone();
    assert_eq!(recorded.recent[0].before, Some(0.9));
    assert_eq!(recorded.budgets[0].episode, Some(1));
    // Fixed reaction (these tests' setting) does not act on urgency: no reaction is
    // published for the watch to wake on (reaction_tests has the adaptive side).
    assert_eq!(watch.reaction("memory"), None);
}
