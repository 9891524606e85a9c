//! Events the agent publishes to in-process subscribers (and, over HTTP, as Server-Sent Events).

use std::sync::Arc;

use perfpilot_strategies::Snapshot;
use serde::Serialize;

use crate::budget::Exhaustion;
use crate::history::OptimizationRecord;

/// Something subscribers may want to know, as soon as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new sample was taken (`metrics-updated`).
    MetricsUpdated(Arc<Snapshot>),
    /// A strategy run finished (`optimization-completed`).
    OptimizationCompleted(Arc<OptimizationRecord>),
    /// A budget's ladder ran out above its limit (`budget-exhausted`).
    BudgetExhausted(Arc<Exhaustion>),
    /// The kernel's OOM killer killed a process in the watched process's memory cgroup
    /// (`oom-kill`): the memory limit was lost.
    OomKill(OomKill),
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
            Event::MetricsUpdated(_) => "metrics-updated",
            Event::OptimizationCompleted(_) => "optimization-completed",
            Event::OomKill(_) => "oom-kill",
            Event::BudgetExhausted(_) => "budget-exhausted",
        }
    }
}
