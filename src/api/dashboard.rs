//! `GET /`: the live dashboard, one self-contained HTML page compiled into the binary.
//!
//! The page has no build step and loads nothing from outside (the agent may run where
//! nothing else is reachable): plain HTML, CSS and JavaScript, charts drawn on `<canvas>`.
//! It is fed by `GET /events` and runs strategies with `POST /performance-optimize`, always
//! through URLs relative to its own path, so it keeps working when the agent's router is
//! nested under a prefix such as `/agent/`.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, HTML + CSS + JavaScript.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Serves [`DASHBOARD_HTML`]. `no-cache` so an upgraded agent never shows a stale page; never
/// in a frame of another page (its buttons run strategies).
pub(super) async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        DASHBOARD_HTML,
    )
}
