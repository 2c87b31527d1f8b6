//! Management routes for alarms: list and read (`read`), raise by hand and delete (`write`),
//! acknowledge, clear, assign and comment (`control`). The authorisation layer has checked that
//! a named alarm is within the caller's reach (its tenant, and for customer users its device's
//! customer); handlers confine lists to the caller's tenant and customer and check it again
//! when they load the alarm.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ib_core::accounts::Role;
use ib_core::alarms::{Alarm, AlarmComment, AlarmQuery, Severity, StatusFilter};
use ib_core::model::Device;
use ib_core::CoreError;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::registry_routes::Page;
use crate::ApiState;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The alarm routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_alarms, create_alarm))
        .routes(routes!(get_alarm, delete_alarm))
        .routes(routes!(ack_alarm))
        .routes(routes!(clear_alarm))
        .routes(routes!(assign_alarm))
        .routes(routes!(list_comments, add_comment))
}

/// Alarm list query: filters and pagination.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AlarmListQuery {
    /// Tenant id or name (system administrators; absent: every tenant).
    tenant: Option<String>,
    /// `active`, `cleared`, `ack`, `unack`, `any`, or one status: `ACTIVE_UNACK`, `ACTIVE_ACK`,
    /// `CLEARED_UNACK`, `CLEARED_ACK` (any case).
    status: Option<String>,
    /// `CRITICAL`, `MAJOR`, `MINOR`, `WARNING` or `INDETERMINATE` (any case).
    severity: Option<String>,
    /// Only alarms of this type.
    #[serde(rename = "type")]
    alarm_type: Option<String>,
    /// Only this device's alarms (id, or name in the tenant).
    device: Option<String>,
    /// Page size, 1..1000 (default 100).
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
}

/// Alarms, newest first (a customer user sees its customer's devices' alarms only).
#[utoipa::path(get, path = "/api/v1/alarms", tag = "alarms",
    security(("bearer" = ["read"])), params(AlarmListQuery),
    responses((status = 200, body = Page<Alarm>)))]
async fn list_alarms(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<AlarmListQuery>,
) -> ApiResult<Json<Page<Alarm>>> {
    let Query(q) = q?;
    let tenant = match (caller.role, &q.tenant) {
        (Role::SysAdmin, None) => None,
        (_, t) => Some(caller.tenant(&s, t.as_deref())?.id),
    };
    let device = match &q.device {
        Some(d) => Some(find_device(&s, &caller, d, tenant.as_deref())?.id),
        None => None,
    };
    let query = AlarmQuery {
        tenant,
        customer: caller.customer().map(str::to_string),
        device,
        status: match q.status.as_deref() {
            Some(st) => StatusFilter::parse(st)?,
            None => StatusFilter::default(),
        },
        severity: q.severity.as_deref().map(Severity::parse).transpose()?,
        alarm_type: q.alarm_type.filter(|t| !t.is_empty()),
        limit: q.limit.unwrap_or(100).max(1),
        cursor: q.cursor,
    };
    let (data, next) = s.platform.alarms.list(&query)?;
    Ok(Json(Page { data, next }))
}

/// An alarm raised by hand.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewAlarm {
    /// The originator: a device id (or name in the caller's tenant).
    device: String,
    /// What is wrong; one active alarm per device and type.
    #[serde(rename = "type")]
    alarm_type: String,
    severity: Severity,
    /// Anything worth keeping with it.
    #[serde(default)]
    details: Option<Value>,
}

/// Raises an alarm on a device: 201 with a new alarm, or 200 with the device's active alarm of
/// that type, updated (severity, details, end time).
#[utoipa::path(post, path = "/api/v1/alarms", tag = "alarms",
    security(("bearer" = ["write"])), request_body = NewAlarm,
    responses((status = 201, body = Alarm, description = "created"),
        (status = 200, body = Alarm, description = "the active alarm, updated")))]
async fn create_alarm(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<NewAlarm>,
) -> ApiResult<(StatusCode, Json<Alarm>)> {
    let Json(new) = body?;
    let device = find_device(&s, &caller, &new.device, None)?;
    let details = new.details.unwrap_or(Value::Null);
    let (alarm, created) = s.platform.alarms.raise(
        &device.tenant,
        &device.id,
        &new.alarm_type,
        new.severity,
        details,
    )?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(alarm)))
}

/// An alarm.
#[utoipa::path(get, path = "/api/v1/alarms/{id}", tag = "alarms",
    security(("bearer" = ["read"])), params(("id" = i64, Path)),
    responses((status = 200, body = Alarm)))]
async fn get_alarm(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alarm>> {
    Ok(Json(find_alarm(&s, &caller, id)?))
}

/// Deletes an alarm with its comments.
#[utoipa::path(delete, path = "/api/v1/alarms/{id}", tag = "alarms",
    security(("bearer" = ["write"])), params(("id" = i64, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_alarm(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    find_alarm(&s, &caller, id)?;
    s.platform.alarms.delete(id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Acknowledges an alarm (again: no change).
#[utoipa::path(post, path = "/api/v1/alarms/{id}/ack", tag = "alarms",
    security(("bearer" = ["control"])), params(("id" = i64, Path)),
    responses((status = 200, body = Alarm)))]
async fn ack_alarm(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alarm>> {
    find_alarm(&s, &caller, id)?;
    Ok(Json(s.platform.alarms.ack(id, &caller.name)?))
}

/// Clears an alarm (again: no change). A cleared alarm is history: the next raise of its type
/// creates a new one.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/clear", tag = "alarms",
    security(("bearer" = ["control"])), params(("id" = i64, Path)),
    responses((status = 200, body = Alarm)))]
async fn clear_alarm(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alarm>> {
    find_alarm(&s, &caller, id)?;
    Ok(Json(s.platform.alarms.clear_by_id(id, &caller.name)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Assignee {
    /// A user id or user name of the alarm's tenant (`null`: unassign).
    user: Option<String>,
}

/// Assigns an alarm to a user of its tenant (a customer's user only for that customer's
/// devices; customer users assign within their customer), or unassigns it.
#[utoipa::path(put, path = "/api/v1/alarms/{id}/assignee", tag = "alarms",
    security(("bearer" = ["control"])), params(("id" = i64, Path)), request_body = Assignee,
    responses((status = 200, body = Alarm)))]
async fn assign_alarm(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
    body: JsonBody<Assignee>,
) -> ApiResult<Json<Alarm>> {
    let Json(body) = body?;
    let alarm = find_alarm(&s, &caller, id)?;
    let user = match &body.user {
        None => None,
        Some(u) => {
            let not_found = || ApiError::not_found(format!("user {u:?} not found"));
            let user = s.platform.accounts.user(u).map_err(|_| not_found())?;
            // Another tenant's user, or for a customer user a user outside its customer,
            // does not exist.
            let reachable = user.tenant.as_deref() == Some(alarm.tenant.as_str())
                && caller
                    .customer()
                    .is_none_or(|c| user.customer.as_deref() == Some(c));
            if !reachable {
                return Err(not_found());
            }
            Some(user.id)
        }
    };
    Ok(Json(s.platform.alarms.assign(id, user.as_deref())?))
}

/// An alarm's comments, oldest first (system comments record who acknowledged or cleared it).
#[utoipa::path(get, path = "/api/v1/alarms/{id}/comments", tag = "alarms",
    security(("bearer" = ["read"])), params(("id" = i64, Path)),
    responses((status = 200, body = Page<AlarmComment>)))]
async fn list_comments(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Page<AlarmComment>>> {
    find_alarm(&s, &caller, id)?;
    let data = s.platform.alarms.comments(id)?;
    Ok(Json(Page { data, next: None }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewComment {
    /// 1 to 4096 characters.
    text: String,
}

/// Comments on an alarm.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/comments", tag = "alarms",
    security(("bearer" = ["control"])), params(("id" = i64, Path)), request_body = NewComment,
    responses((status = 201, body = AlarmComment)))]
async fn add_comment(
    caller: Caller,
    State(s): State<ApiState>,
    Path(id): Path<i64>,
    body: JsonBody<NewComment>,
) -> ApiResult<(StatusCode, Json<AlarmComment>)> {
    let Json(c) = body?;
    find_alarm(&s, &caller, id)?;
    let comment = s.platform.alarms.comment(id, &caller.name, &c.text)?;
    Ok((StatusCode::CREATED, Json(comment)))
}

/// An alarm within the caller's reach; any other is "not found" (the authorisation layer
/// checked it already: this keeps the handlers safe on their own).
fn find_alarm(s: &ApiState, caller: &Caller, id: i64) -> ApiResult<Alarm> {
    match s.platform.alarms.get(id) {
        Ok(a) if caller.covers(&a.tenant, a.customer.as_deref()) => Ok(a),
        Ok(_) | Err(CoreError::NotFound(_)) => {
            Err(ApiError::not_found(format!("alarm {id} not found")))
        }
        Err(e) => Err(e.into()),
    }
}

/// A device within the caller's reach, by id, or by name in `tenant` (default: the caller's);
/// any other is "not found".
fn find_device(
    s: &ApiState,
    caller: &Caller,
    id_or_name: &str,
    tenant: Option<&str>,
) -> ApiResult<Device> {
    let registry = &s.platform.registry;
    let visible = |found: ib_core::Result<Device>| match found {
        Ok(d) if caller.covers(&d.tenant, d.customer.as_deref()) => Ok(Some(d)),
        Ok(_) | Err(CoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(ApiError::from(e)),
    };
    let device = match visible(registry.device(id_or_name))? {
        Some(d) => Some(d),
        None => visible(registry.device_in(&caller.tenant(s, tenant)?.id, id_or_name))?,
    };
    device.ok_or_else(|| ApiError::not_found(format!("device {id_or_name:?} not found")))
}
