// The tenant chooser for system administrators: GET /tenants, the choice kept for the tab
// (api.js's chosenTenant). Pages send it as `tenant` in list queries and creation bodies
// (tenantScope()); a system administrator always works in one chosen tenant, since an absent
// filter means "every tenant" for some lists (alarms, rules, users) and the `default` tenant for
// others (devices, profiles).
import { html, useState, useEffect } from './html.js';
import { api, chosenTenant, chooseTenant } from './api.js';

/** `{tenants, tenant, choose}`; `tenant` is null until it is known. Not a system administrator:
 *  `tenant` is `''` (the API uses the caller's own). The list is read again on each change of
 *  `page`, so tenants created meanwhile show up. */
export function useTenant(me, page) {
  const [tenants, setTenants] = useState(null);
  const [tenant, setTenant] = useState(null);
  const sys = me?.role === 'sys_admin';
  useEffect(() => {
    if (!me) { setTenant(null); return; }
    if (!sys) { chooseTenant(null); setTenant(''); return; }
    api('/tenants').then((p) => {
      const list = p.data;
      const kept = list.find((t) => t.id === chosenTenant());
      const pick = kept || list.find((t) => t.name === 'default') || list[0];
      chooseTenant(pick?.id);
      setTenants(list);
      setTenant((old) => (old && list.some((t) => t.id === old) ? old : pick?.id || ''));
    }).catch(() => setTenant(''));
  }, [me?.id, page]);
  const choose = (id) => { chooseTenant(id); setTenant(id); };
  return { tenants: sys ? tenants : null, tenant, choose };
}

export function TenantChooser({ tenants, tenant, choose }) {
  if (!tenants) return null;
  return html`<label class="tenant">Tenant
    <select aria-label="Tenant" value=${tenant} onChange=${(e) => choose(e.target.value)}>
      ${tenants.map((t) => html`<option value=${t.id}>${t.name}</option>`)}</select></label>`;
}
