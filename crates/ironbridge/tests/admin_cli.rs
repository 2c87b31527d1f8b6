//! `ironbridge admin ...` and `ironbridge completions` as a user runs them: the binary on a
//! temporary data dir, tables by default and `--json`, errors on stderr with a non-zero exit.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod support;

use support::{http_request, TempDir};

/// The binary with a clean environment for these tests.
fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ironbridge"));
    cmd.env_remove("IRONBRIDGE_NEW_PASSWORD")
        .env_remove("IRONBRIDGE_DATA_DIR")
        .env("RUST_LOG", "warn");
    cmd
}

/// `ironbridge admin --data-dir DIR ARGS...` with `stdin` (nothing when `None`) and `env`.
fn admin_with(dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = binary();
    cmd.arg("admin").arg("--data-dir").arg(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn admin(dir: &Path, args: &[&str]) -> Output {
    admin_with(dir, args, None, &[])
}

/// Stdout of a command that must succeed.
fn ok(out: Output) -> String {
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "failed: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout
}

/// Stderr of a command that must fail.
fn fails(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success(),
        "succeeded unexpectedly\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.trim().is_empty(), "a failure printed {stdout}");
    stderr
}

/// `admin --json ARGS...` parsed.
fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(admin(dir, &all))).unwrap()
}

/// The element of a JSON array whose `key` is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array().unwrap().iter().find(|v| v[key] == value)
}

/// The table line whose first column is `first`.
fn table_line<'a>(table: &'a str, first: &str) -> Option<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
}

const GOOD: &str = "Correct-horse-9";

#[test]
fn users_add_list_set_delete() {
    let dir = TempDir::new("admin-users");
    let d = dir.0.as_path();
    ok(admin(d, &["tenant", "create", "acme"]));
    let acme = json(d, &["tenant", "list"]);
    let acme_id = find(&acme, "name", "acme").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Password from the environment.
    let env = [("IRONBRIDGE_NEW_PASSWORD", GOOD)];
    let args = [
        "user",
        "add",
        "alice",
        "--role",
        "tenant_admin",
        "--tenant",
        "acme",
    ];
    let out = ok(admin_with(d, &args, None, &env));
    assert!(out.contains("alice") && !out.contains("password"), "{out}");

    let users = json(d, &["user", "list"]);
    let alice = find(&users, "username", "alice").expect("alice listed");
    assert_eq!(alice["role"], "tenant_admin");
    assert_eq!(alice["tenant"], acme_id.as_str());
    assert!(alice["customer"].is_null());
    assert!(alice.get("password").is_none() && alice.get("password_hash").is_none());
    let table = ok(admin(d, &["user", "list"]));
    assert!(table.starts_with("USERNAME"), "{table}");
    let line = table_line(&table, "alice").expect("alice in the table");
    assert!(
        line.contains("tenant_admin") && line.contains("acme"),
        "{line}"
    );
    // Filtered by tenant.
    let users = json(d, &["user", "list", "--tenant", "default"]);
    assert!(find(&users, "username", "alice").is_none());
    let users = json(d, &["user", "list", "--tenant", "acme"]);
    assert!(find(&users, "username", "alice").is_some());

    // A generated password, printed once; the default tenant.
    let out = ok(admin(d, &["user", "add", "bob", "--role", "viewer"]));
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generated password in {out}"));
    assert!(password.len() >= 8, "{password}");
    let bob = json(d, &["user", "list", "--tenant", "default"]);
    assert_eq!(find(&bob, "username", "bob").unwrap()["role"], "viewer");
    let carol = json(d, &["user", "add", "carol", "--role", "operator"]);
    assert!(carol["password"].as_str().unwrap().len() >= 8, "{carol}");

    // From stdin (which wins over the environment).
    let args = [
        "user",
        "add",
        "dave",
        "--role",
        "viewer",
        "--password-stdin",
    ];
    ok(admin_with(d, &args, Some("Another-pass-7\n"), &env));

    // Role and customer changes.
    ok(admin(d, &["customer", "add", "north", "--tenant", "acme"]));
    let north = json(d, &["customer", "list", "--tenant", "acme"]);
    let north_id = find(&north, "name", "north").unwrap()["id"].clone();
    let args = [
        "user",
        "set",
        "alice",
        "--role",
        "operator",
        "--customer",
        "north",
    ];
    let out = ok(admin(d, &args));
    assert!(out.contains("sessions revoked: 0"), "{out}");
    let alice = json(d, &["user", "list", "--tenant", "acme"]);
    let alice = find(&alice, "username", "alice").unwrap();
    assert_eq!(alice["role"], "operator");
    assert_eq!(alice["customer"], north_id);
    let table = ok(admin(d, &["user", "list"]));
    let line = table_line(&table, "alice").unwrap();
    assert!(
        line.contains("operator") && line.contains("north"),
        "{line}"
    );
    let alice = json(d, &["user", "set", "alice", "--no-customer"]);
    assert!(alice["customer"].is_null(), "{alice}");
    assert_eq!(alice["sessions_revoked"], 0);
    // A tenant_admin cannot belong to a customer.
    let args = [
        "user",
        "set",
        "alice",
        "--role",
        "tenant_admin",
        "--customer",
        "north",
    ];
    let err = fails(admin(d, &args));
    assert!(err.contains("tenant_admin"), "{err}");
    let err = fails(admin(d, &["user", "set", "alice"]));
    assert!(err.contains("nothing to change"), "{err}");
    // A sys_admin belongs to no tenant.
    let args = [
        "user",
        "add",
        "root2",
        "--role",
        "sys_admin",
        "--tenant",
        "acme",
    ];
    let err = fails(admin_with(d, &args, None, &env));
    assert!(err.contains("sys_admin belongs to no tenant"), "{err}");
    let args = ["user", "add", "root2", "--role", "sys_admin"];
    let root = json(d, &args);
    assert!(
        root["tenant"].is_null() && root["role"] == "sys_admin",
        "{root}"
    );
    // No bootstrap `admin` here (`serve` makes it): root2 is the only sys_admin.
    let err = fails(admin(d, &["user", "delete", "root2"]));
    assert!(
        err.contains("the last sys_admin cannot be deleted"),
        "{err}"
    );

    let out = ok(admin(d, &["user", "delete", "alice"]));
    assert!(out.contains("deleted user alice"), "{out}");
    let users = json(d, &["user", "list"]);
    assert!(find(&users, "username", "alice").is_none());
    let err = fails(admin(d, &["user", "add", "bob", "--role", "viewer"]));
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn password_policy_is_enforced() {
    let dir = TempDir::new("admin-policy");
    let d = dir.0.as_path();
    for (password, why) in [
        ("short1", "at least 8 characters"),
        ("onlyletters", "two of"),
        ("xxeve12345", "user name"),
    ] {
        let args = ["user", "add", "eve", "--role", "viewer", "--password-stdin"];
        let err = fails(admin_with(d, &args, Some(password), &[]));
        assert!(err.contains("password must") && err.contains(why), "{err}");
        let env = [("IRONBRIDGE_NEW_PASSWORD", password)];
        let err = fails(admin_with(d, &args[..5], None, &env));
        assert!(err.contains(why), "{err}");
    }
    let err = fails(admin_with(
        d,
        &["user", "add", "eve", "--role", "viewer", "--password-stdin"],
        Some(""),
        &[],
    ));
    assert!(err.contains("stdin had no password"), "{err}");
    let users = json(d, &["user", "list"]);
    assert!(find(&users, "username", "eve").is_none());

    // A refused new password changes nothing, not even the role given with it.
    ok(admin(d, &["user", "add", "frank", "--role", "viewer"]));
    let args = [
        "user",
        "set",
        "frank",
        "--role",
        "operator",
        "--password-stdin",
    ];
    let err = fails(admin_with(d, &args, Some("weak\n"), &[]));
    assert!(err.contains("password must"), "{err}");
    let users = json(d, &["user", "list"]);
    assert_eq!(find(&users, "username", "frank").unwrap()["role"], "viewer");
    let out = ok(admin_with(d, &args, Some("Better-pass-42\r\n"), &[]));
    assert!(out.contains("operator"), "{out}");
}

#[test]
fn customers_and_device_assignment() {
    let dir = TempDir::new("admin-customers");
    let d = dir.0.as_path();
    let out = ok(admin(d, &["customer", "add", "acme-corp"]));
    assert!(table_line(&out, "acme-corp").is_some(), "{out}");
    let customers = json(d, &["customer", "list"]);
    let cust_id = find(&customers, "name", "acme-corp").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pump = json(d, &["device", "create", "pump-1"]);
    assert!(pump["access_token"].as_str().is_some(), "{pump}");
    let out = ok(admin(d, &["device", "create", "pump-2"]));
    assert!(out.contains("access_token: "), "{out}");

    let out = ok(admin(
        d,
        &["device", "assign", "pump-1", "--customer", "acme-corp"],
    ));
    assert!(
        table_line(&out, "pump-1").unwrap().contains("acme-corp"),
        "{out}"
    );
    let table = ok(admin(d, &["device", "list"]));
    assert!(table.starts_with("NAME"), "{table}");
    let line = table_line(&table, "pump-1").unwrap();
    assert!(line.contains("acme-corp"), "{table}");
    assert!(!table_line(&table, "pump-2").unwrap().contains("acme-corp"));
    let devices = json(d, &["device", "list"]);
    assert_eq!(
        find(&devices, "name", "pump-1").unwrap()["customer"],
        cust_id.as_str()
    );
    assert!(find(&devices, "name", "pump-2").unwrap()["customer"].is_null());
    let mine = json(d, &["device", "list", "--customer", "acme-corp"]);
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    // Assigning by id works too.
    ok(admin(
        d,
        &["device", "assign", "pump-2", "--customer", &cust_id],
    ));

    let pump = json(d, &["device", "unassign", "pump-1"]);
    assert!(pump["customer"].is_null(), "{pump}");
    let err = fails(admin(
        d,
        &["device", "assign", "pump-1", "--customer", "nope"],
    ));
    assert!(err.contains("customer \"nope\" not found"), "{err}");
    let err = fails(admin(d, &["customer", "add", "acme-corp"]));
    assert!(err.contains("already exists"), "{err}");

    // Deleting the customer unassigns its devices.
    let out = ok(admin(d, &["customer", "delete", "acme-corp"]));
    assert!(out.contains("deleted customer acme-corp"), "{out}");
    let devices = json(d, &["device", "list"]);
    assert!(find(&devices, "name", "pump-2").unwrap()["customer"].is_null());
    assert_eq!(ok(admin(d, &["customer", "list"])).trim(), "(none)");
}

#[test]
fn api_client_secret_is_shown_once() {
    let dir = TempDir::new("admin-clients");
    let d = dir.0.as_path();
    let out = ok(admin(d, &["api-client", "add", "etl", "--role", "viewer"]));
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let (client_id, secret) = (field("client_id:"), field("client_secret:"));
    assert!(client_id.starts_with("ibc_"), "{out}");
    assert!(secret.len() >= 32, "{out}");

    let table = ok(admin(d, &["api-client", "list"]));
    assert!(
        table.contains(&client_id) && table.contains("viewer"),
        "{table}"
    );
    assert!(!table.contains(&secret), "{table}");
    let list = ok(admin(d, &["--json", "api-client", "list"]));
    assert!(!list.contains(&secret), "{list}");
    let list: Value = serde_json::from_str(&list).unwrap();
    let etl = find(&list, "client_id", &client_id).unwrap();
    assert_eq!(etl["name"], "etl");
    assert!(etl.get("client_secret").is_none());

    let made = json(d, &["api-client", "add", "ops-bot", "--role", "operator"]);
    assert!(
        made["client_secret"].as_str().unwrap().len() >= 32,
        "{made}"
    );
    ok(admin(d, &["tenant", "create", "other"]));
    let other = json(d, &["api-client", "list", "--tenant", "other"]);
    assert_eq!(other, serde_json::json!([]));

    let out = ok(admin(d, &["api-client", "delete", &client_id]));
    assert!(out.contains("deleted API client etl"), "{out}");
    let id = made["id"].as_str().unwrap();
    ok(admin(d, &["api-client", "delete", id]));
    assert_eq!(ok(admin(d, &["api-client", "list"])).trim(), "(none)");
}

#[test]
fn unknown_names_are_clear_errors() {
    let dir = TempDir::new("admin-unknown");
    let d = dir.0.as_path();
    let cases: &[(&[&str], &str)] = &[
        (
            &["user", "add", "x", "--role", "viewer", "--tenant", "nope"],
            "tenant \"nope\" not found",
        ),
        (
            &["user", "list", "--tenant", "nope"],
            "tenant \"nope\" not found",
        ),
        (
            &["user", "set", "nobody", "--role", "viewer"],
            "user \"nobody\" not found",
        ),
        (&["user", "delete", "nobody"], "user \"nobody\" not found"),
        (
            &["customer", "list", "--tenant", "nope"],
            "tenant \"nope\" not found",
        ),
        (
            &["customer", "delete", "nope"],
            "customer \"nope\" not found",
        ),
        (
            &["device", "assign", "ghost", "--customer", "c"],
            "device \"ghost\" not found",
        ),
        (
            &["device", "unassign", "ghost"],
            "device \"ghost\" not found",
        ),
        (
            &["api-client", "delete", "nope"],
            "API client \"nope\" not found",
        ),
        (
            &[
                "api-client",
                "add",
                "x",
                "--role",
                "viewer",
                "--tenant",
                "nope",
            ],
            "tenant \"nope\" not found",
        ),
    ];
    for (args, message) in cases {
        let err = fails(admin(d, args));
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let env = [("IRONBRIDGE_NEW_PASSWORD", GOOD)];
    let err = fails(admin_with(
        d,
        &["user", "add", "x", "--role", "root"],
        None,
        &env,
    ));
    assert!(err.contains("sys_admin") && err.contains("viewer"), "{err}");
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = binary().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("ironbridge"), "{shell}: {script}");
        assert!(script.contains("api-client"), "{shell}");
    }
    let out = binary().args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
}

/// Changing a user revokes their sessions on a running server at once.
#[test]
fn changing_a_user_revokes_their_sessions() {
    let dir = TempDir::new("admin-revoke");
    let data = dir.0.join("data");
    let mut server = binary()
        .args(["serve", "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--coap", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("IRONBRIDGE_ADMIN_PASSWORD", "Admin-pass-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let _server = Kill(server);
    let mut http = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("listening http ") {
            http = Some(addr.to_string());
        }
        if line.starts_with("listening mqtt ") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let http = http.expect("the server printed its http address");

    let env = [("IRONBRIDGE_NEW_PASSWORD", GOOD)];
    ok(admin_with(
        &data,
        &["user", "add", "ops", "--role", "operator"],
        None,
        &env,
    ));
    let login = |password: &str| {
        let body = format!("{{\"username\":\"ops\",\"password\":\"{password}\"}}");
        http_request(&http, "POST", "/api/v1/auth/login", None, Some(&body))
    };
    let (status, body) = login(GOOD);
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let me = || http_request(&http, "GET", "/api/v1/auth/me", Some(&token), None);
    let (status, body) = me();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("operator"), "{body}");

    let out = json(&data, &["user", "set", "ops", "--role", "viewer"]);
    assert_eq!(out["sessions_revoked"], 1, "{out}");
    let (status, body) = me();
    assert_eq!(status, 401, "{body}");

    // A new password: the old one no longer logs in.
    let (status, body) = login(GOOD);
    assert_eq!(status, 200, "{body}");
    let args = ["--json", "user", "set", "ops", "--password-stdin"];
    let out = ok(admin_with(&data, &args, Some("Fresh-pass-77\n"), &[]));
    assert!(out.contains("\"sessions_revoked\": 1"), "{out}");
    assert_eq!(login(GOOD).0, 401);
    assert_eq!(login("Fresh-pass-77").0, 200);
}
