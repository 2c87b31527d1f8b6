//! One MQTT 3.1.1 connection to the platform, on the workspace's own codec (`mqtt-codec`):
//! CONNECT/CONNACK, then packets in and out, over TCP or TLS (the stream comes from
//! [`Endpoint::connect`]). Our own small client rather than rumqttc because
//! store and forward needs to know exactly which PUBLISH a PUBACK acknowledges, and must not
//! have a client library re-send (or drop) its in-flight messages behind its back on reconnect:
//! a new session starts from the queue instead.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqtt_codec::{
    encode_packet, ConnAck, Connect, Decoder, Packet, Protocol, PubResponse, Publish, QoS,
    ReasonCode, SubOptions, Subscribe, Subscription,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::endpoint::{Endpoint, Stream};

/// Largest packet accepted from the platform.
const MAX_PACKET: usize = 1 << 20;

/// Why the session ended or could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("refused by the platform: CONNACK code {0:#04x}")]
    Refused(u8),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the platform closed the connection")]
    Closed,
}

/// A connected MQTT session.
pub struct Session {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: Decoder,
    write_timeout: Duration,
}

impl Session {
    /// Connects to `endpoint` with the access token as user name (none when `token` is empty:
    /// the platform then knows the gateway by its client certificate), clean session.
    pub async fn connect(
        endpoint: &Endpoint,
        client_id: &str,
        token: &str,
        keep_alive: Duration,
        deadline: Duration,
    ) -> Result<Session, SessionError> {
        let stream = endpoint.connect(deadline).await?;
        let mut s = Session {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::with_capacity(8192),
            decoder: Decoder::new(Protocol::V311, MAX_PACKET),
            write_timeout: deadline,
        };
        let connect = Connect {
            protocol: Some(Protocol::V311),
            clean_start: true,
            keep_alive: keep_alive.as_secs().clamp(1, 65_535) as u16,
            client_id: client_id.to_string(),
            username: (!token.is_empty()).then(|| token.to_string()),
            ..Default::default()
        };
        s.send(&Packet::Connect(Box::new(connect))).await?;
        match timeout(deadline, s.next()).await {
            Err(_) => Err(SessionError::Timeout("waiting for CONNACK")),
            Ok(Ok(Packet::ConnAck(ConnAck { code, .. }))) if code == ReasonCode::SUCCESS => Ok(s),
            Ok(Ok(Packet::ConnAck(ConnAck { code, .. }))) => Err(SessionError::Refused(code.0)),
            Ok(Ok(other)) => Err(SessionError::Protocol(format!(
                "{} before CONNACK",
                other.name()
            ))),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Writes one packet (bounded in time: a stalled platform ends the session).
    pub async fn send(&mut self, packet: &Packet) -> Result<(), SessionError> {
        self.wbuf.clear();
        encode_packet(packet, Protocol::V311, &mut self.wbuf);
        // TLS keeps what it could not write yet in its own buffer: flush pushes it out.
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        timeout(self.write_timeout, write)
            .await
            .map_err(|_| SessionError::Timeout("writing"))??;
        Ok(())
    }

    /// Sends DISCONNECT and closes the stream (TLS: with close_notify), briefly bounded.
    pub async fn close(mut self) {
        let _ = self.send(&Packet::Disconnect(Default::default())).await;
        let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }

    /// PUBLISH at QoS 1 with packet id `id`.
    pub async fn publish(
        &mut self,
        topic: &str,
        id: u16,
        payload: Bytes,
    ) -> Result<(), SessionError> {
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: topic.into(),
            packet_id: id,
            payload,
            ..Default::default()
        };
        self.send(&Packet::Publish(p)).await
    }

    /// SUBSCRIBE to one filter at QoS 1.
    pub async fn subscribe(&mut self, filter: &str, id: u16) -> Result<(), SessionError> {
        let s = Subscribe {
            packet_id: id,
            subscriptions: vec![Subscription {
                filter: filter.into(),
                options: SubOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        self.send(&Packet::Subscribe(s)).await
    }

    /// PUBACK for an incoming QoS 1 PUBLISH.
    pub async fn puback(&mut self, id: u16) -> Result<(), SessionError> {
        let ack = PubResponse {
            packet_id: id,
            ..Default::default()
        };
        self.send(&Packet::PubAck(ack)).await
    }

    /// The next packet from the platform. Cancel-safe (a partial packet stays buffered).
    pub async fn next(&mut self) -> Result<Packet, SessionError> {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(SessionError::Protocol(e.to_string())),
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(SessionError::Closed);
            }
        }
    }
}
