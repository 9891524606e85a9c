//! Per-thread counter shards and the thread slots that own them.
//!
//! Every thread that records claims a process-wide slot number on its first request, the
//! lowest free one, and frees it when it exits. A [`Shards`] set has one shard per slot below
//! its size, written only by the thread holding that slot: its counters are bumped with a plain
//! load and store (no locked instruction, no cache line shared with another writer), which is
//! what keeps a request at a few nanoseconds. Threads without a slot of their own (more threads
//! than slots) share one more shard and bump it with `fetch_add`.
//!
//! The reader (one sampler, once per window) loads every counter with `Relaxed` and sums the
//! shards; all counters are cumulative and wrap, so deltas between readings are exact even
//! when a request starts on one thread and ends on another.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::histogram::{bucket_index, BUCKETS};

/// Slots a process hands out; threads beyond this share the shared shard.
const MAX_SLOTS: usize = 256;

/// Which slots are taken, process wide.
static SLOTS_TAKEN: [AtomicBool; MAX_SLOTS] = [const { AtomicBool::new(false) }; MAX_SLOTS];

/// [`SLOT`] when no slot was free or the thread is exiting.
const NO_SLOT: usize = usize::MAX;

thread_local! {
    /// This thread's slot plus one: 0 before it claimed one, [`NO_SLOT`] when none was free
    /// or the thread is exiting. Constant-initialized and without a destructor, so reading it
    /// is one thread-local load, with no registration check: it is read twice a request.
    static SLOT: Cell<usize> = const { Cell::new(0) };
    /// Frees the slot when the thread exits; set only when a slot is claimed (the cold path).
    static RELEASE: SlotRelease = const { SlotRelease(Cell::new(None)) };
}

/// A thread's claim on a slot, released when the thread exits.
struct SlotRelease(Cell<Option<usize>>);

impl Drop for SlotRelease {
    fn drop(&mut self) {
        // From now on this thread writes to the shared shard (with `fetch_add`), even from
        // other thread-locals' destructors that still record.
        SLOT.with(|slot| slot.set(NO_SLOT));
        if let Some(slot) = self.0.take() {
            // Release: the next owner of the slot sees every counter this thread wrote.
            SLOTS_TAKEN[slot].store(false, Ordering::Release);
        }
    }
}

fn claim_slot() -> Option<usize> {
    SLOTS_TAKEN.iter().position(|taken| {
        taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })
}

/// This thread's slot, claimed on first use; `None` when every slot is taken or the thread is
/// exiting (its thread-locals are being destroyed).
#[inline]
fn current_slot() -> Option<usize> {
    match SLOT.with(Cell::get) {
        0 => claim(),
        NO_SLOT => None,
        slot => Some(slot - 1),
    }
}

#[cold]
fn claim() -> Option<usize> {
    // The release is registered first: a thread already exiting claims nothing.
    let claimed = RELEASE
        .try_with(|release| {
            let slot = claim_slot();
            release.0.set(slot);
            slot
        })
        .ok()
        .flatten();
    SLOT.with(|slot| slot.set(claimed.map_or(NO_SLOT, |claimed| claimed + 1)));
    claimed
}

/// The counters of one shard. Cache-line aligned (128 bytes: two lines, for the adjacent-line
/// prefetcher) so two shards never share a line.
#[repr(align(128))]
pub(crate) struct Shard {
    pub(crate) started: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) response_bytes: AtomicU64,
    pub(crate) latency_sum_nanos: AtomicU64,
    pub(crate) buckets: [AtomicU64; BUCKETS],
}

impl Shard {
    fn new() -> Shard {
        Shard {
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            latency_sum_nanos: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }
}

/// One shard as the current thread may write it.
#[derive(Clone, Copy)]
pub(crate) struct ShardWriter<'a> {
    shard: &'a Shard,
    /// Whether this thread is the only writer (plain load and store suffice).
    exclusive: bool,
}

impl ShardWriter<'_> {
    /// Adds `n` to `counter`, wrapping; returns the value before.
    #[inline]
    fn add(self, counter: &AtomicU64, n: u64) -> u64 {
        if self.exclusive {
            let before = counter.load(Ordering::Relaxed);
            counter.store(before.wrapping_add(n), Ordering::Relaxed);
            before
        } else {
            counter.fetch_add(n, Ordering::Relaxed)
        }
    }

    /// Counts a started request; returns how many this shard had started before it.
    #[inline]
    pub(crate) fn start(self) -> u64 {
        self.add(&self.shard.started, 1)
    }

    /// Counts a request that ended with a response or an error.
    #[inline]
    pub(crate) fn complete(
        self,
        latency_nanos: Option<u64>,
        response_bytes: Option<u64>,
        failed: bool,
    ) {
        self.add(&self.shard.completed, 1);
        if failed {
            self.add(&self.shard.failed, 1);
        }
        if let Some(bytes) = response_bytes {
            self.add(&self.shard.response_bytes, bytes);
        }
        if let Some(nanos) = latency_nanos {
            self.add(&self.shard.latency_sum_nanos, nanos);
            self.add(&self.shard.buckets[bucket_index(nanos)], 1);
        }
    }

    /// Counts a request dropped before it ended.
    #[cold]
    pub(crate) fn cancel(self) {
        self.add(&self.shard.cancelled, 1);
    }
}

/// The shards of one [`RequestMetrics`](super::RequestMetrics): one per slot below `owned`,
/// then the shared one.
pub(crate) struct Shards {
    shards: Box<[Shard]>,
}

impl Shards {
    /// `owned` shards for the first `owned` slots, plus the shared one.
    pub(crate) fn new(owned: usize) -> Shards {
        let owned = owned.min(MAX_SLOTS);
        Shards {
            shards: (0..=owned).map(|_| Shard::new()).collect(),
        }
    }

    /// The shard the current thread writes.
    #[inline]
    pub(crate) fn writer(&self) -> ShardWriter<'_> {
        let shared = self.shards.len() - 1;
        match current_slot() {
            Some(slot) if slot < shared => ShardWriter {
                shard: &self.shards[slot],
                exclusive: true,
            },
            _ => ShardWriter {
                shard: &self.shards[shared],
                exclusive: false,
            },
        }
    }

    /// Every shard, for the reader.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Shard> {
        self.shards.iter()
    }

    /// Number of shards, the shared one included.
    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_slot_and_frees_it_on_exit() {
        let mine = current_slot();
        assert!(mine.is_some());
        assert_eq!(current_slot(), mine, "claimed once, kept");
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tx.send(current_slot()).unwrap();
            done_rx.recv().unwrap();
        });
        let theirs = rx.recv().unwrap().unwrap();
        assert_ne!(Some(theirs), mine, "two live threads never share a slot");
        assert!(SLOTS_TAKEN[theirs].load(Ordering::Acquire));
        done_tx.send(()).unwrap();
        thread.join().unwrap();
        // Freed on exit (another test's thread may have claimed it since: then it is theirs).
    }

    #[test]
    fn shards_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<Shard>(), 128);
        assert_eq!(std::mem::size_of::<Shard>() % 128, 0);
    }

    #[test]
    fn a_thread_without_an_owned_shard_writes_the_shared_one() {
        let shards = Shards::new(0);
        assert_eq!(shards.len(), 1);
        let writer = shards.writer();
        assert!(!writer.exclusive);
        assert_eq!(writer.start(), 0);
        assert_eq!(writer.start(), 1);
    }
}
