//! An axum [`WebSocket`] as a byte stream (`AsyncRead + AsyncWrite`) for the broker. MQTT over
//! WebSocket carries MQTT bytes in binary messages with no relation between packet and message
//! boundaries, so reads hand out the bytes of consecutive binary messages as one stream and
//! every write becomes one binary message. A text message breaks the MQTT rules (the spec says
//! close the connection): reading fails and the close frame says 1003 (unsupported data). Pings
//! are answered by tungstenite itself; pongs are skipped.
//!
//! Writes are buffered by tungstenite until flushed; the broker's connection loop flushes
//! whenever its write buffer has drained.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Close code for a normal end.
const CLOSE_NORMAL: u16 = 1000;
/// Close code for a message type the endpoint cannot accept (a text frame).
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;

/// A WebSocket carrying MQTT (see the module docs).
pub struct WsStream {
    ws: WebSocket,
    /// Unread bytes of the last binary message.
    pending: Bytes,
    /// The peer closed, or sent something that ends the stream.
    read_done: bool,
    close_code: u16,
    close_sent: bool,
}

impl WsStream {
    /// Wraps an upgraded WebSocket.
    pub fn new(ws: WebSocket) -> WsStream {
        WsStream {
            ws,
            pending: Bytes::new(),
            read_done: false,
            close_code: CLOSE_NORMAL,
            close_sent: false,
        }
    }
}

fn ws_error(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    this.read_done = true;
                    this.close_code = CLOSE_UNSUPPORTED_DATA;
                    tracing::info!("text frame on an MQTT WebSocket, closing");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket needs binary frames",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => {
                    this.read_done = true;
                    // tungstenite answers the peer's close frame itself.
                    this.close_sent = true;
                }
                Some(Err(e)) => {
                    this.read_done = true;
                    return Poll::Ready(Err(ws_error(e)));
                }
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_error)
    }

    /// Sends the close frame (1000, or 1003 after a text frame); the TCP connection ends when
    /// the stream is dropped.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            // Errors here mean the connection is already gone, which is what shutdown wants.
            if ready!(Pin::new(&mut this.ws).poll_ready(cx)).is_err() {
                return Poll::Ready(Ok(()));
            }
            let frame = CloseFrame {
                code: this.close_code,
                reason: "".into(),
            };
            this.close_sent = true;
            if Pin::new(&mut this.ws)
                .start_send(Message::Close(Some(frame)))
                .is_err()
            {
                return Poll::Ready(Ok(()));
            }
        }
        let _ = ready!(Pin::new(&mut this.ws).poll_flush(cx));
        Poll::Ready(Ok(()))
    }
}
