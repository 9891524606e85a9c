//! Run with: cargo run --example library_guide
//!
//! The crate documentation's example: an axum service with its own `/` and `/metrics`, a
//! strategy of its own, and the perfpilot agent embedded. Listens on `$LISTEN` (default
//! 127.0.0.1:8080); stops on Ctrl-C or SIGTERM.

use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use perfpilot::{
    async_trait, Agent, ConnectionPeer, ConnectionTracker, Context, MetricsLayer, Outcome,
    RequestMetrics, Signal, Strategy, StrategyError, TrackedListener, TriggerSpec,
};

// jemalloc, so that the built-in `memory-purge` strategy can give freed memory back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The service's own strategy: empties its session store when latency climbs.
#[derive(Debug, Default)]
struct DropSessions {
    sessions: Mutex<Vec<String>>,
}

#[async_trait]
impl Strategy for DropSessions {
    fn name(&self) -> &str {
        "drop-sessions"
    }

    fn description(&self) -> &str {
        "empty the session store"
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = std::mem::take(&mut *sessions).len();
        // Say what changed, measured: it is shown in the run's record.
        Ok(
            Outcome::acted(format!("dropped {dropped} sessions at {}", ctx.level))
                .with("sessions_dropped", dropped),
        )
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests = RequestMetrics::new();
    let connections = ConnectionTracker::new();
    let sessions = Arc::new(DropSessions::default());
    sessions
        .sessions
        .lock()
        .unwrap()
        .push("a session".to_owned());

    let agent = Agent::builder()
        .memory_threshold(0.8) // memory-purge and cache-trim above 80 % of the limit
        .requests(requests.clone()) // latency, throughput, errors, in-flight requests
        .connections(connections.clone()) // open connections; connection-reap closes idle ones
        .strategy(sessions, TriggerSpec::new(Signal::LatencyP99Ms, 250.0))
        .spawn()?; // an invalid configuration is refused here, every problem named

    let app = Router::new()
        .route("/", get(|| async { "hello from the app" }))
        .route("/metrics", get(|| async { "# the app's own metrics\n" }))
        .merge(agent.router()) // the agent's API, its dashboard under /perfpilot/
        .layer(MetricsLayer::new(requests)); // last, so that it sees every request

    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let stopping = agent.shutdown_token();
    axum::serve(
        TrackedListener::new(listener, connections),
        // Each client's address, so that the rate limit tells clients apart.
        app.into_make_service_with_connect_info::<ConnectionPeer>(),
    )
    .with_graceful_shutdown(async move {
        stop_signal().await;
        stopping.cancel(); // ends the agent's event streams, so that the server can drain
    })
    .await?;
    agent.shutdown().await; // a running optimization finishes; the recording is written
    Ok(())
}

/// Ctrl-C or SIGTERM, whichever comes first.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
