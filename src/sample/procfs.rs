//! Reading `/proc`: the watched process (`/proc/<pid>/…`) and the host (`/proc/stat`,
//! `/proc/loadavg`, `/proc/meminfo`).
//!
//! Files read every sample are opened once and re-read from offset 0 with `pread`, which costs
//! a fraction of reopening them. The parsers are pure functions over the file's text and return
//! `None` on anything malformed.

use std::borrow::Cow;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `/proc` directory of the process hosting the agent.
pub(crate) const SELF_DIR: &str = "/proc/self";

/// The `/proc` directory of the process `pid`.
pub(crate) fn pid_dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

/// A `/proc` file kept open and re-read from the start on every call.
#[derive(Debug)]
pub(crate) struct ProcFile {
    file: File,
    buf: Vec<u8>,
}

impl ProcFile {
    pub(crate) fn open(path: &Path, capacity: usize) -> Option<Self> {
        let file = File::open(path).ok()?;
        Some(ProcFile {
            file,
            buf: vec![0; capacity],
        })
    }

    /// The file's text, at most `buf.len()` bytes of it; `limit_to_buffer` says whether a
    /// truncated read is acceptable (the caller needs only the start) or the buffer must grow.
    pub(crate) fn read(&mut self, limit_to_buffer: bool) -> Option<Cow<'_, str>> {
        self.read_on(0, limit_to_buffer)
    }

    /// The file's text as [`ProcFile::read`] gives it, in one `pread` where the file fits the
    /// buffer: for a file the kernel writes in one piece (one `show` of a seq file, as
    /// `statm`, a cgroup's usage file and its `memory.stat`), a read shorter than the buffer
    /// is all of it, and `read`'s second call, which returns nothing, is not needed. Not for
    /// a file of many records (`cgroup.procs`), where a short read is not the end.
    pub(crate) fn read_whole(&mut self, limit_to_buffer: bool) -> Option<Cow<'_, str>> {
        let first = loop {
            match self.file.read_at(&mut self.buf, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        };
        if first < self.buf.len() {
            return Some(text(&self.buf[..first]));
        }
        self.read_on(first, limit_to_buffer)
    }

    /// Reads on from `len` bytes already in the buffer until a read returns nothing.
    fn read_on(&mut self, mut len: usize, limit_to_buffer: bool) -> Option<Cow<'_, str>> {
        loop {
            if len == self.buf.len() {
                if limit_to_buffer {
                    break;
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.file.read_at(&mut self.buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
        Some(text(&self.buf[..len]))
    }
}

/// A file's bytes as text; only a `comm` with invalid UTF-8 makes this allocate. Checked by
/// `from_utf8` first, which takes ASCII a word at a time (`from_utf8_lossy` goes by chunks).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Reads one process's `/proc/<pid>` files. Today the sampler points it at `/proc/self`; a
/// sidecar points it at `/proc/<pid>` of its target.
#[derive(Debug)]
pub(crate) struct ProcessReader {
    dir: PathBuf,
    statm: Option<ProcFile>,
    /// `/proc/<pid>/stat`; `None` for this process, whose CPU time comes from `getrusage`
    /// (0.3 µs and microsecond resolution, against 2–5 µs and 10 ms clock ticks).
    stat: Option<ProcFile>,
    page_size: u64,
    ticks_per_second: f64,
    /// The process's age when this reader was opened, and when that was.
    age_at_open: Option<(Duration, Instant)>,
}

impl ProcessReader {
    /// Opens what it can under `dir` (`/proc/self` or `/proc/<pid>`); unreadable files make
    /// their signals absent.
    pub(crate) fn open(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let ticks_per_second = clock_ticks_per_second();
        let is_self = dir == Path::new(SELF_DIR);
        let mut stat = ProcFile::open(&dir.join("stat"), 1024);
        let start_ticks = stat
            .as_mut()
            .and_then(|f| f.read(false).and_then(|text| parse_stat_start_ticks(&text)));
        let host_uptime = fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|text| parse_uptime(&text));
        let started_after_boot =
            start_ticks.and_then(|t| Duration::try_from_secs_f64(t as f64 / ticks_per_second).ok());
        let age_at_open = match (started_after_boot, host_uptime) {
            (Some(started), Some(host)) => Some((host.saturating_sub(started), Instant::now())),
            _ => None,
        };
        ProcessReader {
            statm: ProcFile::open(&dir.join("statm"), 256),
            stat: if is_self { None } else { stat },
            dir,
            page_size: perfpilot_strategies::proc_self::page_size(),
            ticks_per_second,
            age_at_open,
        }
    }

    /// The process's `/proc` directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long the process has been running at `now`.
    pub(crate) fn uptime(&self, now: Instant) -> Option<Duration> {
        self.age_at_open
            .map(|(age, opened)| age + now.saturating_duration_since(opened))
    }

    /// Virtual size and resident set size, in bytes.
    pub(crate) fn memory(&mut self) -> Option<Statm> {
        let text = self.statm.as_mut()?.read(false)?;
        let pages = parse_statm(&text)?;
        Some(Statm {
            virtual_bytes: pages.virtual_bytes.checked_mul(self.page_size)?,
            resident_bytes: pages.resident_bytes.checked_mul(self.page_size)?,
        })
    }

    /// Whether the process still runs: its `stat` file reads (an exited process's files fail
    /// to read even if its pid is reused) and it is not a zombie waiting for its parent.
    /// Always true for this process.
    pub(crate) fn is_running(&mut self) -> bool {
        let Some(stat) = self.stat.as_mut() else {
            return self.dir == Path::new(SELF_DIR);
        };
        stat.read(false)
            .and_then(|text| parse_stat_state(&text))
            .is_some_and(state_is_running)
    }

    /// CPU time (user + system) the process has used since it started.
    #[cfg(test)]
    pub(crate) fn cpu_time(&mut self) -> Option<Duration> {
        self.usage().and_then(|usage| usage.cpu)
    }

    /// CPU time and major page faults since the process started, from one read of
    /// `/proc/<pid>/stat` (this process: one `getrusage`).
    pub(crate) fn usage(&mut self) -> Option<Usage> {
        match self.stat.as_mut() {
            Some(stat) => {
                let text = stat.read(false)?;
                let cpu = parse_stat_cpu_ticks(&text).and_then(|ticks| {
                    Duration::try_from_secs_f64(ticks as f64 / self.ticks_per_second).ok()
                });
                Some(Usage {
                    cpu,
                    major_faults: parse_stat_major_faults(&text),
                })
            }
            None if self.dir == Path::new(SELF_DIR) => self_usage(),
            None => None,
        }
    }
}

/// What a process has used since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// CPU time, user + system.
    pub(crate) cpu: Option<Duration>,
    /// Major page faults: pages it waited to have read from disk or swap.
    pub(crate) major_faults: Option<u64>,
}

/// This process's user + system CPU time and major page faults from
/// `getrusage(RUSAGE_SELF)`.
fn self_usage() -> Option<Usage> {
    let (cpu, major_faults) = crate::sys::self_rusage()?;
    Some(Usage {
        cpu: Some(cpu),
        major_faults,
    })
}

/// `sysconf(_SC_CLK_TCK)`, the unit of the times in `/proc/<pid>/stat`; 100 if unknown.
fn clock_ticks_per_second() -> f64 {
    crate::sys::clock_ticks_per_second().map_or(100.0, |ticks| ticks as f64)
}

/// Reads the host-wide files: `/proc/stat` and `/proc/loadavg`.
#[derive(Debug)]
pub(crate) struct HostReader {
    stat: Option<ProcFile>,
    loadavg: Option<ProcFile>,
    previous_cpu: Option<CpuTimes>,
}

impl HostReader {
    pub(crate) fn open() -> Self {
        HostReader {
            // Only the first line (the `cpu` totals) is needed; 512 bytes always hold it.
            stat: ProcFile::open(Path::new("/proc/stat"), 512),
            loadavg: ProcFile::open(Path::new("/proc/loadavg"), 128),
            previous_cpu: None,
        }
    }

    /// Busy share of all host CPUs since the previous call; `None` on the first call.
    pub(crate) fn cpu_ratio(&mut self) -> Option<f64> {
        let current = self
            .stat
            .as_mut()
            .and_then(|f| f.read(true).and_then(|text| parse_proc_stat_cpu(&text)));
        let previous = std::mem::replace(&mut self.previous_cpu, current);
        current?.busy_ratio_since(previous?)
    }

    /// Load average over 1, 5 and 15 minutes.
    pub(crate) fn load_average(&mut self) -> Option<[f64; 3]> {
        parse_loadavg(&self.loadavg.as_mut()?.read(false)?)
    }
}

/// Total RAM of the host in bytes, from `/proc/meminfo`.
pub(crate) fn total_ram_bytes() -> Option<u64> {
    parse_meminfo_total(&fs::read_to_string("/proc/meminfo").ok()?)
}

/// `/proc/<pid>/statm` sizes. [`parse_statm`] returns them in pages; the reader in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Statm {
    /// Total program size (`size`).
    pub(crate) virtual_bytes: u64,
    /// Resident set size (`resident`).
    pub(crate) resident_bytes: u64,
}

/// Parses `/proc/<pid>/statm` into sizes in pages.
pub(crate) fn parse_statm(text: &str) -> Option<Statm> {
    let mut fields = text.split_ascii_whitespace();
    let virtual_pages = fields.next()?.parse().ok()?;
    let resident_pages = fields.next()?.parse().ok()?;
    Some(Statm {
        virtual_bytes: virtual_pages,
        resident_bytes: resident_pages,
    })
}

/// The fields of `/proc/<pid>/stat` after `comm`, starting with field 3 (`state`).
///
/// `comm` is in parentheses and may itself contain spaces and `)`, so the split is at the last
/// `)` of the line.
fn stat_fields_after_comm(text: &str) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    let (head, rest) = text.rsplit_once(')')?;
    head.contains('(').then(|| rest.split_ascii_whitespace())
}

/// `state` (field 3) of `/proc/<pid>/stat`: `R` running, `S` sleeping, `Z` zombie...
pub(crate) fn parse_stat_state(text: &str) -> Option<char> {
    stat_fields_after_comm(text)?.next()?.chars().next()
}

/// Whether a `stat` state is a live process: not a zombie (`Z`) nor dead (`X`, `x`).
pub(crate) fn state_is_running(state: char) -> bool {
    !matches!(state, 'Z' | 'X' | 'x')
}

/// `utime + stime` (fields 14 and 15) of `/proc/<pid>/stat`, in clock ticks.
pub(crate) fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    // Field 3 is the first after comm, so field N is at index N - 3.
    let mut fields = stat_fields_after_comm(text)?.skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// `majflt` (field 12) of `/proc/<pid>/stat`: major page faults since the process started.
pub(crate) fn parse_stat_major_faults(text: &str) -> Option<u64> {
    stat_fields_after_comm(text)?.nth(12 - 3)?.parse().ok()
}

/// `starttime` (field 22) of `/proc/<pid>/stat`: when the process started, in clock ticks
/// since boot.
pub(crate) fn parse_stat_start_ticks(text: &str) -> Option<u64> {
    stat_fields_after_comm(text)?.nth(22 - 3)?.parse().ok()
}

/// Host CPU time from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Every state except idle and iowait.
    pub(crate) busy: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal (guest time is already
    /// counted in user and nice).
    pub(crate) total: u64,
}

impl CpuTimes {
    /// Busy share of the CPU time elapsed since `earlier`, 0..1; `None` if none elapsed.
    pub(crate) fn busy_ratio_since(self, earlier: CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|&t| t > 0)?;
        // iowait may go backwards on some kernels, so busy can too: saturate.
        let busy = self.busy.saturating_sub(earlier.busy);
        Some((busy as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// Parses the first line of `/proc/stat` (`cpu  user nice system idle iowait irq softirq
/// steal guest guest_nice`). Kernels before 2.6.33 print fewer columns; missing ones count 0,
/// but the first four are required.
pub(crate) fn parse_proc_stat_cpu(text: &str) -> Option<CpuTimes> {
    let line = text.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let mut values = [0u64; 8];
    let mut count = 0;
    for (slot, field) in values.iter_mut().zip(fields) {
        *slot = field.parse().ok()?;
        count += 1;
    }
    if count < 4 {
        return None;
    }
    let total = values.iter().try_fold(0u64, |sum, &v| sum.checked_add(v))?;
    let idle = values[3].checked_add(values[4])?;
    Some(CpuTimes {
        busy: total.checked_sub(idle)?,
        total,
    })
}

/// The three load averages at the start of `/proc/loadavg`.
pub(crate) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_ascii_whitespace();
    let mut parse = || -> Option<f64> {
        let value: f64 = fields.next()?.parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    Some([parse()?, parse()?, parse()?])
}

/// The host's uptime, the first field of `/proc/uptime` (seconds, with a fraction).
pub(crate) fn parse_uptime(text: &str) -> Option<Duration> {
    let seconds: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// `MemTotal` of `/proc/meminfo`, in bytes (the file says kB, meaning KiB).
pub(crate) fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_ascii_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "19230 (cat) R 19223 19223 17355 0 -1 4194304 101 0 5 0 7 3 0 0 20 0 1 0 \
        50881 3133440 412 18446744073709551615 94300632174592 94300632194473 140721298552720 0 \
        0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";

    #[test]
    fn statm_gives_virtual_and_resident_pages() {
        let statm = parse_statm("3133 412 350 5 0 120 0\n").unwrap();
        assert_eq!(statm.virtual_bytes, 3133);
        assert_eq!(statm.resident_bytes, 412);
        assert_eq!(parse_statm(""), None);
        assert_eq!(parse_statm("3133"), None);
        assert_eq!(parse_statm("3133 x 350"), None);
        assert_eq!(parse_statm("-1 412"), None);
    }

    #[test]
    fn stat_gives_cpu_and_start_ticks() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(10));
        assert_eq!(parse_stat_major_faults(STAT), Some(5));
        assert_eq!(parse_stat_major_faults("19230 (cat) R 1 2 3"), None);
        assert_eq!(parse_stat_start_ticks(STAT), Some(50881));
        assert_eq!(parse_stat_state(STAT), Some('R'));
        assert!(state_is_running('R') && state_is_running('S') && state_is_running('D'));
        let zombie = STAT.replace(") R ", ") Z ");
        assert_eq!(parse_stat_state(&zombie), Some('Z'));
        assert!(!state_is_running('Z') && !state_is_running('X'));
    }

    #[test]
    fn stat_comm_may_hold_spaces_and_parentheses() {
        let tricky = STAT.replace("(cat)", "(my) (worker 1))");
        assert_eq!(parse_stat_cpu_ticks(&tricky), Some(10));
        assert_eq!(parse_stat_start_ticks(&tricky), Some(50881));
        let empty = STAT.replace("(cat)", "()");
        assert_eq!(parse_stat_cpu_ticks(&empty), Some(10));
    }

    #[test]
    fn malformed_stat_is_none() {
        assert_eq!(parse_stat_cpu_ticks(""), None);
        assert_eq!(parse_stat_cpu_ticks("19230 cat R 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("19230 (cat) R 19223"), None);
        assert_eq!(parse_stat_start_ticks("19230 (cat) R 19223"), None);
        assert_eq!(parse_stat_cpu_ticks(&STAT.replace(" 7 3 ", " 7 x ")), None);
        assert_eq!(parse_stat_cpu_ticks("no open paren) R 0 0 0"), None);
    }

    #[test]
    fn proc_stat_cpu_line_splits_busy_from_idle() {
        let text = "cpu  44647 0 7598 48740 239 0 32 54 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let times = parse_proc_stat_cpu(text).unwrap();
        assert_eq!(times.total, 44647 + 7598 + 48740 + 239 + 32 + 54);
        assert_eq!(times.busy, 44647 + 7598 + 32 + 54);
        let old_kernel = parse_proc_stat_cpu("cpu 10 0 10 80\n").unwrap();
        assert_eq!((old_kernel.busy, old_kernel.total), (20, 100));
        let later = CpuTimes {
            busy: old_kernel.busy + 30,
            total: old_kernel.total + 100,
        };
        assert_eq!(later.busy_ratio_since(old_kernel), Some(0.3));
        assert_eq!(old_kernel.busy_ratio_since(old_kernel), None);
    }

    #[test]
    fn malformed_proc_stat_is_none() {
        assert_eq!(parse_proc_stat_cpu(""), None);
        assert_eq!(parse_proc_stat_cpu("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(parse_proc_stat_cpu("cpu 1 2 3\n"), None);
        assert_eq!(parse_proc_stat_cpu("cpu 1 2 x 4 5\n"), None);
        assert_eq!(parse_proc_stat_cpu("intr 1 2 3 4\ncpu 1 2 3 4\n"), None);
    }

    #[test]
    fn loadavg_gives_three_averages() {
        assert_eq!(
            parse_loadavg("0.52 0.98 0.53 3/106 19231\n"),
            Some([0.52, 0.98, 0.53])
        );
        assert_eq!(parse_loadavg("0.52 0.98"), None);
        assert_eq!(parse_loadavg("0.52 abc 0.53 3/106"), None);
        assert_eq!(parse_loadavg("NaN 1 1"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn uptime_and_meminfo() {
        assert_eq!(
            parse_uptime("508.81 487.40\n"),
            Some(Duration::from_millis(508_810))
        );
        assert_eq!(parse_uptime("-1 2"), None);
        assert_eq!(parse_uptime(""), None);
        let meminfo = "MemTotal:       24684092 kB\nMemFree:        19379728 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(24684092 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 12\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: x kB\n"), None);
    }

    #[test]
    fn reads_this_process_through_its_pid_directory_too() {
        let mut by_pid = ProcessReader::open(format!("/proc/{}", std::process::id()));
        assert!(
            by_pid.stat.is_some(),
            "a pid directory is read through its stat file"
        );
        let ticks_path = by_pid.cpu_time().expect("cpu time from /proc/<pid>/stat");
        let mut this = ProcessReader::open(SELF_DIR);
        let rusage = this.cpu_time().expect("cpu time from getrusage");
        // Tick resolution (10 ms) and the time between the two reads separate them.
        assert!(
            rusage + Duration::from_millis(50) >= ticks_path,
            "{rusage:?} {ticks_path:?}"
        );
        let rss = by_pid.memory().unwrap().resident_bytes;
        assert!(rss > 0 && rss.is_multiple_of(by_pid.page_size));
        let uptime = by_pid.uptime(Instant::now()).unwrap();
        assert!(uptime < Duration::from_secs(3600), "{uptime:?}");
    }
}
