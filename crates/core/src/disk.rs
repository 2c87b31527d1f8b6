//! The disk guard: when free space in the data dir falls below the configured threshold, new
//! telemetry is refused (MQTT 5 PUBACK 0x97, HTTP 507, CoAP 5.03; 3.1.1 clients are
//! disconnected so that they send it again later) while everything else, reads included, goes
//! on. It resumes by itself once space returns. The reading comes from `statvfs`, or from a
//! file holding a number of bytes when one is configured (to test the guard without filling a
//! disk).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Free-space watch over the data dir.
pub struct DiskGuard {
    dir: PathBuf,
    min_free: u64,
    probe: Option<PathBuf>,
    full: AtomicBool,
    free: AtomicU64,
}

impl DiskGuard {
    /// A guard refusing writes below `min_free` bytes free in `dir` (0: never).
    pub fn new(dir: PathBuf, min_free: u64, probe: Option<PathBuf>) -> DiskGuard {
        DiskGuard {
            dir,
            min_free,
            probe,
            full: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether writes are refused now.
    pub fn full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Bytes free at the last check.
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// Reads the free space and updates the state; logs and counts each change.
    pub fn check(&self) {
        if self.min_free == 0 {
            return;
        }
        let Some(free) = self.read_free() else {
            return;
        };
        self.free.store(free, Ordering::Relaxed);
        metrics::gauge!("data_dir_free_bytes").set(free as f64);
        let full = free < self.min_free;
        if self.full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::error!(
                    free,
                    min_free = self.min_free,
                    "disk nearly full: refusing new telemetry"
                );
                metrics::counter!("disk_guard_trips_total").increment(1);
            } else {
                tracing::info!(free, "disk space is back: accepting telemetry again");
            }
        }
        metrics::gauge!("disk_guard_refusing").set(if full { 1.0 } else { 0.0 });
    }

    fn read_free(&self) -> Option<u64> {
        if let Some(probe) = &self.probe {
            return std::fs::read_to_string(probe).ok()?.trim().parse().ok();
        }
        statvfs_free(&self.dir)
    }
}

/// Bytes available to an unprivileged user on the file system holding `dir`.
fn statvfs_free(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `buf` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut buf) };
    (rc == 0).then_some(buf.f_bavail.saturating_mul(buf.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_and_recovers_on_the_probe_reading() {
        let probe = std::env::temp_dir().join(format!("ib-disk-probe-{}", std::process::id()));
        std::fs::write(&probe, "5000").unwrap();
        let g = DiskGuard::new(std::env::temp_dir(), 10_000, Some(probe.clone()));
        g.check();
        assert!(g.full());
        std::fs::write(&probe, "20000").unwrap();
        g.check();
        assert!(!g.full());
        let _ = std::fs::remove_file(probe);
    }

    #[test]
    fn statvfs_reads_something() {
        assert!(statvfs_free(&std::env::temp_dir()).is_some_and(|b| b > 0));
    }
}
