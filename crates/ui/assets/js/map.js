// Map (#/map), with Leaflet: an offline world base layer (Natural Earth's countries in
// vendor/world-110m.json; no tile server, nothing but this server is ever asked), the chosen
// tenant's devices that report `latitude`/`longitude` as live markers, one device's track over a
// time range, and the geofences (drawn; a new polygon by clicking its corners). The tables
// beside the map say the same in text.
import { html, useState, useEffect, useRef } from './html.js';
import * as L from '/vendor/leaflet.esm.js';
import { api, query, tenantScope } from './api.js';
import { subscribe } from './live.js';
import { all } from './overview.js';
import { useMe, atLeast, mayRead } from './account.js';
import { time } from './format.js';
import { useGeofences, GeofenceLayers, GeofenceList, GeofenceDraft } from './map-geofences.js';

const RANGES = { '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };
// Live markers need one WebSocket subscription each; the server allows 100 per connection.
const MAX_LIVE = 80;
const KEYS = 'latitude,longitude';

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** Latest positions of the tenant's devices: `{id: {name, lat, lon, ts}}`, kept live. */
function usePositions() {
  const [positions, setPositions] = useState(null);
  const [ids, setIds] = useState([]);
  useEffect(() => {
    let stale = false;
    (async () => {
      const devices = await all('/devices', tenantScope(), 2000);
      const found = {};
      await Promise.all(devices.map(async (d) => {
        const l = await api(`/devices/${encodeURIComponent(d.id)}/telemetry/latest?keys=${KEYS}`).catch(() => ({}));
        const lat = num(l.latitude?.value);
        const lon = num(l.longitude?.value);
        if (lat !== null && lon !== null) found[d.id] = { name: d.name, lat, lon, ts: Math.max(l.latitude.ts, l.longitude.ts) };
      }));
      if (stale) return;
      setPositions(found);
      setIds(Object.keys(found).slice(0, MAX_LIVE));
    })().catch(() => !stale && setPositions({}));
    return () => { stale = true; };
  }, []);
  useEffect(() => {
    const offs = ids.map((id) => subscribe({ subscribe: 'telemetry', device: id, keys: ['latitude', 'longitude'] }, (ev) => {
      const last = (k) => ev.data[k]?.[ev.data[k].length - 1];
      setPositions((p) => {
        const old = p[id];
        const lat = last('latitude');
        const lon = last('longitude');
        const next = { ...old };
        if (lat && num(lat.value) !== null) Object.assign(next, { lat: lat.value, ts: Math.max(next.ts, lat.ts) });
        if (lon && num(lon.value) !== null) Object.assign(next, { lon: lon.value, ts: Math.max(next.ts, lon.ts) });
        return { ...p, [id]: next };
      });
    }));
    return () => offs.forEach((off) => off());
  }, [ids.join(',')]);
  return positions;
}

/** The Leaflet map on `box`, with the world drawn; null until made (the dashboards' map widget
 *  uses it too). */
export function useLeaflet(box) {
  const [map, setMap] = useState(null);
  useEffect(() => {
    const m = L.map(box.current, { worldCopyJump: true, minZoom: 1, maxZoom: 18, attributionControl: true });
    m.attributionControl.setPrefix(false);
    m.attributionControl.addAttribution('Countries: Natural Earth');
    m.setView([20, 0], 2);
    L.control.scale({ imperial: false }).addTo(m);
    fetch('/vendor/world-110m.json').then((r) => r.json()).then((world) => {
      L.geoJSON(world, {
        interactive: false,
        style: { color: '#8b97a5', weight: 0.6, fillColor: '#eef1f4', fillOpacity: 1, className: 'world' },
      }).addTo(m).bringToBack();
    }).catch(() => {});
    setMap(m);
    return () => m.remove();
  }, []);
  return map;
}

function Markers({ map, positions }) {
  const layers = useRef({});
  useEffect(() => {
    if (!map || !positions) return;
    for (const [id, p] of Object.entries(positions)) {
      let m = layers.current[id];
      if (!m) {
        m = L.circleMarker([p.lat, p.lon], { radius: 7, color: '#fff', weight: 2, fillColor: '#1d4e89', fillOpacity: 1, className: 'device-marker' })
          .bindTooltip(p.name)
          .addTo(map);
        m.on('click', () => { location.hash = `#/devices/${encodeURIComponent(id)}`; });
        layers.current[id] = m;
      } else {
        m.setLatLng([p.lat, p.lon]);
      }
      Object.assign(m.getElement().dataset, { device: id, lat: String(p.lat), lon: String(p.lon) });
    }
  }, [map, positions]);
  useEffect(() => () => Object.values(layers.current).forEach((m) => m.remove()), [map]);
  return null;
}

/** One device's track: the latitude/longitude pairs of `range`, drawn as a line. */
function Track({ map, device, name, onClose }) {
  const [range, setRange] = useState('24h');
  const [points, setPoints] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    const to = Date.now();
    let line = null;
    let stale = false;
    api(`/devices/${encodeURIComponent(device)}/telemetry` + query({ keys: KEYS, from: to - RANGES[range], to, limit: 10000 }))
      .then((data) => {
        if (stale) return;
        const lon = new Map((data.longitude || []).map((p) => [p.ts, p.value]));
        const pts = (data.latitude || [])
          .filter((p) => num(p.value) !== null && num(lon.get(p.ts)) !== null)
          .sort((a, b) => a.ts - b.ts)
          .map((p) => ({ ts: p.ts, lat: p.value, lon: lon.get(p.ts) }));
        setPoints(pts);
        setError('');
        if (!map || !pts.length) return;
        line = L.polyline(pts.map((p) => [p.lat, p.lon]), { color: '#d4621b', weight: 3, className: 'track' }).addTo(map);
        line.getElement().dataset.points = String(pts.length);
        map.fitBounds(line.getBounds(), { maxZoom: 15, padding: [30, 30], animate: false });
      })
      .catch((e) => setError(e.message));
    return () => { stale = true; line?.remove(); };
  }, [map, device, range]);
  const first = points?.[0];
  const last = points?.[points.length - 1];
  return html`<section class="card" aria-labelledby="track-h">
    <div class="toolbar"><h2 id="track-h" class="grow">Track of ${name}</h2>
      <label class="fit">Range <select value=${range} onChange=${(e) => setRange(e.target.value)}>
        ${Object.keys(RANGES).map((r) => html`<option value=${r}>last ${r}</option>`)}</select></label>
      <button type="button" class="secondary" onClick=${onClose}>Hide track</button></div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <p role="status" data-testid="track-summary">${points === null ? 'Loading…' : points.length === 0
      ? 'No positions in this range.'
      : `${points.length} position${points.length === 1 ? '' : 's'} from ${time(first.ts)} to ${time(last.ts)}`}</p>
  </section>`;
}

export function MapPage() {
  const box = useRef(null);
  const map = useLeaflet(box);
  const positions = usePositions();
  const me = useMe();
  const write = atLeast(me, 'tenant_admin');
  // Customers' users see their devices on the map, but not the tenant's geofences.
  const withFences = mayRead(me, 'geofences');
  const [track, setTrack] = useState(null); // device id
  const [drawing, setDrawing] = useState(false);
  const fences = useGeofences(withFences);
  const fitted = useRef(false);

  // Once: frame the devices (the world when there are none).
  useEffect(() => {
    if (!map || !positions || fitted.current) return;
    fitted.current = true;
    const pts = Object.values(positions).map((p) => [p.lat, p.lon]);
    if (pts.length) map.fitBounds(L.latLngBounds(pts), { maxZoom: 13, padding: [40, 40], animate: false });
  }, [map, positions]);

  const rows = Object.entries(positions || {}).sort((a, b) => a[1].name.localeCompare(b[1].name));
  return html`
    <div class="toolbar"><h1 class="grow">Map</h1>
      ${write && !drawing && html`<button type="button" class="secondary" onClick=${() => setDrawing(true)}>Draw geofence</button>`}</div>
    ${drawing && html`<${GeofenceDraft} map=${map} onSaved=${fences.add} onDone=${() => setDrawing(false)} />`}
    <div class="map" ref=${box} data-testid="map" role="region" aria-label="Map of devices and geofences"></div>
    <${GeofenceLayers} map=${map} list=${fences.list} />
    <${Markers} map=${map} positions=${positions} />
    ${track && html`<${Track} key=${track} map=${map} device=${track} name=${positions?.[track]?.name || track} onClose=${() => setTrack(null)} />`}
    <section class="card" aria-labelledby="positions-h">
      <h2 id="positions-h">Devices with a position</h2>
      ${positions === null ? html`<p class="loading">Loading…</p>` : html`
        <table class="rows" data-testid="positions">
          <thead><tr><th>Device</th><th>Latitude</th><th>Longitude</th><th>Time</th><th></th></tr></thead>
          <tbody>
            ${rows.map(([id, p]) => html`<tr key=${id} data-device=${id}>
              <td data-label="Device"><a href=${`#/devices/${encodeURIComponent(id)}`}>${p.name}</a></td>
              <td data-label="Latitude">${p.lat}</td><td data-label="Longitude">${p.lon}</td>
              <td data-label="Time">${time(p.ts)}</td>
              <td data-label="Track"><button type="button" class="secondary" aria-label=${`Track of ${p.name}`}
                onClick=${() => setTrack(id)}>Track</button></td>
            </tr>`)}
            ${rows.length === 0 && html`<tr><td colspan="5" class="muted">No device has reported latitude and longitude.</td></tr>`}
          </tbody>
        </table>`}
    </section>
    ${withFences && html`<${GeofenceList} fences=${fences} write=${write} />`}`;
}
