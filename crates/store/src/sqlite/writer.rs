//! The writer thread: every waiting write goes into one transaction (one ingest-log row per
//! batch, plus any new series), then into the head and the latest values, then the writers'
//! commits are resolved. Sealing and deletes run here too, between batches.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection};

use super::{seal, GroupId, Req, SeriesId, Shared};
use crate::value::{get_varint, put_varint, unzigzag, zigzag};
use crate::{Result, StoreError, Value};

/// Most write requests committed in one transaction.
const MAX_BATCH: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS groups (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, device TEXT NOT NULL, key TEXT NOT NULL,
    grp INTEGER NOT NULL DEFAULT 0, UNIQUE (device, key));
CREATE TABLE IF NOT EXISTS ingest (seq INTEGER PRIMARY KEY, blob BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS latest (series INTEGER PRIMARY KEY, ts INTEGER NOT NULL, value BLOB NOT NULL);
";

/// Opens `index.db`, loads series and latest values, and replays the ingest log into the head.
pub fn open_index(shared: &Shared) -> Result<Connection> {
    let conn = Connection::open(shared.dir.join("index.db"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let sync = if shared.config.fsync {
        "FULL"
    } else {
        "NORMAL"
    };
    // Incremental auto-vacuum (effective on a new file) lets sealing return the ingest log's
    // pages to the file system.
    // The writer never checkpoints: a thread of its own does (checkpoint.rs).
    conn.execute_batch(&format!(
        "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         PRAGMA wal_autocheckpoint = 0;"
    ))?;
    conn.execute_batch(SCHEMA)?;
    {
        let mut series = shared.series.write();
        let mut st = conn.prepare("SELECT id, name FROM groups")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, name) = row?;
            series.add_group(id, Arc::from(name));
        }
        let mut st = conn.prepare("SELECT id, device, key, grp FROM series")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
            ))
        })?;
        for row in rows {
            let (id, device, key, grp) = row?;
            series.insert(id, Arc::from(device), Arc::from(key), grp);
        }
    }
    {
        let mut latest = shared.latest.write();
        let mut st = conn.prepare("SELECT series, ts, value FROM latest")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        for row in rows {
            let (id, ts, blob) = row?;
            if let Some(v) = Value::decode(&mut &blob[..]) {
                set_latest(&mut latest, id, ts, v);
            }
        }
    }
    let mut replayed = 0usize;
    {
        let mut st = conn.prepare("SELECT blob FROM ingest ORDER BY seq")?;
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        for blob in rows {
            let records = decode_records(&blob?)
                .ok_or_else(|| StoreError::Corrupt("ingest log record".into()))?;
            replayed += records.len();
            apply(shared, records);
        }
    }
    if replayed > 0 {
        tracing::info!(points = replayed, "telemetry ingest log replayed");
    }
    Ok(conn)
}

/// Encodes `(series, ts, value)` records.
fn encode_records(records: &[(SeriesId, i64, Value)], out: &mut Vec<u8>) {
    for (s, ts, v) in records {
        put_varint(out, u64::from(*s));
        put_varint(out, zigzag(*ts));
        v.encode(out);
    }
}

/// Decodes an ingest-log blob.
fn decode_records(mut buf: &[u8]) -> Option<Vec<(SeriesId, i64, Value)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let s = SeriesId::try_from(get_varint(&mut buf)?).ok()?;
        let ts = unzigzag(get_varint(&mut buf)?);
        out.push((s, ts, Value::decode(&mut buf)?));
    }
    Some(out)
}

/// Sets a series' latest value unless a newer one is known.
pub(crate) fn set_latest(latest: &mut super::Latest, s: SeriesId, ts: i64, v: Value) {
    let i = s as usize;
    if latest.len() <= i {
        latest.resize(i + 1, None);
    }
    match &latest[i] {
        Some((t, _)) if *t > ts => {}
        _ => latest[i] = Some((ts, v)),
    }
}

/// Puts committed records into the head and the latest values.
fn apply(shared: &Shared, records: Vec<(SeriesId, i64, Value)>) {
    {
        let mut latest = shared.latest.write();
        for (s, ts, v) in &records {
            set_latest(&mut latest, *s, *ts, v.clone());
        }
    }
    let mut head = shared.head.write();
    head.total += records.len();
    for (s, ts, v) in records {
        let i = s as usize;
        if head.points.len() <= i {
            head.points.resize_with(i + 1, Vec::new);
        }
        if head.points[i].is_empty() {
            head.active.push(s);
        }
        head.points[i].push((ts, v));
    }
}

/// A seal for the sealer thread: the frozen head, the last ingest-log row it covers, and
/// where to say it is done.
type SealJob = (Arc<super::Head>, i64, mpsc::Sender<Result<()>>);

/// Starts the sealer thread (its own connection to `index.db`).
fn start_sealer(shared: &Arc<Shared>) -> Result<mpsc::Sender<SealJob>> {
    let conn = Connection::open(shared.dir.join("index.db"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let (tx, rx) = mpsc::channel::<SealJob>();
    let shared = shared.clone();
    std::thread::Builder::new().name("telemetry-sealer".into()).spawn(move || {
        let mut conn = conn;
        for (head, upto, done) in rx {
            let r = seal::seal(&shared, &mut conn, &head, upto);
            if let Err(e) = &r {
                tracing::error!(error = %e, "sealing telemetry failed; the ingest log keeps it");
                // Readers keep seeing the frozen points until the next restart replays them.
            }
            let _ = done.send(r);
        }
    })?;
    Ok(tx)
}

/// The writer's side of sealing: at most one seal in flight.
struct Sealing {
    tx: mpsc::Sender<SealJob>,
    in_flight: Option<mpsc::Receiver<Result<()>>>,
    last_seq: i64,
    last: Instant,
}

impl Sealing {
    /// Whether the previous seal is done (collecting its result).
    fn idle(&mut self) -> bool {
        match &self.in_flight {
            None => true,
            Some(rx) => match rx.try_recv() {
                Err(mpsc::TryRecvError::Empty) => false,
                _ => {
                    self.in_flight = None;
                    true
                }
            },
        }
    }

    /// Waits for the seal in flight.
    fn wait(&mut self) -> Result<()> {
        match self.in_flight.take() {
            Some(rx) => rx.recv().unwrap_or(Err(StoreError::Closed)),
            None => Ok(()),
        }
    }

    /// Freezes the live head and hands it to the sealer (the previous seal must be done).
    fn start(&mut self, shared: &Shared) {
        let frozen = {
            let mut head = shared.head.write();
            let mut frozen = shared.frozen.write();
            let h = Arc::new(std::mem::take(&mut *head));
            *frozen = Some(h.clone());
            h
        };
        let (done, rx) = mpsc::channel();
        if self.tx.send((frozen, self.last_seq, done)).is_ok() {
            self.in_flight = Some(rx);
        }
        self.last = Instant::now();
    }

    /// Seals everything written so far and waits for it.
    fn now(&mut self, shared: &Shared) -> Result<()> {
        self.wait()?;
        self.start(shared);
        self.wait()
    }
}

/// The writer loop.
pub fn run(shared: Arc<Shared>, mut conn: Connection, rx: Receiver<Req>) {
    let tx = match start_sealer(&shared) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "starting the telemetry sealer failed");
            return;
        }
    };
    let last_seq = conn
        .query_row("SELECT coalesce(max(seq), 0) FROM ingest", [], |r| r.get(0))
        .unwrap_or(0);
    let mut sealing = Sealing {
        tx,
        in_flight: None,
        last_seq,
        last: Instant::now(),
    };
    loop {
        let wait = shared
            .config
            .seal_every
            .saturating_sub(sealing.last.elapsed());
        let first = match rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut writes = Vec::new();
        let mut others = Vec::new();
        for req in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()).take(MAX_BATCH))
        {
            match req {
                Req::Write {
                    device,
                    group,
                    points,
                    done,
                } => writes.push((device, group, points, done)),
                other => others.push(other),
            }
        }
        if !writes.is_empty() {
            if let Some(seq) = commit_writes(&shared, &mut conn, writes) {
                sealing.last_seq = seq;
            }
        }
        let mut stop = false;
        for req in others {
            match req {
                Req::Seal(done) => {
                    let _ = done.send(sealing.now(&shared));
                }
                Req::Delete {
                    device,
                    from,
                    to,
                    done,
                } => {
                    let r = sealing
                        .now(&shared)
                        .and_then(|()| seal::delete(&shared, &mut conn, &device, from, to));
                    let _ = done.send(r);
                }
                Req::Drop {
                    group,
                    before,
                    done,
                } => {
                    let r = sealing
                        .wait()
                        .and_then(|()| seal::drop_before(&shared, &group, before));
                    let _ = done.send(r);
                }
                Req::Close(done) => {
                    let _ = done.send(sealing.now(&shared));
                    stop = true;
                }
                Req::Write { .. } => unreachable!("writes were taken above"),
            }
        }
        if stop {
            // Writes still queued behind the close fail rather than hang.
            while let Ok(req) = rx.try_recv() {
                if let Req::Write { done, .. } = req {
                    let _ = done.send(Err(StoreError::Closed));
                }
            }
            break;
        }
        let total = shared.head.read().total;
        let due = sealing.last.elapsed() >= shared.config.seal_every
            || total >= shared.config.seal_points;
        if due && sealing.idle() {
            if total > 0 {
                sealing.start(&shared);
            } else {
                sealing.last = Instant::now();
            }
        }
    }
}

type Write = (
    Arc<str>,
    Arc<str>,
    Vec<crate::Point>,
    tokio::sync::oneshot::Sender<Result<()>>,
);

/// Commits a batch of writes; returns the ingest-log row written.
fn commit_writes(shared: &Shared, conn: &mut Connection, writes: Vec<Write>) -> Option<i64> {
    let mut records = Vec::new();
    let mut fresh: Vec<(SeriesId, Arc<str>, Arc<str>, GroupId)> = Vec::new();
    let mut fresh_groups: Vec<(GroupId, Arc<str>)> = Vec::new();
    {
        let series = shared.series.read();
        let mut next = series.next;
        // Series and groups first seen in this batch.
        let mut pending: std::collections::HashMap<(Arc<str>, String), SeriesId> =
            Default::default();
        let mut next_group = series.groups.len() as GroupId;
        for (device, group, points, _) in &writes {
            let known = series.by_device.get(device);
            for p in points {
                let id = match known.and_then(|d| d.keys.get(p.key.as_str())) {
                    Some(id) => *id,
                    None => *pending
                        .entry((device.clone(), p.key.clone()))
                        .or_insert_with(|| {
                            let g = match series.group_ids.get(group) {
                                Some(g) => *g,
                                None => match fresh_groups.iter().find(|(_, n)| n == group) {
                                    Some((g, _)) => *g,
                                    None => {
                                        next_group += 1;
                                        fresh_groups.push((next_group - 1, group.clone()));
                                        next_group - 1
                                    }
                                },
                            };
                            let id = next;
                            next += 1;
                            fresh.push((id, device.clone(), Arc::from(p.key.as_str()), g));
                            id
                        }),
                };
                records.push((id, p.ts, p.value.clone()));
            }
        }
    }
    if records.is_empty() && fresh.is_empty() {
        // Only barriers (empty writes): every earlier batch is committed already.
        for (_, _, _, done) in writes {
            let _ = done.send(Ok(()));
        }
        return None;
    }
    let mut blob = Vec::with_capacity(records.len() * 12);
    encode_records(&records, &mut blob);
    let result = (|| -> Result<i64> {
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT INTO groups (id, name) VALUES (?1, ?2)")?;
            for (id, name) in &fresh_groups {
                st.execute(params![id, &**name])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO series (id, device, key, grp) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (id, device, key, g) in &fresh {
                st.execute(params![id, &**device, &**key, g])?;
            }
            tx.prepare_cached("INSERT INTO ingest (blob) VALUES (?1)")?
                .execute([&blob])?;
        }
        let seq = tx.last_insert_rowid();
        tx.commit()?;
        Ok(seq)
    })();
    match result {
        Ok(seq) => {
            {
                let mut series = shared.series.write();
                for (id, name) in fresh_groups {
                    series.add_group(id, name);
                }
                for (id, device, key, g) in fresh {
                    series.insert(id, device, key, g);
                }
            }
            metrics::counter!("telemetry_points_stored_total").increment(records.len() as u64);
            apply(shared, records);
            for (_, _, _, done) in writes {
                let _ = done.send(Ok(()));
            }
            Some(seq)
        }
        Err(e) => {
            tracing::error!(error = %e, "telemetry commit failed");
            let msg = e.to_string();
            for (_, _, _, done) in writes {
                let _ = done.send(Err(StoreError::Write(msg.clone())));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = vec![
            (0, -5, Value::Long(3)),
            (7, 1_795_000_000_000, Value::Str("é".into())),
            (300, 0, Value::Double(1.5)),
        ];
        let mut out = Vec::new();
        encode_records(&records, &mut out);
        assert_eq!(decode_records(&out), Some(records));
        assert_eq!(decode_records(&out[..out.len() - 1]), None);
    }
}
