//! Reaction time (SPEC §8: a threshold crossing is acted on within 2 intervals), measured on
//! the real engine through the library, on a real clock.
//!
//! Run with: cargo bench --bench reaction    (about 50 s; prints one markdown table)
//!
//! A [`SignalSource`] scripts `error_rate`: calm (0.1) for at least 2.5 intervals, then above
//! the trigger's 0.8 from one sample on, noting the `Instant` of that first crossing sample.
//! The registered strategy notes when it completes and relieves the signal (calm again). The
//! reaction of one crossing is (completion − crossing sample) / interval. A crossing not acted
//! on within [`MISSED_AFTER_INTERVALS`] is counted as missed, and relieved so the next one
//! can start. Every other setting is the agent's default (2 tokio workers, as `perfpilot run`
//! on this 2-core machine), except the trigger's cooldown, which is one interval so that it
//! does not hold back the next crossing (with the default 30 s it would, by design). The last
//! row uses `for = 2` (two samples above before firing), which by design adds one interval.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use perfpilot::Agent;
use perfpilot::SignalSource;
use perfpilot_strategies::{
    async_trait, Context, Outcome, Signal, Snapshot, Strategy, StrategyError, TriggerSpec,
};

/// The trigger's threshold, and the values the script feeds.
const ABOVE: f64 = 0.8;
const CALM: f64 = 0.1;
const CROSSING: f64 = 0.9;
/// A crossing not acted on within this many intervals is missed.
const MISSED_AFTER_INTERVALS: u32 = 10;
/// Calm time between the relief of one crossing and the next, in intervals: long enough for
/// a calm sample to re-arm the trigger (hysteresis) and for the cooldown to pass.
const CALM_INTERVALS: f64 = 2.5;

/// One measured configuration.
struct Case {
    interval: Duration,
    crossings: usize,
    for_samples: u32,
}

const CASES: [Case; 4] = [
    Case {
        interval: Duration::from_millis(20),
        crossings: 200,
        for_samples: 1,
    },
    Case {
        interval: Duration::from_millis(100),
        crossings: 40,
        for_samples: 1,
    },
    Case {
        interval: Duration::from_secs(1),
        crossings: 5,
        for_samples: 1,
    },
    Case {
        interval: Duration::from_millis(100),
        crossings: 30,
        for_samples: 2,
    },
];

/// Where the script is.
#[derive(Debug)]
enum Phase {
    /// Calm until this instant; the first sample after it crosses.
    Calm { until: Instant },
    /// Crossing number `index` is being shown.
    Crossing { index: usize },
    /// Every crossing has been shown.
    Done,
}

/// One crossing: when its first crossing sample was taken, and when the strategy completed.
#[derive(Debug)]
struct Crossing {
    sampled: Instant,
    completed: Option<Instant>,
    missed: bool,
}

/// What the source and the strategy share.
#[derive(Debug)]
struct Script {
    interval: Duration,
    total: usize,
    phase: Phase,
    crossings: Vec<Crossing>,
    /// Runs that found no crossing to relieve (must stay 0).
    spurious_runs: u32,
}

impl Script {
    fn calm_from(&mut self, now: Instant) {
        self.phase = if self.crossings.len() >= self.total {
            Phase::Done
        } else {
            Phase::Calm {
                until: now + self.interval.mul_f64(CALM_INTERVALS),
            }
        };
    }

    /// The value one sample at `now` reads.
    fn value_at(&mut self, now: Instant) -> f64 {
        match self.phase {
            Phase::Calm { until } if now >= until => {
                self.crossings.push(Crossing {
                    sampled: now,
                    completed: None,
                    missed: false,
                });
                self.phase = Phase::Crossing {
                    index: self.crossings.len() - 1,
                };
                CROSSING
            }
            Phase::Crossing { index } => {
                let since = now - self.crossings[index].sampled;
                if since > self.interval * MISSED_AFTER_INTERVALS {
                    self.crossings[index].missed = true;
                    self.calm_from(now);
                    CALM
                } else {
                    CROSSING
                }
            }
            Phase::Calm { .. } | Phase::Done => CALM,
        }
    }

    /// The strategy completed at `now`: relieve the crossing shown, if any.
    fn relieve(&mut self, now: Instant) {
        match self.phase {
            Phase::Crossing { index } => {
                self.crossings[index].completed = Some(now);
                self.calm_from(now);
            }
            _ => self.spurious_runs += 1,
        }
    }

    fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

type Shared = Arc<Mutex<Script>>;

fn lock(script: &Shared) -> std::sync::MutexGuard<'_, Script> {
    script
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The scripted `error_rate`; every other signal absent (so no built-in strategy fires).
struct ScriptedSource(Shared);

impl SignalSource for ScriptedSource {
    fn sample(&mut self) -> Snapshot {
        let now = Instant::now();
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.error_rate = Some(lock(&self.0).value_at(now));
        snapshot
    }
}

/// The strategy: notes its completion and relieves the signal.
#[derive(Debug)]
struct Relieve(Shared);

#[async_trait]
impl Strategy for Relieve {
    fn name(&self) -> &str {
        "reaction-probe"
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        lock(&self.0).relieve(Instant::now());
        Ok(Outcome::acted("relieved error_rate"))
    }
}

/// What one case measured.
struct Measured {
    reactions: Vec<Duration>,
    missed: usize,
    spurious_runs: u32,
    recorded_runs: u64,
    elapsed: Duration,
}

async fn measure(case: &Case) -> Measured {
    let script: Shared = Arc::new(Mutex::new(Script {
        interval: case.interval,
        total: case.crossings,
        phase: Phase::Calm {
            until: Instant::now() + case.interval.mul_f64(CALM_INTERVALS),
        },
        crossings: Vec::with_capacity(case.crossings),
        spurious_runs: 0,
    }));
    let trigger = TriggerSpec::new(Signal::ErrorRate, ABOVE)
        .for_samples(case.for_samples)
        .cooldown(case.interval);
    let started = Instant::now();
    let agent = Agent::builder()
        .interval(case.interval)
        .signal_source(ScriptedSource(Arc::clone(&script)))
        .strategy(Arc::new(Relieve(Arc::clone(&script))), trigger)
        .spawn()
        .expect("a valid configuration");
    // Bounded: every crossing takes at most MISSED_AFTER_INTERVALS + CALM_INTERVALS + 1.
    let limit = case.interval * ((MISSED_AFTER_INTERVALS + 4) * case.crossings as u32);
    let deadline = Instant::now() + limit;
    while !lock(&script).finished() && Instant::now() < deadline {
        tokio::time::sleep(case.interval).await;
    }
    let elapsed = started.elapsed();
    let recorded_runs = perfpilot::__internal::engine(&agent).view().stats.count;
    agent.shutdown().await;
    let script = lock(&script);
    let reactions = script
        .crossings
        .iter()
        .filter_map(|c| c.completed.map(|done| done - c.sampled))
        .collect();
    // Crossings never shown (deadline hit) count as missed too.
    let missed = script.crossings.iter().filter(|c| c.missed).count()
        + case.crossings.saturating_sub(script.crossings.len());
    Measured {
        reactions,
        missed,
        spurious_runs: script.spurious_runs,
        recorded_runs,
        elapsed,
    }
}

/// The nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("| interval | `for` | crossings | acted on / missed | median | p95 | max | verdict (≤ 2 intervals, 0 missed) |");
    println!("|---|---|---|---|---|---|---|---|");
    for case in &CASES {
        let measured = runtime.block_on(measure(case));
        let mut sorted = measured.reactions.clone();
        sorted.sort();
        let interval = case.interval.as_secs_f64();
        let cell = |d: Duration| {
            format!(
                "{:.3} ({:.3} ms)",
                d.as_secs_f64() / interval,
                d.as_secs_f64() * 1000.0
            )
        };
        let max = sorted.last().copied().unwrap_or_default();
        let met = measured.missed == 0
            && measured.spurious_runs == 0
            && !sorted.is_empty()
            && max.as_secs_f64() <= 2.0 * interval;
        println!(
            "| {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            humantime::format_duration(case.interval),
            case.for_samples,
            case.crossings,
            sorted.len(),
            measured.missed,
            cell(percentile(&sorted, 50.0)),
            cell(percentile(&sorted, 95.0)),
            cell(max),
            if met { "met" } else { "**not met**" },
        );
        eprintln!(
            "  ({} at `for` {}: {} runs recorded by the engine, {} runs without a crossing, {:.1} s)",
            humantime::format_duration(case.interval),
            case.for_samples,
            measured.recorded_runs,
            measured.spurious_runs,
            measured.elapsed.as_secs_f64()
        );
    }
    println!();
    println!("Reaction in intervals (and ms): from the sample that first reads the crossing value to the strategy's completion.");
    println!("Load average at the end: {}", load_average());
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}
