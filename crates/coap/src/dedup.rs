//! Duplicate detection (RFC 7252 4.5): a CON request seen again within the exchange lifetime is
//! answered with the response it got, not processed twice; a NON duplicate is dropped. Bounded:
//! the oldest entries go first when the table is full.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// EXCHANGE_LIFETIME with the default transmission parameters.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

/// What was seen of one (peer, message id).
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Being processed, or a NON: drop the duplicate.
    Pending,
    /// Answered with these bytes: send them again.
    Answered(Vec<u8>),
}

/// Recently seen message ids.
pub struct Dedup {
    map: HashMap<(SocketAddr, u16), Seen>,
    order: VecDeque<(Instant, SocketAddr, u16)>,
    capacity: usize,
}

impl Dedup {
    /// A table holding at most `capacity` exchanges.
    pub fn new(capacity: usize) -> Dedup {
        Dedup {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Records a new message; returns what was seen before if it is a duplicate.
    pub fn check(&mut self, now: Instant, peer: SocketAddr, mid: u16) -> Option<Seen> {
        self.expire(now);
        if let Some(seen) = self.map.get(&(peer, mid)) {
            return Some(seen.clone());
        }
        if self.map.len() >= self.capacity {
            if let Some((_, p, m)) = self.order.pop_front() {
                self.map.remove(&(p, m));
            }
        }
        self.map.insert((peer, mid), Seen::Pending);
        self.order.push_back((now, peer, mid));
        None
    }

    /// Keeps the response sent for a message.
    pub fn answered(&mut self, peer: SocketAddr, mid: u16, bytes: Vec<u8>) {
        if let Some(seen) = self.map.get_mut(&(peer, mid)) {
            *seen = Seen::Answered(bytes);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, p, m)) = self.order.front().copied() {
            if now.duration_since(t) < EXCHANGE_LIFETIME {
                break;
            }
            self.order.pop_front();
            self.map.remove(&(p, m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_recognised_until_they_expire() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut d = Dedup::new(2);
        let t = Instant::now();
        assert_eq!(d.check(t, peer, 1), None);
        d.answered(peer, 1, vec![9]);
        assert_eq!(d.check(t, peer, 1), Some(Seen::Answered(vec![9])));
        assert_eq!(d.check(t + EXCHANGE_LIFETIME, peer, 1), None);
    }

    #[test]
    fn bounded() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut d = Dedup::new(2);
        let t = Instant::now();
        for mid in 0..5 {
            d.check(t, peer, mid);
        }
        assert!(d.map.len() <= 2);
        assert_eq!(d.check(t, peer, 0), None, "the oldest was evicted");
    }
}
