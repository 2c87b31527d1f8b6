//! Traffic figures: accepted device messages and telemetry points per tenant since the server
//! started (the overview's message rate: a client polls and divides the differences by time).

use axum::extract::{Query, State};
use axum::Json;
use ib_core::accounts::Role;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::registry_routes::TenantQuery;
use crate::ApiState;

type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The stats routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(stats))
}

/// Counts since `since`.
#[derive(Serialize, ToSchema)]
struct Stats {
    /// The tenant's id; null for a system administrator's sum over all tenants.
    tenant: Option<String>,
    /// Accepted telemetry messages.
    messages: u64,
    /// Telemetry points in them.
    points: u64,
    /// When counting started (ms since the epoch): the server's start.
    since: i64,
}

/// Accepted device messages and telemetry points of a tenant (a system administrator without
/// `tenant`: all tenants) since the server started; in memory, not persisted.
#[utoipa::path(get, path = "/api/v1/stats", tag = "telemetry",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Stats)))]
async fn stats(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Stats>> {
    let Query(q) = q?;
    let traffic = &s.platform.traffic;
    let (tenant, c) = if caller.role == Role::SysAdmin && q.tenant.is_none() {
        (None, traffic.total())
    } else {
        let t = caller.tenant(&s, q.tenant.as_deref())?;
        let c = traffic.tenant(&t.id);
        (Some(t.id), c)
    };
    Ok(Json(Stats {
        tenant,
        messages: c.messages,
        points: c.points,
        since: traffic.since(),
    }))
}
