//! The cadence from the signal through the engine: the engine samples on tokio's paused
//! clock, its source publishes each full sample into a real fast watch's slot as the
//! agent's sampler does ([`SampleReading::of`] on the sample's time), and the watch's own
//! thread decides whether it is armed. The watch's spec is the agent's for a budget without
//! `watch_interval` ([`crate::agent::watch_specs`]). A steep rise arms it, a calm period
//! disarms it, and a budget against the target's cgroup limit (a kill line) is armed from
//! the start and stays armed.

use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use perfpilot_strategies::{MemoryLimitSource, StrategyError, TriggerSpec};

use super::*;
use crate::budget::BudgetConfig;
use crate::sample::{
    ArmReason, Cadence, FastWatch, MemoryCgroup, MemoryProbe, ProbeSlot, SampleReading,
};

const GIB: f64 = (1u64 << 30) as f64;

/// The watched process as the test scripts it: its RSS, and its memory usage against a
/// cgroup limit. Each sample is published to the watch's slot, as the sampler does.
#[derive(Clone)]
struct Process {
    value: Arc<StdMutex<f64>>,
    slot: ProbeSlot,
    signal: Signal,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Process")
    }
}

impl SignalSource for Process {
    fn sample(&mut self) -> Snapshot {
        let value = *self.value.lock().unwrap();
        let mut snapshot = Snapshot::empty(SystemTime::now());
        match self.signal {
            Signal::MemoryUsage => {
                snapshot.memory_usage_ratio = Some(value);
                snapshot.memory_limit_source = Some(MemoryLimitSource::Cgroup);
            }
            _ => snapshot.rss_bytes = Some(value as u64),
        }
        // The engine's clock: tokio's, paused and moved by the test.
        self.slot.note_sample(SampleReading::of(
            &snapshot,
            tokio::time::Instant::now().into_std(),
        ));
        snapshot
    }
}

/// A rung that changes nothing.
#[derive(Debug)]
struct Nothing;

#[async_trait]
impl Strategy for Nothing {
    fn name(&self) -> &str {
        "nothing"
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        Ok(Outcome::nothing_to_do("nothing"))
    }
}

struct Watched {
    process: Process,
    watch: FastWatch,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Watched {
    /// An engine sampling every second, holding one budget `memory` on `signal` (`goal`,
    /// `limit`, no `watch_interval`) with a fast watch from the agent's specs over `probe`;
    /// the process starts at `value`. Returns after the engine's first sample was judged.
    async fn start(signal: Signal, goal: f64, limit: f64, probe: MemoryProbe, value: f64) -> Self {
        let config = BudgetConfig::new(signal, goal, limit, &["nothing"]);
        assert_eq!(config.watch_interval, None, "the cadence from the signal");
        let budgets: BTreeMap<String, BudgetConfig> =
            [("memory".to_owned(), config.clone())].into();
        let slot = ProbeSlot::default();
        slot.publish(probe);
        let watch = FastWatch::start(crate::agent::watch_specs(&[], &budgets), slot.clone())
            .expect("the budget's signal is watched");
        let process = Process {
            value: Arc::new(StdMutex::new(value)),
            slot,
            signal,
        };
        let mut settings = EngineSettings::for_tests();
        settings.budgets = vec![("memory".to_owned(), config)];
        settings.rung_only = vec!["nothing".to_owned()];
        settings.watch = Some(watch.handle());
        settings.interval = IntervalControl::new(Duration::from_secs(1), Duration::from_secs(8));
        let shutdown = CancellationToken::new();
        let (_handle, _task) = spawn(
            settings,
            vec![Registered {
                strategy: Arc::new(Nothing),
                trigger: TriggerSpec::new(signal, f64::MAX),
            }],
            Arc::new(Registry::default()),
            Box::new(process.clone()),
            shutdown.clone(),
        );
        let watched = Watched {
            process,
            watch,
            _shutdown: shutdown.drop_guard(),
        };
        // Half a sample in: the test sets values between the engine's samples.
        tokio::time::sleep(Duration::from_millis(500)).await;
        watched.judged(1);
        watched
    }

    /// Waits (up to 10 s of real time: the watch's thread runs on it) until the watch has
    /// taken its cadence from `count` full samples.
    fn judged(&self, count: u64) {
        let handle = self.watch.handle();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while handle.samples_judged() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "waited 10 s for the watch to judge full sample {count}: {:?}",
                handle.status()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sets the process to `value(second)` for each of `seconds`, one engine sample each;
    /// returns whether the watch was armed after each.
    async fn seconds(
        &self,
        seconds: std::ops::Range<u64>,
        value: impl Fn(u64) -> f64,
    ) -> Vec<bool> {
        let mut armed = Vec::new();
        for second in seconds {
            let judged = self.watch.handle().samples_judged();
            *self.process.value.lock().unwrap() = value(second);
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.judged(judged + 1);
            armed.push(self.cadence().0 == Cadence::Armed);
        }
        armed
    }

    fn cadence(&self) -> (Cadence, ArmReason, String) {
        let shown = self.watch.handle().status().signals[0].clone();
        (shown.cadence, shown.cadence_reason, shown.cadence_why)
    }
}

/// A 48 GiB budget on the process's RSS, sampled every second: a slow rise (1 MiB/s at
/// 30 GiB) leaves the watch disarmed once the calm period has passed; a steep one (10 GiB in
/// a second, 8 GiB left) arms it at the sample that shows it; back at 10 GiB, the calm
/// period disarms it again, not before.
#[tokio::test(start_paused = true)]
async fn a_steep_rise_arms_the_budgets_watch_and_a_calm_period_disarms_it() {
    let calm = crate::sample::CALM_PERIOD.as_secs();
    let watched = Watched::start(
        Signal::RssBytes,
        44.0 * GIB,
        48.0 * GIB,
        MemoryProbe::default(),
        30.0 * GIB,
    )
    .await;
    let slow = |second: u64| 30.0 * GIB + second as f64 * (1 << 20) as f64;
    let armed = watched.seconds(1..calm + 10, slow).await;
    // Armed from the start (then cooling: at the slow rise the limit is hours away),
    // disarmed once the limit has been farther than two intervals for the calm period
    // (counted from the second sample, the first with an interval): at second calm + 1.
    let cooled = calm as usize;
    assert!(armed[..cooled].iter().all(|a| *a), "{armed:?}");
    assert!(armed[cooled..].iter().all(|a| !a), "{armed:?}");
    assert_eq!(watched.cadence().1, ArmReason::Calm);

    // The steep rise: armed at the sample that shows it.
    let armed = watched.seconds(0..1, |_| 40.0 * GIB).await;
    assert_eq!(armed, [true]);
    let (_, reason, why) = watched.cadence();
    assert_eq!(reason, ArmReason::FastestRise, "{why}");
    assert!(why.starts_with("armed: at the fastest rise seen"), "{why}");

    // Back down and calm (3.8 s away at the fastest rise seen): armed for the calm period,
    // then disarmed.
    let armed = watched.seconds(0..calm + 5, |_| 10.0 * GIB).await;
    assert!(armed[..cooled].iter().all(|a| *a), "{armed:?}");
    assert!(armed[cooled..].iter().all(|a| !a), "{armed:?}");
    assert_eq!(watched.cadence().1, ArmReason::Calm);
}

/// Against the target's cgroup limit (300 MiB, the budget's limit all of it: a kill line)
/// the watch is armed from the first sample, at the worst case, and stays armed for twice
/// the calm period while the usage barely rises.
#[tokio::test(start_paused = true)]
async fn a_budget_against_a_kill_line_is_armed_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let probe = MemoryProbe {
        statm: None,
        cgroup: Some(MemoryCgroup::V1(dir.path().to_owned())),
        limit_bytes: Some(300 << 20),
        pressure_dir: None,
    };
    let slow = |second: u64| (10.0 + second as f64 / 16.0) / 300.0;
    let watched = Watched::start(Signal::MemoryUsage, 0.8, 1.0, probe, slow(0)).await;
    assert_eq!(
        watched.cadence().0,
        Cadence::Armed,
        "armed before any headroom is known"
    );
    // The second sample measures it: at the worst case, 1 GiB/s, the 290 MiB left are
    // 0.28 s, within two intervals.
    assert_eq!(watched.seconds(1..2, slow).await, [true]);
    let (_, reason, why) = watched.cadence();
    assert_eq!(reason, ArmReason::WorstCase, "{why}");
    assert!(why.contains("the kill line is 0.28 s away"), "{why}");
    let calm = crate::sample::CALM_PERIOD.as_secs();
    let armed = watched.seconds(2..calm * 2, slow).await;
    assert!(armed.iter().all(|a| *a), "{armed:?}");
    let (_, reason, why) = watched.cadence();
    assert_eq!(reason, ArmReason::WorstCase, "{why}");
    assert!(why.contains("kill line"), "{why}");
}
