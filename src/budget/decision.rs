//! What a budget's ladder does next, as a value: [`Budget::decide`] finds it, one place
//! ([`Budget::apply`]) acts on it, and the prose that records, notes and events carry is
//! rendered here from it.

use std::time::{Duration, Instant};

use super::{AtLimit, Budget, BudgetState, Episode, Exhaustion, Note, RungRun};

/// The ladder's next move in an episode with no rung pending.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// Above limit with `at_limit = "top"`: straight to the highest rung not skipped and
    /// cooled down.
    Jump {
        /// The rung.
        rung: usize,
    },
    /// The next rung not yet run in this episode.
    Climb {
        /// The rung.
        rung: usize,
        /// The strategies of the rungs skipped on the way (no help lately).
        passed: Vec<String>,
    },
    /// Adaptive reaction: past rungs whose learned relief does not cover the forecast
    /// overshoot, to one that may.
    Leap {
        /// The rung.
        rung: usize,
        /// The urgency, the overshoot and each rung's relief.
        why: String,
    },
    /// Every rung was tried in this episode: one runs again, its cooldown over.
    Repeat {
        /// The rung (the lowest cooled down).
        rung: usize,
        /// The episode ran out of rungs above limit just now.
        exhausted: bool,
    },
    /// Adaptive reaction: every rung was tried, the signal is under the goal and only the
    /// forecast says it rises (not urgency): no rung repeats on a forecast alone; the episode
    /// waits for the level to pass the goal, urgency, or calm.
    Hold,
    /// Every rung was tried and none has cooled down: the episode waits.
    Wait {
        /// Until the first rung's cooldown ends (`None`: no rung ran in this episode).
        next: Option<Duration>,
        /// The episode ran out of rungs above limit just now.
        exhausted: bool,
    },
}

impl Decision {
    /// Whether the episode ran out of rungs above limit with this decision.
    fn exhausts(&self) -> bool {
        match self {
            Decision::Repeat { exhausted, .. } | Decision::Wait { exhausted, .. } => *exhausted,
            Decision::Jump { .. }
            | Decision::Climb { .. }
            | Decision::Leap { .. }
            | Decision::Hold => false,
        }
    }
}

impl Budget {
    /// The ladder's next move at `value`. Deciding whether a rung is skipped in this
    /// episode happens once, when the rung is first reached (with its note), and the climb
    /// moves past the rungs it looked at.
    pub(super) fn decide(
        &mut self,
        episode: &mut Episode,
        value: f64,
        now: Instant,
        notes: &mut Vec<Note>,
    ) -> Decision {
        let top = self.rungs.len() - 1;
        let above_limit = value > self.config.limit;
        let cooldown = self.config.cooldown;
        let cooled = |episode: &Episode, rung: usize| {
            episode.last_run[rung]
                .is_none_or(|last| now.saturating_duration_since(last) >= cooldown)
        };
        // A kill line has no "above" to jump from: `at_limit` does not apply.
        if above_limit && self.config.at_limit == AtLimit::Top && !self.kill_line() {
            for rung in (0..=top).rev() {
                if episode.rung == Some(rung) && episode.pending.is_some() {
                    break;
                }
                if !self.skipped(episode, rung, notes) && cooled(episode, rung) {
                    return Decision::Jump { rung };
                }
            }
        }
        let mut passed = Vec::new();
        while episode.next <= top {
            let rung = episode.next;
            episode.next += 1;
            if episode.last_run[rung].is_some() {
                // Already run in this episode (a jump to the top): tried.
                continue;
            }
            if self.skipped(episode, rung, notes) {
                passed.push(self.rungs[rung].strategy.clone());
                continue;
            }
            if let Some((to, why)) = self.skip_to(episode, rung, value) {
                episode.next = to + 1;
                return Decision::Leap { rung: to, why };
            }
            return Decision::Climb { rung, passed };
        }
        // Adaptive: under the goal, only urgency repeats a rung (fixed: as configured, the
        // forecast too).
        if self.adaptive.is_some() && value <= self.goal() && !self.unrest.urgent {
            return Decision::Hold;
        }
        let exhausted = above_limit && !episode.exhausted;
        let again =
            (0..=top).find(|&rung| episode.skip[rung] != Some(true) && cooled(episode, rung));
        match again {
            Some(rung) => Decision::Repeat { rung, exhausted },
            None => Decision::Wait {
                next: episode
                    .last_run
                    .iter()
                    .zip(&episode.skip)
                    .filter(|(_, skip)| **skip != Some(true))
                    .filter_map(|(last, _)| *last)
                    .map(|last| (last + cooldown).saturating_duration_since(now))
                    .min(),
                exhausted,
            },
        }
    }

    /// Acts on `decision`: notes an exhaustion (once per episode), starts the rung it names,
    /// or notes the wait (once until a rung runs again).
    pub(super) fn apply(
        &mut self,
        episode: &mut Episode,
        decision: Decision,
        value: f64,
        now: Instant,
        notes: &mut Vec<Note>,
    ) -> Option<RungRun> {
        if decision.exhausts() {
            episode.exhausted = true;
            self.exhausted += 1;
            notes.push(Note::Exhausted(Exhaustion {
                budget: self.name.clone(),
                episode: episode.id,
                value,
                limit: self.config.limit,
                at: self.wall(now),
                message: self.exhaustion_message(episode, value),
            }));
        }
        match decision {
            Decision::Jump { rung }
            | Decision::Climb { rung, .. }
            | Decision::Leap { rung, .. }
            | Decision::Repeat { rung, .. } => {
                let why = self.why(&decision, episode, value);
                Some(self.start(episode, rung, value, now, why))
            }
            Decision::Wait { .. } | Decision::Hold => {
                if !episode.waiting {
                    episode.waiting = true;
                    notes.push(Note::Waiting {
                        why: self.why(&decision, episode, value),
                    });
                }
                None
            }
        }
    }

    /// Why the ladder does what `decision` says, for the rung's record or the wait's note.
    fn why(&self, decision: &Decision, episode: &Episode, value: f64) -> String {
        let rungs = self.rungs.len();
        let place = self.describe(value);
        match decision {
            Decision::Jump { rung } => format!(
                "{place}: at_limit = \"top\", straight to rung {} of {rungs}",
                rung + 1
            ),
            Decision::Climb { rung, passed } => {
                let mut why = match episode.judged {
                    None => format!(
                        "{place}: episode {} starts at rung {} of {rungs}",
                        episode.id,
                        rung + 1
                    ),
                    Some((judged, before, after, helped)) => format!(
                        "{place}: climbed to rung {} of {rungs}, {} {} ({} → {})",
                        rung + 1,
                        self.rungs[judged].strategy,
                        match helped {
                            Some(true) => "helped but not enough",
                            Some(false) => "did not help",
                            None => "was not run (dry run)",
                        },
                        round(before),
                        round(after)
                    ),
                };
                if !passed.is_empty() {
                    why.push_str(&format!(
                        "; skipped {} (no help in their last {} runs)",
                        passed.join(", "),
                        self.config.skip_after
                    ));
                }
                why
            }
            Decision::Leap { why, .. } => format!("{place}: {why}"),
            Decision::Repeat { rung, .. } => format!(
                "{place}: every rung tried in episode {}; rung {} of {rungs} again after its cooldown ({})",
                episode.id,
                rung + 1,
                perfpilot_strategies::duration::format(self.config.cooldown)
            ),
            Decision::Hold => format!(
                "every rung tried in episode {} and {} = {} is under goal {}, {}: no rung repeats on a forecast alone, waiting for it to pass the goal or turn urgent",
                episode.id,
                self.config.signal,
                round(value),
                round(self.goal()),
                self.forecast_text()
            ),
            Decision::Wait { next, .. } => format!(
                "every rung tried in episode {} and {} = {} is still above goal {}: waiting{}",
                episode.id,
                self.config.signal,
                round(value),
                round(self.goal()),
                next.map_or(String::new(), |d| format!(
                    " {:.1} s for the next rung's cooldown",
                    d.as_secs_f64()
                ))
            ),
        }
    }

    /// The signal's value and where it stands: above limit, above goal, or under goal and
    /// what kept the sample from being calm (urgency first, then the forecast).
    fn describe(&self, value: f64) -> String {
        let place = match BudgetState::of(value, self.goal(), self.config.limit) {
            BudgetState::AboveLimit => format!("above limit {}", self.config.limit),
            BudgetState::AboveGoal => format!("above goal {}", round(self.goal())),
            BudgetState::InBand if self.unrest.urgent => format!(
                "under goal {}, urgent ({})",
                round(self.goal()),
                self.adaptive
                    .as_ref()
                    .and_then(|a| a.urgency)
                    .map_or(String::new(), |u| u.to_string())
            ),
            BudgetState::InBand if self.unrest.forecasting => self.forecast_text(),
            BudgetState::InBand => format!("under goal {}", round(self.goal())),
        };
        format!("{} = {} {place}", self.config.signal, round(value))
    }

    /// "predicted to cross limit 1 in 2.5 s".
    fn forecast_text(&self) -> String {
        format!(
            "predicted to cross limit {} in {:.1} s",
            self.config.limit,
            self.forecast_seconds.unwrap_or(0.0)
        )
    }

    /// The sentence an exhausted episode says.
    fn exhaustion_message(&self, episode: &Episode, value: f64) -> String {
        format!(
            "budget {}: every rung of the ladder ({}) was tried in episode {} and {} = {} is still above limit {}: nothing left to try",
            self.name,
            self.rungs
                .iter()
                .map(|r| r.strategy.as_str())
                .collect::<Vec<_>>()
                .join(" → "),
            episode.id,
            self.config.signal,
            round(value),
            self.config.limit
        )
    }

    /// Why a rung is skipped in this episode.
    pub(super) fn skip_why(&self) -> String {
        format!(
            "skipped: did not help in its last {} runs (retried every {} episodes)",
            self.config.skip_after, self.config.retry_every
        )
    }

    /// Why an episode starts at `value`: urgency (adaptive reaction), the forecast, or the
    /// goal.
    pub(super) fn episode_reason(&self, value: f64, forecasting: bool, urgent: bool) -> String {
        let goal = self.goal();
        let urgency = self.adaptive.as_ref().and_then(|a| a.urgency);
        match (forecasting && value <= goal, self.forecast_seconds) {
            _ if urgent && value <= goal => format!(
                "{} = {} under goal {}: urgency, {}",
                self.config.signal,
                round(value),
                round(goal),
                urgency.map_or(String::new(), |u| u.to_string())
            ),
            (true, Some(seconds)) => format!(
                "{} = {} predicted to cross limit {} in {seconds:.1} s",
                self.config.signal,
                round(value),
                self.config.limit
            ),
            _ => format!(
                "{} = {} above goal {}",
                self.config.signal,
                round(value),
                round(goal)
            ),
        }
    }
}

/// A value as the prose shows it: to four decimals.
fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}
