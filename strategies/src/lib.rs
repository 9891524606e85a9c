//! The vocabulary of perfpilot's optimizations: the [`Snapshot`] of signals a strategy reads,
//! the [`Strategy`] trait it implements, the [`Outcome`] it reports, and the built-in
//! strategies, registered by name in one table ([`StrategiesConfig`]).
//!
//! | name | aliases | acts on |
//! |---|---|---|
//! | [`memory-purge`](MemoryPurge) | `memory`, `gc` | jemalloc: purge all arenas |
//! | [`cache-trim`](CacheTrim) | `cache` | registered [`Trim`] caches |
//! | [`connection-reap`](ConnectionReap) | `connection`, `database` | registered [`Reap`] pools |
//! | [`interval-backoff`](IntervalBackoff) | `cpu` | the agent's sampling interval |
//!
//! Optional modules, each behind a cargo feature:
//!
//! | module | feature | what it adds |
//! |---|---|---|
//! | `jemalloc` | `jemalloc` (default) | purging and reading jemalloc (without it `memory-purge` cannot act) |
//! | `moka_cache` | `moka` (default) | [`Trim`] for `moka::sync::Cache`, and `WeighedInBytes` for byte weighers |
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use perfpilot_strategies::*;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ctx = Context {
//!     snapshot: Arc::new(Snapshot::empty(SystemTime::now())),
//!     level: Level::Warning,
//!     kind: RunKind::Manual,
//!     registry: Arc::new(Registry::default()),
//!     interval: IntervalControl::new(Duration::from_secs(1), Duration::from_secs(8)),
//! };
//! let outcome = IntervalBackoff.run(ctx.clone()).await.unwrap();
//! assert_eq!(outcome.report["interval_ms"], 2000);
//! assert_eq!(ctx.interval.current(), Duration::from_secs(2));
//! # }
//! ```
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod cache_trim;
pub mod connection_reap;
pub mod duration;
pub mod interval_backoff;
#[cfg(feature = "jemalloc")]
pub mod jemalloc;
pub mod memory_purge;
#[cfg(feature = "moka")]
pub mod moka_cache;
pub mod proc_self;
pub mod snapshot;
pub mod strategy;
pub mod trigger;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Re-exported so that implementing [`Strategy`] needs no extra dependency.
pub use async_trait::async_trait;

pub use cache_trim::{CacheSize, CacheTrim, CacheTrimConfig, Trim, TrimReport};
pub use connection_reap::{ConnectionReap, ConnectionReapConfig, Reap, ReapPolicy, ReapReport};
pub use interval_backoff::{IntervalBackoff, IntervalBackoffConfig};
pub use memory_purge::{MemoryPurge, MemoryPurgeConfig};
#[cfg(feature = "moka")]
pub use moka_cache::WeighedInBytes;
pub use snapshot::{
    AllocatorStats, LatencyStats, MemoryLimitSource, RuntimeStats, Signal, Snapshot,
};
pub use strategy::{Context, IntervalControl, Outcome, Registry, RunKind, Strategy, StrategyError};
pub use trigger::{Level, TriggerSpec};

/// A strategy ready to register: the strategy and the trigger that runs it by itself.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The strategy.
    pub strategy: Arc<dyn Strategy>,
    /// When it runs automatically.
    pub trigger: TriggerSpec,
}

/// The built-in strategies' settings: the `[strategies]` table of the config file, and the
/// one place built-ins are registered by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategiesConfig {
    /// `memory-purge`.
    pub memory_purge: MemoryPurgeConfig,
    /// `cache-trim`.
    pub cache_trim: CacheTrimConfig,
    /// `connection-reap`.
    pub connection_reap: ConnectionReapConfig,
    /// `interval-backoff`.
    pub interval_backoff: IntervalBackoffConfig,
}

impl StrategiesConfig {
    /// The enabled built-ins, in a fixed order, each with its trigger.
    pub fn build(&self) -> Vec<Registered> {
        let all: [(bool, Arc<dyn Strategy>, &TriggerSpec); 4] = [
            (
                self.memory_purge.enabled,
                Arc::new(self.memory_purge.build()),
                &self.memory_purge.trigger,
            ),
            (
                self.cache_trim.enabled,
                Arc::new(self.cache_trim.build()),
                &self.cache_trim.trigger,
            ),
            (
                self.connection_reap.enabled,
                Arc::new(self.connection_reap.build()),
                &self.connection_reap.trigger,
            ),
            (
                self.interval_backoff.enabled,
                Arc::new(self.interval_backoff.build()),
                &self.interval_backoff.trigger,
            ),
        ];
        all.into_iter()
            .filter(|(enabled, _, _)| *enabled)
            .map(|(_, strategy, trigger)| Registered {
                strategy,
                trigger: trigger.clone(),
            })
            .collect()
    }

    /// Every problem with the settings, each naming its full key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(
            self.memory_purge
                .trigger
                .problems("strategies.memory_purge.trigger"),
        );
        problems.extend(
            self.cache_trim
                .trigger
                .problems("strategies.cache_trim.trigger"),
        );
        problems.extend(self.cache_trim.problems("strategies.cache_trim"));
        problems.extend(
            self.connection_reap
                .trigger
                .problems("strategies.connection_reap.trigger"),
        );
        problems.extend(self.connection_reap.problems("strategies.connection_reap"));
        problems.extend(
            self.interval_backoff
                .trigger
                .problems("strategies.interval_backoff.trigger"),
        );
        problems
    }
}

/// Finds a strategy by name or alias (case-insensitive).
pub fn find<'a>(strategies: &'a [Registered], name: &str) -> Option<&'a Registered> {
    strategies.iter().find(|r| {
        r.strategy.name().eq_ignore_ascii_case(name)
            || r.strategy
                .aliases()
                .iter()
                .any(|alias| alias.eq_ignore_ascii_case(name))
    })
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_answer_to_their_names_and_aliases() {
        let all = StrategiesConfig::default().build();
        assert_eq!(all.len(), 4);
        for (name, expected) in [
            ("memory-purge", "memory-purge"),
            ("gc", "memory-purge"),
            ("MEMORY", "memory-purge"),
            ("cache", "cache-trim"),
            ("database", "connection-reap"),
            ("connection", "connection-reap"),
            ("cpu", "interval-backoff"),
        ] {
            assert_eq!(
                find(&all, name).unwrap().strategy.name(),
                expected,
                "{name}"
            );
        }
        assert!(find(&all, "teleport").is_none());
    }

    #[test]
    fn disabled_builtins_are_not_registered() {
        let mut config = StrategiesConfig::default();
        config.cache_trim.enabled = false;
        let names: Vec<_> = config
            .build()
            .iter()
            .map(|r| r.strategy.name().to_owned())
            .collect();
        assert_eq!(
            names,
            ["memory-purge", "connection-reap", "interval-backoff"]
        );
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(StrategiesConfig::default().problems(), Vec::<String>::new());
    }
}
