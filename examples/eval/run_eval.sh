#!/bin/sh
# The full accuracy evaluation (docs/ACCURACY.md): every method at w4 g128,
# w3 g128 and w8 per-channel on the real model and real text.
#   examples/eval/run_eval.sh BUILD_DIR [evaluate.py options]
set -eu
BUILD=$(cd "${1:?usage: run_eval.sh BUILD_DIR [options]}" && pwd)
shift
HERE=$(cd "$(dirname "$0")" && pwd)
"$HERE/fetch.sh" "$BUILD/eval"
exec /usr/bin/python3 "$HERE/evaluate.py" --woq "$BUILD/woq" --node-modules "$BUILD/eval/node_modules" \
  --work "$BUILD/eval/work" --sentences 1024 --rows 16384 --markdown "$HERE/../../docs/ACCURACY.md" "$@"
