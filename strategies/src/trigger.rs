//! What a trigger watches ([`TriggerSpec`]) and the [`Level`] a signal is at.
//!
//! The decisions themselves (hysteresis, `for`, cooldown) are made by the agent's trigger
//! engine; this module holds the settings every strategy's config shares.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::problem::Problem;
use crate::signals::Signal;

/// How loud a signal is relative to its trigger's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Level {
    /// Below the threshold (or back below `clear_below`).
    Ok,
    /// Above `above`: the strategy runs at its normal strength.
    Warning,
    /// Above `critical`: the strategy may act harder (cache trim evicts more).
    Critical,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        })
    }
}

/// When a strategy runs by itself: a signal, a threshold, and the anti-flapping settings.
///
/// In TOML:
/// ```toml
/// [strategies.memory_purge.trigger]
/// signal = "memory_usage"
/// above = 0.8          # WARNING from here
/// critical = 0.9       # CRITICAL from here
/// clear_below = 0.72   # re-arms below this (default 0.9 × above)
/// for = 2              # consecutive samples above before it fires
/// cooldown = "30s"     # minimum time between two automatic runs
///
/// # optional: fire early when the trend says the signal will get there soon
/// [strategies.memory_purge.trigger.predict]
/// horizon = "30s"      # fire when the fitted trend reaches `at` within this long
/// at = 0.95            # default: `critical` if set, else `above`
/// window = 10          # samples in the robust (Theil–Sen) fit
///
/// # optional: learn the threshold instead of guessing it; `above` becomes its floor
/// [strategies.my_latency.trigger.baseline]
/// k = 3.0              # threshold = EWMA + k × EW deviation
/// alpha = 0.05         # EWMA weight of each sample
/// warmup = 30          # samples learned before the learned threshold is used
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriggerSpec {
    /// The signal watched.
    pub signal: Signal,
    /// The level is WARNING, and the strategy fires, above this value.
    pub above: f64,
    /// The level is CRITICAL above this value; `None` means never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    /// After firing, the trigger re-arms only once the signal falls below this.
    /// By default [`TriggerSpec::DEFAULT_CLEAR_RATIO`] × `above`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_below: Option<f64>,
    /// Consecutive samples the signal must stay above `above` before the trigger fires.
    #[serde(rename = "for", default = "TriggerSpec::default_for")]
    pub for_samples: u32,
    /// Minimum time between two automatic runs of the strategy.
    #[serde(default = "TriggerSpec::default_cooldown", with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::duration::json_schema")
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    pub cooldown: Duration,
    /// Smooth the signal with an exponentially weighted moving average of this weight
    /// (0 < alpha ≤ 1; Envoy uses 0.05 for CPU). `None`: use raw samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("exclusiveMinimum" = 0, "maximum" = 1)))]
    pub smoothing: Option<f64>,
    /// Fire before the threshold is crossed when the signal's trend will cross it soon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predict: Option<PredictSpec>,
    /// Learn the threshold from the signal's own history; `above` is then its floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSpec>,
    /// Watch the signal between full samples at this period (the fast watch: one cheap read,
    /// `/proc/<pid>/statm` or the limiting cgroup's usage), and sample at once when it crosses
    /// `above` or `critical`; PSI signals are watched by a kernel trigger where one can be
    /// registered. Only for signals with a fast-watch read ([`crate::signals::watchable`]); the
    /// rule is [`watch_interval_problems`](crate::fast_watch::watch_interval_problems). `None`:
    /// the signal is read by full samples only.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::option"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::duration::json_schema")
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "20ms"))]
    pub watch_interval: Option<Duration>,
}

/// Predictive firing: a robust linear fit (Theil–Sen) over the last `window` samples says
/// when the signal will reach `at`; within `horizon`, the strategy fires before the signal
/// gets there. Cooldowns and back-off apply as to any automatic run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PredictSpec {
    /// Fire when the signal is predicted to reach `at` within this long.
    #[serde(default = "PredictSpec::default_horizon", with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::duration::json_schema")
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    pub horizon: Duration,
    /// The value the prediction is about; by default `critical` if set, else `above`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
    /// The most recent samples in the fit (at least [`PredictSpec::MIN_WINDOW`]); a
    /// prediction needs half of them (at least 3), counted afresh after every run.
    #[serde(default = "PredictSpec::default_window")]
    #[cfg_attr(feature = "schema", schemars(range(min = PredictSpec::MIN_WINDOW, max = PredictSpec::MAX_WINDOW)))]
    pub window: u32,
}

impl PredictSpec {
    /// Default `horizon`: 30 s.
    pub const DEFAULT_HORIZON: Duration = Duration::from_secs(30);
    /// Default `window`: 10 samples.
    pub const DEFAULT_WINDOW: u32 = 10;
    /// Smallest `window`: 3 samples.
    pub const MIN_WINDOW: u32 = 3;
    /// Largest `window`: 1000 samples (the fit is quadratic in the window).
    pub const MAX_WINDOW: u32 = 1000;

    /// Predict reaching `at` within `horizon`, over the default window.
    pub fn new(horizon: Duration) -> Self {
        PredictSpec {
            horizon,
            at: None,
            window: Self::DEFAULT_WINDOW,
        }
    }

    fn default_horizon() -> Duration {
        Self::DEFAULT_HORIZON
    }

    fn default_window() -> u32 {
        Self::DEFAULT_WINDOW
    }
}

/// A learned threshold: an exponentially weighted mean and deviation of the signal, learned
/// while the trigger is calm; the threshold is `mean + k × deviation`, never below `above`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaselineSpec {
    /// Deviations above the mean; by default 3.
    #[serde(default = "BaselineSpec::default_k")]
    pub k: f64,
    /// Weight of each new sample in the mean and deviation (0 < alpha ≤ 1); by default 0.05.
    #[serde(default = "BaselineSpec::default_alpha")]
    #[cfg_attr(feature = "schema", schemars(extend("exclusiveMinimum" = 0, "maximum" = 1)))]
    pub alpha: f64,
    /// Samples learned before the learned threshold is used; until then only `critical`
    /// (if set) fires. By default 30.
    #[serde(default = "BaselineSpec::default_warmup")]
    pub warmup: u32,
}

impl Default for BaselineSpec {
    fn default() -> Self {
        BaselineSpec {
            k: Self::default_k(),
            alpha: Self::default_alpha(),
            warmup: Self::default_warmup(),
        }
    }
}

impl BaselineSpec {
    fn default_k() -> f64 {
        3.0
    }

    fn default_alpha() -> f64 {
        0.05
    }

    fn default_warmup() -> u32 {
        30
    }
}

impl TriggerSpec {
    /// `clear_below` defaults to this share of `above`.
    pub const DEFAULT_CLEAR_RATIO: f64 = 0.9;
    /// `for` defaults to one sample.
    pub const DEFAULT_FOR: u32 = 1;
    /// `cooldown` defaults to 30 s.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

    /// A trigger on `signal` above `above`, everything else by default.
    pub fn new(signal: Signal, above: f64) -> Self {
        TriggerSpec {
            signal,
            above,
            critical: None,
            clear_below: None,
            for_samples: Self::DEFAULT_FOR,
            cooldown: Self::DEFAULT_COOLDOWN,
            smoothing: None,
            predict: None,
            baseline: None,
            watch_interval: None,
        }
    }

    /// Watches the signal between full samples every `interval` (see
    /// [`TriggerSpec::watch_interval`](TriggerSpec#structfield.watch_interval)).
    pub fn watch_interval(mut self, interval: Duration) -> Self {
        self.watch_interval = Some(interval);
        self
    }

    /// Fires early when the signal is predicted to cross (see [`PredictSpec`]).
    pub fn predict(mut self, predict: PredictSpec) -> Self {
        self.predict = Some(predict);
        self
    }

    /// Learns the threshold, with `above` as its floor (see [`BaselineSpec`]).
    pub fn baseline(mut self, baseline: BaselineSpec) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// The value a prediction is about: `predict.at`, else `critical`, else `above`.
    pub fn predict_at(&self) -> f64 {
        self.predict
            .as_ref()
            .and_then(|p| p.at)
            .or(self.critical)
            .unwrap_or(self.above)
    }

    /// Sets the CRITICAL threshold.
    pub fn critical(mut self, critical: f64) -> Self {
        self.critical = Some(critical);
        self
    }

    /// Sets the cooldown.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Sets how many consecutive samples must be above the threshold.
    pub fn for_samples(mut self, samples: u32) -> Self {
        self.for_samples = samples;
        self
    }

    /// The effective re-arm threshold.
    pub fn effective_clear_below(&self) -> f64 {
        self.clear_below
            .unwrap_or(self.above * Self::DEFAULT_CLEAR_RATIO)
    }

    /// Every problem with these settings, each naming the key under `prefix`; `interval` is
    /// the full sampling interval (a `watch_interval` follows
    /// [`watch_interval_problems`](crate::fast_watch::watch_interval_problems)).
    pub fn problems(&self, prefix: &str, interval: Duration) -> Vec<Problem> {
        let mut problems = Vec::new();
        let signal = self.signal;
        let in_range =
            |value: f64| value.is_finite() && value > 0.0 && (!signal.is_ratio() || value <= 1.0);
        let allowed = if signal.is_ratio() {
            "must be in (0, 1]"
        } else {
            "must be a positive number"
        };
        if !in_range(self.above) {
            problems.push(Problem::new(
                format!("{prefix}.above"),
                self.above,
                format!("{allowed} for signal {signal}"),
            ));
        }
        if let Some(critical) = self.critical {
            if !in_range(critical) {
                problems.push(Problem::new(
                    format!("{prefix}.critical"),
                    critical,
                    format!("{allowed} for signal {signal}"),
                ));
            } else if critical < self.above {
                problems.push(Problem::new(
                    format!("{prefix}.critical"),
                    critical,
                    format!("must be at least above ({})", self.above),
                ));
            }
        }
        if let Some(clear) = self.clear_below {
            if !(clear.is_finite() && clear >= 0.0 && clear <= self.above) {
                problems.push(Problem::new(
                    format!("{prefix}.clear_below"),
                    clear,
                    format!("must be in [0, above] (above = {})", self.above),
                ));
            }
        }
        if self.for_samples == 0 {
            problems.push(Problem::new(
                format!("{prefix}.for"),
                0,
                "must be at least 1 sample",
            ));
        }
        if let Some(watch) = self.watch_interval {
            problems.extend(crate::fast_watch::watch_interval_problems(
                &format!("{prefix}.watch_interval"),
                signal,
                watch,
                interval,
            ));
        }
        if let Some(alpha) = self.smoothing {
            if !(alpha > 0.0 && alpha <= 1.0) {
                problems.push(Problem::new(
                    format!("{prefix}.smoothing"),
                    alpha,
                    "must be in (0, 1]",
                ));
            }
        }
        if let Some(predict) = &self.predict {
            if predict.horizon.is_zero() {
                problems.push(Problem::new(
                    format!("{prefix}.predict.horizon"),
                    "0s",
                    "must be longer than zero",
                ));
            }
            if let Some(at) = predict.at {
                if !in_range(at) {
                    problems.push(Problem::new(
                        format!("{prefix}.predict.at"),
                        at,
                        format!("{allowed} for signal {signal}"),
                    ));
                }
            }
            if !(PredictSpec::MIN_WINDOW..=PredictSpec::MAX_WINDOW).contains(&predict.window) {
                problems.push(Problem::new(
                    format!("{prefix}.predict.window"),
                    predict.window,
                    format!(
                        "must be in {}..={} samples",
                        PredictSpec::MIN_WINDOW,
                        PredictSpec::MAX_WINDOW
                    ),
                ));
            }
        }
        if let Some(baseline) = &self.baseline {
            if !(baseline.k.is_finite() && baseline.k > 0.0) {
                problems.push(Problem::new(
                    format!("{prefix}.baseline.k"),
                    baseline.k,
                    "must be a positive number",
                ));
            }
            if !(baseline.alpha > 0.0 && baseline.alpha <= 1.0) {
                problems.push(Problem::new(
                    format!("{prefix}.baseline.alpha"),
                    baseline.alpha,
                    "must be in (0, 1]",
                ));
            }
            if baseline.warmup == 0 {
                problems.push(Problem::new(
                    format!("{prefix}.baseline.warmup"),
                    0,
                    "must be at least 1 sample",
                ));
            }
        }
        problems
    }
}

impl TriggerSpec {
    fn default_for() -> u32 {
        Self::DEFAULT_FOR
    }

    fn default_cooldown() -> Duration {
        Self::DEFAULT_COOLDOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_from_toml_like_json() {
        let spec: TriggerSpec =
            serde_json::from_str(r#"{"signal": "memory_usage", "above": 0.8}"#).unwrap();
        assert_eq!(spec.for_samples, 1);
        assert_eq!(spec.cooldown, Duration::from_secs(30));
        assert!((spec.effective_clear_below() - 0.72).abs() < 1e-9);
        assert!(spec.problems("t", Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn problems_name_every_bad_key() {
        let spec: TriggerSpec = serde_json::from_str(
            r#"{"signal": "memory_usage", "above": 1.5, "critical": 0.5, "for": 0, "cooldown": "1s"}"#,
        )
        .unwrap();
        let problems = spec
            .problems("strategies.memory_purge.trigger", Duration::from_secs(1))
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("strategies.memory_purge.trigger.above = 1.5: must be in (0, 1]")
        );
        assert!(problems[1].contains(".critical = 0.5: must be at least above"));
        assert!(problems[2].contains(".for = 0"));
    }

    #[test]
    fn predict_and_baseline_fill_in_and_are_checked() {
        let spec: TriggerSpec = serde_json::from_str(
            r#"{"signal": "memory_usage", "above": 0.8, "critical": 0.9,
                "predict": {"horizon": "20s"}, "baseline": {}}"#,
        )
        .unwrap();
        let predict = spec.predict.as_ref().unwrap();
        assert_eq!(predict.horizon, Duration::from_secs(20));
        assert_eq!(predict.window, PredictSpec::DEFAULT_WINDOW);
        assert_eq!(spec.predict_at(), 0.9, "critical when `at` is not set");
        assert_eq!(spec.baseline, Some(BaselineSpec::default()));
        assert!(spec.problems("t", Duration::from_secs(1)).is_empty());

        let bad: TriggerSpec = serde_json::from_str(
            r#"{"signal": "memory_usage", "above": 0.8,
                "predict": {"horizon": 0, "at": 2, "window": 2},
                "baseline": {"k": -1, "alpha": 0, "warmup": 0}}"#,
        )
        .unwrap();
        let problems = bad
            .problems("t", Duration::from_secs(1))
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        for expected in [
            "t.predict.horizon = 0s",
            "t.predict.at = 2: must be in (0, 1]",
            "t.predict.window = 2: must be in 3..=1000",
            "t.baseline.k = -1",
            "t.baseline.alpha = 0",
            "t.baseline.warmup = 0",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn watch_interval_is_parsed_and_checked() {
        let spec: TriggerSpec = serde_json::from_str(
            r#"{"signal": "memory_usage", "above": 0.8, "watch_interval": "20ms"}"#,
        )
        .unwrap();
        assert_eq!(spec.watch_interval, Some(Duration::from_millis(20)));
        assert!(spec.problems("t", Duration::from_secs(1)).is_empty());
        let bad: TriggerSpec = serde_json::from_str(
            r#"{"signal": "latency_p99_ms", "above": 80, "watch_interval": "20s"}"#,
        )
        .unwrap();
        let problems = bad.problems("t", Duration::from_secs(1));
        assert!(problems[0]
            .to_string()
            .contains("signal latency_p99_ms cannot be watched"));
        assert!(problems[1]
            .to_string()
            .starts_with("t.watch_interval = 20s: must be at least 1ms and at most 10s"));
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<TriggerSpec>(
            r#"{"signal": "memory_usage", "above": 0.8, "abvoe": 1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("abvoe"));
    }
}
