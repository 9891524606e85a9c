//! `GET /report`: the page `perfpilot report` writes ([`crate::recorder::report`]), of the
//! running agent's recording (its memory, and the segments of `state_dir` older than that).

use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use perfpilot_strategies::snapshot::unix_millis::millis;
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::recorder::report;

/// The query of `GET /report`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReportQuery {
    /// From when: an RFC 3339 time or a duration back from now (`24h`, `30m`); by default
    /// `24h`.
    since: Option<String>,
    /// Until when, written like `since`; by default now.
    until: Option<String>,
}

/// One self-contained HTML report of the recording: a summary, each budget's signal with goal,
/// limit and episodes, the rungs climbed, each strategy's runs and effectiveness, OOM kills
/// and reloads.
#[utoipa::path(
    get,
    path = "/report",
    tag = "perfpilot",
    params(ReportQuery),
    responses(
        (status = 200, description = "The report: one HTML page with inline CSS and SVG, no script", content_type = "text/html"),
        (status = 400, description = "A bad since or until, named"),
        (status = 404, description = "This agent keeps no recording"),
        (status = 503, description = "Too many history requests at once (recorder.max_history_requests)")
    )
)]
pub(super) async fn report(
    State(state): State<ApiState>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    // A report reads what a history request reads: it takes one of the same permits.
    let (recorder, permit) = super::history::reader(&state)?;
    let now = SystemTime::now();
    let mut problems = Vec::new();
    let mut when = |key: &str, text: &Option<String>, default: &str| {
        let text = text.as_deref().filter(|t| !t.is_empty()).unwrap_or(default);
        match crate::recorder::parse_when(key, text, now) {
            Ok(at) => millis(at) as i64,
            Err(why) => {
                problems.push(why);
                0
            }
        }
    };
    let since = when("since", &query.since, "24h");
    let until = when("until", &query.until, "0s");
    if problems.is_empty() && since > until {
        problems.push(format!(
            "since = {:?} is after until",
            query.since.as_deref().unwrap_or("24h")
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, problems.join("; ")));
    }
    let title = format!("agent {}", state.settings.worker_id);
    let html = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        report::from_recorder(&recorder, since, until, &title).html()
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the report failed: {e}"),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response())
}
