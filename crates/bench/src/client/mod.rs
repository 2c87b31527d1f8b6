//! The generator's own MQTT client, on top of `mqtt-codec`: [`MqttConn`] does the CONNECT and
//! SUBSCRIBE handshakes and turns the read buffer into [`Incoming`] packets.
//!
//! Framing uses the codec's `read_frame`, and every packet but PUBLISH is decoded strictly by
//! `decode_packet`. A received PUBLISH is only viewed in place (QoS, packet id, stamp): the
//! subscriber's per-message cost competes with the broker for the same cores, and the topic is
//! known anyway. A unit test checks the view against the codec's decoder.
//!
//! - `template`: the pre-encoded PUBLISH a publisher patches, and the payload [`Stamp`].

pub mod template;

use std::io;
use std::net::IpAddr;

use bytes::{Buf, BytesMut};
use mqtt_codec::{
    decode_packet, encode_packet, read_frame, Connect, Disconnect, Packet, Protocol, PubResponse,
    QoS, ReasonCode, SubOptions, Subscribe, Subscription,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::endpoint::Endpoint;
use crate::error::ClientError;
use crate::transport::{self, Stream};

pub use template::{PublishTemplate, Stamp, STAMP_LEN};

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 268_435_455;

/// What CONNECT says.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub protocol: Protocol,
    pub client_id: String,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A packet from the broker, as much of it as the generator needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An application message (viewed in place, see the module docs).
    Publish {
        qos: QoS,
        packet_id: u16,
        stamp: Option<Stamp>,
    },
    PubAck(u16, ReasonCode),
    PubRec(u16, ReasonCode),
    PubRel(u16),
    PubComp(u16),
    PingResp,
    Disconnect(ReasonCode),
    /// Anything else (CONNACK, SUBACK, ...), by name.
    Other(&'static str),
}

/// One MQTT connection to the broker.
pub struct MqttConn {
    stream: Stream,
    rbuf: BytesMut,
    /// Bytes made room for before each read: large for traffic, small for idle connections.
    read_chunk: usize,
    protocol: Protocol,
    /// How many QoS 1/2 messages the broker accepts unacknowledged (v5 CONNACK), else 65535.
    pub receive_maximum: u16,
    /// Keep-alive in force: ours, or the broker's v5 Server Keep Alive.
    pub keep_alive: u16,
}

impl MqttConn {
    /// Opens the transport, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(
        endpoint: &Endpoint,
        src: Option<IpAddr>,
        opts: &ConnectOptions,
        read_chunk: usize,
    ) -> Result<MqttConn, ClientError> {
        let stream = transport::connect(endpoint, src).await?;
        let mut conn = MqttConn {
            stream,
            rbuf: BytesMut::new(),
            read_chunk,
            protocol: opts.protocol,
            receive_maximum: u16::MAX,
            keep_alive: opts.keep_alive,
        };
        let connect = Connect {
            protocol: Some(opts.protocol),
            clean_start: true,
            keep_alive: opts.keep_alive,
            client_id: opts.client_id.clone(),
            username: opts.username.clone(),
            password: opts.password.clone().map(Into::into),
            ..Connect::default()
        };
        conn.send_packet(&Packet::Connect(Box::new(connect)))
            .await?;
        match conn.next_packet().await? {
            Packet::ConnAck(ack) if ack.code == ReasonCode::SUCCESS => {
                if let Some(max) = ack.properties.receive_maximum {
                    conn.receive_maximum = max;
                }
                if let Some(ka) = ack.properties.server_keep_alive {
                    conn.keep_alive = ka;
                }
                Ok(conn)
            }
            Packet::ConnAck(ack) => Err(ClientError::Refused(ack.code)),
            other => Err(ClientError::Unexpected {
                expected: "CONNACK",
                got: other.name(),
            }),
        }
    }

    /// The protocol of this connection.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Subscribes to `filter` and waits for a successful SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), ClientError> {
        let subscribe = Subscribe {
            packet_id: 1,
            subscriptions: vec![Subscription {
                filter: filter.to_string(),
                options: SubOptions {
                    qos,
                    ..SubOptions::default()
                },
            }],
            ..Subscribe::default()
        };
        self.send_packet(&Packet::Subscribe(subscribe)).await?;
        loop {
            match self.next_packet().await? {
                Packet::SubAck(ack) => {
                    return match ack.codes.first() {
                        Some(code) if code.is_success() => Ok(()),
                        Some(code) => Err(ClientError::SubscribeRefused(*code)),
                        None => Err(ClientError::Unexpected {
                            expected: "a SUBACK code",
                            got: "none",
                        }),
                    };
                }
                // Retained messages may arrive first: acknowledge them, they are not counted.
                Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                    self.send_packet(&ack(Packet::PubAck, p.packet_id)).await?
                }
                Packet::Publish(p) if p.qos == QoS::ExactlyOnce => {
                    self.send_packet(&ack(Packet::PubRec, p.packet_id)).await?
                }
                Packet::PubRel(r) => self.send_packet(&ack(Packet::PubComp, r.packet_id)).await?,
                Packet::Publish(_) => {}
                other => {
                    return Err(ClientError::Unexpected {
                        expected: "SUBACK",
                        got: other.name(),
                    })
                }
            }
        }
    }

    /// Reads more bytes from the broker (cancel-safe); `Err(Closed)` at end of stream.
    pub async fn fill(&mut self) -> Result<usize, ClientError> {
        self.rbuf.reserve(self.read_chunk);
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(ClientError::Closed),
            n => Ok(n),
        }
    }

    /// Takes the next whole packet off the read buffer, `None` when more bytes are needed.
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>, ClientError> {
        let Some(frame) = read_frame(&self.rbuf, MAX_PACKET)? else {
            return Ok(None);
        };
        let len = frame.len();
        if self.rbuf.len() < len {
            self.rbuf.reserve(len - self.rbuf.len());
            return Ok(None);
        }
        if frame.header >> 4 == 3 {
            let body = &self.rbuf[frame.header_len..len];
            let view = publish_view(frame.header, body, self.protocol.is_v5())?;
            self.rbuf.advance(len);
            return Ok(Some(view));
        }
        let mut bytes = self.rbuf.split_to(len);
        bytes.advance(frame.header_len);
        let packet = decode_packet(frame.header, bytes.freeze(), self.protocol)?;
        Ok(Some(match packet {
            Packet::PubAck(r) => Incoming::PubAck(r.packet_id, r.code),
            Packet::PubRec(r) => Incoming::PubRec(r.packet_id, r.code),
            Packet::PubRel(r) => Incoming::PubRel(r.packet_id),
            Packet::PubComp(r) => Incoming::PubComp(r.packet_id),
            Packet::PingResp => Incoming::PingResp,
            Packet::Disconnect(d) => Incoming::Disconnect(d.code),
            other => Incoming::Other(other.name()),
        }))
    }

    /// Reads until one whole packet is there and decodes it fully (handshakes only).
    async fn next_packet(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(frame) = read_frame(&self.rbuf, MAX_PACKET)? {
                if self.rbuf.len() >= frame.len() {
                    let mut bytes = self.rbuf.split_to(frame.len());
                    bytes.advance(frame.header_len);
                    return Ok(decode_packet(frame.header, bytes.freeze(), self.protocol)?);
                }
            }
            self.fill().await?;
        }
    }

    /// Appends `packet` encoded for this connection to `out`.
    pub fn encode(&self, packet: &Packet, out: &mut BytesMut) {
        encode_packet(packet, self.protocol, out);
    }

    /// Writes `bytes` and flushes (TLS and WebSocket buffer until flushed).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Encodes and sends one packet.
    pub async fn send_packet(&mut self, packet: &Packet) -> io::Result<()> {
        let mut out = BytesMut::new();
        self.encode(packet, &mut out);
        self.send(&out).await
    }

    /// Sends DISCONNECT (normal) and closes, giving up after 500 ms.
    pub async fn disconnect(mut self) {
        let bye = Packet::Disconnect(Disconnect::default());
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            self.send_packet(&bye).await?;
            self.stream.shutdown().await
        })
        .await;
    }
}

/// A PUBACK/PUBREC/PUBREL/PUBCOMP for `packet_id` with success.
pub fn ack(kind: fn(PubResponse) -> Packet, packet_id: u16) -> Packet {
    kind(PubResponse {
        packet_id,
        ..PubResponse::default()
    })
}

/// QoS, packet id and stamp of a PUBLISH body, without copying or allocating.
fn publish_view(header: u8, body: &[u8], v5: bool) -> Result<Incoming, ClientError> {
    const MALFORMED: mqtt_codec::DecodeError =
        mqtt_codec::DecodeError::Malformed("PUBLISH shorter than its fields");
    let qos = QoS::from_u8((header >> 1) & 0b11)
        .ok_or(mqtt_codec::DecodeError::Malformed("PUBLISH with QoS 3"))?;
    let topic_len = usize::from(u16::from_be_bytes([
        *body.first().ok_or(MALFORMED)?,
        *body.get(1).ok_or(MALFORMED)?,
    ]));
    let mut at = 2 + topic_len;
    let mut packet_id = 0;
    if qos != QoS::AtMostOnce {
        let id = body.get(at..at + 2).ok_or(MALFORMED)?;
        packet_id = u16::from_be_bytes([id[0], id[1]]);
        at += 2;
    }
    if v5 {
        let (props_len, n) = read_varint(body.get(at..).ok_or(MALFORMED)?).ok_or(MALFORMED)?;
        at += n + props_len;
    }
    let payload = body.get(at..).ok_or(MALFORMED)?;
    Ok(Incoming::Publish {
        qos,
        packet_id,
        stamp: Stamp::read(payload),
    })
}

/// A variable byte integer and its length in bytes.
fn read_varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &b) in buf.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mqtt_codec::{encode_publish, Properties, Publish};

    /// The in-place view agrees with the codec's strict decoder, v5 properties included.
    #[test]
    fn publish_view_matches_the_codec() {
        for protocol in [Protocol::V311, Protocol::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut payload = vec![0u8; 40];
                let stamp = Stamp {
                    seq: 5,
                    sent_ns: 6,
                    publisher: 7,
                };
                stamp.write(&mut payload);
                let properties = Properties {
                    subscription_identifiers: vec![300],
                    user_properties: vec![("k".into(), "v".into())],
                    ..Properties::default()
                };
                let p = Publish {
                    qos,
                    topic: "a/b".into(),
                    packet_id: if qos == QoS::AtMostOnce { 0 } else { 777 },
                    payload: Bytes::from(payload),
                    properties,
                    ..Publish::default()
                };
                let mut out = BytesMut::new();
                encode_publish(&p, protocol, &mut out);
                let frame = read_frame(&out, MAX_PACKET).unwrap().unwrap();
                let body = &out[frame.header_len..];
                let decoded = decode_packet(frame.header, Bytes::copy_from_slice(body), protocol);
                let Ok(Packet::Publish(d)) = decoded else {
                    panic!("codec refused {decoded:?}")
                };
                let view = publish_view(frame.header, body, protocol.is_v5()).unwrap();
                let want = Incoming::Publish {
                    qos: d.qos,
                    packet_id: d.packet_id,
                    stamp: Stamp::read(&d.payload),
                };
                assert_eq!(view, want);
                assert!(matches!(view, Incoming::Publish { stamp: Some(s), .. } if s == stamp));
            }
        }
    }

    #[test]
    fn truncated_publish_is_an_error() {
        assert!(publish_view(0x32, &[0, 3, b'a'], false).is_err());
        assert!(publish_view(0x30, &[0], false).is_err());
        assert!(publish_view(0x36, &[0, 0], false).is_err());
    }
}
