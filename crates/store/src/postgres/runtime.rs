//! The store's tokio runtime, on a background thread of its own (the store may be dropped
//! from async code, where a runtime cannot be), and blocking on its futures from sync code.

use std::future::Future;
use std::sync::mpsc;

use crate::{Result, StoreError};

/// The runtime's background thread.
pub(super) struct Runtime {
    pub handle: tokio::runtime::Handle,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the runtime on a background thread.
pub(super) fn start(threads: usize) -> Result<Runtime> {
    let (handle_tx, handle_rx) = mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("pg-store".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .thread_name("pg-store-rt")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(rt.handle().clone()));
            let _ = rt.block_on(stop_rx);
            // Tasks still running (a batch in flight after `abort`) are cancelled here: their
            // connections close and the server rolls back what was not committed.
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        })?;
    let handle = handle_rx.recv().map_err(|_| StoreError::Closed)??;
    Ok(Runtime {
        handle,
        stop,
        thread,
    })
}

/// Runs a future on the store's runtime and waits for it from this (non-async) thread.
pub(super) fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    f: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel();
    handle.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().unwrap_or(Err(StoreError::Closed))
}

impl Runtime {
    /// Stops the runtime (cancelling its tasks) and waits for its thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
