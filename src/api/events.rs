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
//!
//! At most [`ApiSettings::max_event_clients`](super::ApiSettings::max_event_clients) streams
//! are open at once, at most [`EventSlots::PER_CLIENT`] of them for one client (as the rate
//! limit tells clients apart, [`super::rate_limit`]); with `api.read_token` set, the last slot
//! is kept for the dashboard's session cookie holder, so that a reader holding every other
//! slot cannot blank the operator's dashboard. More get 503.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::rate_limit::Client as ClientKey;
use super::{ApiError, ApiState};
use crate::events::Event;

/// How often a keep-alive comment is sent on an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One client's stream state; the slot counts it against the caps until dropped.
struct Client {
    state: ApiState,
    events: broadcast::Receiver<Event>,
    greeted: bool,
    _slot: EventSlot,
}

/// The event-stream slots: how many are open, in all and per client.
#[derive(Debug)]
pub(super) struct EventSlots {
    max: usize,
    /// Whether the last slot is kept for a session cookie holder.
    reserve: bool,
    open: Mutex<(usize, HashMap<ClientKey, usize>)>,
}

impl EventSlots {
    /// Most streams one client may hold.
    pub const PER_CLIENT: usize = 8;

    /// `max` slots; with `reserve`, the last is only for a session cookie holder.
    pub(super) fn new(max: usize, reserve: bool) -> Arc<Self> {
        Arc::new(EventSlots {
            max,
            reserve,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for `client` (`session`: it holds the dashboard's cookie), or why not.
    pub(super) fn take(
        self: &Arc<Self>,
        client: ClientKey,
        session: bool,
    ) -> Result<EventSlot, String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_client) = &mut *open;
        let mine = per_client.get(&client).copied().unwrap_or(0);
        let shared = self.max.saturating_sub(usize::from(self.reserve));
        let fits = *total < shared && mine < Self::PER_CLIENT;
        let reserved = self.reserve && session && *total < self.max;
        if !(fits || reserved) {
            return Err(if mine < Self::PER_CLIENT {
                format!("too many event-stream clients (at most {})", self.max)
            } else {
                format!(
                    "too many event streams from this client (at most {} of {})",
                    Self::PER_CLIENT,
                    self.max
                )
            });
        }
        *total += 1;
        *per_client.entry(client).or_insert(0) += 1;
        Ok(EventSlot {
            slots: Arc::clone(self),
            client,
        })
    }
}

/// One open stream's slot, given back when dropped.
#[derive(Debug)]
pub(super) struct EventSlot {
    slots: Arc<EventSlots>,
    client: ClientKey,
}

impl Drop for EventSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_client) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// The engine's events as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/events",
    tag = "perfpilot",
    responses(
        (status = 200, description = "A text/event-stream of `metrics-updated` (data: the /performance-metrics document), `optimization-completed` (data: an optimization record), `budget-exhausted` (data: {budget, episode, value, limit, at, message}) and `lagged` (data: {\"skipped\": n}) events", body = String, content_type = "text/event-stream"),
        (status = 503, description = "Too many event-stream clients, in all or from this client", body = super::ErrorBody),
    )
)]
pub(super) async fn events(
    State(state): State<ApiState>,
    request: Request,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let session = request
        .extensions()
        .get::<super::access::Session>()
        .is_some();
    let slot = state
        .event_clients
        .take(ClientKey::of_request(&request), session)
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why))?;
    let client = Client {
        events: state.engine.subscribe(),
        state,
        greeted: false,
        _slot: slot,
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
        Ok(Event::MetricsUpdated(..)) => metrics_event(&client.state),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_capped_and_the_last_slot_is_kept_for_the_session() {
        let slots = EventSlots::new(EventSlots::PER_CLIENT + 4, true);
        let reader = ClientKey::Uid(1000);
        let held: Vec<_> = (0..EventSlots::PER_CLIENT)
            .map(|_| slots.take(reader, false).unwrap())
            .collect();
        let refused = slots.take(reader, false).unwrap_err();
        assert!(refused.contains("from this client"), "{refused}");
        let others: Vec<_> = (0..3)
            .map(|_| slots.take(ClientKey::Loopback, false).unwrap())
            .collect();
        // Only the reserved slot is left: not for a reader, for the cookie holder.
        assert!(slots.take(ClientKey::Shared, false).is_err());
        let dashboard = slots.take(reader, true).unwrap();
        assert!(slots.take(reader, true).is_err(), "every slot is taken");
        drop(dashboard);
        drop(others);
        drop(held);
        assert_eq!(slots.open.lock().unwrap().0, 0);
        assert!(slots.open.lock().unwrap().1.is_empty());
    }
}
