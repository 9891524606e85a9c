//! The noise band: the range a budget's signal has swung through lately, so that a rise back
//! up to where it has been many times is not taken for a rise toward the limit. Pure
//! arithmetic, no I/O and no allocation, shared by the engine (full samples) and the fast
//! watch (its cheap reads, every few ms).
//!
//! - [`NoiseBand`] keeps the lowest and the highest reading of each of the last
//!   [`NoiseBand::SLOTS`] whole seconds in a fixed ring.
//! - The band covers the seconds from [`NoiseBand::RECENT`] to [`NoiseBand::SLOTS`] − 1 back,
//!   leaving out the most recent one to two seconds (the look-back a short slope is taken
//!   over). Its **top** ([`NoiseBand::top`]) is the [`NoiseBand::VISITS`]-th highest of their
//!   maxima: a level the signal reached in at least three separate seconds of the last ten.
//!   One excursion (a cold fill the agent trimmed back) does not make a band; a swing that
//!   comes and goes every second does. Its **bottom** is the lowest reading in them.
//! - A reading is **inside** the band ([`NoiseBand::holds`]) when it is at or below the top
//!   and the goal held, and the rise it is on began in or near the band: the lowest reading
//!   of the recent seconds is not more than the band's width below its bottom (a swing that
//!   dips a little lower than before, as after a trim, is still the swing). Then its urgency
//!   and the forecast do not count (the budget and the watch leave them out). A reading
//!   above the top **breaks out** and counts as before, so a leak (every reading a new high)
//!   is caught at the same read; so does a rise from far below the band (a target restarted
//!   after a kill, filling back through the range it swung in before); above the goal the
//!   band does not apply at all (the level starts an episode). Bounding the band by the goal
//!   keeps it away from the limit, a kill line included.
//!
//! An example: `tests::a_swing_back_to_where_it_has_been_is_inside_a_new_high_breaks_out`.

use std::time::{Duration, Instant};

/// The last [`NoiseBand::SLOTS`] seconds' lowest and highest readings; see the module docs.
#[derive(Debug, Clone)]
pub struct NoiseBand {
    /// Per second since `origin`, by its number modulo [`NoiseBand::SLOTS`]; `None` before
    /// the first reading in it.
    slots: [Option<Slot>; Self::SLOTS],
    /// The first reading's time: seconds are counted from it.
    origin: Option<Instant>,
}

/// One second's readings.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The second's number since the first reading.
    second: u64,
    lowest: f64,
    highest: f64,
}

impl Default for NoiseBand {
    fn default() -> Self {
        NoiseBand {
            slots: [None; Self::SLOTS],
            origin: None,
        }
    }
}

impl NoiseBand {
    /// How long one slot is: a second, longer than the demo's sub-second swing.
    pub const SLOT: Duration = Duration::from_secs(1);
    /// Slots kept: 12, so the band reaches 10 to 11 s back past the recent ones.
    pub const SLOTS: usize = 12;
    /// The newest slots left out of the top: the current second and the one before (one to
    /// two seconds, the look-back of the short slope and the sampling interval's).
    pub const RECENT: usize = 2;
    /// In how many separate seconds the signal must have reached a level for it to be inside
    /// the band: three.
    pub const VISITS: usize = 3;

    /// Adds the reading `value` taken at `at` (a reading that is not a finite number is left
    /// out).
    pub fn push(&mut self, at: Instant, value: f64) {
        if !value.is_finite() {
            return;
        }
        let second = self.second(at);
        let slot = &mut self.slots[second as usize % Self::SLOTS];
        match slot {
            Some(slot) if slot.second == second => {
                slot.lowest = slot.lowest.min(value);
                slot.highest = slot.highest.max(value);
            }
            _ => {
                *slot = Some(Slot {
                    second,
                    lowest: value,
                    highest: value,
                })
            }
        }
    }

    /// Forgets every reading.
    pub fn clear(&mut self) {
        *self = NoiseBand::default();
    }

    /// The top of the band at `at`: the [`NoiseBand::VISITS`]-th highest per-second maximum
    /// from [`NoiseBand::RECENT`] to [`NoiseBand::SLOTS`] − 1 seconds back; `None` while
    /// fewer seconds than that were read.
    #[cfg(test)]
    pub fn top(&self, at: Instant) -> Option<f64> {
        self.range(at).map(|(_, top)| top)
    }

    /// Whether `value` read at `at` is inside the band: at or below its top and at or below
    /// `goal`, and the rise it is on began in or near the band (no reading of the recent
    /// seconds more than the band's width below its bottom). Its urgency and forecast then do
    /// not count.
    pub fn holds(&self, at: Instant, value: f64, goal: f64) -> bool {
        if value > goal {
            return false;
        }
        let Some((bottom, top)) = self.range(at) else {
            return false;
        };
        let floor = bottom - (top - bottom).max(0.0);
        value <= top && self.recent_low(at).is_none_or(|low| low >= floor)
    }

    /// The band at `at`: (bottom, top); see [`NoiseBand::top`].
    fn range(&self, at: Instant) -> Option<(f64, f64)> {
        let now = self.now(at)?;
        let oldest = now.saturating_sub(Self::SLOTS as u64 - 1);
        let newest = now.checked_sub(Self::RECENT as u64)?;
        // The VISITS highest, highest first, on the stack.
        let mut highest = [f64::NEG_INFINITY; Self::VISITS];
        let mut bottom = f64::INFINITY;
        let mut count = 0;
        for slot in self.slots.iter().flatten() {
            if slot.second < oldest || slot.second > newest {
                continue;
            }
            count += 1;
            bottom = bottom.min(slot.lowest);
            if let Some(place) = highest.iter().position(|&h| slot.highest > h) {
                highest.copy_within(place..Self::VISITS - 1, place + 1);
                highest[place] = slot.highest;
            }
        }
        (count >= Self::VISITS).then(|| (bottom, highest[Self::VISITS - 1]))
    }

    /// The lowest reading of the recent seconds (the ones the band leaves out) at `at`.
    fn recent_low(&self, at: Instant) -> Option<f64> {
        let now = self.now(at)?;
        let oldest = now.saturating_sub(Self::RECENT as u64 - 1);
        self.slots
            .iter()
            .flatten()
            .filter(|slot| slot.second >= oldest && slot.second <= now)
            .map(|slot| slot.lowest)
            .reduce(f64::min)
    }

    /// The number of the second `at` falls in; `None` before any reading.
    fn now(&self, at: Instant) -> Option<u64> {
        let origin = self.origin?;
        Some(Self::slot_of(at.saturating_duration_since(origin)))
    }

    /// The second `at` falls in, counted from the first reading.
    fn second(&mut self, at: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(at);
        Self::slot_of(at.saturating_duration_since(origin))
    }

    /// The number of the slot `elapsed` after the first reading falls in.
    fn slot_of(elapsed: Duration) -> u64 {
        (elapsed.as_millis() / Self::SLOT.as_millis()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The demo's swing: 0.42 → 0.62 and back every second, read every 100 ms.
    fn swing(band: &mut NoiseBand, start: Instant, seconds: u64) {
        for i in 0..seconds * 10 {
            let phase = (i % 10) as f64 / 10.0;
            let value = 0.42 + 0.2 * (1.0 - (2.0 * phase - 1.0).abs());
            band.push(start + ms(100 * i), value);
        }
    }

    #[test]
    fn a_swing_back_to_where_it_has_been_is_inside_a_new_high_breaks_out() {
        let start = Instant::now();
        let mut band = NoiseBand::default();
        swing(&mut band, start, 12);
        let now = start + ms(12_000);
        let top = band.top(now).expect("ten seconds of swing make a band");
        assert!((top - 0.62).abs() < 1e-9, "{top}");
        assert!(band.holds(now, 0.6, 0.8));
        assert!(band.holds(now, 0.62, 0.8));
        assert!(!band.holds(now, 0.63, 0.8), "above the top: a breakout");
        // Bounded by the goal held.
        assert!(!band.holds(now, 0.6, 0.55));
    }

    #[test]
    fn no_band_before_three_seconds_past_the_recent_ones() {
        let start = Instant::now();
        let mut band = NoiseBand::default();
        swing(&mut band, start, 4);
        // Seconds 0 and 1 are old enough at 3.x s; 2 and 3 are recent.
        assert_eq!(band.top(start + ms(3_900)), None);
        // At 4.x s seconds 0, 1 and 2 count.
        assert!(band.top(start + ms(4_100)).is_some());
    }

    #[test]
    fn one_excursion_does_not_make_a_band() {
        // A cold fill to 1.16 in second 0, trimmed to 0.3 and flat after.
        let start = Instant::now();
        let mut band = NoiseBand::default();
        band.push(start, 1.16);
        for i in 1..60 {
            band.push(start + ms(100 * i), 0.3);
        }
        let top = band.top(start + ms(6_000)).unwrap();
        assert!((top - 0.3).abs() < 1e-9, "{top}");
        // A refill back toward 1.16 breaks out at once.
        assert!(!band.holds(start + ms(6_000), 0.31, 0.8));
    }

    #[test]
    fn a_swing_that_dips_a_little_lower_than_before_is_still_inside() {
        // After a trim the swing starts from 0.36, below the band's 0.42 but within its
        // width (0.2) of it: the rise back to 0.6 is the swing.
        let start = Instant::now();
        let mut band = NoiseBand::default();
        swing(&mut band, start, 12);
        let trimmed = start + ms(12_000);
        band.push(trimmed, 0.36);
        for (i, value) in [0.4, 0.5, 0.6].into_iter().enumerate() {
            let at = trimmed + ms(100 * (i as u64 + 1));
            band.push(at, value);
            assert!(band.holds(at, value, 0.8), "{value}");
        }
    }

    #[test]
    fn a_rise_from_below_the_band_through_it_is_not_inside() {
        // Ten seconds of swing at 0.42–0.62; the target restarts at 0.03 (more than the band's
        // width below it) and fills back.
        let start = Instant::now();
        let mut band = NoiseBand::default();
        swing(&mut band, start, 12);
        let restart = start + ms(12_000);
        band.push(restart, 0.03);
        for (i, value) in [0.2, 0.4, 0.5, 0.6].into_iter().enumerate() {
            let at = restart + ms(100 * (i as u64 + 1));
            band.push(at, value);
            assert!(!band.holds(at, value, 0.8), "{value}: the rise began below");
        }
        // Three seconds later the 0.03 is out of the recent seconds, and 0.6 is in the band
        // the swing left.
        let later = restart + ms(2_100);
        band.push(later, 0.5);
        assert!(band.holds(later, 0.6, 0.8));
    }

    #[test]
    fn old_seconds_leave_the_band() {
        let start = Instant::now();
        let mut band = NoiseBand::default();
        swing(&mut band, start, 12);
        // Then 15 s flat at 0.3: the swing has left the band.
        for i in 0..150 {
            band.push(start + ms(12_000 + 100 * i), 0.3);
        }
        let top = band.top(start + ms(27_000)).unwrap();
        assert!((top - 0.3).abs() < 1e-9, "{top}");
    }

    #[test]
    fn a_reading_that_is_not_a_number_is_left_out() {
        let start = Instant::now();
        let mut band = NoiseBand::default();
        swing(&mut band, start, 6);
        band.push(start + ms(6_000), f64::NAN);
        band.push(start + ms(6_100), f64::INFINITY);
        assert!(band.top(start + ms(6_200)).is_some_and(f64::is_finite));
        band.clear();
        assert_eq!(band.top(start + ms(6_200)), None);
    }
}
