//! `ironbridge demo` end to end: it starts with its six dashboards created, and every device
//! they name is one the simulated fleets provision and every key they show is one that device
//! reports. No sleeps as synchronisation: every wait polls against a deadline.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{http_request, TempDir};

const PASSWORD: &str = "demo-test-Passw0rd";

/// The demo process, killed on drop (then its data directory removed).
struct Demo {
    child: Child,
    _dir: TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ironbridge demo` on ephemeral ports; returns it and its HTTP address.
fn start_demo() -> (Demo, String) {
    let dir = TempDir::new("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ironbridge"))
        .args(["demo", "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--coap", "127.0.0.1:0", "--data-dir"])
        .arg(dir.0.join("data"))
        .env("IRONBRIDGE_ADMIN_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut listeners = HashMap::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !listeners.contains_key("mqtt") {
        let line = lines
            .next()
            .expect("the demo exited before listening")
            .unwrap();
        if let Some((name, addr)) = line
            .strip_prefix("listening ")
            .and_then(|l| l.split_once(' '))
        {
            listeners.insert(name.to_string(), addr.to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (Demo { child, _dir: dir }, listeners["http"].clone())
}

/// Polls `f` until it returns `Some`, failing after `secs` seconds with `what`.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(http: &str, token: &str, path: &str) -> Value {
    let (status, body) = http_request(http, "GET", path, Some(token), None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_demo_has_a_dashboard_per_fleet_showing_the_simulated_devices() {
    let (_demo, http) = start_demo();
    let body = format!("{{\"username\":\"admin\",\"password\":\"{PASSWORD}\"}}");
    let (status, out) = http_request(&http, "POST", "/api/v1/auth/login", None, Some(&body));
    assert_eq!(status, 200, "{out}");
    let token: Value = serde_json::from_str(&out).unwrap();
    let token = token["token"].as_str().unwrap();

    let list = get(&http, token, "/api/v1/dashboards");
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Factory", "Farm", "Fleet", "Meters", "Patients", "Vending"]
    );

    // Every (device, key) a widget shows, once the fleets have provisioned and reported.
    let mut wanted: Vec<(String, String)> = Vec::new();
    for d in list["data"].as_array().unwrap() {
        for w in d["widgets"].as_array().unwrap() {
            let devices: Vec<&Value> = w["device"].as_str().map_or_else(
                || w["devices"].as_array().into_iter().flatten().collect(),
                |_| vec![&w["device"]],
            );
            let keys: Vec<String> = match w["type"].as_str().unwrap() {
                "map" => vec!["latitude".into(), "longitude".into()],
                _ => w["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect(),
            };
            for dev in devices {
                for k in &keys {
                    wanted.push((dev.as_str().unwrap().to_string(), k.clone()));
                }
                if keys.is_empty() {
                    wanted.push((dev.as_str().unwrap().to_string(), String::new()));
                }
            }
        }
    }
    assert!(wanted.len() > 30, "{wanted:?}");
    let ids: HashMap<String, String> = poll(60, "the simulated devices", || {
        let page = get(&http, token, "/api/v1/devices?limit=1000");
        let ids: HashMap<String, String> = page["data"]
            .as_array()?
            .iter()
            .map(|d| {
                let s = |k: &str| d[k].as_str().unwrap().to_string();
                (s("name"), s("id"))
            })
            .collect();
        wanted
            .iter()
            .all(|(d, _)| ids.contains_key(d))
            .then_some(ids)
    });
    for (device, key) in wanted.iter().filter(|(_, k)| !k.is_empty()) {
        let path = format!(
            "/api/v1/devices/{}/telemetry/latest?keys={key}",
            ids[device]
        );
        poll(60, &format!("{key} of {device}"), || {
            (!get(&http, token, &path)[key.as_str()].is_null()).then_some(())
        });
    }
}
