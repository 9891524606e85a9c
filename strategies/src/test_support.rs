//! Support for the tests of both crates: perfpilot's unit and integration tests and this
//! crate's own. Compiled for this crate's tests and with the `test-support` feature (which
//! perfpilot's dev-dependency turns on); not part of the API.
//!
//! - [`skip`]: a test that cannot run here says so, and fails where CI says it must run.
//! - [`golden`]: golden files under `tests/golden/`, rewritten with `UPDATE_GOLDEN=1`.

/// The environment variable CI sets (to `1`) on machines that must run every test: there a
/// skip is a failure, not a pass.
pub const REQUIRE_ALL: &str = "PERFPILOT_CI_REQUIRE_ALL";

/// Reports a test (or part of one) that cannot run here: prints `skipped: why` (stdout and
/// stderr), and fails the test when [`REQUIRE_ALL`] says this machine should have supported
/// it. Call it and return (or go on with the part that can run).
pub fn skip(why: &str) {
    println!("skipped: {why}");
    eprintln!("skipped: {why}");
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("skipped, but {REQUIRE_ALL}=1 says this machine supports the test: {why}");
    }
}

/// Golden files: what users see, recorded so that a change to it is made on purpose.
pub mod golden {
    use std::fmt::Write as _;
    use std::path::Path;

    /// The environment variable that rewrites the golden files (`UPDATE_GOLDEN=1`) instead
    /// of comparing with them.
    pub const UPDATE: &str = "UPDATE_GOLDEN";

    /// Whether this run rewrites the golden files ([`UPDATE`] set, and not to `0`).
    pub fn updating() -> bool {
        std::env::var_os(UPDATE).is_some_and(|v| v != "0")
    }

    /// Compares `actual` with the golden file at `path` (or rewrites it when [`updating`]);
    /// returns the difference as a message, or `None` when they agree.
    pub fn check(path: &Path, actual: &str) -> Option<String> {
        if updating() {
            std::fs::create_dir_all(path.parent().expect("golden files live in a directory"))
                .expect("create the golden directory");
            std::fs::write(path, actual).expect("write the golden file");
            return None;
        }
        let expected = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                return Some(format!(
                    "{}: cannot read ({e}); run with {UPDATE}=1 to create it",
                    path.display()
                ))
            }
        };
        (expected != actual).then(|| {
            format!(
                "{} differs from what users see now (- golden, + now); if the change is meant, \
                 rerun with {UPDATE}=1 and commit the file:\n{}",
                path.display(),
                diff(&expected, actual)
            )
        })
    }

    /// Fails with every difference found.
    pub fn assert_all(differences: Vec<Option<String>>) {
        let differences: Vec<String> = differences.into_iter().flatten().collect();
        assert!(differences.is_empty(), "{}", differences.join("\n\n"));
    }

    /// A line diff (longest common subsequence), changed lines with two lines of context.
    pub fn diff(expected: &str, actual: &str) -> String {
        let a: Vec<&str> = expected.lines().collect();
        let b: Vec<&str> = actual.lines().collect();
        let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i][j] = if a[i] == b[j] {
                    lcs[i + 1][j + 1] + 1
                } else {
                    lcs[i + 1][j].max(lcs[i][j + 1])
                };
            }
        }
        let mut ops = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                ops.push((' ', a[i]));
                i += 1;
                j += 1;
            } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
                ops.push(('-', a[i]));
                i += 1;
            } else {
                ops.push(('+', b[j]));
                j += 1;
            }
        }
        let near_change = |k: usize| {
            ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
                .iter()
                .any(|(op, _)| *op != ' ')
        };
        let mut out = String::new();
        let mut skipped = false;
        for (k, (op, line)) in ops.iter().enumerate() {
            if near_change(k) {
                if skipped {
                    out.push_str("  ...\n");
                    skipped = false;
                }
                let _ = writeln!(out, "{op} {line}");
            } else {
                skipped = true;
            }
        }
        if expected.ends_with('\n') != actual.ends_with('\n') {
            out.push_str("(the final newline differs)\n");
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::diff;

        #[test]
        fn the_diff_shows_what_changed() {
            let shown = diff("a\nb\nc\n", "a\nB\nc\nd\n");
            assert_eq!(shown, "  a\n- b\n+ B\n  c\n+ d\n");
        }
    }
}
