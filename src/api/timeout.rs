//! Request deadlines: a request not answered in time gets a JSON error instead of holding its
//! connection.
//!
//! - `GET /events` is a stream and has none;
//! - `POST /performance-optimize` gets [`ApiSettings::optimize_timeout`]: by default every
//!   strategy's `strategy_timeout` in turn plus a margin, so it fires only if the engine is
//!   stuck. The batch itself goes on and its records are kept (see `recentOptimizations`);
//!   the answer is 503;
//! - every other route (and reading any request body) gets [`ApiSettings::request_timeout`],
//!   answered with 408.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiSettings};

/// The middleware.
pub(super) async fn deadline(
    State(settings): State<Arc<ApiSettings>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/events" {
        return next.run(request).await;
    }
    let optimize = path == "/performance-optimize";
    let limit = if optimize {
        settings.optimize_timeout
    } else {
        settings.request_timeout
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) if optimize => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the optimization was not done within {} ms; it goes on, and its records will appear in recentOptimizations",
                limit.as_millis()
            ),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}
