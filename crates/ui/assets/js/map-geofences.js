// The map's geofences (GET/POST/DELETE /geofences): drawn on the map (polygons and circles,
// named in a tooltip), listed beside it, and the draft of a new polygon whose corners are the
// points clicked on the map.
import { html, useState, useEffect, useRef } from './html.js';
import * as L from '/vendor/leaflet.esm.js';
import { api, query, tenantScope } from './api.js';
import { DeleteButton } from './confirm.js';

const STYLE = { color: '#6b5bd2', weight: 2, fillOpacity: 0.15, className: 'geofence' };

/** The tenant's geofences: `{list, error, add, remove}` (not asked for until `enabled`). */
export function useGeofences(enabled) {
  const [list, setList] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    if (!enabled) return;
    api('/geofences' + query(tenantScope())).then((p) => setList(p.data)).catch((e) => setError(e.message));
  }, [enabled]);
  const add = (g) => setList((l) => [...(l || []), g]);
  async function remove(g) {
    try {
      await api(`/geofences/${encodeURIComponent(g.id)}`, { method: 'DELETE' });
      setList((l) => l.filter((x) => x.id !== g.id));
    } catch (e) { setError(e.message); }
  }
  return { list, error, add, remove };
}

function shapeOf(g) {
  const layer = g.circle
    ? L.circle([g.circle.lat, g.circle.lon], { ...STYLE, radius: g.circle.radius_m })
    : L.polygon(g.polygon.map(([lon, lat]) => [lat, lon]), STYLE);
  return layer.bindTooltip(g.name);
}

export function GeofenceLayers({ map, list }) {
  useEffect(() => {
    if (!map || !list) return;
    const layers = list.map((g) => {
      const layer = shapeOf(g).addTo(map);
      layer.getElement().dataset.geofence = g.name;
      return layer;
    });
    return () => layers.forEach((l) => l.remove());
  }, [map, list]);
  return null;
}

function describe(g) {
  if (g.circle) return `circle, ${g.circle.radius_m} m around ${g.circle.lat}, ${g.circle.lon}`;
  return `polygon of ${g.polygon.length} corners`;
}

export function GeofenceList({ fences, write }) {
  const { list, error, remove } = fences;
  return html`<section class="card" aria-labelledby="fences-h">
    <h2 id="fences-h">Geofences</h2>
    <p class="muted">Rules test them with <code>inside("name")</code> on a device's latitude and longitude.</p>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${list === null ? html`<p class="loading">Loading…</p>` : html`
      <table class="rows" data-testid="geofences">
        <thead><tr><th>Name</th><th>Shape</th><th></th></tr></thead>
        <tbody>
          ${list.map((g) => html`<tr key=${g.id} data-geofence=${g.name}>
            <td data-label="Name">${g.name}</td><td data-label="Shape">${describe(g)}</td>
            <td data-label="Actions">${write && html`<${DeleteButton} label=${g.name} onDelete=${() => remove(g)} />`}</td>
          </tr>`)}
          ${list.length === 0 && html`<tr><td colspan="3" class="muted">No geofences.</td></tr>`}
        </tbody>
      </table>`}
  </section>`;
}

/** A new polygon: each click on the map adds a corner; saved with a name. */
export function GeofenceDraft({ map, onSaved, onDone }) {
  const [points, setPoints] = useState([]); // [[lat, lon]]
  const [name, setName] = useState('');
  const [error, setError] = useState('');
  const shape = useRef(null);

  useEffect(() => {
    if (!map) return;
    const click = (e) => {
      const { lat, lng } = e.latlng.wrap();
      setPoints((p) => [...p, [Math.round(lat * 1e6) / 1e6, Math.round(lng * 1e6) / 1e6]]);
    };
    map.on('click', click);
    map.getContainer().classList.add('drawing');
    return () => {
      map.off('click', click);
      map.getContainer().classList.remove('drawing');
    };
  }, [map]);

  useEffect(() => {
    if (!map) return;
    shape.current?.remove();
    shape.current = points.length
      ? L.polygon(points, { ...STYLE, dashArray: '6 4', className: 'geofence-draft', interactive: false }).addTo(map)
      : null;
    return () => shape.current?.remove();
  }, [map, points]);

  async function save(e) {
    e.preventDefault();
    try {
      const g = await api('/geofences', { method: 'POST',
        body: { name: name.trim(), polygon: points.map(([lat, lon]) => [lon, lat]), ...tenantScope() } });
      onSaved(g);
      onDone();
    } catch (err) { setError(err.message); }
  }
  return html`<form class="card draft" onSubmit=${save} aria-labelledby="draft-h">
    <h2 id="draft-h">New geofence</h2>
    <p role="status" data-testid="draft-points">Click the map to add corners: ${points.length} so far${points.length < 3 ? ' (at least 3)' : ''}.</p>
    <div class="toolbar">
      <label>Geofence name <input value=${name} onInput=${(e) => setName(e.target.value)} required /></label>
      <button type="button" class="secondary" disabled=${!points.length} onClick=${() => setPoints(points.slice(0, -1))}>Undo corner</button>
      <button type="submit" disabled=${points.length < 3 || !name.trim()}>Save geofence</button>
      <button type="button" class="secondary" onClick=${onDone}>Cancel</button>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </form>`;
}
