//! Local rules: loading (errors name the rule), the engine (`for`, `clear`), and the task
//! switching a connector's coil with no uplink at all.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ib_core::rules::engine::Phase;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::actions::{self, ActionTargets};
use super::engine::{RuleEngine, RuleStats};
use super::{load, Site};
use crate::config::EdgeConfig;
use crate::connector::{Command, Reading, SubDevice};

const BASE: &str = r#"
[uplink]
url = "mqtt://127.0.0.1:1"
token = "t"

[[modbus]]
name = "field-1"
profile = "soil"
address = "127.0.0.1:5020"
registers = [ { key = "soil_moisture", table = "holding", address = 0, type = "u16" } ]
writes = [ { method = "setPump", table = "coil", address = 0, param = "on" } ]
"#;

const IRRIGATE: &str = r#"
[[rule]]
name = "irrigate"
scope = { device = "field-1" }
condition = "soil_moisture < 20.0"
clear = "soil_moisture > 35.0"
actions = [
  { type = "rpc", method = "setPump", params = { on = true } },
  { type = "alarm", alarm = "dry", severity = "MAJOR" },
  { type = "log", message = "dry: {{soil_moisture}} on {{device.name}}" },
]

[[rule]]
name = "stop"
scope = { profile = "soil" }
condition = "soil_moisture > 35.0"
actions = [ { type = "rpc", method = "setPump", params = { on = false }, device = "field-1" } ]
"#;

fn devices() -> Vec<SubDevice> {
    vec![SubDevice {
        name: "field-1".into(),
        profile: "soil".into(),
        firmware: false,
    }]
}

fn config(rules: &str) -> EdgeConfig {
    EdgeConfig::parse(&format!("{BASE}{rules}")).unwrap()
}

fn load_err(rules: &str) -> String {
    let c = config(rules);
    let devices = devices();
    let site = Site {
        config: &c,
        devices: &devices,
        sms: false,
    };
    match load(&site) {
        Ok(_) => panic!("loaded: {rules}"),
        Err(e) => e.to_string(),
    }
}

fn engine(rules: &str) -> (RuleEngine, Arc<RuleStats>) {
    let c = config(rules);
    let devices = devices();
    let site = Site {
        config: &c,
        devices: &devices,
        sms: false,
    };
    let rules = load(&site).unwrap();
    let stats = Arc::new(RuleStats::new(
        rules
            .rules
            .iter()
            .map(|r| r.compiled.rule.spec.name.as_str()),
    ));
    (RuleEngine::new(rules, &devices, stats.clone()), stats)
}

fn reading(ts: i64, soil: f64) -> Reading {
    let mut values = Map::new();
    values.insert("soil_moisture".into(), json!(soil));
    Reading {
        device: "field-1".into(),
        ts,
        values,
    }
}

/// (rule, phase) of what a reading set off.
fn step(e: &mut RuleEngine, ts: i64, soil: f64) -> Vec<(String, Phase)> {
    e.on_reading(&reading(ts, soil))
        .into_iter()
        .map(|f| (f.rule.id.to_string(), f.phase))
        .collect()
}

#[test]
fn fires_once_then_clears_with_hysteresis() {
    let (mut e, stats) = engine(IRRIGATE);
    assert_eq!(
        step(&mut e, 1_000, 50.0),
        vec![("stop".into(), Phase::Fire)]
    );
    assert_eq!(
        step(&mut e, 2_000, 10.0),
        vec![
            ("irrigate".into(), Phase::Fire),
            ("stop".into(), Phase::Clear)
        ]
    );
    // Still dry, then between the thresholds: no new firing, no clearing.
    assert!(step(&mut e, 3_000, 12.0).is_empty());
    assert!(step(&mut e, 4_000, 25.0).is_empty());
    assert_eq!(
        step(&mut e, 5_000, 40.0),
        vec![
            ("irrigate".into(), Phase::Clear),
            ("stop".into(), Phase::Fire)
        ]
    );
    assert_eq!(stats.fired.load(Ordering::Relaxed), 3);
    assert_eq!(stats.cleared.load(Ordering::Relaxed), 2);
    let mut out = Map::new();
    stats.report(&mut out);
    assert_eq!(out["rule.irrigate.fired"], json!(1));
    assert_eq!(out["rule.stop.fired"], json!(2));
}

#[test]
fn for_is_measured_in_reading_timestamps() {
    let rule = IRRIGATE.replace("clear = ", "for = \"5s\"\nclear = ");
    let (mut e, _) = engine(&rule);
    assert!(step(&mut e, 10_000, 10.0).is_empty());
    assert!(step(&mut e, 14_999, 10.0).is_empty());
    assert_eq!(
        step(&mut e, 15_000, 10.0),
        vec![("irrigate".into(), Phase::Fire)]
    );
    // A wet reading in the middle starts the wait over.
    let (mut e, _) = engine(&rule);
    assert!(step(&mut e, 10_000, 10.0).is_empty());
    assert!(step(&mut e, 12_000, 30.0).is_empty());
    assert!(step(&mut e, 13_000, 10.0).is_empty());
    assert!(step(&mut e, 17_999, 10.0).is_empty());
    assert_eq!(
        step(&mut e, 18_000, 10.0),
        vec![("irrigate".into(), Phase::Fire)]
    );
}

#[test]
fn a_key_not_reported_yet_is_counted_not_fired() {
    let (mut e, stats) = engine(IRRIGATE);
    let other = Reading {
        device: "field-1".into(),
        ts: 1,
        values: Map::from_iter([("x".to_string(), json!(1))]),
    };
    assert!(e.on_reading(&other).is_empty());
    assert_eq!(stats.eval_errors.load(Ordering::Relaxed), 2);
    // Another device's readings (or the gateway's health) are not the rules' business.
    let health = Reading {
        device: String::new(),
        ts: 2,
        values: Map::new(),
    };
    assert!(e.on_reading(&health).is_empty());
}

#[test]
fn load_errors_name_the_rule_and_the_problem() {
    let cases = [
        (IRRIGATE.replace("< 20.0", "<< 20.0"), "irrigate", "line 1"),
        (
            IRRIGATE.replace("device = \"field-1\" }", "device = \"field-9\" }"),
            "irrigate",
            "field-9",
        ),
        (
            IRRIGATE.replace("profile = \"soil\"", "profile = \"plc\""),
            "stop",
            "profile",
        ),
        (
            IRRIGATE.replace("soil_moisture < 20.0", "avg('soil_moisture', '5m') < 20.0"),
            "irrigate",
            "avg()",
        ),
        (
            IRRIGATE.replace(
                "{ type = \"log\", message",
                "{ type = \"webhook\", url = \"http://127.0.0.1:9/h\" },\n  { type = \"log\", message",
            ),
            "irrigate",
            "webhook",
        ),
        (
            IRRIGATE.replace(
                "{ type = \"log\", message",
                "{ type = \"sms\", to = \"+4917012345678\" },\n  { type = \"log\", message",
            ),
            "irrigate",
            "[modem]",
        ),
        (
            IRRIGATE.replace("method = \"setPump\", params = { on = false }", "method = \"setValve\""),
            "stop",
            "setValve",
        ),
        (
            IRRIGATE.replace(
                "device = \"field-1\" }\ncondition",
                "device = \"field-1\" }\ntrigger = \"attributes\"\ncondition",
            ),
            "irrigate",
            "trigger",
        ),
        (
            IRRIGATE.replace("name = \"stop\"", "name = \"irrigate\""),
            "irrigate",
            "another",
        ),
        (IRRIGATE.replace("for = ", "x = ").replace("clear =", "fro = \"1s\"\nclear ="), "irrigate", "fro"),
        (IRRIGATE.replace("soil_moisture < 20.0", "soil_moisture + 1.0"), "irrigate", "true or false"),
    ];
    for (rules, rule, what) in cases {
        let e = load_err(&rules);
        assert!(
            e.contains(&format!("{rule:?}")) && e.contains(what),
            "{what}: {e}"
        );
    }
}

#[test]
fn a_disabled_rule_is_not_run() {
    let (mut e, _) =
        engine(&IRRIGATE.replace("name = \"stop\"", "name = \"stop\"\nenabled = false"));
    assert_eq!(
        step(&mut e, 1, 10.0),
        vec![("irrigate".into(), Phase::Fire)]
    );
    assert!(step(&mut e, 2, 50.0).iter().all(|(r, _)| r == "irrigate"));
}

/// A clock on tokio's (paused) time, starting at 0 ms.
fn clock() -> actions::Clock {
    let start = tokio::time::Instant::now();
    Arc::new(move || start.elapsed().as_millis() as i64)
}

/// The connector's side: answers every command `ok` and reports what it was asked.
/// Commands to each device, by name.
type Routes = HashMap<String, mpsc::Sender<Command>>;

fn fake_connector() -> (Routes, mpsc::Receiver<(String, Value)>) {
    let (tx, mut rx) = mpsc::channel::<Command>(16);
    let (seen_tx, seen_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            let _ = seen_tx.send((c.method.clone(), c.params.clone())).await;
            let _ = c.reply.send(Ok(json!({"ok": true})));
        }
    });
    (HashMap::from([("field-1".to_string(), tx)]), seen_rx)
}

/// The issue's test at the unit level: no uplink anywhere, readings from the connector switch
/// the pump on when dry and off when wet again, in that order; the readings still reach the
/// queue's side, with the alarm reading after the one that raised it.
#[tokio::test(start_paused = true)]
async fn the_task_switches_the_pump_with_no_uplink() {
    let (mut_engine, stats) = engine(IRRIGATE);
    let (peers, mut seen) = fake_connector();
    let (readings_tx, readings_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let targets = ActionTargets {
        peers: Arc::new(peers),
        sms: None,
        stats: stats.clone(),
    };
    let task = tokio::spawn(actions::run(
        mut_engine,
        readings_rx,
        out_tx,
        targets,
        clock(),
    ));

    readings_tx.send(reading(1_000, 10.0)).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap(),
        ("setPump".into(), json!({"on": true}))
    );
    assert_eq!(out_rx.recv().await.unwrap(), reading(1_000, 10.0));
    let alarm = out_rx.recv().await.unwrap();
    assert_eq!(alarm.values["alarm.dry"], json!(true));

    readings_tx.send(reading(2_000, 50.0)).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap(),
        ("setPump".into(), json!({"on": false}))
    );
    assert_eq!(out_rx.recv().await.unwrap(), reading(2_000, 50.0));
    assert_eq!(
        out_rx.recv().await.unwrap().values["alarm.dry"],
        json!(false)
    );

    drop(readings_tx);
    task.await.unwrap();
    assert!(out_rx.recv().await.is_none());
    assert_eq!(stats.actions_failed.load(Ordering::Relaxed), 0);
}

/// An RPC to a device whose connector never answers fails after the timeout (paused clock:
/// no real waiting), is counted, and the next firing's actions still run.
#[tokio::test(start_paused = true)]
async fn an_unanswered_rpc_times_out_and_is_counted() {
    let (e, stats) = engine(IRRIGATE);
    let (tx, mut rx) = mpsc::channel::<Command>(16);
    let (readings_tx, readings_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let targets = ActionTargets {
        peers: Arc::new(HashMap::from([("field-1".to_string(), tx)])),
        sms: None,
        stats: stats.clone(),
    };
    let task = tokio::spawn(actions::run(e, readings_rx, out_tx, targets, clock()));
    readings_tx.send(reading(1_000, 10.0)).await.unwrap();
    let held = rx.recv().await.unwrap(); // taken, never answered
    readings_tx.send(reading(2_000, 50.0)).await.unwrap();
    let next = rx.recv().await.unwrap();
    assert_eq!(next.params, json!({"on": false}));
    assert_eq!(stats.actions_failed.load(Ordering::Relaxed), 1);
    drop((held, next, readings_tx));
    task.await.unwrap();
    while out_rx.recv().await.is_some() {}
}

#[test]
fn the_documented_rules_load() {
    let c = EdgeConfig::parse(include_str!("../../../../docs/edge.toml")).unwrap();
    let devices: Vec<SubDevice> = c
        .modbus
        .iter()
        .map(|m| SubDevice {
            name: m.name.clone(),
            profile: m.profile.clone(),
            firmware: false,
        })
        .collect();
    let site = Site {
        config: &c,
        devices: &devices,
        sms: true,
    };
    let rules = load(&site).unwrap();
    assert_eq!(rules.rules.len(), 2);
    assert_eq!(rules.rules[0].compiled.for_ms, 30_000);
}

#[test]
fn a_for_wait_ends_between_readings_on_tick() {
    let rule = IRRIGATE.replace("clear = ", "for = \"5s\"\nclear = ");
    let (mut e, _) = engine(&rule);
    assert_eq!(e.next_due(), None);
    assert!(step(&mut e, 10_000, 10.0).is_empty());
    assert_eq!(e.next_due(), Some(15_000));
    assert!(e.tick(14_999).is_empty());
    let fired = e.tick(15_000);
    assert_eq!(fired.len(), 1);
    assert_eq!(
        (fired[0].rule.id.as_ref(), fired[0].phase),
        ("irrigate", Phase::Fire)
    );
    assert_eq!(e.next_due(), None);
}

/// A device reporting only changes sends one dry reading: the pump still goes on when `for`
/// has passed (paused time: the clock jumps, nothing sleeps for real).
#[tokio::test(start_paused = true)]
async fn the_task_ends_a_for_wait_with_no_further_reading() {
    let rule = IRRIGATE.replace("clear = ", "for = \"30s\"\nclear = ");
    let (e, _) = engine(&rule);
    let (peers, mut seen) = fake_connector();
    let (readings_tx, readings_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let targets = ActionTargets {
        peers: Arc::new(peers),
        sms: None,
        stats: Arc::new(RuleStats::default()),
    };
    let clock = clock();
    let task = tokio::spawn(actions::run(e, readings_rx, out_tx, targets, clock.clone()));
    readings_tx.send(reading(clock(), 10.0)).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap(),
        ("setPump".into(), json!({"on": true}))
    );
    assert!(clock() >= 30_000, "fired at {} ms", clock());
    assert!(out_rx.recv().await.is_some());
    assert_eq!(
        out_rx.recv().await.unwrap().values["alarm.dry"],
        json!(true)
    );
    drop(readings_tx);
    task.await.unwrap();
}
