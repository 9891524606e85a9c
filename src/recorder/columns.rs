//! What the recorder keeps of each sample: one column per signal (derived from
//! [`SIGNALS`]) and the few numeric sample fields that are not signals but that a reader of
//! the recording needs (the memory limit and usage in bytes, virtual memory, uptime).
//!
//! Beside them, from format version 2, the engine's columns ([`engine`]): what the engine read
//! besides the sample when it evaluated it ([`Evaluated`]), for a replay.

use perfpilot_strategies::signals::SIGNALS;
use perfpilot_strategies::Snapshot;

use crate::events::Evaluated;

/// A sample field that is not a signal, recorded beside the signals.
#[derive(Debug, Clone, Copy)]
struct Extra {
    name: &'static str,
    read: fn(&Snapshot) -> Option<f64>,
}

/// The recorded fields that are not signals (see
/// [`NOT_SIGNALS`](perfpilot_strategies::signals::NOT_SIGNALS)): those with a number.
const EXTRAS: &[Extra] = &[
    Extra {
        name: "memory_limit_bytes",
        read: |s| s.memory_limit_bytes.map(|b| b as f64),
    },
    Extra {
        name: "memory_usage_bytes",
        read: |s| s.memory_usage_bytes.map(|b| b as f64),
    },
    Extra {
        name: "virtual_bytes",
        read: |s| s.virtual_bytes.map(|b| b as f64),
    },
    Extra {
        name: "uptime_seconds",
        read: |s| s.uptime.map(|d| d.as_secs_f64()),
    },
];

/// How many columns a sample has: every signal, then the extras.
pub fn count() -> usize {
    SIGNALS.len() + EXTRAS.len()
}

/// Column `index`'s name (a signal's name, e.g. `memory_usage`, or an extra's).
pub fn name(index: usize) -> &'static str {
    match SIGNALS.get(index) {
        Some(row) => row.name,
        None => EXTRAS[index - SIGNALS.len()].name,
    }
}

/// Column `index`'s value in `snapshot`; `None` where it was not read.
pub fn read(index: usize, snapshot: &Snapshot) -> Option<f64> {
    match SIGNALS.get(index) {
        Some(row) => (row.read)(snapshot),
        None => (EXTRAS[index - SIGNALS.len()].read)(snapshot),
    }
}

/// The column named `name`, if there is one.
pub fn index_of(name: &str) -> Option<usize> {
    (0..count()).find(|&index| self::name(index) == name)
}

/// Every column's name, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    (0..count()).map(name)
}

/// The engine's columns: what it read besides each sample ([`Evaluated`]), kept apart from
/// the sample's columns (history and export show samples; a replay reads these).
///
/// - `evaluated_us`: when the engine evaluated the sample, in µs after the sample's recorded
///   time (its `taken_at` in whole ms): the engine's clock to the µs, where forecasts fitted
///   over samples a few ms apart need it;
/// - `watch_slope.<signal>`, one per signal the fast watch can read
///   ([`perfpilot_strategies::signals::watchable`]): the slope of the watch's reads the
///   engine took at that sample, not read where it took none.
pub mod engine {
    use perfpilot_strategies::signals::watchable;
    use perfpilot_strategies::Signal;

    use super::Evaluated;

    /// The name of the column of the engine's clock.
    pub const EVALUATED_US: &str = "evaluated_us";
    /// The prefix of the columns of the watch's slopes.
    pub const WATCH_SLOPE: &str = "watch_slope.";

    /// How many engine columns a sample has.
    pub fn count() -> usize {
        1 + watchable().count()
    }

    /// Every engine column's name, in order.
    pub fn names() -> impl Iterator<Item = String> {
        std::iter::once(EVALUATED_US.to_owned())
            .chain(watchable().map(|signal| format!("{WATCH_SLOPE}{}", signal.name())))
    }

    /// The engine's columns of a sample recorded at `time` (ms since the Unix epoch) and
    /// evaluated as `evaluated` says; every one not read without it.
    pub fn read(
        time: i64,
        evaluated: Option<&Evaluated>,
    ) -> impl Iterator<Item = Option<f64>> + '_ {
        let at = evaluated.map(|e| micros(e.at) - time.saturating_mul(1000));
        std::iter::once(at.map(|us| us as f64)).chain(watchable().map(move |signal| {
            evaluated?
                .watch_slopes
                .iter()
                .find(|(watched, _)| *watched == signal)
                .map(|(_, slope)| *slope)
        }))
    }

    /// What the engine read beside a sample recorded at `time` (ms), from its engine columns
    /// (in [`names`] order); `None` where the clock was not recorded (a version-1 segment).
    pub fn evaluated(time: i64, values: &[Option<f64>]) -> Option<Evaluated> {
        let us = (*values.first()?)?;
        let at = time.saturating_mul(1000).saturating_add(us.round() as i64);
        let watch_slopes: Vec<(Signal, f64)> = watchable()
            .zip(&values[1..])
            .filter_map(|(signal, slope)| slope.map(|slope| (signal, slope)))
            .collect();
        Some(Evaluated {
            at: time_of_micros(at),
            watch_slopes,
        })
    }

    /// `at` in µs since the Unix epoch (negative before it).
    fn micros(at: std::time::SystemTime) -> i64 {
        match at.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => after.as_micros() as i64,
            Err(before) => -(before.duration().as_micros() as i64),
        }
    }

    /// The time `us` µs after the Unix epoch (at it, for a negative `us`).
    fn time_of_micros(us: i64) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use perfpilot_strategies::Signal;

    use super::*;

    #[test]
    fn the_engines_columns_read_back_what_it_evaluated_from() {
        let time = 1_796_645_247_413i64;
        let evaluated = Evaluated {
            at: UNIX_EPOCH + Duration::from_micros(time as u64 * 1000 + 1_734),
            watch_slopes: vec![(Signal::MemoryUsage, 2.5)],
        };
        let values: Vec<Option<f64>> = engine::read(time, Some(&evaluated)).collect();
        assert_eq!(values.len(), engine::count());
        assert_eq!(values[0], Some(1_734.0));
        assert_eq!(engine::evaluated(time, &values), Some(evaluated));
        let unknown: Vec<Option<f64>> = engine::read(time, None).collect();
        assert!(unknown.iter().all(Option::is_none));
        assert_eq!(engine::evaluated(time, &unknown), None);
    }

    #[test]
    fn every_signal_has_a_column_and_names_are_unique() {
        for row in SIGNALS {
            assert!(index_of(row.name).is_some(), "{}", row.name);
        }
        let mut names: Vec<&str> = names().collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count());
    }
}
