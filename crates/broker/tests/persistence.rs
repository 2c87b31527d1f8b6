//! Persistence: what the broker acknowledged survives a restart without a clean shutdown. The
//! kill -9 version of this, against the real binary, is in tests/python/test_persistence.py.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use broker::{Broker, BrokerConfig, StaticHooks};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> Dir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("ib-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

async fn start(db: &std::path::Path) -> (Broker, u16, watch::Sender<bool>) {
    let config = BrokerConfig {
        allow_anonymous: true,
        ..BrokerConfig::default()
    };
    let hooks = Arc::new(StaticHooks::from_config(&config));
    let broker = Broker::open(config, hooks, db).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, rx) = watch::channel(false);
    let b = broker.clone();
    tokio::spawn(async move { b.serve_tcp(listener, rx).await });
    (broker, port, stop)
}

fn client(port: u16, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(clean);
    opts.set_inflight(100);
    AsyncClient::new(opts, 500)
}

async fn next(ev: &mut EventLoop) -> Packet {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), ev.poll())
            .await
            .expect("timed out")
            .expect("connection");
        if let Event::Incoming(p) = e {
            return p;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_and_retained_survive_a_restart() {
    let dir = temp_dir("persist");
    let db = dir.0.join("mqtt.db");
    let (_b1, port, stop1) = start(&db).await;

    // A persistent subscriber goes offline.
    let (sub, mut ev) = client(port, "keeper", false);
    sub.subscribe("data/#", QoS::AtLeastOnce).await.unwrap();
    while !matches!(next(&mut ev).await, Packet::SubAck(_)) {}
    sub.disconnect().await.unwrap();
    while ev.poll().await.is_ok() {}

    // 200 QoS 1 messages and a retained one, each acknowledged.
    let (publ, mut pev) = client(port, "pub", true);
    for i in 0..200 {
        publ.publish(
            format!("data/{}", i % 3),
            QoS::AtLeastOnce,
            false,
            format!("{i}"),
        )
        .await
        .unwrap();
    }
    publ.publish("state/x", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    let mut acks = 0;
    while acks < 201 {
        if let Packet::PubAck(_) = next(&mut pev).await {
            acks += 1;
        }
    }
    // No clean shutdown: the first broker is abandoned as if killed.
    let _ = stop1.send(true);

    let (b2, port2, _stop2) = start(&db).await;
    assert_eq!(b2.session_count(), 1);
    let (_sub, mut ev) = client(port2, "keeper", false);
    match next(&mut ev).await {
        Packet::ConnAck(a) => assert!(a.session_present),
        p => panic!("{p:?}"),
    }
    let mut got = Vec::new();
    while got.len() < 200 {
        if let Packet::Publish(p) = next(&mut ev).await {
            got.push(
                String::from_utf8(p.payload.to_vec())
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
            );
        }
    }
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "all, once, in order");

    let (s2, mut ev2) = client(port2, "late", true);
    s2.subscribe("state/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Packet::Publish(p) = next(&mut ev2).await {
            assert_eq!(&p.payload[..], b"kept");
            assert!(p.retain);
            break;
        }
    }
}
