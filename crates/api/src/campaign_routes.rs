//! Firmware campaigns under `/api/v1/firmware/campaigns`: create (package, target, stages,
//! rate, failure threshold, device timeout), list and read with counts per stage, pause,
//! resume, cancel, the devices with their states, and the history of every state (of a
//! campaign, or of a device across campaigns and direct assignments). The model and the
//! driver are in `ib_core::firmware::campaign`. Tenant isolation: the authorisation layer
//! resolves `{id}` to the campaign's tenant; lists and creations are confined here.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ib_core::firmware::campaign::{Action, Campaign, CampaignDevice, HistoryEntry, NewCampaign};
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

/// The campaign routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(get_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(cancel_campaign))
        .routes(routes!(campaign_devices))
        .routes(routes!(campaign_history))
        .routes(routes!(device_history))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TenantQuery {
    /// Tenant id or name (system administrators; absent: all tenants).
    tenant: Option<String>,
}

/// Creates a campaign: the target is resolved to its devices now (shuffled, then cut into the
/// stages); the driver starts it at `start_at` or within a second.
#[utoipa::path(post, path = "/api/v1/firmware/campaigns", tag = "firmware",
    security(("bearer" = ["write"])), request_body = NewCampaign,
    responses((status = 201, body = Campaign)))]
async fn create_campaign(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<NewCampaign>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let Json(new) = body?;
    let t = caller.tenant(&s, new.tenant.as_deref())?;
    let p = s.platform.clone();
    let c = crate::error::blocking(move || p.create_campaign(&t.id, &new)).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// The tenant's campaigns, newest first, with their counts.
#[utoipa::path(get, path = "/api/v1/firmware/campaigns", tag = "firmware",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Page<Campaign>)))]
async fn list_campaigns(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Page<Campaign>>> {
    let Query(q) = q?;
    let tenant = crate::account_routes::list_tenant(&s, &caller, q.tenant.as_deref())?;
    let data = s.platform.firmware.campaigns.list(tenant.as_deref())?;
    Ok(Json(Page { data, next: None }))
}

/// A campaign: its plan, state, current stage, halt reason, and counts in all and per stage.
#[utoipa::path(get, path = "/api/v1/firmware/campaigns/{id}", tag = "firmware",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = Campaign)))]
async fn get_campaign(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(s.platform.firmware.campaigns.get(&id)?))
}

fn act(s: &ApiState, id: &str, action: Action) -> ApiResult<Json<Campaign>> {
    let now = ib_core::db::now_ms();
    Ok(Json(s.platform.firmware.campaigns.act(id, action, now)?))
}

/// Pauses a scheduled or running campaign: no device is offered the image until it resumes
/// (409 in another state).
#[utoipa::path(post, path = "/api/v1/firmware/campaigns/{id}/pause", tag = "firmware",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 200, body = Campaign)))]
async fn pause_campaign(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    act(&s, &id, Action::Pause)
}

/// Resumes a paused campaign, or a halted one (its halted stage is accepted and the next
/// stage follows); 409 in another state.
#[utoipa::path(post, path = "/api/v1/firmware/campaigns/{id}/resume", tag = "firmware",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 200, body = Campaign)))]
async fn resume_campaign(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    act(&s, &id, Action::Resume)
}

/// Cancels a campaign for good: no further device is offered the image (devices already
/// offered keep their assignment); 409 once completed or cancelled.
#[utoipa::path(post, path = "/api/v1/firmware/campaigns/{id}/cancel", tag = "firmware",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 200, body = Campaign)))]
async fn cancel_campaign(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    act(&s, &id, Action::Cancel)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DevicesQuery {
    /// Only devices in this state (PENDING, ASSIGNED, DOWNLOADING, ..., UPDATED, FAILED, TIMEOUT).
    state: Option<String>,
}

/// The campaign's devices by stage and offer order, with their state and error.
#[utoipa::path(get, path = "/api/v1/firmware/campaigns/{id}/devices", tag = "firmware",
    security(("bearer" = ["read"])), params(("id" = String, Path), DevicesQuery),
    responses((status = 200, body = Page<CampaignDevice>)))]
async fn campaign_devices(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<DevicesQuery>,
) -> ApiResult<Json<Page<CampaignDevice>>> {
    let Query(q) = q?;
    let cs = &s.platform.firmware.campaigns;
    cs.tenant_of(&id)?;
    let data = cs.devices(&id, q.state.as_deref())?;
    Ok(Json(Page { data, next: None }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only this device (id).
    device: Option<String>,
    /// At most this many entries, oldest first (default 1000, at most 10000).
    limit: Option<u32>,
}

/// Every state of the campaign's devices with its time and error, oldest first.
#[utoipa::path(get, path = "/api/v1/firmware/campaigns/{id}/history", tag = "firmware",
    security(("bearer" = ["read"])), params(("id" = String, Path), HistoryQuery),
    responses((status = 200, body = Page<HistoryEntry>)))]
async fn campaign_history(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<HistoryQuery>,
) -> ApiResult<Json<Page<HistoryEntry>>> {
    let Query(q) = q?;
    let cs = &s.platform.firmware.campaigns;
    cs.tenant_of(&id)?;
    let limit = q.limit.unwrap_or(1000) as usize;
    let data = cs.history(q.device.as_deref(), Some(&id), limit)?;
    Ok(Json(Page { data, next: None }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LimitQuery {
    /// At most this many entries, oldest first (default 1000, at most 10000).
    limit: Option<u32>,
}

/// The device's update history: assignments (by a person or a campaign) and every state it
/// reported, with time and error, oldest first.
#[utoipa::path(get, path = "/api/v1/devices/{id}/firmware/history", tag = "firmware",
    security(("bearer" = ["read"])), params(("id" = String, Path), LimitQuery),
    responses((status = 200, body = Page<HistoryEntry>)))]
async fn device_history(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<LimitQuery>,
) -> ApiResult<Json<Page<HistoryEntry>>> {
    let Query(q) = q?;
    let d = s.platform.registry.device(&id)?;
    let limit = q.limit.unwrap_or(1000) as usize;
    let data = s
        .platform
        .firmware
        .campaigns
        .history(Some(&d.id), None, limit)?;
    Ok(Json(Page { data, next: None }))
}
