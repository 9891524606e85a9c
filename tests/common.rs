//! Starting the real `perfpilot` binary on a free loopback port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use perfpilot::SignalSource;
use perfpilot_strategies::{
    AllocatorStats, LatencyStats, MemoryLimitSource, MemoryUsageSource, Pressure, PressureLine,
    PressureSet, ResourcePressure, RuntimeStats, Snapshot,
};
use serde_json::Value;

/// A running process that announced `listening on http://ADDR`, killed when dropped.
pub struct Running {
    pub child: Child,
    pub base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test.
pub fn perfpilot() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_perfpilot"));
    // Keep the tests independent of the developer's environment and working directory.
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    command
}

/// Spawns `command` with stdout piped and waits (at most 60 s) for its first line,
/// `listening on http://ADDR`.
pub fn start_announcing(mut command: Command) -> Running {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the process");
    let line = first_stdout_line(&mut child);
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Running { child, base }
}

/// The first line `child` (spawned with stdout piped) prints, waiting at most 60 s (generous: a loaded machine).
pub fn first_stdout_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the process printed its first line within 60 s")
}

/// Starts `perfpilot run --listen 127.0.0.1:0` plus `args` with `env`.
pub fn start_agent(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut command = perfpilot();
    command
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied());
    start_announcing(command)
}

/// An example's binary: next to this test's own `<target>/<profile>/deps/`, else under
/// `$CARGO_TARGET_DIR` (or `target/`) in the debug profile. `cargo test` builds examples
/// before integration tests.
pub fn example_binary(name: &str) -> PathBuf {
    let name = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let beside_this_test = std::env::current_exe().ok().and_then(|exe| {
        let profile_dir = exe.parent()?.parent()?;
        Some(profile_dir.join("examples").join(&name))
    });
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let in_target_dir = target_dir.join("debug").join("examples").join(&name);
    beside_this_test
        .into_iter()
        .chain([in_target_dir])
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("example binary {name} not found; run `cargo build --examples`"))
}

/// Starts the demo streaming service (`examples/streaming_service`) on a free loopback port.
pub fn start_demo(args: &[&str]) -> Running {
    let mut command = Command::new(example_binary("streaming_service"));
    command.args(["--listen", "127.0.0.1:0"]).args(args);
    start_announcing(command)
}

/// Runs `perfpilot ARGS` with `env`, which must refuse to start (exit status 2, bad input);
/// returns its stderr, the message the user sees.
pub fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = perfpilot()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "perfpilot {args:?}: {stderr}"
    );
    stderr
}

/// Serves `app` in process on a free loopback port, with each connection's peer address as
/// `perfpilot run` serves it; returns the base URL and the server's task (abort it to stop).
pub async fn serve(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let base = format!(
        "http://{}",
        listener.local_addr().expect("the bound address")
    );
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, server)
}

/// An HTTP client with a bounded timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GET `path` and parse the JSON body.
pub async fn get_json(base: &str, path: &str) -> (u16, Value) {
    let response = client().get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// GET `path` and return the body as text, requiring a 200 (e.g. `/metrics`).
pub async fn get_text(base: &str, path: &str) -> String {
    let response = client().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.text().await.unwrap()
}

/// POST `body` to `path` and parse the JSON answer.
pub async fn post_json(base: &str, path: &str, body: &'static str) -> (u16, Value) {
    let response = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[allow(unused_imports)]
pub use perfpilot_strategies::test_support::{skip, REQUIRE_ALL};

/// A sample in which every signal has a value, so every key and series shows.
#[derive(Debug)]
pub struct EverySignal;

impl SignalSource for EverySignal {
    fn sample(&mut self) -> Snapshot {
        full_snapshot()
    }
}

pub fn full_snapshot() -> Snapshot {
    let line = |avg10: f64| PressureLine {
        avg10,
        avg60: avg10 / 2.0,
        avg300: avg10 / 4.0,
        total_us: 1_000,
        stall_rate: Some(0.01),
    };
    let resource = |avg10| {
        Some(ResourcePressure {
            some: line(avg10),
            full: Some(line(avg10 / 2.0)),
        })
    };
    let set = PressureSet {
        memory: resource(0.1),
        cpu: resource(0.2),
        io: resource(0.05),
    };
    let mut s = Snapshot::empty(SystemTime::now());
    s.uptime = Some(Duration::from_secs(60));
    s.rss_bytes = Some(100 << 20);
    s.virtual_bytes = Some(400 << 20);
    s.memory_limit_bytes = Some(1 << 30);
    s.memory_limit_source = Some(MemoryLimitSource::Budget);
    s.memory_usage_ratio = Some(0.1);
    s.memory_usage_bytes = Some(100 << 20);
    s.memory_usage_source = Some(MemoryUsageSource::Rss);
    s.memory_usage_raw_ratio = Some(0.1);
    s.process_count = Some(3);
    s.pressure = Some(Pressure {
        system: Some(set),
        cgroup: Some(set),
    });
    s.allocator = Some(AllocatorStats {
        allocated_bytes: 10 << 20,
        active_bytes: 11 << 20,
        resident_bytes: 12 << 20,
        retained_bytes: 13 << 20,
    });
    s.process_cpu_ratio = Some(0.05);
    s.agent_cpu_ratio = Some(0.01);
    s.system_cpu_ratio = Some(0.1);
    s.load_average = Some([0.5, 0.4, 0.3]);
    s.open_connections = Some(4);
    s.open_fds = Some(20);
    s.major_faults_per_second = Some(2.0);
    s.in_flight_requests = Some(1);
    s.latency = Some(LatencyStats {
        mean_ms: 2.0,
        p50_ms: 1.0,
        p95_ms: 5.0,
        p99_ms: 9.0,
    });
    s.requests_per_second = Some(10.0);
    s.bytes_per_second = Some(1000.0);
    s.error_rate = Some(0.01);
    s.runtime = Some(RuntimeStats {
        workers: 2,
        busy_ratio: 0.1,
        global_queue_depth: 0,
        live_tasks: 5,
    });
    s
}

/// One raw HTTP/1.1 request with the headers as given (reqwest would set `Host` itself);
/// returns the status and the body. Bounded by 10 s read and write timeouts.
pub fn raw(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let (status, _head, body) = raw_bytes(base, request.as_bytes(), path == "/events");
    (status, body)
}

/// Sends `request` as it is on a new connection to `base` and reads the answer (only its
/// head when `head_only`, e.g. an endless event stream); returns the status, the head and the
/// body. Bounded by 10 s read and write timeouts.
pub fn raw_bytes(base: &str, request: &[u8], head_only: bool) -> (u16, String, String) {
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let what = String::from_utf8_lossy(request.split(|b| *b == b'\r').next().unwrap_or_default())
        .into_owned();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if head_only && answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) => panic!("{what}: reading the answer: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no status line in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}
