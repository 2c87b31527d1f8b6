//! Ironbridge's GSM modem: SMS over a serial port with AT commands (3GPP TS 27.005 / 27.007),
//! for the edge gateway's `sms-modem` connector and the platform's `sms` rule action.
//!
//! The codec is our own rather than the `sms-pdu` or `sms-pdu-decoder` crates: those are small,
//! single-author, pull unmaintained dependencies (`encoding`, `lazy_static`, an old chrono), and
//! neither encodes an SMS-SUBMIT with a user data header, which concatenated messages need.
//!
//! # Layout
//! - [`gsm7`]: GSM 03.38, the 7-bit default alphabet, its extension table, septet packing, UCS-2.
//! - [`text`]: choosing the alphabet and splitting long texts into concatenated parts.
//! - [`pdu`]: GSM 03.40 PDUs (SUBMIT, DELIVER, STATUS-REPORT), addresses, time stamps, headers.
//! - [`at`]: AT response lines: final result codes, unsolicited codes, `+CMGR`/`+CMGL` headers.
//! - [`driver`]: one session with a modem over any byte stream: init, send, read, delete.
//! - [`service`]: the modem kept running: reopened and re-initialised after failures, incoming
//!   messages reassembled, delivery reports matched; a cheap [`ModemHandle`] to send through.
//! - [`sim`]: the modem simulator, a 27.005 test double on any byte stream (a pty for tests).

pub mod at;
pub mod driver;
pub mod gsm7;
pub mod pdu;
pub mod reassembly;
pub mod service;
pub mod sim;
pub mod text;

pub use driver::{Mode, ModemError, Settings};
pub use service::{ModemEvent, ModemHandle, ModemStats, Received, Sent};
