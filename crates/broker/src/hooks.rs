//! The hook trait: authentication, authorisation per publish and subscribe, and message
//! interception. The device registry plugs in here; [`StaticHooks`] is the built-in default
//! (anonymous access and a static user list with ACL rules from config).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use mqtt_codec::{topic, ReasonCode};

use crate::config::{Access, AclRule, BrokerConfig};
use crate::message::Message;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a client presented in CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectRequest<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a Bytes>,
    /// Peer address, for logs and rate limits.
    pub peer: Option<std::net::SocketAddr>,
    /// Certificate fingerprint (SHA-256, hex) when the client authenticated with TLS.
    pub cert_fingerprint: Option<&'a str>,
    /// The verified client certificate's subject Common Name. The connection only knows the
    /// fingerprint; the binary's TLS layer fills this in (it wraps the hooks), so hooks below
    /// it see both.
    pub cert_common_name: Option<&'a str>,
    /// Whether the client speaks MQTT 5 (refusals can then be told apart more finely).
    pub v5: bool,
}

thread_local! {
    /// The default namespace, shared rather than allocated per connection.
    static DEFAULT_NAMESPACE: Arc<str> = Arc::from("");
}

/// Who a connection is, decided once at CONNECT.
#[derive(Clone)]
pub struct Identity {
    pub username: Option<Arc<str>>,
    /// The topic space: clients in different namespaces never see each other's topics or
    /// sessions. Empty for the default space.
    pub namespace: Arc<str>,
    /// Bypasses authorisation (broker-internal links).
    pub superuser: bool,
    /// Anything the authenticator wants to keep for later hooks (a device id, a tenant).
    pub data: Option<Arc<dyn Any + Send + Sync>>,
}

impl Identity {
    /// An identity in the default namespace.
    pub fn new(username: Option<&str>) -> Identity {
        Identity {
            username: username.map(Arc::from),
            namespace: DEFAULT_NAMESPACE.with(|n| n.clone()),
            superuser: false,
            data: None,
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("username", &self.username)
            .field("namespace", &self.namespace)
            .field("superuser", &self.superuser)
            .finish()
    }
}

/// The outcome of deferred interception work: done (acknowledge), or refused with a reason
/// code and string.
pub type Deferred = BoxFuture<'static, Result<(), (ReasonCode, Option<String>)>>;

/// What an interceptor decides about a published message.
pub enum Intercept {
    /// Route the message to subscribers.
    Continue,
    /// Acknowledge it but do not route it (the hook consumed it).
    Consume,
    /// Refuse it with this reason code and an optional reason string (v5 PUBACK/PUBREC;
    /// 3.1.1 has no negative acknowledgement: acked and dropped).
    Reject(ReasonCode, Option<String>),
    /// Consume it, but acknowledge only once this resolves (the message is being stored): a
    /// QoS 1/2 acknowledgement waits, in order with the client's other acknowledgements. A
    /// failure is the v5 reason code; a 3.1.1 client, which has no negative acknowledgement,
    /// is disconnected instead, so that it sends the message again.
    Defer(Deferred),
}

/// Authentication, authorisation and interception, called by every connection.
pub trait Hooks: Send + Sync + 'static {
    /// Decides whether a client may connect, and as whom. An error is the CONNACK reason code.
    fn authenticate<'a>(
        &'a self,
        req: ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Identity, ReasonCode>>;

    /// Whether `id` may publish to `topic` (called for every PUBLISH; keep it cheap).
    fn authorize_publish(&self, id: &Identity, client_id: &str, topic: &str) -> bool;

    /// Whether `id` may subscribe to `filter`.
    fn authorize_subscribe(&self, id: &Identity, client_id: &str, filter: &str) -> bool;

    /// Sees every authorised message before routing.
    fn intercept(&self, _id: &Identity, _client_id: &str, _msg: &Message) -> Intercept {
        Intercept::Continue
    }

    /// A client connected (after CONNACK success).
    fn on_connected(&self, _id: &Identity, _client_id: &str) {}

    /// A subscription is in place (its SUBACK not yet written): messages delivered now follow
    /// the SUBACK.
    fn on_subscribed(&self, _id: &Identity, _client_id: &str, _filter: &str) {}

    /// The client acknowledged a QoS 1/2 message (PUBACK, PUBCOMP).
    fn on_delivered(&self, _id: &Identity, _client_id: &str, _msg: &Message) {}

    /// A client's connection ended.
    fn on_disconnected(&self, _id: &Identity, _client_id: &str) {}
}

/// The default hooks: anonymous access if allowed, static users, static ACL rules.
pub struct StaticHooks {
    allow_anonymous: bool,
    users: Vec<(String, PasswordCheck)>,
    acl: Vec<AclRule>,
}

enum PasswordCheck {
    Plain(String),
    Hash(String),
}

impl StaticHooks {
    /// Builds the hooks from the `[mqtt]` config.
    pub fn from_config(config: &BrokerConfig) -> StaticHooks {
        let users = config
            .users
            .iter()
            .filter_map(|u| {
                let check = match (&u.password_hash, &u.password) {
                    (Some(h), _) => PasswordCheck::Hash(h.clone()),
                    (None, Some(p)) => PasswordCheck::Plain(p.clone()),
                    (None, None) => {
                        tracing::warn!(user = %u.username, "user without password ignored");
                        return None;
                    }
                };
                Some((u.username.clone(), check))
            })
            .collect();
        StaticHooks {
            allow_anonymous: config.allow_anonymous,
            users,
            acl: config.acl.clone(),
        }
    }

    fn check_acl(
        &self,
        id: &Identity,
        client_id: &str,
        topic_or_filter: &str,
        publish: bool,
    ) -> bool {
        if id.superuser {
            return true;
        }
        let user = id.username.as_deref();
        for rule in &self.acl {
            match (rule.access, publish) {
                (Access::All, _) | (Access::Publish, true) | (Access::Subscribe, false) => {}
                _ => continue,
            }
            if let Some(u) = &rule.username {
                let applies = match user {
                    Some(name) => u == name,
                    None => u == "$anonymous",
                };
                if !applies {
                    continue;
                }
            }
            // Checked on every PUBLISH: build a substituted filter only for rules that need one.
            let filter: std::borrow::Cow<str> = if rule.filter.contains('%') {
                rule.filter
                    .replace("%u", user.unwrap_or(""))
                    .replace("%c", client_id)
                    .into()
            } else {
                rule.filter.as_str().into()
            };
            let hit = if publish {
                topic::matches(&filter, topic_or_filter)
            } else {
                filter_covers(&filter, topic_or_filter)
            };
            if hit {
                return rule.allow;
            }
        }
        true
    }
}

/// Whether every topic matched by `inner` is also matched by `outer` (for subscribe ACLs).
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    let inner = match topic::parse_shared(inner) {
        Some(Ok((_, f))) => f,
        _ => inner,
    };
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (Some("+"), Some("+")) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Hooks for StaticHooks {
    fn authenticate<'a>(
        &'a self,
        req: ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Identity, ReasonCode>> {
        Box::pin(async move {
            let Some(username) = req.username else {
                return if self.allow_anonymous {
                    Ok(Identity::new(None))
                } else {
                    Err(ReasonCode::NOT_AUTHORIZED)
                };
            };
            let Some((_, check)) = self.users.iter().find(|(u, _)| u == username) else {
                // Without a user list, a user name is only a label when anonymous access is on.
                return if self.allow_anonymous && self.users.is_empty() {
                    Ok(Identity::new(Some(username)))
                } else {
                    Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
                };
            };
            let password = req.password.map(|p| p.as_ref()).unwrap_or_default();
            let ok = match check {
                PasswordCheck::Plain(p) => constant_time_eq(p.as_bytes(), password),
                PasswordCheck::Hash(h) => {
                    let (h, password) = (h.clone(), password.to_vec());
                    tokio::task::spawn_blocking(move || verify_argon2(&h, &password))
                        .await
                        .unwrap_or(false)
                }
            };
            if ok {
                Ok(Identity::new(Some(username)))
            } else {
                Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            }
        })
    }

    fn authorize_publish(&self, id: &Identity, client_id: &str, topic: &str) -> bool {
        self.acl.is_empty() || self.check_acl(id, client_id, topic, true)
    }

    fn authorize_subscribe(&self, id: &Identity, client_id: &str, filter: &str) -> bool {
        self.acl.is_empty() || self.check_acl(id, client_id, filter, false)
    }
}

fn verify_argon2(hash: &str, password: &[u8]) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "invalid password hash in config");
            false
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers() {
        assert!(filter_covers("a/#", "a/b/+"));
        assert!(filter_covers("a/+", "a/b"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(filter_covers("#", "$share/g/x"));
        assert!(filter_covers("a/+", "a/+"));
    }
}
