//! The fast watch: one cheap reading of a signal between full samples, so a crossing is acted
//! on within milliseconds instead of within an interval.
//!
//! A full sample of a sidecar target costs milliseconds (its fd and socket tables); at a
//! 500 ms interval a cache filling at 1 GiB/s is 500 MiB past its threshold before the agent
//! sees it. The fast watch reads only what the limit is enforced on, on its own thread (off the
//! tokio workers), every `watch_interval`, or for a budget without one while the cadence from
//! the signal arms it (`arming`). What it can read, and how, is the signal table's `watch`
//! column ([`perfpilot_strategies::signals::WatchRead`]):
//!
//! | signal | read | cost |
//! |---|---|---|
//! | `memory_usage` of a cgroup target or under a cgroup limit | the cgroup's working set, as the full sample reads it: its usage file (v1 `memory.usage_in_bytes`, v2 `memory.current`) less `inactive_file` of its `memory.stat` | two `pread`s |
//! | `memory_usage` otherwise, `rss_bytes` | `/proc/<pid>/statm` | one `pread`, ~1 µs |
//! | `memory_pressure_some`, `memory_pressure_full` | a PSI trigger (`some 150000 1000000` written to the watched cgroup's `memory.pressure` or `/proc/pressure/memory`), the thread sleeping in `poll` for `POLLPRI` | nothing until the kernel wakes it |
//!
//! Where a PSI trigger cannot be registered (no PSI, a kernel without triggers, no
//! permission), the pressure file's stall `total` is polled instead (its rate over windows of
//! at least one second), a warning is logged and [`WatchStatus::signals`] says so with the
//! reason.
//!
//! Where the limit is a cgroup's, kernel notifications wake the memory reads early (`kernel`:
//! cgroup v1 usage thresholds and pressure level, cgroup v2 `memory.events`).
//!
//! A threshold crossed upwards wakes the engine ([`WatchHandle::woken`]), which takes a full
//! sample at once and evaluates every trigger and budget on it; so does a budget's urgency,
//! the slope of the watch's own reads putting its limit nearer than the reaction time the
//! engine published ([`WatchHandle::publish_reaction`]). The threshold re-arms once the reading
//! falls below [`REARM_RATIO`] of it, so a signal hovering at a threshold wakes the engine once,
//! not 50 times a second. What to read (the target's pid, the limiting cgroup, the limit) is
//! published by the [`Sampler`](super::Sampler) after each full sample, so the watch follows a
//! restarted target and a resized limit.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use perfpilot_strategies::signals::WatchRead;
use perfpilot_strategies::{duration, Signal};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::warn;

use super::cgroup::MemoryCgroup;
use crate::budget::urgency::Reaction;

pub mod arming;
mod kernel;
mod memory;
mod psi;

#[cfg(test)]
pub(crate) use arming::CALM_PERIOD;
pub use arming::{ArmReason, Cadence};
use arming::{Arming, ARMED_PERIOD};
pub use kernel::Notifier;

use memory::{PolledRead, Poller};
use psi::watch_pressure;

/// A threshold re-arms once the reading falls below this share of it.
pub const REARM_RATIO: f64 = 0.95;

/// One signal to watch and the thresholds whose upward crossing wakes the engine (a trigger's
/// `above` and `critical`, a budget's `goal` and `limit`), in the signal's unit.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    /// The signal; one with a fast-watch read in the signal table
    /// ([`perfpilot_strategies::signals::watchable`]).
    pub signal: Signal,
    /// Thresholds in the signal's unit.
    pub thresholds: Vec<f64>,
    /// How often it is read between full samples (`watch_interval`); `None`: the cadence
    /// comes from the signal, armed while its budgets' limits are near (`arming`).
    pub interval: Option<Duration>,
    /// The budgets on the signal: their urgency is judged on every read.
    pub budgets: Vec<WatchedBudget>,
}

/// A budget on a watched signal: its name (the key of the reaction time the engine
/// publishes, [`WatchHandle::publish_reaction`]) and its `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedBudget {
    /// The budget's name.
    pub name: String,
    /// Its `limit`, in the signal's unit.
    pub limit: f64,
}

/// How a watched signal is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WatchMode {
    /// Read every `intervalMs` (memory, and pressure where no PSI trigger could be
    /// registered).
    Poll,
    /// A kernel PSI trigger: the thread sleeps until the kernel reports the stall.
    PsiTrigger,
    /// A kernel cgroup notification woke the read that saw the crossing.
    CgroupEvent,
    /// The slope of the watch's reads put a budget's limit nearer than the reaction time the
    /// engine needs.
    Urgency,
}

impl WatchMode {
    /// How `/metrics` labels a wake (`how`).
    pub fn label(self) -> &'static str {
        match self {
            WatchMode::Poll => "poll",
            WatchMode::PsiTrigger => "psi",
            WatchMode::CgroupEvent => "cgroup-event",
            WatchMode::Urgency => "urgency",
        }
    }
}

/// One watched signal as `/performance-metrics` shows it (`fastWatch.signals[]`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchedSignal {
    /// The signal's name.
    #[schema(value_type = String)]
    pub signal: Signal,
    /// The thresholds that wake the engine, in the signal's unit.
    pub thresholds: Vec<f64>,
    /// The polling period while it is read, ms.
    pub interval_ms: u64,
    /// How it is read.
    pub mode: WatchMode,
    /// Why a PSI signal is polled instead of watched by a kernel trigger; `None` otherwise.
    pub fallback_reason: Option<String>,
    /// The cadence in force: `explicit` (`watch_interval`), or `armed`/`disarmed` by the
    /// signal.
    pub cadence: Cadence,
    /// Why, as a label.
    pub cadence_reason: ArmReason,
    /// Why, in words (the headroom, the rate and the sampling interval it was put against).
    pub cadence_why: String,
    /// The kernel notification that wakes its reads early; `None`: polling alone.
    pub notifier: Option<Notifier>,
    /// Why no kernel notification is registered, where one was tried.
    pub notifier_reason: Option<String>,
}

/// The fast watch as `/performance-metrics` shows it (`fastWatch`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchStatus {
    /// What is watched, and how.
    pub signals: Vec<WatchedSignal>,
    /// Immediate samples the watch asked for since the agent started.
    pub wakes: u64,
    /// Readings taken since the agent started.
    pub reads: u64,
}

/// What the fast watch reads for memory signals, published by the sampler after each full
/// sample. Cheap to clone (a few paths).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MemoryProbe {
    /// `/proc/<pid>/statm` of the watched process, when there is one.
    pub(crate) statm: Option<PathBuf>,
    /// The cgroup whose limit is the memory limit, when the limit is a cgroup's.
    pub(crate) cgroup: Option<MemoryCgroup>,
    /// The memory limit, bytes.
    pub(crate) limit_bytes: Option<u64>,
    /// The watched cgroup v2 directory whose `memory.pressure` the pressure signals read;
    /// `None`: the system's.
    pub(crate) pressure_dir: Option<PathBuf>,
}

/// The sampler's side of the watch: where it publishes what to read and, after each full
/// sample, its memory reading (for the cadence from the signal).
#[derive(Debug, Clone, Default)]
pub struct ProbeSlot {
    inner: Arc<SlotInner>,
}

#[derive(Debug, Default)]
struct SlotInner {
    state: Mutex<SlotState>,
    /// An eventfd the memory thread sleeps on: a full sample (or the stop) wakes it.
    poke: OnceLock<Option<File>>,
}

#[derive(Debug, Default)]
struct SlotState {
    version: u64,
    probe: MemoryProbe,
    samples: u64,
    reading: Option<SampleReading>,
    /// The time between the last two full samples: the sampling interval in force.
    interval: Option<Duration>,
}

/// A full sample's memory readings, as the watch compares them with its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SampleReading {
    /// When the sample was taken.
    pub(crate) at: Instant,
    /// `memory_usage`, a ratio.
    pub(crate) memory_usage: Option<f64>,
    /// `rss_bytes`.
    pub(crate) rss_bytes: Option<f64>,
}

impl SampleReading {
    /// The memory readings of a full sample `snapshot` taken `at`.
    pub(crate) fn of(snapshot: &perfpilot_strategies::Snapshot, at: Instant) -> Self {
        SampleReading {
            at,
            memory_usage: snapshot.memory_usage_ratio,
            rss_bytes: snapshot.rss_bytes.map(|b| b as f64),
        }
    }
}

impl ProbeSlot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        lock(&self.inner.state)
    }

    /// Publishes `probe` if it differs from the last one (a new version for the watch).
    pub(crate) fn publish(&self, probe: MemoryProbe) {
        let mut slot = self.lock();
        if slot.probe != probe {
            slot.version += 1;
            slot.probe = probe;
        }
    }

    /// Publishes a full sample's memory readings and wakes the memory thread to judge its
    /// cadence by them.
    pub(crate) fn note_sample(&self, reading: SampleReading) {
        {
            let mut slot = self.lock();
            slot.samples += 1;
            if let Some(last) = slot.reading {
                let gap = reading.at.saturating_duration_since(last.at);
                if !gap.is_zero() {
                    slot.interval = Some(gap);
                }
            }
            slot.reading = Some(reading);
        }
        self.poke();
    }

    /// The probe, when its version is newer than `seen`.
    fn newer_than(&self, seen: u64) -> Option<(u64, MemoryProbe)> {
        let slot = self.lock();
        (slot.version != seen).then(|| (slot.version, slot.probe.clone()))
    }

    /// The newest full sample's reading and the sampling interval in force, when there was
    /// one after the `seen`-th.
    fn reading_newer_than(&self, seen: u64) -> Option<(u64, SampleReading, Option<Duration>)> {
        let slot = self.lock();
        (slot.samples != seen)
            .then_some(slot.reading.map(|r| (slot.samples, r, slot.interval)))
            .flatten()
    }

    /// The probe now.
    fn current(&self) -> MemoryProbe {
        self.lock().probe.clone()
    }

    /// The eventfd the memory thread sleeps on (created on first use); `None` where the
    /// system refused one (the thread then sleeps on the stop alone).
    fn poke_file(&self) -> Option<&File> {
        self.inner
            .poke
            .get_or_init(|| match crate::sys::eventfd() {
                Ok(file) => Some(file),
                Err(e) => {
                    warn!(error = %e, "fast watch: no eventfd; full samples do not wake the memory thread");
                    None
                }
            })
            .as_ref()
    }

    /// Wakes the memory thread, if it sleeps on the eventfd.
    fn poke(&self) {
        if let Some(Some(file)) = self.inner.poke.get() {
            let _ = (&mut &*file).write_all(&1u64.to_ne_bytes());
        }
    }

    /// Takes the pokes back (the counter to 0).
    fn take_poke(&self) {
        if let Some(Some(file)) = self.inner.poke.get() {
            let mut counter = [0u8; 8];
            let _ = (&mut &*file).read(&mut counter);
        }
    }
}

/// A cheap handle to the running watch: the engine waits on it, the API shows its status.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    notify: Notify,
    signals: Mutex<Vec<WatchedSignal>>,
    pending: Mutex<Vec<(Signal, WatchMode)>>,
    wakes: AtomicU64,
    reads: AtomicU64,
    /// Full samples the memory thread took its cadence from.
    samples: AtomicU64,
    /// Bumped by [`WatchHandle::rearm`]: the polling thread re-arms every threshold.
    rearms: AtomicU64,
    /// The reaction time each budget needs, published by the engine.
    reactions: Mutex<BTreeMap<String, Reaction>>,
    /// The goal each budget holds (the effective one), published by the engine: it bounds
    /// the noise band ([`crate::budget::noise::NoiseBand::holds`]).
    goals: Mutex<BTreeMap<String, f64>>,
    /// The slope of each budget's signal toward its limit (per second) and when it was worked
    /// out from the watch's reads, published by the watch for the engine, by budget name.
    slopes: Mutex<BTreeMap<String, (Instant, f64)>>,
    /// Slopes a replay holds, by signal: fresh whenever read, for every budget on the signal.
    held: Mutex<BTreeMap<Signal, f64>>,
}

impl WatchHandle {
    /// Re-arms every polled threshold: a reading still above one wakes the engine once more.
    /// The engine calls it when a run ends, so that a signal an action did not bring back
    /// under its limit is seen at the watch's pace, not at the next full sample.
    pub fn rearm(&self) {
        self.shared.rearms.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes the reaction `budget` needs (its next rung's latency and settle; the watch
    /// adds its own period): the watch wakes the engine when the slope of its reads puts the
    /// budget's limit nearer than that ([`crate::budget::urgency::assess`]).
    pub fn publish_reaction(&self, budget: &str, reaction: Reaction) {
        lock(&self.shared.reactions).insert(budget.to_owned(), reaction);
    }

    /// The reaction the engine published for `budget`.
    pub fn reaction(&self, budget: &str) -> Option<Reaction> {
        lock(&self.shared.reactions).get(budget).copied()
    }

    /// Publishes the goal `budget` holds now (its effective goal): under it, a reading inside
    /// the noise band does not wake the engine for urgency.
    pub fn publish_goal(&self, budget: &str, goal: f64) {
        let mut goals = lock(&self.shared.goals);
        match goals.get_mut(budget) {
            Some(published) => *published = goal,
            None => {
                goals.insert(budget.to_owned(), goal);
            }
        }
    }

    /// The goal the engine published for `budget`.
    pub fn goal(&self, budget: &str) -> Option<f64> {
        lock(&self.shared.goals).get(budget).copied()
    }

    /// Publishes the slope of `budget`'s signal toward its limit, worked out from the watch's
    /// own reads at `at` ([`crate::budget::urgency::Rise::slope_toward`]).
    pub(crate) fn publish_slope(&self, budget: &str, at: Instant, slope: f64) {
        let mut slopes = lock(&self.shared.slopes);
        match slopes.get_mut(budget) {
            Some(published) => *published = (at, slope),
            None => {
                slopes.insert(budget.to_owned(), (at, slope));
            }
        }
    }

    /// Replaces every held slope with `slopes` (by signal), fresh whenever read until
    /// replaced: a replay feeds the engine, sample by sample, the slopes the recorded engine
    /// took.
    pub(crate) fn hold_slopes(&self, slopes: &[(Signal, f64)]) {
        *lock(&self.shared.held) = slopes.iter().copied().collect();
    }

    /// The slope of `budget`'s signal toward its limit (per second) from the watch's reads,
    /// when worked out within `fresh` of now: between two full samples the watch's reads see
    /// a fast fill that the samples alone would see only as one jump.
    /// A slope a replay holds for `signal` stands in for one published.
    pub fn slope(&self, budget: &str, signal: Signal, fresh: Duration) -> Option<f64> {
        let published = lock(&self.shared.slopes)
            .get(budget)
            .filter(|(at, _)| at.elapsed() <= fresh)
            .map(|(_, slope)| *slope);
        published.or_else(|| lock(&self.shared.held).get(&signal).copied())
    }

    /// Changes row `index` of the status.
    fn show(&self, index: usize, change: impl FnOnce(&mut WatchedSignal)) {
        if let Some(shown) = lock(&self.shared.signals).get_mut(index) {
            change(shown);
        }
    }

    /// Resolves when the watch has seen a threshold crossed since the last call.
    pub async fn woken(&self) {
        self.shared.notify.notified().await;
    }

    /// The crossings seen since the last call: which signal, and how.
    pub fn take_crossings(&self) -> Vec<(Signal, WatchMode)> {
        std::mem::take(&mut *lock(&self.shared.pending))
    }

    /// The watch's status now.
    pub fn status(&self) -> WatchStatus {
        WatchStatus {
            signals: lock(&self.shared.signals).clone(),
            wakes: self.shared.wakes.load(Ordering::Relaxed),
            reads: self.shared.reads.load(Ordering::Relaxed),
        }
    }

    /// Full samples the memory thread has taken its cadence from: a test waits on it before
    /// it reads the cadence a sample decided.
    #[cfg(test)]
    pub(crate) fn samples_judged(&self) -> u64 {
        self.shared.samples.load(Ordering::Relaxed)
    }

    /// Counts a full sample the memory thread took its cadence from.
    fn note_sample_judged(&self) {
        self.shared.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// A handle without a watch behind it, for the engine's tests: they wake it by hand.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        WatchHandle::detached()
    }

    /// A handle without a watch behind it, woken by hand ([`WatchHandle::wake`]): a replay
    /// wakes the engine where the recorded watch did.
    pub(crate) fn detached() -> Self {
        WatchHandle {
            shared: Arc::default(),
        }
    }

    pub(crate) fn wake(&self, signal: Signal, mode: WatchMode) {
        lock(&self.shared.pending).push((signal, mode));
        self.shared.wakes.fetch_add(1, Ordering::Relaxed);
        self.shared.notify.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running fast watch: its threads stop when it is dropped.
#[derive(Debug)]
pub struct FastWatch {
    handle: WatchHandle,
    stop: Arc<Stop>,
    /// Poked at the stop: the memory thread sleeps on it.
    slot: ProbeSlot,
    threads: Vec<thread::JoinHandle<()>>,
}

impl FastWatch {
    /// Starts watching `specs` (specs of one signal are merged; the shortest interval wins)
    /// with what `slot` says to read. `None` when there is nothing to watch.
    pub fn start(specs: Vec<WatchSpec>, slot: ProbeSlot) -> Option<FastWatch> {
        let specs = merge(specs);
        if specs.is_empty() {
            return None;
        }
        let handle = WatchHandle {
            shared: Arc::default(),
        };
        let stopped = Arc::new(Stop::default());
        let mut threads = Vec::new();
        let mut polled = Vec::new();
        let mut signals = Vec::new();
        for spec in specs {
            let Some(read) = spec.signal.row().watch else {
                warn!(signal = %spec.signal, "fast watch: the signal has no fast-watch read in the signal table; not watched");
                continue;
            };
            let index = signals.len();
            let (cadence, cadence_reason, cadence_why) = match spec.interval {
                Some(interval) => (
                    Cadence::Explicit,
                    ArmReason::Explicit,
                    format!("watch_interval = {}", duration::format(interval)),
                ),
                None => {
                    let arming = Arming::default();
                    (Cadence::Armed, arming.reason(), arming.why().to_owned())
                }
            };
            signals.push(WatchedSignal {
                signal: spec.signal,
                thresholds: spec.thresholds.clone(),
                interval_ms: spec.interval.unwrap_or(ARMED_PERIOD).as_millis() as u64,
                mode: WatchMode::Poll,
                fallback_reason: None,
                cadence,
                cadence_reason,
                cadence_why,
                notifier: None,
                notifier_reason: None,
            });
            match read {
                WatchRead::PsiTrigger => {
                    let (handle, slot, stopped) =
                        (handle.clone(), slot.clone(), Arc::clone(&stopped));
                    threads.push(spawn_named("perfpilot-psi", move || {
                        watch_pressure(index, spec, &slot, &handle, &stopped)
                    }));
                }
                WatchRead::CgroupUsage => polled.push((PolledRead::CgroupUsage, index, spec)),
                WatchRead::Statm => polled.push((PolledRead::Statm, index, spec)),
            }
        }
        *lock(&handle.shared.signals) = signals;
        let poke = slot.clone();
        if !polled.is_empty() {
            let poller = Poller::new(polled, slot);
            let handle = handle.clone();
            let stopped = Arc::clone(&stopped);
            threads.push(spawn_named("perfpilot-watch", move || {
                poller.run(&handle, &stopped)
            }));
        }
        Some(FastWatch {
            handle,
            stop: stopped,
            slot: poke,
            threads,
        })
    }

    /// The handle the engine and the API use.
    pub fn handle(&self) -> WatchHandle {
        self.handle.clone()
    }
}

impl Drop for FastWatch {
    fn drop(&mut self) {
        self.stop.request();
        self.slot.poke();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("spawning a thread fails only when the process is out of resources")
}

/// Merges specs of one signal: every threshold and budget, the shortest explicit interval
/// (an explicit one wins over the cadence from the signal).
fn merge(specs: Vec<WatchSpec>) -> Vec<WatchSpec> {
    let mut merged: Vec<WatchSpec> = Vec::new();
    for spec in specs {
        match merged.iter_mut().find(|m| m.signal == spec.signal) {
            Some(m) => {
                m.interval = match (m.interval, spec.interval) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                m.thresholds.extend(spec.thresholds);
                m.budgets.extend(spec.budgets);
            }
            None => merged.push(spec),
        }
    }
    for m in &mut merged {
        m.thresholds.retain(|t| t.is_finite());
        m.thresholds.sort_by(f64::total_cmp);
        m.thresholds.dedup();
    }
    merged.retain(|m| !m.thresholds.is_empty());
    merged
}

/// Waits up to `wait` for the stop; true when it came.
fn stop_requested(stopped: &Stop, wait: Duration) -> bool {
    stopped.wait(wait)
}

/// The watch's stop flag: its threads sleep on it between readings.
#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl Stop {
    /// Waits up to `wait`; true once the stop has been requested.
    fn wait(&self, wait: Duration) -> bool {
        let stopped = lock(&self.stopped);
        let (stopped, _) = self
            .changed
            .wait_timeout_while(stopped, wait, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }

    /// Whether the stop has been requested.
    fn requested(&self) -> bool {
        *lock(&self.stopped)
    }

    fn request(&self) {
        *lock(&self.stopped) = true;
        self.changed.notify_all();
    }
}

/// What the sampler publishes for a process: its statm, the limiting cgroup, the limit.
pub(crate) fn probe_for(
    proc_dir: &Path,
    limiting: Option<&MemoryCgroup>,
    limit_bytes: Option<u64>,
    pressure_dir: Option<PathBuf>,
) -> MemoryProbe {
    MemoryProbe {
        statm: Some(proc_dir.join("statm")),
        cgroup: limiting.cloned(),
        limit_bytes,
        pressure_dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that watch this process's own RSS take turns: one's allocation would be
    /// the other's crossing.
    static OWN_RSS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    use crate::sample::procfs;
    use std::path::Path;

    #[test]
    fn specs_of_one_signal_merge() {
        let spec = |thresholds: Vec<f64>, ms| WatchSpec {
            signal: Signal::MemoryUsage,
            thresholds,
            interval: Some(Duration::from_millis(ms)),
            budgets: Vec::new(),
        };
        let merged = merge(vec![
            spec(vec![0.95, 0.8], 50),
            spec(vec![0.8, f64::NAN], 20),
            WatchSpec {
                signal: Signal::RssBytes,
                thresholds: vec![],
                interval: Some(Duration::from_millis(20)),
                budgets: Vec::new(),
            },
        ]);
        assert_eq!(merged, vec![spec(vec![0.8, 0.95], 20)]);
    }

    /// What the fast watch can read is the signal table's `watch` column: every signal with a
    /// read is watched (none dropped), and one without is not.
    #[test]
    fn every_signal_with_a_watch_read_in_the_table_is_watched() {
        let spec = |signal| WatchSpec {
            signal,
            thresholds: vec![0.5],
            interval: Some(Duration::from_millis(50)),
            budgets: Vec::new(),
        };
        let watchable: Vec<Signal> = perfpilot_strategies::signals::watchable().collect();
        assert!(watchable.contains(&Signal::MemoryUsage), "{watchable:?}");
        let specs = watchable.iter().copied().map(spec).collect();
        let watch = FastWatch::start(specs, ProbeSlot::default()).expect("something to watch");
        let shown: Vec<Signal> = watch
            .handle()
            .status()
            .signals
            .iter()
            .map(|s| s.signal)
            .collect();
        assert_eq!(shown, watchable);
        assert_eq!(
            watch.threads.len(),
            1 + watchable
                .iter()
                .filter(|s| s.row().watch == Some(WatchRead::PsiTrigger))
                .count()
        );
        drop(watch);
        let unwatchable = FastWatch::start(vec![spec(Signal::CpuUsage)], ProbeSlot::default())
            .expect("a spec with a threshold");
        assert!(unwatchable.threads.is_empty(), "no thread reads cpu_usage");
        assert!(unwatchable.handle().status().signals.is_empty());
    }

    /// A budget without `watch_interval` (the cadence from the signal): two full samples a
    /// second apart put its limit 64 MiB above the RSS, 0.06 s at the worst-case 1 GiB/s, so
    /// the watch is armed and reads every 20 ms, and a real 128 MiB allocation wakes the
    /// engine well before the next full sample.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_self_armed_budget_near_its_limit_is_read_between_samples() {
        let _turn = OWN_RSS.lock().await;
        let slot = ProbeSlot::default();
        slot.publish(probe_for(Path::new(procfs::SELF_DIR), None, None, None));
        let rss = procfs::ProcessReader::open(procfs::SELF_DIR)
            .memory()
            .unwrap()
            .resident_bytes as f64;
        let limit = rss + (64 << 20) as f64;
        let watch = FastWatch::start(
            vec![WatchSpec {
                signal: Signal::RssBytes,
                thresholds: vec![limit],
                interval: None,
                budgets: vec![WatchedBudget {
                    name: "rss".to_owned(),
                    limit,
                }],
            }],
            slot.clone(),
        )
        .unwrap();
        let handle = watch.handle();
        let now = Instant::now();
        for at in [now - Duration::from_secs(1), now] {
            slot.note_sample(SampleReading {
                at,
                memory_usage: None,
                rss_bytes: Some(rss),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let shown = loop {
            let shown = handle.status().signals[0].clone();
            if shown.cadence_reason != ArmReason::Starting {
                break shown;
            }
            assert!(
                Instant::now() < deadline,
                "waited 5 s for the watch to judge two full samples: {shown:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            (shown.cadence, shown.cadence_reason),
            (Cadence::Armed, ArmReason::WorstCase),
            "{}",
            shown.cadence_why
        );
        assert!(
            shown
                .cadence_why
                .contains("within 2 sampling intervals (2.0 s)"),
            "{}",
            shown.cadence_why
        );
        let woken = handle.woken();
        let filler = std::thread::spawn(|| {
            let mut block = vec![0u8; 128 << 20];
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            std::thread::sleep(Duration::from_millis(500));
            std::hint::black_box(block);
        });
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("waited 5 s for the armed watch to see RSS pass the limit");
        filler.join().unwrap();
        assert!(handle.status().reads >= 2, "{:?}", handle.status());
    }

    /// The real thing: a thread of this process allocates past a threshold of its own RSS
    /// and the watch wakes its waiter, well before a 10 s full-sample interval would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_real_rss_rise_wakes_the_waiter() {
        let _turn = OWN_RSS.lock().await;
        let slot = ProbeSlot::default();
        slot.publish(probe_for(Path::new(procfs::SELF_DIR), None, None, None));
        let rss = procfs::ProcessReader::open(procfs::SELF_DIR)
            .memory()
            .unwrap()
            .resident_bytes;
        let threshold = (rss + (64 << 20)) as f64;
        let watch = FastWatch::start(
            vec![WatchSpec {
                signal: Signal::RssBytes,
                thresholds: vec![threshold],
                interval: Some(Duration::from_millis(10)),
                budgets: Vec::new(),
            }],
            slot,
        )
        .unwrap();
        let handle = watch.handle();
        let woken = handle.woken();
        let filler = std::thread::spawn(|| {
            let mut block = vec![0u8; 128 << 20];
            // Touch every page so it is resident.
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            std::thread::sleep(Duration::from_millis(500));
            std::hint::black_box(block);
        });
        tokio::time::timeout(Duration::from_secs(10), woken)
            .await
            .expect("waited 10 s for the watch to see RSS cross +64 MiB");
        filler.join().unwrap();
        let status = handle.status();
        assert_eq!(status.wakes, 1, "{status:?}");
        assert!(status.reads >= 1);
        assert_eq!(
            handle.take_crossings(),
            vec![(Signal::RssBytes, WatchMode::Poll)]
        );
        assert_eq!(status.signals[0].mode, WatchMode::Poll);
    }
}
