//! The embedding examples stop as their documentation says: on SIGTERM (what Kubernetes and
//! systemd send), not only on Ctrl-C.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

/// Sends SIGTERM to `child` and waits (at most 20 s) for it to exit; its exit status.
fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the example did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_axum_serves_and_stops_cleanly_on_sigterm() {
    let mut command = Command::new(common::example_binary("embedded_axum"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let mut example = common::start_announcing(command);
    assert_eq!(common::get_text(&example.base, "/ping").await, "pong");
    let (status, document) = common::get_json(&example.base, "/performance-metrics").await;
    assert_eq!(status, 200, "{document}");
    let status = terminate(&mut example.child);
    assert!(
        status.success(),
        "embedded_axum's exit on SIGTERM: {status} (killed by the signal instead of stopping)"
    );
}
