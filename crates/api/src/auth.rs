//! Who calls the management API: users (argon2 passwords), the bootstrap administrator, login
//! returning a JWT (HS256 with a per-installation secret kept in the database), and the
//! [`Caller`] extractor that checks the bearer token. For now every user is a system
//! administrator; roles and tenant scoping come with the management API issue.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ib_core::credentials::{self, generate_token};
use ib_core::db::{now_ms, Db};
use jsonwebtoken::{decode, encode, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::ApiState;

/// Lifetime of an access token.
const ACCESS_TTL_S: i64 = 3600;
/// Lifetime of a refresh token.
const REFRESH_TTL_S: i64 = 7 * 86_400;

/// JWT claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub exp: i64,
    #[serde(default)]
    pub refresh: bool,
}

/// Token signing keys.
pub struct Auth {
    db: Arc<Db>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Auth {
    /// Loads (or creates) the signing secret and the bootstrap administrator. Returns the
    /// generated administrator password when one was made (to be printed once).
    pub fn open(
        db: Arc<Db>,
        admin_password: Option<&str>,
    ) -> Result<(Auth, Option<String>), ib_core::CoreError> {
        let secret = match db.setting("jwt_secret")? {
            Some(s) => s,
            None => {
                let s = format!("{}{}", generate_token(), generate_token());
                db.set_setting("jwt_secret", &s)?;
                s
            }
        };
        let users: i64 = db
            .conn()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
        let mut generated = None;
        if users == 0 {
            let password = match admin_password {
                Some(p) if !p.is_empty() => p.to_string(),
                _ => {
                    let p = generate_token();
                    generated = Some(p.clone());
                    p
                }
            };
            db.conn().execute(
                "INSERT INTO users (id, username, password_hash, role, created_ms)
                 VALUES (?1, 'admin', ?2, 'sysadmin', ?3)",
                (uuid_like(), credentials::hash_password(&password), now_ms()),
            )?;
            tracing::info!("created the system administrator \"admin\"");
        }
        let auth = Auth {
            db,
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        };
        Ok((auth, generated))
    }

    /// Checks a user's password; returns `(access, refresh)` tokens.
    pub fn login(&self, username: &str, password: &str) -> Result<(String, String), ApiError> {
        let row: Option<(String, String)> = {
            let conn = self.db.conn();
            let mut st = conn
                .prepare("SELECT password_hash, role FROM users WHERE username = ?1")
                .map_err(ib_core::CoreError::from)?;
            let mut rows = st.query([username]).map_err(ib_core::CoreError::from)?;
            match rows.next().map_err(ib_core::CoreError::from)? {
                Some(r) => Some((
                    r.get(0).map_err(ib_core::CoreError::from)?,
                    r.get(1).map_err(ib_core::CoreError::from)?,
                )),
                None => None,
            }
        };
        let ok = row
            .as_ref()
            .is_some_and(|(hash, _)| credentials::verify_password(hash, password.as_bytes()));
        if !ok {
            tracing::info!(username, "login failed");
            return Err(ApiError::unauthorized("wrong user name or password"));
        }
        let role = row.map(|(_, r)| r).unwrap_or_default();
        Ok((
            self.token(username, &role, false),
            self.token(username, &role, true),
        ))
    }

    fn token(&self, sub: &str, role: &str, refresh: bool) -> String {
        let ttl = if refresh { REFRESH_TTL_S } else { ACCESS_TTL_S };
        let claims = Claims {
            sub: sub.to_string(),
            role: role.to_string(),
            exp: now_ms() / 1000 + ttl,
            refresh,
        };
        encode(&Header::default(), &claims, &self.encoding).expect("HS256 signing cannot fail")
    }

    /// Verifies an access token.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let data = decode::<Claims>(token, &self.decoding, &Validation::default())
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
        if data.claims.refresh {
            return Err(ApiError::unauthorized(
                "a refresh token is not an access token",
            ));
        }
        Ok(data.claims)
    }
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An authenticated caller of the management API.
pub struct Caller(pub Claims);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("Authorization must be a Bearer token"))?;
        state.auth.verify(token.trim()).map(Caller)
    }
}
