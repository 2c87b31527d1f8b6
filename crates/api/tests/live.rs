//! The live WebSocket (`/api/v1/ws`) over a real listener with a tokio-tungstenite client:
//! authentication, subscriptions (device events and alarms), tenant and customer isolation, the
//! slow-client drop notice, re-verification of the token, pings.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use api::auth::{Auth, TokenConfig};
use api::live::LiveConfig;
use api::login::LoginLimits;
use api::{router, ApiState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::{Extension, Router};
use futures_util::{SinkExt, StreamExt};
use ib_core::accounts::{Reach, Role};
use ib_core::alarms::Severity;
use ib_core::bus::{Event, EventKind};
use ib_core::model::NewDevice;
use ib_core::payload::Point;
use ib_core::testing::TestPlatform;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower::ServiceExt;

type Ws = WebSocketStream<TcpStream>;

/// The longest any single expected message may take.
const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    t: TestPlatform,
    state: ApiState,
    app: Router,
    addr: SocketAddr,
}

/// A platform and its API served on a loopback port; `small_buffers` makes the server's
/// socket send buffers tiny (a client that stops reading blocks the writer at once).
async fn start(config: LiveConfig, small_buffers: bool) -> Fixture {
    let t = TestPlatform::new();
    let (auth, _) = Auth::open(&t.platform, Some("Adm1n-pass!"), TokenConfig::default()).unwrap();
    let state = ApiState::new(t.platform.clone(), Arc::new(auth), &LoginLimits::default());
    let app = router(state.clone(), 1 << 20).layer(Extension(config));
    let socket = TcpSocket::new_v4().unwrap();
    if small_buffers {
        socket.set_send_buffer_size(4096).unwrap();
    }
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let addr = listener.local_addr().unwrap();
    let served = app.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, served).await;
    });
    Fixture {
        t,
        state,
        app,
        addr,
    }
}

impl Fixture {
    fn tenant(&self, name: &str) -> String {
        self.t.platform.registry.create_tenant(name).unwrap().id
    }

    fn customer(&self, tenant: &str, name: &str) -> String {
        let registry = &self.t.platform.registry;
        registry.create_customer(tenant, name).unwrap().id
    }

    /// A device's id and access token.
    fn device(&self, tenant: &str, name: &str, customer: Option<&str>) -> (String, String) {
        let new = NewDevice {
            name: name.into(),
            customer: customer.map(str::to_string),
            ..NewDevice::default()
        };
        let (d, token) = self.t.platform.registry.create_device(tenant, new).unwrap();
        (d.id, token)
    }

    /// A user's access token.
    fn user(&self, name: &str, role: Role, tenant: &str, customer: Option<&str>) -> String {
        let reach = Reach {
            tenant: Some(tenant.to_string()),
            customer: customer.map(str::to_string),
        };
        let accounts = &self.t.platform.accounts;
        let user = accounts
            .create_user(name, "Str0ng-secret!", role, reach, false)
            .unwrap();
        self.state.auth.start_user_session(&user).unwrap().token
    }

    /// Telemetry through the HTTP device API (stored, then published on the bus).
    async fn post_telemetry(&self, device_token: &str, body: Value) {
        let req = Request::post(format!("/api/v1/{device_token}/telemetry"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    fn publish(&self, tenant: &str, device: &str, kind: EventKind) {
        self.t.platform.bus.publish(Event {
            tenant: tenant.into(),
            device: device.into(),
            ts: ib_core::db::now_ms(),
            kind,
        });
    }

    fn status(&self, tenant: &str, device: &str, active: bool) {
        let transport = "mqtt";
        let kind = match active {
            true => EventKind::Connected { transport },
            false => EventKind::Disconnected { transport },
        };
        self.publish(tenant, device, kind);
    }

    /// A client; `query` like `?token=..`, `bearer` for the header.
    async fn connect(&self, query: &str, bearer: Option<&str>) -> Ws {
        connect(self.addr, query, bearer, false).await
    }
}

async fn connect(addr: SocketAddr, query: &str, bearer: Option<&str>, small: bool) -> Ws {
    let mut req = format!("ws://{addr}/api/v1/ws{query}")
        .into_client_request()
        .unwrap();
    if let Some(t) = bearer {
        let value = format!("Bearer {t}").parse().unwrap();
        req.headers_mut().insert("authorization", value);
    }
    let socket = TcpSocket::new_v4().unwrap();
    if small {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, stream)
        .await
        .unwrap()
        .0
}

/// The next JSON message (pings are skipped; the client answers them while reading).
async fn recv(ws: &mut Ws) -> Value {
    let next = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    };
    timeout(WAIT, next).await.expect("no message in time")
}

/// Reads until the close frame and returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    let next = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Text(t))) => panic!("expected the close frame, got {t}"),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    timeout(WAIT, next).await.expect("no close frame in time")
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Sends a command and returns its reply.
async fn ask(ws: &mut Ws, v: Value) -> Value {
    send(ws, v).await;
    recv(ws).await
}

/// Subscribes and returns the subscription number.
async fn subscribe(ws: &mut Ws, v: Value) -> u64 {
    let reply = ask(ws, v).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply["subscription"].as_u64().unwrap()
}

/// Expects the `unauthorized` error and the 4401 close.
async fn refused(ws: &mut Ws) {
    let e = recv(ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert_eq!(close_code(ws).await, 4401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_its_tenants_devices_and_nothing_else() {
    let f = start(LiveConfig::default(), false).await;
    let (a, b) = (f.tenant("tenant-a"), f.tenant("tenant-b"));
    let (da, da_token) = f.device(&a, "pump-a", None);
    let (db, db_token) = f.device(&b, "pump-b", None);
    let viewer = f.user("viewer-a", Role::Viewer, &a, None);
    let mut ws = f.connect(&format!("?token={viewer}"), None).await;
    let ready = recv(&mut ws).await;
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["role"], "viewer");

    let reply = ask(
        &mut ws,
        json!({"subscribe": "telemetry", "device": da, "keys": ["t"], "id": "s1"}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["id"], "s1");
    let telemetry = reply["subscription"].as_u64().unwrap();
    f.post_telemetry(&da_token, json!({"t": 21.5, "h": 40}))
        .await;
    let u = recv(&mut ws).await;
    assert_eq!(u["type"], "telemetry", "{u}");
    assert_eq!(u["subscription"], telemetry);
    assert_eq!(u["device"], da.as_str());
    assert_eq!(u["data"]["t"][0]["value"], 21.5);
    assert!(u["data"]["t"][0]["ts"].is_i64());
    assert!(u["data"].get("h").is_none(), "only the keys asked for: {u}");

    // Another tenant's device and a device that does not exist: the same answer.
    for id in [db.as_str(), "no-such-device"] {
        let e = ask(
            &mut ws,
            json!({"subscribe": "telemetry", "device": id, "id": 7}),
        )
        .await;
        let expected = json!({"type": "error", "id": 7, "code": "not_found",
            "message": format!("device {id:?} not found")});
        assert_eq!(e, expected);
        let e = ask(&mut ws, json!({"subscribe": "status", "device": id})).await;
        assert_eq!(e["code"], "not_found");
    }

    // A status subscription without a device: the tenant's devices only. B's events go
    // first; had they passed the filter they would arrive before A's.
    let status = subscribe(&mut ws, json!({"subscribe": "status"})).await;
    f.status(&b, &db, true);
    f.post_telemetry(&db_token, json!({"t": 99})).await;
    f.status(&a, &da, true);
    let u = recv(&mut ws).await;
    assert_eq!(
        (&u["type"], &u["subscription"], &u["device"], &u["active"]),
        (&json!("status"), &json!(status), &json!(da), &json!(true)),
        "{u}"
    );
    assert_eq!(u["transport"], "mqtt");

    // Unsubscribed: A's telemetry no longer comes, its status still does.
    let u = ask(&mut ws, json!({"unsubscribe": telemetry, "id": 8})).await;
    assert_eq!(
        u,
        json!({"type": "unsubscribed", "subscription": telemetry, "id": 8})
    );
    f.post_telemetry(&da_token, json!({"t": 22})).await;
    f.status(&a, &da, false);
    let u = recv(&mut ws).await;
    assert_eq!(
        (&u["type"], &u["active"]),
        (&json!("status"), &json!(false)),
        "{u}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_user_sees_only_its_customers_devices() {
    let f = start(LiveConfig::default(), false).await;
    let a = f.tenant("tenant-a");
    let (c1, c2) = (f.customer(&a, "acme"), f.customer(&a, "globex"));
    let (d1, d1_token) = f.device(&a, "acme-pump", Some(&c1));
    let (d2, d2_token) = f.device(&a, "globex-pump", Some(&c2));
    let (d3, _) = f.device(&a, "unassigned-pump", None);
    let user = f.user("acme-viewer", Role::Viewer, &a, Some(&c1));
    // The header works as well as the query.
    let mut ws = f.connect("", Some(&user)).await;
    assert_eq!(recv(&mut ws).await["type"], "ready");
    for other in [&d2, &d3] {
        let e = ask(&mut ws, json!({"subscribe": "attributes", "device": other})).await;
        assert_eq!(e["code"], "not_found", "{e}");
        assert_eq!(e["message"], format!("device {other:?} not found"));
    }
    let telemetry = subscribe(&mut ws, json!({"subscribe": "telemetry", "device": d1})).await;
    let status = subscribe(&mut ws, json!({"subscribe": "status"})).await;
    f.status(&a, &d2, false);
    f.status(&a, &d3, false);
    f.post_telemetry(&d2_token, json!({"t": 1})).await;
    f.status(&a, &d1, false);
    let u = recv(&mut ws).await;
    assert_eq!(
        (&u["type"], &u["subscription"], &u["device"]),
        (&json!("status"), &json!(status), &json!(d1)),
        "{u}"
    );
    // Telemetry over HTTP also brings the device online (a status update over "http").
    f.post_telemetry(&d1_token, json!({"t": 2, "h": 3})).await;
    let u = loop {
        let u = recv(&mut ws).await;
        match u["type"].as_str() {
            Some("status") => assert_eq!(u["device"], d1.as_str(), "{u}"),
            _ => break u,
        }
    };
    assert_eq!(u["subscription"], telemetry, "{u}");
    assert_eq!(u["data"]["h"][0]["value"], 3, "no keys: every key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_reach_only_those_who_may_see_them() {
    let f = start(LiveConfig::default(), false).await;
    let (a, b) = (f.tenant("tenant-a"), f.tenant("tenant-b"));
    let acme = f.customer(&a, "acme");
    let (da, _) = f.device(&a, "pump-a", None);
    let (dc, _) = f.device(&a, "acme-pump", Some(&acme));
    let (db, _) = f.device(&b, "pump-b", None);
    let viewer = f.user("viewer-a", Role::Viewer, &a, None);
    let customer = f.user("acme-viewer", Role::Viewer, &a, Some(&acme));
    let mut ws = f.connect(&format!("?token={viewer}"), None).await;
    assert_eq!(recv(&mut ws).await["type"], "ready");
    let mut cws = f.connect(&format!("?token={customer}"), None).await;
    assert_eq!(recv(&mut cws).await["type"], "ready");
    // Another tenant's device, or another customer's, does not exist.
    let e = ask(&mut ws, json!({"subscribe": "alarms", "device": db})).await;
    assert_eq!(e["code"], "not_found", "{e}");
    let e = ask(&mut cws, json!({"subscribe": "alarms", "device": da})).await;
    assert_eq!(e["code"], "not_found", "{e}");
    let all = subscribe(&mut ws, json!({"subscribe": "alarms"})).await;
    let one = subscribe(&mut ws, json!({"subscribe": "alarms", "device": dc})).await;
    let mine = subscribe(&mut cws, json!({"subscribe": "alarms"})).await;

    // Raised through the service, as the rule engine does. B's alarm goes first: had it
    // passed the filter it would arrive before A's.
    let alarms = &f.t.platform.alarms;
    let raise = |tenant: &str, device: &str, severity| {
        let details = json!({"t": 41});
        alarms
            .raise(tenant, device, "Overheat", severity, details)
            .unwrap()
            .0
    };
    raise(&b, &db, Severity::Critical);
    let alarm = raise(&a, &da, Severity::Major);
    let u = recv(&mut ws).await;
    let expected = json!({"type": "alarm", "subscription": all, "alarm": alarm});
    assert_eq!(u, expected);
    assert_eq!(u["alarm"]["status"], "ACTIVE_UNACK");
    assert_eq!(u["alarm"]["originator"], da.as_str());

    // The customer's device: both of the viewer's subscriptions and the customer user's one
    // (which skipped the unassigned device's alarm).
    let alarm = raise(&a, &dc, Severity::Critical);
    let acked = alarms.ack(alarm.id, "viewer-a").unwrap();
    for (n, a) in [(all, &alarm), (one, &alarm), (all, &acked), (one, &acked)] {
        let u = recv(&mut ws).await;
        assert_eq!(u, json!({"type": "alarm", "subscription": n, "alarm": a}));
    }
    for a in [&alarm, &acked] {
        let u = recv(&mut cws).await;
        assert_eq!(
            u,
            json!({"type": "alarm", "subscription": mine, "alarm": a})
        );
    }
    assert_eq!(acked.status, ib_core::alarms::AlarmStatus::ActiveAck);
    // A cleared alarm is an update too.
    alarms.clear(&dc, "Overheat", None).unwrap();
    let u = recv(&mut cws).await;
    assert_eq!(u["alarm"]["status"], "CLEARED_ACK", "{u}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_tokens_are_refused() {
    let config = LiveConfig {
        auth_timeout: Duration::from_millis(200),
        ..LiveConfig::default()
    };
    let f = start(config, false).await;
    let a = f.tenant("tenant-a");
    let viewer = f.user("viewer-a", Role::Viewer, &a, None);
    let mut tampered = viewer.clone();
    tampered.pop();
    tampered.push(if viewer.ends_with('A') { 'B' } else { 'A' });

    refused(&mut f.connect(&format!("?token={tampered}"), None).await).await;
    refused(&mut f.connect("", Some("not-a-jwt")).await).await;
    // Token as the first message: a bad one, something else first, nothing at all.
    let mut ws = f.connect("", None).await;
    send(&mut ws, json!({"auth": tampered})).await;
    refused(&mut ws).await;
    let mut ws = f.connect("", None).await;
    send(&mut ws, json!({"subscribe": "status"})).await;
    refused(&mut ws).await;
    refused(&mut f.connect("", None).await).await;
    // A good one, with its id echoed.
    let mut ws = f.connect("", None).await;
    let ready = ask(&mut ws, json!({"auth": viewer, "id": 1})).await;
    assert_eq!(
        ready,
        json!({"type": "ready", "role": "viewer", "name": "viewer-a", "id": 1})
    );
    // A revoked session's token is refused at once.
    let sid = f.state.auth.verify(&viewer).unwrap().sid;
    f.state.auth.revoke(&sid).unwrap();
    refused(&mut f.connect(&format!("?token={viewer}"), None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_closed_at_the_next_check() {
    let config = LiveConfig {
        reverify_interval: Duration::from_millis(100),
        ..LiveConfig::default()
    };
    let f = start(config, false).await;
    let a = f.tenant("tenant-a");
    let (da, _) = f.device(&a, "pump-a", None);
    let viewer = f.user("viewer-a", Role::Viewer, &a, None);
    let mut ws = f.connect(&format!("?token={viewer}"), None).await;
    assert_eq!(recv(&mut ws).await["type"], "ready");
    subscribe(&mut ws, json!({"subscribe": "status", "device": da})).await;
    let sid = f.state.auth.verify(&viewer).unwrap().sid;
    f.state.auth.revoke(&sid).unwrap();
    refused(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_get_errors_and_the_connection_stays() {
    let config = LiveConfig {
        max_subscriptions: 2,
        ..LiveConfig::default()
    };
    let f = start(config, false).await;
    let a = f.tenant("tenant-a");
    let (da, _) = f.device(&a, "pump-a", None);
    let viewer = f.user("viewer-a", Role::Viewer, &a, None);
    let other = f.user("viewer-b", Role::Viewer, &a, None);
    let mut ws = f.connect(&format!("?token={viewer}"), None).await;
    assert_eq!(recv(&mut ws).await["type"], "ready");

    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "invalid");
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "invalid");
    for bad in [
        json!([1, 2]),
        json!({"hello": 1, "id": "x"}),
        json!({"subscribe": "rules"}),
        json!({"subscribe": "alarms", "device": 5}),
        json!({"subscribe": "alarms", "keys": ["t"]}),
        json!({"subscribe": "telemetry"}),
        json!({"subscribe": "telemetry", "device": 5}),
        json!({"subscribe": "telemetry", "device": da, "keys": []}),
        json!({"subscribe": "telemetry", "device": da, "keys": [1]}),
        json!({"subscribe": "status", "keys": ["t"]}),
        json!({"unsubscribe": "one"}),
        json!({"auth": other}),
    ] {
        let e = ask(&mut ws, bad.clone()).await;
        assert_eq!(
            (&e["type"], &e["code"]),
            (&json!("error"), &json!("invalid")),
            "{bad}: {e}"
        );
        assert_eq!(e.get("id"), bad.get("id"), "{bad}: {e}");
    }
    let e = ask(&mut ws, json!({"unsubscribe": 42})).await;
    assert_eq!(e["code"], "not_found");
    let first = subscribe(&mut ws, json!({"subscribe": "status"})).await;
    subscribe(&mut ws, json!({"subscribe": "attributes", "device": da})).await;
    let e = ask(&mut ws, json!({"subscribe": "status", "device": da})).await;
    assert_eq!(e["code"], "limit_exceeded");
    ask(&mut ws, json!({"unsubscribe": first})).await;
    subscribe(&mut ws, json!({"subscribe": "status", "device": da})).await;
    // A fresh token of the same user is taken over.
    let user = f.t.platform.accounts.user("viewer-a").unwrap();
    let fresh = f.state.auth.start_user_session(&user).unwrap().token;
    assert_eq!(ask(&mut ws, json!({"auth": fresh})).await["type"], "ready");
    // Still working: an attribute update arrives.
    let mut attrs = serde_json::Map::new();
    attrs.insert("fw".into(), json!("1.2"));
    f.publish(&a, &da, EventKind::Attributes(attrs));
    let u = recv(&mut ws).await;
    assert_eq!(
        (&u["type"], &u["data"]["fw"]),
        (&json!("attributes"), &json!("1.2")),
        "{u}"
    );
}

fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

fn dropped_total(handle: &PrometheusHandle) -> u64 {
    let text = handle.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("api_ws_dropped_total "));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_loses_the_oldest_updates_and_is_told_how_many() {
    let metrics = prometheus();
    let config = LiveConfig {
        queue: 4,
        ..LiveConfig::default()
    };
    let f = start(config, true).await;
    let a = f.tenant("tenant-a");
    let (da, _) = f.device(&a, "pump-a", None);
    let viewer = f.user("viewer-a", Role::Viewer, &a, None);
    let mut ws = connect(f.addr, &format!("?token={viewer}"), None, true).await;
    assert_eq!(recv(&mut ws).await["type"], "ready");
    subscribe(&mut ws, json!({"subscribe": "telemetry", "device": da})).await;

    // The client stops reading; far more than the socket buffers hold is published.
    let before = dropped_total(metrics);
    const N: i64 = 200;
    let pad = json!("x".repeat(16 << 10));
    for i in 0..N {
        let points = vec![
            Point {
                key: "i".into(),
                ts: i,
                value: json!(i),
            },
            Point {
                key: "pad".into(),
                ts: i,
                value: pad.clone(),
            },
        ];
        f.publish(&a, &da, EventKind::Telemetry(points));
    }
    let overflowed = async {
        while dropped_total(metrics) == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(WAIT, overflowed)
        .await
        .expect("the queue never overflowed");

    // Catching up: every gap is announced just before it, and nothing is lost unannounced.
    let (mut last, mut announced, mut notices, mut delivered, mut total) = (-1, 0, 0, 0, 0);
    while last < N - 1 {
        let u = recv(&mut ws).await;
        match u["type"].as_str() {
            Some("dropped") => {
                let count = u["count"].as_i64().unwrap();
                assert!(count > 0, "{u}");
                announced += count;
                total += count;
                notices += 1;
            }
            Some("telemetry") => {
                let i = u["data"]["i"][0]["value"].as_i64().unwrap();
                assert_eq!(i - last - 1, announced, "gap before update {i}");
                (last, announced, delivered) = (i, 0, delivered + 1);
            }
            _ => panic!("unexpected {u}"),
        }
    }
    assert!(notices > 0 && total > 0);
    assert_eq!(delivered + total, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_a_reading_client_connected() {
    let config = LiveConfig {
        ping_interval: Duration::from_millis(50),
        ..LiveConfig::default()
    };
    let f = start(config, false).await;
    let a = f.tenant("tenant-a");
    let viewer = f.user("viewer-a", Role::Viewer, &a, None);
    let mut ws = f.connect(&format!("?token={viewer}"), None).await;
    assert_eq!(recv(&mut ws).await["type"], "ready");
    // Five pings span more than two intervals; the client answers each while reading.
    let pings = async {
        let mut n = 0;
        while n < 5 {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => n += 1,
                other => panic!("expected a ping, got {other:?}"),
            }
        }
    };
    timeout(WAIT, pings).await.expect("no pings");
    let e = ask(&mut ws, json!({"unsubscribe": 1})).await;
    assert_eq!(e["code"], "not_found", "still open: {e}");
}
