//! The uplink against a scripted MQTT server on loopback (the workspace's codec on the other
//! side): queued readings go out in order, only acknowledged ones leave the queue, and what a
//! dropped session left unacknowledged is sent again by the next one; over TCP and over TLS.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_codec::{encode_packet, ConnAck, Decoder, Packet, Protocol, PubResponse};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use super::endpoint::{Endpoint, Stream};
use super::test_pki::Pki;
use super::Uplink;
use crate::buffer::Buffer;
use crate::config::UplinkConfig;
use crate::connector::{Reading, StatusBoard, SubDevice};

/// The server side of one connection.
struct Peer {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    decoder: Decoder,
}

impl Peer {
    async fn accept(l: &TcpListener, tls: Option<&TlsAcceptor>) -> Peer {
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
            .await
            .expect("the uplink connects")
            .unwrap();
        let stream: Box<dyn Stream> = match tls {
            Some(acceptor) => Box::new(acceptor.accept(tcp).await.expect("a TLS handshake")),
            None => Box::new(tcp),
        };
        let mut p = Peer {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::new(Protocol::V311, 1 << 24),
        };
        match p.next().await {
            Packet::Connect(c) => assert_eq!(c.username.as_deref(), Some("token")),
            other => panic!("expected CONNECT, got {other:?}"),
        }
        p.send(Packet::ConnAck(ConnAck::default())).await;
        p
    }

    async fn next(&mut self) -> Packet {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf).unwrap() {
                return p;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("a packet in time")
                    .unwrap();
            assert!(n > 0, "the uplink closed the connection");
        }
    }

    async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        encode_packet(&p, Protocol::V311, &mut out);
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next telemetry PUBLISH: its packet id and the `seq` values it carries.
    async fn telemetry(&mut self) -> (u16, Vec<i64>) {
        loop {
            match self.next().await {
                Packet::Publish(p) if &*p.topic == "v1/gateway/telemetry" => {
                    let v: Value = serde_json::from_slice(&p.payload).unwrap();
                    let seqs = v["dev"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| {
                            assert_eq!(
                                r["ts"].as_i64().unwrap(),
                                1_000 + r["values"]["seq"].as_i64().unwrap()
                            );
                            r["values"]["seq"].as_i64().unwrap()
                        })
                        .collect();
                    return (p.packet_id, seqs);
                }
                Packet::Publish(p) => {
                    assert_eq!(&*p.topic, "v1/gateway/connect");
                    let v: Value = serde_json::from_slice(&p.payload).unwrap();
                    assert_eq!(v, json!({"device": "dev", "type": "plc"}));
                    self.puback(p.packet_id).await;
                }
                _ => {}
            }
        }
    }

    async fn puback(&mut self, id: u16) {
        self.send(Packet::PubAck(PubResponse {
            packet_id: id,
            ..Default::default()
        }))
        .await;
    }
}

fn readings(n: i64) -> Vec<Reading> {
    (0..n)
        .map(|i| {
            let Value::Object(values) = json!({"seq": i}) else {
                unreachable!()
            };
            Reading {
                device: "dev".into(),
                ts: 1_000 + i,
                values,
            }
        })
        .collect()
}

#[tokio::test]
async fn unacknowledged_readings_are_sent_again_by_the_next_session() {
    replay(false).await;
}

#[tokio::test]
async fn the_queue_replays_the_same_over_tls() {
    replay(true).await;
}

async fn replay(tls: bool) {
    let tag = if tls { "tls" } else { "tcp" };
    let dir = std::env::temp_dir().join(format!("ib-edge-uplink-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let buffer = Arc::new(Buffer::open(&dir, u64::MAX).unwrap());
    buffer.push(&readings(1_200)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pki = Pki::new(&format!("replay-{tag}"));
    let acceptor = tls.then(|| TlsAcceptor::from(pki.server_config(true)));
    let acceptor = acceptor.as_ref();
    let scheme = if tls { "mqtts" } else { "mqtt" };
    let config = UplinkConfig {
        url: format!("{scheme}://{}", listener.local_addr().unwrap()),
        token: "token".into(),
        buffer_dir: dir.clone(),
        buffer_max_bytes: u64::MAX,
        replay_rate: 1_000_000,
        health_interval: Duration::from_secs(10),
        keep_alive: Duration::from_secs(30),
        cafile: tls.then(|| pki.path("ca.pem")),
        cert: tls.then(|| pki.path("client.pem")),
        key: tls.then(|| pki.path("client.key")),
        http: None,
    };
    let uplink = Uplink {
        endpoint: Endpoint::from_config(&config).unwrap(),
        config,
        buffer: buffer.clone(),
        devices: vec![SubDevice {
            name: "dev".into(),
            profile: "plc".into(),
            firmware: false,
        }],
        routes: Default::default(),
        wake: Arc::new(Notify::new()),
        connected: Arc::new(AtomicBool::new(false)),
        statuses: Default::default(),
        firmware: None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(uplink.run(stop_rx));

    // First session: three batches arrive (500 + 500 + 200), only the first is acknowledged.
    let mut p = Peer::accept(&listener, acceptor).await;
    let (id1, first) = p.telemetry().await;
    let (_, second) = p.telemetry().await;
    let (_, third) = p.telemetry().await;
    assert_eq!(first, (0..500).collect::<Vec<_>>());
    assert_eq!(second, (500..1000).collect::<Vec<_>>());
    assert_eq!(third, (1000..1200).collect::<Vec<_>>());
    p.puback(id1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while buffer.stats().rows != 700 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            buffer.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(p); // the connection drops with two batches unacknowledged

    // Second session: it starts again from the oldest unacknowledged reading.
    let mut p = Peer::accept(&listener, acceptor).await;
    let mut got = Vec::new();
    while got.len() < 700 {
        let (id, seqs) = p.telemetry().await;
        got.extend(seqs);
        p.puback(id).await;
    }
    assert_eq!(got, (500..1200).collect::<Vec<_>>());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while buffer.stats().rows != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            buffer.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(true).unwrap();
    // a clean goodbye
    assert!(matches!(p.next().await, Packet::Disconnect(_)));
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Status readings go out in queue order, each alone as `v1/gateway/connect|disconnect`;
/// a session announces only the sub-devices not last known offline.
#[tokio::test]
async fn statuses_go_in_order_with_the_readings() {
    let dir = std::env::temp_dir().join(format!("ib-edge-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let buffer = Arc::new(Buffer::open(&dir, u64::MAX).unwrap());
    let mut queued = readings(2);
    queued.push(Reading::status("dev", 1_002, false));
    queued.push(Reading::status("dev", 1_003, true));
    queued.extend(readings(5).into_iter().skip(3)); // seq 3, 4
    queued.push(Reading::status("dev", 1_005, false));
    buffer.push(&queued).unwrap();
    let statuses = Arc::new(StatusBoard::default());
    for r in &queued {
        statuses.note(r);
    }
    assert!(statuses.offline("dev"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config: UplinkConfig = toml::from_str(&format!(
        "url = \"mqtt://{}\"\ntoken = \"token\"\n",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let uplink = Uplink {
        endpoint: Endpoint::from_config(&config).unwrap(),
        config,
        buffer: buffer.clone(),
        devices: vec![
            SubDevice {
                name: "dev".into(),
                profile: "plc".into(),
                firmware: false,
            },
            SubDevice {
                name: "other".into(),
                profile: "meter".into(),
                firmware: false,
            },
        ],
        routes: Default::default(),
        wake: Arc::new(Notify::new()),
        connected: Arc::new(AtomicBool::new(false)),
        statuses,
        firmware: None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(uplink.run(stop_rx));
    let mut p = Peer::accept(&listener, None).await;
    let mut got = Vec::new();
    while got.len() < 6 {
        if let Packet::Publish(m) = p.next().await {
            p.puback(m.packet_id).await;
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            got.push((m.topic.to_string(), v));
        }
    }
    let telemetry = |seqs: &[i64]| {
        let rows: Vec<Value> = seqs
            .iter()
            .map(|s| json!({"ts": 1_000 + s, "values": {"seq": s}}))
            .collect();
        ("v1/gateway/telemetry".to_string(), json!({ "dev": rows }))
    };
    let topic = |t: &str| format!("v1/gateway/{t}");
    assert_eq!(
        got,
        vec![
            // "dev" is last known offline: only "other" is announced
            (
                topic("connect"),
                json!({"device": "other", "type": "meter"})
            ),
            telemetry(&[0, 1]),
            (topic("disconnect"), json!({"device": "dev"})),
            (topic("connect"), json!({"device": "dev", "type": "plc"})),
            telemetry(&[3, 4]),
            (topic("disconnect"), json!({"device": "dev"})),
        ]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while buffer.stats().rows != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            buffer.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
