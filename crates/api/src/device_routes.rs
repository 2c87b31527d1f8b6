//! Management routes on one device: credentials, attributes (read all scopes, write and delete
//! shared/server), telemetry (latest, raw range) and server-side RPC.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use ib_core::attributes::Scope;
use ib_core::credentials::{CredentialInfo, NewCredential};
use ib_core::payload::split_keys;
use ib_core::rpc::{RpcRecord, RpcRequest};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{blocking, ApiError, ApiResult};
use crate::registry_routes::need_keys;
use crate::ApiState;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The device sub-resource routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_credentials, set_credentials))
        .routes(routes!(get_attributes))
        .routes(routes!(set_attributes, delete_attributes))
        .routes(routes!(latest))
        .routes(routes!(range, delete_telemetry))
        .routes(routes!(send_rpc))
        .routes(routes!(get_rpc))
}

/// A device's credentials (kinds, names, expiry; never secrets). Audited.
#[utoipa::path(get, path = "/api/v1/devices/{id}/credentials", tag = "devices",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 200, body = Vec<CredentialInfo>)))]
async fn list_credentials(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<CredentialInfo>>> {
    let d = s.platform.registry.device(&id)?;
    Ok(Json(s.platform.credentials.list(&d.id)?))
}

/// Sets (rotates) a credential; a new access token is returned this once. Audited.
#[utoipa::path(post, path = "/api/v1/devices/{id}/credentials", tag = "devices",
    security(("bearer" = ["write"])), params(("id" = String, Path)), request_body = NewCredential,
    responses((status = 200, body = Object, description = "`{\"device\", \"access_token\"?}`")))]
async fn set_credentials(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<NewCredential>,
) -> ApiResult<Json<Value>> {
    let Json(new) = body?;
    let d = s.platform.registry.device(&id)?;
    let token = s.platform.set_credentials(&d.id, new)?;
    Ok(Json(match token {
        Some(t) => json!({"device": d.id, "access_token": t}),
        None => json!({"device": d.id}),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AttrQuery {
    scope: Option<String>,
    keys: Option<String>,
}

/// A device's attributes by scope (`client`, `shared`, `server`), with their times.
#[utoipa::path(get, path = "/api/v1/devices/{id}/attributes", tag = "devices",
    security(("bearer" = ["read"])), params(("id" = String, Path), AttrQuery),
    responses((status = 200, body = Object)))]
async fn get_attributes(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<AttrQuery>,
) -> ApiResult<Json<Value>> {
    let d = s.platform.registry.device(&id)?;
    let keys = q.keys.as_deref().map(split_keys);
    let scopes = match &q.scope {
        Some(sc) => vec![Scope::parse(sc)?],
        None => Scope::ALL.to_vec(),
    };
    let mut out = Map::new();
    for sc in scopes {
        out.insert(
            sc.name().into(),
            Value::Object(s.platform.attributes.with_ts(&d.id, sc, keys.as_deref())?),
        );
    }
    Ok(Json(Value::Object(out)))
}

fn writable(scope: &str) -> ApiResult<Scope> {
    match Scope::parse(scope)? {
        Scope::Client => Err(ApiError::bad_request(
            "client attributes are written by the device",
        )),
        sc => Ok(sc),
    }
}

/// Writes `shared` (pushed to the device) or `server` attributes.
#[utoipa::path(post, path = "/api/v1/devices/{id}/attributes/{scope}", tag = "devices",
    security(("bearer" = ["write"])),
    params(("id" = String, Path), ("scope" = String, Path, description = "shared or server")),
    request_body = Object, responses((status = 200, body = Object)))]
async fn set_attributes(
    State(s): State<ApiState>,
    Path((id, scope)): Path<(String, String)>,
    body: JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let Json(v) = body?;
    let d = s.platform.registry.device(&id)?;
    let map = ib_core::payload::attributes_value(v)?;
    match writable(&scope)? {
        Scope::Shared => s.platform.set_shared(&d.id, map)?,
        sc => s
            .platform
            .attributes
            .save(&d.id, sc, &map, ib_core::db::now_ms())?,
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct KeysQuery {
    keys: Option<String>,
}

/// Deletes `shared` or `server` attributes by key.
#[utoipa::path(delete, path = "/api/v1/devices/{id}/attributes/{scope}", tag = "devices",
    security(("bearer" = ["write"])),
    params(("id" = String, Path), ("scope" = String, Path, description = "shared or server"), KeysQuery),
    responses((status = 200, body = Object, description = "`{\"deleted\": N}`")))]
async fn delete_attributes(
    State(s): State<ApiState>,
    Path((id, scope)): Path<(String, String)>,
    Query(q): Query<KeysQuery>,
) -> ApiResult<Json<Value>> {
    let d = s.platform.registry.device(&id)?;
    let keys = split_keys(q.keys.as_deref().unwrap_or(""));
    need_keys(&keys)?;
    let deleted = match writable(&scope)? {
        Scope::Shared => s.platform.delete_shared(&d.id, &keys)?,
        sc => s.platform.attributes.delete(&d.id, sc, &keys)?,
    };
    Ok(Json(json!({"deleted": deleted})))
}

/// The latest value of each key: `{"k":{"ts","value"}}`.
#[utoipa::path(get, path = "/api/v1/devices/{id}/telemetry/latest", tag = "telemetry",
    security(("bearer" = ["read"])), params(("id" = String, Path), KeysQuery),
    responses((status = 200, body = Object)))]
async fn latest(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<KeysQuery>,
) -> ApiResult<Json<Value>> {
    let d = s.platform.registry.device(&id)?;
    let keys = q.keys.as_deref().map(split_keys);
    let latest = s.platform.telemetry.latest(&d.id, keys.as_deref())?;
    let out: Map<String, Value> = latest
        .into_iter()
        .map(|(k, smp)| (k, json!({"ts": smp.ts, "value": smp.value.to_json()})))
        .collect();
    Ok(Json(Value::Object(out)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RangeQuery {
    keys: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<usize>,
    agg: Option<String>,
    interval: Option<i64>,
    order: Option<String>,
    /// `csv` for a CSV export (`key,ts,value`), streamed.
    format: Option<String>,
}

/// Telemetry in a time range, raw or aggregated: `{"k":[{"ts","value"}]}`, or CSV.
#[utoipa::path(get, path = "/api/v1/devices/{id}/telemetry", tag = "telemetry",
    security(("bearer" = ["read"])), params(("id" = String, Path), RangeQuery),
    responses((status = 200, description = "series by key, or CSV with `format=csv`",
               content((Object = "application/json"), (String = "text/csv")))))]
async fn range(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::response::Response> {
    let Query(q) = q?;
    let d = s.platform.registry.device(&id)?;
    let keys = split_keys(q.keys.as_deref().unwrap_or(""));
    need_keys(&keys)?;
    let (from, to) = (q.from.unwrap_or(0), q.to.unwrap_or(i64::MAX));
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    let limit = q.limit.unwrap_or(10_000).clamp(1, 1_000_000);
    let store = &s.platform.telemetry;
    let mut out = Map::new();
    match q.agg.as_deref() {
        Some(agg) => {
            let agg = store::Agg::parse(agg)
                .ok_or_else(|| ApiError::bad_request("agg is one of avg, min, max, sum, count"))?;
            let interval = q
                .interval
                .filter(|i| *i > 0)
                .ok_or_else(|| ApiError::bad_request("an aggregation needs interval=MS (> 0)"))?;
            let (store, id, keys2) = (store.clone(), d.id.clone(), keys.clone());
            let aggregated =
                blocking(move || store.aggregate(&id, &keys2, from, to, interval, agg)).await?;
            for (k, buckets) in aggregated {
                let series: Vec<Value> = buckets
                    .into_iter()
                    .take(limit)
                    .map(|(ts, v)| json!({"ts": ts, "value": v}))
                    .collect();
                out.insert(k, Value::Array(series));
            }
        }
        None => {
            let desc = matches!(q.order.as_deref(), Some("desc" | "DESC"));
            let (store, id, keys2) = (store.clone(), d.id.clone(), keys.clone());
            let series = blocking(move || store.range(&id, &keys2, from, to, limit, desc)).await?;
            if q.format.as_deref() == Some("csv") {
                return Ok(csv_response(series));
            }
            // Serialised straight from the samples: raw ranges can be large.
            let body = store::series_json(&series);
            let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
            return Ok((json, body).into_response());
        }
    }
    Ok(Json(Value::Object(out)).into_response())
}

/// Sends an RPC to the device: two-way waits for the answer (504 on timeout), one-way and
/// persistent ones return at once.
#[utoipa::path(post, path = "/api/v1/devices/{id}/rpc", tag = "rpc",
    security(("bearer" = ["control"])), params(("id" = String, Path)), request_body = RpcRequest,
    responses((status = 200, body = Object, description = "`{\"id\",\"status\",\"response\"}`"),
              (status = 504, body = Object, description = "timed out")))]
async fn send_rpc(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<RpcRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(req) = body?;
    let d = s.platform.registry.device(&id)?;
    let r = s.platform.rpc.call(&d.id, req).await?;
    let status = if r.status == "TIMEOUT" {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::OK
    };
    let mut v = json!({"id": r.id, "status": r.status, "response": r.response});
    if status == StatusCode::GATEWAY_TIMEOUT {
        v["error"] = json!({"code": "timeout", "message": "the device did not answer in time"});
    }
    Ok((status, Json(v)))
}

/// An RPC's state.
#[utoipa::path(get, path = "/api/v1/devices/{id}/rpc/{rpc}", tag = "rpc",
    security(("bearer" = ["read"])), params(("id" = String, Path), ("rpc" = i64, Path)),
    responses((status = 200, body = RpcRecord)))]
async fn get_rpc(
    State(s): State<ApiState>,
    Path((id, rpc)): Path<(String, i64)>,
) -> ApiResult<Json<RpcRecord>> {
    let d = s.platform.registry.device(&id)?;
    Ok(Json(s.platform.rpc.get(&d.id, rpc)?))
}

/// `key,ts,value` rows, sent in chunks as they are rendered (values as JSON, quoted when they
/// hold a comma, quote or line break).
fn csv_response(series: store::Series) -> axum::response::Response {
    let rows = series.into_iter().flat_map(|(k, samples)| {
        samples.into_iter().map(move |smp| {
            let v = serde_json::to_string(&smp.value).unwrap_or_default();
            let v = if v.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v
            };
            let key = if k.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", k.replace('"', "\"\""))
            } else {
                k.clone()
            };
            format!("{key},{},{v}\n", smp.ts)
        })
    });
    let mut chunk = String::from("key,ts,value\n");
    let mut chunks: Vec<Result<bytes::Bytes, std::io::Error>> = Vec::new();
    for row in rows {
        chunk.push_str(&row);
        if chunk.len() >= 64 * 1024 {
            chunks.push(Ok(bytes::Bytes::from(std::mem::take(&mut chunk))));
        }
    }
    chunks.push(Ok(bytes::Bytes::from(chunk)));
    let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
    ([(axum::http::header::CONTENT_TYPE, "text/csv")], body).into_response()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    from: Option<i64>,
    to: Option<i64>,
}

/// Deletes a device's telemetry in `[from, to]` (all of it without bounds): data-protection
/// requests.
#[utoipa::path(delete, path = "/api/v1/devices/{id}/telemetry", tag = "telemetry",
    security(("bearer" = ["write"])), params(("id" = String, Path), DeleteQuery),
    responses((status = 204, description = "deleted")))]
async fn delete_telemetry(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    let d = s.platform.registry.device(&id)?;
    let (from, to) = (q.from.unwrap_or(i64::MIN), q.to.unwrap_or(i64::MAX));
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    let store = s.platform.telemetry.clone();
    blocking(move || store.delete(&d.id, from, to)).await?;
    Ok(StatusCode::NO_CONTENT)
}
