//! `GET /api/v1/stats` in process: telemetry posted over the device HTTP API is counted per
//! tenant (messages and points); a system administrator gets one tenant or the sum of all, a
//! tenant administrator their own tenant only.

use std::sync::Arc;

use api::auth::Auth;
use api::{router, ApiState};

use axum::http::StatusCode;
use ib_core::testing::TestPlatform;
use serde_json::{json, Value};

mod common;
use common::call;

const PW: &str = "stats-pass-1";

async fn login(app: &axum::Router, user: &str) -> String {
    let (status, v) = call(
        app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": user, "password": PW})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// A device in `tenant` (`None`: the default one): its access token.
async fn device(app: &axum::Router, admin: &str, name: &str, tenant: Option<&str>) -> String {
    let (status, d) = call(
        app,
        "POST",
        "/api/v1/devices",
        Some(admin),
        Some(json!({"name": name, "tenant": tenant})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    d["access_token"].as_str().unwrap().to_string()
}

async fn post_telemetry(app: &axum::Router, token: &str, body: Value) {
    let (status, v) = call(
        app,
        "POST",
        &format!("/api/v1/{token}/telemetry"),
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn counts_messages_and_points_per_tenant() {
    let t = TestPlatform::new();
    let (auth, _) = Auth::open(&t.platform, Some(PW), Default::default()).unwrap();
    let state = ApiState::new(t.platform.clone(), Arc::new(auth), &Default::default());
    let app = router(state, 1 << 20);
    let sys = login(&app, "admin").await;

    let (status, b) = call(
        &app,
        "POST",
        "/api/v1/tenants",
        Some(&sys),
        Some(json!({"name": "b"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let b_id = b["id"].as_str().unwrap().to_string();
    let (status, u) = call(
        &app,
        "POST",
        "/api/v1/users",
        Some(&sys),
        Some(json!({"username": "b-admin", "password": PW, "role": "tenant_admin", "tenant": "b"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{u}");

    let (status, zero) = call(&app, "GET", "/api/v1/stats?tenant=b", Some(&sys), None).await;
    assert_eq!(status, StatusCode::OK, "{zero}");
    assert_eq!((&zero["messages"], &zero["points"]), (&json!(0), &json!(0)));
    assert_eq!(zero["tenant"], json!(b_id));

    let in_default = device(&app, &sys, "pump-1", None).await;
    let in_b = device(&app, &sys, "pump-2", Some("b")).await;
    let now = ib_core::db::now_ms();
    // Two messages (3 and 1 points) in the default tenant, one of 2 points in b.
    post_telemetry(&app, &in_default, json!({"t": 1.5, "h": 40, "on": true})).await;
    post_telemetry(&app, &in_default, json!({"t": 1.6})).await;
    post_telemetry(
        &app,
        &in_b,
        json!([{"ts": now - 1000, "values": {"t": 1}}, {"ts": now, "values": {"t": 2}}]),
    )
    .await;
    // A refused message is not counted.
    let (status, _) = call(
        &app,
        "POST",
        &format!("/api/v1/{in_b}/telemetry"),
        None,
        Some(json!("x")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, all) = call(&app, "GET", "/api/v1/stats", Some(&sys), None).await;
    assert_eq!(all["tenant"], Value::Null, "{all}");
    assert_eq!(
        (&all["messages"], &all["points"]),
        (&json!(3), &json!(6)),
        "{all}"
    );
    assert!(all["since"].as_i64().unwrap() <= ib_core::db::now_ms());
    let (_, default) = call(
        &app,
        "GET",
        "/api/v1/stats?tenant=default",
        Some(&sys),
        None,
    )
    .await;
    assert_eq!(
        (&default["messages"], &default["points"]),
        (&json!(2), &json!(4)),
        "{default}"
    );

    // A tenant administrator: their own tenant, with or without naming it; another is not found.
    let b_admin = login(&app, "b-admin").await;
    for uri in ["/api/v1/stats", "/api/v1/stats?tenant=b"] {
        let (status, own) = call(&app, "GET", uri, Some(&b_admin), None).await;
        assert_eq!(status, StatusCode::OK, "{own}");
        assert_eq!(own["tenant"], json!(b_id));
        assert_eq!(
            (&own["messages"], &own["points"]),
            (&json!(1), &json!(2)),
            "{own}"
        );
    }
    let (status, _) = call(
        &app,
        "GET",
        "/api/v1/stats?tenant=default",
        Some(&b_admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "GET", "/api/v1/stats", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
