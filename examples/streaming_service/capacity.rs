//! The chunk cache's adaptive capacity: how many bytes of chunks the service admits right now.
//!
//! `--cache-mb` is the ceiling. A trim request (memory pressure reported from outside) lowers
//! the capacity to what is left after the trim, so the cache cannot refill to the old size
//! seconds later; once no trim has arrived for a whole recovery period, the capacity grows
//! back by a share of itself every period (at least one chunk), up to the ceiling. The
//! shape is TCP's congestion window: a multiplicative cut on pressure, a slow climb without.
//!
//! Pure state: the caller passes the clock reading, so the rules are tested without sleeping.

use std::time::{Duration, Instant};

/// How the capacity recovers once trims stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recovery {
    /// Growth per step, as a share of the current capacity (e.g. 0.1 for +10 %).
    pub share: f64,
    /// Time between steps, and the quiet time after a trim before the first one.
    pub period: Duration,
}

/// The capacity's current value and what moves it.
#[derive(Debug, Clone)]
pub struct AdaptiveCapacity {
    ceiling_bytes: u64,
    /// The capacity never grows by less than this (one chunk), so it recovers from 0.
    step_floor_bytes: u64,
    recovery: Recovery,
    current_bytes: u64,
    /// When the last trim lowered the capacity.
    last_trim: Option<Instant>,
}

/// What [`AdaptiveCapacity::lower`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lowered {
    pub before_bytes: u64,
    pub after_bytes: u64,
}

impl AdaptiveCapacity {
    /// A capacity starting at `ceiling_bytes`, growing by at least `step_floor_bytes`.
    pub fn new(ceiling_bytes: u64, step_floor_bytes: u64, recovery: Recovery) -> Self {
        Self {
            ceiling_bytes,
            step_floor_bytes,
            recovery,
            current_bytes: ceiling_bytes,
            last_trim: None,
        }
    }

    /// Bytes the cache may hold now.
    pub fn current_bytes(&self) -> u64 {
        self.current_bytes
    }

    /// The most the capacity ever returns to (`--cache-mb`).
    pub fn ceiling_bytes(&self) -> u64 {
        self.ceiling_bytes
    }

    /// A trim of `fraction` (0 < fraction ≤ 1) while the cache held `cached_bytes`: the
    /// capacity becomes `(1 − fraction) ×` the smaller of the capacity and what was cached,
    /// so a trim of a half-full cache still lowers what it may grow back to.
    pub fn lower(&mut self, fraction: f64, cached_bytes: u64, now: Instant) -> Lowered {
        let before_bytes = self.current_bytes;
        let base = before_bytes.min(cached_bytes) as f64;
        self.current_bytes = (base * (1.0 - fraction.clamp(0.0, 1.0))).floor() as u64;
        self.last_trim = Some(now);
        Lowered {
            before_bytes,
            after_bytes: self.current_bytes,
        }
    }

    /// One recovery step, for the caller to take once per [`Recovery::period`]: grows the
    /// capacity if no trim came within the last period; returns the new capacity when it
    /// grew. (The caller's ticker sets the pace: a check of the time since the previous step
    /// would skip every other tick whose timer fired a little early.)
    pub fn recover(&mut self, now: Instant) -> Option<u64> {
        if self.current_bytes >= self.ceiling_bytes {
            return None;
        }
        let quiet = self
            .last_trim
            .is_none_or(|last| now.saturating_duration_since(last) >= self.recovery.period);
        if !quiet {
            return None;
        }
        let step =
            ((self.current_bytes as f64 * self.recovery.share) as u64).max(self.step_floor_bytes);
        self.current_bytes = self
            .current_bytes
            .saturating_add(step)
            .min(self.ceiling_bytes);
        Some(self.current_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const PERIOD: Duration = Duration::from_secs(5);

    fn capacity() -> AdaptiveCapacity {
        let recovery = Recovery {
            share: 0.1,
            period: PERIOD,
        };
        AdaptiveCapacity::new(1024 * MIB, 2 * MIB, recovery)
    }

    #[test]
    fn starts_at_the_ceiling_and_does_not_grow_past_it() {
        let mut capacity = capacity();
        assert_eq!(capacity.current_bytes(), 1024 * MIB);
        assert_eq!(capacity.recover(Instant::now()), None);
    }

    #[test]
    fn a_trim_lowers_the_capacity_below_what_was_cached() {
        let mut capacity = capacity();
        let now = Instant::now();
        let lowered = capacity.lower(0.25, 400 * MIB, now);
        assert_eq!(lowered.before_bytes, 1024 * MIB);
        assert_eq!(lowered.after_bytes, 300 * MIB);
        assert_eq!(capacity.current_bytes(), 300 * MIB);
        // A second trim cuts from the lowered capacity when the cache is full.
        capacity.lower(0.5, 300 * MIB, now);
        assert_eq!(capacity.current_bytes(), 150 * MIB);
        capacity.lower(1.0, 150 * MIB, now);
        assert_eq!(capacity.current_bytes(), 0);
    }

    #[test]
    fn recovery_waits_a_quiet_period_then_climbs_by_a_share_per_step() {
        let mut capacity = capacity();
        let start = Instant::now();
        capacity.lower(0.5, 200 * MIB, start);
        assert_eq!(capacity.recover(start + PERIOD / 2), None, "too soon");
        assert_eq!(capacity.current_bytes(), 100 * MIB);
        assert_eq!(capacity.recover(start + PERIOD), Some(110 * MIB));
        assert_eq!(capacity.recover(start + PERIOD * 2), Some(121 * MIB));
        // A trim restarts the quiet period.
        capacity.lower(0.5, 120 * MIB, start + PERIOD * 2);
        assert_eq!(capacity.recover(start + PERIOD * 5 / 2), None);
        assert_eq!(capacity.recover(start + PERIOD * 3), Some(66 * MIB));
    }

    #[test]
    fn recovery_from_zero_takes_at_least_one_chunk_and_stops_at_the_ceiling() {
        let mut capacity = capacity();
        let mut now = Instant::now();
        capacity.lower(1.0, 1024 * MIB, now);
        now += PERIOD;
        assert_eq!(capacity.recover(now), Some(2 * MIB));
        for _ in 0..200 {
            now += PERIOD;
            capacity.recover(now);
        }
        assert_eq!(capacity.current_bytes(), 1024 * MIB);
    }
}
