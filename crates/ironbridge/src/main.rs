//! The `ironbridge` binary: parses the command line, loads config and wires the components.
//!
//! # Layout
//! - `cli`: the command line; `config`: the config file and its overlay by flags.
//! - `http`: the HTTP listener (health, metrics).
//! - `demo`: simulated devices for `ironbridge demo`.

mod cli;
mod config;
mod demo;
mod http;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{Cli, Command, ServeArgs};
use crate::config::Config;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
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
    }
}

async fn serve(args: ServeArgs, demo: bool) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    if config.listeners.mqtts.is_some() {
        anyhow::bail!("--mqtts: the TLS listener is not available in this build yet");
    }
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let broker = broker::Broker::with_static_hooks(config.mqtt.clone());
    if !config.mqtt.allow_anonymous && config.mqtt.users.is_empty() {
        tracing::warn!(
            "anonymous access is off and no users are configured: no client can connect"
        );
    }

    let mqtt = TcpListener::bind(config.listeners.mqtt)
        .await
        .with_context(|| format!("binding mqtt {}", config.listeners.mqtt))?;
    let http = TcpListener::bind(config.listeners.http)
        .await
        .with_context(|| format!("binding http {}", config.listeners.http))?;
    let mqtt_addr = mqtt.local_addr()?;
    println!("listening mqtt {mqtt_addr}");
    println!("listening http {}", http.local_addr()?);
    tracing::info!(coap = %config.listeners.coap, "CoAP is not served yet (devices issue)");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (b, rx) = (broker.clone(), stop_rx.clone());
        tasks.spawn(async move { b.serve_tcp(mqtt, rx).await });
    }
    {
        let (b, rx) = (broker.clone(), stop_rx.clone());
        tasks.spawn(async move { b.run_sys(rx).await });
    }
    {
        let app = http::app(http::HttpState {
            metrics: prometheus,
            broker: broker.clone(),
        });
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            let stop = async move {
                let _ = rx.changed().await;
            };
            if let Err(e) = axum::serve(http, app).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "http server failed");
            }
        });
    }
    if demo {
        let (b, rx) = (broker.clone(), stop_rx.clone());
        tasks.spawn(async move { demo::run(b, rx).await });
        println!(
            "demo running: mosquitto_sub -h 127.0.0.1 -p {} -t 'demo/#' -v",
            mqtt_addr.port()
        );
    }

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10 s");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
