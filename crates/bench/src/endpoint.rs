//! Where the load goes: the loopback-only address check and the [`Endpoint`] every client
//! connects to (address, transport, TLS client configuration, WebSocket path).
//!
//! This machine must never send load elsewhere, so the check lives in two places: the `--host`
//! value parser, and [`Endpoint::new`] for arguments built in code.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::cli::{TargetArgs, Transport};
use crate::error::BenchError;
use crate::transport::tls;

/// Parses `--host`: a loopback IP address (127.0.0.0/8 or ::1, brackets allowed) or `localhost`.
pub fn parse_loopback(host: &str) -> Result<IpAddr, BenchError> {
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        bare.unwrap_or(host)
            .parse::<IpAddr>()
            .map_err(|_| BenchError::BadHost(host.to_string()))?
    };
    if !ip.is_loopback() {
        return Err(BenchError::NotLoopback(host.to_string()));
    }
    Ok(ip)
}

/// The broker every client of a run connects to.
#[derive(Clone)]
pub struct Endpoint {
    /// Broker address (always loopback).
    pub addr: SocketAddr,
    pub transport: Transport,
    /// `ws://` / `wss://` URL for the WebSocket upgrade.
    pub ws_url: String,
    /// For `tls` and `wss`.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    /// Checks the address and prepares the TLS client once for all connections.
    pub fn new(args: &TargetArgs) -> Result<Endpoint, BenchError> {
        if !args.host.is_loopback() {
            return Err(BenchError::NotLoopback(args.host.to_string()));
        }
        let addr = SocketAddr::new(args.host, args.port);
        let tls = if args.transport.is_tls() {
            let config = tls::client_config(args.cafile.as_deref(), args.insecure)?;
            let name = match &args.tls_server_name {
                Some(n) => ServerName::try_from(n.clone())
                    .map_err(|e| BenchError::Tls(format!("--tls-server-name {n}: {e}")))?,
                None => ServerName::IpAddress(args.host.into()),
            };
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let scheme = if args.transport == Transport::Wss {
            "wss"
        } else {
            "ws"
        };
        let path = if args.ws_path.starts_with('/') {
            args.ws_path.clone()
        } else {
            format!("/{}", args.ws_path)
        };
        Ok(Endpoint {
            addr,
            transport: args.transport,
            ws_url: format!("{scheme}://{addr}{path}"),
            tls,
        })
    }
}

/// The source addresses 127.0.0.2 ..= 127.0.0.(n+1), for spreading many connections.
pub fn source_addrs(n: usize) -> Vec<IpAddr> {
    (0..n.min(250))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, (2 + i) as u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_accepted() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "localhost",
            "::1",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(parse_loopback(h).unwrap().is_loopback(), "{h}");
        }
    }

    #[test]
    fn other_addresses_are_refused() {
        for h in [
            "10.0.0.1",
            "192.168.1.10",
            "172.16.0.1",
            "8.8.8.8",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "fe80::1",
        ] {
            let e = parse_loopback(h).unwrap_err();
            assert!(matches!(e, BenchError::NotLoopback(_)), "{h}: {e}");
            assert!(e.to_string().contains("not a loopback address"), "{e}");
        }
        for h in ["example.com", "broker", "", "127.0.0.1:1883"] {
            assert!(
                matches!(parse_loopback(h), Err(BenchError::BadHost(_))),
                "{h}"
            );
        }
    }

    #[test]
    fn source_addresses_start_at_dot_two() {
        let a = source_addrs(3);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].to_string(), "127.0.0.2");
        assert_eq!(a[2].to_string(), "127.0.0.4");
    }
}
