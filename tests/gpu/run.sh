#!/bin/sh
# Runs on the GPU machine from a bundle made by tests/gpu/bundle.sh:
#   run.sh [tests] [bench] [torch] [sweeps]     (no argument: all four)
# tests: the gpu tests; bench: the CUDA benchmark (4-bit, then 8-bit at a
# few M); torch: the comparison with PyTorch's int4 kernel; sweeps: the
# benchmark with each kernel forced, to place the switches. Full logs under
# $OUT (or ./gpu-out), the test summary and the tables last.
#
# The device lends 15 minutes a session, starts included, so the first call
# should be `RUN_BUDGET=420 run.sh tests bench torch` (timeout_s 450), which
# leaves room for a second (a rerun after a fix, or the sweeps). RUN_BUDGET
# (s, default 570) bounds the whole script: each step's timeout is cut to
# what is left, in the order above, so a hung kernel cannot eat the lease
# and the summary still prints. A kernel fault (which poisons its process's CUDA context) costs
# only its own step: each gpu test runs in a process of its own, and the
# benchmark's large M (the wgmma kernel on Hopper) apart from its small M.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/gpu-out}
mkdir -p "$OUT"
PHASES=${*:-tests bench torch sweeps}
wants() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }
END=$(($(date +%s) + ${RUN_BUDGET:-570}))
# Logs of the steps this call runs start empty (steps append).
wants tests && rm -f "$OUT/gpu_tests.txt"
wants bench && rm -f "$OUT/cuda_bench.txt"
wants torch && rm -f "$OUT/torch_compare.txt"
wants sweeps && rm -f "$OUT/cuda_bench_sweeps.txt"
# The timeout for a step of at most $1 s: what is left of the budget, less
# 15 s for the summary; 0 when nothing is.
cap() {
  left=$((END - 15 - $(date +%s)))
  [ "$left" -gt "$1" ] && left=$1
  [ "$left" -gt 0 ] && echo "$left" || echo 0
}
# step NAME SECONDS LOG COMMAND...: runs it under its timeout, appends its
# output to $OUT/LOG under a heading (the device returns at most 8 files),
# records NAME's exit status (124: timed out, 125: not run).
status=""
step() {
  name=$1 secs=$(cap "$2") log=$OUT/$3
  shift 3
  echo "== $name: ${WOQ_CUDA_KERNEL:+WOQ_CUDA_KERNEL=$WOQ_CUDA_KERNEL }$*" >> "$log"
  if [ "$secs" -le 0 ]; then
    echo "not run: the budget is spent" >> "$log"
    rc=125
  else
    timeout "$secs" "$@" >> "$log" 2>&1
    rc=$?
  fi
  status="$status $name=$rc"
}

# cuBLAS and cudart for the benchmark: the toolkit's, else PyTorch's wheels.
CUDA_LIBS=/usr/local/cuda/lib64
for d in $(python3 -c 'import glob, os, nvidia; print(" ".join(glob.glob(os.path.join(os.path.dirname(nvidia.__file__), "*", "lib"))))' 2>/dev/null); do
  CUDA_LIBS="$CUDA_LIBS:$d"
done
HOST_LIBRARY_PATH=${LD_LIBRARY_PATH:-}  # for a rebuild, whose tools must not load the carried libraries
export LD_LIBRARY_PATH="$HERE:$CUDA_LIBS:$HOST_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1

# Binaries built on another system may not load here (an older glibc or
# libstdc++). Then, once, build the bundle here from the working tree the
# device copied (two folders up, or WOQ_SOURCE_DIR) and the dependencies
# carried in deps/, and run that one instead, with what is left of the
# budget. Log: rebuild.txt.
ROOT=${WOQ_SOURCE_DIR:-$(cd "$HERE/../.." && pwd)}
# The gpu tests, listed once: a binary that does not load lists none, and
# the loader's words stay in $listing_errors.
listing_errors=$(mktemp)
test_names=$("$HERE/woq_gpu_tests" --gtest_list_tests 2>"$listing_errors" |
  awk '/^[^ ]/ { suite = $1 } /^  / { print suite $1 }')
if [ -z "$test_names" ] && [ -z "${WOQ_REBUILT:-}" ] && [ -d "$HERE/deps" ] && [ -f "$ROOT/tests/gpu/bundle.sh" ]; then
  log=$OUT/rebuild.txt
  WORK=${TMPDIR:-/tmp}/woq-device-build
  rm -rf "$WORK"
  mkdir -p "$WORK/prefix"
  {
    echo "== the carried binaries do not load here:"
    head -n 5 "$listing_errors"
    echo "== rebuilding from $ROOT"
    cp -R "$HERE/deps/include" "$HERE/deps/lib" "$HERE/deps/share" "$WORK/prefix/"
  } > "$log" 2>&1
  secs=$(cap 300)
  rc=125
  if [ "$secs" -gt 0 ]; then
    LD_LIBRARY_PATH=$HOST_LIBRARY_PATH timeout "$secs" sh -c '
      cmake -S "$1/googletest" -B "$2/gtest" -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
        -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_INSTALL_PREFIX="$2/prefix" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
        > /dev/null &&
      cmake --build "$2/gtest" -j "$(nproc)" > /dev/null && cmake --install "$2/gtest" > /dev/null &&
      WOQ_DEPS_PREFIX="$2/prefix" sh "$3/tests/gpu/bundle.sh" "$2/build"' rebuild "$HERE/deps" "$WORK" "$ROOT" \
      >> "$log" 2>&1
    rc=$?
  fi
  if [ "$rc" -eq 0 ]; then
    echo "== rebuilt in $WORK/build/bundle" >> "$log"
    rm -f "$listing_errors"
    WOQ_REBUILT=1 OUT=$OUT RUN_BUDGET=$((END - $(date +%s))) LD_LIBRARY_PATH=$HOST_LIBRARY_PATH \
      exec sh "$WORK/build/bundle/run.sh" $PHASES
  fi
  echo "== the rebuild failed (status $rc): running the carried binaries anyway" >> "$log"
fi

if wants tests; then
  tests=0
  deadline=$(($(date +%s) + $(cap 120)))
  # No tests listed (a binary that does not load here) fails, with the
  # loader's words, rather than passing with no tests run.
  if [ -z "$test_names" ]; then
    { echo "[  FAILED  ] woq_gpu_tests (lists no tests here)"; cat "$listing_errors"; ldd "$HERE/woq_gpu_tests"; } \
      >> "$OUT/gpu_tests.txt" 2>&1
    tests=1
  fi
  for t in $test_names; do
    left=$((deadline - $(date +%s)))
    [ "$left" -gt 40 ] && left=40
    if [ "$left" -le 0 ]; then
      echo "[  FAILED  ] $t (not run: the gpu tests' time is spent)" >> "$OUT/gpu_tests.txt"
      tests=1
      continue
    fi
    WOQ_REQUIRE_GPU=1 timeout "$left" "$HERE/woq_gpu_tests" --gtest_filter="$t" >> "$OUT/gpu_tests.txt" 2>&1 || tests=1
  done
  status="$status tests=$tests"
fi
if wants bench; then
  step bench 90 cuda_bench.txt "$HERE/woq_cuda_bench" --m 1 --m 4 --m 16 --m 64 --m 128
  step bench_large 100 cuda_bench.txt "$HERE/woq_cuda_bench" --m 256 --m 1024 --m 4096
  # Dequantize + cuBLAS, the large-M alternative, on the same shapes.
  export WOQ_CUDA_KERNEL=cublas
  step bench_cublas 60 cuda_bench.txt "$HERE/woq_cuda_bench" --m 256 --m 1024 --m 4096
  unset WOQ_CUDA_KERNEL
  step bench_int8 40 cuda_bench.txt "$HERE/woq_cuda_bench" --bits 8 --m 1 --m 16 --m 256
fi
if wants torch; then
  step torch 50 torch_compare.txt python3 -u "$HERE/cuda_torch_compare.py" "$HERE/libwoq.so.1" \
    --m 1 --m 4 --m 16 --m 64 --m 128
  step torch_large 45 torch_compare.txt python3 -u "$HERE/cuda_torch_compare.py" "$HERE/libwoq.so.1" \
    --m 256 --m 1024 --m 4096
fi
if wants sweeps; then
  # Where the kernels cross: each forced at every M (wgmma only where the
  # GPU runs it), timed against each other (no cuBLAS).
  for k in gemv split tile wgmma cublas; do
    export WOQ_CUDA_KERNEL=$k
    step "sweep_$k" 35 cuda_bench_sweeps.txt "$HERE/woq_cuda_bench" --no-cublas \
      --shape 8192x8192 --shape 4096x11008 --m 1 --m 4 --m 16 --m 32 --m 64 --m 128 --m 256 --m 1024 --m 4096
  done
  unset WOQ_CUDA_KERNEL
fi

rm -f "$listing_errors"
cat "$OUT/gpu.txt"
[ -f "$OUT/rebuild.txt" ] && grep "^== \|error" "$OUT/rebuild.txt" | head -n 12
if wants tests; then
  # One line a test (its result and time), each failure's place, the notes.
  grep -E "^\[       OK \] |^\[  (FAILED|SKIPPED) +\] .*\(|Failure|skipped:|not compared|not run|error while loading|not found" \
    "$OUT/gpu_tests.txt" | tail -n 40
fi
for f in cuda_bench torch_compare cuda_bench_sweeps; do
  [ -f "$OUT/$f.txt" ] && grep -v "^|---" "$OUT/$f.txt"
done
echo "exit statuses:$status"
case "$status" in *=[1-9]*) exit 1 ;; esac
exit 0
