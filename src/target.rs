//! The description of a target: which process a sidecar agent watches ([`Target`]). Data only,
//! shared by the configuration that names it and the sampler that finds it
//! (`perfpilot::sample`, whose `target` module says how each kind is found and followed across
//! restarts).

use std::fmt;
use std::path::PathBuf;

/// The process a sidecar agent watches, and how it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This pid.
    Pid(u32),
    /// The pid written in this file.
    Pidfile(PathBuf),
    /// The process that owns the TCP socket listening on this port (IPv4 or IPv6).
    Port(u16),
    /// Every process of this cgroup v2 (a Kubernetes pod, a systemd service).
    Cgroup(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pid(pid) => write!(f, "pid {pid}"),
            Target::Pidfile(path) => write!(f, "pidfile {}", path.display()),
            Target::Port(port) => write!(f, "port {port}"),
            Target::Cgroup(path) => write!(f, "cgroup {}", path.display()),
        }
    }
}
