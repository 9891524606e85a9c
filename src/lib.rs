//! perfpilot keeps a service inside its memory, CPU, connection and latency budgets without a
//! person watching: it samples the process every interval, runs the strategies whose triggers
//! fired (or climbs a budget's ladder of them), records what each run changed, and serves it
//! all over HTTP: a JSON API, Prometheus `/metrics`, Server-Sent Events and a live dashboard.
//!
//! This crate is the agent as a library, for a Rust service that embeds it; the `perfpilot`
//! binary is the same agent as a sidecar for a service in any language (see the README).
//!
//! # Cargo.toml
//!
//! ```toml
//! [dependencies]
//! perfpilot = "0.1"
//! axum = "0.8"
//! tokio = { version = "1", features = ["full"] }
//! # Only for the built-in `memory-purge` strategy (see "The allocator" below).
//! tikv-jemallocator = "0.7"
//! ```
//!
//! One dependency is enough: the strategy vocabulary of the `perfpilot-strategies` crate
//! ([`Strategy`], [`Outcome`], [`Context`], [`TriggerSpec`], [`Signal`], [`Snapshot`], the
//! [`Trim`] and [`Reap`] traits and the [`async_trait`] attribute) is re-exported here, and
//! the whole crate as [`strategies`].
//!
//! # A service with the agent embedded
//!
//! The service below has routes of its own (`/` and its own `/metrics`), a strategy of its own
//! (`drop-sessions`), the latency layer on every route, its connections tracked, and the
//! agent's routes merged in. It stops on Ctrl-C or SIGTERM. It is compiled as this crate's
//! doctest, and CI builds and runs it as a new crate.
//!
//! ```no_run
#![doc = include_str!("../examples/library_guide.rs")]
//! ```
//!
//! Try it: `curl localhost:8080/`, `curl localhost:8080/performance-metrics`,
//! `curl -X POST localhost:8080/performance-optimize -d '{"strategy":"drop-sessions"}'`, and
//! the dashboard at <http://localhost:8080/perfpilot/>.
//!
//! # Mounting the routes
//!
//! [`Agent::router`] puts the API at the root (`/performance-metrics`,
//! `/performance-optimize`, `/health`, `/events`, `/openapi.json`, `/config/reload`) and
//! everything else under [`Agent::BASE_PATH`] (`/perfpilot`: the dashboard at `/perfpilot/`,
//! Prometheus at `/perfpilot/metrics`). It has no `/`, no `/metrics` and no fallback, so it
//! merges into an app that has its own. [`Agent::router_under`] puts every route under a path
//! of your choice and nothing at the root; [`Agent::standalone_router`] puts everything at the
//! root, as `perfpilot run` serves it. Prometheus scrapes the agent's series at
//! `/perfpilot/metrics`, beside the app's own `/metrics`.
//!
//! Add [`MetricsLayer`] last, after `merge` and any `fallback`, so that it wraps every route:
//! the agent's, the app's, and the requests no route matches (404s count as requests, not as
//! errors). Its [`RequestMetrics`] go to [`AgentBuilder::requests`]: the latency, throughput,
//! error-rate and in-flight signals come from there.
//!
//! # Rate limiting needs `ConnectionPeer`
//!
//! `POST /performance-optimize` is rate limited per client. The agent tells clients apart by
//! their address, which axum hands over only when the app is served with connect info: through
//! a [`TrackedListener`], `app.into_make_service_with_connect_info::<ConnectionPeer>()` (as in
//! the example); on a plain `TcpListener`,
//! `app.into_make_service_with_connect_info::<std::net::SocketAddr>()`. Served without either,
//! every client shares one rate-limit bucket.
//!
//! # Shutdown
//!
//! [`Agent::shutdown_token`] is a `CancellationToken`: cancelling it stops sampling and ends
//! the `/events` streams, so axum's graceful shutdown can drain. The example cancels it on
//! Ctrl-C or SIGTERM (what Kubernetes and systemd send), waits for axum to drain, then awaits
//! [`Agent::shutdown`], which lets a running optimization finish and writes the recording.
//! [`Agent::shutdown_within`] bounds that wait. [`Agent::serve`] does all of this for the agent
//! served on a listener of its own.
//!
//! # The allocator
//!
//! The built-in `memory-purge` strategy returns freed memory to the system by purging
//! jemalloc's arenas: it acts only in a process whose global allocator is jemalloc, through
//! `tikv-jemallocator` 0.7 as in the example. With another allocator it runs, does nothing and
//! records that it could not act; the other strategies do not care.
//!
//! # Configuration
//!
//! [`Agent::builder`] starts from the built-in defaults; [`Agent::with_config`] from a
//! [`Config`], e.g. one read by [`config::load`] from `perfpilot.toml` and the environment
//! like `perfpilot run` reads it. The builder's own calls ([`AgentBuilder::interval`],
//! [`AgentBuilder::memory_threshold`], ...) change that configuration. [`AgentBuilder::spawn`]
//! refuses an invalid configuration with every problem at once, each naming its key.
//!
//! # Strategies of your own, caches and pools
//!
//! A [`Strategy`] is an object-safe async trait: [`AgentBuilder::strategy`] registers it with
//! the [`TriggerSpec`] that fires it. Its [`Outcome`] says what it changed; a panic or a hang
//! past `strategy_timeout` is recorded as a failed run and the service keeps serving. Caches
//! the built-in `cache-trim` trims implement [`Trim`] (`moka::sync::Cache` does, wrapped in
//! [`WeighedInBytes`] when its weigher counts bytes): register them with
//! [`AgentBuilder::cache`]; pools that `connection-reap` closes implement [`Reap`]:
//! [`AgentBuilder::pool`].
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_code)]

mod agent;
mod api;
mod budget;
#[doc(hidden)]
pub mod cli; // Not API: the `perfpilot` binary's command line (src/main.rs).
pub mod config;
mod connections;
mod engine;
mod events;
mod history;
mod layer;
mod learned;
mod probe;
mod prometheus;
#[doc(hidden)]
pub mod recorder; // Not API: the flight recorder's codec, for examples/replay_bench.rs.
mod reload;
#[doc(hidden)]
pub mod replay; // Not API: `perfpilot replay`'s engine, for tests/replay.rs and its bench.
mod sample;
mod sys;
mod target;
mod trigger;
mod wire_time;
mod worker;

pub use agent::{Agent, AgentBuilder};
pub use config::{Config, ConfigError};
pub use connections::{
    ConnectionInfo, ConnectionPeer, ConnectionTracker, TrackedListener, TrackedStream,
};
pub use engine::{OptimizeError, SignalSource};
pub use events::{Evaluated, Event};
pub use history::OptimizationRecord;
pub use layer::{
    LatencySampling, MetricsLayer, MetricsService, RequestMetrics, ResponseFuture, WindowStats,
};
pub use reload::{ConfigSource, ReloadError, ReloadReport};

/// The `perfpilot-strategies` crate whole: the built-in strategies with their settings, the
/// table of signals, the [`Trim`] and [`Reap`] reports.
pub use perfpilot_strategies as strategies;
// The strategy vocabulary, from the `perfpilot-strategies` crate: no second dependency needed.
pub use perfpilot_strategies::{
    async_trait, Context, Level, Outcome, Reap, RunKind, Signal, Snapshot, Strategy, StrategyError,
    TriggerSpec, Trim, WeighedInBytes,
};

#[doc(hidden)]
pub mod __internal {
    //! **Not API**: no stability, no documentation, may change in any release. What the
    //! fuzz targets (`fuzz/`), the benchmarks (`benches/`) and the integration tests
    //! (`tests/`) reach below the public surface; with the hidden modules `cli` (the binary's
    //! command line), `recorder` and `replay` (the replay bench and its tests), the only such
    //! paths. A service embedding the agent uses the crate root.

    pub use crate::api::document::MetricsDocument;
    pub use crate::api::parse_optimize_request;
    pub use crate::engine::{EngineHandle, StrategyView, View};
    pub use crate::history::History;
    pub use crate::reload::Reloader;
    pub use crate::sample::{resolve_target_cgroup, Sampler, SamplerSettings};
    pub use crate::target::Target;
    pub use crate::trigger::{trend, TriggerState};

    /// The agent's engine: its published view, for tests and benchmarks that wait on it.
    pub fn engine(agent: &crate::Agent) -> &EngineHandle {
        agent.engine()
    }

    /// The agent's reloader: the configuration's status, for tests.
    pub fn reloader(agent: &crate::Agent) -> std::sync::Arc<Reloader> {
        agent.reloader()
    }
}

/// README.md's library example, compiled (not run) with the crate's doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod test_support;
