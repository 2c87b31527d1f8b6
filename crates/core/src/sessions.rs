//! Live device sessions and the way down to them. Each transport registers a [`DownlinkSink`]
//! for a device while it can reach it (an MQTT connection, an HTTP long poll, a CoAP observe,
//! a gateway connection for its sub-devices); the platform sends shared-attribute updates and
//! RPC requests to every sink of the device.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

/// Something sent down to a device.
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    /// A shared-attribute update (`{"k":v}`) or deletion (`{"deleted":[..]}`).
    Attributes(Value),
    /// A server-side RPC request.
    Rpc {
        id: i64,
        method: String,
        params: Value,
    },
}

/// A way to reach a device now.
pub trait DownlinkSink: Send + Sync {
    /// Sends (queues) a downlink; false when the sink is gone.
    fn send(&self, d: &Downlink) -> bool;
    /// Whether this sink wants `d` (an attribute long poll does not want RPCs).
    fn wants(&self, _d: &Downlink) -> bool {
        true
    }
    /// Ends the session behind the sink (the device was deleted).
    fn close(&self) {}
}

struct Entry {
    id: u64,
    sink: Arc<dyn DownlinkSink>,
    /// The device has a live session through this sink (MQTT, gateway) rather than a poll.
    connected: bool,
}

/// Sinks per device.
#[derive(Default)]
pub struct DeviceSessions {
    map: Mutex<HashMap<Arc<str>, Vec<Entry>>>,
    next: AtomicU64,
}

/// A registration; pass it back to [`DeviceSessions::unregister`].
#[derive(Debug, Clone)]
pub struct SinkId {
    pub device: Arc<str>,
    id: u64,
}

impl DeviceSessions {
    /// Registers a sink for a device; `connected` for a session (not a one-off poll).
    pub fn register(
        &self,
        device: Arc<str>,
        sink: Arc<dyn DownlinkSink>,
        connected: bool,
    ) -> SinkId {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map
            .lock()
            .entry(device.clone())
            .or_default()
            .push(Entry {
                id,
                sink,
                connected,
            });
        SinkId { device, id }
    }

    /// Removes a registration; returns whether the device still has a connected sink.
    pub fn unregister(&self, sid: &SinkId) -> bool {
        let mut map = self.map.lock();
        let Some(list) = map.get_mut(&sid.device) else {
            return false;
        };
        list.retain(|e| e.id != sid.id);
        let still = list.iter().any(|e| e.connected);
        if list.is_empty() {
            map.remove(&sid.device);
        }
        still
    }

    /// Sends to every sink of the device that wants it; returns how many took it.
    pub fn send(&self, device: &str, d: &Downlink) -> usize {
        let sinks: Vec<Arc<dyn DownlinkSink>> = match self.map.lock().get(device) {
            Some(list) => list
                .iter()
                .filter(|e| e.sink.wants(d))
                .map(|e| e.sink.clone())
                .collect(),
            None => return 0,
        };
        sinks.iter().filter(|s| s.send(d)).count()
    }

    /// Closes every session of a device (deleted device or tenant).
    pub fn close(&self, device: &str) {
        let sinks: Vec<Arc<dyn DownlinkSink>> = match self.map.lock().remove(device) {
            Some(list) => list.into_iter().map(|e| e.sink).collect(),
            None => return,
        };
        for s in sinks {
            s.close();
        }
    }

    /// Whether the device has a connected session.
    pub fn connected(&self, device: &str) -> bool {
        self.map
            .lock()
            .get(device)
            .is_some_and(|l| l.iter().any(|e| e.connected))
    }

    /// Whether the device can be reached now (a session or a waiting poll).
    pub fn reachable(&self, device: &str) -> bool {
        self.map.lock().get(device).is_some_and(|l| !l.is_empty())
    }
}

/// A sink that hands downlinks to a channel (HTTP long polls, CoAP observers).
pub struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<Downlink>,
    rpc: bool,
    attributes: bool,
}

impl ChannelSink {
    /// A sink taking the given kinds into a channel of `capacity`.
    pub fn new(
        rpc: bool,
        attributes: bool,
        capacity: usize,
    ) -> (Arc<ChannelSink>, tokio::sync::mpsc::Receiver<Downlink>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (
            Arc::new(ChannelSink {
                tx,
                rpc,
                attributes,
            }),
            rx,
        )
    }
}

impl DownlinkSink for ChannelSink {
    fn send(&self, d: &Downlink) -> bool {
        self.tx.try_send(d.clone()).is_ok()
    }

    fn wants(&self, d: &Downlink) -> bool {
        match d {
            Downlink::Attributes(_) => self.attributes,
            Downlink::Rpc { .. } => self.rpc,
        }
    }
}
