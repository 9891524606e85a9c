//! A steady leak for `--leak-mb-per-s`: per-session state the service keeps and never
//! drops on its own, as a session table without expiry would. Every tick adds one session's
//! buffer, written through so its pages are resident; `POST /admin/sessions/drop` releases
//! the oldest share of them.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// The leaked session buffers, oldest first.
#[derive(Default)]
pub struct SessionLeak {
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    buffers: VecDeque<Box<[u8]>>,
    bytes: u64,
}

/// What [`SessionLeak::drop_oldest`] released.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DropCount {
    pub sessions_before: usize,
    pub sessions_after: usize,
    pub sessions_dropped: usize,
    /// Bytes of session state freed.
    pub bytes_freed: u64,
    /// Bytes of session state still held.
    pub bytes_after: u64,
}

/// The leak's size, as `/stats` shows it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LeakStats {
    pub leaked_sessions: usize,
    pub leaked_bytes: u64,
}

impl SessionLeak {
    /// Keeps one more session buffer of `bytes`, every byte written so the pages are resident.
    pub fn add_session(&self, bytes: usize) {
        // Non-zero content: a zeroed allocation could stay untouched (calloc from fresh pages).
        let buffer = vec![0x5a_u8; bytes].into_boxed_slice();
        let mut sessions = self.lock();
        sessions.bytes += buffer.len() as u64;
        sessions.buffers.push_back(buffer);
    }

    /// Drops the oldest `ceil(sessions × fraction)` buffers (`0 < fraction ≤ 1`).
    pub fn drop_oldest(&self, fraction: f64) -> DropCount {
        let dropped: Vec<Box<[u8]>>;
        let count = {
            let mut sessions = self.lock();
            let sessions_before = sessions.buffers.len();
            let target = ((sessions_before as f64 * fraction).ceil() as usize).min(sessions_before);
            dropped = sessions.buffers.drain(..target).collect();
            let bytes_freed: u64 = dropped.iter().map(|b| b.len() as u64).sum();
            sessions.bytes -= bytes_freed;
            DropCount {
                sessions_before,
                sessions_after: sessions.buffers.len(),
                sessions_dropped: target,
                bytes_freed,
                bytes_after: sessions.bytes,
            }
        };
        // Freed outside the lock, so the leak task is not held up by the deallocation.
        drop(dropped);
        count
    }

    /// Current size.
    pub fn stats(&self) -> LeakStats {
        let sessions = self.lock();
        LeakStats {
            leaked_sessions: sessions.buffers.len(),
            leaked_bytes: sessions.bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A buffer list and its byte sum, updated together under the lock: consistent after
        // any panic elsewhere.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_oldest_share_and_counts_bytes() {
        let leak = SessionLeak::default();
        for n in 1..=10 {
            leak.add_session(n * 100);
        }
        assert_eq!(leak.stats().leaked_bytes, 5500);
        let count = leak.drop_oldest(0.25);
        // ceil(10 × 0.25) = 3 oldest: 100 + 200 + 300.
        assert_eq!(count.sessions_dropped, 3);
        assert_eq!(count.bytes_freed, 600);
        assert_eq!((count.sessions_after, count.bytes_after), (7, 4900));
        let all = leak.drop_oldest(1.0);
        assert_eq!((all.sessions_after, all.bytes_after), (0, 0));
        assert_eq!(leak.drop_oldest(0.5).sessions_dropped, 0);
    }
}
