//! Budgets and escalation ladders (SPEC §10): pure decisions, no I/O.
//!
//! A [`Budget`] is fed one value of its signal per full sample ([`Budget::observe`]: the
//! scheduled ones, and those the fast watch asks for when it sees a crossing or urgency) and
//! told when a rung it asked for has finished ([`Budget::finished`]); it answers with a
//! [`Step`]: at most one rung to run now, and [`Note`]s of what changed (an episode started,
//! a rung was judged, skipped or retried, the ladder waits, is exhausted, the episode ended).
//!
//! The rules:
//! - an **episode** starts when the signal is above `goal` (or, with `[forecast]`, when its
//!   trend reaches `limit` within the horizon; adaptive, when it is urgent); the lowest rung
//!   runs. Adaptive: under the goal, a reading inside the noise band ([`noise`]: a swing back
//!   to where the signal has been lately) is neither urgent nor forecasting;
//! - a rung's effect is read from the first *regular* sample taken at least `settle` after it
//!   finished (no extra sample is taken): it **helped** when it acted and the signal fell by
//!   at least [`crate::history::MIN_RELIEF_SHARE`] of its value before. If the signal is
//!   still above `goal` then, the next rung runs (the ladder **climbs**);
//! - above `limit`, a finished rung is judged by the next regular sample, without waiting out
//!   the settle: the limit is the line never to cross, and a rung that left the signal above
//!   it did not do enough;
//! - above `limit` with `at_limit = "top"`, the highest rung not run within `cooldown` runs
//!   at once, without waiting for the running rung to settle: while the signal stays above
//!   the limit the ladder is walked from the top down, one rung per sample;
//! - a rung whose last `skip_after` judged runs in this budget all failed to help is
//!   **skipped** (a note says so), and **retried** in every `retry_every`-th episode that would
//!   skip it, so a rung that starts working again is not forgotten;
//! - once every rung was tried in an episode and the signal is still above goal, the episode
//!   **waits**: a rung runs again only after `cooldown` since its last run in this episode
//!   (lowest first), and a note says it waits. Adaptive: under the goal a rung runs again
//!   only on urgency, never on the forecast alone;
//! - with no rung left to climb and the signal above `limit`, the episode is **exhausted**
//!   (once per episode): the agent has nothing left to try and says so;
//! - the episode **ends** after `calm` consecutive samples under `goal` (and not forecast to
//!   cross `limit`), once the last rung was judged; the next starts from the bottom again.
//!
//! Time above goal and above limit is counted between regular samples: the time from one
//! sample to the next counts as above when the first of them was.

mod adaptive;
pub mod config;
pub mod cost;
mod decision;
pub mod guard;
pub mod noise;
pub mod urgency;
pub mod verdict;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use perfpilot_strategies::snapshot::unix_millis;
use perfpilot_strategies::Signal;
use serde::Serialize;

pub use config::{problems, AtLimit, BudgetConfig, BudgetForecast, ReactionMode, ReactionTuning};

use crate::trigger::trend::Window;
#[cfg(test)]
pub(crate) use adaptive::FIRST_RUN_LATENCY;
use adaptive::{Adaptive, Track};
use cost::{RunReadings, RungCost, RungCostView};
use urgency::Line;
use verdict::Verdict;

/// Where the signal is relative to the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetState {
    /// At or below `goal`.
    InBand,
    /// Above `goal`, at or below `limit`.
    AboveGoal,
    /// Above `limit`.
    AboveLimit,
}

impl BudgetState {
    /// The state for `value` against `goal` and `limit`.
    pub fn of(value: f64, goal: f64, limit: f64) -> Self {
        if value > limit {
            BudgetState::AboveLimit
        } else if value > goal {
            BudgetState::AboveGoal
        } else {
            BudgetState::InBand
        }
    }

    /// `0` in band, `1` above goal, `2` above limit (the `/metrics` gauge).
    pub fn number(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for BudgetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetState::InBand => "in-band",
            BudgetState::AboveGoal => "above-goal",
            BudgetState::AboveLimit => "above-limit",
        })
    }
}

/// A rung the budget wants run now.
#[derive(Debug, Clone, PartialEq)]
pub struct RungRun {
    /// Position in the ladder, from 0 (least disruptive).
    pub rung: usize,
    /// The strategy to run.
    pub strategy: String,
    /// The episode it runs in (from 1).
    pub episode: u64,
    /// Why this rung now: started, climbed (and past which skipped rungs), jumped to the top,
    /// or repeated after its cooldown.
    pub why: String,
}

/// Why an episode gave up: the top of the ladder is reached and the signal is above limit.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exhaustion {
    /// The budget.
    pub budget: String,
    /// The episode.
    pub episode: u64,
    /// The signal's value.
    pub value: f64,
    /// The budget's limit.
    pub limit: f64,
    /// When, in milliseconds since the Unix epoch.
    #[serde(with = "unix_millis")]
    #[schema(value_type = u64)]
    pub at: SystemTime,
    /// A sentence for people.
    pub message: String,
}

/// Something that changed in a budget, for the log and the event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// An episode started.
    EpisodeStarted {
        /// Its number.
        episode: u64,
        /// Why.
        reason: String,
    },
    /// A rung's effect was read from a regular sample.
    Judged {
        /// The rung.
        rung: usize,
        /// Its strategy.
        strategy: String,
        /// Whether it helped; `None` unknown (a dry run).
        helped: Option<bool>,
        /// The signal before it ran.
        before: f64,
        /// The signal in the judging sample.
        after: f64,
        /// What the trend before it forecast for the judging sample (adaptive reaction);
        /// `None`: judged by the level alone.
        forecast: Option<f64>,
    },
    /// The learned guard band moved the effective goal.
    GoalMoved {
        /// The goal held now.
        effective: f64,
        /// The goal as configured.
        configured: f64,
        /// Why.
        why: String,
    },
    /// A rung that has not helped lately was passed over.
    Skipped {
        /// The rung.
        rung: usize,
        /// Its strategy.
        strategy: String,
        /// Why.
        why: String,
    },
    /// Every rung was tried and the signal is above goal: the episode waits for cooldowns.
    Waiting {
        /// Why, and until when.
        why: String,
    },
    /// No rung left and the signal above limit.
    Exhausted(Exhaustion),
    /// The episode ended: the signal was under goal for `calm` samples.
    EpisodeEnded {
        /// Its number.
        episode: u64,
        /// How long it lasted.
        duration: Duration,
    },
}

/// What one observation decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// The rung to run now, if any. The caller must start it (the budget counts it as running
    /// until [`Budget::finished`]).
    pub run: Option<RungRun>,
    /// What changed.
    pub notes: Vec<Note>,
}

/// One rung's track record in one budget.
#[derive(Debug, Clone)]
struct Rung {
    strategy: String,
    runs: u64,
    judged: u64,
    helped: u64,
    relief_sum: f64,
    /// The last `skip_after` judgements, newest last.
    recent: VecDeque<bool>,
    /// Episodes that skipped it since it last ran.
    skipped_episodes: u32,
    /// Its last measured latency (start to finish).
    latency: Option<Duration>,
    /// What its runs cost the target.
    cost: RungCost,
}

impl Rung {
    fn ineffective(&self, skip_after: u32) -> bool {
        self.recent.len() >= skip_after as usize && self.recent.iter().all(|helped| !helped)
    }

    fn mean_relief(&self) -> Option<f64> {
        (self.judged > 0).then(|| self.relief_sum / self.judged as f64)
    }

    fn track(&self) -> Track {
        Track {
            latency: self.latency,
            mean_relief: self.mean_relief(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    rung: usize,
    before: f64,
    /// When it started.
    started: Instant,
    /// The signal's short-horizon slope when it started (adaptive reaction): the forecast
    /// without it.
    slope: Option<f64>,
    /// When it finished, and whether it acted (`None`: unknown, a dry run).
    finished: Option<(Instant, Option<bool>)>,
}

#[derive(Debug, Clone)]
struct Episode {
    id: u64,
    started: Instant,
    started_at: SystemTime,
    /// The next rung to climb to.
    next: usize,
    /// Per rung: skip it in this episode (decided once, when first reached).
    skip: Vec<Option<bool>>,
    /// Per rung: its last run in this episode.
    last_run: Vec<Option<Instant>>,
    /// The rung that ran last.
    rung: Option<usize>,
    pending: Option<Pending>,
    /// The last judged rung: (rung, before, after, helped).
    judged: Option<(usize, f64, f64, Option<bool>)>,
    calm: u32,
    above_goal: Duration,
    above_limit: Duration,
    waiting: bool,
    exhausted: bool,
    /// The highest reading in this episode.
    peak: f64,
    /// The target was OOM-killed during it: not a calm episode, whatever the readings.
    killed: bool,
}

/// What, besides the level, kept a sample from being calm: each as it counted (inside the
/// noise band neither does).
#[derive(Debug, Clone, Copy, Default)]
struct Unrest {
    /// The trend reaches `limit` within the forecast's horizon.
    forecasting: bool,
    /// The limit is nearer than the reaction needs (adaptive reaction).
    urgent: bool,
}

/// One budget's state: the current episode, the ladder's track record, time above goal and
/// limit. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Budget {
    name: String,
    config: BudgetConfig,
    rungs: Vec<Rung>,
    episode: Option<Episode>,
    episodes: u64,
    exhausted: u64,
    total_above_goal: Duration,
    total_above_limit: Duration,
    last: Option<(Instant, f64)>,
    value: Option<f64>,
    window: Option<Window>,
    origin: Option<Instant>,
    forecast_seconds: Option<f64>,
    since: Option<Instant>,
    /// `None` with `[tuning] reaction = "fixed"`.
    adaptive: Option<Adaptive>,
    /// What, besides the level, kept the latest sample from being calm.
    unrest: Unrest,
    /// A monotonic time and the wall time it stood for: what records' wall times
    /// (an episode's start, an exhaustion) are counted from ([`Budget::at_wall`]).
    anchor: (Instant, SystemTime),
}

impl Budget {
    /// A budget in band. `ladder` holds the rungs' strategy names as the engine knows them
    /// (resolved from the configured names or aliases), in the configured order.
    pub fn new(name: impl Into<String>, config: BudgetConfig, ladder: Vec<String>) -> Self {
        let window = config
            .forecast
            .as_ref()
            .map(|forecast| Window::new(forecast.window as usize));
        Budget {
            name: name.into(),
            rungs: ladder
                .into_iter()
                .map(|strategy| Rung {
                    strategy,
                    runs: 0,
                    judged: 0,
                    helped: 0,
                    relief_sum: 0.0,
                    recent: VecDeque::new(),
                    skipped_episodes: 0,
                    latency: None,
                    cost: RungCost::default(),
                })
                .collect(),
            config,
            episode: None,
            episodes: 0,
            exhausted: 0,
            total_above_goal: Duration::ZERO,
            total_above_limit: Duration::ZERO,
            last: None,
            value: None,
            window,
            origin: None,
            forecast_seconds: None,
            since: None,
            adaptive: None,
            unrest: Unrest::default(),
            anchor: (Instant::now(), SystemTime::now()),
        }
    }

    /// The same budget reacting as `tuning` says ([`Budget::new`] reacts as
    /// [`ReactionTuning::FIXED`]).
    pub fn with_reaction(mut self, tuning: ReactionTuning) -> Self {
        self.adaptive =
            (tuning.mode == ReactionMode::Adaptive).then(|| Adaptive::new(&self.config, tuning));
        self
    }

    /// How it reacts.
    pub fn reaction(&self) -> ReactionTuning {
        self.adaptive
            .as_ref()
            .map_or(ReactionTuning::FIXED, |a| a.tuning)
    }

    /// Whether the limit is the target's cgroup limit, a line whose crossing kills the target
    /// (adaptive reaction: urgency keeps the whole reaction time as margin from it, and
    /// `at_limit` does not apply).
    pub fn set_kill_line(&mut self, kill_line: bool) {
        if let Some(adaptive) = &mut self.adaptive {
            adaptive.line = if kill_line { Line::Kill } else { Line::Limit };
        }
    }

    fn kill_line(&self) -> bool {
        self.adaptive.as_ref().is_some_and(|a| a.line == Line::Kill)
    }

    /// The goal held now: the configured one, or lower after the learned guard band moved it.
    pub fn goal(&self) -> f64 {
        self.adaptive
            .as_ref()
            .map_or(self.config.goal, |a| a.guard.effective())
    }

    /// The target was OOM-killed (`how`: what the count did): with adaptive reaction the
    /// guard band moves the goal down (a note says so).
    pub fn oom_killed(&mut self, how: &str) -> Option<Note> {
        let first = self.rungs.first().map(Rung::track);
        let adaptive = self.adaptive.as_mut()?;
        if let Some(episode) = &mut self.episode {
            episode.killed = true;
        }
        adaptive
            .oom_kill(&self.config, first, how)
            .then(|| goal_moved(adaptive, &self.config))
    }

    /// Forgets what this budget learned: each rung's record and latency, the guard band and
    /// the rise. The current episode, if any, goes on.
    pub fn reset_learning(&mut self) {
        for rung in &mut self.rungs {
            rung.judged = 0;
            rung.helped = 0;
            rung.relief_sum = 0.0;
            rung.recent.clear();
            rung.skipped_episodes = 0;
            rung.latency = None;
        }
        if let Some(adaptive) = &mut self.adaptive {
            adaptive.reset();
        }
    }

    /// With adaptive reaction, the reaction time its next rung needs (measured latency, or
    /// [`FIRST_RUN_LATENCY`] before it ran, and `settle`): what the fast watch
    /// judges urgency against. `None` with fixed reaction.
    pub fn reaction_needed(&self) -> Option<urgency::Reaction> {
        let next = self.next_track();
        self.adaptive
            .as_ref()
            .map(|a| a.reaction(&self.config, next))
    }

    /// The slope of its signal the fast watch worked out from its own reads just now, if any
    /// (adaptive reaction): the next reading's urgency is judged by it, the shorter horizon,
    /// instead of by the full samples' slope alone.
    pub fn note_watch_slope(&mut self, slope: Option<f64>) {
        if let Some(adaptive) = &mut self.adaptive {
            adaptive.watch_slope = slope.filter(|s| s.is_finite());
        }
    }

    /// The next rung's track, for the urgency of a reading.
    fn next_track(&self) -> Option<Track> {
        let next = self.episode.as_ref().map_or(0, |e| e.next);
        self.rungs.get(next).map(Rung::track)
    }

    /// Whether the latest reading was inside the noise band (adaptive reaction): a swing
    /// back up to where the signal has been lately, under the goal held.
    fn inside_noise(&self) -> bool {
        self.adaptive.as_ref().is_some_and(|a| a.inside_noise)
    }

    /// Adaptive reaction: adds the reading to the rise and tells whether it is urgent.
    fn sense(&mut self, value: f64, now: Instant) -> bool {
        let next = self.next_track();
        match &mut self.adaptive {
            Some(adaptive) => adaptive.sense(value, now, &self.config, next),
            None => false,
        }
    }

    /// Says which wall time the monotonic `now` stands for, before a sample is fed: the
    /// engine passes its clock's, so a replay on a virtual clock records virtual wall times.
    /// Without it the budget counts from the time it was made.
    pub fn at_wall(&mut self, now: Instant, wall: SystemTime) {
        self.anchor = (now, wall);
    }

    /// The wall time at monotonic `now`, from the anchor.
    fn wall(&self, now: Instant) -> SystemTime {
        let (then, wall) = self.anchor;
        match now.checked_duration_since(then) {
            Some(later) => wall + later,
            None => wall - then.duration_since(now),
        }
    }

    /// The budget's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Whether an episode is running.
    pub fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// Whether this budget gives the verdict on its `rung`'s run in `episode` (adaptive
    /// reaction, the rung still waiting for it): the run's record then takes the budget's
    /// counterfactual verdict ([`Note::Judged`]) instead of one by the level alone.
    pub fn judges_run(&self, episode: u64, rung: usize) -> bool {
        self.adaptive.is_some()
            && self
                .episode
                .as_ref()
                .is_some_and(|e| e.id == episode && e.pending.is_some_and(|p| p.rung == rung))
    }

    /// The number of the latest episode (from 1; 0 before the first): the one a
    /// [`Note::Judged`] of this sample belongs to.
    pub fn latest_episode(&self) -> u64 {
        self.episodes
    }

    /// A judged run of `rung`: the target's latency readings before and after it, for the
    /// rung's cost.
    pub fn note_run_cost(&mut self, rung: usize, readings: RunReadings) {
        if let Some(rung) = self.rungs.get_mut(rung) {
            rung.cost.note_change(readings);
        }
    }

    /// A finished run of `rung` reported `report`: its cost fields add to the rung's cost
    /// ([`cost::reported_costs`]).
    pub fn note_reported_cost(
        &mut self,
        rung: usize,
        report: &serde_json::Map<String, serde_json::Value>,
    ) {
        if let Some(rung) = self.rungs.get_mut(rung) {
            rung.cost.note_report(report);
        }
    }

    /// The rung running, if any (until [`Budget::finished`]).
    pub fn running_rung(&self) -> Option<usize> {
        self.episode
            .as_ref()
            .and_then(|e| e.pending)
            .filter(|p| p.finished.is_none())
            .map(|p| p.rung)
    }

    /// Feeds one regular sample of the signal at `now`. `can_act`: a rung may start now (the
    /// agent is enabled, nothing else runs, no post-action quiet time); when false, nothing
    /// is chosen and the choice is made again at the next sample.
    pub fn observe(&mut self, value: Option<f64>, now: Instant, can_act: bool) -> Step {
        self.since.get_or_insert(now);
        let Some(value) = value.filter(|v| v.is_finite()) else {
            self.last = None;
            if let Some(window) = &mut self.window {
                window.clear();
            }
            self.forecast_seconds = None;
            return Step::default();
        };
        if let (Some(adaptive), Some((then, _))) = (&mut self.adaptive, self.last) {
            adaptive.period = Some(now.saturating_duration_since(then));
        }
        self.account(value, now);
        self.value = Some(value);
        let urgent = self.sense(value, now);
        // Inside the noise band the forecast, like the urgency, does not count.
        let forecasting = self.forecast(value, now) && !self.inside_noise();
        self.unrest = Unrest {
            forecasting,
            urgent,
        };
        let mut step = Step::default();
        let calm_sample = value <= self.goal() && !forecasting && !urgent;
        if self.episode.is_none() {
            if calm_sample {
                return step;
            }
            self.start_episode(value, now, forecasting, urgent, &mut step);
        }
        self.note_peak(value, &mut step);
        self.judge_if_settled(value, now, &mut step);
        // Started above unless the sample is calm and none ran.
        let Some(episode) = self.episode.as_mut() else {
            return step;
        };
        if calm_sample {
            episode.calm += 1;
            if episode.calm >= self.config.calm && episode.pending.is_none() {
                step.notes.push(Note::EpisodeEnded {
                    episode: episode.id,
                    duration: now.saturating_duration_since(episode.started),
                });
                let calm = episode.peak <= self.config.limit && !episode.killed;
                self.episode = None;
                if let Some(adaptive) = &mut self.adaptive {
                    if calm && adaptive.guard.calm_episode() {
                        step.notes.push(goal_moved(adaptive, &self.config));
                    }
                }
            }
            return step;
        }
        episode.calm = 0;
        if can_act && episode.pending.is_none() {
            step.run = self.choose(value, now, &mut step.notes);
        }
        step
    }

    /// The rung `rung` finished at `now`; `acted`: it succeeded and changed something (`None`:
    /// unknown, as in a dry run, which is not learned from). Its effect is read after
    /// `settle`.
    pub fn finished(&mut self, rung: usize, acted: Option<bool>, now: Instant) {
        if let Some(pending) = self
            .episode
            .as_mut()
            .and_then(|e| e.pending.as_mut())
            .filter(|p| p.rung == rung && p.finished.is_none())
        {
            pending.finished = Some((now, acted));
            self.rungs[rung].latency = Some(now.saturating_duration_since(pending.started));
        }
    }

    /// Notes the episode's peak; above the limit (adaptive), the guard band moves.
    fn note_peak(&mut self, value: f64, step: &mut Step) {
        let Some(episode) = &mut self.episode else {
            return;
        };
        episode.peak = episode.peak.max(value);
        let peak = episode.peak;
        if let Some(adaptive) = &mut self.adaptive {
            if adaptive.guard.breach(peak, self.config.limit) {
                step.notes.push(goal_moved(adaptive, &self.config));
            }
        }
    }

    fn account(&mut self, value: f64, now: Instant) {
        if let Some((then, previous)) = self.last {
            let dt = now.saturating_duration_since(then);
            let above_goal = previous > self.config.goal;
            let above_limit = previous > self.config.limit;
            if above_goal {
                self.total_above_goal += dt;
            }
            if above_limit {
                self.total_above_limit += dt;
            }
            if let Some(episode) = &mut self.episode {
                if above_goal {
                    episode.above_goal += dt;
                }
                if above_limit {
                    episode.above_limit += dt;
                }
            }
        }
        self.last = Some((now, value));
    }

    /// Whether the trend reaches `limit` within the horizon (always false without
    /// `[forecast]`).
    fn forecast(&mut self, value: f64, now: Instant) -> bool {
        let (Some(window), Some(forecast)) = (&mut self.window, &self.config.forecast) else {
            return false;
        };
        let origin = *self.origin.get_or_insert(now);
        let t = now.saturating_duration_since(origin).as_secs_f64();
        window.push(t, value);
        self.forecast_seconds = window
            .fit()
            .and_then(|fit| fit.seconds_to_reach(self.config.limit, t));
        self.forecast_seconds
            .is_some_and(|seconds| seconds <= forecast.horizon.as_secs_f64())
    }

    fn start_episode(
        &mut self,
        value: f64,
        now: Instant,
        forecasting: bool,
        urgent: bool,
        step: &mut Step,
    ) {
        self.episodes += 1;
        let reason = self.episode_reason(value, forecasting, urgent);
        if let Some(adaptive) = &mut self.adaptive {
            adaptive.guard.episode_started();
        }
        let rungs = self.rungs.len();
        self.episode = Some(Episode {
            id: self.episodes,
            started: now,
            started_at: self.wall(now),
            next: 0,
            skip: vec![None; rungs],
            last_run: vec![None; rungs],
            rung: None,
            pending: None,
            judged: None,
            calm: 0,
            above_goal: Duration::ZERO,
            above_limit: Duration::ZERO,
            waiting: false,
            exhausted: false,
            peak: value,
            killed: false,
        });
        step.notes.push(Note::EpisodeStarted {
            episode: self.episodes,
            reason,
        });
    }

    /// Judges the pending rung with this reading once it has settled, or early above the
    /// limit (or, with `at_limit = "top"`, when it is not the top rung).
    fn judge_if_settled(&mut self, value: f64, now: Instant, step: &mut Step) {
        let top = self.rungs.len() - 1;
        let limit = self.config.limit;
        let jump = self.config.at_limit == AtLimit::Top && value > limit && !self.kill_line();
        let settle = self.config.settle;
        let adaptive = self.adaptive.as_ref();
        let Some(episode) = &mut self.episode else {
            return;
        };
        let Some(pending) = episode.pending else {
            return;
        };
        let Some((finished, _)) = pending.finished else {
            return;
        };
        let settled = now.saturating_duration_since(finished) >= settle;
        // Above the limit after the rung finished: it did not do enough, and waiting out the
        // settle would only let the signal go further past the line.
        let early = value > limit;
        // Adaptive: the limit is nearer than the settle and the rise goes on: climb now.
        let hurry = adaptive.is_some_and(|a| a.hurry(settle, pending.before, value));
        if settled || early || hurry || (jump && pending.rung != top) {
            episode.pending = None;
            self.judge(pending, value, now, step);
        }
    }

    fn judge(&mut self, pending: Pending, after: f64, now: Instant, step: &mut Step) {
        let acted = pending.finished.and_then(|(_, acted)| acted);
        let before = pending.before;
        // Against the forecast without the run (adaptive; `slope` is `None` when fixed).
        let verdict = Verdict::of(
            before,
            after,
            pending.slope,
            now.saturating_duration_since(pending.started),
        );
        let helped = acted.map(|acted| acted && verdict.fell_enough());
        let skip_after = self.config.skip_after as usize;
        let rung = &mut self.rungs[pending.rung];
        if let Some(helped) = helped {
            rung.judged += 1;
            rung.helped += u64::from(helped);
            rung.relief_sum += verdict.relief;
            rung.recent.push_back(helped);
            while rung.recent.len() > skip_after {
                rung.recent.pop_front();
            }
        }
        if let Some(episode) = &mut self.episode {
            episode.judged = Some((pending.rung, before, after, helped));
        }
        step.notes.push(Note::Judged {
            rung: pending.rung,
            strategy: rung.strategy.clone(),
            helped,
            before,
            after,
            forecast: pending.slope.is_some().then_some(verdict.forecast),
        });
    }

    /// Whether to skip `rung` in this episode: decided once per episode, when first reached.
    fn skipped(&mut self, episode: &mut Episode, rung: usize, notes: &mut Vec<Note>) -> bool {
        if let Some(skip) = episode.skip[rung] {
            return skip;
        }
        let why = self.skip_why();
        let state = &mut self.rungs[rung];
        let skip = if state.ineffective(self.config.skip_after) {
            state.skipped_episodes += 1;
            if state.skipped_episodes >= self.config.retry_every {
                state.skipped_episodes = 0;
                false
            } else {
                notes.push(Note::Skipped {
                    rung,
                    strategy: state.strategy.clone(),
                    why,
                });
                true
            }
        } else {
            false
        };
        episode.skip[rung] = Some(skip);
        skip
    }

    /// The rung to run now in the running episode (none pending), if any: decided
    /// ([`Budget::decide`]) and applied ([`Budget::apply`]).
    fn choose(&mut self, value: f64, now: Instant, notes: &mut Vec<Note>) -> Option<RungRun> {
        let mut episode = self.episode.take()?;
        let decision = self.decide(&mut episode, value, now, notes);
        let run = self.apply(&mut episode, decision, value, now, notes);
        self.episode = Some(episode);
        run
    }

    /// Adaptive: the rung a climb to `next` skips to on learned relief, with why.
    fn skip_to(&self, episode: &Episode, next: usize, value: f64) -> Option<(usize, String)> {
        let adaptive = self.adaptive.as_ref()?;
        let tracks: Vec<(String, Track)> = self
            .rungs
            .iter()
            .map(|rung| (rung.strategy.clone(), rung.track()))
            .collect();
        adaptive.skip_to(
            &self.config,
            value,
            next,
            self.rungs.len() - 1,
            &tracks,
            |rung| episode.last_run[rung].is_some() || episode.skip[rung] == Some(true),
        )
    }

    fn start(
        &mut self,
        episode: &mut Episode,
        rung: usize,
        value: f64,
        now: Instant,
        why: String,
    ) -> RungRun {
        episode.pending = Some(Pending {
            rung,
            before: value,
            started: now,
            slope: self
                .adaptive
                .as_ref()
                .map(|a| a.urgency.and_then(|u| u.slope).unwrap_or(0.0)),
            finished: None,
        });
        episode.last_run[rung] = Some(now);
        episode.rung = Some(rung);
        episode.waiting = false;
        self.rungs[rung].runs += 1;
        self.rungs[rung].skipped_episodes = 0;
        // The action breaks the trend: fit afresh.
        if let Some(window) = &mut self.window {
            window.clear();
        }
        self.forecast_seconds = None;
        RungRun {
            rung,
            strategy: self.rungs[rung].strategy.clone(),
            episode: episode.id,
            why,
        }
    }

    /// What it learned about its ladder (see [`crate::learned`]).
    pub fn learned(&self) -> crate::learned::BudgetLearned {
        crate::learned::BudgetLearned {
            name: self.name.clone(),
            signal: self.config.signal.row().name.to_owned(),
            updated_at: 0,
            rungs: self
                .rungs
                .iter()
                .map(|rung| crate::learned::RungLearned {
                    strategy: rung.strategy.clone(),
                    runs: rung.runs,
                    judged: rung.judged,
                    helped: rung.helped,
                    relief_sum: rung.relief_sum,
                    recent: rung.recent.iter().copied().collect(),
                })
                .collect(),
            guard: self.adaptive.as_ref().filter(|a| a.guard.moved()).map(|a| {
                crate::learned::GuardLearned {
                    effective_goal: a.guard.effective(),
                    why: a.guard.why(),
                }
            }),
        }
    }

    /// Takes each rung's record from before a restart, by strategy (a rung whose strategy
    /// is new starts fresh), and with adaptive reaction the guard band. The caller checks the
    /// name and signal.
    pub fn restore(&mut self, learned: &crate::learned::BudgetLearned) {
        let keep = self.config.skip_after.max(1) as usize;
        for rung in &mut self.rungs {
            if let Some(old) = learned.rungs.iter().find(|r| r.strategy == rung.strategy) {
                rung.runs = old.runs;
                rung.judged = old.judged;
                rung.helped = old.helped;
                rung.relief_sum = if old.relief_sum.is_finite() {
                    old.relief_sum
                } else {
                    0.0
                };
                let skip = old.recent.len().saturating_sub(keep);
                rung.recent = old.recent[skip..].iter().copied().collect();
            }
        }
        if let (Some(adaptive), Some(guard)) = (&mut self.adaptive, &learned.guard) {
            adaptive.guard.restore(guard.effective_goal, &guard.why);
        }
    }

    /// What the API shows of this budget at `now`.
    pub fn view(&self, now: Instant) -> BudgetView {
        let minutes = self
            .since
            .map(|since| now.saturating_duration_since(since).as_secs_f64() / 60.0)
            .filter(|m| *m > 0.0);
        let episode = self.episode.as_ref();
        BudgetView {
            name: self.name.clone(),
            signal: self.config.signal,
            goal: self.config.goal,
            limit: self.config.limit,
            value: self.value,
            effective_goal: self.goal(),
            goal_why: self
                .adaptive
                .as_ref()
                .map_or_else(|| "as configured".to_owned(), |a| a.guard.why()),
            reaction: self
                .adaptive
                .as_ref()
                .map_or(ReactionMode::Fixed, |a| a.tuning.mode),
            kill_line: self.kill_line(),
            urgency: self
                .adaptive
                .as_ref()
                .and_then(|a| a.urgency)
                .map(UrgencyView::from),
            state: self.value.map_or(BudgetState::InBand, |v| {
                BudgetState::of(v, self.goal(), self.config.limit)
            }),
            at_limit: self.config.at_limit.to_string(),
            episode: episode.map(|e| e.id),
            episode_start: episode.map(|e| unix_millis::millis(e.started_at)),
            rung: episode.and_then(|e| e.rung),
            rung_strategy: episode
                .and_then(|e| e.rung)
                .map(|r| self.rungs[r].strategy.clone()),
            waiting: episode.is_some_and(|e| e.waiting),
            exhausted: episode.is_some_and(|e| e.exhausted),
            episodes: self.episodes,
            exhaustions: self.exhausted,
            seconds_above_goal: Seconds {
                episode: episode.map_or(0.0, |e| e.above_goal.as_secs_f64()),
                total: self.total_above_goal.as_secs_f64(),
            },
            seconds_above_limit: Seconds {
                episode: episode.map_or(0.0, |e| e.above_limit.as_secs_f64()),
                total: self.total_above_limit.as_secs_f64(),
            },
            forecast_seconds: self.forecast_seconds,
            rungs: self
                .rungs
                .iter()
                .map(|rung| RungView {
                    strategy: rung.strategy.clone(),
                    runs: rung.runs,
                    judged: rung.judged,
                    helped: rung.helped,
                    mean_relief: rung.mean_relief(),
                    latency_ms: rung.latency.map(|l| l.as_secs_f64() * 1000.0),
                    runs_per_minute: minutes.map(|m| rung.runs as f64 / m),
                    skipped: rung.ineffective(self.config.skip_after),
                    cost: rung.cost.view(),
                })
                .collect(),
        }
    }
}

/// Seconds in this episode and since the agent started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Seconds {
    /// In the current episode (0 between episodes).
    pub episode: f64,
    /// Since the agent started.
    pub total: f64,
}

/// One budget as `/performance-metrics` shows it (`budgets[]`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetView {
    /// The budget's name.
    pub name: String,
    /// Its signal.
    pub signal: Signal,
    /// Keep at or below this.
    pub goal: f64,
    /// Never above this.
    pub limit: f64,
    /// The goal held now: `goal`, or lower while the learned guard band has moved it.
    pub effective_goal: f64,
    /// Why `effectiveGoal` is where it is ("as configured", or the breach or OOM kill).
    pub goal_why: String,
    /// `adaptive` or `fixed` (`[tuning] reaction`).
    #[schema(value_type = String)]
    pub reaction: ReactionMode,
    /// The limit is the target's cgroup limit: reaching it kills the target.
    pub kill_line: bool,
    /// The urgency of the latest reading (adaptive reaction).
    pub urgency: Option<UrgencyView>,
    /// The signal's value in the last sample; `null` when unread.
    pub value: Option<f64>,
    /// `in-band`, `above-goal` or `above-limit` (by the last value read).
    pub state: BudgetState,
    /// `climb` or `top`.
    pub at_limit: String,
    /// The current episode's number; `null` between episodes.
    pub episode: Option<u64>,
    /// When the current episode started, in milliseconds since the Unix epoch.
    pub episode_start: Option<u64>,
    /// The rung that ran last in this episode (from 0); `null` before the first.
    pub rung: Option<usize>,
    /// Its strategy.
    pub rung_strategy: Option<String>,
    /// Every rung was tried and the episode waits for cooldowns.
    pub waiting: bool,
    /// This episode ran out of rungs above limit.
    pub exhausted: bool,
    /// Episodes so far.
    pub episodes: u64,
    /// Episodes exhausted so far.
    pub exhaustions: u64,
    /// Time above goal.
    pub seconds_above_goal: Seconds,
    /// Time above limit.
    pub seconds_above_limit: Seconds,
    /// With `[forecast]`: seconds until the trend reaches `limit`, if it is heading there.
    pub forecast_seconds: Option<f64>,
    /// The ladder, least disruptive first, with each rung's record in this budget.
    pub rungs: Vec<RungView>,
}

/// How urgent the latest reading is: the time to the limit at its rise, against the reaction
/// time the next rung needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrgencyView {
    /// The short-horizon slope, per second; `null` with too few readings.
    pub slope_per_second: Option<f64>,
    /// Seconds until the limit at that slope; `null` when not rising toward it.
    pub seconds_to_limit: Option<f64>,
    /// Seconds of reaction the next rung needs (latency, settle, watch period, margin).
    pub reaction_seconds: f64,
    /// The limit is nearer than the reaction needs.
    pub urgent: bool,
}

impl From<urgency::Urgency> for UrgencyView {
    fn from(u: urgency::Urgency) -> Self {
        UrgencyView {
            slope_per_second: u.slope,
            seconds_to_limit: u.time_to_limit.map(|t| t.as_secs_f64()),
            reaction_seconds: u.needed.as_secs_f64(),
            urgent: u.urgent,
        }
    }
}

/// One rung's record in one budget.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RungView {
    /// The strategy.
    pub strategy: String,
    /// Runs.
    pub runs: u64,
    /// Runs whose effect was judged.
    pub judged: u64,
    /// Runs that helped.
    pub helped: u64,
    /// Mean relief over judged runs: how far below the forecast without the run (the trend
    /// before it; with `reaction = "fixed"` or no rise, the level before it) the signal was.
    pub mean_relief: Option<f64>,
    /// Its last measured latency (start to finish), in milliseconds.
    pub latency_ms: Option<f64>,
    /// Runs per minute since the agent started.
    pub runs_per_minute: Option<f64>,
    /// Skipped for now: no help in its last `skip_after` runs.
    pub skipped: bool,
    /// What its runs cost the target: the change in p99 latency and error rate across a
    /// judged run, and what the hook reported it dropped.
    pub cost: RungCostView,
}

/// The note for a move of the guard band.
fn goal_moved(adaptive: &Adaptive, config: &BudgetConfig) -> Note {
    Note::GoalMoved {
        effective: adaptive.guard.effective(),
        configured: config.goal,
        why: adaptive.guard.why(),
    }
}

#[cfg(test)]
mod adaptive_tests;
#[cfg(test)]
mod tests;
