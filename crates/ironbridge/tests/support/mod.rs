//! Helpers for the TLS and WebSocket tests: the binary started with a config file (its
//! `listening ...` lines read from stdout), a throw-away PKI made with rcgen in a temporary
//! directory (no key is ever stored in the repository), Mosquitto's clients and a tiny HTTP GET.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        // A counter as well as the time: tests in one process start in parallel.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ib-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `ironbridge serve`; killed on drop.
pub struct Server {
    pub child: Child,
    /// Listener name (`mqtt`, `mqtts`, `http`, `https`) → `127.0.0.1:PORT`.
    pub listeners: HashMap<String, String>,
    /// The bootstrap administrator's password, printed once at first start.
    pub admin_password: Option<String>,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The address of listener `name`.
    pub fn addr(&self, name: &str) -> &str {
        self.listeners
            .get(name)
            .unwrap_or_else(|| panic!("no {name} listener in {:?}", self.listeners))
    }

    /// The port of listener `name`, as a string for command lines.
    pub fn port(&self, name: &str) -> String {
        self.addr(name).rsplit_once(':').unwrap().1.to_string()
    }
}

/// Starts the binary with `config` as its TOML file plus `extra` flags, on ephemeral ports.
pub fn start(config: &str, extra: &[&str]) -> Server {
    let dir = TempDir::new("srv");
    let config_path = dir.0.join("ironbridge.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ironbridge"))
        .args(["serve", "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--coap", "127.0.0.1:0", "--config"])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.0.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut listeners = HashMap::new();
    let mut admin_password = None;
    // `listening mqtt` is printed after every other listener.
    while !listeners.contains_key("mqtt") {
        let Some(line) = lines.next() else {
            let log = std::fs::read_to_string(dir.0.join("stderr.log")).unwrap_or_default();
            panic!("server exited before listening; its log:\n{log}");
        };
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("created user admin with password ") {
            admin_password = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some((name, addr)) = line
            .strip_prefix("listening ")
            .and_then(|l| l.split_once(' '))
        {
            listeners.insert(name.to_string(), addr.to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        listeners,
        admin_password,
        _dir: dir,
    }
}

/// A test PKI: a CA, a server certificate for 127.0.0.1/localhost, client certificates
/// `device-1` (CN=device-1) and `nameless` (empty subject), and `rogue` (CN=device-1 but from
/// another CA). Files: `NAME.pem` and `NAME.key` in the directory, plus `ca.pem`.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        let (ca_pem, ca_issuer) = ca("Ironbridge test CA");
        std::fs::write(dir.0.join("ca.pem"), ca_pem).unwrap();
        let (_, rogue_issuer) = ca("Rogue CA");
        leaf(
            &dir.0,
            "server",
            &ca_issuer,
            Some("localhost"),
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        for (name, issuer, cn) in [
            ("device-1", &ca_issuer, Some("device-1")),
            ("nameless", &ca_issuer, None),
            ("rogue", &rogue_issuer, Some("device-1")),
        ] {
            leaf(
                &dir.0,
                name,
                issuer,
                cn,
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            );
        }
        Pki { dir }
    }

    /// Path of a file in the PKI directory (`ca.pem`, `server.key`, ...).
    pub fn path(&self, file: &str) -> String {
        self.dir.0.join(file).to_str().unwrap().to_string()
    }

    /// `[tls]` lines for the server certificate.
    pub fn tls_section(&self, extra: &str) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
            self.path("server.pem"),
            self.path("server.key")
        )
    }

    /// SHA-256 of a certificate's DER, lowercase hex: what the broker calls its fingerprint.
    pub fn fingerprint(&self, name: &str) -> String {
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::CertificateDer::from_pem_file(self.path(&format!("{name}.pem")))
                .unwrap();
        ring::digest::digest(&ring::digest::SHA256, der.as_ref())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn dn(cn: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    dn
}

fn ca(cn: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = dn(Some(cn));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(
    dir: &Path,
    name: &str,
    issuer: &Issuer<'static, KeyPair>,
    cn: Option<&str>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) {
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name = dn(cn);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// Whether a command-line peer is installed. CI installs them; elsewhere a missing one skips
/// the test.
pub fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found && std::env::var_os("CI").is_some() {
        panic!("{tool} is required in CI");
    }
    found
}

/// Runs `mosquitto_pub` with `args` (host, port, TLS options ...) and waits for it.
pub fn mosquitto_pub(args: &[&str]) -> Output {
    Command::new("mosquitto_pub")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Starts `mosquitto_sub` printing `topic payload` for one message (10 s at most).
pub fn mosquitto_sub(args: &[&str]) -> Child {
    Command::new("mosquitto_sub")
        .args(args)
        .args(["-C", "1", "-W", "10", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Publishes with `publish` until `sub` (which needs a moment to subscribe) has exited, then
/// returns what it printed.
pub fn publish_until_received(mut sub: Child, publish: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let out = mosquitto_pub(publish);
        assert!(out.status.success(), "mosquitto_pub failed: {out:?}");
        if let Some(status) = sub.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "mosquitto_sub got nothing");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    sub.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    sub.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "mosquitto_sub: {status:?} {err}");
    out
}

/// `GET path` over plain HTTP: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, None)
}

/// An HTTP/1.1 request with an optional bearer token and JSON body: (status, body).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Logs in as the bootstrap administrator; returns the bearer token.
pub fn login(s: &Server) -> String {
    let password = s
        .admin_password
        .as_deref()
        .expect("first start prints the password");
    let body = format!("{{\"username\":\"admin\",\"password\":\"{password}\"}}");
    let (status, out) = http_request(
        s.addr("http"),
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&body),
    );
    assert_eq!(status, 200, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// The value of a Prometheus counter line starting with `prefix` (0 when absent).
pub fn metric(http: &str, prefix: &str) -> f64 {
    let (_, body) = http_get(http, "/metrics");
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}
