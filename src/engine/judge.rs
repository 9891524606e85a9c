//! Judging runs after they settle: the sample that says whether a run helped, the back-off
//! of strategies that keep failing and the cooldown of those that do not help.

use perfpilot_strategies::RunKind;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Engine, Slot, Unjudged};
use crate::budget::ReactionMode;
use crate::events::Event;
use crate::history::{judge, OptimizationRecord};
use crate::trigger::backoff::BackoffChange;
use crate::trigger::CooldownChange;

impl Engine {
    /// Counts an automatic run's failure towards its strategy's back-off, or clears it; a
    /// successful run's effect is noted when it is judged ([`Engine::note_effect`]).
    pub(super) fn note_outcome(&mut self, record: &OptimizationRecord) {
        let now = self.clock.now().into_std();
        let Some(slot) = self.slot_of_mut(record) else {
            return;
        };
        let change = match record.success {
            true => slot.backoff.reset(),
            false => slot.backoff.record_failure(&slot.backoff_policy, now),
        };
        slot.log_backoff(change);
    }

    /// Lengthens or restores the cooldown of a successful automatic run's strategy by whether
    /// the run helped.
    pub(super) fn note_effect(&mut self, record: &OptimizationRecord) {
        if !record.success || record.kind != RunKind::Automatic || !self.settings.adaptive_cooldown
        {
            return;
        }
        let max_cooldown = self.settings.max_cooldown;
        let Some(slot) = self.slot_of_mut(record) else {
            return;
        };
        let change = slot.trigger.note_effect(record.helped, max_cooldown);
        slot.log_cooldown(change);
    }

    /// Judges the runs whose `settle` has passed by this tick's (smoothed) trigger values:
    /// fills in their `after` and `helped`, updates the history, the cooldowns and the
    /// metrics, and publishes the finished records. A rung of a budget with adaptive reaction
    /// waits for its budget's verdict instead ([`Engine::judge_rung_record`]).
    pub(super) fn judge_due(&mut self, now: Instant) {
        if self.unjudged.is_empty() {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unjudged)
            .into_iter()
            .partition(|unjudged| unjudged.due <= now && !self.judged_by_budget(&unjudged.record));
        self.unjudged = waiting;
        for Unjudged { record, .. } in due {
            let after = self.slot_of(&record).and_then(|slot| slot.value);
            let helped = judge(true, record.result.as_ref(), record.before, after);
            self.complete(&record, after, helped);
        }
    }

    /// Completes the record of the run of `budget`'s `rung` in `episode` with the verdict
    /// the budget gave it ([`crate::budget::Note::Judged`]): with adaptive reaction, the
    /// record says what the ladder learns (a rise turned into a plateau helped), not a
    /// verdict by the level alone. `after` is the budget's signal in the judging sample.
    pub(super) fn judge_rung_record(
        &mut self,
        budget: usize,
        episode: u64,
        rung: usize,
        helped: Option<bool>,
        after: f64,
    ) {
        let Some(held) = self.budgets.get(budget) else {
            return;
        };
        if held.budget.reaction().mode != ReactionMode::Adaptive {
            return;
        }
        let name = held.budget.name();
        let Some(position) = self.unjudged.iter().position(|unjudged| {
            unjudged.record.budget.as_ref().is_some_and(|step| {
                step.budget == name && step.episode == episode && step.rung == rung
            })
        }) else {
            return;
        };
        let Unjudged { record, .. } = self.unjudged.remove(position);
        self.complete(&record, Some(after), helped);
    }

    /// Whether `record` is the run of a rung whose budget gives its verdict
    /// ([`crate::budget::Budget::judges_run`]).
    fn judged_by_budget(&self, record: &OptimizationRecord) -> bool {
        record.budget.as_ref().is_some_and(|step| {
            self.budgets.iter().any(|held| {
                held.budget.name() == step.budget && held.budget.judges_run(step.episode, step.rung)
            })
        })
    }

    /// Fills in a recorded run's `after` and `helped`, updates the history, the cooldowns
    /// and the metrics, and publishes the finished record.
    fn complete(&mut self, record: &OptimizationRecord, after: Option<f64>, helped: Option<bool>) {
        let mut judged = record.clone();
        judged.after = after;
        judged.helped = helped;
        debug!(
            strategy = %judged.strategy,
            before = ?judged.before,
            after = ?judged.after,
            helped = ?judged.helped,
            "run judged"
        );
        let judged = self.history.judge(judged);
        self.note_effect(&judged);
        let _ = self.events.send(Event::OptimizationCompleted(judged));
    }

    /// The slot of the strategy that made `record`, by its canonical name.
    pub(super) fn slot_of(&self, record: &OptimizationRecord) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|slot| slot.strategy.name() == record.strategy)
    }

    /// [`Engine::slot_of`], to change.
    pub(super) fn slot_of_mut(&mut self, record: &OptimizationRecord) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|slot| slot.strategy.name() == record.strategy)
    }
}

impl Slot {
    /// Logs a change of the back-off state, once per change.
    pub(super) fn log_backoff(&self, change: Option<BackoffChange>) {
        let strategy = self.strategy.name();
        match change {
            Some(BackoffChange::Paused {
                failures, pause, ..
            }) => warn!(
                strategy,
                consecutive_failures = failures,
                pause_ms = pause.as_millis() as u64,
                "strategy keeps failing: automatic runs paused"
            ),
            Some(BackoffChange::Cleared { failures }) => info!(
                strategy,
                consecutive_failures = failures,
                "strategy back-off cleared"
            ),
            None => {}
        }
    }

    /// Logs a change of the cooldown in force, once per change.
    pub(super) fn log_cooldown(&self, change: Option<CooldownChange>) {
        let strategy = self.strategy.name();
        match change {
            Some(CooldownChange::Lengthened(cooldown)) => info!(
                strategy,
                unhelpful_runs = self.trigger.unhelpful_runs(),
                cooldown_ms = cooldown.as_millis() as u64,
                "runs are not relieving the signal: cooldown lengthened"
            ),
            Some(CooldownChange::Restored(cooldown)) => info!(
                strategy,
                cooldown_ms = cooldown.as_millis() as u64,
                "cooldown restored"
            ),
            None => {}
        }
    }
}
