//! What one `GET /performance-metrics` allocates on its way through the agent's router, the
//! document already rendered: only what axum's routing and response building do; the access
//! guard and the deadline allocate nothing of their own (SPEC §8's request rate rests on
//! it). Counted by a global allocator that counts the calls made on the test's thread while
//! a request is handled.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures_util::FutureExt;
use perfpilot::config::Config;
use perfpilot::Agent;
use tower::ServiceExt;

/// The system allocator, counting the allocations of threads that asked to be counted.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the thread's locals may be gone while it exits.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = COUNT.try_with(|count| count.set(count.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations on this thread while `work` runs.
fn allocations_in<T>(work: impl FnOnce() -> T) -> (u64, T) {
    COUNT.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    let result = work();
    COUNTING.with(|counting| counting.set(false));
    (COUNT.with(Cell::get), result)
}

/// axum 0.8's share of a routed request, counted with this test: the request's extensions
/// (their map, its growth, the matched path, the URL parameters and the clone of the URI it
/// takes), one clone of the route's boxed service and one boxed future, the handler's boxed
/// future, the boxed response body, the response's header map (two) and its
/// `Content-Length`: 13. The access guard and the deadline add none. As `from_fn`
/// middlewares (each a boxed future and a boxed clone of the rest of the stack, every
/// `layer` call a boxed service that axum clones per request, and the handler cloning the
/// request's headers) the route allocated 41 times per request.
const MOST_ALLOCATIONS_PER_REQUEST: u64 = 13;

#[tokio::test(flavor = "current_thread")]
async fn a_metrics_request_allocates_only_what_axum_routing_does() {
    let agent = Agent::with_config(Config {
        // Long: the view (and so the rendered document) stays the same during the test.
        interval: Duration::from_secs(60),
        ..Config::default()
    })
    .spawn()
    .expect("a valid configuration");
    let router = agent.standalone_router();
    let request = || {
        Request::get("/performance-metrics")
            .header(header::HOST, "127.0.0.1")
            .body(Body::empty())
            .expect("a valid request")
    };
    // The first request renders the document of the latest view.
    let first = router.clone().oneshot(request()).await.expect("infallible");
    assert_eq!(first.status(), StatusCode::OK);
    let mut fewest = u64::MAX;
    for _ in 0..50 {
        let (router, request) = (router.clone(), request());
        // Polled once, on this thread: the cached document makes the route answer at once,
        // and nothing else of the runtime runs in between.
        let (allocations, response) = allocations_in(|| router.oneshot(request).now_or_never());
        let response = response
            .expect("the cached document is answered without waiting")
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        // The least of 50: a sample published meanwhile renders a new document once.
        fewest = fewest.min(allocations);
    }
    println!("GET /performance-metrics: {fewest} allocations per request");
    assert!(
        fewest <= MOST_ALLOCATIONS_PER_REQUEST,
        "GET /performance-metrics allocated {fewest} times per request, more than axum's routing \
         and response ({MOST_ALLOCATIONS_PER_REQUEST}): something on the route allocates per request"
    );
    agent.shutdown().await;
}
