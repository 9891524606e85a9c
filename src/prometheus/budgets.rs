//! The budgets' series (`perfpilot_budget_*`), labelled by `budget` (and `rung`, `strategy`
//! for the ladder's).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use super::{set, FloatCounters, Gauges, Labels};
use crate::budget::BudgetView;

/// Every budget series, registered once.
#[derive(Debug, Default)]
pub(super) struct BudgetMetrics {
    value: Gauges,
    goal: Gauges,
    effective_goal: Gauges,
    limit: Gauges,
    state: Gauges,
    rung: Gauges,
    episode: Gauges,
    episodes: FloatCounters,
    above_goal: FloatCounters,
    above_limit: FloatCounters,
    exhausted: Family<Labels, Counter>,
    rung_runs: FloatCounters,
    rung_helped: FloatCounters,
    rung_relief: Gauges,
    rung_rate: Gauges,
    rung_latency: Gauges,
    rung_p99_change: Gauges,
    rung_error_rate_change: Gauges,
    rung_reported_cost: FloatCounters,
}

impl BudgetMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = BudgetMetrics::default();
        let gauges = [
            (
                "budget_value",
                "The budget's signal in the last sample",
                &m.value,
            ),
            (
                "budget_goal",
                "The budget's goal: keep the signal at or below it",
                &m.goal,
            ),
            (
                "budget_effective_goal",
                "The goal the budget holds now: its goal, or lower while the learned guard band moved it after a breach or an OOM kill",
                &m.effective_goal,
            ),
            (
                "budget_limit",
                "The budget's limit: never above it",
                &m.limit,
            ),
            (
                "budget_state",
                "Where the signal is: 0 in band, 1 above goal, 2 above limit",
                &m.state,
            ),
            (
                "budget_rung",
                "The rung that ran last in the current episode, from 0 (absent between episodes)",
                &m.rung,
            ),
            (
                "budget_episode",
                "The current episode's number (absent between episodes)",
                &m.episode,
            ),
            (
                "budget_rung_mean_relief",
                "Mean relief per judged run of a rung: how far below the forecast without it (the trend before it ran; the level before it when fixed or not rising) the budget's signal was",
                &m.rung_relief,
            ),
            (
                "budget_rung_mean_error_rate_change",
                "A rung's cost: the mean change in the target's error rate (0..1) from the sample before a run to the one that judged it (absent with no latency source)",
                &m.rung_error_rate_change,
            ),
            (
                "budget_rung_runs_per_minute",
                "Runs of a rung per minute since the agent started: the price of the budget",
                &m.rung_rate,
            ),
        ];
        for (name, help, family) in gauges {
            registry.register(name, help, family.clone());
        }
        registry.register_with_unit(
            "budget_rung_latency",
            "A rung's last measured latency, start to finish: part of the reaction time the budget's urgency allows for",
            Unit::Seconds,
            m.rung_latency.clone(),
        );
        registry.register_with_unit(
            "budget_rung_mean_p99_change",
            "A rung's cost: the mean change in the target's p99 request latency from the sample before a run to the one that judged it (positive: slower; absent with no latency source)",
            Unit::Seconds,
            m.rung_p99_change.clone(),
        );
        registry.register(
            "budget_rung_reported_cost",
            format!(
                "A rung's cost as its hook reported it, summed over its runs, by report field (sessions_dropped, entries_removed: fields whose name has one of {}; at most {} per rung)",
                crate::budget::cost::COST_WORDS.join(", "),
                crate::budget::cost::MAX_REPORTED_FIELDS
            ),
            m.rung_reported_cost.clone(),
        );
        registry.register(
            "budget_episodes",
            "Episodes started (the signal rose above goal, or was forecast to cross the limit)",
            m.episodes.clone(),
        );
        registry.register_with_unit(
            "budget_above_goal",
            "Time the budget's signal spent above its goal",
            Unit::Seconds,
            m.above_goal.clone(),
        );
        registry.register_with_unit(
            "budget_above_limit",
            "Time the budget's signal spent above its limit",
            Unit::Seconds,
            m.above_limit.clone(),
        );
        registry.register(
            "budget_exhausted",
            "Episodes whose ladder ran out with the signal above the limit",
            m.exhausted.clone(),
        );
        registry.register(
            "budget_rung_runs",
            "Runs of each rung of each budget",
            m.rung_runs.clone(),
        );
        registry.register(
            "budget_rung_helped",
            "Runs of each rung that relieved the budget's signal",
            m.rung_helped.clone(),
        );
        m
    }

    pub(super) fn observe(&self, view: &BudgetView) {
        let labels: Labels = vec![("budget", view.name.clone())];
        set(&self.value, labels.clone(), view.value);
        set(&self.goal, labels.clone(), Some(view.goal));
        set(
            &self.effective_goal,
            labels.clone(),
            Some(view.effective_goal),
        );
        set(&self.limit, labels.clone(), Some(view.limit));
        set(
            &self.state,
            labels.clone(),
            Some(f64::from(view.state.number())),
        );
        set(&self.rung, labels.clone(), view.rung.map(|r| r as f64));
        set(
            &self.episode,
            labels.clone(),
            view.episode.map(|e| e as f64),
        );
        advance(&self.episodes, &labels, view.episodes as f64);
        advance(&self.above_goal, &labels, view.seconds_above_goal.total);
        advance(&self.above_limit, &labels, view.seconds_above_limit.total);
        let _ = self.exhausted.get_or_create(&labels);
        for (index, rung) in view.rungs.iter().enumerate() {
            let labels: Labels = vec![
                ("budget", view.name.clone()),
                ("rung", index.to_string()),
                ("strategy", rung.strategy.clone()),
            ];
            advance(&self.rung_runs, &labels, rung.runs as f64);
            advance(&self.rung_helped, &labels, rung.helped as f64);
            set(&self.rung_relief, labels.clone(), rung.mean_relief);
            set(&self.rung_rate, labels.clone(), rung.runs_per_minute);
            set(
                &self.rung_latency,
                labels.clone(),
                rung.latency_ms.map(|ms| ms / 1000.0),
            );
            set(
                &self.rung_p99_change,
                labels.clone(),
                rung.cost.mean_p99_change_ms.map(|ms| ms / 1000.0),
            );
            set(
                &self.rung_error_rate_change,
                labels.clone(),
                rung.cost.mean_error_rate_change,
            );
            for (field, total) in &rung.cost.reported {
                let mut labels = labels.clone();
                labels.push(("field", field.clone()));
                advance(&self.rung_reported_cost, &labels, *total);
            }
        }
    }

    pub(super) fn exhausted(&self, budget: &str) {
        self.exhausted
            .get_or_create(&vec![("budget", budget.to_owned())])
            .inc();
    }
}

/// Moves a counter up to `total` (counters only go up; the engine owns the totals).
fn advance(family: &FloatCounters, labels: &Labels, total: f64) {
    let counter = family.get_or_create(labels);
    let delta = total - counter.get();
    if delta > 0.0 {
        counter.inc_by(delta);
    }
}
