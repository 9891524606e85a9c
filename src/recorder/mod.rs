//! The flight recorder: what happened, kept for a while (SPEC §13).
//!
//! An observer of the engine, as `crate::prometheus::Telemetry` is: it follows the published
//! [`View`] and drains the [`Event`]s the engine sends, and records
//!
//! - every full sample with every signal (and the few numeric fields beside them), columnar
//!   and compressed (`gorilla`), in blocks of at most a minute ([`window`]);
//! - every run (its start, finish and verdict), budget episode, fast-watch wake, OOM kill,
//!   exhausted ladder and configuration reload ([`record`]).
//!
//! It keeps the last [`RecorderConfig::window`] of them (15 minutes by default) in memory;
//! `GET /performance-metrics/history` serves them (`crate::api`).

pub mod chart;
pub mod columns;
pub mod export;
mod gorilla;
pub mod keep_learned;
pub mod record;
pub mod report;
pub mod segment;
pub mod store;
pub mod window;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use perfpilot_strategies::snapshot::unix_millis::millis;
use perfpilot_strategies::{Signal, Snapshot};
use tokio::sync::{broadcast, watch, Semaphore};
use tracing::{info, warn};

use crate::engine::{EngineHandle, View};
use crate::events::{Evaluated, Event};
use crate::reload::Reloader;

pub use crate::config::RecorderConfig;

use self::record::Log;
pub use self::record::{Band, Episode, Reload, Wake};
use self::store::{Store, StoreHealth, Writer};
use self::window::Window;
pub use self::window::{Block, Row};

/// The agent's version, written in every segment.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A cheap, cloneable handle to the recording.
#[derive(Debug, Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    recording: Mutex<Recording>,
    /// Permits for history requests in flight.
    readers: Arc<Semaphore>,
    /// The state directory's recording, with `state_dir`.
    store: Option<Store>,
    /// Writes sealed segments to `store`.
    writer: Option<Writer>,
    /// What went wrong on disk.
    health: Arc<StoreHealth>,
    /// The task following the engine ([`Recorder::follow`]), until [`Recorder::followed`].
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the recorder holds.
#[derive(Debug)]
struct Recording {
    window: Window,
    keep: Duration,
    log: Log,
    bands: Vec<Band>,
    /// Events the recorder missed because it fell behind the engine.
    missed: u64,
}

/// What a history request gets: the window's blocks and entries between two times, copied
/// (blocks shared) so the answer is written without holding the recorder.
#[derive(Debug, Clone)]
pub struct Excerpt {
    /// The blocks with samples in range, oldest first (they may hold samples outside it).
    pub blocks: Vec<Arc<Block>>,
    /// Runs that started in range (as `optimization-completed` shows them).
    pub runs: Vec<serde_json::Value>,
    /// Episodes that overlap the range.
    pub episodes: Vec<Episode>,
    /// Fast-watch wakes in range.
    pub wakes: Vec<Wake>,
    /// OOM kills in range (as `oom-kill` shows them).
    pub oom_kills: Vec<serde_json::Value>,
    /// Exhausted ladders in range (as `budget-exhausted` shows them).
    pub exhaustions: Vec<serde_json::Value>,
    /// Reloads in range.
    pub reloads: Vec<Reload>,
    /// Every budget's bounds now.
    pub bands: Vec<Band>,
    /// The oldest sample held in memory, ms since the Unix epoch.
    pub oldest: Option<i64>,
    /// Segment files on disk with samples in range older than the memory holds, oldest
    /// first (read as the answer is written).
    pub older: Vec<PathBuf>,
}

impl Recorder {
    /// Starts recording what `engine` publishes. A task follows the engine's view (and ends
    /// when the engine does); `reloader`, where there is one, says which views followed a
    /// configuration reload. Must be called inside a tokio runtime.
    pub fn follow(&self, engine: &EngineHandle, reloader: Option<Arc<Reloader>>) -> Recorder {
        let mut follower = Follower {
            recorder: self.clone(),
            events: engine.subscribe(),
            view: engine.watch(),
            reloader,
            last_snapshot: None,
            episodes: BTreeMap::new(),
            wakes: BTreeMap::new(),
            reloads: None,
            last_run: 0,
        };
        follower.catch_up();
        let task = tokio::spawn(async move {
            while follower.view.changed().await.is_ok() {
                follower.catch_up();
            }
            follower.catch_up();
        });
        *self
            .shared
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(task);
        self.clone()
    }

    /// Waits, at most `timeout`, for the task following the engine to record the engine's
    /// last events (the runs a shutdown let finish): it ends once the engine has. Call it
    /// after the engine's task ended and before [`Recorder::close`]; returns whether the
    /// follower ended in time (true when none was started).
    pub async fn followed(&self, timeout: Duration) -> bool {
        let task = self
            .shared
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match task {
            Some(task) => tokio::time::timeout(timeout, task).await.is_ok(),
            None => true,
        }
    }

    /// An empty recorder in memory only, for tests and embedders that feed it themselves.
    pub fn new(config: &RecorderConfig) -> Recorder {
        Recorder::open(config, None)
    }

    /// A recorder that keeps its segments in `state_dir` (see [`store`]) and starts with what
    /// is there: the last [`RecorderConfig::window`] in memory, older segments (up to
    /// [`RecorderConfig::keep`]) read from disk when asked for. A state directory that cannot
    /// be used is logged, and the recorder keeps its window in memory only.
    pub fn open(config: &RecorderConfig, state_dir: Option<&Path>) -> Recorder {
        let health = Arc::new(StoreHealth::default());
        let mut window = Window::new(config.window.as_millis() as i64);
        let mut log = Log::default();
        let store = state_dir.and_then(|dir| {
            Store::open(dir, config.keep, config.max_disk)
                .inspect_err(|error| {
                    warn!(dir = %dir.display(), %error, "state_dir cannot be used: recording in memory only")
                })
                .ok()
        });
        if let Some(store) = &store {
            let now = millis(SystemTime::now()) as i64;
            let since = now - config.window.as_millis() as i64;
            let segments = store.read_since(since, &health);
            let samples: usize = segments.iter().map(|s| s.header.samples).sum();
            for segment in segments {
                window.restore(segment.block);
                log.restore(segment.entries);
            }
            log.trim(since.max(0) as u64);
            info!(dir = %store.dir().display(), samples, refused = health.refused.load(Ordering::Relaxed), "recording restored from state_dir");
        }
        let writer = store.as_ref().and_then(|store| {
            Writer::start(store.clone(), Arc::clone(&health))
                .inspect_err(|error| warn!(%error, "cannot start the recorder's disk writer: recording in memory only"))
                .ok()
        });
        Recorder {
            shared: Arc::new(Shared {
                recording: Mutex::new(Recording {
                    window,
                    keep: config.window,
                    log,
                    bands: Vec::new(),
                    missed: 0,
                }),
                readers: Arc::new(Semaphore::new(config.max_history_requests)),
                store,
                writer,
                health,
                follower: Mutex::new(None),
            }),
        }
    }

    /// Whether the recording is kept in a state directory too.
    pub fn has_store(&self) -> bool {
        self.shared.writer.is_some()
    }

    /// What went wrong with the state directory (refused files, failed writes, a full disk).
    pub fn store_health(&self) -> &StoreHealth {
        &self.shared.health
    }

    /// Writes out the samples not yet on disk (the open block) and waits, at most
    /// `timeout`, for the writer: at shutdown. Returns whether everything was written.
    pub fn close(&self, timeout: Duration) -> bool {
        let Some(writer) = &self.shared.writer else {
            return true;
        };
        {
            let mut recording = self.lock();
            if let Some(block) = recording.window.seal() {
                let mut entries = recording.log.take_pending();
                entries.budgets = recording.bands.clone();
                let (first, last) = block.span();
                writer.send(first, last, segment::encode(VERSION, &block, &entries));
            }
        }
        writer.flush(timeout)
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        // A panic while recording leaves a consistent window (each push is complete or not
        // started): go on with it.
        self.shared
            .recording
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a sample, and what the engine read beside it when it evaluated it, where that
    /// is known.
    pub fn record_sample(&self, snapshot: &Snapshot, evaluated: Option<&Evaluated>) {
        let time = millis(snapshot.taken_at);
        let mut recording = self.lock();
        if let Some(block) = recording.window.push(time as i64, snapshot, evaluated) {
            let mut entries = recording.log.take_pending();
            entries.budgets = recording.bands.clone();
            if let Some(writer) = &self.shared.writer {
                let (first, last) = block.span();
                writer.send(first, last, segment::encode(VERSION, &block, &entries));
            }
        }
        let oldest = time.saturating_sub(recording.keep.as_millis() as u64);
        recording.log.trim(oldest);
    }

    /// The samples and entries of `since..=until`.
    pub fn excerpt(&self, since: SystemTime, until: SystemTime) -> Excerpt {
        let (since, until) = (millis(since), millis(until));
        let recording = self.lock();
        let log = &recording.log;
        Excerpt {
            blocks: recording.window.blocks(since as i64, until as i64),
            runs: log.runs.between(since, until),
            episodes: log
                .episodes
                .iter()
                .filter(|(_, e)| e.start <= until && e.end.is_none_or(|end| end >= since))
                .map(|(_, e)| e.clone())
                .collect(),
            wakes: log.wakes.between(since, until),
            oom_kills: log.oom_kills.between(since, until),
            exhaustions: log.exhaustions.between(since, until),
            reloads: log.reloads.between(since, until),
            bands: recording.bands.clone(),
            oldest: recording.window.oldest(),
            older: self.older(since as i64, until as i64, recording.window.oldest()),
        }
    }

    /// The segment files with samples in `since..=until` from before `in_memory` (ms).
    fn older(&self, since: i64, until: i64, in_memory: Option<i64>) -> Vec<PathBuf> {
        let Some(store) = &self.shared.store else {
            return Vec::new();
        };
        let before = in_memory.unwrap_or(i64::MAX);
        store
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|(first, _)| *first < before && *first <= until && first + 60_000 >= since)
            .map(|(_, path)| path)
            .collect()
    }

    /// Samples held in memory.
    pub fn samples(&self) -> usize {
        self.lock().window.len()
    }

    /// Bytes the samples' columns hold in memory.
    pub fn sample_bytes(&self) -> usize {
        self.lock().window.bytes()
    }

    /// Events missed because the recorder fell behind the engine.
    pub fn missed(&self) -> u64 {
        self.lock().missed
    }

    /// A permit to serve a history request, or `None` when
    /// [`RecorderConfig::max_history_requests`] are in flight.
    pub fn reader(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.shared.readers).try_acquire_owned().ok()
    }

    /// The time (ms) of the oldest sample kept in memory, if any.
    pub fn oldest_in_memory(&self) -> Option<i64> {
        self.lock().window.oldest()
    }
}

/// A time written as RFC 3339 (`2026-12-07T06:00:00Z`) or as a duration back from `now`
/// (`10m`); the error names `key` and says what is allowed.
pub fn parse_when(key: &str, text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    match humantime::parse_duration(text) {
        Ok(back) => Ok(now.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH)),
        Err(_) => Err(format!(
            "{key} = {text:?}: must be an RFC 3339 time (2026-12-07T06:00:00Z) or a duration back from now (10m)"
        )),
    }
}

/// `value` as JSON (the types recorded serialize infallibly: plain structs of numbers and
/// strings).
fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

/// The task's state: what it has seen of the view, to record only what changed.
struct Follower {
    recorder: Recorder,
    events: broadcast::Receiver<Event>,
    view: watch::Receiver<Arc<View>>,
    reloader: Option<Arc<Reloader>>,
    last_snapshot: Option<Arc<Snapshot>>,
    /// The episode each budget is in, as last seen.
    episodes: BTreeMap<String, u64>,
    /// The fast watch's wake counts, as last seen.
    wakes: BTreeMap<(Signal, &'static str), u64>,
    /// The reloader's count of reloads, as last seen.
    reloads: Option<u64>,
    /// The highest run id recorded from the view.
    last_run: u64,
}

impl Follower {
    /// Records every event and what changed in the view since the last call.
    fn catch_up(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(event) => self.record_event(event),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    warn!(
                        missed,
                        "the recorder fell behind the engine's events: some were not recorded"
                    );
                    self.recorder.lock().missed += missed;
                }
                Err(_) => break,
            }
        }
        let view = Arc::clone(&self.view.borrow_and_update());
        let seen = self
            .last_snapshot
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, &view.snapshot));
        if !seen {
            // Seen in the view only (the first sample, or one whose event was missed): the
            // engine's clock is there, the watch's slopes are not.
            let evaluated = Evaluated::at(view.sampled_at);
            self.recorder
                .record_sample(&view.snapshot, Some(&evaluated));
            self.last_snapshot = Some(Arc::clone(&view.snapshot));
        }
        self.record_view(&view);
    }

    fn record_event(&mut self, event: Event) {
        match event {
            Event::MetricsUpdated(snapshot, evaluated) => {
                self.recorder.record_sample(&snapshot, Some(&evaluated));
                self.last_snapshot = Some(snapshot);
            }
            Event::OptimizationCompleted(record) => {
                self.recorder.lock().log.record_run(json(&*record))
            }
            // Through the log's own calls, so that they go into the next segment too.
            Event::OomKill(kill) => self.recorder.lock().log.record_oom_kill(json(&kill)),
            Event::BudgetExhausted(exhaustion) => self
                .recorder
                .lock()
                .log
                .record_exhaustion(json(&*exhaustion)),
        }
    }

    /// Episodes, wakes and reloads, from what changed in the view.
    fn record_view(&mut self, view: &View) {
        let now = millis(view.snapshot.taken_at);
        let mut recording = self.recorder.lock();
        // A run that acted is published once judged, a settle later; the view has it (with
        // its verdict to come) as soon as it ends.
        let seen = self.last_run;
        for record in view.recent.iter().filter(|r| r.id > seen) {
            recording.log.record_run(json(&**record));
            self.last_run = self.last_run.max(record.id);
        }
        recording.bands = view
            .budgets
            .iter()
            .map(|b| Band {
                name: b.name.clone(),
                signal: b.signal,
                goal: b.goal,
                limit: b.limit,
            })
            .collect();
        for budget in &view.budgets {
            let known = self.episodes.get(&budget.name).copied();
            if let Some(ended) = known.filter(|&n| budget.episode != Some(n)) {
                let started = recording
                    .log
                    .episodes
                    .last_matching(|e| e.budget == budget.name && e.episode == ended)
                    .map(|e| e.start);
                recording.log.record_episode(Episode {
                    budget: budget.name.clone(),
                    episode: ended,
                    start: started.unwrap_or(now),
                    end: Some(now),
                });
                self.episodes.remove(&budget.name);
            }
            if let Some(number) = budget.episode.filter(|&n| known != Some(n)) {
                recording.log.record_episode(Episode {
                    budget: budget.name.clone(),
                    episode: number,
                    start: budget.episode_start.unwrap_or(now),
                    end: None,
                });
                self.episodes.insert(budget.name.clone(), number);
            }
        }
        for &(signal, how, count) in &view.watch_wakes {
            let known = self.wakes.insert((signal, how), count).unwrap_or(0);
            if count > known {
                recording.log.record_wake(Wake {
                    at: now,
                    signal,
                    how: how.to_owned(),
                    count: count - known,
                });
            }
        }
        if let Some(reloader) = &self.reloader {
            let status = reloader.status();
            let known = self.reloads.replace(status.reloads);
            if known.is_some_and(|known| status.reloads > known) {
                let at = millis(SystemTime::now());
                recording.log.record_reload(Reload {
                    at,
                    reason: status.reason.clone(),
                    source: status.source.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
