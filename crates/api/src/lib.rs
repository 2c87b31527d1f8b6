//! Ironbridge's HTTP APIs on the `http` listener.
//!
//! # Layout
//! - [`router`] (this file): the whole `/api/v1` tree; `auth`: users, login, JWT, the
//!   [`auth::Caller`] extractor; `error`: the one error boundary (`{"error":{"code","message"}}`).
//! - `device_http`: the device API over HTTP (token in the path, long polls).
//! - `registry_routes`: tenants, profiles, devices; `device_routes`: a device's credentials,
//!   attributes, telemetry and RPC.

pub mod auth;
mod device_http;
mod device_routes;
pub mod error;
mod registry_routes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use ib_core::Platform;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::error::ApiResult;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub platform: Arc<Platform>,
    pub auth: Arc<Auth>,
}

/// The `/api/v1` routes; request bodies are limited to `max_body` bytes (413 above).
pub fn router(state: ApiState, max_body: usize) -> Router {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .merge(registry_routes::routes())
        .merge(device_routes::routes())
        .merge(device_http::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

async fn not_found() -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such route",
    )
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login(
    State(s): State<ApiState>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(l) = body?;
    let (token, refresh) = s.auth.login(&l.username, &l.password)?;
    Ok(Json(json!({"token": token, "refresh_token": refresh})))
}
