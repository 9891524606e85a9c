//! The calling process's resident set size, for strategies that measure their own effect.

use std::fs;

/// Resident set size of this process in bytes, from `/proc/self/statm`.
pub fn rss_bytes() -> Option<u64> {
    let statm = fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * page_size())
}

/// The system page size in bytes.
pub fn page_size() -> u64 {
    crate::sys::page_size().unwrap_or(4096)
}
