//! Open-connection tracking for servers started with [`axum::serve`](fn@axum::serve), so the
//! agent can count them (the `open_connections` signal) and `connection-reap` can close idle
//! and surplus ones.
//!
//! Wrap the server's [`TcpListener`] in a [`TrackedListener`]; every accepted connection is
//! registered with a [`ConnectionTracker`] until hyper drops it. The tracker is a [`Reap`]
//! pool: register a clone with the agent and the `connection-reap` strategy acts on it.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use perfpilot::{ConnectionTracker, TrackedListener};
//! use tokio::net::TcpListener;
//!
//! # async fn run() -> std::io::Result<()> {
//! let tracker = ConnectionTracker::new();
//! let app: Router = Router::new().route("/", get(|| async { "hello" }));
//! let listener = TcpListener::bind("127.0.0.1:8080").await?;
//!
//! // The agent reads `open_connections()` every sample and reaps through the `Reap` impl:
//! // perfpilot::Agent::builder().pool("http", tracker.clone())...
//!
//! axum::serve(TrackedListener::new(listener, tracker.clone()), app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Costs
//!
//! Accepting, closing, [`ConnectionTracker::connections`] and [`Reap::reap`] take a lock on
//! the registry; reads and writes never do. Each read or write that moves bytes stores one
//! timestamp (an atomic, relaxed) and reads the monotonic clock.
//!
//! # Closing
//!
//! [`ConnectionTracker::close`] calls `shutdown(fd, SHUT_RDWR)` on the connection's socket:
//! the client sees the connection closed, and hyper sees end of stream or an error on its
//! next read or write and drops the connection (an in-flight response is cut short). The
//! file descriptor itself is closed only when hyper drops the stream, and a closed
//! connection stops counting in [`ConnectionTracker::open_connections`] at once.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use perfpilot_strategies::{Reap, ReapPolicy, ReapReport};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error};

/// Knows every open connection accepted through its [`TrackedListener`]s and can close any
/// of them. Cheap to clone: clones share one registry.
#[derive(Clone, Default)]
pub struct ConnectionTracker {
    shared: Arc<Shared>,
}

/// One open connection, as [`ConnectionTracker::connections`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The tracker's id for the connection; ids grow in accept order and are never reused.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Time since the connection was accepted.
    pub age: Duration,
    /// Time since bytes were last read from or written to the connection (its age if none
    /// ever were). Millisecond resolution.
    pub idle: Duration,
}

struct Shared {
    /// Timestamps are milliseconds since this instant.
    epoch: Instant,
    next_id: AtomicU64,
    /// Connections registered and neither closed by the tracker nor dropped.
    open: AtomicU64,
    registry: Mutex<HashMap<u64, Arc<Entry>>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            open: AtomicU64::new(0),
            registry: Mutex::new(HashMap::new()),
        }
    }
}

struct Entry {
    id: u64,
    peer: SocketAddr,
    opened_ms: u64,
    last_active_ms: AtomicU64,
    /// The socket while it is open. Whoever moves it out of `Open` (a close by the tracker,
    /// or the stream's drop) removes the entry and decrements the counter, exactly once.
    socket: Mutex<Socket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Socket {
    /// Open, with the stream's fd; the stream has not been dropped, so the fd is still its.
    Open(RawFd),
    /// Shut down by the tracker or dropped: the fd must not be touched again.
    Closed,
}

/// Locks a mutex whose critical sections cannot leave the data inconsistent, so poisoning
/// carries no information.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ConnectionTracker {
    /// A tracker with no connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections open now: accepted, not closed by this tracker, not yet dropped by the
    /// server. One atomic load.
    pub fn open_connections(&self) -> u64 {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Every open connection, oldest first.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let now_ms = self.now_ms();
        let mut infos: Vec<ConnectionInfo> = self
            .entries()
            .iter()
            .map(|entry| entry.info(now_ms))
            .collect();
        infos.sort_unstable_by_key(|info| info.id);
        infos
    }

    /// Closes connection `id` with `shutdown(SHUT_RDWR)`. Returns `true` if this call closed
    /// it; `false` if no such connection is open (unknown id, already closed, or already
    /// dropped by the server) or the shutdown failed (the socket was already dead).
    pub fn close(&self, id: u64) -> bool {
        let entry = lock(&self.shared.registry).get(&id).cloned();
        entry.is_some_and(|entry| self.close_entry(&entry))
    }

    /// Registers an accepted connection and wraps it.
    fn track(&self, stream: TcpStream, peer: SocketAddr) -> TrackedStream {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let now_ms = self.now_ms();
        let entry = Arc::new(Entry {
            id,
            peer,
            opened_ms: now_ms,
            last_active_ms: AtomicU64::new(now_ms),
            socket: Mutex::new(Socket::Open(stream.as_raw_fd())),
        });
        lock(&shared.registry).insert(id, Arc::clone(&entry));
        shared.open.fetch_add(1, Ordering::Relaxed);
        TrackedStream {
            tracker: self.clone(),
            entry,
            inner: stream,
        }
    }

    /// Shuts the socket down if it is still open; see [`ConnectionTracker::close`].
    fn close_entry(&self, entry: &Entry) -> bool {
        {
            let mut socket = lock(&entry.socket);
            let Socket::Open(fd) = *socket else {
                return false;
            };
            // `fd` belongs to the live `TcpStream` of this entry: the stream's `Drop` sets
            // `Closed` under this lock before its fields (and so the fd) are dropped, and we
            // hold the lock and saw `Open`.
            if let Err(err) = crate::sys::shutdown_socket(fd) {
                debug!(id = entry.id, peer = %entry.peer, %err, "connection shutdown failed");
                return false;
            }
            *socket = Socket::Closed;
        }
        self.forget(entry.id);
        true
    }

    /// Removes a connection that has just left `Open`.
    fn forget(&self, id: u64) {
        lock(&self.shared.registry).remove(&id);
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        lock(&self.shared.registry).values().cloned().collect()
    }

    fn now_ms(&self) -> u64 {
        millis(self.shared.epoch.elapsed())
    }
}

impl Entry {
    fn info(&self, now_ms: u64) -> ConnectionInfo {
        let last_active_ms = self.last_active_ms.load(Ordering::Relaxed);
        ConnectionInfo {
            id: self.id,
            peer: self.peer,
            age: Duration::from_millis(now_ms.saturating_sub(self.opened_ms)),
            idle: Duration::from_millis(now_ms.saturating_sub(last_active_ms)),
        }
    }
}

impl fmt::Debug for ConnectionTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionTracker")
            .field("open_connections", &self.open_connections())
            .finish_non_exhaustive()
    }
}

impl Reap for ConnectionTracker {
    fn open_connections(&self) -> u64 {
        ConnectionTracker::open_connections(self)
    }

    /// Closes connections idle longer than `policy.idle_timeout`, then, for each client IP
    /// (any port) with more than `policy.max_per_client` connections left, the oldest surplus.
    fn reap(&self, policy: &ReapPolicy) -> ReapReport {
        let mut report = ReapReport::default();
        let now_ms = self.now_ms();
        let idle_timeout_ms = millis(policy.idle_timeout);
        let mut remaining: Vec<Arc<Entry>> = Vec::new();
        for entry in self.entries() {
            let last_active_ms = entry.last_active_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last_active_ms) > idle_timeout_ms {
                if self.close_entry(&entry) {
                    report.closed_idle += 1;
                }
            } else {
                remaining.push(entry);
            }
        }
        let Some(max_per_client) = policy.max_per_client else {
            return report;
        };
        let mut by_client: HashMap<IpAddr, Vec<Arc<Entry>>> = HashMap::new();
        for entry in remaining {
            by_client.entry(entry.peer.ip()).or_default().push(entry);
        }
        let max_per_client = usize::try_from(max_per_client).unwrap_or(usize::MAX);
        for mut entries in by_client.into_values() {
            let Some(surplus) = entries.len().checked_sub(max_per_client) else {
                continue;
            };
            // Ids grow in accept order: the smallest are the oldest.
            entries.sort_unstable_by_key(|entry| entry.id);
            for entry in &entries[..surplus] {
                if self.close_entry(entry) {
                    report.closed_over_limit += 1;
                }
            }
        }
        report
    }
}

/// An accepted connection, registered with a [`ConnectionTracker`] until dropped. Reads and
/// writes go straight to the [`TcpStream`] and update the connection's last activity.
pub struct TrackedStream {
    tracker: ConnectionTracker,
    entry: Arc<Entry>,
    /// Dropped after `Drop::drop` has marked the entry closed, so the tracker never shuts
    /// down an fd the kernel has handed to another socket.
    inner: TcpStream,
}

impl TrackedStream {
    /// The tracker's id for this connection.
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.entry.peer
    }

    /// The underlying stream, e.g. to set `TCP_NODELAY`. There is deliberately no `get_mut`:
    /// swapping the stream out would leave the tracker holding a stale fd.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    fn touch(&self) {
        let now_ms = self.tracker.now_ms();
        self.entry.last_active_ms.store(now_ms, Ordering::Relaxed);
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        // Runs before the fields are dropped, so the fd is still this stream's here.
        let was_open = std::mem::replace(&mut *lock(&self.entry.socket), Socket::Closed);
        if was_open != Socket::Closed {
            self.tracker.forget(self.entry.id);
        }
    }
}

impl fmt::Debug for TrackedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedStream")
            .field("id", &self.entry.id)
            .field("peer", &self.entry.peer)
            .field("inner", &self.inner)
            .finish()
    }
}

/// `AsyncRead` and `AsyncWrite` for a stream wrapper with an `inner` stream and a `touch()`
/// method: every read or write that moved bytes calls `touch()` (when the connection was last
/// active, for idle reaping). One definition for [`TrackedStream`] and the API server's own
/// connections.
macro_rules! touch_on_io {
    ($wrapper:ty) => {
        impl tokio::io::AsyncRead for $wrapper {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let this = self.get_mut();
                let before = buf.filled().len();
                let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
                if buf.filled().len() > before {
                    this.touch();
                }
                poll
            }
        }

        impl tokio::io::AsyncWrite for $wrapper {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let this = self.get_mut();
                let poll = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
                if matches!(poll, std::task::Poll::Ready(Ok(n)) if n > 0) {
                    this.touch();
                }
                poll
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let this = self.get_mut();
                let poll = std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
                if matches!(poll, std::task::Poll::Ready(Ok(n)) if n > 0) {
                    this.touch();
                }
                poll
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use touch_on_io;

touch_on_io!(TrackedStream);

/// A [`TcpListener`] whose accepted connections are registered with a
/// [`ConnectionTracker`]; pass it to [`axum::serve`](fn@axum::serve) in place of the listener.
///
/// Its address type is [`SocketAddr`]. For [`axum::extract::ConnectInfo`], serve
/// `router.into_make_service_with_connect_info::<ConnectionPeer>()`: axum implements
/// `Connected<SocketAddr>` only for its own listeners, and the orphan rule keeps us from
/// adding it, so [`ConnectionPeer`] carries the peer address (and the connection id). To
/// keep `ConnectInfo<SocketAddr>`, wrap it as `TrackedListener::new(..).tap_io(|_| ())`
/// ([`axum::serve::ListenerExt::tap_io`]), for which axum provides the impl.
pub struct TrackedListener {
    inner: TcpListener,
    tracker: ConnectionTracker,
}

impl TrackedListener {
    /// Wraps `listener`; connections it accepts are registered with `tracker`.
    pub fn new(listener: TcpListener, tracker: ConnectionTracker) -> Self {
        TrackedListener {
            inner: listener,
            tracker,
        }
    }

    /// The tracker connections are registered with.
    pub fn tracker(&self) -> &ConnectionTracker {
        &self.tracker
    }
}

impl fmt::Debug for TrackedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedListener")
            .field("inner", &self.inner)
            .field("tracker", &self.tracker)
            .finish()
    }
}

impl Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    /// Accepts the next connection and registers it. Like axum's own listener, retries at
    /// once after a connection error (refused, aborted, reset) and logs any other error (such
    /// as running out of file descriptors) and waits a second before retrying.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => return (self.tracker.track(stream, peer), peer),
                Err(err) => handle_accept_error(err).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Delay after an accept error that is not about one connection.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Like axum's own listener: retry at once after an error about one connection; after any
/// other (out of file descriptors...), log it and wait [`ACCEPT_ERROR_BACKOFF`].
pub(crate) async fn handle_accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(%err, "accept error");
    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
}

/// Connection information for [`axum::extract::ConnectInfo`] when serving through a
/// [`TrackedListener`] with
/// `router.into_make_service_with_connect_info::<ConnectionPeer>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPeer {
    /// The tracker's id for the connection (as in [`ConnectionInfo::id`]).
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
}

impl Connected<IncomingStream<'_, TrackedListener>> for ConnectionPeer {
    fn connect_info(stream: IncomingStream<'_, TrackedListener>) -> Self {
        ConnectionPeer {
            id: stream.io().id(),
            addr: *stream.remote_addr(),
        }
    }
}
