//! Broker settings: the `[mqtt]` section of the config file, with Mosquitto's names.

use serde::Deserialize;

/// What to do when a session's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Drop the newest message (the one that did not fit), as Mosquitto does.
    #[default]
    DropNew,
    /// Drop the oldest queued message to make room.
    DropOldest,
    /// Disconnect the client (v5 reason 0x97 quota exceeded); for connected sessions only.
    Disconnect,
}

/// Which operations an ACL rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Subscribe,
    Publish,
    All,
}

/// One static ACL rule; the first rule whose filter matches decides.
#[derive(Debug, Clone, Deserialize)]
pub struct AclRule {
    /// Topic filter; `%u` is replaced by the user name and `%c` by the client id.
    pub filter: String,
    pub access: Access,
    pub allow: bool,
    /// Applies only to this user when set; `"$anonymous"` for clients without a user name.
    #[serde(default)]
    pub username: Option<String>,
}

/// A static user.
#[derive(Debug, Clone, Deserialize)]
pub struct UserEntry {
    pub username: String,
    /// Plain-text password (for development; prefer `password_hash`).
    #[serde(default)]
    pub password: Option<String>,
    /// Argon2 PHC string, e.g. `$argon2id$v=19$...`.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// The `[mqtt]` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub allow_anonymous: bool,
    /// Longest keep-alive granted; a v5 client asking for more (or for 0) is told this value.
    pub max_keepalive: u16,
    /// Largest packet accepted from clients, in bytes.
    pub max_packet_size: u32,
    /// How many QoS 1/2 publishes a client may have unacknowledged towards the broker.
    pub receive_maximum: u16,
    /// Inbound aliases accepted, and the most aliases the broker assigns outbound.
    pub topic_alias_maximum: u16,
    /// Outbound QoS 1/2 messages in flight per client (also capped by the client's receive maximum).
    pub max_inflight_messages: u16,
    /// Messages queued per session beyond the inflight window (0 = unlimited).
    pub max_queued_messages: usize,
    /// Bytes queued per session (0 = unlimited).
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_messages: bool,
    pub overflow_policy: OverflowPolicy,
    pub retain_available: bool,
    /// Seconds between `$SYS` updates (0 = off).
    pub sys_interval: u64,
    /// Expiry, in seconds, of 3.1.1 persistent sessions (0 = never).
    pub persistent_client_expiration: u64,
    /// Most clients connected at once (0 = unlimited).
    pub max_connections: usize,
    /// Connection attempts per second per source address (0 = unlimited).
    pub max_connection_rate: u32,
    /// PUBLISH packets per second per client (0 = unlimited); beyond it, DISCONNECT 0x96.
    pub max_publish_rate: u32,
    /// Longest topic name or filter in bytes (0 = only the protocol's 65535).
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter (0 = unlimited).
    pub max_topic_levels: usize,
    /// Most subscriptions per client (0 = unlimited).
    pub max_subscriptions: usize,
    /// Keep retained messages and persistent sessions on disk (`data_dir/mqtt.db`).
    pub persistence: bool,
    /// fsync every commit (survives power loss, not only process crashes); slower.
    pub persistence_fsync: bool,
    pub users: Vec<UserEntry>,
    pub acl: Vec<AclRule>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            allow_anonymous: false,
            max_keepalive: 65_535,
            max_packet_size: 268_435_455,
            receive_maximum: 65_535,
            topic_alias_maximum: 10,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            overflow_policy: OverflowPolicy::DropNew,
            retain_available: true,
            sys_interval: 10,
            persistent_client_expiration: 0,
            max_connections: 0,
            max_connection_rate: 0,
            max_publish_rate: 0,
            max_topic_length: 0,
            max_topic_levels: 128,
            max_subscriptions: 0,
            persistence: true,
            persistence_fsync: false,
            users: Vec::new(),
            acl: Vec::new(),
        }
    }
}
