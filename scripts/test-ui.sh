#!/usr/bin/env bash
# End-to-end tests of the web UI (tests/ui): a real `ironbridge serve` driven through Debian's
# chromium with playwright-core (never a downloaded browser). Builds nothing: runs
# $IRONBRIDGE_BIN, else ${CARGO_TARGET_DIR:-target}/debug/ironbridge. Idempotent: installs
# chromium only when /usr/bin/chromium is missing (`apt-get update` only then), and the npm
# packages with `npm ci` from tests/ui/package-lock.json.
#
#   scripts/test-ui.sh                   # the tests; exit status non-zero on any failure
#   scripts/test-ui.sh screenshots       # the same run, saving docs/screenshots/*.png: every page
#                                        # (login, overview, devices, device, alarms, alarm, rules,
#                                        # rule, users, clients, tenant-chooser, map, dashboards,
#                                        # dashboard, dashboard-edit, campaigns, campaign) and the phone
#                                        # layout of each (*-phone.png); the tests take them
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "test-ui: installing Debian package: chromium"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
command -v node >/dev/null || { echo "test-ui: node is required" >&2; exit 2; }
command -v npm >/dev/null || { echo "test-ui: npm is required" >&2; exit 2; }

export IRONBRIDGE_BIN="${IRONBRIDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/ironbridge}"
[ -x "$IRONBRIDGE_BIN" ] || { echo "test-ui: no binary at $IRONBRIDGE_BIN (cargo build first)" >&2; exit 2; }

cd tests/ui
# playwright-core must not fetch a browser of its own.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

if [ "${1:-}" = "screenshots" ]; then
  export UI_SCREENSHOTS="$ROOT/docs/screenshots"
fi
# node's runner prints `# pass N` / `# fail N` and exits non-zero when a test fails.
node --test --test-concurrency=1 --test-reporter=tap ui.test.js
