//! Over-the-air updates, management side: packages (multipart upload with an optional Ed25519
//! signature, list, read, image download with `Range`, delete), the tenant's signing keys, and a
//! device's assignment and reported state. The device side is in `device_http` (HTTP download)
//! and `ib_core::mqtt` (`v2/fw/request/...` chunks); the model is `ib_core::firmware`.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use ib_core::firmware::profile::ProfilePackage;
use ib_core::firmware::{DeviceFirmware, Kind, NewPackage, Package, SigningKey, MAX_IMAGE_BYTES};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::registry_routes::Page;
use crate::ApiState;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The firmware routes (uploads may be as large as an image, plus the form around it).
pub fn routes() -> OpenApiRouter<ApiState> {
    let uploads = OpenApiRouter::new()
        .routes(routes!(list_packages, upload_package))
        .layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES + (1 << 20)));
    OpenApiRouter::new()
        .merge(uploads)
        .routes(routes!(get_package, delete_package))
        .routes(routes!(package_image))
        .routes(routes!(list_keys, add_key))
        .routes(routes!(delete_key))
        .routes(routes!(device_firmware, assign_firmware))
        .routes(routes!(
            profile_firmware,
            assign_profile_firmware,
            unassign_profile_firmware
        ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TenantQuery {
    /// Tenant id or name (system administrators: where to create; in lists, absent means all).
    tenant: Option<String>,
}

/// The upload form (`multipart/form-data`).
#[allow(dead_code)] // documents the form for the OpenAPI document; read field by field
#[derive(ToSchema)]
struct UploadForm {
    /// Package title (the device's `fw_title`).
    title: String,
    /// Package version (`fw_version`).
    version: String,
    /// `firmware` (default) or `software`.
    kind: Option<String>,
    /// Device profile the package is meant for (id or name).
    profile: Option<String>,
    /// Ed25519 signature over the image, base64; verified against the tenant's keys.
    signature: Option<String>,
    /// The image.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

/// Uploads a package: SHA-256 computed, signature (if any) verified against the tenant's keys,
/// immutable afterwards. Same kind, title and version twice is a 409.
#[utoipa::path(post, path = "/api/v1/firmware", tag = "firmware",
    security(("bearer" = ["write"])), params(TenantQuery),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = Package)))]
async fn upload_package(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Package>)> {
    let Query(q) = q?;
    let t = caller.tenant(&s, q.tenant.as_deref())?;
    let mut form = form.map_err(|e| bad(format!("expected multipart/form-data: {e}")))?;
    let mut new = NewPackage::default();
    let (mut title, mut version, mut image) = (None, None, None);
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("the form: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            // Straight to a file as it arrives (hashed on the way): no image is held in memory.
            // Writes of a chunk to the page cache are short enough for an async worker.
            let mut upload = s.platform.firmware.begin_upload()?;
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| bad(format!("field \"file\": {e}")))?
            {
                upload.write(&chunk)?;
            }
            image = Some(upload);
            continue;
        }
        let data = field
            .bytes()
            .await
            .map_err(|e| bad(format!("field {name:?}: {e}")))?;
        let text =
            || String::from_utf8(data.to_vec()).map_err(|_| bad(format!("{name:?} must be text")));
        match name.as_str() {
            "title" => title = Some(text()?),
            "version" => version = Some(text()?),
            "kind" => {
                new.kind = match text()?.as_str() {
                    "firmware" => Kind::Firmware,
                    "software" => Kind::Software,
                    other => {
                        return Err(bad(format!("kind is firmware or software, not {other:?}")))
                    }
                }
            }
            "profile" => {
                let p = s.platform.registry.profile(&t.id, &text()?)?;
                new.profile = Some(p.id);
            }
            "signature" => {
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(text()?.trim())
                    .map_err(|e| bad(format!("signature is base64: {e}")))?;
                new.signature = Some(sig);
            }
            other => return Err(bad(format!("unknown form field {other:?}"))),
        }
    }
    new.title = title.ok_or_else(|| bad("the form needs \"title\""))?;
    new.version = version.ok_or_else(|| bad("the form needs \"version\""))?;
    let image = image.ok_or_else(|| bad("the form needs \"file\""))?;
    let fw = s.platform.clone();
    let tenant = t.id.clone();
    let pkg =
        crate::error::blocking(move || fw.firmware.finish_upload(&tenant, new, image)).await?;
    Ok((StatusCode::CREATED, Json(pkg)))
}

/// The tenant's packages by title and version.
#[utoipa::path(get, path = "/api/v1/firmware", tag = "firmware",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Page<Package>)))]
async fn list_packages(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Page<Package>>> {
    let Query(q) = q?;
    let tenant = crate::account_routes::list_tenant(&s, &caller, q.tenant.as_deref())?;
    let data = s.platform.firmware.list(tenant.as_deref())?;
    Ok(Json(Page { data, next: None }))
}

/// A package.
#[utoipa::path(get, path = "/api/v1/firmware/{id}", tag = "firmware",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = Package)))]
async fn get_package(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Package>> {
    Ok(Json(s.platform.firmware.get(&id)?))
}

/// Deletes a package no device has assigned (409 otherwise).
#[utoipa::path(delete, path = "/api/v1/firmware/{id}", tag = "firmware",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_package(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.platform.firmware.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The image, with `Range` requests answered (206), as `application/octet-stream`.
#[utoipa::path(get, path = "/api/v1/firmware/{id}/image", tag = "firmware",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "the requested range")))]
async fn package_image(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let pkg = s.platform.firmware.get(&id)?;
    serve_image(&s, &pkg, req).await
}

/// Serves an image file with ranges (tower-http's `ServeFile`).
pub(crate) async fn serve_image(s: &ApiState, pkg: &Package, req: Request) -> ApiResult<Response> {
    let path = s.platform.firmware.image(&pkg.id);
    let service = tower_http::services::ServeFile::new_with_mime(
        path,
        &"application/octet-stream".parse().expect("a MIME type"),
    );
    let (parts, _) = req.into_parts();
    let req = Request::from_parts(parts, Body::empty());
    match service.oneshot(req).await {
        Ok(res) => Ok(res.map(Body::new).into_response()),
        Err(e) => Err(ApiError::from(ib_core::CoreError::Store(e.to_string()))),
    }
}

/// A signing key to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// Tenant id or name (system administrators).
    #[serde(default)]
    tenant: Option<String>,
    name: String,
    /// The 32-byte Ed25519 public key, base64.
    public_key: String,
}

/// Registers an Ed25519 public key that signed images are verified against.
#[utoipa::path(post, path = "/api/v1/firmware-keys", tag = "firmware",
    security(("bearer" = ["write"])), request_body = NewKey,
    responses((status = 201, body = SigningKey)))]
async fn add_key(
    caller: Caller,
    State(s): State<ApiState>,
    body: JsonBody<NewKey>,
) -> ApiResult<(StatusCode, Json<SigningKey>)> {
    let Json(new) = body?;
    let t = caller.tenant(&s, new.tenant.as_deref())?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(new.public_key.trim())
        .map_err(|e| bad(format!("public_key is base64: {e}")))?;
    let key = s.platform.firmware.add_key(&t.id, &new.name, &raw)?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// The tenant's signing keys.
#[utoipa::path(get, path = "/api/v1/firmware-keys", tag = "firmware",
    security(("bearer" = ["read"])), params(TenantQuery),
    responses((status = 200, body = Page<SigningKey>)))]
async fn list_keys(
    caller: Caller,
    State(s): State<ApiState>,
    q: QueryOf<TenantQuery>,
) -> ApiResult<Json<Page<SigningKey>>> {
    let Query(q) = q?;
    let tenant = crate::account_routes::list_tenant(&s, &caller, q.tenant.as_deref())?;
    let data = s.platform.firmware.keys(tenant.as_deref())?;
    Ok(Json(Page { data, next: None }))
}

/// Deletes a signing key (packages it verified stay).
#[utoipa::path(delete, path = "/api/v1/firmware-keys/{id}", tag = "firmware",
    security(("bearer" = ["write"])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_key(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.platform.firmware.delete_key(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What to assign.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Assign {
    firmware_id: String,
}

/// A device's assigned packages and what it reported.
#[derive(Serialize, ToSchema)]
struct DeviceUpdates {
    firmware: Option<DeviceFirmware>,
    software: Option<DeviceFirmware>,
}

/// Assigns a package to the device: announced as the shared attributes `fw_title`,
/// `fw_version`, `fw_checksum`, `fw_checksum_algorithm`, `fw_size` (`sw_*` for software).
#[utoipa::path(post, path = "/api/v1/devices/{id}/firmware", tag = "firmware",
    security(("bearer" = ["write"])), params(("id" = String, Path)), request_body = Assign,
    responses((status = 200, body = DeviceFirmware)))]
async fn assign_firmware(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<Assign>,
) -> ApiResult<Json<DeviceFirmware>> {
    let Json(a) = body?;
    Ok(Json(s.platform.assign_firmware(&id, &a.firmware_id)?))
}

/// The device's assigned firmware and software, with the state it last reported.
#[utoipa::path(get, path = "/api/v1/devices/{id}/firmware", tag = "firmware",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = DeviceUpdates)))]
async fn device_firmware(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceUpdates>> {
    let d = s.platform.registry.device(&id)?;
    let fw = &s.platform.firmware;
    Ok(Json(DeviceUpdates {
        firmware: fw.of_device(&d.id, Kind::Firmware)?,
        software: fw.of_device(&d.id, Kind::Software)?,
    }))
}

/// A profile's packages.
#[derive(Serialize, ToSchema)]
struct ProfileUpdates {
    firmware: Option<ProfilePackage>,
    software: Option<ProfilePackage>,
}

/// Assigns a package to every device of the profile now, and to devices that join it later
/// without a package of that kind (within a second); a device's own assignment wins.
#[utoipa::path(post, path = "/api/v1/profiles/{id}/firmware", tag = "firmware",
    security(("bearer" = ["write"])), params(("id" = String, Path)), request_body = Assign,
    responses((status = 200, body = ProfilePackage)))]
async fn assign_profile_firmware(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: JsonBody<Assign>,
) -> ApiResult<Json<ProfilePackage>> {
    let Json(a) = body?;
    let p = s.platform.clone();
    let now = ib_core::db::now_ms();
    let assigned =
        crate::error::blocking(move || p.assign_profile_firmware(&id, &a.firmware_id, now)).await?;
    Ok(Json(assigned))
}

/// The profile's firmware and software packages.
#[utoipa::path(get, path = "/api/v1/profiles/{id}/firmware", tag = "firmware",
    security(("bearer" = ["read"])), params(("id" = String, Path)),
    responses((status = 200, body = ProfileUpdates)))]
async fn profile_firmware(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProfileUpdates>> {
    let pr = s.platform.registry.profile_by_id(&id)?;
    Ok(Json(ProfileUpdates {
        firmware: s.platform.profile_firmware(&pr.id, Kind::Firmware)?,
        software: s.platform.profile_firmware(&pr.id, Kind::Software)?,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct KindQuery {
    /// `firmware` (default) or `software`.
    kind: Option<Kind>,
}

/// Stops giving the profile's package to new devices (devices keep what they were given);
/// 204 also when the profile had none.
#[utoipa::path(delete, path = "/api/v1/profiles/{id}/firmware", tag = "firmware",
    security(("bearer" = ["write"])), params(("id" = String, Path), KindQuery),
    responses((status = 204, description = "unassigned")))]
async fn unassign_profile_firmware(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: QueryOf<KindQuery>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    let pr = s.platform.registry.profile_by_id(&id)?;
    s.platform
        .unassign_profile_firmware(&pr.id, q.kind.unwrap_or_default())?;
    Ok(StatusCode::NO_CONTENT)
}
