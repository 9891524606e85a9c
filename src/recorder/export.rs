//! `perfpilot export`: a recording on disk as NDJSON or CSV, for jq, pandas and DuckDB.
//!
//! - NDJSON: one object per line, in time order within each kind: `{"type": "sample", "t": ms,
//!   "memory_usage": 0.41, ...}` (signals not read left out), then `{"type": "run", ...}` (as
//!   `optimization-completed` shows a run), `{"type": "episode", ...}`, `"wake"`,
//!   `"oom_kill"`, `"exhaustion"` and `"reload"`.
//! - CSV: the samples only, one row each: `t` (ms since the Unix epoch) and one column per
//!   recorded signal, empty where not read.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::columns;
use super::record::Log;
use super::segment::Segment;
use super::store::{self, RECORDING_DIR, SEGMENT_SUFFIX};

/// A recording read from disk: its segments, oldest first.
#[derive(Debug)]
pub struct Recording {
    /// The segments read.
    pub segments: Vec<Segment>,
    /// Files that could not be read, with why (left where they are).
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Recording {
    /// Reads the segments of `dir` (a `state_dir`, or its `recording/`) with samples in
    /// `since..=until` (ms). Nothing is moved or written.
    pub fn read(dir: &Path, since: i64, until: i64) -> io::Result<Recording> {
        let recording = match dir.join(RECORDING_DIR).is_dir() {
            true => dir.join(RECORDING_DIR),
            false => dir.to_path_buf(),
        };
        let mut files: Vec<(i64, PathBuf)> = std::fs::read_dir(&recording)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter_map(|path| {
                let first = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(SEGMENT_SUFFIX)?
                    .parse::<i64>()
                    .ok()?;
                Some((first, path))
            })
            .filter(|(first, _)| *first <= until && first + 60_000 >= since)
            .collect();
        files.sort();
        let mut read = Recording {
            segments: Vec::new(),
            unreadable: Vec::new(),
        };
        for (_, path) in files {
            match store::read(&path) {
                Ok(segment) => read.segments.push(segment),
                Err(why) => read.unreadable.push((path, why)),
            }
        }
        Ok(read)
    }

    /// Every entry of the segments (later records of a run or an episode replace earlier).
    pub fn log(&self) -> Log {
        let mut log = Log::default();
        for segment in &self.segments {
            log.restore(segment.entries.clone());
        }
        log
    }

    /// Every budget's bounds, as the last segment that has them says.
    pub fn bands(&self) -> Vec<super::Band> {
        self.segments
            .iter()
            .rev()
            .map(|s| &s.entries.budgets)
            .find(|b| !b.is_empty())
            .cloned()
            .unwrap_or_default()
    }

    /// The samples in `since..=until` (ms): their time and one value per column.
    pub fn rows(&self, since: i64, until: i64) -> impl Iterator<Item = super::Row> + '_ {
        self.segments
            .iter()
            .flat_map(|segment| segment.block.rows())
            .filter(move |row| (since..=until).contains(&row.time))
    }
}

/// Writes the samples and entries of `since..=until` as NDJSON.
pub fn ndjson(
    recording: &Recording,
    since: i64,
    until: i64,
    out: &mut impl Write,
) -> io::Result<()> {
    for row in recording.rows(since, until) {
        let mut object = Map::new();
        object.insert("type".into(), "sample".into());
        object.insert("t".into(), row.time.into());
        for (index, value) in row.values.iter().enumerate() {
            if let Some(value) = value.filter(|v| v.is_finite()) {
                object.insert(columns::name(index).into(), value.into());
            }
        }
        writeln!(out, "{}", Value::Object(object))?;
    }
    let log = recording.log();
    let (since, until) = (since.max(0) as u64, until.max(0) as u64);
    let typed = |kind: &str, value: Value| -> Value {
        let mut object = Map::new();
        object.insert("type".into(), kind.into());
        if let Value::Object(fields) = value {
            object.extend(fields);
        }
        Value::Object(object)
    };
    for run in log.runs.between(since, until) {
        writeln!(out, "{}", typed("run", run))?;
    }
    for (_, episode) in log.episodes.iter() {
        if episode.start <= until && episode.end.is_none_or(|end| end >= since) {
            writeln!(out, "{}", typed("episode", json(episode)))?;
        }
    }
    for wake in log.wakes.between(since, until) {
        writeln!(out, "{}", typed("wake", json(&wake)))?;
    }
    for kill in log.oom_kills.between(since, until) {
        writeln!(out, "{}", typed("oom_kill", kill))?;
    }
    for exhaustion in log.exhaustions.between(since, until) {
        writeln!(out, "{}", typed("exhaustion", exhaustion))?;
    }
    for reload in log.reloads.between(since, until) {
        writeln!(out, "{}", typed("reload", json(&reload)))?;
    }
    Ok(())
}

/// Writes the samples of `since..=until` as CSV: `t` and one column per recorded field.
pub fn csv(recording: &Recording, since: i64, until: i64, out: &mut impl Write) -> io::Result<()> {
    let header: Vec<&str> = std::iter::once("t").chain(columns::names()).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in recording.rows(since, until) {
        let mut line = row.time.to_string();
        for value in &row.values {
            line.push(',');
            if let Some(value) = value.filter(|v| v.is_finite()) {
                line.push_str(&Value::from(value).to_string());
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// A recorded entry as JSON (plain structs of numbers and strings: this cannot fail).
fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}
