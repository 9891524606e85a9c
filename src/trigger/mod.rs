//! The trigger engine: pure decisions, no I/O. A [`TriggerState`] is fed one signal value per
//! sample and a clock reading, and says the signal's [`Level`] and whether to fire.
//!
//! Rules (SPEC §3):
//! - the trigger *latches* once the signal has been above `above` for `for` consecutive
//!   samples, and un-latches only when it falls below `clear_below` (hysteresis);
//! - while latched it fires, at most once per cooldown (counted from the last automatic run);
//! - rising from WARNING to CRITICAL fires at once, cooldown or not, so the harder action is
//!   not delayed;
//! - an absent signal never fires, resets the `for` count and forgets the trend.
//!
//! Self-tuning on top (issue "Self-tuning"):
//! - **adaptive cooldown**: the cooldown in force starts at the configured one; every run that
//!   did not relieve the signal doubles it (up to a cap), a run that helped restores it, and
//!   a manual run or a rise to CRITICAL resets it ([`TriggerState::note_effect`]);
//! - **prediction**: a Theil–Sen fit over the last `predict.window` samples ([`trend`])
//!   says when the signal reaches `predict.at`; within `predict.horizon` the trigger fires
//!   before the threshold is crossed ([`Evaluation::predictive`]). Every trigger keeps the
//!   fit, so [`Evaluation::forecast`] is there for all of them; only those with `predict`
//!   fire on it. After a run the fit starts afresh: the action broke the trend;
//! - **baseline**: with `baseline`, the threshold is learned from calm samples
//!   ([`baseline`]) and `above` is its floor; `clear_below` keeps its ratio to it.
//!
//! The parts of the decision, one module each: [`trend`] (the Theil–Sen fit), [`baseline`]
//! (the learned threshold), [`backoff`] (pausing a failing strategy) and [`cadence`] (the
//! sampling interval after each sample).

pub mod backoff;
pub mod baseline;
pub mod cadence;
pub mod trend;

use std::time::{Duration, Instant};

use perfpilot_strategies::duration::doubled_up_to;
use perfpilot_strategies::{Level, PredictSpec, TriggerSpec};

use self::baseline::Baseline;
use self::trend::Window;

/// When the signal is predicted to reach the value its trigger's prediction is about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// The value predicted to be reached (`predict.at`, else `critical`, else `above`).
    pub at: f64,
    /// Seconds from this sample until the fitted trend reaches `at` (0: there already).
    pub seconds: f64,
    /// The fitted trend, per second.
    pub slope_per_second: f64,
}

/// What one evaluation decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The value compared (smoothed, where smoothing is on), or `None` if absent.
    pub value: Option<f64>,
    /// The level after this sample.
    pub level: Level,
    /// Whether the strategy should run now.
    pub fire: bool,
    /// The strategy fires because of the forecast, not a crossed threshold.
    pub predictive: bool,
    /// When the rising trend reaches its target, if it is rising towards it.
    pub forecast: Option<Forecast>,
    /// The threshold in force (`above`, or the learned one); `None` while a baseline warms up.
    pub threshold: Option<f64>,
    /// The signal needs watching closely: latched, in the hysteresis band just below the
    /// threshold, or forecast to reach it within twice the horizon. Adaptive sampling speeds
    /// up while any trigger says so.
    pub attention: bool,
}

/// How the cooldown in force changed after a run's effect was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownChange {
    /// Runs did not relieve the signal: the cooldown grew to this.
    Lengthened(Duration),
    /// A run helped (or a reset): the cooldown is back at its configured value.
    Restored(Duration),
}

/// One strategy's trigger and what it remembers between samples.
#[derive(Debug, Clone)]
pub struct TriggerState {
    spec: TriggerSpec,
    clear_ratio: f64,
    consecutive_above: u32,
    latched: bool,
    level: Level,
    smoothed: Option<f64>,
    last_run: Option<Instant>,
    cooldown: Duration,
    unhelpful_runs: u32,
    window: Window,
    origin: Option<Instant>,
    baseline: Option<Baseline>,
    forecast: Option<Forecast>,
    threshold: Option<f64>,
}

impl TriggerState {
    /// A trigger in its calm state.
    pub fn new(spec: TriggerSpec) -> Self {
        let window = spec
            .predict
            .as_ref()
            .map_or(PredictSpec::DEFAULT_WINDOW, |p| p.window);
        TriggerState {
            clear_ratio: if spec.above > 0.0 {
                spec.effective_clear_below() / spec.above
            } else {
                TriggerSpec::DEFAULT_CLEAR_RATIO
            },
            consecutive_above: 0,
            latched: false,
            level: Level::Ok,
            smoothed: None,
            last_run: None,
            cooldown: spec.cooldown,
            unhelpful_runs: 0,
            window: Window::new(window as usize),
            origin: None,
            baseline: spec.baseline.clone().map(Baseline::new),
            forecast: None,
            threshold: Some(spec.above).filter(|_| spec.baseline.is_none()),
            spec,
        }
    }

    /// Takes new settings on a configuration reload, keeping what was learned where it still
    /// means something: with the same signal, the smoothed value, the trend window, the latch
    /// and the learned baseline (the mean and deviation so far, under the new `k`, `alpha`
    /// and `warmup`) stay; the time of the last run, the unhelpful-run count and a lengthened
    /// cooldown stay in every case (a lengthened cooldown is never shorter than the new
    /// configured one). A different signal starts its readings afresh.
    pub fn reconfigure(&mut self, spec: TriggerSpec) {
        if spec == self.spec {
            return;
        }
        let mut fresh = TriggerState::new(spec);
        fresh.last_run = self.last_run;
        fresh.unhelpful_runs = self.unhelpful_runs;
        if self.unhelpful_runs > 0 {
            fresh.cooldown = self.cooldown.max(fresh.spec.cooldown);
        }
        if fresh.spec.signal == self.spec.signal {
            fresh.consecutive_above = self.consecutive_above;
            fresh.latched = self.latched;
            fresh.level = self.level;
            fresh.smoothed = self.smoothed;
            fresh.origin = self.origin;
            fresh.window.keep_latest(&self.window);
            if let (Some(learned), Some(baseline)) = (&self.baseline, &mut fresh.baseline) {
                baseline.carry_over(learned);
            }
            fresh.threshold = match &fresh.baseline {
                Some(baseline) => baseline.threshold(fresh.spec.above),
                None => Some(fresh.spec.above),
            };
        }
        *self = fresh;
    }

    /// The settings.
    pub fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    /// The level after the last evaluation.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The learned baseline (mean, variance, samples), with `baseline`.
    pub fn learned_baseline(&self) -> Option<(f64, f64, u32)> {
        self.baseline.as_ref().map(Baseline::learned)
    }

    /// Takes what was learned before a restart: the adaptive cooldown (never below the
    /// configured one) and the last run it counts from, the unhelpful runs that lengthened
    /// it, and the baseline.
    pub fn restore_learned(
        &mut self,
        cooldown: Duration,
        last_run: Option<Instant>,
        unhelpful_runs: u32,
        baseline: Option<(f64, f64, u32)>,
    ) {
        self.cooldown = cooldown.max(self.spec.cooldown);
        self.last_run = last_run.or(self.last_run);
        self.unhelpful_runs = unhelpful_runs;
        if let (Some(ours), Some((mean, variance, samples))) = (&mut self.baseline, baseline) {
            ours.restore(mean, variance, samples);
            self.threshold = ours.threshold(self.spec.above);
        }
    }

    /// The cooldown in force: the configured one, lengthened while runs do not help.
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// Runs in a row that did not relieve the signal.
    pub fn unhelpful_runs(&self) -> u32 {
        self.unhelpful_runs
    }

    /// The forecast of the last evaluation.
    pub fn forecast(&self) -> Option<Forecast> {
        self.forecast
    }

    /// The threshold the next sample is compared with (`None` while a baseline warms up).
    pub fn threshold(&self) -> Option<f64> {
        self.threshold
    }

    /// Feeds one sample of the watched signal at time `now`.
    pub fn evaluate(&mut self, raw: Option<f64>, now: Instant) -> Evaluation {
        let Some(raw) = raw.filter(|v| v.is_finite()) else {
            self.consecutive_above = 0;
            self.window.clear();
            self.forecast = None;
            return Evaluation {
                value: None,
                level: self.level,
                fire: false,
                predictive: false,
                forecast: None,
                threshold: self.threshold,
                attention: self.latched,
            };
        };
        let value = match (self.spec.smoothing, self.smoothed) {
            (Some(alpha), Some(previous)) => alpha * raw + (1.0 - alpha) * previous,
            _ => raw,
        };
        self.smoothed = Some(value);

        // The threshold in force: learned from earlier calm samples, else `above`. While a
        // baseline warms up, only `critical` fires.
        let threshold = match &self.baseline {
            Some(baseline) => baseline.threshold(self.spec.above),
            None => Some(self.spec.above),
        };
        let above = threshold.or(self.spec.critical).unwrap_or(f64::INFINITY);
        let clear_below = above * self.clear_ratio;

        if value > above {
            self.consecutive_above = self.consecutive_above.saturating_add(1);
        } else {
            self.consecutive_above = 0;
        }
        if !self.latched && self.consecutive_above >= self.spec.for_samples {
            self.latched = true;
        } else if self.latched && value < clear_below {
            self.latched = false;
        }

        let previous_level = self.level;
        self.level = match (self.latched, self.spec.critical) {
            (false, _) => Level::Ok,
            (true, Some(critical)) if value >= critical => Level::Critical,
            (true, _) => Level::Warning,
        };
        // Only calm samples are learned, so an incident is not learned as normal: not while
        // latched, and not a sample above the threshold while the `for` count runs either.
        let calm = !self.latched && value <= above;
        if let Some(baseline) = self.baseline.as_mut().filter(|_| calm) {
            baseline.learn(value);
            self.threshold = baseline.threshold(self.spec.above);
        }
        let escalated = self.level == Level::Critical && previous_level < Level::Critical;
        if escalated {
            // Harder pressure: whatever the past runs achieved, try at the normal cadence.
            self.restore_cooldown();
        }

        let origin = *self.origin.get_or_insert(now);
        let t = now.saturating_duration_since(origin).as_secs_f64();
        self.window.push(t, value);
        // With a learned threshold, the prediction is about the threshold in force.
        let at = match &self.baseline {
            Some(_) => self
                .spec
                .predict
                .as_ref()
                .and_then(|p| p.at)
                .or(self.spec.critical)
                .unwrap_or(above),
            None => self.spec.predict_at(),
        };
        self.forecast = self
            .window
            .fit()
            .filter(|_| at.is_finite())
            .and_then(|fit| {
                fit.seconds_to_reach(at, t).map(|seconds| Forecast {
                    at,
                    seconds,
                    slope_per_second: fit.slope,
                })
            });
        let horizon = self
            .spec
            .predict
            .as_ref()
            .map_or(PredictSpec::DEFAULT_HORIZON, |p| p.horizon)
            .as_secs_f64();
        let forecast_within = |limit: f64| self.forecast.is_some_and(|f| f.seconds <= limit);
        let predicted = self.spec.predict.is_some() && forecast_within(horizon);

        let cooled_down = self
            .last_run
            .is_none_or(|last| now.saturating_duration_since(last) >= self.cooldown);
        let by_threshold = self.latched && (cooled_down || escalated);
        let predictive = !self.latched && predicted && cooled_down;
        Evaluation {
            value: Some(value),
            level: self.level,
            fire: by_threshold || predictive,
            predictive,
            forecast: self.forecast,
            threshold,
            attention: self.latched || value >= clear_below || forecast_within(2.0 * horizon),
        }
    }

    /// Notes that the strategy ran automatically at `now`; the cooldown counts from here, and
    /// the trend is fitted afresh from the next sample (the run broke it).
    pub fn mark_run(&mut self, now: Instant) {
        self.last_run = Some(now);
        self.window.clear();
        self.forecast = None;
    }

    /// A manual run: the operator's judgement replaces the learned cooldown, and the trend
    /// starts afresh.
    pub fn note_manual_run(&mut self) -> Option<CooldownChange> {
        self.window.clear();
        self.forecast = None;
        self.restore_cooldown()
    }

    /// Judges a finished run: `Some(true)` it relieved the signal, `Some(false)` it did not,
    /// `None` unknown (the signal was not read). Unhelpful runs double the cooldown from the
    /// configured one (at least 1 s) up to `max`; a helpful one restores it.
    pub fn note_effect(&mut self, helped: Option<bool>, max: Duration) -> Option<CooldownChange> {
        match helped? {
            true => self.restore_cooldown(),
            false => {
                self.unhelpful_runs = self.unhelpful_runs.saturating_add(1);
                let base = self.spec.cooldown.max(Duration::from_secs(1));
                let lengthened =
                    doubled_up_to(base, self.unhelpful_runs, max.max(self.spec.cooldown));
                let changed = lengthened != self.cooldown;
                self.cooldown = lengthened;
                changed.then_some(CooldownChange::Lengthened(lengthened))
            }
        }
    }

    fn restore_cooldown(&mut self) -> Option<CooldownChange> {
        let changed = self.cooldown != self.spec.cooldown;
        self.unhelpful_runs = 0;
        self.cooldown = self.spec.cooldown;
        changed.then_some(CooldownChange::Restored(self.cooldown))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use perfpilot_strategies::{PredictSpec, Signal};

    use super::*;

    /// A clock the test moves by hand.
    struct Clock(Instant);

    impl Clock {
        fn advance(&mut self, by: Duration) -> Instant {
            self.0 += by;
            self.0
        }
    }

    fn spec(above: f64) -> TriggerSpec {
        TriggerSpec::new(Signal::MemoryUsage, above).cooldown(Duration::from_secs(30))
    }

    /// Feeds values one second apart and returns which samples fired.
    fn fires(state: &mut TriggerState, clock: &mut Clock, values: &[f64]) -> Vec<bool> {
        values
            .iter()
            .map(|&v| {
                let now = clock.advance(Duration::from_secs(1));
                let eval = state.evaluate(Some(v), now);
                if eval.fire {
                    state.mark_run(now);
                }
                eval.fire
            })
            .collect()
    }

    #[test]
    fn fires_above_threshold_and_not_below() {
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec(0.8));
        assert_eq!(
            fires(&mut state, &mut clock, &[0.5, 0.79, 0.81]),
            [false, false, true]
        );
    }

    #[test]
    fn hysteresis_keeps_level_until_clear_below() {
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec(0.8)); // clears below 0.72
        let now = clock.advance(Duration::from_secs(1));
        assert_eq!(state.evaluate(Some(0.85), now).level, Level::Warning);
        // Dipping under `above` but not under `clear_below` keeps it latched...
        let now = clock.advance(Duration::from_secs(1));
        assert_eq!(state.evaluate(Some(0.75), now).level, Level::Warning);
        // ...and falling below `clear_below` re-arms it.
        let now = clock.advance(Duration::from_secs(1));
        assert_eq!(state.evaluate(Some(0.70), now).level, Level::Ok);
    }

    #[test]
    fn oscillating_around_threshold_fires_once_per_cooldown() {
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec(0.8));
        let values: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 0.81 } else { 0.79 })
            .collect();
        let fired = fires(&mut state, &mut clock, &values);
        assert_eq!(fired.iter().filter(|f| **f).count(), 1, "{fired:?}");
    }

    #[test]
    fn for_requires_consecutive_samples() {
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec(0.8).for_samples(3));
        assert_eq!(
            fires(&mut state, &mut clock, &[0.9, 0.9, 0.5, 0.9, 0.9, 0.9]),
            [false, false, false, false, false, true]
        );
    }

    #[test]
    fn cooldown_spaces_runs_while_pressure_persists() {
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec(0.8).cooldown(Duration::from_secs(10)));
        let fired = fires(&mut state, &mut clock, &[0.9; 25]);
        let at: Vec<usize> = fired
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at, [0, 10, 20]);
    }

    #[test]
    fn levels_rise_to_critical_and_escalation_skips_cooldown() {
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec(0.8).critical(0.9));
        let now = clock.advance(Duration::from_secs(1));
        let eval = state.evaluate(Some(0.85), now);
        assert_eq!((eval.level, eval.fire), (Level::Warning, true));
        state.mark_run(now);
        let now = clock.advance(Duration::from_secs(1));
        let eval = state.evaluate(Some(0.95), now);
        assert_eq!((eval.level, eval.fire), (Level::Critical, true));
        state.mark_run(now);
        // Staying CRITICAL inside the cooldown does not fire again.
        let now = clock.advance(Duration::from_secs(1));
        let eval = state.evaluate(Some(0.97), now);
        assert_eq!((eval.level, eval.fire), (Level::Critical, false));
    }

    #[test]
    fn absent_signal_never_fires_and_resets_for_count() {
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec(0.8).for_samples(2));
        let now = clock.advance(Duration::from_secs(1));
        assert!(!state.evaluate(Some(0.9), now).fire);
        let now = clock.advance(Duration::from_secs(1));
        let eval = state.evaluate(None, now);
        assert_eq!((eval.value, eval.fire), (None, false));
        let now = clock.advance(Duration::from_secs(1));
        assert!(
            !state.evaluate(Some(0.9), now).fire,
            "the `for` count restarted"
        );
        let now = clock.advance(Duration::from_secs(1));
        assert!(state.evaluate(Some(0.9), now).fire);
    }

    #[test]
    fn smoothing_damps_a_single_spike() {
        let mut clock = Clock(Instant::now());
        let mut spec = spec(0.8);
        spec.smoothing = Some(0.05);
        let mut state = TriggerState::new(spec);
        let fired = fires(&mut state, &mut clock, &[0.5, 0.5, 1.0, 0.5]);
        assert_eq!(fired, [false; 4]);
    }

    #[test]
    fn a_steady_climb_fires_predictively_before_the_threshold() {
        let mut clock = Clock(Instant::now());
        // Memory rises 0.01 per second from 0.5; the trigger is at 0.9 and predicts 0.95.
        let spec = spec(0.9).predict(PredictSpec {
            horizon: Duration::from_secs(30),
            at: Some(0.95),
            window: 5,
        });
        let mut state = TriggerState::new(spec);
        let mut fired_at = None;
        for i in 0..60 {
            let value = 0.5 + 0.01 * f64::from(i);
            let now = clock.advance(Duration::from_secs(1));
            let eval = state.evaluate(Some(value), now);
            if eval.fire {
                fired_at = Some((value, eval));
                break;
            }
        }
        let (value, eval) = fired_at.expect("never fired");
        assert!(eval.predictive, "{eval:?}");
        assert_eq!(eval.level, Level::Ok, "below the threshold");
        let forecast = eval.forecast.unwrap();
        assert!((forecast.slope_per_second - 0.01).abs() < 1e-9);
        assert!(
            forecast.seconds <= 30.0 && forecast.seconds > 29.9,
            "{forecast:?}"
        );
        assert!(
            (value - 0.65).abs() < 1e-9,
            "fired at {value}: 0.95 is 30 s away"
        );
        assert!(eval.attention);
    }

    #[test]
    fn a_flat_or_noisy_signal_never_fires_predictively() {
        let mut clock = Clock(Instant::now());
        let spec = spec(0.9).predict(PredictSpec::new(Duration::from_secs(30)));
        let mut state = TriggerState::new(spec);
        for i in 0..200 {
            let value = if i % 7 == 0 {
                0.85
            } else {
                0.6 + 0.02 * f64::from(i % 3)
            };
            let now = clock.advance(Duration::from_secs(1));
            let eval = state.evaluate(Some(value), now);
            assert!(!eval.fire, "fired at sample {i}: {eval:?}");
        }
    }

    #[test]
    fn unhelpful_runs_double_the_cooldown_and_help_or_critical_restores_it() {
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(300);
        let mut state = TriggerState::new(spec(0.8).critical(0.9).cooldown(base));
        let lengthened: Vec<u64> = (0..6)
            .map(|_| {
                state.note_effect(Some(false), cap);
                state.cooldown().as_secs()
            })
            .collect();
        assert_eq!(lengthened, [20, 40, 80, 160, 300, 300]);
        assert_eq!(state.note_effect(None, cap), None, "unknown: no change");
        assert_eq!(
            state.note_effect(Some(true), cap),
            Some(CooldownChange::Restored(base))
        );
        assert_eq!(state.unhelpful_runs(), 0);

        state.note_effect(Some(false), cap);
        let mut clock = Clock(Instant::now());
        let now = clock.advance(Duration::from_secs(1));
        assert_eq!(state.evaluate(Some(0.85), now).level, Level::Warning);
        assert_eq!(state.cooldown(), 2 * base);
        let now = clock.advance(Duration::from_secs(1));
        assert_eq!(state.evaluate(Some(0.95), now).level, Level::Critical);
        assert_eq!(
            state.cooldown(),
            base,
            "a rise to CRITICAL resets the back-off"
        );

        state.note_effect(Some(false), cap);
        assert_eq!(
            state.note_manual_run(),
            Some(CooldownChange::Restored(base))
        );
    }

    #[test]
    fn the_lengthened_cooldown_spaces_automatic_runs() {
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec(0.8).cooldown(Duration::from_secs(5)));
        let mut fired = Vec::new();
        for second in 0..60 {
            let now = clock.advance(Duration::from_secs(1));
            if state.evaluate(Some(0.9), now).fire {
                state.mark_run(now);
                state.note_effect(Some(false), Duration::from_secs(3600));
                fired.push(second);
            }
        }
        // Each run doubles the cooldown (10, 20, 40 s): runs at 0, 10, 30 (and 70, past the
        // end), where a fixed 5 s cooldown would have run 12 times.
        assert_eq!(fired, [0, 10, 30]);
    }

    #[test]
    fn a_baseline_learns_the_threshold_and_fires_on_a_spike() {
        let mut clock = Clock(Instant::now());
        let spec = TriggerSpec::new(Signal::LatencyP99Ms, 20.0)
            .cooldown(Duration::from_secs(30))
            .baseline(perfpilot_strategies::BaselineSpec {
                k: 3.0,
                alpha: 0.1,
                warmup: 20,
            });
        let mut state = TriggerState::new(spec);
        for i in 0..100 {
            let p99 = if i % 2 == 0 { 90.0 } else { 110.0 };
            let now = clock.advance(Duration::from_secs(1));
            let eval = state.evaluate(Some(p99), now);
            assert!(
                !eval.fire,
                "a p99 of 90–110 ms is this service's normal: {eval:?}"
            );
            if i < 19 {
                assert_eq!(eval.threshold, None, "warming up");
            }
        }
        let threshold = state.threshold().unwrap();
        assert!(
            (threshold - 130.0).abs() < 5.0,
            "mean 100 + 3 × 10: {threshold}"
        );
        let now = clock.advance(Duration::from_secs(1));
        let eval = state.evaluate(Some(400.0), now);
        assert!(eval.fire && !eval.predictive, "{eval:?}");
        // The spike is not learned: the threshold stays put while latched.
        let now = clock.advance(Duration::from_secs(1));
        state.evaluate(Some(400.0), now);
        assert_eq!(state.threshold(), Some(threshold));
    }

    #[test]
    fn the_baseline_does_not_learn_samples_above_it_while_the_for_count_runs() {
        let mut clock = Clock(Instant::now());
        let spec = TriggerSpec::new(Signal::LatencyP99Ms, 20.0)
            .cooldown(Duration::from_secs(30))
            .for_samples(3)
            .baseline(perfpilot_strategies::BaselineSpec {
                k: 3.0,
                alpha: 0.1,
                warmup: 20,
            });
        let mut state = TriggerState::new(spec);
        for i in 0..100 {
            let p99 = if i % 2 == 0 { 90.0 } else { 110.0 };
            let now = clock.advance(Duration::from_secs(1));
            state.evaluate(Some(p99), now);
        }
        let threshold = state.threshold().unwrap();
        // Two samples far above the threshold, fewer than `for = 3`: not latched, not calm.
        for _ in 0..2 {
            let now = clock.advance(Duration::from_secs(1));
            let eval = state.evaluate(Some(1000.0), now);
            assert!(!eval.fire, "{eval:?}");
            assert_eq!(eval.level, Level::Ok);
            assert_eq!(
                state.threshold(),
                Some(threshold),
                "an above-threshold sample was learned while the `for` count ran"
            );
        }
    }

    mod properties {
        //! Properties of the trigger over random settings and signals (proptest).

        use proptest::prelude::*;

        use super::*;

        /// Random trigger settings; `critical` and `smoothing` present or not.
        fn any_spec() -> impl Strategy<Value = TriggerSpec> {
            (
                0.1f64..0.9,
                0.5f64..=1.0,
                proptest::option::of(0.01f64..0.3),
                1u32..=3,
                1u64..=60_000,
                proptest::option::of(0.05f64..=1.0),
            )
                .prop_map(
                    |(above, clear_ratio, critical_gap, for_samples, cooldown_ms, smoothing)| {
                        let mut spec = TriggerSpec::new(Signal::MemoryUsage, above)
                            .for_samples(for_samples)
                            .cooldown(Duration::from_millis(cooldown_ms));
                        spec.clear_below = Some(above * clear_ratio);
                        spec.critical = critical_gap.map(|gap| above + gap);
                        spec.smoothing = smoothing;
                        spec
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Two automatic firings are at least `cooldown` apart, except the documented
            /// escalation: a sample that raises the level to CRITICAL from below fires at
            /// once.
            #[test]
            fn never_fires_inside_its_cooldown_except_on_escalation_to_critical(
                spec in any_spec(),
                steps in proptest::collection::vec(
                    (proptest::option::of(0.0f64..1.5), 1u64..20_000),
                    1..300,
                ),
            ) {
                let mut state = TriggerState::new(spec.clone());
                let mut now = Instant::now();
                let mut last_fire: Option<Instant> = None;
                for (value, dt_ms) in steps {
                    now += Duration::from_millis(dt_ms);
                    let previous = state.level();
                    let eval = state.evaluate(value, now);
                    if eval.fire {
                        let escalated = eval.level == Level::Critical && previous < Level::Critical;
                        if let Some(last) = last_fire {
                            prop_assert!(
                                now - last >= spec.cooldown || escalated,
                                "fired {:?} after the last firing, cooldown {:?}, level {:?} from {:?}",
                                now - last, spec.cooldown, eval.level, previous
                            );
                        }
                        state.mark_run(now);
                        last_fire = Some(now);
                    }
                }
            }

            /// After a firing, a signal that stays in the hysteresis band (at or above
            /// `clear_below`, not above `above`) neither fires again within the cooldown nor
            /// lets the level fall back to OK.
            #[test]
            fn never_flaps_across_the_hysteresis_band(
                spec in any_spec(),
                band in proptest::collection::vec((0.0f64..=1.0, 1u64..5_000), 1..200),
            ) {
                let mut state = TriggerState::new(spec.clone());
                let mut now = Instant::now();
                let clear_below = spec.effective_clear_below();
                // Pressure until it fires (bounded: smoothing converges well within this).
                let mut fired = false;
                for _ in 0..2_000 {
                    now += Duration::from_millis(1);
                    if state.evaluate(Some(spec.above * 1.5), now).fire {
                        fired = true;
                        break;
                    }
                }
                prop_assert!(fired, "never fired under pressure");
                state.mark_run(now);
                let fired_at = now;
                for (position, dt_ms) in band {
                    now += Duration::from_millis(dt_ms);
                    // Strictly inside [clear_below, above], a hair above clear_below so
                    // smoothing's rounding cannot take the compared value under it.
                    let low = clear_below + 1e-9;
                    let value = low + position * (spec.above - low).max(0.0);
                    let eval = state.evaluate(Some(value), now);
                    prop_assert_ne!(eval.level, Level::Ok, "returned to OK at {} (clear_below {})", value, clear_below);
                    if now - fired_at < spec.cooldown {
                        // No escalation either: the band is below `above`, so below
                        // `critical`, and a smoothed value only decays towards it.
                        prop_assert!(!eval.fire, "fired again inside the cooldown at {}", value);
                    }
                }
            }
        }
    }

    /// The signal added through the signal table: named in config, read from the snapshot,
    /// and firing like any other.
    #[test]
    fn major_faults_per_second_fires_above_its_threshold() {
        let spec: TriggerSpec = serde_json::from_str(
            r#"{"signal": "major_faults_per_second", "above": 100, "cooldown": "0s"}"#,
        )
        .unwrap();
        assert_eq!(spec.signal, Signal::MajorFaultsPerSecond);
        assert!(
            spec.problems("t", Duration::from_secs(1)).is_empty(),
            "{:?}",
            spec.problems("t", Duration::from_secs(1))
        );
        let mut clock = Clock(Instant::now());
        let mut state = TriggerState::new(spec);
        let fired: Vec<bool> = [Some(20.0), None, Some(99.0), Some(150.0)]
            .into_iter()
            .map(|faults| {
                let mut snapshot =
                    perfpilot_strategies::Snapshot::empty(std::time::SystemTime::now());
                snapshot.major_faults_per_second = faults;
                let now = clock.advance(Duration::from_secs(1));
                state
                    .evaluate(snapshot.signal(Signal::MajorFaultsPerSecond), now)
                    .fire
            })
            .collect();
        assert_eq!(fired, [false, false, false, true]);
    }
}
