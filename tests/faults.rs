//! The library on real loopback sockets with strategies that misbehave: slow, panicking,
//! hanging. The binary cannot be given such a strategy, so this drives [`Agent::serve`], the
//! same code `perfpilot run` runs, with a stop future in place of SIGTERM (the binary's
//! SIGTERM exit is tested in `agent_binary.rs`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use perfpilot::config::Config;
use perfpilot::Agent;
use perfpilot_strategies::{Context, Outcome, Signal, Strategy, StrategyError, TriggerSpec};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[derive(Debug)]
enum Misbehaviour {
    Slow(Duration),
    Panic,
    Hang,
}

#[derive(Debug)]
struct Misbehaving(&'static str, Misbehaviour);

#[async_trait]
impl Strategy for Misbehaving {
    fn name(&self) -> &str {
        self.0
    }

    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        match self.1 {
            Misbehaviour::Slow(time) => {
                tokio::time::sleep(time).await;
                Ok(Outcome::acted("finished slowly"))
            }
            Misbehaviour::Panic => panic!("strategy exploded"),
            Misbehaviour::Hang => std::future::pending().await,
        }
    }
}

/// A trigger that never fires by itself (memory usage is never above 1).
fn never() -> TriggerSpec {
    TriggerSpec::new(Signal::MemoryUsage, 1.0)
}

struct Served {
    base: String,
    engine: perfpilot::__internal::EngineHandle,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<bool>>,
}

async fn serve(config: Config, strategies: Vec<Misbehaving>) -> Served {
    let grace = config.shutdown_grace;
    let mut builder = Agent::with_config(config);
    for strategy in strategies {
        builder = builder.strategy(Arc::new(strategy), never());
    }
    let agent = builder.spawn().expect("a valid configuration");
    let engine = perfpilot::__internal::engine(&agent).clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(agent.serve(
        listener,
        async {
            let _ = stopped.await;
        },
        grace,
    ));
    Served {
        base,
        engine,
        stop,
        serving,
    }
}

/// Waits (at most 60 s) until the engine runs a batch.
async fn wait_optimizing(served: &Served) {
    let mut view = served.engine.watch();
    tokio::time::timeout(Duration::from_secs(60), view.wait_for(|v| v.is_optimizing))
        .await
        .expect("an optimization running within 60 s")
        .expect("the engine runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_stop_a_running_strategy_finishes_within_the_grace_period_and_is_recorded() {
    let config = Config {
        shutdown_grace: Duration::from_secs(10),
        ..Config::default()
    };
    let served = serve(
        config,
        vec![Misbehaving(
            "slow",
            Misbehaviour::Slow(Duration::from_millis(1500)),
        )],
    )
    .await;
    let url = format!("{}/performance-optimize", served.base);
    let in_flight = tokio::spawn(async move {
        common::client()
            .post(url)
            .body(r#"{"strategy": "slow"}"#)
            .send()
            .await
    });
    wait_optimizing(&served).await;

    let stopped_at = Instant::now();
    served.stop.send(()).unwrap();
    // New connections are refused soon after the stop; the running request is not cut off.
    let address = served.base.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections 30 s after the stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["results"][0]["success"], true, "{body}");
    let finished_in_grace = served.serving.await.unwrap().unwrap();
    assert!(finished_in_grace);
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "not within the 10 s grace: {:?}",
        stopped_at.elapsed()
    );
    let last = served.engine.view();
    assert_eq!(last.stats.count, 1, "the slow run's record is kept");
    assert_eq!(last.recent[0].strategy, "slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_outlasting_the_grace_period_is_abandoned_and_serve_returns() {
    let config = Config {
        shutdown_grace: Duration::from_millis(500),
        strategy_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let served = serve(config, vec![Misbehaving("hang", Misbehaviour::Hang)]).await;
    let url = format!("{}/performance-optimize", served.base);
    let _in_flight = tokio::spawn(async move { common::client().post(url).body("").send().await });
    wait_optimizing(&served).await;
    let stopped_at = Instant::now();
    served.stop.send(()).unwrap();
    let finished_in_grace = served.serving.await.unwrap().unwrap();
    assert!(!finished_in_grace);
    let waited = stopped_at.elapsed();
    // At least the 500 ms grace (timer slack: 450 ms), and then no longer waiting for the
    // hanging strategy (whose own timeout is 60 s); generous for a loaded machine.
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_and_hanging_strategies_leave_the_agent_serving() {
    // The panic is reported without a backtrace: symbolizing a debug build's backtrace (with
    // RUST_BACKTRACE set) took over 2 s under load, and the strategy's timeout then won.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let config = Config {
        strategy_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let served = serve(
        config,
        vec![
            Misbehaving("boom", Misbehaviour::Panic),
            Misbehaving("hang", Misbehaviour::Hang),
        ],
    )
    .await;
    for (name, error) in [
        ("boom", "panicked: strategy exploded"),
        ("hang", "timed out after 2000 ms"),
    ] {
        let response = common::client()
            .post(format!("{}/performance-optimize", served.base))
            .body(format!(r#"{{"strategy": "{name}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        let record = &body["results"][0];
        assert_eq!(record["success"], false);
        assert!(
            record["error"].as_str().unwrap().contains(error),
            "{record}"
        );
        let health = common::client()
            .get(format!("{}/health", served.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    served.stop.send(()).unwrap();
    assert!(served.serving.await.unwrap().unwrap());
}
