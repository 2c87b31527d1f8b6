//! What the clients of one run share: the [`Timeline`] (go, window, end, hard deadline), the
//! [`Counters`], the end-to-end [`credit::Credit`], the stop signal and the latency histogram.
//!
//! - `credit`: end-to-end credit (`--backlog`).
//! - `procfs`: clock, CPU seconds and RSS from /proc, open-files limit.
//! - `progress`: the one-line-per-second report on stderr.

pub mod credit;
pub mod procfs;
pub mod progress;

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::cli::TimingArgs;
use credit::Credit;

/// Latencies are recorded in nanoseconds up to a minute.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// The phases of a run, fixed when traffic starts.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// Publishers start.
    pub go: Instant,
    /// The measured window opens (after the warmup).
    pub measure: Instant,
    /// Publishers stop; the drain begins.
    pub end: Instant,
    /// The drain ends at the latest.
    pub drain_deadline: Instant,
    /// Every client gives up.
    pub hard: Instant,
    /// The measured window in [`procfs::mono_ns`] time: latency counts messages sent inside it.
    pub window_ns: (u64, u64),
}

impl Timeline {
    /// A timeline starting in 50 ms (time for the tasks to be spawned).
    pub fn starting_now(t: &TimingArgs) -> Timeline {
        let lead = Duration::from_millis(50);
        let now = Instant::now();
        let go = now + lead;
        let measure = go + Duration::from_secs_f64(t.warmup);
        let end = measure + Duration::from_secs_f64(t.duration);
        let drain_deadline = end + Duration::from_secs_f64(t.drain_max);
        let hard = drain_deadline + Duration::from_secs(5);
        let ns_at = |i: Instant| procfs::mono_ns() + (i - now).as_nanos() as u64;
        Timeline {
            go,
            measure,
            end,
            drain_deadline,
            hard,
            window_ns: (ns_at(measure), ns_at(end)),
        }
    }
}

/// Counters every client adds to.
#[derive(Default)]
pub struct Counters {
    /// PUBLISH written.
    pub sent: AtomicU64,
    /// PUBLISH received by subscribers.
    pub received: AtomicU64,
    /// QoS 1 PUBACK / QoS 2 PUBCOMP received by publishers.
    pub acked: AtomicU64,
    /// Stamped messages received again or out of order (sequence not above the last seen).
    pub duplicates: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Publishers that have stopped sending and have nothing unacknowledged.
    pub publishers_done: AtomicU64,
    /// Client errors (the last one is kept).
    pub errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    /// Counts an error and keeps its message.
    pub fn error(&self, e: impl Display) {
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// The last error's message.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// The state one run's clients share.
pub struct Run {
    pub timeline: Timeline,
    pub counters: Counters,
    /// End-to-end credit, when the scenario has its own subscribers.
    pub credit: Option<Credit>,
    /// Latencies of messages sent inside the window (merged by each subscriber as it ends).
    pub latency: Mutex<Histogram<u64>>,
    stop: watch::Sender<bool>,
    phase: Mutex<&'static str>,
}

impl Run {
    /// A run with this timeline and credit.
    pub fn new(timeline: Timeline, credit: Option<Credit>) -> Run {
        Run {
            timeline,
            counters: Counters::default(),
            credit,
            latency: Mutex::new(new_histogram()),
            stop: watch::channel(false).0,
            phase: Mutex::new("connecting"),
        }
    }

    /// Names what the run is doing now (shown in progress lines).
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// What the run is doing now.
    pub fn phase(&self) -> &'static str {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every client to disconnect.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A receiver for [`Run::stopped`].
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Adds a client's latencies to the run's.
    pub fn merge_latency(&self, h: &Histogram<u64>) {
        let mut all = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let _ = all.add(h);
    }
}

/// Resolves once the run is stopped.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
