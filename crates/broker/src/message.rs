//! An application message as the broker routes it, and one delivery of it to one session.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use mqtt_codec::{Properties, QoS};
use tokio::time::Instant;

/// A published message, shared by every subscriber it is delivered to.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic space it was published in.
    pub namespace: Arc<str>,
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Forwarded v5 properties: payload format, content type, response topic, correlation data,
    /// user properties. Expiry is kept as `expires_at` instead.
    pub properties: Properties,
    pub expires_at: Option<Instant>,
    /// Session id of the publisher (for no-local), 0 when none.
    pub origin: u64,
    /// Row id once stored for a persistent session.
    pub store_id: OnceLock<u64>,
}

impl Message {
    /// A plain message in `namespace`.
    pub fn new(
        namespace: Arc<str>,
        topic: Arc<str>,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Message {
        Message {
            namespace,
            topic,
            payload,
            qos,
            retain,
            properties: Properties::default(),
            expires_at: None,
            origin: 0,
            store_id: OnceLock::new(),
        }
    }

    /// Whether the message has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Remaining expiry interval in whole seconds (rounded up), if any.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            secs.min(u64::from(u32::MAX)) as u32
        })
    }

    /// Approximate memory cost, for queue byte limits.
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// Granted QoS: min(message QoS, subscription QoS).
    pub qos: QoS,
    /// The retain flag as sent.
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Set when it came through a shared subscription `(group, filter)`, so it can be handed to
    /// another member if this one goes away without acknowledging it.
    pub share: Option<Arc<(Arc<str>, Arc<str>)>>,
    /// Its queue row when stored for a persistent session.
    pub row: Option<u64>,
}
