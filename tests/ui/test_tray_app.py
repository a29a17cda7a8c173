#!/usr/bin/env python3
"""The real `baleen` app driven from its tray menu, as a tray host would.

Run inside `dbus-run-session` and `xvfb-run` (meson does). Plays the
StatusNotifierWatcher with Gio, starts the app on a models folder holding two
tiny GGUF models from tests/golden, and checks that choosing a model in the
menu loads it (the radio and the tooltip follow), that choosing the other one
switches, that "Unload Model" unloads, that the item registers again after
the watcher restarts, and that "Quit" ends the app. TAP; exit 77 without
PyGObject.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import gi
    gi.require_version("Gio", "2.0")
    from gi.repository import Gio, GLib
except (ImportError, ValueError):
    print("1..0 # SKIP PyGObject (python3-gi) is not installed")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_tray import Watcher, wait_for  # noqa: E402

n = 0
failed = 0


def ok(cond, what):
    global n, failed
    n += 1
    failed += 0 if cond else 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n, what), flush=True)


def main():
    app_path, golden = sys.argv[1], sys.argv[2]
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    home = tempfile.mkdtemp(prefix="baleen-tray-app-")
    for arch, name in (("llama", "model-q8_0.gguf"), ("qwen2", "model.gguf")):
        os.makedirs(os.path.join(home, "baleen", "models", arch))
        shutil.copy(os.path.join(golden, "models", arch, name),
                    os.path.join(home, "baleen", "models", arch, name))
    env = dict(os.environ, XDG_DATA_HOME=home, BALEEN_NO_AUTOLOAD="1", GTK_A11Y="none",
               NO_AT_BRIDGE="1", LANGUAGE="C", GSETTINGS_BACKEND="memory")
    watcher = Watcher(bus)
    watcher.start()
    proc = subprocess.Popen([app_path], env=env)
    try:
        ok(wait_for(lambda: len(watcher.items) == 1, 30), "the app registered its tray item")
        name = watcher.items[0][1] if watcher.items else ""

        def call(path, iface, method, sig, args):
            return bus.call_sync(name, path, iface, method, GLib.Variant(sig, args), None, 0,
                                 10000, None).unpack()

        def layout():
            return call("/MenuBar", "com.canonical.dbusmenu", "GetLayout", "(iias)",
                        (0, -1, []))[1][2]

        def tooltip():
            return call("/StatusNotifierItem", "org.freedesktop.DBus.Properties", "Get", "(ss)",
                        ("org.kde.StatusNotifierItem", "ToolTip"))[0][3]

        def click(item_id):
            call("/MenuBar", "com.canonical.dbusmenu", "Event", "(isvu)",
                 (item_id, "clicked", GLib.Variant("s", ""), 0))

        models = [c for c in layout() if c[1].get("toggle-type") == "radio"]
        ok(len(models) == 2, "the menu lists both installed models")
        ok(all(c[1].get("toggle-state") == 0 for c in models), "none is loaded yet")
        ok("No model loaded" in tooltip(), "tooltip says no model is loaded")

        def radios():
            return [c[1].get("toggle-state") for c in layout()
                    if c[1].get("toggle-type") == "radio"]

        second, first = models[1], models[0]
        click(second[0])
        ok(wait_for(lambda: radios() == [0, 1], 60), "choosing the second model loads it")
        ok(second[1]["label"] in tooltip(), "tooltip names it: %r" % tooltip())
        click(first[0])
        ok(wait_for(lambda: radios() == [1, 0], 60), "choosing the first model switches to it")
        ok(first[1]["label"] in tooltip(), "tooltip follows: %r" % tooltip())

        unload = [c for c in layout() if c[1].get("label") == "Unload Model"]
        ok(len(unload) == 1, "the menu offers Unload Model while a model is loaded")
        if unload:
            click(unload[0][0])
        ok(wait_for(lambda: radios() == [0, 0], 30), "Unload Model unloads it")

        watcher.stop()
        watcher2 = Watcher(bus)
        watcher2.start()
        ok(wait_for(lambda: len(watcher2.items) == 1, 10), "item registers with a new watcher")

        quit_item = [c for c in layout() if c[1].get("label") == "Quit"]
        if quit_item:
            click(quit_item[0][0])
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            rc = None
        ok(rc == 0, "Quit in the menu ends the app (exit status %r)" % rc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
