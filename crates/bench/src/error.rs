//! What can go wrong: [`BenchError`] for a whole run (bad options, set-up, watchdog) and
//! [`ClientError`] for one MQTT connection.
//!
//! Each message already contains its cause, so no variant also reports it as `source()`: an
//! error chain printed by the binary says everything once.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use mqtt_codec::ReasonCode;

/// A run that could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `--host` names a machine other than this one.
    #[error(
        "refusing --host {0}: not a loopback address (127.0.0.0/8 or ::1); \
         ironbridge bench only sends load to brokers on this machine"
    )]
    NotLoopback(String),
    /// `--host` is neither an IP address nor `localhost`.
    #[error("--host {0}: expected a loopback IP address (127.x.y.z, ::1) or `localhost`")]
    BadHost(String),
    /// An option value that cannot work (explained in the message).
    #[error("invalid options: {0}")]
    Invalid(String),
    /// The TLS client could not be configured.
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// `--cafile` could not be read.
    #[error("reading --cafile {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    /// `--broker-pid` names no readable process.
    #[error("--broker-pid {0}: cannot read /proc/{0}/stat (no such process?)")]
    BrokerPid(u32),
    /// Clients could not be connected (or subscribed) before the run.
    #[error("{role} set-up failed ({failed} of {total} clients): {cause}")]
    Setup {
        role: &'static str,
        failed: usize,
        total: usize,
        cause: ClientError,
    },
    /// The ingest benchmark could not prepare its run (login, devices, store).
    #[error("ingest set-up: {0}")]
    Ingest(String),
    /// The rules benchmark could not prepare or run (login, REST set-up, WebSocket).
    #[error("rules benchmark: {0}")]
    Rules(String),
    /// The tokio runtime could not be built.
    #[error("starting the runtime: {0}")]
    Runtime(io::Error),
    /// The run went past its time bound (set-up + warmup + duration + drain + margin).
    #[error("watchdog: the run did not finish within its bound of {0:.0} s")]
    Watchdog(f64),
    /// The report could not be written.
    #[error("writing the report: {0}")]
    Output(io::Error),
}

/// One connection's failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("connecting to {addr}: {error}")]
    Connect { addr: SocketAddr, error: io::Error },
    /// A read or write failed.
    #[error("I/O: {0}")]
    Io(io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    TlsHandshake(io::Error),
    /// The WebSocket upgrade failed.
    #[error("WebSocket handshake: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The broker sent bytes that are not valid MQTT.
    #[error("decoding a packet from the broker: {0}")]
    Decode(mqtt_codec::DecodeError),
    /// CONNACK carried a failure code.
    #[error("CONNACK refused the connection: {0} (0x{code:02x})", code = .0 .0)]
    Refused(ReasonCode),
    /// SUBACK carried a failure code.
    #[error("SUBACK refused the subscription: {0} (0x{code:02x})", code = .0 .0)]
    SubscribeRefused(ReasonCode),
    /// A packet arrived where another was due.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    /// The broker closed the connection.
    #[error("the broker closed the connection")]
    Closed,
    /// The broker sent DISCONNECT.
    #[error("the broker sent DISCONNECT: {0}")]
    Disconnected(ReasonCode),
    /// A step did not finish in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<mqtt_codec::DecodeError> for ClientError {
    fn from(e: mqtt_codec::DecodeError) -> Self {
        ClientError::Decode(e)
    }
}
