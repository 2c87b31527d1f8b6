//! The SQLite backend. Files in `DATA_DIR/telemetry/`: `index.db` (series ids, the ingest log,
//! latest values) and one `YYYY-MM-DD.db` per day of sealed chunks.
//!
//! - `writer`: the one writer thread (group commit of the ingest log, sealing, deletes).
//! - `seal`: head → compressed chunks in day files, then the ingest log is trimmed.
//! - `read`: queries merging sealed chunks with the head.
//! - `partition`: day numbers, file names.

pub mod checkpoint;
mod partition;
mod read;
mod rollup;
mod seal;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;

use crate::{Agg, Commit, Point, Result, Sample, Series, StoreError, TelemetryStore, Value};

/// Backend settings.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Seal the head at least this often.
    pub seal_every: Duration,
    /// Seal once the head holds this many points.
    pub seal_points: usize,
    /// `synchronous = FULL` (fsync every commit) instead of NORMAL (durable across process
    /// crashes, not power loss).
    pub fsync: bool,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            seal_every: Duration::from_secs(60),
            seal_points: 2_000_000,
            fsync: false,
        }
    }
}

pub(crate) type SeriesId = u32;
/// A retention group's id (its partitions are in `gN/`).
pub(crate) type GroupId = u32;

/// A fast hasher for in-memory maps.
pub(crate) type Fast = ahash::RandomState;

/// One device's series.
#[derive(Default)]
pub(crate) struct DeviceSeries {
    pub keys: HashMap<Box<str>, SeriesId, Fast>,
    pub ids: Vec<SeriesId>,
}

/// Series ids by device and key, and back, and retention groups. Ids are dense (0, 1, 2,
/// ...), so per-series state lives in vectors indexed by id.
#[derive(Default)]
pub(crate) struct SeriesMap {
    pub by_device: HashMap<Arc<str>, DeviceSeries, Fast>,
    /// Key name by id.
    pub keys: Vec<Arc<str>>,
    /// Retention group by series id.
    pub group_of: Vec<GroupId>,
    pub next: SeriesId,
    /// Group names by id, and back.
    pub groups: Vec<Arc<str>>,
    pub group_ids: HashMap<Arc<str>, GroupId, Fast>,
}

impl SeriesMap {
    pub fn insert(&mut self, id: SeriesId, device: Arc<str>, key: Arc<str>, group: GroupId) {
        let d = self.by_device.entry(device).or_default();
        d.keys.insert(Box::from(&*key), id);
        d.ids.push(id);
        let i = id as usize;
        if self.keys.len() <= i {
            self.keys.resize(i + 1, Arc::from(""));
            self.group_of.resize(i + 1, 0);
        }
        self.keys[i] = key;
        self.group_of[i] = group;
        self.next = self.next.max(id + 1);
    }

    pub fn add_group(&mut self, id: GroupId, name: Arc<str>) {
        let i = id as usize;
        if self.groups.len() <= i {
            self.groups.resize(i + 1, Arc::from(""));
        }
        self.groups[i] = name.clone();
        self.group_ids.insert(name, id);
    }

    pub fn group(&self, s: SeriesId) -> GroupId {
        self.group_of.get(s as usize).copied().unwrap_or(0)
    }

    pub fn get(&self, device: &str, key: &str) -> Option<SeriesId> {
        self.by_device.get(device)?.keys.get(key).copied()
    }
}

/// Recent points not yet sealed, per series (indexed by id), in write order.
#[derive(Default)]
pub(crate) struct Head {
    pub points: Vec<Vec<(i64, Value)>>,
    /// Series that have points.
    pub active: Vec<SeriesId>,
    pub total: usize,
}

impl Head {
    /// A series' unsealed points.
    pub fn of(&self, s: SeriesId) -> &[(i64, Value)] {
        self.points.get(s as usize).map_or(&[], Vec::as_slice)
    }
}

/// Sorts points by time (a stable sort: equal timestamps stay in write order) and keeps, for
/// each timestamp, the last value written. Every read and write of points goes through this.
pub(crate) fn last_write_wins(mut points: Vec<(i64, Value)>) -> Vec<(i64, Value)> {
    points.sort_by_key(|p| p.0);
    // `dedup_by` drops the later of two equal neighbours: swap first so its value stays.
    points.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    points
}

/// Latest values, indexed by series id.
pub(crate) type Latest = Vec<Option<(i64, Value)>>;

/// What the writer thread and the readers share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub config: SqliteConfig,
    pub series: RwLock<SeriesMap>,
    pub head: RwLock<Head>,
    /// The head being sealed (by the sealer thread); readers see it until its chunks are in.
    /// Lock order: `head`, then `frozen`.
    pub frozen: RwLock<Option<Arc<Head>>>,
    pub latest: RwLock<Latest>,
    /// (group, day) partitions that have a file.
    pub days: RwLock<BTreeSet<(GroupId, i64)>>,
    /// Read connections per partition file.
    pub readers: Mutex<HashMap<(GroupId, i64), Connection>>,
    pub closed: AtomicBool,
}

/// A request to the writer thread.
pub(crate) enum Req {
    Write {
        device: Arc<str>,
        group: Arc<str>,
        points: Vec<Point>,
        done: tokio::sync::oneshot::Sender<Result<()>>,
    },
    Seal(mpsc::Sender<Result<()>>),
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
    Close(mpsc::Sender<Result<()>>),
}

/// The SQLite telemetry store.
pub struct SqliteStore {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Req>>>,
    /// Checkpoints `index.db` so that the writer never does (see checkpoint.rs).
    _checkpointer: checkpoint::Checkpointer,
}

impl SqliteStore {
    /// Opens (creating) the store in `dir`, replaying its ingest log.
    pub fn open(dir: &Path, config: SqliteConfig) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir)?;
        let mut days = BTreeSet::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(g) = entry.file_name().to_str().and_then(partition::group_of_dir) else {
                continue;
            };
            for file in std::fs::read_dir(entry.path())? {
                if let Some(day) = file?.file_name().to_str().and_then(partition::day_of_file) {
                    days.insert((g, day));
                }
            }
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            series: RwLock::new(SeriesMap::default()),
            head: RwLock::new(Head::default()),
            frozen: RwLock::new(None),
            latest: RwLock::new(Vec::new()),
            days: RwLock::new(days),
            readers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let conn = writer::open_index(&shared)?;
        let checkpointer = checkpoint::Checkpointer::spawn(
            &shared.dir.join("index.db"),
            std::time::Duration::from_millis(500),
        )?;
        let (tx, rx) = mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("telemetry-writer".into())
            .spawn(move || writer::run(s, conn, rx))?;
        Ok(SqliteStore {
            shared,
            tx: Mutex::new(Some(tx)),
            _checkpointer: checkpointer,
        })
    }

    fn send(&self, req: Req) -> bool {
        match &*self.tx.lock() {
            Some(tx) => tx.send(req).is_ok(),
            None => false,
        }
    }

    fn call(&self, make: impl FnOnce(mpsc::Sender<Result<()>>) -> Req) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        if !self.send(make(tx)) {
            return Err(StoreError::Closed);
        }
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }
}

impl TelemetryStore for SqliteStore {
    fn write(&self, device: &str, group: &str, points: Vec<Point>) -> Commit {
        if self.shared.closed.load(Ordering::Acquire) {
            return Commit::failed(StoreError::Closed);
        }
        let (done, commit) = Commit::pending();
        if !self.send(Req::Write {
            device: Arc::from(device),
            group: Arc::from(group),
            points,
            done,
        }) {
            return Commit::failed(StoreError::Closed);
        }
        commit
    }

    fn latest(&self, device: &str, keys: Option<&[String]>) -> Result<Vec<(String, Sample)>> {
        read::latest(&self.shared, device, keys)
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
        read::range(&self.shared, device, keys, from, to, limit, desc)
    }

    fn aggregate(
        &self,
        device: &str,
        keys: &[String],
        from: i64,
        to: i64,
        interval: i64,
        agg: Agg,
    ) -> Result<crate::Aggregated> {
        read::aggregate(&self.shared, device, keys, from, to, interval, agg)
    }

    fn delete(&self, device: &str, from: i64, to: i64) -> Result<()> {
        self.call(|done| Req::Delete {
            device: Arc::from(device),
            from,
            to,
            done,
        })
    }

    fn seal(&self) -> Result<()> {
        self.call(Req::Seal)
    }

    fn drop_before(&self, group: &str, before: i64) -> Result<u64> {
        let (tx, rx) = mpsc::channel();
        let req = Req::Drop {
            group: Arc::from(group),
            before,
            done: tx,
        };
        if !self.send(req) {
            return Err(StoreError::Closed);
        }
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    fn usage(&self) -> Result<Vec<(String, u64)>> {
        let groups: Vec<(GroupId, Arc<str>)> = {
            let s = self.shared.series.read();
            s.groups
                .iter()
                .enumerate()
                .map(|(i, n)| (i as GroupId, n.clone()))
                .collect()
        };
        Ok(groups
            .into_iter()
            .map(|(g, name)| {
                (
                    name.to_string(),
                    dir_bytes(&partition::group_dir(&self.shared.dir, g)),
                )
            })
            .collect())
    }

    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.shared.dir)
    }

    fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.call(Req::Close) {
            tracing::warn!(error = %e, "closing the telemetry store");
        }
        self.tx.lock().take();
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Bytes of the files in a directory and its subdirectories (`-shm` files, SQLite's
/// shared-memory index of a WAL, are not data).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) if !e.file_name().to_string_lossy().ends_with("-shm") => m.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests;
