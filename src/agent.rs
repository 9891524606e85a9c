//! [`Agent`]: the engine, its strategies, its sampler and its routes, wired from a [`Config`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use perfpilot_strategies::{
    IntervalControl, Reap, Registered, Registry, Snapshot, Strategy, TriggerSpec, Trim,
};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::adaptive_sampling::AdaptiveSampling;
use crate::api::{self, ApiSettings};
use crate::config::Config;
use crate::connections::ConnectionTracker;
use crate::engine::{self, EngineHandle, EngineSettings, OptimizeError, SignalSource};
use crate::events::Event;
use crate::history::OptimizationRecord;
use crate::layer::RequestMetrics;
use crate::probe::{Probe, ProbeWindow};
use crate::sample::{Sampler, SamplerSettings, TargetHandle};
use crate::worker::WorkerIdentity;

impl SignalSource for Sampler {
    fn sample(&mut self) -> Snapshot {
        Sampler::sample(self)
    }
}

/// The process sampler plus the service's own sources: its requests (through
/// [`MetricsLayer`](crate::layer::MetricsLayer)) and its tracked connections.
struct ServiceSource {
    sampler: Sampler,
    requests: Option<RequestMetrics>,
    connections: Option<ConnectionTracker>,
}

impl SignalSource for ServiceSource {
    fn sample(&mut self) -> Snapshot {
        let mut snapshot = self.sampler.sample();
        if let Some(requests) = &self.requests {
            requests.fill(&mut snapshot);
        }
        if let Some(connections) = &self.connections {
            snapshot.open_connections = Some(connections.open_connections());
        }
        snapshot
    }
}

/// A source whose snapshots the latency probe completes (`latency`, `error_rate`).
struct Probed {
    source: Box<dyn SignalSource>,
    window: Arc<ProbeWindow>,
}

impl SignalSource for Probed {
    fn sample(&mut self) -> Snapshot {
        let mut snapshot = self.source.sample();
        self.window.fill(&mut snapshot);
        snapshot
    }
}

/// The perfpilot agent. Start one with [`Agent::builder`].
///
/// Embedded in an axum service, in a dozen lines:
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use perfpilot::connections::{ConnectionTracker, TrackedListener};
/// use perfpilot::layer::{MetricsLayer, RequestMetrics};
/// use perfpilot::Agent;
///
/// let tracker = ConnectionTracker::new();
/// let requests = RequestMetrics::new();
/// let agent = Agent::builder()
///     .memory_threshold(0.75)
///     .requests(requests.clone()) // latency, throughput, errors, in-flight
///     .connections(tracker.clone()) // open_connections signal + connection-reap
///     .spawn();
/// let app = axum::Router::new()
///     .route("/ping", axum::routing::get(|| async { "pong" }))
///     .layer(MetricsLayer::new(requests))
///     .merge(agent.router()); // /performance-metrics, /performance-optimize, ...
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// axum::serve(TrackedListener::new(listener, tracker), app).await?;
/// agent.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Agent {
    engine: EngineHandle,
    router: Router,
    target: Option<TargetHandle>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    probe_task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl Agent {
    /// A builder on the built-in default configuration.
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            config: Config::default(),
            strategies: Vec::new(),
            registry: Registry::default(),
            requests: None,
            connections: None,
            source: None,
        }
    }

    /// The handle to the engine: optimize, view, subscribe.
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// Runs one strategy (by name or alias) or, with `None`, every strategy, now.
    pub async fn optimize(
        &self,
        strategy: Option<&str>,
    ) -> Result<Vec<Arc<OptimizationRecord>>, OptimizeError> {
        self.engine.optimize(strategy).await
    }

    /// The latest sample.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.engine.view().snapshot)
    }

    /// `metrics-updated` and `optimization-completed` events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.engine.subscribe()
    }

    /// The agent's HTTP routes, to serve alone or merge into a host's axum app.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The agent's shutdown token. Cancelling it starts stopping without waiting: sampling
    /// stops (a running optimization finishes) and `GET /events` streams end, so an HTTP
    /// server serving [`Agent::router`] can drain. [`Agent::shutdown`] cancels it too.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The sidecar target's status and pids, when the agent watches a target
    /// (`[target]` in the config).
    pub fn target(&self) -> Option<&TargetHandle> {
        self.target.as_ref()
    }

    /// Stops sampling and probing, lets a running optimization finish, and waits for the
    /// engine to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        if let Some(probe) = self.probe_task {
            let _ = probe.await;
        }
    }

    /// Like [`Agent::shutdown`], waiting at most `grace` for a running optimization; after
    /// that it is abandoned (its strategy task is left to the runtime's end). Returns whether
    /// the engine finished in time.
    pub async fn shutdown_within(mut self, grace: Duration) -> bool {
        self.shutdown.cancel();
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(_) => true,
            Err(_) => {
                warn!(
                    grace_ms = grace.as_millis() as u64,
                    "shutdown grace period over: abandoning the running optimization"
                );
                self.task.abort();
                false
            }
        }
    }

    /// Serves the agent's routes on `listener` (with each client's address, for the rate
    /// limit) until `stop` resolves; then stops accepting connections, ends event streams, and
    /// lets requests in flight and a running optimization finish, for at most `grace` in
    /// all. Returns whether everything finished within `grace`; an error only if the server
    /// failed before `stop`.
    ///
    /// `perfpilot run` calls this with SIGTERM/SIGINT as `stop` and `shutdown_grace` as
    /// `grace`.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<bool> {
        let stopping = CancellationToken::new();
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(stopping.clone().cancelled_owned())
            .into_future();
        let mut server = tokio::spawn(server);
        tokio::select! {
            _ = stop => {}
            ended = &mut server => {
                self.shutdown().await;
                return match ended {
                    Ok(Ok(())) => Ok(true),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(std::io::Error::other(e)),
                };
            }
        }
        info!(
            grace_ms = grace.as_millis() as u64,
            "stopping: no new connections; letting requests and a running optimization finish"
        );
        stopping.cancel();
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        let server_done = tokio::time::timeout_at(deadline, &mut server).await.is_ok();
        if !server_done {
            warn!("shutdown grace period over: closing the connections still open");
            server.abort();
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let engine_done = self.shutdown_within(remaining).await;
        Ok(server_done && engine_done)
    }
}

/// Configures an [`Agent`].
pub struct AgentBuilder {
    config: Config,
    strategies: Vec<Registered>,
    registry: Registry,
    requests: Option<RequestMetrics>,
    connections: Option<ConnectionTracker>,
    source: Option<Box<dyn SignalSource>>,
}

impl fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("config", &self.config)
            .field("strategies", &self.strategies)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// Uses this configuration (see [`crate::config::load`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Samples every `interval` (see [`Config::interval`]).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self.config.max_interval = self.config.max_interval.max(interval);
        self
    }

    /// Runs `memory-purge` and `cache-trim` when memory usage goes above this share of the
    /// limit (the source documents' `MEMORY_THRESHOLD`); CRITICAL is raised to it if lower.
    pub fn memory_threshold(mut self, above: f64) -> Self {
        for trigger in [
            &mut self.config.strategies.memory_purge.trigger,
            &mut self.config.strategies.cache_trim.trigger,
        ] {
            trigger.above = above;
            trigger.critical = trigger.critical.map(|critical| critical.max(above));
        }
        self
    }

    /// Measures memory usage against this many bytes when no cgroup limit is tighter.
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.config.memory_budget = Some(bytes);
        self
    }

    /// Evaluates and records what would run, without running it.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.config.dry_run = dry_run;
        self
    }

    /// Reads the service's latency, throughput, error rate and in-flight requests from these
    /// metrics; record them with [`MetricsLayer::new(metrics)`](crate::layer::MetricsLayer)
    /// on the service's router. Only the agent may read their windows.
    pub fn requests(mut self, metrics: RequestMetrics) -> Self {
        self.requests = Some(metrics);
        self
    }

    /// Counts the service's connections (the `open_connections` signal) and lets
    /// `connection-reap` close idle ones: serve through
    /// [`TrackedListener::new(listener, tracker)`](crate::connections::TrackedListener).
    pub fn connections(mut self, tracker: ConnectionTracker) -> Self {
        self.registry
            .pools
            .push(("connections".to_owned(), Arc::new(tracker.clone())));
        self.connections = Some(tracker);
        self
    }

    /// Registers a strategy of your own, run when `trigger` fires.
    pub fn strategy(mut self, strategy: Arc<dyn Strategy>, trigger: TriggerSpec) -> Self {
        self.strategies.push(Registered { strategy, trigger });
        self
    }

    /// Registers a cache for `cache-trim`.
    pub fn cache(mut self, name: impl Into<String>, cache: impl Trim + 'static) -> Self {
        self.registry.caches.push((name.into(), Arc::new(cache)));
        self
    }

    /// Registers a connection pool for `connection-reap`.
    pub fn pool(mut self, name: impl Into<String>, pool: impl Reap + 'static) -> Self {
        self.registry.pools.push((name.into(), Arc::new(pool)));
        self
    }

    /// Samples from this source instead of the process sampler (tests, simulations).
    pub fn signal_source(mut self, source: impl SignalSource) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Starts the engine task, and the latency probe's when `probe.url` is set. Must be
    /// called inside a tokio runtime.
    ///
    /// Without a [`signal_source`](AgentBuilder::signal_source), the sampler watches the
    /// configured `[target]` (sidecar mode) or else this process.
    pub fn spawn(self) -> Agent {
        let config = self.config;
        let mut strategies: Vec<Registered> = config
            .strategies()
            .into_iter()
            .filter_map(|(enabled, registered)| enabled.then_some(registered))
            .collect();
        if config.target.selected().is_some() {
            info!(
                "sidecar mode: memory-purge, cache-trim and connection-reap act inside the agent \
                 and are not registered; act on the target with webhook, signal or command"
            );
        }
        strategies.extend(self.strategies);
        let strategy_count = strategies.len();
        let mut target = None;
        let mut source = self.source.unwrap_or_else(|| {
            let settings = SamplerSettings {
                memory_budget: config.memory_budget,
            };
            let sampler = match config.target.selected() {
                Some(selected) => Sampler::for_target(settings, selected),
                None => Sampler::new(settings),
            };
            target = sampler.target();
            Box::new(ServiceSource {
                sampler,
                requests: self.requests,
                connections: self.connections,
            })
        });
        let probe = config.probe.url.as_deref().and_then(|url| {
            Probe::new(url, config.probe.period, config.probe.timeout)
                .inspect_err(|error| warn!(%error, "latency probe not started"))
                .ok()
        });
        if let Some(probe) = &probe {
            source = Box::new(Probed {
                source,
                window: probe.window(),
            });
        }
        let (min_interval, calm_interval) = config.tuning.adaptive_intervals(config.interval);
        let mut interval = IntervalControl::new(config.interval, config.max_interval);
        let adaptive_sampling = config.tuning.adaptive_sampling.then(|| {
            interval = interval.clone().with_min(min_interval);
            AdaptiveSampling::new(min_interval, calm_interval)
        });
        let shutdown = CancellationToken::new();
        let worker = WorkerIdentity::new(config.worker_id.as_deref());
        let (engine, task) = engine::spawn(
            EngineSettings {
                enabled: config.enabled,
                interval,
                dry_run: config.dry_run,
                history_size: config.history_size,
                strategy_timeout: config.strategy_timeout,
                post_action_delay: config.post_action_delay,
                target: target.clone(),
                backoff_after_failures: config.backoff_after_failures,
                max_backoff: config.max_backoff,
                settle: config.tuning.settle,
                adaptive_cooldown: config.tuning.adaptive_cooldown,
                max_cooldown: config.tuning.max_cooldown,
                adaptive_sampling,
                worker: worker.label().to_owned(),
                budgets: config
                    .budgets
                    .iter()
                    .map(|(name, budget)| (name.clone(), budget.clone()))
                    .collect(),
                rung_only: config.rung_only(),
            },
            strategies,
            Arc::new(self.registry),
            source,
            shutdown.clone(),
        );
        let router = api::router(
            engine.clone(),
            ApiSettings {
                token: config.api.token.clone(),
                target: target.clone(),
                rate_limit: config.api.rate_limit,
                request_timeout: config.api.request_timeout,
                optimize_timeout: ApiSettings::optimize_timeout_for(
                    config.strategy_timeout,
                    strategy_count,
                ),
                ..ApiSettings::new(worker.json())
            },
        );
        let probe_task = probe.map(|probe| probe.spawn(shutdown.clone()));
        Agent {
            engine,
            router,
            target,
            shutdown,
            task,
            probe_task,
        }
    }
}
