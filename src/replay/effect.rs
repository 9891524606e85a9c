//! The effect model: what a run does to its signal, learned from the recording.
//!
//! A run's effect is a step down of its signal by its relief that fades linearly back to the
//! recorded trend over its fade time. Both are read from the recorded runs of the same
//! strategy, as medians (on a noisy signal a few runs dominate a mean): the relief as the
//! share of the signal a run took away (`before` − `after` over `before`, the runs' own
//! judgement), the fade as the relief over how much faster the signal climbed back after the
//! run than it rose before it (the climb cut at the next recorded run on the signal, which
//! would contaminate it). A strategy with no recorded run gets the stated defaults
//! ([`StrategyEffect::ASSUMED`]), and the output says which effects were observed and which
//! assumed.
//!
//! How the replay applies it ([`Departures`], driven from `drive`):
//! - a replayed run of a strategy within its [match window](EffectModel::window) after a
//!   recorded run of it that the replay dropped, or a dropped recorded run within it after a
//!   replayed run of it that the recording does not have, is the same action shifted in time:
//!   the pair is *matched*, and the signal differs only between the two times;
//! - an unmatched replayed run subtracts its strategy's effect from the next sample on;
//! - an unmatched dropped run adds back its recorded relief ([`add_back`]): `before` −
//!   `after`, at most the rise the recorded signal shows before it;
//! - the departures in force add up, within a bound: the replayed signal stays between the
//!   lowest and the highest value the recorded signal took since the oldest of them, widened
//!   by the largest subtraction in force below and the largest addition in force above.

use std::collections::BTreeMap;

use perfpilot_strategies::Signal;
use serde::Serialize;

use super::recording::{RecordedRun, Recording};

/// How the replayed signal departs from the recorded one, as the output states it.
pub const HOW: &str = "a replayed run the recording does not have lowers the signal by its \
strategy's relief, fading linearly back to the recorded trend; a recorded run the candidate \
does not make adds its recorded relief back (before - after, at most the rise the recorded \
signal shows since the previous run on it), fading the same way; a replayed run within its \
strategy's match window (the longer of its fade and its cooldown) of a dropped recorded run \
of that strategy is that run shifted in time, and the signal differs only between the two \
times; the departures in force add up, but the replayed signal stays between the lowest and \
the highest recorded value since the oldest of them, widened by the largest modelled relief \
in force below and the largest added-back relief in force above";

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

/// Each strategy's effect, by name, and how far apart two runs of it may be to be matched.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EffectModel {
    /// Learned from the recording, by strategy.
    pub strategies: BTreeMap<String, StrategyEffect>,
    /// Each strategy's cooldown in the candidate, seconds (the shortest time between two of
    /// its runs): part of its match window.
    #[serde(skip)]
    pub cooldowns: BTreeMap<String, f64>,
}

impl EffectModel {
    /// Learns each strategy's effect from the recording's judged runs.
    pub fn learn(recording: &Recording) -> EffectModel {
        let mut reliefs: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for (index, run) in recording.runs.iter().enumerate() {
            let (Some(before), Some(after)) = (run.before, run.after) else {
                continue;
            };
            if !run.success || run.signal.is_none() || before <= 0.0 {
                continue;
            }
            let (shares, fades) = reliefs.entry(run.strategy.clone()).or_default();
            let share = ((before - after) / before).clamp(0.0, 1.0);
            shares.push(share);
            if share > 0.0 {
                if let Some(fade) = fade_seconds(recording, index) {
                    fades.push(fade);
                }
            }
        }
        let strategies = reliefs
            .into_iter()
            .map(|(name, (mut shares, mut fades))| {
                let effect = StrategyEffect {
                    relief_share: median(&mut shares).unwrap_or(0.0),
                    fade_seconds: median(&mut fades)
                        .unwrap_or(StrategyEffect::ASSUMED.fade_seconds),
                    observed_runs: shares.len(),
                };
                (name, effect)
            })
            .collect();
        EffectModel {
            strategies,
            cooldowns: BTreeMap::new(),
        }
    }

    /// The same, with each strategy's cooldown in the candidate (seconds), for its match
    /// window.
    pub fn with_cooldowns(mut self, cooldowns: BTreeMap<String, f64>) -> EffectModel {
        self.cooldowns = cooldowns;
        self
    }

    /// The effect of `strategy`'s runs: learned, or assumed.
    pub fn of(&self, strategy: &str) -> StrategyEffect {
        self.strategies
            .get(strategy)
            .copied()
            .unwrap_or(StrategyEffect::ASSUMED)
    }

    /// How far apart (ms) a replayed and a dropped recorded run of `strategy` may be to be
    /// the same action shifted in time: its fade or its cooldown, whichever is longer.
    pub fn window(&self, strategy: &str) -> i64 {
        let cooldown = self.cooldowns.get(strategy).copied().unwrap_or(0.0);
        (self.of(strategy).fade_seconds.max(cooldown) * 1000.0) as i64
    }
}

/// How long the relief of the recording's run `index` lasts, seconds: its relief over how
/// much faster its signal climbed back after it than the trend it rose at before it
/// ([`climb_rate`], [`trend_before`]). A signal that climbs back no faster than it rose
/// before — a leak, a cache filling under load — keeps the relief:
/// [`LASTING_FADE_SECONDS`]. `None`: the signal did not climb back at all.
fn fade_seconds(recording: &Recording, index: usize) -> Option<f64> {
    let run = &recording.runs[index];
    let (signal, before, after) = (run.signal?, run.before?, run.after?);
    let relief = before - after;
    let column = Recording::column(signal)?;
    let climb = climb_rate(recording, index, column, before)?;
    let faster = climb - trend_before(recording, index, column);
    Some(if faster > 0.0 {
        (relief / faster).min(LASTING_FADE_SECONDS)
    } else {
        LASTING_FADE_SECONDS
    })
}

/// The longest fade learned: a relief the signal does not climb back from faster than its
/// trend lasts this long (the assumed fade).
pub const LASTING_FADE_SECONDS: f64 = StrategyEffect::ASSUMED.fade_seconds;

/// The rate (per second) run `index`'s signal climbed back at: from its lowest value after
/// the run to the first sample back at the run's `before`. The next recorded run on the same
/// signal cuts it (its effect would contaminate the climb): if the signal is not back by
/// then, the climb up to that run. `None` if it did not climb.
fn climb_rate(recording: &Recording, index: usize, column: usize, before: f64) -> Option<f64> {
    let run = &recording.runs[index];
    let next = recording.runs[index + 1..]
        .iter()
        .find(|r| r.signal == run.signal && r.started_at > run.started_at)
        .map(|r| r.started_at);
    let start = (recording.sample_of(run.started_at) + 1).min(recording.samples.len());
    let mut low: Option<(i64, f64)> = None;
    let mut last: Option<(i64, f64)> = None;
    for sample in &recording.samples[start..] {
        if next.is_some_and(|next| sample.at > next) {
            break;
        }
        let Some(value) = sample.values[column] else {
            continue;
        };
        if low.is_none_or(|(_, lowest)| value < lowest) {
            low = Some((sample.at, value));
        }
        last = Some((sample.at, value));
        if value >= before {
            break;
        }
    }
    let ((from, lowest), (to, reached)) = (low?, last?);
    (to > from && reached > lowest).then(|| (reached - lowest) / ((to - from) as f64 / 1000.0))
}

/// The rate (per second) the signal rose at before run `index`, 0 if it did not rise: the
/// least-squares slope of its samples over the later half of the time since the previous
/// run on it (or the recording's start), so that the previous run's own dip and climb back
/// are not taken for a trend.
fn trend_before(recording: &Recording, index: usize, column: usize) -> f64 {
    let run = &recording.runs[index];
    let from = previous_run_sample(recording, index);
    let at = recording.sample_of(run.started_at);
    let Some(first) = recording.samples.get(from.min(at)) else {
        return 0.0;
    };
    let middle = first.at + (run.started_at - first.at) / 2;
    let points: Vec<(f64, f64)> = recording.samples[from.min(at)..=at]
        .iter()
        .filter(|s| s.at >= middle)
        .filter_map(|s| s.values[column].map(|v| ((s.at - middle) as f64 / 1000.0, v)))
        .collect();
    slope(&points).unwrap_or(0.0).max(0.0)
}

/// The least-squares slope of `points` (x, y); `None` for fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut xy, mut xx) = (0.0, 0.0);
    for (x, y) in points {
        xy += (x - mean_x) * (y - mean_y);
        xx += (x - mean_x) * (x - mean_x);
    }
    (xx > 0.0).then(|| xy / xx)
}

/// The first sample after the previous recorded run on run `index`'s signal (0 if none).
fn previous_run_sample(recording: &Recording, index: usize) -> usize {
    let run = &recording.runs[index];
    recording.runs[..index]
        .iter()
        .rev()
        .find(|r| r.signal == run.signal && r.started_at < run.started_at)
        .map_or(0, |r| recording.sample_of(r.started_at) + 1)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

/// The relief a dropped recorded run (the recording's run `index`) gives back: its recorded
/// `before` − `after`, at most the rise its signal shows before it (`before` − the lowest
/// recorded value since the previous recorded run on the signal, or the recording's start).
/// Without a judgement, `relief_share` of `before` under the same bound. Zero for a failed
/// run or one that did not lower its signal.
pub fn add_back(recording: &Recording, index: usize, relief_share: f64) -> f64 {
    let run: &RecordedRun = &recording.runs[index];
    let (Some(signal), Some(before)) = (run.signal, run.before) else {
        return 0.0;
    };
    if !run.success {
        return 0.0;
    }
    let relief = match run.after {
        Some(after) => before - after,
        None => relief_share * before,
    };
    let Some(column) = Recording::column(signal) else {
        return 0.0;
    };
    let previous = previous_run_sample(recording, index);
    let at = recording.sample_of(run.started_at);
    let lowest = recording.samples[previous.min(at)..=at]
        .iter()
        .filter_map(|s| s.values[column])
        .fold(before, f64::min);
    relief.min(before - lowest).max(0.0)
}

/// A change the replay made to a signal: `delta` at `at` (ms), fading to nothing over
/// `fade_ms`, and ended at `until` when it was matched.
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
    /// Where a matched run ends it (ms): from there on the signal is the recorded one.
    pub until: Option<i64>,
}

impl Departure {
    /// Its part of the signal at `time` (ms).
    pub fn at_time(&self, time: i64) -> f64 {
        if time <= self.at || self.until.is_some_and(|until| time >= until) {
            return 0.0;
        }
        let faded = (time - self.at) as f64 / self.fade_ms.max(1.0);
        self.delta * (1.0 - faded).max(0.0)
    }

    /// Whether it has faded (or ended) by `time` (ms).
    pub fn faded(&self, time: i64) -> bool {
        (time - self.at) as f64 >= self.fade_ms || self.until.is_some_and(|until| time >= until)
    }
}

/// Which departure, to end it when its run is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepartureId(u64);

/// The departures in force: the replayed signal is the recorded one plus their sum, bounded:
/// it stays within what the recorded signal did since the oldest of them, plus the largest
/// addition in force above and minus the largest subtraction below.
#[derive(Debug, Clone, Default)]
pub struct Departures {
    active: Vec<(DepartureId, Departure)>,
    next: u64,
}

impl Departures {
    /// Adds one.
    pub fn push(&mut self, departure: Departure) -> DepartureId {
        let id = DepartureId(self.next);
        self.next += 1;
        self.active.push((id, departure));
        id
    }

    /// Ends departure `id` at `time` (ms): its run was matched there.
    pub fn end(&mut self, id: DepartureId, time: i64) {
        if let Some((_, departure)) = self.active.iter_mut().find(|(i, _)| *i == id) {
            departure.until = Some(time);
        }
    }

    /// The replayed value of `signal` at `time` from its recorded `value` (never below 0):
    /// the value plus the departures in force, within `range` (the lowest and highest value
    /// the recording shows since the oldest of them, see [`Departures::oldest`]) widened by
    /// the largest relief in force each way.
    pub fn apply(&mut self, signal: Signal, time: i64, value: f64, range: (f64, f64)) -> f64 {
        self.active.retain(|(_, d)| !d.faded(time));
        let (mut sum, mut up, mut down) = (0.0, 0.0_f64, 0.0_f64);
        for (_, departure) in self.active.iter().filter(|(_, d)| d.signal == signal) {
            let part = departure.at_time(time);
            sum += part;
            up = up.max(part);
            down = down.min(part);
        }
        let (low, high) = (range.0.min(value), range.1.max(value));
        (value + sum).clamp(low + down, high + up).max(0.0)
    }

    /// When the oldest departure of `signal` in force started (ms).
    pub fn oldest(&self, signal: Signal) -> Option<i64> {
        self.active
            .iter()
            .filter(|(_, d)| d.signal == signal)
            .map(|(_, d)| d.at)
            .min()
    }

    /// The signals departed from.
    pub fn signals(&self) -> impl Iterator<Item = Signal> + '_ {
        self.active.iter().map(|(_, d)| d.signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn departure(delta: f64) -> Departure {
        Departure {
            signal: Signal::MemoryUsage,
            at: 0,
            delta,
            fade_ms: 10_000.0,
            until: None,
        }
    }

    #[test]
    fn departures_in_force_add_up_within_the_recorded_range_and_one_relief() {
        let mut departures = Departures::default();
        for delta in [0.2, 0.1, 0.2, -0.05, -0.15] {
            departures.push(departure(delta));
        }
        // At 1 s each has faded by a tenth: their sum is +0.27, the largest each way +0.18
        // and -0.135.
        let flat = departures.apply(Signal::MemoryUsage, 1_000, 0.5, (0.5, 0.5));
        assert!(
            (flat - 0.68).abs() < 1e-9,
            "a flat recording: at most one relief above it, not the sum (0.77): {flat}"
        );
        let wide = departures.apply(Signal::MemoryUsage, 1_000, 0.5, (0.3, 1.0));
        assert!(
            (wide - 0.77).abs() < 1e-9,
            "within what the recording did, the sum: {wide}"
        );
    }

    #[test]
    fn a_matched_departure_ends_where_it_was_matched() {
        let mut departures = Departures::default();
        let id = departures.push(departure(0.2));
        departures.end(id, 2_000);
        let range = (0.5, 0.5);
        assert!(departures.apply(Signal::MemoryUsage, 1_000, 0.5, range) > 0.5);
        assert_eq!(
            departures.apply(Signal::MemoryUsage, 2_000, 0.5, range),
            0.5
        );
    }

    #[test]
    fn the_median_takes_the_middle() {
        assert_eq!(median(&mut [3.0, 100.0, 1.0]), Some(3.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 100.0]), Some(3.0));
        assert_eq!(median(&mut []), None);
    }
}
