//! The loop and its schedule: samples at a fixed rate (sooner when the fast watch wakes
//! it), commands, finished batches, shutdown; each sample evaluated and the interval adapted.

use std::sync::Arc;

use perfpilot_strategies::{Level, Snapshot};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::clock::Pending;
use super::execute::{SharedSource, TaskFailure};
use super::handle::Command;
use super::{Engine, PlannedRun};
use crate::events::{Evaluated, Event, OomKill};
use crate::sample::WatchHandle;
use crate::trigger::cadence::{self, Step};

impl Engine {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        mut next_tick: Instant,
    ) {
        let watch = self.settings.watch.clone();
        // The sample in progress, and whether it is the scheduled one (not a fast watch's
        // wake): its /proc reads block, so the executor takes it (tokio's blocking pool in
        // production) and the runtime's workers (the API) go on meanwhile.
        let mut sampling: Option<(Pending<Result<Snapshot, TaskFailure>>, bool)> = None;
        let executor = Arc::clone(&self.executor);
        let sample = |source: &SharedSource| executor.sample(Arc::clone(source));
        self.publish();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                done = async { self.batch.as_mut().expect("guarded by is_some").await },
                    if self.batch.is_some() =>
                {
                    self.batch = None;
                    self.finish_batch(done);
                    // A crossing seen while the batch ran could not start a run then (single
                    // flight), and the watch reports a crossing once: evaluate it now rather
                    // than at the next tick.
                    if std::mem::take(&mut self.wake_pending) && sampling.is_none() {
                        sampling = Some((sample(&self.source), false));
                    }
                }
                Some(command) = commands.recv() => {
                    if self.handle(command) {
                        // A new interval counts from now, not from the old schedule.
                        next_tick = self.clock.now() + self.settings.interval.current();
                    }
                }
                // A crossing seen between samples: sample and evaluate now. The fixed-rate
                // ticks go on as planned.
                () = woken(watch.as_ref()) => {
                    self.note_wake(watch.as_ref());
                    if sampling.is_none() {
                        sampling = Some((sample(&self.source), false));
                    }
                }
                sampled = async { (&mut sampling.as_mut().expect("guarded by is_some").0).await },
                    if sampling.is_some() =>
                {
                    let (_, scheduled) = sampling.take().expect("guarded by is_some");
                    self.sampled(sampled);
                    if scheduled {
                        // Fixed rate: the time a tick takes (and the timer's millisecond
                        // rounding) does not push later ticks back; after a stall, one tick at
                        // once.
                        next_tick = (next_tick + self.settings.interval.current()).max(self.clock.now());
                    }
                }
                _ = self.clock.sleep_until(next_tick), if sampling.is_none() => {
                    sampling = Some((sample(&self.source), true));
                }
            }
        }
        self.drain().await;
    }

    /// Counts the crossings the fast watch reports, by signal and how it saw them; a batch
    /// running now is evaluated again when it ends.
    fn note_wake(&mut self, watch: Option<&WatchHandle>) {
        self.wake_pending = self.running.is_some();
        for (signal, mode) in watch.map(WatchHandle::take_crossings).unwrap_or_default() {
            let how = mode.label();
            debug!(%signal, how, "fast watch: threshold crossed, sampling now");
            *self.watch_wakes.entry((signal, how)).or_default() += 1;
        }
    }

    /// A sample came back: evaluated, or its failure published.
    fn sampled(&mut self, sampled: Result<Snapshot, TaskFailure>) {
        match sampled {
            Ok(snapshot) => {
                self.sampling_error = None;
                self.tick(snapshot);
            }
            Err(e) => {
                error!(%e, "sampling failed");
                self.sampling_error = Some(e.reason());
                self.publish();
            }
        }
    }

    /// At shutdown: lets a running batch finish, and publishes the runs no sample will judge
    /// any more as they are (`helped` unknown).
    async fn drain(&mut self) {
        if self.running.is_some() {
            info!("shutting down: waiting for the running optimization to finish");
            if let Some(batch) = self.batch.take() {
                self.finish_batch(batch.await);
            }
        }
        for unjudged in std::mem::take(&mut self.unjudged) {
            let _ = self
                .events
                .send(Event::OptimizationCompleted(unjudged.record));
        }
    }

    /// Evaluates every trigger and budget on a new sample, judges the runs it settles and
    /// starts what fired (single flight).
    pub(super) fn tick(&mut self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        self.note_oom_kills(&snapshot);
        self.latest = Arc::clone(&snapshot);
        self.latest_at = self.clock.wall();
        let now = self.clock.now();
        let mut fired = Vec::new();
        let mut attention = false;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let signal = slot.trigger.spec().signal;
            let evaluation = slot
                .trigger
                .evaluate(snapshot.signal(signal), now.into_std());
            slot.value = evaluation.value;
            // The agent's own CPU is interval-backoff's business: sampling faster because CPU
            // is high would make it worse.
            if !slot.strategy.paces_sampling() {
                attention |= evaluation.attention;
            }
            if evaluation.fire && slot.automatic && !slot.backoff.is_paused(now.into_std()) {
                let forecast = evaluation.forecast.filter(|_| evaluation.predictive);
                fired.push((index, forecast));
            }
        }
        // A budget in an episode needs its samples: its climb is read from them.
        attention |= self.budgets.iter().any(|held| held.budget.in_episode());
        self.adapt_interval(attention);
        self.judge_due(now);
        // What the budgets take besides the sample, read once and published with it.
        let taken = self.watch_slopes();
        let evaluated = Arc::new(Evaluated {
            at: self.latest_at,
            watch_slopes: self.slopes_by_signal(&taken),
        });
        let _ = self.events.send(Event::MetricsUpdated(
            Arc::clone(&snapshot),
            Arc::clone(&evaluated),
        ));

        let quiet = self.quiet_until.is_some_and(|until| now < until);
        let can_act = self.settings.enabled && self.running.is_none() && !quiet;
        let budget_runs = self.observe_budgets(&snapshot, &taken, now, can_act);
        // A strategy a budget runs as a rung now is not run again by its own trigger.
        fired.retain(|(index, _)| !budget_runs.iter().any(|run| run.1 == *index));
        if can_act && (!fired.is_empty() || !budget_runs.is_empty()) {
            let mut runs: Vec<PlannedRun> = budget_runs
                .into_iter()
                .map(|(budget, index, run)| self.plan_rung(budget, index, run, now))
                .collect();
            runs.extend(
                fired
                    .into_iter()
                    .map(|(index, forecast)| self.plan_fired(index, forecast, now)),
            );
            self.start_batch(runs, None);
        }
        self.publish();
    }

    /// Publishes an `oom-kill` event (and counts it) when the cgroup's OOM-kill count rose
    /// since the last sample that read it.
    pub(super) fn note_oom_kills(&mut self, snapshot: &Snapshot) {
        let Some(count) = snapshot.oom_kills else {
            return;
        };
        let previous = self.oom_kills.replace(count);
        let new_kills = match previous {
            Some(previous) if count > previous => count - previous,
            _ => return,
        };
        warn!(
            new_kills,
            oom_kills = count,
            memory_usage_before = self.latest.memory_usage_ratio,
            "the kernel OOM-killed a process in the watched cgroup: the memory limit was lost"
        );
        self.budgets_oom_killed(&format!("oom_kills {} → {count}", count - new_kills));
        let _ = self.events.send(Event::OomKill(OomKill {
            new_kills,
            oom_kills: count,
            timestamp: perfpilot_strategies::snapshot::unix_millis::millis(snapshot.taken_at),
            memory_usage_before: self.latest.memory_usage_ratio,
            memory_limit_bytes: self.latest.memory_limit_bytes,
        }));
    }

    /// Sets the next interval as [`cadence::next`] decides: under CPU pressure
    /// interval-backoff's verdicts set it; otherwise adaptive sampling (if on) picks it from
    /// `attention`, or else the interval halves back towards its base.
    pub(super) fn adapt_interval(&mut self, attention: bool) {
        let interval = &self.settings.interval;
        let cpu_calm = self
            .slots
            .iter()
            .filter(|slot| slot.strategy.paces_sampling())
            .all(|slot| slot.trigger.level() == Level::Ok);
        let current = interval.current();
        let step = cadence::next(
            self.sampling.as_mut(),
            current,
            interval.base(),
            cpu_calm,
            attention,
        );
        match step {
            Step::Keep => {}
            Step::Faster(wanted) => {
                let next = interval.set(wanted);
                info!(
                    interval_ms = next.as_millis() as u64,
                    "a signal is near its threshold: sampling faster"
                );
            }
            Step::Adapted(wanted) => {
                let next = interval.set(wanted);
                if next != current {
                    debug!(
                        interval_ms = next.as_millis() as u64,
                        "calm: sampling slower"
                    );
                }
            }
            Step::Relaxed(wanted) => {
                let relaxed = interval.set(wanted);
                info!(
                    interval_ms = relaxed.as_millis() as u64,
                    "CPU calm: sampling interval relaxed"
                );
            }
        }
    }

    /// Handles one command; returns whether the sampling interval was replaced.
    pub(super) fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Optimize { strategy, reply } => {
                self.optimize(strategy, reply);
                false
            }
            Command::ResetLearning { budget, reply } => {
                let reset = self.reset_learning(budget.as_deref());
                // Published before the answer: a caller that reads the view next sees it.
                self.publish();
                let _ = reply.send(reset);
                false
            }
            Command::Reconfigure { change, reply } => {
                let (changes, interval_replaced) = self.reconfigure(*change);
                let _ = reply.send(changes);
                self.publish();
                interval_replaced
            }
        }
    }
}

/// Resolves when the fast watch (if any) reports a crossing; never without one.
async fn woken(watch: Option<&WatchHandle>) {
    match watch {
        Some(watch) => watch.woken().await,
        None => std::future::pending().await,
    }
}
