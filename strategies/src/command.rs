//! `command`: run a configured program with a timeout; its exit status is the result.
//!
//! ```toml
//! [strategies.command.rotate-logs]
//! program = "/usr/local/bin/rotate-logs"
//! args = ["--keep", "3"]
//! timeout = "5s"
//! [strategies.command.rotate-logs.trigger]
//! signal = "memory_usage"
//! above = 0.9
//! ```
//!
//! There is no shell: `program` is started with `args` as they are. Write
//! `program = "sh"`, `args = ["-c", "..."]` for a shell line.
//!
//! The program runs in its own process group. The whole group (what the program started
//! too) is killed when `timeout` passes, and also when the run is abandoned before that (the
//! engine's `strategy_timeout`, shutdown): the agent refuses a `timeout` at or above
//! `strategy_timeout`, so the command's own timeout normally comes first.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::duration;
use crate::problem::Problem;
use crate::signals::Signal;
use crate::strategy::{Context, Outcome, RunKind, Strategy, StrategyError};
use crate::trigger::TriggerSpec;

/// Settings of one `command` instance (`[strategies.command.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Whether the strategy is registered at all; by default `true`.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// Its runs disrupt users (sessions dropped, connections closed): `perfpilot replay`
    /// counts them apart. By default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disruptive: bool,
    /// When it runs by itself. Optional for a strategy that is a rung of a budget's ladder
    /// (`[budgets.NAME] ladder`): it then runs only as a rung, and manually.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerSpec>,
    /// The program: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Its arguments, passed as they are (no shell); by default none. An argument written
    /// `{ value = "--password=...", secret = true }` is passed the same but shown as `***` in
    /// the description, records and logs.
    #[serde(default)]
    pub args: Vec<Arg>,
    /// The program is killed (with its process group) if it runs longer; by default
    /// [`CommandConfig::DEFAULT_TIMEOUT`].
    #[serde(default = "CommandConfig::default_timeout", with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::duration::json_schema")
    )]
    pub timeout: Duration,
    /// Variables set for the program; by default none. The program does not inherit the
    /// agent's environment: it gets only [`RunCommand::INHERITED_ENV`] from it, these, and
    /// the variables of [`RunCommand::CONTEXT_ENV`], which the agent sets itself.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdout and stderr are each kept in the record up to this many bytes (the record is
    /// served by `GET /performance-metrics`); by default [`crate::DEFAULT_EXCERPT_BYTES`].
    #[serde(default = "crate::default_excerpt_bytes")]
    pub excerpt_bytes: usize,
}

/// One argument of a command: plain text, or `{ value = "...", secret = true }` for one that
/// is passed as it is but shown as `***` wherever the command line is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Arg {
    /// Shown as written.
    Plain(String),
    /// Written as a table.
    Marked {
        /// The argument passed.
        value: String,
        /// Whether it is hidden where the command line is shown.
        #[serde(default)]
        secret: bool,
    },
}

impl Arg {
    /// The argument passed to the program.
    pub fn value(&self) -> &str {
        match self {
            Arg::Plain(value) | Arg::Marked { value, .. } => value,
        }
    }

    /// Whether it is marked `secret = true`.
    pub fn is_secret(&self) -> bool {
        matches!(self, Arg::Marked { secret: true, .. })
    }

    /// How descriptions, records and logs show it: `***` when secret.
    pub fn shown(&self) -> &str {
        if self.is_secret() {
            "***"
        } else {
            self.value()
        }
    }
}

impl PartialEq<&str> for Arg {
    fn eq(&self, other: &&str) -> bool {
        self.value() == *other
    }
}

impl From<&str> for Arg {
    fn from(value: &str) -> Self {
        Arg::Plain(value.to_owned())
    }
}

impl From<String> for Arg {
    fn from(value: String) -> Self {
        Arg::Plain(value)
    }
}

impl CommandConfig {
    /// Default `timeout`: 8 s, below the agent's default `strategy_timeout` (10 s), so the
    /// command's own timeout (which reports it) comes before the engine abandons the run.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(8);

    fn default_timeout() -> Duration {
        Self::DEFAULT_TIMEOUT
    }

    /// Settings with every default, running `program` when `trigger` fires.
    pub fn new(program: impl Into<String>, trigger: TriggerSpec) -> Self {
        CommandConfig {
            enabled: true,
            disruptive: false,
            trigger: Some(trigger),
            program: program.into(),
            args: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            env: BTreeMap::new(),
            excerpt_bytes: crate::DEFAULT_EXCERPT_BYTES,
        }
    }

    /// Every problem with the settings (not the trigger), each naming its key under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.program.trim().is_empty() {
            problems.push(Problem::new(
                format!("{prefix}.program"),
                format!("{:?}", self.program),
                "must name a program",
            ));
        } else if self.program.contains('\0') {
            problems.push(Problem::new(
                format!("{prefix}.program"),
                format!("{:?}", self.program),
                "cannot contain NUL",
            ));
        }
        for (i, arg) in self.args.iter().enumerate() {
            if arg.value().contains('\0') {
                problems.push(Problem::new(
                    format!("{prefix}.args[{i}]"),
                    format!("{:?}", arg.value()),
                    "cannot contain NUL",
                ));
            }
        }
        problems.extend(Problem::unless_positive(
            format!("{prefix}.timeout"),
            self.timeout,
        ));
        problems.extend(crate::excerpt_problem(
            &format!("{prefix}.excerpt_bytes"),
            self.excerpt_bytes,
        ));
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                problems.push(Problem::new(
                    format!("{prefix}.env.{key}"),
                    format!("{value:?}"),
                    "a variable name must be non-empty, without `=` or NUL",
                ));
            } else if RunCommand::CONTEXT_ENV.contains(&key.as_str()) {
                problems.push(Problem::new(
                    format!("{prefix}.env.{key}"),
                    format!("{value:?}"),
                    "set by the agent for every run, cannot be configured",
                ));
            } else if value.contains('\0') {
                problems.push(Problem::new(
                    format!("{prefix}.env.{key}"),
                    format!("{value:?}"),
                    "cannot contain NUL",
                ));
            }
        }
        problems
    }

    /// The strategy these settings describe, registered as `name`.
    pub fn build(&self, name: &str) -> RunCommand {
        let signal = self
            .trigger
            .as_ref()
            .map_or(Signal::MemoryUsage, |t| t.signal);
        self.build_for(name, signal)
    }

    /// As [`CommandConfig::build`], with `signal` as the signal the command is told about
    /// (`PERFPILOT_SIGNAL`): a budget's, for a rung without a trigger of its own.
    pub fn build_for(&self, name: &str, signal: Signal) -> RunCommand {
        // As shown: secret arguments as `***`.
        let line = std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(Arg::shown))
            .collect::<Vec<_>>()
            .join(" ");
        RunCommand {
            name: name.to_owned(),
            description: format!("run `{line}` (timeout {})", duration::format(self.timeout)),
            line,
            program: self.program.clone(),
            args: self.args.iter().map(|arg| arg.value().to_owned()).collect(),
            timeout: self.timeout,
            env: self.env.clone(),
            trigger_signal: signal,
            excerpt: self.excerpt_bytes.min(crate::MAX_EXCERPT_BYTES),
        }
    }
}

/// Runs a program without a shell, stdin from `/dev/null`, stdout and stderr captured; exit
/// code 0 is success. On timeout the program's process group is killed.
///
/// The program learns why it runs from [`RunCommand::CONTEXT_ENV`].
#[derive(Clone)]
pub struct RunCommand {
    name: String,
    description: String,
    /// `program args...`, for messages, secret arguments as `***`.
    line: String,
    program: String,
    args: Vec<String>,
    timeout: Duration,
    env: BTreeMap<String, String>,
    trigger_signal: Signal,
    /// Bytes of stdout and of stderr kept in the record.
    excerpt: usize,
}

impl std::fmt::Debug for RunCommand {
    /// The command line as shown (secret arguments as `***`); no `env` values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCommand")
            .field("name", &self.name)
            .field("line", &self.line)
            .field("timeout", &self.timeout)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("trigger_signal", &self.trigger_signal)
            .finish_non_exhaustive()
    }
}

impl RunCommand {
    /// The kind's name: the `[strategies.command]` table.
    pub const KIND: &'static str = "command";
    /// After the program exits, its output is read for at most this long more (a process it
    /// left behind may hold the pipes open).
    pub const OUTPUT_GRACE: Duration = Duration::from_millis(100);
    /// Variables the agent sets for every run:
    /// - `PERFPILOT_STRATEGY`: the strategy's name;
    /// - `PERFPILOT_RUN_KIND`: `automatic` or `manual`;
    /// - `PERFPILOT_LEVEL`: `OK`, `WARNING` or `CRITICAL`;
    /// - `PERFPILOT_SIGNAL`: the trigger's signal, e.g. `memory_usage`;
    /// - `PERFPILOT_SIGNAL_VALUE`: its value in the snapshot (unset when not read);
    /// - `PERFPILOT_TARGET_PID`: the first target process (unset without a target);
    /// - `PERFPILOT_TARGET_PIDS`: every target process, space-separated (all processes of a
    ///   cgroup target; unset without a target).
    pub const CONTEXT_ENV: [&'static str; 7] = [
        "PERFPILOT_STRATEGY",
        "PERFPILOT_RUN_KIND",
        "PERFPILOT_LEVEL",
        "PERFPILOT_SIGNAL",
        "PERFPILOT_SIGNAL_VALUE",
        "PERFPILOT_TARGET_PID",
        "PERFPILOT_TARGET_PIDS",
    ];

    /// Variables the program gets from the agent's own environment, when set there (any
    /// `LC_*` too); every other variable of the agent's (its tokens included) is not passed.
    /// Pass more with the strategy's `env`.
    pub const INHERITED_ENV: [&'static str; 4] = ["PATH", "HOME", "LANG", "TZ"];

    /// Whether the agent's variable `name` is passed on ([`RunCommand::INHERITED_ENV`], `LC_*`).
    pub fn inherits(name: &str) -> bool {
        Self::INHERITED_ENV.contains(&name) || name.starts_with("LC_")
    }

    fn command(&self, ctx: &Context) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .env_clear()
            .envs(std::env::vars_os().filter(|(name, _)| name.to_str().is_some_and(Self::inherits)))
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a timeout kills what it started too.
            .process_group(0);
        let kind = match ctx.kind {
            RunKind::Automatic => "automatic",
            RunKind::Manual => "manual",
        };
        command
            .env("PERFPILOT_STRATEGY", &self.name)
            .env("PERFPILOT_RUN_KIND", kind)
            .env("PERFPILOT_LEVEL", ctx.level.to_string())
            .env("PERFPILOT_SIGNAL", self.trigger_signal.name());
        // Unset rather than inherited from the agent's own environment when unknown.
        match ctx.snapshot.signal(self.trigger_signal) {
            Some(value) => command.env("PERFPILOT_SIGNAL_VALUE", value.to_string()),
            None => command.env_remove("PERFPILOT_SIGNAL_VALUE"),
        };
        match ctx.targets.first() {
            Some(pid) => command.env("PERFPILOT_TARGET_PID", pid.to_string()),
            None => command.env_remove("PERFPILOT_TARGET_PID"),
        };
        if ctx.targets.is_empty() {
            command.env_remove("PERFPILOT_TARGET_PIDS");
        } else {
            let pids: Vec<String> = ctx.targets.iter().map(u32::to_string).collect();
            command.env("PERFPILOT_TARGET_PIDS", pids.join(" "));
        }
        command
    }
}

#[async_trait]
impl Strategy for RunCommand {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        Self::KIND
    }

    fn acts_on(&self) -> String {
        // The program only: arguments may carry secrets.
        format!("runs {}", self.program)
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut child = self
            .command(&ctx)
            .spawn()
            .map_err(|e| StrategyError::Failed(format!("cannot start `{}`: {e}", self.program)))?;
        // Armed until the program is reaped: dropping this run (the engine's timeout aborts
        // it) or timing out kills the whole group, not only the direct child.
        let mut group = GroupKill(child.id().and_then(|p| libc::pid_t::try_from(p).ok()));
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut out = Captured::new(self.excerpt);
        let mut err = Captured::new(self.excerpt);
        let waited = {
            // Read both pipes while waiting, so a chatty program never blocks on a full pipe.
            let mut reading = pin!(async { tokio::join!(out.fill(stdout), err.fill(stderr)) });
            let mut read_all = false;
            let waited = loop {
                tokio::select! {
                    waited = tokio::time::timeout_at(deadline, child.wait()) => break waited,
                    _ = &mut reading, if !read_all => read_all = true,
                }
            };
            if matches!(waited, Ok(Ok(_))) && !read_all {
                let _ = tokio::time::timeout(Self::OUTPUT_GRACE, &mut reading).await;
            }
            waited
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let status = match waited {
            Ok(Ok(status)) => {
                // Reaped: what it left running in its group may go on (as after a shell's `&`).
                group.disarm();
                status
            }
            Ok(Err(e)) => {
                return Err(StrategyError::Failed(format!(
                    "cannot wait for `{}`: {e}",
                    self.line
                )))
            }
            Err(_) => {
                group.kill();
                let _ = child.kill().await;
                return Err(StrategyError::Failed(format!(
                    "command `{}` timed out after {} ms and was killed",
                    self.line,
                    self.timeout.as_millis()
                )));
            }
        };
        let (stdout, stderr) = (out.text(), err.text());
        match status.code() {
            Some(0) => Ok(Outcome::acted(format!(
                "`{}` exited with code 0 in {elapsed_ms:.0} ms",
                self.line
            ))
            .with("exit_code", 0)
            .with("elapsed_ms", elapsed_ms)
            .with("stdout", stdout)
            .with("stderr", stderr)
            .with("stdout_bytes", out.total)
            .with("stderr_bytes", err.total)),
            code => {
                let how = match (code, status.signal()) {
                    (Some(code), _) => format!("exited with code {code}"),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    (None, None) => format!("ended with {status}"),
                };
                tracing::warn!(strategy = %self.name, command = %self.line, %stdout, %stderr, "command {how}");
                let mut message = format!("command `{}` {how}", self.line);
                if let Some(line) = first_line(&stderr) {
                    message.push_str(&format!(": {line}"));
                } else if let Some(line) = first_line(&stdout) {
                    message.push_str(&format!("; stdout: {line}"));
                }
                Err(StrategyError::Failed(message))
            }
        }
    }
}

/// Kills a program's process group (its id is the program's pid) when dropped, unless
/// disarmed once the program has been reaped.
#[derive(Debug)]
struct GroupKill(Option<libc::pid_t>);

impl GroupKill {
    /// Sends SIGKILL to the whole group now (once).
    fn kill(&mut self) {
        // -pgid is the group the child leads. The child is not reaped yet, so its pid (the
        // group's id) is not reused.
        if let Some(pgid) = self.0.take() {
            crate::sys::kill_group(pgid);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first non-empty line of `text`, cut to 200 bytes.
fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| crate::truncate_utf8(line.as_bytes(), 200))
}

/// The head of one output stream, and how much there was.
#[derive(Debug)]
struct Captured {
    head: Vec<u8>,
    total: u64,
    limit: usize,
}

impl Captured {
    fn new(limit: usize) -> Self {
        Captured {
            head: Vec::new(),
            total: 0,
            limit,
        }
    }

    /// Reads `reader` to its end, keeping the first `limit` bytes.
    async fn fill(&mut self, reader: Option<impl AsyncRead + Unpin>) {
        let Some(mut reader) = reader else {
            return;
        };
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            self.total += n as u64;
            let room = self.limit.saturating_sub(self.head.len());
            self.head.extend_from_slice(&buf[..n.min(room)]);
        }
    }

    fn text(&self) -> String {
        crate::truncate_utf8(&self.head, self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_with_defaults() {
        let config: CommandConfig = serde_json::from_str(
            r#"{"program": "true", "trigger": {"signal": "memory_usage", "above": 0.9}}"#,
        )
        .unwrap();
        assert_eq!(
            config,
            CommandConfig::new("true", TriggerSpec::new(Signal::MemoryUsage, 0.9))
        );
        assert_eq!(config.timeout, Duration::from_secs(8));
        assert!(config.problems("p").is_empty());
        let strategy = config.build("noop");
        assert_eq!(strategy.name(), "noop");
        assert_eq!(strategy.description(), "run `true` (timeout 8s)");
    }

    #[test]
    fn problems_name_every_bad_key() {
        let mut config = CommandConfig::new(" ", TriggerSpec::new(Signal::MemoryUsage, 0.9));
        config.timeout = Duration::ZERO;
        config.args = vec!["ok".into(), "nul\0".into()];
        config.env.insert("A=B".into(), "1".into());
        config.env.insert("PERFPILOT_LEVEL".into(), "LOW".into());
        assert_eq!(
            config.problems("strategies.command.x").iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "strategies.command.x.program = \" \": must name a program",
                "strategies.command.x.args[1] = \"***\": cannot contain NUL",
                "strategies.command.x.timeout = 0s: must be positive",
                "strategies.command.x.env.A=B = \"***\": a variable name must be non-empty, without `=` or NUL",
                "strategies.command.x.env.PERFPILOT_LEVEL = \"***\": set by the agent for every run, cannot be configured",
            ]
        );
    }

    #[test]
    fn secret_arguments_are_passed_but_not_shown() {
        let config: CommandConfig = serde_json::from_str(
            r#"{"program": "sync-tool", "args": ["--to", "db", {"value": "--password=s3cret", "secret": true}, {"value": "-v"}]}"#,
        )
        .unwrap();
        let strategy = config.build("sync");
        assert_eq!(
            strategy.description(),
            "run `sync-tool --to db *** -v` (timeout 8s)"
        );
        assert_eq!(strategy.args[2], "--password=s3cret");
        assert!(!format!("{strategy:?}").contains("s3cret"));
    }

    #[test]
    fn first_line_skips_blank_lines() {
        assert_eq!(first_line("\n  \n oops \nmore"), Some("oops".to_owned()));
        assert_eq!(first_line(" \n"), None);
    }
}
