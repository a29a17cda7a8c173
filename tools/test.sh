#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine:
#   1. installs what is missing (tools/setup-deps.sh),
#   2. builds and runs every test (meson test),
#   3. rebuilds with AddressSanitizer + UndefinedBehaviorSanitizer and runs
#      the CPU tests again,
#   4. runs each libFuzzer target for a bounded time.
# Usage: tools/test.sh [--quick]   (--quick: skip sanitizers and fuzzing)
# Environment: FUZZ_SECONDS (default 60 per target), BUILD_ROOT (default .).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
BUILD_ROOT=${BUILD_ROOT:-$ROOT}

tools/setup-deps.sh || { echo "dependency setup failed"; exit 1; }
BALEEN_DEFAULT_MODEL=$(tools/default-model.sh) || exit 1
export BALEEN_DEFAULT_MODEL

passed=0
failed=0
count_results () {
  # adds up one meson test log: the JSON lines of testlog.json
  local log="$1/meson-logs/testlog.json"
  [ -f "$log" ] || return 0
  local p f
  p=$(grep -c '"result": "OK"' "$log" || true)
  f=$(grep -c -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" || true)
  passed=$((passed + p))
  failed=$((failed + f))
}

setup () {
  local dir="$1"; shift
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

status=0
echo "== build and test (release build)"
setup "$BUILD_ROOT/build-test" -Dbuildtype=release || exit 1
meson compile -C "$BUILD_ROOT/build-test" || exit 1
meson test -C "$BUILD_ROOT/build-test" --print-errorlogs --num-processes 2 || status=1
count_results "$BUILD_ROOT/build-test"

if [ $QUICK -eq 0 ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer"
  setup "$BUILD_ROOT/build-asan" -Dcuda=disabled -Dbuildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false || exit 1
  meson compile -C "$BUILD_ROOT/build-asan" || exit 1
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C "$BUILD_ROOT/build-asan" --print-errorlogs --num-processes 2 \
      --timeout-multiplier 4 || status=1
  count_results "$BUILD_ROOT/build-asan"

  if [ -x tests/fuzz/run-fuzzers.sh ]; then
    echo "== fuzzing, ${FUZZ_SECONDS}s per target"
    if tests/fuzz/run-fuzzers.sh "$FUZZ_SECONDS"; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1)); status=1
    fi
  fi
fi

echo "${passed} passed, ${failed} failed"
exit $status
