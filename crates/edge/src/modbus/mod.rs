//! The Modbus connector: one device (unit) polled over Modbus TCP, or RTU on a serial line
//! (tokio-serial), with tokio-modbus. Owns the
//! connection's life: connect with a timeout, batched reads with retries, exponential backoff
//! and reconnection after any outage, writes from RPCs. A device error (refused connection,
//! timeout, Modbus exception, short answer) is counted in its [`Health`] and logged when it
//! changes; it never ends the connector.
//!
//! - `registers`: types and the pure decode/encode; `plan`: batching into read requests;
//!   `write`: RPC params → coil/register writes.

pub mod plan;
pub mod registers;
pub mod write;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_modbus::client::{tcp, Context, Reader, Writer};
use tokio_modbus::Slave;

use crate::config::{ModbusConfig, Parity, Transport};
use crate::connector::{
    now_ms, stopped, Command, Connector, ConnectorIo, ConnectorTask, Health, Reading, SubDevice,
};
use crate::error::EdgeError;
use plan::ReadRequest;
use registers::RegisterSpec;
use write::{WriteOp, WriteSpec};

/// The first wait before reconnecting; doubled after each failure up to `backoff_max`.
const BACKOFF_START: Duration = Duration::from_millis(200);

/// A Modbus device as a connector.
pub struct ModbusConnector {
    config: ModbusConfig,
    specs: Vec<RegisterSpec>,
    plan: Vec<ReadRequest>,
    writes: HashMap<String, WriteSpec>,
    health: Arc<Health>,
}

/// Why a poll or write stopped.
enum Failure {
    /// The link is unusable (timeout, I/O error): reconnect.
    Link(String),
    /// The device answered with an exception or unusable data: the link is fine.
    Device(String),
}

enum Data {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

impl ModbusConnector {
    /// Checks the device's configuration and plans its reads.
    pub fn new(config: ModbusConfig) -> Result<ModbusConnector, EdgeError> {
        let at = |e: String| EdgeError::Config(format!("[[modbus]] {:?}: {e}", config.name));
        let specs = config
            .registers
            .iter()
            .map(RegisterSpec::from_config)
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?;
        let writes = config
            .writes
            .iter()
            .map(|w| WriteSpec::from_config(w).map(|s| (s.method.clone(), s)))
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(at)?;
        Ok(ModbusConnector {
            plan: plan::plan(&specs),
            specs,
            writes,
            config,
            health: Arc::new(Health::default()),
        })
    }

    async fn connect(&self) -> Result<Context, String> {
        match self.config.transport {
            Transport::Tcp => self.connect_tcp().await,
            Transport::Rtu => self.open_serial(),
        }
    }

    /// RTU: the serial port opened with the configured line settings.
    fn open_serial(&self) -> Result<Context, String> {
        use tokio_serial::{DataBits, Parity as P, StopBits};
        let c = &self.config;
        let path = c.port.as_deref().unwrap_or(std::path::Path::new(""));
        let builder = tokio_serial::new(path.to_string_lossy(), c.baud)
            .parity(match c.parity {
                Parity::None => P::None,
                Parity::Even => P::Even,
                Parity::Odd => P::Odd,
            })
            .data_bits(match c.data_bits {
                5 => DataBits::Five,
                6 => DataBits::Six,
                7 => DataBits::Seven,
                _ => DataBits::Eight,
            })
            .stop_bits(if c.stop_bits == 2 {
                StopBits::Two
            } else {
                StopBits::One
            })
            .timeout(c.timeout);
        let stream = tokio_serial::SerialStream::open(&builder)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        Ok(tokio_modbus::client::rtu::attach_slave(
            stream,
            Slave(c.unit),
        ))
    }

    async fn connect_tcp(&self) -> Result<Context, String> {
        let address = self.config.address.as_deref().unwrap_or_default();
        let addr = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("resolving {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to no address"))?;
        match timeout(
            self.config.timeout,
            tcp::connect_slave(addr, Slave(self.config.unit)),
        )
        .await
        {
            Ok(Ok(ctx)) => Ok(ctx),
            Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
            Err(_) => Err(format!("connecting to {addr}: timed out")),
        }
    }

    async fn read(&self, ctx: &mut Context, r: &ReadRequest) -> Result<Data, Failure> {
        use registers::Table;
        let call = async {
            match r.table {
                Table::Coil => ctx
                    .read_coils(r.address, r.count)
                    .await
                    .map(|x| x.map(Data::Bits)),
                Table::DiscreteInput => ctx
                    .read_discrete_inputs(r.address, r.count)
                    .await
                    .map(|x| x.map(Data::Bits)),
                Table::Holding => ctx
                    .read_holding_registers(r.address, r.count)
                    .await
                    .map(|x| x.map(Data::Words)),
                Table::Input => ctx
                    .read_input_registers(r.address, r.count)
                    .await
                    .map(|x| x.map(Data::Words)),
            }
        };
        match timeout(self.config.timeout, call).await {
            Ok(Ok(Ok(data))) => Ok(data),
            Ok(Ok(Err(exception))) => {
                self.health.exceptions.fetch_add(1, Ordering::Relaxed);
                Err(Failure::Device(format!(
                    "reading {:?} {}+{}: Modbus exception {exception}",
                    r.table, r.address, r.count
                )))
            }
            Ok(Err(e)) => Err(Failure::Link(format!("reading: {e}"))),
            Err(_) => {
                self.health.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(Failure::Link(format!(
                    "reading {:?} {}+{}: no answer within {:?}",
                    r.table, r.address, r.count, self.config.timeout
                )))
            }
        }
    }

    /// One request with its retries: a failed link is reconnected before each retry.
    async fn read_with_retries(
        &self,
        ctx: &mut Option<Context>,
        r: &ReadRequest,
    ) -> Result<Data, Failure> {
        let mut attempt = 0;
        loop {
            if ctx.is_none() {
                match self.connect().await {
                    Ok(c) => {
                        self.health.connects.fetch_add(1, Ordering::Relaxed);
                        *ctx = Some(c);
                    }
                    Err(e) if attempt < self.config.retries => {
                        attempt += 1;
                        tracing::debug!(device = %self.config.name, attempt, error = %e, "modbus retry");
                        continue;
                    }
                    Err(e) => return Err(Failure::Link(e)),
                }
            }
            let result = match ctx.as_mut() {
                Some(c) => self.read(c, r).await,
                None => Err(Failure::Link("not connected".into())),
            };
            match result {
                Err(Failure::Link(e)) if attempt < self.config.retries => {
                    attempt += 1;
                    *ctx = None;
                    tracing::debug!(device = %self.config.name, attempt, error = %e, "modbus retry");
                }
                other => return other,
            }
        }
    }

    /// Reads every request and decodes the entries; `Err` only when the link failed.
    async fn poll(
        &self,
        ctx: &mut Option<Context>,
        ts: i64,
        last: &mut HashMap<usize, Value>,
    ) -> Result<Map<String, Value>, String> {
        let mut values = Map::new();
        let mut any_ok = false;
        for r in &self.plan {
            let data = match self.read_with_retries(ctx, r).await {
                Ok(d) => d,
                Err(Failure::Link(e)) => return Err(e),
                Err(Failure::Device(e)) => {
                    self.device_error(e);
                    continue;
                }
            };
            any_ok = true;
            for &i in &r.entries {
                let s = &self.specs[i];
                let at = usize::from(s.address - r.address);
                let n = usize::from(s.count);
                let value = match &data {
                    Data::Bits(b) => b.get(at).map(|&b| Ok(s.decode_bit(b))),
                    Data::Words(w) => w.get(at..at + n).map(|w| s.decode_words(w)),
                };
                match value {
                    // NaN or infinity: no JSON number, and a null would make the platform
                    // refuse the whole batch.
                    Some(Ok(Value::Null)) => {
                        self.device_error(format!("{}: not a finite number", s.key))
                    }
                    Some(Ok(v)) => {
                        if s.changed(last.get(&i), &v) {
                            last.insert(i, v.clone());
                            values.insert(s.key.clone(), v);
                        }
                    }
                    Some(Err(e)) => self.device_error(format!("{}: {e}", s.key)),
                    None => self.device_error(format!("{}: the answer was too short", s.key)),
                }
            }
        }
        if any_ok {
            self.health.success(ts);
        }
        Ok(values)
    }

    fn device_error(&self, e: String) {
        if self.health.error(e.clone()) {
            tracing::warn!(device = %self.config.name, error = %e, "modbus device error");
        }
    }

    async fn write(&self, ctx: &mut Option<Context>, cmd: &Command) -> Result<Value, String> {
        let op = if cmd.attribute {
            let mapped = self
                .writes
                .values()
                .find(|w| w.attribute.as_ref() == Some(&cmd.method));
            match mapped {
                // Shared attributes are not all meant for the device.
                None => return Ok(Value::Null),
                Some(spec) => spec.op_value(&cmd.params)?,
            }
        } else {
            let spec = self
                .writes
                .get(&cmd.method)
                .ok_or_else(|| format!("unknown method {:?}", cmd.method))?;
            spec.op(&cmd.params)?
        };
        if ctx.is_none() {
            let c = self.connect().await?;
            self.health.connects.fetch_add(1, Ordering::Relaxed);
            *ctx = Some(c);
        }
        let Some(c) = ctx.as_mut() else {
            return Err("not connected".into());
        };
        let call = async {
            match &op {
                WriteOp::Coil(a, on) => c.write_single_coil(*a, *on).await,
                WriteOp::Registers(a, w) if w.len() == 1 => c.write_single_register(*a, w[0]).await,
                WriteOp::Registers(a, w) => c.write_multiple_registers(*a, w).await,
            }
        };
        let result = match timeout(self.config.timeout, call).await {
            Ok(Ok(Ok(()))) => return Ok(serde_json::json!({"ok": true})),
            Ok(Ok(Err(exception))) => {
                self.health.exceptions.fetch_add(1, Ordering::Relaxed);
                format!("Modbus exception {exception}")
            }
            Ok(Err(e)) => {
                *ctx = None;
                format!("write failed: {e}")
            }
            Err(_) => {
                *ctx = None;
                self.health.timeouts.fetch_add(1, Ordering::Relaxed);
                format!("no answer within {:?}", self.config.timeout)
            }
        };
        self.device_error(format!("{}: {result}", cmd.method));
        Err(result)
    }

    async fn run_loop(self, mut io: ConnectorIo) {
        let name = self.config.name.clone();
        let mut ctx: Option<Context> = None;
        let mut last = HashMap::new();
        let mut backoff = BACKOFF_START;
        let mut retry_at = Instant::now();
        let mut tick = tokio::time::interval(self.config.poll);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stopped(&mut io.shutdown) => break,
                Some(cmd) = io.commands.recv() => {
                    let result = self.write(&mut ctx, &cmd).await;
                    self.health.connected.store(ctx.is_some(), Ordering::Relaxed);
                    let _ = cmd.reply.send(result);
                }
                _ = tick.tick() => {
                    if ctx.is_none() && Instant::now() < retry_at {
                        continue;
                    }
                    let was_connected = ctx.is_some();
                    let ts = now_ms();
                    match self.poll(&mut ctx, ts, &mut last).await {
                        Ok(values) => {
                            if !was_connected {
                                tracing::info!(device = %name, "modbus device connected");
                            }
                            self.health.connected.store(true, Ordering::Relaxed);
                            backoff = BACKOFF_START;
                            if !values.is_empty() {
                                let reading = Reading { device: name.clone(), ts, values };
                                if io.readings.send(reading).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            ctx = None;
                            self.health.connected.store(false, Ordering::Relaxed);
                            if self.health.error(e.clone()) || was_connected {
                                tracing::warn!(device = %name, error = %e, retry_in = ?backoff,
                                    "modbus device unreachable");
                            }
                            retry_at = Instant::now() + backoff;
                            backoff = (backoff * 2).min(self.config.backoff_max.max(BACKOFF_START));
                        }
                    }
                }
            }
        }
        if let Some(mut c) = ctx {
            use tokio_modbus::client::Client;
            let _ = timeout(Duration::from_secs(1), c.disconnect()).await;
        }
    }
}

impl Connector for ModbusConnector {
    fn kind(&self) -> &'static str {
        "modbus"
    }
    fn name(&self) -> &str {
        &self.config.name
    }
    fn devices(&self) -> Vec<SubDevice> {
        vec![SubDevice {
            name: self.config.name.clone(),
            profile: self.config.profile.clone(),
        }]
    }
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }
    fn run(self: Box<Self>, io: ConnectorIo) -> ConnectorTask {
        Box::pin(self.run_loop(io))
    }
}
