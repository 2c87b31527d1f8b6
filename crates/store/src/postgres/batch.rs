//! Group commit: a batch of writes becomes one transaction. New series (and groups) get ids
//! first, partitions are created if missing, the points are deduplicated (last write of a
//! (series, ts) wins) and sent with binary COPY, straight into `points` or, when a timestamp is
//! already stored, through the staging table and an upsert; then `latest` is upserted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Object;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

use super::schema::{self, Cols, POINT_COLS, POINT_TYPES};
use super::writer::Writer;
use super::SeriesRef;
use crate::{Point, Result, StoreError, Value};

/// One queued write.
pub(super) struct Write {
    pub device: Arc<str>,
    pub group: Arc<str>,
    pub points: Vec<Point>,
    pub done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// A point ready for COPY.
struct Row<'a> {
    s: SeriesRef,
    ts: i64,
    v: &'a Value,
}

/// Why a batch failed; `data`: the server refused the data itself (SQLSTATE class 22 or 23),
/// so the batch's writes are worth retrying one by one.
pub(super) struct Failure {
    pub msg: String,
    pub data: bool,
    /// Worth one more try: a partition the writer knew of is gone (dropped by retention;
    /// created again on the retry), or the server broke a deadlock (retention dropping a
    /// partition that old points are being written to) or a serialization conflict.
    pub retry: bool,
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        let data = e
            .code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
        let retry = e.code().is_some_and(|c| {
            *c == SqlState::UNDEFINED_TABLE
                || *c == SqlState::CHECK_VIOLATION
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
        });
        Failure {
            msg: e.to_string(),
            data,
            retry,
        }
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Failure {
        Failure {
            msg: e.to_string(),
            data: false,
            retry: false,
        }
    }
}

impl Writer {
    /// Commits a batch and resolves its commits.
    pub(super) async fn commit(&mut self, batch: Vec<Write>) {
        let points: usize = batch.iter().map(|w| w.points.len()).sum();
        let started = std::time::Instant::now();
        let mut r = self.try_commit(&batch).await;
        if matches!(&r, Err(f) if f.retry) {
            // E.g. retention dropped a partition this writer knew of (in another writer, or
            // another store on the same database): create it again.
            self.parts.clear();
            r = self.try_commit(&batch).await;
        }
        match r {
            Ok(()) => {
                metrics::counter!("telemetry_points_stored_total").increment(points as u64);
                tracing::trace!(writes = batch.len(), points, elapsed = ?started.elapsed(), "telemetry batch committed");
                for w in batch {
                    let _ = w.done.send(Ok(()));
                }
            }
            Err(f) => {
                // A partition dropped by someone else, a broken connection: start afresh.
                self.parts.clear();
                if f.data && batch.len() > 1 {
                    tracing::warn!(error = %f.msg, writes = batch.len(), "telemetry batch refused; committing its writes one by one");
                    for w in batch {
                        Box::pin(self.commit(vec![w])).await;
                    }
                    return;
                }
                tracing::error!(error = %f.msg, "telemetry commit failed");
                for w in batch {
                    let _ = w.done.send(Err(StoreError::Write(f.msg.clone())));
                }
            }
        }
    }

    async fn try_commit(&mut self, batch: &[Write]) -> std::result::Result<(), Failure> {
        let mut client = self.client().await?;
        let r = self.commit_on(&mut client, batch).await;
        self.keep(client, r.is_ok());
        r
    }

    async fn commit_on(
        &mut self,
        client: &mut Object,
        batch: &[Write],
    ) -> std::result::Result<(), Failure> {
        self.create_series(client, batch).await?;
        let mut rows: Vec<Row> = Vec::with_capacity(batch.iter().map(|w| w.points.len()).sum());
        for w in batch {
            for p in &w.points {
                let s = self.shared.get(&w.device, &p.key).ok_or_else(|| Failure {
                    msg: format!("series {}/{} has no id", w.device, p.key),
                    data: false,
                    retry: false,
                })?;
                rows.push(Row {
                    s,
                    ts: p.ts,
                    v: &p.value,
                });
            }
        }
        // Partition by partition (COPY routes runs of rows), in index order; stable, so
        // that the last write of a (series, ts) comes last and wins.
        rows.sort_by_key(|r| (r.s.grp, schema::day_of(r.ts), r.s.id, r.ts));
        rows.dedup_by(|later, earlier| {
            let same = later.s.id == earlier.s.id && later.ts == earlier.ts;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        let mut prev = None;
        for r in &rows {
            let part = (r.s.grp, schema::day_of(r.ts));
            if prev != Some(part) && !self.parts.contains(&part) {
                schema::create_partition(client, part.0, part.1)
                    .await
                    .map_err(|e| Failure {
                        msg: e.to_string(),
                        data: false,
                        retry: false,
                    })?;
                self.parts.insert(part);
            }
            prev = Some(part);
        }
        // The newest point of each series, in id order (upserts in one order everywhere).
        let mut newest: BTreeMap<i32, &Row> = BTreeMap::new();
        for r in &rows {
            match newest.get(&r.s.id) {
                Some(n) if n.ts >= r.ts => {}
                _ => {
                    newest.insert(r.s.id, r);
                }
            }
        }
        let direct = self.config.direct_copy;
        let t0 = std::time::Instant::now();
        let mut tx = client.transaction().await?;
        if direct {
            let sp = tx.savepoint("direct").await?;
            match copy_to_partitions(&sp, &rows).await {
                Ok(_) => sp.commit().await?,
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    // A timestamp already stored (a device re-sending): upsert instead.
                    sp.rollback().await?;
                    upsert(&tx, &rows).await?;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            upsert(&tx, &rows).await?;
        }
        let t1 = std::time::Instant::now();
        upsert_latest(&tx, newest.values().copied()).await?;
        let t2 = std::time::Instant::now();
        tx.commit().await?;
        tracing::debug!(
            points = rows.len(),
            series = newest.len(),
            copy = ?(t1 - t0),
            latest = ?(t2 - t1),
            commit = ?t2.elapsed(),
            "telemetry batch"
        );
        Ok(())
    }

    /// Gives ids to the batch's new series (and groups), in their own transactions: a series
    /// row without points is harmless.
    async fn create_series(
        &mut self,
        client: &Object,
        batch: &[Write],
    ) -> std::result::Result<(), Failure> {
        let mut seen = HashSet::new();
        let mut missing: Vec<(&str, &str, &Arc<str>)> = Vec::new();
        for w in batch {
            for p in &w.points {
                if self.shared.get(&w.device, &p.key).is_none()
                    && seen.insert((&*w.device, p.key.as_str()))
                {
                    missing.push((&w.device, &p.key, &w.group));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = missing
            .iter()
            .filter(|m| !self.groups.contains_key(m.2))
            .map(|m| &**m.2)
            .collect();
        names.sort_unstable();
        names.dedup();
        if !names.is_empty() {
            client
                .execute(
                    "INSERT INTO groups (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
                    &[&names],
                )
                .await?;
            for row in client
                .query(
                    "SELECT id, name FROM groups WHERE name = ANY($1)",
                    &[&names],
                )
                .await?
            {
                self.groups
                    .insert(Arc::from(row.get::<_, &str>(1)), row.get(0));
            }
        }
        let devices: Vec<&str> = missing.iter().map(|m| m.0).collect();
        let keys: Vec<&str> = missing.iter().map(|m| m.1).collect();
        let grps: Vec<i32> = missing
            .iter()
            .map(|m| self.groups.get(m.2).copied().unwrap_or_default())
            .collect();
        client
            .execute(
                "INSERT INTO series (device, key, grp) SELECT * FROM unnest($1::text[], $2::text[], $3::int4[])
                 ON CONFLICT (device, key) DO NOTHING",
                &[&devices, &keys, &grps],
            )
            .await?;
        for row in client
            .query(
                "SELECT s.id, s.grp, s.device, s.key FROM series s
                 JOIN unnest($1::text[], $2::text[]) AS u (device, key) ON s.device = u.device AND s.key = u.key",
                &[&devices, &keys],
            )
            .await?
        {
            let s = SeriesRef {
                id: row.get(0),
                grp: row.get(1),
            };
            self.shared.insert(row.get(2), row.get(3), s);
        }
        Ok(())
    }
}

/// Binary COPY of rows into `table`.
async fn copy(
    tx: &Transaction<'_>,
    table: &str,
    rows: &[Row<'_>],
) -> std::result::Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!("COPY {table} ({POINT_COLS}) FROM STDIN BINARY"))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &POINT_TYPES);
    tokio::pin!(writer);
    for r in rows {
        let c = Cols::of(r.v);
        let [b, l, d, s, j] = c.params();
        writer
            .as_mut()
            .write(&[&r.s.id, &r.s.grp, &r.ts, b, l, d, s, j])
            .await?;
    }
    writer.finish().await
}

/// Rows (sorted by group and day) straight into their day partitions, one COPY per partition:
/// the server does not route them one by one.
async fn copy_to_partitions(
    tx: &Transaction<'_>,
    rows: &[Row<'_>],
) -> std::result::Result<(), tokio_postgres::Error> {
    let mut start = 0;
    while start < rows.len() {
        let part = |r: &Row| (r.s.grp, schema::day_of(r.ts));
        let first = part(&rows[start]);
        let end = start + rows[start..].partition_point(|r| part(r) == first);
        copy(tx, &schema::day_table(first.0, first.1), &rows[start..end]).await?;
        start = end;
    }
    Ok(())
}

/// Rows into the staging table, then into `points`, replacing stored values.
async fn upsert(
    tx: &Transaction<'_>,
    rows: &[Row<'_>],
) -> std::result::Result<(), tokio_postgres::Error> {
    copy(tx, "staging", rows).await?;
    tx.batch_execute(&format!(
        "INSERT INTO points ({POINT_COLS}) SELECT {POINT_COLS} FROM staging
         ON CONFLICT (series, ts, grp) DO UPDATE SET v_bool = excluded.v_bool,
         v_long = excluded.v_long, v_double = excluded.v_double, v_str = excluded.v_str,
         v_json = excluded.v_json"
    ))
    .await
}

/// The newest point of each series into `latest`, unless a newer one is there.
async fn upsert_latest<'a>(
    tx: &Transaction<'_>,
    newest: impl Iterator<Item = &'a Row<'a>>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (mut ids, mut ts) = (Vec::new(), Vec::new());
    let (mut b, mut l, mut d, mut s, mut j) = (vec![], vec![], vec![], vec![], vec![]);
    for r in newest {
        let c = Cols::of(r.v);
        ids.push(r.s.id);
        ts.push(r.ts);
        b.push(c.b);
        l.push(c.l);
        d.push(c.d);
        s.push(c.s);
        j.push(c.j);
    }
    // Series with a latest value are updated (a join, cheaper than a speculative insert
    // each); the others inserted (upserted, should another store have inserted meanwhile).
    tx.execute(
        "WITH u AS (SELECT * FROM unnest($1::int4[], $2::int8[], $3::bool[], $4::int8[],
                    $5::float8[], $6::text[], $7::text[])
                    AS u (series, ts, v_bool, v_long, v_double, v_str, v_json)),
         upd AS (UPDATE latest l SET ts = u.ts, v_bool = u.v_bool, v_long = u.v_long,
                 v_double = u.v_double, v_str = u.v_str, v_json = u.v_json
                 FROM u WHERE l.series = u.series AND l.ts <= u.ts)
         INSERT INTO latest (series, ts, v_bool, v_long, v_double, v_str, v_json)
         SELECT * FROM u WHERE NOT EXISTS (SELECT 1 FROM latest l WHERE l.series = u.series)
         ON CONFLICT (series) DO UPDATE SET ts = excluded.ts, v_bool = excluded.v_bool,
         v_long = excluded.v_long, v_double = excluded.v_double, v_str = excluded.v_str,
         v_json = excluded.v_json
         WHERE latest.ts <= excluded.ts",
        &[&ids, &ts, &b, &l, &d, &s, &j],
    )
    .await?;
    Ok(())
}
