#!/bin/sh
# Installs the npm packages pinned by PACKAGE_DIR's package-lock.json into
# DEST/node_modules (once: again only when the lock file changes), without
# their install scripts (onnxruntime-node's would download more). Run at
# setup time; the tests that use the packages run offline.
#   .ci/npm_fetch.sh PACKAGE_DIR DEST
set -eu
PKG=${1:?usage: npm_fetch.sh PACKAGE_DIR DEST}
DEST=${2:?usage: npm_fetch.sh PACKAGE_DIR DEST}
mkdir -p "$DEST"
if cmp -s "$PKG/package-lock.json" "$DEST/package-lock.json" && [ -f "$DEST/node_modules/.package-lock.json" ]; then
  exit 0
fi
cp "$PKG/package.json" "$PKG/package-lock.json" "$DEST/"
echo "== fetching the npm packages of $(basename "$PKG") into $DEST"
(cd "$DEST" && npm ci --ignore-scripts --no-audit --no-fund --silent)
