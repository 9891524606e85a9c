//! Plain-text tables for the terminal.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write;

use perfpilot_strategies::duration;
use perfpilot_strategies::signals::{Display, SIGNALS};
use perfpilot_strategies::Signal;
use serde_json::Value;

use crate::config::Config;

/// `perfpilot strategies`: every configured strategy with its trigger.
pub fn strategies(config: &Config) -> String {
    let mut out = format!(
        "{:<22} {:<9} {:<21} {:<8} {:<17} {:>9} {:>9} {:>11} {:>4} {:>9}  {}\n",
        "STRATEGY",
        "KIND",
        "ALIASES",
        "ENABLED",
        "SIGNAL",
        "ABOVE",
        "CRITICAL",
        "CLEAR_BELOW",
        "FOR",
        "COOLDOWN",
        "ACTS ON"
    );
    for (enabled, registered) in config.strategies() {
        let trigger = &registered.trigger;
        let strategy = &registered.strategy;
        let aliases = strategy.aliases().join(", ");
        let acts_on = strategy.acts_on();
        let _ = writeln!(
            out,
            "{:<22} {:<9} {:<21} {:<8} {:<17} {:>9} {:>9} {:>11} {:>4} {:>9}  {}",
            strategy.name(),
            strategy.kind(),
            if aliases.is_empty() { "-" } else { &aliases },
            if enabled { "yes" } else { "no" },
            trigger.signal.name(),
            trigger.above,
            trigger.critical.map_or("-".to_owned(), |c| c.to_string()),
            round(trigger.effective_clear_below()),
            trigger.for_samples,
            duration::format(trigger.cooldown),
            if acts_on.is_empty() { "-" } else { &acts_on },
        );
    }
    out
}

/// `perfpilot strategies`, after the strategies: every budget with the ladder it climbs (what
/// `--dry-run` would run, in order), and which strategies run only as rungs. Empty without
/// budgets.
pub fn budgets(config: &Config) -> String {
    if config.budgets.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{:<14} {:<17} {:>7} {:>7} {:<8} {:>7} {:>5} {:>9} {:>6}  LADDER (least disruptive first)\n",
        "BUDGET", "SIGNAL", "GOAL", "LIMIT", "AT_LIMIT", "SETTLE", "CALM", "COOLDOWN", "WATCH"
    );
    for (name, budget) in &config.budgets {
        let _ = writeln!(
            out,
            "{:<14} {:<17} {:>7} {:>7} {:<8} {:>7} {:>5} {:>9} {:>6}  {}",
            name,
            budget.signal.name(),
            budget.goal,
            budget.limit,
            budget.at_limit.to_string(),
            duration::format(budget.settle),
            budget.calm,
            duration::format(budget.cooldown),
            budget
                .watch_interval
                .map_or("-".to_owned(), duration::format),
            budget.ladder.join(" → "),
        );
    }
    let rung_only = config.rung_only();
    if !rung_only.is_empty() {
        let _ = writeln!(
            out,
            "\nrun only as rungs (their triggers above are shown, never fire): {}",
            rung_only.join(", ")
        );
    }
    out
}

/// Reads the agent's JSON documents by key, noting each key looked for in an object that
/// does not have it. A table ends with a line naming them (`?? ...`), so that a key renamed
/// or dropped in `api/document.rs` shows, instead of passing for an absent value (`-`).
#[derive(Debug, Default)]
struct Reader {
    missing: RefCell<BTreeSet<String>>,
}

impl Reader {
    /// `object[key]`: `null` where `object` is `null` (an absent value has no parts), and
    /// `null` noted as missing where `object` lacks `key` or is not an object.
    fn get<'v>(&self, object: &'v Value, key: &str) -> &'v Value {
        static NULL: Value = Value::Null;
        match object {
            Value::Null => &NULL,
            Value::Object(map) => map.get(key).unwrap_or_else(|| {
                self.missing.borrow_mut().insert(key.to_owned());
                &NULL
            }),
            _ => {
                self.missing
                    .borrow_mut()
                    .insert(format!("{key} (in a non-object)"));
                &NULL
            }
        }
    }

    /// `out` with, when keys were missing, a last line naming them.
    fn finish(self, mut out: String) -> String {
        let missing = self.missing.into_inner();
        if !missing.is_empty() {
            let names: Vec<String> = missing.into_iter().collect();
            let _ = writeln!(
                out,
                "?? the agent's answer lacks {} (an agent of another version?)",
                names.join(", ")
            );
        }
        out
    }
}

/// `perfpilot metrics`: the metrics document as a table.
pub fn metrics(document: &Value) -> String {
    let r = Reader::default();
    let mut out = String::new();
    let performance = r.get(document, "performance");
    let _ = writeln!(
        out,
        "worker {}  at {}  interval {} ms  {}{}",
        r.get(document, "workerId"),
        r.get(document, "timestamp").as_str().unwrap_or("-"),
        r.get(performance, "interval"),
        if r.get(performance, "isOptimizing") == true {
            "optimizing now"
        } else {
            "idle"
        },
        if r.get(performance, "dryRun") == true {
            "  (dry run)"
        } else {
            ""
        },
    );
    let _ = writeln!(
        out,
        "optimizations {}  success rate {}  mean duration {}\n",
        r.get(performance, "optimizationCount"),
        percent(r.get(performance, "successRate")),
        millis(r.get(performance, "averageDuration")),
    );

    let m = r.get(document, "currentMetrics");
    let mut levels = std::collections::HashMap::new();
    if let Some(strategies) = r.get(document, "strategies").as_array() {
        for strategy in strategies {
            let key = r
                .get(r.get(strategy, "trigger"), "signal")
                .as_str()
                .unwrap_or("")
                .to_owned();
            let level = r.get(strategy, "level").as_str().unwrap_or("").to_owned();
            let entry = levels.entry(key).or_insert(level.clone());
            if rank(&level) > rank(entry) {
                *entry = level;
            }
        }
    }
    // PSI: the watched cgroup's where there is one, else the system's (as the signals read it).
    let pressure = |resource: &str| {
        let scope = r.get(m, "pressure");
        let set = if r.get(scope, "cgroup").is_object() {
            r.get(scope, "cgroup")
        } else {
            r.get(scope, "system")
        };
        percent(r.get(r.get(r.get(set, resource), "some"), "avg10"))
    };
    // The signals with a row in the table (labels and formats from the signal table), and
    // after some of them a detail that is not a signal.
    let mut rows: Vec<(&str, &str, String)> = Vec::new();
    for signal in SIGNALS {
        let Some((label, display)) = signal.table else {
            continue;
        };
        let value = match (signal.pressure, signal.document_key) {
            (Some((resource, _, _)), _) => pressure(resource.name()),
            (None, Some(key)) => format(display, r.get(m, key)),
            (None, None) => "-".to_owned(),
        };
        rows.push((label, signal.name, value));
        match signal.signal {
            Signal::RssBytes => rows.push((
                "memory limit",
                "",
                format!(
                    "{} ({})",
                    bytes(r.get(m, "memoryLimitBytes")),
                    r.get(m, "memoryLimitSource").as_str().unwrap_or("-")
                ),
            )),
            Signal::ErrorRate => rows.push(("uptime", "", seconds(r.get(m, "uptime")))),
            _ => {}
        }
    }
    let _ = writeln!(out, "{:<15} {:>24}  LEVEL", "SIGNAL", "VALUE");
    for (label, signal, value) in rows {
        let level = levels.get(signal).map_or("", String::as_str);
        let _ = writeln!(out, "{label:<15} {value:>24}  {level}");
    }

    if let Some(strategies) = r.get(document, "strategies").as_array() {
        let _ = writeln!(
            out,
            "\n{:<22} {:<20} {:>10} {:<9} {:>5} {:>7} {:>9}  FORECAST",
            "STRATEGY", "SIGNAL", "VALUE", "LEVEL", "RUNS", "HELPED", "COOLDOWN"
        );
        for s in strategies {
            let forecast = match r.get(r.get(s, "forecast"), "secondsToReach").as_f64() {
                Some(seconds) => format!(
                    "{} in {}",
                    round(
                        r.get(r.get(s, "forecast"), "at")
                            .as_f64()
                            .unwrap_or(f64::NAN)
                    ),
                    duration::format(std::time::Duration::from_secs(seconds.round() as u64))
                ),
                None => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<22} {:<20} {:>10} {:<9} {:>5} {:>7} {:>9}  {forecast}",
                r.get(s, "name").as_str().unwrap_or("-"),
                r.get(r.get(s, "trigger"), "signal").as_str().unwrap_or("-"),
                r.get(s, "value")
                    .as_f64()
                    .map_or("-".to_owned(), |v| round(v).to_string()),
                r.get(s, "level").as_str().unwrap_or("-"),
                r.get(s, "runs"),
                percent(r.get(s, "effectiveness")),
                r.get(s, "cooldown").as_u64().map_or("-".to_owned(), |ms| {
                    duration::format(std::time::Duration::from_millis(ms))
                }),
            );
        }
    }
    out.push_str(&budget_rows(&r, document));
    if let Some(recent) = r
        .get(document, "recentOptimizations")
        .as_array()
        .filter(|r| !r.is_empty())
    {
        let _ = writeln!(out, "\nRECENT OPTIMIZATIONS");
        for record in recent.iter().rev().take(10) {
            out.push_str(&result_line(&r, record));
        }
    }
    r.finish(out)
}

/// The `budgets[]` of the metrics document: per budget its state, episode, rung and time above
/// goal and limit; per rung its runs, share helped, mean relief and runs per minute (the
/// price of holding the budget). Empty without budgets.
fn budget_rows(r: &Reader, document: &Value) -> String {
    let Some(budgets) = r
        .get(document, "budgets")
        .as_array()
        .filter(|b| !b.is_empty())
    else {
        return String::new();
    };
    let mut out = format!(
        "\n{:<14} {:>8} {:>6} {:>6} {:<12} {:>8} {:<22} {:>15} {:>15}\n",
        "BUDGET", "VALUE", "GOAL", "LIMIT", "STATE", "EPISODE", "RUNG", "ABOVE GOAL", "ABOVE LIMIT"
    );
    let secs = |v: &Value| {
        format!(
            "{:.1}/{:.1} s",
            r.get(v, "episode").as_f64().unwrap_or(0.0),
            r.get(v, "total").as_f64().unwrap_or(0.0)
        )
    };
    for b in budgets {
        let mut state = r.get(b, "state").as_str().unwrap_or("-").to_owned();
        if r.get(b, "exhausted") == true {
            state.push('!');
        } else if r.get(b, "waiting") == true {
            state.push('…');
        }
        let _ = writeln!(
            out,
            "{:<14} {:>8} {:>6} {:>6} {:<12} {:>8} {:<22} {:>15} {:>15}",
            r.get(b, "name").as_str().unwrap_or("-"),
            r.get(b, "value")
                .as_f64()
                .map_or("-".to_owned(), |v| round(v).to_string()),
            r.get(b, "goal"),
            r.get(b, "limit"),
            state,
            r.get(b, "episode")
                .as_u64()
                .map_or("-".to_owned(), |e| e.to_string()),
            match (r.get(b, "rung").as_u64(), r.get(b, "rungStrategy").as_str()) {
                (Some(rung), Some(name)) => format!("{} {name}", rung + 1),
                _ => "-".to_owned(),
            },
            secs(r.get(b, "secondsAboveGoal")),
            secs(r.get(b, "secondsAboveLimit")),
        );
        for (index, rung) in r
            .get(b, "rungs")
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let runs = r.get(rung, "runs").as_u64().unwrap_or(0);
            let judged = r.get(rung, "judged").as_u64().unwrap_or(0);
            let helped = r.get(rung, "helped").as_u64().unwrap_or(0);
            let _ = writeln!(
                out,
                "  {}. {:<24} runs {:>4}  helped {:>4}  mean relief {:>8}  {:>6}/min{}{}",
                index + 1,
                r.get(rung, "strategy").as_str().unwrap_or("-"),
                runs,
                if judged > 0 {
                    format!("{helped}/{judged}")
                } else {
                    "-".to_owned()
                },
                r.get(rung, "meanRelief")
                    .as_f64()
                    .map_or("-".to_owned(), |v| round(v).to_string()),
                r.get(rung, "runsPerMinute")
                    .as_f64()
                    .map_or("-".to_owned(), |v| format!("{v:.2}")),
                if r.get(rung, "skipped") == true {
                    "  (skipped: no help lately)"
                } else {
                    ""
                },
                if runs > 0 {
                    rung_cost(r, r.get(rung, "cost"))
                } else {
                    String::new()
                },
            );
        }
    }
    out
}

/// A rung's `cost` as the end of its line: the mean change in p99 and error rate across its
/// judged runs (or "no latency source"), then what its hook reported dropping.
fn rung_cost(r: &Reader, cost: &Value) -> String {
    if cost.is_null() {
        return String::new();
    }
    let mut parts = Vec::new();
    match (
        r.get(cost, "meanP99ChangeMs").as_f64(),
        r.get(cost, "meanErrorRateChange").as_f64(),
    ) {
        (None, None) => parts.push(
            r.get(cost, "latency")
                .as_str()
                .unwrap_or("no latency source")
                .to_owned(),
        ),
        (p99, errors) => {
            if let Some(ms) = p99 {
                parts.push(format!("p99 {ms:+.1} ms"));
            }
            if let Some(share) = errors {
                parts.push(format!("errors {:+.2} %", share * 100.0));
            }
        }
    }
    if let Some(reported) = r.get(cost, "reported").as_object() {
        for (field, total) in reported {
            parts.push(format!("{field} {}", total.as_f64().map_or(0.0, round)));
        }
    }
    format!("  cost: {}", parts.join(", "))
}

/// `perfpilot optimize`: one line per strategy run.
pub fn results(answer: &Value) -> String {
    let r = Reader::default();
    let mut out = format!("{}\n", r.get(answer, "message").as_str().unwrap_or(""));
    for record in r.get(answer, "results").as_array().into_iter().flatten() {
        out.push_str(&result_line(&r, record));
    }
    r.finish(out)
}

fn result_line(r: &Reader, record: &Value) -> String {
    let status = if r.get(record, "success") == true {
        "ok"
    } else {
        "FAILED"
    };
    let detail = r
        .get(record, "error")
        .as_str()
        .or_else(|| r.get(r.get(record, "result"), "summary").as_str())
        .unwrap_or("");
    format!(
        "  #{:<4} {:<22} {:<9} {:<6} {:>10}  {}\n",
        r.get(record, "id"),
        r.get(record, "strategy").as_str().unwrap_or("-"),
        r.get(record, "kind").as_str().unwrap_or("-"),
        status,
        millis(r.get(record, "durationMs")),
        detail
    )
}

/// `perfpilot metrics --since`: a `GET /performance-metrics/history` answer as a table: each
/// signal that was read with its min, mean, max and last value (shown as the signal table
/// says), then the runs, episodes, wakes and OOM kills of the window.
pub fn history(answer: &Value) -> String {
    let mut out = String::new();
    let samples = answer["samples"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let time = |ms: &Value| {
        ms.as_u64().map_or("-".to_owned(), |ms| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        })
    };
    let _ = writeln!(
        out,
        "history from {} to {}: {} samples\n",
        time(&answer["since"]),
        time(&answer["until"]),
        samples.len()
    );
    let _ = writeln!(
        out,
        "{:<26} {:>12} {:>12} {:>12} {:>12}",
        "signal", "min", "mean", "max", "last"
    );
    for name in answer["signals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let values: Vec<f64> = samples.iter().filter_map(|s| s[name].as_f64()).collect();
        let Some(&last) = values.last() else {
            continue;
        };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let show = |v: f64| show(name, v);
        let _ = writeln!(
            out,
            "{name:<26} {:>12} {:>12} {:>12} {:>12}",
            show(min),
            show(mean),
            show(max),
            show(last)
        );
    }
    let count = |key: &str| answer[key].as_array().map_or(0, Vec::len);
    let runs = answer["runs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let helped = runs.iter().filter(|r| r["helped"] == true).count();
    let _ = writeln!(
        out,
        "\nruns {} ({helped} helped)  episodes {}  fast-watch wakes {}  OOM kills {}  exhausted {}  reloads {}",
        runs.len(),
        count("episodes"),
        count("wakes"),
        count("oomKills"),
        count("exhaustions"),
        count("reloads"),
    );
    for run in runs {
        let verdict = match &run["helped"] {
            Value::Bool(true) => "helped",
            Value::Bool(false) => "did not help",
            _ => "not judged",
        };
        let _ = writeln!(
            out,
            "  {}  {:<20} {}",
            time(&run["startedAt"]),
            run["strategy"].as_str().unwrap_or("?"),
            verdict
        );
    }
    for episode in answer["episodes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  episode {} of {}: {} to {}",
            episode["episode"],
            episode["budget"].as_str().unwrap_or("?"),
            time(&episode["start"]),
            match episode["end"].is_null() {
                true => "now".to_owned(),
                false => time(&episode["end"]),
            }
        );
    }
    out
}

/// `perfpilot watch`'s look back: each of `signals` as a sparkline over a history answer's
/// samples (one character per sample, scaled between its min and max), then the runs and
/// episodes of the window. Empty when the answer has no sample.
pub fn recent(answer: &Value, signals: &[&str]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let samples = answer["samples"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = String::new();
    for &name in signals {
        let values: Vec<Option<f64>> = samples.iter().map(|s| s[name].as_f64()).collect();
        let read: Vec<f64> = values.iter().flatten().copied().collect();
        if read.is_empty() {
            continue;
        }
        let min = read.iter().copied().fold(f64::INFINITY, f64::min);
        let max = read.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let line: String = values
            .iter()
            .map(|v| match v {
                None => ' ',
                Some(v) if max > min => {
                    BARS[(((v - min) / (max - min)) * (BARS.len() - 1) as f64).round() as usize]
                }
                Some(_) => BARS[0],
            })
            .collect();
        let _ = writeln!(
            out,
            "{name:<26} {line}  {}..{}",
            show(name, min),
            show(name, max)
        );
    }
    if !out.is_empty() {
        let runs = answer["runs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let helped = runs.iter().filter(|r| r["helped"] == true).count();
        let episodes = answer["episodes"].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "{} runs ({helped} helped), {episodes} budget episodes",
            runs.len()
        );
    }
    out
}

/// A recorded value shown as the signal table says (a ratio as a percentage, bytes in
/// binary units).
fn show(name: &str, value: f64) -> String {
    use perfpilot_strategies::signals::{Unit, SIGNALS};
    let display = match SIGNALS.iter().find(|row| row.name == name) {
        Some(row) => row
            .table
            .map(|(_, d)| d)
            .filter(|d| *d != Display::Load)
            .unwrap_or(match row.unit {
                Unit::Ratio => Display::Percent,
                Unit::Bytes => Display::Bytes,
                Unit::Milliseconds => Display::Millis,
                _ => Display::Number,
            }),
        None if name.ends_with("_bytes") => Display::Bytes,
        None => Display::Number,
    };
    format(display, &Value::from(value))
}

/// A value of `currentMetrics` as the signal table says to show it.
fn format(display: Display, value: &Value) -> String {
    match display {
        Display::Percent => percent(value),
        Display::Bytes => bytes(value),
        Display::Millis => millis(value),
        Display::Number => number(value),
        Display::Load => load(value),
    }
}

fn rank(level: &str) -> u8 {
    match level {
        "CRITICAL" => 2,
        "WARNING" => 1,
        _ => 0,
    }
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or("-".into(), |v| format!("{:.1} %", v * 100.0))
}

fn millis(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |v| format!("{v:.1} ms"))
}

fn seconds(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |v| format!("{v:.0} s"))
}

fn number(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => n.to_string(),
        _ => "-".into(),
    }
}

fn load(value: &Value) -> String {
    match value.as_array() {
        Some(l) => l
            .iter()
            .map(|v| v.as_f64().map_or("-".into(), |v| format!("{v:.2}")))
            .collect::<Vec<_>>()
            .join(" "),
        None => "-".into(),
    }
}

fn bytes(value: &Value) -> String {
    let Some(b) = value.as_f64() else {
        return "-".into();
    };
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = b;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn formats_absent_values_as_dashes_and_units_readably() {
        assert_eq!(bytes(&json!(1536)), "1.5 KiB");
        assert_eq!(bytes(&Value::Null), "-");
        assert_eq!(percent(&json!(0.255)), "25.5 %");
        assert_eq!(load(&json!([1.0, 0.5, 0.25])), "1.00 0.50 0.25");
    }

    #[test]
    fn metrics_table_rows_keep_their_labels_and_order() {
        let table = metrics(&json!({"currentMetrics": {}}));
        let labels: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.starts_with("SIGNAL"))
            .skip(1)
            .take_while(|l| !l.is_empty() && !l.starts_with("??"))
            .map(|l| l[..15].trim_end())
            .collect();
        assert_eq!(
            labels,
            [
                "memory usage",
                "memory raw",
                "rss",
                "memory limit",
                "cpu usage",
                "system cpu",
                "system load",
                "connections",
                "in flight",
                "response time",
                "requests/s",
                "error rate",
                "uptime",
                "memory psi",
                "cpu psi",
                "io psi"
            ]
        );
    }

    #[test]
    fn a_key_missing_from_the_document_is_named_not_shown_as_absent() {
        let table = metrics(&json!({"currentMetrics": {"memoryUsage": null}}));
        let last = table.lines().last().unwrap();
        assert!(
            last.starts_with("?? the agent's answer lacks ")
                && last.contains("workerId")
                && last.contains("rssBytes")
                && !last.contains("memoryUsage,"),
            "{last}"
        );
        let complete = results(&json!({"message": "ok", "results": []}));
        assert_eq!(complete, "ok\n", "nothing missing, nothing added");
    }

    #[test]
    fn metrics_table_shows_levels_next_to_signals() {
        let document = json!({
            "workerId": 7, "timestamp": "t",
            "performance": {"interval": 5000, "optimizationCount": 0},
            "currentMetrics": {"memoryUsage": 0.9, "rssBytes": 1048576,
                               "pressure": {"system": {"cpu": {"some": {"avg10": 0.125}}}}},
            "strategies": [{"name": "memory-purge", "trigger": {"signal": "memory_usage"}, "level": "WARNING", "value": 0.9, "runs": 4,
                            "effectiveness": 0.25, "cooldown": 120000, "forecast": {"at": 0.95, "secondsToReach": 12.4}}],
            "recentOptimizations": [],
        });
        let table = metrics(&document);
        let line = table
            .lines()
            .find(|l| l.starts_with("memory usage"))
            .unwrap();
        assert!(
            line.contains("90.0 %") && line.ends_with("WARNING"),
            "{line}"
        );
        assert!(table.contains("1.0 MiB"));
        let cpu_psi = table.lines().find(|l| l.starts_with("cpu psi")).unwrap();
        assert!(cpu_psi.contains("12.5 %"), "{cpu_psi}");
        let strategy = table
            .lines()
            .find(|l| l.starts_with("memory-purge"))
            .unwrap();
        for shown in ["25.0 %", "120s", "0.95 in 12s"] {
            assert!(strategy.contains(shown), "{shown} missing: {strategy}");
        }
    }

    #[test]
    fn metrics_table_shows_each_budget_and_the_price_of_its_rungs() {
        let document = json!({
            "workerId": 7, "timestamp": "t", "performance": {}, "currentMetrics": {},
            "budgets": [{"name": "memory", "value": 0.9123, "goal": 0.8, "limit": 1.0,
                         "state": "above-goal", "episode": 3, "rung": 1, "rungStrategy": "trim",
                         "waiting": true, "exhausted": false,
                         "secondsAboveGoal": {"episode": 2.5, "total": 40.25},
                         "secondsAboveLimit": {"episode": 0.0, "total": 1.5},
                         "rungs": [
                            {"strategy": "purge", "runs": 9, "judged": 9, "helped": 0,
                             "meanRelief": -0.01, "runsPerMinute": 0.5, "skipped": true},
                            {"strategy": "trim", "runs": 4, "judged": 3, "helped": 3,
                             "meanRelief": 0.12, "runsPerMinute": 0.25, "skipped": false,
                             "cost": {"latencyRuns": 3, "meanP99ChangeMs": 12.5,
                                      "meanErrorRateChange": 0.004,
                                      "latency": "measured over 3 judged runs",
                                      "reported": {"entries_removed": 1200.0}}}]}],
        });
        let table = metrics(&document);
        let line = table.lines().find(|l| l.starts_with("memory   ")).unwrap();
        for shown in ["0.9123", "above-goal…", "2 trim", "2.5/40.2 s", "0.0/1.5 s"] {
            assert!(line.contains(shown), "{shown} missing: {line}");
        }
        let purge = table.lines().find(|l| l.contains("1. purge")).unwrap();
        assert!(
            purge.contains("runs    9") && purge.contains("skipped"),
            "{purge}"
        );
        let trim = table.lines().find(|l| l.contains("2. trim")).unwrap();
        assert!(trim.contains("3/3") && trim.contains("0.25/min"), "{trim}");
        assert!(
            trim.contains("cost: p99 +12.5 ms, errors +0.40 %, entries_removed 1200"),
            "{trim}"
        );
        assert!(
            !purge.contains("cost"),
            "an older agent's rung: no cost: {purge}"
        );
        assert!(!metrics(&json!({"budgets": []})).contains("BUDGET"));
    }

    #[test]
    fn history_and_its_look_back_show_each_signal_read_and_the_runs() {
        let answer = json!({
            "since": 1_800_000_000_000u64, "until": 1_800_000_060_000u64,
            "signals": ["memory_usage", "rss_bytes", "cpu_usage"],
            "samples": [
                {"t": 1, "memory_usage": 0.5, "rss_bytes": 1048576.0},
                {"t": 2, "memory_usage": 0.9},
                {"t": 3, "memory_usage": 0.7, "rss_bytes": 3145728.0},
            ],
            "runs": [{"startedAt": 1_800_000_010_000u64, "strategy": "trim", "helped": true},
                     {"startedAt": 1_800_000_020_000u64, "strategy": "purge", "helped": null}],
            "episodes": [{"budget": "memory", "episode": 1, "start": 1_800_000_005_000u64, "end": null}],
        });
        let table = history(&answer);
        let memory = table
            .lines()
            .find(|l| l.starts_with("memory_usage"))
            .unwrap();
        for shown in ["50.0 %", "70.0 %", "90.0 %"] {
            assert!(memory.contains(shown), "{shown}: {memory}");
        }
        let rss = table.lines().find(|l| l.starts_with("rss_bytes")).unwrap();
        assert!(rss.contains("2.0 MiB") && rss.ends_with("3.0 MiB"), "{rss}");
        assert!(
            !table.contains("cpu_usage"),
            "a signal never read is left out: {table}"
        );
        assert!(table.contains("runs 2 (1 helped)"), "{table}");
        assert!(
            table.contains("not judged") && table.contains("episode 1 of memory"),
            "{table}"
        );

        let look_back = recent(&answer, &["memory_usage", "cpu_usage"]);
        let line = look_back.lines().next().unwrap();
        assert!(
            line.contains("▁█▄") && line.ends_with("50.0 %..90.0 %"),
            "{line}"
        );
        assert!(
            look_back.contains("2 runs (1 helped), 1 budget episodes"),
            "{look_back}"
        );
        assert!(recent(&json!({"samples": []}), &["memory_usage"]).is_empty());
    }
}
