//! A recording read back for a replay: its samples in order (each signal's value, as the
//! recorder's columns hold them), its runs, episodes, OOM kills and exhaustions, cut at the
//! first recorded OOM kill or target restart (what follows could not be replayed against a
//! target that would not have died).

use std::path::{Path, PathBuf};

use perfpilot_strategies::snapshot::unix_millis;
use perfpilot_strategies::{Signal, Snapshot};
use serde_json::Value;

use crate::events::Evaluated;
use crate::recorder::segment::{self, Segment};
use crate::recorder::store::{RECORDING_DIR, SEGMENT_SUFFIX};
use crate::recorder::{columns, Episode};

use super::snapshot;
use super::ReplayError;

/// One recorded sample: its time, every column's value (see [`columns`]) and what the engine
/// read beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was taken, ms since the Unix epoch.
    pub at: i64,
    /// Each column's value, in [`columns::names`] order; `None` where it was not read.
    pub values: Vec<Option<f64>>,
    /// The engine's clock when it evaluated the sample and the watch's slopes it took;
    /// `None` in a recording made before they were recorded (format version 1).
    pub evaluated: Option<Evaluated>,
}

/// A run as the recording has it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRun {
    /// The strategy's name.
    pub strategy: String,
    /// When it started, ms since the Unix epoch.
    pub started_at: i64,
    /// Its signal.
    pub signal: Option<Signal>,
    /// The budget and rung it ran as, if any.
    pub rung: Option<(String, usize)>,
    /// The signal's value before and after it (the after of its judgement), when known.
    pub before: Option<f64>,
    /// See `before`.
    pub after: Option<f64>,
    /// It succeeded.
    pub success: bool,
    /// It changed something.
    pub acted: bool,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// Manual (`manual`) or automatic.
    pub kind: String,
    /// How long it took, ms.
    pub duration_ms: f64,
}

/// Why a recording ends where it ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Cut {
    /// Its last sample.
    End,
    /// The kernel OOM-killed a process of the target at this time (ms).
    OomKill(i64),
    /// The target restarted (its uptime went back) at this time (ms).
    Restart(i64),
}

/// A recording, ready to replay.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Samples in time order (at least one).
    pub samples: Vec<Sample>,
    /// Runs in start order.
    pub runs: Vec<RecordedRun>,
    /// Episodes by start.
    pub episodes: Vec<Episode>,
    /// Exhausted ladders, as `budget-exhausted` shows them.
    pub exhaustions: Vec<Value>,
    /// The times (ms) of the samples the fast watch woke the engine for, in order.
    pub wakes: Vec<i64>,
    /// Where and why it was cut.
    pub cut: Cut,
    /// The agent versions that wrote it.
    pub agents: Vec<String>,
}

impl Recording {
    /// Reads a recording: a segment file, a directory of them, or a state directory (with
    /// its `recording/` directory). Any segment that cannot be read refuses the whole
    /// recording, naming the file and why.
    pub fn open(path: &Path) -> Result<Recording, ReplayError> {
        let files = segment_files(path)?;
        let mut segments = Vec::with_capacity(files.len());
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| ReplayError::Recording {
                path: file.clone(),
                why: format!("cannot read: {e}"),
            })?;
            let segment = segment::decode(&bytes).map_err(|e| ReplayError::Recording {
                path: file.clone(),
                why: e.to_string(),
            })?;
            segments.push(segment);
        }
        Recording::from_segments(segments).map_err(|why| ReplayError::Recording {
            path: path.to_path_buf(),
            why,
        })
    }

    /// A recording from segments already read (in any order).
    pub fn from_segments(mut segments: Vec<Segment>) -> Result<Recording, String> {
        segments.sort_by_key(|s| s.header.first);
        let mut samples: Vec<Sample> = Vec::new();
        let mut runs: Vec<Value> = Vec::new();
        let mut episodes: Vec<Episode> = Vec::new();
        let mut exhaustions = Vec::new();
        let mut oom_kills = Vec::new();
        let mut wakes: Vec<i64> = Vec::new();
        let mut agents: Vec<String> = Vec::new();
        for segment in segments {
            if !agents.contains(&segment.header.agent) {
                agents.push(segment.header.agent.clone());
            }
            for (row, evaluated) in segment.block.rows().zip(segment.block.evaluations()) {
                if samples.last().is_some_and(|last| last.at >= row.time) {
                    continue;
                }
                samples.push(Sample {
                    at: row.time,
                    values: row.values,
                    evaluated,
                });
            }
            let entries = segment.entries;
            for run in entries.runs {
                // A run published again once judged replaces its first record.
                match runs.iter_mut().rev().find(|known| known["id"] == run["id"]) {
                    Some(known) => *known = run,
                    None => runs.push(run),
                }
            }
            for episode in entries.episodes {
                match episodes
                    .iter_mut()
                    .rev()
                    .find(|e| e.budget == episode.budget && e.episode == episode.episode)
                {
                    Some(known) => *known = episode,
                    None => episodes.push(episode),
                }
            }
            exhaustions.extend(entries.exhaustions);
            wakes.extend(entries.wakes.iter().map(|wake| wake.at as i64));
            oom_kills.extend(
                entries
                    .oom_kills
                    .iter()
                    .filter_map(|kill| kill["timestamp"].as_i64()),
            );
        }
        if samples.is_empty() {
            return Err("no samples".to_owned());
        }
        let cut = cut_at(&samples, &oom_kills);
        let end = match cut {
            Cut::End => i64::MAX,
            Cut::OomKill(at) | Cut::Restart(at) => at,
        };
        samples.retain(|s| s.at < end);
        if samples.is_empty() {
            return Err("no samples before its first OOM kill or restart".to_owned());
        }
        let mut runs: Vec<RecordedRun> = runs
            .iter()
            .filter_map(recorded_run)
            .filter(|run| run.started_at < end)
            .collect();
        runs.sort_by_key(|run| run.started_at);
        episodes.retain(|e| (e.start as i64) < end);
        exhaustions.retain(|e| e["at"].as_i64().is_some_and(|at| at < end));
        wakes.retain(|&at| at < end);
        wakes.sort_unstable();
        wakes.dedup();
        Ok(Recording {
            samples,
            wakes,
            runs,
            episodes,
            exhaustions,
            cut,
            agents,
        })
    }

    /// The sample at `index` as a snapshot the engine reads.
    pub fn snapshot(&self, index: usize) -> Snapshot {
        let sample = &self.samples[index];
        snapshot::rebuild(time(sample.at), &sample.values)
    }

    /// The index of the sample a run that started at `at` (ms) followed: the last one taken
    /// at or before it.
    pub fn sample_of(&self, at: i64) -> usize {
        self.samples
            .partition_point(|s| s.at <= at)
            .saturating_sub(1)
    }

    /// The column of `signal`'s values.
    pub fn column(signal: Signal) -> Option<usize> {
        columns::index_of(signal.row().name)
    }

    /// How long after each sample was stamped the agent acted on it, where the recording
    /// says (the start of the first automatic run that followed it), else zero. The agent
    /// reads the clock again after sampling, so a rung's settle, counted from when it
    /// finished, is measured from that later time.
    pub fn tick_lags(&self) -> Vec<i64> {
        let mut lags = vec![0; self.samples.len()];
        for run in self.runs.iter().filter(|run| run.kind != "manual") {
            let index = self.sample_of(run.started_at);
            if lags[index] == 0 {
                lags[index] = (run.started_at - self.samples[index].at).max(0);
            }
        }
        lags
    }

    /// Whether the fast watch woke the engine for the sample at `index`.
    pub fn woken_at(&self, index: usize) -> bool {
        self.wakes.binary_search(&self.samples[index].at).is_ok()
    }

    /// Whether any sample has a value of `signal`.
    pub fn has(&self, signal: Signal) -> bool {
        Recording::column(signal)
            .is_some_and(|column| self.samples.iter().any(|s| s.values[column].is_some()))
    }

    /// Seconds from the first to the last sample.
    pub fn seconds(&self) -> f64 {
        let first = self.samples.first().map_or(0, |s| s.at);
        let last = self.samples.last().map_or(0, |s| s.at);
        (last - first) as f64 / 1000.0
    }
}

/// The wall time of `ms` since the Unix epoch.
pub(super) fn time(ms: i64) -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

/// Where to cut: the first OOM kill, or the first sample whose target uptime went back.
fn cut_at(samples: &[Sample], oom_kills: &[i64]) -> Cut {
    let uptime = columns::index_of("uptime_seconds");
    let restart = uptime.and_then(|column| {
        samples.windows(2).find_map(|pair| {
            let (before, after) = (pair[0].values[column]?, pair[1].values[column]?);
            (after < before).then_some(pair[1].at)
        })
    });
    let kill = oom_kills.iter().copied().min();
    match (kill, restart) {
        (Some(kill), Some(restart)) if restart < kill => Cut::Restart(restart),
        (Some(kill), _) => Cut::OomKill(kill),
        (None, Some(restart)) => Cut::Restart(restart),
        (None, None) => Cut::End,
    }
}

/// A run's record (as `optimization-completed` shows it) as the replay needs it.
pub(super) fn recorded_run(record: &Value) -> Option<RecordedRun> {
    let budget = &record["budget"];
    Some(RecordedRun {
        strategy: record["strategy"].as_str()?.to_owned(),
        started_at: record["startedAt"].as_i64()?,
        signal: serde_json::from_value(record["signal"].clone()).ok(),
        rung: budget["budget"]
            .as_str()
            .zip(budget["rung"].as_u64())
            .map(|(name, rung)| (name.to_owned(), rung as usize)),
        before: record["before"].as_f64(),
        after: record["after"].as_f64(),
        success: record["success"].as_bool().unwrap_or(false),
        acted: record["result"]["acted"].as_bool().unwrap_or(false),
        error: record["error"].as_str().map(str::to_owned),
        kind: record["kind"].as_str().unwrap_or("automatic").to_owned(),
        duration_ms: record["durationMs"].as_f64().unwrap_or(0.0).max(0.0),
    })
}

/// The segment files at `path`, oldest first.
fn segment_files(path: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    let refuse = |why: String| ReplayError::Recording {
        path: path.to_path_buf(),
        why,
    };
    let metadata = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read: {e}")))?;
    if metadata.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let nested = path.join(RECORDING_DIR);
    let dir = if nested.is_dir() {
        nested
    } else {
        path.to_path_buf()
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| refuse(format!("cannot list: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SEGMENT_SUFFIX) && !n.starts_with('.'))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(refuse(format!(
            "no recording segments (*{SEGMENT_SUFFIX}) in {}",
            dir.display()
        )));
    }
    Ok(files)
}

/// `at` as ms since the Unix epoch.
pub(super) fn millis(at: std::time::SystemTime) -> i64 {
    unix_millis::millis(at) as i64
}
