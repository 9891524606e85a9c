//! The [`Snapshot`]: one reading of every signal (the signals themselves, their names and how
//! each is read: [`crate::signals`]).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// One sample of the watched process and its host.
///
/// Every signal is an `Option`: a signal that could not be read (no cgroup, no latency layer,
/// a platform without `/proc`) is `None`, never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the sample was taken (wall clock).
    #[serde(with = "unix_millis")]
    pub taken_at: SystemTime,
    /// How long the watched process has been running.
    pub uptime: Option<Duration>,
    /// Resident set size of the watched process, in bytes.
    pub rss_bytes: Option<u64>,
    /// Virtual memory size of the watched process, in bytes.
    pub virtual_bytes: Option<u64>,
    /// The memory limit the usage ratio is measured against, in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Where [`Snapshot::memory_limit_bytes`] came from.
    pub memory_limit_source: Option<MemoryLimitSource>,
    /// `memory_usage_bytes / memory_limit_bytes`, 0..1 (can exceed 1 when over budget).
    pub memory_usage_ratio: Option<f64>,
    /// The memory use [`Snapshot::memory_usage_ratio`] is measured with, in bytes: a cgroup's
    /// working set (usage less inactive file cache, as the kubelet computes it) — the cgroup
    /// target's, or the cgroup whose limit is the memory limit — else the process's RSS (for
    /// a cgroup without the memory controller, its processes' summed RSS).
    /// [`Snapshot::memory_usage_source`] says which.
    pub memory_usage_bytes: Option<u64>,
    /// Where [`Snapshot::memory_usage_bytes`] came from.
    pub memory_usage_source: Option<MemoryUsageSource>,
    /// The raw usage over the memory limit, 0..1 (can exceed 1): the same cgroup's usage
    /// with its page cache (v1 `memory.usage_in_bytes`, v2 `memory.current`), where
    /// [`Snapshot::memory_usage_bytes`] is a working set; else the same as
    /// [`Snapshot::memory_usage_ratio`] (RSS holds no page cache to leave out).
    #[serde(default)]
    pub memory_usage_raw_ratio: Option<f64>,
    /// Processes in the watched cgroup (`cgroup.procs`), a count; only for a cgroup target.
    pub process_count: Option<u64>,
    /// Processes the kernel's OOM killer has killed in the watched process's memory cgroup
    /// (v1 `memory.oom_control`, v2 `memory.events` `oom_kill`) since the cgroup was
    /// created, a count. Still read while a sidecar target is gone (it may have been the one
    /// killed). `None` where the kernel does not count them or the cgroup cannot be read.
    pub oom_kills: Option<u64>,
    /// Pressure stall information (PSI): system-wide and of the watched cgroup; `None` where
    /// the kernel has no PSI.
    pub pressure: Option<Pressure>,
    /// jemalloc statistics, where the process runs on jemalloc and the agent can read them.
    pub allocator: Option<AllocatorStats>,
    /// CPU time the watched process used over the last window, as a share of the CPUs
    /// available to it (1.0 = every available core busy).
    pub process_cpu_ratio: Option<f64>,
    /// CPU time the agent's own process used over the last window, as a share of the CPUs
    /// available to it: in self and library modes the same as
    /// [`Snapshot::process_cpu_ratio`] (the agent shares the service's process), in sidecar
    /// mode the agent alone (the target's is `process_cpu_ratio`). What `interval-backoff`
    /// watches.
    pub agent_cpu_ratio: Option<f64>,
    /// Busy share of all host CPUs over the last window, 0..1.
    pub system_cpu_ratio: Option<f64>,
    /// Host load average over 1, 5 and 15 minutes.
    pub load_average: Option<[f64; 3]>,
    /// Open client connections of the watched service (in sidecar mode: the target's
    /// established TCP connections on the ports it listens on).
    pub open_connections: Option<u64>,
    /// Open file descriptors of the watched process (entries of `/proc/<pid>/fd`), a count.
    /// Read in sidecar mode; `None` where the directory cannot be read (another user's process
    /// without `CAP_SYS_PTRACE`) and for the agent's own process.
    pub open_fds: Option<u64>,
    /// Major page faults of the watched process per second over the last window: pages it
    /// waited to have read from disk or swap (`majflt` of `/proc/<pid>/stat`).
    pub major_faults_per_second: Option<f64>,
    /// Requests being served right now.
    pub in_flight_requests: Option<u64>,
    /// Request latency over the last window, where a latency source is registered.
    pub latency: Option<LatencyStats>,
    /// Requests completed per second over the last window.
    pub requests_per_second: Option<f64>,
    /// Response bytes sent per second over the last window.
    pub bytes_per_second: Option<f64>,
    /// Share of requests in the last window that failed (5xx or error), 0..1.
    pub error_rate: Option<f64>,
    /// tokio runtime metrics of the process hosting the agent, over the last window.
    pub runtime: Option<RuntimeStats>,
}

impl Snapshot {
    /// A snapshot taken at `taken_at` in which every signal is absent.
    pub fn empty(taken_at: SystemTime) -> Self {
        Snapshot {
            taken_at,
            uptime: None,
            rss_bytes: None,
            virtual_bytes: None,
            memory_limit_bytes: None,
            memory_limit_source: None,
            memory_usage_ratio: None,
            memory_usage_bytes: None,
            memory_usage_source: None,
            memory_usage_raw_ratio: None,
            process_count: None,
            oom_kills: None,
            pressure: None,
            allocator: None,
            process_cpu_ratio: None,
            agent_cpu_ratio: None,
            system_cpu_ratio: None,
            load_average: None,
            open_connections: None,
            open_fds: None,
            major_faults_per_second: None,
            in_flight_requests: None,
            latency: None,
            requests_per_second: None,
            bytes_per_second: None,
            error_rate: None,
            runtime: None,
        }
    }
}

/// Where [`Snapshot::memory_usage_bytes`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MemoryUsageSource {
    /// The resident set size of the watched process: no cgroup limit applies to it.
    Rss,
    /// A cgroup's working set: its usage (v1 `memory.usage_in_bytes`, v2 `memory.current`)
    /// less its inactive file cache (v1 `total_inactive_file`, v2 `inactive_file` in
    /// `memory.stat`), as the kubelet computes it. The cgroup target's, or the cgroup whose
    /// limit is the memory limit: that usage, not the process's RSS, is what the kernel
    /// enforces the limit on, and the inactive file cache is what it reclaims first.
    CgroupWorkingSet,
    /// The summed RSS of the watched cgroup's processes: where the memory controller is not
    /// enabled on the cgroup (neither `memory.current` nor a v1 twin).
    SummedRss,
}

/// Pressure stall information (PSI): how much of the time tasks waited for a resource.
///
/// Read from `/proc/pressure/{cpu,memory,io}` (system-wide) and the watched cgroup's
/// `{cpu,memory,io}.pressure` (cgroup v2). The pressure signals
/// (`Signal::MemoryPressureSome`...) read the cgroup's set where it has the resource, else
/// the system's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pressure {
    /// `/proc/pressure/*`; `None` where the kernel has no PSI (or it is disabled).
    pub system: Option<PressureSet>,
    /// The watched cgroup's `*.pressure` files: the cgroup target's, else the watched
    /// process's cgroup v2; `None` for the root of the hierarchy (whose pressure is the
    /// system's) and where there are none.
    pub cgroup: Option<PressureSet>,
}

impl Pressure {
    /// A value of the watched scope: the cgroup's where it has the resource, else the
    /// system's.
    pub fn watched(
        &self,
        resource: PressureResource,
        kind: PressureKind,
        window: PressureWindow,
    ) -> Option<f64> {
        [&self.cgroup, &self.system]
            .into_iter()
            .flatten()
            .find_map(|set| set.resource(resource))
            .and_then(|r| r.line(kind))
            .map(|line| line.average(window))
    }
}

/// The three PSI resources of one scope; each `None` where its file is missing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PressureSet {
    /// `memory` pressure.
    pub memory: Option<ResourcePressure>,
    /// `cpu` pressure.
    pub cpu: Option<ResourcePressure>,
    /// `io` pressure.
    pub io: Option<ResourcePressure>,
}

impl PressureSet {
    /// One resource's pressure.
    pub fn resource(&self, resource: PressureResource) -> Option<&ResourcePressure> {
        match resource {
            PressureResource::Memory => self.memory.as_ref(),
            PressureResource::Cpu => self.cpu.as_ref(),
            PressureResource::Io => self.io.as_ref(),
        }
    }
}

/// One pressure file: its `some` line (some tasks stalled) and its `full` line (all
/// non-idle tasks stalled at once; absent for `cpu` on kernels before 5.13).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourcePressure {
    /// The `some` line.
    pub some: PressureLine,
    /// The `full` line.
    pub full: Option<PressureLine>,
}

impl ResourcePressure {
    /// The `some` or `full` line.
    pub fn line(&self, kind: PressureKind) -> Option<&PressureLine> {
        match kind {
            PressureKind::Some => Some(&self.some),
            PressureKind::Full => self.full.as_ref(),
        }
    }
}

/// One line of a pressure file. The kernel's averages are percentages; here they are ratios.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PressureLine {
    /// Share of the last 10 s stalled, 0..1 (`avg10` ÷ 100).
    pub avg10: f64,
    /// Share of the last 60 s stalled, 0..1.
    pub avg60: f64,
    /// Share of the last 300 s stalled, 0..1.
    pub avg300: f64,
    /// Total stall time since boot (or since the cgroup was created), microseconds.
    pub total_us: u64,
    /// Stall seconds per second over the last sampling window (the change of `total_us` over
    /// the wall time), 0..1 (it can briefly exceed 1: the kernel adds to the total in
    /// steps); `None` on the first sample.
    pub stall_rate: Option<f64>,
}

impl PressureLine {
    /// The average over `window`, 0..1.
    pub fn average(&self, window: PressureWindow) -> f64 {
        match window {
            PressureWindow::Avg10 => self.avg10,
            PressureWindow::Avg60 => self.avg60,
        }
    }
}

/// A PSI resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PressureResource {
    /// `memory`.
    Memory,
    /// `cpu`.
    Cpu,
    /// `io`.
    Io,
}

impl PressureResource {
    /// Every resource, in file order.
    pub const ALL: [PressureResource; 3] = [
        PressureResource::Memory,
        PressureResource::Cpu,
        PressureResource::Io,
    ];

    /// `memory`, `cpu` or `io`: the file name in `/proc/pressure` (and `<name>.pressure`).
    pub fn name(self) -> &'static str {
        match self {
            PressureResource::Memory => "memory",
            PressureResource::Cpu => "cpu",
            PressureResource::Io => "io",
        }
    }
}

/// A PSI line: `some` or `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PressureKind {
    /// At least one task stalled.
    Some,
    /// Every non-idle task stalled at once.
    Full,
}

/// A PSI average window a signal reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PressureWindow {
    /// `avg10`.
    Avg10,
    /// `avg60`.
    Avg60,
}

/// Where the memory limit came from, in the order the sampler tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MemoryLimitSource {
    /// cgroup v2 `memory.max` of the process's cgroup (what the kernel enforces).
    Cgroup,
    /// The configured `memory_budget`.
    Budget,
    /// Total RAM of the host.
    TotalRam,
}

/// jemalloc's own counters (`stats.*`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AllocatorStats {
    /// Bytes allocated by the application.
    pub allocated_bytes: u64,
    /// Bytes in active pages (a multiple of the page size, at least `allocated`).
    pub active_bytes: u64,
    /// Bytes in physically resident data pages mapped by the allocator.
    pub resident_bytes: u64,
    /// Bytes in virtual memory mappings retained rather than returned to the OS.
    pub retained_bytes: u64,
}

/// Request latency over one sampling window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatencyStats {
    /// Mean latency.
    pub mean_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 95th percentile latency.
    pub p95_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
}

/// tokio runtime metrics over one sampling window (stable tokio only).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuntimeStats {
    /// Number of worker threads.
    pub workers: u64,
    /// Share of the window the workers spent busy, 0..1.
    pub busy_ratio: f64,
    /// Tasks waiting in the global (injection) queue at the end of the window.
    pub global_queue_depth: u64,
    /// Tasks alive at the end of the window.
    pub live_tasks: u64,
}

/// Serializes a `SystemTime` as integer milliseconds since the Unix epoch.
pub mod unix_millis {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    /// Milliseconds since the Unix epoch (0 for times before it).
    pub fn millis(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Serde serializer.
    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(millis(*time))
    }

    /// Serde deserializer.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(deserializer)?;
        Ok(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Signal;

    #[test]
    fn absent_signals_read_as_none() {
        let snapshot = Snapshot::empty(SystemTime::now());
        for signal in Signal::all() {
            assert_eq!(snapshot.signal(signal), None, "{signal}");
        }
    }

    #[test]
    fn pressure_signals_read_the_cgroup_where_it_has_the_resource_else_the_system() {
        let line = |avg10: f64| PressureLine {
            avg10,
            avg60: avg10 / 2.0,
            avg300: 0.0,
            total_us: 0,
            stall_rate: None,
        };
        let set = |cpu: f64, memory: Option<f64>| PressureSet {
            memory: memory.map(|m| ResourcePressure {
                some: line(m),
                full: Some(line(m / 4.0)),
            }),
            cpu: Some(ResourcePressure {
                some: line(cpu),
                full: None,
            }),
            io: None,
        };
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.pressure = Some(Pressure {
            system: Some(set(0.5, Some(0.2))),
            cgroup: Some(set(0.8, None)),
        });
        assert_eq!(snapshot.signal(Signal::CpuPressureSome), Some(0.8));
        assert_eq!(snapshot.signal(Signal::CpuPressureSomeAvg60), Some(0.4));
        assert_eq!(snapshot.signal(Signal::CpuPressureFull), None);
        assert_eq!(snapshot.signal(Signal::MemoryPressureSome), Some(0.2));
        assert_eq!(snapshot.signal(Signal::MemoryPressureFull), Some(0.05));
        assert_eq!(snapshot.signal(Signal::IoPressureSome), None);
        assert!(Signal::IoPressureFullAvg60.is_ratio());
        assert!(!Signal::ProcessCount.is_ratio());
        let json = serde_json::to_value(&snapshot.pressure).unwrap();
        assert_eq!(json["system"]["cpu"]["some"]["avg10"], 0.5);
        assert_eq!(json["system"]["cpu"]["some"]["totalUs"], 0);
        assert!(json["system"]["cpu"]["full"].is_null());
    }

    #[test]
    fn signal_names_round_trip_through_from_str_and_serde() {
        for signal in Signal::all() {
            assert_eq!(signal.name().parse::<Signal>(), Ok(signal));
            let json = serde_json::to_string(&signal).unwrap();
            assert_eq!(json, format!("\"{}\"", signal.name()));
        }
        let err = "memroy".parse::<Signal>().unwrap_err().to_string();
        assert!(
            err.contains("memroy") && err.contains("memory_usage"),
            "{err}"
        );
    }
}
