//! What a new user meets first: plain logs in a file, strategies that say what they are.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::{first_stdout_line, perfpilot};

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let mut child = perfpilot()
        .args(["run", "--listen", "127.0.0.1:0", "--log-level", "debug"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_stdout_line(&mut child);
    assert!(line.starts_with("listening on "), "{line}");
    // A few samples' worth of log lines, then stop it and read everything it wrote.
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("perfpilot API listening"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "ANSI codes in a pipe: {stderr:?}");
}

#[test]
fn strategies_says_what_each_strategy_is_and_acts_on() {
    let temp = tempfile::Builder::new()
        .prefix("perfpilot-frictions-")
        .tempdir()
        .expect("create a temp directory");
    let dir = temp.path();
    let file = dir.join("perfpilot.toml");
    std::fs::write(
        &file,
        r#"
[strategies.webhook.trim-demo-cache]
url = "http://admin:hunter2@127.0.0.1:8080/admin/cache/trim?fraction=0.25"
[strategies.webhook.trim-demo-cache.trigger]
signal = "memory_usage"
above = 0.8
[strategies.signal.reopen-logs]
signal = "SIGUSR1"
[strategies.signal.reopen-logs.trigger]
signal = "open_fds"
above = 1000
[strategies.command.rotate]
program = "/usr/local/bin/rotate-logs"
args = ["--token", "s3cret"]
[strategies.command.rotate.trigger]
signal = "open_fds"
above = 2000
"#,
    )
    .unwrap();
    let output = perfpilot()
        .args(["strategies", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let header = stdout.lines().next().unwrap();
    assert!(
        header.contains(" KIND ") && header.ends_with("ACTS ON"),
        "{header}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row in\n{stdout}"))
            .to_owned()
    };
    let purge = row("memory-purge");
    assert!(
        purge.contains(" built-in ")
            && purge.ends_with("the allocator: purge jemalloc's dirty pages"),
        "{purge}"
    );
    let hook = row("trim-demo-cache");
    assert!(
        hook.contains(" webhook ")
            && hook.ends_with("POST http://127.0.0.1:8080/admin/cache/trim?fraction=***"),
        "{hook}"
    );
    let signal = row("reopen-logs");
    assert!(
        signal.contains(" signal ") && signal.ends_with("SIGUSR1 to the target's processes"),
        "{signal}"
    );
    let command = row("rotate");
    assert!(
        command.contains(" command ") && command.ends_with("runs /usr/local/bin/rotate-logs"),
        "{command}"
    );
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("s3cret"),
        "credentials shown:\n{stdout}"
    );
}

/// GET `path` with `Accept-Encoding: gzip`; returns the `Content-Encoding` and the decoded body.
async fn get_gzip(base: &str, path: &str) -> (Option<String>, String) {
    let response = common::client()
        .get(format!("{base}{path}"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    assert_eq!(response.headers()["vary"], "accept-encoding");
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("GET {path}: not gzip ({e})"));
    (encoding, text)
}

#[tokio::test]
async fn read_routes_answer_gzip_when_asked_and_ratios_carry_no_float_noise() {
    let agent = common::start_agent(&["--interval", "100ms"], &[]);
    for path in ["/metrics", "/performance-metrics", "/openapi.json"] {
        let (encoding, text) = get_gzip(&agent.base, path).await;
        assert_eq!(encoding.as_deref(), Some("gzip"), "{path}");
        assert!(!text.is_empty());
        if path != "/metrics" {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        // Asked for nothing: plain.
        let plain = common::client()
            .get(format!("{}{path}", agent.base))
            .send()
            .await
            .unwrap();
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
    }
    let (_, metrics) = get_gzip(&agent.base, "/metrics").await;
    assert!(
        metrics.contains("perfpilot_memory_usage_ratio{"),
        "{metrics}"
    );

    // PSI: percents with two decimals in the kernel's files, ratios with four here.
    let (_, json) = common::get_json(&agent.base, "/performance-metrics").await;
    let Some(system) = json["currentMetrics"]["pressure"]["system"].as_object() else {
        return common::skip("no PSI on this kernel (the rounding of its ratios is not checked)");
    };
    for (resource, lines) in system {
        for kind in ["some", "full"] {
            for window in ["avg10", "avg60", "avg300"] {
                let Some(value) = lines[kind][window].as_f64() else {
                    continue;
                };
                let written = value.to_string();
                let decimals = written.split_once('.').map_or(0, |(_, d)| d.len());
                assert!(
                    decimals <= 4,
                    "{resource}.{kind}.{window} = {written}: more digits than the kernel wrote"
                );
            }
        }
    }
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("perfpilot_pressure_ratio{"))
    {
        let value = line.rsplit(' ').next().unwrap();
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 4, "{line}");
    }
}
