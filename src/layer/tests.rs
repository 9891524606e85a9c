use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use tower::{Layer, ServiceExt};

use super::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn a_window_sees_only_the_requests_since_the_previous_one() {
    let metrics = RequestMetrics::new();
    for _ in 0..3 {
        metrics.record(ms(2), Some(100), false);
    }
    let first = metrics.window();
    assert_eq!(first.requests, 3);
    assert_eq!(first.response_bytes, 300);
    assert_eq!(first.timed_requests, 3);

    metrics.record(ms(40), Some(10), true);
    metrics.record(ms(40), None, false);
    let second = metrics.window();
    assert_eq!(second.requests, 2);
    assert_eq!(second.failed, 1);
    assert_eq!(second.response_bytes, 10);
    let latency = second.latency.unwrap();
    assert!((latency.mean_ms - 40.0).abs() < 1e-9, "{latency:?}");
    assert!(latency.p50_ms.abs_diff_ratio(40.0) <= 0.0625, "{latency:?}");

    let third = metrics.window();
    assert_eq!(third.requests, 0);
    assert_eq!(third.latency, None, "no request, no latency");
    assert_eq!(third.error_rate, None, "no request, no error rate");
    assert_eq!(third.requests_per_second.map(|r| r == 0.0), Some(true));
}

trait AbsDiffRatio {
    fn abs_diff_ratio(self, truth: f64) -> f64;
}

impl AbsDiffRatio for f64 {
    fn abs_diff_ratio(self, truth: f64) -> f64 {
        (self - truth).abs() / truth
    }
}

#[test]
fn percentiles_and_mean_of_a_window() {
    let metrics = RequestMetrics::new();
    for millis in 1..=1_000 {
        metrics.record(ms(millis), None, false);
    }
    let latency = metrics.window().latency.unwrap();
    assert!((latency.mean_ms - 500.5).abs() < 1e-9, "exact: {latency:?}");
    assert!(
        latency.p50_ms.abs_diff_ratio(500.0) <= 0.0625,
        "{latency:?}"
    );
    assert!(
        latency.p95_ms.abs_diff_ratio(950.0) <= 0.0625,
        "{latency:?}"
    );
    assert!(
        latency.p99_ms.abs_diff_ratio(990.0) <= 0.0625,
        "{latency:?}"
    );
}

#[test]
fn rates_are_per_second_of_the_window() {
    let metrics = RequestMetrics::new();
    metrics.window();
    std::thread::sleep(ms(20));
    for failed in [true, false, false, false] {
        metrics.record(ms(1), Some(1_000), failed);
    }
    let window = metrics.window();
    assert!(window.elapsed >= ms(20));
    assert_eq!(window.error_rate, Some(0.25));
    let seconds = window.elapsed.as_secs_f64();
    assert_eq!(window.requests_per_second, Some(4.0 / seconds));
    assert_eq!(window.bytes_per_second, Some(4_000.0 / seconds));
}

#[test]
fn a_dropped_guard_leaves_the_in_flight_count_as_cancelled() {
    let metrics = RequestMetrics::new();
    let finished = metrics.start();
    let dropped = metrics.start();
    assert_eq!(metrics.in_flight(), 2);
    assert_eq!(metrics.window().in_flight, 2);

    drop(dropped);
    assert_eq!(metrics.in_flight(), 1);
    finished.finish(Some(5), false);
    assert_eq!(metrics.in_flight(), 0);

    let window = metrics.window();
    assert_eq!(window.in_flight, 0);
    assert_eq!(window.cancelled, 1);
    assert_eq!(window.requests, 1, "a cancelled request is not a request");
    assert_eq!(window.response_bytes, 5);
}

#[test]
fn a_guard_finished_on_another_thread_still_leaves_in_flight() {
    let metrics = RequestMetrics::new();
    let guards: Vec<_> = (0..10).map(|_| metrics.start()).collect();
    std::thread::spawn(move || {
        for guard in guards {
            guard.finish(None, false);
        }
    })
    .join()
    .unwrap();
    let window = metrics.window();
    assert_eq!((window.requests, window.in_flight), (10, 0));
}

#[test]
fn counts_are_exact_after_many_threads_record_at_once() {
    // More threads than owned shards: some share the shared one.
    const THREADS: u64 = 24;
    const RECORDS: u64 = 20_000;
    let metrics = RequestMetrics::new();
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for i in 0..RECORDS {
                    if i % 2 == 0 {
                        metrics.record(Duration::from_micros(i % 1_000), Some(3), i % 10 == 0);
                    } else {
                        metrics.start().finish(Some(3), i % 10 == 0);
                    }
                }
            });
        }
    });
    let window = metrics.window();
    assert_eq!(window.requests, THREADS * RECORDS);
    assert_eq!(window.failed, THREADS * RECORDS / 10);
    assert_eq!(window.response_bytes, 3 * THREADS * RECORDS);
    assert_eq!(window.in_flight, 0);
    assert_eq!(window.cancelled, 0);
}

#[test]
fn one_in_n_sampling_times_that_share_and_counts_every_request() {
    let metrics = RequestMetrics::with_sampling(LatencySampling::OneIn(3));
    for _ in 0..400 {
        metrics.start().finish(None, false);
    }
    let window = metrics.window();
    assert_eq!(window.requests, 400);
    assert_eq!(window.timed_requests, 100, "3 rounds up to 4");
}

#[test]
fn adaptive_sampling_times_fewer_requests_under_load() {
    let metrics = RequestMetrics::new();
    let busy = 4 * RequestMetrics::ADAPTIVE_TIMED_PER_WINDOW;
    for _ in 0..busy {
        metrics.start().finish(None, false);
    }
    assert_eq!(metrics.window().timed_requests, busy, "all timed at first");
    for _ in 0..busy {
        metrics.start().finish(None, false);
    }
    let window = metrics.window();
    assert_eq!(window.timed_requests, busy / 4, "one in 4 at 4× the target");
    assert_eq!(window.requests, busy);

    metrics.start().finish(None, false);
    metrics.window();
    metrics.start().finish(None, false);
    assert_eq!(metrics.window().timed_requests, 1, "calm again: all timed");
}

#[test]
fn fill_writes_the_request_signals_of_a_snapshot() {
    let metrics = RequestMetrics::new();
    let _in_flight = metrics.start();
    metrics.record(ms(10), Some(50), true);
    let mut snapshot = Snapshot::empty(SystemTime::now());
    metrics.fill(&mut snapshot);
    assert_eq!(snapshot.in_flight_requests, Some(1));
    assert_eq!(snapshot.error_rate, Some(1.0));
    assert!(snapshot.requests_per_second.is_some_and(|r| r > 0.0));
    assert!(snapshot.bytes_per_second.is_some_and(|b| b > 0.0));
    let latency = snapshot.latency.unwrap();
    assert!((latency.mean_ms - 10.0).abs() < 1e-9);
    assert_eq!(snapshot.rss_bytes, None, "other signals untouched");
}

#[test]
fn debug_shows_the_state_not_the_counters() {
    let metrics = RequestMetrics::with_sampling(LatencySampling::OneIn(8));
    let text = format!("{metrics:?}");
    assert!(text.contains("timing_one_in: 8"), "{text}");
    assert!(format!("{:?}", metrics.start()).contains("InFlightGuard"));
}

fn app(metrics: RequestMetrics) -> Router {
    Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(ms(20)).await;
                "ok"
            }),
        )
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .layer(MetricsLayer::new(metrics))
}

fn get_request(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn an_axum_router_behind_the_layer_is_counted() {
    let metrics = RequestMetrics::new();
    let app = app(metrics.clone());
    for path in ["/slow", "/slow", "/slow", "/fail"] {
        app.clone().oneshot(get_request(path)).await.unwrap();
    }
    let window = metrics.window();
    assert_eq!(window.requests, 4);
    assert_eq!(window.failed, 1, "the 500");
    assert_eq!(window.error_rate, Some(0.25));
    assert_eq!(
        window.response_bytes,
        3 * 2,
        "three \"ok\" bodies, one empty"
    );
    assert_eq!(window.in_flight, 0);
    let latency = window.latency.unwrap();
    assert!(latency.p50_ms >= 15.0, "{latency:?}");
    assert!(latency.p99_ms < 1_000.0, "{latency:?}");
}

#[tokio::test]
async fn a_request_dropped_by_a_timeout_is_cancelled() {
    let metrics = RequestMetrics::new();
    // A handler that never answers: the timeout always wins, however loaded the machine
    // (against a 20 ms handler, a 1 ms timeout lost under stress-ng).
    let app = Router::new()
        .route("/hang", get(std::future::pending::<&'static str>))
        .layer(MetricsLayer::new(metrics.clone()));
    let request = app.oneshot(get_request("/hang"));
    assert!(tokio::time::timeout(ms(50), request).await.is_err());
    let window = metrics.window();
    assert_eq!(
        (window.cancelled, window.requests, window.in_flight),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn a_service_error_is_a_failed_request() {
    let metrics = RequestMetrics::new();
    let service =
        MetricsLayer::new(metrics.clone()).layer(tower::service_fn(|_: Request<()>| async {
            Err::<Response<String>, _>("refused")
        }));
    assert!(service.oneshot(Request::new(())).await.is_err());
    let ok = MetricsLayer::new(metrics.clone()).layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::from("four")))
    }));
    ok.oneshot(Request::new(())).await.unwrap();
    let window = metrics.window();
    assert_eq!((window.requests, window.failed), (2, 1));
    assert_eq!(window.response_bytes, 4);
}
