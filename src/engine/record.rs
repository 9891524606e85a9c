//! Recording finished runs: the record, its log line, and either its judgement scheduled
//! or its event published.

use std::sync::Arc;

use perfpilot_strategies::RunKind;
use tracing::{info, warn};

use super::execute::TaskFailure;
use super::{Engine, FinishedRun, Unjudged};
use crate::events::Event;
use crate::history::{judge, OptimizationRecord};

impl Engine {
    pub(super) fn finish_batch(&mut self, done: Result<Vec<FinishedRun>, TaskFailure>) {
        // The fast watch reports a crossing once; after an action it looks again, so a signal
        // still above a threshold (a rung that was not enough) is seen within its interval,
        // not at the next full sample.
        if let Some(watch) = &self.settings.watch {
            watch.rearm();
        }
        let reply = self.running.take().flatten();
        let automatic = reply.is_none();
        let records: Vec<_> = match done {
            Ok(runs) => runs
                .into_iter()
                .map(|run| {
                    if let Some((budget, step)) = &run.planned.budget {
                        let acted = run.result.as_ref().is_ok_and(|outcome| outcome.acted);
                        self.rung_finished(*budget, step.rung, Some(acted));
                        if let Ok(outcome) = &run.result {
                            self.rung_reported(*budget, step.rung, &outcome.report);
                        }
                    }
                    let record = self.record(run, false);
                    if record.kind == RunKind::Automatic {
                        self.note_outcome(&record);
                    }
                    record
                })
                .collect(),
            Err(e) => {
                warn!(error = %e, "optimization batch task failed");
                for budget in 0..self.budgets.len() {
                    if let Some(rung) = self.budgets[budget].budget.running_rung() {
                        self.rung_finished(budget, rung, Some(false));
                    }
                }
                Vec::new()
            }
        };
        if automatic && !self.settings.post_action_delay.is_zero() {
            self.quiet_until = Some(self.clock.now() + self.settings.post_action_delay);
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(records));
        }
        self.publish();
    }

    pub(super) fn record(&mut self, run: FinishedRun, dry_run: bool) -> Arc<OptimizationRecord> {
        // A run's verdict on the sampling interval (interval-backoff's) is applied here.
        if let Some(asked) = run.result.as_ref().ok().and_then(|o| o.interval) {
            let interval = self.settings.interval.set(asked);
            info!(
                strategy = run.planned.strategy.name(),
                interval_ms = interval.as_millis() as u64,
                "sampling interval set"
            );
        }
        let (success, error, result) = match run.result {
            Ok(outcome) => (true, None, Some(outcome)),
            Err(error) => (false, Some(error), None),
        };
        // A run that acted on a signal that was read waits for the sample that judges it;
        // a failure, a run that changed nothing, and a dry run are final now.
        let waits = !dry_run
            && success
            && result.as_ref().is_some_and(|o| o.acted)
            && run.planned.before.is_some();
        let (after, helped) = match (dry_run, waits) {
            (true, _) => (run.planned.before, None),
            (false, true) => (None, None),
            (false, false) => (
                None,
                judge(success, result.as_ref(), run.planned.before, None),
            ),
        };
        let record = OptimizationRecord {
            id: self.history.next_id(),
            strategy: run.planned.strategy.name().to_owned(),
            kind: run.planned.kind,
            reason: run.planned.reason,
            signal: run.planned.signal,
            level: run.planned.level,
            started_at: run.started_at,
            duration_ms: run.duration.as_secs_f64() * 1000.0,
            success,
            error,
            before: run.planned.before,
            after,
            result,
            dry_run,
            prediction: run.planned.prediction,
            helped,
            budget: run.planned.budget.map(|(_, step)| step),
        };
        if !dry_run {
            match &record.error {
                None => info!(
                    strategy = %record.strategy,
                    duration_ms = record.duration_ms,
                    before = ?record.before,
                    summary = record.result.as_ref().map(|o| o.summary.as_str()).unwrap_or(""),
                    "strategy applied"
                ),
                Some(error) => warn!(strategy = %record.strategy, %error, "strategy failed"),
            }
        }
        let record = self.history.push(record);
        if waits {
            self.unjudged.push(Unjudged {
                record: Arc::clone(&record),
                due: run.ended + self.settings.settle,
            });
        } else {
            if !dry_run {
                self.note_effect(&record);
            }
            let _ = self
                .events
                .send(Event::OptimizationCompleted(Arc::clone(&record)));
        }
        record
    }
}
