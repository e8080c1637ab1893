#!/bin/sh
# The GPU session's fallback, tried here: a carried bundle whose binaries do
# not load (as on a device with older system libraries) must make run.sh
# build the bundle again from the source tree and the carried deps/ alone,
# and run the gpu tests with what it built.
#   tests/gpu/check_rebuild.sh WORK_DIR
# Without a GPU those tests then fail (WOQ_REQUIRE_GPU=1): what is checked
# is that they ran, from the rebuilt bundle, built against deps/.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:?usage: check_rebuild.sh WORK_DIR}
rm -rf "$WORK"
CARRIED=$WORK/carried/bundle
mkdir -p "$CARRIED" "$WORK/tmp"
sh "$ROOT/tests/gpu/bundle.sh" --deps "$CARRIED/deps"
cp "$ROOT/tests/gpu/run.sh" "$CARRIED/"
# A test binary whose library is missing: the loader refuses it, as it
# would one built for a newer glibc.
printf 'int gone(void) { return 0; }\n' > "$WORK/gone.c"
printf 'int gone(void);\nint main(void) { return gone(); }\n' > "$WORK/main.c"
cc -shared -fPIC -o "$WORK/libwoq_gone.so" "$WORK/gone.c"
cc -o "$CARRIED/woq_gpu_tests" "$WORK/main.c" -L"$WORK" -lwoq_gone
rm "$WORK/libwoq_gone.so"
WOQ_SOURCE_DIR=$ROOT TMPDIR=$WORK/tmp OUT=$WORK/out RUN_BUDGET=800 sh "$CARRIED/run.sh" tests > "$WORK/run.log" 2>&1 || true

fail() {
  echo "check_rebuild: $1"
  cat "$WORK/out/rebuild.txt" 2>/dev/null || true
  exit 1
}
grep -q "error while loading shared libraries: libwoq_gone.so" "$WORK/out/rebuild.txt" || fail "no loader error"
grep -q "^== rebuilt in $WORK/tmp/woq-device-build/build/bundle" "$WORK/out/rebuild.txt" || fail "no rebuild"
cache=$WORK/tmp/woq-device-build/build/CMakeCache.txt
for dep in ZSTD_LIBRARY:FILEPATH XXHASH_LIBRARY:FILEPATH GTest_DIR:PATH nlohmann_json_DIR:PATH; do
  grep -q "^$dep=$WORK/tmp/woq-device-build/prefix/" "$cache" || fail "$dep not from the carried deps: $(grep "^$dep=" "$cache")"
done
ran=$(grep -c "^\[ RUN      \] Cuda\." "$WORK/out/gpu_tests.txt" || true)
listed=$("$WORK/tmp/woq-device-build/build/bundle/woq_gpu_tests" --gtest_list_tests | grep -c "^  ")
[ "$ran" -gt 0 ] && [ "$ran" -eq "$listed" ] || fail "$ran of the $listed gpu tests ran from the rebuilt bundle"
echo "rebuilt on the carried deps alone; all $ran gpu tests ran from the rebuilt bundle"
