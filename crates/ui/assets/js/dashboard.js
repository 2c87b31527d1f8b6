// One dashboard (#/dashboards/ID): its widgets on the 12-column grid (one column on phones, in
// reading order), and for those allowed to write (tenant and system administrators) an edit
// mode: add and change widgets (dashboard-form.js), remove, move and resize them (buttons, so
// the keyboard can, or dragging the title and the corner), rename and describe it, save (PUT);
// the API's refusal `widgets[N]: ...` is shown on widget N. What each widget shows is
// dashboard-widgets.js's.
import { html, useState, useEffect } from './html.js';
import { api } from './api.js';
import { useMe, atLeast } from './account.js';
import { WidgetBody, forgetDevices } from './dashboard-widgets.js';
import { WidgetForm, newWidget } from './dashboard-form.js';
import { exportDashboard } from './dashboards.js';

const ROW_PX = 64; // one grid row
const GAP_PX = 12;
let nextKey = 1;

/** The document PUT takes: name, description, widgets. */
function docOf(d, widgets) {
  const doc = { name: d.name, widgets };
  if (d.description?.trim()) doc.description = d.description.trim();
  return doc;
}

/** A widget's name for people (its title, else its type and device). */
function labelOf(w, i) {
  return w.title || `${w.type} ${w.device || (w.devices || []).join(', ')}`.trim() || `widget ${i + 1}`;
}

/** The API's "widgets[2]: ..." as {index: 2, message}, or null. */
function widgetError(message) {
  const m = /^widgets\[(\d+)\]: (.*)$/s.exec(message || '');
  return m ? { index: Number(m[1]), message: m[2] } : null;
}

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

/** `w` moved by `dx` columns and `dy` rows, resized by `dw` and `dh`, kept on the grid. */
function shifted(w, { dx = 0, dy = 0, dw = 0, dh = 0 }) {
  const n = { ...w, w: clamp(w.w + dw, 1, 12), h: clamp(w.h + dh, 1, 12) };
  n.x = clamp(w.x + dx, 0, 12 - n.w);
  n.y = Math.max(0, w.y + dy);
  return n;
}

const OPS = [
  ['←', 'Move {} left', { dx: -1 }], ['→', 'Move {} right', { dx: 1 }],
  ['↑', 'Move {} up', { dy: -1 }], ['↓', 'Move {} down', { dy: 1 }],
  ['−W', 'Make {} narrower', { dw: -1 }], ['+W', 'Make {} wider', { dw: 1 }],
  ['−H', 'Make {} shorter', { dh: -1 }], ['+H', 'Make {} taller', { dh: 1 }],
];

function EditControls({ w, label, onShift, onEdit, onRemove }) {
  return html`<div class="widget-edit" role="group" aria-label=${`Arrange ${label}`}>
    ${OPS.map(([text, aria, by]) => html`<button type="button" class="secondary" aria-label=${aria.replace('{}', label)}
      onClick=${() => onShift(by)}>${text}</button>`)}
    <button type="button" class="secondary" aria-label=${`Change ${label}`} onClick=${onEdit}>Change</button>
    <button type="button" class="danger" aria-label=${`Remove ${label}`} onClick=${onRemove}>Remove</button>
    <small class="muted">x ${w.x}, y ${w.y}, ${w.w}×${w.h}</small>
  </div>`;
}

/** Dragging a widget by its title (move) or its corner (resize), in whole cells when let go;
 *  the buttons of EditControls do the same from the keyboard. */
function useDrag(onShift) {
  const [drag, setDrag] = useState(null); // {kind, x0, y0, dx, dy, box}
  const start = (kind) => (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    e.currentTarget.setPointerCapture(e.pointerId);
    const box = e.currentTarget.closest('.widget').getBoundingClientRect();
    setDrag({ kind, x0: e.clientX, y0: e.clientY, dx: 0, dy: 0, box });
  };
  const handlers = {
    onPointerMove: (e) => drag && setDrag({ ...drag, dx: e.clientX - drag.x0, dy: e.clientY - drag.y0 }),
    onPointerUp: (e) => {
      if (!drag) return;
      const column = (e.currentTarget.closest('.dash').clientWidth + GAP_PX) / 12;
      const cols = Math.round(drag.dx / column);
      const rows = Math.round(drag.dy / (ROW_PX + GAP_PX));
      setDrag(null);
      if (cols || rows) onShift(drag.kind === 'move' ? { dx: cols, dy: rows } : { dw: cols, dh: rows });
    },
    onPointerCancel: () => setDrag(null),
  };
  let style = '';
  if (drag?.kind === 'move') style = `;transform:translate(${drag.dx}px,${drag.dy}px);z-index:2`;
  if (drag?.kind === 'resize') style = `;width:${Math.max(60, drag.box.width + drag.dx)}px;height:${Math.max(60, drag.box.height + drag.dy)}px;z-index:2`;
  return { style, move: { onPointerDown: start('move'), ...handlers }, resize: { onPointerDown: start('resize'), ...handlers } };
}

function Widget({ w, index, control, editing, error, onShift, onEdit, onRemove }) {
  const label = labelOf(w, index);
  const drag = useDrag(onShift);
  const x = clamp(w.x, 0, 11);
  const style = `grid-column:${x + 1} / span ${clamp(w.w, 1, 12 - x)};grid-row:${w.y + 1} / span ${clamp(w.h, 1, 12)};--h:${w.h}`;
  // What the widget's body has: its rows and gaps, less its title (and edit bar).
  const height = w.h * ROW_PX + (w.h - 1) * GAP_PX - 48;
  return html`<section class=${`card widget widget-${w.type}${error ? ' invalid' : ''}`} style=${style + (editing ? drag.style : '')}
      data-widget=${index} aria-label=${label}>
    ${editing ? html`<h2 class="drag-handle" title="Drag to move" ...${drag.move}>${label}</h2>` : html`<h2>${label}</h2>`}
    ${editing && html`<${EditControls} w=${w} label=${label} onShift=${onShift} onEdit=${onEdit} onRemove=${onRemove} />`}
    ${error && html`<p class="error" role="alert" data-testid="widget-error">${error}</p>`}
    <div class="widget-body"><${WidgetBody} w=${w} height=${height} control=${control} /></div>
    ${editing && html`<span class="resize-handle" title="Drag to resize" aria-hidden="true" ...${drag.resize}></span>`}
  </section>`;
}

export function Dashboard({ id }) {
  const me = useMe();
  const write = atLeast(me, 'tenant_admin');
  const control = atLeast(me, 'operator');
  const [dash, setDash] = useState(null);
  const [error, setError] = useState('');
  const [draft, setDraft] = useState(null); // {name, description, items: [{k, w}]} while editing
  const [form, setForm] = useState(null); // {k (null: adding), widget}
  const [errors, setErrors] = useState({}); // widget index -> message
  const [note, setNote] = useState('');
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    forgetDevices(); // read the names again: devices may have come or gone since
    api(`/dashboards/${encodeURIComponent(id)}`).then(setDash).catch((e) => setError(e.message));
  }, [id]);

  function edit() {
    setDraft({ name: dash.name, description: dash.description || '', items: dash.widgets.map((w) => ({ k: nextKey++, w })) });
    setErrors({});
    setNote('');
  }
  const change = (fn) => { setDraft((d) => ({ ...d, items: fn(d.items) })); setNote(''); };
  const shift = (k) => (by) => change((items) => items.map((it) => (it.k === k ? { ...it, w: shifted(it.w, by) } : it)));
  const remove = (k) => () => { change((items) => items.filter((it) => it.k !== k)); setErrors({}); };

  function applyForm(widget) {
    if (form.k === null) change((items) => [...items, { k: nextKey++, w: widget }]);
    else change((items) => items.map((it) => (it.k === form.k ? { ...it, w: widget } : it)));
    setForm(null);
  }

  async function save() {
    setBusy(true);
    setNote('');
    try {
      const saved = await api(`/dashboards/${encodeURIComponent(id)}`, {
        method: 'PUT', body: docOf(draft, draft.items.map((it) => it.w)),
      });
      setDash(saved);
      setDraft(null);
      setForm(null);
      setErrors({});
      setNote('Saved.');
    } catch (e) {
      const we = widgetError(e.message);
      if (we && e.status === 400) { setErrors({ [we.index]: we.message }); setNote(`Not saved: widget ${we.index + 1} needs a change.`); }
      else { setErrors({}); setNote(`Not saved: ${e.message}`); }
    }
    setBusy(false);
  }

  if (error) return html`<p class="error" role="alert">${error}</p>`;
  if (!dash) return html`<p class="loading">Loading…</p>`;
  const items = draft ? draft.items : dash.widgets.map((w, i) => ({ k: `saved-${i}-${dash.updated}`, w }));
  // Reading order (phones show one column in this order); indexes stay the document's.
  const order = items.map((it, i) => ({ ...it, i })).sort((a, b) => a.w.y - b.w.y || a.w.x - b.w.x);
  return html`
    <p><a href="#/dashboards">← Dashboards</a></p>
    <div class="toolbar">
      ${draft ? html`<label class="grow">Dashboard name
          <input value=${draft.name} onInput=${(e) => setDraft({ ...draft, name: e.target.value })} /></label>`
        : html`<h1 class="grow">${dash.name}</h1>`}
      ${!draft && html`<button type="button" class="secondary" onClick=${() => exportDashboard(dash.id).catch((e) => setNote(e.message))}>Export</button>`}
      ${write && !draft && html`<button type="button" onClick=${edit}>Edit</button>`}
      ${draft && html`<button type="button" class="secondary" onClick=${() => setForm({ k: null, widget: newWidget('chart', draft.items.map((it) => it.w)) })}>Add widget</button>
        <button type="button" disabled=${busy} onClick=${save}>Save</button>
        <button type="button" class="secondary" onClick=${() => { setDraft(null); setForm(null); setErrors({}); setNote(''); }}>Cancel</button>`}
    </div>
    ${dash.description && !draft && html`<p class="muted">${dash.description}</p>`}
    ${draft && html`<label class="field">Description (optional)
      <input value=${draft.description} onInput=${(e) => setDraft({ ...draft, description: e.target.value })} /></label>`}
    ${note && html`<p role="status" data-testid="dashboard-note" class=${note.startsWith('Not saved') ? 'error' : ''}>${note}</p>`}
    ${form && html`<${WidgetForm} key=${form.k ?? 'new'} widget=${form.widget} adding=${form.k === null}
      onDone=${applyForm} onCancel=${() => setForm(null)} />`}
    ${items.length === 0 && html`<p class="muted">No widgets yet.${write && !draft ? ' Edit to add some.' : ''}</p>`}
    <div class=${`dash${draft ? ' editing' : ''}`} data-testid="dashboard-grid">
      ${order.map(({ k, w, i }) => html`<${Widget} key=${k} w=${w} index=${i} control=${control}
        editing=${!!draft} error=${errors[i]} onShift=${draft && shift(k)} onEdit=${() => setForm({ k, widget: w })}
        onRemove=${draft && remove(k)} />`)}
    </div>`;
}
