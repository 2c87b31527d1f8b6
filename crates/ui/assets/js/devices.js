// Device list: search (?q=), sort by name or creation, cursor paging, status and last seen.
// One request per page; status changes arrive on the WebSocket.
import { html, useState, useEffect, useRef } from './html.js';
import { api, query, tenantScope } from './api.js';
import { subscribe } from './live.js';
import { ago, time } from './format.js';

const PAGE = 50;

function Status({ active }) {
  if (active === undefined || active === null) return html`<span class="muted">—</span>`;
  return html`<span><span class=${`dot ${active ? 'on' : 'off'}`}></span>${active ? 'online' : 'offline'}</span>`;
}

function SortButton({ label, field, sort, setSort }) {
  const on = sort.field === field;
  const flip = () => setSort({ field, order: on && sort.order === 'asc' ? 'desc' : 'asc' });
  return html`<th aria-sort=${on ? (sort.order === 'asc' ? 'ascending' : 'descending') : 'none'}>
    <button type="button" onClick=${flip}>${label} ${on ? (sort.order === 'asc' ? '▲' : '▼') : ''}</button></th>`;
}

export function Devices() {
  const [q, setQ] = useState('');
  const [sort, setSort] = useState({ field: 'name', order: 'asc' });
  const [cursors, setCursors] = useState([undefined]); // cursor of each page visited
  const [page, setPage] = useState(null);
  const [live, setLive] = useState({}); // id -> {active, ts}
  const [error, setError] = useState('');
  const seq = useRef(0);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    const n = ++seq.current;
    const t = setTimeout(() => {
      api('/devices' + query({ q, sort: sort.field, order: sort.order, limit: PAGE, cursor, ...tenantScope() }))
        .then((p) => { if (n === seq.current) { setPage(p); setError(''); } })
        .catch((e) => n === seq.current && setError(e.message));
    }, q ? 200 : 0); // typing: wait for a pause
    return () => clearTimeout(t);
  }, [q, sort, cursor]);

  useEffect(() => subscribe({ subscribe: 'status' }, (ev) =>
    setLive((m) => ({ ...m, [ev.device]: { active: ev.active, ts: ev.ts } }))), []);

  const restart = (fn) => (v) => { fn(v); setCursors([undefined]); };
  const rows = page?.data || [];
  return html`
    <h1>Devices</h1>
    <div class="toolbar">
      <label>Search <input type="search" value=${q} placeholder="name or label"
        onInput=${(e) => restart(setQ)(e.target.value)} /></label>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${page === null ? html`<p class="loading">Loading…</p>` : html`
      <table class="rows" data-testid="device-table">
        <thead><tr>
          <${SortButton} label="Name" field="name" sort=${sort} setSort=${restart(setSort)} />
          <th>Profile</th><th>Status</th><th>Last seen</th>
          <${SortButton} label="Created" field="created" sort=${sort} setSort=${restart(setSort)} />
        </tr></thead>
        <tbody>
          ${rows.map((d) => {
            const l = live[d.id] || {};
            const active = l.active ?? d.active;
            const seen = Math.max(l.ts || 0, d.last_activity || 0);
            return html`<tr key=${d.id}>
              <td data-label="Name"><span><a href=${`#/devices/${encodeURIComponent(d.id)}`}>${d.name}</a>
                ${d.label && html` <span class="muted">${d.label}</span>`}</span></td>
              <td data-label="Profile">${d.profile}</td>
              <td data-label="Status"><${Status} active=${active} /></td>
              <td data-label="Last seen">${ago(seen)}</td>
              <td data-label="Created">${time(d.created)}</td>
            </tr>`;
          })}
          ${rows.length === 0 && html`<tr><td colspan="5" class="muted">No devices${q ? ` matching “${q}”` : ''}.</td></tr>`}
        </tbody>
      </table>
      <div class="pager">
        <button type="button" class="secondary" disabled=${cursors.length < 2}
          onClick=${() => setCursors(cursors.slice(0, -1))}>Previous</button>
        <span class="muted">Page ${cursors.length}</span>
        <button type="button" class="secondary" disabled=${!page.next}
          onClick=${() => setCursors([...cursors, page.next])}>Next</button>
      </div>`}`;
}
