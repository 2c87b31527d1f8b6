//! `conn`: how fast the broker accepts connections and what an idle one costs it.
//!
//! 1. Open `--connections` connections, `--concurrency` handshakes in flight at once (from
//!    127.0.0.2.. when `--src-ips` is set, so that more than one address's ~28k ephemeral ports
//!    are available). Connect rate = connections made / connect phase seconds.
//! 2. Let the broker settle for `--settle` seconds, then read its RSS: bytes per connection =
//!    (RSS after − RSS before) / connections.
//! 3. Liveness check: one PINGREQ on every connection; `alive` counts the PINGRESPs.
//! 4. Hold for `--hold` seconds, each connection sending PINGREQ every keep-alive period;
//!    `held` counts those still open at the end. Then every connection disconnects.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_codec::Packet;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::sleep_until;

use super::{Setup, CHECK_MAX};
use crate::cli::{CommonArgs, ConnArgs};
use crate::client::{Incoming, MqttConn};
use crate::endpoint::source_addrs;
use crate::engine::{procfs, progress, Counters, Run, Timeline};
use crate::error::{BenchError, ClientError};
use crate::report::{round1, round2, BrokerUsage, ConnReport, GeneratorUsage, Report};

/// Idle connections need little read buffer.
const READ_CHUNK: usize = 256;
/// Connections per source address when `--src-ips` is left at 0.
const PER_SOURCE: usize = 25_000;

/// What the run tells its connections to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    Check,
    Stop,
}

/// Runs the conn scenario.
pub async fn run(a: &ConnArgs, c: &CommonArgs, setup: &Setup) -> Result<Report, BenchError> {
    let n = a.connections;
    let limit = procfs::raise_open_files_limit();
    if (limit as usize) < n + 64 {
        eprintln!(
            "warning: open-files limit {limit} is below {} connections; raise `ulimit -n`",
            n
        );
    }
    let sources = match a.src_ips {
        0 if n > PER_SOURCE => source_addrs(n.div_ceil(PER_SOURCE)),
        0 => Vec::new(),
        k => source_addrs(k),
    };
    let pid = c.output.broker_pid;
    let rss_before = pid.and_then(procfs::rss_kib);
    let (broker0, own0) = (
        pid.and_then(|p| procfs::cpu_seconds(Some(p))),
        procfs::cpu_seconds(None),
    );

    let run = Arc::new(Run::new(Timeline::starting_now(&c.timing), None));
    let progress = progress::spawn("conn", run.clone(), c.output.quiet);
    let (step_tx, step_rx) = watch::channel(Step::Connect);
    let alive = Arc::new(AtomicU64::new(0));
    let attempted = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(setup.concurrency));
    let start = Instant::now();
    let deadline = start + setup.connect_timeout;
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let endpoint = setup.endpoint.clone();
        let opts = setup.connect_options(setup.client_id('c', i));
        let (permits, run) = (permits.clone(), run.clone());
        let (attempted, connected) = (attempted.clone(), connected.clone());
        let (step, alive) = (step_rx.clone(), alive.clone());
        tasks.spawn(async move {
            let permit = permits
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let connect = MqttConn::connect(&endpoint, source, &opts, READ_CHUNK);
            let r = tokio::time::timeout_at(deadline.into(), connect).await;
            drop(permit);
            attempted.fetch_add(1, Relaxed);
            match r.unwrap_or(Err(ClientError::Timeout("the connect deadline"))) {
                Ok(conn) => {
                    connected.fetch_add(1, Relaxed);
                    run.counters.connections.fetch_add(1, Relaxed);
                    idle(conn, step, &alive, &run.counters).await;
                    run.counters.connections.fetch_sub(1, Relaxed);
                }
                Err(e) => run.counters.error(e),
            }
        });
    }
    while (Counters::get(&attempted) as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_s = start.elapsed().as_secs_f64();
    let ok = Counters::get(&connected);
    let (broker1, own1) = (
        pid.and_then(|p| procfs::cpu_seconds(Some(p))),
        procfs::cpu_seconds(None),
    );

    run.set_phase("settling");
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let rss_after = pid.and_then(procfs::rss_kib);

    run.set_phase("checking");
    step_tx.send_replace(Step::Check);
    let check_until = Instant::now() + CHECK_MAX;
    while Counters::get(&alive) < Counters::get(&run.counters.connections)
        && Instant::now() < check_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    run.set_phase("holding");
    sleep_until((Instant::now() + Duration::from_secs_f64(a.hold)).into()).await;
    let held = Counters::get(&run.counters.connections);
    step_tx.send_replace(Step::Stop);
    run.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    if let Some(p) = progress {
        let _ = p.await;
    }

    let broker = pid.map(|pid| {
        let cpu = broker1.zip(broker0).map(|(b, a)| b - a);
        BrokerUsage {
            pid,
            cpu_s: cpu.map(round2),
            cpu_cores: cpu.map(|s| round2(s / connect_s.max(1e-9))),
            msgs_per_cpu_s: None,
            rss_kib: rss_after,
            rss_before_kib: rss_before,
            bytes_per_connection: rss_before
                .zip(rss_after)
                .filter(|_| ok > 0)
                .map(|(b, a)| round1((a as f64 - b as f64) * 1024.0 / ok as f64)),
        }
    });
    let own_cpu = own1.zip(own0).map(|(b, a)| b - a);
    let source_addrs = if sources.is_empty() {
        vec!["default".to_string()]
    } else {
        sources.iter().map(ToString::to_string).collect()
    };
    Ok(Report {
        scenario: "conn",
        label: c.output.label.clone(),
        target: setup.target_info(),
        traffic: None,
        latency_us: None,
        connections: Some(ConnReport {
            requested: n,
            ok,
            failed: n as u64 - ok.min(n as u64),
            connect_s: round2(connect_s),
            connect_rate_per_s: (ok as f64 / connect_s.max(1e-9)).round(),
            concurrency: setup.concurrency,
            source_addrs,
            alive: Counters::get(&alive),
            held,
            hold_s: a.hold,
            keepalive: setup.keep_alive,
        }),
        broker,
        generator: GeneratorUsage {
            threads: c.output.threads,
            cpu_s: own_cpu.map(round2),
            cpu_cores: own_cpu.map(|s| round2(s / connect_s.max(1e-9))),
        },
        errors: Counters::get(&run.counters.errors),
        last_error: run.counters.last_error(),
    })
}

/// One idle connection: answers the liveness check, pings every keep-alive period, and
/// disconnects when told to.
async fn idle(
    mut conn: MqttConn,
    mut step: watch::Receiver<Step>,
    alive: &AtomicU64,
    counters: &Counters,
) {
    let ka = Duration::from_secs(u64::from(conn.keep_alive));
    let mut next_ping = Instant::now() + ka;
    let (mut checked, mut awaiting) = (false, false);
    loop {
        tokio::select! {
            r = conn.fill() => {
                if let Err(e) = r {
                    counters.error(e);
                    return;
                }
                loop {
                    match conn.next_incoming() {
                        Ok(Some(Incoming::PingResp)) if awaiting => {
                            awaiting = false;
                            alive.fetch_add(1, Relaxed);
                        }
                        Ok(Some(Incoming::Disconnect(code))) => {
                            counters.error(ClientError::Disconnected(code));
                            return;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            counters.error(e);
                            return;
                        }
                    }
                }
            }
            changed = step.changed() => {
                let now = *step.borrow_and_update();
                if changed.is_err() || now == Step::Stop {
                    break;
                }
                if now == Step::Check && !checked {
                    (checked, awaiting) = (true, true);
                    if let Err(e) = conn.send_packet(&Packet::PingReq).await {
                        counters.error(e);
                        return;
                    }
                }
            }
            _ = sleep_until(next_ping.into()), if !ka.is_zero() => {
                next_ping += ka;
                if let Err(e) = conn.send_packet(&Packet::PingReq).await {
                    counters.error(e);
                    return;
                }
            }
        }
    }
    conn.disconnect().await;
}
