//! `ironbridge admin firmware ...` against a running server, as a user runs it: upload with a
//! progress line, list, assign, and a campaign created, shown, paused, resumed and cancelled;
//! errors on stderr with a non-zero exit.

use std::process::{Command, Output};

use serde_json::Value;

mod support;

use support::{http_request, login, TempDir};

/// `ironbridge admin [--json] firmware --url URL --password PW ARGS...`.
fn firmware(url: &str, password: &str, json: bool, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ironbridge"));
    cmd.env_remove("IRONBRIDGE_ADMIN_PASSWORD")
        .env_remove("IRONBRIDGE_TOKEN")
        .env_remove("IRONBRIDGE_URL")
        .env("RUST_LOG", "warn")
        .arg("admin");
    if json {
        cmd.arg("--json");
    }
    cmd.args(["firmware", "--url", url, "--password", password])
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> (String, String) {
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "failed: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    (stdout, stderr)
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn upload_list_assign_and_a_campaign() {
    let server = support::start("", &[]);
    let http = server.addr("http").to_string();
    let url = format!("http://{http}");
    let pw = server.admin_password.clone().expect("the admin password");
    let token = login(&server);
    let mut ids = Vec::new();
    for name in ["ota-1", "ota-2", "ota-3", "ota-4"] {
        let body = format!("{{\"name\":\"{name}\"}}");
        let (status, out) =
            http_request(&http, "POST", "/api/v1/devices", Some(&token), Some(&body));
        assert_eq!(status, 201, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let dir = TempDir::new("fw-cli");
    let file = dir.0.join("pump-2.0.bin");
    let image: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &image).unwrap();
    let sha = hex(ring::digest::digest(&ring::digest::SHA256, &image).as_ref());

    let f = file.to_str().unwrap();
    let (stdout, stderr) = ok(firmware(
        &url,
        &pw,
        false,
        &["upload", f, "--title", "pump", "--version", "2.0"],
    ));
    assert!(stdout.contains("pump") && stdout.contains(&sha), "{stdout}");
    assert!(
        stderr.contains("pump-2.0.bin") && stderr.contains("100%"),
        "{stderr}"
    );
    // The same title and version again: refused with the server's reason.
    let e = fails(firmware(
        &url,
        &pw,
        false,
        &["upload", f, "--title", "pump", "--version", "2.0"],
    ));
    assert!(e.contains("already exists") && e.contains("409"), "{e}");

    let (stdout, _) = ok(firmware(&url, &pw, true, &["list"]));
    let list: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list[0]["checksum"], sha.as_str());
    assert_eq!(list[0]["size"], 3_000_000);

    let (stdout, _) = ok(firmware(&url, &pw, false, &["assign", "ota-1", "pump@2.0"]));
    assert_eq!(stdout.trim(), "assigned pump 2.0 to ota-1");
    let (_, out) = http_request(
        &http,
        "GET",
        &format!("/api/v1/devices/{}/firmware", ids[0]),
        Some(&token),
        None,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["firmware"]["package"]["version"], "2.0", "{out}");

    // A campaign for ota-2 .. ota-4, created paused-able.
    let (stdout, _) = ok(firmware(
        &url,
        &pw,
        true,
        &[
            "campaign",
            "create",
            "pumps",
            "--firmware",
            "pump@2.0",
            "--devices",
            "ota-2,ota-3,ota-4",
            "--stages",
            "34,100",
            "--rate",
            "10",
            "--threshold",
            "0",
        ],
    ));
    let c: Value = serde_json::from_str(&stdout).unwrap();
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["counts"]["devices"], 3);
    assert_eq!(c["rate_per_minute"], 10);
    let (stdout, _) = ok(firmware(&url, &pw, false, &["campaign", "show", &id]));
    assert!(stdout.starts_with("campaign pumps ("), "{stdout}");
    assert!(
        stdout.contains("STAGE") && stdout.contains("34%"),
        "{stdout}"
    );
    let (stdout, _) = ok(firmware(&url, &pw, false, &["campaign", "list"]));
    assert!(
        stdout.contains("pumps") && stdout.contains("3 devices"),
        "{stdout}"
    );
    let (stdout, _) = ok(firmware(&url, &pw, false, &["campaign", "devices", &id]));
    assert_eq!(
        stdout.lines().count(),
        4,
        "a header and three devices: {stdout}"
    );
    let (stdout, _) = ok(firmware(&url, &pw, true, &["campaign", "pause", &id]));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["state"],
        "paused"
    );
    let e = fails(firmware(&url, &pw, false, &["campaign", "pause", &id]));
    assert!(e.contains("cannot be paused"), "{e}");
    let (stdout, _) = ok(firmware(&url, &pw, true, &["campaign", "resume", &id]));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["state"],
        "running"
    );
    let (stdout, _) = ok(firmware(&url, &pw, false, &["campaign", "cancel", &id]));
    assert!(stdout.contains(": cancelled,"), "{stdout}");
    // Watch returns at once for a finished campaign.
    let (stdout, _) = ok(firmware(&url, &pw, false, &["campaign", "watch", &id]));
    assert!(stdout.starts_with("cancelled  stage"), "{stdout}");

    // Wrong password, unknown device: clear errors.
    let e = fails(firmware(&url, "wrong-password", false, &["list"]));
    assert!(e.contains("logging in as admin"), "{e}");
    let e = fails(firmware(&url, &pw, false, &["assign", "nope", "pump@2.0"]));
    assert!(e.contains("device \"nope\" not found"), "{e}");
}
