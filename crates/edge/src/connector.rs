//! The connector contract: what every field connector (Modbus, the SMS modem, later OPC UA)
//! implements, the readings and commands it exchanges with the gateway, its health counters,
//! and [`build`], which makes the connectors a configuration names.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::EdgeConfig;
use crate::error::EdgeError;

/// Values read from one sub-device at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The sub-device's name; empty for the gateway itself (its health).
    pub device: String,
    /// Milliseconds since the Unix epoch, when it was read.
    pub ts: i64,
    pub values: Map<String, Value>,
}

/// The one key of a status reading: the sub-device started (`"connect"`) or stopped
/// (`"disconnect"`) answering. Queued like a reading, so that it reaches the platform in order
/// with the readings around it (and survives an outage); the uplink sends it as
/// `v1/gateway/connect` or `v1/gateway/disconnect`. Register keys may not start with `$`.
pub const STATUS_KEY: &str = "$status";

impl Reading {
    /// A status reading: `device` answers again (`online`) or stopped answering.
    pub fn status(device: &str, ts: i64, online: bool) -> Reading {
        let mut values = Map::new();
        let word = if online { "connect" } else { "disconnect" };
        values.insert(STATUS_KEY.into(), word.into());
        Reading {
            device: device.to_string(),
            ts,
            values,
        }
    }

    /// `Some(online)` for a status reading.
    pub fn status_change(&self) -> Option<bool> {
        match self.values.get(STATUS_KEY)?.as_str()? {
            "connect" if self.values.len() == 1 => Some(true),
            "disconnect" if self.values.len() == 1 => Some(false),
            _ => None,
        }
    }
}

/// The latest status queued for each sub-device that reports one (the ingest task notes them
/// as it queues them): a new uplink session announces (`v1/gateway/connect`) every sub-device
/// except those last known not to answer.
#[derive(Debug, Default)]
pub struct StatusBoard(Mutex<HashMap<String, bool>>);

impl StatusBoard {
    /// Notes `r` if it is a status reading.
    pub fn note(&self, r: &Reading) {
        if let Some(online) = r.status_change() {
            let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
            m.insert(r.device.clone(), online);
        }
    }

    /// Whether `device`'s last queued status is "not answering".
    pub fn offline(&self, device: &str) -> bool {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(device) == Some(&false)
    }
}

/// An RPC (or a shared attribute update) from the platform for one of a connector's devices.
#[derive(Debug)]
pub struct Command {
    pub device: String,
    /// The RPC's method, or the attribute's key.
    pub method: String,
    /// The RPC's params, or the attribute's new value.
    pub params: Value,
    /// True for a shared attribute update (answered `null` when no write maps it).
    pub attribute: bool,
    /// A firmware image to install on the device (firmware.rs); `method` is then `firmware`.
    pub firmware: Option<Arc<crate::firmware::Image>>,
    /// The RPC's result, or why it failed.
    pub reply: oneshot::Sender<Result<Value, String>>,
}

/// A sub-device as the platform sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubDevice {
    pub name: String,
    pub profile: String,
    /// Its connector can install firmware on it (firmware.rs).
    pub firmware: bool,
}

/// Where commands for each sub-device go (every connector's devices).
pub type Peers = Arc<HashMap<String, mpsc::Sender<Command>>>;

/// What a running connector is given.
pub struct ConnectorIo {
    pub readings: mpsc::Sender<Reading>,
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: watch::Receiver<bool>,
    /// The other connectors' devices, for connectors that relay commands (SMS).
    pub peers: Peers,
}

/// A running connector's future.
pub type ConnectorTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One field connector: reads its devices into readings, carries out commands.
pub trait Connector: Send {
    /// The kind it was built by (`modbus`).
    fn kind(&self) -> &'static str;
    /// Its name, unique in the configuration.
    fn name(&self) -> &str;
    /// The sub-devices it reports for.
    fn devices(&self) -> Vec<SubDevice>;
    /// Its health counters, shared with the gateway's health report.
    fn health(&self) -> Arc<Health>;
    /// Runs until `io.shutdown` turns true. Must never end on a device error.
    fn run(self: Box<Self>, io: ConnectorIo) -> ConnectorTask;
    /// A sender for outbound SMS, if this connector drives a modem (for local rules).
    fn sms_sender(&self) -> Option<modem::ModemHandle> {
        None
    }
}

/// A connector's health: reported as the gateway's telemetry (`<name>.connected`, ...).
#[derive(Debug, Default)]
pub struct Health {
    pub connected: AtomicBool,
    /// Last successful exchange with the device (ms since the epoch; 0 = never).
    pub last_success: AtomicI64,
    /// Every failure: connection, timeout, Modbus exception, bad data.
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub exceptions: AtomicU64,
    /// Connections (re)established.
    pub connects: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Further counters a connector reports (`sms_sent`, `signal`...).
    pub gauges: Mutex<BTreeMap<&'static str, i64>>,
}

impl Health {
    /// Sets a further counter.
    pub fn gauge(&self, key: &'static str, value: i64) {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
    }

    /// Counts an error; true when its message differs from the last one (worth logging).
    pub fn error(&self, message: String) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        let new = last.as_deref() != Some(message.as_str());
        *last = Some(message);
        new
    }

    /// Records a successful exchange at `ts`.
    pub fn success(&self, ts: i64) {
        self.last_success.store(ts, Ordering::Relaxed);
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// The counters as telemetry keys `<prefix>.<counter>`.
    pub fn report(&self, prefix: &str, out: &mut Map<String, Value>) {
        let r = Ordering::Relaxed;
        let mut put = |k: &str, v: Value| {
            out.insert(format!("{prefix}.{k}"), v);
        };
        put("connected", self.connected.load(r).into());
        put("last_success", self.last_success.load(r).into());
        put("errors", self.errors.load(r).into());
        put("timeouts", self.timeouts.load(r).into());
        put("exceptions", self.exceptions.load(r).into());
        put("connects", self.connects.load(r).into());
        for (k, v) in self.gauges.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            put(k, (*v).into());
        }
        // The platform refuses nulls (and with them the whole message): absent when none.
        if let Some(e) = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            put("last_error", Value::String(e));
        }
    }
}

/// Builds one connector by its kind's name from its configuration table.
pub fn build(
    kind: &str,
    config: &EdgeConfig,
    index: usize,
) -> Result<Box<dyn Connector>, EdgeError> {
    match kind {
        "modbus" => Ok(Box::new(crate::modbus::ModbusConnector::new(
            config.modbus[index].clone(),
        )?)),
        "sms-modem" => match &config.modem {
            Some(m) => Ok(Box::new(crate::sms::SmsConnector::new(m.clone())?)),
            None => Err(EdgeError::Config("no [modem] configured".into())),
        },
        other => Err(EdgeError::Config(format!(
            "unknown connector kind {other:?}"
        ))),
    }
}

/// Every connector `config` names; RTU devices on one port share its line.
pub fn build_all(config: &EdgeConfig) -> Result<Vec<Box<dyn Connector>>, EdgeError> {
    let mut out: Vec<Box<dyn Connector>> = Vec::new();
    let lines = crate::modbus::shared_lines(&config.modbus);
    for (i, m) in config.modbus.iter().enumerate() {
        let line = m
            .port
            .as_ref()
            .and_then(|p| lines.get(p))
            .filter(|_| m.transport == crate::config::Transport::Rtu);
        match line {
            Some(line) => out.push(Box::new(crate::modbus::ModbusConnector::on_line(
                m.clone(),
                line.clone(),
                true,
            )?)),
            None => out.push(build("modbus", config, i)?),
        }
    }
    if config.modem.is_some() {
        out.push(build("sms-modem", config, 0)?);
    }
    Ok(out)
}

/// Carries out an RPC on `device` through its connector's channel (`route`, `None` when no
/// connector has the device) and waits up to `timeout` for the answer: how the uplink, the SMS
/// commands and the local rules all reach a device.
pub async fn call(
    route: Option<mpsc::Sender<Command>>,
    device: &str,
    method: &str,
    params: Value,
    timeout: std::time::Duration,
) -> Result<Value, String> {
    let tx = route.ok_or_else(|| format!("no connector has a device named {device:?}"))?;
    let (reply, rx) = oneshot::channel();
    let cmd = Command {
        device: device.to_string(),
        method: method.to_string(),
        params,
        attribute: false,
        firmware: None,
        reply,
    };
    tx.send(cmd)
        .await
        .map_err(|_| "the connector stopped".to_string())?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the connector stopped".into()),
        Err(_) => Err("the connector did not answer in time".into()),
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Now in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_readings_are_told_apart() {
        let down = Reading::status("pump", 7, false);
        assert_eq!(down.status_change(), Some(false));
        assert_eq!(Reading::status("pump", 8, true).status_change(), Some(true));
        let mut other = down.clone();
        other.values.insert("pressure".into(), 2.into());
        assert_eq!(
            other.status_change(),
            None,
            "a reading with values is no status"
        );
        let board = StatusBoard::default();
        board.note(&down);
        board.note(&other);
        assert!(board.offline("pump") && !board.offline("valve"));
        board.note(&Reading::status("pump", 9, true));
        assert!(!board.offline("pump"));
    }
}
