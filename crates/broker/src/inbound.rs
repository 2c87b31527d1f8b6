//! Packets from the client: PUBLISH (with aliases, authorisation, QoS 1/2 handshakes),
//! acknowledgements of our messages, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT.

use std::sync::Arc;
use std::time::Duration;

use mqtt_codec::{
    encode_packet, topic, Packet, Properties, PubResponse, Publish, QoS, ReasonCode, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use tokio::time::Instant;

use crate::connection::{Close, Connection};
use crate::hooks::Intercept;
use crate::message::Message;
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
            Packet::PubRec(r) => self.on_pubrec(r),
            Packet::PubRel(r) => {
                let found = self.session.state.lock().incoming_qos2.remove(&r.packet_id);
                let code = if found || !self.protocol.is_v5() {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.send(Packet::PubComp(ack(r.packet_id, code)));
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
                match self.aliases_in.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(Close::error(ReasonCode::PROTOCOL_ERROR)),
                }
            } else {
                self.aliases_in.insert(alias, p.topic.clone());
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
        if p.retain && !cfg.retain_available {
            return Err(Close::error(ReasonCode::RETAIN_NOT_SUPPORTED));
        }
        let pid = p.packet_id;
        if p.qos == QoS::ExactlyOnce {
            let st = self.session.state.lock();
            if st.incoming_qos2.contains(&pid) {
                // A retransmission before PUBREL: acknowledge again, deliver once (4.3.3).
                drop(st);
                self.send(Packet::PubRec(ack(pid, ReasonCode::SUCCESS)));
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
                    self.send_pub_ack(qos, pid, ReasonCode::PAYLOAD_FORMAT_INVALID);
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
            self.send_pub_ack(p.qos, pid, code);
            return Ok(());
        }
        let msg = self.message_from(p);
        let qos = msg.qos;
        let code = match self
            .shared
            .hooks
            .intercept(&self.identity, &self.client_id, &msg)
        {
            Intercept::Continue => {
                if self.shared.route(Arc::new(msg)) == 0 && v5 {
                    ReasonCode::NO_MATCHING_SUBSCRIBERS
                } else {
                    ReasonCode::SUCCESS
                }
            }
            Intercept::Consume => ReasonCode::SUCCESS,
            Intercept::Reject(code) if v5 => code,
            Intercept::Reject(_) => ReasonCode::SUCCESS,
        };
        if qos == QoS::ExactlyOnce && code.is_success() {
            self.session.state.lock().incoming_qos2.insert(pid);
        }
        self.send_pub_ack(qos, pid, code);
        Ok(())
    }

    fn message_from(&self, p: Publish) -> Message {
        let mut properties = p.properties;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        Message {
            namespace: self.identity.namespace.clone(),
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at,
            origin: self.session.id,
        }
    }

    fn send_pub_ack(&mut self, qos: QoS, pid: u16, code: ReasonCode) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(Packet::PubAck(ack(pid, code))),
            QoS::ExactlyOnce => self.send(Packet::PubRec(ack(pid, code))),
        }
    }

    fn on_ack(&mut self, pid: u16, expect: InflightState) {
        let mut st = self.session.state.lock();
        if let Some(i) = st.inflight_position(pid) {
            if st.inflight[i].state == expect {
                st.inflight.remove(i);
            }
        }
    }

    fn on_pubrec(&mut self, r: PubResponse) -> Result<(), Close> {
        let pid = r.packet_id;
        let found = {
            let mut st = self.session.state.lock();
            match st.inflight_position(pid) {
                Some(i) if r.code.is_success() => {
                    st.inflight[i].state = InflightState::Comp;
                    true
                }
                Some(i) => {
                    // The receiver refused the message: the flow ends here (4.3.3).
                    st.inflight.remove(i);
                    return Ok(());
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
        Ok(())
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        let v5 = self.protocol.is_v5();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.subscriptions.len());
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
            let code = if !valid {
                tracing::info!(client_id = %self.client_id, filter = %sub.filter, "invalid topic filter");
                if v5 {
                    ReasonCode::TOPIC_FILTER_INVALID
                } else {
                    ReasonCode::V3_SUBACK_FAILURE
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
                ReasonCode(sub.options.qos as u8)
            };
            codes.push(code);
        }
        // SUBACK goes out before any retained message the subscriptions bring (3.8.4).
        self.send(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            codes: codes.clone(),
            properties: Properties::default(),
        }));
        for (sub, code) in s.subscriptions.iter().zip(&codes) {
            if code.is_success() {
                self.shared
                    .subscribe(&self.session, &sub.filter, sub.options, sub_id);
            }
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let v5 = self.protocol.is_v5();
        let codes = u
            .filters
            .iter()
            .map(|f| {
                let existed = self.shared.unsubscribe(&self.session, f);
                if existed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        let codes = if v5 { codes } else { Vec::new() };
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            codes,
            properties: Properties::default(),
        }));
    }

    fn on_disconnect(&mut self, code: ReasonCode, expiry: Option<u32>) -> Result<(), Close> {
        if let Some(e) = expiry {
            if self.connect_expiry == 0 && e != 0 {
                // Raising the expiry from 0 at DISCONNECT is a protocol error (3.14.2.2.2).
                return Err(Close::error(ReasonCode::PROTOCOL_ERROR));
            }
            self.session.state.lock().expiry = if e == u32::MAX { NEVER_EXPIRES } else { e };
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
