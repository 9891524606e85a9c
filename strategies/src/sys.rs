//! Every `unsafe` block and libc call of the strategies crate, each behind a safe function
//! with a `SAFETY:` comment on why the call is sound. The rest of the crate denies
//! `unsafe_code`.
#![allow(unsafe_code)]

use std::io;

/// `kill(pid, signal)`: sends `signal` to the one process `pid`. Pids that would address a
/// process group or every process (0 and anything above `i32::MAX`, which would turn
/// negative) are refused with `InvalidInput`.
pub(crate) fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let Some(target) = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{pid} is not a process id"),
        ));
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(target, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `kill(-pgid, SIGKILL)`: kills the whole process group `pgid`. Ids 0 and 1 (the caller's
/// own group, init) and negative ones are ignored.
pub(crate) fn kill_group(pgid: libc::pid_t) {
    if pgid > 1 {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; -pgid (a
        // negative number other than -1) addresses exactly that group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// `sysconf(_SC_PAGESIZE)`, if the system says.
pub(crate) fn page_size() -> Option<u64> {
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0)
}

/// jemalloc's `mallctl` calls.
#[cfg(feature = "jemalloc")]
pub(crate) mod jemalloc {
    use std::ffi::CStr;
    use std::ptr;

    /// Runs a jemalloc control that takes no input and returns no output (such as
    /// `arena.<all>.purge`); returns mallctl's code (0: success).
    pub(crate) fn mallctl_void(name: &CStr) -> i32 {
        // SAFETY: a control without input or output takes null pointer pairs, which mallctl
        // documents as valid; `name` is NUL-terminated and alive for the call. A control
        // that does expect a value reports EINVAL rather than reading through the nulls.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                0,
            )
        }
    }

    /// Writes `ms` to `arena.<arena>.dirty_decay_ms`, or with `None` to
    /// `arenas.dirty_decay_ms` (the default for arenas created later).
    pub(crate) fn write_dirty_decay_ms(
        arena: Option<u32>,
        ms: isize,
    ) -> Result<(), tikv_jemalloc_ctl::Error> {
        let name = match arena {
            Some(arena) => format!("arena.{arena}.dirty_decay_ms\0"),
            None => "arenas.dirty_decay_ms\0".to_owned(),
        };
        // SAFETY: every `*.dirty_decay_ms` control is an ssize_t, which isize matches; the
        // name is NUL-terminated as `raw::write` requires.
        unsafe { tikv_jemalloc_ctl::raw::write(name.as_bytes(), ms) }
    }
}
