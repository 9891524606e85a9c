//! Counting TCP connections with the kernel's `sock_diag` netlink interface (`INET_DIAG`),
//! instead of reading `/proc/<pid>/net/tcp{,6}`, whose text lists every socket of the network
//! namespace and which the kernel builds by walking its whole socket hash.
//!
//! A [`DiagSocket`] sends `SOCK_DIAG_BY_FAMILY` dump requests (`inet_diag_req_v2`, TCP, IPv4
//! then IPv6) restricted to one TCP state and, for the established sockets, to the target's
//! listening ports by a bytecode filter the kernel runs on each socket: only the target's
//! clients come back, and they are counted from the returned headers, never stored.
//!
//! The socket answers for the network namespace it was created in: the agent's own
//! ([`DiagSocket::open`]), or a target's ([`DiagSocket::open_in_namespace_of`], which needs
//! `CAP_SYS_ADMIN` to enter it).
//!
//! The socket calls themselves (`socket`, `setns`, `sendto`, `recv`) are safe functions of
//! [`crate::sys`]; this file builds the requests and parses the answers.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_REQ_BYTECODE` (linux/inet_diag.h): the request attribute holding the filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// `INET_DIAG_BC_S_EQ`: the socket's local port equals the next op's `no` field.
const INET_DIAG_BC_S_EQ: u8 = 11;
/// TCP states (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LISTEN: u8 = 10;
/// The states of a connection its server still holds: established, or closed by the client
/// and not yet by the server. The kernel's `CurrEstab` counter (`/proc/net/snmp`) counts the
/// same two.
const CONNECTED: u32 = (1 << TCP_ESTABLISHED) | (1 << TCP_CLOSE_WAIT);
/// The most ports one filter lists (each costs 8 bytes of bytecode); more fall back to
/// matching the returned headers without a kernel filter.
const MAX_FILTERED_PORTS: usize = 64;

/// `struct nlmsghdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_sockid`.
#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagSockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

/// `struct nlattr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct NlAttr {
    len: u16,
    kind: u16,
}

/// Offsets in `struct inet_diag_msg` (after the `nlmsghdr`): family, state, then the
/// `inet_diag_sockid` (local port first, big endian), and the inode last.
const MSG_STATE: usize = 1;
const MSG_SPORT: usize = 4;
const MSG_INODE: usize = 68;
const MSG_LEN: usize = 72;
const HDR_LEN: usize = size_of::<NlMsgHdr>();

/// A listening TCP socket of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Listener {
    /// Its inode, as in `socket:[inode]` fd links.
    pub(crate) inode: u64,
    /// Its local port.
    pub(crate) port: u16,
    /// Whether it is an IPv6 socket: its accepted connections are too (IPv4 clients of a
    /// dual-stack listener included, as mapped addresses).
    pub(crate) v6: bool,
}

/// A `NETLINK_SOCK_DIAG` socket and the buffers of its requests, reused from call to call.
#[derive(Debug)]
pub(crate) struct DiagSocket {
    fd: OwnedFd,
    request: Vec<u8>,
    buf: Vec<u8>,
    seq: u32,
    /// Whether the kernel refused a bytecode filter once (then headers are matched instead).
    filter_refused: bool,
}

impl DiagSocket {
    /// A socket answering for the agent's own network namespace.
    pub(crate) fn open() -> io::Result<DiagSocket> {
        let fd = crate::sys::sock_diag_socket()?;
        Ok(DiagSocket {
            fd,
            request: Vec::with_capacity(128),
            // Dumps come in messages of up to 32 KiB.
            buf: vec![0; 64 << 10],
            seq: 0,
            filter_refused: false,
        })
    }

    /// A socket answering for the network namespace `ns` (a `/proc/<pid>/ns/net` file):
    /// created on a short-lived thread that enters the namespace (`setns`, which needs
    /// `CAP_SYS_ADMIN`), so that the agent's own threads stay where they are. A netlink socket
    /// keeps the namespace it was created in.
    pub(crate) fn open_in_namespace_of(ns: &Path) -> io::Result<DiagSocket> {
        let ns_file = std::fs::File::open(ns)?;
        std::thread::Builder::new()
            .name("perfpilot-setns".into())
            .spawn(move || {
                // Only this thread's network namespace changes, and the thread ends here.
                crate::sys::enter_net_namespace(&ns_file)?;
                DiagSocket::open()
            })?
            .join()
            .map_err(|_| io::Error::other("the setns thread panicked"))?
    }

    /// The listening TCP sockets (IPv4 and IPv6) of the namespace, into `out` (cleared).
    pub(crate) fn listeners(&mut self, out: &mut Vec<Listener>) -> io::Result<()> {
        out.clear();
        for family in [libc::AF_INET, libc::AF_INET6] {
            self.dump(family as u8, 1 << TCP_LISTEN, &[], |msg| {
                out.push(Listener {
                    inode: u64::from(read_u32(msg, MSG_INODE)),
                    port: read_port(msg),
                    v6: family == libc::AF_INET6,
                })
            })?;
        }
        Ok(())
    }

    /// The ESTABLISHED (and CLOSE_WAIT) TCP sockets whose local port is one of `ports`, among
    /// the IPv4 ones with `v4` and the IPv6 ones with `v6`: the clients of servers listening
    /// on them.
    /// Counted, not stored. Each family is one walk of the kernel's whole established-socket
    /// hash (IPv4 and IPv6 share it), so a family without listeners is not asked.
    pub(crate) fn count_established(
        &mut self,
        ports: &[u16],
        v4: bool,
        v6: bool,
    ) -> io::Result<u64> {
        if ports.is_empty() {
            return Ok(0);
        }
        let mut count = 0u64;
        let families = [(libc::AF_INET, v4), (libc::AF_INET6, v6)];
        for family in families.into_iter().filter(|f| f.1).map(|f| f.0) {
            self.dump(family as u8, CONNECTED, ports, |msg| {
                // The kernel filter already kept only these ports; the check costs little and
                // is what counts when the filter was refused.
                if ports.contains(&read_port(msg)) {
                    count += 1;
                }
            })?;
        }
        Ok(count)
    }

    /// One dump of `family`'s TCP sockets in `states` (a mask of `1 << state`), with a
    /// local-port filter when `ports` is not empty; calls `each` with every `inet_diag_msg`
    /// returned.
    fn dump(
        &mut self,
        family: u8,
        states: u32,
        ports: &[u16],
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        let filtered =
            !ports.is_empty() && !self.filter_refused && ports.len() <= MAX_FILTERED_PORTS;
        match self.dump_once(family, states, filtered.then_some(ports), &mut each) {
            Err(e) if filtered && e.raw_os_error() == Some(libc::EINVAL) => {
                // A kernel that does not take the filter: match the headers instead.
                self.filter_refused = true;
                self.dump_once(family, states, None, &mut each)
            }
            result => result,
        }
    }

    fn dump_once(
        &mut self,
        family: u8,
        states: u32,
        ports: Option<&[u16]>,
        each: &mut impl FnMut(&[u8]),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        build_request(&mut self.request, self.seq, family, states, ports);
        self.send()?;
        loop {
            let len = self.recv()?;
            let mut offset = 0;
            while offset + HDR_LEN <= len {
                let header = read_header(&self.buf[offset..]);
                let msg_len = header.len as usize;
                if msg_len < HDR_LEN || offset + msg_len > len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "sock_diag: truncated netlink message",
                    ));
                }
                if header.seq == self.seq {
                    match i32::from(header.kind) {
                        libc::NLMSG_DONE => return Ok(()),
                        libc::NLMSG_ERROR => {
                            let body = &self.buf[offset + HDR_LEN..offset + msg_len];
                            let errno = body
                                .get(..4)
                                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                                .unwrap_or(-libc::EIO);
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        _ if header.kind == SOCK_DIAG_BY_FAMILY && msg_len >= HDR_LEN + MSG_LEN => {
                            let msg = &self.buf[offset + HDR_LEN..offset + msg_len];
                            if states & (1u32 << (msg[MSG_STATE] & 31)) != 0 {
                                each(msg);
                            }
                        }
                        _ => {}
                    }
                }
                // Messages are aligned to 4 bytes.
                offset += (msg_len + 3) & !3;
            }
        }
    }

    fn send(&self) -> io::Result<()> {
        crate::sys::netlink_send_to_kernel(self.fd.as_fd(), &self.request)
    }

    fn recv(&mut self) -> io::Result<usize> {
        crate::sys::recv(self.fd.as_fd(), &mut self.buf)
    }
}

/// Offset of `idiag_uid` in `struct inet_diag_msg`.
const MSG_UID: usize = 64;

/// The uid owning the TCP socket whose local address is `local` and whose peer is `remote`,
/// in the agent's network namespace: for a connection the agent accepted, pass the client's
/// address as `local` and the agent's as `remote` to learn which user's process connected
/// (a socket belongs to the user that created it). `Ok(None)`: no such socket (it is gone,
/// or lives in another namespace). One exact lookup (`inet_diag_find_one`), no dump.
pub(crate) fn socket_owner_uid(
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) -> io::Result<Option<u32>> {
    use std::net::{IpAddr, SocketAddr};
    // Both ends in one family: a v4 client of a v6 socket appears as a mapped address.
    let v6 = local.is_ipv6() || remote.is_ipv6();
    let words = |addr: &SocketAddr| -> [u8; 16] {
        match (addr.ip(), v6) {
            (IpAddr::V4(v4), false) => {
                let mut out = [0u8; 16];
                out[..4].copy_from_slice(&v4.octets());
                out
            }
            (IpAddr::V4(v4), true) => v4.to_ipv6_mapped().octets(),
            (IpAddr::V6(v6), _) => v6.octets(),
        }
    };
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    let mut request = Vec::with_capacity(HDR_LEN + size_of::<InetDiagReqV2>());
    push_header(
        &mut request,
        NlMsgHdr {
            len: (HDR_LEN + size_of::<InetDiagReqV2>()) as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: libc::NLM_F_REQUEST as u16,
            seq: 1,
            pid: 0,
        },
    );
    request.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    request.extend_from_slice(&local.port().to_be_bytes());
    request.extend_from_slice(&remote.port().to_be_bytes());
    request.extend_from_slice(&words(&local));
    request.extend_from_slice(&words(&remote));
    request.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    request.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    debug_assert_eq!(request.len(), HDR_LEN + size_of::<InetDiagReqV2>());
    let fd = crate::sys::sock_diag_socket()?;
    crate::sys::netlink_send_to_kernel(fd.as_fd(), &request)?;
    let mut buf = [0u8; 1024];
    let len = crate::sys::recv(fd.as_fd(), &mut buf)?;
    if len < HDR_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag: truncated netlink message",
        ));
    }
    let header = read_header(&buf);
    match i32::from(header.kind) {
        libc::NLMSG_ERROR => {
            let errno = buf
                .get(HDR_LEN..HDR_LEN + 4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(-libc::EIO);
            match -errno {
                0 | libc::ENOENT => Ok(None),
                errno => Err(io::Error::from_raw_os_error(errno)),
            }
        }
        _ if header.kind == SOCK_DIAG_BY_FAMILY && len >= HDR_LEN + MSG_LEN => {
            Ok(Some(read_u32(&buf[HDR_LEN..], MSG_UID)))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag: unexpected answer",
        )),
    }
}

/// The request: `nlmsghdr`, `inet_diag_req_v2` for `family`'s TCP sockets in `states`, and,
/// with `ports`, an `INET_DIAG_REQ_BYTECODE` attribute keeping local ports in `ports`: one
/// `S_EQ` op per port, its "yes" jumping to the end (accept), its "no" to the next op; the
/// last op's "no" jumps 4 bytes past the end (reject).
fn build_request(out: &mut Vec<u8>, seq: u32, family: u8, states: u32, ports: Option<&[u16]>) {
    out.clear();
    let bytecode_len = ports.map_or(0, |p| 8 * p.len());
    let attr_len = if bytecode_len > 0 {
        size_of::<NlAttr>() + bytecode_len
    } else {
        0
    };
    let total = HDR_LEN + size_of::<InetDiagReqV2>() + attr_len;
    push_header(
        out,
        NlMsgHdr {
            len: total as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            seq,
            pid: 0,
        },
    );
    // inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed sockid.
    out.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    out.extend_from_slice(&states.to_ne_bytes());
    out.resize(HDR_LEN + size_of::<InetDiagReqV2>(), 0);
    if let Some(ports) = ports.filter(|p| !p.is_empty()) {
        out.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        out.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        let len = bytecode_len;
        for (index, &port) in ports.iter().enumerate() {
            let at = 8 * index;
            let yes = (len - at) as u8;
            let no: u16 = if index + 1 == ports.len() { 12 } else { 8 };
            // inet_diag_bc_op { code, yes, no } then { 0, 0, port } (host order, as the
            // kernel compares it with the socket's host-order port).
            out.extend_from_slice(&[INET_DIAG_BC_S_EQ, yes]);
            out.extend_from_slice(&no.to_ne_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&port.to_ne_bytes());
        }
    }
    debug_assert_eq!(out.len(), total);
}

fn push_header(out: &mut Vec<u8>, header: NlMsgHdr) {
    out.extend_from_slice(&header.len.to_ne_bytes());
    out.extend_from_slice(&header.kind.to_ne_bytes());
    out.extend_from_slice(&header.flags.to_ne_bytes());
    out.extend_from_slice(&header.seq.to_ne_bytes());
    out.extend_from_slice(&header.pid.to_ne_bytes());
}

fn read_header(bytes: &[u8]) -> NlMsgHdr {
    NlMsgHdr {
        len: read_u32(bytes, 0),
        kind: u16::from_ne_bytes([bytes[4], bytes[5]]),
        flags: u16::from_ne_bytes([bytes[6], bytes[7]]),
        seq: read_u32(bytes, 8),
        pid: read_u32(bytes, 12),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The local port of an `inet_diag_msg` (big endian on the wire).
fn read_port(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[MSG_SPORT], msg[MSG_SPORT + 1]])
}

/// The inode of a namespace file (`/proc/self/ns/net`, `/proc/<pid>/ns/net`): two processes
/// share a network namespace when these are equal.
pub(crate) fn namespace_inode(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino())
}

/// The number of open file descriptors of the process whose `/proc` directory is `dir`, from
/// the size the kernel reports for `<dir>/fd` (Linux 6.2 and later: a count of its fd table,
/// without listing it); `None` where the size says nothing (older kernels report 0).
pub(crate) fn fd_count_from_size(dir: &Path) -> io::Result<Option<u64>> {
    let size = std::fs::metadata(dir.join("fd"))?.len();
    Ok((size > 0).then_some(size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_owner_of_a_client_socket_is_this_process_user() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).unwrap();
        let local = client.local_addr().unwrap();
        match socket_owner_uid(local, server) {
            Ok(uid) => assert_eq!(uid, Some(crate::sys::effective_uid())),
            Err(e) => crate::test_support::skip(&format!("sock_diag refused here: {e}")),
        }
        drop(client);
        let gone: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(socket_owner_uid(gone, server).ok().flatten(), None);
    }

    #[test]
    fn the_request_layout_matches_the_kernel_structs() {
        assert_eq!(size_of::<NlMsgHdr>(), 16);
        assert_eq!(size_of::<InetDiagSockId>(), 48);
        assert_eq!(size_of::<InetDiagReqV2>(), 56);
        let mut request = Vec::new();
        build_request(
            &mut request,
            7,
            libc::AF_INET as u8,
            CONNECTED,
            Some(&[80, 443]),
        );
        assert_eq!(request.len(), 16 + 56 + 4 + 16);
        assert_eq!(read_u32(&request, 0) as usize, request.len());
        assert_eq!(read_u32(&request, 8), 7, "sequence number");
        assert_eq!(read_u32(&request, 20), 0b1_0000_0010, "states");
        // First op: port 80, yes = 16 (to the end), no = 8 (next op).
        let ops = &request[16 + 56 + 4..];
        assert_eq!(&ops[..2], &[INET_DIAG_BC_S_EQ, 16]);
        assert_eq!(u16::from_ne_bytes([ops[2], ops[3]]), 8);
        assert_eq!(u16::from_ne_bytes([ops[6], ops[7]]), 80);
        // Last op: yes = 8 (the end), no = 12 (past it: reject).
        assert_eq!(&ops[8..10], &[INET_DIAG_BC_S_EQ, 8]);
        assert_eq!(u16::from_ne_bytes([ops[10], ops[11]]), 12);
        assert_eq!(u16::from_ne_bytes([ops[14], ops[15]]), 443);
    }

    /// Real loopback sockets: the kernel's counts match what this test opened.
    #[test]
    fn counts_established_clients_of_listening_ports() {
        let mut diag = match DiagSocket::open() {
            Ok(diag) => diag,
            Err(e) => {
                return crate::test_support::skip(&format!(
                    "netlink sock_diag unavailable here ({e})"
                ));
            }
        };
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        let v6 = TcpListener::bind("[::1]:0").ok();
        let mut listeners = Vec::new();
        diag.listeners(&mut listeners).unwrap();
        assert!(
            listeners.iter().any(|l| l.port == v4_port && l.inode > 0),
            "{listeners:?}"
        );
        assert_eq!(diag.count_established(&[v4_port], true, true).unwrap(), 0);

        let clients: Vec<_> = (0..5)
            .map(|_| TcpStream::connect(("127.0.0.1", v4_port)).unwrap())
            .collect();
        let accepted: Vec<_> = (0..5).map(|_| v4.accept().unwrap().0).collect();
        // The server ends only: the clients' local ports are ephemeral ones.
        assert_eq!(diag.count_established(&[v4_port], true, true).unwrap(), 5);
        assert_eq!(
            diag.count_established(&[v4_port], false, true).unwrap(),
            0,
            "IPv4 clients are IPv4 sockets"
        );
        let mut v6_pairs = Vec::new();
        if let Some(v6) = &v6 {
            let v6_port = v6.local_addr().unwrap().port();
            for _ in 0..3 {
                let client = TcpStream::connect(("::1", v6_port)).unwrap();
                v6_pairs.push((client, v6.accept().unwrap().0));
            }
            assert_eq!(diag.count_established(&[v6_port], false, true).unwrap(), 3);
            assert_eq!(
                diag.count_established(&[v4_port, v6_port], true, true)
                    .unwrap(),
                8
            );
        } else {
            // The IPv4 half below still runs.
            crate::test_support::skip("the IPv6 half of the sock_diag count: no ::1 here");
        }
        // Without the kernel filter, the same count from the headers.
        diag.filter_refused = true;
        assert_eq!(diag.count_established(&[v4_port], true, true).unwrap(), 5);
        diag.filter_refused = false;

        // A client that hangs up leaves the server's end in CLOSE_WAIT: still held, still
        // counted (as the kernel's CurrEstab does), until the server closes it too.
        let (mut clients, mut accepted) = (clients, accepted);
        drop(clients.pop());
        let mut byte = [0u8; 1];
        let last = accepted.last_mut().unwrap();
        last.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        use std::io::Read;
        assert_eq!(
            last.read(&mut byte).unwrap(),
            0,
            "waited for the client's FIN"
        );
        assert_eq!(diag.count_established(&[v4_port], true, true).unwrap(), 5);
        drop(accepted.pop());
        assert_eq!(diag.count_established(&[v4_port], true, true).unwrap(), 4);
        drop((clients, accepted, v6_pairs));
    }

    #[test]
    fn this_process_shares_its_own_namespace() {
        let me = namespace_inode(Path::new("/proc/self/ns/net")).unwrap();
        let by_pid =
            namespace_inode(Path::new(&format!("/proc/{}/ns/net", std::process::id()))).unwrap();
        assert_eq!(me, by_pid);
    }

    #[test]
    fn the_fd_directory_size_counts_open_fds() {
        let Some(before) = fd_count_from_size(Path::new("/proc/self")).unwrap() else {
            return crate::test_support::skip("this kernel reports no size for /proc/<pid>/fd");
        };
        let files: Vec<_> = (0..10)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let after = fd_count_from_size(Path::new("/proc/self"))
            .unwrap()
            .unwrap();
        // Other tests of this binary open and close files meanwhile: at least ours.
        assert!(after >= before + 10 - 5, "{before} -> {after}");
        drop(files);
    }
}
