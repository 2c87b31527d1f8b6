//! [`Signal`]: wakes one task, polled without a future. Every connection waits on two of them
//! (its session's queue and its kick), so they are a flag and a waker slot rather than tokio's
//! `Notify`, whose `Notified` future would have to live in every idle connection's task.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// A wake-up for one waiting task. Like `Notify::notify_one`, a signal sent while nobody waits
/// is kept until the next poll.
#[derive(Default)]
pub struct Signal {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Wakes the waiting task (or the next one to poll).
    pub fn notify(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready (and consumed) when a signal was sent since the last time it was ready; otherwise
    /// registers the task to be woken.
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A signal sent between the check and the registration found no waker: check again.
        match self.set.swap(false, Ordering::AcqRel) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Waits for the next signal.
    pub async fn wait(&self) {
        poll_fn(|cx| self.poll(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_signal_sent_before_the_wait_is_kept() {
        let s = Signal::default();
        s.notify();
        s.wait().await;
        // Consumed: the next wait waits.
        let waiting = tokio::time::timeout(std::time::Duration::ZERO, s.wait()).await;
        assert!(waiting.is_err());
    }

    #[tokio::test]
    async fn a_signal_wakes_a_waiting_task() {
        let s = Arc::new(Signal::default());
        let t = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        tokio::task::yield_now().await;
        s.notify();
        t.await.unwrap();
    }
}
