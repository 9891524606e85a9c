//! Learned state that survives a restart: each strategy's track record (runs, verdicts,
//! relief), its adaptive cooldown and learned baseline, and each budget's rung statistics,
//! kept in `state_dir/learned.json`.
//!
//! A strategy is restored when it keeps its name and what it acts on
//! ([`Strategy::acts_on`](perfpilot_strategies::Strategy::acts_on): its kind and its URL,
//! program or signal); a budget when it keeps its name and signal. One that changed starts
//! fresh, and the log says so. An entry not refreshed for `tuning.forget_after` (30 days) is
//! dropped; an entry for a strategy or budget no longer configured is kept until then, so a
//! configuration that drops one for a while does not forget it.
//!
//! The file is JSON (`format` 1); every field has a default, so later versions add fields
//! without a new format. It is written atomically (temporary file, fsync, rename; 0600) by a
//! task that follows the engine's published view ([`crate::recorder::keep_learned`]), never by
//! the engine. A file that is
//! truncated or corrupt, from a newer format, too large or not owned by the agent's user is
//! refused with a log line and moved to `state_dir/refused/`; the agent starts without it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use perfpilot_strategies::snapshot::unix_millis::millis;
use serde::{Deserialize, Serialize};
use tracing::info;

/// The file in `state_dir`.
pub const LEARNED_FILE: &str = "learned.json";
/// The format this agent writes and reads (a newer one is refused).
pub const FORMAT: u32 = 1;
/// A larger file is refused unread.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// How often the learned state is written while the agent runs (and once at shutdown).
pub const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Everything learned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Learned {
    /// The file's format.
    pub format: u32,
    /// The agent that wrote it.
    pub agent: String,
    /// When, ms since the Unix epoch.
    pub saved_at: u64,
    /// Per strategy.
    pub strategies: Vec<StrategyLearned>,
    /// Per budget.
    pub budgets: Vec<BudgetLearned>,
}

/// What one strategy learned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StrategyLearned {
    /// Its name.
    pub name: String,
    /// What it acts on (its kind and its URL, program or signal).
    pub acts_on: String,
    /// When this entry was last refreshed by a running agent, ms since the Unix epoch.
    pub updated_at: u64,
    /// When it last ran, ms since the Unix epoch (its cooldown counts from there).
    pub last_run: Option<u64>,
    /// Runs (dry runs excluded).
    pub runs: u64,
    /// Successful runs.
    pub successes: u64,
    /// Judged runs that helped.
    pub helped: u64,
    /// Runs whose help was judged.
    pub judged: u64,
    /// Sum of (before − after) over runs where both were read.
    pub relief_sum: f64,
    /// How many runs that sum holds.
    pub relief_samples: u64,
    /// The adaptive cooldown in force, ms.
    pub cooldown_ms: u64,
    /// Unhelpful runs in a row (what lengthened the cooldown).
    pub unhelpful_runs: u32,
    /// The learned baseline of its trigger, with `baseline`.
    pub baseline: Option<BaselineLearned>,
}

/// A trigger's learned baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BaselineLearned {
    /// The exponentially weighted mean.
    pub mean: f64,
    /// Its variance.
    pub variance: f64,
    /// Samples learned.
    pub samples: u32,
}

/// What one budget learned about its ladder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BudgetLearned {
    /// Its name.
    pub name: String,
    /// Its signal.
    pub signal: String,
    /// When this entry was last refreshed, ms since the Unix epoch.
    pub updated_at: u64,
    /// Per rung, by strategy.
    pub rungs: Vec<RungLearned>,
    /// The learned guard band (adaptive reaction), when it holds the goal below the
    /// configured one; `None` (the default): the configured goal.
    pub guard: Option<GuardLearned>,
}

/// A budget's learned guard band: the goal it holds below the configured one, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GuardLearned {
    /// The goal it held (`effectiveGoal`).
    pub effective_goal: f64,
    /// Why (`goalWhy`).
    pub why: String,
}

/// One rung's record in one budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RungLearned {
    /// The strategy.
    pub strategy: String,
    /// Runs.
    pub runs: u64,
    /// Judged runs.
    pub judged: u64,
    /// Runs that helped.
    pub helped: u64,
    /// Sum of (before − after) over judged runs.
    pub relief_sum: f64,
    /// The last judgements, newest last (what skips an ineffective rung).
    pub recent: Vec<bool>,
}

impl Learned {
    /// `current` (from the running engine, stamped `now`) with the entries of `previous` it
    /// does not have (strategies and budgets not configured now), those older than
    /// `forget_after` left out.
    pub fn merged(
        mut current: Learned,
        previous: &Learned,
        now: u64,
        forget_after: Duration,
    ) -> Learned {
        let fresh =
            |updated_at: u64| now.saturating_sub(updated_at) <= forget_after.as_millis() as u64;
        for old in &previous.strategies {
            if fresh(old.updated_at) && !current.strategies.iter().any(|s| s.name == old.name) {
                current.strategies.push(old.clone());
            }
        }
        for old in &previous.budgets {
            if fresh(old.updated_at) && !current.budgets.iter().any(|b| b.name == old.name) {
                current.budgets.push(old.clone());
            }
        }
        current
    }

    /// Drops the entries older than `forget_after` at `now`, saying how many.
    pub fn forget_older(&mut self, now: u64, forget_after: Duration) {
        let limit = forget_after.as_millis() as u64;
        let before = self.strategies.len() + self.budgets.len();
        self.strategies
            .retain(|s| now.saturating_sub(s.updated_at) <= limit);
        self.budgets
            .retain(|b| now.saturating_sub(b.updated_at) <= limit);
        let dropped = before - self.strategies.len() - self.budgets.len();
        if dropped > 0 {
            info!(dropped, forget_after = ?forget_after, "learned state older than tuning.forget_after dropped");
        }
    }
}

/// Where the learned state of `state_dir` lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEARNED_FILE)
}

/// Reads `state_dir`'s learned state. `None` when there is none, or when the file is refused
/// (logged, moved to `refused/`).
pub fn load(state_dir: &Path, now: SystemTime, forget_after: Duration) -> Option<Learned> {
    let path = path(state_dir);
    if !path.exists() {
        return None;
    }
    match read(&path) {
        Ok(mut learned) => {
            learned.forget_older(millis(now), forget_after);
            info!(
                file = %path.display(),
                strategies = learned.strategies.len(),
                budgets = learned.budgets.len(),
                "learned state restored from state_dir"
            );
            Some(learned)
        }
        Err(why) => {
            crate::sys::move_aside(state_dir, &path, &why);
            None
        }
    }
}

/// The learned state in `path`, or why it cannot be used.
pub fn read(path: &Path) -> Result<Learned, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    let user = crate::sys::effective_uid();
    if metadata.uid() != user {
        return Err(format!(
            "owned by uid {}, not by the agent's user (uid {user})",
            metadata.uid()
        ));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_FILE_BYTES} a learned state may have",
            metadata.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let learned: Learned = serde_json::from_slice(&bytes).map_err(|e| match e.is_eof() {
        true => format!("truncated: {e}"),
        false => format!("corrupt: {e}"),
    })?;
    if learned.format > FORMAT {
        return Err(format!(
            "format {} is newer than this agent's {FORMAT}",
            learned.format
        ));
    }
    if learned.format == 0 {
        return Err("corrupt: no format".to_owned());
    }
    Ok(learned)
}

/// Writes `learned` to `state_dir` atomically (0600).
pub fn save(state_dir: &Path, learned: &Learned) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(learned).map_err(std::io::Error::other)?;
    let temporary = state_dir.join(format!(".{LEARNED_FILE}.tmp"));
    crate::sys::write_atomically(state_dir, &path(state_dir), &temporary, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(name: &str, updated_at: u64) -> StrategyLearned {
        StrategyLearned {
            name: name.into(),
            acts_on: "POST http://127.0.0.1:1/hook".into(),
            updated_at,
            runs: 4,
            helped: 3,
            judged: 4,
            cooldown_ms: 60_000,
            ..Default::default()
        }
    }

    const DAY: u64 = 24 * 3600 * 1000;

    #[test]
    fn keeps_what_is_not_configured_now_until_forget_after_and_drops_older() {
        let previous = Learned {
            format: FORMAT,
            strategies: vec![strategy("gone-a-while", 0), strategy("ancient", 0)],
            ..Default::default()
        };
        let mut previous = previous;
        previous.strategies[0].updated_at = 20 * DAY;
        let current = Learned {
            format: FORMAT,
            strategies: vec![strategy("now", 40 * DAY)],
            ..Default::default()
        };
        let forget = Duration::from_secs(30 * 24 * 3600);
        let merged = Learned::merged(current, &previous, 40 * DAY, forget);
        let names: Vec<_> = merged.strategies.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["now", "gone-a-while"]);
        let mut loaded = merged;
        loaded.forget_older(55 * DAY, forget);
        let names: Vec<_> = loaded.strategies.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["now"], "20 days + 30 < 55");
    }

    #[test]
    fn a_truncated_newer_or_corrupt_file_is_refused_naming_why() {
        let dir = tempfile::tempdir().unwrap();
        let learned = Learned {
            format: FORMAT,
            agent: "0.1.0".into(),
            strategies: vec![strategy("hook", 1)],
            ..Default::default()
        };
        save(dir.path(), &learned).unwrap();
        let file = path(dir.path());
        assert_eq!(read(&file).unwrap(), learned);
        let bytes = std::fs::read(&file).unwrap();
        for (content, why) in [
            (bytes[..bytes.len() / 2].to_vec(), "truncated"),
            (b"{\"format\": 2}".to_vec(), "newer"),
            (b"PPREC\x01 not json".to_vec(), "corrupt"),
            (b"{}".to_vec(), "no format"),
        ] {
            std::fs::write(&file, &content).unwrap();
            let error = read(&file).unwrap_err();
            assert!(error.contains(why), "{why}: {error}");
        }
        assert!(load(dir.path(), SystemTime::now(), Duration::from_secs(60)).is_none());
        assert!(!file.exists(), "moved aside");
        assert!(dir.path().join("refused").join(LEARNED_FILE).exists());
    }
}
