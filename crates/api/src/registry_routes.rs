//! Management routes for the registry: tenants, customers, device profiles and devices (create,
//! list, read, update, delete). Device sub-resources (credentials, attributes, telemetry, RPC)
//! are in `device_routes`. Access is checked by `authz` before a handler runs; handlers confine
//! lists and creations to the caller's tenant and customer through [`Caller`].

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ib_core::model::{
    Customer, Device, DeviceQuery, DeviceSort, DeviceUpdate, NewDevice, NewProfile, Profile, Tenant,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The registry routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, delete_tenant))
        .routes(routes!(set_retention))
        .routes(routes!(usage))
        .routes(routes!(list_customers, create_customer))
        .routes(routes!(get_customer, delete_customer))
        .routes(routes!(list_profiles, create_profile))
        .routes(routes!(get_profile, delete_profile))
        .routes(routes!(list_devices, create_device))
        .routes(routes!(get_device, update_device, delete_device))
}

/// `?tenant=`: for system administrators, the tenant (id or name; `default` when absent);
/// others always work in their own.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    pub tenant: Option<String>,
}

/// A page of results.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// The cursor of the next page (`null`: this was the last).
    pub next: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    retention_days: Option<u32>,
}

/// Creates a tenant (with its `default` profile).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants",
    security(("bearer" = ["system"])), request_body = NewTenant,
    responses((status = 201, body = Tenant)))]
async fn create_tenant(
    State(s): State<ApiState>,
    body: JsonBody<NewTenant>,
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Retention {
    /// Days of telemetry kept (`null`: until deleted).
    retention_days: Option<u32>,
}

/// Sets a tenant's telemetry retention.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/retention", tag = "tenants",
    security(("bearer" = ["system"])), request_body = Retention,
    params(("id" = String, Path, description = "tenant id or name")),
    responses((status = 200, body = Tenant)))]
async fn set_retention(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<Retention>,
) -> ApiResult<Json<Tenant>> {
    let Json(r) = body?;
    Ok(Json(
        s.platform
            .registry
            .set_tenant_retention(&id, r.retention_days)?,
    ))
}

/// Disk used by a tenant's telemetry.
#[derive(Serialize, ToSchema)]
struct Usage {
    tenant: String,
    telemetry_bytes: u64,
}

/// A tenant's telemetry disk usage.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/usage", tag = "tenants",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "tenant id or name")),
    responses((status = 200, body = Usage)))]
async fn usage(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Usage>> {
    let t = s.platform.registry.tenant(&id)?;
    let p = s.platform.clone();
    let by_tenant = crate::error::blocking(move || p.usage_by_tenant()).await?;
    let bytes = by_tenant.get(&t.id).copied().unwrap_or(0);
    Ok(Json(Usage {
        tenant: t.id,
        telemetry_bytes: bytes,
    }))
}

/// Tenants: all of them for system administrators, one's own for everyone else.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    security(("bearer" = ["read"])), responses((status = 200, body = Page<Tenant>)))]
async fn list_tenants(caller: Caller, State(s): State<ApiState>) -> ApiResult<Json<Page<Tenant>>> {
    let data = match &caller.reach.tenant {
        _ if caller.role == ib_core::accounts::Role::SysAdmin => s.platform.registry.tenants()?,
        Some(own) => vec![s.platform.registry.tenant(own)?],
        None => Vec::new(),
    };
    Ok(Json(Page { data, next: None }))
}

/// A tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "tenant id or name")),
    responses((status = 200, body = Tenant)))]
async fn get_tenant(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Tenant>> {
    Ok(Json(s.platform.registry.tenant(&id)?))
}

/// Deletes a tenant with everything in it.
#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "tenants",
    security(("bearer" = ["system"])),
    params(("id" = String, Path, description = "tenant id or name")),
    responses((status = 204, description = "deleted")))]
async fn delete_tenant(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.platform.delete_tenant(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCustomer {
    name: String,
    /// Tenant (system administrators).
    tenant: Option<String>,
}

/// Creates a customer.
#[utoipa::path(post, path = "/api/v1/customers", tag = "customers",
    security(("bearer" = ["write"])), params(TenantQuery), request_body = NewCustomer,
    responses((status = 201, body = Customer)))]
async fn create_customer(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
    body: JsonBody<NewCustomer>,
) -> ApiResult<(StatusCode, Json<Customer>)> {
    let (Query(q), Json(new)) = (q?, body?);
    let t = caller.tenant(&s, new.tenant.as_deref().or(q.tenant.as_deref()))?;
    let c = s.platform.registry.create_customer(&t.id, &new.name)?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// Customers of a tenant (a customer user sees their own only).
#[utoipa::path(get, path = "/api/v1/customers", tag = "customers",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Page<Customer>)))]
async fn list_customers(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Page<Customer>>> {
    let Query(q) = q?;
    let t = caller.tenant(&s, q.tenant.as_deref())?;
    let mut data = s.platform.registry.customers(&t.id)?;
    if let Some(own) = caller.customer() {
        data.retain(|c| c.id == own);
    }
    Ok(Json(Page { data, next: None }))
}

/// A customer.
#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "customers",
    security(("bearer" = ["read"])), params(("id" = String, Path), TenantQuery),
    responses((status = 200, body = Customer)))]
async fn get_customer(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Customer>> {
    let Query(q) = q?;
    let c = find_customer(&s, &caller, &id, q.tenant.as_deref())?;
    if caller.customer().is_some_and(|own| own != c.id) {
        return Err(ApiError::not_found(format!("customer {id:?} not found")));
    }
    Ok(Json(c))
}

/// Deletes a customer: its devices stay, unassigned; its users are deleted.
#[utoipa::path(delete, path = "/api/v1/customers/{id}", tag = "customers",
    security(("bearer" = ["write"])), params(("id" = String, Path), TenantQuery),
    responses((status = 204, description = "deleted")))]
async fn delete_customer(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    let c = find_customer(&s, &caller, &id, q.tenant.as_deref())?;
    s.platform.registry.delete_customer(&c.tenant, &c.id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
struct ProfileBody {
    /// Tenant (system administrators).
    tenant: Option<String>,
    #[serde(flatten)]
    profile: NewProfile,
}

/// Creates a device profile.
#[utoipa::path(post, path = "/api/v1/profiles", tag = "profiles",
    security(("bearer" = ["write"])), params(TenantQuery), request_body = ProfileBody,
    responses((status = 201, body = Profile)))]
async fn create_profile(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
    body: JsonBody<ProfileBody>,
) -> ApiResult<(StatusCode, Json<Profile>)> {
    let (Query(q), Json(body)) = (q?, body?);
    let t = caller.tenant(&s, body.tenant.as_deref().or(q.tenant.as_deref()))?;
    let p = s.platform.registry.create_profile(&t.id, body.profile)?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// A tenant's device profiles.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Page<Profile>)))]
async fn list_profiles(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Page<Profile>>> {
    let Query(q) = q?;
    let t = caller.tenant(&s, q.tenant.as_deref())?;
    Ok(Json(Page {
        data: s.platform.registry.profiles(&t.id)?,
        next: None,
    }))
}

/// A device profile.
#[utoipa::path(get, path = "/api/v1/profiles/{id}", tag = "profiles",
    security(("bearer" = ["read"])),
    params(("id" = String, Path, description = "profile id or name"), TenantQuery),
    responses((status = 200, body = Profile)))]
async fn get_profile(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Profile>> {
    let Query(q) = q?;
    Ok(Json(find_profile(&s, &caller, &id, q.tenant.as_deref())?))
}

/// Deletes a device profile that no device uses.
#[utoipa::path(delete, path = "/api/v1/profiles/{id}", tag = "profiles",
    security(("bearer" = ["write"])),
    params(("id" = String, Path, description = "profile id or name"), TenantQuery),
    responses((status = 204, description = "deleted")))]
async fn delete_profile(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    let p = find_profile(&s, &caller, &id, q.tenant.as_deref())?;
    s.platform.registry.delete_profile(&p.tenant, &p.id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A device as created: with its access token, shown this once.
#[derive(Serialize, ToSchema)]
struct CreatedDevice {
    #[serde(flatten)]
    device: Device,
    access_token: String,
}

/// Creates a device and its access token (shown in this response only).
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices",
    security(("bearer" = ["write"])), params(TenantQuery), request_body = NewDevice,
    responses((status = 201, body = CreatedDevice)))]
async fn create_device(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
    body: JsonBody<NewDevice>,
) -> ApiResult<(StatusCode, Json<CreatedDevice>)> {
    let (Query(q), Json(new)) = (q?, body?);
    let t = caller.tenant(&s, new.tenant.as_deref().or(q.tenant.as_deref()))?;
    let (device, access_token) = s.platform.registry.create_device(&t.id, new)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedDevice {
            device,
            access_token,
        }),
    ))
}

/// Device list query: pagination, filters, order.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// Tenant (system administrators).
    tenant: Option<String>,
    /// Page size, 1..1000 (default 100).
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// Only devices of this customer (id or name).
    customer: Option<String>,
    /// Only devices of this profile (id or name).
    profile: Option<String>,
    /// Case-insensitive text in the name or label.
    q: Option<String>,
    /// Only gateways (`true`) or only non-gateways (`false`).
    gateway: Option<bool>,
    /// `name` (default) or `created`.
    sort: Option<DeviceSort>,
    /// `asc` (default) or `desc`.
    order: Option<SortOrder>,
}

/// Sort direction.
#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

/// A page of devices, filtered and sorted (a customer user sees their customer's only).
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    security(("bearer" = ["read"])), params(DeviceListQuery),
    responses((status = 200, body = Page<DeviceView>)))]
async fn list_devices(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<DeviceListQuery>,
) -> ApiResult<Json<Page<DeviceView>>> {
    let Query(q) = q?;
    let t = caller.tenant(&s, q.tenant.as_deref())?;
    let customer = match (caller.customer(), &q.customer) {
        (Some(own), _) => Some(own.to_string()),
        (None, Some(c)) => Some(s.platform.registry.customer(&t.id, c)?.id),
        (None, None) => None,
    };
    let query = DeviceQuery {
        customer,
        profile: q.profile,
        text: q.q.filter(|t| !t.is_empty()),
        gateway: q.gateway,
        sort: q.sort.unwrap_or_default(),
        desc: q.order == Some(SortOrder::Desc),
        limit: q.limit.unwrap_or(100),
        cursor: q.cursor,
    };
    let (page, next) = s.platform.registry.find_devices(&t.id, &query)?;
    let data = page.into_iter().map(|d| DeviceView::of(&s, d)).collect();
    Ok(Json(Page { data, next }))
}

/// A device, whether it is active and when it was last heard from (since the server started).
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    #[serde(flatten)]
    device: Device,
    active: bool,
    last_activity: Option<i64>,
}

impl DeviceView {
    fn of(s: &ApiState, device: Device) -> DeviceView {
        DeviceView {
            active: s.platform.state.active(&device.id),
            last_activity: s.platform.state.last_activity(&device.id),
            device,
        }
    }
}

/// A device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = DeviceView)))]
async fn get_device(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceView>> {
    let device = s.platform.registry.device(&id)?;
    Ok(Json(DeviceView::of(&s, device)))
}

/// Changes a device's label, profile, or customer (assigning it to a customer).
#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices",
    security(("bearer" = ["write"])), params(("id" = String, Path)), request_body = DeviceUpdate,
    responses((status = 200, body = Device)))]
async fn update_device(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<DeviceUpdate>,
) -> ApiResult<Json<Device>> {
    let Json(update) = body?;
    Ok(Json(s.platform.registry.update_device(&id, &update)?))
}

/// Deletes a device with its credentials, attributes, RPCs and telemetry.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_device(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.platform.delete_device(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A customer by id (the authorisation layer has checked its reach), or by name in the
/// caller's tenant.
fn find_customer(
    s: &ApiState,
    caller: &Caller,
    id: &str,
    tenant: Option<&str>,
) -> ApiResult<Customer> {
    match s.platform.registry.customer_by_id(id) {
        Ok(c) => Ok(c),
        Err(_) => Ok(s
            .platform
            .registry
            .customer(&caller.tenant(s, tenant)?.id, id)?),
    }
}

/// A profile by id (reach checked by the authorisation layer), or by name in the caller's
/// tenant.
fn find_profile(
    s: &ApiState,
    caller: &Caller,
    id: &str,
    tenant: Option<&str>,
) -> ApiResult<Profile> {
    match s.platform.registry.profile_by_id(id) {
        Ok(p) => Ok(p),
        Err(_) => Ok(s
            .platform
            .registry
            .profile(&caller.tenant(s, tenant)?.id, id)?),
    }
}

/// Rejects an empty key list.
pub fn need_keys(keys: &[String]) -> ApiResult<()> {
    if keys.is_empty() {
        return Err(ApiError::bad_request("keys=a,b is required"));
    }
    Ok(())
}
