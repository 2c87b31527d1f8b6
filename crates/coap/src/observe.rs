//! Observations (RFC 7641) of a device's attributes or RPC requests. Registering one puts a sink
//! in the platform's device sessions; a downlink to it becomes a notification the server loop
//! sends with the observation's token and the next sequence number.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ib_core::sessions::{Downlink, DownlinkSink, SinkId};
use tokio::sync::mpsc;

/// An observation's identity: the peer and its token.
pub type ObsKey = (SocketAddr, Vec<u8>);

/// A downlink for an observation, on its way to the server loop.
pub struct Notification {
    pub key: ObsKey,
    pub downlink: Downlink,
}

/// The sink of one observation.
pub struct ObserveSink {
    pub key: ObsKey,
    pub rpc: bool,
    pub tx: mpsc::Sender<Notification>,
}

impl DownlinkSink for ObserveSink {
    fn send(&self, d: &Downlink) -> bool {
        self.tx
            .try_send(Notification {
                key: self.key.clone(),
                downlink: d.clone(),
            })
            .is_ok()
    }

    fn wants(&self, d: &Downlink) -> bool {
        matches!(d, Downlink::Rpc { .. }) == self.rpc
    }
}

/// One live observation.
pub struct Observation {
    pub sink: SinkId,
    pub seq: u32,
}

/// Live observations.
#[derive(Default)]
pub struct Observations {
    pub live: HashMap<ObsKey, Observation>,
    /// Message ids of recent notifications, so that a RST cancels the right observation.
    pub sent: HashMap<(SocketAddr, u16), Vec<u8>>,
}

impl Observations {
    /// The next sequence number of an observation (None if it is gone).
    pub fn next_seq(&mut self, key: &ObsKey) -> Option<u32> {
        let o = self.live.get_mut(key)?;
        o.seq = (o.seq + 1) & 0x00ff_ffff;
        Some(o.seq)
    }
}

/// Builds a sink for an observation.
pub fn sink(key: ObsKey, rpc: bool, tx: mpsc::Sender<Notification>) -> Arc<ObserveSink> {
    Arc::new(ObserveSink { key, rpc, tx })
}
