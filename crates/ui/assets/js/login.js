// The login form: POST /api/v1/auth/login.
import { html, useState } from './html.js';
import { login } from './api.js';

export function Login() {
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    const f = new FormData(e.target);
    setBusy(true);
    setError('');
    try {
      await login(f.get('username'), f.get('password'));
    } catch (err) {
      setError(err.message);
      setBusy(false);
    }
  }
  return html`
    <main class="login card">
      <h1><img src="/icon.svg" alt="" width="28" height="28" /> Ironbridge</h1>
      <form onSubmit=${submit}>
        <label>User name <input name="username" autocomplete="username" required autofocus /></label>
        <label>Password <input name="password" type="password" autocomplete="current-password" required /></label>
        ${error && html`<p class="error" role="alert">${error}</p>`}
        <button type="submit" disabled=${busy}>Log in</button>
      </form>
    </main>`;
}
