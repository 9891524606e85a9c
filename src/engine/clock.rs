//! Where the engine reads the time: monotonic time for schedules and judgements, wall time
//! for what it records and publishes.
//!
//! The engine core never calls `Instant::now` or `SystemTime::now` itself; it asks its
//! [`Clock`]. In production that is [`SystemClock`] (tokio's clock, so tests that pause
//! tokio's time still drive it). A replay provides its own: a clock it moves by hand from
//! one recorded sample to the next, as [`ManualClock`] does in the engine's tests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use tokio::time::Instant;

/// A future the engine awaits: a timer, a sample or a batch of strategy runs.
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The engine's source of time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time now: what schedules, cooldowns and settle times count from.
    fn now(&self) -> Instant;
    /// Wall time now: what records and the view say.
    fn wall(&self) -> SystemTime;
    /// Resolves once [`Clock::now`] has reached `deadline` (the next scheduled sample).
    fn sleep_until(&self, deadline: Instant) -> Pending<()>;
}

/// The real clock: tokio's monotonic time (paused and advanced in tests that ask tokio to)
/// and the system's wall time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Pending<()> {
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]): both its monotonic and
/// its wall time move by the same step, and timers waiting on it fire when it passes them.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock {
    time: tokio::sync::watch::Sender<(Instant, SystemTime)>,
}

#[cfg(test)]
impl ManualClock {
    /// A clock standing at `wall` (its monotonic time starts at the real one).
    pub(crate) fn at(wall: SystemTime) -> Self {
        ManualClock {
            time: tokio::sync::watch::Sender::new((Instant::now(), wall)),
        }
    }

    /// Moves the clock forward by `step`.
    pub(crate) fn advance(&self, step: std::time::Duration) {
        self.time
            .send_modify(|(now, wall)| (*now, *wall) = (*now + step, *wall + step));
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.time.borrow().0
    }

    fn wall(&self) -> SystemTime {
        self.time.borrow().1
    }

    fn sleep_until(&self, deadline: Instant) -> Pending<()> {
        let mut time = self.time.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; a dropped clock never fires.
            if time.wait_for(|(now, _)| *now >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}
