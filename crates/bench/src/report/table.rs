//! The summary table printed at the end of a run (without `--json`).

use std::io::{self, Write};

use super::{thousands, ConnReport, Report, TrafficReport};

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn int(x: f64) -> String {
    thousands(x.max(0.0).round() as u64)
}

/// Writes `report` as an aligned table.
pub fn write_table(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let t = &r.target;
    let mut title = format!(
        "{} · {} {} · MQTT {}",
        r.scenario, t.transport, t.address, t.mqtt_version
    );
    if let Some(tr) = &r.traffic {
        let s = &tr.shape;
        title.push_str(&format!(
            " · QoS {} · {} B · {} publisher{} → {} subscriber{}",
            s.qos,
            s.payload_bytes,
            thousands(s.publishers as u64),
            if s.publishers == 1 { "" } else { "s" },
            thousands(s.subscribers as u64),
            if s.subscribers == 1 { "" } else { "s" },
        ));
    }
    if let Some(c) = &r.connections {
        title.push_str(&format!(" · {} connections", thousands(c.requested as u64)));
    }
    if let Some(label) = &r.label {
        title.push_str(&format!(" · {label}"));
    }
    writeln!(out, "{title}")?;
    let row = |out: &mut dyn Write, key: &str, value: String| writeln!(out, "  {key:<12}{value}");
    if let Some(tr) = &r.traffic {
        traffic_rows(tr, out, &row)?;
    }
    if let Some(c) = &r.connections {
        conn_rows(c, out, &row)?;
    }
    if let Some(b) = &r.broker {
        let mut v = format!("pid {}", b.pid);
        if let (Some(cpu), Some(cores)) = (b.cpu_s, b.cpu_cores) {
            v.push_str(&format!(" · CPU {cpu:.2} s = {cores:.2} cores"));
        }
        if let Some(m) = b.msgs_per_cpu_s {
            v.push_str(&format!(" · {} msgs per CPU-second", int(m)));
        }
        match (b.rss_before_kib, b.rss_kib) {
            (Some(before), Some(after)) => {
                v.push_str(&format!(" · RSS {} → {}", mib(before), mib(after)))
            }
            (None, Some(rss)) => v.push_str(&format!(" · RSS {}", mib(rss))),
            _ => {}
        }
        if let Some(per) = b.bytes_per_connection {
            v.push_str(&format!(" = {} bytes per connection", int(per)));
        }
        row(out, "broker", v)?;
    }
    let g = &r.generator;
    if let (Some(cpu), Some(cores)) = (g.cpu_s, g.cpu_cores) {
        let v = format!("CPU {cpu:.2} s = {cores:.2} cores ({} threads)", g.threads);
        row(out, "generator", v)?;
    }
    if let Some(l) = &r.latency_us {
        let v = format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} (n = {})",
            int(l.p50),
            int(l.p90),
            int(l.p99),
            int(l.p99_9),
            int(l.max),
            thousands(l.count)
        );
        row(out, "latency µs", v)?;
    }
    let mut errors = thousands(r.errors);
    if let Some(e) = &r.last_error {
        errors.push_str(&format!(" (last: {e})"));
    }
    row(out, "errors", errors)
}

type Row<'a> = dyn Fn(&mut dyn Write, &str, String) -> io::Result<()> + 'a;

fn traffic_rows(tr: &TrafficReport, out: &mut impl Write, row: &Row) -> io::Result<()> {
    let (p, c, rates) = (&tr.phases, &tr.counts, &tr.rates);
    let phases = format!(
        "setup {:.2} s · warmup {} s · window {:.2} s · drain {:.2} s",
        p.setup_s, p.warmup_s, p.window_s, p.drain_s
    );
    row(out, "phases", phases)?;
    let sent = format!(
        "{:>14} msgs {:>12} msgs/s",
        thousands(c.sent),
        int(rates.sent_per_s)
    );
    row(out, "sent", sent)?;
    let received = format!(
        "{:>14} msgs {:>12} msgs/s",
        thousands(c.received),
        int(rates.received_per_s)
    );
    row(out, "received", received)?;
    if let (Some(lost), Some(pct)) = (c.lost, c.loss_pct) {
        let mut v = format!("{:>14} msgs ({pct:.2} %)", thousands(lost));
        if let Some(extra) = c.extra.filter(|e| *e > 0) {
            v.push_str(&format!(" · extra {}", thousands(extra)));
        }
        row(out, "lost", v)?;
    }
    if c.duplicates > 0 {
        row(out, "duplicates", thousands(c.duplicates))?;
    }
    if let Some(acked) = c.acked {
        row(out, "acked", format!("{:>14} msgs", thousands(acked)))?;
    }
    Ok(())
}

fn conn_rows(c: &ConnReport, out: &mut impl Write, row: &Row) -> io::Result<()> {
    let v = format!(
        "{} ok, {} failed in {:.2} s = {} conn/s (concurrency {}, source {})",
        thousands(c.ok),
        thousands(c.failed),
        c.connect_s,
        int(c.connect_rate_per_s),
        c.concurrency,
        c.source_addrs.join(", ")
    );
    row(out, "connected", v)?;
    let v = format!(
        "{} answered PINGREQ · {} still open after a {:.0} s hold (keep-alive {} s)",
        thousands(c.alive),
        thousands(c.held),
        c.hold_s,
        c.keepalive
    );
    row(out, "alive", v)
}
