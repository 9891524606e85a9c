//! The signal table: one row per [`Signal`], the one place its facts are written down.
//!
//! Everything that lists signals derives from [`SIGNALS`]: their names in config and the API
//! ([`Signal::name`], parsing), whether a threshold is a ratio ([`Signal::is_ratio`]), how a
//! [`Snapshot`] is read ([`Snapshot::signal`]), the `/metrics` gauges, the CLI's metrics
//! table, `perfpilot signals` and the list in docs/signals.md (checked by a test).
//!
//! Adding a signal: a variant of [`Signal`], a row here, and the code that fills the
//! [`Snapshot`] field the row reads. Tests fail while a [`Snapshot`] field is neither read by
//! a row nor listed in [`NOT_SIGNALS`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::snapshot::{PressureKind, PressureResource, PressureWindow, Snapshot};

/// A signal a trigger can watch. Config and the API name them in snake_case
/// (`memory_usage`, `latency_p99_ms`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Signal {
    /// [`Snapshot::memory_usage_ratio`], 0..1: the working set over the memory limit.
    MemoryUsage,
    /// [`Snapshot::memory_usage_raw_ratio`], 0..1: the raw usage, page cache included.
    MemoryUsageRaw,
    /// [`Snapshot::rss_bytes`], bytes.
    RssBytes,
    /// jemalloc resident bytes.
    AllocatorResidentBytes,
    /// [`Snapshot::process_cpu_ratio`], 0..1.
    CpuUsage,
    /// [`Snapshot::system_cpu_ratio`], 0..1.
    SystemCpuUsage,
    /// [`Snapshot::agent_cpu_ratio`], the agent's own process, 0..1.
    AgentCpuUsage,
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
    /// [`Snapshot::process_count`], processes in the watched cgroup, a count.
    ProcessCount,
    /// [`Snapshot::major_faults_per_second`], per second.
    MajorFaultsPerSecond,
    /// [`Snapshot::oom_kills`], OOM kills in the watched process's memory cgroup, a count.
    OomKills,
    /// Share of the last 10 s in which some task stalled on memory (PSI `memory` `some` `avg10` ÷
    /// 100), 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    MemoryPressureSome,
    /// Share of the last 10 s in which every non-idle task stalled on memory (PSI `memory` `full`
    /// `avg10` ÷ 100), 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    MemoryPressureFull,
    /// Share of the last 10 s in which some task stalled on cpu (PSI `cpu` `some` `avg10` ÷ 100),
    /// 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    CpuPressureSome,
    /// Share of the last 10 s in which every non-idle task stalled on cpu (PSI `cpu` `full` `avg10`
    /// ÷ 100), 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    CpuPressureFull,
    /// Share of the last 10 s in which some task stalled on io (PSI `io` `some` `avg10` ÷ 100),
    /// 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    IoPressureSome,
    /// Share of the last 10 s in which every non-idle task stalled on io (PSI `io` `full` `avg10` ÷
    /// 100), 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    IoPressureFull,
    /// Share of the last 60 s in which some task stalled on memory (PSI `memory` `some` `avg60` ÷
    /// 100), 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    MemoryPressureSomeAvg60,
    /// Share of the last 60 s in which every non-idle task stalled on memory (PSI `memory` `full`
    /// `avg60` ÷ 100), 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    MemoryPressureFullAvg60,
    /// Share of the last 60 s in which some task stalled on cpu (PSI `cpu` `some` `avg60` ÷ 100),
    /// 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    CpuPressureSomeAvg60,
    /// Share of the last 60 s in which every non-idle task stalled on cpu (PSI `cpu` `full` `avg60`
    /// ÷ 100), 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    CpuPressureFullAvg60,
    /// Share of the last 60 s in which some task stalled on io (PSI `io` `some` `avg60` ÷ 100),
    /// 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    IoPressureSomeAvg60,
    /// Share of the last 60 s in which every non-idle task stalled on io (PSI `io` `full` `avg60` ÷
    /// 100), 0..1: the watched cgroup's, else system-wide (see `Pressure`).
    IoPressureFullAvg60,
}

impl Signal {
    /// Every signal, in a stable order (the rows of [`SIGNALS`]).
    pub fn all() -> impl ExactSizeIterator<Item = Signal> + Clone {
        crate::signals::SIGNALS.iter().map(|row| row.signal)
    }

    /// The signal's row in the signal table: its unit, source, meaning, metric...
    pub fn row(self) -> &'static crate::signals::SignalRow {
        crate::signals::row_of(self)
    }

    /// The snake_case name used in config and the API.
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Whether the signal is a ratio whose thresholds must lie in (0, 1].
    pub fn is_ratio(self) -> bool {
        self.row().is_ratio()
    }

    /// For a pressure signal: the resource, line and window it reads.
    pub fn pressure_selector(self) -> Option<(PressureResource, PressureKind, PressureWindow)> {
        self.row().pressure
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown signal name; it lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal `{given}`; known signals: {}", Signal::all().map(Signal::name).collect::<Vec<_>>().join(", "))]
pub struct UnknownSignal {
    /// The name that was given.
    pub given: String,
}

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signal::all()
            .find(|signal| signal.name() == s)
            .ok_or_else(|| UnknownSignal {
                given: s.to_owned(),
            })
    }
}

impl Snapshot {
    /// The value of one signal, or `None` where it was not read (its row in
    /// [`SIGNALS`] says how it is read).
    pub fn signal(&self, signal: Signal) -> Option<f64> {
        (signal.row().read)(self)
    }
}

/// A signal's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A share, 0..1 (thresholds must lie in (0, 1]).
    Ratio,
    /// Bytes.
    Bytes,
    /// A count of things.
    Count,
    /// Milliseconds.
    Milliseconds,
    /// Events per second.
    PerSecond,
    /// Bytes per second.
    BytesPerSecond,
    /// Runnable tasks, averaged (the load average).
    Tasks,
}

impl Unit {
    /// The unit as `perfpilot signals` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Ratio => "ratio",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
            Unit::Milliseconds => "ms",
            Unit::PerSecond => "per_second",
            Unit::BytesPerSecond => "bytes_per_second",
            Unit::Tasks => "tasks",
        }
    }
}

/// Where a signal is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The agent's own process only (jemalloc, the tokio runtime).
    #[serde(rename = "self")]
    SelfProcess,
    /// The watched process's `/proc/<pid>`: the agent's own, or the sidecar target.
    Target,
    /// The host's `/proc` (`/proc/stat`, `/proc/loadavg`).
    Host,
    /// The watched cgroup (cgroup target).
    Cgroup,
    /// The latency layer and tracked connections of the host service (library mode), or the
    /// sidecar target's sockets.
    Layer,
    /// The latency layer, or the latency probe (`probe.url`).
    Probe,
    /// Pressure stall information: the watched cgroup's, else the system's.
    Psi,
}

impl Source {
    /// The source as `perfpilot signals` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Source::SelfProcess => "self",
            Source::Target => "target",
            Source::Host => "host",
            Source::Cgroup => "cgroup",
            Source::Layer => "layer",
            Source::Probe => "probe",
            Source::Psi => "psi",
        }
    }
}

/// A Prometheus unit suffix of a gauge family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricUnit {
    /// `_bytes`.
    Bytes,
    /// `_seconds`.
    Seconds,
}

/// The `/metrics` series a signal is exposed as: `perfpilot_<family>[_<unit>]{worker,label}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricSeries {
    /// The family's name without the `perfpilot_` prefix and the unit suffix.
    pub family: &'static str,
    /// The family's `HELP` (rows sharing a family share it).
    pub help: &'static str,
    /// The family's unit suffix.
    pub unit: Option<MetricUnit>,
    /// The series' own label within its family, e.g. `("stat", "p99")`.
    pub label: Option<(&'static str, &'static str)>,
    /// The signal's value times this is the series' value (ms → s: 0.001).
    pub scale: f64,
}

impl MetricSeries {
    const fn plain(family: &'static str, help: &'static str) -> Self {
        MetricSeries {
            family,
            help,
            unit: None,
            label: None,
            scale: 1.0,
        }
    }

    const fn unit(mut self, unit: MetricUnit) -> Self {
        self.unit = Some(unit);
        self
    }

    const fn label(mut self, name: &'static str, value: &'static str) -> Self {
        self.label = Some((name, value));
        self
    }

    const fn scale(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }
}

/// How the CLI's metrics table formats a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Display {
    /// `25.5 %`.
    Percent,
    /// `1.5 MiB`.
    Bytes,
    /// `2.0 ms`.
    Millis,
    /// A plain number.
    Number,
    /// The three load averages.
    Load,
}

/// How the fast watch reads a signal between full samples: the signal table's `watch` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchRead {
    /// What `memory_usage` measures, over the limit: the watched cgroup's working set (its
    /// usage file, v1 `memory.usage_in_bytes` or v2 `memory.current`, less `inactive_file` of
    /// its `memory.stat`), else `/proc/<pid>/statm`.
    CgroupUsage,
    /// The resident pages of `/proc/<pid>/statm`.
    Statm,
    /// A kernel PSI trigger on the row's [`SignalRow::pressure`] line (where none can be
    /// registered, its pressure file polled).
    PsiTrigger,
}

impl WatchRead {
    /// The read as `perfpilot signals` shows it.
    pub fn name(self) -> &'static str {
        match self {
            WatchRead::CgroupUsage => "cgroup-usage",
            WatchRead::Statm => "statm",
            WatchRead::PsiTrigger => "psi-trigger",
        }
    }
}

/// The signals the fast watch can read between full samples (a `watch` column), in table
/// order.
pub fn watchable() -> impl Iterator<Item = Signal> + Clone {
    SIGNALS
        .iter()
        .filter(|row| row.watch.is_some())
        .map(|row| row.signal)
}

/// One signal: everything the agent says about it, in one place.
#[derive(Clone, Copy, Serialize)]
pub struct SignalRow {
    /// The signal.
    #[serde(skip)]
    pub signal: Signal,
    /// Its name in config, the API and the CLI (`memory_usage`).
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// Where it is read from.
    pub source: Source,
    /// What it means, in one line.
    pub meaning: &'static str,
    /// The [`Snapshot`] field it reads.
    #[serde(skip)]
    pub field: &'static str,
    /// Reads it from a snapshot; `None` where it was not read.
    #[serde(skip)]
    pub read: fn(&Snapshot) -> Option<f64>,
    /// For a PSI signal: the resource, line and window it reads.
    #[serde(skip)]
    pub pressure: Option<(PressureResource, PressureKind, PressureWindow)>,
    /// How the fast watch reads it between full samples; `None`: only full samples read it
    /// (a `watch_interval` on it is refused).
    #[serde(skip)]
    pub watch: Option<WatchRead>,
    /// Its `/metrics` series, where it has its own (the PSI signals are in
    /// `perfpilot_pressure_ratio`, by scope).
    #[serde(skip)]
    pub metric: Option<MetricSeries>,
    /// Its row in the CLI's metrics table: the label and the format.
    #[serde(skip)]
    pub table: Option<(&'static str, Display)>,
    /// Its key in `currentMetrics` of `GET /performance-metrics`, where it has one of its own.
    #[serde(skip)]
    pub document_key: Option<&'static str>,
}

impl fmt::Debug for SignalRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalRow")
            .field("name", &self.name)
            .field("unit", &self.unit)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SignalRow {
    /// Whether thresholds of the signal must lie in (0, 1].
    pub fn is_ratio(&self) -> bool {
        self.unit == Unit::Ratio
    }

    /// The `/metrics` series name (`perfpilot_request_latency_seconds`), where it has one.
    pub fn metric_name(&self) -> Option<String> {
        self.metric.map(|m| {
            let unit = match m.unit {
                Some(MetricUnit::Bytes) => "_bytes",
                Some(MetricUnit::Seconds) => "_seconds",
                None => "",
            };
            format!("perfpilot_{}{unit}", m.family)
        })
    }
}

/// [`Snapshot`] fields that are not signals: when, limits, sources, and details shown beside
/// the signals (`/metrics`, the document) but not watched by triggers.
pub const NOT_SIGNALS: &[&str] = &[
    "taken_at",
    "uptime",
    "virtual_bytes",
    "memory_limit_bytes",
    "memory_limit_source",
    "memory_usage_bytes",
    "memory_usage_source",
];

macro_rules! psi {
    ($signal:ident, $name:literal, $resource:ident, $kind:ident, $window:ident, $meaning:literal, $label:expr) => {
        psi!($signal, $name, $resource, $kind, $window, $meaning, $label, None)
    };
    ($signal:ident, $name:literal, $resource:ident, $kind:ident, $window:ident, $meaning:literal, $label:expr, $watch:expr) => {
        SignalRow {
            signal: Signal::$signal,
            name: $name,
            unit: Unit::Ratio,
            source: Source::Psi,
            meaning: $meaning,
            field: "pressure",
            read: |s| {
                s.pressure.as_ref()?.watched(
                    PressureResource::$resource,
                    PressureKind::$kind,
                    PressureWindow::$window,
                )
            },
            pressure: Some((
                PressureResource::$resource,
                PressureKind::$kind,
                PressureWindow::$window,
            )),
            watch: $watch,
            metric: None,
            table: $label,
            document_key: None,
        }
    };
}

const fn row(
    signal: Signal,
    name: &'static str,
    unit: Unit,
    source: Source,
    field: &'static str,
    read: fn(&Snapshot) -> Option<f64>,
    meaning: &'static str,
) -> SignalRow {
    SignalRow {
        signal,
        name,
        unit,
        source,
        meaning,
        field,
        read,
        pressure: None,
        watch: None,
        metric: None,
        table: None,
        document_key: None,
    }
}

impl SignalRow {
    const fn metric(mut self, metric: MetricSeries) -> Self {
        self.metric = Some(metric);
        self
    }

    const fn table(mut self, label: &'static str, display: Display) -> Self {
        self.table = Some((label, display));
        self
    }

    const fn document(mut self, key: &'static str) -> Self {
        self.document_key = Some(key);
        self
    }

    const fn watch(mut self, read: WatchRead) -> Self {
        self.watch = Some(read);
        self
    }
}

/// What `memory_usage` means: the one place it is defined (docs/signals.md, `perfpilot
/// signals` and the API's descriptions show this text).
pub const MEMORY_USAGE_MEANING: &str =
    "working set over the memory limit, as the kubelet computes it: the cgroup's usage less its \
     inactive file cache (the cgroup target's, or the cgroup whose limit is the memory limit); \
     a process under no cgroup limit: its RSS";

const LATENCY_HELP: &str =
    "Request latency over the last window, by statistic (mean, p50, p95, p99)";

/// Every signal, in the order of [`Signal`]'s variants (`SIGNALS[signal as usize]` is its
/// row; a test checks it).
pub static SIGNALS: &[SignalRow] = &[
    row(
        Signal::MemoryUsage,
        "memory_usage",
        Unit::Ratio,
        Source::Target,
        "memory_usage_ratio",
        |s| s.memory_usage_ratio,
        MEMORY_USAGE_MEANING,
    )
    .metric(MetricSeries::plain(
        "memory_usage_ratio",
        "Working set (a cgroup's usage less inactive file cache, else RSS) over the memory limit",
    ))
    .table("memory usage", Display::Percent)
    .document("memoryUsage")
    .watch(WatchRead::CgroupUsage),
    row(
        Signal::MemoryUsageRaw,
        "memory_usage_raw",
        Unit::Ratio,
        Source::Target,
        "memory_usage_raw_ratio",
        |s| s.memory_usage_raw_ratio,
        "raw memory usage over the memory limit: the same cgroup's usage with its page cache \
         (v1 memory.usage_in_bytes, v2 memory.current); without a cgroup, RSS (as memory_usage)",
    )
    .metric(MetricSeries::plain(
        "memory_usage_raw_ratio",
        "Memory usage with page cache (a cgroup's usage, else RSS) over the memory limit",
    ))
    .table("memory raw", Display::Percent)
    .document("memoryUsageRaw"),
    row(
        Signal::RssBytes,
        "rss_bytes",
        Unit::Bytes,
        Source::Target,
        "rss_bytes",
        |s| s.rss_bytes.map(|b| b as f64),
        "resident set size of the watched process",
    )
    .metric(
        MetricSeries::plain(
            "resident_memory",
            "Resident set size of the watched process",
        )
        .unit(MetricUnit::Bytes),
    )
    .table("rss", Display::Bytes)
    .watch(WatchRead::Statm)
    .document("rssBytes"),
    row(
        Signal::AllocatorResidentBytes,
        "allocator_resident_bytes",
        Unit::Bytes,
        Source::SelfProcess,
        "allocator",
        |s| s.allocator.map(|a| a.resident_bytes as f64),
        "bytes in pages jemalloc keeps resident (the agent's own process on jemalloc)",
    )
    .metric(
        MetricSeries::plain(
            "allocator",
            "jemalloc statistics by kind (allocated, active, resident, retained)",
        )
        .unit(MetricUnit::Bytes)
        .label("kind", "resident"),
    ),
    row(
        Signal::CpuUsage,
        "cpu_usage",
        Unit::Ratio,
        Source::Target,
        "process_cpu_ratio",
        |s| s.process_cpu_ratio,
        "CPU time of the watched process over the CPUs available to it (1 = all busy)",
    )
    .metric(MetricSeries::plain(
        "process_cpu_ratio",
        "CPU used by the watched process over the CPUs available to it",
    ))
    .table("cpu usage", Display::Percent)
    .document("cpuUsage"),
    row(
        Signal::SystemCpuUsage,
        "system_cpu_usage",
        Unit::Ratio,
        Source::Host,
        "system_cpu_ratio",
        |s| s.system_cpu_ratio,
        "busy share of all host CPUs",
    )
    .metric(MetricSeries::plain(
        "system_cpu_ratio",
        "Busy share of the host's CPUs",
    ))
    .table("system cpu", Display::Percent)
    .document("systemCpuUsage"),
    row(
        Signal::AgentCpuUsage,
        "agent_cpu_usage",
        Unit::Ratio,
        Source::SelfProcess,
        "agent_cpu_ratio",
        |s| s.agent_cpu_ratio,
        "CPU time of the agent's own process over the CPUs available to it (self mode: cpu_usage)",
    )
    .metric(MetricSeries::plain(
        "agent_cpu_ratio",
        "CPU used by the agent's own process over the CPUs available to it",
    )),
    row(
        Signal::LoadAverage1m,
        "load_average_1m",
        Unit::Tasks,
        Source::Host,
        "load_average",
        |s| s.load_average.map(|l| l[0]),
        "host load average over 1 minute",
    )
    .metric(
        MetricSeries::plain("load_average", "Host load average by window").label("window", "1m"),
    )
    .table("system load", Display::Load)
    .document("systemLoad"),
    row(
        Signal::OpenConnections,
        "open_connections",
        Unit::Count,
        Source::Layer,
        "open_connections",
        |s| s.open_connections.map(|c| c as f64),
        "open client connections (sidecar: the target's established TCP connections)",
    )
    .metric(MetricSeries::plain(
        "open_connections",
        "Open client connections",
    ))
    .table("connections", Display::Number)
    .document("activeConnections"),
    row(
        Signal::OpenFds,
        "open_fds",
        Unit::Count,
        Source::Target,
        "open_fds",
        |s| s.open_fds.map(|c| c as f64),
        "open file descriptors of the sidecar target (/proc/<pid>/fd)",
    )
    .metric(MetricSeries::plain(
        "open_fds",
        "Open file descriptors of the watched process (sidecar mode)",
    ))
    .document("openFds"),
    row(
        Signal::InFlightRequests,
        "in_flight_requests",
        Unit::Count,
        Source::Layer,
        "in_flight_requests",
        |s| s.in_flight_requests.map(|c| c as f64),
        "requests being served right now",
    )
    .metric(MetricSeries::plain(
        "in_flight_requests",
        "Requests being served",
    ))
    .table("in flight", Display::Number)
    .document("inFlightRequests"),
    row(
        Signal::LatencyMeanMs,
        "latency_mean_ms",
        Unit::Milliseconds,
        Source::Probe,
        "latency",
        |s| s.latency.map(|l| l.mean_ms),
        "mean request latency over the last window",
    )
    .metric(
        MetricSeries::plain("request_latency", LATENCY_HELP)
            .unit(MetricUnit::Seconds)
            .label("stat", "mean")
            .scale(0.001),
    )
    .table("response time", Display::Millis)
    .document("responseTime"),
    row(
        Signal::LatencyP50Ms,
        "latency_p50_ms",
        Unit::Milliseconds,
        Source::Probe,
        "latency",
        |s| s.latency.map(|l| l.p50_ms),
        "median request latency over the last window",
    )
    .metric(
        MetricSeries::plain("request_latency", LATENCY_HELP)
            .unit(MetricUnit::Seconds)
            .label("stat", "p50")
            .scale(0.001),
    ),
    row(
        Signal::LatencyP95Ms,
        "latency_p95_ms",
        Unit::Milliseconds,
        Source::Probe,
        "latency",
        |s| s.latency.map(|l| l.p95_ms),
        "95th percentile request latency over the last window",
    )
    .metric(
        MetricSeries::plain("request_latency", LATENCY_HELP)
            .unit(MetricUnit::Seconds)
            .label("stat", "p95")
            .scale(0.001),
    ),
    row(
        Signal::LatencyP99Ms,
        "latency_p99_ms",
        Unit::Milliseconds,
        Source::Probe,
        "latency",
        |s| s.latency.map(|l| l.p99_ms),
        "99th percentile request latency over the last window",
    )
    .metric(
        MetricSeries::plain("request_latency", LATENCY_HELP)
            .unit(MetricUnit::Seconds)
            .label("stat", "p99")
            .scale(0.001),
    ),
    row(
        Signal::RequestsPerSecond,
        "requests_per_second",
        Unit::PerSecond,
        Source::Layer,
        "requests_per_second",
        |s| s.requests_per_second,
        "requests completed per second over the last window",
    )
    .metric(MetricSeries::plain(
        "requests_per_second",
        "Requests completed per second over the last window",
    ))
    .table("requests/s", Display::Number)
    .document("requestsPerSecond"),
    row(
        Signal::BytesPerSecond,
        "bytes_per_second",
        Unit::BytesPerSecond,
        Source::Layer,
        "bytes_per_second",
        |s| s.bytes_per_second,
        "response bytes sent per second over the last window",
    )
    .metric(MetricSeries::plain(
        "response_bytes_per_second",
        "Response bytes sent per second over the last window",
    ))
    .document("throughput"),
    row(
        Signal::ErrorRate,
        "error_rate",
        Unit::Ratio,
        Source::Probe,
        "error_rate",
        |s| s.error_rate,
        "share of requests in the last window that failed (5xx or error)",
    )
    .metric(MetricSeries::plain(
        "request_error_ratio",
        "Failed share of requests over the last window",
    ))
    .table("error rate", Display::Percent)
    .document("errorRate"),
    row(
        Signal::RuntimeBusyRatio,
        "runtime_busy_ratio",
        Unit::Ratio,
        Source::SelfProcess,
        "runtime",
        |s| s.runtime.map(|r| r.busy_ratio),
        "busy share of the tokio workers of the process hosting the agent",
    )
    .metric(MetricSeries::plain(
        "runtime_busy_ratio",
        "Busy share of the tokio workers",
    )),
    row(
        Signal::RuntimeGlobalQueueDepth,
        "runtime_global_queue_depth",
        Unit::Count,
        Source::SelfProcess,
        "runtime",
        |s| s.runtime.map(|r| r.global_queue_depth as f64),
        "tasks waiting in the tokio global queue at the end of the window",
    )
    .metric(MetricSeries::plain(
        "runtime_global_queue_depth",
        "Tasks in the tokio global queue",
    )),
    row(
        Signal::ProcessCount,
        "process_count",
        Unit::Count,
        Source::Cgroup,
        "process_count",
        |s| s.process_count.map(|c| c as f64),
        "processes in the watched cgroup (cgroup.procs)",
    )
    .metric(MetricSeries::plain(
        "processes",
        "Processes in the watched cgroup (cgroup target)",
    ))
    .document("processCount"),
    row(
        Signal::MajorFaultsPerSecond,
        "major_faults_per_second",
        Unit::PerSecond,
        Source::Target,
        "major_faults_per_second",
        |s| s.major_faults_per_second,
        "major page faults of the watched process per second (pages read from disk or swap)",
    )
    .metric(MetricSeries::plain(
        "major_page_faults_per_second",
        "Major page faults of the watched process per second over the last window",
    )),
    row(
        Signal::OomKills,
        "oom_kills",
        Unit::Count,
        Source::Cgroup,
        "oom_kills",
        |s| s.oom_kills.map(|c| c as f64),
        "OOM kills counted by the watched process's memory cgroup since it was created",
    )
    .metric(MetricSeries::plain(
        "oom_kills",
        "OOM kills counted by the watched process's memory cgroup since it was created",
    ))
    .document("oomKills"),
    psi!(
        MemoryPressureSome,
        "memory_pressure_some",
        Memory,
        Some,
        Avg10,
        "share of the last 10 s in which some task stalled on memory",
        Some(("memory psi", Display::Percent)),
        Some(WatchRead::PsiTrigger)
    ),
    psi!(
        MemoryPressureFull,
        "memory_pressure_full",
        Memory,
        Full,
        Avg10,
        "share of the last 10 s in which every non-idle task stalled on memory",
        None,
        Some(WatchRead::PsiTrigger)
    ),
    psi!(
        CpuPressureSome,
        "cpu_pressure_some",
        Cpu,
        Some,
        Avg10,
        "share of the last 10 s in which some task stalled on cpu",
        Some(("cpu psi", Display::Percent))
    ),
    psi!(
        CpuPressureFull,
        "cpu_pressure_full",
        Cpu,
        Full,
        Avg10,
        "share of the last 10 s in which every non-idle task stalled on cpu",
        None
    ),
    psi!(
        IoPressureSome,
        "io_pressure_some",
        Io,
        Some,
        Avg10,
        "share of the last 10 s in which some task stalled on io",
        Some(("io psi", Display::Percent))
    ),
    psi!(
        IoPressureFull,
        "io_pressure_full",
        Io,
        Full,
        Avg10,
        "share of the last 10 s in which every non-idle task stalled on io",
        None
    ),
    psi!(
        MemoryPressureSomeAvg60,
        "memory_pressure_some_avg60",
        Memory,
        Some,
        Avg60,
        "share of the last 60 s in which some task stalled on memory",
        None
    ),
    psi!(
        MemoryPressureFullAvg60,
        "memory_pressure_full_avg60",
        Memory,
        Full,
        Avg60,
        "share of the last 60 s in which every non-idle task stalled on memory",
        None
    ),
    psi!(
        CpuPressureSomeAvg60,
        "cpu_pressure_some_avg60",
        Cpu,
        Some,
        Avg60,
        "share of the last 60 s in which some task stalled on cpu",
        None
    ),
    psi!(
        CpuPressureFullAvg60,
        "cpu_pressure_full_avg60",
        Cpu,
        Full,
        Avg60,
        "share of the last 60 s in which every non-idle task stalled on cpu",
        None
    ),
    psi!(
        IoPressureSomeAvg60,
        "io_pressure_some_avg60",
        Io,
        Some,
        Avg60,
        "share of the last 60 s in which some task stalled on io",
        None
    ),
    psi!(
        IoPressureFullAvg60,
        "io_pressure_full_avg60",
        Io,
        Full,
        Avg60,
        "share of the last 60 s in which every non-idle task stalled on io",
        None
    ),
];

/// The row of `signal`.
pub fn row_of(signal: Signal) -> &'static SignalRow {
    SIGNALS
        .get(signal as usize)
        .expect("every Signal variant has its row in SIGNALS, in variant order")
}

/// The `watch` column as the tables show it: how the fast watch reads it, or `-`.
fn watch_name(row: &SignalRow) -> &'static str {
    row.watch.map_or("-", WatchRead::name)
}

/// `perfpilot signals`: every signal with its unit, whether it is a ratio, its source, how
/// the fast watch reads it and its meaning, as a text table.
pub fn text_table() -> String {
    let mut out = format!(
        "{:<28} {:<16} {:<6} {:<7} {:<13} MEANING\n",
        "SIGNAL", "UNIT", "RATIO", "SOURCE", "FAST WATCH"
    );
    for row in SIGNALS {
        out.push_str(&format!(
            "{:<28} {:<16} {:<6} {:<7} {:<13} {}\n",
            row.name,
            row.unit.name(),
            if row.is_ratio() { "yes" } else { "no" },
            row.source.name(),
            watch_name(row),
            row.meaning
        ));
    }
    out
}

/// The signal list of README.md (between its `signals` markers): a Markdown table.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| signal | unit | ratio | source | fast watch | meaning |\n|---|---|---|---|---|---|\n",
    );
    for row in SIGNALS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            row.name,
            row.unit.name(),
            if row.is_ratio() { "yes" } else { "no" },
            row.source.name(),
            watch_name(row),
            row.meaning
        ));
    }
    out
}

/// `perfpilot signals --json`: one object per signal (`name`, `unit`, `ratio`, `source`,
/// `watch` (how the fast watch reads it, `null`: not watchable), `meaning`, `metric`).
pub fn json() -> serde_json::Value {
    SIGNALS
        .iter()
        .map(|row| {
            serde_json::json!({
                "name": row.name,
                "unit": row.unit,
                "ratio": row.is_ratio(),
                "source": row.source,
                "watch": row.watch,
                "meaning": row.meaning,
                "metric": row.metric_name(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn rows_are_in_variant_order_with_unique_names() {
        for (index, row) in SIGNALS.iter().enumerate() {
            assert_eq!(row.signal as usize, index, "{} is out of order", row.name);
        }
        let names: BTreeSet<&str> = SIGNALS.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), SIGNALS.len(), "duplicate names");
    }

    /// Fails when a `Snapshot` field is neither read by a row nor named in `NOT_SIGNALS`, or a
    /// row reads a field that does not exist.
    #[test]
    fn every_snapshot_field_is_a_signal_or_named_as_not_one() {
        let json = serde_json::to_value(Snapshot::empty(SystemTime::now())).unwrap();
        let fields: BTreeSet<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let read: BTreeSet<&str> = SIGNALS.iter().map(|r| r.field).collect();
        let not: BTreeSet<&str> = NOT_SIGNALS.iter().copied().collect();
        for field in &fields {
            assert!(
                read.contains(field) != not.contains(field),
                "Snapshot::{field}: add a row to SIGNALS that reads it, or name it in NOT_SIGNALS \
                 (and not both)"
            );
        }
        for field in read.union(&not) {
            assert!(fields.contains(field), "`{field}` is not a Snapshot field");
        }
    }

    #[test]
    fn metric_families_shared_by_rows_agree_on_help_and_unit() {
        for a in SIGNALS.iter().filter_map(|r| r.metric) {
            for b in SIGNALS.iter().filter_map(|r| r.metric) {
                if a.family == b.family {
                    assert_eq!((a.help, a.unit), (b.help, b.unit), "{}", a.family);
                    assert!(a.label.is_some() || a == b, "{}", a.family);
                }
            }
        }
    }

    #[test]
    fn the_text_table_and_json_list_every_signal() {
        let text = text_table();
        assert_eq!(text.lines().count(), SIGNALS.len() + 1);
        assert!(text.contains("open_fds"), "{text}");
        let json = json();
        assert_eq!(json.as_array().unwrap().len(), SIGNALS.len());
        assert_eq!(json[0]["name"], "memory_usage");
        assert_eq!(json[0]["ratio"], true);
        assert_eq!(json[0]["source"], "target");
        assert_eq!(json[3]["source"], "self");
        let latency = json
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == "latency_mean_ms")
            .expect("latency_mean_ms is listed");
        assert_eq!(latency["metric"], "perfpilot_request_latency_seconds");
    }
}
