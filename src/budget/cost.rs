//! What a budget's rungs cost the target, beside the relief they bring: the change in its
//! request latency p99 and error rate across each judged run (where the snapshot has a
//! latency source: the probe, the embedded layer, a sidecar's latency feed), and what the
//! hooks reported they dropped, evicted or closed.

use std::collections::BTreeMap;

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

/// The shown value of [`RungCostView::latency`] for a rung never judged with a latency
/// reading on both sides.
pub const NO_LATENCY_SOURCE: &str = "no latency source";

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
    reported: BTreeMap<String, f64>,
}

impl RungCost {
    /// One judged run: the readings in the sample it started from and in the one that
    /// judged it.
    pub(super) fn note_change(&mut self, before: ServiceReadings, after: ServiceReadings) {
        let change = |b: Option<f64>, a: Option<f64>| Some(a? - b?);
        self.p99_change_ms.add(change(before.p99_ms, after.p99_ms));
        self.error_rate_change
            .add(change(before.error_rate, after.error_rate));
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
            latency: if runs == 0 {
                NO_LATENCY_SOURCE.to_owned()
            } else {
                format!("measured over {runs} judged run{}", plural(runs))
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
    /// "no latency source", or over how many judged runs the latency cost was measured.
    pub latency: String,
    /// What the hook reported it took away, summed over the rung's runs, by report field
    /// (`sessions_dropped`, `entries_removed`, `closed_idle`: numeric fields whose name says
    /// dropped, evicted, closed, removed, killed, rejected or lost; at most 8 fields).
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
        cost.note_change(ServiceReadings::default(), ServiceReadings::default());
        let view = cost.view();
        assert_eq!(view.latency, NO_LATENCY_SOURCE);
        assert_eq!(view.mean_p99_change_ms, None);
        assert_eq!(view.latency_runs, 0);
    }

    #[test]
    fn the_latency_cost_is_the_mean_change_across_judged_runs() {
        let mut cost = RungCost::default();
        let at = |p99_ms, error_rate| ServiceReadings {
            p99_ms: Some(p99_ms),
            error_rate: Some(error_rate),
        };
        cost.note_change(at(10.0, 0.0), at(30.0, 0.02));
        cost.note_change(at(10.0, 0.0), at(20.0, 0.0));
        let view = cost.view();
        assert_eq!(view.mean_p99_change_ms, Some(15.0));
        assert_eq!(view.mean_error_rate_change, Some(0.01));
        assert_eq!(view.latency, "measured over 2 judged runs");
    }
}
