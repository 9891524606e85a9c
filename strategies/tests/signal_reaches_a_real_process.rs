//! `signal` against real child processes.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use perfpilot_strategies::test_support::skip;
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
        disruptive: false,
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

#[tokio::test]
async fn a_process_of_another_user_is_a_permission_failure() {
    const NAME: &str = "a_process_of_another_user_is_a_permission_failure";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root may signal anything: start a root-owned `sleep` in a session of its own, then
        // run this test again as `nobody` (uid 65534) through util-linux's setpriv, and
        // require that copy to fail to signal it. The own session matters: kill(2) lets
        // SIGCONT through to any process of the sender's session, whoever owns it.
        assert!(
            std::env::var_os(AS_UNPRIVILEGED).is_none(),
            "setpriv left the copy running as root"
        );
        let mut victim = std::process::Command::new("sleep");
        victim.arg("30");
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut victim, || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut victim = victim.spawn().expect("sleep starts");
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(AS_UNPRIVILEGED, victim.id().to_string())
            .current_dir("/")
            .output();
        let still_running = matches!(victim.try_wait(), Ok(None));
        let _ = victim.kill();
        let _ = victim.wait();
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
        assert!(
            still_running,
            "the root-owned sleep was signalled by uid 65534"
        );
        return;
    }
    let (pid, signal) = match std::env::var(AS_UNPRIVILEGED) {
        // The root copy's `sleep`: SIGTERM would end it, which the root copy would see.
        Ok(pid) => (
            pid.parse::<u32>().expect("a pid from the root copy"),
            "TERM",
        ),
        // Run as an ordinary user: pid 1, if another user owns it and it is in another
        // session; SIGCONT would be harmless even if it were delivered.
        Err(_) => match another_users_process_in_another_session(1) {
            Ok(()) => (1, "CONT"),
            Err(why) => return skip(&why),
        },
    };
    let result = send(signal, vec![pid]).await;
    let needle = format!(" {pid} ");
    assert!(
        matches!(&result, Err(StrategyError::Failed(m)) if m.contains("not permitted") && m.contains(&needle)),
        "{result:?}"
    );
}

/// Whether `pid` is owned by another user and sits in another session than this process,
/// so that no signal from here may reach it.
fn another_users_process_in_another_session(pid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map_err(|e| format!("cannot read /proc/{pid} ({e})"))?
        .uid();
    // SAFETY: geteuid and getsid have no preconditions.
    let (me, theirs, ours) =
        unsafe { (libc::geteuid(), libc::getsid(pid as i32), libc::getsid(0)) };
    if owner == me {
        return Err(format!("pid {pid} belongs to this user (uid {me})"));
    }
    if theirs == ours {
        return Err(format!(
            "pid {pid} is in this process's session, which SIGCONT may reach"
        ));
    }
    Ok(())
}

#[tokio::test]
async fn without_a_target_it_cannot_act() {
    let result = send("HUP", Vec::new()).await;
    assert!(
        matches!(&result, Err(StrategyError::Unavailable(m)) if m.contains("--target-pid")),
        "{result:?}"
    );
}
