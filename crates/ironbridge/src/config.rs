//! The root configuration: the TOML file, overlaid by environment and flags
//! (flag > env > file > default). Each component gets its own section.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use broker::BrokerConfig;
use ib_core::rules::notify::NotifyConfig;
use serde::Deserialize;

use crate::cli::ServeArgs;
use crate::tls::TlsConfig;

/// The MQTT-over-TLS address used when `[tls]` has a certificate but no `mqtts` address is given.
pub const DEFAULT_MQTTS: &str = "0.0.0.0:8883";

/// Listener addresses (`[listeners]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    pub mqtt: SocketAddr,
    /// MQTT over TLS; defaults to [`DEFAULT_MQTTS`] when `[tls]` is configured.
    pub mqtts: Option<SocketAddr>,
    pub http: SocketAddr,
    /// HTTPS (for `wss://`), off unless set; uses the `[tls]` certificate.
    pub https: Option<SocketAddr>,
    pub coap: SocketAddr,
    pub ws_path: String,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            mqtt: "0.0.0.0:1883".parse().expect("valid"),
            mqtts: None,
            https: None,
            http: "0.0.0.0:8080".parse().expect("valid"),
            coap: "0.0.0.0:5683".parse().expect("valid"),
            ws_path: "/mqtt".into(),
        }
    }
}

/// Telemetry storage (`[storage]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Seal recent points into compressed chunks at least this often (seconds).
    pub seal_interval_s: u64,
    /// ... or once this many points are waiting.
    pub seal_points: usize,
    /// fsync every commit (survives power loss, not only process crashes).
    pub fsync: bool,
    /// Points older than this many days are refused.
    pub max_past_days: u32,
    /// Points this many seconds ahead of the platform's clock are refused.
    pub max_future_s: u32,
    /// Below this many MiB free in the data dir, new telemetry is refused (0: never).
    pub min_free_mb: u64,
    /// Read the free bytes from this file instead of the file system (to test the guard).
    pub free_bytes_file: Option<PathBuf>,
    /// Seconds between retention passes.
    pub retention_check_s: u64,
    /// `postgres://user:password@host:port/db`: telemetry in PostgreSQL (scale-out) instead of
    /// the data dir's SQLite files.
    pub url: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            seal_interval_s: 60,
            seal_points: 2_000_000,
            fsync: false,
            max_past_days: 3660,
            max_future_s: 86_400,
            min_free_mb: 64,
            free_bytes_file: None,
            retention_check_s: 600,
            url: None,
        }
    }
}

impl StorageConfig {
    /// The platform's settings from this section.
    pub fn platform(
        &self,
        data_dir: &Path,
        session: ib_core::SessionLimits,
    ) -> ib_core::PlatformConfig {
        ib_core::PlatformConfig {
            session,
            ingest: ib_core::IngestLimits {
                max_past_ms: i64::from(self.max_past_days) * 86_400_000,
                max_future_ms: i64::from(self.max_future_s) * 1000,
            },
            store: store::sqlite::SqliteConfig {
                seal_every: std::time::Duration::from_secs(self.seal_interval_s.max(1)),
                seal_points: self.seal_points.max(1),
                fsync: self.fsync,
            },
            store_url: self.url.clone(),
            policy: ib_core::StoragePolicy {
                data_dir: data_dir.to_path_buf(),
                min_free_bytes: self.min_free_mb.saturating_mul(1 << 20),
                free_bytes_file: self.free_bytes_file.clone(),
                retention_every: std::time::Duration::from_secs(self.retention_check_s.max(1)),
            },
        }
    }
}

/// The management API (`[api]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Access token lifetime.
    pub access_token_ttl_s: u64,
    /// Refresh token (login session) lifetime.
    pub refresh_token_ttl_s: u64,
    /// Failed logins allowed per account before a lockout.
    pub login_max_failures: u32,
    /// Failed logins allowed per source address before a lockout.
    pub login_max_failures_per_source: u32,
    /// How long a lockout lasts (one more attempt is allowed after it).
    pub login_lockout_s: u64,
    /// Audit records older than this are deleted.
    pub audit_retention_days: u32,
    /// Origins allowed to call the API from a browser (CORS); empty: none (same origin only).
    /// `["*"]` allows any origin (without credentials).
    pub cors_origins: Vec<String>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            access_token_ttl_s: 900,
            refresh_token_ttl_s: 7 * 86_400,
            login_max_failures: 5,
            login_max_failures_per_source: 20,
            login_lockout_s: 60,
            audit_retention_days: 90,
            cors_origins: Vec::new(),
        }
    }
}

impl ApiSection {
    /// The api crate's settings.
    pub fn api_config(&self) -> api::ApiConfig {
        api::ApiConfig {
            tokens: api::auth::TokenConfig {
                access_ttl_s: self.access_token_ttl_s.clamp(1, 86_400) as i64,
                refresh_ttl_s: self.refresh_token_ttl_s.clamp(1, 365 * 86_400) as i64,
            },
            login: api::login::LoginLimits {
                account_failures: self.login_max_failures.max(1),
                source_failures: self.login_max_failures_per_source.max(1),
                lockout: std::time::Duration::from_secs(self.login_lockout_s.max(1)),
            },
        }
    }
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listeners: Listeners,
    pub mqtt: BrokerConfig,
    pub tls: TlsConfig,
    pub storage: StorageConfig,
    pub api: ApiSection,
    /// Rule notifications: `[notify.smtp]` (email) and `[notify.sms]`.
    pub notify: NotifyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listeners: Listeners::default(),
            mqtt: BrokerConfig::default(),
            tls: TlsConfig::default(),
            storage: StorageConfig::default(),
            api: ApiSection::default(),
            notify: NotifyConfig::default(),
        }
    }
}

impl Config {
    /// Reads the file named by the flags (if any) and applies the flags over it.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
        let mut config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(d) = &args.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(a) = args.mqtt {
            config.listeners.mqtt = a;
        }
        if let Some(a) = args.mqtts {
            config.listeners.mqtts = Some(a);
        }
        if let Some(a) = args.http {
            config.listeners.http = a;
        }
        if let Some(a) = args.coap {
            config.listeners.coap = a;
        }
        if let Some(p) = &args.ws_path {
            config.listeners.ws_path = p.clone();
        }
        if args.allow_anonymous {
            config.mqtt.allow_anonymous = true;
        }
        let ws_path = &config.listeners.ws_path;
        if !ws_path.starts_with('/') || ["/healthz", "/metrics"].contains(&ws_path.as_str()) {
            anyhow::bail!("ws_path {ws_path:?}: must start with / and not be /healthz or /metrics");
        }
        config.tls.validate()?;
        // Checked here to refuse a bad [notify] before anything starts (built by serve).
        config.notify.check()?;
        if config.tls.is_configured() {
            if config.listeners.mqtts.is_none() {
                config.listeners.mqtts = Some(DEFAULT_MQTTS.parse().expect("valid"));
            }
        } else if config.listeners.mqtts.is_some() || config.listeners.https.is_some() {
            anyhow::bail!(
                "the mqtts and https listeners need a certificate: set [tls] cert and key"
            );
        }
        Ok(config)
    }

    /// Parses a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("ib-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "data_dir = \"/tmp/x\"\n[listeners]\nmqtt = \"127.0.0.1:1\"\n[mqtt]\nmax_keepalive = 30\n[[mqtt.acl]]\nfilter = \"a/#\"\naccess = \"all\"\nallow = false\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            mqtt: Some("127.0.0.1:2".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listeners.mqtt.port(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.mqtt.max_keepalive, 30);
        assert_eq!(c.mqtt.acl.len(), 1);
        assert!(!c.mqtt.allow_anonymous);
    }

    #[test]
    fn tls_turns_on_mqtts_at_8883_unless_given() {
        let dir = std::env::temp_dir().join(format!("ib-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[listeners]\nhttps = \"127.0.0.1:0\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listeners.mqtts, Some(DEFAULT_MQTTS.parse().unwrap()));
        assert_eq!(c.listeners.https.unwrap().port(), 0);
        args.mqtts = Some("127.0.0.1:9".parse().unwrap());
        assert_eq!(
            Config::load(&args).unwrap().listeners.mqtts.unwrap().port(),
            9
        );
    }

    #[test]
    fn tls_listeners_without_a_certificate_are_errors() {
        let args = ServeArgs {
            mqtts: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.contains("[tls]"), "{e}");
        assert_eq!(
            Config::load(&ServeArgs::default()).unwrap().listeners.mqtts,
            None
        );
        for bad in ["mqtt", "/metrics"] {
            let args = ServeArgs {
                ws_path: Some(bad.into()),
                ..Default::default()
            };
            assert!(Config::load(&args).is_err(), "{bad}");
        }
    }

    #[test]
    fn notify_section_parses_and_is_checked_at_load() {
        let c: Config = toml::from_str(
            "[notify.smtp]\nhost = \"127.0.0.1\"\nport = 2525\nfrom = \"ib@example.com\"\n\
             [notify.sms]\nvia = \"email\"\ndomain = \"sms.example.com\"\n",
        )
        .unwrap();
        let smtp = c.notify.smtp.as_ref().unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port), ("127.0.0.1", 2525));
        assert!(c.notify.sms.is_some());
        assert!(Config::default().notify.smtp.is_none());
        assert!(toml::from_str::<Config>("[notify.smtp]\nhost = \"h\"\n").is_err());
        // SMS through the mail gateway without a mail server: refused at load.
        let dir = std::env::temp_dir().join(format!("ib-config-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[notify.sms]\nvia = \"email\"\ndomain = \"sms.example.com\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let e = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(e.contains("[notify.smtp]"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("[mqtt]\nno_such_key = 1\n").is_err());
    }
}
