#!/usr/bin/env python3
"""The tray's D-Bus side against a StatusNotifierWatcher written here with Gio.

Run inside `dbus-run-session` (meson does): starts tray-helper (a BlnTray
with two models), plays the watcher, and checks registration, the dbusmenu
layout, that a "clicked" event on a model entry switches the model, and that
the item registers again when the watcher restarts. TAP output; exit 77 when
PyGObject or the session bus is missing.
"""
import os
import queue
import subprocess
import sys
import threading
import time

try:
    import gi
    gi.require_version("Gio", "2.0")
    from gi.repository import Gio, GLib
except (ImportError, ValueError):
    print("1..0 # SKIP PyGObject (python3-gi) is not installed")
    sys.exit(77)

WATCHER_XML = """
<node><interface name='org.kde.StatusNotifierWatcher'>
 <method name='RegisterStatusNotifierItem'><arg type='s' direction='in'/></method>
 <method name='RegisterStatusNotifierHost'><arg type='s' direction='in'/></method>
 <property name='IsStatusNotifierHostRegistered' type='b' access='read'/>
 <property name='ProtocolVersion' type='i' access='read'/>
 <property name='RegisteredStatusNotifierItems' type='as' access='read'/>
</interface></node>"""

n_test = 0
failed = 0


def ok(cond, what):
    global n_test, failed
    n_test += 1
    if not cond:
        failed += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n_test, what), flush=True)


class Watcher:
    """org.kde.StatusNotifierWatcher on the session bus."""

    def __init__(self, bus):
        self.bus = bus
        self.items = []
        self.reg_id = 0
        self.own_id = 0
        self.node = Gio.DBusNodeInfo.new_for_xml(WATCHER_XML)

    def _call(self, conn, sender, path, iface, method, params, inv):
        if method == "RegisterStatusNotifierItem":
            self.items.append((sender, params.unpack()[0]))
        inv.return_value(None)

    def _prop(self, conn, sender, path, iface, prop):
        if prop == "IsStatusNotifierHostRegistered":
            return GLib.Variant("b", True)
        if prop == "ProtocolVersion":
            return GLib.Variant("i", 0)
        return GLib.Variant("as", [i[1] for i in self.items])

    def start(self):
        self.reg_id = self.bus.register_object(
            "/StatusNotifierWatcher", self.node.interfaces[0], self._call, self._prop, None)
        self.own_id = Gio.bus_own_name_on_connection(
            self.bus, "org.kde.StatusNotifierWatcher", Gio.BusNameOwnerFlags.NONE, None, None)

    def stop(self):
        Gio.bus_unown_name(self.own_id)
        self.bus.unregister_object(self.reg_id)


def pump(seconds=0.05):
    ctx = GLib.MainContext.default()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.iteration(False)
        time.sleep(0.005)


def wait_for(pred, timeout=5.0):
    """Turns the default main context until pred() is true or time runs out."""
    ctx = GLib.MainContext.default()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        while ctx.iteration(False):
            pass
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    return pred()


def main():
    helper = sys.argv[1]
    try:
        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    except GLib.Error as e:
        print("1..0 # SKIP no session bus (%s)" % e.message)
        return 77

    lines = queue.Queue()
    proc = subprocess.Popen([helper, "alpha-q4_0=Alpha 1B", "beta-q8_0=Beta 3B"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    threading.Thread(target=lambda: [lines.put(l.strip()) for l in proc.stdout],
                     daemon=True).start()
    seen = []

    def line(prefix, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for l in seen:
                if l.startswith(prefix):
                    seen.remove(l)
                    return l
            try:
                seen.append(lines.get(timeout=0.02))
            except queue.Empty:
                pump(0.01)
        return None

    ready = line("ready ")
    ok(ready is not None, "helper exported the item")
    bus_name = ready.split()[1] if ready else ""

    # Without a watcher nothing registers and nothing fails.
    ok(line("registered", 0.3) is None, "no registration while there is no watcher")

    updates = []
    bus.signal_subscribe(None, "com.canonical.dbusmenu", "LayoutUpdated", "/MenuBar", None,
                         Gio.DBusSignalFlags.NONE,
                         lambda *a: updates.append(a[5].unpack()[0]))

    watcher = Watcher(bus)
    watcher.start()
    ok(wait_for(lambda: len(watcher.items) == 1), "item called RegisterStatusNotifierItem")
    ok(watcher.items and watcher.items[0][1] == bus_name,
       "registered under its well-known name %s" % bus_name)
    ok(line("registered 1") is not None, "item knows it is registered")

    def get(iface, path, prop):
        r = bus.call_sync(bus_name, path, "org.freedesktop.DBus.Properties", "Get",
                          GLib.Variant("(ss)", (iface, prop)), None, 0, 5000, None)
        return r.unpack()[0]

    sni = "org.kde.StatusNotifierItem"
    ok(get(sni, "/StatusNotifierItem", "Menu") == "/MenuBar", "Menu property points at /MenuBar")
    tip = get(sni, "/StatusNotifierItem", "ToolTip")
    ok(tip[2] == "Baleen" and "server off" in tip[3], "tooltip names the state: %r" % (tip[3],))

    def layout():
        r = bus.call_sync(bus_name, "/MenuBar", "com.canonical.dbusmenu", "GetLayout",
                          GLib.Variant("(iias)", (0, -1, [])), None, 0, 5000, None)
        return r.unpack()

    rev0, root = layout()
    children = root[2]
    labels = [c[1].get("label") for c in children]
    ok(labels[:2] == ["Alpha 1B", "Beta 3B"], "models come first in the menu: %r" % labels)
    ok(all(c[1].get("toggle-type") == "radio" for c in children[:2]), "model entries are radios")
    ok([c[1].get("toggle-state") for c in children[:2]] == [0, 0], "no model selected yet")
    ok(children[2][1].get("type") == "separator", "a separator follows the models")
    for want in ("API Server", "Copy API Address", "Open Baleen", "Quit"):
        ok(want in labels, "menu has %r" % want)
    server = [c for c in children if c[1].get("label") == "API Server"][0]
    ok(server[1].get("toggle-type") == "checkmark" and server[1].get("toggle-state") == 0,
       "server entry is an unchecked checkmark")

    beta_id = children[1][0]
    bus.call_sync(bus_name, "/MenuBar", "com.canonical.dbusmenu", "Event",
                  GLib.Variant("(isvu)", (beta_id, "clicked", GLib.Variant("s", ""), 0)),
                  None, 0, 5000, None)
    ok(line("activated beta-q8_0") is not None, "clicking Beta asks to switch to beta-q8_0")
    ok(wait_for(lambda: any(u > rev0 for u in updates)), "LayoutUpdated with a newer revision")
    rev1, root = layout()
    ok(rev1 > rev0, "GetLayout revision grew")
    ok([c[1].get("toggle-state") for c in root[2][:2]] == [0, 1], "the radio moved to Beta")
    tip = get(sni, "/StatusNotifierItem", "ToolTip")
    ok("Beta 3B" in tip[3], "tooltip names the loaded model: %r" % (tip[3],))

    # A "hovered" event and an unknown id change nothing.
    r = bus.call_sync(bus_name, "/MenuBar", "com.canonical.dbusmenu", "EventGroup",
                      GLib.Variant("(a(isvu))", ([(children[0][0], "hovered",
                                                   GLib.Variant("s", ""), 0),
                                                  (4242, "clicked", GLib.Variant("s", ""), 0)],)),
                      None, 0, 5000, None)
    ok(r.unpack()[0] == [4242], "EventGroup reports the unknown id")
    ok(line("activated", 0.3) is None, "hover does not switch models")

    sid = server[0]
    bus.call_sync(bus_name, "/MenuBar", "com.canonical.dbusmenu", "Event",
                  GLib.Variant("(isvu)", (sid, "clicked", GLib.Variant("s", ""), 0)),
                  None, 0, 5000, None)
    ok(line("server 1") is not None, "server entry toggles the server")
    r = bus.call_sync(bus_name, "/MenuBar", "com.canonical.dbusmenu", "GetProperty",
                      GLib.Variant("(is)", (sid, "toggle-state")), None, 0, 5000, None)
    ok(r.unpack()[0] == 1, "server entry is now checked")

    # The watcher goes away and comes back: the item registers again.
    watcher.stop()
    ok(line("registered 0") is not None, "item notices the watcher left")
    watcher2 = Watcher(bus)
    watcher2.start()
    ok(wait_for(lambda: len(watcher2.items) == 1), "item registers with the new watcher")
    ok(watcher2.items and watcher2.items[0][1] == bus_name, "same name after the restart")
    ok(line("registered 1") is not None, "item knows it is registered again")

    quit_id = [c for c in root[2] if c[1].get("label") == "Quit"][0][0]
    bus.call_sync(bus_name, "/MenuBar", "com.canonical.dbusmenu", "Event",
                  GLib.Variant("(isvu)", (quit_id, "clicked", GLib.Variant("s", ""), 0)),
                  None, 0, 5000, None)
    ok(line("quit") is not None, "Quit entry asks the app to quit")
    try:
        rc = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = -1
    ok(rc == 0, "helper exited cleanly")
    print("1..%d" % n_test)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
