//! The PostgreSQL backend (scale-out): the same [`TelemetryStore`] over a PostgreSQL server.
//!
//! # Threads
//! The trait is synchronous; [`PgStore`] runs its own small tokio runtime (`PgConfig::threads`
//! workers) started from a background thread. Reads are futures spawned on it, the caller
//! blocking on a std channel for the answer (so callers use `spawn_blocking` or plain threads,
//! as with the SQLite backend). `write` never blocks: it queues the points for the writer task
//! and returns a pending [`Commit`].
//!
//! # Group commit (`writer`, `batch`)
//! Each writer task (`PgConfig::writers`, 2 by default: devices are spread over them by a hash
//! of their name, so one device's writes stay in order while the server works on two cores)
//! takes every write waiting in its channel (up to `max_batch_points`) into one transaction.
//! The points are deduplicated per (series, ts), keeping the last one written, and sent with
//! binary COPY straight into their day partitions under a savepoint; only if that meets a
//! timestamp already stored (a unique violation: a device re-sending) do they go again
//! through a temporary staging table and `INSERT ... ON CONFLICT DO UPDATE` (measured: the
//! direct COPY takes ~25% more points/s). The newest point of each series goes into `latest`
//! in the same transaction (an UPDATE joined with the batch; INSERT for new series). After
//! COMMIT (`synchronous_commit` as the server has it, on by default) the commits resolve.
//! A batch that fails on a partition dropped meanwhile, a deadlock or a serialization failure
//! is tried once more on a fresh connection; one the server refuses for its data (SQLSTATE
//! classes 22, 23) is committed write by write, so that one bad write fails alone. A device's
//! deletes go through its writer, so they are ordered with its writes; retention goes through
//! the first writer.
//!
//! # Schema (`schema`)
//! `groups(id, name)`, `series(id, device, key, grp)`, `latest(series, ts, v_*)` and
//! `points(series, grp, ts, v_bool, v_long, v_double, v_str, v_json)`, one typed column set
//! per value kind (the others NULL, which costs a bit in the row's null bitmap only).
//! `points` is partitioned by LIST (grp) into one table per retention group,
//! `points_g{N}`, itself partitioned by RANGE (ts) into one table per UTC day,
//! `points_g{N}_d{DAY}` (days since the epoch). One parent over all groups keeps queries plain
//! SQL (the planner prunes to the group and the days asked); per-group sub-parents make
//! retention a `DROP TABLE` of a group's old days, and `usage` a sum over a group's children.
//! The primary key `(series, ts, grp)` (the partition keys must be in it) is the index that
//! ranges read. Partitions are created on demand before the COPY, in their own transaction
//! (`CREATE TABLE IF NOT EXISTS`), and remembered by the writer.
//!
//! JSON values are kept as text (`v_json`), exactly as written, like the SQLite backend.
//!
//! - `schema`: DDL, partition names, values to and from columns.
//! - `writer`: the writer task (its loop, deletes, retention); `batch`: group commit.
//! - `runtime`: the runtime's background thread; `config`: settings; `series`: the series
//!   cache.
//! - `read`: latest values (the `latest` table), ranges (binary `COPY ... TO STDOUT` parsed in
//!   place), aggregates (computed by the server), sizes.

mod batch;
mod config;
mod read;
mod runtime;
mod schema;
mod series;
mod writer;

pub use config::PgConfig;
pub(crate) use series::{SeriesRef, Shared};

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;
use tokio::sync::mpsc as tmpsc;

use crate::{Agg, Aggregated, Commit, Point, Result, Sample, Series, StoreError, TelemetryStore};

/// A request to the writer task.
pub(crate) enum Req {
    Write {
        device: Arc<str>,
        group: Arc<str>,
        points: Vec<Point>,
        done: tokio::sync::oneshot::Sender<Result<()>>,
    },
    Delete {
        device: Arc<str>,
        from: i64,
        to: i64,
        done: mpsc::Sender<Result<()>>,
    },
    Drop {
        group: Arc<str>,
        before: i64,
        done: mpsc::Sender<Result<u64>>,
    },
    /// Answered once every write queued before it is committed.
    Flush(mpsc::Sender<Result<()>>),
    /// Like `Flush`, then the task ends.
    Close(mpsc::Sender<Result<()>>),
}

/// The PostgreSQL telemetry store.
pub struct PgStore {
    handle: tokio::runtime::Handle,
    pool: deadpool_postgres::Pool,
    shared: Arc<Shared>,
    /// The writers' queues.
    tx: Mutex<Option<Vec<tmpsc::UnboundedSender<Req>>>>,
    closed: AtomicBool,
    runtime: Mutex<Option<runtime::Runtime>>,
    schema: Option<String>,
}

/// A PostgreSQL error as a store error (reads: the server is a remote disk).
pub(crate) fn pg_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres(e.to_string())
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`, no TLS), creating the schema and
    /// tables if missing. Blocks: call it from a plain thread or `spawn_blocking`.
    pub fn open(url: &str, config: PgConfig) -> Result<PgStore> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(pg_err)?;
        // NOTICEs ("already exists, skipping") are not worth a log line each.
        let mut options = "-c client_min_messages=warning".to_string();
        if let Some(s) = &config.schema {
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(pg_err(format!("invalid schema name {s:?}")));
            }
            options.push_str(&format!(" -c search_path={s}"));
        }
        if let Some(o) = pg.get_options() {
            options = format!("{o} {options}");
        }
        pg.options(options);
        if pg.get_application_name().is_none() {
            pg.application_name("ironbridge-store");
        }
        let manager = deadpool_postgres::Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(config.pool_size.max(config.writers.max(1) + 1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(pg_err)?;
        let runtime = runtime::start(config.threads)?;
        let handle = runtime.handle.clone();
        let setup = {
            let pool = pool.clone();
            let schema = config.schema.clone();
            runtime::block_on(&handle, async move {
                let client = pool.get().await.map_err(pg_err)?;
                schema::create(&client, schema.as_deref()).await
            })
        };
        if let Err(e) = setup {
            runtime.stop();
            return Err(e);
        }
        let config_schema = config.schema.clone();
        let shared = Arc::new(Shared::default());
        let tx: Vec<_> = (0..config.writers.max(1))
            .map(|_| {
                let (tx, rx) = tmpsc::unbounded_channel();
                handle.spawn(writer::run(
                    pool.clone(),
                    shared.clone(),
                    config.clone(),
                    rx,
                ));
                tx
            })
            .collect();
        Ok(PgStore {
            handle,
            pool,
            shared,
            tx: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            runtime: Mutex::new(Some(runtime)),
            schema: config_schema,
        })
    }

    /// The writer of a device (FNV-1a of its name).
    fn shard(&self, device: &str) -> usize {
        let h = device.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let n = self.tx.lock().as_ref().map_or(1, Vec::len) as u64;
        (h % n.max(1)) as usize
    }

    fn send(&self, shard: usize, req: Req) -> bool {
        match self.tx.lock().as_ref().and_then(|t| t.get(shard)) {
            Some(tx) => tx.send(req).is_ok(),
            None => false,
        }
    }

    fn call<T>(
        &self,
        shard: usize,
        make: impl FnOnce(mpsc::Sender<Result<T>>) -> Req,
    ) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        if !self.send(shard, make(tx)) {
            return Err(StoreError::Closed);
        }
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Asks every writer at once and waits for all of them.
    fn call_all(&self, make: impl Fn(mpsc::Sender<Result<()>>) -> Req) -> Result<()> {
        let n = self.tx.lock().as_ref().map_or(0, Vec::len);
        let waits: Vec<_> = (0..n)
            .map(|i| {
                let (tx, rx) = mpsc::channel();
                self.send(i, make(tx)).then_some(rx)
            })
            .collect();
        if waits.is_empty() {
            return Err(StoreError::Closed);
        }
        let mut result = Ok(());
        for w in waits {
            let r = match w {
                Some(rx) => rx.recv().unwrap_or(Err(StoreError::Closed)),
                None => Err(StoreError::Closed),
            };
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        runtime::block_on(&self.handle, f)
    }

    /// Closes the store and drops its schema with everything in it (benchmarks and tests;
    /// only a store opened with `PgConfig::schema`).
    pub fn drop_schema(&self) -> Result<()> {
        let Some(schema) = self.schema.clone() else {
            return Err(pg_err("no schema of its own to drop"));
        };
        self.close();
        let pool = self.pool.clone();
        self.read(async move {
            let client = pool.get().await.map_err(pg_err)?;
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
                .map_err(pg_err)
        })
    }

    /// Stops at once, as a crash of this process would: the runtime goes down with whatever
    /// batch is in flight (the server rolls it back); commits not yet resolved fail. Reads and
    /// writes fail afterwards. For durability tests.
    #[doc(hidden)]
    pub fn abort(&self) {
        self.closed.store(true, Ordering::Release);
        self.tx.lock().take();
        if let Some(rt) = self.runtime.lock().take() {
            rt.stop();
        }
    }
}

impl TelemetryStore for PgStore {
    fn write(&self, device: &str, group: &str, points: Vec<Point>) -> Commit {
        if self.closed.load(Ordering::Acquire) {
            return Commit::failed(StoreError::Closed);
        }
        // PostgreSQL text cannot hold NUL: refuse the write alone rather than fail the batch.
        if points.iter().any(|p| {
            p.key.contains('\0')
                || matches!(&p.value, crate::Value::Str(s) | crate::Value::Json(s) if s.contains('\0'))
        }) || device.contains('\0')
            || group.contains('\0')
        {
            return Commit::failed(StoreError::Write("NUL character in text".into()));
        }
        let (done, commit) = Commit::pending();
        if !self.send(
            self.shard(device),
            Req::Write {
                device: Arc::from(device),
                group: Arc::from(group),
                points,
                done,
            },
        ) {
            return Commit::failed(StoreError::Closed);
        }
        commit
    }

    fn latest(&self, device: &str, keys: Option<&[String]>) -> Result<Vec<(String, Sample)>> {
        let (pool, device, keys) = (
            self.pool.clone(),
            device.to_string(),
            keys.map(<[_]>::to_vec),
        );
        self.read(async move { read::latest(&pool, &device, keys.as_deref()).await })
    }

    fn range(
        &self,
        device: &str,
        keys: &[String],
        from: i64,
        to: i64,
        limit: usize,
        desc: bool,
    ) -> Result<Series> {
        let (pool, shared) = (self.pool.clone(), self.shared.clone());
        let (device, keys) = (device.to_string(), keys.to_vec());
        self.read(async move {
            read::range(&pool, &shared, &device, &keys, from, to, limit, desc).await
        })
    }

    fn aggregate(
        &self,
        device: &str,
        keys: &[String],
        from: i64,
        to: i64,
        interval: i64,
        agg: Agg,
    ) -> Result<Aggregated> {
        let (pool, shared) = (self.pool.clone(), self.shared.clone());
        let (device, keys) = (device.to_string(), keys.to_vec());
        self.read(async move {
            read::aggregate(&pool, &shared, &device, &keys, from, to, interval, agg).await
        })
    }

    fn delete(&self, device: &str, from: i64, to: i64) -> Result<()> {
        self.call(self.shard(device), |done| Req::Delete {
            device: Arc::from(device),
            from,
            to,
            done,
        })
    }

    fn drop_before(&self, group: &str, before: i64) -> Result<u64> {
        // One writer drops; the others find out when a partition they knew of is gone.
        self.call(0, |done| Req::Drop {
            group: Arc::from(group),
            before,
            done,
        })
    }

    fn usage(&self) -> Result<Vec<(String, u64)>> {
        let pool = self.pool.clone();
        self.read(async move { read::usage(&pool).await })
    }

    /// Nothing to seal: waits until every write queued so far is committed.
    fn seal(&self) -> Result<()> {
        self.call_all(Req::Flush)
    }

    fn disk_bytes(&self) -> u64 {
        let pool = self.pool.clone();
        self.read(async move { read::disk_bytes(&pool).await })
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "telemetry disk use");
                0
            })
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.call_all(Req::Close) {
            tracing::warn!(error = %e, "closing the telemetry store");
        }
        self.tx.lock().take();
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
        if let Some(rt) = self.runtime.lock().take() {
            rt.stop();
        }
    }
}
