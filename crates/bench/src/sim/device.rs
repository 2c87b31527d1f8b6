//! What every simulated device shares whatever its transport: its name and token, its model
//! (stepped by wall-clock time), and the run's counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::models::Model;

/// One simulated device.
pub struct SimDevice {
    pub name: String,
    pub token: String,
    state: Mutex<Stepper>,
}

/// A model and when it was last stepped.
struct Stepper {
    model: Box<dyn Model>,
    last: Option<Instant>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

impl SimDevice {
    pub fn new(name: String, token: String, model: Box<dyn Model>) -> SimDevice {
        SimDevice {
            name,
            token,
            state: Mutex::new(Stepper { model, last: None }),
        }
    }

    /// Steps the model to now and returns the telemetry payload `{"ts":..,"values":{..}}`.
    pub fn report(&self) -> String {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // The first report covers one second, so rates look right from the start.
        let dt = s.last.map_or(1.0, |l| (now - l).as_secs_f64());
        s.last = Some(now);
        let ts = now_ms();
        let values = s.model.step(ts, dt);
        json!({"ts": ts, "values": values}).to_string()
    }

    /// Answers an RPC request: the model's result, or `{"error": ..}`.
    pub fn answer(&self, method: &str, params: &Value) -> Value {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.model.rpc(method, params) {
            Ok(v) => v,
            Err(e) => json!({ "error": e }),
        }
    }
}

/// The run's counters (all devices).
#[derive(Debug, Default)]
pub struct Stats {
    /// Telemetry messages sent.
    pub sent: AtomicU64,
    /// Telemetry messages the platform acknowledged (MQTT PUBACK, HTTP 200, CoAP 2.04).
    pub acked: AtomicU64,
    /// Failures: refused messages, lost connections, failed requests.
    pub errors: AtomicU64,
    /// RPCs answered.
    pub rpcs: AtomicU64,
    /// Devices connected now (MQTT sessions; HTTP and CoAP devices count while running).
    pub connected: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Counts one connected device for as long as it lives.
pub struct Connected<'a>(&'a Stats);

impl<'a> Connected<'a> {
    pub fn new(stats: &'a Stats) -> Connected<'a> {
        Stats::add(&stats.connected, 1);
        Connected(stats)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once `stop` is true (or its sender is gone); holds no borrow of the value.
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// When a device that answers RPCs over a request/response transport (HTTP, CoAP) reports:
/// every `interval`, and at once after a command changed its state (`report_now`).
pub struct Reports<'a> {
    tick: tokio::time::Interval,
    report_now: &'a tokio::sync::Notify,
}

impl<'a> Reports<'a> {
    pub fn new(interval: std::time::Duration, report_now: &'a tokio::sync::Notify) -> Self {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Reports { tick, report_now }
    }

    /// Waits for the next report; `false` once `stop` is true.
    pub async fn next(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = self.tick.tick() => true,
            _ = self.report_now.notified() => true,
            _ = stopped(stop) => false,
        }
    }
}
