// Dashboards list (#/dashboards): the tenant's dashboards; for those allowed to write, create
// (then edit it on its page, dashboard.js), delete, share with customers (their users then see
// it, read only), and import a document (a JSON file or pasted text: what an export downloads,
// POSTed as it is); for everyone, export (the JSON the API's GET returns, downloaded as
// NAME.json). A customer's users see the dashboards shared with their customer.
import { html, useState, useEffect } from './html.js';
import { api, query, tenantScope } from './api.js';
import { DeleteButton } from './confirm.js';
import { useMe, atLeast } from './account.js';
import { time } from './format.js';

/** Downloads dashboard `id` as the API returns it. */
export async function exportDashboard(id) {
  const d = await api(`/dashboards/${encodeURIComponent(id)}`);
  const blob = new Blob([JSON.stringify(d, null, 2) + '\n'], { type: 'application/json' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `${d.name.replace(/[^\w.-]+/g, '-') || 'dashboard'}.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** Creates a dashboard from `doc` in the chosen tenant. */
function create(doc) {
  return api('/dashboards' + query(tenantScope()), { method: 'POST', body: doc });
}

function Import({ onImported }) {
  const [text, setText] = useState('');
  const [name, setName] = useState('');
  const [error, setError] = useState('');
  async function pick(e) {
    const file = e.target.files[0];
    if (file) setText(await file.text());
  }
  async function submit(e) {
    e.preventDefault();
    let doc;
    try { doc = JSON.parse(text); } catch (err) { setError(`Not JSON: ${err.message}`); return; }
    if (!doc || typeof doc !== 'object' || Array.isArray(doc)) { setError('A dashboard document is a JSON object.'); return; }
    if (name.trim()) doc.name = name.trim();
    try {
      const d = await create(doc);
      setText(''); setName(''); setError('');
      onImported(d);
    } catch (err) { setError(err.message); }
  }
  return html`<form class="card" onSubmit=${submit} aria-labelledby="import-h">
    <h2 id="import-h">Import</h2>
    <div class="field"><label for="import-file">JSON file (an export)</label>
      <input id="import-file" type="file" accept="application/json,.json" onChange=${pick} /></div>
    <div class="field"><label for="import-text">…or the document pasted</label>
      <textarea id="import-text" class="code" rows="5" value=${text} onInput=${(e) => setText(e.target.value)}></textarea></div>
    <div class="field"><label for="import-name">Name (optional: instead of the document's)</label>
      <input id="import-name" value=${name} onInput=${(e) => setName(e.target.value)} /></div>
    ${error && html`<p class="error" role="alert" data-testid="import-error">${error}</p>`}
    <button type="submit" disabled=${!text.trim()}>Import</button>
  </form>`;
}

/** The customers a dashboard is shared with; for writers, share with another or stop sharing. */
function Sharing({ d, customers, write, onChange, onError }) {
  const [pick, setPick] = useState('');
  const name = (id) => customers.find((c) => c.id === id)?.name || id;
  async function change(method, customer) {
    try {
      const url = `/dashboards/${encodeURIComponent(d.id)}/customers/${encodeURIComponent(customer)}`;
      onChange(await api(url, { method }));
      setPick('');
    } catch (err) { onError(err.message); }
  }
  const others = customers.filter((c) => !d.customers.includes(c.id));
  return html`<span class="chips" data-testid="shared-with">
    ${d.customers.length === 0 && !write && html`<span class="muted">—</span>`}
    ${d.customers.map((c) => html`<span class="chip" key=${c}>${name(c)}${write && html`
      <button type="button" class="link" aria-label=${`Stop sharing ${d.name} with ${name(c)}`}
        onClick=${() => change('DELETE', c)}>×</button>`}</span>`)}
    ${write && others.length > 0 && html`<select aria-label=${`Share ${d.name} with`} value=${pick}
        onChange=${(e) => { setPick(e.target.value); if (e.target.value) change('POST', e.target.value); }}>
      <option value="">Share with…</option>
      ${others.map((c) => html`<option key=${c.id} value=${c.id}>${c.name}</option>`)}</select>`}
  </span>`;
}

export function Dashboards() {
  const me = useMe();
  const write = atLeast(me, 'tenant_admin');
  const [list, setList] = useState(null);
  const [customers, setCustomers] = useState([]);
  const [error, setError] = useState('');
  const [name, setName] = useState('');
  useEffect(() => {
    api('/dashboards' + query(tenantScope())).then((p) => setList(p.data)).catch((e) => setError(e.message));
  }, []);
  useEffect(() => {
    // Customer names for the "Shared with" column (customer users have no use for it).
    if (!me || me.customer) return;
    api('/customers' + query(tenantScope())).then((p) => setCustomers(p.data)).catch(() => {});
  }, [me]);
  const replaced = (d) => setList((l) => l.map((x) => (x.id === d.id ? d : x)));

  async function add(e) {
    e.preventDefault();
    try {
      const d = await create({ name: name.trim(), widgets: [] });
      location.hash = `#/dashboards/${encodeURIComponent(d.id)}`;
    } catch (err) { setError(err.message); }
  }
  async function remove(d) {
    try {
      await api(`/dashboards/${encodeURIComponent(d.id)}`, { method: 'DELETE' });
      setList((l) => l.filter((x) => x.id !== d.id));
    } catch (err) { setError(err.message); }
  }
  const imported = (d) => setList((l) => [...l, d].sort((a, b) => a.name.localeCompare(b.name)));

  return html`
    <h1>Dashboards</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${write && html`<form class="toolbar" onSubmit=${add}>
      <label>New dashboard <input value=${name} onInput=${(e) => setName(e.target.value)} placeholder="name" /></label>
      <button type="submit" disabled=${!name.trim()}>Create dashboard</button></form>`}
    ${list === null ? html`<p class="loading">Loading…</p>` : html`<div class="card">
      <table class="rows" data-testid="dashboard-table">
        <thead><tr><th>Name</th><th>Description</th><th>Widgets</th>${!(me && me.customer) && html`<th>Shared with</th>`}<th>Updated</th><th></th></tr></thead>
        <tbody>
          ${list.map((d) => html`<tr key=${d.id} data-dashboard=${d.name}>
            <td data-label="Name"><a href=${`#/dashboards/${encodeURIComponent(d.id)}`}>${d.name}</a></td>
            <td data-label="Description">${d.description || html`<span class="muted">—</span>`}</td>
            <td data-label="Widgets">${d.widgets.length}</td>
            ${!(me && me.customer) && html`<td data-label="Shared with"><${Sharing} d=${d} customers=${customers}
              write=${write} onChange=${replaced} onError=${setError} /></td>`}
            <td data-label="Updated">${time(d.updated)}</td>
            <td data-label="Actions"><span class="actions">
              <button type="button" class="secondary" aria-label=${`Export ${d.name}`}
                onClick=${() => exportDashboard(d.id).catch((e) => setError(e.message))}>Export</button>
              ${write && html`<${DeleteButton} label=${d.name} onDelete=${() => remove(d)} />`}</span></td>
          </tr>`)}
          ${list.length === 0 && html`<tr><td colspan="6" class="muted">${me && me.customer
            ? 'No dashboard is shared with your customer yet.' : 'No dashboards yet.'}</td></tr>`}
        </tbody>
      </table></div>`}
    ${write && html`<${Import} onImported=${imported} />`}`;
}
