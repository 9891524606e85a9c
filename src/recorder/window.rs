//! The in-memory window of samples: blocks of at most [`BLOCK_SPAN_MS`] each, columnar and
//! compressed (`super::gorilla`); the open block grows, sealed blocks are shared (`Arc`)
//! with readers and dropped once older than the window.

use std::collections::VecDeque;
use std::sync::Arc;

use perfpilot_strategies::Snapshot;

use super::columns;
use super::gorilla::{TimeColumn, ValueColumn};
use crate::events::Evaluated;

/// The longest time one block covers, ms: a minute, the size of a segment on disk too.
pub const BLOCK_SPAN_MS: i64 = 60_000;

/// Samples of at most a minute, one column per recorded field, and the engine's columns
/// ([`columns::engine`]).
#[derive(Debug, Clone, Default)]
pub struct Block {
    times: TimeColumn,
    values: Vec<ValueColumn>,
    engine: Vec<ValueColumn>,
    first: i64,
    last: i64,
}

/// One decoded sample: its time (ms since the Unix epoch) and its value in every column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// When the sample was taken, ms since the Unix epoch.
    pub time: i64,
    /// One value per column ([`columns::name`]); `None` where not read.
    pub values: Vec<Option<f64>>,
}

impl Block {
    fn push(&mut self, time: i64, snapshot: &Snapshot, evaluated: Option<&Evaluated>) {
        if self.values.is_empty() {
            self.values = vec![ValueColumn::default(); columns::count()];
            self.engine = vec![ValueColumn::default(); columns::engine::count()];
            self.first = time;
        }
        self.times.push(time);
        for (index, column) in self.values.iter_mut().enumerate() {
            column.push(columns::read(index, snapshot));
        }
        for (column, value) in self
            .engine
            .iter_mut()
            .zip(columns::engine::read(time, evaluated))
        {
            column.push(value);
        }
        self.last = time;
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first and last sample's times, ms.
    pub fn span(&self) -> (i64, i64) {
        (self.first, self.last)
    }

    /// Bytes its columns hold.
    pub fn bytes(&self) -> usize {
        self.times.bytes()
            + self
                .values
                .iter()
                .chain(&self.engine)
                .map(ValueColumn::bytes)
                .sum::<usize>()
    }

    /// Its time column, value columns (one per [`columns`] entry) and engine columns (one per
    /// [`columns::engine`] entry).
    pub(crate) fn columns(&self) -> (&TimeColumn, &[ValueColumn], &[ValueColumn]) {
        (&self.times, &self.values, &self.engine)
    }

    /// A complete block from its columns and its first and last time (read from disk).
    pub(crate) fn from_columns(
        times: TimeColumn,
        values: Vec<ValueColumn>,
        engine: Vec<ValueColumn>,
        (first, last): (i64, i64),
    ) -> Self {
        Block {
            times,
            values,
            engine,
            first,
            last,
        }
    }

    fn shrink(&mut self) {
        self.times.shrink();
        self.values.iter_mut().for_each(ValueColumn::shrink);
        self.values.shrink_to_fit();
        self.engine.iter_mut().for_each(ValueColumn::shrink);
        self.engine.shrink_to_fit();
    }

    /// The samples with their values, in order (decoded as they are read).
    pub fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        let mut values: Vec<_> = self.values.iter().map(ValueColumn::iter).collect();
        self.times.iter().map(move |time| Row {
            time,
            values: values.iter_mut().map(|v| v.next().flatten()).collect(),
        })
    }

    /// What the engine read beside each sample, in order ([`columns::engine::evaluated`]):
    /// `None` for a sample recorded without it (a version-1 segment).
    pub fn evaluations(&self) -> impl Iterator<Item = Option<Evaluated>> + '_ {
        let mut engine: Vec<_> = self.engine.iter().map(ValueColumn::iter).collect();
        self.times.iter().map(move |time| {
            let values: Vec<Option<f64>> = engine.iter_mut().map(|v| v.next().flatten()).collect();
            columns::engine::evaluated(time, &values)
        })
    }
}

/// The last `keep_ms` of samples (at least: whole blocks are dropped).
#[derive(Debug)]
pub struct Window {
    sealed: VecDeque<Arc<Block>>,
    open: Block,
    keep_ms: i64,
}

impl Window {
    /// A window that keeps at least `keep_ms` of samples.
    pub fn new(keep_ms: i64) -> Self {
        Window {
            sealed: VecDeque::new(),
            open: Block::default(),
            keep_ms,
        }
    }

    /// Records a sample taken at `time` (ms since the Unix epoch), and what the engine read
    /// beside it where that is known. A sample older than the last one (the wall clock
    /// stepped back) starts a new block, so each block's times stay in order. Returns the
    /// block sealed by it, if one was.
    pub fn push(
        &mut self,
        time: i64,
        snapshot: &Snapshot,
        evaluated: Option<&Evaluated>,
    ) -> Option<Arc<Block>> {
        let mut sealed = None;
        if !self.open.is_empty()
            && (time - self.open.first >= BLOCK_SPAN_MS || time < self.open.last)
        {
            let mut block = std::mem::take(&mut self.open);
            block.shrink();
            let block = Arc::new(block);
            self.sealed.push_back(Arc::clone(&block));
            sealed = Some(block);
        }
        self.open.push(time, snapshot, evaluated);
        while self
            .sealed
            .front()
            .is_some_and(|block| block.last < time - self.keep_ms)
        {
            self.sealed.pop_front();
        }
        sealed
    }

    /// Seals the open block (at shutdown: it is written out as it is). Returns it, if it
    /// held samples.
    pub fn seal(&mut self) -> Option<Arc<Block>> {
        if self.open.is_empty() {
            return None;
        }
        let mut block = std::mem::take(&mut self.open);
        block.shrink();
        let block = Arc::new(block);
        self.sealed.push_back(Arc::clone(&block));
        Some(block)
    }

    /// Adds a block read back from disk, older than any sample recorded since (blocks are
    /// restored oldest first, before recording starts).
    pub fn restore(&mut self, block: Arc<Block>) {
        if !block.is_empty() && self.open.is_empty() {
            self.sealed.push_back(block);
        }
    }

    /// The blocks that hold samples in `since..=until` (ms), oldest first: the sealed ones
    /// shared, the open one copied.
    pub fn blocks(&self, since: i64, until: i64) -> Vec<Arc<Block>> {
        let overlaps =
            |block: &Block| !block.is_empty() && block.last >= since && block.first <= until;
        let mut blocks: Vec<Arc<Block>> = self
            .sealed
            .iter()
            .filter(|block| overlaps(block))
            .cloned()
            .collect();
        if overlaps(&self.open) {
            blocks.push(Arc::new(self.open.clone()));
        }
        blocks
    }

    /// The time of the oldest sample held, ms.
    pub fn oldest(&self) -> Option<i64> {
        self.sealed
            .front()
            .map(|block| block.first)
            .or((!self.open.is_empty()).then_some(self.open.first))
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.sealed.iter().map(|b| b.len()).sum::<usize>() + self.open.len()
    }

    /// Whether it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the columns hold.
    pub fn bytes(&self) -> usize {
        self.sealed.iter().map(|b| b.bytes()).sum::<usize>() + self.open.bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn sample(time: i64, usage: f64) -> Snapshot {
        let mut snapshot = Snapshot::empty(UNIX_EPOCH + Duration::from_millis(time as u64));
        snapshot.memory_usage_ratio = Some(usage);
        snapshot.rss_bytes = Some(40_000_000 + (time as u64 % 7) * 4096);
        snapshot
    }

    #[test]
    fn keeps_its_span_in_minute_blocks_and_reads_back_what_it_was_given() {
        let keep = 15 * 60_000;
        let mut window = Window::new(keep);
        let start = 1_700_000_000_000i64;
        for i in 0..(20 * 60) {
            let time = start + i * 1000 + i % 3;
            window.push(time, &sample(time, 0.5 + (i % 10) as f64 / 100.0), None);
        }
        let newest = start + 1199 * 1000 + 1199 % 3;
        let oldest = window.oldest().expect("samples");
        assert!(newest - oldest >= keep, "{} ms kept", newest - oldest);
        assert!(
            newest - oldest < keep + 2 * BLOCK_SPAN_MS,
            "{} ms kept",
            newest - oldest
        );
        let usage = columns::index_of("memory_usage").expect("a column");
        let rows: Vec<Row> = window
            .blocks(i64::MIN, i64::MAX)
            .iter()
            .flat_map(|block| block.rows().collect::<Vec<_>>())
            .collect();
        assert_eq!(rows.len(), window.len());
        for row in &rows {
            let i = (row.time - start) / 1000;
            assert_eq!(row.values[usage], Some(0.5 + (i % 10) as f64 / 100.0));
        }
        assert!(rows.windows(2).all(|pair| pair[0].time < pair[1].time));
    }

    #[test]
    fn a_clock_stepped_back_starts_a_new_block() {
        let mut window = Window::new(60_000);
        window.push(10_000, &sample(10_000, 0.1), None);
        assert!(window.push(5_000, &sample(5_000, 0.2), None).is_some());
        assert_eq!(window.len(), 2);
    }
}
