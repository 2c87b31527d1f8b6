//! Progress while a run goes: one line per second on stderr with the elapsed time, the phase,
//! messages per second sent and received over the last second, open connections and errors.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{Counters, Run};
use crate::report::thousands;

/// Prints progress lines for `run` until it is stopped; nothing when `quiet`.
pub fn spawn(scenario: &'static str, run: Arc<Run>, quiet: bool) -> Option<JoinHandle<()>> {
    if quiet {
        return None;
    }
    Some(tokio::spawn(async move {
        let start = Instant::now();
        let mut stop = run.stop_signal();
        let mut tick = tokio::time::interval_at(
            (start + Duration::from_secs(1)).into(),
            Duration::from_secs(1),
        );
        let c = &run.counters;
        let get = |a: &AtomicU64| Counters::get(a);
        let (mut sent, mut received) = (get(&c.sent), get(&c.received));
        let mut open = get(&c.connections);
        let mut last = start;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = super::stopped(&mut stop) => return,
            }
            let now = Instant::now();
            let secs = (now - last).as_secs_f64().max(1e-3);
            let (s, r) = (get(&c.sent), get(&c.received));
            let rate = |d: u64| thousands((d as f64 / secs).round() as u64);
            let conns = get(&c.connections);
            let mut line = format!(
                "[{scenario}] {:6.1}s {:<10}",
                (now - start).as_secs_f64(),
                run.phase()
            );
            if scenario == "conn" {
                let opened = rate(conns.saturating_sub(open));
                line.push_str(&format!(" conns {:>9} (+{opened}/s)", thousands(conns)));
            } else {
                line.push_str(&format!(
                    " sent {:>11}/s  recv {:>11}/s  conns {:>7}",
                    rate(s - sent),
                    rate(r - received),
                    thousands(conns)
                ));
            }
            let errors = get(&c.errors);
            if errors > 0 {
                line.push_str(&format!("  errors {}", thousands(errors)));
            }
            eprintln!("{line}");
            (sent, received, open, last) = (s, r, conns, now);
        }
    }))
}
