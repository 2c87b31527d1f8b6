//! The edge configuration file (DESIGN.md contract: `[uplink]`, `[[modbus]]`, `[modem]`,
//! `[[rule]]`): its types, parsed strictly (`deny_unknown_fields`) and then checked as a whole,
//! every error naming the table and field at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::EdgeError;
use crate::modbus::registers::{DataType, Order, Table};

/// The whole `edge.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The platform, through the gateway API.
    pub uplink: UplinkConfig,
    /// One Modbus device per table: one sub-device on the platform.
    #[serde(default)]
    pub modbus: Vec<ModbusConfig>,
    /// An optional GSM modem for SMS: command messages, replies, outbound SMS.
    pub modem: Option<ModemConfig>,
    /// Local rules, in the platform's rule shape; parsed and checked by `rules::load`, which
    /// needs the connectors' devices and names the rule in its errors.
    #[serde(default)]
    pub rule: Vec<toml::Value>,
}

/// `[uplink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// `mqtt://host[:port]` (1883), or `mqtts://host[:port]` (8883) for TLS.
    pub url: String,
    /// The gateway device's access token (the MQTT user name). May be left out with `cert`
    /// when the platform knows the gateway by its certificate (an X.509 credential).
    #[serde(default)]
    pub token: String,
    /// Where the store-and-forward queue lives.
    #[serde(default = "default_buffer_dir")]
    pub buffer_dir: PathBuf,
    /// Most bytes of readings kept while the uplink is down; the oldest are dropped beyond.
    #[serde(default = "default_buffer_max_bytes")]
    pub buffer_max_bytes: u64,
    /// Most readings per second sent to the platform (replay after an outage included).
    #[serde(default = "default_replay_rate")]
    pub replay_rate: u32,
    /// How often connector and buffer health is sent as the gateway's telemetry.
    #[serde(default = "default_health_interval", deserialize_with = "duration")]
    pub health_interval: Duration,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive", deserialize_with = "duration")]
    pub keep_alive: Duration,
    /// `mqtts://`: the CA bundle (PEM) the platform's certificate must chain to (required).
    pub cafile: Option<PathBuf>,
    /// `mqtts://`: the gateway's client certificate chain (PEM, leaf first), for mutual TLS.
    pub cert: Option<PathBuf>,
    /// `mqtts://`: the client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The platform's HTTP address (`http://host:port` or `https://...`), where firmware for
    /// sub-devices is fetched from (the device API's `GET /api/v1/{token}/firmware`). Without it
    /// an update offered to a sub-device fails, saying so.
    pub http: Option<String>,
}

/// How a Modbus device is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    #[default]
    Tcp,
    Rtu,
}

/// Serial parity (RTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// When a polled value becomes a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// Every poll.
    #[default]
    Always,
    /// Only when it changed (by at least `deadband` for numbers).
    Change,
}

/// `[[modbus]]`: one device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// The sub-device's name on the platform.
    pub name: String,
    /// Its device profile on the platform.
    #[serde(default = "default_profile")]
    pub profile: String,
    #[serde(default)]
    pub transport: Transport,
    /// `host:port` (TCP).
    pub address: Option<String>,
    /// Serial port (RTU).
    pub port: Option<PathBuf>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Unit (slave) id.
    #[serde(default = "default_unit")]
    pub unit: u8,
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll: Duration,
    /// Per request.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Further tries of a request that timed out or failed on the wire, before reconnecting.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The longest wait between reconnection attempts (they back off exponentially up to it).
    #[serde(default = "default_backoff_max", deserialize_with = "duration")]
    pub backoff_max: Duration,
    #[serde(default)]
    pub registers: Vec<RegisterConfig>,
    #[serde(default)]
    pub writes: Vec<WriteConfig>,
    /// The device takes firmware images over Modbus (modbus/firmware.rs has the protocol).
    pub firmware: Option<FirmwareConfig>,
}

/// `firmware = { register = 5000, block = 120, install_timeout = "2m" }` on a `[[modbus]]`
/// device: the holding-register window its bootloader listens on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareConfig {
    /// The window's first holding register.
    pub register: u16,
    /// Image bytes per block write, in registers (2 bytes each): 1 to 120.
    #[serde(default = "default_firmware_block")]
    pub block: u16,
    /// Longest wait for the device to verify and install the image once it is sent.
    #[serde(default = "default_install_timeout", deserialize_with = "duration")]
    pub install_timeout: Duration,
}

fn default_firmware_block() -> u16 {
    120
}
fn default_install_timeout() -> Duration {
    Duration::from_secs(120)
}

/// One polled value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Its telemetry key.
    pub key: String,
    pub table: Table,
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// `string`: length in registers.
    pub length: Option<u16>,
    /// A single bit (0 = least significant) of a 16-bit register, reported as a boolean.
    pub bit: Option<u8>,
    #[serde(default)]
    pub byte_order: Order,
    #[serde(default)]
    pub word_order: Order,
    /// value = raw × scale + offset.
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    /// Defaults to `always` (every poll), or `change` when a deadband is set.
    pub report: Option<Report>,
    /// With `report = "change"`: the smallest change reported.
    pub deadband: Option<f64>,
}

/// One RPC method writing a coil or holding register(s).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteConfig {
    pub method: String,
    pub table: Table,
    pub address: u16,
    /// Defaults to `bool` for coils and `u16` for holding registers.
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    /// The field of the RPC's params holding the value; the params themselves when absent.
    pub param: Option<String>,
    /// A shared attribute of the sub-device whose updates from the platform are written the
    /// same way (the attribute's value is the value written).
    pub attribute: Option<String>,
    #[serde(default)]
    pub byte_order: Order,
    #[serde(default)]
    pub word_order: Order,
    /// raw = (value − offset) / scale.
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    /// Range of accepted values (engineering units), besides what the type can hold.
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// `[modem]`: a GSM modem on a serial port (AT commands, 27.005).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModemConfig {
    pub port: PathBuf,
    #[serde(default = "default_modem_baud")]
    pub baud: u32,
    /// The SIM's PIN, entered when the SIM asks (once: a wrong PIN is never retried).
    pub pin: Option<String>,
    /// `pdu` (default) or `text`.
    #[serde(default)]
    pub mode: ModemMode,
    /// Ask the network for delivery reports.
    #[serde(default = "default_true")]
    pub status_reports: bool,
    /// Longest wait for a command's answer; a modem silent for longer is reopened.
    #[serde(default = "default_modem_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Longest wait for network registration after opening.
    #[serde(
        default = "default_registration_timeout",
        deserialize_with = "duration"
    )]
    pub registration_timeout: Duration,
    /// How often signal quality and registration are read.
    #[serde(default = "default_check_interval", deserialize_with = "duration")]
    pub check_interval: Duration,
    /// When set, the modem is a sub-device of this name on the platform, taking the RPC
    /// `sendSms {"to","text"}`; its health keys start with it (else with `modem`).
    pub name: Option<String>,
    /// Numbers whose command messages are carried out (as the network shows them: `+49...`).
    #[serde(default)]
    pub allowed_numbers: Vec<String>,
    /// The PIN every command message ends with (`PUMP ON 1234`).
    pub command_pin: Option<String>,
    /// Command messages and the RPC each becomes.
    #[serde(default)]
    pub commands: Vec<SmsCommandConfig>,
}

/// `[modem] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModemMode {
    #[default]
    Pdu,
    Text,
}

/// `[[modem.commands]]`: one command message mapped to an RPC of a sub-device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsCommandConfig {
    /// The words of the message before the PIN (`PUMP ON`; case and spacing do not matter).
    pub text: String,
    /// The sub-device it goes to (a `[[modbus]]` name).
    pub device: String,
    pub method: String,
    /// The RPC's params.
    #[serde(default)]
    pub params: serde_json::Value,
}

impl EdgeConfig {
    /// Reads, parses and checks `path`.
    pub fn load(path: &Path) -> Result<EdgeConfig, EdgeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EdgeError::Config(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            EdgeError::Config(m) => EdgeError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and checks a configuration text.
    pub fn parse(text: &str) -> Result<EdgeConfig, EdgeError> {
        let config: EdgeConfig =
            toml::from_str(text).map_err(|e| EdgeError::Config(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// The checks serde cannot make: each error names the table and the field.
    fn check(&self) -> Result<(), EdgeError> {
        let bad = |m: String| Err(EdgeError::Config(m));
        let u = &self.uplink;
        // The URL, and for TLS the PEM files, read now so that a wrong one stops the start.
        crate::uplink::endpoint::Endpoint::from_config(u)
            .map_err(|e| EdgeError::Config(format!("[uplink] {e}")))?;
        if u.token.is_empty() && u.cert.is_none() {
            return bad("[uplink] token: required (it may be left out only with cert)".into());
        }
        if u.replay_rate == 0 {
            return bad("[uplink] replay_rate: must be at least 1".into());
        }
        if u.health_interval.is_zero() {
            return bad("[uplink] health_interval: must be more than 0".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.modbus.iter().enumerate() {
            let at = format!("[[modbus]] #{} ({:?})", i + 1, m.name);
            if m.name.is_empty() {
                return bad(format!("{at} name: must not be empty"));
            }
            if !names.insert(&m.name) {
                return bad(format!("{at} name: used by another [[modbus]] device"));
            }
            match m.transport {
                Transport::Tcp if m.address.is_none() => {
                    return bad(format!("{at} address: required for transport = \"tcp\""))
                }
                Transport::Rtu if m.port.is_none() => {
                    return bad(format!("{at} port: required for transport = \"rtu\""))
                }
                _ => {}
            }
            if !(5..=8).contains(&m.data_bits) {
                return bad(format!("{at} data_bits: {} is not 5..=8", m.data_bits));
            }
            if !(1..=2).contains(&m.stop_bits) {
                return bad(format!("{at} stop_bits: {} is not 1 or 2", m.stop_bits));
            }
            if m.poll.is_zero() {
                return bad(format!("{at} poll: must be more than 0"));
            }
            if m.timeout.is_zero() {
                return bad(format!("{at} timeout: must be more than 0"));
            }
            let mut keys = std::collections::HashSet::new();
            for r in &m.registers {
                if r.key.is_empty() || r.key.len() > 255 {
                    return bad(format!(
                        "{at} registers: key {:?} must have 1 to 255 bytes",
                        r.key
                    ));
                }
                if r.key.starts_with('$') {
                    // `$status` marks the sub-device's status in the queue.
                    return bad(format!(
                        "{at} registers: key {:?} may not start with $",
                        r.key
                    ));
                }
                if !keys.insert(&r.key) {
                    return bad(format!("{at} registers: key {:?} appears twice", r.key));
                }
                crate::modbus::registers::RegisterSpec::from_config(r)
                    .map_err(|e| EdgeError::Config(format!("{at} registers {:?}: {e}", r.key)))?;
            }
            let mut methods = std::collections::HashSet::new();
            let mut attributes = std::collections::HashSet::new();
            for w in &m.writes {
                if !methods.insert(&w.method) {
                    return bad(format!("{at} writes: method {:?} appears twice", w.method));
                }
                if let Some(a) = w.attribute.as_ref().filter(|a| !attributes.insert(*a)) {
                    return bad(format!("{at} writes: attribute {a:?} appears twice"));
                }
                crate::modbus::write::WriteSpec::from_config(w)
                    .map_err(|e| EdgeError::Config(format!("{at} writes {:?}: {e}", w.method)))?;
            }
        }
        self.check_serial_lines()?;
        if let Some(h) = &u.http {
            if !h.starts_with("http://") && !h.starts_with("https://") {
                return bad(format!(
                    "[uplink] http: {h:?} must start with http:// or https://"
                ));
            }
        }
        for m in &self.modbus {
            if let Some(f) = &m.firmware {
                let at = format!("[[modbus]] {:?} firmware", m.name);
                if !(1..=crate::modbus::firmware::MAX_BLOCK).contains(&f.block) {
                    return bad(format!(
                        "{at}: block = {} is not 1..={}",
                        f.block,
                        crate::modbus::firmware::MAX_BLOCK
                    ));
                }
                if u32::from(f.register) + crate::modbus::firmware::window(f.block) > 0x1_0000 {
                    return bad(format!(
                        "{at}: register = {} leaves no room for the window ({} registers)",
                        f.register,
                        crate::modbus::firmware::window(f.block)
                    ));
                }
            }
        }
        if let Some(m) = &self.modem {
            self.check_modem(m, &names)?;
        }
        Ok(())
    }

    /// RTU devices naming the same port share one RS-485 line: one open port, so the same line
    /// settings, and a unit id each. The modem cannot share a Modbus line.
    fn check_serial_lines(&self) -> Result<(), EdgeError> {
        let mut first_on: std::collections::HashMap<&Path, &ModbusConfig> = Default::default();
        let mut units = std::collections::HashSet::new();
        for m in &self.modbus {
            let Some(port) = m.port.as_deref().filter(|_| m.transport == Transport::Rtu) else {
                continue;
            };
            let at = format!("[[modbus]] {:?}", m.name);
            if !units.insert((port, m.unit)) {
                return Err(EdgeError::Config(format!(
                    "{at} unit: {} is taken by another device on {}",
                    m.unit,
                    port.display()
                )));
            }
            let first = *first_on.entry(port).or_insert(m);
            let settings = |c: &ModbusConfig| (c.baud, c.parity, c.data_bits, c.stop_bits);
            if settings(first) != settings(m) {
                return Err(EdgeError::Config(format!(
                    "{at}: baud, parity, data_bits and stop_bits must be those of {:?}, which \
                     shares the line {}",
                    first.name,
                    port.display()
                )));
            }
        }
        if let Some(modem) = &self.modem {
            if let Some(m) = first_on.get(modem.port.as_path()) {
                return Err(EdgeError::Config(format!(
                    "[modem] port: {} is the Modbus line of {:?}",
                    modem.port.display(),
                    m.name
                )));
            }
        }
        Ok(())
    }

    fn check_modem(
        &self,
        m: &ModemConfig,
        devices: &std::collections::HashSet<&String>,
    ) -> Result<(), EdgeError> {
        let bad = |m: String| Err(EdgeError::Config(format!("[modem] {m}")));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if m.pin.as_deref().is_some_and(|p| !digits(p)) {
            return bad("pin: must be digits".into());
        }
        if m.timeout.is_zero() || m.check_interval.is_zero() {
            return bad("timeout, check_interval: must be more than 0".into());
        }
        if let Some(n) = &m.name {
            if n.is_empty() || devices.contains(n) {
                return bad(format!("name: {n:?} is empty or a [[modbus]] device's"));
            }
        }
        for n in &m.allowed_numbers {
            if modem::pdu::encode_address(n).is_err() {
                return bad(format!("allowed_numbers: {n:?} is not a phone number"));
            }
        }
        if m.commands.is_empty() {
            return Ok(());
        }
        match &m.command_pin {
            Some(p) if digits(p) => {}
            Some(_) => return bad("command_pin: must be digits".into()),
            None => return bad("command_pin: required with [[modem.commands]]".into()),
        }
        if m.allowed_numbers.is_empty() {
            return bad("allowed_numbers: required with [[modem.commands]]".into());
        }
        let mut texts = std::collections::HashSet::new();
        for c in &m.commands {
            let text = crate::sms::normalize(&c.text);
            if text.is_empty() || !texts.insert(text) {
                return bad(format!(
                    "commands: text {:?} is empty or appears twice",
                    c.text
                ));
            }
            if !devices.contains(&c.device) {
                return bad(format!(
                    "commands {:?}: device {:?} is not a [[modbus]] device",
                    c.text, c.device
                ));
            }
        }
        Ok(())
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration ({e})")))
}

fn default_buffer_dir() -> PathBuf {
    PathBuf::from("./edge-buffer")
}
fn default_buffer_max_bytes() -> u64 {
    1 << 30
}
fn default_replay_rate() -> u32 {
    50_000
}
fn default_health_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_profile() -> String {
    "default".into()
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_unit() -> u8 {
    1
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_retries() -> u32 {
    1
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_modem_baud() -> u32 {
    115_200
}
fn default_true() -> bool {
    true
}
fn default_modem_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_registration_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_check_interval() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN.md's example, verbatim.
    const CONTRACT: &str = r#"
[uplink]                                     # the platform, through the gateway API
url = "mqtt://127.0.0.1:1883"                # mqtts:// for TLS
token = "<the gateway device's access token>"
buffer_dir = "./edge-buffer"                 # store and forward
buffer_max_bytes = 1073741824

[[modbus]]                                   # one Modbus device = one sub-device on the platform
name = "pump-station-1"
profile = "plc"
transport = "tcp"                            # tcp | rtu (then port, baud, parity, data_bits, stop_bits)
address = "127.0.0.1:5020"
unit = 1
poll = "1s"
registers = [
  { key = "pressure", table = "holding", address = 0, type = "u16", scale = 0.1 },
  { key = "running",  table = "coil",    address = 0, type = "bool" },
]
writes = [ { method = "setPump", table = "coil", address = 0, param = "on" } ]

[modem]                                      # optional GSM modem for SMS
port = "/dev/ttyUSB0"
baud = 115200
"#;

    #[test]
    fn the_design_example_parses() {
        let c = EdgeConfig::parse(CONTRACT).unwrap();
        assert_eq!(c.uplink.buffer_max_bytes, 1 << 30);
        assert_eq!(c.modbus.len(), 1);
        assert_eq!(c.modbus[0].poll, Duration::from_secs(1));
        assert_eq!(c.modbus[0].registers[0].scale, Some(0.1));
        assert_eq!(c.modem.as_ref().unwrap().baud, 115_200);
    }

    #[test]
    fn the_documented_example_parses() {
        let c = EdgeConfig::parse(include_str!("../../../docs/edge.toml")).unwrap();
        assert_eq!(c.modbus[0].registers.len(), 7);
        assert_eq!(c.modbus[0].writes.len(), 3);
        assert_eq!(c.modbus[0].writes[2].attribute.as_deref(), Some("limit"));
    }

    fn err(text: &str) -> String {
        EdgeConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err("[uplink]\nurl = \"mqtt://a:1\"\ntoken = \"t\"\nbufer_dir = \"x\"\n");
        assert!(e.contains("bufer_dir"), "{e}");
        let e = err(&CONTRACT.replace("unit = 1", "unit = 1\nunits = 2"));
        assert!(e.contains("units"), "{e}");
    }

    #[test]
    fn checks_name_the_field() {
        let e = err(&CONTRACT.replace("poll = \"1s\"", "poll = \"soon\""));
        assert!(e.contains("soon"), "{e}");
        let e = err(&CONTRACT.replace("address = \"127.0.0.1:5020\"\n", ""));
        assert!(e.contains("address") && e.contains("pump-station-1"), "{e}");
        let e = err(&CONTRACT.replace("type = \"u16\", scale", "type = \"u16\", bit = 16, scale"));
        assert!(e.contains("pressure") && e.contains("bit"), "{e}");
        let e = err(&CONTRACT.replace("key = \"running\"", "key = \"$status\""));
        assert!(
            e.contains("$status") && e.contains("may not start with $"),
            "{e}"
        );
        let e = err(&CONTRACT.replace("mqtt://127", "http://127"));
        assert!(e.contains("url"), "{e}");
        let e = err(&CONTRACT.replace(
            "table = \"coil\",    address = 0",
            "table = \"input\", address = 0",
        ));
        assert!(e.contains("running"), "{e}");
    }
    /// `n` RTU devices: `(name, port, unit, baud)`.
    fn rtu(devices: &[(&str, &str, u8, u32)]) -> String {
        let mut t = "[uplink]\nurl = \"mqtt://a:1\"\ntoken = \"t\"\n".to_string();
        for (name, port, unit, baud) in devices {
            t += &format!(
                "[[modbus]]\nname = \"{name}\"\ntransport = \"rtu\"\nport = \"{port}\"\n\
                 unit = {unit}\nbaud = {baud}\n"
            );
        }
        t
    }

    #[test]
    fn devices_on_one_rs485_line_need_their_own_units_and_its_settings() {
        let ok = rtu(&[("a", "/dev/ttyS0", 1, 9600), ("b", "/dev/ttyS0", 2, 9600)]);
        let c = EdgeConfig::parse(&ok).unwrap();
        let lines = crate::modbus::shared_lines(&c.modbus);
        assert_eq!(lines.len(), 1, "one line shared by both");
        // Alone on its port: no shared line.
        let c = EdgeConfig::parse(&rtu(&[
            ("a", "/dev/ttyS0", 1, 9600),
            ("b", "/dev/ttyS1", 1, 9600),
        ]))
        .unwrap();
        assert!(crate::modbus::shared_lines(&c.modbus).is_empty());

        let e = err(&rtu(&[
            ("a", "/dev/ttyS0", 1, 9600),
            ("b", "/dev/ttyS0", 1, 9600),
        ]));
        assert!(
            e.contains("\"b\" unit: 1 is taken") && e.contains("/dev/ttyS0"),
            "{e}"
        );
        let e = err(&rtu(&[
            ("a", "/dev/ttyS0", 1, 9600),
            ("b", "/dev/ttyS0", 2, 19200),
        ]));
        assert!(e.contains("\"b\"") && e.contains("those of \"a\""), "{e}");
        let e = err(&(ok + "[modem]\nport = \"/dev/ttyS0\"\n"));
        assert!(e.contains("[modem] port") && e.contains("\"a\""), "{e}");
    }

    #[test]
    fn tls_fields_are_checked_at_load() {
        let pki = crate::uplink::test_pki::Pki::new("config");
        let path = |n: &str| pki.path(n).display().to_string();
        let uplink = |extra: &str| {
            CONTRACT.replace(
                "url = \"mqtt://127.0.0.1:1883\"",
                &format!("url = \"mqtts://127.0.0.1:8883\"\n{extra}"),
            )
        };
        let ca = format!("cafile = {:?}", path("ca.pem"));
        let client = format!(
            "cert = {:?}\nkey = {:?}",
            path("client.pem"),
            path("client.key")
        );
        let c = EdgeConfig::parse(&uplink(&format!("{ca}\n{client}"))).unwrap();
        assert_eq!(c.uplink.cafile, Some(pki.path("ca.pem")));
        assert_eq!(c.uplink.key, Some(pki.path("client.key")));
        // a client certificate may stand in for the token (an X.509 credential)
        let no_token = |t: &str| t.replace("token = \"<the gateway device's access token>\"\n", "");
        let c = EdgeConfig::parse(&no_token(&uplink(&format!("{ca}\n{client}")))).unwrap();
        assert!(c.uplink.token.is_empty());
        let e = err(&no_token(&uplink(&ca)));
        assert!(e.contains("[uplink] token"), "{e}");
        let e = err(&uplink(""));
        assert!(e.contains("[uplink] cafile: required"), "{e}");
        let e = err(&uplink(&format!("cafile = {:?}", path("nowhere.pem"))));
        assert!(
            e.contains("[uplink] cafile") && e.contains("nowhere.pem"),
            "{e}"
        );
        let e = err(&uplink(&format!("{ca}\ncert = {:?}", path("client.pem"))));
        assert!(e.contains("[uplink] key: required"), "{e}");
        let e = err(&CONTRACT.replace("buffer_dir", &format!("{ca}\nbuffer_dir")));
        assert!(
            e.contains("[uplink] cafile: only used with an mqtts://"),
            "{e}"
        );
        let e = err(&uplink(&format!("{ca}\ncafiles = 1")));
        assert!(e.contains("cafiles"), "{e}");
    }
}
