//! What the engine publishes after every sample and run: the view the API, the dashboard
//! and the metrics read.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use perfpilot_strategies::{Level, Signal, Snapshot, TriggerSpec};

use super::Engine;
use crate::budget::BudgetView;
use crate::history::{OptimizationRecord, Stats};
use crate::sample::{WatchHandle, WatchStatus};
use crate::trigger::Forecast;

/// What the engine publishes after every sample and run: everything the API shows.
#[derive(Debug, Clone)]
pub struct View {
    /// The latest sample.
    pub snapshot: Arc<Snapshot>,
    /// When the engine got the latest sample (its end; `snapshot.taken_at` is its start):
    /// what `GET /health` measures a stall from.
    pub sampled_at: SystemTime,
    /// Running stats over all runs.
    pub stats: Stats,
    /// Whether a batch of strategy runs is in progress.
    pub is_optimizing: bool,
    /// Whether automatic runs are on.
    pub enabled: bool,
    /// Whether the agent is in dry-run mode.
    pub dry_run: bool,
    /// The sampling interval in force.
    pub interval: Duration,
    /// The retained records, oldest first.
    pub recent: Vec<Arc<OptimizationRecord>>,
    /// Every registered strategy with its trigger state.
    pub strategies: Vec<StrategyView>,
    /// The fast watch between samples, when one runs.
    pub fast_watch: Option<WatchStatus>,
    /// Immediate samples the fast watch asked for, by signal and how it saw the crossing
    /// (`poll`, `psi`), since the start.
    pub watch_wakes: Vec<(Signal, &'static str, u64)>,
    /// Why the last sample failed (the signal source panicked); `None` once one succeeds.
    pub sampling_error: Option<String>,
    /// Every budget with its episode and ladder.
    pub budgets: Vec<BudgetView>,
    /// What the engine learned, as `crate::learned` keeps it across restarts.
    pub learned: crate::learned::Learned,
}

impl View {
    /// A view of `snapshot` as a quiet engine sampling every `interval` would publish it: no
    /// runs, strategies, budgets or watch. Tests change the fields they need.
    #[cfg(test)]
    pub(crate) fn of(snapshot: Arc<Snapshot>, interval: Duration) -> View {
        View {
            sampled_at: snapshot.taken_at,
            snapshot,
            stats: Stats::default(),
            is_optimizing: false,
            enabled: true,
            dry_run: false,
            interval,
            recent: Vec::new(),
            strategies: Vec::new(),
            fast_watch: None,
            watch_wakes: Vec::new(),
            sampling_error: None,
            budgets: Vec::new(),
            learned: Default::default(),
        }
    }

    /// Every name and alias a manual run accepts.
    pub fn known_names(&self) -> Vec<String> {
        self.strategies
            .iter()
            .flat_map(|s| std::iter::once(s.name.clone()).chain(s.aliases.iter().cloned()))
            .collect()
    }
}

/// One strategy as the API lists it.
#[derive(Debug, Clone)]
pub struct StrategyView {
    /// Name.
    pub name: String,
    /// Aliases.
    pub aliases: Vec<String>,
    /// What it does.
    pub description: String,
    /// Its trigger.
    pub trigger: TriggerSpec,
    /// Its signal's level now.
    pub level: Level,
    /// Its signal's (smoothed) value in the last sample.
    pub value: Option<f64>,
    /// Failed automatic runs in a row.
    pub consecutive_failures: u32,
    /// While its automatic runs are paused after failures: until when.
    pub backoff_until: Option<SystemTime>,
    /// The cooldown in force (lengthened while runs do not help).
    pub cooldown: Duration,
    /// Runs in a row that did not relieve the signal.
    pub unhelpful_runs: u32,
    /// When the signal's trend reaches its target, if it is rising towards it.
    pub forecast: Option<Forecast>,
    /// The threshold in force (`above`, or the learned one; `None` while it warms up).
    pub threshold: Option<f64>,
    /// It runs automatically only as a budget's rung (its trigger does not fire).
    pub rung_only: bool,
}

impl Engine {
    pub(super) fn build_view(&self) -> View {
        let now = self.clock.now().into_std();
        let wall = self.clock.wall();
        View {
            snapshot: Arc::clone(&self.latest),
            sampled_at: self.latest_at,
            stats: self.history.stats().clone(),
            is_optimizing: self.running.is_some(),
            enabled: self.settings.enabled,
            dry_run: self.settings.dry_run,
            interval: self.settings.interval.current(),
            recent: self.history.recent().cloned().collect(),
            strategies: self
                .slots
                .iter()
                .map(|slot| StrategyView {
                    name: slot.strategy.name().to_owned(),
                    aliases: slot
                        .strategy
                        .aliases()
                        .iter()
                        .map(|a| (*a).to_owned())
                        .collect(),
                    description: slot.strategy.description().to_owned(),
                    trigger: slot.trigger.spec().clone(),
                    level: slot.trigger.level(),
                    value: slot.value,
                    consecutive_failures: slot.backoff.consecutive_failures(),
                    backoff_until: slot
                        .backoff
                        .paused_until()
                        .filter(|until| *until > now)
                        .map(|until| wall + (until - now)),
                    cooldown: slot.trigger.cooldown(),
                    unhelpful_runs: slot.trigger.unhelpful_runs(),
                    forecast: slot.trigger.forecast(),
                    threshold: slot.trigger.threshold(),
                    rung_only: !slot.automatic,
                })
                .collect(),
            fast_watch: self.settings.watch.as_ref().map(WatchHandle::status),
            sampling_error: self.sampling_error.clone(),
            watch_wakes: self
                .watch_wakes
                .iter()
                .map(|(&(signal, how), &count)| (signal, how, count))
                .collect(),
            budgets: self.budgets.iter().map(|b| b.budget.view(now)).collect(),
            learned: self.learned(),
        }
    }

    pub(super) fn publish(&self) {
        if let Some(view) = &self.view {
            view.send_replace(Arc::new(self.build_view()));
        }
    }
}
