//! The writer thread: every waiting write goes into one transaction (one ingest-log row per
//! batch, plus any new series), then into the head and the latest values, then the writers'
//! commits are resolved. Sealing and deletes run here too, between batches.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection};

use super::{seal, Req, SeriesId, Shared};
use crate::value::{get_varint, put_varint, unzigzag, zigzag};
use crate::{Result, StoreError, Value};

/// Most write requests committed in one transaction.
const MAX_BATCH: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, device TEXT NOT NULL, key TEXT NOT NULL,
    UNIQUE (device, key));
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
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
    ))?;
    conn.execute_batch(SCHEMA)?;
    {
        let mut series = shared.series.write();
        let mut st = conn.prepare("SELECT id, device, key FROM series")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (id, device, key) = row?;
            series.insert(id, Arc::from(device), Arc::from(key));
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
                latest.insert(id, (ts, v));
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

/// Puts committed records into the head and the latest values.
fn apply(shared: &Shared, records: Vec<(SeriesId, i64, Value)>) {
    {
        let mut latest = shared.latest.write();
        for (s, ts, v) in &records {
            match latest.get(s) {
                Some((t, _)) if *t > *ts => {}
                _ => {
                    latest.insert(*s, (*ts, v.clone()));
                }
            }
        }
    }
    let mut head = shared.head.write();
    head.total += records.len();
    for (s, ts, v) in records {
        head.points.entry(s).or_default().push((ts, v));
    }
}

/// The writer loop.
pub fn run(shared: Arc<Shared>, mut conn: Connection, rx: Receiver<Req>) {
    let mut last_seal = Instant::now();
    loop {
        let wait = shared.config.seal_every.saturating_sub(last_seal.elapsed());
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
                    points,
                    done,
                } => writes.push((device, points, done)),
                other => others.push(other),
            }
        }
        if !writes.is_empty() {
            commit_writes(&shared, &mut conn, writes);
        }
        let due = last_seal.elapsed() >= shared.config.seal_every
            || shared.head.read().total >= shared.config.seal_points;
        let mut stop = false;
        for req in others {
            match req {
                Req::Seal(done) => {
                    let _ = done.send(seal::seal(&shared, &mut conn));
                    last_seal = Instant::now();
                }
                Req::Delete {
                    device,
                    from,
                    to,
                    done,
                } => {
                    let r = seal::seal(&shared, &mut conn)
                        .and_then(|()| seal::delete(&shared, &mut conn, &device, from, to));
                    last_seal = Instant::now();
                    let _ = done.send(r);
                }
                Req::Close(done) => {
                    let _ = done.send(seal::seal(&shared, &mut conn));
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
        if due && shared.head.read().total > 0 {
            if let Err(e) = seal::seal(&shared, &mut conn) {
                tracing::error!(error = %e, "sealing telemetry failed; the head keeps it");
            }
            last_seal = Instant::now();
        } else if due {
            last_seal = Instant::now();
        }
    }
}

type Write = (
    Arc<str>,
    Vec<crate::Point>,
    tokio::sync::oneshot::Sender<Result<()>>,
);

fn commit_writes(shared: &Shared, conn: &mut Connection, writes: Vec<Write>) {
    let mut records = Vec::new();
    let mut fresh: Vec<(SeriesId, Arc<str>, Arc<str>)> = Vec::new();
    {
        let series = shared.series.read();
        let mut next = series.next;
        let mut pending: std::collections::HashMap<(Arc<str>, Arc<str>), SeriesId> =
            Default::default();
        for (device, points, _) in &writes {
            for p in points {
                let key: Arc<str> = Arc::from(p.key.as_str());
                let name = (device.clone(), key.clone());
                let id = match series.by_name.get(&name).or_else(|| pending.get(&name)) {
                    Some(id) => *id,
                    None => {
                        let id = next;
                        next += 1;
                        pending.insert(name, id);
                        fresh.push((id, device.clone(), key));
                        id
                    }
                };
                records.push((id, p.ts, p.value.clone()));
            }
        }
    }
    let mut blob = Vec::with_capacity(records.len() * 12);
    encode_records(&records, &mut blob);
    let result = (|| -> Result<()> {
        let tx = conn.transaction()?;
        {
            let mut st =
                tx.prepare_cached("INSERT INTO series (id, device, key) VALUES (?1, ?2, ?3)")?;
            for (id, device, key) in &fresh {
                st.execute(params![id, &**device, &**key])?;
            }
            tx.prepare_cached("INSERT INTO ingest (blob) VALUES (?1)")?
                .execute([&blob])?;
        }
        tx.commit()?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            {
                let mut series = shared.series.write();
                for (id, device, key) in fresh {
                    series.insert(id, device, key);
                }
            }
            metrics::counter!("telemetry_points_stored_total").increment(records.len() as u64);
            apply(shared, records);
            for (_, _, done) in writes {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "telemetry commit failed");
            let msg = e.to_string();
            for (_, _, done) in writes {
                let _ = done.send(Err(StoreError::Write(msg.clone())));
            }
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
