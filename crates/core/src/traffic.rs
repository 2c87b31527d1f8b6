//! Per-tenant traffic since start: accepted device messages and telemetry points, counted in
//! memory where telemetry is stored (the overview's message rate reads it; not persisted).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::db::now_ms;

/// One tenant's (or all tenants') counts since `since`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCount {
    /// Accepted telemetry messages.
    pub messages: u64,
    /// Telemetry points in them.
    pub points: u64,
}

/// Counters of accepted device messages and points, by tenant id.
#[derive(Debug)]
pub struct TenantTraffic {
    counts: Mutex<HashMap<Arc<str>, TrafficCount>>,
    since: i64,
}

impl Default for TenantTraffic {
    fn default() -> Self {
        TenantTraffic {
            counts: Mutex::default(),
            since: now_ms(),
        }
    }
}

impl TenantTraffic {
    /// Counts one accepted message of `points` points for `tenant`.
    pub fn record(&self, tenant: &Arc<str>, points: usize) {
        let mut counts = self.counts.lock();
        let c = match counts.get_mut(tenant) {
            Some(c) => c,
            None => counts.entry(tenant.clone()).or_default(),
        };
        c.messages += 1;
        c.points += points as u64;
    }

    /// A tenant's counts (zeros when it has sent nothing).
    pub fn tenant(&self, tenant: &str) -> TrafficCount {
        self.counts.lock().get(tenant).copied().unwrap_or_default()
    }

    /// The sum over all tenants.
    pub fn total(&self) -> TrafficCount {
        self.counts
            .lock()
            .values()
            .fold(TrafficCount::default(), |a, c| TrafficCount {
                messages: a.messages + c.messages,
                points: a.points + c.points,
            })
    }

    /// When counting started (ms since the epoch): the counters start at zero with the process.
    pub fn since(&self) -> i64 {
        self.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_tenant_and_in_total() {
        let t = TenantTraffic::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        t.record(&a, 3);
        t.record(&a, 2);
        t.record(&b, 1);
        assert_eq!(
            t.tenant("a"),
            TrafficCount {
                messages: 2,
                points: 5
            }
        );
        assert_eq!(
            t.tenant("b"),
            TrafficCount {
                messages: 1,
                points: 1
            }
        );
        assert_eq!(t.tenant("c"), TrafficCount::default());
        assert_eq!(
            t.total(),
            TrafficCount {
                messages: 3,
                points: 6
            }
        );
        assert!(t.since() <= now_ms());
    }
}
