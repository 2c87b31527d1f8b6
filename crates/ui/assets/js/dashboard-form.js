// The form that adds a widget to a dashboard or changes one (edit mode of dashboard.js): its
// type, then the fields that type takes (docs/API.md, "Dashboards"), the device names offered
// from the tenant's devices. The server checks the whole document when it is saved.
import { html, useState, useEffect } from './html.js';
import { tenantScope } from './api.js';
import { all } from './overview.js';

export const TYPES = ['chart', 'value', 'gauge', 'table', 'map', 'switch', 'button', 'alarms'];
const TYPE_NAMES = {
  chart: 'Chart', value: 'Value card', gauge: 'Gauge', table: 'Table', map: 'Map',
  switch: 'Switch (RPC on/off)', button: 'Button (RPC)', alarms: 'Alarm list',
};
/** Which fields each type shows, beyond type, title and place. */
const FIELDS = {
  chart: ['device', 'keys', 'range'],
  value: ['device', 'key', 'unit'],
  gauge: ['device', 'key', 'unit', 'min', 'max'],
  table: ['devices', 'keys'],
  map: ['devices'],
  switch: ['device', 'method', 'param', 'stateKey'],
  button: ['device', 'method', 'params'],
  alarms: ['alarmDevice'],
};
const LABELS = {
  device: 'Device name', keys: 'Keys (comma-separated)', range: 'Range (e.g. 15m, 1h, 24h, 7d)',
  key: 'Key', unit: 'Unit (optional)', min: 'Minimum', max: 'Maximum',
  devices: 'Device names (comma-separated)', method: 'RPC method',
  param: 'Parameter (default on)', stateKey: 'Key showing the state (optional)',
  params: 'Parameters (JSON, optional)', alarmDevice: 'Device name (empty: every alarm of the tenant)',
};
/** Default size of a new widget of each type. */
const SIZES = { chart: [6, 4], value: [3, 2], gauge: [3, 3], table: [6, 3], map: [6, 5], switch: [3, 2], button: [3, 2], alarms: [12, 4] };

const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);

/** A widget as the form's text fields. */
function toForm(w) {
  return {
    type: w.type, title: w.title || '', x: String(w.x), y: String(w.y), w: String(w.w), h: String(w.h),
    device: w.type === 'alarms' ? '' : w.device || '', alarmDevice: w.type === 'alarms' ? w.device || '' : '',
    devices: (w.devices || []).join(', '), keys: (w.keys || []).join(', '), key: w.keys?.[0] || '',
    stateKey: w.keys?.[0] || '', range: w.range || '', unit: w.unit || '',
    min: w.min ?? '', max: w.max ?? '', method: w.method || '', param: w.param || '',
    params: w.params === undefined ? '' : JSON.stringify(w.params),
  };
}

/** The widget the form describes (only the fields of its type); throws on unreadable JSON. */
function fromForm(f) {
  const w = { type: f.type, x: Number(f.x) || 0, y: Number(f.y) || 0, w: Number(f.w) || 1, h: Number(f.h) || 1 };
  if (f.title.trim()) w.title = f.title.trim();
  const has = (k) => FIELDS[f.type].includes(k);
  if (has('device') && f.device.trim()) w.device = f.device.trim();
  if (has('alarmDevice') && f.alarmDevice.trim()) w.device = f.alarmDevice.trim();
  if (has('devices')) w.devices = list(f.devices);
  if (has('keys')) w.keys = list(f.keys);
  if (has('key') && f.key.trim()) w.keys = [f.key.trim()];
  if (has('stateKey') && f.stateKey.trim()) w.keys = [f.stateKey.trim()];
  if (has('range') && f.range.trim()) w.range = f.range.trim();
  if (has('unit') && f.unit.trim()) w.unit = f.unit.trim();
  for (const k of ['min', 'max']) if (has(k) && String(f[k]).trim() !== '') w[k] = Number(f[k]);
  if (has('method') && f.method.trim()) w.method = f.method.trim();
  if (has('param') && f.param.trim()) w.param = f.param.trim();
  if (has('params') && f.params.trim()) w.params = JSON.parse(f.params);
  return w;
}

/** A new widget of `type` below everything else on the grid. */
export function newWidget(type, widgets) {
  const [w, h] = SIZES[type];
  const y = widgets.reduce((m, x) => Math.max(m, x.y + x.h), 0);
  return { type, x: 0, y, w, h };
}

/** The tenant's device names, for the device fields' suggestions. */
function useDeviceNames() {
  const [names, setNames] = useState([]);
  useEffect(() => {
    all('/devices', tenantScope(), 2000).then((l) => setNames(l.map((d) => d.name))).catch(() => {});
  }, []);
  return names;
}

/** Edits `widget` (a new one when `adding`); `onDone(widget)` with the result, `onCancel()`. */
export function WidgetForm({ widget, adding, onDone, onCancel }) {
  const [f, setF] = useState(toForm(widget));
  const [error, setError] = useState('');
  const names = useDeviceNames();
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  function changeType(e) {
    const type = e.target.value;
    const [w, h] = SIZES[type];
    setF({ ...f, type, ...(adding ? { w: String(w), h: String(h) } : {}) });
  }
  function submit(e) {
    e.preventDefault();
    try { onDone(fromForm(f)); } catch (err) { setError(`Parameters: ${err.message}`); }
  }
  const input = (k) => html`<div class="field" key=${k}><label for=${`wf-${k}`}>${LABELS[k]}</label>
    <input id=${`wf-${k}`} value=${f[k]} onInput=${set(k)}
      list=${['device', 'devices', 'alarmDevice'].includes(k) ? 'wf-device-names' : undefined}
      type=${['min', 'max'].includes(k) ? 'number' : 'text'} step="any" /></div>`;
  const place = (k, label, max) => html`<label class="fit">${label}
    <input type="number" min=${k === 'w' || k === 'h' ? 1 : 0} max=${max} value=${f[k]} onInput=${set(k)} /></label>`;
  return html`<form class="card" onSubmit=${submit} aria-labelledby="wf-h" data-testid="widget-form">
    <h2 id="wf-h">${adding ? 'Add a widget' : 'Change the widget'}</h2>
    <div class="grid">
      <div class="field"><label for="wf-type">Type</label>
        <select id="wf-type" value=${f.type} onChange=${changeType}>
          ${TYPES.map((t) => html`<option value=${t}>${TYPE_NAMES[t]}</option>`)}</select></div>
      <div class="field"><label for="wf-title">Title (optional)</label>
        <input id="wf-title" value=${f.title} onInput=${set('title')} /></div>
      ${FIELDS[f.type].map(input)}
    </div>
    <div class="toolbar">
      ${place('x', 'Column (0-11)', 11)}${place('y', 'Row', 1000)}${place('w', 'Width (1-12)', 12)}${place('h', 'Height (1-12)', 12)}
    </div>
    <datalist id="wf-device-names">${names.map((n) => html`<option value=${n} />`)}</datalist>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <div class="actions">
      <button type="submit">${adding ? 'Add to dashboard' : 'Apply'}</button>
      <button type="button" class="secondary" onClick=${onCancel}>Cancel</button>
    </div>
  </form>`;
}
