//! A simulated device over the HTTP device API: telemetry as `POST /api/v1/{token}/telemetry`
//! on every tick, server-side RPC by long polling `GET /api/v1/{token}/rpc?timeout=MS` and
//! replying with `POST /api/v1/{token}/rpc/{id}` (then reporting at once, so the effect shows).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::device::{stopped, Connected, Reports, SimDevice, Stats};
use super::rest::request;

/// How long one RPC poll waits on the server.
const POLL_MS: u64 = 20_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `device` until `stop` turns true.
pub async fn run(
    device: Arc<SimDevice>,
    http: SocketAddr,
    interval: Duration,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) {
    let _connected = Connected::new(&stats);
    let report_now = Notify::new();
    tokio::join!(
        telemetry(&device, http, interval, &stats, &report_now, stop.clone()),
        rpc(&device, http, &stats, &report_now, stop),
    );
}

async fn telemetry(
    device: &SimDevice,
    http: SocketAddr,
    interval: Duration,
    stats: &Stats,
    report_now: &Notify,
    mut stop: watch::Receiver<bool>,
) {
    let path = format!("/api/v1/{}/telemetry", device.token);
    let mut reports = Reports::new(interval, report_now);
    while reports.next(&mut stop).await {
        Stats::add(&stats.sent, 1);
        match request(
            http,
            "POST",
            &path,
            None,
            Some(&device.report()),
            REQUEST_TIMEOUT,
        )
        .await
        {
            Ok(r) if r.status == 200 => Stats::add(&stats.acked, 1),
            Ok(r) => {
                Stats::add(&stats.errors, 1);
                eprintln!(
                    "{}: telemetry refused: {} {}",
                    device.name, r.status, r.body
                );
            }
            Err(e) => {
                Stats::add(&stats.errors, 1);
                eprintln!("{}: {e}", device.name);
            }
        }
    }
}

async fn rpc(
    device: &SimDevice,
    http: SocketAddr,
    stats: &Stats,
    report_now: &Notify,
    mut stop: watch::Receiver<bool>,
) {
    let poll = format!("/api/v1/{}/rpc?timeout={POLL_MS}", device.token);
    let wait = Duration::from_millis(POLL_MS) + REQUEST_TIMEOUT;
    loop {
        let r = tokio::select! {
            r = request(http, "GET", &poll, None, None, wait) => r,
            _ = stopped(&mut stop) => return,
        };
        let failed = match r {
            Ok(r) if r.status == 200 => {
                let call = r.json();
                let id = match &call["id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let reply =
                    device.answer(call["method"].as_str().unwrap_or_default(), &call["params"]);
                let path = format!("/api/v1/{}/rpc/{id}", device.token);
                let body = reply.to_string();
                match request(http, "POST", &path, None, Some(&body), REQUEST_TIMEOUT).await {
                    Ok(r) if r.status == 200 => {
                        Stats::add(&stats.rpcs, 1);
                        report_now.notify_one();
                        false
                    }
                    _ => true,
                }
            }
            // Nothing within the poll's timeout.
            Ok(r) if r.status == 408 => false,
            _ => true,
        };
        if failed {
            Stats::add(&stats.errors, 1);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }
}
