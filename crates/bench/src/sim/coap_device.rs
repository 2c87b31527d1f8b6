//! A simulated device over the CoAP device API, as ThingsBoard's CoAP devices do it: telemetry
//! as a confirmable `POST api/v1/{token}/telemetry` (JSON) on every tick, server-side RPC by
//! observing `GET api/v1/{token}/rpc` (Observe = 0) and replying with
//! `POST api/v1/{token}/rpc/{id}` (then reporting at once, so the effect shows). The observation
//! is renewed every [`RENEW`] (a lost or restarted server forgets it) and cancelled on stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::ResponseType as Status;
use serde_json::Value;
use tokio::sync::{mpsc, watch, Notify};

use super::coap_client::{CoapClient, Response};
use super::device::{stopped, Connected, Reports, SimDevice, Stats};

/// How often the RPC observation is registered again: a notification's default freshness
/// (Max-Age 60 s, RFC 7641 3.3.1), after which a client re-registers.
const RENEW: Duration = Duration::from_secs(60);
/// The pause after a failed registration, doubling up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// How long the goodbye (cancelling the observation) may take.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// Runs `device` until `stop` turns true.
pub async fn run(
    device: Arc<SimDevice>,
    coap: SocketAddr,
    interval: Duration,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) {
    let (client, notifications) = match CoapClient::connect(coap).await {
        Ok(c) => c,
        Err(e) => {
            Stats::add(&stats.errors, 1);
            eprintln!("{}: {e}", device.name);
            return;
        }
    };
    let _connected = Connected::new(&stats);
    let report_now = Notify::new();
    tokio::join!(
        telemetry(
            &device,
            &client,
            interval,
            &stats,
            &report_now,
            stop.clone()
        ),
        rpc(&device, &client, notifications, &stats, &report_now, stop),
    );
}

async fn telemetry(
    device: &SimDevice,
    client: &CoapClient,
    interval: Duration,
    stats: &Stats,
    report_now: &Notify,
    mut stop: watch::Receiver<bool>,
) {
    let path = format!("api/v1/{}/telemetry", device.token);
    let mut reports = Reports::new(interval, report_now);
    while reports.next(&mut stop).await {
        Stats::add(&stats.sent, 1);
        match client.post(&path, &device.report()).await {
            Ok(r) if r.status == Status::Changed => Stats::add(&stats.acked, 1),
            Ok(r) => {
                Stats::add(&stats.errors, 1);
                eprintln!(
                    "{}: telemetry refused: {} {}",
                    device.name,
                    r.code(),
                    r.text()
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
    client: &CoapClient,
    mut notifications: mpsc::Receiver<Response>,
    stats: &Stats,
    report_now: &Notify,
    mut stop: watch::Receiver<bool>,
) {
    let path = format!("api/v1/{}/rpc", device.token);
    let token = client.token();
    let mut pause = FIRST_PAUSE;
    loop {
        match client.observe(&path, &token).await {
            Ok(r) if r.status == Status::Content => pause = FIRST_PAUSE,
            failed => {
                Stats::add(&stats.errors, 1);
                match failed {
                    Ok(r) => eprintln!(
                        "{}: observing RPCs refused: {} {}",
                        device.name,
                        r.code(),
                        r.text()
                    ),
                    Err(e) => eprintln!("{}: observing RPCs: {e}", device.name),
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped(&mut stop) => return,
                }
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        }
        let renew = tokio::time::sleep(RENEW);
        tokio::pin!(renew);
        loop {
            let n = tokio::select! {
                n = notifications.recv() => n,
                _ = &mut renew => break,
                _ = stopped(&mut stop) => {
                    // Goodbye, so the server stops notifying a socket about to close.
                    let _ = tokio::time::timeout(CANCEL_WAIT, client.cancel(&path, &token)).await;
                    return;
                }
            };
            let Some(n) = n else { return };
            answer(device, client, &n, stats, report_now).await;
        }
    }
}

/// Answers one RPC notification `{"id":..,"method":..,"params":..}`.
async fn answer(
    device: &SimDevice,
    client: &CoapClient,
    n: &Response,
    stats: &Stats,
    report_now: &Notify,
) {
    let Ok(call) = serde_json::from_slice::<Value>(&n.payload) else {
        Stats::add(&stats.errors, 1);
        eprintln!(
            "{}: RPC notification is not JSON: {}",
            device.name,
            n.text()
        );
        return;
    };
    let id = match &call["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let reply = device.answer(call["method"].as_str().unwrap_or_default(), &call["params"]);
    let path = format!("api/v1/{}/rpc/{id}", device.token);
    match client.post(&path, &reply.to_string()).await {
        Ok(r) if r.status == Status::Changed => {
            Stats::add(&stats.rpcs, 1);
            report_now.notify_one();
        }
        Ok(r) => {
            Stats::add(&stats.errors, 1);
            eprintln!(
                "{}: RPC reply refused: {} {}",
                device.name,
                r.code(),
                r.text()
            );
        }
        Err(e) => {
            Stats::add(&stats.errors, 1);
            eprintln!("{}: RPC reply: {e}", device.name);
        }
    }
}
