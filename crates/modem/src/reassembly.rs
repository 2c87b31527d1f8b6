//! Concatenated messages put back together: parts keyed by sender, reference and count,
//! joined in sequence order once all have arrived. Incomplete messages are bounded in number
//! and age, so a sender who never finishes cannot grow the table.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::text::Concat;

/// Most incomplete messages kept; the oldest is dropped beyond.
const MAX_PENDING: usize = 64;
/// An incomplete message older than this is dropped.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

struct Pending {
    first_seen: Instant,
    parts: BTreeMap<u8, String>,
}

/// Parts waiting for their siblings.
#[derive(Default)]
pub struct Reassembly {
    pending: HashMap<(String, u16, u8), Pending>,
}

impl Reassembly {
    /// Adds one part (or a whole message when `concat` is `None`); the full text and its part
    /// count once complete. A part seen twice replaces the first.
    pub fn add(
        &mut self,
        peer: &str,
        concat: Option<Concat>,
        text: String,
    ) -> Option<(String, u8)> {
        let Some(c) = concat.filter(|c| c.total > 1) else {
            return Some((text, 1));
        };
        let now = Instant::now();
        self.pending
            .retain(|_, p| now.duration_since(p.first_seen) < MAX_AGE);
        let key = (peer.to_string(), c.reference, c.total);
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.first_seen)
                .map(|(k, _)| k.clone())
            {
                tracing::warn!(from = %oldest.0, "sms: incomplete concatenated message dropped");
                self.pending.remove(&oldest);
            }
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            first_seen: now,
            parts: BTreeMap::new(),
        });
        entry.parts.insert(c.seq, text);
        if entry.parts.len() < usize::from(c.total) {
            return None;
        }
        let done = self.pending.remove(&key)?;
        Some((done.parts.into_values().collect(), c.total))
    }

    /// Incomplete messages held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(seq: u8, total: u8) -> Option<Concat> {
        Some(Concat {
            reference: 5,
            total,
            seq,
        })
    }

    #[test]
    fn parts_join_in_order_whatever_their_arrival() {
        let mut r = Reassembly::default();
        assert_eq!(r.add("+1", part(3, 3), "c".into()), None);
        assert_eq!(r.add("+1", part(1, 3), "a".into()), None);
        assert_eq!(r.add("+2", part(2, 3), "x".into()), None); // another sender
        assert_eq!(r.add("+1", part(2, 3), "b".into()), Some(("abc".into(), 3)));
        assert_eq!(r.pending(), 1);
        assert_eq!(r.add("+1", None, "whole".into()), Some(("whole".into(), 1)));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut r = Reassembly::default();
        for i in 0..200u16 {
            let c = Concat {
                reference: i,
                total: 2,
                seq: 1,
            };
            r.add("+1", Some(c), "a".into());
        }
        assert_eq!(r.pending(), MAX_PENDING);
    }
}
