//! `perfpilot export`: finds the recording as the agent does and writes it out.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use perfpilot_strategies::snapshot::unix_millis::millis;

use super::{ExportArgs, ExportFormat};
use crate::config::Overrides;
use crate::recorder::export::{self, Recording};
use crate::recorder::parse_when;

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

/// Runs `perfpilot export`.
pub fn run(args: &ExportArgs) -> Result<(), String> {
    let now = SystemTime::now();
    let since = millis(parse_when("--since", &args.since, now)?) as i64;
    let until = match &args.until {
        Some(text) => millis(parse_when("--until", text, now)?) as i64,
        None => millis(now) as i64,
    };
    if since > until {
        return Err(format!("--since {} is after --until", args.since));
    }
    let dir = recording_dir(&args.recording, &args.config)?;
    let recording = Recording::read(&dir, since, until)
        .map_err(|e| format!("cannot read the recording in {}: {e}", dir.display()))?;
    for (path, why) in &recording.unreadable {
        eprintln!("perfpilot: left out {}: {why}", path.display());
    }
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
