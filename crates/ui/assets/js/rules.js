// Rules list (#/rules): the tenant's rules with scope, trigger, last firing and last error, an
// enable switch (PUT of the rule with `enabled` flipped) and delete. The editor, backtests and a
// rule's failures are rule.js's.
import { html, useState, useEffect } from './html.js';
import { api, tenantScope } from './api.js';
import { DeleteButton } from './confirm.js';
import { all } from './overview.js';
import { time } from './format.js';
import { useMe, atLeast } from './account.js';

/** The fields of a rule that PUT /rules/{id} takes (the rest are the server's). */
const SPEC_FIELDS = ['name', 'scope', 'trigger', 'schedule', 'condition', 'for', 'clear', 'actions', 'enabled'];

/** A saved rule's spec: what PUT /rules/{id} accepts. */
export function specOf(rule) {
  const spec = {};
  for (const k of SPEC_FIELDS) if (rule[k] !== undefined && rule[k] !== null) spec[k] = rule[k];
  return spec;
}

export function scopeText(scope = {}) {
  if (scope.profile) return `profile ${scope.profile}`;
  if (scope.device) return `device ${scope.device}`;
  return 'every device';
}

function EnabledSwitch({ rule, onChange, readOnly }) {
  const [busy, setBusy] = useState(false);
  async function flip() {
    setBusy(true);
    try {
      onChange(await api(`/rules/${encodeURIComponent(rule.id)}`, {
        method: 'PUT', body: { ...specOf(rule), enabled: !rule.enabled },
      }));
    } catch (e) { onChange(null, e); }
    setBusy(false);
  }
  return html`<button type="button" role="switch" aria-checked=${rule.enabled ? 'true' : 'false'}
    aria-label=${`Enabled: ${rule.name}`} disabled=${busy || readOnly} onClick=${flip}></button>`;
}

export function Rules() {
  const write = atLeast(useMe(), 'tenant_admin');
  const [rules, setRules] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    all('/rules', tenantScope()).then(setRules).catch((e) => setError(e.message));
  }, []);

  const replace = (id) => (updated, e) => {
    if (e) return setError(e.message);
    setError('');
    setRules((l) => l.map((r) => (r.id === id ? updated : r)));
  };
  async function remove(r) {
    try {
      await api(`/rules/${encodeURIComponent(r.id)}`, { method: 'DELETE' });
      setRules((l) => l.filter((x) => x.id !== r.id));
    } catch (e) { setError(e.message); }
  }

  return html`
    <div class="toolbar"><h1 class="grow">Rules</h1>${write && html`<a class="button" href="#/rules/new">New rule</a>`}</div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${rules === null ? html`<p class="loading">Loading…</p>` : html`
      <table class="rows" data-testid="rule-table">
        <thead><tr><th>Name</th><th>Scope</th><th>Trigger</th><th>Enabled</th><th>Last fired</th><th>Last error</th><th></th></tr></thead>
        <tbody>
          ${rules.map((r) => html`<tr key=${r.id} data-rule=${r.id}>
            <td data-label="Name"><a href=${`#/rules/${encodeURIComponent(r.id)}`}>${r.name}</a></td>
            <td data-label="Scope">${scopeText(r.scope)}</td>
            <td data-label="Trigger">${r.trigger}${r.schedule ? html` <code>${r.schedule}</code>` : ''}</td>
            <td data-label="Enabled"><${EnabledSwitch} rule=${r} onChange=${replace(r.id)} readOnly=${!write} /></td>
            <td data-label="Last fired">${time(r.last_fired_ts)}</td>
            <td data-label="Last error" data-testid="rule-last-error">${r.last_error
              ? html`<span class="error">${r.last_error}</span> <small class="muted">${time(r.last_error_ts)}</small>`
              : html`<span class="muted">—</span>`}</td>
            <td data-label="Actions">${write && html`<${DeleteButton} label=${r.name} onDelete=${() => remove(r)} />`}</td>
          </tr>`)}
          ${rules.length === 0 && html`<tr><td colspan="7" class="muted">No rules yet.</td></tr>`}
        </tbody>
      </table>`}`;
}
