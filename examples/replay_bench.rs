//! Run with: cargo run --release --example replay_bench [-- HOURS]
//!
//! How long `perfpilot replay` takes over a day at 1 s: writes a generated recording of
//! HOURS (default 24) hours at 1 s (86,400 samples) as the agent writes it (a segment file a
//! minute, each sample with the engine's clock), then replays it under the leak bench's
//! budget configuration (scripts/leak-budget.toml), and prints a table: the time to read the
//! recording and the time to replay it. The signal: a daily wave between 0.45 and 0.75 of
//! memory, with an hourly leak of up to 0.3 that the ladder's second rung relieves (no runs
//! are recorded: every replayed run is modelled, with the assumed effect).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use perfpilot::replay::sweep::load_candidate;
use perfpilot::replay::{self, Recording};
use perfpilot_strategies::Snapshot;

#[path = "support/generated_recording.rs"]
mod generated_recording;

/// The leak bench's budget configuration (one file, also read by scripts/bench-leak.sh and
/// scripts/replay-fixtures.sh), on a demo that is not there: the replay runs no webhook.
const LEAK_BUDGET: &str = include_str!("../scripts/leak-budget.toml");

/// The built-in strategies left out: the leak bench's agent makes no use of them.
const NO_BUILTINS: &str = r#"
[strategies.memory_purge]
enabled = false
[strategies.cache_trim]
enabled = false
[strategies.connection_reap]
enabled = false
[strategies.interval_backoff]
enabled = false
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hours: u64 = match std::env::args().nth(1) {
        Some(text) => text
            .parse()
            .map_err(|_| format!("HOURS: not a number: {text}"))?,
        None => 24,
    };
    if !(1..=48).contains(&hours) {
        return Err("HOURS must be 1..48".into());
    }
    let dir = std::env::temp_dir().join(format!("perfpilot-replay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&dir, hours);
    std::fs::remove_dir_all(&dir)?;
    result
}

fn bench(dir: &std::path::Path, hours: u64) -> Result<(), Box<dyn std::error::Error>> {
    let samples = hours * 3600;
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000);
    let started = Instant::now();
    let bytes = generated_recording::write(dir, start, samples, |second, at| {
        let day = (second as f64 / 86_400.0) * std::f64::consts::TAU;
        let hour = (second % 3600) as f64 / 3600.0;
        let mut snapshot = Snapshot::empty(at);
        snapshot.memory_usage_ratio = Some(0.6 + 0.15 * day.sin() + 0.3 * hour * hour);
        snapshot
    })?;
    let generated = started.elapsed();

    let started = Instant::now();
    let recording = Arc::new(Recording::open(dir)?);
    let read = started.elapsed();
    let config = LEAK_BUDGET.replace("{demo}", "http://127.0.0.1:9") + NO_BUILTINS;
    let config = load_candidate(&config)?;
    let started = Instant::now();
    let comparison = replay::replay(&recording, &config)?;
    let replayed = started.elapsed();

    println!("| what | value |");
    println!("|---|---|");
    println!("| samples (1 s) | {} |", recording.samples.len());
    println!("| segments on disk | {} KiB |", bytes / 1024);
    println!("| generate and write | {:.2} s |", generated.as_secs_f64());
    println!("| read the recording | {:.2} s |", read.as_secs_f64());
    println!("| replay (one core) | {:.2} s |", replayed.as_secs_f64());
    println!(
        "| replayed: episodes, runs | {}, {} |",
        comparison.replayed.episodes, comparison.replayed.runs
    );
    Ok(())
}
