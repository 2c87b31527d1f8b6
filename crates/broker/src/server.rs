//! Accepting TCP connections: one task per client, graceful shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Shared;
use crate::connection;

/// Accepts clients on `listener` until `shutdown` changes, then waits for the connections to
/// say goodbye (bounded by their own short write timeouts).
pub async fn run(shared: Arc<Shared>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    // A tracker rather than a JoinSet: it keeps no entry per connection.
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    // Spawned directly (no wrapping async block): every byte of an idle
                    // connection's task counts when there are 100,000 of them.
                    tasks.spawn(connection::serve(shared.clone(), stream, Some(peer), None));
                }
                Err(e) => {
                    // Out of file descriptors and the like: log, back off briefly, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    shared.shutdown_connections();
    tasks.close();
    tasks.wait().await;
}
