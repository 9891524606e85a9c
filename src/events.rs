//! Events the agent publishes to in-process subscribers (and, over HTTP, as Server-Sent Events).

use std::sync::Arc;
use std::time::SystemTime;

use perfpilot_strategies::{Signal, Snapshot};
use serde::Serialize;

use crate::budget::Exhaustion;
use crate::history::OptimizationRecord;

/// Something subscribers may want to know, as soon as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new sample was taken (`metrics-updated`), with what the engine read beside it when
    /// it evaluated it.
    MetricsUpdated(Arc<Snapshot>, Arc<Evaluated>),
    /// A strategy run finished (`optimization-completed`).
    OptimizationCompleted(Arc<OptimizationRecord>),
    /// A budget's ladder ran out above its limit (`budget-exhausted`).
    BudgetExhausted(Arc<Exhaustion>),
    /// The kernel's OOM killer killed a process in the watched process's memory cgroup
    /// (`oom-kill`): the memory limit was lost.
    OomKill(OomKill),
}

/// What the engine read beside a sample when it evaluated it, besides the sample itself: its
/// own clock and the fast watch's slopes. With the sample, all a decision depends on; the
/// flight recorder keeps it so that a replay takes the same decisions
/// ([`crate::replay`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// The engine's clock (its wall time) when it evaluated the sample: after sampling, a
    /// little later than [`Snapshot::taken_at`]. Its forecasts and urgency are fitted over
    /// these times.
    pub at: SystemTime,
    /// The slope (per second) toward its limit from the fast watch's own reads that the
    /// engine's budgets took at this sample instead of their samples' (fresh enough to
    /// count), by signal: the first budget's on each signal (a replay gives it to every budget
    /// on that signal); empty without a watch.
    pub watch_slopes: Vec<(Signal, f64)>,
}

impl Evaluated {
    /// A sample evaluated at `at` with no watch slope.
    pub fn at(at: SystemTime) -> Self {
        Evaluated {
            at,
            watch_slopes: Vec::new(),
        }
    }
}

/// What an `oom-kill` event says: how many kills were seen, when, and how close to the limit
/// the last sample before them was.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OomKill {
    /// Kills since the previous sample.
    pub new_kills: u64,
    /// The cgroup's count now.
    pub oom_kills: u64,
    /// When the sample that saw them was taken, ms since the Unix epoch.
    pub timestamp: u64,
    /// The memory usage ratio of the sample before the kill (the last the agent saw of the
    /// victim), 0..1.
    pub memory_usage_before: Option<f64>,
    /// The memory limit then, bytes.
    pub memory_limit_bytes: Option<u64>,
}

impl Event {
    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Event::MetricsUpdated(..) => "metrics-updated",
            Event::OptimizationCompleted(_) => "optimization-completed",
            Event::OomKill(_) => "oom-kill",
            Event::BudgetExhausted(_) => "budget-exhausted",
        }
    }
}
