//! What the recorder keeps besides the samples: runs (start, finish, verdict), budget
//! episodes, fast-watch wakes, OOM kills, exhausted ladders and configuration reloads, each
//! with its time, in order.

use std::collections::VecDeque;
use std::sync::Arc;

use perfpilot_strategies::Signal;
use serde::Serialize;

use crate::budget::Exhaustion;
use crate::events::OomKill;
use crate::history::OptimizationRecord;

/// The most entries of one kind kept, however short the time they came in: a flood (a
/// strategy run every interval at 10 ms) cannot grow the recorder without bound.
pub const MAX_ENTRIES: usize = 10_000;

/// One budget episode: from above goal to `calm` samples back under it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Episode {
    /// The budget.
    pub budget: String,
    /// The episode's number, from 1.
    pub episode: u64,
    /// When it started, ms since the Unix epoch.
    pub start: u64,
    /// When it ended, ms since the Unix epoch; `null` while it goes on.
    pub end: Option<u64>,
}

/// Immediate samples the fast watch asked for between two published views.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wake {
    /// When the engine published the sample they led to, ms since the Unix epoch.
    pub at: u64,
    /// The signal that crossed.
    pub signal: Signal,
    /// How the crossing was seen: `poll` or `psi`.
    pub how: &'static str,
    /// Wakes since the previous view.
    pub count: u64,
}

/// A configuration reload that took effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reload {
    /// When it was seen, ms since the Unix epoch.
    pub at: u64,
    /// What asked for it (`SIGHUP`, `POST /config/reload`, `watch_config`...).
    pub reason: String,
    /// Where the configuration came from.
    pub source: String,
}

/// A budget's bounds, for drawing its signal's chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Band {
    /// The budget.
    pub name: String,
    /// Its signal.
    pub signal: Signal,
    /// Keep at or below.
    pub goal: f64,
    /// Never above.
    pub limit: f64,
}

/// Entries of one kind, oldest first, each with its time (ms since the Unix epoch).
#[derive(Debug, Clone)]
pub struct Entries<T> {
    items: VecDeque<(u64, T)>,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries {
            items: VecDeque::new(),
        }
    }
}

impl<T: Clone> Entries<T> {
    /// Appends an entry (at most [`MAX_ENTRIES`] are kept: the oldest goes).
    pub fn push(&mut self, at: u64, item: T) {
        if self.items.len() == MAX_ENTRIES {
            self.items.pop_front();
        }
        self.items.push_back((at, item));
    }

    /// Drops entries from before `oldest`.
    pub fn trim(&mut self, oldest: u64) {
        while self.items.front().is_some_and(|(at, _)| *at < oldest) {
            self.items.pop_front();
        }
    }

    /// Copies of the entries at `since..=until`.
    pub fn between(&self, since: u64, until: u64) -> Vec<T> {
        self.items
            .iter()
            .filter(|(at, _)| (since..=until).contains(at))
            .map(|(_, item)| item.clone())
            .collect()
    }

    /// Every entry with its time, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, T)> {
        self.items.iter()
    }

    /// The last entry that `matches`, to update in place.
    pub fn last_matching(&mut self, matches: impl Fn(&T) -> bool) -> Option<&mut T> {
        self.items
            .iter_mut()
            .rev()
            .map(|(_, item)| item)
            .find(|item| matches(item))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Everything besides the samples, by kind.
#[derive(Debug, Default)]
pub struct Log {
    /// Runs by start time; a run published again once judged replaces its first record.
    pub runs: Entries<Arc<OptimizationRecord>>,
    /// Episodes by start time.
    pub episodes: Entries<Episode>,
    /// Fast-watch wakes.
    pub wakes: Entries<Wake>,
    /// OOM kills seen.
    pub oom_kills: Entries<OomKill>,
    /// Ladders that ran out above their limit.
    pub exhaustions: Entries<Arc<Exhaustion>>,
    /// Configuration reloads.
    pub reloads: Entries<Reload>,
}

impl Log {
    /// Records a run, or replaces its earlier record (published before its verdict).
    pub fn record_run(&mut self, record: Arc<OptimizationRecord>) {
        let at = perfpilot_strategies::snapshot::unix_millis::millis(record.started_at);
        match self.runs.last_matching(|known| known.id == record.id) {
            Some(known) => *known = record,
            None => self.runs.push(at, record),
        }
    }

    /// Drops everything from before `oldest` (ms), but an episode still going on.
    pub fn trim(&mut self, oldest: u64) {
        self.runs.trim(oldest);
        self.wakes.trim(oldest);
        self.oom_kills.trim(oldest);
        self.exhaustions.trim(oldest);
        self.reloads.trim(oldest);
        while self
            .episodes
            .items
            .front()
            .is_some_and(|(_, e)| e.end.is_some_and(|end| end < oldest))
        {
            self.episodes.items.pop_front();
        }
    }
}
