//! Ironbridge's HTTP APIs on the `http` listener.
//!
//! # Layout
//! - [`router`] (this file): the whole `/api/v1` tree. Management routes are `utoipa-axum`
//!   routes: each handler's `#[utoipa::path]` annotation makes both its axum route and its
//!   OpenAPI operation, including the scope it needs.
//! - `authz`: the one authorisation layer (token, role, tenant/customer reach, audit record);
//!   `auth`: sessions, JWT, refresh rotation, the [`auth::Caller`]; `login`: login, refresh,
//!   logout, OAuth client credentials, failed-login limits; `openapi`: the document and the
//!   API page; `error`: the one error boundary (`{"error":{"code","message"}}`).
//! - `registry_routes`: tenants, customers, profiles, devices; `device_routes`: a device's
//!   credentials, attributes, telemetry and RPC; `account_routes`: users, API clients, audit log;
//!   `alarm_routes`: alarms (list, raise, acknowledge, clear, assign, comments, delete);
//!   `stats_routes`: messages and points per tenant since start; `firmware_routes`: OTA
//!   packages, signing keys, a device's assignment; `campaign_routes`: staged rollouts.
//! - `device_http`: the device API over HTTP (token in the path, long polls; not management).
//! - `live`: the live WebSocket `/api/v1/ws` (device events and alarm changes to subscribers;
//!   authenticates itself, outside the authorisation layer).

mod account_routes;
mod alarm_routes;
mod analytics_routes;
pub mod auth;
pub mod authz;
mod campaign_routes;
mod dashboard_routes;
mod device_http;
mod device_routes;
pub mod error;
mod firmware_routes;
pub mod live;
pub mod login;
mod lookup_routes;
pub mod openapi;
mod registry_routes;
mod rule_routes;
mod stats_routes;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use ib_core::Platform;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{Auth, TokenConfig};
use crate::authz::AccessTable;
use crate::login::{LoginGuard, LoginLimits};

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub platform: Arc<Platform>,
    pub auth: Arc<Auth>,
    pub login_guard: Arc<LoginGuard>,
    /// Filled by [`router`] from the generated document.
    pub access: Arc<AccessTable>,
}

impl ApiState {
    /// The state for a platform and its token service.
    pub fn new(platform: Arc<Platform>, auth: Arc<Auth>, login: &LoginLimits) -> ApiState {
        ApiState {
            platform,
            auth,
            login_guard: Arc::new(LoginGuard::new(login)),
            access: Arc::default(),
        }
    }
}

/// The HTTP client's address, put in the request's extensions by the server (for the audit
/// log and the failed-login limits).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// API settings (`[api]`).
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    pub tokens: TokenConfig,
    pub login: LoginLimits,
}

/// The management routes with their OpenAPI operations.
pub fn management() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(login::routes())
        .merge(registry_routes::routes())
        .merge(device_routes::routes())
        .merge(account_routes::routes())
        .merge(alarm_routes::routes())
        .merge(rule_routes::routes())
        .merge(dashboard_routes::routes())
        .merge(firmware_routes::routes())
        .merge(campaign_routes::routes())
        .merge(lookup_routes::routes())
        .merge(stats_routes::routes())
        .merge(analytics_routes::routes())
}

/// The `/api/v1` routes; request bodies are limited to `max_body` bytes (413 above).
pub fn router(mut state: ApiState, max_body: usize) -> Router {
    let (routes, doc) = management().split_for_parts();
    let doc = openapi::finish(doc);
    state.access = Arc::new(AccessTable::from_doc(&doc));
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .merge(openapi::routes(doc))
        .merge(device_http::routes())
        .merge(live::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such route")
}
