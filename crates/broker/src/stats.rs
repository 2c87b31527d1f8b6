//! Broker counters, read by `$SYS` and exported as Prometheus metrics. Each event both counts an
//! atomic (for `$SYS`) and a `metrics` counter (for `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters.
#[derive(Default)]
pub struct Stats {
    pub clients_connected: AtomicU64,
    pub clients_total: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub publish_dropped_expired: AtomicU64,
}

impl Stats {
    /// A client finished CONNECT.
    pub fn connected(&self) {
        self.clients_connected.fetch_add(1, Relaxed);
        metrics::gauge!("mqtt_clients_connected").increment(1.0);
        metrics::counter!("mqtt_connections_total").increment(1);
    }

    /// A connected client went away.
    pub fn disconnected(&self) {
        self.clients_connected.fetch_sub(1, Relaxed);
        metrics::gauge!("mqtt_clients_connected").decrement(1.0);
    }

    /// Bytes read from clients.
    pub fn received_bytes(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Relaxed);
        metrics::counter!("mqtt_bytes_received_total").increment(n as u64);
    }

    /// Bytes written to clients.
    pub fn sent_bytes(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Relaxed);
        metrics::counter!("mqtt_bytes_sent_total").increment(n as u64);
    }

    /// A PUBLISH arrived from a client or link.
    pub fn message_received(&self) {
        self.messages_received.fetch_add(1, Relaxed);
        metrics::counter!("mqtt_messages_received_total").increment(1);
    }

    /// PUBLISH packets written to clients.
    pub fn messages_sent(&self, n: u64) {
        self.messages_sent.fetch_add(n, Relaxed);
        metrics::counter!("mqtt_messages_sent_total").increment(n);
    }

    /// A message dropped because a session's queue was full.
    pub fn queue_overflow(&self, client_id: &str) {
        let n = self.messages_dropped.fetch_add(1, Relaxed);
        metrics::counter!("mqtt_messages_dropped_total", "reason" => "queue_full").increment(1);
        // Log the first drop and then every 1000th, so a stuck subscriber does not flood the log.
        if n.is_multiple_of(1000) {
            tracing::warn!(
                client_id,
                dropped_total = n + 1,
                "session queue full, message dropped"
            );
        }
    }

    /// A message expired before it could be delivered.
    pub fn expired(&self) {
        self.publish_dropped_expired.fetch_add(1, Relaxed);
        metrics::counter!("mqtt_messages_dropped_total", "reason" => "expired").increment(1);
    }
}
