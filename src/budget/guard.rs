//! The learned guard band: after the limit was breached, or the target was OOM-killed, the
//! budget holds a lower goal, by as much as the signal overshot, so that the next episode
//! starts earlier. As Kubernetes' VPA raises memory ×1.2 after an OOM kill, the agent moves
//! its own line instead of asking the user to. Pure arithmetic, no I/O.
//!
//! - a **breach** (peak above `limit`) moves the effective goal to the goal at the start of
//!   the episode less the overshoot (`peak − limit`);
//! - an **OOM kill** moves it down by the headroom the fastest rise seen would consume in the
//!   measured reaction time (the caller works that out);
//! - never below the floor (`min_goal`, by default half the configured goal);
//! - after each **calm episode** (one that ended without a breach) it creeps back up by
//!   [`GuardBand::CREEP_SHARE`] of the configured goal, never above it.

use std::fmt;

/// A budget's configured and effective goal, and why they differ.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardBand {
    configured: f64,
    floor: f64,
    effective: f64,
    /// The effective goal when the current episode started: a breach is measured from it.
    base: f64,
    why: Option<String>,
}

impl GuardBand {
    /// How far the effective goal creeps back after each calm episode: 5 % of the configured
    /// goal (ten calm episodes undo a move of half the goal).
    pub const CREEP_SHARE: f64 = 0.05;

    /// A guard band at `goal`, never moved below `floor` (clamped to at most `goal`).
    pub fn new(goal: f64, floor: f64) -> Self {
        GuardBand {
            configured: goal,
            floor: floor.min(goal),
            effective: goal,
            base: goal,
            why: None,
        }
    }

    /// The default floor for `goal`: half of it.
    pub fn default_floor(goal: f64) -> f64 {
        goal / 2.0
    }

    /// The lowest the effective goal goes.
    #[cfg(test)]
    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// The goal the budget holds now.
    pub fn effective(&self) -> f64 {
        self.effective
    }

    /// Whether the effective goal is below the configured one.
    pub fn moved(&self) -> bool {
        self.effective < self.configured
    }

    /// Why the effective goal is where it is.
    pub fn why(&self) -> String {
        match &self.why {
            Some(why) if self.moved() => why.clone(),
            _ => "as configured".to_owned(),
        }
    }

    /// Takes back the goal held before an agent restart, with why: kept between the floor and
    /// the configured goal (either may have changed since); a value that is not a finite
    /// number, or at the configured goal, leaves the goal as configured.
    pub fn restore(&mut self, effective: f64, why: &str) {
        if !effective.is_finite() || effective >= self.configured {
            return;
        }
        self.effective = effective.max(self.floor);
        self.base = self.effective;
        self.why =
            Some(format!("{why} (kept across the agent's restart)")).filter(|_| self.moved());
    }

    /// An episode starts: a breach in it is measured from the goal in force now.
    pub fn episode_started(&mut self) {
        self.base = self.effective;
    }

    /// The signal reached `peak`, above `limit`, in this episode: the effective goal moves to
    /// the episode's starting goal less the overshoot. Returns whether it moved.
    pub fn breach(&mut self, peak: f64, limit: f64) -> bool {
        let overshoot = peak - limit;
        if !overshoot.is_finite() || overshoot <= 0.0 {
            return false;
        }
        let to = (self.base - overshoot).max(self.floor);
        if to >= self.effective {
            return false;
        }
        self.effective = to;
        self.why = Some(format!(
            "the limit {} was breached (peak {}, {} over): goal {} lowered to {}{}",
            round(limit),
            round(peak),
            round(overshoot),
            round(self.configured),
            round(to),
            self.at_floor()
        ));
        true
    }

    /// The target was OOM-killed; `overshoot` is the headroom the fastest rise seen would
    /// consume in the measured reaction time. Returns whether the goal moved.
    pub fn oom_kill(&mut self, overshoot: f64, how: &str) -> bool {
        if !overshoot.is_finite() || overshoot <= 0.0 {
            return false;
        }
        let to = (self.effective - overshoot).max(self.floor);
        if to >= self.effective {
            return false;
        }
        self.effective = to;
        self.base = to;
        self.why = Some(format!(
            "the target was OOM-killed ({how}): goal {} lowered by {} to {}{}",
            round(self.configured),
            round(overshoot),
            round(to),
            self.at_floor()
        ));
        true
    }

    /// An episode ended without a breach: the effective goal creeps back by
    /// [`GuardBand::CREEP_SHARE`] of the configured goal. Returns whether it moved.
    pub fn calm_episode(&mut self) -> bool {
        if !self.moved() {
            return false;
        }
        self.effective =
            (self.effective + self.configured * Self::CREEP_SHARE).min(self.configured);
        self.base = self.effective;
        if let Some(why) = &mut self.why {
            if !why.ends_with("after calm episodes") {
                why.push_str("; creeping back after calm episodes");
            }
        }
        true
    }

    /// Forgets what was learned: the effective goal is the configured one again.
    pub fn reset(&mut self) {
        *self = GuardBand::new(self.configured, self.floor);
    }

    fn at_floor(&self) -> &'static str {
        if self.effective <= self.floor {
            " (its floor, min_goal)"
        } else {
            ""
        }
    }
}

impl fmt::Display for GuardBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "goal {} (configured {}): {}",
            round(self.effective),
            round(self.configured),
            self.why()
        )
    }
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_breach_lowers_the_goal_by_the_overshoot() {
        let mut guard = GuardBand::new(0.8, 0.4);
        guard.episode_started();
        assert!(guard.breach(1.06, 1.0));
        assert!(close(guard.effective(), 0.74), "{}", guard.effective());
        assert!(guard.moved());
        assert!(guard.why().contains("breached"), "{}", guard.why());
        // A higher peak in the same episode: measured from the episode's start, not again.
        assert!(guard.breach(1.1, 1.0));
        assert!(close(guard.effective(), 0.7));
        // A lower one does not move it back.
        assert!(!guard.breach(1.02, 1.0));
        assert!(close(guard.effective(), 0.7));
    }

    #[test]
    fn no_breach_no_move() {
        let mut guard = GuardBand::new(0.8, 0.4);
        assert!(!guard.breach(0.99, 1.0));
        assert!(!guard.breach(f64::NAN, 1.0));
        assert_eq!(guard.effective(), 0.8);
        assert_eq!(guard.why(), "as configured");
    }

    #[test]
    fn an_oom_kill_lowers_it_and_the_floor_holds() {
        let mut guard = GuardBand::new(0.8, GuardBand::default_floor(0.8));
        assert!(guard.oom_kill(0.3, "oom_kills 0 → 1"));
        assert!(close(guard.effective(), 0.5));
        assert!(guard.oom_kill(0.3, "oom_kills 1 → 2"));
        assert!(
            close(guard.effective(), 0.4),
            "the floor: {}",
            guard.effective()
        );
        assert!(guard.why().contains("min_goal"), "{}", guard.why());
        assert!(!guard.oom_kill(0.3, "again"), "at the floor: nothing moves");
    }

    #[test]
    fn calm_episodes_creep_it_back_to_the_configured_goal() {
        let mut guard = GuardBand::new(0.8, 0.4);
        guard.oom_kill(0.1, "test");
        assert!(guard.calm_episode());
        assert!(close(guard.effective(), 0.74));
        assert!(guard.calm_episode());
        assert!(close(guard.effective(), 0.78));
        assert!(guard.calm_episode());
        assert_eq!(guard.effective(), 0.8);
        assert!(!guard.moved());
        assert!(!guard.calm_episode());
        assert_eq!(guard.why(), "as configured");
    }

    #[test]
    fn reset_forgets_the_move() {
        let mut guard = GuardBand::new(0.8, 0.4);
        guard.oom_kill(0.2, "test");
        guard.reset();
        assert_eq!(guard.effective(), 0.8);
        assert_eq!(guard.floor(), 0.4);
    }
}
