// What each kind of dashboard widget shows (chart, value card, gauge, table, map, switch, button,
// alarm list), live, and the resolving of the device names a dashboard document uses into the
// tenant's devices (`GET /devices?q=NAME`, the exact name kept): a missing device is said inside
// the widget. The grid, edit mode and saving are dashboard.js's.
import { html, useState, useEffect } from './html.js';
import { api, query, tenantScope, chosenTenant } from './api.js';
import { Chart } from './chart.js';
import { useLatest, useSeries } from './telemetry.js';
import { AlarmList } from './alarms.js';
import { sendRpc, RpcResult } from './device.js';
import { time, value as show } from './format.js';

const found = new Map(); // "tenant|name" -> Promise<device|null>

/** Forgets the devices found so far (a dashboard page reads them again when opened). */
export function forgetDevices() {
  found.clear();
}

/** The tenant's device named `name`, or null. */
function lookUp(name) {
  const key = `${chosenTenant() || ''}|${name}`;
  if (!found.has(key)) {
    found.set(key, (async () => {
      let cursor;
      for (let pages = 0; pages < 20; pages++) { // `q` matches parts of names and labels too
        const page = await api('/devices' + query({ q: name, limit: 1000, cursor, ...tenantScope() }));
        const d = page.data.find((x) => x.name === name);
        if (d) return d;
        if (!page.next) return null;
        cursor = page.next;
      }
      return null;
    })().catch((e) => { found.delete(key); throw e; }));
  }
  return found.get(key);
}

/** `{name: device | null (not found) | undefined (looking)}` for `names`; `error` if the API failed. */
export function useDevices(names) {
  const [devices, setDevices] = useState({});
  const [error, setError] = useState('');
  const list = names.filter(Boolean).join('\n');
  useEffect(() => {
    let stale = false;
    setDevices({});
    for (const name of list ? list.split('\n') : []) {
      lookUp(name)
        .then((d) => !stale && setDevices((m) => ({ ...m, [name]: d })))
        .catch((e) => !stale && setError(e.message));
    }
    return () => { stale = true; };
  }, [list]);
  return { devices, error };
}

export function Missing({ name }) {
  return html`<p class="error" role="alert" data-testid="widget-missing">device “${name}” not found</p>`;
}

/** Renders `children(device)` once the widget's one device is found. */
function OneDevice({ name, children }) {
  const { devices, error } = useDevices([name]);
  if (!name) return html`<p class="muted">No device chosen.</p>`;
  if (error) return html`<p class="error" role="alert">${error}</p>`;
  const d = devices[name];
  if (d === undefined) return html`<p class="loading">Loading…</p>`;
  if (d === null) return html`<${Missing} name=${name} />`;
  return children(d);
}

/** Milliseconds of a range like `15m`, `1h`, `24h`, `7d` (an hour when not understood). */
export function rangeMs(text) {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$/.exec(String(text || '1h').trim());
  if (!m) return 3600e3;
  return Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 }[m[2]];
}

function ChartWidget({ w, device, height }) {
  if (!w.keys.length) return html`<p class="muted">No keys chosen.</p>`;
  return html`<${Charts} w=${w} device=${device} height=${height} />`;
}

function Charts({ w, device, height }) {
  const series = useSeries(device.id, w.keys, rangeMs(w.range));
  // Each key gets its share of the widget's height (its legend and the range take about 80 px).
  const each = Math.max(80, Math.floor(height / w.keys.length) - 80);
  return html`<div data-testid="widget-chart">
    ${w.keys.map((k) => html`<${Chart} key=${k} name=${k} height=${each}
      ts=${series[k]?.ts || []} values=${series[k]?.values || []} />`)}
    <p class="muted small">last ${w.range || '1h'}</p></div>`;
}

function ValueWidget({ w, device }) {
  const latest = useLatest(device.id, w.keys);
  const p = latest?.[w.keys[0]];
  if (latest === null) return html`<p class="loading">Loading…</p>`;
  return html`<div class="value-card">
    <p class="big" data-testid="widget-value">${p ? show(p.value) : '—'}${p && w.unit ? html` <small>${w.unit}</small>` : ''}</p>
    <p class="muted small">${w.keys[0]}${p ? ` · ${time(p.ts)}` : ': no value yet'}</p></div>`;
}

/** Where on the gauge's half circle (radius 50 around 60,60) fraction `f` lies. */
function arcPoint(f) {
  const a = Math.PI * (1 - f);
  return `${(60 + 50 * Math.cos(a)).toFixed(2)} ${(60 - 50 * Math.sin(a)).toFixed(2)}`;
}

function GaugeWidget({ w, device }) {
  const latest = useLatest(device.id, w.keys);
  const p = latest?.[w.keys[0]];
  const min = w.min ?? 0;
  const max = w.max ?? 100;
  const v = typeof p?.value === 'number' ? p.value : null;
  const f = v === null ? 0 : Math.min(1, Math.max(0, (v - min) / (max - min)));
  return html`<div class="gauge" role="meter" aria-valuemin=${min} aria-valuemax=${max}
      aria-valuenow=${v ?? undefined} aria-label=${w.title || w.keys[0]} data-testid="widget-gauge">
    <svg viewBox="0 0 120 70" aria-hidden="true">
      <path d="M10 60 A50 50 0 0 1 110 60" class="track" />
      ${f > 0 && html`<path d=${`M10 60 A50 50 0 0 1 ${arcPoint(f)}`} class="fill" />`}
    </svg>
    <p class="big" data-testid="widget-value">${v === null ? '—' : show(v)}${v !== null && w.unit ? html` <small>${w.unit}</small>` : ''}</p>
    <p class="muted small">${min} to ${max}${w.unit ? ` ${w.unit}` : ''}</p></div>`;
}

function TableRow({ name, device, keys }) {
  const latest = useLatest(device?.id, keys);
  if (device === null) return html`<tr><td data-label="Device" colspan=${keys.length + 1}><${Missing} name=${name} /></td></tr>`;
  return html`<tr data-device=${name}>
    <td data-label="Device">${device ? html`<a href=${`#/devices/${encodeURIComponent(device.id)}`}>${name}</a>` : name}</td>
    ${keys.map((k) => html`<td data-label=${k}>${latest?.[k] ? show(latest[k].value) : '—'}</td>`)}</tr>`;
}

function TableWidget({ w }) {
  const { devices, error } = useDevices(w.devices);
  return html`${error && html`<p class="error" role="alert">${error}</p>`}
    <table class="rows" data-testid="widget-table">
      <thead><tr><th>Device</th>${w.keys.map((k) => html`<th>${k}</th>`)}</tr></thead>
      <tbody>${w.devices.map((n) => html`<${TableRow} key=${n} name=${n} device=${devices[n]} keys=${w.keys} />`)}</tbody>
    </table>`;
}

/** The switch's state as reported in `keys[0]` (true, a non-zero number, "on", "true"). */
function isOn(v) {
  if (typeof v === 'string') return ['on', 'true', '1'].includes(v.toLowerCase());
  return !!v;
}

function SwitchWidget({ w, device, control }) {
  const latest = useLatest(w.keys.length ? device.id : null, w.keys.slice(0, 1)); // the state, if told
  const reported = w.keys[0] && latest?.[w.keys[0]];
  const [on, setOn] = useState(false);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(null);
  useEffect(() => { if (reported) setOn(isOn(reported.value)); }, [reported?.ts, reported?.value]);
  const param = w.param || 'on';
  async function flip() {
    const want = !on;
    setBusy(true);
    setOn(want);
    setResult({ status: 'SENT' });
    const r = await sendRpc(device.id, w.method, { [param]: want });
    setResult(r);
    if (r.status !== 'SUCCESSFUL') setOn(!want);
    setBusy(false);
  }
  const label = w.title || `${w.method} ${w.device}`;
  return html`<div>
    <p class="actions" style="align-items:center">
      <button type="button" role="switch" aria-checked=${on ? 'true' : 'false'} aria-label=${label}
        disabled=${busy || !control} onClick=${flip}></button>
      <span>${on ? 'On' : 'Off'}</span>
      ${reported && html`<small class="muted">${w.keys[0]} ${show(reported.value)} · ${time(reported.ts)}</small>`}
    </p>
    <${RpcResult} result=${result} /></div>`;
}

function ButtonWidget({ w, device, control }) {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(null);
  async function press() {
    setBusy(true);
    setResult({ status: 'SENT' });
    setResult(await sendRpc(device.id, w.method, w.params ?? {}));
    setBusy(false);
  }
  return html`<div>
    <p><button type="button" disabled=${busy || !control} onClick=${press}>${w.title || w.method}</button></p>
    <${RpcResult} result=${result} /></div>`;
}

const ACTIVE = { status: 'active' };

function AlarmsWidget({ w }) {
  if (!w.device) return html`<${AlarmList} filters=${ACTIVE} />`;
  return html`<${OneDevice} name=${w.device}>${(d) => html`<${AlarmList} device=${d.id} filters=${ACTIVE} />`}<//>`;
}

/** The map widget: Leaflet comes with it, loaded when a dashboard first shows one. */
function MapWidget(props) {
  const [Loaded, setLoaded] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    import('./dashboard-map.js').then((m) => setLoaded(() => m.MapWidget)).catch((e) => setError(e.message));
  }, []);
  if (error) return html`<p class="error" role="alert">${error}</p>`;
  return Loaded ? html`<${Loaded} ...${props} />` : html`<p class="loading">Loading…</p>`;
}

const ONE_DEVICE = { chart: ChartWidget, value: ValueWidget, gauge: GaugeWidget, switch: SwitchWidget, button: ButtonWidget };

/** The content of widget `w` (`height`: the px its body has; `control`: may send RPCs). */
export function WidgetBody({ w: widget, height, control }) {
  // A widget being edited may lack what its type needs until the server says so on saving.
  const w = { ...widget, keys: widget.keys || [], devices: widget.devices || [] };
  if (w.type === 'table') return html`<${TableWidget} w=${w} />`;
  if (w.type === 'map') return html`<${MapWidget} w=${w} height=${height} />`;
  if (w.type === 'alarms') return html`<${AlarmsWidget} w=${w} />`;
  const Kind = ONE_DEVICE[w.type];
  if (!Kind) return html`<p class="error">unknown widget type ${w.type}</p>`;
  return html`<${OneDevice} name=${w.device}>${(d) => html`<${Kind} w=${w} device=${d} height=${height} control=${control} />`}<//>`;
}
