//! The engine: one task that owns the agent's state and runs the loop
//! sample → evaluate → act → record → publish.
//!
//! Everything else talks to it through an [`EngineHandle`]: commands go in over a channel,
//! the latest [`View`] comes out over a watch channel, and [`Event`]s over a broadcast
//! channel. Strategy runs happen in a separate task, one batch at a time (single flight), so
//! sampling and manual requests are answered while a strategy works.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use perfpilot_strategies::{
    IntervalControl, Level, Outcome, Registered, Registry, RunKind, Signal, Snapshot, Strategy,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::cost::CostReadings;
use crate::budget::{Budget, BudgetConfig, ReactionTuning};
use crate::events::Event;
use crate::history::{BudgetStep, History, OptimizationRecord, Prediction};
use crate::sample::{TargetHandle, WatchHandle};
use crate::trigger::backoff::{BackoffPolicy, FailureBackoff};
use crate::trigger::cadence::AdaptiveSampling;
use crate::trigger::TriggerState;

mod budgets;
mod clock;
mod execute;
mod handle;
mod judge;
mod learned;
mod plan;
mod reconfigure;
mod record;
mod run;
mod view;

pub(crate) use clock::{Clock, Pending, SystemClock};
pub(crate) use execute::{Executor, Inline, SharedSource, TaskFailure};
pub use handle::EngineHandle;
pub use view::{StrategyView, View};

use budgets::build_budgets;
use execute::TokioExecutor;

// What the engine's tests reach through `use super::*`.
#[cfg(test)]
use {
    crate::budget::BudgetView, crate::sample::WatchMode, perfpilot_strategies::Context, std::fmt,
};

/// Where snapshots come from: the real sampler, or a scripted source in tests.
pub trait SignalSource: Send + 'static {
    /// Takes one sample.
    fn sample(&mut self) -> Snapshot;
}

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Run strategies automatically when triggers fire (manual runs work either way).
    pub enabled: bool,
    /// The sampling interval, shared with `interval-backoff`.
    pub interval: IntervalControl,
    /// Log and record what would run, without running it.
    pub dry_run: bool,
    /// How many records to keep.
    pub history_size: usize,
    /// How long one strategy run may take before it is abandoned as failed.
    pub strategy_timeout: Duration,
    /// After an automatic batch, no other automatic run for this long.
    pub post_action_delay: Duration,
    /// The sidecar target, when the agent watches one: its pids are what target strategies
    /// (`signal`) act on. `None` in self and library modes.
    pub target: Option<TargetHandle>,
    /// Consecutive failed automatic runs before a strategy's automatic runs pause (`0`:
    /// never); see [`crate::trigger::backoff`].
    pub backoff_after_failures: u32,
    /// The longest such pause.
    pub max_backoff: Duration,
    /// How long after a run its judgement waits: the first regular sample taken at least this
    /// long after the run's end gives the record's `after` value (smoothed like `before`)
    /// and whether the run helped; zero: the next sample. No extra sample is taken.
    pub settle: Duration,
    /// Lengthen the cooldown of a strategy while its runs do not relieve its signal (doubling
    /// per unhelpful run, up to `max_cooldown`); see [`TriggerState::note_effect`].
    pub adaptive_cooldown: bool,
    /// The longest cooldown adaptive cooldown may reach (never below the configured one).
    pub max_cooldown: Duration,
    /// Sample faster near thresholds and slower when calm; `None`: a fixed interval.
    pub adaptive_sampling: Option<AdaptiveSampling>,
    /// The agent's identity: the `worker` label on every metric ([`crate::worker`]).
    pub worker: String,
    /// The fast watch between samples ([`crate::sample::FastWatch`]): when it sees a
    /// threshold crossed, the engine samples (and evaluates every trigger) at once. `None`:
    /// full samples only.
    pub watch: Option<WatchHandle>,
    /// Budgets with escalation ladders, by name ([`crate::budget`]); the ladders name
    /// registered strategies by name or alias.
    pub budgets: Vec<(String, BudgetConfig)>,
    /// Strategies that run automatically only as budget rungs: their own triggers are
    /// evaluated (for the view) but never fire ([`crate::config::Config::rung_only`]).
    pub rung_only: Vec<String>,
    /// How budgets react (`[tuning] reaction`, SPEC §12).
    pub reaction: ReactionTuning,
    /// What was learned before a restart ([`crate::learned`]), taken at start; a
    /// reconfiguration ignores it.
    pub learned: Option<Arc<crate::learned::Learned>>,
}

#[cfg(test)]
impl EngineSettings {
    /// Settings for the engine's and the API's tests: a 1 s interval (up to 8 s), 50
    /// records, a 5 s strategy timeout, back-off after 3 failures, adaptive cooldown on.
    pub(crate) fn for_tests() -> Self {
        EngineSettings {
            enabled: true,
            interval: IntervalControl::new(Duration::from_secs(1), Duration::from_secs(8)),
            dry_run: false,
            history_size: 50,
            strategy_timeout: Duration::from_secs(5),
            post_action_delay: Duration::ZERO,
            target: None,
            backoff_after_failures: 3,
            max_backoff: Duration::from_secs(3600),
            settle: Duration::ZERO,
            adaptive_cooldown: true,
            max_cooldown: Duration::from_secs(600),
            adaptive_sampling: None,
            worker: "engine-test".to_owned(),
            watch: None,
            budgets: Vec::new(),
            rung_only: Vec::new(),
            // The engine's own tests were written for fixed reaction; the adaptive rules
            // have their own (reaction_tests.rs).
            reaction: ReactionTuning::FIXED,
            learned: None,
        }
    }
}

/// Why learned reaction state could not be reset ([`EngineHandle::reset_learning`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    /// No budget has that name.
    #[error("unknown budget `{given}`; budgets: {}", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownBudget {
        /// The name asked for.
        given: String,
        /// The budgets there are.
        known: Vec<String>,
    },
    /// The engine has stopped.
    #[error("the agent is shutting down")]
    Stopped,
}

/// Why a manual optimization was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptimizeError {
    /// No strategy has that name or alias.
    #[error("unknown strategy `{given}`; known strategies: {}", known.join(", "))]
    UnknownStrategy {
        /// The name asked for.
        given: String,
        /// Every name and alias that would work.
        known: Vec<String>,
    },
    /// Another optimization is running (single flight).
    #[error("an optimization is already running")]
    Busy,
    /// The engine has stopped.
    #[error("the agent is shutting down")]
    Stopped,
}

/// New settings and strategies for a running engine, from a configuration reload
/// ([`EngineHandle::reconfigure`]). One command swaps them all, so the engine stays the only
/// owner of its state; sections added to the configuration later join it here.
#[derive(Debug)]
pub struct Reconfiguration {
    /// The new settings. `target` and `worker` cannot change while the agent runs: the
    /// engine keeps its own.
    pub settings: EngineSettings,
    /// Every strategy from now on, in order. One whose name is already registered keeps its
    /// trigger state (learned baseline, cooldown, back-off) and, in the history, its records
    /// and effectiveness; it takes the new trigger and settings.
    pub strategies: Vec<Registered>,
}

/// What a [`Reconfiguration`] did to the strategies, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StrategyChanges {
    /// Strategies that were not registered before.
    pub added: Vec<String>,
    /// Strategies no longer registered (their records and stats stay in the history).
    pub removed: Vec<String>,
    /// Strategies kept whose trigger changed.
    pub retriggered: Vec<String>,
    /// Strategies kept with the same trigger (their own settings may have changed).
    pub kept: Vec<String>,
}

/// Starts the engine task. It samples at once, then every interval, until `shutdown` is
/// cancelled; then it lets a running batch finish and returns.
pub fn spawn(
    settings: EngineSettings,
    strategies: Vec<Registered>,
    registry: Arc<Registry>,
    source: Box<dyn SignalSource>,
    shutdown: CancellationToken,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let parts = Parts {
        clock: Arc::new(SystemClock),
        executor: Arc::new(TokioExecutor),
    };
    spawn_on(settings, strategies, registry, source, shutdown, parts)
}

/// What the engine core runs on: its clock and the executor of its blocking work. In
/// production [`SystemClock`] and [`TokioExecutor`]; a replay gives its own (see
/// [`clock`] and [`execute`]).
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    /// Where the engine reads the time.
    pub(crate) clock: Arc<dyn Clock>,
    /// Where samples and strategy runs are done.
    pub(crate) executor: Arc<dyn Executor>,
}

/// [`spawn`] on a given clock and executor.
pub(crate) fn spawn_on(
    settings: EngineSettings,
    strategies: Vec<Registered>,
    registry: Arc<Registry>,
    mut source: Box<dyn SignalSource>,
    shutdown: CancellationToken,
    parts: Parts,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let (events, _) = broadcast::channel(256);
    let first = Arc::new(source.sample());
    let slots: Vec<Slot> = strategies
        .into_iter()
        .map(|registered| Slot {
            automatic: !settings
                .rung_only
                .iter()
                .any(|name| registered.strategy.answers_to(name)),
            backoff_policy: BackoffPolicy::new(
                settings.backoff_after_failures,
                registered.trigger.cooldown,
                settings.max_backoff,
            ),
            backoff: FailureBackoff::default(),
            trigger: TriggerState::new(registered.trigger.clone()),
            strategy: registered.strategy,
            value: None,
        })
        .collect();
    let first_oom_kills = first.oom_kills;
    let budgets = build_budgets(&settings.budgets, settings.reaction, &slots);
    let mut engine = Engine {
        budgets,
        history: History::new(settings.history_size),
        sampling: settings.adaptive_sampling.clone(),
        settings,
        slots,
        registry,
        source: Arc::new(Mutex::new(source)),
        latest: first,
        latest_at: parts.clock.wall(),
        running: None,
        batch: None,
        clock: parts.clock,
        executor: parts.executor,
        quiet_until: None,
        unjudged: Vec::new(),
        oom_kills: first_oom_kills,
        wake_pending: false,
        watch_wakes: Default::default(),
        sampling_error: None,
        events: events.clone(),
        view: None,
    };
    if let Some(learned) = engine.settings.learned.take() {
        engine.restore(&learned);
    }
    let (view_tx, view_rx) = watch::channel(Arc::new(engine.build_view()));
    engine.view = Some(view_tx);
    // The next sample is one interval after this first one.
    let next_tick = engine.clock.now() + engine.settings.interval.current();
    let task = tokio::spawn(engine.run(commands_rx, shutdown.clone(), next_tick));
    (
        EngineHandle {
            commands: commands_tx,
            view: view_rx,
            events,
            stopping: shutdown,
        },
        task,
    )
}

/// One budget and where its rungs are among the slots.
struct BudgetSlot {
    budget: Budget,
    rungs: Vec<usize>,
    /// The target's latency readings its runs' cost is measured by.
    cost: CostReadings,
}

struct Slot {
    /// Its trigger fires (false: it runs automatically only as a budget's rung).
    automatic: bool,
    strategy: Arc<dyn Strategy>,
    trigger: TriggerState,
    value: Option<f64>,
    backoff_policy: BackoffPolicy,
    backoff: FailureBackoff,
}

type Reply = oneshot::Sender<Result<Vec<Arc<OptimizationRecord>>, OptimizeError>>;

struct Engine {
    budgets: Vec<BudgetSlot>,
    settings: EngineSettings,
    sampling: Option<AdaptiveSampling>,
    slots: Vec<Slot>,
    registry: Arc<Registry>,
    source: SharedSource,
    latest: Arc<Snapshot>,
    /// When `latest` arrived.
    latest_at: SystemTime,
    history: History,
    /// The requester of the batch in flight, if any (`Some(None)`: automatic batch).
    running: Option<Option<Reply>>,
    /// The batch of runs in flight, handed to the executor.
    batch: Option<Pending<Result<Vec<FinishedRun>, TaskFailure>>>,
    clock: Arc<dyn Clock>,
    executor: Arc<dyn Executor>,
    quiet_until: Option<Instant>,
    /// Recorded runs waiting for the sample that judges them, oldest first.
    unjudged: Vec<Unjudged>,
    /// The OOM-kill count of the last sample that read one.
    oom_kills: Option<u64>,
    /// The fast watch woke the engine while a batch ran: evaluate again when it ends.
    wake_pending: bool,
    /// Immediate samples the fast watch asked for, by signal and how it saw the crossing.
    watch_wakes: std::collections::BTreeMap<(Signal, &'static str), u64>,
    /// Why the last sample failed (the signal source panicked), until one succeeds.
    sampling_error: Option<String>,
    events: broadcast::Sender<Event>,
    view: Option<watch::Sender<Arc<View>>>,
}

/// One planned strategy run.
pub(crate) struct PlannedRun {
    strategy: Arc<dyn Strategy>,
    signal: Signal,
    level: Level,
    before: Option<f64>,
    kind: RunKind,
    reason: String,
    prediction: Option<Prediction>,
    /// Set when a budget runs it as a rung: (the budget's index, what the record says).
    budget: Option<(usize, BudgetStep)>,
}

/// A finished run, before it gets its record id.
pub(crate) struct FinishedRun {
    planned: PlannedRun,
    started_at: SystemTime,
    duration: Duration,
    /// When the run ended (its judgement waits `settle` from here).
    ended: Instant,
    result: Result<Outcome, String>,
}

/// A recorded run that acted and waits for the regular sample that says whether it helped.
struct Unjudged {
    record: Arc<OptimizationRecord>,
    /// The first sample taken at or after this judges it (the run's end plus `settle`).
    due: Instant,
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod arming_tests;
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod cost_tests;
#[cfg(test)]
mod test_memory;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod reaction_tests;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod sampling_tests;
