// Alarms: filters (status, severity, type), cursor paging, acknowledge and clear, live updates;
// each alarm's type links to its details (alarm.js).
import { html, useState, useEffect } from './html.js';
import { api, query, tenantScope, chosenTenant } from './api.js';
import { subscribe } from './live.js';
import { time } from './format.js';
import { SEVERITIES } from './overview.js';

const STATUSES = ['active', 'cleared', 'unack', 'ack', 'any'];

/** Whether a live alarm belongs in a list filtered by `f`. */
function matches(a, f) {
  if (!f.device && chosenTenant() && a.tenant !== chosenTenant()) return false;
  const s = { active: !a.cleared, cleared: a.cleared, unack: !a.acknowledged, ack: a.acknowledged, any: true }[f.status];
  return s && (!f.severity || a.severity === f.severity) && (!f.type || a.type === f.type);
}

export function AlarmList({ device, filters = { status: 'any' } }) {
  const [list, setList] = useState(null);
  const [next, setNext] = useState(null);
  const [error, setError] = useState('');
  const params = { ...filters, device, ...(device ? {} : tenantScope()) };

  async function load(cursor) {
    try {
      const page = await api('/alarms' + query({ ...params, limit: 50, cursor }));
      setList((l) => (cursor ? [...l, ...page.data] : page.data));
      setNext(page.next);
      setError('');
    } catch (e) { setError(e.message); }
  }
  useEffect(() => { setList(null); load(); }, [device, filters.status, filters.severity, filters.type]);
  useEffect(() => subscribe(device ? { subscribe: 'alarms', device } : { subscribe: 'alarms' }, (ev) =>
    setList((l) => {
      if (!l) return l;
      const a = ev.alarm;
      const rest = l.filter((x) => x.id !== a.id);
      if (!matches(a, params)) return rest;
      return l.some((x) => x.id === a.id) ? l.map((x) => (x.id === a.id ? a : x)) : [a, ...rest];
    }), () => load()), // confirmed (again): read the first page again, nothing raised meanwhile is missed
  [device, filters.status, filters.severity, filters.type]);

  async function act(a, action) {
    try {
      const updated = await api(`/alarms/${a.id}/${action}`, { method: 'POST' });
      setList((l) => l.map((x) => (x.id === a.id ? { ...x, ...(updated || {}) } : x)).filter((x) => matches(x, params)));
    } catch (e) { setError(e.message); }
  }

  if (list === null) return html`<p class="loading">${error || 'Loading…'}</p>`;
  return html`
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <table class="rows" data-testid="alarm-table">
      <thead><tr><th>Severity</th><th>Type</th>${!device && html`<th>Device</th>`}<th>Started</th><th>Status</th><th>Actions</th></tr></thead>
      <tbody>
        ${list.map((a) => html`<tr key=${a.id} data-alarm=${a.id}>
          <td data-label="Severity"><span class="sev sev-${a.severity}">${a.severity}</span></td>
          <td data-label="Type"><a href=${`#/alarms/${a.id}`} aria-label=${`${a.type} on ${a.originator_name}: details`}>${a.type}</a></td>
          ${!device && html`<td data-label="Device"><a href=${`#/devices/${encodeURIComponent(a.originator)}`}>${a.originator_name}</a></td>`}
          <td data-label="Started">${time(a.start_ts)}</td>
          <td data-label="Status" data-testid="alarm-status">${a.status}</td>
          <td data-label="Actions"><span class="actions">
            ${!a.acknowledged && html`<button type="button" class="secondary" onClick=${() => act(a, 'ack')}
              aria-label=${`Acknowledge ${a.type} on ${a.originator_name}`}>Acknowledge</button>`}
            ${!a.cleared && html`<button type="button" class="secondary" onClick=${() => act(a, 'clear')}
              aria-label=${`Clear ${a.type} on ${a.originator_name}`}>Clear</button>`}
          </span></td>
        </tr>`)}
        ${list.length === 0 && html`<tr><td colspan="6" class="muted">No alarms.</td></tr>`}
      </tbody>
    </table>
    ${next && html`<div class="pager"><button type="button" class="secondary" onClick=${() => load(next)}>Load more</button></div>`}`;
}

export function Alarms() {
  const [filters, setFilters] = useState({ status: 'active', severity: '', type: '' });
  const [type, setType] = useState('');
  const set = (k) => (e) => setFilters({ ...filters, [k]: e.target.value });
  return html`
    <h1>Alarms</h1>
    <form class="toolbar" onSubmit=${(e) => { e.preventDefault(); setFilters({ ...filters, type }); }}>
      <label>Status <select value=${filters.status} onChange=${set('status')}>
        ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}</select></label>
      <label>Severity <select value=${filters.severity} onChange=${set('severity')}>
        <option value="">all</option>${SEVERITIES.map((s) => html`<option value=${s}>${s}</option>`)}</select></label>
      <label>Type <input value=${type} onInput=${(e) => setType(e.target.value)} placeholder="exact type" /></label>
      <button type="submit">Filter</button>
    </form>
    <div class="card"><${AlarmList} filters=${filters} /></div>`;
}
