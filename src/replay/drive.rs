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
use super::effect::{self, Departure, DepartureId, Departures, EffectModel};
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
    /// Each run was matched to a recorded run of its strategy at another sample: the same
    /// action shifted in time (as `runs`).
    pub shifted: Vec<bool>,
    /// Recorded automatic runs the replay did not repeat, nor shifted (indexes into the
    /// recording's runs).
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
    /// Recorded runs dropped (in order), and those of them a replayed run was matched to
    /// later (by run).
    dropped: Vec<usize>,
    shifted_recorded: Vec<bool>,
    /// Replayed runs the recording has, by (strategy, sample).
    matched: Vec<(String, usize)>,
    /// Replayed runs matched to a recorded run of their strategy at another sample, by
    /// (strategy, sample).
    shifted: Vec<(String, usize)>,
    /// Dropped recorded runs not matched yet: (run, when, its add-back).
    unmatched_dropped: Vec<(usize, i64, Option<DepartureId>)>,
    /// Replayed runs the recording does not have, not matched yet: (strategy, sample, when,
    /// its modelled relief).
    unmatched_added: Vec<(String, usize, i64, Option<DepartureId>)>,
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
    /// At the recording's start, nothing settled, nothing departed from.
    fn new(recording: Arc<Recording>, model: EffectModel, tracked: &[Signal]) -> Ledger {
        let run_samples = recording
            .runs
            .iter()
            .map(|run| recording.sample_of(run.started_at))
            .collect();
        Ledger {
            current: recording.snapshot(0),
            settled: vec![false; recording.runs.len()],
            shifted_recorded: vec![false; recording.runs.len()],
            recording,
            model,
            cursor: 0,
            departures: Departures::default(),
            run_samples,
            dropped: Vec::new(),
            matched: Vec::new(),
            shifted: Vec::new(),
            unmatched_dropped: Vec::new(),
            unmatched_added: Vec::new(),
            run_end: None,
            tracked: tracked.iter().map(|s| (*s, Vec::new())).collect(),
        }
    }

    /// Stands at sample `index`: the snapshot the engine will get, with departures applied.
    fn stand_at(&mut self, index: usize) {
        self.cursor = index;
        let at = self.recording.samples[index].at;
        let mut current = self.recording.snapshot(index);
        // Each signal once, however many departures it has in force.
        let mut signals: Vec<Signal> = self.departures.signals().collect();
        signals.sort_by_key(|s| *s as usize);
        signals.dedup();
        for signal in signals {
            if let Some(value) = current.signal(signal) {
                let range = self.recorded_range(signal, index);
                let replayed = self.departures.apply(signal, at, value, range);
                snapshot::write(&mut current, signal, replayed);
            }
        }
        for (signal, series) in &mut self.tracked {
            series.push(current.signal(*signal));
        }
        self.current = current;
    }

    /// The lowest and highest recorded value of `signal` from the sample of its oldest
    /// departure in force to sample `index`.
    fn recorded_range(&self, signal: Signal, index: usize) -> (f64, f64) {
        let start = self
            .departures
            .oldest(signal)
            .map_or(index, |at| self.recording.sample_of(at));
        let Some(column) = Recording::column(signal) else {
            return (f64::INFINITY, f64::NEG_INFINITY);
        };
        self.recording.samples[start.min(index)..=index]
            .iter()
            .filter_map(|s| s.values[column])
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
                (low.min(v), high.max(v))
            })
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
    /// are dropped. One that a replayed run of its strategy made shortly before (within its
    /// match window) is that run shifted: the replayed run's relief ends here. Any other
    /// gives its bounded relief back from the next sample on.
    fn drop_unrepeated(&mut self) {
        let at = self.recording.samples[self.cursor].at;
        for k in 0..self.recording.runs.len() {
            let run = &self.recording.runs[k];
            if self.settled[k] || self.run_samples[k] != self.cursor || run.kind == "manual" {
                continue;
            }
            self.settled[k] = true;
            let window = self.model.window(&run.strategy);
            let earlier = self
                .unmatched_added
                .iter()
                .position(|(name, _, when, _)| *name == run.strategy && at - when <= window);
            if let Some(position) = earlier {
                let (name, sample, _, departure) = self.unmatched_added.remove(position);
                if let Some(id) = departure {
                    self.departures.end(id, at);
                }
                self.shifted.push((name, sample));
                continue;
            }
            self.dropped.push(k);
            let effect = self.model.of(&run.strategy);
            let relief = effect::add_back(&self.recording, k, effect.relief_share);
            let departure = match run.signal {
                Some(signal) if relief > 0.0 => Some(self.departures.push(Departure {
                    signal,
                    at,
                    delta: relief,
                    fade_ms: effect.fade_seconds * 1000.0,
                    until: None,
                })),
                _ => None,
            };
            self.unmatched_dropped.push((k, at, departure));
        }
    }

    /// A replayed run of `strategy` the recording does not have at the current sample: the
    /// shift of a recorded run of it dropped shortly before (within its match window), whose
    /// add-back ends here, or an added run that takes its modelled relief off the signal.
    fn add_unrecorded(&mut self, strategy: &str, signal: Signal) {
        let at = self.recording.samples[self.cursor].at;
        let window = self.model.window(strategy);
        let runs = &self.recording.runs;
        // Past their window, neither list's entries can be matched any more.
        let model = &self.model;
        self.unmatched_dropped
            .retain(|(k, when, _)| at - when <= model.window(&runs[*k].strategy));
        self.unmatched_added
            .retain(|(name, _, when, _)| at - when <= model.window(name));
        let earlier = self
            .unmatched_dropped
            .iter()
            .position(|(k, when, _)| runs[*k].strategy == strategy && at - when <= window);
        if let Some(position) = earlier {
            let (k, _, departure) = self.unmatched_dropped.remove(position);
            if let Some(id) = departure {
                self.departures.end(id, at);
            }
            self.shifted_recorded[k] = true;
            self.shifted.push((strategy.to_owned(), self.cursor));
            return;
        }
        let effect = self.model.of(strategy);
        let departure = self.current.signal(signal).map(|value| {
            self.departures.push(Departure {
                signal,
                at,
                delta: -effect.relief_share * value,
                fade_ms: effect.fade_seconds * 1000.0,
                until: None,
            })
        });
        self.unmatched_added
            .push((strategy.to_owned(), self.cursor, at, departure));
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
        lock(&self.ledger).add_unrecorded(name, self.signal);
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
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::new(
        Arc::clone(&recording),
        model,
        tracked,
    )));
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
    let among = |pairs: &[(String, usize)]| -> Vec<bool> {
        records
            .iter()
            .zip(&run_samples)
            .map(|(r, &sample)| {
                pairs
                    .iter()
                    .any(|(name, at)| *name == r.strategy && *at == sample)
            })
            .collect()
    };
    let matched = among(&ledger.matched);
    let shifted = among(&ledger.shifted);
    Ok(Driven {
        runs: records,
        run_samples,
        matched,
        shifted,
        dropped: ledger
            .dropped
            .iter()
            .copied()
            .filter(|k| !ledger.shifted_recorded[*k])
            .collect(),
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

#[cfg(test)]
mod tests {
    //! The ledger's departures on a hand-made recording: memory usage sampled every second,
    //! with recorded `purge` runs, replayed by hand as the engine would (stand at a sample,
    //! the strategies run, the unrepeated runs are dropped).

    use super::*;
    use crate::recorder::columns;
    use crate::replay::effect::StrategyEffect;
    use crate::replay::{Cut, RecordedRun, Sample};

    const START: i64 = 1_700_000_000_000;

    fn recording(values: &[f64], runs: &[(usize, f64, f64)]) -> Arc<Recording> {
        let column = columns::index_of("memory_usage").expect("a memory column");
        let samples = values
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let mut values = vec![None; columns::count()];
                values[column] = Some(*value);
                Sample {
                    at: START + index as i64 * 1000,
                    values,
                    evaluated: None,
                }
            })
            .collect();
        let runs = runs
            .iter()
            .map(|&(sample, before, after)| RecordedRun {
                strategy: "purge".to_owned(),
                started_at: START + sample as i64 * 1000 + 5,
                signal: Some(Signal::MemoryUsage),
                rung: Some(("memory".to_owned(), 0)),
                before: Some(before),
                after: Some(after),
                success: true,
                acted: true,
                error: None,
                kind: "automatic".to_owned(),
                duration_ms: 1.0,
            })
            .collect();
        Arc::new(Recording {
            samples,
            runs,
            episodes: Vec::new(),
            exhaustions: Vec::new(),
            wakes: Vec::new(),
            cut: Cut::End,
            agents: Vec::new(),
        })
    }

    /// `purge` relieves a quarter of the signal, fading over 10 s; its cooldown is 5 s.
    fn model() -> EffectModel {
        let effect = StrategyEffect {
            relief_share: 0.25,
            fade_seconds: 10.0,
            observed_runs: 3,
        };
        EffectModel {
            strategies: [("purge".to_owned(), effect)].into(),
            cooldowns: BTreeMap::new(),
        }
        .with_cooldowns([("purge".to_owned(), 5.0)].into())
    }

    /// Replays `recording`: the candidate runs `purge` at the samples in `runs` and at no
    /// other; returns the ledger at the end.
    fn replay(recording: &Arc<Recording>, runs: &[usize]) -> Ledger {
        let mut ledger = Ledger::new(Arc::clone(recording), model(), &[Signal::MemoryUsage]);
        for index in 0..recording.samples.len() {
            ledger.stand_at(index);
            if runs.contains(&index) {
                match ledger.recorded_here("purge") {
                    Some(k) => {
                        ledger.settled[k] = true;
                        ledger.matched.push(("purge".to_owned(), index));
                    }
                    None => ledger.add_unrecorded("purge", Signal::MemoryUsage),
                }
            }
            ledger.drop_unrepeated();
        }
        ledger
    }

    fn replayed(ledger: &Ledger) -> Vec<f64> {
        ledger.tracked[&Signal::MemoryUsage]
            .iter()
            .map(|v| v.expect("a value at every sample"))
            .collect()
    }

    fn recorded(recording: &Recording) -> Vec<f64> {
        let column = Recording::column(Signal::MemoryUsage).expect("a column");
        recording
            .samples
            .iter()
            .map(|s| s.values[column].expect("a value"))
            .collect()
    }

    #[test]
    fn a_run_shifted_in_time_is_matched_and_departs_only_between_the_two_times() {
        let values = [
            0.5, 0.6, 0.7, 0.8, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.7, 0.72,
        ];
        let recording = recording(&values, &[(3, 0.8, 0.6)]);
        // The candidate purges two samples later than the recording did.
        let ledger = replay(&recording, &[5]);
        assert_eq!(ledger.shifted, [("purge".to_owned(), 5)], "matched");
        assert!(
            ledger.shifted_recorded[0],
            "the recorded run is the shifted one"
        );
        assert!(
            ledger.unmatched_added.is_empty() && ledger.unmatched_dropped.is_empty(),
            "nothing left unmatched"
        );
        let (replayed, recorded) = (replayed(&ledger), recorded(&recording));
        assert!(
            replayed[4] > recorded[4] && replayed[5] > recorded[5],
            "between the recorded run and its shift the signal is not relieved: {replayed:?}"
        );
        assert_eq!(
            replayed[..4],
            recorded[..4],
            "before the recorded run, as recorded"
        );
        assert_eq!(
            replayed[6..],
            recorded[6..],
            "after the shifted run, as recorded: no departure beyond the shift"
        );
    }

    #[test]
    fn a_run_made_earlier_than_recorded_is_matched_too() {
        let values = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.6, 0.65, 0.7, 0.75];
        let recording = recording(&values, &[(5, 0.9, 0.6)]);
        // The candidate purges two samples before the recording did.
        let ledger = replay(&recording, &[3]);
        assert_eq!(ledger.shifted, [("purge".to_owned(), 3)], "matched");
        let (replayed, recorded) = (replayed(&ledger), recorded(&recording));
        assert!(
            replayed[4] < recorded[4] && replayed[5] < recorded[5],
            "relieved from the earlier run on: {replayed:?}"
        );
        assert_eq!(
            replayed[6..],
            recorded[6..],
            "and as recorded from the recorded run on"
        );
    }

    #[test]
    fn a_dropped_runs_relief_comes_back_at_most_as_far_as_the_signal_rose() {
        // The signal rose from 0.7 to 0.8 after the previous run; the run's judgement read
        // its `after` in a dip (0.3): its add-back is the rise, 0.1, not 0.5.
        let values = [0.7, 0.75, 0.72, 0.7, 0.75, 0.8, 0.7, 0.72, 0.74, 0.76];
        let recording = recording(&values, &[(0, 0.7, 0.7), (5, 0.8, 0.3)]);
        let ledger = replay(&recording, &[0]);
        assert_eq!(ledger.dropped, [1], "the second run is dropped");
        let (replayed, recorded) = (replayed(&ledger), recorded(&recording));
        for index in 6..values.len() {
            let departure = replayed[index] - recorded[index];
            assert!(
                departure > 0.0 && departure <= 0.1 + 1e-9,
                "at sample {index} the add-back is within the recorded rise (0.1): {departure}"
            );
        }
    }

    #[test]
    fn the_add_backs_of_dropped_runs_do_not_compound_past_the_recorded_peak_and_one_relief() {
        // Four recorded runs two seconds apart, each with a relief of 0.2 after a rise of
        // 0.2; the candidate makes none of them. Their add-backs, fading over 10 s, would sum
        // to 0.48 at sample 8.
        let values = [0.5, 0.7, 0.5, 0.7, 0.5, 0.7, 0.5, 0.7, 0.5, 0.5];
        let runs = [(1, 0.7, 0.5), (3, 0.7, 0.5), (5, 0.7, 0.5), (7, 0.7, 0.5)];
        let recording = recording(&values, &runs);
        let ledger = replay(&recording, &[]);
        assert_eq!(ledger.dropped, [0, 1, 2, 3]);
        let (replayed, recorded) = (replayed(&ledger), recorded(&recording));
        for index in 0..values.len() {
            assert!(
                replayed[index] <= 0.7 + 0.2 + 1e-9,
                "at sample {index} the replayed signal stays within the recorded peak (0.7) \
                 plus one relief (0.2): {replayed:?}"
            );
        }
        assert!(
            replayed[8] > recorded[8] + 0.2,
            "the add-backs in force add up below the bound: {replayed:?}"
        );
    }
}
