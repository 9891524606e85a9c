//! The HTTP API (SPEC §5): a thin shell over the engine's handle and published view.
//!
//! | route | |
//! |---|---|
//! | `GET /performance-metrics` | the latest sample, stats and recent runs (camelCase) |
//! | `POST /performance-optimize` | run `{"strategy": "memory"}`, or all with an empty body |
//! | `GET /health` | liveness and a short status |
//! | `GET /metrics` | Prometheus (OpenMetrics) text exposition |
//! | `GET /events` | Server-Sent Events: `metrics-updated`, `optimization-completed` |
//! | `POST /config/reload` | re-read the configuration file and apply it ([`crate::reload`]) |
//!
//! Errors are JSON `{"error": "..."}` with the right status. Manual triggers are rate limited
//! per client ([`rate_limit`]); requests have deadlines ([`timeout`]).

mod access;
mod dashboard;
pub mod document;
mod events;
mod gzip;
mod history;
#[cfg(test)]
mod history_tests;
mod metrics_cache;
mod openapi;
pub mod rate_limit;
mod report;
pub mod server;
pub mod timeout;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, get_service, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower::Layer;

use crate::config::RateLimitConfig;
use crate::engine::{EngineHandle, OptimizeError};
use crate::history::OptimizationRecord;
use crate::prometheus::Telemetry;
use crate::sample::{TargetHandle, TargetStatus};

use self::document::{rfc3339, MetricsDocument};

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the routes need besides the engine.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The agent's identity in responses (`workerId`, `worker`).
    pub worker_id: Value,
    /// When set, mutating routes need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// When set, reads and the dashboard need `Authorization: Bearer <read_token>` (or the
    /// `token`), or the dashboard's session cookie; `None`: reads are open (see [`access`]).
    pub read_token: Option<String>,
    /// Host names served besides IP literals and `localhost` (`api.allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    /// Web origins allowed besides the agent's own (`api.allowed_origins`).
    pub allowed_origins: Vec<String>,
    /// Most `GET /events` clients at once (at most 8 from one client; with a read token, the
    /// last kept for the dashboard's cookie holder); more get 503.
    pub max_event_clients: usize,
    /// The sidecar target, shown as `target` in `GET /health` and `/performance-metrics`;
    /// `None` (self and library modes): no `target` key.
    pub target: Option<TargetHandle>,
    /// Manual triggers allowed per client ([`rate_limit`]).
    pub rate_limit: RateLimitConfig,
    /// Deadline of every request but `GET /events` and `POST /performance-optimize`.
    pub request_timeout: Duration,
    /// Deadline of `POST /performance-optimize` (see [`ApiSettings::optimize_timeout_for`]).
    pub optimize_timeout: Duration,
    /// What `POST /config/reload` calls, and whose status `config` in
    /// `/performance-metrics` shows; `None`: the route answers 409 and there is no `config`.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// What `/metrics` serves: the agent's metrics, which follow the engine's published view
    /// and events. `None` (a router built on its own): metrics that follow `engine` from the
    /// router's creation, labelled with `worker_id`.
    pub telemetry: Option<Arc<Telemetry>>,
    /// What `GET /performance-metrics/history` serves; `None`: the route answers 404 (no
    /// recording).
    pub recorder: Option<crate::recorder::Recorder>,
}

impl ApiSettings {
    /// Default [`ApiSettings::max_event_clients`].
    pub const DEFAULT_MAX_EVENT_CLIENTS: usize = 32;
    /// Added to the strategies' timeouts in [`ApiSettings::optimize_timeout_for`]: room for
    /// the queue. (`[tuning] settle` adds nothing: a manual run is answered when it ends;
    /// its judgement follows with a later sample.)
    pub const OPTIMIZE_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

    /// Settings with the given identity and every other value by default.
    pub fn new(worker_id: Value) -> Self {
        ApiSettings {
            worker_id,
            token: None,
            read_token: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_event_clients: Self::DEFAULT_MAX_EVENT_CLIENTS,
            target: None,
            rate_limit: RateLimitConfig::default(),
            request_timeout: crate::config::ApiConfig::DEFAULT_REQUEST_TIMEOUT,
            optimize_timeout: Self::optimize_timeout_for(
                crate::config::Config::DEFAULT_STRATEGY_TIMEOUT,
                perfpilot_strategies::builtins::BUILTINS.len(),
            ),
            reloader: None,
            telemetry: None,
            recorder: None,
        }
    }

    /// The longest a manual optimization of all `strategies` can take when each runs under
    /// `strategy_timeout` in turn, plus [`ApiSettings::OPTIMIZE_TIMEOUT_MARGIN`].
    pub fn optimize_timeout_for(strategy_timeout: Duration, strategies: usize) -> Duration {
        strategy_timeout.saturating_mul(u32::try_from(strategies.max(1)).unwrap_or(u32::MAX))
            + Self::OPTIMIZE_TIMEOUT_MARGIN
    }
}

/// What the handlers share. axum clones the state for every request, so it is one `Arc`:
/// cloning the [`EngineHandle`] itself (channel senders, a cancellation token) would cost
/// several contended atomic operations and a mutex per request.
#[derive(Debug, Clone)]
struct ApiState(Arc<SharedState>);

#[derive(Debug)]
struct SharedState {
    engine: EngineHandle,
    settings: Arc<ApiSettings>,
    /// What `/metrics` serves.
    telemetry: Arc<Telemetry>,
    event_clients: Arc<events::EventSlots>,
    /// `GET /openapi.json`, rendered on its first request for the strategy names then known
    /// (and again after a reload changed them), with its gzip form.
    openapi: std::sync::Mutex<Option<openapi::Rendered>>,
    /// `GET /performance-metrics`, rendered once per published view.
    metrics: metrics_cache::MetricsCache,
}

impl std::ops::Deref for ApiState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

impl SharedState {
    /// The `/performance-metrics` document of the latest view, rendered once per view and
    /// shared by the route and every event stream's `metrics-updated`.
    fn metrics_body(&self) -> Result<Bytes, serde_json::Error> {
        let view = self.engine.view();
        let target = self.settings.target.as_ref().map(TargetHandle::status);
        let config = self.settings.reloader.as_ref().map(|r| r.status());
        self.metrics
            .body(&self.settings.worker_id, view, target, config)
    }

    /// [`SharedState::metrics_body`] with its gzip form beside it.
    fn metrics_document(&self) -> Result<Arc<gzip::Compressed>, serde_json::Error> {
        let view = self.engine.view();
        let target = self.settings.target.as_ref().map(TargetHandle::status);
        let config = self.settings.reloader.as_ref().map(|r| r.status());
        self.metrics
            .document(&self.settings.worker_id, view, target, config)
    }
}

/// The agent's routes, ready to serve or to merge into a host's axum app.
///
/// Every route but `GET /health` checks `Host`, `Origin` and its token first ([`access`]);
/// `POST /performance-optimize` is rate limited after that.
pub fn router(engine: EngineHandle, settings: ApiSettings) -> Router {
    let access = Arc::new(access::Access::new(&settings));
    // The deadline, then the access checks: one stack per route (axum boxes the service of
    // each `layer` call and clones the box for every request).
    let deadline = timeout::DeadlineLayer::new(&settings);
    let layers = |class| {
        (
            deadline,
            access::GuardLayer::new(Arc::clone(&access), class),
        )
    };
    let guarded =
        |route: axum::routing::MethodRouter<ApiState>, class| route.route_layer(layers(class));
    // The only route that reads a body.
    let mut optimize = post(performance_optimize).layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    if let Some(limiter) = rate_limit::RateLimiter::new(settings.rate_limit) {
        optimize = optimize.route_layer(middleware::from_fn_with_state(
            Arc::new(limiter),
            rate_limit::limit,
        ));
    }
    use access::Class::{Dashboard, Health, Read, Write};
    let settings = Arc::new(settings);
    let state = ApiState(Arc::new(SharedState {
        openapi: std::sync::Mutex::new(None),
        telemetry: settings.telemetry.clone().unwrap_or_else(|| {
            let label = match &settings.worker_id {
                Value::String(label) => label.clone(),
                other => other.to_string(),
            };
            Telemetry::follow(&label, engine.watch(), engine.subscribe())
        }),
        engine,
        event_clients: events::EventSlots::new(
            settings.max_event_clients,
            settings.read_token.is_some(),
        ),
        settings: Arc::clone(&settings),
        metrics: metrics_cache::MetricsCache::default(),
    }));
    // The hot route: its handler under the layers as one concrete service, boxed once.
    let metrics_route =
        get_service(layers(Read).layer(performance_metrics.with_state(state.clone())));
    Router::new()
        .route("/", guarded(get(dashboard::dashboard), Dashboard))
        .route("/performance-metrics", metrics_route)
        .route(
            "/performance-metrics/history",
            guarded(get(history::history), Read),
        )
        .route("/report", guarded(get(report::report), Read))
        .route("/performance-optimize", guarded(optimize, Write))
        .route("/health", guarded(get(health), Health))
        .route("/events", guarded(get(events::events), Read))
        .route("/metrics", guarded(get(prometheus_metrics), Read))
        .route("/openapi.json", guarded(get(openapi::openapi_json), Read))
        .route("/config/reload", guarded(post(config_reload), Write))
        .route(
            "/budgets/reset-learning",
            guarded(post(reset_learning), Write),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The path under which [`embeddable`] puts every route, the dashboard and Prometheus
/// `/metrics` included.
pub const BASE_PATH: &str = "/perfpilot";

/// The API's paths that [`embeddable`] also serves at the root: every route of [`router`] but
/// the dashboard (`/`) and Prometheus `/metrics`, which a host app commonly has itself.
pub const ROOT_PATHS: &[&str] = &[
    "/performance-metrics",
    "/performance-metrics/history",
    "/performance-optimize",
    "/health",
    "/events",
    "/openapi.json",
    "/config/reload",
    "/budgets/reset-learning",
];

/// The agent's routes for a host app to merge: [`ROOT_PATHS`] at the root (where the source
/// documents' clients expect them), and every route of `full` (a [`router`]) under `base`
/// (the dashboard at `{base}/` and `{base}`, Prometheus at `{base}/metrics`). The result has
/// no fallback, so it merges into an app that has its own `/`, `/metrics` or fallback. Both
/// copies are the same service: one state, one rate limiter.
///
/// `base` must start with `/` and not end with one (e.g. [`BASE_PATH`]).
pub fn embeddable(full: Router, base: &str) -> Router {
    let mut app = Router::new();
    for path in ROOT_PATHS {
        // The same router answers (it routes by the unchanged path); as a plain service,
        // since axum refuses a Router in route_service.
        app = app.route_service(path, full.clone().into_service());
    }
    app.merge(nested(full, base))
}

/// Every route of `full` (a [`router`]) under `base` only, the dashboard at `{base}` and
/// `{base}/`; no fallback. `base` must start with `/` and not end with one.
pub fn nested(full: Router, base: &str) -> Router {
    Router::new()
        .route(&format!("{base}/"), get(dashboard::dashboard))
        .nest(base, full)
}

/// An error answered as JSON `{"error": message, ...extra}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message, `error` in the body.
    pub fn message(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body[key] = value.into();
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The latest sample, the optimizer's stats and the recent runs.
#[utoipa::path(
    get,
    path = "/performance-metrics",
    tag = "perfpilot",
    responses((status = 200, description = "Current metrics, stats and recent optimizations", body = MetricsDocument<'static>))
)]
async fn performance_metrics(State(state): State<ApiState>, request: Request) -> Response {
    // The request rather than `HeaderMap`, which axum would clone.
    match state.metrics_document() {
        Ok(document) => document.respond(request.headers(), "application/json"),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not render metrics: {e}"),
        )
        .into_response(),
    }
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "perfpilot",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4, or OpenMetrics 1.0 when the Accept header asks for application/openmetrics-text", body = String, content_type = "text/plain")
    )
)]
async fn prometheus_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let telemetry = &state.telemetry;
    let (content_type, text) = if wants_openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            telemetry.encode_openmetrics(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            telemetry.encode_prometheus_text(),
        )
    };
    let text = text.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode metrics: {e}"),
        )
    })?;
    // Rendered per scrape, so compressed per scrape, at the fastest level.
    Ok(match gzip::accepted(&headers) {
        true => gzip::answer(
            content_type,
            gzip::compress(text.as_bytes(), flate2::Compression::fast()),
            true,
        ),
        false => gzip::answer(content_type, Bytes::from(text), false),
    })
}

/// The body of `POST /performance-optimize`; an empty body runs every strategy.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizeRequest {
    /// A strategy name or alias (`memory-purge`, `memory`, `gc`, `cache`...); absent or null
    /// for all.
    pub strategy: Option<String>,
}

/// The agent's identity as the API shows it (`workerId`, `worker`): the configured
/// `worker_id`, or else `<hostname>-<pid>`; a configured whole number (a cluster worker
/// number) is a JSON number. Only describes the JSON for the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // never built: it describes the JSON
pub enum WorkerId {
    /// `worker_id` from the configuration, or `<hostname>-<pid>`.
    Name(String),
    /// A configured `worker_id` that is a whole number, e.g. `3`.
    Number(u64),
}

/// The answer of `POST /performance-optimize`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OptimizeResponse {
    /// `Performance optimization triggered successfully: NAME` (or `all`).
    pub message: String,
    /// The agent's identity, as `workerId` in the metrics.
    #[schema(value_type = WorkerId)]
    pub worker: Value,
    /// When the answer was made (RFC 3339).
    pub timestamp: String,
    /// One record per strategy run.
    #[schema(value_type = Vec<OptimizationRecord>)]
    pub results: Vec<Arc<OptimizationRecord>>,
}

/// Every error the API answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
    /// With an unknown strategy: every name and alias that would work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_strategies: Option<Vec<String>>,
    /// With 429: seconds until a request is allowed again (as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// Runs one strategy now, or all of them (bypassing thresholds and cooldowns, not single flight).
#[utoipa::path(
    post,
    path = "/performance-optimize",
    tag = "perfpilot",
    request_body(content = Option<OptimizeRequest>, description = "The strategy to run; empty for all", content_type = "application/json"),
    responses(
        (status = 200, description = "The runs and what they did", body = OptimizeResponse),
        (status = 400, description = "Unknown strategy or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token (when api.token is set)", body = ErrorBody),
        (status = 409, description = "An optimization is already running", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        (status = 429, description = "Too many manual optimizations from this client; see Retry-After and the RateLimit-* headers", body = ErrorBody),
        (status = 503, description = "The agent is shutting down, or the optimization outlasted the request deadline (it goes on)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
async fn performance_optimize(
    State(state): State<ApiState>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refusal) => return Ok(refusal),
    };
    let request = parse_optimize_request(&body)?;
    let records = state
        .engine
        .optimize(request.strategy.as_deref())
        .await
        .map_err(|error| match &error {
            OptimizeError::UnknownStrategy { known, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, error.to_string())
                    .with("knownStrategies", known.clone())
            }
            OptimizeError::Busy => ApiError::new(StatusCode::CONFLICT, error.to_string()),
            OptimizeError::Stopped => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
        })?;
    let target = request.strategy.as_deref().unwrap_or("all");
    Ok(Json(OptimizeResponse {
        message: format!("Performance optimization triggered successfully: {target}"),
        worker: state.settings.worker_id.clone(),
        timestamp: rfc3339(SystemTime::now()),
        results: records,
    })
    .into_response())
}

/// Longest a request body may take to arrive: a client that announces a body and sends it
/// slowly (or never) is answered 408 and its connection closed after this, rather than
/// holding a connection for the whole optimize deadline.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a request body of at most [`MAX_BODY_BYTES`] within [`BODY_READ_TIMEOUT`]: else 413,
/// 408 (with `Connection: close`) or 400.
async fn read_body(body: axum::body::Body) -> Result<Bytes, Response> {
    use futures_util::StreamExt;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("could not read request body: {error}"),
                )
            })?;
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(read) => read.map_err(IntoResponse::into_response),
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
            .into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            Err(response)
        }
    }
}

/// Parses the body of `POST /performance-optimize`: empty (or only whitespace) or JSON `null`
/// for all strategies, else a JSON object `{"strategy": NAME}`. Any bytes give a request or a 400/422
/// `ApiError`, never a panic (fuzzed: `fuzz/fuzz_targets/optimize_body.rs`).
pub fn parse_optimize_request(body: &[u8]) -> Result<OptimizeRequest, ApiError> {
    parse_optional_object(body, r#"expected {"strategy": "NAME"} or an empty body"#)
}

/// An empty body (or only whitespace) or JSON `null` as `T::default()`, else a JSON object
/// as `T`; anything else a 400 (not JSON) or 422 (the wrong shape) saying what was `expected`.
fn parse_optional_object<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON body: {e}; {expected}"),
        )
    })?;
    if value.is_null() {
        return Ok(T::default());
    }
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request body: not a JSON object; {expected}"),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request body: {e}; {expected}"),
        )
    })
}

/// `GET /health` answers 503 when the latest sample is older than this many intervals in
/// force (plus [`HEALTH_STALE_MARGIN`]): sampling has stalled.
pub const HEALTH_STALE_INTERVALS: u32 = 3;

/// Added to [`HEALTH_STALE_INTERVALS`] intervals: room for a late tick on a loaded machine
/// (under `stress-ng` beside parallel builds a 100 ms agent went 3 s without a sample at
/// start-up; a stall is what lasts longer).
pub const HEALTH_STALE_MARGIN: Duration = Duration::from_secs(10);

/// The body of `POST /budgets/reset-learning`; an empty body resets every budget.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetLearningRequest {
    /// A budget's name; absent or null for all.
    pub budget: Option<String>,
}

/// The answer of `POST /budgets/reset-learning`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetLearningResponse {
    /// The budgets whose learned reaction state was forgotten.
    pub reset: Vec<String>,
}

/// Forgets what one budget, or every budget, learned about reacting: each rung's record and
/// latency, the guard band (the effective goal is the configured one again), the rise.
#[utoipa::path(
    post,
    path = "/budgets/reset-learning",
    tag = "perfpilot",
    request_body(content = Option<ResetLearningRequest>, description = "The budget to reset; empty for all", content_type = "application/json"),
    responses(
        (status = 200, description = "The budgets reset", body = ResetLearningResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token (when api.token is set)", body = ErrorBody),
        (status = 404, description = "No budget has that name", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "The agent is shutting down", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
async fn reset_learning(
    State(state): State<ApiState>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use crate::engine::ResetError;
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refusal) => return Ok(refusal),
    };
    let request: ResetLearningRequest =
        parse_optional_object(&body, r#"expected {"budget": "NAME"} or an empty body"#)?;
    let reset = state
        .engine
        .reset_learning(request.budget.as_deref())
        .await
        .map_err(|error| {
            let status = match &error {
                ResetError::UnknownBudget { .. } => StatusCode::NOT_FOUND,
                ResetError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            };
            ApiError::new(status, error.to_string())
        })?;
    Ok(Json(ResetLearningResponse { reset }).into_response())
}

/// Re-reads the configuration file and applies it without a restart (as SIGHUP does).
#[utoipa::path(
    post,
    path = "/config/reload",
    tag = "perfpilot",
    responses(
        (status = 200, description = "The new configuration is in force; what changed, and what needs a restart", body = crate::reload::ReloadReport),
        (status = 401, description = "Missing or wrong bearer token (when api.token is set)", body = ErrorBody),
        (status = 409, description = "The agent has no configuration file to reload (an embedded agent)", body = ErrorBody),
        (status = 422, description = "The file is unreadable or invalid; the running configuration stays in force", body = ErrorBody),
        (status = 503, description = "The agent is shutting down", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
async fn config_reload(
    State(state): State<ApiState>,
) -> Result<Json<crate::reload::ReloadReport>, ApiError> {
    use crate::reload::ReloadError;
    let Some(reloader) = &state.settings.reloader else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ReloadError::NoSource.to_string(),
        ));
    };
    let report = reloader
        .reload("POST /config/reload")
        .await
        .map_err(|error| {
            let status = match &error {
                ReloadError::NoSource => StatusCode::CONFLICT,
                ReloadError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ReloadError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            };
            ApiError::new(status, error.to_string())
        })?;
    Ok(Json(report))
}

/// The answer of `GET /health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// `ok` (200) while the engine runs and samples; `failing` (503) when the engine task
    /// has ended or no sample arrived for [`HEALTH_STALE_INTERVALS`] intervals in force plus
    /// [`HEALTH_STALE_MARGIN`] (a lengthened interval, `interval-backoff`'s, is in force too;
    /// `enabled = false` still samples).
    pub status: &'static str,
    /// Why the agent is failing; absent while `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent's identity.
    #[schema(value_type = WorkerId)]
    pub worker_id: Value,
    /// Now (RFC 3339).
    pub timestamp: String,
    /// Uptime of the watched process (the target in sidecar mode), s.
    pub uptime: Option<f64>,
    /// Age of the latest sample, ms.
    pub last_sample_age_ms: u64,
    /// Sampling interval in force, ms.
    pub interval_ms: u64,
    /// Whether an optimization runs now.
    pub is_optimizing: bool,
    /// Runs since start.
    pub optimization_count: u64,
    /// The sidecar target and whether it runs (absent in self and library modes). The agent
    /// answers 200 while the target is down: it is the agent's health.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetStatus>,
    /// The last configuration reload failed: the configuration loaded before it is in force
    /// (`config.lastError` in `/performance-metrics` says why).
    pub last_reload_failed: bool,
    /// With `state_dir`: how writing the recording to disk goes (a full disk does not make
    /// the agent unhealthy: the recording goes on in memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingHealth>,
}

/// `recording` in `GET /health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingHealth {
    /// The last segment could not be written because the disk is full: the recording goes on
    /// in memory only until a write succeeds.
    pub disk_full: bool,
    /// Segments not written (disk full, an I/O error, the writer behind) since start.
    pub failed_writes: u64,
    /// State files refused at start (truncated, corrupt, from a newer agent, not owned by the
    /// agent's user) and moved to `refused/`.
    pub refused_files: u64,
}

/// Liveness and a short status; never behind the agent's own actions.
#[utoipa::path(
    get,
    path = "/health",
    tag = "perfpilot",
    responses(
        (status = 200, description = "The agent is alive and sampling", body = HealthResponse),
        (status = 503, description = "The engine has stopped or sampling has stalled (see `reason`). A request whose Host is foreign or missing gets `{\"status\"}` only, with the same code", body = HealthResponse)
    )
)]
async fn health(
    State(state): State<ApiState>,
    status_only: Option<axum::Extension<access::StatusOnly>>,
) -> Response {
    let view = state.engine.view();
    let age = SystemTime::now()
        .duration_since(view.snapshot.taken_at)
        .unwrap_or(Duration::ZERO);
    let stale_after = view.interval.saturating_mul(HEALTH_STALE_INTERVALS) + HEALTH_STALE_MARGIN;
    // From the end of the latest sample: a first sample that was slow is not a stall.
    let since_sample = SystemTime::now()
        .duration_since(view.sampled_at)
        .unwrap_or(Duration::ZERO);
    let reason = if !state.engine.is_running() {
        Some("the engine task has stopped: nothing is sampled or acted on".to_owned())
    } else if let Some(error) = &view.sampling_error {
        Some(format!("sampling is failing: {error}"))
    } else if since_sample > stale_after {
        Some(format!(
            "sampling has stalled: no sample for {} ms, more than {} intervals of {} ms + {} s",
            since_sample.as_millis(),
            HEALTH_STALE_INTERVALS,
            view.interval.as_millis(),
            HEALTH_STALE_MARGIN.as_secs()
        ))
    } else {
        None
    };
    let code = match reason {
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::OK,
    };
    let status = if reason.is_some() { "failing" } else { "ok" };
    if status_only.is_some() {
        // A foreign or missing Host (a web page after DNS rebinding): what a probe needs and
        // nothing about the agent or its target.
        return (code, Json(json!({ "status": status }))).into_response();
    }
    (
        code,
        Json(HealthResponse {
            status,
            reason,
            worker_id: state.settings.worker_id.clone(),
            timestamp: rfc3339(SystemTime::now()),
            uptime: view.snapshot.uptime.map(|u| u.as_secs_f64()),
            last_sample_age_ms: age.as_millis() as u64,
            interval_ms: view.interval.as_millis() as u64,
            is_optimizing: view.is_optimizing,
            optimization_count: view.stats.count,
            target: state.settings.target.as_ref().map(TargetHandle::status),
            last_reload_failed: state
                .settings
                .reloader
                .as_ref()
                .is_some_and(|r| r.last_reload_failed()),
            recording: state
                .settings
                .recorder
                .as_ref()
                .filter(|r| r.has_store())
                .map(|r| {
                    use std::sync::atomic::Ordering::Relaxed;
                    let health = r.store_health();
                    RecordingHealth {
                        disk_full: health.disk_full.load(Relaxed),
                        failed_writes: health.failed_writes.load(Relaxed),
                        refused_files: health.refused.load(Relaxed),
                    }
                }),
        }),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; see GET /performance-metrics, POST /performance-optimize, GET /health",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests;
