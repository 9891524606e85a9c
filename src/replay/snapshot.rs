//! A recorded sample turned back into the [`Snapshot`] the engine reads: each recorded
//! column written into the field its signal is read from, plain fields and those inside
//! structures (pressure, latency, allocator and runtime statistics, load averages) alike. In a
//! structure, a part the recording has no column for is not a number (the engine reads a
//! non-finite value as not read).

use std::time::{Duration, SystemTime};

use perfpilot_strategies::snapshot::{
    AllocatorStats, LatencyStats, Pressure, PressureKind, PressureLine, PressureSet,
    PressureWindow, ResourcePressure, RuntimeStats,
};
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
        Signal::AllocatorResidentBytes => {
            allocator(snapshot).resident_bytes = value.max(0.0).round() as u64
        }
        Signal::LoadAverage1m => snapshot.load_average.get_or_insert([f64::NAN; 3])[0] = value,
        Signal::LatencyMeanMs => latency(snapshot).mean_ms = value,
        Signal::LatencyP50Ms => latency(snapshot).p50_ms = value,
        Signal::LatencyP95Ms => latency(snapshot).p95_ms = value,
        Signal::LatencyP99Ms => latency(snapshot).p99_ms = value,
        Signal::RuntimeBusyRatio => runtime(snapshot).busy_ratio = value,
        Signal::RuntimeGlobalQueueDepth => {
            runtime(snapshot).global_queue_depth = value.max(0.0).round() as u64
        }
        _ => match signal.row().pressure {
            Some((resource, kind, window)) => {
                let set = snapshot
                    .pressure
                    .get_or_insert(Pressure {
                        system: None,
                        cgroup: None,
                    })
                    // The signal reads the cgroup's set where it has the resource, else the
                    // system's: one set holding every recorded value reads the same.
                    .system
                    .get_or_insert(PressureSet {
                        memory: None,
                        cpu: None,
                        io: None,
                    });
                let resource = match resource {
                    perfpilot_strategies::snapshot::PressureResource::Memory => &mut set.memory,
                    perfpilot_strategies::snapshot::PressureResource::Cpu => &mut set.cpu,
                    perfpilot_strategies::snapshot::PressureResource::Io => &mut set.io,
                }
                .get_or_insert(ResourcePressure {
                    some: unknown_line(),
                    full: None,
                });
                let line = match kind {
                    PressureKind::Some => &mut resource.some,
                    PressureKind::Full => resource.full.get_or_insert(unknown_line()),
                };
                match window {
                    PressureWindow::Avg10 => line.avg10 = value,
                    PressureWindow::Avg60 => line.avg60 = value,
                }
            }
            None => return false,
        },
    }
    true
}

fn allocator(snapshot: &mut Snapshot) -> &mut AllocatorStats {
    snapshot.allocator.get_or_insert(AllocatorStats {
        allocated_bytes: 0,
        active_bytes: 0,
        resident_bytes: 0,
        retained_bytes: 0,
    })
}

fn latency(snapshot: &mut Snapshot) -> &mut LatencyStats {
    snapshot.latency.get_or_insert(LatencyStats {
        mean_ms: f64::NAN,
        p50_ms: f64::NAN,
        p95_ms: f64::NAN,
        p99_ms: f64::NAN,
    })
}

fn runtime(snapshot: &mut Snapshot) -> &mut RuntimeStats {
    snapshot.runtime.get_or_insert(RuntimeStats {
        workers: 0,
        busy_ratio: f64::NAN,
        global_queue_depth: 0,
        live_tasks: 0,
    })
}

/// A pressure line whose averages are not known yet.
fn unknown_line() -> PressureLine {
    PressureLine {
        avg10: f64::NAN,
        avg60: f64::NAN,
        avg300: f64::NAN,
        total_us: 0,
        stall_rate: None,
    }
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

    /// Structured signals too (pressure, latency, allocator and runtime statistics, load
    /// averages): a sample with every column read gives every signal its own value back.
    #[test]
    fn every_signal_is_fed_and_a_full_sample_reads_back_each_value() {
        let signals = perfpilot_strategies::signals::SIGNALS;
        let mut values = vec![None; columns::count()];
        for (i, row) in signals.iter().enumerate() {
            assert!(feedable(row.signal), "{} is fed", row.name);
            let column = columns::index_of(row.name).expect("a column per signal");
            values[column] = Some(1.0 + i as f64);
        }
        let snapshot = rebuild(SystemTime::UNIX_EPOCH, &values);
        for (i, row) in signals.iter().enumerate() {
            assert_eq!(
                snapshot.signal(row.signal),
                Some(1.0 + i as f64),
                "{}",
                row.name
            );
        }
    }
}
