//! The trigger engine: pure decisions, no I/O. A [`TriggerState`] is fed one signal value per
//! sample and a clock reading, and says the signal's [`Level`] and whether to fire.
//!
//! Rules (SPEC §3):
//! - the trigger *latches* once the signal has been above `above` for `for` consecutive
//!   samples, and un-latches only when it falls below `clear_below` (hysteresis);
//! - while latched it fires, at most once per `cooldown` (counted from the last automatic run);
//! - rising from WARNING to CRITICAL fires at once, cooldown or not, so the harder action is
//!   not delayed;
//! - an absent signal never fires and resets the `for` count.

use std::time::Instant;

use perfpilot_strategies::{Level, TriggerSpec};

/// What one evaluation decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The value compared (smoothed, where smoothing is on), or `None` if absent.
    pub value: Option<f64>,
    /// The level after this sample.
    pub level: Level,
    /// Whether the strategy should run now.
    pub fire: bool,
}

/// One strategy's trigger and what it remembers between samples.
#[derive(Debug, Clone)]
pub struct TriggerState {
    spec: TriggerSpec,
    clear_below: f64,
    consecutive_above: u32,
    latched: bool,
    level: Level,
    smoothed: Option<f64>,
    last_run: Option<Instant>,
}

impl TriggerState {
    /// A trigger in its calm state.
    pub fn new(spec: TriggerSpec) -> Self {
        TriggerState {
            clear_below: spec.effective_clear_below(),
            spec,
            consecutive_above: 0,
            latched: false,
            level: Level::Ok,
            smoothed: None,
            last_run: None,
        }
    }

    /// The settings.
    pub fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    /// The level after the last evaluation.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Feeds one sample of the watched signal at time `now`.
    pub fn evaluate(&mut self, raw: Option<f64>, now: Instant) -> Evaluation {
        let Some(raw) = raw.filter(|v| v.is_finite()) else {
            self.consecutive_above = 0;
            return Evaluation {
                value: None,
                level: self.level,
                fire: false,
            };
        };
        let value = match (self.spec.smoothing, self.smoothed) {
            (Some(alpha), Some(previous)) => alpha * raw + (1.0 - alpha) * previous,
            _ => raw,
        };
        self.smoothed = Some(value);

        if value > self.spec.above {
            self.consecutive_above = self.consecutive_above.saturating_add(1);
        } else {
            self.consecutive_above = 0;
        }
        if !self.latched && self.consecutive_above >= self.spec.for_samples {
            self.latched = true;
        } else if self.latched && value < self.clear_below {
            self.latched = false;
        }

        let previous_level = self.level;
        self.level = match (self.latched, self.spec.critical) {
            (false, _) => Level::Ok,
            (true, Some(critical)) if value >= critical => Level::Critical,
            (true, _) => Level::Warning,
        };

        let cooled_down = self
            .last_run
            .is_none_or(|last| now.saturating_duration_since(last) >= self.spec.cooldown);
        let escalated = self.level == Level::Critical && previous_level < Level::Critical;
        Evaluation {
            value: Some(value),
            level: self.level,
            fire: self.latched && (cooled_down || escalated),
        }
    }

    /// Notes that the strategy ran automatically at `now`; the cooldown counts from here.
    pub fn mark_run(&mut self, now: Instant) {
        self.last_run = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use perfpilot_strategies::Signal;

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
}
