//! Dashboards: a tenant's grids of widgets (`ib_core::dashboards`). The document `GET` returns is
//! the one `POST` imports (ids, tenant, customers and times are ignored on the way in), so export
//! and import are a download and an upload of the same JSON. A dashboard shared with a customer
//! (`/dashboards/{id}/customers/{customer_id}`) is seen, read only, by that customer's users.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ib_core::dashboards::{Dashboard, DashboardSpec};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::registry_routes::Page;
use crate::ApiState;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The dashboard routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_dashboards, create_dashboard))
        .routes(routes!(get_dashboard, replace_dashboard, delete_dashboard))
        .routes(routes!(share_dashboard, unshare_dashboard))
}

/// A dashboard to create (or import): the document and, for system administrators, its tenant
/// (`?tenant=`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TenantQuery {
    /// Tenant id or name (system administrators: where to create; in lists, absent means all).
    tenant: Option<String>,
}

/// Creates a dashboard, or imports an exported one. The grid has 12 columns; each widget kind
/// needs its fields (a chart a device and keys, a switch a device and a method...).
#[utoipa::path(post, path = "/api/v1/dashboards", tag = "dashboards",
    security(("bearer" = ["write"])), params(TenantQuery), request_body = DashboardSpec,
    responses((status = 201, body = Dashboard)))]
async fn create_dashboard(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
    body: JsonBody<DashboardSpec>,
) -> ApiResult<(StatusCode, Json<Dashboard>)> {
    let Query(q) = q?;
    let Json(spec) = body?;
    let t = caller.tenant(&s, q.tenant.as_deref())?;
    let d = s.platform.dashboards.create(&t.id, &spec)?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// The tenant's dashboards by name (each with its widgets); for a customer's users, those shared
/// with their customer.
#[utoipa::path(get, path = "/api/v1/dashboards", tag = "dashboards",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Page<Dashboard>)))]
async fn list_dashboards(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Page<Dashboard>>> {
    let Query(q) = q?;
    let data = match caller.customer() {
        // A customer's users see what is shared with their customer.
        Some(c) => s.platform.dashboards.list_for_customer(c)?,
        None => {
            let tenant = crate::account_routes::list_tenant(&s, &caller, q.tenant.as_deref())?;
            s.platform.dashboards.list(tenant.as_deref())?
        }
    };
    Ok(Json(Page { data, next: None }))
}

/// A dashboard: the document to export.
#[utoipa::path(get, path = "/api/v1/dashboards/{id}", tag = "dashboards",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = Dashboard)))]
async fn get_dashboard(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Dashboard>> {
    Ok(Json(s.platform.dashboards.get(&id)?))
}

/// Replaces a dashboard (checked like a new one).
#[utoipa::path(put, path = "/api/v1/dashboards/{id}", tag = "dashboards",
    security(("bearer" = ["write"])), params(("id" = String, Path)), request_body = DashboardSpec,
    responses((status = 200, body = Dashboard)))]
async fn replace_dashboard(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<DashboardSpec>,
) -> ApiResult<Json<Dashboard>> {
    let Json(spec) = body?;
    Ok(Json(s.platform.dashboards.update(&id, &spec)?))
}

/// Deletes a dashboard.
#[utoipa::path(delete, path = "/api/v1/dashboards/{id}", tag = "dashboards",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_dashboard(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.platform.dashboards.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Shares a dashboard with a customer of its tenant: the customer's users see it (read only).
/// Sharing again changes nothing.
#[utoipa::path(post, path = "/api/v1/dashboards/{id}/customers/{customer_id}", tag = "dashboards",
    security(("bearer" = ["write"])),
    params(("id" = String, Path), ("customer_id" = String, Path, description = "customer id or name")),
    responses((status = 200, body = Dashboard), (status = 404, description = "no such dashboard or customer")))]
async fn share_dashboard(
    State(s): State<ApiState>,
    Path((id, customer)): Path<(String, String)>,
) -> ApiResult<Json<Dashboard>> {
    let d = s.platform.dashboards.get(&id)?;
    let c = s.platform.registry.customer(&d.tenant, &customer)?;
    Ok(Json(s.platform.dashboards.share(&id, &c.id)?))
}

/// Stops sharing a dashboard with a customer.
#[utoipa::path(delete, path = "/api/v1/dashboards/{id}/customers/{customer_id}", tag = "dashboards",
    security(("bearer" = ["write"])),
    params(("id" = String, Path), ("customer_id" = String, Path, description = "customer id or name")),
    responses((status = 200, body = Dashboard), (status = 404, description = "not shared with that customer")))]
async fn unshare_dashboard(
    State(s): State<ApiState>,
    Path((id, customer)): Path<(String, String)>,
) -> ApiResult<Json<Dashboard>> {
    let d = s.platform.dashboards.get(&id)?;
    let c = s.platform.registry.customer(&d.tenant, &customer)?;
    Ok(Json(s.platform.dashboards.unshare(&id, &c.id)?))
}
