//! The fast watch: one cheap reading of a signal between full samples, so a crossing is acted
//! on within milliseconds instead of within an interval.
//!
//! A full sample of a sidecar target costs milliseconds (its fd and socket tables); at a
//! 500 ms interval a cache filling at 1 GiB/s is 500 MiB past its threshold before the agent
//! sees it. The fast watch reads only what the limit is enforced on, on its own thread (off the
//! tokio workers), every `watch_interval`:
//!
//! | signal | read | cost |
//! |---|---|---|
//! | `memory_usage` under a cgroup limit | the limiting cgroup's usage file (v1 `memory.usage_in_bytes`, v2 `memory.current`); `memory.stat` only once usage is past the lowest threshold, for the working set | one `pread`, ~3 µs |
//! | `memory_usage` otherwise, `rss_bytes` | `/proc/<pid>/statm` | one `pread`, ~1 µs |
//! | `memory_pressure_some`, `memory_pressure_full` | a PSI trigger (`some 150000 1000000` written to the watched cgroup's `memory.pressure` or `/proc/pressure/memory`), the thread sleeping in `poll` for `POLLPRI` | nothing until the kernel wakes it |
//!
//! Where a PSI trigger cannot be registered (no PSI, a kernel without triggers, no
//! permission), the pressure file's stall `total` is polled instead (its rate over windows of
//! at least one second), a warning is logged and [`WatchStatus::signals`] says so with the
//! reason.
//!
//! A threshold crossed upwards wakes the engine ([`WatchHandle::woken`]), which takes a full
//! sample at once and evaluates every trigger on it; the threshold re-arms once the reading
//! falls below [`REARM_RATIO`] of it, so a signal hovering at a threshold wakes the engine once,
//! not 50 times a second. What to read (the target's pid, the limiting cgroup, the limit) is
//! published by the [`Sampler`](super::Sampler) after each full sample, so the watch follows a
//! restarted target and a resized limit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use perfpilot_strategies::Signal;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::cgroup::MemoryCgroup;
use super::procfs::{self, ProcFile};

/// A threshold re-arms once the reading falls below this share of it.
pub const REARM_RATIO: f64 = 0.95;

/// The PSI trigger window: the kernel reports when tasks stalled for `threshold × window`
/// within any window of this length.
pub const PSI_WINDOW: Duration = Duration::from_secs(1);

/// The window a PSI trigger falls back to when the kernel refuses [`PSI_WINDOW`]: without
/// `CAP_SYS_RESOURCE` (root in a container or a Kubernetes pod, by default) a trigger's
/// window must be a multiple of 2 s (Linux 6.5 on), else the write fails with `EINVAL`.
pub const UNPRIVILEGED_PSI_WINDOW: Duration = Duration::from_secs(2);

/// One signal to watch and the thresholds whose upward crossing wakes the engine (a trigger's
/// `above` and `critical`, a budget's `goal` and `limit`), in the signal's unit.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    /// The signal; one of [`TriggerSpec::WATCHABLE`](perfpilot_strategies::TriggerSpec::WATCHABLE).
    pub signal: Signal,
    /// Thresholds in the signal's unit.
    pub thresholds: Vec<f64>,
    /// How often it is read between full samples.
    pub interval: Duration,
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
    /// The polling period, ms.
    pub interval_ms: u64,
    /// How it is read.
    pub mode: WatchMode,
    /// Why a PSI signal is polled instead of watched by a kernel trigger; `None` otherwise.
    pub fallback_reason: Option<String>,
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

/// The sampler's side of the watch: where it publishes what to read.
#[derive(Debug, Clone, Default)]
pub struct ProbeSlot {
    inner: Arc<Mutex<(u64, MemoryProbe)>>,
}

impl ProbeSlot {
    fn lock(&self) -> MutexGuard<'_, (u64, MemoryProbe)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `probe` if it differs from the last one (a new version for the watch).
    pub(crate) fn publish(&self, probe: MemoryProbe) {
        let mut slot = self.lock();
        if slot.1 != probe {
            slot.0 += 1;
            slot.1 = probe;
        }
    }

    /// The probe, when its version is newer than `seen`.
    fn newer_than(&self, seen: u64) -> Option<(u64, MemoryProbe)> {
        let slot = self.lock();
        (slot.0 != seen).then(|| slot.clone())
    }

    /// The probe now.
    fn current(&self) -> MemoryProbe {
        self.lock().1.clone()
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
    /// Bumped by [`WatchHandle::rearm`]: the polling thread re-arms every threshold.
    rearms: AtomicU64,
}

impl WatchHandle {
    /// Re-arms every polled threshold: a reading still above one wakes the engine once more.
    /// The engine calls it when a run ends, so that a signal an action did not bring back
    /// under its limit is seen at the watch's pace, not at the next full sample.
    pub fn rearm(&self) {
        self.shared.rearms.fetch_add(1, Ordering::Relaxed);
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

    /// A handle without a watch behind it, for the engine's tests: they wake it by hand.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
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
        for (index, spec) in specs.into_iter().enumerate() {
            signals.push(WatchedSignal {
                signal: spec.signal,
                thresholds: spec.thresholds.clone(),
                interval_ms: spec.interval.as_millis() as u64,
                mode: WatchMode::Poll,
                fallback_reason: None,
            });
            if pressure_kind(spec.signal).is_some() {
                let (handle, slot, stopped) = (handle.clone(), slot.clone(), Arc::clone(&stopped));
                threads.push(spawn_named("perfpilot-psi", move || {
                    watch_pressure(index, spec, &slot, &handle, &stopped)
                }));
            } else {
                polled.push(spec);
            }
        }
        *lock(&handle.shared.signals) = signals;
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

/// Merges specs of one signal: every threshold, the shortest interval.
fn merge(specs: Vec<WatchSpec>) -> Vec<WatchSpec> {
    let mut merged: Vec<WatchSpec> = Vec::new();
    for spec in specs {
        match merged.iter_mut().find(|m| m.signal == spec.signal) {
            Some(m) => {
                m.interval = m.interval.min(spec.interval);
                m.thresholds.extend(spec.thresholds);
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

/// `some` or `full`, for a memory pressure signal.
fn pressure_kind(signal: Signal) -> Option<&'static str> {
    match signal {
        Signal::MemoryPressureSome => Some("some"),
        Signal::MemoryPressureFull => Some("full"),
        _ => None,
    }
}

/// Upward crossings of a set of thresholds, with re-arming below [`REARM_RATIO`].
#[derive(Debug, Clone)]
pub(crate) struct Crossings {
    thresholds: Vec<f64>,
    armed: Vec<bool>,
}

impl Crossings {
    pub(crate) fn new(thresholds: Vec<f64>) -> Self {
        let armed = vec![true; thresholds.len()];
        Crossings { thresholds, armed }
    }

    /// The lowest threshold (below it nothing can fire).
    pub(crate) fn lowest(&self) -> f64 {
        self.thresholds.first().copied().unwrap_or(f64::INFINITY)
    }

    /// Arms every threshold again.
    pub(crate) fn rearm(&mut self) {
        self.armed.iter_mut().for_each(|armed| *armed = true);
    }

    /// Notes a reading; true when it crossed an armed threshold upwards.
    pub(crate) fn observe(&mut self, value: f64) -> bool {
        let mut crossed = false;
        for (threshold, armed) in self.thresholds.iter().zip(self.armed.iter_mut()) {
            if *armed && value > *threshold {
                *armed = false;
                crossed = true;
            } else if !*armed && value < threshold * REARM_RATIO {
                *armed = true;
            }
        }
        crossed
    }
}

/// The polling thread: every due spec is read and compared with its thresholds.
struct Poller {
    watched: Vec<Polled>,
    slot: ProbeSlot,
    seen: u64,
    probe: MemoryProbe,
    statm: Option<ProcFile>,
    usage: Option<ProcFile>,
    stat: Option<ProcFile>,
    page_size: u64,
}

struct Polled {
    spec: WatchSpec,
    crossings: Crossings,
    next: Instant,
}

/// A pressure file's stall `total`, turned into the share of time stalled per window.
struct PressurePoll {
    file: Option<ProcFile>,
    kind: &'static str,
    window_start: Option<(Instant, u64)>,
}

impl Poller {
    fn new(specs: Vec<WatchSpec>, slot: ProbeSlot) -> Self {
        let now = Instant::now();
        let watched = specs
            .into_iter()
            .map(|spec| Polled {
                crossings: Crossings::new(spec.thresholds.clone()),
                next: now,
                spec,
            })
            .collect();
        Poller {
            watched,
            slot,
            seen: 0,
            probe: MemoryProbe::default(),
            statm: None,
            usage: None,
            stat: None,
            page_size: perfpilot_strategies::proc_self::page_size(),
        }
    }

    fn run(mut self, handle: &WatchHandle, stopped: &Stop) {
        let mut rearms_seen = 0;
        loop {
            let now = Instant::now();
            self.refresh_probe();
            let rearms = handle.shared.rearms.load(Ordering::Relaxed);
            if rearms != rearms_seen {
                rearms_seen = rearms;
                for polled in &mut self.watched {
                    polled.crossings.rearm();
                }
            }
            let mut next = now + Duration::from_secs(1);
            for index in 0..self.watched.len() {
                if self.watched[index].next <= now {
                    let value = self.read(index);
                    handle.shared.reads.fetch_add(1, Ordering::Relaxed);
                    let polled = &mut self.watched[index];
                    polled.next = now + polled.spec.interval;
                    if let Some(value) = value {
                        if polled.crossings.observe(value) {
                            debug!(signal = %polled.spec.signal, value, "fast watch: threshold crossed");
                            handle.wake(polled.spec.signal, WatchMode::Poll);
                        }
                    }
                }
                next = next.min(self.watched[index].next);
            }
            if stop_requested(stopped, next.saturating_duration_since(Instant::now())) {
                return;
            }
        }
    }

    /// Reopens the files when the sampler has published a new probe.
    fn refresh_probe(&mut self) {
        let Some((version, probe)) = self.slot.newer_than(self.seen) else {
            return;
        };
        self.seen = version;
        if self.probe.statm != probe.statm {
            self.statm = probe.statm.as_deref().and_then(|p| ProcFile::open(p, 128));
        }
        if self.probe.cgroup != probe.cgroup {
            self.usage = probe
                .cgroup
                .as_ref()
                .and_then(|c| ProcFile::open(&c.usage_file(), 64));
            self.stat = probe
                .cgroup
                .as_ref()
                .and_then(|c| ProcFile::open(&c.stat_file(), 4096));
        }
        self.probe = probe;
    }

    fn read(&mut self, index: usize) -> Option<f64> {
        match self.watched[index].spec.signal {
            Signal::RssBytes => self.rss_bytes().map(|b| b as f64),
            Signal::MemoryUsage => {
                let limit = self.probe.limit_bytes? as f64;
                let lowest = self.watched[index].crossings.lowest();
                self.memory_usage_bytes(lowest * limit)
                    .map(|b| b as f64 / limit)
            }
            _ => None,
        }
    }

    fn rss_bytes(&mut self) -> Option<u64> {
        let text = self.statm.as_mut()?.read(true)?;
        let pages = procfs::parse_statm(&text)?;
        pages.resident_bytes.checked_mul(self.page_size)
    }

    /// The memory the limit is enforced on: the limiting cgroup's working set (its usage
    /// alone while that is below `floor`: the working set cannot be above it), else RSS.
    fn memory_usage_bytes(&mut self, floor: f64) -> Option<u64> {
        let Some(cgroup) = &self.probe.cgroup else {
            return self.rss_bytes();
        };
        let usage_text = self.usage.as_mut()?.read(true)?.into_owned();
        let usage: u64 = usage_text.trim().parse().ok()?;
        if (usage as f64) <= floor {
            return Some(usage);
        }
        let stat = self
            .stat
            .as_mut()
            .and_then(|f| f.read(false).map(|t| t.into_owned()))
            .unwrap_or_default();
        cgroup.parse_working_set(&usage_text, &stat)
    }
}

/// Watches one memory pressure signal: waits (up to 2 s) for the first sample to say which
/// cgroup's pressure to read, registers a PSI trigger per threshold, and sleeps in `poll`
/// until the kernel reports; where the trigger cannot be registered, polls the file.
fn watch_pressure(
    index: usize,
    spec: WatchSpec,
    slot: &ProbeSlot,
    handle: &WatchHandle,
    stopped: &Stop,
) {
    let kind = pressure_kind(spec.signal).expect("only pressure signals come here");
    let deadline = Instant::now() + Duration::from_secs(2);
    while slot.newer_than(0).is_none() && Instant::now() < deadline {
        if stop_requested(stopped, Duration::from_millis(20)) {
            return;
        }
    }
    let dir = slot.current().pressure_dir;
    let set_status = |mode: WatchMode, reason: Option<String>| {
        if let Some(shown) = lock(&handle.shared.signals).get_mut(index) {
            shown.mode = mode;
            shown.fallback_reason = reason;
        }
    };
    match PsiTrigger::register(dir.as_deref(), kind, &spec.thresholds) {
        Ok(trigger) => {
            info!(signal = %spec.signal, file = %trigger.path.display(), window = ?trigger.window, "fast watch: PSI trigger registered");
            set_status(WatchMode::PsiTrigger, None);
            trigger.run(spec.signal, handle, stopped);
        }
        Err(reason) => {
            warn!(signal = %spec.signal, %reason, "fast watch: no PSI trigger; polling the pressure file instead");
            set_status(WatchMode::Poll, Some(reason));
            let mut poll = PressurePoll {
                file: None,
                kind,
                window_start: None,
            };
            let mut crossings = Crossings::new(spec.thresholds.clone());
            loop {
                handle.shared.reads.fetch_add(1, Ordering::Relaxed);
                if let Some(value) = poll.read(dir.as_deref(), Instant::now()) {
                    if crossings.observe(value) {
                        handle.wake(spec.signal, WatchMode::Poll);
                    }
                }
                if stop_requested(stopped, spec.interval) {
                    return;
                }
            }
        }
    }
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

    fn request(&self) {
        *lock(&self.stopped) = true;
        self.changed.notify_all();
    }
}

impl PressurePoll {
    /// The share of time stalled over the last window of at least [`PSI_WINDOW`]; `None`
    /// until a window has passed.
    fn read(&mut self, dir: Option<&Path>, now: Instant) -> Option<f64> {
        if self.file.is_none() {
            self.file = ProcFile::open(&pressure_file(dir), 256);
        }
        let text = self.file.as_mut()?.read(false)?;
        let total = text
            .lines()
            .find(|l| l.starts_with(self.kind))?
            .split_ascii_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse::<u64>()
            .ok()?;
        match self.window_start {
            Some((start, start_total)) if now.duration_since(start) >= PSI_WINDOW => {
                self.window_start = Some((now, total));
                let wall_us = now.duration_since(start).as_secs_f64() * 1e6;
                Some(total.saturating_sub(start_total) as f64 / wall_us)
            }
            Some(_) => None,
            None => {
                self.window_start = Some((now, total));
                None
            }
        }
    }
}

fn pressure_file(dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(dir) => dir.join("memory.pressure"),
        None => Path::new(super::pressure::SYSTEM_DIR).join("memory"),
    }
}

/// Kernel PSI triggers on one pressure file (one file descriptor per threshold: the kernel
/// keeps one trigger per open file).
struct PsiTrigger {
    path: PathBuf,
    files: Vec<File>,
    /// The window the kernel took: [`PSI_WINDOW`], or [`UNPRIVILEGED_PSI_WINDOW`].
    window: Duration,
}

impl PsiTrigger {
    /// Registers `<kind> <threshold × window in µs> <window in µs>` for each threshold on the
    /// watched cgroup's `memory.pressure` (or the system's), or says why it cannot: with a
    /// [`PSI_WINDOW`], or where the kernel refuses that as unprivileged, with an
    /// [`UNPRIVILEGED_PSI_WINDOW`] (the same ratio of stalled time).
    fn register(dir: Option<&Path>, kind: &str, thresholds: &[f64]) -> Result<Self, String> {
        match Self::register_with(dir, kind, thresholds, PSI_WINDOW) {
            Err((reason, Some(libc::EINVAL))) => {
                Self::register_with(dir, kind, thresholds, UNPRIVILEGED_PSI_WINDOW).map_err(
                    |(again, _)| {
                        format!("{reason}; with a {UNPRIVILEGED_PSI_WINDOW:?} window: {again}")
                    },
                )
            }
            other => other.map_err(|(reason, _)| reason),
        }
    }

    /// [`PsiTrigger::register`] with one window; a refusal carries the kernel's errno.
    fn register_with(
        dir: Option<&Path>,
        kind: &str,
        thresholds: &[f64],
        window: Duration,
    ) -> Result<Self, (String, Option<i32>)> {
        let path = pressure_file(dir);
        let window_us = window.as_micros() as u64;
        let mut files = Vec::new();
        for &threshold in thresholds {
            if !(threshold > 0.0 && threshold <= 1.0) {
                return Err((
                    format!("threshold {threshold} is not a ratio in (0, 1]"),
                    None,
                ));
            }
            let stall_us = ((threshold * window_us as f64) as u64).max(1);
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| {
                    (
                        format!("cannot open {} for writing: {e}", path.display()),
                        None,
                    )
                })?;
            let line = format!("{kind} {stall_us} {window_us}\0");
            file.write_all(line.as_bytes()).map_err(|e| {
                let reason = format!(
                    "the kernel refused the trigger {:?} on {}: {e}",
                    line.trim_end_matches('\0'),
                    path.display()
                );
                (reason, e.raw_os_error())
            })?;
            files.push(file);
        }
        Ok(PsiTrigger {
            path,
            files,
            window,
        })
    }

    /// Waits in `poll` for the kernel's reports, checking for the stop every 100 ms.
    fn run(self, signal: Signal, handle: &WatchHandle, stopped: &Stop) {
        loop {
            match crate::sys::poll_pri(&self.files, Duration::from_millis(100)) {
                Ok(true) => {
                    handle.shared.reads.fetch_add(1, Ordering::Relaxed);
                    handle.wake(signal, WatchMode::PsiTrigger);
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(%signal, error = %e, "fast watch: polling the PSI trigger failed; stopped");
                    return;
                }
            }
            if stop_requested(stopped, Duration::ZERO) {
                return;
            }
        }
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

    #[test]
    fn a_crossing_wakes_once_until_the_reading_falls_below_the_rearm_level() {
        let mut crossings = Crossings::new(vec![0.8, 0.95]);
        assert!(!crossings.observe(0.5));
        let mut rearmed = Crossings::new(vec![0.8]);
        assert!(rearmed.observe(0.9));
        assert!(!rearmed.observe(0.9), "once per crossing");
        rearmed.rearm();
        assert!(
            rearmed.observe(0.9),
            "re-armed: still above wakes once more"
        );
        assert!(crossings.observe(0.81), "0.8 crossed");
        assert!(!crossings.observe(0.9), "still above 0.8: no second wake");
        assert!(crossings.observe(0.97), "0.95 crossed");
        assert!(
            !crossings.observe(0.77),
            "0.77 is above 0.8 × 0.95 = 0.76: not re-armed"
        );
        assert!(!crossings.observe(0.81));
        assert!(!crossings.observe(0.75), "re-armed below 0.76");
        assert!(crossings.observe(0.82), "crossed again");
    }

    #[test]
    fn specs_of_one_signal_merge() {
        let spec = |thresholds: Vec<f64>, ms| WatchSpec {
            signal: Signal::MemoryUsage,
            thresholds,
            interval: Duration::from_millis(ms),
        };
        let merged = merge(vec![
            spec(vec![0.95, 0.8], 50),
            spec(vec![0.8, f64::NAN], 20),
            WatchSpec {
                signal: Signal::RssBytes,
                thresholds: vec![],
                interval: Duration::from_millis(20),
            },
        ]);
        assert_eq!(merged, vec![spec(vec![0.8, 0.95], 20)]);
    }

    /// The real thing: a thread of this process allocates past a threshold of its own RSS
    /// and the watch wakes its waiter, well before a 10 s full-sample interval would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_real_rss_rise_wakes_the_waiter() {
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
                interval: Duration::from_millis(10),
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

    /// A PSI trigger on this machine's memory pressure registers (root, PSI on) or falls back
    /// to polling with the kernel's reason.
    #[test]
    fn a_psi_trigger_registers_or_says_why_not() {
        match PsiTrigger::register(None, "some", &[0.15]) {
            Ok(trigger) => {
                assert_eq!(trigger.files.len(), 1);
                assert_eq!(trigger.path, Path::new("/proc/pressure/memory"));
                assert!(
                    [PSI_WINDOW, UNPRIVILEGED_PSI_WINDOW].contains(&trigger.window),
                    "{:?}",
                    trigger.window
                );
            }
            Err(reason) => {
                // Not a skip: the refusal is the fallback this test checks.
                eprintln!("the kernel refused the PSI trigger; its reason is checked ({reason})");
                assert!(reason.contains("/proc/pressure/memory"), "{reason}");
            }
        }
        let err = PsiTrigger::register(None, "some", &[1.5]).err().unwrap();
        assert!(err.contains("not a ratio"), "{err}");
    }

    /// Where the kernel refuses a 1 s window as unprivileged (no `CAP_SYS_RESOURCE`: root in
    /// this VM's sandbox, or in a pod), the trigger registers with a 2 s window instead of
    /// leaving the watch to poll; where it takes 1 s, that is the window.
    #[test]
    fn a_trigger_refused_a_1_s_window_as_unprivileged_registers_with_2_s() {
        let one_second = PsiTrigger::register_with(None, "some", &[0.15], PSI_WINDOW);
        let registered = PsiTrigger::register(None, "some", &[0.15, 0.5]);
        match one_second {
            Ok(_) => assert_eq!(registered.unwrap().window, PSI_WINDOW),
            Err((_, Some(libc::EINVAL))) => {
                let trigger = registered.expect("the 2 s window registers");
                assert_eq!(trigger.window, UNPRIVILEGED_PSI_WINDOW);
                assert_eq!(trigger.files.len(), 2);
            }
            // No PSI here at all: nothing to fall back to.
            Err((reason, _)) => assert!(registered.is_err(), "{reason}"),
        }
    }
}
