//! Self-tuning (`[tuning]`): judging runs and adapting the cadence.

use std::time::Duration;

use perfpilot_strategies::duration;
use serde::{Deserialize, Serialize};

use super::{Config, Problem};
use crate::budget::{ReactionMode, ReactionTuning};

/// Self-tuning (`[tuning]`): how the agent judges its runs and adapts its cadence.
///
/// ```toml
/// [tuning]
/// settle = "2s"              # read the signal 2 s after a run to judge it (default: at once)
/// adaptive_cooldown = true   # double the cooldown while runs do not help (default)
/// max_cooldown = "10m"
/// adaptive_sampling = true   # sample faster near thresholds, slower when calm (default off)
/// min_interval = "1s"        # default: interval / 5
/// calm_interval = "10s"      # default: 2 × interval
/// reaction = "adaptive"      # budgets derive their margins from the rise they see; "fixed": every number yours
/// max_rungs_skipped = 2      # the most rungs one step may skip on learned relief
/// forget_after = "30days"    # learned state kept in state_dir is dropped after this
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TuningConfig {
    /// How long after a run the trigger signal is read again (its `after` value, and whether
    /// the run helped); by default zero: at once. Runs of one batch wait for each other.
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub settle: Duration,
    /// Double a strategy's cooldown after every run that did not relieve its signal, up to
    /// `max_cooldown`; a helpful run, a manual run or a rise to CRITICAL restores it. By
    /// default `true`.
    pub adaptive_cooldown: bool,
    /// The longest cooldown adaptive cooldown reaches; by default
    /// [`TuningConfig::DEFAULT_MAX_COOLDOWN`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub max_cooldown: Duration,
    /// Sample at `min_interval` while any signal is near its threshold (in the hysteresis band
    /// or above) or trending to cross it, and relax towards `calm_interval` when all are calm;
    /// by default `false` (a fixed `interval`).
    pub adaptive_sampling: bool,
    /// The fastest adaptive interval; by default `interval` / 5, at least
    /// [`Config::MIN_INTERVAL`].
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub min_interval: Option<Duration>,
    /// The adaptive interval at rest; by default 2 × `interval`.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub calm_interval: Option<Duration>,
    /// How budgets react (SPEC §12): `adaptive` (the default) works out urgency, the guard
    /// band and the rung to skip to from what it observes; `fixed` keeps every number as
    /// configured.
    pub reaction: ReactionMode,
    /// The most rungs one step may skip on learned relief; by default
    /// [`ReactionTuning::DEFAULT_MAX_RUNGS_SKIPPED`].
    pub max_rungs_skipped: u32,
    /// Learned state kept in `state_dir` (`crate::learned`) that no running agent has
    /// refreshed for this long is dropped; by default [`TuningConfig::DEFAULT_FORGET_AFTER`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub forget_after: Duration,
}

impl TuningConfig {
    /// Default `max_cooldown`: 10 min.
    pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(600);
    /// Default `forget_after`: 30 days.
    pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

    /// How budgets react, from `reaction` and `max_rungs_skipped`.
    pub fn reaction_tuning(&self) -> ReactionTuning {
        ReactionTuning {
            mode: self.reaction,
            max_rungs_skipped: self.max_rungs_skipped,
        }
    }

    /// The adaptive `(min, calm)` intervals for a base `interval`, defaults filled in.
    pub fn adaptive_intervals(&self, interval: Duration) -> (Duration, Duration) {
        let min = self
            .min_interval
            .unwrap_or((interval / 5).max(Config::MIN_INTERVAL));
        let calm = self.calm_interval.unwrap_or(interval * 2);
        (min, calm)
    }

    pub(super) fn problems(&self, interval: Duration) -> Vec<Problem> {
        let fmt = duration::format;
        let mut problems = Vec::new();
        problems.extend(Problem::unless_positive(
            "tuning.max_cooldown",
            self.max_cooldown,
        ));
        if let Some(min) = self.min_interval {
            if min < Config::MIN_INTERVAL || min > interval {
                problems.push(Problem::new(
                    "tuning.min_interval",
                    fmt(min),
                    format!(
                        "must be in [{}, interval ({})]",
                        fmt(Config::MIN_INTERVAL),
                        fmt(interval)
                    ),
                ));
            }
        }
        if let Some(calm) = self.calm_interval {
            if calm < interval {
                problems.push(Problem::new(
                    "tuning.calm_interval",
                    fmt(calm),
                    format!("must be at least interval ({})", fmt(interval)),
                ));
            }
        }
        problems
    }
}

impl Default for TuningConfig {
    fn default() -> Self {
        TuningConfig {
            settle: Duration::ZERO,
            adaptive_cooldown: true,
            max_cooldown: Self::DEFAULT_MAX_COOLDOWN,
            adaptive_sampling: false,
            min_interval: None,
            calm_interval: None,
            reaction: ReactionMode::default(),
            max_rungs_skipped: ReactionTuning::DEFAULT_MAX_RUNGS_SKIPPED,
            forget_after: Self::DEFAULT_FORGET_AFTER,
        }
    }
}
