//! Reloading the configuration of the real binary without a restart: SIGHUP, `POST
//! /config/reload`, `perfpilot reload`, and a watched file swapped like a Kubernetes
//! ConfigMap.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{client, get_json, get_text, perfpilot, post_json, start_agent, Running};
use serde_json::Value;

const V1: &str = r#"
interval = "200ms"
[strategies.memory_purge.trigger]
above = 0.9
"#;

/// V1 with a new threshold and a named strategy.
const V2: &str = r#"
interval = "200ms"
[strategies.memory_purge.trigger]
above = 0.85
[strategies.command.trim-demo-cache]
program = "/bin/true"
[strategies.command.trim-demo-cache.trigger]
signal = "memory_usage"
above = 0.99
"#;

/// An out-of-range threshold.
const INVALID: &str = r#"
interval = "200ms"
[strategies.memory_purge.trigger]
above = 1.5
"#;

/// A temporary directory of its own, removed when dropped.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("perfpilot-reload-{name}-"))
        .tempdir()
        .expect("create a temp directory")
}

/// Replaces the file in one step (write aside, rename), as editors and config managers do.
fn write_config(path: &Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn hangup(agent: &Running) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn strategy<'a>(metrics: &'a Value, name: &str) -> Option<&'a Value> {
    metrics["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
}

/// Polls `/performance-metrics` (every 100 ms, at most 30 s: a loaded machine) until `done`
/// holds.
async fn metrics_until(base: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, metrics) = get_json(base, "/performance-metrics").await;
        assert_eq!(status, 200);
        if done(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30 s for {what}; last document: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads from an open `/events` response until a `metrics-updated` event arrives (at most
/// 10 s): the stream is still open and still fed.
async fn next_metrics_event(events: &mut reqwest::Response) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while !seen.contains("event: metrics-updated") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, events.chunk())
            .await
            .expect("an event within 10 s")
            .expect("the stream reads")
            .expect("the stream is still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn sighup_applies_a_new_threshold_and_strategy_and_keeps_history_and_streams() {
    let temp = temp_dir("sighup");
    let dir = temp.path();
    let file = dir.join("perfpilot.toml");
    write_config(&file, V1);
    let agent = start_agent(&["--config", file.to_str().unwrap()], &[]);

    // A track record to keep: two manual purges.
    for _ in 0..2 {
        let (status, answer) = post_json(
            &agent.base,
            "/performance-optimize",
            r#"{"strategy": "memory"}"#,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    // Each run is judged a settle after it (its `after` read): the track record to compare
    // is the one with both judgements in, or one landing later would change it.
    let before = metrics_until(&agent.base, "both manual purges judged", |m| {
        let records = m["recentOptimizations"].as_array().unwrap();
        records.len() == 2 && records.iter().all(|r| r["after"].is_number())
    })
    .await;
    let purge_before = strategy(&before, "memory-purge").unwrap().clone();
    assert_eq!(purge_before["runs"], 2);
    assert_eq!(purge_before["trigger"]["above"], 0.9);
    let records_before: Vec<Value> = before["recentOptimizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(records_before.len(), 2);
    assert_eq!(before["config"]["reason"], "start");
    assert_eq!(before["config"]["lastError"], Value::Null);

    let mut events = client()
        .get(format!("{}/events", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    next_metrics_event(&mut events).await;

    write_config(&file, V2);
    hangup(&agent);
    // The strategies and the config status are published apart: wait for both.
    let after = metrics_until(&agent.base, "the reloaded strategies and config", |m| {
        strategy(m, "trim-demo-cache").is_some() && m["config"]["reason"] == "SIGHUP"
    })
    .await;
    assert!(agent_alive(&agent), "SIGHUP must not end the agent");
    let purge = strategy(&after, "memory-purge").unwrap();
    assert_eq!(purge["trigger"]["above"], 0.85);
    assert_eq!(purge["threshold"], 0.85);
    assert_eq!(purge["runs"], purge_before["runs"]);
    assert_eq!(purge["effectiveness"], purge_before["effectiveness"]);
    assert_eq!(purge["helped"], purge_before["helped"]);
    let added = strategy(&after, "trim-demo-cache").unwrap();
    assert_eq!(added["trigger"]["above"], 0.99);
    let records_after: Vec<Value> = after["recentOptimizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(records_after, records_before);
    assert_eq!(after["performance"]["optimizationCount"], 2);
    assert_eq!(after["config"]["reason"], "SIGHUP");
    assert_eq!(after["config"]["reloads"], 1);
    assert_eq!(after["config"]["lastError"], Value::Null);
    // The stream opened before the reload still delivers.
    next_metrics_event(&mut events).await;

    // An invalid file: the running configuration stays, the error is shown and counted.
    write_config(&file, INVALID);
    hangup(&agent);
    let failed = metrics_until(&agent.base, "config.lastError", |m| {
        m["config"]["lastError"].is_string()
    })
    .await;
    let error = failed["config"]["lastError"].as_str().unwrap();
    assert!(
        error.contains("strategies.memory_purge.trigger.above = 1.5"),
        "{error}"
    );
    assert_eq!(
        strategy(&failed, "memory-purge").unwrap()["trigger"]["above"],
        0.85
    );
    assert!(strategy(&failed, "trim-demo-cache").is_some());
    assert_eq!(failed["config"]["reason"], "SIGHUP", "the config in force");
    assert_eq!(failed["config"]["failedReloads"], 1);
    let (_, health) = get_json(&agent.base, "/health").await;
    assert_eq!(health["lastReloadFailed"], true, "{health}");
    let metrics = get_text(&agent.base, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("perfpilot_config_reloads_total{")
                && l.contains("result=\"failure\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );

    // The same file over HTTP: 422 with the reason; nothing changes.
    let (status, answer) = post_json(&agent.base, "/config/reload", "").await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("above = 1.5"),
        "{answer}"
    );
    // ... and from the command line: exit status 2, the reason on stderr.
    let output = perfpilot()
        .args(["reload", "--url", &agent.base])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("above = 1.5"));

    // Fixed, with a setting that needs a restart: applied, and the setting named.
    write_config(&file, &format!("{V2}\n[log]\nlevel = \"debug\"\n"));
    let output = perfpilot()
        .args(["reload", "--url", &agent.base])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("configuration reloaded from"), "{stdout}");
    assert!(
        stdout.contains("needs a restart to take effect (running values kept): log.level"),
        "{stdout}"
    );
    let (_, health) = get_json(&agent.base, "/health").await;
    assert_eq!(health["lastReloadFailed"], false);
    drop(agent);
}

fn agent_alive(agent: &Running) -> bool {
    Path::new(&format!("/proc/{}", agent.child.id())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", agent.child.id()))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn a_watched_file_swapped_like_a_configmap_is_reloaded() {
    // A ConfigMap volume: perfpilot.toml -> ..data/perfpilot.toml, ..data -> ..v1; an update
    // writes ..v2 and renames a new ..data symlink over the old one.
    let temp = temp_dir("configmap");
    let dir = temp.path();
    let v1 = dir.join("..v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(
        v1.join("perfpilot.toml"),
        format!("watch_config = true\n{V1}"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/perfpilot.toml", dir.join("perfpilot.toml")).unwrap();
    let file = dir.join("perfpilot.toml");
    let agent = start_agent(&["--config", file.to_str().unwrap()], &[]);
    let (_, before) = get_json(&agent.base, "/performance-metrics").await;
    assert_eq!(
        strategy(&before, "memory-purge").unwrap()["trigger"]["above"],
        0.9
    );

    let v2 = dir.join("..v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(
        v2.join("perfpilot.toml"),
        format!("watch_config = true\n{V2}"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    let after = metrics_until(
        &agent.base,
        "the swapped file's strategies and config",
        |m| strategy(m, "trim-demo-cache").is_some() && m["config"]["reason"] == "file change",
    )
    .await;
    assert_eq!(
        strategy(&after, "memory-purge").unwrap()["trigger"]["above"],
        0.85
    );
    assert_eq!(after["config"]["reason"], "file change");
    drop(agent);
}

/// The watch takes its first look at the file when the agent is made, not when its task first
/// runs: on this single-threaded runtime no task has run when the file is replaced below, and
/// the replacement is still a change to reload.
#[tokio::test]
async fn a_file_replaced_before_the_watch_task_first_runs_is_reloaded() {
    let temp = temp_dir("early");
    let file = temp.path().join("perfpilot.toml");
    write_config(&file, &format!("watch_config = true\n{V1}"));
    let source = perfpilot::ConfigSource::new(
        Some(file.clone()),
        std::collections::HashMap::new(),
        perfpilot::config::Overrides::default(),
    );
    let config = source.load().expect("V1 loads").config;
    let agent = perfpilot::Agent::with_config(config)
        .config_source(source)
        .spawn()
        .expect("the agent starts");
    write_config(&file, &format!("watch_config = true\n{V2}"));
    let reloader = perfpilot::__internal::reloader(&agent);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reloader.status().reason != "file change" {
        assert!(
            Instant::now() < deadline,
            "waited 30 s for the replaced file to be reloaded: {:?}",
            reloader.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.shutdown_token().cancel();
}

#[tokio::test]
async fn reload_needs_the_token_when_one_is_set() {
    let agent = start_agent(&[], &[("PERFPILOT_API__TOKEN", "reload-secret")]);
    let (status, answer) = post_json(&agent.base, "/config/reload", "").await;
    assert_eq!(status, 401, "{answer}");
    let answer: Value = client()
        .post(format!("{}/config/reload", agent.base))
        .bearer_auth("reload-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // No file in the (temporary) working directory: defaults and environment, reloaded.
    assert_eq!(answer["message"], "configuration reloaded", "{answer}");
    assert_eq!(answer["changed"], Value::Array(Vec::new()));
}
