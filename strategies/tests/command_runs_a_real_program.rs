//! `command` running real programs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use perfpilot_strategies::{
    CommandConfig, Context, Level, Outcome, RunKind, Signal, Snapshot, Strategy, StrategyError,
    TriggerSpec,
};

fn ctx(targets: Vec<u32>) -> Context {
    let mut snapshot = Snapshot::empty(SystemTime::now());
    snapshot.memory_usage_ratio = Some(0.93);
    Context {
        snapshot: Arc::new(snapshot),
        level: Level::Critical,
        kind: RunKind::Automatic,
        targets,
        ..Context::standalone()
    }
}

fn command(program: &str, args: &[&str]) -> CommandConfig {
    let mut config = CommandConfig::new(program, TriggerSpec::new(Signal::MemoryUsage, 0.8));
    config.args = args.iter().map(|a| (*a).into()).collect();
    config
}

/// Runs the command, bounded.
async fn run(config: &CommandConfig, targets: Vec<u32>) -> Result<Outcome, StrategyError> {
    tokio::time::timeout(
        Duration::from_secs(10),
        config.build("test-command").run(ctx(targets)),
    )
    .await
    .expect("the command run ends within 10 s")
}

fn failure(result: Result<Outcome, StrategyError>) -> String {
    match result {
        Err(StrategyError::Failed(message)) => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn exit_code_zero_is_success() {
    let outcome = run(&command("true", &[]), Vec::new()).await.unwrap();
    assert!(outcome.acted);
    assert_eq!(outcome.report["exit_code"], 0);
    assert_eq!(outcome.report["stdout"], "");
    assert!(outcome.report["elapsed_ms"].as_f64().is_some());
}

#[tokio::test]
async fn stdout_and_stderr_are_captured() {
    let config = command("sh", &["-c", "echo out; echo err >&2"]);
    let outcome = run(&config, Vec::new()).await.unwrap();
    assert_eq!(outcome.report["stdout"], "out\n");
    assert_eq!(outcome.report["stderr"], "err\n");
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_code_and_the_output() {
    let config = command("sh", &["-c", "echo hi; exit 3"]);
    assert_eq!(
        failure(run(&config, Vec::new()).await),
        "command `sh -c echo hi; exit 3` exited with code 3; stdout: hi"
    );
    let config = command(
        "sh",
        &["-c", "echo starting; echo 'no such cache' >&2; exit 4"],
    );
    assert_eq!(
        failure(run(&config, Vec::new()).await),
        "command `sh -c echo starting; echo 'no such cache' >&2; exit 4` exited with code 4: no such cache"
    );
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed() {
    let mut config = command("sleep", &["30"]);
    config.timeout = Duration::from_millis(200);
    let started = Instant::now();
    assert_eq!(
        failure(run(&config, Vec::new()).await),
        "command `sleep 30` timed out after 200 ms and was killed"
    );
    // Generous for a loaded machine, far below the 30 s the program would have slept.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timed-out run ended only after {:?}",
        started.elapsed()
    );
}

/// A shell line that starts `sleep 60` in the background, writes its pid to `pidfile` once
/// it runs, and waits for it.
fn grandchild_script(pidfile: &std::path::Path) -> String {
    let tmp = pidfile.with_extension("tmp");
    format!(
        "sleep 60 & echo $! > {tmp}; mv {tmp} {pidfile}; wait",
        tmp = tmp.display(),
        pidfile = pidfile.display()
    )
}

/// Waits (at most 60 s) for the pidfile the script writes, and reads it.
async fn read_pidfile(pidfile: &std::path::Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(pidfile) {
            return text.trim().parse().expect("a pid in the pidfile");
        }
        assert!(
            Instant::now() < deadline,
            "the command did not write {} within 60 s",
            pidfile.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 30 s) until `pid` is gone, or a zombie waiting for whoever inherited it to
/// reap it.
async fn wait_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('Z') =>
            {
                return
            }
            Ok(_) if Instant::now() > deadline => {
                // Do not leave it behind for the next test.
                kill_leftover(pid);
                panic!("{what}: process {pid} still runs after 30 s");
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn kill_leftover(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn a_timeout_kills_what_the_command_started_too() {
    let dir = tempdir("timeout");
    let pidfile = dir.path().join("grandchild.pid");
    let mut config = command("sh", &["-c", &grandchild_script(&pidfile)]);
    // Long enough for the shell to start the grandchild on a loaded machine; the test waits
    // for the pidfile, not for a fixed time.
    config.timeout = Duration::from_secs(3);
    let running = tokio::spawn(async move { run(&config, Vec::new()).await });
    let pid = read_pidfile(&pidfile).await;
    let message = failure(
        tokio::time::timeout(Duration::from_secs(60), running)
            .await
            .expect("the run ends within 60 s")
            .unwrap(),
    );
    assert!(message.contains("timed out after 3000 ms"), "{message}");
    wait_gone(pid, "after the command's timeout, its grandchild").await;
}

#[tokio::test]
async fn abandoning_the_run_kills_the_whole_process_group() {
    // What the engine does when `strategy_timeout` passes first: it drops the run.
    let dir = tempdir("drop");
    let pidfile = dir.path().join("grandchild.pid");
    let mut config = command("sh", &["-c", &grandchild_script(&pidfile)]);
    config.timeout = Duration::from_secs(120);
    let strategy = config.build("test-command");
    let running = tokio::spawn(async move { strategy.run(ctx(Vec::new())).await });
    let pid = read_pidfile(&pidfile).await;
    running.abort();
    assert!(tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the aborted run ends within 60 s")
        .unwrap_err()
        .is_cancelled());
    wait_gone(pid, "after the run was dropped, the command's grandchild").await;
}

#[tokio::test]
async fn the_command_learns_why_it_runs_from_its_environment() {
    let mut config = command(
        "sh",
        &[
            "-c",
            "echo $PERFPILOT_TARGET_PID [$PERFPILOT_TARGET_PIDS] $PERFPILOT_LEVEL $PERFPILOT_SIGNAL $PERFPILOT_SIGNAL_VALUE \
             $PERFPILOT_STRATEGY $PERFPILOT_RUN_KIND $CACHE_NAME",
        ],
    );
    config.env.insert("CACHE_NAME".into(), "chunks".into());
    let outcome = run(&config, vec![4242, 4343]).await.unwrap();
    assert_eq!(
        outcome.report["stdout"],
        "4242 [4242 4343] CRITICAL memory_usage 0.93 test-command automatic chunks\n"
    );

    let config = command(
        "sh",
        &[
            "-c",
            "echo ${PERFPILOT_TARGET_PID-none} ${PERFPILOT_TARGET_PIDS-none}",
        ],
    );
    let outcome = run(&config, Vec::new()).await.unwrap();
    assert_eq!(outcome.report["stdout"], "none none\n");
}

#[tokio::test]
async fn output_is_kept_as_a_short_configurable_excerpt_and_counted_in_full() {
    let mut config = command("sh", &["-c", "head -c 100000 /dev/zero | tr '\\0' a"]);
    let outcome = run(&config, Vec::new()).await.unwrap();
    assert_eq!(
        outcome.report["stdout"],
        "a".repeat(perfpilot_strategies::DEFAULT_EXCERPT_BYTES)
    );
    assert_eq!(outcome.report["stdout_bytes"], 100000);
    config.excerpt_bytes = 10;
    let outcome = run(&config, Vec::new()).await.unwrap();
    assert_eq!(outcome.report["stdout"], "a".repeat(10));
}

#[tokio::test]
async fn a_missing_program_is_a_failure_naming_it() {
    let message = failure(run(&command("/nonexistent/trim-cache", &[]), Vec::new()).await);
    assert!(
        message.starts_with("cannot start `/nonexistent/trim-cache`: "),
        "{message}"
    );
}

/// A temporary directory of its own, removed when dropped.
fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("perfpilot-command-{name}-"))
        .tempdir()
        .expect("create a temp directory")
}
