//! Brokers for the scenario tests: Ironbridge in-process on every transport (TCP, TLS,
//! WebSocket, WebSocket over TLS, the last three wired here the way the binary wires them, with
//! `Broker::serve_stream`), and Debian's `mosquitto` on a free port with a temporary config.
//! Plus a throw-away PKI made with rcgen and a parser for command lines.

#![allow(dead_code)] // each test file uses its own subset

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::transport::WsIo;
use bench::{BenchArgs, BenchTarget, MqttArgs, Report};
use broker::{Broker, BrokerConfig};
use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Options every test run gets unless its line sets them: short, quiet, bounded.
const QUICK: [(&str, &str); 5] = [
    ("--quiet", ""),
    ("--warmup", "0.2"),
    ("--duration", "1"),
    ("--drain-max", "5"),
    ("--drain-idle", "1"),
];

/// Parses `ironbridge bench mqtt LINE --port PORT` plus the quick options.
pub fn args(line: &str, port: u16) -> MqttArgs {
    let mut full = format!("bench mqtt {line} --port {port}");
    for (flag, value) in QUICK {
        if !line.split_whitespace().any(|w| w == flag) {
            full.push_str(&format!(" {flag} {value}"));
        }
    }
    match BenchArgs::try_parse_from(full.split_whitespace()) {
        Ok(BenchArgs {
            target: BenchTarget::Mqtt(m),
        }) => m,
        Ok(other) => panic!("{full}: not an mqtt scenario: {other:?}"),
        Err(e) => panic!("{full}: {e}"),
    }
}

/// Runs a scenario and prints its report (shown when a test fails).
pub async fn run(args: &MqttArgs) -> Report {
    let report = bench::run_mqtt(args).await.expect("the run fails");
    let mut table = Vec::new();
    bench::report::write_table(&report, &mut table).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&table));
    report
}

/// The run made progress, lost nothing, saw no duplicate and no error.
pub fn assert_no_loss(r: &Report) {
    let t = r.traffic.as_ref().expect("a traffic report");
    let c = &t.counts;
    assert!(c.sent > 0, "nothing sent: {r:?}");
    assert_eq!(c.lost, Some(0), "lost messages: {r:?}");
    assert_eq!(c.expected, Some(c.received), "{r:?}");
    assert_eq!(c.duplicates, 0, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
}

/// Counts are consistent: received + lost = expected, none beyond.
pub fn assert_counts_add_up(r: &Report) {
    let c = &r.traffic.as_ref().expect("a traffic report").counts;
    assert!(c.sent > 0 && c.received > 0, "{r:?}");
    let expected = c.expected.expect("expected deliveries");
    assert_eq!(c.received + c.lost.unwrap(), expected, "{r:?}");
    assert_eq!(c.extra, Some(0), "{r:?}");
    assert_eq!(c.duplicates, 0, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        // A counter as well as the time: parallel tests can read the same clock value, and two
        // tests sharing a directory delete each other's files.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ib-bench-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a server certificate for 127.0.0.1 / localhost: `ca.pem`, `server.pem`, `server.key`.
pub fn pki() -> TempDir {
    let dir = TempDir::new("pki");
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.path("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.path("server.key"), key.serialize_pem()).unwrap();
    dir
}

/// Ironbridge in-process, on all four transports.
pub struct Ironbridge {
    pub tcp: u16,
    pub tls: u16,
    pub ws: u16,
    pub wss: u16,
    pub pki: TempDir,
    _stop: watch::Sender<bool>,
}

impl Ironbridge {
    pub async fn start() -> Ironbridge {
        Self::with_config(BrokerConfig {
            allow_anonymous: true,
            ..BrokerConfig::default()
        })
        .await
    }

    pub async fn with_config(config: BrokerConfig) -> Ironbridge {
        let broker = Broker::with_static_hooks(config);
        let (stop, rx) = watch::channel(false);
        let pki = pki();
        let acceptor = tls_acceptor(&pki);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        {
            let (b, rx) = (broker.clone(), rx.clone());
            tokio::spawn(async move { b.serve_tcp(tcp, rx).await });
        }
        let mut ports = Vec::new();
        for (tls, ws) in [(true, false), (false, true), (true, true)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port());
            let acceptor = tls.then(|| acceptor.clone());
            let (b, rx) = (broker.clone(), rx.clone());
            tokio::spawn(accept_loop(listener, b, rx, acceptor, ws));
        }
        Ironbridge {
            tcp: tcp_port,
            tls: ports[0],
            ws: ports[1],
            wss: ports[2],
            pki,
            _stop: stop,
        }
    }
}

fn tls_acceptor(pki: &TempDir) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Accepts clients: TLS handshake and/or WebSocket upgrade, then the broker serves the stream.
async fn accept_loop(
    listener: TcpListener,
    broker: Broker,
    mut stop: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
    ws: bool,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => {
                broker.shutdown_connections();
                return;
            }
        };
        let Ok((tcp, peer)) = accepted else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let (broker, tls) = (broker.clone(), tls.clone());
        tokio::spawn(async move {
            match (tls, ws) {
                (None, false) => broker.serve_stream(tcp, Some(peer), None).await,
                (Some(acceptor), false) => {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        broker.serve_stream(s, Some(peer), None).await
                    }
                }
                (None, true) => {
                    if let Some(s) = ws_accept(tcp).await {
                        broker.serve_stream(s, Some(peer), None).await
                    }
                }
                (Some(acceptor), true) => {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        if let Some(s) = ws_accept(s).await {
                            broker.serve_stream(s, Some(peer), None).await
                        }
                    }
                }
            }
        });
    }
}

#[allow(clippy::result_large_err)] // the error type is tungstenite's callback signature
async fn ws_accept<S>(stream: S) -> Option<WsIo<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let callback = |req: &Request, mut resp: Response| {
        let offered = req
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            offered.split(',').any(|p| p.trim() == "mqtt"),
            "subprotocol {offered:?}"
        );
        assert_eq!(req.uri().path(), "/mqtt");
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .ok()?;
    Some(WsIo::new(ws))
}

/// Debian's mosquitto on free ports (plain and TLS); killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub tls_port: u16,
    pub pki: TempDir,
    _dir: TempDir,
}

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

impl Mosquitto {
    /// Starts mosquitto, or `None` (test skipped) when it is not installed and `CI` is unset.
    pub fn start() -> Option<Mosquitto> {
        if !std::path::Path::new(MOSQUITTO).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{MOSQUITTO} is missing (CI installs it: scripts/setup.sh)"
            );
            eprintln!("skipped: {MOSQUITTO} is not installed");
            return None;
        }
        let dir = TempDir::new("mosquitto");
        let pki = pki();
        let (port, tls_port) = (free_port(), free_port());
        let config = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             max_queued_messages 100000\nlog_dest stderr\nlog_type error\nlog_type warning\n\
             listener {port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
            pki.path("server.pem"),
            pki.path("server.key")
        );
        let config_path = dir.path("mosquitto.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(MOSQUITTO)
            .args(["-c", &config_path])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting mosquitto");
        let m = Mosquitto {
            child,
            port,
            tls_port,
            pki,
            _dir: dir,
        };
        wait_listening(port);
        wait_listening(tls_port);
        Some(m)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto is not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
