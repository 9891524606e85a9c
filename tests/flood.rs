//! The agent's own listener under a connection flood (issue: 5,000 idle and half-sent
//! connections grew the agent from 7.7 to 43 MiB and 5,018 fds): connections stay bounded by
//! `api.max_connections`, the oldest idle go first, slow headers and idle keep-alive
//! connections are closed, and `/health` answers throughout. Loopback only; every loop is
//! bounded in count and every wait in time. Large unfinished request heads (HTTP/1.1 and
//! HTTP/2) are cut off, and slow request bodies holding every connection do not lock `/health`
//! out. The RSS budget itself (16 MiB, release build) is measured by `scripts/flood-rss.sh`.

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

// 4. Large unfinished request heads, HTTP/1 and HTTP/2.

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK integer with an `n`-bit prefix under `first` (RFC 7541 §5.1).
fn hpack_int(first: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// An h2c (prior knowledge) connection preface and a `GET /performance-metrics` whose header
/// block holds one `x-big` header of `size` bytes, sent as HEADERS and CONTINUATION frames of
/// 16 KiB, never ended (no END_HEADERS).
fn h2_large_head(size: usize) -> Vec<u8> {
    let mut block = Vec::new();
    // :method GET (static index 2), :scheme http (6), :path / (4) as indexed fields, then
    // :authority and x-big as literals without indexing.
    block.extend_from_slice(&[0x82, 0x86, 0x84]);
    hpack_int(0x00, 4, 1, &mut block); // :authority, name from static index 1
    hpack_int(0x00, 7, "127.0.0.1".len(), &mut block);
    block.extend_from_slice(b"127.0.0.1");
    block.push(0x00); // literal name
    hpack_int(0x00, 7, 5, &mut block);
    block.extend_from_slice(b"x-big");
    hpack_int(0x00, 7, size, &mut block);
    block.extend(std::iter::repeat_n(b'a', size));
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
    for (i, chunk) in block.chunks(16 * 1024).enumerate() {
        let kind = if i == 0 { 0x1 } else { 0x9 }; // HEADERS, then CONTINUATION
        out.extend(h2_frame(kind, 0, 1, chunk));
    }
    out
}

#[test]
fn large_unfinished_request_heads_are_cut_off_over_http1_and_http2() {
    const CONNECTIONS: usize = 120;
    const HEAD: usize = 400 * 1024;
    let agent = start_agent(&[], &[]);
    let addr: std::net::SocketAddr = agent.base.trim_start_matches("http://").parse().unwrap();
    let pid = agent.child.id();
    let before = rss_kib(pid);
    let mut http1 = b"GET /performance-metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    http1.extend(std::iter::repeat_n(b'a', HEAD));
    let http2 = h2_large_head(HEAD);
    let mut held = Vec::new();
    for i in 0..CONNECTIONS {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream.set_nonblocking(true).unwrap();
        let bytes = if i % 2 == 0 { &http1 } else { &http2 };
        // As much as the socket takes now; the head is never finished either way.
        let _ = (&stream).write_all_nonblocking(bytes);
        held.push(stream);
    }
    let peak = rss_kib(pid);
    // The agent closes each connection once its head passes the bound.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (i, stream) in held.iter().enumerate() {
        stream.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 4096];
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            stream.set_read_timeout(Some(left)).unwrap();
            match (&*stream).read(&mut buf) {
                Ok(0) | Err(_) if Instant::now() < deadline => break true,
                Ok(_) => continue, // a 431 answer or a GOAWAY, then the end
                Err(_) => break false,
            }
        };
        assert!(
            closed,
            "connection {i} ({}) with an unfinished {HEAD}-byte head still open after 15 s",
            if i % 2 == 0 { "HTTP/1.1" } else { "HTTP/2" }
        );
    }
    let after = rss_kib(pid).max(peak);
    assert!(
        after.saturating_sub(before) < 10 * 1024,
        "RSS grew from {before} KiB to {after} KiB for {CONNECTIONS} unfinished heads"
    );
    assert_eq!(health(addr), Ok(200));
}

/// Writes what a non-blocking socket takes now.
trait WriteNow {
    fn write_all_nonblocking(self, bytes: &[u8]) -> std::io::Result<usize>;
}

impl WriteNow for &std::net::TcpStream {
    fn write_all_nonblocking(mut self, bytes: &[u8]) -> std::io::Result<usize> {
        use std::io::Write;
        let mut sent = 0;
        while sent < bytes.len() {
            match self.write(&bytes[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

// 5. Busy connections and /health.

#[test]
fn slow_bodies_holding_every_connection_do_not_lock_out_health() {
    const CAP: usize = 16;
    let agent = start_agent(
        &[],
        &[
            ("PERFPILOT_API__MAX_CONNECTIONS", "16"),
            // Every holder reaches the body read (the worst case).
            ("PERFPILOT_API__RATE_LIMIT__PER_MINUTE", "0"),
        ],
    );
    let addr: std::net::SocketAddr = agent.base.trim_start_matches("http://").parse().unwrap();
    let mut held = Vec::new();
    for i in 0..CAP {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        // `Expect: 100-continue`: hyper answers `100 Continue` when the handler starts reading
        // the body, so the connection is then known to be busy.
        stream
            .write_all(b"POST /performance-optimize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n")
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut interim = [0u8; 25];
        stream
            .read_exact(&mut interim)
            .unwrap_or_else(|e| panic!("holder {i}: no 100 Continue within 10 s: {e}"));
        assert!(interim.starts_with(b"HTTP/1.1 100"), "holder {i}");
        stream.write_all(b"{").unwrap();
        held.push(stream);
    }
    // While they hold (a body read is bounded to 5 s), /health answers every time.
    for round in 0..5 {
        let started = Instant::now();
        let request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let (status, _, body) = common::raw_bytes(&agent.base, request, false);
        assert_eq!(status, 200, "round {round}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "round {round}: /health took {:?}",
            started.elapsed()
        );
    }
    // And a holder is answered 408 once its body is overdue.
    let mut last = held.pop().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = String::new();
    let _ = last.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "closed for a newer connection, or answered 408: {answer}"
    );
}
