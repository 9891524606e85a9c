//! The JSON documents of the HTTP API, in the source documents' camelCase shape.

use perfpilot_strategies::{Level, Snapshot};
use serde::Serialize;
use serde_json::Value;

use crate::engine::View;
use crate::history::{OptimizationRecord, Prediction};
use crate::sample::TargetStatus;

/// `GET /performance-metrics`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsDocument<'a> {
    /// The agent's identity (`worker_id`, else `<hostname>-<pid>`; see `crate::worker`).
    #[schema(value_type = super::WorkerId)]
    pub worker_id: &'a Value,
    /// When the metrics were sampled (RFC 3339).
    pub timestamp: String,
    /// Optimizer state and stats.
    pub performance: Performance,
    /// The latest sample.
    pub current_metrics: CurrentMetrics<'a>,
    /// The retained optimization records, oldest first.
    #[schema(value_type = Vec<OptimizationRecord>)]
    pub recent_optimizations: &'a [std::sync::Arc<OptimizationRecord>],
    /// Each strategy with its trigger and level.
    pub strategies: Vec<StrategyDocument<'a>>,
    /// Each budget (`[budgets.NAME]`) with its state, episode and ladder; empty without
    /// budgets.
    #[schema(value_type = Vec<crate::budget::BudgetView>)]
    pub budgets: &'a [crate::budget::BudgetView],
    /// The sidecar target and whether it runs (absent in self and library modes). While it is
    /// not running, `currentMetrics`' process signals are null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetStatus>,
    /// The configuration in force and how the last reload went (absent for an agent without
    /// a reloader).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::reload::ConfigStatus>)]
    pub config: Option<&'a crate::reload::ConfigStatus>,
    /// The fast watch between samples (absent when no trigger sets `watch_interval`): what it
    /// watches, how (`poll`, or `psi-trigger`; a PSI signal that is polled says why in
    /// `fallbackReason`), and how often it woke the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::sample::WatchStatus>)]
    pub fast_watch: Option<&'a crate::sample::WatchStatus>,
}

/// The `performance` object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Performance {
    /// Automatic runs on.
    pub is_enabled: bool,
    /// A run is in progress.
    pub is_optimizing: bool,
    /// Dry-run mode.
    pub dry_run: bool,
    /// Start of the last run, ms since the Unix epoch.
    pub last_optimization: Option<u64>,
    /// Runs since start.
    pub optimization_count: u64,
    /// Successful share of runs, 0..1 (null before the first run).
    pub success_rate: Option<f64>,
    /// Mean run duration in ms (null before the first run).
    pub average_duration: Option<f64>,
    /// Sampling interval in force, ms.
    pub interval: u64,
}

/// The `currentMetrics` object: the source documents' keys first, then the rest.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentMetrics<'a> {
    /// The working set over the memory limit, 0..1 (the `memory_usage` signal: a cgroup's
    /// usage less its inactive file cache, else RSS).
    pub memory_usage: Option<f64>,
    /// Process CPU over available CPUs, 0..1.
    pub cpu_usage: Option<f64>,
    /// Open connections.
    pub active_connections: Option<u64>,
    /// Open file descriptors of the watched process (sidecar mode).
    pub open_fds: Option<u64>,
    /// Mean response time, ms.
    pub response_time: Option<f64>,
    /// Response bytes per second.
    pub throughput: Option<f64>,
    /// Failed share of requests, 0..1.
    pub error_rate: Option<f64>,
    /// Load average over 1, 5, 15 minutes.
    pub system_load: Option<[f64; 3]>,
    /// Process uptime, s.
    pub uptime: Option<f64>,
    /// Resident set size, bytes.
    pub rss_bytes: Option<u64>,
    /// Virtual size, bytes.
    pub virtual_bytes: Option<u64>,
    /// The limit memoryUsage is measured against, bytes.
    pub memory_limit_bytes: Option<u64>,
    /// `cgroup`, `budget` or `total_ram`.
    pub memory_limit_source: Option<perfpilot_strategies::MemoryLimitSource>,
    /// The memory use memoryUsage is measured with, bytes.
    pub memory_usage_bytes: Option<u64>,
    /// `cgroup_working_set` (the cgroup target's, or the limiting cgroup's, usage less its
    /// inactive file cache), `rss` or `summed_rss`.
    pub memory_usage_source: Option<perfpilot_strategies::MemoryUsageSource>,
    /// The raw usage over the memory limit, page cache included, 0..1 (the
    /// `memory_usage_raw` signal).
    pub memory_usage_raw: Option<f64>,
    /// Processes in the watched cgroup (cgroup target only).
    pub process_count: Option<u64>,
    /// OOM kills counted by the watched process's memory cgroup (`oomKills`).
    pub oom_kills: Option<u64>,
    /// Host CPU busy share, 0..1.
    pub system_cpu_usage: Option<f64>,
    /// Requests in flight.
    pub in_flight_requests: Option<u64>,
    /// Requests per second.
    pub requests_per_second: Option<f64>,
    /// Latency percentiles, ms.
    #[schema(value_type = Option<perfpilot_strategies::LatencyStats>)]
    pub latency: Option<&'a perfpilot_strategies::LatencyStats>,
    /// jemalloc counters, bytes.
    #[schema(value_type = Option<perfpilot_strategies::AllocatorStats>)]
    pub allocator: Option<&'a perfpilot_strategies::AllocatorStats>,
    /// tokio runtime metrics.
    #[schema(value_type = Option<perfpilot_strategies::RuntimeStats>)]
    pub runtime: Option<&'a perfpilot_strategies::RuntimeStats>,
    /// Pressure stall information, system-wide and of the watched cgroup (null without PSI).
    #[schema(value_type = Option<perfpilot_strategies::Pressure>)]
    pub pressure: Option<&'a perfpilot_strategies::Pressure>,
}

/// One strategy in `strategies`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategyDocument<'a> {
    /// Name.
    #[schema(value_type = String)]
    pub name: &'a str,
    /// Aliases.
    #[schema(value_type = Vec<String>)]
    pub aliases: &'a [String],
    /// What it does.
    #[schema(value_type = String)]
    pub description: &'a str,
    /// Its trigger settings.
    #[schema(value_type = perfpilot_strategies::TriggerSpec)]
    pub trigger: &'a perfpilot_strategies::TriggerSpec,
    /// Its signal's level now.
    pub level: Level,
    /// Its signal's value in the last sample.
    pub value: Option<f64>,
    /// Runs so far.
    pub runs: u64,
    /// Successful runs so far.
    pub successes: u64,
    /// Failed automatic runs in a row (a success or a manual run resets it).
    pub consecutive_failures: u32,
    /// While automatic runs are paused after repeated failures: until when (RFC 3339); else
    /// null.
    pub backoff_until: Option<String>,
    /// Share of judged runs that relieved the signal, 0..1 (null before the first).
    pub effectiveness: Option<f64>,
    /// Runs that relieved the signal.
    pub helped: u64,
    /// Mean fall of the signal per run, in the signal's unit (null before the first).
    pub mean_relief: Option<f64>,
    /// The cooldown in force between automatic runs, ms (lengthened while runs do not help).
    pub cooldown: u64,
    /// Runs in a row that did not relieve the signal.
    pub unhelpful_runs: u32,
    /// Start of the last run (RFC 3339), or null.
    pub last_run: Option<String>,
    /// The threshold in force: `above`, or the learned one (null while it warms up).
    pub threshold: Option<f64>,
    /// Where the signal is heading, while it rises towards its prediction target.
    pub forecast: Option<Prediction>,
    /// It runs automatically only as a budget's rung: its trigger is shown, never fires.
    pub rung_only: bool,
}

impl<'a> MetricsDocument<'a> {
    /// The document for one published view.
    pub fn new(worker_id: &'a Value, view: &'a View) -> Self {
        let snapshot: &Snapshot = &view.snapshot;
        let stats = &view.stats;
        MetricsDocument {
            worker_id,
            timestamp: rfc3339(snapshot.taken_at),
            performance: Performance {
                is_enabled: view.enabled,
                is_optimizing: view.is_optimizing,
                dry_run: view.dry_run,
                last_optimization: stats
                    .last_run
                    .map(perfpilot_strategies::snapshot::unix_millis::millis),
                optimization_count: stats.count,
                success_rate: stats.success_rate(),
                average_duration: stats.average_duration_ms,
                interval: view.interval.as_millis() as u64,
            },
            current_metrics: CurrentMetrics {
                memory_usage: snapshot.memory_usage_ratio,
                cpu_usage: snapshot.process_cpu_ratio,
                active_connections: snapshot.open_connections,
                open_fds: snapshot.open_fds,
                response_time: snapshot.latency.map(|l| l.mean_ms),
                throughput: snapshot.bytes_per_second,
                error_rate: snapshot.error_rate,
                system_load: snapshot.load_average,
                uptime: snapshot.uptime.map(|u| u.as_secs_f64()),
                rss_bytes: snapshot.rss_bytes,
                virtual_bytes: snapshot.virtual_bytes,
                memory_limit_bytes: snapshot.memory_limit_bytes,
                memory_limit_source: snapshot.memory_limit_source,
                memory_usage_bytes: snapshot.memory_usage_bytes,
                memory_usage_source: snapshot.memory_usage_source,
                memory_usage_raw: snapshot.memory_usage_raw_ratio,
                process_count: snapshot.process_count,
                oom_kills: snapshot.oom_kills,
                system_cpu_usage: snapshot.system_cpu_ratio,
                in_flight_requests: snapshot.in_flight_requests,
                requests_per_second: snapshot.requests_per_second,
                latency: snapshot.latency.as_ref(),
                allocator: snapshot.allocator.as_ref(),
                runtime: snapshot.runtime.as_ref(),
                pressure: snapshot.pressure.as_ref(),
            },
            recent_optimizations: &view.recent,
            strategies: view
                .strategies
                .iter()
                .map(|s| {
                    let stats = stats.per_strategy.get(&s.name);
                    StrategyDocument {
                        name: &s.name,
                        aliases: &s.aliases,
                        description: &s.description,
                        trigger: &s.trigger,
                        level: s.level,
                        value: s.value,
                        runs: stats.map_or(0, |s| s.runs),
                        successes: stats.map_or(0, |s| s.successes),
                        consecutive_failures: s.consecutive_failures,
                        backoff_until: s.backoff_until.map(rfc3339),
                        effectiveness: stats.and_then(|s| s.effectiveness()),
                        helped: stats.map_or(0, |s| s.helped),
                        mean_relief: stats.and_then(|s| s.mean_relief),
                        cooldown: s.cooldown.as_millis() as u64,
                        unhelpful_runs: s.unhelpful_runs,
                        last_run: stats.and_then(|s| s.last_run).map(rfc3339),
                        threshold: s.threshold,
                        forecast: s.forecast.map(Prediction::from),
                        rung_only: s.rung_only,
                    }
                })
                .collect(),
            budgets: &view.budgets,
            target: None,
            config: None,
            fast_watch: view.fast_watch.as_ref(),
        }
    }

    /// The document with the configuration's status.
    pub fn with_config(mut self, config: Option<&'a crate::reload::ConfigStatus>) -> Self {
        self.config = config;
        self
    }

    /// The document with the sidecar target's status.
    pub fn with_target(mut self, target: Option<TargetStatus>) -> Self {
        self.target = target;
        self
    }
}

pub use crate::wire_time::rfc3339;

#[cfg(test)]
mod tests {
    use perfpilot_strategies::signals::SIGNALS;
    use utoipa::PartialSchema;

    use super::CurrentMetrics;

    /// `currentMetrics` is a typed document (its keys are the source documents'); the signal
    /// table names each signal's key in it, and this keeps the two in step.
    #[test]
    fn every_document_key_of_the_signal_table_is_in_current_metrics() {
        let schema = serde_json::to_value(CurrentMetrics::schema()).unwrap();
        let properties = schema["properties"].as_object().expect("properties");
        for row in SIGNALS {
            if let Some(key) = row.document_key {
                assert!(
                    properties.contains_key(key),
                    "{}: currentMetrics has no `{key}`",
                    row.name
                );
            }
        }
    }
}
