//! The built-in strategies as one table: registration ([`StrategiesConfig::all`]), validation
//! ([`StrategiesConfig::problems`]), which act inside the agent's own process, the legacy
//! variables that reach them, and every count of them iterate [`BUILTINS`].
//!
//! Adding a built-in: its module (settings with `enabled` and `trigger`, the strategy), its
//! field in [`StrategiesConfig`], and a row here.

use std::fmt;
use std::sync::Arc;

use crate::{
    CacheTrim, ConnectionReap, IntervalBackoff, MemoryPurge, StrategiesConfig, Strategy,
    TriggerSpec,
};

/// One built-in strategy.
#[derive(Clone, Copy)]
pub struct Builtin {
    /// Its name in the API, the CLI and the records (`memory-purge`).
    pub name: &'static str,
    /// Its table under `[strategies]` (`memory_purge`): its keys are `strategies.<key>.*`.
    pub key: &'static str,
    /// Whether it acts inside the agent's own process (its allocator, its registries), and so
    /// is off in sidecar mode.
    pub in_process: bool,
    /// The source documents' variable that switches it on or off (`ENABLE_GC`).
    pub legacy_enable: Option<&'static str>,
    /// The source documents' variable that sets its trigger's `above` (`MEMORY_THRESHOLD`).
    pub legacy_threshold: Option<&'static str>,
    /// Whether it is enabled in `config`.
    pub enabled: fn(&StrategiesConfig) -> bool,
    /// Whether `config` marks it `disruptive`.
    pub disruptive: fn(&StrategiesConfig) -> bool,
    /// Its trigger in `config`.
    pub trigger: fn(&StrategiesConfig) -> &TriggerSpec,
    /// Its trigger in `config`, to change.
    pub trigger_mut: fn(&mut StrategiesConfig) -> &mut TriggerSpec,
    /// The strategy `config` describes.
    pub build: fn(&StrategiesConfig) -> Arc<dyn Strategy>,
    /// The problems of its own settings (not its trigger), each under `prefix`
    /// (`strategies.<key>`).
    pub problems: fn(&StrategiesConfig, &str) -> Vec<crate::Problem>,
}

impl fmt::Debug for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builtin")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("in_process", &self.in_process)
            .finish_non_exhaustive()
    }
}

impl Builtin {
    /// `strategies.<key>`: the prefix of its keys.
    pub fn prefix(&self) -> String {
        format!("strategies.{}", self.key)
    }
}

fn no_problems(_: &StrategiesConfig, _: &str) -> Vec<crate::Problem> {
    Vec::new()
}

/// Every built-in, in registration order.
pub static BUILTINS: &[Builtin] = &[
    Builtin {
        name: MemoryPurge::NAME,
        key: "memory_purge",
        in_process: true,
        legacy_enable: Some("ENABLE_GC"),
        legacy_threshold: Some("MEMORY_THRESHOLD"),
        enabled: |c| c.memory_purge.enabled,
        disruptive: |c| c.memory_purge.disruptive,
        trigger: |c| &c.memory_purge.trigger,
        trigger_mut: |c| &mut c.memory_purge.trigger,
        build: |c| Arc::new(c.memory_purge.build()),
        problems: no_problems,
    },
    Builtin {
        name: CacheTrim::NAME,
        key: "cache_trim",
        in_process: true,
        legacy_enable: Some("ENABLE_CACHING"),
        legacy_threshold: Some("MEMORY_THRESHOLD"),
        enabled: |c| c.cache_trim.enabled,
        disruptive: |c| c.cache_trim.disruptive,
        trigger: |c| &c.cache_trim.trigger,
        trigger_mut: |c| &mut c.cache_trim.trigger,
        build: |c| Arc::new(c.cache_trim.build()),
        problems: |c, prefix| c.cache_trim.problems(prefix),
    },
    Builtin {
        name: ConnectionReap::NAME,
        key: "connection_reap",
        in_process: true,
        legacy_enable: Some("ENABLE_CONNECTION_POOLING"),
        legacy_threshold: None,
        enabled: |c| c.connection_reap.enabled,
        disruptive: |c| c.connection_reap.disruptive,
        trigger: |c| &c.connection_reap.trigger,
        trigger_mut: |c| &mut c.connection_reap.trigger,
        build: |c| Arc::new(c.connection_reap.build()),
        problems: |c, prefix| c.connection_reap.problems(prefix),
    },
    Builtin {
        name: IntervalBackoff::NAME,
        key: "interval_backoff",
        in_process: false,
        legacy_enable: None,
        legacy_threshold: Some("CPU_THRESHOLD"),
        enabled: |c| c.interval_backoff.enabled,
        disruptive: |c| c.interval_backoff.disruptive,
        trigger: |c| &c.interval_backoff.trigger,
        trigger_mut: |c| &mut c.interval_backoff.trigger,
        build: |c| Arc::new(c.interval_backoff.build()),
        problems: no_problems,
    },
];

/// The built-in named `name` (not an alias), if there is one.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row describes its own field: the strategy it builds has its name, and its keys
    /// are the ones the config serializes.
    #[test]
    fn rows_build_their_own_strategy_and_name_real_keys() {
        let config = StrategiesConfig::default();
        let json = serde_json::to_value(&config).unwrap();
        for row in BUILTINS {
            assert_eq!((row.build)(&config).name(), row.name);
            assert!(json[row.key]["trigger"].is_object(), "{}", row.key);
            assert_eq!(json[row.key]["enabled"], (row.enabled)(&config));
            assert_eq!(
                serde_json::to_value((row.trigger)(&config)).unwrap(),
                json[row.key]["trigger"]
            );
        }
        // The built-ins' tables are every key of `[strategies]` but the named kinds.
        let tables: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|key| !StrategiesConfig::NAMED_KINDS.contains(key))
            .collect();
        let mut keys: Vec<&str> = BUILTINS.iter().map(|b| b.key).collect();
        keys.sort_unstable();
        let mut tables = tables;
        tables.sort_unstable();
        assert_eq!(keys, tables);
    }
}
