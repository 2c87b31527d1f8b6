//! The SMS modem connector (`[modem]`): a GSM modem driven by the `modem` crate. Command
//! messages from whitelisted numbers with the PIN become RPCs to the mapped sub-device and the
//! result (or the error) goes back by SMS; other messages are refused, logged and counted.
//! With `name` set the modem is itself a sub-device taking `sendSms {"to","text"}` from the
//! platform; local rules get a sender from `Connector::sms_sender`.
//!
//! Health (`<name>.connected`, `.signal`, `.registration`, `.sms_sent`, `.sms_received`,
//! `.sms_failed`, `.sms_refused`, `.sms_delivered`, `.sms_undelivered`) is copied from the
//! modem's counters once a second.

pub mod commands;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use modem::service::{self, ModemEvent, ModemHandle, ModemTask, Received};
use modem::{Mode, Settings};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::{ModemConfig, ModemMode};
use crate::connector::{
    now_ms, stopped, Command, Connector, ConnectorIo, ConnectorTask, Health, Peers, Reading,
    SubDevice,
};
use crate::error::EdgeError;
pub use commands::normalize;
use commands::{Commands, Verdict};

/// Longest wait for the sub-device's answer to a command message.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A GSM modem as a connector.
pub struct SmsConnector {
    config: ModemConfig,
    commands: Arc<Commands>,
    health: Arc<Health>,
    handle: ModemHandle,
    task: ModemTask,
    events: mpsc::Receiver<ModemEvent>,
}

impl SmsConnector {
    /// The connector for `[modem]`; the modem is opened when it runs.
    pub fn new(config: ModemConfig) -> Result<SmsConnector, EdgeError> {
        let opener = service::serial(config.port.clone(), config.baud);
        Self::with_opener(config, opener)
    }

    /// The same with the port opened by `opener` (tests: a simulator on a duplex stream).
    pub fn with_opener(
        config: ModemConfig,
        opener: service::Opener,
    ) -> Result<SmsConnector, EdgeError> {
        let settings = Settings {
            pin: config.pin.clone(),
            mode: match config.mode {
                ModemMode::Pdu => Mode::Pdu,
                ModemMode::Text => Mode::Text,
            },
            status_reports: config.status_reports,
            command_timeout: config.timeout,
            send_timeout: config.timeout.max(Duration::from_secs(60)),
            registration_timeout: config.registration_timeout,
            ..Settings::default()
        };
        let name = config.name.clone().unwrap_or_else(|| "modem".into());
        let (handle, task, events) =
            service::prepare(name, opener, settings, config.check_interval);
        Ok(SmsConnector {
            commands: Arc::new(Commands::new(
                &config.allowed_numbers,
                config.command_pin.clone(),
                &config.commands,
            )),
            config,
            health: Arc::new(Health::default()),
            handle,
            task,
            events,
        })
    }

    async fn run_loop(self, mut io: ConnectorIo) {
        let SmsConnector {
            config,
            commands,
            health,
            handle,
            task,
            mut events,
        } = self;
        // With a name the modem is a sub-device: its status goes to the platform once it has
        // answered (not while it starts: registration takes a while), and when it stops.
        let mut announced = false;
        let modem_task = tokio::spawn(task.run());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let ctx = Arc::new(Ctx {
            handle: handle.clone(),
            commands,
            health: health.clone(),
            peers: io.peers.clone(),
        });
        loop {
            tokio::select! {
                _ = stopped(&mut io.shutdown) => break,
                Some(cmd) = io.commands.recv() => {
                    let h = handle.clone();
                    tokio::spawn(async move {
                        let result = send_sms_rpc(&h, &cmd).await;
                        let _ = cmd.reply.send(result);
                    });
                }
                Some(event) = events.recv() => {
                    if let ModemEvent::Received(m) = event {
                        let ctx = ctx.clone();
                        tokio::spawn(async move { ctx.incoming(m).await });
                    }
                }
                _ = tick.tick() => {
                    copy_stats(&handle, &health);
                    let up = health.connected.load(Ordering::Relaxed);
                    if let Some(name) = config.name.as_deref().filter(|_| up != announced) {
                        announced = up;
                        if io.readings.send(Reading::status(name, now_ms(), up)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        drop(ctx);
        drop(handle);
        modem_task.abort();
    }
}

/// `sendSms {"to","text"}` for the modem's own sub-device.
async fn send_sms_rpc(h: &ModemHandle, cmd: &Command) -> Result<Value, String> {
    if cmd.attribute {
        return Ok(Value::Null);
    }
    if cmd.method != "sendSms" {
        return Err(format!(
            "unknown method {:?} (the modem has sendSms)",
            cmd.method
        ));
    }
    let (Some(to), Some(text)) = (cmd.params["to"].as_str(), cmd.params["text"].as_str()) else {
        return Err("sendSms needs params {\"to\": number, \"text\": text}".into());
    };
    let sent = h.send(to, text).await.map_err(|e| e.to_string())?;
    Ok(json!({"ok": true, "parts": sent.references.len()}))
}

fn copy_stats(h: &ModemHandle, health: &Health) {
    let s = &h.stats;
    let r = Ordering::Relaxed;
    let connected = s.connected.load(r);
    if connected {
        health.success(now_ms());
    } else if let Some(e) = s.last_error() {
        health
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(e);
    }
    health.connected.store(connected, r);
    health.connects.store(s.connects.load(r), r);
    health.errors.store(s.errors.load(r), r);
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    health.gauge("signal", s.signal.load(r));
    health.gauge("registration", s.registration.load(r));
    health.gauge("sms_sent", as_i64(s.sent.load(r)));
    health.gauge("sms_received", as_i64(s.received.load(r)));
    health.gauge("sms_failed", as_i64(s.failed.load(r)));
    health.gauge("sms_delivered", as_i64(s.delivered.load(r)));
    health.gauge("sms_undelivered", as_i64(s.undelivered.load(r)));
}

/// What handling an incoming message needs.
struct Ctx {
    handle: ModemHandle,
    commands: Arc<Commands>,
    health: Arc<Health>,
    peers: Peers,
}

impl Ctx {
    fn refused(&self) {
        let mut g = self.health.gauges.lock().unwrap_or_else(|p| p.into_inner());
        *g.entry("sms_refused").or_insert(0) += 1;
    }

    async fn reply(&self, to: &str, text: &str) {
        if let Err(e) = self.handle.send(to, text).await {
            tracing::warn!(to, error = %e, "sms reply not sent");
        }
    }

    async fn incoming(&self, m: Received) {
        if !self.commands.any() {
            tracing::info!(from = %m.from, "sms received (no [[modem.commands]] configured)");
            return;
        }
        match self.commands.check(&m.from, &m.text) {
            Verdict::UnknownNumber => {
                self.refused();
                tracing::warn!(from = %m.from, "sms command refused: number not in allowed_numbers");
            }
            Verdict::WrongPin => {
                self.refused();
                tracing::warn!(from = %m.from, "sms command refused: wrong or missing PIN");
                self.reply(&m.from, "Refused: wrong or missing PIN").await;
            }
            Verdict::UnknownCommand(c) => {
                tracing::warn!(from = %m.from, command = %c, "sms command unknown");
                let text = format!("Unknown command {c:?}. Known: {}", self.commands.known());
                self.reply(&m.from, &text).await;
            }
            Verdict::Rpc {
                command,
                device,
                method,
                params,
            } => {
                tracing::info!(from = %m.from, command = %command, device = %device, "sms command");
                let result = self.rpc(&device, &method, params).await;
                let text = match &result {
                    Ok(v) if v.is_null() || v == &json!({"ok": true}) => format!("{command}: OK"),
                    Ok(v) => format!("{command}: OK {v}"),
                    Err(e) => format!("{command}: FAILED {e}"),
                };
                self.reply(&m.from, &text).await;
            }
        }
    }

    async fn rpc(&self, device: &str, method: &str, params: Value) -> Result<Value, String> {
        let route = self.peers.get(device).cloned();
        crate::connector::call(route, device, method, params, RPC_TIMEOUT).await
    }
}

#[cfg(test)]
mod tests;

impl Connector for SmsConnector {
    fn kind(&self) -> &'static str {
        "sms-modem"
    }
    fn name(&self) -> &str {
        self.config.name.as_deref().unwrap_or("modem")
    }
    fn devices(&self) -> Vec<SubDevice> {
        self.config
            .name
            .iter()
            .map(|n| SubDevice {
                name: n.clone(),
                profile: "default".into(),
                firmware: false,
            })
            .collect()
    }
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }
    fn run(self: Box<Self>, io: ConnectorIo) -> ConnectorTask {
        Box::pin(self.run_loop(io))
    }
    /// Usable once the connector runs (before, sends wait up to `hold` for the modem).
    fn sms_sender(&self) -> Option<ModemHandle> {
        Some(self.handle.clone())
    }
}
