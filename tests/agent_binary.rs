//! The real binary on real loopback sockets: every route, every error, config and CLI.

mod common;

use std::time::{Duration, Instant};

use common::{get_json, perfpilot, post_json, start_agent};

#[tokio::test]
async fn serves_metrics_health_and_optimize_on_defaults() {
    let started = Instant::now();
    let agent = start_agent(&[], &[]);
    let (status, metrics) = get_json(&agent.base, "/performance-metrics").await;
    assert_eq!(status, 200);
    // The default identity: the kernel's host name and the agent's pid.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        metrics["workerId"],
        format!("{}-{}", hostname.trim(), agent.child.id())
    );
    let current = &metrics["currentMetrics"];
    let memory = current["memoryUsage"].as_f64().expect("memoryUsage read");
    assert!(memory > 0.0 && memory < 1.0, "{memory}");
    assert!(current["rssBytes"].as_u64().unwrap() > 0);
    assert_eq!(current["systemLoad"].as_array().unwrap().len(), 3);
    // The agent's own age: positive, and no older than this test's start of it (its start
    // time has clock-tick resolution, 10 ms).
    let uptime = current["uptime"].as_f64().unwrap();
    let since_start = started.elapsed().as_secs_f64();
    assert!(
        uptime > 0.0 && uptime <= since_start + 0.02,
        "uptime {uptime} s, started {since_start} s ago"
    );
    // The binary runs on jemalloc, so its statistics are there.
    assert!(current["allocator"]["residentBytes"].as_u64().unwrap() > 0);
    assert_eq!(metrics["performance"]["isEnabled"], true);
    assert_eq!(metrics["performance"]["optimizationCount"], 0);
    let names: Vec<&str> = metrics["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "memory-purge",
            "cache-trim",
            "connection-reap",
            "interval-backoff"
        ]
    );

    let (status, health) = get_json(&agent.base, "/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    let (status, answer) = post_json(
        &agent.base,
        "/performance-optimize",
        r#"{"strategy": "memory"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let result = &answer["results"][0];
    assert_eq!(result["strategy"], "memory-purge");
    assert_eq!(result["success"], true, "{result}");
    // The bytes released are checked against what was freed in tests/purge.rs (this process
    // cannot be made to allocate a known amount); here the report is there and consistent.
    let report = &result["result"]["report"];
    let (rss_before, rss_after) = (
        report["rss_before_bytes"].as_u64().unwrap(),
        report["rss_after_bytes"].as_u64().unwrap(),
    );
    assert_eq!(
        report["rss_released_bytes"].as_u64().unwrap(),
        rss_before.saturating_sub(rss_after),
        "{report}"
    );
    assert!(result["before"].as_f64().is_some(), "{result}");
    // `after` (and, for a run that acted, `helped`) come with the next regular sample, not
    // in the answer.
    assert!(result["after"].is_null(), "{result}");
    if result["result"]["acted"] == true {
        assert!(result["helped"].is_null(), "{result}");
    }

    // Every strategy at once: the ones with nothing registered succeed with zero work.
    let (status, answer) = post_json(&agent.base, "/performance-optimize", "").await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(|r| r["success"] == true), "{answer}");
    let cache = results
        .iter()
        .find(|r| r["strategy"] == "cache-trim")
        .unwrap();
    assert_eq!(cache["result"]["summary"], "no caches registered");

    let (_, metrics) = get_json(&agent.base, "/performance-metrics").await;
    assert_eq!(metrics["performance"]["optimizationCount"], 5);
    assert_eq!(metrics["performance"]["successRate"], 1.0);
    assert_eq!(metrics["recentOptimizations"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let agent = start_agent(&[], &[]);
    let (status, body) = post_json(
        &agent.base,
        "/performance-optimize",
        r#"{"strategy": "warp-drive"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("warp-drive"));
    assert!(body["knownStrategies"]
        .as_array()
        .unwrap()
        .contains(&"gc".into()));

    let (status, body) = post_json(&agent.base, "/performance-optimize", "{not json").await;
    assert_eq!(status, 400);
    assert!(body["error"].is_string());

    let (status, body) = post_json(&agent.base, "/performance-optimize", r#"["memory"]"#).await;
    assert_eq!(status, 422);
    assert!(body["error"].is_string());

    let big: &'static str =
        Box::leak(format!("{{\"strategy\": \"{}\"}}", "x".repeat(70_000)).into_boxed_str());
    let (status, body) = post_json(&agent.base, "/performance-optimize", big).await;
    assert_eq!(status, 413);
    assert!(body["error"].is_string());

    let (status, body) = get_json(&agent.base, "/no-such-route").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn legacy_thresholds_make_memory_purge_run_by_itself() {
    let agent = start_agent(
        &[],
        &[
            ("MEMORY_THRESHOLD", "0.00001"),
            ("OPTIMIZATION_INTERVAL", "200"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = get_json(&agent.base, "/performance-metrics").await;
        let recent = metrics["recentOptimizations"].as_array().unwrap();
        if let Some(run) = recent.iter().find(|r| r["strategy"] == "memory-purge") {
            assert_eq!(run["kind"], "automatic");
            assert_eq!(run["success"], true, "{run}");
            assert!(run["reason"].as_str().unwrap().contains("memory_usage"));
            assert_eq!(metrics["performance"]["interval"], 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic memory-purge: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/performance-metrics` until `done` holds for it (at most 15 s).
async fn wait_for_metrics(
    base: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = get_json(base, "/performance-metrics").await;
        if done(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "never {what}: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn adaptive_sampling_slows_down_at_rest_and_speeds_up_under_pressure() {
    let adaptive = [
        ("PERFPILOT_TUNING__ADAPTIVE_SAMPLING", "true"),
        ("OPTIMIZATION_INTERVAL", "200"),
    ];
    // At rest (this process uses a tiny share of RAM): 200 ms relaxes to 2 × 200 ms.
    let calm = start_agent(&[], &adaptive);
    wait_for_metrics(&calm.base, "relaxed to 400 ms", |m| {
        m["performance"]["interval"] == 400
    })
    .await;

    // Every memory trigger latched: sampling goes to interval / 5, and the run is judged.
    let mut pressed = adaptive.to_vec();
    pressed.push(("MEMORY_THRESHOLD", "0.00001"));
    let pressure = start_agent(&[], &pressed);
    let metrics = wait_for_metrics(&pressure.base, "at 40 ms with a judged run", |m| {
        m["performance"]["interval"] == 40
            && m["recentOptimizations"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["strategy"] == "memory-purge" && r["helped"].is_boolean())
            })
    })
    .await;
    // A run is judged by the first regular sample after it: wait for a judged one.
    let run = metrics["recentOptimizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["strategy"] == "memory-purge" && r["helped"].is_boolean())
        .unwrap();
    assert!(run["helped"].is_boolean(), "{run}");
    let purge = metrics["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "memory-purge")
        .unwrap();
    assert!(purge["effectiveness"].is_number(), "{purge}");
    assert!(purge["lastRun"].is_string(), "{purge}");
}

#[tokio::test]
async fn a_numeric_worker_id_stays_a_number_in_the_api_for_cluster_clients() {
    let agent = start_agent(&[], &[("PERFPILOT_WORKER_ID", "3")]);
    let (_, metrics) = get_json(&agent.base, "/performance-metrics").await;
    assert_eq!(metrics["workerId"], 3);
    let (status, optimized) = post_json(&agent.base, "/performance-optimize", "{}").await;
    assert_eq!(status, 200);
    assert_eq!(optimized["worker"], 3);
    let prometheus = common::get_text(&agent.base, "/metrics").await;
    assert!(
        prometheus.contains("\nperfpilot_samples_total{worker=\"3\"} "),
        "{prometheus}"
    );
}

#[test]
fn invalid_config_fails_at_start_naming_key_value_and_range() {
    let stderr = common::refused(
        &["run", "--listen", "127.0.0.1:0"],
        &[("MEMORY_THRESHOLD", "1.5")],
    );
    assert!(
        stderr.contains("1.5") && stderr.contains("(0, 1]"),
        "{stderr}"
    );

    let stderr = common::refused(&["run", "--interval", "fast"], &[]);
    assert!(stderr.contains("fast"));
}

#[test]
fn refuses_a_non_loopback_address_without_a_token() {
    let stderr = common::refused(&["run", "--listen", "0.0.0.0:0"], &[]);
    assert!(
        stderr.contains("non-loopback")
            && stderr.contains("api.token")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let mut agent = start_agent(&[], &[]);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rust_log_turns_one_target_to_debug_above_a_warn_default() {
    // The recorder's writer logs each segment at debug (the bench scripts read that line);
    // at shutdown the open block is written, so a short run has one.
    let state = tempfile::tempdir().unwrap();
    let mut child = common::perfpilot()
        .args(["run", "--listen", "127.0.0.1:0", "--interval", "200ms"])
        .env("RUST_LOG", "warn,perfpilot::recorder::store=debug")
        .env("PERFPILOT_STATE_DIR", state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = common::first_stdout_line(&mut child);
    assert!(line.starts_with("listening on "), "{line}");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("DEBUG perfpilot::recorder::store: recording segment written"),
        "the target at debug: {stderr}"
    );
    assert!(!stderr.contains(" INFO "), "the rest at warn: {stderr}");
}

#[test]
fn check_config_shows_values_and_their_origins() {
    let output = perfpilot()
        .args(["check-config", "--dry-run"])
        .env("OPTIMIZATION_INTERVAL", "750")
        .env("PERFPILOT_STRATEGIES__CACHE_TRIM__FRACTION", "0.4")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
            .to_owned()
    };
    assert!(
        line("interval").contains("750ms") && line("interval").contains("OPTIMIZATION_INTERVAL")
    );
    assert!(line("strategies.cache_trim.fraction").contains("0.4"));
    assert!(line("strategies.cache_trim.fraction")
        .contains("PERFPILOT_STRATEGIES__CACHE_TRIM__FRACTION"));
    assert!(line("dry_run").contains("true") && line("dry_run").contains("--dry-run"));
    assert!(
        line("api.listen").contains("127.0.0.1:9750") && line("api.listen").contains("default")
    );
}

/// A one-shot command piped into a reader that stops early (`perfpilot schema | head -1`)
/// ends as Unix tools do: quietly, by SIGPIPE, not with a panic on the broken pipe.
#[test]
fn a_command_piped_into_a_reader_that_stops_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::Stdio;

    let mut child = perfpilot()
        .arg("schema")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read nothing and close the pipe: the schema (about 160 KiB) is more than a pipe holds,
    // so the command meets the closed pipe.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
}

#[test]
fn strategies_lists_triggers() {
    let output = perfpilot()
        .arg("strategies")
        .env("MEMORY_THRESHOLD", "0.7")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let purge = stdout
        .lines()
        .find(|l| l.starts_with("memory-purge"))
        .unwrap();
    assert!(
        purge.contains("memory_usage") && purge.contains("0.7"),
        "{purge}"
    );
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("interval-backoff") && l.contains("cpu_usage")));
}

#[tokio::test]
async fn cli_reads_metrics_and_triggers_optimizations() {
    let agent = start_agent(&[], &[]);
    let base = agent.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        perfpilot()
            .args(["optimize", "gc", "--url", &base])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("memory-purge") && stdout.contains("ok"),
        "{stdout}"
    );

    let base = agent.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        perfpilot()
            .args(["metrics", "--url", &base])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("memory usage") && l.contains('%')),
        "{stdout}"
    );
    assert!(stdout.contains("RECENT OPTIMIZATIONS") && stdout.contains("memory-purge"));

    // The recording: the manual run is in the last 10 minutes, with the signals read.
    let base = agent.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        perfpilot()
            .args(["metrics", "--since", "10m", "--url", &base])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("history from "), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("memory_usage") && l.contains('%')),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.contains("memory-purge")) && stdout.contains("runs "),
        "{stdout}"
    );

    let output = tokio::task::spawn_blocking(|| {
        perfpilot()
            .args(["metrics", "--url", "http://127.0.0.1:9"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach the agent"));
}

/// Parses the classic text format into (series, value) pairs.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn prometheus_counters_only_grow_between_scrapes() {
    let agent = start_agent(&["--interval", "100ms", "--worker-id", "edge-3"], &[]);
    let scrape = || async {
        let response = common::client()
            .get(format!("{}/metrics", agent.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        samples(&response.text().await.unwrap())
    };
    let first = scrape().await;
    let (status, _) = post_json(
        &agent.base,
        "/performance-optimize",
        r#"{"strategy": "gc"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let value = |scrape: &[(String, f64)], series: &str| {
        scrape.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
    };
    let purge = "perfpilot_optimizations_total{worker=\"edge-3\",strategy=\"memory-purge\",kind=\"manual\",outcome=\"success\"}";
    let samples = "perfpilot_samples_total{worker=\"edge-3\"}";
    // Wait (at most 10 s) for a scrape that shows the run and a sample taken since the first.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let second = scrape().await;
        if value(&second, purge).is_some() && value(&second, samples) > value(&first, samples) {
            break second;
        }
        assert!(
            Instant::now() < deadline,
            "no scrape with the run and a new sample within 10 s: {second:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Every series names the worker (`--worker-id`), so a fleet's series stay apart.
    assert!(
        second.iter().all(|(s, _)| s.contains("worker=\"edge-3\"")),
        "{second:?}"
    );
    assert!(
        value(
            &second,
            "perfpilot_resident_memory_bytes{worker=\"edge-3\"}"
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        value(
            &second,
            "perfpilot_build_info{worker=\"edge-3\",version=\"0.1.0\"}"
        ),
        Some(1.0)
    );
    assert_eq!(value(&first, purge), None);
    assert_eq!(value(&second, purge), Some(1.0));
    assert!(value(&second, samples).unwrap() > value(&first, samples).unwrap());
    let (_, document) = get_json(&agent.base, "/performance-metrics").await;
    assert_eq!(document["workerId"], "edge-3");
    for (series, before) in first
        .iter()
        .filter(|(s, _)| s.contains("_total") || s.contains("_count") || s.contains("_bucket"))
    {
        let after = value(&second, series).unwrap_or_else(|| panic!("{series} vanished"));
        assert!(after >= *before, "{series} went from {before} to {after}");
    }
}

#[tokio::test]
async fn sigterm_ends_open_event_streams_and_exits() {
    let mut agent = start_agent(&[], &[]);
    let mut events = common::client()
        .get(format!("{}/events", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("metrics-updated"));

    let status = std::process::Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The stream ends (rather than the server waiting on it forever)...
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the event stream did not end after SIGTERM");
    // ...and the agent exits 0.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "still running 5 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_binary_starts_jemalloc_with_its_compiled_in_options() {
    // jemalloc prints its options at exit with `stats_print`; the environment's options are
    // merged over the compiled-in ones (perfpilot::cli::MALLOC_CONF), not instead of them.
    let output = perfpilot()
        .arg("strategies")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let option = |name: &str| {
        stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("opt.{name}:")))
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("no opt.{name} in jemalloc's statistics:\n{stderr}"))
    };
    assert_eq!(option("narenas"), "opt.narenas: 1");
    assert_eq!(option("tcache"), "opt.tcache: false");
    assert_eq!(option("stats_print"), "opt.stats_print: true");
}
