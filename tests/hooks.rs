//! The example hook handlers (examples/hooks/, Python and Node.js) answering the real agent:
//! each is started beside `perfpilot run`, which calls it as a budget's rung and by hand, and
//! the handler must have seen the configured body and the `X-Perfpilot-*` headers.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use common::{post_json, skip, start_agent, Running};

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The agent's configuration: the handler as a webhook, the one rung of a memory budget whose
/// goal every process is above, so an episode starts at the first sample.
fn config(hook_base: &str) -> String {
    format!(
        r#"
[strategies.webhook.trim-cache]
url = "{hook_base}/admin/cache/trim"
body = {{ fraction = 0.25 }}

[budgets.memory]
signal = "memory_usage"
goal = 0.000001
limit = 1.0
ladder = ["trim-cache"]
"#
    )
}

/// Starts the handler; answers it with its address (from its first line,
/// `listening on http://ADDR`, waited for at most 60 s) and each JSON line it prints after,
/// as they come.
fn start_handler(mut command: Command) -> (Running, mpsc::Receiver<Value>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the handler");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let (first_tx, first_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = first_tx.send(first);
        for line in lines.map_while(Result::ok) {
            let call = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the handler printed {line:?}, not JSON: {e}"));
            if tx.send(call).is_err() {
                break;
            }
        }
    });
    let first = first_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the handler printed its first line within 60 s");
    let base = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
        .to_owned();
    (Running { child, base }, rx)
}

/// The next call the handler saw, waiting at most 30 s for it.
fn next_call(calls: &mpsc::Receiver<Value>, what: &str) -> Value {
    calls
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the handler saw {what} within 30 s"))
}

async fn the_handler_answers_the_agent(program: &str, script: &str) {
    if !installed(program) {
        skip(&format!(
            "{program} not installed (apt-get install {program})"
        ));
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let mut command = Command::new(program);
    command.arg(&script).args(["--listen", "127.0.0.1:0"]);
    let (hook, calls) = start_handler(command);

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("perfpilot.toml");
    std::fs::write(&config_path, config(&hook.base)).unwrap();
    let pid = hook.child.id().to_string();
    let agent = start_agent(
        &[
            "--config",
            config_path.to_str().unwrap(),
            "--interval",
            "200ms",
            "--target-pid",
            &pid,
        ],
        &[],
    );

    // The budget's first rung.
    let call = next_call(&calls, "the budget's rung");
    let headers = &call["headers"];
    assert_eq!(
        call["body"],
        serde_json::json!({"fraction": 0.25}),
        "{call}"
    );
    assert_eq!(headers["Strategy"], "trim-cache", "{call}");
    assert_eq!(headers["Kind"], "automatic", "{call}");
    assert_eq!(headers["Budget"], "memory", "{call}");
    assert_eq!(headers["Rung"], "0", "{call}");
    assert_eq!(headers["Signal"], "memory_usage", "{call}");
    let value: f64 = headers["Value"]
        .as_str()
        .unwrap_or("")
        .parse()
        .unwrap_or(-1.0);
    assert!(
        value > 0.000001 && value <= 1.0,
        "memory_usage above the goal: {call}"
    );
    assert!(
        ["WARNING", "CRITICAL"].contains(&headers["Level"].as_str().unwrap_or("")),
        "{call}"
    );
    let first_run = headers["Run-Id"].as_str().unwrap_or("").to_owned();
    assert!(!first_run.is_empty(), "a run id: {call}");
    assert_eq!(call["answer"]["trimmed"], 0.25, "{call}");

    // By hand: no budget, its own run id; the agent records the handler's answer.
    // The budget's episode goes on beside it: while one of its runs is under way the agent
    // answers 409 (single flight), so ask again, for at most 30 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let (status, answer) = post_json(
            &agent.base,
            "/performance-optimize",
            r#"{"strategy": "trim-cache"}"#,
        )
        .await;
        match status {
            200 => break answer,
            409 if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            _ => panic!("a manual run within 30 s: {status} {answer}"),
        }
    };
    let result = &answer["results"][0];
    assert_eq!(result["success"], true, "{answer}");
    let manual = loop {
        let call = next_call(&calls, "the manual run");
        if call["headers"]["Kind"] == "manual" {
            break call;
        }
    };
    let headers = &manual["headers"];
    assert_eq!(headers["Strategy"], "trim-cache", "{manual}");
    assert_eq!(headers["Budget"], Value::Null, "{manual}");
    assert_eq!(headers["Rung"], Value::Null, "{manual}");
    assert_eq!(headers["Signal"], "memory_usage", "{manual}");
    let manual_run = headers["Run-Id"].as_str().unwrap_or("");
    assert!(
        !manual_run.is_empty() && manual_run != first_run,
        "{manual}"
    );
    assert_eq!(
        manual["answer"]["duplicate"],
        Value::Null,
        "a new run: {manual}"
    );
    drop(agent);
    drop(hook);
}

#[tokio::test]
async fn the_python_handler_answers_the_agent() {
    the_handler_answers_the_agent("python3", "examples/hooks/trim_hook.py").await;
}

#[tokio::test]
async fn the_node_handler_answers_the_agent() {
    the_handler_answers_the_agent("node", "examples/hooks/trim_hook.js").await;
}
