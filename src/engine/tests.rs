//! Scenario tests of the engine: a scripted signal source and tokio's paused clock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use perfpilot_strategies::{StrategyError, TriggerSpec};
use tokio::sync::Semaphore;

use super::*;

/// Signal values the test sets by hand.
#[derive(Clone, Default)]
struct Script(Arc<Mutex<(f64, f64)>>); // (memory usage, cpu usage)

impl Script {
    fn set_memory(&self, value: f64) {
        self.0.lock().unwrap().0 = value;
    }
    fn set_cpu(&self, value: f64) {
        self.0.lock().unwrap().1 = value;
    }
}

impl SignalSource for Script {
    fn sample(&mut self) -> Snapshot {
        let (memory, cpu) = *self.0.lock().unwrap();
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.memory_usage_ratio = Some(memory);
        snapshot.process_cpu_ratio = Some(cpu);
        snapshot
    }
}

/// What a test strategy does when run.
#[derive(Debug)]
enum Behaviour {
    /// Lowers the scripted memory signal to the value, like a purge that works.
    Relieve(f64),
    Panic,
    Hang,
    /// Waits for a permit, so the test controls when it finishes.
    WaitFor(Arc<Semaphore>),
    /// Fails while the flag is set, else succeeds.
    FailWhile(Arc<AtomicBool>),
}

#[derive(Debug)]
struct TestStrategy {
    name: &'static str,
    behaviour: Behaviour,
    runs: Arc<AtomicU32>,
    script: Script,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Script")
    }
}

#[async_trait]
impl Strategy for TestStrategy {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[&str] {
        &["t"]
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match &self.behaviour {
            Behaviour::Relieve(to) => {
                self.script.set_memory(*to);
                Ok(Outcome::acted("relieved"))
            }
            Behaviour::Panic => panic!("strategy exploded"),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::WaitFor(gate) => {
                let _permit = gate.acquire().await.unwrap();
                Ok(Outcome::nothing_to_do("waited"))
            }
            Behaviour::FailWhile(failing) => {
                if failing.load(Ordering::SeqCst) {
                    Err(StrategyError::Failed("still broken".into()))
                } else {
                    Ok(Outcome::acted("fixed"))
                }
            }
        }
    }
}

struct Harness {
    script: Script,
    runs: Arc<AtomicU32>,
    handle: EngineHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn settings() -> EngineSettings {
    EngineSettings {
        enabled: true,
        interval: IntervalControl::new(Duration::from_secs(1), Duration::from_secs(8)),
        dry_run: false,
        history_size: 50,
        strategy_timeout: Duration::from_secs(5),
        post_action_delay: Duration::ZERO,
        target: None,
        backoff_after_failures: 3,
        max_backoff: Duration::from_secs(3600),
        worker: "engine-test".to_owned(),
    }
}

fn start(behaviour: Behaviour, trigger: TriggerSpec, settings: EngineSettings) -> Harness {
    let script = Script::default();
    let runs = Arc::new(AtomicU32::new(0));
    let strategy = TestStrategy {
        name: "test-strategy",
        behaviour,
        runs: Arc::clone(&runs),
        script: script.clone(),
    };
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn(
        settings,
        vec![Registered {
            strategy: Arc::new(strategy),
            trigger,
        }],
        Arc::new(Registry::default()),
        Box::new(script.clone()),
        shutdown.clone(),
    );
    Harness {
        script,
        runs,
        handle,
        shutdown,
        task,
    }
}

fn memory_trigger() -> TriggerSpec {
    TriggerSpec::new(Signal::MemoryUsage, 0.8).cooldown(Duration::from_secs(10))
}

async fn next_record(events: &mut broadcast::Receiver<Event>) -> Arc<OptimizationRecord> {
    loop {
        if let Event::OptimizationCompleted(record) = events.recv().await.unwrap() {
            return record;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn threshold_crossing_runs_the_strategy_and_records_before_and_after() {
    let h = start(Behaviour::Relieve(0.3), memory_trigger(), settings());
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.5);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 0, "below threshold: no run");

    h.script.set_memory(0.9);
    let crossed = Instant::now();
    let record = next_record(&mut events).await;
    assert!(
        crossed.elapsed() <= Duration::from_secs(2),
        "acted on within 2 intervals"
    );
    assert_eq!(record.strategy, "test-strategy");
    assert_eq!(record.kind, RunKind::Automatic);
    assert!(record.success);
    assert_eq!(record.before, Some(0.9));
    assert_eq!(record.after, Some(0.3));
    assert!(
        record.reason.contains("memory_usage = 0.9 above 0.8"),
        "{}",
        record.reason
    );

    let view = h.handle.view();
    assert_eq!(view.stats.count, 1);
    assert_eq!(view.recent.len(), 1);
    assert!(!view.is_optimizing);
    h.shutdown.cancel();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cooldown_spaces_automatic_runs_under_persistent_pressure() {
    let h = start(Behaviour::Relieve(0.95), memory_trigger(), settings());
    h.script.set_memory(0.95);
    tokio::time::sleep(Duration::from_millis(25_500)).await;
    // Runs at about t=1s, 11s, 21s: three, not twenty-five.
    assert_eq!(h.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_strategy_is_recorded_as_failed_and_the_engine_goes_on() {
    let h = start(Behaviour::Panic, memory_trigger(), settings());
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.9);
    let record = next_record(&mut events).await;
    assert!(!record.success);
    assert!(
        record
            .error
            .as_deref()
            .unwrap()
            .contains("panicked: strategy exploded"),
        "{:?}",
        record.error
    );
    // Still alive: a manual run is answered.
    let records = h.handle.optimize(Some("t")).await.unwrap();
    assert_eq!(records.len(), 1);
    assert!(!records[0].success);
    assert_eq!(h.handle.view().stats.count, 2);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_strategy_times_out_as_a_failure() {
    let mut settings = settings();
    settings.strategy_timeout = Duration::from_millis(300);
    let h = start(Behaviour::Hang, memory_trigger(), settings);
    let records = h.handle.optimize(None).await.unwrap();
    assert!(!records[0].success);
    assert_eq!(
        records[0].error.as_deref(),
        Some("strategy timed out after 300 ms")
    );
    // Single flight is released after the timeout.
    assert!(!h.handle.view().is_optimizing);
}

#[tokio::test(start_paused = true)]
async fn manual_runs_are_single_flight() {
    let gate = Arc::new(Semaphore::new(0));
    let h = start(
        Behaviour::WaitFor(Arc::clone(&gate)),
        memory_trigger(),
        settings(),
    );
    let first = {
        let handle = h.handle.clone();
        tokio::spawn(async move { handle.optimize(Some("test-strategy")).await })
    };
    let mut view = h.handle.watch();
    view.wait_for(|v| v.is_optimizing).await.unwrap();
    assert_eq!(
        h.handle.optimize(Some("t")).await.unwrap_err(),
        OptimizeError::Busy
    );
    gate.add_permits(1);
    let records = first.await.unwrap().unwrap();
    assert_eq!(records[0].kind, RunKind::Manual);
    assert!(records[0].success);
}

#[tokio::test(start_paused = true)]
async fn unknown_strategy_names_the_known_ones() {
    let h = start(Behaviour::Relieve(0.1), memory_trigger(), settings());
    let error = h.handle.optimize(Some("teleport")).await.unwrap_err();
    assert_eq!(
        error,
        OptimizeError::UnknownStrategy {
            given: "teleport".into(),
            known: vec!["test-strategy".into(), "t".into()],
        }
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_records_what_would_run_without_running_it() {
    let mut settings = settings();
    settings.dry_run = true;
    let h = start(Behaviour::Relieve(0.1), memory_trigger(), settings);
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.9);
    let record = next_record(&mut events).await;
    assert!(record.dry_run);
    assert_eq!(h.runs.load(Ordering::SeqCst), 0);
    assert_eq!(h.handle.view().stats.count, 0, "dry runs are not counted");
}

#[tokio::test(start_paused = true)]
async fn disabled_agent_samples_but_does_not_act_by_itself() {
    let mut settings = settings();
    settings.enabled = false;
    let h = start(Behaviour::Relieve(0.1), memory_trigger(), settings);
    h.script.set_memory(0.9);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 0);
    assert_eq!(h.handle.view().snapshot.memory_usage_ratio, Some(0.9));
    h.handle.optimize(None).await.unwrap();
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn interval_backs_off_under_cpu_pressure_and_relaxes_when_calm() {
    let script = Script::default();
    let settings = settings();
    let interval = settings.interval.clone();
    let shutdown = CancellationToken::new();
    let backoff = perfpilot_strategies::IntervalBackoffConfig::default();
    let (handle, _task) = spawn(
        settings,
        vec![Registered {
            strategy: Arc::new(backoff.build()),
            trigger: backoff.trigger.clone().cooldown(Duration::ZERO),
        }],
        Arc::new(Registry::default()),
        Box::new(script.clone()),
        shutdown,
    );
    script.set_cpu(0.95);
    let mut view = handle.watch();
    view.wait_for(|v| v.interval == Duration::from_secs(8))
        .await
        .unwrap();
    assert_eq!(
        interval.current(),
        Duration::from_secs(8),
        "capped at max_interval"
    );
    script.set_cpu(0.1);
    view.wait_for(|v| v.interval == Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_strategy_is_backed_off_and_a_manual_run_or_success_resets_it() {
    let failing = Arc::new(AtomicBool::new(true));
    let trigger = TriggerSpec::new(Signal::MemoryUsage, 0.8).cooldown(Duration::from_secs(2));
    let h = start(
        Behaviour::FailWhile(Arc::clone(&failing)),
        trigger,
        settings(),
    );
    h.script.set_memory(0.9);
    tokio::time::sleep(Duration::from_millis(20_500)).await;
    // Every cooldown (t = 1, 3, 5 s) until the third failure, then pauses of 2, 4, 8 s
    // (cooldown × 2^n): runs at 7, 11 and 19 s. Without back-off: 10 runs.
    assert_eq!(h.runs.load(Ordering::SeqCst), 6);
    let view = h.handle.view();
    let strategy = &view.strategies[0];
    assert_eq!(strategy.consecutive_failures, 6);
    let until = strategy.backoff_until.expect("paused");
    let left = until.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(14) && left <= Duration::from_secs(16),
        "{left:?}"
    );

    // A manual run is the operator's retry: the pause ends whatever its outcome.
    let records = h.handle.optimize(Some("t")).await.unwrap();
    assert!(!records[0].success);
    let strategy = &h.handle.view().strategies[0];
    assert_eq!(
        (strategy.consecutive_failures, strategy.backoff_until),
        (0, None)
    );
    // Automatic runs resume at once (and count again), and a success clears the count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 8);
    assert_eq!(h.handle.view().strategies[0].consecutive_failures, 1);
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 9);
    assert_eq!(h.handle.view().strategies[0].consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_running_batch_finish_and_publishes_its_record() {
    let gate = Arc::new(Semaphore::new(0));
    let h = start(
        Behaviour::WaitFor(Arc::clone(&gate)),
        memory_trigger(),
        settings(),
    );
    let manual = {
        let handle = h.handle.clone();
        tokio::spawn(async move { handle.optimize(None).await })
    };
    let mut view = h.handle.watch();
    view.wait_for(|v| v.is_optimizing).await.unwrap();
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !h.task.is_finished(),
        "the engine waits for the running strategy"
    );
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    gate.add_permits(1);
    h.task.await.unwrap();
    let records = manual.await.unwrap().unwrap();
    assert_eq!(records.len(), 1);
    assert!(records[0].success);
    let last = h.handle.view();
    assert_eq!(last.stats.count, 1, "the finished run was recorded");
    assert!(!last.is_optimizing);
    assert_eq!(last.recent[0].id, records[0].id);
    // After the engine ended, requests are refused rather than left hanging.
    assert_eq!(
        h.handle.optimize(None).await.unwrap_err(),
        OptimizeError::Stopped
    );
}
