//! Where and how the uplink reaches the platform: `mqtt://host[:port]` over TCP (port 1883 by
//! default), or `mqtts://host[:port]` over TLS (8883): rustls with the ring provider, TLS 1.2
//! and 1.3 only, the platform's certificate verified against `[uplink] cafile` and for the
//! URL's host (a DNS name, or an IP address matched against the certificate's IP SANs), with
//! an optional client certificate (`cert`, `key`) for mutual TLS.
//!
//! Everything that can be checked before connecting (the URL, the PEM files, whether the key
//! fits the certificate) is checked by [`Endpoint::from_config`], which the configuration
//! check calls, so that a wrong file stops the edge at start rather than at every reconnect.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::session::SessionError;
use crate::config::UplinkConfig;

/// A byte stream to the platform: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The platform's address, and TLS when the URL is `mqtts://`.
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Option<Tls>,
}

struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// The client certificate (DER), when mutual TLS is configured.
    client_cert: Option<Vec<u8>>,
}

impl Endpoint {
    /// Parses `[uplink] url` and, for `mqtts://`, loads the CA bundle and the client
    /// certificate. The message names the field at fault (and the file).
    pub fn from_config(c: &UplinkConfig) -> Result<Endpoint, String> {
        let (secure, host, port) = parse_url(&c.url).map_err(|e| format!("url: {e}"))?;
        if !secure {
            for (field, set) in [
                ("cafile", c.cafile.is_some()),
                ("cert", c.cert.is_some()),
                ("key", c.key.is_some()),
            ] {
                if set {
                    return Err(format!("{field}: only used with an mqtts:// url"));
                }
            }
            return Ok(Endpoint {
                host,
                port,
                tls: None,
            });
        }
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| format!("url: {host:?} is not a valid server name"))?;
        let (config, client_cert) = client_config(c)?;
        Ok(Endpoint {
            host,
            port,
            tls: Some(Tls {
                connector: TlsConnector::from(Arc::new(config)),
                server_name,
                client_cert,
            }),
        })
    }

    /// The client certificate (DER) with mutual TLS; the client id is derived from it when
    /// there is no token.
    pub fn client_cert(&self) -> Option<&[u8]> {
        self.tls.as_ref()?.client_cert.as_deref()
    }

    /// Opens the TCP connection and, for `mqtts://`, completes the TLS handshake, all within
    /// `deadline`.
    pub async fn connect(&self, deadline: Duration) -> Result<Box<dyn Stream>, SessionError> {
        let tcp = timeout(
            deadline,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SessionError::Timeout("connecting"))??;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        match timeout(
            deadline,
            tls.connector.connect(tls.server_name.clone(), tcp),
        )
        .await
        {
            Err(_) => Err(SessionError::Timeout("in the TLS handshake")),
            Ok(Err(e)) => Err(SessionError::Handshake(e.to_string())),
            Ok(Ok(stream)) => Ok(Box::new(stream)),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `mqtt[s]://host[:port][/]` → (TLS, host without brackets, port).
pub fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let (secure, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) {
        return Err(format!(
            "{url:?}: only host and port are allowed (no path, user or query)"
        ));
    }
    let default_port = if secure { 8883 } else { 1883 };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{url:?}: expected :port after ]")),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{url:?}: {p:?} is not a port (1 to 65535)")),
        },
    };
    Ok((secure, host.to_string(), port))
}

/// The rustls client configuration of `[uplink]`, and the client certificate's DER if any.
fn client_config(c: &UplinkConfig) -> Result<(ClientConfig, Option<Vec<u8>>), String> {
    let cafile = c.cafile.as_deref().ok_or(
        "cafile: required with mqtts:// (a PEM bundle of the CA(s) that signed the \
         platform's certificate; /etc/ssl/certs/ca-certificates.crt for the system's roots)",
    )?;
    let mut roots = RootCertStore::empty();
    for ca in load_certs("cafile", cafile)? {
        roots
            .add(ca)
            .map_err(|e| format!("cafile: {}: {e}", cafile.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    match (&c.cert, &c.key) {
        (None, None) => Ok((builder.with_no_client_auth(), None)),
        (Some(cert), Some(key)) => {
            let chain = load_certs("cert", cert)?;
            let leaf = chain[0].to_vec();
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("key: {}: {}", key.display(), pem_error(e)))?;
            let config = builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cert, key: not usable together: {e}"))?;
            Ok((config, Some(leaf)))
        }
        (Some(_), None) => Err("key: required with cert (mutual TLS needs both)".into()),
        (None, Some(_)) => Err("cert: required with key (mutual TLS needs both)".into()),
    }
}

/// Every certificate in a PEM file; none at all is an error.
fn load_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{field}: {}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{field}: {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// A PEM error in words (the I/O error's own text for a missing or unreadable file).
fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind (a private key: PKCS#8, PKCS#1 or SEC1)".into()
        }
        other => format!("not valid PEM: {other}"),
    }
}

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
