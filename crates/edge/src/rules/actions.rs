//! The local rules' task: sits between the connectors and the store-and-forward queue, feeds
//! every reading to the [`RuleEngine`] before passing it on, and carries out the firings: one
//! worker runs the actions in the order the engine decided them (a pump switched on, then off,
//! reaches the device in that order), so a slow action delays the next ones but never the
//! readings.
//!
//! - `rpc`: a [`Command`] to the connector holding the target device (a Modbus write), its
//!   answer awaited up to [`RPC_TIMEOUT`];
//! - `sms`: through the modem connector's sender; `text` is a template as on the platform
//!   (`{{device.name}}`, `{{rule.name}}`, `{{KEY}}`...), by default "Rule NAME fired on DEVICE";
//! - `log`: an info line (`message` a template, same default);
//! - `alarm`: a reading of the device, `alarm.<type>` = true when the rule fires, false when it
//!   clears, queued for the platform like any other.
//!
//! Every firing and clearing is logged ([`rule_event`]) and counted in [`RuleStats`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ib_core::model::Device;
use ib_core::rules::actions::render;
use ib_core::rules::engine::{Job, Phase};
use ib_core::rules::model::Action;
use ib_core::rules::notify::default_subject;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::engine::{Firing, RuleEngine, RuleStats};
use crate::connector::{Peers, Reading};

/// How long a rule's RPC waits for the connector's answer.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Where actions go.
#[derive(Clone)]
pub struct ActionTargets {
    /// Every sub-device's connector.
    pub peers: Peers,
    /// The modem, when one is configured.
    pub sms: Option<modem::ModemHandle>,
    pub stats: Arc<RuleStats>,
}

/// Milliseconds since the epoch: the readings' clock, to end `for` waits between readings.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Runs until `readings` closes (every connector stopped): each reading goes through `engine`,
/// then on to `out`; alarm readings follow it; the other actions go to the worker. A `for`
/// wait that ends between readings (a device reporting only changes) is ended by `clock`.
pub async fn run(
    mut engine: RuleEngine,
    mut readings: mpsc::Receiver<Reading>,
    out: mpsc::Sender<Reading>,
    targets: ActionTargets,
    clock: Clock,
) {
    let (work_tx, work_rx) = mpsc::unbounded_channel();
    let worker = tokio::spawn(work(work_rx, targets));
    loop {
        let due = engine.next_due();
        let wait = async {
            match due {
                Some(t) => {
                    let ms = u64::try_from(t - clock()).unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await
                }
                None => std::future::pending().await,
            }
        };
        let firings = tokio::select! {
            r = readings.recv() => {
                let Some(r) = r else { break };
                // A status reading carries no values for the rules.
                let firings = match r.status_change() {
                    Some(_) => Vec::new(),
                    None => engine.on_reading(&r),
                };
                if out.send(r).await.is_err() {
                    break;
                }
                firings
            }
            _ = wait => engine.tick(clock()),
        };
        for f in firings {
            rule_event(&f);
            if let Some(alarm) = alarm_reading(&f) {
                // The queue is gone only at shutdown; the readings loop ends next.
                let _ = out.send(alarm).await;
            }
            // The worker only ends when this sender is dropped.
            let _ = work_tx.send(f);
        }
    }
    drop(work_tx);
    let _ = worker.await;
}

/// A rule fired or cleared: logged and counted (the engine counted it in [`RuleStats`]).
fn rule_event(f: &Firing) {
    let phase = phase_name(f.phase);
    tracing::info!(rule = %f.rule.id, device = %f.device, phase, ts = f.ts,
        "local rule {phase}");
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Fire => "fired",
        Phase::Clear => "cleared",
    }
}

/// The `alarm.<type>` reading of a firing whose rule has alarm actions.
fn alarm_reading(f: &Firing) -> Option<Reading> {
    let mut values = Map::new();
    for a in &f.rule.rule.spec.actions {
        if let Action::Alarm { alarm, .. } = a {
            values.insert(format!("alarm.{alarm}"), (f.phase == Phase::Fire).into());
        }
    }
    (!values.is_empty()).then(|| Reading {
        device: f.device.clone(),
        ts: f.ts,
        values,
    })
}

/// Carries out firings one after the other.
async fn work(mut rx: mpsc::UnboundedReceiver<Firing>, targets: ActionTargets) {
    while let Some(f) = rx.recv().await {
        // Clearing undoes alarms (done as readings); the other actions run on firing.
        if f.phase == Phase::Clear {
            continue;
        }
        let job = job(&f);
        for a in &f.rule.rule.spec.actions {
            if let Err(e) = act(&targets, &f, &job, a).await {
                targets.stats.actions_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rule = %f.rule.id, device = %f.device, error = %e,
                    "local rule: action failed");
            }
        }
    }
}

/// The platform's job for the firing: its templates read it.
fn job(f: &Firing) -> Job {
    Job {
        rule: f.rule.clone(),
        device: Arc::new(Device {
            id: f.device.clone(),
            tenant: String::new(),
            name: f.device.clone(),
            label: None,
            profile: f.profile.clone(),
            profile_id: String::new(),
            customer: None,
            gateway: false,
            parent_gateway: None,
            iccid: None,
            imsi: None,
            msisdn: None,
            created: 0,
        }),
        ts: f.ts,
        values: f.values.clone(),
        phase: f.phase,
        made: std::time::Instant::now(),
    }
}

async fn act(t: &ActionTargets, f: &Firing, job: &Job, a: &Action) -> Result<(), String> {
    match a {
        Action::Rpc {
            method,
            params,
            device,
        } => {
            let target = device.clone().unwrap_or_else(|| f.device.clone());
            let answer = rpc(&t.peers, &target, method, params.clone()).await?;
            tracing::info!(rule = %f.rule.id, device = %target, method, answer = %answer,
                "local rule: rpc done");
            Ok(())
        }
        Action::Sms { to, text } => {
            let Some(modem) = &t.sms else {
                return Err("no [modem] to send the SMS through".into());
            };
            let text = match text {
                Some(tpl) => render(tpl, job),
                None => default_subject(job),
            };
            modem.send(to, &text).await.map_err(|e| e.to_string())?;
            tracing::info!(rule = %f.rule.id, to, "local rule: sms sent");
            Ok(())
        }
        Action::Log { message } => {
            let text = match message {
                Some(tpl) => render(tpl, job),
                None => default_subject(job),
            };
            tracing::info!(rule = %f.rule.id, device = %f.device, "{text}");
            Ok(())
        }
        // Alarms are readings (sent by the run loop); the rest is refused at load.
        _ => Ok(()),
    }
}

/// Sends a command to `device`'s connector and waits for its answer.
pub async fn rpc(
    peers: &Peers,
    device: &str,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    let route = peers.get(device).cloned();
    crate::connector::call(route, device, method, params, RPC_TIMEOUT).await
}
