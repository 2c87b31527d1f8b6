//! The gateway API: a gateway device reports for sub-devices it names (auto-created with the
//! named profile, remembered as its children), connects and disconnects them, and receives their
//! shared-attribute updates and RPCs. One [`GatewayLink`] per gateway connection.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::db::now_ms;
use crate::device_api::DeviceCtx;
use crate::error::{CoreError, Result};
use crate::model::NewDevice;
use crate::payload::{self, Point};
use crate::sessions::{DownlinkSink, SinkId};
use crate::Platform;

/// Builds the sink that reaches sub-device `name` through the gateway's connection.
pub type SinkFactory<'a> = &'a dyn Fn(&str) -> Arc<dyn DownlinkSink>;

/// One gateway connection and the sub-devices connected through it.
pub struct GatewayLink {
    pub gateway: Arc<DeviceCtx>,
    subs: Mutex<HashMap<String, (Arc<DeviceCtx>, SinkId)>>,
}

fn device_name(v: &Value) -> Result<&str> {
    v.get("device")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CoreError::Invalid("\"device\" (the sub-device's name) is required".into()))
}

impl GatewayLink {
    /// A link for a gateway's connection.
    pub fn new(gateway: Arc<DeviceCtx>) -> GatewayLink {
        GatewayLink {
            gateway,
            subs: Mutex::new(HashMap::new()),
        }
    }

    /// The sub-device `name`, connected through this link (created on first mention).
    pub fn connect(
        &self,
        p: &Platform,
        name: &str,
        profile: Option<&str>,
        sink: SinkFactory,
    ) -> Result<Arc<DeviceCtx>> {
        if let Some((ctx, _)) = self.subs.lock().get(name) {
            return Ok(ctx.clone());
        }
        let gw = &self.gateway;
        let device = match p.registry.device_in(&gw.tenant, name) {
            Ok(d) => d,
            Err(CoreError::NotFound(_)) => {
                let new = NewDevice {
                    name: name.to_string(),
                    profile: Some(profile.unwrap_or(crate::registry::DEFAULT).to_string()),
                    ..NewDevice::default()
                };
                let d = match p.registry.insert_device(&gw.tenant, &new, Some(&gw.id)) {
                    Err(CoreError::NotFound(_)) if profile.is_some() => {
                        // An unknown profile name: ThingsBoard creates the profile; we use the default.
                        let new = NewDevice {
                            profile: None,
                            ..new
                        };
                        p.registry.insert_device(&gw.tenant, &new, Some(&gw.id))?
                    }
                    other => other?,
                };
                tracing::info!(gateway = %gw.id, device = %d.id, name, "sub-device created");
                d
            }
            Err(e) => return Err(e),
        };
        if device.gateway {
            return Err(CoreError::Invalid(format!(
                "{name:?} is a gateway, not a sub-device"
            )));
        }
        let ctx = p.device_ctx(&device.id)?;
        let s = sink(name);
        let sid = p.sessions.register(ctx.id.clone(), s.clone(), true);
        let fresh = {
            let mut subs = self.subs.lock();
            match subs.get(name) {
                Some((existing, _)) => Err(existing.clone()),
                None => {
                    subs.insert(name.to_string(), (ctx.clone(), sid.clone()));
                    Ok(())
                }
            }
        };
        if let Err(existing) = fresh {
            // Raced with another message naming the same device.
            p.sessions.unregister(&sid);
            return Ok(existing);
        }
        p.state.connected(&ctx, "gateway")?;
        p.rpc.deliver_queued(&ctx.id, s.as_ref())?;
        Ok(ctx)
    }

    /// A connected sub-device by name.
    pub fn sub_device(&self, name: &str) -> Option<Arc<DeviceCtx>> {
        self.subs.lock().get(name).map(|(c, _)| c.clone())
    }

    /// Disconnects a sub-device.
    pub fn disconnect(&self, p: &Platform, name: &str) {
        let removed = self.subs.lock().remove(name);
        if let Some((ctx, sid)) = removed {
            p.sessions.unregister(&sid);
            let _ = p.state.disconnected(&ctx, "gateway");
        }
    }

    /// Disconnects every sub-device (the gateway's connection ended).
    pub fn close(&self, p: &Platform) {
        let names: Vec<String> = self.subs.lock().keys().cloned().collect();
        for n in names {
            self.disconnect(p, &n);
        }
    }

    /// Re-offers queued RPCs to every connected sub-device (the gateway just subscribed).
    pub fn redeliver(&self, p: &Platform, sink: SinkFactory) {
        let subs: Vec<(String, Arc<DeviceCtx>)> = self
            .subs
            .lock()
            .iter()
            .map(|(n, (c, _))| (n.clone(), c.clone()))
            .collect();
        for (name, ctx) in subs {
            let _ = p.rpc.deliver_queued(&ctx.id, sink(&name).as_ref());
        }
    }

    /// `v1/gateway/connect`.
    pub fn on_connect(&self, p: &Platform, body: &[u8], sink: SinkFactory) -> Result<()> {
        let v = payload::json(body)?;
        let name = device_name(&v)?;
        let profile = v.get("type").and_then(Value::as_str);
        self.connect(p, name, profile, sink).map(|_| ())
    }

    /// `v1/gateway/disconnect`.
    pub fn on_disconnect(&self, p: &Platform, body: &[u8]) -> Result<()> {
        let v = payload::json(body)?;
        self.disconnect(p, device_name(&v)?);
        Ok(())
    }

    /// `v1/gateway/telemetry`: `{"name":[{"ts","values"}] | {"k":v}, ...}`; parsed and checked
    /// whole first. Returns one commit per sub-device, to wait for before acknowledging.
    pub fn on_telemetry(
        &self,
        p: &Platform,
        body: &[u8],
        sink: SinkFactory,
    ) -> Result<Vec<store::Commit>> {
        let Value::Object(by_device) = payload::json(body)? else {
            return Err(CoreError::Invalid(
                "gateway telemetry must be an object keyed by device name".into(),
            ));
        };
        let now = now_ms();
        let parsed: Vec<(String, Vec<Point>)> = by_device
            .iter()
            .map(|(name, v)| {
                let points = payload::telemetry_value(v, now)?;
                p.check_window(&points)?;
                Ok((name.clone(), points))
            })
            .collect::<Result<_>>()?;
        let mut ready = Vec::with_capacity(parsed.len());
        for (name, points) in parsed {
            let ctx = self.connect(p, &name, None, sink)?;
            crate::device_api::check_types(&ctx, &points)?;
            ready.push((ctx, points));
        }
        let mut commits = Vec::with_capacity(ready.len());
        for (ctx, points) in ready {
            commits.push(p.store_points(&ctx, points)?);
        }
        Ok(commits)
    }

    /// `v1/gateway/attributes`: `{"name":{"k":v}, ...}`.
    pub fn on_attributes(&self, p: &Platform, body: &[u8], sink: SinkFactory) -> Result<()> {
        let Value::Object(by_device) = payload::json(body)? else {
            return Err(CoreError::Invalid(
                "gateway attributes must be an object keyed by device name".into(),
            ));
        };
        let parsed: Vec<(String, Map<String, Value>)> = by_device
            .into_iter()
            .map(|(name, v)| Ok((name, payload::attributes_value(v)?)))
            .collect::<Result<_>>()?;
        for (name, map) in parsed {
            let ctx = self.connect(p, &name, None, sink)?;
            p.store_client_attributes(&ctx, map)?;
        }
        Ok(())
    }

    /// `v1/gateway/attributes/request` → the response payload.
    pub fn on_attribute_request(
        &self,
        p: &Platform,
        body: &[u8],
        sink: SinkFactory,
    ) -> Result<Value> {
        let v = payload::json(body)?;
        let name = device_name(&v)?;
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        let client = v.get("client").and_then(Value::as_bool).unwrap_or(false);
        let ctx = self.connect(p, name, None, sink)?;
        let scope = if client {
            crate::attributes::Scope::Client
        } else {
            crate::attributes::Scope::Shared
        };
        if let Some(key) = v.get("key").and_then(Value::as_str) {
            let values = p
                .attributes
                .values(&ctx.id, scope, Some(&[key.to_string()]))?;
            let value = values.get(key).cloned().unwrap_or(Value::Null);
            return Ok(json!({"id": id, "device": name, "value": value}));
        }
        let keys = payload::key_list(v.get("keys"));
        let values = p.attributes.values(&ctx.id, scope, keys.as_deref())?;
        Ok(json!({"id": id, "device": name, "values": values}))
    }

    /// `v1/gateway/rpc` from the gateway: a sub-device's reply `{"device","id","data"}`.
    pub fn on_rpc_reply(&self, p: &Platform, body: &[u8], sink: SinkFactory) -> Result<()> {
        let v = payload::json(body)?;
        let name = device_name(&v)?;
        let id = v
            .get("id")
            .and_then(|i| {
                i.as_i64()
                    .or_else(|| i.as_str().and_then(|s| s.parse().ok()))
            })
            .ok_or_else(|| CoreError::Invalid("\"id\" of the RPC is required".into()))?;
        let ctx = self.connect(p, name, None, sink)?;
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        p.rpc_reply(&ctx, id, data.to_string().as_bytes())
    }
}
