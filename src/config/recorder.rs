//! The flight recorder's settings (`[recorder]`, see [`crate::recorder`]).

use std::time::Duration;

use perfpilot_strategies::{duration, Problem};
use serde::{Deserialize, Serialize};

/// The recorder's settings (`[recorder]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderConfig {
    /// How much of the past is kept in memory at full resolution; by default
    /// [`RecorderConfig::DEFAULT_WINDOW`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub window: Duration,
    /// Most `GET /performance-metrics/history` requests served at once (more get 503); by
    /// default [`RecorderConfig::DEFAULT_MAX_HISTORY_REQUESTS`].
    #[schemars(range(min = 1, max = RecorderConfig::MAX_HISTORY_REQUESTS))]
    pub max_history_requests: usize,
    /// With `state_dir`: how long segments are kept on disk; by default
    /// [`RecorderConfig::DEFAULT_KEEP`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub keep: Duration,
    /// With `state_dir`: the most bytes the segments take on disk (the oldest go first); by
    /// default [`RecorderConfig::DEFAULT_MAX_DISK`].
    #[serde(with = "super::bytes::plain")]
    #[schemars(schema_with = "crate::config::bytes::json_schema")]
    pub max_disk: u64,
}

impl RecorderConfig {
    /// Default `window`: 15 minutes.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);
    /// Smallest `window`: a minute (one block).
    pub const MIN_WINDOW: Duration = Duration::from_secs(60);
    /// Largest `window` kept in memory: a day.
    pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
    /// Default `keep`: 24 hours.
    pub const DEFAULT_KEEP: Duration = Duration::from_secs(24 * 3600);
    /// Default `max_disk`: 64 MiB.
    pub const DEFAULT_MAX_DISK: u64 = 64 << 20;
    /// Smallest `max_disk`: 1 MiB.
    pub const MIN_MAX_DISK: u64 = 1 << 20;
    /// Default `max_history_requests`: 4.
    pub const DEFAULT_MAX_HISTORY_REQUESTS: usize = 4;
    /// Largest `max_history_requests`.
    pub const MAX_HISTORY_REQUESTS: usize = 64;

    /// Every problem, each with its key.
    pub fn problems(&self) -> Vec<Problem> {
        let fmt = duration::format;
        let mut problems = Vec::new();
        if !(Self::MIN_WINDOW..=Self::MAX_WINDOW).contains(&self.window) {
            problems.push(Problem::new(
                "recorder.window",
                fmt(self.window),
                format!(
                    "must be in {}..={}",
                    fmt(Self::MIN_WINDOW),
                    fmt(Self::MAX_WINDOW)
                ),
            ));
        }
        if !(1..=Self::MAX_HISTORY_REQUESTS).contains(&self.max_history_requests) {
            problems.push(Problem::new(
                "recorder.max_history_requests",
                self.max_history_requests,
                format!("must be in 1..={}", Self::MAX_HISTORY_REQUESTS),
            ));
        }
        if self.keep < Self::MIN_WINDOW {
            problems.push(Problem::new(
                "recorder.keep",
                fmt(self.keep),
                format!("must be at least {}", fmt(Self::MIN_WINDOW)),
            ));
        }
        if self.max_disk < Self::MIN_MAX_DISK {
            problems.push(Problem::new(
                "recorder.max_disk",
                self.max_disk,
                "must be at least 1MiB",
            ));
        }
        problems
    }
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            window: Self::DEFAULT_WINDOW,
            max_history_requests: Self::DEFAULT_MAX_HISTORY_REQUESTS,
            keep: Self::DEFAULT_KEEP,
            max_disk: Self::DEFAULT_MAX_DISK,
        }
    }
}
