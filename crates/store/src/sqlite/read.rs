//! Queries: latest values from memory; ranges from the sealed chunks of the days they cover
//! merged with the head (a timestamp written twice shows its last value).

use rusqlite::{params, Connection};

use super::{partition, rollup, GroupId, SeriesId, Shared};
use crate::chunk::{self, Kind};
use crate::{Result, Sample, Series, StoreError, Value};

/// Latest values of a device's keys (`None`: every key it has).
pub fn latest(
    shared: &Shared,
    device: &str,
    keys: Option<&[String]>,
) -> Result<Vec<(String, Sample)>> {
    let series = shared.series.read();
    let ids: Vec<(String, SeriesId)> = match keys {
        Some(keys) => keys
            .iter()
            .filter_map(|k| Some((k.clone(), series.get(device, k)?)))
            .collect(),
        None => {
            let mut all: Vec<(String, SeriesId)> = series
                .by_device
                .get(device)
                .map(|d| d.ids.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(|id| Some((series.keys.get(*id as usize)?.to_string(), *id)))
                .collect();
            all.sort();
            all
        }
    };
    drop(series);
    let latest = shared.latest.read();
    Ok(ids
        .into_iter()
        .filter_map(|(k, id)| {
            let (ts, value) = latest.get(id as usize)?.clone()?;
            Some((k, Sample { ts, value }))
        })
        .collect())
}

/// Runs `f` with the read connection of a group's day file.
fn with_day<T>(
    shared: &Shared,
    g: GroupId,
    day: i64,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let mut readers = shared.readers.lock();
    let conn = match readers.entry((g, day)) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let conn = Connection::open_with_flags(
                partition::path(&shared.dir, g, day),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            v.insert(conn)
        }
    };
    f(conn)
}

/// A series' sealed points in `[from, to]` in write order.
fn sealed(
    shared: &Shared,
    s: SeriesId,
    from: i64,
    to: i64,
    out: &mut Vec<(i64, Value)>,
) -> Result<()> {
    let g = shared.series.read().group(s);
    let days: Vec<i64> = shared
        .days
        .read()
        .range((g, partition::day_of(from))..=(g, partition::day_of(to)))
        .map(|(_, d)| *d)
        .collect();
    for day in days {
        with_day(shared, g, day, |conn| {
            let mut st = conn.prepare_cached(
                "SELECT kind, ts, vals FROM chunks WHERE series = ?1 AND t_max >= ?2 AND t_min <= ?3 ORDER BY rowid",
            )?;
            let mut rows = st.query(params![s, from, to])?;
            while let Some(r) = rows.next()? {
                let kind: i64 = r.get(0)?;
                let ts = r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                let vals = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
                let points = Kind::from_i64(kind)
                    .and_then(|k| chunk::decode(k, ts, vals))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("a chunk of series {s} on day {day}"))
                    })?;
                out.extend(points.into_iter().filter(|p| p.0 >= from && p.0 <= to));
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Raw points per key.
pub fn range(
    shared: &Shared,
    device: &str,
    keys: &[String],
    from: i64,
    to: i64,
    limit: usize,
    desc: bool,
) -> Result<Series> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(s) = shared.series.read().get(device, key) else {
            out.push((key.clone(), Vec::new()));
            continue;
        };
        // Unsealed points are taken before the chunks are read: a seal finishing in between
        // then shows points twice (dropped below), never not at all. Older first: chunks,
        // the head being sealed, the live head.
        let unsealed: Vec<(i64, Value)> = {
            let head = shared.head.read();
            let frozen = shared.frozen.read();
            let in_range = |p: &&(i64, Value)| p.0 >= from && p.0 <= to;
            let older = frozen.as_ref().map(|f| f.of(s)).unwrap_or_default();
            older
                .iter()
                .filter(in_range)
                .chain(head.of(s).iter().filter(in_range))
                .cloned()
                .collect()
        };
        let mut points = Vec::new();
        sealed(shared, s, from, to, &mut points)?;
        points.extend(unsealed);
        let mut samples: Vec<Sample> = super::last_write_wins(points)
            .into_iter()
            .map(|(ts, value)| Sample { ts, value })
            .collect();
        if desc {
            samples.reverse();
        }
        samples.truncate(limit);
        out.push((key.clone(), samples));
    }
    Ok(out)
}

/// The newest sealed point of a series, newest day first.
pub fn newest_sealed(shared: &Shared, s: SeriesId) -> Result<Option<(i64, Value)>> {
    let g = shared.series.read().group(s);
    let days: Vec<i64> = shared
        .days
        .read()
        .iter()
        .rev()
        .filter(|(pg, _)| *pg == g)
        .map(|(_, d)| *d)
        .collect();
    for day in days {
        let mut points = Vec::new();
        let (lo, hi) = (day * partition::DAY_MS, (day + 1) * partition::DAY_MS - 1);
        sealed(shared, s, lo, hi, &mut points)?;
        if let Some(p) = points.into_iter().max_by_key(|p| p.0) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// `agg` over `interval` from `from`. Intervals that are whole minutes (hours) from a whole
/// minute (hour) read the sealed part from the rollups; the rest, and whatever is not sealed
/// yet, from the points. The two parts meet on an interval boundary, so no interval mixes them.
pub fn aggregate(
    shared: &Shared,
    device: &str,
    keys: &[String],
    from: i64,
    to: i64,
    interval: i64,
    agg: crate::Agg,
) -> Result<crate::Aggregated> {
    let interval = interval.max(1);
    let width = rollup::WIDTHS
        .iter()
        .rev()
        .copied()
        .find(|w| interval % w == 0 && from.rem_euclid(*w) == 0);
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let series = shared.series.read().get(device, key);
        let (Some(s), Some(width)) = (series, width) else {
            let raw = range(
                shared,
                device,
                std::slice::from_ref(key),
                from,
                to,
                usize::MAX,
                false,
            )?;
            out.push((
                key.clone(),
                crate::aggregate_samples(&raw[0].1, from, interval, agg),
            ));
            continue;
        };
        let aligned = |t: i64| from + (t - from).div_euclid(interval) * interval;
        // The earliest point not sealed yet: from there on, read points.
        let unsealed_min = {
            let head = shared.head.read();
            let frozen = shared.frozen.read();
            let older = frozen.as_ref().map(|f| f.of(s)).unwrap_or_default();
            older.iter().chain(head.of(s)).map(|p| p.0).min()
        };
        let end = to.saturating_add(1);
        let mut cut = aligned(end).max(from);
        if let Some(t) = unsealed_min.filter(|t| *t < end) {
            cut = cut.min(aligned(t.max(from)));
        }
        let mut buckets: Vec<(i64, rollup::Bucket)> = Vec::new();
        if cut > from {
            let g = shared.series.read().group(s);
            let days: Vec<i64> = shared
                .days
                .read()
                .range((g, partition::day_of(from))..=(g, partition::day_of(cut - 1)))
                .map(|(_, d)| *d)
                .collect();
            let mut rows = Vec::new();
            for day in days {
                with_day(shared, g, day, |conn| {
                    rollup::read(conn, s, width, from, cut, &mut rows)
                })?;
            }
            for (b, r) in rows {
                let at = aligned(b);
                match buckets.last_mut() {
                    Some((lb, acc)) if *lb == at => acc.merge(&r),
                    _ => buckets.push((at, r)),
                }
            }
        }
        let mut series_out: Vec<(i64, f64)> = buckets
            .into_iter()
            .filter_map(|(b, r)| {
                let v = match agg {
                    crate::Agg::Count => return Some((b, r.cnt as f64)),
                    _ if r.n == 0 => return None,
                    crate::Agg::Avg => r.sum / r.n as f64,
                    crate::Agg::Sum => r.sum,
                    crate::Agg::Min => r.min,
                    crate::Agg::Max => r.max,
                };
                Some((b, v))
            })
            .collect();
        if cut <= to {
            let raw = range(
                shared,
                device,
                std::slice::from_ref(key),
                cut,
                to,
                usize::MAX,
                false,
            )?;
            series_out.extend(crate::aggregate_samples(&raw[0].1, from, interval, agg));
        }
        out.push((key.clone(), series_out));
    }
    Ok(out)
}
