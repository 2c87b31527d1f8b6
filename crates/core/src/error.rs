//! The core's error type. Each transport maps it to its own codes in one place (MQTT reason
//! codes in `mqtt`, HTTP status + JSON body in the api crate, CoAP response codes in coap).

/// What went wrong in a registry or device-API operation.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An id or name that does not exist (in the caller's tenant).
    #[error("{0} not found")]
    NotFound(String),
    /// A name that must be unique is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request contradicts the current state (deleting something still in use).
    #[error("{0}")]
    Conflict(String),
    /// Input of the wrong shape: bad JSON, a missing field, a value out of range.
    #[error("{0}")]
    Invalid(String),
    /// Unknown or expired credentials.
    #[error("unauthorized")]
    Unauthorized,
    /// The device has no live session and the request cannot wait for one.
    #[error("{0}")]
    Unavailable(String),
    /// A request that waited too long (two-way RPC).
    #[error("timed out")]
    Timeout,
    /// Free space is below the configured threshold: new telemetry is refused for now.
    #[error("the platform's disk is nearly full; telemetry is refused until space is freed")]
    DiskFull,
    /// The telemetry store failed.
    #[error("telemetry store: {0}")]
    Store(String),
    /// The embedded database failed.
    #[error("storage: {0}")]
    Storage(#[from] rusqlite::Error),
}

impl CoreError {
    /// A short machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::NotFound(_) => "not_found",
            CoreError::AlreadyExists(_) => "already_exists",
            CoreError::Conflict(_) => "conflict",
            CoreError::Invalid(_) => "invalid",
            CoreError::Unauthorized => "unauthorized",
            CoreError::Unavailable(_) => "unavailable",
            CoreError::Timeout => "timeout",
            CoreError::Storage(_) | CoreError::Store(_) => "storage",
            CoreError::DiskFull => "insufficient_storage",
        }
    }

    /// Maps a UNIQUE constraint failure to `AlreadyExists(what)`.
    pub(crate) fn unique(e: rusqlite::Error, what: impl Into<String>) -> CoreError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                CoreError::AlreadyExists(what.into())
            }
            _ => CoreError::Storage(e),
        }
    }
}

/// Shorthand.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
