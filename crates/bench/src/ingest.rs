//! `ironbridge bench ingest`: telemetry ingest, end to end or the store's writer alone.
//!
//! End to end: creates `--devices` devices through the REST API (logging in as `admin`), then
//! each device publishes QoS 1 JSON telemetry `{"ts":T,"values":{"k0":..,"k9":..}}` with a
//! window of `--inflight` unacknowledged messages. A PUBACK means the points are committed
//! (Ironbridge acknowledges telemetry only after its store commits), so points/s is
//! acknowledged messages × keys over the measured window.
//!
//! `--writer-only`: the telemetry store in this process, in `--data-dir`, fed by `--writers`
//! threads with batches of `--keys` points for `--devices` devices; points/s committed.
//!
//! `--pg URL` (with `--writer-only` or `--query`): the same measurement on the PostgreSQL
//! backend, in a fresh schema of the database at URL (dropped afterwards), instead of SQLite.
//! `IRONBRIDGE_BENCH_PG_STAGING=1` makes every batch go through the staging table and an
//! upsert (the fallback for repeated timestamps) instead of a COPY straight into the table;
//! `IRONBRIDGE_BENCH_PG_WRITERS=N` sets the number of writer connections (default 2).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Args;
use mqtt_codec::{Packet, Protocol, Publish, QoS};
use store::TelemetryStore;

use crate::cli::Transport;
use crate::client::{ConnectOptions, Incoming, MqttConn};
use crate::endpoint::{parse_loopback, Endpoint};
use crate::error::BenchError;

/// `bench ingest` options.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Ironbridge's MQTT address (loopback only).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Ironbridge's HTTP address, for creating the devices.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// The `admin` password.
    #[arg(long, env = "IRONBRIDGE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Devices (one MQTT connection each; in `--writer-only`, series owners).
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Numeric keys per message.
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
    /// Unacknowledged messages per device.
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,
    /// Seconds of warm-up, not counted.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Runtime threads for the generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Measure the store's writer alone, in this process.
    #[arg(long)]
    pub writer_only: bool,
    /// `--writer-only`: where the store is created (a fresh `ingest-bench-*` directory in it).
    #[arg(long, default_value = ".")]
    pub data_dir: std::path::PathBuf,
    /// `--writer-only`: threads writing.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Query timing instead: one day of 1 Hz data for one key (a slow signal with noise) is
    /// written and sealed in `--data-dir`, then 1-minute averages and all raw points (as JSON)
    /// are read `--repeat` times; also reports bytes per point on disk.
    #[arg(long)]
    pub query: bool,
    /// `--query`: repetitions of each query (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// `--writer-only`, `--query`: the PostgreSQL backend at this URL
    /// (`postgres://USER@127.0.0.1:PORT/DB`, e.g. from scripts/pg-cluster.sh) instead of SQLite;
    /// a fresh schema per run, dropped afterwards.
    #[arg(long, value_name = "URL")]
    pub pg: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `--query` measured (milliseconds, medians).
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryReport {
    pub points: usize,
    pub bytes_per_point: f64,
    pub avg_1m_ms: f64,
    pub raw_json_ms: f64,
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Removes what a benchmark's store left (its directory or its schema).
type Cleanup = Box<dyn FnOnce()>;

/// A benchmark's store, where it is, and how to remove it.
type BenchStore = (Arc<dyn TelemetryStore>, String, Cleanup);

/// The store measured: SQLite in a fresh `TAG-PID` directory of `--data-dir`, or PostgreSQL
/// (`--pg`) in a fresh `TAG_PID` schema.
fn open_store(a: &IngestArgs, tag: &str) -> Result<BenchStore, BenchError> {
    let err = |e: store::StoreError| BenchError::Ingest(format!("opening the store: {e}"));
    if let Some(url) = &a.pg {
        let schema = format!("{}_{}", tag.replace('-', "_"), std::process::id());
        let config = store::PgConfig {
            schema: Some(schema.clone()),
            direct_copy: std::env::var_os("IRONBRIDGE_BENCH_PG_STAGING").is_none(),
            writers: std::env::var("IRONBRIDGE_BENCH_PG_WRITERS")
                .ok()
                .and_then(|w| w.parse().ok())
                .unwrap_or(store::PgConfig::default().writers),
            ..store::PgConfig::default()
        };
        let store = Arc::new(store::PgStore::open(url, config).map_err(err)?);
        let s = store.clone();
        let cleanup: Cleanup = Box::new(move || {
            if let Err(e) = s.drop_schema() {
                eprintln!("dropping the benchmark's schema: {e}");
            }
        });
        return Ok((store, format!("schema {schema}"), cleanup));
    }
    let dir = a.data_dir.join(format!("{tag}-{}", std::process::id()));
    let store = Arc::new(
        store::sqlite::SqliteStore::open(&dir, store::sqlite::SqliteConfig::default())
            .map_err(err)?,
    );
    let (s, place) = (store.clone(), dir.display().to_string());
    let cleanup: Cleanup = Box::new(move || {
        s.close();
        let _ = std::fs::remove_dir_all(&dir);
    });
    Ok((store, place, cleanup))
}

fn query(a: &IngestArgs) -> Result<QueryReport, BenchError> {
    let (store, place, cleanup) = open_store(a, "query-bench")?;
    let day0 = 1_700_006_400_000i64; // a UTC midnight
    let mut x: u64 = 88_172_645_463_325_252;
    let points: Vec<store::Point> = (0..86_400i64)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x % 1000) as f64 / 10_000.0 - 0.05;
            let slow = 21.0 + 4.0 * (i as f64 / 86_400.0 * std::f64::consts::TAU).sin();
            let v = ((slow + noise) * 100.0).round() / 100.0;
            // Real clocks jitter: up to 15 ms late.
            store::Point {
                key: "temperature".into(),
                ts: day0 + i * 1000 + (x % 16) as i64,
                value: store::Value::Double(v),
            }
        })
        .collect();
    // Written as a device would over the day (one point a message), sealed once.
    let mut commits = Vec::new();
    for p in points {
        commits.push(store.write("sensor-1", "bench", vec![p]));
    }
    for c in commits {
        c.wait()
            .map_err(|e| BenchError::Ingest(format!("write: {e}")))?;
    }
    store
        .seal()
        .map_err(|e| BenchError::Ingest(format!("seal: {e}")))?;
    let keys = vec!["temperature".to_string()];
    let (from, to) = (day0, day0 + 86_400_000 - 1);
    let mut avg = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..a.repeat.max(1) {
        let t = Instant::now();
        let r = store
            .aggregate("sensor-1", &keys, from, to, 60_000, store::Agg::Avg)
            .map_err(|e| BenchError::Ingest(e.to_string()))?;
        avg.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r[0].1.len(), 1440, "one average a minute");
        let t = Instant::now();
        let r = store
            .range("sensor-1", &keys, from, to, usize::MAX, false)
            .map_err(|e| BenchError::Ingest(e.to_string()))?;
        // The same serialisation as GET /api/v1/devices/{id}/telemetry.
        let text = store::series_json(&r);
        raw.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(text.len() > 86_400 * 20);
    }
    let bytes = store.disk_bytes();
    if std::env::var_os("IRONBRIDGE_BENCH_KEEP").is_some() {
        eprintln!("keeping {place}");
        return Ok(QueryReport {
            points: 86_400,
            bytes_per_point: bytes as f64 / 86_400.0,
            avg_1m_ms: median_ms(avg),
            raw_json_ms: median_ms(raw),
        });
    }
    store.close();
    cleanup();
    Ok(QueryReport {
        points: 86_400,
        bytes_per_point: bytes as f64 / 86_400.0,
        avg_1m_ms: median_ms(avg),
        raw_json_ms: median_ms(raw),
    })
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestReport {
    pub mode: &'static str,
    pub devices: usize,
    pub keys: usize,
    pub seconds: f64,
    pub messages: u64,
    pub points: u64,
    pub points_per_s: f64,
    pub messages_per_s: f64,
    /// `--writer-only`: bytes on disk after sealing, per point.
    pub bytes_per_point: Option<f64>,
}

/// Runs the benchmark and prints its report.
pub fn run(a: IngestArgs) -> Result<(), BenchError> {
    if a.query {
        let r = query(&a)?;
        if a.json {
            println!("{}", serde_json::to_string(&r).expect("report serialises"));
        } else {
            println!(
                "query{}: one day of 1 Hz ({} points): 1-minute averages {:.2} ms, all raw points as JSON {:.2} ms (medians); {:.2} bytes/point on disk",
                if a.pg.is_some() { " (postgres)" } else { "" },
                r.points, r.avg_1m_ms, r.raw_json_ms, r.bytes_per_point
            );
        }
        return Ok(());
    }
    let report = if a.writer_only {
        writer_only(&a)?
    } else {
        end_to_end(&a)?
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        );
    } else {
        println!(
            "ingest ({}): {} devices x {} keys, {:.1} s: {} messages, {} points, {:.0} points/s ({:.0} messages/s){}",
            report.mode,
            report.devices,
            report.keys,
            report.seconds,
            report.messages,
            report.points,
            report.points_per_s,
            report.messages_per_s,
            report.bytes_per_point.map(|b| format!(", {b:.2} bytes/point on disk")).unwrap_or_default()
        );
    }
    Ok(())
}

fn writer_only(a: &IngestArgs) -> Result<IngestReport, BenchError> {
    let (store, _, cleanup) = open_store(a, "ingest-bench")?;
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let points = Arc::new(AtomicU64::new(0));
    let base = 1_700_000_000_000i64;
    let mut handles = Vec::new();
    for w in 0..a.writers.max(1) {
        let (store, stop, counting, points) = (
            store.clone(),
            stop.clone(),
            counting.clone(),
            points.clone(),
        );
        let (devices, keys, writers) = (a.devices.max(1), a.keys.max(1), a.writers.max(1));
        handles.push(std::thread::spawn(move || {
            let names: Vec<String> = (0..devices)
                .filter(|d| d % writers == w)
                .map(|d| format!("dev-{d}"))
                .collect();
            let mut pending = std::collections::VecDeque::new();
            let mut step = 0i64;
            while !stop.load(Ordering::Relaxed) {
                for name in &names {
                    let pts: Vec<store::Point> = (0..keys)
                        .map(|k| store::Point {
                            key: format!("k{k}"),
                            ts: base + step * 1000,
                            value: store::Value::Double(
                                20.0 + ((step + k as i64) % 100) as f64 * 0.01,
                            ),
                        })
                        .collect();
                    pending.push_back((
                        store.write(name, "bench", pts),
                        counting.load(Ordering::Relaxed),
                    ));
                    // Keep a bounded number of commits outstanding, like devices awaiting acks.
                    while pending.len() > 256 {
                        let (c, counted): (store::Commit, bool) =
                            pending.pop_front().expect("non-empty");
                        if c.wait().is_ok() && counted {
                            points.fetch_add(keys as u64, Ordering::Relaxed);
                        }
                    }
                }
                step += 1;
            }
            for (c, counted) in pending {
                if c.wait().is_ok() && counted {
                    points.fetch_add(keys as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(a.warmup));
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(a.duration));
    counting.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let n = points.load(Ordering::Relaxed);
    store
        .seal()
        .map_err(|e| BenchError::Ingest(format!("sealing: {e}")))?;
    // Everything written (warm-up included) is on disk now.
    let written: u64 = {
        let keys: Vec<String> = (0..a.keys.max(1)).map(|k| format!("k{k}")).collect();
        let mut total = 0u64;
        for d in 0..a.devices.max(1) {
            for (_, s) in store
                .range(
                    &format!("dev-{d}"),
                    &keys,
                    i64::MIN,
                    i64::MAX,
                    usize::MAX,
                    false,
                )
                .unwrap_or_default()
            {
                total += s.len() as u64;
            }
        }
        total
    };
    let bytes = store.disk_bytes();
    store.close();
    cleanup();
    Ok(IngestReport {
        mode: if a.pg.is_some() {
            "writer-only-postgres"
        } else {
            "writer-only"
        },
        devices: a.devices,
        keys: a.keys,
        seconds,
        messages: n / a.keys.max(1) as u64,
        points: n,
        points_per_s: n as f64 / seconds,
        messages_per_s: n as f64 / a.keys.max(1) as f64 / seconds,
        bytes_per_point: (written > 0).then(|| bytes as f64 / written as f64),
    })
}

/// A tiny HTTP/1.1 request on loopback: (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> Result<(u16, String), BenchError> {
    let err = |e: std::io::Error| BenchError::Ingest(format!("HTTP {addr}: {e}"));
    let mut s = TcpStream::connect(addr).map_err(err)?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(err)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(err)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn create_devices(a: &IngestArgs, run: &str) -> Result<Vec<String>, BenchError> {
    let password = a.admin_password.as_deref().ok_or_else(|| {
        BenchError::Ingest("--admin-password (or IRONBRIDGE_ADMIN_PASSWORD) is required".into())
    })?;
    let login = serde_json::json!({"username": "admin", "password": password}).to_string();
    let (status, body) = http(a.http, "POST", "/api/v1/auth/login", None, &login)?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let token = v["token"]
        .as_str()
        .filter(|_| status == 200)
        .ok_or_else(|| BenchError::Ingest(format!("login failed: {status} {body}")))?
        .to_string();
    (0..a.devices)
        .map(|i| {
            let new = serde_json::json!({"name": format!("ingest-{run}-{i}")}).to_string();
            let (status, body) = http(a.http, "POST", "/api/v1/devices", Some(&token), &new)?;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["access_token"]
                .as_str()
                .filter(|_| status == 201)
                .map(str::to_string)
                .ok_or_else(|| BenchError::Ingest(format!("creating a device: {status} {body}")))
        })
        .collect()
}

fn end_to_end(a: &IngestArgs) -> Result<IngestReport, BenchError> {
    parse_loopback(&a.mqtt.ip().to_string())?;
    parse_loopback(&a.http.ip().to_string())?;
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let tokens = create_devices(a, &run)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let acked = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let endpoint = Arc::new(Endpoint {
        addr: a.mqtt,
        transport: Transport::Tcp,
        ws_url: String::new(),
        tls: None,
    });
    let started = runtime.block_on(async {
        let mut tasks = Vec::new();
        for (i, token) in tokens.into_iter().enumerate() {
            let (acked, counting, stop, endpoint) = (
                acked.clone(),
                counting.clone(),
                stop.clone(),
                endpoint.clone(),
            );
            let (keys, inflight) = (a.keys.max(1), a.inflight.max(1));
            tasks.push(tokio::spawn(async move {
                let opts = ConnectOptions {
                    protocol: Protocol::V311,
                    client_id: format!("ingest-{i}"),
                    keep_alive: 60,
                    username: Some(token),
                    password: None,
                };
                let mut conn = MqttConn::connect(&endpoint, None, &opts, 4096).await?;
                device_loop(&mut conn, keys, inflight, &acked, &counting, &stop).await
            }));
        }
        tokio::time::sleep(Duration::from_secs(a.warmup)).await;
        counting.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let before = acked.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(a.duration)).await;
        let n = acked.load(Ordering::Relaxed) - before;
        let seconds = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut failed = 0;
        for t in tasks {
            if !matches!(
                tokio::time::timeout(Duration::from_secs(10), t).await,
                Ok(Ok(Ok(())))
            ) {
                failed += 1;
            }
        }
        if failed > 0 {
            eprintln!("{failed} device connections failed or did not stop");
        }
        (n, seconds)
    });
    let (messages, seconds) = started;
    let points = messages * a.keys.max(1) as u64;
    Ok(IngestReport {
        mode: "mqtt-qos1",
        devices: a.devices,
        keys: a.keys,
        seconds,
        messages,
        points,
        points_per_s: points as f64 / seconds,
        messages_per_s: messages as f64 / seconds,
        bytes_per_point: None,
    })
}

async fn device_loop(
    conn: &mut MqttConn,
    keys: usize,
    inflight: usize,
    acked: &AtomicU64,
    counting: &AtomicBool,
    stop: &AtomicBool,
) -> Result<(), crate::ClientError> {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
        - 86_400_000;
    let (mut seq, mut outstanding, mut pid) = (0i64, 0usize, 0u16);
    let mut out = BytesMut::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && outstanding == 0 {
            return Ok(());
        }
        while !stopping && outstanding < inflight {
            pid = pid.wrapping_add(1).max(1);
            let mut payload = format!("{{\"ts\":{},\"values\":{{", base + seq);
            for k in 0..keys {
                let v = 20.0 + ((seq + k as i64) % 100) as f64 * 0.01;
                payload.push_str(&format!("{}\"k{k}\":{v:.2}", if k > 0 { "," } else { "" }));
            }
            payload.push_str("}}");
            let publish = Publish {
                topic: "v1/devices/me/telemetry".into(),
                payload: payload.into_bytes().into(),
                qos: QoS::AtLeastOnce,
                packet_id: pid,
                ..Publish::default()
            };
            conn.encode(&Packet::Publish(publish), &mut out);
            seq += 1;
            outstanding += 1;
        }
        if !out.is_empty() {
            conn.send(&out).await?;
            out.clear();
        }
        conn.fill().await?;
        while let Some(incoming) = conn.next_incoming()? {
            if let Incoming::PubAck(_, code) = incoming {
                outstanding -= 1;
                if code.is_success() && counting.load(Ordering::Relaxed) {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
