//! The `ironbridge` binary: parses the command line, loads config and wires the components.
//!
//! # Layout
//! - `cli`: the command line; `config`: the config file and its overlay by flags.
//! - `http`: the HTTP listener (health, metrics, MQTT over WebSocket); `https`: the same
//!   router over TLS (`wss://`).
//! - `tls`: the `[tls]` config, rustls set-up, handshakes and the `mqtts` listener;
//!   `cert_identity`: client-certificate identity for the hooks.
//! - `ws`: the MQTT-over-WebSocket endpoint; `ws_stream`: a WebSocket as a byte stream;
//! - `demo`: simulated devices for `ironbridge demo`.
//! - `modem_sim`: the hidden `modem-sim` command (the GSM modem simulator, for tests).

mod admin;
mod cert_identity;
mod cli;
mod config;
mod demo;
mod http;
mod https;
mod modem_sim;
mod tls;
mod ws;
mod ws_stream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::cert_identity::{CertIdentityHooks, CertNames};
use crate::cli::{Cli, Command, ServeArgs};
use crate::config::Config;
use crate::http::PeerInfo;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rustls=error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args, false)),
        Command::Demo(mut args) => {
            // The demo is for looking around on one's own machine.
            args.allow_anonymous = true;
            runtime.block_on(serve(args, true))
        }
        Command::Edge(args) => runtime.block_on(run_edge(args)),
        // The load generator builds its own runtime (`--threads`).
        Command::Bench(args) => Ok(bench::run(args)?),
        // The simulator also builds its own runtime.
        Command::Sim(args) => Ok(bench::sim::run(args)?),
        Command::Admin(args) => admin::run(args),
        Command::Completions(args) => cli::completions(args),
        Command::ModemSim(args) => runtime.block_on(modem_sim::run(args)),
    }
}

async fn serve(args: ServeArgs, demo: bool) -> anyhow::Result<()> {
    let signal = shutdown_signal()?;
    let config = Config::load(&args)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    // TLS clients' certificate names, known while they are connected (see cert_identity).
    let names = CertNames::default();
    let platform_config = config
        .storage
        .platform(&config.data_dir, session_limits(&config.mqtt));
    let platform =
        ib_core::Platform::open(&config.data_dir, platform_config).with_context(|| {
            format!(
                "opening the platform database in {}",
                config.data_dir.display()
            )
        })?;
    let admin_password = std::env::var("IRONBRIDGE_ADMIN_PASSWORD").ok();
    let api_config = config.api.api_config();
    let (auth, generated) = api::auth::Auth::open(
        &platform,
        admin_password.as_deref(),
        api_config.tokens.clone(),
    )?;
    if let Some(password) = generated {
        println!("created user admin with password {password} (shown once)");
    }
    let static_hooks: Arc<dyn broker::Hooks> =
        Arc::new(broker::StaticHooks::from_config(&config.mqtt));
    let device_hooks = ib_core::mqtt::DeviceHooks::new(platform.clone(), static_hooks);
    let mut hooks: Arc<dyn broker::Hooks> = device_hooks.clone();
    if config.tls.is_configured() {
        let identity = config.tls.use_identity_as_username;
        hooks = Arc::new(CertIdentityHooks::new(hooks, names.clone(), identity));
    }
    let broker = if config.mqtt.persistence {
        let path = config.data_dir.join("mqtt.db");
        broker::Broker::open(config.mqtt.clone(), hooks, &path)
            .with_context(|| format!("opening broker store {}", path.display()))?
    } else {
        broker::Broker::new(config.mqtt.clone(), hooks)
    };
    device_hooks.attach(broker.clone());

    // Every listener is bound (and its certificate loaded) before any is served, so that
    // `/healthz` answering means all are up.
    let mqtt = bind("mqtt", config.listeners.mqtt).await?;
    let http = bind("http", config.listeners.http).await?;
    let mqtts = match config.listeners.mqtts {
        Some(addr) => {
            let acceptor = TlsAcceptor::from(config.tls.server_config(&[])?);
            Some((bind("mqtts", addr).await?, acceptor))
        }
        None => None,
    };
    let https = match config.listeners.https {
        Some(addr) => {
            let acceptor = TlsAcceptor::from(config.tls.server_config(&[b"http/1.1"])?);
            Some((bind("https", addr).await?, acceptor))
        }
        None => None,
    };
    let coap = tokio::net::UdpSocket::bind(config.listeners.coap)
        .await
        .with_context(|| format!("binding coap {}", config.listeners.coap))?;
    let mqtt_addr = mqtt.local_addr()?;
    let http_addr = http.local_addr()?;
    // `mqtt` comes last, so that a reader waiting for it has seen every other line.
    println!("listening http {}", http.local_addr()?);
    if let Some((l, _)) = &https {
        println!("listening https {}", l.local_addr()?);
    }
    if let Some((l, _)) = &mqtts {
        println!("listening mqtts {}", l.local_addr()?);
    }
    println!("listening coap {}", coap.local_addr()?);
    println!("listening mqtt {mqtt_addr}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (b, rx) = (broker.clone(), stop_rx.clone());
        tasks.spawn(async move { b.serve_tcp(mqtt, rx).await });
    }
    if let Some((listener, acceptor)) = mqtts {
        let (b, n, rx) = (broker.clone(), names.clone(), stop_rx.clone());
        tasks.spawn(async move { tls::serve_mqtts(b, listener, acceptor, n, rx).await });
    }
    {
        let (b, rx) = (broker.clone(), stop_rx.clone());
        tasks.spawn(async move { b.run_sys(rx).await });
    }
    {
        let (p, rx) = (platform.clone(), stop_rx.clone());
        tasks.spawn(async move { p.run_housekeeping(rx).await });
    }
    {
        // Firmware campaigns: offers, stage changes, halts, device timeouts.
        let (p, rx) = (platform.clone(), stop_rx.clone());
        let every = std::time::Duration::from_secs(1);
        tasks.spawn(async move { p.run_campaigns(every, rx).await });
    }
    {
        // Rules: the engine thread evaluates bus events; the runner carries out actions.
        let cell = ib_core::rules::actions::BrokerCell::default();
        let _ = cell.set(broker.clone());
        let (jobs_tx, jobs_rx) = tokio::sync::mpsc::unbounded_channel();
        ib_core::rules::engine::spawn(platform.clone(), jobs_tx, stop_rx.clone());
        let notify = config.notify.build().context("[notify]")?;
        let runner = Arc::new(ib_core::rules::actions::ActionRunner::new(
            platform.clone(),
            cell,
            notify,
        ));
        tasks.spawn(async move { runner.run(jobs_rx).await });
        let (lookups, rx) = (platform.rules.lookups.clone(), stop_rx.clone());
        tasks.spawn(async move { lookups.run(rx).await });
    }
    {
        let (p, rx) = (platform.clone(), stop_rx.clone());
        let max = config.mqtt.max_packet_size.clamp(65_536, 16 << 20) as usize;
        tasks.spawn(async move { coap::serve(coap, p, max, rx).await });
    }
    let auth = Arc::new(auth);
    let demo_token = if demo {
        demo::preload(&platform).context("preloading the demo's rules")?;
        demo::admin_token(&platform, &auth)
    } else {
        None
    };
    let api_state = api::ApiState::new(platform.clone(), auth, &api_config.login);
    {
        let (a, p, rx) = (api_state.auth.clone(), platform.clone(), stop_rx.clone());
        let days = config.api.audit_retention_days;
        tasks.spawn(async move { http::api_housekeeping(a, p, days, rx).await });
    }
    let ws_sessions = TaskTracker::new();
    let app = http::app(
        http::HttpState {
            metrics: prometheus,
            broker: broker.clone(),
            mqtt_ws: ws::MqttOverWs {
                broker: broker.clone(),
                names: names.clone(),
                sessions: ws_sessions.clone(),
            },
        },
        &config.listeners.ws_path,
    )
    .merge(api::router(
        api_state,
        config.mqtt.max_packet_size.clamp(65_536, 16 << 20) as usize,
    ))
    .merge(ui::router());
    let app = http::harden(app, &config.api.cors_origins, https.is_some())?;
    {
        let app = app
            .clone()
            .into_make_service_with_connect_info::<PeerInfo>();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = axum::serve(http, app).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "http server failed");
            }
        });
    }
    if let Some((listener, acceptor)) = https {
        let listener = https::TlsListener::new(listener, acceptor)?;
        let app = app.into_make_service_with_connect_info::<PeerInfo>();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "https server failed");
            }
        });
    }
    {
        // WebSocket sessions outlive their HTTP requests; shutdown waits for their goodbyes.
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            stop.await;
            ws_sessions.close();
            ws_sessions.wait().await;
        });
    }
    if demo {
        let (b, rx) = (broker.clone(), stop_rx.clone());
        tasks.spawn(async move { demo::run(b, rx).await });
        println!(
            "demo running: mosquitto_sub -h 127.0.0.1 -p {} -t 'demo/#' -v",
            mqtt_addr.port()
        );
        // The simulated fleets connect to this server like any device would.
        let local = |a: std::net::SocketAddr| match a.ip().is_unspecified() {
            true => std::net::SocketAddr::from(([127, 0, 0, 1], a.port())),
            false => a,
        };
        match demo_token {
            Some(token) => {
                demo::start_fleets(local(http_addr), local(mqtt_addr), token);
                println!(
                    "demo fleets running: open http://{}/ and log in as admin",
                    local(http_addr)
                );
            }
            None => tracing::warn!("no admin user: the demo's simulated fleets do not start"),
        }
    }

    signal.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Every MQTT connection (TCP, TLS, WebSocket) is told "server shutting down".
    broker.shutdown_connections();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10 s");
    }
    // Listeners are down: commit what was acknowledged and stop the stores.
    broker.close();
    platform.telemetry.close();
    Ok(())
}

/// `ironbridge edge`: the gateway until SIGINT/SIGTERM (crates/edge).
async fn run_edge(args: cli::EdgeArgs) -> anyhow::Result<()> {
    let config = edge::EdgeConfig::load(&args.config)?;
    let signal = shutdown_signal()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut run = std::pin::pin!(edge::run(config, stop_rx));
    tokio::select! {
        r = &mut run => return Ok(r?),
        _ = signal => {}
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    Ok(run.await?)
}

/// What devices are told by `getSessionLimits`, from the broker's limits.
fn session_limits(mqtt: &broker::BrokerConfig) -> ib_core::SessionLimits {
    ib_core::SessionLimits {
        max_payload_size: mqtt.max_packet_size as usize,
        max_inflight_messages: u32::from(mqtt.receive_maximum),
        messages_per_second: (mqtt.max_publish_rate > 0).then_some(mqtt.max_publish_rate),
    }
}

/// Pending connections the kernel may queue before `accept` (it caps this at
/// `net.core.somaxconn`). The standard library's 128 overflowed under a burst of a few hundred
/// simultaneous connects: the kernel then drops the handshake's last ACK and the client waits for
/// a retransmission (200 ms or more), which capped the connect rate.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(name: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        // Accepted connections inherit it (Linux): no Nagle delay on any of them. For HTTP this
        // is what keeps a live WebSocket's small frames from waiting for the client's delayed
        // ACK (up to 40 ms); the broker also sets it on each MQTT connection itself.
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().with_context(|| format!("binding {name} {addr}"))
}

/// Resolves once shutdown has been signalled.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Installs the SIGINT/SIGTERM handlers now (before the listeners announce themselves, so a
/// signal sent right after start-up is never fatal) and returns the future that waits for one.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
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

    /// A connection accepted from one of `serve`'s listeners sends without Nagle's delay (a
    /// live WebSocket's frames waited up to 40 ms for the client's delayed ACK without it).
    #[tokio::test]
    async fn accepted_connections_have_no_nagle_delay() {
        let listener = bind("http", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
