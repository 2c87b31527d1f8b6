// API clients (#/clients, tenant and system administrators): programs using the OAuth 2.0
// client-credentials grant. List, create (the secret is in the creation's answer only, so it is
// shown once, until dismissed), delete (its tokens stop working at once).
import { html, useState, useEffect } from './html.js';
import { api, tenantScope } from './api.js';
import { all } from './overview.js';
import { useMe, ROLES, atLeast } from './account.js';
import { DeleteButton } from './confirm.js';
import { time } from './format.js';

function Secret({ created, onDone }) {
  return html`<section class="secret" role="status" aria-labelledby="secret-h">
    <h2 id="secret-h">Client ${created.name} created</h2>
    <p>Copy the secret now: it is not shown again.</p>
    <p>client_id <code data-testid="client-id">${created.client_id}</code></p>
    <p>client_secret <code data-testid="client-secret">${created.client_secret}</code></p>
    <button type="button" class="secondary" onClick=${onDone}>I have copied it</button>
  </section>`;
}

export function Clients() {
  const me = useMe();
  const [clients, setClients] = useState(null);
  const [created, setCreated] = useState(null);
  const [f, setF] = useState({ name: '', role: 'viewer' });
  const [error, setError] = useState('');
  useEffect(() => {
    all('/api-clients', tenantScope()).then(setClients).catch((e) => setError(e.message));
  }, []);

  async function create(e) {
    e.preventDefault();
    try {
      const c = await api('/api-clients', { method: 'POST', body: { name: f.name.trim(), role: f.role, ...tenantScope() } });
      const { client_secret: _, ...listed } = c;
      setClients((l) => [...(l || []), listed]);
      setCreated(c);
      setF({ name: '', role: 'viewer' });
      setError('');
    } catch (err) { setError(err.message); }
  }
  async function remove(c) {
    try {
      await api(`/api-clients/${encodeURIComponent(c.id)}`, { method: 'DELETE' });
      setClients((l) => l.filter((x) => x.id !== c.id));
      if (created?.id === c.id) setCreated(null);
    } catch (err) { setError(err.message); }
  }
  return html`
    <h1>API clients</h1>
    <p class="muted">Programs get tokens with <code>POST /api/v1/oauth/token</code> (grant_type=client_credentials).</p>
    ${created && html`<${Secret} created=${created} onDone=${() => setCreated(null)} />`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${clients === null ? html`<p class="loading">${error ? '' : 'Loading…'}</p>` : html`
      <table class="rows card" data-testid="client-table">
        <thead><tr><th>Name</th><th>client_id</th><th>Role</th><th>Created</th><th></th></tr></thead>
        <tbody>
          ${clients.map((c) => html`<tr key=${c.id} data-client=${c.name}>
            <td data-label="Name">${c.name}</td>
            <td data-label="client_id"><code>${c.client_id}</code></td>
            <td data-label="Role">${c.role}</td>
            <td data-label="Created">${time(c.created)}</td>
            <td data-label="Actions">${atLeast(me, c.role) && html`<${DeleteButton} label=${c.name} onDelete=${() => remove(c)} />`}</td>
          </tr>`)}
          ${clients.length === 0 && html`<tr><td colspan="5" class="muted">No API clients.</td></tr>`}
        </tbody>
      </table>`}
    <form class="card" onSubmit=${create} aria-labelledby="new-client-h">
      <h2 id="new-client-h">New API client</h2>
      <div class="grid">
        <label>Name <input value=${f.name} onInput=${(e) => setF({ ...f, name: e.target.value })} required /></label>
        <label>Role <select value=${f.role} onChange=${(e) => setF({ ...f, role: e.target.value })}>
          ${ROLES.filter((r) => atLeast(me, r)).map((r) => html`<option value=${r}>${r}</option>`)}</select></label>
      </div>
      <button type="submit">Create client</button>
    </form>`;
}
