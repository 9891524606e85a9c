//! [`Agent`]: the engine, its strategies, its sampler and its routes, wired from a [`Config`].

use std::fmt;
use std::sync::Arc;

use axum::Router;
use perfpilot_strategies::{
    IntervalControl, Reap, Registered, Registry, Strategy, TriggerSpec, Trim,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiSettings};
use crate::config::Config;
use crate::engine::{self, EngineHandle, EngineSettings, SignalSource};
use crate::sample::{Sampler, SamplerSettings};

impl SignalSource for Sampler {
    fn sample(&mut self) -> perfpilot_strategies::Snapshot {
        Sampler::sample(self)
    }
}

/// The perfpilot agent. Start one with [`Agent::builder`].
///
/// ```no_run
/// # async fn demo() {
/// use perfpilot::Agent;
///
/// let agent = Agent::builder().spawn();
/// let app = axum::Router::new().merge(agent.router());
/// # let _ = app;
/// agent.shutdown().await;
/// # }
/// ```
pub struct Agent {
    engine: EngineHandle,
    router: Router,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
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
            source: None,
        }
    }

    /// The handle to the engine: optimize, view, subscribe.
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// The agent's HTTP routes, to serve alone or merge into a host's axum app.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Stops sampling, lets a running optimization finish, and waits for the engine to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Configures an [`Agent`].
pub struct AgentBuilder {
    config: Config,
    strategies: Vec<Registered>,
    registry: Registry,
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

    /// Starts the engine task. Must be called inside a tokio runtime.
    pub fn spawn(self) -> Agent {
        let config = self.config;
        let mut strategies = config.strategies.build();
        strategies.extend(self.strategies);
        let source = self.source.unwrap_or_else(|| {
            Box::new(Sampler::new(SamplerSettings {
                memory_budget: config.memory_budget,
            }))
        });
        let shutdown = CancellationToken::new();
        let (engine, task) = engine::spawn(
            EngineSettings {
                enabled: config.enabled,
                interval: IntervalControl::new(config.interval, config.max_interval),
                dry_run: config.dry_run,
                history_size: config.history_size,
                strategy_timeout: config.strategy_timeout,
                post_action_delay: config.post_action_delay,
            },
            strategies,
            Arc::new(self.registry),
            source,
            shutdown.clone(),
        );
        let worker_id = match &config.worker_id {
            Some(id) => Value::from(id.clone()),
            None => Value::from(std::process::id()),
        };
        let router = api::router(
            engine.clone(),
            ApiSettings {
                worker_id,
                token: config.api.token.clone(),
                max_event_clients: ApiSettings::DEFAULT_MAX_EVENT_CLIENTS,
            },
        );
        Agent {
            engine,
            router,
            shutdown,
            task,
        }
    }
}
