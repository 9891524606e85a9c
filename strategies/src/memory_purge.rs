//! `memory-purge` (aliases `memory`, `gc`): return the allocator's dirty pages to the OS.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::signals::Signal;
use crate::strategy::{Context, Outcome, Strategy, StrategyError};
use crate::trigger::{Level, TriggerSpec};
use crate::{duration, proc_self};

/// Settings of `memory-purge` (`[strategies.memory_purge]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MemoryPurgeConfig {
    /// Whether the strategy is registered at all.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// Its runs disrupt users (sessions dropped, connections closed): `perfpilot replay`
    /// counts them apart. By default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disruptive: bool,
    /// When it runs by itself.
    pub trigger: TriggerSpec,
    /// At CRITICAL, also lower jemalloc's `dirty_decay_ms` on every arena to this, so freed
    /// memory goes back sooner from then on. `None`: leave decay alone.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::duration::json_schema")
    )]
    pub decay_under_pressure: Option<Duration>,
}

impl Default for MemoryPurgeConfig {
    fn default() -> Self {
        MemoryPurgeConfig {
            enabled: true,
            disruptive: false,
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.8).critical(0.9),
            decay_under_pressure: None,
        }
    }
}

impl MemoryPurgeConfig {
    /// The strategy these settings describe.
    pub fn build(&self) -> MemoryPurge {
        MemoryPurge {
            decay_under_pressure: self.decay_under_pressure,
        }
    }
}

/// Purges the dirty pages of all jemalloc arenas and reports RSS and resident bytes released.
#[derive(Debug, Clone, Default)]
pub struct MemoryPurge {
    decay_under_pressure: Option<Duration>,
}

impl MemoryPurge {
    /// The strategy's name.
    pub const NAME: &'static str = "memory-purge";
}

#[async_trait]
impl Strategy for MemoryPurge {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn aliases(&self) -> &[&str] {
        &["memory", "gc"]
    }

    fn kind(&self) -> &str {
        "built-in"
    }

    fn acts_on(&self) -> String {
        "the allocator: purge jemalloc's dirty pages".to_owned()
    }

    fn description(&self) -> &str {
        "purge jemalloc's dirty pages in all arenas and report the RSS released"
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        let decay = self
            .decay_under_pressure
            .filter(|_| ctx.level == Level::Critical);
        tokio::task::spawn_blocking(move || purge(decay))
            .await
            .map_err(|e| StrategyError::Failed(format!("purge task failed: {e}")))?
    }
}

#[cfg(feature = "jemalloc")]
fn purge(decay: Option<Duration>) -> Result<Outcome, StrategyError> {
    use crate::jemalloc;

    if !jemalloc::in_use() {
        return Err(StrategyError::Unavailable(
            "jemalloc is not this process's allocator (use tikv_jemallocator::Jemalloc)".into(),
        ));
    }
    let before = jemalloc::read_stats().map_err(StrategyError::Failed)?;
    let rss_before = proc_self::rss_bytes();
    let started = Instant::now();
    jemalloc::purge_all_arenas().map_err(StrategyError::Failed)?;
    let purge_time = started.elapsed();
    let after = jemalloc::read_stats().map_err(StrategyError::Failed)?;
    let rss_after = proc_self::rss_bytes();

    let resident_released = before.resident_bytes.saturating_sub(after.resident_bytes);
    let rss_released = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let mut outcome = if resident_released > 0 || rss_released.is_some_and(|r| r > 0) {
        Outcome::acted(format!(
            "purged all arenas: resident {} -> {} bytes",
            before.resident_bytes, after.resident_bytes
        ))
    } else {
        Outcome::nothing_to_do("purged all arenas: no dirty pages to return")
    };
    outcome = outcome
        .with("resident_before_bytes", before.resident_bytes)
        .with("resident_after_bytes", after.resident_bytes)
        .with("resident_released_bytes", resident_released)
        .with("purge_ms", purge_time.as_secs_f64() * 1000.0);
    if let (Some(b), Some(a), Some(r)) = (rss_before, rss_after, rss_released) {
        outcome = outcome
            .with("rss_before_bytes", b)
            .with("rss_after_bytes", a)
            .with("rss_released_bytes", r);
    }
    if let Some(decay) = decay {
        let ms = isize::try_from(decay.as_millis()).unwrap_or(isize::MAX);
        let arenas = jemalloc::set_dirty_decay_ms(ms).map_err(StrategyError::Failed)?;
        outcome = outcome
            .with("dirty_decay_ms", ms as i64)
            .with("arenas_decay_lowered", arenas);
    }
    Ok(outcome)
}

#[cfg(not(feature = "jemalloc"))]
fn purge(_decay: Option<Duration>) -> Result<Outcome, StrategyError> {
    let _ = (Instant::now, proc_self::rss_bytes);
    Err(StrategyError::Unavailable(
        "built without the `jemalloc` feature: no allocator to purge".into(),
    ))
}
