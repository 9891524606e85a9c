//! `GET /openapi.json`: the OpenAPI 3 description of the API, generated from the handlers'
//! annotations and the response types.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::ApiState;

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
        super::config_reload,
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

/// The document for an agent whose strategies answer to `known` (names and aliases): the
/// `strategy` of `POST /performance-optimize` is one of them, or null.
///
/// Rendered on the first `GET /openapi.json` (see [`openapi_json`]), not at start-up: an idle
/// agent does not keep the document's JSON tree, nor touch the code that builds it.
pub(super) fn document(known: &[String]) -> Arc<str> {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(
        |e| json!({ "error": format!("could not render the OpenAPI document: {e}") }),
    );
    if let Some(strategy) =
        document.pointer_mut("/components/schemas/OptimizeRequest/properties/strategy")
    {
        let mut names: Vec<Value> = known
            .iter()
            .map(|name| Value::from(name.as_str()))
            .collect();
        names.push(Value::Null);
        strategy["enum"] = Value::Array(names);
    }
    Arc::from(document.to_string())
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "perfpilot",
    responses((status = 200, description = "The OpenAPI 3 document of this API", body = Object, content_type = "application/json"))
)]
pub(super) async fn openapi_json(State(state): State<ApiState>) -> Response {
    let document = state
        .openapi
        .get_or_init(|| document(&state.known_strategies));
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}
