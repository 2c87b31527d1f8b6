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

mod load;
mod setup;
use load::*;
use setup::*;

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
