// End-to-end tests of the web UI against a real `ironbridge serve` and Debian's chromium.
// Every wait is for a condition (Playwright locators, waitForFunction), never a fixed sleep.
// UI_SCREENSHOTS=DIR saves a screenshot of each page into DIR (`npm run screenshots`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, adminClient, PASSWORD } from './server.js';
import { launch, logIn } from './browser.js';

let server, rest, browser, page, device, boiler;
const pageErrors = [];

async function shot(p, name) {
  const dir = process.env.UI_SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await p.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}

/** Polls `check` (REST, never the page) until it is true: for what the page is not told live. */
async function until(check, what, timeout = 15000) {
  const end = Date.now() + timeout;
  while (!(await check())) {
    assert.ok(Date.now() < end, `timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** What a device sends over the HTTP device API. */
async function deviceSends(kind, body) {
  const res = await fetch(`${server.base}/api/v1/${device.access_token}/${kind}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  assert.ok(res.ok, `device ${kind}: ${res.status}`);
}

before(async () => {
  // Access tokens of 63 s: the page refreshes them 60 s before expiry, so every 3 s here, and
  // everything below runs across several refreshes (REST and the WebSocket's hand-over).
  server = await startServer({ config: '[api]\naccess_token_ttl_s = 63\n' });
  rest = await adminClient(server.base);
  device = await rest('/api/v1/devices', { method: 'POST', body: { name: 'pump-1', label: 'Basement pump' } });
  boiler = await rest('/api/v1/devices', { method: 'POST', body: { name: 'boiler-2' } });
  await rest('/api/v1/devices', { method: 'POST', body: { name: 'valve-3' } });
  const now = Date.now();
  // An hour of history, so the chart starts with something to draw.
  const history = Array.from({ length: 12 }, (_, i) => ({
    ts: now - (12 - i) * 5 * 60e3, values: { temperature: 20 + Math.sin(i / 2) * 3, pressure: 1.2 + i / 100 },
  }));
  await deviceSends('telemetry', history);
  await rest(`/api/v1/devices/${device.id}/attributes/shared`, { method: 'POST', body: { setpoint: 21.5 } });
  browser = await launch();
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  watch(page);
});

/** Script errors and console errors (a CSP violation is one) fail the last test. Chromium also
 *  logs every 4xx answer to fetch() as a console error: a 400 or 409 from the API is a refusal
 *  the page shows (validation errors, tested for), so those alone are let through. */
function watch(p) {
  p.on('pageerror', (e) => pageErrors.push(e.message));
  p.on('console', (m) => {
    if (m.type() !== 'error') return;
    const refused = /status of 40[09]\b/.test(m.text()) && new URL(m.location().url || 'x:/').pathname.startsWith('/api/v1/');
    if (!refused) pageErrors.push(`${m.text()} ${m.location().url || ''}`);
  });
}

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the UI is served at / and /api stays the API', async () => {
  const index = await fetch(server.base + '/');
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /text\/html/);
  const deep = await fetch(server.base + '/devices/anything');
  assert.match(deep.headers.get('content-type'), /text\/html/);
  const api = await fetch(server.base + '/api/v1/no-such-route');
  assert.equal(api.status, 404);
  assert.match(api.headers.get('content-type'), /application\/json/);
  assert.equal((await fetch(server.base + '/healthz')).status, 200);
  const manifest = await (await fetch(server.base + '/manifest.json')).json();
  assert.equal(manifest.start_url, '/');
});

test('logging in through the page', async () => {
  await page.goto(server.base + '/');
  await page.getByLabel('Password').waitFor();
  await shot(page, 'login');
  await logIn(page, server.base, PASSWORD);
  assert.ok(await page.evaluate(() => sessionStorage.getItem('ironbridge.session')));
  await page.getByTestId('device-stats').waitFor();
  await page.getByText('● live').waitFor();
  await shot(page, 'overview');
});

test('the access token is refreshed before it expires', async () => {
  const token = () => page.evaluate(() => JSON.parse(sessionStorage.getItem('ironbridge.session')).token);
  const first = await token();
  await page.waitForFunction((t) => JSON.parse(sessionStorage.getItem('ironbridge.session')).token !== t,
    first, { timeout: 15000 });
  const me = await page.evaluate(async () => {
    const { token } = JSON.parse(sessionStorage.getItem('ironbridge.session'));
    return (await fetch('/api/v1/auth/me', { headers: { authorization: `Bearer ${token}` } })).status;
  });
  assert.equal(me, 200);
});

test('the device appears in the list and search narrows it', async () => {
  await page.goto(server.base + '/#/devices');
  await page.getByRole('link', { name: 'pump-1' }).waitFor();
  await page.getByRole('link', { name: 'valve-3' }).waitFor();
  await shot(page, 'devices');
  await page.getByLabel('Search').fill('pump');
  await page.getByRole('link', { name: 'valve-3' }).waitFor({ state: 'detached' });
  await page.getByRole('link', { name: 'pump-1' }).waitFor();
  await page.getByLabel('Search').fill('');
  await page.getByRole('link', { name: 'valve-3' }).waitFor();
});

test('the live chart gains points when the device posts telemetry', async () => {
  // A path (not a hash route) works too: the server answers it with index.html.
  await page.goto(`${server.base}/devices/${device.id}`);
  await page.getByRole('heading', { name: /pump-1/ }).waitFor();
  const chart = page.locator('figure[data-key="temperature"]');
  await page.waitForFunction(() => Number(document.querySelector('figure[data-key="temperature"]')?.dataset.points) >= 10);
  const before = Number(await chart.getAttribute('data-points'));
  // The WebSocket subscription may not be confirmed yet: post until a point shows up live.
  let value = 30;
  for (;;) {
    await deviceSends('telemetry', { temperature: value++ });
    const grew = await page.waitForFunction(
      (n) => Number(document.querySelector('figure[data-key="temperature"]').dataset.points) > n,
      before, { timeout: 1000 },
    ).then(() => true, () => false);
    if (grew) break;
    assert.ok(value < 60, 'no live point arrived');
  }
  await page.getByTestId('latest').getByText(String(value - 1), { exact: true }).waitFor();
  await shot(page, 'device');
});

test('the RPC switch reaches the device and shows SUCCESSFUL', async () => {
  // The device: long polls until an RPC comes, then answers it.
  const deviceLoop = (async () => {
    for (;;) {
      const res = await fetch(`${server.base}/api/v1/${device.access_token}/rpc?timeout=20000`);
      if (res.status !== 200) continue;
      const rpc = await res.json();
      await fetch(`${server.base}/api/v1/${device.access_token}/rpc/${rpc.id}`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ done: true }),
      });
      return rpc;
    }
  })();
  const sw = page.getByRole('switch');
  assert.equal(await sw.getAttribute('aria-checked'), 'false');
  await sw.click();
  await page.getByTestId('rpc-status').getByText('SUCCESSFUL').waitFor({ timeout: 25000 });
  const rpc = await deviceLoop;
  assert.equal(rpc.method, 'setState');
  assert.deepEqual(rpc.params, { enabled: true });
  assert.equal(await sw.getAttribute('aria-checked'), 'true');
  await page.getByTestId('rpc-result').getByText('"done":true').waitFor();
});

test('shared attributes are edited on the device page', async () => {
  await page.getByLabel('Value (JSON or text)').first().fill('23');
  await page.getByRole('button', { name: 'Add attribute' }).click();
  await page.getByLabel('Key').last().fill('mode');
  await page.getByLabel('Value (JSON or text)').last().fill('eco');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByText('Saved.').waitFor();
  const attrs = await rest(`/api/v1/devices/${device.id}/attributes?scope=shared`);
  assert.equal(attrs.shared.setpoint.value, 23);
  assert.equal(attrs.shared.mode.value, 'eco');
});

test('an alarm appears on the alarms page and can be acknowledged', async () => {
  await page.goto(server.base + '/#/alarms');
  await page.getByTestId('alarm-table').waitFor();
  const alarm = await rest('/api/v1/alarms', { method: 'POST', body: { device: device.id, type: 'Overheat', severity: 'MAJOR' } });
  const row = page.locator(`tr[data-alarm="${alarm.id}"]`);
  await row.waitFor(); // live, from the WebSocket
  await row.getByText('ACTIVE_UNACK').waitFor();
  await shot(page, 'alarms');
  await row.getByRole('button', { name: /^Acknowledge/ }).click();
  await row.getByText('ACTIVE_ACK').waitFor();
  assert.equal((await rest(`/api/v1/alarms/${alarm.id}`)).status, 'ACTIVE_ACK');
  await row.getByRole('button', { name: /^Clear/ }).click();
  await row.waitFor({ state: 'detached' }); // the default filter shows active alarms only
});

test('an alarm opened from the device page: details, assignee and comments', async () => {
  const olga = await rest('/api/v1/users', { method: 'POST', body: { username: 'olga', password: 'Night-shift-7', role: 'operator' } });
  const alarm = await rest('/api/v1/alarms', { method: 'POST',
    body: { device: device.id, type: 'Leak', severity: 'CRITICAL', details: { litres: 3 } } });
  await page.goto(`${server.base}/#/devices/${device.id}`);
  await page.getByRole('link', { name: 'Leak on pump-1: details' }).click();
  await page.getByRole('heading', { name: /CRITICAL\s+Leak/ }).waitFor();
  const facts = page.getByTestId('alarm-facts');
  await facts.getByText('ACTIVE_UNACK').waitFor();
  await facts.getByText('"litres": 3').waitFor();

  await page.getByLabel('User', { exact: true }).selectOption({ label: 'olga (operator)' });
  await page.getByRole('button', { name: 'Assign' }).click();
  await page.getByTestId('assignee').getByText('olga').waitFor();
  assert.equal((await rest(`/api/v1/alarms/${alarm.id}`)).assignee, olga.id);

  const commentBox = page.getByRole('textbox', { name: 'Comment' });
  await commentBox.fill('Valve 3 drips, a plumber is on the way');
  await page.getByRole('button', { name: 'Add comment' }).click();
  const comments = page.getByTestId('comments');
  await comments.getByText('Valve 3 drips, a plumber is on the way').waitFor();
  assert.equal(await commentBox.inputValue(), '');

  // Acknowledged elsewhere (REST): the page follows live, with the system comment.
  await rest(`/api/v1/alarms/${alarm.id}/ack`, { method: 'POST' });
  await facts.getByText('ACTIVE_ACK').waitFor();
  await comments.getByText('Alarm acknowledged').waitFor();
  await shot(page, 'alarm');
  await page.getByRole('button', { name: 'Clear' }).click();
  await facts.getByText('CLEARED_ACK').waitFor();
  await comments.getByText('Alarm cleared').waitFor();
  const stored = (await rest(`/api/v1/alarms/${alarm.id}/comments`)).data;
  assert.deepEqual(stored.map((c) => [c.author, c.text, c.system]), [
    ['admin', 'Valve 3 drips, a plumber is on the way', false],
    ['admin', 'Alarm acknowledged', true],
    ['admin', 'Alarm cleared', true],
  ]);
  // Unassigning.
  await page.getByLabel('User', { exact: true }).selectOption({ label: '— nobody —' });
  await page.getByRole('button', { name: 'Assign' }).click();
  await page.getByTestId('assignee').getByText('Nobody').waitFor();
  assert.equal((await rest(`/api/v1/alarms/${alarm.id}`)).assignee, null);
});

test('a rule is created in the editor: CEL and duration errors beside their fields, then a backtest', async () => {
  await page.goto(server.base + '/#/rules');
  await page.getByTestId('rule-table').waitFor();
  await page.getByRole('link', { name: 'New rule' }).click();
  await page.getByRole('heading', { name: 'New rule' }).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('hot pump');
  await page.getByLabel('Device', { exact: true }).fill('pump-1');
  const condition = page.getByLabel('Condition (CEL)');
  await condition.fill('temperature >');
  await page.getByRole('button', { name: 'Create rule' }).click();
  const celError = page.getByTestId('error-condition');
  await celError.waitFor();
  assert.match(await celError.textContent(), /line 1, column \d+/);
  assert.equal(await condition.getAttribute('aria-invalid'), 'true');
  await condition.fill('temperature > 22.0');
  await page.getByLabel('For (optional)').fill('soon');
  await page.getByRole('button', { name: 'Create rule' }).click();
  await page.getByTestId('error-for').getByText('duration "soon"').waitFor();
  await celError.waitFor({ state: 'detached' });
  await page.getByLabel('For (optional)').fill('');
  await page.getByRole('button', { name: 'Create rule' }).click();
  await page.getByRole('heading', { name: 'hot pump' }).waitFor();
  const id = decodeURIComponent(new URL(page.url()).hash.split('/')[2]);
  const saved = await rest(`/api/v1/rules/${id}`);
  assert.equal(saved.condition, 'temperature > 22.0');
  assert.deepEqual(saved.scope, { device: 'pump-1' });
  assert.deepEqual(saved.actions, [{ type: 'alarm', alarm: 'High temperature', severity: 'MAJOR' }]);
  // The history sent in before() goes above 22 and back: the backtest sees it fire and clear.
  await page.getByRole('button', { name: 'Run backtest' }).click();
  const summary = page.getByTestId('backtest-summary');
  await summary.waitFor();
  assert.match(await summary.textContent(), /Would have fired [1-9]\d* times? and cleared [1-9]/);
  await page.getByTestId('backtest-hits').getByText('fired').first().waitFor();
  await page.getByTestId('no-failures').waitFor();
  await shot(page, 'rule');
  // Editing: a syntax error in the clear expression is shown beside it, not saved.
  await page.getByLabel('Clear when (optional, CEL)').fill('temperature <<');
  await page.getByRole('button', { name: 'Save rule' }).click();
  await page.getByTestId('error-clear').getByText(/^clear: line 1, column/).waitFor();
  await page.getByLabel('Clear when (optional, CEL)').fill('temperature < 21.0');
  await page.getByRole('button', { name: 'Save rule' }).click();
  await page.getByText('Saved.').waitFor();
  assert.equal((await rest(`/api/v1/rules/${id}`)).clear, 'temperature < 21.0');
});

test('the rules list shows a failed action, toggles and deletes a rule', async () => {
  // An email action without [notify.smtp] fails at once: the rule's last error and a failure record.
  const rule = await rest('/api/v1/rules', { method: 'POST', body: {
    name: 'mail on pressure', scope: { device: 'pump-1' }, condition: 'pressure > 5.0',
    actions: [{ type: 'email', to: ['ops@example.com'] }],
  } });
  await deviceSends('telemetry', { pressure: 9 });
  await until(async () => (await rest(`/api/v1/rules/${rule.id}/failures`)).length > 0, 'the failed email');
  await page.goto(`${server.base}/#/rules/${rule.id}`);
  await page.getByTestId('failures').getByText('no [notify.smtp] configured').waitFor();
  await page.getByTestId('rule-status').getByText('no [notify.smtp] configured').waitFor();

  await page.getByRole('link', { name: '← Rules' }).click();
  const row = page.locator(`tr[data-rule="${rule.id}"]`);
  await row.getByTestId('rule-last-error').getByText('no [notify.smtp] configured').waitFor();
  await row.getByText('device pump-1', { exact: true }).waitFor();
  await shot(page, 'rules');
  const toggle = row.getByRole('switch', { name: 'Enabled: mail on pressure' });
  assert.equal(await toggle.getAttribute('aria-checked'), 'true');
  await toggle.click();
  await page.waitForFunction((id) => document.querySelector(`tr[data-rule="${id}"] [role="switch"]`)
    ?.getAttribute('aria-checked') === 'false', rule.id);
  assert.equal((await rest(`/api/v1/rules/${rule.id}`)).enabled, false);
  await row.getByRole('button', { name: 'Delete mail on pressure' }).click();
  await row.getByRole('button', { name: 'Delete mail on pressure?' }).click();
  await row.waitFor({ state: 'detached' });
  await assert.rejects(rest(`/api/v1/rules/${rule.id}`), /404/);
  await page.locator('tr[data-rule]').getByText('hot pump').waitFor(); // the other one stays
});

test('users: created with a role (a weak password refused), a viewer sees no admin pages, deleted', async () => {
  await page.goto(server.base + '/#/users');
  const table = page.getByTestId('user-table');
  await table.locator('tr[data-user="olga"]').getByText('operator').waitFor();
  await page.getByLabel('User name').fill('vera');
  await page.getByLabel('Password').fill('short');
  await page.getByLabel('Role').selectOption('viewer');
  await page.getByRole('button', { name: 'Create user' }).click();
  await page.getByTestId('user-error').getByText(/password/).waitFor();
  const password = 'Read-only-42';
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Create user' }).click();
  const row = table.locator('tr[data-user="vera"]');
  await row.getByText('viewer', { exact: true }).waitFor();
  await page.getByTestId('user-error').waitFor({ state: 'detached' });
  const vera = await rest('/api/v1/users/vera');
  assert.equal(vera.role, 'viewer');
  await shot(page, 'users');

  const viewer = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  watch(viewer);
  try {
    await logIn(viewer, server.base, password, 'vera');
    await viewer.getByTestId('who').getByText('vera · viewer').waitFor();
    await viewer.getByRole('link', { name: 'Rules' }).click();
    await viewer.locator('tr[data-rule]').getByText('hot pump').waitFor();
    assert.equal(await viewer.getByRole('link', { name: 'Users' }).count(), 0);
    assert.equal(await viewer.getByRole('link', { name: 'API clients' }).count(), 0);
    assert.equal(await viewer.getByRole('link', { name: 'New rule' }).count(), 0);
    assert.ok(await viewer.getByRole('switch', { name: 'Enabled: hot pump' }).isDisabled());
  } finally {
    await viewer.close();
  }

  await row.getByRole('button', { name: 'Delete vera' }).click();
  await row.getByRole('button', { name: 'Delete vera?' }).click();
  await row.waitFor({ state: 'detached' });
  await assert.rejects(rest('/api/v1/users/vera'), /404/);
});

test('API clients: the secret is shown once and works, deleting the client stops it', async () => {
  const token = (id, secret) => fetch(`${server.base}/api/v1/oauth/token`, {
    method: 'POST', body: new URLSearchParams({ grant_type: 'client_credentials', client_id: id, client_secret: secret }),
  }).then((r) => r.status);
  await page.goto(server.base + '/#/clients');
  await page.getByTestId('client-table').waitFor();
  await page.getByLabel('Name').fill('etl');
  await page.getByLabel('Role').selectOption('viewer');
  await page.getByRole('button', { name: 'Create client' }).click();
  const secret = (await page.getByTestId('client-secret').textContent()).trim();
  const clientId = (await page.getByTestId('client-id').textContent()).trim();
  assert.match(clientId, /^ibc_/);
  assert.equal(await token(clientId, secret), 200);
  const row = page.getByTestId('client-table').locator('tr[data-client="etl"]');
  await row.getByText(clientId).waitFor();
  await shot(page, 'clients');
  await page.getByRole('button', { name: 'I have copied it' }).click();
  await page.getByTestId('client-secret').waitFor({ state: 'detached' });
  // Read back, the list has no secret to show.
  await page.goto(server.base + '/#/users');
  await page.getByTestId('user-table').waitFor();
  await page.goto(server.base + '/#/clients');
  await row.waitFor();
  assert.equal(await page.getByText(secret).count(), 0);
  await row.getByRole('button', { name: 'Delete etl' }).click();
  await row.getByRole('button', { name: 'Delete etl?' }).click();
  await row.waitFor({ state: 'detached' });
  assert.equal(await token(clientId, secret), 401);
});

/** The HTTP status of telemetry posted with a device access token. */
async function postWith(token, body) {
  const res = await fetch(`${server.base}/api/v1/${token}/telemetry`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  return res.status;
}

test('device credentials: an administrator issues a new access token, the old one stops working', async () => {
  const old = boiler.access_token;
  assert.equal(await postWith(old, { flow: 1 }), 200);
  await page.goto(`${server.base}/#/devices/${boiler.id}`);
  const section = page.getByTestId('credentials');
  await section.getByTestId('credential-table').getByText('access_token').waitFor();
  assert.equal(await section.getByText(old).count(), 0, 'a stored secret is never shown');
  await section.getByRole('button', { name: 'Issue new access token' }).click();
  const issued = (await section.getByTestId('new-access-token').textContent()).trim();
  assert.ok(issued.length >= 8 && issued !== old, issued);
  assert.equal(await postWith(issued, { flow: 42 }), 200);
  // Issued without a grace period: the API replaces the old token at once.
  assert.equal(await postWith(old, { flow: 2 }), 401);
  await until(async () => (await rest(`/api/v1/devices/${boiler.id}/telemetry/latest`)).flow?.value === 42,
    'the new token\'s telemetry');
  // Only the new token is listed (the replaced one has expired), and the secret goes when dismissed.
  await section.getByTestId('credential-table').locator('tbody tr').filter({ hasText: 'access_token' }).first().waitFor();
  assert.equal(await section.getByTestId('credential-table').locator('tbody tr').count(), 1);
  await section.getByRole('button', { name: 'I have copied it' }).click();
  await section.getByTestId('new-access-token').waitFor({ state: 'detached' });
  boiler.access_token = issued;
});

test('device credentials: viewers and operators do not see them', async () => {
  await rest('/api/v1/users', { method: 'POST', body: { username: 'vic', password: 'Look-only-55', role: 'viewer' } });
  for (const [name, password, role] of [['vic', 'Look-only-55', 'viewer'], ['olga', 'Night-shift-7', 'operator']]) {
    const other = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    watch(other);
    try {
      await logIn(other, server.base, password, name);
      await other.getByTestId('who').getByText(`${name} · ${role}`).waitFor();
      await other.goto(`${server.base}/#/devices/${boiler.id}`);
      await other.getByRole('heading', { name: /boiler-2/ }).waitFor();
      await other.getByRole('heading', { name: 'Alarms' }).waitFor();
      assert.equal(await other.getByTestId('credentials').count(), 0, `${role} sees credentials`);
      assert.equal(await other.getByRole('button', { name: 'Issue new access token' }).count(), 0);
    } finally {
      await other.close();
    }
  }
  await rest('/api/v1/users/vic', { method: 'DELETE' });
});

test('the overview shows the message rate from GET /stats', async () => {
  await page.goto(server.base + '/#/');
  await page.getByTestId('device-stats').waitFor();
  const rate = page.getByTestId('messages-rate');
  // The rate is the difference between two polls a few seconds apart: keep sending until it shows.
  const end = Date.now() + 30000;
  let n = 0;
  for (;;) {
    await deviceSends('telemetry', { temperature: 20 + (n++ % 5), pressure: 1.3 });
    const shown = await rate.textContent({ timeout: 500 }).then(Number, () => 0);
    if (shown > 0) break;
    assert.ok(Date.now() < end, 'the message rate stayed at zero');
    await new Promise((ok) => setTimeout(ok, 250));
  }
  assert.ok(Number(await page.getByTestId('points-rate').textContent()) > 0);
  const stats = await rest('/api/v1/stats');
  assert.ok(stats.messages >= n && stats.points >= 2 * n, JSON.stringify(stats));
});

test('a system administrator chooses the tenant the pages show and create in', async () => {
  const acme = await rest('/api/v1/tenants', { method: 'POST', body: { name: 'acme' } });
  const sensor = await rest('/api/v1/devices', { method: 'POST', body: { name: 'acme-sensor', tenant: 'acme' } });
  await rest('/api/v1/rules', { method: 'POST', body: {
    tenant: 'acme', name: 'acme cold', scope: { tenant: true }, condition: 'temperature < 0.0',
    actions: [{ type: 'log' }],
  } });
  await page.goto(server.base + '/#/devices');
  const chooser = page.getByRole('combobox', { name: 'Tenant' });
  await page.getByRole('link', { name: 'pump-1' }).waitFor();
  assert.equal(await chooser.inputValue(), (await rest('/api/v1/tenants/default')).id);
  assert.equal(await page.getByRole('link', { name: 'acme-sensor' }).count(), 0);

  await chooser.selectOption({ label: 'acme' });
  await page.getByRole('link', { name: 'acme-sensor' }).waitFor();
  await page.getByRole('link', { name: 'pump-1' }).waitFor({ state: 'detached' });
  await shot(page, 'tenant-chooser');

  // Alarms: the list and the live events are the chosen tenant's only. Both alarms come over
  // the one WebSocket in order: once acme's is shown, pump-1's has been seen and left out.
  await page.getByRole('link', { name: 'Alarms' }).click();
  await page.getByTestId('alarm-table').getByText('No alarms.').waitFor();
  const other = await rest('/api/v1/alarms', { method: 'POST', body: { device: device.id, type: 'Elsewhere', severity: 'MINOR' } });
  const mine = await rest('/api/v1/alarms', { method: 'POST', body: { device: sensor.id, type: 'Frost', severity: 'WARNING' } });
  await page.locator(`tr[data-alarm="${mine.id}"]`).waitFor();
  assert.equal(await page.locator(`tr[data-alarm="${other.id}"]`).count(), 0);
  await page.reload(); // the choice is kept for the tab
  await page.locator(`tr[data-alarm="${mine.id}"]`).waitFor();
  assert.equal(await page.locator(`tr[data-alarm="${other.id}"]`).count(), 0);

  await page.getByRole('link', { name: 'Rules' }).click();
  await page.locator('tr[data-rule]').getByText('acme cold').waitFor();
  assert.equal(await page.locator('tr[data-rule]').getByText('hot pump').count(), 0);
  await page.getByRole('link', { name: 'New rule' }).click();
  await page.getByLabel('Name', { exact: true }).fill('acme sensor hot');
  await page.getByLabel('Device', { exact: true }).fill('acme-sensor'); // a name in acme only
  await page.getByLabel('Condition (CEL)').fill('temperature > 40.0');
  await page.getByRole('button', { name: 'Create rule' }).click();
  await page.getByRole('heading', { name: 'acme sensor hot' }).waitFor();
  const created = (await rest('/api/v1/rules?tenant=acme')).data.find((r) => r.name === 'acme sensor hot');
  assert.equal(created.tenant, acme.id);

  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByTestId('user-table').waitFor();
  assert.equal(await page.locator('tr[data-user="olga"]').count(), 0);
  await page.getByLabel('User name').fill('ada');
  await page.getByLabel('Password').fill('Acme-admin-1');
  await page.getByLabel('Role').selectOption('tenant_admin');
  await page.getByRole('button', { name: 'Create user' }).click();
  await page.locator('tr[data-user="ada"]').waitFor();
  assert.equal((await rest('/api/v1/users/ada')).tenant, acme.id);

  await chooser.selectOption({ label: 'default' });
  await page.locator('tr[data-user="olga"]').waitFor();
  assert.equal(await page.locator('tr[data-user="ada"]').count(), 0);
});

test('the map: live markers, a track over a time range, geofences drawn and created by clicking', async () => {
  const truck = await rest('/api/v1/devices', { method: 'POST', body: { name: 'truck-1' } });
  const send = async (body) => {
    const res = await fetch(`${server.base}/api/v1/${truck.access_token}/telemetry`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    assert.ok(res.ok, `truck telemetry: ${res.status}`);
  };
  const now = Date.now();
  await send([[52.50, 13.40], [52.51, 13.42], [52.52, 13.45]].map(([latitude, longitude], i) => ({
    ts: now - (30 - i * 10) * 60e3, values: { latitude, longitude, speed: 40 } })));
  await rest('/api/v1/geofences', { method: 'POST', body: { name: 'depot', circle: { lon: 13.4, lat: 52.5, radius_m: 300 } } });

  // Only this server is ever asked: the base layer is bundled, there is no tile server.
  const foreign = [];
  const outside = (r) => { if (!r.url().startsWith(server.base)) foreign.push(r.url()); };
  page.on('request', outside);
  await page.goto(server.base + '/#/map');
  const row = page.getByTestId('positions').locator(`tr[data-device="${truck.id}"]`);
  await row.getByText('52.52', { exact: true }).waitFor();
  const marker = page.locator(`path.device-marker[data-device="${truck.id}"]`);
  await marker.waitFor();
  assert.equal(await marker.getAttribute('data-lat'), '52.52');
  await page.locator('path.geofence[data-geofence="depot"]').waitFor();
  await page.getByTestId('geofences').locator('tr[data-geofence="depot"]').getByText('circle, 300 m').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('path.world').length > 100); // the countries

  // The marker moves when the truck reports a new position (the subscription may not be
  // confirmed yet: report until it moves).
  for (let i = 1; ; i++) {
    const latitude = 52.52 + i / 1000;
    await send({ latitude, longitude: 13.46 });
    const moved = await page.waitForFunction((id) => Number(document.querySelector(
      `path.device-marker[data-device="${id}"]`)?.dataset.lat) > 52.52, truck.id, { timeout: 1000 }).then(() => true, () => false);
    if (moved) break;
    assert.ok(i < 30, 'the marker never moved');
  }

  await row.getByRole('button', { name: 'Track of truck-1' }).click();
  await page.getByTestId('track-summary').getByText(/^\d+ positions from/).waitFor();
  const points = Number(await page.locator('path.track').getAttribute('data-points'));
  assert.ok(points >= 4, `track of ${points} points`);
  await page.getByRole('combobox', { name: 'Range' }).selectOption('1h');
  await page.getByTestId('track-summary').getByText(/^\d+ positions from/).waitFor();
  await shot(page, 'map');

  await page.getByRole('button', { name: 'Draw geofence' }).click();
  const box = await page.getByTestId('map').boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  for (const [dx, dy] of [[-120, -80], [120, -80], [0, 90]]) await page.mouse.click(cx + dx, cy + dy);
  await page.getByTestId('draft-points').getByText('3 so far').waitFor();
  await page.getByLabel('Geofence name').fill('yard');
  await page.getByRole('button', { name: 'Save geofence' }).click();
  await page.getByTestId('geofences').locator('tr[data-geofence="yard"]').getByText('polygon of 3 corners').waitFor();
  await page.locator('path.geofence[data-geofence="yard"]').waitFor();
  const yard = (await rest('/api/v1/geofences')).data.find((g) => g.name === 'yard');
  assert.equal(yard.polygon.length >= 3, true);
  // Clicked around the map's centre, which shows the truck's track near Berlin.
  for (const [lon, lat] of yard.polygon) assert.ok(Math.abs(lon - 13.43) < 1 && Math.abs(lat - 52.51) < 1, `${lon},${lat}`);
  page.off('request', outside);
  assert.deepEqual(foreign, []);
});

/** The device pump-1, answering the next RPC over the HTTP long poll with `reply`. */
function deviceAnswersRpc(reply) {
  return (async () => {
    for (;;) {
      const res = await fetch(`${server.base}/api/v1/${device.access_token}/rpc?timeout=20000`);
      if (res.status !== 200) continue;
      const rpc = await res.json();
      await fetch(`${server.base}/api/v1/${device.access_token}/rpc/${rpc.id}`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(reply),
      });
      return rpc;
    }
  })();
}

/** In edit mode: adds a widget through the form, `fields` by label. */
async function addWidget(type, fields) {
  await page.getByRole('button', { name: 'Add widget' }).click();
  const form = page.getByTestId('widget-form');
  await form.getByLabel('Type', { exact: true }).selectOption(type);
  for (const [label, v] of Object.entries(fields)) await form.getByLabel(label, { exact: true }).fill(v);
  await form.getByRole('button', { name: 'Add to dashboard' }).click();
  await form.waitFor({ state: 'detached' });
}

let dashboardId;

test('a dashboard is built from widgets in the UI, saved, and still there after a reload', async () => {
  await page.goto(server.base + '/#/dashboards');
  await page.getByTestId('dashboard-table').waitFor();
  await page.getByLabel('New dashboard').fill('Pump room');
  await page.getByRole('button', { name: 'Create dashboard' }).click();
  await page.getByRole('heading', { name: 'Pump room' }).waitFor();
  dashboardId = decodeURIComponent(new URL(page.url()).hash.split('/')[2]);
  await page.getByRole('button', { name: 'Edit' }).click();
  await page.getByLabel('Description (optional)').fill('The basement pump and its neighbours');
  const at = (x, y, w) => ({ 'Column (0-11)': String(x), Row: String(y), ...(w ? { 'Width (1-12)': String(w) } : {}) });
  await addWidget('chart', { 'Title (optional)': 'Temperature chart', 'Device name': 'pump-1', 'Keys (comma-separated)': 'temperature' });
  await addWidget('value', { 'Title (optional)': 'Temperature now', 'Device name': 'pump-1', Key: 'temperature', 'Unit (optional)': '°C', ...at(7, 0) });
  await addWidget('gauge', { 'Title (optional)': 'Pressure', 'Device name': 'pump-1', Key: 'pressure', Minimum: '5', Maximum: '1', ...at(8, 2, 4) });
  await addWidget('switch', { 'Title (optional)': 'Valve', 'Device name': 'pump-1', 'RPC method': 'setValve', ...at(0, 4, 4) });
  await addWidget('button', { 'Title (optional)': 'Reboot', 'Device name': 'pump-1', 'RPC method': 'reboot', 'Parameters (JSON, optional)': '{"delay": 1}', ...at(4, 4, 4) });
  await addWidget('table', { 'Title (optional)': 'Plant', 'Device names (comma-separated)': 'pump-1, boiler-2, ghost-9', 'Keys (comma-separated)': 'temperature, pressure', ...at(0, 6, 6) });
  await addWidget('alarms', { 'Title (optional)': 'Alarms', ...at(0, 11) });
  await addWidget('map', { 'Title (optional)': 'Trucks', 'Device names (comma-separated)': 'truck-1', ...at(6, 6, 6) });
  // Arranged with the buttons: the value card moves right and gets wider, the chart wider too.
  await page.getByRole('button', { name: 'Move Temperature now right' }).click();
  await page.getByRole('button', { name: 'Make Temperature now wider' }).press('Enter'); // the keyboard too
  await page.getByRole('button', { name: 'Make Temperature chart wider' }).click();
  await page.getByRole('button', { name: 'Make Temperature chart wider' }).click();
  // Or with the mouse: the alarm list dragged by its title one row down, by its corner one row shorter.
  const alarms = page.getByRole('region', { name: 'Alarms' });
  const drag = async (handle, dy) => {
    await handle.scrollIntoViewIfNeeded();
    const b = await handle.boundingBox();
    await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
    await page.mouse.down();
    await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2 + dy, { steps: 5 });
    await page.mouse.up();
  };
  await drag(alarms.locator('.drag-handle'), 80);
  await alarms.getByText('x 0, y 12, 12×4').waitFor();
  await drag(alarms.locator('.resize-handle'), -80);
  await alarms.getByText('x 0, y 12, 12×3').waitFor();
  // The table says which device does not exist, inside the widget.
  await page.getByRole('region', { name: 'Plant' }).getByTestId('widget-missing').getByText('device “ghost-9” not found').waitFor();

  // The gauge's minimum is above its maximum: the API's refusal is shown on that widget.
  await page.getByRole('button', { name: 'Save' }).click();
  const gauge = page.locator('section[data-widget="2"]');
  await gauge.getByTestId('widget-error').getByText('min must be below max').waitFor();
  assert.equal(await gauge.getAttribute('aria-label'), 'Pressure');
  await shot(page, 'dashboard-edit');
  await page.getByRole('button', { name: 'Change Pressure' }).click();
  await page.getByTestId('widget-form').getByLabel('Minimum', { exact: true }).fill('0');
  await page.getByTestId('widget-form').getByLabel('Maximum', { exact: true }).fill('10');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByTestId('dashboard-note').getByText('Saved.').waitFor();
  await page.getByRole('button', { name: 'Edit' }).waitFor();

  const saved = await rest(`/api/v1/dashboards/${dashboardId}`);
  assert.equal(saved.description, 'The basement pump and its neighbours');
  assert.deepEqual(saved.widgets.map((w) => w.type), ['chart', 'value', 'gauge', 'switch', 'button', 'table', 'alarms', 'map']);
  assert.deepEqual(saved.widgets[1], { type: 'value', title: 'Temperature now', x: 8, y: 0, w: 4, h: 2,
    device: 'pump-1', keys: ['temperature'], unit: '°C' });
  assert.deepEqual([saved.widgets[0].x, saved.widgets[0].w], [0, 8]);
  assert.deepEqual([saved.widgets[6].y, saved.widgets[6].h], [12, 3]);
  assert.deepEqual(saved.widgets[4].params, { delay: 1 });
  assert.deepEqual(saved.widgets[5].devices, ['pump-1', 'boiler-2', 'ghost-9']);

  await page.reload();
  await page.getByRole('heading', { name: 'Pump room' }).waitFor();
  for (const title of ['Temperature chart', 'Temperature now', 'Pressure', 'Valve', 'Reboot', 'Plant', 'Alarms', 'Trucks']) {
    await page.getByRole('region', { name: title, exact: true }).waitFor();
  }
  await page.getByRole('region', { name: 'Pressure' }).getByRole('meter').waitFor();
  await page.getByRole('region', { name: 'Plant' }).getByText('device “ghost-9” not found').waitFor();
  // The map widget: truck-1 (of the map test) where it last reported.
  await page.locator('path.device-marker[data-device="truck-1"]').waitFor();
  await page.getByRole('region', { name: 'Trucks' }).getByTestId('map-count').getByText('1 of 1 device with a position').waitFor();
  await shot(page, 'dashboard');
});

test('live dashboard widgets: the value card and the chart follow the device\'s telemetry', async () => {
  const chart = 'section[aria-label="Temperature chart"] figure[data-key="temperature"]';
  await page.waitForFunction((sel) => Number(document.querySelector(sel)?.dataset.points) >= 10, chart);
  const before = Number(await page.locator(chart).getAttribute('data-points'));
  const card = page.getByRole('region', { name: 'Temperature now' }).getByTestId('widget-value');
  // The subscription may not be confirmed yet: send until the value shows up live.
  for (let value = 70.5; ; value += 1) {
    await deviceSends('telemetry', { temperature: value, pressure: 2.5 });
    const shown = await card.getByText(String(value)).waitFor({ timeout: 1000 }).then(() => true, () => false);
    if (shown) break;
    assert.ok(value < 100, 'no live value arrived');
  }
  await page.waitForFunction(([sel, n]) => Number(document.querySelector(sel).dataset.points) > n, [chart, before]);
  await page.getByRole('region', { name: 'Pressure' }).getByRole('meter').and(page.locator('[aria-valuenow="2.5"]')).waitFor();
  await page.getByRole('region', { name: 'Plant' }).locator('tr[data-device="pump-1"]').getByText('2.5', { exact: true }).waitFor();
  // The "hot pump" rule (temperature > 22) raises its alarm: the tenant's alarm list shows it live.
  await page.getByRole('region', { name: 'Alarms' }).getByText('High temperature').first().waitFor();
});

test('a dashboard switch and button send their RPCs to the device', async () => {
  const valve = page.getByRole('region', { name: 'Valve' });
  const sw = valve.getByRole('switch', { name: 'Valve' });
  assert.equal(await sw.getAttribute('aria-checked'), 'false');
  let answered = deviceAnswersRpc({ open: true });
  await sw.click();
  await valve.getByTestId('rpc-status').getByText('SUCCESSFUL').waitFor({ timeout: 25000 });
  let rpc = await answered;
  assert.equal(rpc.method, 'setValve');
  assert.deepEqual(rpc.params, { on: true });
  assert.equal(await sw.getAttribute('aria-checked'), 'true');
  await valve.getByTestId('rpc-result').getByText('"open":true').waitFor();

  const reboot = page.getByRole('region', { name: 'Reboot' });
  answered = deviceAnswersRpc({ rebooting: true });
  await reboot.getByRole('button', { name: 'Reboot' }).click();
  await reboot.getByTestId('rpc-status').getByText('SUCCESSFUL').waitFor({ timeout: 25000 });
  rpc = await answered;
  assert.equal(rpc.method, 'reboot');
  assert.deepEqual(rpc.params, { delay: 1 });
});

test('a dashboard exported and imported again has the same widgets; an operator sees it read-only', async () => {
  await page.goto(server.base + '/#/dashboards');
  const row = page.locator('tr[data-dashboard="Pump room"]');
  await row.waitFor();
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    row.getByRole('button', { name: 'Export Pump room' }).click(),
  ]);
  assert.equal(download.suggestedFilename(), 'Pump-room.json');
  const file = await download.path();
  const exported = JSON.parse(readFileSync(file, 'utf8'));
  assert.deepEqual(exported, await rest(`/api/v1/dashboards/${dashboardId}`));
  await shot(page, 'dashboards');

  await page.getByLabel('JSON file (an export)').setInputFiles(file);
  await page.waitForFunction(() => document.getElementById('import-text').value.includes('Pump room'));
  // The same name is taken in the tenant: the API's 409 is shown; renamed, it is imported.
  await page.getByRole('button', { name: 'Import' }).click();
  await page.getByTestId('import-error').getByText(/already exists/).waitFor();
  await page.getByLabel('Name (optional: instead of the document\'s)').fill('Pump room copy');
  await page.getByRole('button', { name: 'Import' }).click();
  const copyRow = page.locator('tr[data-dashboard="Pump room copy"]');
  await copyRow.getByText('8', { exact: true }).waitFor();
  const copy = (await rest('/api/v1/dashboards')).data.find((d) => d.name === 'Pump room copy');
  assert.notEqual(copy.id, dashboardId);
  assert.deepEqual(copy.widgets, exported.widgets);
  await copyRow.getByRole('button', { name: 'Delete Pump room copy' }).click();
  await copyRow.getByRole('button', { name: 'Delete Pump room copy?' }).click();
  await copyRow.waitFor({ state: 'detached' });

  const operator = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  watch(operator);
  try {
    await logIn(operator, server.base, 'Night-shift-7', 'olga');
    await operator.goto(`${server.base}/#/dashboards/${dashboardId}`);
    await operator.getByRole('heading', { name: 'Pump room' }).waitFor();
    await operator.getByRole('region', { name: 'Valve' }).getByRole('switch').waitFor();
    assert.equal(await operator.getByRole('button', { name: 'Edit' }).count(), 0);
    assert.ok(await operator.getByRole('switch', { name: 'Valve' }).isEnabled()); // operators may send RPCs
    await operator.goto(`${server.base}/#/dashboards`);
    await operator.locator('tr[data-dashboard="Pump room"]').waitFor();
    assert.equal(await operator.getByRole('button', { name: 'Create dashboard' }).count(), 0);
    assert.equal(await operator.getByRole('button', { name: 'Delete Pump room' }).count(), 0);
  } finally {
    await operator.close();
  }
});

test('a dashboard shared with a customer: its users see it in their list, read only, until unshared', async () => {
  const acme = await rest('/api/v1/customers', { method: 'POST', body: { name: 'Acme' } });
  await rest('/api/v1/users', { method: 'POST', body: { username: 'cora', password: 'Customer-pass-9', role: 'viewer', customer: acme.id } });
  // Read again (the page may be showing the list from before the customer existed).
  await page.goto(server.base + '/#/dashboards');
  await page.reload();
  const row = page.locator('tr[data-dashboard="Pump room"]');
  await row.getByLabel('Share Pump room with').selectOption({ label: 'Acme' });
  await row.getByTestId('shared-with').getByText('Acme').waitFor();
  assert.deepEqual((await rest(`/api/v1/dashboards/${dashboardId}`)).customers, [acme.id]);

  // The customer's user: the pages it is offered ask only for what it may read (the API's
  // CUSTOMER_VISIBLE): a request for stats, rules, firmware or geofences, any 403 and any console
  // error fail the test.
  const customer = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const refused = [];
  customer.on('request', (r) => {
    if (/^\/api\/v1\/(stats|rules|firmware|geofences)\b/.test(new URL(r.url()).pathname)) refused.push(`asked ${r.url()}`);
  });
  customer.on('response', (r) => { if (r.status() === 403) refused.push(`403 ${r.url()}`); });
  customer.on('console', (m) => { if (m.type() === 'error') refused.push(m.text()); });
  customer.on('pageerror', (e) => refused.push(e.message));
  try {
    await logIn(customer, server.base, 'Customer-pass-9', 'cora');
    // The overview: devices and alarms, but no message rate (GET /stats is not theirs).
    await customer.getByTestId('device-stats').waitFor();
    await customer.getByTestId('alarm-stats').waitFor();
    assert.equal(await customer.getByRole('heading', { name: 'Message rate' }).count(), 0);
    const nav = customer.getByRole('navigation', { name: 'Main' });
    assert.equal(await nav.getByRole('link', { name: 'Rules' }).count(), 0);
    assert.equal(await nav.getByRole('link', { name: 'Firmware' }).count(), 0);
    await shot(customer, 'overview-customer');
    // The map: their devices, not the tenant's geofences.
    await nav.getByRole('link', { name: 'Map' }).click();
    await customer.getByTestId('positions').waitFor();
    assert.equal(await customer.getByRole('heading', { name: 'Geofences' }).count(), 0);
    // A page typed in that is not theirs says so and asks nothing.
    await customer.goto(`${server.base}/#/rules`);
    await customer.getByTestId('not-for-role').waitFor();
    await customer.goto(`${server.base}/#/dashboards`);
    const table = customer.getByTestId('dashboard-table');
    await table.locator('tr[data-dashboard="Pump room"]').waitFor();
    assert.equal(await table.locator('tr[data-dashboard]').count(), 1);
    assert.equal(await customer.getByRole('columnheader', { name: 'Shared with' }).count(), 0);
    assert.equal(await customer.getByRole('button', { name: 'Create dashboard' }).count(), 0);
    assert.equal(await customer.getByRole('button', { name: 'Delete Pump room' }).count(), 0);
    await shot(customer, 'dashboards-customer');

    const stop = row.getByRole('button', { name: 'Stop sharing Pump room with Acme' });
    await stop.click();
    await stop.waitFor({ state: 'detached' });
    await customer.reload();
    await customer.getByText('No dashboard is shared with your customer yet.').waitFor();
    assert.deepEqual(refused, []);
  } finally {
    await customer.close();
  }
});

test('a firmware campaign: states per stage, a failure with its error, halted, then cancelled', async () => {
  const fleet = [];
  for (const name of ['fw-a', 'fw-b']) fleet.push(await rest('/api/v1/devices', { method: 'POST', body: { name } }));
  const login = await (await fetch(`${server.base}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: PASSWORD }),
  })).json();
  const form = new FormData();
  form.set('title', 'pump-fw');
  form.set('version', '2.0');
  form.set('file', new Blob([new Uint8Array(4096).fill(7)]), 'pump.bin');
  const up = await fetch(`${server.base}/api/v1/firmware`, {
    method: 'POST', headers: { authorization: `Bearer ${login.token}` }, body: form,
  });
  assert.equal(up.status, 201, await up.clone().text());
  const pkg = await up.json();
  const c = await rest('/api/v1/firmware/campaigns', { method: 'POST', body: {
    name: 'pumps 2.0', firmware_id: pkg.id, target: { name_prefix: 'fw-' }, stages: [50, 100], failure_threshold: 0,
  } });
  let offered = [];
  await until(async () => {
    offered = (await rest(`/api/v1/firmware/campaigns/${c.id}/devices?state=ASSIGNED`)).data;
    return offered.length === 1;
  }, 'the first stage offered');
  const dev = fleet.find((d) => d.id === offered[0].device);
  const res = await fetch(`${server.base}/api/v1/${dev.access_token}/telemetry`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ fw_state: 'FAILED', fw_error: 'Checksum verification failed!' }),
  });
  assert.ok(res.ok);

  await page.getByRole('link', { name: 'Firmware' }).click();
  const row = page.locator(`tr[data-campaign="${c.id}"]`);
  await row.getByText('halted', { exact: true }).waitFor();
  await row.getByText('0 updated, 1 failed of 2').waitFor();
  await shot(page, 'campaigns');
  await row.getByRole('link', { name: 'pumps 2.0' }).click();
  await page.getByTestId('campaign-state').getByText('halted').waitFor();
  await page.getByTestId('campaign-reason').getByText('1 of 1 devices failed').waitFor();
  await page.getByTestId('failure-error').getByText('Checksum verification failed!').waitFor();
  const cell = (stage, k) => page.locator(`[data-testid="stage-table"] tr[data-stage="${stage}"] td[data-count="${k}"]`);
  assert.equal(await cell(1, 'failed').textContent(), '1');
  assert.equal(await cell(2, 'pending').textContent(), '1');
  await shot(page, 'campaign');
  await page.getByRole('button', { name: 'Cancel campaign' }).click();
  await page.getByTestId('campaign-state').getByText('cancelled').waitFor();
  assert.equal((await rest(`/api/v1/firmware/campaigns/${c.id}`)).state, 'cancelled');
  assert.equal(await page.getByRole('button', { name: 'Resume' }).count(), 0);
});

/** Opens `hash` on the phone page, waits for `ready` and checks nothing sticks out sideways. */
async function fitsPhone(phone, hash, ready, name) {
  await phone.goto(server.base + '/' + hash);
  await ready.waitFor();
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `${hash} scrolls sideways on a phone: ${width}px`);
  await shot(phone, name);
}

test('the phone viewport shows the device list usably', async () => {
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  watch(phone);
  try {
    await logIn(phone, server.base, PASSWORD);
    await phone.goto(server.base + '/#/devices');
    const link = phone.getByRole('link', { name: 'pump-1' });
    await link.waitFor();
    const box = await link.boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= 390, `link at ${JSON.stringify(box)} is off screen`);
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `page scrolls sideways: ${width}px`);
    await shot(phone, 'devices-phone');
    await link.click();
    await phone.getByRole('switch').waitFor();
    await shot(phone, 'device-phone');
    await fitsPhone(phone, '#/rules', phone.getByTestId('rule-table'), 'rules-phone');
    const leak = (await rest('/api/v1/alarms?type=Leak&status=any')).data[0];
    await fitsPhone(phone, `#/alarms/${leak.id}`, phone.getByTestId('comments'), 'alarm-phone');
    await fitsPhone(phone, '#/users', phone.getByTestId('user-table'), 'users-phone');
    await fitsPhone(phone, '#/clients', phone.getByTestId('client-table'), 'clients-phone');
    await fitsPhone(phone, '#/map', phone.locator('path.device-marker').first(), 'map-phone');
    await fitsPhone(phone, '#/rules/new', phone.getByRole('button', { name: 'Run backtest' }), 'rule-phone');
    await fitsPhone(phone, '#/dashboards', phone.locator('tr[data-dashboard="Pump room"]'), 'dashboards-phone');
    await fitsPhone(phone, '#/firmware', phone.getByTestId('campaign-table').getByText('pumps 2.0'), 'campaigns-phone');
    await fitsPhone(phone, `#/dashboards/${dashboardId}`, phone.getByRole('region', { name: 'Valve' }).getByRole('switch'), 'dashboard-phone');
    // Every widget within the screen's width, one under the other.
    const boxes = await phone.locator('section[data-widget]').evaluateAll((els) => els.map((e) => e.getBoundingClientRect().toJSON()));
    assert.equal(boxes.length, 8);
    for (const b of boxes) assert.ok(b.left >= 0 && b.right <= 390, `widget at ${JSON.stringify(b)}`);
  } finally {
    await phone.close();
  }
});

test('logging out ends the session', async () => {
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('Password').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('ironbridge.session')), null);
});

test('no script or console errors on any page', () => {
  assert.deepEqual(pageErrors, []);
});
