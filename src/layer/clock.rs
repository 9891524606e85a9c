//! The clock that times requests: the CPU's time-stamp counter through [`quanta`] where it is
//! trustworthy (a few nanoseconds a read, against 25–35 for `Instant::now` on a KVM guest),
//! else the standard monotonic clock.
//!
//! The TSC is trusted only when, once per process, all of these hold:
//!
//! - the kernel itself keeps time with it (`/sys/devices/system/clocksource/clocksource0/
//!   current_clocksource` is `tsc`): Linux demotes a TSC it finds unstable or unsynchronized,
//!   on bare metal and under a hypervisor alike;
//! - quanta calibrated it against the monotonic clock (its raw reads advance at the reference
//!   clock's rate within 1 %, rather than being the reference clock itself);
//! - it never goes backwards across CPUs: one thread per CPU pair, each pinned, passes the
//!   latest reading back and forth and checks every read is at least the one before (a
//!   reading may be a few hundred nanoseconds early from out-of-order execution; more than
//!   [`MAX_BACKWARDS_NANOS`] fails the check).
//!
//! A request started on one CPU and finished on another (tokio moves tasks between workers)
//! then gets a latency as exact as the clock's; a check that fails leaves the standard clock in
//! place, as before. [`LatencyClock::describe`] says which was chosen and why.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

/// The largest backward step between CPUs that the check tolerates.
pub(crate) const MAX_BACKWARDS_NANOS: u64 = 500;

/// Readings exchanged per CPU pair by the check.
const CHECK_ROUNDS: u32 = 20_000;

/// A clock for request latencies: [`LatencyClock::now`] is a raw reading, and
/// [`LatencyClock::nanos_between`] turns two of them into nanoseconds.
#[derive(Debug, Clone)]
pub(crate) enum LatencyClock {
    /// The time-stamp counter, scaled by quanta's calibration.
    Tsc(quanta::Clock),
    /// Nanoseconds since `epoch` from the standard monotonic clock.
    Monotonic(Instant),
}

/// Why the clock is what it is, for logs and the benches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClockChoice {
    pub(crate) tsc: bool,
    pub(crate) reason: String,
}

static CHOICE: OnceLock<(LatencyClock, ClockChoice)> = OnceLock::new();

impl LatencyClock {
    /// The process's clock, chosen (and the TSC checked) on first use: a few milliseconds.
    pub(crate) fn get() -> &'static LatencyClock {
        &CHOICE.get_or_init(choose).0
    }

    /// Which clock [`LatencyClock::get`] chose, and why.
    pub(crate) fn describe() -> &'static ClockChoice {
        &CHOICE.get_or_init(choose).1
    }

    /// A raw reading.
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        match self {
            // What `clock.raw()` reads, without its call and match (see `sys::rdtsc`).
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            LatencyClock::Tsc(_) => crate::sys::rdtsc(),
            #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
            LatencyClock::Tsc(clock) => clock.raw(),
            LatencyClock::Monotonic(epoch) => duration_nanos(epoch.elapsed()),
        }
    }

    /// Nanoseconds from reading `start` to reading `end`; 0 if `end` is earlier.
    #[inline(always)]
    pub(crate) fn nanos_between(&self, start: u64, end: u64) -> u64 {
        if end <= start {
            return 0;
        }
        match self {
            LatencyClock::Tsc(clock) => clock.delta_as_nanos(start, end),
            LatencyClock::Monotonic(_) => end - start,
        }
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn choose() -> (LatencyClock, ClockChoice) {
    let monotonic = |reason: String| {
        (
            LatencyClock::Monotonic(Instant::now()),
            ClockChoice {
                tsc: false,
                reason: format!("monotonic ({reason})"),
            },
        )
    };
    if std::env::var_os("PERFPILOT_LATENCY_CLOCK").is_some_and(|v| v == "monotonic") {
        return monotonic("PERFPILOT_LATENCY_CLOCK=monotonic".to_owned());
    }
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    if source.trim() != "tsc" {
        return monotonic(format!(
            "the kernel's clocksource is {:?}, not tsc",
            source.trim()
        ));
    }
    let clock = quanta::Clock::new();
    if let Err(reason) = calibrated(&clock) {
        return monotonic(reason);
    }
    match check_across_cpus(&clock) {
        Ok(detail) => (
            LatencyClock::Tsc(clock),
            ClockChoice {
                tsc: true,
                reason: detail,
            },
        ),
        Err(reason) => monotonic(reason),
    }
}

/// Whether quanta's raw reads are a counter it scales, not the reference clock's nanoseconds
/// (its own fallback), and the scaled time keeps pace with the monotonic clock.
fn calibrated(clock: &quanta::Clock) -> Result<(), String> {
    let (raw0, t0) = (clock.raw(), Instant::now());
    std::thread::sleep(Duration::from_millis(5));
    let (raw1, t1) = (clock.raw(), Instant::now());
    let reference = duration_nanos(t1 - t0) as f64;
    let ticks = raw1.saturating_sub(raw0) as f64;
    let scaled = clock.delta_as_nanos(raw0, raw1) as f64;
    if (ticks - reference).abs() < reference * 0.01 {
        return Err("quanta reads the monotonic clock itself (no usable TSC)".to_owned());
    }
    if (scaled - reference).abs() > reference * 0.01 {
        return Err(format!(
            "the TSC scaled by quanta ran {scaled:.0} ns while the monotonic clock ran \
             {reference:.0} ns"
        ));
    }
    Ok(())
}

/// The CPUs this process may run on (at most 16 are checked).
fn allowed_cpus() -> Vec<usize> {
    crate::sys::allowed_cpus(16)
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> bool {
    crate::sys::pin_current_thread(cpu)
}

/// Two threads pinned to each pair of CPUs take turns reading the clock, each read checked
/// against the other thread's latest; the largest backward step must stay under
/// [`MAX_BACKWARDS_NANOS`].
fn check_across_cpus(clock: &quanta::Clock) -> Result<String, String> {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return Ok(format!(
            "tsc (clocksource tsc, calibrated; {} CPU, nothing to compare across)",
            cpus.len()
        ));
    }
    let mut worst = 0u64;
    for (index, &a) in cpus.iter().enumerate() {
        for &b in &cpus[index + 1..] {
            worst = worst.max(check_pair(clock, a, b)?);
        }
    }
    if worst > MAX_BACKWARDS_NANOS {
        return Err(format!(
            "the TSC went {worst} ns backwards between CPUs (tolerated: {MAX_BACKWARDS_NANOS} ns)"
        ));
    }
    Ok(format!(
        "tsc (clocksource tsc, calibrated, monotonic across {} CPUs: worst backward step \
         {worst} ns)",
        cpus.len()
    ))
}

/// The largest backward step seen between CPUs `a` and `b`, in nanoseconds.
fn check_pair(clock: &quanta::Clock, a: usize, b: usize) -> Result<u64, String> {
    // `turn` says whose read it is (0: a, 1: b); `latest` is the previous read.
    let turn = Arc::new(AtomicU64::new(0));
    let latest = Arc::new(AtomicU64::new(0));
    let failed_pin = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(2));
    let deadline = Instant::now() + Duration::from_millis(200);
    let run = |me: u64, cpu: usize| {
        let (turn, latest, failed_pin, barrier, clock) = (
            Arc::clone(&turn),
            Arc::clone(&latest),
            Arc::clone(&failed_pin),
            Arc::clone(&barrier),
            clock.clone(),
        );
        std::thread::Builder::new()
            .name("perfpilot-tsc-check".into())
            .spawn(move || {
                if !pin_to(cpu) {
                    failed_pin.store(true, Ordering::Relaxed);
                }
                barrier.wait();
                let mut worst = 0u64;
                let mut rounds = 0;
                while rounds < CHECK_ROUNDS && !failed_pin.load(Ordering::Relaxed) {
                    if turn.load(Ordering::Acquire) % 2 != me {
                        if Instant::now() > deadline {
                            break;
                        }
                        std::hint::spin_loop();
                        continue;
                    }
                    let before = latest.load(Ordering::Acquire);
                    let now = clock.raw();
                    if now < before {
                        worst = worst.max(clock.delta_as_nanos(now, before));
                    }
                    latest.store(now, Ordering::Release);
                    turn.fetch_add(1, Ordering::AcqRel);
                    rounds += 1;
                }
                worst
            })
    };
    let first = run(0, a).map_err(|e| format!("cannot start the TSC check: {e}"))?;
    let second = run(1, b).map_err(|e| format!("cannot start the TSC check: {e}"))?;
    let worst = first
        .join()
        .unwrap_or(u64::MAX)
        .max(second.join().unwrap_or(u64::MAX));
    if failed_pin.load(Ordering::Relaxed) {
        return Err(format!(
            "cannot pin a thread to CPU {a} or {b} for the TSC check"
        ));
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_measures_a_sleep() {
        let clock = LatencyClock::get();
        println!("latency clock: {:?}", LatencyClock::describe());
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        let nanos = clock.nanos_between(start, clock.now());
        assert!(
            (20_000_000..2_000_000_000).contains(&nanos),
            "{nanos} ns for a 20 ms sleep"
        );
        assert_eq!(clock.nanos_between(5, 3), 0, "backwards is zero");
    }

    #[test]
    fn the_monotonic_fallback_measures_too() {
        let clock = LatencyClock::Monotonic(Instant::now());
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        let nanos = clock.nanos_between(start, clock.now());
        assert!(nanos >= 5_000_000, "{nanos}");
    }
}
