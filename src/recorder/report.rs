//! `perfpilot report` and `GET /report`: one self-contained HTML page (inline CSS and SVG, no
//! script, nothing fetched) an operator can attach to an incident: a summary, each budget's
//! signal with its goal, limit and shaded episodes, the rungs climbed and what each relieved,
//! each strategy's runs and effectiveness, time above goal and above limit, OOM kills and
//! reloads.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use super::chart::{self, escape, Mark, Reach, Shade};
use super::record::{Band, Log};
use super::{columns, Row};

/// The numbers at the top of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Samples in the window.
    pub samples: usize,
    /// Budget episodes that overlap the window.
    pub episodes: usize,
    /// Runs that started in the window (dry runs included, as recorded).
    pub runs: usize,
    /// Those whose verdict is "helped".
    pub helped: usize,
    /// Seconds any budget's signal spent above its goal, summed over budgets.
    pub seconds_above_goal: f64,
    /// Seconds any budget's signal spent above its limit, summed over budgets.
    pub seconds_above_limit: f64,
    /// OOM kills seen.
    pub oom_kills: u64,
    /// Configuration reloads.
    pub reloads: usize,
    /// The strategy whose judged runs relieved their signal most on average, and that mean
    /// relief as a share of the signal before (0..1).
    pub best: Option<(String, f64)>,
}

/// One charted signal: its bounds and the series to draw.
#[derive(Debug)]
struct Chart {
    signal: &'static str,
    column: usize,
    bands: Vec<Band>,
    /// (time, highest value) per stretch.
    points: Vec<(i64, f64)>,
    /// Per band: seconds above goal, above limit.
    above: Vec<(f64, f64)>,
    /// The previous sample, for the time above.
    last: Option<(i64, Option<f64>)>,
}

/// A report being built from a window's samples (fed one at a time) and entries.
#[derive(Debug)]
pub struct Report {
    since: i64,
    until: i64,
    charts: Vec<Chart>,
    samples: usize,
    stretch: i64,
    log: Log,
    title: String,
}

impl Report {
    /// A report of `since..=until` (ms) with these budgets' bounds and entries; `title` names
    /// the agent or the recording.
    pub fn new(since: i64, until: i64, bands: Vec<Band>, log: Log, title: &str) -> Report {
        let mut signals: Vec<&'static str> = Vec::new();
        for band in &bands {
            let name = columns::name(columns::index_of(band_signal(band)).unwrap_or(0));
            if !signals.contains(&name) {
                signals.push(name);
            }
        }
        if signals.is_empty() {
            signals.push("memory_usage");
        }
        let charts = signals
            .into_iter()
            .filter_map(|signal| {
                let column = columns::index_of(signal)?;
                let bands: Vec<Band> = bands
                    .iter()
                    .filter(|b| band_signal(b) == signal)
                    .cloned()
                    .collect();
                Some(Chart {
                    signal,
                    column,
                    above: vec![(0.0, 0.0); bands.len()],
                    bands,
                    points: Vec::new(),
                    last: None,
                })
            })
            .collect();
        Report {
            since,
            until,
            charts,
            samples: 0,
            stretch: chart::stretch(since, until),
            log,
            title: title.to_owned(),
        }
    }

    /// Adds a sample (in time order; one outside the window is ignored).
    pub fn add(&mut self, row: &Row) {
        if !(self.since..=self.until).contains(&row.time) {
            return;
        }
        self.samples += 1;
        for chart in &mut self.charts {
            let value = row.values[chart.column].filter(|v| v.is_finite());
            // Time above counts from each sample to the next, by the earlier one's value.
            if let Some((before, Some(was))) = chart.last {
                let seconds = (row.time - before).max(0) as f64 / 1000.0;
                for (band, above) in chart.bands.iter().zip(chart.above.iter_mut()) {
                    if was > band.goal {
                        above.0 += seconds;
                    }
                    if was > band.limit {
                        above.1 += seconds;
                    }
                }
            }
            chart.last = Some((row.time, value));
            if let Some(value) = value {
                chart::add_point(&mut chart.points, self.since, self.stretch, row.time, value);
            }
        }
    }

    fn runs(&self) -> Vec<&Value> {
        let (since, until) = (self.since.max(0) as u64, self.until.max(0) as u64);
        self.log
            .runs
            .iter()
            .filter(|(at, _)| (since..=until).contains(at))
            .map(|(_, run)| run)
            .collect()
    }

    fn episodes(&self) -> Vec<&super::Episode> {
        let (since, until) = (self.since.max(0) as u64, self.until.max(0) as u64);
        self.log
            .episodes
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.start <= until && e.end.is_none_or(|end| end >= since))
            .collect()
    }

    /// Each strategy's runs in the window.
    fn strategies(&self) -> BTreeMap<String, Tally> {
        let mut per: BTreeMap<String, Tally> = BTreeMap::new();
        for run in self.runs() {
            let name = run["strategy"].as_str().unwrap_or("?").to_owned();
            per.entry(name).or_default().add(run);
        }
        per
    }

    /// The numbers at the top.
    pub fn summary(&self) -> Summary {
        let runs = self.runs();
        let (since, until) = (self.since.max(0) as u64, self.until.max(0) as u64);
        let oom_kills = self
            .log
            .oom_kills
            .between(since, until)
            .iter()
            .map(|k| k["newKills"].as_u64().unwrap_or(1))
            .sum();
        let best = self
            .strategies()
            .into_iter()
            .filter(|(_, tally)| tally.helped > 0)
            .filter_map(|(name, tally)| Some((name, tally.mean()?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Summary {
            samples: self.samples,
            episodes: self.episodes().len(),
            runs: runs.len(),
            helped: runs.iter().filter(|r| r["helped"] == true).count(),
            seconds_above_goal: self.charts.iter().flat_map(|c| &c.above).map(|a| a.0).sum(),
            seconds_above_limit: self.charts.iter().flat_map(|c| &c.above).map(|a| a.1).sum(),
            oom_kills,
            reloads: self.log.reloads.between(since, until).len(),
            best,
        }
    }

    /// The page.
    pub fn html(&self) -> String {
        let summary = self.summary();
        let mut out = String::with_capacity(64 * 1024);
        let _ = write!(
            out,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>perfpilot report: {}</title><style>{CSS}{}{CSS_AFTER}</style></head><body>",
            escape(&self.title),
            chart::CSS
        );
        let _ = write!(
            out,
            "<h1>perfpilot report</h1><p class=\"muted\">{} · {} to {} · {} samples</p>",
            escape(&self.title),
            time(self.since),
            time(self.until),
            summary.samples
        );
        let best = match &summary.best {
            Some((name, share)) => format!(
                "; {} relieved {:.0} % on average",
                escape(name),
                share * 100.0
            ),
            None => String::new(),
        };
        let _ = write!(
            out,
            "<section id=\"summary\" data-samples=\"{}\" data-episodes=\"{}\" data-runs=\"{}\" data-helped=\"{}\" data-seconds-above-goal=\"{:.1}\" data-seconds-above-limit=\"{:.1}\" data-oom-kills=\"{}\" data-reloads=\"{}\"><h2>Summary</h2><p class=\"summary\">{} episodes, {:.0} s above limit ({:.0} s above goal), {} runs, {} helped{best}; {} OOM kills, {} reloads.</p></section>",
            summary.samples, summary.episodes, summary.runs, summary.helped, summary.seconds_above_goal, summary.seconds_above_limit, summary.oom_kills, summary.reloads,
            summary.episodes, summary.seconds_above_limit, summary.seconds_above_goal, summary.runs, summary.helped, summary.oom_kills, summary.reloads,
        );
        out.push_str("<section id=\"budgets\"><h2>Budgets</h2>");
        for chart in &self.charts {
            self.chart(&mut out, chart);
        }
        out.push_str("</section>");
        self.rungs(&mut out);
        self.strategy_table(&mut out);
        self.incidents(&mut out);
        out.push_str("</body></html>\n");
        out
    }

    fn chart(&self, out: &mut String, chart: &Chart) {
        let _ = write!(
            out,
            "<div class=\"chart\" data-signal=\"{}\"><h3>{}</h3>",
            chart.signal, chart.signal
        );
        for (band, (goal, limit)) in chart.bands.iter().zip(&chart.above) {
            let _ = write!(
                out,
                "<p>budget <b>{}</b>: goal {}, limit {}; <span class=\"above-goal\">{goal:.0} s above goal</span>, <span class=\"above-limit\">{limit:.0} s above limit</span></p>",
                escape(&band.name), band.goal, band.limit
            );
        }
        let names: Vec<&str> = chart.bands.iter().map(|b| b.name.as_str()).collect();
        let shades = self
            .episodes()
            .into_iter()
            .filter(|e| names.contains(&e.budget.as_str()))
            .map(|episode| Shade {
                start: episode.start as i64,
                end: episode.end.map_or(self.until, |e| e as i64),
                class: "episode".to_owned(),
                title: format!("{} episode {}", episode.budget, episode.episode),
                reach: Reach::Full,
            })
            .collect();
        let marks = self
            .runs()
            .into_iter()
            .filter_map(|run| {
                Some(Mark {
                    at: run["startedAt"].as_i64()?,
                    class: if run["helped"] == true {
                        "run helped"
                    } else {
                        "run"
                    }
                    .to_owned(),
                    title: run["strategy"].as_str().unwrap_or("?").to_owned(),
                    reach: Reach::Full,
                })
            })
            .collect();
        let svg = chart::Chart {
            since: self.since,
            until: self.until,
            bounds: chart.bands.iter().map(|b| (b.goal, b.limit)).collect(),
            shades,
            lines: vec![chart::Line {
                class: "signal".to_owned(),
                points: chart.points.clone(),
            }],
            marks,
        };
        if !svg.svg(out) {
            out.push_str("<p class=\"muted\">not read in this window</p>");
        }
        out.push_str("</div>");
    }

    fn rungs(&self, out: &mut String) {
        out.push_str("<section id=\"rungs\"><h2>Rungs climbed</h2><table><tr><th>budget</th><th>rung</th><th>strategy</th><th>runs</th><th>helped</th><th>mean relief</th></tr>");
        let mut per: BTreeMap<(String, u64, String), Tally> = BTreeMap::new();
        for run in self.runs() {
            let step = &run["budget"];
            let Some(budget) = step["budget"].as_str() else {
                continue;
            };
            let key = (
                budget.to_owned(),
                step["rung"].as_u64().unwrap_or(0),
                run["strategy"].as_str().unwrap_or("?").to_owned(),
            );
            per.entry(key).or_default().add(run);
        }
        for ((budget, rung, strategy), tally) in &per {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(budget),
                rung + 1,
                escape(strategy),
                tally.runs,
                tally.helped,
                percent(tally.mean())
            );
        }
        if per.is_empty() {
            out.push_str("<tr><td colspan=\"6\" class=\"muted\">no rung ran</td></tr>");
        }
        out.push_str("</table></section>");
    }

    fn strategy_table(&self, out: &mut String) {
        out.push_str("<section id=\"strategies\"><h2>Strategies</h2><table><tr><th>strategy</th><th>runs</th><th>judged</th><th>helped</th><th>effectiveness</th><th>mean relief</th></tr>");
        let strategies = self.strategies();
        for (name, tally) in &strategies {
            let effectiveness =
                (tally.judged > 0).then(|| tally.helped as f64 / tally.judged as f64);
            let _ = write!(
                out,
                "<tr data-strategy=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td></tr>",
                escape(name),
                tally.runs,
                tally.judged,
                tally.helped,
                percent(effectiveness),
                percent(tally.mean())
            );
        }
        if strategies.is_empty() {
            out.push_str("<tr><td colspan=\"6\" class=\"muted\">no run</td></tr>");
        }
        out.push_str("</table></section>");
    }

    fn incidents(&self, out: &mut String) {
        let (since, until) = (self.since.max(0) as u64, self.until.max(0) as u64);
        out.push_str("<section id=\"oom-kills\"><h2>OOM kills</h2><ul>");
        let kills = self.log.oom_kills.between(since, until);
        for kill in &kills {
            let _ = write!(
                out,
                "<li>{}: {} killed (memory usage before: {})</li>",
                time(kill["timestamp"].as_i64().unwrap_or(0)),
                kill["newKills"],
                kill["memoryUsageBefore"]
            );
        }
        if kills.is_empty() {
            out.push_str("<li class=\"muted\">none</li>");
        }
        out.push_str("</ul></section><section id=\"exhaustions\"><h2>Exhausted ladders</h2><ul>");
        let exhaustions = self.log.exhaustions.between(since, until);
        for e in &exhaustions {
            let _ = write!(
                out,
                "<li>{}: {}</li>",
                time(e["at"].as_i64().unwrap_or(0)),
                escape(e["message"].as_str().unwrap_or(""))
            );
        }
        if exhaustions.is_empty() {
            out.push_str("<li class=\"muted\">none</li>");
        }
        out.push_str("</ul></section><section id=\"reloads\"><h2>Reloads</h2><ul>");
        let reloads = self.log.reloads.between(since, until);
        for r in &reloads {
            let _ = write!(
                out,
                "<li>{}: {} ({})</li>",
                time(r.at as i64),
                escape(&r.reason),
                escape(&r.source)
            );
        }
        if reloads.is_empty() {
            out.push_str("<li class=\"muted\">none</li>");
        }
        out.push_str("</ul></section>");
    }
}

/// The report of `since..=until` (ms) from a running agent's recorder: the segments on disk
/// older than its memory, then what it holds in memory. Reads files: call it off the async
/// runtime. A segment that cannot be read is left out (the agent refuses it at start).
pub fn from_recorder(recorder: &super::Recorder, since: i64, until: i64, title: &str) -> Report {
    let excerpt = recorder.excerpt(at(since), at(until));
    let older: Vec<_> = excerpt
        .older
        .iter()
        .filter_map(|path| super::store::read(path).ok())
        .collect();
    let mut log = Log::default();
    for segment in &older {
        log.restore(segment.entries.clone());
    }
    log.restore(super::segment::SegmentEntries {
        runs: excerpt.runs.clone(),
        episodes: excerpt.episodes.clone(),
        wakes: excerpt.wakes.clone(),
        oom_kills: excerpt.oom_kills.clone(),
        exhaustions: excerpt.exhaustions.clone(),
        reloads: excerpt.reloads.clone(),
        budgets: Vec::new(),
    });
    let mut report = Report::new(since, until, excerpt.bands.clone(), log, title);
    let blocks = older.iter().map(|s| &s.block).chain(&excerpt.blocks);
    let mut latest = i64::MIN;
    for row in blocks.flat_map(|block| block.rows()) {
        // A segment on disk and the memory may both hold the minute they meet in.
        if row.time > latest {
            latest = row.time;
            report.add(&row);
        }
    }
    report
}

fn at(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

/// A band's signal's name.
fn band_signal(band: &Band) -> &'static str {
    band.signal.row().name
}

/// A run's relief as a share of its signal before it: (before − after) / before.
fn relief(run: &Value) -> Option<f64> {
    let (before, after) = (run["before"].as_f64()?, run["after"].as_f64()?);
    (before.abs() > f64::EPSILON).then(|| (before - after) / before.abs())
}

/// A share (0..1) as a whole percentage, or a dash when there is none.
fn percent(share: Option<f64>) -> String {
    share.map_or("–".into(), |s| format!("{:.0} %", s * 100.0))
}

/// Runs counted for one strategy or one rung.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    /// Runs with a verdict.
    judged: usize,
    helped: usize,
    /// The relief of each run that has its before and after.
    shares: Vec<f64>,
}

impl Tally {
    fn add(&mut self, run: &Value) {
        self.runs += 1;
        self.judged += usize::from(run["helped"].is_boolean());
        self.helped += usize::from(run["helped"] == true);
        self.shares.extend(relief(run));
    }

    /// The mean relief, if any run has one.
    fn mean(&self) -> Option<f64> {
        (!self.shares.is_empty())
            .then(|| self.shares.iter().sum::<f64>() / self.shares.len() as f64)
    }
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// The page's styles (the chart's, [`chart::CSS`], go between these two).
const CSS: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#1f2933}h1{margin:0}.muted{color:#7b8794}table{border-collapse:collapse;margin:.5em 0}td,th{border-bottom:1px solid #e4e7eb;padding:.25em .75em;text-align:left}";
const CSS_AFTER: &str = ".summary{font-size:1.15em}";

#[cfg(test)]
mod tests {
    use perfpilot_strategies::Signal;
    use serde_json::json;

    use super::*;
    use crate::recorder::Episode;

    fn row(time: i64, usage: f64) -> Row {
        let mut values = vec![None; columns::count()];
        values[columns::index_of("memory_usage").unwrap()] = Some(usage);
        Row { time, values }
    }

    #[test]
    fn the_summary_counts_what_the_window_holds_and_every_section_is_drawn() {
        let mut log = Log::default();
        log.record_run(json!({"id": 1, "startedAt": 12_000, "strategy": "trim", "helped": true, "before": 0.9, "after": 0.72,
                              "budget": {"budget": "memory", "episode": 1, "rung": 0}}));
        log.record_run(json!({"id": 2, "startedAt": 15_000, "strategy": "purge", "helped": false, "before": 0.8, "after": 0.8}));
        log.record_episode(Episode {
            budget: "memory".into(),
            episode: 1,
            start: 10_000,
            end: Some(16_000),
        });
        let bands = vec![Band {
            name: "memory".into(),
            signal: Signal::MemoryUsage,
            goal: 0.8,
            limit: 0.95,
        }];
        let mut report = Report::new(0, 30_000, bands, log, "test <agent>");
        for (i, usage) in [0.5, 0.85, 0.97, 0.9, 0.7, 0.6].iter().enumerate() {
            report.add(&row(i as i64 * 5_000, *usage));
        }
        let summary = report.summary();
        assert_eq!(
            (
                summary.samples,
                summary.episodes,
                summary.runs,
                summary.helped
            ),
            (6, 1, 2, 1)
        );
        // 0.85, 0.97 and 0.9 each hold 5 s above goal; 0.97 5 s above limit.
        assert_eq!(
            (summary.seconds_above_goal, summary.seconds_above_limit),
            (15.0, 5.0)
        );
        let best = summary.best.expect("trim helped");
        assert_eq!(best.0, "trim");
        assert!((best.1 - 0.2).abs() < 1e-9);
        let html = report.html();
        for part in [
            "id=\"summary\"",
            "id=\"budgets\"",
            "id=\"rungs\"",
            "id=\"strategies\"",
            "id=\"oom-kills\"",
            "id=\"reloads\"",
            "class=\"episode\"",
            "class=\"goal\"",
            "class=\"limit\"",
            "class=\"signal\"",
            "class=\"run helped\"",
            "trim relieved 20 % on average",
            "test &lt;agent&gt;",
        ] {
            assert!(html.contains(part), "{part} missing");
        }
        assert!(
            !html.contains("<script") && !html.contains("http"),
            "self-contained"
        );
    }
}
