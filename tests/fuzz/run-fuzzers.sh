#!/bin/sh
# Builds the libFuzzer targets with clang and runs each for a bounded time.
# Usage: tests/fuzz/run-fuzzers.sh [seconds per target, default 60] [build dir]
# New interesting inputs go to a scratch corpus, not the committed one; a crash
# leaves its input in the build dir as crash-* and makes the script fail. Keep
# such inputs (after fixing) under tests/fuzz/corpus/<target>/ as regressions.
set -eu

secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${2:-"$root/build-fuzz"}

if [ ! -d "$build" ]; then
  CC=clang meson setup "$build" "$root" -Dfuzzing=true -Dcuda=disabled -Dgui=disabled \
    -Db_lundef=false
fi
ninja -C "$build" tests/fuzz/fuzz-gguf tests/fuzz/fuzz-rules tests/fuzz/fuzz-jinja tests/fuzz/fuzz-chat-request

status=0
for target in gguf rules jinja chat-request; do
  exe="$build/tests/fuzz/fuzz-$target"
  seeds="$here/corpus/$target"
  scratch=$(mktemp -d)
  echo "== fuzz-$target for ${secs}s"
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$build/fuzz-$target-" "$scratch" "$seeds"; then
    echo "fuzz-$target found a problem; see $build/fuzz-$target-*" >&2
    status=1
  fi
  rm -rf "$scratch"
done
exit $status
