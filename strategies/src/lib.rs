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
//! | [`webhook`](Webhook), named | | a sidecar target's admin URL: a JSON request, with retries |
//! | [`signal`](SendSignal), named | | a sidecar target's processes: a signal such as `SIGUSR1` |
//! | [`command`](RunCommand), named | | a program run with a timeout; its exit status is the result |
//!
//! The built-ins exist once each; the sidecar strategies (`webhook`, `signal`, `command`) exist
//! as many times as configured, each under its own name (`[strategies.webhook.NAME]`), which is
//! the name they answer to in the API, the CLI and the records. Each acts on the sidecar target
//! through the target's own hooks.
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
//!     targets: Vec::new(),
//!     cause: Cause::default(),
//! };
//! let outcome = IntervalBackoff.run(ctx.clone()).await.unwrap();
//! assert_eq!(outcome.report["interval_ms"], 2000);
//! // The verdict; the agent applies it.
//! assert_eq!(outcome.interval, Some(Duration::from_secs(2)));
//! assert_eq!(ctx.interval.current(), Duration::from_secs(1));
//! # }
//! ```
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_code)]

pub mod builtins;
pub mod cache_trim;
pub mod command;
pub mod connection_reap;
pub mod duration;
pub mod fast_watch;
pub mod interval_backoff;
#[cfg(feature = "jemalloc")]
pub mod jemalloc;
pub mod memory_purge;
#[cfg(feature = "moka")]
pub mod moka_cache;
pub mod problem;
pub mod proc_self;
pub mod registry;
pub mod secret;
pub mod send_signal;
pub mod signals;
pub mod snapshot;
pub mod strategy;
mod sys;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod trigger;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use builtins::BUILTINS;

/// Re-exported so that implementing [`Strategy`] needs no extra dependency.
pub use async_trait::async_trait;

pub use cache_trim::{CacheTrim, CacheTrimConfig};
pub use command::{CommandConfig, RunCommand};
pub use connection_reap::{ConnectionReap, ConnectionReapConfig};
pub use interval_backoff::{IntervalBackoff, IntervalBackoffConfig};
pub use memory_purge::{MemoryPurge, MemoryPurgeConfig};
#[cfg(feature = "moka")]
pub use moka_cache::WeighedInBytes;
pub use problem::{Origin, Problem};
pub use registry::{CacheSize, Reap, ReapPolicy, ReapReport, Registry, Trim, TrimReport};
pub use secret::redact_url;
pub use send_signal::{SendSignal, SignalConfig};
pub use signals::Signal;
pub use snapshot::{
    AllocatorStats, LatencyStats, MemoryLimitSource, MemoryUsageSource, Pressure, PressureKind,
    PressureLine, PressureResource, PressureSet, PressureWindow, ResourcePressure, RuntimeStats,
    Snapshot,
};
pub use strategy::{Cause, Context, IntervalControl, Outcome, RunKind, Strategy, StrategyError};
pub use trigger::{BaselineSpec, Level, PredictSpec, TriggerSpec};
pub use webhook::{Webhook, WebhookConfig};

/// A strategy ready to register: the strategy and the trigger that runs it by itself.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The strategy.
    pub strategy: Arc<dyn Strategy>,
    /// When it runs automatically.
    pub trigger: TriggerSpec,
}

/// The strategies' settings: the `[strategies]` table of the config file, and the one place
/// strategies are registered by name.
///
/// The built-ins have a table each; the sidecar strategies have a table of named instances
/// per kind:
///
/// ```
/// use perfpilot_strategies::StrategiesConfig;
///
/// let config: StrategiesConfig = serde_json::from_str(r#"{
///     "webhook": {"cache-trim-hook": {
///         "url": "http://127.0.0.1:8080/admin/cache/trim",
///         "body": {"fraction": 0.25},
///         "trigger": {"signal": "memory_usage", "above": 0.8}
///     }}
/// }"#).unwrap();
/// assert!(config.problems(std::time::Duration::from_secs(1)).is_empty());
/// let names: Vec<_> = config.build().iter().map(|r| r.strategy.name().to_owned()).collect();
/// assert_eq!(names.last().map(String::as_str), Some("cache-trim-hook"));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// `webhook` instances by name (`[strategies.webhook.NAME]`); by default none.
    pub webhook: BTreeMap<String, WebhookConfig>,
    /// `signal` instances by name (`[strategies.signal.NAME]`); by default none.
    pub signal: BTreeMap<String, SignalConfig>,
    /// `command` instances by name (`[strategies.command.NAME]`); by default none.
    pub command: BTreeMap<String, CommandConfig>,
}

impl StrategiesConfig {
    /// The tables of named instances under `[strategies]`: `webhook`, `signal`, `command`.
    pub const NAMED_KINDS: [&'static str; 3] = [Webhook::KIND, SendSignal::KIND, RunCommand::KIND];

    /// Every named instance, enabled or not, in registration order.
    fn named(&self) -> Vec<Instance<'_>> {
        fn instance<'a>(
            kind: &'static str,
            name: &'a str,
            (enabled, disruptive): (bool, bool),
            strategy: impl FnOnce(&TriggerSpec) -> Arc<dyn Strategy> + 'a,
            trigger: Option<&'a TriggerSpec>,
            problems: impl FnOnce(&str) -> Vec<Problem>,
        ) -> Instance<'a> {
            let key = format!("strategies.{kind}.{name}");
            Instance {
                name,
                enabled,
                disruptive,
                strategy: Box::new(strategy),
                trigger,
                problems: problems(&key),
                key,
            }
        }
        let webhooks = self.webhook.iter().map(|(name, c)| {
            instance(
                Webhook::KIND,
                name,
                (c.enabled, c.disruptive),
                |_: &TriggerSpec| Arc::new(c.build(name)),
                c.trigger.as_ref(),
                |key| c.problems(key),
            )
        });
        let signals = self.signal.iter().map(|(name, c)| {
            instance(
                SendSignal::KIND,
                name,
                (c.enabled, c.disruptive),
                |_: &TriggerSpec| Arc::new(c.build(name)),
                c.trigger.as_ref(),
                |key| c.problems(key),
            )
        });
        let commands = self.command.iter().map(|(name, c)| {
            instance(
                RunCommand::KIND,
                name,
                (c.enabled, c.disruptive),
                |trigger: &TriggerSpec| Arc::new(c.build_for(name, trigger.signal)),
                c.trigger.as_ref(),
                |key| c.problems(key),
            )
        });
        webhooks.chain(signals).chain(commands).collect()
    }

    /// Every configured strategy with whether it is enabled: the built-ins in a fixed order,
    /// then the named `webhook`, `signal` and `command` instances, each kind in name order.
    ///
    /// A named instance without a trigger is left out here; see
    /// [`StrategiesConfig::all_with`].
    pub fn all(&self) -> Vec<(bool, Registered)> {
        self.all_with(|_| None)
    }

    /// As [`StrategiesConfig::all`], but a named instance without a trigger of its own (a
    /// rung of a budget's ladder) gets `untriggered(name)`; when that is `None` too it is left
    /// out (it could never run by itself, and the agent's validation refuses it).
    pub fn all_with(
        &self,
        untriggered: impl Fn(&str) -> Option<TriggerSpec>,
    ) -> Vec<(bool, Registered)> {
        let builtins = BUILTINS.iter().map(|b| {
            (
                (b.enabled)(self),
                (b.build)(self),
                (b.trigger)(self).clone(),
            )
        });
        let named = self.named().into_iter().filter_map(|i| {
            let trigger = i.trigger.cloned().or_else(|| untriggered(i.name))?;
            Some((i.enabled, (i.strategy)(&trigger), trigger))
        });
        builtins
            .chain(named)
            .map(|(enabled, strategy, trigger)| (enabled, Registered { strategy, trigger }))
            .collect()
    }

    /// The names of the strategies marked `disruptive = true` (their runs disrupt users:
    /// sessions dropped, connections closed), built-ins first.
    pub fn disruptive(&self) -> Vec<String> {
        let builtins = BUILTINS
            .iter()
            .filter(|b| (b.disruptive)(self))
            .map(|b| b.name.to_owned());
        let named = self
            .named()
            .into_iter()
            .filter(|i| i.disruptive)
            .map(|i| i.name.to_owned());
        builtins.chain(named).collect()
    }

    /// The enabled strategies, each with its trigger, in the order of [`StrategiesConfig::all`].
    pub fn build(&self) -> Vec<Registered> {
        self.all()
            .into_iter()
            .filter_map(|(enabled, registered)| enabled.then_some(registered))
            .collect()
    }

    /// Every problem with the settings, each naming its full key: bad values, and named
    /// instances whose name is malformed or already taken (by a built-in's name or alias, or
    /// by an instance of another kind). `interval` is the full sampling interval (a trigger's
    /// `watch_interval` is checked against it).
    pub fn problems(&self, interval: std::time::Duration) -> Vec<Problem> {
        let mut problems = Vec::new();
        for builtin in BUILTINS {
            let prefix = builtin.prefix();
            problems
                .extend((builtin.trigger)(self).problems(&format!("{prefix}.trigger"), interval));
            problems.extend((builtin.problems)(self, &prefix));
        }

        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        for builtin in BUILTINS.iter().map(|b| (b.build)(self)) {
            let owner = format!("the built-in {}", builtin.name());
            for name in builtin.names() {
                taken.insert(name.to_ascii_lowercase(), owner.clone());
            }
        }
        for Instance {
            name,
            key,
            trigger,
            problems: own,
            ..
        } in self.named()
        {
            if let Some(problem) = name_problem(&key, name) {
                problems.push(problem);
            } else if let Some(owner) = taken.get(name) {
                problems.push(Problem::at(
                    key.clone(),
                    format!("the name {name:?} is already taken by {owner}"),
                ));
            } else {
                taken.insert(name.to_owned(), key.clone());
            }
            if let Some(trigger) = trigger {
                problems.extend(trigger.problems(&format!("{key}.trigger"), interval));
            }
            problems.extend(own);
        }
        problems
    }
}

impl StrategiesConfig {
    /// The named instances without a trigger of their own, as `(key, name)`
    /// (`("strategies.webhook.purge", "purge")`): each must be a rung of a budget.
    pub fn untriggered(&self) -> Vec<(String, String)> {
        self.named()
            .into_iter()
            .filter(|i| i.trigger.is_none())
            .map(|i| (i.key, i.name.to_owned()))
            .collect()
    }
}

/// Builds a named instance's strategy once the trigger it is registered with is known.
type BuildStrategy<'a> = Box<dyn FnOnce(&TriggerSpec) -> Arc<dyn Strategy> + 'a>;

/// One configured `webhook`, `signal` or `command` instance.
struct Instance<'a> {
    name: &'a str,
    /// `strategies.KIND.NAME`.
    key: String,
    enabled: bool,
    /// Marked `disruptive`.
    disruptive: bool,
    /// Builds the strategy (a webhook's HTTP client, say) when it is registered.
    /// Given the trigger it is registered with (its own, or a budget's for a rung).
    strategy: BuildStrategy<'a>,
    /// `None`: it runs only as a budget's rung (and manually).
    trigger: Option<&'a TriggerSpec>,
    /// The problems of its own settings (not its name or trigger), under `key`.
    problems: Vec<Problem>,
}

/// The problem with the name of the named instance at `key`, if it has one.
pub fn name_problem(key: &str, name: &str) -> Option<Problem> {
    (!is_valid_name(name)).then(|| {
        Problem::at(
            key,
            format!("{name:?} is not a valid strategy name (lowercase letters, digits and `-`, starting with a letter or digit)"),
        )
    })
}

/// `[a-z0-9][a-z0-9-]*`: the names of named strategy instances.
fn is_valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `bytes` as text (invalid UTF-8 replaced), cut to at most `limit` bytes on a character
/// boundary.
pub(crate) fn truncate_utf8(bytes: &[u8], limit: usize) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]).into_owned();
    // Cutting inside a character leaves a replacement character at the end; it may also have
    // grown the text past the limit.
    while text.len() > limit {
        text.pop();
    }
    text
}

/// Finds a strategy by name or alias (case-insensitive).
pub fn find<'a>(strategies: &'a [Registered], name: &str) -> Option<&'a Registered> {
    strategies.iter().find(|r| r.strategy.answers_to(name))
}

fn default_true() -> bool {
    true
}

/// Default `excerpt_bytes` of the `command` and `webhook` strategies: how much of a program's
/// output or a hook's answer a record keeps (records are served by the API's reads).
pub const DEFAULT_EXCERPT_BYTES: usize = 256;
/// Largest `excerpt_bytes` allowed.
pub const MAX_EXCERPT_BYTES: usize = 64 * 1024;

fn default_excerpt_bytes() -> usize {
    DEFAULT_EXCERPT_BYTES
}

/// The problem with an `excerpt_bytes` value, if any, naming `key`.
fn excerpt_problem(key: &str, bytes: usize) -> Option<Problem> {
    (bytes > MAX_EXCERPT_BYTES)
        .then(|| Problem::new(key, bytes, format!("must be at most {MAX_EXCERPT_BYTES}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_answer_to_their_names_and_aliases() {
        let all = StrategiesConfig::default().build();
        assert_eq!(all.len(), BUILTINS.len());
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

    fn sidecar_config() -> StrategiesConfig {
        serde_json::from_value(serde_json::json!({
            "webhook": {"cache-trim-hook": {
                "url": "http://127.0.0.1:8080/admin/cache/trim",
                "body": {"fraction": 0.25},
                "trigger": {"signal": "memory_usage", "above": 0.8}
            }},
            "signal": {"reload": {
                "signal": "HUP",
                "enabled": false,
                "trigger": {"signal": "memory_usage", "above": 0.9}
            }},
            "command": {"rotate-logs": {
                "program": "logrotate",
                "args": ["-f", "/etc/logrotate.conf"],
                "trigger": {"signal": "memory_usage", "above": 0.9}
            }}
        }))
        .unwrap()
    }

    #[test]
    fn a_named_instance_without_a_trigger_is_registered_only_with_one_given() {
        let config: StrategiesConfig = serde_json::from_value(serde_json::json!({
            "webhook": {"purge": {"url": "http://127.0.0.1:8080/admin/purge"}}
        }))
        .unwrap();
        assert_eq!(
            config.problems(std::time::Duration::from_secs(1)),
            Vec::<Problem>::new()
        );
        assert_eq!(
            config.untriggered(),
            [("strategies.webhook.purge".to_owned(), "purge".to_owned())]
        );
        assert!(
            find(&config.build(), "purge").is_none(),
            "no trigger: not registered"
        );
        let rung = TriggerSpec::new(Signal::MemoryUsage, 0.8);
        let all = config.all_with(|name| (name == "purge").then(|| rung.clone()));
        let (enabled, purge) = all
            .iter()
            .find(|(_, r)| r.strategy.name() == "purge")
            .unwrap();
        assert!(enabled);
        assert_eq!(purge.trigger, rung);
    }

    #[test]
    fn named_instances_follow_the_builtins_and_answer_to_their_names() {
        let config = sidecar_config();
        assert_eq!(
            config.problems(std::time::Duration::from_secs(1)),
            Vec::new()
        );
        let all = config.build();
        let names: Vec<_> = all.iter().map(|r| r.strategy.name()).collect();
        assert_eq!(
            names,
            [
                "memory-purge",
                "cache-trim",
                "connection-reap",
                "interval-backoff",
                "cache-trim-hook",
                "rotate-logs",
            ]
        );
        let hook = find(&all, "Cache-Trim-Hook").unwrap();
        assert_eq!(hook.trigger.above, 0.8);
        assert!(find(&all, "reload").is_none(), "disabled");
    }

    #[test]
    fn names_must_be_valid_and_unique() {
        let mut config = sidecar_config();
        let hook = config.webhook["cache-trim-hook"].clone();
        let command = config.command["rotate-logs"].clone();
        config.webhook.insert("Bad_Name".into(), hook.clone());
        config.webhook.insert("gc".into(), hook.clone());
        config.webhook.insert("memory-purge".into(), hook);
        config.command.insert("reload".into(), command);
        assert_eq!(
            config.problems(std::time::Duration::from_secs(1)).iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "strategies.webhook.Bad_Name: \"Bad_Name\" is not a valid strategy name (lowercase letters, digits and `-`, starting with a letter or digit)",
                "strategies.webhook.gc: the name \"gc\" is already taken by the built-in memory-purge",
                "strategies.webhook.memory-purge: the name \"memory-purge\" is already taken by the built-in memory-purge",
                "strategies.command.reload: the name \"reload\" is already taken by strategies.signal.reload",
            ]
        );
        for (name, valid) in [
            ("a", true),
            ("9-lives", true),
            ("-x", false),
            ("", false),
            ("a.b", false),
            ("é", false),
        ] {
            assert_eq!(is_valid_name(name), valid, "{name:?}");
        }
    }

    #[test]
    fn named_instance_problems_name_their_full_key() {
        let mut config = sidecar_config();
        config.webhook.get_mut("cache-trim-hook").unwrap().url = "ftp://x".into();
        config
            .webhook
            .get_mut("cache-trim-hook")
            .unwrap()
            .trigger
            .as_mut()
            .unwrap()
            .above = 2.0;
        config.signal.get_mut("reload").unwrap().signal = "SIGNOPE".into();
        config.command.get_mut("rotate-logs").unwrap().program = String::new();
        config.command.get_mut("rotate-logs").unwrap().timeout = std::time::Duration::ZERO;
        let problems = config
            .problems(std::time::Duration::from_secs(1))
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert_eq!(problems[0], "strategies.webhook.cache-trim-hook.trigger.above = 2: must be in (0, 1] for signal memory_usage");
        assert_eq!(
            problems[1],
            "strategies.webhook.cache-trim-hook.url = \"ftp://x\": must be an http:// URL"
        );
        assert!(problems[2]
            .starts_with("strategies.signal.reload.signal = \"SIGNOPE\": unknown signal"));
        assert_eq!(
            problems[3],
            "strategies.command.rotate-logs.program = \"\": must name a program"
        );
        assert_eq!(
            problems[4],
            "strategies.command.rotate-logs.timeout = 0s: must be positive"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8(b"hello", 3), "hel");
        assert_eq!(truncate_utf8("héllo".as_bytes(), 2), "h");
        assert_eq!(truncate_utf8("héllo".as_bytes(), 3), "hé");
        assert_eq!(truncate_utf8(b"hi", 1024), "hi");
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(
            StrategiesConfig::default().problems(std::time::Duration::from_secs(1)),
            Vec::new()
        );
    }
}
