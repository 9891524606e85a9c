//! Run with: cargo run --example streaming_service -- --listen 127.0.0.1:8080 --cache-mb 256
//!
//! A small streaming backend for perfpilot to keep healthy from outside (sidecar mode). It
//! behaves like the model user's torrent streaming server: clients fetch media with range
//! requests, chunks come from a cache that grows with distinct content up to `--cache-mb`,
//! and keep-alive connections pile up per client.
//!
//! | route | what |
//! |---|---|
//! | `GET /stream/{id}` | generated media of `--media-mb` MiB for any id (≤ 128 chars), with `Range` support |
//! | `GET /ping` | `pong`: the latency probe target |
//! | `GET /stats` | cache, connection, request and RSS counters as JSON |
//! | `POST /admin/purge` | return jemalloc's dirty pages to the OS now; drops nothing |
//! | `POST /admin/cache/trim` | `{"fraction": 0.25}`: drop that share of the cache, lower its capacity to what is left, purge jemalloc |
//! | `POST /admin/sessions/drop` | `{"fraction": 0.5}`: release that share of the leaked session state (oldest first), purge jemalloc |
//! | `POST /admin/connections/reap` | `{"idle_ms": 30000}`: close connections idle that long |
//!
//! A trim sticks: the cache may only grow back to what the trim left, until no trim has
//! come for `--cache-recover-secs`; from then on its capacity grows by
//! `--cache-recover-percent` of itself every `--cache-recover-secs`, up to `--cache-mb`.
//! Without this a busy cache refills the trimmed room within seconds.
//!
//! `--leak-mb-per-s R` (default 0: off) keeps R MiB/s of session state that nothing but
//! `/admin/sessions/drop` releases: a steady leak, for trying predictive triggers.
//!
//! jemalloc returns freed pages to the OS after `--dirty-decay-ms` (jemalloc's default is
//! 10 s, which under churn of 2 MiB chunks holds hundreds of MiB of freed pages resident);
//! the admin hooks purge at once.
//!
//! Ranges follow RFC 9110 for a single range (`bytes=a-b`, `bytes=a-`, `bytes=-n`). Of
//! several ranges the first satisfiable one is served as a plain 206; malformed or
//! unsatisfiable ranges get 416 with `Content-Range: bytes */total`.
//!
//! The first stdout line is `listening on http://ADDR`; SIGTERM or Ctrl-C shuts down
//! gracefully (in-flight responses get [`DRAIN_TIMEOUT`]) and exits 0. Logs go to stderr
//! (`RUST_LOG`, default `info`).

mod capacity;
mod leak;
mod media;
mod range;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use perfpilot_strategies::{jemalloc, proc_self};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use capacity::Recovery;
use leak::{DropCount, LeakStats, SessionLeak};
use media::{CacheStats, MediaLibrary, TrimCount};
use perfpilot::{ConnectionPeer, ConnectionTracker, TrackedListener};
use range::{ByteRange, RangeError};

/// jemalloc, so that `/admin/cache/trim` can hand freed chunks back to the OS at once.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Longest media id accepted, in characters.
const MAX_ID_CHARS: usize = 128;
/// How long in-flight responses may run on after the shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;

/// A demo media streaming service with a growing chunk cache and admin hooks.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Chunk cache capacity in MiB (0 disables caching).
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// Chunk size in KiB (at most 65536).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=65536))]
    chunk_kb: u64,
    /// Size of every generated media item in MiB (at most 1048576).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    media_mb: u64,
    /// After a trim, the cache's capacity grows back by this percentage of itself per
    /// recovery period (1 to 1000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    cache_recover_percent: u64,
    /// The recovery period in seconds: the quiet time after a trim before the capacity
    /// grows, and the time between two growth steps (1 to 3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    cache_recover_secs: u64,
    /// Leak this many MiB of session state per second (0: no leak; at most 1024).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parse_leak_rate)]
    leak_mb_per_s: f64,
    /// jemalloc's `dirty_decay_ms` for every arena: how long freed pages stay resident
    /// before they go back to the OS (-1 never, 0 at once; at most 3600000).
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..=3_600_000))]
    dirty_decay_ms: i64,
}

/// `--leak-mb-per-s`: a finite rate from 0 to 1024 MiB/s.
fn parse_leak_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if rate.is_finite() && (0.0..=1024.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{text} MiB/s: must be from 0 to 1024"))
    }
}

/// How often the leak adds a session buffer.
const LEAK_TICK: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct AppState {
    media: Arc<MediaLibrary>,
    leak: Arc<SessionLeak>,
    connections: ConnectionTracker,
    requests_served: Arc<AtomicU64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        .with(
            std::env::var("RUST_LOG")
                .ok()
                .and_then(|directives| directives.parse::<Targets>().ok())
                .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO)),
        )
        .init();

    let cache_bytes = args
        .cache_mb
        .checked_mul(MIB)
        .context("--cache-mb is too large")?;
    let dirty_decay_ms = isize::try_from(args.dirty_decay_ms).expect("range checked by clap");
    jemalloc::set_dirty_decay_ms(dirty_decay_ms)
        .map_err(|e| anyhow::anyhow!("cannot set --dirty-decay-ms: {e}"))?;
    let recovery = Recovery {
        share: args.cache_recover_percent as f64 / 100.0,
        period: Duration::from_secs(args.cache_recover_secs),
    };
    let state = AppState {
        media: Arc::new(MediaLibrary::new(
            cache_bytes,
            args.chunk_kb * 1024,
            args.media_mb * MIB,
            recovery,
        )),
        leak: Arc::default(),
        connections: ConnectionTracker::new(),
        requests_served: Arc::default(),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let listener = TrackedListener::new(listener, state.connections.clone());

    // Handle signals before announcing the address: a supervisor may signal right after.
    let shutdown_signal = shutdown_signal()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%addr, cache_mb = args.cache_mb, chunk_kb = args.chunk_kb, media_mb = args.media_mb, "serving");

    let shutdown = CancellationToken::new();
    tokio::spawn(recover_capacity(
        Arc::clone(&state.media),
        recovery.period,
        shutdown.clone(),
    ));
    if args.leak_mb_per_s > 0.0 {
        let per_tick = (args.leak_mb_per_s * MIB as f64 * LEAK_TICK.as_secs_f64()) as usize;
        tokio::spawn(leak_sessions(
            Arc::clone(&state.leak),
            per_tick.max(1),
            shutdown.clone(),
        ));
    }
    let app = router(state).into_make_service_with_connect_info::<ConnectionPeer>();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let mut server = tokio::spawn(server.into_future());
    tokio::select! {
        result = &mut server => {
            result??;
            anyhow::bail!("server stopped without a shutdown signal");
        }
        () = shutdown_signal => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(result) => result??,
        Err(_) => tracing::warn!(timeout = ?DRAIN_TIMEOUT, "responses still in flight; exiting"),
    }
    Ok(())
}

/// Gives the cache's capacity a recovery step every `period` until shutdown.
async fn recover_capacity(media: Arc<MediaLibrary>, period: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Some(capacity) = media.recover() {
            tracing::debug!(capacity_bytes = capacity, "cache capacity recovering");
        }
    }
}

/// Keeps a session buffer of `bytes` every [`LEAK_TICK`] until shutdown.
async fn leak_sessions(leak: Arc<SessionLeak>, bytes: usize, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(LEAK_TICK);
    // A late tick is made up, so the rate holds on a busy machine.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let leak = Arc::clone(&leak);
        if tokio::task::spawn_blocking(move || leak.add_session(bytes))
            .await
            .is_err()
        {
            tracing::error!("the leak task failed");
            return;
        }
    }
}

/// SIGTERM or SIGINT, listened for from the moment this is called.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/stream/{id}", get(stream))
        .route("/ping", get(|| async { "pong" }))
        .route("/stats", get(stats))
        .route("/admin/purge", post(purge))
        .route("/admin/cache/trim", post(trim_cache))
        .route("/admin/sessions/drop", post(drop_sessions))
        .route("/admin/connections/reap", post(reap_connections))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

async fn count_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.requests_served.fetch_add(1, Ordering::Relaxed);
    response
}

/// `GET /stream/{id}`: the item's bytes, or the one range the `Range` header selects.
async fn stream(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    if id.chars().count() > MAX_ID_CHARS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("media id is longer than {MAX_ID_CHARS} characters"),
        ));
    }
    let total = state.media.media_bytes();
    let requested = match headers.get(header::RANGE) {
        None => None,
        Some(value) => {
            let parsed = value
                .to_str()
                .map_err(|_| RangeError::Malformed)
                .and_then(|text| range::parse(text, total));
            match parsed {
                Ok(range) => Some(range),
                Err(RangeError::UnknownUnit) => None,
                Err(RangeError::Malformed) => {
                    return Err(ApiError::range_not_satisfiable(
                        total,
                        "malformed Range header",
                    ))
                }
                Err(RangeError::Unsatisfiable) => {
                    return Err(ApiError::range_not_satisfiable(
                        total,
                        "range not satisfiable",
                    ))
                }
            }
        }
    };
    let whole = ByteRange::whole(total).expect("media size is at least 1 MiB");
    let (status, range) = match requested {
        Some(range) => (StatusCode::PARTIAL_CONTENT, range),
        None => (StatusCode::OK, whole),
    };

    let mut response = state.media.body(id, range).into_response();
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.len()));
    if status == StatusCode::PARTIAL_CONTENT {
        let content_range = format!("bytes {}-{}/{total}", range.first, range.last);
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&content_range).expect("digits are a valid header value"),
        );
    }
    Ok(response)
}

/// Connection counts, as `/stats` shows them.
#[derive(Serialize)]
struct ConnectionStats {
    open_connections: u64,
    /// Open connections per client IP.
    connections_by_client: BTreeMap<String, usize>,
}

impl ConnectionStats {
    fn of(tracker: &ConnectionTracker) -> Self {
        let mut connections_by_client = BTreeMap::new();
        for connection in tracker.connections() {
            *connections_by_client
                .entry(connection.peer.ip().to_string())
                .or_insert(0) += 1;
        }
        ConnectionStats {
            open_connections: tracker.open_connections(),
            connections_by_client,
        }
    }
}

#[derive(Serialize)]
struct StatsResponse {
    #[serde(flatten)]
    cache: CacheStats,
    #[serde(flatten)]
    connections: ConnectionStats,
    #[serde(flatten)]
    leak: LeakStats,
    requests_served: u64,
    /// `null` when /proc/self/statm cannot be read.
    rss_bytes: Option<u64>,
    media_bytes: u64,
    /// `null` when jemalloc's statistics cannot be read.
    jemalloc: Option<JemallocStats>,
}

/// Where the allocator's memory is: in use, or freed but still resident (dirty) or
/// advised away but still mapped (muzzy), and how fast each goes back to the OS.
#[derive(Serialize)]
struct JemallocStats {
    allocated_bytes: u64,
    resident_bytes: u64,
    dirty_bytes: u64,
    muzzy_bytes: u64,
    dirty_decay_ms: i64,
    muzzy_decay_ms: i64,
}

impl JemallocStats {
    /// Reads the counters (after advancing jemalloc's stats epoch); `None` on any failure.
    fn read() -> Option<Self> {
        use tikv_jemalloc_ctl::raw;
        let totals = jemalloc::read_stats().ok()?;
        // SAFETY: the page size and statistics are size_t and the decay settings ssize_t, as
        // read here; the names are NUL-terminated. 4096 is MALLCTL_ARENAS_ALL: the sum over
        // the arenas.
        let (page, dirty, muzzy, dirty_ms, muzzy_ms) = unsafe {
            (
                raw::read::<usize>(b"arenas.page\0").ok()? as u64,
                raw::read::<usize>(b"stats.arenas.4096.pdirty\0").ok()?,
                raw::read::<usize>(b"stats.arenas.4096.pmuzzy\0").ok()?,
                raw::read::<isize>(b"arenas.dirty_decay_ms\0").ok()?,
                raw::read::<isize>(b"arenas.muzzy_decay_ms\0").ok()?,
            )
        };
        Some(Self {
            allocated_bytes: totals.allocated_bytes,
            resident_bytes: totals.resident_bytes,
            dirty_bytes: dirty as u64 * page,
            muzzy_bytes: muzzy as u64 * page,
            dirty_decay_ms: dirty_ms as i64,
            muzzy_decay_ms: muzzy_ms as i64,
        })
    }
}

/// `GET /stats`.
async fn stats(State(state): State<AppState>) -> Result<Json<StatsResponse>, ApiError> {
    let media = Arc::clone(&state.media);
    let cache = tokio::task::spawn_blocking(move || media.stats())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(StatsResponse {
        cache,
        connections: ConnectionStats::of(&state.connections),
        leak: state.leak.stats(),
        requests_served: state.requests_served.load(Ordering::Relaxed),
        rss_bytes: proc_self::rss_bytes(),
        media_bytes: state.media.media_bytes(),
        jemalloc: JemallocStats::read(),
    }))
}

/// The body of both release hooks: `{"fraction": f}`, 0 < f ≤ 1.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FractionRequest {
    fraction: Option<f64>,
}

impl FractionRequest {
    /// The fraction asked for, or `default`; an error answer when outside (0, 1].
    fn fraction_or(body: Result<Bytes, BytesRejection>, default: f64) -> Result<f64, ApiError> {
        let request: FractionRequest = optional_json(body)?;
        let fraction = request.fraction.unwrap_or(default);
        if fraction > 0.0 && fraction <= 1.0 {
            Ok(fraction)
        } else {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("fraction must be in (0, 1], got {fraction}"),
            ))
        }
    }
}

/// RSS around a release and whether jemalloc handed the freed pages back.
#[derive(Serialize)]
struct Released {
    rss_before_bytes: Option<u64>,
    rss_after_bytes: Option<u64>,
    /// Whether jemalloc returned its dirty pages to the OS.
    jemalloc_purged: bool,
}

impl Released {
    /// Runs `release`, then purges jemalloc so the freed memory leaves RSS now rather than
    /// after the decay time. Blocking.
    fn measure<T>(release: impl FnOnce() -> T) -> (T, Released) {
        let rss_before_bytes = proc_self::rss_bytes();
        let count = release();
        let purged = jemalloc::purge_all_arenas();
        if let Err(error) = &purged {
            tracing::warn!(%error, "jemalloc purge failed");
        }
        let released = Released {
            rss_before_bytes,
            rss_after_bytes: proc_self::rss_bytes(),
            jemalloc_purged: purged.is_ok(),
        };
        (count, released)
    }
}

/// `POST /admin/purge`: hand jemalloc's dirty pages back to the OS at once (they would go
/// after `--dirty-decay-ms` anyway). The cheapest relief: no cached or session data is lost.
async fn purge() -> Result<Json<Released>, ApiError> {
    let ((), released) = tokio::task::spawn_blocking(|| Released::measure(|| ()))
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(
        rss_before_bytes = released.rss_before_bytes,
        rss_after_bytes = released.rss_after_bytes,
        "jemalloc purged"
    );
    Ok(Json(released))
}

#[derive(Serialize)]
struct TrimResponse {
    #[serde(flatten)]
    count: TrimCount,
    #[serde(flatten)]
    released: Released,
}

/// `POST /admin/cache/trim`: invalidate a fraction of the cache and lower its capacity to
/// what is left, then purge jemalloc.
async fn trim_cache(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TrimResponse>, ApiError> {
    let fraction = FractionRequest::fraction_or(body, 0.25)?;
    let media = Arc::clone(&state.media);
    let (count, released) =
        tokio::task::spawn_blocking(move || Released::measure(|| media.trim(fraction)))
            .await
            .map_err(ApiError::internal)?;
    tracing::info!(
        fraction,
        entries_removed = count.entries_removed,
        bytes_freed = count.bytes_freed,
        capacity_after_bytes = count.capacity_after_bytes,
        "cache trimmed"
    );
    Ok(Json(TrimResponse { count, released }))
}

#[derive(Serialize)]
struct DropResponse {
    #[serde(flatten)]
    count: DropCount,
    #[serde(flatten)]
    released: Released,
}

/// `POST /admin/sessions/drop`: release the oldest share of the leaked session state, then
/// purge jemalloc.
async fn drop_sessions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DropResponse>, ApiError> {
    let fraction = FractionRequest::fraction_or(body, 0.5)?;
    let leak = Arc::clone(&state.leak);
    let (count, released) =
        tokio::task::spawn_blocking(move || Released::measure(|| leak.drop_oldest(fraction)))
            .await
            .map_err(ApiError::internal)?;
    tracing::info!(
        fraction,
        sessions_dropped = count.sessions_dropped,
        bytes_freed = count.bytes_freed,
        "sessions dropped"
    );
    Ok(Json(DropResponse { count, released }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReapRequest {
    #[serde(default = "ReapRequest::default_idle_ms")]
    idle_ms: u64,
}

impl ReapRequest {
    const DEFAULT_IDLE_MS: u64 = 30_000;

    fn default_idle_ms() -> u64 {
        Self::DEFAULT_IDLE_MS
    }
}

#[derive(Serialize)]
struct ReapResponse {
    closed: usize,
    open_before: u64,
    open_after: u64,
}

/// `POST /admin/connections/reap`: shut down connections that moved no bytes for longer
/// than `idle_ms` (never the one carrying this request).
async fn reap_connections(
    State(state): State<AppState>,
    ConnectInfo(own): ConnectInfo<ConnectionPeer>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReapResponse>, ApiError> {
    let request: ReapRequest = optional_json(body)?;
    let idle = Duration::from_millis(request.idle_ms);
    let open_before = state.connections.open_connections();
    let closed: Vec<u64> = state
        .connections
        .connections()
        .into_iter()
        .filter(|c| c.id != own.id && c.idle > idle)
        .filter(|c| state.connections.close(c.id))
        .map(|c| c.id)
        .collect();
    let open_after = state.connections.open_connections();
    tracing::info!(
        idle_ms = request.idle_ms,
        closed = closed.len(),
        "connections reaped"
    );
    Ok(Json(ReapResponse {
        closed: closed.len(),
        open_before,
        open_after,
    }))
}

/// An optional JSON body: empty means every field takes its default.
fn optional_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let text: &[u8] = if body.trim_ascii().is_empty() {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// Every error answer: `{"error": message}` with its status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    /// For 416: the representation's length, sent as `Content-Range: bytes */total`.
    unsatisfied_total: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            unsatisfied_total: None,
        }
    }

    fn range_not_satisfiable(total: u64, message: &str) -> Self {
        Self {
            unsatisfied_total: Some(total),
            ..Self::new(StatusCode::RANGE_NOT_SATISFIABLE, message)
        }
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(total) = self.unsatisfied_total {
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{total}"))
                    .expect("digits are a valid header value"),
            );
        }
        response
    }
}
