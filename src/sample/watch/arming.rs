//! Cadence from the signal: whether the fast watch reads a budget's signal between full
//! samples when its configuration names no `watch_interval`. Pure, tested with a hand-moved
//! clock.
//!
//! The watch is **armed** while the headroom (the budget's `limit` − the reading) divided by
//! the worst rate of rise seen is shorter than [`INTERVALS`] sampling intervals: a rise that
//! fast would reach the limit unseen between two full samples. Before any rise is seen the
//! rate is the stated worst case, [`WORST_CASE_BYTES_PER_SECOND`]; against a kernel's limit
//! (the target's cgroup limit, a kill line) the worst case stays a floor, since a kill cannot
//! be learned from. It is **disarmed** once that has been false for [`CALM_PERIOD`]. An
//! explicit `watch_interval` is always armed.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How often an armed watch reads the signal: 20 ms (SPEC §8's fast watch).
pub const ARMED_PERIOD: Duration = Duration::from_millis(20);

/// The rise assumed before any is seen: 1 GiB/s (a cache filling from memory; the demo's
/// fill reaches 0.8 GiB/s on this machine).
pub const WORST_CASE_BYTES_PER_SECOND: f64 = (1u64 << 30) as f64;

/// The watch is armed while the limit is nearer than this many sampling intervals.
pub const INTERVALS: u32 = 2;

/// How long the limit must stay farther than [`INTERVALS`] intervals before the watch is
/// disarmed.
pub const CALM_PERIOD: Duration = Duration::from_secs(30);

/// The cadence in force for one watched signal (`fastWatch.signals[].cadence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Cadence {
    /// Read every `watch_interval`, as configured.
    Explicit,
    /// Armed by the signal: read every `ARMED_PERIOD` (20 ms).
    Armed,
    /// Disarmed: read only by full samples (and woken by a kernel notification).
    Disarmed,
}

impl Cadence {
    /// The cadence as `/metrics` labels it.
    pub fn label(self) -> &'static str {
        match self {
            Cadence::Explicit => "explicit",
            Cadence::Armed => "armed",
            Cadence::Disarmed => "disarmed",
        }
    }
}

/// Why the cadence is what it is, as `/metrics` labels it (`fastWatch.signals[].cadenceReason`
/// says it in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ArmReason {
    /// `watch_interval` is configured.
    Explicit,
    /// No full samples yet to measure the headroom: armed to be safe.
    Starting,
    /// At the worst-case rate (no rise seen yet, or a kill line) the limit is near.
    WorstCase,
    /// At the fastest rise seen the limit is near.
    FastestRise,
    /// Near until less than `CALM_PERIOD` (30 s) ago: still armed.
    Cooling,
    /// Far, for at least `CALM_PERIOD` (30 s).
    Calm,
}

impl ArmReason {
    /// The reason as `/metrics` labels it.
    pub fn label(self) -> &'static str {
        match self {
            ArmReason::Explicit => "explicit",
            ArmReason::Starting => "starting",
            ArmReason::WorstCase => "worst-case",
            ArmReason::FastestRise => "fastest-rise",
            ArmReason::Cooling => "cooling",
            ArmReason::Calm => "calm",
        }
    }
}

/// What one arming decision looks at, besides the reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Headroom {
    /// The budget's `limit`, in the signal's unit.
    pub(crate) limit: f64,
    /// The sampling interval in force (the time between the last two full samples).
    pub(crate) interval: Duration,
    /// [`WORST_CASE_BYTES_PER_SECOND`] in the signal's unit per second; `None` where it
    /// cannot be said (no limit in bytes known).
    pub(crate) worst_case_rate: Option<f64>,
    /// The limit is the kernel's (the target's cgroup limit): reaching it kills the target.
    pub(crate) kill_line: bool,
}

/// The arming state of one self-armed signal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Arming {
    /// The fastest rise seen, in the signal's unit per second.
    fastest: Option<f64>,
    /// Since when the limit has been far (while still armed).
    calm_since: Option<Instant>,
    armed: bool,
    reason: ArmReason,
    why: String,
}

impl Default for Arming {
    /// Armed until full samples measure the headroom.
    fn default() -> Self {
        Arming {
            fastest: None,
            calm_since: None,
            armed: true,
            reason: ArmReason::Starting,
            why: "armed until two full samples measure the headroom".to_owned(),
        }
    }
}

impl Arming {
    /// Notes a rate of rise (signal unit per second) seen in the readings; falls are ignored.
    pub(crate) fn note_rise(&mut self, rate: f64) {
        if rate.is_finite() && rate > 0.0 {
            self.fastest = Some(self.fastest.map_or(rate, |f| f.max(rate)));
        }
    }

    /// Decides at `now` on the reading `value`: armed while `headroom ÷ rate` is shorter than
    /// [`INTERVALS`] intervals, disarmed after [`CALM_PERIOD`] without. Returns whether armed.
    pub(crate) fn decide(&mut self, now: Instant, value: f64, headroom: Headroom) -> bool {
        let (rate, reason, rate_said) = match (self.fastest, headroom.worst_case_rate) {
            (Some(fastest), Some(worst)) if headroom.kill_line && worst > fastest => (
                worst,
                ArmReason::WorstCase,
                "the worst case (a kill line: the worst case stays a floor)",
            ),
            (Some(fastest), _) => (fastest, ArmReason::FastestRise, "the fastest rise seen"),
            (None, Some(worst)) => (
                worst,
                ArmReason::WorstCase,
                "the worst case (no rise seen yet)",
            ),
            (None, None) => {
                self.armed = true;
                self.calm_since = None;
                self.reason = ArmReason::Starting;
                self.why = "armed: no limit in bytes to put the worst case against".to_owned();
                return true;
            }
        };
        let window = headroom.interval * INTERVALS;
        let left = (headroom.limit - value).max(0.0);
        let time_to_limit = left / rate;
        let near = time_to_limit < window.as_secs_f64();
        let line = if headroom.kill_line {
            "the kill line"
        } else {
            "the limit"
        };
        let said = format!(
            "at {rate_said}, {} of the signal per second, {line} is {:.2} s away: {} {INTERVALS} sampling intervals ({:.1} s)",
            round(rate),
            time_to_limit,
            if near { "within" } else { "beyond" },
            window.as_secs_f64()
        );
        if near {
            self.armed = true;
            self.calm_since = None;
            self.reason = reason;
            self.why = format!("armed: {said}");
        } else if self.armed {
            let since = *self.calm_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= CALM_PERIOD {
                self.armed = false;
                self.calm_since = None;
                self.reason = ArmReason::Calm;
                self.why = format!("disarmed: {said}, for {} s", CALM_PERIOD.as_secs());
            } else {
                self.reason = ArmReason::Cooling;
                self.why = format!("armed until {} s calm: {said}", CALM_PERIOD.as_secs());
            }
        } else {
            self.reason = ArmReason::Calm;
            self.why = format!("disarmed: {said}");
        }
        self.armed
    }

    /// Whether the watch is armed.
    pub(crate) fn armed(&self) -> bool {
        self.armed
    }

    /// Why, as a label.
    pub(crate) fn reason(&self) -> ArmReason {
        self.reason
    }

    /// Why, in words.
    pub(crate) fn why(&self) -> &str {
        &self.why
    }
}

fn round(value: f64) -> f64 {
    let magnitude = 10f64.powi(3 - value.abs().log10().ceil() as i32);
    (value * magnitude).round() / magnitude
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = (1u64 << 30) as f64;

    fn headroom(limit_bytes: f64, kill_line: bool) -> Headroom {
        Headroom {
            limit: 0.95,
            interval: Duration::from_secs(1),
            worst_case_rate: Some(WORST_CASE_BYTES_PER_SECOND / limit_bytes),
            kill_line,
        }
    }

    /// A 300 MiB container limit: at 1 GiB/s the whole 300 MiB is 0.3 s, under two 1 s
    /// intervals, so the watch is armed from the first full sample, before any rise.
    #[test]
    fn a_small_kernel_limit_arms_the_watch_from_the_start() {
        let now = Instant::now();
        let mut arming = Arming::default();
        assert!(arming.armed(), "armed before any sample");
        assert!(arming.decide(now, 0.03, headroom(300.0 * 1024.0 * 1024.0, true)));
        assert_eq!(arming.reason(), ArmReason::WorstCase);
        assert!(
            arming.why().contains("kill line is 0.27 s away"),
            "{}",
            arming.why()
        );
    }

    /// A 64 GiB limit at 10 %: 55 GiB of headroom is 55 s at 1 GiB/s: disarmed after the calm
    /// period, not at once; and armed again when a rise that would cross it within two
    /// intervals is seen.
    #[test]
    fn a_far_limit_disarms_after_the_calm_period_and_a_fast_rise_arms_it_again() {
        let start = Instant::now();
        let limit_bytes = 64.0 * GIB;
        let mut arming = Arming::default();
        assert!(
            arming.decide(start, 0.1, headroom(limit_bytes, false)),
            "calm for 0 s"
        );
        assert_eq!(arming.reason(), ArmReason::Cooling);
        let later = start + CALM_PERIOD - Duration::from_millis(1);
        assert!(arming.decide(later, 0.1, headroom(limit_bytes, false)));
        assert!(!arming.decide(start + CALM_PERIOD, 0.1, headroom(limit_bytes, false)));
        assert_eq!(arming.reason(), ArmReason::Calm);
        assert!(
            arming
                .why()
                .starts_with("disarmed: at the worst case (no rise seen yet)"),
            "{}",
            arming.why()
        );
        // 0.5 of the limit per second: 0.85 to go is 1.7 s, within 2 s.
        arming.note_rise(0.5);
        assert!(arming.decide(start + CALM_PERIOD * 2, 0.1, headroom(limit_bytes, false)));
        assert_eq!(arming.reason(), ArmReason::FastestRise);
    }

    /// Once a slow rise is seen, it replaces the worst case for a budget's own limit, but not
    /// for a kill line.
    #[test]
    fn a_slow_rise_seen_disarms_a_budget_limit_but_not_a_kill_line() {
        let start = Instant::now();
        let limit_bytes = 300.0 * 1024.0 * 1024.0;
        let slow = 0.001;
        let mut own = Arming::default();
        own.note_rise(slow);
        own.decide(start, 0.5, headroom(limit_bytes, false));
        assert!(!own.decide(start + CALM_PERIOD, 0.5, headroom(limit_bytes, false)));
        let mut kill = Arming::default();
        kill.note_rise(slow);
        kill.decide(start, 0.5, headroom(limit_bytes, true));
        assert!(kill.decide(start + CALM_PERIOD, 0.5, headroom(limit_bytes, true)));
        assert_eq!(kill.reason(), ArmReason::WorstCase);
        kill.note_rise(-5.0);
        assert!(kill.why().contains("kill line"), "{}", kill.why());
    }
}
