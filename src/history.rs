//! Optimization records and the running statistics over them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use perfpilot_strategies::snapshot::unix_millis;
use perfpilot_strategies::{Level, Outcome, RunKind, Signal};

use crate::trigger::Forecast;
use serde::Serialize;

/// One run of one strategy: why, when, how long, whether it worked, and what it changed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptimizationRecord {
    /// Sequence number, from 1.
    pub id: u64,
    /// The strategy's name.
    pub strategy: String,
    /// Automatic (a trigger fired) or manual.
    pub kind: RunKind,
    /// A sentence saying why it ran.
    pub reason: String,
    /// The signal the strategy's trigger watches.
    pub signal: Signal,
    /// The level of that signal when the run started.
    pub level: Level,
    /// When the run started, in milliseconds since the Unix epoch.
    #[serde(with = "unix_millis")]
    #[schema(value_type = u64)]
    pub started_at: SystemTime,
    /// How long the run took, in milliseconds.
    pub duration_ms: f64,
    /// Whether it completed without error (doing nothing because nothing needed doing counts).
    pub success: bool,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The trigger signal's value in the sample before the run.
    pub before: Option<f64>,
    /// The trigger signal's value (smoothed like `before`) in the first regular sample taken
    /// `[tuning] settle` after the run; `null` until that sample (and when not read).
    pub after: Option<f64>,
    /// What the strategy reported it changed.
    pub result: Option<Outcome>,
    /// True when the agent only logged what it would have run (`--dry-run`).
    pub dry_run: bool,
    /// Set when the run was predictive: the trend that made it fire before the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// Whether the run relieved its signal (see `judge`); `null` when that is unknown.
    pub helped: Option<bool>,
    /// Set when a budget ran it as a rung of its ladder: which budget, episode and rung, and
    /// why this rung (climbed, skipped past, jumped to the top, repeated after its cooldown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStep>,
}

/// The budget step a run was (see [`crate::budget`]).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStep {
    /// The budget's name.
    pub budget: String,
    /// The episode, from 1.
    pub episode: u64,
    /// The rung, from 0 (least disruptive).
    pub rung: usize,
    /// Why this rung now.
    pub why: String,
}

/// Why a predictive run fired: when the signal's trend would have reached its target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// The value the trend was heading for (`predict.at`, else `critical`, else `above`).
    pub at: f64,
    /// Seconds until the trend would have reached it, as predicted when the run fired.
    pub seconds_to_reach: f64,
    /// The fitted trend, in signal units per second.
    pub slope_per_second: f64,
}

impl From<Forecast> for Prediction {
    fn from(forecast: Forecast) -> Self {
        Prediction {
            at: forecast.at,
            seconds_to_reach: forecast.seconds,
            slope_per_second: forecast.slope_per_second,
        }
    }
}

/// The smallest fall of the signal, as a share of its value before, that counts as relief.
pub const MIN_RELIEF_SHARE: f64 = 0.01;

/// Whether a run helped: it succeeded, says it changed something, and its trigger signal fell
/// by at least [`MIN_RELIEF_SHARE`] between `before` and `after`. A failure or a run with
/// nothing to do did not help; with the signal unread before or after, it is unknown.
pub fn judge(
    success: bool,
    outcome: Option<&Outcome>,
    before: Option<f64>,
    after: Option<f64>,
) -> Option<bool> {
    if !success || outcome.is_some_and(|o| !o.acted) {
        return Some(false);
    }
    let (before, after) = (before?, after?);
    Some(before - after >= (before.abs() * MIN_RELIEF_SHARE).max(f64::EPSILON))
}

impl OptimizationRecord {
    /// The run's duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_ms / 1000.0)
    }
}

/// Aggregates over every run since start (not only the retained ones).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Runs so far (dry runs excluded).
    pub count: u64,
    /// Successful runs so far.
    pub successes: u64,
    /// Mean run duration in milliseconds; `None` before the first run.
    pub average_duration_ms: Option<f64>,
    /// When the last run started.
    pub last_run: Option<SystemTime>,
    /// Per strategy: runs, successes and the mean relief of its signal.
    pub per_strategy: BTreeMap<String, StrategyStats>,
}

impl Stats {
    /// Share of runs that succeeded, 0..1; `None` before the first run.
    pub fn success_rate(&self) -> Option<f64> {
        (self.count > 0).then(|| self.successes as f64 / self.count as f64)
    }
}

impl StrategyStats {
    /// Share of judged runs that helped, 0..1; `None` before the first judged run.
    pub fn effectiveness(&self) -> Option<f64> {
        (self.judged > 0).then(|| self.helped as f64 / self.judged as f64)
    }
}

/// One strategy's track record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyStats {
    /// Runs.
    pub runs: u64,
    /// Successful runs.
    pub successes: u64,
    /// Runs that helped (see [`judge`]).
    pub helped: u64,
    /// Runs whose help could be judged.
    pub judged: u64,
    /// When the last run started.
    #[serde(skip)]
    pub last_run: Option<SystemTime>,
    /// Mean of (before − after) over runs where both were read.
    pub mean_relief: Option<f64>,
    #[serde(skip)]
    relief_sum: f64,
    #[serde(skip)]
    relief_samples: u64,
}

impl StrategyStats {
    /// The sum of reliefs and how many runs it holds (what [`crate::learned`] keeps).
    pub(crate) fn relief_totals(&self) -> (f64, u64) {
        (self.relief_sum, self.relief_samples)
    }

    /// A track record restored from a learned state.
    pub(crate) fn restored(learned: &crate::learned::StrategyLearned) -> StrategyStats {
        StrategyStats {
            runs: learned.runs,
            successes: learned.successes,
            helped: learned.helped,
            judged: learned.judged,
            last_run: learned
                .last_run
                .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            mean_relief: (learned.relief_samples > 0)
                .then(|| learned.relief_sum / learned.relief_samples as f64),
            relief_sum: learned.relief_sum,
            relief_samples: learned.relief_samples,
        }
    }

    fn count_judgement(&mut self, record: &OptimizationRecord) {
        if let Some(helped) = record.helped {
            self.judged += 1;
            self.helped += u64::from(helped);
        }
        if let (Some(before), Some(after)) = (record.before, record.after) {
            self.relief_sum += before - after;
            self.relief_samples += 1;
            self.mean_relief = Some(self.relief_sum / self.relief_samples as f64);
        }
    }
}

/// The last N records and the running stats.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    records: VecDeque<Arc<OptimizationRecord>>,
    stats: Stats,
    total_duration_ms: f64,
    next_id: u64,
}

impl History {
    /// Keeps the last `capacity` records (at least one).
    pub fn new(capacity: usize) -> Self {
        History {
            capacity: capacity.max(1),
            records: VecDeque::new(),
            stats: Stats::default(),
            total_duration_ms: 0.0,
            next_id: 1,
        }
    }

    /// Keeps the last `capacity` records (at least one) from now on, dropping the oldest
    /// beyond it at once; the stats are kept whole.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.records.len() > self.capacity {
            self.records.pop_front();
        }
    }

    /// The id the next record gets.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds a record, updates the stats, and drops the oldest record beyond capacity.
    pub fn push(&mut self, record: OptimizationRecord) -> Arc<OptimizationRecord> {
        if !record.dry_run {
            self.stats.count += 1;
            self.stats.successes += u64::from(record.success);
            self.total_duration_ms += record.duration_ms;
            self.stats.average_duration_ms = Some(self.total_duration_ms / self.stats.count as f64);
            self.stats.last_run = Some(record.started_at);
            let strategy = self
                .stats
                .per_strategy
                .entry(record.strategy.clone())
                .or_default();
            strategy.runs += 1;
            strategy.successes += u64::from(record.success);
            strategy.last_run = Some(record.started_at);
            strategy.count_judgement(&record);
        }
        let record = Arc::new(record);
        self.records.push_back(Arc::clone(&record));
        while self.records.len() > self.capacity {
            self.records.pop_front();
        }
        record
    }

    /// Completes a record pushed without its judgement: `record` is the pushed one (same
    /// id) with `after` and `helped` filled in. Counts them in the stats and replaces the
    /// retained copy, if it is still retained.
    pub fn judge(&mut self, record: OptimizationRecord) -> Arc<OptimizationRecord> {
        if !record.dry_run {
            self.stats
                .per_strategy
                .entry(record.strategy.clone())
                .or_default()
                .count_judgement(&record);
        }
        let record = Arc::new(record);
        if let Some(retained) = self.records.iter_mut().find(|r| r.id == record.id) {
            *retained = Arc::clone(&record);
        }
        record
    }

    /// The retained records, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &Arc<OptimizationRecord>> {
        self.records.iter()
    }

    /// The running stats.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Takes a strategy's track record from before a restart.
    pub(crate) fn restore_strategy(&mut self, name: &str, stats: StrategyStats) {
        self.stats.per_strategy.insert(name.to_owned(), stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        history: &mut History,
        success: bool,
        ms: f64,
        before: f64,
        after: f64,
    ) -> OptimizationRecord {
        OptimizationRecord {
            id: history.next_id(),
            strategy: "memory-purge".into(),
            kind: RunKind::Automatic,
            reason: "test".into(),
            signal: Signal::MemoryUsage,
            level: Level::Warning,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(10),
            duration_ms: ms,
            success,
            error: None,
            before: Some(before),
            after: Some(after),
            result: None,
            dry_run: false,
            prediction: None,
            helped: judge(success, None, Some(before), Some(after)),
            budget: None,
        }
    }

    #[test]
    fn stats_cover_every_run_and_records_are_capped() {
        let mut history = History::new(2);
        assert_eq!(history.stats().success_rate(), None);
        for (success, ms, after) in [(true, 10.0, 0.7), (false, 20.0, 0.9), (true, 30.0, 0.8)] {
            let r = record(&mut history, success, ms, 0.85, after);
            history.push(r);
        }
        let stats = history.stats();
        assert_eq!(stats.count, 3);
        assert!((stats.success_rate().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(stats.average_duration_ms, Some(20.0));
        let ids: Vec<u64> = history.recent().map(|r| r.id).collect();
        assert_eq!(ids, [2, 3]);
        let purge = &stats.per_strategy["memory-purge"];
        // The first (0.85 → 0.7) and third (0.85 → 0.8) helped; the failure did not.
        assert_eq!((purge.runs, purge.successes, purge.helped), (3, 2, 2));
        assert_eq!(purge.judged, 3);
        assert!((purge.effectiveness().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((purge.mean_relief.unwrap() - (0.15 - 0.05 + 0.05) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn judging_needs_success_action_and_a_real_fall() {
        let acted = Outcome::acted("purged");
        let idle = Outcome::nothing_to_do("nothing to purge");
        assert_eq!(judge(true, Some(&acted), Some(0.9), Some(0.7)), Some(true));
        assert_eq!(
            judge(true, Some(&acted), Some(0.9), Some(0.895)),
            Some(false),
            "a 0.6 % fall is noise"
        );
        assert_eq!(
            judge(true, Some(&acted), Some(0.9), Some(0.95)),
            Some(false)
        );
        assert_eq!(judge(true, Some(&idle), Some(0.9), Some(0.5)), Some(false));
        assert_eq!(judge(false, None, Some(0.9), Some(0.5)), Some(false));
        assert_eq!(judge(true, Some(&acted), None, Some(0.5)), None);
        assert_eq!(judge(true, Some(&acted), Some(0.0), Some(0.0)), Some(false));
    }

    #[test]
    fn dry_runs_are_kept_but_not_counted() {
        let mut history = History::new(5);
        let mut r = record(&mut history, true, 1.0, 0.9, 0.9);
        r.dry_run = true;
        history.push(r);
        assert_eq!(history.stats().count, 0);
        assert_eq!(history.recent().count(), 1);
    }
}
