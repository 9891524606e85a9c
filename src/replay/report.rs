//! `--report`: the comparison as one self-contained HTML page (no scripts, no network): per
//! candidate, the first budget's signal recorded and replayed on one chart (the report's,
//! [`crate::recorder::chart`]) with its goal and limit, the candidate's episodes and runs in
//! the chart's upper half and the recording's in its lower half, and the comparison's table.

use std::fmt::Write as _;

use crate::recorder::chart::{self, escape, Chart, Line, Mark, Reach, Shade};
use crate::recorder::Episode;

use super::compare::{Comparison, Decision, Series};

/// The page's own styles; the chart's are [`chart::CSS`].
const CSS: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#1f2933}h1{margin:0}pre{background:#f4f4f4;padding:1em}polyline.recorded{fill:none;stroke:#7b8794;stroke-width:1.5}polyline.replayed{fill:none;stroke:#2563eb;stroke-width:1.5}.episode.replayed{fill:#bfdbfe}.run.replayed{stroke:#1d4ed8}";

/// The page for `results` (one per swept value, or one with no value).
pub fn page(results: &[(Option<String>, Comparison)], key: Option<&str>) -> String {
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>perfpilot replay</title>\
         <style>{CSS}{}</style></head><body>\
         <h1>perfpilot replay</h1>\
         <p>Grey line: the recorded signal; blue line: the replayed one (recorded plus the \
         modelled effect of each run the candidate added, minus that of each recorded run it \
         dropped). Upper half of each chart: the candidate's episodes (shaded blue) and runs \
         (blue lines); lower half: the recording's (shaded yellow, grey lines).</p>",
        chart::CSS
    );
    for (value, comparison) in results {
        let title = match (key, value) {
            (Some(key), Some(value)) => format!("{key} = {value}"),
            _ => "candidate".to_owned(),
        };
        let _ = write!(html, "<section><h2>{}</h2>", escape(&title));
        if let Some(series) = &comparison.series {
            let _ = write!(
                html,
                "<div class=\"chart\" data-budget=\"{0}\"><h3>budget {0}: goal {1}, limit {2}</h3>",
                escape(&series.budget),
                series.goal,
                series.limit
            );
            chart_of(series, comparison).svg(&mut html);
            html.push_str("</div>");
        }
        let _ = write!(
            html,
            "<pre>{}</pre></section>",
            escape(&comparison.to_string())
        );
    }
    html.push_str("</body></html>\n");
    html
}

/// The chart of one candidate: both signals, both sides' episodes and runs.
fn chart_of(series: &Series, comparison: &Comparison) -> Chart {
    let since = series.times.first().copied().unwrap_or(0);
    let until = series.times.last().copied().unwrap_or(since);
    let shades = |episodes: &[Episode], side: &str, reach: Reach| -> Vec<Shade> {
        episodes
            .iter()
            .map(|e| Shade {
                start: e.start as i64,
                end: e.end.map_or(until, |end| end as i64),
                class: format!("episode {side}"),
                title: format!("{} episode {} ({side})", e.budget, e.episode),
                reach,
            })
            .collect()
    };
    let marks = |decisions: &[Decision], side: &str, reach: Reach| -> Vec<Mark> {
        decisions
            .iter()
            .map(|d| Mark {
                at: d.at,
                class: format!("run {side}"),
                title: format!("{} ({side})", d.strategy),
                reach,
            })
            .collect()
    };
    Chart {
        since,
        until,
        bounds: vec![(series.goal, series.limit)],
        shades: [
            shades(&series.recorded_episodes, "recorded", Reach::Lower),
            shades(&series.replayed_episodes, "replayed", Reach::Upper),
        ]
        .concat(),
        lines: vec![
            Line {
                class: "recorded".to_owned(),
                points: chart::points(&series.times, &series.recorded),
            },
            Line {
                class: "replayed".to_owned(),
                points: chart::points(&series.times, &series.replayed),
            },
        ],
        marks: [
            marks(&comparison.recorded_decisions, "recorded", Reach::Lower),
            marks(&comparison.replayed_decisions, "replayed", Reach::Upper),
        ]
        .concat(),
    }
}
