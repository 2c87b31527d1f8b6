//! A subscriber: one task per connection that counts every PUBLISH, acknowledges QoS 1 and 2
//! (acks of one read go out in one write), and for stamped messages reports progress to the
//! end-to-end credit, checks sequence order and records latency.
//!
//! Latency is the receive time taken right after `read()` returns minus the stamp's send time,
//! for messages sent inside the measured window.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_codec::{Packet, QoS};
use tokio::time::sleep_until;

use crate::client::{ack, Incoming, MqttConn, Stamp};
use crate::engine::{new_histogram, procfs, stopped, Run};
use crate::error::ClientError;

/// What one subscriber does.
pub struct SubscriberPlan {
    /// Its number in the run (fan-out credit slot).
    pub index: usize,
    /// Count messages whose sequence number does not advance (the run owns the publishers,
    /// so publisher numbers are unique).
    pub track_sequence: bool,
}

struct Subscriber {
    conn: MqttConn,
    plan: SubscriberPlan,
    run: Arc<Run>,
    /// Per publisher: highest sequence number seen + 1.
    seen: Vec<u64>,
    latency: hdrhistogram::Histogram<u64>,
    acks: BytesMut,
    last_write: Instant,
}

/// Most publishers a subscriber tracks sequence numbers for.
const MAX_TRACKED: usize = 1 << 20;

/// Runs one subscriber until the run stops, then disconnects.
pub async fn subscribe(conn: MqttConn, plan: SubscriberPlan, run: Arc<Run>) {
    let mut s = Subscriber {
        conn,
        plan,
        run: run.clone(),
        seen: Vec::new(),
        latency: new_histogram(),
        acks: BytesMut::new(),
        last_write: Instant::now(),
    };
    if let Err(e) = s.receive().await {
        run.counters
            .error(format!("subscriber {}: {e}", s.plan.index));
    }
    run.merge_latency(&s.latency);
    s.conn.disconnect().await;
    run.counters.connections.fetch_sub(1, Relaxed);
}

impl Subscriber {
    async fn receive(&mut self) -> Result<(), ClientError> {
        let hard = self.run.timeline.hard;
        let mut stop = self.run.stop_signal();
        let ping_every = Duration::from_secs(u64::from(self.conn.keep_alive.max(2)) / 2);
        loop {
            tokio::select! {
                r = self.conn.fill() => {
                    r?;
                    self.handle_incoming().await?;
                }
                _ = stopped(&mut stop) => return Ok(()),
                _ = sleep_until((self.last_write + ping_every).into()) => {
                    self.conn.encode(&Packet::PingReq, &mut self.acks);
                    self.flush().await?;
                }
                _ = sleep_until(hard.into()) => return Ok(()),
            }
        }
    }

    async fn handle_incoming(&mut self) -> Result<(), ClientError> {
        let recv_ns = procfs::mono_ns();
        let mut got = 0;
        while let Some(packet) = self.conn.next_incoming()? {
            match packet {
                Incoming::Publish {
                    qos,
                    packet_id,
                    stamp,
                } => {
                    got += 1;
                    match qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => self
                            .conn
                            .encode(&ack(Packet::PubAck, packet_id), &mut self.acks),
                        QoS::ExactlyOnce => self
                            .conn
                            .encode(&ack(Packet::PubRec, packet_id), &mut self.acks),
                    }
                    if let Some(stamp) = stamp {
                        self.observe(stamp, recv_ns);
                    }
                }
                Incoming::PubRel(id) => self.conn.encode(&ack(Packet::PubComp, id), &mut self.acks),
                Incoming::Disconnect(code) => return Err(ClientError::Disconnected(code)),
                _ => {}
            }
        }
        if got > 0 {
            self.run.counters.received.fetch_add(got, Relaxed);
        }
        self.flush().await
    }

    fn observe(&mut self, stamp: Stamp, recv_ns: u64) {
        let publisher = stamp.publisher as usize;
        if self.plan.track_sequence && publisher < MAX_TRACKED {
            if self.seen.len() <= publisher {
                self.seen.resize(publisher + 1, 0);
            }
            let next = &mut self.seen[publisher];
            if stamp.seq < *next {
                self.run.counters.duplicates.fetch_add(1, Relaxed);
            } else {
                *next = stamp.seq + 1;
            }
        }
        if let Some(credit) = &self.run.credit {
            credit.observe(self.plan.index, publisher, stamp.seq);
        }
        let (from, to) = self.run.timeline.window_ns;
        if (from..to).contains(&stamp.sent_ns) && recv_ns >= stamp.sent_ns {
            let _ = self.latency.record((recv_ns - stamp.sent_ns).max(1));
        }
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.acks.is_empty() {
            let bytes = self.acks.split();
            self.conn.send(&bytes).await?;
            self.last_write = Instant::now();
        }
        Ok(())
    }
}
