//! Retained messages: the last retained message per topic, per namespace.

use std::collections::HashMap;
use std::sync::Arc;

use mqtt_codec::topic;
use tokio::time::Instant;

use crate::message::Message;

/// The retained message store.
#[derive(Default)]
pub struct RetainedMessages {
    spaces: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Message>>>,
    count: usize,
}

impl RetainedMessages {
    /// Stores `msg` as its topic's retained message, or clears it when the payload is empty.
    pub fn set(&mut self, msg: Arc<Message>) {
        let space = self.spaces.entry(msg.namespace.clone()).or_default();
        if msg.payload.is_empty() {
            if space.remove(&msg.topic).is_some() {
                self.count -= 1;
            }
        } else if space.insert(msg.topic.clone(), msg).is_none() {
            self.count += 1;
        }
    }

    /// Retained messages matching `filter`, dropping expired ones on the way.
    pub fn matching(&mut self, namespace: &str, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let Some(space) = self.spaces.get_mut(namespace) else {
            return Vec::new();
        };
        let before = space.len();
        space.retain(|_, m| !m.expired(now));
        self.count -= before - space.len();
        if !topic::has_wildcard(filter) {
            return space.get(filter).cloned().into_iter().collect();
        }
        space
            .values()
            .filter(|m| topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Number of retained messages.
    pub fn count(&self) -> usize {
        self.count
    }
}
