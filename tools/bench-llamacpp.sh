#!/usr/bin/env bash
# Reference speed numbers from llama.cpp for the comparison with Baleen.
#
# Fetches the llama-cpp-python source distribution with pip (it vendors a
# pinned llama.cpp), builds only its llama-bench tool (Release, CPU only,
# native ISA) outside the repository, and runs llama-bench on a GGUF.
# Nothing from llama.cpp is stored in this repository.
#
# Usage: tools/bench-llamacpp.sh [THREADS] [OUTPUT.json]
#   THREADS      thread count(s) for llama-bench, e.g. 2 or 1,2 (default 2)
#   OUTPUT.json  where llama-bench's raw JSON goes (default: stdout)
# Environment:
#   LLAMA_REF_DIR     work folder for the sdist and build (default /work/llama-ref)
#   LLAMA_CPP_PY_VER  llama-cpp-python version (default 0.3.36)
#   BALEEN_MODEL      GGUF to bench (default: tools/default-model.sh)
#   JOBS              parallel compile jobs (default 2)
#   BENCH_ARGS        llama-bench arguments (default "-p 128 -n 64 -r 3")
#
# The machine should be otherwise idle while it runs: llama-bench reports the
# spread (stddev_ts) of its repetitions, check it.
#
# Idempotent: the download, the unpack and the build are each skipped when
# their result is already there.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
threads=${1:-2}
out=${2:-}
ver=${LLAMA_CPP_PY_VER:-0.3.36}
ref=${LLAMA_REF_DIR:-/work/llama-ref}
jobs=${JOBS:-2}
bench_args=${BENCH_ARGS:-"-p 128 -n 64 -r 3"}

src="$ref/llama_cpp_python-$ver/vendor/llama.cpp"
bld="$ref/build-$ver"
bin="$bld/bin/llama-bench"

mkdir -p "$ref"
if [ ! -x "$bin" ]; then
  sdist="$ref/llama_cpp_python-$ver.tar.gz"
  if [ ! -f "$sdist" ]; then
    python3 -m pip download --no-binary :all: --no-deps \
      "llama-cpp-python==$ver" -d "$ref" >&2
  fi
  if [ ! -f "$src/CMakeLists.txt" ]; then
    tar -xzf "$sdist" -C "$ref"
  fi
  cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$bld" --config Release --target llama-bench -j "$jobs" >&2
fi

model=${BALEEN_MODEL:-}
if [ -z "$model" ]; then
  model=$("$here/tools/default-model.sh")
fi

# shellcheck disable=SC2086  # bench_args is a word list on purpose
if [ -n "$out" ]; then
  "$bin" -m "$model" -t "$threads" $bench_args -o json > "$out"
else
  "$bin" -m "$model" -t "$threads" $bench_args -o json
fi
