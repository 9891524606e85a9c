//! What a budget's rungs cost the target, beside the relief they bring: the change in its
//! request latency p99 and error rate across each judged run (where the snapshot has a
//! latency source: the probe, the embedded layer, a sidecar's latency feed), and what the
//! hooks reported they dropped, evicted or closed.
//!
//! A latency source's window need not close at every sample (the probe's period is often
//! longer than the interval), so a run's readings are the latest window that closed: before
//! the run, the one that closed at or before the sample the run started from (at most
//! [`MAX_READING_AGE`] old); after it, the latest that closed at the judging sample, if it
//! closed after the run started.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use perfpilot_strategies::Snapshot;
use serde::Serialize;
use serde_json::{Map, Value};

/// Words in a report field's name that say the run took something away from the target's
/// users (`sessions_dropped`, `entries_removed`, `closed_idle`): such numeric fields are a
/// rung's reported cost. Fields that measure relief (`bytes_freed`) or the call itself
/// (`elapsed_ms`, `status`) are not.
pub const COST_WORDS: &[&str] = &[
    "dropped", "evicted", "closed", "removed", "killed", "rejected", "lost",
];

/// The most reported cost fields kept per rung (the first seen): the `/metrics` series stay
/// bounded whatever a hook answers.
pub const MAX_REPORTED_FIELDS: usize = 8;

/// The shown value of [`RungCostView::latency`] for a rung whose judged runs had no latency
/// reading on either side (or that was never judged).
pub const NO_LATENCY_SOURCE: &str = "no latency source";

/// How old the latest latency reading may be to stand for the window before a run: 10 s.
pub const MAX_READING_AGE: Duration = Duration::from_secs(10);

/// The target's request latency and error rate in one sample, where it has a latency source.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceReadings {
    /// The p99 request latency over the sample's window, in milliseconds.
    pub p99_ms: Option<f64>,
    /// The share of requests that failed over the sample's window, 0..1.
    pub error_rate: Option<f64>,
}

impl ServiceReadings {
    /// The readings `snapshot` carries (both `None` without a latency source).
    pub fn of(snapshot: &Snapshot) -> Self {
        ServiceReadings {
            p99_ms: snapshot
                .latency
                .as_ref()
                .map(|l| l.p99_ms)
                .filter(|v| v.is_finite()),
            error_rate: snapshot.error_rate.filter(|v| v.is_finite()),
        }
    }

    /// Whether either reading is there.
    fn any(&self) -> bool {
        self.p99_ms.is_some() || self.error_rate.is_some()
    }
}

/// The readings one budget's runs are measured by: the latest latency window seen, and the
/// run waiting for its verdict with the readings before it.
#[derive(Debug, Clone, Default)]
pub struct CostReadings {
    latest: Option<(Instant, ServiceReadings)>,
    run: Option<RunStart>,
}

#[derive(Debug, Clone, Copy)]
struct RunStart {
    episode: u64,
    rung: usize,
    at: Instant,
    before: ServiceReadings,
}

/// A judged run's readings: in the latest window before it and after it (`None` on a side
/// with no window; both `None`: no latency source).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunReadings {
    /// Before the run.
    pub before: Option<ServiceReadings>,
    /// After it, by the judging sample.
    pub after: Option<ServiceReadings>,
}

impl CostReadings {
    /// A sample at `now`: its latency window, if one closed in it, is the latest.
    pub fn sample(&mut self, snapshot: &Snapshot, now: Instant) {
        let readings = ServiceReadings::of(snapshot);
        if readings.any() {
            self.latest = Some((now, readings));
        }
    }

    /// `rung` started in `episode` from the sample at `now` (after [`CostReadings::sample`]).
    pub fn run_started(&mut self, episode: u64, rung: usize, now: Instant) {
        let before = self
            .latest
            .filter(|(at, _)| now.saturating_duration_since(*at) <= MAX_READING_AGE)
            .map(|(_, readings)| readings)
            .unwrap_or_default();
        self.run = Some(RunStart {
            episode,
            rung,
            at: now,
            before,
        });
    }

    /// `rung`'s run in `episode` was judged by the latest sample (after
    /// [`CostReadings::sample`]): its readings, or `None` when that run is not the one
    /// waiting.
    pub fn judged(&mut self, episode: u64, rung: usize) -> Option<RunReadings> {
        let run = self
            .run
            .filter(|r| (r.episode, r.rung) == (episode, rung))?;
        self.run = None;
        let after = self
            .latest
            .filter(|(at, _)| *at > run.at)
            .map(|(_, readings)| readings);
        Some(RunReadings {
            before: run.before.any().then_some(run.before),
            after,
        })
    }
}

/// A running mean.
#[derive(Debug, Clone, Copy, Default)]
struct Mean {
    sum: f64,
    count: u64,
}

impl Mean {
    fn add(&mut self, value: Option<f64>) {
        if let Some(value) = value {
            self.sum += value;
            self.count += 1;
        }
    }

    fn get(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// One rung's cost in one budget, over its judged runs.
#[derive(Debug, Clone, Default)]
pub(super) struct RungCost {
    p99_change_ms: Mean,
    error_rate_change: Mean,
    /// Judged runs with a latency reading on one side only.
    unmatched: u64,
    reported: BTreeMap<String, f64>,
}

impl RungCost {
    /// One judged run's readings before and after it.
    pub(super) fn note_change(&mut self, readings: RunReadings) {
        match (readings.before, readings.after) {
            (Some(before), Some(after)) => {
                let change = |b: Option<f64>, a: Option<f64>| Some(a? - b?);
                self.p99_change_ms.add(change(before.p99_ms, after.p99_ms));
                self.error_rate_change
                    .add(change(before.error_rate, after.error_rate));
            }
            (None, None) => {}
            _ => self.unmatched += 1,
        }
    }

    /// One finished run's report: its cost fields ([`reported_costs`]) are added up.
    pub(super) fn note_report(&mut self, report: &Map<String, Value>) {
        for (name, value) in reported_costs(report) {
            let room = self.reported.len() < MAX_REPORTED_FIELDS;
            if let Some(sum) = self.reported.get_mut(&name) {
                *sum += value;
            } else if room {
                self.reported.insert(name, value);
            }
        }
    }

    pub(super) fn view(&self) -> RungCostView {
        let runs = self.p99_change_ms.count.max(self.error_rate_change.count);
        RungCostView {
            latency_runs: runs,
            mean_p99_change_ms: self.p99_change_ms.get(),
            mean_error_rate_change: self.error_rate_change.get(),
            latency: match (runs, self.unmatched) {
                (0, 0) => NO_LATENCY_SOURCE.to_owned(),
                (0, unmatched) => format!(
                    "no latency window before and after its run{} ({unmatched} judged)",
                    plural(unmatched)
                ),
                (runs, _) => format!("measured over {runs} judged run{}", plural(runs)),
            },
            reported: self.reported.clone(),
        }
    }
}

fn plural(count: u64) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// The cost fields of a run's report: numeric, non-negative fields whose name holds one of
/// [`COST_WORDS`], at the top level or one object down (a webhook keeps the hook's JSON
/// answer under `response`), by name.
pub fn reported_costs(report: &Map<String, Value>) -> Vec<(String, f64)> {
    let mut costs = Vec::new();
    let mut add = |fields: &Map<String, Value>| {
        for (name, value) in fields {
            let is_cost = COST_WORDS.iter().any(|word| name.contains(word));
            if let Some(value) = value
                .as_f64()
                .filter(|v| is_cost && v.is_finite() && *v >= 0.0)
            {
                costs.push((name.clone(), value));
            }
        }
    };
    add(report);
    for value in report.values() {
        if let Value::Object(inner) = value {
            add(inner);
        }
    }
    costs
}

/// One rung's cost as `/performance-metrics` shows it (`budgets[].rungs[].cost`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RungCostView {
    /// Judged runs with a latency reading in the sample before the run and in the judging
    /// one: what the means below are over.
    pub latency_runs: u64,
    /// Mean change in the target's p99 request latency from the sample before a run to the
    /// one that judged it, in milliseconds (positive: slower); `null` with no latency source.
    pub mean_p99_change_ms: Option<f64>,
    /// Mean change in the target's error rate (0..1) over the same windows; `null` with no
    /// latency source.
    pub mean_error_rate_change: Option<f64>,
    /// "no latency source", over how many judged runs the latency cost was measured, or that
    /// no latency window closed on both sides of a run (a probe slower than the runs).
    pub latency: String,
    /// What the hook reported it took away, summed over the rung's runs, by report field
    /// (`sessions_dropped`, `entries_removed`, `closed_idle`: numeric fields whose name has
    /// one of [`COST_WORDS`]; at most [`MAX_REPORTED_FIELDS`] fields).
    #[schema(value_type = Object)]
    pub reported: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_webhooks_answer_gives_its_dropped_count_and_not_its_relief_or_timing() {
        let report = map(json!({
            "url": "http://127.0.0.1:8080/admin/sessions/drop",
            "status": 200,
            "elapsed_ms": 31,
            "response": {"sessions_before": 40, "sessions_after": 20, "sessions_dropped": 20,
                         "bytes_freed": 1048576, "bytes_after": 1048576},
        }));
        assert_eq!(
            reported_costs(&report),
            vec![("sessions_dropped".into(), 20.0)]
        );
    }

    #[test]
    fn costs_add_up_per_field_and_stay_bounded() {
        let mut cost = RungCost::default();
        cost.note_report(&map(json!({"entries_removed": 3, "closed_idle": 2})));
        cost.note_report(&map(json!({"entries_removed": 4})));
        for i in 0..20 {
            cost.note_report(&map(json!({ format!("x{i}_dropped"): 1 })));
        }
        let view = cost.view();
        assert_eq!(view.reported["entries_removed"], 7.0);
        assert_eq!(view.reported["closed_idle"], 2.0);
        assert_eq!(view.reported.len(), MAX_REPORTED_FIELDS);
    }

    #[test]
    fn without_a_latency_source_the_cost_says_so_instead_of_zero() {
        let mut cost = RungCost::default();
        cost.note_change(RunReadings::default());
        let view = cost.view();
        assert_eq!(view.latency, NO_LATENCY_SOURCE);
        assert_eq!(view.mean_p99_change_ms, None);
        assert_eq!(view.latency_runs, 0);
        // A source whose window did not close after the run: said, not 0 either.
        cost.note_change(RunReadings {
            before: Some(ServiceReadings {
                p99_ms: Some(5.0),
                error_rate: None,
            }),
            after: None,
        });
        let view = cost.view();
        assert_eq!(view.mean_p99_change_ms, None);
        assert_eq!(
            view.latency,
            "no latency window before and after its run (1 judged)"
        );
    }

    #[test]
    fn the_latency_cost_is_the_mean_change_across_judged_runs() {
        let mut cost = RungCost::default();
        let run = |before: (f64, f64), after: (f64, f64)| RunReadings {
            before: Some(ServiceReadings {
                p99_ms: Some(before.0),
                error_rate: Some(before.1),
            }),
            after: Some(ServiceReadings {
                p99_ms: Some(after.0),
                error_rate: Some(after.1),
            }),
        };
        cost.note_change(run((10.0, 0.0), (30.0, 0.02)));
        cost.note_change(run((10.0, 0.0), (20.0, 0.0)));
        let view = cost.view();
        assert_eq!(view.mean_p99_change_ms, Some(15.0));
        assert_eq!(view.mean_error_rate_change, Some(0.01));
        assert_eq!(view.latency, "measured over 2 judged runs");
    }
}

#[cfg(test)]
mod readings_tests {
    use std::time::SystemTime;

    use super::*;

    fn window(p99_ms: Option<f64>) -> Snapshot {
        let mut snapshot = Snapshot::empty(SystemTime::now());
        snapshot.latency = p99_ms.map(|p99_ms| perfpilot_strategies::LatencyStats {
            mean_ms: p99_ms,
            p50_ms: p99_ms,
            p95_ms: p99_ms,
            p99_ms,
        });
        snapshot
    }

    /// A probe every second, a sample every 500 ms: half the samples close no window. A run
    /// is measured by the latest window before it and the latest after it.
    #[test]
    fn a_probe_slower_than_the_samples_still_measures_each_run() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut readings = CostReadings::default();
        readings.sample(&window(Some(10.0)), at(0));
        readings.sample(&window(None), at(500));
        readings.run_started(1, 0, at(500));
        readings.sample(&window(Some(40.0)), at(1000));
        readings.sample(&window(None), at(1500));
        let run = readings.judged(1, 0).expect("the run waiting");
        assert_eq!(run.before.and_then(|r| r.p99_ms), Some(10.0));
        assert_eq!(run.after.and_then(|r| r.p99_ms), Some(40.0));
        assert_eq!(readings.judged(1, 0), None, "judged once");

        // No window since the run started: nothing after it, not the window before.
        readings.run_started(1, 1, at(1500));
        readings.sample(&window(None), at(2000));
        let run = readings.judged(1, 1).unwrap();
        assert!(run.before.is_some() && run.after.is_none(), "{run:?}");

        // A window older than MAX_READING_AGE does not stand for the one before a run.
        readings.run_started(2, 0, at(1000) + MAX_READING_AGE + Duration::from_millis(1));
        assert_eq!(readings.judged(2, 0).unwrap().before, None);
    }
}
