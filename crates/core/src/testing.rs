//! A throw-away platform for tests and fuzz targets in other crates: an in-memory database and
//! a telemetry store in a temporary directory removed on drop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::db::Db;
use crate::{Platform, PlatformConfig};

/// A platform that cleans up after itself.
pub struct TestPlatform {
    pub platform: Arc<Platform>,
    dir: PathBuf,
}

impl TestPlatform {
    /// A fresh platform (default tenant and profile, no devices).
    pub fn new() -> TestPlatform {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ib-test-platform-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let db = Arc::new(Db::memory().expect("in-memory database"));
        let mut config = PlatformConfig::default();
        config.policy.data_dir = dir.clone();
        let store =
            store::sqlite::SqliteStore::open(&dir, config.store.clone()).expect("telemetry store");
        let platform = Platform::with_db(db, Arc::new(store), config).expect("platform");
        TestPlatform { platform, dir }
    }
}

impl Default for TestPlatform {
    fn default() -> Self {
        TestPlatform::new()
    }
}

impl Drop for TestPlatform {
    fn drop(&mut self) {
        self.platform.telemetry.close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
