//! Operational limits: connections, connect rate per source address, publish rate per client,
//! topic length and depth, subscriptions per client. Each hit is one named event that logs and
//! counts (`mqtt_limit_hits_total{limit=...}`); the caller answers with the protocol's reason code.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use mqtt_codec::ReasonCode;
use tokio::time::Instant;

use crate::config::BrokerConfig;

/// The limits a client can run into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxConnections,
    ConnectRate,
    PublishRate,
    TopicLength,
    TopicLevels,
    Subscriptions,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::ConnectRate => "connect_rate",
            Limit::PublishRate => "publish_rate",
            Limit::TopicLength => "max_topic_length",
            Limit::TopicLevels => "max_topic_levels",
            Limit::Subscriptions => "max_subscriptions",
        }
    }

    /// The v5 reason code for this limit.
    pub fn reason(self) -> ReasonCode {
        match self {
            Limit::MaxConnections | Limit::Subscriptions => ReasonCode::QUOTA_EXCEEDED,
            Limit::ConnectRate => ReasonCode::CONNECTION_RATE_EXCEEDED,
            Limit::PublishRate => ReasonCode::MESSAGE_RATE_TOO_HIGH,
            Limit::TopicLength | Limit::TopicLevels => ReasonCode::TOPIC_NAME_INVALID,
        }
    }
}

/// Logs and counts one limit hit.
pub fn hit(limit: Limit, client_id: &str, detail: &str) {
    tracing::warn!(limit = limit.name(), client_id, detail, "limit reached");
    metrics::counter!("mqtt_limit_hits_total", "limit" => limit.name()).increment(1);
}

/// Whether a topic name or filter is within the configured length and depth.
pub fn check_topic(config: &BrokerConfig, topic: &str) -> Result<(), Limit> {
    if config.max_topic_length > 0 && topic.len() > config.max_topic_length {
        return Err(Limit::TopicLength);
    }
    if config.max_topic_levels > 0 && topic.split('/').count() > config.max_topic_levels {
        return Err(Limit::TopicLevels);
    }
    Ok(())
}

/// Connection attempts per source address per second, with a burst of the same size.
pub struct ConnectRate {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl ConnectRate {
    /// A limiter for `per_second` connects per source (0 = unlimited).
    pub fn new(per_second: u32) -> ConnectRate {
        ConnectRate {
            limiter: NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n))),
        }
    }

    /// Whether `ip` may connect now.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let Some(l) = &self.limiter else { return true };
        let ok = l.check_key(&ip).is_ok();
        if l.len() > 10_000 {
            // Forget sources whose bucket is full again, so the map stays small.
            l.retain_recent();
        }
        ok
    }
}

/// A per-connection token bucket for publishes (no allocation, no lock).
#[derive(Debug, Clone, Copy)]
pub struct PublishRate {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl PublishRate {
    /// A bucket of `per_second` publishes per second with a burst of the same size; `None` when
    /// unlimited.
    pub fn new(per_second: u32) -> Option<PublishRate> {
        (per_second > 0).then(|| PublishRate {
            per_second: f64::from(per_second),
            tokens: f64::from(per_second),
            last: Instant::now(),
        })
    }

    /// Takes one token; false when the client publishes faster than allowed.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_limits() {
        let c = BrokerConfig {
            max_topic_length: 10,
            max_topic_levels: 3,
            ..BrokerConfig::default()
        };
        assert!(check_topic(&c, "a/b/c").is_ok());
        assert_eq!(check_topic(&c, "a/b/c/d"), Err(Limit::TopicLevels));
        assert_eq!(check_topic(&c, "abcdefghijk"), Err(Limit::TopicLength));
    }

    #[test]
    fn connect_rate_per_source() {
        let r = ConnectRate::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(r.allow(a) && r.allow(a));
        assert!(!r.allow(a));
        assert!(r.allow(b));
        assert!(ConnectRate::new(0).allow(a));
    }

    #[tokio::test(start_paused = true)]
    async fn publish_rate_refills() {
        let mut r = PublishRate::new(2).unwrap();
        assert!(r.take() && r.take());
        assert!(!r.take());
        tokio::time::advance(std::time::Duration::from_millis(600)).await;
        assert!(r.take());
        assert!(PublishRate::new(0).is_none());
    }
}
