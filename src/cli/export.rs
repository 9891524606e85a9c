//! `perfpilot export`: finds the recording as the agent does and writes it out.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use perfpilot_strategies::snapshot::unix_millis::millis;

use super::{ExportArgs, ExportFormat, ReportArgs};
use crate::config::Overrides;
use crate::recorder::export::{self, Recording};
use crate::recorder::parse_when;
use crate::recorder::report::Report;

/// The state directory: `--recording`, else the `state_dir` of the configuration (file,
/// environment) the agent would load.
fn recording_dir(recording: &Option<PathBuf>, config: &Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(dir) = recording {
        return Ok(dir.clone());
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = crate::reload::ConfigSource::new(config.clone(), env, Overrides::default())
        .load()
        .map_err(|e| e.to_string())?;
    loaded.config.state_dir.ok_or_else(|| {
        "no recording: the configuration sets no state_dir (set it, or pass --recording DIR)"
            .to_owned()
    })
}

/// `--since` and `--until` in ms, checked.
fn window(since: &str, until: &Option<String>) -> Result<(i64, i64), String> {
    let now = SystemTime::now();
    let start = millis(parse_when("--since", since, now)?) as i64;
    let end = match until {
        Some(text) => millis(parse_when("--until", text, now)?) as i64,
        None => millis(now) as i64,
    };
    if start > end {
        return Err(format!("--since {since} is after --until"));
    }
    Ok((start, end))
}

/// The recording of `since..=until`, found as the agent finds it; unreadable files said.
fn read(
    recording: &Option<PathBuf>,
    config: &Option<PathBuf>,
    (since, until): (i64, i64),
) -> Result<(PathBuf, Recording), String> {
    let dir = recording_dir(recording, config)?;
    let read = Recording::read(&dir, since, until)
        .map_err(|e| format!("cannot read the recording in {}: {e}", dir.display()))?;
    for (path, why) in &read.unreadable {
        eprintln!("perfpilot: left out {}: {why}", path.display());
    }
    Ok((dir, read))
}

fn output(path: &Option<PathBuf>) -> Result<Box<dyn Write>, String> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// Runs `perfpilot report`.
pub fn report(args: &ReportArgs) -> Result<(), String> {
    let (since, until) = window(&args.since, &args.until)?;
    let (dir, recording) = read(&args.recording, &args.config, (since, until))?;
    let mut report = Report::new(
        since,
        until,
        recording.bands(),
        recording.log(),
        &dir.display().to_string(),
    );
    for row in recording.rows(since, until) {
        report.add(&row);
    }
    let mut out = output(&args.output)?;
    out.write_all(report.html().as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the report: {e}"))
}

/// Runs `perfpilot export`.
pub fn run(args: &ExportArgs) -> Result<(), String> {
    let (since, until) = window(&args.since, &args.until)?;
    let (_, recording) = read(&args.recording, &args.config, (since, until))?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let written = match args.format {
        ExportFormat::Ndjson => export::ndjson(&recording, since, until, &mut out),
        ExportFormat::Csv => export::csv(&recording, since, until, &mut out),
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the export: {e}"))
}
