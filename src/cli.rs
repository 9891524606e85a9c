//! The command line: parses flags and calls the library. `perfpilot --help` lists it all.

mod client;
mod export;
mod reference;
mod replay;
mod serve;
mod table;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, LogFormat, Overrides};

pub use crate::sys::{MallocConf, MALLOC_CONF};

/// perfpilot: keeps a service within its memory, CPU, connection and latency budgets.
#[derive(Debug, Parser)]
#[command(name = "perfpilot", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: sample, trigger strategies, serve the HTTP API.
    Run(RunArgs),
    /// Print the effective configuration and where each value came from.
    CheckConfig(ConfigArgs),
    /// List the strategies with their triggers.
    Strategies(ConfigArgs),
    /// Fetch and print a running agent's metrics.
    Metrics(MetricsArgs),
    /// Show a running agent's metrics, refreshed every interval, until Ctrl-C.
    Watch(WatchArgs),
    /// Ask a running agent to run one strategy now (all when none is named).
    Optimize(OptimizeArgs),
    /// Ask a running agent to re-read its configuration file and apply it without a restart.
    Reload(ReloadArgs),
    /// List every signal a trigger can watch: unit, ratio or not, source, meaning.
    Signals(SignalsArgs),
    /// Ask a running agent to forget what a budget (all when none is named) learned about
    /// reacting: rung records and latencies, the guard band, the rise.
    ResetLearning(ResetLearningArgs),
    /// Write the recording kept in state_dir as NDJSON or CSV (whether or not an agent runs).
    Export(ExportArgs),
    /// Replay a recording under a candidate configuration and print what it would have done
    /// beside what the recorded one did.
    Replay(ReplayArgs),
    /// Write the recording kept in state_dir as one self-contained HTML report.
    Report(ReportArgs),
    /// Print a shell completion script, e.g. `perfpilot completions bash >
    /// /etc/bash_completion.d/perfpilot`.
    Completions(CompletionsArgs),
    /// Print the manual page (`perfpilot man | man -l -`), or write every page into a directory.
    Man(ManArgs),
    /// Print the JSON Schema of the configuration file, for editors (e.g. `perfpilot schema >
    /// perfpilot.schema.json`, then `#:schema ./perfpilot.schema.json` atop perfpilot.toml).
    Schema,
}

/// `perfpilot replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording: a state_dir, its `recording/` directory, or one segment file.
    #[arg(long, value_name = "DIR|FILE")]
    pub recording: PathBuf,
    /// The candidate configuration (TOML); the environment is not read.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// One candidate per value: the configuration with KEY set to each (one row each), e.g.
    /// `budgets.memory.goal=0.6,0.7,0.8`.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub sweep: Option<String>,
    /// Also write the comparison as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// `perfpilot report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// From when: a duration back from now (`24h`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", default_value = "24h")]
    pub since: String,
    /// Until when, written like `--since` (default: now).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Write here instead of to standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The recording: a state_dir (default: the state_dir of the configuration).
    #[arg(long, value_name = "DIR")]
    pub recording: Option<PathBuf>,
    /// TOML configuration file whose state_dir holds the recording (default:
    /// ./perfpilot.toml if present; PERFPILOT_STATE_DIR wins as for the agent).
    #[arg(long, short, env = "PERFPILOT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `perfpilot export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// From when: a duration back from now (`24h`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", default_value = "24h")]
    pub since: String,
    /// Until when, written like `--since` (default: now).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// `ndjson` (samples, runs, episodes, wakes, OOM kills, exhaustions, reloads; one object
    /// a line) or `csv` (the samples only, a column per signal).
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: ExportFormat,
    /// Write here instead of to standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The recording: a state_dir (default: the state_dir of the configuration).
    #[arg(long, value_name = "DIR")]
    pub recording: Option<PathBuf>,
    /// TOML configuration file whose state_dir holds the recording (default:
    /// ./perfpilot.toml if present; PERFPILOT_STATE_DIR wins as for the agent).
    #[arg(long, short, env = "PERFPILOT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `perfpilot export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object a line.
    Ndjson,
    /// Comma-separated samples with a header row.
    Csv,
}

/// `perfpilot completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell the script is for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `perfpilot man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `perfpilot.1` and a page per subcommand (`perfpilot-run.1`...) into this directory
    /// instead of printing `perfpilot.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `perfpilot signals`.
#[derive(Debug, Args)]
pub struct SignalsArgs {
    /// Print JSON (one object per signal) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags that shape the configuration.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML configuration file (default: ./perfpilot.toml if present).
    #[arg(long, short, env = "PERFPILOT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address the HTTP API listens on (default 127.0.0.1:9750).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Evaluate triggers and log what would run, without acting.
    #[arg(long)]
    pub dry_run: bool,
    /// Sampling interval, e.g. 5s or 250ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Memory budget, e.g. 512MiB (used when no cgroup limit is tighter).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Log format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// Log level or filter (RUST_LOG wins when set).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Allow listening on a non-loopback address without an API token.
    #[arg(long)]
    pub insecure: bool,
    /// This agent's name: `workerId` in the API, the `worker` label in /metrics (default
    /// `<hostname>-<pid>`).
    #[arg(long, value_name = "ID")]
    pub worker_id: Option<String>,
    /// Sidecar mode: watch this process instead of the agent's own.
    #[arg(long, value_name = "PID", group = "target")]
    pub target_pid: Option<u32>,
    /// Sidecar mode: watch the pid written in this file, following it when it changes.
    #[arg(long, value_name = "PATH", group = "target")]
    pub target_pidfile: Option<PathBuf>,
    /// Sidecar mode: watch the process listening on this TCP port.
    #[arg(long, value_name = "PORT", group = "target")]
    pub target_port: Option<u16>,
    /// Sidecar mode: watch every process of this cgroup v2 (a systemd service, or a pod's
    /// cgroup from an agent on the node; a sidecar in the pod cannot see it): a directory
    /// under the cgroup v2 mount or a path relative to it.
    #[arg(long, value_name = "PATH", group = "target")]
    pub target_cgroup: Option<PathBuf>,
    /// GET this http:// URL every probe.period (default 1s) for latency and error rate.
    #[arg(long, value_name = "URL")]
    pub probe_url: Option<String>,
}

/// `perfpilot run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a running agent is.
#[derive(Debug, Args)]
pub struct AgentUrl {
    /// Base URL of the agent's API.
    #[arg(long, env = "PERFPILOT_URL", default_value = "http://127.0.0.1:9750")]
    pub url: String,
    /// API token, when the agent requires one.
    #[arg(long, env = "PERFPILOT_API__TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `perfpilot metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The agent.
    #[command(flatten)]
    pub agent: AgentUrl,
    /// Print the raw JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Summarize the agent's recording from this long ago (`10m`) or this RFC 3339 time
    /// instead of the latest sample: each signal's min, mean, max and last, the runs and
    /// episodes (`GET /performance-metrics/history`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

/// `perfpilot watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The agent.
    #[command(flatten)]
    pub agent: AgentUrl,
    /// Refresh period (default: the agent's sampling interval, at least 200ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,
}

/// `perfpilot optimize`.
#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Strategy name or alias (memory-purge, cache, cpu...); all when omitted.
    pub strategy: Option<String>,
    /// The agent.
    #[command(flatten)]
    pub agent: AgentUrl,
    /// Print the raw JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `perfpilot reset-learning`.
#[derive(Debug, Args)]
pub struct ResetLearningArgs {
    /// Budget name; all when omitted.
    pub budget: Option<String>,
    /// The agent.
    #[command(flatten)]
    pub agent: AgentUrl,
    /// Print the raw JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `perfpilot reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The agent.
    #[command(flatten)]
    pub agent: AgentUrl,
    /// Print the raw JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl ConfigArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            dry_run: self.dry_run,
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            log_level: self.log_level.clone(),
            insecure: self.insecure,
            worker_id: self.worker_id.clone(),
            memory_budget: self.memory_budget,
            interval: self.interval,
            target_pid: self.target_pid,
            target_pidfile: self.target_pidfile.clone(),
            target_port: self.target_port,
            target_cgroup: self.target_cgroup.clone(),
            probe_url: self.probe_url.clone(),
        }
    }

    /// Loads the configuration from every layer, or says why not.
    fn load(&self) -> Result<config::Loaded, String> {
        self.source().load().map_err(|e| e.to_string())
    }

    /// The file, this process's environment (read now, once) and the flags: where the
    /// configuration is loaded from, at start and on every reload.
    fn source(&self) -> crate::reload::ConfigSource {
        let env: HashMap<String, String> = std::env::vars().collect();
        crate::reload::ConfigSource::new(self.config.clone(), env, self.overrides())
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    perfpilot_strategies::duration::parse(text)
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    config::bytes::parse(text)
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Run(_)) {
        crate::sys::default_sigpipe();
    }
    let result = match cli.command {
        Command::Run(args) => serve::run(&args.config),
        Command::CheckConfig(args) => args.load().map(|loaded| {
            print!("{}", loaded.render());
        }),
        Command::Strategies(args) => args.load().map(|loaded| {
            print!("{}", table::strategies(&loaded.config));
            print!("{}", table::budgets(&loaded.config));
        }),
        Command::Metrics(args) => client::metrics(&args),
        Command::Watch(args) => client::watch(&args),
        Command::Optimize(args) => client::optimize(&args),
        Command::Signals(args) => {
            use perfpilot_strategies::signals;
            match args.json {
                true => println!("{:#}", signals::json()),
                false => print!("{}", signals::text_table()),
            }
            Ok(())
        }
        Command::Reload(args) => client::reload(&args),
        Command::ResetLearning(args) => client::reset_learning(&args),
        Command::Export(args) => export::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Report(args) => export::report(&args),
        Command::Completions(args) => reference::completions(args.shell),
        Command::Man(args) => reference::man(args.dir.as_deref()),
        Command::Schema => {
            println!("{:#}", crate::config::schema::json_schema());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("perfpilot: {message}");
            ExitCode::from(2)
        }
    }
}
