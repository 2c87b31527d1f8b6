//! Ironbridge's platform core: who the devices are and what they say.
//!
//! # Layout
//! - [`Platform`] (this file): the handle transports and the API hold; `device_api`: the
//!   transport-neutral device API (telemetry, attributes, RPC, client RPC) every transport calls.
//! - `accounts`: users, API clients, roles, password policy; `audit`: the audit log.
//! - `rules`: the rule engine (CEL conditions, actions, backtests); `analytics`: anomalies,
//!   forecasts and time to threshold over a series (augurs).
//! - `alarms`: alarms on devices (raise/clear by rules or people, acknowledge, assign,
//!   comments; one active alarm per device and type), announced on the bus.
//! - `db`: the SQLite file; `registry`: tenants, customers, profiles, devices; `credentials`:
//!   tokens, MQTT basic, X.509, rotation; `model`: their types.
//! - `payload`: the JSON payload forms; `attributes`: client/shared/server attributes;
//!   `rpc`: server-side RPC and its states. Telemetry goes to a `store::TelemetryStore`.
//! - `sessions`: live ways down to each device (sinks); `state`: online/offline and activity;
//!   `bus`: accepted device messages as one event type; `traffic`: their counts per tenant.
//! - `gateway`: the gateway API (sub-devices); `provision`: self-provisioning.
//! - `mqtt`: the broker hooks that make MQTT clients devices (auth, tenant namespaces,
//!   topic rights, the `v1/devices/me/...` and `v1/gateway/...` topics).
//!
//! Data flow: transport → authenticate (`auth_*`) → `DeviceCtx` → `post_*` parses (all or
//! nothing), stores, publishes an [`bus::Event`]; platform → device: `Downlink` to every sink of
//! the device in [`sessions::DeviceSessions`].

pub mod accounts;
pub mod alarms;
pub mod analytics;
pub mod attributes;
pub mod audit;
pub mod bus;
pub mod credentials;
pub mod dashboards;
pub mod db;
mod device_api;
pub mod disk;
pub mod error;
pub mod firmware;
pub mod gateway;
pub mod model;
pub mod mqtt;
pub mod payload;
pub mod provision;
pub mod registry;
mod retention;
pub mod rpc;
pub mod rules;
pub mod sessions;
pub mod state;
#[doc(hidden)]
pub mod testing;
pub mod traffic;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attributes::Attributes;
use bus::Bus;
use credentials::Credentials;
use db::Db;
pub use device_api::{DeviceCtx, IngestLimits, SessionLimits};
pub use error::{CoreError, Result};
use registry::Registry;
use rpc::Rpcs;
use sessions::DeviceSessions;
use state::DeviceState;

/// The platform core's services over one database.
pub struct Platform {
    pub db: Arc<Db>,
    pub accounts: accounts::Accounts,
    pub alarms: alarms::Alarms,
    pub dashboards: dashboards::Dashboards,
    pub firmware: firmware::Firmware,
    pub rules: rules::Rules,
    pub audit: audit::Audit,
    pub registry: Registry,
    pub credentials: Credentials,
    pub attributes: Attributes,
    pub telemetry: Arc<dyn store::TelemetryStore>,
    pub rpc: Rpcs,
    pub sessions: Arc<DeviceSessions>,
    pub state: DeviceState,
    pub bus: Bus,
    pub limits: SessionLimits,
    pub ingest: IngestLimits,
    pub disk: disk::DiskGuard,
    /// Accepted messages and points per tenant since start.
    pub traffic: traffic::TenantTraffic,
    retention_every: Duration,
}

/// How the platform is set up.
#[derive(Debug, Clone, Default)]
pub struct PlatformConfig {
    pub session: SessionLimits,
    pub ingest: IngestLimits,
    pub store: store::sqlite::SqliteConfig,
    /// `postgres://...`: telemetry in PostgreSQL instead of the data dir.
    pub store_url: Option<String>,
    pub policy: StoragePolicy,
}

/// A connection URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Disk guard and retention settings.
#[derive(Debug, Clone)]
pub struct StoragePolicy {
    /// The data dir (for the free-space reading).
    pub data_dir: std::path::PathBuf,
    /// New telemetry is refused below this many free bytes (0: never).
    pub min_free_bytes: u64,
    /// Read free space from this file instead of the file system (tests).
    pub free_bytes_file: Option<std::path::PathBuf>,
    /// How often retention runs.
    pub retention_every: Duration,
}

impl Default for StoragePolicy {
    fn default() -> Self {
        StoragePolicy {
            data_dir: std::path::PathBuf::from("."),
            min_free_bytes: 0,
            free_bytes_file: None,
            retention_every: Duration::from_secs(600),
        }
    }
}

impl Platform {
    /// Opens `platform.db` and the telemetry store (`telemetry/`) in the data dir (creating the
    /// `default` tenant on first start).
    pub fn open(data_dir: &Path, config: PlatformConfig) -> Result<Arc<Platform>> {
        let db = Db::open(&data_dir.join("platform.db"))?;
        let store: Arc<dyn store::TelemetryStore> = match &config.store_url {
            Some(url) => Arc::new(
                store::PgStore::open(url, store::PgConfig::default())
                    .map_err(|e| CoreError::Store(format!("PostgreSQL at {}: {e}", redact(url))))?,
            ),
            None => Arc::new(
                store::sqlite::SqliteStore::open(&data_dir.join("telemetry"), config.store.clone())
                    .map_err(|e| CoreError::Store(e.to_string()))?,
            ),
        };
        Platform::with_db(Arc::new(db), store, config)
    }

    /// The platform over an open database and telemetry store.
    pub fn with_db(
        db: Arc<Db>,
        telemetry: Arc<dyn store::TelemetryStore>,
        config: PlatformConfig,
    ) -> Result<Arc<Platform>> {
        let registry = Registry::new(db.clone());
        registry.ensure_default()?;
        let sessions = Arc::new(DeviceSessions::default());
        let bus = Bus::default();
        Ok(Arc::new(Platform {
            accounts: accounts::Accounts::new(db.clone()),
            alarms: alarms::Alarms::new(db.clone(), bus.clone()),
            dashboards: dashboards::Dashboards::new(db.clone())?,
            firmware: firmware::Firmware::open(
                db.clone(),
                &config.policy.data_dir.join("firmware"),
            )?,
            rules: rules::Rules::open(db.clone(), &registry)?,
            audit: audit::Audit::new(db.clone()),
            registry,
            credentials: Credentials::new(db.clone()),
            attributes: Attributes::new(db.clone()),
            telemetry,
            rpc: Rpcs::new(db.clone(), sessions.clone())?,
            sessions,
            state: DeviceState::new(Attributes::new(db.clone()), bus.clone()),
            bus,
            limits: config.session,
            ingest: config.ingest,
            disk: disk::DiskGuard::new(
                config.policy.data_dir.clone(),
                config.policy.min_free_bytes,
                config.policy.free_bytes_file.clone(),
            ),
            traffic: traffic::TenantTraffic::default(),
            retention_every: config.policy.retention_every,
            db,
        }))
    }

    /// Periodic work until `shutdown` changes: RPC expiry, inactivity, activity times.
    pub async fn run_housekeeping(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retention: Option<tokio::time::Instant> = None;
        let mut retention: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            self.disk.check();
            let due = last_retention.is_none_or(|t| t.elapsed() >= self.retention_every);
            if due && retention.as_ref().is_none_or(|h| h.is_finished()) {
                last_retention = Some(tokio::time::Instant::now());
                let p = self.clone();
                retention = Some(tokio::task::spawn_blocking(move || {
                    if let Err(e) = p.apply_retention() {
                        tracing::warn!(error = %e, "telemetry retention failed");
                    }
                }));
            }
            // Database work: off the async workers, so that devices' traffic never waits.
            let p = self.clone();
            let swept = tokio::task::spawn_blocking(move || {
                if let Err(e) = p.rpc.sweep() {
                    tracing::warn!(error = %e, "RPC sweep failed");
                }
                if let Err(e) = p.state.flush() {
                    tracing::warn!(error = %e, "device state flush failed");
                }
            });
            let _ = swept.await;
        }
        let _ = self.state.flush();
    }
}
