//! The result of a run: [`Report`], printed as a table (`table`) or as one JSON object
//! (`--json`). Field names are stable: scripts compare runs by them.

mod table;

use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

pub use table::write_table;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub target: TargetInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<LatencyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerUsage>,
    pub generator: GeneratorUsage,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Where the load went.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub address: String,
    pub transport: &'static str,
    pub mqtt_version: &'static str,
}

/// Throughput scenarios (fan-in, fan-out, latency, pub, sub).
#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    pub shape: Shape,
    pub phases: Phases,
    pub counts: Counts,
    pub rates: Rates,
}

/// Who sent what.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// Messages per second per publisher; `None` = as fast as allowed.
    pub rate_per_publisher: Option<f64>,
    /// End-to-end credit per publisher; `None` = open loop.
    pub backlog: Option<u64>,
    /// QoS 1/2 window per publisher.
    pub inflight: Option<u16>,
}

/// How long each phase took, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    pub setup_s: f64,
    pub quiesce_s: f64,
    pub warmup_s: f64,
    pub window_s: f64,
    pub drain_s: f64,
}

/// Message counts over the whole run (warmup and drain included).
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub received: u64,
    /// sent × subscribers per message, when the run owns both ends.
    pub expected: Option<u64>,
    /// expected − received after the drain.
    pub lost: Option<u64>,
    pub loss_pct: Option<f64>,
    /// received − expected, when positive (duplicates or foreign traffic).
    pub extra: Option<u64>,
    /// Stamped messages whose sequence number was not above the last one seen.
    pub duplicates: u64,
    /// PUBACK (QoS 1) / PUBCOMP (QoS 2) received by the publishers.
    pub acked: Option<u64>,
}

/// Rates inside the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub sent_per_s: f64,
    pub received_per_s: f64,
    /// Messages received in each whole second of the window.
    pub received_per_second: Vec<u64>,
}

/// Latency percentiles in microseconds, of messages sent inside the window.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub count: u64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencyReport {
    /// Percentiles of a histogram in nanoseconds; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<LatencyReport> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| round1(ns as f64 / 1000.0);
        Some(LatencyReport {
            count: h.len(),
            min: us(h.min()),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: round1(h.mean() / 1000.0),
        })
    }
}

/// The `conn` scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ConnReport {
    pub requested: usize,
    pub ok: u64,
    pub failed: u64,
    pub connect_s: f64,
    pub connect_rate_per_s: f64,
    pub concurrency: usize,
    pub source_addrs: Vec<String>,
    /// Connections that answered a PINGREQ after the settle time.
    pub alive: u64,
    /// Connections still open at the end of the hold.
    pub held: u64,
    pub hold_s: f64,
    pub keepalive: u16,
}

/// The broker process, from /proc (`--broker-pid`).
#[derive(Debug, Clone, Serialize)]
pub struct BrokerUsage {
    pub pid: u32,
    /// CPU seconds in the window (conn: during the connect phase).
    pub cpu_s: Option<f64>,
    pub cpu_cores: Option<f64>,
    /// Messages received per broker CPU-second in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msgs_per_cpu_s: Option<f64>,
    pub rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_connection: Option<f64>,
}

/// This process.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorUsage {
    pub threads: u16,
    pub cpu_s: Option<f64>,
    pub cpu_cores: Option<f64>,
}

impl Report {
    /// Writes the report as one JSON object and a newline.
    pub fn write_json(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self).map_err(std::io::Error::other)?;
        writeln!(out)
    }
}

/// Rounds to two decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Rounds to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn latency_percentiles_are_in_microseconds() {
        let mut h = crate::engine::new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = LatencyReport::from_histogram(&h).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50 - 500.0).abs() < 2.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 2.0, "{l:?}");
        assert!(LatencyReport::from_histogram(&crate::engine::new_histogram()).is_none());
    }
}
