// A delete button that asks once more in place (no window.confirm): "Delete" -> "Delete X?" / "Keep".
import { html, useState } from './html.js';

export function DeleteButton({ label, onDelete }) {
  const [sure, setSure] = useState(false);
  if (!sure) {
    return html`<button type="button" class="secondary" aria-label=${`Delete ${label}`}
      onClick=${() => setSure(true)}>Delete</button>`;
  }
  return html`<span class="actions">
    <button type="button" class="danger" onClick=${onDelete}>Delete ${label}?</button>
    <button type="button" class="secondary" onClick=${() => setSure(false)}>Keep</button></span>`;
}
