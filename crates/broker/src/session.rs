//! Sessions: the state that outlives a connection (subscriptions, queued and in-flight messages,
//! packet ids, a pending will), shared between the connection task that serves it and the
//! publishers that deliver into it. The lock is held only for queue operations, never across I/O.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use mqtt_codec::{QoS, ReasonCode, SubOptions, Will};
use parking_lot::Mutex;

use crate::config::{BrokerConfig, OverflowPolicy};
use crate::message::Delivery;
use crate::persistence::{self, BrokerStore, Op, QueueRow};
use crate::signal::Signal;

/// Tells one connection to close with a reason code (takeover, overflow policy). Lighter than a
/// channel: every connection has one.
#[derive(Default)]
pub struct Kick {
    reason: AtomicU8,
    signal: Signal,
}

impl Kick {
    /// Asks the connection to close with `reason` (the first reason wins).
    pub fn send(&self, reason: ReasonCode) {
        let code = if reason.0 == 0 {
            ReasonCode::UNSPECIFIED_ERROR.0
        } else {
            reason.0
        };
        let _ = self
            .reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.signal.notify();
    }

    /// Ready with the reason once the connection was asked to close.
    pub fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<ReasonCode> {
        loop {
            match self.reason.load(Ordering::Acquire) {
                0 => std::task::ready!(self.signal.poll(cx)),
                code => return std::task::Poll::Ready(ReasonCode(code)),
            }
        }
    }
}

/// Session expiry meaning "never".
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// A session, shared by its connection task, the router and publishers.
pub struct SessionHandle {
    pub id: u64,
    pub client_id: Arc<str>,
    pub namespace: Arc<str>,
    online: AtomicBool,
    pub state: Mutex<SessionState>,
    /// Wakes the connection task when something was queued.
    pub notify: Signal,
}

/// Where an outbound QoS 1/2 message stands: the packet it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Ack,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Rec,
    /// PUBREL sent, waiting for PUBCOMP.
    Comp,
}

/// An outbound message sent and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Inflight {
    pub pid: u16,
    pub delivery: Delivery,
    pub state: InflightState,
}

/// A subscription as the session remembers it (to list, replace and remove it).
#[derive(Debug, Clone, Copy)]
pub struct SubRecord {
    pub options: SubOptions,
    pub sub_id: Option<u32>,
}

/// What a publisher's enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// Not queued: QoS 0 for an offline session.
    Skipped,
    /// The queue was full and a message was dropped.
    Overflow,
}

/// The mutable part of a session.
pub struct SessionState {
    pub subscriptions: HashMap<String, SubRecord>,
    /// Messages not yet sent (beyond the in-flight window, or while offline).
    pub queue: VecDeque<Delivery>,
    pub queued_bytes: usize,
    /// Sent and unacknowledged, in sending order.
    pub inflight: VecDeque<Inflight>,
    next_pid: u16,
    /// QoS 2 packet ids received and PUBREC'd, awaiting PUBREL.
    pub incoming_qos2: HashSet<u16>,
    /// Session expiry interval in seconds.
    pub expiry: u32,
    /// Generation of the connection that owns the session now (0 = none ever).
    pub conn_gen: u64,
    /// Tells the owning connection to close with a reason code.
    pub kick: Option<Arc<Kick>>,
    /// A will waiting for its delay to pass.
    pub pending_will: Option<(Box<Will>, u64)>,
    /// Set when the session has ended (expired, discarded by clean start, taken over by a clean one).
    pub ended: bool,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
}

impl SessionHandle {
    /// A new, empty, offline session.
    pub fn new(id: u64, namespace: Arc<str>, client_id: Arc<str>, expiry: u32) -> SessionHandle {
        SessionHandle {
            id,
            client_id,
            namespace,
            online: AtomicBool::new(false),
            state: Mutex::new(SessionState {
                subscriptions: HashMap::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                inflight: VecDeque::new(),
                next_pid: 0,
                incoming_qos2: HashSet::new(),
                expiry,
                conn_gen: 0,
                kick: None,
                pending_will: None,
                ended: false,
                dropped: 0,
            }),
            notify: Signal::default(),
        }
    }

    /// Whether a connection (or link) currently serves the session.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Marks the session served or not.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// Queues a delivery, applying the bounds of `config`, stores it if the session is
    /// persistent, and wakes the connection. Returns the store sequence to wait for (0 = none).
    pub fn deliver(
        &self,
        mut d: Delivery,
        config: &BrokerConfig,
        store: Option<&BrokerStore>,
    ) -> (Enqueued, u64) {
        let online = self.is_online();
        let mut seq = 0;
        let wake;
        let result = {
            let mut st = self.state.lock();
            if st.ended {
                return (Enqueued::Skipped, 0);
            }
            let store = store.filter(|_| st.expiry > 0 && d.qos != QoS::AtMostOnce);
            let row = store.map(|s| {
                let id = s.next_id();
                d.row = Some(id);
                QueueRow {
                    id,
                    ns: self.namespace.clone(),
                    client_id: self.client_id.clone(),
                    msg_id: 0,
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids.clone(),
                    share: d.share.as_deref().cloned(),
                }
            });
            let msg = store.map(|_| d.msg.clone());
            let mut dropped = Vec::new();
            let was_empty = st.queue.is_empty();
            let (result, queued) = st.enqueue(d, config, online, &mut dropped);
            // The connection drains the whole queue whenever it runs, and a non-empty queue
            // means it already has a wake-up pending: only the first message needs to wake it.
            wake = queued && was_empty;
            if let (Some(store), Some(msg)) = (store, msg) {
                for id in dropped {
                    seq = store.submit(Op::QueueDelete { id });
                }
                if let (true, Some(mut row)) = (queued, row) {
                    row.msg_id = *msg.store_id.get_or_init(|| {
                        let id = store.next_id();
                        let blob = persistence::message_blob(&msg);
                        store.submit(Op::MsgInsert {
                            id,
                            blob,
                            expires_ms: persistence::expires_ms(&msg),
                        });
                        id
                    });
                    seq = store.submit(Op::QueueAdd(Box::new(row)));
                }
            }
            result
        };
        if wake {
            self.notify.notify();
        }
        (result, seq)
    }
}

impl SessionState {
    /// Queues `d` within the configured bounds. Rows of stored deliveries dropped on the way are
    /// pushed to `dropped`; the flag says whether `d` itself was queued.
    pub fn enqueue(
        &mut self,
        d: Delivery,
        config: &BrokerConfig,
        online: bool,
        dropped: &mut Vec<u64>,
    ) -> (Enqueued, bool) {
        if !online && d.qos == QoS::AtMostOnce && !config.queue_qos0_messages {
            return (Enqueued::Skipped, false);
        }
        let cost = d.msg.cost();
        let full = |st: &SessionState| {
            (config.max_queued_messages > 0 && st.queue.len() >= config.max_queued_messages)
                || (config.max_queued_bytes > 0 && st.queued_bytes + cost > config.max_queued_bytes)
        };
        if full(self) {
            self.dropped += 1;
            match config.overflow_policy {
                OverflowPolicy::DropOldest => {
                    while full(self) {
                        match self.queue.pop_front() {
                            Some(old) => {
                                self.queued_bytes -= old.msg.cost();
                                dropped.extend(old.row);
                            }
                            None => break,
                        }
                    }
                    if full(self) {
                        return (Enqueued::Overflow, false);
                    }
                }
                OverflowPolicy::Disconnect if online => {
                    if let Some(k) = &self.kick {
                        k.send(ReasonCode::QUOTA_EXCEEDED);
                    }
                    return (Enqueued::Overflow, false);
                }
                _ => return (Enqueued::Overflow, false),
            }
            self.queued_bytes += cost;
            self.queue.push_back(d);
            return (Enqueued::Overflow, true);
        }
        self.queued_bytes += cost;
        self.queue.push_back(d);
        (Enqueued::Queued, true)
    }

    /// Appends a delivery at the back of the queue, outside the bounds (restoring state).
    pub fn push_back(&mut self, d: Delivery) {
        self.queued_bytes += d.msg.cost();
        self.queue.push_back(d);
    }

    /// Takes the next queued delivery.
    pub fn pop(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.queued_bytes -= d.msg.cost();
        Some(d)
    }

    /// Puts a delivery back at the front (it could not be sent yet).
    pub fn push_front(&mut self, d: Delivery) {
        self.queued_bytes += d.msg.cost();
        self.queue.push_front(d);
    }

    /// Allocates a packet id not in flight.
    pub fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1);
            if self.next_pid == 0 {
                self.next_pid = 1;
            }
            let pid = self.next_pid;
            if !self.inflight.iter().any(|i| i.pid == pid) {
                return pid;
            }
        }
    }

    /// Finds an in-flight message by packet id.
    pub fn inflight_position(&self, pid: u16) -> Option<usize> {
        self.inflight.iter().position(|i| i.pid == pid)
    }
}
