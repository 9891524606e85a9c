//! A segment: one block of samples (at most a minute) and the entries of its minute, as one
//! file of the recording on disk (docs/recording.md describes the format, version
//! [`FORMAT_VERSION`]).
//!
//! ```text
//! magic    8 bytes   "PPREC\0\0\n"
//! version  u16 LE    FORMAT_VERSION
//! header   u32 LE length, then JSON: {"agent", "first", "last", "samples", "columns": [names],
//!          "engine": [names]}
//! times    u32 LE length, then the delta-of-delta encoded times (ms since the Unix epoch)
//! columns  per name in the header's "columns": u32 LE length, then the XOR-encoded values
//! engine   per name in the header's "engine": the same (version 2; version 1 has none)
//! entries  u32 LE length, then JSON: {"runs", "episodes", "wakes", "oomKills",
//!          "exhaustions", "reloads", "budgets"} (as GET /performance-metrics/history shows
//!          them)
//! crc32    u32 LE    of every byte before it
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::columns;
use super::gorilla::{TimeColumn, ValueColumn};
use super::window::Block;

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"PPREC\0\0\n";
/// The version of the format this agent writes and the newest it reads. Version 2 added the
/// engine's columns ([`columns::engine`]); version 1 is still read (its samples have none).
pub const FORMAT_VERSION: u16 = 2;
/// The largest segment read back: a minute at 10 ms of every column, with room to spare.
pub const MAX_SEGMENT_BYTES: usize = 64 << 20;

/// What a segment's header says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The agent's version that wrote it.
    pub agent: String,
    /// Its first and last sample's time, ms since the Unix epoch.
    pub first: i64,
    /// See `first`.
    pub last: i64,
    /// Samples in it.
    pub samples: usize,
    /// Its columns' names, in order.
    pub columns: Vec<String>,
    /// Its engine columns' names, in order ([`columns::engine`]; none before version 2).
    #[serde(default)]
    pub engine: Vec<String>,
}

pub use super::record::SegmentEntries;

/// A segment read back.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its header.
    pub header: Header,
    /// Its samples, with this agent's columns (a column it did not have reads as not read).
    pub block: Arc<Block>,
    /// Its entries.
    pub entries: SegmentEntries,
}

/// Why a segment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// It does not start with [`MAGIC`].
    #[error("not a perfpilot recording segment (no PPREC magic)")]
    NotASegment,
    /// A newer agent wrote it.
    #[error("format version {found} is newer than this agent's {FORMAT_VERSION}")]
    NewerVersion {
        /// The version it says.
        found: u16,
    },
    /// It ends before its parts do (a write cut short).
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// Its checksum does not match.
    #[error("corrupt: the checksum does not match")]
    Checksum,
    /// A part does not parse.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Larger than [`MAX_SEGMENT_BYTES`].
    #[error("larger than {MAX_SEGMENT_BYTES} bytes")]
    TooLarge,
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn put(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_le_bytes());
    out.extend_from_slice(part);
}

/// A segment's bytes: `block` and `entries`, written by agent version `agent`.
pub fn encode(agent: &str, block: &Block, entries: &SegmentEntries) -> Vec<u8> {
    let (first, last) = block.span();
    let header = Header {
        agent: agent.to_owned(),
        first,
        last,
        samples: block.len(),
        columns: columns::names().map(str::to_owned).collect(),
        engine: columns::engine::names().collect(),
    };
    let mut out = Vec::with_capacity(block.bytes() + 512);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    put(
        &mut out,
        &serde_json::to_vec(&header).expect("a header serializes"),
    );
    let (times, values, engine) = block.columns();
    put(&mut out, times.parts().0);
    for column in values.iter().chain(engine) {
        put(&mut out, column.parts().0);
    }
    put(
        &mut out,
        &serde_json::to_vec(entries).expect("entries serialize"),
    );
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a segment's bytes back, or says why not.
pub fn decode(bytes: &[u8]) -> Result<Segment, SegmentError> {
    if bytes.len() > MAX_SEGMENT_BYTES {
        return Err(SegmentError::TooLarge);
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SegmentError::NotASegment);
    }
    let mut at = MAGIC.len();
    let version = u16::from_le_bytes(
        bytes
            .get(at..at + 2)
            .ok_or(SegmentError::Truncated("no version"))?
            .try_into()
            .expect("two bytes"),
    );
    if version > FORMAT_VERSION {
        return Err(SegmentError::NewerVersion { found: version });
    }
    at += 2;
    let body_end = bytes
        .len()
        .checked_sub(4)
        .filter(|&end| end >= at)
        .ok_or(SegmentError::Truncated("no checksum"))?;
    let mut take = |what: &'static str| -> Result<&[u8], SegmentError> {
        let len = bytes
            .get(at..at + 4)
            .filter(|_| at + 4 <= body_end)
            .ok_or(SegmentError::Truncated(what))?;
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let part = bytes
            .get(at + 4..at + 4 + len)
            .filter(|_| at + 4 + len <= body_end)
            .ok_or(SegmentError::Truncated(what))?;
        at += 4 + len;
        Ok(part)
    };
    let header = take("header")?;
    let header: Header = serde_json::from_slice(header)
        .map_err(|e| SegmentError::Corrupt(format!("header: {e}")))?;
    let times = take("times")?.to_vec();
    let mut saved = Vec::with_capacity(header.columns.len());
    for _ in &header.columns {
        saved.push(take("a column")?.to_vec());
    }
    let mut saved_engine = Vec::with_capacity(header.engine.len());
    for _ in &header.engine {
        saved_engine.push(take("an engine column")?.to_vec());
    }
    let entries = take("entries")?;
    let entries: SegmentEntries = serde_json::from_slice(entries)
        .map_err(|e| SegmentError::Corrupt(format!("entries: {e}")))?;
    if at != body_end {
        return Err(SegmentError::Corrupt("bytes after the entries".into()));
    }
    let stored = u32::from_le_bytes(bytes[body_end..].try_into().expect("four bytes"));
    if stored != crc32(&bytes[..body_end]) {
        return Err(SegmentError::Checksum);
    }
    let samples = header.samples;
    let values = by_name(columns::names(), &header.columns, saved, samples);
    let engine = by_name(
        columns::engine::names(),
        &header.engine,
        saved_engine,
        samples,
    );
    let block = Block::from_columns(
        TimeColumn::from_parts(times, samples),
        values,
        engine,
        (header.first, header.last),
    );
    Ok(Segment {
        header,
        block: Arc::new(block),
        entries,
    })
}

/// The columns this agent has (`wanted`, in its order) from those a segment has (`names`,
/// with their bytes `saved`): one it does not have reads as not read, one it does not know
/// is left out.
fn by_name<N: AsRef<str>>(
    wanted: impl Iterator<Item = N>,
    names: &[String],
    mut saved: Vec<Vec<u8>>,
    samples: usize,
) -> Vec<ValueColumn> {
    wanted
        .map(
            |name| match names.iter().position(|known| known == name.as_ref()) {
                Some(position) => {
                    ValueColumn::from_parts(std::mem::take(&mut saved[position]), samples)
                }
                None => {
                    let mut absent = ValueColumn::default();
                    (0..samples).for_each(|_| absent.push(None));
                    absent
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use perfpilot_strategies::Snapshot;
    use serde_json::json;

    use super::*;
    use crate::recorder::window::Window;

    fn block() -> Arc<Block> {
        let mut window = Window::new(600_000);
        let mut sealed = None;
        for i in 0..61i64 {
            let time = 1_800_000_000_000 + i * 1000;
            let mut snapshot = Snapshot::empty(UNIX_EPOCH + Duration::from_millis(time as u64));
            snapshot.memory_usage_ratio = Some(0.4 + i as f64 / 1000.0);
            sealed = window.push(time, &snapshot, None).or(sealed);
        }
        sealed.expect("a minute sealed")
    }

    fn entries() -> SegmentEntries {
        SegmentEntries {
            runs: vec![json!({"id": 1, "strategy": "trim", "helped": true})],
            ..SegmentEntries::default()
        }
    }

    #[test]
    fn a_segment_reads_back_as_written() {
        let block = block();
        let bytes = encode("0.1.0", &block, &entries());
        let segment = decode(&bytes).expect("reads back");
        assert_eq!(segment.header.samples, 60);
        assert_eq!(segment.entries, entries());
        let a: Vec<_> = block.rows().collect();
        let b: Vec<_> = segment.block.rows().collect();
        assert_eq!(a, b);
    }

    /// Format version 2: what the engine read beside each sample comes back with it.
    #[test]
    fn the_engines_clock_and_slopes_read_back_as_written() {
        let mut window = Window::new(600_000);
        let mut written = Vec::new();
        for i in 0..10i64 {
            let time = 1_800_000_000_000 + i * 7;
            let mut snapshot = Snapshot::empty(UNIX_EPOCH + Duration::from_millis(time as u64));
            snapshot.memory_usage_ratio = Some(0.9 + i as f64 / 100.0);
            let evaluated = crate::events::Evaluated {
                at: snapshot.taken_at + Duration::from_micros(300 + 11 * i as u64),
                watch_slopes: if i % 2 == 0 {
                    vec![(perfpilot_strategies::Signal::MemoryUsage, 1.5 + i as f64)]
                } else {
                    Vec::new()
                },
            };
            window.push(time, &snapshot, Some(&evaluated));
            written.push(Some(evaluated));
        }
        let block = window.seal().expect("samples");
        let segment = decode(&encode("0.1.0", &block, &entries())).expect("reads back");
        assert_eq!(
            segment.header.engine,
            columns::engine::names().collect::<Vec<_>>()
        );
        let read: Vec<_> = segment.block.evaluations().collect();
        assert_eq!(read, written);
    }

    #[test]
    fn truncated_corrupt_and_newer_segments_are_refused_with_the_reason() {
        let bytes = encode("0.1.0", &block(), &entries());
        for cut in [3, 9, 20, bytes.len() / 2, bytes.len() - 1] {
            let error = decode(&bytes[..cut]).expect_err("truncated");
            assert!(
                matches!(
                    error,
                    SegmentError::Truncated(_) | SegmentError::NotASegment | SegmentError::Checksum
                ),
                "cut at {cut}: {error}"
            );
        }
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x10;
        assert!(decode(&flipped).is_err());
        let mut newer = bytes.clone();
        newer[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            decode(&newer).unwrap_err(),
            SegmentError::NewerVersion {
                found: FORMAT_VERSION + 1
            }
        );
        assert_eq!(
            decode(b"hello world, not a segment").unwrap_err(),
            SegmentError::NotASegment
        );
    }
}
