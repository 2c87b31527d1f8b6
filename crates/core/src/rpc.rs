//! Server-side RPC: one-way, two-way with a timeout, and persistent (stored with a TTL,
//! delivered when the device next connects). Every RPC is a row in the `rpc` table whose
//! integer id is the request id the device sees; its status moves QUEUED → SENT → DELIVERED
//! (the device acknowledged it) → SUCCESSFUL, or ends as TIMEOUT (sent, no reply in time), EXPIRED (never sent before its
//! TTL), FAILED (the platform restarted while a non-persistent RPC waited).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::db::{now_ms, Db};
use crate::error::{CoreError, Result};
use crate::sessions::{DeviceSessions, Downlink, DownlinkSink};

/// Default wait for a two-way reply.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default time a persistent RPC waits for its device.
pub const DEFAULT_TTL_MS: u64 = 86_400_000;

/// An RPC request (the REST body).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RpcRequest {
    pub method: String,
    #[serde(default)]
    pub params: Value,
    /// How long a two-way call waits for the answer (default 10 s).
    #[schema(minimum = 1, maximum = 300000)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub oneway: bool,
    #[serde(default)]
    pub persistent: bool,
    /// How long a persistent call waits for the device (default: DEFAULT_TTL_MS).
    #[schema(minimum = 1, maximum = 2592000000_u64)]
    pub ttl_ms: Option<u64>,
}

/// The longest a two-way call may wait.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// The longest a persistent call may wait for its device (30 days).
pub const MAX_TTL_MS: u64 = 30 * 86_400_000;

/// An RPC's state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RpcRecord {
    pub id: i64,
    pub device: String,
    pub method: String,
    pub params: Value,
    pub oneway: bool,
    pub persistent: bool,
    pub status: String,
    pub response: Option<Value>,
    pub created: i64,
    pub expires: i64,
}

fn record(r: &Row) -> rusqlite::Result<RpcRecord> {
    let params: String = r.get(3)?;
    let response: Option<String> = r.get(7)?;
    Ok(RpcRecord {
        id: r.get(0)?,
        device: r.get(1)?,
        method: r.get(2)?,
        params: serde_json::from_str(&params).unwrap_or(Value::Null),
        oneway: r.get(4)?,
        persistent: r.get(5)?,
        status: r.get(6)?,
        response: response.and_then(|s| serde_json::from_str(&s).ok()),
        created: r.get(8)?,
        expires: r.get(9)?,
    })
}

const SELECT: &str = "SELECT id, device_id, method, params, oneway, persistent, status, response,
    created_ms, expires_ms FROM rpc";

/// The RPC service.
pub struct Rpcs {
    db: Arc<Db>,
    sessions: Arc<DeviceSessions>,
    waiters: Mutex<HashMap<i64, oneshot::Sender<Value>>>,
}

impl Rpcs {
    /// The service; RPCs left waiting by a previous run are settled.
    pub fn new(db: Arc<Db>, sessions: Arc<DeviceSessions>) -> Result<Rpcs> {
        db.conn().execute(
            "UPDATE rpc SET status = 'FAILED', response = '\"platform restarted\"'
             WHERE persistent = 0 AND status IN ('QUEUED', 'SENT', 'DELIVERED')",
            [],
        )?;
        Ok(Rpcs {
            db,
            sessions,
            waiters: Mutex::new(HashMap::new()),
        })
    }

    /// Sends an RPC to a device. Two-way non-persistent calls wait for the reply (or the
    /// timeout); one-way and persistent calls return their state at once.
    pub async fn call(&self, device: &str, req: RpcRequest) -> Result<RpcRecord> {
        if req.method.is_empty() || req.method.len() > 255 {
            return Err(CoreError::Invalid(
                "method must be 1 to 255 characters".into(),
            ));
        }
        let timeout = req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout) {
            return Err(CoreError::Invalid(format!(
                "timeout_ms must be 1 to {MAX_TIMEOUT_MS}"
            )));
        }
        let life = if req.persistent {
            let ttl = req.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
            if !(1..=MAX_TTL_MS).contains(&ttl) {
                return Err(CoreError::Invalid(format!(
                    "ttl_ms must be 1 to {MAX_TTL_MS}"
                )));
            }
            ttl
        } else {
            timeout
        };
        let now = now_ms();
        let id = {
            let conn = self.db.conn();
            conn.execute(
                "INSERT INTO rpc (device_id, method, params, oneway, persistent, status, created_ms,
                 expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'QUEUED', ?6, ?7)",
                params![device, req.method, req.params.to_string(), req.oneway, req.persistent, now, now + life as i64],
            )?;
            conn.last_insert_rowid()
        };
        let rx = (!req.oneway).then(|| {
            let (tx, rx) = oneshot::channel();
            self.waiters.lock().insert(id, tx);
            rx
        });
        let d = Downlink::Rpc {
            id,
            method: req.method.clone(),
            params: req.params.clone(),
        };
        if self.sessions.send(device, &d) > 0 {
            self.mark_sent(id, req.oneway)?;
        }
        let Some(rx) = rx.filter(|_| !req.persistent) else {
            return self.get(device, id);
        };
        let outcome = tokio::time::timeout(Duration::from_millis(timeout), rx).await;
        self.waiters.lock().remove(&id);
        if outcome.is_err() {
            self.db.conn().execute(
                "UPDATE rpc SET status = 'TIMEOUT' WHERE id = ?1
                 AND status IN ('QUEUED', 'SENT', 'DELIVERED')",
                [id],
            )?;
        }
        self.get(device, id)
    }

    fn mark_sent(&self, id: i64, oneway: bool) -> Result<()> {
        // A one-way RPC has nothing more to wait for once it is on its way.
        let status = if oneway { "SUCCESSFUL" } else { "SENT" };
        self.db.conn().execute(
            "UPDATE rpc SET status = ?2 WHERE id = ?1 AND status = 'QUEUED'",
            params![id, status],
        )?;
        Ok(())
    }

    /// The device acknowledged receiving RPC `id` (MQTT PUBACK, an HTTP poll answered).
    pub fn delivered(&self, device: &str, id: i64) -> Result<()> {
        self.db.conn().execute(
            "UPDATE rpc SET status = 'DELIVERED' WHERE id = ?1 AND device_id = ?2 AND status = 'SENT'",
            params![id, device],
        )?;
        Ok(())
    }

    /// A device's reply to RPC `id`.
    pub fn reply(&self, device: &str, id: i64, response: Value) -> Result<()> {
        let n = self.db.conn().execute(
            "UPDATE rpc SET status = 'SUCCESSFUL', response = ?3
             WHERE id = ?1 AND device_id = ?2 AND status IN ('QUEUED', 'SENT', 'DELIVERED')
             AND oneway = 0",
            params![id, device, response.to_string()],
        )?;
        if n == 0 {
            return Err(CoreError::NotFound(format!("pending RPC {id}")));
        }
        if let Some(tx) = self.waiters.lock().remove(&id) {
            let _ = tx.send(response);
        }
        Ok(())
    }

    /// One RPC of a device.
    pub fn get(&self, device: &str, id: i64) -> Result<RpcRecord> {
        self.db
            .conn()
            .query_row(
                &format!("{SELECT} WHERE id = ?1 AND device_id = ?2"),
                params![id, device],
                record,
            )
            .optional()?
            .ok_or_else(|| CoreError::NotFound(format!("RPC {id}")))
    }

    /// Sends the device's queued RPCs to a sink that just appeared, oldest first, while it
    /// takes them.
    pub fn deliver_queued(&self, device: &str, sink: &dyn DownlinkSink) -> Result<()> {
        let queued: Vec<RpcRecord> = {
            let conn = self.db.conn();
            let mut st = conn.prepare_cached(&format!(
                "{SELECT} WHERE device_id = ?1 AND status = 'QUEUED' AND expires_ms > ?2 ORDER BY id"
            ))?;
            let rows = st.query_map(params![device, now_ms()], record)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for r in queued {
            let d = Downlink::Rpc {
                id: r.id,
                method: r.method,
                params: r.params,
            };
            if !sink.wants(&d) || !sink.send(&d) {
                break;
            }
            self.mark_sent(r.id, r.oneway)?;
        }
        Ok(())
    }

    /// Settles RPCs whose time is up: never sent → EXPIRED, sent without a reply → TIMEOUT.
    pub fn sweep(&self) -> Result<usize> {
        let now = now_ms();
        let conn = self.db.conn();
        let a = conn.execute(
            "UPDATE rpc SET status = 'EXPIRED' WHERE status = 'QUEUED' AND expires_ms <= ?1",
            [now],
        )?;
        let b = conn.execute(
            "UPDATE rpc SET status = 'TIMEOUT' WHERE status IN ('SENT', 'DELIVERED')
             AND expires_ms <= ?1",
            [now],
        )?;
        Ok(a + b)
    }
}
