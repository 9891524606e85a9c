//! The replay driver: the real engine ([`crate::engine::spawn_on`]) on a [`ReplayClock`],
//! fed the recording's samples one by one, with an executor that does its work inline
//! (a sample when the clock offers one) and strategies that do not act but return the
//! recorded (or modelled) outcome when the clock reaches the recorded run's end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use perfpilot_strategies::async_trait;
use perfpilot_strategies::{
    Context, Outcome, Registered, Registry, Signal, Snapshot, Strategy, StrategyError,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::budget::BudgetView;
use crate::engine::{
    spawn_on, Clock, EngineSettings, Executor, FinishedRun, Inline, Parts, Pending, SharedSource,
    SignalSource, TaskFailure,
};
use crate::events::Event;
use crate::history::OptimizationRecord;
use crate::recorder::Episode;
use crate::sample::{WatchHandle, WatchMode};

use super::clock::ReplayClock;
use super::effect::{Departure, Departures, EffectModel};
use super::episodes::Episodes;
use super::recording::{self, Recording};
use super::snapshot;
use super::ReplayError;

/// How long (real time) the engine may take to settle after one step before the replay gives
/// up: far more than a step takes (microseconds).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the engine did over the recording.
#[derive(Debug, Clone)]
pub struct Driven {
    /// Every run, in the order they started.
    pub runs: Vec<Arc<OptimizationRecord>>,
    /// Each run's sample index (as `runs`).
    pub run_samples: Vec<usize>,
    /// Each run was one the recording has at that sample (as `runs`).
    pub matched: Vec<bool>,
    /// Recorded automatic runs the replay did not repeat (indexes into the recording's runs).
    pub dropped: Vec<usize>,
    /// Each budget at the end.
    pub budgets: Vec<BudgetView>,
    /// Exhausted ladders.
    pub exhaustions: usize,
    /// The replayed values of the tracked signals, sample by sample.
    pub replayed: BTreeMap<Signal, Vec<Option<f64>>>,
    /// The budgets' episodes, by start.
    pub episodes: Vec<Episode>,
}

/// What the source, the strategies and the driver share: where the replay stands.
#[derive(Debug)]
struct Ledger {
    recording: Arc<Recording>,
    model: EffectModel,
    /// The sample the clock stands at.
    cursor: usize,
    /// The snapshot the engine gets at `cursor` (departures applied).
    current: Snapshot,
    departures: Departures,
    /// Each recorded run's sample.
    run_samples: Vec<usize>,
    /// Each recorded run was repeated (true) or dropped (true too, once past): settled.
    settled: Vec<bool>,
    dropped: Vec<usize>,
    /// Replayed runs the recording has, by (strategy, sample).
    matched: Vec<(String, usize)>,
    /// When the recorded run in flight ends: the driver moves the clock there before the
    /// next sample after it.
    run_end: Option<SystemTime>,
    tracked: BTreeMap<Signal, Vec<Option<f64>>>,
}

type SharedLedger = Arc<Mutex<Ledger>>;

fn lock(ledger: &SharedLedger) -> MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ledger {
    /// Stands at sample `index`: the snapshot the engine will get, with departures applied.
    fn stand_at(&mut self, index: usize) {
        self.cursor = index;
        let at = self.recording.samples[index].at;
        let mut current = self.recording.snapshot(index);
        let signals: Vec<Signal> = self.departures.signals().collect();
        for signal in signals {
            if let Some(value) = current.signal(signal) {
                let replayed = self.departures.apply(signal, at, value);
                snapshot::write(&mut current, signal, replayed);
            }
        }
        for (signal, series) in &mut self.tracked {
            series.push(current.signal(*signal));
        }
        self.current = current;
    }

    /// The recorded automatic run of `strategy` at the current sample not yet settled.
    fn recorded_here(&self, strategy: &str) -> Option<usize> {
        let recording = &self.recording;
        (0..recording.runs.len()).find(|&k| {
            !self.settled[k]
                && self.run_samples[k] == self.cursor
                && recording.runs[k].kind != "manual"
                && recording.runs[k].strategy == strategy
        })
    }

    /// After the engine settled at the current sample: the recorded runs it did not repeat
    /// are dropped, and their relief comes back from the next sample on.
    fn drop_unrepeated(&mut self) {
        let at = self.recording.samples[self.cursor].at;
        for k in 0..self.recording.runs.len() {
            let run = &self.recording.runs[k];
            if self.settled[k] || self.run_samples[k] != self.cursor || run.kind == "manual" {
                continue;
            }
            self.settled[k] = true;
            self.dropped.push(k);
            let Some(signal) = run.signal else { continue };
            let effect = self.model.of(&run.strategy);
            let relief = match (run.before, run.after) {
                (Some(before), Some(after)) if before > after => before - after,
                (Some(before), _) => effect.relief_share * before,
                _ => 0.0,
            };
            if run.success && relief > 0.0 {
                self.departures.push(Departure {
                    signal,
                    at,
                    delta: relief,
                    fade_ms: effect.fade_seconds * 1000.0,
                });
            }
        }
    }
}

/// Feeds the engine the ledger's current snapshot.
struct Source(SharedLedger);

impl SignalSource for Source {
    fn sample(&mut self) -> Snapshot {
        lock(&self.0).current.clone()
    }
}

/// A configured strategy that does not act: it answers to the same names and returns what
/// the recorded run at this sample returned, or, for a run the recording does not have, that
/// it acted, and takes its modelled relief off the signal.
#[derive(Debug)]
struct Modelled {
    inner: Arc<dyn Strategy>,
    signal: Signal,
    ledger: SharedLedger,
    clock: Arc<ReplayClock>,
}

#[async_trait]
impl Strategy for Modelled {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[&str] {
        self.inner.aliases()
    }
    fn description(&self) -> &str {
        self.inner.description()
    }
    fn paces_sampling(&self) -> bool {
        self.inner.paces_sampling()
    }
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    fn acts_on(&self) -> String {
        self.inner.acts_on()
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        let name = self.inner.name();
        let recorded = {
            let mut ledger = lock(&self.ledger);
            ledger.recorded_here(name).map(|k| {
                ledger.settled[k] = true;
                let cursor = ledger.cursor;
                ledger.matched.push((name.to_owned(), cursor));
                let run = ledger.recording.runs[k].clone();
                // It ends when it ended: as long after its recorded start (or now, if
                // later) as it took. Samples taken meanwhile see it running, and its rung's
                // settle counts from its end.
                let started = recording::time(run.started_at).max(self.clock.wall());
                let end = started + Duration::from_secs_f64(run.duration_ms / 1000.0);
                ledger.run_end = Some(end);
                (run, end)
            })
        };
        if let Some((run, end)) = recorded {
            self.clock.until(end).await;
            lock(&self.ledger).run_end = None;
            return match (&run.error, run.success, run.acted) {
                (_, true, true) => Ok(Outcome::acted("as recorded")),
                (_, true, false) => Ok(Outcome::nothing_to_do("as recorded")),
                (error, false, _) => Err(StrategyError::Failed(
                    error
                        .clone()
                        .unwrap_or_else(|| "failed as recorded".to_owned()),
                )),
            };
        }
        let mut ledger = lock(&self.ledger);
        let effect = ledger.model.of(name);
        let at = ledger.recording.samples[ledger.cursor].at;
        if let Some(value) = ledger.current.signal(self.signal) {
            ledger.departures.push(Departure {
                signal: self.signal,
                at,
                delta: -effect.relief_share * value,
                fade_ms: effect.fade_seconds * 1000.0,
            });
        }
        Ok(Outcome::acted("modelled"))
    }
}

/// Does the engine's work inline ([`Inline`]), but a sample only when the clock offers one:
/// whatever made the engine ask (its timer, a wake, a run's end), it gets the next recorded
/// sample at that sample's time.
#[derive(Debug)]
struct Offered(Arc<ReplayClock>);

impl Executor for Offered {
    fn sample(&self, source: SharedSource) -> Pending<Result<Snapshot, TaskFailure>> {
        let offered = self.0.offered();
        Box::pin(async move {
            offered.await;
            Inline.sample(source).await
        })
    }

    fn run(
        &self,
        strategy: Arc<dyn Strategy>,
        context: Context,
        timeout: Duration,
    ) -> Pending<Result<Outcome, String>> {
        Inline.run(strategy, context, timeout)
    }

    fn background(
        &self,
        batch: Pending<Vec<FinishedRun>>,
    ) -> Pending<Result<Vec<FinishedRun>, TaskFailure>> {
        Inline.background(batch)
    }
}

/// Runs the engine with `settings` and `strategies` over `recording`; `tracked`: the
/// signals whose replayed values to keep.
pub(super) fn drive(
    recording: Arc<Recording>,
    settings: EngineSettings,
    strategies: Vec<Registered>,
    model: EffectModel,
    tracked: &[Signal],
) -> Result<Driven, ReplayError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| ReplayError::Engine(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(drive_on(recording, settings, strategies, model, tracked))
}

async fn drive_on(
    recording: Arc<Recording>,
    settings: EngineSettings,
    strategies: Vec<Registered>,
    model: EffectModel,
    tracked: &[Signal],
) -> Result<Driven, ReplayError> {
    let run_samples: Vec<usize> = recording
        .runs
        .iter()
        .map(|run| recording.sample_of(run.started_at))
        .collect();
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger {
        current: recording.snapshot(0),
        settled: vec![false; recording.runs.len()],
        recording: Arc::clone(&recording),
        model,
        cursor: 0,
        departures: Departures::default(),
        run_samples,
        dropped: Vec::new(),
        matched: Vec::new(),
        run_end: None,
        tracked: tracked.iter().map(|s| (*s, Vec::new())).collect(),
    }));
    lock(&ledger).stand_at(0);
    // The fast watch's wakes are replayed where the recording has them: the engine gets a
    // watch that the driver wakes by hand, and that holds the slopes the recorded engine took.
    let watch = WatchHandle::detached();
    let first = &recording.samples[0];
    let start = match &first.evaluated {
        Some(evaluated) => {
            watch.hold_slopes(&evaluated.watch_slopes);
            evaluated.at
        }
        None => recording::time(first.at),
    };
    let clock = Arc::new(ReplayClock::at(start));
    let slack = settings.interval.current() / 2;
    let mut settings = settings;
    settings.watch = Some(watch.clone());
    let wake_signal = tracked.first().copied().unwrap_or(Signal::MemoryUsage);
    let lags = recording.tick_lags();
    let strategies = strategies
        .into_iter()
        .map(|registered| Registered {
            strategy: Arc::new(Modelled {
                inner: registered.strategy,
                signal: registered.trigger.signal,
                ledger: Arc::clone(&ledger),
                clock: Arc::clone(&clock),
            }),
            trigger: registered.trigger,
        })
        .collect();
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn_on(
        settings,
        strategies,
        Arc::new(Registry::default()),
        Box::new(Source(Arc::clone(&ledger))),
        shutdown.clone(),
        Parts {
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            executor: Arc::new(Offered(Arc::clone(&clock))),
        },
    );
    let mut events = handle.subscribe();
    let mut records: Vec<Arc<OptimizationRecord>> = Vec::new();
    let mut exhaustions = 0;
    let mut episodes = Episodes::default();
    episodes.follow(&handle.view().budgets, first.at);
    let settle = |moves: u64, at: usize| {
        let clock = Arc::clone(&clock);
        async move {
            tokio::time::timeout(STEP_TIMEOUT, clock.settled(moves))
                .await
                .map_err(|_| {
                    ReplayError::Engine(format!(
                        "the engine did not settle within {} s at sample {at}",
                        STEP_TIMEOUT.as_secs()
                    ))
                })
        }
    };
    for (index, (sample, lag)) in recording.samples.iter().zip(&lags).enumerate().skip(1) {
        // The engine's clock as recorded (and the watch's slopes it took); from a recording
        // without it, the sample's stamp, or the start of the run that followed it.
        let stamped = match &sample.evaluated {
            Some(evaluated) => evaluated.at,
            None => recording::time(sample.at + lag),
        };
        // A recorded run that ended before this sample ends there.
        while let Some(end) = run_end(&ledger).filter(|end| *end <= stamped) {
            settle(clock.move_to(end), index).await?;
        }
        lock(&ledger).stand_at(index);
        let at = match &sample.evaluated {
            Some(evaluated) => {
                watch.hold_slopes(&evaluated.watch_slopes);
                stamped
            }
            // Recorded as a wake, or stamped well before the tick the engine waits for (as
            // the one it takes after a run a wake came during): woken for; any other is the
            // engine's next tick.
            None if recording.woken_at(index) || clock.before_tick(stamped, slack) => {
                watch.wake(wake_signal, WatchMode::Poll);
                stamped
            }
            None => clock.tick_time(stamped, slack),
        };
        settle(clock.offer_at(at), index).await?;
        // Not asked for (its timer not due, no wake pending): the watch woke the engine for it.
        if !clock.all_taken() {
            watch.wake(wake_signal, WatchMode::Poll);
            settle(clock.move_to(at), index).await?;
        }
        lock(&ledger).drop_unrepeated();
        drain(&mut events, &mut records, &mut exhaustions)?;
        episodes.follow(&handle.view().budgets, sample.at);
    }
    // A run in flight at the end of the recording ends as recorded.
    let last = recording.samples.len() - 1;
    while let Some(end) = run_end(&ledger) {
        settle(clock.move_to(end), last).await?;
    }
    let budgets = handle.view().budgets.clone();
    shutdown.cancel();
    tokio::time::timeout(STEP_TIMEOUT, task)
        .await
        .map_err(|_| ReplayError::Engine("the engine did not stop".to_owned()))?
        .map_err(|e| ReplayError::Engine(format!("the engine failed: {e}")))?;
    drain(&mut events, &mut records, &mut exhaustions)?;
    records.sort_by_key(|record| record.id);
    records.dedup_by_key(|record| record.id);
    let ledger = lock(&ledger);
    let run_samples: Vec<usize> = records
        .iter()
        .map(|r| recording.sample_of(recording::millis(r.started_at)))
        .collect();
    let matched = records
        .iter()
        .zip(&run_samples)
        .map(|(r, &sample)| {
            ledger
                .matched
                .iter()
                .any(|(name, at)| *name == r.strategy && *at == sample)
        })
        .collect();
    Ok(Driven {
        runs: records,
        run_samples,
        matched,
        dropped: ledger.dropped.clone(),
        budgets,
        exhaustions,
        replayed: ledger.tracked.clone(),
        episodes: episodes.into_vec(),
    })
}

/// When the recorded run in flight ends (the ledger not held after: the run takes it).
fn run_end(ledger: &SharedLedger) -> Option<SystemTime> {
    lock(ledger).run_end
}

/// Takes the events sent so far: finished runs and exhausted ladders.
fn drain(
    events: &mut broadcast::Receiver<Event>,
    records: &mut Vec<Arc<OptimizationRecord>>,
    exhaustions: &mut usize,
) -> Result<(), ReplayError> {
    loop {
        match events.try_recv() {
            Ok(Event::OptimizationCompleted(record)) => records.push(record),
            Ok(Event::BudgetExhausted(_)) => *exhaustions += 1,
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                return Err(ReplayError::Engine(format!(
                    "the replay fell behind the engine's events ({missed} missed)"
                )))
            }
            Err(_) => return Ok(()),
        }
    }
}
