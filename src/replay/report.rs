//! `--report`: the comparison as one self-contained HTML page (no scripts, no network): per
//! candidate, the first budget's signal recorded and replayed with its goal and limit as an
//! inline SVG chart, the recorded runs marked below it and the replayed ones above, and the
//! comparison's table.

use std::fmt::Write as _;

use super::compare::{Comparison, Decision, Series};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 240.0;
/// The most points drawn per line (longer series are thinned to it).
const MAX_POINTS: usize = 2000;

/// The page for `results` (one per swept value, or one with no value).
pub fn page(results: &[(Option<String>, Comparison)], key: Option<&str>) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>perfpilot replay</title>\
         <style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}\
         .recorded{stroke:#888;fill:none}.replayed{stroke:#1f6feb;fill:none}\
         .goal{stroke:#d29922}.limit{stroke:#cf222e}</style></head><body>\
         <h1>perfpilot replay</h1>\
         <p>Grey: the recorded signal; blue: the replayed one (recorded plus the modelled effect \
         of each run the candidate added, minus that of each recorded run it dropped). Marks \
         below the chart: recorded runs; above: the candidate's.</p>",
    );
    for (value, comparison) in results {
        let title = match (key, value) {
            (Some(key), Some(value)) => format!("{key} = {value}"),
            _ => "candidate".to_owned(),
        };
        let _ = write!(html, "<section><h2>{}</h2>", escape(&title));
        if let Some(series) = &comparison.series {
            html.push_str(&chart(series, comparison));
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

fn chart(series: &Series, comparison: &Comparison) -> String {
    let (Some(&first), Some(&last)) = (series.times.first(), series.times.last()) else {
        return String::new();
    };
    let span = (last - first).max(1) as f64;
    let top = series
        .recorded
        .iter()
        .chain(&series.replayed)
        .flatten()
        .copied()
        .fold(series.limit, f64::max)
        * 1.1;
    let x = |t: i64| (t - first) as f64 / span * WIDTH;
    let y = |v: f64| HEIGHT - v / top * HEIGHT;
    let line = |values: &[Option<f64>], class: &str| {
        let step = values.len().div_ceil(MAX_POINTS).max(1);
        let points: String = series
            .times
            .iter()
            .zip(values)
            .step_by(step)
            .filter_map(|(t, v)| v.map(|v| format!("{:.1},{:.1} ", x(*t), y(v))))
            .collect();
        format!("<polyline class=\"{class}\" points=\"{points}\"/>")
    };
    let marks = |decisions: &[Decision], at: f64, class: &str| -> String {
        decisions
            .iter()
            .map(|d| {
                format!(
                    "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{at}\" r=\"3\"><title>{}</title></circle>",
                    x(d.at),
                    escape(&d.strategy)
                )
            })
            .collect()
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" \
         viewBox=\"0 -12 {WIDTH} {}\"><title>{}</title>\
         <line class=\"goal\" x1=\"0\" x2=\"{WIDTH}\" y1=\"{g:.1}\" y2=\"{g:.1}\"/>\
         <line class=\"limit\" x1=\"0\" x2=\"{WIDTH}\" y1=\"{l:.1}\" y2=\"{l:.1}\"/>\
         {}{}{}{}</svg>",
        HEIGHT + 24.0,
        HEIGHT + 24.0,
        escape(&series.budget),
        line(&series.recorded, "recorded"),
        line(&series.replayed, "replayed"),
        marks(&comparison.recorded_decisions, HEIGHT + 8.0, "recorded"),
        marks(&comparison.replayed_decisions, -6.0, "replayed"),
        g = y(series.goal),
        l = y(series.limit),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
