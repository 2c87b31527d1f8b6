// What a rule did or would have done: the backtest of the editor's rule over a chosen time range
// (POST /rules/backtest: fired and cleared, per device, no action run) and a saved rule's failed
// actions (GET /rules/{id}/failures, the dead-letter record with payloads).
import { html, useState, useEffect } from './html.js';
import { api, tenantScope } from './api.js';
import { time } from './format.js';

const PRESETS = { '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };

/** `datetime-local` input text for a time (local time, minutes). */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 16);
}

/** Device names for ids, read once each. */
function useDeviceNames(ids) {
  const [names, setNames] = useState({});
  const key = [...new Set(ids)].sort().join(',');
  useEffect(() => {
    for (const id of new Set(ids)) {
      if (names[id]) continue;
      api(`/devices/${encodeURIComponent(id)}`)
        .then((d) => setNames((n) => ({ ...n, [id]: d.name })))
        .catch(() => {});
    }
  }, [key]);
  return names;
}

/** `spec()` gives the editor's rule (or null, having shown why); `onError` shows an API error. */
export function Backtest({ spec, onError }) {
  const [preset, setPreset] = useState('24h');
  const [from, setFrom] = useState(() => localInput(Date.now() - PRESETS['24h']));
  const [to, setTo] = useState(() => localInput(Date.now()));
  const [result, setResult] = useState(null);
  const [busy, setBusy] = useState(false);

  async function run(e) {
    e.preventDefault();
    const rule = spec();
    if (!rule) return;
    const range = preset === 'custom'
      ? { from: new Date(from).getTime(), to: new Date(to).getTime() }
      : { from: Date.now() - PRESETS[preset], to: Date.now() };
    setBusy(true);
    try {
      setResult(await api('/rules/backtest', { method: 'POST', body: { rule, ...range, ...tenantScope() } }));
    } catch (err) {
      setResult(null);
      onError(err.message);
    }
    setBusy(false);
  }

  const fired = result ? result.hits.filter((h) => h.phase === 'fire').length : 0;
  return html`<section class="card" aria-labelledby="backtest-h">
    <h2 id="backtest-h">Backtest</h2>
    <p class="muted">Replays stored telemetry of the rule's devices through the rule as it is in the form (saved or not): when it would have fired and cleared. No action runs.</p>
    <form class="toolbar" onSubmit=${run}>
      <label class="fit">Range <select value=${preset} onChange=${(e) => setPreset(e.target.value)}>
        ${Object.keys(PRESETS).map((p) => html`<option value=${p}>last ${p}</option>`)}
        <option value="custom">from … to …</option></select></label>
      ${preset === 'custom' && html`
        <label>From <input type="datetime-local" value=${from} onInput=${(e) => setFrom(e.target.value)} /></label>
        <label>To <input type="datetime-local" value=${to} onInput=${(e) => setTo(e.target.value)} /></label>`}
      <button type="submit" disabled=${busy}>${busy ? 'Running…' : 'Run backtest'}</button>
    </form>
    ${result && html`<${BacktestResult} result=${result} fired=${fired} />`}
  </section>`;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

function summary(r, fired) {
  const failed = r.errors ? `, ${r.errors} failed: ${r.first_error}` : '';
  return `Would have fired ${plural(fired, 'time')} and cleared ${plural(r.hits.length - fired, 'time')} `
    + `on ${plural(r.devices, 'device')} (${plural(r.evaluations, 'evaluation')}${failed}).`;
}

function BacktestResult({ result, fired }) {
  return html`
    <p role="status" data-testid="backtest-summary">${summary(result, fired)}</p>
    ${result.hits.length > 0 && html`<table class="rows" data-testid="backtest-hits">
      <thead><tr><th>Time</th><th>Device</th><th>Phase</th><th>Values</th></tr></thead>
      <tbody>${result.hits.map((h, i) => html`<tr key=${i}>
        <td data-label="Time">${time(h.ts)}</td>
        <td data-label="Device"><a href=${`#/devices/${encodeURIComponent(h.device)}`}>${h.device_name || h.device}</a></td>
        <td data-label="Phase"><span class=${`phase phase-${h.phase}`}>${h.phase === 'fire' ? 'fired' : 'cleared'}</span></td>
        <td data-label="Values"><code>${JSON.stringify(h.values)}</code></td>
      </tr>`)}</tbody></table>`}`;
}

export function Failures({ id }) {
  const [list, setList] = useState(null);
  const [error, setError] = useState('');
  const load = () => api(`/rules/${encodeURIComponent(id)}/failures?limit=100`)
    .then((l) => { setList(l); setError(''); })
    .catch((e) => setError(e.message));
  useEffect(() => { load(); }, [id]);
  const names = useDeviceNames((list || []).map((f) => f.device));
  return html`<section class="card" aria-labelledby="failures-h">
    <div class="toolbar"><h2 id="failures-h" class="grow">Failed actions</h2>
      <button type="button" class="secondary" onClick=${load}>Refresh</button></div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${list === null ? html`<p class="loading">Loading…</p>` : list.length === 0
      ? html`<p class="muted" data-testid="no-failures">No failed actions.</p>`
      : html`<table class="rows" data-testid="failures">
        <thead><tr><th>Time</th><th>Device</th><th>Action</th><th>Error</th><th>Payload</th></tr></thead>
        <tbody>${list.map((f) => html`<tr key=${f.id}>
          <td data-label="Time">${time(f.ts)}</td>
          <td data-label="Device"><a href=${`#/devices/${encodeURIComponent(f.device)}`}>${names[f.device] || f.device}</a></td>
          <td data-label="Action">${f.action}</td>
          <td data-label="Error" class="error">${f.error}</td>
          <td data-label="Payload"><details><summary>show</summary><pre>${JSON.stringify(f.payload, null, 2)}</pre></details></td>
        </tr>`)}</tbody></table>`}
  </section>`;
}
