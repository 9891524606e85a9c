//! The sidecar's target (`[target]`): which process to watch, described (`crate::sample` finds it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::target::Target;

/// The process a sidecar agent watches (`[target]`): at most one of `pid`, `pidfile`, `port`
/// and `cgroup`; none: the agent watches its own process. See [`Target`] for how each is
/// found and followed across restarts. Command-line flags (`--target-pid`, `--target-pidfile`,
/// `--target-port`, `--target-cgroup`) replace the whole section: a flag's target wins over a
/// file's of another kind. The latency probe (`[probe]`) combines with any of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// Watch this pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Watch the pid written in this file, followed when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// Watch the process listening on this TCP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// Watch every process of this cgroup v2: a directory under the cgroup v2 mount
    /// (`/sys/fs/cgroup/system.slice/demo.service`) or a path relative to it
    /// (`system.slice/demo.service`, `/kubepods.slice/...` as `/proc/<pid>/cgroup` shows it).
    /// It must exist when the agent loads the configuration (checked by
    /// `perfpilot::sample::host_problems`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

impl TargetConfig {
    /// The configured target; `None` when none is set (or, in an invalid config, several).
    pub fn selected(&self) -> Option<Target> {
        match (self.pid, &self.pidfile, self.port, &self.cgroup) {
            (Some(pid), None, None, None) => Some(Target::Pid(pid)),
            (None, Some(path), None, None) => Some(Target::Pidfile(path.clone())),
            (None, None, Some(port), None) => Some(Target::Port(port)),
            (None, None, None, Some(path)) => Some(Target::Cgroup(path.clone())),
            _ => None,
        }
    }

    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let shown = |path: &PathBuf| format!("{:?}", path.display().to_string());
        let set: Vec<(&str, String)> = [
            self.pid.map(|pid| ("target.pid", pid.to_string())),
            self.pidfile
                .as_ref()
                .map(|path| ("target.pidfile", shown(path))),
            self.port.map(|port| ("target.port", port.to_string())),
            self.cgroup
                .as_ref()
                .map(|path| ("target.cgroup", shown(path))),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let [(key, value), others @ ..] = set.as_slice() {
            if !others.is_empty() {
                let others: String = others.iter().map(|(k, v)| format!(", {k} = {v}")).collect();
                problems.push(Problem::new(
                    *key,
                    format!("{value}{others}"),
                    "set at most one of target.pid, target.pidfile, target.port and target.cgroup",
                ));
            }
        }
        if self.pid == Some(0) {
            problems.push(Problem::new("target.pid", 0, "must be a positive pid"));
        }
        if self.port == Some(0) {
            problems.push(Problem::new("target.port", 0, "must be in 1..=65535"));
        }
        if self
            .pidfile
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            problems.push(Problem::new("target.pidfile", "\"\"", "must be a path"));
        }
        problems
    }
}
