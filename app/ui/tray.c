/* tray.c — StatusNotifierItem and dbusmenu exported with GDBus (see tray.h). */
#include "tray.h"

#include <string.h>
#include <unistd.h>
#include <glib/gi18n-lib.h>

#define ITEM_PATH "/StatusNotifierItem"
#define MENU_PATH "/MenuBar"
#define WATCHER_NAME "org.kde.StatusNotifierWatcher"
#define WATCHER_PATH "/StatusNotifierWatcher"

/* Fixed menu ids; the models take MODEL_ID_BASE + index. Ids only need to be
 * stable within one layout revision. */
enum {
  ID_ROOT = 0,
  ID_LOAD = 1,
  ID_SERVER = 2,
  ID_COPY = 3,
  ID_OPEN = 4,
  ID_QUIT = 5,
  ID_SEP1 = 6,
  ID_SEP2 = 7,
  ID_SEP3 = 8,
  ID_NO_MODELS = 9,
  MODEL_ID_BASE = 100,
};

struct _BlnTray
{
  GObject parent_instance;

  GDBusConnection *connection;
  char *icon_name;
  char *bus_name;
  guint item_reg_id;
  guint menu_reg_id;
  guint own_id;
  guint watch_id;
  gboolean name_acquired;
  gboolean watcher_present;
  gboolean registered;
  GCancellable *cancellable;

  GPtrArray *model_ids;     /* char * */
  GPtrArray *model_labels;  /* char * */
  char *active;
  char *model_label;        /* the loaded model, NULL when none */
  gboolean busy;
  gboolean server_running;
  char *address;
  guint revision;
};

G_DEFINE_FINAL_TYPE (BlnTray, bln_tray, G_TYPE_OBJECT)

enum {
  SIG_MODEL_ACTIVATED,
  SIG_LOAD_TOGGLED,
  SIG_SERVER_TOGGLED,
  SIG_COPY_ADDRESS,
  SIG_OPEN_WINDOW,
  SIG_QUIT,
  SIG_REGISTERED_CHANGED,
  N_SIGNALS
};
static guint signals[N_SIGNALS];

static const char item_xml[] =
  "<node>"
  " <interface name='org.kde.StatusNotifierItem'>"
  "  <property name='Category' type='s' access='read'/>"
  "  <property name='Id' type='s' access='read'/>"
  "  <property name='Title' type='s' access='read'/>"
  "  <property name='Status' type='s' access='read'/>"
  "  <property name='WindowId' type='i' access='read'/>"
  "  <property name='IconName' type='s' access='read'/>"
  "  <property name='IconThemePath' type='s' access='read'/>"
  "  <property name='IconPixmap' type='a(iiay)' access='read'/>"
  "  <property name='OverlayIconName' type='s' access='read'/>"
  "  <property name='AttentionIconName' type='s' access='read'/>"
  "  <property name='ToolTip' type='(sa(iiay)ss)' access='read'/>"
  "  <property name='ItemIsMenu' type='b' access='read'/>"
  "  <property name='Menu' type='o' access='read'/>"
  "  <method name='ContextMenu'><arg name='x' type='i' direction='in'/>"
  "   <arg name='y' type='i' direction='in'/></method>"
  "  <method name='Activate'><arg name='x' type='i' direction='in'/>"
  "   <arg name='y' type='i' direction='in'/></method>"
  "  <method name='SecondaryActivate'><arg name='x' type='i' direction='in'/>"
  "   <arg name='y' type='i' direction='in'/></method>"
  "  <method name='Scroll'><arg name='delta' type='i' direction='in'/>"
  "   <arg name='orientation' type='s' direction='in'/></method>"
  "  <signal name='NewTitle'/>"
  "  <signal name='NewIcon'/>"
  "  <signal name='NewAttentionIcon'/>"
  "  <signal name='NewOverlayIcon'/>"
  "  <signal name='NewToolTip'/>"
  "  <signal name='NewStatus'><arg name='status' type='s'/></signal>"
  " </interface>"
  "</node>";

static const char menu_xml[] =
  "<node>"
  " <interface name='com.canonical.dbusmenu'>"
  "  <property name='Version' type='u' access='read'/>"
  "  <property name='TextDirection' type='s' access='read'/>"
  "  <property name='Status' type='s' access='read'/>"
  "  <property name='IconThemePath' type='as' access='read'/>"
  "  <method name='GetLayout'>"
  "   <arg name='parentId' type='i' direction='in'/>"
  "   <arg name='recursionDepth' type='i' direction='in'/>"
  "   <arg name='propertyNames' type='as' direction='in'/>"
  "   <arg name='revision' type='u' direction='out'/>"
  "   <arg name='layout' type='(ia{sv}av)' direction='out'/>"
  "  </method>"
  "  <method name='GetGroupProperties'>"
  "   <arg name='ids' type='ai' direction='in'/>"
  "   <arg name='propertyNames' type='as' direction='in'/>"
  "   <arg name='properties' type='a(ia{sv})' direction='out'/>"
  "  </method>"
  "  <method name='GetProperty'>"
  "   <arg name='id' type='i' direction='in'/>"
  "   <arg name='name' type='s' direction='in'/>"
  "   <arg name='value' type='v' direction='out'/>"
  "  </method>"
  "  <method name='Event'>"
  "   <arg name='id' type='i' direction='in'/>"
  "   <arg name='eventId' type='s' direction='in'/>"
  "   <arg name='data' type='v' direction='in'/>"
  "   <arg name='timestamp' type='u' direction='in'/>"
  "  </method>"
  "  <method name='EventGroup'>"
  "   <arg name='events' type='a(isvu)' direction='in'/>"
  "   <arg name='idErrors' type='ai' direction='out'/>"
  "  </method>"
  "  <method name='AboutToShow'>"
  "   <arg name='id' type='i' direction='in'/>"
  "   <arg name='needUpdate' type='b' direction='out'/>"
  "  </method>"
  "  <method name='AboutToShowGroup'>"
  "   <arg name='ids' type='ai' direction='in'/>"
  "   <arg name='updatesNeeded' type='ai' direction='out'/>"
  "   <arg name='idErrors' type='ai' direction='out'/>"
  "  </method>"
  "  <signal name='ItemsPropertiesUpdated'>"
  "   <arg name='updatedProps' type='a(ia{sv})'/>"
  "   <arg name='removedProps' type='a(ias)'/>"
  "  </signal>"
  "  <signal name='LayoutUpdated'>"
  "   <arg name='revision' type='u'/><arg name='parent' type='i'/>"
  "  </signal>"
  "  <signal name='ItemActivationRequested'>"
  "   <arg name='id' type='i'/><arg name='timestamp' type='u'/>"
  "  </signal>"
  " </interface>"
  "</node>";

/* ---- the menu as data -------------------------------------------------- */

static gboolean
id_exists (BlnTray *self, int id)
{
  if (id >= MODEL_ID_BASE)
    return (guint) (id - MODEL_ID_BASE) < self->model_ids->len;
  if (id == ID_NO_MODELS)
    return self->model_ids->len == 0;
  return id >= ID_ROOT && id <= ID_SEP3;
}

static gboolean
wanted (const char *const *names, const char *name)
{
  return !names || !names[0] || g_strv_contains (names, name);
}

/* The properties of item @id, restricted to @names (NULL or empty: all). */
static GVariant *
item_properties (BlnTray *self, int id, const char *const *names)
{
  GVariantBuilder b;
  const char *label = NULL;
  const char *toggle_type = NULL;
  int toggle_state = -1;
  gboolean enabled = TRUE;
  gboolean separator = FALSE;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("a{sv}"));
  switch (id)
    {
    case ID_ROOT:
      if (wanted (names, "children-display"))
        g_variant_builder_add (&b, "{sv}", "children-display", g_variant_new_string ("submenu"));
      return g_variant_builder_end (&b);
    case ID_LOAD:
      label = self->model_label ? _("Unload Model") : _("Load Default Model");
      enabled = !self->busy && (self->model_label || self->model_ids->len > 0);
      break;
    case ID_SERVER:
      label = _("API Server");
      toggle_type = "checkmark";
      toggle_state = self->server_running ? 1 : 0;
      break;
    case ID_COPY:
      label = _("Copy API Address");
      enabled = self->address != NULL;
      break;
    case ID_OPEN:
      label = _("Open Baleen");
      break;
    case ID_QUIT:
      label = _("Quit");
      break;
    case ID_NO_MODELS:
      label = _("No models installed");
      enabled = FALSE;
      break;
    case ID_SEP1:
    case ID_SEP2:
    case ID_SEP3:
      separator = TRUE;
      break;
    default:
      {
        guint i = id - MODEL_ID_BASE;
        label = g_ptr_array_index (self->model_labels, i);
        toggle_type = "radio";
        toggle_state = g_strcmp0 (self->active, g_ptr_array_index (self->model_ids, i)) == 0;
        enabled = !self->busy;
      }
    }
  if (separator && wanted (names, "type"))
    g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string ("separator"));
  if (label && wanted (names, "label"))
    g_variant_builder_add (&b, "{sv}", "label", g_variant_new_string (label));
  if (!enabled && wanted (names, "enabled"))
    g_variant_builder_add (&b, "{sv}", "enabled", g_variant_new_boolean (FALSE));
  if (toggle_type && wanted (names, "toggle-type"))
    g_variant_builder_add (&b, "{sv}", "toggle-type", g_variant_new_string (toggle_type));
  if (toggle_state >= 0 && wanted (names, "toggle-state"))
    g_variant_builder_add (&b, "{sv}", "toggle-state", g_variant_new_int32 (toggle_state));
  return g_variant_builder_end (&b);
}

/* The root's children, in menu order. */
static GArray *
root_children (BlnTray *self)
{
  GArray *ids = g_array_new (FALSE, FALSE, sizeof (int));
  static const int tail[] = { ID_SEP1, ID_LOAD, ID_SERVER, ID_COPY, ID_SEP2, ID_OPEN, ID_QUIT };

  if (self->model_ids->len == 0)
    {
      int none = ID_NO_MODELS;
      g_array_append_val (ids, none);
    }
  for (guint i = 0; i < self->model_ids->len; i++)
    {
      int id = MODEL_ID_BASE + (int) i;
      g_array_append_val (ids, id);
    }
  g_array_append_vals (ids, tail, G_N_ELEMENTS (tail));
  return ids;
}

static GVariant *
layout (BlnTray *self, int id, int depth, const char *const *names)
{
  GVariantBuilder children;

  g_variant_builder_init (&children, G_VARIANT_TYPE ("av"));
  if (id == ID_ROOT && depth != 0)
    {
      g_autoptr (GArray) ids = root_children (self);
      for (guint i = 0; i < ids->len; i++)
        g_variant_builder_add (&children, "v",
                               layout (self, g_array_index (ids, int, i), depth - 1, names));
    }
  return g_variant_new ("(i@a{sv}av)", id, item_properties (self, id, names), &children);
}

static void
emit_menu_signal (BlnTray *self, const char *name, GVariant *params)
{
  g_dbus_connection_emit_signal (self->connection, NULL, MENU_PATH, "com.canonical.dbusmenu",
                                 name, params, NULL);
}

static void
layout_changed (BlnTray *self)
{
  self->revision++;
  emit_menu_signal (self, "LayoutUpdated", g_variant_new ("(ui)", self->revision, ID_ROOT));
}

static void
emit_item_signal (BlnTray *self, const char *name, GVariant *params)
{
  g_dbus_connection_emit_signal (self->connection, NULL, ITEM_PATH, "org.kde.StatusNotifierItem",
                                 name, params, NULL);
}

/* ---- dbusmenu methods -------------------------------------------------- */

static void
handle_event (BlnTray *self, int id, const char *event_id)
{
  if (g_strcmp0 (event_id, "clicked") != 0 || !id_exists (self, id))
    return;
  switch (id)
    {
    case ID_LOAD:
      g_signal_emit (self, signals[SIG_LOAD_TOGGLED], 0);
      break;
    case ID_SERVER:
      g_signal_emit (self, signals[SIG_SERVER_TOGGLED], 0);
      break;
    case ID_COPY:
      g_signal_emit (self, signals[SIG_COPY_ADDRESS], 0);
      break;
    case ID_OPEN:
      g_signal_emit (self, signals[SIG_OPEN_WINDOW], 0);
      break;
    case ID_QUIT:
      g_signal_emit (self, signals[SIG_QUIT], 0);
      break;
    default:
      if (id >= MODEL_ID_BASE)
        {
          /* Copy: a handler may replace the list. */
          g_autofree char *model = g_strdup (g_ptr_array_index (self->model_ids,
                                                                id - MODEL_ID_BASE));
          g_signal_emit (self, signals[SIG_MODEL_ACTIVATED], 0, model);
        }
    }
}

static void
menu_method (GDBusConnection *connection, const char *sender, const char *path,
             const char *iface, const char *method, GVariant *params,
             GDBusMethodInvocation *invocation, gpointer user_data)
{
  BlnTray *self = user_data;

  if (g_str_equal (method, "GetLayout"))
    {
      int parent, depth;
      g_autofree const char **names = NULL;

      g_variant_get (params, "(ii^a&s)", &parent, &depth, &names);
      if (!id_exists (self, parent))
        {
          g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR,
                                                 G_DBUS_ERROR_INVALID_ARGS, "no menu item %d",
                                                 parent);
          return;
        }
      g_dbus_method_invocation_return_value (
        invocation, g_variant_new ("(u@(ia{sv}av))", self->revision,
                                   layout (self, parent, depth, names)));
    }
  else if (g_str_equal (method, "GetGroupProperties"))
    {
      g_autoptr (GVariantIter) iter = NULL;
      g_autofree const char **names = NULL;
      GVariantBuilder b;
      int id;

      g_variant_get (params, "(ai^a&s)", &iter, &names);
      g_variant_builder_init (&b, G_VARIANT_TYPE ("a(ia{sv})"));
      while (g_variant_iter_next (iter, "i", &id))
        if (id_exists (self, id))
          g_variant_builder_add (&b, "(i@a{sv})", id, item_properties (self, id, names));
      g_dbus_method_invocation_return_value (invocation, g_variant_new ("(a(ia{sv}))", &b));
    }
  else if (g_str_equal (method, "GetProperty"))
    {
      int id;
      const char *name;
      const char *names[2] = { NULL, NULL };
      g_autoptr (GVariant) props = NULL;
      g_autoptr (GVariant) value = NULL;

      g_variant_get (params, "(i&s)", &id, &name);
      names[0] = name;
      if (id_exists (self, id))
        {
          props = g_variant_ref_sink (item_properties (self, id, names));
          value = g_variant_lookup_value (props, name, NULL);
        }
      if (!value)
        {
          g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR,
                                                 G_DBUS_ERROR_INVALID_ARGS,
                                                 "item %d has no property %s", id, name);
          return;
        }
      g_dbus_method_invocation_return_value (invocation, g_variant_new ("(v)", value));
    }
  else if (g_str_equal (method, "Event"))
    {
      int id;
      const char *event_id;

      g_variant_get (params, "(i&svu)", &id, &event_id, NULL, NULL);
      /* Answer first: a handler may take a while (it never blocks, but it may
       * replace the layout). */
      g_dbus_method_invocation_return_value (invocation, NULL);
      handle_event (self, id, event_id);
    }
  else if (g_str_equal (method, "EventGroup"))
    {
      g_autoptr (GVariantIter) iter = NULL;
      g_autoptr (GArray) todo_ids = g_array_new (FALSE, FALSE, sizeof (int));
      g_autoptr (GPtrArray) todo_events = g_ptr_array_new_with_free_func (g_free);
      GVariantBuilder errors;
      int id;
      const char *event_id;

      g_variant_get (params, "(a(isvu))", &iter);
      g_variant_builder_init (&errors, G_VARIANT_TYPE ("ai"));
      while (g_variant_iter_next (iter, "(i&svu)", &id, &event_id, NULL, NULL))
        {
          if (!id_exists (self, id))
            g_variant_builder_add (&errors, "i", id);
          else
            {
              g_array_append_val (todo_ids, id);
              g_ptr_array_add (todo_events, g_strdup (event_id));
            }
        }
      g_dbus_method_invocation_return_value (invocation, g_variant_new ("(ai)", &errors));
      for (guint i = 0; i < todo_ids->len; i++)
        handle_event (self, g_array_index (todo_ids, int, i), g_ptr_array_index (todo_events, i));
    }
  else if (g_str_equal (method, "AboutToShow"))
    {
      g_dbus_method_invocation_return_value (invocation, g_variant_new ("(b)", FALSE));
    }
  else if (g_str_equal (method, "AboutToShowGroup"))
    {
      g_dbus_method_invocation_return_value (invocation, g_variant_new ("(@ai@ai)",
                                             g_variant_new_array (G_VARIANT_TYPE_INT32, NULL, 0),
                                             g_variant_new_array (G_VARIANT_TYPE_INT32, NULL, 0)));
    }
  else
    g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD,
                                           "unknown method %s", method);
}

static GVariant *
menu_get_property (GDBusConnection *connection, const char *sender, const char *path,
                   const char *iface, const char *prop, GError **error, gpointer user_data)
{
  if (g_str_equal (prop, "Version"))
    return g_variant_new_uint32 (3);
  if (g_str_equal (prop, "TextDirection"))
    return g_variant_new_string ("ltr");
  if (g_str_equal (prop, "Status"))
    return g_variant_new_string ("normal");
  if (g_str_equal (prop, "IconThemePath"))
    return g_variant_new_strv (NULL, 0);
  g_set_error (error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_PROPERTY, "no property %s", prop);
  return NULL;
}

/* ---- StatusNotifierItem ------------------------------------------------ */

static char *
tooltip_text (BlnTray *self)
{
  const char *model = self->model_label ? self->model_label : _("No model loaded");
  const char *server = self->server_running ? _("server on") : _("server off");

  if (self->busy)
    return g_strdup_printf (_("Loading… — %s"), server);
  return g_strdup_printf ("%s — %s", model, server);
}

static void
item_method (GDBusConnection *connection, const char *sender, const char *path,
             const char *iface, const char *method, GVariant *params,
             GDBusMethodInvocation *invocation, gpointer user_data)
{
  BlnTray *self = user_data;

  if (g_str_equal (method, "Activate"))
    {
      g_dbus_method_invocation_return_value (invocation, NULL);
      g_signal_emit (self, signals[SIG_OPEN_WINDOW], 0);
    }
  else if (g_str_equal (method, "ContextMenu") || g_str_equal (method, "SecondaryActivate") ||
           g_str_equal (method, "Scroll"))
    g_dbus_method_invocation_return_value (invocation, NULL);
  else
    g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD,
                                           "unknown method %s", method);
}

static GVariant *
item_get_property (GDBusConnection *connection, const char *sender, const char *path,
                   const char *iface, const char *prop, GError **error, gpointer user_data)
{
  BlnTray *self = user_data;

  if (g_str_equal (prop, "Category"))
    return g_variant_new_string ("ApplicationStatus");
  if (g_str_equal (prop, "Id"))
    return g_variant_new_string ("baleen");
  if (g_str_equal (prop, "Title"))
    return g_variant_new_string ("Baleen");
  if (g_str_equal (prop, "Status"))
    return g_variant_new_string (self->busy ? "NeedsAttention" : "Active");
  if (g_str_equal (prop, "WindowId"))
    return g_variant_new_int32 (0);
  if (g_str_equal (prop, "IconName") || g_str_equal (prop, "AttentionIconName"))
    return g_variant_new_string (self->icon_name);
  if (g_str_equal (prop, "IconThemePath") || g_str_equal (prop, "OverlayIconName"))
    return g_variant_new_string ("");
  if (g_str_equal (prop, "IconPixmap"))
    return g_variant_new_array (G_VARIANT_TYPE ("(iiay)"), NULL, 0);
  if (g_str_equal (prop, "ToolTip"))
    {
      g_autofree char *text = tooltip_text (self);
      return g_variant_new ("(s@a(iiay)ss)", self->icon_name,
                            g_variant_new_array (G_VARIANT_TYPE ("(iiay)"), NULL, 0),
                            "Baleen", text);
    }
  if (g_str_equal (prop, "ItemIsMenu"))
    return g_variant_new_boolean (FALSE);
  if (g_str_equal (prop, "Menu"))
    return g_variant_new_object_path (MENU_PATH);
  g_set_error (error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_PROPERTY, "no property %s", prop);
  return NULL;
}

/* ---- registration with the watcher ------------------------------------- */

static void
set_registered (BlnTray *self, gboolean registered)
{
  if (self->registered == registered)
    return;
  self->registered = registered;
  g_signal_emit (self, signals[SIG_REGISTERED_CHANGED], 0, registered);
}

static void
register_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BlnTray) self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) ret = NULL;

  ret = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), result, &error);
  if (!ret)
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        g_message ("the tray watcher refused the item: %s", error->message);
      return;
    }
  set_registered (self, TRUE);
}

static void
try_register (BlnTray *self)
{
  if (!self->name_acquired || !self->watcher_present)
    return;
  g_dbus_connection_call (self->connection, WATCHER_NAME, WATCHER_PATH, WATCHER_NAME,
                          "RegisterStatusNotifierItem", g_variant_new ("(s)", self->bus_name),
                          NULL, G_DBUS_CALL_FLAGS_NONE, 5000, self->cancellable, register_done,
                          g_object_ref (self));
}

static void
watcher_appeared (GDBusConnection *connection, const char *name, const char *owner,
                  gpointer user_data)
{
  BlnTray *self = user_data;

  self->watcher_present = TRUE;
  try_register (self);
}

static void
watcher_vanished (GDBusConnection *connection, const char *name, gpointer user_data)
{
  BlnTray *self = user_data;

  self->watcher_present = FALSE;
  set_registered (self, FALSE);
}

static void
name_acquired (GDBusConnection *connection, const char *name, gpointer user_data)
{
  BlnTray *self = user_data;

  self->name_acquired = TRUE;
  try_register (self);
}

static void
name_lost (GDBusConnection *connection, const char *name, gpointer user_data)
{
  BlnTray *self = user_data;

  self->name_acquired = FALSE;
}

/* ---- object ------------------------------------------------------------ */

static void
bln_tray_dispose (GObject *object)
{
  BlnTray *self = BLN_TRAY (object);

  if (self->cancellable)
    g_cancellable_cancel (self->cancellable);
  g_clear_handle_id (&self->watch_id, g_bus_unwatch_name);
  g_clear_handle_id (&self->own_id, g_bus_unown_name);
  if (self->connection)
    {
      if (self->item_reg_id)
        g_dbus_connection_unregister_object (self->connection, self->item_reg_id);
      if (self->menu_reg_id)
        g_dbus_connection_unregister_object (self->connection, self->menu_reg_id);
      self->item_reg_id = self->menu_reg_id = 0;
    }
  g_clear_object (&self->cancellable);
  g_clear_object (&self->connection);
  G_OBJECT_CLASS (bln_tray_parent_class)->dispose (object);
}

static void
bln_tray_finalize (GObject *object)
{
  BlnTray *self = BLN_TRAY (object);

  g_free (self->icon_name);
  g_free (self->bus_name);
  g_ptr_array_unref (self->model_ids);
  g_ptr_array_unref (self->model_labels);
  g_free (self->active);
  g_free (self->model_label);
  g_free (self->address);
  G_OBJECT_CLASS (bln_tray_parent_class)->finalize (object);
}

static void
bln_tray_class_init (BlnTrayClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = bln_tray_dispose;
  object_class->finalize = bln_tray_finalize;

  signals[SIG_MODEL_ACTIVATED] = g_signal_new ("model-activated", G_TYPE_FROM_CLASS (klass),
                                               G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                               G_TYPE_NONE, 1, G_TYPE_STRING);
  signals[SIG_LOAD_TOGGLED] = g_signal_new ("load-toggled", G_TYPE_FROM_CLASS (klass),
                                            G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                            G_TYPE_NONE, 0);
  signals[SIG_SERVER_TOGGLED] = g_signal_new ("server-toggled", G_TYPE_FROM_CLASS (klass),
                                              G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                              G_TYPE_NONE, 0);
  signals[SIG_COPY_ADDRESS] = g_signal_new ("copy-address", G_TYPE_FROM_CLASS (klass),
                                            G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                            G_TYPE_NONE, 0);
  signals[SIG_OPEN_WINDOW] = g_signal_new ("open-window", G_TYPE_FROM_CLASS (klass),
                                           G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                           G_TYPE_NONE, 0);
  signals[SIG_QUIT] = g_signal_new ("quit", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                                    NULL, NULL, NULL, G_TYPE_NONE, 0);
  signals[SIG_REGISTERED_CHANGED] = g_signal_new ("registered-changed",
                                                  G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                                  0, NULL, NULL, NULL, G_TYPE_NONE, 1,
                                                  G_TYPE_BOOLEAN);
}

static void
bln_tray_init (BlnTray *self)
{
  self->model_ids = g_ptr_array_new_with_free_func (g_free);
  self->model_labels = g_ptr_array_new_with_free_func (g_free);
  self->cancellable = g_cancellable_new ();
  self->revision = 1;
}

BlnTray *
bln_tray_new (GDBusConnection *connection, const char *icon_name, GError **error)
{
  static const GDBusInterfaceVTable item_vtable = { item_method, item_get_property, NULL };
  static const GDBusInterfaceVTable menu_vtable = { menu_method, menu_get_property, NULL };
  static guint counter;
  g_autoptr (BlnTray) self = NULL;
  g_autoptr (GDBusNodeInfo) item_info = NULL;
  g_autoptr (GDBusNodeInfo) menu_info = NULL;

  g_return_val_if_fail (G_IS_DBUS_CONNECTION (connection), NULL);
  g_return_val_if_fail (icon_name != NULL, NULL);

  self = g_object_new (BLN_TYPE_TRAY, NULL);
  self->connection = g_object_ref (connection);
  self->icon_name = g_strdup (icon_name);
  self->bus_name = g_strdup_printf ("org.kde.StatusNotifierItem-%d-%u", (int) getpid (),
                                    ++counter);
  item_info = g_dbus_node_info_new_for_xml (item_xml, error);
  menu_info = g_dbus_node_info_new_for_xml (menu_xml, error);
  if (!item_info || !menu_info)
    return NULL;
  self->item_reg_id = g_dbus_connection_register_object (connection, ITEM_PATH,
                                                         item_info->interfaces[0], &item_vtable,
                                                         self, NULL, error);
  if (!self->item_reg_id)
    return NULL;
  self->menu_reg_id = g_dbus_connection_register_object (connection, MENU_PATH,
                                                         menu_info->interfaces[0], &menu_vtable,
                                                         self, NULL, error);
  if (!self->menu_reg_id)
    return NULL;
  self->own_id = g_bus_own_name_on_connection (connection, self->bus_name,
                                               G_BUS_NAME_OWNER_FLAGS_DO_NOT_QUEUE,
                                               name_acquired, name_lost, self, NULL);
  self->watch_id = g_bus_watch_name_on_connection (connection, WATCHER_NAME,
                                                   G_BUS_NAME_WATCHER_FLAGS_NONE,
                                                   watcher_appeared, watcher_vanished,
                                                   self, NULL);
  return g_steal_pointer (&self);
}

static gboolean
strv_equal_ptrs (GPtrArray *have, const char *const *want)
{
  guint n = want ? g_strv_length ((char **) want) : 0;

  if (n != have->len)
    return FALSE;
  for (guint i = 0; i < n; i++)
    if (g_strcmp0 (g_ptr_array_index (have, i), want[i]) != 0)
      return FALSE;
  return TRUE;
}

void
bln_tray_set_models (BlnTray *self, const char *const *ids, const char *const *labels,
                     const char *active)
{
  guint n;

  g_return_if_fail (BLN_IS_TRAY (self));
  n = ids ? g_strv_length ((char **) ids) : 0;
  g_return_if_fail (n == (labels ? g_strv_length ((char **) labels) : 0));

  if (strv_equal_ptrs (self->model_ids, ids) && strv_equal_ptrs (self->model_labels, labels) &&
      g_strcmp0 (self->active, active) == 0)
    return;
  g_ptr_array_set_size (self->model_ids, 0);
  g_ptr_array_set_size (self->model_labels, 0);
  for (guint i = 0; i < n; i++)
    {
      g_ptr_array_add (self->model_ids, g_strdup (ids[i]));
      g_ptr_array_add (self->model_labels, g_strdup (labels[i]));
    }
  g_free (self->active);
  self->active = g_strdup (active);
  layout_changed (self);
}

void
bln_tray_set_state (BlnTray *self, const char *model_label, gboolean busy,
                    gboolean server_running, const char *address)
{
  gboolean changed;

  g_return_if_fail (BLN_IS_TRAY (self));
  changed = g_strcmp0 (self->model_label, model_label) != 0 || self->busy != !!busy ||
            self->server_running != !!server_running || g_strcmp0 (self->address, address) != 0;
  if (!changed)
    return;
  if (self->busy != !!busy)
    {
      self->busy = !!busy;
      emit_item_signal (self, "NewStatus",
                        g_variant_new ("(s)", self->busy ? "NeedsAttention" : "Active"));
    }
  g_free (self->model_label);
  self->model_label = g_strdup (model_label);
  self->server_running = !!server_running;
  g_free (self->address);
  self->address = g_strdup (address);
  emit_item_signal (self, "NewToolTip", NULL);
  /* Labels, toggles and sensitivity of several entries change: a layout
   * update is the simplest correct notification. */
  layout_changed (self);
}

gboolean
bln_tray_is_registered (BlnTray *self)
{
  g_return_val_if_fail (BLN_IS_TRAY (self), FALSE);
  return self->registered;
}

const char *
bln_tray_bus_name (BlnTray *self)
{
  g_return_val_if_fail (BLN_IS_TRAY (self), NULL);
  return self->bus_name;
}
