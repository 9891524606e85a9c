//! The media library: generated items cut into chunks, and the chunk cache in front of the
//! generator.
//!
//! Generating a chunk stands in for transcoding or fetching a torrent piece: it costs CPU
//! and a fresh allocation of one chunk. The cache keeps every chunk it is given room for, so
//! memory grows with the distinct content clients ask for until its capacity is reached:
//! `--cache-mb` at first, lowered by every trim and recovering slowly afterwards
//! ([`AdaptiveCapacity`]).
//!
//! The service enforces that capacity itself, on every insert, from an exact count of the
//! cached bytes: moka's own size bound (set to the ceiling) is applied lazily, up to 64
//! inserts late, which with 2 MiB chunks is 128 MiB over a small capacity.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::{Body, Bytes};
use futures_util::stream;
use moka::sync::Cache;
use serde::Serialize;

use crate::capacity::{AdaptiveCapacity, Recovery};
use crate::range::ByteRange;

/// Chunk cache key: (media id, chunk index).
type ChunkKey = (String, u64);

/// Generated media items served through a byte-weighted chunk cache.
pub struct MediaLibrary {
    cache: Cache<ChunkKey, Bytes>,
    /// Sum of the lengths of the chunks in the cache's table, kept exact by the insert path
    /// and the removal listener (moka's `weighted_size` lags behind its pending writes).
    cached_bytes: Arc<AtomicU64>,
    /// The capacity in force; the lock also serialises evictions down to it.
    capacity: Mutex<AdaptiveCapacity>,
    chunk_bytes: u64,
    media_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The cache's counters, as `/stats` shows them.
#[derive(Debug, Serialize)]
pub struct CacheStats {
    pub cache_entries: u64,
    /// Sum of the cached chunks' lengths.
    pub cache_weighted_bytes: u64,
    /// The capacity in force: `--cache-mb`, lowered by trims, recovering over time.
    pub cache_capacity_bytes: u64,
    /// `--cache-mb`: the most the capacity recovers to.
    pub cache_max_capacity_bytes: u64,
    pub cache_hits: u64,
    /// Chunks generated because they were not cached.
    pub cache_misses: u64,
}

/// What [`MediaLibrary::trim`] removed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TrimCount {
    pub entries_before: u64,
    pub entries_after: u64,
    pub entries_removed: u64,
    /// Drop in the cache's weighted size. The memory itself is released once no response
    /// still streams those chunks.
    pub bytes_freed: u64,
    /// The cache's capacity before the trim.
    pub capacity_before_bytes: u64,
    /// The capacity after it: what the cache may grow back to until it recovers.
    pub capacity_after_bytes: u64,
}

impl MediaLibrary {
    /// A library of items of `media_bytes` each, cut into `chunk_bytes` chunks, caching at
    /// most `capacity_bytes` of chunks, and after a trim less, recovering as `recovery` says.
    ///
    /// `chunk_bytes` must be at least 1 and fit in a `u32` (the cache weighs in `u32`).
    pub fn new(
        capacity_bytes: u64,
        chunk_bytes: u64,
        media_bytes: u64,
        recovery: Recovery,
    ) -> Self {
        assert!(
            chunk_bytes > 0 && u32::try_from(chunk_bytes).is_ok(),
            "chunk size is validated by the command line"
        );
        let cached_bytes = Arc::new(AtomicU64::new(0));
        let removed = Arc::clone(&cached_bytes);
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_key: &ChunkKey, chunk: &Bytes| {
                u32::try_from(chunk.len()).unwrap_or(u32::MAX)
            })
            // Called at once for invalidations, during housekeeping for moka's own evictions.
            .eviction_listener(move |_key, chunk: Bytes, _cause| {
                removed.fetch_sub(chunk.len() as u64, Ordering::Relaxed);
            })
            .build();
        Self {
            cache,
            cached_bytes,
            capacity: Mutex::new(AdaptiveCapacity::new(capacity_bytes, chunk_bytes, recovery)),
            chunk_bytes,
            media_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Length of every item in bytes.
    pub fn media_bytes(&self) -> u64 {
        self.media_bytes
    }

    /// The bytes of `range` of item `id`, streamed one chunk (or part of one) at a time.
    ///
    /// The body reports an I/O error, which aborts the response, if a chunk's generation
    /// task fails.
    pub fn body(self: &Arc<Self>, id: String, range: ByteRange) -> Body {
        let state = (Arc::clone(self), id, Some(range.first));
        let chunks = stream::unfold(state, move |(library, id, next)| async move {
            let offset = next.filter(|&offset| offset <= range.last)?;
            let index = offset / library.chunk_bytes;
            let chunk_start = index * library.chunk_bytes;
            match library.chunk(&id, index).await {
                Ok(chunk) => {
                    let chunk_last = chunk_start + chunk.len() as u64 - 1;
                    let last = range.last.min(chunk_last);
                    let part = chunk.slice(
                        usize::try_from(offset - chunk_start).expect("offset within a chunk")
                            ..=usize::try_from(last - chunk_start).expect("offset within a chunk"),
                    );
                    Some((Ok(part), (library, id, Some(last + 1))))
                }
                Err(error) => Some((Err(error), (library, id, None))),
            }
        });
        Body::from_stream(chunks)
    }

    /// Chunk `index` of item `id`, from the cache or freshly generated.
    async fn chunk(self: &Arc<Self>, id: &str, index: u64) -> io::Result<Bytes> {
        let key = (id.to_owned(), index);
        if let Some(chunk) = self.cache.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(chunk);
        }
        // A miss generates off the async workers; `get_with` makes concurrent requests for
        // the same chunk wait for one generation instead of each doing it.
        let library = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let length = library.chunk_len(index);
            let seed = chunk_seed(&key.0, index);
            let mut generated = false;
            let chunk = library.cache.get_with(key, || {
                generated = true;
                let chunk = generate_chunk(seed, length);
                library
                    .cached_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                chunk
            });
            if generated {
                library.misses.fetch_add(1, Ordering::Relaxed);
                library.evict_to_capacity();
            } else {
                library.hits.fetch_add(1, Ordering::Relaxed);
            }
            chunk
        })
        .await
        .map_err(io::Error::other)
    }

    /// Length of chunk `index`: a full chunk except possibly the last.
    fn chunk_len(&self, index: u64) -> usize {
        let start = index * self.chunk_bytes;
        let length = self.chunk_bytes.min(self.media_bytes.saturating_sub(start));
        usize::try_from(length).expect("chunk size fits in u32")
    }

    /// Current counters. Blocks briefly: it first applies the cache's pending writes so
    /// that the counts are exact.
    pub fn stats(&self) -> CacheStats {
        self.cache.run_pending_tasks();
        let capacity = self.lock_capacity();
        CacheStats {
            cache_entries: self.cache.entry_count(),
            cache_weighted_bytes: self.cache.weighted_size(),
            cache_capacity_bytes: capacity.current_bytes(),
            cache_max_capacity_bytes: capacity.ceiling_bytes(),
            cache_hits: self.hits.load(Ordering::Relaxed),
            cache_misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Invalidates `ceil(entries × fraction)` cached chunks (`0 < fraction ≤ 1`) and lowers
    /// the capacity to `(1 − fraction) ×` what was cached (see [`AdaptiveCapacity::lower`]),
    /// so the cache does not refill to its old size before it recovers. Blocking.
    ///
    /// moka exposes no recency order, so the chunks removed are an arbitrary sample: the
    /// hash table's iteration order.
    pub fn trim(&self, fraction: f64) -> TrimCount {
        let mut capacity = self.lock_capacity();
        self.cache.run_pending_tasks();
        let entries_before = self.cache.entry_count();
        let bytes_before = self.cache.weighted_size();
        let lowered = capacity.lower(
            fraction,
            self.cached_bytes.load(Ordering::Relaxed),
            Instant::now(),
        );
        let target = (entries_before as f64 * fraction).ceil() as usize;
        let victims: Vec<Arc<ChunkKey>> =
            self.cache.iter().map(|(key, _)| key).take(target).collect();
        for key in &victims {
            self.cache.invalidate(key.as_ref());
        }
        self.evict_down_to(lowered.after_bytes);
        // Removed values are released when the pending removals are applied.
        self.cache.run_pending_tasks();
        let entries_after = self.cache.entry_count();
        TrimCount {
            entries_before,
            entries_after,
            entries_removed: entries_before.saturating_sub(entries_after),
            bytes_freed: bytes_before.saturating_sub(self.cache.weighted_size()),
            capacity_before_bytes: lowered.before_bytes,
            capacity_after_bytes: lowered.after_bytes,
        }
    }

    /// Grows the capacity one step if no trim came within the last recovery period (the
    /// service calls this once per period); returns the new capacity when it grew.
    pub fn recover(&self) -> Option<u64> {
        self.lock_capacity().recover(Instant::now())
    }

    /// After an insert: evicts chunks until the cache holds no more than its capacity.
    fn evict_to_capacity(&self) {
        let capacity = self.lock_capacity();
        self.evict_down_to(capacity.current_bytes());
    }

    /// Invalidates arbitrary chunks (hash table order) until at most `limit` bytes are
    /// cached. The caller holds the capacity lock, so two inserts do not both evict for the
    /// same excess.
    fn evict_down_to(&self, limit: u64) {
        if self.cached_bytes.load(Ordering::Relaxed) <= limit {
            return;
        }
        for (key, _) in self.cache.iter() {
            self.cache.invalidate(key.as_ref());
            if self.cached_bytes.load(Ordering::Relaxed) <= limit {
                break;
            }
        }
    }

    fn lock_capacity(&self) -> std::sync::MutexGuard<'_, AdaptiveCapacity> {
        // The capacity is plain numbers, consistent after any panic mid-update.
        self.capacity.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fills `length` bytes with a xorshift64 sequence from `seed`: the content is checkable and
/// different for every (id, chunk).
pub fn generate_chunk(seed: u64, length: usize) -> Bytes {
    let mut state = seed;
    let mut data = vec![0u8; length];
    for word in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
    Bytes::from(data)
}

/// A non-zero xorshift seed from the FNV-1a hash of `id` and the chunk index.
fn chunk_seed(id: &str, index: u64) -> u64 {
    let id_hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    splitmix64(id_hash ^ splitmix64(index)) | 1
}

fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
