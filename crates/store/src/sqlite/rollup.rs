//! Rollups: per series, per minute and per hour, the count, sum, min and max of its numeric
//! points, kept in the partition file beside the chunks and maintained when chunks are
//! written (sealing, deletes). Aggregates over long ranges read them instead of every point.
//!
//! A new chunk that overlaps nothing already sealed (the usual case: data arrives in order)
//! adds its buckets to the stored ones. One that overlaps sealed points (a timestamp sent
//! again, a seal replayed after a crash) makes the whole hours it touches be recomputed from
//! the chunks, last write winning, so rollups always equal the raw data.

use rusqlite::{params, Transaction};

use super::SeriesId;
use crate::chunk::{self, Kind};
use crate::{Result, StoreError, Value};

/// Bucket widths kept, in ms.
pub const WIDTHS: [i64; 2] = [60_000, 3_600_000];
const HOUR: i64 = 3_600_000;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollups (
    width INTEGER NOT NULL, series INTEGER NOT NULL, bucket INTEGER NOT NULL,
    cnt INTEGER NOT NULL, n INTEGER NOT NULL, sum REAL NOT NULL, min REAL, max REAL,
    PRIMARY KEY (width, series, bucket)) WITHOUT ROWID;
";

/// One bucket's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Points, numeric or not.
    pub cnt: u64,
    /// Numeric points.
    pub n: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Bucket {
    fn add(&mut self, v: Option<f64>) {
        self.cnt += 1;
        if let Some(v) = v {
            if self.n == 0 {
                self.min = v;
                self.max = v;
            } else {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
            self.n += 1;
            self.sum += v;
        }
    }

    /// Merges another bucket of distinct points into this one.
    pub fn merge(&mut self, o: &Bucket) {
        if o.n > 0 {
            if self.n == 0 {
                self.min = o.min;
                self.max = o.max;
            } else {
                self.min = self.min.min(o.min);
                self.max = self.max.max(o.max);
            }
        }
        self.cnt += o.cnt;
        self.n += o.n;
        self.sum += o.sum;
    }
}

const EMPTY: Bucket = Bucket {
    cnt: 0,
    n: 0,
    sum: 0.0,
    min: 0.0,
    max: 0.0,
};

/// Buckets of `width` over time-sorted points.
fn buckets(points: &[(i64, Value)], width: i64) -> Vec<(i64, Bucket)> {
    let mut out: Vec<(i64, Bucket)> = Vec::new();
    for (ts, v) in points {
        let b = ts.div_euclid(width) * width;
        match out.last_mut() {
            Some((lb, acc)) if *lb == b => acc.add(v.as_f64()),
            _ => {
                let mut acc = EMPTY;
                acc.add(v.as_f64());
                out.push((b, acc));
            }
        }
    }
    out
}

/// Whether sealed chunks of `series` overlap `[t_min, t_max]` (to call before inserting a new
/// chunk there).
pub fn overlaps(tx: &Transaction, series: SeriesId, t_min: i64, t_max: i64) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM chunks WHERE series = ?1 AND t_max >= ?2 AND t_min <= ?3 LIMIT 1",
        )?
        .exists(params![series, t_min, t_max])?)
}

/// Adds the buckets of a new chunk that overlaps nothing sealed.
pub fn add(tx: &Transaction, series: SeriesId, points: &[(i64, Value)]) -> Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO rollups (width, series, bucket, cnt, n, sum, min, max)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (width, series, bucket) DO UPDATE SET
           cnt = cnt + excluded.cnt, n = n + excluded.n, sum = sum + excluded.sum,
           min = CASE WHEN excluded.n = 0 THEN min WHEN n = 0 THEN excluded.min
                      ELSE min(min, excluded.min) END,
           max = CASE WHEN excluded.n = 0 THEN max WHEN n = 0 THEN excluded.max
                      ELSE max(max, excluded.max) END",
    )?;
    for width in WIDTHS {
        for (b, acc) in buckets(points, width) {
            let (min, max) = if acc.n > 0 {
                (Some(acc.min), Some(acc.max))
            } else {
                (None, None)
            };
            st.execute(params![
                width,
                series,
                b,
                acc.cnt as i64,
                acc.n as i64,
                acc.sum,
                min,
                max
            ])?;
        }
    }
    Ok(())
}

/// Recomputes the series' buckets of every hour that `[lo, hi]` touches, from the chunks now
/// in the file (call after they were written or rewritten).
pub fn recompute(tx: &Transaction, series: SeriesId, lo: i64, hi: i64) -> Result<()> {
    let (start, end) = (
        lo.div_euclid(HOUR) * HOUR,
        (hi.div_euclid(HOUR) + 1) * HOUR - 1,
    );
    let mut points: Vec<(i64, Value)> = Vec::new();
    {
        let mut st = tx.prepare_cached(
            "SELECT kind, ts, vals FROM chunks WHERE series = ?1 AND t_max >= ?2 AND t_min <= ?3 ORDER BY rowid",
        )?;
        let mut rows = st.query(params![series, start, end])?;
        while let Some(r) = rows.next()? {
            let kind: i64 = r.get(0)?;
            let ts = r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            let vals = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            let decoded = Kind::from_i64(kind)
                .and_then(|k| chunk::decode(k, ts, vals))
                .ok_or_else(|| StoreError::Corrupt(format!("a chunk of series {series}")))?;
            points.extend(decoded.into_iter().filter(|p| p.0 >= start && p.0 <= end));
        }
    }
    // Later chunks win for a timestamp written twice.
    let unique = super::last_write_wins(points);
    tx.prepare_cached("DELETE FROM rollups WHERE series = ?1 AND bucket >= ?2 AND bucket <= ?3")?
        .execute(params![series, start, end])?;
    add(tx, series, &unique)
}

/// The series' stored buckets of `width` in `[from, to)`.
pub fn read(
    conn: &rusqlite::Connection,
    series: SeriesId,
    width: i64,
    from: i64,
    to: i64,
    out: &mut Vec<(i64, Bucket)>,
) -> Result<()> {
    let mut st = conn.prepare_cached(
        "SELECT bucket, cnt, n, sum, min, max FROM rollups
         WHERE width = ?1 AND series = ?2 AND bucket >= ?3 AND bucket < ?4 ORDER BY bucket",
    )?;
    let rows = st.query_map(params![width, series, from, to], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            Bucket {
                cnt: r.get::<_, i64>(1)? as u64,
                n: r.get::<_, i64>(2)? as u64,
                sum: r.get(3)?,
                min: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
                max: r.get::<_, Option<f64>>(5)?.unwrap_or(0.0),
            },
        ))
    })?;
    for row in rows {
        out.push(row?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_all_and_aggregate_numbers() {
        let points = vec![
            (0, Value::Long(1)),
            (59_999, Value::Double(3.0)),
            (60_000, Value::Str("x".into())),
            (61_000, Value::Bool(true)),
        ];
        let b = buckets(&points, 60_000);
        assert_eq!(b.len(), 2);
        assert_eq!(
            b[0].1,
            Bucket {
                cnt: 2,
                n: 2,
                sum: 4.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(
            b[1].1,
            Bucket {
                cnt: 2,
                n: 1,
                sum: 1.0,
                min: 1.0,
                max: 1.0
            }
        );
        let mut m = b[0].1;
        m.merge(&b[1].1);
        assert_eq!(
            m,
            Bucket {
                cnt: 4,
                n: 3,
                sum: 5.0,
                min: 1.0,
                max: 3.0
            }
        );
    }
}
