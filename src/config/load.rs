//! Building a [`Config`] from its layers with figment, remembering where each value came from.
//!
//! Every value a layer gives is a figment [`Provider`] (a [`Setting`]) whose metadata is its
//! [`Origin`]; figment merges them key by key over the serialized defaults and tags each value
//! with its provider, which is where [`Loaded::origins`] come from. Its typed errors (`kind`,
//! `path`, `metadata`) become [`Problem`]s. Environment values stay strings: figment's lossy
//! extraction reads them as numbers or booleans where the field wants one, and a string field
//! keeps them as written (a token `"007"`).
//!
//! The environment is a map given by the caller (the process environment in production), so
//! figment's `Env` provider, which reads the process environment itself, is not used: the
//! `PERFPILOT_` variables and the legacy variables are providers of their own, one per variable.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::error::{Kind, OneOf};
use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::{Config, LogFormat, Origin, Problem};

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
    /// `key = value  # origin`, e.g. `interval = "5s"  # env OPTIMIZATION_INTERVAL`. Secrets
    /// are shown as `"***"` and URLs without credentials or query values
    /// ([`perfpilot_strategies::secret`]); a command's `args` are listed with the ones marked
    /// `secret = true` as `"***"`. Keys without a value (unset options) are left out.
    pub fn render(&self) -> String {
        use perfpilot_strategies::secret;
        let mut out = String::new();
        for (key, value) in leaves(&self.config) {
            let value = match shown_args(&key, &value) {
                Some(args) => args,
                None if secret::is_secret_key(&key) => secret::HIDDEN.to_owned(),
                None => secret::redact_urls_in(&value.to_string()),
            };
            let origin = self.origins.get(&key).unwrap_or(&Origin::Default);
            out.push_str(&format!("{key} = {value}  # {origin}\n"));
        }
        out
    }
}

/// A command's `args` (`strategies.command.NAME.args`) as listed: plain arguments as written,
/// those marked `secret = true` as `"***"`; `None` for any other key.
fn shown_args(key: &str, value: &serde_json::Value) -> Option<String> {
    key.strip_prefix("strategies.command.")?
        .strip_suffix(".args")?;
    let items = value.as_array()?;
    let shown: Vec<String> = items
        .iter()
        .map(|item| {
            let arg: Option<perfpilot_strategies::command::Arg> =
                serde_json::from_value(item.clone()).ok();
            match arg {
                Some(arg) if arg.is_secret() => perfpilot_strategies::secret::HIDDEN.to_owned(),
                Some(arg) => serde_json::Value::from(perfpilot_strategies::secret::redact_urls_in(
                    arg.value(),
                ))
                .to_string(),
                None => perfpilot_strategies::secret::HIDDEN.to_owned(),
            }
        })
        .collect();
    Some(format!("[{}]", shown.join(",")))
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
    /// Values that do not fit, all of them: unknown keys, values of the wrong type and values
    /// out of range, each with its key, its value, what is allowed and where it came from.
    #[error("invalid configuration:{}", .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid(Vec<Problem>),
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
/// Every problem found is reported at once in [`ConfigError::Invalid`], those of values that
/// cannot be read (unknown keys, wrong types) together with those of values that can but do
/// not fit; a file that cannot be read or parsed is [`ConfigError::File`].
///
/// The configuration's form only: what it says about the host (does `target.cgroup` name a
/// cgroup?) is checked by `load_checked`.
pub fn load(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    load_checked(file, env, overrides, &|_| Vec::new())
}

/// Checks of a configuration against the host it runs on (does `target.cgroup` name a
/// cgroup?), given by the layer that resolves what the configuration describes (the agent
/// passes `perfpilot::sample::host_problems`). The configuration only describes.
pub type HostCheck<'a> = &'a dyn Fn(&Config) -> Vec<Problem>;

/// [`load`], with the problems `host` finds in the loaded configuration reported beside the
/// others, with their origins.
pub fn load_checked(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    overrides: &Overrides,
    host: HostCheck<'_>,
) -> Result<Loaded, ConfigError> {
    read_and_load(file, Path::new(Config::DEFAULT_FILE), env, overrides, host)
}

/// Like [`load`], with the TOML file's text given directly (no file is read, not even
/// `./perfpilot.toml`); its values' origin is the file `INLINE_FILE`. For embedding and for
/// the fuzz target: any text gives `Ok` or a [`ConfigError`], never a panic.
pub fn load_from_str(
    toml: &str,
    env: &HashMap<String, String>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    load_settings(
        file_settings(toml, Path::new(INLINE_FILE))?,
        env,
        overrides,
        &|_| Vec::new(),
    )
}

/// The name [`load_from_str`] gives its text in origins and messages.
pub const INLINE_FILE: &str = "(inline TOML)";

fn read_and_load(
    file: Option<&Path>,
    default_file: &Path,
    env: &HashMap<String, String>,
    overrides: &Overrides,
    host: HostCheck<'_>,
) -> Result<Loaded, ConfigError> {
    let file = file.or_else(|| default_file.is_file().then_some(default_file));
    load_exactly(file, env, overrides, host)
}

/// Like [`load_checked`], with no default file: `Some(path)`: that file must exist; `None`: no
/// file at all (the defaults, the environment and `overrides`). What a reload uses, so that a
/// `./perfpilot.toml` written after start is never read.
pub fn load_exactly(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    overrides: &Overrides,
    host: HostCheck<'_>,
) -> Result<Loaded, ConfigError> {
    let Some(path) = file else {
        return load_settings(Vec::new(), env, overrides, host);
    };
    let text = read_trusted(path)?;
    load_settings(file_settings(&text, path)?, env, overrides, host)
}

/// Reads the configuration file if it is safe to run what it says: a file that a user other
/// than the agent's own (or root) owns, or that group or others may write, could make the
/// agent run any `command` as its user. Checked on the opened file (`fstat`), so the file read
/// is the file checked.
fn read_trusted(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let refuse = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let mut file = fs::File::open(path).map_err(|e| refuse(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| refuse(e.to_string()))?;
    let (owner, mode, agent) = (
        metadata.uid(),
        metadata.mode() & 0o7777,
        crate::sys::effective_uid(),
    );
    // A character device (`/dev/null`, an empty configuration) holds no text anyone wrote.
    if std::os::unix::fs::FileTypeExt::is_char_device(&metadata.file_type()) {
        return Ok(String::new());
    }
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "refused: mode {mode:04o} (owner uid {owner}) lets {} write it, and whoever writes it can make the agent run commands as its user; remove that with `chmod go-w`",
            if mode & 0o002 != 0 { "any user" } else { "its group" }
        )));
    }
    if owner != agent && owner != 0 {
        return Err(refuse(format!(
            "refused: owned by uid {owner} (mode {mode:04o}), neither the agent's user (uid {agent}) nor root, and its owner could make the agent run commands as the agent's user; `chown` it to uid {agent} or root"
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| refuse(e.to_string()))?;
    Ok(text)
}

/// One layer's value at one key, as a figment provider whose metadata is its origin: a leaf,
/// or a named strategy instance (`strategies.webhook.NAME`) as a whole, since it is complete
/// only as a whole.
#[derive(Debug, Clone)]
struct Setting {
    path: Vec<String>,
    value: toml::Value,
    origin: Origin,
    /// A named strategy instance.
    instance: bool,
}

impl Setting {
    fn new(key: &str, value: impl Into<toml::Value>, origin: Origin) -> Self {
        Setting {
            path: key.split('.').map(str::to_owned).collect(),
            value: value.into(),
            origin,
            instance: false,
        }
    }

    /// Whether this setting reaches into the named instance `instance` (an environment
    /// variable setting one key of a strategy the file defines).
    fn is_inside(&self, instance: &Setting) -> bool {
        instance.instance
            && self.path.len() > instance.path.len()
            && self.path.starts_with(&instance.path)
    }

    /// The value as written at `path`, if this setting has it.
    fn written_at(&self, path: &[String]) -> Option<String> {
        let inside = path.strip_prefix(self.path.as_slice())?;
        let mut value = &self.value;
        for segment in inside {
            value = value.as_table()?.get(segment)?;
        }
        Some(value.to_string())
    }
}

impl Provider for Setting {
    fn metadata(&self) -> Metadata {
        match &self.origin {
            Origin::Default => Metadata::named("default"),
            Origin::File(path) => Metadata::from("file", path.as_path()),
            Origin::Env(name) => Metadata::from("env", Source::Custom(name.clone())),
            Origin::Flag(flag) => Metadata::from("flag", Source::Custom(flag.clone())),
        }
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let (first, nested) = self.path.split_first().expect("a setting has a key");
        let value = nested
            .iter()
            .rev()
            .fold(to_figment(&self.value), |value, key| {
                Dict::from([(key.clone(), value)]).into()
            });
        Ok(Profile::Default.collect(Dict::from([(first.clone(), value)])))
    }
}

/// The [`Origin`] a [`Setting`]'s metadata stands for (the defaults' for any other).
fn origin_of(metadata: &Metadata) -> Origin {
    match (metadata.name.as_ref(), &metadata.source) {
        ("file", Some(Source::File(path))) => Origin::File(path.clone()),
        ("env", Some(Source::Custom(name))) => Origin::Env(name.clone()),
        ("flag", Some(Source::Custom(flag))) => Origin::Flag(flag.clone()),
        _ => Origin::Default,
    }
}

fn to_figment(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => s.as_str().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(items) => items.iter().map(to_figment).collect::<Vec<_>>().into(),
        toml::Value::Table(table) => table
            .iter()
            .map(|(key, value)| (key.clone(), to_figment(value)))
            .collect::<Dict>()
            .into(),
    }
}

/// The file's settings: one per leaf (an empty table is one: `[telemetry]` is an unknown
/// key), one per named strategy instance.
fn file_settings(text: &str, path: &Path) -> Result<Vec<Setting>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: path.to_path_buf(),
            message: syntax_error(text, &e),
        })?;
    fn flatten(path: Vec<String>, value: toml::Value, origin: &Origin, out: &mut Vec<Setting>) {
        // A named strategy (`[strategies.webhook.NAME]`) and a budget (`[budgets.NAME]`) are
        // complete only as a whole.
        let instance = matches!(path.as_slice(), [strategies, kind, _]
            if strategies == "strategies"
                && perfpilot_strategies::StrategiesConfig::NAMED_KINDS.contains(&kind.as_str()))
            || matches!(path.as_slice(), [budgets, _] if budgets == "budgets");
        match value {
            toml::Value::Table(table) if !instance && (!table.is_empty() || path.is_empty()) => {
                for (key, value) in table {
                    let mut inner = path.clone();
                    inner.push(key);
                    flatten(inner, value, origin, out);
                }
            }
            value => out.push(Setting {
                path,
                instance: instance && value.is_table(),
                value,
                origin: origin.clone(),
            }),
        }
    }
    let mut settings = Vec::new();
    let origin = Origin::File(path.to_path_buf());
    flatten(
        Vec::new(),
        toml::Value::Table(table),
        &origin,
        &mut settings,
    );
    Ok(settings)
}

/// A TOML syntax error as `line L, column C: what`, without the source line the parser
/// quotes: the line may hold a secret (`token = "w...` unterminated).
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let what = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let key = key_of_line(text, before)
                .map(|key| format!(" (key {key})"))
                .unwrap_or_default();
            format!("line {line}, column {column}{key}: {what}")
        }
        None => what.to_owned(),
    }
}

/// The key a line assigns (`history_size` in `history_size = 1e99`), for naming it in a
/// syntax error: only a plain dotted key before `=`, and never inside a multi-line string
/// (whose text may be a secret).
fn key_of_line<'a>(text: &'a str, before: &str) -> Option<&'a str> {
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let opened = |quotes: &str| before[..start].matches(quotes).count() % 2 == 1;
    if opened("\"\"\"") || opened("'''") {
        return None;
    }
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = !key.is_empty()
        && key.split('.').all(|segment| {
            let segment = segment.trim();
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    plain.then_some(key)
}

/// The legacy variables' settings (one per key they set), or what is wrong with them.
fn legacy_settings(
    env: &HashMap<String, String>,
    settings: &mut Vec<Setting>,
    problems: &mut Vec<Problem>,
) {
    for (name, keys) in LEGACY_ENV {
        let Some(raw) = env.get(*name).filter(|raw| !raw.trim().is_empty()) else {
            continue;
        };
        let text = raw.trim();
        let parsed = match *name {
            "OPTIMIZATION_INTERVAL" => text
                .parse::<i64>()
                .ok()
                .filter(|ms| *ms >= 0)
                .map(toml::Value::Integer)
                .ok_or("must be integer milliseconds"),
            "MEMORY_THRESHOLD" | "CPU_THRESHOLD" => text
                .parse::<f64>()
                .map(toml::Value::Float)
                .map_err(|_| "must be a number in (0, 1]"),
            "LOG_LEVEL" => Ok(toml::Value::String(legacy_log_level(text))),
            _ => parse_bool(text)
                .map(toml::Value::Boolean)
                .ok_or("must be true or false"),
        };
        let origin = Origin::Env((*name).to_owned());
        match parsed {
            Ok(value) => settings.extend(
                keys.iter()
                    .map(|key| Setting::new(key, value.clone(), origin.clone())),
            ),
            Err(allowed) => problems.push(
                Problem::new(
                    *name,
                    format!("{raw:?}"),
                    format!("{allowed} (legacy variable for {})", keys.join(", ")),
                )
                .from(origin),
            ),
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

/// The `PERFPILOT_` variables' settings, `__` between nested keys, keys lower-cased, values
/// kept as strings.
fn prefixed_settings(
    env: &HashMap<String, String>,
    settings: &mut Vec<Setting>,
    problems: &mut Vec<Problem>,
) {
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(name, _)| {
            name.starts_with(Config::ENV_PREFIX) && !Config::NON_CONFIG_ENV.contains(&name.as_str())
        })
        .collect();
    vars.sort();
    for (name, value) in vars {
        let origin = Origin::Env(name.clone());
        let path: Vec<String> = name[Config::ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            problems.push(Problem::at(name.clone(), format!(
                "not a configuration variable (write {}KEY, with `__` between nested keys, e.g. PERFPILOT_API__LISTEN)",
                Config::ENV_PREFIX
            )).from(origin));
            continue;
        }
        settings.push(Setting {
            path,
            value: toml::Value::String(value.clone()),
            origin,
            instance: false,
        });
    }
}

/// The command line's settings.
fn flag_settings(o: &Overrides) -> Vec<Setting> {
    let text = |value: &dyn ToString| toml::Value::String(value.to_string());
    let path = |path: &PathBuf| text(&path.display());
    // A budget past a TOML integer stays text: refused as too large, naming the flag.
    let bytes = |b: u64| i64::try_from(b).map_or_else(|_| text(&b), toml::Value::Integer);
    let duration = |d: Duration| text(&humantime::format_duration(d));
    let flags: [(&str, &str, Option<toml::Value>); 13] = [
        ("api.listen", "--listen", o.listen.map(|a| text(&a))),
        ("dry_run", "--dry-run", o.dry_run.then_some(true.into())),
        ("log.format", "--log-format", o.log_format.map(|f| text(&f))),
        (
            "log.level",
            "--log-level",
            o.log_level.as_ref().map(|l| text(l)),
        ),
        (
            "api.insecure",
            "--insecure",
            o.insecure.then_some(true.into()),
        ),
        (
            "worker_id",
            "--worker-id",
            o.worker_id.as_ref().map(|w| text(w)),
        ),
        (
            "memory_budget",
            "--memory-budget",
            o.memory_budget.map(bytes),
        ),
        ("interval", "--interval", o.interval.map(duration)),
        (
            "target.pid",
            "--target-pid",
            o.target_pid.map(|p| i64::from(p).into()),
        ),
        (
            "target.pidfile",
            "--target-pidfile",
            o.target_pidfile.as_ref().map(path),
        ),
        (
            "target.port",
            "--target-port",
            o.target_port.map(|p| i64::from(p).into()),
        ),
        (
            "target.cgroup",
            "--target-cgroup",
            o.target_cgroup.as_ref().map(path),
        ),
        (
            "probe.url",
            "--probe-url",
            o.probe_url.as_ref().map(|u| text(u)),
        ),
    ];
    flags
        .into_iter()
        .filter_map(|(key, flag, value)| {
            Some(Setting::new(key, value?, Origin::Flag(flag.to_owned())))
        })
        .collect()
}

fn load_settings(
    mut settings: Vec<Setting>,
    env: &HashMap<String, String>,
    overrides: &Overrides,
    host: HostCheck<'_>,
) -> Result<Loaded, ConfigError> {
    let mut problems = Vec::new();
    legacy_settings(env, &mut settings, &mut problems);
    prefixed_settings(env, &mut settings, &mut problems);
    let flags = flag_settings(overrides);
    if flags.iter().any(|flag| flag.path[0] == "target") {
        // A target on the command line replaces the lower layers' target of another kind.
        settings.retain(|setting| setting.path[0] != "target");
    }
    settings.extend(flags);

    // Each value on its own over the defaults, so that every bad key or value is reported
    // (serde stops at the first), attributed to the layer it came from; a value reaching into
    // a named instance is read over that instance.
    let defaults = Figment::from(Serialized::defaults(Config::default()));
    let mut readable = Vec::new();
    for setting in &settings {
        let figment = settings
            .iter()
            .filter(|instance| setting.is_inside(instance))
            .chain([setting])
            .fold(defaults.clone(), |figment, s| figment.merge(s.clone()));
        match figment.extract_lossy::<Config>() {
            Ok(_) => readable.push(setting.clone()),
            Err(errors) => {
                // An unreadable named instance is not validated: its name is checked here.
                let name = setting.instance.then(|| {
                    let name = setting.path.last().expect("an instance has a name");
                    perfpilot_strategies::name_problem(&dotted(&setting.path), name)
                });
                let name = name.flatten().map(|p| p.from(setting.origin.clone()));
                let read = errors.into_iter().map(|e| problem_of(e, Some(setting)));
                for problem in name.into_iter().chain(read) {
                    if !problems.contains(&problem) {
                        problems.push(problem);
                    }
                }
            }
        }
    }

    // The readable values merged key by key, later layers winning; what they make is then
    // validated, so that a file with an unknown key and an `above = 2` reports both.
    let figment = readable
        .into_iter()
        .fold(defaults, |figment, setting| figment.merge(setting));
    let mut config = match figment.extract_lossy::<Config>() {
        Ok(config) => config,
        Err(errors) => {
            problems.extend(errors.into_iter().map(|e| problem_of(e, None)));
            return Err(ConfigError::Invalid(problems));
        }
    };
    exact_floats(&mut config, &settings);
    let mut origins = origins(&config, &figment);
    raise_unset_ceilings(&mut config, &mut origins);
    let mut invalid = config.validate().err().unwrap_or_default();
    invalid.extend(host(&config));
    if !invalid.is_empty() {
        let keys: Vec<String> = invalid.iter().map(|p| p.key.clone()).collect();
        problems.extend(
            invalid
                .into_iter()
                .filter(|problem| !follows_from_another(problem, &keys, &origins))
                .map(|problem| with_origin(problem, &origins)),
        );
    }
    if problems.is_empty() {
        Ok(Loaded { config, origins })
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// figment reads a short decimal string (`"0.8"`, as the environment gives it) as an `f32`
/// and widens it, so `PERFPILOT_..._ABOVE=0.8` would read 0.800000011920929: every number a
/// text setting became is put back as written.
fn exact_floats(config: &mut Config, settings: &[Setting]) {
    let Ok(mut tree) = serde_json::to_value(&*config) else {
        return;
    };
    let mut changed = false;
    for setting in settings {
        let toml::Value::String(text) = &setting.value else {
            continue;
        };
        let Ok(exact) = text.trim().parse::<f64>() else {
            continue;
        };
        let leaf = setting
            .path
            .iter()
            .try_fold(&mut tree, |node, key| node.get_mut(key.as_str()));
        if let Some(leaf) = leaf.filter(|leaf| leaf.is_f64()) {
            let widened = leaf.as_f64().expect("an f64 leaf");
            if widened != exact && widened as f32 == exact as f32 {
                *leaf = serde_json::json!(exact);
                changed = true;
            }
        }
    }
    if changed {
        if let Ok(exact) = serde_json::from_value(tree) {
            *config = exact;
        }
    }
}

/// A figment error as a problem: at its key, with the value as `setting` wrote it, from the
/// provider figment names.
fn problem_of(error: figment::Error, setting: Option<&Setting>) -> Problem {
    let mut path = error.path.clone();
    // A secret's value must not reach the message through the deserializer's words either
    // (`invalid type: string "w..."`): only the kind of value found is named.
    let secret = perfpilot_strategies::secret::is_secret_key(&dotted(&path));
    let why = match &error.kind {
        Kind::UnknownField(_, expected) => format!("unknown key; expected {}", OneOf(expected)),
        Kind::InvalidType(actual, expected) if secret => {
            format!(
                "invalid type: {}, expected {}",
                kind_of(actual),
                in_words(expected)
            )
        }
        Kind::InvalidValue(actual, expected) if secret => {
            format!(
                "invalid value: {}, expected {}",
                kind_of(actual),
                in_words(expected)
            )
        }
        Kind::UnknownVariant(_, expected) if secret => {
            format!("unknown variant, expected {}", OneOf(expected))
        }
        Kind::MissingField(field) => {
            path.push(field.to_string());
            "required, missing".to_owned()
        }
        Kind::InvalidType(actual, expected) => {
            format!("invalid type: {actual}, expected {}", in_words(expected))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value: {actual}, expected {}", in_words(expected))
        }
        Kind::UnknownVariant(variant, expected) => {
            format!("unknown variant `{variant}`, expected {}", OneOf(expected))
        }
        kind => kind.to_string(),
    };
    let origin = match (&error.metadata, setting) {
        (Some(metadata), _) => origin_of(metadata),
        (None, Some(setting)) => setting.origin.clone(),
        (None, None) => Origin::Default,
    };
    // An unknown key may be a misspelt secret (`tokne = "..."`): its value is not shown.
    let value = match error.kind {
        Kind::UnknownField(..) => None,
        _ => setting.and_then(|setting| setting.written_at(&path)),
    };
    Problem {
        key: dotted(&path),
        value,
        origin,
        why,
    }
}

/// The kind of a value the deserializer found, without the value: `a string`, `a sequence`.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "another kind of value",
    }
}

/// A key path as TOML writes it: segments that are not bare keys quoted
/// (`strategies.webhook."a.b"`).
fn dotted(path: &[String]) -> String {
    let bare = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let segments: Vec<String> = path
        .iter()
        .map(|s| if bare(s) { s.clone() } else { format!("{s:?}") })
        .collect();
    segments.join(".")
}

/// serde's primitive visitors expect a Rust type by its name (`u32`, `f64`); users read "an
/// integer" and "a number". This reads the type serde names, not an error message: any other
/// expectation (`a boolean`, `socket address`) is shown as serde gives it.
fn in_words(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        other => other,
    }
}

/// The origin of every leaf of `config`: the provider figment tagged its value with, else the
/// default.
fn origins(config: &Config, figment: &Figment) -> BTreeMap<String, Origin> {
    fn walk(figment: &Figment, prefix: &str, dict: &Dict, out: &mut BTreeMap<String, Origin>) {
        for (key, value) in dict {
            let key = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Dict(_, inner) => walk(figment, &key, inner, out),
                leaf => {
                    let origin = figment.get_metadata(leaf.tag()).map(origin_of);
                    out.insert(key, origin.unwrap_or(Origin::Default));
                }
            }
        }
    }
    let mut given = BTreeMap::new();
    if let Some(dict) = figment
        .data()
        .ok()
        .and_then(|data| data.get(&Profile::Default).cloned())
    {
        walk(figment, "", &dict, &mut given);
    }
    leaves(config)
        .into_keys()
        .map(|key| {
            let origin = given.remove(&key).unwrap_or(Origin::Default);
            (key, origin)
        })
        .collect()
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
    for builtin in perfpilot_strategies::builtins::BUILTINS {
        let prefix = format!("{}.trigger", builtin.prefix());
        let trigger = (builtin.trigger_mut)(&mut config.strategies);
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

/// A default `critical` flagged only because the user's `above` beside it is itself invalid
/// (and reported): one problem is enough.
fn follows_from_another(
    problem: &Problem,
    problem_keys: &[String],
    origins: &BTreeMap<String, Origin>,
) -> bool {
    let Some(trigger) = problem.key.strip_suffix(".critical") else {
        return false;
    };
    matches!(origins.get(&problem.key), None | Some(Origin::Default))
        && problem_keys
            .iter()
            .any(|k| *k == format!("{trigger}.above"))
}

/// The problem with where its key got its value. A key without an origin of its own (a named
/// strategy instance, `strategies.webhook.NAME`) takes the origin of the values under it.
fn with_origin(problem: Problem, origins: &BTreeMap<String, Origin>) -> Problem {
    let inside = format!("{}.", problem.key);
    let origin = origins.get(&problem.key).or_else(|| {
        origins
            .range::<String, _>(&inside..)
            .take_while(|(k, _)| k.starts_with(&inside))
            .map(|(_, origin)| origin)
            .find(|origin| **origin != Origin::Default)
    });
    match origin {
        Some(origin) => problem.from(origin.clone()),
        None => problem,
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

    use super::*;

    /// [`load`] with another default file, and no host checks.
    fn load_with_default_file(
        file: Option<&Path>,
        default_file: &Path,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Loaded, ConfigError> {
        read_and_load(file, default_file, env, overrides, &|_| Vec::new())
    }

    /// A TOML file in the temp directory, removed on drop.
    struct TempToml(tempfile::TempPath);

    impl TempToml {
        fn new(text: &str) -> Self {
            let mut file = tempfile::Builder::new()
                .prefix("perfpilot-config-test-")
                .suffix(".toml")
                .tempfile()
                .expect("create the temp config file");
            std::io::Write::write_all(&mut file, text.as_bytes())
                .expect("write the temp config file");
            TempToml(file.into_temp_path())
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
            Err(ConfigError::Invalid(problems)) => {
                problems.iter().map(ToString::to_string).collect()
            }
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
        assert_eq!(
            loaded.origins["interval"],
            Origin::File(file.0.to_path_buf())
        );
        assert_eq!(
            loaded.origins["strategies.memory_purge.trigger.for"],
            Origin::File(file.0.to_path_buf())
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
        timeout = "5s"
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
        assert_eq!(command.timeout, Duration::from_secs(5));
        assert_eq!(command.env["LOGROTATE_MODE"], "aggressive");
        assert_eq!(command.env["my.var"], "1");
        assert_eq!(command.trigger.as_ref().unwrap().above, 0.95);

        let origin = Origin::File(file.0.to_path_buf());
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
        assert_eq!(problems.len(), 5, "{all}");
        assert!(
            all.contains("strategies.command.run.retries: unknown key; expected one of `enabled`"),
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
            all.contains("strategies.webhook.a.b: \"a.b\" is not a valid strategy name"),
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
        assert!(problems.iter().any(|p| *p == "strategies.signal.reload-config.signal: required, missing (from env PERFPILOT_STRATEGIES__SIGNAL__RELOAD-CONFIG__ENABLED)"), "{problems:#?}");

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
    fn a_syntax_error_names_the_line_and_key_but_never_quotes_a_value() {
        for (text, expected) in [
            (
                "[api]\ntoken = \"s3cret-value\n",
                "line 2, column 22 (key token): ",
            ),
            (
                "history_size = 99999999999999999999\n",
                "(key history_size)",
            ),
            ("x = \"\"\"\nline = s3cret-value\n", "line "),
        ] {
            let message = match load_from_str(text, &HashMap::new(), &Overrides::default()) {
                Err(error) => error.to_string(),
                Ok(_) => panic!("{text:?} accepted"),
            };
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
            assert!(!message.contains("(key line)"), "{message}");
        }
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
            all.contains("intervall: unknown key; expected one of `enabled`, `interval`"),
            "{all}"
        );
        assert!(
            all.contains("expected one of `enabled`, `interval`"),
            "{all}"
        );
        assert!(
            all.contains("strategies.memory_purge.trigger.abvoe: unknown key"),
            "{all}"
        );
        assert!(all.contains("telemetry: unknown key"), "{all}");
        assert!(
            !all.contains("0.5") && !all.contains("5s"),
            "an unknown key's value is not shown: {all}"
        );
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
                "history_size = \"lots\": invalid type: string \"lots\", expected a non-negative integer"
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
    fn decimals_from_the_environment_are_read_as_written() {
        let loaded = load_env(&[
            ("PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__ABOVE", "0.7"),
            ("MEMORY_THRESHOLD", "0.65"),
        ])
        .unwrap();
        let strategies = &loaded.config.strategies;
        assert_eq!(strategies.memory_purge.trigger.above, 0.7);
        assert_eq!(strategies.cache_trim.trigger.above, 0.65);
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
            all.contains("api.tokne: unknown key; expected one of `enabled`, `listen`, `token`, `read_token`, `insecure`, `allowed_hosts`, `allowed_origins`, `max_connections`, `header_read_timeout`, `idle_timeout`, `rate_limit`, `request_timeout` (from env PERFPILOT_API__TOKNE)"),
            "{all}"
        );
        assert!(
            all.contains("intervall: unknown key; expected one of")
                && all.contains("(from env PERFPILOT_INTERVALL)"),
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
        assert!(all.contains("strategies.memory_purge.trigger.above = \"high\": invalid type: string \"high\", expected a number (from env PERFPILOT_STRATEGIES__MEMORY_PURGE__TRIGGER__ABOVE)"), "{all}");
        assert!(all.contains("dry_run = \"perhaps\": invalid type: string \"perhaps\", expected a boolean (from env PERFPILOT_DRY_RUN)"), "{all}");
        assert!(all.contains("api.listen = \"localhost\": invalid socket address syntax (from env PERFPILOT_API__LISTEN)"), "{all}");
    }

    #[test]
    fn validation_problems_name_their_source() {
        let vars = [
            ("PERFPILOT_INTERVAL", "0ms"),
            ("PERFPILOT_API__TOKEN", ""),
            ("PERFPILOT_HISTORY_SIZE", "0"),
        ];
        assert_eq!(
            problems(load_env(&vars)),
            [
                "interval = 0s: must be at least 10ms (from env PERFPILOT_INTERVAL)",
                "history_size = 0: must be in 1..=10000 (from env PERFPILOT_HISTORY_SIZE)",
                "api.token = \"***\": must be non-empty (from env PERFPILOT_API__TOKEN)",
            ]
        );
        let error = load_env(&vars).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("invalid configuration:\n  - interval = 0s: must be at least 10ms"));
        let ConfigError::Invalid(problems) = error else {
            panic!("expected invalid values, got {error:?}");
        };
        assert_eq!(
            problems[0],
            Problem {
                key: "interval".into(),
                value: Some("0s".into()),
                origin: Origin::Env("PERFPILOT_INTERVAL".into()),
                why: "must be at least 10ms".into(),
            }
        );
    }

    #[test]
    fn read_and_validation_problems_are_reported_in_one_pass_as_data() {
        let file = TempToml::new(
            "intervall = \"5s\"\nhistory_size = \"lots\"\n[strategies.memory_purge.trigger]\nabove = 2\n",
        );
        let error = load(Some(&file.0), &env(&[]), &Overrides::default()).unwrap_err();
        let ConfigError::Invalid(problems) = error else {
            panic!("expected invalid values, got {error:?}");
        };
        let from_file = Origin::File(file.0.to_path_buf());
        let found: Vec<(&str, Option<&str>, &Origin)> = problems
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_deref(), &p.origin))
            .collect();
        assert_eq!(
            found,
            [
                ("history_size", Some("\"lots\""), &from_file),
                ("intervall", None, &from_file),
                (
                    "strategies.memory_purge.trigger.above",
                    Some("2"),
                    &from_file
                ),
            ],
            "{problems:#?}"
        );
        assert!(problems[1]
            .why
            .starts_with("unknown key; expected one of `enabled`"));
        assert_eq!(problems[2].why, "must be in (0, 1] for signal memory_usage");
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
