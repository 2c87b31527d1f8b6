// Starts `ironbridge serve` on 127.0.0.1:0 ports with a temporary data dir, and a tiny REST
// client for setting up what the UI tests look at.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const PASSWORD = 'ui-test-Passw0rd';

export function binary() {
  return process.env.IRONBRIDGE_BIN || join(process.env.CARGO_TARGET_DIR || join(ROOT, 'target'), 'debug/ironbridge');
}

/** Resolves when the server printed its `listening mqtt` line (the last one). `config` is the
 *  text of a TOML config file. */
export async function startServer({ config = '' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'ib-ui-'));
  const local = '127.0.0.1:0';
  writeFileSync(join(dir, 'ironbridge.toml'), config);
  const args = ['serve', '--config', join(dir, 'ironbridge.toml'), '--data-dir', join(dir, 'data'),
    '--http', local, '--mqtt', local, '--coap', local];
  const proc = spawn(binary(), args, {
    env: { ...process.env, IRONBRIDGE_ADMIN_PASSWORD: PASSWORD, RUST_LOG: process.env.RUST_LOG || 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const base = await new Promise((ok, fail) => {
    let http = null;
    proc.on('exit', (code) => fail(new Error(`ironbridge exited with ${code} before listening`)));
    proc.on('error', fail);
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = line.match(/^listening (\w+) (\S+)$/);
      if (m && m[1] === 'http') http = `http://${m[2]}`;
      if (m && m[1] === 'mqtt') ok(http);
    });
  });
  const stop = async () => {
    if (proc.exitCode === null) {
      const gone = new Promise((ok) => proc.once('exit', ok));
      proc.kill('SIGTERM');
      await gone;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { base, stop };
}

/** A REST client logged in as the bootstrap administrator (logging in again when its token
 *  is near expiry: the UI tests run with short-lived tokens). */
export async function adminClient(base) {
  let token = null;
  let expires = 0;
  async function logIn() {
    const login = await fetch(`${base}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'admin', password: PASSWORD }),
    });
    if (!login.ok) throw new Error(`admin login: ${login.status}`);
    const body = await login.json();
    token = body.token;
    expires = Date.now() + body.expires_in * 1000;
  }
  return async function rest(path, { method = 'GET', body, auth = true } = {}) {
    if (Date.now() > expires - 20_000) await logIn();
    const headers = { 'content-type': 'application/json' };
    if (auth) headers.authorization = `Bearer ${token}`;
    const res = await fetch(`${base}${path}`, { method, headers, body: body && JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
}
