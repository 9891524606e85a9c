//! `webhook` against a real HTTP server on loopback.
#![cfg(feature = "sidecar")]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use perfpilot_strategies::{
    Context, Outcome, Signal, Strategy, StrategyError, TriggerSpec, WebhookConfig,
};
use serde_json::{json, Value};

fn ctx() -> Context {
    Context::standalone()
}

/// Serves `router` on 127.0.0.1 (a free port) until the test's runtime ends.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn hook(url: String) -> WebhookConfig {
    let mut config = WebhookConfig::new(url, TriggerSpec::new(Signal::MemoryUsage, 0.8));
    config.retry_backoff = Duration::from_millis(10);
    config
}

/// Runs the hook, bounded.
async fn run(config: &WebhookConfig) -> Result<Outcome, StrategyError> {
    bounded(config.build("test-hook").run(ctx())).await
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("the webhook run ends within 10 s")
}

fn failure(result: Result<Outcome, StrategyError>) -> String {
    match result {
        Err(StrategyError::Failed(message)) => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn success_reports_status_attempts_and_the_hooks_json() {
    let router = Router::new().route(
        "/admin/cache/trim",
        post(|headers: HeaderMap, Json(body): Json<Value>| async move {
            Json(json!({
                "bytes_freed": 1048576,
                "got": body,
                "token": headers.get("x-admin-token").and_then(|v| v.to_str().ok()),
            }))
        }),
    );
    let addr = serve(router).await;
    let mut config = hook(format!("http://{addr}/admin/cache/trim"));
    config.body = json!({"fraction": 0.25});
    config
        .headers
        .insert("X-Admin-Token".into(), "s3cret".into());

    let started = std::time::Instant::now();
    let outcome = run(&config).await.unwrap();
    let outside_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!(outcome.acted);
    assert_eq!(outcome.report["status"], 200);
    assert_eq!(outcome.report["attempts"], 1);
    // A real round trip takes some time, and no more than the test saw around the run.
    let elapsed_ms = outcome.report["elapsed_ms"].as_f64().unwrap();
    assert!(
        elapsed_ms > 0.0 && elapsed_ms <= outside_ms,
        "elapsed_ms {elapsed_ms}, measured around the run {outside_ms}"
    );
    let response = &outcome.report["response"];
    assert_eq!(response["bytes_freed"], 1048576);
    assert_eq!(response["got"], json!({"fraction": 0.25}));
    assert_eq!(response["token"], "s3cret");
    assert!(
        outcome.summary.contains("200 OK") && outcome.summary.contains("/admin/cache/trim"),
        "{}",
        outcome.summary
    );
}

#[tokio::test]
async fn connections_are_reused_between_runs_and_answers_are_cut_to_an_excerpt() {
    // The server records each request's client address: one TCP connection (one client
    // port) for all three runs is reuse; a new connection per run would show three.
    let peers: Arc<std::sync::Mutex<Vec<SocketAddr>>> = Arc::default();
    let router = Router::new()
        .route(
            "/hook",
            post(
                |State(peers): State<Arc<std::sync::Mutex<Vec<SocketAddr>>>>,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    peers.lock().unwrap().push(peer);
                    "x".repeat(5000)
                },
            ),
        )
        .with_state(Arc::clone(&peers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let strategy = hook(format!("http://{addr}/hook")).build("text");
    for _ in 0..3 {
        let outcome = bounded(strategy.run(ctx())).await.unwrap();
        assert_eq!(
            outcome.report["response"],
            "x".repeat(perfpilot_strategies::DEFAULT_EXCERPT_BYTES)
        );
        assert_eq!(outcome.report["response_bytes"], 5000);
    }
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "each run opened its own connection: {peers:?}"
    );
}

#[tokio::test]
async fn credentials_in_the_url_are_sent_but_never_recorded() {
    let router = Router::new().route(
        "/hook",
        post(|headers: HeaderMap| async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            Json(json!({"authorized": auth.is_some()}))
        }),
    );
    let addr = serve(router).await;
    let outcome = run(&hook(format!("http://admin:s3cret@{addr}/hook")))
        .await
        .unwrap();
    assert_eq!(outcome.report["response"], json!({"authorized": true}));
    assert_eq!(outcome.report["url"], format!("http://{addr}/hook"));
    let everything = format!("{} {:?}", outcome.summary, outcome.report);
    assert!(!everything.contains("s3cret"), "{everything}");
}

#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

impl Hits {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_5xx_is_retried_and_a_later_2xx_succeeds() {
    let hits = Hits::default();
    let router = Router::new()
        .route(
            "/hook",
            post(|State(hits): State<Hits>| async move {
                if hits.0.fetch_add(1, Ordering::SeqCst) == 0 {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"error": "busy"})),
                    )
                } else {
                    (StatusCode::OK, Json(json!({"ok": true})))
                }
            }),
        )
        .with_state(hits.clone());
    let addr = serve(router).await;

    let outcome = run(&hook(format!("http://{addr}/hook"))).await.unwrap();
    assert_eq!(outcome.report["attempts"], 2);
    assert_eq!(outcome.report["status"], 200);
    assert_eq!(outcome.report["response"], json!({"ok": true}));
    assert_eq!(hits.count(), 2);
}

#[tokio::test]
async fn a_5xx_on_every_attempt_fails_after_all_retries() {
    let hits = Hits::default();
    let router = Router::new()
        .route(
            "/hook",
            post(|State(hits): State<Hits>| async move {
                hits.0.fetch_add(1, Ordering::SeqCst);
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }),
        )
        .with_state(hits.clone());
    let addr = serve(router).await;
    let url = format!("http://{addr}/hook");

    let message = failure(run(&hook(url.clone())).await);
    assert_eq!(
        message,
        format!("webhook POST {url} answered 503 Service Unavailable after 3 attempts: overloaded")
    );
    assert_eq!(hits.count(), 3);
}

#[tokio::test]
async fn a_4xx_fails_without_a_retry() {
    let hits = Hits::default();
    let router = Router::new()
        .fallback(|State(hits): State<Hits>| async move {
            hits.0.fetch_add(1, Ordering::SeqCst);
            StatusCode::NOT_FOUND
        })
        .with_state(hits.clone());
    let addr = serve(router).await;
    let url = format!("http://{addr}/admin/nope");

    let message = failure(run(&hook(url.clone())).await);
    assert_eq!(
        message,
        format!("webhook POST {url} answered 404 Not Found after 1 attempt")
    );
    assert_eq!(hits.count(), 1);
}

#[tokio::test]
async fn a_hook_slower_than_the_timeout_fails_as_timed_out() {
    let hits = Hits::default();
    let router = Router::new()
        .route(
            "/slow",
            post(|State(hits): State<Hits>| async move {
                hits.0.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        )
        .with_state(hits.clone());
    let addr = serve(router).await;
    let url = format!("http://{addr}/slow");
    let mut config = hook(url.clone());
    config.timeout = Duration::from_millis(200);
    config.retries = 1;

    let started = std::time::Instant::now();
    let message = failure(run(&config).await);
    assert_eq!(
        message,
        format!("webhook POST {url} failed after 2 attempts: timed out after 200 ms")
    );
    assert_eq!(hits.count(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_refused_fails_naming_the_url() {
    // A port that was free a moment ago and has nobody listening now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/admin/cache/trim");
    let mut config = hook(url.clone());
    config.retries = 1;

    let message = failure(run(&config).await);
    assert!(
        message.starts_with(&format!(
            "webhook POST {url} failed after 2 attempts: cannot connect: "
        )),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[tokio::test]
async fn a_get_hook_sends_no_body() {
    let router = Router::new().route(
        "/stats",
        axum::routing::get(|body: String| async move { Json(json!({"body_len": body.len()})) }),
    );
    let addr = serve(router).await;
    let mut config = hook(format!("http://{addr}/stats"));
    config.method = "get".into();
    let outcome = run(&config).await.unwrap();
    assert_eq!(outcome.report["response"], json!({"body_len": 0}));
}

/// The `x-perfpilot-*` headers of one request, by name.
fn perfpilot_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-perfpilot-"))
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("(not text)").to_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    seen.sort();
    seen
}

#[tokio::test]
async fn the_hook_is_told_why_and_a_retry_carries_the_same_run_id() {
    type Seen = Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, Value)>>>;
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push((perfpilot_headers(&headers), body));
                    if seen.len() == 1 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let addr = serve(router).await;
    let mut config = hook(format!("http://{addr}/hook"));
    config.body = json!({"fraction": 0.25});
    // A configured header cannot pass for the agent's own.
    config
        .headers
        .insert("X-Perfpilot-Level".into(), "forged".into());
    let ctx = Context {
        level: perfpilot_strategies::Level::Critical,
        kind: perfpilot_strategies::RunKind::Automatic,
        cause: perfpilot_strategies::Cause {
            run_id: "4d2-18c4f2a9b10-7".into(),
            signal: Some(Signal::MemoryUsage),
            value: Some(0.9312),
            budget: Some("memory".into()),
            rung: Some(1),
        },
        ..Context::standalone()
    };

    let outcome = bounded(config.build("trim-cache").run(ctx)).await.unwrap();
    assert_eq!(outcome.report["attempts"], 2);
    let seen = seen.lock().unwrap();
    let expected: Vec<(String, String)> = [
        ("x-perfpilot-budget", "memory"),
        ("x-perfpilot-kind", "automatic"),
        ("x-perfpilot-level", "CRITICAL"),
        ("x-perfpilot-run-id", "4d2-18c4f2a9b10-7"),
        ("x-perfpilot-rung", "1"),
        ("x-perfpilot-signal", "memory_usage"),
        ("x-perfpilot-strategy", "trim-cache"),
        ("x-perfpilot-value", "0.9312"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(seen.len(), 2, "one failed attempt and its retry");
    for (headers, body) in seen.iter() {
        assert_eq!(headers, &expected);
        assert_eq!(
            body,
            &json!({"fraction": 0.25}),
            "the configured body, unchanged"
        );
    }
}

#[tokio::test]
async fn a_manual_run_outside_an_agent_sends_only_what_is_known() {
    type Seen = Arc<std::sync::Mutex<Vec<Vec<(String, String)>>>>;
    let seen = Seen::default();
    let router = Router::new()
        .route(
            "/hook",
            post(|State(seen): State<Seen>, headers: HeaderMap| async move {
                seen.lock().unwrap().push(perfpilot_headers(&headers));
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(seen.clone());
    let addr = serve(router).await;
    run(&hook(format!("http://{addr}/hook"))).await.unwrap();
    let seen = seen.lock().unwrap();
    let names: Vec<&str> = seen[0].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "x-perfpilot-kind",
            "x-perfpilot-level",
            "x-perfpilot-strategy"
        ]
    );
}
