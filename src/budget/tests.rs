//! The budget's rules, driven sample by sample with a clock the test moves by hand.

use std::time::{Duration, Instant};

use perfpilot_strategies::Signal;

use super::*;

/// A budget fed one sample a second; rungs "finish" the moment they start unless told.
struct Drive {
    budget: Budget,
    now: Instant,
}

impl Drive {
    fn new(config: BudgetConfig) -> Self {
        let ladder = config.ladder.clone();
        Drive {
            budget: Budget::new("memory", config, ladder),
            now: Instant::now(),
        }
    }

    /// One sample one second after the last; a chosen rung finishes at once, having acted.
    fn sample(&mut self, value: f64) -> Step {
        self.now += Duration::from_secs(1);
        let step = self.budget.observe(Some(value), self.now, true);
        if let Some(run) = &step.run {
            self.budget.finished(run.rung, Some(true), self.now);
        }
        step
    }

    /// Feeds `values` and returns the strategy run at each sample (`-` for none).
    fn runs(&mut self, values: &[f64]) -> Vec<String> {
        values
            .iter()
            .map(|&v| {
                self.sample(v)
                    .run
                    .map_or("-".to_owned(), |run| run.strategy)
            })
            .collect()
    }
}

fn ladder() -> BudgetConfig {
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 0.8, 0.95, &["purge", "trim", "drop"]);
    config.settle = Duration::from_secs(2);
    config.cooldown = Duration::from_secs(10);
    config
}

#[test]
fn climbs_one_rung_per_settle_while_above_goal_and_never_in_band() {
    let mut d = Drive::new(ladder());
    // In band: nothing. Above goal at t=3: purge; judged two samples later (settle 2 s),
    // still above: trim; then drop.
    let runs = d.runs(&[0.5, 0.79, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]);
    assert_eq!(
        runs,
        ["-", "-", "purge", "-", "trim", "-", "drop", "-", "-"]
    );
    let view = d.budget.view(d.now);
    assert_eq!(view.state, BudgetState::AboveGoal);
    assert_eq!(view.episode, Some(1));
    assert_eq!(view.rung, Some(2));
    assert_eq!(view.rung_strategy.as_deref(), Some("drop"));
    assert!(
        view.waiting,
        "every rung tried, cooldowns running: {view:?}"
    );
    assert_eq!(
        view.rungs.iter().map(|r| r.runs).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    assert_eq!(view.rungs[0].helped, 0, "0.85 → 0.85 is no relief");
}

#[test]
fn a_rung_that_helps_ends_the_climb_and_calm_samples_end_the_episode() {
    let mut d = Drive::new(ladder());
    assert_eq!(d.runs(&[0.9]), ["purge"]);
    // Purge brought it to 0.85 (helped, not enough): trim; trim brings it under goal.
    let runs = d.runs(&[0.85, 0.85, 0.7, 0.7, 0.7, 0.7]);
    assert_eq!(runs, ["-", "trim", "-", "-", "-", "-"]);
    let view = d.budget.view(d.now);
    assert_eq!(view.episode, None, "3 calm samples after trim was judged");
    assert_eq!(view.state, BudgetState::InBand);
    assert_eq!((view.rungs[0].helped, view.rungs[1].helped), (1, 1));
    assert!((view.rungs[1].mean_relief.unwrap() - 0.15).abs() < 1e-9);
    // The next episode starts from the bottom again.
    assert_eq!(d.runs(&[0.9]), ["purge"]);
    assert_eq!(d.budget.view(d.now).episode, Some(2));
}

#[test]
fn the_settle_is_read_from_regular_samples_and_a_running_rung_blocks_the_climb() {
    let mut d = Drive::new(ladder());
    d.now += Duration::from_secs(1);
    let step = d.budget.observe(Some(0.9), d.now, true);
    let run = step.run.expect("purge starts the episode");
    assert_eq!(run.rung, 0);
    assert_eq!(d.budget.running_rung(), Some(0));
    // Still running at the next samples: no climb, no judgement.
    for _ in 0..5 {
        d.now += Duration::from_secs(1);
        let step = d.budget.observe(Some(0.9), d.now, true);
        assert_eq!(step, Step::default());
    }
    d.budget.finished(0, Some(true), d.now);
    // 1 s after it finished: not settled yet.
    d.now += Duration::from_secs(1);
    assert_eq!(d.budget.observe(Some(0.9), d.now, true).run, None);
    // 2 s: judged by this sample, and the climb goes on.
    d.now += Duration::from_secs(1);
    let step = d.budget.observe(Some(0.9), d.now, true);
    assert!(step.notes.iter().any(|n| matches!(
        n,
        Note::Judged {
            rung: 0,
            helped: Some(false),
            ..
        }
    )));
    let run = step.run.unwrap();
    assert_eq!(run.strategy, "trim");
    assert!(
        run.why
            .contains("climbed to rung 2 of 3, purge did not help (0.9 → 0.9)"),
        "{}",
        run.why
    );
}

#[test]
fn cannot_act_defers_the_choice_without_losing_it() {
    let mut d = Drive::new(ladder());
    d.now += Duration::from_secs(1);
    let step = d.budget.observe(Some(0.9), d.now, false);
    assert_eq!(step.run, None);
    assert!(matches!(
        step.notes[0],
        Note::EpisodeStarted { episode: 1, .. }
    ));
    assert_eq!(d.runs(&[0.9]), ["purge"], "chosen at the next sample");
}

#[test]
fn above_limit_with_at_limit_top_jumps_to_the_top_rung() {
    let mut config = ladder();
    config.at_limit = AtLimit::Top;
    let mut d = Drive::new(config);
    assert_eq!(d.runs(&[0.85]), ["purge"]);
    // Above the limit before purge settled: straight to the top.
    let step = d.sample(0.97);
    let run = step.run.unwrap();
    assert_eq!(run.strategy, "drop");
    assert!(run.why.contains("at_limit = \"top\""), "{}", run.why);
    assert!(step
        .notes
        .iter()
        .any(|n| matches!(n, Note::Judged { rung: 0, .. })));

    // With `climb`, the same rise takes the next rung at each sample above the limit: a
    // rung that left the signal above it is judged at once.
    let mut d = Drive::new(ladder());
    assert_eq!(d.runs(&[0.85, 0.97, 0.97]), ["purge", "trim", "drop"]);
    // Above the limit, even falling: a rung that left it above the limit did not do enough.
    let mut d = Drive::new(ladder());
    assert_eq!(d.runs(&[0.99, 0.97, 0.97]), ["purge", "trim", "drop"]);
    assert_eq!(
        d.budget.view(d.now).rungs[0].helped,
        1,
        "it did relieve: 0.99 → 0.97"
    );
    // Above goal, under the limit: the settle is waited out.
    let mut d = Drive::new(ladder());
    assert_eq!(d.runs(&[0.9, 0.9, 0.9]), ["purge", "-", "trim"]);
}

#[test]
fn at_limit_top_runs_the_rest_of_the_ladder_before_it_is_exhausted() {
    let mut config = ladder();
    config.at_limit = AtLimit::Top;
    let mut d = Drive::new(config);
    // The top first; above the limit the ladder is walked down, one rung per sample once
    // the top settled; then, with every rung run, exhausted.
    let runs = d.runs(&[0.97; 8]);
    assert_eq!(runs, ["drop", "trim", "purge", "-", "-", "-", "-", "-"]);
    assert_eq!(d.budget.view(d.now).exhaustions, 1);
}

#[test]
fn exhausted_once_when_the_top_rung_ran_and_the_signal_is_above_limit() {
    let mut d = Drive::new(ladder());
    let mut exhausted = Vec::new();
    for second in 0..20 {
        let step = d.sample(0.97);
        for note in step.notes {
            if let Note::Exhausted(e) = note {
                exhausted.push((second, e));
            }
        }
    }
    assert_eq!(exhausted.len(), 1, "{exhausted:?}");
    let (second, e) = &exhausted[0];
    assert_eq!(
        *second, 3,
        "purge 0, trim 1, drop 2 (above the limit: no settle), judged at 3"
    );
    assert_eq!((e.episode, e.limit), (1, 0.95));
    assert!(
        e.message.contains("purge → trim → drop") && e.message.contains("nothing left to try"),
        "{}",
        e.message
    );
    let view = d.budget.view(d.now);
    assert_eq!(view.exhaustions, 1);
    assert!(view.exhausted);
    // Time above limit: 19 intervals of 1 s between 20 samples above it.
    assert_eq!(view.seconds_above_limit.episode, 19.0);
    assert_eq!(view.seconds_above_limit.total, 19.0);
}

#[test]
fn every_rung_tried_under_limit_waits_for_cooldowns_and_says_so() {
    let mut d = Drive::new(ladder()); // cooldown 10 s
    let mut runs = Vec::new();
    let mut waiting = 0;
    for second in 0..30 {
        let step = d.sample(0.85);
        if let Some(run) = step.run {
            runs.push((second, run.strategy));
        }
        waiting += step
            .notes
            .iter()
            .filter(|n| matches!(n, Note::Waiting { .. }))
            .count();
    }
    let at: Vec<(u32, &str)> = runs.iter().map(|(s, n)| (*s, n.as_str())).collect();
    // Climb 0, 2, 4; then each rung again 10 s after its own last run, lowest first, and
    // never faster than that.
    assert_eq!(
        at,
        [
            (0, "purge"),
            (2, "trim"),
            (4, "drop"),
            (10, "purge"),
            (12, "trim"),
            (14, "drop"),
            (20, "purge"),
            (22, "trim"),
            (24, "drop")
        ]
    );
    assert!(waiting >= 3, "said it waits each time it starts waiting");
    assert_eq!(
        d.budget.view(d.now).exhaustions,
        0,
        "under limit: not exhausted"
    );
}

#[test]
fn an_unhelpful_rung_is_skipped_after_skip_after_runs_and_retried_every_retry_every_episodes() {
    let mut config = ladder();
    config.skip_after = 2;
    config.retry_every = 3;
    config.calm = 1;
    let mut d = Drive::new(config);
    let mut firsts = Vec::new();
    let mut skipped_notes = 0;
    for _episode in 0..8 {
        // Above goal: the first rung run; purge never helps, trim does.
        let step = d.sample(0.9);
        skipped_notes += step
            .notes
            .iter()
            .filter(|n| matches!(n, Note::Skipped { strategy, .. } if strategy == "purge"))
            .count();
        let first = step.run.unwrap().strategy;
        if first == "purge" {
            // not relieved: trim next, which helps.
            assert_eq!(d.runs(&[0.9, 0.9]), ["-", "trim"]);
        }
        firsts.push(first);
        // trim's effect, then calm.
        d.runs(&[0.7, 0.7]);
        assert_eq!(d.budget.view(d.now).episode, None);
    }
    // purge twice unhelpful → skipped; retried in the 3rd episode that would skip it.
    assert_eq!(
        firsts,
        ["purge", "purge", "trim", "trim", "purge", "trim", "trim", "purge"]
    );
    assert_eq!(skipped_notes, 4);
    let view = d.budget.view(d.now);
    assert!(view.rungs[0].skipped);
    assert_eq!(view.rungs[0].runs, 4);
    assert_eq!(view.rungs[1].helped, 8);
}

#[test]
fn a_skipped_rung_that_helps_on_its_retry_is_used_again() {
    let mut config = ladder();
    config.skip_after = 1;
    config.retry_every = 2;
    config.calm = 1;
    let mut d = Drive::new(config);
    // Episode 1: purge does not help, trim does.
    assert_eq!(
        d.runs(&[0.9, 0.9, 0.9, 0.7, 0.7, 0.7]),
        ["purge", "-", "trim", "-", "-", "-"]
    );
    // Episode 2: purge skipped.
    assert_eq!(d.runs(&[0.9, 0.7, 0.7]), ["trim", "-", "-"]);
    // Episode 3: purge retried, and now it helps...
    assert_eq!(d.runs(&[0.9, 0.7, 0.7]), ["purge", "-", "-"]);
    // ...so episode 4 starts with it again.
    assert_eq!(d.runs(&[0.9]), ["purge"]);
    assert!(!d.budget.view(d.now).rungs[0].skipped);
}

#[test]
fn a_one_rung_budget_runs_like_a_trigger_with_its_cooldown() {
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 0.8, 0.95, &["purge"]);
    config.cooldown = Duration::from_secs(10);
    let mut d = Drive::new(config);
    let fired: Vec<usize> = (0..25).filter(|_| d.sample(0.9).run.is_some()).collect();
    // As a trigger with above = 0.8 and a 10 s cooldown: at 0, 10 and 20.
    assert_eq!(fired, [0, 10, 20]);
}

#[test]
fn a_forecast_of_crossing_the_limit_starts_the_episode_under_goal() {
    let mut config = ladder();
    config.forecast = Some(BudgetForecast {
        horizon: Duration::from_secs(10),
        window: 6,
    });
    let mut d = Drive::new(config);
    // +0.02/s from 0.5: the fit (3 samples) reaches 0.95 in ~20 s: not yet.
    assert_eq!(d.runs(&[0.50, 0.52, 0.54]), ["-", "-", "-"]);
    // At 0.76, 0.95 is 9.5 s away: the episode starts with purge while under goal.
    let runs = d.runs(&[
        0.56, 0.58, 0.60, 0.62, 0.64, 0.66, 0.68, 0.70, 0.72, 0.74, 0.76, 0.78,
    ]);
    let first = runs.iter().position(|r| r != "-").unwrap();
    assert_eq!(runs[first], "purge");
    assert!(first >= 8, "{runs:?}");
    let view = d.budget.view(d.now);
    assert_eq!(view.episode, Some(1));
    assert_eq!(view.state, BudgetState::InBand);
}

#[test]
fn a_dry_run_climbs_the_ladder_without_learning() {
    let mut d = Drive::new(ladder());
    let mut runs = Vec::new();
    for _ in 0..8 {
        d.now += Duration::from_secs(1);
        let step = d.budget.observe(Some(0.9), d.now, true);
        if let Some(run) = step.run {
            d.budget.finished(run.rung, None, d.now);
            runs.push(run.strategy);
        }
    }
    assert_eq!(runs, ["purge", "trim", "drop"]);
    let view = d.budget.view(d.now);
    assert!(view.rungs.iter().all(|r| r.judged == 0 && !r.skipped));
}

#[test]
fn an_absent_signal_is_neither_calm_nor_above() {
    let mut d = Drive::new(ladder());
    d.runs(&[0.9]);
    for _ in 0..5 {
        d.now += Duration::from_secs(1);
        assert_eq!(d.budget.observe(None, d.now, true), Step::default());
    }
    let view = d.budget.view(d.now);
    assert_eq!(
        view.episode,
        Some(1),
        "unread samples do not end the episode"
    );
    assert_eq!(view.seconds_above_goal.total, 0.0, "nor count as above");
}

#[test]
fn budget_config_validation_names_every_key() {
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 1.2, 0.5, &[]);
    config.calm = 0;
    config.skip_after = 0;
    config.watch_interval = Some(Duration::ZERO);
    config.forecast = Some(BudgetForecast {
        horizon: Duration::ZERO,
        window: 2,
    });
    let problems = config.problems("budgets.memory", Duration::from_secs(1));
    let expect = [
        "budgets.memory.goal = 1.2: must be in (0, 1] for signal memory_usage",
        "budgets.memory.ladder = []: name at least one strategy",
        "budgets.memory.calm = 0: must be at least 1 sample",
        "budgets.memory.skip_after = 0: must be at least 1 run",
        "budgets.memory.watch_interval = 0s: must be at least 1ms and at most 10s",
        "budgets.memory.forecast.horizon = 0s: must be positive",
        "budgets.memory.forecast.window = 2: must be in 3..=1000",
    ];
    for expected in expect {
        assert!(
            problems.iter().any(|p| p.to_string().starts_with(expected)),
            "no problem starting with {expected:?} in {problems:#?}"
        );
    }
    let config = BudgetConfig::new(Signal::MemoryUsage, 0.9, 0.8, &["purge"]);
    assert_eq!(
        config
            .problems("budgets.m", Duration::from_secs(1))
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["budgets.m.limit = 0.8: must be at least goal (0.9)"]
    );
}
