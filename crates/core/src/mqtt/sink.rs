//! The way down to an MQTT device: downlinks become messages delivered straight to the
//! device's own session (`Broker::deliver_to`), never routed by topic, because every device of a
//! tenant subscribes to the same `v1/devices/me/...` topics.

use std::sync::{Arc, OnceLock};

use broker::{Broker, Message};
use bytes::Bytes;
use mqtt_codec::QoS;
use serde_json::json;

use crate::sessions::{Downlink, DownlinkSink};

/// A device's MQTT session, or a sub-device reached through its gateway's session.
pub struct MqttSink {
    pub broker: Arc<OnceLock<Broker>>,
    pub namespace: Arc<str>,
    pub client_id: Arc<str>,
    /// The sub-device's name when this reaches it through a gateway.
    pub sub_device: Option<String>,
}

impl MqttSink {
    /// Sends a payload to the device's session on `topic`; false if it does not subscribe to it.
    pub fn send_raw(&self, topic: &str, payload: Vec<u8>) -> bool {
        let Some(broker) = self.broker.get() else {
            return false;
        };
        broker.deliver_to(&self.client_id, self.message(topic, payload))
    }

    /// A firmware chunk on `topic` (`v2/fw/response/...`), delivered through any of the
    /// session's `v2/fw/response/` filters: ThingsBoard's SDK subscribes to `v2/fw/response/+`
    /// and expects `v2/fw/response/{id}/chunk/{n}`, which ThingsBoard sends regardless.
    pub fn send_firmware(&self, topic: &str, payload: Vec<u8>) -> bool {
        let Some(broker) = self.broker.get() else {
            return false;
        };
        let msg = self.message(topic, payload);
        broker.deliver_to_prefix(&self.client_id, msg, "v2/fw/response/")
    }

    /// A QoS 1 message on `topic` in the device's namespace.
    fn message(&self, topic: &str, payload: Vec<u8>) -> Message {
        Message::new(
            self.namespace.clone(),
            Arc::from(topic),
            Bytes::from(payload),
            QoS::AtLeastOnce,
            false,
        )
    }
}

impl DownlinkSink for MqttSink {
    fn send(&self, d: &Downlink) -> bool {
        let (topic, payload) = match (&self.sub_device, d) {
            (None, Downlink::Attributes(v)) => ("v1/devices/me/attributes".to_string(), v.clone()),
            (None, Downlink::Rpc { id, method, params }) => (
                format!("v1/devices/me/rpc/request/{id}"),
                json!({"method": method, "params": params}),
            ),
            (Some(name), Downlink::Attributes(v)) => (
                "v1/gateway/attributes".to_string(),
                json!({"device": name, "data": v}),
            ),
            (Some(name), Downlink::Rpc { id, method, params }) => (
                "v1/gateway/rpc".to_string(),
                json!({"device": name, "data": {"id": id, "method": method, "params": params}}),
            ),
        };
        self.send_raw(&topic, payload.to_string().into_bytes())
    }

    fn close(&self) {
        // A sub-device's sink is its gateway's connection, which stays.
        if self.sub_device.is_none() {
            if let Some(broker) = self.broker.get() {
                broker.disconnect_client(
                    &self.namespace,
                    &self.client_id,
                    mqtt_codec::ReasonCode::NOT_AUTHORIZED,
                );
            }
        }
    }
}
