//! Getting and giving up tokens: password login, refresh, logout, and the OAuth 2.0
//! client-credentials grant for programs. Failed attempts are limited per account and per
//! source address (governor): past the allowance the key is locked (429 with `Retry-After`)
//! until the limiter frees a slot, whatever the password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ib_core::accounts::Role;
use ib_core::audit::NewAuditEntry;
use parking_lot::Mutex;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Tokens};
use crate::error::{blocking, ApiError, ApiResult, ErrorBody};
use crate::{ApiState, ClientAddr};

/// How many failed logins are allowed before a lockout.
#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// Failures allowed per account in a burst.
    pub account_failures: u32,
    /// Failures allowed per source address in a burst.
    pub source_failures: u32,
    /// One more failure is allowed after this long (the lockout length).
    pub lockout: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            account_failures: 5,
            source_failures: 20,
            lockout: Duration::from_secs(60),
        }
    }
}

/// Failure counters and the keys locked because of them.
pub struct LoginGuard {
    accounts: DefaultKeyedRateLimiter<String>,
    sources: DefaultKeyedRateLimiter<IpAddr>,
    locked: Mutex<HashMap<String, Instant>>,
}

impl LoginGuard {
    /// A guard with these limits.
    pub fn new(l: &LoginLimits) -> LoginGuard {
        let quota = |burst: u32| {
            Quota::with_period(l.lockout.max(Duration::from_millis(1)))
                .expect("a non-zero period")
                // The failure that finds no cell left locks: `burst` failures lock.
                .allow_burst(NonZeroU32::new(burst.saturating_sub(1).max(1)).expect("max(1)"))
        };
        LoginGuard {
            accounts: RateLimiter::keyed(quota(l.account_failures)),
            sources: RateLimiter::keyed(quota(l.source_failures)),
            locked: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `account` or `source` may try again, if locked.
    fn locked(&self, account: &str, source: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        let locked = self.locked.lock();
        [
            Some(format!("u:{account}")),
            source.map(|ip| format!("a:{ip}")),
        ]
        .into_iter()
        .flatten()
        .filter_map(|k| locked.get(&k).copied())
        .filter(|until| *until > now)
        .map(|until| (until - now).as_secs().max(1))
        .max()
    }

    /// Counts a failure; locks the keys whose allowance is used up.
    fn failed(&self, account: &str, source: Option<IpAddr>) {
        let clock = governor::clock::DefaultClock::default();
        let lock = |key: String, wait: Duration| {
            let mut locked = self.locked.lock();
            let now = Instant::now();
            locked.retain(|_, until| *until > now);
            locked.insert(key, now + wait);
        };
        if let Err(not_until) = self.accounts.check_key(&account.to_string()) {
            lock(
                format!("u:{account}"),
                not_until.wait_time_from(governor::clock::Clock::now(&clock)),
            );
        }
        if let Some(ip) = source {
            if let Err(not_until) = self.sources.check_key(&ip) {
                lock(
                    format!("a:{ip}"),
                    not_until.wait_time_from(governor::clock::Clock::now(&clock)),
                );
            }
        }
        self.accounts.retain_recent();
        self.sources.retain_recent();
    }
}

/// The token routes (public: they are how a caller gets a token).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(oauth_token))
}

/// Login request.
#[derive(Deserialize, ToSchema)]
pub struct Login {
    username: String,
    password: String,
}

fn source_of(addr: &Option<Extension<ClientAddr>>) -> (Option<IpAddr>, String) {
    match addr {
        Some(Extension(ClientAddr(ip))) => (Some(*ip), ip.to_string()),
        None => (None, "unknown".to_string()),
    }
}

fn too_many(retry_after: u64) -> Response {
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!("too many failed logins: try again in {retry_after} s"),
    )
    .into_response();
    res.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        retry_after.to_string().parse().expect("digits"),
    );
    res
}

/// Logs a user in with a password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", security(()),
    request_body = Login,
    responses((status = 200, body = Tokens), (status = 401, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "locked after too many failures")))]
async fn login(
    State(s): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(l) = body?;
    let (ip, source) = source_of(&addr);
    let audit = |action: &str, tenant: Option<String>, status: u16| {
        record(
            &s,
            NewAuditEntry {
                tenant,
                actor: l.username.clone(),
                actor_kind: "user",
                source: source.clone(),
                action: action.to_string(),
                resource: "/api/v1/auth/login".into(),
                status,
                details: None,
            },
        )
    };
    if let Some(wait) = s.login_guard.locked(&l.username, ip) {
        audit("login_locked", None, 429);
        return Ok(too_many(wait));
    }
    let (p, name, pw) = (s.platform.clone(), l.username.clone(), l.password.clone());
    let user = blocking(move || p.accounts.check_login(&name, &pw)).await?;
    let Some(user) = user else {
        s.login_guard.failed(&l.username, ip);
        audit("login_failed", None, 401);
        tracing::info!(username = %l.username, %source, "login failed");
        return Err(ApiError::unauthorized("wrong user name or password"));
    };
    let tokens = s.auth.start_user_session(&user)?;
    audit("login", user.tenant.clone(), 200);
    Ok(Json(tokens).into_response())
}

/// Refresh request.
#[derive(Deserialize, ToSchema)]
pub struct Refresh {
    refresh_token: String,
}

/// Exchanges a refresh token for a new access and refresh token (the old one is spent).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", security(()),
    request_body = Refresh,
    responses((status = 200, body = Tokens), (status = 401, body = ErrorBody)))]
async fn refresh(
    State(s): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    body: Result<Json<Refresh>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Tokens>> {
    let Json(r) = body?;
    match s.auth.refresh(&s.platform, &r.refresh_token) {
        Ok((tokens, _)) => Ok(Json(tokens)),
        Err(e) => {
            if e.message.contains("already used") {
                record(
                    &s,
                    NewAuditEntry {
                        actor: "unknown".into(),
                        actor_kind: "anonymous",
                        source: source_of(&addr).1,
                        action: "refresh_reuse".into(),
                        resource: "/api/v1/auth/refresh".into(),
                        status: 401,
                        ..Default::default()
                    },
                );
            }
            Err(e)
        }
    }
}

/// Ends the caller's session: its access and refresh tokens stop working.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = ["read"])),
    responses((status = 204, description = "logged out"), (status = 401, body = ErrorBody)))]
async fn logout(caller: Caller, State(s): State<ApiState>) -> ApiResult<StatusCode> {
    s.auth.revoke(&caller.sid)?;
    Ok(StatusCode::NO_CONTENT)
}

/// OAuth 2.0 token request (form-encoded, RFC 6749 §4.4).
#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`.
    grant_type: String,
    /// Or HTTP Basic authentication.
    client_id: Option<String>,
    client_secret: Option<String>,
    /// Space-separated: `read`, `control`, `write`, `system`; at most the client's role.
    scope: Option<String>,
}

/// OAuth 2.0 access token response.
#[derive(serde::Serialize, ToSchema)]
pub struct OAuthToken {
    access_token: String,
    /// `Bearer`.
    token_type: &'static str,
    expires_in: i64,
    /// The scopes granted.
    scope: String,
}

/// Client id and secret from `Authorization: Basic` (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// The client-credentials grant: an API client's id and secret for an access token.
#[utoipa::path(post, path = "/api/v1/oauth/token", tag = "auth", security(()),
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = OAuthToken),
              (status = 400, body = ErrorBody, description = "unsupported_grant_type or invalid_scope"),
              (status = 401, body = ErrorBody, description = "invalid_client")))]
async fn oauth_token(
    State(s): State<ApiState>,
    addr: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Result<Form<TokenRequest>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ApiError> {
    let Form(req) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()))?;
    if req.grant_type != "client_credentials" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        ));
    }
    let (id, secret) = match (
        basic_credentials(&headers),
        req.client_id,
        req.client_secret,
    ) {
        (Some(pair), _, _) => pair,
        (None, Some(id), Some(secret)) => (id, secret),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client_id and client_secret are required (form fields or HTTP Basic)",
            ))
        }
    };
    let (ip, source) = source_of(&addr);
    if let Some(wait) = s.login_guard.locked(&id, ip) {
        return Ok(too_many(wait));
    }
    let Some(client) = s.platform.accounts.check_client(&id, &secret)? else {
        s.login_guard.failed(&id, ip);
        record(
            &s,
            NewAuditEntry {
                actor: id.clone(),
                actor_kind: "client",
                source,
                action: "token_failed".into(),
                resource: "/api/v1/oauth/token".into(),
                status: 401,
                ..Default::default()
            },
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        ));
    };
    // The granted role: the widest scope asked for, which must be within the client's role.
    let role = match req
        .scope
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => client.role,
        Some(scopes) => {
            let mut widest = Role::Viewer;
            for sc in scopes.split_whitespace() {
                let r = Role::of_scope(sc)
                    .filter(|r| *r <= client.role)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_scope",
                            format!("scope {sc:?} is unknown or beyond this client's role"),
                        )
                    })?;
                widest = widest.max(r);
            }
            widest
        }
    };
    let tokens = s.auth.start_client_session(&client, role)?;
    record(
        &s,
        NewAuditEntry {
            tenant: client.tenant.clone(),
            actor: client.client_id.clone(),
            actor_kind: "client",
            source,
            action: "token".into(),
            resource: "/api/v1/oauth/token".into(),
            status: 200,
            details: Some(format!("role {}", role.as_str())),
        },
    );
    let body = OAuthToken {
        access_token: tokens.token,
        token_type: "Bearer",
        expires_in: tokens.expires_in,
        scope: role.scopes().join(" "),
    };
    let mut res = Json(body).into_response();
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// Writes an audit record; a failure to write is logged, not returned (the action happened).
pub fn record(s: &ApiState, e: NewAuditEntry) {
    if let Err(err) = s.platform.audit.record(e) {
        tracing::error!(error = %err, "writing the audit log");
    }
}
