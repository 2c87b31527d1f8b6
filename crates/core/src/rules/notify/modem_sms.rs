//! `[notify.sms] via = "modem"`: the platform sends `sms` actions through a GSM modem on one
//! of its own serial ports (the `modem` crate's service: opened at start, reopened after
//! failures), so rules can text people from a single machine without an SMS gateway.

use std::path::PathBuf;
use std::time::Duration;

use modem::service::{self, ModemEvent, ModemHandle};
use modem::{Mode, Settings};

use super::SmsSender;
use crate::error::{CoreError, Result};
use crate::rules::actions::BoxFuture;

/// The modem's settings in `[notify.sms]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemSmsConfig {
    pub port: PathBuf,
    pub baud: u32,
    pub pin: Option<String>,
    /// `pdu` or `text`.
    pub mode: String,
    pub status_reports: bool,
    pub timeout_s: u64,
    /// Most parts one message may take; longer texts are cut to fit.
    pub max_parts: u8,
}

/// Sends through a modem driven by this process.
pub struct ModemSms {
    handle: ModemHandle,
    max_parts: u8,
}

impl ModemSms {
    /// Starts the modem task (inside the tokio runtime) and a task logging what it receives.
    pub fn start(c: &ModemSmsConfig) -> Result<ModemSms> {
        let settings = settings(c)?;
        tokio::runtime::Handle::try_current().map_err(|_| {
            CoreError::Invalid(
                "[notify.sms] via = \"modem\" starts inside the server's runtime".into(),
            )
        })?;
        let (handle, mut events) = service::spawn(
            "notify".into(),
            service::serial(c.port.clone(), c.baud),
            settings,
            Duration::from_secs(60),
        );
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                match e {
                    ModemEvent::Received(m) => tracing::info!(from = %m.from, parts = m.parts,
                        "sms received by the platform's modem (not handled: commands go to an edge)"),
                    ModemEvent::Report(r) => tracing::info!(reference = r.reference,
                        to = %r.recipient, delivered = ?r.delivered(), "sms delivery report"),
                }
            }
        });
        Ok(ModemSms::new(handle, c.max_parts))
    }

    /// A sender through an already running modem.
    pub fn new(handle: ModemHandle, max_parts: u8) -> ModemSms {
        ModemSms { handle, max_parts }
    }
}

/// `text` cut to what `max_parts` concatenated parts hold; whether it was cut.
pub fn fit_parts(text: &str, max_parts: u8) -> (String, bool) {
    match modem::text::split(text, 0) {
        Ok(parts) if parts.len() <= usize::from(max_parts) => (text.to_string(), false),
        Ok(parts) => (
            parts
                .iter()
                .take(usize::from(max_parts))
                .map(|p| p.text.as_str())
                .collect(),
            true,
        ),
        // beyond 255 parts: cut by characters first, then fit
        Err(_) => fit_parts(&text.chars().take(255 * 67).collect::<String>(), max_parts),
    }
}

/// The driver's settings for `c`, checked.
pub fn settings(c: &ModemSmsConfig) -> Result<Settings> {
    let bad = |m: String| CoreError::Invalid(format!("[notify.sms] {m}"));
    let mode = match c.mode.as_str() {
        "pdu" => Mode::Pdu,
        "text" => Mode::Text,
        other => return Err(bad(format!("mode {other:?}: pdu or text"))),
    };
    if c.pin
        .as_deref()
        .is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("pin: must be digits".into()));
    }
    if c.max_parts == 0 {
        return Err(bad("max_parts: at least 1".into()));
    }
    let timeout = Duration::from_secs(c.timeout_s.clamp(1, 600));
    Ok(Settings {
        pin: c.pin.clone(),
        mode,
        status_reports: c.status_reports,
        command_timeout: timeout,
        send_timeout: timeout.max(Duration::from_secs(60)),
        ..Settings::default()
    })
}

impl SmsSender for ModemSms {
    fn send<'a>(
        &'a self,
        to: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let (fitted, cut) = fit_parts(text, self.max_parts);
            if cut {
                let max_parts = self.max_parts;
                tracing::warn!(to, max_parts, "sms text cut to fit max_parts messages");
            }
            self.handle
                .send(to, &fitted)
                .await
                .map(drop)
                .map_err(|e| format!("modem: {e}"))
        })
    }
}
