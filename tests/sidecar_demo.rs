//! The sidecar walkthrough for real: the demo streaming service under range-request load,
//! `perfpilot run --target-pid` beside it with `examples/sidecar.toml` (budget lowered), the
//! webhook firing as the demo's RSS rises toward the budget, and the RSS falling back under it.

mod common;

use std::time::{Duration, Instant};

use common::{get_json, start_agent, start_demo};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const BUDGET_MIB: u64 = 160;

/// examples/sidecar.toml pointed at the demo, with a lower budget and faster cadence.
fn sidecar_config(demo_base: &str) -> tempfile::TempPath {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sidecar.toml"
    ))
    .unwrap();
    let host = demo_base.trim_start_matches("http://");
    let config = shipped
        .replace("127.0.0.1:8080", host)
        .replace(
            "memory_budget = \"256MiB\"",
            &format!("memory_budget = \"{BUDGET_MIB}MiB\""),
        )
        .replace("interval = \"500ms\"", "interval = \"200ms\"")
        .replace("cooldown = \"5s\"", "cooldown = \"1s\"")
        .replace("[target]\nport = 8080\n", "");
    assert!(config.contains(host) && !config.contains("port = 8080"));
    assert!(config.contains("interval = \"200ms\"") && !config.contains("cooldown = \"5s\""));
    let mut file = tempfile::Builder::new()
        .prefix("perfpilot-sidecar-")
        .suffix(".toml")
        .tempfile()
        .expect("create the config file");
    std::io::Write::write_all(&mut file, config.as_bytes()).expect("write the config file");
    file.into_temp_path()
}

fn trims(metrics: &Value) -> Vec<Value> {
    metrics["recentOptimizations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["strategy"]
                .as_str()
                .is_some_and(|s| s.starts_with("trim-demo-cache"))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_brings_the_demo_back_under_its_budget() {
    let demo = start_demo(&[
        "--cache-mb",
        "1024",
        "--media-mb",
        "64",
        "--chunk-kb",
        "2048",
    ]);
    let config = sidecar_config(&demo.base);
    let pid = demo.child.id().to_string();
    let agent = start_agent(
        &["--config", config.to_str().unwrap(), "--target-pid", &pid],
        &[],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Range requests of 2 MB chunks over ever new ids: the demo's cache (and RSS) grows until
    // the agent steps in. Bounded: at most 400 requests and 90 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut fired = Vec::new();
    for n in 0..400 {
        let response = client
            .get(format!("{}/stream/movie-{n}", demo.base))
            .header("range", "bytes=0-2097151")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        response.bytes().await.unwrap();
        if n % 4 == 3 {
            let (_, metrics) = get_json(&agent.base, "/performance-metrics").await;
            fired = trims(&metrics);
            if !fired.is_empty() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never trimmed the demo's cache"
        );
    }
    let id = fired.first().expect("a trim ran")["id"].clone();
    // Its `after` comes with the first regular sample after the run (within 60 s).
    let judge_deadline = Instant::now() + Duration::from_secs(60);
    let trim = loop {
        let (_, metrics) = get_json(&agent.base, "/performance-metrics").await;
        let record = trims(&metrics).into_iter().find(|r| r["id"] == id);
        match record {
            Some(record) if !record["after"].is_null() => break record,
            record => assert!(
                Instant::now() < judge_deadline,
                "the trim was not judged within 60 s: {record:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let trim = &trim;
    assert_eq!(trim["success"], true, "{trim}");
    assert_eq!(trim["kind"], "automatic");
    let before = trim["before"].as_f64().unwrap();
    let after = trim["after"].as_f64().unwrap();
    // The budget's ladder ran it: above the goal, or before it on urgency or the forecast
    // (adaptive reaction acts before the limit, not only past 80 %; a fill of 2 MiB steps is
    // not extrapolated into urgency far below the goal).
    let reason = trim["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("budget memory") && before > 0.0,
        "fired by the budget: {trim}"
    );
    assert!(after < before, "the next sample saw less memory: {trim}");
    let response = &trim["result"]["report"]["response"];
    assert!(response["entries_removed"].as_u64().unwrap() > 0, "{trim}");
    // The trim sticks: the cache may only grow back to what it left.
    let capacity_after = response["capacity_after_bytes"].as_u64().unwrap();
    assert!(
        capacity_after < response["capacity_before_bytes"].as_u64().unwrap(),
        "{trim}"
    );
    assert!(capacity_after < 1024 * MIB, "{trim}");

    // The rung's cost: what the hook said it removed, summed over the rung's runs, and the
    // change in the probe's p99 across them (or why it is not there).
    let (_, metrics) = get_json(&agent.base, "/performance-metrics").await;
    let rung = metrics["budgets"][0]["rungs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|rung| rung["strategy"] == trim["strategy"])
        .unwrap_or_else(|| panic!("the trim's rung: {:#}", metrics["budgets"]));
    let cost = &rung["cost"];
    let removed = cost["reported"]["entries_removed"].as_f64().unwrap_or(0.0);
    assert!(
        removed >= response["entries_removed"].as_f64().unwrap(),
        "the rung's cost counts its run's removed entries: {cost}"
    );
    assert!(cost["latency"].is_string(), "{cost}");
    eprintln!("the trim rung's cost: {cost}");

    // With the load stopped, the demo ends up under its budget.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = get_json(&agent.base, "/performance-metrics").await;
        let rss = metrics["currentMetrics"]["rssBytes"].as_u64().unwrap();
        let limit = metrics["currentMetrics"]["memoryLimitBytes"]
            .as_u64()
            .unwrap();
        assert_eq!(limit, BUDGET_MIB * MIB);
        if rss < limit {
            assert_eq!(metrics["target"]["state"], "running");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS {} MiB still over the {BUDGET_MIB} MiB budget: {:#}",
            rss / MIB,
            metrics["recentOptimizations"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = config.close();
}
