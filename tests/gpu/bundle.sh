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
#   tests/gpu/bundle.sh --deps DIR         exports only the dependencies
set -eu
# Debian's packages (.ci/setup installs them) into DIR, as a prefix.
export_deps() {
  mkdir -p "$1/include" "$1/lib" "$1/share/cmake"
  cp /usr/include/zstd.h /usr/include/zstd_errors.h /usr/include/zdict.h /usr/include/xxhash.h \
    /usr/include/xxh3.h "$1/include/"
  cp -R /usr/include/nlohmann "$1/include/"
  cp -R /usr/share/cmake/nlohmann_json "$1/share/cmake/"  # relocatable: include/ three levels up
  cp /usr/lib/x86_64-linux-gnu/libzstd.a /usr/lib/x86_64-linux-gnu/libxxhash.a "$1/lib/"  # PIC
  cp -R /usr/src/googletest "$1/googletest"
}
if [ "${1:-}" = --deps ]; then  # only that (tests/gpu/check_rebuild.sh)
  export_deps "${2:?usage: bundle.sh --deps DIR}"
  exit 0
fi
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
  if [ -n "$path" ]; then cp -L "$path" "$B/"; fi
done
cp "$ROOT/tests/gpu/run.sh" "$ROOT/tests/benchmarks/cuda_torch_compare.py" "$B/"
if [ -z "$PREFIX" ]; then export_deps "$B/deps"; fi
du -sh "$B"
