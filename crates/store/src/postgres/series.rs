//! Series known to this process: (device, key) to (series id, retention group), filled by
//! the writers and by reads, never invalidated (series rows are never deleted).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// A series as stored: its id and retention group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeriesRef {
    pub id: i32,
    pub grp: i32,
}

pub(crate) type Fast = ahash::RandomState;

/// A device's series by key.
pub(crate) type DeviceSeries = HashMap<Box<str>, SeriesRef, Fast>;

/// Series known to this process, by device and key (series are never deleted, so entries
/// never go stale).
#[derive(Default)]
pub(crate) struct Shared {
    pub series: RwLock<HashMap<Arc<str>, DeviceSeries, Fast>>,
}

impl Shared {
    pub fn get(&self, device: &str, key: &str) -> Option<SeriesRef> {
        self.series.read().get(device)?.get(key).copied()
    }

    pub fn insert(&self, device: &str, key: &str, s: SeriesRef) {
        let mut m = self.series.write();
        match m.get_mut(device) {
            Some(d) => {
                d.insert(Box::from(key), s);
            }
            None => {
                let mut d = HashMap::default();
                d.insert(Box::from(key), s);
                m.insert(Arc::from(device), d);
            }
        }
    }
}
