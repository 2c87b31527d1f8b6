//! One session with a modem over any byte stream (a serial port, a pty, `tokio::io::duplex`):
//! commands with timeouts, the `> ` prompt of `AT+CMGS`, unsolicited codes kept aside while a
//! command runs, initialisation (AT, ATE0, AT+CMEE, PIN, registration, signal, message format,
//! new-message indications), sending (PDU mode: GSM-7 / UCS-2, concatenated; text mode), reading,
//! listing and deleting stored messages. A [`ModemError::is_link`] error means the modem no
//! longer answers: the [`crate::service`] reopens it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::at::{self, Final, UrcHead};
use crate::pdu::{self, Deliver, Incoming, PduError, StatusReport, Submit, Timestamp, UserData};
use crate::text::{self, Coding, TextError};

/// PDU mode (`AT+CMGF=0`, the default) or text mode (`AT+CMGF=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Pdu,
    /// Text mode with the `UCS2` TE character set: any text, but no user data header, so a long
    /// text goes as several separate messages.
    Text,
}

/// How the modem is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The SIM's PIN, entered when the SIM asks for it.
    pub pin: Option<String>,
    pub mode: Mode,
    /// Ask for delivery reports (TP-SRR).
    pub status_reports: bool,
    /// Longest wait for an ordinary command's final result.
    pub command_timeout: Duration,
    /// Longest wait for `AT+CMGS` (the network's answer).
    pub send_timeout: Duration,
    /// Longest wait for network registration at start-up.
    pub registration_timeout: Duration,
    /// TP-VP, relative (167 = 24 hours).
    pub validity: u8,
    /// How long a message asked for while the modem is down waits for it to come back
    /// (zero: it fails at once).
    pub hold: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pin: None,
            mode: Mode::Pdu,
            status_reports: true,
            command_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(60),
            registration_timeout: Duration::from_secs(60),
            validity: 167,
            hold: Duration::from_secs(30),
        }
    }
}

/// What went wrong talking to the modem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModemError {
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("serial port: {0}")]
    Io(String),
    #[error("the modem closed the port")]
    Closed,
    #[error("{command}: {error}")]
    Command { command: String, error: String },
    #[error("SIM: {0}")]
    Sim(String),
    /// The SIM refused the configured PIN: it must not be tried again (three wrong tries
    /// block the SIM until its PUK is entered).
    #[error("SIM: PIN refused ({0}); not tried again until restarted with the right PIN")]
    PinRefused(String),
    #[error("network registration: {0}")]
    Registration(String),
    #[error("unexpected answer to {0}: {1:?}")]
    Unexpected(String, String),
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("modem not ready: {0}")]
    NotReady(String),
}

impl ModemError {
    /// True when the port or the modem itself failed (reopen it), not just one command.
    pub fn is_link(&self) -> bool {
        matches!(
            self,
            ModemError::Timeout(..) | ModemError::Io(_) | ModemError::Closed
        )
    }
}

/// Something the modem announced on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message stored at this index (`+CMTI`).
    Stored(u32),
    /// A status report stored at this index (`+CDSI`).
    ReportStored(u32),
    /// A status report routed directly (`+CDS`).
    Report(StatusReport),
    /// A message routed directly (`+CMT`).
    Direct(Deliver),
}

/// The network registration and signal after initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// `+CREG` stat: 1 home, 5 roaming.
    pub registration: u8,
    /// `+CSQ` rssi 0..=31; `None` when the modem does not know (99).
    pub signal: Option<u8>,
}

/// A modem session over `S`.
pub struct Modem<S> {
    io: S,
    buf: Vec<u8>,
    events: VecDeque<Event>,
    /// The first line of a two-line unsolicited code, waiting for its second.
    pending: Option<UrcHead>,
    settings: Settings,
    concat_reference: u8,
    /// Text mode: the DCS `AT+CSMP` last set.
    text_dcs: Option<u8>,
}

const CTRL_Z: u8 = 0x1A;

impl<S: AsyncRead + AsyncWrite + Unpin> Modem<S> {
    /// A session on `io`; nothing is sent until a command.
    pub fn new(io: S, settings: Settings) -> Modem<S> {
        Modem {
            io,
            buf: Vec::with_capacity(1024),
            events: VecDeque::new(),
            pending: None,
            settings,
            concat_reference: 0,
            text_dcs: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// One read from the port into the buffer (cancel-safe).
    async fn fill(&mut self) -> Result<(), ModemError> {
        let mut chunk = [0u8; 512];
        let n = self
            .io
            .read(&mut chunk)
            .await
            .map_err(|e| ModemError::Io(e.to_string()))?;
        if n == 0 {
            return Err(ModemError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        // a modem spewing garbage without line ends must not grow the buffer for ever
        if self.buf.len() > 64 * 1024 {
            self.buf.drain(..self.buf.len() - 4096);
        }
        Ok(())
    }

    /// The next complete non-empty line in the buffer.
    fn take_line(&mut self) -> Option<String> {
        loop {
            let end = self.buf.iter().position(|&b| b == b'\r' || b == b'\n')?;
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).trim().to_string();
            if !line.is_empty() {
                return Some(line);
            }
        }
    }

    /// Sorts a line read outside a command's answer: the second line of a pending code, an
    /// unsolicited code, or noise. True when it was taken.
    fn take_unsolicited(&mut self, line: &str) -> bool {
        if let Some(head) = self.pending.take() {
            let bytes = pdu::unhex(line);
            match (head, bytes) {
                (UrcHead::ReportPdu, Ok(b)) => match decode_report(&b) {
                    Ok(r) => self.events.push_back(Event::Report(r)),
                    Err(e) => tracing::warn!(error = %e, "modem: undecodable +CDS report"),
                },
                (UrcHead::Direct, Ok(b)) => {
                    match pdu::split_sca(&b).and_then(|(_, t)| pdu::decode_incoming(t)) {
                        Ok(Incoming::Deliver(d)) => self.events.push_back(Event::Direct(d)),
                        Ok(Incoming::StatusReport(r)) => self.events.push_back(Event::Report(r)),
                        Err(e) => tracing::warn!(error = %e, "modem: undecodable +CMT message"),
                    }
                }
                (_, _) => tracing::warn!(line, "modem: unexpected line after +CDS/+CMT"),
            }
            return true;
        }
        match at::urc(line) {
            Some(UrcHead::Stored { index, .. }) => self.events.push_back(Event::Stored(index)),
            Some(UrcHead::ReportStored { index, .. }) => {
                self.events.push_back(Event::ReportStored(index))
            }
            Some(h @ (UrcHead::ReportPdu | UrcHead::Direct)) => self.pending = Some(h),
            Some(UrcHead::ReportText(p)) => match report_from_text(&p) {
                Some(r) => self.events.push_back(Event::Report(r)),
                None => tracing::warn!(line, "modem: unreadable +CDS report"),
            },
            Some(UrcHead::Other(l)) => tracing::debug!(line = %l, "modem: unsolicited code"),
            None => return false,
        }
        true
    }

    /// The next line before `deadline`.
    async fn line(&mut self, what: &str, deadline: Instant) -> Result<String, ModemError> {
        loop {
            if let Some(l) = self.take_line() {
                return Ok(l);
            }
            let timeout = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(r) => r?,
                Err(_) => return Err(ModemError::Timeout(what.to_string(), timeout)),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ModemError> {
        let io = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.settings.command_timeout, io).await {
            Ok(r) => r.map_err(|e| ModemError::Io(e.to_string())),
            Err(_) => Err(ModemError::Timeout(
                "writing to the port".into(),
                self.settings.command_timeout,
            )),
        }
    }

    /// Reads the answer to `command` until its final result code: the information lines.
    async fn answer(
        &mut self,
        command: &str,
        deadline: Instant,
    ) -> Result<Vec<String>, ModemError> {
        let mut lines = Vec::new();
        loop {
            let l = self.line(command, deadline).await?;
            match at::final_code(&l) {
                Some(Final::Ok) => return Ok(lines),
                Some(Final::Error(error)) => {
                    return Err(ModemError::Command {
                        command: command.to_string(),
                        error,
                    })
                }
                None if l == command => {} // the echo, before ATE0
                None if self.pending.is_none() && at::urc(&l).is_none() => lines.push(l),
                None => {
                    self.take_unsolicited(&l);
                }
            }
        }
    }

    /// Sends `command` (without `\r`) and waits for its final result code.
    pub async fn command(&mut self, command: &str) -> Result<Vec<String>, ModemError> {
        let timeout = self.settings.command_timeout;
        self.command_within(command, timeout).await
    }

    async fn command_within(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ModemError> {
        tracing::trace!(command, "modem: sending");
        self.write(format!("{command}\r").as_bytes()).await?;
        self.answer(command, Instant::now() + timeout).await
    }

    /// `AT+CMGS`: the command, the `> ` prompt, the body and Ctrl-Z; the message reference.
    async fn submit(&mut self, command: &str, body: &str) -> Result<u8, ModemError> {
        let deadline = Instant::now() + self.settings.send_timeout;
        self.write(format!("{command}\r").as_bytes()).await?;
        // the prompt has no line end: look for it in the buffer itself
        loop {
            while let Some(p) = self.buf.iter().position(|&b| b != b'\r' && b != b'\n') {
                if self.buf[p] == b'>' {
                    self.buf.drain(..=p);
                    if self.buf.first() == Some(&b' ') {
                        self.buf.remove(0);
                    }
                    return self.submit_body(command, body, deadline).await;
                }
                // a complete line before the prompt: an echo, an unsolicited code, or an error
                let Some(end) = self.buf[p..].iter().position(|&b| b == b'\r' || b == b'\n') else {
                    break;
                };
                let line: Vec<u8> = self.buf.drain(..p + end + 1).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if let Some(Final::Error(error)) = at::final_code(&line) {
                    return Err(ModemError::Command {
                        command: command.into(),
                        error,
                    });
                }
                if line != command {
                    self.take_unsolicited(&line);
                }
            }
            let timeout = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(r) => r?,
                Err(_) => {
                    // leave the prompt state, or the next command becomes the message
                    let _ = self.io.write_all(&[0x1B]).await;
                    return Err(ModemError::Timeout(format!("{command} (prompt)"), timeout));
                }
            }
        }
    }

    async fn submit_body(
        &mut self,
        command: &str,
        body: &str,
        deadline: Instant,
    ) -> Result<u8, ModemError> {
        let mut bytes = body.as_bytes().to_vec();
        bytes.push(CTRL_Z);
        self.write(&bytes).await?;
        let lines = self.answer(command, deadline).await?;
        lines
            .iter()
            .find(|l| l.as_str() != body)
            .and_then(|l| l.strip_prefix("+CMGS:"))
            .and_then(|v| v.trim().parse::<u8>().ok())
            .ok_or_else(|| ModemError::Unexpected(command.into(), lines.join(" | ")))
    }

    /// Brings the modem up: attention, no echo, verbose errors, PIN, registration, signal,
    /// message format and new-message indications.
    pub async fn init(&mut self) -> Result<Status, ModemError> {
        self.buf.clear();
        self.pending = None;
        self.text_dcs = None;
        // A modem left in the CMGS prompt takes ESC; one just powered up may miss the first AT.
        self.write(&[0x1B, b'\r']).await?;
        let mut attention = Err(ModemError::Closed);
        for _ in 0..3 {
            attention = self.command_within("AT", Duration::from_secs(1)).await;
            if attention.is_ok() {
                break;
            }
        }
        attention?;
        self.command("ATE0").await?;
        // verbose errors are a nicety some modems lack
        if let Err(e) = self.command("AT+CMEE=2").await {
            tracing::debug!(error = %e, "modem: no verbose errors");
        }
        self.unlock().await?;
        let registration = self.wait_registration().await?;
        let signal = self.signal().await?;
        let mode = match self.settings.mode {
            Mode::Pdu => "AT+CMGF=0",
            Mode::Text => "AT+CMGF=1",
        };
        self.command(mode).await?;
        if self.settings.mode == Mode::Text {
            self.command("AT+CSCS=\"UCS2\"").await?;
        }
        // +CMTI for stored messages, +CDS for reports (or +CDSI where only storing is offered)
        let mut indications = Err(ModemError::Closed);
        for cnmi in [
            "AT+CNMI=2,1,0,1,0",
            "AT+CNMI=2,1,0,2,0",
            "AT+CNMI=1,1,0,0,0",
        ] {
            indications = self.command(cnmi).await;
            if indications.is_ok() {
                break;
            }
        }
        indications?;
        Ok(Status {
            registration,
            signal,
        })
    }

    /// Enters the PIN when the SIM asks for it; anything else it asks for (PUK) is an error.
    async fn unlock(&mut self) -> Result<(), ModemError> {
        let state = |lines: &[String]| {
            at::info(lines, "+CPIN:")
                .and_then(|p| p.into_iter().next())
                .unwrap_or_default()
        };
        let now = state(&self.command("AT+CPIN?").await?);
        match now.as_str() {
            "READY" => return Ok(()),
            "SIM PIN" => {}
            other => return Err(ModemError::Sim(format!("the SIM asks for {other:?}"))),
        }
        let pin = self.settings.pin.clone().ok_or_else(|| {
            ModemError::Sim("the SIM asks for its PIN and none is configured".into())
        })?;
        if pin.is_empty() || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ModemError::Sim("the configured PIN is not digits".into()));
        }
        // one attempt only: a wrong PIN tried again and again would block the SIM
        self.command(&format!("AT+CPIN=\"{pin}\""))
            .await
            .map_err(|e| ModemError::PinRefused(e.to_string()))?;
        let deadline = Instant::now() + self.settings.registration_timeout;
        loop {
            if state(&self.command("AT+CPIN?").await?) == "READY" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ModemError::Sim("not ready after the PIN".into()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The `+CREG` stat now.
    pub async fn registration(&mut self) -> Result<u8, ModemError> {
        let lines = self.command("AT+CREG?").await?;
        at::info(&lines, "+CREG:")
            .and_then(|p| p.get(1).and_then(|s| s.parse().ok()))
            .ok_or_else(|| ModemError::Unexpected("AT+CREG?".into(), lines.join(" | ")))
    }

    /// Polls `AT+CREG?` until home (1) or roaming (5), within `registration_timeout`.
    async fn wait_registration(&mut self) -> Result<u8, ModemError> {
        let deadline = Instant::now() + self.settings.registration_timeout;
        loop {
            let stat = self.registration().await?;
            match stat {
                1 | 5 => return Ok(stat),
                3 => return Err(ModemError::Registration("denied by the network".into())),
                _ if Instant::now() > deadline => {
                    return Err(ModemError::Registration(format!(
                        "not registered after {:?} (stat {stat})",
                        self.settings.registration_timeout
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `+CSQ` rssi (0..=31), `None` when unknown.
    pub async fn signal(&mut self) -> Result<Option<u8>, ModemError> {
        let lines = self.command("AT+CSQ").await?;
        let rssi = at::info(&lines, "+CSQ:")
            .and_then(|p| p.first().and_then(|s| s.parse::<u8>().ok()))
            .ok_or_else(|| ModemError::Unexpected("AT+CSQ".into(), lines.join(" | ")))?;
        Ok((rssi <= 31).then_some(rssi))
    }

    /// Sends `text` to `to` (concatenated in PDU mode when long): the message references.
    pub async fn send(&mut self, to: &str, text: &str) -> Result<Vec<u8>, ModemError> {
        pdu::encode_address(to)?;
        self.concat_reference = self.concat_reference.wrapping_add(1);
        let parts = text::split(text, self.concat_reference)?;
        let mut references = Vec::with_capacity(parts.len());
        for part in parts {
            let r = match self.settings.mode {
                Mode::Pdu => self.send_pdu(to, part).await?,
                Mode::Text => self.send_text(to, part).await?,
            };
            references.push(r);
        }
        Ok(references)
    }

    async fn send_pdu(&mut self, to: &str, part: text::Part) -> Result<u8, ModemError> {
        let submit = Submit {
            reference: 0,
            to: to.to_string(),
            status_report: self.settings.status_reports,
            validity: Some(self.settings.validity),
            data: UserData {
                coding: part.coding,
                concat: part.concat,
                text: part.text,
            },
        };
        let tpdu = pdu::encode_submit(&submit)?;
        // "00": the SIM's service centre
        let body = format!("00{}", pdu::hex(&tpdu));
        self.submit(&format!("AT+CMGS={}", tpdu.len()), &body).await
    }

    async fn send_text(&mut self, to: &str, part: text::Part) -> Result<u8, ModemError> {
        let dcs = part.coding.dcs();
        if self.text_dcs != Some(dcs) {
            let fo = if self.settings.status_reports { 49 } else { 17 };
            let validity = self.settings.validity;
            self.command(&format!("AT+CSMP={fo},{validity},0,{dcs}"))
                .await?;
            self.text_dcs = Some(dcs);
        }
        let toa = if to.starts_with('+') { 145 } else { 129 };
        let command = format!("AT+CMGS=\"{}\",{toa}", at::ucs2_hex(to));
        self.submit(&command, &at::ucs2_hex(&part.text)).await
    }

    /// The message stored at `index` (`None`: the slot is empty).
    pub async fn read(&mut self, index: u32) -> Result<Option<Incoming>, ModemError> {
        let command = format!("AT+CMGR={index}");
        let lines = self.command(&command).await?;
        let Some(head) = lines.iter().position(|l| l.starts_with("+CMGR:")) else {
            return Ok(None);
        };
        let p = at::params(lines[head].trim_start_matches("+CMGR:").trim());
        let body = lines.get(head + 1).map(String::as_str).unwrap_or("");
        self.stored(&p, body).map(Some)
    }

    /// A stored message from its header parameters (without the index) and body line.
    fn stored(&self, p: &[String], body: &str) -> Result<Incoming, ModemError> {
        match self.settings.mode {
            Mode::Pdu => {
                let bytes = pdu::unhex(body)?;
                let (_, tpdu) = pdu::split_sca(&bytes)?;
                Ok(pdu::decode_incoming(tpdu)?)
            }
            Mode::Text if p.len() >= 8 && p[1].parse::<u8>().is_ok() => {
                // a status report: <stat>,<fo>,<mr>,<ra>,<tora>,<scts>,<dt>,<st>
                report_from_text(&p[1..])
                    .map(Incoming::StatusReport)
                    .ok_or_else(|| ModemError::Unexpected("+CMGR".into(), p.join(",")))
            }
            Mode::Text => {
                // "REC UNREAD","<oa>",[alpha],"<scts>"
                let from = at::from_ucs2_hex(p.get(1).map(String::as_str).unwrap_or(""));
                let text = at::from_ucs2_hex(body);
                Ok(Incoming::Deliver(Deliver {
                    from,
                    timestamp: p.get(3).and_then(|s| parse_scts(s)).unwrap_or_default(),
                    status_report: false,
                    data: UserData {
                        coding: text::choose(&text),
                        concat: None,
                        text,
                    },
                }))
            }
        }
    }

    /// Every stored message with its index (`AT+CMGL`, all states).
    pub async fn list(&mut self) -> Result<Vec<(u32, Incoming)>, ModemError> {
        let command = match self.settings.mode {
            Mode::Pdu => "AT+CMGL=4",
            Mode::Text => "AT+CMGL=\"ALL\"",
        };
        let lines = self.command(command).await?;
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let Some(v) = l.strip_prefix("+CMGL:") else {
                continue;
            };
            let p = at::params(v.trim());
            let Some(index) = p.first().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let body = lines.get(i + 1).map(String::as_str).unwrap_or("");
            match self.stored(&p[1..], body) {
                Ok(m) => out.push((index, m)),
                Err(e) => tracing::warn!(index, error = %e, "modem: unreadable stored message"),
            }
        }
        Ok(out)
    }

    /// Deletes the message at `index`.
    pub async fn delete(&mut self, index: u32) -> Result<(), ModemError> {
        self.command(&format!("AT+CMGD={index}")).await.map(drop)
    }

    /// An unsolicited event already read, if any.
    pub fn take_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Waits for the modem to say something on its own; cancel-safe (for `select!`).
    pub async fn wait_event(&mut self) -> Result<(), ModemError> {
        loop {
            while let Some(l) = self.take_line() {
                if !self.take_unsolicited(&l) {
                    tracing::debug!(line = %l, "modem: unexpected line");
                }
            }
            if !self.events.is_empty() {
                return Ok(());
            }
            self.fill().await?;
        }
    }
}

fn decode_report(bytes: &[u8]) -> Result<StatusReport, PduError> {
    // with or without the service centre prefix, depending on the modem
    let tpdu = match pdu::split_sca(bytes) {
        Ok((_, t)) if matches!(pdu::decode_incoming(t), Ok(Incoming::StatusReport(_))) => t,
        _ => bytes,
    };
    match pdu::decode_incoming(tpdu)? {
        Incoming::StatusReport(r) => Ok(r),
        Incoming::Deliver(_) => Err(PduError::UnexpectedType(tpdu[0])),
    }
}

/// `+CDS: <fo>,<mr>,<ra>,<tora>,<scts>,<dt>,<st>` (text mode).
fn report_from_text(p: &[String]) -> Option<StatusReport> {
    Some(StatusReport {
        reference: p.get(1)?.parse().ok()?,
        recipient: at::from_ucs2_hex(p.get(2)?),
        timestamp: parse_scts(p.get(4)?).unwrap_or_default(),
        discharge: parse_scts(p.get(5)?).unwrap_or_default(),
        status: p.get(6)?.parse().ok()?,
    })
}

/// `yy/MM/dd,hh:mm:ss±zz` (text mode time stamps).
fn parse_scts(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |i: usize| s.get(i..i + 2)?.parse::<u8>().ok();
    let tz = n(18)? as i8;
    Some(Timestamp {
        year: n(0)?,
        month: n(3)?,
        day: n(6)?,
        hour: n(9)?,
        minute: n(12)?,
        second: n(15)?,
        tz_quarters: if b[17] == b'-' { -tz } else { tz },
    })
}

/// A time stamp as text mode writes it.
pub fn format_scts(t: &Timestamp) -> String {
    let sign = if t.tz_quarters < 0 { '-' } else { '+' };
    format!(
        "{:02}/{:02}/{:02},{:02}:{:02}:{:02}{sign}{:02}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.tz_quarters.unsigned_abs()
    )
}

/// The coding a text-mode DCS names (for the simulator).
pub fn text_coding(dcs: u8) -> Coding {
    Coding::from_dcs(dcs)
}

#[cfg(test)]
mod tests;
