//! Sample: the first step of the loop. A [`Sampler`] turns `/proc`, the cgroup filesystem,
//! jemalloc and the tokio runtime into one [`Snapshot`].
//!
//! The watched process is the agent's own, or in sidecar mode a [`Target`] found by pid,
//! pidfile or listening port ([`Sampler::for_target`]); `<pid>` below is either. A cgroup
//! target is a group of processes: what is read of it is listed in the `group` module.
//!
//! What it fills in, and from where (every signal is `None` where its source cannot be read:
//! not Linux, no `/proc`, no cgroup filesystem, no runtime):
//!
//! | field | source | unit |
//! |---|---|---|
//! | `uptime` | `/proc/<pid>/stat` `starttime` against `/proc/uptime`, read once | duration |
//! | `rss_bytes`, `virtual_bytes` | `/proc/<pid>/statm` × page size | bytes |
//! | `memory_limit_bytes`, `memory_limit_source` | the smallest of the cgroup limit, the budget, total RAM (below) | bytes |
//! | `memory_usage_ratio` | `memory_usage_bytes / memory_limit_bytes` | 0..1, above 1 when over |
//! | `allocator` | jemalloc `stats.*`, when jemalloc is the global allocator (probed once) | bytes |
//! | `process_cpu_ratio` | user + system CPU time over the window ÷ (window × available CPUs) | 0..1 (can briefly exceed 1) |
//! | `agent_cpu_ratio` | the agent's own process: `process_cpu_ratio` in self mode, `getrusage(RUSAGE_SELF)` the same way in sidecar mode | 0..1 |
//! | `system_cpu_ratio` | first line of `/proc/stat`, busy ÷ total over the window | 0..1 |
//! | `load_average` | `/proc/loadavg` | runnable tasks |
//! | `open_fds` | entries of `/proc/<pid>/fd` (sidecar mode only) | count |
//! | `major_faults_per_second` | change of `majflt` (field 12 of `/proc/<pid>/stat`; for the agent itself `getrusage`) over the window | per second |
//! | `open_connections` | sockets of `/proc/<pid>/fd` in `/proc/<pid>/net/tcp{,6}`, ESTABLISHED on a port the target listens on (sidecar mode only) | count |
//! | `memory_usage_bytes`, `memory_usage_source` | under a cgroup's limit, that cgroup's working set (`cgroup_working_set`: v1 `memory.usage_in_bytes` less `total_inactive_file`, v2 `memory.current` less `inactive_file`); else `rss_bytes` (`rss`); for a cgroup target its working set, or without the memory controller the summed RSS (`summed_rss`) | bytes |
//! | `memory_usage_raw_ratio` | the same cgroup's usage with its page cache (`memory.usage_in_bytes`, `memory.current`) over the limit; else as `memory_usage_ratio` | 0..1, above 1 when over |
//! | `oom_kills` | the process's own memory cgroup: v1 `memory.oom_control`, v2 `memory.events` `oom_kill` | count |
//! | `process_count` | lines of `cgroup.procs` (cgroup target only) | count |
//! | `pressure.system` | `/proc/pressure/{memory,cpu,io}` (PSI), opened once | ratios, µs |
//! | `pressure.cgroup` | the cgroup target's or the watched process's cgroup v2 `*.pressure`, unless it is the root | ratios, µs |
//! | `runtime` | [`tokio_metrics::RuntimeMonitor`] of the runtime [`Sampler::new`] ran in | see [`RuntimeStats`](perfpilot_strategies::RuntimeStats) |
//!
//! The window of the ratios is the time since the previous [`Sampler::sample`]; the first
//! sample has none, so its CPU ratios are `None`. Requests, latency, throughput and error
//! rate are left `None` here (and connections, outside sidecar mode); their sources are
//! registered elsewhere (the latency probe: [`crate::probe`]).
//!
//! # Memory limit
//!
//! The limit is the smallest of: the cgroup limit (v2 `memory.max` or `memory.high`, or v1
//! `memory.limit_in_bytes`, the tightest on the path from the process's cgroup to the root),
//! the configured [`SamplerSettings::memory_budget`], and the host's total RAM. A budget below
//! the container's limit is what the user asked for; a cgroup limit above the RAM cannot be
//! reached. Equal limits are reported as `Cgroup`, then `Budget`. The cgroup files are read
//! again every 30 seconds, so a container resized in place is followed.
//!
//! # Available CPUs
//!
//! The cgroup CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), fractional, capped at the
//! online CPUs; without a quota, [`std::thread::available_parallelism`].

mod adopt;
mod allocator;
mod cgroup;
mod connection_count;
mod group;
mod limits;
mod pressure;
mod procfs;
mod runtime;
mod sockdiag;
mod target;
mod watch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use perfpilot_strategies::{MemoryLimitSource, MemoryUsageSource, Pressure, Problem, Snapshot};

use self::limits::Limits;
use self::pressure::PressureReader;
use self::procfs::{HostReader, ProcessReader};
use self::runtime::RuntimeSampler;
use self::target::TargetTracker;
use crate::config::Config;

#[cfg(test)]
pub(crate) use self::cgroup::MemoryCgroup;
pub(crate) use self::sockdiag::socket_owner_uid;
#[cfg(test)]
pub(crate) use self::target::TargetState;
pub use self::target::{TargetHandle, TargetStatus};
#[cfg(test)]
pub(crate) use self::watch::{ArmReason, MemoryProbe, SampleReading, WatchedSignal, CALM_PERIOD};
pub use self::watch::{
    Cadence, FastWatch, ProbeSlot, WatchHandle, WatchMode, WatchSpec, WatchStatus, WatchedBudget,
};
pub use crate::target::Target;

/// The cgroup v2 directory a `target.cgroup` names (absolute under the cgroup v2 mount, or
/// relative to it), or why it is not one: no cgroup v2 hierarchy mounted, no such directory,
/// or not a cgroup (no `cgroup.procs`).
pub fn resolve_target_cgroup(path: &Path) -> Result<PathBuf, String> {
    cgroup::resolve_v2_dir(path).map(|(dir, _mount)| dir)
}

/// What a configuration says about this host that is not so: a `target.cgroup` that names no
/// cgroup v2 directory ([`resolve_target_cgroup`]). The configuration only describes its
/// target; this is where it is resolved. Passed to `config::load_checked`.
pub fn host_problems(config: &Config) -> Vec<Problem> {
    let Some(path) = &config.target.cgroup else {
        return Vec::new();
    };
    match resolve_target_cgroup(path) {
        Ok(_) => Vec::new(),
        Err(why) => vec![Problem::new(
            "target.cgroup",
            format!("{:?}", path.display().to_string()),
            why,
        )],
    }
}

/// Settings the sampler needs.
#[derive(Debug, Clone, Default)]
pub struct SamplerSettings {
    /// The memory budget of the watched process, in bytes. It becomes the memory limit when it
    /// is below the cgroup limit and the host's RAM.
    pub memory_budget: Option<u64>,
}

/// Takes [`Snapshot`]s of this process (or, in sidecar mode, of a [`Target`]) and of its
/// host.
///
/// Files read on every sample stay open. Measured in release on a 2-core VM: about 6 µs per
/// sample (1.3 µs of it the process, 4 µs `/proc/stat` and `/proc/loadavg`); where jemalloc is
/// the global allocator its statistics add 9–25 µs (the stats epoch refresh walks every arena).
/// A target costs more: see [`Sampler::for_target`].
/// Own it in one place (the engine's task) and call [`Sampler::sample`] on each tick.
///
/// An example: `tests::example_the_second_sample_has_a_cpu_window`.
#[derive(Debug)]
pub struct Sampler {
    watched: Watched,
    host: HostReader,
    /// `/proc/pressure/*`; `None` where the kernel has no PSI.
    system_pressure: Option<PressureReader>,
    runtime: Option<RuntimeSampler>,
    allocator_in_use: bool,
    /// The agent's own process, in sidecar mode: only its CPU is read
    /// ([`Snapshot::agent_cpu_ratio`]).
    agent: Option<ProcessSampler>,
    /// What the fast watch reads, published after each sample.
    probe: ProbeSlot,
}

/// The process whose signals the snapshot carries.
// One per agent, never moved after creation: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Watched {
    /// The process hosting the agent (self and library modes).
    This(ProcessSampler),
    /// Another process (sidecar mode), found anew when it restarts.
    Target(TargetTracker),
}

impl Sampler {
    /// Opens what it can; never fails: unreadable sources become absent signals.
    ///
    /// Call it inside a tokio runtime to get that runtime's metrics (otherwise
    /// [`Snapshot::runtime`] stays `None`). Reads the cgroup hierarchy and `/proc/meminfo`
    /// once, so it costs more than a sample (tens of microseconds).
    pub fn new(settings: SamplerSettings) -> Sampler {
        let process = ProcessSampler::open(PathBuf::from(procfs::SELF_DIR), settings.memory_budget);
        Sampler {
            watched: Watched::This(process),
            host: HostReader::open(),
            system_pressure: PressureReader::system(),
            runtime: RuntimeSampler::current(),
            agent: None,
            // Probed once: the global allocator cannot change.
            allocator_in_use: allocator::jemalloc_is_global_allocator(),
            probe: ProbeSlot::default(),
        }
    }

    /// A sampler of another process (sidecar mode): the process signals of each snapshot
    /// (`rss_bytes`, `virtual_bytes`, the memory limit and usage ratio from *its* cgroup,
    /// `process_cpu_ratio`, `uptime`, [`Snapshot::open_fds`] and `open_connections`) are the
    /// target's; host signals and `runtime` (the agent's own tokio runtime) are as in
    /// [`Sampler::new`]; `allocator` is `None` (the agent's jemalloc says nothing about the
    /// target).
    ///
    /// While the target is not running (no such pid, pidfile missing, nothing listening on the
    /// port) its signals are `None` and [`Sampler::target`]'s status says why; sampling goes on
    /// and picks the target up again when it returns. See [`Target`] for how each kind is
    /// found and what a sample of it costs.
    pub fn for_target(settings: SamplerSettings, target: Target) -> Sampler {
        let tracker = TargetTracker::new(target, settings.memory_budget);
        Sampler {
            watched: Watched::Target(tracker),
            host: HostReader::open(),
            system_pressure: PressureReader::system(),
            runtime: RuntimeSampler::current(),
            allocator_in_use: false,
            agent: Some(ProcessSampler::open(PathBuf::from(procfs::SELF_DIR), None)),
            probe: ProbeSlot::default(),
        }
    }

    /// The target's status, in sidecar mode: a cheap handle the API and the engine read.
    pub fn target(&self) -> Option<TargetHandle> {
        match &self.watched {
            Watched::This(_) => None,
            Watched::Target(tracker) => Some(tracker.handle()),
        }
    }

    /// Where the sampler publishes what the [`FastWatch`] reads between samples (the watched
    /// process's `statm`, the cgroup its memory limit comes from, the limit).
    pub fn probe_slot(&self) -> ProbeSlot {
        self.probe.clone()
    }

    /// Takes one sample. The CPU ratios and runtime metrics cover the window since the previous
    /// call; on the first call the CPU ratios are `None`.
    pub fn sample(&mut self) -> Snapshot {
        let now = Instant::now();
        let mut snapshot = Snapshot::empty(SystemTime::now());
        match &mut self.watched {
            Watched::This(process) => {
                process.sample_into(now, &mut snapshot);
                self.probe.publish(process.memory_probe());
            }
            Watched::Target(tracker) => {
                tracker.sample_into(now, &mut snapshot);
                if let Some(probe) = tracker.memory_probe() {
                    self.probe.publish(probe);
                }
            }
        }
        if self.allocator_in_use {
            snapshot.allocator = allocator::jemalloc_stats();
        }
        snapshot.agent_cpu_ratio = match &mut self.agent {
            Some(agent) => {
                let cpu = agent.process.usage().and_then(|u| u.cpu);
                agent.process_cpu_ratio(now, cpu)
            }
            None => snapshot.process_cpu_ratio,
        };
        snapshot.system_cpu_ratio = self.host.cpu_ratio();
        snapshot.load_average = self.host.load_average();
        snapshot.runtime = self.runtime.as_mut().and_then(RuntimeSampler::sample);
        let system = self.system_pressure.as_mut().and_then(|p| p.read(now));
        let cgroup = snapshot.pressure.take().and_then(|p| p.cgroup);
        snapshot.pressure =
            (system.is_some() || cgroup.is_some()).then_some(Pressure { system, cgroup });
        round_ratios(&mut snapshot);
        self.probe
            .note_sample(watch::SampleReading::of(&snapshot, now));
        snapshot
    }
}

/// `value` rounded to `decimals` decimal places, as the f64 nearest that decimal (so it
/// prints as written: 0.0041, not 0.0040999999999999995).
pub(crate) fn round_decimals(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    let rounded = (value * scale).round() / scale;
    if rounded.is_finite() {
        rounded
    } else {
        value
    }
}

/// Rounds the computed ratios to the precision of what they are computed from, so the API
/// and `/metrics` do not show digits that mean nothing: CPU shares (clock ticks or
/// microseconds over a sampling interval) and the runtime's busy share to 4 decimals (0.01 %);
/// memory usage (bytes over a limit of megabytes to terabytes) to 6. PSI values are exact
/// already ([`pressure`]).
fn round_ratios(snapshot: &mut Snapshot) {
    let round = |value: &mut Option<f64>, decimals| {
        if let Some(value) = value {
            *value = round_decimals(*value, decimals);
        }
    };
    round(&mut snapshot.memory_usage_ratio, 6);
    round(&mut snapshot.memory_usage_raw_ratio, 6);
    round(&mut snapshot.process_cpu_ratio, 4);
    round(&mut snapshot.system_cpu_ratio, 4);
    if let Some(runtime) = snapshot.runtime.as_mut() {
        runtime.busy_ratio = round_decimals(runtime.busy_ratio, 4);
    }
}

/// Fills the memory limit and the two usage ratios over it: `memory_usage` from
/// [`Snapshot::memory_usage_bytes`] (the working set), `memory_usage_raw` from `raw_bytes`.
fn fill_memory_limit(
    snapshot: &mut Snapshot,
    limit: u64,
    source: MemoryLimitSource,
    raw_bytes: Option<u64>,
) {
    snapshot.memory_limit_bytes = Some(limit);
    snapshot.memory_limit_source = Some(source);
    let ratio = |bytes: u64| bytes as f64 / limit as f64;
    snapshot.memory_usage_ratio = snapshot.memory_usage_bytes.map(ratio);
    snapshot.memory_usage_raw_ratio = raw_bytes.map(ratio);
}

/// The signals of one process: memory, its limit, CPU and uptime.
#[derive(Debug)]
struct ProcessSampler {
    process: ProcessReader,
    limits: Limits,
    /// The process's own cgroup v2 pressure files, when its cgroup is not the root.
    pressure: Option<PressureReader>,
    /// When the previous sample was taken and the process's CPU time then.
    previous_cpu: Option<(Instant, Duration)>,
    /// When the previous sample was taken and the process's major page faults then.
    previous_faults: Option<(Instant, u64)>,
    /// The process's own memory cgroup, whose OOM kills are counted.
    oom_cgroup: Option<cgroup::MemoryCgroup>,
    /// The process's cgroup v2 directory when it has pressure files.
    pressure_dir: Option<PathBuf>,
}

impl ProcessSampler {
    /// Opens `/proc/self` or `/proc/<pid>` and discovers the process's limits.
    fn open(dir: PathBuf, memory_budget: Option<u64>) -> Self {
        let limits = Limits::discover(&dir, memory_budget);
        let pressure_dir = cgroup::own_v2_dir(&dir);
        let pressure = pressure_dir.as_deref().and_then(PressureReader::cgroup);
        ProcessSampler {
            pressure_dir: pressure.as_ref().and(pressure_dir),
            pressure,
            process: ProcessReader::open(dir),
            oom_cgroup: limits.own_memory_cgroup(),
            limits,
            previous_cpu: None,
            previous_faults: None,
        }
    }

    /// The process's `/proc` directory.
    fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// See [`ProcessReader::is_running`].
    fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Fills uptime, memory, memory limit and usage, and process CPU.
    fn sample_into(&mut self, now: Instant, snapshot: &mut Snapshot) {
        self.limits.refresh_if_due(now);
        snapshot.uptime = self.process.uptime(now);
        if let Some(memory) = self.process.memory() {
            snapshot.rss_bytes = Some(memory.resident_bytes);
            snapshot.virtual_bytes = Some(memory.virtual_bytes);
        }
        // Under a cgroup's limit, its working set is what the kernel enforces the limit on.
        let cgroup = self
            .limits
            .limiting_cgroup()
            .and_then(cgroup::MemoryCgroup::memory);
        let raw_bytes;
        (
            snapshot.memory_usage_bytes,
            snapshot.memory_usage_source,
            raw_bytes,
        ) = match cgroup {
            Some(memory) => (
                Some(memory.working_set),
                Some(MemoryUsageSource::CgroupWorkingSet),
                Some(memory.usage),
            ),
            None => (
                snapshot.rss_bytes,
                snapshot.rss_bytes.map(|_| MemoryUsageSource::Rss),
                snapshot.rss_bytes,
            ),
        };
        if let Some((limit, source)) = self.limits.memory() {
            fill_memory_limit(snapshot, limit, source, raw_bytes);
        }
        let usage = self.process.usage();
        snapshot.process_cpu_ratio = self.process_cpu_ratio(now, usage.and_then(|u| u.cpu));
        snapshot.major_faults_per_second =
            self.major_faults_per_second(now, usage.and_then(|u| u.major_faults));
        snapshot.oom_kills = self
            .oom_cgroup
            .as_ref()
            .and_then(cgroup::MemoryCgroup::oom_kills);
        let cgroup = self.pressure.as_mut().and_then(|p| p.read(now));
        snapshot.pressure = cgroup.map(|set| Pressure {
            system: None,
            cgroup: Some(set),
        });
    }

    /// What the fast watch reads of this process.
    fn memory_probe(&self) -> watch::MemoryProbe {
        watch::probe_for(
            self.dir(),
            self.limits.limiting_cgroup(),
            self.limits.memory().map(|(limit, _)| limit),
            self.pressure_dir.clone(),
        )
    }

    /// CPU time used since the previous sample ÷ (wall time × available CPUs).
    fn process_cpu_ratio(&mut self, now: Instant, cpu: Option<Duration>) -> Option<f64> {
        let current = cpu.map(|cpu| (now, cpu));
        let previous = std::mem::replace(&mut self.previous_cpu, current);
        let ((then, cpu_then), (now, cpu_now)) = (previous?, current?);
        let wall = now.saturating_duration_since(then).as_secs_f64();
        let capacity = wall * self.limits.cpus()?;
        (capacity > 0.0).then(|| cpu_now.saturating_sub(cpu_then).as_secs_f64() / capacity)
    }
}

impl ProcessSampler {
    /// Major page faults since the previous sample ÷ wall time; `None` on the first sample
    /// and when the count went down (another process behind the pid).
    fn major_faults_per_second(&mut self, now: Instant, faults: Option<u64>) -> Option<f64> {
        let current = faults.map(|faults| (now, faults));
        let previous = std::mem::replace(&mut self.previous_faults, current);
        let ((then, faults_then), (now, faults_now)) = (previous?, current?);
        let wall = now.saturating_duration_since(then).as_secs_f64();
        let faults = faults_now.checked_sub(faults_then)?;
        (wall > 0.0).then(|| faults as f64 / wall)
    }
}

/// The median time of `runs` calls of `f`, for the ignored measurements of sampling costs
/// (`cargo test --release --lib ... -- --ignored --nocapture`); the budgets themselves are
/// checked by `cargo bench --bench agent`.
#[cfg(test)]
mod rounding_tests {
    use super::round_decimals;

    #[test]
    fn rounded_ratios_print_as_their_source_wrote_them() {
        // What parsing "0.41" (percent) and dividing by 100 gives, and what the API showed.
        let noisy = 0.41_f64 / 100.0;
        assert_eq!(noisy.to_string(), "0.0040999999999999995");
        assert_eq!(round_decimals(noisy, 4).to_string(), "0.0041");
        assert_eq!(round_decimals(1.14 / 100.0, 4).to_string(), "0.0114");
        assert_eq!(round_decimals(0.003690210087601288, 4), 0.0037);
        assert_eq!(
            round_decimals(f64::MAX, 4),
            f64::MAX,
            "no overflow to infinity"
        );
    }
}

#[cfg(test)]
pub(crate) fn median_time(runs: usize, mut f: impl FnMut()) -> std::time::Duration {
    let mut times: Vec<_> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    /// The example the documentation once showed.
    #[tokio::test(flavor = "current_thread")]
    async fn example_the_second_sample_has_a_cpu_window() {
        let mut sampler = Sampler::new(SamplerSettings {
            memory_budget: Some(512 << 20),
        });
        let first = sampler.sample();
        assert_eq!(
            first.process_cpu_ratio, None,
            "no window before the first sample"
        );
        let second = sampler.sample();
        #[cfg(target_os = "linux")]
        assert!(second.process_cpu_ratio.is_some());
    }

    use super::*;
    use perfpilot_strategies::MemoryLimitSource;

    fn assert_send<T: Send>() {}

    #[test]
    fn the_sampler_can_move_to_the_engine_task() {
        assert_send::<Sampler>();
    }

    /// This thread's CPU time.
    fn thread_cpu_time() -> std::time::Duration {
        crate::sys::thread_cpu_time().expect("the thread CPU clock answers")
    }

    #[test]
    fn in_sidecar_mode_the_agents_cpu_is_its_own_not_the_targets() {
        // The target sleeps; the agent (this test) burns 300 ms of CPU between two samples,
        // counted on its own thread's clock, so the machine's load changes only how long
        // that takes, not the CPU time spent.
        let mut target = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let mut sampler = Sampler::for_target(SamplerSettings::default(), Target::Pid(target.id()));
        sampler.sample();
        let burn_until = thread_cpu_time() + std::time::Duration::from_millis(300);
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        let mut spins = 0u64;
        while thread_cpu_time() < burn_until {
            spins = std::hint::black_box(spins.wrapping_add(1));
            assert!(Instant::now() < deadline, "300 ms of CPU not had in 120 s");
        }
        let snapshot = sampler.sample();
        let _ = target.kill();
        let _ = target.wait();
        let (target, agent) = (
            snapshot.process_cpu_ratio.expect("the target's CPU"),
            snapshot.agent_cpu_ratio.expect("the agent's own CPU"),
        );
        // The agent's ratio holds at least the 300 ms burnt; the sleeping target's at most
        // a clock tick or two of its start.
        assert!(agent > target, "target {target}, agent {agent}");
        assert!(
            agent > 0.0 && target < 0.05,
            "target {target}, agent {agent}"
        );
        assert_eq!(
            snapshot.signal(perfpilot_strategies::Signal::AgentCpuUsage),
            Some(agent)
        );
        assert_eq!(
            snapshot.signal(perfpilot_strategies::Signal::CpuUsage),
            Some(target)
        );
        // And interval-backoff watches the agent's, in every mode.
        assert_eq!(
            perfpilot_strategies::IntervalBackoffConfig::default()
                .trigger
                .signal,
            perfpilot_strategies::Signal::AgentCpuUsage
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_samples_on_this_machine() {
        let mut sampler = Sampler::new(SamplerSettings::default());
        let first = sampler.sample();
        assert!(first.rss_bytes.is_some_and(|rss| rss > 0), "{first:?}");
        assert!(first.virtual_bytes >= first.rss_bytes, "{first:?}");
        assert!(first.memory_limit_bytes.is_some(), "{first:?}");
        let ratio = first.memory_usage_ratio.unwrap();
        assert!(ratio > 0.0 && ratio < 1.5, "{ratio}");
        assert!(first.load_average.is_some(), "{first:?}");
        assert!(first.uptime.is_some(), "{first:?}");
        assert_eq!(first.process_cpu_ratio, None);
        assert_eq!(first.system_cpu_ratio, None);
        assert!(first.runtime.is_some(), "{first:?}");

        // Burn a little CPU so the window has some to show.
        let spin_until = Instant::now() + Duration::from_millis(30);
        while Instant::now() < spin_until {
            std::hint::black_box(0u64);
        }
        let second = sampler.sample();
        assert_eq!(
            first.major_faults_per_second, None,
            "no window before the first sample"
        );
        let faults = second.major_faults_per_second.unwrap();
        assert!(faults.is_finite() && faults >= 0.0, "{faults}");
        let process = second.process_cpu_ratio.unwrap();
        assert!(process > 0.0 && process < 1.5, "{process}");
        let system = second.system_cpu_ratio.unwrap();
        assert!((0.0..=1.0).contains(&system), "{system}");
        let runtime = second.runtime.unwrap();
        assert_eq!(runtime.workers, 2);
        assert!((0.0..=1.0).contains(&runtime.busy_ratio));
        assert!(second.uptime > first.uptime);
        assert_eq!(second.memory_limit_source, first.memory_limit_source);
        // Not this crate's job: left for registered sources.
        assert_eq!(second.latency, None);
        assert_eq!(second.open_connections, None);
        // The test binary allocates through the system allocator, not jemalloc.
        assert_eq!(second.allocator, None);
    }

    #[test]
    fn outside_a_runtime_the_runtime_metrics_are_absent() {
        let mut sampler = Sampler::new(SamplerSettings::default());
        let snapshot = sampler.sample();
        assert_eq!(snapshot.runtime, None);
        assert!(snapshot.rss_bytes.is_some());
    }

    #[test]
    fn a_budget_below_every_other_limit_becomes_the_limit() {
        let ram = procfs::total_ram_bytes().unwrap();
        let budget = 64 << 20;
        let cgroup = cgroup::CgroupLimits::discover(Path::new(procfs::SELF_DIR)).memory_limit();
        assert!(
            cgroup.is_none_or(|limit| limit > budget) && ram > budget,
            "this test needs a host whose limits are above 64 MiB"
        );
        let mut sampler = Sampler::new(SamplerSettings {
            memory_budget: Some(budget),
        });
        let snapshot = sampler.sample();
        assert_eq!(snapshot.memory_limit_bytes, Some(budget));
        assert_eq!(
            snapshot.memory_limit_source,
            Some(MemoryLimitSource::Budget)
        );
        let expected = snapshot.rss_bytes.unwrap() as f64 / budget as f64;
        assert_eq!(
            snapshot.memory_usage_ratio,
            Some(round_decimals(expected, 6)),
            "usage over the budget, to 6 decimals"
        );
    }

    #[test]
    fn without_a_budget_the_limit_is_the_cgroup_or_the_ram() {
        let mut sampler = Sampler::new(SamplerSettings::default());
        let snapshot = sampler.sample();
        let cgroup = cgroup::CgroupLimits::discover(Path::new(procfs::SELF_DIR)).memory_limit();
        let ram = procfs::total_ram_bytes();
        let expected = limits::effective_memory_limit(cgroup, None, ram);
        assert_eq!(
            snapshot
                .memory_limit_bytes
                .zip(snapshot.memory_limit_source),
            expected
        );
    }
}
