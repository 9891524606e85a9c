//! `signal` against real child processes.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use perfpilot_strategies::{
    Context, Outcome, Signal, SignalConfig, Strategy, StrategyError, TriggerSpec,
};

fn ctx(targets: Vec<u32>) -> Context {
    Context {
        targets,
        ..Context::standalone()
    }
}

async fn send(signal: &str, targets: Vec<u32>) -> Result<Outcome, StrategyError> {
    let config = SignalConfig {
        enabled: true,
        trigger: Some(TriggerSpec::new(Signal::MemoryUsage, 0.8)),
        signal: signal.into(),
    };
    config.build("test-signal").run(ctx(targets)).await
}

#[tokio::test]
async fn the_target_receives_the_signal() {
    let mut child = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();

    let outcome = send("term", vec![pid]).await.unwrap();
    assert!(outcome.acted);
    assert_eq!(outcome.report["signal"], "SIGTERM");
    assert_eq!(outcome.report["pids"], serde_json::json!([pid]));

    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the target exits within 5 s")
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[tokio::test]
async fn a_target_that_is_gone_is_a_failure_naming_it() {
    let mut child = tokio::process::Command::new("true").spawn().unwrap();
    let pid = child.id().unwrap();
    child.wait().await.unwrap(); // exited and reaped: the pid is free

    let result = send("SIGUSR1", vec![pid]).await;
    assert_eq!(
        result,
        Err(StrategyError::Failed(format!(
            "target process {pid} no longer exists"
        )))
    );
}

/// Set in the copy of the test run as an unprivileged user.
const AS_UNPRIVILEGED: &str = "PERFPILOT_TEST_AS_UNPRIVILEGED";

/// Prints `skipped: why`; fails where `PERFPILOT_CI_REQUIRE_ALL=1` says the machine should
/// have run the test.
fn skip(why: &str) {
    println!("skipped: {why}");
    eprintln!("skipped: {why}");
    if std::env::var("PERFPILOT_CI_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!(
            "skipped, but PERFPILOT_CI_REQUIRE_ALL=1 says this machine supports the test: {why}"
        );
    }
}

#[tokio::test]
async fn a_process_of_another_user_is_a_permission_failure() {
    const NAME: &str = "a_process_of_another_user_is_a_permission_failure";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root may signal anything: run this test again as `nobody` (uid 65534), through
        // util-linux's setpriv, and require that copy to pass.
        assert!(
            std::env::var_os(AS_UNPRIVILEGED).is_none(),
            "setpriv left the copy running as root"
        );
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(AS_UNPRIVILEGED, "1")
            .current_dir("/")
            .output();
        let output = match output {
            Ok(output) => output,
            Err(e) => return skip(&format!("root, and setpriv cannot be run ({e})")),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("1 passed") && !stdout.contains("skipped"),
            "the test as uid 65534 did not pass:\n{stdout}\n{stderr}"
        );
        return;
    }
    // pid 1 belongs to root; SIGCONT would be harmless even if it were delivered.
    let result = send("CONT", vec![1]).await;
    assert!(
        matches!(&result, Err(StrategyError::Failed(m)) if m.contains("not permitted") && m.contains(" 1 ")),
        "{result:?}"
    );
}

#[tokio::test]
async fn without_a_target_it_cannot_act() {
    let result = send("HUP", Vec::new()).await;
    assert!(
        matches!(&result, Err(StrategyError::Unavailable(m)) if m.contains("--target-pid")),
        "{result:?}"
    );
}
