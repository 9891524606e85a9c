//! Replay: what a candidate configuration would have done over a recording (SPEC, issue 23).
//!
//! The real engine — the same trigger, budget, ladder, cooldown and learning code the agent
//! runs — is driven over a recording ([`Recording`], read from the flight recorder's
//! segments) on a virtual clock, as fast as the machine allows (`drive`). Its strategies do
//! not act: a run the recording has at that sample returns the recorded outcome; a run it
//! does not have returns "acted" and takes its modelled relief off the signal, and a recorded
//! run the candidate does not repeat gives its relief back — unless the two are one run of a
//! strategy shifted in time, matched as such ([`effect`]). What the candidate did is then set
//! beside what the recording did ([`Comparison`]).

mod clock;
mod compare;
mod drive;
pub mod effect;
mod episodes;
pub mod recording;
pub mod report;
pub mod snapshot;
pub mod sweep;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use perfpilot_strategies::Signal;

use crate::config::{Config, Problem};

pub use compare::{Comparison, Decision, RunCount, Series, Summary};
pub use effect::{EffectModel, StrategyEffect};
pub use recording::{Cut, RecordedRun, Recording, Sample};

/// Why a replay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording cannot be used: unreadable, truncated, corrupt, from another format
    /// version, or empty.
    #[error("recording {}: {why}", path.display())]
    Recording {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The candidate configuration does not load or validate.
    #[error("candidate configuration: {0}")]
    Config(String),
    /// A budget or trigger of the candidate reads a signal the recording does not have, or
    /// one a replay cannot feed yet.
    #[error("candidate configuration: {owner} reads `{signal}`, which {why}")]
    Signal {
        /// The budget or strategy.
        owner: String,
        /// The signal.
        signal: Signal,
        /// Why it cannot be replayed.
        why: &'static str,
    },
    /// A `--sweep` that cannot be applied.
    #[error("--sweep {0}")]
    Sweep(String),
    /// The engine did not go through the recording.
    #[error("replay: {0}")]
    Engine(String),
}

impl ReplayError {
    /// The problems of a configuration that does not validate, as one error.
    pub fn invalid(problems: &[Problem]) -> Self {
        ReplayError::Config(
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// Replays `recording` under `config` (validated here) and compares with what was recorded.
pub fn replay(recording: &Arc<Recording>, config: &Config) -> Result<Comparison, ReplayError> {
    config.validate().map_err(|p| ReplayError::invalid(&p))?;
    check_signals(recording, config)?;
    let strategies: Vec<_> = config
        .strategies()
        .into_iter()
        .filter_map(|(enabled, registered)| enabled.then_some(registered))
        .collect();
    let disruptive = disruptive_names(config);
    let settings = crate::reload::engine_settings(config, None, "replay".to_owned());
    let tracked: Vec<Signal> = tracked_signals(config);
    let model = EffectModel::learn(recording).with_cooldowns(cooldowns(config));
    let driven = drive::drive(
        Arc::clone(recording),
        settings,
        strategies,
        model.clone(),
        &tracked,
    )?;
    Ok(compare::compare(
        recording,
        config,
        &disruptive,
        model,
        driven,
    ))
}

/// Each enabled strategy's cooldown in `config`, seconds: its trigger's (a rung without a
/// trigger of its own has its budget's cooldown as its trigger's).
fn cooldowns(config: &Config) -> BTreeMap<String, f64> {
    config
        .strategies()
        .into_iter()
        .filter(|(enabled, _)| *enabled)
        .map(|(_, r)| {
            let name = r.strategy.name().to_owned();
            (name, r.trigger.cooldown.as_secs_f64())
        })
        .collect()
}

/// The signals whose replayed values are kept: the budgets'.
fn tracked_signals(config: &Config) -> Vec<Signal> {
    let mut signals: Vec<Signal> = config.budgets.values().map(|b| b.signal).collect();
    signals.sort_by_key(|s| *s as usize);
    signals.dedup();
    signals
}

/// The strategies marked `disruptive = true`.
fn disruptive_names(config: &Config) -> Vec<String> {
    config.strategies.disruptive()
}

/// Every budget's signal is in the recording and can be fed to the engine; so is every
/// enabled trigger's signal that the recording has (a trigger on a signal the recording
/// lacks never fires, as in the agent when the signal cannot be read).
fn check_signals(recording: &Recording, config: &Config) -> Result<(), ReplayError> {
    for (name, budget) in &config.budgets {
        let owner = format!("budget `{name}`");
        if !recording.has(budget.signal) {
            return Err(ReplayError::Signal {
                owner,
                signal: budget.signal,
                why: "the recording does not have",
            });
        }
        if !snapshot::feedable(budget.signal) {
            return Err(ReplayError::Signal {
                owner,
                signal: budget.signal,
                why: "a replay cannot feed to the engine yet",
            });
        }
    }
    for (enabled, registered) in config.strategies() {
        let signal = registered.trigger.signal;
        if enabled && recording.has(signal) && !snapshot::feedable(signal) {
            return Err(ReplayError::Signal {
                owner: format!("strategy `{}`", registered.strategy.name()),
                signal,
                why: "a replay cannot feed to the engine yet",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
