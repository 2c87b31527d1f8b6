//! The HTTPS listener, for `wss://`: an axum [`Listener`] that accepts TCP connections, runs
//! their TLS handshakes concurrently (each bounded by [`tls::HANDSHAKE_TIMEOUT`], so a slow
//! client never holds up the others) and yields finished TLS streams together with the peer's
//! address and verified client certificate.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::http::PeerInfo;
use crate::tls;

/// TLS connections ready for HTTP (see the module docs).
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, PeerInfo)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener`; the accept task ends when this value is dropped.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, PeerInfo)>,
) {
    // Handshakes in progress; dropping the set (when the listener goes) aborts them.
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    handshakes.spawn(async move {
                        if let Some((stream, cert)) = tls::handshake(&acceptor, tcp, addr, "https").await {
                            let peer = PeerInfo { addr, cert: cert.map(Arc::new) };
                            let _ = tx.send((stream, peer)).await;
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "https accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            _ = tx.closed() => return,
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<PeerInfo> {
        Ok(PeerInfo {
            addr: self.local,
            cert: None,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> PeerInfo {
        stream.remote_addr().clone()
    }
}
