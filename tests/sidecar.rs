//! Sidecar mode against real processes on loopback: `perfpilot run --target-pid`,
//! `--target-port` and `--target-pidfile` next to a `python3 -m http.server` child, with the
//! latency probe.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get_json, start_agent};
use serde_json::Value;

/// A `python3 -m http.server` on a free loopback port, killed when dropped.
struct Service {
    child: Child,
    port: u16,
}

impl Service {
    fn start() -> Service {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let line = common::first_stdout_line(&mut child);
        let port = line
            .split_whitespace()
            .skip_while(|word| *word != "port")
            .nth(1)
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        Service { child, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now, from its `/proc/<pid>/statm`.
    fn rss_bytes(&self) -> u64 {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid())).unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `path` every 100 ms until `done` holds for its JSON (at most 60 s); returns it.
async fn wait_for(base: &str, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get_json(base, path).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "waited 60 s for {what}; last {path}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn running_pid(body: &Value) -> Option<u64> {
    (body["target"]["state"] == "running")
        .then(|| body["target"]["pid"].as_u64())
        .flatten()
}

#[tokio::test]
async fn target_pid_reports_the_childs_memory_connections_and_probe() {
    let service = Service::start();
    let pid = service.pid().to_string();
    let probe = format!("http://127.0.0.1:{}/no-such-file", service.port);
    let agent = start_agent(
        &[
            "--target-pid",
            &pid,
            "--interval",
            "100ms",
            "--probe-url",
            &probe,
        ],
        &[("PERFPILOT_PROBE__PERIOD", "50ms")],
    );
    // Three client connections, held open (http.server's threads wait for their requests).
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", service.port)).unwrap())
        .collect();

    let metrics = wait_for(
        &agent.base,
        "/performance-metrics",
        "3 connections and a probed error rate",
        |m| {
            let current = &m["currentMetrics"];
            current["activeConnections"].as_u64() >= Some(3) && current["errorRate"] == 1.0
        },
    )
    .await;
    assert_eq!(running_pid(&metrics), Some(u64::from(service.pid())));
    assert_eq!(metrics["target"]["selector"], format!("pid {pid}"));
    assert!(metrics["target"]["reason"].is_null(), "{metrics:#}");
    let current = &metrics["currentMetrics"];
    // The child's RSS, not the agent's.
    let rss = current["rssBytes"].as_u64().unwrap() as f64;
    let child_rss = service.rss_bytes() as f64;
    assert!(
        (rss - child_rss).abs() < child_rss * 0.2,
        "rssBytes {rss} vs the child's {child_rss}"
    );
    assert!(current["openFds"].as_u64().unwrap() >= 3 + 3, "{current:#}");
    assert!(current["uptime"].as_f64().unwrap() < 120.0, "{current:#}");
    assert!(current["memoryUsage"].as_f64().unwrap() > 0.0);
    // The probe: 404s are failures, but they have a latency.
    assert!(
        current["latency"]["p99Ms"].as_f64().unwrap() > 0.0,
        "{current:#}"
    );
    assert!(current["requestsPerSecond"].is_null());
    assert_ne!(metrics["workerId"], metrics["target"]["pid"]);

    let (status, health) = get_json(&agent.base, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(running_pid(&health), Some(u64::from(service.pid())));

    let prometheus = common::get_text(&agent.base, "/metrics").await;
    assert!(
        prometheus.contains("\nperfpilot_open_fds{worker="),
        "{prometheus}"
    );
    drop(clients);
}

#[tokio::test]
async fn target_port_finds_the_listening_process() {
    let service = Service::start();
    let port = service.port.to_string();
    let agent = start_agent(&["--target-port", &port, "--interval", "100ms"], &[]);
    let health = wait_for(&agent.base, "/health", "the target running", |h| {
        running_pid(h).is_some()
    })
    .await;
    assert_eq!(running_pid(&health), Some(u64::from(service.pid())));
    assert_eq!(health["target"]["selector"], format!("port {port}"));

    service.stop();
    let health = wait_for(&agent.base, "/health", "the target gone", |h| {
        h["target"]["state"] == "not-found"
    })
    .await;
    let reason = health["target"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("nothing listens on TCP port {port}")),
        "{reason}"
    );
}

#[tokio::test]
async fn target_pidfile_follows_a_restarted_service() {
    let temp = tempfile::Builder::new()
        .prefix("perfpilot-sidecar-")
        .tempdir()
        .expect("create a temp directory");
    let dir = temp.path();
    let pidfile: PathBuf = dir.join("service.pid");
    let first = Service::start();
    std::fs::write(&pidfile, format!("{}\n", first.pid())).unwrap();
    let agent = start_agent(
        &[
            "--target-pidfile",
            pidfile.to_str().unwrap(),
            "--interval",
            "100ms",
        ],
        &[],
    );
    wait_for(&agent.base, "/health", "the first service", |h| {
        running_pid(h) == Some(u64::from(first.pid()))
    })
    .await;

    let first_pid = first.pid();
    first.stop();
    let health = wait_for(&agent.base, "/health", "the target reported gone", |h| {
        h["target"]["state"] == "not-found"
    })
    .await;
    assert_eq!(health["status"], "ok", "the agent itself is fine");
    assert!(health["target"]["pid"].is_null());
    let reason = health["target"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("pid {first_pid} from pidfile")),
        "{reason}"
    );
    let (_, metrics) = get_json(&agent.base, "/performance-metrics").await;
    assert!(
        metrics["currentMetrics"]["rssBytes"].is_null(),
        "{metrics:#}"
    );
    assert_eq!(metrics["target"]["state"], "not-found");

    let second = Service::start();
    std::fs::write(&pidfile, format!("{}\n", second.pid())).unwrap();
    // Followed at a later sample: wait_for fails the test if not within its bound.
    let metrics = wait_for(&agent.base, "/performance-metrics", "the new pid", |m| {
        running_pid(m) == Some(u64::from(second.pid()))
            && m["currentMetrics"]["rssBytes"].as_u64().is_some()
    })
    .await;
    assert!(metrics["target"]["reason"].is_null(), "{metrics:#}");
}
