//! The live WebSocket of the management API, `GET /api/v1/ws`: device events (telemetry,
//! client attributes, connected/disconnected) and alarm changes pushed to browsers and programs
//! as the platform bus carries them. This module owns the socket's authentication (bearer
//! header, `?token=`, or a first `{"auth":..}` message; the token is verified again
//! periodically), the per-connection subscriptions and their visibility checks (another
//! tenant's or customer's device does not exist, on subscribe and on every event), the bounded
//! outgoing queue that drops the oldest updates of a slow client and tells it how many, and the
//! keep-alive pings.
//!
//! Protocol, JSON text messages both ways (a command's optional `id` is echoed in its reply):
//! - client: `{"auth":"<token>"}` (first message when the upgrade carried no token; later, a
//!   refreshed token of the same user), `{"subscribe":"telemetry","device":D,"keys":[..]?}`,
//!   `{"subscribe":"status","device":D?}`, `{"subscribe":"attributes","device":D}`,
//!   `{"subscribe":"alarms","device":D?}`, `{"unsubscribe":N}`.
//! - server: `ready`, `subscribed`, `unsubscribed`, `error` (`code`: `unauthorized`, `invalid`,
//!   `not_found`, `limit_exceeded`, `internal`), `telemetry`, `status`, `attributes`, `alarm`,
//!   `dropped`.
//!   A missing or failing token: the `unauthorized` error, then close code 4401.
//!
//! The route sits outside the authorisation layer (browsers cannot set headers on a
//! WebSocket); its settings come from an optional [`LiveConfig`] request extension.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ib_core::bus::{Event, EventKind};
use ib_core::CoreError;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio::sync::Notify;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use crate::auth::Caller;
use crate::ApiState;

/// Close code: no valid token (never given, refused, expired or revoked).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code: the client sends commands without reading the replies.
const CLOSE_POLICY: u16 = 1008;
/// How long the last replies and the close frame may take once a session ends.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Device visibility answers kept per connection (cleared when full and at every re-check).
const VISIBILITY_CACHE: usize = 4096;

/// Settings of the live socket: the defaults, unless the request carries a [`LiveConfig`]
/// extension (`api::router(..).layer(Extension(config))`).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Messages waiting for a slow client; above it the oldest updates are dropped.
    pub queue: usize,
    /// Bytes waiting for a slow client; above it the oldest updates are dropped.
    pub queue_bytes: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Time to send `{"auth":..}` when the upgrade carried no token.
    pub auth_timeout: Duration,
    /// A ping this often; a client silent for two intervals is dropped as dead.
    pub ping_interval: Duration,
    /// The token is verified again this often (expired or revoked: closed with 4401).
    pub reverify_interval: Duration,
    /// Largest message accepted from the client (bytes).
    pub max_message: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            queue: 1024,
            queue_bytes: 8 << 20,
            max_subscriptions: 100,
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            reverify_interval: Duration::from_secs(60),
            max_message: 64 << 10,
        }
    }
}

/// The live socket's route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/ws", get(upgrade))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn upgrade(
    State(s): State<ApiState>,
    config: Option<Extension<LiveConfig>>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
    ws: WebSocketUpgrade,
) -> Response {
    let config = config.map(|Extension(c)| c).unwrap_or_default();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let token = bearer
        .or_else(|| query.ok().and_then(|Query(q)| q.token))
        .filter(|t| !t.is_empty());
    ws.max_message_size(config.max_message)
        .max_frame_size(config.max_message)
        .on_upgrade(move |socket| serve(s, config, socket, token))
}

/// How a session ends.
enum End {
    /// The peer went away or stopped answering: nothing more to send.
    Gone,
    /// The queued replies, then a close frame.
    Close(u16, &'static str),
}

async fn serve(s: ApiState, config: LiveConfig, socket: WebSocket, token: Option<String>) {
    let (sink, mut stream) = socket.split();
    let outbox = Outbox::new(&config);
    let writer = write_loop(sink, &outbox);
    tokio::pin!(writer);
    let session = async {
        match authenticate(&s, &config, &mut stream, &outbox, token).await {
            Ok(conn) => conn.run(&mut stream).await,
            Err(end) => end,
        }
    };
    tokio::pin!(session);
    let end = tokio::select! {
        end = &mut session => end,
        // The writer only stops by itself when the socket fails.
        () = &mut writer => return,
    };
    if let End::Close(code, reason) = end {
        let reason = reason.into();
        outbox.close(CloseFrame { code, reason });
        let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
    }
}

/// Takes the token from the upgrade or the first message, and verifies it.
async fn authenticate<'a>(
    s: &'a ApiState,
    config: &'a LiveConfig,
    stream: &mut SplitStream<WebSocket>,
    outbox: &'a Outbox,
    token: Option<String>,
) -> Result<Conn<'a>, End> {
    let (token, id) = match token {
        Some(t) => (t, None),
        None => match tokio::time::timeout(config.auth_timeout, first_auth(stream)).await {
            Ok(Ok(first)) => first,
            Ok(Err(None)) => return Err(End::Gone),
            Ok(Err(Some(why))) => return Err(refuse(outbox, None, why)),
            Err(_) => {
                let why = format!("no token within {:?}", config.auth_timeout);
                return Err(refuse(outbox, None, why));
            }
        },
    };
    let caller = match s.auth.verify(&token) {
        Ok(caller) => caller,
        Err(e) => return Err(refuse(outbox, id.as_ref(), e.message)),
    };
    outbox.push(reply(with_id(ready(&caller), id.as_ref())));
    Ok(Conn {
        s,
        config,
        outbox,
        token,
        caller,
        subs: BTreeMap::new(),
        last_sub: 0,
        bus: None,
        alarms: None,
        visible: HashMap::new(),
    })
}

/// Waits for `{"auth":"<token>"}`: `Err(Some(why))` for anything else, `Err(None)` when the
/// peer leaves.
async fn first_auth(
    stream: &mut SplitStream<WebSocket>,
) -> Result<(String, Option<Value>), Option<String>> {
    loop {
        let text = match stream.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => return Err(Some("send JSON text messages".into())),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(None),
        };
        let cmd = serde_json::from_str::<Map<String, Value>>(text.as_str()).unwrap_or_default();
        return match cmd.get("auth").and_then(Value::as_str) {
            Some(token) => Ok((token.to_string(), cmd.get("id").cloned())),
            None => Err(Some("authenticate first: {\"auth\":\"<token>\"}".into())),
        };
    }
}

/// Queues the `unauthorized` error; the session then closes with 4401.
fn refuse(outbox: &Outbox, id: Option<&Value>, message: String) -> End {
    outbox.push(reply(error(id, "unauthorized", &message)));
    End::Close(CLOSE_UNAUTHORIZED, "unauthorized")
}

fn ready(caller: &Caller) -> Value {
    json!({"type": "ready", "role": caller.role.as_str(), "name": caller.name})
}

fn reply(v: Value) -> Item {
    Item::Reply(v.to_string())
}

fn with_id(mut reply: Value, id: Option<&Value>) -> Value {
    if let (Some(id), Value::Object(map)) = (id, &mut reply) {
        map.insert("id".into(), id.clone());
    }
    reply
}

fn error(id: Option<&Value>, code: &str, message: &str) -> Value {
    with_id(
        json!({"type": "error", "code": code, "message": message}),
        id,
    )
}

/// A refused command: error code and message.
type Refusal = (&'static str, String);

fn invalid(message: &str) -> Refusal {
    ("invalid", message.to_string())
}

/// The subscription kinds, for the error naming them.
const SUBSCRIPTIONS: &str =
    "\"subscribe\" is one of \"telemetry\", \"status\", \"attributes\", \"alarms\"";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Telemetry,
    Status,
    Attributes,
    Alarms,
}

/// What a subscription wants.
struct Filter {
    kind: Kind,
    /// `None`: every device the caller may see (status and alarms only).
    device: Option<String>,
    /// Telemetry keys (`None`: all).
    keys: Option<Vec<String>>,
}

impl Filter {
    /// The update for subscription `n`, if it wants this event.
    fn update(&self, n: u64, ev: &Event) -> Option<Value> {
        if self.device.as_deref().is_some_and(|d| d != &*ev.device) {
            return None;
        }
        if let (Kind::Alarms, EventKind::Alarm(alarm)) = (self.kind, &ev.kind) {
            return Some(json!({"type": "alarm", "subscription": n, "alarm": &**alarm}));
        }
        let mut u = json!({"subscription": n, "device": &*ev.device});
        let fields = match (self.kind, &ev.kind) {
            (Kind::Telemetry, EventKind::Telemetry(points)) => {
                let mut data = Map::new();
                let wanted = |key: &String| self.keys.as_ref().is_none_or(|k| k.contains(key));
                for p in points.iter().filter(|p| wanted(&p.key)) {
                    let list = data.entry(p.key.clone()).or_insert_with(|| json!([]));
                    if let Value::Array(list) = list {
                        list.push(json!({"ts": p.ts, "value": p.value}));
                    }
                }
                if data.is_empty() {
                    return None;
                }
                json!({"type": "telemetry", "data": data})
            }
            (Kind::Status, EventKind::Connected { transport }) => {
                json!({"type": "status", "active": true, "ts": ev.ts, "transport": transport})
            }
            (Kind::Status, EventKind::Disconnected { transport }) => {
                json!({"type": "status", "active": false, "ts": ev.ts, "transport": transport})
            }
            (Kind::Attributes, EventKind::Attributes(map)) => {
                json!({"type": "attributes", "scope": "client", "ts": ev.ts, "data": map})
            }
            _ => return None,
        };
        if let (Value::Object(u), Value::Object(fields)) = (&mut u, fields) {
            u.extend(fields);
        }
        Some(u)
    }
}

/// An authenticated connection.
struct Conn<'a> {
    s: &'a ApiState,
    config: &'a LiveConfig,
    outbox: &'a Outbox,
    token: String,
    caller: Caller,
    subs: BTreeMap<u64, Filter>,
    last_sub: u64,
    /// Subscribed to the bus's device messages only while a subscription wants them.
    bus: Option<Receiver<Arc<Event>>>,
    /// Subscribed to the bus's alarm changes only while an alarm subscription exists.
    alarms: Option<Receiver<Arc<Event>>>,
    /// Device id → whether this customer user may see it.
    visible: HashMap<String, bool>,
}

fn every(period: Duration) -> Interval {
    let mut i = interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Conn<'_> {
    async fn run(mut self, stream: &mut SplitStream<WebSocket>) -> End {
        let mut ping = every(self.config.ping_interval);
        let mut reverify = every(self.config.reverify_interval);
        let mut heard = Instant::now();
        loop {
            let step = tokio::select! {
                msg = stream.next() => {
                    heard = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(text))) => self.command(text.as_str()),
                        Some(Ok(Message::Binary(_))) => {
                            self.send(error(None, "invalid", "send JSON text messages"))
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                        // Sending ours flushes the reply to theirs.
                        Some(Ok(Message::Close(_))) => Err(End::Close(1000, "")),
                        Some(Err(_)) | None => Err(End::Gone),
                    }
                }
                ev = next_event(&mut self.bus) => {
                    if let Err(RecvError::Closed) = ev {
                        self.bus = None;
                    }
                    self.event(ev);
                    Ok(())
                }
                ev = next_event(&mut self.alarms) => {
                    if let Err(RecvError::Closed) = ev {
                        self.alarms = None;
                    }
                    self.event(ev);
                    Ok(())
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= self.config.ping_interval * 2 {
                        tracing::debug!(caller = %self.caller.name, "silent live socket dropped");
                        Err(End::Gone)
                    } else if self.outbox.push(Item::Ping) {
                        Ok(())
                    } else {
                        Err(End::Close(CLOSE_POLICY, "replies not read"))
                    }
                }
                _ = reverify.tick() => {
                    self.visible.clear();
                    match self.s.auth.verify(&self.token) {
                        Ok(_) => Ok(()),
                        Err(e) => Err(refuse(self.outbox, None, e.message)),
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Queues a reply; a client that lets replies pile up is closed.
    fn send(&self, v: Value) -> Result<(), End> {
        let fits = self.outbox.push(reply(v));
        fits.then_some(())
            .ok_or(End::Close(CLOSE_POLICY, "replies not read"))
    }

    fn command(&mut self, text: &str) -> Result<(), End> {
        let cmd = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(cmd)) => cmd,
            Ok(_) => return self.send(error(None, "invalid", "a command is a JSON object")),
            Err(e) => return self.send(error(None, "invalid", &format!("invalid JSON: {e}"))),
        };
        let id = cmd.get("id");
        let result = if cmd.contains_key("subscribe") {
            self.subscribe(&cmd)
        } else if let Some(n) = cmd.get("unsubscribe") {
            self.unsubscribe(n)
        } else if let Some(token) = cmd.get("auth") {
            self.reauth(token, id)?
        } else {
            Err(invalid(
                "unknown command: expected \"subscribe\", \"unsubscribe\" or \"auth\"",
            ))
        };
        match result {
            Ok(reply) => self.send(with_id(reply, id)),
            Err((code, message)) => self.send(error(id, code, &message)),
        }
    }

    fn subscribe(&mut self, cmd: &Map<String, Value>) -> Result<Value, Refusal> {
        let kind = match cmd.get("subscribe").and_then(Value::as_str) {
            Some("telemetry") => Kind::Telemetry,
            Some("status") => Kind::Status,
            Some("attributes") => Kind::Attributes,
            Some("alarms") => Kind::Alarms,
            _ => return Err(invalid(SUBSCRIPTIONS)),
        };
        let device = match cmd.get("device") {
            None | Some(Value::Null) if matches!(kind, Kind::Status | Kind::Alarms) => None,
            None | Some(Value::Null) => {
                return Err(invalid("this subscription needs a \"device\""))
            }
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => return Err(invalid("\"device\" is a device id")),
        };
        let keys = match (kind, cmd.get("keys")) {
            (_, None | Some(Value::Null)) => None,
            (Kind::Telemetry, Some(Value::Array(list))) if !list.is_empty() => Some(
                list.iter()
                    .map(|k| k.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| invalid("\"keys\" is a list of telemetry keys"))?,
            ),
            _ => return Err(invalid("\"keys\" is a non-empty list of telemetry keys")),
        };
        if self.subs.len() >= self.config.max_subscriptions {
            let max = self.config.max_subscriptions;
            let message = format!("at most {max} subscriptions per connection");
            return Err(("limit_exceeded", message));
        }
        if let Some(d) = &device {
            self.check_device(d)?;
        }
        self.last_sub += 1;
        let n = self.last_sub;
        self.subs.insert(n, Filter { kind, device, keys });
        self.listen();
        Ok(json!({"type": "subscribed", "subscription": n}))
    }

    fn unsubscribe(&mut self, n: &Value) -> Result<Value, Refusal> {
        let Some(n) = n.as_u64() else {
            return Err(invalid("\"unsubscribe\" is a subscription number"));
        };
        if self.subs.remove(&n).is_none() {
            return Err(("not_found", format!("subscription {n} not found")));
        }
        self.listen();
        Ok(json!({"type": "unsubscribed", "subscription": n}))
    }

    /// Subscribes to the bus channels the subscriptions need, and drops the others.
    fn listen(&mut self) {
        let alarms = self.subs.values().any(|f| f.kind == Kind::Alarms);
        let messages = self.subs.values().any(|f| f.kind != Kind::Alarms);
        let bus = &self.s.platform.bus;
        match (messages, self.bus.is_some()) {
            (true, false) => self.bus = Some(bus.subscribe()),
            (false, true) => self.bus = None,
            _ => {}
        }
        match (alarms, self.alarms.is_some()) {
            (true, false) => self.alarms = Some(bus.subscribe_alarms()),
            (false, true) => self.alarms = None,
            _ => {}
        }
    }

    /// A refreshed token of the same user and reach; one that does not verify closes.
    fn reauth(&mut self, token: &Value, id: Option<&Value>) -> Result<Result<Value, Refusal>, End> {
        let Some(token) = token.as_str() else {
            return Ok(Err(invalid("\"auth\" is an access token")));
        };
        let caller = match self.s.auth.verify(token) {
            Ok(c) => c,
            Err(e) => return Err(refuse(self.outbox, id, e.message)),
        };
        let (old, new) = (&self.caller, &caller);
        if (&old.id, old.kind, old.role, &old.reach) != (&new.id, new.kind, new.role, &new.reach) {
            return Ok(Err(invalid(
                "a connection keeps its user and reach: open another one",
            )));
        }
        self.token = token.to_string();
        self.caller = caller;
        Ok(Ok(ready(&self.caller)))
    }

    /// A device the caller may not see answers exactly like one that does not exist.
    fn check_device(&mut self, id: &str) -> Result<(), Refusal> {
        match self.s.platform.registry.device(id) {
            Ok(d) if self.caller.covers(&d.tenant, d.customer.as_deref()) => Ok(()),
            Ok(_) | Err(CoreError::NotFound(_)) => {
                Err(("not_found", format!("device {id:?} not found")))
            }
            Err(e) => {
                tracing::warn!(device = %id, error = %e, "live socket: device lookup failed");
                Err(("internal", "the device could not be looked up".into()))
            }
        }
    }

    /// Whether the caller may see a device's events: its tenant, and for customer users its
    /// customer (looked up once per device, again after every re-verification).
    fn sees(&mut self, tenant: &str, device: &str) -> bool {
        if self.caller.customer().is_none() || self.caller.reach.tenant.as_deref() != Some(tenant) {
            return self.caller.covers(tenant, None);
        }
        if let Some(&v) = self.visible.get(device) {
            return v;
        }
        let visible = match self.s.platform.registry.device(device) {
            Ok(d) => d.tenant == tenant && self.caller.covers(tenant, d.customer.as_deref()),
            Err(CoreError::NotFound(_)) => false,
            Err(e) => {
                tracing::warn!(device = %device, error = %e, "live socket: device lookup failed");
                return false;
            }
        };
        if self.visible.len() >= VISIBILITY_CACHE {
            self.visible.clear();
        }
        self.visible.insert(device.to_string(), visible);
        visible
    }

    fn event(&mut self, ev: Result<Arc<Event>, RecvError>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => return self.outbox.lost(n),
            Err(RecvError::Closed) => return,
        };
        let updates: Vec<Value> = self
            .subs
            .iter()
            .filter_map(|(n, f)| f.update(*n, &ev))
            .collect();
        if updates.is_empty() || !self.sees(&ev.tenant, &ev.device) {
            return;
        }
        for u in updates {
            self.outbox.push(Item::Update(u.to_string()));
        }
    }
}

async fn next_event(bus: &mut Option<Receiver<Arc<Event>>>) -> Result<Arc<Event>, RecvError> {
    match bus {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One queued outgoing message.
enum Item {
    /// An event update (JSON text): dropped, oldest first, when the queue is full.
    Update(String),
    /// A reply to a command or an error (JSON text): never dropped.
    Reply(String),
    Ping,
}

#[derive(Default)]
struct Queue {
    /// The items and their text sizes.
    items: VecDeque<(Item, usize)>,
    bytes: usize,
    /// Updates lost since the client was last told.
    dropped: u64,
    closing: Option<CloseFrame>,
}

/// The bounded queue between a session and its socket writer.
struct Outbox {
    q: Mutex<Queue>,
    /// Wakes the one writer (a permit is kept while it is busy).
    wake: Notify,
    max: usize,
    max_bytes: usize,
}

impl Outbox {
    fn new(config: &LiveConfig) -> Outbox {
        let (q, wake) = (Mutex::default(), Notify::new());
        let (max, max_bytes) = (config.queue.max(1), config.queue_bytes.max(1));
        Outbox {
            q,
            wake,
            max,
            max_bytes,
        }
    }

    /// Queues an item, dropping the oldest updates above the bounds; false when the queue
    /// holds nothing but replies and is still over its bound.
    fn push(&self, item: Item) -> bool {
        let size = match &item {
            Item::Update(t) | Item::Reply(t) => t.len(),
            Item::Ping => 0,
        };
        let mut q = self.q.lock();
        if q.closing.is_some() {
            return true;
        }
        q.bytes += size;
        // A ping goes first: it measures the client's liveness, not its backlog.
        match item {
            Item::Ping => q.items.push_front((item, size)),
            _ => q.items.push_back((item, size)),
        }
        let mut dropped = 0;
        let over = |q: &Queue| q.items.len() > self.max || q.bytes > self.max_bytes;
        while over(&q) {
            let Some(i) = q
                .items
                .iter()
                .position(|(i, _)| matches!(i, Item::Update(_)))
            else {
                break;
            };
            if let Some((_, size)) = q.items.remove(i) {
                q.bytes -= size;
                dropped += 1;
            }
        }
        q.dropped += dropped;
        let fits = !over(&q);
        drop(q);
        if dropped > 0 {
            metrics::counter!("api_ws_dropped_total").increment(dropped);
        }
        self.wake.notify_one();
        fits
    }

    /// Updates lost before they reached this connection (the bus lagged).
    fn lost(&self, n: u64) {
        self.q.lock().dropped += n;
        metrics::counter!("api_ws_dropped_total").increment(n);
        self.wake.notify_one();
    }

    /// Ends the session: queued updates are discarded, replies still go, then the frame.
    fn close(&self, frame: CloseFrame) {
        let mut q = self.q.lock();
        q.items.retain(|(i, _)| !matches!(i, Item::Update(_)));
        q.bytes = q.items.iter().map(|(_, size)| size).sum();
        q.closing = Some(frame);
        drop(q);
        self.wake.notify_one();
    }

    /// The next message to send: a `dropped` notice first when updates were lost.
    async fn next(&self) -> Message {
        loop {
            {
                let mut q = self.q.lock();
                if q.dropped > 0 && q.closing.is_none() {
                    let count = std::mem::take(&mut q.dropped);
                    let notice = json!({"type": "dropped", "count": count}).to_string();
                    return Message::Text(notice.into());
                }
                if let Some((item, size)) = q.items.pop_front() {
                    q.bytes -= size;
                    return match item {
                        Item::Update(text) | Item::Reply(text) => Message::Text(text.into()),
                        Item::Ping => Message::Ping(bytes::Bytes::new()),
                    };
                }
                if let Some(frame) = q.closing.take() {
                    return Message::Close(Some(frame));
                }
            }
            self.wake.notified().await;
        }
    }
}

/// Sends what the outbox gives until the close frame or a socket error.
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, outbox: &Outbox) {
    loop {
        let msg = outbox.next().await;
        let last = matches!(msg, Message::Close(_));
        if sink.send(msg).await.is_err() || last {
            return;
        }
    }
}
