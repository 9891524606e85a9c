//! Reloading the configuration while the agent runs (SIGHUP, `POST /config/reload`,
//! `perfpilot reload`, or a change of the file with `watch_config = true`).
//!
//! A [`Reloader`] re-reads the file (the environment and the command line as they were at
//! start: variables are read once), validates it, and hands the engine its new settings and
//! strategies in one [`Reconfiguration`] command. Strategies that keep their name keep their
//! history, effectiveness, learned baseline and cooldown; a run in progress finishes under
//! the settings it started with; the HTTP listener and open `/events` streams are not
//! touched. Settings read only at start ([`RESTART_ONLY`]) keep their running values and are
//! named in the answer and the log.
//!
//! An invalid file changes nothing: the error is answered, logged, shown as `config.lastError`
//! in `/performance-metrics` and counted in `perfpilot_config_reloads_total{result="failure"}`.
//!
//! The file is watched by polling its metadata ([`WATCH_PERIOD`]), following symlinks: a
//! Kubernetes ConfigMap volume replaces its files by swapping the `..data` symlink of the
//! directory, which changes the inode the path resolves to. One `stat` a second costs about
//! 2 µs, needs no extra dependency, and behaves the same on every filesystem (inotify misses
//! changes on network and some overlay filesystems, and a ConfigMap swap is a rename of a
//! symlink in the directory, not a write to the file).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use perfpilot_strategies::Registered;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{self, Config, Loaded, Overrides};
use crate::engine::{EngineHandle, EngineSettings, Reconfiguration, StrategyChanges};
use crate::prometheus::Telemetry;
use crate::sample::TargetHandle;
use crate::wire_time::rfc3339;

/// Configuration keys (and sections) read only at start: a reload keeps their running value
/// and names them as needing a restart when the file changes them. Each with how its running
/// value is kept; docs/configuration.md's list is checked against this one.
pub const RESTART_ONLY: &[RestartOnly] = &[
    RestartOnly("api", |new, running| new.api = running.api.clone()),
    RestartOnly("log", |new, running| new.log = running.log.clone()),
    RestartOnly("target", |new, running| new.target = running.target.clone()),
    RestartOnly("probe", |new, running| new.probe = running.probe.clone()),
    RestartOnly("worker_id", |new, running| {
        new.worker_id = running.worker_id.clone()
    }),
    RestartOnly("memory_budget", |new, running| {
        new.memory_budget = running.memory_budget
    }),
    RestartOnly("shutdown_grace", |new, running| {
        new.shutdown_grace = running.shutdown_grace
    }),
    RestartOnly("recorder", |new, running| {
        new.recorder = running.recorder.clone()
    }),
    RestartOnly("state_dir", |new, running| {
        new.state_dir = running.state_dir.clone()
    }),
];

/// A key (or section) read only at start, and how a reload puts its running value back into
/// the new configuration.
#[derive(Debug, Clone, Copy)]
pub struct RestartOnly(pub &'static str, pub fn(&mut Config, &Config));

/// How often a watched configuration file's metadata is read.
pub const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Where the configuration is re-read from: the file (or `./perfpilot.toml` when none was
/// named), with the environment and the command line's values as they were at start.
#[derive(Clone)]
pub struct ConfigSource {
    file: Option<PathBuf>,
    env: HashMap<String, String>,
    overrides: Overrides,
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment holds tokens: only its size.
        f.debug_struct("ConfigSource")
            .field("file", &self.file)
            .field("env_variables", &self.env.len())
            .field("overrides", &self.overrides)
            .finish()
    }
}

impl ConfigSource {
    /// `file` (`None`: `./perfpilot.toml` if it exists now), this environment and these
    /// command-line values, all kept as they are for every reload. The default file is taken
    /// only if it exists when the source is made (at start): one written later, perhaps by
    /// another user of a shared directory, is never read.
    pub fn new(file: Option<PathBuf>, env: HashMap<String, String>, overrides: Overrides) -> Self {
        let file = file.or_else(|| {
            let default = Path::new(Config::DEFAULT_FILE);
            default.is_file().then(|| default.to_path_buf())
        });
        ConfigSource {
            file,
            env,
            overrides,
        }
    }

    /// Loads and validates the configuration from every layer, and checks what it says about
    /// this host (`config::load_exactly` with `crate::sample::host_problems`).
    pub fn load(&self) -> Result<Loaded, config::ConfigError> {
        config::load_exactly(
            self.file.as_deref(),
            &self.env,
            &self.overrides,
            &crate::sample::host_problems,
        )
    }

    /// The file a reload reads; `None`: no file (none was named and `./perfpilot.toml` did
    /// not exist at start).
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// What `config.source` shows: the file, or that there is none.
    fn describe(&self) -> String {
        match self.path() {
            Some(path) => path.display().to_string(),
            None => "defaults, environment and flags (no file)".to_owned(),
        }
    }
}

/// The configuration in force and how the last reload went: `config` in
/// `/performance-metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// When the configuration in force was loaded (RFC 3339).
    pub loaded_at: String,
    /// Where it came from: the file, or `builder` for an embedded agent.
    pub source: String,
    /// What loaded it: `start`, `SIGHUP`, `POST /config/reload`, `file change`, `builder`.
    pub reason: String,
    /// Why the last reload failed (the configuration in force stayed); null after a success.
    pub last_error: Option<String>,
    /// When the last reload failed (RFC 3339); null after a success.
    pub last_error_at: Option<String>,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Failed reloads since start.
    pub failed_reloads: u64,
}

/// What a successful reload did: the answer of `POST /config/reload`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// `configuration reloaded`.
    pub message: String,
    /// The file read.
    pub source: String,
    /// What asked for the reload.
    pub reason: String,
    /// When it took effect (RFC 3339).
    pub loaded_at: String,
    /// Every key whose value changed (dotted, e.g. `strategies.memory_purge.trigger.above`).
    pub changed: Vec<String>,
    /// Changed keys that take effect only after a restart; their running values stay.
    pub restart_required: Vec<String>,
    /// What happened to the strategies, by name.
    #[schema(value_type = Object)]
    pub strategies: StrategyChanges,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The agent was built without a file to re-read (an embedded agent given a [`Config`]).
    #[error("this agent has no configuration file to reload (it was given its configuration by its builder)")]
    NoSource,
    /// The file is unreadable or invalid: every problem, each with its key.
    #[error("{0}")]
    Invalid(String),
    /// The engine has stopped.
    #[error("the agent is shutting down")]
    Stopped,
}

/// Reloads the configuration of one agent (see the module docs). Reloads are
/// serialized: one at a time.
pub struct Reloader {
    engine: EngineHandle,
    /// Counts reloads and failed ones.
    telemetry: Arc<Telemetry>,
    source: Option<ConfigSource>,
    builder_strategies: Vec<Registered>,
    target: Option<TargetHandle>,
    worker: String,
    /// The configuration in force, restart-only values as at start. The async lock also
    /// serializes reloads.
    running: tokio::sync::Mutex<Config>,
    watch_enabled: AtomicBool,
    /// Wakes the watch task when a reload turns `watch_config` on.
    watch_changed: tokio::sync::Notify,
    status: Mutex<Arc<ConfigStatus>>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for an engine started from `config`; `builder_strategies` (registered in
    /// code, not in the file) stay registered across reloads.
    pub(crate) fn new(
        engine: EngineHandle,
        telemetry: Arc<Telemetry>,
        config: Config,
        source: Option<ConfigSource>,
        builder_strategies: Vec<Registered>,
        target: Option<TargetHandle>,
        worker: String,
    ) -> Self {
        let (described, reason) = match &source {
            Some(source) => (source.describe(), "start"),
            None => ("builder".to_owned(), "builder"),
        };
        let status = ConfigStatus {
            loaded_at: rfc3339(SystemTime::now()),
            source: described,
            reason: reason.to_owned(),
            last_error: None,
            last_error_at: None,
            reloads: 0,
            failed_reloads: 0,
        };
        Reloader {
            engine,
            telemetry,
            watch_enabled: AtomicBool::new(config.watch_config),
            watch_changed: tokio::sync::Notify::new(),
            running: tokio::sync::Mutex::new(config),
            source,
            builder_strategies,
            target,
            worker,
            status: Mutex::new(Arc::new(status)),
        }
    }

    /// The configuration status now (a cheap `Arc` clone).
    pub fn status(&self) -> Arc<ConfigStatus> {
        Arc::clone(&self.lock_status())
    }

    /// Whether the last reload failed.
    pub fn last_reload_failed(&self) -> bool {
        self.lock_status().last_error.is_some()
    }

    /// Re-reads the file and applies it (see [`Reloader::apply`]); `reason` says what asked
    /// (`SIGHUP`, `POST /config/reload`...). A failure is recorded in the status, logged and
    /// counted.
    pub async fn reload(&self, reason: &str) -> Result<ReloadReport, ReloadError> {
        let Some(source) = &self.source else {
            return Err(ReloadError::NoSource);
        };
        match source.load() {
            Ok(loaded) => self.apply(loaded.config, reason).await,
            Err(error) => Err(self.fail(reason, error.to_string())),
        }
    }

    /// Applies a new configuration: validates it, keeps the running values of
    /// [`RESTART_ONLY`] settings, and swaps the engine's settings and strategies.
    pub async fn apply(&self, config: Config, reason: &str) -> Result<ReloadReport, ReloadError> {
        if let Err(problems) = config.validate() {
            let error = config::ConfigError::Invalid(problems).to_string();
            return Err(self.fail(reason, error));
        }
        let mut running = self.running.lock().await;
        let changed = changed_keys(&running, &config);
        let restart_required: Vec<String> = changed
            .iter()
            .filter(|key| is_restart_only(key))
            .cloned()
            .collect();
        let mut config = config;
        keep_restart_only(&mut config, &running);
        let mut strategies: Vec<Registered> = config
            .strategies()
            .into_iter()
            .filter_map(|(enabled, registered)| enabled.then_some(registered))
            .collect();
        strategies.extend(self.builder_strategies.iter().cloned());
        let settings = engine_settings(&config, self.target.clone(), self.worker.clone());
        let changes = self
            .engine
            .reconfigure(Reconfiguration {
                settings,
                strategies,
            })
            .await
            .map_err(|_| ReloadError::Stopped)?;
        let was_watching = self
            .watch_enabled
            .swap(config.watch_config, Ordering::Relaxed);
        if config.watch_config && !was_watching {
            self.watch_changed.notify_one();
        }
        *running = config;
        drop(running);

        let loaded_at = rfc3339(SystemTime::now());
        let source = match &self.source {
            Some(source) => source.describe(),
            None => "builder".to_owned(),
        };
        {
            let mut status = self.lock_status();
            let reloads = status.reloads + 1;
            *status = Arc::new(ConfigStatus {
                loaded_at: loaded_at.clone(),
                source: source.clone(),
                reason: reason.to_owned(),
                last_error: None,
                last_error_at: None,
                reloads,
                failed_reloads: status.failed_reloads,
            });
        }
        self.telemetry.observe_reload(true);
        info!(
            reason,
            source = %source,
            changed = ?changed,
            added = ?changes.added,
            removed = ?changes.removed,
            retriggered = ?changes.retriggered,
            "configuration reloaded"
        );
        if !restart_required.is_empty() {
            warn!(
                keys = ?restart_required,
                "configuration reloaded, but these settings take effect only after a restart"
            );
        }
        Ok(ReloadReport {
            message: "configuration reloaded".to_owned(),
            source,
            reason: reason.to_owned(),
            loaded_at,
            changed,
            restart_required,
            strategies: changes,
        })
    }

    /// Records, logs and counts a failed reload; the running configuration stays.
    fn fail(&self, reason: &str, error: String) -> ReloadError {
        warn!(reason, %error, "configuration reload failed: the running configuration stays in force");
        {
            let mut status = self.lock_status();
            let mut next = ConfigStatus::clone(&status);
            next.last_error = Some(error.clone());
            next.last_error_at = Some(rfc3339(SystemTime::now()));
            next.failed_reloads += 1;
            *status = Arc::new(next);
        }
        self.telemetry.observe_reload(false);
        ReloadError::Invalid(error)
    }

    /// Polls the file every [`WATCH_PERIOD`] while `watch_config` is on, and reloads when the
    /// file the path resolves to changes (another inode, size or modification time). Stops
    /// when `shutdown` is cancelled. Without a file source there is nothing to watch.
    pub fn spawn_watch(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.source.as_ref()?.path()?.to_path_buf();
        let reloader = Arc::clone(self);
        // The first look now, not when the task first runs (later on a busy machine): a change
        // made once the agent has started (it announces itself after this) is a change.
        let mut seen = if reloader.watch_enabled.load(Ordering::Relaxed) {
            FileStamp::read(&path)
        } else {
            None
        };
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(WATCH_PERIOD);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if !reloader.watch_enabled.load(Ordering::Relaxed) {
                    // Not watching: no timer, no stat, until a reload turns it on. Changes
                    // made meanwhile are not replayed.
                    seen = None;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = reloader.watch_changed.notified() => continue,
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let now = FileStamp::read(&path);
                if seen.is_none() {
                    // The first look after watching starts: what the running config came from.
                    seen = now;
                    continue;
                }
                if now.is_none() || now == seen {
                    // Missing (mid-swap, or deleted): wait for it to come back.
                    continue;
                }
                // A writer may still be writing: take it once it holds still for a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if FileStamp::read(&path) != now {
                    continue;
                }
                seen = now;
                let _ = reloader.reload("file change").await;
            }
        }))
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Arc<ConfigStatus>> {
        // Nothing panics while it is held; a poisoned lock still holds a whole value.
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What identifies a version of the file the path resolves to (symlinks followed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn read(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// The engine's settings for `config`; the sidecar `target` and the `worker` label come from
/// the agent (they do not change while it runs).
pub(crate) fn engine_settings(
    config: &Config,
    target: Option<TargetHandle>,
    worker: String,
) -> EngineSettings {
    let (min_interval, calm_interval) = config.tuning.adaptive_intervals(config.interval);
    let mut interval =
        perfpilot_strategies::IntervalControl::new(config.interval, config.max_interval);
    let adaptive_sampling = config.tuning.adaptive_sampling.then(|| {
        interval = interval.clone().with_min(min_interval);
        crate::trigger::cadence::AdaptiveSampling::new(min_interval, calm_interval)
    });
    EngineSettings {
        enabled: config.enabled,
        interval,
        dry_run: config.dry_run,
        history_size: config.history_size,
        strategy_timeout: config.strategy_timeout,
        post_action_delay: config.post_action_delay,
        target,
        backoff_after_failures: config.backoff_after_failures,
        max_backoff: config.max_backoff,
        settle: config.tuning.settle,
        adaptive_cooldown: config.tuning.adaptive_cooldown,
        max_cooldown: config.tuning.max_cooldown,
        adaptive_sampling,
        worker,
        // The agent starts the fast watch and the engine keeps it across reloads.
        watch: None,
        budgets: config
            .budgets
            .iter()
            .map(|(name, budget)| (name.clone(), budget.clone()))
            .collect(),
        rung_only: config.rung_only(),
        reaction: config.tuning.reaction_tuning(),
        learned: None,
    }
}

/// Whether the key `key` (dotted) is read only at start ([`RESTART_ONLY`]).
pub(crate) fn is_restart_only(key: &str) -> bool {
    RESTART_ONLY.iter().any(|RestartOnly(prefix, _)| {
        key == *prefix
            || key
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Puts the running values of the [`RESTART_ONLY`] settings back into `config`.
fn keep_restart_only(config: &mut Config, running: &Config) {
    for RestartOnly(_, keep) in RESTART_ONLY {
        keep(config, running);
    }
}

/// Every dotted leaf key whose value differs between the two configurations (a key present
/// in only one counts), sorted. Values are compared, never shown (tokens, headers).
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let old = leaves(old);
    let new = leaves(new);
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|key| old.get(*key) != new.get(*key))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn leaves(config: &Config) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    let key = match prefix {
                        "" => key,
                        _ => format!("{prefix}.{key}"),
                    };
                    walk(&key, value, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other);
            }
        }
    }
    let mut out = BTreeMap::new();
    // A Config always serializes (durations as text, sizes as numbers).
    if let Ok(value) = serde_json::to_value(config) {
        walk("", value, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_are_whole_sections_or_exact_keys() {
        assert!(is_restart_only("api.listen"));
        assert!(is_restart_only("worker_id"));
        assert!(is_restart_only("target.pid"));
        assert!(!is_restart_only("apiary"));
        assert!(!is_restart_only("interval"));
        assert!(!is_restart_only("strategies.memory_purge.trigger.above"));
    }

    #[test]
    fn a_reload_keeps_the_running_value_of_every_restart_only_key() {
        let running = Config::default();
        let mut new = Config::default();
        new.api.listen = "127.0.0.1:1".parse().unwrap();
        new.log.level = "debug".into();
        new.target.pid = Some(42);
        new.probe.url = Some("http://127.0.0.1:1/ping".into());
        new.worker_id = Some("other".into());
        new.memory_budget = Some(1 << 20);
        new.shutdown_grace = Duration::from_secs(99);
        new.recorder.window = Duration::from_secs(120);
        new.state_dir = Some("/var/lib/perfpilot-other".into());
        let changed = changed_keys(&running, &new);
        for RestartOnly(key, _) in RESTART_ONLY {
            assert!(
                changed
                    .iter()
                    .any(|c| is_restart_only(c) && c.starts_with(key)),
                "change {key} in this test too: {changed:?}"
            );
        }
        keep_restart_only(&mut new, &running);
        assert_eq!(changed_keys(&running, &new), Vec::<String>::new());
    }

    /// docs/configuration.md names the restart-only settings as this table does: sections
    /// as `name.*`, keys as `name`.
    #[test]
    fn docs_list_the_restart_only_settings_of_the_table() {
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let names: Vec<String> = RESTART_ONLY
            .iter()
            .map(|RestartOnly(key, _)| match defaults.get(key) {
                Some(toml::Value::Table(_)) => format!("`{key}.*`"),
                _ => format!("`{key}`"),
            })
            .collect();
        let (last, first) = names.split_last().unwrap();
        let sentence = format!("{} and {last} need a restart", first.join(", "));
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/configuration.md"
        ))
        .unwrap();
        let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            doc.contains(&sentence),
            "docs/configuration.md should say: {sentence}"
        );
    }

    #[test]
    fn changed_keys_name_leaves_and_never_values() {
        let old = Config::default();
        let mut new = Config::default();
        new.strategies.memory_purge.trigger.above = 0.5;
        new.api.token = Some("s3cret-token".into());
        new.interval = Duration::from_secs(2);
        let changed = changed_keys(&old, &new);
        assert_eq!(
            changed,
            [
                "api.token",
                "interval",
                "strategies.memory_purge.trigger.above"
            ]
        );
        assert!(changed_keys(&old, &old).is_empty());
    }
}
