//! The API through the router, in process (`oneshot`), with a scripted signal source.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use perfpilot_strategies::{
    Context, IntervalControl, Outcome, Registered, Registry, Signal, Snapshot, Strategy,
    StrategyError, TriggerSpec,
};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::access::constant_time_eq;
use super::*;
use crate::engine::{self, EngineSettings, SignalSource};

struct Fixed;

impl SignalSource for Fixed {
    fn sample(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.memory_usage_ratio = Some(0.25);
        snapshot.process_cpu_ratio = Some(0.05);
        snapshot.load_average = Some([0.5, 0.4, 0.3]);
        snapshot.uptime = Some(Duration::from_secs(42));
        snapshot
    }
}

#[derive(Debug)]
struct Gate(Arc<Semaphore>);

#[async_trait]
impl Strategy for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        let _permit = self.0.acquire().await.expect("semaphore open");
        Ok(Outcome::acted("opened").with("things_done", 1))
    }
}

fn app(token: Option<&str>) -> (Router, Arc<Semaphore>) {
    app_with(ApiSettings {
        token: token.map(str::to_owned),
        max_event_clients: 2,
        ..ApiSettings::new(json!(4242))
    })
}

fn app_with(settings: ApiSettings) -> (Router, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(1000));
    let (handle, _task) = engine::spawn(
        EngineSettings {
            interval: IntervalControl::new(Duration::from_secs(1), Duration::from_secs(1)),
            history_size: 10,
            worker: "4242".to_owned(),
            ..EngineSettings::for_tests()
        },
        vec![Registered {
            strategy: Arc::new(Gate(Arc::clone(&gate))),
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.9),
        }],
        Arc::new(Registry::default()),
        Box::new(Fixed),
        CancellationToken::new(),
    );
    let router = router(handle, settings);
    (router, gate)
}

/// The longest any request or wait in these tests may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

/// Awaits `future` within [`WAIT`], naming what it waited for.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let what = format!("the answer to {} {}", request.method(), request.uri());
    let response = within(&what, within("an answer", app.clone().oneshot(request)))
        .await
        .unwrap();
    let status = response.status();
    let bytes = within(&what, response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

/// As a client sends it: with a `Host` (HTTP/1.1 requires one; the agent refuses a request
/// without).
fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "127.0.0.1:9750")
        .body(Body::empty())
        .unwrap()
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/performance-optimize")
        .header("host", "127.0.0.1:9750")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn metrics_have_the_documented_shape() {
    let (app, _) = app(None);
    let (status, body) = send(&app, get("/performance-metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["workerId"], 4242);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    let performance = &body["performance"];
    assert_eq!(performance["isEnabled"], true);
    assert_eq!(performance["isOptimizing"], false);
    assert_eq!(performance["optimizationCount"], 0);
    assert_eq!(performance["successRate"], Value::Null);
    let current = &body["currentMetrics"];
    assert_eq!(current["memoryUsage"], 0.25);
    assert_eq!(current["cpuUsage"], 0.05);
    assert_eq!(current["systemLoad"], json!([0.5, 0.4, 0.3]));
    assert_eq!(current["uptime"], 42.0);
    assert_eq!(
        current["activeConnections"],
        Value::Null,
        "absent, not zero"
    );
    assert_eq!(body["recentOptimizations"], json!([]));
    assert_eq!(body["strategies"][0]["name"], "gate");
    assert_eq!(body["strategies"][0]["level"], "OK");
}

#[tokio::test]
async fn optimize_runs_and_reports_results() {
    let (app, _) = app(None);
    let (status, body) = send(&app, post(r#"{"strategy": "gate"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["message"],
        "Performance optimization triggered successfully: gate"
    );
    assert_eq!(body["worker"], 4242);
    let result = &body["results"][0];
    assert_eq!(result["strategy"], "gate");
    assert_eq!(result["kind"], "manual");
    assert_eq!(result["success"], true);
    assert_eq!(result["result"]["report"]["things_done"], 1);
    assert_eq!(result["before"], 0.25);

    let (_, metrics) = send(&app, get("/performance-metrics")).await;
    assert_eq!(metrics["performance"]["optimizationCount"], 1);
    assert_eq!(metrics["performance"]["successRate"], 1.0);
    assert_eq!(metrics["recentOptimizations"][0]["strategy"], "gate");
}

#[tokio::test]
async fn empty_body_runs_every_strategy() {
    let (app, _) = app(None);
    let (status, body) = send(&app, post(Body::empty())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["message"],
        "Performance optimization triggered successfully: all"
    );
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let (app, _) = app(None);
    let (status, body) = send(&app, post(r#"{"strategy": "teleport"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("teleport"));
    assert_eq!(body["knownStrategies"], json!(["gate"]));

    let (status, body) = send(&app, post(r#"{"strategy": "#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("malformed JSON body"));

    let (status, _) = send(&app, post(r#"["gate"]"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, body) = send(&app, post(r#"{"strategy": 7}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, body) = send(&app, post(r#"{"stratgey": "gate"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"].as_str().unwrap().contains("stratgey"));

    let (status, body) = send(&app, post(vec![b' '; MAX_BODY_BYTES + 1])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().unwrap().contains("65536"));

    let (status, _) = send(&app, get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(
        &app,
        Request::delete("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_metrics_route_answers_a_wrong_method_as_every_route_does() {
    let (app, _gate) = app(None);
    let mut answers = Vec::new();
    for path in ["/health", "/performance-metrics"] {
        let request = Request::delete(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let allow = response.headers().get(header::ALLOW).cloned();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        answers.push((status, allow, body));
    }
    assert_eq!(answers[0].0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answers[0], answers[1], "/health, then /performance-metrics");
}

#[tokio::test]
async fn a_second_optimize_while_one_runs_gets_409() {
    let (app, gate) = app(None);
    gate.forget_permits(1000);
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post(Body::empty())).await }
    });
    // Wait until the first run holds single flight.
    loop {
        let (_, m) = send(&app, get("/performance-metrics")).await;
        if m["performance"]["isOptimizing"] == true {
            break;
        }
        tokio::task::yield_now().await;
    }
    let (status, body) = send(&app, post(Body::empty())).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "an optimization is already running");
    gate.add_permits(1);
    assert_eq!(
        within("the first optimize", first).await.unwrap().0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_guards_optimize_but_not_reads() {
    let (app, _) = app(Some("s3cret"));
    let (status, body) = send(&app, post(Body::empty())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    let wrong = Request::post("/performance-optimize")
        .header("host", "localhost")
        .header("authorization", "Bearer s3cres")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, wrong).await.0, StatusCode::UNAUTHORIZED);
    let right = Request::post("/performance-optimize")
        .header("host", "localhost")
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, right).await.0, StatusCode::OK);
    let (status, body) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert!(
        body.get("target").is_none(),
        "no target in self mode: {body}"
    );
    let (_, metrics) = send(&app, get("/performance-metrics")).await;
    assert!(metrics.get("target").is_none(), "{metrics}");
}

#[test]
fn constant_time_eq_compares_content_and_length() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
}

/// Reads SSE frames until `count` events of `name` arrived (within [`WAIT`]); returns their
/// data.
async fn read_events(body: &mut Body, name: &str, count: usize) -> Vec<Value> {
    let mut buffer = String::new();
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while found.len() < count {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{count} `{name}` events within {WAIT:?}"))
            .expect("stream open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = "";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if event == name {
                found.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    found
}

#[tokio::test]
async fn events_stream_metrics_and_completed_optimizations() {
    let (app, _) = app(None);
    let response = within("an answer", app.clone().oneshot(get("/events")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = read_events(&mut body, "metrics-updated", 1).await;
    assert_eq!(first[0]["currentMetrics"]["memoryUsage"], 0.25);
    assert_eq!(first[0]["workerId"], 4242);

    let (status, _) = send(&app, post(r#"{"strategy": "gate"}"#)).await;
    assert_eq!(status, StatusCode::OK);
    let completed = read_events(&mut body, "optimization-completed", 1).await;
    assert_eq!(completed[0]["strategy"], "gate");
    assert_eq!(completed[0]["success"], true);
}

#[tokio::test]
async fn event_clients_are_capped() {
    let (app, _) = app(None);
    let mut open = Vec::new();
    for _ in 0..2 {
        let response = within("an answer", app.clone().oneshot(get("/events")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let (status, body) = send(&app, get("/events")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].as_str().unwrap().contains("at most 2"));
    // A client that leaves frees its slot.
    open.pop();
    let response = within("an answer", app.clone().oneshot(get("/events")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn openapi_lists_every_route_with_its_schemas() {
    let (app, _) = app(None);
    let (status, doc) = send(&app, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/performance-metrics",
        "/performance-optimize",
        "/health",
        "/metrics",
        "/events",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let optimize = &doc["paths"]["/performance-optimize"]["post"];
    for status in ["200", "400", "401", "409", "413", "422"] {
        assert!(
            optimize["responses"][status].is_object(),
            "{status} missing"
        );
    }
    let schemas = &doc["components"]["schemas"];
    let metrics = &schemas["MetricsDocument"]["properties"];
    for key in [
        "workerId",
        "timestamp",
        "performance",
        "currentMetrics",
        "recentOptimizations",
    ] {
        assert!(metrics[key].is_object(), "MetricsDocument.{key} missing");
    }
    assert!(schemas["CurrentMetrics"]["properties"]["memoryUsage"].is_object());
    assert!(schemas["ErrorBody"]["properties"]["error"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

async fn get_text(app: &Router, path: &str) -> (StatusCode, String, String) {
    let response = within("an answer", app.clone().oneshot(get(path)))
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = within("a body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn dashboard_is_one_self_contained_page() {
    let (app, _) = app(None);
    let (status, content_type, page) = get_text(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(page.contains("<title>perfpilot</title>"));
    // Nothing loaded from elsewhere: no CDN, no external fonts or scripts.
    for external in ["http://", "https://", "src=", "@import", "url("] {
        assert!(!page.contains(external), "the page refers to {external:?}");
    }
    for (at, _) in page.match_indices("href=") {
        assert!(
            page[at..].starts_with("href=\"data:"),
            "only inline data: links, found {}",
            &page[at..(at + 40).min(page.len())]
        );
    }
}

#[tokio::test]
async fn dashboard_works_under_a_prefix() {
    // axum 0.8: `nest("/agent", _)` routes the page at `/agent` only, `nest("/agent/", _)` at
    // `/agent/` only, `nest_service("/agent", _)` at both. The page adds the missing slash
    // itself, so every one of them works.
    let hosts = [
        ("/agent", Router::new().nest("/agent", app(None).0)),
        ("/agent/", Router::new().nest("/agent/", app(None).0)),
        ("/agent/", Router::new().nest_service("/agent", app(None).0)),
        ("/agent", Router::new().nest_service("/agent", app(None).0)),
    ];
    for (page_path, host) in hosts {
        let (status, content_type, page) = get_text(&host, page_path).await;
        assert_eq!(status, StatusCode::OK, "GET {page_path}");
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert!(page.contains("<title>perfpilot</title>"));
        // The page must build every URL from its own path, never from the server's root.
        for quote in ['"', '\'', '`'] {
            for route in ["/events", "/performance-", "/health", "/metrics"] {
                let absolute = format!("{quote}{route}");
                assert!(!page.contains(&absolute), "the page uses {absolute:?}");
            }
        }
        // What the page's relative URLs resolve to from `/agent/` is served there.
        let response = within("an answer", host.clone().oneshot(get("/agent/events")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let (status, _, body) = get_text(&host, "/agent/performance-metrics").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn manual_triggers_are_rate_limited_with_standard_headers_and_reads_are_not() {
    let (app, _) = app_with(ApiSettings {
        rate_limit: crate::config::RateLimitConfig {
            per_minute: 6,
            burst: 2,
        },
        ..ApiSettings::new(json!(4242))
    });
    for remaining in ["1", "0"] {
        let response = within("an answer", app.clone().oneshot(post(Body::empty())))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers["ratelimit-limit"], "2");
        assert_eq!(headers["ratelimit-remaining"], remaining);
        assert_eq!(headers["ratelimit-policy"], "2;w=20");
        assert!(headers.get("retry-after").is_none());
    }
    let response = within("an answer", app.clone().oneshot(post(Body::empty())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let headers = response.headers().clone();
    // 6 a minute: one every 10 s; the whole bucket back in 20 s.
    assert_eq!(headers["retry-after"], "10");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["ratelimit-reset"], "20");
    let body: Value = serde_json::from_slice(
        &within("a body", response.into_body().collect())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    assert_eq!(body["retryAfter"], 10);
    // Reads stay open, without rate-limit headers.
    for _ in 0..20 {
        let response = within("an answer", app.clone().oneshot(get("/health")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn zero_per_minute_turns_the_limit_off() {
    let (app, _) = app_with(ApiSettings {
        rate_limit: crate::config::RateLimitConfig {
            per_minute: 0,
            burst: 1,
        },
        ..ApiSettings::new(json!(4242))
    });
    for _ in 0..15 {
        let response = within("an answer", app.clone().oneshot(post(Body::empty())))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn an_optimization_outlasting_its_deadline_gets_503_and_is_still_recorded() {
    let (app, gate) = app_with(ApiSettings {
        optimize_timeout: Duration::from_millis(200),
        ..ApiSettings::new(json!(4242))
    });
    gate.forget_permits(1000);
    let (status, body) = send(&app, post(Body::empty())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("recentOptimizations"),
        "{body}"
    );
    gate.add_permits(1);
    let metrics = || get("/performance-metrics");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let (_, m) = send(&app, metrics()).await;
        if m["performance"]["optimizationCount"] == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the run was not recorded within {WAIT:?}");
}

/// A source whose samples after the first wait for the test: `Stall` blocks until released,
/// `Panic` panics (like a broken user `SignalSource`).
enum Misbehaving {
    Stall(std::sync::mpsc::Receiver<()>),
    Panic,
}

struct MisbehavingSource {
    first: bool,
    then: Misbehaving,
}

impl SignalSource for MisbehavingSource {
    fn sample(&mut self) -> Snapshot {
        if std::mem::take(&mut self.first) {
            return Fixed.sample();
        }
        match &self.then {
            Misbehaving::Stall(release) => {
                // Bounded: a test that forgets to release fails rather than hangs.
                let _ = release.recv_timeout(WAIT);
                Fixed.sample()
            }
            Misbehaving::Panic => panic!("the signal source broke"),
        }
    }
}

fn app_over(source: MisbehavingSource, interval: Duration) -> Router {
    let (handle, _task) = engine::spawn(
        EngineSettings {
            interval: IntervalControl::new(interval, interval),
            worker: "4242".to_owned(),
            ..EngineSettings::for_tests()
        },
        Vec::new(),
        Arc::new(Registry::default()),
        Box::new(source),
        CancellationToken::new(),
    );
    router(handle, ApiSettings::new(json!(4242)))
}

/// Polls `GET /health` (within [`WAIT`]) until its status code is `want`; returns the body.
async fn health_until(app: &Router, want: StatusCode, what: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = send(app, get("/health")).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health never said {what} within {WAIT:?}: {status} {body}"
        );
        // The test's own thread sleeps: a stalled sample blocks one runtime worker, and a
        // tokio timer registered here may be on its shard.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_while_the_signal_source_panics() {
    let app = app_over(
        MisbehavingSource {
            first: true,
            then: Misbehaving::Panic,
        },
        Duration::from_millis(100),
    );
    let body = health_until(&app, StatusCode::SERVICE_UNAVAILABLE, "503").await;
    assert_eq!(body["status"], "failing");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("sampling is failing: the signal source broke"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_while_sampling_stalls_and_recovers_after() {
    let (release, stalled) = std::sync::mpsc::channel();
    let app = app_over(
        MisbehavingSource {
            first: true,
            then: Misbehaving::Stall(stalled),
        },
        Duration::from_millis(100),
    );
    let (status, body) = send(&app, get("/health")).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ok")));
    assert!(body.get("reason").is_none(), "{body}");
    // 3 intervals of 100 ms plus the 10 s margin: 503 after about 10.3 s of stall.
    let body = health_until(&app, StatusCode::SERVICE_UNAVAILABLE, "503").await;
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("sampling has stalled"),
        "{body}"
    );
    // Whole milliseconds: an age just past 10.3 s shows as 10300.
    assert!(
        body["lastSampleAgeMs"].as_u64().unwrap() >= 10_300,
        "{body}"
    );
    release.send(()).unwrap();
    health_until(&app, StatusCode::OK, "200 after the stall").await;
}

#[tokio::test]
async fn a_long_settle_does_not_push_a_manual_run_past_its_deadline() {
    // settle 30 s, strategy timeout 1 s: the run is answered when it ends, not after the
    // settle (the judgement follows with a later sample).
    let gate = Arc::new(Semaphore::new(1000));
    let (handle, _task) = engine::spawn(
        EngineSettings {
            strategy_timeout: Duration::from_secs(1),
            settle: Duration::from_secs(30),
            ..EngineSettings::for_tests()
        },
        vec![Registered {
            strategy: Arc::new(Gate(gate)),
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.9),
        }],
        Arc::new(Registry::default()),
        Box::new(Fixed),
        CancellationToken::new(),
    );
    let app = router(
        handle,
        ApiSettings {
            optimize_timeout: ApiSettings::optimize_timeout_for(Duration::from_secs(1), 1),
            ..ApiSettings::new(json!(4242))
        },
    );
    let (status, body) = send(&app, post(r#"{"strategy": "gate"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["success"], true);
    assert_eq!(body["results"][0]["helped"], Value::Null, "judged later");
}

#[test]
fn optimize_deadline_covers_every_strategy_timeout() {
    assert_eq!(
        ApiSettings::optimize_timeout_for(Duration::from_secs(10), 4),
        Duration::from_secs(45)
    );
    assert_eq!(
        ApiSettings::optimize_timeout_for(Duration::from_secs(10), 0),
        Duration::from_secs(15)
    );
}

#[tokio::test]
async fn openapi_names_this_agents_strategies_and_matches_what_is_accepted() {
    let (app, _) = app(None);
    let (_, doc) = send(&app, get("/openapi.json")).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["OptimizeRequest"]["properties"]["strategy"]["enum"],
        json!(["gate", null])
    );
    let worker: Vec<&str> = schemas["WorkerId"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(worker, ["string", "integer"]);
    assert_eq!(
        doc["paths"]["/performance-optimize"]["post"]["responses"]["429"]["description"]
            .as_str()
            .map(|d| d.contains("Retry-After")),
        Some(true)
    );
    // The request body may be null, as the document says: it runs every strategy.
    let (status, body) = send(&app, post("null")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Every route but `/health`, as (method, path) requests.
fn guarded_requests() -> Vec<Request<Body>> {
    let mut requests: Vec<Request<Body>> = [
        "/",
        "/performance-metrics",
        "/events",
        "/metrics",
        "/openapi.json",
    ]
    .into_iter()
    .map(get)
    .collect();
    requests.push(post(Body::empty()));
    requests
}

fn with_header(mut request: Request<Body>, name: &'static str, value: &str) -> Request<Body> {
    request
        .headers_mut()
        .insert(name, value.parse().expect("a valid header value"));
    request
}

#[tokio::test]
async fn a_foreign_host_name_gets_403_everywhere_but_health() {
    let (app, _) = app(None);
    for request in guarded_requests() {
        let path = request.uri().path().to_owned();
        let request = with_header(request, "host", "evil.example:9750");
        let (status, body) = send(&app, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["setting"], "api.allowed_hosts", "{path}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("evil.example:9750"));
    }
    let (status, _) = send(&app, with_header(get("/health"), "host", "evil.example")).await;
    assert_eq!(status, StatusCode::OK);
    for host in ["127.0.0.1:9750", "[::1]:9750", "localhost:9750", "10.0.0.3"] {
        let (status, body) =
            send(&app, with_header(get("/performance-metrics"), "host", host)).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    let (listed, _) = app_with(ApiSettings {
        allowed_hosts: vec!["perfpilot.monitoring.svc".into()],
        ..ApiSettings::new(json!(1))
    });
    let request = with_header(get("/metrics"), "host", "perfpilot.monitoring.svc:9750");
    let response = listed.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn cross_origin_posts_are_refused_before_anything_runs() {
    let (app, _) = app(None);
    let foreign = [
        ("origin", "http://evil.example"),
        ("origin", "http://127.0.0.1:8000"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ];
    for (name, value) in foreign {
        let request = with_header(post(r#"{"strategy": "gate"}"#), "host", "127.0.0.1:9750");
        let request = with_header(request, name, value);
        let (status, body) = send(&app, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {value}: {body}");
        assert_eq!(body["setting"], "api.allowed_origins");
    }
    let (_, metrics) = send(&app, get("/performance-metrics")).await;
    assert_eq!(
        metrics["performance"]["optimizationCount"], 0,
        "nothing ran"
    );
    // The agent's own page, and a client without Origin, are served.
    let own = with_header(post(Body::empty()), "host", "127.0.0.1:9750");
    let own = with_header(own, "origin", "http://127.0.0.1:9750");
    assert_eq!(send(&app, own).await.0, StatusCode::OK);
    assert_eq!(send(&app, post(Body::empty())).await.0, StatusCode::OK);
    // A listed origin is served.
    let (listed, _) = app_with(ApiSettings {
        allowed_origins: vec!["https://ops.example".into()],
        ..ApiSettings::new(json!(1))
    });
    let request = with_header(post(Body::empty()), "origin", "https://ops.example");
    assert_eq!(send(&listed, request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_read_token_guards_reads_and_the_dashboard_issues_a_session_cookie() {
    let (app, _) = app_with(ApiSettings {
        token: Some("write-secret".into()),
        read_token: Some("read-secret".into()),
        ..ApiSettings::new(json!(1))
    });
    for request in guarded_requests() {
        let path = request.uri().path().to_owned();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{path}"
        );
    }
    assert_eq!(send(&app, get("/health")).await.0, StatusCode::OK);
    for token in ["read-secret", "write-secret"] {
        let request = with_header(get("/metrics"), "authorization", &format!("Bearer {token}"));
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{token}");
        assert!(response.headers().get("set-cookie").is_none());
    }
    // The read token does not run strategies.
    let request = with_header(post(Body::empty()), "authorization", "Bearer read-secret");
    assert_eq!(send(&app, request).await.0, StatusCode::UNAUTHORIZED);
    // Without the token the dashboard answers its login page; with it, a session cookie that
    // then opens the event stream (which cannot send Authorization).
    let (status, content_type, page) = get_text(&app, "/").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(content_type.starts_with("text/html") && page.contains("read token"));
    let request = with_header(get("/"), "authorization", "Bearer read-secret");
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/;"),
        "{cookie}"
    );
    let ticket = cookie.split(';').next().unwrap().to_owned();
    let request = with_header(get("/events"), "cookie", &ticket);
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let name = ticket.split('=').next().unwrap();
    assert!(name.starts_with(access::SESSION_COOKIE_PREFIX), "{name}");
    let forged = format!("{name}={}", "ab".repeat(32));
    let request = with_header(get("/events"), "cookie", &forged);
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn only_a_write_token_keeps_reads_open() {
    let (app, _) = app(Some("write-secret"));
    for path in ["/", "/performance-metrics", "/metrics", "/openapi.json"] {
        assert_eq!(get_text(&app, path).await.0, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn requests_without_the_token_do_not_use_up_the_rate_limit() {
    let (app, _) = app_with(ApiSettings {
        token: Some("s3cret".into()),
        rate_limit: crate::config::RateLimitConfig {
            per_minute: 1,
            burst: 1,
        },
        ..ApiSettings::new(json!(1))
    });
    for _ in 0..5 {
        let response = app.clone().oneshot(post(Body::empty())).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get("ratelimit-limit").is_none());
    }
    let request = with_header(post(Body::empty()), "authorization", "Bearer s3cret");
    assert_eq!(send(&app, request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn under_a_prefix_the_session_cookie_is_scoped_to_the_dashboards_directory() {
    let inner = app_with(ApiSettings {
        read_token: Some("read-secret".into()),
        ..ApiSettings::new(json!(1))
    })
    .0;
    let host = Router::new().nest("/agent/", inner.clone());
    let request = with_header(get("/agent/"), "authorization", "Bearer read-secret");
    let response = host.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("Path=/agent;"), "{cookie}");
    // The bare base path too (nest serves it): the cookie is scoped to the base, not `/`.
    let request = with_header(get("/agent"), "authorization", "Bearer read-secret");
    let response = Router::new()
        .nest("/agent", inner)
        .oneshot(request)
        .await
        .unwrap();
    let bare = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(bare.contains("Path=/agent;"), "{bare}");
    let ticket = cookie.split(';').next().unwrap();
    let request = with_header(get("/agent/events"), "cookie", ticket);
    let response = host.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_and_openapi_describe_budgets() {
    let (app, _) = app(None);
    let (_, body) = send(&app, get("/performance-metrics")).await;
    assert_eq!(
        body["budgets"],
        json!([]),
        "no budgets configured: an empty list"
    );
    let (_, doc) = send(&app, get("/openapi.json")).await;
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["MetricsDocument"]["properties"]["budgets"].is_object());
    let budget = &schemas["BudgetView"]["properties"];
    for key in [
        "name",
        "signal",
        "goal",
        "limit",
        "state",
        "rung",
        "episodeStart",
        "secondsAboveGoal",
        "secondsAboveLimit",
        "rungs",
    ] {
        assert!(
            budget[key].is_object(),
            "BudgetView.{key} missing: {budget}"
        );
    }
    let rung = &schemas["RungView"]["properties"];
    for key in ["runs", "helped", "meanRelief", "runsPerMinute", "skipped"] {
        assert!(rung[key].is_object(), "RungView.{key} missing: {rung}");
    }
    assert!(schemas["BudgetStep"]["properties"]["why"].is_object());
}

/// Memory above the goal with p99 at 10 ms until [`DropSessions`] ran; from then on memory
/// back under the goal and p99 at 40 ms, 2 % of requests failing.
struct SlowerAfterTheDrop(Arc<std::sync::atomic::AtomicBool>);

impl SignalSource for SlowerAfterTheDrop {
    fn sample(&mut self) -> Snapshot {
        let first = !self.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.memory_usage_ratio = Some(if first { 0.9 } else { 0.5 });
        let p99_ms = if first { 10.0 } else { 40.0 };
        snapshot.latency = Some(perfpilot_strategies::LatencyStats {
            mean_ms: p99_ms / 4.0,
            p50_ms: p99_ms / 4.0,
            p95_ms: p99_ms / 2.0,
            p99_ms,
        });
        snapshot.error_rate = Some(if first { 0.0 } else { 0.02 });
        snapshot
    }
}

/// A rung that says, as the demo's `/admin/sessions/drop` does, how many sessions it dropped.
#[derive(Debug)]
struct DropSessions(Arc<std::sync::atomic::AtomicBool>);

#[async_trait]
impl Strategy for DropSessions {
    fn name(&self) -> &str {
        "drop-sessions"
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(Outcome::acted("dropped").with("response", json!({"sessions_dropped": 5})))
    }
}

#[tokio::test]
async fn a_budgets_rung_view_shows_what_its_runs_cost() {
    let mut config =
        crate::budget::BudgetConfig::new(Signal::MemoryUsage, 0.8, 1.0, &["drop-sessions"]);
    config.settle = Duration::ZERO;
    let interval = Duration::from_millis(20);
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (handle, _task) = engine::spawn(
        EngineSettings {
            interval: IntervalControl::new(interval, interval),
            worker: "4242".to_owned(),
            budgets: vec![("memory".to_owned(), config)],
            rung_only: vec!["drop-sessions".to_owned()],
            ..EngineSettings::for_tests()
        },
        vec![Registered {
            strategy: Arc::new(DropSessions(Arc::clone(&dropped))),
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.99),
        }],
        Arc::new(Registry::default()),
        Box::new(SlowerAfterTheDrop(dropped)),
        CancellationToken::new(),
    );
    let app = router(handle, ApiSettings::new(json!(4242)));
    let deadline = tokio::time::Instant::now() + WAIT;
    let cost = loop {
        let (_, body) = send(&app, get("/performance-metrics")).await;
        let rung = &body["budgets"][0]["rungs"][0];
        if rung["judged"] == 1 {
            break rung["cost"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rung's run judged within {WAIT:?}: {body}"
        );
        tokio::time::sleep(interval).await;
    };
    assert_eq!(cost["latencyRuns"], 1, "{cost}");
    assert_eq!(cost["meanP99ChangeMs"], 30.0, "{cost}");
    assert_eq!(cost["meanErrorRateChange"], 0.02, "{cost}");
    assert_eq!(cost["latency"], "measured over 1 judged run", "{cost}");
    assert_eq!(cost["reported"], json!({"sessions_dropped": 5.0}), "{cost}");

    let (_, doc) = send(&app, get("/openapi.json")).await;
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["RungView"]["properties"]["cost"].is_object(),
        "{}",
        schemas["RungView"]
    );
    let cost = &schemas["RungCostView"]["properties"];
    for key in [
        "latencyRuns",
        "meanP99ChangeMs",
        "meanErrorRateChange",
        "latency",
        "reported",
    ] {
        assert!(cost[key].is_object(), "RungCostView.{key} missing: {cost}");
    }
}
