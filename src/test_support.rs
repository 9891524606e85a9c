//! Helpers shared by the library's unit tests.

/// The environment variable CI sets (to `1`) on machines that must run every test: there a
/// skip is a failure.
pub(crate) const REQUIRE_ALL: &str = "PERFPILOT_CI_REQUIRE_ALL";

/// Reports a test that cannot run here: prints `skipped: why`, and fails the test when
/// [`REQUIRE_ALL`] says this machine should have supported it. Call it and return.
pub(crate) fn skip(why: &str) {
    println!("skipped: {why}");
    eprintln!("skipped: {why}");
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("skipped, but {REQUIRE_ALL}=1 says this machine supports the test: {why}");
    }
}

/// Whether the test runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    crate::sys::is_root()
}
