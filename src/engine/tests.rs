//! Scenario tests of the engine: a scripted signal source and tokio's paused clock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use perfpilot_strategies::{StrategyError, TriggerSpec};
use tokio::sync::Semaphore;

use super::*;
use crate::prometheus::Telemetry;

/// Signal values the test sets by hand, and a steady leak on the (paused) tokio clock.
#[derive(Clone, Default)]
struct Script(Arc<Mutex<Signals>>);

#[derive(Default)]
struct Signals {
    memory: f64,
    cpu: f64,
    /// Memory usage gained per second since `since` (a steady leak).
    leak_per_second: f64,
    since: Option<Instant>,
    /// Samples taken so far.
    samples: u32,
}

impl Script {
    /// Sets memory usage; a leak goes on from this value.
    fn set_memory(&self, value: f64) {
        let mut signals = self.0.lock().unwrap();
        signals.memory = value;
        signals.since = Some(Instant::now());
    }
    fn set_cpu(&self, value: f64) {
        self.0.lock().unwrap().cpu = value;
    }
    /// Memory usage grows by `per_second` from now on.
    fn leak(&self, per_second: f64) {
        let memory = self.memory();
        self.set_memory(memory);
        self.0.lock().unwrap().leak_per_second = per_second;
    }
    fn memory(&self) -> f64 {
        let signals = self.0.lock().unwrap();
        let leaked = signals.since.map_or(0.0, |since| {
            since.elapsed().as_secs_f64() * signals.leak_per_second
        });
        signals.memory + leaked
    }
}

impl SignalSource for Script {
    fn sample(&mut self) -> Snapshot {
        self.0.lock().unwrap().samples += 1;
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.memory_usage_ratio = Some(self.memory());
        snapshot.process_cpu_ratio = Some(self.0.lock().unwrap().cpu);
        // Self mode: the agent's own CPU is the process's.
        snapshot.agent_cpu_ratio = snapshot.process_cpu_ratio;
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
                let _permit = gate.acquire().await.expect("the test keeps the gate open");
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
    /// When the engine took its first sample.
    start: Instant,
    script: Script,
    runs: Arc<AtomicU32>,
    handle: EngineHandle,
    /// The metrics following the engine from its start, as the agent creates them.
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Metrics that follow `handle` from now on, labelled `engine-test` (the agent creates its
/// own the same way). Called before the test yields, they see every event.
pub(super) fn follow(handle: &EngineHandle) -> Arc<Telemetry> {
    Telemetry::follow("engine-test", handle.watch(), handle.subscribe())
}

fn settings() -> EngineSettings {
    EngineSettings::for_tests()
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
    let start = Instant::now();
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
        start,
        script,
        runs,
        telemetry: follow(&handle),
        handle,
        shutdown,
        task,
    }
}

fn memory_trigger() -> TriggerSpec {
    TriggerSpec::new(Signal::MemoryUsage, 0.8).cooldown(Duration::from_secs(10))
}

/// The longest any wait in these tests may take, on the paused clock (which jumps ahead
/// while every task is idle, so a wait that cannot end fails at once instead of hanging).
const WAIT: Duration = Duration::from_secs(600);

/// The next `optimization-completed` record, within [`WAIT`].
async fn next_record(events: &mut broadcast::Receiver<Event>) -> Arc<OptimizationRecord> {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(Event::OptimizationCompleted(record)) => return record,
                Ok(_) => {}
                Err(e) => panic!("event stream broke while waiting for a record: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no optimization-completed record within {WAIT:?}"))
}

/// Waits (within [`WAIT`]) until a published view satisfies `condition`, described by `what`.
async fn wait_view(
    view: &mut watch::Receiver<Arc<View>>,
    what: &str,
    condition: impl FnMut(&Arc<View>) -> bool,
) {
    match tokio::time::timeout(WAIT, view.wait_for(condition)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => panic!("the engine stopped while waiting for {what}"),
        Err(_) => panic!("no view with {what} within {WAIT:?}"),
    }
}

/// Awaits `future` within [`WAIT`], naming what it waited for.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
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
    within("the engine task to end", h.task).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_takes_no_extra_sample_and_is_judged_by_the_next_smoothed_one() {
    // Smoothing 0.5: "before" is the smoothed value, and so must "after" be.
    let mut trigger = memory_trigger();
    trigger.smoothing = Some(0.5);
    let h = start(Behaviour::Relieve(0.3), trigger, settings());
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.9);
    let record = next_record(&mut events).await;
    let judged_at = Instant::now();
    assert_eq!(record.before, Some(0.9));
    // The next regular sample reads 0.3 raw: smoothed, 0.5 × 0.3 + 0.5 × 0.9 = 0.6.
    let after = record.after.expect("judged by the next sample");
    assert!((after - 0.6).abs() < 1e-9, "after {after}: not smoothed");
    assert_eq!(record.helped, Some(true));
    // Samples: the first at spawn, then one per 1 s tick; none extra for the run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticks = judged_at.duration_since(h.start).as_secs() as u32;
    assert_eq!(
        h.script.0.lock().unwrap().samples,
        1 + ticks,
        "a sample was taken besides the regular ones"
    );
    let view = h.handle.view();
    assert_eq!(
        view.recent[0].after, record.after,
        "history holds the judged record"
    );
    let stats = &view.stats.per_strategy["test-strategy"];
    assert_eq!((stats.runs, stats.judged, stats.helped), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_run_is_judged_by_the_first_sample_settle_after_it() {
    let mut settings = settings();
    settings.settle = Duration::from_millis(2500);
    // A threshold the test never crosses: only the manual run runs.
    let trigger = TriggerSpec::new(Signal::MemoryUsage, 0.99);
    let h = start(Behaviour::Relieve(0.3), trigger, settings);
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.9);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let records = within("a manual run", h.handle.optimize(Some("t")))
        .await
        .unwrap();
    let ended = Instant::now();
    assert_eq!(records[0].after, None, "not judged before the settle");
    assert_eq!(records[0].helped, None);
    // The pressure comes back 1 s after the run, before the settle is over: the run is
    // judged against that (it did not help), not against the sample right after it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.script.set_memory(0.95);
    let record = next_record(&mut events).await;
    assert_eq!(record.id, records[0].id);
    assert!(
        ended.elapsed() >= Duration::from_millis(2500),
        "judged {:?} after the run",
        ended.elapsed()
    );
    assert_eq!(record.after, Some(0.95));
    assert_eq!(record.helped, Some(false));
}

#[tokio::test(start_paused = true)]
async fn cooldown_spaces_automatic_runs_under_persistent_pressure() {
    let mut settings = settings();
    settings.adaptive_cooldown = false; // the fixed cooldown; adaptive_cooldown_* below
    let h = start(Behaviour::Relieve(0.95), memory_trigger(), settings);
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
    let records = within("a manual run", h.handle.optimize(Some("t")))
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert!(!records[0].success);
    assert_eq!(h.handle.view().stats.count, 2);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_strategy_times_out_as_a_failure() {
    let mut settings = settings();
    settings.strategy_timeout = Duration::from_millis(300);
    let h = start(Behaviour::Hang, memory_trigger(), settings);
    let records = within("a manual run", h.handle.optimize(None))
        .await
        .unwrap();
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
    wait_view(&mut view, "a run in progress", |v| v.is_optimizing).await;
    assert_eq!(
        within("a manual run", h.handle.optimize(Some("t")))
            .await
            .unwrap_err(),
        OptimizeError::Busy
    );
    gate.add_permits(1);
    let records = within("the first manual run", first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(records[0].kind, RunKind::Manual);
    assert!(records[0].success);
}

#[tokio::test(start_paused = true)]
async fn unknown_strategy_names_the_known_ones() {
    let h = start(Behaviour::Relieve(0.1), memory_trigger(), settings());
    let error = within("a manual run", h.handle.optimize(Some("teleport")))
        .await
        .unwrap_err();
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
    within("a manual run", h.handle.optimize(None))
        .await
        .unwrap();
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
    wait_view(&mut view, "the interval backed off to 8 s", |v| {
        v.interval == Duration::from_secs(8)
    })
    .await;
    assert_eq!(
        interval.current(),
        Duration::from_secs(8),
        "capped at max_interval"
    );
    script.set_cpu(0.1);
    wait_view(&mut view, "the interval relaxed to 1 s", |v| {
        v.interval == Duration::from_secs(1)
    })
    .await;
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
    let records = within("a manual run", h.handle.optimize(Some("t")))
        .await
        .unwrap();
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
    wait_view(&mut view, "a run in progress", |v| v.is_optimizing).await;
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !h.task.is_finished(),
        "the engine waits for the running strategy"
    );
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    gate.add_permits(1);
    within("the engine task to end", h.task).await.unwrap();
    let records = within("the manual run", manual).await.unwrap().unwrap();
    assert_eq!(records.len(), 1);
    assert!(records[0].success);
    let last = h.handle.view();
    assert_eq!(last.stats.count, 1, "the finished run was recorded");
    assert!(!last.is_optimizing);
    assert_eq!(last.recent[0].id, records[0].id);
    // After the engine ended, requests are refused rather than left hanging.
    assert_eq!(
        within("a manual run", h.handle.optimize(None))
            .await
            .unwrap_err(),
        OptimizeError::Stopped
    );
}

// ---- Self-tuning: prediction, adaptive cooldown, adaptive sampling -------------------------

/// Every snapshot's memory usage from now on, to find the peak of a scenario.
fn memory_trace(handle: &EngineHandle) -> Arc<Mutex<Vec<f64>>> {
    let trace = Arc::new(Mutex::new(Vec::new()));
    let mut events = handle.subscribe();
    let sink = Arc::clone(&trace);
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let Event::MetricsUpdated(snapshot, _) = event {
                sink.lock().unwrap().extend(snapshot.memory_usage_ratio);
            }
        }
    });
    trace
}

fn peak(trace: &Mutex<Vec<f64>>) -> f64 {
    trace
        .lock()
        .unwrap()
        .iter()
        .copied()
        .fold(f64::MIN, f64::max)
}

/// Memory limit 1.0; the trigger at 0.9 with `for = 3` against noise; a purge brings usage
/// back to 0.5; memory leaks 0.02 per second (one sample per second).
fn leak_trigger() -> TriggerSpec {
    TriggerSpec::new(Signal::MemoryUsage, 0.9)
        .for_samples(3)
        .cooldown(Duration::from_secs(5))
}

#[tokio::test(start_paused = true)]
async fn a_steady_leak_is_acted_on_before_the_limit_with_the_predicted_time_in_the_record() {
    let predictive = leak_trigger().predict(perfpilot_strategies::PredictSpec {
        horizon: Duration::from_secs(15),
        at: Some(0.95),
        window: 5,
    });
    let h = start(Behaviour::Relieve(0.5), predictive, settings());
    let trace = memory_trace(&h.handle);
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.5);
    h.script.leak(0.02);

    let record = next_record(&mut events).await;
    let prediction = record.prediction.expect("a predictive run");
    assert_eq!(prediction.at, 0.95);
    assert!(
        prediction.seconds_to_reach > 0.0 && prediction.seconds_to_reach <= 15.0,
        "{prediction:?}"
    );
    assert!((prediction.slope_per_second - 0.02).abs() < 1e-6);
    let before = record.before.unwrap();
    assert!(before < 0.9, "acted before the threshold: {before}");
    assert!(
        record.reason.contains("predicted to reach 0.95 in"),
        "{}",
        record.reason
    );
    assert_eq!(record.helped, Some(true));

    // Over two minutes of leaking, usage never gets near the limit.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(peak(&trace) < 0.9, "peak {}", peak(&trace));
    let view = h.handle.view();
    let stats = &view.stats.per_strategy["test-strategy"];
    assert!(stats.runs >= 4, "{stats:?}");
    assert_eq!(stats.effectiveness(), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn the_same_leak_overshoots_with_the_threshold_alone() {
    let h = start(Behaviour::Relieve(0.5), leak_trigger(), settings());
    let trace = memory_trace(&h.handle);
    h.script.set_memory(0.5);
    h.script.leak(0.02);
    tokio::time::sleep(Duration::from_secs(120)).await;
    // It crosses 0.9 at 20 s, and `for = 3` adds 3 samples of 0.02: it acts at 0.96+.
    assert!(peak(&trace) > 0.95, "peak {}", peak(&trace));
    assert!(h
        .handle
        .view()
        .recent
        .iter()
        .all(|r| r.prediction.is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_strategy_that_never_helps_backs_off_to_8x_its_cooldown_within_6_runs() {
    let base = Duration::from_secs(2);
    let trigger = TriggerSpec::new(Signal::MemoryUsage, 0.8).cooldown(base);
    // "Relieves" to where the signal already is: the runs succeed but change nothing.
    let h = start(Behaviour::Relieve(0.9), trigger, settings());
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.9);
    let mut cooldowns = Vec::new();
    for _ in 0..6 {
        let record = next_record(&mut events).await;
        assert!(record.success);
        assert_eq!(record.helped, Some(false));
        cooldowns.push(h.handle.view().strategies[0].cooldown);
    }
    assert!(
        cooldowns.iter().any(|c| *c >= 8 * base),
        "cooldowns after each run: {cooldowns:?}"
    );
    let view = h.handle.view();
    assert_eq!(view.strategies[0].unhelpful_runs, 6);
    assert_eq!(
        view.stats.per_strategy["test-strategy"].effectiveness(),
        Some(0.0)
    );

    // A manual run is the operator's call: the cooldown is back at its base.
    within("a manual run", h.handle.optimize(Some("t")))
        .await
        .unwrap();
    assert_eq!(h.handle.view().strategies[0].cooldown, base);
}

#[tokio::test(start_paused = true)]
async fn a_helpful_strategy_keeps_its_cooldown() {
    let base = Duration::from_secs(2);
    let trigger = TriggerSpec::new(Signal::MemoryUsage, 0.8).cooldown(base);
    let h = start(Behaviour::Relieve(0.3), trigger, settings());
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.9);
    let mut started = Vec::new();
    for _ in 0..6 {
        let record = next_record(&mut events).await;
        assert_eq!(record.helped, Some(true));
        assert_eq!(h.handle.view().strategies[0].cooldown, base);
        started.push(Instant::now());
        h.script.set_memory(0.9); // the pressure comes straight back
    }
    for pair in started.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap <= base + Duration::from_secs(1), "runs {gap:?} apart");
    }
}

#[tokio::test(start_paused = true)]
async fn sampling_speeds_up_near_a_threshold_and_slows_when_calm() {
    let mut settings = settings();
    let fast = Duration::from_millis(200);
    let calm = Duration::from_secs(4);
    settings.interval = settings.interval.clone().with_min(fast);
    settings.adaptive_sampling = Some(AdaptiveSampling::new(fast, calm));
    let h = start(Behaviour::Relieve(0.3), memory_trigger(), settings);
    let mut view = h.handle.watch();

    h.script.set_memory(0.3);
    wait_view(&mut view, "the calm interval", |v| v.interval == calm).await;

    // 0.75 is below the threshold (0.8) but inside its hysteresis band (from 0.72).
    h.script.set_memory(0.75);
    let near = Instant::now();
    wait_view(&mut view, "the fast interval", |v| v.interval == fast).await;
    assert!(near.elapsed() <= calm, "sped up at the next sample");
    assert_eq!(h.runs.load(Ordering::SeqCst), 0, "near is not over");

    h.script.set_memory(0.3);
    wait_view(&mut view, "the calm interval", |v| v.interval == calm).await;

    // A climb still far from the threshold is attention too: it is trending towards it.
    h.script.set_memory(0.3);
    h.script.leak(0.01); // reaches 0.8 in 50 s, within twice the 30 s default horizon
    wait_view(&mut view, "the fast interval", |v| v.interval == fast).await;
    assert!(
        h.script.memory() < 0.72,
        "fast before the band: {}",
        h.script.memory()
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_shows_the_predictive_run_it_would_have_made() {
    let mut settings = settings();
    settings.dry_run = true;
    let trigger = leak_trigger().predict(perfpilot_strategies::PredictSpec::new(
        Duration::from_secs(30),
    ));
    let h = start(Behaviour::Relieve(0.5), trigger, settings);
    let mut events = h.handle.subscribe();
    h.script.set_memory(0.5);
    h.script.leak(0.01);
    let record = next_record(&mut events).await;
    assert!(record.dry_run);
    assert!(record.prediction.is_some(), "{record:?}");
    assert_eq!(record.helped, None, "nothing ran, nothing to judge");
    assert_eq!(h.runs.load(Ordering::SeqCst), 0);
}

// ---- The fast watch and OOM kills ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_crossing_seen_by_the_fast_watch_is_acted_on_before_the_next_tick() {
    let watch = WatchHandle::for_tests();
    let h = start(
        Behaviour::Relieve(0.5),
        memory_trigger(),
        EngineSettings {
            interval: IntervalControl::new(Duration::from_secs(60), Duration::from_secs(60)),
            watch: Some(watch.clone()),
            ..settings()
        },
    );
    let mut view = h.handle.watch();
    h.script.set_memory(0.95);
    watch.wake(Signal::MemoryUsage, WatchMode::Poll);
    // Recorded, not yet judged: the judging sample is the next tick, 60 s on.
    tokio::time::timeout(
        Duration::from_secs(1),
        wait_view(&mut view, "the run the wake starts", |v| {
            !v.recent.is_empty()
        }),
    )
    .await
    .expect("waited 1 s (paused clock, the interval is 60 s) for the run the wake starts");
    assert_eq!(h.handle.view().recent[0].strategy, "test-strategy");
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    let metrics = h.telemetry.encode_prometheus_text().unwrap();
    assert!(
        metrics.contains(
            "perfpilot_fast_watch_wakes_total{worker=\"engine-test\",signal=\"memory_usage\",how=\"poll\"} 1"
        ),
        "{metrics}"
    );
    assert!(h.handle.view().fast_watch.is_some());
}

/// A source whose OOM-kill count the test sets.
struct Kills(Arc<AtomicU32>);

impl SignalSource for Kills {
    fn sample(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.memory_usage_ratio = Some(0.99);
        snapshot.oom_kills = Some(u64::from(self.0.load(Ordering::SeqCst)));
        snapshot
    }
}

#[tokio::test(start_paused = true)]
async fn a_rise_of_the_oom_kill_count_is_an_oom_kill_event_and_counted() {
    // Two kills from before the agent started are not news.
    let kills = Arc::new(AtomicU32::new(2));
    let (handle, _task) = spawn(
        settings(),
        Vec::new(),
        Arc::new(Registry::default()),
        Box::new(Kills(Arc::clone(&kills))),
        CancellationToken::new(),
    );
    let telemetry = follow(&handle);
    let mut events = handle.subscribe();
    kills.store(3, Ordering::SeqCst);
    let kill = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::OomKill(kill) = events.recv().await.unwrap() {
                return kill;
            }
        }
    })
    .await
    .expect("waited 5 s (paused clock, 1 s interval) for the oom-kill event");
    assert_eq!((kill.new_kills, kill.oom_kills), (1, 3));
    assert_eq!(kill.memory_usage_before, Some(0.99));
    let metrics = telemetry.encode_prometheus_text().unwrap();
    assert!(
        metrics.contains("perfpilot_oom_kill_events_total{worker=\"engine-test\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("perfpilot_oom_kills{worker=\"engine-test\"} 3"),
        "{metrics}"
    );
}
