//! A memory signal the engine's scenario tests set by hand, shared by the budget and reload
//! tests.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use perfpilot_strategies::Snapshot;

use super::SignalSource;

/// A memory usage ratio the test and its strategies set; every sample reads it.
#[derive(Clone, Default)]
pub(super) struct Memory(pub(super) Arc<Mutex<f64>>);

impl Memory {
    pub(super) fn set(&self, value: f64) {
        *self.0.lock().unwrap() = value;
    }
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Memory")
    }
}

impl SignalSource for Memory {
    fn sample(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.memory_usage_ratio = Some(*self.0.lock().unwrap());
        snapshot
    }
}
