//! A new crate written from the crate documentation alone: the `Cargo.toml` section of
//! `src/lib.rs`'s docs and the example they include, built against this checkout, serving the
//! app's own `/` and `/metrics` beside the agent's routes and running its own strategy, then
//! stopping on SIGTERM.
//!
//! The build is offline (the workspace's `Cargo.lock`, `--offline`), in the workspace's own
//! target directory, and bounded in time. Crates that the scratch crate's graph uses with other
//! features than the workspace's tests (tokio without `test-util`, and what depends on it) are
//! built once more (see docs/library.md for how long it takes).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest the scratch crate's build may take (a cold build of the whole graph on a busy
/// 2-core machine).
const BUILD_BOUND: Duration = Duration::from_secs(20 * 60);

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The crate docs (`//!` lines of `src/lib.rs`, with `#![doc = include_str!(...)]` lines
/// replaced by the file they include), as a reader of the rendered page sees them.
fn crate_docs() -> String {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("read src/lib.rs");
    let mut docs = String::new();
    for line in lib.lines() {
        if let Some(text) = line.strip_prefix("//!") {
            docs.push_str(text.strip_prefix(' ').unwrap_or(text));
            docs.push('\n');
        } else if let Some(included) = line
            .strip_prefix("#![doc = include_str!(\"")
            .and_then(|rest| rest.strip_suffix("\")]"))
        {
            let path = root().join("src").join(included);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            docs.push_str(&text);
        }
    }
    docs
}

/// The body of the first fenced block after `heading` that opens with `fence` (e.g.
/// "```toml").
fn block_after(docs: &str, heading: &str, fence: &str) -> String {
    let from = docs
        .find(heading)
        .unwrap_or_else(|| panic!("the crate docs have no {heading:?}"));
    let rest = &docs[from..];
    let start = rest
        .find(&format!("{fence}\n"))
        .unwrap_or_else(|| panic!("no {fence} block after {heading:?}"))
        + fence.len()
        + 1;
    let end = rest[start..]
        .find("\n```")
        .unwrap_or_else(|| panic!("the {fence} block after {heading:?} does not end"));
    rest[start..start + end + 1].to_owned()
}

/// Writes the scratch crate: the docs' `[dependencies]` (perfpilot as a path dependency on
/// this checkout), the docs' example as `src/main.rs`, and the workspace's lock file.
fn write_crate(dir: &Path) {
    let docs = crate_docs();
    let dependencies = block_after(&docs, "# Cargo.toml", "```toml");
    let ours = "perfpilot = \"0.1\"";
    assert!(
        dependencies.contains(ours),
        "the docs' Cargo.toml names {ours}:\n{dependencies}"
    );
    let dependencies = dependencies.replace(
        ours,
        &format!(
            "perfpilot = {{ path = {:?} }}",
            root().display().to_string()
        ),
    );
    let manifest = format!(
        "[package]\nname = \"library-guide\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         {dependencies}\n# Not a member of the perfpilot workspace around it.\n[workspace]\n"
    );
    let example = block_after(&docs, "# A service with the agent embedded", "```no_run");
    std::fs::create_dir_all(dir.join("src")).expect("create the scratch crate");
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), example).expect("write src/main.rs");
    std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");
}

/// `cargo build --offline` of the scratch crate, bounded by [`BUILD_BOUND`]; the binary.
fn build(dir: &Path, target: &Path) -> PathBuf {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cargo build");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo build") {
            break status;
        }
        if started.elapsed() > BUILD_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the scratch crate did not build within {BUILD_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "cargo build of the scratch crate: {status}"
    );
    println!(
        "the scratch crate built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    target.join("debug/library-guide")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crate_written_from_the_crate_docs_builds_serves_and_runs_its_strategy() {
    let target_base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .to_owned();
    let dir = target_base.join("scratch-crate/library-guide");
    write_crate(&dir);
    let binary = tokio::task::spawn_blocking({
        let dir = dir.clone();
        // The workspace's own target directory: what the scratch crate shares with the
        // workspace's build (build scripts, proc macros, crates whose features agree) is not
        // built twice. (`cargo test` releases its lock before it runs the tests.)
        let target = target_base.clone();
        move || build(&dir, &target)
    })
    .await
    .expect("the build thread");

    let mut command = Command::new(&binary);
    command
        .env_clear()
        .env("LISTEN", "127.0.0.1:0")
        .current_dir(&dir);
    let mut service = common::start_announcing(command);
    let base = service.base.clone();

    assert_eq!(common::get_text(&base, "/").await, "hello from the app");
    assert!(
        common::get_text(&base, "/metrics")
            .await
            .starts_with("# the app's own metrics"),
        "the app keeps its own /metrics"
    );
    let agent_metrics = common::get_text(&base, "/perfpilot/metrics").await;
    assert!(
        agent_metrics.contains("perfpilot_"),
        "the agent's series under /perfpilot/metrics:\n{agent_metrics}"
    );
    let (status, answer) = common::post_json(
        &base,
        "/performance-optimize",
        r#"{"strategy":"drop-sessions"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let result = &answer["results"][0];
    assert_eq!(result["strategy"], "drop-sessions", "{answer}");
    assert_eq!(result["success"], true, "{answer}");
    assert_eq!(
        result["result"]["report"]["sessions_dropped"],
        Value::from(1),
        "{answer}"
    );

    // SIGTERM: the service drains and exits by itself.
    let pid = service.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = service.child.try_wait().expect("wait for the service") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "the service's exit after SIGTERM: {status}"
    );
}
