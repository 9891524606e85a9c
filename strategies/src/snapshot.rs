//! The [`Snapshot`]: one reading of every signal, and the [`Signal`] names triggers use.

use std::fmt;
use std::str::FromStr;
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
    /// `rss_bytes / memory_limit_bytes`, 0..1 (can exceed 1 when over budget).
    pub memory_usage_ratio: Option<f64>,
    /// jemalloc statistics, where the process runs on jemalloc and the agent can read them.
    pub allocator: Option<AllocatorStats>,
    /// CPU time the watched process used over the last window, as a share of the CPUs
    /// available to it (1.0 = every available core busy).
    pub process_cpu_ratio: Option<f64>,
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
            allocator: None,
            process_cpu_ratio: None,
            system_cpu_ratio: None,
            load_average: None,
            open_connections: None,
            open_fds: None,
            in_flight_requests: None,
            latency: None,
            requests_per_second: None,
            bytes_per_second: None,
            error_rate: None,
            runtime: None,
        }
    }

    /// The value of one signal, or `None` where it was not read.
    pub fn signal(&self, signal: Signal) -> Option<f64> {
        match signal {
            Signal::MemoryUsage => self.memory_usage_ratio,
            Signal::RssBytes => self.rss_bytes.map(|b| b as f64),
            Signal::AllocatorResidentBytes => self.allocator.map(|a| a.resident_bytes as f64),
            Signal::CpuUsage => self.process_cpu_ratio,
            Signal::SystemCpuUsage => self.system_cpu_ratio,
            Signal::LoadAverage1m => self.load_average.map(|l| l[0]),
            Signal::OpenConnections => self.open_connections.map(|c| c as f64),
            Signal::OpenFds => self.open_fds.map(|c| c as f64),
            Signal::InFlightRequests => self.in_flight_requests.map(|c| c as f64),
            Signal::LatencyMeanMs => self.latency.map(|l| l.mean_ms),
            Signal::LatencyP50Ms => self.latency.map(|l| l.p50_ms),
            Signal::LatencyP95Ms => self.latency.map(|l| l.p95_ms),
            Signal::LatencyP99Ms => self.latency.map(|l| l.p99_ms),
            Signal::RequestsPerSecond => self.requests_per_second,
            Signal::BytesPerSecond => self.bytes_per_second,
            Signal::ErrorRate => self.error_rate,
            Signal::RuntimeBusyRatio => self.runtime.map(|r| r.busy_ratio),
            Signal::RuntimeGlobalQueueDepth => self.runtime.map(|r| r.global_queue_depth as f64),
        }
    }
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

/// A signal a trigger can watch. Config and the API name them in snake_case
/// (`memory_usage`, `latency_p99_ms`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Signal {
    /// [`Snapshot::memory_usage_ratio`], 0..1.
    MemoryUsage,
    /// [`Snapshot::rss_bytes`], bytes.
    RssBytes,
    /// jemalloc resident bytes.
    AllocatorResidentBytes,
    /// [`Snapshot::process_cpu_ratio`], 0..1.
    CpuUsage,
    /// [`Snapshot::system_cpu_ratio`], 0..1.
    SystemCpuUsage,
    /// 1-minute load average.
    #[serde(rename = "load_average_1m")]
    LoadAverage1m,
    /// Open connections, a count.
    OpenConnections,
    /// [`Snapshot::open_fds`], open file descriptors, a count.
    OpenFds,
    /// In-flight requests, a count.
    InFlightRequests,
    /// Mean latency, ms.
    LatencyMeanMs,
    /// Median latency, ms.
    LatencyP50Ms,
    /// 95th percentile latency, ms.
    LatencyP95Ms,
    /// 99th percentile latency, ms.
    LatencyP99Ms,
    /// Requests per second.
    RequestsPerSecond,
    /// Response bytes per second.
    BytesPerSecond,
    /// Failed share of requests, 0..1.
    ErrorRate,
    /// tokio workers' busy share, 0..1.
    RuntimeBusyRatio,
    /// tokio global queue depth, a count.
    RuntimeGlobalQueueDepth,
}

impl Signal {
    /// Every signal, in a stable order.
    pub const ALL: [Signal; 18] = [
        Signal::MemoryUsage,
        Signal::RssBytes,
        Signal::AllocatorResidentBytes,
        Signal::CpuUsage,
        Signal::SystemCpuUsage,
        Signal::LoadAverage1m,
        Signal::OpenConnections,
        Signal::OpenFds,
        Signal::InFlightRequests,
        Signal::LatencyMeanMs,
        Signal::LatencyP50Ms,
        Signal::LatencyP95Ms,
        Signal::LatencyP99Ms,
        Signal::RequestsPerSecond,
        Signal::BytesPerSecond,
        Signal::ErrorRate,
        Signal::RuntimeBusyRatio,
        Signal::RuntimeGlobalQueueDepth,
    ];

    /// The snake_case name used in config and the API.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryUsage => "memory_usage",
            Signal::RssBytes => "rss_bytes",
            Signal::AllocatorResidentBytes => "allocator_resident_bytes",
            Signal::CpuUsage => "cpu_usage",
            Signal::SystemCpuUsage => "system_cpu_usage",
            Signal::LoadAverage1m => "load_average_1m",
            Signal::OpenConnections => "open_connections",
            Signal::OpenFds => "open_fds",
            Signal::InFlightRequests => "in_flight_requests",
            Signal::LatencyMeanMs => "latency_mean_ms",
            Signal::LatencyP50Ms => "latency_p50_ms",
            Signal::LatencyP95Ms => "latency_p95_ms",
            Signal::LatencyP99Ms => "latency_p99_ms",
            Signal::RequestsPerSecond => "requests_per_second",
            Signal::BytesPerSecond => "bytes_per_second",
            Signal::ErrorRate => "error_rate",
            Signal::RuntimeBusyRatio => "runtime_busy_ratio",
            Signal::RuntimeGlobalQueueDepth => "runtime_global_queue_depth",
        }
    }

    /// Whether the signal is a ratio whose thresholds must lie in (0, 1].
    pub fn is_ratio(self) -> bool {
        matches!(
            self,
            Signal::MemoryUsage
                | Signal::CpuUsage
                | Signal::SystemCpuUsage
                | Signal::ErrorRate
                | Signal::RuntimeBusyRatio
        )
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown signal name; it lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal `{given}`; known signals: {}", Signal::ALL.map(Signal::name).join(", "))]
pub struct UnknownSignal {
    /// The name that was given.
    pub given: String,
}

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signal::ALL
            .into_iter()
            .find(|signal| signal.name() == s)
            .ok_or_else(|| UnknownSignal {
                given: s.to_owned(),
            })
    }
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

    #[test]
    fn absent_signals_read_as_none() {
        let snapshot = Snapshot::empty(SystemTime::now());
        for signal in Signal::ALL {
            assert_eq!(snapshot.signal(signal), None, "{signal}");
        }
    }

    #[test]
    fn signal_names_round_trip_through_from_str_and_serde() {
        for signal in Signal::ALL {
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
