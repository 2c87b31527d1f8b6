// One device: latest values, live charts, shared attributes, an RPC switch, its alarms and, for
// administrators, its credentials (device-credentials.js); the RPC's sending and result
// (`sendRpc`, `RpcResult`) are shared with the dashboards' widgets.
import { html, useState, useEffect } from './html.js';
import { api } from './api.js';
import { subscribe } from './live.js';
import { onTelemetry, useSeries } from './telemetry.js';
import { Chart } from './chart.js';
import { AlarmList } from './alarms.js';
import { DeviceCredentials } from './device-credentials.js';
import { time, value } from './format.js';

const RANGES = { '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };

function Latest({ latest }) {
  const keys = Object.keys(latest).sort();
  if (!keys.length) return html`<p class="muted">No telemetry yet.</p>`;
  return html`<table class="rows" data-testid="latest"><thead><tr><th>Key</th><th>Value</th><th>Time</th></tr></thead>
    <tbody>${keys.map((k) => html`<tr key=${k}><td data-label="Key">${k}</td>
      <td data-label="Value">${value(latest[k].value)}</td><td data-label="Time">${time(latest[k].ts)}</td></tr>`)}</tbody></table>`;
}

function Charts({ id, latest }) {
  const [range, setRange] = useState('1h');
  const numeric = Object.keys(latest).filter((k) => typeof latest[k].value === 'number').sort();
  const series = useSeries(id, numeric, RANGES[range]);

  return html`<section class="card" aria-labelledby="charts-h">
    <div class="toolbar"><h2 id="charts-h" style="margin-right:auto">Charts</h2>
      <label class="fit">Range <select value=${range} onChange=${(e) => setRange(e.target.value)}>
        ${Object.keys(RANGES).map((r) => html`<option value=${r}>last ${r}</option>`)}</select></label></div>
    ${numeric.length === 0 && html`<p class="muted">No numeric telemetry yet.</p>`}
    ${numeric.map((k) => html`<${Chart} key=${k} name=${k} ts=${series[k]?.ts || []} values=${series[k]?.values || []} />`)}
  </section>`;
}

function SharedAttributes({ id }) {
  const [rows, setRows] = useState(null); // [[key, text]]
  const [note, setNote] = useState('');
  useEffect(() => {
    api(`/devices/${encodeURIComponent(id)}/attributes?scope=shared`)
      .then((a) => setRows(Object.entries(a.shared || {}).map(([k, v]) => [k, JSON.stringify(v.value)])))
      .catch((e) => setNote(e.message));
  }, [id]);
  const edit = (i, j) => (e) => setRows(rows.map((r, n) => (n === i ? r.map((c, m) => (m === j ? e.target.value : c)) : r)));
  async function save(e) {
    e.preventDefault();
    const body = {};
    for (const [k, text] of rows) {
      if (!k.trim()) continue;
      try { body[k.trim()] = JSON.parse(text); } catch { body[k.trim()] = text; }
    }
    try {
      await api(`/devices/${encodeURIComponent(id)}/attributes/shared`, { method: 'POST', body });
      setNote('Saved.');
    } catch (err) { setNote(err.message); }
  }
  if (rows === null) return html`<section class="card"><h2>Shared attributes</h2><p class="loading">${note || 'Loading…'}</p></section>`;
  return html`<section class="card" aria-labelledby="attr-h"><h2 id="attr-h">Shared attributes</h2>
    <form onSubmit=${save}>
      ${rows.map(([k, v], i) => html`<div class="attr-row" key=${i}>
        <label>Key <input value=${k} onInput=${edit(i, 0)} /></label>
        <label>Value (JSON or text) <input value=${v} onInput=${edit(i, 1)} /></label></div>`)}
      <div class="actions">
        <button type="button" class="secondary" onClick=${() => setRows([...rows, ['', '']])}>Add attribute</button>
        <button type="submit">Save</button>
        <span role="status">${note}</span>
      </div>
    </form></section>`;
}

/** Sends RPC `method` with `params` to device `id` and waits for its answer (10 s): `{status,
 *  response}`, or `{status, error}` when it was refused or failed. */
export async function sendRpc(id, method, params) {
  try {
    return await api(`/devices/${encodeURIComponent(id)}/rpc`, { method: 'POST', body: { method, params, timeout_ms: 10000 } });
  } catch (err) {
    return { status: err.body?.status || 'FAILED', error: err.message };
  }
}

/** What an RPC came to: its status, the device's answer or the error. */
export function RpcResult({ result }) {
  if (!result) return null;
  return html`<div role="status" data-testid="rpc-result">
    <b data-testid="rpc-status">${result.status}</b>
    ${result.response !== undefined && result.response !== null && html`<pre>${JSON.stringify(result.response)}</pre>`}
    ${result.error && html`<p class="error">${result.error}</p>`}</div>`;
}

function RpcSwitch({ id }) {
  const [method, setMethod] = useState('setState');
  const [params, setParams] = useState('{"enabled": $value}');
  const [on, setOn] = useState(false);
  const [result, setResult] = useState(null); // {status, response} | {error}
  const [busy, setBusy] = useState(false);
  async function flip() {
    const want = !on;
    let p;
    try { p = JSON.parse(params.replaceAll('$value', String(want))); } catch {
      setResult({ status: 'INVALID', error: 'Params are not JSON' });
      return;
    }
    setBusy(true);
    setOn(want);
    setResult({ status: 'SENT' });
    const r = await sendRpc(id, method, p);
    setResult(r);
    if (r.status !== 'SUCCESSFUL') setOn(!want);
    setBusy(false);
  }
  return html`<section class="card" aria-labelledby="rpc-h"><h2 id="rpc-h">Control (RPC)</h2>
    <div class="grid">
      <label>Method <input value=${method} onInput=${(e) => setMethod(e.target.value)} /></label>
      <label>Params (JSON; $value is the switch: true or false)
        <input value=${params} onInput=${(e) => setParams(e.target.value)} /></label>
    </div>
    <p class="actions" style="align-items:center">
      <button type="button" role="switch" id="rpc-switch" aria-checked=${on ? 'true' : 'false'}
        aria-label=${`${method} switch`} disabled=${busy} onClick=${flip}></button>
      <span>${on ? 'On' : 'Off'}</span>
    </p>
    <${RpcResult} result=${result} />
  </section>`;
}

export function Device({ id }) {
  const [device, setDevice] = useState(null);
  const [latest, setLatest] = useState({});
  const [error, setError] = useState('');
  const path = `/devices/${encodeURIComponent(id)}`;
  useEffect(() => {
    api(path).then(setDevice).catch((e) => setError(e.message));
    api(`${path}/telemetry/latest`).then(setLatest).catch((e) => setError(e.message));
    const offT = onTelemetry(id, (data) => setLatest((l) => {
      const next = { ...l };
      for (const [k, pts] of Object.entries(data)) {
        const p = pts[pts.length - 1];
        if (!next[k] || next[k].ts <= p.ts) next[k] = p;
      }
      return next;
    }));
    const offS = subscribe({ subscribe: 'status', device: id }, (ev) => setDevice((d) => d && { ...d, active: ev.active }));
    return () => { offT(); offS(); };
  }, [id]);
  if (error) return html`<p class="error" role="alert">${error}</p>`;
  if (!device) return html`<p class="loading">Loading…</p>`;
  return html`
    <p><a href="#/devices">← Devices</a></p>
    <h1>${device.name} <small class="muted">${device.active ? '● online' : '○ offline'}</small></h1>
    <div class="grid">
      <section class="card" aria-labelledby="latest-h"><h2 id="latest-h">Latest values</h2><${Latest} latest=${latest} /></section>
      <${RpcSwitch} id=${device.id} />
    </div>
    <${Charts} id=${device.id} latest=${latest} />
    <${SharedAttributes} id=${device.id} />
    <section class="card" aria-labelledby="dev-alarms-h"><h2 id="dev-alarms-h">Alarms</h2>
      <${AlarmList} device=${device.id} /></section>
    <${DeviceCredentials} id=${device.id} />`;
}
