//! The engine: one task that owns the agent's state and runs the loop
//! sample → evaluate → act → record → publish.
//!
//! Everything else talks to it through an [`EngineHandle`]: commands go in over a channel,
//! the latest [`View`] comes out over a watch channel, and [`Event`]s over a broadcast
//! channel. Strategy runs happen in a separate task, one batch at a time (single flight), so
//! sampling and manual requests are answered while a strategy works.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use perfpilot_strategies::{
    Context, IntervalControl, Level, Outcome, Registered, Registry, RunKind, Signal, Snapshot,
    Strategy, TriggerSpec,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::budget::{Budget, BudgetConfig, BudgetView, Note, RungRun};
use crate::events::{Event, OomKill};
use crate::history::{judge, BudgetStep, History, OptimizationRecord, Prediction, Stats};
use crate::prometheus::Telemetry;
use crate::sample::{TargetHandle, WatchHandle, WatchMode, WatchStatus};
use crate::trigger::backoff::{BackoffChange, BackoffPolicy, FailureBackoff};
use crate::trigger::cadence::{self, AdaptiveSampling, Step};
use crate::trigger::{CooldownChange, Forecast, TriggerState};

mod clock;
mod execute;

pub(crate) use clock::{Clock, Pending, SystemClock};
use execute::{execute, Executor, SharedSource, TaskFailure, TokioExecutor};

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
        }
    }
}

/// What the engine publishes after every sample and run: everything the API shows.
#[derive(Debug, Clone)]
pub struct View {
    /// The latest sample.
    pub snapshot: Arc<Snapshot>,
    /// When the engine got the latest sample (its end; `snapshot.taken_at` is its start):
    /// what `GET /health` measures a stall from.
    pub sampled_at: SystemTime,
    /// Running stats over all runs.
    pub stats: Stats,
    /// Whether a batch of strategy runs is in progress.
    pub is_optimizing: bool,
    /// Whether automatic runs are on.
    pub enabled: bool,
    /// Whether the agent is in dry-run mode.
    pub dry_run: bool,
    /// The sampling interval in force.
    pub interval: Duration,
    /// The retained records, oldest first.
    pub recent: Vec<Arc<OptimizationRecord>>,
    /// Every registered strategy with its trigger state.
    pub strategies: Vec<StrategyView>,
    /// The fast watch between samples, when one runs.
    pub fast_watch: Option<WatchStatus>,
    /// Immediate samples the fast watch asked for, by signal and how it saw the crossing
    /// (`poll`, `psi`), since the start.
    pub watch_wakes: Vec<(Signal, &'static str, u64)>,
    /// Why the last sample failed (the signal source panicked); `None` once one succeeds.
    pub sampling_error: Option<String>,
    /// Every budget with its episode and ladder.
    pub budgets: Vec<BudgetView>,
}

impl View {
    /// A view of `snapshot` as a quiet engine sampling every `interval` would publish it: no
    /// runs, strategies, budgets or watch. Tests change the fields they need.
    #[cfg(test)]
    pub(crate) fn of(snapshot: Arc<Snapshot>, interval: Duration) -> View {
        View {
            sampled_at: snapshot.taken_at,
            snapshot,
            stats: Stats::default(),
            is_optimizing: false,
            enabled: true,
            dry_run: false,
            interval,
            recent: Vec::new(),
            strategies: Vec::new(),
            fast_watch: None,
            watch_wakes: Vec::new(),
            sampling_error: None,
            budgets: Vec::new(),
        }
    }

    /// Every name and alias a manual run accepts.
    pub fn known_names(&self) -> Vec<String> {
        self.strategies
            .iter()
            .flat_map(|s| std::iter::once(s.name.clone()).chain(s.aliases.iter().cloned()))
            .collect()
    }
}

/// One strategy as the API lists it.
#[derive(Debug, Clone)]
pub struct StrategyView {
    /// Name.
    pub name: String,
    /// Aliases.
    pub aliases: Vec<String>,
    /// What it does.
    pub description: String,
    /// Its trigger.
    pub trigger: TriggerSpec,
    /// Its signal's level now.
    pub level: Level,
    /// Its signal's (smoothed) value in the last sample.
    pub value: Option<f64>,
    /// Failed automatic runs in a row.
    pub consecutive_failures: u32,
    /// While its automatic runs are paused after failures: until when.
    pub backoff_until: Option<SystemTime>,
    /// The cooldown in force (lengthened while runs do not help).
    pub cooldown: Duration,
    /// Runs in a row that did not relieve the signal.
    pub unhelpful_runs: u32,
    /// When the signal's trend reaches its target, if it is rising towards it.
    pub forecast: Option<Forecast>,
    /// The threshold in force (`above`, or the learned one; `None` while it warms up).
    pub threshold: Option<f64>,
    /// It runs automatically only as a budget's rung (its trigger does not fire).
    pub rung_only: bool,
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

enum Command {
    Optimize {
        strategy: Option<String>,
        reply: oneshot::Sender<Result<Vec<Arc<OptimizationRecord>>, OptimizeError>>,
    },
    Reconfigure {
        change: Box<Reconfiguration>,
        reply: oneshot::Sender<StrategyChanges>,
    },
    Crossing {
        budget: String,
        value: f64,
    },
}

/// A cheap, cloneable handle to the engine task.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<View>>,
    events: broadcast::Sender<Event>,
    telemetry: Arc<Telemetry>,
    stopping: CancellationToken,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Optimize { strategy, .. } => f
                .debug_struct("Optimize")
                .field("strategy", strategy)
                .finish(),
            Command::Reconfigure { change, .. } => f
                .debug_struct("Reconfigure")
                .field("change", change)
                .finish(),
            Command::Crossing { budget, value } => f
                .debug_struct("Crossing")
                .field("budget", budget)
                .field("value", value)
                .finish(),
        }
    }
}

impl EngineHandle {
    /// Runs one strategy (by name or alias) or, with `None`, every strategy, now: thresholds
    /// and cooldowns are bypassed, single flight is not. Resolves when the runs are recorded.
    pub async fn optimize(
        &self,
        strategy: Option<&str>,
    ) -> Result<Vec<Arc<OptimizationRecord>>, OptimizeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Optimize {
                strategy: strategy.map(str::to_owned),
                reply,
            })
            .await
            .map_err(|_| OptimizeError::Stopped)?;
        answer.await.map_err(|_| OptimizeError::Stopped)?
    }

    /// Swaps the engine's settings and strategies (a configuration reload). A batch of runs
    /// in progress finishes under the settings it started with; sampling, the history and
    /// subscribers go on. Resolves once the new settings are in force and published.
    pub async fn reconfigure(
        &self,
        change: Reconfiguration,
    ) -> Result<StrategyChanges, OptimizeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Reconfigure {
                change: Box::new(change),
                reply,
            })
            .await
            .map_err(|_| OptimizeError::Stopped)?;
        answer.await.map_err(|_| OptimizeError::Stopped)
    }

    /// Reports a budget's signal crossing its goal or limit between regular samples (the
    /// fast watch, see [`crate::budget::watch_thresholds`]): the budget starts its episode
    /// at once (or jumps to its top rung above limit with `at_limit = "top"`). Never waits:
    /// when the engine's queue is full the report is dropped, and `false` returned.
    pub fn report_crossing(&self, budget: &str, value: f64) -> bool {
        self.commands
            .try_send(Command::Crossing {
                budget: budget.to_owned(),
                value,
            })
            .is_ok()
    }

    /// The latest published view.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }

    /// A receiver of the engine's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The Prometheus metrics that follow the engine's published view and events.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Resolves once the engine has been told to stop (event streams end then).
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// Whether the engine task still runs: `false` once it has ended (after shutdown, or
    /// when it panicked, e.g. in a user's [`SignalSource`]).
    pub fn is_running(&self) -> bool {
        self.view.has_changed().is_ok()
    }

    /// A watch receiver of views, to wait for changes.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }
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
    let budgets = build_budgets(&settings.budgets, &slots);
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
    let (view_tx, view_rx) = watch::channel(Arc::new(engine.build_view()));
    engine.view = Some(view_tx);
    // Telemetry observes what the engine publishes; the engine does not call it.
    let telemetry = Telemetry::follow(&engine.settings.worker, view_rx.clone(), events.subscribe());
    // The next sample is one interval after this first one.
    let next_tick = engine.clock.now() + engine.settings.interval.current();
    let task = tokio::spawn(engine.run(commands_rx, shutdown.clone(), next_tick));
    (
        EngineHandle {
            commands: commands_tx,
            view: view_rx,
            events,
            telemetry,
            stopping: shutdown,
        },
        task,
    )
}

/// Resolves each budget's ladder to registered strategies; a rung naming none is left out
/// (with a warning), and a budget left without rungs too.
fn build_budgets(configs: &[(String, BudgetConfig)], slots: &[Slot]) -> Vec<BudgetSlot> {
    let mut budgets = Vec::new();
    for (name, config) in configs {
        let mut rungs = Vec::new();
        for rung in &config.ladder {
            match slots.iter().position(|slot| slot.strategy.answers_to(rung)) {
                Some(index) => rungs.push(index),
                None => {
                    warn!(budget = %name, rung = %rung, "budget rung names no registered strategy: left out")
                }
            }
        }
        if rungs.is_empty() {
            warn!(budget = %name, "budget has no registered rung: not held");
            continue;
        }
        let ladder: Vec<String> = rungs
            .iter()
            .map(|&index| slots[index].strategy.name().to_owned())
            .collect();
        info!(budget = %name, signal = %config.signal, goal = config.goal, limit = config.limit, ladder = %ladder.join(" → "), at_limit = %config.at_limit, "budget held with a ladder (climbed in this order)");
        budgets.push(BudgetSlot {
            budget: Budget::new(name.clone(), config.clone(), ladder),
            rungs,
        });
    }
    budgets
}

/// One budget and where its rungs are among the slots.
struct BudgetSlot {
    budget: Budget,
    rungs: Vec<usize>,
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

impl Slot {
    /// Logs a change of the back-off state, once per change.
    fn log_backoff(&self, change: Option<BackoffChange>) {
        let strategy = self.strategy.name();
        match change {
            Some(BackoffChange::Paused {
                failures, pause, ..
            }) => warn!(
                strategy,
                consecutive_failures = failures,
                pause_ms = pause.as_millis() as u64,
                "strategy keeps failing: automatic runs paused"
            ),
            Some(BackoffChange::Cleared { failures }) => info!(
                strategy,
                consecutive_failures = failures,
                "strategy back-off cleared"
            ),
            None => {}
        }
    }

    /// Logs a change of the cooldown in force, once per change.
    fn log_cooldown(&self, change: Option<CooldownChange>) {
        let strategy = self.strategy.name();
        match change {
            Some(CooldownChange::Lengthened(cooldown)) => info!(
                strategy,
                unhelpful_runs = self.trigger.unhelpful_runs(),
                cooldown_ms = cooldown.as_millis() as u64,
                "runs are not relieving the signal: cooldown lengthened"
            ),
            Some(CooldownChange::Restored(cooldown)) => info!(
                strategy,
                cooldown_ms = cooldown.as_millis() as u64,
                "cooldown restored"
            ),
            None => {}
        }
    }
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

impl Engine {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        mut next_tick: Instant,
    ) {
        let watch = self.settings.watch.clone();
        // The sample in progress, and whether it is the scheduled one (not a fast watch's
        // wake): its /proc reads block, so it runs on the blocking pool and the runtime's
        // workers (the API) go on meanwhile.
        let mut sampling: Option<(Pending<Result<Snapshot, TaskFailure>>, bool)> = None;
        let executor = Arc::clone(&self.executor);
        let sample = |source: &SharedSource| executor.sample(Arc::clone(source));
        self.publish();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                done = async { self.batch.as_mut().expect("guarded by is_some").await },
                    if self.batch.is_some() =>
                {
                    self.batch = None;
                    self.finish_batch(done);
                    // A crossing seen while the batch ran could not start a run then (single
                    // flight), and the watch reports a crossing once: evaluate it now rather
                    // than at the next tick.
                    if std::mem::take(&mut self.wake_pending) && sampling.is_none() {
                        sampling = Some((sample(&self.source), false));
                    }
                }
                Some(command) = commands.recv() => {
                    if self.handle(command) {
                        // A new interval counts from now, not from the old schedule.
                        next_tick = self.clock.now() + self.settings.interval.current();
                    }
                }
                // A crossing seen between samples: sample and evaluate now. The fixed-rate
                // ticks go on as planned.
                () = woken(watch.as_ref()) => {
                    self.wake_pending = self.running.is_some();
                    for (signal, mode) in watch.as_ref().map(WatchHandle::take_crossings).unwrap_or_default() {
                        let how = match mode {
                            WatchMode::Poll => "poll",
                            WatchMode::PsiTrigger => "psi",
                        };
                        debug!(%signal, how, "fast watch: threshold crossed, sampling now");
                        *self.watch_wakes.entry((signal, how)).or_default() += 1;
                    }
                    if sampling.is_none() {
                        sampling = Some((sample(&self.source), false));
                    }
                }
                sampled = async { (&mut sampling.as_mut().expect("guarded by is_some").0).await },
                    if sampling.is_some() =>
                {
                    let (_, scheduled) = sampling.take().expect("guarded by is_some");
                    match sampled {
                        Ok(snapshot) => {
                            self.sampling_error = None;
                            self.tick(snapshot);
                        }
                        Err(e) => {
                            error!(%e, "sampling failed");
                            self.sampling_error = Some(e.reason());
                            self.publish();
                        }
                    }
                    if !scheduled {
                        continue;
                    }
                    // Fixed rate: the time a tick takes (and the timer's millisecond rounding)
                    // does not push later ticks back; after a stall, one tick at once.
                    next_tick = (next_tick + self.settings.interval.current()).max(self.clock.now());
                }
                _ = self.clock.sleep_until(next_tick), if sampling.is_none() => {
                    sampling = Some((sample(&self.source), true));
                }
            }
        }
        if self.running.is_some() {
            info!("shutting down: waiting for the running optimization to finish");
            if let Some(batch) = self.batch.take() {
                self.finish_batch(batch.await);
            }
        }
        // Runs no sample will judge any more are published as they are (`helped` unknown).
        for unjudged in std::mem::take(&mut self.unjudged) {
            let _ = self
                .events
                .send(Event::OptimizationCompleted(unjudged.record));
        }
    }

    fn tick(&mut self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        self.note_oom_kills(&snapshot);
        self.latest = Arc::clone(&snapshot);
        self.latest_at = self.clock.wall();
        let now = self.clock.now();
        let mut fired = Vec::new();
        let mut attention = false;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let signal = slot.trigger.spec().signal;
            let evaluation = slot
                .trigger
                .evaluate(snapshot.signal(signal), now.into_std());
            slot.value = evaluation.value;
            // The agent's own CPU is interval-backoff's business: sampling faster because CPU
            // is high would make it worse.
            if !slot.strategy.paces_sampling() {
                attention |= evaluation.attention;
            }
            if evaluation.fire && slot.automatic && !slot.backoff.is_paused(now.into_std()) {
                let forecast = evaluation.forecast.filter(|_| evaluation.predictive);
                fired.push((index, forecast));
            }
        }
        // A budget in an episode needs its samples: its climb is read from them.
        attention |= self.budgets.iter().any(|held| held.budget.in_episode());
        self.adapt_interval(attention);
        self.judge_due(now);
        let _ = self
            .events
            .send(Event::MetricsUpdated(Arc::clone(&snapshot)));

        let quiet = self.quiet_until.is_some_and(|until| now < until);
        let can_act = self.settings.enabled && self.running.is_none() && !quiet;
        let budget_runs = self.observe_budgets(&snapshot, now, can_act);
        // A strategy a budget runs as a rung now is not run again by its own trigger.
        fired.retain(|(index, _)| !budget_runs.iter().any(|run| run.1 == *index));
        if can_act && (!fired.is_empty() || !budget_runs.is_empty()) {
            let mut runs: Vec<PlannedRun> = budget_runs
                .into_iter()
                .map(|(budget, index, run)| self.plan_rung(budget, index, run, now))
                .collect();
            runs.extend(fired.into_iter().map(|(index, forecast)| {
                let slot = &mut self.slots[index];
                let threshold = slot.trigger.threshold();
                slot.trigger.mark_run(now.into_std());
                let spec = slot.trigger.spec();
                let value = round(slot.value.unwrap_or(f64::NAN));
                let reason = match forecast {
                    Some(f) => format!(
                        "{} = {value} predicted to reach {} in {:.1} s ({:+}/s)",
                        spec.signal,
                        round(f.at),
                        f.seconds,
                        round(f.slope_per_second)
                    ),
                    None => format!(
                        "{} = {value} above {} ({})",
                        spec.signal,
                        round(threshold.or(spec.critical).unwrap_or(spec.above)),
                        slot.trigger.level()
                    ),
                };
                PlannedRun {
                    strategy: Arc::clone(&slot.strategy),
                    signal: spec.signal,
                    level: slot.trigger.level(),
                    before: slot.value,
                    kind: RunKind::Automatic,
                    reason,
                    prediction: forecast.map(Prediction::from),
                    budget: None,
                }
            }));
            self.start_batch(runs, None);
        }
        self.publish();
    }

    /// Publishes an `oom-kill` event (and counts it) when the cgroup's OOM-kill count rose
    /// since the last sample that read it.
    fn note_oom_kills(&mut self, snapshot: &Snapshot) {
        let Some(count) = snapshot.oom_kills else {
            return;
        };
        let previous = self.oom_kills.replace(count);
        let new_kills = match previous {
            Some(previous) if count > previous => count - previous,
            _ => return,
        };
        warn!(
            new_kills,
            oom_kills = count,
            memory_usage_before = self.latest.memory_usage_ratio,
            "the kernel OOM-killed a process in the watched cgroup: the memory limit was lost"
        );
        let _ = self.events.send(Event::OomKill(OomKill {
            new_kills,
            oom_kills: count,
            timestamp: perfpilot_strategies::snapshot::unix_millis::millis(snapshot.taken_at),
            memory_usage_before: self.latest.memory_usage_ratio,
            memory_limit_bytes: self.latest.memory_limit_bytes,
        }));
    }

    /// Sets the next interval as [`cadence::next`] decides: under CPU pressure
    /// interval-backoff's verdicts set it; otherwise adaptive sampling (if on) picks it from
    /// `attention`, or else the interval halves back towards its base.
    fn adapt_interval(&mut self, attention: bool) {
        let interval = &self.settings.interval;
        let cpu_calm = self
            .slots
            .iter()
            .filter(|slot| slot.strategy.paces_sampling())
            .all(|slot| slot.trigger.level() == Level::Ok);
        let current = interval.current();
        let step = cadence::next(
            self.sampling.as_mut(),
            current,
            interval.base(),
            cpu_calm,
            attention,
        );
        match step {
            Step::Keep => {}
            Step::Faster(wanted) => {
                let next = interval.set(wanted);
                info!(
                    interval_ms = next.as_millis() as u64,
                    "a signal is near its threshold: sampling faster"
                );
            }
            Step::Adapted(wanted) => {
                let next = interval.set(wanted);
                if next != current {
                    debug!(
                        interval_ms = next.as_millis() as u64,
                        "calm: sampling slower"
                    );
                }
            }
            Step::Relaxed(wanted) => {
                let relaxed = interval.set(wanted);
                info!(
                    interval_ms = relaxed.as_millis() as u64,
                    "CPU calm: sampling interval relaxed"
                );
            }
        }
    }

    /// Feeds every budget this sample; returns the rungs to run now as (budget index, slot
    /// index, run). At most one budget starts a rung per sample (single flight: the others
    /// choose again at the next sample).
    fn observe_budgets(
        &mut self,
        snapshot: &Snapshot,
        now: Instant,
        can_act: bool,
    ) -> Vec<(usize, usize, RungRun)> {
        let mut runs = Vec::new();
        for index in 0..self.budgets.len() {
            let slot = &mut self.budgets[index];
            let value = snapshot.signal(slot.budget.config().signal);
            let step = slot
                .budget
                .observe(value, now.into_std(), can_act && runs.is_empty());
            self.note_budget(index, &step.notes);
            if let Some(run) = step.run {
                runs.push((index, self.budgets[index].rungs[run.rung], run));
            }
        }
        runs
    }

    /// Logs a budget's notes; an exhausted ladder is also an event and a counter.
    fn note_budget(&self, index: usize, notes: &[Note]) {
        let budget = self.budgets[index].budget.name();
        for note in notes {
            match note {
                Note::EpisodeStarted { episode, reason } => {
                    info!(budget, episode, %reason, "budget episode started")
                }
                Note::Judged {
                    strategy,
                    helped,
                    before,
                    after,
                    ..
                } => {
                    info!(budget, strategy = %strategy, helped = ?helped, before, after, "budget rung judged")
                }
                Note::Skipped { strategy, why, .. } => {
                    info!(budget, strategy = %strategy, %why, "budget rung skipped")
                }
                Note::Waiting { why } => info!(budget, %why, "budget waiting"),
                Note::Exhausted(exhaustion) => {
                    warn!(budget, episode = exhaustion.episode, value = exhaustion.value, limit = exhaustion.limit, message = %exhaustion.message, "budget exhausted");
                    let _ = self
                        .events
                        .send(Event::BudgetExhausted(Arc::new(exhaustion.clone())));
                }
                Note::EpisodeEnded { episode, duration } => {
                    info!(
                        budget,
                        episode,
                        duration_s = duration.as_secs_f64(),
                        "budget episode ended: back under goal"
                    )
                }
            }
        }
    }

    /// The planned run of a budget's rung.
    fn plan_rung(&mut self, budget: usize, index: usize, run: RungRun, now: Instant) -> PlannedRun {
        let held = &self.budgets[budget].budget;
        let config = held.config();
        let before = self.latest.signal(config.signal);
        let level = match before {
            Some(value) if value > config.limit => Level::Critical,
            _ => Level::Warning,
        };
        let step = BudgetStep {
            budget: held.name().to_owned(),
            episode: run.episode,
            rung: run.rung,
            why: run.why.clone(),
        };
        let reason = format!(
            "budget {}, episode {}, rung {} ({}): {}",
            step.budget,
            run.episode,
            run.rung + 1,
            run.strategy,
            run.why
        );
        let slot = &mut self.slots[index];
        slot.trigger.mark_run(now.into_std());
        PlannedRun {
            strategy: Arc::clone(&slot.strategy),
            signal: config.signal,
            level,
            before,
            kind: RunKind::Automatic,
            reason,
            prediction: None,
            budget: Some((budget, step)),
        }
    }

    /// A crossing reported by the fast watch.
    fn crossing(&mut self, name: &str, value: f64) {
        let Some(index) = self.budgets.iter().position(|b| b.budget.name() == name) else {
            debug!(budget = name, "crossing reported for an unknown budget");
            return;
        };
        let now = self.clock.now();
        let quiet = self.quiet_until.is_some_and(|until| now < until);
        let can_act = self.settings.enabled && self.running.is_none() && !quiet;
        let step = self.budgets[index]
            .budget
            .crossing(value, now.into_std(), can_act);
        self.note_budget(index, &step.notes);
        if let Some(run) = step.run {
            let slot = self.budgets[index].rungs[run.rung];
            let mut planned = self.plan_rung(index, slot, run, now);
            planned.before = Some(value);
            self.start_batch(vec![planned], None);
        }
        self.publish();
    }

    /// Tells a budget that its rung finished (`acted`: `None` in a dry run).
    fn rung_finished(&mut self, budget: usize, rung: usize, acted: Option<bool>) {
        if let Some(slot) = self.budgets.get_mut(budget) {
            slot.budget
                .finished(rung, acted, self.clock.now().into_std());
        }
    }

    /// Handles one command; returns whether the sampling interval was replaced.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Optimize { strategy, reply } => {
                self.optimize(strategy, reply);
                false
            }
            Command::Crossing { budget, value } => {
                self.crossing(&budget, value);
                false
            }
            Command::Reconfigure { change, reply } => {
                let (changes, interval_replaced) = self.reconfigure(*change);
                let _ = reply.send(changes);
                self.publish();
                interval_replaced
            }
        }
    }

    /// Swaps settings and strategies; strategies keep their state by name. Returns what
    /// changed among the strategies and whether the interval control was replaced.
    fn reconfigure(&mut self, change: Reconfiguration) -> (StrategyChanges, bool) {
        let Reconfiguration {
            mut settings,
            strategies,
        } = change;
        settings.target = self.settings.target.clone();
        settings.worker = self.settings.worker.clone();
        // The fast watch's thread belongs to the agent, not to a configuration.
        settings.watch = self.settings.watch.clone();
        let old = &self.settings.interval;
        let new = &settings.interval;
        let interval_replaced =
            (new.min(), new.base(), new.max()) != (old.min(), old.base(), old.max());
        if interval_replaced {
            info!(
                interval_ms = new.base().as_millis() as u64,
                max_interval_ms = new.max().as_millis() as u64,
                "reload: new sampling interval"
            );
        } else {
            // The same bounds: keep the control, and where backoff or adaptive sampling put it.
            settings.interval = old.clone();
        }
        let same_sampling = match (&self.sampling, &settings.adaptive_sampling) {
            (Some(running), Some(new)) => {
                (running.min(), running.calm()) == (new.min(), new.calm())
            }
            (None, None) => true,
            _ => false,
        };
        if interval_replaced || !same_sampling {
            self.sampling = settings.adaptive_sampling.clone();
        }
        self.history.set_capacity(settings.history_size);

        let mut changes = StrategyChanges::default();
        let mut previous = std::mem::take(&mut self.slots);
        for registered in strategies {
            let name = registered.strategy.name().to_owned();
            let backoff_policy = BackoffPolicy::new(
                settings.backoff_after_failures,
                registered.trigger.cooldown,
                settings.max_backoff,
            );
            let automatic = !settings
                .rung_only
                .iter()
                .any(|rung| registered.strategy.answers_to(rung));
            let slot = match previous
                .iter()
                .position(|slot| slot.strategy.name() == name)
            {
                Some(index) => {
                    let mut slot = previous.remove(index);
                    if *slot.trigger.spec() == registered.trigger {
                        changes.kept.push(name);
                    } else {
                        changes.retriggered.push(name);
                        slot.trigger.reconfigure(registered.trigger);
                    }
                    slot.strategy = registered.strategy;
                    slot.backoff_policy = backoff_policy;
                    slot.automatic = automatic;
                    slot
                }
                None => {
                    changes.added.push(name);
                    Slot {
                        automatic,
                        backoff_policy,
                        backoff: FailureBackoff::default(),
                        trigger: TriggerState::new(registered.trigger),
                        strategy: registered.strategy,
                        value: None,
                    }
                }
            };
            self.slots.push(slot);
        }
        for slot in previous {
            let name = slot.strategy.name().to_owned();
            changes.removed.push(name);
        }
        self.settings = settings;
        self.rebuild_budgets();
        (changes, interval_replaced)
    }

    /// After a reload: the budgets of the new settings over the new strategy slots; a budget
    /// that keeps its name and its configuration keeps its episode, history and learning.
    fn rebuild_budgets(&mut self) {
        let mut previous = std::mem::take(&mut self.budgets);
        let mut budgets = build_budgets(&self.settings.budgets, &self.slots);
        for budget in &mut budgets {
            if let Some(index) = previous.iter().position(|old| {
                old.budget.name() == budget.budget.name()
                    && old.budget.config() == budget.budget.config()
            }) {
                budget.budget = previous.swap_remove(index).budget;
            }
        }
        self.budgets = budgets;
    }

    fn optimize(&mut self, strategy: Option<String>, reply: Reply) {
        if self.running.is_some() {
            let _ = reply.send(Err(OptimizeError::Busy));
            return;
        }
        let chosen: Vec<usize> = match &strategy {
            None => (0..self.slots.len()).collect(),
            Some(name) => match self.find(name) {
                Some(index) => vec![index],
                None => {
                    let _ = reply.send(Err(OptimizeError::UnknownStrategy {
                        given: name.clone(),
                        known: self.build_view().known_names(),
                    }));
                    return;
                }
            },
        };
        // A manual run is the operator's retry: it ends any back-off of what it runs, and the
        // lengthened cooldown of a strategy that was not helping.
        for &index in &chosen {
            let slot = &mut self.slots[index];
            let change = slot.backoff.reset();
            slot.log_backoff(change);
            let change = slot.trigger.note_manual_run();
            slot.log_cooldown(change);
        }
        let runs = chosen
            .into_iter()
            .map(|index| &self.slots[index])
            .map(|slot| PlannedRun {
                strategy: Arc::clone(&slot.strategy),
                signal: slot.trigger.spec().signal,
                level: slot.trigger.level().max(Level::Warning),
                // Smoothed like an automatic run's (and like the `after` that judges it).
                before: slot
                    .value
                    .or_else(|| self.latest.signal(slot.trigger.spec().signal)),
                kind: RunKind::Manual,
                reason: match &strategy {
                    Some(name) => format!("manual request for `{name}`"),
                    None => "manual request for all strategies".to_owned(),
                },
                prediction: None,
                budget: None,
            })
            .collect();
        self.start_batch(runs, Some(reply));
        self.publish();
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.strategy.answers_to(name))
    }

    /// The slot of the strategy that made `record`, by its canonical name.
    fn slot_of(&self, record: &OptimizationRecord) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|slot| slot.strategy.name() == record.strategy)
    }

    /// [`Engine::slot_of`], to change.
    fn slot_of_mut(&mut self, record: &OptimizationRecord) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|slot| slot.strategy.name() == record.strategy)
    }

    fn start_batch(&mut self, runs: Vec<PlannedRun>, reply: Option<Reply>) {
        if self.settings.dry_run {
            let records = runs
                .into_iter()
                .map(|planned| {
                    info!(strategy = planned.strategy.name(), reason = %planned.reason, "dry run: would run strategy");
                    if let Some((budget, step)) = &planned.budget {
                        self.rung_finished(*budget, step.rung, None);
                    }
                    self.record(FinishedRun {
                        started_at: self.clock.wall(),
                        duration: Duration::ZERO,
                        ended: self.clock.now(),
                        result: Ok(Outcome::nothing_to_do("dry run: not executed")),
                        planned,
                    }, true)
                })
                .collect();
            if let Some(reply) = reply {
                let _ = reply.send(Ok(records));
            }
            return;
        }
        // The target's pids are read now, so a restarted target is acted on at its new pid.
        let context = Context {
            snapshot: Arc::clone(&self.latest),
            level: Level::Ok,
            kind: RunKind::Automatic,
            registry: Arc::clone(&self.registry),
            interval: self.settings.interval.clone(),
            targets: self
                .settings
                .target
                .as_ref()
                .map_or_else(Vec::new, TargetHandle::target_pids),
        };
        let timeout = self.settings.strategy_timeout;
        let (clock, executor) = (Arc::clone(&self.clock), Arc::clone(&self.executor));
        let batch = Box::pin(async move {
            let mut finished = Vec::with_capacity(runs.len());
            for planned in runs {
                let run = execute(planned, context.clone(), timeout, &*clock, &*executor);
                finished.push(run.await);
            }
            finished
        });
        self.batch = Some(self.executor.background(batch));
        self.running = Some(reply);
    }

    fn finish_batch(&mut self, done: Result<Vec<FinishedRun>, TaskFailure>) {
        // The fast watch reports a crossing once; after an action it looks again, so a signal
        // still above a threshold (a rung that was not enough) is seen within its interval,
        // not at the next full sample.
        if let Some(watch) = &self.settings.watch {
            watch.rearm();
        }
        let reply = self.running.take().flatten();
        let automatic = reply.is_none();
        let records: Vec<_> = match done {
            Ok(runs) => runs
                .into_iter()
                .map(|run| {
                    if let Some((budget, step)) = &run.planned.budget {
                        let acted = run.result.as_ref().is_ok_and(|outcome| outcome.acted);
                        self.rung_finished(*budget, step.rung, Some(acted));
                    }
                    let record = self.record(run, false);
                    if record.kind == RunKind::Automatic {
                        self.note_outcome(&record);
                    }
                    record
                })
                .collect(),
            Err(e) => {
                warn!(error = %e, "optimization batch task failed");
                for budget in 0..self.budgets.len() {
                    if let Some(rung) = self.budgets[budget].budget.running_rung() {
                        self.rung_finished(budget, rung, Some(false));
                    }
                }
                Vec::new()
            }
        };
        if automatic && !self.settings.post_action_delay.is_zero() {
            self.quiet_until = Some(self.clock.now() + self.settings.post_action_delay);
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(records));
        }
        self.publish();
    }

    /// Counts an automatic run's failure towards its strategy's back-off, or clears it; a
    /// successful run's effect is noted when it is judged ([`Engine::note_effect`]).
    fn note_outcome(&mut self, record: &OptimizationRecord) {
        let now = self.clock.now().into_std();
        let Some(slot) = self.slot_of_mut(record) else {
            return;
        };
        let change = match record.success {
            true => slot.backoff.reset(),
            false => slot.backoff.record_failure(&slot.backoff_policy, now),
        };
        slot.log_backoff(change);
    }

    /// Lengthens or restores the cooldown of a successful automatic run's strategy by whether
    /// the run helped.
    fn note_effect(&mut self, record: &OptimizationRecord) {
        if !record.success || record.kind != RunKind::Automatic || !self.settings.adaptive_cooldown
        {
            return;
        }
        let max_cooldown = self.settings.max_cooldown;
        let Some(slot) = self.slot_of_mut(record) else {
            return;
        };
        let change = slot.trigger.note_effect(record.helped, max_cooldown);
        slot.log_cooldown(change);
    }

    /// Judges the runs whose `settle` has passed by this tick's (smoothed) trigger values:
    /// fills in their `after` and `helped`, updates the history, the cooldowns and the
    /// metrics, and publishes the finished records.
    fn judge_due(&mut self, now: Instant) {
        if self.unjudged.is_empty() {
            return;
        }
        let (due, waiting) = std::mem::take(&mut self.unjudged)
            .into_iter()
            .partition(|unjudged| unjudged.due <= now);
        self.unjudged = waiting;
        for Unjudged { record, .. } in due {
            let after = self.slot_of(&record).and_then(|slot| slot.value);
            let mut judged = OptimizationRecord::clone(&record);
            judged.after = after;
            judged.helped = judge(true, record.result.as_ref(), record.before, after);
            debug!(
                strategy = %judged.strategy,
                before = ?judged.before,
                after = ?judged.after,
                helped = ?judged.helped,
                "run judged"
            );
            let judged = self.history.judge(judged);
            self.note_effect(&judged);
            let _ = self.events.send(Event::OptimizationCompleted(judged));
        }
    }

    fn record(&mut self, run: FinishedRun, dry_run: bool) -> Arc<OptimizationRecord> {
        // A run's verdict on the sampling interval (interval-backoff's) is applied here.
        if let Some(asked) = run.result.as_ref().ok().and_then(|o| o.interval) {
            let interval = self.settings.interval.set(asked);
            info!(
                strategy = run.planned.strategy.name(),
                interval_ms = interval.as_millis() as u64,
                "sampling interval set"
            );
        }
        let (success, error, result) = match run.result {
            Ok(outcome) => (true, None, Some(outcome)),
            Err(error) => (false, Some(error), None),
        };
        // A run that acted on a signal that was read waits for the sample that judges it;
        // a failure, a run that changed nothing, and a dry run are final now.
        let waits = !dry_run
            && success
            && result.as_ref().is_some_and(|o| o.acted)
            && run.planned.before.is_some();
        let (after, helped) = match (dry_run, waits) {
            (true, _) => (run.planned.before, None),
            (false, true) => (None, None),
            (false, false) => (
                None,
                judge(success, result.as_ref(), run.planned.before, None),
            ),
        };
        let record = OptimizationRecord {
            id: self.history.next_id(),
            strategy: run.planned.strategy.name().to_owned(),
            kind: run.planned.kind,
            reason: run.planned.reason,
            signal: run.planned.signal,
            level: run.planned.level,
            started_at: run.started_at,
            duration_ms: run.duration.as_secs_f64() * 1000.0,
            success,
            error,
            before: run.planned.before,
            after,
            result,
            dry_run,
            prediction: run.planned.prediction,
            helped,
            budget: run.planned.budget.map(|(_, step)| step),
        };
        if !dry_run {
            match &record.error {
                None => info!(
                    strategy = %record.strategy,
                    duration_ms = record.duration_ms,
                    before = ?record.before,
                    summary = record.result.as_ref().map(|o| o.summary.as_str()).unwrap_or(""),
                    "strategy applied"
                ),
                Some(error) => warn!(strategy = %record.strategy, %error, "strategy failed"),
            }
        }
        let record = self.history.push(record);
        if waits {
            self.unjudged.push(Unjudged {
                record: Arc::clone(&record),
                due: run.ended + self.settings.settle,
            });
        } else {
            if !dry_run {
                self.note_effect(&record);
            }
            let _ = self
                .events
                .send(Event::OptimizationCompleted(Arc::clone(&record)));
        }
        record
    }

    fn build_view(&self) -> View {
        let now = self.clock.now().into_std();
        let wall = self.clock.wall();
        View {
            snapshot: Arc::clone(&self.latest),
            sampled_at: self.latest_at,
            stats: self.history.stats().clone(),
            is_optimizing: self.running.is_some(),
            enabled: self.settings.enabled,
            dry_run: self.settings.dry_run,
            interval: self.settings.interval.current(),
            recent: self.history.recent().cloned().collect(),
            strategies: self
                .slots
                .iter()
                .map(|slot| StrategyView {
                    name: slot.strategy.name().to_owned(),
                    aliases: slot
                        .strategy
                        .aliases()
                        .iter()
                        .map(|a| (*a).to_owned())
                        .collect(),
                    description: slot.strategy.description().to_owned(),
                    trigger: slot.trigger.spec().clone(),
                    level: slot.trigger.level(),
                    value: slot.value,
                    consecutive_failures: slot.backoff.consecutive_failures(),
                    backoff_until: slot
                        .backoff
                        .paused_until()
                        .filter(|until| *until > now)
                        .map(|until| wall + (until - now)),
                    cooldown: slot.trigger.cooldown(),
                    unhelpful_runs: slot.trigger.unhelpful_runs(),
                    forecast: slot.trigger.forecast(),
                    threshold: slot.trigger.threshold(),
                    rung_only: !slot.automatic,
                })
                .collect(),
            fast_watch: self.settings.watch.as_ref().map(WatchHandle::status),
            sampling_error: self.sampling_error.clone(),
            watch_wakes: self
                .watch_wakes
                .iter()
                .map(|(&(signal, how), &count)| (signal, how, count))
                .collect(),
            budgets: self.budgets.iter().map(|b| b.budget.view(now)).collect(),
        }
    }

    fn publish(&self) {
        if let Some(view) = &self.view {
            view.send_replace(Arc::new(self.build_view()));
        }
    }
}

/// Resolves when the fast watch (if any) reports a crossing; never without one.
async fn woken(watch: Option<&WatchHandle>) {
    match watch {
        Some(watch) => watch.woken().await,
        None => std::future::pending().await,
    }
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod test_memory;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod reload_tests;

/// The sample runs off the runtime's workers: a sample that blocks leaves them free.
#[cfg(test)]
mod sampling_off_the_workers {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use super::*;

    /// A source whose second sample blocks until the test opens the gate (or 30 s pass).
    struct Gated {
        calls: u32,
        entered: mpsc::Sender<()>,
        gate: mpsc::Receiver<()>,
        finished: Arc<AtomicBool>,
    }

    impl SignalSource for Gated {
        fn sample(&mut self) -> Snapshot {
            self.calls += 1;
            if self.calls == 2 {
                let _ = self.entered.send(());
                let _ = self.gate.recv_timeout(Duration::from_secs(30));
                self.finished.store(true, Ordering::SeqCst);
            }
            Snapshot::empty(SystemTime::now())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_sample_leaves_the_only_runtime_thread_free() {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (gate_tx, gate_rx) = mpsc::channel();
        let finished = Arc::new(AtomicBool::new(false));
        let source = Gated {
            calls: 0,
            entered: entered_tx,
            gate: gate_rx,
            finished: Arc::clone(&finished),
        };
        let mut settings = EngineSettings::for_tests();
        settings.interval =
            IntervalControl::new(Duration::from_millis(10), Duration::from_millis(80));
        let shutdown = CancellationToken::new();
        let (_handle, task) = spawn(
            settings,
            Vec::new(),
            Arc::new(Registry::default()),
            Box::new(source),
            shutdown.clone(),
        );
        // Wait on the runtime (so that it runs the engine) until the tick's sample blocks.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while entered_rx.try_recv().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the engine did not take a second sample within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // This task runs on the runtime's only thread while the sample is still blocked.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !finished.load(Ordering::SeqCst),
            "the blocked sample held the runtime's only thread"
        );
        gate_tx.send(()).unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the engine stops within 30 s")
            .unwrap();
    }
}
