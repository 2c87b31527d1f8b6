//! In-process links: publish and subscribe without a socket (rule engine, dashboard stream,
//! tests). A link is a session like any other; it takes its messages straight off the queue.

use std::sync::Arc;

use bytes::Bytes;
use mqtt_codec::{topic, QoS, SubOptions};

use crate::broker::Shared;
use crate::hooks::Identity;
use crate::message::{Delivery, Message};
use crate::session::{Kick, SessionHandle};

/// Why a link operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error("invalid topic filter {0:?}")]
    InvalidFilter(String),
    #[error("not authorised")]
    NotAuthorized,
}

/// An in-process client of the broker.
pub struct Link {
    shared: Arc<Shared>,
    session: Arc<SessionHandle>,
    identity: Identity,
    gen: u64,
}

impl Link {
    pub(crate) fn open(shared: Arc<Shared>, client_id: &str, identity: Identity) -> Link {
        let kick = Arc::new(Kick::default());
        let opened = shared.open_session(&identity.namespace, &Arc::from(client_id), true, 0, kick);
        Link {
            shared,
            session: opened.session,
            identity,
            gen: opened.gen,
        }
    }

    /// Publishes a message as this link.
    pub fn publish(
        &self,
        topic_name: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<usize, LinkError> {
        if !topic::valid_topic_name(topic_name) {
            return Err(LinkError::InvalidTopic(topic_name.to_string()));
        }
        if !self
            .shared
            .hooks
            .authorize_publish(&self.identity, &self.session.client_id, topic_name)
        {
            return Err(LinkError::NotAuthorized);
        }
        let mut msg = Message::new(
            self.identity.namespace.clone(),
            Arc::from(topic_name),
            payload.into(),
            qos,
            retain,
        );
        msg.origin = self.session.id;
        Ok(self.publish_message(msg))
    }

    /// Publishes a prepared message (properties, expiry) in this link's namespace.
    pub fn publish_message(&self, mut msg: Message) -> usize {
        msg.namespace = self.identity.namespace.clone();
        self.shared.stats.message_received();
        self.shared.route(Arc::new(msg)).delivered
    }

    /// Subscribes to a filter (shared filters allowed).
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), LinkError> {
        let valid = match topic::parse_shared(filter) {
            Some(r) => r.is_ok(),
            None => topic::valid_filter(filter),
        };
        if !valid {
            return Err(LinkError::InvalidFilter(filter.to_string()));
        }
        if !self
            .shared
            .hooks
            .authorize_subscribe(&self.identity, &self.session.client_id, filter)
        {
            return Err(LinkError::NotAuthorized);
        }
        let options = SubOptions {
            qos,
            ..SubOptions::default()
        };
        self.shared.subscribe(&self.session, filter, options, None);
        Ok(())
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, filter: &str) -> bool {
        self.shared.unsubscribe(&self.session, filter).0
    }

    /// Waits for the next message delivered to this link.
    pub async fn recv(&self) -> Delivery {
        loop {
            if let Some(d) = self.try_recv() {
                return d;
            }
            self.session.notify.wait().await;
        }
    }

    /// The next delivered message, if one is waiting.
    pub fn try_recv(&self) -> Option<Delivery> {
        self.session.state.lock().pop()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.connection_closed(&self.session, self.gen, None);
    }
}
