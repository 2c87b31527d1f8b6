//! Ironbridge's MQTT 3.1.1 / 5.0 broker core.
//!
//! # Layout
//! - [`Broker`] (this file): the handle the binary and other crates hold.
//! - `server`: accepts TCP clients; `connection`: one client's read/write loop;
//!   `connect`: the CONNECT handshake; `inbound`: packets from the client;
//!   `outbound`: messages to the client.
//! - `broker`: shared state: sessions, routing, wills, retained messages.
//! - `persistence`: the SQLite store and its group-commit writer; `restore`: loading it back.
//! - `session`: per-session queues and in-flight windows; `router`: the subscription tree;
//!   `retained`: retained messages; `message`: what is routed.
//! - [`hooks`]: authentication, authorisation and interception ([`hooks::StaticHooks`] by default).
//! - [`link`]: in-process clients; `sys`: `$SYS` statistics; `stats`: counters.
//!
//! Data flow: a connection decodes PUBLISH → hooks authorise and intercept → `Shared::route`
//! finds matching sessions in the router → each session's queue → its connection task moves
//! queued messages into its write buffer within the in-flight window and writes them.

mod broker;
pub mod config;
mod connect;
mod connection;
pub mod hooks;
mod inbound;
mod limits;
pub mod link;
pub mod message;
mod outbound;
mod persistence;
mod restore;
mod retained;
mod router;
mod server;
mod session;
mod signal;
mod stats;
mod sys;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::BrokerConfig;
pub use hooks::{Hooks, Identity, StaticHooks};
pub use link::Link;
pub use message::{Delivery, Message};
use persistence::BrokerStore;
pub use persistence::StoreError;
pub use stats::Stats;

/// A running broker's handle; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<broker::Shared>,
}

impl Broker {
    /// A broker with the given hooks.
    pub fn new(config: BrokerConfig, hooks: Arc<dyn Hooks>) -> Broker {
        Broker {
            shared: Arc::new(broker::Shared::new(config, hooks, None)),
        }
    }

    /// A broker whose retained messages and persistent sessions live in the SQLite file at
    /// `path`, restored from it now. Must be called inside a tokio runtime.
    pub fn open(
        config: BrokerConfig,
        hooks: Arc<dyn Hooks>,
        path: &std::path::Path,
    ) -> Result<Broker, StoreError> {
        let (store, loaded) = BrokerStore::open(path, config.persistence_fsync)?;
        let shared = Arc::new(broker::Shared::new(config, hooks, Some(store)));
        shared.restore(loaded);
        Ok(Broker { shared })
    }

    /// Commits pending writes and stops the store's writer (after the listeners have stopped).
    pub fn close(&self) {
        if let Some(store) = &self.shared.store {
            store.close();
        }
    }

    /// A broker with the default hooks built from its config.
    pub fn with_static_hooks(config: BrokerConfig) -> Broker {
        let hooks = Arc::new(StaticHooks::from_config(&config));
        Broker::new(config, hooks)
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.shared.config
    }

    /// Live counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Serves MQTT clients on `listener` until `shutdown` changes.
    pub async fn serve_tcp(&self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        server::run(self.shared.clone(), listener, shutdown).await
    }

    /// Serves one client over any byte stream (TLS, WebSocket adapters) until it goes away or
    /// [`Broker::shutdown_connections`] is called.
    pub async fn serve_stream<S>(
        &self,
        stream: S,
        peer: Option<std::net::SocketAddr>,
        cert_fingerprint: Option<String>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        connection::serve(self.shared.clone(), stream, peer, cert_fingerprint).await
    }

    /// Closes every client connection (v5: DISCONNECT "server shutting down"), without wills;
    /// clients that connect afterwards are closed as soon as their handshake is done.
    /// `serve_tcp` calls it when its shutdown signal fires.
    pub fn shutdown_connections(&self) {
        self.shared.shutdown_connections()
    }

    /// Publishes `$SYS` statistics until `shutdown` changes.
    pub async fn run_sys(&self, shutdown: watch::Receiver<bool>) {
        sys::run(self.shared.clone(), shutdown).await
    }

    /// Opens an in-process client with the given identity (namespace, rights).
    pub fn link(&self, client_id: &str, identity: Identity) -> Link {
        Link::open(self.shared.clone(), client_id, identity)
    }

    /// Publishes a message from outside any session.
    pub fn publish(&self, msg: Message) -> usize {
        self.shared.stats.message_received();
        self.shared.route(Arc::new(msg)).delivered
    }

    /// Closes a client's connection with `reason` (a deleted device, a revoked credential).
    pub fn disconnect_client(
        &self,
        namespace: &Arc<str>,
        client_id: &str,
        reason: mqtt_codec::ReasonCode,
    ) -> bool {
        self.shared.disconnect_client(namespace, client_id, reason)
    }

    /// Delivers a message to one client of `msg.namespace` if it subscribes to the topic
    /// (see `Shared::deliver_to`); returns whether it was queued.
    pub fn deliver_to(&self, client_id: &str, msg: Message) -> bool {
        self.shared.deliver_to(client_id, Arc::new(msg))
    }

    /// Like [`Broker::deliver_to`], also through any of the session's filters that start with
    /// `prefix` (for clients that subscribe more narrowly than the topics they expect).
    pub fn deliver_to_prefix(&self, client_id: &str, msg: Message, prefix: &str) -> bool {
        let topic = msg.topic.clone();
        self.shared
            .deliver_to_with(client_id, Arc::new(msg), |filter| {
                filter.starts_with(prefix) || mqtt_codec::topic::matches(filter, &topic)
            })
    }

    /// Number of sessions (connected or not).
    pub fn session_count(&self) -> usize {
        self.shared.sessions.lock().len()
    }
}
