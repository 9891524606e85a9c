//! Hardening of the real binary on loopback: bearer token, rate limit, body limit.

mod common;

use common::{client, start_agent};

const OPTIMIZE: &str = "/performance-optimize";
const BODY: &str = r#"{"strategy": "interval-backoff"}"#;

#[tokio::test]
async fn a_configured_token_guards_optimize_and_reads_stay_open() {
    let agent = start_agent(&[], &[("PERFPILOT_API__TOKEN", "s3cret-t0ken")]);
    let url = format!("{}{OPTIMIZE}", agent.base);
    let post = || client().post(&url).body(BODY);

    let response = post().send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");

    let response = post().bearer_auth("s3cret-t0kem").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = post().bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(
        response.status(),
        401,
        "a prefix of the token is not the token"
    );

    let response = post().bearer_auth("s3cret-t0ken").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["results"][0]["strategy"], "interval-backoff");

    let response = client()
        .get(format!("{}/performance-metrics", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "reads need no token");
}

#[tokio::test]
async fn the_eleventh_manual_trigger_in_a_burst_gets_429_with_retry_after() {
    // One token back per minute (burst 10 as by default): the eleven requests need not fit
    // in the 6 s a token takes at the default 10 per minute, which a loaded machine may miss.
    let agent = start_agent(&[], &[("PERFPILOT_API__RATE_LIMIT__PER_MINUTE", "1")]);
    let url = format!("{}{OPTIMIZE}", agent.base);
    for n in 1..=10 {
        let response = client().post(&url).body(BODY).send().await.unwrap();
        assert_eq!(response.status(), 200, "request {n}");
        assert_eq!(response.headers()["ratelimit-limit"], "10");
        assert_eq!(
            response.headers()["ratelimit-remaining"],
            (10 - n).to_string().as_str()
        );
    }
    let response = client().post(&url).body(BODY).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert_eq!(response.headers()["ratelimit-policy"], "10;w=600");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    assert_eq!(body["retryAfter"], retry_after);

    // Reads are never limited.
    for _ in 0..20 {
        let response = client()
            .get(format!("{}/health", agent.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn the_rate_limit_is_configurable_and_can_be_turned_off() {
    let agent = start_agent(&[], &[("PERFPILOT_API__RATE_LIMIT__PER_MINUTE", "0")]);
    let url = format!("{}{OPTIMIZE}", agent.base);
    for _ in 0..15 {
        let response = client().post(&url).body(BODY).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn a_body_over_64_kib_gets_413_json_even_with_the_right_token() {
    let agent = start_agent(&[], &[("PERFPILOT_API__TOKEN", "tok")]);
    let big = format!("{{\"strategy\": \"{}\"}}", "x".repeat(70_000));
    let response = client()
        .post(format!("{}{OPTIMIZE}", agent.base))
        .bearer_auth("tok")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("65536"), "{body}");
}
