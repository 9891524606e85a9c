//! Every `unsafe` block and libc call of the agent, each behind a safe function with a
//! `SAFETY:` comment on why the call is sound. The rest of the crate denies `unsafe_code`.
//! (The strategies crate has its own, `perfpilot_strategies`'s private `sys`.)
#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

/// The jemalloc options the `perfpilot` binary starts with (its `main.rs` exports them as
/// `_rjem_malloc_conf`, which jemalloc reads at start-up; `_RJEM_MALLOC_CONF` in the
/// environment still overrides them). Library users keep their own allocator settings.
///
/// - `narenas:1`: one arena instead of four per CPU. The agent's few threads allocate little,
///   so they do not contend for it, and reading jemalloc's statistics (every sample refreshes
///   them, walking every arena) and each arena's metadata cost once instead of once per arena.
/// - `tcache:false`: no per-thread caches of freed blocks. The agent allocates little and from
///   few threads, so the one arena's lock is hardly ever contended, and the caches' own
///   memory and the blocks they hold back (about 130 KiB of the idle agent's heap, measured
///   with `_RJEM_MALLOC_CONF`) are not spent.
pub const MALLOC_CONF: &std::ffi::CStr = c"narenas:1,tcache:false";

/// A C string pointer that may live in a `static`, for exporting jemalloc's start-up options
/// (jemalloc declares the symbol `const char *`):
///
/// ```ignore
/// #[unsafe(export_name = "_rjem_malloc_conf")]
/// static MALLOC_CONF: perfpilot::cli::MallocConf = perfpilot::cli::MallocConf::AGENT;
/// ```
#[derive(Debug)]
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

impl MallocConf {
    /// [`MALLOC_CONF`], the options the `perfpilot` binary starts with.
    pub const AGENT: MallocConf = MallocConf(MALLOC_CONF.as_ptr());
}

// SAFETY: it points to an immutable, 'static, NUL-terminated string, read but never written.
unsafe impl Sync for MallocConf {}

/// This process's user + system CPU time and major page faults, from
/// `getrusage(RUSAGE_SELF)`; `None` if the call fails or a value is out of range.
pub(crate) fn self_rusage() -> Option<(Duration, Option<u64>)> {
    // SAFETY: an all-zero `rusage` is a valid value (integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let micros = |tv: libc::timeval| -> Option<u64> {
        let secs = u64::try_from(tv.tv_sec).ok()?;
        let usecs = u64::try_from(tv.tv_usec).ok()?;
        secs.checked_mul(1_000_000)?.checked_add(usecs)
    };
    let total = micros(usage.ru_utime)?.checked_add(micros(usage.ru_stime)?)?;
    Some((
        Duration::from_micros(total),
        u64::try_from(usage.ru_majflt).ok(),
    ))
}

/// `sysconf(_SC_CLK_TCK)`, the unit of the times in `/proc/<pid>/stat`, if the system says.
pub(crate) fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

/// `sysconf(_SC_NPROCESSORS_ONLN)`, the CPUs online, if the system says.
pub(crate) fn online_cpus() -> Option<u64> {
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u64::try_from(online).ok().filter(|&n| n > 0)
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), if the clock answers.
#[cfg(test)]
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    // SAFETY: an all-zero timespec is valid; clock_gettime writes into it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    ))
}

/// Whether the process runs as root (effective uid 0).
#[cfg(test)]
pub(crate) fn is_root() -> bool {
    effective_uid() == 0
}

/// The process's effective uid: whose files it may trust.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Gives SIGPIPE its default action back (the Rust runtime ignores it), so that a command
/// whose output is piped into one that stops reading (`perfpilot replay … | head`) ends
/// quietly, as Unix tools do, instead of failing on the broken pipe. Only for the one-shot
/// commands: the agent itself keeps SIGPIPE ignored, since a peer closing a socket must not
/// end it.
pub(crate) fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler and touches no memory of ours; it is
    // called on the main thread before any output.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `shutdown(fd, SHUT_RDWR)`: ends both directions of a connected socket; its peer sees the
/// end at once. The caller must know `fd` is still the socket it means (not closed and
/// reused): a stale fd is no memory hazard, but would shut another socket down.
pub(crate) fn shutdown_socket(fd: RawFd) -> io::Result<()> {
    // SAFETY: `shutdown` takes plain integers and touches no memory of ours.
    if unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs this process may run on (`sched_getaffinity`), at most `limit` of them; empty if
/// the call fails.
pub(crate) fn allowed_cpus(limit: usize) -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed, written by the call.
    let status =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if status != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .take(limit)
        .collect()
}

/// Pins the calling thread to `cpu` (`sched_setaffinity`); false if `cpu` is out of range or
/// the call fails.
pub(crate) fn pin_current_thread(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above); `set` is ours.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// `timeout` as `poll(2)`'s milliseconds, rounded up: a remaining 0.6 ms must not become 0,
/// which returns at once and turns a wait for the next read into a busy loop until it is due
/// (it cost an armed 20 ms watch 3.8 % of a core instead of 0.35 %).
fn poll_timeout_ms(timeout: Duration) -> libc::c_int {
    libc::c_int::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
}

/// `poll(2)` for `POLLPRI` on every file, up to `timeout`: true when one reported (a PSI
/// trigger fired), false on timeout or an interrupted call; an error when a file reported
/// `POLLERR` or `POLLNVAL`.
pub(crate) fn poll_pri(files: &[File], timeout: Duration) -> io::Result<bool> {
    let mut fds: Vec<libc::pollfd> = files
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        })
        .collect();
    let timeout_ms = poll_timeout_ms(timeout);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs
    // for the duration of the call, and every fd stays open (borrowed from `files`).
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(error)
        };
    }
    if fds
        .iter()
        .any(|f| f.revents & (libc::POLLERR | libc::POLLNVAL) != 0)
    {
        return Err(io::Error::other("the pressure file reported an error"));
    }
    Ok(fds.iter().any(|f| f.revents & libc::POLLPRI != 0))
}

/// A new `NETLINK_SOCK_DIAG` socket (datagram, close-on-exec) in the calling thread's
/// network namespace.
pub(crate) fn sock_diag_socket() -> io::Result<OwnedFd> {
    // SAFETY: `socket` takes no pointers; a negative return is an error, checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created by this call and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread into the network namespace of `ns` (a `/proc/<pid>/ns/net`
/// file) with `setns`; needs `CAP_SYS_ADMIN`. Meant for a short-lived thread of its own.
pub(crate) fn enter_net_namespace(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open file for the whole call; `setns` takes plain integers and
    // changes only the calling thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `message` on netlink socket `fd` to the kernel, retrying when interrupted.
pub(crate) fn netlink_send_to_kernel(fd: BorrowedFd<'_>, message: &[u8]) -> io::Result<()> {
    // SAFETY: an all-zero `sockaddr_nl` is valid (the kernel as destination).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    loop {
        // SAFETY: the pointers and lengths are those of `message` and `kernel`, both alive
        // and unaliased for the call; `fd` is an open socket (borrowed).
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one message from socket `fd` into `buf` (`recv`), retrying when interrupted;
/// returns its length.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is writable for `buf.len()` bytes and exclusively borrowed during
        // the call; `fd` is an open socket (borrowed).
        let received = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if received >= 0 {
            return Ok(received as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The CPU's time-stamp counter (`rdtsc`): the value `quanta::Clock::raw` reads for its TSC
/// clock, here inlined into the latency layer (quanta's is an out-of-line call, about 2 ns a
/// read on this machine).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a register; every x86_64 CPU has it, and it touches no memory.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A new eventfd (counter 0, non-blocking, close-on-exec): a file whose counter a write adds
/// to (waking its pollers) and a read takes back to 0. Written and read through [`File`].
pub(crate) fn eventfd() -> io::Result<File> {
    // SAFETY: `eventfd` takes plain integers; a negative return is an error, checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by this call and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What [`poll_ready`] waits for on one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollFor {
    /// Data to read (`POLLIN`): an eventfd whose counter is not 0.
    Readable,
    /// A priority event (`POLLPRI`, or `POLLERR` as kernfs reports a changed file): a cgroup
    /// v2 file such as `memory.events` that changed.
    Priority,
}

/// `poll(2)` on `files` up to `timeout`: for each file, whether it reported what it was
/// polled for (a `None` is skipped, and reports nothing). An interrupted call reports
/// nothing; an error only when the call fails. Nothing is allocated: the fast watch waits
/// here between reads, 50 times a second when armed.
pub(crate) fn poll_ready<const N: usize>(
    files: [Option<(BorrowedFd<'_>, PollFor)>; N],
    timeout: Duration,
) -> io::Result<[bool; N]> {
    let mut fds = files.map(|file| libc::pollfd {
        // poll(2) skips a negative fd and reports nothing for it.
        fd: file.map_or(-1, |(fd, _)| fd.as_raw_fd()),
        events: match file {
            Some((_, PollFor::Readable)) => libc::POLLIN,
            Some((_, PollFor::Priority)) => libc::POLLPRI,
            None => 0,
        },
        revents: 0,
    });
    let timeout_ms = poll_timeout_ms(timeout);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `N` pollfd structs for the
    // duration of the call, and every fd in it stays open (borrowed by `files`).
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted {
            Ok([false; N])
        } else {
            Err(error)
        };
    }
    let mut reported = [false; N];
    for ((fd, file), reported) in fds.iter().zip(files).zip(&mut reported) {
        *reported = match file {
            Some((_, PollFor::Readable)) => fd.revents & libc::POLLIN != 0,
            Some((_, PollFor::Priority)) => fd.revents & (libc::POLLPRI | libc::POLLERR) != 0,
            None => false,
        };
    }
    Ok(reported)
}

/// Where a state file that cannot be used is moved, under `state_dir`.
pub(crate) const REFUSED_DIR: &str = "refused";

/// Writes `bytes` to `path` in `dir` atomically: to `temporary` (0600), synced, renamed into
/// place, and the directory synced. A failed write leaves no temporary file.
pub(crate) fn write_atomically(
    dir: &Path,
    path: &Path,
    temporary: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(temporary, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(temporary);
    }
    written
}

/// Moves a state file that cannot be used to `state_dir/refused/` and logs why.
pub(crate) fn move_aside(state_dir: &Path, path: &Path, why: &str) {
    let aside = state_dir.join(REFUSED_DIR);
    let moved = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&aside)
        .and_then(|()| {
            let name = path.file_name().unwrap_or_default();
            let target = aside.join(name);
            fs::rename(path, &target).map(|()| target)
        });
    match moved {
        Ok(target) => tracing::warn!(
            file = %path.display(),
            moved_to = %target.display(),
            reason = why,
            "refused a state file: moved aside, starting without it"
        ),
        Err(error) => tracing::warn!(
            file = %path.display(),
            reason = why,
            %error,
            "refused a state file, and could not move it aside"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{poll_ready, poll_timeout_ms};

    #[test]
    fn poll_timeouts_round_up_to_the_millisecond() {
        assert_eq!(poll_timeout_ms(Duration::ZERO), 0);
        assert_eq!(poll_timeout_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_timeout_ms(Duration::from_micros(600)), 1);
        assert_eq!(poll_timeout_ms(Duration::from_millis(20)), 20);
        assert_eq!(poll_timeout_ms(Duration::from_micros(20_001)), 21);
        assert_eq!(poll_timeout_ms(Duration::MAX), libc::c_int::MAX);
    }

    /// A `None` is skipped; a file reports what it was polled for: an eventfd written to is
    /// readable, one not written to is not.
    #[test]
    fn poll_ready_reports_each_file_and_skips_none() {
        use std::io::Write;
        use std::os::fd::{AsFd, BorrowedFd};
        let (written, quiet) = (super::eventfd().unwrap(), super::eventfd().unwrap());
        (&mut &written).write_all(&1u64.to_ne_bytes()).unwrap();
        fn readable(file: &std::fs::File) -> Option<(BorrowedFd<'_>, super::PollFor)> {
            Some((file.as_fd(), super::PollFor::Readable))
        }
        let ready = poll_ready(
            [readable(&quiet), None, readable(&written)],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(ready, [false, false, true]);
        let ready = poll_ready([readable(&quiet), None], Duration::from_millis(1)).unwrap();
        assert_eq!(ready, [false, false], "nothing written: the timeout");
    }

    /// Waiting for a deadline as the fast watch does (poll for the time left, again until it
    /// has passed) takes a call or two, not a busy loop through the last millisecond.
    #[test]
    fn waiting_out_a_deadline_does_not_spin() {
        let deadline = Instant::now() + Duration::from_millis(20);
        let mut calls = 0;
        while let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
        {
            poll_ready::<0>([], left).unwrap();
            calls += 1;
            assert!(calls < 100, "{calls} polls and the deadline has not passed");
        }
        assert!(calls <= 2, "{calls} polls to wait out 20 ms");
    }
}
