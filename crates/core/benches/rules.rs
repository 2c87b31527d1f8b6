//! Rule evaluation, measured through the public API (criterion):
//!
//! - `condition/*`: one CEL condition evaluated with `Cel::eval` over prepared variables, as
//!   the engine does once per (rule, device, timestamp): a plain threshold, one reading
//!   attributes and the `device` variable, and window functions over an in-memory history.
//!   The throughput is condition evaluations per second. `per_event/variables` is what the
//!   engine pays once per (event, timestamp), shared by every rule it evaluates there.
//! - `engine/*`: `RuleEngine::on_event` for one telemetry event of one device, end to end, on a
//!   `TestPlatform` (in-memory SQLite database, telemetry store in a temporary directory) whose
//!   tenant has 1,000 rules: 995 profile-scoped (5 per profile, 199 profiles) and 5 tenant-wide,
//!   so that each device matches 10. No condition holds, so nothing fires: this is the steady
//!   per-event cost (rule index, the engine's device cache, variables, state look-ups, 10
//!   evaluations).
//! - `parts/*`: public pieces, for reference: the rule index lookup, and what the engine's
//!   caches save per event (registry lookup, latest values, merged attributes).
//!
//! Run: `cargo bench -p ironbridge-core --bench rules` (figures in docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ib_core::attributes::Scope;
use ib_core::bus::{Event, EventKind};
use ib_core::error::Result;
use ib_core::model::{NewDevice, NewProfile};
use ib_core::payload::Point;
use ib_core::rules::compile::{
    cel_val, device_value, numbers, to_cel, Cel, CelVal, DeviceValues, EvalInput, EvalVars, History,
};
use ib_core::rules::engine::RuleEngine;
use ib_core::rules::lookups::Lookups;
use ib_core::rules::model::{RuleSpec, Trigger};
use ib_core::testing::TestPlatform;
use serde_json::{json, Value as Json};

/// One hour of 1 Hz `temp` values for device `d1`, ending at [`NOW`].
const NOW: i64 = 1_700_000_000_000;

/// Telemetry history in memory: device → key → points sorted by time.
struct MemHistory(HashMap<String, HashMap<String, Vec<(i64, f64)>>>);

impl MemHistory {
    fn one_hour() -> MemHistory {
        let points = (0..3600)
            .map(|s| {
                let ts = NOW - (3599 - s) * 1000;
                (ts, 25.0 + (s % 60) as f64 * 0.1)
            })
            .collect();
        let keys = HashMap::from([("temp".to_string(), points)]);
        MemHistory(HashMap::from([("d1".to_string(), keys)]))
    }

    fn series(&self, device: &str, key: &str) -> &[(i64, f64)] {
        self.0
            .get(device)
            .and_then(|k| k.get(key))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

impl History for MemHistory {
    fn window(&self, device: &str, key: &str, from: i64, to: i64) -> Result<Vec<(i64, f64)>> {
        let s = self.series(device, key);
        let a = s.partition_point(|p| p.0 < from);
        let b = s.partition_point(|p| p.0 <= to);
        Ok(s[a..b.max(a)].to_vec())
    }

    fn previous(&self, device: &str, key: &str, before: i64) -> Result<Option<f64>> {
        let s = self.series(device, key);
        let i = s.partition_point(|p| p.0 < before);
        Ok(i.checked_sub(1).map(|i| s[i].1))
    }
}

/// No external sources or geofences.
struct NoLookups;

impl Lookups for NoLookups {
    fn external(&self, _: &str, name: &str) -> std::result::Result<Json, String> {
        Err(format!("no source {name:?}"))
    }
    fn inside(&self, _: &str, name: &str, _: f64, _: f64) -> std::result::Result<bool, String> {
        Err(format!("no geofence {name:?}"))
    }
}

/// What one evaluation reads, held the way the engine holds it: `temp`, `hum`, `battery` and
/// `extra` more keys of the device's latest values, its attributes and `device` variable.
struct Held {
    values: DeviceValues,
    none: DeviceValues,
    attributes: CelVal,
    device: CelVal,
    history: Arc<dyn History>,
}

impl Held {
    fn new(history: Arc<dyn History>, extra: usize) -> Held {
        let mut values = DeviceValues::default();
        for (k, v) in [("temp", 31.5), ("hum", 42.0), ("battery", 3.7)] {
            values.set(k, NOW, &json!(v));
        }
        for i in 0..extra {
            values.set(&format!("k{i}"), NOW, &json!(i as f64));
        }
        Held {
            values,
            none: DeviceValues::default(),
            attributes: cel_val(to_cel(
                &json!({"temp_limit": 30.0, "mode": "auto", "fw": "1.4.2"}),
            )),
            device: cel_val(device_value("d1", "boiler-1", "boilers", true)),
            history,
        }
    }

    /// The variables at [`NOW`]: made once per (event, timestamp) by the engine, and shared by
    /// every rule it evaluates there.
    fn vars(&self) -> EvalVars<'_> {
        let layers = [&self.none, &self.values];
        let input = EvalInput {
            tenant: Arc::from("t1"),
            device: Arc::from("d1"),
            ts: NOW,
            values: Arc::new(numbers(layers)),
            history: self.history.clone(),
            lookups: Arc::new(NoLookups),
        };
        EvalVars::new(
            layers,
            self.attributes.as_ref(),
            self.device.as_ref(),
            input,
        )
    }
}

fn conditions(c: &mut Criterion) {
    let cel = Cel::new();
    let history: Arc<dyn History> = Arc::new(MemHistory::one_hour());
    let held3 = Held::new(history.clone(), 0);
    let held20 = Held::new(history, 17);
    let (vars3, vars20) = (held3.vars(), held20.vars());
    let mut g = c.benchmark_group("condition");
    g.throughput(Throughput::Elements(1));
    // Every case evaluates all of its terms (the first one holds, so && goes on).
    for (name, src, vars) in [
        ("threshold", "temp > 30.0 && hum < 50.0", &vars3),
        (
            "threshold_device_with_20_keys",
            "temp > 30.0 && hum < 50.0",
            &vars20,
        ),
        (
            "attributes",
            "temp > attributes.temp_limit && attributes.mode == 'auto' && device.active",
            &vars3,
        ),
        (
            "window_avg_1m",
            "temp > 30.0 && avg('temp', '1m') > 25.0",
            &vars3,
        ),
        (
            "window_avg_10m",
            "temp > 30.0 && avg('temp', '10m') > 25.0",
            &vars3,
        ),
    ] {
        let program = cel.compile("condition", src).expect("compiles");
        assert!(cel.eval(&program, vars).expect("evaluates"), "{name}");
        g.bench_function(name, |b| b.iter(|| cel.eval(&program, vars).unwrap()));
    }
    // The floor: the same threshold on a plain CEL context whose variables were bound once,
    // with the `cel` crate directly.
    let program = cel
        .compile("condition", "temp > 30.0 && hum < 50.0")
        .unwrap();
    let mut ctx = cel::Context::default();
    for (k, v) in [("temp", 31.5), ("hum", 42.0), ("battery", 3.7)] {
        ctx.add_variable_from_value(k, cel::Value::Float(v));
    }
    assert_eq!(program.execute(&ctx).unwrap(), cel::Value::Bool(true));
    g.bench_function("threshold_variables_bound_once", |b| {
        b.iter(|| program.execute(&ctx).unwrap())
    });
    g.finish();
    // What the engine pays once per (event, timestamp) before its rules run: the variables.
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("variables", |b| b.iter(|| held3.vars()));
    g.finish();
}

/// The tenant's rules and devices for the engine benchmarks.
struct Fixture {
    tp: TestPlatform,
    tenant: String,
    /// A device whose profile's rules do not read attributes.
    plain: String,
    /// A device whose profile has one rule reading attributes.
    with_attributes: String,
    /// A device of another tenant (which has no rules).
    other_tenant: (String, String),
}

const PROFILES: usize = 199;
const RULES_PER_PROFILE: usize = 5;
const TENANT_RULES: usize = 5;
const DEVICES: usize = 1000;

fn fixture() -> Fixture {
    let tp = TestPlatform::new();
    let p = tp.platform.clone();
    let tenant = p.registry.tenant("default").expect("default tenant").id;
    let rule = |spec: Json| {
        let spec: RuleSpec = serde_json::from_value(spec).expect("a rule");
        p.rules
            .create(&p.registry, &tenant, spec)
            .expect("rule saved");
    };
    for i in 0..PROFILES {
        let name = format!("profile-{i}");
        let new = NewProfile {
            name: name.clone(),
            ..NewProfile::default()
        };
        p.registry.create_profile(&tenant, new).expect("profile");
        for k in 0..RULES_PER_PROFILE {
            // Thresholds no reading reaches: nothing fires, the state never changes.
            let condition = if i == 0 && k == 0 {
                "temp > attributes.temp_limit + 100.0".to_string()
            } else {
                format!("temp > {}.5 && hum < 50.0", 100 + k)
            };
            rule(json!({
                "name": format!("p{i}-r{k}"), "scope": {"profile": name}, "trigger": "telemetry",
                "condition": condition, "clear": "temp < 20.0",
                "actions": [{"type": "alarm", "alarm": format!("high-{k}"), "severity": "MAJOR"}],
            }));
        }
    }
    for k in 0..TENANT_RULES {
        rule(json!({
            "name": format!("t-r{k}"), "scope": {"tenant": true}, "trigger": "telemetry",
            "condition": format!("battery < 1.{k}"),
            "actions": [{"type": "alarm", "alarm": format!("battery-{k}"), "severity": "MINOR"}],
        }));
    }
    let mut ids = Vec::new();
    for d in 0..DEVICES {
        let new = NewDevice {
            name: format!("dev-{d}"),
            profile: Some(format!("profile-{}", d % PROFILES)),
            ..NewDevice::default()
        };
        let (dev, _) = p.registry.create_device(&tenant, new).expect("device");
        // Five keys of latest values and a few attributes, as a real device has.
        let points = ["temp", "hum", "battery", "rssi", "uptime"]
            .iter()
            .enumerate()
            .map(|(i, k)| store::Point {
                key: k.to_string(),
                ts: NOW - 1000,
                value: store::Value::Double(20.0 + i as f64),
            })
            .collect();
        p.telemetry
            .write(&dev.id, "bench", points)
            .wait()
            .expect("latest values");
        let attrs = json!({"temp_limit": 30.0, "fw": "1.4.2", "site": "north"});
        p.attributes
            .save(&dev.id, Scope::Server, attrs.as_object().unwrap(), NOW)
            .expect("attributes");
        ids.push(dev.id);
    }
    let other = p.registry.create_tenant("other").expect("tenant").id;
    let new = NewDevice {
        name: "elsewhere".into(),
        ..NewDevice::default()
    };
    let (dev, _) = p.registry.create_device(&other, new).expect("device");
    Fixture {
        plain: ids[1].clone(),
        with_attributes: ids[0].clone(),
        other_tenant: (other, dev.id),
        tenant,
        tp,
    }
}

fn telemetry(tenant: &str, device: &str, ts: i64) -> Event {
    let point = |key: &str, v: f64| Point {
        key: key.into(),
        ts,
        value: json!(v),
    };
    Event {
        tenant: Arc::from(tenant),
        device: Arc::from(device),
        ts,
        kind: EventKind::Telemetry(vec![
            point("temp", 24.5),
            point("hum", 40.0),
            point("battery", 3.7),
        ]),
    }
}

fn engine(c: &mut Criterion) {
    let f = fixture();
    let p = f.tp.platform.clone();
    let mut engine = RuleEngine::new(p.clone());
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let cases = [
        ("on_event_10_of_1000_rules", &f.tenant, &f.plain),
        (
            "on_event_10_of_1000_rules_one_reads_attributes",
            &f.tenant,
            &f.with_attributes,
        ),
        (
            "on_event_tenant_without_rules",
            &f.other_tenant.0,
            &f.other_tenant.1,
        ),
    ];
    let mut ts = NOW;
    for (name, tenant, device) in cases {
        let jobs = engine.on_event(&telemetry(tenant, device, ts));
        assert!(jobs.is_empty(), "{name}: nothing fires");
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    ts += 1000;
                    telemetry(tenant, device, ts)
                },
                |ev| engine.on_event(&ev),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parts");
    g.throughput(Throughput::Elements(1));
    let device = p.registry.device(&f.plain).unwrap();
    g.bench_function("rule_index_matching_of_1000", |b| {
        b.iter(|| {
            p.rules
                .index()
                .matching(
                    &f.tenant,
                    Trigger::Telemetry,
                    &device.profile_id,
                    &device.id,
                )
                .count()
        })
    });
    g.bench_function("registry_device", |b| {
        b.iter(|| p.registry.device(&f.plain).unwrap())
    });
    g.bench_function("telemetry_latest_5_keys", |b| {
        b.iter(|| p.telemetry.latest(&f.plain, None).unwrap())
    });
    g.bench_function("attributes_merged", |b| {
        b.iter(|| p.attributes.merged(&f.plain).unwrap().len())
    });
    g.finish();
}

fn config() -> Criterion {
    // Short runs: the machine is shared and the figures are compared as ratios anyway.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = conditions, engine
}
criterion_main!(benches);
