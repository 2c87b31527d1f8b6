//! `ironbridge sim SCENARIO`: simulated devices with realistic signals, talking to a running
//! Ironbridge through its device API like real firmware would.
//!
//! The devices are provisioned through the management API as an administrator (one profile per
//! scenario, names `PREFIX-001` ...; an existing device of the same name is reused and given a
//! new access token), then each sends telemetry every `--interval` over MQTT, HTTP or CoAP and
//! answers server-side RPCs (`setPump`, `maintenance`, `refill`, ...). Signals are deterministic for a
//! `--seed`, stepped by wall-clock time (daily and weekly cycles follow the real clock).
//!
//! # Layout
//! - [`models`]: the signal models, one file per scenario, behind the [`models::Model`] trait.
//! - `rng`: the seeded random numbers.
//! - `device`: a simulated device (name, token, model) and the run's counters.
//! - `mqtt_device`, `http_device`, `coap_device`: a device's loop over each transport.
//! - `coap_client`: the CoAP endpoint a CoAP device talks through (confirmable requests with
//!   retransmission, Observe notifications), on coap-lite messages.
//! - `rest`: the tiny HTTP client and the provisioning through the management API.

mod coap_client;
mod coap_device;
mod device;
mod http_device;
pub mod models;
mod mqtt_device;
pub mod rest;
mod rng;

use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use tokio::sync::watch;

use crate::cli::Transport;
use crate::endpoint::Endpoint;
use device::{stopped, SimDevice, Stats};
pub use models::Kind;
use rest::{Admin, AdminAuth};

/// `ironbridge sim` options.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// The scenario (`all`: every one, `--devices` of each).
    #[arg(value_enum)]
    pub scenario: Kind,
    /// Ironbridge's HTTP address (management API; the device API with `--transport http`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Ironbridge's MQTT address (the device API with `--transport mqtt`).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Ironbridge's CoAP address (UDP; the device API with `--transport coap`).
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub coap: SocketAddr,
    /// How the devices talk to the platform (the device API, as ThingsBoard's devices use it).
    #[arg(long, value_enum, default_value_t = SimTransport::Mqtt)]
    pub transport: SimTransport,
    /// Devices (of each scenario with `all`).
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Telemetry messages per second per device (instead of `--interval`).
    #[arg(long, conflicts_with = "interval")]
    pub rate: Option<f64>,
    /// Time between two messages of a device: `1s`, `200ms`, `5m` (default 1s).
    #[arg(long)]
    pub interval: Option<Span>,
    /// How long to run: `60s`, `10m`, `2h` or `forever` (Ctrl-C stops it any time).
    #[arg(long, default_value = "forever")]
    pub duration: RunFor,
    /// Tenant of the devices (created if missing); default: the administrator's.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Device name prefix (default: the scenario's name): devices PREFIX-001, PREFIX-002, ...
    #[arg(long)]
    pub prefix: Option<String>,
    /// Seed of the signals' randomness (same seed, same signals).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A bearer token for the management API (instead of logging in).
    #[arg(long)]
    pub token: Option<String>,
    /// User to log in as.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Password to log in with.
    #[arg(long, env = "IRONBRIDGE_ADMIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// The device transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SimTransport {
    /// MQTT 3.1.1 to `--mqtt`, RPC by subscription.
    Mqtt,
    /// HTTP to `--http`, RPC by long poll.
    Http,
    /// CoAP (UDP) to `--coap`, confirmable requests, RPC by Observe.
    Coap,
}

/// What went wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Options that cannot work.
    #[error("invalid options: {0}")]
    Invalid(String),
    /// An HTTP exchange failed.
    #[error("HTTP {0}")]
    Http(String),
    /// The management API refused something while provisioning.
    #[error("provisioning: {0}")]
    Provision(String),
    /// The runtime or signal handlers could not start.
    #[error("starting: {0}")]
    Runtime(std::io::Error),
    /// The summary could not be written.
    #[error("writing the summary: {0}")]
    Output(std::io::Error),
}

/// A time span on the command line: `250ms`, `1s`, `1.5s`, `5m`, `2h` (a bare number: seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Span, String> {
        let s = s.trim();
        let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: f64 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: expected e.g. 500ms, 1s, 5m, 2h"))?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
        };
        Duration::try_from_secs_f64(secs)
            .map(Span)
            .map_err(|_| format!("{s:?}: not a valid duration"))
    }
}

/// `--duration`: a span or `forever`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunFor(pub Option<Duration>);

impl FromStr for RunFor {
    type Err = String;

    fn from_str(s: &str) -> Result<RunFor, String> {
        if s.eq_ignore_ascii_case("forever") {
            return Ok(RunFor(None));
        }
        Span::from_str(s).map(|d| RunFor(Some(d.0)))
    }
}

impl SimTransport {
    /// The name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SimTransport::Mqtt => "mqtt",
            SimTransport::Http => "http",
            SimTransport::Coap => "coap",
        }
    }
}

impl SimArgs {
    /// The time between two messages of one device.
    pub fn interval(&self) -> Result<Duration, SimError> {
        let d = match (self.rate, self.interval) {
            (Some(r), _) if r > 0.0 && r.is_finite() => Duration::from_secs_f64(1.0 / r),
            (Some(r), _) => return Err(SimError::Invalid(format!("--rate {r}: must be above 0"))),
            (None, Some(i)) => i.0,
            (None, None) => Duration::from_secs(1),
        };
        if d < Duration::from_millis(1) {
            return Err(SimError::Invalid(
                "at most 1000 messages per second per device".into(),
            ));
        }
        Ok(d)
    }

    /// The scenarios to run.
    fn kinds(&self) -> Vec<Kind> {
        match self.scenario {
            Kind::All => Kind::EACH.to_vec(),
            k => vec![k],
        }
    }

    /// The name of device `i` (from 1) of scenario `kind`.
    pub fn device_name(&self, kind: Kind, i: usize) -> String {
        match (&self.prefix, self.scenario) {
            (Some(p), Kind::All) => format!("{p}-{}-{i:03}", kind.name()),
            (Some(p), _) => format!("{p}-{i:03}"),
            (None, _) => format!("{}-{i:03}", kind.name()),
        }
    }

    fn auth(&self) -> Result<AdminAuth, SimError> {
        if let Some(t) = &self.token {
            return Ok(AdminAuth::Token(t.clone()));
        }
        let password = self.password.clone().ok_or_else(|| {
            SimError::Invalid(
                "--password (or IRONBRIDGE_ADMIN_PASSWORD), or --token, is required".into(),
            )
        })?;
        Ok(AdminAuth::Login {
            user: self.user.clone(),
            password,
        })
    }
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub scenario: &'static str,
    pub transport: SimTransport,
    pub devices: usize,
    pub seconds: f64,
    /// Telemetry messages sent.
    pub messages: u64,
    /// Of those, acknowledged by the platform.
    pub acknowledged: u64,
    pub rpcs_answered: u64,
    pub errors: u64,
    pub device_names: Vec<String>,
}

/// Runs `ironbridge sim ...` on its own runtime: progress on stderr, the summary on stdout.
pub fn run(args: SimArgs) -> Result<(), SimError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SimError::Runtime)?;
    let summary = runtime.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        let signal = shutdown_signal().map_err(SimError::Runtime)?;
        tokio::spawn(async move {
            signal.await;
            let _ = stop_tx.send(true);
        });
        simulate(&args, stop_rx).await
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let text = serde_json::to_string(&summary).expect("the summary serialises");
        writeln!(out, "{text}").map_err(SimError::Output)?;
    } else {
        writeln!(
            out,
            "sim {}: {} devices over {}, {:.1} s: {} messages sent, {} acknowledged, {} RPCs answered, {} errors",
            summary.scenario,
            summary.devices,
            summary.transport.name(),
            summary.seconds,
            summary.messages,
            summary.acknowledged,
            summary.rpcs_answered,
            summary.errors
        )
        .map_err(SimError::Output)?;
    }
    out.flush().map_err(SimError::Output)?;
    drop(out);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Provisions the devices and runs them until `--duration` has passed or `stop` turns true.
pub async fn simulate(args: &SimArgs, stop: watch::Receiver<bool>) -> Result<Summary, SimError> {
    let interval = args.interval()?;
    if args.devices == 0 {
        return Err(SimError::Invalid("--devices must be at least 1".into()));
    }
    let admin = Admin::connect(args.http, &args.auth()?).await?;
    if let Some(t) = &args.tenant {
        admin.ensure_tenant(t).await?;
    }
    let tenant = args.tenant.as_deref();
    let mut wanted = Vec::new();
    for kind in args.kinds() {
        admin.ensure_profile(tenant, kind.profile()).await?;
        for i in 1..=args.devices {
            wanted.push((kind, i));
        }
    }
    // One at a time: a few requests each, and the names keep their order.
    let mut devices = Vec::with_capacity(wanted.len());
    for (kind, i) in wanted {
        let name = args.device_name(kind, i);
        let token = admin.device_token(tenant, &name, kind.profile()).await?;
        let model = kind.build(args.seed, i as u64);
        devices.push(Arc::new(SimDevice::new(name, token, model)));
    }
    if !args.quiet {
        eprintln!(
            "{} devices ready ({}); sending every {:?} over {}",
            devices.len(),
            args.kinds()
                .iter()
                .map(|k| k.profile())
                .collect::<Vec<_>>()
                .join(", "),
            interval,
            args.transport.name()
        );
    }
    let stats = Arc::new(Stats::default());
    let endpoint = Arc::new(Endpoint {
        addr: args.mqtt,
        transport: Transport::Tcp,
        ws_url: String::new(),
        tls: None,
    });
    // The run's own stop: the caller's, or the end of --duration.
    let (run_tx, run_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let n = devices.len();
    for (i, d) in devices.iter().enumerate() {
        let (d, stats, stop, endpoint) =
            (d.clone(), stats.clone(), run_rx.clone(), endpoint.clone());
        let (transport, http, coap) = (args.transport, args.http, args.coap);
        // Spread the devices over one interval, as real devices would be.
        let offset = interval.mul_f64(i as f64 / n as f64);
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            match transport {
                SimTransport::Mqtt => mqtt_device::run(d, endpoint, interval, stats, stop).await,
                SimTransport::Http => http_device::run(d, http, interval, stats, stop).await,
                SimTransport::Coap => coap_device::run(d, coap, interval, stats, stop).await,
            }
        });
    }
    let label = args.scenario.name();
    let progress =
        (!args.quiet).then(|| tokio::spawn(progress(label, n, stats.clone(), run_rx.clone())));
    let mut stop = stop;
    match args.duration.0 {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stopped(&mut stop) => {}
            }
        }
        None => {
            stopped(&mut stop).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = run_tx.send(true);
    // Devices say goodbye (MQTT DISCONNECT, CoAP observation cancelled); a stuck one is not waited for long.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    if let Some(p) = progress {
        let _ = p.await;
    }
    Ok(Summary {
        scenario: label,
        transport: args.transport,
        devices: n,
        seconds,
        messages: Stats::get(&stats.sent),
        acknowledged: Stats::get(&stats.acked),
        rpcs_answered: Stats::get(&stats.rpcs),
        errors: Stats::get(&stats.errors),
        device_names: devices.iter().map(|d| d.name.clone()).collect(),
    })
}

/// One line per second on stderr until the run stops.
async fn progress(
    label: &'static str,
    devices: usize,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut last = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        let sent = Stats::get(&stats.sent);
        eprintln!(
            "[sim {label}] {:7.1}s connected {}/{devices}  sent {sent} (+{}/s)  acked {}  rpcs {}  errors {}",
            start.elapsed().as_secs_f64(),
            Stats::get(&stats.connected),
            sent - last,
            Stats::get(&stats.acked),
            Stats::get(&stats.rpcs),
            Stats::get(&stats.errors),
        );
        last = sent;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|c| c.sim)
    }

    #[test]
    fn spans_and_durations() {
        assert_eq!(
            "200ms".parse::<Span>().unwrap().0,
            Duration::from_millis(200)
        );
        assert_eq!(
            "1.5s".parse::<Span>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert_eq!("2".parse::<Span>().unwrap().0, Duration::from_secs(2));
        assert_eq!("5m".parse::<Span>().unwrap().0, Duration::from_secs(300));
        assert!("5x".parse::<Span>().is_err());
        assert!("-1s".parse::<Span>().is_err());
        assert_eq!("forever".parse::<RunFor>().unwrap(), RunFor(None));
        assert_eq!(
            "60s".parse::<RunFor>().unwrap(),
            RunFor(Some(Duration::from_secs(60)))
        );
    }

    #[test]
    fn command_line() {
        let a = parse(&[
            "farm",
            "--devices",
            "2",
            "--interval",
            "200ms",
            "--duration",
            "3s",
        ])
        .unwrap();
        assert_eq!(a.scenario, Kind::Farm);
        assert_eq!(a.interval().unwrap(), Duration::from_millis(200));
        assert_eq!(a.duration, RunFor(Some(Duration::from_secs(3))));
        assert_eq!(a.transport, SimTransport::Mqtt);
        assert_eq!(a.device_name(Kind::Farm, 2), "farm-002");
        let a = parse(&["all", "--rate", "4", "--prefix", "x", "--transport", "http"]).unwrap();
        assert_eq!(a.interval().unwrap(), Duration::from_millis(250));
        assert_eq!(a.kinds().len(), 6);
        assert_eq!(a.device_name(Kind::Meters, 1), "x-meters-001");
        assert_eq!(a.duration, RunFor(None));
        assert!(parse(&["farm", "--rate", "1", "--interval", "1s"]).is_err());
        assert!(parse(&["moon"]).is_err());
        assert!(parse(&["farm", "--rate", "0"]).unwrap().interval().is_err());
    }

    #[test]
    fn coap_transport_and_address() {
        let a = parse(&["farm"]).unwrap();
        assert_eq!(a.coap, "127.0.0.1:5683".parse().unwrap());
        let a = parse(&["farm", "--transport", "coap", "--coap", "10.0.0.7:5684"]).unwrap();
        assert_eq!(a.transport, SimTransport::Coap);
        assert_eq!(a.transport.name(), "coap");
        assert_eq!(a.coap, "10.0.0.7:5684".parse().unwrap());
        assert!(parse(&["farm", "--coap", "nowhere"]).is_err());
        assert!(parse(&["farm", "--transport", "lwm2m"]).is_err());
        let summary = serde_json::to_value(SimTransport::Coap).unwrap();
        assert_eq!(summary, "coap");
    }
}
