//! The platform's embedded database: one SQLite file (`platform.db` in the data dir, WAL mode)
//! holding the registry, credentials, attributes, RPCs, users and alarms (telemetry has its own store). One connection behind a mutex: every statement here is a point lookup or a small
//! write, microseconds each, so callers use it directly from async code.

use std::path::Path;

use parking_lot::{Mutex, MutexGuard};
use rusqlite::Connection;

use crate::error::Result;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL,
    retention_days INTEGER);
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, created_ms INTEGER NOT NULL, UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS profiles (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, spec TEXT NOT NULL, provision_key TEXT UNIQUE,
    provision_secret_hash TEXT, created_ms INTEGER NOT NULL, UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL, label TEXT, profile_id TEXT NOT NULL REFERENCES profiles(id),
    customer_id TEXT REFERENCES customers(id) ON DELETE SET NULL,
    gateway INTEGER NOT NULL DEFAULT 0,
    gateway_id TEXT REFERENCES devices(id) ON DELETE SET NULL,
    iccid TEXT, imsi TEXT, msisdn TEXT, created_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS credentials (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    kind TEXT NOT NULL, lookup TEXT, client_id TEXT, username TEXT, secret TEXT,
    expires_ms INTEGER, created_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS credentials_lookup ON credentials (kind, lookup);
CREATE INDEX IF NOT EXISTS credentials_device ON credentials (device_id);
CREATE TABLE IF NOT EXISTS attributes (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    scope INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (device_id, scope, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rpc (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    method TEXT NOT NULL, params TEXT NOT NULL, oneway INTEGER NOT NULL,
    persistent INTEGER NOT NULL, status TEXT NOT NULL, response TEXT,
    created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS rpc_pending ON rpc (device_id, status);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    role TEXT NOT NULL, tenant_id TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    created_ms INTEGER NOT NULL,
    customer_id TEXT REFERENCES customers(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS api_clients (
    id TEXT PRIMARY KEY, client_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    secret_hash TEXT NOT NULL, role TEXT NOT NULL,
    tenant_id TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    customer_id TEXT REFERENCES customers(id) ON DELETE CASCADE, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS auth_sessions (
    id TEXT PRIMARY KEY, user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT REFERENCES api_clients(id) ON DELETE CASCADE,
    created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions (user_id);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES auth_sessions(id) ON DELETE CASCADE,
    used INTEGER NOT NULL DEFAULT 0, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, tenant_id TEXT, actor TEXT NOT NULL,
    actor_kind TEXT NOT NULL, source TEXT NOT NULL, action TEXT NOT NULL, resource TEXT NOT NULL,
    status INTEGER NOT NULL, details TEXT);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts_ms);
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log (tenant_id, id);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    originator_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    type TEXT NOT NULL, severity TEXT NOT NULL,
    cleared INTEGER NOT NULL DEFAULT 0, acknowledged INTEGER NOT NULL DEFAULT 0,
    start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, ack_ms INTEGER, clear_ms INTEGER,
    details TEXT NOT NULL DEFAULT 'null',
    assignee TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
-- One active alarm per originator and type; cleared ones are history.
CREATE UNIQUE INDEX IF NOT EXISTS alarms_active ON alarms (originator_id, type) WHERE cleared = 0;
CREATE INDEX IF NOT EXISTS alarms_tenant ON alarms (tenant_id, id);
CREATE INDEX IF NOT EXISTS alarms_originator ON alarms (originator_id, id);
CREATE TABLE IF NOT EXISTS alarm_comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id INTEGER NOT NULL REFERENCES alarms(id) ON DELETE CASCADE,
    ts_ms INTEGER NOT NULL, author TEXT NOT NULL, text TEXT NOT NULL,
    system INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS alarm_comments_alarm ON alarm_comments (alarm_id, id);
"#;

/// The platform database.
pub struct Db {
    conn: Mutex<Connection>,
    path: std::path::PathBuf,
    /// Bumped by every change of devices, profiles or tenants, and of attributes: readers that
    /// cache them (the rule engine) compare versions instead of asking the database.
    versions: [std::sync::atomic::AtomicU64; 2],
    /// Checkpoints the WAL (file databases only), so that no caller holding the connection's
    /// mutex ever waits for a checkpoint's `fsync` (`wal_autocheckpoint = 0` on it).
    _checkpointer: Option<store::sqlite::checkpoint::Checkpointer>,
}

/// What [`Db::changed`] and [`Db::version`] count.
#[derive(Debug, Clone, Copy)]
pub enum Versioned {
    /// Devices, profiles, tenants.
    Registry = 0,
    /// Attributes of any scope.
    Attributes = 1,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db> {
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        Ok(Db {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            versions: Default::default(),
            _checkpointer: Some(
                store::sqlite::checkpoint::Checkpointer::spawn(
                    path,
                    std::time::Duration::from_millis(500),
                )
                .map_err(|e| crate::CoreError::Store(e.to_string()))?,
            ),
        })
    }

    /// An in-memory database (tests).
    pub fn memory() -> Result<Db> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Db {
            conn: Mutex::new(conn),
            path: std::path::PathBuf::new(),
            versions: Default::default(),
            _checkpointer: None,
        })
    }

    /// The connection, locked.
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// Records a change of `what` (after the write).
    pub fn changed(&self, what: Versioned) {
        self.versions[what as usize].fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The number of changes of `what` so far.
    pub fn version(&self, what: Versioned) -> u64 {
        self.versions[what as usize].load(std::sync::atomic::Ordering::Acquire)
    }

    /// The file, for writers that open their own connection ("" when in memory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A stored setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Stores a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }
}

/// Columns added after a file may have been created.
fn migrate(conn: &Connection) -> Result<()> {
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('tenants') WHERE name = 'retention_days'")?
        .exists([])?;
    if !has {
        conn.execute_batch("ALTER TABLE tenants ADD COLUMN retention_days INTEGER;")?;
    }
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('users') WHERE name = 'customer_id'")?
        .exists([])?;
    if !has {
        conn.execute_batch(
            "ALTER TABLE users ADD COLUMN customer_id TEXT REFERENCES customers(id) ON DELETE CASCADE;",
        )?;
    }
    Ok(())
}

/// A connection with the pragmas every user of the file needs.
pub fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )?;
    Ok(conn)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
