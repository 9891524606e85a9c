//! The one chart of a budget's signal, as inline SVG (no script): its goal and limit lines,
//! shaded episodes, one or more lines of the signal and the runs marked as vertical lines.
//! `perfpilot report` draws one per signal; `perfpilot replay --report` one per candidate,
//! with the recorded and the replayed signal on it.

use std::fmt::Write;

/// Points per line at most (each the highest value of its stretch, so peaks stay visible).
pub const POINTS: usize = 600;
/// The chart's width and height in pixels.
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 180.0;

/// The chart's styles, for a page that draws charts.
pub const CSS: &str = "svg{background:#f8fafc;border:1px solid #e4e7eb}.signal{fill:none;stroke:#2563eb;stroke-width:1.5}.goal{stroke:#b7791f;stroke-dasharray:4 3}.limit{stroke:#d64545}.episode{fill:#fde68a;opacity:.5}.run{stroke:#98a2b3}.run.helped{stroke:#0d9488}";

/// How much of the chart's height a shaded span or a run's line covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// All of it.
    Full,
    /// The upper half.
    Upper,
    /// The lower half.
    Lower,
}

impl Reach {
    /// The top and bottom, in pixels.
    fn span(self) -> (f64, f64) {
        match self {
            Reach::Full => (0.0, HEIGHT),
            Reach::Upper => (0.0, HEIGHT / 2.0),
            Reach::Lower => (HEIGHT / 2.0, HEIGHT),
        }
    }
}

/// A shaded stretch of time: an episode.
#[derive(Debug, Clone)]
pub struct Shade {
    /// From and until, ms since the Unix epoch (cut to the chart's window).
    pub start: i64,
    /// See `start`.
    pub end: i64,
    /// The CSS class (`episode`, with more after a space).
    pub class: String,
    /// The tooltip.
    pub title: String,
    /// How much of the height it covers.
    pub reach: Reach,
}

/// A run: a vertical line at its start.
#[derive(Debug, Clone)]
pub struct Mark {
    /// When it started, ms since the Unix epoch.
    pub at: i64,
    /// The CSS class (`run`, with more after a space).
    pub class: String,
    /// The tooltip (the strategy).
    pub title: String,
    /// How much of the height it covers.
    pub reach: Reach,
}

/// A line of the signal: (time ms, value) points in time order.
#[derive(Debug, Clone)]
pub struct Line {
    /// The CSS class.
    pub class: String,
    /// The points.
    pub points: Vec<(i64, f64)>,
}

/// One chart: a window of time, the budgets' bounds and what to draw in it.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// The window, ms since the Unix epoch.
    pub since: i64,
    /// See `since`.
    pub until: i64,
    /// Each budget's (goal, limit) on this signal.
    pub bounds: Vec<(f64, f64)>,
    /// Episodes, drawn first (under everything else).
    pub shades: Vec<Shade>,
    /// The signal's lines, drawn in order.
    pub lines: Vec<Line>,
    /// Runs, drawn last.
    pub marks: Vec<Mark>,
}

impl Chart {
    /// Writes the chart as an `<svg>` element to `out`; false (and nothing written) when no
    /// line has a point and no bound gives a scale.
    pub fn svg(&self, out: &mut String) -> bool {
        let values = self.lines.iter().flat_map(|l| &l.points).map(|p| p.1);
        let mut hi = values.clone().fold(f64::NEG_INFINITY, f64::max);
        let mut lo = values.fold(f64::INFINITY, f64::min);
        for &(goal, limit) in &self.bounds {
            hi = hi.max(limit * 1.05);
            lo = lo.min(goal * 0.5);
        }
        if !hi.is_finite() || !lo.is_finite() {
            return false;
        }
        lo = lo.min(0.0);
        if hi <= lo {
            hi = lo + 1.0;
        }
        let (since, until) = (self.since, self.until);
        let x = |t: i64| (t - since) as f64 / (until - since).max(1) as f64 * WIDTH;
        let y = |v: f64| HEIGHT - (v - lo) / (hi - lo) * HEIGHT;
        let _ = write!(out, "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\">");
        for shade in &self.shades {
            let x0 = x(shade.start.max(since));
            let x1 = x(shade.end.min(until));
            let (top, bottom) = shade.reach.span();
            let _ = write!(
                out,
                "<rect class=\"{}\" x=\"{x0:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{}\"><title>{}</title></rect>",
                shade.class,
                (x1 - x0).max(1.0),
                bottom - top,
                escape(&shade.title)
            );
        }
        for &(goal, limit) in &self.bounds {
            let _ = write!(
                out,
                "<line class=\"goal\" x1=\"0\" x2=\"{WIDTH}\" y1=\"{0:.1}\" y2=\"{0:.1}\"/>",
                y(goal)
            );
            let _ = write!(
                out,
                "<line class=\"limit\" x1=\"0\" x2=\"{WIDTH}\" y1=\"{0:.1}\" y2=\"{0:.1}\"/>",
                y(limit)
            );
        }
        for line in &self.lines {
            let points: Vec<String> = line
                .points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = write!(
                out,
                "<polyline class=\"{}\" points=\"{}\"/>",
                line.class,
                points.join(" ")
            );
        }
        for mark in &self.marks {
            let (top, bottom) = mark.reach.span();
            let _ = write!(
                out,
                "<line class=\"{class}\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{top}\" y2=\"{bottom}\"><title>{title}</title></line>",
                class = mark.class,
                at = x(mark.at),
                title = escape(&mark.title),
            );
        }
        out.push_str("</svg>");
        true
    }
}

/// The stretch (ms) each point of a line over `since..=until` stands for.
pub fn stretch(since: i64, until: i64) -> i64 {
    ((until - since) / POINTS as i64).max(1)
}

/// Adds `value` at `time` to `points`: the highest value of its stretch (see [`stretch`]).
pub fn add_point(points: &mut Vec<(i64, f64)>, since: i64, stretch: i64, time: i64, value: f64) {
    let start = time - (time - since).rem_euclid(stretch);
    match points.last_mut() {
        Some((t, v)) if *t == start => *v = v.max(value),
        _ => points.push((start, value)),
    }
}

/// A line's points from values sample by sample (`None`: not read), thinned as [`add_point`].
pub fn points(times: &[i64], values: &[Option<f64>]) -> Vec<(i64, f64)> {
    let (Some(&since), Some(&until)) = (times.first(), times.last()) else {
        return Vec::new();
    };
    let stretch = stretch(since, until);
    let mut points = Vec::new();
    for (&time, value) in times.iter().zip(values) {
        if let Some(value) = value.filter(|v| v.is_finite()) {
            add_point(&mut points, since, stretch, time, value);
        }
    }
    points
}

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_keeps_each_stretchs_peak_and_halves_hold_their_marks() {
        // 1,201 samples a second apart over 1,200 s: two to a 2 s stretch (the last alone),
        // 0 then 1 (and 1 at the end), some 0s not read: each point is its stretch's 1.
        let times: Vec<i64> = (0..=1_200).map(|i| i * 1_000).collect();
        let values: Vec<Option<f64>> = (0..=1_200)
            .map(|i| match i {
                1_200 => Some(1.0),
                i if i % 10 == 4 => None,
                i => Some(f64::from(i % 2)),
            })
            .collect();
        let points = points(&times, &values);
        assert_eq!(points.len(), POINTS + 1);
        assert!(points.iter().all(|p| p.1 == 1.0), "each stretch's peak");
        let chart = Chart {
            since: 0,
            until: 1_200_000,
            bounds: vec![(0.8, 1.0)],
            lines: vec![Line {
                class: "replayed".into(),
                points,
            }],
            shades: vec![Shade {
                start: 10_000,
                end: 20_000,
                class: "episode replayed".into(),
                title: "memory <1>".into(),
                reach: Reach::Upper,
            }],
            marks: vec![Mark {
                at: 10_000,
                class: "run recorded".into(),
                title: "purge".into(),
                reach: Reach::Lower,
            }],
        };
        let mut svg = String::new();
        assert!(chart.svg(&mut svg));
        for part in [
            "<rect class=\"episode replayed\" x=\"7.5\" y=\"0\" width=\"7.5\" height=\"90\"><title>memory &lt;1&gt;</title>",
            "<line class=\"run recorded\" x1=\"7.5\" x2=\"7.5\" y1=\"90\" y2=\"180\"><title>purge</title>",
            "<polyline class=\"replayed\" points=\"0.0,",
        ] {
            assert!(svg.contains(part), "{part} missing from {svg}");
        }
        let nothing = Chart::default();
        let mut empty = String::new();
        assert!(
            !nothing.svg(&mut empty) && empty.is_empty(),
            "nothing to draw"
        );
    }
}
