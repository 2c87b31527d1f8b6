#!/usr/bin/env bash
# Vendor Swagger UI into crates/api/assets/swagger-ui/ (served at /api/v1/docs/, no CDN, nothing
# downloaded at build time). Fetches the npm package `swagger-ui-dist` at a pinned version with
# `npm pack` and copies only what the docs page needs:
#   swagger-ui-bundle.js, swagger-ui.css   (their `sourceMappingURL` comments stripped, so browsers
#                                           do not ask for .map files we do not ship)
#   LICENSE (and NOTICE if the package has one), VERSION
#   swagger-ui-bundle.js.LICENSE.txt       (if present: the licence notices of the third-party code
#                                           minified into the bundle, which the bundle's first line
#                                           points to; MIT and friends require shipping them)
# Our own index.html, init.js and README.md in that directory are left alone.
# Idempotent: re-running with the same version rewrites identical files.
#
#   scripts/vendor-swagger-ui.sh            # the pinned version below
#   scripts/vendor-swagger-ui.sh 5.36.0     # another version (then update the pin and README.md)
set -euo pipefail

VERSION="${1:-5.35.0}"
PACKAGE=swagger-ui-dist

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/crates/api/assets/swagger-ui"

command -v npm >/dev/null || { echo "vendor-swagger-ui: npm is required" >&2; exit 2; }
command -v tar >/dev/null || { echo "vendor-swagger-ui: tar is required" >&2; exit 2; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/swagger-ui-dist.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "vendor-swagger-ui: fetching $PACKAGE@$VERSION"
tarball="$(cd "$TMP" && npm pack --silent "$PACKAGE@$VERSION" | tail -n 1)"
[ -f "$TMP/$tarball" ] || { echo "vendor-swagger-ui: npm pack produced no tarball ($tarball)" >&2; exit 1; }
tar -xzf "$TMP/$tarball" -C "$TMP"
PKG="$TMP/package"

got="$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$PKG/package.json" | head -n 1)"
if [ "$got" != "$VERSION" ]; then
  echo "vendor-swagger-ui: package.json says version '$got', wanted '$VERSION'" >&2
  exit 1
fi

for f in swagger-ui-bundle.js swagger-ui.css; do
  [ -f "$PKG/$f" ] || { echo "vendor-swagger-ui: $PACKAGE@$VERSION has no $f" >&2; exit 1; }
done
license=""
for f in LICENSE LICENSE.md LICENSE.txt; do
  if [ -f "$PKG/$f" ]; then license="$f"; break; fi
done
[ -n "$license" ] || { echo "vendor-swagger-ui: $PACKAGE@$VERSION has no LICENSE file" >&2; exit 1; }

mkdir -p "$DEST"
# Drop the source-map comments (`//# sourceMappingURL=...` in JS, `/*# sourceMappingURL=... */`
# in CSS), whether on a line of their own or at the end of the last line.
for f in swagger-ui-bundle.js swagger-ui.css; do
  sed -E -e 's@//# sourceMappingURL=[^[:space:]]*[[:space:]]*$@@' \
         -e 's@/\*# sourceMappingURL=[^*]*\*/[[:space:]]*$@@' \
    "$PKG/$f" > "$TMP/$f.out"
  if tail -c 400 "$TMP/$f.out" | grep -Eq '[#@] sourceMappingURL='; then
    echo "vendor-swagger-ui: could not strip sourceMappingURL from $f" >&2
    exit 1
  fi
  mv "$TMP/$f.out" "$DEST/$f"
done
cp "$PKG/$license" "$DEST/LICENSE"
rm -f "$DEST/NOTICE" "$DEST/swagger-ui-bundle.js.LICENSE.txt"
for f in NOTICE NOTICE.md NOTICE.txt; do
  if [ -f "$PKG/$f" ]; then cp "$PKG/$f" "$DEST/NOTICE"; break; fi
done
if [ -f "$PKG/swagger-ui-bundle.js.LICENSE.txt" ]; then
  cp "$PKG/swagger-ui-bundle.js.LICENSE.txt" "$DEST/swagger-ui-bundle.js.LICENSE.txt"
fi
printf '%s\n' "$VERSION" > "$DEST/VERSION"
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt VERSION; do
  [ ! -f "$DEST/$f" ] || chmod 644 "$DEST/$f"
done

echo "vendor-swagger-ui: $PACKAGE@$VERSION -> ${DEST#"$ROOT"/}"
ls -l "$DEST"
