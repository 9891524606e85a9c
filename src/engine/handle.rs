//! The handle everything else holds: commands in over a channel, the published view and
//! the events out.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{OptimizeError, Reconfiguration, ResetError, StrategyChanges, View};
use crate::events::Event;
use crate::history::OptimizationRecord;

pub(super) enum Command {
    Optimize {
        strategy: Option<String>,
        reply: oneshot::Sender<Result<Vec<Arc<OptimizationRecord>>, OptimizeError>>,
    },
    Reconfigure {
        change: Box<Reconfiguration>,
        reply: oneshot::Sender<StrategyChanges>,
    },
    ResetLearning {
        budget: Option<String>,
        reply: oneshot::Sender<Result<Vec<String>, ResetError>>,
    },
}

/// A cheap, cloneable handle to the engine task.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) view: watch::Receiver<Arc<View>>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) stopping: CancellationToken,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Optimize { strategy, .. } => f
                .debug_struct("Optimize")
                .field("strategy", strategy)
                .finish(),
            Command::Reconfigure { change, .. } => f
                .debug_struct("Reconfigure")
                .field("change", change)
                .finish(),
            Command::ResetLearning { budget, .. } => f
                .debug_struct("ResetLearning")
                .field("budget", budget)
                .finish(),
        }
    }
}

impl EngineHandle {
    /// Runs one strategy (by name or alias) or, with `None`, every strategy, now: thresholds
    /// and cooldowns are bypassed, single flight is not. Resolves when the runs are recorded.
    pub async fn optimize(
        &self,
        strategy: Option<&str>,
    ) -> Result<Vec<Arc<OptimizationRecord>>, OptimizeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Optimize {
                strategy: strategy.map(str::to_owned),
                reply,
            })
            .await
            .map_err(|_| OptimizeError::Stopped)?;
        answer.await.map_err(|_| OptimizeError::Stopped)?
    }

    /// Swaps the engine's settings and strategies (a configuration reload). A batch of runs
    /// in progress finishes under the settings it started with; sampling, the history and
    /// subscribers go on. Resolves once the new settings are in force and published.
    pub async fn reconfigure(
        &self,
        change: Reconfiguration,
    ) -> Result<StrategyChanges, OptimizeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Reconfigure {
                change: Box::new(change),
                reply,
            })
            .await
            .map_err(|_| OptimizeError::Stopped)?;
        answer.await.map_err(|_| OptimizeError::Stopped)
    }

    /// Forgets what a budget (`Some(name)`) or every budget (`None`) learned about reacting:
    /// each rung's record and latency, the guard band, the rise. Resolves with the names of
    /// the budgets reset, once the view shows it.
    pub async fn reset_learning(&self, budget: Option<&str>) -> Result<Vec<String>, ResetError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ResetLearning {
                budget: budget.map(str::to_owned),
                reply,
            })
            .await
            .map_err(|_| ResetError::Stopped)?;
        answer.await.map_err(|_| ResetError::Stopped)?
    }

    /// The latest published view.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }

    /// A receiver of the engine's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Resolves once the engine has been told to stop (event streams end then).
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// Whether the engine task still runs: `false` once it has ended (after shutdown, or
    /// when it panicked, e.g. in a user's [`SignalSource`](super::SignalSource)).
    pub fn is_running(&self) -> bool {
        self.view.has_changed().is_ok()
    }

    /// A watch receiver of views, to wait for changes.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }
}
