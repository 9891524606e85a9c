//! Building a [`Config`] from its layers, remembering where each value came from.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::ValueKind;
use perfpilot_strategies::{StrategiesConfig, TriggerSpec};

use super::{Config, LogFormat};

/// Values given on the command line (highest precedence). All optional.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`: `api.listen`.
    pub listen: Option<SocketAddr>,
    /// `--dry-run`: `dry_run = true` (`false` leaves the lower layers' value).
    pub dry_run: bool,
    /// `--log-format`: `log.format`.
    pub log_format: Option<LogFormat>,
    /// `--log-level`: `log.level`.
    pub log_level: Option<String>,
    /// `--insecure`: `api.insecure = true` (`false` leaves the lower layers' value).
    pub insecure: bool,
    /// `--worker-id`: `worker_id`.
    pub worker_id: Option<String>,
    /// `--memory-budget` (bytes): `memory_budget`.
    pub memory_budget: Option<u64>,
    /// `--interval`: `interval`.
    pub interval: Option<Duration>,
    /// `--target-pid`: `target.pid`. Any of the four target flags replaces the whole
    /// `[target]` of the lower layers.
    pub target_pid: Option<u32>,
    /// `--target-pidfile`: `target.pidfile`.
    pub target_pidfile: Option<PathBuf>,
    /// `--target-port`: `target.port`.
    pub target_port: Option<u16>,
    /// `--target-cgroup`: `target.cgroup`.
    pub target_cgroup: Option<PathBuf>,
    /// `--probe-url`: `probe.url`.
    pub probe_url: Option<String>,
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag, e.g. `--listen`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// The effective configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration, validated.
    pub config: Config,
    /// The origin of every leaf key that has a value (dotted, e.g.
    /// `strategies.memory_purge.trigger.above`).
    pub origins: BTreeMap<String, Origin>,
}

impl Loaded {
    /// For `perfpilot check-config`: one line per leaf key that has a value, sorted, each
    /// `key = value  # origin`, e.g. `interval = "5s"  # env OPTIMIZATION_INTERVAL`.
    /// `api.token` is shown as `"***"`; keys without a value (unset options) are left out.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (key, value) in leaves(&self.config) {
            let value = if key == "api.token" || is_webhook_header(&key) {
                "\"***\"".to_owned()
            } else {
                value.to_string()
            };
            let origin = self.origins.get(&key).unwrap_or(&Origin::Default);
            out.push_str(&format!("{key} = {value}  # {origin}\n"));
        }
        out
    }
}

/// `strategies.webhook.NAME.headers.HEADER`: header values are credentials, typically.
fn is_webhook_header(key: &str) -> bool {
    key.strip_prefix("strategies.webhook.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(_, rest)| rest.starts_with("headers."))
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable, or not valid TOML (the message has the line).
    #[error("configuration file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Values that do not fit: each names its key, its value, what is allowed and, where it
    /// did not come from the defaults, its source (file, variable or flag).
    #[error("invalid configuration:{}", .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid(Vec<String>),
}

/// The variables of the Node.js system perfpilot replaces, each with the keys it sets. They
/// rank below `PERFPILOT_` variables; an empty one is ignored.
pub const LEGACY_ENV: &[(&str, &[&str])] = &[
    ("ENABLE_PERFORMANCE_OPTIMIZATION", &["enabled"]),
    ("OPTIMIZATION_INTERVAL", &["interval"]),
    (
        "MEMORY_THRESHOLD",
        &[
            "strategies.memory_purge.trigger.above",
            "strategies.cache_trim.trigger.above",
        ],
    ),
    (
        "CPU_THRESHOLD",
        &["strategies.interval_backoff.trigger.above"],
    ),
    ("ENABLE_GC", &["strategies.memory_purge.enabled"]),
    (
        "ENABLE_CONNECTION_POOLING",
        &["strategies.connection_reap.enabled"],
    ),
    ("ENABLE_CACHING", &["strategies.cache_trim.enabled"]),
    ("LOG_LEVEL", &["log.level"]),
];

/// Builds the config: defaults < TOML file < legacy env vars < `PERFPILOT_` env < overrides,
/// then validates.
///
/// `file`: `Some(path)`: that file must exist; `None`: `./perfpilot.toml` if it exists, else
/// no file. `env`: the environment to read (`std::env::vars().collect()` in production); the
/// process environment is not read here.
///
/// Every problem found is reported at once in [`ConfigError::Invalid`]; a file that cannot be
/// read or parsed is [`ConfigError::File`].
pub fn load(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    load_with_default_file(file, Path::new(Config::DEFAULT_FILE), env, overrides)
}

/// Like [`load`], with the TOML file's text given directly (no file is read, not even
/// `./perfpilot.toml`); its values' origin is the file [`INLINE_FILE`]. For embedding and for
/// the fuzz target: any text gives `Ok` or a [`ConfigError`], never a panic.
pub fn load_from_str(
    toml: &str,
    env: &HashMap<String, String>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let path = Path::new(INLINE_FILE);
    let mut problems = Vec::new();
    let settings = parse_toml(toml, path, &mut problems)?;
    load_settings(settings, problems, env, overrides)
}

/// The name [`load_from_str`] gives its text in origins and messages.
pub const INLINE_FILE: &str = "(inline TOML)";

/// One value from one layer, at one dotted key.
#[derive(Debug, Clone)]
struct Setting {
    key: String,
    value: ValueKind,
    /// The value as the user wrote it, for messages.
    written: String,
    origin: Origin,
    /// Checked for unknown keys only, not merged (an empty TOML table).
    check_only: bool,
    /// For a named strategy instance (`strategies.webhook.NAME`), set as one value: the table
    /// as written, for messages and origins.
    instance: Option<toml::Table>,
}

impl Setting {
    /// The keys this setting gives a value to.
    fn keys(&self) -> Vec<String> {
        match &self.instance {
            None => vec![self.key.clone()],
            Some(table) => {
                let mut leaves = Vec::new();
                flatten_toml(
                    &self.key,
                    toml::Value::Table(table.clone()),
                    &self.origin,
                    &mut leaves,
                    &mut Vec::new(),
                );
                leaves
                    .into_iter()
                    .filter(|leaf| !leaf.check_only)
                    .map(|leaf| leaf.key)
                    .collect()
            }
        }
    }

    /// The named instance this (env) setting reaches into, if any: `strategies.webhook.NAME`
    /// for `strategies.webhook.NAME.retries`.
    fn is_inside(&self, instance: &Setting) -> bool {
        instance.instance.is_some()
            && self
                .key
                .strip_prefix(&instance.key)
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

fn load_with_default_file(
    file: Option<&Path>,
    default_file: &Path,
    env: &HashMap<String, String>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let mut problems = Vec::new();
    let settings = match file {
        Some(path) => read_file(path, &mut problems)?,
        None if default_file.is_file() => read_file(default_file, &mut problems)?,
        None => Vec::new(),
    };
    load_settings(settings, problems, env, overrides)
}

fn load_settings(
    mut settings: Vec<Setting>,
    mut problems: Vec<String>,
    env: &HashMap<String, String>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    legacy_settings(env, &mut settings, &mut problems);
    prefixed_settings(env, &mut settings, &mut problems);

    // Each value on its own over the defaults: every bad key or value is reported at once,
    // attributed to the variable or file it came from. A named strategy instance is one value;
    // a variable reaching into one is checked over it.
    let defaults = config::Config::try_from(&Config::default())
        .expect("the defaults serialize into a config tree");
    for setting in &settings {
        let mut group: Vec<Setting> = settings
            .iter()
            .filter(|instance| setting.is_inside(instance))
            .cloned()
            .collect();
        group.push(setting.clone());
        if let Err(error) = merge(&defaults, &group) {
            problems.push(describe_setting(setting, error));
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let mut config =
        merge(&defaults, &settings).map_err(|error| ConfigError::Invalid(vec![describe(error)]))?;

    let mut origins: BTreeMap<String, Origin> = leaves(&config)
        .into_keys()
        .map(|key| (key, Origin::Default))
        .collect();
    for setting in settings.into_iter().filter(|s| !s.check_only) {
        for key in setting.keys() {
            origins.insert(key, setting.origin.clone());
        }
    }
    apply_overrides(&mut config, &mut origins, overrides);
    raise_unset_ceilings(&mut config, &mut origins);

    config.validate().map_err(|problems| {
        let keys: Vec<String> = problems.iter().map(|p| problem_key(p).to_owned()).collect();
        ConfigError::Invalid(
            problems
                .into_iter()
                .filter(|problem| !follows_from_another(problem_key(problem), &keys, &origins))
                .map(|problem| with_origin(problem, &origins))
                .collect(),
        )
    })?;
    Ok(Loaded { config, origins })
}

fn read_file(path: &Path, problems: &mut Vec<String>) -> Result<Vec<Setting>, ConfigError> {
    let text = fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse_toml(&text, path, problems)
}

fn parse_toml(
    text: &str,
    path: &Path,
    problems: &mut Vec<String>,
) -> Result<Vec<Setting>, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string().trim_end().to_owned()))?;
    let origin = Origin::File(path.to_path_buf());
    let mut settings = Vec::new();
    flatten_toml(
        "",
        toml::Value::Table(table),
        &origin,
        &mut settings,
        problems,
    );
    Ok(settings)
}

/// One setting per leaf, keyed by its dotted path, except that a named strategy instance
/// (`[strategies.webhook.NAME]`) is one setting holding its whole table: it is only complete
/// as a whole, and its maps (`body`, `headers`, `env`) may have keys that are not paths
/// (`"X-Request.Id"`).
fn flatten_toml(
    prefix: &str,
    value: toml::Value,
    origin: &Origin,
    out: &mut Vec<Setting>,
    problems: &mut Vec<String>,
) {
    // A budget (`[budgets.NAME]`) is complete only as a whole too.
    let named_kind = prefix == "budgets"
        || prefix
            .strip_prefix("strategies.")
            .is_some_and(|kind| StrategiesConfig::NAMED_KINDS.contains(&kind));
    match value {
        toml::Value::Table(table) if !table.is_empty() || prefix.is_empty() => {
            for (key, value) in table {
                let full = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value {
                    toml::Value::Table(instance) if named_kind => {
                        if !is_path_segment(&key) {
                            problems.push(format!(
                                "{prefix}.{key:?}: {key:?} is not a valid {} name (lowercase letters, digits and `-`, starting with a letter or digit) (from {origin})",
                                if prefix == "budgets" { "budget" } else { "strategy" }
                            ));
                            continue;
                        }
                        out.push(Setting {
                            key: full,
                            written: toml::Value::Table(instance.clone()).to_string(),
                            check_only: false,
                            value: toml_to_kind(toml::Value::Table(instance.clone())),
                            origin: origin.clone(),
                            instance: Some(instance),
                        });
                    }
                    value => flatten_toml(&full, value, origin, out, problems),
                }
            }
        }
        value => out.push(Setting {
            key: prefix.to_owned(),
            written: value.to_string(),
            check_only: matches!(&value, toml::Value::Table(_)),
            value: toml_to_kind(value),
            origin: origin.clone(),
            instance: None,
        }),
    }
}

/// What the config crate accepts as one segment of a key path.
fn is_path_segment(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn toml_to_kind(value: toml::Value) -> ValueKind {
    match value {
        toml::Value::String(s) => ValueKind::String(s),
        toml::Value::Integer(i) => ValueKind::I64(i),
        toml::Value::Float(f) => ValueKind::Float(f),
        toml::Value::Boolean(b) => ValueKind::Boolean(b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(items) => ValueKind::Array(
            items
                .into_iter()
                .map(|item| toml_to_kind(item).into())
                .collect(),
        ),
        toml::Value::Table(table) => ValueKind::Table(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_kind(v).into()))
                .collect(),
        ),
    }
}

fn legacy_settings(
    env: &HashMap<String, String>,
    settings: &mut Vec<Setting>,
    problems: &mut Vec<String>,
) {
    for (name, keys) in LEGACY_ENV {
        let Some(raw) = env.get(*name).filter(|raw| !raw.trim().is_empty()) else {
            continue;
        };
        let text = raw.trim();
        let parsed = match *name {
            "OPTIMIZATION_INTERVAL" => text
                .parse::<u64>()
                .map(ValueKind::U64)
                .map_err(|_| "must be integer milliseconds"),
            "MEMORY_THRESHOLD" | "CPU_THRESHOLD" => text
                .parse::<f64>()
                .map(ValueKind::Float)
                .map_err(|_| "must be a number in (0, 1]"),
            "LOG_LEVEL" => Ok(ValueKind::String(legacy_log_level(text))),
            _ => parse_bool(text)
                .map(ValueKind::Boolean)
                .ok_or("must be true or false"),
        };
        match parsed {
            Ok(value) => settings.extend(keys.iter().map(|key| Setting {
                key: (*key).to_owned(),
                value: value.clone(),
                written: format!("{raw:?}"),
                origin: Origin::Env((*name).to_owned()),
                check_only: false,
                instance: None,
            })),
            Err(allowed) => problems.push(format!(
                "{name} = {raw:?}: {allowed} (legacy variable for {})",
                keys.join(", ")
            )),
        }
    }
}

/// The Node.js system's logger (winston) levels, mapped onto tracing's.
fn legacy_log_level(level: &str) -> String {
    let level = level.to_ascii_lowercase();
    match level.as_str() {
        "verbose" | "http" => "debug".to_owned(),
        "silly" => "trace".to_owned(),
        "warning" => "warn".to_owned(),
        _ => level,
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn prefixed_settings(
    env: &HashMap<String, String>,
    settings: &mut Vec<Setting>,
    problems: &mut Vec<String>,
) {
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(name, _)| {
            name.starts_with(Config::ENV_PREFIX) && !Config::NON_CONFIG_ENV.contains(&name.as_str())
        })
        .collect();
    vars.sort();
    for (name, value) in vars {
        let segments: Vec<String> = name[Config::ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            problems.push(format!(
                "{name}: not a configuration variable (write {}KEY, with `__` between nested keys, e.g. PERFPILOT_API__LISTEN)",
                Config::ENV_PREFIX
            ));
            continue;
        }
        // Values stay strings: the config crate converts them when the field wants a number
        // or a bool, and a string field (a token such as "007") keeps them as written.
        settings.push(Setting {
            key: segments.join("."),
            value: ValueKind::String(value.clone()),
            written: format!("{value:?}"),
            origin: Origin::Env(name.clone()),
            check_only: false,
            instance: None,
        });
    }
}

/// The defaults with `settings` laid over them in order (later wins), deserialized.
fn merge(defaults: &config::Config, settings: &[Setting]) -> Result<Config, config::ConfigError> {
    let mut latest: BTreeMap<&str, &Setting> = BTreeMap::new();
    for setting in settings {
        latest.insert(&setting.key, setting);
    }
    let mut builder = config::Config::builder().add_source(defaults.clone());
    for (key, setting) in latest {
        builder = builder.set_override(key, setting.value.clone())?;
    }
    builder.build()?.try_deserialize()
}

fn describe_setting(setting: &Setting, error: config::ConfigError) -> String {
    if let Some(table) = &setting.instance {
        return describe_instance_error(&setting.key, table, &setting.origin, error);
    }
    let Setting {
        key,
        written,
        origin,
        value,
        ..
    } = setting;
    let mut why = describe(error);
    if why.contains("does not have variant constructor") {
        if let ValueKind::String(text) = value {
            why = variant_error(key, text).unwrap_or(why);
        }
    }
    if let Some(rest) = why.strip_prefix("unknown field `") {
        let expected = rest.split_once("`, ").map_or("", |(_, expected)| expected);
        return format!("{key} = {written}: unknown key (from {origin}); {expected}");
    }
    format!("{key} = {written}: {why} (from {origin})")
}

/// A problem inside a named strategy instance, at the key where it is: `key = value: why`,
/// or `key: why` for a key that is missing.
fn describe_instance_error(
    instance_key: &str,
    table: &toml::Table,
    origin: &Origin,
    error: config::ConfigError,
) -> String {
    let at = error_key(&error);
    let missing = matches!(error, config::ConfigError::NotFound(_));
    let mut why = describe(error);
    if let (Some(at), true) = (&at, why.contains("does not have variant constructor")) {
        let written = written_at(instance_key, table, at);
        if let Some(toml::Value::String(text)) = written {
            why = variant_error(at, text).unwrap_or(why);
        }
    }
    let key = at.as_deref().unwrap_or(instance_key);
    if missing {
        return format!("{key}: required, missing (from {origin})");
    }
    if let Some(rest) = why.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once("`, ").unwrap_or((rest, ""));
        let field = field.trim_end_matches('`');
        return format!("{key}.{field}: unknown key (from {origin}); {expected}");
    }
    match written_at(instance_key, table, key) {
        Some(value) if key != instance_key => format!("{key} = {value}: {why} (from {origin})"),
        _ => format!("{key}: {why} (from {origin})"),
    }
}

/// The key a config crate error is about, where it says.
fn error_key(error: &config::ConfigError) -> Option<String> {
    match error {
        config::ConfigError::NotFound(key) => Some(key.clone()),
        config::ConfigError::Type { key, .. } => key.clone(),
        config::ConfigError::At { key, error, .. } => key.clone().or_else(|| error_key(error)),
        _ => None,
    }
}

/// The value written at dotted `key` inside the instance table at `instance_key`.
fn written_at<'a>(
    instance_key: &str,
    table: &'a toml::Table,
    key: &str,
) -> Option<&'a toml::Value> {
    let path = key.strip_prefix(instance_key)?.strip_prefix('.')?;
    let mut segments = path.split('.');
    let mut value = table.get(segments.next()?)?;
    for segment in segments {
        value = value.as_table()?.get(segment)?;
    }
    Some(value)
}

/// serde's own message for a bad enum value, which lists the variants allowed (the config
/// crate's does not).
fn variant_error(key: &str, text: &str) -> Option<String> {
    use serde::de::IntoDeserializer;
    use serde::Deserialize;

    fn error_of<T: for<'de> Deserialize<'de>>(text: &str) -> Option<String> {
        let deserializer: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            text.into_deserializer();
        T::deserialize(deserializer).err().map(|e| e.to_string())
    }
    if key == "log.format" {
        error_of::<LogFormat>(text)
    } else if key.ends_with(".signal") {
        error_of::<perfpilot_strategies::Signal>(text)
    } else {
        None
    }
}

/// The config crate's error without the key and origin it appends (the caller names them).
fn describe(error: config::ConfigError) -> String {
    match error {
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!(
            "invalid type: {unexpected}, expected {}",
            expected
                .replace("an signed", "a signed")
                .replace(" u64 bit", " 64 bit")
        ),
        config::ConfigError::At { error, .. } => describe(*error),
        config::ConfigError::NotFound(key) => format!("missing key `{key}`"),
        config::ConfigError::PathParse { .. } => {
            "not a valid key (use ASCII letters, digits, `_` and `-`)".to_owned()
        }
        other => other.to_string(),
    }
}

fn apply_overrides(
    config: &mut Config,
    origins: &mut BTreeMap<String, Origin>,
    overrides: &Overrides,
) {
    let mut set = |key: &str, flag: &str| {
        origins.insert(key.to_owned(), Origin::Flag(flag.to_owned()));
    };
    if let Some(listen) = overrides.listen {
        config.api.listen = listen;
        set("api.listen", "--listen");
    }
    if overrides.dry_run {
        config.dry_run = true;
        set("dry_run", "--dry-run");
    }
    if let Some(format) = overrides.log_format {
        config.log.format = format;
        set("log.format", "--log-format");
    }
    if let Some(level) = &overrides.log_level {
        config.log.level.clone_from(level);
        set("log.level", "--log-level");
    }
    if overrides.insecure {
        config.api.insecure = true;
        set("api.insecure", "--insecure");
    }
    if let Some(id) = &overrides.worker_id {
        config.worker_id = Some(id.clone());
        set("worker_id", "--worker-id");
    }
    if let Some(budget) = overrides.memory_budget {
        config.memory_budget = Some(budget);
        set("memory_budget", "--memory-budget");
    }
    if let Some(interval) = overrides.interval {
        config.interval = interval;
        set("interval", "--interval");
    }
    if overrides.target_pid.is_some()
        || overrides.target_pidfile.is_some()
        || overrides.target_port.is_some()
        || overrides.target_cgroup.is_some()
    {
        // A target on the command line replaces the lower layers' target of another kind.
        config.target = Default::default();
        for key in [
            "target.pid",
            "target.pidfile",
            "target.port",
            "target.cgroup",
        ] {
            origins.remove(key);
        }
        let mut set = |key: &str, flag: &str| {
            origins.insert(key.to_owned(), Origin::Flag(flag.to_owned()));
        };
        if let Some(pid) = overrides.target_pid {
            config.target.pid = Some(pid);
            set("target.pid", "--target-pid");
        }
        if let Some(path) = &overrides.target_pidfile {
            config.target.pidfile = Some(path.clone());
            set("target.pidfile", "--target-pidfile");
        }
        if let Some(port) = overrides.target_port {
            config.target.port = Some(port);
            set("target.port", "--target-port");
        }
        if let Some(path) = &overrides.target_cgroup {
            config.target.cgroup = Some(path.clone());
            set("target.cgroup", "--target-cgroup");
        }
    }
    if let Some(url) = &overrides.probe_url {
        config.probe.url = Some(url.clone());
        origins.insert(
            "probe.url".to_owned(),
            Origin::Flag("--probe-url".to_owned()),
        );
    }
}

/// A ceiling the user did not set follows its floor up: `max_interval` to `interval`, a
/// trigger's `critical` to its `above` (only when `above` is itself valid, so a bad value is
/// reported once).
fn raise_unset_ceilings(config: &mut Config, origins: &mut BTreeMap<String, Origin>) {
    let is_default = |origins: &BTreeMap<String, Origin>, key: &str| {
        matches!(origins.get(key), None | Some(Origin::Default))
    };
    let origin_of = |origins: &BTreeMap<String, Origin>, key: &str| {
        origins.get(key).cloned().unwrap_or(Origin::Default)
    };
    if config.max_interval < config.interval && is_default(origins, "max_interval") {
        config.max_interval = config.interval;
        let origin = origin_of(origins, "interval");
        origins.insert("max_interval".to_owned(), origin);
    }
    let strategies = &mut config.strategies;
    let triggers: [(&str, &mut TriggerSpec); 4] = [
        (
            "strategies.memory_purge.trigger",
            &mut strategies.memory_purge.trigger,
        ),
        (
            "strategies.cache_trim.trigger",
            &mut strategies.cache_trim.trigger,
        ),
        (
            "strategies.connection_reap.trigger",
            &mut strategies.connection_reap.trigger,
        ),
        (
            "strategies.interval_backoff.trigger",
            &mut strategies.interval_backoff.trigger,
        ),
    ];
    for (prefix, trigger) in triggers {
        let critical_key = format!("{prefix}.critical");
        let above = trigger.above;
        let above_valid =
            above.is_finite() && above > 0.0 && (!trigger.signal.is_ratio() || above <= 1.0);
        if trigger.critical.is_some_and(|critical| critical < above)
            && above_valid
            && is_default(origins, &critical_key)
        {
            trigger.critical = Some(above);
            let origin = origin_of(origins, &format!("{prefix}.above"));
            origins.insert(critical_key, origin);
        }
    }
}

/// The key a problem starts with (`key = value: ...`).
fn problem_key(problem: &str) -> &str {
    problem.split([' ', ':']).next().unwrap_or_default()
}

/// A default `critical` flagged only because the user's `above` beside it is itself invalid
/// (and reported): one problem is enough.
fn follows_from_another(
    key: &str,
    problem_keys: &[String],
    origins: &BTreeMap<String, Origin>,
) -> bool {
    let Some(trigger) = key.strip_suffix(".critical") else {
        return false;
    };
    matches!(origins.get(key), None | Some(Origin::Default))
        && problem_keys
            .iter()
            .any(|k| *k == format!("{trigger}.above"))
}

/// Appends where the problem's key got its value, unless that is the default.
/// A key without an origin of its own (a named strategy instance, `strategies.webhook.NAME`)
/// takes the origin of the values under it.
fn with_origin(problem: String, origins: &BTreeMap<String, Origin>) -> String {
    let key = problem_key(&problem);
    let inside = format!("{key}.");
    let origin = origins.get(key).or_else(|| {
        origins
            .range::<String, _>(&inside..)
            .take_while(|(k, _)| k.starts_with(&inside))
            .map(|(_, origin)| origin)
            .find(|origin| **origin != Origin::Default)
    });
    match origin {
        Some(Origin::Default) | None => problem,
        Some(origin) => format!("{problem} (from {origin})"),
    }
}

/// Every leaf of the configuration that has a value, by dotted key.
fn leaves(config: &Config) -> BTreeMap<String, serde_json::Value> {
    fn walk(prefix: &str, value: serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let key = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&key, value, out);
                }
            }
            serde_json::Value::Null => {}
            leaf => {
                out.insert(prefix.to_owned(), leaf);
            }
        }
    }
    let mut out = BTreeMap::new();
    let tree = serde_json::to_value(config).expect("the configuration serializes to JSON");
    walk("", tree, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A TOML file in the temp directory, removed on drop.
    struct TempToml(PathBuf);

    impl TempToml {
        fn new(text: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "perfpilot-config-test-{}-{}.toml",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::write(&path, text).expect("write the temp config file");
            TempToml(path)
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// `load` without a file, whatever the working directory holds.
    fn load_env(vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        load_with_default_file(
            None,
            Path::new("/nonexistent/perfpilot.toml"),
            &env(vars),
            &Overrides::default(),
        )
    }

    fn load_file(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let file = TempToml::new(text);
        load(Some(&file.0), &env(vars), &Overrides::default())
    }

    fn problems(result: Result<Loaded, ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected invalid configuration, got {other:?}"),
        }
    }

    #[test]
    fn nothing_given_is_the_defaults_all_from_default() {
        let loaded = load_env(&[("PATH", "/usr/bin"), ("HOME", "/root")]).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.origins.values().all(|o| *o == Origin::Default));
        assert!(loaded
            .origins
            .contains_key("strategies.memory_purge.trigger.above"));
        assert!(loaded
            .origins
            .contains_key("strategies.memory_purge.trigger.for"));
    }

    #[test]
    fn the_file_overrides_defaults_key_by_key() {
        let file = TempToml::new(
            r#"
            interval = "250ms"
            memory_budget = "512MiB"
            worker_id = "edge-1"

            [api]
            listen = "127.0.0.1:0"

            [log]
            format = "json"

            [strategies.memory_purge.trigger]
            above = 0.7
            for = 3
            "#,
        );
        let loaded = load(Some(&file.0), &HashMap::new(), &Overrides::default()).unwrap();
        let config = &loaded.config;
        assert_eq!(config.interval, Duration::from_millis(250));
        assert_eq!(config.memory_budget, Some(512 << 20));
        assert_eq!(config.worker_id.as_deref(), Some("edge-1"));
        assert_eq!(config.api.listen, "127.0.0.1:0".parse().unwrap());
        assert!(
            config.api.enabled,
            "untouched keys of a table keep their default"
        );
        assert_eq!(config.log.format, LogFormat::Json);
        let trigger = &config.strategies.memory_purge.trigger;
        assert_eq!((trigger.above, trigger.for_samples), (0.7, 3));
        assert_eq!(trigger.critical, Some(0.9), "unset keys keep their default");
        assert_eq!(loaded.origins["interval"], Origin::File(file.0.clone()));
        assert_eq!(
            loaded.origins["strategies.memory_purge.trigger.for"],
            Origin::File(file.0.clone())
        );
        assert_eq!(loaded.origins["history_size"], Origin::Default);
    }

    const SIDECAR_TOML: &str = r#"
        [strategies.webhook.cache-trim-hook]
        url = "http://127.0.0.1:8080/admin/cache/trim"
        body = { fraction = 0.25, "cache.name" = "Chunks", tiers = [1, 2] }
        headers = { Authorization = "Bearer s3cret", "X-Request.Source" = "perfpilot" }
        [strategies.webhook.cache-trim-hook.trigger]
        signal = "memory_usage"
        above = 0.8

        [strategies.signal.reload-Config]
        signal = "SIGHUP"
        enabled = false
        [strategies.signal.reload-Config.trigger]
        signal = "memory_usage"
        above = 0.9

        [strategies.command.rotate-logs]
        program = "logrotate"
        args = ["-f", "/etc/logrotate.conf"]
        timeout = "30s"
        env = { LOGROTATE_MODE = "aggressive", "my.var" = "1" }
        [strategies.command.rotate-logs.trigger]
        signal = "cpu_usage"
        above = 0.95
    "#;

    #[test]
    fn named_sidecar_strategies_load_from_the_file_with_their_keys_as_written() {
        let file = TempToml::new(&SIDECAR_TOML.replace("reload-Config", "reload-config"));
        let loaded = load(Some(&file.0), &HashMap::new(), &Overrides::default()).unwrap();
        let strategies = &loaded.config.strategies;

        let hook = &strategies.webhook["cache-trim-hook"];
        assert_eq!(hook.url, "http://127.0.0.1:8080/admin/cache/trim");
        assert_eq!(
            hook.body,
            serde_json::json!({"fraction": 0.25, "cache.name": "Chunks", "tiers": [1, 2]})
        );
        assert_eq!(hook.headers["Authorization"], "Bearer s3cret");
        assert_eq!(hook.headers["X-Request.Source"], "perfpilot");
        assert_eq!(hook.trigger.as_ref().unwrap().above, 0.8);
        assert_eq!(hook.method, "POST", "unset keys take their default");
        assert_eq!(hook.retries, 2);

        let signal = &strategies.signal["reload-config"];
        assert_eq!(signal.signal, "SIGHUP");
        assert!(!signal.enabled);

        let command = &strategies.command["rotate-logs"];
        assert_eq!(command.program, "logrotate");
        assert_eq!(command.args, ["-f", "/etc/logrotate.conf"]);
        assert_eq!(command.timeout, Duration::from_secs(30));
        assert_eq!(command.env["LOGROTATE_MODE"], "aggressive");
        assert_eq!(command.env["my.var"], "1");
        assert_eq!(command.trigger.as_ref().unwrap().above, 0.95);

        let origin = Origin::File(file.0.clone());
        assert_eq!(
            loaded.origins["strategies.webhook.cache-trim-hook.url"],
            origin
        );
        assert_eq!(
            loaded.origins["strategies.command.rotate-logs.trigger.above"],
            origin
        );
        assert_eq!(
            loaded.origins["strategies.webhook.cache-trim-hook.retries"],
            Origin::Default,
            "a default inside a named instance"
        );
        let names: Vec<String> = loaded
            .config
            .strategies
            .build()
            .iter()
            .map(|r| r.strategy.name().to_owned())
            .collect();
        assert_eq!(names[4..], ["cache-trim-hook", "rotate-logs"]);
        let text = loaded.render();
        assert!(
            text.contains(&format!(
                "strategies.webhook.cache-trim-hook.url = \"http://127.0.0.1:8080/admin/cache/trim\"  # file {}\n",
                file.0.display()
            )),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "header values are hidden: {text}");
    }

    #[test]
    fn named_sidecar_strategies_problems_name_their_key_and_file() {
        // Upper case in a name is kept as written (and then refused by validation).
        let problems = problems(load_file(SIDECAR_TOML, &[]));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with(
                "strategies.signal.reload-Config: \"reload-Config\" is not a valid strategy name"
            ) && problems[0].contains("(from file "),
            "{problems:#?}"
        );

        // Values that do not deserialize, each at its own key (the first one of each instance)...
        let problems = problems_of(
            "[strategies.command.run]\nprogram = \"true\"\nretries = 1\n\
             trigger = { signal = \"memory_usage\", above = 0.8 }\n\
             [strategies.signal.nudge]\nsignal = \"USR1\"\n\
             [strategies.webhook.hook]\nurl = \"http://127.0.0.1:1/\"\ntrigger = { signal = \"vibes\", above = 0.8 }\n\
             [strategies.webhook.\"a.b\"]\nurl = \"http://127.0.0.1:1/\"\n",
        );
        let all = problems.join("\n");
        assert_eq!(problems.len(), 3, "{all}");
        assert!(
            all.contains("strategies.command.run.retries: unknown key (from file "),
            "{all}"
        );
        // A missing trigger is allowed for a budget's rung, so it is a validation problem,
        // reported once the values deserialize.
        let alone = problems_of("[strategies.signal.nudge]\nsignal = \"USR1\"\n");
        assert!(
            alone.iter().any(|p| p.starts_with("strategies.signal.nudge.trigger: required, missing (a strategy runs by its own trigger, or as a rung of a budget's ladder)")),
            "{alone:#?}"
        );
        assert!(all.contains("strategies.webhook.hook.trigger.signal = \"vibes\": unknown variant `vibes`, expected one of `memory_usage`"), "{all}");
        assert!(
            all.contains("strategies.webhook.\"a.b\": \"a.b\" is not a valid strategy name"),
            "{all}"
        );
        let problems = problems_of(
            "[strategies.command.run]\nprogram = \"true\"\ntimeout = \"soon\"\n\
             trigger = { signal = \"memory_usage\", above = 0.8 }\n",
        );
        assert!(
            problems[0]
                .starts_with("strategies.command.run.timeout = \"soon\": `soon` is not a duration"),
            "{problems:#?}"
        );

        // ...then values that do not validate.
        let problems = problems_of(
            "[strategies.webhook.hook]\nurl = \"ftp://x\"\ntrigger = { signal = \"memory_usage\", above = 0.8 }\n",
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with(
                "strategies.webhook.hook.url = \"ftp://x\": must be an http:// URL (from file "
            ),
            "{problems:#?}"
        );
    }

    #[test]
    fn env_reaches_into_a_named_strategy_from_the_file() {
        let file = TempToml::new(SIDECAR_TOML);
        let loaded = load(
            Some(&file.0),
            &env(&[
                (
                    "PERFPILOT_STRATEGIES__WEBHOOK__CACHE-TRIM-HOOK__RETRIES",
                    "5",
                ),
                (
                    "PERFPILOT_STRATEGIES__SIGNAL__RELOAD-CONFIG__ENABLED",
                    "true",
                ),
            ]),
            &Overrides::default(),
        );
        // The env key is lower-cased, so it names another instance than `reload-Config`.
        let problems = problems(loaded);
        assert!(problems.iter().any(|p| p.starts_with("strategies.signal.reload-config.enabled = \"true\": missing key `strategies.signal.reload-config.signal`")), "{problems:#?}");

        let file = TempToml::new(&SIDECAR_TOML.replace("reload-Config", "reload-config"));
        let loaded = load(
            Some(&file.0),
            &env(&[(
                "PERFPILOT_STRATEGIES__WEBHOOK__CACHE-TRIM-HOOK__RETRIES",
                "3",
            )]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            loaded.config.strategies.webhook["cache-trim-hook"].retries,
            3
        );
        assert_eq!(
            loaded.origins["strategies.webhook.cache-trim-hook.retries"],
            Origin::Env("PERFPILOT_STRATEGIES__WEBHOOK__CACHE-TRIM-HOOK__RETRIES".into())
        );
    }

    fn problems_of(toml: &str) -> Vec<String> {
        problems(load_file(toml, &[]))
    }

    #[test]
    fn the_default_file_is_read_only_if_present() {
        let file = TempToml::new("history_size = 7\n");
        let loaded =
            load_with_default_file(None, &file.0, &HashMap::new(), &Overrides::default()).unwrap();
        assert_eq!(loaded.config.history_size, 7);
    }

    #[test]
    fn a_named_file_must_exist() {
        let missing = Path::new("/nonexistent/perfpilot-missing.toml");
        match load(Some(missing), &HashMap::new(), &Overrides::default()) {
            Err(error @ ConfigError::File { .. }) => {
                assert!(error
                    .to_string()
                    .contains("/nonexistent/perfpilot-missing.toml"));
            }
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn bad_toml_names_the_file_and_the_line() {
        let file = TempToml::new("interval = \"5s\"\n[api\nlisten = 1\n");
        let error = load(Some(&file.0), &HashMap::new(), &Overrides::default()).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ConfigError::File { .. }), "{message}");
        assert!(message.contains(&file.0.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_rejected_by_name() {
        let problems = problems(load_file(
            "intervall = \"5s\"\n[strategies.memory_purge.trigger]\nabvoe = 0.5\n[telemetry]\n",
            &[],
        ));
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let all = problems.join("\n");
        assert!(
            all.contains("intervall = \"5s\": unknown key (from file"),
            "{all}"
        );
        assert!(
            all.contains("expected one of `enabled`, `interval`"),
            "{all}"
        );
        assert!(
            all.contains("strategies.memory_purge.trigger.abvoe = 0.5: unknown key"),
            "{all}"
        );
        assert!(all.contains("telemetry = {}: unknown key"), "{all}");
    }

    #[test]
    fn bad_values_in_the_file_name_key_value_allowed_and_file() {
        let file = TempToml::new(
            "interval = \"fast\"\nhistory_size = \"lots\"\n[log]\nformat = \"xml\"\n\
             [strategies.cache_trim.trigger]\nsignal = \"vibes\"\n",
        );
        let problems = problems(load(Some(&file.0), &HashMap::new(), &Overrides::default()));
        let all = problems.join("\n");
        let from = format!("(from file {})", file.0.display());
        assert_eq!(problems.len(), 4, "{all}");
        assert!(
            all.contains("interval = \"fast\": `fast` is not a duration (use e.g. 250ms"),
            "{all}"
        );
        assert!(
            all.contains(
                "history_size = \"lots\": invalid type: string \"lots\", expected an integer"
            ),
            "{all}"
        );
        assert!(
            all.contains("log.format = \"xml\": unknown variant `xml`, expected `text` or `json`"),
            "{all}"
        );
        assert!(all.contains("strategies.cache_trim.trigger.signal = \"vibes\": unknown variant `vibes`, expected one of `memory_usage`"), "{all}");
        assert!(problems.iter().all(|p| p.contains(&from)), "{all}");
    }

    #[test]
    fn env_beats_the_file() {
        let loaded = load_file(
            "interval = \"1s\"\n[api]\ntoken = \"from-file\"\n",
            &[
                ("PERFPILOT_INTERVAL", "2s"),
                ("PERFPILOT_API__TOKEN", "abc"),
            ],
        )
        .unwrap();
        assert_eq!(loaded.config.interval, Duration::from_secs(2));
        assert_eq!(loaded.config.api.token.as_deref(), Some("abc"));
        assert_eq!(
            loaded.origins["interval"],
            Origin::Env("PERFPILOT_INTERVAL".into())
        );
        assert_eq!(
            loaded.origins["api.token"],
            Origin::Env("PERFPILOT_API__TOKEN".into())
        );
    }

    #[test]
    fn prefixed_env_reaches_nested_and_typed_keys() {
        let loaded = load_env(&[
            ("PERFPILOT_API__LISTEN", "127.0.0.1:0"),
            ("PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__ABOVE", "0.5"),
            ("PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__FOR", "3"),
            ("PERFPILOT_STRATEGIES__CACHE_TRIM__ENABLED", "false"),
            ("PERFPILOT_STRATEGIES__CONNECTION_REAP__MAX_PER_CLIENT", "8"),
            ("PERFPILOT_MEMORY_BUDGET", "512MiB"),
            ("PERFPILOT_HISTORY_SIZE", "100"),
            ("PERFPILOT_LOG__FORMAT", "json"),
            ("PERFPILOT_CONFIG", "/etc/perfpilot.toml"),
        ])
        .unwrap();
        let config = &loaded.config;
        assert_eq!(config.api.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.strategies.memory_purge.trigger.above, 0.5);
        assert_eq!(config.strategies.memory_purge.trigger.for_samples, 3);
        assert!(!config.strategies.cache_trim.enabled);
        assert_eq!(config.strategies.connection_reap.max_per_client, Some(8));
        assert_eq!(config.memory_budget, Some(512 << 20));
        assert_eq!(config.history_size, 100);
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn tokens_that_look_like_numbers_stay_strings() {
        for token in ["12345", "007", "1e5", "true", "0.50"] {
            let loaded = load_env(&[("PERFPILOT_API__TOKEN", token)]).unwrap();
            assert_eq!(loaded.config.api.token.as_deref(), Some(token));
        }
        let loaded = load_env(&[("PERFPILOT_WORKER_ID", "0042")]).unwrap();
        assert_eq!(loaded.config.worker_id.as_deref(), Some("0042"));
    }

    #[test]
    fn budget_strings_and_integers_parse_from_every_layer() {
        for (budget, bytes) in [
            ("512MiB", 512u64 << 20),
            ("1.5GiB", 3 << 29),
            ("800MB", 800_000_000),
            ("64KiB", 64 << 10),
            ("2G", 2_000_000_000),
            ("1048576", 1 << 20),
        ] {
            let loaded = load_env(&[("PERFPILOT_MEMORY_BUDGET", budget)]).unwrap();
            assert_eq!(loaded.config.memory_budget, Some(bytes), "{budget}");
        }
        let loaded = load_file("memory_budget = 1048576\n", &[]).unwrap();
        assert_eq!(loaded.config.memory_budget, Some(1 << 20));
        let problems = problems(load_env(&[("PERFPILOT_MEMORY_BUDGET", "lots")]));
        assert!(
            problems[0].starts_with("memory_budget = \"lots\": `lots` is not a size"),
            "{problems:?}"
        );
        assert!(problems[0].contains("512MiB"), "{problems:?}");
        assert!(
            problems[0].ends_with("(from env PERFPILOT_MEMORY_BUDGET)"),
            "{problems:?}"
        );
    }

    #[test]
    fn legacy_variables_map_onto_their_keys() {
        let loaded = load_env(&[
            ("MEMORY_THRESHOLD", "0.00001"),
            ("OPTIMIZATION_INTERVAL", "200"),
            ("CPU_THRESHOLD", "0.7"),
            ("ENABLE_PERFORMANCE_OPTIMIZATION", "false"),
            ("ENABLE_GC", "false"),
            ("ENABLE_CONNECTION_POOLING", "0"),
            ("ENABLE_CACHING", "no"),
            ("LOG_LEVEL", "debug"),
        ])
        .unwrap();
        let config = &loaded.config;
        let s = &config.strategies;
        assert_eq!(s.memory_purge.trigger.above, 0.00001);
        assert_eq!(s.cache_trim.trigger.above, 0.00001);
        assert_eq!(s.interval_backoff.trigger.above, 0.7);
        assert_eq!(config.interval, Duration::from_millis(200));
        assert!(!config.enabled);
        assert!(!s.memory_purge.enabled && !s.connection_reap.enabled && !s.cache_trim.enabled);
        assert!(s.interval_backoff.enabled);
        assert_eq!(config.log.level, "debug");
        assert_eq!(
            loaded.origins["strategies.cache_trim.trigger.above"],
            Origin::Env("MEMORY_THRESHOLD".into())
        );
        assert_eq!(
            loaded.origins["interval"],
            Origin::Env("OPTIMIZATION_INTERVAL".into())
        );
        assert_eq!(
            loaded.origins["strategies.memory_purge.trigger.critical"],
            Origin::Default
        );
    }

    #[test]
    fn legacy_log_levels_of_the_node_logger_are_mapped_and_empty_legacy_vars_ignored() {
        let loaded = load_env(&[("LOG_LEVEL", "verbose"), ("MEMORY_THRESHOLD", "")]).unwrap();
        assert_eq!(loaded.config.log.level, "debug");
        assert_eq!(loaded.config.strategies.memory_purge.trigger.above, 0.8);
    }

    #[test]
    fn a_threshold_above_the_default_critical_raises_it() {
        let loaded = load_env(&[("MEMORY_THRESHOLD", "0.95")]).unwrap();
        let trigger = &loaded.config.strategies.memory_purge.trigger;
        assert_eq!((trigger.above, trigger.critical), (0.95, Some(0.95)));
        assert_eq!(
            loaded.origins["strategies.memory_purge.trigger.critical"],
            Origin::Env("MEMORY_THRESHOLD".into())
        );
        // ...but a critical the user set is theirs to fix.
        let problems = problems(load_file(
            "[strategies.memory_purge.trigger]\ncritical = 0.85\n",
            &[("MEMORY_THRESHOLD", "0.95")],
        ));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with(
            "strategies.memory_purge.trigger.critical = 0.85: must be at least above (0.95) (from file"
        ));
    }

    #[test]
    fn an_interval_above_the_default_max_interval_raises_it() {
        let loaded = load_env(&[("OPTIMIZATION_INTERVAL", "120000")]).unwrap();
        assert_eq!(loaded.config.interval, Duration::from_secs(120));
        assert_eq!(loaded.config.max_interval, Duration::from_secs(120));
        assert_eq!(
            loaded.origins["max_interval"],
            Origin::Env("OPTIMIZATION_INTERVAL".into())
        );
        let problems = problems(load_env(&[
            ("OPTIMIZATION_INTERVAL", "120000"),
            ("PERFPILOT_MAX_INTERVAL", "90s"),
        ]));
        assert_eq!(
            problems,
            ["max_interval = 1m30s: must be at least interval (2m) (from env PERFPILOT_MAX_INTERVAL)"]
                .map(|p| p.replace("1m30s", "90s").replace("(2m)", "(120s)"))
        );
    }

    #[test]
    fn bad_legacy_values_name_the_variable_the_value_and_what_is_allowed() {
        let problems = problems(load_env(&[
            ("MEMORY_THRESHOLD", "abc"),
            ("ENABLE_GC", "maybe"),
            ("OPTIMIZATION_INTERVAL", "5s"),
        ]));
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems.contains(&"MEMORY_THRESHOLD = \"abc\": must be a number in (0, 1] (legacy variable for strategies.memory_purge.trigger.above, strategies.cache_trim.trigger.above)".to_owned()), "{problems:#?}");
        assert!(problems
            .iter()
            .any(|p| p.starts_with("ENABLE_GC = \"maybe\": must be true or false")));
        assert!(
            problems
                .iter()
                .any(|p| p
                    .starts_with("OPTIMIZATION_INTERVAL = \"5s\": must be integer milliseconds"))
        );

        let problems = problems_of_threshold("1.5");
        assert_eq!(problems.len(), 2, "{problems:#?}");
        for p in &problems {
            assert!(
                p.contains("MEMORY_THRESHOLD") && p.contains("1.5") && p.contains("(0, 1]"),
                "{p}"
            );
        }
        assert!(problems[0].starts_with("strategies.memory_purge.trigger.above = 1.5: must be in (0, 1] for signal memory_usage (from env MEMORY_THRESHOLD)"));
    }

    fn problems_of_threshold(value: &str) -> Vec<String> {
        problems(load_env(&[("MEMORY_THRESHOLD", value)]))
    }

    #[test]
    fn prefixed_env_beats_legacy() {
        let loaded = load_env(&[
            ("MEMORY_THRESHOLD", "0.6"),
            ("PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__ABOVE", "0.5"),
            ("OPTIMIZATION_INTERVAL", "200"),
            ("PERFPILOT_INTERVAL", "1s"),
        ])
        .unwrap();
        let s = &loaded.config.strategies;
        assert_eq!(s.memory_purge.trigger.above, 0.5);
        assert_eq!(s.cache_trim.trigger.above, 0.6);
        assert_eq!(loaded.config.interval, Duration::from_secs(1));
        assert_eq!(
            loaded.origins["interval"],
            Origin::Env("PERFPILOT_INTERVAL".into())
        );
    }

    #[test]
    fn overrides_beat_env() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            dry_run: true,
            log_format: Some(LogFormat::Json),
            log_level: Some("trace".into()),
            insecure: true,
            worker_id: Some("edge-7".into()),
            memory_budget: Some(1 << 30),
            interval: Some(Duration::from_millis(100)),
            target_pid: None,
            target_pidfile: None,
            target_port: None,
            target_cgroup: None,
            probe_url: None,
        };
        let loaded = load_with_default_file(
            None,
            Path::new("/nonexistent/perfpilot.toml"),
            &env(&[
                ("PERFPILOT_API__LISTEN", "127.0.0.1:1"),
                ("PERFPILOT_INTERVAL", "2s"),
                ("PERFPILOT_DRY_RUN", "false"),
                ("PERFPILOT_MEMORY_BUDGET", "1MiB"),
                ("LOG_LEVEL", "warn"),
                ("PERFPILOT_WORKER_ID", "from-env"),
            ]),
            &overrides,
        )
        .unwrap();
        let config = &loaded.config;
        assert_eq!(config.api.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(config.worker_id.as_deref(), Some("edge-7"));
        assert_eq!(
            loaded.origins["worker_id"],
            Origin::Flag("--worker-id".into())
        );
        assert!(config.dry_run && config.api.insecure);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "trace");
        assert_eq!(config.memory_budget, Some(1 << 30));
        assert_eq!(config.interval, Duration::from_millis(100));
        assert_eq!(
            loaded.origins["api.listen"],
            Origin::Flag("--listen".into())
        );
        assert_eq!(
            loaded.origins["interval"],
            Origin::Flag("--interval".into())
        );
        assert_eq!(
            loaded.origins["log.level"],
            Origin::Flag("--log-level".into())
        );
        assert_eq!(loaded.origins["dry_run"], Origin::Flag("--dry-run".into()));
    }

    #[test]
    fn target_and_probe_come_from_env_file_and_flags() {
        let loaded = load_env(&[
            ("PERFPILOT_TARGET__PID", "4242"),
            ("PERFPILOT_PROBE__URL", "http://127.0.0.1:8080/ping"),
            ("PERFPILOT_PROBE__PERIOD", "500ms"),
        ])
        .unwrap();
        assert_eq!(loaded.config.target.pid, Some(4242));
        assert_eq!(
            loaded.config.probe.url.as_deref(),
            Some("http://127.0.0.1:8080/ping")
        );
        assert_eq!(loaded.config.probe.period, Duration::from_millis(500));
        assert_eq!(
            loaded.origins["target.pid"],
            Origin::Env("PERFPILOT_TARGET__PID".into())
        );
        let text = loaded.render();
        assert!(
            text.contains("target.pid = 4242  # env PERFPILOT_TARGET__PID\n"),
            "{text}"
        );
        assert!(
            text.contains("probe.timeout = \"2s\"  # default\n"),
            "{text}"
        );

        // Two kinds in one layer are refused, naming both keys...
        let problems = problems(load_file(
            "[target]\npidfile = \"/run/demo.pid\"\n",
            &[("PERFPILOT_TARGET__PORT", "8080")],
        ));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "target.pidfile = \"/run/demo.pid\", target.port = 8080: set at most one of"
            ),
            "{problems:?}"
        );
        let problems = problems_of_env(&[("PERFPILOT_TARGET__PID", "many")]);
        assert!(
            problems[0].starts_with("target.pid = \"many\": invalid type"),
            "{problems:?}"
        );

        // ...but a flag replaces the file's target of another kind.
        let file = TempToml::new("[target]\npidfile = \"/run/demo.pid\"\n");
        let loaded = load(
            Some(&file.0),
            &env(&[]),
            &Overrides {
                target_port: Some(8080),
                probe_url: Some("http://127.0.0.1:8080/ping".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(loaded.config.target.port, Some(8080));
        assert_eq!(loaded.config.target.pidfile, None);
        assert!(!loaded.origins.contains_key("target.pidfile"));
        let text = loaded.render();
        assert!(
            text.contains("target.port = 8080  # flag --target-port\n"),
            "{text}"
        );
        assert!(
            text.contains("probe.url = \"http://127.0.0.1:8080/ping\"  # flag --probe-url\n"),
            "{text}"
        );
    }

    fn problems_of_env(vars: &[(&str, &str)]) -> Vec<String> {
        problems(load_env(vars))
    }

    #[test]
    fn unknown_or_malformed_prefixed_variables_are_errors() {
        let problems = problems(load_env(&[
            ("PERFPILOT_INTERVALL", "5s"),
            ("PERFPILOT_API__TOKNE", "x"),
            ("PERFPILOT_API____LISTEN", "127.0.0.1:1"),
        ]));
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let all = problems.join("\n");
        assert!(
            all.contains("PERFPILOT_API____LISTEN: not a configuration variable"),
            "{all}"
        );
        assert!(
            all.contains("api.tokne = \"x\": unknown key (from env PERFPILOT_API__TOKNE)"),
            "{all}"
        );
        assert!(
            all.contains("intervall = \"5s\": unknown key (from env PERFPILOT_INTERVALL)"),
            "{all}"
        );
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let problems = problems(load_env(&[
            ("PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__ABOVE", "high"),
            ("PERFPILOT_DRY_RUN", "perhaps"),
            ("PERFPILOT_API__LISTEN", "localhost"),
        ]));
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let all = problems.join("\n");
        assert!(all.contains("strategies.memory_purge.trigger.above = \"high\": invalid type: string \"high\", expected a floating point (from env PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__ABOVE)"), "{all}");
        assert!(all.contains("dry_run = \"perhaps\": invalid type: string \"perhaps\", expected a boolean (from env PERFPILOT_DRY_RUN)"), "{all}");
        assert!(all.contains("api.listen = \"localhost\": invalid socket address syntax (from env PERFPILOT_API__LISTEN)"), "{all}");
    }

    #[test]
    fn validation_problems_name_their_source() {
        let problems = problems(load_env(&[
            ("PERFPILOT_INTERVAL", "0ms"),
            ("PERFPILOT_API__TOKEN", ""),
            ("PERFPILOT_HISTORY_SIZE", "0"),
        ]));
        assert_eq!(
            problems,
            [
                "interval = 0s: must be at least 10ms (from env PERFPILOT_INTERVAL)",
                "history_size = 0: must be in 1..=10000 (from env PERFPILOT_HISTORY_SIZE)",
                "api.token = \"\": must be non-empty (from env PERFPILOT_API__TOKEN)",
            ]
        );
        let error = ConfigError::Invalid(problems);
        assert!(error
            .to_string()
            .starts_with("invalid configuration:\n  - interval = 0s: must be at least 10ms"));
    }

    #[test]
    fn render_shows_every_value_with_its_origin_and_hides_the_token() {
        let file = TempToml::new("[api]\ntoken = \"s3cret\"\n");
        let loaded = load(
            Some(&file.0),
            &env(&[("OPTIMIZATION_INTERVAL", "5000")]),
            &Overrides {
                dry_run: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        let text = loaded.render();
        assert!(
            text.contains("interval = \"5s\"  # env OPTIMIZATION_INTERVAL\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "api.token = \"***\"  # file {}\n",
                file.0.display()
            )),
            "{text}"
        );
        assert!(
            text.contains("dry_run = true  # flag --dry-run\n"),
            "{text}"
        );
        assert!(
            text.contains("strategies.memory_purge.trigger.above = 0.8  # default\n"),
            "{text}"
        );
        assert!(
            text.contains("api.listen = \"127.0.0.1:9750\"  # default\n"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        let keys: Vec<&str> = text
            .lines()
            .map(|l| l.split(" = ").next().unwrap())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn origins_display_as_documented() {
        assert_eq!(Origin::Default.to_string(), "default");
        assert_eq!(
            Origin::File("perfpilot.toml".into()).to_string(),
            "file perfpilot.toml"
        );
        assert_eq!(
            Origin::Env("PERFPILOT_INTERVAL".into()).to_string(),
            "env PERFPILOT_INTERVAL"
        );
        assert_eq!(Origin::Flag("--listen".into()).to_string(), "flag --listen");
    }
}
