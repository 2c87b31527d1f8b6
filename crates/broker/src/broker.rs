//! The broker's shared state and its operations: opening, taking over and ending sessions,
//! routing messages, subscriptions with retained messages, and wills. Every change to durable
//! state is also submitted to the store (when persistence is on); the returned sequence number
//! is what an acknowledgement must wait for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mqtt_codec::{topic, QoS, ReasonCode, SubOptions, Will};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::config::BrokerConfig;
use crate::hooks::Hooks;
use crate::limits::ConnectRate;
use crate::message::{Delivery, Message};
use crate::persistence::{self, BrokerStore, Op};
use crate::retained::RetainedMessages;
use crate::router::{Match, Router, SubEntry};
use crate::session::{Enqueued, Kick, SessionHandle, SubRecord, NEVER_EXPIRES};
use crate::stats::Stats;

type SessionKey = (Arc<str>, Arc<str>);

/// State shared by every connection of one broker.
pub struct Shared {
    pub config: BrokerConfig,
    pub hooks: Arc<dyn Hooks>,
    pub router: RwLock<Router>,
    pub sessions: Mutex<HashMap<SessionKey, Arc<SessionHandle>>>,
    pub retained: RwLock<RetainedMessages>,
    pub stats: Stats,
    pub connect_rate: ConnectRate,
    pub started: Instant,
    pub store: Option<Arc<BrokerStore>>,
    next_id: AtomicU64,
    /// Set by [`Shared::shutdown_connections`]: connections close as soon as they open.
    shutting_down: AtomicBool,
}

/// A session opened for a new connection.
pub struct Opened {
    pub session: Arc<SessionHandle>,
    pub present: bool,
    pub gen: u64,
    /// Store sequence the CONNACK must wait for (0 = none).
    pub seq: u64,
}

/// What routing one message did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Routed {
    /// Sessions it was delivered to.
    pub delivered: usize,
    /// Store sequence covering what was stored for it (0 = nothing).
    pub seq: u64,
}

impl Shared {
    /// Shared state with no sessions.
    pub fn new(
        config: BrokerConfig,
        hooks: Arc<dyn Hooks>,
        store: Option<Arc<BrokerStore>>,
    ) -> Shared {
        let connect_rate = ConnectRate::new(config.max_connection_rate);
        Shared {
            config,
            hooks,
            router: RwLock::default(),
            sessions: Mutex::default(),
            retained: RwLock::default(),
            stats: Stats::default(),
            connect_rate,
            started: Instant::now(),
            store,
            next_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Closes every connection, without their wills, with "server shutting down" (v5); any
    /// connection that completes its handshake from now on is closed the same way.
    pub fn shutdown_connections(&self) {
        // Set before the sessions are read: a connection registering its kick concurrently
        // either is in the list or sees the flag (`is_shutting_down`) after registering.
        self.shutting_down.store(true, Ordering::SeqCst);
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        for s in sessions {
            let kick = s.state.lock().kick.clone();
            if let Some(k) = kick {
                k.send(ReasonCode::SERVER_SHUTTING_DOWN);
            }
        }
    }

    /// Whether [`Shared::shutdown_connections`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A fresh id for sessions and connection generations.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Submits a store operation if persistence is on; returns its sequence (0 if off).
    pub fn persist(&self, op: impl FnOnce() -> Op) -> u64 {
        self.store.as_ref().map_or(0, |s| s.submit(op()))
    }

    /// Opens (or resumes) the session of `client_id` for a connection, taking it over from any
    /// connection that holds it.
    pub fn open_session(
        self: &Arc<Self>,
        namespace: &Arc<str>,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry: u32,
        kick: Arc<Kick>,
    ) -> Opened {
        let gen = self.next_id();
        let key = (namespace.clone(), client_id.clone());
        let mut sessions = self.sessions.lock();
        if let Some(old) = sessions.get(&key).cloned() {
            let mut st = old.state.lock();
            if let Some(k) = st.kick.take() {
                k.send(ReasonCode::SESSION_TAKEN_OVER);
            }
            if !clean_start && !st.ended {
                let was_persistent = st.expiry > 0;
                st.conn_gen = gen;
                st.kick = Some(kick);
                st.expiry = expiry;
                // A new connection to the session cancels a delayed will.
                st.pending_will = None;
                let subs: Vec<(String, SubRecord)> = if !was_persistent && expiry > 0 {
                    st.subscriptions
                        .iter()
                        .map(|(f, r)| (f.clone(), *r))
                        .collect()
                } else {
                    Vec::new()
                };
                drop(st);
                old.set_online(true);
                let mut seq = match expiry {
                    0 if was_persistent => self.persist(|| Op::SessionDelete {
                        ns: key.0.clone(),
                        client_id: key.1.clone(),
                    }),
                    0 => 0,
                    _ => self.persist(|| Op::SessionUpsert {
                        ns: key.0.clone(),
                        client_id: key.1.clone(),
                        expiry,
                    }),
                };
                for (filter, r) in subs {
                    seq = self.persist_subscription(&old, &filter, r);
                }
                return Opened {
                    session: old,
                    present: true,
                    gen,
                    seq,
                };
            }
            st.conn_gen = gen;
            drop(st);
            sessions.remove(&key);
            drop(sessions);
            self.end_session(&old);
            sessions = self.sessions.lock();
        }
        let session = Arc::new(SessionHandle::new(
            self.next_id(),
            namespace.clone(),
            client_id.clone(),
            expiry,
        ));
        {
            let mut st = session.state.lock();
            st.conn_gen = gen;
            st.kick = Some(kick);
        }
        session.set_online(true);
        sessions.insert(key.clone(), session.clone());
        drop(sessions);
        let seq = if expiry > 0 {
            self.persist(|| Op::SessionUpsert {
                ns: key.0,
                client_id: key.1,
                expiry,
            })
        } else {
            0
        };
        Opened {
            session,
            present: false,
            gen,
            seq,
        }
    }

    /// Ends a session: its subscriptions go, a pending will is published now.
    pub fn end_session(self: &Arc<Self>, session: &Arc<SessionHandle>) {
        let (subs, will, leftovers, persistent) = {
            let mut st = session.state.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            let subs: Vec<String> = st.subscriptions.drain().map(|(f, _)| f).collect();
            let mut leftovers: Vec<Delivery> = st.inflight.drain(..).map(|i| i.delivery).collect();
            leftovers.extend(st.queue.drain(..));
            st.queued_bytes = 0;
            (subs, st.pending_will.take(), leftovers, st.expiry > 0)
        };
        session.set_online(false);
        if persistent {
            self.persist(|| Op::SessionDelete {
                ns: session.namespace.clone(),
                client_id: session.client_id.clone(),
            });
        }
        {
            let mut router = self.router.write();
            for f in &subs {
                let (group, inner) = split_shared(f);
                router.unsubscribe(&session.namespace, inner, group, session.id);
            }
        }
        self.redistribute_shared(session, leftovers, false);
        if let Some((will, _)) = will {
            self.publish_will(&session.namespace, &will, session.id);
        }
        tracing::debug!(client_id = %session.client_id, "session ended");
    }

    /// Hands messages that came through shared subscriptions to another member of their group.
    /// `delete_rows`: whether their stored rows must be removed (not when the whole session's
    /// rows already were).
    pub fn redistribute_shared(
        &self,
        from: &SessionHandle,
        deliveries: Vec<Delivery>,
        delete_rows: bool,
    ) {
        for d in deliveries {
            if let (true, Some(id)) = (delete_rows, d.row) {
                self.persist(|| Op::QueueDelete { id });
            }
            let Some(key) = d.share.clone() else { continue };
            let m = self
                .router
                .read()
                .shared_member(&from.namespace, &key, from.id);
            if let Some(m) = m {
                let qos = d.msg.qos.min(m.options.qos);
                let delivery = Delivery {
                    qos,
                    sub_ids: m.sub_id.into_iter().collect(),
                    row: None,
                    ..d
                };
                self.enqueue(&m.session, delivery);
            }
        }
    }

    /// Called when a connection ends, by the connection that owned generation `gen`.
    /// `will` is the will to publish (none after a normal DISCONNECT).
    pub fn connection_closed(
        self: &Arc<Self>,
        session: &Arc<SessionHandle>,
        gen: u64,
        will: Option<Will>,
    ) {
        let (current, expiry, ended) = {
            let st = session.state.lock();
            (st.conn_gen == gen, st.expiry, st.ended)
        };
        if current {
            let shared_unacked = {
                let mut st = session.state.lock();
                st.kick = None;
                take_shared_unacked(&mut st)
            };
            session.set_online(false);
            self.redistribute_shared(session, shared_unacked, true);
            if expiry > 0 {
                let (ns, client_id) = (session.namespace.clone(), session.client_id.clone());
                self.persist(|| Op::SessionDisconnected {
                    ns,
                    client_id,
                    at_ms: persistence::now_ms(),
                });
            }
        }
        if let Some(will) = will {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            if delay == 0 || ended || (current && expiry == 0) {
                self.publish_will(&session.namespace, &will, session.id);
            } else if current {
                session.state.lock().pending_will = Some((Box::new(will), gen));
                let this = self.clone();
                let s = session.clone();
                let wait = delay.min(expiry);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(wait))).await;
                    let will = {
                        let mut st = s.state.lock();
                        match &st.pending_will {
                            Some((_, g)) if *g == gen && st.conn_gen == gen => {
                                st.pending_will.take()
                            }
                            _ => None,
                        }
                    };
                    if let Some((will, _)) = will {
                        this.publish_will(&s.namespace, &will, s.id);
                    }
                });
            }
            // Otherwise a new connection resumed the session: no will (spec 3.1.3.2.2).
        }
        if current {
            self.schedule_expiry(session, gen, expiry);
        }
    }

    /// Ends an offline session after `secs` unless generation `gen` no longer owns it.
    pub fn schedule_expiry(self: &Arc<Self>, session: &Arc<SessionHandle>, gen: u64, secs: u32) {
        match secs {
            0 => self.remove_session(session, gen),
            NEVER_EXPIRES => {}
            secs => {
                let this = self.clone();
                let s = session.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
                    this.remove_session(&s, gen);
                });
            }
        }
    }

    /// Removes and ends the session if generation `gen` still owns it and it is offline.
    fn remove_session(self: &Arc<Self>, session: &Arc<SessionHandle>, gen: u64) {
        {
            let mut sessions = self.sessions.lock();
            let st = session.state.lock();
            if st.conn_gen != gen || session.is_online() {
                return;
            }
            drop(st);
            let key = (session.namespace.clone(), session.client_id.clone());
            if sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, session)) {
                sessions.remove(&key);
            }
        }
        self.end_session(session);
    }

    /// Publishes a will message on behalf of session `origin`.
    pub fn publish_will(&self, namespace: &Arc<str>, will: &Will, origin: u64) {
        let mut properties = will.properties.clone();
        properties.will_delay_interval = None;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        let retain = will.retain && self.config.retain_available;
        let mut msg = Message::new(
            namespace.clone(),
            will.topic.clone(),
            will.payload.clone(),
            will.qos,
            retain,
        );
        msg.properties = properties;
        msg.expires_at = expires_at;
        msg.origin = origin;
        tracing::debug!(topic = %msg.topic, "publishing will");
        self.route(Arc::new(msg));
    }

    /// Stores (if retained) and delivers a message to every matching subscription.
    pub fn route(&self, msg: Arc<Message>) -> Routed {
        let mut routed = Routed::default();
        if msg.retain {
            self.retained.write().set(msg.clone());
            let (ns, topic) = (msg.namespace.clone(), msg.topic.clone());
            // `$SYS` is rebuilt every few seconds; storing it would only cost writes.
            routed.seq = if topic.starts_with("$SYS/") {
                0
            } else if msg.payload.is_empty() {
                self.persist(|| Op::RetainClear { ns, topic })
            } else {
                self.persist(|| Op::RetainSet {
                    ns,
                    topic,
                    blob: persistence::message_blob(&msg),
                    expires_ms: persistence::expires_ms(&msg),
                })
            };
        }
        let mut matches: Vec<Match> = Vec::new();
        let nodes = self
            .router
            .read()
            .matches(&msg.namespace, &msg.topic, &mut matches);
        if matches.is_empty() {
            return routed;
        }
        // One delivery per session: overlapping subscriptions merge into the highest QoS and
        // all subscription identifiers (spec 3.3.4). Shared subscriptions deliver separately.
        // Only matches from several filters can name a session twice.
        if nodes > 1 {
            matches.sort_by_key(|m| (m.share.is_some(), m.session.id));
        }
        let mut i = 0;
        while i < matches.len() {
            let m = &matches[i];
            let mut j = i + 1;
            let mut qos = m.options.qos;
            let mut rap = m.options.retain_as_published;
            let mut no_local = m.options.no_local;
            let mut sub_ids: Vec<u32> = m.sub_id.into_iter().collect();
            if m.share.is_none() {
                while j < matches.len()
                    && matches[j].share.is_none()
                    && matches[j].session.id == m.session.id
                {
                    let n = &matches[j];
                    qos = qos.max(n.options.qos);
                    rap |= n.options.retain_as_published;
                    no_local &= n.options.no_local;
                    sub_ids.extend(n.sub_id);
                    j += 1;
                }
            }
            i = j;
            if no_local && m.share.is_none() && m.session.id == msg.origin {
                continue;
            }
            let delivery = Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(qos),
                retain: rap && msg.retain,
                sub_ids,
                share: m.share.clone(),
                row: None,
            };
            routed.seq = routed.seq.max(self.enqueue(&m.session, delivery));
            routed.delivered += 1;
        }
        routed
    }

    /// Asks a connected client to close with `reason` (v5 DISCONNECT with that code); returns
    /// whether it was connected.
    pub fn disconnect_client(
        &self,
        namespace: &Arc<str>,
        client_id: &str,
        reason: ReasonCode,
    ) -> bool {
        let key: SessionKey = (namespace.clone(), Arc::from(client_id));
        let Some(session) = self.sessions.lock().get(&key).cloned() else {
            return false;
        };
        let kick = session.state.lock().kick.clone();
        match kick {
            Some(k) => {
                k.send(reason);
                true
            }
            None => false,
        }
    }

    /// Delivers a message to one client's session only, if one of its (non-shared) subscriptions
    /// matches the topic: how the platform answers one device on a topic every device of a
    /// tenant subscribes to (`v1/devices/me/...`). Returns whether it was queued.
    pub fn deliver_to(&self, client_id: &str, msg: Arc<Message>) -> bool {
        let topic = msg.topic.clone();
        self.deliver_to_with(client_id, msg, |filter| topic::matches(filter, &topic))
    }

    /// [`Shared::deliver_to`] where `wants(filter)` decides which of the session's filters
    /// take the message (ThingsBoard's device SDKs subscribe to `v2/fw/response/+` and expect
    /// `v2/fw/response/{id}/chunk/{n}`).
    pub fn deliver_to_with(
        &self,
        client_id: &str,
        msg: Arc<Message>,
        wants: impl Fn(&str) -> bool,
    ) -> bool {
        let key: SessionKey = (msg.namespace.clone(), Arc::from(client_id));
        let Some(session) = self.sessions.lock().get(&key).cloned() else {
            return false;
        };
        let best = {
            let st = session.state.lock();
            if st.ended {
                return false;
            }
            let mut best: Option<(QoS, Vec<u32>)> = None;
            for (filter, rec) in &st.subscriptions {
                if split_shared(filter).0.is_none() && wants(filter) {
                    let (qos, ids) = best.get_or_insert((QoS::AtMostOnce, Vec::new()));
                    *qos = (*qos).max(rec.options.qos);
                    ids.extend(rec.sub_id);
                }
            }
            best
        };
        let Some((qos, sub_ids)) = best else {
            return false;
        };
        let delivery = Delivery {
            qos: msg.qos.min(qos),
            msg,
            retain: false,
            sub_ids,
            share: None,
            row: None,
        };
        self.enqueue(&session, delivery);
        true
    }

    /// Queues one delivery into a session; returns the store sequence to wait for (0 = none).
    fn enqueue(&self, session: &SessionHandle, delivery: Delivery) -> u64 {
        let (result, seq) = session.deliver(delivery, &self.config, self.store.as_deref());
        if result == Enqueued::Overflow {
            self.stats.queue_overflow(&session.client_id);
        }
        seq
    }

    /// Adds a subscription and sends the retained messages its retain handling asks for.
    /// Returns the store sequence to wait for before SUBACK (0 = none).
    pub fn subscribe(
        &self,
        session: &Arc<SessionHandle>,
        filter: &str,
        options: SubOptions,
        sub_id: Option<u32>,
    ) -> u64 {
        let (group, inner) = split_shared(filter);
        let entry = SubEntry {
            session: session.clone(),
            options,
            sub_id,
        };
        let existed = self
            .router
            .write()
            .subscribe(&session.namespace, inner, group, entry);
        let record = SubRecord { options, sub_id };
        session
            .state
            .lock()
            .subscriptions
            .insert(filter.to_string(), record);
        let seq = self.persist_subscription(session, filter, record);
        let send_retained = group.is_none()
            && match options.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
        if send_retained {
            let now = Instant::now();
            let msgs = self
                .retained
                .write()
                .matching(&session.namespace, inner, now);
            for msg in msgs {
                let delivery = Delivery {
                    qos: msg.qos.min(options.qos),
                    msg,
                    retain: true,
                    sub_ids: sub_id.into_iter().collect(),
                    share: None,
                    row: None,
                };
                self.enqueue(session, delivery);
            }
        }
        seq
    }

    fn persist_subscription(&self, session: &SessionHandle, filter: &str, r: SubRecord) -> u64 {
        if session.state.lock().expiry == 0 {
            return 0;
        }
        self.persist(|| Op::SubAdd {
            ns: session.namespace.clone(),
            client_id: session.client_id.clone(),
            filter: filter.to_string(),
            options: persistence::options_byte(r.options),
            sub_id: r.sub_id,
        })
    }

    /// Removes a subscription; returns whether it existed and the store sequence to wait for.
    pub fn unsubscribe(&self, session: &SessionHandle, filter: &str) -> (bool, u64) {
        let (group, inner) = split_shared(filter);
        let removed = self
            .router
            .write()
            .unsubscribe(&session.namespace, inner, group, session.id);
        let persistent = {
            let mut st = session.state.lock();
            st.subscriptions.remove(filter);
            st.expiry > 0
        };
        let seq = if removed && persistent {
            self.persist(|| Op::SubRemove {
                ns: session.namespace.clone(),
                client_id: session.client_id.clone(),
                filter: filter.to_string(),
            })
        } else {
            0
        };
        (removed, seq)
    }
}

/// Splits `$share/g/f` into `(Some(g), f)`; any other filter into `(None, filter)`.
pub fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match topic::parse_shared(filter) {
        Some(Ok((g, f))) => (Some(g), f),
        _ => (None, filter),
    }
}

/// Removes the unacknowledged shared-subscription messages of a session that lost its
/// connection, so another member can have them (spec 4.8.2).
fn take_shared_unacked(st: &mut crate::session::SessionState) -> Vec<Delivery> {
    use crate::session::InflightState;
    let mut out = Vec::new();
    st.inflight.retain(|i| {
        if i.delivery.share.is_some()
            && i.state != InflightState::Comp
            && i.delivery.qos != QoS::AtMostOnce
        {
            out.push(i.delivery.clone());
            false
        } else {
            true
        }
    });
    let mut kept = std::collections::VecDeque::new();
    for d in st.queue.drain(..) {
        if d.share.is_some() {
            out.push(d);
        } else {
            kept.push_back(d);
        }
    }
    st.queued_bytes = kept.iter().map(|d| d.msg.cost()).sum();
    st.queue = kept;
    out
}
