//! What a trigger watches ([`TriggerSpec`]) and the [`Level`] a signal is at.
//!
//! The decisions themselves (hysteresis, `for`, cooldown) are made by the agent's trigger
//! engine; this module holds the settings every strategy's config shares.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::snapshot::Signal;

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
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    pub cooldown: Duration,
    /// Smooth the signal with an exponentially weighted moving average of this weight
    /// (0 < alpha ≤ 1; Envoy uses 0.05 for CPU). `None`: use raw samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<f64>,
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
        }
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

    /// Every problem with these settings, each naming the key under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
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
            problems.push(format!(
                "{prefix}.above = {}: {allowed} for signal {signal}",
                self.above
            ));
        }
        if let Some(critical) = self.critical {
            if !in_range(critical) {
                problems.push(format!(
                    "{prefix}.critical = {critical}: {allowed} for signal {signal}"
                ));
            } else if critical < self.above {
                problems.push(format!(
                    "{prefix}.critical = {critical}: must be at least above ({})",
                    self.above
                ));
            }
        }
        if let Some(clear) = self.clear_below {
            if !(clear.is_finite() && clear >= 0.0 && clear <= self.above) {
                problems.push(format!(
                    "{prefix}.clear_below = {clear}: must be in [0, above] (above = {})",
                    self.above
                ));
            }
        }
        if self.for_samples == 0 {
            problems.push(format!("{prefix}.for = 0: must be at least 1 sample"));
        }
        if let Some(alpha) = self.smoothing {
            if !(alpha > 0.0 && alpha <= 1.0) {
                problems.push(format!("{prefix}.smoothing = {alpha}: must be in (0, 1]"));
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
        assert!(spec.problems("t").is_empty());
    }

    #[test]
    fn problems_name_every_bad_key() {
        let spec: TriggerSpec = serde_json::from_str(
            r#"{"signal": "memory_usage", "above": 1.5, "critical": 0.5, "for": 0, "cooldown": "1s"}"#,
        )
        .unwrap();
        let problems = spec.problems("strategies.memory_purge.trigger");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("strategies.memory_purge.trigger.above = 1.5: must be in (0, 1]")
        );
        assert!(problems[1].contains(".critical = 0.5: must be at least above"));
        assert!(problems[2].contains(".for = 0"));
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
