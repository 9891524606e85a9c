//! [`Agent`]: the engine, its strategies, its sampler and its routes, wired from a [`Config`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use perfpilot_strategies::{Reap, Registered, Registry, Snapshot, Strategy, TriggerSpec, Trim};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::server::{self, ServerLimits};
use crate::api::{self, ApiSettings};
use crate::config::{Config, ConfigError, Problem};
use crate::connections::ConnectionTracker;
use crate::engine::{self, EngineHandle, OptimizeError, SignalSource};
use crate::events::Event;
use crate::history::OptimizationRecord;
use crate::layer::RequestMetrics;
use crate::probe::{Probe, ProbeWindow};
use crate::prometheus::Telemetry;
use crate::recorder::Recorder;
use crate::reload::{ConfigSource, ReloadError, ReloadReport, Reloader};
use crate::sample::{self, FastWatch, Sampler, SamplerSettings, WatchSpec, WatchedBudget};
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

/// The perfpilot agent. Start one with [`Agent::builder`] (or [`Agent::with_config`]); the
/// [crate documentation](crate) has a whole service built with it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use perfpilot::{Agent, ConnectionPeer, ConnectionTracker, MetricsLayer, RequestMetrics, TrackedListener};
///
/// let tracker = ConnectionTracker::new();
/// let requests = RequestMetrics::new();
/// let agent = Agent::builder()
///     .memory_threshold(0.75)
///     .requests(requests.clone()) // latency, throughput, errors, in-flight
///     .connections(tracker.clone()) // open_connections signal + connection-reap
///     .spawn()?;
/// let app = axum::Router::new()
///     .route("/ping", axum::routing::get(|| async { "pong" }))
///     .merge(agent.router()) // /performance-metrics, ..., and /perfpilot/ (dashboard, /metrics)
///     .layer(MetricsLayer::new(requests)); // last: every request, 404s too
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let app = app.into_make_service_with_connect_info::<ConnectionPeer>(); // per-client rate limit
/// axum::serve(TrackedListener::new(listener, tracker), app).await?;
/// agent.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Agent {
    engine: EngineHandle,
    router: Router,
    /// The bounds of [`Agent::serve`]'s listener.
    limits: ServerLimits,
    /// Whether [`Agent::serve`] may listen on a non-loopback address: `api.token` is set or
    /// `api.insecure`.
    public_ok: bool,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    probe_task: Option<tokio::task::JoinHandle<()>>,
    reloader: Arc<Reloader>,
    recorder: Recorder,
    /// With `state_dir`: what stops the learned state's writer (after the engine ended, so
    /// its last write has the last verdicts), and the writer.
    learned_saver: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The fast watch's threads, stopped when the agent is dropped.
    _fast_watch: Option<FastWatch>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl Agent {
    /// A builder on the built-in default configuration.
    pub fn builder() -> AgentBuilder {
        Agent::with_config(Config::default())
    }

    /// A builder on `config`, e.g. one read by [`crate::config::load`] as `perfpilot run`
    /// reads it; the builder's own settings ([`AgentBuilder::interval`], ...) change it.
    pub fn with_config(config: Config) -> AgentBuilder {
        AgentBuilder {
            config,
            strategies: Vec::new(),
            registry: Registry::default(),
            requests: None,
            connections: None,
            source: None,
            config_source: None,
        }
    }

    /// Re-reads the configuration file and applies it without a restart; `reason` is shown as
    /// `config.reason` in `/performance-metrics`. An agent built with a
    /// [`Config`] and no [`AgentBuilder::config_source`] answers [`ReloadError::NoSource`];
    /// use [`Agent::reconfigure`].
    pub async fn reload(&self, reason: &str) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload(reason).await
    }

    /// Applies a new configuration without a restart, as a reload of the file would.
    pub async fn reconfigure(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        self.reloader.apply(config, "builder").await
    }

    /// The agent's reloader: SIGHUP for the binary.
    pub(crate) fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
    }

    /// The handle to the engine: its published view, for tests and benchmarks.
    pub(crate) fn engine(&self) -> &EngineHandle {
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

    /// Where [`Agent::router`] puts every route, the dashboard and `/metrics` included:
    /// `/perfpilot`.
    pub const BASE_PATH: &'static str = api::BASE_PATH;

    /// The agent's HTTP routes, to merge into a host's axum app: the API at the root
    /// (`/performance-metrics`, `/performance-optimize`, `/health`, `/events`,
    /// `/openapi.json`, `/config/reload`), and every route under [`Agent::BASE_PATH`]: the
    /// dashboard at `/perfpilot/`, Prometheus at `/perfpilot/metrics`. It has no fallback and
    /// no `/` or `/metrics` at the root, so it merges into an app that has its own.
    /// [`Agent::router_under`] puts nothing at the root; [`Agent::standalone_router`] puts
    /// everything there.
    pub fn router(&self) -> Router {
        api::embeddable(self.router.clone(), api::BASE_PATH)
    }

    /// Every route under `base` only (e.g. `"/agent"`: the dashboard at `/agent/`, the API
    /// at `/agent/performance-metrics`...), for a host app that has a `/health` or `/events`
    /// of its own. `base` starts with `/` and does not end with one.
    pub fn router_under(&self, base: &str) -> Router {
        api::nested(self.router.clone(), base)
    }

    /// Every route at the root, with a JSON 404 fallback: what `perfpilot run` serves.
    pub fn standalone_router(&self) -> Router {
        self.router.clone()
    }

    /// The agent's shutdown token. Cancelling it starts stopping without waiting: sampling
    /// stops (a running optimization finishes) and `GET /events` streams end, so an HTTP
    /// server serving [`Agent::router`] can drain. [`Agent::shutdown`] cancels it too.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops sampling and probing, lets a running optimization finish, and waits for the
    /// engine to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        if let Some(probe) = self.probe_task {
            let _ = probe.await;
        }
        close_recording(&self.recorder, true).await;
        save_learned(self.learned_saver).await;
    }

    /// Like [`Agent::shutdown`], waiting at most `grace` for a running optimization; after
    /// that it is abandoned (its strategy task is left to the runtime's end). Returns whether
    /// the engine finished in time.
    pub async fn shutdown_within(mut self, grace: Duration) -> bool {
        self.shutdown.cancel();
        let finished = tokio::time::timeout(grace, &mut self.task).await;
        close_recording(&self.recorder, finished.is_ok()).await;
        save_learned(self.learned_saver.take()).await;
        match finished {
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

    /// Serves every route at the root ([`Agent::standalone_router`]) on `listener` (with each
    /// client's address, for the rate limit) until `stop` resolves; then stops accepting connections, ends event streams, and
    /// lets requests in flight and a running optimization finish, for at most `grace` in
    /// all. Returns whether everything finished within `grace`; an error only if the server
    /// failed before `stop`.
    ///
    /// `perfpilot run` calls this with SIGTERM/SIGINT as `stop` and `shutdown_grace` as
    /// `grace`.
    ///
    /// The listener is bounded by `api.max_connections`, `api.header_read_timeout` and
    /// `api.idle_timeout`. A listener on a non-loopback address
    /// without `api.token` (and without `api.insecure`) is refused with
    /// [`std::io::ErrorKind::InvalidInput`], as `perfpilot run` refuses it.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<bool> {
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() && !self.public_ok {
            self.shutdown().await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "api.listen = {local}: a non-loopback address needs api.token (or api.insecure = true, --insecure)"
                ),
            ));
        }
        let stopping = CancellationToken::new();
        let server = server::serve(
            listener,
            self.standalone_router(),
            self.limits,
            stopping.clone(),
        );
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
    config_source: Option<ConfigSource>,
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
    /// Where [`Agent::reload`] (SIGHUP, `POST /config/reload`, a watched file) re-reads the
    /// configuration; give [`Agent::with_config`] what it loads now.
    pub fn config_source(mut self, source: ConfigSource) -> Self {
        self.config_source = Some(source);
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
        let builtins = perfpilot_strategies::builtins::BUILTINS.iter();
        for builtin in builtins.filter(|b| b.legacy_threshold == Some("MEMORY_THRESHOLD")) {
            let trigger = (builtin.trigger_mut)(&mut self.config.strategies);
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

    /// Samples from this source instead of the process sampler (tests, simulations, replays).
    pub fn signal_source(mut self, source: impl SignalSource) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Validates the configuration as `perfpilot run` does (every problem at once, each
    /// naming its key, e.g. a non-loopback `api.listen` without `api.token`), then starts the
    /// engine task, and the latency probe's when `probe.url` is set. Must be called inside a
    /// tokio runtime.
    ///
    /// Without a [`signal_source`](AgentBuilder::signal_source), the sampler watches the
    /// configured `[target]` (sidecar mode) or else this process.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut config = perfpilot::Config::default();
    /// config.api.listen = "0.0.0.0:9750".parse().unwrap();
    /// let refused = perfpilot::Agent::with_config(config).spawn().unwrap_err();
    /// assert!(refused.to_string().contains("api.listen = 0.0.0.0:9750: a non-loopback address needs api.token"));
    /// # }
    /// ```
    pub fn spawn(self) -> Result<Agent, ConfigError> {
        let problems = problems(&self.config);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(self.start())
    }

    /// [`AgentBuilder::spawn`] on a valid configuration.
    fn start(self) -> Agent {
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
        let builder_strategies = self.strategies;
        strategies.extend(builder_strategies.iter().cloned());
        let strategy_count = strategies.len();
        let watch_specs = watch_specs(&strategies, &config.budgets);
        let mut target = None;
        let mut fast_watch = None;
        let mut source = self.source.unwrap_or_else(|| {
            let settings = SamplerSettings {
                memory_budget: config.memory_budget,
            };
            let sampler = match config.target.selected() {
                Some(selected) => Sampler::for_target(settings, selected),
                None => Sampler::new(settings),
            };
            target = sampler.target();
            fast_watch = FastWatch::start(watch_specs, sampler.probe_slot());
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
        let shutdown = CancellationToken::new();
        let worker = WorkerIdentity::new(config.worker_id.as_deref());
        let learned = config.state_dir.as_deref().and_then(|dir| {
            crate::learned::load(
                dir,
                std::time::SystemTime::now(),
                config.tuning.forget_after,
            )
        });
        let (engine, task) = engine::spawn(
            {
                let mut settings = crate::reload::engine_settings(
                    &config,
                    target.clone(),
                    worker.label().to_owned(),
                );
                settings.watch = fast_watch.as_ref().map(FastWatch::handle);
                settings.learned = learned.clone().map(Arc::new);
                settings
            },
            strategies,
            Arc::new(self.registry),
            source,
            shutdown.clone(),
        );
        // The metrics follow what the engine publishes; the engine does not know them.
        let telemetry = Telemetry::follow(worker.label(), engine.watch(), engine.subscribe());
        let reloader = Arc::new(Reloader::new(
            engine.clone(),
            Arc::clone(&telemetry),
            config.clone(),
            self.config_source,
            builder_strategies,
            target.clone(),
            worker.label().to_owned(),
        ));
        // Ends with the shutdown token; nothing to wait for.
        drop(reloader.spawn_watch(shutdown.clone()));
        let recorder = Recorder::open(&config.recorder, config.state_dir.as_deref())
            .follow(&engine, Some(Arc::clone(&reloader)));
        // After the recorder: it creates state_dir (0700).
        let learned_saver = config.state_dir.clone().map(|dir| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(crate::recorder::keep_learned::keep_saving(
                engine.clone(),
                dir,
                config.tuning.forget_after,
                learned,
                stop.clone(),
            ));
            (stop, task)
        });
        let router = api::router(
            engine.clone(),
            ApiSettings {
                token: config.api.token.clone(),
                read_token: config.api.read_token.clone(),
                allowed_hosts: config.api.allowed_hosts.clone(),
                allowed_origins: config.api.allowed_origins.clone(),
                target: target.clone(),
                rate_limit: config.api.rate_limit,
                request_timeout: config.api.request_timeout,
                optimize_timeout: ApiSettings::optimize_timeout_for(
                    config.strategy_timeout,
                    strategy_count,
                ),
                reloader: Some(Arc::clone(&reloader)),
                telemetry: Some(telemetry),
                recorder: Some(recorder.clone()),
                ..ApiSettings::new(worker.json())
            },
        );
        let probe_task = probe.map(|probe| probe.spawn(shutdown.clone()));
        Agent {
            engine,
            router,
            limits: ServerLimits {
                max_connections: config.api.max_connections,
                header_read_timeout: config.api.header_read_timeout,
                idle_timeout: config.api.idle_timeout,
            },
            public_ok: config.api.token.is_some() || config.api.insecure,
            shutdown,
            task,
            probe_task,
            reloader,
            recorder,
            learned_saver,
            _fast_watch: fast_watch,
        }
    }
}

/// The longest the agent waits at shutdown for the recording's last segment to be written.
const CLOSE_RECORDING: Duration = Duration::from_secs(2);

/// Writes the recording's open block to `state_dir` (when there is one), waiting at most
/// [`CLOSE_RECORDING`]; when the engine ended (`engine_ended`), after the recorder took its
/// last events (at most [`CLOSE_RECORDING`] more).
async fn close_recording(recorder: &Recorder, engine_ended: bool) {
    // The engine's last events (the runs its shutdown let finish) reach the recording
    // through the follower task: let it record them first.
    if engine_ended && !recorder.followed(CLOSE_RECORDING).await {
        warn!("the recorder did not take the engine's last events before the agent stopped");
    }
    let recorder = recorder.clone();
    let written = tokio::task::spawn_blocking(move || recorder.close(CLOSE_RECORDING)).await;
    if !matches!(written, Ok(true)) {
        warn!("the recording's last segment was not written before the agent stopped");
    }
}

/// Stops the learned state's writer after its last write, waiting at most
/// [`CLOSE_RECORDING`].
async fn save_learned(saver: Option<(CancellationToken, tokio::task::JoinHandle<()>)>) {
    let Some((stop, task)) = saver else {
        return;
    };
    stop.cancel();
    if tokio::time::timeout(CLOSE_RECORDING, task).await.is_err() {
        warn!("the learned state was not written before the agent stopped");
    }
}

/// The fast watch's specs: every trigger with a `watch_interval` (its `above` and
/// `critical`), and every budget whose signal the watch can read (its `goal` and `limit`):
/// at its `watch_interval`, or without one at the cadence from the signal where the read is
/// polled (memory; a PSI signal is watched by a kernel trigger only when asked for).
pub(crate) fn watch_specs(
    strategies: &[Registered],
    budgets: &std::collections::BTreeMap<String, crate::budget::BudgetConfig>,
) -> Vec<WatchSpec> {
    use perfpilot_strategies::signals::WatchRead;
    let triggers = strategies.iter().filter_map(|registered| {
        let trigger = &registered.trigger;
        Some(WatchSpec {
            signal: trigger.signal,
            thresholds: std::iter::once(trigger.above)
                .chain(trigger.critical)
                .collect(),
            interval: Some(trigger.watch_interval?),
            budgets: Vec::new(),
        })
    });
    let budgets = budgets.iter().filter_map(|(name, budget)| {
        let self_armed = match budget.signal.row().watch? {
            WatchRead::CgroupUsage | WatchRead::Statm => true,
            WatchRead::PsiTrigger => false,
        };
        if budget.watch_interval.is_none() && !self_armed {
            return None;
        }
        Some(WatchSpec {
            signal: budget.signal,
            thresholds: vec![budget.goal, budget.limit],
            interval: budget.watch_interval,
            budgets: vec![WatchedBudget {
                name: name.clone(),
                limit: budget.limit,
            }],
        })
    });
    triggers.chain(budgets).collect()
}

/// Every problem of `config`: its own ([`Config::validate`]) and what it says about this host
/// ([`sample::host_problems`]).
fn problems(config: &Config) -> Vec<Problem> {
    let mut problems = config.validate().err().unwrap_or_default();
    problems.extend(sample::host_problems(config));
    problems
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use perfpilot_strategies::Signal;

    use super::watch_specs;
    use crate::budget::BudgetConfig;

    /// A budget with `watch_interval` is watched at it; a memory budget without one at the
    /// cadence from the signal; a budget whose signal has no fast-watch read, and a PSI
    /// budget that did not ask, are not watched.
    #[test]
    fn budgets_are_watched_at_their_watch_interval_or_at_the_cadence_from_the_signal() {
        let mut watched = BudgetConfig::new(Signal::MemoryUsage, 0.8, 0.95, &["purge"]);
        watched.watch_interval = Some(Duration::from_millis(20));
        let self_armed = BudgetConfig::new(Signal::RssBytes, 7e8, 9e8, &["purge"]);
        let budgets = BTreeMap::from([
            ("memory".to_owned(), watched),
            ("rss".to_owned(), self_armed),
            (
                "cpu".to_owned(),
                BudgetConfig::new(Signal::CpuUsage, 0.7, 0.9, &["purge"]),
            ),
            (
                "psi".to_owned(),
                BudgetConfig::new(Signal::MemoryPressureSome, 0.1, 0.2, &["purge"]),
            ),
        ]);
        let specs = watch_specs(&[], &budgets);
        assert_eq!(specs.len(), 2, "{specs:?}");
        assert_eq!(specs[0].signal, Signal::MemoryUsage);
        assert_eq!(specs[0].thresholds, [0.8, 0.95]);
        assert_eq!(specs[0].interval, Some(Duration::from_millis(20)));
        assert_eq!(specs[0].budgets[0].name, "memory");
        assert_eq!(specs[1].signal, Signal::RssBytes);
        assert_eq!(specs[1].interval, None, "the cadence from the signal");
        assert_eq!(specs[1].budgets[0].limit, 9e8);
    }
}
