//! The effect model: what a run does to its signal, learned from the recording.
//!
//! A run's effect is a step down of its signal by its relief that fades linearly back to the
//! recorded trend over its fade time. Both are read from the recorded runs of the same
//! strategy: the relief as the share of the signal a run took away (`before` − `after` over
//! `before`, the runs' own judgement), the fade as the time the recorded signal took to climb
//! back to its `before` value. A strategy with no recorded run gets the stated defaults
//! ([`StrategyEffect::ASSUMED`]), and the output says which effects were observed and which
//! assumed.
//!
//! A replayed run the recording does not have subtracts its strategy's effect from the signal
//! from the next sample on; a recorded run the replay does not repeat adds its own recorded
//! relief back, fading the same way.

use std::collections::BTreeMap;

use perfpilot_strategies::Signal;
use serde::Serialize;

use super::recording::Recording;

/// What one strategy's run does to its signal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyEffect {
    /// The share of the signal's value a run takes away (0..1).
    pub relief_share: f64,
    /// Seconds the signal takes to climb back to its value before the run.
    pub fade_seconds: f64,
    /// Recorded runs it was learned from (0: assumed).
    pub observed_runs: usize,
}

impl StrategyEffect {
    /// The effect assumed for a strategy with no recorded run that was judged: 10 % of the
    /// signal, fading back over a minute.
    pub const ASSUMED: StrategyEffect = StrategyEffect {
        relief_share: 0.10,
        fade_seconds: 60.0,
        observed_runs: 0,
    };

    /// Whether it was learned from the recording.
    pub fn observed(&self) -> bool {
        self.observed_runs > 0
    }
}

/// Each strategy's effect, by name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EffectModel {
    /// Learned from the recording, by strategy.
    pub strategies: BTreeMap<String, StrategyEffect>,
}

impl EffectModel {
    /// Learns each strategy's effect from the recording's judged runs.
    pub fn learn(recording: &Recording) -> EffectModel {
        let mut reliefs: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for run in &recording.runs {
            let (Some(before), Some(after), Some(signal)) = (run.before, run.after, run.signal)
            else {
                continue;
            };
            if !run.success || before <= 0.0 {
                continue;
            }
            let (shares, fades) = reliefs.entry(run.strategy.clone()).or_default();
            let share = ((before - after) / before).clamp(0.0, 1.0);
            shares.push(share);
            if share > 0.0 {
                if let Some(fade) = fade_seconds(recording, signal, run.started_at, before) {
                    fades.push(fade);
                }
            }
        }
        let strategies = reliefs
            .into_iter()
            .map(|(name, (shares, fades))| {
                let effect = StrategyEffect {
                    relief_share: mean(&shares).unwrap_or(0.0),
                    fade_seconds: mean(&fades).unwrap_or(StrategyEffect::ASSUMED.fade_seconds),
                    observed_runs: shares.len(),
                };
                (name, effect)
            })
            .collect();
        EffectModel { strategies }
    }

    /// The effect of `strategy`'s runs: learned, or assumed.
    pub fn of(&self, strategy: &str) -> StrategyEffect {
        self.strategies
            .get(strategy)
            .copied()
            .unwrap_or(StrategyEffect::ASSUMED)
    }
}

/// Seconds after `at` until the recorded `signal` is back at `before`; `None` if it never is.
fn fade_seconds(recording: &Recording, signal: Signal, at: i64, before: f64) -> Option<f64> {
    let column = Recording::column(signal)?;
    let start = recording.sample_of(at) + 1;
    recording.samples[start.min(recording.samples.len())..]
        .iter()
        .find(|s| s.values[column].is_some_and(|v| v >= before))
        .map(|s| (s.at - at) as f64 / 1000.0)
        .filter(|seconds| *seconds > 0.0)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// A change the replay made to a signal: `delta` at `at` (ms), fading to nothing over
/// `fade_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Departure {
    /// The signal changed.
    pub signal: Signal,
    /// From when (ms since the Unix epoch): the samples after it.
    pub at: i64,
    /// The change (negative: a replayed run's relief; positive: a dropped run's relief back).
    pub delta: f64,
    /// How long it takes to fade, ms.
    pub fade_ms: f64,
}

impl Departure {
    /// Its part of the signal at `time` (ms).
    pub fn at_time(&self, time: i64) -> f64 {
        if time <= self.at {
            return 0.0;
        }
        let faded = (time - self.at) as f64 / self.fade_ms.max(1.0);
        self.delta * (1.0 - faded).max(0.0)
    }

    /// Whether it has faded by `time` (ms).
    pub fn faded(&self, time: i64) -> bool {
        (time - self.at) as f64 >= self.fade_ms
    }
}

/// The departures in force: the replayed signal is the recorded one plus their sum.
#[derive(Debug, Clone, Default)]
pub struct Departures {
    active: Vec<Departure>,
}

impl Departures {
    /// Adds one.
    pub fn push(&mut self, departure: Departure) {
        self.active.push(departure);
    }

    /// The replayed value of `signal` at `time` from its recorded `value` (never below 0).
    pub fn apply(&mut self, signal: Signal, time: i64, value: f64) -> f64 {
        self.active.retain(|d| !d.faded(time));
        let change: f64 = self
            .active
            .iter()
            .filter(|d| d.signal == signal)
            .map(|d| d.at_time(time))
            .sum();
        (value + change).max(0.0)
    }

    /// The signals departed from.
    pub fn signals(&self) -> impl Iterator<Item = Signal> + '_ {
        self.active.iter().map(|d| d.signal)
    }
}
