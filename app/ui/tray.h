/* tray.h — the tray icon: StatusNotifierItem + com.canonical.dbusmenu over GDBus.
 *
 * GTK 4 has no tray API, so Baleen exports the two D-Bus interfaces a tray
 * host (KDE Plasma, GNOME's AppIndicator extension, waybar, …) reads:
 *   /StatusNotifierItem  org.kde.StatusNotifierItem  icon, title, tooltip
 *   /MenuBar             com.canonical.dbusmenu      the menu
 * and registers the item with org.kde.StatusNotifierWatcher. The watcher is
 * followed with a name-owner watch: when it (re)appears the item registers
 * again, so restarting the tray host keeps the icon. Without a watcher
 * nothing fails; bln_tray_is_registered() stays FALSE and the app keeps its
 * window as the only way in.
 *
 * This file uses GIO only (no GTK), so it can be tested on a private bus.
 * Menu choices come back as signals; the tray never acts on its own:
 *   "model-activated" (const char *id)  a model entry of the radio list
 *   "load-toggled"                      the load / unload entry
 *   "server-toggled"                    the server on / off entry
 *   "copy-address"                      the "copy API address" entry
 *   "open-window"                       the "open" entry, or a left click
 *   "quit"                              the quit entry
 *   "registered-changed" (gboolean)     the watcher accepted or lost the item
 */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

#define BLN_TYPE_TRAY (bln_tray_get_type ())
G_DECLARE_FINAL_TYPE (BlnTray, bln_tray, BLN, TRAY, GObject)

/* bln_tray_new:
 * @connection: the session bus (a new reference is taken).
 * @icon_name: the themed icon to show (e.g. "org.baleen.Baleen-symbolic").
 * Exports both objects, takes a unique well-known name
 * (org.kde.StatusNotifierItem-PID-N) and starts watching for the watcher.
 * Returns a new object, or NULL with @error set when the objects cannot be
 * exported (another BlnTray on the same connection, for instance).
 */
BlnTray *bln_tray_new (GDBusConnection *connection, const char *icon_name, GError **error);

/* bln_tray_set_models:
 * Replaces the radio list of models: @ids and @labels are NULL-terminated
 * arrays of the same length (copied); @active is the id shown as selected
 * (NULL: none). Emits LayoutUpdated when anything changed.
 */
void bln_tray_set_models (BlnTray *self, const char *const *ids, const char *const *labels,
                          const char *active);

/* bln_tray_set_state:
 * Updates what the tooltip and menu say: @model_label (the loaded model's
 * name, NULL when none), @busy (a load is under way), @server_running and
 * @address (the API base URL, NULL when the server is off). Emits the
 * NewToolTip / NewStatus / ItemsPropertiesUpdated signals as needed.
 */
void bln_tray_set_state (BlnTray *self, const char *model_label, gboolean busy,
                         gboolean server_running, const char *address);

/* bln_tray_is_registered: whether the watcher accepted the item. */
gboolean bln_tray_is_registered (BlnTray *self);

/* bln_tray_bus_name: the well-known name the item owns (owned by @self). */
const char *bln_tray_bus_name (BlnTray *self);

G_END_DECLS
