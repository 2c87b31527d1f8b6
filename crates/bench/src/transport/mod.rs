//! Byte streams to the broker: TCP, TLS, WebSocket and WebSocket over TLS, behind one
//! [`Stream`] type so the MQTT client above does not care which.
//!
//! - `tls`: the rustls client configuration (ring provider, `--cafile`, `--insecure`).
//! - `ws`: the WebSocket upgrade (subprotocol `mqtt`) and [`WsIo`], a WebSocket as bytes.

pub mod tls;
pub mod ws;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::cli::Transport;
use crate::endpoint::Endpoint;
use crate::error::ClientError;

pub use ws::WsIo;

/// A connected byte stream of any transport.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WsIo<TcpStream>>),
    Wss(Box<WsIo<TlsStream<TcpStream>>>),
}

/// Opens a stream to `endpoint`, from source address `src` when given.
pub async fn connect(endpoint: &Endpoint, src: Option<IpAddr>) -> Result<Stream, ClientError> {
    let tcp = tcp_connect(endpoint.addr, src).await?;
    let tls = |tcp: TcpStream| async move {
        let (connector, name) = endpoint
            .tls
            .as_ref()
            .expect("TLS endpoint without connector");
        connector
            .connect(name.clone(), tcp)
            .await
            .map_err(ClientError::TlsHandshake)
    };
    Ok(match endpoint.transport {
        Transport::Tcp => Stream::Tcp(tcp),
        Transport::Tls => Stream::Tls(Box::new(tls(tcp).await?)),
        Transport::Ws => Stream::Ws(Box::new(ws::upgrade(&endpoint.ws_url, tcp).await?)),
        Transport::Wss => {
            let inner = tls(tcp).await?;
            Stream::Wss(Box::new(ws::upgrade(&endpoint.ws_url, inner).await?))
        }
    })
}

async fn tcp_connect(addr: SocketAddr, src: Option<IpAddr>) -> Result<TcpStream, ClientError> {
    let fail = |error| ClientError::Connect { addr, error };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(fail)?;
    if let Some(ip) = src {
        socket.bind(SocketAddr::new(ip, 0)).map_err(fail)?;
    }
    let stream = socket.connect(addr).await.map_err(fail)?;
    // Small packets (acks, pings, paced publishes) must not wait for Nagle.
    stream.set_nodelay(true).map_err(fail)?;
    Ok(stream)
}

macro_rules! delegate {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).$method($($arg),*),
            Stream::Tls(s) => Pin::new(s.as_mut()).$method($($arg),*),
            Stream::Ws(s) => Pin::new(s.as_mut()).$method($($arg),*),
            Stream::Wss(s) => Pin::new(s.as_mut()).$method($($arg),*),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self.poll_shutdown(cx))
    }
}
