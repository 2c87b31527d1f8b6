//! The modem kept running: a task that opens the port, initialises the modem, reads what is
//! already stored, then sends what it is asked to and reads what arrives, checking signal and
//! registration every `check_interval`. When the modem stops answering (a command times out,
//! the port fails) it is reopened and re-initialised with exponential backoff; it never ends on
//! a modem error. [`ModemHandle`] is the cheap, cloneable way in; [`ModemEvent`]s come out.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::driver::{Event, Modem, ModemError, Settings};
use crate::pdu::{Incoming, StatusReport, Timestamp};
use crate::reassembly::Reassembly;

/// A byte stream a modem can be driven over.
pub trait Port: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Port for T {}

/// Opens the modem's port (again after a failure).
pub type Opener = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Port>>> + Send>> + Send + Sync,
>;

/// An opener for a serial port (8N1, no flow control).
pub fn serial(path: std::path::PathBuf, baud: u32) -> Opener {
    Arc::new(move || {
        let path = path.clone();
        Box::pin(async move {
            let builder = tokio_serial::new(path.to_string_lossy(), baud);
            let port = tokio_serial::SerialStream::open(&builder)
                .map_err(|e| std::io::Error::other(format!("opening {}: {e}", path.display())))?;
            Ok(Box::new(port) as Box<dyn Port>)
        })
    })
}

/// The first wait before reopening; doubled after each failure up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest a [`ModemHandle::send`] waits for the modem, queueing included.
const SEND_DEADLINE: Duration = Duration::from_secs(180);

/// The modem's health, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct ModemStats {
    pub connected: AtomicBool,
    /// `+CREG` stat (1 home, 5 roaming); −1 unknown.
    pub registration: AtomicI64,
    /// `+CSQ` rssi 0..=31; −1 unknown.
    pub signal: AtomicI64,
    /// Messages sent (each counted once, whatever its parts).
    pub sent: AtomicU64,
    /// Whole messages received (after reassembly).
    pub received: AtomicU64,
    /// Sends that failed.
    pub failed: AtomicU64,
    /// Delivery reports saying delivered, and saying failed.
    pub delivered: AtomicU64,
    pub undelivered: AtomicU64,
    /// Sessions (re)established.
    pub connects: AtomicU64,
    /// Failures of the modem or its port.
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl ModemStats {
    fn error(&self, e: &ModemError) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let message = e.to_string();
        let new = last.as_deref() != Some(message.as_str());
        *last = Some(message);
        new
    }

    /// The last failure's message, if the modem is not working now.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A whole message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: String,
    pub text: String,
    pub timestamp: Timestamp,
    pub parts: u8,
}

/// A message handed to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Each part's TP-MR (delivery reports name them).
    pub references: Vec<u8>,
}

/// What the modem reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModemEvent {
    Received(Received),
    /// A delivery report for the part sent with `reference`.
    Report(StatusReport),
}

struct Request {
    to: String,
    text: String,
    reply: oneshot::Sender<Result<Sent, ModemError>>,
}

/// Sends through the running modem; clones share it. The modem task ends when every handle
/// is dropped.
#[derive(Clone)]
pub struct ModemHandle {
    tx: mpsc::Sender<Request>,
    pub stats: Arc<ModemStats>,
}

impl ModemHandle {
    /// Sends `text` to `to` (E.164 or national digits); long texts go concatenated.
    pub async fn send(&self, to: &str, text: &str) -> Result<Sent, ModemError> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            to: to.to_string(),
            text: text.to_string(),
            reply,
        };
        let result = tokio::time::timeout(SEND_DEADLINE, async {
            self.tx
                .send(request)
                .await
                .map_err(|_| ModemError::NotReady("the modem task has stopped".into()))?;
            rx.await
                .map_err(|_| ModemError::NotReady("the modem task has stopped".into()))?
        })
        .await
        .unwrap_or_else(|_| Err(ModemError::Timeout("sending".into(), SEND_DEADLINE)));
        let counter = match &result {
            Ok(_) => &self.stats.sent,
            Err(_) => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// Starts the modem task: the handle to send with, and the events it reports (incoming
/// messages, delivery reports; dropped when nobody reads them fast enough).
pub fn spawn(
    name: String,
    opener: Opener,
    settings: Settings,
    check_interval: Duration,
) -> (ModemHandle, mpsc::Receiver<ModemEvent>) {
    let (handle, task, events) = prepare(name, opener, settings, check_interval);
    tokio::spawn(task.run());
    (handle, events)
}

/// The modem task not started yet (for callers without a runtime at hand): its handle, the
/// task to run, and its events.
pub fn prepare(
    name: String,
    opener: Opener,
    settings: Settings,
    check_interval: Duration,
) -> (ModemHandle, ModemTask, mpsc::Receiver<ModemEvent>) {
    let (tx, rx) = mpsc::channel(16);
    let (events_tx, events_rx) = mpsc::channel(256);
    let stats = Arc::new(ModemStats {
        registration: AtomicI64::new(-1),
        signal: AtomicI64::new(-1),
        ..ModemStats::default()
    });
    let task = Task {
        name,
        opener,
        settings,
        check_interval,
        stats: stats.clone(),
        events: events_tx,
        reassembly: Reassembly::default(),
        pin_refused: None,
    };
    (
        ModemHandle { tx, stats },
        ModemTask { task, requests: rx },
        events_rx,
    )
}

/// A prepared modem task.
pub struct ModemTask {
    task: Task,
    requests: mpsc::Receiver<Request>,
}

impl ModemTask {
    /// Runs until every [`ModemHandle`] is dropped.
    pub async fn run(self) {
        self.task.run(self.requests).await
    }
}

struct Task {
    name: String,
    opener: Opener,
    settings: Settings,
    check_interval: Duration,
    stats: Arc<ModemStats>,
    events: mpsc::Sender<ModemEvent>,
    reassembly: Reassembly,
    /// Why the SIM refused the PIN, once it has: the PIN is not entered again.
    pin_refused: Option<String>,
}

/// How a session ended.
enum End {
    /// Every handle was dropped.
    Stop,
    Failed(ModemError),
}

impl Task {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut backoff = BACKOFF_START;
        // requests that arrived while the modem was down, with when they arrived
        let mut waiting: VecDeque<(Instant, Request)> = VecDeque::new();
        loop {
            let end = match self.open().await {
                Ok(mut modem) => {
                    backoff = BACKOFF_START;
                    self.session(&mut modem, &mut requests, &mut waiting).await
                }
                Err(e) => End::Failed(e),
            };
            self.stats.connected.store(false, Ordering::Relaxed);
            let e = match end {
                End::Stop => return,
                End::Failed(e) => e,
            };
            if self.stats.error(&e) {
                tracing::warn!(modem = %self.name, error = %e, retry_in = ?backoff, "modem unavailable");
            }
            // meanwhile requests wait up to `hold` for the modem to return, then fail
            let hold = self.settings.hold;
            let wake = Instant::now() + backoff;
            loop {
                while waiting.front().is_some_and(|(t, _)| t.elapsed() >= hold) {
                    if let Some((_, r)) = waiting.pop_front() {
                        let _ = r.reply.send(Err(ModemError::NotReady(e.to_string())));
                    }
                }
                let expiry = waiting.front().map_or(wake, |(t, _)| (*t + hold).min(wake));
                tokio::select! {
                    _ = tokio::time::sleep_until(expiry) => if Instant::now() >= wake { break },
                    r = requests.recv() => match r {
                        None => return,
                        Some(r) => waiting.push_back((Instant::now(), r)),
                    }
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn open(&mut self) -> Result<Modem<Box<dyn Port>>, ModemError> {
        let port = (self.opener)()
            .await
            .map_err(|e| ModemError::Io(e.to_string()))?;
        let mut modem = Modem::new(port, self.settings.clone());
        let status = match modem.init().await {
            Err(ModemError::PinRefused(e)) => {
                // reopening must not try it again: the SIM blocks after three wrong PINs
                self.settings.pin = None;
                self.pin_refused = Some(e.clone());
                return Err(ModemError::PinRefused(e));
            }
            Err(ModemError::Sim(_)) if self.pin_refused.is_some() => {
                let e = self.pin_refused.clone().unwrap_or_default();
                return Err(ModemError::PinRefused(e));
            }
            other => other?,
        };
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        self.stats
            .registration
            .store(i64::from(status.registration), Ordering::Relaxed);
        self.stats
            .signal
            .store(status.signal.map_or(-1, i64::from), Ordering::Relaxed);
        self.stats.connected.store(true, Ordering::Relaxed);
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        tracing::info!(modem = %self.name, registration = status.registration,
            signal = ?status.signal, "modem ready");
        Ok(modem)
    }

    async fn session(
        &mut self,
        modem: &mut Modem<Box<dyn Port>>,
        requests: &mut mpsc::Receiver<Request>,
        waiting: &mut VecDeque<(Instant, Request)>,
    ) -> End {
        // what arrived while nobody was listening
        match modem.list().await {
            Ok(stored) => {
                for (index, message) in stored {
                    self.incoming(message);
                    if let Err(e) = modem.delete(index).await {
                        if e.is_link() {
                            return End::Failed(e);
                        }
                    }
                }
            }
            Err(e) if e.is_link() => return End::Failed(e),
            Err(e) => {
                tracing::warn!(modem = %self.name, error = %e, "modem: listing stored messages")
            }
        }
        while let Some((_, r)) = waiting.pop_front() {
            if let Some(e) = self.send(modem, r).await {
                return End::Failed(e);
            }
        }
        let mut check = tokio::time::interval_at(
            tokio::time::Instant::now() + self.check_interval,
            self.check_interval,
        );
        loop {
            while let Some(event) = modem.take_event() {
                if let Err(e) = self.event(modem, event).await {
                    return End::Failed(e);
                }
            }
            tokio::select! {
                r = requests.recv() => {
                    let Some(r) = r else { return End::Stop };
                    if let Some(e) = self.send(modem, r).await {
                        return End::Failed(e);
                    }
                }
                r = modem.wait_event() => {
                    if let Err(e) = r {
                        return End::Failed(e);
                    }
                }
                _ = check.tick() => {
                    let checked = async {
                        let signal = modem.signal().await?;
                        let registration = modem.registration().await?;
                        Ok::<_, ModemError>((signal, registration))
                    };
                    match checked.await {
                        Ok((signal, registration)) => {
                            self.stats.signal.store(signal.map_or(-1, i64::from), Ordering::Relaxed);
                            self.stats.registration.store(i64::from(registration), Ordering::Relaxed);
                        }
                        Err(e) if e.is_link() => return End::Failed(e),
                        Err(e) => tracing::debug!(modem = %self.name, error = %e, "modem check"),
                    }
                }
            }
        }
    }

    /// Sends one request and answers it; the error when the link failed.
    async fn send(&self, modem: &mut Modem<Box<dyn Port>>, r: Request) -> Option<ModemError> {
        let result = modem.send(&r.to, &r.text).await;
        let link = result.as_ref().err().filter(|e| e.is_link()).cloned();
        if let Err(e) = &result {
            tracing::warn!(modem = %self.name, to = %r.to, error = %e, "sms not sent");
        }
        let _ = r.reply.send(result.map(|references| Sent { references }));
        link
    }

    /// Handles one unsolicited event; `Err` only when the link failed.
    async fn event(
        &mut self,
        modem: &mut Modem<Box<dyn Port>>,
        event: Event,
    ) -> Result<(), ModemError> {
        match event {
            Event::Stored(index) | Event::ReportStored(index) => {
                match modem.read(index).await {
                    Ok(Some(m)) => self.incoming(m),
                    Ok(None) => return Ok(()),
                    Err(e) if e.is_link() => return Err(e),
                    Err(e) => {
                        tracing::warn!(modem = %self.name, index, error = %e, "modem: unreadable message")
                    }
                }
                match modem.delete(index).await {
                    Err(e) if e.is_link() => return Err(e),
                    Err(e) => {
                        tracing::warn!(modem = %self.name, index, error = %e, "modem: delete")
                    }
                    Ok(()) => {}
                }
            }
            Event::Report(r) => self.incoming(Incoming::StatusReport(r)),
            Event::Direct(d) => self.incoming(Incoming::Deliver(d)),
        }
        Ok(())
    }

    fn incoming(&mut self, m: Incoming) {
        let event = match m {
            Incoming::Deliver(d) => {
                let Some((text, parts)) = self.reassembly.add(&d.from, d.data.concat, d.data.text)
                else {
                    return;
                };
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                tracing::info!(modem = %self.name, from = %d.from, parts, "sms received");
                ModemEvent::Received(Received {
                    from: d.from,
                    text,
                    timestamp: d.timestamp,
                    parts,
                })
            }
            Incoming::StatusReport(r) => {
                match r.delivered() {
                    Some(true) => self.stats.delivered.fetch_add(1, Ordering::Relaxed),
                    Some(false) => self.stats.undelivered.fetch_add(1, Ordering::Relaxed),
                    None => 0,
                };
                tracing::debug!(modem = %self.name, reference = r.reference, status = r.status, "sms status report");
                ModemEvent::Report(r)
            }
        };
        if self.events.try_send(event).is_err() {
            tracing::debug!(modem = %self.name, "modem event not read; dropped");
        }
    }
}

#[cfg(test)]
mod tests;
