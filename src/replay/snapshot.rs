//! A recorded sample turned back into the [`Snapshot`] the engine reads: each recorded
//! column written into the field its signal is read from.
//!
//! The signals kept in plain fields are rebuilt; those kept inside structures (pressure,
//! latency, allocator and runtime statistics, load averages) are not yet, and a replay whose
//! configuration needs one says so ([`feedable`]).

use std::time::{Duration, SystemTime};

use perfpilot_strategies::{Signal, Snapshot};

use crate::recorder::columns;

/// Writes `value` into the field `signal` is read from; false where the replay cannot.
pub(super) fn write(snapshot: &mut Snapshot, signal: Signal, value: f64) -> bool {
    let count = || Some(value.max(0.0).round() as u64);
    match signal {
        Signal::MemoryUsage => snapshot.memory_usage_ratio = Some(value),
        Signal::MemoryUsageRaw => snapshot.memory_usage_raw_ratio = Some(value),
        Signal::RssBytes => snapshot.rss_bytes = count(),
        Signal::CpuUsage => snapshot.process_cpu_ratio = Some(value),
        Signal::SystemCpuUsage => snapshot.system_cpu_ratio = Some(value),
        Signal::AgentCpuUsage => snapshot.agent_cpu_ratio = Some(value),
        Signal::OpenConnections => snapshot.open_connections = count(),
        Signal::OpenFds => snapshot.open_fds = count(),
        Signal::InFlightRequests => snapshot.in_flight_requests = count(),
        Signal::RequestsPerSecond => snapshot.requests_per_second = Some(value),
        Signal::BytesPerSecond => snapshot.bytes_per_second = Some(value),
        Signal::ErrorRate => snapshot.error_rate = Some(value),
        Signal::ProcessCount => snapshot.process_count = count(),
        Signal::MajorFaultsPerSecond => snapshot.major_faults_per_second = Some(value),
        Signal::OomKills => snapshot.oom_kills = count(),
        _ => return false,
    }
    true
}

/// Whether a replay can feed `signal` to the engine.
pub fn feedable(signal: Signal) -> bool {
    write(&mut Snapshot::empty(SystemTime::UNIX_EPOCH), signal, 0.0)
}

/// The snapshot of a sample taken at `at` with `values` (in [`columns::names`] order).
pub fn rebuild(at: SystemTime, values: &[Option<f64>]) -> Snapshot {
    let mut snapshot = Snapshot::empty(at);
    for (index, value) in values.iter().enumerate() {
        let Some(value) = *value else { continue };
        let name = columns::name(index);
        if let Some(row) = perfpilot_strategies::signals::SIGNALS
            .iter()
            .find(|row| row.name == name)
        {
            write(&mut snapshot, row.signal, value);
            continue;
        }
        let bytes = Some(value.max(0.0).round() as u64);
        match name {
            "memory_limit_bytes" => snapshot.memory_limit_bytes = bytes,
            "memory_usage_bytes" => snapshot.memory_usage_bytes = bytes,
            "virtual_bytes" => snapshot.virtual_bytes = bytes,
            "uptime_seconds" => {
                snapshot.uptime = Duration::try_from_secs_f64(value.max(0.0)).ok();
            }
            _ => {}
        }
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feedable_signal_reads_back_what_was_written() {
        for row in perfpilot_strategies::signals::SIGNALS {
            let Some(column) = columns::index_of(row.name) else {
                continue;
            };
            let mut values = vec![None; columns::count()];
            values[column] = Some(3.0);
            let snapshot = rebuild(SystemTime::UNIX_EPOCH, &values);
            if feedable(row.signal) {
                assert_eq!(snapshot.signal(row.signal), Some(3.0), "{}", row.name);
            } else {
                assert_eq!(snapshot.signal(row.signal), None, "{}", row.name);
            }
        }
    }
}
