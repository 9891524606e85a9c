//! Helpers of the library's unit tests: the skip helper both crates share
//! (`perfpilot_strategies::test_support`), and what needs this crate's `sys`.

pub(crate) use perfpilot_strategies::test_support::skip;

/// Whether the test runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    crate::sys::is_root()
}
