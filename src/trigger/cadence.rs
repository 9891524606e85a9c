//! The sampling cadence: how long the engine waits before its next sample. Pure decisions,
//! no I/O; [`next`] is the one place that picks the interval after a sample.
//!
//! Adaptive sampling samples faster while a signal is close to its threshold or trending
//! towards it, slower while everything is calm.
//!
//! The engine asks once per sample: "does any trigger need attention?" (see
//! [`crate::trigger::Evaluation::attention`]). Attention drops the interval to `min` at once —
//! reacting late is what costs. Calm relaxes it step by step: after [`CALM_SAMPLES`] calm
//! samples in a row, the interval doubles, up to `calm`. CPU pressure wins over both: while
//! `interval-backoff` has backed the interval off, the engine leaves it alone (that
//! strategy's verdict sets it); once CPU is calm again without adaptive sampling, the interval
//! halves back towards its base.

use std::time::Duration;

use perfpilot_strategies::duration::doubled_up_to;

/// Calm samples in a row before the interval doubles.
pub const CALM_SAMPLES: u32 = 3;

/// The adaptive sampling settings and the calm streak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptiveSampling {
    min: Duration,
    calm: Duration,
    calm_streak: u32,
}

impl AdaptiveSampling {
    /// Sampling between `min` (under attention) and `calm` (at rest; at least `min`).
    pub fn new(min: Duration, calm: Duration) -> Self {
        AdaptiveSampling {
            min,
            calm: calm.max(min),
            calm_streak: 0,
        }
    }

    /// The fastest interval.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The interval at rest.
    pub fn calm(&self) -> Duration {
        self.calm
    }

    /// The interval after a sample, given the one in force and whether any trigger needs
    /// attention.
    pub fn next(&mut self, current: Duration, attention: bool) -> Duration {
        if attention {
            self.calm_streak = 0;
            return self.min;
        }
        self.calm_streak += 1;
        if self.calm_streak < CALM_SAMPLES {
            return current.clamp(self.min, self.calm);
        }
        self.calm_streak = 0;
        doubled_up_to(current, 1, self.calm).max(self.min)
    }
}

/// What happens to the sampling interval after a sample (see [`next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Left as it is: CPU pressure (interval-backoff's verdicts set it), or nothing to do.
    Keep,
    /// Adaptive sampling at its fastest: a signal needs attention.
    Faster(Duration),
    /// Adaptive sampling picked this interval (calm, or unchanged).
    Adapted(Duration),
    /// CPU is calm again without adaptive sampling: halved back towards the base.
    Relaxed(Duration),
}

/// The next sampling interval after a sample, from the interval in force (`current`), the
/// configured one (`base`), whether the agent's own CPU is calm (no `interval-backoff`
/// trigger above `Ok`) and whether any trigger needs attention.
///
/// CPU pressure wins: while it lasts the interval is `interval-backoff`'s. Otherwise adaptive
/// sampling (if on) picks it, or else an interval above the base halves back towards it.
pub fn next(
    sampling: Option<&mut AdaptiveSampling>,
    current: Duration,
    base: Duration,
    cpu_calm: bool,
    attention: bool,
) -> Step {
    if !cpu_calm {
        return Step::Keep;
    }
    match sampling {
        Some(sampling) => {
            let next = sampling.next(current, attention);
            if next < current && next == sampling.min() {
                Step::Faster(next)
            } else {
                Step::Adapted(next)
            }
        }
        None if current > base => Step::Relaxed((current / 2).max(base)),
        None => Step::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn attention_is_fast_at_once_and_calm_relaxes_step_by_step() {
        let mut sampling = AdaptiveSampling::new(200 * MS, 2000 * MS);
        let mut interval = 1000 * MS;
        let mut trace = Vec::new();
        for attention in [
            true, false, false, false, false, false, false, false, false, false,
        ] {
            interval = sampling.next(interval, attention);
            trace.push(interval.as_millis());
        }
        assert_eq!(trace, [200, 200, 200, 400, 400, 400, 800, 800, 800, 1600]);
        for _ in 0..6 {
            interval = sampling.next(interval, false);
        }
        assert_eq!(interval, 2000 * MS, "never slower than calm");
        assert_eq!(sampling.next(interval, true), 200 * MS);
    }

    #[test]
    fn cpu_pressure_keeps_the_interval_and_calm_relaxes_it_towards_the_base() {
        let mut sampling = AdaptiveSampling::new(200 * MS, 2000 * MS);
        assert_eq!(
            next(Some(&mut sampling), 4000 * MS, 1000 * MS, false, true),
            Step::Keep,
            "under CPU pressure interval-backoff decides"
        );
        assert_eq!(
            next(Some(&mut sampling), 1000 * MS, 1000 * MS, true, true),
            Step::Faster(200 * MS)
        );
        assert_eq!(
            next(None, 4000 * MS, 1000 * MS, true, false),
            Step::Relaxed(2000 * MS)
        );
        assert_eq!(
            next(None, 1500 * MS, 1000 * MS, true, false),
            Step::Relaxed(1000 * MS),
            "not below the base"
        );
        assert_eq!(next(None, 1000 * MS, 1000 * MS, true, true), Step::Keep);
    }
}
