//! Management routes for the registry: tenants, device profiles and devices (create, list,
//! read, delete). Device sub-resources (credentials, attributes, telemetry, RPC) are in
//! `device_routes`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use ib_core::model::{NewDevice, NewProfile, Tenant};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// The registry routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/api/v1/tenants/{id}",
            delete(delete_tenant).get(get_tenant),
        )
        .route(
            "/api/v1/tenants/{id}/retention",
            axum::routing::put(set_retention),
        )
        .route("/api/v1/tenants/{id}/usage", get(usage))
        .route(
            "/api/v1/customers",
            get(list_customers).post(create_customer),
        )
        .route("/api/v1/profiles", get(list_profiles).post(create_profile))
        .route("/api/v1/profiles/{id}", delete(delete_profile))
        .route("/api/v1/devices", get(list_devices).post(create_device))
        .route(
            "/api/v1/devices/{id}",
            get(get_device).delete(delete_device),
        )
}

/// `?tenant=` (id or name; `default` when absent).
#[derive(Deserialize, Default)]
pub struct TenantQuery {
    pub tenant: Option<String>,
}

/// Resolves a tenant reference.
pub fn tenant(s: &ApiState, t: Option<&str>) -> ApiResult<Tenant> {
    Ok(s.platform
        .registry
        .tenant(t.unwrap_or(ib_core::registry::DEFAULT))?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    retention_days: Option<u32>,
}

async fn create_tenant(
    _: Caller,
    State(s): State<ApiState>,
    body: Result<Json<NewTenant>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let Json(new) = body?;
    let mut t = s.platform.registry.create_tenant(&new.name)?;
    if new.retention_days.is_some() {
        t = s
            .platform
            .registry
            .set_tenant_retention(&t.id, new.retention_days)?;
    }
    Ok((StatusCode::CREATED, Json(t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {
    retention_days: Option<u32>,
}

async fn set_retention(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<Retention>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Tenant>> {
    let Json(r) = body?;
    Ok(Json(
        s.platform
            .registry
            .set_tenant_retention(&id, r.retention_days)?,
    ))
}

async fn usage(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = s.platform.registry.tenant(&id)?;
    let p = s.platform.clone();
    let by_tenant = crate::error::blocking(move || p.usage_by_tenant()).await?;
    let bytes = by_tenant.get(&t.id).copied().unwrap_or(0);
    Ok(Json(json!({"tenant": t.id, "telemetry_bytes": bytes})))
}

async fn list_tenants(_: Caller, State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({"data": s.platform.registry.tenants()?, "next": null}),
    ))
}

async fn get_tenant(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(s.platform.registry.tenant(&id)?))
}

async fn delete_tenant(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.platform.delete_tenant(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCustomer {
    name: String,
    tenant: Option<String>,
}

async fn create_customer(
    _: Caller,
    State(s): State<ApiState>,
    Query(q): Query<TenantQuery>,
    body: Result<Json<NewCustomer>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(new) = body?;
    let t = tenant(&s, new.tenant.as_deref().or(q.tenant.as_deref()))?;
    let c = s.platform.registry.create_customer(&t.id, &new.name)?;
    Ok((StatusCode::CREATED, Json(json!(c))))
}

async fn list_customers(
    _: Caller,
    State(s): State<ApiState>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<Value>> {
    let t = tenant(&s, q.tenant.as_deref())?;
    Ok(Json(
        json!({"data": s.platform.registry.customers(&t.id)?, "next": null}),
    ))
}

#[derive(Deserialize)]
struct ProfileBody {
    tenant: Option<String>,
    #[serde(flatten)]
    profile: NewProfile,
}

async fn create_profile(
    _: Caller,
    State(s): State<ApiState>,
    Query(q): Query<TenantQuery>,
    body: Result<Json<ProfileBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body?;
    let t = tenant(&s, body.tenant.as_deref().or(q.tenant.as_deref()))?;
    let p = s.platform.registry.create_profile(&t.id, body.profile)?;
    Ok((StatusCode::CREATED, Json(json!(p))))
}

async fn list_profiles(
    _: Caller,
    State(s): State<ApiState>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<Value>> {
    let t = tenant(&s, q.tenant.as_deref())?;
    Ok(Json(
        json!({"data": s.platform.registry.profiles(&t.id)?, "next": null}),
    ))
}

async fn delete_profile(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<StatusCode> {
    let t = tenant(&s, q.tenant.as_deref())?;
    s.platform.registry.delete_profile(&t.id, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_device(
    _: Caller,
    State(s): State<ApiState>,
    Query(q): Query<TenantQuery>,
    body: Result<Json<NewDevice>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(new) = body?;
    let t = tenant(&s, new.tenant.as_deref().or(q.tenant.as_deref()))?;
    let (device, token) = s.platform.registry.create_device(&t.id, new)?;
    let mut v = json!(device);
    v["access_token"] = json!(token);
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Deserialize)]
struct ListQuery {
    tenant: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_devices(
    _: Caller,
    State(s): State<ApiState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    let t = tenant(&s, q.tenant.as_deref())?;
    let (data, next) =
        s.platform
            .registry
            .devices(&t.id, q.limit.unwrap_or(100), q.cursor.as_deref())?;
    Ok(Json(json!({"data": data, "next": next})))
}

async fn get_device(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = s.platform.registry.device(&id)?;
    let mut v = json!(d);
    v["active"] = json!(s.platform.state.active(&d.id));
    Ok(Json(v))
}

async fn delete_device(
    _: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.platform.delete_device(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rejects an empty key list.
pub fn need_keys(keys: &[String]) -> ApiResult<()> {
    if keys.is_empty() {
        return Err(ApiError::bad_request("keys=a,b is required"));
    }
    Ok(())
}
