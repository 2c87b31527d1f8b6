//! Messages to the client: moving deliveries from the session queue into the write buffer within
//! the in-flight window, with packet ids, topic aliases, expiry and the client's packet-size limit;
//! and retransmission of unacknowledged messages when a session resumes.

use mqtt_codec::{encode_publish, publish_len, Packet, Properties, Publish, QoS, ReasonCode};
use tokio::time::Instant;

use crate::connection::{Connection, FILL_LOW_WATER};
use crate::inbound::ack;
use crate::message::Delivery;
use crate::persistence::{Op, STATE_ACK, STATE_REC};
use crate::session::{Inflight, InflightState};

thread_local! {
    static EMPTY_TOPIC: std::sync::Arc<str> = std::sync::Arc::from("");
}

impl Connection {
    /// Moves queued deliveries into the write buffer while there is room.
    pub fn fill_outbound(&mut self) {
        if self.wbuf.len() >= FILL_LOW_WATER {
            return;
        }
        if self
            .held
            .iter()
            .any(|(_, p)| matches!(p, Packet::SubAck(_)))
        {
            // Retained messages of a new subscription must not overtake its SUBACK.
            return;
        }
        let now = Instant::now();
        let mut sent = 0u64;
        let session = self.session.clone();
        let mut st = session.state.lock();
        if st.conn_gen != self.gen {
            // Taken over: the new connection serves the queue now.
            return;
        }
        while self.wbuf.len() < FILL_LOW_WATER {
            let Some(d) = st.pop() else { break };
            if d.msg.expired(now) {
                self.shared.stats.expired();
                self.forget(&d);
                continue;
            }
            if d.qos != QoS::AtMostOnce && st.inflight.len() >= self.limits.receive_maximum {
                st.push_front(d);
                break;
            }
            let pid = if d.qos == QoS::AtMostOnce {
                0
            } else {
                st.next_packet_id()
            };
            let mut publish = self.outgoing_publish(&d, pid, false, now);
            if publish_len(&publish, self.protocol) > self.limits.max_packet_size {
                // Too large for the client: discarded as if delivered (spec 3.1.2.25).
                tracing::debug!(client_id = %self.client_id, topic = %d.msg.topic, "message exceeds client's maximum packet size, dropped");
                metrics::counter!("mqtt_messages_dropped_total", "reason" => "too_large_for_client").increment(1);
                self.forget(&d);
                continue;
            }
            self.apply_alias(&mut publish);
            encode_publish(&publish, self.protocol, &mut self.wbuf);
            sent += 1;
            if d.qos != QoS::AtMostOnce {
                let (state, stored) = if d.qos == QoS::AtLeastOnce {
                    (InflightState::Ack, STATE_ACK)
                } else {
                    (InflightState::Rec, STATE_REC)
                };
                if let Some(id) = d.row {
                    self.shared.persist(|| Op::QueueState {
                        id,
                        pid,
                        state: stored,
                    });
                }
                st.inflight.push_back(Inflight {
                    pid,
                    delivery: d,
                    state,
                });
            }
        }
        drop(st);
        if sent > 0 {
            self.shared.stats.messages_sent(sent);
        }
    }

    /// Removes a dropped delivery's stored row.
    fn forget(&self, d: &Delivery) {
        if let Some(id) = d.row {
            self.shared.persist(|| Op::QueueDelete { id });
        }
    }

    /// Re-sends every unacknowledged message of a resumed session, PUBLISH with DUP set or
    /// PUBREL, in the original order (spec 4.4).
    pub fn resend_inflight(&mut self) {
        let now = Instant::now();
        let session = self.session.clone();
        let items: Vec<Inflight> = session.state.lock().inflight.iter().cloned().collect();
        for i in items {
            match i.state {
                InflightState::Comp => self.send(Packet::PubRel(ack(i.pid, ReasonCode::SUCCESS))),
                _ => {
                    let p = self.outgoing_publish(&i.delivery, i.pid, true, now);
                    self.send(Packet::Publish(p));
                }
            }
        }
    }

    fn outgoing_publish(&self, d: &Delivery, pid: u16, dup: bool, now: Instant) -> Publish {
        let properties = if self.protocol.is_v5() {
            let mut props: Properties = d.msg.properties.clone();
            props.subscription_identifiers = d.sub_ids.clone();
            props.message_expiry_interval = d.msg.remaining_expiry(now);
            props
        } else {
            Properties::default()
        };
        Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.clone(),
            packet_id: pid,
            payload: d.msg.payload.clone(),
            properties,
        }
    }

    /// Replaces the topic by an alias the client already knows, or assigns a new alias while
    /// the client's maximum allows (v5 only). Retransmissions never use aliases.
    fn apply_alias(&mut self, p: &mut Publish) {
        if self.limits.topic_alias_maximum == 0 || !self.protocol.is_v5() {
            return;
        }
        if let Some(&alias) = self.aliases_out.get(&p.topic) {
            p.properties.topic_alias = Some(alias);
            p.topic = EMPTY_TOPIC.with(|e| e.clone());
        } else if self.aliases_out.len() < usize::from(self.limits.topic_alias_maximum) {
            let alias = self.aliases_out.len() as u16 + 1;
            self.aliases_out.insert(p.topic.clone(), alias);
            p.properties.topic_alias = Some(alias);
        }
    }
}
