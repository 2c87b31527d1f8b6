//! `$SYS/broker/...` statistics, published as retained messages every `sys_interval` seconds,
//! under the topic names Mosquitto uses.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use mqtt_codec::QoS;
use tokio::sync::watch;

use crate::broker::Shared;
use crate::message::Message;

/// Publishes `$SYS` topics until `shutdown` changes.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    if shared.config.sys_interval == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(shared.config.sys_interval));
    loop {
        tokio::select! {
            _ = tick.tick() => publish_all(&shared),
            _ = shutdown.changed() => return,
        }
    }
}

fn publish_all(shared: &Shared) {
    let s = &shared.stats;
    let connected = s.clients_connected.load(Relaxed);
    let sessions = shared.sessions.lock().len() as u64;
    let values: [(&str, String); 12] = [
        (
            "version",
            format!("ironbridge {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "uptime",
            format!("{} seconds", shared.started.elapsed().as_secs()),
        ),
        ("clients/connected", connected.to_string()),
        ("clients/total", sessions.to_string()),
        (
            "clients/disconnected",
            sessions.saturating_sub(connected).to_string(),
        ),
        (
            "messages/received",
            s.messages_received.load(Relaxed).to_string(),
        ),
        ("messages/sent", s.messages_sent.load(Relaxed).to_string()),
        (
            "messages/dropped",
            s.messages_dropped.load(Relaxed).to_string(),
        ),
        ("bytes/received", s.bytes_received.load(Relaxed).to_string()),
        ("bytes/sent", s.bytes_sent.load(Relaxed).to_string()),
        (
            "subscriptions/count",
            shared.router.read().count().to_string(),
        ),
        (
            "retained messages/count",
            shared.retained.read().count().to_string(),
        ),
    ];
    let ns: Arc<str> = Arc::from("");
    for (name, value) in values {
        let topic: Arc<str> = Arc::from(format!("$SYS/broker/{name}"));
        shared.route(Arc::new(Message::new(
            ns.clone(),
            topic,
            value.into(),
            QoS::AtMostOnce,
            true,
        )));
    }
}
