//! `perfpilot metrics` and `perfpilot optimize` (the real binary) read the documents of a real
//! agent whose sample has every signal, with a strategy that ran and a budget that climbed:
//! every key the tables read is one the writer (`api/document.rs`) writes, so a renamed key
//! fails here (the tables name a key they miss on a `??` line) instead of showing as `-`.

mod common;

use std::time::{Duration, Instant};

use perfpilot::config::{load_from_str, Overrides};
use perfpilot::Agent;

/// Memory usage in the full sample is 0.1: above the goal, so an episode starts and the
/// ladder's first rung runs (memory-purge, which fails where jemalloc is not the allocator:
/// a failed record shows as well as a successful one would).
const CONFIG: &str = r#"
worker_id = "table"
interval = "100ms"

[budgets.memory]
signal = "memory_usage"
goal = 0.05
limit = 0.5
ladder = ["memory-purge"]
"#;

/// Runs the binary with `args` on a blocking thread; its stdout, after checking it exited with
/// `code` (`perfpilot optimize` exits with 2 when every run failed).
async fn run_binary(args: Vec<String>, code: i32) -> String {
    let output = tokio::task::spawn_blocking(move || {
        common::perfpilot()
            .args(&args)
            .output()
            .expect("run perfpilot")
    })
    .await
    .expect("the binary's thread");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "perfpilot: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_read_every_key_of_the_real_documents() {
    let loaded = load_from_str(CONFIG, &Default::default(), &Overrides::default())
        .expect("the test's configuration");
    let agent = Agent::with_config(loaded.config)
        .signal_source(common::EverySignal)
        .spawn()
        .expect("a valid configuration");
    let (base, server) = common::serve(agent.standalone_router()).await;

    // Wait (at most 20 s) until the budget's first rung has run and been judged, and every
    // trigger has a value.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = perfpilot::__internal::engine(&agent).view();
        let rung_ran = view
            .budgets
            .iter()
            .any(|b| b.rungs.iter().any(|r| r.judged > 0));
        let valued = view.strategies.iter().all(|s| s.value.is_some());
        if rung_ran && valued {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no judged rung and trigger values after 20 s: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let table = run_binary(vec!["metrics".into(), "--url".into(), base.clone()], 0).await;
    // memory-purge fails where jemalloc is not the allocator (as in this test binary).
    let results = run_binary(
        vec![
            "optimize".into(),
            "memory-purge".into(),
            "--url".into(),
            base.clone(),
        ],
        2,
    )
    .await;
    server.abort();
    agent.shutdown().await;

    for (what, text) in [("metrics", &table), ("optimize", &results)] {
        assert!(
            !text.contains('?'),
            "perfpilot {what} misses a key of the document:\n{text}"
        );
    }
    // Every signal has a value in this sample: no row of the signal table shows `-`.
    let signal_rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("SIGNAL"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(!signal_rows.is_empty(), "{table}");
    for row in &signal_rows {
        let value = row.get(15..41).unwrap_or(row).trim();
        assert!(
            !value.is_empty() && value != "-",
            "no value in {row:?}:\n{table}"
        );
    }
    for shown in [
        "STRATEGY",
        "memory-purge",
        "BUDGET",
        "1. memory-purge",
        "RECENT",
    ] {
        assert!(table.contains(shown), "{shown} missing:\n{table}");
    }
    assert!(results.contains("memory-purge"), "{results}");
}
