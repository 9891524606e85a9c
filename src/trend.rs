//! Where a signal is heading: a robust linear fit over its recent samples, and when it will
//! reach a value. Pure arithmetic, no I/O.
//!
//! The fit is Theil–Sen: the slope is the median of the slopes between every pair of samples,
//! the intercept the median of `value − slope × time`. One wild sample moves neither median,
//! so a single spike neither fires a prediction nor hides a steady climb (an ordinary least
//! squares fit would do both).

use std::collections::VecDeque;

/// A fitted line: `value(t) = intercept + slope × t`, with `t` in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Change per second.
    pub slope: f64,
    /// Value at `t = 0`.
    pub intercept: f64,
}

impl Fit {
    /// The fitted value at `t` seconds.
    pub fn value_at(&self, t: f64) -> f64 {
        self.intercept + self.slope * t
    }

    /// Seconds after `now` until the line reaches `target`: zero if it is there already,
    /// `None` if it is below and not rising.
    pub fn seconds_to_reach(&self, target: f64, now: f64) -> Option<f64> {
        let value = self.value_at(now);
        if value >= target {
            Some(0.0)
        } else if self.slope > 0.0 {
            Some((target - value) / self.slope)
        } else {
            None
        }
    }
}

/// The Theil–Sen fit of `(t, value)` points; `None` with fewer than two distinct times.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<Fit> {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, &(t1, v1)) in points.iter().enumerate() {
        for &(t2, v2) in &points[i + 1..] {
            if t2 != t1 {
                slopes.push((v2 - v1) / (t2 - t1));
            }
        }
    }
    let slope = median(&mut slopes)?;
    let mut intercepts: Vec<f64> = points.iter().map(|&(t, v)| v - slope * t).collect();
    let intercept = median(&mut intercepts)?;
    Some(Fit { slope, intercept })
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

/// The last `capacity` samples of one signal, for fitting.
#[derive(Debug, Clone)]
pub struct Window {
    capacity: usize,
    points: VecDeque<(f64, f64)>,
}

impl Window {
    /// Keeps the last `capacity` samples (at least two).
    pub fn new(capacity: usize) -> Self {
        Window {
            capacity: capacity.max(2),
            points: VecDeque::with_capacity(capacity.max(2)),
        }
    }

    /// Adds a sample taken at `t` seconds, dropping the oldest beyond capacity.
    pub fn push(&mut self, t: f64, value: f64) {
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back((t, value));
    }

    /// Takes the latest samples of `other`, as many as this window holds (after a reload
    /// that changed the window's size).
    pub fn keep_latest(&mut self, other: &Window) {
        let skip = other.points.len().saturating_sub(self.capacity);
        self.points = other.points.iter().skip(skip).copied().collect();
    }

    /// Forgets every sample (after the signal went absent: the trend is unknown).
    pub fn clear(&mut self) {
        self.points.clear();
    }

    /// Whether the window holds `capacity` samples.
    pub fn is_full(&self) -> bool {
        self.points.len() == self.capacity
    }

    /// Samples a fit needs: half the window, at least 3. Waiting for a full window after
    /// every run would leave a fast leak unwatched for a whole window.
    pub fn min_samples(&self) -> usize {
        self.capacity.div_ceil(2).max(3).min(self.capacity)
    }

    /// The fit over the samples held, once there are [`Window::min_samples`] of them.
    pub fn fit(&mut self) -> Option<Fit> {
        if self.points.len() < self.min_samples() {
            return None;
        }
        theil_sen(self.points.make_contiguous())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_straight_line_is_fitted_exactly() {
        let points: Vec<_> = (0..10).map(|i| (i as f64, 0.5 + 0.01 * i as f64)).collect();
        let fit = theil_sen(&points).unwrap();
        assert!((fit.slope - 0.01).abs() < 1e-12);
        assert!((fit.intercept - 0.5).abs() < 1e-12);
        // At t = 9 the line is at 0.59: 0.95 is 36 s away.
        assert!((fit.seconds_to_reach(0.95, 9.0).unwrap() - 36.0).abs() < 1e-9);
    }

    #[test]
    fn one_spike_does_not_move_the_fit() {
        let mut points: Vec<_> = (0..10).map(|i| (i as f64, 0.5)).collect();
        points[9].1 = 0.99; // a single wild sample at the end
        let fit = theil_sen(&points).unwrap();
        assert_eq!(fit.slope, 0.0);
        assert_eq!(fit.seconds_to_reach(0.95, 9.0), None, "flat: never reached");
    }

    #[test]
    fn falling_or_reached_signals() {
        let falling = Fit {
            slope: -0.1,
            intercept: 1.0,
        };
        assert_eq!(falling.seconds_to_reach(2.0, 0.0), None);
        assert_eq!(falling.seconds_to_reach(0.5, 0.0), Some(0.0));
        assert_eq!(
            theil_sen(&[(1.0, 1.0), (1.0, 2.0)]),
            None,
            "no distinct times"
        );
        assert_eq!(theil_sen(&[]), None);
    }

    #[test]
    fn the_window_fits_from_half_full_and_keeps_the_newest() {
        let mut window = Window::new(10);
        assert_eq!(window.min_samples(), 5);
        for i in 0..4 {
            window.push(i as f64, i as f64);
        }
        assert_eq!(window.fit(), None, "4 of 10 samples: too few");
        window.push(4.0, 4.0);
        assert_eq!(window.fit().unwrap().slope, 1.0);
        assert_eq!(Window::new(4).min_samples(), 3, "never fewer than 3");
        assert_eq!(Window::new(2).min_samples(), 2, "nor more than the window");

        let mut window = Window::new(4);
        for i in 3..9 {
            window.push(i as f64, 2.0 * i as f64);
        }
        let fit = window.fit().unwrap();
        assert_eq!(fit.slope, 2.0, "only the last 4 samples (slope 2) count");
        window.clear();
        assert!(!window.is_full());
    }

    proptest! {
        /// With fewer than half the samples corrupted, the slope stays that of the line.
        #[test]
        fn robust_to_a_minority_of_outliers(
            slope in -5.0f64..5.0,
            intercept in -100.0f64..100.0,
            outliers in proptest::collection::vec((0usize..21, -1e6f64..1e6), 0..5),
        ) {
            let mut points: Vec<_> =
                (0..21).map(|i| (i as f64, intercept + slope * i as f64)).collect();
            for (index, value) in outliers {
                points[index].1 = value;
            }
            let fit = theil_sen(&points).unwrap();
            prop_assert!((fit.slope - slope).abs() < 1e-6 + slope.abs() * 0.5,
                "slope {} fitted as {}", slope, fit.slope);
        }
    }
}
