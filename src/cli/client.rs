//! `perfpilot metrics` and `perfpilot optimize`: talk to a running agent over HTTP.

use std::time::Duration;

use serde_json::{json, Value};

use super::{table, AgentUrl, MetricsArgs, OptimizeArgs, ReloadArgs, ResetLearningArgs, WatchArgs};

/// How long the CLI waits for the agent (an optimization can take a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Prints a running agent's metrics.
pub fn metrics(args: &MetricsArgs) -> Result<(), String> {
    if let Some(since) = &args.since {
        let path = format!("/performance-metrics/history?since={}", encode(since));
        let answer = request(&args.agent, reqwest::Method::GET, &path, None)?;
        match args.json {
            true => println!("{}", pretty(&answer)),
            false => print!("{}", table::history(&answer)),
        }
        return Ok(());
    }
    let document = request(
        &args.agent,
        reqwest::Method::GET,
        "/performance-metrics",
        None,
    )?;
    if args.json {
        println!("{}", pretty(&document));
    } else {
        print!("{}", table::metrics(&document));
    }
    Ok(())
}

/// What `perfpilot watch` shows of the past: five minutes in 10 s steps.
const RECENT: &str =
    "/performance-metrics/history?since=5m&step=10s&signals=memory_usage,cpu_usage";

/// The shortest refresh period of `perfpilot watch`.
const MIN_REFRESH: Duration = Duration::from_millis(200);

/// Redraws a running agent's metrics table every interval until Ctrl-C.
pub fn watch(args: &WatchArgs) -> Result<(), String> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let client = client()?;
        let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
        loop {
            let document = fetch(
                &client,
                &args.agent,
                reqwest::Method::GET,
                "/performance-metrics",
                None,
            )
            .await?;
            // The last five minutes from the recording, where the agent keeps one.
            let recent = fetch(&client, &args.agent, reqwest::Method::GET, RECENT, None)
                .await
                .map(|answer| table::recent(&answer, &["memory_usage", "cpu_usage"]))
                .unwrap_or_default();
            // Clear the screen and home the cursor, then draw.
            print!("\x1b[2J\x1b[H{}", table::metrics(&document));
            if !recent.is_empty() {
                print!("\nlast 5 minutes (10 s steps)\n{recent}");
            }
            println!("\n(refreshing; Ctrl-C to stop)");
            let period = args
                .every
                .or_else(|| {
                    document["performance"]["interval"]
                        .as_u64()
                        .map(Duration::from_millis)
                })
                .unwrap_or(Duration::from_secs(5))
                .max(MIN_REFRESH);
            tokio::select! {
                _ = &mut interrupted => return Ok(()),
                _ = tokio::time::sleep(period) => {}
            }
        }
    })
}

/// Asks a running agent to reload its configuration and prints what changed.
pub fn reload(args: &ReloadArgs) -> Result<(), String> {
    let answer = request(&args.agent, reqwest::Method::POST, "/config/reload", None)?;
    if args.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let list = |value: &Value| -> String {
        let items: Vec<&str> = value
            .as_array()
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match items.is_empty() {
            true => "none".to_owned(),
            false => items.join(", "),
        }
    };
    println!(
        "configuration reloaded from {}",
        answer["source"].as_str().unwrap_or("?")
    );
    println!("changed: {}", list(&answer["changed"]));
    let strategies = &answer["strategies"];
    println!(
        "strategies added: {}; removed: {}; new trigger: {}",
        list(&strategies["added"]),
        list(&strategies["removed"]),
        list(&strategies["retriggered"])
    );
    if answer["restartRequired"]
        .as_array()
        .is_some_and(|keys| !keys.is_empty())
    {
        println!(
            "needs a restart to take effect (running values kept): {}",
            list(&answer["restartRequired"])
        );
    }
    Ok(())
}

/// Asks a running agent to forget what a budget (or every budget) learned about reacting.
pub fn reset_learning(args: &ResetLearningArgs) -> Result<(), String> {
    let body = match &args.budget {
        Some(budget) => json!({ "budget": budget }),
        None => json!({}),
    };
    let answer = request(
        &args.agent,
        reqwest::Method::POST,
        "/budgets/reset-learning",
        Some(body),
    )?;
    if args.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let reset: Vec<&str> = answer["reset"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match reset.is_empty() {
        true => println!("no budget to reset"),
        false => println!(
            "learned reaction state reset: {} (goals back to as configured)",
            reset.join(", ")
        ),
    }
    Ok(())
}

/// Asks a running agent to optimize now and prints what each strategy did.
pub fn optimize(args: &OptimizeArgs) -> Result<(), String> {
    let body = match &args.strategy {
        Some(strategy) => json!({ "strategy": strategy }),
        None => json!({}),
    };
    let answer = request(
        &args.agent,
        reqwest::Method::POST,
        "/performance-optimize",
        Some(body),
    )?;
    if args.json {
        println!("{}", pretty(&answer));
    } else {
        print!("{}", table::results(&answer));
    }
    let all_failed = answer["results"]
        .as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["success"] == false));
    if all_failed {
        return Err("every strategy run failed (see above)".into());
    }
    Ok(())
}

fn request(
    agent: &AgentUrl,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    runtime()?.block_on(async { fetch(&client()?, agent, method, path, body).await })
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

async fn fetch(
    client: &reqwest::Client,
    agent: &AgentUrl,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let url = format!("{}{path}", agent.url.trim_end_matches('/'));
    {
        let mut request = client.request(method, &url);
        if let Some(token) = &agent.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the agent at {url}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading the answer from {url}: {e}"))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            format!("{url} answered {status} with a body that is not JSON ({e}): {text}")
        })?;
        if status.is_success() {
            Ok(value)
        } else {
            let error = value["error"].as_str().unwrap_or("(no error message)");
            Err(format!("{url} answered {status}: {error}"))
        }
    }
}

/// `text` with everything but unreserved characters percent-encoded, for a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
