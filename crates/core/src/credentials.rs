//! Device credentials: access tokens (random, stored as SHA-256), MQTT basic (client id / user
//! name / password with argon2) and X.509 (certificate SHA-256 fingerprint). Rotation keeps the
//! previous credential of a kind valid for a grace period.

use std::sync::Arc;

use rand::Rng;
use rusqlite::params;
use serde::Deserialize;

use crate::db::{now_ms, Db};
use crate::error::{CoreError, Result};

const TOKEN_LEN: usize = 24;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new random access token: 24 base62 characters, 142 bits.
pub fn generate_token() -> String {
    let mut rng = rand::rng();
    (0..TOKEN_LEN)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

/// Lower-case hex SHA-256 of a string.
pub fn sha256_hex(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An argon2 hash of a password (PHC string).
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&bytes).expect("16 bytes make a valid salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// Whether `password` matches an argon2 PHC hash.
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password, &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A credential to set on a device (the REST/CLI request body).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NewCredential {
    /// A new random token (or the given one), returned once.
    AccessToken {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        grace_s: u64,
    },
    MqttBasic {
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        grace_s: u64,
    },
    X509 {
        /// SHA-256 of the DER certificate, hex (colons allowed).
        fingerprint: String,
        #[serde(default)]
        grace_s: u64,
    },
}

/// What the API shows of a stored credential (never the secret or its hash).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CredentialInfo {
    /// `access_token`, `basic` or `x509`.
    pub kind: String,
    /// MQTT basic client id.
    pub client_id: Option<String>,
    /// MQTT basic user name.
    pub username: Option<String>,
    /// Set while a replaced credential is in its grace period.
    pub expires: Option<i64>,
    pub created: i64,
}

/// A basic-credentials row: device, client id, user name, password hash.
type BasicRow = (String, Option<String>, Option<String>, Option<String>);

impl NewCredential {
    /// How long the credentials it replaces stay valid.
    pub fn grace_s(&self) -> u64 {
        match self {
            NewCredential::AccessToken { grace_s, .. }
            | NewCredential::MqttBasic { grace_s, .. }
            | NewCredential::X509 { grace_s, .. } => *grace_s,
        }
    }
}

/// Credential storage and checks.
#[derive(Clone)]
pub struct Credentials {
    db: Arc<Db>,
    /// Whether any MQTT basic credentials exist: when none do, a client without a known token
    /// is not looked up again (keeps connects of non-device clients cheap).
    has_basic: Arc<std::sync::atomic::AtomicBool>,
}

fn grace_expiry(grace_s: u64) -> i64 {
    now_ms() + (grace_s.min(365 * 86_400) as i64) * 1000
}

impl Credentials {
    /// Credentials over `db`.
    pub fn new(db: Arc<Db>) -> Credentials {
        let any: i64 = db
            .conn()
            .query_row(
                "SELECT count(*) FROM credentials WHERE kind = 'basic'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(1);
        Credentials {
            db,
            has_basic: Arc::new(std::sync::atomic::AtomicBool::new(any > 0)),
        }
    }

    /// Whether MQTT basic credentials may exist (another process may add some: then this
    /// stays conservative once set).
    pub fn may_have_basic(&self) -> bool {
        self.has_basic.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A device's credentials, newest first.
    pub fn list(&self, device_id: &str) -> Result<Vec<CredentialInfo>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT kind, client_id, username, expires_ms, created_ms FROM credentials
             WHERE device_id = ?1 AND (expires_ms IS NULL OR expires_ms > ?2) ORDER BY id DESC",
        )?;
        let rows = st.query_map(params![device_id, now_ms()], |r| {
            let kind: String = r.get(0)?;
            Ok(CredentialInfo {
                kind: if kind == "token" {
                    "access_token".into()
                } else {
                    kind
                },
                client_id: r.get(1)?,
                username: r.get(2)?,
                expires: r.get(3)?,
                created: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets a device's credential of one kind; the previous ones of that kind stay valid for
    /// `grace_s` seconds. Returns the new access token when one was generated.
    pub fn set(&self, device_id: &str, new: NewCredential) -> Result<Option<String>> {
        match new {
            NewCredential::AccessToken { token, grace_s } => {
                let token = token.unwrap_or_else(generate_token);
                if token.len() < 8 || token.len() > 128 {
                    return Err(CoreError::Invalid(
                        "an access token has 8 to 128 characters".into(),
                    ));
                }
                self.expire_kind(device_id, "token", grace_s)?;
                self.add_token(device_id, &token, None)?;
                Ok(Some(token))
            }
            NewCredential::MqttBasic {
                client_id,
                username,
                password,
                grace_s,
            } => {
                if client_id.is_none() && username.is_none() {
                    return Err(CoreError::Invalid(
                        "MQTT basic credentials need a client_id or a username".into(),
                    ));
                }
                self.expire_kind(device_id, "basic", grace_s)?;
                self.has_basic
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let secret = password.as_deref().map(hash_password);
                self.db.conn().execute(
                    "INSERT INTO credentials (device_id, kind, client_id, username, secret,
                     created_ms) VALUES (?1, 'basic', ?2, ?3, ?4, ?5)",
                    params![device_id, client_id, username, secret, now_ms()],
                )?;
                Ok(None)
            }
            NewCredential::X509 {
                fingerprint,
                grace_s,
            } => {
                let fp: String = fingerprint
                    .chars()
                    .filter(|c| *c != ':')
                    .collect::<String>()
                    .to_ascii_lowercase();
                if fp.len() != 64 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(CoreError::Invalid(
                        "fingerprint must be a SHA-256 in hex".into(),
                    ));
                }
                self.expire_kind(device_id, "x509", grace_s)?;
                self.db
                    .conn()
                    .execute(
                        "INSERT INTO credentials (device_id, kind, lookup, created_ms)
                         VALUES (?1, 'x509', ?2, ?3)",
                        params![device_id, fp, now_ms()],
                    )
                    .map_err(|e| CoreError::unique(e, "certificate"))?;
                Ok(None)
            }
        }
    }

    /// Adds an access token (stored as its hash).
    pub fn add_token(&self, device_id: &str, token: &str, expires_ms: Option<i64>) -> Result<()> {
        let hash = sha256_hex(token);
        let conn = self.db.conn();
        let taken: i64 = conn.query_row(
            "SELECT count(*) FROM credentials WHERE kind = 'token' AND lookup = ?1",
            [&hash],
            |r| r.get(0),
        )?;
        if taken > 0 {
            return Err(CoreError::AlreadyExists("access token".into()));
        }
        conn.execute(
            "INSERT INTO credentials (device_id, kind, lookup, expires_ms, created_ms)
             VALUES (?1, 'token', ?2, ?3, ?4)",
            params![device_id, hash, expires_ms, now_ms()],
        )?;
        Ok(())
    }

    /// Makes the device's current credentials of `kind` expire after `grace_s` (0: now).
    fn expire_kind(&self, device_id: &str, kind: &str, grace_s: u64) -> Result<()> {
        let conn = self.db.conn();
        if grace_s == 0 {
            conn.execute(
                "DELETE FROM credentials WHERE device_id = ?1 AND kind = ?2",
                params![device_id, kind],
            )?;
        } else {
            conn.execute(
                "UPDATE credentials SET expires_ms = ?3 WHERE device_id = ?1 AND kind = ?2
                 AND (expires_ms IS NULL OR expires_ms > ?3)",
                params![device_id, kind, grace_expiry(grace_s)],
            )?;
        }
        Ok(())
    }

    /// The device an access token belongs to.
    pub fn by_token(&self, token: &str) -> Result<Option<String>> {
        self.lookup("token", &sha256_hex(token))
    }

    /// The device a certificate fingerprint (hex SHA-256) belongs to.
    pub fn by_fingerprint(&self, fingerprint: &str) -> Result<Option<String>> {
        self.lookup("x509", &fingerprint.to_ascii_lowercase())
    }

    fn lookup(&self, kind: &str, lookup: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT device_id FROM credentials WHERE kind = ?1 AND lookup = ?2
                 AND (expires_ms IS NULL OR expires_ms > ?3)",
                params![kind, lookup, now_ms()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The device whose MQTT basic credentials match (ThingsBoard's rules: with both a client id
    /// and a user name set both must match; a password, when set, must match). Blocking (argon2).
    pub fn by_basic(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Option<String>> {
        let candidates: Vec<BasicRow> = {
            let conn = self.db.conn();
            let mut st = conn.prepare(
                "SELECT device_id, client_id, username, secret FROM credentials
                 WHERE kind = 'basic' AND (client_id = ?1 OR username = ?2)
                 AND (expires_ms IS NULL OR expires_ms > ?3)",
            )?;
            let rows = st.query_map(params![client_id, username, now_ms()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (device, cid, user, secret) in candidates {
            if cid.as_deref().is_some_and(|c| c != client_id) {
                continue;
            }
            if user.is_some() && user.as_deref() != username {
                continue;
            }
            match (&secret, password) {
                (None, _) => return Ok(Some(device)),
                (Some(h), Some(p)) if verify_password(h, p) => return Ok(Some(device)),
                _ => continue,
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewDevice;
    use crate::registry::Registry;

    fn setup() -> (Credentials, String, String) {
        let db = Arc::new(Db::memory().unwrap());
        let r = Registry::new(db.clone());
        let t = r.create_tenant("t").unwrap();
        let (d, token) = r
            .create_device(
                &t.id,
                NewDevice {
                    name: "d".into(),
                    ..NewDevice::default()
                },
            )
            .unwrap();
        (Credentials::new(db), d.id, token)
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (c, id, token) = setup();
        assert_eq!(token.len(), 24);
        assert_ne!(generate_token(), generate_token());
        assert_eq!(c.by_token(&token).unwrap(), Some(id));
        assert_eq!(c.by_token("nope").unwrap(), None);
        let stored: i64 =
            c.db.conn()
                .query_row(
                    "SELECT count(*) FROM credentials WHERE lookup = ?1",
                    [&token],
                    |r| r.get(0),
                )
                .unwrap();
        assert_eq!(stored, 0, "the token itself is never stored");
    }

    #[test]
    fn rotation_with_and_without_grace() {
        let (c, id, old) = setup();
        let new = c
            .set(
                &id,
                NewCredential::AccessToken {
                    token: None,
                    grace_s: 60,
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(c.by_token(&old).unwrap().as_deref(), Some(id.as_str()));
        assert_eq!(c.by_token(&new).unwrap().as_deref(), Some(id.as_str()));
        let newer = c
            .set(
                &id,
                NewCredential::AccessToken {
                    token: None,
                    grace_s: 0,
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(c.by_token(&old).unwrap(), None);
        assert_eq!(c.by_token(&new).unwrap(), None);
        assert!(c.by_token(&newer).unwrap().is_some());
    }

    #[test]
    fn basic_credentials_follow_thingsboard_rules() {
        let (c, id, _) = setup();
        c.set(
            &id,
            NewCredential::MqttBasic {
                client_id: Some("cid".into()),
                username: Some("user".into()),
                password: Some("pw".into()),
                grace_s: 0,
            },
        )
        .unwrap();
        assert!(c
            .by_basic("cid", Some("user"), Some(b"pw"))
            .unwrap()
            .is_some());
        assert!(c
            .by_basic("cid", Some("user"), Some(b"bad"))
            .unwrap()
            .is_none());
        assert!(c
            .by_basic("other", Some("user"), Some(b"pw"))
            .unwrap()
            .is_none());
        assert!(c.by_basic("cid", Some("x"), Some(b"pw")).unwrap().is_none());
    }
}
