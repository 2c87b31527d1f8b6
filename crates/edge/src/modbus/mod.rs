//! The Modbus connector: one device (unit) polled over Modbus TCP, or RTU on a serial line
//! (tokio-serial), with tokio-modbus. RTU devices configured on the same port share one RS-485
//! line ([`Line`]): the port is opened once and their requests take turns, each addressed to its
//! unit. Owns the connection's life: connect with a timeout, batched reads with retries, exponential backoff
//! and reconnection after any outage, writes from RPCs. A device error (refused connection,
//! timeout, Modbus exception, short answer) is counted in its [`Health`] and logged when it
//! changes; it never ends the connector.
//!
//! - `registers`: types and the pure decode/encode; `plan`: batching into read requests;
//!   `write`: RPC params → coil/register writes.

pub mod firmware;
pub mod plan;
pub mod registers;
pub mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_modbus::client::{tcp, Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
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

/// The connection a device's requests go over: its own, or the RS-485 line it shares with the
/// other RTU devices on its port. Whoever holds the lock owns the wire for its requests; a poll
/// holds it for all of its device's requests, so devices on a line take turns poll by poll.
pub type Line = Arc<tokio::sync::Mutex<Option<Context>>>;

/// One shared line per serial port that more than one RTU device names (a device alone on its
/// port gets a line of its own from [`ModbusConnector::new`]).
pub fn shared_lines(configs: &[ModbusConfig]) -> HashMap<PathBuf, Line> {
    let mut count: HashMap<PathBuf, usize> = HashMap::new();
    for c in configs.iter().filter(|c| c.transport == Transport::Rtu) {
        if let Some(port) = &c.port {
            *count.entry(port.clone()).or_default() += 1;
        }
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(port, _)| (port, Line::default()))
        .collect()
}

/// A Modbus device as a connector.
pub struct ModbusConnector {
    config: ModbusConfig,
    specs: Vec<RegisterSpec>,
    plan: Vec<ReadRequest>,
    writes: HashMap<String, WriteSpec>,
    health: Arc<Health>,
    line: Line,
    /// Other devices use `line` too: address every request to our unit, and a unit that stays
    /// silent is not a reason to reopen the port under the others.
    shared: bool,
}

/// Why a poll or write stopped.
enum Failure {
    /// The link is unusable (I/O error): reconnect.
    Link(String),
    /// No answer in time: reconnect a link of our own (a TCP connection may be stuck), keep a
    /// shared line open (the unit is silent, the port is fine).
    Silent(String),
    /// The device answered with an exception or unusable data: the link is fine.
    Device(String),
}

enum Data {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

impl ModbusConnector {
    /// Checks the device's configuration and plans its reads; its connection is its own.
    pub fn new(config: ModbusConfig) -> Result<ModbusConnector, EdgeError> {
        Self::on_line(config, Line::default(), false)
    }

    /// The same, on `line` (shared with other devices when `shared`).
    pub fn on_line(
        config: ModbusConfig,
        line: Line,
        shared: bool,
    ) -> Result<ModbusConnector, EdgeError> {
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
            line,
            shared,
        })
    }

    /// Makes sure `ctx` is connected and addresses our unit.
    async fn ready<'a>(&self, ctx: &'a mut Option<Context>) -> Result<&'a mut Context, String> {
        if ctx.is_none() {
            let c = self.connect().await?;
            self.health.connects.fetch_add(1, Ordering::Relaxed);
            *ctx = Some(c);
        }
        let c = ctx.as_mut().ok_or("not connected")?;
        if self.shared {
            c.set_slave(Slave(self.config.unit));
        }
        Ok(c)
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
                Err(Failure::Silent(format!(
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
            let result = match self.ready(ctx).await {
                Ok(c) => self.read(c, r).await,
                Err(e) => Err(Failure::Link(e)),
            };
            let e = match result {
                Err(Failure::Link(e)) => {
                    *ctx = None;
                    e
                }
                Err(Failure::Silent(e)) => {
                    if !self.shared {
                        *ctx = None;
                    }
                    e
                }
                other => return other,
            };
            if attempt >= self.config.retries {
                return Err(Failure::Link(e));
            }
            attempt += 1;
            tracing::debug!(device = %self.config.name, attempt, error = %e, "modbus retry");
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
                Err(Failure::Link(e) | Failure::Silent(e)) => return Err(e),
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
        let c = self.ready(ctx).await?;
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
                if !self.shared {
                    *ctx = None;
                }
                self.health.timeouts.fetch_add(1, Ordering::Relaxed);
                format!("no answer within {:?}", self.config.timeout)
            }
        };
        self.device_error(format!("{}: {result}", cmd.method));
        Err(result)
    }

    /// Installs a firmware image through the device's bootloader window; the line is held for
    /// the whole transfer.
    async fn flash(
        &self,
        ctx: &mut Option<Context>,
        image: &crate::firmware::Image,
    ) -> Result<Value, String> {
        let Some(cfg) = &self.config.firmware else {
            return Err("this device takes no firmware: its [[modbus]] has no `firmware`".into());
        };
        let c = self.ready(ctx).await?;
        tracing::info!(device = %self.config.name, title = %image.title, version = %image.version,
            bytes = image.size, "modbus: sending firmware");
        match firmware::flash(c, cfg, image, self.config.timeout).await {
            Ok(()) => Ok(serde_json::json!({"ok": true})),
            Err(e) => {
                if !self.shared {
                    *ctx = None;
                }
                self.device_error(format!("firmware: {e}"));
                Err(e)
            }
        }
    }

    async fn run_loop(self, mut io: ConnectorIo) {
        let name = self.config.name.clone();
        let line = self.line.clone();
        let mut last = HashMap::new();
        let mut backoff = BACKOFF_START;
        let mut retry_at = Instant::now();
        // Whether the device answered its last poll (on a shared line the port may be open
        // while this unit is silent).
        let mut reachable = false;
        // What the platform was last told (none yet): a status reading goes to the queue when
        // the device starts or stops answering, from the first poll on.
        let mut announced: Option<bool> = None;
        let mut tick = tokio::time::interval(self.config.poll);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stopped(&mut io.shutdown) => break,
                Some(cmd) = io.commands.recv() => {
                    let mut ctx = line.lock().await;
                    let result = match &cmd.firmware {
                        Some(image) => self.flash(&mut ctx, image).await,
                        None => self.write(&mut ctx, &cmd).await,
                    };
                    if !self.shared {
                        self.health.connected.store(ctx.is_some(), Ordering::Relaxed);
                    }
                    drop(ctx);
                    let _ = cmd.reply.send(result);
                }
                _ = tick.tick() => {
                    if !reachable && Instant::now() < retry_at {
                        continue;
                    }
                    let mut ctx = line.lock().await;
                    let ts = now_ms();
                    let polled = self.poll(&mut ctx, ts, &mut last).await;
                    match polled {
                        Ok(values) => {
                            if !reachable {
                                tracing::info!(device = %name, "modbus device connected");
                            }
                            reachable = true;
                            self.health.connected.store(true, Ordering::Relaxed);
                            backoff = BACKOFF_START;
                            drop(ctx);
                            if announced != Some(true) {
                                announced = Some(true);
                                if io.readings.send(Reading::status(&name, ts, true)).await.is_err() {
                                    break;
                                }
                            }
                            if !values.is_empty() {
                                let reading = Reading { device: name.clone(), ts, values };
                                if io.readings.send(reading).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            if !self.shared {
                                *ctx = None;
                            }
                            drop(ctx);
                            self.health.connected.store(false, Ordering::Relaxed);
                            if self.health.error(e.clone()) || reachable {
                                tracing::warn!(device = %name, error = %e, retry_in = ?backoff,
                                    "modbus device unreachable");
                            }
                            reachable = false;
                            if announced != Some(false) {
                                announced = Some(false);
                                if io.readings.send(Reading::status(&name, ts, false)).await.is_err() {
                                    break;
                                }
                            }
                            retry_at = Instant::now() + backoff;
                            backoff = (backoff * 2).min(self.config.backoff_max.max(BACKOFF_START));
                        }
                    }
                }
            }
        }
        // A shared line closes when its last device lets go of it.
        if !self.shared {
            if let Some(mut c) = line.lock().await.take() {
                use tokio_modbus::client::Client;
                let _ = timeout(Duration::from_secs(1), c.disconnect()).await;
            }
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
            firmware: self.config.firmware.is_some(),
        }]
    }
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }
    fn run(self: Box<Self>, io: ConnectorIo) -> ConnectorTask {
        Box::pin(self.run_loop(io))
    }
}
