//! End-to-end credit (`--backlog`): a publisher never has more than `backlog` messages that it
//! has sent but the subscriber has not yet seen.
//!
//! Without it an open-loop QoS 0 publisher fills socket buffers and broker queues with hundreds
//! of megabytes, and "sent" and "lost" stop meaning anything. Subscribers report the highest
//! sequence number they have seen (from the payload stamp); a publisher out of credit sleeps on
//! a `Notify` until enough has been seen, with hysteresis so that it wakes once per half window
//! rather than once per message.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;

/// Whose progress limits a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditMode {
    /// Fan-in: each publisher against the (one) subscriber's progress on its own messages.
    PerPublisher,
    /// Fan-out: the one publisher against the slowest subscriber.
    SlowestSubscriber,
}

struct Waiter {
    /// Progress at which the publisher wants waking; `u64::MAX` when it is not waiting.
    wake_at: AtomicU64,
    notify: Notify,
}

/// Shared credit state of one run.
pub struct Credit {
    mode: CreditMode,
    backlog: u64,
    /// Messages seen (highest seq + 1): per publisher, or per subscriber for fan-out.
    seen: Vec<AtomicU64>,
    /// One per publisher.
    waiters: Vec<Waiter>,
}

impl Credit {
    /// Credit for `publishers` publishers and `subscribers` subscribers.
    pub fn new(mode: CreditMode, backlog: u64, publishers: usize, subscribers: usize) -> Credit {
        let slots = match mode {
            CreditMode::PerPublisher => publishers,
            CreditMode::SlowestSubscriber => subscribers,
        };
        Credit {
            mode,
            backlog,
            seen: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            waiters: (0..publishers)
                .map(|_| Waiter {
                    wake_at: AtomicU64::new(u64::MAX),
                    notify: Notify::new(),
                })
                .collect(),
        }
    }

    fn seen(&self, publisher: usize) -> u64 {
        match self.mode {
            CreditMode::PerPublisher => self.seen.get(publisher).map_or(0, |s| s.load(Relaxed)),
            CreditMode::SlowestSubscriber => {
                self.seen.iter().map(|s| s.load(Relaxed)).min().unwrap_or(0)
            }
        }
    }

    /// Messages `publisher` may send now, having sent `sent` so far.
    pub fn available(&self, publisher: usize, sent: u64) -> u64 {
        (self.seen(publisher) + self.backlog).saturating_sub(sent)
    }

    /// Subscriber `subscriber` has seen message `seq` of publisher `publisher`.
    pub fn observe(&self, subscriber: usize, publisher: usize, seq: u64) {
        let (slot, waiter) = match self.mode {
            CreditMode::PerPublisher => (publisher, publisher),
            CreditMode::SlowestSubscriber => (subscriber, 0),
        };
        let Some(seen) = self.seen.get(slot) else {
            return;
        };
        let now = seq + 1;
        if seen.fetch_max(now, Relaxed) >= now {
            return;
        }
        if let Some(w) = self.waiters.get(waiter) {
            if now >= w.wake_at.load(Relaxed) {
                w.wake_at.store(u64::MAX, Relaxed);
                w.notify.notify_one();
            }
        }
    }

    /// Returns once `publisher` (having sent `sent`) may send `want` more messages, or half
    /// the backlog if that is more (hysteresis). The caller races this against the end of the run.
    pub async fn wait(&self, publisher: usize, sent: u64, want: u64) {
        let want = want.max(self.backlog / 2).min(self.backlog);
        let target = (sent + want).saturating_sub(self.backlog);
        let Some(w) = self.waiters.get(publisher) else {
            return;
        };
        while self.seen(publisher) < target {
            w.wake_at.store(target, Relaxed);
            // Re-check after publishing the target, so a subscriber that just passed it is not
            // missed; a stale permit only costs one extra loop.
            if self.seen(publisher) >= target {
                break;
            }
            // Fan-out wakes on any subscriber's progress, and a timeout guards against stalls.
            let _ = tokio::time::timeout(Duration::from_millis(50), w.notify.notified()).await;
        }
        w.wake_at.store(u64::MAX, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_in_credit_follows_each_publisher() {
        let c = Credit::new(CreditMode::PerPublisher, 100, 2, 1);
        assert_eq!(c.available(0, 0), 100);
        assert_eq!(c.available(0, 100), 0);
        c.observe(0, 0, 49);
        assert_eq!(c.available(0, 100), 50);
        assert_eq!(c.available(1, 100), 0);
        c.observe(0, 0, 10); // older message: no step back
        assert_eq!(c.available(0, 100), 50);
    }

    #[test]
    fn fan_out_credit_follows_the_slowest_subscriber() {
        let c = Credit::new(CreditMode::SlowestSubscriber, 10, 1, 3);
        c.observe(0, 0, 9);
        c.observe(1, 0, 9);
        assert_eq!(c.available(0, 10), 0);
        c.observe(2, 0, 4);
        assert_eq!(c.available(0, 10), 5);
    }

    #[tokio::test]
    async fn waiting_publisher_is_woken_by_progress() {
        let c = std::sync::Arc::new(Credit::new(CreditMode::PerPublisher, 100, 1, 1));
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.wait(0, 100, 50).await });
        tokio::task::yield_now().await;
        c.observe(0, 0, 60);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(c.available(0, 100) >= 50);
    }
}
