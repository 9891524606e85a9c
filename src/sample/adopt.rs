//! Whether a process named by a pidfile or found on a port may be adopted as the target: the
//! agent signals it and hands its pid to commands (`PERFPILOT_TARGET_PID`), so a pid that
//! anyone could have written must not be taken on trust.
//!
//! | refused | why |
//! |---|---|
//! | pid 1, or the agent's own pid | signalling init or itself is never what a sidecar means |
//! | a pidfile others may write (mode `o+w`) | anyone could point the agent at any process |
//! | a pidfile owned by a user other than root or the agent's, naming another user's process | its owner may only point at their own processes |
//! | the adopted pid, now with another start time | the target exited and the kernel gave its pid to another process |

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The pid in the pidfile at `path` and the pidfile's owner, read from the opened file
/// (`fstat`, so the file checked is the file read), or why it cannot be trusted or read.
pub(super) fn read_pidfile(path: &Path) -> Result<(u32, u32), String> {
    let mut file =
        fs::File::open(path).map_err(|e| format!("cannot read pidfile {}: {e}", path.display()))?;
    let metadata = file
        .metadata()
        .map_err(|e| format!("cannot read pidfile {}: {e}", path.display()))?;
    let mode = metadata.mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(format!(
            "pidfile {} is writable by any user (mode {mode:04o}, owner uid {}): not trusted, since anyone could point the agent at any process; `chmod o-w` it",
            path.display(),
            metadata.uid()
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read pidfile {}: {e}", path.display()))?;
    let pid = parse_pid(&text).ok_or_else(|| {
        let shown: String = text.chars().take(40).collect();
        format!("pidfile {} does not hold a pid: {shown:?}", path.display())
    })?;
    Ok((pid, metadata.uid()))
}

/// Whether the process `pid` may be adopted: not pid 1, not the agent itself, and, when it
/// was named by a pidfile owned by `pidfile_owner` (neither root nor the agent's user), a
/// process of that same user.
pub(super) fn check_process(pid: u32, pidfile_owner: Option<u32>) -> Result<(), String> {
    if pid == 1 {
        return Err("pid 1 (init) is never adopted as the target".to_owned());
    }
    if pid == std::process::id() {
        return Err(format!(
            "pid {pid} is the agent itself: never adopted as the target"
        ));
    }
    let agent = crate::sys::effective_uid();
    match pidfile_owner {
        Some(owner) if owner != 0 && owner != agent => match process_uid(pid) {
            Some(uid) if uid == owner => Ok(()),
            Some(uid) => Err(format!(
                "pid {pid} belongs to uid {uid}, but the pidfile is owned by uid {owner} (neither root nor the agent's user, uid {agent}): a user may only point the agent at their own processes"
            )),
            None => Err(format!("cannot read the owner of pid {pid}")),
        },
        _ => Ok(()),
    }
}

/// The real uid of process `pid` (`Uid:` in `/proc/<pid>/status`).
fn process_uid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The start time of process `pid` (clock ticks after boot), `None` if there is none.
pub(super) fn start_ticks(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| super::procfs::parse_stat_start_ticks(&text))
}

/// A pidfile's pid: its first line, a positive integer, surrounding whitespace allowed.
fn parse_pid(text: &str) -> Option<u32> {
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pidfiles_hold_one_positive_pid_on_their_first_line() {
        assert_eq!(parse_pid("4242\n"), Some(4242));
        assert_eq!(parse_pid("  4242  \nextra\n"), Some(4242));
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("\n4242"), None);
        assert_eq!(parse_pid("0\n"), None);
        assert_eq!(parse_pid("-1\n"), None);
        assert_eq!(parse_pid("42abc"), None);
    }

    #[test]
    fn init_and_the_agent_itself_are_never_adopted() {
        assert!(check_process(1, None).unwrap_err().contains("pid 1"));
        let me = std::process::id();
        assert!(check_process(me, None)
            .unwrap_err()
            .contains("the agent itself"));
    }

    #[test]
    fn a_pidfile_anyone_may_write_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        fs::write(&path, "4242\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_pidfile(&path).map(|(pid, _)| pid), Ok(4242));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let refused = read_pidfile(&path).unwrap_err();
        assert!(refused.contains("mode 0666"), "{refused}");
    }

    #[test]
    fn a_users_pidfile_may_name_only_that_users_processes() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id();
        let uid = process_uid(pid).unwrap();
        assert_eq!(check_process(pid, Some(uid)), Ok(()));
        assert_eq!(check_process(pid, Some(0)), Ok(()), "root's pidfile");
        let other = if uid == 65534 { 65533 } else { 65534 };
        let refused = check_process(pid, Some(other)).unwrap_err();
        assert!(
            refused.contains(&format!("owned by uid {other}")),
            "{refused}"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
