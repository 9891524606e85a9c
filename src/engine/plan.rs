//! Planning runs: what runs and why (a fired trigger, a budget's rung, a manual request),
//! single flight, and dry runs recorded without running.

use std::sync::Arc;
use std::time::Duration;

use perfpilot_strategies::{Cause, Context, Level, Outcome, RunKind};
use tokio::time::Instant;
use tracing::info;

use super::execute::execute;
use super::{round, Engine, FinishedRun, OptimizeError, PlannedRun, Reply};
use crate::budget::RungRun;
use crate::history::{BudgetStep, Prediction};
use crate::sample::TargetHandle;
use crate::trigger::Forecast;

impl Engine {
    /// The planned run of a strategy whose trigger fired (`forecast`: it fired on its
    /// forecast), with the reason its record gives.
    pub(super) fn plan_fired(
        &mut self,
        index: usize,
        forecast: Option<Forecast>,
        now: Instant,
    ) -> PlannedRun {
        let slot = &mut self.slots[index];
        let threshold = slot.trigger.threshold();
        slot.trigger.mark_run(now.into_std());
        let spec = slot.trigger.spec();
        let value = round(slot.value.unwrap_or(f64::NAN));
        let reason = match forecast {
            Some(f) => format!(
                "{} = {value} predicted to reach {} in {:.1} s ({:+}/s)",
                spec.signal,
                round(f.at),
                f.seconds,
                round(f.slope_per_second)
            ),
            None => format!(
                "{} = {value} above {} ({})",
                spec.signal,
                round(threshold.or(spec.critical).unwrap_or(spec.above)),
                slot.trigger.level()
            ),
        };
        PlannedRun {
            strategy: Arc::clone(&slot.strategy),
            signal: spec.signal,
            level: slot.trigger.level(),
            before: slot.value,
            kind: RunKind::Automatic,
            reason,
            prediction: forecast.map(Prediction::from),
            budget: None,
        }
    }

    /// The planned run of a budget's rung.
    pub(super) fn plan_rung(
        &mut self,
        budget: usize,
        index: usize,
        run: RungRun,
        now: Instant,
    ) -> PlannedRun {
        let held = &self.budgets[budget].budget;
        let config = held.config();
        let before = self.latest.signal(config.signal);
        let level = match before {
            Some(value) if value > config.limit => Level::Critical,
            _ => Level::Warning,
        };
        let step = BudgetStep {
            budget: held.name().to_owned(),
            episode: run.episode,
            rung: run.rung,
            why: run.why.clone(),
        };
        let reason = format!(
            "budget {}, episode {}, rung {} ({}): {}",
            step.budget,
            run.episode,
            run.rung + 1,
            run.strategy,
            run.why
        );
        let slot = &mut self.slots[index];
        slot.trigger.mark_run(now.into_std());
        PlannedRun {
            strategy: Arc::clone(&slot.strategy),
            signal: config.signal,
            level,
            before,
            kind: RunKind::Automatic,
            reason,
            prediction: None,
            budget: Some((budget, step)),
        }
    }

    pub(super) fn optimize(&mut self, strategy: Option<String>, reply: Reply) {
        if self.running.is_some() {
            let _ = reply.send(Err(OptimizeError::Busy));
            return;
        }
        let chosen: Vec<usize> = match &strategy {
            None => (0..self.slots.len()).collect(),
            Some(name) => match self.find(name) {
                Some(index) => vec![index],
                None => {
                    let _ = reply.send(Err(OptimizeError::UnknownStrategy {
                        given: name.clone(),
                        known: self.build_view().known_names(),
                    }));
                    return;
                }
            },
        };
        // A manual run is the operator's retry: it ends any back-off of what it runs, and the
        // lengthened cooldown of a strategy that was not helping.
        for &index in &chosen {
            let slot = &mut self.slots[index];
            let change = slot.backoff.reset();
            slot.log_backoff(change);
            let change = slot.trigger.note_manual_run();
            slot.log_cooldown(change);
        }
        let runs = chosen
            .into_iter()
            .map(|index| &self.slots[index])
            .map(|slot| PlannedRun {
                strategy: Arc::clone(&slot.strategy),
                signal: slot.trigger.spec().signal,
                level: slot.trigger.level().max(Level::Warning),
                // Smoothed like an automatic run's (and like the `after` that judges it).
                before: slot
                    .value
                    .or_else(|| self.latest.signal(slot.trigger.spec().signal)),
                kind: RunKind::Manual,
                reason: match &strategy {
                    Some(name) => format!("manual request for `{name}`"),
                    None => "manual request for all strategies".to_owned(),
                },
                prediction: None,
                budget: None,
            })
            .collect();
        self.start_batch(runs, Some(reply));
        self.publish();
    }

    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.strategy.answers_to(name))
    }

    pub(super) fn start_batch(&mut self, runs: Vec<PlannedRun>, reply: Option<Reply>) {
        if self.settings.dry_run {
            let records = runs
                .into_iter()
                .map(|planned| {
                    info!(strategy = planned.strategy.name(), reason = %planned.reason, "dry run: would run strategy");
                    if let Some((budget, step)) = &planned.budget {
                        self.rung_finished(*budget, step.rung, None);
                    }
                    self.record(FinishedRun {
                        started_at: self.clock.wall(),
                        duration: Duration::ZERO,
                        ended: self.clock.now(),
                        result: Ok(Outcome::nothing_to_do("dry run: not executed")),
                        planned,
                    }, true)
                })
                .collect();
            if let Some(reply) = reply {
                let _ = reply.send(Ok(records));
            }
            return;
        }
        // The target's pids are read now, so a restarted target is acted on at its new pid.
        let context = Context {
            snapshot: Arc::clone(&self.latest),
            level: Level::Ok,
            kind: RunKind::Automatic,
            registry: Arc::clone(&self.registry),
            interval: self.settings.interval.clone(),
            targets: self
                .settings
                .target
                .as_ref()
                .map_or_else(Vec::new, TargetHandle::target_pids),
            cause: Cause::default(),
        };
        let timeout = self.settings.strategy_timeout;
        let (clock, executor) = (Arc::clone(&self.clock), Arc::clone(&self.executor));
        let batch = Box::pin(async move {
            let mut finished = Vec::with_capacity(runs.len());
            for planned in runs {
                let run = execute(planned, context.clone(), timeout, &*clock, &*executor);
                finished.push(run.await);
            }
            finished
        });
        self.batch = Some(self.executor.background(batch));
        self.running = Some(reply);
    }
}
