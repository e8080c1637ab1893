#!/bin/sh
# Runs on the GPU machine from a bundle made by tests/gpu/bundle.sh: the gpu
# tests, then the CUDA benchmark; full logs under $OUT (or ./gpu-out), the
# test summary and the benchmark table last.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/gpu-out}
mkdir -p "$OUT"
# cuBLAS and cudart for the benchmark: the toolkit's, else PyTorch's wheels.
CUDA_LIBS=/usr/local/cuda/lib64
for d in $(python3 -c 'import glob, os, nvidia; print(" ".join(glob.glob(os.path.join(os.path.dirname(nvidia.__file__), "*", "lib"))))' 2>/dev/null); do
  CUDA_LIBS="$CUDA_LIBS:$d"
done
export LD_LIBRARY_PATH="$HERE:$CUDA_LIBS:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
WOQ_REQUIRE_GPU=1 "$HERE/woq_gpu_tests" > "$OUT/gpu_tests.txt" 2>&1
tests=$?
"$HERE/woq_cuda_bench" "$@" > "$OUT/cuda_bench.txt" 2>&1
bench=$?
cat "$OUT/gpu.txt"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|skipped:" "$OUT/gpu_tests.txt" | tail -20
tail -60 "$OUT/cuda_bench.txt"
echo "woq_gpu_tests exit $tests, woq_cuda_bench exit $bench"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
