//! Messages to the client: moving deliveries from the session queue into the write buffer within
//! the in-flight window, with packet ids, topic aliases, expiry and the client's packet-size limit;
//! and retransmission of unacknowledged messages when a session resumes.

use mqtt_codec::{encode_publish_ref, publish_ref_len, Packet, PublishRef, QoS, ReasonCode};
use tokio::time::Instant;

use crate::connection::{Connection, FILL_LOW_WATER};
use crate::inbound::ack;
use crate::message::Delivery;
use crate::persistence::{Op, STATE_ACK, STATE_REC};
use crate::session::{Inflight, InflightState};

impl Connection {
    /// Moves queued deliveries into the write buffer while there is room.
    pub fn fill_outbound(&mut self) {
        if self.wbuf.len() >= FILL_LOW_WATER || self.held_bytes >= FILL_LOW_WATER {
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
        while self.wbuf.len() < FILL_LOW_WATER && self.held_bytes < FILL_LOW_WATER {
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
            // A stored message is sent only once its packet id is on disk too, so that after a
            // crash it is re-sent with the same id and DUP set (4.4) rather than as a new
            // message; and nothing overtakes a held packet (a SUBACK before the retained
            // messages its subscription brings, 3.8.4).
            let stored = match (d.row, d.qos) {
                (Some(id), QoS::AtLeastOnce) => Some((id, STATE_ACK)),
                (Some(id), QoS::ExactlyOnce) => Some((id, STATE_REC)),
                _ => None,
            };
            let seq = stored.map_or(0, |(id, state)| {
                self.shared.persist(|| Op::QueueState { id, pid, state })
            });
            let start = self.wbuf.len();
            if !self.write_publish(&d, pid, false, now) {
                // Too large for the client: discarded as if delivered (spec 3.1.2.25).
                tracing::debug!(client_id = %self.client_id, topic = %d.msg.topic, "message exceeds client's maximum packet size, dropped");
                metrics::counter!("mqtt_messages_dropped_total", "reason" => "too_large_for_client").increment(1);
                self.forget(&d);
                continue;
            }
            if seq > 0 || !self.held.is_empty() {
                let bytes = self.wbuf.split_off(start).freeze();
                self.hold(seq, bytes);
            }
            sent += 1;
            if d.qos != QoS::AtMostOnce {
                let state = if d.qos == QoS::AtLeastOnce {
                    InflightState::Ack
                } else {
                    InflightState::Rec
                };
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
                    self.write_publish(&i.delivery, i.pid, true, now);
                }
            }
        }
    }

    /// Encodes one delivery into the write buffer, with its subscription identifiers, remaining
    /// expiry and a topic alias (v5). Returns false, writing nothing, when the packet would exceed
    /// the client's maximum packet size. Retransmissions (`dup`) never use aliases.
    fn write_publish(&mut self, d: &Delivery, pid: u16, dup: bool, now: Instant) -> bool {
        let v5 = self.protocol.is_v5();
        let topic = &d.msg.topic;
        // (alias, whether the client knows it already)
        let alias = if v5 && !dup && self.limits.topic_alias_maximum > 0 {
            let assigned = self.aliases.as_ref().map(|a| &a.outgoing);
            let used = assigned.map_or(0, |a| a.len());
            match assigned.and_then(|a| a.get(topic)) {
                Some(&a) => Some((a, true)),
                None if used < usize::from(self.limits.topic_alias_maximum) => {
                    Some((used as u16 + 1, false))
                }
                None => None,
            }
        } else {
            None
        };
        let expiry = if v5 {
            d.msg.remaining_expiry(now)
        } else {
            None
        };
        // Most messages forward their properties untouched: copy the set only when this
        // delivery adds to it.
        let owned;
        let properties = if v5 && (!d.sub_ids.is_empty() || expiry.is_some() || alias.is_some()) {
            let mut p = d.msg.properties.clone();
            p.subscription_identifiers.clone_from(&d.sub_ids);
            p.message_expiry_interval = expiry;
            p.topic_alias = alias.map(|(a, _)| a);
            owned = p;
            &owned
        } else {
            &d.msg.properties
        };
        let publish = PublishRef {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: if matches!(alias, Some((_, true))) {
                ""
            } else {
                topic
            },
            packet_id: pid,
            payload: &d.msg.payload,
            properties,
        };
        if publish_ref_len(&publish, self.protocol) > self.limits.max_packet_size {
            return false;
        }
        encode_publish_ref(&publish, self.protocol, &mut self.wbuf);
        if let Some((a, false)) = alias {
            let aliases = self.aliases.get_or_insert_with(Default::default);
            aliases.outgoing.insert(topic.clone(), a);
        }
        true
    }
}
