//! Library mode: the agent's routes merge into an app that has its own `/` and `/metrics`
//! (and fallback), and the dashboard's requests resolve wherever it is mounted.

mod common;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use perfpilot::Agent;

async fn get_text(base: &str, path: &str) -> (u16, String) {
    let response = common::client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The paths the dashboard requests, from its `api("...")` calls.
fn dashboard_requests(html: &str) -> Vec<String> {
    let requests: Vec<String> = html
        .split("api(\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(path, _)| path.to_owned()))
        .collect();
    assert!(
        requests.contains(&"events".to_owned())
            && requests.contains(&"performance-optimize".to_owned()),
        "{requests:?}"
    );
    requests
}

/// What the page's `api(path)` resolves to when the page is at `page` (its script appends
/// `/` to a path that lacks one, then the request path).
fn resolve(page: &str, request: &str) -> String {
    let base = if page.ends_with('/') {
        page.to_owned()
    } else {
        format!("{page}/")
    };
    format!("{base}{request}")
}

/// Every request of the dashboard at `page` reaches the agent: the event stream opens with
/// `metrics-updated`, a manual optimization runs.
async fn dashboard_works_at(base: &str, page: &str) {
    let (status, html) = get_text(base, page).await;
    assert_eq!(status, 200, "GET {page}");
    assert!(html.contains("<canvas"), "not the dashboard at {page}");
    for request in dashboard_requests(&html) {
        let url = format!("{base}{}", resolve(page, &request));
        match request.as_str() {
            "events" => {
                let mut response = common::client().get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200, "{url}");
                let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
                    .await
                    .expect("the first event within 5 s")
                    .unwrap()
                    .unwrap();
                assert!(
                    String::from_utf8_lossy(&chunk).contains("event: metrics-updated"),
                    "{url}"
                );
            }
            "performance-optimize" => {
                let response = common::client()
                    .post(&url)
                    .json(&serde_json::json!({"strategy": "memory"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{url}");
            }
            _ => {
                let response = common::client().get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200, "{url}");
            }
        }
    }
}

#[tokio::test]
async fn the_default_router_merges_into_an_app_with_its_own_root_metrics_and_fallback() {
    let agent = Agent::builder().spawn().expect("the default configuration");
    // Would panic with "Overlapping method route" (or on two fallbacks) before.
    let app = Router::new()
        .route("/", get(|| async { "the app's home" }))
        .route("/metrics", get(|| async { "app_requests_total 7\n" }))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "the app's 404") })
        .merge(agent.router());
    let (base, server) = common::serve(app).await;

    assert_eq!(get_text(&base, "/").await, (200, "the app's home".into()));
    assert_eq!(
        get_text(&base, "/metrics").await,
        (200, "app_requests_total 7\n".into())
    );
    assert_eq!(get_text(&base, "/nowhere").await.1, "the app's 404");
    // The source documents' routes stay at the root.
    let (status, json) = get_text(&base, "/performance-metrics").await;
    assert_eq!(status, 200);
    assert!(json.contains("\"currentMetrics\""));
    assert_eq!(get_text(&base, "/health").await.0, 200);
    // The agent's Prometheus series and dashboard under /perfpilot.
    assert_eq!(Agent::BASE_PATH, "/perfpilot");
    let (status, metrics) = get_text(&base, "/perfpilot/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("perfpilot_samples_total"), "{metrics}");
    dashboard_works_at(&base, "/perfpilot/").await;
    dashboard_works_at(&base, "/perfpilot").await;
    server.abort();
    agent.shutdown().await;
}

#[tokio::test]
async fn router_under_a_base_leaves_the_root_to_the_app() {
    let agent = Agent::builder().spawn().expect("the default configuration");
    let app = Router::new()
        .route("/health", get(|| async { "the app is fine" }))
        .route("/events", get(|| async { "the app's events" }))
        .merge(agent.router_under("/ops/agent"));
    let (base, server) = common::serve(app).await;
    assert_eq!(get_text(&base, "/health").await.1, "the app is fine");
    assert_eq!(get_text(&base, "/events").await.1, "the app's events");
    let (status, health) = get_text(&base, "/ops/agent/health").await;
    assert_eq!(status, 200);
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    dashboard_works_at(&base, "/ops/agent").await;
    dashboard_works_at(&base, "/ops/agent/").await;
    server.abort();
    agent.shutdown().await;
}
