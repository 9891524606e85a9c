//! Connection tracking on real loopback sockets: an axum app served through a
//! `TrackedListener`, driven by raw HTTP/1.1 keep-alive clients.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::serve::{Listener, ListenerExt};
use axum::Router;
use perfpilot::{ConnectionPeer, ConnectionTracker, TrackedListener};
use perfpilot_strategies::{Reap, ReapPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(2);

fn app() -> Router {
    Router::new().route("/", get(|| async { "ok" })).route(
        "/peer",
        get(
            |ConnectInfo(peer): ConnectInfo<ConnectionPeer>| async move {
                format!("{} {}", peer.id, peer.addr)
            },
        ),
    )
}

/// An app served through a `TrackedListener` with graceful shutdown.
struct Server {
    addr: SocketAddr,
    tracker: ConnectionTracker,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn serve() -> Server {
    let tracker = ConnectionTracker::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        axum::serve(
            TrackedListener::new(listener, tracker.clone()),
            app().into_make_service_with_connect_info::<ConnectionPeer>(),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future(),
    );
    Server {
        addr,
        tracker,
        stop,
        task,
    }
}

/// Waits (at most [`WAIT`]) until the tracker counts `n` open connections.
async fn wait_for_open(tracker: &ConnectionTracker, n: u64) {
    let deadline = Instant::now() + WAIT;
    while tracker.open_connections() != n {
        assert!(
            Instant::now() < deadline,
            "expected {n} open connections, have {}",
            tracker.open_connections()
        );
        sleep(Duration::from_millis(5)).await;
    }
}

/// Connects and waits until the server has registered the connection, so ids follow the
/// order of the calls.
async fn connect(server: &Server) -> TcpStream {
    let before = server.tracker.open_connections();
    let client = TcpStream::connect(server.addr).await.unwrap();
    wait_for_open(&server.tracker, before + 1).await;
    client
}

/// Sends `GET path` on a keep-alive connection and returns the response body.
async fn get_body(client: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    timeout(WAIT, async {
        loop {
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-response: {response:?}");
            response.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&response).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .expect("content-length")
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    return body.to_string();
                }
            }
        }
    })
    .await
    .expect("response within 2 s")
}

/// Whether the server closed the connection: a read returns end of stream or a reset
/// within [`WAIT`].
async fn closed_by_server(client: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match timeout(WAIT, client.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Whether the connection is still open: a read neither returns nor fails for 100 ms.
async fn still_open(client: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    timeout(Duration::from_millis(100), client.read(&mut byte))
        .await
        .is_err()
}

fn policy(idle_timeout: Duration, max_per_client: Option<u32>) -> ReapPolicy {
    ReapPolicy {
        idle_timeout,
        max_per_client,
    }
}

#[tokio::test]
async fn accept_registers_and_drop_deregisters() {
    let tracker = ConnectionTracker::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = TrackedListener::new(listener, tracker.clone());
    let addr = listener.local_addr().unwrap();
    assert_eq!(tracker.open_connections(), 0);

    let client = TcpStream::connect(addr).await.unwrap();
    let (stream, peer) = timeout(WAIT, listener.accept()).await.unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(stream.peer_addr(), peer);
    assert_eq!(tracker.open_connections(), 1);
    let connections = tracker.connections();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].id, stream.id());
    assert_eq!(connections[0].peer, peer);

    drop(stream);
    assert_eq!(tracker.open_connections(), 0);
    assert!(tracker.connections().is_empty());
}

#[tokio::test]
async fn count_follows_clients_connecting_and_leaving() {
    let server = serve().await;
    let mut first = connect(&server).await;
    let second = connect(&server).await;
    let third = connect(&server).await;
    assert_eq!(server.tracker.open_connections(), 3);
    assert_eq!(get_body(&mut first, "/").await, "ok");

    drop(second);
    wait_for_open(&server.tracker, 2).await;
    drop(first);
    drop(third);
    wait_for_open(&server.tracker, 0).await;
    assert!(server.tracker.connections().is_empty());
}

#[tokio::test]
async fn idle_keep_alive_connection_is_reaped() {
    let server = serve().await;
    let mut client = connect(&server).await;
    assert_eq!(get_body(&mut client, "/").await, "ok");
    sleep(Duration::from_millis(300)).await;
    let idle = server.tracker.connections()[0].idle;
    assert!(idle >= Duration::from_millis(250), "{idle:?}");

    let report = server
        .tracker
        .reap(&policy(Duration::from_millis(100), None));
    assert_eq!(report.closed_idle, 1);
    assert_eq!(report.closed_over_limit, 0);
    assert_eq!(server.tracker.open_connections(), 0);
    assert!(closed_by_server(&mut client).await);
}

#[tokio::test]
async fn active_connection_is_not_reaped_as_idle() {
    let server = serve().await;
    let mut idle = connect(&server).await;
    let mut active = connect(&server).await;
    assert_eq!(get_body(&mut idle, "/").await, "ok");
    sleep(Duration::from_millis(300)).await;
    assert_eq!(get_body(&mut active, "/").await, "ok");

    let report = server
        .tracker
        .reap(&policy(Duration::from_millis(200), None));
    assert_eq!(report.closed_idle, 1);
    assert!(closed_by_server(&mut idle).await);
    assert_eq!(server.tracker.open_connections(), 1);
    assert_eq!(get_body(&mut active, "/").await, "ok");
}

#[tokio::test]
async fn per_client_cap_closes_the_oldest() {
    let server = serve().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = connect(&server).await;
        assert_eq!(get_body(&mut client, "/").await, "ok");
        clients.push(client);
    }

    let report = server
        .tracker
        .reap(&policy(Duration::from_secs(60), Some(2)));
    assert_eq!(report.closed_idle, 0);
    assert_eq!(report.closed_over_limit, 2);
    assert_eq!(server.tracker.open_connections(), 2);

    let (oldest, newest) = clients.split_at_mut(2);
    for client in oldest {
        assert!(closed_by_server(client).await);
    }
    for client in newest {
        assert!(still_open(client).await);
        assert_eq!(get_body(client, "/").await, "ok");
    }

    // Within the cap now: a second reap closes nothing.
    let report = server
        .tracker
        .reap(&policy(Duration::from_secs(60), Some(2)));
    assert_eq!(report.closed_over_limit, 0);
}

#[tokio::test]
async fn close_targets_only_open_connections() {
    let server = serve().await;
    assert!(!server.tracker.close(12345));

    // A connection the client has left: once the server dropped it, close is refused.
    let gone = connect(&server).await;
    let gone_id = server.tracker.connections()[0].id;
    drop(gone);
    wait_for_open(&server.tracker, 0).await;
    // The next connection likely reuses the freed fd; closing the old id must not touch it.
    let mut next = connect(&server).await;
    assert!(!server.tracker.close(gone_id));
    assert_eq!(get_body(&mut next, "/").await, "ok");

    // Closing an open connection works once and takes effect in the count at once.
    let next_id = server.tracker.connections()[0].id;
    assert_ne!(next_id, gone_id);
    assert!(server.tracker.close(next_id));
    assert_eq!(server.tracker.open_connections(), 0);
    assert!(!server.tracker.close(next_id));
    assert!(closed_by_server(&mut next).await);
}

#[tokio::test]
async fn connect_info_carries_connection_id_and_peer() {
    let server = serve().await;
    let mut client = connect(&server).await;
    let id = server.tracker.connections()[0].id;
    let body = get_body(&mut client, "/peer").await;
    assert_eq!(body, format!("{id} {}", client.local_addr().unwrap()));
}

#[tokio::test]
async fn connect_info_socket_addr_through_tap_io() {
    let tracker = ConnectionTracker::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let listener = TrackedListener::new(listener, tracker.clone()).tap_io(|_| ());
    let task = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .into_future(),
    );
    let mut client = TcpStream::connect(addr).await.unwrap();
    let body = get_body(&mut client, "/").await;
    assert_eq!(body, client.local_addr().unwrap().to_string());
    assert_eq!(tracker.open_connections(), 1);
    task.abort();
}

#[tokio::test]
async fn graceful_shutdown_drains_tracked_connections() {
    let server = serve().await;
    let mut client = connect(&server).await;
    assert_eq!(get_body(&mut client, "/").await, "ok");

    server.stop.cancel();
    let served = timeout(WAIT, server.task)
        .await
        .expect("server stops within 2 s");
    served.unwrap().unwrap();
    assert_eq!(server.tracker.open_connections(), 0);
    assert!(closed_by_server(&mut client).await);
}
