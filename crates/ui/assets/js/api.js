// The REST client and the login session. The access token lives in sessionStorage (gone with the
// tab) and is refreshed with the refresh token a minute before it expires.
const KEY = 'ironbridge.session';
const TENANT_KEY = 'ironbridge.tenant';
const listeners = new Set();
let timer = null;

export function session() {
  try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
}

/** Calls `fn(session|null)` whenever the session changes; returns the unsubscribe function. */
export function onSession(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function save(tokens) {
  const s = tokens && {
    token: tokens.token,
    refresh: tokens.refresh_token,
    expires: Date.now() + tokens.expires_in * 1000,
  };
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s)); else sessionStorage.removeItem(KEY);
  if (!s) sessionStorage.removeItem(TENANT_KEY);
  schedule();
  listeners.forEach((fn) => fn(s));
}

function schedule() {
  clearTimeout(timer);
  const s = session();
  if (!s) return;
  const wait = Math.max(0, s.expires - Date.now() - 60_000);
  timer = setTimeout(() => refresh().catch(() => save(null)), wait);
}

async function refresh() {
  const s = session();
  if (!s) return;
  const res = await fetch('/api/v1/auth/refresh', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ refresh_token: s.refresh }),
  });
  if (!res.ok) throw new Error('session expired');
  save(await res.json());
}

export async function login(username, password) {
  const res = await fetch('/api/v1/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error?.message || `login failed (${res.status})`);
  save(body);
}

export async function logout() {
  const s = session();
  save(null);
  if (s) {
    await fetch('/api/v1/auth/logout', {
      method: 'POST', headers: { authorization: `Bearer ${s.token}` },
    }).catch(() => {});
  }
}

/** An API error with the server's code and message. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.body = body;
  }
}

/** `api('/devices', {method, body})`: JSON in, JSON out, under /api/v1. */
export async function api(path, { method = 'GET', body } = {}) {
  const s = session();
  if (s && s.expires - Date.now() < 30_000) await refresh().catch(() => save(null));
  const token = session()?.token;
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`/api/v1${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 401) save(null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** The tenant (id) a system administrator chose to work in (tenants.js), or null. */
export function chosenTenant() {
  return sessionStorage.getItem(TENANT_KEY);
}

export function chooseTenant(id) {
  if (id) sessionStorage.setItem(TENANT_KEY, id); else sessionStorage.removeItem(TENANT_KEY);
}

/** `{tenant}` for list queries and creation bodies once a tenant is chosen, else `{}` (everyone
 *  but system administrators: the API always uses the caller's own tenant). */
export function tenantScope() {
  const t = chosenTenant();
  return t ? { tenant: t } : {};
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

schedule();
