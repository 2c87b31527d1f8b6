//! The engine's state machine through real device messages: `for` by message time, hysteresis,
//! state across a restart, scopes and triggers, and save-time refusals.

use std::sync::Arc;

use serde_json::json;

use super::engine::{Phase, RuleEngine};
use super::model::RuleSpec;
use crate::bus::Event;
use crate::model::NewDevice;
use crate::testing::TestPlatform;
use crate::Platform;

fn rule(v: serde_json::Value) -> RuleSpec {
    serde_json::from_value(v).unwrap()
}

/// Posts telemetry as the device and returns the bus event it made.
fn telemetry(p: &Arc<Platform>, token: &str, body: serde_json::Value) -> Arc<Event> {
    let mut rx = p.bus.subscribe();
    let ctx = p.auth_token(token).unwrap();
    let commit = p.post_telemetry(&ctx, body.to_string().as_bytes()).unwrap();
    futures_lite_block(commit);
    rx.try_recv().unwrap()
}

fn futures_lite_block(commit: store::Commit) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(commit)
        .unwrap();
}

fn phases(engine: &mut RuleEngine, ev: &Event) -> Vec<Phase> {
    engine.on_event(ev).into_iter().map(|j| j.phase).collect()
}

#[test]
fn for_duration_hysteresis_and_restart() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let tenant = p.registry.tenant("default").unwrap();
    let (_, token) = p
        .registry
        .create_device(
            &tenant.id,
            NewDevice {
                name: "patient-1".into(),
                ..Default::default()
            },
        )
        .unwrap();
    p.rules
        .create(
            &p.registry,
            &tenant.id,
            rule(json!({"name": "tachycardia", "scope": {"tenant": true},
                "condition": "hr > 120", "for": "1m", "clear": "hr < 100",
                "actions": [{"type": "alarm", "alarm": "Heart rate", "severity": "CRITICAL"}]})),
        )
        .unwrap();
    let t0 = crate::db::now_ms() - 600_000;
    let mut engine = RuleEngine::new(p.clone());
    let at = |s: i64, hr: f64| json!({"ts": t0 + s * 1000, "values": {"hr": hr}});
    assert!(phases(&mut engine, &telemetry(&p, &token, at(0, 130.0))).is_empty());
    assert!(phases(&mut engine, &telemetry(&p, &token, at(30, 131.0))).is_empty());
    assert_eq!(
        phases(&mut engine, &telemetry(&p, &token, at(60, 125.0))),
        [Phase::Fire]
    );
    // Fired once, not again while it holds.
    assert!(phases(&mut engine, &telemetry(&p, &token, at(70, 140.0))).is_empty());
    // Between the thresholds: still active (hysteresis).
    assert!(phases(&mut engine, &telemetry(&p, &token, at(80, 110.0))).is_empty());
    // A restart keeps the state (once written): the clear still happens once.
    engine.flush();
    let mut engine = RuleEngine::new(p.clone());
    assert_eq!(
        phases(&mut engine, &telemetry(&p, &token, at(90, 95.0))),
        [Phase::Clear]
    );
    // A dip resets the `for` timer.
    assert!(phases(&mut engine, &telemetry(&p, &token, at(100, 130.0))).is_empty());
    assert!(phases(&mut engine, &telemetry(&p, &token, at(130, 90.0))).is_empty());
    assert!(phases(&mut engine, &telemetry(&p, &token, at(170, 130.0))).is_empty());
    // Several timestamps in one message are evaluated in order.
    let batch = json!([
        {"ts": t0 + 200_000, "values": {"hr": 130.0}},
        {"ts": t0 + 260_000, "values": {"hr": 130.0}}
    ]);
    assert_eq!(
        phases(&mut engine, &telemetry(&p, &token, batch)),
        [Phase::Fire]
    );
}

#[test]
fn scopes_triggers_and_other_keys() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let tenant = p.registry.tenant("default").unwrap();
    let profile = p
        .registry
        .create_profile(
            &tenant.id,
            crate::model::NewProfile {
                name: "soil".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let new = |name: &str, profile: Option<&str>| NewDevice {
        name: name.into(),
        profile: profile.map(str::to_string),
        ..Default::default()
    };
    let (_, soil) = p
        .registry
        .create_device(&tenant.id, new("soil-1", Some("soil")))
        .unwrap();
    let (_, other) = p
        .registry
        .create_device(&tenant.id, new("other", None))
        .unwrap();
    p.rules
        .create(
            &p.registry,
            &tenant.id,
            rule(json!({"name": "dry", "scope": {"profile": profile.name},
                "condition": "moisture < 20.0 && battery > 3.0",
                "actions": [{"type": "log"}]})),
        )
        .unwrap();
    let mut engine = RuleEngine::new(p.clone());
    // `battery` comes from the device's latest values.
    assert!(phases(&mut engine, &telemetry(&p, &soil, json!({"battery": 3.7}))).is_empty());
    assert_eq!(
        phases(
            &mut engine,
            &telemetry(&p, &soil, json!({"moisture": 12.0}))
        ),
        [Phase::Fire]
    );
    // Another profile's device is not in scope.
    assert!(phases(
        &mut engine,
        &telemetry(&p, &other, json!({"moisture": 1.0, "battery": 4.0}))
    )
    .is_empty());
    // An evaluation error is recorded on the rule, not a panic.
    p.rules
        .create(
            &p.registry,
            &tenant.id,
            rule(
                json!({"name": "needs pressure", "scope": {"device": "other"},
                "condition": "pressure > 2.0", "actions": [{"type": "log"}]}),
            ),
        )
        .unwrap();
    assert!(phases(
        &mut engine,
        &telemetry(&p, &other, json!({"moisture": 1.0}))
    )
    .is_empty());
    // Written with the engine's next batch of state writes.
    engine.flush();
    let (rules, _) = p.rules.store.list(Some(&tenant.id), 10, None).unwrap();
    let r = rules
        .iter()
        .find(|r| r.spec.name == "needs pressure")
        .unwrap();
    assert!(
        r.last_error.as_deref().unwrap().contains("pressure"),
        "{r:?}"
    );
}

#[test]
fn bad_rules_are_refused_when_saved() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let tenant = p.registry.tenant("default").unwrap();
    let mut types = std::collections::BTreeMap::new();
    types.insert("temp".to_string(), crate::model::ValueType::Number);
    p.registry
        .create_profile(
            &tenant.id,
            crate::model::NewProfile {
                name: "typed".into(),
                spec: crate::model::ProfileSpec {
                    telemetry_types: types,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
    let save = |condition: &str, scope: serde_json::Value| {
        p.rules
            .create(
                &p.registry,
                &tenant.id,
                rule(
                    json!({"name": condition, "scope": scope, "condition": condition,
                    "actions": [{"type": "log"}]}),
                ),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let typed = json!({"profile": "typed"});
    let e = save("temp > ", typed.clone()).unwrap_err();
    assert!(e.contains("line 1, column"), "{e}");
    let e = save("humidity > 3.0", typed.clone()).unwrap_err();
    assert!(e.contains("unknown key \"humidity\""), "{e}");
    let e = save("temp + 1", typed.clone()).unwrap_err();
    assert!(e.contains("add"), "{e}");
    let e = save("avg(temp)", typed.clone()).unwrap_err();
    assert!(!e.is_empty());
    let e = save("temp > 1.0", json!({"profile": "nope"})).unwrap_err();
    assert!(e.contains("not found"), "{e}");
    save("temp > 1.0", typed).unwrap();
}

#[test]
fn backtests_replay_stored_telemetry() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let tenant = p.registry.tenant("default").unwrap();
    let (_, token) = p
        .registry
        .create_device(
            &tenant.id,
            NewDevice {
                name: "pump-7".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let t0 = crate::db::now_ms() - 3_600_000;
    // Vibration rising past 5 for two minutes, then back down.
    let points: Vec<_> = (0..20)
        .map(|i| {
            let v = if (5..12).contains(&i) { 7.0 } else { 2.0 };
            json!({"ts": t0 + i * 30_000, "values": {"vibration": v}})
        })
        .collect();
    telemetry(&p, &token, json!(points));
    let spec = rule(json!({"name": "vibration", "scope": {"device": "pump-7"},
        "condition": "vibration > 5.0", "for": "2m", "actions": [{"type": "log"}]}));
    let out = super::backtest::backtest(&p, &tenant.id, &spec, t0, t0 + 3_600_000).unwrap();
    let hits: Vec<(i64, &str)> = out
        .hits
        .iter()
        .map(|h| ((h.ts - t0) / 30_000, h.phase.as_str()))
        .collect();
    // High from step 5; two minutes later (step 9) it fires; it clears at step 12.
    assert_eq!(hits, [(9, "fire"), (12, "clear")], "{out:?}");
    assert_eq!((out.devices, out.evaluations, out.errors), (1, 20, 0));
    // Nothing was saved and no state was kept.
    assert!(p.rules.store.list(None, 10, None).unwrap().0.is_empty());
    let bad = rule(
        json!({"name": "x", "scope": {"tenant": true}, "trigger": "status",
        "condition": "true", "actions": [{"type": "log"}]}),
    );
    assert!(super::backtest::backtest(&p, &tenant.id, &bad, 0, 1).is_err());
}

#[test]
fn status_rules_see_connects_and_disconnects() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let tenant = p.registry.tenant("default").unwrap();
    let (d, _) = p
        .registry
        .create_device(
            &tenant.id,
            NewDevice {
                name: "gw".into(),
                ..Default::default()
            },
        )
        .unwrap();
    p.rules
        .create(
            &p.registry,
            &tenant.id,
            rule(
                json!({"name": "offline", "scope": {"tenant": true}, "trigger": "status",
                "condition": "!device.active",
                "actions": [{"type": "alarm", "alarm": "Offline", "severity": "MAJOR"}]}),
            ),
        )
        .unwrap();
    let mut engine = RuleEngine::new(p.clone());
    let event = |kind| Event {
        tenant: Arc::from(tenant.id.as_str()),
        device: Arc::from(d.id.as_str()),
        ts: crate::db::now_ms(),
        kind,
    };
    use crate::bus::EventKind;
    assert!(phases(
        &mut engine,
        &event(EventKind::Connected { transport: "mqtt" })
    )
    .is_empty());
    assert_eq!(
        phases(
            &mut engine,
            &event(EventKind::Disconnected { transport: "mqtt" })
        ),
        [Phase::Fire]
    );
    assert_eq!(
        phases(
            &mut engine,
            &event(EventKind::Connected { transport: "mqtt" })
        ),
        [Phase::Clear]
    );
    // Telemetry does not trigger a status rule.
    assert!(engine
        .on_event(&event(EventKind::Telemetry(vec![])))
        .is_empty());
}

#[test]
fn scheduled_rules_run_over_every_device_in_scope() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let tenant = p.registry.tenant("default").unwrap();
    let (_, hot) = p
        .registry
        .create_device(
            &tenant.id,
            NewDevice {
                name: "hot".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let (_, cold) = p
        .registry
        .create_device(
            &tenant.id,
            NewDevice {
                name: "cold".into(),
                ..Default::default()
            },
        )
        .unwrap();
    telemetry(&p, &hot, json!({"temp": 35.0}));
    telemetry(&p, &cold, json!({"temp": 5.0}));
    let bad = |schedule: serde_json::Value| {
        p.rules
            .create(
                &p.registry,
                &tenant.id,
                rule(json!({"name": "x", "scope": {"tenant": true}, "trigger": "schedule",
                    "schedule": schedule, "condition": "temp > 30.0", "actions": [{"type": "log"}]})),
            )
            .unwrap_err()
            .to_string()
    };
    assert!(bad(json!("every day")).contains("schedule"));
    assert!(bad(json!("0 0 31 2 *")).contains("never"));
    p.rules
        .create(
            &p.registry,
            &tenant.id,
            rule(
                json!({"name": "hourly check", "scope": {"tenant": true}, "trigger": "schedule",
                "schedule": "0 * * * *", "condition": "temp > 30.0",
                "actions": [{"type": "log"}]}),
            ),
        )
        .unwrap();
    let mut engine = RuleEngine::new(p.clone());
    let hour = 3_600_000;
    let now = (crate::db::now_ms() / hour) * hour + 60_000; // one minute past the hour
                                                            // Not due until the next full hour.
    assert!(engine.tick(now).is_empty());
    assert!(engine.tick(now + 30 * 60_000).is_empty());
    let jobs = engine.tick(now + hour);
    let fired: Vec<_> = jobs
        .iter()
        .map(|j| (j.device.name.as_str(), j.phase))
        .collect();
    assert_eq!(fired, [("hot", Phase::Fire)]);
    // Once per occurrence.
    assert!(engine.tick(now + hour + 1000).is_empty());
}

#[test]
fn the_engine_sees_attribute_profile_and_rule_changes_it_caches() {
    let t = TestPlatform::new();
    let p = t.platform.clone();
    let tenant = p.registry.tenant("default").unwrap();
    for name in ["boilers", "pumps"] {
        let new = crate::model::NewProfile {
            name: name.into(),
            ..Default::default()
        };
        p.registry.create_profile(&tenant.id, new).unwrap();
    }
    let (d, token) = p
        .registry
        .create_device(
            &tenant.id,
            NewDevice {
                name: "b-1".into(),
                profile: Some("boilers".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let limit = |v: f64| {
        let m = json!({ "limit": v });
        p.set_shared(&d.id, m.as_object().unwrap().clone()).unwrap();
    };
    limit(50.0);
    let created = p
        .rules
        .create(
            &p.registry,
            &tenant.id,
            rule(json!({"name": "hot", "scope": {"profile": "boilers"},
                "condition": "temp > attributes.limit", "actions": [{"type": "log"}]})),
        )
        .unwrap();
    let mut engine = RuleEngine::new(p.clone());
    let temp = |v: f64| json!({ "temp": v });
    assert!(phases(&mut engine, &telemetry(&p, &token, temp(40.0))).is_empty());
    // The attribute changed after the engine cached it.
    limit(30.0);
    assert_eq!(
        phases(&mut engine, &telemetry(&p, &token, temp(40.0))),
        [Phase::Fire]
    );
    // An updated rule starts over: its state is not the old one, in memory or stored.
    engine.flush();
    let spec = rule(json!({"name": "hot", "scope": {"profile": "boilers"},
        "condition": "temp > attributes.limit + 5.0", "actions": [{"type": "log"}]}));
    p.rules.update(&p.registry, &created.id, spec).unwrap();
    assert_eq!(
        phases(&mut engine, &telemetry(&p, &token, temp(40.0))),
        [Phase::Fire]
    );
    // The device moved to another profile: the cached device is not used any more.
    let update = crate::model::DeviceUpdate {
        profile: Some("pumps".into()),
        ..Default::default()
    };
    p.registry.update_device(&d.id, &update).unwrap();
    let jobs = engine.on_event(&telemetry(&p, &token, temp(20.0)));
    assert!(jobs.is_empty(), "out of the rule's scope: no clear either");
}
