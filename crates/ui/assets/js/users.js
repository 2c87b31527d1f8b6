// Users (#/users, tenant and system administrators): list, create with a role no higher than the
// caller's (and optionally a customer), delete. Passwords follow the server's policy; its message
// is shown as it is.
import { html, useState, useEffect } from './html.js';
import { api, tenantScope } from './api.js';
import { all } from './overview.js';
import { useMe, ROLES, atLeast } from './account.js';
import { DeleteButton } from './confirm.js';
import { time } from './format.js';

function NewUser({ me, onCreated }) {
  const blank = { username: '', password: '', role: 'viewer', customer: '' };
  const [f, setF] = useState(blank);
  const [error, setError] = useState('');
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  async function create(e) {
    e.preventDefault();
    const body = { username: f.username.trim(), password: f.password, role: f.role, ...tenantScope() };
    if (f.customer.trim()) body.customer = f.customer.trim();
    try {
      onCreated(await api('/users', { method: 'POST', body }));
      setF(blank);
      setError('');
    } catch (err) { setError(err.message); }
  }
  return html`<form class="card" onSubmit=${create} aria-labelledby="new-user-h">
    <h2 id="new-user-h">New user</h2>
    <div class="grid">
      <label>User name <input value=${f.username} onInput=${set('username')} autocomplete="off" required /></label>
      <label>Password <input type="password" value=${f.password} onInput=${set('password')} autocomplete="new-password" required /></label>
      <label>Role <select value=${f.role} onChange=${set('role')}>
        ${ROLES.filter((r) => atLeast(me, r)).map((r) => html`<option value=${r}>${r}</option>`)}</select></label>
      ${f.role !== 'sys_admin' && html`<label>Customer (optional) <input value=${f.customer} onInput=${set('customer')} placeholder="name or id" /></label>`}
    </div>
    <p class="muted">Passwords: at least 8 characters of two kinds (letters, digits, others), not containing the user name.</p>
    ${error && html`<p class="error" role="alert" data-testid="user-error">${error}</p>`}
    <button type="submit">Create user</button>
  </form>`;
}

export function Users() {
  const me = useMe();
  const [users, setUsers] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    all('/users', tenantScope()).then(setUsers).catch((e) => setError(e.message));
  }, []);
  async function remove(u) {
    try {
      await api(`/users/${encodeURIComponent(u.id)}`, { method: 'DELETE' });
      setUsers((l) => l.filter((x) => x.id !== u.id));
      setError('');
    } catch (e) { setError(e.message); }
  }
  return html`
    <h1>Users</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${users === null ? html`<p class="loading">${error ? '' : 'Loading…'}</p>` : html`
      <table class="rows card" data-testid="user-table">
        <thead><tr><th>User name</th><th>Role</th><th>Customer</th><th>Created</th><th></th></tr></thead>
        <tbody>
          ${users.map((u) => html`<tr key=${u.id} data-user=${u.username}>
            <td data-label="User name">${u.username}${me?.id === u.id && html` <span class="muted">(you)</span>`}</td>
            <td data-label="Role">${u.role}</td>
            <td data-label="Customer">${u.customer || html`<span class="muted">—</span>`}</td>
            <td data-label="Created">${time(u.created)}</td>
            <td data-label="Actions">${me?.id !== u.id && atLeast(me, u.role)
              && html`<${DeleteButton} label=${u.username} onDelete=${() => remove(u)} />`}</td>
          </tr>`)}
        </tbody>
      </table>`}
    ${me && html`<${NewUser} me=${me} onCreated=${(u) => setUsers((l) => [...(l || []), u])} />`}`;
}
