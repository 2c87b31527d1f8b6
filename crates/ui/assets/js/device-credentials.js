// A device's credentials on its page, for tenant and system administrators only (the API needs
// `write`): kinds, expiry and creation (never secrets), and issuing a new access token, which
// the API returns once (shown until dismissed); the old token stops working at once.
import { html, useState, useEffect } from './html.js';
import { api } from './api.js';
import { useMe, atLeast } from './account.js';
import { time } from './format.js';

function NewToken({ token, onDone }) {
  return html`<div class="secret" role="status">
    <p>New access token (copy it now: it is not shown again):</p>
    <p><code data-testid="new-access-token">${token}</code></p>
    <button type="button" class="secondary" onClick=${onDone}>I have copied it</button>
  </div>`;
}

function CredentialList({ id }) {
  const [creds, setCreds] = useState(null);
  const [issued, setIssued] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const path = `/devices/${encodeURIComponent(id)}/credentials`;
  const load = () => api(path).then(setCreds).catch((e) => setError(e.message));
  useEffect(() => { load(); }, [id]);

  async function issue() {
    setBusy(true);
    try {
      const r = await api(path, { method: 'POST', body: { type: 'access_token' } });
      setIssued(r.access_token);
      setError('');
      await load();
    } catch (err) { setError(err.message); }
    setBusy(false);
  }
  return html`<section class="card" aria-labelledby="cred-h" data-testid="credentials">
    <h2 id="cred-h">Credentials</h2>
    ${issued && html`<${NewToken} token=${issued} onDone=${() => setIssued('')} />`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${creds === null ? html`<p class="loading">${error ? '' : 'Loading…'}</p>` : html`
      <table class="rows" data-testid="credential-table">
        <thead><tr><th>Kind</th><th>Name</th><th>Expires</th><th>Created</th></tr></thead>
        <tbody>
          ${creds.map((c, i) => html`<tr key=${i}>
            <td data-label="Kind">${c.kind}</td>
            <td data-label="Name">${[c.client_id, c.username].filter(Boolean).join(' / ') || '—'}</td>
            <td data-label="Expires">${c.expires ? time(c.expires) : 'never'}</td>
            <td data-label="Created">${time(c.created)}</td></tr>`)}
          ${creds.length === 0 && html`<tr><td colspan="4" class="muted">No credentials.</td></tr>`}
        </tbody></table>`}
    <p class="actions" style="align-items:center">
      <button type="button" disabled=${busy} onClick=${issue}>Issue new access token</button>
      <span class="muted">The current access token stops working at once.</span>
    </p>
  </section>`;
}

/** The credentials section, or nothing for viewers and operators. */
export function DeviceCredentials({ id }) {
  const me = useMe();
  return atLeast(me, 'tenant_admin') ? html`<${CredentialList} id=${id} />` : null;
}
