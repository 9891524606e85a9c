//! What the recorder keeps of each sample: one column per signal (derived from
//! [`SIGNALS`]) and the few numeric sample fields that are not signals but that a reader of
//! the recording needs (the memory limit and usage in bytes, virtual memory, uptime).

use perfpilot_strategies::signals::SIGNALS;
use perfpilot_strategies::Snapshot;

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

#[cfg(test)]
mod tests {
    use super::*;

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
