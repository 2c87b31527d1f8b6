// End-to-end tests of the web UI against a real `ironbridge serve` and Debian's chromium.
// Every wait is for a condition (Playwright locators, waitForFunction), never a fixed sleep.
// UI_SCREENSHOTS=DIR saves a screenshot of each page into DIR (`npm run screenshots`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, adminClient, PASSWORD } from './server.js';
import { launch, logIn } from './browser.js';

let server, rest, browser, page, device;
const pageErrors = [];

async function shot(p, name) {
  const dir = process.env.UI_SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await p.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
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
  for (const name of ['boiler-2', 'valve-3']) await rest('/api/v1/devices', { method: 'POST', body: { name } });
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

/** Script errors and console errors (a CSP violation is one) fail the last test. */
function watch(p) {
  p.on('pageerror', (e) => pageErrors.push(e.message));
  p.on('console', (m) => m.type() === 'error' && pageErrors.push(m.text()));
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
