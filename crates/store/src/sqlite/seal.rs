//! Sealing: the head's points, per series and day, become compressed chunks in the day files;
//! then the ingest log is emptied and the latest values saved. A crash between the two replays
//! the log into the head again, and queries drop the duplicate timestamps.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{params, Connection};

use super::{partition, rollup, GroupId, Head, SeriesId, Shared};
use crate::chunk::{self, Kind};
use crate::{Result, Value};

/// One series' points.
type SeriesPoints = (SeriesId, Vec<(i64, Value)>);

/// Seals a frozen head (taken out of the live one by the writer, still visible to readers as
/// `Shared::frozen`), then trims the ingest log up to `upto` and lets go of the frozen head.
pub fn seal(shared: &Shared, conn: &mut Connection, head: &Head, upto: i64) -> Result<()> {
    let started = std::time::Instant::now();
    let mut by_day: BTreeMap<(GroupId, i64), Vec<SeriesPoints>> = BTreeMap::new();
    let group_of = shared.series.read().group_of.clone();
    let total = {
        for &series in &head.active {
            let g = group_of.get(series as usize).copied().unwrap_or(0);
            let sorted = super::last_write_wins(head.of(series).to_vec());
            let mut start = 0;
            while start < sorted.len() {
                let day = partition::day_of(sorted[start].0);
                let end =
                    start + sorted[start..].partition_point(|p| partition::day_of(p.0) == day);
                by_day
                    .entry((g, day))
                    .or_default()
                    .push((series, sorted[start..end].to_vec()));
                start = end;
            }
        }
        head.total
    };
    if total == 0 {
        *shared.frozen.write() = None;
        return Ok(());
    }
    for ((g, day), series) in by_day {
        let mut part = partition::open(&shared.dir, g, day, shared.config.fsync)?;
        let tx = part.transaction()?;
        for (s, points) in &series {
            write_chunk(&tx, *s, points)?;
        }
        tx.commit()?;
        // Fold the WAL into the file now: disk use is what the chunks take.
        part.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        shared.days.write().insert((g, day));
    }
    save_latest(shared, conn)?;
    conn.execute("DELETE FROM ingest WHERE seq <= ?1", [upto])?;
    // The ingest log's pages go back to the file system, not only to SQLite's free list:
    // incremental_vacuum frees a page per step, then the checkpoint shrinks the file.
    {
        let mut st = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = st.query([])?;
        while rows.next()?.is_some() {}
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    *shared.frozen.write() = None;
    metrics::counter!("telemetry_points_sealed_total").increment(total as u64);
    tracing::debug!(points = total, elapsed = ?started.elapsed(), "telemetry sealed");
    Ok(())
}

/// Writes one series' points (sorted by time, one value per timestamp) as a chunk and keeps
/// its rollups right.
fn write_chunk(
    tx: &rusqlite::Transaction,
    series: SeriesId,
    unique: &[(i64, Value)],
) -> Result<()> {
    let (t_min, t_max) = (unique[0].0, unique[unique.len() - 1].0);
    let overlap = rollup::overlaps(tx, series, t_min, t_max)?;
    insert_chunk(tx, series, unique)?;
    if overlap {
        rollup::recompute(tx, series, t_min, t_max)
    } else {
        rollup::add(tx, series, unique)
    }
}

/// Inserts a chunk of distinct, time-sorted points (rollups are the caller's business).
fn insert_chunk(
    tx: &rusqlite::Transaction,
    series: SeriesId,
    unique: &[(i64, Value)],
) -> Result<()> {
    let e = chunk::encode(unique);
    let (t_min, t_max) = (unique[0].0, unique[unique.len() - 1].0);
    let mut st = tx.prepare_cached(
        "INSERT INTO chunks (series, t_min, t_max, n, kind, ts, vals) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    st.execute(params![
        series,
        t_min,
        t_max,
        unique.len() as i64,
        e.kind as i64,
        e.ts,
        e.values
    ])?;
    Ok(())
}

fn save_latest(shared: &Shared, conn: &mut Connection) -> Result<()> {
    let latest: Vec<(SeriesId, i64, Vec<u8>)> = shared
        .latest
        .read()
        .iter()
        .enumerate()
        .filter_map(|(s, l)| {
            let (ts, v) = l.as_ref()?;
            let mut b = Vec::new();
            v.encode(&mut b);
            Some((s as SeriesId, *ts, b))
        })
        .collect();
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare_cached(
            "INSERT INTO latest (series, ts, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (series) DO UPDATE SET ts = excluded.ts, value = excluded.value",
        )?;
        for (s, ts, b) in latest {
            st.execute(params![s, ts, b])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Deletes a device's points in `[from, to]` from the sealed chunks (the head was just sealed)
/// and recomputes its latest values.
pub fn delete(
    shared: &Shared,
    conn: &mut Connection,
    device: &Arc<str>,
    from: i64,
    to: i64,
) -> Result<()> {
    let ids: Vec<SeriesId> = shared
        .series
        .read()
        .by_device
        .get(device)
        .map(|d| d.ids.clone())
        .unwrap_or_default();
    if ids.is_empty() {
        return Ok(());
    }
    let groups: Vec<GroupId> = {
        let s = shared.series.read();
        let mut g: Vec<GroupId> = ids.iter().map(|id| s.group(*id)).collect();
        g.sort_unstable();
        g.dedup();
        g
    };
    let days: Vec<(GroupId, i64)> = shared
        .days
        .read()
        .iter()
        .copied()
        .filter(|(g, d)| {
            let (lo, hi) = (d * partition::DAY_MS, (d + 1) * partition::DAY_MS - 1);
            groups.contains(g) && hi >= from && lo <= to
        })
        .collect();
    for (g, day) in days {
        let mut part = partition::open(&shared.dir, g, day, shared.config.fsync)?;
        let tx = part.transaction()?;
        for s in &ids {
            let rows: Vec<(i64, i64, Vec<u8>, Vec<u8>)> = {
                let mut st = tx.prepare_cached(
                    "SELECT rowid, kind, ts, vals FROM chunks WHERE series = ?1 AND t_max >= ?2 AND t_min <= ?3",
                )?;
                let rows = st.query_map(params![s, from, to], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let rewritten = !rows.is_empty();
            for (rowid, kind, ts, vals) in rows {
                let points = Kind::from_i64(kind)
                    .and_then(|k| chunk::decode(k, &ts, &vals))
                    .ok_or_else(|| {
                        crate::StoreError::Corrupt(format!("chunk {rowid} of day {day}"))
                    })?;
                let kept: Vec<(i64, Value)> = points
                    .into_iter()
                    .filter(|p| p.0 < from || p.0 > to)
                    .collect();
                tx.execute("DELETE FROM chunks WHERE rowid = ?1", [rowid])?;
                if !kept.is_empty() {
                    insert_chunk(&tx, *s, &kept)?;
                }
            }
            if rewritten {
                let (lo, hi) = (day * partition::DAY_MS, (day + 1) * partition::DAY_MS - 1);
                rollup::recompute(&tx, *s, from.max(lo), to.min(hi))?;
            }
        }
        tx.commit()?;
    }
    // Latest values: the newest point left, searching the newest days first.
    for s in &ids {
        let newest = super::read::newest_sealed(shared, *s)?;
        let mut latest = shared.latest.write();
        if let Some(slot) = latest.get_mut(*s as usize) {
            *slot = None;
        }
        match newest {
            Some((ts, v)) => super::writer::set_latest(&mut latest, *s, ts, v),
            None => {
                conn.execute("DELETE FROM latest WHERE series = ?1", [s])?;
            }
        }
    }
    save_latest(shared, conn)
}

/// Retention: deletes the group's partition files whose day ended before `before`, and its
/// unsealed points older than that. Runs on the writer thread with no seal in flight.
pub fn drop_before(shared: &Shared, group: &str, before: i64) -> Result<u64> {
    let Some(g) = shared.series.read().group_ids.get(group).copied() else {
        return Ok(0);
    };
    let old: Vec<(GroupId, i64)> = shared
        .days
        .read()
        .iter()
        .copied()
        .filter(|(pg, d)| *pg == g && (d + 1) * partition::DAY_MS <= before)
        .collect();
    let mut freed = 0u64;
    for (pg, day) in old {
        shared.readers.lock().remove(&(pg, day));
        shared.days.write().remove(&(pg, day));
        let path = partition::path(&shared.dir, pg, day);
        for suffix in ["", "-wal", "-shm"] {
            let f = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if let Ok(m) = std::fs::metadata(&f) {
                freed += m.len();
                std::fs::remove_file(&f)?;
            }
        }
        tracing::info!(group, date = %partition::date_of(day), "telemetry partition dropped (retention)");
        metrics::counter!("telemetry_partitions_dropped_total").increment(1);
    }
    // Unsealed points past the horizon would otherwise bring an old partition back.
    let group_of = shared.series.read().group_of.clone();
    let mut head = shared.head.write();
    let active = head.active.clone();
    let mut dropped = 0;
    for s in active {
        if group_of.get(s as usize) == Some(&g) {
            if let Some(points) = head.points.get_mut(s as usize) {
                let n = points.len();
                points.retain(|p| p.0 >= before);
                dropped += n - points.len();
            }
        }
    }
    head.total -= dropped;
    Ok(freed)
}
