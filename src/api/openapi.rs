//! `GET /openapi.json`: the OpenAPI 3 description of the API, generated from the handlers'
//! annotations and the response types.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The API's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "perfpilot",
        description = "A self-tuning performance optimizer agent: metrics, manual optimizations, health, Prometheus metrics and live events."
    ),
    paths(
        super::performance_metrics,
        super::performance_optimize,
        super::health,
        super::prometheus_metrics,
        super::events::events,
        openapi_json,
    ),
    modifiers(&BearerToken),
    tags((name = "perfpilot", description = "The agent's API"))
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme used by mutating routes when a token is set.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "perfpilot",
    responses((status = 200, description = "The OpenAPI 3 document of this API", body = Object, content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        ApiDoc::openapi().to_json().unwrap_or_else(|e| {
            format!(r#"{{"error": "could not render the OpenAPI document: {e}"}}"#)
        })
    });
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}
