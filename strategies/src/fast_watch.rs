//! The fast watch's contract for configuration: which signals can be watched between full
//! samples (the signal table's `watch` column, [`crate::signals::watchable`]) and the one
//! rule a `watch_interval` follows, for a trigger and a budget alike.

use std::time::Duration;

use crate::{duration, signals, Problem, Signal};

/// The shortest `watch_interval`: 1 ms.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(1);

/// The longest `watch_interval` under any sampling interval: 10 s (beyond it, sample faster
/// instead). A longer one is accepted only while it is shorter than the sampling interval.
pub const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// Every problem with a `watch_interval` of `watch` at `key` on `signal`, under a sampling
/// `interval`: the signal must have a fast-watch read, and `watch` must be at least
/// [`MIN_WATCH_INTERVAL`] and at most [`MAX_WATCH_INTERVAL`] unless it is shorter than
/// `interval`.
pub fn watch_interval_problems(
    key: &str,
    signal: Signal,
    watch: Duration,
    interval: Duration,
) -> Vec<Problem> {
    let fmt = duration::format;
    let mut problems = Vec::new();
    if signal.row().watch.is_none() {
        problems.push(Problem::at(
            key.to_owned(),
            format!(
                "signal {signal} cannot be watched between samples; watchable: {}",
                signals::watchable()
                    .map(Signal::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if watch < MIN_WATCH_INTERVAL || (watch > MAX_WATCH_INTERVAL && watch >= interval) {
        problems.push(Problem::new(
            key.to_owned(),
            fmt(watch),
            format!(
                "must be at least {} and at most {} (longer only while shorter than interval, {})",
                fmt(MIN_WATCH_INTERVAL),
                fmt(MAX_WATCH_INTERVAL),
                fmt(interval)
            ),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(signal: Signal, watch_ms: u64, interval_ms: u64) -> Vec<String> {
        watch_interval_problems(
            "k.watch_interval",
            signal,
            Duration::from_millis(watch_ms),
            Duration::from_millis(interval_ms),
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    /// Every `watch_interval` a trigger (5 ms–10 s, any interval) or a budget (at least 1 ms,
    /// shorter than interval) could have before the rule was one is still accepted.
    #[test]
    fn every_watch_interval_valid_for_a_trigger_or_a_budget_before_is_accepted() {
        for (watch, interval) in [
            (5, 1_000),
            (10_000, 1_000),
            (10_000, 60_000),
            (1, 1_000),
            (999, 1_000),
            (15_000, 30_000),
        ] {
            assert!(
                problems(Signal::MemoryUsage, watch, interval).is_empty(),
                "watch {watch} ms at interval {interval} ms"
            );
        }
    }

    #[test]
    fn a_watch_interval_out_of_range_or_on_an_unwatchable_signal_names_its_key() {
        assert!(problems(Signal::MemoryUsage, 0, 1_000)[0]
            .contains("k.watch_interval = 0s: must be at least 1ms"));
        assert_eq!(problems(Signal::MemoryUsage, 30_000, 30_000).len(), 1);
        assert_eq!(problems(Signal::MemoryUsage, 10_001, 1_000).len(), 1);
        let unwatchable = problems(Signal::CpuUsage, 20, 1_000);
        assert_eq!(unwatchable.len(), 1, "{unwatchable:?}");
        assert!(
            unwatchable[0].contains(
                "cpu_usage cannot be watched between samples; watchable: memory_usage, rss_bytes, memory_pressure_some, memory_pressure_full"
            ),
            "{unwatchable:?}"
        );
    }
}
