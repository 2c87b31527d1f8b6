//! A simulated device over MQTT 3.1.1: the access token as user name, telemetry as QoS 1
//! PUBLISHes to `v1/devices/me/telemetry`, server-side RPC from `v1/devices/me/rpc/request/+`
//! answered on `v1/devices/me/rpc/response/{id}` (followed at once by a fresh report, so the
//! effect shows). Lost connections are retried with a growing pause.
//!
//! The byte stream is the bench's transport; PUBLISHes are decoded whole here (the bench
//! client only views them in place, without topic and payload).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mqtt_codec::{
    decode_packet, encode_packet, read_frame, Connect, Disconnect, Packet, Protocol, Publish, QoS,
    ReasonCode, SubOptions, Subscribe, Subscription,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::device::{stopped, Connected, SimDevice, Stats};
use crate::endpoint::Endpoint;
use crate::error::ClientError;
use crate::transport::{self, Stream};

const RPC_REQUEST: &str = "v1/devices/me/rpc/request/";
const MAX_PACKET: usize = 1 << 20;
const PROTOCOL: Protocol = Protocol::V311;

/// Runs `device` until `stop` turns true, reconnecting after failures.
pub async fn run(
    device: Arc<SimDevice>,
    endpoint: Arc<Endpoint>,
    interval: Duration,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_secs(1);
    loop {
        let result = session(&device, &endpoint, interval, &stats, &mut stop).await;
        if *stop.borrow() {
            return;
        }
        if let Err(e) = result {
            Stats::add(&stats.errors, 1);
            eprintln!(
                "{}: {e}; reconnecting in {} s",
                device.name,
                pause.as_secs()
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut stop) => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// One MQTT connection of a device.
struct Session {
    stream: Stream,
    rbuf: BytesMut,
    next_id: u16,
    /// Packet ids of RPC replies not yet acknowledged (their PUBACKs are not telemetry's).
    replies: HashSet<u16>,
    /// Telemetry messages not yet acknowledged.
    pending: usize,
}

impl Session {
    async fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        encode_packet(packet, PROTOCOL, &mut out);
        self.stream.write_all(&out).await?;
        Ok(self.stream.flush().await?)
    }

    /// Takes the next whole packet off the read buffer.
    fn next_packet(&mut self) -> Result<Option<Packet>, ClientError> {
        let Some(frame) = read_frame(&self.rbuf, MAX_PACKET)? else {
            return Ok(None);
        };
        if self.rbuf.len() < frame.len() {
            return Ok(None);
        }
        let mut bytes = self.rbuf.split_to(frame.len());
        bytes.advance(frame.header_len);
        Ok(Some(decode_packet(frame.header, bytes.freeze(), PROTOCOL)?))
    }

    /// Reads more bytes (cancel-safe).
    async fn fill(&mut self) -> Result<(), ClientError> {
        self.rbuf.reserve(4096);
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(ClientError::Closed),
            _ => Ok(()),
        }
    }

    async fn publish(&mut self, topic: String, payload: String) -> Result<u16, ClientError> {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let p = Publish {
            topic: topic.into(),
            payload: payload.into_bytes().into(),
            qos: QoS::AtLeastOnce,
            packet_id: self.next_id,
            ..Publish::default()
        };
        self.send(&Packet::Publish(p)).await?;
        Ok(self.next_id)
    }
}

async fn session(
    device: &SimDevice,
    endpoint: &Endpoint,
    interval: Duration,
    stats: &Stats,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let stream = tokio::time::timeout(Duration::from_secs(10), transport::connect(endpoint, None))
        .await
        .map_err(|_| ClientError::Timeout("the connection"))??;
    let mut s = Session {
        stream,
        rbuf: BytesMut::new(),
        next_id: 1,
        replies: HashSet::new(),
        pending: 0,
    };
    let connect = Connect {
        protocol: Some(PROTOCOL),
        clean_start: true,
        keep_alive: 60,
        client_id: device.name.clone(),
        username: Some(device.token.clone()),
        ..Connect::default()
    };
    s.send(&Packet::Connect(Box::new(connect))).await?;
    let connack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(p) = s.next_packet()? {
                return Ok::<_, ClientError>(p);
            }
            s.fill().await?;
        }
    })
    .await
    .map_err(|_| ClientError::Timeout("CONNACK"))??;
    match connack {
        Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS => {}
        Packet::ConnAck(a) => return Err(ClientError::Refused(a.code)),
        other => {
            return Err(ClientError::Unexpected {
                expected: "CONNACK",
                got: other.name(),
            })
        }
    }
    let subscribe = Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: format!("{RPC_REQUEST}+"),
            options: SubOptions {
                qos: QoS::AtLeastOnce,
                ..SubOptions::default()
            },
        }],
        ..Subscribe::default()
    };
    s.send(&Packet::Subscribe(subscribe)).await?;
    let _connected = Connected::new(stats);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(30),
        Duration::from_secs(30),
    );
    loop {
        tokio::select! {
            _ = tick.tick() => telemetry(&mut s, device, stats).await?,
            _ = ping.tick() => s.send(&Packet::PingReq).await?,
            r = s.fill() => {
                r?;
                while let Some(packet) = s.next_packet()? {
                    handle(&mut s, device, stats, packet).await?;
                }
            }
            _ = stopped(stop) => {
                // Graceful: wait (a little) for the acknowledgements of what was sent.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while s.pending > 0 {
                        s.fill().await?;
                        while let Some(packet) = s.next_packet()? {
                            handle(&mut s, device, stats, packet).await?;
                        }
                    }
                    Ok::<_, ClientError>(())
                })
                .await;
                let bye = Packet::Disconnect(Disconnect::default());
                let _ = tokio::time::timeout(Duration::from_millis(500), s.send(&bye)).await;
                return Ok(());
            }
        }
    }
}

/// Publishes one telemetry report.
async fn telemetry(s: &mut Session, device: &SimDevice, stats: &Stats) -> Result<(), ClientError> {
    s.publish("v1/devices/me/telemetry".into(), device.report())
        .await?;
    s.pending += 1;
    Stats::add(&stats.sent, 1);
    Ok(())
}

async fn handle(
    s: &mut Session,
    device: &SimDevice,
    stats: &Stats,
    packet: Packet,
) -> Result<(), ClientError> {
    match packet {
        Packet::Publish(p) => {
            if p.qos == QoS::AtLeastOnce {
                s.send(&crate::client::ack(Packet::PubAck, p.packet_id))
                    .await?;
            }
            let Some(id) = p.topic.strip_prefix(RPC_REQUEST) else {
                return Ok(());
            };
            let request: Value = serde_json::from_slice(&p.payload).unwrap_or_default();
            let method = request["method"].as_str().unwrap_or_default();
            let reply = device.answer(method, &request["params"]);
            let pid = s
                .publish(
                    format!("v1/devices/me/rpc/response/{id}"),
                    reply.to_string(),
                )
                .await?;
            s.replies.insert(pid);
            Stats::add(&stats.rpcs, 1);
            // Report the new state at once.
            s.publish("v1/devices/me/telemetry".into(), device.report())
                .await?;
            Stats::add(&stats.sent, 1);
        }
        Packet::PubAck(a) if s.replies.remove(&a.packet_id) => {}
        Packet::PubAck(a) => {
            s.pending = s.pending.saturating_sub(1);
            if a.code.is_success() {
                Stats::add(&stats.acked, 1);
            } else {
                Stats::add(&stats.errors, 1);
            }
        }
        Packet::SubAck(a) => match a.codes.first() {
            Some(code) if code.is_success() => {}
            Some(code) => return Err(ClientError::SubscribeRefused(*code)),
            None => {
                return Err(ClientError::Unexpected {
                    expected: "a SUBACK code",
                    got: "none",
                })
            }
        },
        Packet::Disconnect(d) => return Err(ClientError::Disconnected(d.code)),
        _ => {}
    }
    Ok(())
}
