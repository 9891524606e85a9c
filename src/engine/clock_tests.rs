//! The engine driven by a hand-moved clock and an executor that runs its work inline, as a
//! replay would: it samples when the clock reaches the next tick, and stamps samples and
//! runs with the clock's time, not the system's.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use perfpilot_strategies::{StrategyError, TriggerSpec};

use super::clock::ManualClock;
use super::*;

/// Memory usage always 0.9; counts its samples.
struct High(Arc<AtomicU32>);

impl SignalSource for High {
    fn sample(&mut self) -> Snapshot {
        self.0.fetch_add(1, Ordering::SeqCst);
        let mut snapshot = Snapshot::empty(SystemTime::UNIX_EPOCH);
        snapshot.memory_usage_ratio = Some(0.9);
        snapshot
    }
}

/// Does nothing, successfully.
#[derive(Debug)]
struct Idle;

#[async_trait]
impl Strategy for Idle {
    fn name(&self) -> &str {
        "idle"
    }
    fn description(&self) -> &str {
        "does nothing"
    }
    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        Ok(Outcome::nothing_to_do("nothing"))
    }
}

/// Waits (at most 30 s of real time) for a published view that satisfies `done`.
async fn wait_for(handle: &EngineHandle, what: &str, done: impl Fn(&View) -> bool) -> Arc<View> {
    let mut views = handle.watch();
    let seen = tokio::time::timeout(Duration::from_secs(30), views.wait_for(|v| done(v)))
        .await
        .unwrap_or_else(|_| panic!("no view within 30 s where {what}"))
        .expect("the engine runs");
    Arc::clone(&seen)
}

#[tokio::test]
async fn a_manual_clock_drives_the_ticks_and_stamps_samples_and_runs() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let clock = Arc::new(ManualClock::at(start));
    let samples = Arc::new(AtomicU32::new(0));
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn_on(
        EngineSettings::for_tests(),
        vec![Registered {
            strategy: Arc::new(Idle),
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.8),
        }],
        Arc::new(Registry::default()),
        Box::new(High(Arc::clone(&samples))),
        shutdown.clone(),
        Parts {
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            executor: Arc::new(Inline),
        },
    );
    assert_eq!(handle.view().sampled_at, start, "the first sample's time");
    assert_eq!(samples.load(Ordering::SeqCst), 1);

    // The first tick is one interval (1 s) later on this clock, whatever the real time does.
    clock.advance(Duration::from_secs(1));
    let view = wait_for(
        &handle,
        "the run after the second sample is recorded",
        |v| !v.recent.is_empty(),
    )
    .await;
    assert_eq!(view.sampled_at, start + Duration::from_secs(1));
    assert_eq!(view.recent[0].started_at, start + Duration::from_secs(1));
    assert_eq!(
        view.recent[0].duration_ms, 0.0,
        "no time passes on this clock during a run"
    );
    assert_eq!(samples.load(Ordering::SeqCst), 2);

    clock.advance(Duration::from_secs(1));
    let view = wait_for(&handle, "the third sample", |v| {
        v.sampled_at == start + Duration::from_secs(2)
    })
    .await;
    assert_eq!(samples.load(Ordering::SeqCst), 3);
    assert!(!view.is_optimizing);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the engine stops within 30 s")
        .expect("the engine task ends cleanly");
}

#[tokio::test]
async fn a_budget_stamps_its_episode_with_the_engines_clock() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let clock = Arc::new(ManualClock::at(start));
    let shutdown = CancellationToken::new();
    let mut settings = EngineSettings::for_tests();
    settings.budgets = vec![(
        "memory".to_owned(),
        crate::budget::BudgetConfig::new(Signal::MemoryUsage, 0.8, 0.95, &["idle"]),
    )];
    let (handle, task) = spawn_on(
        settings,
        vec![Registered {
            strategy: Arc::new(Idle),
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.99),
        }],
        Arc::new(Registry::default()),
        Box::new(High(Arc::new(AtomicU32::new(0)))),
        shutdown.clone(),
        Parts {
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            executor: Arc::new(Inline),
        },
    );
    clock.advance(Duration::from_secs(1));
    let view = wait_for(&handle, "the budget's episode has started", |v| {
        v.budgets.first().is_some_and(|b| b.episode.is_some())
    })
    .await;
    let started = start + Duration::from_secs(1);
    assert_eq!(
        view.budgets[0].episode_start,
        Some(perfpilot_strategies::snapshot::unix_millis::millis(started)),
        "the episode starts at the clock's wall time of the sample, not the system's"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the engine stops within 30 s")
        .expect("the engine task ends cleanly");
}
