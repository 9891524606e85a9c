//! What the engine learned, for [`crate::learned`] to keep across restarts: taken into every
//! published view, and restored once at start.

use perfpilot_strategies::snapshot::unix_millis::millis;
use std::time::Duration;

use tracing::info;

use super::Engine;
use crate::history::StrategyStats;
use crate::learned::{BaselineLearned, Learned, StrategyLearned, FORMAT};

impl Engine {
    /// Each strategy's track record, adaptive cooldown and baseline, and each budget's rung
    /// statistics (unstamped: the writer stamps the time).
    pub(super) fn learned(&self) -> Learned {
        let per_strategy = &self.history.stats().per_strategy;
        Learned {
            format: FORMAT,
            agent: env!("CARGO_PKG_VERSION").to_owned(),
            saved_at: 0,
            strategies: self
                .slots
                .iter()
                .map(|slot| {
                    let name = slot.strategy.name();
                    let stats = per_strategy.get(name).cloned().unwrap_or_default();
                    let (relief_sum, relief_samples) = stats.relief_totals();
                    StrategyLearned {
                        name: name.to_owned(),
                        acts_on: slot.strategy.acts_on(),
                        updated_at: 0,
                        last_run: stats.last_run.map(millis),
                        runs: stats.runs,
                        successes: stats.successes,
                        helped: stats.helped,
                        judged: stats.judged,
                        relief_sum,
                        relief_samples,
                        cooldown_ms: slot.trigger.cooldown().as_millis() as u64,
                        unhelpful_runs: slot.trigger.unhelpful_runs(),
                        baseline: slot.trigger.learned_baseline().map(
                            |(mean, variance, samples)| BaselineLearned {
                                mean,
                                variance,
                                samples,
                            },
                        ),
                    }
                })
                .collect(),
            budgets: self.budgets.iter().map(|b| b.budget.learned()).collect(),
        }
    }

    /// Takes what `learned` holds for the strategies that kept their name and what they act
    /// on, and the budgets that kept their name and signal; says which start fresh.
    pub(super) fn restore(&mut self, learned: &Learned) {
        let now = self.clock.now().into_std();
        for slot in &mut self.slots {
            let name = slot.strategy.name();
            let Some(old) = learned.strategies.iter().find(|s| s.name == name) else {
                continue;
            };
            let acts_on = slot.strategy.acts_on();
            if old.acts_on != acts_on {
                info!(strategy = name, before = %old.acts_on, now = %acts_on, "strategy acts on something else than before the restart: it starts fresh");
                continue;
            }
            if old.runs > 0 {
                self.history
                    .restore_strategy(name, StrategyStats::restored(old));
            }
            // The cooldown counts from the last run before the restart.
            let last_run = old.last_run.and_then(|ms| {
                let ago = millis(self.clock.wall()).checked_sub(ms)?;
                now.checked_sub(Duration::from_millis(ago))
            });
            slot.trigger.restore_learned(
                Duration::from_millis(old.cooldown_ms),
                last_run,
                old.unhelpful_runs,
                old.baseline.map(|b| (b.mean, b.variance, b.samples)),
            );
        }
        for slot in &mut self.budgets {
            let budget = &mut slot.budget;
            let Some(old) = learned.budgets.iter().find(|b| b.name == budget.name()) else {
                continue;
            };
            let signal = budget.learned().signal;
            if old.signal != signal {
                info!(budget = budget.name(), before = %old.signal, now = %signal, "budget holds another signal than before the restart: its ladder's record starts fresh");
                continue;
            }
            budget.restore(old);
        }
    }
}
