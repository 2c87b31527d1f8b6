//! A publisher: one task per connection that sends as much as it may, as soon as it may.
//!
//! What it may send is the least of: the batch size, the free QoS 1/2 window (`--inflight`,
//! capped by the broker's receive maximum), what the pacing (`--rate`) has made due, and the
//! end-to-end credit. When nothing may be sent it waits for whichever of those frees first
//! (acks read from the socket, credit, the next due time, the end of the window).
//!
//! A batch is `batch` copies of the connection's [`PublishTemplate`], made once; each write only
//! patches the packet ids and stamps in place and writes the first `n` copies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_codec::{Packet, QoS};
use tokio::time::sleep_until;

use crate::client::{ack, Incoming, MqttConn, PublishTemplate};
use crate::engine::{procfs, stopped, Counters, Run};
use crate::error::ClientError;

/// What one publisher does.
pub struct PublisherPlan {
    /// Its number in the run (credit slot, stamp).
    pub index: usize,
    pub template: PublishTemplate,
    pub qos: QoS,
    /// Messages per second; 0 = unpaced.
    pub rate: f64,
    /// Most messages per write.
    pub batch: usize,
    /// Most unacknowledged QoS 1/2 messages.
    pub inflight: u16,
}

/// Packet ids in use by unacknowledged messages.
struct PacketIds {
    used: Vec<bool>,
    next: u16,
    count: usize,
}

impl PacketIds {
    fn new() -> PacketIds {
        PacketIds {
            used: vec![false; 65_536],
            next: 0,
            count: 0,
        }
    }

    /// A free id; the caller keeps `count` below 65,535.
    fn acquire(&mut self) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1);
            let id = self.next;
            if id != 0 && !self.used[usize::from(id)] {
                self.used[usize::from(id)] = true;
                self.count += 1;
                return id;
            }
        }
    }

    /// Frees `id`; false if it was not in use.
    fn release(&mut self, id: u16) -> bool {
        let slot = &mut self.used[usize::from(id)];
        let was = std::mem::replace(slot, false);
        if was {
            self.count -= 1;
        }
        was
    }
}

/// Pacing (`--rate`): message `k` (from 0) falls due at `go + k / rate`.
#[derive(Debug, Clone, Copy)]
struct Pacer {
    go: Instant,
    /// Messages per second; 0 = unpaced.
    rate: f64,
}

impl Pacer {
    /// How many messages are due by `now`; `None` when unpaced.
    fn due(&self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.go);
        (self.rate > 0.0).then(|| (elapsed.as_secs_f64() * self.rate) as u64 + 1)
    }

    /// When to wake up if pacing is what holds a publisher that has sent `sent` back at `now`
    /// (the instant its allowance was computed for); `None` when unpaced or when a message is
    /// due already (then something else holds it back). Never in the past, so float rounding
    /// cannot turn "not due yet" into "no wake-up at all".
    fn next_due(&self, sent: u64, now: Instant) -> Option<Instant> {
        if self.due(now)? > sent {
            return None;
        }
        let at = self.go + Duration::from_secs_f64(sent as f64 / self.rate);
        Some(at.max(now + Duration::from_micros(100)))
    }
}

struct Publisher {
    conn: MqttConn,
    plan: PublisherPlan,
    run: Arc<Run>,
    window: usize,
    ids: PacketIds,
    /// `batch` copies of the template.
    batch: Vec<u8>,
    /// Control packets to write (PUBREL, PINGREQ).
    control: BytesMut,
    sent: u64,
    last_write: Instant,
    pacer: Pacer,
}

/// Runs one publisher until the run stops, then disconnects.
pub async fn publish(conn: MqttConn, plan: PublisherPlan, run: Arc<Run>) {
    let window = usize::from(plan.inflight.min(conn.receive_maximum).max(1));
    let plan_rate = plan.rate;
    let mut one = BytesMut::new();
    plan.template.append(&mut one, 1, 0, 0);
    let batch_buf = one.repeat(plan.batch.max(1));
    let mut p = Publisher {
        conn,
        plan,
        run: run.clone(),
        window,
        ids: PacketIds::new(),
        batch: batch_buf,
        control: BytesMut::new(),
        sent: 0,
        last_write: Instant::now(),
        pacer: Pacer {
            go: run.timeline.go,
            rate: plan_rate,
        },
    };
    if let Err(e) = p.send_until_end().await {
        run.counters
            .error(format!("publisher {}: {e}", p.plan.index));
    }
    run.counters
        .publishers_done
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Stay connected while the subscribers drain.
    let mut stop = run.stop_signal();
    let _ = tokio::time::timeout_at(run.timeline.hard.into(), stopped(&mut stop)).await;
    p.conn.disconnect().await;
    run.counters
        .connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

impl Publisher {
    /// Sends until the window ends, then waits for the outstanding acknowledgements.
    async fn send_until_end(&mut self) -> Result<(), ClientError> {
        let t = self.run.timeline;
        let run = self.run.clone();
        sleep_until(t.go.into()).await;
        self.last_write = Instant::now();
        let ping_every = Duration::from_secs(u64::from(self.conn.keep_alive.max(2)) / 2);
        loop {
            let now = Instant::now();
            let sending = now < t.end;
            if !sending && self.ids.count == 0 {
                return Ok(());
            }
            if now >= t.hard {
                return Err(ClientError::Timeout("acknowledgements"));
            }
            // One reading of the credit decides both what to send and whether to wait for it
            // (read twice, progress in between could leave nothing to wake the publisher).
            let credit_left = run
                .credit
                .as_ref()
                .map(|c| c.available(self.plan.index, self.sent));
            let n = if sending {
                self.allowance(now, credit_left)
            } else {
                0
            };
            if n > 0 {
                self.write_batch(n).await?;
            }
            let credit_bound = sending && n == 0 && credit_left == Some(0);
            let next_due = self.pacer.next_due(self.sent, now);
            let credit = run.credit.as_ref();
            let (index, sent, want) = (self.plan.index, self.sent, self.plan.batch.max(1) as u64);
            tokio::select! {
                biased;
                r = self.conn.fill() => {
                    r?;
                    self.handle_incoming().await?;
                }
                // Sent something: go round again, but let other tasks (the subscriber, the
                // driver's clock) run first.
                _ = tokio::task::yield_now(), if n > 0 => {}
                _ = async { credit.expect("credit").wait(index, sent, want).await },
                    if credit_bound => {}
                _ = sleep_until(next_due.unwrap_or(t.end).into()), if sending && next_due.is_some() => {}
                _ = sleep_until(t.end.into()), if sending => {}
                _ = sleep_until((self.last_write + ping_every).into()) => self.ping().await?,
                _ = sleep_until(t.hard.into()) => {}
            }
        }
    }

    /// How many messages may be sent at `now` with `credit_left` end-to-end credit.
    fn allowance(&self, now: Instant, credit_left: Option<u64>) -> usize {
        let mut n = self.plan.batch.max(1) as u64;
        if self.plan.qos != QoS::AtMostOnce {
            n = n.min(self.window.saturating_sub(self.ids.count) as u64);
        }
        if let Some(due) = self.pacer.due(now) {
            n = n.min(due.saturating_sub(self.sent));
        }
        if let Some(c) = credit_left {
            n = n.min(c);
        }
        n as usize
    }

    /// Patches and writes `n` messages of the batch.
    async fn write_batch(&mut self, n: usize) -> Result<(), ClientError> {
        let len = self.plan.template.len();
        let sent_ns = procfs::mono_ns();
        for k in 0..n {
            let id = if self.plan.qos == QoS::AtMostOnce {
                0
            } else {
                self.ids.acquire()
            };
            let msg = &mut self.batch[k * len..(k + 1) * len];
            self.plan
                .template
                .patch(msg, id, self.sent + k as u64, sent_ns);
        }
        self.conn.send(&self.batch[..n * len]).await?;
        self.sent += n as u64;
        self.last_write = Instant::now();
        self.run
            .counters
            .sent
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), ClientError> {
        self.conn.encode(&Packet::PingReq, &mut self.control);
        self.flush_control().await
    }

    async fn flush_control(&mut self) -> Result<(), ClientError> {
        if !self.control.is_empty() {
            let bytes = self.control.split();
            self.conn.send(&bytes).await?;
            self.last_write = Instant::now();
        }
        Ok(())
    }

    /// Handles what the broker sent: acks free packet ids, PUBREC is answered with PUBREL.
    async fn handle_incoming(&mut self) -> Result<(), ClientError> {
        let mut acked = 0;
        let counters: &Counters = &self.run.counters;
        while let Some(packet) = self.conn.next_incoming()? {
            match packet {
                Incoming::PubAck(id, code) => {
                    if self.ids.release(id) {
                        acked += 1;
                    }
                    if !code.is_success() {
                        counters.error(format!("PUBACK {id}: {code}"));
                    }
                }
                Incoming::PubRec(id, code) if code.is_success() => {
                    self.conn
                        .encode(&ack(Packet::PubRel, id), &mut self.control);
                }
                Incoming::PubRec(id, code) => {
                    self.ids.release(id);
                    counters.error(format!("PUBREC {id}: {code}"));
                }
                Incoming::PubComp(id) => {
                    if self.ids.release(id) {
                        acked += 1;
                    }
                }
                Incoming::Disconnect(code) => return Err(ClientError::Disconnected(code)),
                Incoming::Publish { .. }
                | Incoming::PubRel(_)
                | Incoming::PingResp
                | Incoming::Other(_) => {}
            }
        }
        if acked > 0 {
            counters
                .acked
                .fetch_add(acked, std::sync::atomic::Ordering::Relaxed);
        }
        self.flush_control().await
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Instant, Pacer, PacketIds};

    /// Whatever the instant, a paced publisher either may send or knows when to wake up.
    #[test]
    fn pacer_always_sends_or_wakes() {
        let go = Instant::now();
        for rate in [1.0, 333.3, 5000.0, 123_456.7] {
            let pacer = Pacer { go, rate };
            for step in 0..20_000u64 {
                let now = go + Duration::from_nanos(step * 7_919);
                let due = pacer.due(now).unwrap();
                for sent in [due.saturating_sub(1), due, due + 1] {
                    let wake = pacer.next_due(sent, now);
                    assert_eq!(
                        wake.is_some(),
                        due <= sent,
                        "rate {rate} sent {sent} {now:?}"
                    );
                    assert!(wake.is_none_or(|w| w > now));
                }
            }
        }
        assert_eq!(Pacer { go, rate: 0.0 }.due(go), None);
        assert_eq!(Pacer { go, rate: 0.0 }.next_due(0, go), None);
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_use() {
        let mut ids = PacketIds::new();
        let a = ids.acquire();
        let b = ids.acquire();
        assert_eq!((a, b), (1, 2));
        assert!(ids.release(a));
        assert!(!ids.release(a));
        ids.next = u16::MAX - 1;
        assert_eq!(ids.acquire(), u16::MAX);
        assert_eq!(ids.acquire(), 1); // 0 is skipped; 1 was freed
        assert_eq!(ids.acquire(), 3); // 2 is still in use
        assert_eq!(ids.count, 4);
    }
}
