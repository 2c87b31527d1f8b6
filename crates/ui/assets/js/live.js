// One WebSocket to /api/v1/ws for the whole page. `subscribe(cmd, onEvent, onReady?)` sends the
// command (again after every reconnect) and routes its updates; `onReady` runs each time the
// server confirms it, so a page can read again what changed before (or between) subscriptions.
// It returns the unsubscribe function.
import { session, onSession } from './api.js';

let ws = null;
let ready = false;
let nextId = 1;
let retry = 500;
const subs = new Map(); // our id -> {cmd, onEvent, server: subscription number|null}
const statusListeners = new Set();

/** Calls `fn(connected)` on connection changes. */
export function onLive(fn) {
  statusListeners.add(fn);
  fn(ready);
  return () => statusListeners.delete(fn);
}

function setReady(v) {
  ready = v;
  statusListeners.forEach((fn) => fn(v));
}

function connect() {
  const s = session();
  if (!s || ws) return;
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  ws = new WebSocket(`${proto}://${location.host}/api/v1/ws`);
  ws.onopen = () => ws.send(JSON.stringify({ auth: session()?.token }));
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === 'ready') {
      retry = 500;
      setReady(true);
      for (const [id, sub] of subs) if (!sub.sent) send(id, sub);
    } else if (msg.type === 'subscribed') {
      const sub = subs.get(msg.id);
      if (sub) { sub.server = msg.subscription; sub.onReady?.(); }
      else post({ unsubscribe: msg.subscription }); // dropped before the server confirmed it
    } else if (msg.subscription !== undefined) {
      for (const sub of subs.values()) if (sub.server === msg.subscription) sub.onEvent(msg);
    }
  };
  ws.onclose = () => {
    ws = null;
    setReady(false);
    for (const sub of subs.values()) Object.assign(sub, { server: null, sent: false });
    if (session()) setTimeout(connect, retry);
    retry = Math.min(retry * 2, 15_000);
  };
}

/** Sends a message if the connection is open and authenticated. */
function post(msg) {
  if (!ws || !ready || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(msg));
  return true;
}

function send(id, sub) {
  sub.sent = post({ ...sub.cmd, id });
}

export function subscribe(cmd, onEvent, onReady) {
  const id = nextId++;
  const sub = { cmd, onEvent, onReady, server: null, sent: false };
  subs.set(id, sub);
  connect();
  send(id, sub);
  return () => {
    subs.delete(id);
    if (sub.server !== null) post({ unsubscribe: sub.server });
  };
}

onSession((s) => {
  if (!s) {
    if (ws) { setReady(false); ws.close(); }
  } else if (ws && ready) {
    post({ auth: s.token }); // hand over the refreshed token
  } else {
    connect();
  }
});
