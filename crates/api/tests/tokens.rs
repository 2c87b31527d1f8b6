//! Tokens and accounts through the router in process: tampering, expiry, refresh rotation and
//! reuse detection, logout and revoked sessions, failed-login lockout and its release, OAuth
//! client credentials and scopes, role escalation, password policy, and the audit trail.

use std::sync::Arc;
use std::time::Duration;

use api::auth::{Auth, TokenConfig};
use api::login::LoginLimits;
use api::{router, ApiState, ClientAddr};
use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use base64::Engine;
use ib_core::testing::TestPlatform;
use serde_json::{json, Value};
use tower::ServiceExt;

const ADMIN_PW: &str = "admin-pass-1";

struct App {
    app: axum::Router,
    _t: TestPlatform,
}

fn app_with(tokens: TokenConfig, login: LoginLimits) -> App {
    let t = TestPlatform::new();
    let (auth, _) = Auth::open(&t.platform, Some(ADMIN_PW), tokens).unwrap();
    let state = ApiState::new(t.platform.clone(), Arc::new(auth), &login);
    App {
        app: router(state, 1 << 20),
        _t: t,
    }
}

fn app() -> App {
    app_with(TokenConfig::default(), LoginLimits::default())
}

struct Req<'a> {
    method: &'a str,
    uri: &'a str,
    bearer: Option<&'a str>,
    json: Option<Value>,
    form: Option<&'a str>,
    basic: Option<&'a str>,
    source: Option<[u8; 4]>,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, uri: &'a str) -> Req<'a> {
        Req {
            method,
            uri,
            bearer: None,
            json: None,
            form: None,
            basic: None,
            source: None,
        }
    }
    fn bearer(mut self, t: &'a str) -> Self {
        self.bearer = Some(t);
        self
    }
    fn json(mut self, v: Value) -> Self {
        self.json = Some(v);
        self
    }
}

impl App {
    async fn send(&self, r: Req<'_>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let mut b = Request::builder().method(r.method).uri(r.uri);
        if let Some(t) = r.bearer {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if let Some(basic) = r.basic {
            let enc = base64::engine::general_purpose::STANDARD.encode(basic);
            b = b.header("authorization", format!("Basic {enc}"));
        }
        let body = if let Some(f) = r.form {
            b = b.header("content-type", "application/x-www-form-urlencoded");
            Body::from(f.to_string())
        } else if let Some(j) = r.json {
            b = b.header("content-type", "application/json");
            Body::from(j.to_string())
        } else {
            Body::empty()
        };
        let mut req = b.body(body).unwrap();
        if let Some(ip) = r.source {
            req.extensions_mut().insert(ClientAddr(ip.into()));
        }
        let res = self.app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn login(&self, user: &str, pw: &str) -> (StatusCode, Value) {
        let (s, v, _) = self
            .send(
                Req::new("POST", "/api/v1/auth/login")
                    .json(json!({"username": user, "password": pw})),
            )
            .await;
        (s, v)
    }

    async fn token(&self, user: &str, pw: &str) -> (String, String) {
        let (s, v) = self.login(user, pw).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (
            v["token"].as_str().unwrap().to_string(),
            v["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    async fn status(&self, method: &str, uri: &str, token: &str) -> StatusCode {
        self.send(Req::new(method, uri).bearer(token)).await.0
    }
}

#[tokio::test]
async fn tampered_foreign_and_unsigned_tokens_are_refused() {
    let a = app();
    let (token, _) = a.token("admin", ADMIN_PW).await;
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &token).await,
        StatusCode::OK
    );
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    // A viewer's claims re-signed with nothing: escalation by editing the payload.
    claims["role"] = json!("sys_admin");
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &edited).await,
        StatusCode::UNAUTHORIZED
    );
    let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &unsigned).await,
        StatusCode::UNAUTHORIZED
    );
    // Same claims, signed by another installation.
    let other = app();
    let (foreign, _) = other.token("admin", ADMIN_PW).await;
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &foreign).await,
        StatusCode::UNAUTHORIZED
    );
    let (s, v, _) = a
        .send(Req::new("GET", "/api/v1/devices").bearer("garbage"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn access_tokens_expire() {
    let a = app_with(
        TokenConfig {
            access_ttl_s: 1,
            refresh_ttl_s: 60,
        },
        LoginLimits::default(),
    );
    let (token, refresh) = a.token("admin", ADMIN_PW).await;
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &token).await,
        StatusCode::OK
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if a.status("GET", "/api/v1/auth/me", &token).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refresh token outlives it.
    let (s, v, _) = a
        .send(Req::new("POST", "/api/v1/auth/refresh").json(json!({"refresh_token": refresh})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let a = app();
    let (token, r1) = a.token("admin", ADMIN_PW).await;
    let refresh =
        |r: String| Req::new("POST", "/api/v1/auth/refresh").json(json!({"refresh_token": r}));
    let (s, v, _) = a.send(refresh(r1.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (t2, r2) = (
        v["token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_ne!(r1, r2);
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &t2).await,
        StatusCode::OK
    );
    // r1 again: stolen or replayed. The whole session goes, including the newest tokens.
    let (s, v, _) = a.send(refresh(r1)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{v}"
    );
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &t2).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(a.send(refresh(r2)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        a.send(refresh("ibr_unknown".into())).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Another login is a new session and works.
    let (t3, _) = a.token("admin", ADMIN_PW).await;
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &t3).await,
        StatusCode::OK
    );
    // The reuse is in the audit log.
    let (_, v, _) = a
        .send(Req::new("GET", "/api/v1/audit?action=refresh_reuse").bearer(&t3))
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn logout_and_password_change_revoke_sessions() {
    let a = app();
    let (t1, r1) = a.token("admin", ADMIN_PW).await;
    let (t2, _) = a.token("admin", ADMIN_PW).await;
    assert_eq!(
        a.status("POST", "/api/v1/auth/logout", &t1).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &t1).await,
        StatusCode::UNAUTHORIZED
    );
    let (s, _, _) = a
        .send(Req::new("POST", "/api/v1/auth/refresh").json(json!({"refresh_token": r1})))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The other session is untouched until the password changes.
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &t2).await,
        StatusCode::OK
    );
    let change = |cur: &str, new: &str| {
        Req::new("POST", "/api/v1/auth/password")
            .json(json!({"current_password": cur, "new_password": new}))
    };
    assert_eq!(
        a.send(change("wrong-pass-9", "new-pass-22").bearer(&t2))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (s, v, _) = a.send(change(ADMIN_PW, "short").bearer(&t2)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("at least"),
        "{v}"
    );
    assert_eq!(
        a.send(change(ADMIN_PW, "new-pass-22").bearer(&t2)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        a.status("GET", "/api/v1/auth/me", &t2).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(a.login("admin", ADMIN_PW).await.0, StatusCode::UNAUTHORIZED);
    a.token("admin", "new-pass-22").await;
}

#[tokio::test]
async fn failed_logins_lock_the_account_then_release() {
    let a = app_with(
        TokenConfig::default(),
        LoginLimits {
            account_failures: 3,
            source_failures: 100,
            lockout: Duration::from_secs(1),
        },
    );
    for _ in 0..3 {
        assert_eq!(
            a.login("admin", "wrong-pass-1").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked: even the right password is refused, with Retry-After.
    let (s, v, h) = a
        .send(
            Req::new("POST", "/api/v1/auth/login")
                .json(json!({"username": "admin", "password": ADMIN_PW})),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "too_many_attempts");
    assert!(h.get("retry-after").is_some());
    // Another account is not affected.
    assert_eq!(
        a.login("nobody", "whatever-1").await.0,
        StatusCode::UNAUTHORIZED
    );
    // Released after the lockout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _) = a.login("admin", ADMIN_PW).await;
        if s == StatusCode::OK {
            break;
        }
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lockout never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (token, _) = a.token("admin", ADMIN_PW).await;
    let (_, v, _) = a
        .send(Req::new("GET", "/api/v1/audit?action=login").bearer(&token))
        .await;
    let actions: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"login_failed")
            && actions.contains(&"login_locked")
            && actions.contains(&"login"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn failed_logins_lock_the_source_address() {
    let a = app_with(
        TokenConfig::default(),
        LoginLimits {
            account_failures: 100,
            source_failures: 3,
            lockout: Duration::from_secs(60),
        },
    );
    let from = |user: &'static str, ip: [u8; 4]| {
        let mut r = Req::new("POST", "/api/v1/auth/login")
            .json(json!({"username": user, "password": "wrong-pass-1"}));
        r.source = Some(ip);
        r
    };
    // A password sprayer trying different accounts from one address.
    for user in ["u1", "u2", "u3"] {
        assert_eq!(
            a.send(from(user, [10, 0, 0, 1])).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        a.send(from("admin", [10, 0, 0, 1])).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        a.send(from("admin", [10, 0, 0, 2])).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn oauth_client_credentials_and_scopes() {
    let a = app();
    let (admin, _) = a.token("admin", ADMIN_PW).await;
    let (s, v, _) = a
        .send(
            Req::new("POST", "/api/v1/api-clients")
                .bearer(&admin)
                .json(json!({"name": "etl", "role": "tenant_admin", "tenant": "default"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (id, cid, secret) = (
        v["id"].as_str().unwrap().to_string(),
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap().to_string(),
    );
    let (_, listed, _) = a
        .send(Req::new("GET", "/api/v1/api-clients").bearer(&admin))
        .await;
    assert!(
        !listed.to_string().contains(&secret),
        "secrets are shown once"
    );
    let token_req = |form: String| {
        let mut r = Req::new("POST", "/api/v1/oauth/token");
        r.form = Some(Box::leak(form.into_boxed_str()));
        r
    };
    // Form fields.
    let (s, v, h) = a
        .send(token_req(format!(
            "grant_type=client_credentials&client_id={cid}&client_secret={secret}"
        )))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(h["cache-control"], "no-store");
    let full = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        a.send(
            Req::new("POST", "/api/v1/devices")
                .bearer(&full)
                .json(json!({"name": "x1"}))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    // HTTP Basic, narrowed to read.
    let mut r = token_req("grant_type=client_credentials&scope=read".into());
    let basic = format!("{cid}:{secret}");
    r.basic = Some(&basic);
    let (s, v, _) = a.send(r).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["scope"], "read");
    let read = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        a.status("GET", "/api/v1/devices", &read).await,
        StatusCode::OK
    );
    assert_eq!(
        a.send(
            Req::new("POST", "/api/v1/devices")
                .bearer(&read)
                .json(json!({"name": "x2"}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // Beyond the client's role, wrong secret, wrong grant.
    let (s, v, _) = a
        .send(token_req(format!(
            "grant_type=client_credentials&client_id={cid}&client_secret={secret}&scope=system"
        )))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (s, v, _) = a
        .send(token_req(format!(
            "grant_type=client_credentials&client_id={cid}&client_secret=nope"
        )))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (s, v, _) = a
        .send(token_req(
            "grant_type=password&username=a&password=b".into(),
        ))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    // Deleting the client ends its tokens.
    assert_eq!(
        a.status("DELETE", &format!("/api/v1/api-clients/{id}"), &admin)
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        a.status("GET", "/api/v1/devices", &read).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn no_role_above_ones_own_and_the_password_policy() {
    let a = app();
    let (admin, _) = a.token("admin", ADMIN_PW).await;
    let new_user = |name: &str, role: &str, pw: &str| {
        Req::new("POST", "/api/v1/users")
            .json(json!({"username": name, "password": pw, "role": role, "tenant": "default"}))
    };
    assert_eq!(
        a.send(new_user("ta", "tenant_admin", "ta-pass-123").bearer(&admin))
            .await
            .0,
        StatusCode::CREATED
    );
    let (s, v, _) = a
        .send(new_user("weak", "viewer", "password").bearer(&admin))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (ta, _) = a.token("ta", "ta-pass-123").await;
    let (s, _, _) = a
        .send(
            Req::new("POST", "/api/v1/users").bearer(&ta).json(
                json!({"username": "root2", "password": "root-pass-123", "role": "sys_admin"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = a
        .send(
            Req::new("PATCH", "/api/v1/users/ta")
                .bearer(&ta)
                .json(json!({"role": "sys_admin"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The system administrator is out of a tenant administrator's reach entirely.
    assert_eq!(
        a.status("DELETE", "/api/v1/users/admin", &ta).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        a.send(new_user("op", "operator", "op-pass-123").bearer(&ta))
            .await
            .0,
        StatusCode::CREATED
    );
    // The last system administrator stays.
    let (s, v, _) = a
        .send(Req::new("DELETE", "/api/v1/users/admin").bearer(&admin))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn changes_and_credential_views_are_audited_per_tenant() {
    let a = app();
    let (admin, _) = a.token("admin", ADMIN_PW).await;
    let (_, v, _) = a
        .send(
            Req::new("POST", "/api/v1/tenants")
                .bearer(&admin)
                .json(json!({"name": "t2"})),
        )
        .await;
    let t2 = v["id"].as_str().unwrap().to_string();
    for (name, tenant) in [("ta1", "default"), ("ta2", "t2")] {
        let (s, v, _) = a
            .send(Req::new("POST", "/api/v1/users").bearer(&admin)
                .json(json!({"username": name, "password": "ta-pass-123", "role": "tenant_admin", "tenant": tenant})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (ta1, _) = a.token("ta1", "ta-pass-123").await;
    let (ta2, _) = a.token("ta2", "ta-pass-123").await;
    let (_, d, _) = a
        .send(
            Req::new("POST", "/api/v1/devices")
                .bearer(&ta1)
                .json(json!({"name": "pump"})),
        )
        .await;
    let dev = d["id"].as_str().unwrap();
    assert_eq!(
        a.status("GET", &format!("/api/v1/devices/{dev}/credentials"), &ta1)
            .await,
        StatusCode::OK
    );
    assert_eq!(
        a.send(
            Req::new("POST", "/api/v1/devices")
                .bearer(&ta2)
                .json(json!({"name": "fan"}))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (_, v, _) = a.send(Req::new("GET", "/api/v1/audit").bearer(&ta1)).await;
    let entries = v["data"].as_array().unwrap();
    let actions: Vec<String> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        actions.contains(&"POST /api/v1/devices".to_string()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"GET /api/v1/devices/{id}/credentials".to_string()),
        "{actions:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] != "ta2" && e["tenant"] != t2.as_str()),
        "{v}"
    );
    assert!(entries
        .iter()
        .any(|e| e["actor"] == "ta1" && e["status"] == 201));
    // Other tenants' entries are out of reach, and viewers cannot read the log.
    assert_eq!(
        a.status("GET", &format!("/api/v1/audit?tenant={t2}"), &ta1)
            .await,
        StatusCode::NOT_FOUND
    );
    let (_, v, _) = a
        .send(Req::new("GET", &format!("/api/v1/audit?tenant={t2}")).bearer(&admin))
        .await;
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "ta2"),
        "{v}"
    );
}
