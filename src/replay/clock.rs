//! The replay's clock: it stands at a recorded sample's time and moves only when the driver
//! moves it, and it tells the driver when the engine is waiting for it again (the engine has
//! done everything the new time made due).
//!
//! A recorded sample can come a few milliseconds before the tick the engine waits for (the
//! agent's timer and its sampling jitter): [`ReplayClock::tick_at`] moves to the later of the
//! two, so that every recorded sample is one tick of the engine.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Clock, Pending};

/// What the clock says: monotonic time, wall time, and how many times it was moved.
#[derive(Debug, Clone, Copy)]
struct Reading {
    now: Instant,
    wall: SystemTime,
    moves: u64,
}

/// A clock moved by hand from one recorded sample to the next.
#[derive(Debug)]
pub(super) struct ReplayClock {
    time: watch::Sender<Reading>,
    /// The last move after which the engine was seen waiting for a later time.
    waiting: Arc<watch::Sender<u64>>,
    /// The time the engine last asked to sleep until (its next tick).
    deadline: Arc<Mutex<Option<Instant>>>,
    origin: (Instant, SystemTime),
}

impl ReplayClock {
    /// A clock standing at `wall`.
    pub(super) fn at(wall: SystemTime) -> Self {
        let now = Instant::now();
        ReplayClock {
            time: watch::Sender::new(Reading {
                now,
                wall,
                moves: 0,
            }),
            waiting: Arc::new(watch::Sender::new(0)),
            deadline: Arc::new(Mutex::new(None)),
            origin: (now, wall),
        }
    }

    /// Moves the clock to `wall`, or to the engine's next tick if that is later (by at most
    /// `slack`: a recorded sample stands for the tick it was taken at even when it is stamped a
    /// little early); returns the move's number.
    pub(super) fn tick_at(&self, wall: SystemTime, slack: Duration) -> u64 {
        let (origin_now, origin_wall) = self.origin;
        let offset = wall.duration_since(origin_wall).unwrap_or(Duration::ZERO);
        let at = origin_now + offset;
        let due = *self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let late = due
            .and_then(|due| due.checked_duration_since(at))
            .filter(|late| *late <= slack)
            .unwrap_or(Duration::ZERO);
        self.move_to(wall + late)
    }

    /// Whether a sample stamped `wall` comes more than `slack` before the engine's next tick:
    /// not a tick, but a sample the fast watch asked for.
    pub(super) fn before_tick(&self, wall: SystemTime, slack: Duration) -> bool {
        let (origin_now, origin_wall) = self.origin;
        let at = origin_now + wall.duration_since(origin_wall).unwrap_or(Duration::ZERO);
        let due = *self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        due.and_then(|due| due.checked_duration_since(at))
            .is_some_and(|early| early > slack)
    }

    /// Moves the clock on by `by` (a recorded run's duration); returns the move's number.
    pub(super) fn advance(&self, by: Duration) -> u64 {
        let wall = self.time.borrow().wall;
        self.move_to(wall + by)
    }

    /// Moves the clock to `wall` (never back); returns the move's number.
    pub(super) fn move_to(&self, wall: SystemTime) -> u64 {
        let (origin_now, origin_wall) = self.origin;
        let offset = wall.duration_since(origin_wall).unwrap_or(Duration::ZERO);
        let mut moves = 0;
        self.time.send_modify(|reading| {
            let now = (origin_now + offset).max(reading.now);
            reading.moves += 1;
            moves = reading.moves;
            *reading = Reading {
                now,
                wall: wall.max(reading.wall),
                moves,
            };
        });
        moves
    }

    /// Resolves once the engine waits for a time later than the one set by move `moves`:
    /// it has sampled, judged and run all that was due then.
    pub(super) async fn settled(&self, moves: u64) {
        let mut waiting = self.waiting.subscribe();
        // The sender lives as long as the clock.
        let _ = waiting.wait_for(|&seen| seen >= moves).await;
    }
}

impl Clock for ReplayClock {
    fn now(&self) -> Instant {
        self.time.borrow().now
    }

    fn wall(&self) -> SystemTime {
        self.time.borrow().wall
    }

    fn sleep_until(&self, deadline: Instant) -> Pending<()> {
        let mut time = self.time.subscribe();
        let waiting = Arc::clone(&self.waiting);
        *self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(deadline);
        Box::pin(async move {
            loop {
                let reading = *time.borrow_and_update();
                if reading.now >= deadline {
                    return;
                }
                waiting.send_if_modified(|seen| {
                    let later = reading.moves > *seen;
                    *seen = (*seen).max(reading.moves);
                    later
                });
                if time.changed().await.is_err() {
                    // A dropped clock never fires.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}
