#!/usr/bin/env bash
# Vendor the web UI's third-party ES modules into crates/ui/assets/vendor/ (no CDN, no build step,
# nothing downloaded at build time). Fetches pinned npm packages with `npm pack` and copies only the
# files the UI imports, with each package's LICENSE and a VERSIONS file:
#   preact.module.js, hooks.module.js   (preact: hooks' bare `from "preact"` rewritten to
#                                         `./preact.module.js`, since the CSP forbids the inline
#                                         import map that would otherwise resolve it)
#   htm.module.js                        (htm, bound to preact's `h` in assets/js/html.js)
#   uPlot.esm.js, uPlot.min.css          (uplot)
#   leaflet.esm.js, leaflet.css          (leaflet: the map page; no marker images, it draws circles)
#   world-110m.json                      (world-atlas: Natural Earth's 1:110m countries, public
#                                         domain, turned from TopoJSON into GeoJSON here with
#                                         topojson-client, coordinates rounded to 0.01 degree:
#                                         the map's offline base layer, no tile server)
#   LICENSE-preact, LICENSE-htm, LICENSE-uplot, LICENSE-leaflet, LICENSE-world-atlas
# `sourceMappingURL` comments are stripped (we ship no .map files). Idempotent.
#
#   scripts/vendor-ui.sh
set -euo pipefail

PREACT=10.29.8
HTM=3.1.1
UPLOT=1.6.32
LEAFLET=1.9.4
WORLD_ATLAS=2.0.2
TOPOJSON_CLIENT=3.1.0   # used here only, to convert world-atlas; not shipped

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/crates/ui/assets/vendor"

command -v npm >/dev/null || { echo "vendor-ui: npm is required" >&2; exit 2; }
command -v node >/dev/null || { echo "vendor-ui: node is required" >&2; exit 2; }
command -v tar >/dev/null || { echo "vendor-ui: tar is required" >&2; exit 2; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/vendor-ui.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# fetch NAME VERSION: unpacks the package into $TMP/NAME and checks its version.
fetch() {
  local name="$1" version="$2" tarball got
  echo "vendor-ui: fetching $name@$version"
  mkdir -p "$TMP/$name"
  tarball="$(cd "$TMP" && npm pack --silent "$name@$version" | tail -n 1)"
  [ -f "$TMP/$tarball" ] || { echo "vendor-ui: npm pack gave no tarball for $name" >&2; exit 1; }
  tar -xzf "$TMP/$tarball" -C "$TMP/$name" --strip-components=1
  got="$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$TMP/$name/package.json" | head -n 1)"
  [ "$got" = "$version" ] || { echo "vendor-ui: $name is $got, wanted $version" >&2; exit 1; }
}

# copy SRC DEST: copies a file with its source-map comment removed.
copy() {
  [ -f "$1" ] || { echo "vendor-ui: missing $1" >&2; exit 1; }
  sed -E -e 's@//# sourceMappingURL=[^[:space:]]*[[:space:]]*$@@' \
         -e 's@/\*# sourceMappingURL=[^*]*\*/[[:space:]]*$@@' "$1" > "$2"
  chmod 644 "$2"
}

license() {
  local f
  for f in LICENSE LICENSE.md LICENSE.txt license; do
    if [ -f "$TMP/$1/$f" ]; then cp "$TMP/$1/$f" "$DEST/LICENSE-$1"; chmod 644 "$DEST/LICENSE-$1"; return; fi
  done
  echo "vendor-ui: $1 has no LICENSE file" >&2
  exit 1
}

fetch preact "$PREACT"
fetch htm "$HTM"
fetch uplot "$UPLOT"
fetch leaflet "$LEAFLET"
fetch world-atlas "$WORLD_ATLAS"
fetch topojson-client "$TOPOJSON_CLIENT"

mkdir -p "$DEST"
copy "$TMP/preact/dist/preact.module.js" "$DEST/preact.module.js"
copy "$TMP/preact/hooks/dist/hooks.module.js" "$DEST/hooks.module.js"
sed -i -E 's@from ?"preact"@from"./preact.module.js"@g; s@from ?'"'"'preact'"'"'@from"./preact.module.js"@g' "$DEST/hooks.module.js"
if grep -Eq "from ?[\"']preact[\"']" "$DEST/hooks.module.js"; then
  echo "vendor-ui: could not rewrite the preact import in hooks.module.js" >&2
  exit 1
fi
copy "$TMP/htm/dist/htm.module.js" "$DEST/htm.module.js"
copy "$TMP/uplot/dist/uPlot.esm.js" "$DEST/uPlot.esm.js"
copy "$TMP/uplot/dist/uPlot.min.css" "$DEST/uPlot.min.css"
copy "$TMP/leaflet/dist/leaflet-src.esm.js" "$DEST/leaflet.esm.js"
copy "$TMP/leaflet/dist/leaflet.css" "$DEST/leaflet.css"
# Countries as GeoJSON: name and geometry only, coordinates to 0.01 degree (~1 km; ~170 KB).
node - "$TMP/topojson-client/dist/topojson-client.js" "$TMP/world-atlas/countries-110m.json" "$DEST/world-110m.json" <<'JS'
const [client, input, output] = process.argv.slice(2);
const topojson = require(client);
const topo = JSON.parse(require('fs').readFileSync(input, 'utf8'));
const round = (c) => (typeof c[0] === 'number' ? [Math.round(c[0] * 100) / 100, Math.round(c[1] * 100) / 100] : c.map(round));
const features = topojson.feature(topo, topo.objects.countries).features
  .filter((f) => f.geometry)
  .map((f) => ({ type: 'Feature', properties: { name: f.properties.name },
    geometry: { type: f.geometry.type, coordinates: round(f.geometry.coordinates) } }));
require('fs').writeFileSync(output, JSON.stringify({ type: 'FeatureCollection', features }) + '\n');
JS
chmod 644 "$DEST/world-110m.json"
license preact
license htm
license uplot
license leaflet
license world-atlas
printf 'preact %s\nhtm %s\nuplot %s\nleaflet %s\nworld-atlas %s (countries-110m, via topojson-client %s)\n' \
  "$PREACT" "$HTM" "$UPLOT" "$LEAFLET" "$WORLD_ATLAS" "$TOPOJSON_CLIENT" > "$DEST/VERSIONS"

echo "vendor-ui: -> ${DEST#"$ROOT"/}"
ls -l "$DEST"
