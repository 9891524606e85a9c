//! Urgency: how soon a budget's signal reaches its limit at the rate it is rising now, against
//! how long the agent needs to react. Pure arithmetic, no I/O, shared by the engine (full
//! samples) and the fast watch (its cheap reads).
//!
//! - [`Rise`] keeps the last few readings and fits their short-horizon slope with Theil–Sen
//!   ([`crate::trigger::trend::theil_sen`]): one noisy reading inside the window does not move
//!   it, and once the window holds [`Rise::DEFAULT_POINTS`] readings neither does one at its
//!   newest end.
//! - A short slope is not extrapolated further than the evidence behind it
//!   ([`Rise::slope_toward`]): the slope puts the limit `T` away, and the rise must have lasted
//!   at least `T` / [`Rise::MAX_EXTRAPOLATION`] — the level change over that span (from a
//!   longer, thinned history of readings) bounds the slope used. A 2 MiB step that lands within
//!   40 ms looks like tens of MiB a second over five reads 20 ms apart, but over the few hundred
//!   ms it would be extrapolated for it is a few MiB a second; a steady fill putting the limit
//!   0.3 s away needs only 75 ms of rise, which its five reads already cover.
//! - [`Reaction`] is the time the agent needs from deciding to seeing a rung's effect: the
//!   rung's measured latency, its settle, one watch period and a margin.
//! - [`assess`] compares the two: the signal is **urgent** when the time to the limit at the
//!   current slope is shorter than the reaction time needed. Against a [`Line::Kill`] (the
//!   target's cgroup limit: reaching it kills the target) the whole reaction time is added
//!   again as the margin, since there is nothing to climb from on the other side.
//! - [`overshoot`] is how far past the limit the signal would be after a given time at the
//!   current slope: what a rung must relieve to keep it under.
//!
//! An example: `tests::example_a_fast_rise_is_urgent`.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::trigger::trend::{median, theil_sen};

/// The last few readings of a signal, their short-horizon slope, and a thinned history of the
/// last [`Rise::HISTORY_SPAN`] that tells how long the rise has lasted.
#[derive(Debug, Clone)]
pub struct Rise {
    points: VecDeque<(Instant, f64)>,
    capacity: usize,
    /// Readings at least [`Rise::HISTORY_GAP`] apart, the oldest at least
    /// [`Rise::HISTORY_SPAN`] before the newest once that much has been read.
    history: VecDeque<(Instant, f64)>,
}

impl Default for Rise {
    /// A window of [`Rise::DEFAULT_POINTS`] readings.
    fn default() -> Self {
        Rise::new(Self::DEFAULT_POINTS)
    }
}

impl Rise {
    /// Readings in the default window: five, the fewest in which one wild reading at the
    /// newest end is outvoted (6 of its 10 pairwise slopes do not involve it).
    pub const DEFAULT_POINTS: usize = 5;
    /// Readings a slope needs: three, so that one wild reading in the middle is outvoted.
    pub const MIN_POINTS: usize = 3;
    /// How far ahead a slope may be extrapolated, as a multiple of how long the rise behind
    /// it has lasted: 4 ([`Rise::slope_toward`]).
    pub const MAX_EXTRAPOLATION: f64 = 4.0;
    /// How far back the history reaches: 4 s, a quarter of the longest extrapolation it can
    /// back (16 s, far beyond the reaction times a default `settle` gives).
    pub const HISTORY_SPAN: Duration = Duration::from_secs(4);
    /// The least time between two readings kept in the history: 1/64 of
    /// [`Rise::HISTORY_SPAN`] (62.5 ms), so it holds at most 66 readings at any read rate.
    pub const HISTORY_GAP: Duration = Duration::from_micros(62_500);

    /// A window of the last `points` readings (at least [`Rise::MIN_POINTS`]).
    pub fn new(points: usize) -> Self {
        let capacity = points.max(Self::MIN_POINTS);
        Rise {
            points: VecDeque::with_capacity(capacity),
            capacity,
            history: VecDeque::new(),
        }
    }

    /// Adds the reading `value` taken at `at`. A reading that is not a finite number, or
    /// taken before the newest one, clears the window (a gap in the readings ends the trend).
    pub fn push(&mut self, at: Instant, value: f64) {
        let out_of_order = self.points.back().is_some_and(|&(last, _)| at < last);
        if !value.is_finite() || out_of_order {
            self.clear();
            if !value.is_finite() {
                return;
            }
        }
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back((at, value));
        let spaced = self
            .history
            .back()
            .is_none_or(|&(last, _)| at.saturating_duration_since(last) >= Self::HISTORY_GAP);
        if spaced {
            self.history.push_back((at, value));
        }
        // Keep one reading at least the span old: the one a span-long look back lands on.
        while self
            .history
            .get(1)
            .is_some_and(|&(second, _)| at.saturating_duration_since(second) >= Self::HISTORY_SPAN)
        {
            self.history.pop_front();
        }
    }

    /// Forgets every reading (after an action broke the trend, or a gap).
    pub fn clear(&mut self) {
        self.points.clear();
        self.history.clear();
    }

    /// Readings held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no reading is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The newest reading.
    pub fn latest(&self) -> Option<(Instant, f64)> {
        self.points.back().copied()
    }

    /// The slope, in the signal's unit per second (negative when falling); `None` with fewer
    /// than [`Rise::MIN_POINTS`] readings or when they all share one instant.
    pub fn slope(&self) -> Option<f64> {
        if self.points.len() < Self::MIN_POINTS {
            return None;
        }
        let (origin, _) = *self.points.front()?;
        let seconds = |at: Instant| at.saturating_duration_since(origin).as_secs_f64();
        if self.points.len() <= Self::DEFAULT_POINTS {
            // The default window, read at every poll of an armed watch: its at most 10
            // pairwise slopes on the stack, their median as `theil_sen` takes it, without the
            // allocations of its incremental band (which pays off on long windows only).
            // Each reading's time in seconds worked out once, not once per pair.
            let mut timed = [(0.0, 0.0); Self::DEFAULT_POINTS];
            for (slot, &(at, value)) in timed.iter_mut().zip(&self.points) {
                *slot = (seconds(at), value);
            }
            let timed = &timed[..self.points.len()];
            let mut slopes = [0.0; Self::DEFAULT_POINTS * (Self::DEFAULT_POINTS - 1) / 2];
            let mut count = 0;
            for (i, &(t1, v1)) in timed.iter().enumerate() {
                for &(t2, v2) in &timed[i + 1..] {
                    if t2 != t1 {
                        slopes[count] = (v2 - v1) / (t2 - t1);
                        count += 1;
                    }
                }
            }
            return median(&mut slopes[..count]).filter(|s| s.is_finite());
        }
        let points: Vec<(f64, f64)> = self
            .points
            .iter()
            .map(|&(at, value)| (seconds(at), value))
            .collect();
        theil_sen(&points)
            .map(|fit| fit.slope)
            .filter(|s| s.is_finite())
    }

    /// The slope to judge the way to `limit` by: the short-horizon [`Rise::slope`], but no
    /// steeper than the level change over the last `T` / [`Rise::MAX_EXTRAPOLATION`], where
    /// `T` is the time the short slope puts the limit away: a slope is not extrapolated more
    /// than four times further than the rise behind it has lasted. The look back lands on the
    /// newest reading at least that old (spans longer than [`Rise::HISTORY_SPAN`] are cut to
    /// it); when no reading is that old, nothing is known to have risen before the oldest, and
    /// its change counts over the whole span. At or past the limit, or not rising, the short
    /// slope as it is.
    pub fn slope_toward(&self, limit: f64) -> Option<f64> {
        self.slope().map(|slope| self.backed(slope, limit))
    }

    /// `slope` (this rise's [`Rise::slope`], worked out once by a caller that needs it for
    /// several limits) bounded as [`Rise::slope_toward`] bounds it toward `limit`.
    pub fn backed(&self, slope: f64, limit: f64) -> f64 {
        let Some((now, value)) = self.latest() else {
            return slope;
        };
        if slope <= 0.0 || value >= limit || !limit.is_finite() {
            return slope;
        }
        let time = (limit - value) / slope;
        let span = Duration::try_from_secs_f64(time / Self::MAX_EXTRAPOLATION)
            .unwrap_or(Self::HISTORY_SPAN)
            .min(Self::HISTORY_SPAN);
        // At least `span` before `now`: compared with one instant worked out once (the same
        // test as `now - at >= span`, without a subtraction per reading looked at).
        let cutoff = now.checked_sub(span);
        let old_enough = |&&(at, _): &&(Instant, f64)| cutoff.is_some_and(|cutoff| at <= cutoff);
        let back = self
            .points
            .iter()
            .rev()
            .find(old_enough)
            .or_else(|| self.history.iter().rev().find(old_enough))
            .or_else(|| self.history.front());
        let Some(&(then, before)) = back else {
            return slope;
        };
        let lasted = now.saturating_duration_since(then).max(span).as_secs_f64();
        if lasted <= 0.0 {
            return slope;
        }
        slope.min((value - before) / lasted)
    }
}

/// The time the agent needs to react: from deciding to run a rung until its effect is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction {
    /// How long the rung takes to run (its measured latency; a first run: an estimate).
    pub latency: Duration,
    /// How long after it its effect is read (the budget's `settle`).
    pub settle: Duration,
    /// How long a rise can go unseen between two readings: one watch period, or one sampling
    /// interval without a watch.
    pub watch_period: Duration,
    /// A margin on top; by default [`Reaction::DEFAULT_MARGIN`].
    pub margin: Duration,
}

impl Reaction {
    /// Default margin: 50 ms, about the scheduling jitter of a busy 2-core machine.
    pub const DEFAULT_MARGIN: Duration = Duration::from_millis(50);

    /// A rung taking `latency`, read `settle` after it; no watch period yet, the default
    /// margin.
    pub fn new(latency: Duration, settle: Duration) -> Self {
        Reaction {
            latency,
            settle,
            watch_period: Duration::ZERO,
            margin: Self::DEFAULT_MARGIN,
        }
    }

    /// With `period` between readings.
    pub fn watch_period(mut self, period: Duration) -> Self {
        self.watch_period = period;
        self
    }

    /// With `margin` in place of the default.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Latency, settle and watch period: the reaction itself, without margin.
    pub fn reaction(&self) -> Duration {
        self.latency + self.settle + self.watch_period
    }

    /// The time needed before `line`: the reaction plus the margin; against a kill line the
    /// margin is at least the whole reaction again.
    pub fn needed(&self, line: Line) -> Duration {
        let margin = match line {
            Line::Limit => self.margin,
            Line::Kill => self.margin.max(self.reaction()),
        };
        self.reaction() + margin
    }
}

/// What the limit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A line the agent keeps the signal under, and can climb back from.
    Limit,
    /// The target's cgroup limit: reaching it kills the target.
    Kill,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Line::Limit => "limit",
            Line::Kill => "kill line",
        })
    }
}

/// The signal's urgency against its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Urgency {
    /// The slope used, per second (`None`: not enough readings).
    pub slope: Option<f64>,
    /// Time until the limit is reached at that slope: zero at or past it, `None` when the
    /// signal is under it and not rising.
    pub time_to_limit: Option<Duration>,
    /// The reaction time needed before the limit ([`Reaction::needed`]).
    pub needed: Duration,
    /// The limit is nearer than the reaction time needed.
    pub urgent: bool,
}

impl fmt::Display for Urgency {
    /// "limit in 140 ms at 0.9/s (needs 1.1 s)"; "not rising" when it is not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.time_to_limit, self.slope) {
            (Some(time), Some(slope)) => write!(
                f,
                "limit in {} ms at {}/s (reacting needs {} ms)",
                time.as_millis(),
                round(slope),
                self.needed.as_millis()
            ),
            (Some(_), None) => f.write_str("at the limit"),
            (None, _) => f.write_str("not rising toward the limit"),
        }
    }
}

/// Seconds until `value`, moving at `slope` per second, reaches `target`: zero when it is
/// there already, `None` when it is below and not rising (or an input is not finite).
pub fn time_to_reach(value: f64, target: f64, slope: f64) -> Option<Duration> {
    if !value.is_finite() || !target.is_finite() || !slope.is_finite() {
        return None;
    }
    if value >= target {
        return Some(Duration::ZERO);
    }
    (slope > 0.0)
        .then(|| (target - value) / slope)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// How urgent `value` is against `limit` at `slope` (from [`Rise::slope`]) for an agent that
/// needs `reaction` to act. At or past the limit it is always urgent; without a slope it is
/// urgent only there.
pub fn assess(
    value: f64,
    limit: f64,
    slope: Option<f64>,
    reaction: &Reaction,
    line: Line,
) -> Urgency {
    let needed = reaction.needed(line);
    let time_to_limit = if value.is_finite() && value >= limit {
        Some(Duration::ZERO)
    } else {
        slope.and_then(|slope| time_to_reach(value, limit, slope))
    };
    Urgency {
        slope,
        time_to_limit,
        needed,
        urgent: time_to_limit.is_some_and(|time| time < needed),
    }
}

/// How far past `limit` the signal would be `within` from now at `slope` (0 when it would not
/// reach it): what a rung must relieve to keep it under.
pub fn overshoot(value: f64, limit: f64, slope: f64, within: Duration) -> f64 {
    let ahead = value + slope.max(0.0) * within.as_secs_f64();
    if ahead.is_finite() {
        (ahead - limit).max(0.0)
    } else {
        0.0
    }
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    /// The example the module's documentation once showed.
    #[test]
    fn example_a_fast_rise_is_urgent() {
        use super::{assess, Line, Reaction, Rise};
        use std::time::{Duration, Instant};

        let start = Instant::now();
        let mut rise = Rise::default();
        // 0.5 → 0.7 of the limit in 80 ms: 2.5 per second.
        for (i, value) in [0.5, 0.55, 0.6, 0.65, 0.7].into_iter().enumerate() {
            rise.push(start + Duration::from_millis(20 * i as u64), value);
        }
        let reaction = Reaction::new(Duration::from_millis(30), Duration::from_secs(1))
            .watch_period(Duration::from_millis(20));
        let urgency = assess(0.7, 1.0, rise.slope_toward(1.0), &reaction, Line::Limit);
        assert!(urgency.urgent); // 120 ms to the limit, 1.1 s needed
    }

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rise_of(values: &[f64], every: Duration) -> Rise {
        let start = Instant::now();
        let mut rise = Rise::default();
        for (i, &value) in values.iter().enumerate() {
            rise.push(start + every * i as u32, value);
        }
        rise
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// The small-window path gives the bits `theil_sen` gives over the same readings: a
    /// steady rise, a step, a wild reading, a fall, and two readings at one instant.
    #[test]
    fn the_default_window_slope_is_theil_sens_to_the_bit() {
        use crate::trigger::trend::theil_sen;
        let start = Instant::now();
        let windows: [&[(u64, f64)]; 6] = [
            &[(0, 0.1), (20, 0.2), (40, 0.3), (60, 0.4), (80, 0.5)],
            &[(0, 0.1), (20, 0.1), (40, 0.12), (60, 0.12), (80, 0.12)],
            &[(0, 0.3), (20, 0.31), (40, 0.9), (60, 0.33), (80, 0.34)],
            &[(0, 0.5), (21, 0.45), (39, 0.41), (62, 0.38), (80, 0.2)],
            &[(0, 0.5), (20, 0.6), (20, 0.7), (40, 0.8)],
            &[(0, 0.5), (20, 0.6), (45, 0.62)],
        ];
        for window in windows {
            let mut rise = Rise::default();
            for &(ms, value) in window {
                rise.push(start + Duration::from_millis(ms), value);
            }
            let points: Vec<(f64, f64)> = window
                .iter()
                .map(|&(ms, value)| (ms as f64 / 1000.0, value))
                .collect();
            let want = theil_sen(&points).map(|fit| fit.slope);
            assert_eq!(
                rise.slope().map(f64::to_bits),
                want.map(f64::to_bits),
                "{window:?}"
            );
        }
    }

    #[test]
    fn a_steady_rise_gives_its_slope_per_second() {
        let rise = rise_of(&[0.1, 0.2, 0.3, 0.4, 0.5], ms(100));
        assert!(close(rise.slope().unwrap(), 1.0), "{:?}", rise.slope());
    }

    #[test]
    fn fewer_than_three_readings_give_no_slope() {
        assert_eq!(rise_of(&[0.1, 0.9], ms(20)).slope(), None);
        assert!(rise_of(&[0.1, 0.2, 0.3], ms(20)).slope().is_some());
    }

    #[test]
    fn one_wild_reading_in_the_middle_does_not_move_the_slope() {
        let rise = rise_of(&[0.1, 0.9, 0.3], ms(100));
        assert!(close(rise.slope().unwrap(), 1.0), "{:?}", rise.slope());
    }

    #[test]
    fn one_wild_reading_at_the_newest_end_of_a_full_window_does_not_move_it() {
        let rise = rise_of(&[0.1, 0.2, 0.3, 0.4, 5.0], ms(100));
        assert!(close(rise.slope().unwrap(), 1.0), "{:?}", rise.slope());
        // A wild drop likewise.
        let rise = rise_of(&[0.1, 0.2, 0.3, 0.4, 0.0], ms(100));
        assert!(close(rise.slope().unwrap(), 1.0), "{:?}", rise.slope());
    }

    #[test]
    fn the_window_keeps_only_the_newest_readings() {
        // A fall then a rise: the fall has left the window.
        let rise = rise_of(&[0.9, 0.5, 0.1, 0.1, 0.2, 0.3, 0.4, 0.5], ms(100));
        assert_eq!(rise.len(), Rise::DEFAULT_POINTS);
        assert!(close(rise.slope().unwrap(), 1.0), "{:?}", rise.slope());
    }

    #[test]
    fn a_gap_or_a_reading_back_in_time_clears_the_window() {
        let mut rise = rise_of(&[0.1, 0.2, 0.3], ms(100));
        rise.push(Instant::now(), f64::NAN);
        assert!(rise.is_empty());
        let start = Instant::now();
        let mut rise = Rise::default();
        rise.push(start + ms(300), 0.1);
        rise.push(start + ms(400), 0.2);
        rise.push(start, 0.3);
        assert_eq!(rise.len(), 1);
        assert_eq!(rise.latest().map(|(_, v)| v), Some(0.3));
    }

    /// `readings` (value per read) every `every`, after `flat` reads of the first value.
    fn reads(flat: usize, readings: &[f64], every: Duration) -> Vec<(Instant, f64)> {
        let start = Instant::now();
        std::iter::repeat_n(readings[0], flat)
            .chain(readings.iter().copied())
            .enumerate()
            .map(|(i, value)| (start + every * i as u32, value))
            .collect()
    }

    /// Feeds `readings` one by one; after each, whether it is urgent with `slope_of` the rise.
    fn urgent_reads(
        readings: &[(Instant, f64)],
        limit: f64,
        reaction: &Reaction,
        line: Line,
        slope_of: impl Fn(&Rise) -> Option<f64>,
    ) -> Vec<bool> {
        let mut rise = Rise::default();
        readings
            .iter()
            .map(|&(at, value)| {
                rise.push(at, value);
                assess(value, limit, slope_of(&rise), reaction, line).urgent
            })
            .collect()
    }

    #[test]
    fn a_2_mib_step_is_not_extrapolated_into_urgency() {
        // The browser test's demo: a 96 MiB budget (limit 1.0), 16 MiB used for a second, then
        // one 2 MiB chunk lands between two 20 ms reads; a 3 s settle, a first run's 100 ms.
        let mib = |n: f64| n / 96.0;
        let readings = reads(
            50,
            &[mib(16.0), mib(18.0), mib(18.0), mib(18.0), mib(18.0)],
            ms(20),
        );
        let reaction = Reaction::new(ms(100), ms(3000)).watch_period(ms(20));
        // The five reads alone see 33 MiB/s, the limit 2.3 s away: urgent (the old rule).
        let short = urgent_reads(&readings, 1.0, &reaction, Line::Limit, Rise::slope);
        assert!(short.iter().any(|&u| u), "{short:?}");
        // The 2 MiB over the ~0.6 s that extrapolation needs is 3.4 MiB/s: not urgent.
        let backed = urgent_reads(&readings, 1.0, &reaction, Line::Limit, |r| {
            r.slope_toward(1.0)
        });
        assert!(backed.iter().all(|&u| !u), "{backed:?}");
    }

    #[test]
    fn a_steady_steep_fill_is_urgent_at_the_same_read_as_its_short_slope() {
        // The demo's cold cache in a 300 MiB cgroup: 10 → 300 MiB at 725 MiB/s after a second
        // at 10 MiB, read every 20 ms; a kill line, a first run's 100 ms and a 1 s settle.
        let fill: Vec<f64> = (0..20)
            .map(|i| (10.0 + 14.5 * f64::from(i)).min(300.0) / 300.0)
            .collect();
        let readings = reads(50, &fill, ms(20));
        let reaction = Reaction::new(ms(100), ms(1000)).watch_period(ms(20));
        let first = |urgent: Vec<bool>| urgent.iter().position(|&u| u);
        let short = first(urgent_reads(
            &readings,
            1.0,
            &reaction,
            Line::Kill,
            Rise::slope,
        ));
        let backed = first(urgent_reads(&readings, 1.0, &reaction, Line::Kill, |r| {
            r.slope_toward(1.0)
        }));
        assert!(backed.is_some(), "never urgent");
        assert_eq!(backed, short, "no read later than the short slope alone");
        // Urgent within the first 3 reads of the fill, under a fifth of the limit.
        let at = backed.unwrap();
        assert!(
            at <= 52 && readings[at].1 < 0.2,
            "read {at}: {:?}",
            readings[at]
        );
    }

    #[test]
    fn at_or_past_the_limit_it_stays_urgent_whatever_the_rise() {
        let reaction = Reaction::new(ms(100), ms(1000)).watch_period(ms(20));
        // Flat at 0.5 for a second, then one read at the limit and one past it.
        let readings = reads(50, &[0.5, 1.0, 1.05], ms(20));
        let urgent = urgent_reads(&readings, 1.0, &reaction, Line::Kill, |r| {
            r.slope_toward(1.0)
        });
        assert_eq!(urgent[..51].iter().filter(|&&u| u).count(), 0);
        assert_eq!(&urgent[51..], [true, true]);
    }

    #[test]
    fn a_steady_rise_keeps_its_slope_and_one_just_begun_counts_over_the_span() {
        // 0.04/s for 10 s, read every 100 ms: the limit 12.5 s away at the end, a 3.1 s look
        // back over the same rise: the short slope as it is.
        let values: Vec<f64> = (0..=100).map(|i| 0.4 * f64::from(i) / 100.0).collect();
        let mut rise = Rise::default();
        for (at, value) in reads(0, &values, ms(100)) {
            rise.push(at, value);
        }
        assert!(
            (rise.slope_toward(0.9).unwrap() - 0.04).abs() < 1e-6,
            "{:?}",
            rise.slope_toward(0.9)
        );
        // Three reads of a rise of 1.0/s toward a limit 2 s away: its 0.04 over 40 ms counts
        // over the 0.5 s a 2 s extrapolation needs.
        let rise = rise_of(&[0.0, 0.02, 0.04], ms(20));
        assert!(close(rise.slope().unwrap(), 1.0));
        let backed = rise.slope_toward(2.04).unwrap();
        assert!(close(backed, 0.04 / 0.5), "{backed}");
        // Falling: as it is.
        let rise = rise_of(&[0.5, 0.4, 0.3], ms(20));
        assert!(close(rise.slope_toward(1.0).unwrap(), -5.0));
    }

    #[test]
    fn the_history_stays_bounded_at_any_read_rate() {
        let start = Instant::now();
        let mut rise = Rise::default();
        for i in 0..20_000u32 {
            rise.push(start + Duration::from_millis(u64::from(i)), 0.1);
        }
        let most =
            (Rise::HISTORY_SPAN.as_secs_f64() / Rise::HISTORY_GAP.as_secs_f64()) as usize + 2;
        assert!(rise.history.len() <= most, "{}", rise.history.len());
        let (oldest, _) = rise.history[0];
        let (newest, _) = rise.latest().unwrap();
        assert!(newest.duration_since(oldest) >= Rise::HISTORY_SPAN);
    }

    #[test]
    fn time_to_reach_is_headroom_over_slope() {
        assert_eq!(time_to_reach(0.5, 1.0, 2.5), Some(ms(200)));
        assert_eq!(time_to_reach(1.0, 1.0, 0.0), Some(Duration::ZERO));
        assert_eq!(time_to_reach(1.2, 1.0, -1.0), Some(Duration::ZERO));
        assert_eq!(time_to_reach(0.5, 1.0, 0.0), None);
        assert_eq!(time_to_reach(0.5, 1.0, -1.0), None);
        assert_eq!(time_to_reach(f64::NAN, 1.0, 1.0), None);
        assert_eq!(time_to_reach(0.5, 1.0, f64::INFINITY), None);
    }

    #[test]
    fn the_reaction_time_adds_latency_settle_watch_and_margin() {
        let reaction = Reaction::new(ms(30), ms(1000)).watch_period(ms(20));
        assert_eq!(reaction.reaction(), ms(1050));
        assert_eq!(reaction.needed(Line::Limit), ms(1100));
        // A kill line: the whole reaction again as margin.
        assert_eq!(reaction.needed(Line::Kill), ms(2100));
        // ...unless the margin is larger still.
        assert_eq!(reaction.margin(ms(5000)).needed(Line::Kill), ms(6050));
    }

    #[test]
    fn urgent_when_the_limit_is_nearer_than_the_reaction_needs() {
        let reaction = Reaction::new(ms(30), ms(100)).watch_period(ms(20));
        // 0.5 to go at 2.5/s: 200 ms, 200 ms needed: not yet.
        let calm = assess(0.5, 1.0, Some(2.5), &reaction, Line::Limit);
        assert_eq!(calm.time_to_limit, Some(ms(200)));
        assert_eq!(calm.needed, ms(200));
        assert!(!calm.urgent);
        // A little nearer: urgent.
        assert!(assess(0.51, 1.0, Some(2.5), &reaction, Line::Limit).urgent);
        // The same distance against a kill line: urgent (300 ms needed).
        let kill = assess(0.5, 1.0, Some(2.5), &reaction, Line::Kill);
        assert_eq!(kill.needed, ms(300));
        assert!(kill.urgent);
    }

    #[test]
    fn a_flat_or_falling_signal_is_urgent_only_at_the_limit() {
        let reaction = Reaction::new(ms(30), ms(1000));
        assert!(!assess(0.99, 1.0, Some(0.0), &reaction, Line::Kill).urgent);
        assert!(!assess(0.99, 1.0, Some(-1.0), &reaction, Line::Kill).urgent);
        assert!(!assess(0.99, 1.0, None, &reaction, Line::Kill).urgent);
        let at = assess(1.0, 1.0, None, &reaction, Line::Limit);
        assert!(at.urgent);
        assert_eq!(at.time_to_limit, Some(Duration::ZERO));
    }

    #[test]
    fn overshoot_is_how_far_past_the_limit_the_slope_carries_it() {
        // 0.9 rising 0.5/s for 400 ms: 1.1, 0.1 past 1.0.
        assert!(close(overshoot(0.9, 1.0, 0.5, ms(400)), 0.1));
        assert_eq!(overshoot(0.5, 1.0, 0.5, ms(400)), 0.0);
        assert_eq!(overshoot(0.5, 1.0, -5.0, ms(400)), 0.0);
        assert_eq!(overshoot(0.5, 1.0, f64::INFINITY, ms(400)), 0.0);
    }

    #[test]
    fn the_urgency_says_how_near_and_how_fast() {
        let reaction = Reaction::new(ms(30), ms(100));
        let text = assess(0.5, 1.0, Some(2.5), &reaction, Line::Limit).to_string();
        assert_eq!(text, "limit in 200 ms at 2.5/s (reacting needs 180 ms)");
        let flat = assess(0.5, 1.0, Some(0.0), &reaction, Line::Limit).to_string();
        assert_eq!(flat, "not rising toward the limit");
    }
}
