//! The latency probe: a task that GETs a URL of the watched service (its `/ping`, say) every
//! period, and a [`ProbeWindow`] that turns the answers into the snapshot's `latency` and
//! `error_rate` at each sample.
//!
//! A probe succeeds when a 2xx answer and its whole body arrive within the timeout. Its latency
//! is the time to the end of the body, recorded for every answer (a 404 is quick and counts as
//! a failure); probes without an answer (timeout, connection refused) have no latency and
//! count as failures. `requests_per_second` and `bytes_per_second` are left `None`: a probe is
//! not the service's traffic.
//!
//! The agent starts it when `probe.url` is set: [`Probe::new`], then [`Probe::window`] for the
//! sampler and [`Probe::spawn`] for the task (see this module's tests).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use perfpilot_strategies::{LatencyStats, Snapshot};
use reqwest::Url;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Why a probe cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not an `http://` URL with a host.
    #[error("probe.url = {url:?}: {why}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the probe's HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Parses a probe URL: `http://` with a host (perfpilot is built without TLS).
pub fn check_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "must be an http:// URL, not {}:// (perfpilot is built without TLS)",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host, e.g. http://127.0.0.1:8080/ping".to_owned());
    }
    Ok(parsed)
}

/// The probes since the last [`ProbeWindow::fill`]. Written by the probe task about once a
/// period, drained by the sampler once a sample: a mutex is plenty at that rate.
#[derive(Debug, Default)]
pub struct ProbeWindow {
    inner: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Latencies of the probes that got an answer.
    latencies: Vec<Duration>,
    probes: u64,
    failures: u64,
}

impl ProbeWindow {
    /// Records one probe: its latency where an answer came, and whether it succeeded.
    pub fn record(&self, latency: Option<Duration>, success: bool) {
        let mut window = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        window.probes += 1;
        if !success {
            window.failures += 1;
        }
        if let Some(latency) = latency {
            window.latencies.push(latency);
        }
    }

    /// Sets `latency` (mean, p50, p95, p99 of the answered probes, ms) and `error_rate`
    /// (failed ÷ all probes) of `snapshot` from the probes since the previous call, and starts
    /// a new window. Without probes in the window both stay `None`; with probes but no answer,
    /// `latency` stays `None` and `error_rate` is 1.
    pub fn fill(&self, snapshot: &mut Snapshot) {
        let (mut latencies, probes, failures) = {
            let mut window = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let taken = std::mem::take(&mut window.latencies);
            let counts = (window.probes, window.failures);
            window.probes = 0;
            window.failures = 0;
            (taken, counts.0, counts.1)
        };
        if probes == 0 {
            return;
        }
        snapshot.error_rate = Some(failures as f64 / probes as f64);
        snapshot.latency = latency_stats(&mut latencies);
    }
}

/// Mean and nearest-rank percentiles in ms; `None` for no samples.
fn latency_stats(latencies: &mut [Duration]) -> Option<LatencyStats> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = latencies.len();
    let percentile = |p: f64| ms(latencies[((p * n as f64).ceil() as usize).clamp(1, n) - 1]);
    let mean = latencies.iter().map(|&d| ms(d)).sum::<f64>() / n as f64;
    Some(LatencyStats {
        mean_ms: mean,
        p50_ms: percentile(0.50),
        p95_ms: percentile(0.95),
        p99_ms: percentile(0.99),
    })
}

/// A configured probe, ready to [`spawn`](Probe::spawn).
#[derive(Debug)]
pub struct Probe {
    client: reqwest::Client,
    url: Url,
    period: Duration,
    window: Arc<ProbeWindow>,
}

impl Probe {
    /// A probe of `url` (see [`check_url`]) every `period`, each given `timeout` to answer
    /// in full. One client, reused: its connection to the service is kept alive between probes
    /// (and counts as one of the service's open connections).
    pub fn new(url: &str, period: Duration, timeout: Duration) -> Result<Self, ProbeError> {
        let url = check_url(url).map_err(|why| ProbeError::InvalidUrl {
            url: url.to_owned(),
            why,
        })?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("perfpilot-probe/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Probe {
            client,
            url,
            period,
            window: Arc::new(ProbeWindow::default()),
        })
    }

    /// The window the probes are recorded in, to [`fill`](ProbeWindow::fill) snapshots from.
    pub fn window(&self) -> Arc<ProbeWindow> {
        Arc::clone(&self.window)
    }

    /// Starts probing at once and then every period, until `shutdown` is cancelled. A probe
    /// slower than the period delays the next one rather than overlapping it.
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let probe = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    probe = self.probe_once() => probe,
                };
                let (latency, outcome) = probe;
                self.window.record(latency, outcome.is_ok());
                match outcome {
                    Err(why) if !failing => {
                        failing = true;
                        warn!(url = %self.url, %why, "probe failing");
                    }
                    Err(why) => debug!(url = %self.url, %why, "probe failed"),
                    Ok(()) if failing => {
                        failing = false;
                        info!(url = %self.url, "probe succeeding again");
                    }
                    Ok(()) => {}
                }
            }
        })
    }

    /// One GET: the latency if an answer came in full, and whether it was a success.
    async fn probe_once(&self) -> (Option<Duration>, Result<(), String>) {
        let started = Instant::now();
        let response = match self.client.get(self.url.clone()).send().await {
            Ok(response) => response,
            Err(e) => return (None, Err(e.to_string())),
        };
        let status = response.status();
        // The whole body, so the kept-alive connection can be reused.
        if let Err(e) = response.bytes().await {
            return (None, Err(format!("reading the body: {e}")));
        }
        let latency = Some(started.elapsed());
        if status.is_success() {
            (latency, Ok(()))
        } else {
            (latency, Err(format!("status {status}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn only_http_urls_with_a_host() {
        assert!(check_url("http://127.0.0.1:8080/ping").is_ok());
        assert!(check_url("https://example.com/")
            .unwrap_err()
            .starts_with("must be an http:// URL, not https://"));
        assert!(check_url("127.0.0.1:8080/ping").is_err());
        assert!(check_url("not a url").unwrap_err().starts_with("not a URL"));
        assert!(check_url("http://").is_err());
    }

    #[test]
    fn a_window_gives_mean_percentiles_and_error_rate_then_starts_over() {
        let window = ProbeWindow::default();
        let mut snapshot = Snapshot::empty(SystemTime::now());
        window.fill(&mut snapshot);
        assert_eq!((snapshot.latency, snapshot.error_rate), (None, None));

        for ms in 1..=100 {
            window.record(Some(Duration::from_millis(ms)), ms % 10 != 0);
        }
        window.record(None, false);
        window.fill(&mut snapshot);
        let latency = snapshot.latency.unwrap();
        assert_eq!(latency.mean_ms, 50.5);
        assert_eq!(latency.p50_ms, 50.0);
        assert_eq!(latency.p95_ms, 95.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(snapshot.error_rate, Some(11.0 / 101.0));
        assert_eq!(snapshot.requests_per_second, None);

        let mut next = Snapshot::empty(SystemTime::now());
        window.record(None, false);
        window.fill(&mut next);
        assert_eq!((next.latency, next.error_rate), (None, Some(1.0)));
    }

    #[test]
    fn one_probe_is_every_percentile() {
        let stats = latency_stats(&mut [Duration::from_micros(1500)]).unwrap();
        assert_eq!((stats.mean_ms, stats.p50_ms, stats.p99_ms), (1.5, 1.5, 1.5));
    }

    #[tokio::test]
    async fn probes_a_real_socket_until_shut_down() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0; 1024];
                    while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {
                        let answer = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let probe = Probe::new(
            &format!("http://{addr}/missing"),
            Duration::from_millis(20),
            Duration::from_secs(2),
        )
        .unwrap();
        let window = probe.window();
        let shutdown = CancellationToken::new();
        let task = probe.spawn(shutdown.clone());
        let mut snapshot = Snapshot::empty(SystemTime::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        while snapshot.error_rate.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            window.fill(&mut snapshot);
        }
        assert_eq!(snapshot.error_rate, Some(1.0), "a 404 is a failure");
        assert!(snapshot.latency.is_some(), "but it has a latency");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the probe stops on shutdown")
            .unwrap();
        server.abort();
    }
}
