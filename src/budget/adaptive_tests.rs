//! The adaptive reaction rules (`[tuning] reaction = "adaptive"`), driven reading by reading
//! with a clock the test moves by hand: urgency starts an episode, a climb without waiting
//! out the settle, skip-to-rung by learned relief (and its cap), the counterfactual verdict,
//! the guard band after a breach and after an OOM kill, the kill line, the reset. Each is
//! checked against `reaction = "fixed"` on the same readings where the two differ.

use std::time::{Duration, Instant};

use perfpilot_strategies::Signal;

use super::*;

/// A budget fed one reading every `every`; rungs finish the moment they start, having acted.
struct Drive {
    budget: Budget,
    now: Instant,
    every: Duration,
}

impl Drive {
    fn new(config: BudgetConfig, tuning: ReactionTuning) -> Self {
        let ladder = config.ladder.clone();
        Drive {
            budget: Budget::new("memory", config, ladder).with_reaction(tuning),
            now: Instant::now(),
            every: Duration::from_millis(100),
        }
    }

    fn adaptive(config: BudgetConfig) -> Self {
        Drive::new(config, ReactionTuning::ADAPTIVE)
    }

    fn fixed(config: BudgetConfig) -> Self {
        Drive::new(config, ReactionTuning::FIXED)
    }

    fn sample(&mut self, value: f64) -> Step {
        self.now += self.every;
        let step = self.budget.observe(Some(value), self.now, true);
        if let Some(run) = &step.run {
            self.budget.finished(run.rung, Some(true), self.now);
        }
        step
    }

    /// Feeds `values` and returns the strategy run at each reading (`-` for none).
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

    /// Gives rung `rung` a record: judged `judged` times with `mean_relief`, and a latency.
    fn learned(&mut self, rung: usize, judged: u64, mean_relief: f64, latency_ms: u64) {
        let state = &mut self.budget.rungs[rung];
        state.judged = judged;
        state.runs = judged;
        state.relief_sum = mean_relief * judged as f64;
        state.latency = Some(Duration::from_millis(latency_ms));
    }
}

/// goal 0.8, limit 1.0, settle 1 s, purge → trim → drop.
fn ladder() -> BudgetConfig {
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 0.8, 1.0, &["purge", "trim", "drop"]);
    config.settle = Duration::from_secs(1);
    config.cooldown = Duration::from_secs(10);
    config
}

fn started_reason(steps: &[Step]) -> Option<String> {
    steps.iter().flat_map(|s| &s.notes).find_map(|n| match n {
        Note::EpisodeStarted { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn urgency_starts_an_episode_under_goal_when_the_limit_is_nearer_than_the_reaction() {
    // 1.0 per second: at 0.5 the limit is 500 ms away, and the first rung needs 100 ms
    // (assumed) + 1 s settle + 100 ms between readings + 50 ms margin.
    let rising = [0.3, 0.4, 0.5, 0.6];
    let mut fixed = Drive::fixed(ladder());
    assert_eq!(
        fixed.runs(&rising),
        ["-", "-", "-", "-"],
        "fixed waits for goal"
    );

    let mut d = Drive::adaptive(ladder());
    let steps: Vec<Step> = rising.iter().map(|&v| d.sample(v)).collect();
    let runs: Vec<_> = steps
        .iter()
        .map(|s| s.run.as_ref().map_or("-", |r| r.strategy.as_str()))
        .collect();
    // The third reading gives a slope; at the fourth the rise goes on, and the limit is
    // nearer than purge's settle: trim at once.
    assert_eq!(runs, ["-", "-", "purge", "trim"]);
    let reason = started_reason(&steps).expect("an episode started");
    assert!(
        reason.contains("under goal 0.8: urgency, limit in 500 ms at 1/s"),
        "{reason}"
    );
    let view = d.budget.view(d.now);
    let urgency = view.urgency.expect("adaptive budgets show their urgency");
    assert!(urgency.urgent);
    assert_eq!(view.reaction, ReactionMode::Adaptive);
}

#[test]
fn a_flat_or_slow_signal_under_goal_starts_nothing() {
    let mut d = Drive::adaptive(ladder());
    // 0.1 per second from 0.5: the limit is 5 s away, more than the 1.25 s needed.
    let runs = d.runs(&[0.5, 0.51, 0.52, 0.53, 0.54, 0.55]);
    assert_eq!(runs, ["-"; 6]);
    assert_eq!(d.budget.view(d.now).episode, None);
}

#[test]
fn near_the_limit_the_ladder_climbs_at_the_next_reading_that_still_shows_the_rise() {
    // Above goal and rising 1/s: purge does nothing; the limit (100 ms away) is nearer than
    // the 1 s settle, so the next reading that still rises judges it and trim runs.
    let rising = [0.7, 0.75, 0.85, 0.9, 0.95, 0.96, 0.96];
    let mut fixed = Drive::fixed(ladder());
    assert_eq!(
        fixed.runs(&rising),
        ["-", "-", "purge", "-", "-", "-", "-"],
        "fixed waits out the 1 s settle"
    );
    let mut d = Drive::adaptive(ladder());
    let runs = d.runs(&rising);
    assert_eq!(runs, ["-", "-", "purge", "trim", "drop", "-", "-"]);
}

#[test]
fn a_rung_that_stops_the_rise_is_not_hurried_past() {
    // The rise stops at 0.9 once purge ran: no reading shows it going on, so purge's effect
    // is read after its settle, and it helped.
    let mut d = Drive::adaptive(ladder());
    let runs = d.runs(&[0.7, 0.8, 0.9, 0.9, 0.9, 0.9]);
    assert_eq!(runs, ["-", "-", "purge", "-", "-", "-"]);
}

#[test]
fn a_plateau_after_a_cap_is_judged_helped_against_the_forecast() {
    // Rising 1/s; purge (a cap) runs at 0.5 and the signal stays there: the trend before it
    // forecast 1.5 a second later, so its relief is 1.0 and it helped.
    let mut d = Drive::adaptive(ladder());
    let mut steps = Vec::new();
    for value in [0.3, 0.4, 0.5] {
        steps.push(d.sample(value));
    }
    assert_eq!(steps[2].run.as_ref().map(|r| r.rung), Some(0));
    for _ in 0..10 {
        steps.push(d.sample(0.5));
    }
    let judged = steps
        .iter()
        .flat_map(|s| &s.notes)
        .find_map(|n| match n {
            Note::Judged {
                helped, forecast, ..
            } => Some((*helped, *forecast)),
            _ => None,
        })
        .expect("purge was judged after its settle");
    assert_eq!(judged.0, Some(true), "a plateau after a rise helped");
    let forecast = judged.1.expect("judged against a forecast");
    assert!((forecast - 1.5).abs() < 1e-6, "{forecast}");
    let view = d.budget.view(d.now);
    assert_eq!(view.rungs[0].helped, 1);
    assert!((view.rungs[0].mean_relief.unwrap() - 1.0).abs() < 1e-6);

    // Fixed: the same plateau, judged by the level, did not help.
    let mut fixed = Drive::fixed(ladder());
    let runs = fixed.runs(&[
        0.7, 0.81, 0.81, 0.81, 0.81, 0.81, 0.81, 0.81, 0.81, 0.81, 0.81, 0.81, 0.81,
    ]);
    assert_eq!(runs[1], "purge");
    assert_eq!(fixed.budget.view(fixed.now).rungs[0].helped, 0);
}

/// goal 0.9, limit 1.0: purge → trim-25 → trim-50 → drop.
fn four_rungs() -> BudgetConfig {
    let mut config = BudgetConfig::new(
        Signal::MemoryUsage,
        0.9,
        1.0,
        &["purge", "trim-25", "trim-50", "drop"],
    );
    config.settle = Duration::from_secs(1);
    config
}

#[test]
fn a_forecast_overshoot_skips_to_the_lowest_rung_whose_learned_relief_covers_it() {
    let mut d = Drive::adaptive(four_rungs());
    d.learned(0, 3, 0.0, 30);
    d.learned(1, 3, 0.24, 40);
    // 0.9 per second, 0.95 when it shows: 0.12 past the limit before trim-25 acts (40 ms +
    // 100 ms between readings + 50 ms margin); purge relieves 0, trim-25 0.24.
    let steps: Vec<Step> = [0.77, 0.86, 0.95].iter().map(|&v| d.sample(v)).collect();
    let run = steps[2].run.clone().expect("urgent at 0.95");
    assert_eq!(run.strategy, "trim-25");
    assert!(
        run.why.contains("limit in 55 ms at 0.9/s")
            && run
                .why
                .contains("purge relieves 0 %, trim-25 relieves 24 %: skipped to trim-25"),
        "{}",
        run.why
    );
    // Fixed: purge first.
    let mut fixed = Drive::fixed(four_rungs());
    fixed.learned(0, 3, 0.0, 30);
    fixed.learned(1, 3, 0.24, 40);
    assert_eq!(fixed.runs(&[0.77, 0.86, 0.95]), ["-", "-", "purge"]);
}

#[test]
fn one_step_skips_at_most_max_rungs_skipped() {
    for (cap, expected) in [(1, "trim-25"), (2, "trim-50")] {
        let mut d = Drive::new(
            four_rungs(),
            ReactionTuning {
                max_rungs_skipped: cap,
                ..ReactionTuning::ADAPTIVE
            },
        );
        // Nothing learned covers the overshoot.
        d.learned(0, 3, 0.0, 30);
        d.learned(1, 3, 0.01, 30);
        d.learned(2, 3, 0.02, 30);
        d.learned(3, 3, 0.03, 30);
        let steps: Vec<Step> = [0.77, 0.86, 0.95].iter().map(|&v| d.sample(v)).collect();
        let run = steps[2].run.clone().expect("urgent at 0.95");
        assert_eq!(run.strategy, expected, "cap {cap}: {}", run.why);
    }
}

#[test]
fn a_rung_never_judged_is_not_skipped_past() {
    let mut d = Drive::adaptive(four_rungs());
    d.learned(0, 3, 0.0, 30);
    // trim-25 never ran: it might cover the overshoot, so the walk stops there.
    let steps: Vec<Step> = [0.77, 0.86, 0.95].iter().map(|&v| d.sample(v)).collect();
    let run = steps[2].run.clone().expect("urgent at 0.95");
    assert_eq!(run.strategy, "trim-25");
    assert!(run.why.contains("trim-25 not judged yet"), "{}", run.why);
}

#[test]
fn against_a_kill_line_the_next_rung_never_judged_is_no_cover_and_the_step_goes_one_past_it() {
    // The same readings against the target's cgroup limit: nothing learned, so the next
    // rung is not trusted with the overshoot (a guess wrong here kills the target) and the
    // step goes one rung past it, not to the cap (trim-50, the ladder's order kept).
    let mut d = Drive::adaptive(four_rungs());
    d.budget.set_kill_line(true);
    let steps: Vec<Step> = [0.77, 0.86, 0.95].iter().map(|&v| d.sample(v)).collect();
    let run = steps[2].run.clone().expect("urgent at 0.95");
    assert_eq!(run.strategy, "trim-25");
    assert!(
        run.why.contains(
            "past the kill line; purge not judged yet, trim-25 not judged yet: skipped to trim-25"
        ),
        "{}",
        run.why
    );
}

fn goal_moves(steps: &[Step]) -> Vec<f64> {
    steps
        .iter()
        .flat_map(|s| &s.notes)
        .filter_map(|n| match n {
            Note::GoalMoved { effective, .. } => Some(*effective),
            _ => None,
        })
        .collect()
}

#[test]
fn a_breach_lowers_the_effective_goal_by_the_overshoot_and_calm_episodes_creep_it_back() {
    let mut config = ladder();
    config.limit = 0.95;
    let mut d = Drive::adaptive(config);
    d.every = Duration::from_secs(1);
    let mut steps: Vec<Step> = [0.9, 1.0, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7]
        .iter()
        .map(|&v| d.sample(v))
        .collect();
    let moves = goal_moves(&steps);
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert!(
        (moves[0] - 0.75).abs() < 1e-9,
        "0.8 − (1.0 − 0.95): {moves:?}"
    );
    let view = d.budget.view(d.now);
    assert_eq!(view.goal, 0.8, "the configured goal is shown as it is");
    assert!((view.effective_goal - 0.75).abs() < 1e-9);
    assert!(view.goal_why.contains("breached"), "{}", view.goal_why);
    assert_eq!(view.episode, None, "the breach episode ended");

    // 0.77 is under the configured goal but above the one held now: an episode starts.
    steps.clear();
    steps.push(d.sample(0.77));
    assert!(started_reason(&steps).is_some_and(|r| r.contains("above goal 0.75")));
    // It ends calm, under the limit: the goal creeps back by 5 % of 0.8.
    for _ in 0..6 {
        steps.push(d.sample(0.6));
    }
    let moves = goal_moves(&steps);
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert!((moves[0] - 0.79).abs() < 1e-9, "{moves:?}");

    // Fixed: no guard band.
    let mut config = ladder();
    config.limit = 0.95;
    let mut fixed = Drive::fixed(config);
    fixed.runs(&[0.9, 1.0, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7]);
    assert_eq!(fixed.budget.view(fixed.now).effective_goal, 0.8);
}

#[test]
fn an_oom_kill_lowers_the_goal_by_what_the_fastest_rise_takes_in_the_reaction_time() {
    let mut config = ladder();
    config.settle = Duration::from_millis(200);
    let mut d = Drive::adaptive(config);
    d.budget.set_kill_line(true);
    d.learned(0, 1, 0.0, 30);
    // A rise of 1.0/s seen, then the target is killed and restarts (unread, then low).
    d.runs(&[0.1, 0.2, 0.3]);
    let note = d
        .budget
        .oom_killed("oom_kills 0 → 1")
        .expect("the goal moved");
    // 1.0/s × (30 ms latency + 200 ms settle + 100 ms between readings) = 0.33.
    let Note::GoalMoved { effective, why, .. } = note else {
        panic!("{note:?}")
    };
    assert!((effective - 0.47).abs() < 1e-6, "{effective}");
    assert!(why.contains("OOM-killed (oom_kills 0 → 1"), "{why}");
    d.now += Duration::from_secs(1);
    d.budget.observe(None, d.now, true);
    d.runs(&[0.05, 0.05, 0.05]);
    let view = d.budget.view(d.now);
    assert!(
        (view.effective_goal - 0.47).abs() < 1e-6,
        "the guard band survives the target's restart: {}",
        view.effective_goal
    );
    // Another kill: down to the floor (half the goal), not below.
    d.budget.oom_killed("oom_kills 1 → 2");
    assert!((d.budget.goal() - 0.4).abs() < 1e-9);

    // Fixed: an OOM kill moves nothing.
    let mut fixed = Drive::fixed(ladder());
    assert_eq!(fixed.budget.oom_killed("oom_kills 0 → 1"), None);
    fixed.runs(&[0.5]);
    assert_eq!(fixed.budget.goal(), 0.8);
}

#[test]
fn a_kill_line_keeps_the_whole_reaction_as_margin_and_ignores_at_limit() {
    // 0.1 per second, at 0.95 with a 200 ms settle: 500 ms to the limit. A plain limit needs
    // 100 + 200 + 100 ms and a 50 ms margin: calm; a kill line the whole 400 ms as margin:
    // urgent.
    let mut config = ladder();
    config.goal = 0.99;
    config.settle = Duration::from_millis(200);
    config.at_limit = AtLimit::Top;
    let readings = [0.93, 0.94, 0.95];
    let mut plain = Drive::adaptive(config.clone());
    assert_eq!(plain.runs(&readings), ["-", "-", "-"]);
    let mut kill = Drive::adaptive(config.clone());
    kill.budget.set_kill_line(true);
    assert_eq!(kill.runs(&readings), ["-", "-", "purge"]);
    assert!(kill.budget.view(kill.now).kill_line);
    // Above the line (a reading the kernel let through): climbs one rung, no jump to the top.
    let mut kill = Drive::adaptive(config);
    kill.budget.set_kill_line(true);
    assert_eq!(kill.runs(&[1.01]), ["purge"]);
}

#[test]
fn reset_learning_forgets_records_latency_and_the_guard_band() {
    let mut d = Drive::adaptive(ladder());
    d.learned(1, 3, 0.24, 40);
    d.budget.oom_killed("oom_kills 0 → 1");
    assert!(d.budget.goal() < 0.8);
    d.budget.reset_learning();
    let view = d.budget.view(d.now);
    assert_eq!(view.effective_goal, 0.8);
    assert_eq!(view.goal_why, "as configured");
    assert_eq!(view.rungs[1].judged, 0);
    assert_eq!(view.rungs[1].mean_relief, None);
    assert_eq!(view.rungs[1].latency_ms, None);
}

#[test]
fn the_fast_watchs_slope_starts_the_episode_where_the_full_samples_see_only_a_jump() {
    // Full samples 500 ms apart: flat at 0.1, then 0.3 after a fill that the watch's reads
    // saw rising at 2/s. The samples' own slope (median of 0, 0.2/s and 0.4/s) puts the
    // limit 3.5 s away, beyond the reaction; the watch's slope puts it 350 ms away.
    let readings = [0.1, 0.1, 0.3];
    let mut alone = Drive::adaptive(ladder());
    alone.every = Duration::from_millis(500);
    assert_eq!(alone.runs(&readings), ["-", "-", "-"]);

    let mut d = Drive::adaptive(ladder());
    d.every = Duration::from_millis(500);
    assert_eq!(d.runs(&readings[..2]), ["-", "-"]);
    d.budget.note_watch_slope(Some(2.0));
    let step = d.sample(readings[2]);
    assert_eq!(
        step.run.as_ref().map(|r| r.strategy.as_str()),
        Some("purge")
    );
    let reason = started_reason(&[step]).expect("an episode started");
    assert!(reason.contains("limit in 350 ms at 2/s"), "{reason}");
    // Used once: the next reading is judged by the samples again unless the watch says more.
    assert_eq!(d.budget.adaptive.as_ref().unwrap().watch_slope, None);
}

#[test]
fn a_rung_that_only_slows_the_rise_does_not_earn_the_settle_while_the_limit_is_near() {
    // 1/s until purge runs at 0.75, then 0.3/s: slower, still rising, the limit well inside
    // purge's 1 s settle. The next reading climbs to trim.
    let mut d = Drive::adaptive(ladder());
    assert_eq!(
        d.runs(&[0.55, 0.65, 0.75, 0.78]),
        ["-", "-", "purge", "trim"]
    );
    // Falling after the rung: it is judged after its settle, nothing more runs meanwhile.
    let mut d = Drive::adaptive(ladder());
    assert_eq!(
        d.runs(&[0.55, 0.65, 0.75, 0.7, 0.68]),
        ["-", "-", "purge", "-", "-"]
    );
}

#[test]
fn the_guard_band_is_kept_across_an_agent_restart_in_the_learned_state() {
    // A breach: the limit 0.95, the peak 1.0, the goal held 0.75.
    let mut config = ladder();
    config.limit = 0.95;
    let mut d = Drive::adaptive(config.clone());
    d.runs(&[0.9, 1.0, 0.5]);
    let before = d.budget.view(d.now);
    assert!((before.effective_goal - 0.75).abs() < 1e-9, "{before:?}");
    let learned = d.budget.learned();
    let guard = learned
        .guard
        .clone()
        .expect("the moved guard band is in the learned state");
    assert!((guard.effective_goal - 0.75).abs() < 1e-9);
    // Through the file's JSON and into a fresh budget, as after a restart.
    let text = serde_json::to_string(&learned).unwrap();
    let read: crate::learned::BudgetLearned = serde_json::from_str(&text).unwrap();
    let mut restarted = Drive::adaptive(config.clone());
    restarted.budget.restore(&read);
    let after = restarted.budget.view(restarted.now);
    assert!((after.effective_goal - 0.75).abs() < 1e-9, "{after:?}");
    assert!(after.goal_why.contains("breached"), "{}", after.goal_why);
    assert!(after.goal_why.contains("restart"), "{}", after.goal_why);
    // Held below the configured goal: the next episode starts at 0.75, not 0.8.
    assert_eq!(restarted.runs(&[0.77]), ["purge"]);
    // Never below a floor raised since, and nothing kept by a fixed budget.
    let mut floored = config.clone();
    floored.min_goal = Some(0.78);
    let mut raised = Drive::adaptive(floored);
    raised.budget.restore(&read);
    assert!((raised.budget.view(raised.now).effective_goal - 0.78).abs() < 1e-9);
    let mut fixed = Drive::fixed(config);
    fixed.budget.restore(&read);
    assert_eq!(fixed.budget.view(fixed.now).effective_goal, 0.8);
    // A state file from before the field: the configured goal.
    let old: crate::learned::BudgetLearned =
        serde_json::from_str(r#"{"name": "memory", "signal": "memory_usage", "rungs": []}"#)
            .unwrap();
    assert_eq!(old.guard, None);
}

#[test]
fn a_rung_started_on_urgency_says_urgent_though_the_forecast_reaches_the_limit_later() {
    // A 10 s settle: reacting needs over 10 s, so 0.05/s from 0.3 is urgent at 0.5 (10 s
    // from the limit), while the forecast puts the limit beyond its 5 s horizon. The record
    // names the urgency, not the forecast that did not count.
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 0.8, 1.0, &["purge", "trim"]);
    config.settle = Duration::from_secs(10);
    config.forecast = Some(BudgetForecast {
        horizon: Duration::from_secs(5),
        window: 6,
    });
    let mut d = Drive::adaptive(config);
    let run = (0..60)
        .find_map(|i| d.sample(0.3 + 0.005 * f64::from(i)).run)
        .expect("urgent before the goal");
    assert!(
        run.why.contains("under goal 0.8, urgent (limit in"),
        "{}",
        run.why
    );
    assert!(!run.why.contains("predicted"), "{}", run.why);
}

#[test]
fn with_every_rung_tried_under_goal_no_rung_repeats_on_a_forecast_alone() {
    // A slow rise under the goal (0.005/s, never urgent) that a long horizon still forecasts
    // across the limit: each rung runs once (the fit restarts after each), then the episode
    // holds, cooldowns over or not, until the level passes the goal. Fixed reaction repeats
    // a rung after each cooldown, as configured.
    let mut config = BudgetConfig::new(Signal::MemoryUsage, 0.8, 0.95, &["purge", "trim", "drop"]);
    config.settle = Duration::ZERO;
    config.calm = 100;
    config.cooldown = Duration::from_secs(2);
    config.forecast = Some(BudgetForecast {
        horizon: Duration::from_secs(1000),
        window: 6,
    });
    let rising: Vec<f64> = (0..200).map(|i| 0.5 + 0.0005 * f64::from(i)).collect();
    let mut d = Drive::adaptive(config.clone());
    let mut notes = Vec::new();
    let mut runs = Vec::new();
    for &value in &rising {
        let step = d.sample(value);
        runs.extend(step.run.map(|run| run.strategy));
        notes.extend(step.notes);
    }
    assert_eq!(runs, ["purge", "trim", "drop"], "{notes:?}");
    let held = notes.iter().find_map(|note| match note {
        Note::Waiting { why } => Some(why.clone()),
        _ => None,
    });
    let held = held.expect("a note that the episode holds");
    assert!(
        held.contains("is under goal 0.8, predicted to cross limit 0.95 in")
            && held.contains("no rung repeats on a forecast alone"),
        "{held}"
    );
    assert!(d.budget.view(d.now).waiting);
    // Above the goal, the lowest rung cooled down runs again.
    assert_eq!(d.runs(&[0.85]), ["purge"]);

    let mut fixed = Drive::fixed(config);
    let repeats = fixed.runs(&rising).iter().filter(|r| *r != "-").count();
    assert!(repeats > 3, "fixed repeats after each cooldown: {repeats}");
}
