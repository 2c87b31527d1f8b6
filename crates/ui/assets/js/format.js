// How times and values are shown.

export function time(ms) {
  return ms ? new Date(ms).toLocaleString() : '—';
}

/** "3 min ago" style, for last-seen columns. */
export function ago(ms, now = Date.now()) {
  if (!ms) return '—';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

export function value(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}
