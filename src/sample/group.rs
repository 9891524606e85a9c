//! A cgroup v2 target (`target.cgroup`): a Kubernetes pod, a systemd service, any group of
//! processes sampled as one.
//!
//! | signal | source |
//! |---|---|
//! | `process_count` | lines of `cgroup.procs` |
//! | `oom_kills` | `oom_kill` in `memory.events` (v1 twin: `memory.oom_control`) |
//! | `memory_usage_bytes` | the working set: `memory.current` less `inactive_file`; on a hybrid host (the memory controller on a v1 hierarchy) `memory.usage_in_bytes` less `total_inactive_file` of the v1 memory cgroup at the same path, which systemd keeps with the same processes; without either, the summed RSS of the processes; `memory_usage_source` says which |
//! | `memory_usage_raw_ratio` | the usage itself (`memory.current`, `memory.usage_in_bytes`) over the limit; without either, as `memory_usage_ratio` | 0..1 |
//! | `memory_limit_bytes` | the tightest `memory.max` / `memory.high` of the cgroup and its ancestors (and `memory.limit_in_bytes` of its v1 twin's), else the budget, else total RAM |
//! | `rss_bytes`, `virtual_bytes` | with a memory controller: `rss_bytes` is `memory.stat` `anon` + `file_mapped` (v1: `total_rss` + `total_mapped_file`; no per-process read) and `virtual_bytes` is absent; without one, both summed over the processes' `/proc/<pid>/statm` |
//! | `process_cpu_ratio` | change of `cpu.stat` `usage_usec` over the window ÷ (window × the `cpu.max` quota, else the CPUs available) |
//! | `open_fds` | summed sizes of the processes' `/proc/<pid>/fd` (one `stat` each; the entries listed on kernels before 6.2): a process is read when it joins, then in turn, at most [`FD_READS_PER_SAMPLE`] a sample, so in a group of more processes each count is up to ⌈n / 100⌉ samples old |
//! | `open_connections` | ESTABLISHED (and CLOSE_WAIT) sockets on a port one of the processes LISTENs on, in the first process's network namespace, counted by netlink `sock_diag` when the namespace's TCP counters moved (see [`super::connection_count::SocketScan`] and [`super::connection_count::ConnectionsBasis`]); the fd links are read only when the namespace's listening sockets change |
//! | `uptime` | absent: a group has no single start time |
//! | `pressure.cgroup` | the cgroup's `{memory,cpu,io}.pressure` (none for the root cgroup, whose pressure is the system's) |
//!
//! Per-process reads are what grows with the group: one `stat` of `/proc/<pid>/fd` for at
//! most 100 processes a sample, and one `statm` each only where the cgroup has no memory
//! controller. `pids.current` is not used: it counts tasks (threads), not processes.
//!
//! `cgroup.procs`, the memory files, `cpu.stat` and the pressure files stay open; a read that
//! fails (the cgroup was removed) reopens them once, so a cgroup removed and created again at
//! the same path is followed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use perfpilot_strategies::{MemoryUsageSource, Pressure, Snapshot};

use super::cgroup::{self, CgroupLimits};
use super::connection_count::{self, SocketScan};
use super::limits::Limits;
use super::pressure::PressureReader;
use super::procfs::{self, pid_dir, ProcFile};

/// The most processes whose `/proc/<pid>/fd` is read in one sample (besides those that
/// joined since the last): a sample of a group of 1,000 stays within its 2 ms budget.
pub(crate) const FD_READS_PER_SAMPLE: usize = 100;

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
    fds: FdCounts,
}

/// The open-fd counts of a group's processes, refreshed in turn (see
/// [`FD_READS_PER_SAMPLE`]).
#[derive(Debug, Default)]
struct FdCounts {
    /// The last count of each process, by pid.
    by_pid: HashMap<u32, u64>,
    /// Where in the group's pid list the next refresh starts.
    cursor: usize,
}

impl FdCounts {
    /// Refreshes the counts of `pids` (new ones first, then up to `per_sample` in turn) and
    /// forgets processes that left; the sum, or the number of processes whose `fd`
    /// directory cannot be read.
    fn refresh(&mut self, pids: &[u32], per_sample: usize) -> Result<u64, usize> {
        let mut unreadable = 0;
        let mut read = |pid: u32, by_pid: &mut HashMap<u32, u64>| {
            match connection_count::count_fds(&pid_dir(pid)) {
                Ok(count) => {
                    by_pid.insert(pid, count);
                }
                // Exited since `cgroup.procs` was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    by_pid.remove(&pid);
                }
                Err(_) => unreadable += 1,
            }
        };
        let same_members =
            self.by_pid.len() == pids.len() && pids.iter().all(|p| self.by_pid.contains_key(p));
        if !same_members {
            let members: HashSet<u32> = pids.iter().copied().collect();
            self.by_pid.retain(|pid, _| members.contains(pid));
            for &pid in pids {
                if !self.by_pid.contains_key(&pid) {
                    read(pid, &mut self.by_pid);
                }
            }
        }
        let turn = per_sample.min(pids.len());
        for index in 0..turn {
            read(pids[(self.cursor + index) % pids.len()], &mut self.by_pid);
        }
        self.cursor = match pids.len() {
            0 => 0,
            n => (self.cursor + turn) % n,
        };
        match unreadable {
            0 => Ok(self.by_pid.values().sum()),
            n => Err(n),
        }
    }
}

/// The files of a resolved cgroup.
#[derive(Debug)]
struct OpenGroup {
    dir: PathBuf,
    procs: ProcFile,
    /// The group's memory controller files; `None` without one.
    memory: Option<GroupMemory>,
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
        let mut limits = CgroupLimits::for_v2_dir(&dir, &mount);
        let v2 = cgroup::MemoryCgroup::V2(dir.clone());
        let memory_cgroup = if v2.usage_file().is_file() {
            v2
        } else if let Some((twin, v1_mount)) = cgroup::v1_memory_twin(&dir, &mount) {
            limits = limits.with_v1_memory(&twin, &v1_mount);
            cgroup::MemoryCgroup::V1(twin)
        } else {
            v2
        };
        Ok(OpenGroup {
            memory: GroupMemory::open(&memory_cgroup),
            cpu_stat: ProcFile::open(&dir.join("cpu.stat"), 512),
            // The root's pressure is the system's, already in `pressure.system`.
            pressure: (dir != mount)
                .then(|| PressureReader::cgroup(&dir))
                .flatten(),
            limits: Limits::with_cgroup(limits, memory_budget),
            procs,
            oom: memory_cgroup,
            dir,
            previous_cpu: None,
        })
    }
}

/// A group's memory controller files, kept open: its usage and `memory.stat`.
#[derive(Debug)]
struct GroupMemory {
    cgroup: cgroup::MemoryCgroup,
    usage: ProcFile,
    stat: ProcFile,
}

/// One reading of a group's memory controller.
#[derive(Debug, Clone, Copy)]
struct GroupReadings {
    /// Its usage and working set.
    memory: cgroup::CgroupMemory,
    /// Its resident memory (anonymous and mapped file pages), if `memory.stat` has it.
    resident: Option<u64>,
}

impl GroupMemory {
    fn open(cgroup: &cgroup::MemoryCgroup) -> Option<Self> {
        Some(GroupMemory {
            usage: ProcFile::open(&cgroup.usage_file(), 64)?,
            stat: ProcFile::open(&cgroup.stat_file(), 4096)?,
            cgroup: cgroup.clone(),
        })
    }

    /// The group's usage, working set and resident memory; `None` if its usage cannot be
    /// read (a `memory.stat` that cannot be read counts as no inactive cache).
    fn read(&mut self) -> Option<GroupReadings> {
        let usage = self.usage.read(false)?;
        let stat = self.stat.read(false).unwrap_or_default();
        let v1 = matches!(self.cgroup, cgroup::MemoryCgroup::V1(_));
        Some(GroupReadings {
            memory: self.cgroup.parse_memory(&usage, &stat)?,
            resident: parse_resident_bytes(&stat, v1),
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
            fds: FdCounts::default(),
        }
    }

    /// What the fast watch reads of the group: its working set (usage less inactive file
    /// cache) against its limit; `None` until it is found.
    pub(crate) fn memory_probe(&self) -> Option<super::watch::MemoryProbe> {
        let group = self.open.as_ref()?;
        Some(super::watch::MemoryProbe {
            statm: None,
            cgroup: Some(group.oom.clone()),
            limit_bytes: group.limits.memory().map(|(limit, _)| limit),
            pressure_dir: group.pressure.is_some().then(|| group.dir.clone()),
        })
    }

    /// How `open_connections` was last counted, and what the last figure rests on.
    pub(crate) fn connections_counted(
        &self,
    ) -> Option<(
        connection_count::ConnectionsMethod,
        connection_count::ConnectionsBasis,
    )> {
        self.sockets.counted()
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

        let memory = group.memory.as_mut().and_then(GroupMemory::read);
        // With the memory controller, the kernel's own accounting of the group's resident
        // memory; without it, one `statm` read per process.
        if let Some(GroupReadings {
            resident: Some(bytes),
            ..
        }) = memory
        {
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
        // The group's working set, as for a process under a cgroup limit (and as the fast
        // watch reads it), whatever the limit is.
        let raw_bytes;
        (
            snapshot.memory_usage_bytes,
            snapshot.memory_usage_source,
            raw_bytes,
        ) = match memory {
            Some(GroupReadings { memory, .. }) => (
                Some(memory.working_set),
                Some(MemoryUsageSource::CgroupWorkingSet),
                Some(memory.usage),
            ),
            None => (
                snapshot.rss_bytes,
                snapshot.rss_bytes.map(|_| MemoryUsageSource::SummedRss),
                snapshot.rss_bytes,
            ),
        };
        snapshot.oom_kills = group.oom.oom_kills();
        group.limits.refresh_if_due(now);
        if let Some((limit, source)) = group.limits.memory() {
            super::fill_memory_limit(snapshot, limit, source, raw_bytes);
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

        match self.fds.refresh(&self.pids, FD_READS_PER_SAMPLE) {
            Ok(fds) if !self.pids.is_empty() => snapshot.open_fds = Some(fds),
            Ok(_) => {}
            Err(unreadable) => problems.push(format!(
                "cannot read /proc/<pid>/fd of {unreadable} of {} processes: open_fds absent; \
                 run the agent as their user or with CAP_SYS_PTRACE",
                self.pids.len()
            )),
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

/// The resident memory in a cgroup's `memory.stat`: private anonymous pages plus page cache
/// mapped into the processes (shared memory included), what summing the processes' RSS
/// approximates without counting a shared page twice. v2: `anon` + `file_mapped`; v1 (`v1`):
/// the hierarchical `total_rss` + `total_mapped_file`.
pub(crate) fn parse_resident_bytes(text: &str, v1: bool) -> Option<u64> {
    let (anon_key, mapped_key) = if v1 {
        ("total_rss ", "total_mapped_file ")
    } else {
        ("anon ", "file_mapped ")
    };
    let (mut anon, mut mapped) = (None, None);
    for line in text.lines() {
        if let Some(value) = line.strip_prefix(anon_key) {
            anon = value.trim().parse::<u64>().ok();
        } else if let Some(value) = line.strip_prefix(mapped_key) {
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
            parse_resident_bytes(MEMORY_STAT, false),
            Some(104_857_600 + 20_971_520)
        );
        assert_eq!(
            parse_resident_bytes("anon 1\n", false),
            None,
            "no file_mapped"
        );
        assert_eq!(parse_resident_bytes("anon x\nfile_mapped 1\n", false), None);
        assert_eq!(parse_resident_bytes("", false), None);
        // v1: the hierarchical totals, not the cgroup's own `rss` and `mapped_file`.
        let v1 = "cache 4096\nrss 1000\nmapped_file 10\ntotal_cache 8192\n\
                  total_rss 104857600\ntotal_mapped_file 20971520\n";
        assert_eq!(
            parse_resident_bytes(v1, true),
            Some(104_857_600 + 20_971_520)
        );
        assert_eq!(
            parse_resident_bytes(MEMORY_STAT, true),
            None,
            "v2 keys are not v1's"
        );
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
    fn fd_counts_are_read_when_a_process_joins_then_in_turn_and_forgotten_when_it_leaves() {
        let me = std::process::id();
        let mut fds = FdCounts::default();
        let first = fds.refresh(&[me], 0).unwrap();
        assert!(
            first >= 3,
            "a joining process is read even without a turn: {first}"
        );
        let held: Vec<_> = (0..10)
            .map(|_| fs::File::open("/proc/self/stat").unwrap())
            .collect();
        assert_eq!(
            fds.refresh(&[me], 0),
            Ok(first),
            "not read again without a turn"
        );
        let again = fds.refresh(&[me], 1).unwrap();
        // Other tests of this binary open and close files meanwhile: about 10 more.
        assert!(again >= first + 5, "read in its turn: {first} then {again}");
        // A pid above any pid_max: exited before it was read, so not counted.
        assert_eq!(fds.refresh(&[me, 4_194_305], 0), Ok(again));
        assert_eq!(fds.by_pid.len(), 1);
        assert_eq!(fds.refresh(&[], 1), Ok(0), "left the group: forgotten");
        assert!(fds.by_pid.is_empty());
        drop(held);
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
