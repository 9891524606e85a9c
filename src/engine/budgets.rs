//! Budgets on the engine's side: each budget's ladder resolved to registered strategies,
//! fed every full sample (scheduled, or taken at a fast watch's wake), its notes logged and its
//! exhaustion published; kept across a reload when its configuration is unchanged.

use std::sync::Arc;
use std::time::Duration;

use perfpilot_strategies::{MemoryLimitSource, Signal, Snapshot};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{BudgetSlot, Engine, ResetError, Slot};
use crate::budget::cost::CostReadings;
use crate::budget::{Budget, BudgetConfig, Note, ReactionTuning, RungRun};
use crate::events::Event;

/// Resolves each budget's ladder to registered strategies; a rung naming none is left out
/// (with a warning), and a budget left without rungs too.
pub(super) fn build_budgets(
    configs: &[(String, BudgetConfig)],
    reaction: ReactionTuning,
    slots: &[Slot],
) -> Vec<BudgetSlot> {
    let mut budgets = Vec::new();
    for (name, config) in configs {
        let mut rungs = Vec::new();
        for rung in &config.ladder {
            match slots.iter().position(|slot| slot.strategy.answers_to(rung)) {
                Some(index) => rungs.push(index),
                None => {
                    warn!(budget = %name, rung = %rung, "budget rung names no registered strategy: left out")
                }
            }
        }
        if rungs.is_empty() {
            warn!(budget = %name, "budget has no registered rung: not held");
            continue;
        }
        let ladder: Vec<String> = rungs
            .iter()
            .map(|&index| slots[index].strategy.name().to_owned())
            .collect();
        info!(budget = %name, signal = %config.signal, goal = config.goal, limit = config.limit, ladder = %ladder.join(" → "), at_limit = %config.at_limit, "budget held with a ladder (climbed in this order)");
        budgets.push(BudgetSlot {
            budget: Budget::new(name.clone(), config.clone(), ladder).with_reaction(reaction),
            rungs,
            cost: CostReadings::default(),
        });
    }
    budgets
}

/// How recent the fast watch's slope of a signal must be for a budget to judge urgency by it
/// instead of by its full samples alone: 250 ms (an armed watch reads every few ms to 50 ms).
const WATCH_SLOPE_FRESH: Duration = Duration::from_millis(250);

impl Engine {
    /// The fast watch's slope of each budget's signal toward its limit, by budget (in the
    /// order of `self.budgets`), where it is fresh enough for the budget to judge urgency by
    /// it: read once per sample, so that what the budgets take is what the sample's
    /// [`crate::events::Evaluated`] says they took.
    pub(super) fn watch_slopes(&self) -> Vec<Option<f64>> {
        let Some(watch) = &self.settings.watch else {
            return Vec::new();
        };
        self.budgets
            .iter()
            .map(|slot| {
                let signal = slot.budget.config().signal;
                watch.slope(slot.budget.name(), signal, WATCH_SLOPE_FRESH)
            })
            .collect()
    }

    /// The slopes taken, by signal, as a recording keeps them: the first budget's on each
    /// signal (budgets on one signal share a slope in a replay).
    pub(super) fn slopes_by_signal(&self, taken: &[Option<f64>]) -> Vec<(Signal, f64)> {
        let mut slopes: Vec<(Signal, f64)> = Vec::new();
        for (slot, slope) in self.budgets.iter().zip(taken) {
            let signal = slot.budget.config().signal;
            if let Some(slope) = slope {
                if !slopes.iter().any(|(known, _)| *known == signal) {
                    slopes.push((signal, *slope));
                }
            }
        }
        slopes
    }

    /// Feeds every budget this sample and the watch's slopes read for it
    /// ([`Engine::watch_slopes`]); returns the rungs to run now as (budget index, slot
    /// index, run). At most one budget starts a rung per sample (single flight: the others
    /// choose again at the next sample).
    pub(super) fn observe_budgets(
        &mut self,
        snapshot: &Snapshot,
        watch_slopes: &[Option<f64>],
        now: Instant,
        can_act: bool,
    ) -> Vec<(usize, usize, RungRun)> {
        let mut runs = Vec::new();
        for index in 0..self.budgets.len() {
            let slot = &mut self.budgets[index];
            // A sample without a limit (the target gone) leaves the line as it was.
            if snapshot.memory_limit_source.is_some() {
                slot.budget
                    .set_kill_line(is_kill_line(slot.budget.config(), snapshot));
            }
            let signal = slot.budget.config().signal;
            slot.budget
                .note_watch_slope(watch_slopes.get(index).copied().flatten());
            let value = snapshot.signal(signal);
            slot.cost.sample(snapshot, now.into_std());
            slot.budget.at_wall(now.into_std(), self.latest_at);
            let episode = slot.budget.latest_episode();
            let step = slot
                .budget
                .observe(value, now.into_std(), can_act && runs.is_empty());
            self.note_budget(index, &step.notes);
            for note in &step.notes {
                if let Note::Judged {
                    rung,
                    helped,
                    after,
                    ..
                } = note
                {
                    self.note_run_cost(index, episode, *rung, *helped);
                    self.judge_rung_record(index, episode, *rung, *helped, *after);
                }
            }
            if let Some(run) = step.run {
                let slot = &mut self.budgets[index];
                slot.cost.run_started(run.episode, run.rung, now.into_std());
                runs.push((index, slot.rungs[run.rung], run));
            }
        }
        self.publish_reactions();
        runs
    }

    /// A judged run of `budget`'s `rung` in `episode`: its cost is the change in the target's
    /// latency readings across it ([`CostReadings`]). A run not learned from (a dry run:
    /// `helped` unknown) cost nothing.
    fn note_run_cost(&mut self, budget: usize, episode: u64, rung: usize, helped: Option<bool>) {
        let Some(slot) = self.budgets.get_mut(budget) else {
            return;
        };
        if let Some(readings) = slot.cost.judged(episode, rung) {
            if helped.is_some() {
                slot.budget.note_run_cost(rung, readings);
            }
        }
    }

    /// Tells the fast watch the reaction time each adaptive budget needs (its next rung's
    /// measured latency and the budget's `settle`; the watch puts in its own period) and the
    /// goal it holds: it wakes the engine when its reads' slope puts the limit nearer than
    /// that, unless the reading is inside the noise band under that goal. A budget with
    /// fixed reaction does not act on urgency, so the watch is not told to wake for it.
    fn publish_reactions(&self) {
        let Some(watch) = &self.settings.watch else {
            return;
        };
        for slot in &self.budgets {
            if let Some(reaction) = slot.budget.reaction_needed() {
                watch.publish_reaction(slot.budget.name(), reaction);
                watch.publish_goal(slot.budget.name(), slot.budget.goal());
            }
        }
    }

    /// Logs a budget's notes; an exhausted ladder is also an event and a counter.
    pub(super) fn note_budget(&self, index: usize, notes: &[Note]) {
        let budget = self.budgets[index].budget.name();
        for note in notes {
            match note {
                Note::EpisodeStarted { episode, reason } => {
                    info!(budget, episode, %reason, "budget episode started")
                }
                Note::Judged {
                    strategy,
                    helped,
                    before,
                    after,
                    ..
                } => {
                    info!(budget, strategy = %strategy, helped = ?helped, before, after, "budget rung judged")
                }
                Note::Skipped { strategy, why, .. } => {
                    info!(budget, strategy = %strategy, %why, "budget rung skipped")
                }
                Note::Waiting { why } => info!(budget, %why, "budget waiting"),
                Note::GoalMoved {
                    effective,
                    configured,
                    why,
                } => {
                    warn!(budget, effective, configured, %why, "budget's guard band moved its goal")
                }
                Note::Exhausted(exhaustion) => {
                    warn!(budget, episode = exhaustion.episode, value = exhaustion.value, limit = exhaustion.limit, message = %exhaustion.message, "budget exhausted");
                    let _ = self
                        .events
                        .send(Event::BudgetExhausted(Arc::new(exhaustion.clone())));
                }
                Note::EpisodeEnded { episode, duration } => {
                    info!(
                        budget,
                        episode,
                        duration_s = duration.as_secs_f64(),
                        "budget episode ended: back under goal"
                    )
                }
            }
        }
    }

    /// The target was OOM-killed (`how`: what the count did): every budget on
    /// `memory_usage` learns from it (its guard band).
    pub(super) fn budgets_oom_killed(&mut self, how: &str) {
        for index in 0..self.budgets.len() {
            let budget = &mut self.budgets[index].budget;
            if budget.config().signal != Signal::MemoryUsage {
                continue;
            }
            if let Some(note) = budget.oom_killed(how) {
                self.note_budget(index, &[note]);
            }
        }
    }

    /// Resets the learned reaction state of one budget or all.
    pub(super) fn reset_learning(&mut self, name: Option<&str>) -> Result<Vec<String>, ResetError> {
        let chosen: Vec<usize> = match name {
            None => (0..self.budgets.len()).collect(),
            Some(name) => match self.budgets.iter().position(|b| b.budget.name() == name) {
                Some(index) => vec![index],
                None => {
                    return Err(ResetError::UnknownBudget {
                        given: name.to_owned(),
                        known: self
                            .budgets
                            .iter()
                            .map(|b| b.budget.name().to_owned())
                            .collect(),
                    })
                }
            },
        };
        let mut reset = Vec::new();
        for index in chosen {
            let budget = &mut self.budgets[index].budget;
            budget.reset_learning();
            info!(
                budget = budget.name(),
                "budget's learned reaction state reset"
            );
            reset.push(budget.name().to_owned());
        }
        Ok(reset)
    }

    /// Tells a budget that its rung finished (`acted`: `None` in a dry run).
    pub(super) fn rung_finished(&mut self, budget: usize, rung: usize, acted: Option<bool>) {
        if let Some(slot) = self.budgets.get_mut(budget) {
            slot.budget
                .finished(rung, acted, self.clock.now().into_std());
        }
    }

    /// A budget's rung finished with `report`: its cost fields add to the rung's cost.
    pub(super) fn rung_reported(
        &mut self,
        budget: usize,
        rung: usize,
        report: &serde_json::Map<String, serde_json::Value>,
    ) {
        if let Some(slot) = self.budgets.get_mut(budget) {
            slot.budget.note_reported_cost(rung, report);
        }
    }

    /// After a reload: the budgets of the new settings over the new strategy slots; a budget
    /// that keeps its name and its configuration keeps its episode, history and learning.
    pub(super) fn rebuild_budgets(&mut self) {
        let mut previous = std::mem::take(&mut self.budgets);
        let mut budgets =
            build_budgets(&self.settings.budgets, self.settings.reaction, &self.slots);
        for budget in &mut budgets {
            if let Some(index) = previous.iter().position(|old| {
                old.budget.name() == budget.budget.name()
                    && old.budget.config() == budget.budget.config()
                    && old.budget.reaction() == budget.budget.reaction()
            }) {
                let kept = previous.swap_remove(index);
                budget.budget = kept.budget;
                budget.cost = kept.cost;
            }
        }
        self.budgets = budgets;
    }
}

/// Whether `config`'s limit is the target's cgroup limit, whose crossing kills it: the signal
/// is `memory_usage`, its limit is the cgroup's, and the budget's limit is all of it.
fn is_kill_line(config: &BudgetConfig, snapshot: &Snapshot) -> bool {
    config.signal == Signal::MemoryUsage
        && config.limit >= 1.0
        && snapshot.memory_limit_source == Some(MemoryLimitSource::Cgroup)
}
