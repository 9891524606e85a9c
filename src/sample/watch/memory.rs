//! The polled memory reads between samples: `/proc/<pid>/statm`, or the limiting cgroup's
//! usage (its working set once past the lowest threshold), compared with the thresholds.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{
    stop_requested, MemoryProbe, ProbeSlot, Stop, WatchHandle, WatchMode, WatchSpec, REARM_RATIO,
};
use crate::sample::procfs::{self, ProcFile};

/// The polled reads of the signal table's `watch` column (a PSI trigger has its own thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PolledRead {
    /// [`WatchRead::CgroupUsage`].
    CgroupUsage,
    /// [`WatchRead::Statm`].
    Statm,
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
pub(super) struct Poller {
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
    read: PolledRead,
    spec: WatchSpec,
    crossings: Crossings,
    next: Instant,
}

impl Poller {
    pub(super) fn new(specs: Vec<(PolledRead, WatchSpec)>, slot: ProbeSlot) -> Self {
        let now = Instant::now();
        let watched = specs
            .into_iter()
            .map(|(read, spec)| Polled {
                read,
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

    pub(super) fn run(mut self, handle: &WatchHandle, stopped: &Stop) {
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
        match self.watched[index].read {
            PolledRead::Statm => self.rss_bytes().map(|b| b as f64),
            PolledRead::CgroupUsage => {
                let limit = self.probe.limit_bytes? as f64;
                let lowest = self.watched[index].crossings.lowest();
                self.memory_usage_bytes(lowest * limit)
                    .map(|b| b as f64 / limit)
            }
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
}
