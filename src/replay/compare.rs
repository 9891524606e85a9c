//! The candidate beside the recording: decisions, and what they came to.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::config::Config;
use crate::recorder::Episode;

use super::drive::Driven;
use super::effect::{self, EffectModel, StrategyEffect};
use super::recording::{Cut, Recording};

/// How long before a recorded OOM kill the replayed signal must stay under the limit for the
/// kill to count as avoided.
const OOM_LOOKBACK_MS: i64 = 10_000;

/// One automatic run: which strategy, as which rung, after which sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The strategy.
    pub strategy: String,
    /// The budget it ran for, when it ran as a rung.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// Its rung, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rung: Option<usize>,
    /// The index of the sample it followed.
    pub sample: usize,
    /// When that sample was taken, ms since the Unix epoch.
    pub at: i64,
}

/// Runs of one strategy as one rung (or by its own trigger).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCount {
    /// The strategy.
    pub strategy: String,
    /// The budget and rung, or none for runs by its own trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rung: Option<String>,
    /// Runs.
    pub runs: usize,
}

/// What one side (recorded or replayed) came to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Budget episodes.
    pub episodes: u64,
    /// Automatic runs in all.
    pub runs: usize,
    /// Runs per strategy and rung.
    pub runs_by_rung: Vec<RunCount>,
    /// Runs of strategies marked `disruptive = true`.
    pub disruptive_runs: usize,
    /// Seconds the budgets' signals spent above goal (summed over budgets).
    pub seconds_above_goal: f64,
    /// Seconds above limit.
    pub seconds_above_limit: f64,
    /// Ladders that ran out above their limit.
    pub exhaustions: u64,
    /// The highest value of the first budget's signal.
    pub peak: Option<f64>,
    /// OOM kills: recorded at the cut (the recording ends at the first); replayed: the same
    /// unless avoided (the replayed signal stayed under the limit for the 10 s before it).
    pub oom_kills: u64,
}

/// One strategy's effect as the replay modelled it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectRow {
    /// The strategy.
    pub strategy: String,
    /// `observed` (learned from its recorded runs) or `assumed` (the stated default).
    pub source: &'static str,
    /// The effect.
    #[serde(flatten)]
    pub effect: StrategyEffect,
}

/// The candidate beside the recording.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// Samples replayed.
    pub samples: usize,
    /// Seconds of recording replayed.
    pub seconds: f64,
    /// Why the recording ends where it does: `end`, `oom-kill` or `restart`.
    pub cut: String,
    /// What the recording did.
    pub recorded: Summary,
    /// What the candidate would have done.
    pub replayed: Summary,
    /// The recorded automatic runs, in order.
    pub recorded_decisions: Vec<Decision>,
    /// The candidate's runs, in order.
    pub replayed_decisions: Vec<Decision>,
    /// Replayed runs matched to a recorded run of their strategy at another sample (the
    /// same action shifted in time: the signal differs only between the two times).
    pub matched_runs: usize,
    /// Replayed runs the recording does not have, unmatched (their relief modelled).
    pub added_runs: usize,
    /// Recorded runs the candidate did not repeat, unmatched (their relief given back).
    pub dropped_runs: usize,
    /// How the replayed signal was made from the recorded one (the effect model and its
    /// bounds), for a reader judging how far to trust it.
    pub departure: &'static str,
    /// Each strategy's modelled effect, and whether it was observed or assumed.
    pub effects: Vec<EffectRow>,
    /// The largest difference between the replayed and the recorded signal of the first
    /// budget.
    pub largest_departure: f64,
    /// The first budget's signal, recorded and replayed, sample by sample (for charts).
    #[serde(skip)]
    pub series: Option<Series>,
}

/// A signal recorded and replayed, sample by sample.
#[derive(Debug, Clone)]
pub struct Series {
    /// The budget.
    pub budget: String,
    /// Its goal and limit in the candidate.
    pub goal: f64,
    /// See `goal`.
    pub limit: f64,
    /// Sample times, ms since the Unix epoch.
    pub times: Vec<i64>,
    /// Recorded values.
    pub recorded: Vec<Option<f64>>,
    /// Replayed values.
    pub replayed: Vec<Option<f64>>,
    /// The budget's recorded episodes, by start.
    pub recorded_episodes: Vec<Episode>,
    /// The budget's replayed episodes, by start.
    pub replayed_episodes: Vec<Episode>,
}

pub(super) fn compare(
    recording: &Recording,
    config: &Config,
    disruptive: &[String],
    model: EffectModel,
    driven: Driven,
) -> Comparison {
    let recorded_decisions: Vec<Decision> = recording
        .runs
        .iter()
        .filter(|run| run.kind != "manual")
        .map(|run| {
            let sample = recording.sample_of(run.started_at);
            Decision {
                strategy: run.strategy.clone(),
                budget: run.rung.as_ref().map(|(b, _)| b.clone()),
                rung: run.rung.as_ref().map(|(_, r)| *r),
                sample,
                at: recording.samples[sample].at,
            }
        })
        .collect();
    let replayed_decisions: Vec<Decision> = driven
        .runs
        .iter()
        .zip(&driven.run_samples)
        .map(|(record, &sample)| Decision {
            strategy: record.strategy.clone(),
            budget: record.budget.as_ref().map(|b| b.budget.clone()),
            rung: record.budget.as_ref().map(|b| b.rung),
            sample,
            at: recording.samples[sample].at,
        })
        .collect();
    let series = config.budgets.iter().next().map(|(name, budget)| {
        let column = Recording::column(budget.signal);
        Series {
            budget: name.clone(),
            goal: budget.goal,
            limit: budget.limit,
            times: recording.samples.iter().map(|s| s.at).collect(),
            recorded: recording
                .samples
                .iter()
                .map(|s| column.and_then(|c| s.values[c]))
                .collect(),
            replayed: driven
                .replayed
                .get(&budget.signal)
                .cloned()
                .unwrap_or_default(),
            recorded_episodes: of_budget(&recording.episodes, name),
            replayed_episodes: of_budget(&driven.episodes, name),
        }
    });
    let (mut above_goal, mut above_limit) = (0.0, 0.0);
    for budget in config.budgets.values() {
        let (goal, limit) = seconds_above(recording, budget.signal, budget.goal, budget.limit);
        above_goal += goal;
        above_limit += limit;
    }
    let recorded_kills = u64::from(matches!(recording.cut, Cut::OomKill(_)));
    let recorded = Summary {
        episodes: recording.episodes.len() as u64,
        runs: recorded_decisions.len(),
        runs_by_rung: count(&recorded_decisions),
        disruptive_runs: disruptive_runs(&recorded_decisions, disruptive),
        seconds_above_goal: above_goal,
        seconds_above_limit: above_limit,
        exhaustions: recording.exhaustions.len() as u64,
        peak: series.as_ref().and_then(|s| peak(&s.recorded)),
        oom_kills: recorded_kills,
    };
    let avoided = match (&recording.cut, &series) {
        (Cut::OomKill(at), Some(series)) => series
            .times
            .iter()
            .zip(&series.replayed)
            .filter(|(t, _)| **t >= at - OOM_LOOKBACK_MS)
            .all(|(_, v)| v.is_none_or(|v| v <= series.limit)),
        _ => false,
    };
    let replayed = Summary {
        episodes: driven.budgets.iter().map(|b| b.episodes).sum(),
        runs: replayed_decisions.len(),
        runs_by_rung: count(&replayed_decisions),
        disruptive_runs: disruptive_runs(&replayed_decisions, disruptive),
        seconds_above_goal: driven
            .budgets
            .iter()
            .map(|b| b.seconds_above_goal.total)
            .sum(),
        seconds_above_limit: driven
            .budgets
            .iter()
            .map(|b| b.seconds_above_limit.total)
            .sum(),
        exhaustions: driven.exhaustions as u64,
        peak: series.as_ref().and_then(|s| peak(&s.replayed)),
        oom_kills: if avoided { 0 } else { recorded_kills },
    };
    let mut strategies: Vec<String> = config
        .strategies()
        .into_iter()
        .filter(|(enabled, _)| *enabled)
        .map(|(_, r)| r.strategy.name().to_owned())
        .collect();
    strategies.sort();
    let effects = strategies
        .into_iter()
        .map(|strategy| {
            let effect = model.of(&strategy);
            EffectRow {
                source: if effect.observed() {
                    "observed"
                } else {
                    "assumed"
                },
                strategy,
                effect,
            }
        })
        .collect();
    let largest_departure = series.as_ref().map_or(0.0, |s| {
        s.recorded
            .iter()
            .zip(&s.replayed)
            .filter_map(|(a, b)| Some((a.as_ref()? - b.as_ref()?).abs()))
            .fold(0.0, f64::max)
    });
    Comparison {
        samples: recording.samples.len(),
        seconds: recording.seconds(),
        cut: match recording.cut {
            Cut::End => "end",
            Cut::OomKill(_) => "oom-kill",
            Cut::Restart(_) => "restart",
        }
        .to_owned(),
        matched_runs: driven.shifted.iter().filter(|s| **s).count(),
        added_runs: driven
            .matched
            .iter()
            .zip(&driven.shifted)
            .filter(|(matched, shifted)| !**matched && !**shifted)
            .count(),
        dropped_runs: driven.dropped.len(),
        departure: effect::HOW,
        recorded,
        replayed,
        recorded_decisions,
        replayed_decisions,
        effects,
        largest_departure,
        series,
    }
}

/// `budget`'s episodes among `episodes`.
fn of_budget(episodes: &[Episode], budget: &str) -> Vec<Episode> {
    episodes
        .iter()
        .filter(|e| e.budget == budget)
        .cloned()
        .collect()
}

/// Seconds the recorded `signal` spent above `goal` and above `limit` (each sample's value
/// holds until the next, as the budget counts).
fn seconds_above(
    recording: &Recording,
    signal: perfpilot_strategies::Signal,
    goal: f64,
    limit: f64,
) -> (f64, f64) {
    let Some(column) = Recording::column(signal) else {
        return (0.0, 0.0);
    };
    let (mut above_goal, mut above_limit) = (0.0, 0.0);
    for pair in recording.samples.windows(2) {
        let Some(value) = pair[0].values[column] else {
            continue;
        };
        let seconds = (pair[1].at - pair[0].at) as f64 / 1000.0;
        if value > goal {
            above_goal += seconds;
        }
        if value > limit {
            above_limit += seconds;
        }
    }
    (above_goal, above_limit)
}

fn peak(values: &[Option<f64>]) -> Option<f64> {
    values.iter().flatten().copied().reduce(f64::max)
}

fn disruptive_runs(decisions: &[Decision], disruptive: &[String]) -> usize {
    decisions
        .iter()
        .filter(|d| disruptive.contains(&d.strategy))
        .count()
}

fn count(decisions: &[Decision]) -> Vec<RunCount> {
    let mut counts: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for decision in decisions {
        let rung = decision
            .budget
            .as_ref()
            .zip(decision.rung)
            .map(|(budget, rung)| format!("{budget} rung {rung}"));
        *counts.entry((decision.strategy.clone(), rung)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((strategy, rung), runs)| RunCount {
            strategy,
            rung,
            runs,
        })
        .collect()
}

impl Comparison {
    /// Whether the candidate made exactly the recorded decisions.
    pub fn same_decisions(&self) -> bool {
        self.recorded_decisions == self.replayed_decisions
    }
}

fn seconds(value: f64) -> String {
    format!("{value:.0} s")
}

fn ratio(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.3}"))
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, c) = (&self.recorded, &self.replayed);
        writeln!(
            f,
            "replayed {} samples ({:.0} s of recording, cut at: {})",
            self.samples, self.seconds, self.cut
        )?;
        let mut keys: Vec<(&str, Option<&str>)> = r
            .runs_by_rung
            .iter()
            .chain(&c.runs_by_rung)
            .map(|k| (k.strategy.as_str(), k.rung.as_deref()))
            .collect();
        keys.sort();
        keys.dedup();
        let label = |(strategy, rung): (&str, Option<&str>)| match rung {
            Some(rung) => format!("  {strategy} ({rung})"),
            None => format!("  {strategy}"),
        };
        // The first column fits the longest strategy and rung.
        let width = keys
            .iter()
            .map(|k| label(*k).len())
            .max()
            .unwrap_or(0)
            .max(28);
        writeln!(f, "{:<width$} {:>12} {:>12}", "", "recorded", "candidate")?;
        let mut row =
            |name: &str, a: String, b: String| writeln!(f, "{name:<width$} {a:>12} {b:>12}");
        row("episodes", r.episodes.to_string(), c.episodes.to_string())?;
        row("runs", r.runs.to_string(), c.runs.to_string())?;
        row(
            "disruptive runs",
            r.disruptive_runs.to_string(),
            c.disruptive_runs.to_string(),
        )?;
        row(
            "time above goal",
            seconds(r.seconds_above_goal),
            seconds(c.seconds_above_goal),
        )?;
        row(
            "time above limit",
            seconds(r.seconds_above_limit),
            seconds(c.seconds_above_limit),
        )?;
        row(
            "exhaustions",
            r.exhaustions.to_string(),
            c.exhaustions.to_string(),
        )?;
        row("peak", ratio(r.peak), ratio(c.peak))?;
        row(
            "OOM kills",
            r.oom_kills.to_string(),
            c.oom_kills.to_string(),
        )?;
        if !keys.is_empty() {
            writeln!(f, "runs per strategy and rung:")?;
        }
        for (strategy, rung) in keys {
            let runs = |summary: &Summary| {
                summary
                    .runs_by_rung
                    .iter()
                    .find(|k| k.strategy == strategy && k.rung.as_deref() == rung)
                    .map_or(0, |k| k.runs)
            };
            let name = label((strategy, rung));
            writeln!(f, "{name:<width$} {:>12} {:>12}", runs(r), runs(c))?;
        }
        writeln!(
            f,
            "the candidate shifted {} recorded runs in time (matched), added {} runs and dropped \
             {} recorded ones; the replayed signal departs from the recorded one by up to {:.3}",
            self.matched_runs, self.added_runs, self.dropped_runs, self.largest_departure
        )?;
        writeln!(f, "how the departure was computed: {}.", self.departure)?;
        writeln!(
            f,
            "effects (medians over each strategy's judged runs; a fade is the relief over how \
             much faster the signal climbed back than it rose before, at most {:.0} s):",
            effect::LASTING_FADE_SECONDS
        )?;
        for row in &self.effects {
            writeln!(
                f,
                "  {:<26} {:>8}: relief {:.0} % of the signal, fades over {:.0} s ({} runs)",
                row.strategy,
                row.source,
                row.effect.relief_share * 100.0,
                row.effect.fade_seconds,
                row.effect.observed_runs
            )?;
        }
        Ok(())
    }
}
