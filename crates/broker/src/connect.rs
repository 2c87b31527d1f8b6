//! The CONNECT handshake: reading the first packet, validating it, authenticating through the
//! hooks, opening the session and answering with CONNACK.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_codec::{
    encode_packet, ConnAck, Connect, DecodeError, Decoder, Packet, Properties, Protocol, ReasonCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::broker::{Opened, Shared};
use crate::hooks::{ConnectRequest, Identity};
use crate::limits::{self, Limit};
use crate::session::{Kick, NEVER_EXPIRES};

/// How long a new connection may take to send CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connection needs to know about its client after CONNACK.
pub struct Accepted {
    pub connect: Box<Connect>,
    pub protocol: Protocol,
    pub client_id: Arc<str>,
    pub identity: Identity,
    pub opened: Opened,
    pub kick: Arc<Kick>,
    /// Keep-alive in force (after the server's override), 0 = none.
    pub keep_alive: u16,
    pub decoder: Decoder,
}

/// Why the handshake did not produce a connection (already answered or logged).
#[derive(Debug)]
pub struct Refused;

/// Reads CONNECT from `stream` and answers it. `rbuf` keeps any bytes read past CONNECT.
pub async fn handshake<S>(
    shared: &Arc<Shared>,
    stream: &mut S,
    rbuf: &mut BytesMut,
    peer: Option<std::net::SocketAddr>,
    cert_fingerprint: Option<&str>,
) -> Result<Accepted, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut decoder = Decoder {
        protocol: Protocol::V311,
        max_packet_size: shared.config.max_packet_size as usize,
    };
    let first = tokio::time::timeout(CONNECT_TIMEOUT, read_first(stream, rbuf, &mut decoder)).await;
    let connect = match first {
        Err(_) => {
            tracing::debug!(?peer, "no CONNECT in time, closing");
            return Err(Refused);
        }
        Ok(Err(FirstPacketError::Io)) => return Err(Refused),
        Ok(Err(FirstPacketError::Decode(e))) => {
            tracing::info!(?peer, error = %e, "bad CONNECT, closing");
            if let DecodeError::UnsupportedProtocolVersion(level) = e {
                // Answer in the only format every client understands (3.1.1 CONNACK, rc 1),
                // or in v5's if the client asked for a level above 5.
                let code = if level > 5 {
                    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
                } else {
                    ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION
                };
                let proto = if level > 5 {
                    Protocol::V5
                } else {
                    Protocol::V311
                };
                send_connack(stream, proto, refused(code)).await;
            } else if decoder.protocol.is_v5() {
                // A v5 client learns why (malformed, protocol error, too large) before the close.
                send_connack(stream, Protocol::V5, refused(e.reason_code())).await;
            }
            return Err(Refused);
        }
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(other)) => {
            tracing::info!(
                ?peer,
                packet = other.name(),
                "first packet is not CONNECT, closing"
            );
            return Err(Refused);
        }
    };
    let protocol = connect.protocol();
    decoder.protocol = protocol;
    let v5 = protocol.is_v5();
    let cfg = &shared.config;

    let over_limit = if cfg.max_connections > 0
        && shared
            .stats
            .clients_connected
            .load(std::sync::atomic::Ordering::Relaxed)
            >= cfg.max_connections as u64
    {
        Some(Limit::MaxConnections)
    } else if peer.is_some_and(|p| !shared.connect_rate.allow(p.ip())) {
        Some(Limit::ConnectRate)
    } else {
        None
    };
    if let Some(limit) = over_limit {
        limits::hit(limit, &connect.client_id, &format!("peer {peer:?}"));
        let code = if v5 {
            limit.reason()
        } else {
            ReasonCode::V3_SERVER_UNAVAILABLE
        };
        send_connack(stream, protocol, refused(code)).await;
        return Err(Refused);
    }
    if v5 && connect.properties.authentication_method.is_some() {
        tracing::info!(?peer, client_id = %connect.client_id, "enhanced authentication not supported");
        send_connack(
            stream,
            protocol,
            refused(ReasonCode::BAD_AUTHENTICATION_METHOD),
        )
        .await;
        return Err(Refused);
    }
    if v5 && !cfg.retain_available && connect.will.as_ref().is_some_and(|w| w.retain) {
        // A retained will cannot be honoured (3.2.2.3.10).
        send_connack(stream, protocol, refused(ReasonCode::RETAIN_NOT_SUPPORTED)).await;
        return Err(Refused);
    }
    let mut assigned = false;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if !v5 && !connect.clean_start {
            send_connack(
                stream,
                protocol,
                refused(ReasonCode::V3_IDENTIFIER_REJECTED),
            )
            .await;
            return Err(Refused);
        }
        assigned = true;
        Arc::from(format!("ib-{:016x}", rand::random::<u64>()))
    } else {
        Arc::from(connect.client_id.as_str())
    };
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if cfg.max_keepalive < u16::MAX && (keep_alive == 0 || keep_alive > cfg.max_keepalive) {
        if v5 {
            keep_alive = cfg.max_keepalive;
            server_keep_alive = Some(keep_alive);
        } else if keep_alive > cfg.max_keepalive {
            // 3.1.1 has no way to tell the client; Mosquitto refuses the same way.
            send_connack(
                stream,
                protocol,
                refused(ReasonCode::V3_IDENTIFIER_REJECTED),
            )
            .await;
            return Err(Refused);
        }
    }

    let req = ConnectRequest {
        client_id: &client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_ref(),
        peer,
        cert_fingerprint,
        cert_common_name: None,
        v5,
    };
    let identity = match shared.hooks.authenticate(req).await {
        Ok(id) => id,
        Err(code) => {
            tracing::info!(?peer, client_id = %client_id, username = ?connect.username, reason = %code, "connection refused");
            metrics::counter!("mqtt_connections_refused_total").increment(1);
            let code = if v5 { code } else { code.to_v3_connack() };
            send_connack(stream, protocol, refused(code)).await;
            return Err(Refused);
        }
    };

    let expiry = if v5 {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else if cfg.persistent_client_expiration == 0 {
        NEVER_EXPIRES
    } else {
        cfg.persistent_client_expiration
            .min(u64::from(u32::MAX - 1)) as u32
    };
    let kick = Arc::new(Kick::default());
    let opened = shared.open_session(
        &identity.namespace,
        &client_id,
        connect.clean_start,
        expiry,
        kick.clone(),
    );

    let mut props = Properties::default();
    if v5 {
        if assigned {
            props.assigned_client_identifier = Some(client_id.to_string());
        }
        props.server_keep_alive = server_keep_alive;
        if cfg.receive_maximum < u16::MAX {
            props.receive_maximum = Some(cfg.receive_maximum.max(1));
        }
        if cfg.topic_alias_maximum > 0 {
            props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
        }
        if cfg.max_packet_size < 268_435_455 {
            props.maximum_packet_size = Some(cfg.max_packet_size);
        }
        if !cfg.retain_available {
            props.retain_available = Some(0);
        }
    }
    let ack = ConnAck {
        session_present: opened.present,
        code: ReasonCode::SUCCESS,
        properties: props,
    };
    if let (Some(store), true) = (&shared.store, opened.seq > 0) {
        // The session exists on disk before the client is told it does.
        store.wait(opened.seq).await;
    }
    // Counted before the CONNACK goes out, so a client that has its CONNACK is in the figures.
    shared.stats.connected();
    if !send_connack(stream, protocol, ack).await {
        shared.stats.disconnected();
        shared.connection_closed(&opened.session, opened.gen, None);
        return Err(Refused);
    }
    tracing::debug!(?peer, client_id = %client_id, ?protocol, present = opened.present, "client connected");
    Ok(Accepted {
        connect,
        protocol,
        client_id,
        identity,
        opened,
        kick,
        keep_alive,
        decoder,
    })
}

fn refused(code: ReasonCode) -> ConnAck {
    ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    }
}

async fn send_connack<S: AsyncWrite + Unpin>(
    stream: &mut S,
    protocol: Protocol,
    ack: ConnAck,
) -> bool {
    let mut out = BytesMut::with_capacity(32);
    encode_packet(&Packet::ConnAck(ack), protocol, &mut out);
    stream.write_all(&out).await.is_ok() && stream.flush().await.is_ok()
}

enum FirstPacketError {
    Io,
    Decode(DecodeError),
}

async fn read_first<S: AsyncRead + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    decoder: &mut Decoder,
) -> Result<Packet, FirstPacketError> {
    loop {
        match decoder.decode(rbuf) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(FirstPacketError::Decode(e)),
        }
        rbuf.reserve(256);
        match stream.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(FirstPacketError::Io),
            Ok(_) => {}
        }
    }
}
