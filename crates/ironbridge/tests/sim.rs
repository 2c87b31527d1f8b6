//! `ironbridge sim` end to end: the real binary serving on ephemeral ports, the simulator
//! provisioning its devices through the REST API, sending telemetry (MQTT, then HTTP) and
//! answering RPCs sent through the REST API while it runs; stopped with SIGINT, it prints its
//! summary. No sleeps as synchronisation: every wait polls against a deadline.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{http_request, login, Server};

/// Starts `ironbridge sim` against `server` with `args` (summary as JSON on stdout).
fn start_sim(server: &Server, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ironbridge"))
        .arg("sim")
        .args(args)
        .args(["--http", server.addr("http"), "--mqtt", server.addr("mqtt")])
        .args(["--json", "--quiet"])
        .env(
            "IRONBRIDGE_ADMIN_PASSWORD",
            server
                .admin_password
                .as_deref()
                .expect("generated password"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Polls `f` until it returns `Some`, failing after `secs` seconds with `what`.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(server: &Server, token: &str, path: &str) -> Value {
    let (status, body) = http_request(server.addr("http"), "GET", path, Some(token), None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The ids of the devices named `names`, once all exist.
fn device_ids(server: &Server, token: &str, names: &[&str]) -> Vec<String> {
    poll(30, "the simulated devices", || {
        let page = get(server, token, "/api/v1/devices?limit=1000");
        names
            .iter()
            .map(|n| {
                page["data"]
                    .as_array()?
                    .iter()
                    .find(|d| d["name"] == *n)
                    .map(|d| d["id"].as_str().unwrap().to_string())
            })
            .collect()
    })
}

/// Waits until device `id` has a latest value for `key` that passes `ok`; returns it.
fn latest(server: &Server, token: &str, id: &str, key: &str, ok: impl Fn(&Value) -> bool) -> Value {
    poll(30, &format!("{key} of {id}"), || {
        let v = get(
            server,
            token,
            &format!("/api/v1/devices/{id}/telemetry/latest?keys={key}"),
        );
        let value = v[key]["value"].clone();
        (!value.is_null() && ok(&value)).then_some(value)
    })
}

/// The time of the latest `soil_moisture` of device `id`.
fn latest_ts(server: &Server, token: &str, id: &str) -> i64 {
    let path = format!("/api/v1/devices/{id}/telemetry/latest?keys=soil_moisture");
    get(server, token, &path)["soil_moisture"]["ts"]
        .as_i64()
        .unwrap()
}

/// Sends a two-way RPC until the device answers (it may not be subscribed yet).
fn rpc(server: &Server, token: &str, id: &str, method: &str, params: Value) -> Value {
    let body = json!({"method": method, "params": params, "timeout_ms": 5000}).to_string();
    poll(40, &format!("an answer to {method}"), || {
        let (status, out) = http_request(
            server.addr("http"),
            "POST",
            &format!("/api/v1/devices/{id}/rpc"),
            Some(token),
            Some(&body),
        );
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        (status == 200 && v["status"] == "SUCCESSFUL").then(|| v["response"].clone())
    })
}

/// Stops the simulator as Ctrl-C would and returns its JSON summary.
fn interrupt(mut sim: Child) -> Value {
    let pid = sim.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let status = poll(15, "the simulator to exit", || sim.try_wait().unwrap());
    let mut out = String::new();
    sim.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "sim exited with {status:?}: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("summary {out:?}: {e}"))
}

/// Kills the child if the test fails before stopping it.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn sim_farm_over_mqtt_sends_telemetry_and_answers_set_pump() {
    let server = support::start("", &[]);
    let token = login(&server);
    let mut sim = Guard(Some(start_sim(
        &server,
        &[
            "farm",
            "--devices",
            "2",
            "--interval",
            "200ms",
            "--duration",
            "60s",
        ],
    )));
    let ids = device_ids(&server, &token, &["farm-001", "farm-002"]);
    for id in &ids {
        let m = latest(&server, &token, id, "soil_moisture", |_| true);
        assert!(
            m.as_f64().is_some_and(|m| (0.0..=100.0).contains(&m)),
            "{m}"
        );
        latest(&server, &token, id, "temperature", |_| true);
    }
    let reply = rpc(&server, &token, &ids[0], "setPump", json!({"on": true}));
    assert_eq!(reply, json!({"on": true}));
    // The device reports the new pump state.
    latest(&server, &token, &ids[0], "pump", |v| *v == json!(true));
    let summary = interrupt(sim.0.take().unwrap());
    assert_eq!(summary["scenario"], "farm");
    assert_eq!(summary["devices"], 2);
    assert!(summary["rpcs_answered"].as_u64().unwrap() >= 1, "{summary}");
    // Both devices reported, one of them again after the RPC; all acknowledged before the
    // simulator disconnected.
    assert!(summary["messages"].as_u64().unwrap() >= 3, "{summary}");
    assert_eq!(summary["acknowledged"], summary["messages"], "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");

    // A second run, as the issue states it, reuses the devices (same names, new tokens),
    // stops by itself after its --duration, and both devices have sent newer telemetry.
    let before: Vec<i64> = ids
        .iter()
        .map(|id| latest_ts(&server, &token, id))
        .collect();
    let again = start_sim(
        &server,
        &[
            "farm",
            "--devices",
            "2",
            "--interval",
            "200ms",
            "--duration",
            "3s",
        ],
    );
    let out = again.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["device_names"], json!(["farm-001", "farm-002"]));
    assert_eq!(summary["errors"], 0, "{summary}");
    let page = get(&server, &token, "/api/v1/devices?q=farm-&limit=1000");
    assert_eq!(page["data"].as_array().unwrap().len(), 2, "{page}");
    for (id, before) in ids.iter().zip(before) {
        assert!(
            latest_ts(&server, &token, id) > before,
            "{id}: no new telemetry"
        );
    }
}

#[test]
fn sim_vending_over_http_answers_refill_through_the_long_poll() {
    let server = support::start("", &[]);
    let token = login(&server);
    let mut sim = Guard(Some(start_sim(
        &server,
        &[
            "vending",
            "--transport",
            "http",
            "--devices",
            "1",
            "--rate",
            "5",
            "--duration",
            "60s",
            "--prefix",
            "snacks",
        ],
    )));
    let ids = device_ids(&server, &token, &["snacks-001"]);
    latest(&server, &token, &ids[0], "stock_pct", |_| true);
    let reply = rpc(&server, &token, &ids[0], "refill", Value::Null);
    assert_eq!(reply["ok"], json!(true), "{reply}");
    // Refilled (a sale may already have followed).
    latest(&server, &token, &ids[0], "stock_pct", |v| {
        v.as_f64() >= Some(99.0)
    });
    let profile = get(&server, &token, &format!("/api/v1/devices/{}", ids[0]));
    assert_eq!(profile["profile"], "vending-machine", "{profile}");
    let summary = interrupt(sim.0.take().unwrap());
    assert_eq!(summary["transport"], "http");
    assert!(summary["rpcs_answered"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["acknowledged"], summary["messages"], "{summary}");
}
