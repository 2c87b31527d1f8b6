//! The OpenAPI 3 document, generated from the handlers' annotations (`utoipa`), served at
//! `/api/v1/openapi.json`, and the interactive API page at `/api/v1/docs/` (Swagger UI, vendored
//! under `assets/swagger-ui/`, no CDN). Every operation also documents the common error body as
//! its `default` response.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::ApiState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ironbridge management API",
        description = "Tenants, customers, users, API clients, device profiles, devices (credentials, \
attributes, telemetry, RPC), alarms and the audit log. Log in at `/api/v1/auth/login` (users) or \
`/api/v1/oauth/token` (programs) and send the token as `Authorization: Bearer`. Scopes: `read` \
(viewer), `control` (operator: RPC, alarms), `write` (tenant administrator), `system` (system \
administrator). Errors are `{\"error\":{\"code\",\"message\"}}`."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "auth", description = "Tokens"),
        (name = "tenants"), (name = "customers"), (name = "users"), (name = "api-clients"),
        (name = "profiles"), (name = "devices"), (name = "telemetry"), (name = "rpc"),
        (name = "alarms"), (name = "rules"), (name = "dashboards"), (name = "firmware"),
        (name = "analytics"),
        (name = "audit")
    )
)]
struct Base;

/// The document's fixed part: info, the bearer scheme, the error schema.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    doc
}

/// The finished document as JSON: every operation gets the error body as its `default`
/// response.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut v = serde_json::to_value(&doc).expect("the document serialises");
    let error = json!({
        "description": "an error: `{\"error\":{\"code\",\"message\"}}`",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    });
    if let Some(paths) = v["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                    responses.entry("default").or_insert_with(|| error.clone());
                }
            }
        }
    }
    v
}

const INDEX: &str = include_str!("../assets/swagger-ui/index.html");
const INIT: &str = include_str!("../assets/swagger-ui/init.js");
const BUNDLE: &str = include_str!("../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &str = include_str!("../assets/swagger-ui/swagger-ui.css");

/// `/api/v1/openapi.json` and the API page.
pub fn routes(doc: Value) -> Router<ApiState> {
    let doc = Arc::new(serde_json::to_vec(&doc).expect("the document serialises"));
    let asset = |ctype: &'static str, body: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, ctype)], body).into_response() })
    };
    Router::new()
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
            }),
        )
        .route(
            "/api/v1/docs",
            get(|| async { axum::response::Redirect::permanent("/api/v1/docs/") }),
        )
        .route("/api/v1/docs/", asset("text/html; charset=utf-8", INDEX))
        .route("/api/v1/docs/init.js", asset("text/javascript", INIT))
        .route(
            "/api/v1/docs/swagger-ui-bundle.js",
            asset("text/javascript", BUNDLE),
        )
        .route("/api/v1/docs/swagger-ui.css", asset("text/css", CSS))
}
