//! Back-off of a failing strategy: pure decisions, no I/O, like [`crate::trigger`].
//!
//! A strategy whose automatic runs keep failing is not retried at every cooldown: after
//! [`BackoffPolicy::after_failures`] consecutive failures its automatic runs pause for
//! `base`, and every further failure doubles the pause, up to [`BackoffPolicy::max`]
//! (`base` × 2^(failures − after_failures)). A successful automatic run, or any manual run,
//! ends the pause and clears the count. Its trigger is not touched: once the pause is over, a
//! trigger that is still latched fires at the next sample.

use std::time::{Duration, Instant};

use perfpilot_strategies::duration::doubled_up_to;

/// When and how long a failing strategy pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Consecutive failures before the first pause; `0`: never pause.
    pub after_failures: u32,
    /// The first pause (the strategy's trigger cooldown, at least [`BackoffPolicy::MIN_BASE`]).
    pub base: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl BackoffPolicy {
    /// The shortest first pause, for triggers without a cooldown.
    pub const MIN_BASE: Duration = Duration::from_secs(1);

    /// The policy for a strategy whose trigger has `cooldown`.
    pub fn new(after_failures: u32, cooldown: Duration, max: Duration) -> Self {
        BackoffPolicy {
            after_failures,
            base: cooldown.max(Self::MIN_BASE),
            max,
        }
    }

    /// The pause after `failures` consecutive failures (zero below the threshold).
    pub fn pause_after(&self, failures: u32) -> Duration {
        if self.after_failures == 0 || failures < self.after_failures {
            return Duration::ZERO;
        }
        doubled_up_to(self.base, failures - self.after_failures, self.max)
    }
}

/// A change worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffChange {
    /// Automatic runs pause until `until` (for `pause`) after `failures` failures in a row.
    Paused {
        /// Consecutive failures so far.
        failures: u32,
        /// How long the pause lasts.
        pause: Duration,
        /// When automatic runs may resume.
        until: Instant,
    },
    /// The pause (or the count towards one) ended after `failures` failures in a row.
    Cleared {
        /// The failures that had been counted.
        failures: u32,
    },
}

/// One strategy's failure count and pause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureBackoff {
    consecutive_failures: u32,
    paused_until: Option<Instant>,
}

impl FailureBackoff {
    /// Failed automatic runs in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The end of the current or last pause, if any since the last success.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Whether automatic runs are paused at `now`.
    pub fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| now < until)
    }

    /// Notes a failed automatic run that ended at `now`; says so when it starts a pause.
    pub fn record_failure(
        &mut self,
        policy: &BackoffPolicy,
        now: Instant,
    ) -> Option<BackoffChange> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let pause = policy.pause_after(self.consecutive_failures);
        if pause.is_zero() {
            return None;
        }
        let until = now + pause;
        self.paused_until = Some(until);
        Some(BackoffChange::Paused {
            failures: self.consecutive_failures,
            pause,
            until,
        })
    }

    /// A successful automatic run, or a manual run: the count and any pause end. Says so when
    /// a pause had started.
    pub fn reset(&mut self) -> Option<BackoffChange> {
        let was = std::mem::take(self);
        was.paused_until.map(|_| BackoffChange::Cleared {
            failures: was.consecutive_failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn pauses_double_from_the_threshold_up_to_the_cap() {
        let policy = BackoffPolicy::new(3, 10 * SECOND, 60 * SECOND);
        let pauses: Vec<u64> = (0..8).map(|f| policy.pause_after(f).as_secs()).collect();
        assert_eq!(pauses, [0, 0, 0, 10, 20, 40, 60, 60]);
        // A huge count neither overflows nor exceeds the cap.
        assert_eq!(policy.pause_after(u32::MAX), 60 * SECOND);
    }

    #[test]
    fn zero_threshold_never_pauses_and_zero_cooldown_has_a_floor() {
        assert_eq!(
            BackoffPolicy::new(0, SECOND, 60 * SECOND).pause_after(100),
            Duration::ZERO
        );
        assert_eq!(
            BackoffPolicy::new(1, Duration::ZERO, 60 * SECOND).base,
            SECOND
        );
    }

    #[test]
    fn failures_pause_and_a_reset_clears_once() {
        let policy = BackoffPolicy::new(2, 5 * SECOND, 3600 * SECOND);
        let start = Instant::now();
        let mut backoff = FailureBackoff::default();
        assert_eq!(backoff.record_failure(&policy, start), None);
        assert!(!backoff.is_paused(start));
        let change = backoff.record_failure(&policy, start);
        assert_eq!(
            change,
            Some(BackoffChange::Paused {
                failures: 2,
                pause: 5 * SECOND,
                until: start + 5 * SECOND
            })
        );
        assert!(backoff.is_paused(start + 4 * SECOND));
        assert!(!backoff.is_paused(start + 5 * SECOND));
        let later = start + 6 * SECOND;
        assert!(matches!(
            backoff.record_failure(&policy, later),
            Some(BackoffChange::Paused { failures: 3, pause, .. }) if pause == 10 * SECOND
        ));
        assert_eq!(backoff.consecutive_failures(), 3);
        assert_eq!(
            backoff.reset(),
            Some(BackoffChange::Cleared { failures: 3 })
        );
        assert_eq!(backoff, FailureBackoff::default());
        assert_eq!(
            backoff.reset(),
            None,
            "nothing to clear: no second log line"
        );
        // A failure below the threshold, then a success: no pause, nothing to log.
        backoff.record_failure(&policy, later);
        assert_eq!(backoff.reset(), None);
    }
}
