//! Every scenario, briefly, against Ironbridge in-process (TCP, TLS, WebSocket and WebSocket over
//! TLS). Assertions are about correctness (counts add up, nothing lost at QoS 1 and 2), never
//! about timing.
//!
//! The broker's default queue is 1000 messages per session (drop_new), so runs that must lose
//! nothing keep publishers × `--backlog` below it.

mod support;

use support::{args, assert_counts_add_up, assert_no_loss, run, Ironbridge};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_qos0_counts_add_up() {
    let b = Ironbridge::start().await;
    let r = run(&args("fan-in --publishers 4 --backlog 200", b.tcp)).await;
    assert_counts_add_up(&r);
    let t = r.traffic.as_ref().unwrap();
    assert_eq!((t.shape.publishers, t.shape.subscribers), (4, 1));
    assert!(r.latency_us.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_qos1_loses_nothing() {
    let b = Ironbridge::start().await;
    let r = run(&args(
        "fan-in --qos 1 --publishers 4 --backlog 200 --inflight 16",
        b.tcp,
    ))
    .await;
    assert_no_loss(&r);
    let c = &r.traffic.as_ref().unwrap().counts;
    assert_eq!(c.acked, Some(c.sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_qos2_over_mqtt5_loses_nothing() {
    let b = Ironbridge::start().await;
    let line = "fan-in --qos 2 --mqtt-version 5 --publishers 3 --backlog 200 --inflight 16";
    let r = run(&args(line, b.tcp)).await;
    assert_no_loss(&r);
    assert_eq!(r.target.mqtt_version, "5");
    let c = &r.traffic.as_ref().unwrap().counts;
    assert_eq!(c.acked, Some(c.sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_fan_in_sends_at_the_rate() {
    let b = Ironbridge::start().await;
    let r = run(&args("fan-in --qos 1 --publishers 2 --rate 200", b.tcp)).await;
    assert_no_loss(&r);
    // 2 publishers × 200/s over warmup + window (1.2 s): the pacing caps the count.
    let sent = r.traffic.as_ref().unwrap().counts.sent;
    assert!(sent <= 2 * (200 * 12 / 10 + 1), "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_qos1_delivers_to_every_subscriber() {
    let b = Ironbridge::start().await;
    let r = run(&args(
        "fan-out --qos 1 --subscribers 5 --backlog 200",
        b.tcp,
    ))
    .await;
    assert_no_loss(&r);
    let c = &r.traffic.as_ref().unwrap().counts;
    assert_eq!(c.expected, Some(c.sent * 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_qos0_counts_add_up() {
    let b = Ironbridge::start().await;
    let r = run(&args("fan-out --subscribers 10 --backlog 100", b.tcp)).await;
    assert_counts_add_up(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_reports_percentiles() {
    let b = Ironbridge::start().await;
    let r = run(&args("latency --rate 1000 --qos 1", b.tcp)).await;
    assert_no_loss(&r);
    let l = r.latency_us.expect("latency percentiles");
    assert!(l.count > 0);
    assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99, "{l:?}");
    assert!(l.p99 <= l.p99_9 && l.p99_9 <= l.max, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_opens_checks_and_holds_connections() {
    let b = Ironbridge::start().await;
    let line = "conn --connections 200 --concurrency 50 --settle 0.2 --hold 3 --keepalive 2";
    let pid = std::process::id();
    let r = run(&args(&format!("{line} --broker-pid {pid}"), b.tcp)).await;
    let c = r.connections.as_ref().expect("a conn report");
    assert_eq!((c.ok, c.failed), (200, 0), "{r:?}");
    // Every connection answered PINGREQ and survived a hold longer than 1.5 × keep-alive.
    assert_eq!((c.alive, c.held), (200, 200), "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    let broker = r.broker.as_ref().expect("broker readings");
    assert!(broker.rss_kib.is_some() && broker.bytes_per_connection.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_spreads_over_source_addresses() {
    let b = Ironbridge::start().await;
    let line = "conn --connections 60 --src-ips 3 --settle 0 --hold 0";
    let r = run(&args(line, b.tcp)).await;
    let c = r.connections.as_ref().unwrap();
    assert_eq!(c.source_addrs, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    assert_eq!((c.ok, c.alive, c.held), (60, 60, 60), "{r:?}");
}

/// `pub` and `sub` are separate runs (as against any broker); the subscriber, connected first
/// and staying longer, gets every QoS 1 message the publishers sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_meet_on_a_topic() {
    let b = Ironbridge::start().await;
    let topic = format!("pubsub/{}", std::process::id());
    let sub = args(
        &format!("sub --clients 2 --topic {topic}/# --qos 1 --duration 3 --drain-max 0"),
        b.tcp,
    );
    let publ = args(
        &format!("pub --clients 3 --topic {topic}/%i --rate 300 --qos 1"),
        b.tcp,
    );
    let sub_run = tokio::spawn(async move { bench::run_mqtt(&sub).await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let p = run(&publ).await;
    let s = sub_run.await.unwrap();
    let (pc, sc) = (&p.traffic.unwrap().counts, &s.traffic.unwrap().counts);
    assert!(pc.sent > 0);
    assert_eq!(pc.acked, Some(pc.sent));
    assert_eq!(
        sc.received,
        2 * pc.sent,
        "each of 2 subscribers gets every message"
    );
    assert_eq!((p.errors, s.errors), (0, 0));
    // Stamps carry CLOCK_MONOTONIC, so latency works across runs.
    assert!(s.latency_us.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_cafile() {
    let b = Ironbridge::start().await;
    let ca = b.pki.path("ca.pem");
    let line = format!("fan-in --qos 1 --publishers 2 --backlog 100 --transport tls --cafile {ca}");
    assert_no_loss(&run(&args(&line, b.tls)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_wrong_ca_fails_to_set_up() {
    let b = Ironbridge::start().await;
    let other = support::pki();
    let ca = other.path("ca.pem");
    let line = format!("fan-in --publishers 1 --transport tls --cafile {ca}");
    let e = bench::run_mqtt(&args(&line, b.tls)).await.unwrap_err();
    assert!(matches!(e, bench::BenchError::Setup { .. }), "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket() {
    let b = Ironbridge::start().await;
    let line = "fan-in --qos 1 --publishers 2 --backlog 100 --transport ws --ws-path /mqtt";
    assert_no_loss(&run(&args(line, b.ws)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_insecure_mqtt5() {
    let b = Ironbridge::start().await;
    let line = "fan-out --qos 1 --subscribers 3 --backlog 100 --transport wss --insecure \
                --mqtt-version 5";
    assert_no_loss(&run(&args(line, b.wss)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_over_tls() {
    let b = Ironbridge::start().await;
    let line = "conn --connections 30 --settle 0 --hold 0 --transport tls --insecure";
    let r = run(&args(line, b.tls)).await;
    let c = r.connections.as_ref().unwrap();
    assert_eq!((c.ok, c.alive), (30, 30), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_fail_the_set_up() {
    let b = Ironbridge::with_config(broker::BrokerConfig::default()).await; // no anonymous access
    let e = bench::run_mqtt(&args("fan-in --publishers 2", b.tcp))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("CONNACK refused"), "{e}");
}
