//! The gateway: builds the connectors from the configuration, runs the local rules on their
//! readings (when `[[rule]]` tables are configured), queues the readings on disk (one
//! transaction for everything waiting), reports health as the gateway's own telemetry every
//! `health_interval`, and runs the uplink until shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use crate::buffer::Buffer;
use crate::config::EdgeConfig;
use crate::connector::{self, now_ms, ConnectorIo, Health, Reading, StatusBoard};
use crate::error::EdgeError;
use crate::rules::{self, actions::ActionTargets, engine::RuleEngine, engine::RuleStats};
use crate::uplink::{endpoint::Endpoint, Uplink};

/// Most readings written to the queue in one transaction.
const INGEST_BATCH: usize = 1024;

/// Runs the edge gateway until `shutdown` turns true.
pub async fn run(config: EdgeConfig, shutdown: watch::Receiver<bool>) -> Result<(), EdgeError> {
    let endpoint = Endpoint::from_config(&config.uplink)
        .map_err(|e| EdgeError::Config(format!("[uplink] {e}")))?;
    let connectors = connector::build_all(&config)?;
    let all_devices: Vec<_> = connectors.iter().flat_map(|c| c.devices()).collect();
    let sms = connectors.iter().find_map(|c| c.sms_sender());
    let rules = rules::load(&rules::Site {
        config: &config,
        devices: &all_devices,
        sms: sms.is_some(),
    })?;
    let buffer = Arc::new(Buffer::open(
        &config.uplink.buffer_dir,
        config.uplink.buffer_max_bytes,
    )?);
    let (readings_tx, readings_rx) = mpsc::channel::<Reading>(4096);
    let mut routes = HashMap::new();
    let mut devices = Vec::new();
    let mut healths: Vec<(String, Arc<Health>)> = Vec::new();
    let mut tasks = JoinSet::new();
    let mut inboxes = Vec::new();
    for c in &connectors {
        let (tx, rx) = mpsc::channel(16);
        for d in c.devices() {
            routes.insert(d.name.clone(), tx.clone());
            devices.push(d);
        }
        inboxes.push(rx);
    }
    let peers: connector::Peers = Arc::new(routes.clone());
    // With local rules, the connectors' readings pass through them on the way to the queue.
    let mut rule_stats = None;
    let mut rule_task = None;
    let connector_tx = if rules.is_empty() {
        readings_tx.clone()
    } else {
        let stats = Arc::new(RuleStats::new(
            rules
                .rules
                .iter()
                .map(|r| r.compiled.rule.spec.name.as_str()),
        ));
        tracing::info!(rules = rules.rules.len(), "local rules loaded");
        let engine = RuleEngine::new(rules, &all_devices, stats.clone());
        let (tx, rx) = mpsc::channel::<Reading>(4096);
        let targets = ActionTargets {
            peers: peers.clone(),
            sms,
            stats: stats.clone(),
        };
        rule_task = Some(tokio::spawn(rules::actions::run(
            engine,
            rx,
            readings_tx.clone(),
            targets,
            Arc::new(now_ms),
        )));
        rule_stats = Some(stats);
        tx
    };
    for (c, rx) in connectors.into_iter().zip(inboxes) {
        healths.push((c.name().to_string(), c.health()));
        tracing::info!(kind = c.kind(), name = c.name(), "connector started");
        let io = ConnectorIo {
            readings: connector_tx.clone(),
            commands: rx,
            shutdown: shutdown.clone(),
            peers: peers.clone(),
        };
        tasks.spawn(c.run(io));
    }
    let wake = Arc::new(Notify::new());
    let connected = Arc::new(AtomicBool::new(false));
    // Firmware for sub-devices, when any connector can install it.
    let firmware = if devices.iter().any(|d| d.firmware) {
        let source = crate::firmware::Source {
            base: config.uplink.http.clone(),
            token: config.uplink.token.clone(),
        };
        let agent = crate::firmware::Agent::new(
            &config.uplink.buffer_dir,
            source,
            readings_tx.clone(),
            routes.clone(),
        )?;
        healths.push(("firmware".into(), agent.health.clone()));
        Some(agent)
    } else {
        None
    };
    {
        let health = HealthReport {
            healths,
            buffer: buffer.clone(),
            uplink: connected.clone(),
            rules: rule_stats,
        };
        let (tx, rx, every) = (
            readings_tx.clone(),
            shutdown.clone(),
            config.uplink.health_interval,
        );
        tasks.spawn(health.run(tx, every, rx));
    }
    drop(readings_tx);
    drop(connector_tx);
    let statuses = Arc::new(StatusBoard::default());
    let ingest = tokio::spawn(ingest(
        readings_rx,
        buffer.clone(),
        wake.clone(),
        statuses.clone(),
    ));
    let uplink = Uplink {
        config: config.uplink.clone(),
        endpoint,
        buffer: buffer.clone(),
        devices,
        routes,
        wake,
        connected,
        statuses,
        firmware,
    };
    println!("edge running: {} connector(s)", tasks.len() - 1);
    uplink.run(shutdown).await;
    while tasks.join_next().await.is_some() {}
    if let Some(t) = rule_task {
        let _ = t.await;
    }
    // Every sender is gone: the ingest task queues what is left and ends.
    let result = ingest.await.unwrap_or(Ok(()));
    let s = buffer.stats();
    tracing::info!(queued = s.rows, dropped = s.evicted, "edge stopped");
    result
}

/// Writes readings to the queue as they come, everything waiting in one transaction; the
/// sub-devices' statuses among them are noted once queued.
async fn ingest(
    mut rx: mpsc::Receiver<Reading>,
    buffer: Arc<Buffer>,
    wake: Arc<Notify>,
    statuses: Arc<StatusBoard>,
) -> Result<(), EdgeError> {
    let mut batch = Vec::with_capacity(INGEST_BATCH);
    while rx.recv_many(&mut batch, INGEST_BATCH).await > 0 {
        let readings = Arc::new(std::mem::take(&mut batch));
        // A queue that cannot be written (disk full, I/O error) is retried, never skipped:
        // meanwhile the channel fills and the connectors wait to send.
        loop {
            let (b, r) = (buffer.clone(), readings.clone());
            // SQLite commits block: keep them off the async workers.
            let pushed = tokio::task::spawn_blocking(move || b.push(&r))
                .await
                .map_err(|e| EdgeError::Buffer(e.to_string()))?;
            match pushed {
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, readings = readings.len(),
                        "store and forward: cannot queue readings; retrying in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        for r in readings.iter() {
            statuses.note(r);
        }
        wake.notify_one();
    }
    Ok(())
}

/// The gateway's own telemetry: each connector's health, the buffer, the uplink.
struct HealthReport {
    healths: Vec<(String, Arc<Health>)>,
    buffer: Arc<Buffer>,
    uplink: Arc<AtomicBool>,
    /// The local rules' counters, when there are rules.
    rules: Option<Arc<RuleStats>>,
}

impl HealthReport {
    fn values(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, h) in &self.healths {
            h.report(name, &mut out);
        }
        let s = self.buffer.stats();
        out.insert("buffer.queued".into(), s.rows.into());
        out.insert("buffer.bytes".into(), s.bytes.into());
        out.insert("buffer.dropped".into(), s.evicted.into());
        out.insert(
            "uplink.connected".into(),
            self.uplink.load(Ordering::Relaxed).into(),
        );
        if let Some(r) = &self.rules {
            r.report(&mut out);
        }
        out
    }

    async fn run(
        self,
        tx: mpsc::Sender<Reading>,
        every: std::time::Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The first report after one interval, when the connectors have had a chance to connect.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = connector::stopped(&mut shutdown) => return,
                _ = tick.tick() => {
                    let reading = Reading { device: String::new(), ts: now_ms(), values: self.values() };
                    if tx.send(reading).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
