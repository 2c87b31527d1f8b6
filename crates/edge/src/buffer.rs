//! Store and forward: every reading is appended to an on-disk queue (`buffer_dir/queue.db`,
//! SQLite in WAL mode) before it is sent, and deleted only once the platform acknowledged it.
//! The queue is bounded by `buffer_max_bytes`: beyond it the **oldest** readings are dropped,
//! counted and logged. A commit is durable against `kill -9` (WAL, `synchronous = NORMAL`),
//! not against power loss.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection};

use crate::connector::Reading;
use crate::error::EdgeError;

/// Bytes counted per row besides its device name and values (ids, timestamp, row overhead).
const ROW_OVERHEAD: i64 = 32;

/// A queued reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub device: String,
    pub ts: i64,
    /// The values object, as JSON text.
    pub values: String,
}

/// Queue size and what was dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BufferStats {
    pub rows: u64,
    pub bytes: u64,
    /// Readings dropped (oldest first) to stay under the limit, since start.
    pub evicted: u64,
}

/// The on-disk queue.
pub struct Buffer {
    inner: Mutex<Inner>,
    max_bytes: u64,
}

struct Inner {
    db: Connection,
    stats: BufferStats,
}

impl Buffer {
    /// Opens (or creates) the queue in `dir`; what a previous run left is kept, in order.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Buffer, EdgeError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EdgeError::Buffer(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("queue.db");
        let db = Connection::open(&path).map_err(|e| db_err(&path, e))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS queue (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 device TEXT NOT NULL,
                 ts INTEGER NOT NULL,
                 vals TEXT NOT NULL,
                 size INTEGER NOT NULL
             );",
        )
        .map_err(|e| db_err(&path, e))?;
        let (rows, bytes): (i64, i64) = db
            .query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM queue",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| db_err(&path, e))?;
        if rows > 0 {
            tracing::info!(
                rows,
                bytes,
                "store and forward: readings from a previous run queued"
            );
        }
        Ok(Buffer {
            inner: Mutex::new(Inner {
                db,
                stats: BufferStats {
                    rows: rows as u64,
                    bytes: bytes as u64,
                    evicted: 0,
                },
            }),
            max_bytes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `readings` in one transaction, then drops the oldest rows while over the limit.
    /// Returns how many were dropped.
    pub fn push(&self, readings: &[Reading]) -> Result<u64, EdgeError> {
        let mut g = self.lock();
        let inner = &mut *g;
        let tx = inner.db.transaction().map_err(err)?;
        let mut added = 0i64;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO queue (device, ts, vals, size) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for r in readings {
                let vals = serde_json::Value::Object(r.values.clone()).to_string();
                let size = (r.device.len() + vals.len()) as i64 + ROW_OVERHEAD;
                ins.execute(params![r.device, r.ts, vals, size])
                    .map_err(err)?;
                added += size;
            }
        }
        let mut stats = inner.stats;
        stats.rows += readings.len() as u64;
        stats.bytes += added as u64;
        let mut dropped = 0u64;
        if stats.bytes > self.max_bytes {
            let excess = (stats.bytes - self.max_bytes) as i64;
            // The oldest rows whose sizes add up to the excess (the cursor stops there).
            let (mut cut, mut n, mut freed) = (0i64, 0i64, 0i64);
            {
                let mut q = tx
                    .prepare_cached("SELECT id, size FROM queue ORDER BY id")
                    .map_err(err)?;
                let mut rows = q.query([]).map_err(err)?;
                while freed < excess {
                    let Some(r) = rows.next().map_err(err)? else {
                        break;
                    };
                    cut = r.get(0).map_err(err)?;
                    freed += r.get::<_, i64>(1).map_err(err)?;
                    n += 1;
                }
            }
            tx.execute("DELETE FROM queue WHERE id <= ?1", [cut])
                .map_err(err)?;
            dropped = n as u64;
            stats.rows -= n as u64;
            stats.bytes -= freed as u64;
            stats.evicted += dropped;
        }
        tx.commit().map_err(err)?;
        inner.stats = stats;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                total_dropped = stats.evicted,
                max_bytes = self.max_bytes,
                "store and forward: buffer full, oldest readings dropped"
            );
        }
        Ok(dropped)
    }

    /// Up to `limit` rows after id `after`, oldest first.
    pub fn read_after(&self, after: i64, limit: usize) -> Result<Vec<Row>, EdgeError> {
        let g = self.lock();
        let mut q =
            g.db.prepare_cached(
                "SELECT id, device, ts, vals FROM queue WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(err)?;
        let rows = q
            .query_map(params![after, limit as i64], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    device: r.get(1)?,
                    ts: r.get(2)?,
                    values: r.get(3)?,
                })
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        Ok(rows)
    }

    /// Deletes rows `first..=last` (the platform acknowledged them).
    pub fn ack(&self, first: i64, last: i64) -> Result<(), EdgeError> {
        let mut g = self.lock();
        let inner = &mut *g;
        let tx = inner.db.transaction().map_err(err)?;
        let (n, freed): (i64, i64) = tx
            .query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM queue WHERE id BETWEEN ?1 AND ?2",
                [first, last],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?;
        tx.execute(
            "DELETE FROM queue WHERE id BETWEEN ?1 AND ?2",
            [first, last],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        inner.stats.rows = inner.stats.rows.saturating_sub(n as u64);
        inner.stats.bytes = inner.stats.bytes.saturating_sub(freed as u64);
        Ok(())
    }

    /// Current size and drops.
    pub fn stats(&self) -> BufferStats {
        self.lock().stats
    }
}

fn err(e: rusqlite::Error) -> EdgeError {
    EdgeError::Buffer(e.to_string())
}

fn db_err(path: &Path, e: rusqlite::Error) -> EdgeError {
    EdgeError::Buffer(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ib-edge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn reading(i: i64) -> Reading {
        let serde_json::Value::Object(values) = json!({"seq": i}) else {
            unreachable!()
        };
        Reading {
            device: "d".into(),
            ts: 1_000 + i,
            values,
        }
    }

    #[test]
    fn queued_in_order_and_kept_until_acknowledged() {
        let d = dir("order");
        let b = Buffer::open(&d, 1 << 20).unwrap();
        b.push(&(0..10).map(reading).collect::<Vec<_>>()).unwrap();
        let rows = b.read_after(0, 4).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.ts).collect::<Vec<_>>(),
            vec![1000, 1001, 1002, 1003]
        );
        b.ack(rows[0].id, rows[3].id).unwrap();
        assert_eq!(b.stats().rows, 6);
        drop(b);
        // A restart (or kill -9) keeps what was not acknowledged.
        let b = Buffer::open(&d, 1 << 20).unwrap();
        let rows = b.read_after(0, 100).unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[0].ts, 1004);
        assert_eq!(rows[0].values, r#"{"seq":4}"#);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_oldest_are_dropped_beyond_the_limit_and_counted() {
        let d = dir("evict");
        let one = {
            let b = Buffer::open(&d, u64::MAX).unwrap();
            b.push(&[reading(0)]).unwrap();
            b.stats().bytes
        };
        let _ = std::fs::remove_dir_all(&d);
        let b = Buffer::open(&d, one * 5).unwrap();
        for i in 0..8 {
            b.push(&[reading(i)]).unwrap();
        }
        let s = b.stats();
        assert_eq!((s.rows, s.evicted), (5, 3), "{s:?}");
        assert!(s.bytes <= one * 5);
        let rows = b.read_after(0, 100).unwrap();
        assert_eq!(rows.first().unwrap().ts, 1003);
        assert_eq!(rows.last().unwrap().ts, 1007);
        let _ = std::fs::remove_dir_all(&d);
    }
}
