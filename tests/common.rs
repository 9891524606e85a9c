//! Starting the real `perfpilot` binary on a free loopback port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A running agent process, killed when dropped.
pub struct RunningAgent {
    pub child: Child,
    pub base: String,
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test.
pub fn perfpilot() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_perfpilot"));
    // Keep the tests independent of the developer's environment and working directory.
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    command
}

/// Starts `perfpilot run --listen 127.0.0.1:0` plus `args` with `env`, and waits for its
/// `listening on http://ADDR` line (at most 20 s).
pub fn start_agent(args: &[&str], env: &[(&str, &str)]) -> RunningAgent {
    let mut command = perfpilot();
    command
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("start perfpilot");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("perfpilot printed its address within 20 s");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    RunningAgent { child, base }
}

/// An HTTP client with a bounded timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GET `path` and parse the JSON body.
pub async fn get_json(base: &str, path: &str) -> (u16, Value) {
    let response = client().get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// POST `body` to `path` and parse the JSON answer.
pub async fn post_json(base: &str, path: &str, body: &'static str) -> (u16, Value) {
    let response = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}
