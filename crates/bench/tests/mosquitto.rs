//! The scenarios against Debian's mosquitto, a broker nobody here wrote: the generator must
//! work with any broker. Skipped when /usr/sbin/mosquitto is missing, unless `CI` is set.

mod support;

use support::{args, assert_counts_add_up, assert_no_loss, run, Mosquitto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_qos0_and_qos1() {
    let Some(m) = Mosquitto::start() else { return };
    let pid = m.pid();
    let r = run(&args(
        &format!("fan-in --publishers 4 --broker-pid {pid}"),
        m.port,
    ))
    .await;
    assert_counts_add_up(&r);
    let broker = r.broker.as_ref().expect("broker readings");
    assert_eq!(broker.pid, pid);
    assert!(broker.cpu_s.is_some() && broker.rss_kib.is_some());
    let line = "fan-in --qos 1 --publishers 4 --backlog 200 --inflight 16";
    assert_no_loss(&run(&args(line, m.port)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_qos2_mqtt5() {
    let Some(m) = Mosquitto::start() else { return };
    let line = "fan-in --qos 2 --mqtt-version 5 --publishers 3 --backlog 100 --inflight 16";
    assert_no_loss(&run(&args(line, m.port)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_and_latency() {
    let Some(m) = Mosquitto::start() else { return };
    let r = run(&args(
        "fan-out --qos 1 --subscribers 5 --backlog 200",
        m.port,
    ))
    .await;
    assert_no_loss(&r);
    let r = run(&args("latency --rate 1000", m.port)).await;
    assert_counts_add_up(&r);
    assert!(r.latency_us.is_some_and(|l| l.count > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_and_tls() {
    let Some(m) = Mosquitto::start() else { return };
    let line = format!(
        "conn --connections 200 --settle 0.2 --hold 1 --broker-pid {}",
        m.pid()
    );
    let r = run(&args(&line, m.port)).await;
    let c = r.connections.as_ref().unwrap();
    assert_eq!((c.ok, c.alive, c.held), (200, 200, 200), "{r:?}");
    assert!(r.broker.as_ref().unwrap().bytes_per_connection.is_some());
    let ca = m.pki.path("ca.pem");
    let line = format!("fan-in --qos 1 --publishers 2 --backlog 100 --transport tls --cafile {ca}");
    assert_no_loss(&run(&args(&line, m.tls_port)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_meet_on_a_topic() {
    let Some(m) = Mosquitto::start() else { return };
    let sub = args("sub --topic t/# --qos 1 --duration 3 --drain-max 0", m.port);
    let publ = args("pub --clients 2 --topic t/%c --rate 300 --qos 1", m.port);
    let sub_run = tokio::spawn(async move { bench::run_mqtt(&sub).await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let p = run(&publ).await;
    let s = sub_run.await.unwrap();
    let (pc, sc) = (&p.traffic.unwrap().counts, &s.traffic.unwrap().counts);
    assert!(pc.sent > 0);
    assert_eq!(sc.received, pc.sent);
}
