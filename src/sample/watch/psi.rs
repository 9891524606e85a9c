//! Memory pressure between samples: a kernel PSI trigger (the thread sleeps in `poll` until
//! the kernel reports the stall), else the pressure file's stall `total` polled.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use perfpilot_strategies::{PressureKind, PressureResource, Signal};
use tracing::{info, warn};

use super::memory::Crossings;
use super::{lock, stop_requested, ProbeSlot, Stop, WatchHandle, WatchMode, WatchSpec};
use crate::sample::procfs::ProcFile;

/// The PSI trigger window: the kernel reports when tasks stalled for `threshold × window`
/// within any window of this length.
pub(crate) const PSI_WINDOW: Duration = Duration::from_secs(1);

/// The window a PSI trigger falls back to when the kernel refuses [`PSI_WINDOW`]: without
/// `CAP_SYS_RESOURCE` (root in a container or a Kubernetes pod, by default) a trigger's
/// window must be a multiple of 2 s (Linux 6.5 on), else the write fails with `EINVAL`.
pub(crate) const UNPRIVILEGED_PSI_WINDOW: Duration = Duration::from_secs(2);

/// `some` or `full`: the line of a pressure file, as a PSI trigger names it.
fn pressure_line(kind: PressureKind) -> &'static str {
    match kind {
        PressureKind::Some => "some",
        PressureKind::Full => "full",
    }
}

/// A pressure file's stall `total`, turned into the share of time stalled per window.
struct PressurePoll {
    file: Option<ProcFile>,
    resource: PressureResource,
    kind: &'static str,
    window_start: Option<(Instant, u64)>,
}

/// Watches one memory pressure signal: waits (up to 2 s) for the first sample to say which
/// cgroup's pressure to read, registers a PSI trigger per threshold, and sleeps in `poll`
/// until the kernel reports; where the trigger cannot be registered, polls the file.
pub(super) fn watch_pressure(
    index: usize,
    spec: WatchSpec,
    slot: &ProbeSlot,
    handle: &WatchHandle,
    stopped: &Stop,
) {
    let set_status = |mode: WatchMode, reason: Option<String>| {
        if let Some(shown) = lock(&handle.shared.signals).get_mut(index) {
            shown.mode = mode;
            shown.fallback_reason = reason;
        }
    };
    // The signal table's `pressure` column says which file and line.
    let Some((resource, kind, _)) = spec.signal.pressure_selector() else {
        warn!(signal = %spec.signal, "fast watch: a PSI read without a pressure line in the signal table; not watched");
        set_status(
            WatchMode::Poll,
            Some("no pressure line in the signal table".to_owned()),
        );
        return;
    };
    let kind = pressure_line(kind);
    let deadline = Instant::now() + Duration::from_secs(2);
    while slot.newer_than(0).is_none() && Instant::now() < deadline {
        if stop_requested(stopped, Duration::from_millis(20)) {
            return;
        }
    }
    let dir = slot.current().pressure_dir;
    match PsiTrigger::register(dir.as_deref(), resource, kind, &spec.thresholds) {
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
                resource,
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
                if stop_requested(stopped, spec.interval.unwrap_or(PSI_WINDOW)) {
                    return;
                }
            }
        }
    }
}

impl PressurePoll {
    /// The share of time stalled over the last window of at least [`PSI_WINDOW`]; `None`
    /// until a window has passed.
    fn read(&mut self, dir: Option<&Path>, now: Instant) -> Option<f64> {
        if self.file.is_none() {
            self.file = ProcFile::open(&pressure_file(dir, self.resource), 256);
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

/// The pressure file of `resource`: the watched cgroup's `<resource>.pressure`, else the
/// system's `/proc/pressure/<resource>`.
fn pressure_file(dir: Option<&Path>, resource: PressureResource) -> PathBuf {
    match dir {
        Some(dir) => dir.join(format!("{}.pressure", resource.name())),
        None => Path::new(crate::sample::pressure::SYSTEM_DIR).join(resource.name()),
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
    fn register(
        dir: Option<&Path>,
        resource: PressureResource,
        kind: &str,
        thresholds: &[f64],
    ) -> Result<Self, String> {
        match Self::register_with(dir, resource, kind, thresholds, PSI_WINDOW) {
            Err((reason, Some(libc::EINVAL))) => {
                Self::register_with(dir, resource, kind, thresholds, UNPRIVILEGED_PSI_WINDOW)
                    .map_err(|(again, _)| {
                        format!("{reason}; with a {UNPRIVILEGED_PSI_WINDOW:?} window: {again}")
                    })
            }
            other => other.map_err(|(reason, _)| reason),
        }
    }

    /// [`PsiTrigger::register`] with one window; a refusal carries the kernel's errno.
    fn register_with(
        dir: Option<&Path>,
        resource: PressureResource,
        kind: &str,
        thresholds: &[f64],
        window: Duration,
    ) -> Result<Self, (String, Option<i32>)> {
        let path = pressure_file(dir, resource);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A PSI trigger on this machine's memory pressure registers (root, PSI on) or falls back
    /// to polling with the kernel's reason.
    #[test]
    fn a_psi_trigger_registers_or_says_why_not() {
        match PsiTrigger::register(None, PressureResource::Memory, "some", &[0.15]) {
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
        let err = PsiTrigger::register(None, PressureResource::Memory, "some", &[1.5])
            .err()
            .unwrap();
        assert!(err.contains("not a ratio"), "{err}");
    }

    /// Where the kernel refuses a 1 s window as unprivileged (no `CAP_SYS_RESOURCE`: root in
    /// this VM's sandbox, or in a pod), the trigger registers with a 2 s window instead of
    /// leaving the watch to poll; where it takes 1 s, that is the window.
    #[test]
    fn a_trigger_refused_a_1_s_window_as_unprivileged_registers_with_2_s() {
        let one_second =
            PsiTrigger::register_with(None, PressureResource::Memory, "some", &[0.15], PSI_WINDOW);
        let registered = PsiTrigger::register(None, PressureResource::Memory, "some", &[0.15, 0.5]);
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
