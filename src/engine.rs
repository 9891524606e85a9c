//! The engine: one task that owns the agent's state and runs the loop
//! sample → evaluate → act → record → publish.
//!
//! Everything else talks to it through an [`EngineHandle`]: commands go in over a channel,
//! the latest [`View`] comes out over a watch channel, and [`Event`]s over a broadcast
//! channel. Strategy runs happen in a separate task, one batch at a time (single flight), so
//! sampling and manual requests are answered while a strategy works.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use perfpilot_strategies::{
    Context, IntervalBackoff, IntervalControl, Level, Outcome, Registered, Registry, RunKind,
    Signal, Snapshot, Strategy, TriggerSpec,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::adaptive_sampling::AdaptiveSampling;
use crate::backoff::{BackoffChange, BackoffPolicy, FailureBackoff};
use crate::events::Event;
use crate::history::{judge, History, OptimizationRecord, Prediction, Stats};
use crate::prometheus::Telemetry;
use crate::sample::TargetHandle;
use crate::trigger::{CooldownChange, Forecast, TriggerState};

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
    /// never); see [`crate::backoff`].
    pub backoff_after_failures: u32,
    /// The longest such pause.
    pub max_backoff: Duration,
    /// How long after a run the trigger signal is read again for its `after` value (and the
    /// judgement whether the run helped); zero: at once.
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
        }
    }
}

/// What the engine publishes after every sample and run: everything the API shows.
#[derive(Debug, Clone)]
pub struct View {
    /// The latest sample.
    pub snapshot: Arc<Snapshot>,
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
}

impl View {
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

enum Command {
    Optimize {
        strategy: Option<String>,
        reply: oneshot::Sender<Result<Vec<Arc<OptimizationRecord>>, OptimizeError>>,
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

    /// The latest published view.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }

    /// A receiver of the engine's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The Prometheus metrics the engine keeps up to date.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Resolves once the engine has been told to stop (event streams end then).
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
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
    mut source: Box<dyn SignalSource>,
    shutdown: CancellationToken,
) -> (EngineHandle, tokio::task::JoinHandle<()>) {
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let (events, _) = broadcast::channel(256);
    let telemetry = Arc::new(Telemetry::new(&settings.worker));
    let first = Arc::new(source.sample());
    telemetry.observe_snapshot(&first);
    let slots = strategies
        .into_iter()
        .inspect(|registered| telemetry.register_strategy(registered.strategy.name()))
        .map(|registered| Slot {
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
    let mut engine = Engine {
        history: History::new(settings.history_size),
        sampling: settings.adaptive_sampling.clone(),
        settings,
        slots,
        registry,
        source: Arc::new(Mutex::new(source)),
        latest: first,
        running: None,
        quiet_until: None,
        events: events.clone(),
        telemetry: Arc::clone(&telemetry),
        view: None,
    };
    let (view_tx, view_rx) = watch::channel(Arc::new(engine.build_view()));
    engine.view = Some(view_tx);
    let task = tokio::spawn(engine.run(commands_rx, shutdown.clone()));
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

struct Slot {
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
type SharedSource = Arc<Mutex<Box<dyn SignalSource>>>;

struct Engine {
    settings: EngineSettings,
    sampling: Option<AdaptiveSampling>,
    slots: Vec<Slot>,
    registry: Arc<Registry>,
    source: SharedSource,
    latest: Arc<Snapshot>,
    history: History,
    /// The requester of the batch in flight, if any (`Some(None)`: automatic batch).
    running: Option<Option<Reply>>,
    quiet_until: Option<Instant>,
    events: broadcast::Sender<Event>,
    telemetry: Arc<Telemetry>,
    view: Option<watch::Sender<Arc<View>>>,
}

/// One planned strategy run.
struct PlannedRun {
    strategy: Arc<dyn Strategy>,
    signal: Signal,
    level: Level,
    before: Option<f64>,
    kind: RunKind,
    reason: String,
    prediction: Option<Prediction>,
}

/// A finished run, before it gets its record id.
struct FinishedRun {
    planned: PlannedRun,
    started_at: SystemTime,
    duration: Duration,
    result: Result<Outcome, String>,
    after: Option<f64>,
}

impl Engine {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut batches: JoinSet<Vec<FinishedRun>> = JoinSet::new();
        let mut next_tick = Instant::now() + self.settings.interval.current();
        // The sample in progress: its /proc reads block, so it runs on the blocking pool and
        // the runtime's workers (the API) go on meanwhile.
        let mut sampling: Option<tokio::task::JoinHandle<Snapshot>> = None;
        self.publish();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = batches.join_next() => self.finish_batch(done),
                Some(command) = commands.recv() => self.handle(command, &mut batches),
                sampled = async { sampling.as_mut().expect("guarded by is_some").await },
                    if sampling.is_some() =>
                {
                    sampling = None;
                    match sampled {
                        Ok(snapshot) => self.tick(snapshot, &mut batches),
                        Err(e) => error!(%e, "sampling failed"),
                    }
                    // Fixed rate: the time a tick takes (and the timer's millisecond rounding)
                    // does not push later ticks back; after a stall, one tick at once.
                    next_tick = (next_tick + self.settings.interval.current()).max(Instant::now());
                }
                _ = tokio::time::sleep_until(next_tick), if sampling.is_none() => {
                    let source = Arc::clone(&self.source);
                    sampling = Some(tokio::task::spawn_blocking(move || lock(&source).sample()));
                }
            }
        }
        if self.running.is_some() {
            info!("shutting down: waiting for the running optimization to finish");
            if let Some(done) = batches.join_next().await {
                self.finish_batch(done);
            }
        }
    }

    fn tick(&mut self, snapshot: Snapshot, batches: &mut JoinSet<Vec<FinishedRun>>) {
        let snapshot = Arc::new(snapshot);
        self.latest = Arc::clone(&snapshot);
        self.telemetry.observe_snapshot(&snapshot);
        let now = Instant::now();
        let mut fired = Vec::new();
        let mut attention = false;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let signal = slot.trigger.spec().signal;
            let evaluation = slot
                .trigger
                .evaluate(snapshot.signal(signal), now.into_std());
            slot.value = evaluation.value;
            self.telemetry.observe_trigger(
                slot.strategy.name(),
                &evaluation,
                slot.trigger.cooldown(),
            );
            // The agent's own CPU is interval-backoff's business: sampling faster because CPU
            // is high would make it worse.
            if slot.strategy.name() != IntervalBackoff::NAME {
                attention |= evaluation.attention;
            }
            if evaluation.fire && !slot.backoff.is_paused(now.into_std()) {
                let forecast = evaluation.forecast.filter(|_| evaluation.predictive);
                fired.push((index, forecast));
            }
        }
        self.adapt_interval(attention);
        let _ = self.events.send(Event::MetricsUpdated(snapshot));

        let quiet = self.quiet_until.is_some_and(|until| now < until);
        if self.settings.enabled && self.running.is_none() && !quiet && !fired.is_empty() {
            let runs = fired
                .into_iter()
                .map(|(index, forecast)| {
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
                    }
                })
                .collect();
            self.start_batch(runs, None, batches);
        }
        self.publish();
    }

    /// Sets the next interval. Under CPU pressure interval-backoff decides and this leaves it
    /// alone; otherwise adaptive sampling (if on) picks it from `attention`, or else the
    /// interval halves back towards its base.
    fn adapt_interval(&mut self, attention: bool) {
        let interval = &self.settings.interval;
        let cpu_calm = self
            .slots
            .iter()
            .find(|slot| slot.strategy.name() == IntervalBackoff::NAME)
            .is_none_or(|slot| slot.trigger.level() == Level::Ok);
        if !cpu_calm {
            return;
        }
        let current = interval.current();
        match &mut self.sampling {
            Some(sampling) => {
                let next = interval.set(sampling.next(current, attention));
                if next < current && next == sampling.min() {
                    info!(
                        interval_ms = next.as_millis() as u64,
                        "a signal is near its threshold: sampling faster"
                    );
                } else if next != current {
                    debug!(
                        interval_ms = next.as_millis() as u64,
                        "calm: sampling slower"
                    );
                }
            }
            None if current > interval.base() => {
                let relaxed = interval.relax();
                info!(
                    interval_ms = relaxed.as_millis() as u64,
                    "CPU calm: sampling interval relaxed"
                );
            }
            None => {}
        }
    }

    fn handle(&mut self, command: Command, batches: &mut JoinSet<Vec<FinishedRun>>) {
        let Command::Optimize { strategy, reply } = command;
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
                before: self.latest.signal(slot.trigger.spec().signal),
                kind: RunKind::Manual,
                reason: match &strategy {
                    Some(name) => format!("manual request for `{name}`"),
                    None => "manual request for all strategies".to_owned(),
                },
                prediction: None,
            })
            .collect();
        self.start_batch(runs, Some(reply), batches);
        self.publish();
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.strategy.answers_to(name))
    }

    fn start_batch(
        &mut self,
        runs: Vec<PlannedRun>,
        reply: Option<Reply>,
        batches: &mut JoinSet<Vec<FinishedRun>>,
    ) {
        if self.settings.dry_run {
            let records = runs
                .into_iter()
                .map(|planned| {
                    info!(strategy = planned.strategy.name(), reason = %planned.reason, "dry run: would run strategy");
                    self.record(FinishedRun {
                        started_at: SystemTime::now(),
                        duration: Duration::ZERO,
                        result: Ok(Outcome::nothing_to_do("dry run: not executed")),
                        after: planned.before,
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
        let settle = self.settings.settle;
        let source = Arc::clone(&self.source);
        batches.spawn(async move {
            let mut finished = Vec::with_capacity(runs.len());
            for planned in runs {
                finished.push(execute(planned, context.clone(), timeout, settle, &source).await);
            }
            finished
        });
        self.running = Some(reply);
    }

    fn finish_batch(&mut self, done: Result<Vec<FinishedRun>, tokio::task::JoinError>) {
        let reply = self.running.take().flatten();
        let automatic = reply.is_none();
        let records: Vec<_> = match done {
            Ok(runs) => runs
                .into_iter()
                .map(|run| {
                    let record = self.record(run, false);
                    if record.kind == RunKind::Automatic {
                        self.note_outcome(&record);
                    }
                    record
                })
                .collect(),
            Err(e) => {
                warn!(error = %e, "optimization batch task failed");
                Vec::new()
            }
        };
        if automatic && !self.settings.post_action_delay.is_zero() {
            self.quiet_until = Some(Instant::now() + self.settings.post_action_delay);
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(records));
        }
        self.publish();
    }

    /// Counts an automatic run's failure towards its strategy's back-off, or clears it; and
    /// lengthens or restores its cooldown by whether a successful run helped.
    fn note_outcome(&mut self, record: &OptimizationRecord) {
        let now = Instant::now().into_std();
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|slot| slot.strategy.name() == record.strategy)
        else {
            return;
        };
        let change = match record.success {
            true => slot.backoff.reset(),
            false => slot.backoff.record_failure(&slot.backoff_policy, now),
        };
        slot.log_backoff(change);
        if record.success && self.settings.adaptive_cooldown {
            let change = slot
                .trigger
                .note_effect(record.helped, self.settings.max_cooldown);
            slot.log_cooldown(change);
        }
    }

    fn record(&mut self, run: FinishedRun, dry_run: bool) -> Arc<OptimizationRecord> {
        let (success, error, result) = match run.result {
            Ok(outcome) => (true, None, Some(outcome)),
            Err(error) => (false, Some(error), None),
        };
        let helped = match dry_run {
            true => None,
            false => judge(success, result.as_ref(), run.planned.before, run.after),
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
            after: run.after,
            result,
            dry_run,
            prediction: run.planned.prediction,
            helped,
        };
        if !dry_run {
            match &record.error {
                None => info!(
                    strategy = %record.strategy,
                    duration_ms = record.duration_ms,
                    before = ?record.before,
                    after = ?record.after,
                    summary = record.result.as_ref().map(|o| o.summary.as_str()).unwrap_or(""),
                    "strategy applied"
                ),
                Some(error) => warn!(strategy = %record.strategy, %error, "strategy failed"),
            }
        }
        self.telemetry.observe_record(&record);
        let record = self.history.push(record);
        if let Some(stats) = self.history.stats().per_strategy.get(&record.strategy) {
            self.telemetry
                .observe_effectiveness(&record.strategy, stats);
        }
        let _ = self
            .events
            .send(Event::OptimizationCompleted(Arc::clone(&record)));
        record
    }

    fn build_view(&self) -> View {
        let now = Instant::now().into_std();
        let wall = SystemTime::now();
        View {
            snapshot: Arc::clone(&self.latest),
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
                })
                .collect(),
        }
    }

    fn publish(&self) {
        self.telemetry.observe_state(
            self.settings.interval.current().as_secs_f64(),
            self.running.is_some(),
        );
        if let Some(view) = &self.view {
            view.send_replace(Arc::new(self.build_view()));
        }
    }
}

/// Runs one strategy in its own task under `timeout`, catching panics, then (after `settle`)
/// samples again to read the trigger signal after it.
async fn execute(
    planned: PlannedRun,
    mut context: Context,
    timeout: Duration,
    settle: Duration,
    source: &SharedSource,
) -> FinishedRun {
    context.level = planned.level;
    context.kind = planned.kind;
    let started_at = SystemTime::now();
    let started = Instant::now();
    let strategy = Arc::clone(&planned.strategy);
    let task = tokio::spawn(async move { strategy.run(context).await });
    let abort = task.abort_handle();
    let result = match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(outcome))) => Ok(outcome),
        Ok(Ok(Err(error))) => Err(error.to_string()),
        Ok(Err(join_error)) if join_error.is_panic() => Err(format!(
            "strategy panicked: {}",
            panic_message(join_error.into_panic())
        )),
        Ok(Err(join_error)) => Err(format!("strategy task failed: {join_error}")),
        Err(_) => {
            abort.abort();
            Err(format!(
                "strategy timed out after {} ms",
                timeout.as_millis()
            ))
        }
    };
    let duration = started.elapsed();
    if !settle.is_zero() {
        tokio::time::sleep(settle).await;
    }
    let after = lock(source).sample().signal(planned.signal);
    FinishedRun {
        planned,
        started_at,
        duration,
        result,
        after,
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn lock(source: &SharedSource) -> std::sync::MutexGuard<'_, Box<dyn SignalSource>> {
    // A panic while sampling poisons the lock; the source itself is still usable.
    source
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests;

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
