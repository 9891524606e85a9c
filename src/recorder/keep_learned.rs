//! The learned state's writer (`crate::learned`): follows the engine's published view, as the
//! recorder does, and writes what it learned to `state_dir` every minute and at shutdown.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use perfpilot_strategies::snapshot::unix_millis::millis;
use tracing::warn;

use crate::learned::{save, Learned, SAVE_EVERY};

/// Writes what the engine has learned, merged with what the file held, every `SAVE_EVERY`
/// and once more when `shutdown` is cancelled, until the engine ends. The engine is never
/// waited for: this follows its published view.
pub async fn keep_saving(
    engine: crate::engine::EngineHandle,
    state_dir: PathBuf,
    forget_after: Duration,
    restored: Option<Learned>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut previous = restored.unwrap_or_default();
    let mut every = tokio::time::interval(SAVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        let last = tokio::select! {
            _ = every.tick() => false,
            () = shutdown.cancelled() => true,
        };
        let now = millis(SystemTime::now());
        let mut current = engine.view().learned.clone();
        current.saved_at = now;
        current
            .strategies
            .iter_mut()
            .for_each(|s| s.updated_at = now);
        current.budgets.iter_mut().for_each(|b| b.updated_at = now);
        let merged = Learned::merged(current, &previous, now, forget_after);
        let dir = state_dir.clone();
        let written = {
            let merged = merged.clone();
            tokio::task::spawn_blocking(move || save(&dir, &merged)).await
        };
        match written {
            Ok(Ok(())) => previous = merged,
            Ok(Err(error)) => {
                warn!(%error, dir = %state_dir.display(), "could not write the learned state")
            }
            Err(error) => warn!(%error, "the learned state writer failed"),
        }
        if last {
            return;
        }
    }
}
