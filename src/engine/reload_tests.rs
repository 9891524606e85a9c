//! The engine's `Reconfigure` command: settings and strategies swapped in a running engine,
//! on tokio's paused clock with a scripted signal.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use perfpilot_strategies::{StrategyError, TriggerSpec};
use tokio::sync::Semaphore;

use super::test_memory::Memory;
use super::*;

/// Counts its runs; lowers memory to `relieve_to` (a run that helps), after waiting for a
/// permit of `gate` when there is one.
#[derive(Debug)]
struct Counting {
    name: &'static str,
    runs: Arc<AtomicU32>,
    memory: Arc<Mutex<f64>>,
    relieve_to: f64,
    gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl Strategy for Counting {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await.expect("the gate stays open");
            *self.memory.lock().unwrap() = self.relieve_to;
        } else {
            *self.memory.lock().unwrap() = self.relieve_to;
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(Outcome::acted("relieved"))
    }
}

fn registered(
    name: &'static str,
    memory: &Memory,
    above: f64,
    gate: Option<Arc<Semaphore>>,
) -> (Registered, Arc<AtomicU32>) {
    let runs = Arc::new(AtomicU32::new(0));
    let strategy = Counting {
        name,
        runs: Arc::clone(&runs),
        memory: Arc::clone(&memory.0),
        relieve_to: 0.1,
        gate,
    };
    let trigger = TriggerSpec::new(Signal::MemoryUsage, above).cooldown(Duration::from_secs(30));
    (
        Registered {
            strategy: Arc::new(strategy),
            trigger,
        },
        runs,
    )
}

/// Waits (on the paused clock, at most 60 simulated seconds) until `done` holds for the view.
async fn until(handle: &EngineHandle, what: &str, done: impl Fn(&View) -> bool) -> Arc<View> {
    let mut watch = handle.watch();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let view = watch.borrow_and_update().clone();
            if done(&view) {
                return view;
            }
            watch.changed().await.expect("the engine runs");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited 60 s (paused clock) for {what}"))
}

fn strategy<'a>(view: &'a View, name: &str) -> Option<&'a StrategyView> {
    view.strategies.iter().find(|s| s.name == name)
}

#[tokio::test(start_paused = true)]
async fn a_kept_strategy_keeps_its_record_and_state_and_takes_its_new_trigger() {
    let memory = Memory::default();
    memory.set(0.9);
    let (purge, purge_runs) = registered("purge", &memory, 0.8, None);
    let (old, _) = registered("old-hook", &memory, 0.95, None);
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn(
        EngineSettings::for_tests(),
        vec![purge, old],
        Arc::new(Registry::default()),
        Box::new(memory.clone()),
        shutdown.clone(),
    );
    let ran = until(&handle, "the first automatic run, judged", |v| {
        v.stats.count == 1 && v.recent[0].helped.is_some()
    })
    .await;
    assert_eq!(purge_runs.load(Ordering::SeqCst), 1);
    let record_id = ran.recent[0].id;
    assert_eq!(ran.stats.per_strategy["purge"].helped, 1);

    // New threshold for `purge`, `old-hook` gone, `new-hook` added, interval 2 s, 10 records.
    let (purge, _) = registered("purge", &memory, 0.5, None);
    let (new, new_runs) = registered("new-hook", &memory, 0.7, None);
    let mut settings = EngineSettings::for_tests();
    settings.interval = IntervalControl::new(Duration::from_secs(2), Duration::from_secs(8));
    settings.history_size = 10;
    let changes = handle
        .reconfigure(Reconfiguration {
            settings,
            strategies: vec![purge, new],
        })
        .await
        .unwrap();
    assert_eq!(
        changes,
        StrategyChanges {
            added: vec!["new-hook".into()],
            removed: vec!["old-hook".into()],
            retriggered: vec!["purge".into()],
            kept: vec![],
        }
    );
    let view = handle.view();
    let names: Vec<&str> = view.strategies.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["purge", "new-hook"]);
    let purge = strategy(&view, "purge").unwrap();
    assert_eq!(purge.trigger.above, 0.5);
    assert_eq!(purge.threshold, Some(0.5));
    assert_eq!(view.interval, Duration::from_secs(2));
    // The record, the stats and the effectiveness are still there.
    assert_eq!(view.recent.len(), 1);
    assert_eq!(view.recent[0].id, record_id);
    assert_eq!(view.stats.per_strategy["purge"].runs, 1);
    assert_eq!(view.stats.per_strategy["purge"].effectiveness(), Some(1.0));

    // Memory at 0.6 is above purge's new 0.5 but purge ran within its cooldown (30 s): the
    // last run's time survived the reload. The new strategy (0.7) stays calm.
    memory.set(0.6);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(purge_runs.load(Ordering::SeqCst), 1, "cooldown kept");
    assert_eq!(new_runs.load(Ordering::SeqCst), 0);
    let view = handle.view();
    assert_eq!(strategy(&view, "purge").unwrap().level, Level::Warning);
    // After the cooldown, the new threshold fires.
    let view = until(&handle, "purge's run at the new threshold", |v| {
        v.stats.count == 2
    })
    .await;
    assert_eq!(view.recent[1].strategy, "purge");
    assert!(
        view.recent[1].reason.contains("above 0.5"),
        "{}",
        view.recent[1].reason
    );
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_in_progress_finishes_under_the_settings_it_started_with() {
    let memory = Memory::default();
    memory.set(0.9);
    let gate = Arc::new(Semaphore::new(0));
    let (slow, slow_runs) = registered("slow", &memory, 0.8, Some(Arc::clone(&gate)));
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn(
        EngineSettings::for_tests(),
        vec![slow],
        Arc::new(Registry::default()),
        Box::new(memory.clone()),
        shutdown.clone(),
    );
    until(&handle, "the slow run to start", |v| v.is_optimizing).await;

    // The running strategy is removed and another added while it runs.
    let (other, other_runs) = registered("other", &memory, 0.8, None);
    let changes = handle
        .reconfigure(Reconfiguration {
            settings: EngineSettings::for_tests(),
            strategies: vec![other],
        })
        .await
        .unwrap();
    assert_eq!(changes.removed, ["slow"]);
    let view = handle.view();
    assert!(view.is_optimizing, "the batch goes on");
    // Single flight holds across the reload: the new strategy waits for the old batch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(other_runs.load(Ordering::SeqCst), 0);

    gate.add_permits(1);
    let view = until(&handle, "the slow run's record", |v| v.stats.count >= 1).await;
    assert_eq!(slow_runs.load(Ordering::SeqCst), 1);
    assert_eq!(view.recent[0].strategy, "slow");
    assert!(view.recent[0].success);
    assert!(strategy(&view, "slow").is_none());
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unchanged_settings_keep_the_interval_control_and_its_backoff() {
    let memory = Memory::default();
    let (purge, _) = registered("purge", &memory, 0.8, None);
    let shutdown = CancellationToken::new();
    let settings = EngineSettings::for_tests();
    let interval = settings.interval.clone();
    let (handle, task) = spawn(
        settings,
        vec![purge],
        Arc::new(Registry::default()),
        Box::new(memory.clone()),
        shutdown.clone(),
    );
    // interval-backoff (or anything holding the control) lengthened it.
    interval.set(Duration::from_secs(4));
    let (purge, _) = registered("purge", &memory, 0.8, None);
    let changes = handle
        .reconfigure(Reconfiguration {
            settings: EngineSettings::for_tests(),
            strategies: vec![purge],
        })
        .await
        .unwrap();
    assert_eq!(changes.kept, ["purge"]);
    // Not reset to the base (1 s): the same control, where it was put.
    assert_eq!(handle.view().interval, Duration::from_secs(4));
    shutdown.cancel();
    task.await.unwrap();
}

#[test]
fn a_trigger_keeps_its_learned_baseline_and_lengthened_cooldown_across_new_settings() {
    use crate::trigger::TriggerState;
    use perfpilot_strategies::BaselineSpec;
    let baseline = BaselineSpec {
        k: 3.0,
        alpha: 0.1,
        warmup: 5,
    };
    let spec = TriggerSpec::new(Signal::LatencyP99Ms, 10.0)
        .cooldown(Duration::from_secs(30))
        .baseline(baseline.clone());
    let mut trigger = TriggerState::new(spec.clone());
    let start = std::time::Instant::now();
    for (i, value) in [20.0, 22.0, 18.0, 21.0, 19.0, 20.0].into_iter().enumerate() {
        trigger.evaluate(Some(value), start + Duration::from_secs(i as u64));
    }
    let learned = trigger.threshold().expect("warm after 5 samples");
    assert!(learned > 20.0, "{learned}");
    trigger.note_effect(Some(false), Duration::from_secs(600));
    assert_eq!(trigger.cooldown(), Duration::from_secs(60));

    // A new floor and cooldown: the learned threshold and the lengthened cooldown stay.
    let mut new = spec.clone().cooldown(Duration::from_secs(20));
    new.above = 12.0;
    trigger.reconfigure(new);
    assert_eq!(trigger.threshold(), Some(learned));
    assert_eq!(trigger.cooldown(), Duration::from_secs(60));
    assert_eq!(trigger.unhelpful_runs(), 1);

    // Another signal: nothing learned about it yet.
    let other = TriggerSpec::new(Signal::LatencyP95Ms, 10.0).baseline(baseline);
    trigger.reconfigure(other);
    assert_eq!(trigger.threshold(), None, "warming up again");
}
