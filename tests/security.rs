//! Who may call the API (SPEC §11), on the real binary and on a library agent over real
//! loopback sockets: Host check, cross-origin refusal, read token, check-config masking,
//! try_spawn, the rate limit keyed on `ConnectionPeer`.

mod common;

use common::{client, perfpilot, raw, start_agent};
use serde_json::Value;

/// Every route but `/health`.
const GUARDED: [(&str, &str); 8] = [
    ("GET", "/"),
    ("GET", "/performance-metrics"),
    ("GET", "/performance-metrics/history"),
    ("GET", "/report"),
    ("GET", "/events"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/performance-optimize"),
];

async fn manual_runs(base: &str, bearer: Option<&str>) -> usize {
    let mut request = client().get(format!("{base}/performance-metrics"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let document: Value = request.send().await.unwrap().json().await.unwrap();
    document["recentOptimizations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "manual")
        .count()
}

#[test]
fn a_foreign_host_name_gets_403_on_every_route_but_health() {
    let agent = start_agent(&[], &[]);
    for (method, path) in GUARDED {
        let (status, body) = raw(
            &agent.base,
            method,
            path,
            &[("Host", "evil.example:9750")],
            "",
        );
        assert_eq!(status, 403, "{method} {path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["setting"], "api.allowed_hosts", "{method} {path}");
    }
    let (status, _) = raw(
        &agent.base,
        "GET",
        "/health",
        &[("Host", "evil.example")],
        "",
    );
    assert_eq!(status, 200, "/health answers any host");
    for host in [
        "localhost:9750",
        "127.0.0.1",
        "[::1]:9750",
        "10.20.30.40:9750",
    ] {
        let (status, body) = raw(&agent.base, "GET", "/metrics", &[("Host", host)], "");
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[test]
fn allowed_hosts_come_from_the_environment_as_a_list() {
    let agent = start_agent(
        &[],
        &[(
            "PERFPILOT_API__ALLOWED_HOSTS",
            "perfpilot.monitoring.svc, perfpilot",
        )],
    );
    for host in ["perfpilot.monitoring.svc:9750", "perfpilot"] {
        let (status, body) = raw(
            &agent.base,
            "GET",
            "/performance-metrics",
            &[("Host", host)],
            "",
        );
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, _) = raw(
        &agent.base,
        "GET",
        "/performance-metrics",
        &[("Host", "other.svc")],
        "",
    );
    assert_eq!(status, 403);
}

#[tokio::test]
async fn cross_origin_posts_get_403_and_run_nothing_while_curl_style_posts_run() {
    let agent = start_agent(&[], &[]);
    let body = r#"{"strategy": "interval-backoff"}"#;
    let foreign = [
        [
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        [
            ("Origin", "null"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        [
            ("Sec-Fetch-Site", "cross-site"),
            ("Content-Type", "text/plain"),
        ],
    ];
    for headers in &foreign {
        let (status, answer) = raw(&agent.base, "POST", "/performance-optimize", headers, body);
        assert_eq!(status, 403, "{headers:?}: {answer}");
        assert!(answer.contains("api.allowed_origins"), "{answer}");
    }
    assert_eq!(manual_runs(&agent.base, None).await, 0, "no run recorded");
    // What `curl -XPOST -d '{"strategy":"memory"}'` sends: no Origin.
    let (status, answer) = raw(
        &agent.base,
        "POST",
        "/performance-optimize",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    );
    assert_eq!(status, 200, "{answer}");
    // The agent's own page (Origin is the agent's address) is served too.
    let own = agent.base.clone();
    let (status, answer) = raw(
        &agent.base,
        "POST",
        "/performance-optimize",
        &[("Origin", &own)],
        body,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(manual_runs(&agent.base, None).await, 2);
}

#[tokio::test]
async fn a_read_token_guards_every_read_but_health() {
    let agent = start_agent(
        &[],
        &[
            ("PERFPILOT_API__TOKEN", "write-t0ken"),
            ("PERFPILOT_API__READ_TOKEN", "read-t0ken"),
        ],
    );
    for (method, path) in GUARDED {
        let (status, _) = raw(&agent.base, method, path, &[], "");
        assert_eq!(status, 401, "{method} {path} without a token");
    }
    for (_, path) in GUARDED.iter().filter(|(method, _)| *method == "GET") {
        let (status, _) = raw(
            &agent.base,
            "GET",
            path,
            &[("Authorization", "Bearer read-t0ken")],
            "",
        );
        assert_eq!(status, 200, "GET {path} with the read token");
        let (status, _) = raw(
            &agent.base,
            "GET",
            path,
            &[("Authorization", "Bearer read-t0keN")],
            "",
        );
        assert_eq!(status, 401, "GET {path} with a wrong token");
    }
    let (status, health) = raw(&agent.base, "GET", "/health", &[], "");
    assert_eq!(status, 200);
    assert!(!health.contains("t0ken"), "{health}");
    let (status, _) = raw(
        &agent.base,
        "POST",
        "/performance-optimize",
        &[("Authorization", "Bearer read-t0ken")],
        "",
    );
    assert_eq!(status, 401, "the read token runs nothing");
    assert_eq!(manual_runs(&agent.base, Some("read-t0ken")).await, 0);
}

#[test]
fn check_config_masks_the_read_token() {
    let output = perfpilot()
        .arg("check-config")
        .env("PERFPILOT_API__TOKEN", "write-s3cret")
        .env("PERFPILOT_API__READ_TOKEN", "read-s3cret")
        .env("PERFPILOT_API__ALLOWED_ORIGINS", "https://ops.example")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("api.read_token = \"***\""), "{text}");
    assert!(!text.contains("read-s3cret"), "{text}");
    assert!(!text.contains("write-s3cret"), "{text}");
    assert!(
        text.contains("api.allowed_origins = [\"https://ops.example\"]"),
        "{text}"
    );
    assert!(text.contains("api.max_connections = 256"), "{text}");
}

#[test]
fn bad_access_settings_are_refused_naming_the_key() {
    let stderr = common::refused(
        &["check-config"],
        &[
            ("PERFPILOT_API__ALLOWED_ORIGINS", "grafana.example"),
            ("PERFPILOT_API__MAX_CONNECTIONS", "0"),
        ],
    );
    assert!(
        stderr.contains("api.allowed_origins[0] = \"grafana.example\": must be an origin"),
        "{stderr}"
    );
    assert!(
        stderr.contains("api.max_connections = 0: must be in 1..="),
        "{stderr}"
    );
}

mod library {
    use axum::Router;
    use perfpilot::Agent;
    use perfpilot::{ConnectionPeer, ConnectionTracker, TrackedListener};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn try_spawn_refuses_what_perfpilot_run_refuses() {
        let mut config = perfpilot::config::Config::default();
        config.api.listen = "0.0.0.0:9750".parse().unwrap();
        config.api.read_token = Some(String::new());
        let error = Agent::with_config(config).spawn().unwrap_err().to_string();
        assert!(
            error.contains("api.read_token = \"***\": must be non-empty"),
            "{error}"
        );
        assert!(
            error.contains("api.listen = 0.0.0.0:9750: a non-loopback address needs api.token"),
            "{error}"
        );
        let agent = Agent::builder().spawn().expect("the defaults are valid");
        agent.shutdown().await;
    }

    /// A host app that owns the listener (README's example, with connect info): the agent's
    /// routes keep their Host and Origin checks, and the rate limit keys clients by
    /// `ConnectionPeer`, all of loopback being one client.
    #[tokio::test]
    async fn in_a_host_app_the_checks_apply_and_loopback_is_one_client() {
        let mut config = perfpilot::config::Config::default();
        config.api.rate_limit.per_minute = 1;
        config.api.rate_limit.burst = 1;
        let tracker = ConnectionTracker::new();
        let agent = Agent::with_config(config)
            .connections(tracker.clone())
            .spawn()
            .unwrap();
        let app: Router = Router::new().merge(agent.router());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(
                TrackedListener::new(listener, tracker),
                app.into_make_service_with_connect_info::<ConnectionPeer>(),
            )
            .await
        });
        let from = |ip: &str| {
            reqwest::Client::builder()
                .local_address(ip.parse::<std::net::IpAddr>().unwrap())
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap()
        };
        let url = format!("http://{addr}/performance-optimize");
        let body = r#"{"strategy": "interval-backoff"}"#;
        let first = from("127.0.0.1");
        let refused = first
            .post(&url)
            .header("origin", "http://evil.example")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "Origin checked in the host app");
        let status = |r: reqwest::Response| r.status().as_u16();
        assert_eq!(
            status(first.post(&url).body(body).send().await.unwrap()),
            200
        );
        assert_eq!(
            status(first.post(&url).body(body).send().await.unwrap()),
            429
        );
        // Another loopback address is the same machine: the same bucket.
        let second = from("127.0.0.2");
        let answer = second.post(&url).body(body).send().await.unwrap();
        assert_eq!(status(answer), 429, "127.0.0.2 shares loopback's bucket");
        let foreign_host = first
            .get(format!("http://{addr}/perfpilot/metrics"))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(foreign_host.status(), 403, "Host checked in the host app");
        server.abort();
        agent.shutdown().await;
    }
}
