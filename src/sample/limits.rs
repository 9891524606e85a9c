//! The limits a process's usage is measured against: memory (cgroup, budget, RAM) and the
//! number of CPUs it may use.

use std::path::Path;
use std::time::{Duration, Instant};

use perfpilot_strategies::MemoryLimitSource;

use super::cgroup::{CgroupLimits, MemoryCgroup};
use super::procfs;

/// The memory limit and available CPUs of one process, re-read from its cgroups every
/// [`Limits::REFRESH_INTERVAL`] (a container can be resized in place).
#[derive(Debug)]
pub(crate) struct Limits {
    cgroup: CgroupLimits,
    budget: Option<u64>,
    total_ram: Option<u64>,
    memory: Option<(u64, MemoryLimitSource)>,
    /// The cgroup whose limit is [`Limits::memory`], when the limit is a cgroup's.
    limiting_cgroup: Option<MemoryCgroup>,
    cpus: Option<f64>,
    read_at: Instant,
}

impl Limits {
    /// How often the cgroup limit files are read again.
    pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

    /// Finds and reads the limits of the process whose `/proc` directory is `proc_dir`.
    pub(crate) fn discover(proc_dir: &Path, budget: Option<u64>) -> Self {
        Self::with_cgroup(CgroupLimits::discover(proc_dir), budget)
    }

    /// Reads the limits from these cgroup limit files (a cgroup target's).
    pub(crate) fn with_cgroup(cgroup: CgroupLimits, budget: Option<u64>) -> Self {
        let mut limits = Limits {
            cgroup,
            budget,
            total_ram: procfs::total_ram_bytes(),
            memory: None,
            limiting_cgroup: None,
            cpus: None,
            read_at: Instant::now(),
        };
        limits.read();
        limits
    }

    /// Reads the cgroup limits again if the last reading is older than the refresh interval.
    pub(crate) fn refresh_if_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.read_at) >= Self::REFRESH_INTERVAL {
            self.read_at = now;
            self.read();
        }
    }

    fn read(&mut self) {
        let limiting = self.cgroup.limiting_memory_cgroup();
        self.memory = effective_memory_limit(
            limiting.as_ref().map(|&(_, limit)| limit),
            self.budget,
            self.total_ram,
        );
        self.limiting_cgroup = limiting
            .filter(|_| matches!(self.memory, Some((_, MemoryLimitSource::Cgroup))))
            .map(|(cgroup, _)| cgroup);
        self.cpus = available_cpus(self.cgroup.cpu_limit());
    }

    /// The memory limit in bytes and where it came from.
    pub(crate) fn memory(&self) -> Option<(u64, MemoryLimitSource)> {
        self.memory
    }

    /// The cgroup the memory limit comes from, when it comes from one: its working set is
    /// what the limit is enforced on, so it is the usage to measure.
    pub(crate) fn limiting_cgroup(&self) -> Option<&MemoryCgroup> {
        self.limiting_cgroup.as_ref()
    }

    /// The process's own memory cgroup, where its OOM kills are counted.
    pub(crate) fn own_memory_cgroup(&self) -> Option<MemoryCgroup> {
        self.cgroup.own_memory_cgroup()
    }

    /// How many CPUs the process may use (fractional under a cgroup quota).
    pub(crate) fn cpus(&self) -> Option<f64> {
        self.cpus
    }
}

/// The tightest of the known memory limits, with its source. A budget below the cgroup limit
/// is the user's intent, and a cgroup limit above the host's RAM cannot be reached, so the
/// smallest wins; on a tie the order is cgroup, budget, RAM. Zero limits are ignored.
pub(crate) fn effective_memory_limit(
    cgroup: Option<u64>,
    budget: Option<u64>,
    total_ram: Option<u64>,
) -> Option<(u64, MemoryLimitSource)> {
    [
        (cgroup, MemoryLimitSource::Cgroup),
        (budget, MemoryLimitSource::Budget),
        (total_ram, MemoryLimitSource::TotalRam),
    ]
    .into_iter()
    .filter_map(|(limit, source)| Some((limit.filter(|&l| l > 0)?, source)))
    // `min_by_key` keeps the first of equal keys: the order above breaks ties.
    .min_by_key(|&(limit, _)| limit)
}

/// CPUs available to the process: its cgroup quota (capped at the online CPUs), else
/// [`std::thread::available_parallelism`] (CPU affinity, and a cgroup quota rounded down).
fn available_cpus(cgroup_quota: Option<f64>) -> Option<f64> {
    let parallelism = std::thread::available_parallelism()
        .ok()
        .map(|n| n.get() as f64);
    match cgroup_quota {
        Some(quota) => Some(online_cpus().map_or(quota, |online| quota.min(online))),
        None => parallelism,
    }
}

/// `sysconf(_SC_NPROCESSORS_ONLN)`.
fn online_cpus() -> Option<f64> {
    crate::sys::online_cpus().map(|online| online as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryLimitSource::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_smallest_limit_wins() {
        assert_eq!(
            effective_memory_limit(Some(GIB), Some(2 * GIB), Some(8 * GIB)),
            Some((GIB, Cgroup))
        );
        assert_eq!(
            effective_memory_limit(Some(2 * GIB), Some(GIB), Some(8 * GIB)),
            Some((GIB, Budget))
        );
        assert_eq!(
            effective_memory_limit(Some(16 * GIB), None, Some(8 * GIB)),
            Some((8 * GIB, TotalRam))
        );
        assert_eq!(
            effective_memory_limit(None, Some(GIB), Some(8 * GIB)),
            Some((GIB, Budget))
        );
        assert_eq!(
            effective_memory_limit(None, None, Some(8 * GIB)),
            Some((8 * GIB, TotalRam))
        );
        assert_eq!(effective_memory_limit(None, None, None), None);
    }

    #[test]
    fn ties_prefer_cgroup_then_budget_and_zero_is_no_limit() {
        assert_eq!(
            effective_memory_limit(Some(GIB), Some(GIB), Some(GIB)),
            Some((GIB, Cgroup))
        );
        assert_eq!(
            effective_memory_limit(None, Some(GIB), Some(GIB)),
            Some((GIB, Budget))
        );
        assert_eq!(
            effective_memory_limit(Some(0), Some(0), Some(GIB)),
            Some((GIB, TotalRam))
        );
    }

    #[test]
    fn a_cpu_quota_is_used_as_is_up_to_the_online_cpus() {
        assert_eq!(available_cpus(Some(0.5)), Some(0.5));
        let online = online_cpus().unwrap();
        assert_eq!(available_cpus(Some(online + 10.0)), Some(online));
        assert!(available_cpus(None).is_some_and(|n| n >= 1.0));
    }
}
