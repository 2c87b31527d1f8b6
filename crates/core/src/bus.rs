//! The in-process bus: every device message, once accepted, as one [`Event`] type whatever the
//! transport, and every alarm change. Subscribers (rule engine, live stream) take them from
//! broadcast channels; a slow subscriber loses the oldest events (and is told so by the
//! channel), never slows ingest. Alarm changes have a channel of their own, so that a flood of
//! telemetry cannot push them out, and a subscriber to alarms alone does not wake for telemetry.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::payload::Point;

/// What happened. `Alarm`: an alarm of the device was raised, updated, acknowledged, assigned
/// or cleared (its state after the change).
#[derive(Debug, Clone)]
pub enum EventKind {
    Telemetry(Vec<Point>),
    Attributes(Map<String, Value>),
    RpcReply { id: i64, response: Value },
    Connected { transport: &'static str },
    Disconnected { transport: &'static str },
    Alarm(Arc<crate::alarms::Alarm>),
}

/// One accepted device message, or an alarm change of the device.
#[derive(Debug, Clone)]
pub struct Event {
    pub tenant: Arc<str>,
    pub device: Arc<str>,
    pub ts: i64,
    pub kind: EventKind,
}

/// The bus.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    alarms: broadcast::Sender<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: broadcast::channel(4096).0,
            alarms: broadcast::channel(4096).0,
        }
    }
}

impl Bus {
    /// Publishes an event (dropped when nobody listens).
    pub fn publish(&self, event: Event) {
        let tx = match event.kind {
            EventKind::Alarm(_) => &self.alarms,
            _ => &self.tx,
        };
        let _ = tx.send(Arc::new(event));
    }

    /// A new subscriber to device messages (every kind but alarms).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// A new subscriber to alarm changes.
    pub fn subscribe_alarms(&self) -> broadcast::Receiver<Arc<Event>> {
        self.alarms.subscribe()
    }
}
