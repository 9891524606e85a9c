//! Run with: cargo run --example embedded_axum -- --listen 127.0.0.1:8080
//!
//! An axum service with the agent embedded: a moka cache the agent trims under memory
//! pressure, the latency layer on every route, connections tracked (and reaped when idle),
//! and the agent's routes merged into the service's own router: its API at the root
//! (`/performance-metrics`, `/performance-optimize`, `/health`, `/events`), and everything
//! under `/perfpilot/` (the dashboard there, Prometheus at `/perfpilot/metrics`), so the
//! service keeps `/` and `/metrics` for itself.
//!
//! Try: `curl localhost:8080/items/42`, then `curl localhost:8080/performance-metrics` and
//! open http://localhost:8080/perfpilot/ in a browser. Stops on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use perfpilot::{
    Agent, ConnectionPeer, ConnectionTracker, MetricsLayer, RequestMetrics, TrackedListener,
    WeighedInBytes,
};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An axum service with perfpilot embedded.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Capacity of the item cache, in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mb: u64,
}

/// The service's cache: 64 KiB items by id, weighed in bytes.
type Items = moka::sync::Cache<u64, axum::body::Bytes>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let items: Items = moka::sync::Cache::builder()
        .max_capacity(args.cache_mb * 1024 * 1024)
        .weigher(|_, item: &axum::body::Bytes| u32::try_from(item.len()).unwrap_or(u32::MAX))
        .time_to_idle(Duration::from_secs(300))
        .build();
    let requests = RequestMetrics::new();
    let connections = ConnectionTracker::new();

    let agent = Agent::builder()
        .cache("items", WeighedInBytes(items.clone()))
        .requests(requests.clone())
        .connections(connections.clone())
        .spawn()?;

    let app = Router::new()
        .route("/items/{id}", get(item))
        .route("/ping", get(|| async { "pong" }))
        .with_state(items)
        .merge(agent.router())
        .layer(MetricsLayer::new(requests));

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let stopping = agent.shutdown_token();
    // Each client's address (`ConnectionPeer`), so that the agent's rate limit gives every
    // client a bucket of its own instead of one shared by all.
    let app = app.into_make_service_with_connect_info::<ConnectionPeer>();
    let stop = stop_signal()?;
    axum::serve(TrackedListener::new(listener, connections), app)
        .with_graceful_shutdown(async move {
            stop.await;
            stopping.cancel();
        })
        .await?;
    agent.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, both listened for from now on.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// `GET /items/{id}`: 64 KiB of content, from the cache or made (and cached) on a miss.
async fn item(State(items): State<Items>, Path(id): Path<u64>) -> axum::body::Bytes {
    items.get_with(id, || {
        let byte = (id % 251) as u8;
        axum::body::Bytes::from(vec![byte; 64 * 1024])
    })
}
