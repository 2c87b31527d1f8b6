//! `ironbridge bench`: load generators that ship inside the binary, measuring whole-system
//! figures the way the team's neutral `mqttload` does (end-to-end credit, warmup, drain, broker
//! CPU from /proc), with Ironbridge's own `mqtt-codec` on the wire.
//!
//! Only loopback targets are accepted: this machine never sends load elsewhere. Every run is
//! bounded: set-up + warmup + duration + drain, each with a maximum, and a watchdog on top.
//!
//! # Layout
//! - [`cli`]: the command line ([`BenchArgs`], embedded by the binary as `bench`).
//! - [`scenario`]: fan-in, fan-out, latency, pub, sub (`traffic`: one driver for all) and conn.
//! - `roles`: what a connected client does: publisher, subscriber.
//! - [`client`]: the MQTT client on `mqtt-codec` (handshakes, in-place PUBLISH view, the
//!   pre-encoded PUBLISH template and the payload stamp).
//! - [`transport`]: TCP, TLS, WebSocket, WebSocket over TLS behind one stream type.
//! - [`endpoint`]: the loopback check and the broker address every client uses.
//! - `engine`: the run's timeline, counters, end-to-end credit, progress lines, /proc readings.
//! - [`report`]: the result, as a table or JSON.
//! - [`ingest`], [`rules`]: `bench ingest` (telemetry) and `bench rules` (publish → alarm on
//!   the management WebSocket), driven over REST, MQTT and WebSocket.
//! - [`error`]: [`BenchError`] and [`ClientError`].
//! - [`sim`]: `ironbridge sim SCENARIO`, simulated devices with realistic signals.

pub mod cli;
pub mod client;
pub mod endpoint;
mod engine;
pub mod error;
pub mod ingest;
pub mod report;
mod roles;
pub mod rules;
pub mod scenario;
pub mod sim;
pub mod transport;

use std::io::Write;
use std::time::Duration;

pub use cli::{BenchArgs, BenchTarget, MqttArgs, Scenario};
pub use error::{BenchError, ClientError};
pub use report::Report;

/// Runs `ironbridge bench ...`: builds its own runtime (`--threads`), prints the report on
/// stdout (table or `--json`) and progress on stderr.
pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    match args.target {
        BenchTarget::Mqtt(mqtt) => run_mqtt_blocking(mqtt),
        BenchTarget::Ingest(a) => ingest::run(a),
        BenchTarget::Rules(a) => rules::run(a),
    }
}

fn run_mqtt_blocking(args: MqttArgs) -> Result<(), BenchError> {
    args.validate()?;
    engine::procfs::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.common.output.threads))
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    // The hard watchdog: whatever happens inside the runtime, the process does not outlive
    // its bound (the in-runtime bound below fires first in every normal case).
    let hard = args.time_bound() + Duration::from_secs(30);
    std::thread::spawn(move || {
        std::thread::sleep(hard);
        eprintln!("watchdog: exceeded {} s, exiting", hard.as_secs());
        std::process::exit(3);
    });
    let report = runtime.block_on(run_mqtt(&args))?;
    let mut out = std::io::stdout().lock();
    if args.common.output.json {
        report.write_json(&mut out).map_err(BenchError::Output)?;
    } else {
        report::write_table(&report, &mut out).map_err(BenchError::Output)?;
    }
    out.flush().map_err(BenchError::Output)?;
    drop(out);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Runs one MQTT scenario on the current runtime and returns its report (what tests call).
/// Fails with [`BenchError::Watchdog`] if it does not finish within
/// [`MqttArgs::time_bound`].
pub async fn run_mqtt(args: &MqttArgs) -> Result<Report, BenchError> {
    let bound = args.time_bound();
    tokio::time::timeout(bound, scenario::run(args))
        .await
        .map_err(|_| BenchError::Watchdog(bound.as_secs_f64()))?
}
