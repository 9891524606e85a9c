//! Run with: cargo run --example history_bench -- STATE_DIR [HOURS]
//!
//! Writes HOURS (default 1) of recording at 1 s into STATE_DIR, ending now, as the agent
//! writes it (a segment file a minute), for `scripts/bench-recorder.sh --hour` to start an
//! agent on it and time `GET /performance-metrics/history` over the hour: the agent keeps
//! the last 15 minutes in memory and reads the rest from these segments. Each sample is a real
//! sample of this process by the agent's own sampler (every signal an idle agent records),
//! taken back to back and stamped a second apart.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use perfpilot::__internal::{Sampler, SamplerSettings};

#[path = "support/generated_recording.rs"]
mod generated_recording;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: history_bench STATE_DIR [HOURS]")?,
    );
    let hours: u64 = match args.next() {
        Some(text) => text
            .parse()
            .map_err(|_| format!("HOURS: not a number: {text}"))?,
        None => 1,
    };
    if !(1..=24).contains(&hours) {
        return Err("HOURS must be 1..24".into());
    }
    let seconds = hours * 3600;
    let start = SystemTime::now() - Duration::from_secs(seconds);
    let mut sampler = Sampler::new(SamplerSettings::default());
    let bytes = generated_recording::write(&dir, start, seconds, |_, at| {
        let mut snapshot = sampler.sample();
        snapshot.taken_at = at;
        snapshot
    })?;
    println!(
        "{seconds} samples written to {}: {bytes} bytes in {} segments",
        dir.display(),
        seconds.div_ceil(60)
    );
    Ok(())
}
