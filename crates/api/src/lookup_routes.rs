//! Management routes for what rule conditions look up: external data sources (polled JSON,
//! `external("name")`) and geofences (`inside("name")`), per tenant.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ib_core::rules::lookups::{Geofence, NewGeofence, NewSource, Source};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::registry_routes::{Page, TenantQuery};
use crate::ApiState;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The lookup routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_sources, create_source))
        .routes(routes!(get_source, delete_source))
        .routes(routes!(list_geofences, create_geofence))
        .routes(routes!(get_geofence, delete_geofence))
}

/// A source to add (`tenant` for system administrators).
#[derive(Deserialize, ToSchema)]
struct SourceBody {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(flatten)]
    source: NewSource,
}

/// Adds an external source: a JSON document fetched every `every`, for `external("name")`.
#[utoipa::path(post, path = "/api/v1/sources", tag = "rules",
    security(("bearer" = ["write"])), request_body = SourceBody,
    responses((status = 201, body = Source)))]
async fn create_source(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<SourceBody>,
) -> ApiResult<(StatusCode, Json<Source>)> {
    let Json(b) = body?;
    let t = caller.tenant(&s, b.tenant.as_deref())?;
    let src = s.platform.rules.lookups.create_source(&t.id, b.source)?;
    Ok((StatusCode::CREATED, Json(src)))
}

/// External sources with their last value, fetch time and error.
#[utoipa::path(get, path = "/api/v1/sources", tag = "rules",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Page<Source>)))]
async fn list_sources(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Page<Source>>> {
    let Query(q) = q?;
    let t = caller.tenant(&s, q.tenant.as_deref())?;
    let data = s.platform.rules.lookups.sources(Some(&t.id))?;
    Ok(Json(Page { data, next: None }))
}

/// An external source.
#[utoipa::path(get, path = "/api/v1/sources/{id}", tag = "rules",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = Source)))]
async fn get_source(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Source>> {
    Ok(Json(s.platform.rules.lookups.source(&id)?))
}

/// Deletes an external source.
#[utoipa::path(delete, path = "/api/v1/sources/{id}", tag = "rules",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_source(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.platform.rules.lookups.delete_source(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A geofence to add (`tenant` for system administrators).
#[derive(Deserialize, ToSchema)]
struct GeofenceBody {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(flatten)]
    geofence: NewGeofence,
}

/// Adds a geofence: `{"name", "polygon": [[lon, lat], ...]}` or
/// `{"name", "circle": {"lon", "lat", "radius_m"}}`.
#[utoipa::path(post, path = "/api/v1/geofences", tag = "rules",
    security(("bearer" = ["write"])), request_body = GeofenceBody,
    responses((status = 201, body = Geofence)))]
async fn create_geofence(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<GeofenceBody>,
) -> ApiResult<(StatusCode, Json<Geofence>)> {
    let Json(b) = body?;
    let t = caller.tenant(&s, b.tenant.as_deref())?;
    let g = s
        .platform
        .rules
        .lookups
        .create_geofence(&t.id, b.geofence)?;
    Ok((StatusCode::CREATED, Json(g)))
}

/// Geofences.
#[utoipa::path(get, path = "/api/v1/geofences", tag = "rules",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Page<Geofence>)))]
async fn list_geofences(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Page<Geofence>>> {
    let Query(q) = q?;
    let t = caller.tenant(&s, q.tenant.as_deref())?;
    let data = s.platform.rules.lookups.geofences(Some(&t.id))?;
    Ok(Json(Page { data, next: None }))
}

/// A geofence.
#[utoipa::path(get, path = "/api/v1/geofences/{id}", tag = "rules",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = Geofence)))]
async fn get_geofence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Geofence>> {
    Ok(Json(s.platform.rules.lookups.geofence(&id)?))
}

/// Deletes a geofence.
#[utoipa::path(delete, path = "/api/v1/geofences/{id}", tag = "rules",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_geofence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.platform.rules.lookups.delete_geofence(&id)?;
    Ok(StatusCode::NO_CONTENT)
}
