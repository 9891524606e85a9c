//! The request layer: latency, throughput, errors and in-flight requests of the host service,
//! recorded on the request path and read once per sampling window.
//!
//! [`RequestMetrics`] keeps cumulative counters; [`MetricsLayer`] wraps the host's service (an
//! axum `Router`, or any `tower::Service` over `http` requests) and counts every request in
//! them; the sampler calls [`RequestMetrics::fill`] once per sample, which turns the counters
//! into per-window rates and percentiles by subtracting the previous reading.
//!
//! ```
//! use axum::{routing::get, Router};
//! use perfpilot::{MetricsLayer, RequestMetrics};
//!
//! let metrics = RequestMetrics::new();
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(MetricsLayer::new(metrics.clone()));
//! // ... serve `app`; once per sample:
//! let window = metrics.window();
//! assert_eq!(window.requests, 0);
//! ```
//!
//! # What a request costs
//!
//! No lock and no allocation: each thread writes its own cache-line-aligned shard of counters
//! with plain loads and stores (see the `shard` module), and reads the clock only for the
//! requests whose latency is timed (see [`LatencySampling`]). Measured by `benches/layer.rs`
//! on a 2-core KVM guest (thread CPU time): `record` 5.6 ns on one thread, 5.8 ns on two;
//! the layer around a trivial service +75 ns per request when every request is timed (two
//! `Instant::now` are ~67 ns of it), +25–28 ns when one in 16–64 is timed, on one thread and
//! on two alike. Under load the default [`LatencySampling::Adaptive`] times one request in
//! 2, 4 ... 64 and counts every one.
//!
//! # What is counted
//!
//! - Latency is the time from the call into the wrapped service to its response (headers):
//!   the body is streamed after that and is not included.
//! - Response bytes are the body's exact size hint at that moment: bodies of unknown length
//!   (streams) are not counted.
//! - A request fails when the response status is 5xx or the service returned an error.
//! - A request whose future is dropped before it ends (the client went away) is counted as
//!   cancelled, not as a request; it leaves the in-flight count either way.

mod clock;
mod histogram;
mod service;
mod shard;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use perfpilot_strategies::{LatencyStats, Snapshot};

use self::clock::LatencyClock;
use self::histogram::{quantile_nanos, BUCKETS};
use self::shard::Shards;

pub use self::service::{MetricsLayer, MetricsService, ResponseFuture};

/// Which requests have their latency timed. Every request is counted either way (requests,
/// failures, bytes, in-flight); only the latency statistics come from the timed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencySampling {
    /// Time every request: exact statistics, two clock reads per request.
    All,
    /// Time one request in `n` per thread (`n` rounded up to a power of two, at most 64).
    OneIn(u32),
    /// Time every request while the previous window had fewer than
    /// [`RequestMetrics::ADAPTIVE_TIMED_PER_WINDOW`] × 2 requests; above that, one in 2, 4 ...
    /// 64, so that at least that many are timed per window (at the previous window's rate).
    Adaptive,
}

/// The most requests that share one timed request: 2^6.
const MAX_SAMPLING_SHIFT: u32 = 6;

/// A cheap, cloneable recorder of the host service's requests.
///
/// Create one per service (not per request or connection): its counters are allocated once
/// and live for the rest of the process (a few KiB per CPU), so that the future of every
/// request can refer to them without touching a shared reference count; a clone is a copy of
/// a reference. Give a clone to [`MetricsLayer::new`] and one to the sampler.
#[derive(Clone)]
pub struct RequestMetrics {
    inner: &'static Inner,
}

struct Inner {
    shards: Shards,
    /// The clock timing requests: the TSC where it was checked, else the monotonic clock.
    clock: &'static LatencyClock,
    sampling: LatencySampling,
    /// `2^shift - 1`: a request is timed when its shard's start count `& mask == 0`.
    timing_mask: AtomicU64,
    previous: Mutex<Reading>,
}

/// A reading of the cumulative counters, summed over the shards.
#[derive(Clone)]
struct Reading {
    at: Instant,
    started: u64,
    completed: u64,
    cancelled: u64,
    failed: u64,
    response_bytes: u64,
    latency_sum_nanos: u64,
    buckets: [u64; BUCKETS],
}

impl Reading {
    fn zero(at: Instant) -> Reading {
        Reading {
            at,
            started: 0,
            completed: 0,
            cancelled: 0,
            failed: 0,
            response_bytes: 0,
            latency_sum_nanos: 0,
            buckets: [0; BUCKETS],
        }
    }
}

/// What happened in one window: between two calls of [`RequestMetrics::window`] (the first
/// window starts when the metrics were created).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStats {
    /// Length of the window.
    pub elapsed: Duration,
    /// Requests that ended in the window, with a response or an error.
    pub requests: u64,
    /// Of those, the ones that failed: a 5xx status or an error from the service.
    pub failed: u64,
    /// Requests dropped before they ended (client gone, timeout above this layer).
    pub cancelled: u64,
    /// Response body bytes of the requests that ended, where the body's size was known.
    pub response_bytes: u64,
    /// Requests whose latency was timed (see [`LatencySampling`]): what `latency` is made of.
    pub timed_requests: u64,
    /// Requests in flight at the end of the window (started, not yet ended or dropped).
    pub in_flight: u64,
    /// Latency of the timed requests; `None` when none was timed in the window. Percentiles
    /// are bucket midpoints, within 6.25 % of the true value from 1 µs to 137 s; the mean is
    /// exact.
    pub latency: Option<LatencyStats>,
    /// `requests` per second of the window; `None` for an empty window (zero length).
    pub requests_per_second: Option<f64>,
    /// `response_bytes` per second of the window; `None` for an empty window.
    pub bytes_per_second: Option<f64>,
    /// `failed / requests`, 0..1; `None` when no request ended in the window.
    pub error_rate: Option<f64>,
}

impl RequestMetrics {
    /// Requests [`LatencySampling::Adaptive`] aims to time per window.
    pub const ADAPTIVE_TIMED_PER_WINDOW: u64 = 8_192;

    /// Metrics with [`LatencySampling::Adaptive`].
    pub fn new() -> RequestMetrics {
        RequestMetrics::with_sampling(LatencySampling::Adaptive)
    }

    /// Metrics that time the requests `sampling` says.
    pub fn with_sampling(sampling: LatencySampling) -> RequestMetrics {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shift = match sampling {
            LatencySampling::All | LatencySampling::Adaptive => 0,
            LatencySampling::OneIn(n) => n
                .max(1)
                .checked_next_power_of_two()
                .map_or(MAX_SAMPLING_SHIFT, u32::ilog2),
        };
        let inner = Inner {
            // Tokio's workers, the blocking threads that happen to record, a margin.
            shards: Shards::new((2 * cpus).max(8)),
            clock: LatencyClock::get(),
            sampling,
            timing_mask: AtomicU64::new(mask(shift)),
            previous: Mutex::new(Reading::zero(Instant::now())),
        };
        RequestMetrics {
            inner: Box::leak(Box::new(inner)),
        }
    }

    /// The latency sampling in force.
    pub fn sampling(&self) -> LatencySampling {
        self.inner.sampling
    }

    /// Which clock times requests and why (chosen once per process): the CPU's time-stamp
    /// counter once checked to be trustworthy here, else the standard monotonic clock.
    /// `PERFPILOT_LATENCY_CLOCK=monotonic` in the environment forces the latter.
    pub fn latency_clock() -> &'static str {
        &clock::LatencyClock::describe().reason
    }

    /// Counts a request starting now. Finish it with `InFlightGuard::finish`; dropping the
    /// guard instead counts it as cancelled. Either way it leaves the in-flight count.
    #[inline]
    pub fn start(&self) -> InFlightGuard {
        let started_before = self.inner.shards.writer().start();
        let timed = started_before & self.inner.timing_mask.load(Ordering::Relaxed) == 0;
        InFlightGuard {
            inner: self.inner,
            started_at: timed.then(|| self.inner.clock.now()),
            finished: false,
        }
    }

    /// Counts a whole request at once: it took `latency`, sent `response_bytes` (`None` when
    /// unknown) and `failed` or not. Always timed, whatever the sampling.
    pub fn record(&self, latency: Duration, response_bytes: Option<u64>, failed: bool) {
        let writer = self.inner.shards.writer();
        writer.start();
        writer.complete(Some(duration_nanos(latency)), response_bytes, failed);
    }

    /// The requests in flight now (started, not yet ended or dropped).
    pub fn in_flight(&self) -> u64 {
        let (started, ended) = self
            .inner
            .shards
            .iter()
            .fold((0u64, 0u64), |(s, e), shard| {
                let ended = shard
                    .completed
                    .load(Ordering::Relaxed)
                    .wrapping_add(shard.cancelled.load(Ordering::Relaxed));
                (
                    s.wrapping_add(shard.started.load(Ordering::Relaxed)),
                    e.wrapping_add(ended),
                )
            });
        in_flight(started, ended)
    }

    /// Closes the current window and returns what happened in it; the next window starts now.
    ///
    /// Meant for one reader, the sampler, once per sample: two readers would each see only
    /// part of the requests. Takes a lock and sums every shard (a few microseconds); it never
    /// blocks the request path. A request that ends while the shards are being summed may
    /// show in this window or the next, never in both.
    pub fn window(&self) -> WindowStats {
        let mut previous = match self.inner.previous.lock() {
            Ok(guard) => guard,
            // A panic while holding the lock cannot leave a torn reading: it is replaced whole.
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = self.read(Instant::now());
        let stats = window_stats(&previous, &now);
        *previous = now;
        drop(previous);
        if self.inner.sampling == LatencySampling::Adaptive {
            let shift = (stats.requests / RequestMetrics::ADAPTIVE_TIMED_PER_WINDOW)
                .checked_ilog2()
                .unwrap_or(0)
                .min(MAX_SAMPLING_SHIFT);
            self.inner.timing_mask.store(mask(shift), Ordering::Relaxed);
        }
        stats
    }

    /// Closes the current window (see [`RequestMetrics::window`]) and writes it into
    /// `snapshot`: `in_flight_requests`, `latency`, `requests_per_second`, `bytes_per_second`
    /// and `error_rate`.
    pub fn fill(&self, snapshot: &mut Snapshot) {
        let window = self.window();
        snapshot.in_flight_requests = Some(window.in_flight);
        snapshot.latency = window.latency;
        snapshot.requests_per_second = window.requests_per_second;
        snapshot.bytes_per_second = window.bytes_per_second;
        snapshot.error_rate = window.error_rate;
    }

    /// Sums the shards' cumulative counters.
    fn read(&self, at: Instant) -> Reading {
        let mut sum = Reading::zero(at);
        for shard in self.inner.shards.iter() {
            let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            // Ended before started: a request that starts and ends during the read shows as
            // in flight for one window rather than as a negative count.
            sum.completed = sum.completed.wrapping_add(load(&shard.completed));
            sum.cancelled = sum.cancelled.wrapping_add(load(&shard.cancelled));
            sum.started = sum.started.wrapping_add(load(&shard.started));
            sum.failed = sum.failed.wrapping_add(load(&shard.failed));
            sum.response_bytes = sum.response_bytes.wrapping_add(load(&shard.response_bytes));
            sum.latency_sum_nanos = sum
                .latency_sum_nanos
                .wrapping_add(load(&shard.latency_sum_nanos));
            for (total, bucket) in sum.buckets.iter_mut().zip(&shard.buckets) {
                *total = total.wrapping_add(load(bucket));
            }
        }
        sum
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics::new()
    }
}

impl fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("sampling", &self.inner.sampling)
            .field(
                "timing_one_in",
                &(self.inner.timing_mask.load(Ordering::Relaxed) + 1),
            )
            .field("shards", &self.inner.shards.len())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// A request in flight, from [`RequestMetrics::start`]. [`finish`](InFlightGuard::finish) it
/// when the request ends; dropped unfinished (a cancelled future), it counts the request as
/// cancelled. Either way the in-flight count goes down.
#[must_use = "dropping the guard at once counts the request as cancelled"]
pub struct InFlightGuard {
    inner: &'static Inner,
    /// When the request started (a [`LatencyClock`] reading), if its latency is timed.
    started_at: Option<u64>,
    finished: bool,
}

impl InFlightGuard {
    /// Ends the request: `response_bytes` sent (`None` when unknown), `failed` or not; its
    /// latency is the time since [`RequestMetrics::start`] when it was chosen for timing.
    #[inline]
    pub fn finish(mut self, response_bytes: Option<u64>, failed: bool) {
        self.finish_in_place(response_bytes, failed);
    }

    /// [`InFlightGuard::finish`] without moving the guard (it stays where a future keeps it);
    /// a second call does nothing.
    #[inline]
    pub(crate) fn finish_in_place(&mut self, response_bytes: Option<u64>, failed: bool) {
        if !self.finished {
            self.finished = true;
            let clock = self.inner.clock;
            let latency = self
                .started_at
                .map(|at| clock.nanos_between(at, clock.now()));
            self.inner
                .shards
                .writer()
                .complete(latency, response_bytes, failed);
        }
    }
}

impl Drop for InFlightGuard {
    #[inline]
    fn drop(&mut self) {
        if !self.finished {
            self.inner.shards.writer().cancel();
        }
    }
}

impl fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("finished", &self.finished)
            .field("timed", &self.started_at.is_some())
            .finish()
    }
}

fn mask(shift: u32) -> u64 {
    (1u64 << shift.min(MAX_SAMPLING_SHIFT)) - 1
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Started minus ended, where a read racing the request path may see an end before its start.
fn in_flight(started: u64, ended: u64) -> u64 {
    (started.wrapping_sub(ended) as i64).max(0) as u64
}

/// The window between two readings.
fn window_stats(previous: &Reading, now: &Reading) -> WindowStats {
    let elapsed = now.at.saturating_duration_since(previous.at);
    let requests = now.completed.wrapping_sub(previous.completed);
    let failed = now.failed.wrapping_sub(previous.failed);
    let response_bytes = now.response_bytes.wrapping_sub(previous.response_bytes);
    let mut buckets = [0u64; BUCKETS];
    for ((delta, now), before) in buckets.iter_mut().zip(&now.buckets).zip(&previous.buckets) {
        *delta = now.wrapping_sub(*before);
    }
    let timed_requests = buckets.iter().sum::<u64>();
    let latency = (timed_requests > 0).then(|| {
        let latency_sum = now
            .latency_sum_nanos
            .wrapping_sub(previous.latency_sum_nanos);
        let quantile_ms = |q| quantile_nanos(&buckets, timed_requests, q).unwrap_or(0) as f64 / 1e6;
        LatencyStats {
            mean_ms: latency_sum as f64 / timed_requests as f64 / 1e6,
            p50_ms: quantile_ms(0.50),
            p95_ms: quantile_ms(0.95),
            p99_ms: quantile_ms(0.99),
        }
    });
    let seconds = elapsed.as_secs_f64();
    let per_second = |count: u64| (seconds > 0.0).then(|| count as f64 / seconds);
    WindowStats {
        elapsed,
        requests,
        failed,
        cancelled: now.cancelled.wrapping_sub(previous.cancelled),
        response_bytes,
        timed_requests,
        in_flight: in_flight(now.started, now.completed.wrapping_add(now.cancelled)),
        latency,
        requests_per_second: per_second(requests),
        bytes_per_second: per_second(response_bytes),
        error_rate: (requests > 0).then(|| failed as f64 / requests as f64),
    }
}

#[cfg(test)]
mod tests;
