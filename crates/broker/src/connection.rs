//! One client connection after CONNACK: the read/write loop, keep-alive, takeover and shutdown.
//! Packet handling lives in [`crate::inbound`], the outgoing queue in [`crate::outbound`].
//!
//! The task owns the socket. It reads and writes concurrently (so a client that is slow to read
//! cannot deadlock one that is busy writing), stops reading while its write buffer is full, and
//! takes messages from the session queue only while the write buffer has room: a stuck
//! subscriber's backlog stays in its bounded session queue.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqtt_codec::{
    encode_packet, Decoder, Disconnect, Packet, Properties, Protocol, QoS, ReasonCode, Will,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::Shared;
use crate::connect::{handshake, Accepted};
use crate::hooks::Identity;
use crate::limits::PublishRate;
use crate::session::{Kick, SessionHandle};

/// Stop reading from the client while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// First read buffer size, and the most a read buffer grows to.
const MIN_READ: usize = 256;
const MAX_READ: usize = 64 * 1024;
/// Empty buffers larger than this are released rather than kept for an idle client.
const MAX_IDLE_BUFFER: usize = 16 * 1024;
/// Take more messages from the session queue only below this.
pub(crate) const FILL_LOW_WATER: usize = 64 * 1024;

/// How a connection ends.
#[derive(Debug, Clone, Copy)]
pub struct Close {
    /// DISCONNECT reason to send first (v5 only); `None` to just close.
    pub reason: Option<ReasonCode>,
    /// Whether the will is published.
    pub will: bool,
}

impl Close {
    /// A server-side close for a protocol violation or limit: DISCONNECT (v5) and the will.
    pub fn error(reason: ReasonCode) -> Close {
        Close {
            reason: Some(reason),
            will: true,
        }
    }
}

/// The state of one live connection.
pub struct Connection {
    pub shared: Arc<Shared>,
    pub session: Arc<SessionHandle>,
    pub gen: u64,
    pub protocol: Protocol,
    pub client_id: Arc<str>,
    pub identity: Identity,
    pub will: Option<Box<Will>>,
    /// Session expiry asked for in CONNECT (DISCONNECT may not raise it from 0).
    pub connect_expiry: u32,
    pub limits: ClientLimits,
    /// Topic aliases the client set, by alias.
    pub aliases_in: HashMap<u16, Arc<str>>,
    /// Topic aliases the broker assigned, by topic.
    pub aliases_out: HashMap<Arc<str>, u16>,
    pub wbuf: BytesMut,
    /// Publish rate bucket, when a rate limit is configured.
    pub publish_rate: Option<PublishRate>,
    /// Acknowledgements waiting for what they promise: a store commit or a hook's deferred
    /// work, in the order they must be sent.
    pub held: VecDeque<Held>,
    /// Bytes in `held`.
    pub held_bytes: usize,
    /// The store's committed sequence (persistence on).
    pub committed: Option<watch::Receiver<u64>>,
}

/// A packet held back until what it promises is done.
pub enum Held {
    /// Encoded bytes, sent once the broker store's sequence `seq` is committed.
    Bytes { seq: u64, bytes: Bytes },
    /// A PUBACK/PUBREC waiting for a hook's deferred work (then also for `seq`).
    Ack {
        wait: crate::hooks::Deferred,
        pid: u16,
        qos: QoS,
        seq: u64,
    },
}

/// Most acknowledgements held before the connection stops reading (a client outrunning the
/// store waits instead of queueing without bound).
const MAX_HELD: usize = 4096;

/// What the client told us it can take.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub receive_maximum: usize,
    pub max_packet_size: usize,
    pub topic_alias_maximum: u16,
}

/// Serves one client over `stream` until it goes away or `shutdown` fires.
pub async fn serve<S>(
    shared: Arc<Shared>,
    mut stream: S,
    peer: Option<SocketAddr>,
    cert_fingerprint: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut rbuf = BytesMut::new();
    // Boxed so that the handshake's state does not stay in every idle connection's task.
    let accepted = Box::pin(handshake(
        &shared,
        &mut stream,
        &mut rbuf,
        peer,
        cert_fingerprint.as_deref(),
    ))
    .await;
    let Ok(acc) = accepted else {
        return;
    };
    let Accepted {
        connect,
        protocol,
        client_id,
        identity,
        opened,
        kick,
        keep_alive,
        mut decoder,
    } = acc;
    shared.hooks.on_connected(&identity, &client_id);
    let p = &connect.properties;
    let cfg_inflight = match shared.config.max_inflight_messages {
        0 => usize::MAX,
        n => n as usize,
    };
    let limits = ClientLimits {
        receive_maximum: (p.receive_maximum.unwrap_or(u16::MAX) as usize).min(cfg_inflight),
        max_packet_size: p.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
        topic_alias_maximum: p
            .topic_alias_maximum
            .unwrap_or(0)
            .min(shared.config.topic_alias_maximum),
    };
    let mut conn = Connection {
        shared: shared.clone(),
        session: opened.session.clone(),
        gen: opened.gen,
        protocol,
        client_id,
        identity,
        will: connect.will.clone().map(Box::new),
        connect_expiry: p.session_expiry_interval.unwrap_or(0),
        limits,
        aliases_in: HashMap::new(),
        aliases_out: HashMap::new(),
        wbuf: BytesMut::new(),
        publish_rate: PublishRate::new(shared.config.max_publish_rate),
        held: VecDeque::new(),
        held_bytes: 0,
        committed: shared.store.as_ref().map(|s| s.committed()),
    };
    drop(connect);
    if opened.present {
        conn.resend_inflight();
    }
    let close = conn
        .run(
            &mut stream,
            &mut rbuf,
            &mut decoder,
            keep_alive,
            &kick,
            &mut shutdown,
        )
        .await;
    tracing::debug!(client_id = %conn.client_id, reason = ?close.reason, "client disconnected");
    let will = if close.will {
        conn.will.take().map(|w| *w)
    } else {
        None
    };
    shared.stats.disconnected();
    shared
        .hooks
        .on_disconnected(&conn.identity, &conn.client_id);
    // The session is settled (ended, or offline with its will scheduled) before the client sees
    // the connection close, so a client that reconnects after the close finds the new state.
    shared.connection_closed(&conn.session, conn.gen, will);
    if let (Some(reason), true) = (close.reason, conn.protocol.is_v5()) {
        let mut out = std::mem::take(&mut conn.wbuf);
        let d = Disconnect {
            code: reason,
            properties: Properties::default(),
        };
        encode_packet(&Packet::Disconnect(d), conn.protocol, &mut out);
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

impl Connection {
    async fn run<S>(
        &mut self,
        stream: &mut S,
        rbuf: &mut BytesMut,
        decoder: &mut Decoder,
        keep_alive: u16,
        kick: &Kick,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Close
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        // Keep-alive: the client must send something within 1.5 × keep-alive (spec 3.1.2.10).
        let grace = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        // One timer for the connection's life: reads only note the time, and the timer, when it
        // fires, either closes the connection or moves to the new deadline. Re-arming a timer on
        // every read would cost a timer-wheel update per packet.
        let mut last_read = Instant::now();
        let keepalive = tokio::time::sleep(grace.unwrap_or(Duration::from_secs(86_400 * 365)));
        tokio::pin!(keepalive);
        // Packets that were read together with CONNECT.
        if let Err(close) = self.decode_all(rbuf, decoder) {
            return close;
        }
        // Read buffers start small (most devices are idle most of the time) and grow while
        // reads keep filling them.
        let mut read_hint = MIN_READ;
        loop {
            self.fill_outbound();
            let can_read = self.wbuf.len() < WRITE_HIGH_WATER && self.held.len() < MAX_HELD;
            if rbuf.capacity() - rbuf.len() < read_hint / 2 {
                rbuf.reserve(read_hint);
            }
            let spare = rbuf.capacity() - rbuf.len();
            tokio::select! {
                biased;
                reason = kick.recv() => {
                    tracing::info!(client_id = %self.client_id, %reason, "disconnecting client");
                    // What the client sent before it was taken over (a last PUBLISH, its
                    // DISCONNECT) is already here: handle it before closing, as a broker that
                    // reads in order would. One poll, no waiting.
                    if let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, reader.read_buf(rbuf)).await {
                        if n > 0 {
                            if let Err(close) = self.decode_all(rbuf, decoder) {
                                return close;
                            }
                        }
                    }
                    return Close::error(reason);
                }
                _ = shutdown.changed() => {
                    let _ = writer.write_all(&self.wbuf).await;
                    self.wbuf.clear();
                    return Close { reason: Some(ReasonCode::SERVER_SHUTTING_DOWN), will: false };
                }
                res = writer.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => {
                    match res {
                        Ok(0) | Err(_) => return Close { reason: None, will: true },
                        Ok(n) => {
                            self.shared.stats.sent_bytes(n);
                            if self.wbuf.is_empty() {
                                // TLS and WebSocket layers buffer until flushed.
                                if writer.flush().await.is_err() {
                                    return Close { reason: None, will: true };
                                }
                                if self.wbuf.capacity() > MAX_IDLE_BUFFER {
                                    self.wbuf = BytesMut::new();
                                }
                            }
                        }
                    }
                }
                res = reader.read_buf(rbuf), if can_read => {
                    match res {
                        Ok(0) | Err(_) => return Close { reason: None, will: true },
                        Ok(n) => {
                            self.shared.stats.received_bytes(n);
                            last_read = Instant::now();
                            if let Err(close) = self.decode_all(rbuf, decoder) {
                                let _ = writer.write_all(&self.wbuf).await;
                                self.wbuf.clear();
                                return close;
                            }
                            if n >= spare {
                                read_hint = (read_hint * 2).min(MAX_READ);
                            } else if rbuf.is_empty() && rbuf.capacity() > MAX_IDLE_BUFFER {
                                *rbuf = BytesMut::new();
                                read_hint = MIN_READ;
                            }
                        }
                    }
                }
                _ = self.session.notify.notified() => {}
                _ = committed_changed(&mut self.committed), if !self.held.is_empty() => self.release_held(),
                r = front_deferred(&mut self.held), if matches!(self.held.front(), Some(Held::Ack { .. })) => {
                    if let Err(close) = self.resolve_deferred(r) {
                        let _ = writer.write_all(&self.wbuf).await;
                        self.wbuf.clear();
                        return close;
                    }
                }
                _ = &mut keepalive, if grace.is_some() => {
                    let due = last_read + grace.unwrap_or_default();
                    if Instant::now() < due {
                        keepalive.as_mut().reset(due);
                        continue;
                    }
                    tracing::info!(client_id = %self.client_id, keep_alive, "keep-alive timeout");
                    metrics::counter!("mqtt_keepalive_timeouts_total").increment(1);
                    return Close::error(ReasonCode::KEEP_ALIVE_TIMEOUT);
                }
            }
        }
    }

    fn decode_all(&mut self, rbuf: &mut BytesMut, decoder: &mut Decoder) -> Result<(), Close> {
        loop {
            match decoder.decode(rbuf) {
                Ok(Some(packet)) => self.handle(packet)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::info!(client_id = %self.client_id, error = %e, "malformed packet, closing");
                    metrics::counter!("mqtt_malformed_packets_total").increment(1);
                    return Err(Close::error(e.reason_code()));
                }
            }
        }
    }
}

/// Waits for the deferred work of the first held acknowledgement.
async fn front_deferred(held: &mut VecDeque<Held>) -> Result<(), (ReasonCode, Option<String>)> {
    std::future::poll_fn(|cx| match held.front_mut() {
        Some(Held::Ack { wait, .. }) => wait.as_mut().poll(cx),
        _ => std::task::Poll::Pending,
    })
    .await
}

async fn committed_changed(committed: &mut Option<watch::Receiver<u64>>) {
    let ok = match committed {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !ok {
        std::future::pending::<()>().await;
    }
}
