//! TLS for the MQTT-over-TLS listener (`mqtts`) and the HTTPS listener (`wss://`): the `[tls]`
//! config, the rustls server configuration (ring provider, TLS 1.2 and 1.3 only, optional or
//! required client certificates), the handshake with its timeout, and the `mqtts` accept loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::cert_identity::{CertNames, ClientCert};

/// How long a client may take to complete the TLS handshake, so that slow or silent
/// connections cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[tls]` section: one certificate for the `mqtts` and `https` listeners.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// Server private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates must chain to; enables client certificates.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `client_ca`).
    pub require_client_cert: bool,
    /// Use a verified client certificate's subject CN (or its SHA-256 fingerprint when it has no
    /// CN) as the user name, as Mosquitto's option of that name; needs `client_ca`.
    pub use_identity_as_username: bool,
}

impl TlsConfig {
    /// Whether a certificate is configured, i.e. TLS listeners can run.
    pub fn is_configured(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// Checks the combinations that cannot work, with a message naming the keys.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.cert.is_some() != self.key.is_some() {
            anyhow::bail!("[tls] needs both `cert` and `key`");
        }
        if self.client_ca.is_none() {
            if self.require_client_cert {
                anyhow::bail!("[tls] require_client_cert needs `client_ca`");
            }
            if self.use_identity_as_username {
                anyhow::bail!("[tls] use_identity_as_username needs `client_ca`");
            }
        }
        Ok(())
    }

    /// Builds the rustls server configuration, advertising `alpn` (empty for none).
    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            anyhow::bail!("TLS listeners need [tls] `cert` and `key`");
        };
        let chain = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading [tls] key {}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in load_certs(path)? {
                    roots
                        .add(ca)
                        .with_context(|| format!("[tls] client_ca {}", path.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if self.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(verifier.build().context("[tls] client_ca")?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .context("[tls] cert and key do not match or are not usable")?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

/// A finished TLS connection and the client's verified certificate, if it sent one.
pub type Accepted = (TlsStream<TcpStream>, Option<ClientCert>);

/// Runs the server side of the handshake on `tcp`, bounded by [`HANDSHAKE_TIMEOUT`]. A failure
/// is logged and counted, and gives `None`.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    listener: &'static str,
) -> Option<Accepted> {
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| ClientCert::from_der(leaf));
            Some((stream, cert))
        }
        Ok(Err(e)) => {
            handshake_failed(listener, peer, &e);
            None
        }
        Err(_) => {
            handshake_failed(listener, peer, &"timed out");
            None
        }
    }
}

/// The event "a TLS handshake failed": logged with the peer, counted per listener.
fn handshake_failed(listener: &'static str, peer: SocketAddr, reason: &dyn std::fmt::Display) {
    tracing::info!(listener, %peer, reason = %reason, "TLS handshake failed");
    metrics::counter!("mqtt_tls_handshake_failures_total", "listener" => listener).increment(1);
}

/// Serves MQTT over TLS on `listener` until `shutdown` changes: one task per client for the
/// handshake and then the broker's connection loop.
pub async fn serve_mqtts(
    broker: broker::Broker,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    names: CertNames,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let (broker, acceptor, names) = (broker.clone(), acceptor.clone(), names.clone());
                    let mut stop = shutdown.clone();
                    tasks.spawn(async move {
                        let accepted = tokio::select! {
                            a = handshake(&acceptor, tcp, peer, "mqtts") => a,
                            _ = stop.changed() => None,
                        };
                        let Some((stream, cert)) = accepted else { return };
                        // Keeps the certificate's CN known to the hooks while the client is here.
                        let _name = cert.as_ref().and_then(|c| names.register(c));
                        let fingerprint = cert.map(|c| c.fingerprint);
                        broker.serve_stream(stream, Some(peer), fingerprint).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mqtts accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    broker.shutdown_connections();
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_missing_key() {
        let c = TlsConfig {
            cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("key"));
        let c = TlsConfig {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            require_client_cert: true,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("client_ca"));
        assert!(!TlsConfig::default().is_configured());
        assert!(TlsConfig::default().validate().is_ok());
    }

    #[test]
    fn missing_files_are_reported_with_their_path() {
        let c = TlsConfig {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let e = format!("{:#}", c.server_config(&[]).unwrap_err());
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }
}
