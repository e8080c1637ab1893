#!/bin/sh
# Fuzzes one target for a given time with libFuzzer + ASan + UBSan (clang).
#
#   tests/fuzz/run_fuzz.sh TARGET SECONDS      TARGET: reader, decompress, roundtrip, import
#
# Builds into build-fuzz/, fuzzes from a copy of tests/fuzz/corpus/TARGET
# (new inputs land in build-fuzz/corpus-TARGET), and on a crash leaves the
# input in build-fuzz/ and exits non-zero. Add crashers you fix to the
# corpus so ctest replays them forever.
set -eu
TARGET=${1:?usage: run_fuzz.sh reader|decompress|roundtrip|import SECONDS}
SECONDS_TO_RUN=${2:?usage: run_fuzz.sh reader|decompress|roundtrip|import SECONDS}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD="$ROOT/build-fuzz"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWOQ_FUZZ=ON \
  -DWOQ_BUILD_CLI=OFF -DWOQ_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target "fuzz_$TARGET" >/dev/null
mkdir -p "$BUILD/corpus-$TARGET"
cp -n "$ROOT/tests/fuzz/corpus/$TARGET/"* "$BUILD/corpus-$TARGET/" 2>/dev/null || true
if [ "$TARGET" = reader ]; then cp -n "$ROOT/tests/data/hostile/"*.woq "$BUILD/corpus-$TARGET/" || true; fi
cd "$BUILD"
exec "./tests/fuzz/fuzz_$TARGET" -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 "corpus-$TARGET"
