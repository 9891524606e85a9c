//! `connection-reap` (aliases `connection`, `database`): close idle and surplus connections.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::duration;
use crate::problem::Problem;
use crate::registry::{ReapPolicy, ReapReport};
use crate::signals::Signal;
use crate::strategy::{Context, Outcome, Strategy, StrategyError};
use crate::trigger::TriggerSpec;

/// Settings of `connection-reap` (`[strategies.connection_reap]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectionReapConfig {
    /// Whether the strategy is registered at all.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// Its runs disrupt users (sessions dropped, connections closed): `perfpilot replay`
    /// counts them apart. By default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disruptive: bool,
    /// When it runs by itself.
    pub trigger: TriggerSpec,
    /// Close connections idle longer than this.
    #[serde(
        default = "ConnectionReapConfig::default_idle_timeout",
        with = "duration"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::duration::json_schema")
    )]
    pub idle_timeout: Duration,
    /// At most this many connections per client; omit for no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_client: Option<u32>,
}

impl ConnectionReapConfig {
    /// Default `idle_timeout`: 60 s.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    fn default_idle_timeout() -> Duration {
        Self::DEFAULT_IDLE_TIMEOUT
    }

    /// The strategy these settings describe.
    pub fn build(&self) -> ConnectionReap {
        ConnectionReap {
            policy: ReapPolicy {
                idle_timeout: self.idle_timeout,
                max_per_client: self.max_per_client,
            },
        }
    }

    /// Every problem with the settings, each naming its key under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        problems.extend(Problem::unless_positive(
            format!("{prefix}.idle_timeout"),
            self.idle_timeout,
        ));
        if self.max_per_client == Some(0) {
            problems.push(Problem::new(
                format!("{prefix}.max_per_client"),
                0,
                "must be at least 1",
            ));
        }
        problems
    }
}

impl Default for ConnectionReapConfig {
    fn default() -> Self {
        ConnectionReapConfig {
            enabled: true,
            disruptive: false,
            trigger: TriggerSpec::new(Signal::OpenConnections, 1000.0),
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_per_client: None,
        }
    }
}

/// Closes idle connections and enforces the per-client cap on every registered pool.
#[derive(Debug, Clone)]
pub struct ConnectionReap {
    policy: ReapPolicy,
}

impl ConnectionReap {
    /// The strategy's name.
    pub const NAME: &'static str = "connection-reap";
}

impl Default for ConnectionReap {
    fn default() -> Self {
        ConnectionReapConfig::default().build()
    }
}

#[async_trait]
impl Strategy for ConnectionReap {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn aliases(&self) -> &[&str] {
        &["connection", "database"]
    }

    fn kind(&self) -> &str {
        "built-in"
    }

    fn acts_on(&self) -> String {
        "registered connection pools and the agent's connection tracker".to_owned()
    }

    fn description(&self) -> &str {
        "close connections idle past idle_timeout and the oldest over max_per_client"
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        let pools = &ctx.registry.pools;
        if pools.is_empty() {
            return Ok(Outcome::nothing_to_do("no connection pools registered").with("pools", 0));
        }
        let mut total = ReapReport::default();
        let mut open_before = 0;
        let mut open_after = 0;
        for (_, pool) in pools {
            open_before += pool.open_connections();
            let report = pool.reap(&self.policy);
            open_after += pool.open_connections();
            total.closed_idle += report.closed_idle;
            total.closed_over_limit += report.closed_over_limit;
        }
        let closed = total.closed_idle + total.closed_over_limit;
        let summary = format!(
            "closed {closed} connections ({} idle, {} over the per-client cap) in {} pools",
            total.closed_idle,
            total.closed_over_limit,
            pools.len()
        );
        let outcome = if closed > 0 {
            Outcome::acted(summary)
        } else {
            Outcome::nothing_to_do(summary)
        };
        Ok(outcome
            .with("pools", pools.len())
            .with("connections_closed", closed)
            .with("closed_idle", total.closed_idle)
            .with("closed_over_limit", total.closed_over_limit)
            .with("open_before", open_before)
            .with("open_after", open_after))
    }
}
