//! Counting a target's connections and open file descriptors: the TCP tables of
//! `/proc/<pid>/net`, the namespace's TCP counters, netlink `sock_diag` ([`SocketScan`]), and
//! how a figure was reached ([`ConnectionsMethod`], [`ConnectionsBasis`]). Used for a single
//! target (`super::target`) and for a cgroup's processes (`super::group`).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::warn;

use super::procfs::{pid_dir, ProcFile};
use super::sockdiag::{self, DiagSocket, Listener};

/// The inode of an fd link `socket:[12345]`.
pub(crate) fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// TCP state `ESTABLISHED` in `/proc/net/tcp`.
pub(crate) const TCP_ESTABLISHED: u8 = 0x01;
/// TCP state `CLOSE_WAIT` in `/proc/net/tcp`: the client hung up, the server has not yet.
pub(crate) const TCP_CLOSE_WAIT: u8 = 0x08;
/// TCP state `LISTEN` in `/proc/net/tcp`.
pub(crate) const TCP_LISTEN: u8 = 0x0A;

/// One socket of a `/proc/<pid>/net/tcp` or `tcp6` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpSocket {
    /// The local port.
    pub(crate) local_port: u16,
    /// The TCP state (`01` established, `0A` listen...).
    pub(crate) state: u8,
    /// The socket's inode, as in `socket:[inode]` fd links (0 for sockets no fd holds, such
    /// as TIME_WAIT ones).
    pub(crate) inode: u64,
}

/// The sockets of a `/proc/net/tcp` or `tcp6` table; the header and malformed lines are
/// skipped.
pub(crate) fn tcp_sockets(text: &str) -> impl Iterator<Item = TcpSocket> + '_ {
    text.lines().filter_map(parse_tcp_line)
}

/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
/// ...`, addresses as `HEXADDR:HEXPORT` (32 hex digits for IPv6).
fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let mut fields = line.split_ascii_whitespace();
    fields.next()?.strip_suffix(':')?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    let state = fields.next()?;
    // After the state: tx:rx, tr:when, retrnsmt, uid, timeout, then the inode.
    let inode = fields.nth(5)?;
    let (_, port) = local.rsplit_once(':')?;
    Some(TcpSocket {
        local_port: u16::from_str_radix(port, 16).ok()?,
        state: u8::from_str_radix(state, 16).ok()?,
        inode: inode.parse().ok()?,
    })
}

/// How a target's `open_connections` are counted: `connections` in its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionsMethod {
    /// Netlink `sock_diag` in the agent's own network namespace, which the target shares:
    /// the kernel returns only the established sockets on the target's listening ports.
    SockDiag,
    /// Netlink `sock_diag` through a socket opened inside the target's network namespace
    /// (entered with `setns`, which needs `CAP_SYS_ADMIN`).
    SockDiagSetns,
    /// Parsing `/proc/<pid>/net/tcp` and `tcp6` and matching the target's socket fds: where
    /// netlink is refused (no `NETLINK_SOCK_DIAG`, another namespace that cannot be
    /// entered). Costs grow with every socket of the namespace.
    ProcNet,
}

/// What a target's `open_connections` figure rests on: `connectionsBasis` in its status.
///
/// Counting with netlink costs about 0.5 µs a connection (the kernel formats a record for
/// each), so beside tens of thousands of clients a count every sample would cost more than
/// the whole rest of the sample. Before each count the namespace's TCP counters are read
/// (`ActiveOpens`, `PassiveOpens` and `CurrEstab` in `/proc/<pid>/net/snmp`, a few µs
/// whatever the number of sockets), and they decide whether to count again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionsBasis {
    /// Counted at this sample.
    Counted,
    /// The last count, exact still: the namespace's TCP counters have not moved since it, so
    /// no connection of the namespace has opened or closed.
    Unchanged,
    /// The last count scaled by the change of the namespace's `CurrEstab` since it (the
    /// target's share of the namespace's connections is taken to hold): used while a count
    /// costs more than 250 µs, until the last count is older than 4,000 times what it cost
    /// (at least 1 s, at most 60 s), so that counting takes at most 0.025 % of a core.
    Estimated,
}

/// A count costing more than this is estimated between counts (see [`ConnectionsBasis`]).
const EXPENSIVE_COUNT: Duration = Duration::from_micros(250);
/// An estimated count is counted again once it is this many times as old as the count cost.
const RECOUNT_AFTER_COSTS: u32 = 4000;

/// The namespace's TCP counters from the `Tcp:` lines of `/proc/<pid>/net/snmp`: any
/// connection opening or closing moves at least one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TcpCounters {
    /// Connections this namespace opened (`connect`), ever.
    pub(crate) active_opens: u64,
    /// Connections it accepted, ever.
    pub(crate) passive_opens: u64,
    /// Its TCP sockets established or in CLOSE_WAIT now.
    pub(crate) curr_estab: u64,
}

/// The `Tcp:` counters of a `/proc/net/snmp` text (a line of names, then one of values);
/// `None` if one of the three is missing or malformed.
pub(crate) fn parse_tcp_counters(text: &str) -> Option<TcpCounters> {
    let mut lines = text.lines().filter(|line| line.starts_with("Tcp:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let mut counters = TcpCounters::default();
    let mut found = 0;
    for (name, value) in names
        .split_ascii_whitespace()
        .zip(values.split_ascii_whitespace())
    {
        let slot = match name {
            "ActiveOpens" => &mut counters.active_opens,
            "PassiveOpens" => &mut counters.passive_opens,
            "CurrEstab" => &mut counters.curr_estab,
            _ => continue,
        };
        *slot = value.parse().ok()?;
        found += 1;
    }
    (found == 3).then_some(counters)
}

/// The last netlink count, and the namespace's TCP counters just before it.
#[derive(Debug, Clone, Copy)]
struct LastCount {
    count: u64,
    counters: TcpCounters,
    at: Instant,
    cost: Duration,
}

impl LastCount {
    /// The figure without counting again, given the counters `now`, if the last count
    /// still stands (see [`ConnectionsBasis`]).
    fn carry(&self, counters: TcpCounters, now: Instant) -> Option<(u64, ConnectionsBasis)> {
        if counters == self.counters {
            return Some((self.count, ConnectionsBasis::Unchanged));
        }
        let recount_after = (self.cost * RECOUNT_AFTER_COSTS)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let fresh = now.saturating_duration_since(self.at) < recount_after;
        (self.cost >= EXPENSIVE_COUNT && fresh).then(|| {
            let estimate = match self.counters.curr_estab {
                // No connection then: each new one of the namespace is taken as the target's.
                0 => self.count + counters.curr_estab,
                then => {
                    let share = self.count as f64 / then as f64;
                    (share * counters.curr_estab as f64).round() as u64
                }
            };
            (estimate, ConnectionsBasis::Estimated)
        })
    }
}

/// The number of open file descriptors of the process whose `/proc` directory is `dir`: the
/// size the kernel reports for `<dir>/fd` (Linux 6.2 and later), else the entries listed.
pub(crate) fn count_fds(dir: &Path) -> io::Result<u64> {
    if let Some(count) = sockdiag::fd_count_from_size(dir)? {
        return Ok(count);
    }
    Ok(fs::read_dir(dir.join("fd"))?.count() as u64)
}

/// The netlink socket of the namespace last sampled, or why there is none.
#[derive(Debug, Default)]
enum Diag {
    #[default]
    Unopened,
    Open {
        socket: DiagSocket,
        /// The inode of the network namespace it answers for.
        netns: u64,
        method: ConnectionsMethod,
    },
    /// Netlink refused for the namespace with this inode: `/proc/<pid>/net` instead.
    Refused { netns: u64 },
}

/// Counts a target's connections, reusing its buffers and netlink socket from sample to
/// sample.
///
/// With netlink (see [`ConnectionsMethod`]), a sample reads the namespace's TCP counters;
/// when they moved, it makes two small dumps of the namespace's listening sockets and, unless
/// the count is estimated (see [`ConnectionsBasis`]), two filtered dumps of the established
/// ones. The target's fd links (to learn which listening sockets are its own) are read again
/// only when the namespace's listening sockets or the target's pid change. The
/// `/proc/<pid>/net` fallback reads every fd link and both tables on every sample.
#[derive(Debug, Default)]
pub(crate) struct SocketScan {
    /// The socket inodes of the target's fds, from the last scan of its fd links.
    pub(crate) inodes: HashSet<u64>,
    /// The ports the target listens on, from the last sample.
    listen_ports: Vec<u16>,
    /// Whether the target has IPv4 and IPv6 listeners (the families whose established
    /// sockets are asked for).
    listen_families: (bool, bool),
    diag: Diag,
    /// The agent's own network namespace inode, read once.
    own_netns: Option<u64>,
    listeners: Vec<Listener>,
    /// The listening sockets, and the owner, when the fd links were last read.
    scanned: Option<(Vec<Listener>, u64)>,
    method: Option<ConnectionsMethod>,
    /// Tests force the `/proc/<pid>/net` path.
    force_proc_net: bool,
    /// The last netlink count, carried or estimated from while the namespace's TCP
    /// counters allow (see [`ConnectionsBasis`]).
    last_count: Option<LastCount>,
    basis: Option<ConnectionsBasis>,
    /// `/proc/<pid>/net/snmp` of the process whose directory is the path, kept open.
    snmp: Option<(PathBuf, ProcFile)>,
    established_ports: Vec<u16>,
    table: Vec<u8>,
}

impl SocketScan {
    /// A scan that always counts from `/proc/<pid>/net`, as where netlink is refused.
    #[cfg(test)]
    pub(super) fn proc_net_only() -> Self {
        SocketScan {
            force_proc_net: true,
            ..SocketScan::default()
        }
    }

    /// The method of the last count and what the last figure rests on; `None` before one
    /// succeeded.
    pub(crate) fn counted(&self) -> Option<(ConnectionsMethod, ConnectionsBasis)> {
        Some((
            self.method?,
            self.basis.unwrap_or(ConnectionsBasis::Counted),
        ))
    }

    /// The TCP counters of the network namespace of the process whose directory is `dir`.
    fn tcp_counters(&mut self, dir: &Path) -> Option<TcpCounters> {
        if self.snmp.as_ref().is_none_or(|(open, _)| open != dir) {
            self.snmp = ProcFile::open(&dir.join("net/snmp"), 4096).map(|f| (dir.to_owned(), f));
        }
        parse_tcp_counters(&self.snmp.as_mut()?.1.read(false)?)
    }

    /// The ports the target listened on at the last count.
    pub(crate) fn listen_ports(&self) -> &[u16] {
        &self.listen_ports
    }

    /// Counts the ESTABLISHED (and CLOSE_WAIT) TCP sockets whose local port is one the
    /// processes `pids` LISTEN on: their clients, not their own outgoing connections (to a
    /// database, say). The
    /// network namespace is the first process's. `owner` identifies who `pids` are (a pid; a
    /// constant for a cgroup): when it changes, the fd links are read again. The error says
    /// why the count is absent.
    pub(crate) fn count_connections(&mut self, pids: &[u32], owner: u64) -> Result<u64, String> {
        let Some(&first) = pids.first() else {
            return Ok(0);
        };
        let dir = pid_dir(first);
        if !self.force_proc_net {
            if let Some(count) = self.count_by_netlink(&dir, pids, owner)? {
                return Ok(count);
            }
        }
        self.count_by_proc_net(&dir, pids)
    }

    /// `Ok(None)` when netlink cannot answer for the namespace of `dir` (use the fallback).
    fn count_by_netlink(
        &mut self,
        dir: &Path,
        pids: &[u32],
        owner: u64,
    ) -> Result<Option<u64>, String> {
        let Ok(netns) = sockdiag::namespace_inode(&dir.join("ns/net")) else {
            return Ok(None);
        };
        let current = match &self.diag {
            Diag::Open { netns: open, .. } | Diag::Refused { netns: open } => *open == netns,
            Diag::Unopened => false,
        };
        if !current {
            self.scanned = None;
            let own = match self.own_netns {
                Some(own) => Some(own),
                None => sockdiag::namespace_inode(Path::new("/proc/self/ns/net")).ok(),
            };
            self.own_netns = own;
            let opened = if own == Some(netns) {
                DiagSocket::open().map(|socket| (socket, ConnectionsMethod::SockDiag))
            } else {
                DiagSocket::open_in_namespace_of(&dir.join("ns/net"))
                    .map(|socket| (socket, ConnectionsMethod::SockDiagSetns))
            };
            self.diag = match opened {
                Ok((socket, method)) => Diag::Open {
                    socket,
                    netns,
                    method,
                },
                Err(e) => {
                    warn!(%e, dir = %dir.display(), "netlink sock_diag refused: counting \
                          connections from /proc/<pid>/net/tcp");
                    Diag::Refused { netns }
                }
            };
        }
        let Diag::Open { method, .. } = &self.diag else {
            return Ok(None);
        };
        let method = *method;
        // Before any dump: while no connection of the namespace opened or closed, the last
        // count stands (a listener opened or closed meanwhile has no clients to count yet,
        // and one closed keeps the clients it accepted).
        let counters = self.tcp_counters(dir);
        let same_owner = self.scanned.as_ref().is_some_and(|(_, o)| *o == owner);
        if let (true, Some(last), Some(counters)) = (same_owner, self.last_count, counters) {
            if counters == last.counters {
                self.method = Some(method);
                self.basis = Some(ConnectionsBasis::Unchanged);
                return Ok(Some(last.count));
            }
        }
        let Diag::Open { socket, .. } = &mut self.diag else {
            return Ok(None);
        };
        if let Err(e) = socket.listeners(&mut self.listeners) {
            warn!(%e, "netlink sock_diag failed: counting connections from /proc/<pid>/net/tcp");
            self.diag = Diag::Refused { netns };
            return Ok(None);
        }
        self.listeners.sort_unstable();
        self.listeners.dedup();
        let unchanged = self
            .scanned
            .as_ref()
            .is_some_and(|(listeners, scanned_owner)| {
                *scanned_owner == owner && *listeners == self.listeners
            });
        if !unchanged {
            self.read_socket_inodes(pids)?;
            self.listen_ports.clear();
            let inodes = &self.inodes;
            self.listen_ports.extend(
                self.listeners
                    .iter()
                    .filter(|l| inodes.contains(&l.inode))
                    .map(|l| l.port),
            );
            self.listen_ports.sort_unstable();
            self.listen_ports.dedup();
            let mine = || self.listeners.iter().filter(|l| inodes.contains(&l.inode));
            self.listen_families = (mine().any(|l| !l.v6), mine().any(|l| l.v6));
            self.scanned = Some((self.listeners.clone(), owner));
            self.last_count = None;
        }
        let started = Instant::now();
        if let (Some(last), Some(counters)) = (self.last_count, counters) {
            if let Some((count, basis)) = last.carry(counters, started) {
                self.method = Some(method);
                self.basis = Some(basis);
                return Ok(Some(count));
            }
        }
        let Diag::Open { socket, .. } = &mut self.diag else {
            return Ok(None);
        };
        let (v4, v6) = self.listen_families;
        match socket.count_established(&self.listen_ports, v4, v6) {
            Ok(count) => {
                self.method = Some(method);
                self.basis = Some(ConnectionsBasis::Counted);
                self.last_count = counters.map(|counters| LastCount {
                    count,
                    counters,
                    at: started,
                    cost: started.elapsed(),
                });
                Ok(Some(count))
            }
            Err(e) => {
                warn!(%e, "netlink sock_diag failed: counting connections from /proc/<pid>/net/tcp");
                self.diag = Diag::Refused { netns };
                Ok(None)
            }
        }
    }

    /// Collects the socket inodes of every fd of `pids` (processes that exited meanwhile are
    /// skipped).
    fn read_socket_inodes(&mut self, pids: &[u32]) -> Result<(), String> {
        self.inodes.clear();
        for &pid in pids {
            match self.add_fds(&pid_dir(pid)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(format!(
                        "cannot read /proc/{pid}/fd ({e}): open_connections absent; run the \
                         agent as the target's user or with CAP_SYS_PTRACE"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Counts the entries of `<dir>/fd` and adds their socket inodes to those collected.
    fn add_fds(&mut self, dir: &Path) -> io::Result<u64> {
        let mut count = 0;
        for entry in fs::read_dir(dir.join("fd"))? {
            // An fd closed during the scan is simply not counted.
            let Ok(entry) = entry else { continue };
            count += 1;
            if let Ok(link) = fs::read_link(entry.path()) {
                if let Some(inode) = socket_inode(link.as_os_str().as_bytes()) {
                    self.inodes.insert(inode);
                }
            }
        }
        Ok(count)
    }

    /// The fallback: every fd link of `pids`, then `<dir>/net/tcp` and `tcp6`.
    fn count_by_proc_net(&mut self, dir: &Path, pids: &[u32]) -> Result<u64, String> {
        self.read_socket_inodes(pids)?;
        self.listen_ports.clear();
        self.established_ports.clear();
        let mut read_any = false;
        for table in ["net/tcp", "net/tcp6"] {
            self.table.clear();
            let read = File::open(dir.join(table)).and_then(|mut f| f.read_to_end(&mut self.table));
            let Ok(_) = read else { continue };
            let Ok(text) = std::str::from_utf8(&self.table) else {
                continue;
            };
            read_any = true;
            for socket in tcp_sockets(text).filter(|s| self.inodes.contains(&s.inode)) {
                match socket.state {
                    TCP_LISTEN => self.listen_ports.push(socket.local_port),
                    TCP_ESTABLISHED | TCP_CLOSE_WAIT => {
                        self.established_ports.push(socket.local_port)
                    }
                    _ => {}
                }
            }
        }
        if !read_any {
            return Err(format!(
                "cannot read {}/net/tcp: open_connections absent",
                dir.display()
            ));
        }
        self.listen_ports.sort_unstable();
        self.listen_ports.dedup();
        self.method = Some(ConnectionsMethod::ProcNet);
        self.basis = Some(ConnectionsBasis::Counted);
        let listening = &self.listen_ports;
        Ok(self
            .established_ports
            .iter()
            .filter(|port| listening.contains(port))
            .count() as u64)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 648 1 000000001c3c6623 100 0 0 10 0
   1: 0100007F:B204 0100007F:8E49 06 00000000:00000000 03:000006A8 00000000     0        0 0 3 000000005caa11b0
   2: 0100007F:1F90 0100007F:D3A2 01 00000000:00000000 00:00000000 00000000  1000        0 23401 1 0000000000000000 20 4 30 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 23456 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D3A4 01 00000000:00000000 02:0000034A 00000000  1000        0 23457 1 0000000000000000 20 4 31 10 -1
";

    #[test]
    fn tcp_tables_give_port_state_and_inode() {
        let sockets: Vec<TcpSocket> = tcp_sockets(TCP).collect();
        assert_eq!(
            sockets,
            [
                TcpSocket {
                    local_port: 2024,
                    state: TCP_LISTEN,
                    inode: 648
                },
                TcpSocket {
                    local_port: 0xB204,
                    state: 0x06,
                    inode: 0
                },
                TcpSocket {
                    local_port: 8080,
                    state: TCP_ESTABLISHED,
                    inode: 23401
                },
            ]
        );
        let sockets: Vec<TcpSocket> = tcp_sockets(TCP6).collect();
        assert_eq!(
            sockets,
            [
                TcpSocket {
                    local_port: 8080,
                    state: TCP_LISTEN,
                    inode: 23456
                },
                TcpSocket {
                    local_port: 8080,
                    state: TCP_ESTABLISHED,
                    inode: 23457
                },
            ]
        );
    }

    #[test]
    fn malformed_tcp_lines_are_skipped() {
        assert_eq!(tcp_sockets("").count(), 0);
        assert_eq!(
            tcp_sockets("   0: 0100007F:1F90 0100007F:D3A2 01").count(),
            0
        );
        assert_eq!(
            tcp_sockets("   0: 0100007F:XYZW 0100007F:D3A2 01 0:0 0:0 0 0 0 12").count(),
            0
        );
        assert_eq!(
            tcp_sockets("   0: 0100007F:1F90 0100007F:D3A2 01 0:0 0:0 0 0 0 12").count(),
            1
        );
        assert_eq!(
            tcp_sockets("   0 0100007F:1F90 0100007F:D3A2 01 0:0 0:0 0 0 0 12").count(),
            0,
            "no slot"
        );
    }

    #[test]
    fn socket_links_give_inodes() {
        assert_eq!(socket_inode(b"socket:[23456]"), Some(23456));
        assert_eq!(socket_inode(b"pipe:[23456]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"socket:[12"), None);
    }

    #[test]
    fn the_tcp_counters_of_proc_net_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens \
                    AttemptFails EstabResets CurrEstab InSegs\n\
                    Tcp: 1 200 120000 -1 10184723 168920 10015756 68960 7 93974246\n\
                    Udp: InDatagrams\nUdp: 5\n";
        let counters = TcpCounters {
            active_opens: 10_184_723,
            passive_opens: 168_920,
            curr_estab: 7,
        };
        assert_eq!(parse_tcp_counters(text), Some(counters));
        assert_eq!(
            parse_tcp_counters("Tcp: ActiveOpens PassiveOpens\nTcp: 1 2\n"),
            None
        );
        assert_eq!(
            parse_tcp_counters("Tcp: ActiveOpens PassiveOpens CurrEstab\nTcp: 1 x 3\n"),
            None
        );
        assert_eq!(parse_tcp_counters(""), None);
        // This machine's own file parses.
        assert!(parse_tcp_counters(&fs::read_to_string("/proc/net/snmp").unwrap()).is_some());
    }

    #[test]
    fn a_count_stands_while_the_counters_do_and_is_estimated_only_while_counting_is_costly() {
        let at = Instant::now();
        let counters = TcpCounters {
            active_opens: 10,
            passive_opens: 100,
            curr_estab: 50,
        };
        let cheap = LastCount {
            count: 40,
            counters,
            at,
            cost: Duration::from_micros(100),
        };
        let later = |secs: f64| at + Duration::from_secs_f64(secs);
        assert_eq!(
            cheap.carry(counters, later(30.0)),
            Some((40, ConnectionsBasis::Unchanged))
        );
        let more = TcpCounters {
            passive_opens: 110,
            curr_estab: 60,
            ..counters
        };
        assert_eq!(cheap.carry(more, later(0.1)), None, "cheap: counted again");
        let costly = LastCount {
            cost: Duration::from_millis(8),
            ..cheap
        };
        // The target held 40 of the namespace's 50: 48 of 60.
        assert_eq!(
            costly.carry(more, later(1.0)),
            Some((48, ConnectionsBasis::Estimated))
        );
        assert_eq!(
            costly.carry(more, later(32.0)),
            None,
            "4,000 × 8 ms: counted again"
        );
        let none_then = LastCount {
            count: 0,
            counters: TcpCounters {
                curr_estab: 0,
                ..counters
            },
            ..costly
        };
        assert_eq!(
            none_then.carry(more, later(1.0)),
            Some((60, ConnectionsBasis::Estimated))
        );
    }
    #[test]
    fn this_process_s_clients_are_counted_by_netlink_and_by_proc_net() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();

        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let accepted: Vec<_> = (0..3).map(|_| listener.accept().unwrap().0).collect();
        for force_proc_net in [false, true] {
            let mut scan = if force_proc_net {
                SocketScan::proc_net_only()
            } else {
                SocketScan::default()
            };
            // Both ends are in this process: only the accepted ones are on the listening port.
            // (Other tests of this binary may hold connections of their own.)
            let count = scan.count_connections(&[me], u64::from(me)).unwrap();
            assert!(count >= 3, "{count} ({:?})", scan.counted());
            assert!(scan.listen_ports().contains(&port));
            let expected = if force_proc_net {
                ConnectionsMethod::ProcNet
            } else {
                ConnectionsMethod::SockDiag
            };
            assert_eq!(scan.counted().map(|(method, _)| method), Some(expected));
        }
        drop((clients, accepted));
    }

    /// Started as a child process by the tests below (with `PERFPILOT_TEST_CONNECTIONS`): a
    /// server holding that many established loopback connections, both ends in itself, until
    /// its stdin closes.
    #[test]
    #[ignore = "the server half of the connection tests, run as their child process"]
    fn connection_server_child() {
        let Some(count) = std::env::var("PERFPILOT_TEST_CONNECTIONS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pairs: Vec<_> = (0..count)
            .map(|_| {
                let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                (client, listener.accept().unwrap().0)
            })
            .collect();
        let mut pairs = pairs;
        println!("ready {port}");
        // `open N` lines open N more connections; until the parent closes our stdin, or exits.
        for line in std::io::stdin().lines().map_while(Result::ok) {
            let Some(more) = line.strip_prefix("open ").and_then(|n| n.parse().ok()) else {
                continue;
            };
            for _ in 0..more {
                let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                pairs.push((client, listener.accept().unwrap().0));
            }
            println!("opened {}", pairs.len());
        }
        drop(pairs);
    }

    /// A child process from [`connection_server_child`], killed on drop, and the lines it
    /// prints (`None` at its end).
    pub(in crate::sample) struct ServerChild(
        std::process::Child,
        std::sync::mpsc::Receiver<Option<String>>,
    );

    impl ServerChild {
        /// The next line starting with `prefix`, waiting at most 60 s; `None` if the child
        /// ended first.
        fn line_starting(&self, prefix: &str) -> Option<String> {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.1.recv_timeout(left) {
                    Ok(Some(line)) if line.starts_with(prefix) => return Some(line),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        panic!("waited 60 s for the server child to print {prefix:?}")
                    }
                }
            }
        }

        /// Opens `more` connections in the child and waits until they are.
        fn open(&mut self, more: usize) {
            use std::io::Write;
            let stdin = self.0.stdin.as_mut().unwrap();
            writeln!(stdin, "open {more}").unwrap();
            stdin.flush().unwrap();
            self.line_starting("opened ")
                .expect("the server child ended before opening connections");
        }
    }

    impl Drop for ServerChild {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Starts [`connection_server_child`] with `count` connections, in a new network
    /// namespace with `new_netns` (through `unshare -n`); `None` (with the reason printed)
    /// where that cannot run here.
    pub(in crate::sample) fn start_server(
        count: usize,
        new_netns: bool,
    ) -> Option<(ServerChild, u32)> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().unwrap();
        let test_args = [
            "--exact",
            "sample::connection_count::tests::connection_server_child",
            "--ignored",
            "--nocapture",
        ];
        let mut command = if new_netns {
            let mut command = Command::new("unshare");
            command.args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""]);
            command.arg(&exe).args(test_args);
            command
        } else {
            let mut command = Command::new(&exe);
            command.args(test_args);
            command
        };
        let child = command
            .env("PERFPILOT_TEST_CONNECTIONS", count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                crate::test_support::skip(&format!("cannot start the server child ({e})"));
                return None;
            }
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(Some(line));
            }
            let _ = tx.send(None);
        });
        let child = ServerChild(child, rx);
        match child.line_starting("ready ") {
            Some(_) => {
                let pid = child.0.id();
                Some((child, pid))
            }
            None => {
                crate::test_support::skip("the server child did not start (no unshare -n here?)");
                None
            }
        }
    }

    /// The pid of the server inside `unshare -n sh -c ... exec`: `sh` execs the test binary,
    /// so the pid stays the same.
    fn counts(pid: u32, force_proc_net: bool) -> (u64, Option<ConnectionsMethod>) {
        let mut scan = if force_proc_net {
            SocketScan::proc_net_only()
        } else {
            SocketScan::default()
        };
        let count = scan.count_connections(&[pid], u64::from(pid)).unwrap();
        (count, scan.counted().map(|(method, _)| method))
    }

    #[test]
    fn netlink_and_proc_net_counts_agree_on_real_loopback_sockets() {
        let Some((_child, pid)) = start_server(40, false) else {
            return;
        };
        let (netlink, method) = counts(pid, false);
        let (proc_net, fallback) = counts(pid, true);
        assert_eq!(method, Some(ConnectionsMethod::SockDiag));
        assert_eq!(fallback, Some(ConnectionsMethod::ProcNet));
        assert_eq!(netlink, 40);
        assert_eq!(proc_net, 40);
    }

    #[test]
    fn a_target_in_another_network_namespace_is_counted_inside_it() {
        let Some((_child, pid)) = start_server(25, true) else {
            return;
        };
        let own = sockdiag::namespace_inode(Path::new("/proc/self/ns/net")).unwrap();
        let theirs = sockdiag::namespace_inode(&pid_dir(pid).join("ns/net")).unwrap();
        if own == theirs {
            return crate::test_support::skip(
                "unshare -n did not give the child its own namespace",
            );
        }
        let (netlink, method) = counts(pid, false);
        let (proc_net, _) = counts(pid, true);
        assert_eq!(proc_net, 25, "/proc/<pid>/net is the child's namespace");
        match method {
            Some(ConnectionsMethod::SockDiagSetns) => assert_eq!(netlink, 25),
            // Without CAP_SYS_ADMIN the namespace cannot be entered: the fallback counts.
            Some(ConnectionsMethod::ProcNet) => {
                println!("setns refused here: the fallback counted");
                assert_eq!(netlink, 25);
            }
            other => panic!("unexpected method {other:?}"),
        }
    }

    /// In a namespace of its own, nothing else moves the TCP counters: the count stands
    /// until the server opens more, then is counted again, or estimated when costly.
    #[test]
    fn a_target_count_is_carried_while_its_namespace_is_still_and_follows_new_connections() {
        let Some((mut child, pid)) = start_server(30, true) else {
            return;
        };
        let own = sockdiag::namespace_inode(Path::new("/proc/self/ns/net")).unwrap();
        let theirs = sockdiag::namespace_inode(&pid_dir(pid).join("ns/net")).unwrap();
        if own == theirs {
            return crate::test_support::skip(
                "unshare -n did not give the child its own namespace",
            );
        }
        let mut scan = SocketScan::default();
        let count = |scan: &mut SocketScan| {
            let count = scan.count_connections(&[pid], u64::from(pid)).unwrap();
            (count, scan.counted().unwrap().1)
        };
        assert_eq!(count(&mut scan), (30, ConnectionsBasis::Counted));
        if scan.counted().unwrap().0 == ConnectionsMethod::ProcNet {
            return crate::test_support::skip(
                "setns refused here, the fallback counts every sample",
            );
        }
        assert_eq!(count(&mut scan), (30, ConnectionsBasis::Unchanged));
        assert_eq!(count(&mut scan), (30, ConnectionsBasis::Unchanged));
        // As if counting were cheap (the walk of the kernel's socket hash alone may take
        // more than 250 µs on a busy machine): a change is counted.
        scan.last_count.as_mut().unwrap().cost = Duration::from_micros(1);
        child.open(4);
        assert_eq!(
            count(&mut scan),
            (34, ConnectionsBasis::Counted),
            "cheap: counted"
        );
        // As if counting had cost 10 ms: the next change is estimated. Client and server
        // are both in the namespace, so the target holds half its connections.
        scan.last_count.as_mut().unwrap().cost = Duration::from_millis(10);
        child.open(6);
        assert_eq!(count(&mut scan), (40, ConnectionsBasis::Estimated));
        // Once the count is older than 4,000 × its cost, it is counted again.
        scan.last_count.as_mut().unwrap().at -= Duration::from_secs(45);
        assert_eq!(count(&mut scan), (40, ConnectionsBasis::Counted));
        assert_eq!(count(&mut scan), (40, ConnectionsBasis::Unchanged));
    }
}
