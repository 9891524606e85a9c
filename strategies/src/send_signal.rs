//! `signal`: send a configured Unix signal to the sidecar target, e.g. `SIGUSR1` to make it
//! drop its caches or `SIGHUP` to make it reload. (Named `send_signal` so that it is not taken
//! for [`signals`](crate::signals), the table of the metrics a trigger watches.)
//!
//! ```toml
//! [strategies.signal.drop-caches]
//! signal = "USR1"
//! [strategies.signal.drop-caches.trigger]
//! signal = "memory_usage"
//! above = 0.85
//! ```

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;
use crate::strategy::{Context, Outcome, Strategy, StrategyError};
use crate::trigger::TriggerSpec;

/// Settings of one `signal` instance (`[strategies.signal.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
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
    /// The signal sent, by name: `"SIGUSR1"`, `"USR1"` or `"usr1"`; one of [`SIGNALS`].
    pub signal: String,
}

impl SignalConfig {
    /// Every problem with the settings (not the trigger), each naming its key under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<Problem> {
        match parse_signal(&self.signal) {
            Some(_) => Vec::new(),
            None => vec![Problem::new(
                format!("{prefix}.signal"),
                format!("{:?}", self.signal),
                format!(
                    "unknown signal (use one of {})",
                    SIGNALS.map(|(name, _)| name).join(", ")
                ),
            )],
        }
    }

    /// The strategy these settings describe, registered as `name`. An unknown signal (which
    /// [`problems`](Self::problems) rejects) makes every run fail with the reason.
    pub fn build(&self, name: &str) -> SendSignal {
        let signal = parse_signal(&self.signal);
        SendSignal {
            name: name.to_owned(),
            description: match signal {
                Some((name, _)) => format!("send SIG{name} to the target process"),
                None => format!("send {:?} (unknown) to the target process", self.signal),
            },
            signal: signal.ok_or_else(|| self.signal.clone()),
        }
    }
}

/// The signals a `signal` strategy may send, by name without the `SIG` prefix.
pub const SIGNALS: [(&str, libc::c_int); 16] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ABRT", libc::SIGABRT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("WINCH", libc::SIGWINCH),
    ("URG", libc::SIGURG),
];

/// A signal's name (without `SIG`, upper case) and number, from `"SIGUSR1"`, `"USR1"`,
/// `"usr1"`...; `None` for a name not in [`SIGNALS`].
pub fn parse_signal(text: &str) -> Option<(&'static str, libc::c_int)> {
    let upper = text.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.into_iter().find(|(name, _)| *name == bare)
}

/// Sends a signal to every process of the sidecar target ([`Context::targets`]).
#[derive(Debug, Clone)]
pub struct SendSignal {
    name: String,
    description: String,
    /// The signal, or the unknown name configured.
    signal: Result<(&'static str, libc::c_int), String>,
}

impl SendSignal {
    /// The kind's name: the `[strategies.signal]` table.
    pub const KIND: &'static str = "signal";
}

#[async_trait]
impl Strategy for SendSignal {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        Self::KIND
    }

    fn acts_on(&self) -> String {
        match &self.signal {
            Ok((name, _)) if name.starts_with("SIG") => format!("{name} to the target's processes"),
            Ok((name, _)) => format!("SIG{name} to the target's processes"),
            Err(unknown) => format!("{unknown} (unknown signal) to the target's processes"),
        }
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        let (name, number) = self.signal.clone().map_err(|unknown| {
            StrategyError::Failed(format!("unknown signal {unknown:?}: nothing sent"))
        })?;
        if ctx.targets.is_empty() {
            return Err(StrategyError::Unavailable(
                "no target process to signal (start the agent with --target-pid, --target-pidfile or --target-port)".into(),
            ));
        }
        let mut failures = Vec::new();
        let mut signalled = Vec::new();
        for &pid in &ctx.targets {
            match send(pid, number) {
                Ok(()) => signalled.push(pid),
                Err(why) => failures.push(why),
            }
        }
        if !failures.is_empty() {
            let mut message = failures.join("; ");
            if !signalled.is_empty() {
                message.push_str(&format!(" (SIG{name} was sent to {signalled:?})"));
            }
            return Err(StrategyError::Failed(message));
        }
        Ok(Outcome::acted(format!("sent SIG{name} to {signalled:?}"))
            .with("signal", format!("SIG{name}"))
            .with("pids", signalled))
    }
}

/// `kill(pid, signal)`, refusing pids that would address a process group.
fn send(pid: u32, signal: libc::c_int) -> Result<(), String> {
    // 0 and negative pids mean process groups (the agent's own, with 0): never those.
    let Err(error) = crate::sys::kill(pid, signal) else {
        return Ok(());
    };
    if error.kind() == std::io::ErrorKind::InvalidInput {
        return Err(format!("{pid} is not a process id"));
    }
    Err(match error.raw_os_error() {
        Some(libc::ESRCH) => format!("target process {pid} no longer exists"),
        Some(libc::EPERM) => {
            format!(
                "not permitted to signal target process {pid} (EPERM: run the agent as its user)"
            )
        }
        _ => format!("cannot signal target process {pid}: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Signal;

    #[test]
    fn names_parse_with_or_without_sig_in_any_case() {
        for text in ["SIGUSR1", "USR1", "usr1", "SigUsr1", " sigusr1 "] {
            assert_eq!(parse_signal(text), Some(("USR1", libc::SIGUSR1)), "{text}");
        }
        assert_eq!(parse_signal("hup"), Some(("HUP", libc::SIGHUP)));
        assert_eq!(parse_signal("SIGTERM"), Some(("TERM", libc::SIGTERM)));
        assert_eq!(parse_signal("SIGFOO"), None);
        assert_eq!(parse_signal("9"), None);
        assert_eq!(parse_signal(""), None);
    }

    #[test]
    fn config_reads_and_unknown_signals_are_problems() {
        let config: SignalConfig = serde_json::from_str(
            r#"{"signal": "usr2", "trigger": {"signal": "memory_usage", "above": 0.9}}"#,
        )
        .unwrap();
        assert!(config.enabled);
        assert_eq!(
            config.trigger,
            Some(TriggerSpec::new(Signal::MemoryUsage, 0.9))
        );
        assert!(config.problems("p").is_empty());
        assert_eq!(
            config.build("reload").description(),
            "send SIGUSR2 to the target process"
        );

        let bad = SignalConfig {
            signal: "SIGFOO".into(),
            ..config
        };
        let problems = bad
            .problems("strategies.signal.reload")
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with(
                "strategies.signal.reload.signal = \"SIGFOO\": unknown signal (use one of HUP, INT,"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn group_pids_are_refused() {
        assert_eq!(send(0, 0), Err("0 is not a process id".to_owned()));
        assert_eq!(
            send(u32::MAX, 0),
            Err(format!("{} is not a process id", u32::MAX))
        );
    }
}
