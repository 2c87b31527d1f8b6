//! Durable broker state in SQLite (WAL): retained messages, persistent sessions with their
//! subscriptions, queued and in-flight QoS 1/2 messages, and QoS 2 packet ids received.
//!
//! Writes go through one writer thread that applies everything waiting in a single transaction
//! (group commit) and then publishes the sequence number it committed. A connection holds back
//! PUBACK/PUBREC/SUBACK until the write it depends on is committed, so what a client was told is
//! stored survives `kill -9` (WAL with `synchronous=NORMAL` is durable against process crashes;
//! `sync = "full"` also fsyncs every commit against power loss).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use mqtt_codec::{decode_packet, encode_publish, Packet, Protocol, Publish, QoS, SubOptions};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::message::Message;

/// A persistence failure at open or load.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt stored message {0}")]
    Corrupt(i64),
}

/// Where a stored in-flight message stands (`queue.state`; 0 = queued, not sent yet).
pub const STATE_ACK: u8 = 1;
pub const STATE_REC: u8 = 2;
pub const STATE_COMP: u8 = 3;

/// One change to durable state.
pub enum Op {
    RetainSet {
        ns: Arc<str>,
        topic: Arc<str>,
        blob: Bytes,
        expires_ms: Option<i64>,
    },
    RetainClear {
        ns: Arc<str>,
        topic: Arc<str>,
    },
    SessionUpsert {
        ns: Arc<str>,
        client_id: Arc<str>,
        expiry: u32,
    },
    SessionDisconnected {
        ns: Arc<str>,
        client_id: Arc<str>,
        at_ms: i64,
    },
    SessionDelete {
        ns: Arc<str>,
        client_id: Arc<str>,
    },
    SubAdd {
        ns: Arc<str>,
        client_id: Arc<str>,
        filter: String,
        options: u8,
        sub_id: Option<u32>,
    },
    SubRemove {
        ns: Arc<str>,
        client_id: Arc<str>,
        filter: String,
    },
    MsgInsert {
        id: u64,
        blob: Bytes,
        expires_ms: Option<i64>,
    },
    QueueAdd(Box<QueueRow>),
    QueueState {
        id: u64,
        pid: u16,
        state: u8,
    },
    QueueDelete {
        id: u64,
    },
    Qos2Add {
        ns: Arc<str>,
        client_id: Arc<str>,
        pid: u16,
    },
    Qos2Remove {
        ns: Arc<str>,
        client_id: Arc<str>,
        pid: u16,
    },
}

/// A message queued for a persistent session.
pub struct QueueRow {
    pub id: u64,
    pub ns: Arc<str>,
    pub client_id: Arc<str>,
    pub msg_id: u64,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    pub share: Option<(Arc<str>, Arc<str>)>,
}

/// A session as loaded at start-up.
pub struct LoadedSession {
    pub ns: Arc<str>,
    pub client_id: Arc<str>,
    pub expiry: u32,
    /// Seconds since the session's client disconnected (0 if unknown).
    pub offline_for: u64,
    pub subscriptions: Vec<(String, SubOptions, Option<u32>)>,
    pub queue: Vec<LoadedDelivery>,
    pub qos2_in: Vec<u16>,
}

/// A queued or in-flight message as loaded at start-up.
pub struct LoadedDelivery {
    pub row: u64,
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    pub share: Option<(Arc<str>, Arc<str>)>,
    pub pid: u16,
    pub state: u8,
}

/// Everything loaded at start-up.
#[derive(Default)]
pub struct Loaded {
    pub retained: Vec<Arc<Message>>,
    pub sessions: Vec<LoadedSession>,
}

/// The sending side: the last sequence number handed out and the channel to the writer. One
/// lock covers both so that sequence order is channel order.
struct Submitter {
    seq: u64,
    sender: Option<mpsc::Sender<(u64, Op)>>,
}

/// The durable store and its writer thread.
pub struct BrokerStore {
    tx: Mutex<Submitter>,
    committed: watch::Receiver<u64>,
    next_row: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl BrokerStore {
    /// Opens (creating if needed) the database at `path` and loads its contents.
    pub fn open(path: &Path, sync_full: bool) -> Result<(Arc<BrokerStore>, Loaded), StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            if sync_full { "FULL" } else { "NORMAL" },
        )?;
        conn.execute_batch(SCHEMA)?;
        // Messages no queue row refers to any more (acknowledged before a crash).
        conn.execute(
            "DELETE FROM messages WHERE id NOT IN (SELECT msg_id FROM queue)",
            [],
        )?;
        let loaded = load(&conn)?;
        let max_row: i64 = conn.query_row(
            "SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM queue UNION ALL SELECT MAX(id) FROM messages)",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?
        .unwrap_or(0);
        let (tx, rx) = mpsc::channel::<(u64, Op)>();
        let (done_tx, done_rx) = watch::channel(0u64);
        let writer = std::thread::Builder::new()
            .name("mqtt-store".into())
            .spawn(move || writer_loop(conn, rx, done_tx))
            .expect("spawning the store writer");
        let store = BrokerStore {
            tx: Mutex::new(Submitter {
                seq: 0,
                sender: Some(tx),
            }),
            committed: done_rx,
            next_row: AtomicU64::new(max_row as u64 + 1),
            writer: Mutex::new(Some(writer)),
        };
        Ok((Arc::new(store), loaded))
    }

    /// Queues a change; returns its sequence number for [`BrokerStore::wait`].
    pub fn submit(&self, op: Op) -> u64 {
        let mut tx = self.tx.lock();
        tx.seq += 1;
        let seq = tx.seq;
        if let Some(sender) = &tx.sender {
            let _ = sender.send((seq, op));
        }
        seq
    }

    /// A fresh id for a message or queue row.
    pub fn next_id(&self) -> u64 {
        self.next_row.fetch_add(1, Ordering::Relaxed)
    }

    /// A receiver of the highest committed sequence number.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Waits until `seq` is committed.
    pub async fn wait(&self, seq: u64) {
        let mut rx = self.committed.clone();
        let _ = rx.wait_for(|c| *c >= seq).await;
    }

    /// Commits what is pending and stops the writer.
    pub fn close(&self) {
        self.tx.lock().sender = None;
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A message's expiry as Unix milliseconds.
pub fn expires_ms(msg: &Message) -> Option<i64> {
    let now = Instant::now();
    msg.expires_at
        .map(|t| now_ms() + t.saturating_duration_since(now).as_millis() as i64)
}

/// A message encoded for storage: a v5 PUBLISH carrying topic, flags, payload and properties.
pub fn message_blob(msg: &Message) -> Bytes {
    let p = Publish {
        dup: false,
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic.clone(),
        packet_id: if msg.qos == QoS::AtMostOnce { 0 } else { 1 },
        payload: msg.payload.clone(),
        properties: msg.properties.clone(),
    };
    let mut out = BytesMut::new();
    encode_publish(&p, Protocol::V5, &mut out);
    out.freeze()
}

fn message_from_blob(
    ns: Arc<str>,
    blob: Vec<u8>,
    expires: Option<i64>,
    id: i64,
) -> Result<Message, StoreError> {
    let bytes = Bytes::from(blob);
    let frame = mqtt_codec::read_frame(&bytes, usize::MAX)
        .ok()
        .flatten()
        .ok_or(StoreError::Corrupt(id))?;
    let body = bytes.slice(frame.header_len..frame.len());
    let Ok(Packet::Publish(p)) = decode_packet(frame.header, body, Protocol::V5) else {
        return Err(StoreError::Corrupt(id));
    };
    let now = now_ms();
    let expires_at = expires
        .map(|e| Instant::now() + Duration::from_millis(e.saturating_sub(now).max(0) as u64));
    let mut msg = Message::new(ns, p.topic, p.payload, p.qos, p.retain);
    msg.properties = p.properties;
    msg.expires_at = expires_at;
    if id > 0 {
        let _ = msg.store_id.set(id as u64);
    }
    Ok(msg)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS retained (ns TEXT NOT NULL, topic TEXT NOT NULL, blob BLOB NOT NULL,
    expires_ms INTEGER, PRIMARY KEY (ns, topic));
CREATE TABLE IF NOT EXISTS sessions (ns TEXT NOT NULL, client_id TEXT NOT NULL, expiry INTEGER NOT NULL,
    disconnected_ms INTEGER, PRIMARY KEY (ns, client_id));
CREATE TABLE IF NOT EXISTS subscriptions (ns TEXT NOT NULL, client_id TEXT NOT NULL, filter TEXT NOT NULL,
    options INTEGER NOT NULL, sub_id INTEGER, PRIMARY KEY (ns, client_id, filter));
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, blob BLOB NOT NULL, expires_ms INTEGER);
CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, ns TEXT NOT NULL, client_id TEXT NOT NULL,
    msg_id INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, sub_ids TEXT NOT NULL,
    share_group TEXT, share_filter TEXT, pid INTEGER NOT NULL DEFAULT 0, state INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS queue_session ON queue (ns, client_id, id);
CREATE INDEX IF NOT EXISTS queue_msg ON queue (msg_id);
CREATE TABLE IF NOT EXISTS qos2_in (ns TEXT NOT NULL, client_id TEXT NOT NULL, pid INTEGER NOT NULL,
    PRIMARY KEY (ns, client_id, pid));
";

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<(u64, Op)>, done: watch::Sender<u64>) {
    let mut batch: Vec<(u64, Op)> = Vec::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < 50_000 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |(s, _)| *s);
        let mut attempt = 0u32;
        loop {
            match apply(&mut conn, &batch) {
                Ok(()) => break,
                Err(e) => {
                    // Acknowledgements stay held back: better a client that retransmits than a
                    // message acknowledged and lost.
                    attempt += 1;
                    tracing::error!(error = %e, attempt, ops = batch.len(), "broker store commit failed, retrying");
                    metrics::counter!("mqtt_store_errors_total").increment(1);
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt.min(50))));
                }
            }
        }
        metrics::counter!("mqtt_store_commits_total").increment(1);
        metrics::counter!("mqtt_store_ops_total").increment(batch.len() as u64);
        batch.clear();
        done.send_replace(last);
    }
}

fn apply(conn: &mut Connection, batch: &[(u64, Op)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (_, op) in batch {
        match op {
            Op::RetainSet {
                ns,
                topic,
                blob,
                expires_ms,
            } => {
                tx.prepare_cached("INSERT OR REPLACE INTO retained (ns, topic, blob, expires_ms) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![&**ns, &**topic, &blob[..], expires_ms])?;
            }
            Op::RetainClear { ns, topic } => {
                tx.prepare_cached("DELETE FROM retained WHERE ns = ?1 AND topic = ?2")?
                    .execute(params![&**ns, &**topic])?;
            }
            Op::SessionUpsert {
                ns,
                client_id,
                expiry,
            } => {
                tx.prepare_cached(
                    "INSERT INTO sessions (ns, client_id, expiry, disconnected_ms) VALUES (?1, ?2, ?3, NULL)
                     ON CONFLICT (ns, client_id) DO UPDATE SET expiry = ?3, disconnected_ms = NULL",
                )?
                .execute(params![&**ns, &**client_id, expiry])?;
            }
            Op::SessionDisconnected {
                ns,
                client_id,
                at_ms,
            } => {
                tx.prepare_cached(
                    "UPDATE sessions SET disconnected_ms = ?3 WHERE ns = ?1 AND client_id = ?2",
                )?
                .execute(params![&**ns, &**client_id, at_ms])?;
            }
            Op::SessionDelete { ns, client_id } => {
                for sql in [
                    "DELETE FROM sessions WHERE ns = ?1 AND client_id = ?2",
                    "DELETE FROM subscriptions WHERE ns = ?1 AND client_id = ?2",
                    "DELETE FROM queue WHERE ns = ?1 AND client_id = ?2",
                    "DELETE FROM qos2_in WHERE ns = ?1 AND client_id = ?2",
                ] {
                    tx.prepare_cached(sql)?
                        .execute(params![&**ns, &**client_id])?;
                }
                tx.prepare_cached(
                    "DELETE FROM messages WHERE id NOT IN (SELECT msg_id FROM queue)",
                )?
                .execute([])?;
            }
            Op::SubAdd {
                ns,
                client_id,
                filter,
                options,
                sub_id,
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO subscriptions (ns, client_id, filter, options, sub_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![&**ns, &**client_id, filter, options, sub_id])?;
            }
            Op::SubRemove {
                ns,
                client_id,
                filter,
            } => {
                tx.prepare_cached(
                    "DELETE FROM subscriptions WHERE ns = ?1 AND client_id = ?2 AND filter = ?3",
                )?
                .execute(params![&**ns, &**client_id, filter])?;
            }
            Op::MsgInsert {
                id,
                blob,
                expires_ms,
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO messages (id, blob, expires_ms) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![*id as i64, &blob[..], expires_ms])?;
            }
            Op::QueueAdd(row) => {
                let sub_ids = row
                    .sub_ids
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                let (g, f) = match &row.share {
                    Some((g, f)) => (Some(&**g), Some(&**f)),
                    None => (None, None),
                };
                tx.prepare_cached(
                    "INSERT INTO queue (id, ns, client_id, msg_id, qos, retain, sub_ids, share_group, share_filter)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    row.id as i64,
                    &*row.ns,
                    &*row.client_id,
                    row.msg_id as i64,
                    row.qos as u8,
                    row.retain,
                    sub_ids,
                    g,
                    f
                ])?;
            }
            Op::QueueState { id, pid, state } => {
                tx.prepare_cached("UPDATE queue SET pid = ?2, state = ?3 WHERE id = ?1")?
                    .execute(params![*id as i64, pid, state])?;
            }
            Op::QueueDelete { id } => {
                let msg_id: Option<i64> = tx
                    .prepare_cached("DELETE FROM queue WHERE id = ?1 RETURNING msg_id")?
                    .query_row(params![*id as i64], |r| r.get(0))
                    .optional()?;
                if let Some(m) = msg_id {
                    tx.prepare_cached("DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM queue WHERE msg_id = ?1)")?
                        .execute(params![m])?;
                }
            }
            Op::Qos2Add { ns, client_id, pid } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO qos2_in (ns, client_id, pid) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![&**ns, &**client_id, pid])?;
            }
            Op::Qos2Remove { ns, client_id, pid } => {
                tx.prepare_cached(
                    "DELETE FROM qos2_in WHERE ns = ?1 AND client_id = ?2 AND pid = ?3",
                )?
                .execute(params![&**ns, &**client_id, pid])?;
            }
        }
    }
    tx.commit()
}

fn load(conn: &Connection) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
    let now = now_ms();
    let mut spaces: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern = |s: String| {
        spaces
            .entry(s.clone())
            .or_insert_with(|| Arc::from(s))
            .clone()
    };

    let mut stmt = conn.prepare("SELECT ns, topic, blob, expires_ms FROM retained")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    for row in rows {
        let (ns, _topic, blob, expires) = row?;
        if expires.is_some_and(|e| e <= now) {
            continue;
        }
        loaded
            .retained
            .push(Arc::new(message_from_blob(intern(ns), blob, expires, 0)?));
    }

    let mut messages: HashMap<i64, Arc<Message>> = HashMap::new();
    let mut stmt = conn.prepare("SELECT id, blob, expires_ms FROM messages")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    for row in rows {
        let (id, blob, expires) = row?;
        // The namespace is set per queue row below (a message never crosses namespaces).
        messages.insert(
            id,
            Arc::new(message_from_blob(Arc::from(""), blob, expires, id)?),
        );
    }

    let mut stmt = conn.prepare("SELECT ns, client_id, expiry, disconnected_ms FROM sessions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for row in rows {
        let (ns, client_id, expiry, disconnected) = row?;
        // A session whose client was connected when the broker died counts as offline from now.
        let offline_for = disconnected.map_or(0, |d| ((now - d).max(0) / 1000) as u64);
        index.insert((ns.clone(), client_id.clone()), loaded.sessions.len());
        loaded.sessions.push(LoadedSession {
            ns: intern(ns),
            client_id: Arc::from(client_id),
            expiry,
            offline_for,
            subscriptions: Vec::new(),
            queue: Vec::new(),
            qos2_in: Vec::new(),
        });
    }

    let mut stmt =
        conn.prepare("SELECT ns, client_id, filter, options, sub_id FROM subscriptions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, u8>(3)?,
            r.get::<_, Option<u32>>(4)?,
        ))
    })?;
    for row in rows {
        let (ns, client_id, filter, options, sub_id) = row?;
        if let Some(&i) = index.get(&(ns, client_id)) {
            loaded.sessions[i]
                .subscriptions
                .push((filter, options_from_byte(options), sub_id));
        }
    }

    let mut stmt = conn.prepare(
        "SELECT id, ns, client_id, msg_id, qos, retain, sub_ids, share_group, share_filter, pid, state FROM queue ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, u8>(4)?,
            r.get::<_, bool>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, u16>(9)?,
            r.get::<_, u8>(10)?,
        ))
    })?;
    for row in rows {
        let (id, ns, client_id, msg_id, qos, retain, sub_ids, group, filter, pid, state) = row?;
        let Some(&i) = index.get(&(ns, client_id)) else {
            continue;
        };
        let Some(msg) = messages.get(&msg_id) else {
            return Err(StoreError::Corrupt(msg_id));
        };
        let session = &mut loaded.sessions[i];
        let msg = if *msg.namespace == *session.ns {
            msg.clone()
        } else {
            let mut m = (**msg).clone();
            m.namespace = session.ns.clone();
            let m = Arc::new(m);
            messages.insert(msg_id, m.clone());
            m
        };
        session.queue.push(LoadedDelivery {
            row: id as u64,
            msg,
            qos: QoS::from_u8(qos).unwrap_or(QoS::AtLeastOnce),
            retain,
            sub_ids: sub_ids.split(',').filter_map(|s| s.parse().ok()).collect(),
            share: group.zip(filter).map(|(g, f)| (Arc::from(g), Arc::from(f))),
            pid,
            state,
        });
    }

    let mut stmt = conn.prepare("SELECT ns, client_id, pid FROM qos2_in")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u16>(2)?,
        ))
    })?;
    for row in rows {
        let (ns, client_id, pid) = row?;
        if let Some(&i) = index.get(&(ns, client_id)) {
            loaded.sessions[i].qos2_in.push(pid);
        }
    }
    Ok(loaded)
}

/// Subscription options as the SUBSCRIBE options byte.
pub fn options_byte(o: SubOptions) -> u8 {
    o.qos as u8
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | (o.retain_handling << 4)
}

fn options_from_byte(b: u8) -> SubOptions {
    SubOptions {
        qos: QoS::from_u8(b & 3).unwrap_or_default(),
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: (b >> 4) & 3,
    }
}
