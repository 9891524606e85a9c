//! The second security round (secrets in errors, files the agent trusts, floods before
//! authentication), each finding tried on the real binary over real loopback sockets.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, perfpilot, raw, raw_bytes, refused, Running};
use serde_json::Value;

/// A private temporary directory (mode 0700), removed when dropped.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("perfpilot-sec2-{name}-"))
        .tempdir()
        .expect("create a temp directory")
}

/// Writes `text` to `path` with mode 0600 (replacing it in one step).
fn write_private(path: &Path, text: &str) {
    let aside = path.with_extension("tmp");
    fs::write(&aside, text).unwrap();
    fs::set_permissions(&aside, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&aside, path).unwrap();
}

/// An agent started by `command` (`perfpilot run ...`), its log (stderr) going to `log`.
fn start_logging(mut command: Command, log: &Path) -> Running {
    let log = fs::File::create(log).unwrap();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start the agent");
    let line = common::first_stdout_line(&mut child);
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Running { child, base }
}

/// `perfpilot run --listen 127.0.0.1:0 --config FILE` with `env`, logging to `log`.
fn start_with_config(file: &Path, env: &[(&str, &str)], log: &Path) -> Running {
    let mut command = perfpilot();
    command
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(file)
        .envs(env.iter().copied());
    start_logging(command, log)
}

async fn post_with(base: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let response = client()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn get_with(base: &str, path: &str, token: &str) -> (u16, String) {
    let response = client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Waits (at most 10 s) until `path` exists.
fn wait_for_file(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

const WRITE: &str = "wS3cretWrite";
const READ: &str = "rS3cretRead";

// 1. Secrets in errors.

#[tokio::test]
async fn reload_errors_check_config_and_the_log_never_show_a_secret() {
    let dir = temp_dir("errors");
    let file = dir.path().join("agent.toml");
    let log = dir.path().join("agent.log");
    let good = format!("[api]\ntoken = \"{WRITE}\"\nread_token = \"{READ}\"\n");
    write_private(&file, &good);
    let agent = start_with_config(&file, &[], &log);
    let broken = [
        // Unterminated string: the parser quotes the source line.
        format!("[api]\ntoken = \"{WRITE}\nread_token = \"{READ}\"\n"),
        // Wrong type: the deserializer quotes the value.
        format!("[api]\ntoken = [\"{WRITE}\"]\nread_token = \"{READ}\"\n"),
        // Misspelt key: the value of an unknown key.
        format!("[api]\ntokne = \"{WRITE}\"\ntoken = \"other-token\"\nread_token = \"{READ}\"\n"),
        // A webhook header of the wrong type, a command env value, a URL's password and query.
        format!(
            "{good}[strategies.webhook.hook]\nurl = \"http://user:uS3cretUrl@127.0.0.1:1/x?apikey=qS3cretQuery\"\n\
             headers = {{ Authorization = [\"hS3cretHeader\"] }}\n\
             [strategies.command.cmd]\nprogram = \"\"\nenv = {{ KEY = \"eS3cretEnv\" }}\n"
        ),
    ];
    let secrets = [
        WRITE,
        READ,
        "uS3cretUrl",
        "qS3cretQuery",
        "hS3cretHeader",
        "eS3cretEnv",
    ];
    let shown = |text: &str| secrets.iter().find(|s| text.contains(*s)).copied();
    for text in &broken {
        write_private(&file, text);
        let (status, answer) = post_with(&agent.base, "/config/reload", WRITE, "").await;
        assert_eq!(status, 422, "{text}: {answer}");
        assert_eq!(shown(&answer), None, "the reload answer: {answer}");
        let (status, document) = get_with(&agent.base, "/performance-metrics", READ).await;
        assert_eq!(status, 200);
        let document: Value = serde_json::from_str(&document).unwrap();
        let last_error = document["config"]["lastError"].as_str().unwrap_or_default();
        assert!(!last_error.is_empty(), "{document}");
        assert_eq!(shown(last_error), None, "config.lastError: {last_error}");
        let check = perfpilot()
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(2), "{stderr}");
        assert_eq!(shown(&stderr), None, "check-config: {stderr}");
    }
    drop(agent);
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.contains("reload"), "the failures are logged: {log}");
    assert_eq!(shown(&log), None, "the log: {log}");
}

// 2. A configuration file others could write.

#[tokio::test]
async fn a_perfpilot_toml_written_after_start_is_never_loaded() {
    let dir = temp_dir("default-file");
    let marker = dir.path().join("ran");
    let mut command = perfpilot();
    command
        .args(["run", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("PERFPILOT_API__TOKEN", WRITE);
    let agent = start_logging(command, &dir.path().join("agent.log"));
    // Another user drops a file into the shared working directory.
    fs::write(
        dir.path().join("perfpilot.toml"),
        format!(
            "[strategies.command.dropped]\nprogram = \"touch\"\nargs = [\"{}\"]\n\
             [strategies.command.dropped.trigger]\nsignal = \"memory_usage\"\nabove = 0.99\n",
            marker.display()
        ),
    )
    .unwrap();
    let (status, answer) = post_with(&agent.base, "/config/reload", WRITE, "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("no file"), "{answer}");
    let (status, answer) = post_with(
        &agent.base,
        "/performance-optimize",
        WRITE,
        r#"{"strategy": "dropped"}"#,
    )
    .await;
    assert_eq!(status, 400, "the dropped strategy is unknown: {answer}");
    assert!(!marker.exists());
}

#[test]
fn a_configuration_file_others_may_write_or_own_is_refused() {
    let dir = temp_dir("file-mode");
    let file = dir.path().join("agent.toml");
    write_private(&file, "interval = \"1s\"\n");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    let stderr = refused(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("mode 0666"), "{stderr}");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o620)).unwrap();
    let stderr = refused(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(stderr.contains("mode 0620"), "{stderr}");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let status = perfpilot()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap()
        .status;
    assert!(
        status.success(),
        "mode 0644, owned by the agent's user: read"
    );
    let chown = Command::new("chown").arg("65534").arg(&file).status();
    if !chown.is_ok_and(|s| s.success()) {
        common::skip("cannot chown a file to uid 65534 here (not root)");
        return;
    }
    let stderr = refused(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
}

// 6. The command's environment.

#[tokio::test]
async fn a_command_gets_a_clean_environment_and_its_own_variables() {
    let dir = temp_dir("env");
    let out = dir.path().join("env.out");
    let file = dir.path().join("agent.toml");
    write_private(
        &file,
        &format!(
            "[strategies.command.dump]\nprogram = \"sh\"\nargs = [\"-c\", \"env > {}\"]\n\
             env = {{ EXTRA = \"given\" }}\n\
             [strategies.command.dump.trigger]\nsignal = \"memory_usage\"\nabove = 0.99\n",
            out.display()
        ),
    );
    let agent = start_with_config(
        &file,
        &[
            ("PERFPILOT_API__TOKEN", WRITE),
            ("UNRELATED_SECRET", "xS3cret"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "C"),
            ("TZ", "UTC"),
        ],
        &dir.path().join("agent.log"),
    );
    let (status, answer) = post_with(
        &agent.base,
        "/performance-optimize",
        WRITE,
        r#"{"strategy": "dump"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(wait_for_file(&out), "the command wrote its environment");
    let env = fs::read_to_string(&out).unwrap();
    for expected in [
        "PATH=",
        "LANG=C.UTF-8",
        "LC_TIME=C",
        "TZ=UTC",
        "EXTRA=given",
        "PERFPILOT_STRATEGY=dump",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(expected)),
            "{expected} in {env}"
        );
    }
    assert!(
        !env.contains(WRITE),
        "the agent's token is not passed: {env}"
    );
    assert!(!env.contains("UNRELATED_SECRET"), "{env}");
}

// 7. Arguments, URLs and env values in descriptions, records, logs and check-config.

#[tokio::test]
async fn secret_arguments_url_credentials_and_query_values_are_not_shown() {
    let dir = temp_dir("args");
    let file = dir.path().join("agent.toml");
    let log = dir.path().join("agent.log");
    write_private(
        &file,
        "[strategies.command.sync]\nprogram = \"false\"\n\
         args = [\"--verbose\", { value = \"--secretarg=aS3cretArg\", secret = true }]\n\
         env = { KEY = \"eS3cretEnv\" }\n\
         [strategies.command.sync.trigger]\nsignal = \"memory_usage\"\nabove = 0.99\n\
         [strategies.webhook.hook]\nurl = \"http://user:uS3cretUrl@127.0.0.1:1/trim?apikey=qS3cretQuery\"\n\
         headers = { X-Key = \"hS3cretHeader\" }\nretries = 0\n\
         [strategies.webhook.hook.trigger]\nsignal = \"memory_usage\"\nabove = 0.99\n",
    );
    let secrets = [
        "aS3cretArg",
        "eS3cretEnv",
        "uS3cretUrl",
        "qS3cretQuery",
        "hS3cretHeader",
    ];
    let shown = |text: &str| secrets.iter().find(|s| text.contains(*s)).copied();
    let check = perfpilot()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{listing}");
    assert_eq!(shown(&listing), None, "check-config: {listing}");
    assert!(listing.contains("[\"--verbose\",\"***\"]"), "{listing}");
    assert!(listing.contains("apikey=***"), "{listing}");
    let agent = start_with_config(&file, &[], &log);
    for strategy in ["sync", "hook"] {
        let body = format!(r#"{{"strategy": "{strategy}"}}"#);
        let (status, answer) = post_with(&agent.base, "/performance-optimize", "-", &body).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("\"success\":false"), "{answer}");
        assert_eq!(shown(&answer), None, "the record: {answer}");
    }
    let (_, document) = get_with(&agent.base, "/performance-metrics", "-").await;
    assert_eq!(shown(&document), None, "{document}");
    let output = perfpilot()
        .args(["strategies", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let strategies = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        shown(&strategies),
        None,
        "perfpilot strategies: {strategies}"
    );
    drop(agent);
    let log = fs::read_to_string(&log).unwrap();
    assert_eq!(shown(&log), None, "the log: {log}");
}

// 8 and 12. Tokens.

#[test]
fn a_read_token_without_a_token_is_refused() {
    let stderr = refused(&["check-config"], &[("PERFPILOT_API__READ_TOKEN", READ)]);
    assert!(
        stderr.contains("api.read_token: is set without api.token"),
        "{stderr}"
    );
    assert!(!stderr.contains(READ), "{stderr}");
}

#[test]
fn tokens_with_non_ascii_or_control_characters_are_refused() {
    for (variable, token) in [
        ("PERFPILOT_API__TOKEN", "caf\u{e9}-token"),
        ("PERFPILOT_API__TOKEN", "bell\u{7}token"),
        ("PERFPILOT_API__TOKEN", "del\u{7f}token"),
    ] {
        let stderr = refused(&["check-config"], &[(variable, token)]);
        assert!(
            stderr.contains("api.token = \"***\": must be visible ASCII"),
            "{token:?}: {stderr}"
        );
        assert!(!stderr.contains("token\""), "{stderr}");
    }
}

// 10. Host checks that failed open.

#[test]
fn a_host_that_is_not_text_missing_malformed_or_foreign_in_the_target_is_refused() {
    let agent = common::start_agent(&[], &[]);
    let refusals: [(&[u8], u16); 5] = [
        (
            b"GET /performance-metrics HTTP/1.1\r\nHost: 127.0.0.1\xff\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            b"GET /performance-metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            b"GET /performance-metrics HTTP/1.1\r\nHost: [::1]evil.example\r\nConnection: close\r\n\r\n",
            403,
        ),
        (
            b"GET http://evil.example/performance-metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            403,
        ),
        (
            b"POST http://evil.example:9750/performance-optimize HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            403,
        ),
    ];
    for (request, expected) in refusals {
        let (status, _, body) = raw_bytes(&agent.base, request, false);
        assert_eq!(
            status,
            expected,
            "{}: {body}",
            String::from_utf8_lossy(request)
        );
    }
    let (status, _, body) = raw_bytes(
        &agent.base,
        b"GET /performance-metrics HTTP/1.1\r\nHost: [::1]:9750\r\nConnection: close\r\n\r\n",
        false,
    );
    assert_eq!(status, 200, "{body}");
}

// 11. /health for a foreign host.

#[test]
fn health_answers_a_foreign_host_with_the_status_only() {
    let dir = temp_dir("health");
    let pidfile = dir.path().join("service.pid");
    let service = Command::new("sleep").arg("30").spawn().unwrap();
    let _service = KillOnDrop(service);
    write_private(&pidfile, &format!("{}\n", _service.0.id()));
    let agent = common::start_agent(
        &[
            "--worker-id",
            "worker-name-7",
            "--target-pidfile",
            pidfile.to_str().unwrap(),
        ],
        &[],
    );
    let (status, own) = raw(&agent.base, "GET", "/health", &[], "");
    assert_eq!(status, 200, "{own}");
    assert!(
        own.contains("worker-name-7") && own.contains("service.pid"),
        "{own}"
    );
    for host in ["evil.example", "evil.example:9750"] {
        let (status, body) = raw(&agent.base, "GET", "/health", &[("Host", host)], "");
        assert_eq!(status, 200, "still open to probes");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({"status": "ok"}), "{host}");
    }
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// 14. The dashboard cookie.

#[test]
fn each_agent_names_its_own_dashboard_cookie() {
    let env = [
        ("PERFPILOT_API__TOKEN", WRITE),
        ("PERFPILOT_API__READ_TOKEN", READ),
    ];
    let names: Vec<String> = (0..2)
        .map(|_| {
            let agent = common::start_agent(&[], &env);
            let bearer = format!("Bearer {READ}");
            let request = format!(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n"
            );
            let (status, head, _) = raw_bytes(&agent.base, request.as_bytes(), false);
            assert_eq!(status, 200, "{head}");
            let cookie = head
                .lines()
                .find_map(|l| l.strip_prefix("set-cookie: "))
                .unwrap_or_else(|| panic!("a session cookie: {head}"));
            assert!(cookie.contains("; Path=/;"), "{cookie}");
            let name = cookie.split('=').next().unwrap().to_owned();
            assert!(name.starts_with("perfpilot_session_"), "{cookie}");
            // The cookie opens the event stream of its own agent.
            let events = format!(
                "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {}\r\nConnection: close\r\n\r\n",
                cookie.split(';').next().unwrap()
            );
            let (status, _, _) = raw_bytes(&agent.base, events.as_bytes(), true);
            assert_eq!(status, 200);
            name
        })
        .collect();
    assert_ne!(names[0], names[1], "two agents on one host: two cookies");
}

// 4 and 5 (large heads, slow bodies) are in tests/flood.rs.

// 9. The rate limit and local clients.

/// `POST /performance-optimize {"strategy": "interval-backoff"}` from `source`; the status.
async fn optimize_from(base: &str, source: &str, body: &'static str) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    client
        .post(format!("{base}/performance-optimize"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

const RUN: &str = r#"{"strategy": "interval-backoff"}"#;

#[tokio::test]
async fn another_loopback_address_is_the_same_client_and_refused_requests_cost_nothing() {
    let one_a_minute = [
        ("PERFPILOT_API__RATE_LIMIT__PER_MINUTE", "1"),
        ("PERFPILOT_API__RATE_LIMIT__BURST", "1"),
    ];
    let agent = common::start_agent(&[], &one_a_minute);
    // Refused requests (unknown strategy: 400) do not use up the bucket.
    for _ in 0..3 {
        let status = optimize_from(&agent.base, "127.0.0.1", r#"{"strategy": "teleport"}"#).await;
        assert_eq!(status, 400);
    }
    assert_eq!(optimize_from(&agent.base, "127.0.0.1", RUN).await, 200);
    assert_eq!(optimize_from(&agent.base, "127.0.0.1", RUN).await, 429);
    // 127.0.0.2 is the same machine, the same user: the same bucket.
    assert_eq!(optimize_from(&agent.base, "127.0.0.2", RUN).await, 429);
    assert_eq!(optimize_from(&agent.base, "127.3.4.5", RUN).await, 429);
}

#[tokio::test]
async fn another_local_user_cannot_use_up_the_operators_bucket() {
    let agent = common::start_agent(
        &[],
        &[
            ("PERFPILOT_API__RATE_LIMIT__PER_MINUTE", "1"),
            ("PERFPILOT_API__RATE_LIMIT__BURST", "1"),
        ],
    );
    let curl_as = |uid: u32| {
        use std::os::unix::process::CommandExt;
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "20"])
            .args(["-H", "content-type: application/json", "-d", RUN])
            .arg(format!("{}/performance-optimize", agent.base))
            .uid(uid)
            .gid(uid)
            .output()
    };
    let first = match curl_as(65534) {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Ok(output) => {
            common::skip(&format!(
                "cannot run curl as uid 65534 here: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
            return;
        }
        Err(e) => {
            common::skip(&format!(
                "cannot run curl as uid 65534 here (not root, or no curl): {e}"
            ));
            return;
        }
    };
    assert_eq!(first, "200");
    let second = curl_as(65534).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        "429",
        "its bucket is empty"
    );
    // The operator (this process's user) has a bucket of its own.
    assert_eq!(optimize_from(&agent.base, "127.0.0.1", RUN).await, 200);
}

// 13. /events slots.

#[test]
fn a_reader_cannot_hold_every_event_stream_and_the_dashboard_still_gets_one() {
    let agent = common::start_agent(
        &[],
        &[
            ("PERFPILOT_API__TOKEN", WRITE),
            ("PERFPILOT_API__READ_TOKEN", READ),
        ],
    );
    let addr: std::net::SocketAddr = agent.base.trim_start_matches("http://").parse().unwrap();
    let open_events = |auth: &str| {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let status = String::from_utf8_lossy(&head)
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        (status, stream)
    };
    // A reader (with the read token) tries to take every slot.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let (status, stream) = open_events(&format!("Authorization: Bearer {READ}"));
        match status {
            200 => held.push(stream),
            503 => refused += 1,
            other => panic!("GET /events answered {other}"),
        }
    }
    assert!(held.len() <= 8, "one client holds {} streams", held.len());
    assert!(refused > 0);
    // The operator's dashboard: the page with the token, then the stream with its cookie.
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {READ}\r\nConnection: close\r\n\r\n"
    );
    let (status, head, _) = raw_bytes(&agent.base, request.as_bytes(), false);
    assert_eq!(status, 200);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let (status, _dashboard) = open_events(&format!("Cookie: {cookie}"));
    assert_eq!(status, 200, "the dashboard's stream");
}

// 3. A pidfile target.

/// Polls `GET /health` (at most 15 s) until its `target` satisfies `ok`; the last target seen.
fn wait_for_target(base: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = raw(base, "GET", "/health", &[], "");
        let target = serde_json::from_str::<Value>(&body).unwrap()["target"].clone();
        if ok(&target) {
            return target;
        }
        assert!(
            Instant::now() < deadline,
            "waited 15 s for the target to be {what}: {target}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pidfile_naming_init_the_agent_or_another_users_process_is_not_adopted() {
    let dir = temp_dir("pidfile");
    let pidfile = dir.path().join("service.pid");
    let service = KillOnDrop(Command::new("sleep").arg("60").spawn().unwrap());
    let service_pid = service.0.id();
    write_private(&pidfile, &format!("{service_pid}\n"));
    let agent = common::start_agent(
        &[
            "--interval",
            "100ms",
            "--target-pidfile",
            pidfile.to_str().unwrap(),
        ],
        &[],
    );
    let running = |pid: u32| move |t: &Value| t["state"] == "running" && t["pid"] == pid;
    let refused = |words: &'static str| {
        move |t: &Value| {
            t["state"] == "not-found" && t["reason"].as_str().is_some_and(|r| r.contains(words))
        }
    };
    wait_for_target(&agent.base, "the service", running(service_pid));
    write_private(&pidfile, "1\n");
    wait_for_target(&agent.base, "refused (init)", refused("pid 1"));
    write_private(&pidfile, &format!("{}\n", agent.child.id()));
    wait_for_target(&agent.base, "refused (itself)", refused("the agent itself"));
    write_private(&pidfile, &format!("{service_pid}\n"));
    wait_for_target(&agent.base, "the service again", running(service_pid));
    fs::set_permissions(&pidfile, fs::Permissions::from_mode(0o666)).unwrap();
    wait_for_target(
        &agent.base,
        "refused (o+w)",
        refused("writable by any user"),
    );
    fs::set_permissions(&pidfile, fs::Permissions::from_mode(0o644)).unwrap();
    wait_for_target(&agent.base, "the service again", running(service_pid));
    // A pidfile of another user naming root's process.
    let chown = Command::new("chown").arg("65534").arg(&pidfile).status();
    if !chown.is_ok_and(|s| s.success()) {
        common::skip("cannot chown the pidfile to uid 65534 here (not root)");
        return;
    }
    wait_for_target(
        &agent.base,
        "refused (owner)",
        refused("owned by uid 65534"),
    );
    // ... and naming its own process: adopted.
    let theirs = {
        use std::os::unix::process::CommandExt;
        KillOnDrop(
            Command::new("sleep")
                .arg("60")
                .uid(65534)
                .gid(65534)
                .spawn()
                .unwrap(),
        )
    };
    let aside = pidfile.with_extension("new");
    fs::write(&aside, format!("{}\n", theirs.0.id())).unwrap();
    fs::set_permissions(&aside, fs::Permissions::from_mode(0o644)).unwrap();
    Command::new("chown")
        .arg("65534")
        .arg(&aside)
        .status()
        .unwrap();
    fs::rename(&aside, &pidfile).unwrap();
    wait_for_target(&agent.base, "their process", running(theirs.0.id()));
}
