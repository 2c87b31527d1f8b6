//! The edge's errors: what stops it from starting (configuration, buffer). Device and uplink failures are not errors of the gateway: they are counted in
//! health and retried.

/// Why the edge gateway cannot run.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The configuration file is unreadable or wrong; the message names the field.
    #[error("edge configuration: {0}")]
    Config(String),
    /// The store-and-forward queue cannot be opened or written.
    #[error("store and forward buffer: {0}")]
    Buffer(String),
}
