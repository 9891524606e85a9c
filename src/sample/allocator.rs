//! jemalloc statistics, read only when jemalloc is this process's global allocator.

use perfpilot_strategies::AllocatorStats;

/// Whether allocations through the global allocator go to the linked jemalloc.
pub(crate) fn jemalloc_is_global_allocator() -> bool {
    perfpilot_strategies::jemalloc::in_use()
}

/// jemalloc's counters, or `None` where they cannot be read.
pub(crate) fn jemalloc_stats() -> Option<AllocatorStats> {
    perfpilot_strategies::jemalloc::read_stats().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_test_binary_runs_on_the_system_allocator() {
        // Even after jemalloc has been touched through mallctl.
        let _ = super::jemalloc_stats();
        assert!(!super::jemalloc_is_global_allocator());
    }
}
