//! Where a signal is heading: a robust linear fit over its recent samples, and when it will
//! reach a value. Pure arithmetic, no I/O.
//!
//! The fit is Theil–Sen: the slope is the median of the slopes between every pair of samples,
//! the intercept the median of `value − slope × time`. One wild sample moves neither median,
//! so a single spike neither fires a prediction nor hides a steady climb (an ordinary least
//! squares fit would do both).
//!
//! # Cost
//!
//! A window of `n` samples has `n(n−1)/2` slopes (half a million at `n = 1000`); none of them
//! is ever stored all at once. A [`Window`] keeps only a *band*: every slope between two
//! values around the median, sorted, and how many slopes lie below it. A new sample adds its
//! `n − 1` slopes and the sample it displaces removes its `n − 1`: each is computed, compared
//! with the band's bounds, and inserted or removed only when it falls inside, so a fit costs
//! O(n) plus the in-band insertions (into sorted blocks of a few hundred), and the median is
//! read at its rank in the band. The band holds O(n) distinct slopes (4n to 16n; a narrower
//! one, n/2 each side, made the median leave it and forced rebuilds often), equal slopes as
//! one value and a count: a signal that holds still (memory in whole pages) has mostly equal
//! slopes, which a band of single slopes held all of, O(n²). Measured at `n = 1000`
//! (`cargo bench --bench scale`): 13 µs an evaluation, 1.3 ms a fit from scratch. When the median leaves the band (the trend changed), or on the
//! first fit after [`Window::clear`], the band is rebuilt: one pass over every pair (O(n²)
//! time, O(n) memory), bounded by a random sample of the slopes. The slopes are computed with
//! the same arithmetic and ordered by [`f64::total_cmp`] as a full sort would, so the fit is
//! the same, bit for bit, as sorting every slope (the tests compare them).

use std::cmp::Ordering;
use std::collections::VecDeque;

/// A fitted line: `value(t) = intercept + slope × t`, with `t` in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Change per second.
    pub slope: f64,
    /// Value at `t = 0`.
    pub intercept: f64,
}

impl Fit {
    /// The fitted value at `t` seconds.
    pub fn value_at(&self, t: f64) -> f64 {
        self.intercept + self.slope * t
    }

    /// Seconds after `now` until the line reaches `target`: zero if it is there already,
    /// `None` if it is below and not rising.
    pub fn seconds_to_reach(&self, target: f64, now: f64) -> Option<f64> {
        let value = self.value_at(now);
        if value >= target {
            Some(0.0)
        } else if self.slope > 0.0 {
            Some((target - value) / self.slope)
        } else {
            None
        }
    }
}

/// The Theil–Sen fit of `(t, value)` points; `None` with fewer than two distinct times.
///
/// O(n²) time over the pairs but O(n) memory: see the module's "Cost".
pub fn theil_sen(points: &[(f64, f64)]) -> Option<Fit> {
    let mut band = Band::build(points.len(), |i| points[i], points.len())?;
    let slope = band.median()?;
    let mut intercepts = Vec::with_capacity(points.len());
    Some(Fit {
        slope,
        intercept: intercept(points.iter().copied(), slope, &mut intercepts)?,
    })
}

/// The slope between two samples, `earlier` first: the arithmetic every path shares, so that
/// the same pair always gives the same bits.
#[inline]
fn slope((t1, v1): (f64, f64), (t2, v2): (f64, f64)) -> Option<f64> {
    (t2 != t1).then(|| (v2 - v1) / (t2 - t1))
}

/// The median of `value − slope × t`, through `scratch`.
fn intercept(
    points: impl Iterator<Item = (f64, f64)>,
    slope: f64,
    scratch: &mut Vec<f64>,
) -> Option<f64> {
    scratch.clear();
    scratch.extend(points.map(|(t, v)| v - slope * t));
    median(scratch)
}

/// The median of `values` (reordered), as a full sort by [`f64::total_cmp`] would give it.
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let len = values.len();
    let middle = len / 2;
    let (left, &mut upper, _) = values.select_nth_unstable_by(middle, f64::total_cmp);
    Some(if len % 2 == 1 {
        upper
    } else {
        // The largest of the lower half is the element just before the middle in sorted order.
        let lower = left.iter().copied().max_by(f64::total_cmp)?;
        (lower + upper) / 2.0
    })
}

/// One slope value and how many slopes have it (equal by [`f64::total_cmp`]).
type Run = (f64, usize);

/// Slopes sorted by [`f64::total_cmp`], equal ones kept as one [`Run`], in blocks of at most
/// `2 × Sorted::BLOCK` runs: an insertion or removal moves at most one block (a flat vector of
/// the 8,000–32,000 slopes a band holds at `n = 1000` moved 16 KiB and more each time, most
/// of an evaluation). Runs keep a signal that holds still small: its slopes are mostly one
/// value (0), which a flat vector held once per pair, half a million times at `n = 1000`.
#[derive(Debug, Clone, Default)]
struct Sorted {
    blocks: Vec<Block>,
    len: usize,
}

/// Runs of a [`Sorted`], and how many slopes they count.
#[derive(Debug, Clone, Default)]
struct Block {
    runs: Vec<Run>,
    len: usize,
}

impl Block {
    fn new(runs: Vec<Run>) -> Block {
        Block {
            len: runs.iter().map(|run| run.1).sum(),
            runs,
        }
    }
}

impl Sorted {
    const BLOCK: usize = 256;

    /// From runs sorted by value, each value once.
    fn from_runs(runs: Vec<Run>) -> Sorted {
        let blocks: Vec<Block> = runs
            .chunks(Sorted::BLOCK)
            .map(|chunk| Block::new(chunk.to_vec()))
            .collect();
        Sorted {
            len: blocks.iter().map(|block| block.len).sum(),
            blocks,
        }
    }

    /// Slopes held, equal ones counted each.
    fn len(&self) -> usize {
        self.len
    }

    /// The block and the run in it that hold the slope at `rank`.
    fn position(&self, mut rank: usize) -> Option<(usize, usize)> {
        for (b, block) in self.blocks.iter().enumerate() {
            if rank < block.len {
                for (r, &(_, count)) in block.runs.iter().enumerate() {
                    if rank < count {
                        return Some((b, r));
                    }
                    rank -= count;
                }
            }
            rank -= block.len;
        }
        None
    }

    /// Drops every run after the one holding `rank`: that run's value, if any was dropped.
    fn truncate_after(&mut self, rank: usize) -> Option<f64> {
        let (b, r) = self.position(rank)?;
        let in_block: usize = self.blocks[b].runs[r + 1..].iter().map(|run| run.1).sum();
        let after: usize = self.blocks[b + 1..].iter().map(|block| block.len).sum();
        if in_block + after == 0 {
            return None;
        }
        self.blocks.truncate(b + 1);
        let block = &mut self.blocks[b];
        block.runs.truncate(r + 1);
        block.len -= in_block;
        self.len -= in_block + after;
        Some(block.runs[r].0)
    }

    /// Drops every run before the one holding `rank`: that run's value and how many slopes
    /// were dropped, if any was.
    fn drop_before(&mut self, rank: usize) -> Option<(f64, usize)> {
        let (b, r) = self.position(rank)?;
        let before: usize = self.blocks[..b].iter().map(|block| block.len).sum();
        let in_block: usize = self.blocks[b].runs[..r].iter().map(|run| run.1).sum();
        if before + in_block == 0 {
            return None;
        }
        self.blocks.drain(..b);
        let block = &mut self.blocks[0];
        block.runs.drain(..r);
        block.len -= in_block;
        self.len -= before + in_block;
        Some((block.runs[0].0, before + in_block))
    }

    /// Distinct values held: what the memory grows with.
    fn distinct(&self) -> usize {
        self.blocks.iter().map(|block| block.runs.len()).sum()
    }

    /// The first block whose last value is not below `s` (the last block if none).
    fn block_for(&self, s: f64) -> usize {
        let index = self.blocks.partition_point(|block| {
            block
                .runs
                .last()
                .is_some_and(|last| last.0.total_cmp(&s) == Ordering::Less)
        });
        index.min(self.blocks.len().saturating_sub(1))
    }

    fn insert(&mut self, s: f64) {
        self.len += 1;
        if self.blocks.is_empty() {
            self.blocks.push(Block::new(vec![(s, 1)]));
            return;
        }
        let index = self.block_for(s);
        let block = &mut self.blocks[index];
        block.len += 1;
        match block.runs.binary_search_by(|run| run.0.total_cmp(&s)) {
            Ok(at) => block.runs[at].1 += 1,
            Err(at) => block.runs.insert(at, (s, 1)),
        }
        if block.runs.len() > 2 * Sorted::BLOCK {
            let tail = Block::new(block.runs.split_off(Sorted::BLOCK));
            block.len -= tail.len;
            self.blocks.insert(index + 1, tail);
        }
    }

    /// Removes one slope equal to `s`; `false` if there is none.
    fn remove(&mut self, s: f64) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let index = self.block_for(s);
        let block = &mut self.blocks[index];
        let Ok(at) = block.runs.binary_search_by(|run| run.0.total_cmp(&s)) else {
            return false;
        };
        block.runs[at].1 -= 1;
        if block.runs[at].1 == 0 {
            block.runs.remove(at);
        }
        block.len -= 1;
        if block.runs.is_empty() {
            self.blocks.remove(index);
        }
        self.len -= 1;
        true
    }

    /// The slope at `rank` (0-based, equal slopes counted each).
    fn get(&self, mut rank: usize) -> Option<f64> {
        for block in &self.blocks {
            if rank < block.len {
                for &(value, count) in &block.runs {
                    if rank < count {
                        return Some(value);
                    }
                    rank -= count;
                }
            }
            rank -= block.len;
        }
        None
    }
}

/// Slopes collected in any order into sorted runs, in memory that grows with the distinct
/// values, not with the slopes: they are sorted and merged in batches.
#[derive(Debug, Default)]
struct Collector {
    pending: Vec<f64>,
    runs: Vec<Run>,
}

impl Collector {
    const BATCH: usize = 4096;

    fn push(&mut self, s: f64) {
        self.pending.push(s);
        if self.pending.len() == Collector::BATCH {
            self.merge_pending();
        }
    }

    /// How many slopes were pushed.
    fn len(&self) -> usize {
        self.pending.len() + self.runs.iter().map(|run| run.1).sum::<usize>()
    }

    fn merge_pending(&mut self) {
        self.pending.sort_unstable_by(f64::total_cmp);
        let mut batch: Vec<Run> = Vec::new();
        for &s in &self.pending {
            match batch.last_mut() {
                Some(last) if last.0.total_cmp(&s) == Ordering::Equal => last.1 += 1,
                _ => batch.push((s, 1)),
            }
        }
        self.pending.clear();
        let old = std::mem::take(&mut self.runs);
        let mut merged = Vec::with_capacity(old.len() + batch.len());
        let (mut a, mut b) = (old.into_iter().peekable(), batch.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match x.0.total_cmp(&y.0) {
                    Ordering::Less => a.next(),
                    Ordering::Greater => b.next(),
                    Ordering::Equal => {
                        let count = y.1;
                        b.next();
                        a.next().map(|(value, n)| (value, n + count))
                    }
                },
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        self.runs = merged;
    }

    fn into_runs(mut self) -> Vec<Run> {
        self.merge_pending();
        self.runs
    }
}

/// Every slope `s` with `lo ≤ s ≤ hi` (by [`f64::total_cmp`]; a missing bound is open), sorted,
/// and the number of slopes below `lo`.
#[derive(Debug, Clone)]
struct Band {
    lo: Option<f64>,
    hi: Option<f64>,
    below: usize,
    slopes: Sorted,
    /// Every slope of the window: pairs of samples at distinct times.
    total: usize,
}

/// Where a slope falls against the band.
enum Place {
    Below,
    Inside,
    Above,
}

impl Band {
    /// Slopes kept on each side of the median when the band is trimmed, for a window of `n`.
    /// A new sample moves the median by at most `n − 1` ranks, usually far fewer; every
    /// in-band insertion moves about this many slopes, so wider costs more per sample, and
    /// narrower rebuilds more often.
    fn half_width(n: usize) -> usize {
        4 * n + 16
    }

    #[inline]
    fn place(&self, s: f64) -> Place {
        if self.lo.is_some_and(|lo| s.total_cmp(&lo) == Ordering::Less) {
            Place::Below
        } else if self
            .hi
            .is_some_and(|hi| s.total_cmp(&hi) == Ordering::Greater)
        {
            Place::Above
        } else {
            Place::Inside
        }
    }

    #[inline]
    fn add(&mut self, s: f64) {
        self.total += 1;
        match self.place(s) {
            Place::Below => self.below += 1,
            Place::Above => {}
            Place::Inside => self.slopes.insert(s),
        }
    }

    /// Removes a slope added before; `false` if it is not where it should be (never, unless
    /// the arithmetic is not deterministic), and the band must be rebuilt.
    #[inline]
    fn remove(&mut self, s: f64) -> bool {
        self.total -= 1;
        match self.place(s) {
            Place::Below => {
                self.below -= 1;
                true
            }
            Place::Above => true,
            Place::Inside => self.slopes.remove(s),
        }
    }

    /// The ranks (0-based, in the sorted slopes) the median needs.
    fn median_ranks(&self) -> Option<(usize, usize)> {
        (self.total > 0).then(|| ((self.total - 1) / 2, self.total / 2))
    }

    /// The median slope, if the band holds its ranks.
    fn median(&mut self) -> Option<f64> {
        let (low, high) = self.median_ranks()?;
        let first = low.checked_sub(self.below)?;
        let second = high - self.below;
        let upper = self.slopes.get(second)?;
        Some(if low == high {
            upper
        } else {
            (self.slopes.get(first)? + upper) / 2.0
        })
    }

    /// Keeps `half_width` slopes on each side of the median ranks, moving the bounds in
    /// (equal slopes stay together: the band must hold every slope between its bounds). In
    /// place: whole runs and blocks are dropped, nothing is copied.
    fn trim(&mut self, half_width: usize) {
        let Some((low, high)) = self.median_ranks() else {
            return;
        };
        let (Some(first), Some(last)) = (low.checked_sub(self.below), high.checked_sub(self.below))
        else {
            return;
        };
        let held = self.slopes.len();
        if last >= held {
            return;
        }
        if let Some(hi) = self
            .slopes
            .truncate_after((last + half_width).min(held - 1))
        {
            self.hi = Some(hi);
        }
        if let Some((lo, dropped)) = self.slopes.drop_before(first.saturating_sub(half_width)) {
            self.lo = Some(lo);
            self.below += dropped;
        }
    }

    /// The band around the median of the slopes of `n` points (`point(i)`, oldest first),
    /// trimmed to [`Band::half_width`] of `window` on each side. One pass over the pairs per
    /// attempt; the bounds come from a sample of the slopes, widened until they hold the
    /// median. `None` without two distinct times.
    fn build(n: usize, point: impl Fn(usize) -> (f64, f64), window: usize) -> Option<Band> {
        let pairs = || (0..n).flat_map(move |i| (i + 1..n).map(move |j| (i, j)));
        let total = pairs()
            .filter(|&(i, j)| slope(point(i), point(j)).is_some())
            .count();
        let (low, high) = ((total.checked_sub(1)?) / 2, total / 2);
        let half_width = Band::half_width(window);
        // Small windows: keep every slope.
        let (mut lo, mut hi) = (None, None);
        if total > 8 * half_width {
            // A sample of slopes from random pairs (a fixed seed: the result does not depend
            // on it, only the time taken), and bounds a few standard deviations of the
            // sample rank away from the median's.
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64);
            let mut sample = Vec::with_capacity(8 * n);
            for _ in 0..64 * n {
                if sample.len() == 8 * n {
                    break;
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let (a, b) = ((rng % n as u64) as usize, ((rng >> 32) % n as u64) as usize);
                let (i, j) = (a.min(b), a.max(b));
                if let Some(s) = (i != j).then(|| slope(point(i), point(j))).flatten() {
                    sample.push(s);
                }
            }
            sample.sort_unstable_by(f64::total_cmp);
            let m = sample.len();
            let margin = 2 * (m as f64).sqrt() as usize + 8;
            let at_low = low * m / total;
            let at_high = high * m / total;
            lo = at_low.checked_sub(margin).map(|i| sample[i]);
            hi = sample.get(at_high + margin).copied();
        }
        loop {
            let mut band = Band {
                lo,
                hi,
                below: 0,
                slopes: Sorted::default(),
                total,
            };
            let mut collected = Collector::default();
            for (i, j) in pairs() {
                if let Some(s) = slope(point(i), point(j)) {
                    match band.place(s) {
                        Place::Below => band.below += 1,
                        Place::Above => {}
                        Place::Inside => collected.push(s),
                    }
                }
            }
            if band.below > low {
                lo = None;
                continue;
            }
            if band.below + collected.len() <= high {
                hi = None;
                continue;
            }
            band.slopes = Sorted::from_runs(collected.into_runs());
            band.trim(half_width);
            return Some(band);
        }
    }
}

/// The last `capacity` samples of one signal, for fitting.
#[derive(Debug, Clone)]
pub struct Window {
    capacity: usize,
    points: VecDeque<(f64, f64)>,
    /// The slopes around the median, kept up to date by `push` once a fit has built it.
    band: Option<Band>,
    /// Reused for the intercepts.
    scratch: Vec<f64>,
}

impl Window {
    /// Keeps the last `capacity` samples (at least two).
    pub fn new(capacity: usize) -> Self {
        Window {
            capacity: capacity.max(2),
            points: VecDeque::with_capacity(capacity.max(2)),
            band: None,
            scratch: Vec::new(),
        }
    }

    /// Adds a sample taken at `t` seconds, dropping the oldest beyond capacity.
    pub fn push(&mut self, t: f64, value: f64) {
        let new = (t, value);
        if self.points.len() == self.capacity {
            let oldest = self.points.pop_front().expect("a full window has samples");
            if let Some(band) = &mut self.band {
                let mut consistent = true;
                for &later in &self.points {
                    if let Some(s) = slope(oldest, later) {
                        consistent &= band.remove(s);
                    }
                }
                if !consistent {
                    self.band = None;
                }
            }
        }
        if let Some(band) = &mut self.band {
            for &earlier in &self.points {
                if let Some(s) = slope(earlier, new) {
                    band.add(s);
                }
            }
        }
        self.points.push_back(new);
    }

    /// Takes the latest samples of `other`, as many as this window holds (after a reload
    /// that changed the window's size).
    pub fn keep_latest(&mut self, other: &Window) {
        let skip = other.points.len().saturating_sub(self.capacity);
        self.points = other.points.iter().skip(skip).copied().collect();
    }

    /// Forgets every sample (after the signal went absent: the trend is unknown).
    pub fn clear(&mut self) {
        self.points.clear();
        self.band = None;
    }

    /// Whether the window holds `capacity` samples.
    pub fn is_full(&self) -> bool {
        self.points.len() == self.capacity
    }

    /// Samples a fit needs: half the window, at least 3. Waiting for a full window after
    /// every run would leave a fast leak unwatched for a whole window.
    pub fn min_samples(&self) -> usize {
        self.capacity.div_ceil(2).max(3).min(self.capacity)
    }

    /// The fit over the samples held, once there are [`Window::min_samples`] of them.
    pub fn fit(&mut self) -> Option<Fit> {
        if self.points.len() < self.min_samples() {
            return None;
        }
        let half_width = Band::half_width(self.capacity);
        let slope = match self.band.as_mut().and_then(Band::median) {
            Some(slope) => {
                let band = self.band.as_mut().expect("just read");
                if band.slopes.distinct() > 4 * half_width {
                    band.trim(half_width);
                }
                slope
            }
            None => {
                let points = &self.points;
                let band = Band::build(points.len(), |i| points[i], self.capacity);
                self.band = band;
                self.band.as_mut()?.median()?
            }
        };
        Some(Fit {
            slope,
            intercept: intercept(self.points.iter().copied(), slope, &mut self.scratch)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The fit as it was first written: every slope in one vector, sorted. What the band must
    /// reproduce exactly.
    fn theil_sen_by_sorting(points: &[(f64, f64)]) -> Option<Fit> {
        fn sorted_median(values: &mut [f64]) -> Option<f64> {
            if values.is_empty() {
                return None;
            }
            values.sort_by(f64::total_cmp);
            let middle = values.len() / 2;
            Some(if values.len() % 2 == 1 {
                values[middle]
            } else {
                (values[middle - 1] + values[middle]) / 2.0
            })
        }
        let mut slopes = Vec::new();
        for (i, &(t1, v1)) in points.iter().enumerate() {
            for &(t2, v2) in &points[i + 1..] {
                if t2 != t1 {
                    slopes.push((v2 - v1) / (t2 - t1));
                }
            }
        }
        let slope = sorted_median(&mut slopes)?;
        let mut intercepts: Vec<f64> = points.iter().map(|&(t, v)| v - slope * t).collect();
        let intercept = sorted_median(&mut intercepts)?;
        Some(Fit { slope, intercept })
    }

    fn same(a: Option<Fit>, b: Option<Fit>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => {
                a.slope.to_bits() == b.slope.to_bits()
                    && a.intercept.to_bits() == b.intercept.to_bits()
            }
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn a_straight_line_is_fitted_exactly() {
        let points: Vec<_> = (0..10).map(|i| (i as f64, 0.5 + 0.01 * i as f64)).collect();
        let fit = theil_sen(&points).unwrap();
        assert!((fit.slope - 0.01).abs() < 1e-12);
        assert!((fit.intercept - 0.5).abs() < 1e-12);
        // At t = 9 the line is at 0.59: 0.95 is 36 s away.
        assert!((fit.seconds_to_reach(0.95, 9.0).unwrap() - 36.0).abs() < 1e-9);
    }

    #[test]
    fn one_spike_does_not_move_the_fit() {
        let mut points: Vec<_> = (0..10).map(|i| (i as f64, 0.5)).collect();
        points[9].1 = 0.99; // a single wild sample at the end
        let fit = theil_sen(&points).unwrap();
        assert_eq!(fit.slope, 0.0);
        assert_eq!(fit.seconds_to_reach(0.95, 9.0), None, "flat: never reached");
    }

    #[test]
    fn falling_or_reached_signals() {
        let falling = Fit {
            slope: -0.1,
            intercept: 1.0,
        };
        assert_eq!(falling.seconds_to_reach(2.0, 0.0), None);
        assert_eq!(falling.seconds_to_reach(0.5, 0.0), Some(0.0));
        assert_eq!(
            theil_sen(&[(1.0, 1.0), (1.0, 2.0)]),
            None,
            "no distinct times"
        );
        assert_eq!(theil_sen(&[]), None);
    }

    #[test]
    fn the_window_fits_from_half_full_and_keeps_the_newest() {
        let mut window = Window::new(10);
        assert_eq!(window.min_samples(), 5);
        for i in 0..4 {
            window.push(i as f64, i as f64);
        }
        assert_eq!(window.fit(), None, "4 of 10 samples: too few");
        window.push(4.0, 4.0);
        assert_eq!(window.fit().unwrap().slope, 1.0);
        assert_eq!(Window::new(4).min_samples(), 3, "never fewer than 3");
        assert_eq!(Window::new(2).min_samples(), 2, "nor more than the window");

        let mut window = Window::new(4);
        for i in 3..9 {
            window.push(i as f64, 2.0 * i as f64);
        }
        let fit = window.fit().unwrap();
        assert_eq!(fit.slope, 2.0, "only the last 4 samples (slope 2) count");
        window.clear();
        assert!(!window.is_full());
    }

    /// A long window whose trend turns: the band is rebuilt as the median leaves it, and every
    /// fit equals the full sort's, bit for bit.
    #[test]
    fn a_long_window_through_a_change_of_trend_matches_the_full_sort() {
        let mut window = Window::new(120);
        let mut held: VecDeque<(f64, f64)> = VecDeque::new();
        let mut rng = 12345u64;
        for i in 0..700u64 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (rng >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            let t = i as f64 * 0.1;
            let value = match i {
                0..250 => 0.2 + 0.001 * t,
                250..450 => 0.25 - 0.004 * t,
                _ => 0.1,
            } + noise * 0.01;
            window.push(t, value);
            held.push_back((t, value));
            if held.len() > 120 {
                held.pop_front();
            }
            let expected = if held.len() >= window.min_samples() {
                theil_sen_by_sorting(held.make_contiguous())
            } else {
                None
            };
            // Not every sample: the full sort is slow; but runs of consecutive ones.
            if i % 5 < 2 || i > 680 {
                assert!(same(window.fit(), expected), "sample {i}");
            }
        }
        let band = window.band.as_ref().unwrap();
        assert!(
            band.slopes.distinct() <= 4 * Band::half_width(120) + 120,
            "the band stays O(window): {}",
            band.slopes.distinct()
        );
    }

    /// A signal that holds still but for blips: most pairs have the same slope (0), which the
    /// band keeps as one run, not once per pair (half a million times at `n = 1000`).
    #[test]
    fn a_still_signal_keeps_its_equal_slopes_as_one_run() {
        let n = 1000;
        let mut window = Window::new(n);
        let mut held: Vec<(f64, f64)> = Vec::new();
        for i in 0..n + 200 {
            // Memory in whole pages: the same value, with a blip one sample in 97.
            let value = if i % 97 == 0 { 0.401 } else { 0.4 };
            window.push(i as f64, value);
            held.push((i as f64, value));
        }
        let fit = window.fit();
        assert!(same(fit, theil_sen_by_sorting(&held[held.len() - n..])));
        assert_eq!(fit.unwrap().slope, 0.0);
        let band = window.band.as_ref().unwrap();
        assert!(
            band.slopes.distinct() < 4 * Band::half_width(n),
            "{} distinct of {}",
            band.slopes.distinct(),
            band.slopes.len()
        );
        // The runs hold far more slopes than distinct values: the zeros are one run.
        assert!(band.slopes.len() > 100 * band.slopes.distinct());
        // And the window moves on, slope by slope, through the same runs.
        for i in n + 200..n + 700 {
            let value = if i % 97 == 0 { 0.401 } else { 0.4 };
            window.push(i as f64, value);
            held.push((i as f64, value));
        }
        assert!(same(
            window.fit(),
            theil_sen_by_sorting(&held[held.len() - n..])
        ));
    }

    proptest! {
        /// With fewer than half the samples corrupted, the slope stays that of the line.
        #[test]
        fn robust_to_a_minority_of_outliers(
            slope in -5.0f64..5.0,
            intercept in -100.0f64..100.0,
            outliers in proptest::collection::vec((0usize..21, -1e6f64..1e6), 0..5),
        ) {
            let mut points: Vec<_> =
                (0..21).map(|i| (i as f64, intercept + slope * i as f64)).collect();
            for (index, value) in outliers {
                points[index].1 = value;
            }
            let fit = theil_sen(&points).unwrap();
            prop_assert!((fit.slope - slope).abs() < 1e-6 + slope.abs() * 0.5,
                "slope {} fitted as {}", slope, fit.slope);
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Any stream of samples (repeated times, repeated and extreme values, windows small
        /// and large enough to sample): the window's fit after each push is the full sort's.
        #[test]
        fn the_window_fit_equals_the_full_sort(
            capacity in 2usize..120,
            steps in proptest::collection::vec((0u8..4, -1e3f64..1e3, 0u8..8), 1..300),
            fit_every in 1usize..8,
        ) {
            let mut window = Window::new(capacity);
            let mut held: VecDeque<(f64, f64)> = VecDeque::new();
            let mut t = 0.0;
            for (index, (dt, value, kind)) in steps.into_iter().enumerate() {
                t += f64::from(dt) * 0.5; // dt = 0: a repeated time
                let value = match kind {
                    0 => 0.0,
                    1 => 1.0,
                    2 => value.round(),
                    _ => value,
                };
                window.push(t, value);
                held.push_back((t, value));
                if held.len() > window.capacity {
                    held.pop_front();
                }
                if index % fit_every == 0 {
                    let expected = if held.len() >= window.min_samples() {
                        theil_sen_by_sorting(held.make_contiguous())
                    } else {
                        None
                    };
                    let got = window.fit();
                    prop_assert!(same(got, expected), "step {}: {:?} vs {:?}", index, got, expected);
                    let points: Vec<_> = held.iter().copied().collect();
                    prop_assert!(same(theil_sen(&points), theil_sen_by_sorting(&points)));
                }
            }
        }
    }
}
