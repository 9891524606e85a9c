//! The agent's own listener under a connection flood (issue: 5,000 idle and half-sent
//! connections grew the agent from 7.7 to 43 MiB and 5,018 fds): connections stay bounded by
//! `api.max_connections`, the oldest idle go first, slow headers and idle keep-alive
//! connections are closed, and `/health` answers throughout. Loopback only; every loop is
//! bounded in count and every wait in time. The RSS budget itself (16 MiB, release build) is
//! measured by `scripts/flood-rss.sh`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::start_agent;

fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

fn pid(agent: &common::Running) -> u32 {
    agent.child.id()
}

/// The agent's open file descriptors.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// The agent's resident set, KiB.
/// The agent's open fds once they hold still: the same count in five readings 50 ms apart
/// (at most 20 s, then the test fails naming `what`).
fn settled_fds(pid: u32, what: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut same) = (fds(pid), 0);
    while same < 4 {
        assert!(
            Instant::now() < deadline,
            "{what} still changing after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
        let now = fds(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// `GET /health` on a new connection; the status, within 5 s.
fn health(addr: SocketAddr) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))
}

/// Whether the agent closed `stream` within `within` (EOF or reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response to a request sent earlier
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Whether `stream` is still open now (nothing to read, no EOF).
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let open = matches!((&*stream).read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

const HALF_SENT: &[u8] = b"GET /performance-metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

#[test]
fn thousands_of_idle_and_half_sent_connections_stay_bounded_and_health_answers() {
    const CONNECTIONS: usize = 3_000;
    let agent = start_agent(&["--interval", "1s"], &[]);
    let (pid, addr) = (pid(&agent), addr(&agent.base));
    assert_eq!(health(addr), Ok(200));
    let fds_before = settled_fds(pid, "the agent's fds after start");
    let rss_before = rss_kib(pid);
    let mut held = Vec::with_capacity(CONNECTIONS);
    let mut failed_connects = 0;
    let started = Instant::now();
    for i in 0..CONNECTIONS {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut stream) => {
                // A third send an incomplete request head, the rest nothing.
                if i % 3 == 0 {
                    let _ = stream.write_all(HALF_SENT);
                }
                held.push(stream);
            }
            Err(_) => failed_connects += 1,
        }
        if i % 500 == 499 {
            assert_eq!(health(addr), Ok(200), "/health after {} connections", i + 1);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "opening {CONNECTIONS} connections took over 120 s"
        );
    }
    // Wait until the agent has accepted (or refused) what is still queued.
    let fds_after = settled_fds(pid, "the agent's fds with the flood held open");
    assert_eq!(health(addr), Ok(200), "/health with the flood held open");
    let rss_after = rss_kib(pid);
    eprintln!(
        "{} connections held ({failed_connects} connects failed): agent fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB",
        held.len()
    );
    let cap = perfpilot::config::ApiConfig::DEFAULT_MAX_CONNECTIONS;
    assert!(
        fds_after <= fds_before + cap + 2,
        "agent fds {fds_before} -> {fds_after} with {} connections held: not bounded by max_connections = {cap}",
        held.len()
    );
    // Unbounded, 3,000 connections cost the agent about 20 MiB (the 5,000: 35 MiB).
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS {rss_before} -> {rss_after} KiB with {} connections held",
        held.len()
    );
    let closed = held
        .iter_mut()
        .take(100)
        .filter_map(|s| closed_within(s, Duration::from_millis(50)).then_some(()))
        .count();
    assert_eq!(
        closed, 100,
        "the oldest connections were closed for new ones"
    );
}

#[test]
fn at_the_cap_the_oldest_idle_connection_is_closed_first() {
    let agent = start_agent(&[], &[("PERFPILOT_API__MAX_CONNECTIONS", "4")]);
    let addr = addr(&agent.base);
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).unwrap());
        // Distinct last-activity times (milliseconds).
        std::thread::sleep(Duration::from_millis(50));
    }
    let newest = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut held[0], Duration::from_secs(10)),
        "the oldest idle connection was closed within 10 s"
    );
    // That nothing else closes needs a window to watch: 200 ms.
    std::thread::sleep(Duration::from_millis(200));
    for (i, stream) in held.iter().enumerate().skip(1) {
        assert!(still_open(stream), "connection {i} is still open");
    }
    assert!(still_open(&newest));
}

#[test]
fn a_half_sent_request_head_is_closed_after_header_read_timeout() {
    let agent = start_agent(
        &[],
        &[
            ("PERFPILOT_API__HEADER_READ_TIMEOUT", "1s"),
            ("PERFPILOT_API__IDLE_TIMEOUT", "60s"),
        ],
    );
    let mut half_sent = TcpStream::connect(addr(&agent.base)).unwrap();
    half_sent.write_all(HALF_SENT).unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut half_sent, Duration::from_secs(10)),
        "a half-sent request head was closed within 10 s (header_read_timeout = 1s)"
    );
    eprintln!("half-sent head closed after {:?}", started.elapsed());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before header_read_timeout: {:?}",
        started.elapsed()
    );
}

#[test]
fn idle_connections_are_closed_after_idle_timeout() {
    let agent = start_agent(
        &[],
        &[
            ("PERFPILOT_API__HEADER_READ_TIMEOUT", "60s"),
            ("PERFPILOT_API__IDLE_TIMEOUT", "1s"),
        ],
    );
    let addr = addr(&agent.base);
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut kept_alive = TcpStream::connect(addr).unwrap();
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "a connection that sent nothing was closed within 10 s (idle_timeout = 1s)"
    );
    assert!(
        closed_within(&mut kept_alive, Duration::from_secs(10)),
        "an idle keep-alive connection was closed within 10 s (idle_timeout = 1s)"
    );
    eprintln!("both idle connections closed after {:?}", started.elapsed());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before idle_timeout: {:?}",
        started.elapsed()
    );
}
