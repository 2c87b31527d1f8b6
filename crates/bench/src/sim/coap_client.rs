//! The simulator's CoAP endpoint (RFC 7252, Observe RFC 7641) on coap-lite messages: one UDP
//! socket per device, connected to the server; confirmable requests retransmitted with
//! exponential back-off (ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4), one at a
//! time (NSTART 1); responses matched by token, piggybacked or separate (an empty ACK stops the
//! retransmissions, a confirmable separate response is acknowledged); notifications of the
//! tokens being observed handed to the caller, those of any other token refused with a RST so
//! the server drops the stale observation.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, ObserveOption, Packet,
    RequestType as Method, ResponseType as Status,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// RFC 7252 4.8 transmission parameters.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const ACK_RANDOM_FACTOR: f64 = 1.5;
const MAX_RETRANSMIT: u32 = 4;
/// How long a separate response may take once the request was acknowledged (RFC 7252's
/// PROCESSING_DELAY is ACK_TIMEOUT; our server answers telemetry once stored, so allow more).
const SEPARATE_WAIT: Duration = Duration::from_secs(30);
/// Notifications waiting for the device's RPC task.
const NOTIFICATIONS: usize = 64;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum CoapError {
    #[error("CoAP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no CoAP response after {0} transmissions")]
    Timeout(u32),
    #[error("CoAP request reset by the server")]
    Reset,
    #[error("CoAP request refused: nothing listens on the server's port")]
    Refused,
    #[error("CoAP message could not be encoded: {0}")]
    Encode(String),
    #[error("the CoAP endpoint is closed")]
    Closed,
}

/// A response: its code and payload.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Status,
    pub payload: Vec<u8>,
}

impl Response {
    /// The code as CoAP writes it (`2.04`).
    pub fn code(&self) -> String {
        MessageClass::Response(self.status).to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// What the socket's reader hands to a waiting request.
#[derive(Debug)]
enum Event {
    /// An empty ACK: the response will come separately.
    Acked,
    Response(Response),
    Reset,
    /// ICMP port unreachable.
    Refused,
}

/// A request in flight.
struct Exchange {
    mid: u16,
    tx: mpsc::Sender<Event>,
}

/// State shared by the requests and the reader.
#[derive(Default)]
struct Exchanges {
    /// By token.
    pending: HashMap<Vec<u8>, Exchange>,
    /// Tokens of the observations to keep.
    observing: HashSet<Vec<u8>>,
}

/// One device's CoAP endpoint. Dropping it stops its reader.
pub struct CoapClient {
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<Exchanges>>,
    /// NSTART = 1: one outstanding request towards the server.
    nstart: Semaphore,
    ids: Mutex<Ids>,
    reader: JoinHandle<()>,
}

/// Message ids and tokens, both starting at random values.
struct Ids {
    mid: u16,
    token: u64,
}

/// Removes a request's entry when it ends, however it ends (the caller may be cancelled).
struct PendingGuard<'a> {
    state: &'a Mutex<Exchanges>,
    token: Vec<u8>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.state).pending.remove(&self.token);
    }
}

fn lock(m: &Mutex<Exchanges>) -> MutexGuard<'_, Exchanges> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CoapClient {
    /// Binds a socket (any port) connected to `server`; notifications of observed tokens come
    /// out of the returned receiver.
    pub async fn connect(
        server: SocketAddr,
    ) -> Result<(CoapClient, mpsc::Receiver<Response>), CoapError> {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("address")
        } else {
            "[::]:0".parse().expect("address")
        };
        let socket = UdpSocket::bind(local).await?;
        // Connected: the kernel drops datagrams from anyone else, and an ICMP port unreachable
        // fails the next send at once instead of after every retransmission.
        socket.connect(server).await?;
        let socket = Arc::new(socket);
        let state = Arc::new(Mutex::new(Exchanges::default()));
        let (tx, rx) = mpsc::channel(NOTIFICATIONS);
        let reader = tokio::spawn(read_loop(socket.clone(), state.clone(), tx));
        let client = CoapClient {
            socket,
            state,
            nstart: Semaphore::new(1),
            ids: Mutex::new(Ids {
                mid: rand::random(),
                token: rand::random(),
            }),
            reader,
        };
        Ok((client, rx))
    }

    /// A fresh 8-byte token.
    pub fn token(&self) -> Vec<u8> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.token = ids.token.wrapping_add(1);
        ids.token.to_be_bytes().to_vec()
    }

    fn next_mid(&self) -> u16 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.mid = ids.mid.wrapping_add(1);
        ids.mid
    }

    /// `POST path` with a JSON payload.
    pub async fn post(&self, path: &str, json: &str) -> Result<Response, CoapError> {
        let mut p = request(Method::Post, path, self.token());
        p.set_content_format(ContentFormat::ApplicationJSON);
        p.payload = json.as_bytes().to_vec();
        self.exchange(p).await
    }

    /// Registers (or renews: same token) an observation of `path`; its notifications come out
    /// of the receiver [`CoapClient::connect`] returned.
    pub async fn observe(&self, path: &str, token: &[u8]) -> Result<Response, CoapError> {
        lock(&self.state).observing.insert(token.to_vec());
        let mut p = request(Method::Get, path, token.to_vec());
        p.set_observe_value(usize::from(ObserveOption::Register) as u32);
        self.exchange(p).await
    }

    /// Ends the observation `token` of `path` (GET with Observe = 1).
    pub async fn cancel(&self, path: &str, token: &[u8]) -> Result<Response, CoapError> {
        lock(&self.state).observing.remove(token);
        let mut p = request(Method::Get, path, token.to_vec());
        p.set_observe_value(usize::from(ObserveOption::Deregister) as u32);
        self.exchange(p).await
    }

    /// Sends a confirmable request and waits for its response, retransmitting it after
    /// ACK_TIMEOUT × (1 .. ACK_RANDOM_FACTOR), doubling each time, MAX_RETRANSMIT times.
    async fn exchange(&self, mut p: Packet) -> Result<Response, CoapError> {
        let _turn = self.nstart.acquire().await.map_err(|_| CoapError::Closed)?;
        p.header.message_id = self.next_mid();
        let bytes = p
            .to_bytes_unlimited()
            .map_err(|e| CoapError::Encode(e.to_string()))?;
        let token = p.get_token().to_vec();
        let (tx, mut rx) = mpsc::channel(4);
        lock(&self.state).pending.insert(
            token.clone(),
            Exchange {
                mid: p.header.message_id,
                tx,
            },
        );
        let _guard = PendingGuard {
            state: &self.state,
            token,
        };
        let mut timeout = ACK_TIMEOUT.mul_f64(rand::random_range(1.0..ACK_RANDOM_FACTOR));
        for _ in 0..=MAX_RETRANSMIT {
            self.socket.send(&bytes).await?;
            match tokio::time::timeout(timeout, rx.recv()).await {
                Ok(Some(Event::Response(r))) => return Ok(r),
                Ok(Some(Event::Acked)) => return separate(&mut rx).await,
                Ok(Some(Event::Reset)) => return Err(CoapError::Reset),
                Ok(Some(Event::Refused)) => return Err(CoapError::Refused),
                Ok(None) => return Err(CoapError::Closed),
                Err(_) => timeout *= 2,
            }
        }
        Err(CoapError::Timeout(MAX_RETRANSMIT + 1))
    }
}

impl Drop for CoapClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Waits for the separate response of an acknowledged request.
async fn separate(rx: &mut mpsc::Receiver<Event>) -> Result<Response, CoapError> {
    let wait = async {
        loop {
            match rx.recv().await {
                Some(Event::Response(r)) => return Ok(r),
                Some(Event::Acked) => {}
                Some(Event::Reset) => return Err(CoapError::Reset),
                Some(Event::Refused) => return Err(CoapError::Refused),
                None => return Err(CoapError::Closed),
            }
        }
    };
    tokio::time::timeout(SEPARATE_WAIT, wait)
        .await
        .unwrap_or(Err(CoapError::Timeout(1)))
}

/// A confirmable request for `path` (`api/v1/TOKEN/telemetry`: one Uri-Path option a segment).
fn request(method: Method, path: &str, token: Vec<u8>) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.set_token(token);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p
}

/// A bare ACK or RST for message `mid`.
fn empty(kind: MessageType, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(kind);
    // Packet::new() is a GET; an empty message has code 0.00 (RFC 7252 4.1).
    p.header.code = MessageClass::Empty;
    p.header.message_id = mid;
    p.to_bytes().unwrap_or_default()
}

/// What the reader does with a datagram: whom it goes to and what to send back.
#[derive(Debug, PartialEq)]
enum Route {
    /// To the request with this token (a response) or message id (an empty ACK or RST).
    Request(Vec<u8>),
    /// A notification of an observed token.
    Notification,
    /// Nothing for anyone.
    Drop,
}

/// Where an incoming message goes, and the empty message to answer it with (if any).
fn route(p: &Packet, state: &Exchanges) -> (Route, Option<Vec<u8>>) {
    let mid = p.header.message_id;
    let kind = p.header.get_type();
    let by_mid = || {
        state
            .pending
            .iter()
            .find(|(_, e)| e.mid == mid)
            .map(|(t, _)| Route::Request(t.clone()))
            .unwrap_or(Route::Drop)
    };
    match (kind, p.header.code) {
        (MessageType::Reset, _) | (MessageType::Acknowledgement, MessageClass::Empty) => {
            (by_mid(), None)
        }
        (_, MessageClass::Response(_)) => {
            let token = p.get_token();
            let ack = (kind == MessageType::Confirmable)
                .then(|| empty(MessageType::Acknowledgement, mid));
            if state.pending.contains_key(token) {
                (Route::Request(token.to_vec()), ack)
            } else if state.observing.contains(token) {
                (Route::Notification, ack)
            } else if kind == MessageType::Acknowledgement {
                // A late duplicate of an answer already taken.
                (Route::Drop, None)
            } else {
                // Nobody wants it (an observation we ended or forgot): RFC 7641 3.6.
                (Route::Drop, Some(empty(MessageType::Reset, mid)))
            }
        }
        // Requests to us, pings, anything else confirmable: not served here.
        (MessageType::Confirmable, _) => (Route::Drop, Some(empty(MessageType::Reset, mid))),
        _ => (Route::Drop, None),
    }
}

/// Reads the socket until the client is dropped.
async fn read_loop(
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<Exchanges>>,
    notifications: mpsc::Sender<Response>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            // ICMP port unreachable for a request sent: fail what is waiting now rather than
            // after every retransmission.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                for e in lock(&state).pending.values() {
                    let _ = e.tx.try_send(Event::Refused);
                }
                continue;
            }
            Err(_) => continue,
        };
        let Ok(p) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        let (to, reply) = route(&p, &lock(&state));
        if let Some(bytes) = reply {
            let _ = socket.send(&bytes).await;
        }
        let event = match (p.header.get_type(), p.header.code) {
            (MessageType::Reset, _) => Event::Reset,
            (_, MessageClass::Response(status)) => Event::Response(Response {
                status,
                payload: p.payload,
            }),
            _ => Event::Acked,
        };
        match (to, event) {
            (Route::Request(token), event) => {
                let tx = lock(&state).pending.get(&token).map(|e| e.tx.clone());
                if let Some(tx) = tx {
                    let _ = tx.try_send(event);
                }
            }
            // A full queue loses a notification, as a lost datagram would.
            (Route::Notification, Event::Response(r)) => {
                let _ = notifications.try_send(r);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(kind: MessageType, mid: u16, token: &[u8], status: Status) -> Packet {
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(kind);
        p.header.message_id = mid;
        p.header.code = MessageClass::Response(status);
        p.set_token(token.to_vec());
        p
    }

    fn state() -> Exchanges {
        let mut s = Exchanges::default();
        let (tx, _rx) = mpsc::channel(1);
        s.pending.insert(vec![1], Exchange { mid: 10, tx });
        s.observing.insert(vec![9]);
        s
    }

    fn kind_of(bytes: &[u8]) -> (MessageType, u16) {
        let p = Packet::from_bytes(bytes).unwrap();
        (p.header.get_type(), p.header.message_id)
    }

    #[test]
    fn requests_carry_the_path_one_segment_an_option() {
        let p = request(Method::Post, "api/v1/tok/telemetry", vec![7]);
        let segments: Vec<&[u8]> = p
            .get_option(CoapOption::UriPath)
            .unwrap()
            .iter()
            .map(Vec::as_slice)
            .collect();
        assert_eq!(segments, [&b"api"[..], b"v1", b"tok", b"telemetry"]);
        assert_eq!(p.header.get_type(), MessageType::Confirmable);
        let p = Packet::from_bytes(&p.to_bytes().unwrap()).unwrap();
        assert_eq!(p.get_token(), [7]);
    }

    #[test]
    fn responses_go_to_their_request_by_token() {
        let s = state();
        let p = response(MessageType::Acknowledgement, 10, &[1], Status::Changed);
        assert_eq!(route(&p, &s), (Route::Request(vec![1]), None));
        // A separate CON response is acknowledged.
        let p = response(MessageType::Confirmable, 77, &[1], Status::Changed);
        let (to, reply) = route(&p, &s);
        assert_eq!(to, Route::Request(vec![1]));
        assert_eq!(kind_of(&reply.unwrap()), (MessageType::Acknowledgement, 77));
        // An empty ACK or a RST by message id.
        let mut p = Packet::from_bytes(&empty(MessageType::Acknowledgement, 10)).unwrap();
        assert_eq!(p.header.code, MessageClass::Empty);
        assert_eq!(route(&p, &s), (Route::Request(vec![1]), None));
        p.header.set_type(MessageType::Reset);
        assert_eq!(route(&p, &s), (Route::Request(vec![1]), None));
        p.header.message_id = 11;
        assert_eq!(route(&p, &s), (Route::Drop, None));
    }

    #[test]
    fn notifications_of_unknown_tokens_are_reset() {
        let s = state();
        let p = response(MessageType::NonConfirmable, 5, &[9], Status::Content);
        assert_eq!(route(&p, &s), (Route::Notification, None));
        let p = response(MessageType::Confirmable, 6, &[9], Status::Content);
        let (to, reply) = route(&p, &s);
        assert_eq!(to, Route::Notification);
        assert_eq!(kind_of(&reply.unwrap()), (MessageType::Acknowledgement, 6));
        let p = response(MessageType::NonConfirmable, 7, &[8], Status::Content);
        let (to, reply) = route(&p, &s);
        assert_eq!(to, Route::Drop);
        assert_eq!(kind_of(&reply.unwrap()), (MessageType::Reset, 7));
        // A duplicate piggybacked answer is just dropped.
        let p = response(MessageType::Acknowledgement, 8, &[8], Status::Changed);
        assert_eq!(route(&p, &s), (Route::Drop, None));
    }

    #[test]
    fn codes_read_as_coap_writes_them() {
        let r = |status| Response {
            status,
            payload: Vec::new(),
        };
        assert_eq!(r(Status::Changed).code(), "2.04");
        assert_eq!(r(Status::Unauthorized).code(), "4.01");
        assert_eq!(r(Status::ServiceUnavailable).code(), "5.03");
    }

    /// A server that drops the first `drop` copies of each request, then answers 2.04.
    async fn lossy_server(drop: usize) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                let (n, peer) = socket.recv_from(&mut buf).await.unwrap();
                let copies = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if copies <= drop {
                    continue;
                }
                let req = Packet::from_bytes(&buf[..n]).unwrap();
                let p = response(
                    MessageType::Acknowledgement,
                    req.header.message_id,
                    req.get_token(),
                    Status::Changed,
                );
                socket.send_to(&p.to_bytes().unwrap(), peer).await.unwrap();
            }
        });
        (addr, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn confirmable_requests_are_retransmitted_until_answered() {
        let (addr, seen) = lossy_server(2).await;
        let (client, _n) = CoapClient::connect(addr).await.unwrap();
        let r = client.post("api/v1/t/telemetry", "{}").await.unwrap();
        assert_eq!(r.status, Status::Changed);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_closed_port_fails_at_once() {
        // Bound then closed: nothing listens there, the kernel answers port unreachable.
        let addr = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let (client, _n) = CoapClient::connect(addr).await.unwrap();
        let r = tokio::time::timeout(ACK_TIMEOUT, client.post("api/v1/t/telemetry", "{}")).await;
        assert!(matches!(r, Ok(Err(CoapError::Refused))), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out_after_max_retransmit() {
        let (addr, seen) = lossy_server(usize::MAX).await;
        let (client, _n) = CoapClient::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        let e = client.post("api/v1/t/telemetry", "{}").await.unwrap_err();
        assert!(matches!(e, CoapError::Timeout(5)), "{e}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 5);
        // 2+4+8+16+32 s at least, at most 1.5 times that (RFC 7252's MAX_TRANSMIT_WAIT is 93 s).
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(62) && waited <= Duration::from_secs(93),
            "{waited:?}"
        );
    }
}
