//! Library mode on real loopback sockets: an axum service with the agent embedded, a real
//! moka cache, tracked connections, and user strategies that misbehave.

use std::sync::Arc;
use std::time::{Duration, Instant};

use perfpilot::config::Config;
use perfpilot::{Agent, ConnectionTracker, MetricsLayer, RequestMetrics, TrackedListener};
use perfpilot_strategies::{
    async_trait, Context, Outcome, Signal, Strategy, StrategyError, TriggerSpec,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
struct Explodes;

#[async_trait]
impl Strategy for Explodes {
    fn name(&self) -> &str {
        "explodes"
    }
    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        panic!("user strategy bug")
    }
}

#[derive(Debug)]
struct Hangs;

#[async_trait]
impl Strategy for Hangs {
    fn name(&self) -> &str {
        "hangs"
    }
    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        std::future::pending().await
    }
}

/// A service with the agent embedded; returns its base URL, the agent and the cache.
struct Service {
    base: String,
    agent: Agent,
    cache: moka::sync::Cache<u64, Vec<u8>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start_service(config: Config) -> Service {
    let cache: moka::sync::Cache<u64, Vec<u8>> = moka::sync::Cache::new(10_000);
    let tracker = ConnectionTracker::new();
    let requests = RequestMetrics::new();
    let never = TriggerSpec::new(Signal::MemoryUsage, 1.0);
    let agent = Agent::with_config(config)
        .cache("items", cache.clone())
        .requests(requests.clone())
        .connections(tracker.clone())
        .strategy(Arc::new(Explodes), never.clone())
        .strategy(Arc::new(Hangs), never)
        .spawn()
        .expect("a valid configuration");
    // The service's routes are measured; the agent's own are merged after the layer.
    let app = axum::Router::new()
        .route("/ping", axum::routing::get(|| async { "pong" }))
        .route(
            "/slow/{ms}",
            axum::routing::get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "slow"
                },
            ),
        )
        .route(
            "/fail",
            axum::routing::get(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .layer(MetricsLayer::new(requests))
        .merge(agent.router());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(TrackedListener::new(listener, tracker), app).await;
    });
    Service {
        base,
        agent,
        cache,
        server,
    }
}

fn config() -> Config {
    let mut config = Config {
        interval: Duration::from_millis(100),
        strategy_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    config.strategies.connection_reap.idle_timeout = Duration::from_millis(300);
    config.strategies.connection_reap.max_per_client = Some(2);
    config
}

async fn optimize(base: &str, strategy: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/performance-optimize"))
        .json(&serde_json::json!({ "strategy": strategy }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A raw keep-alive HTTP/1.1 client connection that has made one request.
async fn keep_alive_connection(base: &str) -> TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).contains("pong"));
    stream
}

/// Whether the server closed the connection: a read returns EOF or an error within 2 s.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_trim_shrinks_a_real_moka_cache() {
    let service = start_service(config()).await;
    for key in 0..1000 {
        service.cache.insert(key, vec![0; 64]);
    }
    service.cache.run_pending_tasks();
    let answer = optimize(&service.base, "cache").await;
    let result = &answer["results"][0];
    assert_eq!(result["success"], true, "{answer}");
    assert_eq!(result["result"]["report"]["entries_trimmed"], 250);
    service.cache.run_pending_tasks();
    assert_eq!(service.cache.entry_count(), 750);
    service.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_counted_and_reaped_as_the_client_sees_it() {
    // Idle means 3 s here: the idle connection waits 3.5 s, and the fresh ones below need
    // only be reaped within 3 s of their opening, generous on a loaded machine.
    let mut config = config();
    config.strategies.connection_reap.idle_timeout = Duration::from_secs(3);
    let service = start_service(config).await;
    let mut idle = keep_alive_connection(&service.base).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let fresh_since = Instant::now();
    // Three fresh connections from one client, plus the optimize request's own: over the cap
    // of 2, the two oldest go.
    let mut oldest = keep_alive_connection(&service.base).await;
    let mut middle = keep_alive_connection(&service.base).await;
    let mut newest = keep_alive_connection(&service.base).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while service.agent.snapshot().open_connections < Some(4) {
        assert!(
            Instant::now() < deadline,
            "4 open connections not sampled within 30 s: {:?}",
            service.agent.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The optimize request itself arrives on a fifth connection (reqwest's), which is new.
    let answer = optimize(&service.base, "connection-reap").await;
    assert!(
        fresh_since.elapsed() < Duration::from_secs(3),
        "the machine was too slow for this test: the fresh connections were idle for {:?}",
        fresh_since.elapsed()
    );
    let report = &answer["results"][0]["result"]["report"];
    assert_eq!(report["closed_idle"], 1, "{answer}");
    assert_eq!(report["closed_over_limit"], 2, "{answer}");
    assert!(
        closed_by_server(&mut idle).await,
        "the idle connection was closed"
    );
    assert!(
        closed_by_server(&mut oldest).await,
        "the oldest over the cap was closed"
    );
    assert!(
        closed_by_server(&mut middle).await,
        "the second oldest was closed"
    );
    // The newest is still served.
    newest
        .write_all(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), newest.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).contains("pong"));
    service.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_user_strategies_fail_and_the_host_keeps_serving() {
    // 3 s, and no backtrace: room for the panic to be reported (symbolizing a debug build's
    // backtrace with RUST_BACKTRACE set took longer than 500 ms on a loaded machine) before
    // the timeout would call it a hang.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let service = start_service(Config {
        strategy_timeout: Duration::from_secs(3),
        ..config()
    })
    .await;
    let answer = optimize(&service.base, "explodes").await;
    let result = &answer["results"][0];
    assert_eq!(result["success"], false);
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("user strategy bug"),
        "{result}"
    );

    let started = Instant::now();
    let answer = optimize(&service.base, "hangs").await;
    // Cut short by the 3 s strategy timeout, not hanging (generous for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the hanging strategy took {:?}",
        started.elapsed()
    );
    assert_eq!(
        answer["results"][0]["error"],
        "strategy timed out after 3000 ms"
    );

    let pong = reqwest::get(format!("{}/ping", service.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pong, "pong");
    assert_eq!(
        perfpilot::__internal::engine(&service.agent)
            .view()
            .stats
            .count,
        2
    );
    service.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_feeds_latency_throughput_errors_and_in_flight() {
    let service = start_service(config()).await;
    let client = reqwest::Client::new();
    // Every sample from before the requests on: each covers its own 100 ms window, and some
    // window holds a /slow/40 completion.
    let mut events = service.agent.subscribe();
    // One long request stays in flight while the others come and go (and while the test
    // looks; it is dropped at the end).
    let long = tokio::spawn({
        let url = format!("{}/slow/30000", service.base);
        let client = client.clone();
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    let mut calls = Vec::new();
    for i in 0..30 {
        let path = match i % 3 {
            0 => "/ping".to_owned(),
            1 => "/slow/40".to_owned(),
            _ => "/fail".to_owned(),
        };
        calls.push(client.get(format!("{}{path}", service.base)).send());
    }
    for call in calls {
        call.await.unwrap();
    }

    let (mut slowest_p99_ms, mut max_error_rate, mut max_rate, mut max_in_flight) =
        (0.0f64, 0.0f64, 0.0f64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(slowest_p99_ms >= 35.0 && max_error_rate > 0.2 && max_rate > 0.0 && max_in_flight >= 1)
    {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "within 30 s of samples: p99 {slowest_p99_ms} ms (want >= 35), error rate \
                     {max_error_rate} (> 0.2), rate {max_rate} (> 0), in flight {max_in_flight} (>= 1)"
                )
            });
        let snapshot = match event {
            Ok(perfpilot::Event::MetricsUpdated(snapshot, _)) => snapshot,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(e) => panic!("the agent's events ended: {e}"),
        };
        if let Some(latency) = snapshot.latency {
            slowest_p99_ms = slowest_p99_ms.max(latency.p99_ms);
        }
        max_error_rate = max_error_rate.max(snapshot.error_rate.unwrap_or(0.0));
        max_rate = max_rate.max(snapshot.requests_per_second.unwrap_or(0.0));
        max_in_flight = max_in_flight.max(snapshot.in_flight_requests.unwrap_or(0));
    }
    let metrics: Value = reqwest::get(format!("{}/performance-metrics", service.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The same signals in the API, in the source documents' keys.
    let current = &metrics["currentMetrics"];
    assert!(
        current["inFlightRequests"].as_u64().unwrap() >= 1,
        "{current}"
    );
    assert!(
        current["activeConnections"].as_u64().unwrap() >= 1,
        "{current}"
    );
    assert!(current["requestsPerSecond"].is_number(), "{current}");
    assert!(
        !long.is_finished(),
        "the 30 s request was in flight all along"
    );
    long.abort();
    service.server.abort();
}

/// A request to a route the app does not have is a request too: with the layer added last (as
/// the crate docs say), the 404s of the app and of the agent's prefix are counted, as requests
/// and not as errors, beside the app's own route and the agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_added_last_counts_requests_to_routes_the_app_does_not_have() {
    use tower::ServiceExt;
    let requests = RequestMetrics::new();
    let agent = Agent::builder()
        .requests(requests.clone())
        .spawn()
        .expect("the default configuration");
    let app = axum::Router::new()
        .route("/ping", axum::routing::get(|| async { "pong" }))
        .merge(agent.router())
        .layer(MetricsLayer::new(requests.clone()));
    let mut statuses = Vec::new();
    for path in [
        "/ping",
        "/no-such-route",
        "/perfpilot/no-such-route",
        "/health",
    ] {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("a request");
        let response = app.clone().oneshot(request).await.expect("an answer");
        statuses.push((path, response.status().as_u16()));
    }
    assert_eq!(
        statuses,
        [
            ("/ping", 200),
            ("/no-such-route", 404),
            ("/perfpilot/no-such-route", 404),
            ("/health", 200)
        ]
    );
    let window = requests.window();
    assert_eq!(window.requests, 4, "every request counted: {window:?}");
    assert_eq!(window.failed, 0, "a 404 is not a failure: {window:?}");
    agent.shutdown().await;
}
