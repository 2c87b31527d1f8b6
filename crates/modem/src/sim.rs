//! The modem simulator: a test double speaking AT commands as 3GPP TS 27.005/27.007 describe
//! them, over any byte stream (`tokio::io::duplex` in Rust tests, one end of a socat pty pair
//! for the platform tests through `ironbridge modem-sim`).
//!
//! It keeps PIN and registration states, echo (on until `ATE0`), `+CMEE` error formats, PDU and
//! text mode (`UCS2`, `GSM` or `IRA` character sets), received messages in numbered memory slots
//! (`+CMTI` when `AT+CNMI` asks for it, or `+CMT` routed directly), `AT+CMGR`/`CMGL`/`CMGD`,
//! `AT+CMGS` in both modes, and `+CDS` status reports for messages sent with a report request.
//! The test drives it with [`SimCommand`]s and sees every message it was asked to send as
//! [`SimEvent`]s.

use std::collections::BTreeMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::at;
use crate::pdu::{self, Deliver, Incoming, StatusReport, Timestamp, UserData};
use crate::reassembly::Reassembly;
use crate::text::{self, Coding, Concat};

/// The simulated SIM and network.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The PIN the SIM asks for; `None`: no PIN.
    pub pin: Option<String>,
    /// `AT+CREG?` answers "searching" this many times before "registered".
    pub searching: u32,
    /// Memory slots for received messages.
    pub capacity: usize,
    /// `+CSQ` rssi.
    pub signal: u8,
    /// Refuse `AT+CNMI` with ds = 1 (reports routed as `+CDS`), as modems that only store
    /// reports do: they come as `+CDSI` then.
    pub stored_reports: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            pin: None,
            searching: 1,
            capacity: 30,
            signal: 21,
            stored_reports: false,
        }
    }
}

/// What a test makes the simulator do.
#[derive(Debug, Clone)]
pub enum SimCommand {
    /// A message arrives from the network (split into concatenated parts when long).
    Deliver { from: String, text: String },
    /// Stop answering anything (`true`), or answer again (`false`).
    Silence(bool),
    /// The `+CREG` stat from now on (1 home, 2 searching, 3 denied, 5 roaming).
    Registration(u8),
}

/// What the simulator reports to the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    /// One `AT+CMGS` accepted.
    Submitted {
        to: String,
        text: String,
        coding: Coding,
        concat: Option<Concat>,
        reference: u8,
        status_report: bool,
    },
    /// A whole message sent (its parts joined).
    Message { to: String, text: String, parts: u8 },
    /// Incoming messages stored (their slots) after a [`SimCommand::Deliver`].
    Stored(Vec<u32>),
    /// A slot deleted by `AT+CMGD`.
    Deleted(u32),
    /// A [`SimCommand::Silence`] took effect.
    Silenced(bool),
    /// `AT+CPIN="..."` was tried (right or wrong).
    PinEntered { right: bool },
}

/// The service centre the simulated network reports in stored PDUs.
const SMSC: [u8; 8] = [0x07, 0x91, 0x94, 0x71, 0x01, 0x67, 0x00, 0xF0];

struct Slot {
    message: Incoming,
    unread: bool,
}

/// Where `AT+CMGS` input goes.
enum Prompt {
    Pdu(usize),
    Text { to: String },
}

struct Sim {
    config: SimConfig,
    echo: bool,
    cmee: u8,
    pin_ok: bool,
    searching_left: u32,
    stat: Option<u8>,
    text_mode: bool,
    charset: String,
    /// `AT+CNMI` mt and ds.
    mt: u8,
    ds: u8,
    /// `AT+CSMP` first octet and dcs.
    csmp_fo: u8,
    csmp_dcs: u8,
    slots: BTreeMap<u32, Slot>,
    prompt: Option<Prompt>,
    next_mr: u8,
    next_ref: u8,
    silent: bool,
    sent: Reassembly,
    events: mpsc::UnboundedSender<SimEvent>,
}

/// Runs the simulator on `io` until the stream closes or `control` is dropped.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    config: SimConfig,
    mut control: mpsc::UnboundedReceiver<SimCommand>,
    events: mpsc::UnboundedSender<SimEvent>,
) -> std::io::Result<()> {
    let mut sim = Sim {
        pin_ok: config.pin.is_none(),
        searching_left: config.searching,
        config,
        echo: true,
        cmee: 0,
        stat: None,
        text_mode: false,
        charset: "IRA".into(),
        mt: 0,
        ds: 0,
        csmp_fo: 17,
        csmp_dcs: 0,
        slots: BTreeMap::new(),
        prompt: None,
        next_mr: 0,
        next_ref: 0,
        silent: false,
        sent: Reassembly::default(),
        events,
    };
    let mut input = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let out = tokio::select! {
            n = io.read(&mut chunk) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                if sim.silent {
                    continue;
                }
                input.extend_from_slice(&chunk[..n]);
                sim.input(&mut input)
            }
            c = control.recv() => match c {
                None => return Ok(()),
                Some(c) => sim.control(c),
            },
        };
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
        }
    }
}

fn line(out: &mut Vec<u8>, l: &str) {
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(l.as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl Sim {
    /// Consumes complete commands (and prompt input) from `input`; the bytes to answer.
    fn input(&mut self, input: &mut Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            if self.prompt.is_some() {
                let Some(end) = input.iter().position(|&b| b == 0x1A || b == 0x1B) else {
                    return out;
                };
                let body: Vec<u8> = input.drain(..=end).collect();
                let prompt = self.prompt.take();
                if body[end] == 0x1B {
                    line(&mut out, "OK"); // cancelled
                    continue;
                }
                let body = String::from_utf8_lossy(&body[..end]).trim().to_string();
                match prompt {
                    Some(p) => self.submit(p, &body, &mut out),
                    None => continue,
                }
                continue;
            }
            let Some(end) = input.iter().position(|&b| b == b'\r') else {
                // ESC alone leaves a prompt; outside one it is noise
                input.retain(|&b| b != 0x1B);
                return out;
            };
            let raw: Vec<u8> = input.drain(..=end).collect();
            let cmd = String::from_utf8_lossy(&raw[..end])
                .trim_matches(|c: char| c.is_whitespace() || c == '\u{1b}')
                .to_string();
            if cmd.is_empty() {
                continue;
            }
            if self.echo {
                out.extend_from_slice(cmd.as_bytes());
                out.push(b'\r');
            }
            self.command(&cmd, &mut out);
        }
    }

    fn ok(&self, out: &mut Vec<u8>) {
        line(out, "OK");
    }

    fn cms(&self, out: &mut Vec<u8>, code: u16, text: &str) {
        match self.cmee {
            0 => line(out, "ERROR"),
            1 => line(out, &format!("+CMS ERROR: {code}")),
            _ => line(out, &format!("+CMS ERROR: {text}")),
        }
    }

    fn cme(&self, out: &mut Vec<u8>, code: u16, text: &str) {
        match self.cmee {
            0 => line(out, "ERROR"),
            1 => line(out, &format!("+CME ERROR: {code}")),
            _ => line(out, &format!("+CME ERROR: {text}")),
        }
    }

    /// A TE string in the character set in force.
    fn te(&self, s: &str) -> String {
        if self.charset == "UCS2" {
            at::ucs2_hex(s)
        } else {
            s.to_string()
        }
    }

    fn te_text(&self, s: &str) -> String {
        if self.charset == "UCS2" {
            at::from_ucs2_hex(s)
        } else {
            s.to_string()
        }
    }

    fn command(&mut self, cmd: &str, out: &mut Vec<u8>) {
        let upper = cmd.to_ascii_uppercase();
        let arg = |prefix: &str| upper.strip_prefix(prefix).map(str::to_string);
        let sms_command = upper.starts_with("AT+CMG") || upper.starts_with("AT+CNMI");
        if sms_command && !self.pin_ok {
            return self.cms(out, 311, "SIM PIN required");
        }
        match upper.as_str() {
            "AT" | "ATZ" | "ATI" | "AT+CGMI" | "AT&F" => return self.ok(out),
            "ATE0" => {
                self.echo = false;
                return self.ok(out);
            }
            "ATE1" => {
                self.echo = true;
                return self.ok(out);
            }
            "AT+CPIN?" => {
                let s = if self.pin_ok { "READY" } else { "SIM PIN" };
                line(out, &format!("+CPIN: {s}"));
                return self.ok(out);
            }
            "AT+CREG?" => {
                let stat = self.registration();
                line(out, &format!("+CREG: 0,{stat}"));
                return self.ok(out);
            }
            "AT+CSQ" => {
                line(out, &format!("+CSQ: {},99", self.config.signal));
                return self.ok(out);
            }
            "AT+CMGF?" => {
                line(out, &format!("+CMGF: {}", u8::from(self.text_mode)));
                return self.ok(out);
            }
            "AT+CPMS?" => {
                let (n, c) = (self.slots.len(), self.config.capacity);
                line(
                    out,
                    &format!("+CPMS: \"SM\",{n},{c},\"SM\",{n},{c},\"SM\",{n},{c}"),
                );
                return self.ok(out);
            }
            _ => {}
        }
        if let Some(v) = arg("AT+CMEE=") {
            return match v.parse::<u8>() {
                Ok(n) if n <= 2 => {
                    self.cmee = n;
                    self.ok(out)
                }
                _ => self.cme(out, 3, "operation not allowed"),
            };
        }
        if let Some(v) = cmd
            .strip_prefix("AT+CPIN=")
            .or_else(|| cmd.strip_prefix("at+cpin="))
        {
            let given = v.trim_matches('"');
            if self.pin_ok {
                return self.cme(out, 3, "operation not allowed");
            }
            let right = self.config.pin.as_deref() == Some(given);
            let _ = self.events.send(SimEvent::PinEntered { right });
            return if right {
                self.pin_ok = true;
                self.ok(out)
            } else {
                self.cme(out, 16, "incorrect password")
            };
        }
        if let Some(v) = arg("AT+CREG=") {
            return if v.parse::<u8>().is_ok_and(|n| n <= 2) {
                self.ok(out)
            } else {
                self.cme(out, 3, "operation not allowed")
            };
        }
        if let Some(v) = arg("AT+CMGF=") {
            return match v.as_str() {
                "0" | "1" => {
                    self.text_mode = v == "1";
                    self.ok(out)
                }
                _ => self.cms(out, 302, "operation not allowed"),
            };
        }
        if let Some(v) = arg("AT+CSCS=") {
            let cs = v.trim_matches('"').to_string();
            return if ["GSM", "IRA", "UCS2"].contains(&cs.as_str()) {
                self.charset = cs;
                self.ok(out)
            } else {
                self.cme(out, 3, "operation not allowed")
            };
        }
        if let Some(v) = arg("AT+CNMI=") {
            let p: Vec<Option<u8>> = at::params(&v).iter().map(|s| s.parse().ok()).collect();
            let mt = p.get(1).copied().flatten().unwrap_or(0);
            let ds = p.get(3).copied().flatten().unwrap_or(0);
            let refused = ds == 1 && self.config.stored_reports;
            if p.iter().any(Option::is_none) || mt > 3 || ds > 2 || refused {
                return self.cms(out, 302, "operation not allowed");
            }
            (self.mt, self.ds) = (mt, ds);
            return self.ok(out);
        }
        if let Some(v) = arg("AT+CSMP=") {
            let p: Vec<Option<u8>> = at::params(&v).iter().map(|s| s.parse().ok()).collect();
            return match (p.first(), p.get(3)) {
                (Some(Some(fo)), Some(Some(dcs))) => {
                    (self.csmp_fo, self.csmp_dcs) = (*fo, *dcs);
                    self.ok(out)
                }
                _ => self.cms(out, 305, "invalid text mode parameter"),
            };
        }
        if let Some(v) = cmd.get(8..).filter(|_| upper.starts_with("AT+CMGS=")) {
            if self.registration() != 1 && self.registration() != 5 {
                return self.cms(out, 331, "no network service");
            }
            let prompt = if self.text_mode {
                let p = at::params(v);
                let to = self.te_text(&p[0]);
                if to.is_empty() || pdu::encode_address(&to).is_err() {
                    return self.cms(out, 305, "invalid text mode parameter");
                }
                Prompt::Text { to }
            } else {
                match v.trim().parse::<usize>() {
                    Ok(n) if (7..=164).contains(&n) => Prompt::Pdu(n),
                    _ => return self.cms(out, 304, "invalid PDU mode parameter"),
                }
            };
            self.prompt = Some(prompt);
            out.extend_from_slice(b"\r\n> ");
            return;
        }
        if let Some(v) = arg("AT+CMGR=") {
            let Ok(i) = v.parse::<u32>() else {
                return self.cms(out, 321, "invalid memory index");
            };
            let Some(slot) = self.slots.get_mut(&i) else {
                // an empty slot: nothing but OK, as most modems answer
                return self.ok(out);
            };
            let unread = std::mem::replace(&mut slot.unread, false);
            let message = slot.message.clone();
            let (head, body) = self.show(&message, unread);
            line(out, &format!("+CMGR: {head}"));
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(b"\r\n");
            return self.ok(out);
        }
        if let Some(v) = arg("AT+CMGL=") {
            let v = v.trim_matches('"').to_string();
            let want_unread = matches!(v.as_str(), "0" | "REC UNREAD");
            if !["0", "1", "4", "REC UNREAD", "REC READ", "ALL"].contains(&v.as_str()) {
                return self.cms(out, 302, "operation not allowed");
            }
            let listed: Vec<(u32, Incoming, bool)> = self
                .slots
                .iter()
                .filter(|(_, s)| matches!(v.as_str(), "4" | "ALL") || s.unread == want_unread)
                .map(|(i, s)| (*i, s.message.clone(), s.unread))
                .collect();
            for (i, message, unread) in listed {
                let (head, body) = self.show(&message, unread);
                line(out, &format!("+CMGL: {i},{head}"));
                out.extend_from_slice(body.as_bytes());
                out.extend_from_slice(b"\r\n");
                if let Some(s) = self.slots.get_mut(&i) {
                    s.unread = false;
                }
            }
            return self.ok(out);
        }
        if let Some(v) = arg("AT+CMGD=") {
            let p = at::params(&v);
            let Ok(i) = p[0].parse::<u32>() else {
                return self.cms(out, 321, "invalid memory index");
            };
            if p.get(1).is_some_and(|f| f != "0") {
                let gone: Vec<u32> = self.slots.keys().copied().collect();
                self.slots.clear();
                for g in gone {
                    let _ = self.events.send(SimEvent::Deleted(g));
                }
            } else if self.slots.remove(&i).is_some() {
                let _ = self.events.send(SimEvent::Deleted(i));
            }
            return self.ok(out);
        }
        line(out, "ERROR");
    }

    fn registration(&mut self) -> u8 {
        if !self.pin_ok {
            return 0;
        }
        if let Some(s) = self.stat {
            return s;
        }
        if self.searching_left > 0 {
            self.searching_left -= 1;
            return 2;
        }
        1
    }

    /// A stored message as `+CMGR`/`+CMGL` show it: the header's parameters and the body line.
    fn show(&self, m: &Incoming, unread: bool) -> (String, String) {
        if !self.text_mode {
            let tpdu = match m {
                Incoming::Deliver(d) => pdu::encode_deliver(d),
                Incoming::StatusReport(r) => pdu::encode_status_report(r),
            }
            .unwrap_or_default();
            let mut full = SMSC.to_vec();
            full.extend(&tpdu);
            return (
                format!("{},,{}", u8::from(!unread), tpdu.len()),
                pdu::hex(&full),
            );
        }
        let stat = if unread { "REC UNREAD" } else { "REC READ" };
        match m {
            Incoming::Deliver(d) => (
                format!(
                    "\"{stat}\",\"{}\",,\"{}\"",
                    self.te(&d.from),
                    crate::driver::format_scts(&d.timestamp)
                ),
                self.te(&d.data.text),
            ),
            Incoming::StatusReport(r) => {
                let (t, d) = (
                    crate::driver::format_scts(&r.timestamp),
                    crate::driver::format_scts(&r.discharge),
                );
                let ra = self.te(&r.recipient);
                let head = format!(
                    "\"{stat}\",6,{},\"{ra}\",145,\"{t}\",\"{d}\",{}",
                    r.reference, r.status
                );
                (head, String::new())
            }
        }
    }

    /// An `AT+CMGS` body: accepted (and reported), or refused with a `+CMS ERROR`.
    fn submit(&mut self, prompt: Prompt, body: &str, out: &mut Vec<u8>) {
        let mr = self.next_mr;
        let (to, data, status_report) = match prompt {
            Prompt::Pdu(n) => {
                let parsed = pdu::unhex(body).and_then(|b| {
                    let (_, tpdu) = pdu::split_sca(&b)?;
                    if tpdu.len() != n {
                        return Err(pdu::PduError::Truncated("octets counted in AT+CMGS"));
                    }
                    pdu::decode_submit(tpdu)
                });
                match parsed {
                    Ok(s) => (s.to, s.data, s.status_report),
                    Err(_) => return self.cms(out, 304, "invalid PDU mode parameter"),
                }
            }
            Prompt::Text { to } => {
                let text = self.te_text(body);
                let coding = Coding::from_dcs(self.csmp_dcs);
                let data = UserData {
                    coding,
                    concat: None,
                    text,
                };
                if coding == Coding::Gsm7 && !crate::gsm7::is_gsm7(&data.text) {
                    return self.cms(out, 305, "invalid text mode parameter");
                }
                (to, data, self.csmp_fo & 0x20 != 0)
            }
        };
        self.next_mr = self.next_mr.wrapping_add(1);
        let _ = self.events.send(SimEvent::Submitted {
            to: to.clone(),
            text: data.text.clone(),
            coding: data.coding,
            concat: data.concat,
            reference: mr,
            status_report,
        });
        if let Some((text, parts)) = self.sent.add(&to, data.concat, data.text) {
            let _ = self.events.send(SimEvent::Message {
                to: to.clone(),
                text,
                parts,
            });
        }
        line(out, &format!("+CMGS: {mr}"));
        self.ok(out);
        if status_report {
            self.report(mr, &to, out);
        }
    }

    /// The network's delivery report for message `mr`, as `AT+CNMI`'s ds asks.
    fn report(&mut self, mr: u8, to: &str, out: &mut Vec<u8>) {
        let r = StatusReport {
            reference: mr,
            recipient: to.to_string(),
            timestamp: now(),
            discharge: now(),
            status: 0,
        };
        match self.ds {
            1 if self.text_mode => {
                let t = crate::driver::format_scts(&r.timestamp);
                let ra = self.te(to);
                line(out, &format!("+CDS: 6,{mr},\"{ra}\",145,\"{t}\",\"{t}\",0"));
            }
            1 => {
                let Ok(tpdu) = pdu::encode_status_report(&r) else {
                    return;
                };
                let mut full = SMSC.to_vec();
                full.extend(&tpdu);
                line(out, &format!("+CDS: {}", tpdu.len()));
                out.extend_from_slice(pdu::hex(&full).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            2 => {
                if let Some(i) = self.store(Incoming::StatusReport(r)) {
                    line(out, &format!("+CDSI: \"SM\",{i}"));
                }
            }
            _ => {}
        }
    }

    fn store(&mut self, message: Incoming) -> Option<u32> {
        if self.slots.len() >= self.config.capacity {
            return None;
        }
        let i = (1..).find(|i| !self.slots.contains_key(i))?;
        self.slots.insert(
            i,
            Slot {
                message,
                unread: true,
            },
        );
        Some(i)
    }

    fn control(&mut self, c: SimCommand) -> Vec<u8> {
        let mut out = Vec::new();
        match c {
            SimCommand::Silence(on) => {
                self.silent = on;
                let _ = self.events.send(SimEvent::Silenced(on));
            }
            SimCommand::Registration(stat) => self.stat = Some(stat),
            SimCommand::Deliver { from, text } => {
                self.next_ref = self.next_ref.wrapping_add(1);
                let Ok(parts) = text::split(&text, self.next_ref) else {
                    return out;
                };
                let mut stored = Vec::new();
                for p in parts {
                    let d = Deliver {
                        from: from.clone(),
                        timestamp: now(),
                        status_report: false,
                        data: UserData {
                            coding: p.coding,
                            concat: p.concat,
                            text: p.text,
                        },
                    };
                    if self.mt == 2 && !self.text_mode {
                        let Ok(tpdu) = pdu::encode_deliver(&d) else {
                            continue;
                        };
                        let mut full = SMSC.to_vec();
                        full.extend(&tpdu);
                        line(&mut out, &format!("+CMT: ,{}", tpdu.len()));
                        out.extend_from_slice(pdu::hex(&full).as_bytes());
                        out.extend_from_slice(b"\r\n");
                        continue;
                    }
                    match self.store(Incoming::Deliver(d)) {
                        Some(i) => {
                            stored.push(i);
                            if self.mt == 1 && !self.silent {
                                line(&mut out, &format!("+CMTI: \"SM\",{i}"));
                            }
                        }
                        None => tracing::warn!("modem-sim: memory full, message dropped"),
                    }
                }
                let _ = self.events.send(SimEvent::Stored(stored));
            }
        }
        if self.silent {
            out.clear();
        }
        out
    }
}

/// A fixed network time: the simulator has no clock (tests compare what they can predict).
fn now() -> Timestamp {
    Timestamp {
        year: 26,
        month: 1,
        day: 1,
        hour: 12,
        minute: 0,
        second: 0,
        tz_quarters: 4,
    }
}

#[cfg(test)]
mod tests;
