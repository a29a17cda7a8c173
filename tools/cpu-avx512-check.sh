#!/bin/bash
# tools/cpu-avx512-check.sh — check and time the AVX-512 CPU kernels on a machine that has them.
#
# Here (a machine that can build Baleen, with or without AVX-512):
#     tools/cpu-avx512-check.sh --prepare
#   builds build-avx512 (release, no CUDA) and copies tests/test-cpu-ops and
#   the non-system shared libraries it needs into build-avx512/carry/, which
#   the device call must carry (carry: ["build-avx512/carry"]).
#
# On the AVX-512 machine (from the repository root):
#     tools/cpu-avx512-check.sh
#   prints the CPU's AVX-512 flags, runs the carried test-cpu-ops --verbose
#   (every weight type against float64 and the scalar kernels; it must report
#   the avx512 kernels in use) with the default selection of 512-bit kernels
#   and with BALEEN_CPU_AVX512=all (every one of them), then
#   `test-cpu-ops --bench 1` and `--bench 4` with both selections and, for
#   comparison, with BALEEN_CPU_SIMD=avx2.
#   Logs go to $OUT (or ./cpu-avx512-out). Exit status 0 only when the test
#   passed on the avx512 path.
set -u

if [ "${1:-}" = "--prepare" ]; then
  set -e
  if [ -d build-avx512 ]; then
    meson setup --reconfigure build-avx512 -Dcuda=disabled -Dbuildtype=release > /dev/null
  else
    meson setup build-avx512 -Dcuda=disabled -Dbuildtype=release > /dev/null
  fi
  ninja -C build-avx512 tests/test-cpu-ops
  rm -rf build-avx512/carry
  mkdir -p build-avx512/carry/lib
  cp build-avx512/tests/test-cpu-ops build-avx512/carry/
  # libraries outside the C library itself (the device image may lack them)
  ldd build-avx512/tests/test-cpu-ops | awk '/=> \// { print $3 }' \
    | grep -vE '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' \
    | while read -r lib; do cp -L "$lib" build-avx512/carry/lib/; done
  # the binary must contain AVX-512 code (vecdot-avx512.c was built)
  if ! objdump -d build-avx512/carry/test-cpu-ops | grep -q zmm; then
    echo "test-cpu-ops has no AVX-512 code: was engine/cpu/vecdot-avx512.c built?" >&2
    exit 1
  fi
  du -sh build-avx512/carry
  ls build-avx512/carry/lib
  exit 0
fi

OUT=${OUT:-$PWD/cpu-avx512-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/cpu-avx512-check.log") 2>&1

EXE=build-avx512/carry/test-cpu-ops
if [ ! -x "$EXE" ]; then
  echo "no carried binary $EXE: run tools/cpu-avx512-check.sh --prepare first"; exit 1
fi
export LD_LIBRARY_PATH=$PWD/build-avx512/carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export G_DEBUG=gc-friendly,fatal-warnings
unset BALEEN_CPU_SIMD

echo "== cpu"
grep -m1 'model name' /proc/cpuinfo
echo "cores: $(nproc)"
echo "avx512 flags:"
grep -o -w 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo

rc=0
# twice: the default selection (AVX-512 where it measured faster, AVX2 for
# the rest) and BALEEN_CPU_AVX512=all (every 512-bit kernel, so that all of
# them are checked against float64 and the scalar path)
for sel in default all; do
  log="$OUT/test-cpu-ops-$sel.tap"
  echo "== test-cpu-ops --verbose (BALEEN_CPU_AVX512=$sel)"
  BALEEN_CPU_AVX512=$sel timeout 300 "$EXE" --verbose > "$log" 2>&1 || rc=1
  grep -E '^(ok|not ok)|SIMD kernels|ERROR|GLib|Bail' "$log" | head -40
  grep -E 'max error' "$log" | grep -v '^# scalar' > "$OUT/errors-$sel.txt" || true
  if ! grep -q 'SIMD kernels in use: avx512' "$log"; then
    echo "FAIL: the test did not run on the avx512 kernels"; rc=1
  fi
done
echo "test-cpu-ops: $([ $rc = 0 ] && echo PASS || echo FAIL)"

for t in 1 4; do
  for sel in default all; do
    echo "== test-cpu-ops --bench $t (avx512, BALEEN_CPU_AVX512=$sel)"
    BALEEN_CPU_AVX512=$sel timeout 240 "$EXE" --bench "$t" 2>&1 | tee "$OUT/bench-avx512-$sel-$t.txt"
  done
  echo "== test-cpu-ops --bench $t (BALEEN_CPU_SIMD=avx2, for comparison)"
  BALEEN_CPU_SIMD=avx2 timeout 240 "$EXE" --bench "$t" 2>&1 | tee "$OUT/bench-avx2-$t.txt"
done
echo "== result: test-cpu-ops $([ $rc = 0 ] && echo PASS || echo FAIL) on the avx512 path"
exit $rc
