//! What an application registers with the agent for the built-in strategies to act on: its
//! caches ([`Trim`], shrunk by `cache-trim`) and its connection pools ([`Reap`], thinned out by
//! `connection-reap`), held by name in the [`Registry`] every strategy's
//! [`Context`](crate::Context) carries.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Caches and connection pools registered with the agent, by name.
#[derive(Default, Clone)]
pub struct Registry {
    /// Caches `cache-trim` acts on.
    pub caches: Vec<(String, Arc<dyn Trim>)>,
    /// Connection pools `connection-reap` acts on.
    pub pools: Vec<(String, Arc<dyn Reap>)>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field(
                "caches",
                &self.caches.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "pools",
                &self.pools.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A cache the agent can shrink. Object safe; implement it for your own caches.
///
/// ```
/// use std::sync::Mutex;
/// use perfpilot_strategies::{CacheSize, Trim, TrimReport};
///
/// #[derive(Default)]
/// struct Lru(Mutex<Vec<Vec<u8>>>); // oldest first
///
/// impl Trim for Lru {
///     fn size(&self) -> CacheSize {
///         let items = self.0.lock().unwrap();
///         CacheSize { entries: items.len() as u64, bytes: Some(items.iter().map(|v| v.len() as u64).sum()) }
///     }
///     fn expire(&self) -> TrimReport {
///         TrimReport::default() // no TTLs here
///     }
///     fn evict(&self, fraction: f64) -> TrimReport {
///         let mut items = self.0.lock().unwrap();
///         let n = (((items.len() as f64) * fraction).ceil() as usize).min(items.len());
///         let bytes = items.drain(..n).map(|v| v.len() as u64).sum();
///         TrimReport { entries_removed: n as u64, bytes_freed: Some(bytes) }
///     }
/// }
/// ```
pub trait Trim: Send + Sync {
    /// How big the cache is now. May run pending housekeeping first (moka's does, which also
    /// drops expired entries), so `cache-trim` calls [`expire`](Trim::expire) before it measures.
    fn size(&self) -> CacheSize;
    /// Drops entries that are already stale (expired TTL/TTI) and does pending housekeeping.
    fn expire(&self) -> TrimReport;
    /// Evicts about `fraction` (0..1) of the remaining entries, least valuable first.
    fn evict(&self, fraction: f64) -> TrimReport;
}

/// A cache's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheSize {
    /// Number of entries.
    pub entries: u64,
    /// Weighted size in bytes, where the cache knows it.
    pub bytes: Option<u64>,
}

/// What one trim step removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrimReport {
    /// Entries removed.
    pub entries_removed: u64,
    /// Bytes freed, where the cache knows it.
    pub bytes_freed: Option<u64>,
}

impl TrimReport {
    /// Both reports together.
    pub(crate) fn add(self, other: TrimReport) -> TrimReport {
        TrimReport {
            entries_removed: self.entries_removed + other.entries_removed,
            bytes_freed: match (self.bytes_freed, other.bytes_freed) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            },
        }
    }
}

/// A set of connections the agent can thin out: a database pool, a server's tracked client
/// connections. Object safe.
pub trait Reap: Send + Sync {
    /// Connections open now.
    fn open_connections(&self) -> u64;
    /// Closes connections idle longer than `policy.idle_timeout`, then the oldest of any client
    /// over `policy.max_per_client`.
    fn reap(&self, policy: &ReapPolicy) -> ReapReport;
}

/// What to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReapPolicy {
    /// Close connections idle longer than this.
    pub idle_timeout: Duration,
    /// Keep at most this many connections per client (the oldest go first); `None`: no cap.
    pub max_per_client: Option<u32>,
}

/// What a reap closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReapReport {
    /// Connections closed for being idle.
    pub closed_idle: u64,
    /// Connections closed for exceeding the per-client cap.
    pub closed_over_limit: u64,
}
