//! What the recorder keeps besides the samples: runs (start, finish, verdict), budget
//! episodes, fast-watch wakes, OOM kills, exhausted ladders and configuration reloads, each
//! with its time, in order.

use std::collections::VecDeque;

use perfpilot_strategies::Signal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The entries of a segment's minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SegmentEntries {
    /// Runs (as `optimization-completed` shows them).
    pub runs: Vec<Value>,
    /// Episodes that started in it (with their end where known then).
    pub episodes: Vec<Episode>,
    /// Fast-watch wakes.
    pub wakes: Vec<Wake>,
    /// OOM kills (as `oom-kill` shows them).
    pub oom_kills: Vec<Value>,
    /// Exhausted ladders (as `budget-exhausted` shows them).
    pub exhaustions: Vec<Value>,
    /// Configuration reloads.
    pub reloads: Vec<Reload>,
    /// Every budget's bounds when the segment was cut (for charts of a recording read
    /// without the configuration).
    pub budgets: Vec<Band>,
}

/// The most entries of one kind kept, however short the time they came in: a flood (a
/// strategy run every interval at 10 ms) cannot grow the recorder without bound.
pub const MAX_ENTRIES: usize = 10_000;

/// One budget episode: from above goal to `calm` samples back under it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wake {
    /// When the engine published the sample they led to, ms since the Unix epoch.
    pub at: u64,
    /// The signal that crossed.
    pub signal: Signal,
    /// How the crossing was seen: `poll` or `psi`.
    pub how: String,
    /// Wakes since the previous view.
    pub count: u64,
}

/// A configuration reload that took effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

impl<T> Entries<T> {
    /// Entries held at `since..=until`, with their times.
    pub fn slice(&self, since: u64, until: u64) -> impl Iterator<Item = &(u64, T)> {
        self.items
            .iter()
            .filter(move |(at, _)| (since..=until).contains(at))
    }
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

/// Everything besides the samples, by kind. Runs, OOM kills and exhaustions are kept as the
/// JSON the API shows them in (`optimization-completed`, `oom-kill`, `budget-exhausted`):
/// that is what a segment on disk holds and what history, export and report read.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Runs by start time; a run published again once judged replaces its first record.
    pub runs: Entries<Value>,
    /// Episodes by start time.
    pub episodes: Entries<Episode>,
    /// Fast-watch wakes.
    pub wakes: Entries<Wake>,
    /// OOM kills seen.
    pub oom_kills: Entries<Value>,
    /// Ladders that ran out above their limit.
    pub exhaustions: Entries<Value>,
    /// Configuration reloads.
    pub reloads: Entries<Reload>,
    /// What changed since the last segment was cut (a run judged since, an episode ended
    /// since: again, so the segment that follows has its final state).
    pending: SegmentEntries,
}

impl Log {
    /// Records a run (its JSON, with `id` and `startedAt`), or replaces its earlier record
    /// (published before its verdict).
    pub fn record_run(&mut self, record: Value) {
        self.pending.runs.push(record.clone());
        self.upsert_run(record);
    }

    fn upsert_run(&mut self, record: Value) {
        let at = record["startedAt"].as_u64().unwrap_or_default();
        match self.runs.last_matching(|known| known["id"] == record["id"]) {
            Some(known) => *known = record,
            None => self.runs.push(at, record),
        }
    }

    /// Records an episode's start, or its end (the same budget and number).
    pub fn record_episode(&mut self, episode: Episode) {
        self.pending.episodes.push(episode.clone());
        self.upsert_episode(episode);
    }

    fn upsert_episode(&mut self, episode: Episode) {
        match self
            .episodes
            .last_matching(|e| e.budget == episode.budget && e.episode == episode.episode)
        {
            Some(known) => *known = episode,
            None => self.episodes.push(episode.start, episode),
        }
    }

    /// Records fast-watch wakes.
    pub fn record_wake(&mut self, wake: Wake) {
        self.pending.wakes.push(wake.clone());
        self.wakes.push(wake.at, wake);
    }

    /// Records an OOM kill (as `oom-kill` shows it, with its `timestamp`).
    pub fn record_oom_kill(&mut self, kill: Value) {
        self.pending.oom_kills.push(kill.clone());
        self.oom_kills
            .push(kill["timestamp"].as_u64().unwrap_or_default(), kill);
    }

    /// Records an exhausted ladder (as `budget-exhausted` shows it, with its `at`).
    pub fn record_exhaustion(&mut self, exhaustion: Value) {
        self.pending.exhaustions.push(exhaustion.clone());
        self.exhaustions
            .push(exhaustion["at"].as_u64().unwrap_or_default(), exhaustion);
    }

    /// Records a configuration reload.
    pub fn record_reload(&mut self, reload: Reload) {
        self.pending.reloads.push(reload.clone());
        self.reloads.push(reload.at, reload);
    }

    /// What changed since the last call, for the next segment.
    pub fn take_pending(&mut self) -> SegmentEntries {
        std::mem::take(&mut self.pending)
    }

    /// Adds a segment's entries read back from disk (later records of the same run or
    /// episode replace earlier ones).
    pub fn restore(&mut self, entries: SegmentEntries) {
        entries
            .runs
            .into_iter()
            .for_each(|run| self.upsert_run(run));
        entries
            .episodes
            .into_iter()
            .for_each(|episode| self.upsert_episode(episode));
        for wake in entries.wakes {
            self.wakes.push(wake.at, wake);
        }
        for kill in entries.oom_kills {
            self.oom_kills
                .push(kill["timestamp"].as_u64().unwrap_or_default(), kill);
        }
        for exhaustion in entries.exhaustions {
            self.exhaustions
                .push(exhaustion["at"].as_u64().unwrap_or_default(), exhaustion);
        }
        for reload in entries.reloads {
            self.reloads.push(reload.at, reload);
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
