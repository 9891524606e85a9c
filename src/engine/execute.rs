//! The engine's blocking and long work: samples (their /proc reads block) and strategy runs
//! (under a timeout, panics caught), handed to an [`Executor`] so the loop goes on meanwhile.
//!
//! In production that is [`TokioExecutor`]: samples on tokio's blocking pool, each strategy
//! in its own task, a batch of runs in a task of its own. On a clock moved by hand (a replay,
//! the engine's own tests) [`Inline`] runs the same work inline, so the same engine code runs
//! on that virtual [`Clock`].

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use perfpilot_strategies::{Cause, Context, Outcome, Snapshot, Strategy};

use super::clock::{Clock, Pending};
use super::{FinishedRun, PlannedRun, SignalSource};

/// The signal source, shared with the work that samples it.
pub(crate) type SharedSource = Arc<Mutex<Box<dyn SignalSource>>>;

/// Work the engine hands off, and how it comes back.
pub(crate) trait Executor: Send + Sync + fmt::Debug + 'static {
    /// Takes one sample from `source` without holding up the engine's loop.
    fn sample(&self, source: SharedSource) -> Pending<Result<Snapshot, TaskFailure>>;

    /// Runs one strategy under `timeout`; a panic, a timeout or an error becomes the error
    /// text its record shows.
    fn run(
        &self,
        strategy: Arc<dyn Strategy>,
        context: Context,
        timeout: Duration,
    ) -> Pending<Result<Outcome, String>>;

    /// Drives a batch of runs apart from the loop; dropping the returned future abandons it.
    fn background(
        &self,
        batch: Pending<Vec<FinishedRun>>,
    ) -> Pending<Result<Vec<FinishedRun>, TaskFailure>>;
}

/// Does the work inline, on the engine's task: samples at once, runs each strategy where it
/// is awaited (no timeout: a strategy on a virtual clock takes the time its clock says), and
/// drives a batch where the loop awaits it. For a [`Clock`] moved by hand.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Inline;

impl Executor for Inline {
    fn sample(&self, source: SharedSource) -> Pending<Result<Snapshot, TaskFailure>> {
        let snapshot = lock(&source).sample();
        Box::pin(std::future::ready(Ok(snapshot)))
    }

    fn run(
        &self,
        strategy: Arc<dyn Strategy>,
        context: Context,
        _timeout: Duration,
    ) -> Pending<Result<Outcome, String>> {
        Box::pin(async move { strategy.run(context).await.map_err(|e| e.to_string()) })
    }

    fn background(
        &self,
        batch: Pending<Vec<FinishedRun>>,
    ) -> Pending<Result<Vec<FinishedRun>, TaskFailure>> {
        Box::pin(async move { Ok(batch.await) })
    }
}

/// Why handed-off work did not come back.
#[derive(Debug, Clone)]
pub(crate) struct TaskFailure {
    /// What happened, for the log.
    pub(crate) description: String,
    /// The panic's message, when it panicked.
    pub(crate) panic: Option<String>,
}

impl TaskFailure {
    /// What the view says: the panic's message, else what happened.
    pub(crate) fn reason(self) -> String {
        self.panic.unwrap_or(self.description)
    }

    fn of(error: tokio::task::JoinError) -> Self {
        let description = error.to_string();
        TaskFailure {
            description,
            panic: error.try_into_panic().ok().map(panic_message),
        }
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// The production executor, on the tokio runtime the engine runs on.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TokioExecutor;

impl Executor for TokioExecutor {
    fn sample(&self, source: SharedSource) -> Pending<Result<Snapshot, TaskFailure>> {
        // The sample runs off the runtime's workers: a sample that blocks leaves them free.
        let task = tokio::task::spawn_blocking(move || lock(&source).sample());
        Box::pin(async move { task.await.map_err(TaskFailure::of) })
    }

    fn run(
        &self,
        strategy: Arc<dyn Strategy>,
        context: Context,
        timeout: Duration,
    ) -> Pending<Result<Outcome, String>> {
        Box::pin(async move {
            let task = tokio::spawn(async move { strategy.run(context).await });
            let abort = task.abort_handle();
            match tokio::time::timeout(timeout, task).await {
                Ok(Ok(Ok(outcome))) => Ok(outcome),
                Ok(Ok(Err(error))) => Err(error.to_string()),
                Ok(Err(join_error)) if join_error.is_panic() => Err(format!(
                    "strategy panicked: {}",
                    panic_message(join_error.into_panic())
                )),
                Ok(Err(join_error)) => Err(format!("strategy task failed: {join_error}")),
                Err(_) => {
                    abort.abort();
                    Err(format!(
                        "strategy timed out after {} ms",
                        timeout.as_millis()
                    ))
                }
            }
        })
    }

    fn background(
        &self,
        batch: Pending<Vec<FinishedRun>>,
    ) -> Pending<Result<Vec<FinishedRun>, TaskFailure>> {
        let task = AbortOnDrop(tokio::spawn(batch));
        Box::pin(async move { task.await.map_err(TaskFailure::of) })
    }
}

/// A task handle that aborts its task when dropped (an engine that ends abandons its batch).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one planned strategy through `executor`, timed by `clock`. It takes no sample: the
/// run is judged by the regular samples after it.
pub(super) async fn execute(
    planned: PlannedRun,
    mut context: Context,
    timeout: Duration,
    clock: &dyn Clock,
    executor: &dyn Executor,
) -> FinishedRun {
    context.level = planned.level;
    context.kind = planned.kind;
    let started_at = clock.wall();
    context.cause = Cause {
        run_id: run_id(started_at),
        signal: Some(planned.signal),
        value: planned.before,
        budget: planned.budget.as_ref().map(|(_, step)| step.budget.clone()),
        rung: planned.budget.as_ref().map(|(_, step)| step.rung),
    };
    let started = clock.now();
    let result = executor
        .run(Arc::clone(&planned.strategy), context, timeout)
        .await;
    let ended = clock.now();
    FinishedRun {
        planned,
        started_at,
        duration: ended - started,
        ended,
        result,
    }
}

/// A run's id, unique across runs and restarts of this agent and of agents on other hosts
/// calling the same hook: the run's start (ms since the Unix epoch) and a count of runs in
/// this process, after this process's id. For example `1a2b3c-18c4f2a9b10-7`.
fn run_id(started_at: SystemTime) -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let started_ms = started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let count = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    format!("{:x}-{started_ms:x}-{count}", std::process::id())
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn lock(source: &SharedSource) -> MutexGuard<'_, Box<dyn SignalSource>> {
    // A panic while sampling poisons the lock; the source itself is still usable.
    source
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
