//! `GET /events`: the engine's events as Server-Sent Events.
//!
//! - `metrics-updated`: the same document as `GET /performance-metrics`, sent once on
//!   connect and after every sample;
//! - `optimization-completed`: one optimization record, as in `recentOptimizations`;
//! - `budget-exhausted`: a budget's ladder ran out with its signal above the limit
//!   (`{budget, episode, value, limit, at, message}`);
//! - `lagged`: `{"skipped": N}` when this client fell more than the buffer behind and N events
//!   were dropped for it. A slow client never slows the agent: each client reads from a
//!   bounded broadcast buffer and only it loses events.
//!
//! Comments are sent as keep-alives every 15 s. Streams end when the agent shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, OwnedSemaphorePermit};

use super::{ApiError, ApiState};
use crate::events::Event;

/// How often a keep-alive comment is sent on an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One client's stream state; the permit counts it against the client cap until dropped.
struct Client {
    state: ApiState,
    events: broadcast::Receiver<Event>,
    greeted: bool,
    _permit: OwnedSemaphorePermit,
}

/// The engine's events as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/events",
    tag = "perfpilot",
    responses(
        (status = 200, description = "A text/event-stream of `metrics-updated` (data: the /performance-metrics document), `optimization-completed` (data: an optimization record), `budget-exhausted` (data: {budget, episode, value, limit, at, message}) and `lagged` (data: {\"skipped\": n}) events", body = String, content_type = "text/event-stream"),
        (status = 503, description = "Too many event-stream clients", body = super::ErrorBody),
    )
)]
pub(super) async fn events(
    State(state): State<ApiState>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let permit = Arc::clone(&state.event_clients)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many event-stream clients (at most {})",
                    state.settings.max_event_clients
                ),
            )
        })?;
    let client = Client {
        events: state.engine.subscribe(),
        state,
        greeted: false,
        _permit: permit,
    };
    let stream = stream::unfold(client, |mut client| async move {
        let event = next_event(&mut client).await?;
        Some((Ok(event), client))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

async fn next_event(client: &mut Client) -> Option<SseEvent> {
    if !client.greeted {
        client.greeted = true;
        return Some(metrics_event(&client.state));
    }
    let received = tokio::select! {
        _ = client.state.engine.stopping() => return None,
        received = client.events.recv() => received,
    };
    let event = match received {
        Ok(Event::MetricsUpdated(_)) => metrics_event(&client.state),
        Ok(Event::OptimizationCompleted(record)) => json_event("optimization-completed", &*record),
        Ok(Event::OomKill(kill)) => json_event("oom-kill", &kill),
        Ok(Event::BudgetExhausted(exhaustion)) => json_event("budget-exhausted", &*exhaustion),
        Err(RecvError::Lagged(skipped)) => json_event("lagged", &json!({ "skipped": skipped })),
        Err(RecvError::Closed) => return None,
    };
    Some(event)
}

/// The `/performance-metrics` document, rendered once per sample for all clients (compact
/// JSON has no newlines, so it is one SSE data line).
fn metrics_event(state: &ApiState) -> SseEvent {
    let rendered = state.metrics_body();
    match rendered.as_deref().map(std::str::from_utf8) {
        Ok(Ok(json)) => SseEvent::default().event("metrics-updated").data(json),
        failed => SseEvent::default()
            .event("error")
            .data(format!("could not render metrics-updated: {failed:?}")),
    }
}

fn json_event(name: &str, data: &impl serde::Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| {
            SseEvent::default()
                .event("error")
                .data(format!("could not render {name}: {e}"))
        })
}
