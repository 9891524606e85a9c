//! [`MetricsLayer`]: the tower layer that counts every request in a [`RequestMetrics`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::HttpBody;
use axum::http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{InFlightGuard, RequestMetrics};

/// A tower [`Layer`] that records every request of the wrapped service in a
/// [`RequestMetrics`]: in flight from the call, then latency, response bytes and failure
/// (a 5xx status or an error) when its future completes. Works with `axum::Router::layer`.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: RequestMetrics,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: RequestMetrics) -> MetricsLayer {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: RequestMetrics,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: HttpBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Started before the call: a service may do its work inside `call`.
        let guard = self.metrics.start();
        ResponseFuture {
            inner: self.inner.call(request),
            guard,
        }
    }
}

pin_project! {
    /// The future of a [`MetricsService`] call: the wrapped service's, recording the request
    /// when it completes (or as cancelled when it is dropped first).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: InFlightGuard,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: HttpBody,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Looked at in place and returned as it came: the response is never moved here.
        let poll = this.inner.poll(cx);
        if let Poll::Ready(result) = &poll {
            let (response_bytes, failed) = match result {
                Ok(response) => (
                    response.body().size_hint().exact(),
                    response.status().is_server_error(),
                ),
                Err(_) => (None, true),
            };
            this.guard.finish_in_place(response_bytes, failed);
        }
        poll
    }
}
