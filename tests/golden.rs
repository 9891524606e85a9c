//! Golden files: what users see today, recorded under `tests/golden/`, so that moving code
//! around cannot change it unnoticed.
//!
//! - `config/NAME.out`: `perfpilot check-config` (the real binary) for the case `NAME`, made
//!   of `config/NAME.toml` (passed as `--config`), `config/NAME.env` (the environment, one
//!   `KEY=VALUE` a line) and `config/NAME.args` (more arguments, one a line): its exit code,
//!   stdout and stderr.
//! - `env_names.txt`: every environment variable the loader accepts, each with the key it
//!   sets, tried one by one against the binary.
//! - `routes.txt`: the JSON keys of every route's answer (and the error answers in full), the
//!   paths and schemas of `/openapi.json`, from an agent on a loopback socket whose sample
//!   has every signal.
//! - `metrics.txt` / `metrics_openmetrics.txt`: the `/metrics` families (`HELP`, `TYPE`,
//!   `UNIT`) and series (names and labels, values left out) of that agent.
//!
//! A change that is meant (a new key, a new signal): rerun with `UPDATE_GOLDEN=1` to rewrite
//! the files, and commit them with the change. Otherwise a failure shows the difference.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use perfpilot::config::Config;
use perfpilot::Agent;
use perfpilot_strategies::test_support::golden::{self, assert_all, diff};
use perfpilot_strategies::{
    async_trait, Context, Outcome, Signal, Strategy, StrategyError, TriggerSpec,
};
use serde_json::Value;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `actual` with the golden file `tests/golden/NAME` (see [`golden::check`]).
fn check(name: &str, actual: &str) -> Option<String> {
    golden::check(&golden_dir().join(name), actual)
}

// --- check-config ---------------------------------------------------------------------------

/// `perfpilot ARGS` with only `env`, from the crate's directory (which has no
/// `perfpilot.toml`), so file paths show as `tests/golden/...`.
fn run_binary(args: &[String], env: &[(String, String)]) -> String {
    let output = common::perfpilot()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run perfpilot");
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        output
            .status
            .code()
            .map_or("signal".to_owned(), |c| c.to_string()),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn check_config_output_and_error_texts() {
    let dir = golden_dir().join("config");
    let cases: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("tests/golden/config exists")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let (stem, ext) = name.rsplit_once('.')?;
            matches!(ext, "toml" | "env" | "args").then(|| stem.to_owned())
        })
        .collect();
    assert!(cases.len() >= 10, "the cases are there: {cases:?}");
    let mut differences = Vec::new();
    for case in &cases {
        let mut args = vec!["check-config".to_owned()];
        let toml = dir.join(format!("{case}.toml"));
        if toml.is_file() {
            args.push("--config".to_owned());
            args.push(format!("tests/golden/config/{case}.toml"));
        }
        args.extend(read_lines(&dir.join(format!("{case}.args"))));
        let env: Vec<(String, String)> = read_lines(&dir.join(format!("{case}.env")))
            .into_iter()
            .map(|line| {
                let (key, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{case}.env: `{line}` is not KEY=VALUE"));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        let mut text = format!("$ perfpilot {}\n", args.join(" "));
        for (key, value) in &env {
            let _ = writeln!(text, "$ env {key}={value}");
        }
        text.push_str(&run_binary(&args, &env));
        differences.push(check(&format!("config/{case}.out"), &text));
    }
    assert_all(differences);
}

/// The variable that sets a dotted key: `PERFPILOT_` + the key in upper case, `.` → `__`.
fn variable_of(key: &str) -> String {
    format!("PERFPILOT_{}", key.to_ascii_uppercase().replace('.', "__"))
}

#[test]
fn accepted_environment_names() {
    // Every key check-config shows by default, set through its variable to its default...
    let defaults = run_binary(&["check-config".to_owned()], &[]);
    let mut tries: Vec<(String, String)> = defaults
        .lines()
        .filter_map(|line| line.split_once("  # default"))
        .filter_map(|(assignment, _)| assignment.split_once(" = "))
        .map(|(key, value)| (variable_of(key), value.trim_matches('"').to_owned()))
        .collect();
    assert!(tries.len() > 30, "{defaults}");
    // ...the optional ones, number-like tokens that must stay strings, hyphenated instance
    // names, and the source documents' (legacy) variables.
    for (name, value) in [
        ("PERFPILOT_CONFIG", "/dev/null"),
        ("PERFPILOT_API__TOKEN", "007"),
        ("PERFPILOT_API__TOKEN", "1e5"),
        ("PERFPILOT_API__TOKEN", "true"),
        ("PERFPILOT_WORKER_ID", "0042"),
        ("PERFPILOT_WORKER_ID", "7"),
        ("PERFPILOT_MEMORY_BUDGET", "512MiB"),
        ("PERFPILOT_MEMORY_BUDGET", "1048576"),
        ("PERFPILOT_TARGET__PID", "1"),
        ("PERFPILOT_TARGET__PIDFILE", "/run/app.pid"),
        ("PERFPILOT_TARGET__PORT", "8080"),
        ("PERFPILOT_PROBE__URL", "http://127.0.0.1:8080/health"),
        ("PERFPILOT_STRATEGIES__CONNECTION_REAP__MAX_PER_CLIENT", "8"),
        (
            "PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__PREDICT__AT",
            "0.95",
        ),
        (
            "PERFPILOT_STRATEGIES__WEBHOOK__CACHE-TRIM-HOOK__URL",
            "http://127.0.0.1:1/trim",
        ),
        ("PERFPILOT_STRATEGIES__SIGNAL__RELOAD-CONFIG__SIGNAL", "HUP"),
        ("PERFPILOT_INTERVALL", "5s"),
        ("PERFPILOT_API____LISTEN", "127.0.0.1:1"),
        ("ENABLE_PERFORMANCE_OPTIMIZATION", "false"),
        ("OPTIMIZATION_INTERVAL", "200"),
        ("MEMORY_THRESHOLD", "0.7"),
        ("CPU_THRESHOLD", "0.7"),
        ("ENABLE_GC", "false"),
        ("ENABLE_CONNECTION_POOLING", "0"),
        ("ENABLE_CACHING", "no"),
        ("LOG_LEVEL", "warn"),
    ] {
        tries.push((name.to_owned(), value.to_owned()));
    }
    let mut out = String::new();
    for (name, value) in &tries {
        let text = run_binary(
            &["check-config".to_owned()],
            &[(name.clone(), value.clone())],
        );
        let origin = format!("# env {name}");
        let set: Vec<&str> = text
            .lines()
            .filter(|line| line.ends_with(&origin))
            .filter_map(|line| line.strip_suffix(&origin))
            .map(str::trim_end)
            .collect();
        let _ = write!(out, "{name}={value}: ");
        if text.starts_with("exit: 0\n") {
            let _ = writeln!(out, "accepted, sets {}", set.join("; "));
        } else {
            let stderr = text.split("--- stderr\n").nth(1).unwrap_or("");
            let _ = writeln!(out, "refused: {}", stderr.trim_end().replace('\n', " | "));
        }
    }
    assert_all(vec![check("env_names.txt", &out)]);
}

// --- routes and /metrics --------------------------------------------------------------------

/// A strategy that always acts, with details.
#[derive(Debug)]
struct Acts;

#[async_trait]
impl Strategy for Acts {
    fn name(&self) -> &str {
        "golden-acts"
    }
    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        Ok(Outcome::acted("did it").with("count", 1))
    }
}

/// Every key path of a JSON value, one a line: `a.b`, `list[].c`, with the value's type.
fn key_paths(value: &Value) -> String {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        out.entry(prefix.to_owned()).or_default().insert(kind);
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let path = match prefix {
                        "" => key.clone(),
                        _ => format!("{prefix}.{key}"),
                    };
                    walk(&path, value, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(&format!("{prefix}[]"), item, out);
                }
            }
            _ => {}
        }
    }
    let mut paths = BTreeMap::new();
    walk("", value, &mut paths);
    paths
        .into_iter()
        .filter(|(path, _)| !path.is_empty())
        .map(|(path, kinds)| {
            format!(
                "  {path}: {}\n",
                kinds.into_iter().collect::<Vec<_>>().join(" | ")
            )
        })
        .collect()
}

/// The `/metrics` text without values: families sorted by name, each with its `HELP`,
/// `TYPE` and `UNIT` lines and its series' names and labels (the `version` label's value
/// left out).
fn metric_shape(text: &str) -> String {
    let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            current = rest.split(' ').next().unwrap_or("").to_owned();
        }
        let line = match line.starts_with('#') {
            true => line.to_owned(),
            false => {
                let series = match line.rfind(' ') {
                    Some(end) => &line[..end],
                    None => line,
                };
                match series.split_once("version=\"") {
                    Some((head, tail)) => format!(
                        "{head}version=\"...\"{}",
                        &tail[tail.find('"').map_or(tail.len(), |i| i + 1)..]
                    ),
                    None => series.to_owned(),
                }
            }
        };
        families.entry(current.clone()).or_default().push(line);
    }
    families
        .into_values()
        .map(|mut lines| {
            let series = lines.split_off(lines.iter().take_while(|l| l.starts_with('#')).count());
            let mut series: Vec<String> = series;
            series.sort();
            lines.extend(series);
            lines.join("\n") + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_keys_openapi_and_metric_names() {
    let config = Config {
        worker_id: Some("golden".to_owned()),
        interval: Duration::from_millis(100),
        ..Config::default()
    };
    let agent = Agent::with_config(config)
        .signal_source(common::EverySignal)
        .strategy(Arc::new(Acts), TriggerSpec::new(Signal::MemoryUsage, 1.0))
        .spawn()
        .expect("a valid configuration");
    // What `perfpilot run` serves: every route at the root, with the JSON fallback.
    let (base, server) = common::serve(agent.standalone_router()).await;
    let client = common::client();
    // Wait (at most 20 s) for a sample after the first, so every trigger has a value.
    let waited = std::time::Instant::now();
    while !perfpilot::__internal::engine(&agent)
        .view()
        .strategies
        .iter()
        .all(|s| s.value.is_some())
    {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "no trigger values after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut routes = String::new();
    let mut answer = |title: &str, status: u16, body: &Value, whole: bool| {
        let _ = writeln!(routes, "{title} -> {status}");
        match whole {
            true => {
                let _ = writeln!(routes, "  {body}");
            }
            false => routes.push_str(&key_paths(body)),
        }
    };
    // Every strategy runs: the built-ins (memory-purge fails off jemalloc) and one that acts,
    // so both a failed and a successful record's keys show.
    let (status, body) = common::post_json(&base, "/performance-optimize", "{}").await;
    answer("POST /performance-optimize {}", status, &body, false);
    // Wait (at most 20 s) until the next sample has judged every run, so the document and
    // /metrics show the judged shape (`after`, effectiveness) whatever the machine's speed.
    let waited = std::time::Instant::now();
    while !perfpilot::__internal::engine(&agent)
        .view()
        .recent
        .iter()
        .all(|record| record.helped.is_some())
    {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "runs not judged after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = common::get_json(&base, "/performance-metrics").await;
    answer("GET /performance-metrics", status, &body, false);
    let (status, body) = common::get_json(&base, "/health").await;
    answer("GET /health", status, &body, false);
    let (status, body) = common::get_json(
        &base,
        "/performance-metrics/history?since=10m&signals=memory_usage",
    )
    .await;
    answer(
        "GET /performance-metrics/history?since=10m&signals=memory_usage",
        status,
        &body,
        false,
    );
    let (status, body) = common::get_json(&base, "/report?since=yesterday").await;
    answer("GET /report?since=yesterday", status, &body, true);
    let (status, body) =
        common::post_json(&base, "/performance-optimize", r#"{"strategy": "no-such"}"#).await;
    answer(
        "POST /performance-optimize {\"strategy\": \"no-such\"}",
        status,
        &body,
        true,
    );
    let (status, body) = common::post_json(&base, "/performance-optimize", "{not json").await;
    answer("POST /performance-optimize {not json", status, &body, true);
    let (status, body) = common::get_json(&base, "/no-such-route").await;
    answer("GET /no-such-route", status, &body, true);
    let response = client
        .delete(format!("{base}/health"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    answer("DELETE /health", status, &body, true);

    // /openapi.json: every path with its methods, every schema with its properties.
    let (status, openapi) = common::get_json(&base, "/openapi.json").await;
    let _ = writeln!(routes, "GET /openapi.json -> {status}");
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        let methods: Vec<&String> = item.as_object().expect("path item").keys().collect();
        let _ = writeln!(routes, "  path {path}: {methods:?}");
    }
    for (name, schema) in openapi["components"]["schemas"]
        .as_object()
        .expect("schemas")
    {
        let properties: Vec<&String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().collect())
            .unwrap_or_default();
        let _ = writeln!(routes, "  schema {name}: {properties:?}");
        if let Some(values) = schema["enum"].as_array() {
            let _ = writeln!(routes, "    enum {}", Value::Array(values.clone()));
        }
        for variant in schema["oneOf"].as_array().into_iter().flatten() {
            if let Some(values) = variant["enum"].as_array() {
                let _ = writeln!(routes, "    enum {}", Value::Array(values.clone()));
            }
        }
    }

    let prometheus = common::get_text(&base, "/metrics").await;
    let response = client
        .get(format!("{base}/metrics"))
        .header("accept", "application/openmetrics-text")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let openmetrics = response.text().await.unwrap();

    server.abort();
    agent.shutdown().await;
    assert_all(vec![
        check("routes.txt", &routes),
        check("metrics.txt", &metric_shape(&prometheus)),
        check("metrics_openmetrics.txt", &metric_shape(&openmetrics)),
    ]);
}

/// docs/signals.md's signal list (between `<!-- signals:start -->` and `<!-- signals:end -->`)
/// is the signal table's; `UPDATE_GOLDEN=1` rewrites it.
#[test]
fn docs_signal_list_is_the_signal_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/signals.md");
    let page = std::fs::read_to_string(&path).expect("read docs/signals.md");
    let (start, end) = ("<!-- signals:start -->\n", "<!-- signals:end -->");
    let from = page
        .find(start)
        .expect("docs/signals.md has the signals:start marker")
        + start.len();
    let to = page[from..]
        .find(end)
        .expect("docs/signals.md has the signals:end marker")
        + from;
    let table = perfpilot_strategies::signals::markdown_table();
    if golden::updating() {
        let updated = format!("{}{table}{}", &page[..from], &page[to..]);
        std::fs::write(&path, updated).expect("write docs/signals.md");
        return;
    }
    let shown = &page[from..to];
    assert!(
        shown == table,
        "docs/signals.md's signal list differs from the signal table (- docs, + table); rerun \
         with UPDATE_GOLDEN=1 to rewrite it:\n{}",
        diff(shown, &table)
    );
}

#[test]
fn signals_command_lists_every_signal() {
    let text = run_binary(&["signals".to_owned()], &[]);
    let json = run_binary(&["signals".to_owned(), "--json".to_owned()], &[]);
    assert_all(vec![
        check("signals.txt", &text),
        check("signals.json.txt", &json),
    ]);
}
