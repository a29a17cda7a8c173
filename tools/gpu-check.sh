#!/bin/bash
# tools/gpu-check.sh — check and time the CUDA backend on a GPU machine.
#
# On the GPU machine (from the repository root):
#     tools/gpu-check.sh
#   builds build-gpu with -Dcuda=enabled -Dcuda-archs=90a (H100/H200), runs
#   test-cuda-ops (every kernel against the CPU backend and float64),
#   compute-sanitizer memcheck on two of its cases, then `test-cuda-ops
#   --bench`; everything is logged under $OUT (or ./gpu-out). The last lines
#   printed are the bench table.
#
#   When that machine cannot build Baleen (no GLib / json-glib / PCRE2
#   development files, no meson), it runs a binary prepared here instead:
#     tools/gpu-check.sh --prepare
#   builds build-cuda (sm_90a) on this machine and copies test-cuda-ops and
#   the non-system shared libraries it needs into build-cuda/gpu-carry/, which
#   the device call must carry (carry: ["build-cuda/gpu-carry"]). The CUDA
#   runtime is linked statically, so only the driver is needed there.
set -u

if [ "${1:-}" = "--prepare" ]; then
  set -e
  [ -d build-cuda ] || meson setup build-cuda -Dcuda=enabled -Dcuda-archs=90a
  bins="tests/test-cuda-ops tests/test-cuda-model app/cli/baleen-cli app/server/baleen-server"
  for t in test-cuda-mla test-cuda-sample test-cuda-batch; do
    [ -f tests/$t.c ] && bins="$bins tests/$t"
  done
  [ -f tools/synth-gguf.c ] && bins="$bins tools/synth-gguf"
  ninja -C build-cuda $bins
  rm -rf build-cuda/gpu-carry
  mkdir -p build-cuda/gpu-carry/lib
  for b in $bins; do
    cp "build-cuda/$b" build-cuda/gpu-carry/
    # libraries outside the C library itself (the device image may lack them)
    ldd "build-cuda/$b" | awk '/=> \// { print $3 }' \
      | grep -vE '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' \
      | grep -v libcublas \
      | while read -r lib; do cp -L "$lib" build-cuda/gpu-carry/lib/; done
  done
  du -sh build-cuda/gpu-carry
  ls build-cuda/gpu-carry/lib
  exit 0
fi

OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
export PATH=/usr/local/cuda/bin:$PATH

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
nvcc --version | tail -2

EXE=""
echo "== build (sm_90a)"
if command -v meson >/dev/null && command -v ninja >/dev/null \
   && pkg-config --exists glib-2.0 json-glib-1.0 libpcre2-8 zlib 2>/dev/null; then
  if (meson setup build-gpu -Dcuda=enabled -Dcuda-archs=90a -Dgui=disabled \
        || meson setup --reconfigure build-gpu -Dcuda=enabled -Dcuda-archs=90a -Dgui=disabled) \
       > "$OUT/meson-setup.log" 2>&1 \
     && ninja -C build-gpu tests/test-cuda-ops > "$OUT/ninja.log" 2>&1; then
    EXE=build-gpu/tests/test-cuda-ops
  else
    echo "build failed here; see meson-setup.log / ninja.log"; tail -20 "$OUT/ninja.log" 2>/dev/null
  fi
else
  echo "no meson/ninja/GLib development files on this machine"
fi
if [ -z "$EXE" ] && [ -x build-cuda/gpu-carry/test-cuda-ops ]; then
  echo "using the carried binary build-cuda/gpu-carry/test-cuda-ops"
  export LD_LIBRARY_PATH=$PWD/build-cuda/gpu-carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  EXE=build-cuda/gpu-carry/test-cuda-ops
fi
if [ -z "$EXE" ]; then
  echo "nothing to run: build failed and no carried binary"; exit 1
fi
echo "running $EXE"

export G_DEBUG=gc-friendly,fatal-warnings BALEEN_SHARED_DATA=${BALEEN_SHARED_DATA:-}
rc=0
echo "== test-cuda-ops"
timeout 300 "$EXE" --verbose > "$OUT/test-cuda-ops.tap" 2>&1 || rc=1
grep -E '^(ok|not ok)|ERROR|GLib' "$OUT/test-cuda-ops.tap" | head -40
grep -E 'rel err' "$OUT/test-cuda-ops.tap" > "$OUT/errors.txt" || true

echo "== compute-sanitizer memcheck (q4_K, q6_K)"
if command -v compute-sanitizer >/dev/null; then
  for t in q4_K q6_K; do
    timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 \
      "$EXE" -p /Baleen/CudaOps/matvec/$t > "$OUT/memcheck-$t.log" 2>&1
    echo "memcheck $t: exit $?  ($(grep -c 'Invalid' "$OUT/memcheck-$t.log") invalid accesses)"
  done
else
  echo "compute-sanitizer not found"
fi

echo "== bench"
timeout 400 "$EXE" --bench > "$OUT/bench.txt" 2>&1 || rc=1
cat "$OUT/bench.txt"
echo "== tests: $( [ $rc = 0 ] && echo PASS || echo FAIL ) (logs in $OUT)"
exit $rc
