//! Packets from the client: PUBLISH (with aliases, authorisation, QoS 1/2 handshakes),
//! acknowledgements of our messages, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT.
//!
//! Acknowledgements that promise durability (PUBACK, PUBREC, SUBACK, UNSUBACK) go through
//! [`Connection::send_after`], which holds them back until the store has committed what they
//! depend on, keeping their order.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use std::time::Duration;

use mqtt_codec::{
    encode_packet, topic, Packet, Properties, PubResponse, Publish, QoS, ReasonCode, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use tokio::time::Instant;

use crate::broker::split_shared;
use crate::connection::{Close, Connection, Held};
use crate::hooks::Intercept;
use crate::limits::{self, Limit};
use crate::message::Message;
use crate::persistence::{Op, STATE_COMP};
use crate::session::{InflightState, NEVER_EXPIRES};

impl Connection {
    /// Handles one packet from the client; `Err` closes the connection.
    pub fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(r) => {
                self.on_ack(r.packet_id, InflightState::Ack);
                Ok(())
            }
            Packet::PubRec(r) => {
                self.on_pubrec(r);
                Ok(())
            }
            Packet::PubRel(r) => {
                self.on_pubrel(r.packet_id);
                Ok(())
            }
            Packet::PubComp(r) => {
                self.on_ack(r.packet_id, InflightState::Comp);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => {
                self.on_disconnect(d.code, d.properties.session_expiry_interval)
            }
            Packet::Auth(_) => {
                // No enhanced authentication was negotiated, so AUTH is a protocol error (4.12).
                Err(Close::error(ReasonCode::PROTOCOL_ERROR))
            }
            Packet::Connect(_) => {
                tracing::info!(client_id = %self.client_id, "second CONNECT, closing");
                Err(Close::error(ReasonCode::PROTOCOL_ERROR))
            }
            other => {
                tracing::info!(client_id = %self.client_id, packet = other.name(), "server-only packet from client");
                Err(Close::error(ReasonCode::PROTOCOL_ERROR))
            }
        }
    }

    /// Appends a packet to the write buffer.
    pub fn send(&mut self, packet: Packet) {
        encode_packet(&packet, self.protocol, &mut self.wbuf);
    }

    /// Sends `packet` once store sequence `seq` is committed, after any packet already held.
    pub fn send_after(&mut self, seq: u64, packet: Packet) {
        let committed = self.committed.as_ref().map_or(u64::MAX, |c| *c.borrow());
        if self.held.is_empty() && seq <= committed {
            self.send(packet);
        } else {
            let mut out = BytesMut::new();
            encode_packet(&packet, self.protocol, &mut out);
            self.hold(seq, out.freeze());
        }
    }

    /// Queues encoded bytes behind the held ones, to go out once `seq` is committed.
    pub fn hold(&mut self, seq: u64, bytes: Bytes) {
        self.held_bytes += bytes.len();
        self.held.push_back(Held::Bytes { seq, bytes });
    }

    /// The first held acknowledgement's deferred work is done: it becomes a packet (or, for a
    /// 3.1.1 client whose message could not be taken, the connection closes).
    pub fn resolve_deferred(
        &mut self,
        r: Result<(), (ReasonCode, Option<String>)>,
    ) -> Result<(), Close> {
        let Some(Held::Ack { pid, qos, seq, .. }) = self.held.pop_front() else {
            return Ok(());
        };
        let (code, reason) = match r {
            Ok(()) => (ReasonCode::SUCCESS, None),
            Err((code, reason)) => {
                if qos == QoS::ExactlyOnce {
                    self.session.state.lock().incoming_qos2.remove(&pid);
                }
                if !self.protocol.is_v5() {
                    tracing::info!(client_id = %self.client_id, reason = ?reason, "message not taken; closing the 3.1.1 connection so that it is sent again");
                    return Err(Close {
                        reason: None,
                        will: true,
                    });
                }
                (code, reason)
            }
        };
        let mut packet = ack(pid, code);
        packet.properties.reason_string = reason;
        let packet = match qos {
            QoS::ExactlyOnce => Packet::PubRec(packet),
            _ => Packet::PubAck(packet),
        };
        let mut out = BytesMut::new();
        encode_packet(&packet, self.protocol, &mut out);
        let bytes = out.freeze();
        self.held_bytes += bytes.len();
        self.held.push_front(Held::Bytes { seq, bytes });
        self.release_held();
        Ok(())
    }

    /// Sends the held packets whose writes are committed, in order.
    pub fn release_held(&mut self) {
        let committed = self
            .committed
            .as_mut()
            .map_or(u64::MAX, |c| *c.borrow_and_update());
        while let Some(Held::Bytes { seq, .. }) = self.held.front() {
            if *seq > committed {
                break;
            }
            if let Some(Held::Bytes { bytes, .. }) = self.held.pop_front() {
                self.held_bytes -= bytes.len();
                self.wbuf.extend_from_slice(&bytes);
            }
        }
    }

    fn persistent(&self) -> bool {
        self.shared.store.is_some() && self.session.state.lock().expiry > 0
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), Close> {
        let v5 = self.protocol.is_v5();
        let cfg = &self.shared.config;
        self.shared.stats.message_received();
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > cfg.topic_alias_maximum {
                tracing::info!(client_id = %self.client_id, alias, "topic alias out of range");
                return Err(Close::error(ReasonCode::TOPIC_ALIAS_INVALID));
            }
            if p.topic.is_empty() {
                match self.aliases.as_ref().and_then(|a| a.incoming.get(&alias)) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(Close::error(ReasonCode::PROTOCOL_ERROR)),
                }
            } else {
                let aliases = self.aliases.get_or_insert_with(Default::default);
                aliases.incoming.insert(alias, p.topic.clone());
            }
        }
        if !p.properties.subscription_identifiers.is_empty() {
            // Only the server sends subscription identifiers (3.3.4).
            return Err(Close::error(ReasonCode::PROTOCOL_ERROR));
        }
        if p.properties
            .response_topic
            .as_deref()
            .is_some_and(|t| !topic::valid_topic_name(t))
        {
            return Err(Close::error(ReasonCode::PROTOCOL_ERROR));
        }
        if !topic::valid_topic_name(&p.topic) {
            return Err(Close::error(ReasonCode::TOPIC_NAME_INVALID));
        }
        if let Some(rate) = &mut self.publish_rate {
            if !rate.take() {
                limits::hit(Limit::PublishRate, &self.client_id, &p.topic);
                return Err(Close::error(Limit::PublishRate.reason()));
            }
        }
        if let Err(limit) = limits::check_topic(cfg, &p.topic) {
            limits::hit(
                limit,
                &self.client_id,
                &format!("topic of {} bytes", p.topic.len()),
            );
            let code = if v5 {
                limit.reason()
            } else {
                ReasonCode::SUCCESS
            };
            self.send_pub_ack(0, p.qos, p.packet_id, code);
            return Ok(());
        }
        if p.retain && !cfg.retain_available {
            return Err(Close::error(ReasonCode::RETAIN_NOT_SUPPORTED));
        }
        let pid = p.packet_id;
        if p.qos == QoS::ExactlyOnce {
            let st = self.session.state.lock();
            if st.incoming_qos2.contains(&pid) {
                // A retransmission before PUBREL: acknowledge again, deliver once (4.3.3).
                drop(st);
                self.send_after(0, Packet::PubRec(ack(pid, ReasonCode::SUCCESS)));
                return Ok(());
            }
            if st.incoming_qos2.len() >= usize::from(cfg.receive_maximum) {
                return Err(Close::error(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
            }
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            tracing::info!(client_id = %self.client_id, topic = %p.topic, "payload is not UTF-8 as announced");
            return match p.qos {
                QoS::AtMostOnce => Err(Close::error(ReasonCode::PAYLOAD_FORMAT_INVALID)),
                qos => {
                    self.send_pub_ack(0, qos, pid, ReasonCode::PAYLOAD_FORMAT_INVALID);
                    Ok(())
                }
            };
        }
        if !self
            .shared
            .hooks
            .authorize_publish(&self.identity, &self.client_id, &p.topic)
        {
            tracing::info!(client_id = %self.client_id, topic = %p.topic, "publish not authorised");
            metrics::counter!("mqtt_publish_denied_total").increment(1);
            let code = if v5 {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::SUCCESS
            };
            self.send_pub_ack(0, p.qos, pid, code);
            return Ok(());
        }
        let msg = self.message_from(p);
        let qos = msg.qos;
        let mut seq = 0;
        let mut reason = None;
        let mut deferred = None;
        let code = match self
            .shared
            .hooks
            .intercept(&self.identity, &self.client_id, &msg)
        {
            Intercept::Continue => {
                let routed = self.shared.route(Arc::new(msg));
                seq = routed.seq;
                if routed.delivered == 0 && v5 {
                    ReasonCode::NO_MATCHING_SUBSCRIBERS
                } else {
                    ReasonCode::SUCCESS
                }
            }
            Intercept::Consume => ReasonCode::SUCCESS,
            Intercept::Defer(wait) => {
                deferred = Some(wait);
                ReasonCode::SUCCESS
            }
            Intercept::Reject(code, why) if v5 => {
                reason = why;
                code
            }
            Intercept::Reject(..) => ReasonCode::SUCCESS,
        };
        if qos == QoS::ExactlyOnce && code.is_success() {
            self.session.state.lock().incoming_qos2.insert(pid);
            if self.persistent() {
                let (ns, client_id) = (
                    self.session.namespace.clone(),
                    self.session.client_id.clone(),
                );
                seq = self.shared.persist(|| Op::Qos2Add { ns, client_id, pid });
            }
        }
        match deferred {
            // QoS 0 has nothing to acknowledge: the work goes on without us.
            Some(wait) if qos != QoS::AtMostOnce => self.held.push_back(Held::Ack {
                wait,
                pid,
                qos,
                seq,
            }),
            _ => self.send_pub_ack_with(seq, qos, pid, code, reason),
        }
        Ok(())
    }

    fn message_from(&self, p: Publish) -> Message {
        let mut properties = p.properties;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        let mut msg = Message::new(
            self.identity.namespace.clone(),
            p.topic,
            p.payload,
            p.qos,
            p.retain,
        );
        msg.properties = properties;
        msg.expires_at = expires_at;
        msg.origin = self.session.id;
        msg
    }

    fn send_pub_ack(&mut self, seq: u64, qos: QoS, pid: u16, code: ReasonCode) {
        self.send_pub_ack_with(seq, qos, pid, code, None)
    }

    fn send_pub_ack_with(
        &mut self,
        seq: u64,
        qos: QoS,
        pid: u16,
        code: ReasonCode,
        reason: Option<String>,
    ) {
        let ack = |pid, code| {
            let mut r = ack(pid, code);
            r.properties.reason_string = reason;
            r
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_after(seq, Packet::PubAck(ack(pid, code))),
            QoS::ExactlyOnce => self.send_after(seq, Packet::PubRec(ack(pid, code))),
        }
    }

    fn on_pubrel(&mut self, pid: u16) {
        let found = self.session.state.lock().incoming_qos2.remove(&pid);
        if found && self.persistent() {
            let (ns, client_id) = (
                self.session.namespace.clone(),
                self.session.client_id.clone(),
            );
            self.shared
                .persist(|| Op::Qos2Remove { ns, client_id, pid });
        }
        let code = if found || !self.protocol.is_v5() {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        // PUBCOMP promises nothing durable: a lost removal only means a later duplicate id is
        // acknowledged without delivery, which the client's own state already rules out.
        self.send_after(0, Packet::PubComp(ack(pid, code)));
    }

    fn on_ack(&mut self, pid: u16, expect: InflightState) {
        let done = {
            let mut st = self.session.state.lock();
            match st.inflight_position(pid) {
                Some(i) if st.inflight[i].state == expect => st.inflight.remove(i),
                _ => None,
            }
        };
        let Some(done) = done else {
            return;
        };
        if let Some(id) = done.delivery.row {
            self.shared.persist(|| Op::QueueDelete { id });
        }
        self.shared
            .hooks
            .on_delivered(&self.identity, &self.client_id, &done.delivery.msg);
    }

    fn on_pubrec(&mut self, r: PubResponse) {
        let pid = r.packet_id;
        let found = {
            let mut st = self.session.state.lock();
            match st.inflight_position(pid) {
                Some(i) if r.code.is_success() => {
                    st.inflight[i].state = InflightState::Comp;
                    if let Some(id) = st.inflight[i].delivery.row {
                        self.shared.persist(|| Op::QueueState {
                            id,
                            pid,
                            state: STATE_COMP,
                        });
                    }
                    true
                }
                Some(i) => {
                    // The receiver refused the message: the flow ends here (4.3.3).
                    if let Some(id) = st.inflight.remove(i).and_then(|f| f.delivery.row) {
                        self.shared.persist(|| Op::QueueDelete { id });
                    }
                    return;
                }
                None => false,
            }
        };
        let code = if found || !self.protocol.is_v5() {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send(Packet::PubRel(ack(pid, code)));
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        let v5 = self.protocol.is_v5();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.subscriptions.len());
        // New subscriptions granted so far in this packet, for the per-client maximum.
        let mut added = 0;
        for sub in &s.subscriptions {
            let shared = topic::parse_shared(&sub.filter);
            let valid = match shared {
                Some(Ok(_)) => true,
                Some(Err(())) => false,
                None => topic::valid_filter(&sub.filter),
            };
            if matches!(shared, Some(Ok(_))) && sub.options.no_local && v5 {
                return Err(Close::error(ReasonCode::PROTOCOL_ERROR));
            }
            if !valid && !v5 {
                // 3.1.1 has no failure code for a malformed filter: a protocol violation closes
                // the connection (4.8.0-1).
                tracing::info!(client_id = %self.client_id, filter = %sub.filter, "invalid topic filter, closing");
                return Err(Close::error(ReasonCode::MALFORMED_PACKET));
            }
            let (_, inner) = split_shared(&sub.filter);
            let over = limits::check_topic(&self.shared.config, inner)
                .err()
                .or_else(|| {
                    let max = self.shared.config.max_subscriptions;
                    let st = self.session.state.lock();
                    let new = !st.subscriptions.contains_key(&sub.filter);
                    (max > 0 && new && st.subscriptions.len() + added >= max)
                        .then_some(Limit::Subscriptions)
                });
            let code = if !valid {
                tracing::info!(client_id = %self.client_id, filter = %sub.filter, "invalid topic filter");
                ReasonCode::TOPIC_FILTER_INVALID
            } else if let Some(limit) = over {
                limits::hit(limit, &self.client_id, &sub.filter);
                match (v5, limit) {
                    (false, _) => ReasonCode::V3_SUBACK_FAILURE,
                    (true, Limit::Subscriptions) => ReasonCode::QUOTA_EXCEEDED,
                    (true, _) => ReasonCode::TOPIC_FILTER_INVALID,
                }
            } else if !self.shared.hooks.authorize_subscribe(
                &self.identity,
                &self.client_id,
                &sub.filter,
            ) {
                tracing::info!(client_id = %self.client_id, filter = %sub.filter, "subscribe not authorised");
                metrics::counter!("mqtt_subscribe_denied_total").increment(1);
                if v5 {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode::V3_SUBACK_FAILURE
                }
            } else {
                added += usize::from(
                    !self
                        .session
                        .state
                        .lock()
                        .subscriptions
                        .contains_key(&sub.filter),
                );
                ReasonCode(sub.options.qos as u8)
            };
            codes.push(code);
        }
        let mut seq = 0;
        // Subscriptions are in place (and their retained messages queued) before SUBACK is
        // written, but the queue is only drained after it, so SUBACK comes first (3.8.4).
        for (sub, code) in s.subscriptions.iter().zip(&codes) {
            if code.is_success() {
                seq =
                    seq.max(
                        self.shared
                            .subscribe(&self.session, &sub.filter, sub.options, sub_id),
                    );
            }
        }
        for (sub, code) in s.subscriptions.iter().zip(&codes) {
            if code.is_success() {
                self.shared
                    .hooks
                    .on_subscribed(&self.identity, &self.client_id, &sub.filter);
            }
        }
        let suback = SubAck {
            packet_id: s.packet_id,
            codes,
            properties: Properties::default(),
        };
        self.send_after(seq, Packet::SubAck(suback));
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let v5 = self.protocol.is_v5();
        let mut seq = 0;
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let (existed, s) = self.shared.unsubscribe(&self.session, f);
            seq = seq.max(s);
            codes.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        let codes = if v5 { codes } else { Vec::new() };
        let unsuback = UnsubAck {
            packet_id: u.packet_id,
            codes,
            properties: Properties::default(),
        };
        self.send_after(seq, Packet::UnsubAck(unsuback));
    }

    fn on_disconnect(&mut self, code: ReasonCode, expiry: Option<u32>) -> Result<(), Close> {
        if let Some(e) = expiry {
            if self.connect_expiry == 0 && e != 0 {
                // Raising the expiry from 0 at DISCONNECT is a protocol error (3.14.2.2.2).
                return Err(Close::error(ReasonCode::PROTOCOL_ERROR));
            }
            let e = if e == u32::MAX { NEVER_EXPIRES } else { e };
            let old = std::mem::replace(&mut self.session.state.lock().expiry, e);
            let (ns, client_id) = (
                self.session.namespace.clone(),
                self.session.client_id.clone(),
            );
            if e > 0 {
                self.shared.persist(|| Op::SessionUpsert {
                    ns,
                    client_id,
                    expiry: e,
                });
            } else if old > 0 {
                self.shared.persist(|| Op::SessionDelete { ns, client_id });
            }
        }
        let will = code == ReasonCode::DISCONNECT_WITH_WILL;
        Err(Close { reason: None, will })
    }
}

/// A PUBACK/PUBREC/PUBREL/PUBCOMP body.
pub fn ack(packet_id: u16, code: ReasonCode) -> PubResponse {
    PubResponse {
        packet_id,
        code,
        properties: Properties::default(),
    }
}
