//! The command line: defaults, options before and after the scenario, values clap refuses, and
//! combinations `validate` refuses, the loopback rule above all.

use bench::cli::{MqttVersion, Transport};
use bench::{BenchArgs, BenchError, BenchTarget, MqttArgs, Scenario};
use clap::Parser;

fn parse(line: &str) -> Result<MqttArgs, clap::Error> {
    BenchArgs::try_parse_from(line.split_whitespace()).map(|a| match a.target {
        BenchTarget::Mqtt(m) => m,
        other => panic!("not an mqtt scenario: {other:?}"),
    })
}

#[test]
fn ingest_defaults_and_loopback() {
    let a = BenchArgs::try_parse_from("bench ingest --devices 10 --writer-only".split_whitespace())
        .unwrap();
    let BenchTarget::Ingest(i) = a.target else {
        panic!("{a:?}")
    };
    assert_eq!((i.devices, i.keys, i.writer_only), (10, 10, true));
    let a = BenchArgs::try_parse_from(
        "bench ingest --mqtt 10.0.0.1:1883 --admin-password x".split_whitespace(),
    )
    .unwrap();
    let BenchTarget::Ingest(i) = a.target else {
        panic!("{a:?}")
    };
    assert!(matches!(
        bench::ingest::run(i),
        Err(BenchError::NotLoopback(_))
    ));
}

#[test]
fn defaults() {
    let a = parse("bench mqtt fan-in").unwrap();
    let Scenario::FanIn(f) = &a.scenario else {
        panic!("{a:?}")
    };
    assert_eq!((f.publishers, f.backlog, f.rate), (50, 1000, 0.0));
    let c = &a.common;
    assert_eq!(c.target.host.to_string(), "127.0.0.1");
    assert_eq!((c.target.port, c.target.transport), (1883, Transport::Tcp));
    assert_eq!(c.target.ws_path, "/mqtt");
    assert_eq!(c.session.mqtt_version, MqttVersion::V3);
    assert_eq!(
        (c.traffic.qos, c.traffic.payload, c.traffic.inflight),
        (0, 64, 64)
    );
    assert_eq!(
        (c.timing.duration, c.timing.warmup, c.timing.drain_max),
        (10.0, 1.0, 10.0)
    );
    assert_eq!(
        (c.output.threads, c.output.json, c.output.broker_pid),
        (2, false, None)
    );
    a.validate().unwrap();
}

#[test]
fn common_options_go_before_or_after_the_scenario() {
    let after = parse("bench mqtt fan-out --port 1884 --qos 2 --subscribers 7 --json").unwrap();
    let before = parse("bench mqtt --port 1884 --qos 2 --json fan-out --subscribers 7").unwrap();
    for a in [after, before] {
        assert_eq!((a.common.target.port, a.common.traffic.qos), (1884, 2));
        assert!(a.common.output.json);
        assert!(matches!(a.scenario, Scenario::FanOut(ref f) if f.subscribers == 7));
    }
}

#[test]
fn every_scenario_parses() {
    let lines = [
        "fan-in --publishers 3 --rate 100 --backlog 0",
        "fan-out --subscribers 500",
        "latency --rate 5000 --publishers 2",
        "conn --connections 100000 --concurrency 500 --hold 30 --src-ips 5",
        "pub --clients 4 --topic sensors/%i --rate 0 --retain",
        "sub --clients 2 --topic sensors/#",
    ];
    for line in lines {
        let a = parse(&format!("bench mqtt {line}")).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(a.scenario.name(), line.split(' ').next().unwrap());
        a.validate().unwrap_or_else(|e| panic!("{line}: {e}"));
    }
}

#[test]
fn versions_transports_and_tls_options() {
    for (v, want) in [
        ("3", MqttVersion::V3),
        ("3.1.1", MqttVersion::V3),
        ("5", MqttVersion::V5),
    ] {
        let a = parse(&format!("bench mqtt pub --mqtt-version {v}")).unwrap();
        assert_eq!(a.common.session.mqtt_version, want);
    }
    assert!(parse("bench mqtt pub --mqtt-version 4.5").is_err());
    let a = parse(
        "bench mqtt conn --transport wss --insecure --ws-path /ws --tls-server-name localhost",
    )
    .unwrap();
    assert_eq!(a.common.target.transport, Transport::Wss);
    assert_eq!(
        a.common.target.tls_server_name.as_deref(),
        Some("localhost")
    );
    a.validate().unwrap();
    let a = parse("bench mqtt conn --transport tls --cafile /tmp/ca.pem --username u --password p")
        .unwrap();
    assert_eq!(a.common.session.username.as_deref(), Some("u"));
    a.validate().unwrap();
}

#[test]
fn clap_refuses_bad_values() {
    for line in [
        "bench mqtt fan-in --qos 3",
        "bench mqtt fan-in --transport quic",
        "bench mqtt fan-in --inflight 0",
        "bench mqtt fan-in --threads 0",
        "bench mqtt fan-in --port 70000",
        "bench mqtt nosuch",
        "bench mqtt",
    ] {
        assert!(parse(line).is_err(), "{line}");
    }
}

#[test]
fn validate_refuses_combinations_that_cannot_work() {
    for (line, needle) in [
        ("fan-in --payload 10", "--payload >= 24"),
        ("latency --payload 16", "--payload >= 24"),
        ("latency --rate 0", "fixed --rate"),
        ("fan-in --publishers 0", "at least one client"),
        ("fan-in --rate=-5", "--rate"),
        ("fan-in --transport tls", "--cafile FILE or --insecure"),
        ("conn --src-ips 2 --host ::1", "IPv4"),
        ("conn --src-ips 300", "at most 250"),
        ("fan-in --duration=-1", "--duration"),
        ("pub --concurrency 0", "--concurrency"),
    ] {
        let a = parse(&format!("bench mqtt {line}")).unwrap();
        let e = a.validate().unwrap_err();
        assert!(e.to_string().contains(needle), "{line}: {e}");
    }
    // A small payload is fine where no stamp is needed.
    parse("bench mqtt pub --payload 1")
        .unwrap()
        .validate()
        .unwrap();
}

#[test]
fn non_loopback_hosts_are_refused_by_the_parser() {
    for host in [
        "10.0.0.1",
        "192.168.0.10",
        "8.8.8.8",
        "0.0.0.0",
        "example.com",
    ] {
        let e = parse(&format!("bench mqtt fan-in --host {host}")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("loopback"), "{host}: {msg}");
    }
    for host in ["127.0.0.1", "127.0.0.53", "::1", "localhost"] {
        parse(&format!("bench mqtt fan-in --host {host}")).unwrap();
    }
}

/// Arguments built in code bypass the parser; the run itself refuses them before connecting.
#[tokio::test]
async fn non_loopback_hosts_are_refused_by_the_run() {
    let mut a = parse("bench mqtt fan-in --quiet --duration 1").unwrap();
    a.common.target.host = "192.168.1.1".parse().unwrap();
    let e = bench::run_mqtt(&a).await.unwrap_err();
    assert!(matches!(e, BenchError::NotLoopback(_)), "{e}");
    assert!(e.to_string().contains("not a loopback address"), "{e}");
    let mut a = parse("bench mqtt conn --quiet").unwrap();
    a.common.target.host = "2001:db8::1".parse().unwrap();
    assert!(matches!(
        bench::run_mqtt(&a).await,
        Err(BenchError::NotLoopback(_))
    ));
}
