//! The latency probe (`[probe]`).

use std::time::Duration;

use perfpilot_strategies::duration;
use serde::{Deserialize, Serialize};

use super::Problem;

/// The latency probe (`[probe]`): with `url` set, the agent GETs it every `period` and feeds
/// the answers' latency and failures into the `latency` and `error_rate` signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// The URL to GET, `http://` only (e.g. the service's `/ping`); `None` (the default): no
    /// probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Time between two probes; by default [`ProbeConfig::DEFAULT_PERIOD`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub period: Duration,
    /// A probe without a complete answer after this long fails; by default
    /// [`ProbeConfig::DEFAULT_TIMEOUT`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub timeout: Duration,
}

impl ProbeConfig {
    /// Default `period`: 1 s.
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(1);
    /// Default `timeout`: 2 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Smallest `period` and `timeout` allowed: 10 ms.
    pub const MIN_PERIOD: Duration = Duration::from_millis(10);

    pub(super) fn problems(&self) -> Vec<Problem> {
        let fmt = duration::format;
        let mut problems = Vec::new();
        if let Some(url) = &self.url {
            if let Err(why) = crate::probe::check_url(url) {
                problems.push(Problem::new(
                    "probe.url",
                    format!("{url:?}"),
                    why.to_string(),
                ));
            }
        }
        if self.period < Self::MIN_PERIOD {
            problems.push(Problem::new(
                "probe.period",
                fmt(self.period),
                format!("must be at least {}", fmt(Self::MIN_PERIOD)),
            ));
        }
        if self.timeout < Self::MIN_PERIOD {
            problems.push(Problem::new(
                "probe.timeout",
                fmt(self.timeout),
                format!("must be at least {}", fmt(Self::MIN_PERIOD)),
            ));
        }
        problems
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            url: None,
            period: Self::DEFAULT_PERIOD,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}
