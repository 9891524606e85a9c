//! [`super::guard`]'s checks as a tower layer: the checks run in `call`, so a refused request
//! never reaches the route, and the future is concrete (nothing is allocated per request but
//! the session cookie the dashboard gets when opened with the token).

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{guard, set_session_cookie, Access, Class};

/// Checks `Host`, `Origin` and the token of [`Class`] before the routes it wraps ([`super`]).
#[derive(Debug, Clone)]
pub(in crate::api) struct GuardLayer {
    access: Arc<Access>,
    class: Class,
}

impl GuardLayer {
    /// The checks of `class` against `access`'s settings and sessions.
    pub(in crate::api) fn new(access: Arc<Access>, class: Class) -> Self {
        GuardLayer { access, class }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

/// A route behind [`GuardLayer`]'s checks.
#[derive(Debug, Clone)]
pub(in crate::api) struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match guard(&self.layer.access, self.layer.class, &mut request) {
            Err(refusal) => GuardFuture::Refused {
                refusal: ready(Ok(refusal)),
            },
            Ok(cookie_path) => GuardFuture::Admitted {
                cookie: cookie_path.map(|path| (Arc::clone(&self.layer.access), path)),
                inner: self.inner.call(request),
            },
        }
    }
}

pin_project! {
    /// The answer of a [`Guard`] route: the refusal, or the route's own answer.
    #[project = GuardProjection]
    pub(in crate::api) enum GuardFuture<F, E> {
        /// 403 or 401, made in `call`.
        Refused { #[pin] refusal: Ready<Result<Response, E>> },
        /// The route's answer, with a new session cookie at the path when there is one.
        Admitted {
            #[pin]
            inner: F,
            cookie: Option<(Arc<Access>, String)>,
        },
    }
}

impl<F, E> Future for GuardFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProjection::Refused { refusal } => refusal.poll(cx),
            GuardProjection::Admitted { inner, cookie } => {
                let mut answer = std::task::ready!(inner.poll(cx));
                if let (Ok(response), Some((access, path))) = (&mut answer, cookie.take()) {
                    set_session_cookie(&access, &path, response);
                }
                Poll::Ready(answer)
            }
        }
    }
}
