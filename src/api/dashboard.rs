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

#[cfg(test)]
mod tests {
    use super::DASHBOARD_HTML;

    /// The strategies table's "trigger above" cell: a strategy that runs only as a budget's
    /// rung (`rungOnly` in `/performance-metrics`) has no trigger of its own, so the cell says
    /// so instead of showing its placeholder trigger's threshold.
    #[test]
    fn the_strategies_table_shows_no_trigger_threshold_for_a_budget_rung() {
        let render = DASHBOARD_HTML
            .split("function renderStrategies(")
            .nth(1)
            .expect("the page renders the strategies table");
        let render = &render[..render.find("\n  }\n").expect("the function ends")];
        let cell = render
            .split("row.querySelector(\".above\").textContent =")
            .nth(1)
            .expect("the function fills the threshold cell");
        let cell = &cell[..cell.find(';').expect("the statement ends")];
        assert!(
            cell.trim_start().starts_with("s.rungOnly ?"),
            "the threshold cell must check rungOnly first: {cell}"
        );
    }
}
