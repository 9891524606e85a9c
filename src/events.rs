//! Events the agent publishes to in-process subscribers (and, over HTTP, as Server-Sent Events).

use std::sync::Arc;

use perfpilot_strategies::Snapshot;

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
}

impl Event {
    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Event::MetricsUpdated(_) => "metrics-updated",
            Event::OptimizationCompleted(_) => "optimization-completed",
            Event::BudgetExhausted(_) => "budget-exhausted",
        }
    }
}
