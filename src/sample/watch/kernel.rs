//! Kernel notifications as accelerators of the memory watch: the kernel wakes the watch's
//! thread when the limiting cgroup's memory moves, so a fill is read at once instead of at
//! the next poll (or, while the watch is disarmed, at the next full sample).
//!
//! | cgroup | registered | fires on |
//! |---|---|---|
//! | v1 | through `cgroup.event_control`: an eventfd per usage threshold on `memory.usage_in_bytes` (each of the watched thresholds × the limit), and on `memory.pressure_level` at `medium` | raw usage crossing a threshold (either way), reclaim pressure |
//! | v2 | `memory.events` opened and polled for a change (`POLLPRI`) | `high`, `max`, `oom` events |
//!
//! They fire on raw usage, page cache included, so they are a wake-up, not a reading: the
//! watch then reads the working set as it always does. They often cannot be registered
//! (systemd's `ProtectControlGroups=yes`, a pod without write access to its cgroup): the
//! polling watch holds on its own, and `fastWatch` says which is in use and why not.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use serde::Serialize;

use crate::sample::cgroup::MemoryCgroup;
use crate::sys::{self, PollFor};

/// The v1 `memory.pressure_level` level registered: `medium` (reclaim is under way and the
/// cgroup is swapping or dropping caches), not `low` (any reclaim, constant near a limit).
pub(crate) const PRESSURE_LEVEL: &str = "medium";

/// Which kernel notification wakes the memory watch (`fastWatch.signals[].notifier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Notifier {
    /// cgroup v1: usage thresholds and `memory.pressure_level` through `cgroup.event_control`.
    CgroupV1Thresholds,
    /// cgroup v2: changes of `memory.events`.
    CgroupV2Events,
}

/// Notifications registered on one cgroup; dropping them unregisters them (v1: the kernel
/// removes an event when its eventfd is closed).
#[derive(Debug)]
pub(super) struct Notifications {
    notifier: Notifier,
    /// v1: the eventfd; v2: `memory.events`.
    file: File,
    /// What was registered, for the log.
    pub(super) registered: String,
}

impl Notifications {
    /// Registers notifications on `cgroup`: on v1 a usage threshold at each of
    /// `thresholds_bytes` and the `medium` pressure level, on v2 `memory.events` changes; or
    /// says why they cannot be.
    pub(super) fn register(
        cgroup: &MemoryCgroup,
        thresholds_bytes: &[u64],
    ) -> Result<Self, String> {
        match cgroup {
            MemoryCgroup::V1(_) => Self::register_v1(cgroup, thresholds_bytes),
            MemoryCgroup::V2(_) => Self::register_v2(cgroup),
        }
    }

    fn register_v1(cgroup: &MemoryCgroup, thresholds_bytes: &[u64]) -> Result<Self, String> {
        let dir = cgroup.dir();
        let control_path = dir.join("cgroup.event_control");
        let mut control = OpenOptions::new()
            .write(true)
            .open(&control_path)
            .map_err(|e| format!("cannot open {} for writing: {e}", control_path.display()))?;
        let eventfd = sys::eventfd().map_err(|e| format!("cannot create an eventfd: {e}"))?;
        let usage_path = cgroup.usage_file();
        let usage = File::open(&usage_path)
            .map_err(|e| format!("cannot open {}: {e}", usage_path.display()))?;
        let mut registered = Vec::new();
        for &threshold in thresholds_bytes {
            let line = format!("{} {} {threshold}", eventfd.as_raw_fd(), usage.as_raw_fd());
            control.write_all(line.as_bytes()).map_err(|e| {
                format!(
                    "the kernel refused a usage threshold of {threshold} bytes on {}: {e}",
                    control_path.display()
                )
            })?;
            registered.push(threshold.to_string());
        }
        let mut what = format!(
            "usage thresholds {} bytes on {}",
            registered.join(", "),
            usage_path.display()
        );
        // The pressure level is a second wake-up beside the thresholds: a kernel without it
        // (or a refusal) leaves the thresholds in place.
        let level_path = dir.join("memory.pressure_level");
        let level = File::open(&level_path).and_then(|level| {
            let line = format!(
                "{} {} {PRESSURE_LEVEL}",
                eventfd.as_raw_fd(),
                level.as_raw_fd()
            );
            control.write_all(line.as_bytes())
        });
        match level {
            Ok(()) => what.push_str(&format!("; {PRESSURE_LEVEL} on {}", level_path.display())),
            Err(e) => what.push_str(&format!(
                "; no pressure level ({}: {e})",
                level_path.display()
            )),
        }
        Ok(Notifications {
            notifier: Notifier::CgroupV1Thresholds,
            file: eventfd,
            registered: what,
        })
    }

    fn register_v2(cgroup: &MemoryCgroup) -> Result<Self, String> {
        let path = cgroup.dir().join("memory.events");
        let mut file =
            File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // Reading it once marks the events seen, so that the next change reports.
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Notifications {
            notifier: Notifier::CgroupV2Events,
            file,
            registered: format!("changes of {}", path.display()),
        })
    }

    /// Which notifier this is.
    pub(super) fn notifier(&self) -> Notifier {
        self.notifier
    }

    /// The file to poll, and for what.
    pub(super) fn poll_for(&self) -> (BorrowedFd<'_>, PollFor) {
        match self.notifier {
            Notifier::CgroupV1Thresholds => (self.file.as_fd(), PollFor::Readable),
            Notifier::CgroupV2Events => (self.file.as_fd(), PollFor::Priority),
        }
    }

    /// Takes the notification that woke the poll, so the next poll waits for a new one (v1:
    /// reads the eventfd's counter back to 0; v2: reads `memory.events` again).
    pub(super) fn take(&mut self) {
        match self.notifier {
            Notifier::CgroupV1Thresholds => {
                let mut counter = [0u8; 8];
                // Non-blocking: an error (EAGAIN) means there was nothing to take.
                let _ = self.file.read(&mut counter);
            }
            Notifier::CgroupV2Events => {
                let mut text = String::new();
                let _ = self
                    .file
                    .seek(SeekFrom::Start(0))
                    .and_then(|_| self.file.read_to_string(&mut text));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use perfpilot_strategies::Signal;

    use super::Notifier;
    use crate::sample::cgroup::{CgroupLimits, MemoryCgroup};
    use crate::sample::watch::{FastWatch, MemoryProbe, ProbeSlot, WatchMode, WatchSpec};

    /// A child cgroup of this process's v1 memory cgroup, removed (once its processes are
    /// gone) when dropped.
    struct TestCgroup(PathBuf);

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            for _ in 0..50 {
                if fs::remove_dir(&self.0).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A process killed and reaped when dropped.
    struct Killed(Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// On cgroup v2, `memory.events` of the memory cgroup registers (it needs only read
    /// access). Where this process's memory controller is on v1 (a hybrid hierarchy, as on the
    /// development VM), no v2 cgroup has a `memory.events`: the registration is checked on a
    /// directory holding one, which is what the v2 notifier opens and reads.
    #[test]
    fn memory_events_register_on_cgroup_v2() {
        let limits = CgroupLimits::discover(Path::new(crate::sample::procfs::SELF_DIR));
        let stand_in = tempfile::tempdir().unwrap();
        let cgroup = match limits.own_memory_cgroup() {
            Some(cgroup @ MemoryCgroup::V2(_)) => cgroup,
            _ => {
                println!("memory controller on cgroup v1: registering on a stand-in directory");
                fs::write(
                    stand_in.path().join("memory.events"),
                    "low 0\nhigh 0\nmax 0\n",
                )
                .unwrap();
                MemoryCgroup::V2(stand_in.path().to_owned())
            }
        };
        let mut notifications = super::Notifications::register(&cgroup, &[1 << 30]).unwrap();
        assert_eq!(notifications.notifier(), Notifier::CgroupV2Events);
        notifications.take();
        let missing = MemoryCgroup::V2(stand_in.path().join("gone"));
        let Err(refused) = super::Notifications::register(&missing, &[1 << 30]) else {
            panic!("a cgroup without memory.events registered");
        };
        assert!(refused.contains("memory.events"), "{refused}");
    }

    /// Where notifications cannot be registered (here: a directory that is not a cgroup, so
    /// no `cgroup.event_control`), `fastWatch` says why, and the polling watch alone sees the
    /// usage pass the threshold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_notifications_the_polling_watch_holds_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let usage = dir.path().join("memory.usage_in_bytes");
        fs::write(&usage, "1000\n").unwrap();
        fs::write(dir.path().join("memory.stat"), "total_inactive_file 0\n").unwrap();
        let slot = ProbeSlot::default();
        slot.publish(MemoryProbe {
            statm: None,
            cgroup: Some(MemoryCgroup::V1(dir.path().to_owned())),
            limit_bytes: Some(10_000),
            pressure_dir: None,
        });
        let watch = FastWatch::start(
            vec![WatchSpec {
                signal: Signal::MemoryUsage,
                thresholds: vec![0.5],
                interval: Some(Duration::from_millis(10)),
                budgets: Vec::new(),
            }],
            slot,
        )
        .expect("a spec to watch");
        let handle = watch.handle();
        let woken = handle.woken();
        fs::write(&usage, "9000\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("waited 5 s for the polling watch to see usage pass half the limit");
        assert_eq!(
            handle.take_crossings(),
            vec![(Signal::MemoryUsage, WatchMode::Poll)]
        );
        let shown = handle.status().signals[0].clone();
        assert_eq!(shown.notifier, None);
        let reason = shown.notifier_reason.expect("why no notifications");
        assert!(
            reason.contains("cgroup.event_control") && reason.contains("for writing"),
            "{reason}"
        );
    }

    /// The real thing on this machine's cgroup v1: a process in a memory cgroup allocates
    /// past the watched threshold, and the kernel's usage threshold wakes the watch, whose
    /// polling period (10 s) would not have come round in the 5 s waited.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_allocating_past_a_threshold_in_a_v1_cgroup_wakes_the_watch() {
        let limits = CgroupLimits::discover(Path::new(crate::sample::procfs::SELF_DIR));
        let Some(MemoryCgroup::V1(own)) = limits.own_memory_cgroup() else {
            return crate::test_support::skip("this process has no cgroup v1 memory controller");
        };
        if !own.join("cgroup.event_control").exists() {
            return crate::test_support::skip("no cgroup.event_control in the v1 memory cgroup");
        }
        let dir = own.join(format!("perfpilot-watch-test-{}", std::process::id()));
        if let Err(e) = fs::create_dir(&dir) {
            return crate::test_support::skip(&format!("cannot create {} ({e})", dir.display()));
        }
        let cgroup = TestCgroup(dir.clone());
        let limit: u64 = 512 << 20;
        fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
        let slot = ProbeSlot::default();
        slot.publish(MemoryProbe {
            statm: None,
            cgroup: Some(MemoryCgroup::V1(dir.clone())),
            limit_bytes: Some(limit),
            pressure_dir: None,
        });
        let watch = FastWatch::start(
            vec![WatchSpec {
                signal: Signal::MemoryUsage,
                thresholds: vec![0.25],
                interval: Some(Duration::from_secs(10)),
                budgets: Vec::new(),
            }],
            slot,
        )
        .expect("a spec to watch");
        let handle = watch.handle();
        let deadline = Instant::now() + Duration::from_secs(5);
        let shown = loop {
            let shown = handle.status().signals[0].clone();
            if shown.notifier.is_some() || shown.notifier_reason.is_some() {
                break shown;
            }
            assert!(
                Instant::now() < deadline,
                "waited 5 s for the watch to register kernel notifications: {shown:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            shown.notifier,
            Some(Notifier::CgroupV1Thresholds),
            "{:?}",
            shown.notifier_reason
        );
        // The first read, at the start, saw an empty cgroup; the next poll is 10 s away.
        let woken = handle.woken();
        // `dd` with a 256 MiB block holds a 256 MiB buffer (half the limit) while it runs.
        let procs = dir.join("cgroup.procs");
        let _filler = Killed(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {} && exec dd if=/dev/zero of=/dev/null bs=256M count=1000",
                    procs.display()
                ))
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("waited 5 s for the cgroup's usage threshold to wake the watch");
        assert_eq!(
            handle.take_crossings(),
            vec![(Signal::MemoryUsage, WatchMode::CgroupEvent)]
        );
        drop(_filler);
        drop(watch);
        drop(cgroup);
    }
}
