//! `cache-trim` (alias `cache`): shrink every registered cache.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;
use crate::registry::{Trim, TrimReport};
use crate::signals::Signal;
use crate::strategy::{Context, Outcome, Strategy, StrategyError};
use crate::trigger::{Level, TriggerSpec};

/// Settings of `cache-trim` (`[strategies.cache_trim]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CacheTrimConfig {
    /// Whether the strategy is registered at all.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// Its runs disrupt users (sessions dropped, connections closed): `perfpilot replay`
    /// counts them apart. By default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disruptive: bool,
    /// When it runs by itself.
    pub trigger: TriggerSpec,
    /// Share of each cache evicted at WARNING (and on manual runs).
    #[serde(default = "CacheTrimConfig::default_fraction")]
    #[cfg_attr(feature = "schema", schemars(extend("exclusiveMinimum" = 0, "maximum" = 1)))]
    pub fraction: f64,
    /// Share evicted at CRITICAL.
    #[serde(default = "CacheTrimConfig::default_critical_fraction")]
    #[cfg_attr(feature = "schema", schemars(extend("exclusiveMinimum" = 0, "maximum" = 1)))]
    pub critical_fraction: f64,
}

impl CacheTrimConfig {
    /// Default `fraction`: a quarter.
    pub const DEFAULT_FRACTION: f64 = 0.25;
    /// Default `critical_fraction`: a half.
    pub const DEFAULT_CRITICAL_FRACTION: f64 = 0.5;

    fn default_fraction() -> f64 {
        Self::DEFAULT_FRACTION
    }

    fn default_critical_fraction() -> f64 {
        Self::DEFAULT_CRITICAL_FRACTION
    }

    /// The strategy these settings describe.
    pub fn build(&self) -> CacheTrim {
        CacheTrim {
            fraction: self.fraction,
            critical_fraction: self.critical_fraction,
        }
    }

    /// Every problem with the settings, each naming its key under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("fraction", self.fraction),
            ("critical_fraction", self.critical_fraction),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                problems.push(Problem::new(
                    format!("{prefix}.{key}"),
                    value,
                    "must be in (0, 1]",
                ));
            }
        }
        problems
    }
}

impl Default for CacheTrimConfig {
    fn default() -> Self {
        CacheTrimConfig {
            enabled: true,
            disruptive: false,
            trigger: TriggerSpec::new(Signal::MemoryUsage, 0.8).critical(0.9),
            fraction: Self::DEFAULT_FRACTION,
            critical_fraction: Self::DEFAULT_CRITICAL_FRACTION,
        }
    }
}

/// Expires stale entries of every registered cache, then evicts a fraction of what is left.
#[derive(Debug, Clone)]
pub struct CacheTrim {
    fraction: f64,
    critical_fraction: f64,
}

impl CacheTrim {
    /// The strategy's name.
    pub const NAME: &'static str = "cache-trim";
}

impl Default for CacheTrim {
    fn default() -> Self {
        CacheTrimConfig::default().build()
    }
}

#[async_trait]
impl Strategy for CacheTrim {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn aliases(&self) -> &[&str] {
        &["cache"]
    }

    fn kind(&self) -> &str {
        "built-in"
    }

    fn acts_on(&self) -> String {
        "the caches registered with the agent".to_owned()
    }

    fn description(&self) -> &str {
        "expire stale entries, then evict a fraction of every registered cache"
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        let caches = &ctx.registry.caches;
        if caches.is_empty() {
            return Ok(Outcome::nothing_to_do("no caches registered").with("caches", 0));
        }
        let fraction = if ctx.level == Level::Critical {
            self.critical_fraction
        } else {
            self.fraction
        };
        // `Trim` is synchronous and may block (a moka eviction listener archiving what is
        // evicted, say): keep it off the runtime's worker threads.
        let registry = ctx.registry.clone();
        let (total, per_cache) =
            tokio::task::spawn_blocking(move || trim_all(&registry.caches, fraction))
                .await
                .map_err(|e| StrategyError::Failed(format!("trimming caches: {e}")))?;
        let summary = format!(
            "trimmed {} entries from {} caches (fraction {fraction})",
            total.entries_removed,
            caches.len()
        );
        let outcome = if total.entries_removed > 0 {
            Outcome::acted(summary)
        } else {
            Outcome::nothing_to_do(summary)
        };
        Ok(outcome
            .with("caches", caches.len())
            .with("fraction", fraction)
            .with("entries_trimmed", total.entries_removed)
            .with("bytes_freed", total.bytes_freed)
            .with("per_cache", per_cache))
    }
}

/// Expires, then evicts `fraction` of, every cache; returns the total and a report per cache.
fn trim_all(
    caches: &[(String, std::sync::Arc<dyn Trim>)],
    fraction: f64,
) -> (TrimReport, serde_json::Map<String, serde_json::Value>) {
    let mut total = TrimReport::default();
    let mut per_cache = serde_json::Map::new();
    for (name, cache) in caches {
        // Expire before the first measurement: a cache may drop stale entries while it
        // measures (moka does), and those must count as expired, not vanish unreported.
        let expired = cache.expire();
        let fresh = cache.size();
        let evicted = cache.evict(fraction);
        let after = cache.size();
        let report = expired.add(evicted);
        per_cache.insert(
            name.clone(),
            serde_json::json!({
                "entries_before": fresh.entries + expired.entries_removed,
                "entries_after": after.entries,
                "entries_removed": report.entries_removed,
                "entries_expired": expired.entries_removed,
                "entries_evicted": evicted.entries_removed,
                "bytes_freed": report.bytes_freed,
                "bytes_after": after.bytes,
            }),
        );
        total = total.add(report);
    }
    (total, per_cache)
}
