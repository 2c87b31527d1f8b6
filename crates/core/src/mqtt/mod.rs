//! The broker hooks that make MQTT clients devices. A client authenticates with an access token
//! (user name), MQTT basic credentials or a client certificate; it is then bound to its tenant's
//! namespace and may use the device API topics plus what its profile allows. Clients that are
//! not devices fall through to the configured hooks (static users, anonymous access) in the
//! default namespace. User name `provision` opens a provisioning-only session.

mod sink;
pub mod topics;

use std::sync::{Arc, OnceLock};

use broker::hooks::{BoxFuture, ConnectRequest, Intercept};
use broker::{Broker, Hooks, Identity, Message};
use mqtt_codec::{topic, ReasonCode};
use parking_lot::Mutex;
use serde_json::json;

use crate::device_api::DeviceCtx;
use crate::error::CoreError;
use crate::gateway::GatewayLink;
use crate::sessions::{DownlinkSink, SinkId};
use crate::Platform;
pub use sink::MqttSink;
use topics::DeviceTopic;

/// The namespace of provisioning sessions (no tenant yet).
const PROVISION_NS: &str = "\u{0}provision";

/// What a connection is, kept in `Identity::data`.
enum Who {
    Device(DeviceConn),
    Provision,
}

/// One device connection: its context and what it registered.
struct DeviceConn {
    ctx: Arc<DeviceCtx>,
    sinks: Mutex<Vec<SinkId>>,
    gateway: Option<GatewayLink>,
}

/// Hooks for a broker serving devices.
pub struct DeviceHooks {
    platform: Arc<Platform>,
    fallback: Arc<dyn Hooks>,
    broker: Arc<OnceLock<Broker>>,
}

impl DeviceHooks {
    /// Device hooks in front of `fallback` (the hooks for non-device clients).
    pub fn new(platform: Arc<Platform>, fallback: Arc<dyn Hooks>) -> Arc<DeviceHooks> {
        Arc::new(DeviceHooks {
            platform,
            fallback,
            broker: Arc::new(OnceLock::new()),
        })
    }

    /// Gives the hooks the broker they serve (for replies to one client).
    pub fn attach(&self, broker: Broker) {
        let _ = self.broker.set(broker);
    }

    fn sink(&self, ns: &Arc<str>, client_id: &str, sub_device: Option<&str>) -> Arc<MqttSink> {
        Arc::new(MqttSink {
            broker: self.broker.clone(),
            namespace: ns.clone(),
            client_id: Arc::from(client_id),
            sub_device: sub_device.map(str::to_string),
        })
    }

    fn reply(&self, ns: &Arc<str>, client_id: &str, topic: &str, payload: serde_json::Value) {
        if !self
            .sink(ns, client_id, None)
            .send_raw(topic, payload.to_string().into_bytes())
        {
            tracing::debug!(
                client_id,
                topic,
                "reply dropped: the client does not subscribe to it"
            );
        }
    }

    /// `v2/fw/request/{id}/chunk/{n}` with the chunk size as text (empty: the whole image):
    /// the chunk on `v2/fw/response/{id}/chunk/{n}` (empty past the end, as ThingsBoard does).
    fn on_firmware_request(
        &self,
        ns: &Arc<str>,
        client_id: &str,
        ctx: &DeviceCtx,
        rest: &str,
        body: &[u8],
    ) -> Result<(), CoreError> {
        let bad = || CoreError::Invalid(format!("expected v2/fw/request/ID/chunk/N, not {rest:?}"));
        let (req, index) = rest.split_once("/chunk/").ok_or_else(bad)?;
        let index: u64 = index.parse().map_err(|_| bad())?;
        if req.is_empty() || req.contains('/') {
            return Err(bad());
        }
        let size = std::str::from_utf8(body)
            .ok()
            .map(str::trim)
            .and_then(|s| {
                if s.is_empty() {
                    Some(0)
                } else {
                    s.parse::<usize>().ok()
                }
            })
            .ok_or_else(|| CoreError::Invalid("the payload is the chunk size in bytes".into()))?;
        let chunk = self.platform.firmware_chunk(&ctx.id, size, index)?;
        let topic = format!("v2/fw/response/{req}/chunk/{index}");
        if !self.sink(ns, client_id, None).send_firmware(&topic, chunk) {
            tracing::debug!(
                client_id,
                "firmware chunk dropped: no v2/fw/response/ subscription"
            );
        }
        Ok(())
    }

    fn device_identity(&self, ctx: Arc<DeviceCtx>) -> Identity {
        let mut id = Identity::new(Some(&ctx.name));
        id.namespace = ctx.tenant.clone();
        let gateway = ctx.gateway.then(|| GatewayLink::new(ctx.clone()));
        id.data = Some(Arc::new(Who::Device(DeviceConn {
            ctx,
            sinks: Mutex::new(Vec::new()),
            gateway,
        })));
        id
    }

    async fn authenticate_device(
        &self,
        req: &ConnectRequest<'_>,
    ) -> Result<Option<Arc<DeviceCtx>>, CoreError> {
        let p = &self.platform;
        if let Some(fp) = req.cert_fingerprint {
            if let Some(id) = p.credentials.by_fingerprint(fp)? {
                return Ok(Some(p.device_ctx(&id)?));
            }
        }
        if let Some(user) = req.username {
            if let Ok(ctx) = p.auth_token(user) {
                return Ok(Some(ctx));
            }
        }
        if !p.credentials.may_have_basic() {
            return Ok(None);
        }
        let (creds, client_id) = (p.credentials.clone(), req.client_id.to_string());
        let username = req.username.map(str::to_string);
        let password = req.password.map(|b| b.to_vec());
        let found = tokio::task::spawn_blocking(move || {
            creds.by_basic(&client_id, username.as_deref(), password.as_deref())
        })
        .await
        .map_err(|e| CoreError::Invalid(e.to_string()))??;
        match found {
            Some(id) => Ok(Some(p.device_ctx(&id)?)),
            None => Ok(None),
        }
    }

    fn on_device_publish(
        &self,
        id: &Identity,
        conn: &DeviceConn,
        client_id: &str,
        msg: &Message,
    ) -> Intercept {
        let Some(t) = topics::parse(&msg.topic) else {
            return Intercept::Continue;
        };
        let p = &self.platform;
        let ctx = &conn.ctx;
        p.state.activity(ctx, "mqtt").ok();
        let body = &msg.payload[..];
        let ns = &id.namespace;
        // Telemetry is acknowledged once it is committed to the store.
        let mut commits = Vec::new();
        let result = match t {
            DeviceTopic::Telemetry => p.post_telemetry(ctx, body).map(|c| commits.push(c)),
            DeviceTopic::Attributes => p.post_attributes(ctx, body),
            DeviceTopic::AttributeRequest(req) => Platform::attribute_request_keys(body)
                .and_then(|(c, s)| p.request_attributes(&ctx.id, c, s))
                .map(|v| {
                    self.reply(
                        ns,
                        client_id,
                        &format!("v1/devices/me/attributes/response/{req}"),
                        v,
                    )
                }),
            DeviceTopic::RpcResponse(rid) => match rid.parse::<i64>() {
                Ok(rid) => match p.rpc_reply(ctx, rid, body) {
                    Err(CoreError::NotFound(what)) => {
                        tracing::info!(device = %ctx.id, rpc = rid, "reply to {what}: ignored");
                        Ok(())
                    }
                    other => other,
                },
                Err(_) => Err(CoreError::Invalid(format!(
                    "RPC id {rid:?} is not a number"
                ))),
            },
            DeviceTopic::RpcRequest(rid) => {
                let answer = match p.client_rpc(ctx, body) {
                    Ok(v) => v,
                    Err(e) => json!({ "error": e.to_string() }),
                };
                self.reply(
                    ns,
                    client_id,
                    &format!("v1/devices/me/rpc/response/{rid}"),
                    answer,
                );
                Ok(())
            }
            DeviceTopic::Gateway(what) => match &conn.gateway {
                Some(gw) => self
                    .on_gateway_publish(gw, ns, client_id, what, body)
                    .map(|c| commits = c),
                None => Err(CoreError::Unauthorized),
            },
            DeviceTopic::Firmware(rest) => self.on_firmware_request(ns, client_id, ctx, rest, body),
        };
        match result {
            Ok(()) if commits.is_empty() => Intercept::Consume,
            Ok(()) => deferred(ctx, commits),
            // Not taken: a 3.1.1 client must not get a PUBACK for it (it would be lost), so the
            // refusal goes through the deferred path, which disconnects 3.1.1 clients.
            Err(CoreError::DiskFull) => {
                let why = CoreError::DiskFull.to_string();
                refuse(ctx, &msg.topic, CoreError::DiskFull);
                Intercept::Defer(Box::pin(std::future::ready(Err((
                    ReasonCode::QUOTA_EXCEEDED,
                    Some(why),
                )))))
            }
            Err(e) => refuse(ctx, &msg.topic, e),
        }
    }

    fn on_gateway_publish(
        &self,
        gw: &GatewayLink,
        ns: &Arc<str>,
        client_id: &str,
        what: &str,
        body: &[u8],
    ) -> Result<Vec<store::Commit>, CoreError> {
        let p = &self.platform;
        let factory =
            |name: &str| -> Arc<dyn DownlinkSink> { self.sink(ns, client_id, Some(name)) };
        match what {
            "telemetry" => return gw.on_telemetry(p, body, &factory),
            "connect" => gw.on_connect(p, body, &factory),
            "disconnect" => gw.on_disconnect(p, body),
            "attributes" => gw.on_attributes(p, body, &factory),
            "attributes/request" => gw.on_attribute_request(p, body, &factory).map(|v| {
                self.reply(ns, client_id, "v1/gateway/attributes/response", v);
            }),
            "rpc" => gw.on_rpc_reply(p, body, &factory),
            other => Err(CoreError::NotFound(format!("gateway topic {other:?}"))),
        }
        .map(|()| Vec::new())
    }
}

/// Acknowledge once every commit is done; a store failure is 0x80 with the error (a 3.1.1
/// client is disconnected by the broker so that it sends again).
fn deferred(ctx: &DeviceCtx, commits: Vec<store::Commit>) -> Intercept {
    let device = ctx.id.clone();
    Intercept::Defer(Box::pin(async move {
        for c in commits {
            if let Err(e) = c.await {
                tracing::warn!(%device, error = %e, "telemetry not stored");
                metrics::counter!("device_messages_failed_total").increment(1);
                return Err((ReasonCode::UNSPECIFIED_ERROR, Some(e.to_string())));
            }
        }
        Ok(())
    }))
}

/// A refused device message: v5 gets the reason code and string; for 3.1.1 (acked anyway) it
/// is logged and counted.
fn refuse(ctx: &DeviceCtx, topic: &str, e: CoreError) -> Intercept {
    tracing::info!(device = %ctx.id, name = %ctx.name, topic, error = %e, "device message refused");
    metrics::counter!("device_messages_rejected_total").increment(1);
    let code = match &e {
        CoreError::Invalid(_) => ReasonCode::PAYLOAD_FORMAT_INVALID,
        CoreError::Unauthorized => ReasonCode::NOT_AUTHORIZED,
        CoreError::NotFound(_) => ReasonCode::TOPIC_NAME_INVALID,
        _ => ReasonCode::UNSPECIFIED_ERROR,
    };
    let mut why = e.to_string();
    why.truncate(200);
    Intercept::Reject(code, Some(why))
}

fn who(id: &Identity) -> Option<&Who> {
    id.data.as_ref()?.downcast_ref::<Who>()
}

impl Hooks for DeviceHooks {
    fn authenticate<'a>(
        &'a self,
        req: ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Identity, ReasonCode>> {
        Box::pin(async move {
            if req.username == Some("provision") && req.password.is_none() {
                let mut id = Identity::new(Some("provision"));
                id.namespace = Arc::from(PROVISION_NS);
                id.data = Some(Arc::new(Who::Provision));
                return Ok(id);
            }
            match self.authenticate_device(&req).await {
                Ok(Some(ctx)) => {
                    tracing::debug!(device = %ctx.id, client_id = %req.client_id, "device authenticated");
                    return Ok(self.device_identity(ctx));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "device authentication failed");
                    return Err(ReasonCode::SERVER_UNAVAILABLE);
                }
            }
            let v5 = req.v5;
            match self.fallback.authenticate(req).await {
                // A refused token: "bad user name or password" in 5.0, "not authorised" (0x05)
                // in 3.1.1, as ThingsBoard answers.
                Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD) if !v5 => {
                    Err(ReasonCode::NOT_AUTHORIZED)
                }
                Err(ReasonCode::NOT_AUTHORIZED) if v5 => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
                other => other,
            }
        })
    }

    fn authorize_publish(&self, id: &Identity, client_id: &str, t: &str) -> bool {
        match who(id) {
            Some(Who::Device(d)) => {
                topics::device_may_publish(t, d.ctx.gateway)
                    || d.ctx
                        .spec
                        .allow_publish
                        .iter()
                        .any(|f| topic::matches(f, t))
            }
            Some(Who::Provision) => t == "/provision/request",
            None => self.fallback.authorize_publish(id, client_id, t),
        }
    }

    fn authorize_subscribe(&self, id: &Identity, client_id: &str, filter: &str) -> bool {
        match who(id) {
            Some(Who::Device(d)) => {
                topics::device_may_subscribe(filter, d.ctx.gateway)
                    || d.ctx
                        .spec
                        .allow_subscribe
                        .iter()
                        .any(|f| broker::hooks::filter_covers(f, filter))
            }
            Some(Who::Provision) => filter == "/provision/response",
            None => self.fallback.authorize_subscribe(id, client_id, filter),
        }
    }

    fn intercept(&self, id: &Identity, client_id: &str, msg: &Message) -> Intercept {
        match who(id) {
            Some(Who::Device(d)) => self.on_device_publish(id, d, client_id, msg),
            Some(Who::Provision) => {
                let answer = self.platform.provision(&msg.payload);
                self.reply(&id.namespace, client_id, "/provision/response", answer);
                Intercept::Consume
            }
            None => self.fallback.intercept(id, client_id, msg),
        }
    }

    fn on_connected(&self, id: &Identity, client_id: &str) {
        let Some(Who::Device(d)) = who(id) else {
            return self.fallback.on_connected(id, client_id);
        };
        let p = &self.platform;
        let sink = self.sink(&id.namespace, client_id, None);
        d.sinks
            .lock()
            .push(p.sessions.register(d.ctx.id.clone(), sink.clone(), true));
        if let Err(e) = p.state.connected(&d.ctx, "mqtt") {
            tracing::warn!(device = %d.ctx.id, error = %e, "recording connect failed");
        }
        // A persistent session already has its subscriptions: queued RPCs can go now.
        let _ = p.rpc.deliver_queued(&d.ctx.id, sink.as_ref());
    }

    fn on_subscribed(&self, id: &Identity, client_id: &str, filter: &str) {
        let Some(Who::Device(d)) = who(id) else {
            return self.fallback.on_subscribed(id, client_id, filter);
        };
        let p = &self.platform;
        if topic::matches(filter, "v1/devices/me/rpc/request/1") {
            let _ = p.rpc.deliver_queued(
                &d.ctx.id,
                self.sink(&id.namespace, client_id, None).as_ref(),
            );
        }
        if let Some(gw) = &d.gateway {
            if topic::matches(filter, "v1/gateway/rpc") {
                let factory = |name: &str| -> Arc<dyn DownlinkSink> {
                    self.sink(&id.namespace, client_id, Some(name))
                };
                gw.redeliver(p, &factory);
            }
        }
    }

    fn on_delivered(&self, id: &Identity, client_id: &str, msg: &Message) {
        let Some(Who::Device(d)) = who(id) else {
            return self.fallback.on_delivered(id, client_id, msg);
        };
        let rpcs = &self.platform.rpc;
        if let Some(rid) = msg.topic.strip_prefix("v1/devices/me/rpc/request/") {
            if let Ok(rid) = rid.parse() {
                let _ = rpcs.delivered(&d.ctx.id, rid);
            }
        } else if let (Some(gw), "v1/gateway/rpc") = (&d.gateway, &*msg.topic) {
            let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
            let name = v["device"].as_str().unwrap_or_default();
            if let (Some(sub), Some(rid)) = (gw.sub_device(name), v["data"]["id"].as_i64()) {
                let _ = rpcs.delivered(&sub.id, rid);
            }
        }
    }

    fn on_disconnected(&self, id: &Identity, client_id: &str) {
        let Some(Who::Device(d)) = who(id) else {
            return self.fallback.on_disconnected(id, client_id);
        };
        let p = &self.platform;
        for sid in d.sinks.lock().drain(..) {
            p.sessions.unregister(&sid);
        }
        if let Some(gw) = &d.gateway {
            gw.close(p);
        }
        if let Err(e) = p.state.disconnected(&d.ctx, "mqtt") {
            tracing::warn!(device = %d.ctx.id, error = %e, "recording disconnect failed");
        }
    }
}
