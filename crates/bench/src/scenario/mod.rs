//! The scenarios: [`run`] checks the options and dispatches; `traffic` drives fan-in,
//! fan-out, latency, pub and sub (they differ only in their [`traffic::TrafficPlan`]); `conn`
//! opens and holds idle connections. Shared here: connecting many clients with bounded
//! concurrency, waiting for an idle broker, and the run id that keeps runs apart.

pub mod conn;
pub mod traffic;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_codec::{Protocol, QoS};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{CommonArgs, MqttArgs, MqttVersion, Scenario};
use crate::client::{ConnectOptions, MqttConn};
use crate::endpoint::Endpoint;
use crate::engine::procfs;
use crate::error::{BenchError, ClientError};
use crate::report::{Report, TargetInfo};

/// Runs the scenario `args` names and returns its report. Bounded in time: see
/// [`MqttArgs::time_bound`].
pub async fn run(args: &MqttArgs) -> Result<Report, BenchError> {
    args.validate()?;
    if let Some(pid) = args.common.output.broker_pid {
        procfs::cpu_seconds(Some(pid)).ok_or(BenchError::BrokerPid(pid))?;
    }
    let endpoint = Endpoint::new(&args.common.target)?;
    let setup = Setup::new(&args.common, endpoint);
    let c = &args.common;
    let plan = match &args.scenario {
        Scenario::FanIn(a) => traffic::fan_in(a, c, &setup.run_id),
        Scenario::FanOut(a) => traffic::fan_out(a, c, &setup.run_id),
        Scenario::Latency(a) => traffic::latency(a, c, &setup.run_id),
        Scenario::Pub(a) => traffic::publish(a, c, &setup.run_id),
        Scenario::Sub(a) => traffic::subscribe(a, c, &setup.run_id),
        Scenario::Conn(a) => return conn::run(a, c, &setup).await,
    };
    traffic::run(plan, c, &setup).await
}

impl MqttArgs {
    /// The longest a run may take: connect + quiesce + warmup + duration + drain (conn: connect
    /// + settle + check + hold) plus a margin. A watchdog enforces it.
    pub fn time_bound(&self) -> Duration {
        let t = &self.common.timing;
        let base = t.connect_timeout + QUIESCE_MAX.as_secs_f64() + 15.0;
        let secs = match &self.scenario {
            Scenario::Conn(a) => base + a.settle + CHECK_MAX.as_secs_f64() + a.hold,
            _ => base + t.warmup + t.duration + t.drain_max,
        };
        Duration::from_secs_f64(secs)
    }
}

/// Longest wait for an idle broker before traffic starts.
const QUIESCE_MAX: Duration = Duration::from_secs(10);
/// Longest wait for PINGRESPs in the conn scenario's liveness check.
pub(crate) const CHECK_MAX: Duration = Duration::from_secs(30);

/// What every client of a run is built from.
pub struct Setup {
    pub endpoint: Endpoint,
    /// Unique per run: topics and client ids carry it, so that leftovers of an earlier run
    /// are never counted.
    pub run_id: String,
    pub protocol: Protocol,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub concurrency: usize,
    pub connect_timeout: Duration,
}

impl Setup {
    fn new(c: &CommonArgs, endpoint: Endpoint) -> Setup {
        let nanos = procfs::mono_ns();
        let run_id = format!(
            "{:x}",
            (u64::from(std::process::id()) << 20) ^ (nanos % (1 << 28))
        );
        Setup {
            endpoint,
            run_id,
            protocol: match c.session.mqtt_version {
                MqttVersion::V3 => Protocol::V311,
                MqttVersion::V5 => Protocol::V5,
            },
            keep_alive: c.session.keepalive,
            username: c.session.username.clone(),
            password: c.session.password.clone(),
            concurrency: c.session.concurrency,
            connect_timeout: Duration::from_secs_f64(c.timing.connect_timeout),
        }
    }

    /// The client id of client `i` with role letter `role`.
    pub fn client_id(&self, role: char, i: usize) -> String {
        format!("ib-{}-{role}{i}", self.run_id)
    }

    /// CONNECT options for `client_id`.
    pub fn connect_options(&self, client_id: String) -> ConnectOptions {
        ConnectOptions {
            protocol: self.protocol,
            client_id,
            keep_alive: self.keep_alive,
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }

    /// Target description for the report.
    pub fn target_info(&self) -> TargetInfo {
        TargetInfo {
            address: self.endpoint.addr.to_string(),
            transport: self.endpoint.transport.name(),
            mqtt_version: if self.protocol.is_v5() { "5" } else { "3.1.1" },
        }
    }
}

/// One client to connect: its id, and the filter to subscribe to, if any.
pub struct ClientSpec {
    pub client_id: String,
    pub subscribe: Option<(String, QoS)>,
    pub source: Option<IpAddr>,
}

/// Connects (and subscribes) every client, `concurrency` handshakes at a time. All must
/// succeed; `connections` counts the open ones.
pub async fn connect_all(
    setup: &Setup,
    role: &'static str,
    clients: Vec<ClientSpec>,
    read_chunk: usize,
    connections: &Arc<AtomicU64>,
) -> Result<Vec<MqttConn>, BenchError> {
    let total = clients.len();
    let deadline = Instant::now() + setup.connect_timeout;
    let permits = Arc::new(Semaphore::new(setup.concurrency));
    let mut tasks = JoinSet::new();
    for (i, spec) in clients.into_iter().enumerate() {
        let permits = permits.clone();
        let endpoint = setup.endpoint.clone();
        let opts = setup.connect_options(spec.client_id);
        let connections = connections.clone();
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let attempt = async {
                let mut conn = MqttConn::connect(&endpoint, spec.source, &opts, read_chunk).await?;
                connections.fetch_add(1, Relaxed);
                if let Some((filter, qos)) = &spec.subscribe {
                    conn.subscribe(filter, *qos).await?;
                }
                Ok::<_, ClientError>(conn)
            };
            let r = tokio::time::timeout_at(deadline.into(), attempt).await;
            (
                i,
                r.unwrap_or(Err(ClientError::Timeout("the connect deadline"))),
            )
        });
    }
    let mut conns: Vec<Option<MqttConn>> = (0..total).map(|_| None).collect();
    let mut failed = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(conn))) => conns[i] = Some(conn),
            Ok((_, Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(ClientError::Io(std::io::Error::other(e)));
            }
        }
    }
    if let Some(cause) = first_error {
        // Connections already open are closed by dropping them.
        connections.fetch_sub((total - failed) as u64, Relaxed);
        return Err(BenchError::Setup {
            role,
            failed,
            total,
            cause,
        });
    }
    Ok(conns.into_iter().flatten().collect())
}

/// Waits (at most [`QUIESCE_MAX`]) until the broker uses under 3 % of a core over 300 ms, so
/// that one run's leftovers do not bleed into the next. Returns the seconds waited.
pub async fn quiesce(pid: Option<u32>) -> f64 {
    let start = Instant::now();
    let Some(pid) = pid else {
        return 0.0;
    };
    while start.elapsed() < QUIESCE_MAX {
        let a = procfs::cpu_seconds(Some(pid));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b = procfs::cpu_seconds(Some(pid));
        match a.zip(b) {
            Some((a, b)) if b - a > 0.009 => continue,
            _ => break,
        }
    }
    start.elapsed().as_secs_f64()
}

/// `%i` → index, `%c` → client id.
pub fn expand_topic(template: &str, index: usize, client_id: &str) -> String {
    template
        .replace("%i", &index.to_string())
        .replace("%c", client_id)
}
