//! Telemetry storage: durable, fast, bounded.
//!
//! # Layout
//! - [`TelemetryStore`] (this file): what the platform needs from a store; [`Commit`]: the
//!   promise a write is on disk (a device is acknowledged only after it resolves).
//! - `value`: typed values and their binary form; `chunk`: sealed, compressed series chunks.
//! - [`sqlite`]: the embedded backend (the default): an ingest log written by one thread with
//!   group commit, an in-memory head of recent points, a sealer thread writing pco-compressed
//!   chunks and minute/hour rollups into one file per retention group and day.
//! - [`postgres`]: the scale-out backend: binary COPY with group commit into tables partitioned
//!   by retention group and day.
//!
//! Data flow (SQLite): `write` → channel → writer thread: one transaction for every waiting
//! batch (ingest log row + new series) → head and latest values in memory → commits resolved.
//! Every so often (time or head size) the head is frozen and sealed on the sealer thread: per
//! series and day, a chunk in `telemetry/gN/YYYY-MM-DD.db`, then the ingest log is trimmed.
//! Queries merge sealed chunks with the frozen and live heads; a restart replays the ingest log.

mod chunk;
pub mod postgres;
pub mod sqlite;
pub mod value;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use postgres::{PgConfig, PgStore};
use tokio::sync::oneshot;
pub use value::Value;

/// One point to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: String,
    pub ts: i64,
    pub value: Value,
}

/// A stored value at a time (serialises as `{"ts":MS,"value":V}`, the API's shape).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    pub ts: i64,
    pub value: Value,
}

/// An aggregation over fixed intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
}

impl Agg {
    /// Parses `avg|min|max|sum|count`.
    pub fn parse(s: &str) -> Option<Agg> {
        Some(match s {
            "avg" | "AVG" => Agg::Avg,
            "min" | "MIN" => Agg::Min,
            "max" | "MAX" => Agg::Max,
            "sum" | "SUM" => Agg::Sum,
            "count" | "COUNT" => Agg::Count,
            _ => return None,
        })
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store is closed")]
    Closed,
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("write failed: {0}")]
    Write(String),
    /// The PostgreSQL backend's server or pool failed.
    #[error("postgres: {0}")]
    Postgres(String),
}

/// Result shorthand.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Resolves once a write is committed (or failed).
pub struct Commit(oneshot::Receiver<Result<()>>);

impl Commit {
    /// A commit that already failed.
    pub fn failed(e: StoreError) -> Commit {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(e));
        Commit(rx)
    }

    /// A pending commit and the sender that resolves it.
    pub fn pending() -> (oneshot::Sender<Result<()>>, Commit) {
        let (tx, rx) = oneshot::channel();
        (tx, Commit(rx))
    }

    /// Waits for the commit from a thread that is not async.
    pub fn wait(self) -> Result<()> {
        self.0.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }
}

impl Future for Commit {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Aggregates of several keys: `(key, [(interval start, value)])`.
pub type Aggregated = Vec<(String, Vec<(i64, f64)>)>;

/// Values of several keys: `(key, samples)` in the order the keys were asked.
pub type Series = Vec<(String, Vec<Sample>)>;

/// `{"key":[{"ts","value"},...],...}` straight from samples (no intermediate JSON values: a
/// day of 1 Hz data is 86,400 of them).
pub fn series_json(series: &Series) -> Vec<u8> {
    use serde::ser::SerializeMap;
    struct AsMap<'a>(&'a Series);
    impl serde::Serialize for AsMap<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, samples) in self.0 {
                m.serialize_entry(k, samples)?;
            }
            m.end()
        }
    }
    serde_json::to_vec(&AsMap(series)).expect("samples serialise")
}

/// What the platform needs from a telemetry store.
pub trait TelemetryStore: Send + Sync {
    /// Stores one device's points (all or nothing); resolves once durable. `group` is the
    /// retention group the device's series belong to (the platform uses tenant and profile):
    /// partitions hold one group's points, so that retention drops whole partitions.
    fn write(&self, device: &str, group: &str, points: Vec<Point>) -> Commit;

    /// Resolves once every write of `device` made before this call is durable and readable: a
    /// barrier (the rule engine's window functions must see the points before an event). An
    /// empty write, which every backend orders after the device's earlier writes.
    fn barrier(&self, device: &str) -> Commit {
        self.write(device, "", Vec::new())
    }

    /// The latest value of each key (`None`: all keys of the device).
    fn latest(&self, device: &str, keys: Option<&[String]>) -> Result<Vec<(String, Sample)>>;

    /// Raw points in `[from, to]`, oldest first (newest first with `desc`), at most `limit`
    /// per key. A timestamp written twice holds the last value written.
    fn range(
        &self,
        device: &str,
        keys: &[String],
        from: i64,
        to: i64,
        limit: usize,
        desc: bool,
    ) -> Result<Series>;

    /// `agg` over intervals of `interval` ms from `from` (numeric values; booleans as 0/1):
    /// `(key, [(interval start, value)])` for intervals that hold points.
    fn aggregate(
        &self,
        device: &str,
        keys: &[String],
        from: i64,
        to: i64,
        interval: i64,
        agg: Agg,
    ) -> Result<Aggregated>;

    /// Deletes a device's points in `[from, to]` (all of them with `i64::MIN..=i64::MAX`).
    fn delete(&self, device: &str, from: i64, to: i64) -> Result<()>;

    /// Drops the partitions of `group` that hold only points older than `before` (retention:
    /// whole partitions, never row by row), and unsealed points of the group older than it;
    /// returns the bytes freed.
    fn drop_before(&self, group: &str, before: i64) -> Result<u64>;

    /// Bytes on disk per retention group.
    fn usage(&self) -> Result<Vec<(String, u64)>>;

    /// Seals everything written so far (tests, benchmarks, shutdown).
    fn seal(&self) -> Result<()>;

    /// Bytes on disk.
    fn disk_bytes(&self) -> u64;

    /// Seals what is pending and stops; later writes fail with `Closed`.
    fn close(&self);
}

/// Buckets `(ts, value)` points (sorted by time) into `agg` over `interval` from `from`.
pub fn aggregate_samples(
    samples: &[Sample],
    from: i64,
    interval: i64,
    agg: Agg,
) -> Vec<(i64, f64)> {
    let interval = interval.max(1);
    let mut out: Vec<(i64, f64)> = Vec::new();
    let mut acc: Option<(i64, f64, f64, f64, u64)> = None; // bucket, sum, min, max, count
    let finish = |a: (i64, f64, f64, f64, u64)| {
        let (bucket, sum, min, max, n) = a;
        let v = match agg {
            Agg::Avg => sum / n as f64,
            Agg::Min => min,
            Agg::Max => max,
            Agg::Sum => sum,
            Agg::Count => n as f64,
        };
        (bucket, v)
    };
    for s in samples {
        let v = match s.value.as_f64() {
            Some(v) => v,
            None if agg == Agg::Count => 0.0,
            None => continue,
        };
        let bucket = from + (s.ts - from).div_euclid(interval) * interval;
        match &mut acc {
            Some(a) if a.0 == bucket => {
                a.1 += v;
                a.2 = a.2.min(v);
                a.3 = a.3.max(v);
                a.4 += 1;
            }
            _ => {
                if let Some(a) = acc.take() {
                    out.push(finish(a));
                }
                acc = Some((bucket, v, v, v, 1));
            }
        }
    }
    if let Some(a) = acc {
        out.push(finish(a));
    }
    out
}
