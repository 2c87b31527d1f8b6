//! WAL checkpoints off the write path. A connection that commits also runs SQLite's automatic
//! checkpoint (every 1,000 pages), with its `fsync`, while the writer waits: every commit
//! queued behind it waits too, tens of milliseconds on an ordinary disk. Files opened with
//! `wal_autocheckpoint = 0` are checkpointed here instead, from a connection of their own, in
//! PASSIVE mode (never blocks a writer; the WAL restarts from its beginning once fully copied).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use crate::{Result, StoreError};

/// A thread checkpointing one database file until dropped (then once more, truncating).
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
}

impl Checkpointer {
    /// Checkpoints the WAL of the database at `path` every `every`.
    pub fn spawn(path: &Path, every: Duration) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let (tx, rx) = mpsc::channel::<()>();
        let name = path.display().to_string();
        std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                            tracing::warn!(file = %name, error = %e, "WAL checkpoint");
                        }
                    }
                    _ => {
                        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                        return;
                    }
                }
            })
            .map_err(StoreError::Io)?;
        Ok(Checkpointer { stop: Some(tx) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With automatic checkpoints off, the checkpointer copies the WAL back, so that it
    /// restarts from its beginning instead of growing without end.
    #[test]
    fn the_wal_is_copied_back_and_restarts() {
        let dir = std::env::temp_dir().join(format!("ib-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (x BLOB);",
        )
        .unwrap();
        let wal = dir.join("t.db-wal");
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let blob = vec![7u8; 64 * 1024];
        for _ in 0..160 {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [&blob])
                .unwrap();
            conn.execute("DELETE FROM t", []).unwrap();
        }
        let grown = wal_size();
        assert!(grown > 8 << 20, "no automatic checkpoint: {grown} bytes");
        // The WAL header's checkpoint sequence number (bytes 12..16) changes when the WAL
        // restarts, which a writer does only once every frame has been copied back.
        let sequence = || {
            let bytes = std::fs::read(&wal).unwrap();
            u32::from_be_bytes(bytes[12..16].try_into().unwrap())
        };
        let before = sequence();
        let _cp = Checkpointer::spawn(&path, Duration::from_millis(10)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while sequence() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL never restarted"
            );
            std::thread::sleep(Duration::from_millis(5)); // a polling interval, not a wait for time
            conn.execute("INSERT INTO t (x) VALUES (x'00')", [])
                .unwrap();
        }
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
