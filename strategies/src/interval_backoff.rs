//! `interval-backoff` (alias `cpu`): sample less often while the agent's own CPU is high.
//!
//! It watches `agent_cpu_usage`, the agent process's own CPU, in every mode: in self and
//! library modes that is the service's process (the agent runs inside it, the same value as
//! `cpu_usage`); in sidecar mode it is the agent alone, so a busy target does not slow the
//! agent's sampling down (the target's CPU is `cpu_usage`, for the user's own triggers).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::duration::doubled_up_to;
use crate::signals::Signal;
use crate::strategy::{Context, Outcome, Strategy, StrategyError};
use crate::trigger::TriggerSpec;

/// Settings of `interval-backoff` (`[strategies.interval_backoff]`). The ceiling is the
/// agent's `max_interval`; the agent halves the interval back towards `interval` on every
/// sample where this trigger is clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IntervalBackoffConfig {
    /// Whether the strategy is registered at all.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// Its runs disrupt users (sessions dropped, connections closed): `perfpilot replay`
    /// counts them apart. By default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disruptive: bool,
    /// When it runs by itself.
    pub trigger: TriggerSpec,
}

impl Default for IntervalBackoffConfig {
    fn default() -> Self {
        IntervalBackoffConfig {
            enabled: true,
            disruptive: false,
            trigger: TriggerSpec::new(Signal::AgentCpuUsage, 0.9),
        }
    }
}

impl IntervalBackoffConfig {
    /// The strategy these settings describe.
    pub fn build(&self) -> IntervalBackoff {
        IntervalBackoff
    }
}

/// Doubles the agent's sampling interval, up to its maximum: its verdict
/// ([`Outcome::interval`](crate::Outcome::interval)) is the new interval, which the agent applies.
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
        "double the sampling interval up to max_interval while the agent's own CPU is above threshold"
    }

    fn paces_sampling(&self) -> bool {
        true
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        // From the base at least: adaptive sampling may have gone faster, and under CPU
        // pressure the agent must sample less often than configured, not merely less fast.
        // The verdict: the agent applies it (this reads the interval, never sets it).
        let before = ctx.interval.current();
        let after = ctx.interval.clamp(doubled_up_to(
            before.max(ctx.interval.base()),
            1,
            ctx.interval.max(),
        ));
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
            .with("interval_ms", after.as_millis() as u64)
            .with_interval(after))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::strategy::IntervalControl;

    /// The strategy returns its verdict and leaves the interval alone: the agent applies it.
    #[tokio::test]
    async fn the_verdict_doubles_from_the_base_up_to_the_maximum_without_setting_it() {
        let interval = IntervalControl::new(Duration::from_secs(1), Duration::from_secs(3));
        let ctx = Context {
            interval: interval.clone(),
            ..Context::standalone()
        };
        let outcome = IntervalBackoff.run(ctx.clone()).await.unwrap();
        assert!(outcome.acted);
        assert_eq!(outcome.interval, Some(Duration::from_secs(2)));
        assert_eq!(
            interval.current(),
            Duration::from_secs(1),
            "not set by the strategy"
        );

        interval.set(Duration::from_secs(2));
        let outcome = IntervalBackoff.run(ctx.clone()).await.unwrap();
        assert_eq!(outcome.interval, Some(Duration::from_secs(3)), "clamped");
        interval.set(Duration::from_secs(3));
        let outcome = IntervalBackoff.run(ctx).await.unwrap();
        assert!(!outcome.acted, "{}", outcome.summary);
        assert_eq!(outcome.interval, Some(Duration::from_secs(3)));
        assert!(IntervalBackoff.paces_sampling());
    }
}
