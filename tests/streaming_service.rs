//! The demo streaming service (`examples/streaming_service/`) as a real process on loopback.
//!
//! `cargo test` builds the example before running any test; when only this file is selected
//! (`cargo test --test streaming_service`) build it first with
//! `cargo build --example streaming_service`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use serde_json::Value;

/// The example's range parser; its unit tests run as part of this test binary.
#[path = "../examples/streaming_service/range.rs"]
mod range;

/// The example's adaptive cache capacity, likewise.
#[path = "../examples/streaming_service/capacity.rs"]
#[allow(dead_code)]
mod capacity;

/// The example's leaked session state, likewise.
#[path = "../examples/streaming_service/leak.rs"]
#[allow(dead_code)]
mod leak;

const MIB: usize = 1024 * 1024;
/// `--media-mb 4`
const MEDIA_BYTES: usize = 4 * MIB;
/// `--chunk-kb 256`
const CHUNK_BYTES: usize = 256 * 1024;
const SMALL: &[&str] = &["--media-mb", "4", "--chunk-kb", "256"];

type Demo = common::Running;

fn start(args: &[&str]) -> Demo {
    common::start_demo(args)
}

/// A client that keeps no idle connections, so a reap never races with its pool.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .expect("build the HTTP client")
}

struct Fetched {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: impl reqwest::header::AsHeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

async fn get(demo: &Demo, path: &str, range: Option<&str>) -> Fetched {
    let mut request = client().get(format!("{}{path}", demo.base));
    if let Some(range) = range {
        request = request.header(RANGE, range);
    }
    let response = request.send().await.expect("GET answered");
    Fetched {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("body read").to_vec(),
    }
}

async fn post(demo: &Demo, path: &str, body: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{}{path}", demo.base))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

async fn stats(demo: &Demo) -> Value {
    let fetched = get(demo, "/stats", None).await;
    assert_eq!(fetched.status, 200);
    fetched.json()
}

/// Checks a 206 answer to `header` against the same bytes of the full body.
async fn assert_range(demo: &Demo, id: &str, full: &[u8], header: &str, first: usize, last: usize) {
    let fetched = get(demo, &format!("/stream/{id}"), Some(header)).await;
    assert_eq!(fetched.status, 206, "{header}");
    assert_eq!(
        fetched.header(CONTENT_RANGE),
        format!("bytes {first}-{last}/{}", full.len()),
        "{header}"
    );
    assert_eq!(fetched.header(ACCEPT_RANGES), "bytes", "{header}");
    assert_eq!(fetched.body.len(), last - first + 1, "{header}");
    assert!(
        fetched.body == full[first..=last],
        "{header}: content differs"
    );
}

#[tokio::test]
async fn serves_whole_items_and_single_ranges() {
    let demo = start(SMALL);

    let ping = get(&demo, "/ping", None).await;
    assert_eq!((ping.status, ping.body.as_slice()), (200, &b"pong"[..]));

    let full = get(&demo, "/stream/movie-1", None).await;
    assert_eq!(full.status, 200);
    assert_eq!(full.header(ACCEPT_RANGES), "bytes");
    assert_eq!(full.header(CONTENT_LENGTH), MEDIA_BYTES.to_string());
    assert_eq!(full.body.len(), MEDIA_BYTES);
    let full = full.body;
    assert!(
        get(&demo, "/stream/movie-1", None).await.body == full,
        "deterministic"
    );
    assert!(
        get(&demo, "/stream/movie-2", None).await.body != full,
        "distinct per id"
    );

    let end = MEDIA_BYTES - 1;
    assert_range(&demo, "movie-1", &full, "bytes=0-99", 0, 99).await;
    assert_range(&demo, "movie-1", &full, "bytes=-10", end - 9, end).await;
    assert_range(&demo, "movie-1", &full, "bytes=5-", 5, end).await;
    let boundary = format!("bytes={}-{}", CHUNK_BYTES - 5, CHUNK_BYTES + 4);
    assert_range(
        &demo,
        "movie-1",
        &full,
        &boundary,
        CHUNK_BYTES - 5,
        CHUNK_BYTES + 4,
    )
    .await;
    assert_range(&demo, "movie-1", &full, "bytes=100-99999999", 100, end).await;
    // Several ranges: the first satisfiable one is served.
    assert_range(&demo, "movie-1", &full, "bytes=0-9, 20-29", 0, 9).await;
    assert_range(&demo, "movie-1", &full, "bytes=999999999-,20-29", 20, 29).await;

    for header in ["bytes=999999999-", "bytes=abc", "bytes=9-5", "bytes=-0"] {
        let fetched = get(&demo, "/stream/movie-1", Some(header)).await;
        assert_eq!(fetched.status, 416, "{header}");
        assert_eq!(
            fetched.header(CONTENT_RANGE),
            format!("bytes */{MEDIA_BYTES}")
        );
        assert!(fetched.json()["error"].is_string(), "{header}");
    }

    // A unit other than bytes is ignored: the whole item.
    let other_unit = get(&demo, "/stream/movie-1", Some("items=0-1")).await;
    assert_eq!(
        (other_unit.status, other_unit.body.len()),
        (200, MEDIA_BYTES)
    );

    let longest = "x".repeat(128);
    let fetched = get(&demo, &format!("/stream/{longest}"), Some("bytes=0-0")).await;
    assert_eq!(fetched.status, 206);
    let fetched = get(&demo, &format!("/stream/{longest}y"), None).await;
    assert_eq!(fetched.status, 400);
    assert!(fetched.json()["error"].is_string());

    let missing = get(&demo, "/nowhere", None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
}

#[tokio::test]
async fn a_short_last_chunk_and_a_small_cache_cap() {
    // 4 MiB in 300 KiB chunks: the 14th chunk is short. The cache holds at most 1 MiB.
    let demo = start(&["--media-mb", "4", "--chunk-kb", "300", "--cache-mb", "1"]);
    let full = get(&demo, "/stream/episode", None).await.body;
    assert_eq!(full.len(), MEDIA_BYTES);
    let last_chunk_start = 13 * 300 * 1024;
    let crossing = format!("bytes={}-{}", last_chunk_start - 3, last_chunk_start + 3);
    assert_range(
        &demo,
        "episode",
        &full,
        &crossing,
        last_chunk_start - 3,
        last_chunk_start + 3,
    )
    .await;
    assert_range(
        &demo,
        "episode",
        &full,
        "bytes=-1",
        MEDIA_BYTES - 1,
        MEDIA_BYTES - 1,
    )
    .await;

    let stats = stats(&demo).await;
    assert_eq!(stats["cache_capacity_bytes"], MIB);
    assert!(
        stats["cache_weighted_bytes"].as_u64().unwrap() <= MIB as u64,
        "{stats}"
    );
    assert!(stats["cache_entries"].as_u64().unwrap() <= 4, "{stats}");
}

#[tokio::test]
async fn the_cache_grows_counts_and_trims() {
    let demo = start(SMALL);
    let chunks_per_item = (MEDIA_BYTES / CHUNK_BYTES) as u64;

    let before = stats(&demo).await;
    assert_eq!(before["cache_entries"], 0);
    assert_eq!(before["cache_misses"], 0);
    assert_eq!(before["open_connections"], 1, "{before}");

    for id in ["a", "b", "c", "d"] {
        assert_eq!(
            get(&demo, &format!("/stream/{id}"), None).await.body.len(),
            MEDIA_BYTES
        );
    }
    let grown = stats(&demo).await;
    assert_eq!(grown["cache_entries"], 4 * chunks_per_item, "{grown}");
    assert_eq!(grown["cache_weighted_bytes"], 4 * MEDIA_BYTES, "{grown}");
    assert_eq!(grown["cache_misses"], 4 * chunks_per_item, "{grown}");
    assert_eq!(grown["cache_hits"], 0, "{grown}");
    assert!(
        grown["rss_bytes"].as_u64().unwrap() > 4 * MEDIA_BYTES as u64,
        "{grown}"
    );

    get(&demo, "/stream/a", None).await;
    let again = stats(&demo).await;
    assert_eq!(again["cache_hits"], chunks_per_item, "{again}");
    assert_eq!(again["cache_misses"], 4 * chunks_per_item, "{again}");
    assert!(again["requests_served"].as_u64().unwrap() >= 7, "{again}");

    let (status, trimmed) = post(&demo, "/admin/cache/trim", r#"{"fraction": 0.5}"#).await;
    assert_eq!(status, 200, "{trimmed}");
    let entries = 4 * chunks_per_item;
    assert_eq!(trimmed["entries_before"], entries, "{trimmed}");
    let after = trimmed["entries_after"].as_u64().unwrap();
    assert!(after.abs_diff(entries / 2) <= 1, "{trimmed}");
    assert_eq!(trimmed["entries_removed"], entries - after, "{trimmed}");
    assert!(trimmed["bytes_freed"].as_u64().unwrap() > 0, "{trimmed}");
    assert!(trimmed["rss_before_bytes"].is_u64() && trimmed["rss_after_bytes"].is_u64());
    assert_eq!(stats(&demo).await["cache_entries"], after);

    // No body: the default fraction.
    let (status, default) = post(&demo, "/admin/cache/trim", "").await;
    assert_eq!(status, 200, "{default}");
    assert!(
        default["entries_removed"].as_u64().unwrap() >= 1,
        "{default}"
    );

    for body in [
        r#"{"fraction": 2}"#,
        r#"{"fraction": 0}"#,
        r#"{"fraction": -0.5}"#,
        r#"{"fraction": "half"}"#,
        r#"{"fractoin": 0.5}"#,
        "{not json",
    ] {
        let (status, answer) = post(&demo, "/admin/cache/trim", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{body}: {answer}");
    }
}

#[tokio::test]
async fn a_trim_lowers_the_capacity_and_the_cache_stays_under_it() {
    // 2 MiB of 256 KiB chunks; no recovery within the test.
    let mut args = SMALL.to_vec();
    args.extend(["--cache-mb", "2", "--cache-recover-secs", "3600"]);
    let demo = start(&args);
    get(&demo, "/stream/a", None).await;
    let full = stats(&demo).await;
    assert_eq!(full["cache_capacity_bytes"], 2 * MIB, "{full}");
    assert_eq!(full["cache_max_capacity_bytes"], 2 * MIB, "{full}");
    assert_eq!(full["cache_weighted_bytes"], 2 * MIB, "{full}");

    let (status, trimmed) = post(&demo, "/admin/cache/trim", r#"{"fraction": 0.5}"#).await;
    assert_eq!(status, 200, "{trimmed}");
    assert_eq!(trimmed["capacity_before_bytes"], 2 * MIB, "{trimmed}");
    assert_eq!(trimmed["capacity_after_bytes"], MIB, "{trimmed}");
    assert_eq!(trimmed["bytes_freed"], MIB, "{trimmed}");
    assert_eq!(trimmed["jemalloc_purged"], true, "{trimmed}");

    // 8 MiB of new chunks: the cache refills only to the lowered capacity.
    for id in ["b", "c"] {
        assert_eq!(
            get(&demo, &format!("/stream/{id}"), None).await.body.len(),
            MEDIA_BYTES
        );
    }
    let refilled = stats(&demo).await;
    assert_eq!(refilled["cache_capacity_bytes"], MIB, "{refilled}");
    assert_eq!(refilled["cache_weighted_bytes"], MIB, "{refilled}");
    assert_eq!(refilled["cache_misses"], 48, "{refilled}");

    // A trim of a cache below its capacity cuts from what is cached.
    let (_, again) = post(&demo, "/admin/cache/trim", r#"{"fraction": 1}"#).await;
    assert_eq!(
        (&again["capacity_after_bytes"], &again["entries_after"]),
        (&Value::from(0), &Value::from(0)),
        "{again}"
    );
    get(&demo, "/stream/d", Some("bytes=0-1023")).await;
    assert_eq!(stats(&demo).await["cache_weighted_bytes"], 0);
}

#[tokio::test]
async fn the_capacity_recovers_once_trims_stop() {
    let mut args = SMALL.to_vec();
    args.extend([
        "--cache-mb",
        "4",
        "--cache-recover-secs",
        "1",
        "--cache-recover-percent",
        "50",
    ]);
    let demo = start(&args);
    get(&demo, "/stream/a", None).await;
    let (_, trimmed) = post(&demo, "/admin/cache/trim", r#"{"fraction": 0.75}"#).await;
    assert_eq!(trimmed["capacity_after_bytes"], MIB, "{trimmed}");
    // Steps of +50 % once a second: 1, 1.5, 2.25, 3.375, 4 MiB. Bounded wait.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let capacity = stats(&demo).await["cache_capacity_bytes"].as_u64().unwrap();
        if seen.last() != Some(&capacity) {
            seen.push(capacity);
        }
        if capacity == 4 * MIB as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "capacity stuck: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.len() >= 3, "grew in steps, not at once: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[tokio::test]
async fn leaked_sessions_grow_resident_memory_until_the_hook_drops_them() {
    let mut args = SMALL.to_vec();
    args.extend(["--leak-mb-per-s", "20"]);
    let demo = start(&args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let leaking = loop {
        let now = stats(&demo).await;
        if now["leaked_bytes"].as_u64().unwrap() >= 16 * MIB as u64 {
            break now;
        }
        assert!(Instant::now() < deadline, "no leak: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leaked = leaking["leaked_bytes"].as_u64().unwrap();
    assert!(
        leaking["rss_bytes"].as_u64().unwrap() > leaked,
        "resident: {leaking}"
    );

    let (status, half) = post(&demo, "/admin/sessions/drop", r#"{"fraction": 0.5}"#).await;
    assert_eq!(status, 200, "{half}");
    let before = half["sessions_before"].as_u64().unwrap();
    assert_eq!(half["sessions_dropped"], before.div_ceil(2), "{half}");
    assert!(
        half["bytes_freed"].as_u64().unwrap() >= 8 * MIB as u64,
        "{half}"
    );
    assert!(
        half["rss_after_bytes"].as_u64().unwrap() < half["rss_before_bytes"].as_u64().unwrap(),
        "the freed sessions left RSS: {half}"
    );

    let (_, all) = post(&demo, "/admin/sessions/drop", r#"{"fraction": 1}"#).await;
    assert_eq!(
        (&all["sessions_after"], &all["bytes_after"]),
        (&Value::from(0), &Value::from(0)),
        "{all}"
    );

    for body in [
        r#"{"fraction": 0}"#,
        r#"{"fraction": 1.5}"#,
        r#"{"share": 0.5}"#,
        "[]",
    ] {
        let (status, answer) = post(&demo, "/admin/sessions/drop", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{body}: {answer}");
    }
}

#[tokio::test]
async fn bad_leak_and_recovery_flags_are_refused_by_name() {
    for (flag, value) in [
        ("--leak-mb-per-s", "-1"),
        ("--leak-mb-per-s", "fast"),
        ("--leak-mb-per-s", "NaN"),
        ("--cache-recover-secs", "0"),
        ("--cache-recover-percent", "0"),
        ("--dirty-decay-ms", "-2"),
    ] {
        let output = std::process::Command::new(common::example_binary("streaming_service"))
            .args([flag, value])
            .output()
            .expect("run the demo");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

/// Sends `GET /ping` with keep-alive on `stream` and reads the whole response.
fn ping_keep_alive(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        .expect("send the request");
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    // "HTTP/1.1 200 OK" headers plus the 4-byte body; bounded by the read timeout and size.
    while !(response.ends_with(b"\r\n\r\npong")) {
        let read = stream.read(&mut buffer).expect("read the response");
        assert!(read > 0, "connection closed early: {response:?}");
        response.extend_from_slice(&buffer[..read]);
        assert!(response.len() < 4096, "response too long: {response:?}");
    }
    assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
}

#[tokio::test]
async fn reap_closes_an_idle_keep_alive_connection() {
    let demo = start(SMALL);
    let addr = demo.base.trim_start_matches("http://");
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    ping_keep_alive(&mut idle);

    let counted = stats(&demo).await;
    assert!(
        counted["connections_by_client"]["127.0.0.1"]
            .as_u64()
            .unwrap()
            >= 2,
        "{counted}"
    );

    // Not idle for 30 s (the default): nothing to close.
    let (status, answer) = post(&demo, "/admin/connections/reap", "").await;
    assert_eq!(
        (status, answer["closed"].as_u64()),
        (200, Some(0)),
        "{answer}"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, answer) = post(&demo, "/admin/connections/reap", r#"{"idle_ms": 50}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["closed"].as_u64().unwrap() >= 1, "{answer}");
    assert!(
        answer["open_after"].as_u64().unwrap() < answer["open_before"].as_u64().unwrap(),
        "{answer}"
    );

    let started = Instant::now();
    let mut buffer = [0u8; 64];
    match idle.read(&mut buffer) {
        Ok(0) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected EOF on the reaped connection, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    let (status, answer) = post(&demo, "/admin/connections/reap", r#"{"idle_ms": -1}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].is_string());
}

#[tokio::test]
async fn sigterm_lets_the_response_in_flight_finish_and_exits_zero() {
    let mut demo = start(SMALL);
    let response = client()
        .get(format!("{}/stream/in-flight", demo.base))
        .send()
        .await
        .expect("response headers");
    assert_eq!(response.status().as_u16(), 200);

    let pid = i32::try_from(demo.child.id()).expect("pid fits in pid_t");
    // SAFETY: kill() has no memory-safety preconditions; the pid is our child, which is not
    // reaped before the wait below, so it cannot name another process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    let body = response
        .bytes()
        .await
        .expect("the body in flight completes");
    assert_eq!(body.len(), MEDIA_BYTES);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = demo.child.try_wait().expect("wait for the service") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
