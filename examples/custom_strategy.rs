//! Run with: cargo run --example custom_strategy
//!
//! A strategy of your own, registered on the builder and triggered by its own signal: a
//! session store that keeps growing, and a `drop-idle-sessions` strategy that drops the
//! oldest half of it whenever the process's resident memory crosses a threshold. The example
//! grows the store, waits for the agent to act by itself, prints the record, and exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perfpilot::{
    async_trait, Agent, Context, Event, Outcome, Signal, Strategy, StrategyError, TriggerSpec,
};

const MIB: u64 = 1024 * 1024;

/// Sessions by id (ids grow, so the first ones are the oldest).
#[derive(Debug, Default)]
struct Sessions(Mutex<BTreeMap<u64, Vec<u8>>>);

impl Sessions {
    fn add(&self, id: u64, bytes: usize) {
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(id, vec![1; bytes]);
    }

    /// Drops the oldest half; returns (sessions dropped, bytes freed).
    fn drop_oldest_half(&self) -> (usize, usize) {
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let drop: Vec<u64> = sessions.keys().take(sessions.len() / 2).copied().collect();
        let bytes = drop
            .iter()
            .filter_map(|id| sessions.remove(id))
            .map(|s| s.len())
            .sum();
        (drop.len(), bytes)
    }
}

/// The user's strategy: it reports what it measured, like the built-ins do.
#[derive(Debug)]
struct DropIdleSessions {
    sessions: Arc<Sessions>,
}

#[async_trait]
impl Strategy for DropIdleSessions {
    fn name(&self) -> &str {
        "drop-idle-sessions"
    }

    fn description(&self) -> &str {
        "drop the oldest half of the session store"
    }

    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        let (dropped, bytes) = self.sessions.drop_oldest_half();
        Ok(
            Outcome::acted(format!("dropped {dropped} sessions at {}", ctx.level))
                .with("sessions_dropped", dropped)
                .with("bytes_freed", bytes),
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sessions = Arc::new(Sessions::default());
    let rss_now = perfpilot::strategies::proc_self::rss_bytes().unwrap_or(0);
    let threshold = (rss_now + 48 * MIB) as f64;

    let agent = Agent::builder()
        .interval(Duration::from_millis(200))
        .strategy(
            Arc::new(DropIdleSessions {
                sessions: Arc::clone(&sessions),
            }),
            TriggerSpec::new(Signal::RssBytes, threshold).cooldown(Duration::from_secs(1)),
        )
        .spawn()?;
    let mut events = agent.subscribe();
    println!(
        "RSS {} MiB; drop-idle-sessions fires above {} MiB",
        rss_now / MIB,
        threshold as u64 / MIB
    );

    // The leak: a 1 MiB session every 10 ms, at most 400 of them.
    let grower = tokio::spawn({
        let sessions = Arc::clone(&sessions);
        async move {
            for id in 0..400 {
                sessions.add(id, MIB as usize);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    let record = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(Event::OptimizationCompleted(record))
                    if record.strategy == "drop-idle-sessions" =>
                {
                    return Ok(record)
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await??;
    grower.abort();
    println!("{}", serde_json::to_string_pretty(&*record)?);
    agent.shutdown().await;
    Ok(())
}
