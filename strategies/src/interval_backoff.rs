//! `interval-backoff` (alias `cpu`): sample less often while CPU is scarce.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::snapshot::Signal;
use crate::strategy::{Context, Outcome, Strategy, StrategyError};
use crate::trigger::TriggerSpec;

/// Settings of `interval-backoff` (`[strategies.interval_backoff]`). The ceiling is the
/// agent's `max_interval`; the agent halves the interval back towards `interval` on every
/// sample where this trigger is clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalBackoffConfig {
    /// Whether the strategy is registered at all.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// When it runs by itself.
    pub trigger: TriggerSpec,
}

impl Default for IntervalBackoffConfig {
    fn default() -> Self {
        IntervalBackoffConfig {
            enabled: true,
            trigger: TriggerSpec::new(Signal::CpuUsage, 0.9),
        }
    }
}

impl IntervalBackoffConfig {
    /// The strategy these settings describe.
    pub fn build(&self) -> IntervalBackoff {
        IntervalBackoff
    }
}

/// Doubles the agent's sampling interval, up to its maximum.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntervalBackoff;

impl IntervalBackoff {
    /// The strategy's name.
    pub const NAME: &'static str = "interval-backoff";
}

#[async_trait]
impl Strategy for IntervalBackoff {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn aliases(&self) -> &[&str] {
        &["cpu"]
    }

    fn kind(&self) -> &str {
        "built-in"
    }

    fn acts_on(&self) -> String {
        "the agent's own sampling interval".to_owned()
    }

    fn description(&self) -> &str {
        "double the sampling interval up to max_interval while CPU is above threshold"
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        // From the base at least: adaptive sampling may have gone faster, and under CPU
        // pressure the agent must sample less often than configured, not merely less fast.
        let before = ctx.interval.current();
        let after = ctx.interval.set(before.max(ctx.interval.base()) * 2);
        let outcome = if after > before {
            Outcome::acted(format!(
                "sampling interval {} ms -> {} ms",
                before.as_millis(),
                after.as_millis()
            ))
        } else {
            Outcome::nothing_to_do(format!(
                "sampling interval already at its maximum ({} ms)",
                after.as_millis()
            ))
        };
        Ok(outcome
            .with("previous_interval_ms", before.as_millis() as u64)
            .with("interval_ms", after.as_millis() as u64))
    }
}
