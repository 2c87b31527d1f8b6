//! The API router in process (`tower::ServiceExt::oneshot`): authentication of the management
//! routes, the error shape, and the device API's refusals.

use std::sync::Arc;

use api::auth::Auth;
use api::{router, ApiState};
use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use ib_core::testing::TestPlatform;
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;
use common::call;

fn app() -> (axum::Router, TestPlatform) {
    let t = TestPlatform::new();
    let (auth, generated) =
        Auth::open(&t.platform, Some("s3cret-pass"), Default::default()).unwrap();
    assert!(generated.is_none(), "a given password is not generated");
    let state = ApiState::new(t.platform.clone(), Arc::new(auth), &Default::default());
    (router(state, 1024), t)
}

async fn login(app: &axum::Router) -> String {
    let (status, v) = call(
        app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "admin", "password": "s3cret-pass"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn management_routes_need_a_valid_bearer_token() {
    let (app, _t) = app();
    let (status, v) = call(&app, "GET", "/api/v1/devices", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "unauthorized");
    let token = login(&app).await;
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (status, _) = call(&app, "GET", "/api/v1/devices", Some(&tampered), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, v) = call(&app, "GET", "/api/v1/devices", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, v) = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "admin", "password": "wrong"})),
    )
    .await;
    assert_eq!(v["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn device_api_errors_are_json() {
    let (app, _t) = app();
    let token = login(&app).await;
    let (status, d) = call(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&token),
        Some(json!({"name": "pump"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let dt = d["access_token"].as_str().unwrap();
    let (status, v) = call(
        &app,
        "POST",
        &format!("/api/v1/{dt}/telemetry"),
        None,
        Some(json!([{"a": 1}, {"b": null}])),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "invalid");
    let (status, _) = call(
        &app,
        "POST",
        "/api/v1/nope-nope-nope/telemetry",
        None,
        Some(json!({"a": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let big = json!({"k": "x".repeat(2000)});
    let (status, v) = call(
        &app,
        "POST",
        &format!("/api/v1/{dt}/telemetry"),
        None,
        Some(big),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"]["code"], "payload_too_large");
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&token),
        Some(json!({"name": "pump"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let (status, v) = call(&app, "GET", "/api/v1/no/such/route/here", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn dashboards_export_and_import_as_the_same_document() {
    let (app, _t) = app();
    let token = login(&app).await;
    let t = Some(token.as_str());
    let farm = json!({"name": "Farm", "description": "soil and pumps", "widgets": [
        {"type": "chart", "x": 0, "y": 0, "w": 8, "h": 4, "device": "soil-1", "keys": ["moisture"],
         "range": "24h"},
        {"type": "switch", "x": 8, "y": 0, "w": 4, "h": 2, "device": "pump-1", "method": "setPump"}]});
    let (status, created) = call(&app, "POST", "/api/v1/dashboards", t, Some(farm)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, exported) = call(&app, "GET", &format!("/api/v1/dashboards/{id}"), t, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(exported["widgets"][1]["method"], "setPump");
    // The export imports as it is, except for its (unique) name.
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/dashboards",
        t,
        Some(exported.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let mut copy = exported.clone();
    copy["name"] = json!("Farm 2");
    let (status, imported) = call(&app, "POST", "/api/v1/dashboards", t, Some(copy)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_eq!(imported["widgets"], exported["widgets"]);
    assert_ne!(imported["id"], exported["id"]);
    let (_, list) = call(&app, "GET", "/api/v1/dashboards", t, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    // A widget outside the grid is refused with its index.
    let bad = json!({"name": "Bad", "widgets": [
        {"type": "value", "x": 10, "y": 0, "w": 4, "h": 2, "device": "d", "keys": ["k"]}]});
    let (status, v) = call(
        &app,
        "PUT",
        &format!("/api/v1/dashboards/{id}"),
        t,
        Some(bad),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("widgets[0]") && msg.contains("columns"),
        "{msg}"
    );
    let (status, _) = call(&app, "DELETE", &format!("/api/v1/dashboards/{id}"), t, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = call(&app, "GET", &format!("/api/v1/dashboards/{id}"), t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn dashboards_shared_with_a_customer_are_seen_by_its_users_read_only() {
    let (app, _t) = app();
    let token = login(&app).await;
    let t = Some(token.as_str());
    let (status, acme) = call(
        &app,
        "POST",
        "/api/v1/customers",
        t,
        Some(json!({"name": "Acme"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    let acme = acme["id"].as_str().unwrap().to_string();
    let user = json!({"username": "acme-viewer", "password": "acme-pass-1", "role": "viewer",
        "customer": acme});
    let (status, v) = call(&app, "POST", "/api/v1/users", t, Some(user)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "acme-viewer", "password": "acme-pass-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let viewer = v["token"].as_str().unwrap().to_string();
    let c = Some(viewer.as_str());
    let board = json!({"name": "Acme pumps", "widgets": [
        {"type": "alarms", "x": 0, "y": 0, "w": 12, "h": 4}]});
    let (_, board) = call(&app, "POST", "/api/v1/dashboards", t, Some(board)).await;
    let id = board["id"].as_str().unwrap().to_string();
    let (_, other) = call(
        &app,
        "POST",
        "/api/v1/dashboards",
        t,
        Some(json!({"name": "Internal", "widgets": []})),
    )
    .await;
    let other = other["id"].as_str().unwrap().to_string();
    // Not shared yet: the customer's user sees nothing, and the dashboard does not exist for it.
    let (status, list) = call(&app, "GET", "/api/v1/dashboards", c, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["data"], json!([]));
    let (status, _) = call(&app, "GET", &format!("/api/v1/dashboards/{id}"), c, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Shared by name (or id): listed and readable, never changeable.
    let share = format!("/api/v1/dashboards/{id}/customers/Acme");
    let (status, v) = call(&app, "POST", &share, t, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["customers"], json!([acme]));
    let (_, list) = call(&app, "GET", "/api/v1/dashboards", c, None).await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Acme pumps"]);
    let (status, v) = call(&app, "GET", &format!("/api/v1/dashboards/{id}"), c, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = call(&app, "GET", &format!("/api/v1/dashboards/{other}"), c, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = call(
        &app,
        "PUT",
        &format!("/api/v1/dashboards/{id}"),
        c,
        Some(json!({"name": "mine now"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, _) = call(&app, "POST", &share, c, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A customer of another tenant, or none, cannot be shared with.
    let (_, beta) = call(
        &app,
        "POST",
        "/api/v1/tenants",
        t,
        Some(json!({"name": "beta"})),
    )
    .await;
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/customers",
        t,
        Some(json!({"name": "Beta co", "tenant": beta["id"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let foreign = format!(
        "/api/v1/dashboards/{id}/customers/{}",
        v["id"].as_str().unwrap()
    );
    let (status, v) = call(&app, "POST", &foreign, t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    // Unshared: gone for the customer's user; unsharing again is a 404.
    let (status, v) = call(&app, "DELETE", &share, t, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["customers"], json!([]));
    let (status, _) = call(&app, "GET", &format!("/api/v1/dashboards/{id}"), c, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "DELETE", &share, t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A `multipart/form-data` body of text fields and one file.
fn form(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----ib-test-boundary";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend(file);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(
    app: &axum::Router,
    token: &str,
    fields: &[(&str, &str)],
    file: &[u8],
) -> (StatusCode, Value) {
    let (ctype, body) = form(fields, file);
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/firmware")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", ctype)
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn firmware_uploads_are_checked_and_signatures_verified() {
    use base64::Engine;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let b64 = base64::engine::general_purpose::STANDARD;
    let (app, _t) = app();
    let token = login(&app).await;
    // Larger than the API's general body limit (1 KiB here): uploads have their own.
    let image: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let (status, v) = upload(
        &app,
        &token,
        &[("title", "pump"), ("version", "1.0")],
        &image,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["size"], 20_000);
    // Signed: refused until the tenant has the key, then verified.
    let rng = ring::rand::SystemRandom::new();
    let pair =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let sig = b64.encode(pair.sign(&image).as_ref());
    let signed = [
        ("title", "pump"),
        ("version", "1.1"),
        ("signature", sig.as_str()),
    ];
    let (status, v) = upload(&app, &token, &signed, &image).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let key = json!({"name": "release", "public_key": b64.encode(pair.public_key().as_ref())});
    let (status, k) = call(
        &app,
        "POST",
        "/api/v1/firmware-keys",
        Some(&token),
        Some(key),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{k}");
    let (status, v) = upload(&app, &token, &signed, &image).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["signed_by"], k["id"]);
    let mut tampered = image.clone();
    tampered[0] ^= 0xff;
    let (status, v) = upload(
        &app,
        &token,
        &[
            ("title", "pump"),
            ("version", "1.2"),
            ("signature", sig.as_str()),
        ],
        &tampered,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad signature"),
        "{v}"
    );
    // Bad forms.
    let (status, v) = upload(&app, &token, &[("version", "2")], &image).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = upload(
        &app,
        &token,
        &[("title", "t"), ("version", "2"), ("colour", "red")],
        &image,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = call(
        &app,
        "POST",
        "/api/v1/firmware",
        Some(&token),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (_, list) = call(&app, "GET", "/api/v1/firmware", Some(&token), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
}
