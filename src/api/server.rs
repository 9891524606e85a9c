//! The agent's own HTTP server, bounded under a connection flood.
//!
//! `axum::serve` accepts every connection and keeps it until the client goes, with no
//! header-read or idle timeout: 5,000 idle or half-sent connections grew an 8 MiB agent to
//! 43 MiB. [`serve`] accepts through hyper-util's builder with:
//!
//! - at most `max_connections` open: at the cap, the connection idle longest (no request in
//!   flight, no response streaming) is closed for the new one; when every connection is busy,
//!   the busy one whose bytes moved least recently (a client sending its body slowest, or a
//!   quiet event stream) is closed instead, so a new connection (a `/health` probe) always
//!   gets in;
//! - request heads of at most [`MAX_HEAD_BYTES`]: over HTTP/1 hyper buffers no more for one
//!   (a longer head is answered 431 and the connection closed); over HTTP/2 the header list
//!   (CONTINUATION frames included) is bounded the same, and a stream's and the connection's
//!   receive windows to [`crate::api::MAX_BODY_BYTES`];
//! - request bodies of `POST /performance-optimize` are read within
//!   [`crate::api::BODY_READ_TIMEOUT`];
//! - hyper's header-read timeout: a request head not complete within `header_read_timeout`
//!   closes the connection (slow or half-sent headers). hyper 1.x starts this timer whenever
//!   an HTTP/1 connection waits for a request head, including between keep-alive requests,
//!   so it also bounds an idle keep-alive connection;
//! - an idle timeout: a connection with no request in flight and no bytes moved for
//!   `idle_timeout` is closed (one sweep per second, or per `idle_timeout / 2` if shorter).
//!
//! Each request carries `ConnectInfo<SocketAddr>` and [`ServerAddr`] for the rate limit.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use tracing::debug;

/// The address the agent's listener accepted a connection on, in each request's extensions:
/// with the peer's, it names the connection's socket (see [`crate::api::rate_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddr(pub SocketAddr);

/// Largest request head (request line and headers) a connection may send: 16 KiB, four times
/// what browsers send with their cookies for a busy `localhost`, and at the default
/// `api.max_connections` (256) at most 4 MiB buffered in all.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How the agent's own listener is bounded (`api.max_connections`, `api.header_read_timeout`,
/// `api.idle_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay idle.
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        use crate::config::ApiConfig;
        ServerLimits {
            max_connections: ApiConfig::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: ApiConfig::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: ApiConfig::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// One open connection as the server sees it.
#[derive(Debug)]
struct Conn {
    /// Requests in flight and response bodies still streaming.
    busy: AtomicUsize,
    /// When bytes last moved, in ms since [`Table::epoch`].
    last_active_ms: AtomicU64,
    /// Cancelled to close the connection at once.
    close: CancellationToken,
}

/// Every open connection, by id.
#[derive(Debug)]
struct Table {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Table {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection. If `max` are open, one is closed for it: the idle one
    /// (no request in flight) quiet longest, else the busy one quiet longest, so that a slow
    /// or stalled client cannot keep everyone else (a liveness probe) out.
    fn admit(&self, max: usize) -> (u64, Arc<Conn>) {
        let mut conns = self.lock();
        while conns.len() >= max.max(1) {
            let victim = conns
                .iter()
                .min_by_key(|(_, c)| {
                    (
                        c.busy.load(Ordering::Relaxed) > 0,
                        c.last_active_ms.load(Ordering::Relaxed),
                    )
                })
                .map(|(id, _)| *id);
            let Some(conn) = victim.and_then(|victim| conns.remove(&victim)) else {
                break;
            };
            conn.close.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(self.now_ms()),
            close: CancellationToken::new(),
        });
        conns.insert(id, Arc::clone(&conn));
        (id, conn)
    }

    /// Closes every connection idle (not busy, no bytes moved) for `idle` or longer.
    fn sweep(&self, idle: Duration) {
        let (now, idle) = (self.now_ms(), idle.as_millis() as u64);
        self.lock().retain(|_, conn| {
            let quiet = now.saturating_sub(conn.last_active_ms.load(Ordering::Relaxed));
            let keep = conn.busy.load(Ordering::Relaxed) > 0 || quiet < idle;
            if !keep {
                conn.close.cancel();
            }
            keep
        });
    }

    fn close_all(&self) {
        for (_, conn) in self.lock().drain() {
            conn.close.cancel();
        }
    }
}

/// Closes every connection when the server's future is dropped (aborted after the grace
/// period), so no connection task outlives it.
struct CloseAllOnDrop(Arc<Table>);

impl Drop for CloseAllOnDrop {
    fn drop(&mut self) {
        self.0.close_all();
    }
}

/// Serves `router` on `listener` within `limits` until `stop` is cancelled; then stops
/// accepting, asks every connection to finish its request in flight and close, and returns
/// when all have. Dropping the future closes every connection at once.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) -> io::Result<()> {
    let table = Arc::new(Table {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
    });
    let _close_all = CloseAllOnDrop(Arc::clone(&table));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let window = u32::try_from(crate::api::MAX_BODY_BYTES).unwrap_or(u32::MAX);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(32)
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).unwrap_or(u32::MAX))
        .initial_stream_window_size(window)
        .initial_connection_window_size(window);
    let builder = Arc::new(builder);
    let tasks = TaskTracker::new();
    let sweep_every =
        (limits.idle_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            _ = sweep.tick() => {
                table.sweep(limits.idle_timeout);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    crate::connections::handle_accept_error(err).await;
                    continue;
                }
            },
        };
        let (id, conn) = table.admit(limits.max_connections);
        let _ = stream.set_nodelay(true);
        let task = serve_connection(
            Arc::clone(&builder),
            Arc::clone(&table),
            id,
            conn,
            stream,
            peer,
            router.clone(),
            stop.clone(),
        );
        tasks.spawn(task);
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    table: Arc<Table>,
    id: u64,
    conn: Arc<Conn>,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    stop: CancellationToken,
) {
    let local = stream.local_addr().ok();
    let io = TokioIo::new(Activity {
        inner: stream,
        conn: Arc::clone(&conn),
        table: Arc::clone(&table),
    });
    let service_conn = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(local) = local {
            request.extensions_mut().insert(ServerAddr(local));
        }
        let busy = Busy::new(Arc::clone(&service_conn));
        let mut router = router.clone();
        async move {
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|body| Body::new(BusyBody { body, _busy: busy })))
        }
    });
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    debug!(%peer, %err, "connection ended with an error");
                }
                break;
            }
            _ = conn.close.cancelled() => break,
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    table.lock().remove(&id);
}

/// Counts a request (and then its response body) as in flight on its connection.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: Arc<Conn>) -> Self {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection counted busy until hyper drops it.
struct BusyBody {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for BusyBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream that notes when bytes last moved on it.
struct Activity {
    inner: TcpStream,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Activity {
    fn touch(&self) {
        self.conn
            .last_active_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
    }
}

crate::connections::touch_on_io!(Activity);

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_goes_then_the_quietest_busy_one() {
        let table = table();
        let (_, first) = table.admit(2);
        let (_, second) = table.admit(2);
        first.last_active_ms.store(5, Ordering::Relaxed);
        second.last_active_ms.store(1, Ordering::Relaxed);
        second.busy.store(1, Ordering::Relaxed);
        // The second is older but busy: the first goes.
        let (_, third) = table.admit(2);
        assert!(first.close.is_cancelled());
        assert!(!second.close.is_cancelled());
        assert_eq!(table.lock().len(), 2);
        third.busy.store(1, Ordering::Relaxed);
        third.last_active_ms.store(9, Ordering::Relaxed);
        // All busy: the one whose bytes moved least recently (the second) goes.
        let (_, fourth) = table.admit(2);
        assert!(second.close.is_cancelled() && !third.close.is_cancelled());
        assert!(!fourth.close.is_cancelled());
        assert_eq!(table.lock().len(), 2);
    }

    #[test]
    fn the_sweep_closes_idle_connections_only() {
        let table = table();
        // Right after start (a clock at 0 ms), a new connection is not idle.
        let (_, first) = table.admit(10);
        table.sweep(Duration::from_secs(60));
        assert!(!first.close.is_cancelled());
        table.lock().clear();
        let (_, idle) = table.admit(10);
        let (_, busy) = table.admit(10);
        busy.busy.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        let (_, fresh) = table.admit(10);
        table.sweep(Duration::from_millis(10));
        assert!(idle.close.is_cancelled());
        assert!(!busy.close.is_cancelled() && !fresh.close.is_cancelled());
        assert_eq!(table.lock().len(), 2);
    }
}
