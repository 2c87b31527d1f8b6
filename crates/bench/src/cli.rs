//! The command line: `ironbridge bench mqtt <scenario> [options]`, `bench ingest`, `bench rules`.
//!
//! [`BenchArgs`] is what the binary embeds as its `bench` subcommand. The options shared by all
//! scenarios ([`CommonArgs`]) are global, so they may stand before or after the scenario name;
//! they are grouped by concern (target, session, traffic, timing, output).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::endpoint::parse_loopback;

/// Load generators that ship inside the binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench")]
pub struct BenchArgs {
    #[command(subcommand)]
    pub target: BenchTarget,
}

/// What to load.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchTarget {
    /// MQTT load against a broker on this machine (loopback only).
    Mqtt(MqttArgs),
    /// Telemetry ingest: QoS 1 device telemetry end to end, or the store's writer alone.
    Ingest(crate::ingest::IngestArgs),
    /// The rule engine end to end: device publish -> alarm on the management WebSocket.
    Rules(crate::rules::RulesArgs),
}

/// `bench mqtt`: a scenario plus the options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct MqttArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The MQTT scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// N publishers -> 1 subscriber on bench/RUN/#; throughput with end-to-end credit.
    FanIn(FanInArgs),
    /// 1 publisher -> N subscribers on one topic; deliveries per second.
    FanOut(FanOutArgs),
    /// Fixed total rate, send timestamp in the payload; latency percentiles in µs.
    Latency(LatencyArgs),
    /// N idle connections: connect rate, then held with keep-alive; broker RSS per connection.
    Conn(ConnArgs),
    /// Plain publishers on any topic (like emqtt-bench pub).
    Pub(PubArgs),
    /// Plain subscribers on any filter (like emqtt-bench sub).
    Sub(SubArgs),
}

impl Scenario {
    /// The scenario's name as typed on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::FanIn(_) => "fan-in",
            Scenario::FanOut(_) => "fan-out",
            Scenario::Latency(_) => "latency",
            Scenario::Conn(_) => "conn",
            Scenario::Pub(_) => "pub",
            Scenario::Sub(_) => "sub",
        }
    }
}

/// `fan-in` options.
#[derive(Debug, Clone, Args)]
pub struct FanInArgs {
    /// Publishers, each on its own topic bench/RUN/i.
    #[arg(long, default_value_t = 50)]
    pub publishers: usize,
    /// Messages per second per publisher; 0 = as fast as the credit allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// End-to-end credit: most messages per publisher sent but not yet seen by the
    /// subscriber (keeps socket and broker queues bounded); 0 = open loop.
    #[arg(long, default_value_t = 1000)]
    pub backlog: u64,
}

/// `fan-out` options.
#[derive(Debug, Clone, Args)]
pub struct FanOutArgs {
    /// Subscribers, all on the publisher's topic.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Messages per second of the publisher; 0 = as fast as the credit allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Most messages sent but not yet seen by the slowest subscriber; 0 = open loop.
    #[arg(long, default_value_t = 1000)]
    pub backlog: u64,
}

/// `latency` options.
#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    /// Total messages per second (split evenly over the publishers).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Publishers sharing the rate; one subscriber receives everything.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
}

/// `conn` options.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold the connections open (answering keep-alive) after the liveness check.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Seconds to let the broker settle before reading its RSS.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Spread connections over source addresses 127.0.0.2 ..= 127.0.0.(K+1) (each has its own
    /// ~28k ephemeral ports); 0 = one address per 25,000 connections beyond the first 25,000.
    #[arg(long, default_value_t = 0)]
    pub src_ips: usize,
}

/// `pub` options.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// Publishing clients.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Topic; `%i` is the client's index, `%c` its client id.
    #[arg(long, default_value = "bench/%i")]
    pub topic: String,
    /// Messages per second per client; 0 = as fast as possible (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Publish with the retain flag.
    #[arg(long)]
    pub retain: bool,
}

/// `sub` options.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    /// Subscribing clients.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Topic filter; `%i` is the client's index, `%c` its client id.
    #[arg(long, default_value = "bench/#")]
    pub topic: String,
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Transport to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Transport {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
    /// True for `tls` and `wss`.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[value(name = "3", alias = "4", alias = "3.1.1")]
    V3,
    /// MQTT 5.0.
    #[value(name = "5", alias = "5.0")]
    V5,
}

/// Where the broker is and how to reach it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Target")]
pub struct TargetArgs {
    /// Broker address: a loopback IP (127.0.0.0/8, ::1) or `localhost`; nothing else is accepted.
    #[arg(long, global = true, default_value = "127.0.0.1", value_parser = parse_loopback)]
    pub host: IpAddr,
    /// Broker port.
    #[arg(long, global = true, default_value_t = 1883)]
    pub port: u16,
    /// Transport.
    #[arg(long, global = true, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// HTTP path of MQTT over WebSocket (ws, wss).
    #[arg(long, global = true, default_value = "/mqtt")]
    pub ws_path: String,
    /// PEM file of the CA that signed the broker's certificate (tls, wss).
    #[arg(long, global = true)]
    pub cafile: Option<PathBuf>,
    /// Accept any broker certificate (tls, wss; for self-signed test brokers).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Name to check the broker's certificate against (default: the --host address).
    #[arg(long, global = true)]
    pub tls_server_name: Option<String>,
}

/// The MQTT session every client opens.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Session")]
pub struct SessionArgs {
    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long, global = true, value_enum, default_value_t = MqttVersion::V3)]
    pub mqtt_version: MqttVersion,
    /// Keep-alive in seconds; idle clients send PINGREQ at this interval.
    #[arg(long, global = true, default_value_t = 60)]
    pub keepalive: u16,
    /// User name sent in CONNECT.
    #[arg(long, global = true)]
    pub username: Option<String>,
    /// Password sent in CONNECT.
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// Connection handshakes in flight at once while setting up.
    #[arg(long, global = true, default_value_t = 200)]
    pub concurrency: usize,
}

/// What the publishers send.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Traffic")]
pub struct TrafficArgs {
    /// QoS of publications and subscriptions.
    #[arg(long, global = true, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (fan-in, fan-out and latency need at least 24 for the stamp).
    #[arg(long, global = true, default_value_t = 64)]
    pub payload: usize,
    /// QoS 1/2: most unacknowledged PUBLISH per publisher (v5: also capped by the broker's
    /// receive maximum).
    #[arg(long, global = true, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    /// QoS 0: most messages per write.
    #[arg(long, global = true, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch: u16,
}

/// How long each phase lasts.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Timing")]
pub struct TimingArgs {
    /// Measured window in seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of traffic before the window (not counted in rates).
    #[arg(long, global = true, default_value_t = 1.0)]
    pub warmup: f64,
    /// Most seconds to wait after sending stops for messages still on their way.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub drain_max: f64,
    /// The drain ends early once nothing has arrived for this many seconds.
    #[arg(long, global = true, default_value_t = 1.0)]
    pub drain_idle: f64,
    /// Most seconds to connect (and subscribe) all clients.
    #[arg(long, global = true, default_value_t = 60.0)]
    pub connect_timeout: f64,
}

/// What is measured besides the traffic, and how results are shown.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Broker process id: its CPU seconds and RSS are read from /proc.
    #[arg(long, global = true)]
    pub broker_pid: Option<u32>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Free text copied into the report (e.g. the broker's name).
    #[arg(long, global = true)]
    pub label: Option<String>,
    /// No progress lines on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Tokio worker threads of the generator.
    #[arg(long, global = true, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
}

impl MqttArgs {
    /// Checks combinations clap cannot express; scenarios call it before connecting anything.
    pub fn validate(&self) -> Result<(), crate::BenchError> {
        use crate::BenchError::Invalid;
        let c = &self.common;
        // The value parser already refused other hosts; arguments built in code get here too.
        if !c.target.host.is_loopback() {
            return Err(crate::BenchError::NotLoopback(c.target.host.to_string()));
        }
        let t = &c.timing;
        for (name, v) in [
            ("--duration", t.duration),
            ("--warmup", t.warmup),
            ("--drain-max", t.drain_max),
            ("--drain-idle", t.drain_idle),
            ("--connect-timeout", t.connect_timeout),
        ] {
            if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
                return Err(Invalid(format!("{name} {v}: expected 0 ..= 86400 seconds")));
            }
        }
        if c.session.concurrency == 0 {
            return Err(Invalid("--concurrency must be at least 1".into()));
        }
        if c.traffic.payload > 16 * 1024 * 1024 {
            return Err(Invalid("--payload: at most 16 MiB".into()));
        }
        let needs_stamp = matches!(
            self.scenario,
            Scenario::FanIn(_) | Scenario::FanOut(_) | Scenario::Latency(_)
        );
        if needs_stamp && c.traffic.payload < crate::client::STAMP_LEN {
            return Err(Invalid(format!(
                "{} needs --payload >= {} (sequence number and send time travel in the payload)",
                self.scenario.name(),
                crate::client::STAMP_LEN
            )));
        }
        let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
        let (count, rate) = match &self.scenario {
            Scenario::FanIn(a) => (a.publishers, a.rate),
            Scenario::FanOut(a) => (a.subscribers, a.rate),
            Scenario::Latency(a) => (a.publishers, a.rate),
            Scenario::Conn(a) => (a.connections, 0.0),
            Scenario::Pub(a) => (a.clients, a.rate),
            Scenario::Sub(a) => (a.clients, 0.0),
        };
        if count == 0 {
            return Err(Invalid(format!(
                "{}: needs at least one client",
                self.scenario.name()
            )));
        }
        if !rate_ok(rate) {
            return Err(Invalid(format!("--rate {rate}: expected a number >= 0")));
        }
        match &self.scenario {
            Scenario::Latency(a) if a.rate <= 0.0 => {
                return Err(Invalid("latency needs a fixed --rate > 0".into()));
            }
            Scenario::Conn(a) => {
                if !a.hold.is_finite() || !a.settle.is_finite() || a.hold < 0.0 || a.settle < 0.0 {
                    return Err(Invalid("--hold and --settle: expected seconds >= 0".into()));
                }
                if a.src_ips > 250 {
                    return Err(Invalid("--src-ips: at most 250".into()));
                }
                if a.src_ips > 0 && !c.target.host.is_ipv4() {
                    return Err(Invalid("--src-ips needs an IPv4 --host".into()));
                }
            }
            _ => {}
        }
        if c.target.transport.is_tls() && c.target.cafile.is_none() && !c.target.insecure {
            return Err(Invalid(format!(
                "--transport {} needs --cafile FILE or --insecure",
                c.target.transport.name()
            )));
        }
        Ok(())
    }
}
