//! Telemetry retention: for every tenant's profiles, the days to keep (the profile's, else the
//! tenant's) become a `drop_before` on the profile's retention group in the store, which
//! drops whole partitions. Also reports disk use per tenant as a metric.

use std::collections::HashMap;

use crate::db::now_ms;
use crate::device_api::retention_group;
use crate::error::{CoreError, Result};
use crate::Platform;

const DAY_MS: i64 = 86_400_000;

impl Platform {
    /// One retention pass; returns the bytes freed. Blocking (store calls): run it on a
    /// blocking thread.
    pub fn apply_retention(&self) -> Result<u64> {
        let now = now_ms();
        let mut freed = 0;
        for t in self.registry.tenants()? {
            for p in self.registry.profiles(&t.id)? {
                let Some(days) = p.spec.retention_days.or(t.retention_days) else {
                    continue;
                };
                let before = now - i64::from(days) * DAY_MS;
                freed += self
                    .telemetry
                    .drop_before(&retention_group(&t.id, &p.id), before)
                    .map_err(|e| CoreError::Store(e.to_string()))?;
            }
        }
        if freed > 0 {
            tracing::info!(freed, "telemetry retention applied");
        }
        for (tenant, bytes) in self.usage_by_tenant()? {
            metrics::gauge!("telemetry_disk_bytes", "tenant" => tenant).set(bytes as f64);
        }
        Ok(freed)
    }

    /// Telemetry bytes on disk per tenant id.
    pub fn usage_by_tenant(&self) -> Result<HashMap<String, u64>> {
        let usage = self
            .telemetry
            .usage()
            .map_err(|e| CoreError::Store(e.to_string()))?;
        let mut out: HashMap<String, u64> = HashMap::new();
        for (group, bytes) in usage {
            let tenant = group.split_once('/').map_or(group.as_str(), |(t, _)| t);
            *out.entry(tenant.to_string()).or_default() += bytes;
        }
        Ok(out)
    }
}
