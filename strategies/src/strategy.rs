//! The [`Strategy`] trait, the [`Context`] a run gets, and the [`Outcome`] it reports.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::registry::Registry;
use crate::signals::Signal;
use crate::snapshot::Snapshot;
use crate::trigger::Level;

/// One optimization: something the agent can do to relieve a signal.
///
/// Object safe, so the agent keeps strategies as `Arc<dyn Strategy>`; the agent runs each
/// call in its own task under a timeout and catches panics, so a strategy cannot take the
/// agent down. Report what was actually changed, measured, in the [`Outcome`].
///
/// ```
/// use perfpilot_strategies::async_trait;
/// use perfpilot_strategies::{Context, Outcome, Strategy, StrategyError};
///
/// #[derive(Debug)]
/// struct FlushSessions;
///
/// #[async_trait]
/// impl Strategy for FlushSessions {
///     fn name(&self) -> &str {
///         "flush-sessions"
///     }
///
///     async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
///         let flushed = 3; // flush something real here
///         Ok(Outcome::acted(format!("flushed {flushed} sessions at {}", ctx.level))
///             .with("sessions_flushed", flushed))
///     }
/// }
/// ```
#[async_trait]
pub trait Strategy: Send + Sync + fmt::Debug + 'static {
    /// The name used in config, the API and the CLI (kebab-case, e.g. `memory-purge`).
    fn name(&self) -> &str;

    /// Other names the strategy answers to (the source documents' `memory`, `gc`...).
    fn aliases(&self) -> &[&str] {
        &[]
    }

    /// The name followed by the aliases.
    fn names(&self) -> Vec<&str> {
        std::iter::once(self.name())
            .chain(self.aliases().iter().copied())
            .collect()
    }

    /// Whether `name` is this strategy's name or one of its aliases (ignoring case).
    fn answers_to(&self, name: &str) -> bool {
        self.names()
            .iter()
            .any(|known| known.eq_ignore_ascii_case(name))
    }

    /// One line saying what the strategy does.
    fn description(&self) -> &str {
        ""
    }

    /// Whether the strategy paces sampling under its own signal (`interval-backoff`): while
    /// its trigger is not OK the agent leaves the interval to its verdicts
    /// ([`Outcome::interval`]), and its signal does not make adaptive sampling go faster.
    fn paces_sampling(&self) -> bool {
        false
    }

    /// What kind of strategy it is, for listings: `built-in`, `webhook`, `signal`, `command`;
    /// by default `custom` (a strategy registered in code).
    fn kind(&self) -> &str {
        "custom"
    }

    /// What it acts on, in a few words, for listings (`perfpilot strategies`): the URL it
    /// calls (without credentials), the signal and whom it goes to, the program it runs.
    /// By default empty (unknown).
    fn acts_on(&self) -> String {
        String::new()
    }

    /// Performs the optimization.
    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError>;
}

/// Why a strategy could not do its work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// What the strategy acts on is not available here (e.g. no jemalloc).
    #[error("cannot act: {0}")]
    Unavailable(String),
    /// The strategy tried and failed.
    #[error("{0}")]
    Failed(String),
}

/// What a run changed, measured: a summary and named numbers (bytes released, entries
/// trimmed, connections closed, new interval...).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Outcome {
    /// Whether anything was changed (false: there was nothing to do, which is a success).
    pub acted: bool,
    /// A short human-readable account.
    pub summary: String,
    /// Measured effects by name, e.g. `rss_released_bytes`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub report: Map<String, Value>,
    /// The sampling interval the run asks the agent to use (`interval-backoff`'s verdict);
    /// the agent applies it, within its bounds. Not part of the JSON.
    #[serde(skip)]
    pub interval: Option<Duration>,
}

impl Outcome {
    /// Something was changed.
    pub fn acted(summary: impl Into<String>) -> Self {
        Outcome {
            acted: true,
            summary: summary.into(),
            report: Map::new(),
            interval: None,
        }
    }

    /// Nothing needed doing; a success with zero work.
    pub fn nothing_to_do(summary: impl Into<String>) -> Self {
        Outcome {
            acted: false,
            summary: summary.into(),
            report: Map::new(),
            interval: None,
        }
    }

    /// Asks the agent to sample every `interval` from now on (it is clamped to the agent's
    /// bounds when applied).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Adds one measured effect to the report.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.report.insert(key.to_owned(), value.into());
        self
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunKind {
    /// A trigger fired.
    Automatic,
    /// An operator asked (HTTP or CLI).
    Manual,
}

/// What a strategy run is given: the snapshot that led to it, how loud its signal is, and
/// handles to what it may act on. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Context {
    /// The latest sample.
    pub snapshot: Arc<Snapshot>,
    /// The level of the strategy's trigger signal (WARNING for manual runs unless CRITICAL).
    pub level: Level,
    /// Automatic or manual.
    pub kind: RunKind,
    /// Registered caches and connection pools.
    pub registry: Arc<Registry>,
    /// The agent's sampling interval, which strategies may change.
    pub interval: IntervalControl,
    /// Process ids of the sidecar target (every process of a cgroup target, read when the
    /// strategy runs) the `signal` strategy signals and the `command` strategy names in
    /// `PERFPILOT_TARGET_PID` (the first) and `PERFPILOT_TARGET_PIDS` (all); empty in library
    /// mode and for a bare agent.
    pub targets: Vec<u32>,
    /// Why this run happened and its id, which `webhook` tells the hook in its
    /// `X-Perfpilot-*` headers.
    pub cause: Cause,
}

/// Why a run happened: the signal and its value, the budget rung that ran it, and an id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cause {
    /// Unique per run and the same for every attempt of it (a webhook's retries), so a hook
    /// can tell a retry from a new run: an idempotency key. Empty outside an agent.
    pub run_id: String,
    /// The signal the run is about: its trigger's, or its budget's.
    pub signal: Option<Signal>,
    /// That signal's value when the run was planned (smoothed as its trigger sees it), in the
    /// signal's unit; `None` when it could not be read.
    pub value: Option<f64>,
    /// The budget whose ladder ran it, when it ran as a rung.
    pub budget: Option<String>,
    /// Its rung in that ladder, from 0 (least disruptive), as `budgets[].rung` in
    /// `/performance-metrics`.
    pub rung: Option<usize>,
}

impl Context {
    /// A context outside any agent, for running a strategy by hand and for tests: an empty
    /// snapshot taken now, WARNING, a manual run, nothing registered, a fixed 1 s interval,
    /// no targets, no cause. Override fields with struct update syntax:
    /// `Context { targets: vec![pid], ..Context::standalone() }`.
    pub fn standalone() -> Self {
        Context {
            snapshot: Arc::new(Snapshot::empty(std::time::SystemTime::now())),
            level: Level::Warning,
            kind: RunKind::Manual,
            registry: Arc::new(Registry::default()),
            interval: IntervalControl::new(Duration::from_secs(1), Duration::from_secs(1)),
            targets: Vec::new(),
            cause: Cause::default(),
        }
    }
}

/// The agent's sampling interval: a shared, lock-free cell between a minimum (the base,
/// unless adaptive sampling lowers it, see [`IntervalControl::with_min`]) and a maximum.
#[derive(Debug, Clone)]
pub struct IntervalControl {
    inner: Arc<IntervalInner>,
}

#[derive(Debug)]
struct IntervalInner {
    current_ms: AtomicU64,
    min_ms: u64,
    base_ms: u64,
    max_ms: u64,
}

impl IntervalControl {
    /// An interval that starts at `base` and may grow up to `max` (at least `base`).
    pub fn new(base: Duration, max: Duration) -> Self {
        let base_ms = (base.as_millis() as u64).max(1);
        IntervalControl {
            inner: Arc::new(IntervalInner {
                current_ms: AtomicU64::new(base_ms),
                min_ms: base_ms,
                base_ms,
                max_ms: (max.as_millis() as u64).max(base_ms),
            }),
        }
    }

    /// The same interval, allowed down to `min` (at most the base): adaptive sampling goes
    /// there while a signal is close to its threshold.
    pub fn with_min(self, min: Duration) -> Self {
        let base_ms = self.inner.base_ms;
        IntervalControl {
            inner: Arc::new(IntervalInner {
                current_ms: AtomicU64::new(self.inner.current_ms.load(Ordering::Relaxed)),
                min_ms: (min.as_millis() as u64).clamp(1, base_ms),
                base_ms,
                max_ms: self.inner.max_ms,
            }),
        }
    }

    /// The smallest interval allowed.
    pub fn min(&self) -> Duration {
        Duration::from_millis(self.inner.min_ms)
    }

    /// The interval in force.
    pub fn current(&self) -> Duration {
        Duration::from_millis(self.inner.current_ms.load(Ordering::Relaxed))
    }

    /// The configured interval.
    pub fn base(&self) -> Duration {
        Duration::from_millis(self.inner.base_ms)
    }

    /// The largest interval allowed.
    pub fn max(&self) -> Duration {
        Duration::from_millis(self.inner.max_ms)
    }

    /// `interval` clamped to `[min, max]`, without setting it.
    pub fn clamp(&self, interval: Duration) -> Duration {
        let ms = (interval.as_millis() as u64).clamp(self.inner.min_ms, self.inner.max_ms);
        Duration::from_millis(ms)
    }

    /// Sets the interval, clamped to `[min, max]`; returns the value set.
    pub fn set(&self, interval: Duration) -> Duration {
        let ms = (interval.as_millis() as u64).clamp(self.inner.min_ms, self.inner.max_ms);
        self.inner.current_ms.store(ms, Ordering::Relaxed);
        Duration::from_millis(ms)
    }

    /// Halves the interval towards its base (not below it); returns the new value.
    pub fn relax(&self) -> Duration {
        self.set((self.current() / 2).max(self.base()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Reap, Trim};

    fn _object_safe(_: Box<dyn Strategy>, _: Box<dyn Trim>, _: Box<dyn Reap>) {}

    #[test]
    fn interval_is_clamped_between_base_and_max() {
        let interval = IntervalControl::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(
            interval.set(Duration::from_secs(100)),
            Duration::from_secs(8)
        );
        assert_eq!(interval.relax(), Duration::from_secs(4));
        assert_eq!(
            interval.set(Duration::from_millis(1)),
            Duration::from_secs(1)
        );
        assert_eq!(interval.clone().current(), Duration::from_secs(1));

        let adaptive = interval.with_min(Duration::from_millis(200));
        assert_eq!(adaptive.set(Duration::ZERO), Duration::from_millis(200));
        assert_eq!(
            adaptive.relax(),
            Duration::from_secs(1),
            "relax stops at the base"
        );
        assert_eq!(
            IntervalControl::new(Duration::from_secs(1), Duration::from_secs(8))
                .with_min(Duration::from_secs(5))
                .min(),
            Duration::from_secs(1),
            "a minimum above the base is the base"
        );
    }

    #[test]
    fn outcome_collects_its_report() {
        let outcome = Outcome::acted("purged").with("rss_released_bytes", 42u64);
        assert!(outcome.acted);
        assert_eq!(outcome.report["rss_released_bytes"], 42);
    }
}
