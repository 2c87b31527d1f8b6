// The dashboards' map widget (loaded with Leaflet when a dashboard first shows one): the map of
// map.js (the offline world layer), a live marker per device of the widget at its latest
// `latitude`/`longitude` (or `lat`/`lon`, as the simulated trucks report), framed once when
// the positions are first known.
import { html, useState, useEffect, useRef } from './html.js';
import * as L from '/vendor/leaflet.esm.js';
import { useLeaflet } from './map.js';
import { useLatest } from './telemetry.js';
import { useDevices, Missing } from './dashboard-widgets.js';

const KEYS = ['latitude', 'longitude', 'lat', 'lon'];
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** `[lat, lon]` of a device's latest values, or null. */
function position(latest) {
  const lat = num(latest?.latitude?.value) ?? num(latest?.lat?.value);
  const lon = num(latest?.longitude?.value) ?? num(latest?.lon?.value);
  return lat === null || lon === null ? null : [lat, lon];
}

function Marker({ map, name, device, onPosition }) {
  const latest = useLatest(device.id, KEYS);
  const marker = useRef(null);
  const at = position(latest);
  useEffect(() => {
    if (!map || !at) return;
    if (!marker.current) {
      marker.current = L.circleMarker(at, { radius: 7, color: '#fff', weight: 2, fillColor: '#1d4e89', fillOpacity: 1, className: 'device-marker' })
        .bindTooltip(name)
        .addTo(map);
      marker.current.on('click', () => { location.hash = `#/devices/${encodeURIComponent(device.id)}`; });
    } else {
      marker.current.setLatLng(at);
    }
    Object.assign(marker.current.getElement().dataset, { device: name, lat: String(at[0]), lon: String(at[1]) });
    onPosition(name, at);
  }, [map, at?.[0], at?.[1]]);
  useEffect(() => () => marker.current?.remove(), [map]);
  return null;
}

export function MapWidget({ w, height }) {
  const box = useRef(null);
  const map = useLeaflet(box);
  const { devices, error } = useDevices(w.devices);
  const [placed, setPlaced] = useState({}); // name -> [lat, lon]
  const framed = useRef(0);
  const onPosition = (name, at) => setPlaced((p) => ({ ...p, [name]: at }));
  // Frame the devices each time one more has a position (not on every move).
  useEffect(() => {
    const pts = Object.values(placed);
    if (!map || pts.length <= framed.current) return;
    framed.current = pts.length;
    map.fitBounds(L.latLngBounds(pts), { maxZoom: 13, padding: [20, 20], animate: false });
  }, [map, placed]);
  // The grid resizes the widget: Leaflet must be told.
  useEffect(() => {
    if (!map) return undefined;
    const ro = new ResizeObserver(() => map.invalidateSize({ animate: false }));
    ro.observe(box.current);
    return () => ro.disconnect();
  }, [map]);
  const missing = w.devices.filter((n) => devices[n] === null);
  const count = Object.keys(placed).length;
  return html`<div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${missing.map((n) => html`<${Missing} key=${n} name=${n} />`)}
    <div class="map widget-map" ref=${box} style=${`height:${Math.max(160, height - 30)}px`}
      role="region" aria-label=${`Map of ${w.devices.join(', ')}`}></div>
    ${w.devices.map((n) => devices[n] && html`<${Marker} key=${n} map=${map} name=${n} device=${devices[n]} onPosition=${onPosition} />`)}
    <p class="muted small" data-testid="map-count">${count} of ${w.devices.length} device${w.devices.length === 1 ? '' : 's'} with a position</p>
  </div>`;
}
