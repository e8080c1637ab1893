#!/bin/sh
# Runs on the GPU machine from a bundle made by tests/gpu/bundle.sh: the gpu
# tests, the CUDA benchmark (4-bit, then 8-bit at a few M) and the
# comparison with PyTorch's int4 kernel; full logs under $OUT (or
# ./gpu-out), the test summary and the tables last.
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

# Every step is bounded (575 s in all, under the device's 600 s per
# command), so a hung kernel cannot eat the lease; a kernel fault (which
# poisons its process's CUDA context) costs only its own step: each gpu
# test runs in a process of its own, and the benchmark's large M (the
# wgmma kernel on Hopper) apart from its small M.
tests=0
deadline=$(($(date +%s) + 120))
for t in $("$HERE/woq_gpu_tests" --gtest_list_tests | awk '/^[^ ]/ { suite = $1 } /^  / { print suite $1 }'); do
  left=$((deadline - $(date +%s)))
  [ "$left" -gt 40 ] && left=40
  if [ "$left" -le 0 ]; then
    echo "[  FAILED  ] $t (not run: the gpu tests' 120 s are spent)" >> "$OUT/gpu_tests.txt"
    tests=1
    continue
  fi
  WOQ_REQUIRE_GPU=1 timeout "$left" "$HERE/woq_gpu_tests" --gtest_filter="$t" >> "$OUT/gpu_tests.txt" 2>&1 || tests=1
done
timeout 90 "$HERE/woq_cuda_bench" --m 1 --m 4 --m 16 --m 64 --m 128 "$@" > "$OUT/cuda_bench.txt" 2>&1
bench=$?
timeout 90 "$HERE/woq_cuda_bench" --m 256 --m 1024 --m 4096 "$@" > "$OUT/cuda_bench_large.txt" 2>&1
bench_large=$?
timeout 40 "$HERE/woq_cuda_bench" --bits 8 --m 1 --m 16 --m 256 > "$OUT/cuda_bench_int8.txt" 2>&1
bench8=$?
timeout 50 python3 -u "$HERE/cuda_torch_compare.py" "$HERE/libwoq.so.1" --m 1 --m 4 --m 16 --m 64 --m 128 \
  > "$OUT/torch_compare.txt" 2>&1
torch=$?
timeout 45 python3 -u "$HERE/cuda_torch_compare.py" "$HERE/libwoq.so.1" --m 256 --m 1024 --m 4096 \
  > "$OUT/torch_compare_large.txt" 2>&1
torch_large=$?
# Where the tensor-core kernels cross: each forced at every M (wgmma only
# where the GPU runs it).
for k in gemv split tile wgmma; do
  WOQ_CUDA_KERNEL=$k timeout 35 "$HERE/woq_cuda_bench" --shape 8192x8192 --shape 4096x11008 \
    --m 1 --m 4 --m 16 --m 32 --m 64 --m 128 --m 256 --m 1024 > "$OUT/cuda_bench_$k.txt" 2>&1
done
cat "$OUT/gpu.txt"
# One line a test (its result and time), each failure's place, the notes.
grep -E "^\[       OK \] |^\[  (FAILED|SKIPPED) +\] .*\(|Failure|skipped:|not compared|not run" "$OUT/gpu_tests.txt" | tail -n 40
tail -n 34 "$OUT/cuda_bench.txt"
tail -n 20 "$OUT/cuda_bench_large.txt"
tail -n 20 "$OUT/cuda_bench_int8.txt"
tail -n 40 "$OUT/torch_compare.txt"
tail -n 22 "$OUT/torch_compare_large.txt"
tail -n 18 "$OUT/cuda_bench_gemv.txt" "$OUT/cuda_bench_split.txt" "$OUT/cuda_bench_tile.txt" "$OUT/cuda_bench_wgmma.txt"
echo "woq_gpu_tests exit $tests, woq_cuda_bench exit $bench (large M: $bench_large, int8: $bench8)," \
  "cuda_torch_compare exit $torch (large M: $torch_large)"
[ "$tests" = 0 ] && [ "$bench" = 0 ] && [ "$bench_large" = 0 ] && [ "$bench8" = 0 ] && [ "$torch" = 0 ] &&
  [ "$torch_large" = 0 ]
