//! Ironbridge's edge gateway (`ironbridge edge --config edge.toml`): field devices polled by
//! connectors, every reading queued on disk, and forwarded to the platform through the
//! ThingsBoard-compatible gateway API over MQTT, RPCs coming back down to the connectors.
//!
//! # Layout
//! - [`config`]: `edge.toml` (DESIGN.md's contract), strict parsing and checks.
//! - [`connector`]: the `Connector` trait, readings, commands, health; built by name.
//! - [`modbus`]: the Modbus TCP connector (register maps, batching, writes, reconnection).
//! - [`sms`]: the SMS modem connector (command messages → RPCs, replies, `sendSms`).
//! - [`rules`]: local rules (`[[rule]]`, the platform's dialect) on the readings, with no uplink
//!   needed: RPCs to the connectors, SMS, log lines, alarms as telemetry.
//! - [`firmware`]: firmware for sub-devices: fetched once per image, cached, installed through
//!   their connector (Modbus: a bootloader's register window), progress as `fw_state`.
//! - [`buffer`]: store and forward, the bounded on-disk queue (SQLite).
//! - [`uplink`]: the MQTT session to the platform (TCP, or TLS for `mqtts://`): sends the queue
//!   in order at a bounded rate, deletes what was acknowledged, answers RPCs.
//! - [`gateway`]: wires them together and reports health as the gateway's telemetry.

pub mod buffer;
pub mod config;
pub mod connector;
pub mod error;
pub mod firmware;
pub mod gateway;
pub mod modbus;
pub mod rules;
pub mod sms;
pub mod uplink;

pub use config::EdgeConfig;
pub use error::EdgeError;
pub use gateway::run;
