//! `[budgets.NAME]`: what a budget is configured with, its defaults and its validation.

use perfpilot_strategies::Problem;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use perfpilot_strategies::fast_watch::watch_interval_problems;
use perfpilot_strategies::{duration, PredictSpec, Signal};
use serde::{Deserialize, Serialize};

/// One budget (`[budgets.NAME]`): keep `signal` at or below `goal`, never above `limit`, with
/// the least disruptive strategies of `ladder` that achieve it.
///
/// ```toml
/// [budgets.memory]
/// signal = "memory_usage"     # in the signal's own unit, like a trigger's `above`
/// goal = 0.8                  # an episode starts above this, and ends after `calm` samples under it
/// limit = 0.95                # never above: `at_limit = "top"` jumps to the top rung here
/// ladder = ["purge", "soft-trim", "hard-trim", "drop-sessions"]   # least disruptive first
/// settle = "2s"               # a rung's effect is read from the first regular sample this long after it
/// calm = 3                    # samples under goal that end an episode
/// at_limit = "climb"          # or "top"
/// cooldown = "30s"            # no rung runs twice within this long in one episode
/// watch_interval = "20ms"     # the fast watch between full samples (optional)
/// skip_after = 3              # a rung unhelpful in its last 3 judged runs is skipped...
/// retry_every = 5             # ...and retried every 5th episode that skips it
/// min_goal = 0.4              # the learned guard band never moves the goal below this (default goal / 2)
/// [budgets.memory.forecast]   # optional: start an episode on a forecast of crossing `limit`
/// horizon = "30s"
/// window = 10
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The signal held within the budget.
    pub signal: Signal,
    /// Keep the signal at or below this (the signal's unit; a ratio for `memory_usage`).
    pub goal: f64,
    /// Never above this; at least `goal`.
    pub limit: f64,
    /// Strategy names (or aliases), least disruptive first.
    pub ladder: Vec<String>,
    /// How long after a rung finished its effect is read, from the first regular sample
    /// taken at least this long after it; by default [`BudgetConfig::DEFAULT_SETTLE`].
    #[serde(default = "BudgetConfig::default_settle", with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub settle: Duration,
    /// Consecutive samples under `goal` (and not forecast to cross `limit`) that end an
    /// episode; by default [`BudgetConfig::DEFAULT_CALM`].
    #[serde(default = "BudgetConfig::default_calm")]
    #[schemars(range(min = 1))]
    pub calm: u32,
    /// What a rise above `limit` does; by default [`AtLimit::Climb`].
    #[serde(default)]
    pub at_limit: AtLimit,
    /// The shortest time between two runs of one rung in one episode (once every rung has
    /// been tried, the episode waits for this); by default [`BudgetConfig::DEFAULT_COOLDOWN`].
    #[serde(default = "BudgetConfig::default_cooldown", with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub cooldown: Duration,
    /// Read the signal between full samples this often (the fast watch); `None` (the
    /// default): only at full samples.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub watch_interval: Option<Duration>,
    /// A rung whose last this-many judged runs in this budget all failed to help is skipped;
    /// by default [`BudgetConfig::DEFAULT_SKIP_AFTER`].
    #[serde(default = "BudgetConfig::default_skip_after")]
    pub skip_after: u32,
    /// A skipped rung is tried again in every this-many-th episode that would skip it; by
    /// default [`BudgetConfig::DEFAULT_RETRY_EVERY`].
    #[serde(default = "BudgetConfig::default_retry_every")]
    pub retry_every: u32,
    /// Start an episode when the signal's trend reaches `limit` within `horizon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<BudgetForecast>,
    /// The lowest the learned guard band may move the effective goal (`[tuning] reaction =
    /// "adaptive"`, see `crate::budget::guard`); by default half of `goal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_goal: Option<f64>,
}

/// `[tuning] reaction`: whether budgets work out their own margins from what they observe.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReactionMode {
    /// Urgency from the rate of rise, no waiting while the limit approaches, skip-to-rung by
    /// learned relief, the counterfactual verdict and the learned guard band (the default).
    #[default]
    Adaptive,
    /// Every number as configured: an episode starts above `goal` (or on `[forecast]`), each
    /// rung waits out its `settle`, runs are judged by the level alone.
    Fixed,
}

impl fmt::Display for ReactionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReactionMode::Adaptive => "adaptive",
            ReactionMode::Fixed => "fixed",
        })
    }
}

/// How every budget reacts (`[tuning] reaction` and `[tuning] max_rungs_skipped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactionTuning {
    /// Adaptive or fixed.
    pub mode: ReactionMode,
    /// The most rungs one step may skip on learned relief.
    pub max_rungs_skipped: u32,
}

impl ReactionTuning {
    /// Default `max_rungs_skipped`: 2.
    pub const DEFAULT_MAX_RUNGS_SKIPPED: u32 = 2;

    /// Today's behaviour: every number as configured.
    pub const FIXED: ReactionTuning = ReactionTuning {
        mode: ReactionMode::Fixed,
        max_rungs_skipped: Self::DEFAULT_MAX_RUNGS_SKIPPED,
    };

    /// The default: adaptive, skipping at most 2 rungs a step.
    pub const ADAPTIVE: ReactionTuning = ReactionTuning {
        mode: ReactionMode::Adaptive,
        max_rungs_skipped: Self::DEFAULT_MAX_RUNGS_SKIPPED,
    };
}

impl Default for ReactionTuning {
    fn default() -> Self {
        Self::ADAPTIVE
    }
}

/// What a rise above `limit` does to the climb.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AtLimit {
    /// Keep climbing one rung at a time (the default).
    #[default]
    Climb,
    /// Run the top rung at once (without waiting for the running rung to settle).
    Top,
}

impl fmt::Display for AtLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AtLimit::Climb => "climb",
            AtLimit::Top => "top",
        })
    }
}

/// `[budgets.NAME.forecast]`: start an episode before `goal` is crossed when a robust fit
/// (Theil–Sen, [`crate::trigger::trend`]) of the last `window` samples reaches `limit` within
/// `horizon`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetForecast {
    /// How far ahead; by default 30 s.
    #[serde(default = "BudgetForecast::default_horizon", with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub horizon: Duration,
    /// Samples in the fit (a fit needs half of them, at least 3); by default 10.
    #[serde(default = "BudgetForecast::default_window")]
    pub window: u32,
}

impl BudgetForecast {
    fn default_horizon() -> Duration {
        PredictSpec::DEFAULT_HORIZON
    }

    fn default_window() -> u32 {
        PredictSpec::DEFAULT_WINDOW
    }
}

impl BudgetConfig {
    /// Default `settle`: 2 s.
    pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
    /// Default `calm`: 3 samples.
    pub const DEFAULT_CALM: u32 = 3;
    /// Default `cooldown`: 30 s.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
    /// Default `skip_after`: 3 unhelpful runs in a row.
    pub const DEFAULT_SKIP_AFTER: u32 = 3;
    /// Default `retry_every`: every 5th episode.
    pub const DEFAULT_RETRY_EVERY: u32 = 5;
    /// Longest `settle`: 10 min.
    pub const MAX_SETTLE: Duration = Duration::from_secs(600);

    /// A budget with every default: `ladder` from least to most disruptive.
    pub fn new(signal: Signal, goal: f64, limit: f64, ladder: &[&str]) -> Self {
        BudgetConfig {
            signal,
            goal,
            limit,
            ladder: ladder.iter().map(|s| (*s).to_owned()).collect(),
            settle: Self::DEFAULT_SETTLE,
            calm: Self::DEFAULT_CALM,
            at_limit: AtLimit::default(),
            cooldown: Self::DEFAULT_COOLDOWN,
            watch_interval: None,
            skip_after: Self::DEFAULT_SKIP_AFTER,
            retry_every: Self::DEFAULT_RETRY_EVERY,
            forecast: None,
            min_goal: None,
        }
    }

    fn default_settle() -> Duration {
        Self::DEFAULT_SETTLE
    }

    fn default_calm() -> u32 {
        Self::DEFAULT_CALM
    }

    fn default_cooldown() -> Duration {
        Self::DEFAULT_COOLDOWN
    }

    fn default_skip_after() -> u32 {
        Self::DEFAULT_SKIP_AFTER
    }

    fn default_retry_every() -> u32 {
        Self::DEFAULT_RETRY_EVERY
    }

    /// Every problem with this budget's own values, each naming its key under `key`
    /// (`budgets.NAME`); `interval` is the full sampling interval (a `watch_interval` follows
    /// [`watch_interval_problems`], as a trigger's does). Whether the ladder's names exist is checked by `problems`.
    pub fn problems(&self, key: &str, interval: Duration) -> Vec<Problem> {
        let fmt = duration::format;
        let mut problems = Vec::new();
        let unit = if self.signal.is_ratio() {
            "must be in (0, 1]"
        } else {
            "must be a positive number"
        };
        let bad = |v: f64| !v.is_finite() || v <= 0.0 || (self.signal.is_ratio() && v > 1.0);
        if bad(self.goal) {
            problems.push(Problem::new(
                format!("{key}.goal"),
                self.goal,
                format!("{unit} for signal {}", self.signal),
            ));
        }
        if bad(self.limit) {
            problems.push(Problem::new(
                format!("{key}.limit"),
                self.limit,
                format!("{unit} for signal {}", self.signal),
            ));
        } else if !bad(self.goal) && self.limit < self.goal {
            problems.push(Problem::new(
                format!("{key}.limit"),
                self.limit,
                format!("must be at least goal ({})", self.goal),
            ));
        }
        if self.ladder.is_empty() {
            problems.push(Problem::new(
                format!("{key}.ladder"),
                "[]",
                "name at least one strategy, least disruptive first",
            ));
        }
        if let Some(min_goal) = self.min_goal {
            if bad(min_goal) || (!bad(self.goal) && min_goal > self.goal) {
                problems.push(Problem::new(
                    format!("{key}.min_goal"),
                    min_goal,
                    format!("{unit}, at most goal ({})", self.goal),
                ));
            }
        }
        if self.settle > Self::MAX_SETTLE {
            problems.push(Problem::new(
                format!("{key}.settle"),
                fmt(self.settle),
                format!("must be at most {}", fmt(Self::MAX_SETTLE)),
            ));
        }
        if self.calm == 0 {
            problems.push(Problem::new(
                format!("{key}.calm"),
                0,
                "must be at least 1 sample",
            ));
        }
        if self.skip_after == 0 {
            problems.push(Problem::new(
                format!("{key}.skip_after"),
                0,
                "must be at least 1 run",
            ));
        }
        if self.retry_every == 0 {
            problems.push(Problem::new(
                format!("{key}.retry_every"),
                0,
                "must be at least 1 episode",
            ));
        }
        if let Some(watch) = self.watch_interval {
            problems.extend(watch_interval_problems(
                &format!("{key}.watch_interval"),
                self.signal,
                watch,
                interval,
            ));
        }
        if let Some(forecast) = &self.forecast {
            problems.extend(Problem::unless_positive(
                format!("{key}.forecast.horizon"),
                forecast.horizon,
            ));
            if !(PredictSpec::MIN_WINDOW..=PredictSpec::MAX_WINDOW).contains(&forecast.window) {
                problems.push(Problem::new(
                    format!("{key}.forecast.window"),
                    forecast.window,
                    format!(
                        "must be in {}..={}",
                        PredictSpec::MIN_WINDOW,
                        PredictSpec::MAX_WINDOW
                    ),
                ));
            }
        }
        problems
    }
}

/// `[budgets.NAME]` names: lowercase letters, digits, `-` and `_`, starting with a letter or
/// digit.
fn is_valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Every problem of the `[budgets]` table, each naming its key: the budgets' own values
/// ([`BudgetConfig::problems`]), and ladders naming a strategy that `available` (name →
/// `Ok(canonical name)` or `Err(why not)`) does not resolve, or one strategy twice.
pub fn problems(
    budgets: &BTreeMap<String, BudgetConfig>,
    interval: Duration,
    available: impl Fn(&str) -> Result<String, String>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, budget) in budgets {
        let key = format!("budgets.{name}");
        if !is_valid_name(name) {
            problems.push(Problem::at(
                key.clone(),
                format!("{name:?} is not a valid budget name (lowercase letters, digits, `-` and `_`, starting with a letter or digit)"),
            ));
        }
        problems.extend(budget.problems(&key, interval));
        let mut seen: Vec<String> = Vec::new();
        for (index, rung) in budget.ladder.iter().enumerate() {
            match available(rung) {
                Ok(canonical) if seen.contains(&canonical) => problems.push(Problem::new(
                    format!("{key}.ladder[{index}]"),
                    format!("{rung:?}"),
                    format!("{canonical} is already a rung of this ladder"),
                )),
                Ok(canonical) => seen.push(canonical),
                Err(why) => problems.push(Problem::new(
                    format!("{key}.ladder[{index}]"),
                    format!("{rung:?}"),
                    why,
                )),
            }
        }
    }
    problems
}
