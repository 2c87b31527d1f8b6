// The rule editor (#/rules/new, #/rules/ID): the form (name, scope, trigger, condition, clear,
// for, actions as JSON), saving with the server's validation error shown beside the field it is
// about, and, below it, the backtest and the saved rule's failures (rule-history.js).
import { html, useState, useEffect } from './html.js';
import { api, tenantScope } from './api.js';
import { all } from './overview.js';
import { specOf } from './rules.js';
import { time } from './format.js';
import { Backtest, Failures } from './rule-history.js';

const TRIGGERS = ['telemetry', 'attributes', 'status', 'schedule'];
const SCOPES = { device: 'One device', profile: 'Devices of a profile', tenant: 'Every device of the tenant' };
const NEW_ACTIONS = '[\n  {"type": "alarm", "alarm": "High temperature", "severity": "MAJOR"}\n]';

// Which field an error message is about (the API says it in words: "condition: line 1, column
// 5: ...", "duration \"x\": ...", "scope is one of ..."); the first match wins.
const FIELD_OF = [
  ['condition', /^condition\b/],
  ['clear', /^clear\b/],
  ['actions', /^action target|\bactions?\b/],
  ['name', /^rule name/],
  ['schedule', /schedule|cron/i],
  ['for', /^duration\b/],
  ['scope', /\bscope\b|^(device|profile)\b.*not found/],
  ['actions', /webhook|publish|email|recipient|\bsms\b|alarm type|\brpc\b|attribute/],
];

/** `{field: message}` for an API error: the field it names, else `form`. */
export function fieldErrors(message) {
  for (const [field, re] of FIELD_OF) if (re.test(message)) return { [field]: message };
  return { form: message };
}

/** The form's state for a saved rule (or a new one). */
function formOf(rule) {
  const scope = rule?.scope || {};
  return {
    name: rule?.name || '',
    scopeKind: scope.profile ? 'profile' : scope.tenant ? 'tenant' : 'device',
    scopeValue: scope.profile || scope.device || '',
    trigger: rule?.trigger || 'telemetry',
    schedule: rule?.schedule || '',
    condition: rule?.condition || '',
    clear: rule?.clear || '',
    for: rule?.for || '',
    actions: rule ? JSON.stringify(rule.actions, null, 2) : NEW_ACTIONS,
    enabled: rule ? rule.enabled : true,
  };
}

/** The spec to send, or `{errors}` when the form is not one yet (actions that are not JSON). */
function specFrom(f) {
  let actions;
  try {
    actions = JSON.parse(f.actions);
  } catch (e) {
    return { errors: { actions: `actions are not JSON: ${e.message}` } };
  }
  if (!Array.isArray(actions)) actions = [actions];
  const spec = {
    name: f.name.trim(),
    scope: f.scopeKind === 'tenant' ? { tenant: true } : { [f.scopeKind]: f.scopeValue.trim() },
    trigger: f.trigger,
    condition: f.condition,
    actions,
    enabled: f.enabled,
  };
  if (f.trigger === 'schedule') spec.schedule = f.schedule.trim();
  if (f.clear.trim()) spec.clear = f.clear;
  if (f.for.trim()) spec.for = f.for.trim();
  return { spec };
}

/** A label, its control and the error about it (if any), tied by aria-describedby. */
function Field({ name, label, errors, hint, children }) {
  const err = errors[name];
  return html`<div class="field">
    <label for=${`rule-${name}`}>${label}</label>
    ${children({ id: `rule-${name}`, 'aria-invalid': err ? 'true' : undefined, 'aria-describedby': err ? `err-${name}` : undefined })}
    ${hint && !err && html`<small class="muted">${hint}</small>`}
    ${err && html`<p class="error field-error" id=${`err-${name}`} data-testid=${`error-${name}`} role="alert">${err}</p>`}
  </div>`;
}

function ScopeOptions({ kind }) {
  const [names, setNames] = useState([]);
  useEffect(() => {
    if (kind === 'tenant') return;
    all(kind === 'profile' ? '/profiles' : '/devices', tenantScope(), 1000)
      .then((l) => setNames(l.map((x) => x.name)))
      .catch(() => setNames([]));
  }, [kind]);
  return html`<datalist id="rule-scope-names">${names.map((n) => html`<option value=${n} />`)}</datalist>`;
}

export function RuleEditor({ id }) {
  const isNew = id === 'new';
  const [rule, setRule] = useState(null); // the saved rule
  const [form, setForm] = useState(isNew ? formOf(null) : null);
  const [errors, setErrors] = useState({});
  const [note, setNote] = useState('');
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (isNew) return;
    api(`/rules/${encodeURIComponent(id)}`)
      .then((r) => { setRule(r); setForm(formOf(r)); })
      .catch((e) => setErrors({ form: e.message }));
  }, [id]);

  const set = (k) => (e) => {
    setForm({ ...form, [k]: e.target.type === 'checkbox' ? e.target.checked : e.target.value });
    setNote('');
  };

  /** The spec, or null after showing why there is none. */
  function spec() {
    const out = specFrom(form);
    setErrors(out.errors || {});
    return out.spec || null;
  }

  async function save(e) {
    e.preventDefault();
    const body = spec();
    if (!body) return;
    setBusy(true);
    try {
      const saved = isNew
        ? await api('/rules', { method: 'POST', body: { ...body, ...tenantScope() } })
        : await api(`/rules/${encodeURIComponent(id)}`, { method: 'PUT', body });
      setRule(saved);
      setNote('Saved.');
      if (isNew) location.hash = `#/rules/${encodeURIComponent(saved.id)}`;
    } catch (err) {
      setErrors(fieldErrors(err.message));
    }
    setBusy(false);
  }

  if (!form) return errors.form ? html`<p class="error" role="alert">${errors.form}</p>` : html`<p class="loading">Loading…</p>`;
  return html`
    <p><a href="#/rules">← Rules</a></p>
    <h1>${isNew ? 'New rule' : rule?.name}</h1>
    ${rule && html`<p class="muted" data-testid="rule-status">Last fired: ${time(rule.last_fired_ts)}
      ${rule.last_error && html` · Last error (${time(rule.last_error_ts)}): <span class="error">${rule.last_error}</span>`}</p>`}
    <form class="card rule-form" onSubmit=${save} novalidate>
      <${Field} name="name" label="Name" errors=${errors}>${(a) => html`
        <input ...${a} value=${form.name} onInput=${set('name')} />`}<//>
      <div class="grid">
        <${Field} name="scope" label="Scope" errors=${errors}>${(a) => html`
          <div class="scope">
            <select ...${a} aria-label="Scope kind" value=${form.scopeKind} onChange=${set('scopeKind')}>
              ${Object.entries(SCOPES).map(([k, l]) => html`<option value=${k}>${l}</option>`)}</select>
            ${form.scopeKind !== 'tenant' && html`<input aria-label=${form.scopeKind === 'device' ? 'Device' : 'Profile'}
              list="rule-scope-names" value=${form.scopeValue} onInput=${set('scopeValue')} placeholder="name or id" />
              <${ScopeOptions} kind=${form.scopeKind} />`}
          </div>`}<//>
        <${Field} name="trigger" label="Trigger" errors=${errors}>${(a) => html`
          <select ...${a} value=${form.trigger} onChange=${set('trigger')}>
            ${TRIGGERS.map((t) => html`<option value=${t}>${t}</option>`)}</select>`}<//>
        ${form.trigger === 'schedule' && html`<${Field} name="schedule" label="Schedule (cron, UTC)" errors=${errors}
          hint="5 fields, or 6 with seconds: 0 * * * * is hourly">${(a) => html`
          <input ...${a} value=${form.schedule} onInput=${set('schedule')} />`}<//>`}
        <${Field} name="for" label="For (optional)" errors=${errors} hint="30s, 5m, 1h: how long the condition must hold">${(a) => html`
          <input ...${a} value=${form.for} onInput=${set('for')} />`}<//>
      </div>
      <${Field} name="condition" label="Condition (CEL)" errors=${errors} hint=${'e.g. temperature > 30.0 && avg(temperature, "5m") > 28.0'}>${(a) => html`
        <textarea ...${a} rows="3" spellcheck="false" value=${form.condition} onInput=${set('condition')}></textarea>`}<//>
      <${Field} name="clear" label="Clear when (optional, CEL)" errors=${errors} hint="default: when the condition stops holding">${(a) => html`
        <textarea ...${a} rows="2" spellcheck="false" value=${form.clear} onInput=${set('clear')}></textarea>`}<//>
      <${Field} name="actions" label="Actions (JSON)" errors=${errors}
        hint="alarm, rpc, attribute, publish, webhook, email, sms, log: see the API documentation">${(a) => html`
        <textarea ...${a} rows="8" spellcheck="false" class="code" value=${form.actions} onInput=${set('actions')}></textarea>`}<//>
      <label class="check"><input type="checkbox" checked=${form.enabled} onChange=${set('enabled')} /> Enabled</label>
      ${errors.form && html`<p class="error" role="alert" data-testid="error-form">${errors.form}</p>`}
      <div class="actions">
        <button type="submit" disabled=${busy}>${isNew ? 'Create rule' : 'Save rule'}</button>
        <span role="status">${note}</span>
      </div>
    </form>
    <${Backtest} spec=${spec} onError=${(m) => setErrors(fieldErrors(m))} />
    ${rule && html`<${Failures} id=${rule.id} />`}`;
}
