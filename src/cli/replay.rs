//! `perfpilot replay`: a candidate configuration over a recording (see [`crate::replay`]).

use std::fmt::Write as _;
use std::sync::Arc;

use super::ReplayArgs;
use crate::replay::sweep::{load_candidate, Sweep};
use crate::replay::{self, Comparison, Recording};

/// Runs `perfpilot replay`. Every input is checked before anything is written.
pub fn run(args: &ReplayArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("candidate configuration {}: {e}", args.config.display()))?;
    let sweep = args
        .sweep
        .as_deref()
        .map(Sweep::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let candidates = match &sweep {
        None => vec![(None, load_candidate(&text).map_err(|e| e.to_string())?)],
        Some(sweep) => sweep
            .values
            .iter()
            .map(|value| {
                sweep
                    .candidate(&text, value)
                    .map(|config| (Some(value.clone()), config))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?,
    };
    // In a sweep, the recording's own row is measured against the configuration as given
    // (its goal and limit), each value's row against its own.
    let base = match &sweep {
        None => None,
        Some(_) => Some(load_candidate(&text).map_err(|e| e.to_string())?),
    };
    let recording = Arc::new(Recording::open(&args.recording).map_err(|e| e.to_string())?);
    let recorded = base
        .map(|config| replay::replay(&recording, &config).map(|c| c.recorded))
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut results = Vec::with_capacity(candidates.len());
    for (value, config) in &candidates {
        let comparison = replay::replay(&recording, config).map_err(|e| e.to_string())?;
        results.push((value.clone(), comparison));
    }
    if let Some(path) = &args.report {
        let page = replay::report::page(&results, sweep.as_ref().map(|s| s.key.as_str()));
        std::fs::write(path, page).map_err(|e| format!("--report {}: {e}", path.display()))?;
    }
    if args.json {
        let json = match &sweep {
            None => serde_json::to_value(&results[0].1),
            Some(sweep) => serde_json::to_value(
                results
                    .iter()
                    .map(|(value, c)| serde_json::json!({ "key": sweep.key, "value": value, "result": c }))
                    .collect::<Vec<_>>(),
            ),
        }
        .map_err(|e| e.to_string())?;
        println!("{json:#}");
        return Ok(());
    }
    match &sweep {
        None => print!("{}", results[0].1),
        Some(sweep) => print!("{}", sweep_table(&sweep.key, recorded.as_ref(), &results)),
    }
    Ok(())
}

/// One row per swept value, the recording's row (`recorded`) first.
fn sweep_table(
    key: &str,
    recorded: Option<&replay::Summary>,
    results: &[(Option<String>, Comparison)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:>6} {:>11} {:>11} {:>12} {:>12} {:>8}",
        key, "episodes", "runs", "disruptive", "exhausted", "above goal", "above limit", "peak"
    );
    let mut row = |label: &str, s: &replay::Summary| {
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>6} {:>11} {:>11} {:>10.0} s {:>10.0} s {:>8}",
            label,
            s.episodes,
            s.runs,
            s.disruptive_runs,
            s.exhaustions,
            s.seconds_above_goal,
            s.seconds_above_limit,
            s.peak.map_or("-".to_owned(), |p| format!("{p:.3}"))
        );
    };
    if let Some(recorded) = recorded {
        row("recorded", recorded);
    }
    for (value, comparison) in results {
        row(
            value.as_deref().unwrap_or("candidate"),
            &comparison.replayed,
        );
    }
    // The notes: how far each row is the recording's and how far the effect model's.
    for (value, c) in results {
        let _ = writeln!(
            out,
            "{}: {} recorded runs shifted in time (matched), {} added, {} dropped; the replayed \
             signal departs from the recorded one by up to {:.3}",
            value.as_deref().unwrap_or("candidate"),
            c.matched_runs,
            c.added_runs,
            c.dropped_runs,
            c.largest_departure
        );
    }
    if let Some((_, c)) = results.first() {
        let _ = writeln!(out, "how the departure was computed: {}.", c.departure);
    }
    out
}
