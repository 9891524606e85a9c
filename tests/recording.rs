//! The flight recorder on the real binary with a `state_dir`: what it wrote survives a
//! restart, and a damaged segment is refused, logged and moved aside without stopping the
//! agent.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{first_stdout_line, get_json, perfpilot, Running};

/// Starts the agent at a 100 ms interval with `state_dir`, its stderr (the log) in `log`.
fn start(state: &Path, log: &Path) -> Running {
    let mut command: Command = perfpilot();
    command
        .args(["run", "--listen", "127.0.0.1:0", "--interval", "100ms"])
        .env("PERFPILOT_STATE_DIR", state)
        .env("PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).unwrap());
    let mut child = command.spawn().expect("start the agent");
    let line = first_stdout_line(&mut child);
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Running { child, base }
}

/// SIGTERM, and the exit within 20 s.
fn stop(mut agent: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The recorded samples' times (ms), from the history route.
async fn sample_times(base: &str) -> Vec<u64> {
    let (status, body) = get_json(
        base,
        "/performance-metrics/history?since=1h&signals=memory_usage",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| s["t"].as_u64().expect("t"))
        .collect()
}

/// Waits (at most 30 s) until the agent has recorded `count` samples.
async fn recorded(base: &str, count: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let times = sample_times(base).await;
        if times.len() >= count {
            return times;
        }
        assert!(
            Instant::now() < deadline,
            "{} samples recorded after 30 s, waited for {count}",
            times.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn segments(state: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(state.join("recording"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_recording_survives_a_restart_and_a_truncated_segment_is_refused_and_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("agent.log");

    let agent = start(&state, &log);
    let before = recorded(&agent.base, 10).await;
    stop(agent);
    let files = segments(&state);
    assert_eq!(
        files.len(),
        1,
        "the open block written at shutdown: {files:?}"
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&files[0]), 0o600);

    let restarted_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let agent = start(&state, &log);
    let after = sample_times(&agent.base).await;
    assert!(
        before.iter().all(|t| after.contains(t)),
        "every sample from before the restart is served again: {} before, {} now",
        before.len(),
        after.len()
    );
    assert!(after.iter().any(|&t| t < restarted_at));
    stop(agent);

    // Cut the oldest segment in half, as a crash during a write would (were it not renamed
    // into place only once complete).
    let damaged = segments(&state)[0].clone();
    let length = fs::metadata(&damaged).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    let agent = start(&state, &log);
    let (status, health) = get_json(&agent.base, "/health").await;
    assert_eq!(status, 200, "the agent starts anyway");
    assert_eq!(health["recording"]["refusedFiles"], 1, "{health}");
    assert_eq!(health["recording"]["diskFull"], false, "{health}");
    let moved = state.join("refused").join(damaged.file_name().unwrap());
    assert!(moved.exists(), "moved aside to {}", moved.display());
    assert!(!damaged.exists());
    let text = fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("refused a state file"))
        .unwrap_or_else(|| panic!("no log line says why the file was refused:\n{text}"));
    assert!(
        line.contains("truncated") && line.contains(&*damaged.to_string_lossy()),
        "{line}"
    );
    stop(agent);
}

/// `perfpilot ARGS`, its stdout; fails the test on a non-zero exit.
fn run_cli(args: &[&str]) -> String {
    let output = perfpilot().args(args).output().expect("run perfpilot");
    assert!(
        output.status.success(),
        "perfpilot {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[tokio::test]
async fn export_writes_what_was_recorded_as_ndjson_and_csv_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("perfpilot.toml");
    fs::write(
        &config,
        format!(
            r#"
state_dir = "{}"
[api]
token = "tok-SECRET-1"
[strategies.webhook.hook]
url = "http://user:pw-SECRET-3@127.0.0.1:9/hook"
headers = {{ "X-Auth" = "hdr-SECRET-2" }}
timeout = "200ms"
retries = 0
[strategies.webhook.hook.trigger]
signal = "memory_usage"
above = 0.99
[budgets.tight]
signal = "memory_usage"
goal = 0.00001
limit = 0.00002
ladder = ["memory-purge"]
settle = "200ms"
"#,
            state.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut command: Command = perfpilot();
    command
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "100ms",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&log).unwrap());
    let mut child = command.spawn().expect("start the agent");
    let line = first_stdout_line(&mut child);
    let agent = Running {
        base: line
            .trim()
            .strip_prefix("listening on ")
            .expect("announced")
            .to_owned(),
        child,
    };
    // The `tight` budget purges by itself all the time; a manual run while one of its runs is
    // in flight is refused (409, single flight) and ran nothing, so it is asked again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = common::client()
            .post(format!("{}/performance-optimize", agent.base))
            .bearer_auth("tok-SECRET-1")
            .json(&serde_json::json!({"strategy": "hook"}))
            .send()
            .await
            .unwrap();
        if answer.status() != 409 {
            assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30 s for no run in flight to run `hook` by hand: still 409"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    recorded(&agent.base, 5).await;
    let history = common::client()
        .get(format!("{}/performance-metrics/history", agent.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served = common::get_text(&agent.base, "/report?since=1h").await;
    assert!(served.contains("id=\"summary\""), "{served}");
    stop(agent);

    let config_arg = config.to_string_lossy().to_string();
    let ndjson = run_cli(&["export", "--since", "1h", "--config", &config_arg]);
    let lines: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let samples = lines.iter().filter(|l| l["type"] == "sample").count();
    assert!(samples >= 5, "{samples} samples in {ndjson}");
    let runs: Vec<_> = lines
        .iter()
        .filter(|l| l["type"] == "run" && l["strategy"] == "hook")
        .collect();
    assert_eq!(runs.len(), 1, "{ndjson}");
    assert_eq!(runs[0]["success"], false, "port 9 refuses: {}", runs[0]);

    let state_arg = state.to_string_lossy().to_string();
    let csv = run_cli(&[
        "export",
        "--since",
        "1h",
        "--format",
        "csv",
        "--recording",
        &state_arg,
    ]);
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().expect("a header").split(',').collect();
    assert_eq!(header[0], "t");
    let usage = header
        .iter()
        .position(|c| *c == "memory_usage")
        .expect("a memory_usage column");
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), samples, "the CSV has the NDJSON's samples");
    assert!(rows
        .iter()
        .all(|r| r.len() == header.len() && r[usage].parse::<f64>().is_ok()));

    let report_file = dir.path().join("report.html");
    let report_arg = report_file.to_string_lossy().to_string();
    run_cli(&[
        "report",
        "--since",
        "1h",
        "--recording",
        &state_arg,
        "-o",
        &report_arg,
    ]);
    let report = fs::read_to_string(&report_file).expect("the report written");
    assert_eq!(
        summary(&report),
        from_export(&lines, 0.00001, 0.00002),
        "the report's summary against the export's numbers"
    );
    for section in ["budgets", "rungs", "strategies", "oom-kills", "reloads"] {
        assert!(
            report.contains(&format!("id=\"{section}\"")),
            "no {section} section"
        );
    }
    assert!(report.contains("class=\"episode\""), "no episode drawn");

    for (what, text) in [
        ("NDJSON", &ndjson),
        ("CSV", &csv),
        ("history", &history),
        ("report", &report),
        ("served report", &served),
    ] {
        for secret in ["tok-SECRET-1", "hdr-SECRET-2", "pw-SECRET-3"] {
            assert!(!text.contains(secret), "{secret} in the {what} export");
        }
    }
    for file in fs::read_dir(state.join("recording")).unwrap() {
        let bytes = fs::read(file.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("SECRET"), "a secret in a segment on disk");
    }
    let learned = fs::read_to_string(state.join("learned.json")).expect("learned.json");
    assert!(learned.contains("\"hook\""), "{learned}");
    assert!(
        !learned.contains("SECRET"),
        "a secret in the learned state: {learned}"
    );
}

/// The report's summary numbers (its `data-` attributes), in [`from_export`]'s order:
/// samples, episodes, runs, helped, OOM kills, reloads, seconds above goal and above limit.
fn summary(html: &str) -> (usize, usize, usize, usize, usize, usize, String, String) {
    let attribute = |name: &str| -> String {
        let start = html
            .find(&format!("data-{name}=\""))
            .unwrap_or_else(|| panic!("no data-{name} in the summary"))
            + name.len()
            + 7;
        html[start..start + html[start..].find('"').unwrap()].to_owned()
    };
    let count = |name: &str| attribute(name).parse::<usize>().unwrap();
    (
        count("samples"),
        count("episodes"),
        count("runs"),
        count("helped"),
        count("oom-kills"),
        count("reloads"),
        attribute("seconds-above-goal"),
        attribute("seconds-above-limit"),
    )
}

/// The same numbers computed from the NDJSON export: each sample's memory usage held until
/// the next sample counts towards the time above `goal` and `limit`.
fn from_export(
    lines: &[serde_json::Value],
    goal: f64,
    limit: f64,
) -> (usize, usize, usize, usize, usize, usize, String, String) {
    let of = |kind: &'static str| lines.iter().filter(move |l| l["type"] == kind);
    let samples: Vec<_> = of("sample").collect();
    let (mut above_goal, mut above_limit) = (0.0, 0.0);
    for pair in samples.windows(2) {
        let seconds = (pair[1]["t"].as_f64().unwrap() - pair[0]["t"].as_f64().unwrap()) / 1000.0;
        let usage = pair[0]["memory_usage"].as_f64().unwrap_or(0.0);
        if usage > goal {
            above_goal += seconds;
        }
        if usage > limit {
            above_limit += seconds;
        }
    }
    (
        samples.len(),
        of("episode").count(),
        of("run").count(),
        of("run").filter(|r| r["helped"] == true).count(),
        of("oom_kill").count(),
        of("reload").count(),
        format!("{above_goal:.1}"),
        format!("{above_limit:.1}"),
    )
}

/// Starts the agent on `config` at a 100 ms interval, its stderr in `log`; with `automatic`
/// false, nothing runs by itself (`enabled = false`).
fn start_with(config: &Path, log: &Path, automatic: bool) -> Running {
    let mut command: Command = perfpilot();
    command
        .env("PERFPILOT_ENABLED", automatic.to_string())
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "100ms",
            "--config",
        ])
        .arg(config)
        .env("PERFPILOT_STRATEGIES__INTERVAL_BACKOFF__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).unwrap());
    let mut child = command.spawn().expect("start the agent");
    let line = first_stdout_line(&mut child);
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Running { child, base }
}

/// What the agent learned, as `/performance-metrics` shows it: per strategy its runs,
/// verdicts, effectiveness, mean relief, cooldown and unhelpful runs; per budget its rungs.
async fn learned(base: &str) -> serde_json::Value {
    let (status, document) = get_json(base, "/performance-metrics").await;
    assert_eq!(status, 200);
    // A mean relief restored as sum / count may differ from the running mean in its last
    // digits.
    let relief = |v: &serde_json::Value| v.as_f64().map(|r| format!("{r:.9e}"));
    let strategies: Vec<_> = document["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            serde_json::json!([
                s["name"],
                s["runs"],
                s["helped"],
                s["effectiveness"],
                relief(&s["meanRelief"]),
                s["cooldown"],
                s["unhelpfulRuns"]
            ])
        })
        .collect();
    let rungs: Vec<_> = document["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["rungs"].as_array().unwrap().iter().map(move |r| (b, r)))
        .map(|(b, r)| {
            serde_json::json!([
                b["name"],
                r["strategy"],
                r["runs"],
                r["judged"],
                r["helped"],
                relief(&r["meanRelief"]),
                r["skipped"]
            ])
        })
        .collect();
    serde_json::json!({"strategies": strategies, "rungs": rungs})
}

/// What `file` (learned.json) holds, in [`learned`]'s shape: its derived numbers computed as
/// the agent computes them from what it restores (`skip_after`: the budgets' setting).
fn learned_in_file(file: &Path, skip_after: usize) -> serde_json::Value {
    let text = fs::read_to_string(file).expect("learned.json");
    let saved: serde_json::Value = serde_json::from_str(&text).expect("learned.json is JSON");
    let count = |v: &serde_json::Value| v.as_u64().expect("a count");
    let relief = |sum: &serde_json::Value, count: u64| {
        (count > 0).then(|| format!("{:.9e}", sum.as_f64().expect("a relief sum") / count as f64))
    };
    let strategies: Vec<_> = saved["strategies"]
        .as_array()
        .expect("strategies")
        .iter()
        .map(|s| {
            let (helped, judged) = (count(&s["helped"]), count(&s["judged"]));
            serde_json::json!([
                s["name"],
                s["runs"],
                s["helped"],
                (judged > 0).then(|| helped as f64 / judged as f64),
                relief(&s["reliefSum"], count(&s["reliefSamples"])),
                s["cooldownMs"],
                s["unhelpfulRuns"]
            ])
        })
        .collect();
    let rungs: Vec<_> = saved["budgets"]
        .as_array()
        .expect("budgets")
        .iter()
        .flat_map(|b| b["rungs"].as_array().unwrap().iter().map(move |r| (b, r)))
        .map(|(b, r)| {
            let recent = r["recent"].as_array().expect("recent judgements");
            serde_json::json!([
                b["name"],
                r["strategy"],
                r["runs"],
                r["judged"],
                r["helped"],
                relief(&r["reliefSum"], count(&r["judged"])),
                recent.len() >= skip_after && recent.iter().all(|h| h == false)
            ])
        })
        .collect();
    serde_json::json!({"strategies": strategies, "rungs": rungs})
}

/// Every count in `earlier` (a [`learned`] view) is at most its count in `later`: the runs,
/// helped runs and judgements of each strategy and rung only grow.
fn counts_kept(earlier: &serde_json::Value, later: &serde_json::Value) -> bool {
    // The counts' places in `learned`'s rows, after the names.
    let rows = [("strategies", 1, &[1, 2][..]), ("rungs", 2, &[2, 3, 4][..])];
    rows.iter().all(|(kind, names, counts)| {
        earlier[kind].as_array().unwrap().iter().all(|old| {
            let old = old.as_array().unwrap();
            later[kind].as_array().unwrap().iter().any(|new| {
                let new = new.as_array().unwrap();
                new[..*names] == old[..*names]
                    && counts
                        .iter()
                        .all(|&i| new[i].as_u64().unwrap_or(0) >= old[i].as_u64().unwrap_or(0))
            })
        })
    })
}

#[tokio::test]
async fn learned_state_survives_a_restart_and_a_truncated_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("perfpilot.toml");
    // `idle` never relieves memory: its cooldown doubles from 1 s with every run. The budget
    // is always above its limit: its rung runs (and is judged) at once.
    const SKIP_AFTER: usize = 3;
    fs::write(
        &config,
        format!(
            r#"
state_dir = "{}"
[strategies.command.idle]
program = "true"
[strategies.command.idle.trigger]
signal = "memory_usage"
above = 0.00001
cooldown = "1s"
[budgets.tight]
signal = "memory_usage"
goal = 0.00001
limit = 0.00002
ladder = ["memory-purge"]
settle = "200ms"
skip_after = {SKIP_AFTER}
"#,
            state.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let agent = start_with(&config, &log, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let learned = learned(&agent.base).await;
        let (status, document) = get_json(&agent.base, "/performance-metrics").await;
        assert_eq!(status, 200);
        let idle = document["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "idle")
            .cloned()
            .unwrap_or_default();
        let rung = &document["budgets"][0]["rungs"][0];
        if idle["unhelpfulRuns"].as_u64() >= Some(2) && rung["judged"].as_u64() >= Some(1) {
            break learned;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30 s for two unhelpful runs of `idle` and a judged rung: {document}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let history_before = sample_times(&agent.base).await;
    stop(agent);
    let file = state.join("learned.json");
    let mode = fs::metadata(&file)
        .expect("learned.json written at shutdown")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Restarted with automatic runs off, so that what /performance-metrics shows is what
    // was restored (the budget, above its limit, would start a new episode at once).
    let agent = start_with(&config, &log, false);
    let after = learned(&agent.base).await;
    // The agent kept running (and judging) until SIGTERM, so learned.json, written at
    // shutdown, may hold more than `before`: what it holds is what must come back.
    assert_eq!(
        after,
        learned_in_file(&file, SKIP_AFTER),
        "restored after the restart: what learned.json holds"
    );
    assert!(
        counts_kept(&before, &after),
        "nothing learned before the stop is lost: before {before}, restored {after}"
    );
    let history_after = sample_times(&agent.base).await;
    assert!(
        history_before.iter().all(|t| history_after.contains(t)),
        "the samples from before the restart are served"
    );
    stop(agent);

    let length = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    let agent = start_with(&config, &log, false);
    let (status, _) = get_json(&agent.base, "/health").await;
    assert_eq!(status, 200, "the agent starts anyway");
    let fresh = learned(&agent.base).await;
    assert_ne!(fresh, before, "a refused file restores nothing");
    stop(agent);
    let moved = state.join("refused").join("learned.json");
    assert!(moved.exists(), "moved aside to {}", moved.display());
    let text = fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("refused a state file") && l.contains("learned.json"))
        .unwrap_or_else(|| panic!("no log line says why learned.json was refused:\n{text}"));
    assert!(line.contains("truncated"), "{line}");
}
