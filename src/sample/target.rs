//! Sidecar targeting: which process the agent watches ([`Target`]), finding its pid again when
//! it restarts, publishing whether it runs ([`TargetHandle`]), and sampling it: its own
//! signals, and its open file descriptors and TCP connections (counted by
//! `super::connection_count`).
//!
//! How each [`Target`] is found and followed:
//!
//! | kind | found | followed across restarts |
//! |---|---|---|
//! | `Pid(n)` | `/proc/<n>` | no: a pid that disappears is reported not found; the first process seen at the pid is remembered by its start time (`/proc/<n>/stat` field 22), and another process given the same pid later is refused (not found, the reason says the pid was reused) |
//! | `Pidfile(path)` | the first line of the file, read on every sample (a few µs) | yes: a pid that changes in the file is followed at the next sample |
//! | `Cgroup(path)` | the cgroup v2 directory `path` (absolute under the v2 mount, or relative to it): every process in its `cgroup.procs`, sampled as a group (see [`super::group`]) | yes: the group's members are read on every sample; a removed cgroup is reported not found, and followed again when created at the same path |
//! | `Port(p)` | the socket LISTENing on TCP port `p` in `/proc/net/tcp` and `tcp6` (state `0A`), then the process with `socket:[inode]` in `/proc/*/fd` | yes: looked for again only when the pid is unknown, has exited or no longer listens on `p` |
//!
//! With several owners of the listening socket (a pre-forking server's master and workers),
//! the oldest process is watched. Another user's processes can be found by port only with
//! `CAP_SYS_PTRACE` (their `fd` directories are private).
//!
//! A sample of a running target reads `/proc/<pid>/{statm,stat}`, the size of
//! `/proc/<pid>/fd` (`open_fds`: the kernel reports the count since Linux 6.2, without listing
//! it), and counts `open_connections` with netlink `sock_diag`: the kernel returns only the
//! established sockets on the target's listening ports, counted without building records
//! (see [`ConnectionsMethod`] for the namespaces and the `/proc/<pid>/net/tcp` fallback). The
//! fd links, which say which listening sockets are the target's, are read only when the
//! namespace's listening sockets or the pid change. A count is made only when the
//! namespace's TCP counters (`/proc/<pid>/net/snmp`) show a connection opened or closed,
//! and is estimated between counts while counting is costly (see [`ConnectionsBasis`]): so a
//! sample beside 10,000 steady connections costs what it costs beside none
//! (`scripts/bench-scale.sh` measures it). Finding a pid by port costs about 5 ms (the
//! tables plus every `/proc/*/fd`), only when the pid is unknown.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use perfpilot_strategies::Snapshot;
use serde::Serialize;
use tracing::{info, warn};

use super::connection_count::{
    self, socket_inode, tcp_sockets, ConnectionsBasis, ConnectionsMethod, SocketScan, TCP_LISTEN,
};
use super::group::GroupSampler;
use super::procfs::{self, pid_dir};
use super::ProcessSampler;
use crate::target::Target;
use crate::wire_time::serialize_rfc3339;

/// Whether the target runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TargetState {
    /// A process matches and is sampled (for a cgroup: it has at least one process).
    Running,
    /// No process matches: no such pid (or a zombie), pidfile missing or without a pid,
    /// nothing listening on the port, or the cgroup does not exist or has no processes. The
    /// reason says which.
    NotFound,
}

/// The target as the API shows it (`target` in `GET /health` and `/performance-metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// How the target is chosen: `pid 4242`, `pidfile /run/demo.pid`, `port 8080` or
    /// `cgroup system.slice/demo.service`.
    pub selector: String,
    /// The pid watched; `None` while no process matches, and for a cgroup target (see
    /// `processCount` in `currentMetrics`).
    pub pid: Option<u32>,
    /// A cgroup target's directory, once found (absent for other targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cgroup: Option<PathBuf>,
    /// Whether the target runs.
    pub state: TargetState,
    /// Why it is not found, or what cannot be read of it while it runs (e.g. its `fd`
    /// directory, without permission); `None` when all is well.
    pub reason: Option<String>,
    /// Since when `state` and `pid` have held (RFC 3339).
    #[serde(serialize_with = "serialize_rfc3339")]
    #[schema(value_type = String)]
    pub since: SystemTime,
    /// How `openConnections` was last counted: `sock-diag`, `sock-diag-setns` or `proc-net`
    /// (absent until counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionsMethod>,
    /// What the last sample's `openConnections` rests on: `counted` then, `unchanged` since
    /// the last count, or `estimated` from it (see [`ConnectionsBasis`]); absent until counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_basis: Option<ConnectionsBasis>,
}

/// A cheap, cloneable handle to the target's latest status, written by the sampler on every
/// sample and read by the API and the engine.
#[derive(Debug, Clone)]
pub struct TargetHandle {
    status: Arc<Mutex<TargetStatus>>,
}

impl TargetHandle {
    fn new(target: &Target) -> Self {
        TargetHandle {
            status: Arc::new(Mutex::new(TargetStatus {
                selector: target.to_string(),
                pid: None,
                cgroup: None,
                state: TargetState::NotFound,
                reason: Some("not looked for yet".to_owned()),
                since: SystemTime::now(),
                connections: None,
                connections_basis: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TargetStatus> {
        // Nothing can panic while the lock is held; recover anyway.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest status.
    pub fn status(&self) -> TargetStatus {
        self.lock().clone()
    }

    /// The pids of the target while it runs (empty while it is not found): what strategies
    /// acting on the target (`signal`, `command`) act on. One for a pid, pidfile or port
    /// target; for a cgroup target every process in its `cgroup.procs`, read now.
    pub fn target_pids(&self) -> Vec<u32> {
        let status = self.lock();
        match (status.state, status.pid, &status.cgroup) {
            (TargetState::Running, Some(pid), _) => vec![pid],
            (TargetState::Running, None, Some(dir)) => {
                let dir = dir.clone();
                drop(status);
                super::group::pids_of(&dir)
            }
            _ => Vec::new(),
        }
    }

    /// Records the directory of a cgroup target.
    fn set_cgroup(&self, dir: PathBuf) {
        let mut status = self.lock();
        if status.cgroup.as_ref() != Some(&dir) {
            status.cgroup = Some(dir);
        }
    }

    /// Records how connections were counted, and what the last figure rests on.
    fn set_connections(&self, how: Option<(ConnectionsMethod, ConnectionsBasis)>) {
        let mut status = self.lock();
        status.connections = how.map(|(method, _)| method);
        status.connections_basis = how.map(|(_, basis)| basis);
    }

    /// Records a sample's verdict; `since` moves (and a line is logged) only when the state
    /// or the pid changes, or on the `first` verdict.
    fn publish(&self, pid: Option<u32>, state: TargetState, reason: Option<String>, first: bool) {
        let mut status = self.lock();
        if !first && status.state == state && status.pid == pid {
            if status.reason != reason {
                status.reason = reason;
            }
            return;
        }
        match (state, pid) {
            (TargetState::Running, Some(pid)) => {
                info!(target_selector = %status.selector, pid, "target found");
            }
            (TargetState::Running, None) => {
                info!(target_selector = %status.selector, "target found");
            }
            _ => warn!(
                target_selector = %status.selector,
                reason = reason.as_deref().unwrap_or(""),
                "target not running"
            ),
        }
        *status = TargetStatus {
            selector: std::mem::take(&mut status.selector),
            cgroup: status.cgroup.take(),
            connections: status.connections,
            connections_basis: status.connections_basis,
            pid,
            state,
            reason,
            since: SystemTime::now(),
        };
    }
}

/// Finds the target, samples it, and publishes its status.
#[derive(Debug)]
pub(crate) struct TargetTracker {
    target: Target,
    memory_budget: Option<u64>,
    handle: TargetHandle,
    tracked: Option<Tracked>,
    /// The sampler of a cgroup target.
    group: Option<GroupSampler>,
    sockets: SocketScan,
    /// Whether a verdict has been published yet.
    published: bool,
    /// A `Pid` target's start time (clock ticks since boot), once seen: a process at that pid
    /// with another start time is not the target.
    pid_started: Option<u64>,
    /// The memory cgroup of the last process watched: its OOM kills are still read while the
    /// target is gone (the OOM killer may be why).
    oom_cgroup: Option<super::cgroup::MemoryCgroup>,
}

/// The process currently watched.
#[derive(Debug)]
struct Tracked {
    pid: u32,
    /// Its start time when adopted (clock ticks after boot): a pidfile or port target at the
    /// same pid with another start time is another process.
    started: Option<u64>,
    process: ProcessSampler,
    /// The TCP ports it listened on at the last sample; `None` where they could not be read.
    listen_ports: Option<Vec<u16>>,
}

impl TargetTracker {
    pub(crate) fn new(target: Target, memory_budget: Option<u64>) -> Self {
        let group = match &target {
            Target::Cgroup(path) => Some(GroupSampler::new(path.clone(), memory_budget)),
            _ => None,
        };
        TargetTracker {
            group,
            handle: TargetHandle::new(&target),
            target,
            memory_budget,
            tracked: None,
            sockets: SocketScan::default(),
            published: false,
            pid_started: None,
            oom_cgroup: None,
        }
    }

    pub(crate) fn handle(&self) -> TargetHandle {
        self.handle.clone()
    }

    /// Finds the target if needed and fills its process signals, `open_fds` and
    /// `open_connections`; leaves them `None` when it is not running.
    pub(crate) fn sample_into(&mut self, now: Instant, snapshot: &mut Snapshot) {
        let first = !std::mem::replace(&mut self.published, true);
        if let Some(group) = &mut self.group {
            let (state, reason) = match group.sample_into(now, snapshot) {
                Ok(reading) => {
                    self.handle.set_cgroup(reading.dir.clone());
                    if reading.processes == 0 {
                        let reason = format!("cgroup {} has no processes", reading.dir.display());
                        (TargetState::NotFound, Some(reason))
                    } else {
                        (TargetState::Running, reading.problem)
                    }
                }
                Err(reason) => (TargetState::NotFound, Some(reason)),
            };
            self.handle.set_connections(group.connections_counted());
            self.handle.publish(None, state, reason, first);
            return;
        }
        if let Err(reason) = self.resolve() {
            self.tracked = None;
            snapshot.oom_kills = self
                .oom_cgroup
                .as_ref()
                .and_then(super::cgroup::MemoryCgroup::oom_kills);
            self.handle
                .publish(None, TargetState::NotFound, Some(reason), first);
            return;
        }
        let Some(tracked) = self.tracked.as_mut() else {
            return;
        };
        tracked.process.sample_into(now, snapshot);
        if tracked.process.oom_cgroup.is_some() {
            self.oom_cgroup.clone_from(&tracked.process.oom_cgroup);
        }
        let dir = tracked.process.dir();
        let pid = tracked.pid;
        let mut problems = Vec::new();
        match connection_count::count_fds(dir) {
            Ok(fds) => snapshot.open_fds = Some(fds),
            Err(e) => problems.push(format!(
                "cannot read {}/fd ({e}): open_fds absent; run the agent as the target's user \
                 or with CAP_SYS_PTRACE",
                dir.display()
            )),
        }
        match self.sockets.count_connections(&[pid], u64::from(pid)) {
            Ok(count) => {
                snapshot.open_connections = Some(count);
                if tracked.listen_ports.as_deref() != Some(self.sockets.listen_ports()) {
                    tracked.listen_ports = Some(self.sockets.listen_ports().to_vec());
                }
            }
            Err(reason) => {
                tracked.listen_ports = None;
                problems.push(reason);
            }
        }
        self.handle.set_connections(self.sockets.counted());
        let reason = (!problems.is_empty()).then(|| problems.join("; "));
        self.handle
            .publish(Some(pid), TargetState::Running, reason, first);
    }

    /// What the fast watch reads of the target: its process, or for a cgroup target the
    /// cgroup; `None` while it is not found (the last probe stays published).
    pub(crate) fn memory_probe(&self) -> Option<super::watch::MemoryProbe> {
        if let Some(group) = &self.group {
            return group.memory_probe();
        }
        self.tracked.as_ref().map(|t| t.process.memory_probe())
    }

    /// Makes `self.tracked` the target's current process, or says why there is none.
    fn resolve(&mut self) -> Result<(), String> {
        if let Some(tracked) = &mut self.tracked {
            let still_listening = match (&self.target, &tracked.listen_ports) {
                (Target::Port(port), Some(ports)) => ports.contains(port),
                _ => true,
            };
            if !tracked.process.is_running() || !still_listening {
                self.tracked = None;
            }
        }
        let pid = match &self.target {
            Target::Pid(pid) => {
                let started = fs::read_to_string(pid_dir(*pid).join("stat"))
                    .ok()
                    .and_then(|text| procfs::parse_stat_start_ticks(&text));
                if let Err(reason) = same_process(*pid, self.pid_started, started) {
                    self.tracked = None;
                    return Err(reason);
                }
                if is_running(*pid) {
                    self.pid_started = self.pid_started.or(started);
                }
                *pid
            }
            Target::Pidfile(path) => {
                let (pid, owner) = super::adopt::read_pidfile(path)?;
                super::adopt::check_process(pid, Some(owner))?;
                if let Some(tracked) = self.tracked.as_ref().filter(|t| t.pid == pid) {
                    let now = super::adopt::start_ticks(pid);
                    if let Err(reason) = same_process(pid, tracked.started, now) {
                        self.tracked = None;
                        return Err(format!("pidfile {}: {reason}", path.display()));
                    }
                }
                pid
            }
            Target::Port(port) => {
                let adopted = self.tracked.as_ref().map(|t| (t.pid, t.started));
                let pid = match adopted {
                    Some((pid, started))
                        if same_process(pid, started, super::adopt::start_ticks(pid)).is_ok() =>
                    {
                        pid
                    }
                    _ => {
                        self.tracked = None;
                        find_listener(*port)?
                    }
                };
                super::adopt::check_process(pid, None)?;
                pid
            }
            // Sampled by its GroupSampler above; never resolved to one pid.
            Target::Cgroup(path) => {
                return Err(format!("cgroup {} has no single pid", path.display()))
            }
        };
        if self.tracked.as_ref().is_some_and(|t| t.pid == pid) {
            return Ok(());
        }
        if !is_running(pid) {
            return Err(match &self.target {
                Target::Pidfile(path) => {
                    format!("pid {pid} from pidfile {} is not running", path.display())
                }
                _ => format!("no process with pid {pid} is running"),
            });
        }
        self.tracked = Some(Tracked {
            pid,
            started: super::adopt::start_ticks(pid),
            process: ProcessSampler::open(pid_dir(pid), self.memory_budget),
            listen_ports: None,
        });
        Ok(())
    }
}

/// Whether the process at `pid`, started at `now` (clock ticks since boot, `None`: no such
/// process), is the target first seen there at `remembered`. A different start time means
/// the target exited and the kernel gave its pid to another process.
fn same_process(pid: u32, remembered: Option<u64>, now: Option<u64>) -> Result<(), String> {
    match (remembered, now) {
        (Some(target), Some(now)) if target != now => Err(format!(
            "pid {pid} now belongs to another process (started {now} clock ticks after boot, \
             the target at {target}): the target exited and its pid was reused; not watching \
             or acting on it"
        )),
        _ => Ok(()),
    }
}

/// Whether `/proc/<pid>` is a live process (not a zombie).
fn is_running(pid: u32) -> bool {
    fs::read_to_string(pid_dir(pid).join("stat"))
        .ok()
        .and_then(|text| procfs::parse_stat_state(&text))
        .is_some_and(procfs::state_is_running)
}

/// The process owning the socket that listens on `port`, or why there is none. When several
/// processes hold it, the one that started first.
fn find_listener(port: u16) -> Result<u32, String> {
    let mut listening = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        listening.extend(
            tcp_sockets(&text)
                .filter(|s| s.state == TCP_LISTEN && s.local_port == port)
                .map(|s| s.inode),
        );
    }
    listening.remove(&0);
    if listening.is_empty() {
        return Err(format!("nothing listens on TCP port {port}"));
    }
    let owners = socket_owners(&listening);
    owners
        .into_iter()
        .min_by_key(|&pid| {
            let start = fs::read_to_string(pid_dir(pid).join("stat"))
                .ok()
                .and_then(|text| procfs::parse_stat_start_ticks(&text));
            (start.unwrap_or(u64::MAX), pid)
        })
        .ok_or_else(|| {
            format!(
                "a socket listens on TCP port {port} but no process this agent may inspect owns \
                 it (another user's? run the agent as that user or with CAP_SYS_PTRACE)"
            )
        })
}

/// The pids whose `fd` directory holds one of `inodes` (processes whose `fd` cannot be read
/// are skipped).
fn socket_owners(inodes: &HashSet<u64>) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut owners = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|link| socket_inode(link.as_os_str().as_bytes()))
                .is_some_and(|inode| inodes.contains(&inode))
        });
        if owns {
            owners.push(pid);
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_with_another_start_time_is_not_the_target() {
        assert_eq!(same_process(42, None, Some(100)), Ok(()), "first sight");
        assert_eq!(same_process(42, Some(100), Some(100)), Ok(()));
        assert_eq!(
            same_process(42, Some(100), None),
            Ok(()),
            "gone is not reuse"
        );
        let reason = same_process(42, Some(100), Some(250)).unwrap_err();
        assert!(
            reason.starts_with("pid 42 now belongs to another process (started 250")
                && reason.contains("the target at 100")
                && reason.contains("reused"),
            "{reason}"
        );
    }

    /// Starts `sleep 60` at pid `pid` through `/proc/sys/kernel/ns_last_pid` (root only), in
    /// at most 200 tries (other processes on the machine may take the pid first).
    fn spawn_at_pid(pid: u32) -> Option<std::process::Child> {
        for _ in 0..200 {
            fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
            let mut child = std::process::Command::new("sleep").arg("60").spawn().ok()?;
            if child.id() == pid {
                return Some(child);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        None
    }

    #[test]
    fn a_reused_target_pid_is_refused_not_adopted() {
        if !crate::test_support::is_root() {
            return crate::test_support::skip(
                "forcing a reused pid needs root (writes /proc/sys/kernel/ns_last_pid)",
            );
        }
        let mut first = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = first.id();
        let mut tracker = TargetTracker::new(Target::Pid(pid), None);
        let handle = tracker.handle();
        let sample = |tracker: &mut TargetTracker| {
            let mut snapshot = Snapshot::empty(SystemTime::now());
            tracker.sample_into(Instant::now(), &mut snapshot);
            snapshot
        };
        sample(&mut tracker);
        assert_eq!(handle.status().state, TargetState::Running);
        assert_eq!(handle.target_pids(), [pid]);

        first.kill().unwrap();
        first.wait().unwrap();
        sample(&mut tracker);
        assert_eq!(handle.status().state, TargetState::NotFound);

        // Start times count clock ticks (10 ms): a process given the pid within the same tick
        // would look the same, so the impostor starts a few ticks after the target did.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let Some(mut impostor) = spawn_at_pid(pid) else {
            return crate::test_support::skip(&format!(
                "could not get pid {pid} again through ns_last_pid in 200 tries"
            ));
        };
        let snapshot = sample(&mut tracker);
        let status = handle.status();
        let _ = impostor.kill();
        let _ = impostor.wait();
        assert_eq!(status.state, TargetState::NotFound, "{status:?}");
        assert!(
            status
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("pid was reused"),
            "{status:?}"
        );
        assert!(handle.target_pids().is_empty(), "nothing to signal");
        assert_eq!(snapshot.rss_bytes, None, "the other process is not sampled");
    }

    #[test]
    fn a_pidfile_is_followed_when_it_changes_and_reported_when_missing() {
        let dir = tempfile::tempdir().expect("create a temp directory");
        let path = dir.path().join("service.pid");
        let mut tracker = TargetTracker::new(Target::Pidfile(path.clone()), None);
        let handle = tracker.handle();
        let sample = |tracker: &mut TargetTracker| {
            let mut snapshot = Snapshot::empty(SystemTime::now());
            tracker.sample_into(Instant::now(), &mut snapshot);
            snapshot
        };

        let snapshot = sample(&mut tracker);
        assert_eq!(snapshot.rss_bytes, None);
        let status = handle.status();
        assert_eq!((status.state, status.pid), (TargetState::NotFound, None));
        assert!(
            status
                .reason
                .as_deref()
                .unwrap()
                .contains("cannot read pidfile"),
            "{status:?}"
        );
        assert!(handle.target_pids().is_empty());

        fs::write(&path, "not a pid\n").unwrap();
        sample(&mut tracker);
        assert!(handle
            .status()
            .reason
            .unwrap()
            .contains("does not hold a pid: \"not a pid\\n\""));

        // A child of this test is a live target (the agent itself, here the test process,
        // is never adopted).
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = child.id();
        fs::write(&path, format!("{me}\n")).unwrap();
        let snapshot = sample(&mut tracker);
        assert!(
            snapshot.rss_bytes.is_some_and(|rss| rss > 0),
            "{snapshot:?}"
        );
        assert!(
            snapshot.open_fds.is_some_and(|fds| fds >= 3),
            "{snapshot:?}"
        );
        assert!(snapshot.uptime.is_some());
        let status = handle.status();
        assert_eq!((status.state, status.pid), (TargetState::Running, Some(me)));
        assert_eq!(handle.target_pids(), [me]);
        let since = status.since;
        // The second sample of the target has a window: its major page faults per second
        // (field 12 of /proc/<pid>/stat).
        let snapshot = sample(&mut tracker);
        assert_eq!(handle.status().since, since, "unchanged state keeps since");
        assert!(
            snapshot
                .major_faults_per_second
                .is_some_and(|f| f.is_finite() && f >= 0.0),
            "{snapshot:?}"
        );

        // A pid that is not running (pids are below 2^22 on Linux).
        fs::write(&path, "4194303\n").unwrap();
        let snapshot = sample(&mut tracker);
        assert_eq!(snapshot.rss_bytes, None);
        let status = handle.status();
        assert_eq!(status.state, TargetState::NotFound);
        assert!(
            status
                .reason
                .as_deref()
                .unwrap()
                .contains("pid 4194303 from pidfile"),
            "{status:?}"
        );

        fs::remove_file(&path).unwrap();
        sample(&mut tracker);
        assert_eq!(handle.status().state, TargetState::NotFound);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn the_status_serializes_in_camel_case_with_kebab_states() {
        let handle = TargetHandle::new(&Target::Port(8080));
        let json = serde_json::to_value(handle.status()).unwrap();
        assert_eq!(json["selector"], "port 8080");
        assert_eq!(json["state"], "not-found");
        assert!(json["pid"].is_null());
        assert!(json["since"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_port_nobody_listens_on_is_not_found() {
        // Bind and drop to get a port that is very likely free.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(
            find_listener(port),
            Err(format!("nothing listens on TCP port {port}"))
        );
    }

    #[test]
    fn this_process_is_found_by_its_listening_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(find_listener(port), Ok(std::process::id()));
    }

    #[test]
    fn a_target_sample_counts_its_connections_and_says_how() {
        let Some((_child, pid)) = connection_count::tests::start_server(40, false) else {
            return;
        };
        let mut tracker = TargetTracker::new(Target::Pid(pid), None);
        let mut snapshot = Snapshot::empty(SystemTime::now());
        tracker.sample_into(Instant::now(), &mut snapshot);
        assert_eq!(snapshot.open_connections, Some(40));
        // 80 sockets and at least stdin, stdout, stderr.
        assert!(snapshot.open_fds.is_some_and(|n| n >= 83), "{snapshot:?}");
        let status = tracker.handle().status();
        assert_eq!(status.connections, Some(ConnectionsMethod::SockDiag));
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["connections"], "sock-diag");
        assert_eq!(
            json["connectionsBasis"], "counted",
            "the first sample counts"
        );
    }

    /// The cost of sampling a target with 200 established loopback connections (this process
    /// holds both ends, so it has about 400 socket fds). Run with
    /// `cargo test --release --lib sample_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a test; run it in release"]
    fn sample_cost_with_200_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accept as they come: the listen backlog is shorter than 200.
        let pairs: Vec<_> = (0..200)
            .map(|_| {
                let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                (client, listener.accept().unwrap().0)
            })
            .collect();
        let me = std::process::id();
        let dir = pid_dir(me);
        let median = |f: Box<dyn FnMut() + '_>| crate::sample::median_time(201, f);
        let fds = connection_count::count_fds(&dir).unwrap();
        let count_fds_time = median(Box::new(|| {
            connection_count::count_fds(&dir).unwrap();
        }));
        let mut netlink = SocketScan::default();
        let by_netlink = median(Box::new(|| {
            assert!(netlink.count_connections(&[me], 1).unwrap() >= 200);
        }));
        let mut proc_net = SocketScan::proc_net_only();
        let by_proc_net = median(Box::new(|| {
            assert!(proc_net.count_connections(&[me], 1).unwrap() >= 200);
        }));
        let mut tracker = TargetTracker::new(Target::Pid(me), None);
        let whole = median(Box::new(|| {
            let mut snapshot = Snapshot::empty(SystemTime::now());
            tracker.sample_into(Instant::now(), &mut snapshot);
            assert!(snapshot.open_connections.is_some_and(|n| n >= 200));
        }));
        let find = median(Box::new(|| {
            assert_eq!(find_listener(port), Ok(me));
        }));
        println!("fds: {fds}");
        println!("| step | median |\n|---|---|");
        println!("| count fds (size of /proc/<pid>/fd) | {count_fds_time:?} |");
        println!("| connections by netlink sock_diag | {by_netlink:?} |");
        println!("| connections by /proc/<pid>/net/tcp{{,6}} + fd links | {by_proc_net:?} |");
        println!("| whole target sample | {whole:?} |");
        println!("| find the pid by port (tcp tables + every /proc/*/fd) | {find:?} |");
        drop(pairs);
    }
}
