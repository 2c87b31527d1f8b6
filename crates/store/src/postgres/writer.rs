//! The writer task: one request after the other on one connection, so that deletes and
//! retention stay in order with the writes; writes waiting together form one batch (`batch`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::types::ToSql;

use super::batch::{Failure, Write};
use super::schema::{self, DAY_MS, VALUE_COLS};
use super::{pg_err, PgConfig, Req, Shared};
use crate::{Result, StoreError};

/// The writer task's state.
pub(super) struct Writer {
    pub pool: Pool,
    pub shared: Arc<Shared>,
    pub config: PgConfig,
    /// The writer's connection (its temporary staging table lives there).
    pub client: Option<Object>,
    /// Group ids by name.
    pub groups: HashMap<Arc<str>, i32>,
    /// (group, day) partitions known to exist.
    pub parts: HashSet<(i32, i64)>,
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
    pub(super) async fn client(&mut self) -> std::result::Result<Object, Failure> {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                return Ok(c);
            }
        }
        let c = self.pool.get().await?;
        c.batch_execute(STAGING).await?;
        Ok(c)
    }

    /// Keeps the connection for the next request, unless the last one failed on it: a
    /// statement that fails before its COPY starts (a partition dropped meanwhile) leaves a
    /// tokio-postgres connection unusable, so it is closed and a fresh one taken next time.
    pub(super) fn keep(&mut self, client: Object, ok: bool) {
        if ok && !client.is_closed() {
            self.client = Some(client);
        } else {
            drop(Object::take(client));
        }
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
        self.keep(client, r.is_ok());
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
        self.keep(client, r.is_ok());
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
