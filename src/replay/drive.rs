//! The replay driver: the real engine ([`crate::engine::spawn_on`]) on a [`ReplayClock`],
//! fed the recording's samples one by one, with an executor that does its work inline and
//! strategies that do not act but return the recorded (or modelled) outcome.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use perfpilot_strategies::async_trait;
use perfpilot_strategies::{
    Context, Outcome, Registered, Registry, Signal, Snapshot, Strategy, StrategyError,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::budget::BudgetView;
use crate::engine::{
    spawn_on, Clock, EngineSettings, Executor, FinishedRun, Parts, Pending, SharedSource,
    SignalSource, TaskFailure,
};
use crate::events::Event;
use crate::history::OptimizationRecord;
use crate::sample::{WatchHandle, WatchMode};

use super::clock::ReplayClock;
use super::effect::{Departure, Departures, EffectModel};
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
        let mut ledger = lock(&self.ledger);
        let name = self.inner.name();
        if let Some(k) = ledger.recorded_here(name) {
            ledger.settled[k] = true;
            let cursor = ledger.cursor;
            ledger.matched.push((name.to_owned(), cursor));
            let run = &ledger.recording.runs[k];
            // It takes as long as it took (within the time to the next sample): the rung's
            // settle counts from its end.
            let next = ledger.recording.samples.get(cursor + 1).map(|s| s.at);
            let room = next.map_or(f64::MAX, |next| (next - run.started_at - 1) as f64);
            let took = run.duration_ms.min(room).max(0.0);
            self.clock.advance(Duration::from_secs_f64(took / 1000.0));
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

/// Samples and runs inline: the replay's time does not move during them.
#[derive(Debug)]
pub(super) struct Inline;

impl Executor for Inline {
    fn sample(&self, source: SharedSource) -> Pending<Result<Snapshot, TaskFailure>> {
        let snapshot = source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .sample();
        Box::pin(std::future::ready(Ok(snapshot)))
    }

    fn run(
        &self,
        strategy: Arc<dyn Strategy>,
        context: Context,
        _timeout: Duration,
    ) -> Pending<Result<Outcome, String>> {
        Box::pin(async move { strategy.run(context).await.map_err(|e| e.to_string()) })
    }

    fn background(
        &self,
        batch: Pending<Vec<FinishedRun>>,
    ) -> Pending<Result<Vec<FinishedRun>, TaskFailure>> {
        Box::pin(async move { Ok(batch.await) })
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
        tracked: tracked.iter().map(|s| (*s, Vec::new())).collect(),
    }));
    lock(&ledger).stand_at(0);
    let clock = Arc::new(ReplayClock::at(recording::time(recording.samples[0].at)));
    let slack = settings.interval.current() / 2;
    // The fast watch's wakes are replayed where the recording has them: the engine gets a
    // watch that the driver wakes by hand.
    let watch = WatchHandle::detached();
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
            executor: Arc::new(Inline),
        },
    );
    let mut events = handle.subscribe();
    let mut records: Vec<Arc<OptimizationRecord>> = Vec::new();
    let mut exhaustions = 0;
    for (index, (sample, lag)) in recording.samples.iter().zip(&lags).enumerate().skip(1) {
        lock(&ledger).stand_at(index);
        let stamped = recording::time(sample.at + lag);
        // A sample the watch woke the engine for (recorded as such, or stamped well before
        // the tick the engine waits for, as the one it takes after a run the wake came
        // during) is taken at once; any other is the engine's next tick.
        let moves = if recording.woken_at(index) || clock.before_tick(stamped, slack) {
            watch.wake(wake_signal, WatchMode::Poll);
            clock.move_to(stamped)
        } else {
            clock.tick_at(stamped, slack)
        };
        tokio::time::timeout(STEP_TIMEOUT, clock.settled(moves))
            .await
            .map_err(|_| {
                ReplayError::Engine(format!(
                    "the engine did not settle within {} s at sample {index}",
                    STEP_TIMEOUT.as_secs()
                ))
            })?;
        lock(&ledger).drop_unrepeated();
        drain(&mut events, &mut records, &mut exhaustions)?;
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
    })
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
