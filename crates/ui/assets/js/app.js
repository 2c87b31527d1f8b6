// The shell: login gate, top bar, and hash routing to one module per page.
import { html, render, useState, useEffect } from './html.js';
import { session, onSession, logout } from './api.js';
import { onLive } from './live.js';
import { Login } from './login.js';
import { Overview } from './overview.js';
import { Devices } from './devices.js';
import { Device } from './device.js';
import { Alarms } from './alarms.js';
import { AlarmDetail } from './alarm.js';
import { Rules } from './rules.js';
import { RuleEditor } from './rule.js';
import { Users } from './users.js';
import { Clients } from './clients.js';
import { Dashboards } from './dashboards.js';
import { Dashboard } from './dashboard.js';
import { Campaigns, Campaign } from './firmware.js';
import { useMe, atLeast, mayRead } from './account.js';
import { useTenant, TenantChooser } from './tenants.js';

/** `#/devices/ID?x=1` -> {parts: ['devices', 'ID'], params}. */
function parseHash() {
  const [path, q] = location.hash.replace(/^#/, '').split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(q) };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const on = () => setRoute(parseHash());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

function LiveBadge() {
  const [up, setUp] = useState(false);
  useEffect(() => onLive(setUp), []);
  return html`<span class="live" role="status">${up ? '● live' : '○ offline'}</span>`;
}

/** A page loaded when first shown (the map brings Leaflet, which no other page needs). */
function Lazy({ load, name }) {
  const [Component, setComponent] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => { load().then((m) => setComponent(() => m[name])).catch((e) => setError(e.message)); }, []);
  if (error) return html`<p class="error" role="alert">${error}</p>`;
  return Component ? html`<${Component} />` : html`<p class="loading">Loading…</p>`;
}

/** The API collection each page lives on, where some account may not read it. */
const COLLECTION = { rules: 'rules', firmware: 'firmware', clients: 'api-clients' };

function Page({ route, me }) {
  const [first, id] = route.parts;
  // A page the caller cannot read (a customer's user typing `#/rules`) asks the API nothing.
  if (first in COLLECTION && me && !mayRead(me, COLLECTION[first])) {
    return html`<p class="error" role="alert" data-testid="not-for-role">This page is not available to your account.</p>`;
  }
  if (first === 'devices' && id) return html`<${Device} key=${id} id=${id} />`;
  if (first === 'devices') return html`<${Devices} />`;
  if (first === 'alarms' && id) return html`<${AlarmDetail} key=${id} id=${id} />`;
  if (first === 'alarms') return html`<${Alarms} />`;
  if (first === 'rules' && id) return html`<${RuleEditor} key=${id} id=${id} />`;
  if (first === 'rules') return html`<${Rules} />`;
  if (first === 'dashboards' && id) return html`<${Dashboard} key=${id} id=${id} />`;
  if (first === 'dashboards') return html`<${Dashboards} />`;
  if (first === 'firmware' && id) return html`<${Campaign} key=${id} id=${id} />`;
  if (first === 'firmware') return html`<${Campaigns} />`;
  if (first === 'users') return html`<${Users} />`;
  if (first === 'clients') return html`<${Clients} />`;
  if (first === 'map') return html`<${Lazy} load=${() => import('./map.js')} name="MapPage" />`;
  return html`<${Overview} />`;
}

function App() {
  const [s, setS] = useState(session());
  const route = useRoute();
  const me = useMe();
  const tenant = useTenant(me, route.parts[0]);
  useEffect(() => onSession(setS), []);
  if (!s) return html`<${Login} />`;
  const here = route.parts[0] || 'overview';
  const admin = atLeast(me, 'tenant_admin');
  const link = (name, label) =>
    html`<a href="#/${name === 'overview' ? '' : name}" aria-current=${here === name ? 'page' : undefined}>${label}</a>`;
  // Only what the caller may read (customers' users: no rules, no firmware).
  const readable = (name, label) => mayRead(me, name) && link(name, label);
  return html`
    <header class="top">
      <span class="brand"><img src="/icon.svg" alt="" />Ironbridge</span>
      <nav aria-label="Main">${link('overview', 'Overview')}${link('dashboards', 'Dashboards')}${link('devices', 'Devices')}${link('alarms', 'Alarms')}${link('map', 'Map')}${readable('rules', 'Rules')}${readable('firmware', 'Firmware')}
        ${admin && link('users', 'Users')}${admin && link('clients', 'API clients')}</nav>
      <${TenantChooser} ...${tenant} />
      ${me && html`<span class="who" data-testid="who">${me.name} · ${me.role}</span>`}
      <${LiveBadge} />
      <button type="button" onClick=${logout}>Log out</button>
    </header>
    ${tenant.tenant === null ? html`<main><p class="loading">Loading…</p></main>`
      : html`<main key=${tenant.tenant}><${Page} route=${route} me=${me} /></main>`}`;
}

// Routes are hash routes; a path the server answered with index.html (`/devices/ID`) becomes one.
if (location.pathname !== '/' && !location.hash) location.replace(`/#${location.pathname}${location.search}`);

const root = document.getElementById('app');
root.textContent = ''; // the static "Loading…"
render(html`<${App} />`, root);
