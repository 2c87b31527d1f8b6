//! The traffic scenarios and their one driver.
//!
//! A [`TrafficPlan`] says who publishes where and who subscribes to what; [`run`] then goes
//! through the same steps for all of them:
//! 1. connect and subscribe the subscribers, then connect the publishers;
//! 2. wait until the broker is idle (with `--broker-pid`);
//! 3. warm up, then measure for `--duration` (broker and generator CPU read at both ends of the
//!    window, received messages counted per second);
//! 4. drain: wait until every expected message has arrived, or nothing has arrived for
//!    `--drain-idle`, or `--drain-max` has passed;
//! 5. stop every client and report (lost = sent × subscribers per message − received).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_codec::QoS;
use tokio::task::JoinSet;
use tokio::time::sleep_until;

use super::{connect_all, expand_topic, quiesce, ClientSpec, Setup};
use crate::cli::{CommonArgs, FanInArgs, FanOutArgs, LatencyArgs, PubArgs, SubArgs};
use crate::client::PublishTemplate;
use crate::engine::credit::{Credit, CreditMode};
use crate::engine::{procfs, progress, Counters, Run, Timeline};
use crate::error::BenchError;
use crate::report::{
    round1, round2, BrokerUsage, Counts, GeneratorUsage, LatencyReport, Phases, Rates, Report,
    Shape, TrafficReport,
};
use crate::roles::publisher::{self, PublisherPlan};
use crate::roles::subscriber::{self, SubscriberPlan};

/// Bytes made room for before each read by traffic clients.
const READ_CHUNK: usize = 64 * 1024;

/// Who publishes where and who subscribes to what.
pub struct TrafficPlan {
    pub scenario: &'static str,
    /// One topic per publisher.
    pub topics: Vec<String>,
    /// One filter per subscriber.
    pub filters: Vec<String>,
    pub retain: bool,
    /// Messages per second per publisher; 0 = unpaced.
    pub rate: f64,
    /// End-to-end credit, when the run has its own subscribers.
    pub credit: Option<(CreditMode, u64)>,
    /// Deliveries each message should make, when the run owns both ends.
    pub deliveries_per_message: Option<u64>,
}

/// `fan-in`: publishers on bench/RUN/i, one subscriber on bench/RUN/#.
pub fn fan_in(a: &FanInArgs, _c: &CommonArgs, run_id: &str) -> TrafficPlan {
    TrafficPlan {
        scenario: "fan-in",
        topics: (0..a.publishers)
            .map(|i| format!("bench/{run_id}/{i}"))
            .collect(),
        filters: vec![format!("bench/{run_id}/#")],
        retain: false,
        rate: a.rate,
        credit: (a.backlog > 0).then_some((CreditMode::PerPublisher, a.backlog)),
        deliveries_per_message: Some(1),
    }
}

/// `fan-out`: one publisher and every subscriber on bench/RUN/fan-out.
pub fn fan_out(a: &FanOutArgs, _c: &CommonArgs, run_id: &str) -> TrafficPlan {
    let topic = format!("bench/{run_id}/fan-out");
    TrafficPlan {
        scenario: "fan-out",
        topics: vec![topic.clone()],
        filters: vec![topic; a.subscribers],
        retain: false,
        rate: a.rate,
        credit: (a.backlog > 0).then_some((CreditMode::SlowestSubscriber, a.backlog)),
        deliveries_per_message: Some(a.subscribers as u64),
    }
}

/// `latency`: publishers sharing a fixed total rate, one subscriber; open loop.
pub fn latency(a: &LatencyArgs, _c: &CommonArgs, run_id: &str) -> TrafficPlan {
    let topic = format!("bench/{run_id}/latency");
    TrafficPlan {
        scenario: "latency",
        topics: vec![topic.clone(); a.publishers],
        filters: vec![topic],
        retain: false,
        rate: a.rate / a.publishers as f64,
        credit: None,
        deliveries_per_message: Some(1),
    }
}

/// `pub`: plain publishers on `--topic`.
pub fn publish(a: &PubArgs, _c: &CommonArgs, run_id: &str) -> TrafficPlan {
    let id = |i| format!("ib-{run_id}-p{i}");
    TrafficPlan {
        scenario: "pub",
        topics: (0..a.clients)
            .map(|i| expand_topic(&a.topic, i, &id(i)))
            .collect(),
        filters: Vec::new(),
        retain: a.retain,
        rate: a.rate,
        credit: None,
        deliveries_per_message: None,
    }
}

/// `sub`: plain subscribers on `--topic`.
pub fn subscribe(a: &SubArgs, _c: &CommonArgs, run_id: &str) -> TrafficPlan {
    let id = |i| format!("ib-{run_id}-s{i}");
    TrafficPlan {
        scenario: "sub",
        topics: Vec::new(),
        filters: (0..a.clients)
            .map(|i| expand_topic(&a.topic, i, &id(i)))
            .collect(),
        retain: false,
        rate: 0.0,
        credit: None,
        deliveries_per_message: None,
    }
}

/// Runs a traffic plan to its report.
pub async fn run(plan: TrafficPlan, c: &CommonArgs, setup: &Setup) -> Result<Report, BenchError> {
    let qos = QoS::from_u8(c.traffic.qos).unwrap_or_default();
    let (n_pub, n_sub) = (plan.topics.len(), plan.filters.len());
    let t_setup = Instant::now();
    let connections = Arc::new(AtomicU64::new(0));
    let specs = |role, names: &[String], subscribe: bool| -> Vec<ClientSpec> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| ClientSpec {
                client_id: setup.client_id(role, i),
                subscribe: subscribe.then(|| (name.clone(), qos)),
                source: None,
            })
            .collect()
    };
    let subs = specs('s', &plan.filters, true);
    let subs = connect_all(setup, "subscriber", subs, READ_CHUNK, &connections).await?;
    let pubs = specs('p', &plan.topics, false);
    let pubs = connect_all(setup, "publisher", pubs, READ_CHUNK, &connections).await?;
    let setup_s = t_setup.elapsed().as_secs_f64();
    let broker_pid = c.output.broker_pid;
    let quiesce_s = quiesce(broker_pid).await;

    let credit = plan
        .credit
        .map(|(mode, backlog)| Credit::new(mode, backlog, n_pub, n_sub));
    let run = Arc::new(Run::new(Timeline::starting_now(&c.timing), credit));
    run.counters
        .connections
        .store(connections.load(Relaxed), Relaxed);
    let t = run.timeline;
    let mut tasks = JoinSet::new();
    for (index, conn) in subs.into_iter().enumerate() {
        let sub_plan = SubscriberPlan {
            index,
            track_sequence: n_pub > 0,
        };
        tasks.spawn(subscriber::subscribe(conn, sub_plan, run.clone()));
    }
    for ((index, conn), topic) in pubs.into_iter().enumerate().zip(&plan.topics) {
        let template = PublishTemplate::new(
            conn.protocol(),
            topic,
            qos,
            plan.retain,
            c.traffic.payload,
            index as u32,
        );
        let pub_plan = PublisherPlan {
            index,
            template,
            qos,
            rate: plan.rate,
            batch: usize::from(c.traffic.batch),
            inflight: c.traffic.inflight,
        };
        tasks.spawn(publisher::publish(conn, pub_plan, run.clone()));
    }
    let progress = progress::spawn(plan.scenario, run.clone(), c.output.quiet);

    // Warmup, then the measured window.
    run.set_phase("warmup");
    sleep_until(t.measure.into()).await;
    run.set_phase("measuring");
    let counters = &run.counters;
    let start = Snapshot::take(counters, broker_pid);
    let mut per_second = Vec::new();
    let mut last = start.received;
    for i in 1..=c.timing.duration.floor() as u32 {
        sleep_until((t.measure + Duration::from_secs(u64::from(i))).into()).await;
        let now = Counters::get(&counters.received);
        per_second.push(now - last);
        last = now;
    }
    sleep_until(t.end.into()).await;
    let end = Snapshot::take(counters, broker_pid);
    let window_s = (end.at - start.at).as_secs_f64();

    run.set_phase("draining");
    let drain_s = drain(&run, &plan, n_pub, c.timing.drain_idle).await;
    run.stop();
    let _ = tokio::time::timeout_at(t.hard.into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    if let Some(p) = progress {
        let _ = p.await;
    }

    let sent = Counters::get(&counters.sent);
    let received = Counters::get(&counters.received);
    let expected = plan.deliveries_per_message.map(|d| sent * d);
    let lost = expected.map(|e| e.saturating_sub(received));
    let counts = Counts {
        sent,
        received,
        expected,
        lost,
        loss_pct: expected.zip(lost).map(|(e, l)| {
            if e == 0 {
                0.0
            } else {
                round2(100.0 * l as f64 / e as f64)
            }
        }),
        extra: expected.map(|e| received.saturating_sub(e)),
        duplicates: Counters::get(&counters.duplicates),
        acked: (qos != QoS::AtMostOnce && n_pub > 0).then(|| Counters::get(&counters.acked)),
    };
    let per_s = |a: u64, b: u64| round1((b - a) as f64 / window_s.max(1e-9));
    let rates = Rates {
        sent_per_s: per_s(start.sent, end.sent),
        received_per_s: per_s(start.received, end.received),
        received_per_second: per_second,
    };
    let window_received = end.received - start.received;
    let traffic = TrafficReport {
        shape: Shape {
            qos: c.traffic.qos,
            payload_bytes: c.traffic.payload,
            publishers: n_pub,
            subscribers: n_sub,
            rate_per_publisher: (plan.rate > 0.0).then_some(plan.rate),
            backlog: plan.credit.map(|(_, b)| b),
            inflight: (qos != QoS::AtMostOnce).then_some(c.traffic.inflight),
        },
        phases: Phases {
            setup_s: round2(setup_s),
            quiesce_s: round2(quiesce_s),
            warmup_s: c.timing.warmup,
            window_s: round2(window_s),
            drain_s: round2(drain_s),
        },
        counts,
        rates,
    };
    let broker = broker_pid.map(|pid| {
        let cpu = end.broker_cpu.zip(start.broker_cpu).map(|(b, a)| b - a);
        BrokerUsage {
            pid,
            cpu_s: cpu.map(round2),
            cpu_cores: cpu.map(|s| round2(s / window_s)),
            msgs_per_cpu_s: cpu
                .filter(|s| *s > 0.0)
                .map(|s| (window_received as f64 / s).round()),
            rss_kib: procfs::rss_kib(pid),
            rss_before_kib: None,
            bytes_per_connection: None,
        }
    });
    let gen_cpu = end.own_cpu.zip(start.own_cpu).map(|(b, a)| b - a);
    let latency =
        LatencyReport::from_histogram(&run.latency.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Report {
        scenario: plan.scenario,
        label: c.output.label.clone(),
        target: setup.target_info(),
        traffic: Some(traffic),
        latency_us: latency,
        connections: None,
        broker,
        generator: GeneratorUsage {
            threads: c.output.threads,
            cpu_s: gen_cpu.map(round2),
            cpu_cores: gen_cpu.map(|s| round2(s / window_s)),
        },
        errors: Counters::get(&counters.errors),
        last_error: counters.last_error(),
    })
}

/// Counters and CPU times at one instant.
struct Snapshot {
    at: Instant,
    sent: u64,
    received: u64,
    broker_cpu: Option<f64>,
    own_cpu: Option<f64>,
}

impl Snapshot {
    fn take(c: &Counters, broker_pid: Option<u32>) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            sent: Counters::get(&c.sent),
            received: Counters::get(&c.received),
            broker_cpu: broker_pid.and_then(|p| procfs::cpu_seconds(Some(p))),
            own_cpu: procfs::cpu_seconds(None),
        }
    }
}

/// Waits for messages still on their way; returns the seconds it took.
async fn drain(run: &Run, plan: &TrafficPlan, publishers: usize, idle: f64) -> f64 {
    let start = Instant::now();
    let idle = Duration::from_secs_f64(idle);
    let c = &run.counters;
    let mut last = Counters::get(&c.received);
    let mut last_change = start;
    loop {
        let publishers_done = Counters::get(&c.publishers_done) as usize >= publishers;
        let received = Counters::get(&c.received);
        let now = Instant::now();
        if received != last {
            (last, last_change) = (received, now);
        }
        let all_in = match plan.deliveries_per_message {
            Some(d) => received >= Counters::get(&c.sent) * d,
            // Nobody here to count deliveries (pub) or senders (sub).
            None => true,
        };
        if publishers_done && (all_in || now - last_change >= idle) {
            break;
        }
        if now >= run.timeline.drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed().as_secs_f64()
}
