//! Notification actions: `email` (SMTP through lettre, async on tokio) and `sms` (behind the
//! [`SmsSender`] trait: an email-to-SMS gateway, or a GSM modem on the server, `modem_sms.rs`). Owns the `[notify]` config section
//! (`[notify.smtp]`, `[notify.sms]`), building the senders from it, the default texts, and the
//! checks the rule model uses at save time (addresses, E.164 numbers).
//!
//! Without a configured sender an action fails with a clear reason ("no [notify.smtp]
//! configured"), which the runner records on the rule like any other failed action.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::Value;

use super::actions::{render, ActionHandler, BoxFuture};
use super::engine::{Job, Phase};
use super::model::Action;
use crate::error::{CoreError, Result};

/// The reason an `email` action fails without `[notify.smtp]`.
pub const NO_SMTP: &str = "no [notify.smtp] configured";
/// The reason an `sms` action fails without `[notify.sms]`.
pub const NO_SMS: &str = "no [notify.sms] configured";
/// Most recipients one email action may name.
pub const MAX_RECIPIENTS: usize = 50;

/// The `[notify]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// The mail server for `email` actions (and the email-to-SMS gateway).
    pub smtp: Option<SmtpConfig>,
    /// How `sms` actions are sent.
    pub sms: Option<SmsConfig>,
}

/// How to reach the mail server (`[notify.smtp]`). Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "smtp_port")]
    pub port: u16,
    /// The sender, `"ironbridge@example.com"` or `"Ironbridge <ironbridge@example.com>"`.
    pub from: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Default: `starttls` when a username is set (credentials never travel in clear), else `none`.
    #[serde(default)]
    pub tls: Option<SmtpTls>,
    /// Limit for connecting and for each SMTP command.
    #[serde(default = "smtp_timeout_s")]
    pub timeout_s: u64,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

fn smtp_port() -> u16 {
    25
}

fn smtp_timeout_s() -> u64 {
    30
}

/// Transport security towards the mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (a relay on the same host or network).
    None,
    /// Plain connection upgraded with STARTTLS, required (submission, port 587).
    Starttls,
    /// TLS from the first byte (submissions, port 465).
    Tls,
}

impl SmtpConfig {
    /// The TLS mode in force (the explicit one, or the default).
    pub fn tls_mode(&self) -> SmtpTls {
        match (self.tls, &self.username) {
            (Some(t), _) => t,
            (None, Some(_)) => SmtpTls::Starttls,
            (None, None) => SmtpTls::None,
        }
    }
}

/// How `sms` actions are sent (`[notify.sms]`, chosen by `via`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case", deny_unknown_fields)]
pub enum SmsConfig {
    /// An email-to-SMS gateway: mail to `<digits>@domain` through `[notify.smtp]`.
    Email {
        domain: String,
        /// The mail's subject (some gateways put it before the text).
        #[serde(default)]
        subject: String,
    },
    /// A GSM modem on one of the server's serial ports (AT commands, the `modem` crate).
    Modem {
        port: std::path::PathBuf,
        #[serde(default = "modem_baud")]
        baud: u32,
        /// The SIM's PIN, entered once when the SIM asks for it.
        #[serde(default)]
        pin: Option<String>,
        /// `pdu` (default) or `text`.
        #[serde(default = "modem_mode")]
        mode: String,
        /// Ask for delivery reports (logged).
        #[serde(default = "yes")]
        status_reports: bool,
        /// A command's answer; a modem silent for longer is reopened.
        #[serde(default = "modem_timeout_s")]
        timeout_s: u64,
        /// Most concatenated parts per message; longer texts are cut.
        #[serde(default = "modem_max_parts")]
        max_parts: u8,
    },
}

fn modem_baud() -> u32 {
    115_200
}
fn modem_mode() -> String {
    "pdu".into()
}
fn yes() -> bool {
    true
}
fn modem_timeout_s() -> u64 {
    5
}
fn modem_max_parts() -> u8 {
    4
}

/// The senders built from [`NotifyConfig`]; `None` where nothing is configured.
#[derive(Clone, Default)]
pub struct Notifications {
    pub mailer: Option<Arc<Mailer>>,
    pub sms: Option<Arc<dyn SmsSender>>,
}

impl NotifyConfig {
    /// Builds the senders; a bad address, host or combination is an error here, at start-up.
    /// A modem (`via = "modem"`) starts being driven here (inside the runtime).
    pub fn build(&self) -> Result<Notifications> {
        self.make(true)
    }

    /// The checks of [`NotifyConfig::build`] without starting anything (config loading).
    pub fn check(&self) -> Result<()> {
        self.make(false).map(drop)
    }

    fn make(&self, start: bool) -> Result<Notifications> {
        let mailer = self
            .smtp
            .as_ref()
            .map(Mailer::new)
            .transpose()?
            .map(Arc::new);
        let sms: Option<Arc<dyn SmsSender>> = match &self.sms {
            None => None,
            Some(SmsConfig::Email { domain, subject }) => {
                let mailer = mailer.clone().ok_or_else(|| {
                    CoreError::Invalid("[notify.sms] via = \"email\" needs [notify.smtp]".into())
                })?;
                Some(Arc::new(EmailToSms::new(mailer, domain, subject)?))
            }
            Some(SmsConfig::Modem {
                port,
                baud,
                pin,
                mode,
                status_reports,
                timeout_s,
                max_parts,
            }) => {
                let c = ModemSmsConfig {
                    port: port.clone(),
                    baud: *baud,
                    pin: pin.clone(),
                    mode: mode.clone(),
                    status_reports: *status_reports,
                    timeout_s: *timeout_s,
                    max_parts: *max_parts,
                };
                if !start {
                    modem_sms::settings(&c)?;
                    return Ok(Notifications { mailer, sms: None });
                }
                Some(Arc::new(ModemSms::start(&c)?))
            }
        };
        Ok(Notifications { mailer, sms })
    }
}

/// Sends mail through one SMTP server (a new connection per mail: notifications are rare).
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// A mailer for `[notify.smtp]`.
    pub fn new(c: &SmtpConfig) -> Result<Mailer> {
        let bad = |m: String| CoreError::Invalid(format!("[notify.smtp] {m}"));
        if c.host.trim().is_empty() {
            return Err(bad("host is empty".into()));
        }
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|e| bad(format!("from {:?}: {e}", c.from)))?;
        let params = || {
            TlsParameters::new(c.host.clone()).map_err(|e| bad(format!("tls for {}: {e}", c.host)))
        };
        let tls = match c.tls_mode() {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.as_str())
            .port(c.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(c.timeout_s.clamp(1, 600))));
        match (&c.username, &c.password) {
            (Some(u), p) => {
                let p = p.clone().unwrap_or_default();
                builder = builder.credentials(Credentials::new(u.clone(), p));
            }
            (None, Some(_)) => return Err(bad("password without username".into())),
            (None, None) => {}
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Sends one plain-text mail; transient failures are retried twice (0.5 s, 1 s apart).
    pub async fn send(
        &self,
        to: &[Mailbox],
        subject: &str,
        body: &str,
    ) -> std::result::Result<(), String> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(one_line(subject));
        for m in to {
            message = message.to(m.clone());
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| format!("building the mail: {e}"))?;
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=3 {
            match self.transport.send(message.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_permanent() || attempt == 3 => return Err(format!("smtp: {e}")),
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        Err("smtp: no attempt made".into())
    }
}

/// A header value on one line (device names and values come from devices).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Sends a text message: an email-to-SMS gateway, a GSM modem (SMPP accounts later).
pub trait SmsSender: Send + Sync {
    /// Sends `text` to `to`, an E.164 number (`+` and digits, checked when the rule was saved).
    fn send<'a>(
        &'a self,
        to: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;
}

/// An email-to-SMS gateway: the text as the body of a mail to `<digits>@domain`.
pub struct EmailToSms {
    mailer: Arc<Mailer>,
    domain: String,
    subject: String,
}

impl EmailToSms {
    /// A gateway at `domain` sending through `mailer`.
    pub fn new(mailer: Arc<Mailer>, domain: &str, subject: &str) -> Result<EmailToSms> {
        let domain = domain.trim().to_string();
        if domain.is_empty() || format!("1@{domain}").parse::<Address>().is_err() {
            return Err(CoreError::Invalid(format!(
                "[notify.sms] domain {domain:?} is not a mail domain"
            )));
        }
        Ok(EmailToSms {
            mailer,
            domain,
            subject: subject.to_string(),
        })
    }

    /// The gateway address of a number: its digits at the domain.
    pub fn address(&self, number: &str) -> std::result::Result<Mailbox, String> {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        format!("{digits}@{}", self.domain)
            .parse::<Mailbox>()
            .map_err(|e| format!("gateway address for {number}: {e}"))
    }
}

impl SmsSender for EmailToSms {
    fn send<'a>(
        &'a self,
        to: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let rcpt = self.address(to)?;
            let (fitted, cut) = fit_sms(text);
            if cut {
                let (chars, kept) = (text.chars().count(), fitted.chars().count());
                tracing::warn!(to, chars, kept, "sms text truncated to fit one message");
            }
            self.mailer.send(&[rcpt], &self.subject, &fitted).await
        })
    }
}

/// GSM 03.38 basic alphabet (one septet each).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
    ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table (escape + one septet: two each).
const GSM_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Cuts `text` to what one SMS holds: 160 GSM 7-bit characters (those of the extension table
/// count twice), or 70 UCS-2 units when a character is outside the GSM alphabet. Returns the
/// text and whether it was cut.
pub fn fit_sms(text: &str) -> (String, bool) {
    let gsm = text
        .chars()
        .all(|c| GSM_BASIC.contains(c) || GSM_EXTENSION.contains(c));
    let (limit, cost): (usize, fn(char) -> usize) = if gsm {
        (160, |c| if GSM_EXTENSION.contains(c) { 2 } else { 1 })
    } else {
        (70, char::len_utf16)
    };
    let mut used = 0;
    let mut out = String::new();
    for c in text.chars() {
        used += cost(c);
        if used > limit {
            return (out, true);
        }
        out.push(c);
    }
    (out, false)
}

/// Whether `number` is E.164: `+`, then 7 to 15 digits, the first not 0.
pub fn valid_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Whether `addr` is a mail address (`ops@example.com` or `Ops <ops@example.com>`).
pub fn valid_email(addr: &str) -> bool {
    addr.parse::<Mailbox>().is_ok()
}

/// "Rule <name> fired on <device>" (or "cleared on").
pub fn default_subject(job: &Job) -> String {
    let what = if job.phase == Phase::Fire {
        "fired"
    } else {
        "cleared"
    };
    format!(
        "Rule {} {what} on {}",
        job.rule.rule.spec.name, job.device.name
    )
}

/// The subject line, then the time and the values the condition saw, one per line.
pub fn default_body(job: &Job) -> String {
    let at = u64::try_from(job.ts)
        .ok()
        .map(|ms| humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)))
        .map(|t| t.to_string())
        .unwrap_or_else(|| job.ts.to_string());
    let mut body = format!(
        "{}.\n\nDevice: {} ({})\nTime: {at}\n",
        default_subject(job),
        job.device.name,
        job.device.id
    );
    if !job.values.is_empty() {
        body.push_str("\nValues:\n");
        for (k, v) in &job.values {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            body.push_str(&format!("  {k} = {v}\n"));
        }
    }
    body
}

/// Counts a notification handed to a server (`rule_notifications_total{kind}`).
fn sent(kind: &'static str) {
    metrics::counter!("rule_notifications_total", "kind" => kind).increment(1);
}

/// The `email` action.
pub struct EmailAction(pub Option<Arc<Mailer>>);

impl ActionHandler for EmailAction {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let Action::Email { to, subject, body } = action else {
                return Err("not an email action".into());
            };
            let mailer = self.0.as_ref().ok_or(NO_SMTP)?;
            let to = to
                .iter()
                .map(|a| {
                    a.parse::<Mailbox>()
                        .map_err(|e| format!("recipient {a:?}: {e}"))
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let subject = match subject {
                Some(t) => render(t, job),
                None => default_subject(job),
            };
            let body = match body {
                Some(t) => render(t, job),
                None => default_body(job),
            };
            mailer.send(&to, &subject, &body).await?;
            sent("email");
            Ok(())
        })
    }
}

/// The `sms` action.
pub struct SmsAction(pub Option<Arc<dyn SmsSender>>);

impl ActionHandler for SmsAction {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let Action::Sms { to, text } = action else {
                return Err("not an sms action".into());
            };
            let sender = self.0.as_ref().ok_or(NO_SMS)?;
            let text = match text {
                Some(t) => render(t, job),
                None => default_subject(job),
            };
            sender.send(to, &text).await?;
            sent("sms");
            Ok(())
        })
    }
}

pub mod modem_sms;
pub use modem_sms::{ModemSms, ModemSmsConfig};

#[cfg(test)]
mod tests;
