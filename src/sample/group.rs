//! A cgroup v2 target (`target.cgroup`): a Kubernetes pod, a systemd service, any group of
//! processes sampled as one.
//!
//! | signal | source |
//! |---|---|
//! | `process_count` | lines of `cgroup.procs` |
//! | `oom_kills` | `oom_kill` in `memory.events` |
//! | `memory_usage_bytes` | `memory.current`; without it (the memory controller is not on the v2 hierarchy) the summed RSS of the processes; `memory_usage_source` says which |
//! | `memory_limit_bytes` | the tightest `memory.max` / `memory.high` of the cgroup and its ancestors, else the budget, else total RAM |
//! | `rss_bytes`, `virtual_bytes` | with `memory.current`: `rss_bytes` is `memory.stat` `anon` + `file_mapped` (no per-process read) and `virtual_bytes` is absent; without it, both summed over the processes' `/proc/<pid>/statm` |
//! | `process_cpu_ratio` | change of `cpu.stat` `usage_usec` over the window ÷ (window × the `cpu.max` quota, else the CPUs available) |
//! | `open_fds` | summed sizes of the processes' `/proc/<pid>/fd` (one `stat` each; the entries listed on kernels before 6.2) |
//! | `open_connections` | ESTABLISHED sockets on a port one of the processes LISTENs on, in the first process's network namespace, counted by netlink `sock_diag` (see [`super::target::SocketScan`]); the fd links are read only when the namespace's listening sockets change |
//! | `uptime` | absent: a group has no single start time |
//! | `pressure.cgroup` | the cgroup's `{memory,cpu,io}.pressure` (none for the root cgroup, whose pressure is the system's) |
//!
//! Per-process reads are what grows with the group: one `stat` of `/proc/<pid>/fd` each, and
//! one `statm` each only where the cgroup has no memory controller. `pids.current` is not
//! used: it counts tasks (threads), not processes.
//!
//! `cgroup.procs`, `memory.current`, `memory.stat`, `cpu.stat` and the pressure files stay open; a read that
//! fails (the cgroup was removed) reopens them once, so a cgroup removed and created again at
//! the same path is followed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use perfpilot_strategies::{MemoryUsageSource, Pressure, Snapshot};

use super::cgroup::{self, CgroupLimits};
use super::limits::Limits;
use super::pressure::PressureReader;
use super::procfs::{self, ProcFile};
use super::target::{self, SocketScan};

/// The `owner` of a group's connection counts: the fd links are read again only when the
/// namespace's listening sockets change (a new listener, a restarted one).
const GROUP_OWNER: u64 = u64::MAX;

/// What a sample of the group found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupReading {
    /// The resolved cgroup directory.
    pub(crate) dir: PathBuf,
    /// Processes in it.
    pub(crate) processes: usize,
    /// What could not be read while it exists; `None` when all is well.
    pub(crate) problem: Option<String>,
}

/// Samples one cgroup v2 directory.
#[derive(Debug)]
pub(crate) struct GroupSampler {
    configured: PathBuf,
    memory_budget: Option<u64>,
    open: Option<OpenGroup>,
    pids: Vec<u32>,
    statm: Vec<u8>,
    sockets: SocketScan,
    page_size: u64,
}

/// The files of a resolved cgroup.
#[derive(Debug)]
struct OpenGroup {
    dir: PathBuf,
    procs: ProcFile,
    memory_current: Option<ProcFile>,
    /// Read only with `memory.current`: the group's resident memory without `statm` reads.
    memory_stat: Option<ProcFile>,
    cpu_stat: Option<ProcFile>,
    pressure: Option<PressureReader>,
    limits: Limits,
    /// The cgroup's `memory.events`, for its OOM kills.
    oom: cgroup::MemoryCgroup,
    /// When the previous sample was taken and `usage_usec` then.
    previous_cpu: Option<(Instant, u64)>,
}

impl OpenGroup {
    fn open(configured: &Path, memory_budget: Option<u64>) -> Result<Self, String> {
        let (dir, mount) = cgroup::resolve_v2_dir(configured)?;
        let procs = ProcFile::open(&dir.join("cgroup.procs"), 4096)
            .ok_or_else(|| format!("cannot open {}/cgroup.procs", dir.display()))?;
        Ok(OpenGroup {
            memory_current: ProcFile::open(&dir.join("memory.current"), 64),
            memory_stat: ProcFile::open(&dir.join("memory.stat"), 2048),
            cpu_stat: ProcFile::open(&dir.join("cpu.stat"), 512),
            // The root's pressure is the system's, already in `pressure.system`.
            pressure: (dir != mount)
                .then(|| PressureReader::cgroup(&dir))
                .flatten(),
            limits: Limits::with_cgroup(CgroupLimits::for_v2_dir(&dir, &mount), memory_budget),
            procs,
            oom: cgroup::MemoryCgroup::V2(dir.clone()),
            dir,
            previous_cpu: None,
        })
    }
}

impl GroupSampler {
    /// A sampler of the cgroup `configured` names (see [`cgroup::resolve_v2_dir`]); it is
    /// looked for at each sample until found.
    pub(crate) fn new(configured: PathBuf, memory_budget: Option<u64>) -> Self {
        GroupSampler {
            configured,
            memory_budget,
            open: None,
            pids: Vec::new(),
            statm: Vec::with_capacity(128),
            sockets: SocketScan::default(),
            page_size: perfpilot_strategies::proc_self::page_size(),
        }
    }

    /// What the fast watch reads of the group: its `memory.current` (less inactive file
    /// cache once past the lowest threshold) against its limit; `None` until it is found.
    pub(crate) fn memory_probe(&self) -> Option<super::watch::MemoryProbe> {
        let group = self.open.as_ref()?;
        Some(super::watch::MemoryProbe {
            statm: None,
            cgroup: Some(group.oom.clone()),
            limit_bytes: group.limits.memory().map(|(limit, _)| limit),
            pressure_dir: group.pressure.is_some().then(|| group.dir.clone()),
        })
    }

    /// How `open_connections` was last counted.
    pub(crate) fn connections_method(&self) -> Option<super::target::ConnectionsMethod> {
        self.sockets.method()
    }

    /// Fills the group's signals, or says why the cgroup cannot be read (it does not exist,
    /// or no longer).
    pub(crate) fn sample_into(
        &mut self,
        now: Instant,
        snapshot: &mut Snapshot,
    ) -> Result<GroupReading, String> {
        self.read_pids()?;
        let group = self.open.as_mut().expect("read_pids opened the group");
        let mut problems = Vec::new();
        snapshot.process_count = Some(self.pids.len() as u64);

        let current = group
            .memory_current
            .as_mut()
            .and_then(|f| f.read(false)?.trim().parse::<u64>().ok());
        // With the memory controller, the kernel's own accounting of the group's resident
        // memory; without it, one `statm` read per process.
        let resident = current
            .and(group.memory_stat.as_mut())
            .and_then(|f| parse_resident_bytes(&f.read(false)?));
        if let Some(bytes) = resident {
            snapshot.rss_bytes = Some(bytes);
        } else {
            let (mut rss, mut virt, mut read_any) = (0u64, 0u64, false);
            for &pid in &self.pids {
                if let Some(statm) = read_statm(pid, &mut self.statm) {
                    rss += statm.resident_bytes * self.page_size;
                    virt += statm.virtual_bytes * self.page_size;
                    read_any = true;
                }
            }
            if read_any {
                snapshot.rss_bytes = Some(rss);
                snapshot.virtual_bytes = Some(virt);
            }
        }
        (snapshot.memory_usage_bytes, snapshot.memory_usage_source) = match current {
            Some(bytes) => (Some(bytes), Some(MemoryUsageSource::CgroupCurrent)),
            None => (
                snapshot.rss_bytes,
                snapshot.rss_bytes.map(|_| MemoryUsageSource::SummedRss),
            ),
        };
        snapshot.oom_kills = group.oom.oom_kills();
        group.limits.refresh_if_due(now);
        if let Some((limit, source)) = group.limits.memory() {
            snapshot.memory_limit_bytes = Some(limit);
            snapshot.memory_limit_source = Some(source);
            snapshot.memory_usage_ratio = snapshot
                .memory_usage_bytes
                .map(|bytes| bytes as f64 / limit as f64);
        }

        let usage = group
            .cpu_stat
            .as_mut()
            .and_then(|f| parse_usage_usec(&f.read(false)?))
            .map(|usec| (now, usec));
        if usage.is_none() {
            problems.push(format!("cannot read {}/cpu.stat", group.dir.display()));
        }
        let previous = std::mem::replace(&mut group.previous_cpu, usage);
        if let (Some((then, before)), Some((now, after)), Some(cpus)) =
            (previous, usage, group.limits.cpus())
        {
            let capacity_us = now.saturating_duration_since(then).as_secs_f64() * 1e6 * cpus;
            snapshot.process_cpu_ratio =
                (capacity_us > 0.0).then(|| after.saturating_sub(before) as f64 / capacity_us);
        }

        let cgroup_pressure = group.pressure.as_mut().and_then(|p| p.read(now));
        snapshot.pressure = cgroup_pressure.map(|set| Pressure {
            system: None,
            cgroup: Some(set),
        });

        let mut fds = 0;
        let mut unreadable = 0;
        for &pid in &self.pids {
            match target::count_fds(&pid_dir(pid)) {
                Ok(count) => fds += count,
                // Exited since `cgroup.procs` was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => unreadable += 1,
            }
        }
        if unreadable > 0 {
            problems.push(format!(
                "cannot read /proc/<pid>/fd of {unreadable} of {} processes: open_fds absent; \
                 run the agent as their user or with CAP_SYS_PTRACE",
                self.pids.len()
            ));
        } else if !self.pids.is_empty() {
            snapshot.open_fds = Some(fds);
        }
        match self.sockets.count_connections(&self.pids, GROUP_OWNER) {
            Ok(count) if !self.pids.is_empty() => snapshot.open_connections = Some(count),
            Ok(_) => {}
            Err(reason) => problems.push(reason),
        }

        Ok(GroupReading {
            dir: group.dir.clone(),
            processes: self.pids.len(),
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
        })
    }

    /// Reads `cgroup.procs` into `self.pids`, opening (or reopening) the cgroup as needed.
    fn read_pids(&mut self) -> Result<(), String> {
        for attempt in 0..2 {
            if self.open.is_none() || attempt == 1 {
                self.open = None;
                self.open = Some(OpenGroup::open(&self.configured, self.memory_budget)?);
            }
            let group = self.open.as_mut().expect("opened above");
            if let Some(text) = group.procs.read(false) {
                self.pids.clear();
                self.pids.extend(parse_procs(&text));
                // A removed cgroup's open file may read as empty: check that it still exists.
                if !self.pids.is_empty() || group.dir.is_dir() {
                    return Ok(());
                }
            }
        }
        let dir = self.open.take().map(|g| g.dir);
        Err(format!(
            "cannot read {}/cgroup.procs",
            dir.unwrap_or_else(|| self.configured.clone()).display()
        ))
    }
}

/// The pids of the cgroup directory `dir` now (the lines of `cgroup.procs`); empty if it
/// cannot be read. What strategies acting on a cgroup target act on.
pub(crate) fn pids_of(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| parse_procs(&text).collect())
        .unwrap_or_default()
}

/// `cgroup.procs`: one pid per line (malformed lines skipped).
pub(crate) fn parse_procs(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.lines().filter_map(|line| line.trim().parse().ok())
}

/// The resident memory in a cgroup v2 `memory.stat`: `anon` (private anonymous pages)
/// plus `file_mapped` (page cache mapped into the processes, shared memory included): what
/// summing the processes' RSS approximates, without counting a shared page twice.
pub(crate) fn parse_resident_bytes(text: &str) -> Option<u64> {
    let (mut anon, mut mapped) = (None, None);
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("anon ") {
            anon = value.trim().parse::<u64>().ok();
        } else if let Some(value) = line.strip_prefix("file_mapped ") {
            mapped = value.trim().parse::<u64>().ok();
        }
    }
    anon?.checked_add(mapped?)
}

/// `usage_usec` of a `cpu.stat`: the CPU time the cgroup's processes used, microseconds.
pub(crate) fn parse_usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|value| value.trim().parse().ok())
}

fn pid_dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

/// `/proc/<pid>/statm` in pages; `None` if the process has exited.
fn read_statm(pid: u32, buf: &mut Vec<u8>) -> Option<procfs::Statm> {
    use std::io::Read;
    buf.clear();
    fs::File::open(format!("/proc/{pid}/statm"))
        .and_then(|mut f| f.read_to_end(buf))
        .ok()?;
    procfs::parse_statm(std::str::from_utf8(buf).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cpu.stat` of a cgroup on a 6.18 kernel without the cpu controller enabled.
    const CPU_STAT: &str = "usage_usec 3113620000\nuser_usec 2381000000\n\
                            system_usec 732620000\nnice_usec 0\ncore_sched.force_idle_usec 0\n";

    #[test]
    fn cpu_stat_usage() {
        assert_eq!(parse_usage_usec(CPU_STAT), Some(3_113_620_000));
        assert_eq!(parse_usage_usec("user_usec 1\n"), None);
        assert_eq!(parse_usage_usec("usage_usec lots\n"), None);
    }

    /// Part of a `memory.stat` of a cgroup v2 with the memory controller (6.x kernel).
    const MEMORY_STAT: &str = "anon 104857600\nfile 52428800\nkernel 3145728\n\
                               kernel_stack 98304\npagetables 507904\nsec_pagetables 0\n\
                               percpu 0\nsock 0\nvmalloc 0\nshmem 4096\nzswap 0\n\
                               zswapped 0\nfile_mapped 20971520\nfile_dirty 0\n\
                               file_writeback 0\nswapcached 0\nanon_thp 0\n";

    #[test]
    fn memory_stat_resident_is_anon_plus_mapped_files() {
        assert_eq!(
            parse_resident_bytes(MEMORY_STAT),
            Some(104_857_600 + 20_971_520)
        );
        assert_eq!(parse_resident_bytes("anon 1\n"), None, "no file_mapped");
        assert_eq!(parse_resident_bytes("anon x\nfile_mapped 1\n"), None);
        assert_eq!(parse_resident_bytes(""), None);
    }

    #[test]
    fn procs_lines() {
        assert_eq!(
            parse_procs("1\n42\n\nx\n 7 \n").collect::<Vec<_>>(),
            [1, 42, 7]
        );
        assert_eq!(parse_procs("").count(), 0);
    }

    #[test]
    fn a_missing_cgroup_is_an_error_naming_it_not_a_panic() {
        let mut sampler = GroupSampler::new("perfpilot-no-such.slice".into(), None);
        let mut snapshot = Snapshot::empty(std::time::SystemTime::now());
        let err = sampler
            .sample_into(Instant::now(), &mut snapshot)
            .unwrap_err();
        assert!(err.contains("perfpilot-no-such.slice"), "{err}");
        assert_eq!(snapshot.process_count, None);
        assert_eq!(snapshot.rss_bytes, None);
    }
}
