//! Queries on a pooled connection: latest values from the `latest` table, ranges by the
//! `(series, ts, grp)` index (the planner prunes to the group's days asked), aggregates
//! computed by the server (only the buckets travel), sizes from `pg_total_relation_size`.

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::ToSql;

use futures_util::StreamExt;

use super::schema::{copy_samples, value_at, VALUE_COLS};
use super::{pg_err, SeriesRef, Shared};
use crate::{Agg, Aggregated, Result, Sample, Series};

async fn client(pool: &Pool) -> Result<Object> {
    pool.get().await.map_err(pg_err)
}

/// Latest values of a device's keys (`None`: every key it has, by name).
pub async fn latest(
    pool: &Pool,
    device: &str,
    keys: Option<&[String]>,
) -> Result<Vec<(String, Sample)>> {
    let client = client(pool).await?;
    let base = format!(
        "SELECT s.key, l.ts, {VALUE_COLS} FROM series s JOIN latest l ON l.series = s.id
         WHERE s.device = $1"
    );
    let rows = match keys {
        None => {
            let st = client
                .prepare_cached(&format!("{base} ORDER BY s.key"))
                .await
                .map_err(pg_err)?;
            client.query(&st, &[&device]).await
        }
        Some(keys) => {
            let st = client
                .prepare_cached(&format!("{base} AND s.key = ANY($2)"))
                .await
                .map_err(pg_err)?;
            client.query(&st, &[&device, &keys]).await
        }
    }
    .map_err(pg_err)?;
    let mut found = Vec::with_capacity(rows.len());
    for r in &rows {
        let sample = Sample {
            ts: r.get(1),
            value: value_at(r, 2)?,
        };
        found.push((r.get::<_, String>(0), sample));
    }
    Ok(match keys {
        None => found,
        // In the order asked.
        Some(keys) => keys
            .iter()
            .filter_map(|k| found.iter().find(|(fk, _)| fk == k).cloned())
            .collect(),
    })
}

/// The series of a device's keys (`None`: never written), from the cache or the server.
async fn series_of(
    client: &Object,
    shared: &Shared,
    device: &str,
    keys: &[String],
) -> Result<Vec<Option<SeriesRef>>> {
    let missing: Vec<&str> = keys
        .iter()
        .filter(|k| shared.get(device, k).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let st = client
            .prepare_cached("SELECT key, id, grp FROM series WHERE device = $1 AND key = ANY($2)")
            .await
            .map_err(pg_err)?;
        for r in client
            .query(&st, &[&device, &missing])
            .await
            .map_err(pg_err)?
        {
            let s = SeriesRef {
                id: r.get(1),
                grp: r.get(2),
            };
            shared.insert(device, r.get(0), s);
        }
    }
    Ok(keys.iter().map(|k| shared.get(device, k)).collect())
}

/// Raw points per key, oldest first (newest first with `desc`), at most `limit` per key.
#[allow(clippy::too_many_arguments)]
pub async fn range(
    pool: &Pool,
    shared: &Shared,
    device: &str,
    keys: &[String],
    from: i64,
    to: i64,
    limit: usize,
    desc: bool,
) -> Result<Series> {
    let client = client(pool).await?;
    let series = series_of(&client, shared, device, keys).await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut out = Vec::with_capacity(keys.len());
    for (key, s) in keys.iter().zip(series) {
        let mut samples = Vec::new();
        if let Some(s) = s {
            // Binary COPY: one stream parsed in place (a day of 1 Hz points is 86,400 rows;
            // row objects would cost more than the query). COPY takes no parameters: every
            // value here is an integer.
            let sql = format!(
                "COPY (SELECT ts, {VALUE_COLS} FROM points WHERE grp = {} AND series = {}
                 AND ts BETWEEN {from} AND {to} ORDER BY ts {} LIMIT {limit})
                 TO STDOUT (FORMAT binary)",
                s.grp,
                s.id,
                if desc { "DESC" } else { "ASC" }
            );
            let stream = client.copy_out(sql.as_str()).await.map_err(pg_err)?;
            tokio::pin!(stream);
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk.map_err(pg_err)?);
            }
            samples = copy_samples(&buf)?;
        }
        out.push((key.clone(), samples));
    }
    Ok(out)
}

/// `agg` per `interval` from `from`, computed by the server with the semantics of
/// [`crate::aggregate_samples`]: numbers and booleans (0/1) count; text counts for `Count`
/// only; intervals without a point are left out.
#[allow(clippy::too_many_arguments)]
pub async fn aggregate(
    pool: &Pool,
    shared: &Shared,
    device: &str,
    keys: &[String],
    from: i64,
    to: i64,
    interval: i64,
    agg: Agg,
) -> Result<Aggregated> {
    let client = client(pool).await?;
    let series = series_of(&client, shared, device, keys).await?;
    let st = client
        .prepare_cached(
            "SELECT $3 + ((ts - $3) / $5) * $5 AS b, count(*), count(x), sum(x), min(x), max(x)
             FROM (SELECT ts, coalesce(v_double, v_long::float8, v_bool::int4::float8) AS x
                   FROM points WHERE grp = $1 AND series = $2 AND ts BETWEEN $3 AND $4) p
             GROUP BY 1 ORDER BY 1",
        )
        .await
        .map_err(pg_err)?;
    let interval = interval.max(1);
    let mut out = Vec::with_capacity(keys.len());
    for (key, s) in keys.iter().zip(series) {
        let mut buckets = Vec::new();
        if let Some(s) = s {
            let p: [&(dyn ToSql + Sync); 5] = [&s.grp, &s.id, &from, &to, &interval];
            for r in client.query(&st, &p).await.map_err(pg_err)? {
                let (b, all, n): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
                let v = match agg {
                    Agg::Count => all as f64,
                    _ if n == 0 => continue,
                    Agg::Avg => r.get::<_, f64>(3) / n as f64,
                    Agg::Sum => r.get(3),
                    Agg::Min => r.get(4),
                    Agg::Max => r.get(5),
                };
                buckets.push((b, v));
            }
        }
        out.push((key.clone(), buckets));
    }
    Ok(out)
}

/// Bytes per retention group: its day partitions with their indexes.
pub async fn usage(pool: &Pool) -> Result<Vec<(String, u64)>> {
    let client = client(pool).await?;
    let rows = client
        .query(
            "SELECT g.name, coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8
             FROM groups g
             LEFT JOIN pg_inherits i ON i.inhparent = to_regclass('points_g' || g.id)
             LEFT JOIN pg_class c ON c.oid = i.inhrelid
             GROUP BY g.id, g.name ORDER BY g.id",
            &[],
        )
        .await
        .map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
        .collect())
}

/// Bytes of every table of the store's schema (indexes and TOAST included; WAL not).
pub async fn disk_bytes(pool: &Pool) -> Result<u64> {
    let client = client(pool).await?;
    let row = client
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            &[],
        )
        .await
        .map_err(pg_err)?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}
