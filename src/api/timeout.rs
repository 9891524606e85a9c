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
//!
//! A tower [`Layer`] whose future is concrete (the route's future under a `tokio` timer):
//! nothing is allocated per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{ApiError, ApiSettings};

/// Puts the deadlines of [`ApiSettings`] on every route it wraps.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeadlineLayer {
    request_timeout: Duration,
    optimize_timeout: Duration,
}

impl DeadlineLayer {
    /// The deadlines of `settings`.
    pub(super) fn new(settings: &ApiSettings) -> Self {
        DeadlineLayer {
            request_timeout: settings.request_timeout,
            optimize_timeout: settings.optimize_timeout,
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            limits: *self,
        }
    }
}

/// A route under [`DeadlineLayer`]'s deadlines.
#[derive(Debug, Clone)]
pub(super) struct Deadline<S> {
    inner: S,
    limits: DeadlineLayer,
}

impl<S> Service<Request> for Deadline<S>
where
    S: Service<Request>,
    S::Response: IntoResponse,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let path = request.uri().path();
        if path == "/events" {
            return DeadlineFuture::Unbounded {
                inner: self.inner.call(request),
            };
        }
        let optimize = path == "/performance-optimize";
        let limit = if optimize {
            self.limits.optimize_timeout
        } else {
            self.limits.request_timeout
        };
        DeadlineFuture::Bounded {
            inner: tokio::time::timeout(limit, self.inner.call(request)),
            limit,
            optimize,
        }
    }
}

pin_project! {
    /// The answer of a [`Deadline`] route: the route's own, or the deadline's error.
    #[project = DeadlineProjection]
    pub(super) enum DeadlineFuture<F> {
        /// `GET /events`: no deadline.
        Unbounded { #[pin] inner: F },
        /// Every other route.
        Bounded {
            #[pin]
            inner: tokio::time::Timeout<F>,
            limit: Duration,
            optimize: bool,
        },
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: IntoResponse,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DeadlineProjection::Unbounded { inner } => {
                Poll::Ready(ready!(inner.poll(cx)).map(IntoResponse::into_response))
            }
            DeadlineProjection::Bounded {
                inner,
                limit,
                optimize,
            } => Poll::Ready(match ready!(inner.poll(cx)) {
                Ok(answer) => answer.map(IntoResponse::into_response),
                Err(_elapsed) => Ok(expired(*limit, *optimize)),
            }),
        }
    }
}

/// The answer of a request that outlasted its deadline `limit`.
fn expired(limit: Duration, optimize: bool) -> Response {
    if optimize {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the optimization was not done within {} ms; it goes on, and its records will appear in recentOptimizations",
                limit.as_millis()
            ),
        )
        .into_response()
    } else {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within {} ms", limit.as_millis()),
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::{to_bytes, Body};
    use tower::ServiceExt;

    use super::*;

    /// What a route that never answers gives at `path` under a 1 s request deadline and a
    /// 10 s optimize deadline, on tokio's paused clock; `None` if it still had not answered
    /// after an hour.
    async fn answer_of_a_stuck_route(path: &str) -> Option<(StatusCode, String)> {
        let layer = DeadlineLayer {
            request_timeout: Duration::from_secs(1),
            optimize_timeout: Duration::from_secs(10),
        };
        let stuck =
            tower::service_fn(|_: Request| std::future::pending::<Result<Response, Infallible>>());
        let request = Request::get(path)
            .body(Body::empty())
            .expect("a valid request");
        let answer = layer.layer(stuck).oneshot(request);
        let response = tokio::time::timeout(Duration::from_secs(3600), answer)
            .await
            .ok()?
            .expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_request_gets_408_a_stuck_optimization_503_and_events_no_deadline() {
        let (status, body) = answer_of_a_stuck_route("/performance-metrics")
            .await
            .expect("an answer at the deadline");
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body, r#"{"error":"request not completed within 1000 ms"}"#);
        let (status, body) = answer_of_a_stuck_route("/performance-optimize")
            .await
            .expect("an answer at the deadline");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not done within 10000 ms"), "{body}");
        assert_eq!(answer_of_a_stuck_route("/events").await, None);
    }
}
