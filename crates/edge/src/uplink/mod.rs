//! The uplink: the gateway's MQTT connection to the platform (ThingsBoard's gateway API).
//!
//! Each session announces the sub-devices (`v1/gateway/connect`), subscribes to
//! `v1/gateway/rpc`, then sends the store-and-forward queue from its oldest row, in order, as
//! QoS 1 PUBLISHes of up to [`BATCH_ROWS`] readings with their original timestamps
//! (`v1/gateway/telemetry`; the gateway's own health on `v1/devices/me/telemetry`), at most
//! `replay_rate` readings per second and [`WINDOW`] PUBLISHes unacknowledged. A PUBACK deletes
//! exactly the rows its PUBLISH carried. When the session ends, whatever was not acknowledged
//! is sent again by the next one (the platform keeps one point per key and timestamp, so a
//! reading sent twice is stored once).
//!
//! A sub-device's status (a queued `{"$status": "connect" | "disconnect"}` row) goes alone, in
//! queue order, as `v1/gateway/connect` or `v1/gateway/disconnect`; a session announces only
//! the sub-devices whose last queued status is not "disconnect".
//!
//! RPCs (`{"device","data":{"id","method","params"}}`) go to the connector owning the device;
//! its answer goes back as `{"device","id","data"}`. Shared attribute updates go to the
//! connector too, and their `fw_*` keys to the firmware agent (firmware.rs), which also gets
//! the answer to the `fw_*` request sent for each firmware-capable device at every connect.

pub mod endpoint;
#[cfg(test)]
mod replay_tests;
pub mod session;
#[cfg(test)]
pub(crate) mod test_pki;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqtt_codec::{Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::{sleep, Instant};

use crate::buffer::{Buffer, Row};
use crate::config::UplinkConfig;
use crate::connector::{call, stopped, Command, StatusBoard, SubDevice, STATUS_KEY};
use endpoint::Endpoint;
use session::{Session, SessionError};

/// Most readings in one PUBLISH.
pub const BATCH_ROWS: usize = 500;
/// Most PUBLISHes of readings awaiting their PUBACK.
pub const WINDOW: usize = 16;
const RPC_TOPIC: &str = "v1/gateway/rpc";
/// Shared attribute updates `{"device","data":{"k":v}}` (and the gateway's own client attributes up).
const ATTRIBUTES_TOPIC: &str = "v1/gateway/attributes";
/// Answers to `v1/gateway/attributes/request`: `{"id","device","values"}`.
const ATTRIBUTES_RESPONSE_TOPIC: &str = "v1/gateway/attributes/response";
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where RPCs for each sub-device go.
pub type Routes = HashMap<String, mpsc::Sender<Command>>;

/// The uplink's fixed parts.
pub struct Uplink {
    pub config: UplinkConfig,
    /// The platform's address, TCP or TLS (built from `config`).
    pub endpoint: Endpoint,
    pub buffer: Arc<Buffer>,
    pub devices: Vec<SubDevice>,
    pub routes: Routes,
    /// Signalled when readings were queued.
    pub wake: Arc<Notify>,
    /// True while a session is up (reported as `uplink.connected`).
    pub connected: Arc<AtomicBool>,
    /// The sub-devices' last queued statuses: who is announced when a session starts.
    pub statuses: Arc<StatusBoard>,
    /// Installs firmware offered to sub-devices (when any can take it).
    pub firmware: Option<Arc<crate::firmware::Agent>>,
}

/// Readings per second, refilled continuously, at most one second's worth banked.
struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> RateLimit {
        RateLimit {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }
    fn available(&mut self) -> usize {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        self.tokens.max(0.0) as usize
    }
    fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
    /// How long until one more reading may go.
    fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.001))
    }
}

/// What a PUBLISH in flight carried.
enum InFlight {
    Rows(i64, i64),
    Other,
}

impl Uplink {
    /// Runs sessions until shutdown, reconnecting with backoff.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let addr = self.endpoint.to_string();
        // Stable across restarts, and the same for one gateway identity: its token, or its
        // client certificate when the certificate alone authenticates it.
        let identity = match self.endpoint.client_cert() {
            Some(cert) if self.config.token.is_empty() => cert,
            _ => self.config.token.as_bytes(),
        };
        let client_id = format!("ib-edge-{:016x}", fnv(identity));
        let mut backoff = BACKOFF_START;
        let mut was_up = true;
        while !*shutdown.borrow() {
            let connect = Session::connect(
                &self.endpoint,
                &client_id,
                &self.config.token,
                self.config.keep_alive,
                Duration::from_secs(10),
            );
            let session = tokio::select! {
                s = connect => s,
                _ = stopped(&mut shutdown) => break,
            };
            let ended = match session {
                Ok(s) => {
                    tracing::info!(platform = %addr, "uplink connected");
                    self.connected.store(true, Ordering::Relaxed);
                    backoff = BACKOFF_START;
                    was_up = true;
                    let r = self.serve(s, &mut shutdown).await;
                    self.connected.store(false, Ordering::Relaxed);
                    r
                }
                Err(e) => Err(e),
            };
            match ended {
                Ok(()) => break,
                Err(e) => {
                    if was_up {
                        let queued = self.buffer.stats().rows;
                        tracing::warn!(platform = %addr, error = %e, queued,
                            "uplink down; readings are kept on disk until it returns");
                    } else {
                        tracing::debug!(platform = %addr, error = %e, "uplink still down");
                    }
                    was_up = false;
                }
            }
            tokio::select! {
                _ = sleep(backoff) => {}
                _ = stopped(&mut shutdown) => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One session: `Ok` on shutdown, `Err` when the connection failed.
    async fn serve(
        &self,
        mut s: Session,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        let mut ids = PacketIds::default();
        let mut inflight: HashMap<u16, InFlight> = HashMap::new();
        let mut rows_inflight = 0usize;
        s.subscribe(RPC_TOPIC, ids.next(&inflight)).await?;
        s.subscribe(ATTRIBUTES_TOPIC, ids.next(&inflight)).await?;
        if self.firmware.is_some() {
            s.subscribe(ATTRIBUTES_RESPONSE_TOPIC, ids.next(&inflight))
                .await?;
        }
        // Sub-devices last known not to answer are left offline; their queued status
        // readings replay in order with the rest.
        for d in self
            .devices
            .iter()
            .filter(|d| !self.statuses.offline(&d.name))
        {
            let id = ids.next(&inflight);
            inflight.insert(id, InFlight::Other);
            let body = json!({"device": d.name, "type": d.profile}).to_string();
            s.publish("v1/gateway/connect", id, body.into()).await?;
        }
        // What firmware is assigned now (it may have changed while the uplink was down); not
        // for devices left offline (asking would announce them).
        let asking = self
            .devices
            .iter()
            .filter(|d| self.firmware.is_some() && d.firmware && !self.statuses.offline(&d.name));
        for (n, d) in asking.enumerate() {
            let id = ids.next(&inflight);
            inflight.insert(id, InFlight::Other);
            let body = json!({"id": n + 1, "device": d.name, "client": false,
                "keys": crate::firmware::KEYS});
            s.publish("v1/gateway/attributes/request", id, body.to_string().into())
                .await?;
        }
        let (reply_tx, mut reply_rx) = mpsc::channel::<(String, Value, Value)>(64);
        let mut rate = RateLimit::new(self.config.replay_rate);
        let mut cursor = 0i64; // the last row id sent in this session
        let keep_alive = self.config.keep_alive;
        let mut ping = tokio::time::interval(keep_alive / 2);
        ping.reset();
        let mut last_rx = Instant::now();
        loop {
            // Send what the window and the rate allow.
            let mut throttled = false;
            while rows_inflight < WINDOW {
                let budget = rate.available().min(BATCH_ROWS);
                if budget == 0 {
                    throttled = true;
                    break;
                }
                let rows = self.read_rows(cursor, budget)?;
                let Some(first) = rows.first() else { break };
                let gateway_rows = first.device.is_empty();
                // A status row goes alone; readings go in batches of one kind.
                let (n, (topic, payload)) = match row_status(first) {
                    Some(online) => (1, self.encode_status(first, online)),
                    None => {
                        let n = rows
                            .iter()
                            .take_while(|r| {
                                r.device.is_empty() == gateway_rows && row_status(r).is_none()
                            })
                            .count();
                        (n, encode_batch(&rows[..n], gateway_rows))
                    }
                };
                let batch = &rows[..n];
                let id = ids.next(&inflight);
                let (a, b) = (batch[0].id, batch[n - 1].id);
                inflight.insert(id, InFlight::Rows(a, b));
                rows_inflight += 1;
                s.publish(topic, id, payload).await?;
                cursor = b;
                rate.take(n);
            }
            let wait = rate.wait();
            tokio::select! {
                _ = stopped(shutdown) => {
                    s.close().await;
                    return Ok(());
                }
                p = s.next() => {
                    last_rx = Instant::now();
                    match p? {
                        Packet::PubAck(ack) => match inflight.remove(&ack.packet_id) {
                            Some(InFlight::Rows(a, b)) => {
                                rows_inflight -= 1;
                                self.buffer.ack(a, b).map_err(|e| SessionError::Protocol(e.to_string()))?;
                            }
                            Some(InFlight::Other) | None => {}
                        },
                        Packet::Publish(p) => {
                            if p.qos == QoS::AtLeastOnce {
                                s.puback(p.packet_id).await?;
                            }
                            if &*p.topic == RPC_TOPIC {
                                self.rpc(&p.payload, reply_tx.clone());
                            } else if &*p.topic == ATTRIBUTES_TOPIC {
                                self.attributes(&p.payload);
                            } else if &*p.topic == ATTRIBUTES_RESPONSE_TOPIC {
                                self.attribute_response(&p.payload);
                            }
                        }
                        _ => {}
                    }
                }
                Some((device, id, data)) = reply_rx.recv() => {
                    let body = json!({"device": device, "id": id, "data": data}).to_string();
                    let pid = ids.next(&inflight);
                    inflight.insert(pid, InFlight::Other);
                    s.publish(RPC_TOPIC, pid, body.into()).await?;
                }
                _ = self.wake.notified(), if !throttled && rows_inflight < WINDOW => {}
                _ = sleep(wait), if throttled => {}
                _ = ping.tick() => {
                    if last_rx.elapsed() > keep_alive * 3 / 2 {
                        return Err(SessionError::Timeout("waiting for the platform (keep-alive)"));
                    }
                    s.send(&Packet::PingReq).await?;
                }
            }
        }
    }

    /// `v1/gateway/connect {"device","type"}` or `v1/gateway/disconnect {"device"}`.
    fn encode_status(&self, row: &Row, online: bool) -> (&'static str, Bytes) {
        if !online {
            let body = json!({"device": row.device}).to_string();
            return ("v1/gateway/disconnect", body.into());
        }
        let profile = self
            .devices
            .iter()
            .find(|d| d.name == row.device)
            .map_or("default", |d| d.profile.as_str());
        let body = json!({"device": row.device, "type": profile}).to_string();
        ("v1/gateway/connect", body.into())
    }

    fn read_rows(&self, after: i64, limit: usize) -> Result<Vec<Row>, SessionError> {
        self.buffer
            .read_after(after, limit)
            .map_err(|e| SessionError::Protocol(e.to_string()))
    }

    /// Hands an RPC to the connector owning its device; the answer comes back on `replies`.
    fn rpc(&self, payload: &[u8], replies: mpsc::Sender<(String, Value, Value)>) {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            tracing::warn!("uplink: an RPC that is not JSON was ignored");
            return;
        };
        let device = v["device"].as_str().unwrap_or_default().to_string();
        let data = &v["data"];
        let id = data["id"].clone();
        let method = data["method"].as_str().unwrap_or_default().to_string();
        let params = data.get("params").cloned().unwrap_or(Value::Null);
        let route = self.routes.get(&device).cloned();
        tokio::spawn(async move {
            let result = call(route, &device, &method, params, RPC_TIMEOUT).await;
            if let Err(e) = &result {
                tracing::warn!(device, method, error = %e, "RPC failed");
            }
            let data = result.unwrap_or_else(|e| json!({"error": e}));
            let _ = replies.send((device, id, data)).await;
        });
    }
}

impl Uplink {
    /// Hands each updated shared attribute to the connector owning the device; failures are
    /// logged (there is no one to answer).
    fn attributes(&self, payload: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            tracing::warn!("uplink: an attribute update that is not JSON was ignored");
            return;
        };
        let device = v["device"].as_str().unwrap_or_default().to_string();
        let (Some(tx), Some(data)) = (self.routes.get(&device).cloned(), v["data"].as_object())
        else {
            return;
        };
        if let Some(fw) = &self.firmware {
            fw.offer(&device, data, true);
        }
        for (key, value) in data.clone() {
            let (tx, device) = (tx.clone(), device.clone());
            tokio::spawn(async move {
                let (reply, rx) = oneshot::channel();
                let cmd = Command {
                    device: device.clone(),
                    method: key.clone(),
                    params: value,
                    attribute: true,
                    firmware: None,
                    reply,
                };
                if tx.send(cmd).await.is_ok() {
                    if let Ok(Ok(Err(e))) = tokio::time::timeout(RPC_TIMEOUT, rx).await {
                        tracing::warn!(device, attribute = key, error = %e, "attribute write failed");
                    }
                }
            });
        }
    }
}

/// `Some(online)` when `row` is a sub-device's status (`connector::Reading::status`).
fn row_status(row: &Row) -> Option<bool> {
    if row.device.is_empty() || !row.values.contains(STATUS_KEY) {
        return None;
    }
    let values: serde_json::Map<String, Value> = serde_json::from_str(&row.values).ok()?;
    let reading = crate::connector::Reading {
        device: row.device.clone(),
        ts: row.ts,
        values,
    };
    reading.status_change()
}

impl Uplink {
    /// The answer to a `fw_*` request: `{"id","device","values":{...}}`.
    fn attribute_response(&self, payload: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            tracing::warn!("uplink: an attribute response that is not JSON was ignored");
            return;
        };
        if let (Some(fw), Some(device), Some(values)) = (
            &self.firmware,
            v["device"].as_str(),
            v["values"].as_object(),
        ) {
            fw.offer(device, values, false);
        }
    }
}

/// The topic and payload carrying `rows` (all of one kind): sub-devices' readings as
/// `{"name":[{"ts","values"},...],...}`, the gateway's own as `[{"ts","values"},...]`.
pub fn encode_batch(rows: &[Row], gateway: bool) -> (&'static str, Bytes) {
    let item = |out: &mut String, r: &Row| {
        out.push_str("{\"ts\":");
        out.push_str(&r.ts.to_string());
        out.push_str(",\"values\":");
        out.push_str(&r.values);
        out.push('}');
    };
    let mut out = String::with_capacity(rows.iter().map(|r| r.values.len() + 32).sum());
    if gateway {
        out.push('[');
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            item(&mut out, r);
        }
        out.push(']');
        return ("v1/devices/me/telemetry", out.into());
    }
    // Devices in order of first appearance; each device's readings in queue order.
    let mut order: Vec<&str> = Vec::new();
    let mut by_device: HashMap<&str, Vec<&Row>> = HashMap::new();
    for r in rows {
        by_device
            .entry(r.device.as_str())
            .or_insert_with(|| {
                order.push(r.device.as_str());
                Vec::new()
            })
            .push(r);
    }
    out.push('{');
    for (i, d) in order.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*d).to_string());
        out.push_str(":[");
        for (j, r) in by_device[d].iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            item(&mut out, r);
        }
        out.push(']');
    }
    out.push('}');
    ("v1/gateway/telemetry", out.into())
}

/// Packet ids 1..=65535, skipping those in flight.
#[derive(Default)]
struct PacketIds(u16);

impl PacketIds {
    fn next(&mut self, inflight: &HashMap<u16, InFlight>) -> u16 {
        loop {
            self.0 = self.0.wrapping_add(1).max(1);
            if !inflight.contains_key(&self.0) {
                return self.0;
            }
        }
    }
}

/// FNV-1a: a stable client id from the token without revealing it.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, device: &str, ts: i64) -> Row {
        Row {
            id,
            device: device.into(),
            ts,
            values: format!("{{\"v\":{id}}}"),
        }
    }

    #[test]
    fn batches_group_by_device_in_order() {
        let rows = [row(1, "a", 10), row(2, "b", 11), row(3, "a", 12)];
        let (topic, body) = encode_batch(&rows, false);
        assert_eq!(topic, "v1/gateway/telemetry");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"a":[{"ts":10,"values":{"v":1}},{"ts":12,"values":{"v":3}}],
                   "b":[{"ts":11,"values":{"v":2}}]})
        );
        let (topic, body) = encode_batch(&[row(4, "", 13)], true);
        assert_eq!(topic, "v1/devices/me/telemetry");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!([{"ts":13,"values":{"v":4}}])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_refills_over_time() {
        let mut r = RateLimit::new(100);
        assert_eq!(r.available(), 100);
        r.take(100);
        assert_eq!(r.available(), 0);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(r.available(), 50);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(r.available(), 100);
    }
}
