//! The authorisation matrix: every operation of the generated OpenAPI document (the route
//! table: a new route is in it by construction) × every role × a resource of the caller's own
//! tenant, another tenant, the caller's customer and another customer of the same tenant.
//! Expected: allowed → not 401/403/404 (and never 5xx); denied → 403 or 404.
//!
//! The expectation is computed here from the role order and the reach rules written out
//! independently of the implementation: an operation needs the scope it declares; changes
//! (POST/PUT/PATCH/DELETE) must not be declared `read`, except the caller's own session and
//! password; customer users reach devices (and their alarms), their customer, the dashboards
//! shared with their customer (read only) and their own session only.

use std::collections::HashMap;
use std::sync::Arc;

use api::auth::Auth;
use api::authz::{AccessTable, Rule};
use api::{router, ApiState};
use axum::body::{to_bytes, Body};
use axum::http::{Method, Request, StatusCode};
use ib_core::accounts::{Reach, Role};
use ib_core::alarms::Severity;
use ib_core::model::NewDevice;
use ib_core::rpc::RpcRequest;
use ib_core::testing::TestPlatform;
use serde_json::{json, Value};
use tower::ServiceExt;

const PW: &str = "matrix-pass-1";

/// Where a request's resource lives, relative to the caller (tenant `a`, customer `a1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    OwnTenant,
    OtherTenant,
    OwnCustomer,
    OtherCustomer,
}

const TARGETS: [Target; 4] = [
    Target::OwnTenant,
    Target::OtherTenant,
    Target::OwnCustomer,
    Target::OtherCustomer,
];

/// A principal: its role and whether it is a customer (`a1`) user.
#[derive(Debug, Clone, Copy)]
struct Who {
    name: &'static str,
    role: Role,
    customer: bool,
}

const WHO: [Who; 6] = [
    Who {
        name: "sys",
        role: Role::SysAdmin,
        customer: false,
    },
    Who {
        name: "tadmin",
        role: Role::TenantAdmin,
        customer: false,
    },
    Who {
        name: "op",
        role: Role::Operator,
        customer: false,
    },
    Who {
        name: "view",
        role: Role::Viewer,
        customer: false,
    },
    Who {
        name: "cop",
        role: Role::Operator,
        customer: true,
    },
    Who {
        name: "cview",
        role: Role::Viewer,
        customer: true,
    },
];

/// Ids of one set of resources (tenant, customer, profile, device, its RPC and alarm, user, API
/// client).
#[derive(Debug, Clone, Default)]
struct Ids {
    tenant: String,
    /// The customer the device (and user, client) are assigned to.
    customer: Option<String>,
    /// A customer resource (for `OwnTenant`: one no principal belongs to).
    customer_res: String,
    profile: String,
    device: String,
    rpc: i64,
    alarm: i64,
    rule: String,
    source: String,
    geofence: String,
    dashboard: String,
    firmware: String,
    firmware_key: String,
    campaign: String,
    user: String,
    client: String,
}

struct Fixture {
    _t: TestPlatform,
    app: axum::Router,
    tokens: HashMap<&'static str, String>,
    targets: HashMap<TargetKey, Ids>,
}

type TargetKey = u8;

fn key(t: Target) -> TargetKey {
    t as u8
}

async fn fixture() -> Fixture {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let (auth, _) = Auth::open(&p, Some("admin-pass-1"), Default::default()).unwrap();
    let auth = Arc::new(auth);
    let state = ApiState::new(p.clone(), auth.clone(), &Default::default());
    let app = router(state, 1 << 20);
    let reg = &p.registry;
    let a = reg.create_tenant("a").unwrap();
    let b = reg.create_tenant("b").unwrap();
    let a1 = reg.create_customer(&a.id, "a1").unwrap();
    let a2 = reg.create_customer(&a.id, "a2").unwrap();
    let b1 = reg.create_customer(&b.id, "b1").unwrap();
    let reach = |t: &str, c: Option<&str>| Reach {
        tenant: Some(t.to_string()),
        customer: c.map(str::to_string),
    };
    let mut tokens = HashMap::new();
    for w in WHO {
        let r = match w.role {
            Role::SysAdmin => Reach {
                tenant: None,
                customer: None,
            },
            _ => reach(&a.id, w.customer.then_some(a1.id.as_str())),
        };
        let u = p
            .accounts
            .create_user(w.name, PW, w.role, r, false)
            .unwrap();
        tokens.insert(w.name, auth.start_user_session(&u).unwrap().token);
    }
    let mut targets = HashMap::new();
    let mut n = 0;
    for (target, tenant, customer) in [
        (Target::OwnTenant, &a, None),
        (Target::OtherTenant, &b, Some(&b1)),
        (Target::OwnCustomer, &a, Some(&a1)),
        (Target::OtherCustomer, &a, Some(&a2)),
    ] {
        n += 1;
        let cust = customer.map(|c| c.id.clone());
        let profile = reg
            .create_profile(
                &tenant.id,
                ib_core::model::NewProfile {
                    name: format!("p{n}"),
                    ..Default::default()
                },
            )
            .unwrap();
        let (device, _) = reg
            .create_device(
                &tenant.id,
                NewDevice {
                    name: format!("d{n}"),
                    customer: cust.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        let rpc = p
            .rpc
            .call(
                &device.id,
                serde_json::from_value::<RpcRequest>(json!({"method": "m", "persistent": true}))
                    .unwrap(),
            )
            .await
            .unwrap();
        let (alarm, _) = p
            .alarms
            .raise(&tenant.id, &device.id, "matrix", Severity::Major, json!({}))
            .unwrap();
        // A viewer: every role that may manage users outranks it.
        let user = p
            .accounts
            .create_user(
                &format!("u{n}"),
                PW,
                Role::Viewer,
                reach(&tenant.id, cust.as_deref()),
                false,
            )
            .unwrap();
        let (client, _) = p
            .accounts
            .create_client(
                &format!("c{n}"),
                Role::Viewer,
                reach(&tenant.id, cust.as_deref()),
            )
            .unwrap();
        let rule = p
            .rules
            .create(
                reg,
                &tenant.id,
                serde_json::from_value(json!({"name": format!("r{n}"), "scope": {"tenant": true},
                    "condition": "t > 1.0", "actions": [{"type": "log"}]}))
                .unwrap(),
            )
            .unwrap();
        let lookups = &p.rules.lookups;
        let source = lookups
            .create_source(
                &tenant.id,
                serde_json::from_value(
                    json!({"name": format!("s{n}"), "url": "http://127.0.0.1:9/x", "every": "1h"}),
                )
                .unwrap(),
            )
            .unwrap();
        let geofence = lookups
            .create_geofence(
                &tenant.id,
                serde_json::from_value(json!({"name": format!("g{n}"),
                    "circle": {"lon": 1.0, "lat": 2.0, "radius_m": 10.0}}))
                .unwrap(),
            )
            .unwrap();
        let dashboard = p
            .dashboards
            .create(
                &tenant.id,
                &serde_json::from_value(json!({"name": format!("db{n}"), "widgets": []})).unwrap(),
            )
            .unwrap();
        let firmware = p
            .firmware
            .create(
                &tenant.id,
                ib_core::firmware::NewPackage {
                    title: format!("fw{n}"),
                    version: "1".into(),
                    ..Default::default()
                },
                b"image",
            )
            .unwrap();
        let firmware_key = p
            .firmware
            .add_key(&tenant.id, &format!("k{n}"), &[n as u8; 32])
            .unwrap();
        let campaign = p
            .create_campaign(
                &tenant.id,
                &ib_core::firmware::campaign::NewCampaign::new(
                    &format!("campaign{n}"),
                    &firmware.id,
                    ib_core::firmware::campaign::Target {
                        devices: Some(vec![device.id.clone()]),
                        ..Default::default()
                    },
                    Default::default(),
                ),
            )
            .unwrap();
        let customer_res = match &cust {
            Some(c) => c.clone(),
            None => reg.create_customer(&tenant.id, "a0").unwrap().id,
        };
        // Shared with the target's customer: customer users see it only on their own.
        p.dashboards.share(&dashboard.id, &customer_res).unwrap();
        targets.insert(
            key(target),
            Ids {
                tenant: tenant.id.clone(),
                customer: cust,
                customer_res,
                profile: profile.id,
                device: device.id,
                rpc: rpc.id,
                alarm: alarm.id,
                rule: rule.id,
                source: source.id,
                geofence: geofence.id,
                dashboard: dashboard.id,
                firmware: firmware.id,
                firmware_key: firmware_key.id,
                campaign: campaign.id,
                user: user.id,
                client: client.id,
            },
        );
    }
    Fixture {
        _t: t,
        app,
        tokens,
        targets,
    }
}

/// The operations and their rules, from the same generated document the server uses.
fn operations() -> (Vec<(Method, String, Rule)>, Value) {
    let (_, doc) = api::management().split_for_parts();
    let doc = api::openapi::finish(doc);
    let table = AccessTable::from_doc(&doc);
    let mut ops: Vec<_> = table
        .operations()
        .map(|(m, p, r)| (m.clone(), p.to_string(), r))
        .collect();
    ops.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    (ops, doc)
}

fn collection(path: &str) -> &str {
    path.trim_start_matches("/api/v1/")
        .split('/')
        .next()
        .unwrap_or("")
}

/// Whether the operation honours `?tenant=` (declared in the document).
fn takes_tenant_query(doc: &Value, method: &Method, path: &str) -> bool {
    doc["paths"][path][method.as_str().to_lowercase()]["parameters"]
        .as_array()
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == "tenant" && p["in"] == "query")
        })
}

/// The request for an operation against a target: URI and body.
fn request(method: &Method, path: &str, ids: &Ids, tenant_query: bool) -> (String, Option<Value>) {
    let id = match collection(path) {
        _ if !path.contains("{id}") => String::new(),
        _ if path.starts_with("/api/v1/firmware/campaigns/") => ids.campaign.clone(),
        "tenants" => ids.tenant.clone(),
        "customers" => ids.customer_res.clone(),
        "profiles" => ids.profile.clone(),
        "devices" => ids.device.clone(),
        "users" => ids.user.clone(),
        "api-clients" => ids.client.clone(),
        "alarms" => ids.alarm.to_string(),
        "rules" => ids.rule.clone(),
        "sources" => ids.source.clone(),
        "geofences" => ids.geofence.clone(),
        "dashboards" => ids.dashboard.clone(),
        "firmware" => ids.firmware.clone(),
        "firmware-keys" => ids.firmware_key.clone(),
        other => panic!("add the resource of /api/v1/{other}/{{id}} to the matrix"),
    };
    let mut uri = path
        .replace("{id}", &id)
        .replace("{scope}", "shared")
        .replace("{customer_id}", &ids.customer_res)
        .replace("{rpc}", &ids.rpc.to_string());
    let mut query = Vec::new();
    if tenant_query {
        query.push(format!("tenant={}", ids.tenant));
    }
    if method == Method::DELETE && path.ends_with("/attributes/{scope}") {
        query.push("keys=k".into());
    }
    if path == "/api/v1/rules/{id}/backtest" {
        query.push("from=0&to=1".into());
    }
    if !query.is_empty() {
        uri = format!("{uri}?{}", query.join("&"));
    }
    let tenant = json!(ids.tenant);
    let body = match (method.as_str(), path) {
        ("GET" | "DELETE", _) => None,
        ("POST", "/api/v1/tenants") => Some(json!({"name": "new-tenant"})),
        ("PUT", "/api/v1/tenants/{id}/retention") => Some(json!({"retention_days": 30})),
        ("POST", "/api/v1/customers") => Some(json!({"name": "new-customer", "tenant": tenant})),
        ("POST", "/api/v1/profiles") => Some(json!({"name": "new-profile", "tenant": tenant})),
        ("POST", "/api/v1/devices") => Some(json!({"name": "new-device", "tenant": tenant})),
        ("PATCH", "/api/v1/devices/{id}") => Some(json!({"label": "x"})),
        ("POST", "/api/v1/devices/{id}/credentials") => Some(json!({"type": "access_token"})),
        ("POST", "/api/v1/devices/{id}/attributes/{scope}") => Some(json!({"k": 1})),
        ("POST", "/api/v1/devices/{id}/rpc") => Some(json!({"method": "m", "persistent": true})),
        ("POST", "/api/v1/users") => Some(json!({"username": "new-user", "password": PW,
            "role": "viewer", "tenant": tenant, "customer": ids.customer})),
        ("PATCH", "/api/v1/users/{id}") => Some(json!({"role": "viewer"})),
        ("POST", "/api/v1/api-clients") => Some(json!({"name": "new-client", "role": "viewer",
            "tenant": tenant, "customer": ids.customer})),
        ("POST", "/api/v1/sources") => Some(json!({"tenant": tenant, "name": "new-source",
            "url": "http://127.0.0.1:9/y", "every": "1h"})),
        ("POST", "/api/v1/geofences") => Some(json!({"tenant": tenant, "name": "new-fence",
            "polygon": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]})),
        ("POST", "/api/v1/rules/backtest") => Some(json!({"tenant": tenant, "from": 0, "to": 1,
            "rule": {"name": "bt", "scope": {"tenant": true}, "condition": "t > 2.0",
            "actions": [{"type": "log"}]}})),
        ("POST", "/api/v1/rules/{id}/backtest") => None,
        ("POST", "/api/v1/rules") => Some(json!({"name": "new-rule", "tenant": tenant,
            "scope": {"tenant": true}, "condition": "t > 2.0", "actions": [{"type": "log"}]})),
        ("PUT", "/api/v1/rules/{id}") => Some(json!({"name": "renamed", "scope": {"tenant": true},
            "condition": "t > 3.0", "actions": [{"type": "log"}]})),
        ("POST", "/api/v1/dashboards") => Some(json!({"name": "new-dashboard", "widgets": [
            {"type": "alarms", "x": 0, "y": 0, "w": 12, "h": 4}]})),
        ("PUT", "/api/v1/dashboards/{id}") => Some(json!({"name": "renamed-dashboard"})),
        ("POST", "/api/v1/dashboards/{id}/customers/{customer_id}") => None,
        // JSON, not a form: a 400 once access is granted.
        ("POST", "/api/v1/firmware") => Some(json!({})),
        ("POST", "/api/v1/firmware-keys") => Some(json!({"tenant": tenant, "name": "new-key",
            "public_key": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="})),
        ("POST", "/api/v1/devices/{id}/firmware" | "/api/v1/profiles/{id}/firmware") => {
            Some(json!({"firmware_id": ids.firmware}))
        }
        ("POST", "/api/v1/firmware/campaigns") => Some(json!({"tenant": tenant,
            "name": "new-campaign", "firmware_id": ids.firmware,
            "target": {"devices": [ids.device]}})),
        // A transition the state does not allow is a 409, which still shows access.
        (
            "POST",
            "/api/v1/firmware/campaigns/{id}/pause"
            | "/api/v1/firmware/campaigns/{id}/resume"
            | "/api/v1/firmware/campaigns/{id}/cancel",
        ) => None,
        ("POST", "/api/v1/alarms") => {
            Some(json!({"device": ids.device, "type": "matrix", "severity": "CRITICAL"}))
        }
        ("POST", "/api/v1/alarms/{id}/ack" | "/api/v1/alarms/{id}/clear") => None,
        // The target's viewer: in the alarm's tenant (and its device's customer).
        ("PUT", "/api/v1/alarms/{id}/assignee") => Some(json!({"user": ids.user})),
        ("POST", "/api/v1/alarms/{id}/comments") => Some(json!({"text": "seen"})),
        ("POST", "/api/v1/auth/logout") => None,
        ("POST", "/api/v1/auth/password") => {
            Some(json!({"current_password": PW, "new_password": "another-pass-2"}))
        }
        (m, p) => panic!("add a request body for {m} {p} to the matrix"),
    };
    (uri, body)
}

/// The independent statement of who may do what.
fn expected(who: Who, method: &Method, path: &str, need: Role, target: Target, ids: &Ids) -> bool {
    let coll = collection(path);
    if who.role < need {
        return false;
    }
    if who.customer && coll == "dashboards" {
        // The dashboards shared with their customer, read only.
        let shared = ids.customer.is_some() && target == Target::OwnCustomer;
        return method == Method::GET && (!path.contains("{id}") || shared);
    }
    if who.customer && !["devices", "customers", "auth", "alarms"].contains(&coll) {
        return false;
    }
    if coll == "auth" {
        return true; // the caller's own session
    }
    let has_id = path.contains("{id}");
    if who.role == Role::SysAdmin {
        return true;
    }
    if target == Target::OtherTenant {
        // Without an id, only operations that take a tenant parameter can name another tenant.
        return !has_id && !names_tenant(method, path);
    }
    if !who.customer {
        return true;
    }
    // Customer users: their customer's devices (and their alarms) and the customer itself.
    if !has_id {
        return true;
    }
    ids.customer.is_some() && target == Target::OwnCustomer
}

/// Operations without `{id}` that name a tenant (query or body).
fn names_tenant(method: &Method, path: &str) -> bool {
    !matches!(
        (method.as_str(), path),
        ("GET", "/api/v1/tenants") | ("POST", "/api/v1/tenants")
    )
}

async fn send(
    app: &axum::Router,
    method: &Method,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> StatusCode {
    let req = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let _ = to_bytes(res.into_body(), 1 << 20).await;
    status
}

#[tokio::test]
async fn every_operation_role_and_reach() {
    let (ops, doc) = operations();
    assert!(
        ops.len() >= 40,
        "the document lists {} operations",
        ops.len()
    );
    let mut fx = fixture().await;
    let mut failures = Vec::new();
    let (mut checked, mut allowed, mut rebuilt) = (0, 0, 0);
    for (method, path, rule) in &ops {
        let Rule::AtLeast(need) = *rule else { continue };
        if method != Method::GET && need == Role::Viewer && collection(path) != "auth" {
            failures.push(format!(
                "{method} {path} changes something but needs only `read`"
            ));
        }
        for who in WHO {
            for target in TARGETS {
                let has_id = path.contains("{id}");
                // Without an id, the customer targets say nothing new.
                if !has_id && matches!(target, Target::OwnCustomer | Target::OtherCustomer) {
                    continue;
                }
                let ids = fx.targets[&key(target)].clone();
                let tq = takes_tenant_query(&doc, method, path) && target == Target::OtherTenant;
                let (uri, body) = request(method, path, &ids, tq);
                let allow = expected(who, method, path, need, target, &ids);
                let status = send(&fx.app, method, &uri, &fx.tokens[who.name], body).await;
                checked += 1;
                allowed += usize::from(allow);
                let ok = if allow {
                    !matches!(status.as_u16(), 401 | 403 | 404) && !status.is_server_error()
                } else {
                    matches!(status.as_u16(), 403 | 404)
                };
                if !ok {
                    failures.push(format!(
                        "{method} {uri} as {} on {target:?}: {status}, expected {}",
                        who.name,
                        if allow { "allowed" } else { "denied" }
                    ));
                }
                // A deletion or a session change alters the fixture: start again from fresh.
                // (Repeated creations answer 409, which still shows the access was granted.)
                let alters = method == Method::DELETE || collection(path) == "auth";
                if method != Method::GET && alters && status.is_success() {
                    fx = fixture().await;
                    rebuilt += 1;
                }
            }
        }
    }
    eprintln!("{checked} cases, {allowed} allowed, fixture rebuilt {rebuilt} times");
    assert!(
        allowed > 100 && checked - allowed > 100,
        "{checked} cases, {allowed} allowed"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
