//! Replay fidelity on recordings made by the real agent (tests/replay/, made by
//! scripts/replay-fixtures.sh, all with the default adaptive reaction and the fast watch):
//! replayed under the configuration it was recorded under, a recording gives back exactly the
//! recorded decisions — the same runs, in the same order, after the same sample. Two
//! recordings in segment format version 1 (tests/replay/v1/, made before the engine's clock
//! was recorded) still do. And bad input is refused with a clear error and exit 2.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use perfpilot::replay::sweep::load_candidate;
use perfpilot::replay::{self, Recording};

fn fixture(name: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay");
    (dir.join(name), dir.join(format!("{name}.toml")))
}

fn replays_its_own_decisions(name: &str) {
    let (recording, config) = fixture(name);
    let recording = Arc::new(
        Recording::open(&recording).unwrap_or_else(|e| panic!("the {name} fixture reads: {e}")),
    );
    let text = std::fs::read_to_string(&config).expect("the fixture's configuration");
    let config = load_candidate(&text).expect("the fixture's configuration loads");
    let comparison = replay::replay(&recording, &config).expect("the replay runs");
    assert!(
        !comparison.recorded_decisions.is_empty(),
        "the {name} recording has runs to reproduce"
    );
    assert_eq!(
        comparison.replayed_decisions, comparison.recorded_decisions,
        "{name}: the same runs, in the same order, after the same sample"
    );
    assert_eq!(
        (comparison.added_runs, comparison.dropped_runs),
        (0, 0),
        "{name}"
    );
}

/// The demo under range load, its budget watched at the cadence from its signal: the watch
/// wakes the engine between most samples, forecasts are fitted over samples a few ms apart.
#[test]
fn the_demo_under_range_load_replays_its_own_decisions() {
    replays_its_own_decisions("demo-range");
}

/// The same with examples/sidecar.toml as shipped (`watch_interval = "20ms"`).
#[test]
fn the_demo_with_its_shipped_watch_replays_its_own_decisions() {
    replays_its_own_decisions("demo-watched");
}

#[test]
fn the_leak_bench_replays_its_own_decisions() {
    replays_its_own_decisions("leak");
}

/// Format version 1: the demo recorded before the adaptive reaction (its configuration pins
/// `reaction = "fixed"`) and before budgets were watched at the cadence from their signal.
#[test]
fn a_version_1_demo_recording_replays_its_own_decisions() {
    replays_its_own_decisions("v1/demo-range");
}

/// Format version 1 with fast-watch wakes (9 in 40 samples), replayed where recorded.
#[test]
fn a_version_1_recording_with_wakes_replays_its_own_decisions() {
    replays_its_own_decisions("v1/leak-watched");
}

fn perfpilot(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .args(args)
        .output()
        .expect("perfpilot runs")
}

/// A scratch directory removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("perfpilot-replay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `perfpilot replay` with `args` and a `--report` in `scratch`; asserts exit 2, an
/// error that says `says`, and no report written.
fn refused(scratch: &Scratch, args: &[&str], says: &str) {
    let report = scratch.0.join("report.html");
    let report_arg = report.to_str().expect("a UTF-8 path");
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--report", report_arg]);
    let output = perfpilot(&all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(says),
        "{args:?}: expected `{says}` in: {stderr}"
    );
    assert!(!report.exists(), "{args:?}: nothing written");
}

#[test]
fn bad_input_is_refused_with_exit_2_and_nothing_written() {
    let (recording, config) = fixture("leak");
    let scratch = Scratch::new("bad");
    let segments: Vec<PathBuf> = std::fs::read_dir(&recording)
        .expect("the leak fixture")
        .map(|e| e.expect("an entry").path())
        .collect();
    let segment = segments.first().expect("a segment");
    let bytes = std::fs::read(segment).expect("a segment's bytes");
    let config = config.to_str().expect("a UTF-8 path");

    let truncated = scratch.0.join("truncated.seg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("written");
    refused(
        &scratch,
        &[
            "--recording",
            truncated.to_str().expect("utf-8"),
            "--config",
            config,
        ],
        "truncated",
    );

    let mut newer = bytes.clone();
    newer[8..10].copy_from_slice(&99u16.to_le_bytes());
    let newer_file = scratch.0.join("newer.seg");
    std::fs::write(&newer_file, &newer).expect("written");
    refused(
        &scratch,
        &[
            "--recording",
            newer_file.to_str().expect("utf-8"),
            "--config",
            config,
        ],
        "format version 99 is newer",
    );

    let invalid = scratch.0.join("invalid.toml");
    std::fs::write(
        &invalid,
        "[budgets.memory]\nsignal = \"memory_usage\"\ngoal = 0.9\nlimit = 0.8\nladder = []\n",
    )
    .expect("written");
    let segment = segment.to_str().expect("utf-8");
    refused(
        &scratch,
        &[
            "--recording",
            segment,
            "--config",
            invalid.to_str().expect("utf-8"),
        ],
        "candidate configuration",
    );

    let other_signal = scratch.0.join("in-flight.toml");
    std::fs::write(
        &other_signal,
        "[budgets.requests]\nsignal = \"in_flight_requests\"\ngoal = 100\nlimit = 200\nladder = [\"memory-purge\"]\n",
    )
    .expect("written");
    refused(
        &scratch,
        &[
            "--recording",
            segment,
            "--config",
            other_signal.to_str().expect("utf-8"),
        ],
        "the recording does not have",
    );

    refused(
        &scratch,
        &[
            "--recording",
            segment,
            "--config",
            config,
            "--sweep",
            "budgets.memory.goal",
        ],
        "expected KEY=V1,V2",
    );
}

#[test]
fn a_sweep_prints_one_row_per_value_and_a_report_draws_both_signals() {
    let (recording, config) = fixture("leak");
    let scratch = Scratch::new("sweep");
    let report = scratch.0.join("report.html");
    let output = perfpilot(&[
        "replay",
        "--recording",
        recording.to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
        "--sweep",
        "budgets.memory.goal=0.6,0.7,0.8",
        "--report",
        report.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for row in ["recorded", "0.6", "0.7", "0.8"] {
        assert!(
            stdout.lines().any(|line| line.starts_with(row)),
            "a row for {row}:\n{stdout}"
        );
    }
    let page = std::fs::read_to_string(&report).expect("the report is written");
    assert_eq!(page.matches("<svg").count(), 3, "a chart per value");
    assert_eq!(page.matches("class=\"replayed\" points").count(), 3);
    assert_eq!(page.matches("class=\"recorded\" points").count(), 3);
    // Each chart is the report's: goal and limit lines, and both sides' episodes shaded and
    // runs marked.
    let sections: Vec<&str> = page.split("<section>").skip(1).collect();
    assert_eq!(sections.len(), 3, "a section per value");
    for (section, value) in sections.iter().zip(["0.6", "0.7", "0.8"]) {
        for part in [
            "<line class=\"goal\"",
            "<line class=\"limit\"",
            "<rect class=\"episode recorded\"",
            "<rect class=\"episode replayed\"",
            "<line class=\"run recorded\"",
            "<line class=\"run replayed\"",
        ] {
            assert!(section.contains(part), "goal {value}: {part} missing");
        }
    }
    // At the recorded goal (0.8) the candidate's runs and episodes are the recorded ones:
    // marked at the same places.
    let at_recorded_goal = sections[2];
    for element in ["<line class=\"run", "<rect class=\"episode"] {
        let places = |side: &str| -> Vec<&str> {
            at_recorded_goal
                .split(&format!("{element} {side}\" x"))
                .skip(1)
                .filter_map(|rest| rest.split('"').nth(1))
                .collect()
        };
        assert!(!places("recorded").is_empty(), "{element}: some recorded");
        assert_eq!(places("recorded"), places("replayed"), "{element}");
    }
}
