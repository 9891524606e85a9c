//! The agent's configuration: what it is ([`Config`]), where it comes from ([`load`]) and
//! whether it makes sense ([`Config::validate`]).
//!
//! Layers, later wins:
//!
//! 1. built-in defaults ([`Config::default`]);
//! 2. the TOML file (`--config PATH`, or `perfpilot.toml` in the working directory if present);
//! 3. the variables of the Node.js system perfpilot replaces (`MEMORY_THRESHOLD`,
//!    `OPTIMIZATION_INTERVAL`, ... see [`LEGACY_ENV`]);
//! 4. `PERFPILOT_` variables, `__` between nested keys (`PERFPILOT_API__TOKEN`,
//!    `PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__ABOVE`);
//! 5. command-line flags ([`Overrides`]).
//!
//! Layers merge key by key: a file that sets only `[strategies.memory_purge.trigger] above`
//! keeps every other default of that trigger.
//!
//! Two ceilings follow their floor when the user did not set them: if `interval` ends up above
//! the default `max_interval`, `max_interval` is raised to it; if a trigger's `above` ends up
//! above its default `critical`, `critical` is raised to it. Their origin is then the origin of
//! the value that raised them.
//!
//! ```
//! use std::collections::HashMap;
//! use perfpilot::config::{load, Overrides};
//!
//! let env = HashMap::from([("PERFPILOT_INTERVAL".to_owned(), "2s".to_owned())]);
//! # let dir = tempfile::tempdir().unwrap();
//! # let file = dir.path().join("perfpilot.toml");
//! # std::fs::write(&file, "dry_run = true\n").unwrap();
//! let loaded = load(Some(&file), &env, &Overrides::default()).unwrap();
//! assert_eq!(loaded.config.interval, std::time::Duration::from_secs(2));
//! assert_eq!(loaded.origins["interval"].to_string(), "env PERFPILOT_INTERVAL");
//! assert!(loaded.render().contains("interval = \"2s\"  # env PERFPILOT_INTERVAL"));
//! ```

mod access;
mod api;
pub(crate) mod bytes;
mod load;
mod log;
mod probe;
mod recorder;
pub(crate) mod schema;
mod target;
mod tuning;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use perfpilot_strategies::duration;
pub use perfpilot_strategies::{Origin, Problem};
use serde::{Deserialize, Serialize};

pub use crate::budget::{AtLimit, BudgetConfig, BudgetForecast, ReactionMode, ReactionTuning};
pub use perfpilot_strategies::StrategiesConfig;

pub use api::{ApiConfig, RateLimitConfig};
pub use log::{LogConfig, LogFormat};
pub use probe::ProbeConfig;
pub use recorder::RecorderConfig;
pub use target::TargetConfig;
pub use tuning::TuningConfig;

pub(crate) use load::load_exactly;
pub use load::{load, load_from_str, ConfigError, Loaded, Overrides, LEGACY_ENV};

/// The agent's whole configuration.
///
/// In TOML every field is optional; a missing one takes its default. Durations are written
/// `"5s"`, `"250ms"` or as integer milliseconds; sizes as integer bytes or `"512MiB"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether the loop runs at all; by default `true`. Legacy variable
    /// `ENABLE_PERFORMANCE_OPTIMIZATION`.
    pub enabled: bool,
    /// Time between two samples; by default [`Config::DEFAULT_INTERVAL`], at least
    /// [`Config::MIN_INTERVAL`]. Legacy variable `OPTIMIZATION_INTERVAL` (integer ms).
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub interval: Duration,
    /// The longest the interval may grow to under `interval-backoff`; by default
    /// [`Config::DEFAULT_MAX_INTERVAL`], at least `interval`.
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub max_interval: Duration,
    /// Memory limit in bytes used for `memory_usage` when no cgroup limit applies.
    /// `None` (the default): the cgroup limit, else total RAM.
    #[serde(with = "bytes::option", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::config::bytes::json_schema")]
    pub memory_budget: Option<u64>,
    /// Evaluate and log what would run, without acting; by default `false`.
    pub dry_run: bool,
    /// Optimization records kept; by default [`Config::DEFAULT_HISTORY_SIZE`], in
    /// `1..=`[`Config::MAX_HISTORY_SIZE`].
    #[schemars(range(min = 1, max = Config::MAX_HISTORY_SIZE))]
    pub history_size: usize,
    /// A strategy run taking longer is abandoned and recorded as failed; by default
    /// [`Config::DEFAULT_STRATEGY_TIMEOUT`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub strategy_timeout: Duration,
    /// After any automatic run, no other automatic run for this long; by default zero.
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub post_action_delay: Duration,
    /// After this many consecutive failed automatic runs, a strategy's automatic runs pause:
    /// for its trigger's cooldown (at least 1 s), doubled with every further failure, up to
    /// `max_backoff`. A success or a manual run ends the pause. By default
    /// [`Config::DEFAULT_BACKOFF_AFTER_FAILURES`]; `0` never pauses.
    pub backoff_after_failures: u32,
    /// The longest pause of a failing strategy; by default [`Config::DEFAULT_MAX_BACKOFF`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub max_backoff: Duration,
    /// On SIGTERM or SIGINT, how long a running optimization may go on finishing before the
    /// agent exits without it; by default [`Config::DEFAULT_SHUTDOWN_GRACE`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub shutdown_grace: Duration,
    /// Reload the configuration when the file changes (its metadata is read every second,
    /// symlinks followed, so a Kubernetes ConfigMap's symlink swap counts); by default
    /// `false`. SIGHUP and `POST /config/reload` reload either way. See `crate::reload`.
    pub watch_config: bool,
    /// The name this agent reports as `workerId` and as the `worker` label of its metrics;
    /// `None` (the default): `<hostname>-<pid>` (see `crate::worker`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The HTTP API (`[api]`).
    pub api: ApiConfig,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// The process to watch in sidecar mode (`[target]`); none set: the agent's own.
    pub target: TargetConfig,
    /// The HTTP latency probe (`[probe]`).
    pub probe: ProbeConfig,
    /// The flight recorder (`[recorder]`, see [`crate::recorder`]).
    pub recorder: RecorderConfig,
    /// Where the agent keeps its recording (and learned state) across restarts, created
    /// 0700 when missing; `None` (the default): in memory only. The systemd unit sets it
    /// through `StateDirectory=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Self-tuning: effectiveness, adaptive cooldown and adaptive sampling (`[tuning]`).
    pub tuning: TuningConfig,
    /// The built-in strategies and their triggers (`[strategies]`).
    pub strategies: StrategiesConfig,
    /// Budgets with escalation ladders (`[budgets.NAME]`, see `crate::budget`); by default
    /// none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, BudgetConfig>,
}

impl Config {
    /// Default `interval`: 5 s.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    /// Smallest `interval` allowed: 10 ms.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
    /// Default `max_interval`: 60 s.
    pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(60);
    /// Default `history_size`: 50 records.
    pub const DEFAULT_HISTORY_SIZE: usize = 50;
    /// Largest `history_size` allowed.
    pub const MAX_HISTORY_SIZE: usize = 10_000;
    /// Default `strategy_timeout`: 10 s.
    pub const DEFAULT_STRATEGY_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `post_action_delay`: none.
    pub const DEFAULT_POST_ACTION_DELAY: Duration = Duration::ZERO;
    /// Default `backoff_after_failures`: 3 consecutive failures.
    pub const DEFAULT_BACKOFF_AFTER_FAILURES: u32 = 3;
    /// Default `max_backoff`: 1 h.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3600);
    /// Default `shutdown_grace`: 10 s.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Default `api.listen`.
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:9750";
    /// The file read when none is given, if it exists in the working directory.
    pub const DEFAULT_FILE: &str = "perfpilot.toml";
    /// Prefix of the configuration's environment variables; `__` separates nested keys.
    pub const ENV_PREFIX: &str = "PERFPILOT_";
    /// `PERFPILOT_` variables that are not configuration keys and are left alone (the
    /// command line's own; `PERFPILOT_CONFIG` names the file).
    pub const NON_CONFIG_ENV: &[&str] = &["PERFPILOT_CONFIG", "PERFPILOT_URL"];

    /// Every configured strategy with whether it runs here. In sidecar mode (a `[target]` is
    /// set) the built-ins that act inside the agent's own process — `memory-purge` (its
    /// allocator), `cache-trim` and `connection-reap` (its registries) — are off: the target
    /// is acted on through its own hooks (`webhook`, `signal`, `command`).
    ///
    /// A named strategy without a trigger of its own that is a rung of a budget gets the
    /// budget's signal, `goal` and `cooldown` as its trigger (shown in listings; it does not
    /// fire by itself, see [`Config::rung_only`]).
    pub fn strategies(&self) -> Vec<(bool, perfpilot_strategies::Registered)> {
        use perfpilot_strategies::builtins::builtin;
        use perfpilot_strategies::TriggerSpec;
        let sidecar = self.target.selected().is_some();
        let as_rung = |name: &str| {
            self.budgets
                .values()
                .find(|b| b.ladder.iter().any(|rung| rung.eq_ignore_ascii_case(name)))
                .map(|b| TriggerSpec::new(b.signal, b.goal).cooldown(b.cooldown))
        };
        self.strategies
            .all_with(as_rung)
            .into_iter()
            .map(|(enabled, registered)| {
                let in_process = builtin(registered.strategy.name()).is_some_and(|b| b.in_process);
                let runs_here = !(sidecar && in_process);
                (enabled && runs_here, registered)
            })
            .collect()
    }

    /// The strategies that run automatically only as rungs of a budget's ladder: the named
    /// ones without a trigger of their own, and the built-ins whose trigger is left at its
    /// default (a built-in rung fires from its trigger too only when that trigger is
    /// configured, i.e. differs from the default). Canonical names, in ladder order.
    pub fn rung_only(&self) -> Vec<String> {
        let defaults = StrategiesConfig::default().all();
        let untriggered: Vec<String> = self
            .strategies
            .untriggered()
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        let mut names: Vec<String> = Vec::new();
        for (_, registered) in self.strategies() {
            let name = registered.strategy.name().to_owned();
            let is_rung = self.budgets.values().any(|b| {
                b.ladder
                    .iter()
                    .any(|rung| registered.strategy.answers_to(rung))
            });
            let default_trigger = defaults
                .iter()
                .find(|(_, d)| d.strategy.name() == name)
                .is_some_and(|(_, d)| d.trigger == registered.trigger);
            if is_rung && (untriggered.contains(&name) || default_trigger) && !names.contains(&name)
            {
                names.push(name);
            }
        }
        names
    }

    /// Every problem of `[budgets]`: the budgets' own values, ladders naming strategies that
    /// are unknown, disabled or off in this mode, and named strategies with neither a
    /// trigger nor a place in a ladder.
    fn budget_problems(&self) -> Vec<Problem> {
        let registered = self.strategies();
        let known: Vec<&str> = registered.iter().map(|(_, r)| r.strategy.name()).collect();
        let sidecar = self.target.selected().is_some();
        let resolve = |name: &str| {
            match registered
            .iter()
            .find(|(_, r)| r.strategy.answers_to(name))
        {
            Some((true, r)) => Ok(r.strategy.name().to_owned()),
            Some((false, r)) if sidecar && self.strategy_enabled(r.strategy.name()) => Err(format!(
                "{} acts inside the agent's own process and is off in sidecar mode (a [target] is set); use a webhook, signal or command strategy",
                r.strategy.name()
            )),
            Some((false, r)) => Err(format!("{} is disabled", r.strategy.name())),
            None => Err(format!(
                "no such strategy; known: {}",
                known.join(", ")
            )),
        }
        };
        let mut problems = crate::budget::problems(&self.budgets, self.interval, resolve);
        for (key, name) in self.strategies.untriggered() {
            let is_rung = self
                .budgets
                .values()
                .any(|b| b.ladder.iter().any(|rung| rung.eq_ignore_ascii_case(&name)));
            if !is_rung {
                problems.push(Problem::at(
                    format!("{key}.trigger"),
                    "required, missing (a strategy runs by its own trigger, or as a rung of a budget's ladder)",
                ));
            }
        }
        problems
    }

    fn strategy_enabled(&self, name: &str) -> bool {
        self.strategies
            .all()
            .iter()
            .any(|(enabled, r)| *enabled && r.strategy.name() == name)
    }

    /// Every problem at once, each naming its key, its value and what is allowed (their
    /// origins are the loader's to fill in).
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let fmt = duration::format;
        let mut problems = Vec::new();
        if self.interval < Self::MIN_INTERVAL {
            problems.push(Problem::new(
                "interval",
                fmt(self.interval),
                format!("must be at least {}", fmt(Self::MIN_INTERVAL)),
            ));
        }
        if self.max_interval < self.interval {
            problems.push(Problem::new(
                "max_interval",
                fmt(self.max_interval),
                format!("must be at least interval ({})", fmt(self.interval)),
            ));
        }
        if !(1..=Self::MAX_HISTORY_SIZE).contains(&self.history_size) {
            problems.push(Problem::new(
                "history_size",
                self.history_size,
                format!("must be in 1..={}", Self::MAX_HISTORY_SIZE),
            ));
        }
        problems.extend(Problem::unless_positive(
            "strategy_timeout",
            self.strategy_timeout,
        ));
        for (name, webhook) in &self.strategies.webhook {
            let worst = webhook.worst_case_duration();
            if worst > self.strategy_timeout {
                problems.push(Problem::new(
                    format!("strategies.webhook.{name}.timeout"),
                    format!(
                        "{} with retries = {}",
                        fmt(webhook.timeout),
                        webhook.retries
                    ),
                    format!(
                        "can take {} in all, longer than strategy_timeout = {}; lower them or \
                         raise strategy_timeout",
                        fmt(worst),
                        fmt(self.strategy_timeout)
                    ),
                ));
            }
        }
        for (name, command) in &self.strategies.command {
            if command.timeout >= self.strategy_timeout {
                problems.push(Problem::new(
                    format!("strategies.command.{name}.timeout"),
                    fmt(command.timeout),
                    format!(
                        "must be below strategy_timeout = {} (the command's own timeout kills \
                         its process group and reports it); lower it or raise strategy_timeout",
                        fmt(self.strategy_timeout)
                    ),
                ));
            }
        }
        if self.backoff_after_failures > 0 && self.max_backoff.is_zero() {
            problems.push(Problem::new(
                "max_backoff",
                fmt(self.max_backoff),
                "must be positive (or backoff_after_failures = 0)",
            ));
        }
        if self.memory_budget == Some(0) {
            problems.push(Problem::new(
                "memory_budget",
                0,
                format!("must be positive ({})", bytes::ALLOWED),
            ));
        }
        if let Some(id) = &self.worker_id {
            if id.trim().is_empty() || id.chars().any(char::is_control) {
                problems.push(Problem::new(
                    "worker_id",
                    format!("{id:?}"),
                    "must be non-empty, without control characters",
                ));
            }
        }
        problems.extend(self.api.problems());
        problems.extend(self.log.problems());
        problems.extend(self.target.problems());
        problems.extend(self.probe.problems());
        problems.extend(self.recorder.problems());
        problems.extend(self.tuning.problems(self.interval));
        problems.extend(self.strategies.problems(self.interval));
        problems.extend(self.budget_problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            interval: Self::DEFAULT_INTERVAL,
            max_interval: Self::DEFAULT_MAX_INTERVAL,
            memory_budget: None,
            dry_run: false,
            history_size: Self::DEFAULT_HISTORY_SIZE,
            strategy_timeout: Self::DEFAULT_STRATEGY_TIMEOUT,
            post_action_delay: Self::DEFAULT_POST_ACTION_DELAY,
            backoff_after_failures: Self::DEFAULT_BACKOFF_AFTER_FAILURES,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            watch_config: false,
            worker_id: None,
            api: ApiConfig::default(),
            log: LogConfig::default(),
            target: TargetConfig::default(),
            probe: ProbeConfig::default(),
            recorder: RecorderConfig::default(),
            state_dir: None,
            tuning: TuningConfig::default(),
            strategies: StrategiesConfig::default(),
            budgets: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    /// The source documents' variables that reach a built-in are the ones its row names
    /// (`legacy_enable`, `legacy_threshold`), and only those.
    #[test]
    fn legacy_variables_of_the_builtins_follow_the_builtin_table() {
        use perfpilot_strategies::builtins::BUILTINS;
        let mut expected: Vec<(&str, Vec<String>)> = Vec::new();
        for builtin in BUILTINS {
            if let Some(var) = builtin.legacy_enable {
                expected.push((var, vec![format!("{}.enabled", builtin.prefix())]));
            }
            if let Some(var) = builtin.legacy_threshold {
                let key = format!("{}.trigger.above", builtin.prefix());
                match expected.iter_mut().find(|(v, _)| *v == var) {
                    Some((_, keys)) => keys.push(key),
                    None => expected.push((var, vec![key])),
                }
            }
        }
        let mut actual: Vec<(&str, Vec<String>)> = LEGACY_ENV
            .iter()
            .filter(|(_, keys)| keys.iter().any(|k| k.starts_with("strategies.")))
            .map(|(var, keys)| (*var, keys.iter().map(|k| (*k).to_owned()).collect()))
            .collect();
        for list in [&mut expected, &mut actual] {
            for (_, keys) in list.iter_mut() {
                keys.sort();
            }
            list.sort();
        }
        assert_eq!(actual, expected);
    }

    #[test]
    fn in_process_builtins_are_off_in_sidecar_mode() {
        use perfpilot_strategies::builtins::BUILTINS;
        let mut config = Config::default();
        config.target.pid = Some(1);
        let on: Vec<String> = config
            .strategies()
            .into_iter()
            .filter(|(enabled, _)| *enabled)
            .map(|(_, r)| r.strategy.name().to_owned())
            .collect();
        let expected: Vec<&str> = BUILTINS
            .iter()
            .filter(|b| !b.in_process)
            .map(|b| b.name)
            .collect();
        assert_eq!(on, expected);
    }

    /// The problems of `config` as users read them.
    fn shown(config: &Config) -> Vec<String> {
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_webhook_that_can_outlast_strategy_timeout_is_refused() {
        use perfpilot_strategies::{Signal, TriggerSpec, WebhookConfig};
        let mut config = Config::default();
        let hook = WebhookConfig::new(
            "http://127.0.0.1:1/hook",
            TriggerSpec::new(Signal::MemoryUsage, 0.8),
        );
        config
            .strategies
            .webhook
            .insert("trim".into(), hook.clone());
        assert_eq!(config.validate(), Ok(()), "defaults fit together");
        config.strategies.webhook.insert(
            "trim".into(),
            WebhookConfig {
                timeout: Duration::from_secs(5),
                ..hook
            },
        );
        let problems = shown(&config);
        assert!(
            problems[0].starts_with("strategies.webhook.trim.timeout = 5s with retries = 2")
                && problems[0].contains("strategy_timeout = 10s"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_command_timeout_at_or_above_strategy_timeout_is_refused() {
        use perfpilot_strategies::{CommandConfig, Signal, TriggerSpec};
        let mut config = Config::default();
        let command = CommandConfig::new("true", TriggerSpec::new(Signal::MemoryUsage, 0.8));
        config
            .strategies
            .command
            .insert("rotate".into(), command.clone());
        assert_eq!(
            config.validate(),
            Ok(()),
            "the default timeouts fit together"
        );
        config.strategies.command.insert(
            "rotate".into(),
            CommandConfig {
                timeout: config.strategy_timeout,
                ..command
            },
        );
        let problems = config.validate().unwrap_err();
        assert!(
            problems[0].to_string().starts_with(
                "strategies.command.rotate.timeout = 10s: must be below strategy_timeout = 10s"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn defaults_are_the_documented_values_and_valid() {
        let config = Config::default();
        assert!(config.enabled);
        assert_eq!(config.interval, Duration::from_secs(5));
        assert_eq!(config.max_interval, Duration::from_secs(60));
        assert_eq!(config.memory_budget, None);
        assert!(!config.dry_run);
        assert_eq!(config.history_size, 50);
        assert_eq!(config.strategy_timeout, Duration::from_secs(10));
        assert_eq!(config.post_action_delay, Duration::ZERO);
        assert_eq!(config.backoff_after_failures, 3);
        assert_eq!(config.max_backoff, Duration::from_secs(3600));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(
            config.api.rate_limit,
            RateLimitConfig {
                per_minute: 10,
                burst: 10
            }
        );
        assert_eq!(config.api.request_timeout, Duration::from_secs(30));
        assert_eq!(config.worker_id, None);
        assert!(config.api.enabled);
        assert_eq!(config.api.listen, Config::DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.api.token, None);
        assert!(!config.api.insecure);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.strategies, StrategiesConfig::default());
        assert_eq!(config.target, TargetConfig::default());
        assert_eq!(config.target.selected(), None);
        assert_eq!(config.probe.url, None);
        assert_eq!(config.probe.period, Duration::from_secs(1));
        assert_eq!(config.probe.timeout, Duration::from_secs(2));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn at_most_one_target_and_an_http_probe_url() {
        let mut config = Config::default();
        config.target.pid = Some(42);
        assert_eq!(config.target.selected(), Some(Target::Pid(42)));
        config.target.port = Some(8080);
        config.target.pidfile = Some("/run/demo.pid".into());
        assert_eq!(config.target.selected(), None);
        config.probe.url = Some("https://127.0.0.1/ping".into());
        config.probe.period = Duration::ZERO;
        let problems = shown(&config);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert_eq!(
            problems[0],
            "target.pid = 42, target.pidfile = \"/run/demo.pid\", target.port = 8080: set at most one of target.pid, target.pidfile, target.port and target.cgroup"
        );
        assert!(
            problems[1]
                .starts_with("probe.url = \"https://127.0.0.1/ping\": must be an http:// URL"),
            "{problems:#?}"
        );
        assert_eq!(problems[2], "probe.period = 0s: must be at least 10ms");

        let config = Config {
            target: TargetConfig {
                port: Some(0),
                ..TargetConfig::default()
            },
            probe: ProbeConfig {
                url: Some("http://127.0.0.1:8080/ping".into()),
                ..ProbeConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(shown(&config), ["target.port = 0: must be in 1..=65535"]);
    }

    #[test]
    fn validate_reports_every_problem_with_key_value_and_what_is_allowed() {
        let mut config = Config {
            interval: Duration::ZERO,
            max_interval: Duration::ZERO,
            history_size: 0,
            strategy_timeout: Duration::ZERO,
            memory_budget: Some(0),
            ..Config::default()
        };
        config.log.level = "loud".into();
        config.api.token = Some("two words".into());
        config.strategies.memory_purge.trigger.above = 1.5;
        let problems = shown(&config);
        let expect = [
            "interval = 0s: must be at least 10ms",
            "history_size = 0: must be in 1..=10000",
            "strategy_timeout = 0s: must be positive",
            "memory_budget = 0: must be positive",
            "log.level = \"loud\": must be one of error, warn, info, debug, trace",
            "api.token = \"***\"",
            "strategies.memory_purge.trigger.above = 1.5: must be in (0, 1]",
        ];
        for expected in expect {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "no problem starting with {expected:?} in {problems:#?}"
            );
        }
        assert!(
            !problems.iter().any(|p| p.contains("two words")),
            "the token leaked"
        );

        config = Config {
            max_interval: Duration::from_secs(1),
            ..Config::default()
        };
        assert_eq!(
            shown(&config),
            ["max_interval = 1s: must be at least interval (5s)"]
        );
    }

    #[test]
    fn log_level_accepts_plain_levels_and_directives() {
        let mut log = LogConfig::default();
        for ok in ["error", "trace", "info,perfpilot=debug", "perfpilot=trace"] {
            log.level = ok.into();
            assert!(log.problems().is_empty(), "{ok}");
        }
        log.level = "INFO".into();
        assert_eq!(log.problems().len(), 1);
    }

    #[test]
    fn a_public_listen_address_needs_a_token_or_insecure() {
        let mut api = ApiConfig {
            listen: "0.0.0.0:9750".parse().unwrap(),
            ..ApiConfig::default()
        };
        assert!(api.problems()[0]
            .to_string()
            .starts_with("api.listen = 0.0.0.0:9750: a non-loopback"));
        api.insecure = true;
        assert!(api.problems().is_empty());
        api.insecure = false;
        api.token = Some("s3cret".into());
        assert!(api.problems().is_empty());
        assert!(!format!("{api:?}").contains("s3cret"));
    }

    #[test]
    fn rate_limit_backoff_and_timeouts_are_validated() {
        let mut config = Config {
            max_backoff: Duration::ZERO,
            ..Config::default()
        };
        config.api.rate_limit.burst = 0;
        config.api.request_timeout = Duration::ZERO;
        let problems = shown(&config);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("max_backoff = 0s: must be positive"));
        assert!(problems[1].starts_with("api.rate_limit.burst = 0: must be at least 1"));
        assert!(problems[2].starts_with("api.request_timeout = 0s"));
        // Turning each off makes its companion irrelevant.
        config.backoff_after_failures = 0;
        config.api.rate_limit.per_minute = 0;
        config.api.request_timeout = Duration::from_secs(1);
        assert_eq!(config.validate(), Ok(()));
    }

    fn load_budget_toml(text: &str) -> Result<Loaded, Vec<String>> {
        load_from_str(
            text,
            &std::collections::HashMap::new(),
            &Overrides::default(),
        )
        .map_err(|e| match e {
            ConfigError::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn the_sidecar_example_is_a_valid_budget_with_rung_only_strategies() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/sidecar.toml"
        ))
        .unwrap();
        let loaded = load_budget_toml(&text).unwrap();
        let budget = &loaded.config.budgets["memory"];
        assert_eq!((budget.goal, budget.limit), (0.8, 1.0));
        assert_eq!(budget.ladder.len(), 4);
        assert_eq!(budget.watch_interval, Some(Duration::from_millis(20)));
        assert_eq!(
            loaded.config.rung_only(),
            [
                "drop-demo-sessions",
                "purge-demo",
                "trim-demo-cache",
                "trim-demo-cache-hard"
            ]
        );
        // The rungs without a trigger are registered with the budget's as theirs.
        let strategies = loaded.config.strategies();
        let (enabled, purge) = strategies
            .iter()
            .find(|(_, r)| r.strategy.name() == "purge-demo")
            .unwrap();
        assert!(enabled);
        assert_eq!(
            (purge.trigger.above, purge.trigger.cooldown),
            (0.8, Duration::from_secs(5))
        );
        assert_eq!(
            loaded
                .config
                .budgets
                .values()
                .next()
                .and_then(|b| b.watch_interval),
            Some(Duration::from_millis(20))
        );
    }

    #[test]
    fn budget_problems_name_the_key_and_what_is_wrong() {
        let problems = load_budget_toml(
            "[target]\npid = 1\n             [budgets.memory]\nsignal = \"memory_usage\"\ngoal = 0.9\nlimit = 0.8\n             ladder = [\"purge\", \"teleport\", \"memory-purge\", \"PURGE\"]\ncalm = 0\n             [strategies.webhook.purge]\nurl = \"http://127.0.0.1:1/purge\"\n\
             [strategies.webhook.lonely]\nurl = \"http://127.0.0.1:1/x\"\n",
        )
        .unwrap_err();
        let expect = [
            "budgets.memory.limit = 0.8: must be at least goal (0.9)",
            "budgets.memory.calm = 0: must be at least 1 sample",
            "budgets.memory.ladder[1] = \"teleport\": no such strategy; known: memory-purge",
            "budgets.memory.ladder[2] = \"memory-purge\": memory-purge acts inside the agent's own process and is off in sidecar mode",
            "budgets.memory.ladder[3] = \"PURGE\": purge is already a rung of this ladder",
            "strategies.webhook.lonely.trigger: required, missing",
        ];
        for expected in expect {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "no problem starting with {expected:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn a_command_rung_without_a_trigger_is_told_the_budgets_signal() {
        let loaded = load_budget_toml(
            "[budgets.fds]\nsignal = \"open_fds\"\ngoal = 1000\nlimit = 2000\nladder = [\"rotate\"]\n\
             [strategies.command.rotate]\nprogram = \"true\"\n",
        )
        .unwrap();
        let strategies = loaded.config.strategies();
        let (_, rotate) = strategies
            .iter()
            .find(|(_, r)| r.strategy.name() == "rotate")
            .unwrap();
        assert_eq!(rotate.trigger.signal, perfpilot_strategies::Signal::OpenFds);
        assert!(
            format!("{:?}", rotate.strategy).contains("trigger_signal: OpenFds"),
            "{:?}",
            rotate.strategy
        );
    }

    #[test]
    fn a_builtin_rung_fires_from_its_trigger_only_when_it_is_configured() {
        let budget = "[budgets.memory]\nsignal = \"memory_usage\"\ngoal = 0.8\nlimit = 0.95\n\
                      ladder = [\"gc\", \"cache\"]\n";
        let loaded = load_budget_toml(budget).unwrap();
        assert_eq!(loaded.config.rung_only(), ["memory-purge", "cache-trim"]);
        let loaded = load_budget_toml(&format!(
            "{budget}[strategies.cache_trim.trigger]\nabove = 0.7\n"
        ))
        .unwrap();
        assert_eq!(loaded.config.rung_only(), ["memory-purge"]);
    }

    #[test]
    fn log_format_parses_and_displays() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(LogFormat::Text.to_string(), "text");
        assert!("xml"
            .parse::<LogFormat>()
            .unwrap_err()
            .contains("text or json"));
    }
}
