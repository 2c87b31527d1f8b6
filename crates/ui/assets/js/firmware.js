// Firmware campaigns (#/firmware, #/firmware/ID): the tenant's campaigns with their state and
// progress, and a campaign's view: its states per stage, why it halted, the devices that failed
// with their errors, pause/resume/cancel for tenant administrators. Campaigns change without
// live events, so the pages read them again every 2 s while shown.
import { html, useState, useEffect } from './html.js';
import { api, query, tenantScope } from './api.js';
import { time } from './format.js';
import { useMe, atLeast } from './account.js';

const FINISHED = ['completed', 'halted', 'cancelled'];
const COLUMNS = [['pending', 'Pending'], ['assigned', 'Assigned'], ['in_progress', 'In progress'],
  ['updated', 'Updated'], ['failed', 'Failed']];

/** Reads `load()` now and every 2 s until unmounted. */
function usePoll(load, deps) {
  const [value, setValue] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    let live = true, timer = null;
    async function tick() {
      try {
        const v = await load();
        if (!live) return;
        setValue(v);
        setError('');
      } catch (e) { if (live) setError(e.message); }
      if (live) timer = setTimeout(tick, 2000);
    }
    tick();
    return () => { live = false; clearTimeout(timer); };
  }, deps);
  return [value, error, setValue];
}

function Progress({ counts }) {
  const n = counts.devices || 1;
  const pct = (k) => `${(100 * (counts[k] || 0)) / n}%`;
  return html`<span class="fw-bar" role="img"
    aria-label=${`${counts.updated} updated, ${counts.failed} failed of ${counts.devices}`}>
    <span class="fw-ok" style=${`width:${pct('updated')}`}></span><span class="fw-bad" style=${`width:${pct('failed')}`}></span>
  </span>`;
}

export function Campaigns() {
  const [list, error] = usePoll(() => api('/firmware/campaigns' + query(tenantScope())).then((p) => p.data), []);
  return html`
    <h1>Firmware campaigns</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${list === null ? html`<p class="loading">Loading…</p>` : html`
    <table class="rows" data-testid="campaign-table">
      <thead><tr><th>Name</th><th>State</th><th>Stage</th><th>Devices</th><th>Progress</th><th>Created</th></tr></thead>
      <tbody>
        ${list.map((c) => html`<tr key=${c.id} data-campaign=${c.id}>
          <td data-label="Name"><a href=${`#/firmware/${encodeURIComponent(c.id)}`}>${c.name}</a></td>
          <td data-label="State"><span class=${`fw-state fw-${c.state}`}>${c.state}</span></td>
          <td data-label="Stage">${c.stage + 1} of ${c.stages.length}</td>
          <td data-label="Devices">${c.counts.updated} updated, ${c.counts.failed} failed of ${c.counts.devices}</td>
          <td data-label="Progress"><${Progress} counts=${c.counts} /></td>
          <td data-label="Created">${time(c.created)}</td>
        </tr>`)}
        ${list.length === 0 && html`<tr><td colspan="6" class="muted">No campaigns. Create one with
          POST /api/v1/firmware/campaigns or <code>ironbridge admin firmware campaign create</code>.</td></tr>`}
      </tbody>
    </table>`}`;
}

export function Campaign({ id }) {
  const me = useMe();
  const path = `/firmware/campaigns/${encodeURIComponent(id)}`;
  const [c, error, setC] = usePoll(() => api(path), [id]);
  const [failed] = usePoll(async () => {
    const all = (await api(`${path}/devices`)).data;
    return all.filter((d) => d.state === 'FAILED' || d.state === 'TIMEOUT');
  }, [id]);
  const [actionError, setActionError] = useState('');

  async function act(action) {
    try {
      setC(await api(`${path}/${action}`, { method: 'POST' }));
      setActionError('');
    } catch (e) { setActionError(e.message); }
  }

  if (c === null) return html`<p class="loading">${error || 'Loading…'}</p>`;
  const admin = atLeast(me, 'tenant_admin');
  const can = {
    pause: ['scheduled', 'running'].includes(c.state),
    resume: ['paused', 'halted'].includes(c.state),
    cancel: !['completed', 'cancelled'].includes(c.state),
  };
  return html`
    <p><a href="#/firmware">← Campaigns</a></p>
    <h1>${c.name}</h1>
    <p>
      <span class=${`fw-state fw-${c.state}`} data-testid="campaign-state">${c.state}</span>
      · stage ${c.stage + 1} of ${c.stages.length} · at most ${c.rate_per_minute} devices a minute
      · halts above ${c.failure_threshold}% failures${c.device_timeout_s ? ` · device timeout ${c.device_timeout_s} s` : ''}
    </p>
    ${c.reason && html`<p class=${c.state === 'halted' ? 'error' : 'muted'} role="status" data-testid="campaign-reason">${c.reason}</p>`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${actionError && html`<p class="error" role="alert">${actionError}</p>`}
    ${admin && (can.pause || can.resume || can.cancel) ? html`<p class="actions">
      ${can.pause && html`<button type="button" onClick=${() => act('pause')}>Pause</button>`}
      ${can.resume && html`<button type="button" onClick=${() => act('resume')}>Resume</button>`}
      ${can.cancel && html`<button type="button" class="secondary" onClick=${() => act('cancel')}>Cancel campaign</button>`}
    </p>` : ''}
    <h2>Stages</h2>
    <table class="rows" data-testid="stage-table">
      <thead><tr><th>Stage</th><th>Up to</th><th>Devices</th>${COLUMNS.map(([, l]) => html`<th>${l}</th>`)}</tr></thead>
      <tbody>
        ${c.stage_progress.map((s) => html`<tr key=${s.stage} data-stage=${s.stage + 1}
            aria-current=${s.stage === c.stage && !FINISHED.includes(c.state) ? 'step' : undefined}>
          <td data-label="Stage">${s.stage + 1}</td>
          <td data-label="Up to">${s.percent}%</td>
          <td data-label="Devices">${s.devices}</td>
          ${COLUMNS.map(([k, l]) => html`<td data-label=${l} data-count=${k}>${s[k]}</td>`)}
        </tr>`)}
      </tbody>
    </table>
    <h2>Failures</h2>
    <table class="rows" data-testid="failure-table">
      <thead><tr><th>Device</th><th>Stage</th><th>State</th><th>Error</th><th>Since</th></tr></thead>
      <tbody>
        ${(failed || []).map((d) => html`<tr key=${d.device}>
          <td data-label="Device"><a href=${`#/devices/${encodeURIComponent(d.device)}`}>${d.name}</a></td>
          <td data-label="Stage">${d.stage + 1}</td>
          <td data-label="State">${d.state}</td>
          <td data-label="Error" data-testid="failure-error">${d.error || '—'}</td>
          <td data-label="Since">${time(d.state_ts)}</td>
        </tr>`)}
        ${failed && failed.length === 0 && html`<tr><td colspan="5" class="muted">No failures.</td></tr>`}
      </tbody>
    </table>`;
}
