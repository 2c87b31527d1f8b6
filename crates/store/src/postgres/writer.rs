//! The writer task: group commit with binary COPY, deletes and retention, one request after
//! the other on one connection (so they stay in the order they were asked).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

use super::schema::{self, Cols, DAY_MS, POINT_COLS, POINT_TYPES, VALUE_COLS};
use super::{pg_err, PgConfig, Req, SeriesRef, Shared};
use crate::{Point, Result, StoreError, Value};

/// One queued write.
struct Write {
    device: Arc<str>,
    group: Arc<str>,
    points: Vec<Point>,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// A point ready for COPY.
struct Row<'a> {
    s: SeriesRef,
    ts: i64,
    v: &'a Value,
}

/// Why a batch failed; `data`: the server refused the data itself (SQLSTATE class 22 or 23),
/// so the batch's writes are worth retrying one by one.
struct Failure {
    msg: String,
    data: bool,
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        let data = e
            .code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
        Failure {
            msg: e.to_string(),
            data,
        }
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Failure {
        Failure {
            msg: e.to_string(),
            data: false,
        }
    }
}

struct Writer {
    pool: Pool,
    shared: Arc<Shared>,
    config: PgConfig,
    /// The writer's connection (its temporary staging table lives there).
    client: Option<Object>,
    /// Group ids by name.
    groups: HashMap<Arc<str>, i32>,
    /// (group, day) partitions known to exist.
    parts: HashSet<(i32, i64)>,
}

const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS staging (
    series int4, grp int4, ts int8, v_bool bool, v_long int8, v_double float8, v_str text,
    v_json text) ON COMMIT DELETE ROWS";

/// The writer loop: writes waiting together form one batch; any other request ends the batch
/// and runs after it.
pub async fn run(
    pool: Pool,
    shared: Arc<Shared>,
    config: PgConfig,
    mut rx: UnboundedReceiver<Req>,
) {
    let mut w = Writer {
        pool,
        shared,
        config,
        client: None,
        groups: HashMap::new(),
        parts: HashSet::new(),
    };
    let mut next: Option<Req> = None;
    loop {
        let req = match next.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        match req {
            Req::Write {
                device,
                group,
                points,
                done,
            } => {
                let mut n = points.len();
                let mut batch = vec![Write {
                    device,
                    group,
                    points,
                    done,
                }];
                while n < w.config.max_batch_points {
                    match rx.try_recv() {
                        Ok(Req::Write {
                            device,
                            group,
                            points,
                            done,
                        }) => {
                            n += points.len();
                            batch.push(Write {
                                device,
                                group,
                                points,
                                done,
                            });
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                w.commit(batch).await;
            }
            Req::Delete {
                device,
                from,
                to,
                done,
            } => {
                let r = w.delete(&device, from, to).await;
                let _ = done.send(r);
            }
            Req::Drop {
                group,
                before,
                done,
            } => {
                let r = w.drop_before(&group, before).await;
                let _ = done.send(r);
            }
            Req::Flush(done) => {
                let _ = done.send(Ok(()));
            }
            Req::Close(done) => {
                let _ = done.send(Ok(()));
                break;
            }
        }
    }
    // Writes queued behind a close fail rather than hang.
    rx.close();
    while let Ok(req) = rx.try_recv() {
        if let Req::Write { done, .. } = req {
            let _ = done.send(Err(StoreError::Closed));
        }
    }
}

impl Writer {
    /// The writer's connection, with its staging table.
    async fn client(&mut self) -> std::result::Result<Object, Failure> {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                return Ok(c);
            }
        }
        let c = self.pool.get().await?;
        c.batch_execute(STAGING).await?;
        Ok(c)
    }

    /// Commits a batch and resolves its commits.
    async fn commit(&mut self, batch: Vec<Write>) {
        let points: usize = batch.iter().map(|w| w.points.len()).sum();
        let started = std::time::Instant::now();
        match self.try_commit(&batch).await {
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
        if !client.is_closed() {
            self.client = Some(client);
        }
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
        let mut tx = client.transaction().await?;
        if direct {
            let sp = tx.savepoint("direct").await?;
            match copy(&sp, "points", &rows).await {
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
        upsert_latest(&tx, newest.values().copied()).await?;
        tx.commit().await?;
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

    /// Deletes a device's points in `[from, to]` (rows: this is a user's delete, not
    /// retention) and recomputes the latest values it took.
    async fn delete(&mut self, device: &str, from: i64, to: i64) -> Result<()> {
        let mut client = self.client().await.map_err(|f| pg_err(f.msg))?;
        let r = async {
            let ids: Vec<i32> = client
                .query("SELECT id FROM series WHERE device = $1", &[&device])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            let tx = client.transaction().await?;
            let p: [&(dyn ToSql + Sync); 3] = [&ids, &from, &to];
            tx.execute(
                "DELETE FROM points WHERE series = ANY($1) AND ts BETWEEN $2 AND $3",
                &p,
            )
            .await?;
            let gone: Vec<i32> = tx
                .query(
                    "DELETE FROM latest WHERE series = ANY($1) AND ts BETWEEN $2 AND $3 RETURNING series",
                    &p,
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !gone.is_empty() {
                tx.execute(
                    &format!(
                        "INSERT INTO latest (series, ts, {VALUE_COLS})
                         SELECT p.* FROM unnest($1::int4[]) AS u (id) CROSS JOIN LATERAL
                         (SELECT series, ts, {VALUE_COLS} FROM points WHERE series = u.id
                          ORDER BY ts DESC LIMIT 1) p"
                    ),
                    &[&gone],
                )
                .await?;
            }
            tx.commit().await
        }
        .await;
        if !client.is_closed() {
            self.client = Some(client);
        }
        r.map_err(pg_err)
    }

    /// Retention: drops the group's day partitions that ended before `before`; returns their
    /// size.
    async fn drop_before(&mut self, group: &str, before: i64) -> Result<u64> {
        let mut client = self.client().await.map_err(|f| pg_err(f.msg))?;
        let r: std::result::Result<_, tokio_postgres::Error> = async {
            let Some(row) = client
                .query_opt("SELECT id FROM groups WHERE name = $1", &[&group])
                .await?
            else {
                return Ok((0, Vec::new()));
            };
            let grp: i32 = row.get(0);
            let parts = client
                .query(
                    "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
                    &[&schema::group_table(grp)],
                )
                .await?;
            let old: Vec<(String, i64, u64)> = parts
                .iter()
                .filter_map(|r| {
                    let name: String = r.get(0);
                    let day = schema::day_of_table(&name)?;
                    let end = (day + 1).checked_mul(DAY_MS)?;
                    (end <= before).then(|| (name, day, r.get::<_, i64>(1).max(0) as u64))
                })
                .collect();
            if old.is_empty() {
                return Ok((0, Vec::new()));
            }
            let tx = client.transaction().await?;
            for (name, _, _) in &old {
                tx.batch_execute(&format!("DROP TABLE {name}")).await?;
            }
            tx.commit().await?;
            let freed = old.iter().map(|o| o.2).sum();
            Ok((freed, old.into_iter().map(|o| (grp, o.1)).collect()))
        }
        .await;
        if !client.is_closed() {
            self.client = Some(client);
        }
        let (freed, dropped): (u64, Vec<(i32, i64)>) = r.map_err(pg_err)?;
        for part in &dropped {
            self.parts.remove(part);
            metrics::counter!("telemetry_partitions_dropped_total").increment(1);
        }
        if !dropped.is_empty() {
            tracing::info!(
                group,
                partitions = dropped.len(),
                freed,
                "telemetry partitions dropped (retention)"
            );
        }
        Ok(freed)
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
    tx.execute(
        "INSERT INTO latest (series, ts, v_bool, v_long, v_double, v_str, v_json)
         SELECT * FROM unnest($1::int4[], $2::int8[], $3::bool[], $4::int8[], $5::float8[], $6::text[], $7::text[])
         ON CONFLICT (series) DO UPDATE SET ts = excluded.ts, v_bool = excluded.v_bool,
         v_long = excluded.v_long, v_double = excluded.v_double, v_str = excluded.v_str,
         v_json = excluded.v_json
         WHERE latest.ts <= excluded.ts",
        &[&ids, &ts, &b, &l, &d, &s, &j],
    )
    .await?;
    Ok(())
}
