//! The CoAP server loop: one task owns the socket, the duplicate table, the block-wise state and
//! the observations; the platform reaches observers through a channel into this loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use coap_lite::block_handler::{BlockHandler, BlockHandlerConfig, BlockValue};
use coap_lite::{
    CoapOption, CoapRequest, ContentFormat, MessageClass, MessageType, ObserveOption, Packet,
    RequestType as Method, ResponseType as Status,
};
use ib_core::sessions::Downlink;
use ib_core::Platform;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::dedup::{Dedup, Seen};
use crate::observe::{self, Notification, ObsKey, Observation, Observations};
use crate::resources::{self, Outcome, Request};

/// The block handler's message budget (coap-lite's default) and the room a block needs besides
/// the request's own header and options (its Block options plus the smallest block, 16 bytes).
const MAX_MESSAGE: usize = 1152;
const OPTIONS_MARGIN: usize = 12 + 16 + 4;

/// Most exchanges remembered for duplicate detection.
const DEDUP_CAPACITY: usize = 16_384;
/// Most notification ids remembered for RST matching.
const SENT_CAPACITY: usize = 16_384;

/// A response to complete once a commit is done.
type Pending = (Option<coap_lite::CoapResponse>, store::Commit);

/// A request answered once its telemetry is stored.
struct Waiting {
    peer: SocketAddr,
    mid: u16,
    con: bool,
    response: Option<coap_lite::CoapResponse>,
    commit: store::Commit,
}

/// The answer once a commit resolved: 2.04, or 5.00 with the store's error.
fn stored_answer(response: Option<coap_lite::CoapResponse>, r: store::Result<()>) -> Vec<u8> {
    let Some(mut resp) = response else {
        return Vec::new();
    };
    match r {
        Ok(()) => resp.set_status(Status::Changed),
        Err(e) => {
            resp.set_status(Status::InternalServerError);
            resp.message.set_content_format(ContentFormat::TextPlain);
            resp.message.payload = e.to_string().into_bytes();
        }
    }
    resp.message.to_bytes_unlimited().unwrap_or_default()
}

struct Server {
    platform: Arc<Platform>,
    /// Requests whose answer waits for a commit (the loop spawns the waits).
    waiting: Vec<Waiting>,
    blocks: BlockHandler<SocketAddr>,
    dedup: Dedup,
    obs: Observations,
    tx: mpsc::Sender<Notification>,
    next_mid: u16,
    max_payload: usize,
}

/// Serves the CoAP device API on `socket` until `shutdown` changes. Request bodies (after
/// block-wise reassembly) above `max_payload` bytes get 4.13.
pub async fn serve(
    socket: UdpSocket,
    platform: Arc<Platform>,
    max_payload: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel(1024);
    let (done_tx, mut done_rx) = mpsc::channel::<(SocketAddr, u16, bool, Vec<u8>)>(1024);
    let mut s = Server {
        platform,
        waiting: Vec::new(),
        blocks: BlockHandler::new(BlockHandlerConfig::default()),
        dedup: Dedup::new(DEDUP_CAPACITY),
        obs: Observations::default(),
        tx,
        next_mid: rand::random(),
        max_payload,
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    if let Some(out) = s.guarded(&buf[..n], peer) {
                        let _ = socket.send_to(&out, peer).await;
                    }
                    for w in s.waiting.drain(..) {
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let Waiting { peer, mid, con, response, commit } = w;
                            let bytes = stored_answer(response, commit.await);
                            let _ = done.send((peer, mid, con, bytes)).await;
                        });
                    }
                }
                Err(e) => tracing::debug!(error = %e, "CoAP receive failed"),
            },
            Some((peer, mid, con, bytes)) = done_rx.recv() => {
                if con {
                    s.dedup.answered(peer, mid, bytes.clone());
                }
                let _ = socket.send_to(&bytes, peer).await;
            }
            Some(n) = rx.recv() => {
                let peer = n.key.0;
                if let Some(out) = s.notification(n) {
                    let _ = socket.send_to(&out, peer).await;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    for (_, o) in s.obs.live.drain() {
        s.platform.sessions.unregister(&o.sink);
    }
}

/// A bare message (RST or empty ACK) answering message id `mid`.
fn empty(kind: MessageType, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(kind);
    // `Packet::new()` is a GET; an empty ACK or RST has code 0.00 (RFC 7252 4.1).
    p.header.code = MessageClass::Empty;
    p.header.message_id = mid;
    p.to_bytes().unwrap_or_default()
}

impl Server {
    /// Handles a datagram; a panic in the handling (a bug, ours or a library's) costs this one
    /// datagram, not the listener.
    fn guarded(&mut self, bytes: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.on_datagram(bytes, peer)
        }));
        r.unwrap_or_else(|_| {
            tracing::error!(%peer, len = bytes.len(), "CoAP handling panicked; datagram dropped");
            metrics::counter!("coap_handler_panics_total").increment(1);
            None
        })
    }

    fn on_datagram(&mut self, bytes: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let packet = match Packet::from_bytes(bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "malformed CoAP message");
                metrics::counter!("coap_malformed_total").increment(1);
                // A malformed confirmable message is rejected with a RST (RFC 7252 4.2).
                let con = bytes.len() >= 4 && bytes[0] >> 6 == 1 && (bytes[0] >> 4) & 3 == 0;
                return con
                    .then(|| empty(MessageType::Reset, u16::from_be_bytes([bytes[2], bytes[3]])));
            }
        };
        let mid = packet.header.message_id;
        // coap-lite's block handling divides by the block size left after the options; with
        // options filling its whole message budget that is zero (found by the fuzz target).
        let options_len = bytes.len() - packet.payload.len();
        if bytes.len() > Packet::MAX_SIZE || options_len + OPTIONS_MARGIN > MAX_MESSAGE {
            // coap-lite cannot re-encode a message this large (its block-wise handling does):
            // 4.13 tells the client to send it block-wise (RFC 7959 2.9.3).
            metrics::counter!("coap_malformed_total").increment(1);
            return (packet.header.get_type() == MessageType::Confirmable)
                .then(|| too_large(&packet));
        }
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Reset, _) => {
                self.cancel_by_mid(peer, mid);
                None
            }
            (MessageType::Acknowledgement, _) => None,
            (MessageType::Confirmable, MessageClass::Empty) => Some(empty(MessageType::Reset, mid)),
            (kind, MessageClass::Request(_)) => match self.dedup.check(Instant::now(), peer, mid) {
                Some(Seen::Answered(b)) => Some(b),
                Some(Seen::Pending) => None,
                None => {
                    let out = self.request(packet, peer)?;
                    if kind == MessageType::Confirmable {
                        self.dedup.answered(peer, mid, out.clone());
                    }
                    Some(out)
                }
            },
            (MessageType::Confirmable, _) => Some(empty(MessageType::Reset, mid)),
            _ => None,
        }
    }

    /// Handles a request; `None` when its answer waits for a commit (see `waiting`).
    fn request(&mut self, packet: Packet, peer: SocketAddr) -> Option<Vec<u8>> {
        let mid = packet.header.message_id;
        let con = packet.header.get_type() == MessageType::Confirmable;
        match self.outcome(packet, peer) {
            Ok(bytes) => Some(bytes),
            Err((response, commit)) => {
                self.waiting.push(Waiting {
                    peer,
                    mid,
                    con,
                    response,
                    commit,
                });
                None
            }
        }
    }

    /// The answer, or the response to complete once a commit is done.
    fn outcome(&mut self, packet: Packet, peer: SocketAddr) -> Result<Vec<u8>, Pending> {
        let mut req = CoapRequest::from_packet(packet, peer);
        if let Some(Ok(b1)) = req
            .message
            .get_first_option_as::<BlockValue>(CoapOption::Block1)
        {
            if usize::from(b1.num) * b1.size() > self.max_payload {
                let out = self.finish(
                    &mut req,
                    Status::RequestEntityTooLarge,
                    b"payload too large".to_vec(),
                );
                return Ok(out);
            }
        }
        match self.blocks.intercept_request(&mut req) {
            Ok(true) => return Ok(serialize(&req)),
            Ok(false) => {}
            Err(e) => {
                req.apply_from_error(e);
                return Ok(serialize(&req));
            }
        }
        if req.message.payload.len() > self.max_payload {
            let out = self.finish(
                &mut req,
                Status::RequestEntityTooLarge,
                b"payload too large".to_vec(),
            );
            return Ok(out);
        }
        let Ok(path) = req.get_path_as_vec() else {
            return Ok(self.finish(
                &mut req,
                Status::BadOption,
                b"Uri-Path is not UTF-8".to_vec(),
            ));
        };
        let query: Vec<String> = req
            .message
            .get_option(CoapOption::UriQuery)
            .map(|l| {
                l.iter()
                    .map(|q| String::from_utf8_lossy(q).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let observe = req.get_observe_flag().and_then(Result::ok);
        let key: ObsKey = (peer, req.message.get_token().to_vec());
        let method = *req.get_method();
        if method == Method::Get && observe != Some(ObserveOption::Register) {
            // A GET without Observe=0 on the same token ends an observation (RFC 7641 3.6).
            self.cancel(&key);
        }
        let block2 = req
            .message
            .get_option(CoapOption::Block2)
            .and_then(|l| l.front())
            .and_then(|raw| crate::firmware::Block2::parse(raw));
        let r = Request {
            method,
            path: &path,
            query: &query,
            observe,
            block2,
            payload: &req.message.payload,
        };
        match resources::handle(&self.platform, &r) {
            Outcome::Reply(status, payload) => Ok(self.finish(&mut req, status, payload)),
            Outcome::Image(img) => {
                if let Some(resp) = req.response.as_mut() {
                    // With our own Block2 option, coap-lite's block handler leaves the answer be.
                    if let Some(b) = img.block2 {
                        resp.message.add_option(CoapOption::Block2, b.encode());
                    }
                    let total = img.total.to_be_bytes();
                    let skip = total.iter().take_while(|b| **b == 0).count();
                    resp.message
                        .add_option(CoapOption::Size2, total[skip..].to_vec());
                }
                let format = ContentFormat::ApplicationOctetStream;
                Ok(self.finish_as(&mut req, Status::Content, img.bytes, Some(format)))
            }
            Outcome::Stored(commit) => Err((req.response.take(), commit)),
            Outcome::Observe { ctx, rpc, initial } => {
                self.cancel(&key);
                let sink = observe::sink(key.clone(), rpc, self.tx.clone());
                let sid = self
                    .platform
                    .sessions
                    .register(ctx.id.clone(), sink.clone(), false);
                self.obs.live.insert(key, Observation { sink: sid, seq: 2 });
                if let Some(resp) = req.response.as_mut() {
                    resp.message.set_observe_value(2);
                }
                let out = self.finish(&mut req, Status::Content, initial);
                if rpc {
                    // Queued RPCs become notifications right after this response.
                    let _ = self.platform.rpc.deliver_queued(&ctx.id, sink.as_ref());
                }
                Ok(out)
            }
        }
    }

    fn finish(
        &mut self,
        req: &mut CoapRequest<SocketAddr>,
        status: Status,
        payload: Vec<u8>,
    ) -> Vec<u8> {
        self.finish_as(req, status, payload, None)
    }

    /// The response with `payload` in `format` (default: JSON, text for errors).
    fn finish_as(
        &mut self,
        req: &mut CoapRequest<SocketAddr>,
        status: Status,
        payload: Vec<u8>,
        format: Option<ContentFormat>,
    ) -> Vec<u8> {
        if let Some(resp) = req.response.as_mut() {
            resp.set_status(status);
            if !payload.is_empty() {
                let format = format.unwrap_or(if status.is_error() {
                    ContentFormat::TextPlain
                } else {
                    ContentFormat::ApplicationJSON
                });
                resp.message.set_content_format(format);
            }
            resp.message.payload = payload;
        }
        if let Err(e) = self.blocks.intercept_response(req) {
            req.apply_from_error(e);
        }
        serialize(req)
    }

    fn notification(&mut self, n: Notification) -> Option<Vec<u8>> {
        let seq = self.obs.next_seq(&n.key)?;
        let payload = match n.downlink {
            Downlink::Attributes(v) => v,
            Downlink::Rpc { id, method, params } => {
                json!({"id": id, "method": method, "params": params})
            }
        };
        self.next_mid = self.next_mid.wrapping_add(1);
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(MessageType::NonConfirmable);
        p.header.code = MessageClass::Response(Status::Content);
        p.header.message_id = self.next_mid;
        p.set_token(n.key.1.clone());
        p.set_observe_value(seq);
        p.set_content_format(ContentFormat::ApplicationJSON);
        p.payload = payload.to_string().into_bytes();
        if self.obs.sent.len() >= SENT_CAPACITY {
            self.obs.sent.clear();
        }
        self.obs.sent.insert((n.key.0, self.next_mid), n.key.1);
        p.to_bytes_unlimited().ok()
    }

    fn cancel(&mut self, key: &ObsKey) {
        if let Some(o) = self.obs.live.remove(key) {
            self.platform.sessions.unregister(&o.sink);
        }
    }

    fn cancel_by_mid(&mut self, peer: SocketAddr, mid: u16) {
        if let Some(token) = self.obs.sent.remove(&(peer, mid)) {
            self.cancel(&(peer, token));
        }
    }
}

/// A 4.13 answer to a request too large to handle at all.
fn too_large(request: &Packet) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(MessageType::Acknowledgement);
    p.header.message_id = request.header.message_id;
    p.header.code = MessageClass::Response(Status::RequestEntityTooLarge);
    p.set_token(request.get_token().to_vec());
    p.to_bytes_unlimited().unwrap_or_default()
}

fn serialize(req: &CoapRequest<SocketAddr>) -> Vec<u8> {
    match &req.response {
        Some(resp) => resp.message.to_bytes_unlimited().unwrap_or_default(),
        None => Vec::new(),
    }
}

/// One datagram into a fresh server whose platform has a device with token `fuzz-token-0001`.
pub(crate) fn fuzz_datagram(bytes: &[u8]) {
    thread_local! {
        static PLATFORM: ib_core::testing::TestPlatform = {
            let t = ib_core::testing::TestPlatform::new();
            let p = &t.platform;
            let tenant = p.registry.tenant("default").expect("default tenant");
            let new = ib_core::model::NewDevice { name: "fuzz".into(), ..Default::default() };
            let (d, _) = p.registry.create_device(&tenant.id, new).expect("device");
            p.credentials.add_token(&d.id, "fuzz-token-0001", None).expect("token");
            t
        };
    }
    let platform = PLATFORM.with(|t| t.platform.clone());
    let mut s = Server {
        platform,
        waiting: Vec::new(),
        blocks: BlockHandler::new(BlockHandlerConfig::default()),
        dedup: Dedup::new(64),
        obs: Observations::default(),
        tx: mpsc::channel(8).0,
        next_mid: 0,
        max_payload: 4096,
    };
    let peer: SocketAddr = "127.0.0.1:5683".parse().expect("address");
    let _ = s.on_datagram(bytes, peer);
    for (_, o) in s.obs.live.drain() {
        s.platform.sessions.unregister(&o.sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn server() -> (Server, ib_core::testing::TestPlatform) {
        let t = ib_core::testing::TestPlatform::new();
        let s = Server {
            platform: t.platform.clone(),
            waiting: Vec::new(),
            blocks: BlockHandler::new(BlockHandlerConfig::default()),
            dedup: Dedup::new(64),
            obs: Observations::default(),
            tx: mpsc::channel(8).0,
            next_mid: 0,
            max_payload: 4096,
        };
        (s, t)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    fn con_post(mid: u16, path: &str, payload: &[u8]) -> Vec<u8> {
        let mut req: CoapRequest<SocketAddr> = CoapRequest::new();
        req.message.header.set_version(1);
        req.message.header.set_type(MessageType::Confirmable);
        req.message.header.message_id = mid;
        req.message.set_token(vec![1, 2]);
        req.set_method(Method::Post);
        req.set_path(path);
        req.message.payload = payload.to_vec();
        req.message.to_bytes_unlimited().unwrap()
    }

    fn code(bytes: &[u8]) -> MessageClass {
        Packet::from_bytes(bytes).unwrap().header.code
    }

    #[test]
    fn unknown_token_is_4_01_and_retransmission_gets_the_same_answer() {
        let (mut s, _t) = server();
        let req = con_post(7, "api/v1/nope/telemetry", b"{}");
        let first = s.on_datagram(&req, peer()).unwrap();
        assert_eq!(code(&first), MessageClass::Response(Status::Unauthorized));
        assert_eq!(s.on_datagram(&req, peer()).unwrap(), first);
    }

    #[test]
    fn bad_json_is_4_00_and_stores_nothing() {
        let (mut s, _t) = server();
        let t = s.platform.registry.tenant("default").unwrap();
        let new = ib_core::model::NewDevice {
            name: "d".into(),
            ..Default::default()
        };
        let (d, token) = s.platform.registry.create_device(&t.id, new).unwrap();
        let out = s
            .on_datagram(
                &con_post(1, &format!("api/v1/{token}/telemetry"), b"{\"a\":1,"),
                peer(),
            )
            .unwrap();
        assert_eq!(code(&out), MessageClass::Response(Status::BadRequest));
        let out = s
            .on_datagram(
                &con_post(
                    2,
                    &format!("api/v1/{token}/telemetry"),
                    b"[{\"a\":1},{\"b\":null}]",
                ),
                peer(),
            )
            .unwrap();
        assert_eq!(code(&out), MessageClass::Response(Status::BadRequest));
        assert!(s.platform.telemetry.latest(&d.id, None).unwrap().is_empty());
        // Valid telemetry is answered once committed.
        let out = s.on_datagram(
            &con_post(3, &format!("api/v1/{token}/telemetry"), b"{\"a\":1}"),
            peer(),
        );
        assert!(out.is_none(), "the answer waits for the commit");
        let w = s.waiting.pop().unwrap();
        let bytes = stored_answer(w.response, w.commit.wait());
        assert_eq!(code(&bytes), MessageClass::Response(Status::Changed));
        assert_eq!(s.platform.telemetry.latest(&d.id, None).unwrap().len(), 1);
    }

    #[test]
    fn datagrams_too_large_to_re_encode_get_4_13() {
        // Found by the coap_datagram fuzz target: coap-lite's block handler panicked re-encoding
        // a request above its packet size limit.
        let (mut s, _t) = server();
        for size in [1300, 5000, Packet::MAX_SIZE + 10] {
            let out = s.guarded(
                &con_post(9, "api/v1/t/telemetry", &vec![b'x'; size]),
                peer(),
            );
            let out = out.expect("a CON gets an answer");
            assert_eq!(
                code(&out),
                MessageClass::Response(Status::RequestEntityTooLarge),
                "size {size}"
            );
        }
    }

    #[test]
    fn inputs_that_crashed_the_fuzz_target_are_answered() {
        for input in [
            &include_bytes!("../fuzz-regressions/crash-e1592bd74732c2f5056dac0f54b78f786f98b7cf")[..],
            &include_bytes!("../fuzz-regressions/crash-cf250d7800cd655efd532b3a4873a6bcf85bb8af")[..],
        ] {
            let (mut s, _t) = server();
            // Not through `guarded`: the handling itself must not panic.
            let _ = s.on_datagram(input, peer());
        }
    }

    #[test]
    fn empty_con_is_a_ping() {
        let (mut s, _t) = server();
        let out = s.on_datagram(&[0x40, 0, 0x12, 0x34], peer()).unwrap();
        let p = Packet::from_bytes(&out).unwrap();
        assert_eq!(p.header.get_type(), MessageType::Reset);
        assert_eq!(p.header.message_id, 0x1234);
        // An empty message: code 0.00, no token, nothing after the header (RFC 7252 4.1).
        assert_eq!(out, [0x70, 0x00, 0x12, 0x34]);
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (mut s, _t) = server();
            let _ = s.on_datagram(&bytes, peer());
        }

        #[test]
        fn arbitrary_payloads_to_real_paths_never_panic(
            path in prop::sample::select(vec!["telemetry", "attributes", "rpc", "rpc/1", "x"]),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (mut s, _t) = server();
            let out = s.on_datagram(&con_post(1, &format!("api/v1/t/{path}"), &payload), peer());
            prop_assert!(out.is_some());
        }
    }
}
