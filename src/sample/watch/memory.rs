//! The polled memory reads between samples: `/proc/<pid>/statm`, or the watched cgroup's
//! working set (usage less inactive file cache, as the full sample's `memory_usage`),
//! compared with the thresholds.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::arming::{Arming, Cadence, Headroom, ARMED_PERIOD, WORST_CASE_BYTES_PER_SECOND};
use super::kernel::Notifications;
use super::{MemoryProbe, ProbeSlot, Stop, WatchHandle, WatchMode, WatchSpec, REARM_RATIO};
use crate::budget::noise::NoiseBand;
use crate::budget::urgency::{assess, Line, Rise};
use crate::sample::procfs::{self, ProcFile};
use crate::sys::{self, PollFor};

/// The longest the memory thread sleeps with nothing armed (a full sample, a kernel
/// notification or the stop wakes it sooner).
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// The shortest time between two reads a kernel notification asks for: a cgroup reclaiming
/// at its limit can report pressure thousands of times a second.
const NOTIFIED_READ_GAP: Duration = Duration::from_millis(5);

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

/// The memory thread: every due spec is read and compared with its thresholds and, for a
/// budget, its slope with the reaction time the engine needs; a self-armed spec is read only
/// while armed; a kernel notification reads every cgroup spec at once.
pub(super) struct Poller {
    watched: Vec<Polled>,
    slot: ProbeSlot,
    seen: u64,
    samples_seen: u64,
    probe: MemoryProbe,
    statm: Option<ProcFile>,
    usage: Option<ProcFile>,
    stat: Option<ProcFile>,
    notifications: Option<Notifications>,
    /// When a kernel notification last woke the thread.
    notified_at: Option<Instant>,
    page_size: u64,
}

struct Polled {
    read: PolledRead,
    spec: WatchSpec,
    /// Its row in [`WatchStatus::signals`](super::WatchStatus::signals).
    shown: usize,
    crossings: Crossings,
    /// The short-horizon slope of its own reads.
    rise: Rise,
    /// The range its reads swung through lately: urgency inside it does not wake the engine.
    noise: NoiseBand,
    /// Per budget of `spec.budgets`: whether urgency fired and has not cleared since.
    urgent: Vec<bool>,
    /// The last full sample's reading and time, for the rise between two.
    last_full: Option<(Instant, f64)>,
    /// `None`: an explicit `watch_interval`; else the cadence from the signal.
    arming: Option<Arming>,
    /// When it is read next; `None` while disarmed.
    next: Option<Instant>,
}

impl Polled {
    /// The read period while it is read.
    fn period(&self) -> Duration {
        self.spec.interval.unwrap_or(ARMED_PERIOD)
    }

    /// Whether it is read between full samples: always with an explicit `watch_interval`,
    /// else while armed.
    fn read_between_samples(&self) -> bool {
        self.arming.as_ref().is_none_or(Arming::armed)
    }
}

/// Why the memory thread woke.
enum Woke {
    Stop,
    Notified,
    Timeout,
}

impl Poller {
    /// The thread for `specs`, each with its read and its row in the status.
    pub(super) fn new(specs: Vec<(PolledRead, usize, WatchSpec)>, slot: ProbeSlot) -> Self {
        let now = Instant::now();
        let watched = specs
            .into_iter()
            .map(|(read, shown, spec)| Polled {
                read,
                shown,
                crossings: Crossings::new(spec.thresholds.clone()),
                rise: Rise::default(),
                noise: NoiseBand::default(),
                urgent: vec![false; spec.budgets.len()],
                last_full: None,
                arming: spec.interval.is_none().then(Arming::default),
                next: Some(now),
                spec,
            })
            .collect();
        Poller {
            watched,
            slot,
            seen: 0,
            samples_seen: 0,
            probe: MemoryProbe::default(),
            statm: None,
            usage: None,
            stat: None,
            notifications: None,
            notified_at: None,
            page_size: perfpilot_strategies::proc_self::page_size(),
        }
    }

    pub(super) fn run(mut self, handle: &WatchHandle, stopped: &Stop) {
        let mut rearms_seen = 0;
        let mut notified = false;
        loop {
            let now = Instant::now();
            self.refresh_probe(handle);
            self.note_full_sample(handle, now);
            let rearms = handle.shared.rearms.load(Ordering::Relaxed);
            if rearms != rearms_seen {
                rearms_seen = rearms;
                for polled in &mut self.watched {
                    polled.crossings.rearm();
                    // Urgency too: a rise the run did not stop wakes the engine again at
                    // the next read, so it climbs then, not at the next full sample.
                    polled.urgent.iter_mut().for_each(|urgent| *urgent = false);
                }
            }
            let mut next: Option<Instant> = None;
            for index in 0..self.watched.len() {
                let polled = &self.watched[index];
                let woken_read = notified && polled.read == PolledRead::CgroupUsage;
                if woken_read || polled.next.is_some_and(|at| at <= now) {
                    let value = self.read(index);
                    handle.shared.reads.fetch_add(1, Ordering::Relaxed);
                    let how = if woken_read {
                        WatchMode::CgroupEvent
                    } else {
                        WatchMode::Poll
                    };
                    if let Some(value) = value {
                        self.judge(index, now, value, how, handle);
                    }
                    let polled = &mut self.watched[index];
                    polled.next = polled.read_between_samples().then(|| now + polled.period());
                }
                if let Some(at) = self.watched[index].next {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            // Disarmed with nothing to read: sleep until a full sample, a notification or
            // the stop (a minute at most, to look at the rearm counter).
            let wait = next
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or(IDLE_WAIT);
            match self.wait(stopped, wait) {
                Woke::Stop => return,
                Woke::Notified => notified = true,
                Woke::Timeout => notified = false,
            }
        }
    }

    /// Compares a reading with the spec's thresholds and, per budget, its slope with the
    /// reaction time the engine published; wakes the engine on a crossing or when urgency
    /// fires (once, until it clears), unless the reading is inside the noise band under the
    /// goal the engine holds (the engine would not count that urgency either).
    fn judge(
        &mut self,
        index: usize,
        now: Instant,
        value: f64,
        how: WatchMode,
        handle: &WatchHandle,
    ) {
        let kill_line = self.probe.cgroup.is_some();
        let polled = &mut self.watched[index];
        let signal = polled.spec.signal;
        if polled.crossings.observe(value) {
            debug!(%signal, value, "fast watch: threshold crossed");
            handle.wake(signal, how);
        }
        polled.rise.push(now, value);
        polled.noise.push(now, value);
        let slope = polled.rise.slope();
        let line = if kill_line && polled.read == PolledRead::CgroupUsage {
            Line::Kill
        } else {
            Line::Limit
        };
        let period = polled.period();
        for (budget, urgent) in polled.spec.budgets.iter().zip(polled.urgent.iter_mut()) {
            // Looked up by name under the lock, not copied out: this runs at every read.
            let Some(reaction) = handle.reaction(&budget.name) else {
                continue;
            };
            // Extrapolated toward the limit only as far as the rise has lasted.
            let toward = slope.map(|slope| polled.rise.backed(slope, budget.limit));
            if let Some(toward) = toward {
                handle.publish_slope(&budget.name, now, toward);
            }
            let mut urgency = assess(
                value,
                budget.limit,
                toward,
                &reaction.watch_period(period),
                line,
            );
            // The band first (a few compares), the goal's lock only inside it.
            if urgency.urgent
                && polled.noise.holds(now, value, f64::INFINITY)
                && handle.goal(&budget.name).is_some_and(|goal| value <= goal)
            {
                urgency.urgent = false;
            }
            if urgency.urgent && !*urgent {
                debug!(%signal, budget = %budget.name, value, %urgency, "fast watch: urgent");
                handle.wake(signal, WatchMode::Urgency);
            }
            *urgent = urgency.urgent;
        }
        if let (Some(arming), Some(slope)) = (polled.arming.as_mut(), slope) {
            arming.note_rise(slope);
        }
    }

    /// Takes the newest full sample the sampler published: the sampling interval in force,
    /// the rise between the last two, and with them each self-armed spec's cadence. The
    /// decision takes its time from the sample (when it was taken) and `now` (when the
    /// thread looked), never from a clock of its own, so a test drives it by hand.
    fn note_full_sample(&mut self, handle: &WatchHandle, now: Instant) {
        let Some((count, reading, interval)) = self.slot.reading_newer_than(self.samples_seen)
        else {
            return;
        };
        self.samples_seen = count;
        let kill_line = self.probe.cgroup.is_some();
        let limit_bytes = self.probe.limit_bytes;
        for polled in &mut self.watched {
            let Some(arming) = polled.arming.as_mut() else {
                continue;
            };
            let value = match polled.read {
                PolledRead::CgroupUsage => reading.memory_usage,
                PolledRead::Statm => reading.rss_bytes,
            };
            let (Some(value), Some(interval)) = (value, interval) else {
                continue;
            };
            // The rise between two full samples counts as a rise seen.
            if let Some((at, before)) = polled.last_full.replace((reading.at, value)) {
                let seconds = reading.at.saturating_duration_since(at).as_secs_f64();
                if seconds > 0.0 {
                    arming.note_rise((value - before) / seconds);
                }
            }
            let worst_case_rate = match polled.read {
                PolledRead::CgroupUsage => {
                    limit_bytes.map(|limit| WORST_CASE_BYTES_PER_SECOND / limit as f64)
                }
                PolledRead::Statm => Some(WORST_CASE_BYTES_PER_SECOND),
            };
            let Some(limit) = polled.spec.budgets.iter().map(|b| b.limit).reduce(f64::min) else {
                continue;
            };
            let was = arming.armed();
            let armed = arming.decide(
                reading.at,
                value,
                Headroom {
                    limit,
                    interval,
                    worst_case_rate,
                    kill_line: kill_line && polled.read == PolledRead::CgroupUsage,
                },
            );
            if armed != was {
                info!(signal = %polled.spec.signal, why = arming.why(), "fast watch: {}", if armed { "armed" } else { "disarmed" });
            }
            if armed && polled.next.is_none() {
                polled.next = Some(now);
            } else if !armed {
                polled.next = None;
                polled.rise.clear();
            }
            handle.show(polled.shown, |shown| {
                shown.cadence = if armed {
                    Cadence::Armed
                } else {
                    Cadence::Disarmed
                };
                shown.cadence_reason = arming.reason();
                shown.cadence_why = arming.why().to_owned();
            });
        }
        handle.note_sample_judged();
    }

    /// Waits up to `wait` for the stop, a full sample or a kernel notification.
    fn wait(&mut self, stopped: &Stop, wait: Duration) -> Woke {
        if let Some(gap) = self
            .notified_at
            .map(|at| NOTIFIED_READ_GAP.saturating_sub(at.elapsed()))
            .filter(|gap| !gap.is_zero())
        {
            if stopped.wait(gap) {
                return Woke::Stop;
            }
        }
        let Some(poke) = self.slot.poke_file() else {
            return if stopped.wait(wait) {
                Woke::Stop
            } else {
                Woke::Timeout
            };
        };
        let files = [
            Some((poke.as_fd(), PollFor::Readable)),
            self.notifications.as_ref().map(Notifications::poll_for),
        ];
        let [poked, notified] = sys::poll_ready(files, wait).unwrap_or_default();
        if poked {
            self.slot.take_poke();
        }
        if stopped.requested() {
            return Woke::Stop;
        }
        if notified {
            if let Some(notifications) = self.notifications.as_mut() {
                notifications.take();
            }
            self.notified_at = Some(Instant::now());
            return Woke::Notified;
        }
        Woke::Timeout
    }

    /// Reopens the files when the sampler has published a new probe.
    fn refresh_probe(&mut self, handle: &WatchHandle) {
        let Some((version, probe)) = self.slot.newer_than(self.seen) else {
            return;
        };
        self.seen = version;
        if self.probe.cgroup != probe.cgroup || self.probe.limit_bytes != probe.limit_bytes {
            self.register_notifications(&probe, handle);
        }
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

    /// Registers kernel notifications on the limiting cgroup of `probe` at every threshold
    /// of the cgroup specs (the old ones are dropped, so unregistered), and shows which or
    /// why none.
    fn register_notifications(&mut self, probe: &MemoryProbe, handle: &WatchHandle) {
        self.notifications = None;
        let cgroup_specs: Vec<&Polled> = self
            .watched
            .iter()
            .filter(|p| p.read == PolledRead::CgroupUsage)
            .collect();
        if cgroup_specs.is_empty() {
            return;
        }
        let outcome = match (&probe.cgroup, probe.limit_bytes) {
            (Some(cgroup), Some(limit)) => {
                let mut bytes: Vec<u64> = cgroup_specs
                    .iter()
                    .flat_map(|p| p.spec.thresholds.iter())
                    .map(|t| (t * limit as f64) as u64)
                    .collect();
                bytes.sort_unstable();
                bytes.dedup();
                Notifications::register(cgroup, &bytes)
            }
            _ => Err("the memory limit is not a cgroup's: nothing to register on".to_owned()),
        };
        let (notifier, reason) = match outcome {
            Ok(notifications) => {
                info!(registered = %notifications.registered, "fast watch: kernel notifications registered");
                let notifier = notifications.notifier();
                self.notifications = Some(notifications);
                (Some(notifier), None)
            }
            Err(reason) => {
                warn!(%reason, "fast watch: no kernel notifications; polling alone");
                (None, Some(reason))
            }
        };
        for polled in cgroup_specs {
            handle.show(polled.shown, |shown| {
                shown.notifier = notifier;
                shown.notifier_reason = reason.clone();
            });
        }
    }

    fn read(&mut self, index: usize) -> Option<f64> {
        match self.watched[index].read {
            PolledRead::Statm => self.rss_bytes().map(|b| b as f64),
            PolledRead::CgroupUsage => {
                let limit = self.probe.limit_bytes? as f64;
                self.memory_usage_bytes().map(|b| b as f64 / limit)
            }
        }
    }

    fn rss_bytes(&mut self) -> Option<u64> {
        let text = self.statm.as_mut()?.read_whole(true)?;
        let pages = procfs::parse_statm(&text)?;
        pages.resident_bytes.checked_mul(self.page_size)
    }

    /// What the full sample's `memory_usage` measures, in bytes: the cgroup's working set
    /// (usage less inactive file cache, both files read each time: the usage alone would
    /// rise with page cache the working set does not count, and its slope would be taken for
    /// urgency), else RSS.
    fn memory_usage_bytes(&mut self) -> Option<u64> {
        let Some(cgroup) = &self.probe.cgroup else {
            return self.rss_bytes();
        };
        let usage = self.usage.as_mut()?.read_whole(true)?;
        let stat = self
            .stat
            .as_mut()
            .and_then(|f| f.read_whole(false))
            .unwrap_or_default();
        cgroup.parse_working_set(&usage, &stat)
    }
}

#[cfg(test)]
mod tests {
    use super::super::arming::{ArmReason, CALM_PERIOD};
    use super::super::SampleReading;
    use super::*;
    use crate::budget::urgency::Reaction;

    /// A memory thread's poller over one spec, fed full samples at times the test picks
    /// (a hand-moved clock), taken in through the entry the thread uses
    /// ([`Poller::note_full_sample`]).
    struct HandFed {
        poller: Poller,
        slot: ProbeSlot,
        handle: WatchHandle,
        start: Instant,
    }

    impl HandFed {
        /// `read` against a budget `limit` (in the signal's unit), with `watch_interval` as
        /// `interval`, and the sampler's `probe`.
        fn new(
            read: PolledRead,
            interval: Option<Duration>,
            limit: f64,
            probe: MemoryProbe,
        ) -> Self {
            use super::super::WatchedBudget;
            use perfpilot_strategies::Signal;
            let signal = match read {
                PolledRead::CgroupUsage => Signal::MemoryUsage,
                PolledRead::Statm => Signal::RssBytes,
            };
            let spec = WatchSpec {
                signal,
                thresholds: vec![limit],
                interval,
                budgets: vec![WatchedBudget {
                    name: "memory".to_owned(),
                    limit,
                }],
            };
            let slot = ProbeSlot::default();
            slot.publish(probe);
            let handle = WatchHandle::for_tests();
            let mut poller = Poller::new(vec![(read, 0, spec)], slot.clone());
            poller.refresh_probe(&handle);
            HandFed {
                poller,
                slot,
                handle,
                start: Instant::now(),
            }
        }

        /// A full sample reading `value`, taken `at` after the start; returns whether the
        /// spec is read between full samples after it.
        fn sample(&mut self, at: Duration, value: f64) -> bool {
            let at = self.start + at;
            self.slot.note_sample(SampleReading {
                at,
                memory_usage: Some(value),
                rss_bytes: Some(value),
            });
            self.poller.note_full_sample(&self.handle, at);
            let polled = &self.poller.watched[0];
            assert_eq!(
                polled.read_between_samples(),
                polled.next.is_some(),
                "read between samples exactly when a read is scheduled"
            );
            polled.read_between_samples()
        }

        /// Full samples one second apart from `from` s, reading `value(second)`; returns
        /// whether read between samples after each.
        fn seconds(&mut self, from: u64, to: u64, value: impl Fn(u64) -> f64) -> Vec<bool> {
            (from..to)
                .map(|second| self.sample(Duration::from_secs(second), value(second)))
                .collect()
        }

        fn reason(&self) -> Option<ArmReason> {
            self.poller.watched[0].arming.as_ref().map(Arming::reason)
        }
    }

    const GIB: f64 = (1u64 << 30) as f64;

    /// A watch read every 20 ms against a limit of 1.0 (not a kill line), whose budget needs
    /// 1.17 s to react (100 ms, a 1 s settle, the period, the margin) and holds a goal of 0.8:
    /// a band made slowly (up to 0.64 at 0.1/s, four seconds there, down again: never
    /// urgent), then 10 s of a swing 0.42–0.60 twice a second, whose up-legs rise 0.72/s
    /// (the limit 0.6 s away from 0.57). No urgency wake inside the band; the first read of
    /// an up-leg that goes on past the band's top wakes the engine.
    #[test]
    fn a_swing_inside_the_noise_band_does_not_wake_the_engine_a_breakout_does() {
        use perfpilot_strategies::Signal;
        let every = Duration::from_millis(20);
        let mut watch = HandFed::new(PolledRead::Statm, Some(every), 1.0, MemoryProbe::default());
        watch.handle.publish_reaction(
            "memory",
            Reaction::new(Duration::from_millis(100), Duration::from_secs(1)),
        );
        watch.handle.publish_goal("memory", 0.8);
        let up = (0..=110).map(|i| 0.42 + 0.002 * f64::from(i));
        let plateau: Vec<f64> = std::iter::repeat_n(0.42, 50)
            .chain(up.clone())
            .chain(std::iter::repeat_n(0.64, 200))
            .chain(up.rev())
            .collect();
        let swing: Vec<f64> = (0..500)
            .map(|i| {
                let phase = f64::from(i % 25) / 25.0;
                0.42 + 0.18 * (1.0 - (2.0 * phase - 1.0).abs())
            })
            .collect();
        let mut at = watch.start;
        let mut read = |watch: &mut HandFed, values: &[f64]| {
            for &value in values {
                at += every;
                watch
                    .poller
                    .judge(0, at, value, WatchMode::Poll, &watch.handle);
            }
            watch.handle.take_crossings()
        };
        assert_eq!(read(&mut watch, &plateau), [], "the slow band");
        assert_eq!(read(&mut watch, &swing), [], "the swing inside it");
        // An up-leg to the band's top (0.6), then on.
        let up_leg: Vec<f64> = swing[..13].to_vec();
        assert_eq!(read(&mut watch, &up_leg), [], "up to the top");
        assert_eq!(
            read(&mut watch, &[0.63]),
            [(Signal::RssBytes, WatchMode::Urgency)],
            "past the top"
        );
    }

    /// A budget of 48 GiB on the watched RSS, without `watch_interval`, sampled every second:
    /// a slow rise (1 MiB/s at 30 GiB) leaves the watch disarmed once the calm period has
    /// passed; a steep one (10 GiB in a second, 8 GiB left: the limit 0.8 s away) arms it at
    /// the sample that shows it; back at 10 GiB (3.8 s away at that rate) it is disarmed
    /// again after the calm period, not before.
    #[test]
    fn without_watch_interval_a_steep_rise_arms_the_watch_a_slow_one_does_not_and_calm_disarms_it()
    {
        let calm = CALM_PERIOD.as_secs();
        let mut watch = HandFed::new(PolledRead::Statm, None, 48.0 * GIB, MemoryProbe::default());
        let slow = |second: u64| 30.0 * GIB + second as f64 * (1 << 20) as f64;
        let read = watch.seconds(0, calm + 10, slow);
        // Armed until two samples measure the headroom, then cooling until calm.
        assert!(read[..=calm as usize].iter().all(|read| *read), "{read:?}");
        assert!(
            read[calm as usize + 1..].iter().all(|read| !read),
            "disarmed after {calm} s calm, and the slow rise keeps it so: {read:?}"
        );
        assert_eq!(watch.reason(), Some(ArmReason::Calm));

        // The steep rise: armed at once.
        let steep = calm + 10;
        assert!(watch.sample(Duration::from_secs(steep), 40.0 * GIB));
        assert_eq!(watch.reason(), Some(ArmReason::FastestRise));
        let why = &watch.poller.watched[0]
            .arming
            .as_ref()
            .unwrap()
            .why()
            .to_owned();
        assert!(why.starts_with("armed: at the fastest rise seen"), "{why}");

        // Back down and calm: still armed for the calm period, then disarmed.
        let read = watch.seconds(steep + 1, steep + calm + 5, |_| 10.0 * GIB);
        let cooled = calm as usize;
        assert!(read[..cooled].iter().all(|read| *read), "{read:?}");
        assert!(read[cooled..].iter().all(|read| !read), "{read:?}");
    }

    /// Against a kernel's limit (a 300 MiB memory cgroup, the budget's limit all of it) the
    /// watch is armed from the first samples and stays armed while the signal barely rises
    /// (64 KiB/s from 10 MiB): at the worst case, 1 GiB/s, the 290 MiB left are 0.28 s, and
    /// a kill cannot be learned from, so the slow rise seen does not replace it.
    #[test]
    fn against_a_kill_line_the_watch_is_armed_from_the_start_and_stays_armed() {
        use crate::sample::cgroup::MemoryCgroup;
        let dir = tempfile::tempdir().unwrap();
        let probe = MemoryProbe {
            statm: None,
            cgroup: Some(MemoryCgroup::V1(dir.path().to_owned())),
            limit_bytes: Some(300 << 20),
            pressure_dir: None,
        };
        let mut watch = HandFed::new(PolledRead::CgroupUsage, None, 1.0, probe);
        let read = watch.seconds(0, CALM_PERIOD.as_secs() * 2, |second| {
            (10.0 + second as f64 / 16.0) / 300.0
        });
        assert!(read.iter().all(|read| *read), "{read:?}");
        assert_eq!(watch.reason(), Some(ArmReason::WorstCase));
        let why = watch.poller.watched[0].arming.as_ref().unwrap().why();
        assert!(
            why.contains("(a kill line: the worst case stays a floor)"),
            "{why}"
        );
    }

    /// An explicit `watch_interval` is read at its interval whatever the signal does: far
    /// from the limit and flat for twice the calm period, it is never disarmed.
    #[test]
    fn an_explicit_watch_interval_is_always_read() {
        let every = Duration::from_millis(50);
        let mut watch = HandFed::new(
            PolledRead::Statm,
            Some(every),
            48.0 * GIB,
            MemoryProbe::default(),
        );
        let read = watch.seconds(0, CALM_PERIOD.as_secs() * 2, |_| GIB);
        assert!(read.iter().all(|read| *read), "{read:?}");
        assert_eq!(watch.reason(), None, "no cadence from the signal");
        assert_eq!(watch.poller.watched[0].period(), every);
    }

    /// A fast watch on a cgroup v1 stand-in in a temporary directory: usage `usage` bytes of
    /// `limit`, no page cache, read every `every_ms` ms against `thresholds`, with one budget
    /// "memory" at `budget_limit` whose reaction needs 100 ms and a 2 s settle. Returns the
    /// directory (kept alive), the usage file to move, and the watch.
    fn cgroup_watch(
        usage: u64,
        limit: u64,
        thresholds: &[f64],
        every_ms: u64,
        budget_limit: f64,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        super::super::FastWatch,
    ) {
        use super::super::{FastWatch, WatchedBudget};
        use crate::sample::cgroup::MemoryCgroup;
        use perfpilot_strategies::Signal;
        let dir = tempfile::tempdir().unwrap();
        let usage_file = dir.path().join("memory.usage_in_bytes");
        std::fs::write(&usage_file, format!("{usage}\n")).unwrap();
        std::fs::write(dir.path().join("memory.stat"), "total_inactive_file 0\n").unwrap();
        let slot = ProbeSlot::default();
        slot.publish(MemoryProbe {
            statm: None,
            cgroup: Some(MemoryCgroup::V1(dir.path().to_owned())),
            limit_bytes: Some(limit),
            pressure_dir: None,
        });
        let watch = FastWatch::start(
            vec![WatchSpec {
                signal: Signal::MemoryUsage,
                thresholds: thresholds.to_vec(),
                interval: Some(Duration::from_millis(every_ms)),
                budgets: vec![WatchedBudget {
                    name: "memory".to_owned(),
                    limit: budget_limit,
                }],
            }],
            slot,
        )
        .expect("a spec to watch");
        watch.handle().publish_reaction(
            "memory",
            Reaction::new(Duration::from_millis(100), Duration::from_secs(2)),
        );
        (dir, usage_file, watch)
    }

    /// A budget's signal rising fast, still under its goal: the slope of the watch's reads
    /// puts the limit nearer than the reaction the engine published, and the watch wakes the
    /// engine (once) for urgency before any threshold is crossed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steep_rise_wakes_the_engine_for_urgency_before_the_goal() {
        use perfpilot_strategies::Signal;
        let (_dir, usage, watch) = cgroup_watch(1000, 10_000, &[0.8, 0.95], 5, 0.95);
        let handle = watch.handle();
        let woken = handle.woken();
        // 0.1 → 0.5 of the limit in steps of 0.05 every 10 ms: 5 per second, the limit
        // about 0.1 s away, against more than 2 s needed. Never past the goal (0.8).
        let filler = std::thread::spawn(move || {
            for step in 2..=10 {
                std::fs::write(&usage, format!("{}\n", step * 500)).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("waited 5 s for the watch to wake the engine for urgency");
        filler.join().unwrap();
        // Woken for urgency only, no threshold crossed. Usually once; on a loaded machine a
        // step of the fill can land late, the urgency clear and fire again.
        let wakes = handle.take_crossings();
        assert!(
            !wakes.is_empty()
                && wakes
                    .iter()
                    .all(|wake| *wake == (Signal::MemoryUsage, WatchMode::Urgency)),
            "woken for urgency only: {wakes:?}"
        );
        // The slope the engine judges the woken sample by: the watch's (no full sample was
        // taken), the fill's 5/s bounded by how long the rise had lasted (`Rise::backed`):
        // read just as the rise begins to count, about 0.8/s; on a loaded machine the fill's
        // steps can land late. Far above anything a plateau gives.
        let slope = handle
            .slope("memory", Signal::MemoryUsage, Duration::from_secs(5))
            .expect("the watch published the slope of its reads");
        assert!(slope > 0.5, "{slope}");
    }

    /// The watch reads the quantity its thresholds and slopes are about, the full sample's
    /// `memory_usage`: the working set, also while the raw usage (page cache included) is
    /// below the lowest threshold, where a cheaper read of the usage alone would report the
    /// page cache's rise as the signal's.
    #[test]
    fn a_cgroup_read_is_the_working_set_below_the_thresholds_too() {
        use crate::sample::cgroup::MemoryCgroup;
        let dir = tempfile::tempdir().unwrap();
        // Usage at half the limit, 0.4 of it inactive page cache: a working set of 0.1.
        std::fs::write(dir.path().join("memory.current"), "5000\n").unwrap();
        std::fs::write(
            dir.path().join("memory.stat"),
            "anon 900\ninactive_file 4000\n",
        )
        .unwrap();
        let mut poller = cgroup_poller(MemoryCgroup::V2(dir.path().to_owned()), 10_000);
        assert_eq!(poller.read(0), Some(0.1));
    }

    /// A poller of one cgroup's working set against `limit` bytes, its files open (no
    /// budgets, thresholds or probe slot to follow).
    fn cgroup_poller(cgroup: crate::sample::cgroup::MemoryCgroup, limit: u64) -> Poller {
        let spec = WatchSpec {
            signal: perfpilot_strategies::Signal::MemoryUsage,
            thresholds: vec![0.8],
            interval: Some(Duration::from_millis(20)),
            budgets: Vec::new(),
        };
        let mut poller = Poller::new(
            vec![(PolledRead::CgroupUsage, 0, spec)],
            ProbeSlot::default(),
        );
        poller.usage = ProcFile::open(&cgroup.usage_file(), 64);
        poller.stat = ProcFile::open(&cgroup.stat_file(), 4096);
        poller.probe = MemoryProbe {
            statm: None,
            cgroup: Some(cgroup),
            limit_bytes: Some(limit),
            pressure_dir: None,
        };
        poller
    }

    /// A 2 MiB step in a 96 MiB cgroup, landing between two 20 ms reads after a flat 30 MiB:
    /// the last five reads rise at 33 MiB/s (the limit 2 s away, against 4.3 s needed), but
    /// over the 0.5 s a 2 s extrapolation needs the rise is 2 MiB. No urgency wake.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_2_mib_step_far_below_the_limit_does_not_wake_the_engine_for_urgency() {
        use perfpilot_strategies::Signal;
        const MIB: u64 = 1 << 20;
        let (_dir, usage, watch) = cgroup_watch(30 * MIB, 96 * MIB, &[0.8, 1.0], 20, 1.0);
        let handle = watch.handle();
        let reads_past = |count: u64, what: &str| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while handle.status().reads < count {
                assert!(Instant::now() < deadline, "waited 10 s for {what}");
                std::thread::sleep(Duration::from_millis(5));
            }
            handle.status().reads
        };
        // A second of flat reads, then the step, then 0.4 s of reads at the new level.
        let flat = reads_past(50, "50 reads of the flat level");
        std::fs::write(&usage, format!("{}\n", 32 * MIB)).unwrap();
        reads_past(flat + 20, "20 reads after the step");
        let wakes = handle.take_crossings();
        assert!(wakes.is_empty(), "no wake for a 2 MiB step: {wakes:?}");
        let slope = handle
            .slope("memory", Signal::MemoryUsage, Duration::from_secs(5))
            .expect("the watch published the slope toward the limit");
        assert!(
            slope < 0.1,
            "bounded by the rise's 2 MiB over 0.5 s: {slope}"
        );
    }

    /// Read system calls this thread has made (`syscr` of `/proc/thread-self/io`); `None`
    /// where the kernel does not count them.
    fn reads_made() -> Option<u64> {
        let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
        io.lines()
            .find_map(|line| line.strip_prefix("syscr: "))?
            .parse()
            .ok()
    }

    /// An armed watch reads 50 times a second: each read of `statm` or a cgroup's usage file
    /// and `memory.stat` is one `pread` per file (counted by the kernel for this thread), not
    /// a second one that returns nothing, and gives the same reading.
    #[test]
    fn each_watched_file_is_read_with_one_system_call() {
        use crate::sample::cgroup::MemoryCgroup;
        let Some(before) = reads_made() else {
            return crate::test_support::skip("no /proc/thread-self/io (no task I/O accounting)");
        };
        // What reading the counter twice costs on its own.
        let overhead = reads_made().unwrap() - before;
        let reads_for = |poller: &mut Poller, index: usize| {
            let before = reads_made().unwrap();
            for _ in 0..100 {
                assert!(poller.read(index).is_some());
            }
            reads_made().unwrap() - before - overhead
        };

        let statm = WatchSpec {
            signal: perfpilot_strategies::Signal::RssBytes,
            thresholds: vec![GIB],
            interval: Some(Duration::from_millis(20)),
            budgets: Vec::new(),
        };
        let mut poller = Poller::new(vec![(PolledRead::Statm, 0, statm)], ProbeSlot::default());
        poller.statm = ProcFile::open(&std::path::Path::new(procfs::SELF_DIR).join("statm"), 128);
        let rss = poller.read(0).expect("this process's RSS");
        assert!(rss > 0.0, "{rss}");
        assert_eq!(
            reads_for(&mut poller, 0),
            100,
            "one pread of statm per reading"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.usage_in_bytes"), "5000\n").unwrap();
        std::fs::write(dir.path().join("memory.stat"), "total_inactive_file 4000\n").unwrap();
        let mut poller = cgroup_poller(MemoryCgroup::V1(dir.path().to_owned()), 10_000);
        assert_eq!(poller.read(0), Some(0.1), "the working set, as before");
        assert_eq!(
            reads_for(&mut poller, 0),
            200,
            "one pread of the usage file and one of memory.stat per reading"
        );
    }

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
