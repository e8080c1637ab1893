#!/bin/sh
# Builds what a GPU session runs and puts it in one folder small enough to
# carry to the device machine (which has CUDA, cuBLAS and PyTorch but not
# Debian's zstd / xxhash / GoogleTest):
#   tests/gpu/bundle.sh [BUILD_DIR]        (default build-gpu; sm_90a only)
# gives BUILD_DIR/bundle/ with libwoq.so, woq_gpu_tests, woq_cuda_bench,
# cuda_torch_compare.py, the two shared libraries they need besides CUDA's,
# and run.sh, which runs the gpu tests and the benchmarks there:
#   device: BUILD_DIR/bundle/run.sh  (logs under $OUT, summary last)
# It also exports the build's dependencies to bundle/deps/ (headers, static
# zstd and xxhash, GoogleTest's source), so that run.sh can build the bundle
# again on the device if these binaries do not load there; that build runs
# this script with WOQ_DEPS_PREFIX, the prefix to build against.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build-gpu}
PREFIX=${WOQ_DEPS_PREFIX:-}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DWOQ_BUILD_CLI=OFF -DWOQ_BUILD_EXAMPLES=OFF ${PREFIX:+"-DCMAKE_PREFIX_PATH=$PREFIX"} \
  ${PREFIX:+-DCMAKE_POLICY_VERSION_MINIMUM=3.5} >/dev/null  # CMake 4 there: Debian's nlohmann config is older
cmake --build "$BUILD" -j "$(nproc)" --target woq woq_gpu_tests woq_cuda_bench
B=$BUILD/bundle
rm -rf "$B"
mkdir -p "$B"
cp -L "$BUILD/libwoq.so.1" "$BUILD/tests/woq_gpu_tests" "$BUILD/tests/woq_cuda_bench" "$B/"
for lib in libzstd.so.1 libxxhash.so.0; do  # none where they were linked statically
  path=$(ldd "$BUILD/libwoq.so.1" | awk -v l="$lib" '$1 == l { print $3 }')
  [ -n "$path" ] && cp -L "$path" "$B/"
done
cp "$ROOT/tests/gpu/run.sh" "$ROOT/tests/benchmarks/cuda_torch_compare.py" "$B/"
if [ -z "$PREFIX" ]; then  # Debian's packages (.ci/setup installs them)
  D=$B/deps
  mkdir -p "$D/include" "$D/lib" "$D/share/cmake"
  cp /usr/include/zstd.h /usr/include/zstd_errors.h /usr/include/zdict.h /usr/include/xxhash.h \
    /usr/include/xxh3.h "$D/include/"
  cp -R /usr/include/nlohmann "$D/include/"
  cp -R /usr/share/cmake/nlohmann_json "$D/share/cmake/"  # relocatable: include/ three levels up
  cp /usr/lib/x86_64-linux-gnu/libzstd.a /usr/lib/x86_64-linux-gnu/libxxhash.a "$D/lib/"  # PIC
  cp -R /usr/src/googletest "$D/googletest"
fi
du -sh "$B"
