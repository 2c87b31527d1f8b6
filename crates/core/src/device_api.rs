//! The device API, transport-neutral: MQTT, HTTP and CoAP adapters authenticate a device into a
//! [`DeviceCtx`] and call these. Everything a device sends is parsed whole before anything is
//! stored (all or nothing) and, once stored, published on the bus.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::attributes::Scope;
use crate::bus::{Event, EventKind};
use crate::db::now_ms;
use crate::error::{CoreError, Result};
use crate::model::ProfileSpec;
use crate::payload;
use crate::sessions::Downlink;
use crate::Platform;

/// Requested client and shared keys (`None`: not asked for).
pub type KeyRequest = (Option<Vec<String>>, Option<Vec<String>>);

/// An authenticated device, as a transport holds it for a connection or request.
#[derive(Debug, Clone)]
pub struct DeviceCtx {
    pub id: Arc<str>,
    pub tenant: Arc<str>,
    /// The profile's id.
    pub profile: Arc<str>,
    pub name: String,
    pub gateway: bool,
    pub spec: ProfileSpec,
}

impl DeviceCtx {
    /// The telemetry store's retention group of the device: its tenant and profile.
    pub fn retention_group(&self) -> String {
        retention_group(&self.tenant, &self.profile)
    }
}

/// The retention group of a tenant's profile.
pub fn retention_group(tenant: &str, profile: &str) -> String {
    format!("{tenant}/{profile}")
}

/// Refuses a message holding a value of the wrong type for a key its profile declares.
pub fn check_types(ctx: &DeviceCtx, points: &[payload::Point]) -> Result<()> {
    let types = &ctx.spec.telemetry_types;
    if types.is_empty() {
        return Ok(());
    }
    for p in points {
        if let Some(t) = types.get(&p.key) {
            if !t.admits(&p.value) {
                return Err(CoreError::Invalid(format!(
                    "key {:?} is declared {t:?} in the device profile; got {}",
                    p.key, p.value
                )));
            }
        }
    }
    Ok(())
}

/// What `getSessionLimits` tells a device (ThingsBoard's SDKs ask right after connecting).
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_payload_size: usize,
    pub max_inflight_messages: u32,
    /// Messages per second per device, if limited.
    pub messages_per_second: Option<u32>,
}

/// What telemetry is accepted.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Oldest timestamp accepted, as an age in ms.
    pub max_past_ms: i64,
    /// Newest timestamp accepted, ms ahead of the platform's clock.
    pub max_future_ms: i64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_past_ms: 10 * 366 * 86_400_000,
            max_future_ms: 86_400_000,
        }
    }
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_payload_size: 65_536,
            max_inflight_messages: 100,
            messages_per_second: None,
        }
    }
}

impl Platform {
    /// The context of a device by id.
    pub fn device_ctx(&self, id: &str) -> Result<Arc<DeviceCtx>> {
        let d = self.registry.device(id)?;
        let spec = self.registry.spec_of(&d)?;
        Ok(Arc::new(DeviceCtx {
            id: Arc::from(d.id.as_str()),
            tenant: Arc::from(d.tenant.as_str()),
            profile: Arc::from(d.profile_id.as_str()),
            name: d.name,
            gateway: d.gateway,
            spec,
        }))
    }

    /// Deletes a device and closes its live sessions.
    pub fn delete_device(&self, id: &str) -> Result<crate::model::Device> {
        let d = self.registry.delete_device(id)?;
        self.sessions.close(&d.id);
        if let Err(e) = self.telemetry.delete(&d.id, i64::MIN, i64::MAX) {
            tracing::warn!(device = %d.id, error = %e, "deleting the device's telemetry failed");
        }
        self.state.forget(&d.id);
        Ok(d)
    }

    /// Sets a device credential; a revocation without grace (`grace_s = 0`) also closes the
    /// device's live sessions, which may be using the old one. Returns a generated token.
    pub fn set_credentials(
        &self,
        device: &str,
        new: crate::credentials::NewCredential,
    ) -> Result<Option<String>> {
        let immediate = new.grace_s() == 0;
        let token = self.credentials.set(device, new)?;
        if immediate {
            self.sessions.close(device);
        }
        Ok(token)
    }

    /// Deletes a tenant with everything in it and closes its devices' live sessions.
    pub fn delete_tenant(&self, id_or_name: &str) -> Result<crate::model::Tenant> {
        let t = self.registry.tenant(id_or_name)?;
        let ids = self.registry.device_ids(&t.id)?;
        let t = self.registry.delete_tenant(&t.id)?;
        for id in ids {
            self.sessions.close(&id);
            if let Err(e) = self.telemetry.delete(&id, i64::MIN, i64::MAX) {
                tracing::warn!(device = %id, error = %e, "deleting the device's telemetry failed");
            }
            self.state.forget(&id);
        }
        Ok(t)
    }

    /// Authenticates an access token.
    pub fn auth_token(&self, token: &str) -> Result<Arc<DeviceCtx>> {
        match self.credentials.by_token(token)? {
            Some(id) => self.device_ctx(&id),
            None => Err(CoreError::Unauthorized),
        }
    }

    /// Notes traffic from an HTTP or CoAP device (online until its inactivity timeout).
    pub fn touch(&self, ctx: &DeviceCtx, transport: &'static str) {
        if let Err(e) = self.state.activity(ctx, transport) {
            tracing::warn!(device = %ctx.id, error = %e, "recording activity failed");
        }
    }

    /// Telemetry from a device, parsed and checked whole; returns the commit to wait for
    /// before acknowledging it.
    pub fn post_telemetry(&self, ctx: &DeviceCtx, body: &[u8]) -> Result<store::Commit> {
        let points = self.parse_telemetry(body)?;
        check_types(ctx, &points)?;
        self.store_points(ctx, points)
    }

    /// Parses telemetry and checks its timestamps against the accepted window.
    pub fn parse_telemetry(&self, body: &[u8]) -> Result<Vec<payload::Point>> {
        let points = payload::telemetry(body, now_ms())?;
        self.check_window(&points)?;
        Ok(points)
    }

    /// Refuses points whose timestamps are too far in the past or future.
    pub fn check_window(&self, points: &[payload::Point]) -> Result<()> {
        let now = now_ms();
        let (lo, hi) = (
            now - self.ingest.max_past_ms,
            now + self.ingest.max_future_ms,
        );
        match points.iter().find(|p| p.ts < lo || p.ts > hi) {
            Some(p) => Err(CoreError::Invalid(format!(
                "timestamp {} of {:?} is outside the accepted window [{lo}, {hi}]",
                p.ts, p.key
            ))),
            None => Ok(()),
        }
    }

    /// Stores parsed points (one commit) and publishes them; refused while the disk guard is
    /// tripped.
    pub fn store_points(
        &self,
        ctx: &DeviceCtx,
        points: Vec<payload::Point>,
    ) -> Result<store::Commit> {
        if self.disk.full() {
            metrics::counter!("telemetry_refused_disk_full_total").increment(1);
            return Err(CoreError::DiskFull);
        }
        let stored: Vec<store::Point> = points
            .iter()
            .filter_map(|p| {
                Some(store::Point {
                    key: p.key.clone(),
                    ts: p.ts,
                    value: store::Value::from_json(&p.value)?,
                })
            })
            .collect();
        let commit = self
            .telemetry
            .write(&ctx.id, &ctx.retention_group(), stored);
        let n = points.len();
        metrics::counter!("telemetry_points_total").increment(n as u64);
        self.traffic.record(&ctx.tenant, n);
        self.note_update_reports(ctx, &points);
        self.bus.publish(Event {
            tenant: ctx.tenant.clone(),
            device: ctx.id.clone(),
            ts: now_ms(),
            kind: EventKind::Telemetry(points),
        });
        Ok(commit)
    }

    /// Update states a device reports as telemetry (`fw_state`, `current_fw_version`, ...) go
    /// to its firmware record too.
    fn note_update_reports(&self, ctx: &DeviceCtx, points: &[payload::Point]) {
        let is_report = |k: &str| {
            k.starts_with("fw_")
                || k.starts_with("sw_")
                || k.starts_with("current_fw_")
                || k.starts_with("current_sw_")
        };
        if !points.iter().any(|p| is_report(&p.key)) {
            return;
        }
        let mut by_ts: std::collections::BTreeMap<i64, Map<String, Value>> = Default::default();
        for p in points.iter().filter(|p| is_report(&p.key)) {
            by_ts
                .entry(p.ts)
                .or_default()
                .insert(p.key.clone(), p.value.clone());
        }
        for (ts, values) in by_ts {
            if let Err(e) = self.firmware.report(&ctx.id, ts, &values) {
                tracing::warn!(device = %ctx.id, error = %e, "recording a firmware report");
            }
        }
    }

    /// Client attributes from a device.
    pub fn post_attributes(&self, ctx: &DeviceCtx, body: &[u8]) -> Result<()> {
        let map = payload::attributes(body)?;
        self.store_client_attributes(ctx, map)
    }

    /// Stores parsed client attributes and publishes them.
    pub fn store_client_attributes(&self, ctx: &DeviceCtx, map: Map<String, Value>) -> Result<()> {
        let now = now_ms();
        self.attributes.save(&ctx.id, Scope::Client, &map, now)?;
        self.bus.publish(Event {
            tenant: ctx.tenant.clone(),
            device: ctx.id.clone(),
            ts: now,
            kind: EventKind::Attributes(map),
        });
        Ok(())
    }

    /// `{"client":{..},"shared":{..}}` for a device's attribute request. A scope whose key
    /// list is absent is returned whole when neither list is given, and left out otherwise.
    pub fn request_attributes(
        &self,
        device: &str,
        client: Option<Vec<String>>,
        shared: Option<Vec<String>>,
    ) -> Result<Value> {
        let all = client.is_none() && shared.is_none();
        let mut out = Map::new();
        if all || client.is_some() {
            out.insert(
                "client".into(),
                Value::Object(
                    self.attributes
                        .values(device, Scope::Client, client.as_deref())?,
                ),
            );
        }
        if all || shared.is_some() {
            out.insert(
                "shared".into(),
                Value::Object(
                    self.attributes
                        .values(device, Scope::Shared, shared.as_deref())?,
                ),
            );
        }
        Ok(Value::Object(out))
    }

    /// Parses a `{"clientKeys":"a,b","sharedKeys":"c"}` request body (empty body: everything).
    pub fn attribute_request_keys(body: &[u8]) -> Result<KeyRequest> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok((None, None));
        }
        let v = payload::json(body)?;
        if !v.is_object() {
            return Err(CoreError::Invalid(
                "attribute request must be a JSON object".into(),
            ));
        }
        Ok((
            payload::key_list(v.get("clientKeys")),
            payload::key_list(v.get("sharedKeys")),
        ))
    }

    /// Sets shared attributes (desired state) and pushes them to the device.
    pub fn set_shared(&self, device: &str, map: Map<String, Value>) -> Result<()> {
        for (k, v) in &map {
            if k.is_empty() || k.len() > payload::MAX_KEY_LEN || v.is_null() {
                return Err(CoreError::Invalid(format!("bad attribute {k:?}")));
            }
        }
        self.attributes
            .save(device, Scope::Shared, &map, now_ms())?;
        self.sessions
            .send(device, &Downlink::Attributes(Value::Object(map)));
        Ok(())
    }

    /// Deletes shared attributes and tells the device which went.
    pub fn delete_shared(&self, device: &str, keys: &[String]) -> Result<Vec<String>> {
        let deleted = self.attributes.delete(device, Scope::Shared, keys)?;
        if !deleted.is_empty() {
            self.sessions
                .send(device, &Downlink::Attributes(json!({ "deleted": deleted })));
        }
        Ok(deleted)
    }

    /// A device's reply to server-side RPC `id`.
    pub fn rpc_reply(&self, ctx: &DeviceCtx, id: i64, body: &[u8]) -> Result<()> {
        let response = if body.is_empty() {
            Value::Null
        } else {
            payload::json(body)?
        };
        self.rpc.reply(&ctx.id, id, response.clone())?;
        self.bus.publish(Event {
            tenant: ctx.tenant.clone(),
            device: ctx.id.clone(),
            ts: now_ms(),
            kind: EventKind::RpcReply { id, response },
        });
        Ok(())
    }

    /// A client-side RPC (the device asks the platform); returns the answer.
    pub fn client_rpc(&self, _ctx: &DeviceCtx, body: &[u8]) -> Result<Value> {
        let v = payload::json(body)?;
        let method = v
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| CoreError::Invalid("client RPC needs a \"method\"".into()))?;
        match method {
            "getSessionLimits" => Ok(self.session_limits()),
            "getCurrentTime" => Ok(json!({ "time": now_ms() })),
            other => Err(CoreError::NotFound(format!("client RPC method {other:?}"))),
        }
    }

    /// The `getSessionLimits` answer.
    pub fn session_limits(&self) -> Value {
        let l = &self.limits;
        let rate = l
            .messages_per_second
            .map(|r| format!("{r}:1"))
            .unwrap_or_default();
        json!({
            "maxPayloadSize": l.max_payload_size,
            "maxInflightMessages": l.max_inflight_messages,
            "rateLimits": {
                "messages": rate,
                "telemetryMessages": rate,
                "telemetryDataPoints": "",
            },
        })
    }
}
