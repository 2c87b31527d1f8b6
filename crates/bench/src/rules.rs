//! `ironbridge bench rules`: the rule engine end to end, from a device's MQTT publish to the
//! alarm arriving on a WebSocket client of the management API.
//!
//! Set-up over REST (logging in as `admin`, like `bench ingest`): `--profiles` profiles,
//! `--devices` devices spread over them round robin, `--rules` profile-scoped rules spread the
//! same way (rule `r` belongs to profile `r % profiles`), plus `--tenant-rules` tenant-wide rules
//! that never hold (they only add evaluations). Rule `r`'s condition is a band no other rule
//! shares, `temp > (100+r).0 && temp < (101+r).0`, with `clear = "temp < 40.0"` and an alarm
//! action of its own type (`rules-bench r<r>`).
//!
//! Then one WebSocket client logs in, sends `{"subscribe":"alarms"}`, and every device connects
//! over MQTT and publishes `{"temp":T,"sent_us":S}` on `v1/devices/me/telemetry` at
//! `--rate / --devices` messages per second (phases spread evenly), `S` being the send time in
//! microseconds of this machine's monotonic clock. Most messages are low (`temp` 20-21: the
//! clear condition); a fraction `--alarm-ratio` is high: `temp` in the middle of the band of one
//! of the rules of the device's profile (cycling through them), so exactly one rule fires and
//! exactly one alarm is raised, and the device's next message (low) clears it again. Alarms are
//! one per (device, type) until cleared: the load raises and clears them continually.
//!
//! Latency = arrival of the alarm's raise on the WebSocket − `sent_us` of the message that
//! raised it (the alarm's details carry the values the condition saw). Counted for messages sent
//! inside the measured window (after `--warmup`); alarms still on their way when sending stops
//! are waited for (`--drain`). Missing alarms (expected − received) are reported, never hidden.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use mqtt_codec::{Packet, Protocol, Publish, QoS};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Transport;
use crate::client::{ConnectOptions, Incoming, MqttConn};
use crate::endpoint::{parse_loopback, Endpoint};
use crate::engine::procfs;
use crate::error::BenchError;
use crate::report::thousands;

/// `bench rules` options.
#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    /// Ironbridge's HTTP address: REST set-up and the live WebSocket (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Ironbridge's MQTT address (loopback only).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// The `admin` password.
    #[arg(long, env = "IRONBRIDGE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Devices, one MQTT connection each.
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Profile-scoped rules (each with its own alarm type).
    #[arg(long, default_value_t = 1000)]
    pub rules: usize,
    /// Profiles the devices and rules are spread over; 0 = one per 100 devices (at most
    /// `--rules`).
    #[arg(long, default_value_t = 0)]
    pub profiles: usize,
    /// Tenant-wide rules that never hold (`temp > 1e9`): more evaluations per message.
    #[arg(long, default_value_t = 0)]
    pub tenant_rules: usize,
    /// Messages per second, all devices together.
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Fraction of the messages that raise an alarm (at most 0.5: the next one clears it).
    #[arg(long, default_value_t = 0.01)]
    pub alarm_ratio: f64,
    /// QoS of the telemetry (0 or 1; with 1 the PUBACKs are counted).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Measured window (`30s`, `2m`, `500ms` or seconds).
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    pub duration: f64,
    /// Traffic before the window, not counted.
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    pub warmup: f64,
    /// Longest wait after sending stops for alarms still on their way.
    #[arg(long, default_value = "10s", value_parser = parse_seconds)]
    pub drain: f64,
    /// REST requests in flight at once while creating and deleting (one connection each).
    #[arg(long, default_value_t = 4)]
    pub http_connections: usize,
    /// MQTT handshakes in flight at once while connecting the devices.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Devices whose telemetry the WebSocket client also subscribes to (key `sent_us`): the
    /// publish → telemetry-on-the-WebSocket latency without the rule engine, for comparison.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=99))]
    pub probe_devices: u64,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The server's process id: its CPU time and RSS over the window are reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Leave the devices, profiles and rules in place afterwards (default: deleted).
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `30s`, `2m`, `500ms`, `1.5` (seconds).
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected seconds, e.g. 30s, 2m, 500ms"))?;
    if !v.is_finite() || !(0.0..=86_400.0).contains(&(v * scale)) {
        return Err(format!("{s:?}: expected 0 to 86400 seconds"));
    }
    Ok(v * scale)
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyMs {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencyMs {
    fn of(h: &Histogram<u64>) -> Option<LatencyMs> {
        let ms = |us: u64| us as f64 / 1000.0;
        (!h.is_empty()).then(|| LatencyMs {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

/// The server's resources over the measured window (`--server-pid`).
#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    /// CPU seconds per wall second (2.0 = both cores of this machine).
    pub cpu_cores: f64,
    pub rss_mib: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RulesReport {
    pub devices: usize,
    pub profiles: usize,
    pub rules: usize,
    pub tenant_rules: usize,
    /// Rules each message is evaluated against (its profile's and the tenant-wide ones).
    pub rules_per_message: f64,
    pub qos: u8,
    pub target_rate: f64,
    pub alarm_ratio: f64,
    pub seconds: f64,
    /// Messages sent in the window and their rate.
    pub published: u64,
    pub publish_rate: f64,
    /// QoS 1: PUBACKs of messages sent in the window.
    pub acked: Option<u64>,
    /// Conditions (or clear conditions) the server evaluated per second: messages × rules per
    /// message.
    pub evaluations_per_s: f64,
    /// High messages sent in the window (each should raise one alarm).
    pub alarms_expected: u64,
    /// Raises of those alarms seen on the WebSocket.
    pub alarms_received: u64,
    pub alarms_missing: u64,
    /// Clears seen on the WebSocket (whole run).
    pub clears_received: u64,
    pub alarm_rate: f64,
    /// Publish → alarm raise on the WebSocket.
    pub latency_ms: Option<LatencyMs>,
    /// Publish → telemetry update on the WebSocket (the `--probe-devices`): the same path
    /// without the rule engine and the alarm.
    pub telemetry_latency_ms: Option<LatencyMs>,
    pub target_p99_ms: f64,
    pub target_met: bool,
    /// `{"type":"dropped"}` counts from the server (its queue for this client overflowed).
    pub ws_dropped: u64,
    pub server: Option<ServerUsage>,
    /// Changes of a few server counters over the run (from `/metrics`).
    pub server_counters: BTreeMap<String, f64>,
    pub setup_seconds: BTreeMap<&'static str, f64>,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Server counters worth seeing next to the latency.
const COUNTERS: &[&str] = &[
    "rule_events_lagged_total",
    "rule_fired_total",
    "rule_errors_total",
    "rule_action_failures_total",
    "api_ws_dropped_total",
    "telemetry_points_total",
];

/// The layout of a run: which profile a device and a rule belong to.
#[derive(Debug, Clone)]
struct Plan {
    devices: usize,
    profiles: usize,
    rules: usize,
    /// Messages between two high ones of one device.
    period: u64,
}

impl Plan {
    fn new(a: &RulesArgs) -> Result<Plan, BenchError> {
        let bad = |m: String| Err(BenchError::Invalid(m));
        if a.devices == 0 || a.rules == 0 {
            return bad("--devices and --rules must be at least 1".into());
        }
        let profiles = match a.profiles {
            0 => (a.devices / 100).clamp(1, a.rules),
            p => p,
        };
        if profiles > a.rules || profiles > a.devices {
            return bad(format!(
                "--profiles {profiles}: at most --rules and --devices (every profile needs a rule and a device)"
            ));
        }
        if !(a.alarm_ratio > 0.0 && a.alarm_ratio <= 0.5) {
            return bad("--alarm-ratio: expected more than 0 and at most 0.5".into());
        }
        if !(a.rate.is_finite() && a.rate > 0.0) {
            return bad("--rate: expected messages per second > 0".into());
        }
        if a.duration <= 0.0 {
            return bad("--duration must be more than 0".into());
        }
        Ok(Plan {
            devices: a.devices,
            profiles,
            rules: a.rules,
            period: (1.0 / a.alarm_ratio).round().max(2.0) as u64,
        })
    }

    /// The rules of profile `p`.
    fn rules_of(&self, p: usize) -> impl Iterator<Item = usize> + '_ {
        (p..self.rules).step_by(self.profiles)
    }

    /// Message `seq` of device `d`: `Some(rule)` when it is a high one for that rule.
    fn high(&self, d: usize, seq: u64) -> Option<usize> {
        let phase = (d as u64).wrapping_mul(7919) % self.period;
        let n = seq + phase;
        if !n.is_multiple_of(self.period) {
            return None;
        }
        let p = d % self.profiles;
        let count = self.rules_of(p).count() as u64;
        let k = (n / self.period) % count;
        Some(p + k as usize * self.profiles)
    }

    fn band(r: usize) -> (u64, u64) {
        (100 + r as u64, 101 + r as u64)
    }
}

/// What every task of the run updates.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    sent_in_window: AtomicU64,
    acked_in_window: AtomicU64,
    high_in_window: AtomicU64,
    raises: AtomicU64,
    raises_in_window: AtomicU64,
    clears: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    /// Largest latency (µs) since the last progress line.
    max_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().expect("not poisoned") = Some(e.to_string());
    }
}

fn now_us() -> u64 {
    procfs::mono_ns() / 1000
}

/// Runs the benchmark and prints its report.
pub fn run(a: RulesArgs) -> Result<(), BenchError> {
    parse_loopback(&a.mqtt.ip().to_string())?;
    parse_loopback(&a.http.ip().to_string())?;
    let plan = Plan::new(&a)?;
    let password = a.admin_password.clone().ok_or_else(|| {
        BenchError::Rules("--admin-password (or IRONBRIDGE_ADMIN_PASSWORD) is required".into())
    })?;
    procfs::raise_open_files_limit();
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let mut setup = BTreeMap::new();
    let t = Instant::now();
    let made = create(&a, &plan, &password, &run)?;
    setup.insert("rest", t.elapsed().as_secs_f64());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    // The hard watchdog: the process never outlives its bound.
    let bound = a.warmup + a.duration + a.drain + 600.0;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(bound));
        eprintln!("watchdog: exceeded {bound:.0} s, exiting");
        std::process::exit(3);
    });
    let result = runtime.block_on(traffic(&a, &plan, &made, &password, &mut setup));
    runtime.shutdown_timeout(Duration::from_secs(1));
    if !a.keep {
        let t = Instant::now();
        if let Err(e) = delete(&a, &password, &made) {
            eprintln!("cleaning up: {e}");
        }
        setup.insert("cleanup", t.elapsed().as_secs_f64());
    }
    let mut report = result?;
    report.setup_seconds = setup;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        )
    } else {
        write_table(&report, &mut out)
    }
    .map_err(BenchError::Output)?;
    Ok(())
}

/// What the set-up created.
struct Made {
    profiles: Vec<String>,
    /// Device ids and access tokens, in device order.
    devices: Vec<(String, String)>,
    rules: Vec<String>,
}

fn create(a: &RulesArgs, plan: &Plan, password: &str, run: &str) -> Result<Made, BenchError> {
    let say = |m: String| {
        if !a.quiet {
            eprintln!("[rules] {m}");
        }
    };
    let token = login(a.http, password)?;
    let mut http = Http::new(a.http, Some(token.clone()));
    let mut profiles = Vec::new();
    for p in 0..plan.profiles {
        let body = json!({"name": format!("rules-bench-{run}-p{p}")});
        let v = http.created("/api/v1/profiles", &body)?;
        match v["id"].as_str() {
            Some(id) => profiles.push(id.to_string()),
            None => return Err(BenchError::Rules(format!("creating a profile: {v}"))),
        }
    }
    say(format!(
        "{} profiles; creating {} devices",
        profiles.len(),
        plan.devices
    ));
    let started = Instant::now();
    let devices = parallel(a, &token, plan.devices, |http, d| {
        let body = json!({"name": format!("rules-bench-{run}-d{d}"), "profile": profiles[d % plan.profiles]});
        let v = http.created("/api/v1/devices", &body)?;
        match (v["id"].as_str(), v["access_token"].as_str()) {
            (Some(id), Some(token)) => Ok((id.to_string(), token.to_string())),
            _ => Err(BenchError::Rules(format!("creating a device: {v}"))),
        }
    })?;
    say(format!(
        "{} devices in {:.1} s; creating {} rules",
        devices.len(),
        started.elapsed().as_secs_f64(),
        plan.rules + a.tenant_rules
    ));
    let rules = parallel(a, &token, plan.rules + a.tenant_rules, |http, r| {
        let body = if r < plan.rules {
            let (lo, hi) = Plan::band(r);
            json!({
                "name": format!("rules-bench-{run}-r{r}"),
                "scope": {"profile": profiles[r % plan.profiles]},
                "trigger": "telemetry",
                "condition": format!("temp > {lo}.0 && temp < {hi}.0"),
                "clear": "temp < 40.0",
                "actions": [{"type": "alarm", "alarm": format!("rules-bench r{r}"), "severity": "MAJOR"}],
            })
        } else {
            json!({
                "name": format!("rules-bench-{run}-t{}", r - plan.rules),
                "scope": {"tenant": true},
                "trigger": "telemetry",
                "condition": "temp > 1000000000.0",
                "actions": [{"type": "log"}],
            })
        };
        let v = http.created("/api/v1/rules", &body)?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BenchError::Rules(format!("creating a rule: {v}")))
    })?;
    say(format!("{} rules", rules.len()));
    Ok(Made {
        profiles,
        devices,
        rules,
    })
}

/// Removes what [`create`] made: rules, devices (with their telemetry and alarms), profiles.
fn delete(a: &RulesArgs, password: &str, made: &Made) -> Result<(), BenchError> {
    let token = login(a.http, password)?;
    let del = |what: &'static str, ids: &[String]| {
        parallel(a, &token, ids.len(), |http, i| {
            http.request("DELETE", &format!("/api/v1/{what}/{}", ids[i]), None)
                .map(|_| ())
        })
    };
    del("rules", &made.rules)?;
    let devices: Vec<String> = made.devices.iter().map(|(id, _)| id.clone()).collect();
    del("devices", &devices)?;
    del("profiles", &made.profiles)?;
    Ok(())
}

/// Runs `f(http, i)` for `i` in `0..n` over `--http-connections` threads; results in order.
fn parallel<T: Send>(
    a: &RulesArgs,
    token: &str,
    n: usize,
    f: impl Fn(&mut Http, usize) -> Result<T, BenchError> + Sync,
) -> Result<Vec<T>, BenchError> {
    let workers = a.http_connections.clamp(1, 64);
    let results: Vec<Result<Vec<(usize, T)>, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let f = &f;
                s.spawn(move || {
                    let mut http = Http::new(a.http, Some(token.to_string()));
                    (w..n)
                        .step_by(workers)
                        .map(|i| f(&mut http, i).map(|t| (i, t)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker panicked"))
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

fn login(addr: SocketAddr, password: &str) -> Result<String, BenchError> {
    let body = json!({"username": "admin", "password": password});
    let (status, v) = Http::new(addr, None).request("POST", "/api/v1/auth/login", Some(&body))?;
    match v["token"].as_str() {
        Some(t) if status == 200 => Ok(t.to_string()),
        _ => Err(BenchError::Rules(format!("login failed: {status} {v}"))),
    }
}

/// A small HTTP/1.1 client on one keep-alive loopback connection.
struct Http {
    addr: SocketAddr,
    bearer: Option<String>,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(addr: SocketAddr, bearer: Option<String>) -> Http {
        Http {
            addr,
            bearer,
            conn: None,
        }
    }

    /// A POST that must answer 201; its JSON body.
    fn created(&mut self, path: &str, body: &Value) -> Result<Value, BenchError> {
        match self.request("POST", path, Some(body))? {
            (201, v) => Ok(v),
            (status, v) => Err(BenchError::Rules(format!("POST {path}: {status} {v}"))),
        }
    }

    /// (status, JSON body or `null`); a 2xx is not required.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BenchError> {
        let body = body.map(Value::to_string).unwrap_or_default();
        // A kept-alive connection the server has closed fails before any answer: once more
        // on a fresh one.
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            match self.exchange(method, path, &body) {
                Ok((status, text)) => {
                    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
                    return Ok((status, v));
                }
                Err(e) => {
                    self.conn = None;
                    if !(reused && attempt == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof) {
                        return Err(BenchError::Rules(format!(
                            "HTTP {method} {path} on {}: {e}",
                            self.addr
                        )));
                    }
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    fn exchange(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        use std::io::{Error, ErrorKind};
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected");
        let auth = self
            .bearer
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let s = conn.get_mut();
        s.write_all(format!("{head}{body}").as_bytes())?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed before answering",
            ));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::InvalidData, format!("status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| Error::new(ErrorKind::InvalidData, "chunk size"))?;
                let mut chunk = vec![0; size + 2];
                conn.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            conn.read_exact(&mut out)?;
        } else if status != 204 && status != 304 {
            conn.read_to_end(&mut out)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }
}

/// Sums of the [`COUNTERS`] in the server's `/metrics` (empty when it cannot be read).
fn server_counters(addr: SocketAddr) -> BTreeMap<String, f64> {
    let Ok((200, text)) = Http::new(addr, None).exchange("GET", "/metrics", "") else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if COUNTERS.contains(&name) {
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *out.entry(name.to_string()).or_insert(0.0) += v;
            }
        }
    }
    out
}

/// The phases, on both clocks.
#[derive(Clone, Copy)]
struct Timeline {
    go: Instant,
    end: Instant,
    /// The measured window in [`now_us`] time.
    window_us: (u64, u64),
}

async fn traffic(
    a: &RulesArgs,
    plan: &Plan,
    made: &Made,
    password: &str,
    setup: &mut BTreeMap<&'static str, f64>,
) -> Result<RulesReport, BenchError> {
    let counters = Arc::new(Counters::default());
    let say = |m: String| {
        if !a.quiet {
            eprintln!("[rules] {m}");
        }
    };
    // The WebSocket first, so that no alarm is missed; on its own thread, so that its arrival
    // times do not wait for the publishers.
    let token = login(a.http, password)?;
    let cell = Arc::new(OnceLock::new());
    let stop = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(Hists::default()));
    let probes: Vec<String> = made
        .devices
        .iter()
        .take(a.probe_devices as usize)
        .map(|(id, _)| id.clone())
        .collect();
    let reader = spawn_reader(
        a.http,
        token,
        probes,
        cell.clone(),
        counters.clone(),
        hist.clone(),
        stop.clone(),
    )?;
    // Devices connect.
    let t = Instant::now();
    let endpoint = Arc::new(Endpoint {
        addr: a.mqtt,
        transport: Transport::Tcp,
        ws_url: String::new(),
        tls: None,
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut connecting = Vec::with_capacity(made.devices.len());
    for (d, (_, token)) in made.devices.iter().enumerate() {
        let (gate, endpoint, token) = (gate.clone(), endpoint.clone(), token.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore open");
            let opts = ConnectOptions {
                protocol: Protocol::V311,
                client_id: format!("rules-bench-{d}"),
                keep_alive: 600,
                username: Some(token),
                password: None,
            };
            tokio::time::timeout(
                Duration::from_secs(30),
                MqttConn::connect(&endpoint, None, &opts, 512),
            )
            .await
        }));
    }
    let mut conns = Vec::with_capacity(connecting.len());
    for (d, c) in connecting.into_iter().enumerate() {
        match c.await {
            Ok(Ok(Ok(conn))) => conns.push(conn),
            Ok(Ok(Err(e))) => {
                return Err(BenchError::Rules(format!(
                    "device {d} could not connect: {e}"
                )))
            }
            _ => return Err(BenchError::Rules(format!("device {d}: connect timed out"))),
        }
    }
    setup.insert("mqtt_connect", t.elapsed().as_secs_f64());
    say(format!(
        "{} devices connected in {:.1} s; {:.0} msgs/s for {:.0}+{:.0} s",
        conns.len(),
        t.elapsed().as_secs_f64(),
        a.rate,
        a.warmup,
        a.duration
    ));
    // The timeline.
    let now = Instant::now();
    let mono = now_us();
    let go = now + Duration::from_millis(200);
    let measure = go + Duration::from_secs_f64(a.warmup);
    let end = measure + Duration::from_secs_f64(a.duration);
    let at_us = |i: Instant| mono + (i - now).as_micros() as u64;
    let timeline = Timeline {
        go,
        end,
        window_us: (at_us(measure), at_us(end)),
    };
    let _ = cell.set(timeline);
    let before = server_counters(a.http);
    // Publishers.
    let period = Duration::from_secs_f64(plan.devices as f64 / a.rate);
    let mut tasks = Vec::with_capacity(conns.len());
    for (d, conn) in conns.into_iter().enumerate() {
        let offset = period.mul_f64(d as f64 / plan.devices as f64);
        let (counters, plan) = (counters.clone(), plan.clone());
        let qos = a.qos;
        tasks.push(tokio::spawn(async move {
            let r = device(
                conn,
                d,
                &plan,
                qos,
                timeline,
                go + offset,
                period,
                &counters,
            )
            .await;
            if let Err(e) = r {
                counters.error(format!("device {d}: {e}"));
            }
        }));
    }
    let progress = (!a.quiet).then(|| tokio::spawn(progress(counters.clone(), timeline)));
    tokio::time::sleep_until(measure.into()).await;
    let cpu_at_measure = a.server_pid.and_then(|p| procfs::cpu_seconds(Some(p)));
    tokio::time::sleep_until(end.into()).await;
    let cpu_at_end = a.server_pid.and_then(|p| procfs::cpu_seconds(Some(p)));
    let rss = a
        .server_pid
        .and_then(procfs::rss_kib)
        .map(|k| k as f64 / 1024.0);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    // The drain: until every expected alarm arrived, or nothing came for 2 s, or --drain.
    let expected = counters.high_in_window.load(Relaxed);
    let drain_end = Instant::now() + Duration::from_secs_f64(a.drain);
    let mut last = (counters.raises.load(Relaxed), Instant::now());
    while Instant::now() < drain_end && counters.raises_in_window.load(Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = counters.raises.load(Relaxed);
        if r != last.0 {
            last = (r, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    stop.store(true, Relaxed);
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let after = server_counters(a.http);
    let seconds = a.duration;
    let c = &counters;
    let published = c.sent_in_window.load(Relaxed);
    let received = c.raises_in_window.load(Relaxed);
    let rules_per_message = plan.rules as f64 / plan.profiles as f64 + a.tenant_rules as f64;
    let (latency, telemetry_latency) = {
        let h = hist.lock().expect("not poisoned");
        (LatencyMs::of(&h.alarm), LatencyMs::of(&h.telemetry))
    };
    let target_p99_ms = 10.0;
    let last_error = c.last_error.lock().expect("not poisoned").clone();
    Ok(RulesReport {
        devices: plan.devices,
        profiles: plan.profiles,
        rules: plan.rules,
        tenant_rules: a.tenant_rules,
        rules_per_message,
        qos: a.qos,
        target_rate: a.rate,
        alarm_ratio: a.alarm_ratio,
        seconds,
        published,
        publish_rate: published as f64 / seconds,
        acked: (a.qos == 1).then(|| c.acked_in_window.load(Relaxed)),
        evaluations_per_s: published as f64 * rules_per_message / seconds,
        alarms_expected: expected,
        alarms_received: received,
        alarms_missing: expected.saturating_sub(received),
        clears_received: c.clears.load(Relaxed),
        alarm_rate: received as f64 / seconds,
        target_met: latency.as_ref().is_some_and(|l| l.p99 <= target_p99_ms)
            && received >= expected,
        latency_ms: latency,
        telemetry_latency_ms: telemetry_latency,
        target_p99_ms,
        ws_dropped: c.dropped.load(Relaxed),
        server: match (cpu_at_measure, cpu_at_end) {
            (Some(b), Some(e)) => Some(ServerUsage {
                cpu_cores: (e - b) / seconds,
                rss_mib: rss,
            }),
            _ => None,
        },
        server_counters: after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
            .collect(),
        setup_seconds: BTreeMap::new(),
        errors: c.errors.load(Relaxed),
        last_error,
    })
}

type LiveSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Latencies in µs seen on the live socket.
struct Hists {
    alarm: Histogram<u64>,
    telemetry: Histogram<u64>,
}

impl Default for Hists {
    fn default() -> Self {
        let new = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        Hists {
            alarm: new(),
            telemetry: new(),
        }
    }
}

/// Opens `/api/v1/ws` with the bearer token and subscribes to every alarm, and to the
/// `sent_us` telemetry of the `probes`.
async fn live_socket(
    addr: SocketAddr,
    token: &str,
    probes: &[String],
) -> Result<LiveSocket, BenchError> {
    let fail = |e: String| BenchError::Rules(format!("live WebSocket: {e}"));
    let mut request = format!("ws://{addr}/api/v1/ws")
        .into_client_request()
        .map_err(|e| fail(e.to_string()))?;
    let bearer =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| fail(e.to_string()))?;
    request.headers_mut().insert("Authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut commands = vec![json!({"subscribe": "alarms"})];
    commands.extend(
        probes
            .iter()
            .map(|d| json!({"subscribe": "telemetry", "device": d, "keys": ["sent_us"]})),
    );
    for c in &commands {
        ws.send(Message::text(c.to_string()))
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let wait = async {
        let mut subscribed = 0;
        while let Some(msg) = ws.next().await {
            let Ok(Message::Text(text)) = msg else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
            match v["type"].as_str() {
                Some("subscribed") => {
                    subscribed += 1;
                    if subscribed == commands.len() {
                        return Ok(());
                    }
                }
                Some("error") => return Err(fail(format!("refused: {v}"))),
                _ => {}
            }
        }
        Err(fail("closed before subscribing".into()))
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| fail("no answer to the subscription".into()))??;
    Ok(ws)
}

/// The live socket's reader on a thread of its own (a current-thread runtime), from the
/// subscription until `stop`; returns once subscribed.
fn spawn_reader(
    addr: SocketAddr,
    token: String,
    probes: Vec<String>,
    timeline: Arc<OnceLock<Timeline>>,
    c: Arc<Counters>,
    hist: Arc<Mutex<Hists>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, BenchError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("live-ws".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(BenchError::Runtime(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let mut ws = match live_socket(addr, &token, &probes).await {
                    Ok(ws) => {
                        let _ = ready_tx.send(Ok(()));
                        ws
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut check = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        msg = ws.next() => {
                            let arrived = now_us();
                            match msg {
                                Some(Ok(Message::Text(text))) => {
                                    update(text.as_str(), arrived, timeline.get(), &c, &hist)
                                }
                                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                                    if !stop.load(Relaxed) {
                                        c.error("the live WebSocket closed");
                                    }
                                    return;
                                }
                                Some(Ok(_)) => {}
                            }
                        }
                        _ = check.tick() => {
                            if stop.load(Relaxed) {
                                let _ = ws.close(None).await;
                                return;
                            }
                        }
                    }
                }
            });
        })
        .map_err(|e| BenchError::Rules(format!("starting the WebSocket thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| BenchError::Rules("the WebSocket thread ended".into()))??;
    Ok(thread)
}

/// One message from the live socket: alarm raises and probe telemetry are timed, clears and
/// drops counted.
fn update(
    text: &str,
    arrived: u64,
    timeline: Option<&Timeline>,
    c: &Counters,
    hist: &Mutex<Hists>,
) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let inside =
        |sent: u64| timeline.is_some_and(|t| (t.window_us.0..t.window_us.1).contains(&sent));
    match v["type"].as_str() {
        Some("telemetry") => {
            let points = v["data"]["sent_us"].as_array().into_iter().flatten();
            for sent in points.filter_map(|p| p["value"].as_f64()) {
                let sent = sent as u64;
                if inside(sent) {
                    let us = arrived.saturating_sub(sent).max(1);
                    let _ = hist.lock().expect("not poisoned").telemetry.record(us);
                }
            }
        }
        Some("alarm") => {
            let alarm = &v["alarm"];
            let ours = alarm["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("rules-bench r"));
            if !ours {
                return;
            }
            if alarm["cleared"].as_bool() == Some(true) {
                c.clears.fetch_add(1, Relaxed);
                return;
            }
            c.raises.fetch_add(1, Relaxed);
            let Some(sent) = alarm["details"]["values"]["sent_us"].as_f64() else {
                c.error(format!("an alarm without sent_us: {alarm}"));
                return;
            };
            let sent = sent as u64;
            let us = arrived.saturating_sub(sent).max(1);
            c.max_us.fetch_max(us, Relaxed);
            if inside(sent) {
                c.raises_in_window.fetch_add(1, Relaxed);
                let _ = hist.lock().expect("not poisoned").alarm.record(us);
            }
        }
        Some("dropped") => {
            c.dropped
                .fetch_add(v["count"].as_u64().unwrap_or(0), Relaxed);
        }
        Some("error") => c.error(format!("live WebSocket: {v}")),
        _ => {}
    }
}

/// One device: a message every `period` from `first` until the end of the window.
#[allow(clippy::too_many_arguments)]
async fn device(
    mut conn: MqttConn,
    d: usize,
    plan: &Plan,
    qos: u8,
    timeline: Timeline,
    first: Instant,
    period: Duration,
    c: &Counters,
) -> Result<(), crate::ClientError> {
    let mut tick = tokio::time::interval_at(first.into(), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut seq, mut pid) = (0u64, 0u16);
    let mut out = BytesMut::with_capacity(128);
    let qos = if qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    // Packet id → whether that message was sent inside the window.
    let mut counted = std::collections::HashMap::new();
    let end = timeline.end;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end {
                    break;
                }
                let high = plan.high(d, seq);
                let temp = match high {
                    Some(r) => format!("{}.5", Plan::band(r).0),
                    None => format!("20.{}", seq % 10),
                };
                let sent = now_us();
                let payload = format!("{{\"temp\":{temp},\"sent_us\":{sent}}}");
                if qos == QoS::AtLeastOnce {
                    pid = pid.wrapping_add(1).max(1);
                }
                let publish = Publish {
                    topic: "v1/devices/me/telemetry".into(),
                    payload: payload.into_bytes().into(),
                    qos,
                    packet_id: pid,
                    ..Publish::default()
                };
                out.clear();
                conn.encode(&Packet::Publish(publish), &mut out);
                conn.send(&out).await?;
                seq += 1;
                c.sent.fetch_add(1, Relaxed);
                let inside = (timeline.window_us.0..timeline.window_us.1).contains(&sent);
                if inside {
                    c.sent_in_window.fetch_add(1, Relaxed);
                    if high.is_some() {
                        c.high_in_window.fetch_add(1, Relaxed);
                    }
                }
                if qos == QoS::AtLeastOnce {
                    counted.insert(pid, inside);
                }
            }
            r = conn.fill() => {
                r?;
                while let Some(incoming) = conn.next_incoming()? {
                    match incoming {
                        Incoming::PubAck(id, code)
                            if counted.remove(&id) == Some(true) && code.is_success() =>
                        {
                            c.acked_in_window.fetch_add(1, Relaxed);
                        }
                        Incoming::Disconnect(code) => {
                            return Err(crate::ClientError::Disconnected(code));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    // The last acknowledgements.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !counted.is_empty() {
        match tokio::time::timeout_at(deadline, conn.fill()).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        while let Some(incoming) = conn.next_incoming()? {
            if let Incoming::PubAck(id, code) = incoming {
                if counted.remove(&id) == Some(true) && code.is_success() {
                    c.acked_in_window.fetch_add(1, Relaxed);
                }
            }
        }
    }
    conn.disconnect().await;
    Ok(())
}

/// One line a second on stderr: phase, messages sent, alarms raised and cleared, the largest
/// latency of the second.
async fn progress(c: Arc<Counters>, timeline: Timeline) {
    let start = timeline.go;
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let (mut sent, mut raises, mut clears, mut last) = (0, 0, 0, start);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let secs = (now - last).as_secs_f64().max(1e-3);
        let (s, r, cl) = (
            c.sent.load(Relaxed),
            c.raises.load(Relaxed),
            c.clears.load(Relaxed),
        );
        let phase = if now >= timeline.end {
            "drain"
        } else if now_us() >= timeline.window_us.0 {
            "measure"
        } else {
            "warmup"
        };
        let rate = |d: u64| thousands((d as f64 / secs).round() as u64);
        let mut line = format!(
            "[rules] {:6.1}s {phase:<8} sent {:>7}/s  alarms {:>5}/s  clears {:>5}/s  max {:>7.1} ms",
            (now - start).as_secs_f64(),
            rate(s - sent),
            rate(r - raises),
            rate(cl - clears),
            c.max_us.swap(0, Relaxed) as f64 / 1000.0
        );
        let errors = c.errors.load(Relaxed);
        if errors > 0 {
            line.push_str(&format!("  errors {errors}"));
        }
        eprintln!("{line}");
        (sent, raises, clears, last) = (s, r, cl, now);
    }
}

/// The report as a few lines of text.
pub fn write_table(r: &RulesReport, out: &mut impl Write) -> std::io::Result<()> {
    let n = |v: u64| thousands(v);
    let f = |v: f64| thousands(v.round() as u64);
    writeln!(
        out,
        "rules: {} devices, {} profiles, {} rules + {} tenant-wide ({:.1} per message), QoS {}, {:.1} s measured",
        n(r.devices as u64), r.profiles, n(r.rules as u64), r.tenant_rules, r.rules_per_message, r.qos, r.seconds
    )?;
    writeln!(
        out,
        "  published      {:>12} msgs  {:>10} msgs/s (target {}){}",
        n(r.published),
        f(r.publish_rate),
        f(r.target_rate),
        r.acked
            .map(|a| format!(", {} acknowledged", n(a)))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "  evaluations    {:>12}/s (messages x rules per message)",
        f(r.evaluations_per_s)
    )?;
    writeln!(
        out,
        "  alarms         {:>12} raised of {} expected ({} missing), {}/s; {} clears",
        n(r.alarms_received),
        n(r.alarms_expected),
        n(r.alarms_missing),
        f(r.alarm_rate),
        n(r.clears_received)
    )?;
    match &r.latency_ms {
        Some(l) => writeln!(
            out,
            "  publish -> alarm on the WebSocket, ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n = {}); target p99 <= {} ms: {}",
            l.p50, l.p90, l.p99, l.p999, l.max, n(l.count), r.target_p99_ms,
            if r.target_met { "met" } else { "NOT met" }
        )?,
        None => writeln!(out, "  publish -> alarm: no alarm arrived")?,
    }
    if let Some(l) = &r.telemetry_latency_ms {
        writeln!(
            out,
            "  publish -> telemetry on the WebSocket (no rules), ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n = {})",
            l.p50, l.p90, l.p99, l.p999, l.max, n(l.count)
        )?;
    }
    if let Some(s) = &r.server {
        writeln!(
            out,
            "  server         {:.2} cores{}",
            s.cpu_cores,
            s.rss_mib
                .map(|m| format!(", RSS {m:.0} MiB"))
                .unwrap_or_default()
        )?;
    }
    if !r.server_counters.is_empty() {
        let list: Vec<String> = r
            .server_counters
            .iter()
            .map(|(k, v)| format!("{k} +{}", f(*v)))
            .collect();
        writeln!(out, "  server counters: {}", list.join(", "))?;
    }
    if r.ws_dropped > 0 {
        writeln!(
            out,
            "  the server dropped {} updates for the WebSocket client",
            n(r.ws_dropped)
        )?;
    }
    let setup: Vec<String> = r
        .setup_seconds
        .iter()
        .map(|(k, v)| format!("{k} {v:.1} s"))
        .collect();
    writeln!(out, "  set-up: {}", setup.join(", "))?;
    if r.errors > 0 {
        writeln!(
            out,
            "  errors: {} (last: {})",
            r.errors,
            r.last_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(devices: usize, rules: usize, profiles: usize, ratio: f64) -> Plan {
        let a = <crate::BenchArgs as clap::Parser>::try_parse_from([
            "bench",
            "rules",
            "--devices",
            &devices.to_string(),
            "--rules",
            &rules.to_string(),
            "--profiles",
            &profiles.to_string(),
            "--alarm-ratio",
            &ratio.to_string(),
        ])
        .unwrap();
        let crate::BenchTarget::Rules(a) = a.target else {
            panic!("not rules")
        };
        Plan::new(&a).unwrap()
    }

    #[test]
    fn high_messages_hit_one_rule_of_the_profile_at_the_ratio() {
        let p = plan(1000, 100, 10, 0.01);
        let mut highs = 0;
        let mut per_rule = vec![0; 100];
        for d in 0..1000 {
            for seq in 0..1000 {
                if let Some(r) = p.high(d, seq) {
                    assert_eq!(r % 10, d % 10, "a rule of the device's profile");
                    assert!(p.high(d, seq + 1).is_none(), "the next message clears");
                    highs += 1;
                    per_rule[r] += 1;
                }
            }
        }
        assert_eq!(highs, 10_000, "1% of 1,000,000");
        assert!(per_rule.iter().all(|&n| n == 100), "{per_rule:?}");
    }

    #[test]
    fn default_profiles_and_bad_options() {
        let p = plan(10_000, 1000, 0, 0.01);
        assert_eq!((p.profiles, p.period), (100, 100));
        assert_eq!(p.rules_of(3).count(), 10);
        assert_eq!(plan(50, 3, 0, 0.5).profiles, 1);
        assert_eq!(parse_seconds("30s"), Ok(30.0));
        assert_eq!(parse_seconds("2m"), Ok(120.0));
        assert_eq!(parse_seconds("250ms"), Ok(0.25));
        assert_eq!(parse_seconds("7"), Ok(7.0));
        assert!(parse_seconds("soon").is_err());
        let a = <crate::BenchArgs as clap::Parser>::try_parse_from(
            "bench rules --mqtt 10.1.2.3:1883 --admin-password x".split_whitespace(),
        )
        .unwrap();
        let crate::BenchTarget::Rules(a) = a.target else {
            panic!("not rules")
        };
        assert!(matches!(run(a), Err(BenchError::NotLoopback(_))));
    }
}
