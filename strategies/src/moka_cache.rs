//! [`Trim`] for [`moka::sync::Cache`] (feature `moka`, on by default), so `cache-trim` works on
//! moka caches out of the box, and [`WeighedInBytes`] for caches whose weigher returns bytes.
//!
//! | `Trim` method | what it does to a moka cache |
//! |---|---|
//! | [`size`](Trim::size) | `run_pending_tasks()`, then `entry_count()`; bytes only through [`WeighedInBytes`] |
//! | [`expire`](Trim::expire) | `run_pending_tasks()`, in which moka drops entries whose TTL/TTI has passed |
//! | [`evict`](Trim::evict) | `invalidate`s ⌈entries × fraction⌉ keys in moka's iteration order, then `run_pending_tasks()` |
//!
//! # Expiry is as prompt as moka
//!
//! Cache-wide `time_to_live`/`time_to_idle` expiry is exact: an entry past it is removed by
//! the next [`Trim::expire`]. Per-entry expiry (`expire_after` with an `Expiry`) runs on
//! moka's timer wheel, whose finest buckets span about a second, so such entries may
//! outlive their deadline by up to a second or so before `expire` can remove them.
//!
//! moka applies recent inserts in the same housekeeping that drops expired entries, so the
//! count `expire` reports is the net drop: expired entries minus entries inserted since the
//! cache's last housekeeping (never below zero). [`Trim::size`] runs that housekeeping too;
//! `cache-trim` therefore calls `expire` before it first measures a cache.
//!
//! # Which entries are evicted
//!
//! moka 0.12 has no public API to evict "the N least valuable entries": its LRU/LFU deques
//! are private and its capacity cannot be lowered at run time. So [`Trim::evict`] takes keys
//! in the order [`Cache::iter`] yields them, which follows the internal hash table, not
//! recency or frequency: in effect a sample spread by key hash. Hot entries can be evicted;
//! they are reloaded on the next miss. Entries removed this way reach the eviction listener
//! with [`RemovalCause::Explicit`](moka::notification::RemovalCause::Explicit).
//!
//! # Persisting what a trim evicts
//!
//! moka hands every removed entry, by value, to the cache's eviction listener before it drops
//! it, so nothing a trim removes has to be lost: archive it there. The listener runs on the
//! thread that trims (`cache-trim` runs on tokio's blocking pool): keep it short, or send the
//! value to a task that writes it to your database.
//!
//! ```
//! use std::sync::{mpsc, Arc};
//! use moka::notification::RemovalCause;
//! use moka::sync::Cache;
//! use perfpilot_strategies::Trim;
//!
//! let (archive, archived) = mpsc::channel::<(Arc<String>, Vec<u8>)>();
//! let cache: Cache<String, Vec<u8>> = Cache::builder()
//!     .max_capacity(10_000)
//!     .eviction_listener(move |key, value, cause| {
//!         // Explicit: trimmed (or invalidated); Expired: TTL/TTI; Size: over capacity.
//!         if matches!(cause, RemovalCause::Explicit | RemovalCause::Expired | RemovalCause::Size) {
//!             let _ = archive.send((key, value)); // a writer task persists it
//!         }
//!     })
//!     .build();
//! for i in 0..100 {
//!     cache.insert(format!("room-{i}"), vec![0; 64]);
//! }
//!
//! let report = cache.evict(0.25);
//!
//! assert_eq!(report.entries_removed, 25);
//! assert_eq!(cache.entry_count(), 75);
//! let saved: Vec<_> = archived.try_iter().collect();
//! assert_eq!(saved.len(), 25);
//! assert!(saved.iter().all(|(key, _)| !cache.contains_key(key.as_str())));
//! ```
//!
//! # Async caches
//!
//! There is no `Trim` for `moka::future::Cache`: its `invalidate` and `run_pending_tasks` are
//! `async` and `Trim` is synchronous, and blocking on them inside the agent's tokio runtime
//! would stall or deadlock it. Trim a future cache from a [`Strategy`](crate::Strategy) of
//! your own, whose `run` is async and can `.await` `invalidate` and `run_pending_tasks`.

use std::fmt;
use std::hash::{BuildHasher, Hash};

use moka::sync::Cache;

use crate::registry::{CacheSize, Trim, TrimReport};

/// A moka cache whose weigher returns each entry's size in bytes, so its weighted size is a
/// byte count: [`Trim::size`] reports it as `bytes` and trims report the drop in it as
/// `bytes_freed`. A plain [`Cache`] reports `bytes: None`, since its weights may mean
/// anything (without a weigher every entry weighs 1).
///
/// Cloning is cheap, as for [`Cache`]: register a clone and keep using the original.
///
/// ```
/// use moka::sync::Cache;
/// use perfpilot_strategies::{Trim, WeighedInBytes};
///
/// let frames: Cache<u64, Vec<u8>> = Cache::builder()
///     .max_capacity(64 * 1024 * 1024) // 64 MiB
///     .weigher(|_key, frame: &Vec<u8>| frame.len().try_into().unwrap_or(u32::MAX))
///     .build();
/// for i in 0..8 {
///     frames.insert(i, vec![0; 1024]);
/// }
/// let trimmed = WeighedInBytes(frames.clone());
///
/// assert_eq!(trimmed.size().bytes, Some(8 * 1024));
/// assert_eq!(trimmed.evict(0.5).bytes_freed, Some(4 * 1024));
/// assert_eq!(frames.weighted_size(), 4 * 1024);
/// ```
#[derive(Clone)]
pub struct WeighedInBytes<C>(pub C);

impl<K, V, S> Trim for Cache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    fn size(&self) -> CacheSize {
        settle(self).size(Weights::NotBytes)
    }

    fn expire(&self) -> TrimReport {
        expire(self, Weights::NotBytes)
    }

    fn evict(&self, fraction: f64) -> TrimReport {
        evict(self, fraction, Weights::NotBytes)
    }
}

impl<K, V, S> Trim for WeighedInBytes<Cache<K, V, S>>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    fn size(&self) -> CacheSize {
        settle(&self.0).size(Weights::Bytes)
    }

    fn expire(&self) -> TrimReport {
        expire(&self.0, Weights::Bytes)
    }

    fn evict(&self, fraction: f64) -> TrimReport {
        evict(&self.0, fraction, Weights::Bytes)
    }
}

/// Shows the counts, not the entries (moka's own `Debug` lists every entry).
impl<K, V, S> fmt::Debug for WeighedInBytes<Cache<K, V, S>>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeighedInBytes")
            .field("name", &self.0.name())
            .field("entry_count", &self.0.entry_count())
            .field("weighted_size_bytes", &self.0.weighted_size())
            .finish()
    }
}

/// Whether a cache's weights are bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Weights {
    Bytes,
    NotBytes,
}

/// moka's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Reading {
    entries: u64,
    weight: u64,
}

impl Reading {
    fn of<K, V, S>(cache: &Cache<K, V, S>) -> Reading
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Clone + Send + Sync + 'static,
    {
        Reading {
            entries: cache.entry_count(),
            weight: cache.weighted_size(),
        }
    }

    fn size(self, weights: Weights) -> CacheSize {
        CacheSize {
            entries: self.entries,
            bytes: (weights == Weights::Bytes).then_some(self.weight),
        }
    }

    /// What went between `self` and `after`; zero, not negative, if inserts outpaced removals.
    fn removed_until(self, after: Reading, weights: Weights) -> TrimReport {
        TrimReport {
            entries_removed: self.entries.saturating_sub(after.entries),
            bytes_freed: (weights == Weights::Bytes)
                .then_some(self.weight.saturating_sub(after.weight)),
        }
    }
}

/// Applies pending writes and removals, so that moka's counters are exact, and reads them.
fn settle<K, V, S>(cache: &Cache<K, V, S>) -> Reading
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    cache.run_pending_tasks();
    Reading::of(cache)
}

/// How many housekeeping passes [`expire`] makes at most. A pass stops early after 100 ms when
/// the cache has an eviction listener, leaving the rest of the expired entries for the next.
const MAX_EXPIRE_PASSES: usize = 8;

/// Runs moka's housekeeping, which drops expired entries. The counters read before it may
/// lag behind recent inserts (moka applies them in the same housekeeping), so the report is
/// the net drop: expired entries minus entries inserted since the last housekeeping.
fn expire<K, V, S>(cache: &Cache<K, V, S>, weights: Weights) -> TrimReport
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    let before = Reading::of(cache);
    let mut after = settle(cache);
    for _ in 1..MAX_EXPIRE_PASSES {
        let next = settle(cache);
        if next.entries >= after.entries {
            break;
        }
        after = next;
    }
    before.removed_until(after, weights)
}

/// Invalidates ⌈entries × fraction⌉ keys in iteration order (see the module docs for why not
/// in LRU/LFU order), then settles the counters and reports the drop.
fn evict<K, V, S>(cache: &Cache<K, V, S>, fraction: f64, weights: Weights) -> TrimReport
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    let before = settle(cache);
    let wanted = share(before.entries, fraction);
    // Collect first: invalidating while walking the table could skip or revisit keys.
    let keys: Vec<_> = cache
        .iter()
        .take(usize::try_from(wanted).unwrap_or(usize::MAX))
        .map(|(key, _value)| key)
        .collect();
    for key in &keys {
        cache.invalidate(&**key);
    }
    before.removed_until(settle(cache), weights)
}

/// ⌈entries × fraction⌉, with `fraction` clamped to 0..=1 (NaN counts as 0).
fn share(entries: u64, fraction: f64) -> u64 {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    // f64 is exact up to 2^53 entries, far beyond any cache in memory.
    ((entries as f64 * fraction).ceil() as u64).min(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_rounds_up_and_stays_in_bounds() {
        assert_eq!(share(1000, 0.25), 250);
        assert_eq!(share(10, 0.25), 3);
        assert_eq!(share(1, 0.01), 1);
        assert_eq!(share(0, 0.5), 0);
        assert_eq!(share(7, 1.5), 7);
        assert_eq!(share(7, -1.0), 0);
        assert_eq!(share(7, f64::NAN), 0);
    }

    #[test]
    fn debug_shows_counts_not_entries() {
        let cache: Cache<u32, String> = Cache::new(10);
        cache.insert(1, "secret".into());
        cache.run_pending_tasks();
        let shown = format!("{:?}", WeighedInBytes(cache));
        assert!(shown.contains("entry_count: 1"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
