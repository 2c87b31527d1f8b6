//! The device API over HTTP (ThingsBoard's paths): the access token is in the path; telemetry
//! and attributes are posted; attributes are read; shared-attribute updates and server-side
//! RPCs are taken by long poll; RPC replies and client-side RPCs are posted.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ib_core::sessions::{ChannelSink, Downlink};
use ib_core::{DeviceCtx, Platform};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// Longest long poll.
const MAX_POLL_MS: u64 = 300_000;
const DEFAULT_POLL_MS: u64 = 30_000;

/// The device routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/provision", post(provision))
        .route("/api/v1/{token}/telemetry", post(telemetry))
        .route(
            "/api/v1/{token}/attributes",
            post(post_attributes).get(get_attributes),
        )
        .route("/api/v1/{token}/attributes/updates", get(attribute_updates))
        .route("/api/v1/{token}/rpc", get(rpc_poll).post(client_rpc))
        .route("/api/v1/{token}/rpc/{id}", post(rpc_reply))
        .route("/api/v1/{token}/firmware", get(firmware))
}

/// ThingsBoard's firmware download: `?title=&version=` of the package assigned to the device,
/// with `size` and `chunk` one chunk of it, else the whole image (`Range` requests answered).
/// A gateway adds `device=NAME` for a sub-device's package (the edge fetches an image once and
/// serves it to its devices).
#[derive(Deserialize)]
struct FirmwareQuery {
    title: String,
    version: String,
    size: Option<usize>,
    chunk: Option<u64>,
    device: Option<String>,
}

async fn firmware(
    State(s): State<ApiState>,
    Path(token): Path<String>,
    q: Result<Query<FirmwareQuery>, axum::extract::rejection::QueryRejection>,
    req: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let caller = device(&s.platform, &token)?;
    let Query(q) = q?;
    let ctx = match &q.device {
        None => caller,
        Some(name) => sub_device(&s.platform, &caller, name)?,
    };
    let kind = ib_core::firmware::Kind::Firmware;
    let assigned = s.platform.firmware.of_device(&ctx.id, kind)?;
    let Some(fw) =
        assigned.filter(|f| f.package.title == q.title && f.package.version == q.version)
    else {
        return Err(ApiError::not_found(format!(
            "firmware {:?} {:?} is not assigned to this device",
            q.title, q.version
        )));
    };
    match (q.size, q.chunk) {
        (Some(size), chunk) if size > 0 => {
            let bytes = s
                .platform
                .firmware_chunk(&ctx.id, size, chunk.unwrap_or(0))
                .map_err(|e| refused(&ctx, e))?;
            let ctype = [(axum::http::header::CONTENT_TYPE, "application/octet-stream")];
            Ok((ctype, bytes).into_response())
        }
        _ => crate::firmware_routes::serve_image(&s, &fw.package, req).await,
    }
}

/// A gateway's sub-device by name: a device of the gateway's tenant that is not itself a
/// gateway (any such device may be connected through a gateway, as in ThingsBoard).
fn sub_device(p: &Platform, gateway: &DeviceCtx, name: &str) -> ApiResult<Arc<DeviceCtx>> {
    if !gateway.gateway {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a gateway may fetch another device's firmware (device=)",
        ));
    }
    let d = p
        .registry
        .device_in(&gateway.tenant, name)
        .ok()
        .filter(|d| !d.gateway)
        .ok_or_else(|| ApiError::not_found(format!("sub-device {name:?} not found")))?;
    Ok(p.device_ctx(&d.id)?)
}

fn device(p: &Platform, token: &str) -> ApiResult<Arc<DeviceCtx>> {
    let ctx = p
        .auth_token(token)
        .map_err(|_| ApiError::unauthorized("unknown or expired access token"))?;
    p.touch(&ctx, "http");
    Ok(ctx)
}

/// Logs a refused device request with the device id, as MQTT refusals are.
fn refused(ctx: &DeviceCtx, e: ib_core::CoreError) -> ApiError {
    tracing::info!(device = %ctx.id, error = %e, "device request refused");
    metrics::counter!("device_messages_rejected_total").increment(1);
    e.into()
}

async fn telemetry(
    State(s): State<ApiState>,
    Path(token): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ctx = device(&s.platform, &token)?;
    let commit = s
        .platform
        .post_telemetry(&ctx, &body)
        .map_err(|e| refused(&ctx, e))?;
    // 200 promises the points are on disk.
    commit
        .await
        .map_err(|e| ib_core::CoreError::Store(e.to_string()))?;
    Ok(Json(json!({})))
}

async fn post_attributes(
    State(s): State<ApiState>,
    Path(token): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ctx = device(&s.platform, &token)?;
    s.platform
        .post_attributes(&ctx, &body)
        .map_err(|e| refused(&ctx, e))?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysQuery {
    client_keys: Option<String>,
    shared_keys: Option<String>,
}

async fn get_attributes(
    State(s): State<ApiState>,
    Path(token): Path<String>,
    Query(q): Query<KeysQuery>,
) -> ApiResult<Json<Value>> {
    let ctx = device(&s.platform, &token)?;
    let split = |k: Option<String>| k.map(|k| ib_core::payload::split_keys(&k));
    Ok(Json(s.platform.request_attributes(
        &ctx.id,
        split(q.client_keys),
        split(q.shared_keys),
    )?))
}

#[derive(Deserialize)]
struct PollQuery {
    timeout: Option<u64>,
}

/// Waits for the next downlink of one kind; 408 when none came in time.
async fn poll(
    p: &Platform,
    ctx: &DeviceCtx,
    rpc: bool,
    timeout: Option<u64>,
) -> ApiResult<Downlink> {
    let (sink, mut rx) = ChannelSink::new(rpc, !rpc, 1);
    let sid = p.sessions.register(ctx.id.clone(), sink.clone(), false);
    if rpc {
        p.rpc.deliver_queued(&ctx.id, sink.as_ref())?;
    }
    let wait = Duration::from_millis(timeout.unwrap_or(DEFAULT_POLL_MS).clamp(1, MAX_POLL_MS));
    let got = tokio::time::timeout(wait, rx.recv()).await;
    p.sessions.unregister(&sid);
    match got {
        Ok(Some(d)) => Ok(d),
        _ => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "nothing arrived before the timeout",
        )),
    }
}

async fn attribute_updates(
    State(s): State<ApiState>,
    Path(token): Path<String>,
    Query(q): Query<PollQuery>,
) -> ApiResult<Json<Value>> {
    let ctx = device(&s.platform, &token)?;
    match poll(&s.platform, &ctx, false, q.timeout).await? {
        Downlink::Attributes(v) => Ok(Json(v)),
        Downlink::Rpc { .. } => unreachable!("an attribute poll takes no RPCs"),
    }
}

async fn rpc_poll(
    State(s): State<ApiState>,
    Path(token): Path<String>,
    Query(q): Query<PollQuery>,
) -> ApiResult<Json<Value>> {
    let ctx = device(&s.platform, &token)?;
    match poll(&s.platform, &ctx, true, q.timeout).await? {
        Downlink::Rpc { id, method, params } => {
            Ok(Json(json!({"id": id, "method": method, "params": params})))
        }
        Downlink::Attributes(_) => unreachable!("an RPC poll takes no attributes"),
    }
}

async fn rpc_reply(
    State(s): State<ApiState>,
    Path((token, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ctx = device(&s.platform, &token)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("RPC id {id:?} is not a number")))?;
    s.platform
        .rpc_reply(&ctx, id, &body)
        .map_err(|e| refused(&ctx, e))?;
    Ok(Json(json!({})))
}

async fn client_rpc(
    State(s): State<ApiState>,
    Path(token): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ctx = device(&s.platform, &token)?;
    Ok(Json(
        s.platform
            .client_rpc(&ctx, &body)
            .map_err(|e| refused(&ctx, e))?,
    ))
}

async fn provision(State(s): State<ApiState>, body: Bytes) -> Json<Value> {
    Json(s.platform.provision(&body))
}
