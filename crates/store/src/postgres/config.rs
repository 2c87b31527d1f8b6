//! The PostgreSQL backend's settings.

/// Backend settings.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// The schema holding the store's tables (created if missing); `None`: the server's
    /// default `search_path` (normally `public`). Letters, digits and `_` only.
    pub schema: Option<String>,
    /// Connections in the pool (each writer holds one; reads share the rest).
    pub pool_size: usize,
    /// Writer tasks, each with its connection (so its own server process): devices are
    /// spread over them by a hash of their name, so one device's writes stay in order.
    pub writers: usize,
    /// Worker threads of the store's tokio runtime.
    pub threads: usize,
    /// Most points committed in one transaction.
    pub max_batch_points: usize,
    /// COPY straight into `points`, falling back to staging + upsert only when a timestamp is
    /// already stored; `false`: always staging + upsert (slower; kept for comparison).
    pub direct_copy: bool,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            schema: None,
            pool_size: 4,
            writers: 2,
            threads: 2,
            max_batch_points: 50_000,
            direct_copy: true,
        }
    }
}
