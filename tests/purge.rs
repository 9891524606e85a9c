//! `memory-purge` through the agent's HTTP API, in a process on jemalloc: the bytes it
//! reports released are checked against what the test allocated and freed.

use std::time::Duration;

use perfpilot::config::Config;
use perfpilot::Agent;
use serde_json::Value;
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const MIB: u64 = 1024 * 1024;

/// Allocates `mib` MiB in 64 KiB chunks, writes every page, and frees it all: jemalloc keeps
/// the dirty pages (10 s decay by default), so they stay resident until a purge.
fn allocate_touch_and_free(mib: u64) {
    let chunks: Vec<Vec<u8>> = (0..mib * 16)
        .map(|i| vec![(i % 251) as u8 + 1; 64 * 1024])
        .collect();
    let touched: u64 = chunks.iter().map(|c| u64::from(c[c.len() - 1])).sum();
    assert!(touched > 0);
    drop(chunks);
}

#[tokio::test(flavor = "current_thread")]
async fn a_purge_over_http_releases_about_what_the_test_freed() {
    let agent = Agent::with_config(Config {
        // Long: no automatic run during the test.
        interval: Duration::from_secs(60),
        ..Config::default()
    })
    .spawn()
    .expect("a valid configuration");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = agent.router();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let client = reqwest::Client::new();
    let purge = || async {
        let response = client
            .post(format!("{base}/performance-optimize"))
            .json(&serde_json::json!({ "strategy": "memory" }))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("the agent answers within 30 s");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["results"][0]["result"]["report"].clone()
    };
    // A first purge (and connection) so that only the test's memory is dirty after it.
    purge().await;

    const FREED_MIB: u64 = 128;
    allocate_touch_and_free(FREED_MIB);
    let report = purge().await;
    let freed = FREED_MIB * MIB;
    let resident = report["resident_released_bytes"].as_u64().unwrap();
    let rss = report["rss_released_bytes"].as_u64().unwrap();
    // Most of what was freed goes back, and not much more than that: the test's process
    // does little else between the two purges, and jemalloc's own metadata and extent
    // rounding for 2048 large allocations add at most about a third (160 MiB resident
    // released for 128 MiB freed, measured).
    for (name, released) in [("resident", resident), ("rss", rss)] {
        assert!(
            released >= freed * 3 / 4 && released <= freed * 3 / 2,
            "{name} released {} MiB after the test freed {FREED_MIB} MiB: {report}",
            released / MIB
        );
    }
    server.abort();
    agent.shutdown().await;
}
