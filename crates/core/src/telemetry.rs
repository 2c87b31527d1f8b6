//! Telemetry storage, first cut: raw points and latest values per device and key in the
//! platform database, each message in one transaction (all or nothing) committed before the
//! device is acknowledged. The telemetry-storage issue replaces this with the partitioned,
//! group-committed store; the operations stay.

use std::sync::Arc;

use rusqlite::params;
use serde_json::{json, Map, Value};

use crate::db::Db;
use crate::error::Result;
use crate::payload::Point;

/// Telemetry storage.
#[derive(Clone)]
pub struct Telemetry {
    db: Arc<Db>,
}

impl Telemetry {
    /// Telemetry over `db`.
    pub fn new(db: Arc<Db>) -> Telemetry {
        Telemetry { db }
    }

    /// Stores points of one device in one transaction.
    pub fn save(&self, device: &str, points: &[Point]) -> Result<()> {
        let mut conn = self.db.conn();
        let tx = conn.transaction()?;
        {
            let mut raw = tx.prepare_cached(
                "INSERT INTO ts_kv (device_id, key, ts, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device_id, key, ts) DO UPDATE SET value = excluded.value",
            )?;
            let mut latest = tx.prepare_cached(
                "INSERT INTO ts_latest (device_id, key, ts, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, ts = excluded.ts
                 WHERE excluded.ts >= ts_latest.ts",
            )?;
            for p in points {
                let v = p.value.to_string();
                raw.execute(params![device, p.key, p.ts, v])?;
                latest.execute(params![device, p.key, p.ts, v])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Latest values `{"k":{"ts","value"}}`; `keys = None` for all.
    pub fn latest(&self, device: &str, keys: Option<&[String]>) -> Result<Map<String, Value>> {
        let conn = self.db.conn();
        let mut st = conn.prepare_cached(
            "SELECT key, ts, value FROM ts_latest WHERE device_id = ?1 ORDER BY key",
        )?;
        let rows = st.query_map([device], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Map::new();
        for row in rows {
            let (k, ts, v) = row?;
            if keys.is_some_and(|keys| !keys.contains(&k)) {
                continue;
            }
            let v: Value = serde_json::from_str(&v).unwrap_or(Value::Null);
            out.insert(k, json!({"ts": ts, "value": v}));
        }
        Ok(out)
    }

    /// Raw points of `keys` in `[from, to]`, oldest first, at most `limit` per key.
    pub fn range(
        &self,
        device: &str,
        keys: &[String],
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Map<String, Value>> {
        let conn = self.db.conn();
        let mut st = conn.prepare_cached(
            "SELECT ts, value FROM ts_kv WHERE device_id = ?1 AND key = ?2 AND ts >= ?3 AND ts <= ?4
             ORDER BY ts LIMIT ?5",
        )?;
        let mut out = Map::new();
        for k in keys {
            let rows = st.query_map(params![device, k, from, to, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut series = Vec::new();
            for row in rows {
                let (ts, v) = row?;
                let v: Value = serde_json::from_str(&v).unwrap_or(Value::Null);
                series.push(json!({"ts": ts, "value": v}));
            }
            out.insert(k.clone(), Value::Array(series));
        }
        Ok(out)
    }
}
