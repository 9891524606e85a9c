//! jemalloc through its control interface: statistics, purge, decay.
//!
//! These act on the jemalloc linked by `tikv-jemalloc-sys`; they are meaningful when the host
//! uses `tikv_jemallocator::Jemalloc` as its global allocator.

use std::ffi::CStr;
use std::sync::OnceLock;

use tikv_jemalloc_ctl::{arenas, epoch, epoch_mib, stats};

use crate::snapshot::AllocatorStats;

/// `MALLCTL_ARENAS_ALL`: the pseudo-arena index that addresses every arena at once.
const ARENAS_ALL_PURGE: &CStr = c"arena.4096.purge";

/// The control names [`read_stats`] uses, resolved once to management information bases, so a
/// read skips the name lookup.
struct StatsMibs {
    epoch: epoch_mib,
    allocated: stats::allocated_mib,
    active: stats::active_mib,
    resident: stats::resident_mib,
    retained: stats::retained_mib,
}

impl StatsMibs {
    fn resolve() -> Result<Self, tikv_jemalloc_ctl::Error> {
        Ok(StatsMibs {
            epoch: epoch::mib()?,
            allocated: stats::allocated::mib()?,
            active: stats::active::mib()?,
            resident: stats::resident::mib()?,
            retained: stats::retained::mib()?,
        })
    }
}

/// Reads jemalloc's counters after advancing its stats epoch.
pub fn read_stats() -> Result<AllocatorStats, String> {
    static MIBS: OnceLock<Result<StatsMibs, String>> = OnceLock::new();
    let mibs = MIBS
        .get_or_init(|| StatsMibs::resolve().map_err(|e| format!("jemalloc stats: {e}")))
        .as_ref()
        .map_err(Clone::clone)?;
    mibs.epoch
        .advance()
        .map_err(|e| format!("jemalloc epoch: {e}"))?;
    let read = |name: &str, value: Result<usize, tikv_jemalloc_ctl::Error>| {
        value
            .map(|v| v as u64)
            .map_err(|e| format!("jemalloc stats.{name}: {e}"))
    };
    Ok(AllocatorStats {
        allocated_bytes: read("allocated", mibs.allocated.read())?,
        active_bytes: read("active", mibs.active.read())?,
        resident_bytes: read("resident", mibs.resident.read())?,
        retained_bytes: read("retained", mibs.retained.read())?,
    })
}

/// Bytes the probe in [`in_use`] allocates; large enough that no allocator serves it from a
/// cache without counting it.
const PROBE_BYTES: usize = 64 * 1024;

/// Whether allocations through the global allocator go to this jemalloc.
///
/// `stats.allocated > 0` is not a test of that: jemalloc allocates its own per-thread cache
/// (56 KiB) on the first `mallctl` call even when nothing else uses it. Instead this
/// allocates through the global allocator and watches jemalloc's per-thread byte counter.
pub fn in_use() -> bool {
    let Ok(counter) = tikv_jemalloc_ctl::thread::allocatedp::read() else {
        return false;
    };
    let before = counter.get();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(PROBE_BYTES)));
    counter.get().wrapping_sub(before) >= PROBE_BYTES as u64
}

/// Returns the dirty pages of every arena to the OS (`arena.<all>.purge`).
///
/// Takes tens of milliseconds with hundreds of MiB dirty; about a microsecond with nothing.
pub fn purge_all_arenas() -> Result<(), String> {
    let code = crate::sys::jemalloc::mallctl_void(ARENAS_ALL_PURGE);
    if code == 0 {
        Ok(())
    } else {
        Err(format!("mallctl arena.4096.purge failed with code {code}"))
    }
}

/// Sets `dirty_decay_ms` on every existing arena (and the default for new ones); returns how
/// many arenas were changed.
pub fn set_dirty_decay_ms(ms: isize) -> Result<u32, String> {
    let narenas = arenas::narenas::read().map_err(|e| format!("jemalloc arenas.narenas: {e}"))?;
    let mut changed = 0;
    for arena in 0..narenas {
        match crate::sys::jemalloc::write_dirty_decay_ms(Some(arena), ms) {
            Ok(()) => changed += 1,
            // Arenas that were never initialised answer EFAULT; skip them.
            Err(_) => continue,
        }
    }
    crate::sys::jemalloc::write_dirty_decay_ms(None, ms)
        .map_err(|e| format!("jemalloc arenas.dirty_decay_ms: {e}"))?;
    Ok(changed)
}
