// Who is logged in: GET /auth/me, read once per session, and what their role may do. Pages ask
// `useMe()`; the shell hides what a role cannot use (the server refuses it anyway).
import { useState, useEffect } from './html.js';
import { api, session, onSession } from './api.js';

/** The roles, lowest first: each may do everything the ones before it may. */
export const ROLES = ['viewer', 'operator', 'tenant_admin', 'sys_admin'];

let me = null; // {id, name, kind, role, tenant, customer} | null
let pending = null;
const listeners = new Set();

function load() {
  if (me || pending || !session()) return;
  pending = api('/auth/me')
    .then((m) => { me = m; listeners.forEach((fn) => fn(m)); })
    .catch(() => {})
    .finally(() => { pending = null; });
}

onSession((s) => {
  if (s) { load(); return; }
  me = null;
  listeners.forEach((fn) => fn(null));
});

/** The caller (null until known). */
export function useMe() {
  const [m, setM] = useState(me);
  useEffect(() => {
    listeners.add(setM);
    load();
    return () => listeners.delete(setM);
  }, []);
  return m;
}

/** Whether `m`'s role is at least `role`. */
export function atLeast(m, role) {
  return !!m && ROLES.indexOf(m.role) >= ROLES.indexOf(role);
}

/** The collections (`/api/v1/NAME/...`) a customer's user may reach: the server's list
 *  (`CUSTOMER_VISIBLE` in crates/api/src/authz.rs), which answers 403 for any other. */
const CUSTOMER_COLLECTIONS = ['devices', 'customers', 'users', 'auth', 'ws', 'alarms', 'dashboards'];

/** Whether `m` may read `/api/v1/{collection}` at all (false until the caller is known), so that
 *  pages neither ask for nor show what would only be refused. */
export function mayRead(m, collection) {
  return !!m && (!m.customer || CUSTOMER_COLLECTIONS.includes(collection));
}
