//! The command line (DESIGN.md contract): `serve`, `demo`, `edge`, `bench`, `sim`, `admin`,
//! `completions` and their flags. Every flag also reads `IRONBRIDGE_<FLAG>`; the config file
//! fills what neither gave.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Ironbridge: IoT and M2M platform in one binary.
#[derive(Debug, Parser)]
#[command(name = "ironbridge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: MQTT broker and HTTP listener.
    Serve(ServeArgs),
    /// Run the platform plus simulated devices publishing live data.
    Demo(ServeArgs),
    /// The edge gateway: field devices (Modbus TCP/RTU) polled and forwarded to a platform over
    /// MQTT (gateway API), with an on-disk store and forward queue.
    Edge(EdgeArgs),
    /// Load generators: `ironbridge bench mqtt <scenario>` (loopback brokers only).
    Bench(bench::BenchArgs),
    /// Simulated devices with realistic signals against a running Ironbridge:
    /// `ironbridge sim farm|factory|fleet|patients|vending|meters|all [--transport mqtt|http|coap]
    /// [--devices N] ...`.
    Sim(bench::sim::SimArgs),
    /// Manage tenants, customers, profiles, devices, users and API clients in a data dir
    /// (server running or not).
    Admin(crate::admin::AdminArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    ///
    /// For example: `ironbridge completions bash > ~/.local/share/bash-completion/completions/ironbridge`.
    Completions(CompletionsArgs),
    /// The GSM modem simulator on a serial port (tests; JSON lines on stdin and stdout).
    #[command(hide = true)]
    ModemSim(crate::modem_sim::ModemSimArgs),
}

/// Flags of `edge`.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// The edge configuration file (`[uplink]`, `[[modbus]]`; see docs/ARCHITECTURE.md).
    #[arg(long, env = "IRONBRIDGE_EDGE_CONFIG")]
    pub config: PathBuf,
}

/// Flags of `completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script for `shell`, generated from the [`Cli`] definition.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    // Rendered first: clap_complete panics on a write error (`| head` closing the pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut script);
    let mut out = std::io::stdout().lock();
    match std::io::Write::write_all(&mut out, &script).and_then(|_| std::io::Write::flush(&mut out))
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Flags of `serve` (and `demo`).
#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "IRONBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./data).
    #[arg(long, env = "IRONBRIDGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// MQTT listener address (default 0.0.0.0:1883).
    #[arg(long, env = "IRONBRIDGE_MQTT")]
    pub mqtt: Option<SocketAddr>,
    /// MQTT over TLS listener address.
    #[arg(long, env = "IRONBRIDGE_MQTTS")]
    pub mqtts: Option<SocketAddr>,
    /// Path of MQTT over WebSocket on the HTTP listener.
    #[arg(long, env = "IRONBRIDGE_WS_PATH")]
    pub ws_path: Option<String>,
    /// HTTP listener address (default 0.0.0.0:8080).
    #[arg(long, env = "IRONBRIDGE_HTTP")]
    pub http: Option<SocketAddr>,
    /// CoAP listener address (default 0.0.0.0:5683).
    #[arg(long, env = "IRONBRIDGE_COAP")]
    pub coap: Option<SocketAddr>,
    /// Let clients connect without credentials.
    #[arg(long, env = "IRONBRIDGE_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
}
