//! A configuration reload: new settings and strategies swapped in, each strategy keeping
//! its state by name.

use tracing::info;

use super::{Engine, Reconfiguration, Slot, StrategyChanges};
use crate::trigger::backoff::{BackoffPolicy, FailureBackoff};
use crate::trigger::TriggerState;

impl Engine {
    /// Swaps settings and strategies; strategies keep their state by name. Returns what
    /// changed among the strategies and whether the interval control was replaced.
    pub(super) fn reconfigure(&mut self, change: Reconfiguration) -> (StrategyChanges, bool) {
        let Reconfiguration {
            mut settings,
            strategies,
        } = change;
        settings.target = self.settings.target.clone();
        settings.worker = self.settings.worker.clone();
        // The fast watch's thread belongs to the agent, not to a configuration.
        settings.watch = self.settings.watch.clone();
        let old = &self.settings.interval;
        let new = &settings.interval;
        let interval_replaced =
            (new.min(), new.base(), new.max()) != (old.min(), old.base(), old.max());
        if interval_replaced {
            info!(
                interval_ms = new.base().as_millis() as u64,
                max_interval_ms = new.max().as_millis() as u64,
                "reload: new sampling interval"
            );
        } else {
            // The same bounds: keep the control, and where backoff or adaptive sampling put it.
            settings.interval = old.clone();
        }
        let same_sampling = match (&self.sampling, &settings.adaptive_sampling) {
            (Some(running), Some(new)) => {
                (running.min(), running.calm()) == (new.min(), new.calm())
            }
            (None, None) => true,
            _ => false,
        };
        if interval_replaced || !same_sampling {
            self.sampling = settings.adaptive_sampling.clone();
        }
        self.history.set_capacity(settings.history_size);

        let mut changes = StrategyChanges::default();
        let mut previous = std::mem::take(&mut self.slots);
        for registered in strategies {
            let name = registered.strategy.name().to_owned();
            let backoff_policy = BackoffPolicy::new(
                settings.backoff_after_failures,
                registered.trigger.cooldown,
                settings.max_backoff,
            );
            let automatic = !settings
                .rung_only
                .iter()
                .any(|rung| registered.strategy.answers_to(rung));
            let slot = match previous
                .iter()
                .position(|slot| slot.strategy.name() == name)
            {
                Some(index) => {
                    let mut slot = previous.remove(index);
                    if *slot.trigger.spec() == registered.trigger {
                        changes.kept.push(name);
                    } else {
                        changes.retriggered.push(name);
                        slot.trigger.reconfigure(registered.trigger);
                    }
                    slot.strategy = registered.strategy;
                    slot.backoff_policy = backoff_policy;
                    slot.automatic = automatic;
                    slot
                }
                None => {
                    changes.added.push(name);
                    Slot {
                        automatic,
                        backoff_policy,
                        backoff: FailureBackoff::default(),
                        trigger: TriggerState::new(registered.trigger),
                        strategy: registered.strategy,
                        value: None,
                    }
                }
            };
            self.slots.push(slot);
        }
        for slot in previous {
            let name = slot.strategy.name().to_owned();
            changes.removed.push(name);
        }
        self.settings = settings;
        self.rebuild_budgets();
        (changes, interval_replaced)
    }
}
