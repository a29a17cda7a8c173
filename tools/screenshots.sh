#!/usr/bin/env bash
# Takes a screenshot of every page of the desktop app into docs/screenshots/
# (models.png, server.png, chat.png, caches.png, safety.png, performance.png).
# It runs the UI test under Xvfb on a private session bus, so the pictures
# show a tiny model loaded, the server started and a streamed reply.
# Usage: tools/screenshots.sh [BUILD_DIR]   (default: build-screenshots)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-screenshots}
[ -d "$BUILD" ] || meson setup "$BUILD" -Dgui=enabled -Dcuda=disabled >/dev/null
ninja -C "$BUILD" tests/ui/test-ui >/dev/null
export BALEEN_GOLDEN_DIR="$PWD/tests/golden" BALEEN_SCREENSHOT_DIR="$PWD/docs/screenshots"
export LANGUAGE=${SHOT_LANGUAGE:-C} GTK_A11Y=none NO_AT_BRIDGE=1
dbus-run-session -- xvfb-run -a -s '-screen 0 1280x1024x24' "$BUILD/tests/ui/test-ui" >/dev/null
ls -1 docs/screenshots/*.png
