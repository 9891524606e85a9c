//! Learned thresholds: an exponentially weighted mean and deviation of a signal, so a user
//! need not guess a latency number. Pure arithmetic, no I/O.
//!
//! The threshold is `mean + k × deviation`, never below the trigger's `above` (the floor).
//! The trigger feeds only calm samples (not while it is latched), so an incident does not
//! teach the baseline that the incident is normal.

use perfpilot_strategies::BaselineSpec;

/// One signal's learned mean and deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    spec: BaselineSpec,
    mean: f64,
    variance: f64,
    samples: u32,
}

impl Baseline {
    /// The learned mean so far.
    #[cfg(test)]
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Nothing learned yet.
    pub fn new(spec: BaselineSpec) -> Self {
        Baseline {
            spec,
            mean: 0.0,
            variance: 0.0,
            samples: 0,
        }
    }

    /// Learns one sample.
    pub fn learn(&mut self, value: f64) {
        if self.samples == 0 {
            self.mean = value;
            self.variance = 0.0;
        } else {
            // West's incremental exponentially weighted mean and variance.
            let alpha = self.spec.alpha;
            let difference = value - self.mean;
            self.mean += alpha * difference;
            self.variance = (1.0 - alpha) * (self.variance + alpha * difference * difference);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// Takes what `learned` has learned (mean, deviation, sample count), keeping this
    /// baseline's settings: after a reload that changed `k`, `alpha` or `warmup`.
    pub fn carry_over(&mut self, learned: &Baseline) {
        self.mean = learned.mean;
        self.variance = learned.variance;
        self.samples = learned.samples;
    }

    /// What it learned: mean, variance and sample count (what [`crate::learned`] keeps).
    pub fn learned(&self) -> (f64, f64, u32) {
        (self.mean, self.variance, self.samples)
    }

    /// Takes what was learned before a restart.
    pub fn restore(&mut self, mean: f64, variance: f64, samples: u32) {
        if mean.is_finite() && variance.is_finite() && variance >= 0.0 {
            self.mean = mean;
            self.variance = variance;
            self.samples = samples;
        }
    }

    /// Whether `warmup` samples have been learned.
    pub fn is_warm(&self) -> bool {
        self.samples >= self.spec.warmup
    }

    /// The learned standard deviation so far.
    pub fn deviation(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }

    /// The learned threshold, at least `floor`; `None` while warming up.
    pub fn threshold(&self, floor: f64) -> Option<f64> {
        self.is_warm()
            .then(|| (self.mean + self.spec.k * self.deviation()).max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(warmup: u32) -> BaselineSpec {
        BaselineSpec {
            k: 3.0,
            alpha: 0.1,
            warmup,
        }
    }

    #[test]
    fn learns_mean_and_deviation_of_a_noisy_signal() {
        let mut baseline = Baseline::new(spec(20));
        // p99 around 40 ms, alternating 35 and 45: mean 40, deviation 5.
        for i in 0..400 {
            assert_eq!(baseline.is_warm(), i >= 20);
            baseline.learn(if i % 2 == 0 { 35.0 } else { 45.0 });
        }
        assert!((baseline.mean() - 40.0).abs() < 0.5, "{}", baseline.mean());
        assert!(
            (baseline.deviation() - 5.0).abs() < 0.5,
            "{}",
            baseline.deviation()
        );
        let threshold = baseline.threshold(10.0).unwrap();
        assert!((threshold - 55.0).abs() < 2.0, "{threshold}");
    }

    #[test]
    fn the_floor_holds_for_a_flat_signal_and_warmup_gives_nothing() {
        let mut baseline = Baseline::new(spec(3));
        baseline.learn(5.0);
        assert_eq!(baseline.threshold(50.0), None);
        baseline.learn(5.0);
        baseline.learn(5.0);
        assert_eq!(
            baseline.threshold(50.0),
            Some(50.0),
            "never below the floor"
        );
        assert_eq!(
            baseline.threshold(1.0),
            Some(5.0),
            "a flat signal: mean + 0"
        );
    }
}
