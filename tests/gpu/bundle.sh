#!/bin/sh
# Builds what a GPU session runs and puts it in one folder small enough to
# carry to the device machine (which has CUDA, cuBLAS and PyTorch but not
# Debian's zstd / xxhash / GoogleTest):
#   tests/gpu/bundle.sh [BUILD_DIR]        (default build-gpu; sm_90a only)
# gives BUILD_DIR/bundle/ with libwoq.so, woq_gpu_tests, woq_cuda_bench,
# cuda_torch_compare.py, the two shared libraries they need besides CUDA's,
# and run.sh, which runs the gpu tests and the benchmarks there:
#   device: BUILD_DIR/bundle/run.sh  (logs under $OUT, summary last)
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build-gpu}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DWOQ_BUILD_CLI=OFF -DWOQ_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target woq woq_gpu_tests woq_cuda_bench
B=$BUILD/bundle
rm -rf "$B"
mkdir -p "$B"
cp -L "$BUILD/libwoq.so.1" "$BUILD/tests/woq_gpu_tests" "$BUILD/tests/woq_cuda_bench" "$B/"
for lib in libzstd.so.1 libxxhash.so.0; do
  cp -L "$(ldd "$BUILD/libwoq.so.1" | awk -v l="$lib" '$1 == l { print $3 }')" "$B/"
done
cp "$ROOT/tests/gpu/run.sh" "$ROOT/tests/benchmarks/cuda_torch_compare.py" "$B/"
du -sh "$B"
