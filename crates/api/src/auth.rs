//! Who calls the management API and how they prove it: the bootstrap administrator, sessions
//! (a row per login or client token, revocable), short-lived JWT access tokens (HS256 with a
//! per-installation secret kept in the database) that name their session, refresh tokens that
//! rotate on every use (a reused one revokes its whole session: reuse detection), OAuth 2.0
//! client-credential tokens, and the [`Caller`] every handler receives.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ib_core::accounts::{ApiClient, Reach, Role, User};
use ib_core::credentials::{generate_token, sha256_hex};
use ib_core::db::{now_ms, Db};
use ib_core::Platform;
use jsonwebtoken::{decode, encode, DecodingKey, EncodingKey, Header, Validation};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// Token lifetimes.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Access token lifetime (s).
    pub access_ttl_s: i64,
    /// Refresh token (and login session) lifetime (s).
    pub refresh_ttl_s: i64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            access_ttl_s: 900,
            refresh_ttl_s: 7 * 86_400,
        }
    }
}

/// JWT claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User or API client id.
    pub sub: String,
    /// User name or `client_id`.
    pub name: String,
    /// `user` or `client`.
    pub kind: String,
    pub role: Role,
    pub tenant: Option<String>,
    pub customer: Option<String>,
    /// The session: revoking it invalidates the token before it expires.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

/// An authenticated caller of the management API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: String,
    pub name: String,
    /// `user` or `client`.
    pub kind: &'static str,
    pub role: Role,
    pub reach: Reach,
    pub sid: String,
}

impl Caller {
    /// Whether something in `tenant` (assigned to `customer`) is within this caller's reach.
    pub fn covers(&self, tenant: &str, customer: Option<&str>) -> bool {
        self.reach.covers(self.role, tenant, customer)
    }

    /// The tenant a request is about: a system administrator may name any (`default` when
    /// none); everyone else works in their own tenant, and naming another is "not found".
    pub fn tenant(
        &self,
        s: &ApiState,
        requested: Option<&str>,
    ) -> ApiResult<ib_core::model::Tenant> {
        let registry = &s.platform.registry;
        match (&self.reach.tenant, self.role) {
            (_, Role::SysAdmin) => {
                Ok(registry.tenant(requested.unwrap_or(ib_core::registry::DEFAULT))?)
            }
            (Some(own), _) => {
                let t = registry.tenant(own)?;
                match requested {
                    Some(r) if r != t.id && r != t.name => {
                        Err(ApiError::not_found(format!("tenant {r:?} not found")))
                    }
                    _ => Ok(t),
                }
            }
            (None, _) => Err(ApiError::forbidden("this caller belongs to no tenant")),
        }
    }

    /// The customer a customer user is limited to.
    pub fn customer(&self) -> Option<&str> {
        self.reach.customer.as_deref()
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Self, Self::Rejection> {
        // Put there by the authorisation layer, the one place that checks the token.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))
    }
}

/// An access token and what goes with it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tokens {
    /// The access token (JWT), for `Authorization: Bearer`.
    pub token: String,
    /// Exchanged once at `POST /api/v1/auth/refresh` for a new pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// Token signing and sessions.
pub struct Auth {
    db: Arc<Db>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    config: TokenConfig,
}

impl Auth {
    /// Loads (or creates) the signing secret and the bootstrap administrator. Returns the
    /// generated administrator password when one was made (to be printed once).
    pub fn open(
        platform: &Platform,
        admin_password: Option<&str>,
        config: TokenConfig,
    ) -> Result<(Auth, Option<String>), ib_core::CoreError> {
        let db = platform.db.clone();
        let secret = match db.setting("jwt_secret")? {
            Some(s) => s,
            None => {
                let s = format!("{}{}", generate_token(), generate_token());
                db.set_setting("jwt_secret", &s)?;
                s
            }
        };
        let mut generated = None;
        if platform.accounts.user_count()? == 0 {
            let password = match admin_password {
                Some(p) if !p.is_empty() => p.to_string(),
                _ => {
                    let p = generate_token();
                    generated = Some(p.clone());
                    p
                }
            };
            let nowhere = Reach {
                tenant: None,
                customer: None,
            };
            platform
                .accounts
                .create_user("admin", &password, Role::SysAdmin, nowhere, true)?;
            tracing::info!("created the system administrator \"admin\"");
        }
        let auth = Auth {
            db,
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            config,
        };
        Ok((auth, generated))
    }

    /// A new login session for a user: access and refresh tokens.
    pub fn start_user_session(&self, user: &User) -> ApiResult<Tokens> {
        let now = now_ms();
        let sid = uuid::Uuid::new_v4().to_string();
        let expires = now + self.config.refresh_ttl_s * 1000;
        let refresh = generate_refresh();
        {
            let conn = self.db.conn();
            conn.execute(
                "INSERT INTO auth_sessions (id, user_id, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![sid, user.id, now, expires],
            )
            .map_err(ib_core::CoreError::from)?;
            conn.execute(
                "INSERT INTO refresh_tokens (hash, session_id, expires_ms) VALUES (?1, ?2, ?3)",
                params![sha256_hex(&refresh), sid, expires],
            )
            .map_err(ib_core::CoreError::from)?;
        }
        Ok(Tokens {
            token: self.access_token(&user_claims(user), &sid),
            refresh_token: Some(refresh),
            expires_in: self.config.access_ttl_s,
        })
    }

    /// A token for an API client (client-credentials grant), no refresh token: the client asks
    /// again. `role` may be less than the client's own.
    pub fn start_client_session(&self, client: &ApiClient, role: Role) -> ApiResult<Tokens> {
        let now = now_ms();
        let sid = uuid::Uuid::new_v4().to_string();
        let expires = now + self.config.access_ttl_s * 1000;
        self.db
            .conn()
            .execute(
                "INSERT INTO auth_sessions (id, client_id, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![sid, client.id, now, expires],
            )
            .map_err(ib_core::CoreError::from)?;
        let claims = Identity {
            id: client.id.clone(),
            name: client.client_id.clone(),
            kind: "client",
            role,
            tenant: client.tenant.clone(),
            customer: client.customer.clone(),
        };
        Ok(Tokens {
            token: self.access_token(&claims, &sid),
            refresh_token: None,
            expires_in: self.config.access_ttl_s,
        })
    }

    /// Exchanges a refresh token for a new pair. The old one is spent; presenting a spent one
    /// again means it was stolen or replayed, and the whole session is revoked.
    pub fn refresh(&self, platform: &Platform, refresh: &str) -> ApiResult<(Tokens, User)> {
        let hash = sha256_hex(refresh);
        let now = now_ms();
        let row: Option<(String, bool, i64, Option<String>, bool)> = self
            .db
            .conn()
            .query_row(
                "SELECT r.session_id, r.used, r.expires_ms, s.user_id, s.revoked
                 FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id
                 WHERE r.hash = ?1",
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(ib_core::CoreError::from)?;
        let Some((sid, used, expires, Some(user_id), revoked)) = row else {
            return Err(ApiError::unauthorized("unknown refresh token"));
        };
        if revoked {
            return Err(ApiError::unauthorized("this session was revoked"));
        }
        if used {
            self.revoke(&sid)?;
            tracing::warn!(session = %sid, "refresh token reused: session revoked");
            return Err(ApiError::unauthorized(
                "refresh token already used: the session is revoked, log in again",
            ));
        }
        if expires <= now {
            return Err(ApiError::unauthorized(
                "refresh token expired, log in again",
            ));
        }
        let user = platform.accounts.user(&user_id)?;
        let next = generate_refresh();
        {
            let conn = self.db.conn();
            conn.execute(
                "UPDATE refresh_tokens SET used = 1 WHERE hash = ?1",
                [&hash],
            )
            .map_err(ib_core::CoreError::from)?;
            conn.execute(
                "INSERT INTO refresh_tokens (hash, session_id, expires_ms) VALUES (?1, ?2, ?3)",
                params![sha256_hex(&next), sid, expires],
            )
            .map_err(ib_core::CoreError::from)?;
        }
        let tokens = Tokens {
            token: self.access_token(&user_claims(&user), &sid),
            refresh_token: Some(next),
            expires_in: self.config.access_ttl_s,
        };
        Ok((tokens, user))
    }

    /// Revokes a session: its access tokens stop working at once, its refresh tokens too.
    pub fn revoke(&self, sid: &str) -> ApiResult<()> {
        self.db
            .conn()
            .execute("UPDATE auth_sessions SET revoked = 1 WHERE id = ?1", [sid])
            .map_err(ib_core::CoreError::from)?;
        Ok(())
    }

    /// Revokes every session of a user (password or role changed).
    pub fn revoke_user(&self, user_id: &str) -> ApiResult<()> {
        self.db
            .conn()
            .execute(
                "UPDATE auth_sessions SET revoked = 1 WHERE user_id = ?1",
                [user_id],
            )
            .map_err(ib_core::CoreError::from)?;
        Ok(())
    }

    /// Deletes sessions that ended more than a day ago.
    pub fn prune(&self) -> ApiResult<usize> {
        let cutoff = now_ms() - 86_400_000;
        let conn = self.db.conn();
        let n = conn
            .execute("DELETE FROM auth_sessions WHERE expires_ms < ?1", [cutoff])
            .map_err(ib_core::CoreError::from)?;
        Ok(n)
    }

    fn access_token(&self, who: &Identity, sid: &str) -> String {
        let now = now_ms() / 1000;
        let claims = Claims {
            sub: who.id.clone(),
            name: who.name.clone(),
            kind: who.kind.to_string(),
            role: who.role,
            tenant: who.tenant.clone(),
            customer: who.customer.clone(),
            sid: sid.to_string(),
            iat: now,
            exp: now + self.config.access_ttl_s,
        };
        encode(&Header::default(), &claims, &self.encoding).expect("HS256 signing cannot fail")
    }

    /// Checks an access token: signature, expiry, and that its session is still open.
    pub fn verify(&self, token: &str) -> ApiResult<Caller> {
        let mut validation = Validation::default();
        validation.leeway = 0;
        let data = decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
        let c = data.claims;
        let open: Option<(bool, i64)> = self
            .db
            .conn()
            .prepare_cached("SELECT revoked, expires_ms FROM auth_sessions WHERE id = ?1")
            .and_then(|mut st| {
                st.query_row([&c.sid], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(ib_core::CoreError::from)?;
        match open {
            Some((false, _)) => {}
            Some((true, _)) => return Err(ApiError::unauthorized("this session was revoked")),
            None => return Err(ApiError::unauthorized("this session no longer exists")),
        }
        Ok(Caller {
            id: c.sub,
            name: c.name,
            kind: if c.kind == "client" { "client" } else { "user" },
            role: c.role,
            reach: Reach {
                tenant: c.tenant,
                customer: c.customer,
            },
            sid: c.sid,
        })
    }
}

struct Identity {
    id: String,
    name: String,
    kind: &'static str,
    role: Role,
    tenant: Option<String>,
    customer: Option<String>,
}

fn user_claims(u: &User) -> Identity {
    Identity {
        id: u.id.clone(),
        name: u.username.clone(),
        kind: "user",
        role: u.role,
        tenant: u.tenant.clone(),
        customer: u.customer.clone(),
    }
}

fn generate_refresh() -> String {
    format!("ibr_{}{}", generate_token(), generate_token())
}
