//! `GET /performance-metrics/history`: the recorder's samples, runs and episodes of a window
//! of time ([`crate::recorder`]), written as they are decoded (never built whole in memory),
//! gzip-compressed on the way when the client accepts it.
//!
//! The answer is one JSON object:
//!
//! ```text
//! {"since": ms, "until": ms, "step": ms|null, "oldest": ms|null,
//!  "signals": ["memory_usage", ...], "budgets": [{name, signal, goal, limit}],
//!  "samples": [{"t": ms, "memory_usage": 0.41, ...}, ...],
//!  "runs": [...], "episodes": [...], "wakes": [...], "oomKills": [...],
//!  "exhaustions": [...], "reloads": [...]}
//! ```
//!
//! A sample leaves out the signals that were not read. With `step`, each step's samples are
//! one row: its start time and the mean of each signal over the samples that read it (steps
//! are whole multiples of `step` since the Unix epoch: `10s` steps start at :00, :10...),
//! and, for the signals whose samples in the step were not all equal, their lowest and
//! highest in `"min"` and `"max"` objects (`{"t": ms, "memory_usage": 0.52, "min":
//! {"memory_usage": 0.5}, "max": {"memory_usage": 0.95}}`): a spike shorter than a step keeps
//! its height in a chart drawn from the steps. A signal absent from `"max"` had one value in
//! the step, its mean.

use std::convert::Infallible;
use std::io::Write;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flate2::write::GzEncoder;
use flate2::Compression;
use perfpilot_strategies::snapshot::unix_millis::millis;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::{gzip, ApiError, ApiState};
use crate::recorder::record::Log;
use crate::recorder::segment::SegmentEntries;
use crate::recorder::{columns, Block, Excerpt, Recorder};

/// The query of `GET /performance-metrics/history`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// From when: an RFC 3339 time (`2026-12-07T06:00:00Z`) or a duration back from now
    /// (`10m`, `90s`); by default the oldest sample kept.
    since: Option<String>,
    /// Until when, written like `since`; by default now.
    until: Option<String>,
    /// The signals (and recorded fields) to return, comma-separated (`memory_usage,rss_bytes`);
    /// by default all.
    signals: Option<String>,
    /// One row per step (`10s`, `1m`): each signal's mean over the step, and its lowest and
    /// highest where they differ (`min`, `max`); by default every sample.
    step: Option<String>,
}

/// A history request, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    /// From when.
    pub since: SystemTime,
    /// Until when.
    pub until: SystemTime,
    /// The columns wanted, by index ([`columns`]).
    pub columns: Vec<usize>,
    /// The step, if downsampled.
    pub step: Option<Duration>,
}

impl Request {
    /// Checks a query at `now`; `oldest` is the default `since`. Every problem is named.
    pub(crate) fn parse(
        query: &HistoryQuery,
        now: SystemTime,
        oldest: SystemTime,
    ) -> Result<Request, Vec<String>> {
        let mut problems = Vec::new();
        let mut time = |key, text: &Option<String>, default| match text.as_deref() {
            None | Some("") => default,
            Some(text) => crate::recorder::parse_when(key, text, now).unwrap_or_else(|why| {
                problems.push(why);
                default
            }),
        };
        let since = time("since", &query.since, oldest);
        let until = time("until", &query.until, now);
        if since > until {
            problems.push(format!(
                "since = {} is after until = {}",
                super::document::rfc3339(since),
                super::document::rfc3339(until)
            ));
        }
        let mut wanted = Vec::new();
        match query.signals.as_deref() {
            None | Some("") => wanted.extend(0..columns::count()),
            Some(list) => {
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match columns::index_of(name) {
                        Some(index) if !wanted.contains(&index) => wanted.push(index),
                        Some(_) => {}
                        None => problems.push(format!(
                            "signals: unknown signal {name:?}; known: {}",
                            columns::names().collect::<Vec<_>>().join(", ")
                        )),
                    }
                }
            }
        }
        let step = match query.step.as_deref() {
            None | Some("") => None,
            Some(text) => match humantime::parse_duration(text) {
                Ok(step) if step >= Duration::from_millis(1) => Some(step),
                _ => {
                    problems.push(format!(
                        "step = {text:?}: must be a duration of at least 1ms (10s, 1m)"
                    ));
                    None
                }
            },
        };
        if problems.is_empty() {
            Ok(Request {
                since,
                until,
                columns: wanted,
                step,
            })
        } else {
            Err(problems)
        }
    }
}

/// The agent's recorder and one of its reader permits (history and report requests share
/// them): 404 when the agent keeps no recording, 503 when every permit is taken.
pub(super) fn reader(state: &ApiState) -> Result<(Recorder, OwnedSemaphorePermit), ApiError> {
    let Some(recorder) = state.settings.recorder.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this agent keeps no recording",
        ));
    };
    let Some(permit) = recorder.reader() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many history requests at once (recorder.max_history_requests); try again",
        ));
    };
    Ok((recorder, permit))
}

/// The recorded samples, runs and episodes of a window of time.
#[utoipa::path(
    get,
    path = "/performance-metrics/history",
    tag = "perfpilot",
    params(HistoryQuery),
    responses(
        (status = 200, description = "The samples (one object per sample, or per step, with the signals read), runs, episodes, fast-watch wakes, OOM kills, exhausted ladders and reloads of the window, and each budget's goal and limit", body = Object),
        (status = 400, description = "A bad since, until, signals or step, named"),
        (status = 404, description = "This agent keeps no recording"),
        (status = 503, description = "Too many history requests at once (recorder.max_history_requests)")
    )
)]
pub(super) async fn history(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let (recorder, permit) = reader(&state)?;
    let now = SystemTime::now();
    let oldest = recorder
        .oldest_in_memory()
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64))
        .unwrap_or(now);
    let request = Request::parse(&query, now, oldest)
        .map_err(|problems| ApiError::new(StatusCode::BAD_REQUEST, problems.join("; ")))?;
    let excerpt = recorder.excerpt(request.since, request.until);
    // The permit goes with the answer: released when it is written (or dropped).
    let chunks = Chunks::new(request, excerpt, Some(permit));
    let gzipped = gzip::accepted(&headers);
    // Decoding (and reading older segments from disk, and compressing) runs on the blocking
    // pool, a few pieces ahead of the client: the runtime's workers only pass them on.
    let (pieces, mut received) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        let all: Box<dyn Iterator<Item = Bytes>> = match gzipped {
            true => Box::new(Gzipped::new(chunks)),
            false => Box::new(chunks),
        };
        for piece in all {
            if pieces.blocking_send(piece).is_err() {
                break; // the client went away
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        received
            .poll_recv(cx)
            .map(|piece| piece.map(Ok::<_, Infallible>))
    });
    let body = Body::from_stream(stream);
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// The answer's JSON in pieces: the head, a piece per block of samples, the entries.
pub(crate) struct Chunks {
    request: Request,
    excerpt: Excerpt,
    /// Segment files still to read (older than the memory holds), oldest first.
    older: std::collections::VecDeque<std::path::PathBuf>,
    /// The entries of the segments read from disk.
    disk_entries: Vec<SegmentEntries>,
    /// The next block to write; `None` before the head.
    next_block: Option<usize>,
    /// Rows written so far (for the commas).
    rows: u64,
    /// The step being summed up: its start, and each wanted column's values in it.
    bucket: Option<(i64, Vec<StepValues>)>,
    done: bool,
    /// The history request's permit, held while the answer is written.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Chunks {
    /// The pieces of the answer to `request` from `excerpt`.
    pub(crate) fn new(
        request: Request,
        excerpt: Excerpt,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Chunks {
            _permit: permit,
            older: excerpt.older.iter().cloned().collect(),
            disk_entries: Vec::new(),
            request,
            excerpt,
            next_block: None,
            rows: 0,
            bucket: None,
            done: false,
        }
    }

    fn head(&self) -> Vec<u8> {
        let signals: Vec<&str> = self
            .request
            .columns
            .iter()
            .map(|&i| columns::name(i))
            .collect();
        let head = serde_json::json!({
            "since": millis(self.request.since),
            "until": millis(self.request.until),
            "step": self.request.step.map(|s| s.as_millis() as u64),
            "oldest": self.excerpt.oldest,
            "signals": signals,
            "budgets": self.excerpt.bands,
        });
        let mut text = head.to_string();
        text.pop(); // the closing brace: the samples follow
        text.push_str(",\"samples\":[");
        text.into_bytes()
    }

    /// Writes a row: `{"t": time, "name": value, ...` without its closing brace (a step's row
    /// adds its `min` and `max` first).
    fn open_row(
        &mut self,
        out: &mut Vec<u8>,
        time: i64,
        values: impl Iterator<Item = (usize, Option<f64>)>,
    ) {
        if self.rows > 0 {
            out.push(b',');
        }
        self.rows += 1;
        out.extend_from_slice(b"{\"t\":");
        out.extend_from_slice(time.to_string().as_bytes());
        write_values(out, values);
    }

    fn flush_bucket(&mut self, out: &mut Vec<u8>) {
        if let Some((start, step)) = self.bucket.take() {
            let columns = self.request.columns.clone();
            self.open_row(
                out,
                start,
                columns
                    .iter()
                    .zip(&step)
                    .map(|(&i, values)| (i, values.mean())),
            );
            // Only the signals that moved within the step: at a step no shorter than the
            // interval (one sample a step) the row is as small as without them.
            let moved = || {
                columns
                    .iter()
                    .zip(&step)
                    .filter(|(_, values)| values.min < values.max)
            };
            if moved().next().is_some() {
                for (key, pick) in [
                    ("min", StepValues::lowest as fn(&StepValues) -> f64),
                    ("max", StepValues::highest),
                ] {
                    // `,"name":value...` with its first comma made the object's brace.
                    let mut object = Vec::new();
                    write_values(
                        &mut object,
                        moved().map(|(&i, values)| (i, Some(pick(values)))),
                    );
                    object[0] = b'{';
                    out.extend_from_slice(b",\"");
                    out.extend_from_slice(key.as_bytes());
                    out.extend_from_slice(b"\":");
                    out.extend_from_slice(&object);
                    out.push(b'}');
                }
            }
            out.push(b'}');
        }
    }

    fn block(&mut self, block: &Block) -> Vec<u8> {
        let (since, until) = (
            millis(self.request.since) as i64,
            millis(self.request.until) as i64,
        );
        let mut out = Vec::new();
        for row in block
            .rows()
            .filter(|row| (since..=until).contains(&row.time))
        {
            match self.request.step {
                None => {
                    let columns = self.request.columns.clone();
                    let values = columns.into_iter().map(|index| (index, row.values[index]));
                    self.open_row(&mut out, row.time, values);
                    out.push(b'}');
                }
                Some(step) => {
                    let step = step.as_millis().max(1) as i64;
                    let start = row.time - row.time.rem_euclid(step);
                    if self.bucket.as_ref().is_some_and(|(s, _)| *s != start) {
                        self.flush_bucket(&mut out);
                    }
                    let wanted = self.request.columns.len();
                    let (_, step) = self
                        .bucket
                        .get_or_insert_with(|| (start, vec![StepValues::default(); wanted]));
                    for (values, &index) in step.iter_mut().zip(&self.request.columns) {
                        if let Some(value) = row.values[index].filter(|v| v.is_finite()) {
                            values.add(value);
                        }
                    }
                }
            }
        }
        out
    }

    fn tail(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.flush_bucket(&mut out);
        // Disk first, then memory: a later record of a run or an episode replaces an earlier.
        let mut log = Log::default();
        for entries in self.disk_entries.drain(..) {
            log.restore(entries);
        }
        let e = &self.excerpt;
        log.restore(SegmentEntries {
            runs: e.runs.clone(),
            episodes: e.episodes.clone(),
            wakes: e.wakes.clone(),
            oom_kills: e.oom_kills.clone(),
            exhaustions: e.exhaustions.clone(),
            reloads: e.reloads.clone(),
            budgets: Vec::new(),
        });
        let (since, until) = (millis(self.request.since), millis(self.request.until));
        let episodes: Vec<_> = log
            .episodes
            .iter()
            .filter(|(_, e)| e.start <= until && e.end.is_none_or(|end| end >= since))
            .map(|(_, e)| e)
            .collect();
        let entries = serde_json::json!({
            "runs": log.runs.between(since, until),
            "episodes": episodes,
            "wakes": log.wakes.between(since, until),
            "oomKills": log.oom_kills.between(since, until),
            "exhaustions": log.exhaustions.between(since, until),
            "reloads": log.reloads.between(since, until),
        })
        .to_string();
        out.extend_from_slice(b"],");
        out.extend_from_slice(&entries.as_bytes()[1..]);
        out
    }
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let Some(index) = self.next_block else {
            self.next_block = Some(0);
            return Some(Bytes::from(self.head()));
        };
        while let Some(path) = self.older.pop_front() {
            // A file dropped or refused since the request began is left out.
            if let Ok(segment) = crate::recorder::store::read(&path) {
                self.disk_entries.push(segment.entries);
                return Some(Bytes::from(self.block(&segment.block)));
            }
        }
        match self.excerpt.blocks.get(index).cloned() {
            Some(block) => {
                self.next_block = Some(index + 1);
                Some(Bytes::from(self.block(&block)))
            }
            None => {
                self.done = true;
                Some(Bytes::from(self.tail()))
            }
        }
    }
}

/// `,"name":value` for each value read (left out where absent or not finite).
fn write_values(out: &mut Vec<u8>, values: impl Iterator<Item = (usize, Option<f64>)>) {
    for (index, value) in values {
        let Some(value) = value.filter(|v| v.is_finite()) else {
            continue;
        };
        out.extend_from_slice(b",\"");
        out.extend_from_slice(columns::name(index).as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(Value::from(value).to_string().as_bytes());
    }
}

/// One signal's values within a step: what its row says (mean, lowest, highest).
#[derive(Debug, Clone, Copy)]
struct StepValues {
    sum: f64,
    count: u32,
    min: f64,
    max: f64,
}

impl Default for StepValues {
    fn default() -> Self {
        StepValues {
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl StepValues {
    fn add(&mut self, value: f64) {
        self.sum += value;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// The mean, `None` when no sample of the step read the signal.
    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / f64::from(self.count))
    }

    fn lowest(&self) -> f64 {
        self.min
    }

    fn highest(&self) -> f64 {
        self.max
    }
}

/// Pieces compressed as one gzip stream, as they come.
struct Gzipped<I> {
    pieces: I,
    encoder: Option<GzEncoder<Vec<u8>>>,
}

impl<I> Gzipped<I> {
    fn new(pieces: I) -> Self {
        Gzipped {
            pieces,
            encoder: Some(GzEncoder::new(Vec::new(), Compression::fast())),
        }
    }
}

impl<I: Iterator<Item = Bytes>> Iterator for Gzipped<I> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        loop {
            let encoder = self.encoder.as_mut()?;
            match self.pieces.next() {
                Some(piece) => {
                    encoder
                        .write_all(&piece)
                        .expect("gzip into memory cannot fail");
                    let out = std::mem::take(encoder.get_mut());
                    if !out.is_empty() {
                        return Some(Bytes::from(out));
                    }
                }
                None => {
                    let encoder = self.encoder.take()?;
                    let out = encoder.finish().expect("gzip into memory cannot fail");
                    return Some(Bytes::from(out));
                }
            }
        }
    }
}
