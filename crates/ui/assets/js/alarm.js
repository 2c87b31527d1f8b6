// One alarm (#/alarms/ID): its details, acknowledge and clear, the assignee (PUT
// /alarms/{id}/assignee, chosen among the tenant's users when the caller may list them, else
// typed), and its comments (read, add). Kept current from the WebSocket's alarm events.
import { html, useState, useEffect } from './html.js';
import { api } from './api.js';
import { subscribe } from './live.js';
import { all } from './overview.js';
import { time } from './format.js';

/** The alarm's tenant's users, or null when the caller may not list users (operators, viewers). */
function useUsers(tenant) {
  const [users, setUsers] = useState(undefined);
  useEffect(() => {
    if (!tenant) return;
    all('/users', { tenant }).then(setUsers).catch(() => setUsers(null));
  }, [tenant]);
  return users;
}

function Assignee({ alarm, onChange }) {
  const users = useUsers(alarm.tenant);
  const [choice, setChoice] = useState(alarm.assignee || '');
  const [error, setError] = useState('');
  useEffect(() => setChoice(alarm.assignee || ''), [alarm.assignee]);
  const current = alarm.assignee && (users?.find((u) => u.id === alarm.assignee)?.username || alarm.assignee);

  async function assign(e) {
    e.preventDefault();
    try {
      onChange(await api(`/alarms/${alarm.id}/assignee`, { method: 'PUT', body: { user: choice.trim() || null } }));
      setError('');
    } catch (err) { setError(err.message); }
  }
  return html`<section class="card" aria-labelledby="assignee-h">
    <h2 id="assignee-h">Assignee</h2>
    <p data-testid="assignee">${current ? html`Assigned to <b>${current}</b>` : html`<span class="muted">Nobody</span>`}</p>
    <form class="toolbar" onSubmit=${assign}>
      ${users ? html`<label>User <select aria-label="User" value=${choice} onChange=${(e) => setChoice(e.target.value)}>
          <option value="">— nobody —</option>
          ${users.map((u) => html`<option value=${u.id}>${u.username} (${u.role})</option>`)}</select></label>`
        : html`<label>User name <input aria-label="User name" value=${choice} onInput=${(e) => setChoice(e.target.value)}
          placeholder="empty: nobody" /></label>`}
      <button type="submit">Assign</button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </section>`;
}

function Comments({ id, version }) {
  const [list, setList] = useState(null);
  const [text, setText] = useState('');
  const [error, setError] = useState('');
  const load = () => api(`/alarms/${id}/comments`).then((p) => setList(p.data)).catch((e) => setError(e.message));
  // `version` changes with every live update of the alarm: acknowledging and clearing add
  // system comments.
  useEffect(() => { load(); }, [id, version]);

  async function add(e) {
    e.preventDefault();
    if (!text.trim()) return;
    try {
      const c = await api(`/alarms/${id}/comments`, { method: 'POST', body: { text } });
      setList((l) => [...(l || []).filter((x) => x.id !== c.id), c]);
      setText('');
      setError('');
    } catch (err) { setError(err.message); }
  }
  return html`<section class="card" aria-labelledby="comments-h">
    <h2 id="comments-h">Comments</h2>
    ${list === null ? html`<p class="loading">Loading…</p>` : html`<ol class="comments" data-testid="comments">
      ${list.map((c) => html`<li key=${c.id} class=${c.system ? 'system' : ''}>
        <div class="muted"><b>${c.author}</b> · ${time(c.ts)}</div><div>${c.text}</div></li>`)}
      ${list.length === 0 && html`<li class="muted">No comments yet.</li>`}</ol>`}
    <form onSubmit=${add}>
      <label>Comment <textarea rows="2" value=${text} onInput=${(e) => setText(e.target.value)}></textarea></label>
      <div class="actions" style="margin-top:.5rem"><button type="submit">Add comment</button></div>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </section>`;
}

export function AlarmDetail({ id }) {
  const [alarm, setAlarm] = useState(null);
  const [version, setVersion] = useState(0);
  const [error, setError] = useState('');
  const update = (a) => { setAlarm(a); setVersion((v) => v + 1); };

  useEffect(() => {
    api(`/alarms/${encodeURIComponent(id)}`).then(setAlarm).catch((e) => setError(e.message));
  }, [id]);
  const device = alarm?.originator;
  // Read again once subscribed: a change made before the subscription took effect is not lost.
  useEffect(() => device && subscribe({ subscribe: 'alarms', device }, (ev) => {
    if (String(ev.alarm.id) === String(id)) update(ev.alarm);
  }, () => api(`/alarms/${encodeURIComponent(id)}`).then(update).catch(() => {})), [device, id]);

  async function act(action) {
    try {
      const a = await api(`/alarms/${alarm.id}/${action}`, { method: 'POST' });
      if (a) update(a);
    } catch (e) { setError(e.message); }
  }

  if (!alarm) return error ? html`<p class="error" role="alert">${error}</p>` : html`<p class="loading">Loading…</p>`;
  const row = (label, v) => html`<tr><th scope="row">${label}</th><td>${v}</td></tr>`;
  return html`
    <p><a href="#/alarms">← Alarms</a></p>
    <h1><span class="sev sev-${alarm.severity}">${alarm.severity}</span> ${alarm.type}</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <div class="grid">
      <section class="card" aria-labelledby="alarm-h">
        <h2 id="alarm-h">Details</h2>
        <table class="facts" data-testid="alarm-facts"><tbody>
          ${row('Device', html`<a href=${`#/devices/${encodeURIComponent(alarm.originator)}`}>${alarm.originator_name}</a>`)}
          ${row('Status', html`<span data-testid="alarm-status">${alarm.status}</span>`)}
          ${row('Started', time(alarm.start_ts))}
          ${row('Last raised', time(alarm.end_ts))}
          ${row('Acknowledged', time(alarm.ack_ts))}
          ${row('Cleared', time(alarm.clear_ts))}
          ${alarm.details && Object.keys(alarm.details).length > 0 && row('Details', html`<pre>${JSON.stringify(alarm.details, null, 2)}</pre>`)}
        </tbody></table>
        <div class="actions" style="margin-top:.75rem">
          ${!alarm.acknowledged && html`<button type="button" onClick=${() => act('ack')}>Acknowledge</button>`}
          ${!alarm.cleared && html`<button type="button" class="secondary" onClick=${() => act('clear')}>Clear</button>`}
        </div>
      </section>
      <${Assignee} alarm=${alarm} onChange=${update} />
    </div>
    <${Comments} id=${alarm.id} version=${version} />`;
}
