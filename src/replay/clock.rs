//! The replay's clock: it stands at a recorded sample's time and moves only when the driver
//! moves it, and it tells the driver when the engine is waiting for it again (the engine has
//! done everything the new time made due).
//!
//! It also hands out the recorded samples: the driver *offers* each one at its time
//! ([`ReplayClock::offer_at`]), and a sample the engine asks for is taken when one is offered
//! ([`ReplayClock::offered`]), whether the engine asked because its timer fired, because the
//! fast watch woke it, or because a run ended after a wake during it. So the engine evaluates
//! every recorded sample at its recorded time, and no other.
//!
//! A recorded sample can come a few milliseconds before the tick the engine waits for (the
//! agent's timer and its sampling jitter): from a recording without the engine's clock,
//! [`ReplayClock::tick_time`] takes the later of the two, so that every recorded sample is one
//! tick of the engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Clock, Pending};

/// What the clock says: monotonic time, wall time, how many times it was moved, and how many
/// samples were offered.
#[derive(Debug, Clone, Copy)]
struct Reading {
    now: Instant,
    wall: SystemTime,
    moves: u64,
    offered: u64,
}

/// A clock moved by hand from one recorded sample to the next.
#[derive(Debug)]
pub(super) struct ReplayClock {
    time: watch::Sender<Reading>,
    /// The last move after which the engine was seen waiting for a later time (or a sample).
    waiting: Arc<watch::Sender<u64>>,
    /// The time the engine last asked to sleep until (its next tick).
    deadline: Arc<Mutex<Option<Instant>>>,
    /// Samples the engine took.
    taken: Arc<AtomicU64>,
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
                offered: 0,
            }),
            waiting: Arc::new(watch::Sender::new(0)),
            deadline: Arc::new(Mutex::new(None)),
            taken: Arc::new(AtomicU64::new(0)),
            origin: (now, wall),
        }
    }

    /// The monotonic time of `wall`.
    fn instant(&self, wall: SystemTime) -> Instant {
        let (origin_now, origin_wall) = self.origin;
        origin_now + wall.duration_since(origin_wall).unwrap_or(Duration::ZERO)
    }

    fn deadline(&self) -> Option<Instant> {
        *self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `wall`, or the engine's next tick if that is later by at most `slack`: a sample
    /// recorded without the engine's clock stands for the tick it was taken at even when it
    /// is stamped a little early.
    pub(super) fn tick_time(&self, wall: SystemTime, slack: Duration) -> SystemTime {
        let late = self
            .deadline()
            .and_then(|due| due.checked_duration_since(self.instant(wall)))
            .filter(|late| *late <= slack)
            .unwrap_or(Duration::ZERO);
        wall + late
    }

    /// Whether a sample stamped `wall` comes more than `slack` before the engine's next tick:
    /// not a tick, but a sample the fast watch asked for.
    pub(super) fn before_tick(&self, wall: SystemTime, slack: Duration) -> bool {
        self.deadline()
            .and_then(|due| due.checked_duration_since(self.instant(wall)))
            .is_some_and(|early| early > slack)
    }

    /// Moves the clock to `wall` (never back); returns the move's number.
    pub(super) fn move_to(&self, wall: SystemTime) -> u64 {
        self.step(wall, 0)
    }

    /// Moves the clock to `wall` (never back) and offers the engine one sample there;
    /// returns the move's number.
    pub(super) fn offer_at(&self, wall: SystemTime) -> u64 {
        self.step(wall, 1)
    }

    fn step(&self, wall: SystemTime, offer: u64) -> u64 {
        let at = self.instant(wall);
        let mut moves = 0;
        self.time.send_modify(|reading| {
            moves = reading.moves + 1;
            *reading = Reading {
                now: at.max(reading.now),
                wall: wall.max(reading.wall),
                moves,
                offered: reading.offered + offer,
            };
        });
        moves
    }

    /// Whether every sample offered was taken.
    pub(super) fn all_taken(&self) -> bool {
        self.taken.load(Ordering::SeqCst) >= self.time.borrow().offered
    }

    /// Resolves once the engine waits for a time later than the one set by move `moves` (or
    /// for a sample not offered yet): it has sampled, judged and run all that was due then.
    pub(super) async fn settled(&self, moves: u64) {
        let mut waiting = self.waiting.subscribe();
        // The sender lives as long as the clock.
        let _ = waiting.wait_for(|&seen| seen >= moves).await;
    }

    /// Resolves once `ready` says so of the clock's reading; until then, the engine is
    /// waiting for the clock.
    fn wait(&self, mut ready: impl FnMut(&Reading) -> bool + Send + 'static) -> Pending<()> {
        let mut time = self.time.subscribe();
        let waiting = Arc::clone(&self.waiting);
        Box::pin(async move {
            loop {
                let reading = *time.borrow_and_update();
                if ready(&reading) {
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

    /// Resolves once the clock's wall time reaches `wall` (the end of a recorded run).
    pub(super) fn until(&self, wall: SystemTime) -> Pending<()> {
        self.wait(move |reading| reading.wall >= wall)
    }

    /// Resolves once a sample is offered that the engine has not taken yet, and takes it.
    pub(super) fn offered(&self) -> Pending<()> {
        let taken = Arc::clone(&self.taken);
        self.wait(move |reading| {
            taken
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
                    (taken < reading.offered).then_some(taken + 1)
                })
                .is_ok()
        })
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
        *self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(deadline);
        self.wait(move |reading| reading.now >= deadline)
    }
}
