//! `GET /performance-metrics/history` through the router, over a recorder fed known samples.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use perfpilot_strategies::{Registry, Snapshot};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{router, ApiSettings};
use crate::engine::{self, EngineSettings, SignalSource};
use crate::recorder::{Recorder, RecorderConfig};

struct Quiet;

impl SignalSource for Quiet {
    fn sample(&mut self) -> Snapshot {
        Snapshot::empty(SystemTime::now())
    }
}

/// 100 samples a second apart from a whole ten seconds at least 100 s ago: memory usage
/// `i / 100` at second `i`, RSS unread at odd seconds.
fn recorder(config: &RecorderConfig) -> (Recorder, u64) {
    let recorder = Recorder::new(config);
    let start = (SystemTime::now() - Duration::from_secs(100))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 10
        * 10_000;
    for i in 0..100u64 {
        let mut snapshot = Snapshot::empty(UNIX_EPOCH + Duration::from_millis(start + i * 1000));
        snapshot.memory_usage_ratio = Some(i as f64 / 100.0);
        snapshot.rss_bytes = (i % 2 == 0).then_some(1_000_000 + i);
        recorder.record_sample(&snapshot, None);
    }
    (recorder, start)
}

fn app(recorder: Option<Recorder>) -> Router {
    let (handle, _task) = engine::spawn(
        EngineSettings::for_tests(),
        Vec::new(),
        Arc::new(Registry::default()),
        Box::new(Quiet),
        CancellationToken::new(),
    );
    router(
        handle,
        ApiSettings {
            recorder,
            ..ApiSettings::new(json!(1))
        },
    )
}

async fn get(app: &Router, uri: &str, gzip: bool) -> (StatusCode, Value) {
    let mut request = Request::get(uri).header(header::HOST, "127.0.0.1:9750");
    if gzip {
        request = request.header(header::ACCEPT_ENCODING, "gzip");
    }
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        app.clone().oneshot(request.body(Body::empty()).unwrap()),
    )
    .await
    .expect("an answer within 30 s")
    .unwrap();
    let status = response.status();
    let gzipped = response.headers().get(header::CONTENT_ENCODING).is_some();
    let bytes = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
        .await
        .expect("the body within 30 s")
        .unwrap()
        .to_bytes();
    let text = if gzipped {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .expect("valid gzip");
        text
    } else {
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

#[tokio::test]
async fn serves_the_recorded_samples_of_the_window_with_only_the_signals_asked() {
    let (recorder, start) = recorder(&RecorderConfig::default());
    let app = app(Some(recorder));
    let since =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(start + 10_000));
    let until =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(start + 19_000));
    let uri = format!(
        "/performance-metrics/history?since={since}&until={until}&signals=memory_usage,rss_bytes"
    );
    for gzip in [false, true] {
        let (status, body) = get(&app, &uri, gzip).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["signals"], json!(["memory_usage", "rss_bytes"]));
        let samples = body["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 10, "{body}");
        assert_eq!(
            samples[0],
            json!({"t": start + 10_000, "memory_usage": 0.1, "rss_bytes": 1_000_010.0})
        );
        assert_eq!(
            samples[1],
            json!({"t": start + 11_000, "memory_usage": 0.11}),
            "absent is left out"
        );
        for key in [
            "runs",
            "episodes",
            "wakes",
            "oomKills",
            "exhaustions",
            "reloads",
            "budgets",
        ] {
            assert!(body[key].is_array(), "{key} in {body}");
        }
    }
}

#[tokio::test]
async fn a_step_averages_each_signal_over_its_samples() {
    let (recorder, start) = recorder(&RecorderConfig::default());
    let app = app(Some(recorder));
    let (status, body) = get(
        &app,
        "/performance-metrics/history?since=10m&step=10s&signals=memory_usage,rss_bytes",
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let samples = body["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 10, "{body}");
    // Steps are whole ten seconds: each holds 10 samples.
    let first = &samples[0];
    let mean: f64 = (0..10).map(|i| i as f64 / 100.0).sum::<f64>() / 10.0;
    assert!(
        (first["memory_usage"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{first}"
    );
    assert_eq!(first["t"], start, "{first}");
    assert_eq!(
        first["rss_bytes"], 1_000_004.0,
        "the mean of the samples that read it"
    );
}

#[tokio::test]
async fn a_spike_shorter_than_a_step_keeps_its_height_in_the_steps_max() {
    // Four samples a second (250 ms apart) over three whole seconds: memory usage 0.5, but
    // 0.95 for one sample (a spike of 250 ms) in the middle second.
    let recorder = Recorder::new(&RecorderConfig::default());
    let start = (SystemTime::now() - Duration::from_secs(100))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        * 1000;
    for i in 0..12u64 {
        let mut snapshot = Snapshot::empty(UNIX_EPOCH + Duration::from_millis(start + i * 250));
        snapshot.memory_usage_ratio = Some(if i == 6 { 0.95 } else { 0.5 });
        snapshot.rss_bytes = Some(1_000_000);
        recorder.record_sample(&snapshot, None);
    }
    let app = app(Some(recorder));
    let (status, body) = get(
        &app,
        "/performance-metrics/history?since=10m&step=1s&signals=memory_usage,rss_bytes",
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let samples = body["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 3, "{body}");
    let spike = &samples[1];
    assert_eq!(spike["t"], start + 1000, "{spike}");
    assert_eq!(spike["max"], json!({"memory_usage": 0.95}), "{spike}");
    assert_eq!(spike["min"], json!({"memory_usage": 0.5}), "{spike}");
    let mean = (0.5 * 3.0 + 0.95) / 4.0;
    assert!(
        (spike["memory_usage"].as_f64().unwrap() - mean).abs() < 1e-9,
        "the mean stays under the signal's name: {spike}"
    );
    for calm in [&samples[0], &samples[2]] {
        assert_eq!(
            calm,
            &json!({"t": calm["t"], "memory_usage": 0.5, "rss_bytes": 1_000_000.0}),
            "a step whose values were all equal has no min or max"
        );
    }
}

#[tokio::test]
async fn bad_input_is_named_and_no_recording_is_404() {
    let (recorder, _) = recorder(&RecorderConfig::default());
    let app_with = app(Some(recorder));
    for (query, named) in [
        ("since=yesterday", "since = \"yesterday\""),
        ("until=5%20parsecs", "until = \"5 parsecs\""),
        ("signals=memory_usage,mood", "unknown signal \"mood\""),
        ("step=0s", "step = \"0s\""),
        ("since=1m&until=10m", "is after until"),
    ] {
        let (status, body) = get(
            &app_with,
            &format!("/performance-metrics/history?{query}"),
            false,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(named), "{query}: {error}");
    }
    let (status, body) = get(&app(None), "/performance-metrics/history", false).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn more_history_requests_than_allowed_at_once_get_503() {
    let (recorder, _) = recorder(&RecorderConfig {
        max_history_requests: 1,
        ..RecorderConfig::default()
    });
    let held = recorder.reader().expect("one permit");
    let app = app(Some(recorder.clone()));
    let (status, body) = get(&app, "/performance-metrics/history", false).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("recorder.max_history_requests"));
    drop(held);
    let (status, _) = get(&app, "/performance-metrics/history", false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        recorder.reader().is_some(),
        "the answer's permit was given back"
    );
}
