#!/usr/bin/env bash
# Sets up what is missing, builds Baleen and chats with the default model
# (SmolLM2-135M-Instruct) in the terminal. Extra arguments go to
# `baleen-cli run`, e.g.  tools/run.sh -p "Write a haiku" -n 64
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-deps.sh
MODEL=${BALEEN_MODEL:-$(tools/default-model.sh)}
if [ -d build ]; then meson setup --reconfigure build -Dbuildtype=release >/dev/null
else meson setup build -Dbuildtype=release >/dev/null; fi
meson compile -C build >/dev/null
# chat unless the arguments ask for a plain completion
case " $* " in
  *" -p "*|*" --prompt "*|*" --prompt="*|*" --chat "*) ;;
  *) set -- --chat "$@" ;;
esac
exec build/app/cli/baleen-cli run -m "$MODEL" "$@"
