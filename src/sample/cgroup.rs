//! The cgroup limits that apply to a process: memory (v2 `memory.max`, v1
//! `memory.limit_in_bytes`) and CPU (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
//!
//! A limit may be set on any ancestor of the process's cgroup (a Kubernetes pod's limit sits
//! on the pod's cgroup, the container runs in a child), so every cgroup from the process's own
//! up to the hierarchy's root is read and the tightest limit wins. The hierarchies are found
//! through `/proc/self/mountinfo`, not assumed to be at `/sys/fs/cgroup`: hybrid hosts mount
//! v2 at `/sys/fs/cgroup/unified` and the v1 controllers beside it.

use std::fs;
use std::path::{Path, PathBuf};

/// The limit files that apply to one process, from its own cgroup up to the root.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CgroupLimits {
    memory: Vec<LimitFile>,
    cpu: Vec<LimitFile>,
}

#[derive(Debug, Clone, PartialEq)]
enum LimitFile {
    /// cgroup v2 `memory.max`.
    MemoryMax(PathBuf),
    /// cgroup v2 `memory.high` (the throttling threshold), of every cgroup on the path to the
    /// root, for every kind of target.
    MemoryHigh(PathBuf),
    /// cgroup v1 `memory.limit_in_bytes`.
    MemoryLimitInBytes(PathBuf),
    /// cgroup v2 `cpu.max`.
    CpuMax(PathBuf),
    /// cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    CfsQuota { quota: PathBuf, period: PathBuf },
}

impl LimitFile {
    fn read_memory(&self) -> Option<u64> {
        match self {
            LimitFile::MemoryMax(path) | LimitFile::MemoryHigh(path) => {
                parse_memory_max(&fs::read_to_string(path).ok()?)
            }
            LimitFile::MemoryLimitInBytes(path) => {
                parse_memory_limit_in_bytes(&fs::read_to_string(path).ok()?)
            }
            _ => None,
        }
    }

    fn read_cpus(&self) -> Option<f64> {
        match self {
            LimitFile::CpuMax(path) => parse_cpu_max(&fs::read_to_string(path).ok()?),
            LimitFile::CfsQuota { quota, period } => parse_cfs_quota(
                &fs::read_to_string(quota).ok()?,
                &fs::read_to_string(period).ok()?,
            ),
            _ => None,
        }
    }
}

impl CgroupLimits {
    /// Finds the limit files of the process whose `/proc` directory is `proc_dir`. Nothing
    /// found (no cgroup filesystem, not Linux) gives empty limits.
    pub(crate) fn discover(proc_dir: &Path) -> Self {
        let cgroup = fs::read_to_string(proc_dir.join("cgroup")).unwrap_or_default();
        // Mount points are resolved in the agent's mount namespace, where the files are opened.
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut limits = Self::from_tables(&cgroup, &mountinfo);
        limits.memory.retain(LimitFile::exists);
        limits.cpu.retain(LimitFile::exists);
        limits
    }

    /// The limit files of a cgroup v2 directory `dir` under the hierarchy mounted at `mount`
    /// and of its ancestors: `memory.max`, `memory.high` and `cpu.max` (a cgroup target).
    pub(crate) fn for_v2_dir(dir: &Path, mount: &Path) -> Self {
        let mut limits = CgroupLimits::default();
        for dir in dir.ancestors().take_while(|d| d.starts_with(mount)) {
            limits
                .memory
                .push(LimitFile::MemoryMax(dir.join("memory.max")));
            limits
                .memory
                .push(LimitFile::MemoryHigh(dir.join("memory.high")));
            limits.cpu.push(LimitFile::CpuMax(dir.join("cpu.max")));
        }
        limits.memory.retain(LimitFile::exists);
        limits.cpu.retain(LimitFile::exists);
        limits
    }

    /// These limits and the `memory.limit_in_bytes` of the v1 memory cgroup `dir` (under the
    /// v1 hierarchy mounted at `mount`) and of its ancestors: a cgroup target's v1 twin on a
    /// hybrid host (see [`v1_memory_twin`]).
    pub(crate) fn with_v1_memory(mut self, dir: &Path, mount: &Path) -> Self {
        for dir in dir.ancestors().take_while(|d| d.starts_with(mount)) {
            let file = LimitFile::MemoryLimitInBytes(dir.join("memory.limit_in_bytes"));
            if file.exists() {
                self.memory.push(file);
            }
        }
        self
    }

    /// The candidate limit files named by `/proc/<pid>/cgroup` and `/proc/self/mountinfo`.
    fn from_tables(cgroup: &str, mountinfo: &str) -> Self {
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_mountinfo_line).collect();
        let mut limits = CgroupLimits::default();
        if let Some(path) = parse_cgroup_path(cgroup) {
            for dir in cgroup_dirs(&mounts, path, |m| m.fstype == "cgroup2") {
                // The same files a cgroup target reads (`for_v2_dir`): a limit or a
                // throttling threshold set one level up (a pod's) applies to the process too.
                limits
                    .memory
                    .push(LimitFile::MemoryMax(dir.join("memory.max")));
                limits
                    .memory
                    .push(LimitFile::MemoryHigh(dir.join("memory.high")));
                limits.cpu.push(LimitFile::CpuMax(dir.join("cpu.max")));
            }
        }
        if let Some(path) = parse_cgroup_v1_path(cgroup, "memory") {
            for dir in cgroup_dirs(&mounts, path, |m| m.is_v1("memory")) {
                let file = dir.join("memory.limit_in_bytes");
                limits.memory.push(LimitFile::MemoryLimitInBytes(file));
            }
        }
        if let Some(path) = parse_cgroup_v1_path(cgroup, "cpu") {
            for dir in cgroup_dirs(&mounts, path, |m| m.is_v1("cpu")) {
                limits.cpu.push(LimitFile::CfsQuota {
                    quota: dir.join("cpu.cfs_quota_us"),
                    period: dir.join("cpu.cfs_period_us"),
                });
            }
        }
        limits
    }

    /// The tightest memory limit in bytes; `None` where no cgroup sets one.
    #[cfg(test)]
    pub(crate) fn memory_limit(&self) -> Option<u64> {
        self.memory.iter().filter_map(LimitFile::read_memory).min()
    }

    /// The tightest CPU quota, in CPUs (1.5 = one and a half cores); `None` where no cgroup
    /// sets one.
    pub(crate) fn cpu_limit(&self) -> Option<f64> {
        self.cpu
            .iter()
            .filter_map(LimitFile::read_cpus)
            .min_by(f64::total_cmp)
    }
}

impl LimitFile {
    /// The memory cgroup this limit file belongs to, with its version; `None` for CPU files.
    fn memory_cgroup(&self) -> Option<MemoryCgroup> {
        match self {
            LimitFile::MemoryMax(path) | LimitFile::MemoryHigh(path) => {
                Some(MemoryCgroup::V2(path.parent()?.to_path_buf()))
            }
            LimitFile::MemoryLimitInBytes(path) => {
                Some(MemoryCgroup::V1(path.parent()?.to_path_buf()))
            }
            _ => None,
        }
    }
}

impl CgroupLimits {
    /// The cgroup whose memory limit is the tightest (what the kernel enforces first), and
    /// that limit; `None` where no cgroup sets one.
    pub(crate) fn limiting_memory_cgroup(&self) -> Option<(MemoryCgroup, u64)> {
        self.memory
            .iter()
            .filter_map(|file| Some((file.memory_cgroup()?, file.read_memory()?)))
            // `min_by_key` keeps the first of equal keys: the cgroup nearest the process.
            .min_by_key(|&(_, limit)| limit)
    }

    /// The process's own memory cgroup (the leaf of the hierarchy that has the memory
    /// controller), where its OOM kills are counted; `None` where none was found.
    pub(crate) fn own_memory_cgroup(&self) -> Option<MemoryCgroup> {
        self.memory.first().and_then(LimitFile::memory_cgroup)
    }
}

/// A memory cgroup, v1 or v2, and what is read of it beside its limit: the working set the
/// limit is enforced on and the OOM-kill count.
///
/// | | v1 | v2 |
/// |---|---|---|
/// | usage | `memory.usage_in_bytes` | `memory.current` |
/// | inactive file cache (reclaimed before an OOM kill) | `total_inactive_file` in `memory.stat` | `inactive_file` in `memory.stat` |
/// | OOM kills | `oom_kill` in `memory.oom_control` | `oom_kill` in `memory.events` |
///
/// The working set is usage less inactive file cache, as the kubelet computes it for its
/// eviction decisions: page cache the kernel drops under pressure is not what kills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemoryCgroup {
    /// A cgroup v1 memory controller directory.
    V1(PathBuf),
    /// A cgroup v2 directory.
    V2(PathBuf),
}

impl MemoryCgroup {
    /// The cgroup's directory.
    pub(crate) fn dir(&self) -> &Path {
        match self {
            MemoryCgroup::V1(dir) | MemoryCgroup::V2(dir) => dir,
        }
    }

    /// The file holding the cgroup's total usage in bytes (`memory.usage_in_bytes` or
    /// `memory.current`): one number, the cheapest read of it.
    pub(crate) fn usage_file(&self) -> PathBuf {
        match self {
            MemoryCgroup::V1(dir) => dir.join("memory.usage_in_bytes"),
            MemoryCgroup::V2(dir) => dir.join("memory.current"),
        }
    }

    /// `memory.stat`.
    pub(crate) fn stat_file(&self) -> PathBuf {
        self.dir().join("memory.stat")
    }

    /// The file with the OOM-kill count (`memory.oom_control` or `memory.events`).
    pub(crate) fn oom_file(&self) -> PathBuf {
        match self {
            MemoryCgroup::V1(dir) => dir.join("memory.oom_control"),
            MemoryCgroup::V2(dir) => dir.join("memory.events"),
        }
    }

    /// The key of the inactive file cache in `memory.stat` (v1's hierarchical total, which
    /// counts the cgroup's children as `usage_in_bytes` does).
    fn inactive_file_key(&self) -> &'static str {
        match self {
            MemoryCgroup::V1(_) => "total_inactive_file",
            MemoryCgroup::V2(_) => "inactive_file",
        }
    }

    /// The working set from the texts of the usage file and `memory.stat`.
    pub(crate) fn parse_working_set(&self, usage: &str, stat: &str) -> Option<u64> {
        self.parse_memory(usage, stat)
            .map(|memory| memory.working_set)
    }

    /// Usage less inactive file cache, in bytes, read now; `None` if the usage file cannot
    /// be read (the cgroup was removed). A `memory.stat` without the key counts as no
    /// inactive cache.
    #[cfg(test)]
    pub(crate) fn working_set(&self) -> Option<u64> {
        self.memory().map(|memory| memory.working_set)
    }

    /// Its usage and working set, read now; `None` if the usage file cannot be read.
    pub(crate) fn memory(&self) -> Option<CgroupMemory> {
        let usage = fs::read_to_string(self.usage_file()).ok()?;
        let stat = fs::read_to_string(self.stat_file()).unwrap_or_default();
        self.parse_memory(&usage, &stat)
    }

    /// Its usage and working set from the texts of the usage file and `memory.stat`.
    pub(crate) fn parse_memory(&self, usage: &str, stat: &str) -> Option<CgroupMemory> {
        let usage: u64 = usage.trim().parse().ok()?;
        let inactive = stat_value(stat, self.inactive_file_key()).unwrap_or(0);
        Some(CgroupMemory {
            usage,
            working_set: usage.saturating_sub(inactive),
        })
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup (v2: and its
    /// descendants), read now; `None` where the kernel does not count them (v1 before Linux
    /// 4.13) or the file cannot be read.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        stat_value(&fs::read_to_string(self.oom_file()).ok()?, "oom_kill")
    }
}

/// One reading of a memory cgroup, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CgroupMemory {
    /// Everything charged to it, page cache included (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`): the `memory_usage_raw` signal.
    pub(crate) usage: u64,
    /// `usage` less its inactive file cache, as the kubelet computes it: the `memory_usage`
    /// signal.
    pub(crate) working_set: u64,
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `memory.events`,
/// `memory.oom_control`: one `key value` pair a line).
pub(crate) fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl LimitFile {
    fn exists(&self) -> bool {
        match self {
            LimitFile::MemoryMax(path)
            | LimitFile::MemoryHigh(path)
            | LimitFile::MemoryLimitInBytes(path)
            | LimitFile::CpuMax(path) => path.is_file(),
            LimitFile::CfsQuota { quota, period } => quota.is_file() && period.is_file(),
        }
    }
}

/// The mount point of the cgroup v2 hierarchy in this mount namespace (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts), from `/proc/self/mountinfo`.
pub(crate) fn v2_mount_point() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    v2_mount_in(&mountinfo).map(|mount| mount.mount_point)
}

fn v2_mount_in(mountinfo: &str) -> Option<Mount> {
    mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .find(|m| m.fstype == "cgroup2")
}

/// On a hybrid host (the memory controller on a v1 hierarchy, as systemd's hybrid mode
/// mounts it beside the v2 one), the v1 memory cgroup at the same path as the v2 directory
/// `dir` under `v2_mount`: systemd keeps the two with the same processes. Its directory and
/// the v1 mount point; `None` for the root (the whole host) or where there is none.
pub(crate) fn v1_memory_twin(dir: &Path, v2_mount: &Path) -> Option<(PathBuf, PathBuf)> {
    let relative = dir.strip_prefix(v2_mount).ok()?;
    if relative.as_os_str().is_empty() {
        return None;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|m| m.is_v1("memory") && m.root == Path::new("/"))
        .map(|m| (m.mount_point.join(relative), m.mount_point))
        .find(|(twin, _)| twin.join("memory.usage_in_bytes").is_file())
}

/// The cgroup v2 directory of the process whose `/proc` directory is `proc_dir`, when it is
/// not the root of the hierarchy (whose pressure and usage are the whole host's).
pub(crate) fn own_v2_dir(proc_dir: &Path) -> Option<PathBuf> {
    let cgroup = fs::read_to_string(proc_dir.join("cgroup")).ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_mountinfo_line).collect();
    let dirs = cgroup_dirs(&mounts, parse_cgroup_path(&cgroup)?, |m| {
        m.fstype == "cgroup2"
    });
    (dirs.len() > 1).then(|| dirs[0].clone())
}

/// The cgroup v2 directory a `target.cgroup` names, with the hierarchy's mount point, or why
/// there is none. `path` is absolute under the mount (`/sys/fs/cgroup/system.slice/x.service`)
/// or a cgroup path as `/proc/<pid>/cgroup` shows it, with or without the leading `/`
/// (`system.slice/x.service`), taken relative to the mount.
pub(crate) fn resolve_v2_dir(path: &Path) -> Result<(PathBuf, PathBuf), String> {
    let mount = v2_mount_point().ok_or_else(|| {
        "no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mountinfo)".to_owned()
    })?;
    if path.as_os_str().is_empty() {
        return Err("must name a cgroup".to_owned());
    }
    let dir = match path.strip_prefix(&mount) {
        Ok(_) => path.to_path_buf(),
        Err(_) => mount.join(path.strip_prefix("/").unwrap_or(path)),
    };
    let canonical = fs::canonicalize(&dir).map_err(|e| {
        format!(
            "{} is not a cgroup v2 directory ({e}; the cgroup v2 hierarchy is mounted at {})",
            dir.display(),
            mount.display()
        )
    })?;
    if !canonical.starts_with(&mount) || !canonical.join("cgroup.procs").is_file() {
        return Err(format!(
            "{} is not a cgroup v2 directory (no cgroup.procs under the cgroup v2 mount {})",
            canonical.display(),
            mount.display()
        ));
    }
    Ok((canonical, mount))
}

/// One line of `/proc/self/mountinfo`, the fields the cgroup lookup needs.
#[derive(Debug, Clone, PartialEq)]
struct Mount {
    /// The path inside the filesystem that is mounted (for cgroups: the cgroup at the mount).
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

impl Mount {
    fn is_v1(&self, controller: &str) -> bool {
        self.fstype == "cgroup" && self.super_options.split(',').any(|o| o == controller)
    }
}

/// The directories of cgroup `path` and its ancestors, on the first mount that `matches` and
/// holds it, from the cgroup itself up to the mount point.
fn cgroup_dirs(mounts: &[Mount], path: &str, matches: impl Fn(&Mount) -> bool) -> Vec<PathBuf> {
    let path = Path::new(path);
    let Some((mount, relative)) = mounts
        .iter()
        .filter(|m| matches(m))
        .find_map(|m| Some((m, path.strip_prefix(&m.root).ok()?)))
    else {
        return Vec::new();
    };
    // A cgroup outside the agent's cgroup namespace shows as `/../sibling` (a sidecar looking
    // at the app container of its pod): it is not under any mount this agent can see, and
    // joining the `..` would read the agent's own cgroup instead.
    if relative
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Vec::new();
    }
    let leaf = if relative.as_os_str().is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(relative)
    };
    leaf.ancestors()
        .take_while(|dir| dir.starts_with(&mount.mount_point))
        .map(Path::to_path_buf)
        .collect()
}

/// Parses one `/proc/self/mountinfo` line:
/// `36 35 98:0 /root /mount/point rw,noatime master:1 - fstype source rw,super,options`.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let root = fields.nth(3)?;
    let mount_point = fields.next()?;
    let mut fields = after.split(' ');
    let fstype = fields.next()?;
    let super_options = fields.nth(1).unwrap_or("");
    Some(Mount {
        root: PathBuf::from(unescape_octal(root)?),
        mount_point: PathBuf::from(unescape_octal(mount_point)?),
        fstype: fstype.to_owned(),
        super_options: super_options.to_owned(),
    })
}

/// Undoes mountinfo's `\040`-style escapes of space, tab, newline and backslash.
fn unescape_octal(field: &str) -> Option<String> {
    if !field.contains('\\') {
        return Some(field.to_owned());
    }
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4)?;
        out.push(char::from(u8::from_str_radix(code, 8).ok()?));
        rest = &rest[at + 4..];
    }
    out.push_str(rest);
    Some(out)
}

/// The cgroup v2 path in `/proc/<pid>/cgroup` (the line `0::/path`).
pub(crate) fn parse_cgroup_path(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|path| path.starts_with('/'))
}

/// The cgroup v1 path of `controller` in `/proc/<pid>/cgroup` (a line such as
/// `4:memory:/path` or `2:cpu,cpuacct:/path`).
pub(crate) fn parse_cgroup_v1_path<'a>(text: &'a str, controller: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let _id = fields.next()?;
        let controllers = fields.next()?;
        let path = fields.next()?;
        (controllers.split(',').any(|c| c == controller) && path.starts_with('/')).then_some(path)
    })
}

/// cgroup v2 `memory.max`: a byte count, or `max` for no limit (`None`, as is anything
/// malformed).
pub(crate) fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// cgroup v1 `memory.limit_in_bytes`. "No limit" reads as a huge number (`PAGE_COUNTER_MAX`
/// pages, about 2^63 bytes); anything above 2^60 is taken as no limit.
pub(crate) fn parse_memory_limit_in_bytes(text: &str) -> Option<u64> {
    text.trim()
        .parse()
        .ok()
        .filter(|&limit: &u64| limit < 1 << 60)
}

/// cgroup v2 `cpu.max` (`$QUOTA $PERIOD` in microseconds, quota `max` for none) as CPUs.
pub(crate) fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_ascii_whitespace();
    let quota = fields.next()?;
    let period = fields.next().unwrap_or("100000");
    cpus(quota.parse().ok()?, period.parse().ok()?)
}

/// cgroup v1 `cpu.cfs_quota_us` (`-1` for none) and `cpu.cfs_period_us`, as CPUs.
pub(crate) fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    cpus(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

fn cpus(quota_us: u64, period_us: u64) -> Option<f64> {
    (quota_us > 0 && period_us > 0).then(|| quota_us as f64 / period_us as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n4:memory:/process_api/9e4e\n\
        2:cpu,cpuacct:/\n0::/\n";

    #[test]
    fn cgroup_paths_v2_and_v1() {
        assert_eq!(
            parse_cgroup_path("0::/system.slice/app.service\n"),
            Some("/system.slice/app.service")
        );
        assert_eq!(parse_cgroup_path(HYBRID_CGROUP), Some("/"));
        assert_eq!(parse_cgroup_path("4:memory:/a\n"), None);
        assert_eq!(parse_cgroup_path("0::\n"), None);
        assert_eq!(parse_cgroup_path(""), None);
        assert_eq!(
            parse_cgroup_v1_path(HYBRID_CGROUP, "memory"),
            Some("/process_api/9e4e")
        );
        assert_eq!(parse_cgroup_v1_path(HYBRID_CGROUP, "cpu"), Some("/"));
        assert_eq!(parse_cgroup_v1_path(HYBRID_CGROUP, "cpuset"), None);
        assert_eq!(parse_cgroup_v1_path("garbage", "memory"), None);
    }

    #[test]
    fn memory_limits() {
        assert_eq!(parse_memory_max("536870912\n"), Some(536_870_912));
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max(""), None);
        assert_eq!(parse_memory_max("-1"), None);
        assert_eq!(
            parse_memory_limit_in_bytes("536870912\n"),
            Some(536_870_912)
        );
        assert_eq!(parse_memory_limit_in_bytes("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit_in_bytes("lots"), None);
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("50000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("0 100000"), None);
        assert_eq!(parse_cpu_max("100000 0"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cfs_quota("200000\n", "100000\n"), Some(2.0));
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs_quota("x", "100000"), None);
    }

    #[test]
    fn mountinfo_lines() {
        let line = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw";
        let mount = parse_mountinfo_line(line).unwrap();
        assert_eq!(mount.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(mount.fstype, "cgroup2");
        let v1 =
            "32 31 0:29 /docker/ab /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";
        let v1 = parse_mountinfo_line(v1).unwrap();
        assert!(v1.is_v1("cpu") && v1.is_v1("cpuacct") && !v1.is_v1("memory"));
        assert_eq!(v1.root, Path::new("/docker/ab"));
        let spaced = parse_mountinfo_line("1 2 0:1 / /mnt/a\\040b rw - cgroup2 none rw").unwrap();
        assert_eq!(spaced.mount_point, Path::new("/mnt/a b"));
        assert_eq!(parse_mountinfo_line("1 2 0:1 / /mnt rw"), None);
        assert_eq!(
            parse_mountinfo_line("1 2 0:1 / /mnt\\04 rw - cgroup2 none rw"),
            None
        );
    }

    #[test]
    fn a_container_sees_its_cgroup_at_the_mount_root() {
        // Without a cgroup namespace, the container's /sys/fs/cgroup is its own cgroup, mounted
        // with that cgroup as the mount's root.
        let mountinfo = "30 20 0:26 /kubepods/pod1/ctr /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let limits = CgroupLimits::from_tables("0::/kubepods/pod1/ctr\n", mountinfo);
        assert_eq!(
            limits.memory,
            vec![
                LimitFile::MemoryMax("/sys/fs/cgroup/memory.max".into()),
                LimitFile::MemoryHigh("/sys/fs/cgroup/memory.high".into())
            ]
        );
        // A path outside every mount's root gives nothing rather than a wrong file.
        let limits = CgroupLimits::from_tables("0::/elsewhere\n", mountinfo);
        assert!(limits.memory.is_empty());
    }

    #[test]
    fn a_cgroup_outside_the_agents_cgroup_namespace_is_not_read() {
        // A sidecar in its own cgroup namespace sees its pod's app container as `/../app`:
        // its /sys/fs/cgroup is its own cgroup, whose limit is the sidecar's, not the app's.
        let fs = FakeCgroupFs::new("sibling");
        fs.write("memory.max", "33554432\n");
        let mountinfo = format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            fs.0.path().display()
        );
        let mut limits = CgroupLimits::from_tables("0::/../cri-containerd-app.scope\n", &mountinfo);
        limits.memory.retain(LimitFile::exists);
        assert_eq!(limits.memory_limit(), None, "{:?}", limits.memory);
        // The agent's own cgroup, at the namespace's root, is read.
        let mut own = CgroupLimits::from_tables("0::/\n", &mountinfo);
        own.memory.retain(LimitFile::exists);
        assert_eq!(own.memory_limit(), Some(32 << 20));
    }

    /// A fake cgroup filesystem in a temporary directory, removed on drop.
    struct FakeCgroupFs(tempfile::TempDir);

    impl FakeCgroupFs {
        fn new(name: &str) -> Self {
            let root = tempfile::Builder::new()
                .prefix(&format!("perfpilot-cgroup-{name}-"))
                .tempdir()
                .expect("create the fake cgroup directory");
            FakeCgroupFs(root)
        }

        fn write(&self, file: &str, contents: &str) {
            let path = self.0.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }
    }

    #[test]
    fn the_tightest_limit_on_the_path_to_the_root_wins() {
        let fs = FakeCgroupFs::new("v2");
        fs.write("cgroup.controllers", "cpu memory");
        fs.write("pod/memory.max", "1073741824\n");
        fs.write("pod/cpu.max", "150000 100000\n");
        fs.write("pod/ctr/memory.max", "max\n");
        fs.write("pod/ctr/cpu.max", "max 100000\n");
        let mountinfo = format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            fs.0.path().display()
        );
        let mut limits = CgroupLimits::from_tables("0::/pod/ctr\n", &mountinfo);
        assert_eq!(
            limits.memory.len(),
            6,
            "max and high of ctr, pod and the root"
        );
        limits.memory.retain(LimitFile::exists);
        assert_eq!(
            limits.memory.len(),
            2,
            "only ctr's and pod's memory.max exist"
        );
        assert_eq!(limits.memory_limit(), Some(1 << 30));
        assert_eq!(limits.cpu_limit(), Some(1.5));

        fs.write("pod/ctr/memory.max", "268435456\n");
        assert_eq!(
            limits.memory_limit(),
            Some(256 << 20),
            "re-read on every call"
        );
    }

    #[test]
    fn a_process_in_a_container_gets_its_pods_memory_high_too() {
        // Self and pid targets: the process's cgroup is ctr, the limits sit on pod.
        let fs = FakeCgroupFs::new("pod-high");
        fs.write("cgroup.controllers", "cpu memory");
        fs.write("pod/memory.max", "1073741824\n");
        fs.write("pod/memory.high", "536870912\n");
        fs.write("pod/ctr/memory.max", "max\n");
        fs.write("pod/ctr/memory.high", "max\n");
        let mountinfo = format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            fs.0.path().display()
        );
        let mut limits = CgroupLimits::from_tables("0::/pod/ctr\n", &mountinfo);
        limits.memory.retain(LimitFile::exists);
        assert_eq!(limits.memory_limit(), Some(512 << 20), "pod's memory.high");
        // The same as a cgroup target of the same directory reads.
        let target = CgroupLimits::for_v2_dir(&fs.0.path().join("pod/ctr"), fs.0.path());
        assert_eq!(target.memory_limit(), limits.memory_limit());
        fs.write("pod/memory.high", "max\n");
        assert_eq!(
            limits.memory_limit(),
            Some(1 << 30),
            "then pod's memory.max"
        );
    }

    #[test]
    fn v1_controllers_are_read_too() {
        let fs = FakeCgroupFs::new("v1");
        fs.write("memory/app/memory.limit_in_bytes", "9223372036854771712\n");
        fs.write("memory/memory.limit_in_bytes", "536870912\n");
        fs.write("cpu/cpu.cfs_quota_us", "-1\n");
        fs.write("cpu/cpu.cfs_period_us", "100000\n");
        let mountinfo = format!(
            "35 31 0:32 / {root}/memory rw - cgroup cgroup rw,memory\n\
             32 31 0:29 / {root}/cpu rw - cgroup cgroup rw,cpu,cpuacct\n",
            root = fs.0.path().display()
        );
        let limits = CgroupLimits::from_tables("4:memory:/app\n2:cpu,cpuacct:/\n", &mountinfo);
        assert_eq!(limits.memory_limit(), Some(512 << 20));
        assert_eq!(limits.cpu_limit(), None);
    }

    #[test]
    fn the_v2_mount_is_the_first_cgroup2_line() {
        let mountinfo = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let mount = v2_mount_in(mountinfo).unwrap();
        assert_eq!(mount.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            v2_mount_in("32 31 0:29 / /c rw - cgroup cgroup rw,cpu\n"),
            None
        );
    }

    #[test]
    fn memory_high_is_a_limit_of_cgroup_targets() {
        let fs = FakeCgroupFs::new("high");
        fs.write("svc/memory.max", "1073741824\n");
        fs.write("svc/memory.high", "536870912\n");
        fs.write("svc/cpu.max", "50000 100000\n");
        fs.write("memory.max", "max\n");
        let limits = CgroupLimits::for_v2_dir(&fs.0.path().join("svc"), fs.0.path());
        assert_eq!(limits.memory_limit(), Some(512 << 20));
        assert_eq!(limits.cpu_limit(), Some(0.5));
        fs.write("svc/memory.high", "max\n");
        assert_eq!(limits.memory_limit(), Some(1 << 30), "`max` is no limit");
    }

    #[test]
    fn target_cgroup_paths_resolve_under_the_v2_mount() {
        let Some(mount) = v2_mount_point() else {
            return crate::test_support::skip("no cgroup v2 hierarchy is mounted");
        };
        let root = Ok((fs::canonicalize(&mount).unwrap(), mount.clone()));
        assert_eq!(resolve_v2_dir(&mount), root);
        assert_eq!(resolve_v2_dir(Path::new("/")), root);
        let err = resolve_v2_dir(Path::new("no-such.slice/x.service")).unwrap_err();
        assert!(
            err.contains(&format!("{}/no-such.slice/x.service", mount.display()))
                && err.contains("not a cgroup v2 directory"),
            "{err}"
        );
        // A directory outside the hierarchy, reached through `..`.
        let up = "../".repeat(mount.components().count() - 1);
        let err = resolve_v2_dir(Path::new(&format!("{up}tmp"))).unwrap_err();
        assert!(err.contains("/tmp is not a cgroup v2 directory"), "{err}");
        assert_eq!(
            resolve_v2_dir(Path::new("")).unwrap_err(),
            "must name a cgroup"
        );
    }

    fn write_in(dir: &Path, file: &str, contents: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(file), contents).unwrap();
    }

    #[test]
    fn v1_working_set_and_oom_kills_from_fixture_files() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("pod");
        let ctr = pod.join("ctr");
        write_in(&pod, "memory.limit_in_bytes", "314572800\n");
        write_in(&ctr, "memory.limit_in_bytes", "9223372036854771712\n");
        write_in(&ctr, "memory.usage_in_bytes", "209715200\n");
        write_in(
            &ctr,
            "memory.stat",
            "cache 4096\ninactive_file 1\ntotal_cache 8192\ntotal_inactive_file 52428800\n",
        );
        write_in(
            &ctr,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        let mountinfo = format!(
            "35 31 0:32 / {} rw - cgroup cgroup rw,memory\n",
            root.path().display()
        );
        let mut limits = CgroupLimits::from_tables("4:memory:/pod/ctr\n", &mountinfo);
        limits.memory.retain(LimitFile::exists);
        let (limiting, limit) = limits.limiting_memory_cgroup().unwrap();
        assert_eq!(limit, 300 << 20);
        assert_eq!(
            limiting,
            MemoryCgroup::V1(pod.clone()),
            "the pod's limit is tighter"
        );
        let own = limits.own_memory_cgroup().unwrap();
        assert_eq!(own, MemoryCgroup::V1(ctr.clone()));
        assert_eq!(
            own.working_set(),
            Some((200 - 50) << 20),
            "usage less total_inactive_file"
        );
        assert_eq!(own.oom_kills(), Some(3));
        // The pod's files are missing: nothing is read, nothing is made up.
        assert_eq!(limiting.working_set(), None);
        assert_eq!(limiting.oom_kills(), None);
        // A kernel before 4.13 has no oom_kill line.
        write_in(
            &ctr,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\n",
        );
        assert_eq!(own.oom_kills(), None);
    }

    #[test]
    fn v2_working_set_oom_kills_and_memory_high_from_fixture_files() {
        let root = tempfile::tempdir().unwrap();
        let svc = root.path().join("svc");
        write_in(&svc, "memory.max", "536870912\n");
        write_in(&svc, "memory.high", "402653184\n");
        write_in(&svc, "memory.current", "367001600\n");
        write_in(
            &svc,
            "memory.stat",
            "anon 300000000\nfile 67001600\ninactive_file 20971520\n",
        );
        write_in(
            &svc,
            "memory.events",
            "low 0\nhigh 12\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        let limits = CgroupLimits::for_v2_dir(&svc, root.path());
        let (limiting, limit) = limits.limiting_memory_cgroup().unwrap();
        assert_eq!(limit, 384 << 20, "memory.high below memory.max");
        assert_eq!(limiting, MemoryCgroup::V2(svc.clone()));
        assert_eq!(limiting.working_set(), Some((350 - 20) << 20));
        assert_eq!(
            limiting.oom_kills(),
            Some(1),
            "oom_kill, not oom or oom_group_kill"
        );
        // Inactive cache above usage (read at different instants) cannot go negative.
        assert_eq!(
            limiting.parse_working_set("100\n", "inactive_file 200\n"),
            Some(0)
        );
        assert_eq!(limiting.parse_working_set("max\n", ""), None);
    }

    #[test]
    fn flat_keyed_values() {
        let text = "oom_kill_disable 0\nunder_oom 1\noom_kill 7\n";
        assert_eq!(stat_value(text, "oom_kill"), Some(7));
        assert_eq!(stat_value(text, "under_oom"), Some(1));
        assert_eq!(stat_value(text, "oom"), None, "whole keys only");
        assert_eq!(stat_value("oom_kill many\n", "oom_kill"), None);
        assert_eq!(stat_value("", "oom_kill"), None);
    }

    /// The real thing, where this machine has a writable cgroup v1 memory controller: a child
    /// cgroup limited to 16 MiB, a process in it that needs 64 MiB, the kernel's OOM kill seen
    /// in `memory.oom_control`, and the working set read while a process lives in it.
    #[test]
    fn a_real_v1_oom_kill_is_counted() {
        use std::process::Command;
        let limits = CgroupLimits::discover(Path::new(crate::sample::procfs::SELF_DIR));
        let Some(MemoryCgroup::V1(own)) = limits.own_memory_cgroup() else {
            return crate::test_support::skip("this process has no cgroup v1 memory controller");
        };
        let dir = own.join(format!("perfpilot-oom-test-{}", std::process::id()));
        if let Err(e) = fs::create_dir(&dir) {
            return crate::test_support::skip(&format!("cannot create {} ({e})", dir.display()));
        }
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                // The kernel removes a cgroup directory once its processes are gone.
                for _ in 0..50 {
                    if fs::remove_dir(&self.0).is_ok() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        let _remove = Remove(dir.clone());
        fs::write(dir.join("memory.limit_in_bytes"), "16777216").unwrap();
        let cgroup = MemoryCgroup::V1(dir.clone());
        assert_eq!(cgroup.oom_kills(), Some(0), "a new cgroup has no kills");
        assert_eq!(cgroup.working_set(), Some(0), "and no usage");
        // `dd` with a 64 MiB block touches a 64 MiB buffer: over the limit, killed.
        let procs = dir.join("cgroup.procs");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {} && exec dd if=/dev/zero of=/dev/null bs=64M count=4",
                procs.display()
            ))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "dd should have been OOM-killed: {status:?}"
        );
        assert_eq!(
            cgroup.oom_kills(),
            Some(1),
            "{:?}",
            fs::read_to_string(cgroup.oom_file())
        );
    }

    #[test]
    fn discovery_on_this_machine_does_not_fail() {
        let limits = CgroupLimits::discover(Path::new(crate::sample::procfs::SELF_DIR));
        // Whatever this host has, reading it must not panic and limits must be positive.
        assert!(limits.memory_limit().is_none_or(|l| l > 0));
        assert!(limits.cpu_limit().is_none_or(|c| c > 0.0));
    }
}
