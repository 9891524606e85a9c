//! The counterfactual verdict: a rung's run is judged against the forecast of the signal
//! without it (the trend before it ran, carried forward), not only against the level before
//! it. A rung that turned a rise into a plateau helped, and its relief is the gap between the
//! forecast and the reading. Pure arithmetic, no I/O.
//!
//! An example: `tests::example_a_plateau_after_a_rise_helped`.

use std::time::Duration;

use crate::history::MIN_RELIEF_SHARE;

/// What a run changed, against what would have happened without it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The signal when the run started.
    pub before: f64,
    /// The signal in the judging reading.
    pub after: f64,
    /// The signal the trend before the run forecast for the judging reading; `before` when
    /// it was not rising (a falling trend is not credited to nobody: the level is the bar).
    pub forecast: f64,
    /// `forecast − after`: how much lower the signal is than it would have been.
    pub relief: f64,
}

impl Verdict {
    /// The verdict for a run that started at `before`, rising at `slope_before` per second
    /// (`None`: unknown, judged by the level alone), read as `after` `elapsed` later.
    pub fn of(before: f64, after: f64, slope_before: Option<f64>, elapsed: Duration) -> Self {
        let rise = slope_before
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(0.0, |s| s * elapsed.as_secs_f64());
        let forecast = before + rise;
        Verdict {
            before,
            after,
            forecast,
            relief: forecast - after,
        }
    }

    /// Whether the relief is at least [`MIN_RELIEF_SHARE`] of the level before (the same bar
    /// as a level-only verdict, measured from the forecast).
    pub fn fell_enough(&self) -> bool {
        self.relief >= (self.before.abs() * MIN_RELIEF_SHARE).max(f64::EPSILON)
    }

    /// The relief as a share of `of` (e.g. the limit), for people: `0.24` is 24 %.
    pub fn relief_share(relief: f64, of: f64) -> f64 {
        if of.abs() > f64::EPSILON {
            relief / of
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    /// The example the module's documentation once showed.
    #[test]
    fn example_a_plateau_after_a_rise_helped() {
        use super::Verdict;
        use std::time::Duration;

        // Rising 0.5 per second at 0.6 when a cap ran; 400 ms later the signal is still 0.6.
        let verdict = Verdict::of(0.6, 0.6, Some(0.5), Duration::from_millis(400));
        assert!(verdict.fell_enough()); // forecast 0.8 without it: relief 0.2
        assert!((verdict.relief - 0.2).abs() < 1e-9);
    }

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_plateau_after_a_steep_rise_helped_by_the_gap_to_the_forecast() {
        let verdict = Verdict::of(0.6, 0.6, Some(0.5), ms(400));
        assert!((verdict.forecast - 0.8).abs() < 1e-9);
        assert!((verdict.relief - 0.2).abs() < 1e-9);
        assert!(verdict.fell_enough());
    }

    #[test]
    fn a_rise_that_went_on_at_the_same_rate_did_not_help() {
        let verdict = Verdict::of(0.6, 0.8, Some(0.5), ms(400));
        assert!(verdict.relief.abs() < 1e-9);
        assert!(!verdict.fell_enough());
    }

    #[test]
    fn without_a_rise_before_the_level_is_the_bar() {
        // Flat or unknown trend: the same verdict as before-versus-after.
        for slope in [None, Some(0.0), Some(-1.0), Some(f64::NAN)] {
            let flat = Verdict::of(0.9, 0.9, slope, ms(400));
            assert!(!flat.fell_enough(), "{slope:?}");
            let fell = Verdict::of(0.9, 0.7, slope, ms(400));
            assert!(fell.fell_enough(), "{slope:?}");
            assert!((fell.relief - 0.2).abs() < 1e-9);
        }
    }

    #[test]
    fn a_slowed_rise_helped_by_what_it_held_back() {
        // Would have gained 0.2, gained 0.05.
        let verdict = Verdict::of(0.6, 0.65, Some(0.5), ms(400));
        assert!((verdict.relief - 0.15).abs() < 1e-9);
        assert!(verdict.fell_enough());
    }

    #[test]
    fn relief_as_a_share() {
        assert!((Verdict::relief_share(0.24, 1.0) - 0.24).abs() < 1e-12);
        assert_eq!(Verdict::relief_share(0.24, 0.0), 0.0);
    }
}
