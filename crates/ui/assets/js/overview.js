// Overview: devices online/offline and active alarms by severity, from the REST API, then kept
// up to date from the WebSocket (status and alarm events); the message rate from polling
// `GET /stats` (counts since the server started; the rate is the difference between polls),
// which customers' users may not read: they get no rate.
import { html, useState, useEffect } from './html.js';
import { api, query, tenantScope, chosenTenant } from './api.js';
import { subscribe } from './live.js';
import { useMe, mayRead } from './account.js';

export const SEVERITIES = ['CRITICAL', 'MAJOR', 'MINOR', 'WARNING', 'INDETERMINATE'];

/** Every page of a list, up to `max` items. */
export async function all(path, params, max = 10_000) {
  const out = [];
  let cursor;
  do {
    const page = await api(path + query({ ...params, limit: 1000, cursor }));
    out.push(...page.data);
    cursor = page.next;
  } while (cursor && out.length < max);
  return out;
}

const STATS_EVERY_MS = 3000;

/** Messages and points per second in the chosen tenant (all tenants for a system administrator
 *  without one), from two consecutive `GET /stats`: null until the second answer (and while
 *  `enabled` is false: nothing is asked). */
function useRate(enabled) {
  const [rate, setRate] = useState(null); // {messages, points} per second
  const [error, setError] = useState('');
  useEffect(() => {
    if (!enabled) return undefined;
    let last = null; // {at, since, messages, points}
    let stopped = false;
    async function poll() {
      try {
        const s = await api('/stats' + query(tenantScope()));
        const now = { at: performance.now(), since: s.since, messages: s.messages, points: s.points };
        // A restarted server counts from zero again: start over from its first answer.
        if (last && last.since === now.since && now.at > last.at) {
          const dt = (now.at - last.at) / 1000;
          if (!stopped) setRate({ messages: (now.messages - last.messages) / dt, points: (now.points - last.points) / dt });
        }
        last = now;
        if (!stopped) setError('');
      } catch (e) { if (!stopped) setError(e.message); }
    }
    poll();
    const timer = setInterval(poll, STATS_EVERY_MS);
    return () => { stopped = true; clearInterval(timer); };
  }, [enabled]);
  return [rate, error];
}

const perSecond = (x) => (x >= 10 ? x.toFixed(0) : x.toFixed(1));

export function Overview() {
  const [devices, setDevices] = useState(null); // id -> active (true|false|undefined)
  const [alarms, setAlarms] = useState(null); // id -> alarm
  const [error, setError] = useState('');
  const showRate = mayRead(useMe(), 'stats');
  const [rate, rateError] = useRate(showRate);

  useEffect(() => {
    all('/devices', tenantScope())
      .then((list) => setDevices(Object.fromEntries(list.map((d) => [d.id, d.active]))))
      .catch((e) => setError(e.message));
    all('/alarms', { status: 'active', ...tenantScope() })
      .then((list) => setAlarms(Object.fromEntries(list.map((a) => [a.id, a]))))
      .catch((e) => setError(e.message));
    const offStatus = subscribe({ subscribe: 'status' }, (ev) =>
      setDevices((d) => d && ev.device in d ? { ...d, [ev.device]: ev.active } : d));
    const offAlarms = subscribe({ subscribe: 'alarms' }, (ev) =>
      setAlarms((m) => {
        if (!m || (chosenTenant() && ev.alarm.tenant !== chosenTenant())) return m;
        const next = { ...m };
        if (ev.alarm.cleared) delete next[ev.alarm.id]; else next[ev.alarm.id] = ev.alarm;
        return next;
      }));
    return () => { offStatus(); offAlarms(); };
  }, []);

  const states = devices ? Object.values(devices) : [];
  const online = states.filter((a) => a === true).length;
  const offline = states.filter((a) => a === false).length;
  const unknown = states.length - online - offline;
  const bySeverity = {};
  for (const a of Object.values(alarms || {})) bySeverity[a.severity] = (bySeverity[a.severity] || 0) + 1;

  return html`
    <h1>Overview</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <div class="grid">
      <section class="card" aria-labelledby="dev-h">
        <h2 id="dev-h"><a href="#/devices">Devices</a></h2>
        ${devices === null ? html`<p class="loading">Loading…</p>` : html`
          <div class="stats" data-testid="device-stats">
            <div class="stat"><b>${states.length}</b>total</div>
            <div class="stat"><b><span class="dot on"></span>${online}</b>online</div>
            <div class="stat"><b><span class="dot off"></span>${offline}</b>offline</div>
            ${unknown > 0 && html`<div class="stat"><b>${unknown}</b>not reported</div>`}
          </div>`}
      </section>
      <section class="card" aria-labelledby="al-h">
        <h2 id="al-h"><a href="#/alarms">Active alarms</a></h2>
        ${alarms === null ? html`<p class="loading">Loading…</p>` : html`
          <div class="stats" data-testid="alarm-stats">
            ${SEVERITIES.map((s) => html`
              <div class="stat"><b>${bySeverity[s] || 0}</b><span class="sev sev-${s}">${s}</span></div>`)}
          </div>`}
      </section>
      ${showRate && html`<section class="card" aria-labelledby="rate-h">
        <h2 id="rate-h">Message rate</h2>
        ${rateError && html`<p class="error">${rateError}</p>`}
        ${rate === null ? html`<p class="loading">${rateError ? '' : 'Measuring…'}</p>` : html`
          <div class="stats" data-testid="rate-stats">
            <div class="stat"><b data-testid="messages-rate">${perSecond(rate.messages)}</b>messages/s</div>
            <div class="stat"><b data-testid="points-rate">${perSecond(rate.points)}</b>points/s</div>
          </div>`}
      </section>`}
    </div>`;
}
