//! Each rung's cost through the engine, on tokio's paused clock: a scripted memory signal,
//! request latency and error rate, and a rung whose hook reports what it dropped. A run
//! followed by a rise in p99 records that rise for its rung; without a latency source the
//! rung says so instead of showing 0.

use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use perfpilot_strategies::{LatencyStats, StrategyError, TriggerSpec};

use super::*;
use crate::budget::cost::NO_LATENCY_SOURCE;
use crate::budget::BudgetConfig;

/// What the test sets: memory usage, and p99 and error rate (`None`: no latency source).
#[derive(Debug, Clone, Copy)]
struct Readings {
    memory: f64,
    p99_ms: Option<f64>,
    error_rate: Option<f64>,
}

#[derive(Debug, Clone)]
struct Service(Arc<StdMutex<Readings>>);

impl Service {
    fn set(&self, memory: f64, p99_ms: Option<f64>, error_rate: Option<f64>) {
        *self.0.lock().unwrap() = Readings {
            memory,
            p99_ms,
            error_rate,
        };
    }
}

impl SignalSource for Service {
    fn sample(&mut self) -> Snapshot {
        let readings = *self.0.lock().unwrap();
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.memory_usage_ratio = Some(readings.memory);
        snapshot.latency = readings.p99_ms.map(|p99_ms| LatencyStats {
            mean_ms: p99_ms / 4.0,
            p50_ms: p99_ms / 4.0,
            p95_ms: p99_ms / 2.0,
            p99_ms,
        });
        snapshot.error_rate = readings.error_rate;
        snapshot
    }
}

/// A rung that drops sessions and says how many, as the demo's `/admin/sessions/drop` does
/// through a webhook (its answer under `response`).
#[derive(Debug)]
struct DropSessions;

#[async_trait]
impl Strategy for DropSessions {
    fn name(&self) -> &str {
        "drop-sessions"
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        Ok(Outcome::acted("dropped 7 sessions")
            .with("elapsed_ms", 30)
            .with(
                "response",
                serde_json::json!({"sessions_dropped": 7, "bytes_freed": 1_048_576}),
            ))
    }
}

/// An engine sampling every second, holding budget `memory` (goal 0.8, limit 1.0, settle
/// 2 s) with the one rung `drop-sessions`; the service starts at 0.5 with `p99_ms` and
/// `error_rate`. Half a sample's wait after the start: the test sets values between
/// samples (at whole seconds), each read by exactly one.
async fn hold(
    p99_ms: Option<f64>,
    error_rate: Option<f64>,
) -> (Service, EngineHandle, CancellationToken) {
    let service = Service(Arc::new(StdMutex::new(Readings {
        memory: 0.5,
        p99_ms,
        error_rate,
    })));
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 0.8, 1.0, &["drop-sessions"]);
    config.settle = Duration::from_secs(2);
    let mut settings = EngineSettings::for_tests();
    settings.budgets = vec![("memory".to_owned(), config)];
    settings.rung_only = vec!["drop-sessions".to_owned()];
    settings.interval = IntervalControl::new(Duration::from_secs(1), Duration::from_secs(8));
    let shutdown = CancellationToken::new();
    let (handle, _task) = spawn(
        settings,
        vec![Registered {
            strategy: Arc::new(DropSessions),
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.99),
        }],
        Arc::new(Registry::default()),
        Box::new(service.clone()),
        shutdown.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    (service, handle, shutdown)
}

/// One sample (1 s) per reading.
async fn feed(service: &Service, readings: &[(f64, Option<f64>, Option<f64>)]) {
    for &(memory, p99_ms, error_rate) in readings {
        service.set(memory, p99_ms, error_rate);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_rung_run_followed_by_a_p99_rise_records_that_cost_for_the_rung() {
    let (service, handle, _shutdown) = hold(Some(10.0), Some(0.0)).await;
    // Above goal at 0.9 with p99 10 ms: the rung runs. Then memory falls and p99 rises to
    // 40 ms, errors to 5 %, through the judging sample (2 s settle).
    let after = (0.5, Some(40.0), Some(0.05));
    feed(
        &service,
        &[(0.9, Some(10.0), Some(0.0)), after, after, after],
    )
    .await;
    let view = handle.view();
    let rung = &view.budgets[0].rungs[0];
    assert_eq!((rung.runs, rung.judged), (1, 1), "{rung:?}");
    let cost = &rung.cost;
    assert_eq!(cost.latency_runs, 1, "{cost:?}");
    let p99 = cost.mean_p99_change_ms.expect("a latency source");
    assert!((p99 - 30.0).abs() < 1e-9, "10 → 40 ms: {cost:?}");
    let errors = cost.mean_error_rate_change.expect("an error rate");
    assert!((errors - 0.05).abs() < 1e-9, "0 → 5 %: {cost:?}");
    assert_eq!(cost.latency, "measured over 1 judged run");
    assert_eq!(
        cost.reported.get("sessions_dropped"),
        Some(&7.0),
        "the hook's answer: {cost:?}"
    );
    assert_eq!(cost.reported.len(), 1, "only what was dropped: {cost:?}");
}

#[tokio::test(start_paused = true)]
async fn without_a_latency_source_a_rungs_cost_says_so_and_keeps_the_hooks_count() {
    let (service, handle, _shutdown) = hold(None, None).await;
    feed(
        &service,
        &[
            (0.9, None, None),
            (0.5, None, None),
            (0.5, None, None),
            (0.5, None, None),
        ],
    )
    .await;
    let view = handle.view();
    let rung = &view.budgets[0].rungs[0];
    assert_eq!(rung.judged, 1, "{rung:?}");
    assert_eq!(rung.cost.latency, NO_LATENCY_SOURCE);
    assert_eq!(rung.cost.mean_p99_change_ms, None);
    assert_eq!(rung.cost.mean_error_rate_change, None);
    assert_eq!(rung.cost.reported.get("sessions_dropped"), Some(&7.0));
}
