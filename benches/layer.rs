//! The cost of recording requests (SPEC §8: at most 15 ns per request on one thread and
//! 25 ns on two).
//!
//! Run with: cargo bench --bench layer
//!
//! - `record`: `RequestMetrics::record` alone.
//! - `layer_1_thread`: a trivial `tower::service_fn` answering at once (`baseline`; its
//!   `async` block builds the response when polled, as a handler does), and the same behind
//!   `MetricsLayer` with every request timed (`timed_all`) and with one in 16 timed
//!   (`timed_1_in_16`, where `LatencySampling::Adaptive` settles at 128 Ki–256 Ki requests
//!   per window). The layer's cost per request is a layered number minus `baseline`.
//! - `prebuilt_1_thread`: `baseline` and `timed_all` over a service that builds its response
//!   in `call` (`ready(..)`): there the layer also pays one more copy of the response.
//! - `layer_2_threads`: the same with two threads calling at once, each its own clone of the
//!   service and all recording into one `RequestMetrics`. Each sample spawns two threads that
//!   meet at a barrier, then each makes `iters` calls and times itself; the sample's time is
//!   the slower thread's. So the number is the time of one call on each thread while the
//!   other thread does the same: contention shows as a higher number than on one thread.
//!
//! Futures are polled once with a no-op waker: the service is always ready, so no runtime
//! is involved and none of its cost is in the numbers.
//!
//! `PERFPILOT_BENCH_CLOCK=cpu` times each thread by its own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) instead of the wall clock: on a machine shared with other work
//! the wall clock also counts the time the thread waited for a core. Contention between the
//! two threads still shows (a stalled core is CPU time), but only while both run at once.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, Response};
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::Full;
use perfpilot::{LatencySampling, MetricsLayer, RequestMetrics};
use tower::{Layer, Service};

type Body = Full<Bytes>;

/// A handler answering at once: its response is built when its future is polled, as an
/// `async fn` handler's is.
fn trivial_service(
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone + Send {
    tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

/// A service whose response is built in `call`, before the future is polled (`ready(..)`):
/// the optimizer then writes it straight into the caller's slot, unless a layer stands
/// between them, which costs one more copy of the 136-byte response (about 5 ns here).
fn prebuilt_service(
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone + Send {
    tower::service_fn(|_: Request<()>| {
        ready(Ok::<_, Infallible>(Response::new(Full::new(
            Bytes::from_static(b"ok"),
        ))))
    })
}

/// One request through `service`, polled to completion with a no-op waker.
#[inline]
fn call<S>(service: &mut S, cx: &mut Context<'_>)
where
    S: Service<Request<()>, Response = Response<Body>, Error = Infallible>,
{
    let Poll::Ready(Ok(())) = service.poll_ready(cx) else {
        panic!("the trivial service is always ready");
    };
    let future = pin!(service.call(Request::new(())));
    let Poll::Ready(response) = future.poll(cx) else {
        panic!("the trivial service answers at once");
    };
    black_box(response.ok());
}

/// The clock the benchmarks read: wall, or this thread's CPU time.
#[derive(Clone, Copy)]
enum Clock {
    Wall(Instant),
    ThreadCpu(Duration),
}

impl Clock {
    fn start() -> Clock {
        match std::env::var("PERFPILOT_BENCH_CLOCK").as_deref() {
            Ok("cpu") => Clock::ThreadCpu(thread_cpu_time()),
            _ => Clock::Wall(Instant::now()),
        }
    }

    fn elapsed(self) -> Duration {
        match self {
            Clock::Wall(start) => start.elapsed(),
            Clock::ThreadCpu(start) => thread_cpu_time().saturating_sub(start),
        }
    }
}

fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock id is a constant Linux knows.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "CLOCK_THREAD_CPUTIME_ID unreadable");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn calls<S>(mut service: S, iters: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<Body>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    let start = Clock::start();
    for _ in 0..iters {
        call(&mut service, &mut cx);
    }
    start.elapsed()
}

/// `iters` calls on each of two threads at once; the slower thread's time.
fn calls_on_two_threads<S>(service: S, iters: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone + Send,
{
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let service = service.clone();
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    calls(service, iters)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a bench thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

fn layered(
    sampling: LatencySampling,
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone + Send {
    MetricsLayer::new(RequestMetrics::with_sampling(sampling)).layer(trivial_service())
}

fn record(c: &mut Criterion) {
    let metrics = RequestMetrics::new();
    c.bench_function("record", |b| {
        b.iter_custom(|iters| {
            let start = Clock::start();
            for _ in 0..iters {
                metrics.record(black_box(Duration::from_micros(250)), Some(2), false);
            }
            start.elapsed()
        })
    });
    c.bench_function("record_2_threads", |b| {
        b.iter_custom(|iters| {
            let barrier = Barrier::new(2);
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let (barrier, metrics) = (&barrier, &metrics);
                        scope.spawn(move || {
                            barrier.wait();
                            let start = Clock::start();
                            for _ in 0..iters {
                                metrics.record(
                                    black_box(Duration::from_micros(250)),
                                    Some(2),
                                    false,
                                );
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|thread| thread.join().expect("a bench thread panicked"))
                    .max()
                    .unwrap_or_default()
            })
        })
    });
}

/// A layer of the same shape as `MetricsLayer` that records nothing: what wrapping a
/// service and its future costs by itself (moving the request and the response one more
/// level), to tell it from what recording costs.
#[derive(Clone)]
struct Passthrough<S>(S);

impl<S: Service<Request<()>>> Service<Request<()>> for Passthrough<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = PassthroughFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<()>) -> Self::Future {
        PassthroughFuture {
            inner: self.0.call(request),
            marker: Some(black_box(0u64)),
        }
    }
}

pin_project_lite::pin_project! {
    struct PassthroughFuture<F> {
        #[pin]
        inner: F,
        marker: Option<u64>,
    }
}

impl<F: Future> Future for PassthroughFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        black_box(this.marker.take());
        Poll::Ready(output)
    }
}

#[derive(Clone, Copy)]
enum Variant {
    Baseline,
    Passthrough,
    Layer(LatencySampling),
}

const VARIANTS: [(&str, Variant); 5] = [
    ("baseline", Variant::Baseline),
    ("passthrough_layer", Variant::Passthrough),
    ("timed_all", Variant::Layer(LatencySampling::All)),
    ("timed_1_in_16", Variant::Layer(LatencySampling::OneIn(16))),
    ("timed_1_in_64", Variant::Layer(LatencySampling::OneIn(64))),
];

fn layer_1_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer_1_thread");
    for (name, variant) in VARIANTS {
        group.bench_function(name, |b| match variant {
            Variant::Baseline => b.iter_custom(|iters| calls(trivial_service(), iters)),
            Variant::Passthrough => {
                b.iter_custom(|iters| calls(Passthrough(trivial_service()), iters))
            }
            Variant::Layer(sampling) => {
                let service = layered(sampling);
                b.iter_custom(|iters| calls(service.clone(), iters))
            }
        });
    }
    group.finish();
}

fn layer_2_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer_2_threads");
    for (name, variant) in VARIANTS {
        group.bench_function(name, |b| match variant {
            Variant::Baseline => {
                b.iter_custom(|iters| calls_on_two_threads(trivial_service(), iters))
            }
            Variant::Passthrough => {
                b.iter_custom(|iters| calls_on_two_threads(Passthrough(trivial_service()), iters))
            }
            Variant::Layer(sampling) => {
                let service = layered(sampling);
                b.iter_custom(|iters| calls_on_two_threads(service.clone(), iters))
            }
        });
    }
    group.finish();
}

/// `prebuilt_1_thread/{baseline,timed_all}`: the layer over [`prebuilt_service`].
fn prebuilt_1_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("prebuilt_1_thread");
    group.bench_function("baseline", |b| {
        b.iter_custom(|iters| calls(prebuilt_service(), iters))
    });
    let layered = MetricsLayer::new(RequestMetrics::with_sampling(LatencySampling::All))
        .layer(prebuilt_service());
    group.bench_function("timed_all", |b| {
        b.iter_custom(|iters| calls(layered.clone(), iters))
    });
    group.finish();
}

criterion_group!(
    benches,
    record,
    layer_1_thread,
    layer_2_threads,
    prebuilt_1_thread
);
criterion_main!(benches);
