// Telemetry on a page: one live WebSocket subscription per device however many parts of the page
// watch it (the server allows 100 per connection; a dashboard shows one device in many widgets),
// a device's latest values (`useLatest`) and its time series over a range (`useSeries`), both
// read from the REST API and then kept up to date live.
import { useState, useEffect } from './html.js';
import { api, query } from './api.js';
import { subscribe } from './live.js';

// Raw points for ranges up to a few hours; averages over ~300 intervals beyond.
const RAW_UP_TO = 3 * 3600e3;
const watchers = new Map(); // device id -> {off, fns: Set, readies: Set}

/** Calls `fn(data)` with each live update of device `id` (`{key: [{ts, value}]}`) and `onReady`
 *  each time the server confirms the subscription; returns the unsubscribe function. */
export function onTelemetry(id, fn, onReady) {
  let w = watchers.get(id);
  if (!w) {
    const fresh = { fns: new Set(), readies: new Set() };
    fresh.off = subscribe({ subscribe: 'telemetry', device: id },
      (ev) => fresh.fns.forEach((f) => f(ev.data)), () => fresh.readies.forEach((f) => f()));
    watchers.set(id, fresh);
    w = fresh;
  }
  w.fns.add(fn);
  if (onReady) w.readies.add(onReady);
  return () => {
    w.fns.delete(fn);
    w.readies.delete(onReady);
    if (!w.fns.size) { w.off(); watchers.delete(id); }
  };
}

/** `{key: {ts, value}}` merged with a live update (a point never replaces a newer one). */
function mergeLatest(latest, data, keys) {
  const next = { ...(latest || {}) };
  for (const [k, points] of Object.entries(data)) {
    if (keys && !keys.includes(k)) continue;
    const p = points[points.length - 1];
    if (p && (!next[k] || next[k].ts <= p.ts)) next[k] = p;
  }
  return next;
}

/** The latest values of device `id` (of `keys`, or all): `{key: {ts, value}}`, null until read. */
export function useLatest(id, keys) {
  const [latest, setLatest] = useState(null);
  const keyList = (keys || []).join(',');
  useEffect(() => {
    if (!id) return undefined;
    const only = keyList ? keyList.split(',') : null;
    let stale = false;
    const merge = (data) => !stale && setLatest((l) => mergeLatest(l, data, only));
    const load = () => api(`/devices/${encodeURIComponent(id)}/telemetry/latest` + query({ keys: keyList }))
      .then((l) => merge(Object.fromEntries(Object.entries(l).map(([k, p]) => [k, [p]]))))
      .catch(() => !stale && setLatest((l) => l || {}));
    load();
    // Confirmed (again): read again, nothing sent before the subscription is missed.
    const off = onTelemetry(id, merge, load);
    return () => { stale = true; off(); };
  }, [id, keyList]);
  return latest;
}

/** The numeric series of `keys` of device `id` over the last `range` ms, kept live:
 *  `{key: {ts: [], values: []}}`. */
export function useSeries(id, keys, range) {
  const [series, setSeries] = useState({});
  const keyList = keys.join(',');
  useEffect(() => {
    if (!id || !keyList) return undefined;
    const wanted = keyList.split(',');
    const to = Date.now();
    const from = to - range;
    const agg = range > RAW_UP_TO ? { agg: 'avg', interval: Math.round(range / 300) } : {};
    let stale = false;
    api(`/devices/${encodeURIComponent(id)}/telemetry` + query({ keys: keyList, from, to, ...agg }))
      .then((data) => {
        if (stale) return;
        setSeries((old) => {
          const next = {};
          for (const k of wanted) {
            const rows = (data[k] || []).filter((p) => typeof p.value === 'number').sort((a, b) => a.ts - b.ts);
            // Keep live points that arrived while the range loaded.
            const last = rows.length ? rows[rows.length - 1].ts : from;
            const o = old[k] || { ts: [], values: [] };
            const extra = o.ts.map((t, i) => [t, o.values[i]]).filter(([t]) => t > last);
            next[k] = {
              ts: [...rows.map((p) => p.ts), ...extra.map((e) => e[0])],
              values: [...rows.map((p) => p.value), ...extra.map((e) => e[1])],
            };
          }
          return next;
        });
      })
      .catch(() => {});
    const off = onTelemetry(id, (data) => setSeries((old) => {
      const next = { ...old };
      const since = Date.now() - range;
      for (const [k, points] of Object.entries(data)) {
        if (!wanted.includes(k)) continue;
        const nums = points.filter((p) => typeof p.value === 'number');
        if (!nums.length) continue;
        const s = next[k] || { ts: [], values: [] };
        const ts = [...s.ts, ...nums.map((p) => p.ts)];
        const values = [...s.values, ...nums.map((p) => p.value)];
        const keep = ts.findIndex((t) => t >= since);
        next[k] = keep > 0 ? { ts: ts.slice(keep), values: values.slice(keep) } : { ts, values };
      }
      return next;
    }));
    return () => { stale = true; off(); };
  }, [id, keyList, range]);
  return series;
}
