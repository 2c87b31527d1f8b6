//! Device attributes in three scopes, as ThingsBoard has them: client (reported by the device),
//! shared (desired state set by the platform, pushed to the device) and server (kept by the
//! platform: connection state, last activity).

use std::sync::Arc;

use rusqlite::params;
use serde_json::{json, Map, Value};

use crate::db::{Db, Versioned};
use crate::error::{CoreError, Result};

/// An attribute scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Client = 1,
    Shared = 2,
    Server = 3,
}

impl Scope {
    /// All scopes, in API order.
    pub const ALL: [Scope; 3] = [Scope::Client, Scope::Shared, Scope::Server];

    /// The API name.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Shared => "shared",
            Scope::Server => "server",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Result<Scope> {
        match s {
            "client" | "CLIENT_SCOPE" => Ok(Scope::Client),
            "shared" | "SHARED_SCOPE" => Ok(Scope::Shared),
            "server" | "SERVER_SCOPE" => Ok(Scope::Server),
            _ => Err(CoreError::Invalid(format!(
                "unknown attribute scope {s:?} (client, shared, server)"
            ))),
        }
    }
}

/// Writes one attribute.
const UPSERT: &str =
    "INSERT INTO attributes (device_id, scope, key, value, ts) VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (device_id, scope, key) DO UPDATE SET value = excluded.value, ts = excluded.ts";

/// Attribute storage.
#[derive(Clone)]
pub struct Attributes {
    db: Arc<Db>,
}

impl Attributes {
    /// Attributes over `db`.
    pub fn new(db: Arc<Db>) -> Attributes {
        Attributes { db }
    }

    /// Saves attributes (all or nothing).
    pub fn save(
        &self,
        device: &str,
        scope: Scope,
        map: &Map<String, Value>,
        ts: i64,
    ) -> Result<()> {
        let mut conn = self.db.conn();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(UPSERT)?;
            for (k, v) in map {
                st.execute(params![device, scope as i64, k, v.to_string(), ts])?;
            }
        }
        tx.commit()?;
        self.db.changed(Versioned::Attributes);
        Ok(())
    }

    /// Saves attributes of many devices in one transaction (periodic state writes). A device
    /// deleted meanwhile (its row refused by the foreign key) is skipped; the others are kept.
    pub fn save_many(
        &self,
        scope: Scope,
        items: &[(Arc<str>, Map<String, Value>)],
        ts: i64,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut conn = self.db.conn();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(UPSERT)?;
            for (device, map) in items {
                for (k, v) in map {
                    match st.execute(params![&**device, scope as i64, k, v.to_string(), ts]) {
                        Ok(_) => {}
                        Err(rusqlite::Error::SqliteFailure(f, _))
                            if f.code == rusqlite::ErrorCode::ConstraintViolation => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        tx.commit()?;
        self.db.changed(Versioned::Attributes);
        Ok(())
    }

    /// Every attribute of the device, the scopes merged (client, then shared, then server: a
    /// later scope's key wins), in one query.
    pub fn merged(&self, device: &str) -> Result<Map<String, Value>> {
        let conn = self.db.conn();
        let mut st = conn.prepare_cached(
            "SELECT key, value FROM attributes WHERE device_id = ?1 ORDER BY scope",
        )?;
        let rows = st.query_map(params![device], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Map::new();
        for row in rows {
            let (k, v) = row?;
            out.insert(k, serde_json::from_str(&v).unwrap_or(Value::Null));
        }
        Ok(out)
    }

    /// Values of a scope; `keys = None` for all of them. Unknown keys are left out.
    pub fn values(
        &self,
        device: &str,
        scope: Scope,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Value>> {
        Ok(self
            .entries(device, scope, keys)?
            .into_iter()
            .map(|(k, _, v)| (k, v))
            .collect())
    }

    /// `{"k":{"ts","value"}}` for a scope.
    pub fn with_ts(
        &self,
        device: &str,
        scope: Scope,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Value>> {
        Ok(self
            .entries(device, scope, keys)?
            .into_iter()
            .map(|(k, ts, v)| (k, json!({"ts": ts, "value": v})))
            .collect())
    }

    fn entries(
        &self,
        device: &str,
        scope: Scope,
        keys: Option<&[String]>,
    ) -> Result<Vec<(String, i64, Value)>> {
        let conn = self.db.conn();
        let mut st = conn.prepare_cached(
            "SELECT key, ts, value FROM attributes WHERE device_id = ?1 AND scope = ?2 ORDER BY key",
        )?;
        let rows = st.query_map(params![device, scope as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (k, ts, v) = row?;
            if keys.is_some_and(|keys| !keys.contains(&k)) {
                continue;
            }
            out.push((k, ts, serde_json::from_str(&v).unwrap_or(Value::Null)));
        }
        Ok(out)
    }

    /// Deletes keys of a scope; returns those that existed.
    pub fn delete(&self, device: &str, scope: Scope, keys: &[String]) -> Result<Vec<String>> {
        let conn = self.db.conn();
        let mut deleted = Vec::new();
        for k in keys {
            let n = conn.execute(
                "DELETE FROM attributes WHERE device_id = ?1 AND scope = ?2 AND key = ?3",
                params![device, scope as i64, k],
            )?;
            if n > 0 {
                deleted.push(k.clone());
            }
        }
        self.db.changed(Versioned::Attributes);
        Ok(deleted)
    }
}
