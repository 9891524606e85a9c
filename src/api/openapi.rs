//! `GET /openapi.json`: the OpenAPI 3 description of the API, generated from the handlers'
//! annotations and the response types.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::gzip::Compressed;
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
        super::history::history,
        super::report::report,
        super::performance_optimize,
        super::health,
        super::prometheus_metrics,
        super::events::events,
        super::config_reload,
        super::reset_learning,
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
pub(super) fn document(known: &[String]) -> String {
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
    add_access_responses(&mut document);
    document.to_string()
}

/// The document as last rendered, and the strategy names it was rendered for.
#[derive(Debug)]
pub(super) struct Rendered {
    known: Vec<String>,
    document: Arc<Compressed>,
}

/// Every operation but `GET /health` may answer 403 (a foreign `Host` or `Origin`) and 401
/// (a token is needed: `api.token` for `POST`, `api.read_token` for reads), see
/// [`super::access`].
fn add_access_responses(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    for (path, operations) in paths.iter_mut() {
        if path == "/health" {
            continue;
        }
        let Some(operations) = operations.as_object_mut() else {
            continue;
        };
        for (method, operation) in operations.iter_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let unauthorized = if method == "post" {
                "Missing or wrong bearer token (when api.token is set)"
            } else {
                "Missing or wrong bearer token or session cookie (when api.read_token is set)"
            };
            for (status, description) in [
                ("401", unauthorized),
                ("403", "Host not allowed (api.allowed_hosts), or a cross-origin request (api.allowed_origins)"),
            ] {
                responses.entry(status).or_insert_with(|| {
                    json!({
                        "description": description,
                        "content": {"application/json": {"schema": error.clone()}}
                    })
                });
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "perfpilot",
    responses((status = 200, description = "The OpenAPI 3 document of this API", body = Object, content_type = "application/json"))
)]
pub(super) async fn openapi_json(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let known = state.engine.view().known_names();
    let kept = lock(&state.openapi)
        .as_ref()
        .filter(|rendered| rendered.known == known)
        .map(|rendered| Arc::clone(&rendered.document));
    let document = kept.unwrap_or_else(|| {
        // Rendered outside the lock; two first requests may both render the same document.
        let document = Arc::new(Compressed::new(Bytes::from(document(&known))));
        *lock(&state.openapi) = Some(Rendered {
            known,
            document: Arc::clone(&document),
        });
        document
    });
    document.respond(&headers, "application/json")
}

fn lock(openapi: &Mutex<Option<Rendered>>) -> std::sync::MutexGuard<'_, Option<Rendered>> {
    // Nothing panics while it is held; a poisoned lock still holds a whole value.
    openapi
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
