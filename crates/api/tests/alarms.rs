//! Alarms through the router in process: raised by the service (as the rule engine does) and by
//! hand, listed with filters and pages, acknowledged, cleared, assigned and commented on, and
//! confined to the caller's tenant and customer. The live stream of alarms is in `live.rs`.

use std::sync::Arc;

use api::auth::Auth;
use api::{router, ApiState};
use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use ib_core::accounts::{Reach, Role};
use ib_core::alarms::Severity;
use ib_core::model::{DeviceUpdate, NewDevice};
use ib_core::testing::TestPlatform;
use serde_json::{json, Value};
use tower::ServiceExt;

const PW: &str = "alarm-pass-1";

struct App {
    t: TestPlatform,
    auth: Arc<Auth>,
    app: axum::Router,
}

fn app() -> App {
    let t = TestPlatform::new();
    let (auth, _) = Auth::open(&t.platform, Some("admin-pass-1"), Default::default()).unwrap();
    let auth = Arc::new(auth);
    let state = ApiState::new(t.platform.clone(), auth.clone(), &Default::default());
    App {
        app: router(state, 1 << 20),
        t,
        auth,
    }
}

impl App {
    fn tenant(&self, name: &str) -> String {
        self.t.platform.registry.create_tenant(name).unwrap().id
    }

    fn customer(&self, tenant: &str, name: &str) -> String {
        let registry = &self.t.platform.registry;
        registry.create_customer(tenant, name).unwrap().id
    }

    fn device(&self, tenant: &str, name: &str, customer: Option<&str>) -> String {
        let new = NewDevice {
            name: name.into(),
            customer: customer.map(str::to_string),
            ..NewDevice::default()
        };
        self.t
            .platform
            .registry
            .create_device(tenant, new)
            .unwrap()
            .0
            .id
    }

    /// A user's id and access token (`tenant` `None`: a system administrator).
    fn user(
        &self,
        name: &str,
        role: Role,
        tenant: Option<&str>,
        customer: Option<&str>,
    ) -> (String, String) {
        let reach = Reach {
            tenant: tenant.map(str::to_string),
            customer: customer.map(str::to_string),
        };
        let accounts = &self.t.platform.accounts;
        let user = accounts.create_user(name, PW, role, reach, false).unwrap();
        let token = self.auth.start_user_session(&user).unwrap().token;
        (user.id, token)
    }

    /// Raises through the service, as the rule engine does; returns the alarm id.
    fn raise(&self, tenant: &str, device: &str, ty: &str, severity: Severity) -> i64 {
        let alarms = &self.t.platform.alarms;
        let (alarm, _) = alarms
            .raise(tenant, device, ty, severity, json!({"value": 42}))
            .unwrap();
        alarm.id
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn assign(&self, uri: &str, token: &str, user: Value) -> (StatusCode, Value) {
        let body = json!({ "user": user });
        self.call("PUT", uri, token, Some(body)).await
    }

    async fn get(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", uri, token, None).await
    }

    /// The ids of a list (asserting 200).
    async fn ids(&self, uri: &str, token: &str) -> Vec<i64> {
        let (s, v) = self.get(uri, token).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {v}");
        let data = v["data"].as_array().unwrap();
        data.iter().map(|a| a["id"].as_i64().unwrap()).collect()
    }
}

/// Asserts the error body: status and code.
fn is_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(got.1["error"]["message"].is_string(), "{}", got.1);
}

#[tokio::test]
async fn raised_twice_is_one_alarm_and_lists_filter() {
    let a = app();
    let t = a.tenant("t");
    let c = a.customer(&t, "acme");
    let pump = a.device(&t, "pump", Some(&c));
    let fan = a.device(&t, "fan", None);
    let (_, viewer) = a.user("viewer", Role::Viewer, Some(&t), None);
    let hot = a.raise(&t, &pump, "High temperature", Severity::Major);
    assert_eq!(
        a.raise(&t, &pump, "High temperature", Severity::Critical),
        hot
    );
    let cold = a.raise(&t, &fan, "Low temperature", Severity::Minor);

    let (s, v) = a.get("/api/v1/alarms?status=active", &viewer).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["next"], Value::Null);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{v}");
    let first = &data[1];
    assert_eq!(first["id"], hot);
    let expected = json!({
        "id": hot, "type": "High temperature", "severity": "CRITICAL",
        "status": "ACTIVE_UNACK", "acknowledged": false, "cleared": false,
        "originator": pump, "originator_name": "pump", "tenant": t, "customer": c,
        "start_ts": first["start_ts"], "end_ts": first["end_ts"], "ack_ts": null,
        "clear_ts": null, "details": {"value": 42}, "assignee": null,
    });
    assert_eq!(first, &expected);
    assert!(first["start_ts"].as_i64().unwrap() <= first["end_ts"].as_i64().unwrap());

    let list = |q: &str| format!("/api/v1/alarms?{q}");
    assert_eq!(a.ids(&list("severity=critical"), &viewer).await, [hot]);
    assert_eq!(a.ids(&list("severity=MINOR"), &viewer).await, [cold]);
    assert_eq!(
        a.ids(&list(&format!("device={pump}")), &viewer).await,
        [hot]
    );
    assert_eq!(a.ids(&list("device=fan"), &viewer).await, [cold], "by name");
    assert_eq!(
        a.ids(&list("type=Low%20temperature"), &viewer).await,
        [cold]
    );
    assert_eq!(a.ids(&list("status=ACTIVE_UNACK"), &viewer).await.len(), 2);
    assert!(a.ids(&list("status=cleared"), &viewer).await.is_empty());
    // Pages, newest first.
    let (s, v) = a.get(&list("limit=1"), &viewer).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"][0]["id"], cold);
    let next = v["next"].as_str().unwrap().to_string();
    let (_, v) = a
        .get(&list(&format!("limit=1&cursor={next}")), &viewer)
        .await;
    assert_eq!(
        (&v["data"][0]["id"], &v["next"]),
        (&json!(hot), &Value::Null)
    );

    // Bad input: the JSON error body.
    let bad = a.get(&list("status=sleeping"), &viewer).await;
    is_error(&bad, StatusCode::BAD_REQUEST, "invalid");
    let bad = a.get(&list("severity=huge"), &viewer).await;
    is_error(&bad, StatusCode::BAD_REQUEST, "invalid");
    let bad = a.get(&list("cursor=abc"), &viewer).await;
    is_error(&bad, StatusCode::BAD_REQUEST, "invalid");
    let bad = a.get(&list("device=no-such-device"), &viewer).await;
    is_error(&bad, StatusCode::NOT_FOUND, "not_found");
    let bad = a.get("/api/v1/alarms/not-a-number", &viewer).await;
    is_error(&bad, StatusCode::BAD_REQUEST, "invalid");
    let bad = a.get("/api/v1/alarms/999999", &viewer).await;
    is_error(&bad, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn acknowledge_clear_and_comment() {
    let a = app();
    let t = a.tenant("t");
    let pump = a.device(&t, "pump", None);
    let (_, op) = a.user("op", Role::Operator, Some(&t), None);
    let (_, viewer) = a.user("viewer", Role::Viewer, Some(&t), None);
    let id = a.raise(&t, &pump, "Dry soil", Severity::Major);
    let uri = |rest: &str| format!("/api/v1/alarms/{id}{rest}");

    // Viewers read; operators act.
    let (s, _) = a.call("POST", &uri("/ack"), &viewer, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = a.call("POST", &uri("/ack"), &op, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ACTIVE_ACK");
    assert!(v["ack_ts"].is_i64() && v["clear_ts"].is_null());
    let (_, again) = a.call("POST", &uri("/ack"), &op, None).await;
    assert_eq!(again, v, "acknowledging twice changes nothing");
    let (s, v) = a.call("POST", &uri("/clear"), &op, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "CLEARED_ACK");
    assert_eq!(
        (&v["cleared"], &v["acknowledged"]),
        (&json!(true), &json!(true))
    );
    assert!(v["clear_ts"].as_i64().unwrap() >= v["ack_ts"].as_i64().unwrap());
    assert_eq!(
        a.ids("/api/v1/alarms?status=CLEARED_ACK", &viewer).await,
        [id]
    );
    assert!(a
        .ids("/api/v1/alarms?status=active", &viewer)
        .await
        .is_empty());

    // Comments: operators write, viewers read; who acknowledged and cleared is recorded.
    let body = json!({"text": "pump restarted"});
    let (s, _) = a
        .call("POST", &uri("/comments"), &viewer, Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, c) = a.call("POST", &uri("/comments"), &op, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!((&c["author"], &c["system"]), (&json!("op"), &json!(false)));
    let empty = a
        .call("POST", &uri("/comments"), &op, Some(json!({"text": " "})))
        .await;
    is_error(&empty, StatusCode::BAD_REQUEST, "invalid");
    let (s, v) = a.get(&uri("/comments"), &viewer).await;
    assert_eq!(s, StatusCode::OK);
    let texts: Vec<(&str, &str)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["author"].as_str().unwrap(), c["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts,
        [
            ("op", "Alarm acknowledged"),
            ("op", "Alarm cleared"),
            ("op", "pump restarted")
        ]
    );

    // Raised again after the clear: a new alarm.
    let new = a.raise(&t, &pump, "Dry soil", Severity::Major);
    assert_ne!(new, id);
    assert_eq!(a.ids("/api/v1/alarms?status=active", &viewer).await, [new]);
}

#[tokio::test]
async fn raised_by_hand_and_deleted() {
    let a = app();
    let (t, other) = (a.tenant("t"), a.tenant("other"));
    let pump = a.device(&t, "pump", None);
    let stranger = a.device(&other, "stranger", None);
    let (_, admin) = a.user("tadmin", Role::TenantAdmin, Some(&t), None);
    let (_, op) = a.user("op", Role::Operator, Some(&t), None);
    let new = |device: &str, ty: &str, sev: &str| json!({"device": device, "type": ty, "severity": sev, "details": {"by": "hand"}});
    let (s, v) = a
        .call(
            "POST",
            "/api/v1/alarms",
            &admin,
            Some(new(&pump, "Leak", "major")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (&v["severity"], &v["details"]),
        (&json!("MAJOR"), &json!({"by": "hand"}))
    );
    let id = v["id"].as_i64().unwrap();
    // The same type again: the active alarm, updated.
    let (s, v) = a
        .call(
            "POST",
            "/api/v1/alarms",
            &admin,
            Some(new("pump", "Leak", "CRITICAL")),
        )
        .await;
    assert_eq!((s, v["id"].as_i64()), (StatusCode::OK, Some(id)), "{v}");
    assert_eq!(v["severity"], "CRITICAL");

    let post = |body: Value| a.call("POST", "/api/v1/alarms", &admin, Some(body));
    is_error(
        &post(new(&pump, "Leak", "huge")).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    is_error(
        &post(new(&pump, "", "MAJOR")).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    is_error(
        &post(new("nope", "Leak", "MAJOR")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    is_error(
        &post(new(&stranger, "Leak", "MAJOR")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let missing = json!({"device": pump, "type": "Leak"});
    is_error(&post(missing).await, StatusCode::BAD_REQUEST, "invalid");
    let (s, _) = a
        .call(
            "POST",
            "/api/v1/alarms",
            &op,
            Some(new(&pump, "Leak", "MAJOR")),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "raising by hand is `write`");

    let (s, _) = a
        .call("DELETE", &format!("/api/v1/alarms/{id}"), &op, None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = a
        .call("DELETE", &format!("/api/v1/alarms/{id}"), &admin, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let gone = a.get(&format!("/api/v1/alarms/{id}"), &admin).await;
    is_error(&gone, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn assignees_must_be_of_the_alarms_tenant_and_customer() {
    let a = app();
    let (t, other) = (a.tenant("t"), a.tenant("other"));
    let (c1, c2) = (a.customer(&t, "c1"), a.customer(&t, "c2"));
    let pump = a.device(&t, "pump", Some(&c1));
    let (op_id, op) = a.user("op", Role::Operator, Some(&t), None);
    let (c1_id, c1_op) = a.user("c1-op", Role::Operator, Some(&t), Some(&c1));
    let (c2_id, _) = a.user("c2-op", Role::Operator, Some(&t), Some(&c2));
    let (stranger_id, _) = a.user("stranger", Role::Operator, Some(&other), None);
    let (admin_id, _) = a.user("root2", Role::SysAdmin, None, None);
    let id = a.raise(&t, &pump, "Leak", Severity::Major);
    let uri = format!("/api/v1/alarms/{id}/assignee");

    let (s, v) = a.assign(&uri, &op, json!(op_id)).await;
    assert_eq!((s, &v["assignee"]), (StatusCode::OK, &json!(op_id)), "{v}");
    let (s, v) = a.assign(&uri, &op, json!("c1-op")).await;
    assert_eq!(
        (s, &v["assignee"]),
        (StatusCode::OK, &json!(c1_id)),
        "by user name"
    );
    for bad in [&stranger_id, &admin_id, "no-such-user"] {
        is_error(
            &a.assign(&uri, &op, json!(bad)).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    // A user of a customer that does not own the device.
    is_error(
        &a.assign(&uri, &op, json!(c2_id)).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    // A customer's operator assigns within its customer only.
    let (s, _) = a.assign(&uri, &c1_op, json!(c1_id)).await;
    assert_eq!(s, StatusCode::OK);
    is_error(
        &a.assign(&uri, &c1_op, json!(op_id)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (s, v) = a.assign(&uri, &c1_op, Value::Null).await;
    assert_eq!((s, &v["assignee"]), (StatusCode::OK, &Value::Null));
    let bad = a.call("PUT", &uri, &op, Some(json!({"who": op_id}))).await;
    is_error(&bad, StatusCode::BAD_REQUEST, "invalid");
}

#[tokio::test]
async fn customer_users_and_other_tenants_see_only_their_own() {
    let a = app();
    let (t, other) = (a.tenant("t"), a.tenant("other"));
    let (c1, c2) = (a.customer(&t, "c1"), a.customer(&t, "c2"));
    let d1 = a.device(&t, "d1", Some(&c1));
    let d2 = a.device(&t, "d2", Some(&c2));
    let d3 = a.device(&t, "d3", None);
    let dx = a.device(&other, "dx", None);
    let (a1, a2, a3) = (
        a.raise(&t, &d1, "Leak", Severity::Major),
        a.raise(&t, &d2, "Leak", Severity::Major),
        a.raise(&t, &d3, "Leak", Severity::Major),
    );
    let ax = a.raise(&other, &dx, "Leak", Severity::Major);
    let (_, c1_op) = a.user("c1-op", Role::Operator, Some(&t), Some(&c1));
    let (_, op) = a.user("op", Role::Operator, Some(&t), None);
    let (_, sys) = a.user("root2", Role::SysAdmin, None, None);

    assert_eq!(a.ids("/api/v1/alarms", &c1_op).await, [a1]);
    assert_eq!(a.ids("/api/v1/alarms", &op).await, [a3, a2, a1]);
    assert_eq!(a.ids("/api/v1/alarms", &sys).await, [ax, a3, a2, a1]);
    assert_eq!(
        a.ids(&format!("/api/v1/alarms?tenant={other}"), &sys).await,
        [ax]
    );
    assert_eq!(a.ids("/api/v1/alarms?tenant=t", &sys).await, [a3, a2, a1]);
    let other_tenant = a.get(&format!("/api/v1/alarms?tenant={other}"), &op).await;
    is_error(&other_tenant, StatusCode::NOT_FOUND, "not_found");
    let other_device = a.get(&format!("/api/v1/alarms?device={d2}"), &c1_op).await;
    is_error(&other_device, StatusCode::NOT_FOUND, "not_found");
    let foreign_device = a.get(&format!("/api/v1/alarms?device={dx}"), &op).await;
    is_error(&foreign_device, StatusCode::NOT_FOUND, "not_found");

    // Another tenant's alarm, or another customer's, does not exist: every operation.
    for (token, id) in [(&op, ax), (&c1_op, a2), (&c1_op, a3)] {
        let base = format!("/api/v1/alarms/{id}");
        for (method, path, body) in [
            ("GET", base.clone(), None),
            ("POST", format!("{base}/ack"), None),
            ("POST", format!("{base}/clear"), None),
            ("GET", format!("{base}/comments"), None),
            (
                "POST",
                format!("{base}/comments"),
                Some(json!({"text": "x"})),
            ),
            (
                "PUT",
                format!("{base}/assignee"),
                Some(json!({"user": null})),
            ),
        ] {
            let got = a.call(method, &path, token, body).await;
            is_error(&got, StatusCode::NOT_FOUND, "not_found");
        }
    }
    let (s, v) = a.get(&format!("/api/v1/alarms/{a1}"), &c1_op).await;
    assert_eq!((s, &v["customer"]), (StatusCode::OK, &json!(c1)));
    let (s, v) = a
        .call("POST", &format!("/api/v1/alarms/{a1}/ack"), &c1_op, None)
        .await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("ACTIVE_ACK")));

    // The alarm follows its device: given to c2, the alarm is c2's.
    let update = DeviceUpdate {
        customer: Some(Some(c2.clone())),
        ..Default::default()
    };
    a.t.platform.registry.update_device(&d1, &update).unwrap();
    assert!(a.ids("/api/v1/alarms", &c1_op).await.is_empty());
    let gone = a.get(&format!("/api/v1/alarms/{a1}"), &c1_op).await;
    is_error(&gone, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_document_describes_the_alarm_routes() {
    let (_, doc) = api::management().split_for_parts();
    let doc = api::openapi::finish(doc);
    for (path, methods) in [
        ("/api/v1/alarms", &["get", "post"][..]),
        ("/api/v1/alarms/{id}", &["get", "delete"]),
        ("/api/v1/alarms/{id}/ack", &["post"]),
        ("/api/v1/alarms/{id}/clear", &["post"]),
        ("/api/v1/alarms/{id}/assignee", &["put"]),
        ("/api/v1/alarms/{id}/comments", &["get", "post"]),
    ] {
        for m in methods {
            let op = &doc["paths"][path][m];
            assert!(op["security"].is_array(), "{m} {path}: {op}");
        }
    }
    let params = doc["paths"]["/api/v1/alarms"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for n in [
        "tenant", "status", "severity", "type", "device", "limit", "cursor",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let alarm = &doc["components"]["schemas"]["Alarm"]["properties"];
    for field in [
        "id",
        "type",
        "severity",
        "status",
        "acknowledged",
        "cleared",
        "originator",
        "originator_name",
        "tenant",
        "customer",
        "start_ts",
        "end_ts",
        "ack_ts",
        "clear_ts",
        "details",
        "assignee",
    ] {
        assert!(alarm.get(field).is_some(), "Alarm.{field}: {alarm}");
    }
}
