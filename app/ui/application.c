/* application.c — the app object: database, library, model, server, tray. */
#include "application.h"

#include <glib/gi18n-lib.h>

#include "baleen-config.h"
#include "bln-error.h"
#include "safety.h"
#include "tray.h"
#include "window.h"

struct _BlnApplication
{
  AdwApplication parent_instance;

  /* owned */
  BlnDb *db;
  BlnSettings *core_settings;
  BlnUiSettings *settings;
  GError *startup_error;
  GError *server_error;           /* why the server did not start at start-up */
  BlnModelLibrary *library;
  BlnModelHost *host;             /* borrows library */
  BlnServer *server;              /* borrows host, library and safety */
  BlnSafety *safety;              /* keys, limits, rules and audit log for the server */
  char *loaded_id;                /* what the host had loaded at the last look */
  char *loaded_name;
  char *api_key;
  BlnTray *tray;
  BlnModelLease *pending;         /* the load in flight, NULL when none */
  GTask *pending_task;
  GCancellable *pending_cancellable;
  gulong pending_cancel_id;
  gboolean held;
  guint n_retiring;
  gboolean restart_server;        /* start the server once the retired one is gone */
  guint poll_id;
};

G_DEFINE_FINAL_TYPE (BlnApplication, bln_application, ADW_TYPE_APPLICATION)

static guint state_changed_signal;

static void update_tray (BlnApplication *self);

static void
state_changed (BlnApplication *self)
{
  update_tray (self);
  g_signal_emit (self, state_changed_signal, 0);
}

/* The host may switch models for a server request: follow what it has. */
static gboolean
sync_loaded (BlnApplication *self)
{
  const BlnModelEntry *e = self->host ? bln_model_host_loaded (self->host) : NULL;

  if (g_strcmp0 (e ? e->id : NULL, self->loaded_id) == 0)
    return FALSE;
  g_free (self->loaded_id);
  self->loaded_id = e ? g_strdup (e->id) : NULL;
  g_free (self->loaded_name);
  self->loaded_name = e ? g_strdup (e->name) : NULL;
  return TRUE;
}

static gboolean
poll_loaded (gpointer user_data)
{
  BlnApplication *self = user_data;

  if (sync_loaded (self))
    state_changed (self);
  return G_SOURCE_CONTINUE;
}

/* The engine settings a worker reads when it is made (engine-worker.h): the
 * KV pool, the prefix cache, the sliding window and the device. They apply to the next load. */
static void
apply_engine_options (BlnApplication *self)
{
  BlnEngineWorkerOptions o;
  g_autofree char *backend = NULL;

  bln_engine_worker_options_init (&o);
  if (self->settings)
    {
      o.kv_mem_mib = (int) bln_ui_settings_get_int (self->settings, "cache.kv_budget_mb");
      o.no_prefix_cache = !bln_ui_settings_get_bool (self->settings, "cache.prefix");
      o.prefix_mib = (int) bln_ui_settings_get_int (self->settings, "cache.prefix_mb");
      o.kv_bits = bln_ui_settings_get_bool (self->settings, "cache.kv_8bit") ? 8 : 0;
      o.session_ttl_s = (int) bln_ui_settings_get_int (self->settings, "cache.session_ttl_s");
      o.sliding_window = (int) bln_ui_settings_get_int (self->settings, "cache.sliding_window");
      backend = bln_ui_settings_get_string (self->settings, "perf.backend");
      /* "auto", "cpu" or "cuda": the spec's choices are device names. Without
       * CUDA in the build "auto" is the CPU (skipping the GPU probe's
       * fallback context). */
      if (backend && *backend && (BALEEN_HAVE_CUDA || !g_str_equal (backend, "auto")))
        o.device = backend;
    }
  bln_engine_worker_set_defaults (&o);
}

static const char *const engine_option_keys[] = {
  "cache.kv_budget_mb", "cache.kv_8bit", "cache.prefix", "cache.prefix_mb", "perf.backend",
  "cache.session_ttl_s", "cache.sliding_window",
};

static void
engine_option_changed (BlnUiSettings *settings, const char *key, BlnApplication *self)
{
  apply_engine_options (self);
}

static BlnModelHost *
new_host (BlnApplication *self)
{
  BlnModelHostOptions opts = { 0 };

  if (self->settings)
    {
      opts.n_threads = (int) bln_ui_settings_get_int (self->settings, "perf.threads");
      opts.n_ctx = (int) bln_ui_settings_get_int (self->settings, "perf.context");
    }
  opts.idle_ttl = 0;   /* a loaded model stays until the user unloads it */
  apply_engine_options (self);
  return bln_model_host_new (self->library, &opts);
}

/* ---- retiring a server, host and library without blocking ------------- */

typedef struct {
  BlnApplication *app;
  BlnServer *server;
  BlnModelHost *host;
  BlnModelLibrary *library;
} Retire;

static gboolean
retire_poll (gpointer user_data)
{
  Retire *r = user_data;
  BlnApplication *self = r->app;

  if (r->server && bln_server_n_active (r->server) > 0)
    return G_SOURCE_CONTINUE;
  g_clear_pointer (&r->server, bln_server_free);
  /* Freeing the host joins its worker thread, which stops at the next token. */
  g_clear_pointer (&r->host, bln_model_host_free);
  g_clear_pointer (&r->library, bln_model_library_free);
  self->n_retiring--;
  if (self->n_retiring == 0 && self->restart_server && !self->server)
    {
      g_autoptr (GError) error = NULL;
      self->restart_server = FALSE;
      if (!bln_application_start_server (self, &error))
        g_message ("cannot restart the server: %s", error->message);
    }
  state_changed (self);
  g_object_unref (self);
  g_free (r);
  return G_SOURCE_REMOVE;
}

/* Takes @server, @host and @library (any may be NULL) and frees them once the
 * server's requests have ended. */
static void
retire (BlnApplication *self, BlnServer *server, BlnModelHost *host, BlnModelLibrary *library)
{
  Retire *r = g_new0 (Retire, 1);

  r->app = g_object_ref (self);
  r->server = server;
  r->host = host;
  r->library = library;
  if (server)
    bln_server_shutdown (server);
  self->n_retiring++;
  g_timeout_add (20, retire_poll, r);
}

/* ---- server ------------------------------------------------------------ */

gboolean
bln_application_start_server (BlnApplication *self, GError **error)
{
  BlnServerOptions opts = { 0 };
  gboolean network;

  g_return_val_if_fail (BLN_IS_APPLICATION (self), FALSE);
  if (self->server)
    return TRUE;
  if (self->n_retiring > 0)
    {
      /* The old server still holds the port: start once it is gone. */
      self->restart_server = TRUE;
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_PENDING,
                   _("The server is restarting; try again in a moment."));
      return FALSE;
    }
  if (!self->library || bln_model_library_n_models (self->library) == 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED,
                   _("There is no model to serve: import one on the Models page first."));
      return FALSE;
    }
  network = self->settings && bln_ui_settings_get_bool (self->settings, "server.network");
  opts.host = network ? "0.0.0.0" : "127.0.0.1";
  opts.port = self->settings ? (int) bln_ui_settings_get_int (self->settings, "server.port")
                             : 8080;
  opts.api_key = self->api_key;
  opts.safety = self->safety;
  if (network && !(self->api_key && *self->api_key))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   _("Create an API key before opening the server to the network."));
      return FALSE;
    }
  self->server = bln_server_new (self->host, self->library, &opts, error);
  if (!self->server)
    {
      if (error && *error && g_error_matches (*error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE))
        g_prefix_error (error, _("Port %d is in use: choose another port on the Server page. "),
                        opts.port);
      return FALSE;
    }
  state_changed (self);
  return TRUE;
}

void
bln_application_stop_server (BlnApplication *self)
{
  g_return_if_fail (BLN_IS_APPLICATION (self));
  self->restart_server = FALSE;
  if (!self->server)
    return;
  retire (self, g_steal_pointer (&self->server), NULL, NULL);
  state_changed (self);
}

gboolean
bln_application_server_starting (BlnApplication *self)
{
  return self->restart_server && !self->server;
}

const char *
bln_application_server_url (BlnApplication *self)
{
  return self->server ? bln_server_url (self->server) : NULL;
}

char *
bln_application_api_host (BlnApplication *self)
{
  const char *url = bln_application_server_url (self);

  if (!url)
    return NULL;
  return g_str_has_suffix (url, "/") ? g_strconcat (url, "v1", NULL)
                                     : g_strconcat (url, "/v1", NULL);
}

const char *
bln_application_api_key (BlnApplication *self)
{
  return self->api_key;
}

void
bln_application_set_api_key (BlnApplication *self, const char *key)
{
  g_free (self->api_key);
  self->api_key = g_strdup (key);
  state_changed (self);
}

/* ---- models ------------------------------------------------------------ */

BlnModelLibrary *
bln_application_library (BlnApplication *self)
{
  return self->library;
}

static void cancel_pending (BlnApplication *self, const GError *why);

/* Replaces library, host and server (the server restarts on the new ones). */
static void
replace_all (BlnApplication *self, BlnModelLibrary *lib)
{
  gboolean had_server = self->server != NULL || self->restart_server;

  cancel_pending (self, NULL);
  if (self->server || self->host || self->library)
    retire (self, g_steal_pointer (&self->server), g_steal_pointer (&self->host),
            lib ? g_steal_pointer (&self->library) : NULL);
  if (lib)
    self->library = lib;
  self->host = new_host (self);
  sync_loaded (self);
  if (had_server)
    {
      if (self->n_retiring > 0)
        self->restart_server = TRUE;
      else
        bln_application_start_server (self, NULL);
    }
  state_changed (self);
}

void
bln_application_rescan (BlnApplication *self)
{
  g_autofree char *dir = NULL;
  g_autoptr (GError) error = NULL;
  BlnModelLibrary *lib;

  dir = self->settings ? bln_ui_settings_models_dir (self->settings)
                       : g_build_filename (g_get_user_data_dir (), "baleen", "models", NULL);
  g_mkdir_with_parents (dir, 0755);
  lib = bln_model_library_new_from_dir (dir, &error);
  if (!lib)
    {
      g_message ("cannot read the models folder %s: %s", dir, error->message);
      return;
    }
  replace_all (self, lib);
}

const char *
bln_application_loaded_id (BlnApplication *self)
{
  return self->loaded_id;
}

const char *
bln_application_loaded_name (BlnApplication *self)
{
  return self->loaded_name;
}

BlnEngineWorker *
bln_application_worker (BlnApplication *self)
{
  return self->host ? bln_model_host_worker (self->host) : NULL;
}

gboolean
bln_application_busy (BlnApplication *self)
{
  return self->pending != NULL;
}

/* Ends the load in flight, failing its task with @why (NULL: cancelled). */
static void
cancel_pending (BlnApplication *self, const GError *why)
{
  g_autoptr (GTask) task = g_steal_pointer (&self->pending_task);

  if (!self->pending)
    return;
  g_clear_pointer (&self->pending, bln_model_lease_release);
  if (self->pending_cancellable && self->pending_cancel_id)
    g_cancellable_disconnect (self->pending_cancellable, self->pending_cancel_id);
  self->pending_cancel_id = 0;
  g_clear_object (&self->pending_cancellable);
  if (task)
    {
      if (why)
        g_task_return_error (task, g_error_copy (why));
      else
        g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_CANCELLED, _("Loading cancelled"));
    }
  state_changed (self);
}

static gboolean
cancel_idle (gpointer user_data)
{
  BlnApplication *self = user_data;

  if (self->pending_cancellable && g_cancellable_is_cancelled (self->pending_cancellable))
    cancel_pending (self, NULL);
  g_object_unref (self);
  return G_SOURCE_REMOVE;
}

static void
load_cancelled (GCancellable *cancellable, gpointer user_data)
{
  /* May run inside g_cancellable_disconnect's caller: act from an idle. */
  g_idle_add (cancel_idle, g_object_ref (user_data));
}

static gboolean
release_lease_idle (gpointer lease)
{
  bln_model_lease_release (lease);
  return G_SOURCE_REMOVE;
}

static void
load_ready (BlnModelLease *lease, BlnEngineWorker *worker, const BlnModelEntry *entry,
            const GError *error, gpointer user_data)
{
  BlnApplication *self = user_data;
  g_autoptr (GTask) task = g_steal_pointer (&self->pending_task);
  gboolean autostart;

  /* The model stays loaded without our lease (idle_ttl 0), and holding it
   * would keep a server request for another model waiting forever. The host
   * may be walking its queue while it calls us: release from an idle, ahead
   * of anything that could free the host. */
  self->pending = NULL;
  g_idle_add_full (G_PRIORITY_HIGH, release_lease_idle, lease, NULL);
  if (self->pending_cancellable && self->pending_cancel_id)
    g_cancellable_disconnect (self->pending_cancellable, self->pending_cancel_id);
  self->pending_cancel_id = 0;
  g_clear_object (&self->pending_cancellable);
  sync_loaded (self);
  if (error)
    {
      g_task_return_error (task, g_error_copy (error));
      state_changed (self);
      return;
    }
  autostart = self->settings && bln_ui_settings_get_bool (self->settings, "server.autostart");
  if (autostart && !self->server && self->n_retiring == 0)
    {
      g_autoptr (GError) serr = NULL;
      if (!bln_application_start_server (self, &serr))
        g_message ("cannot start the server: %s", serr->message);
    }
  state_changed (self);
  g_task_return_boolean (task, TRUE);
}

void
bln_application_load_async (BlnApplication *self, const char *id, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = NULL;
  const BlnModelEntry *entry;

  g_return_if_fail (BLN_IS_APPLICATION (self));
  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, bln_application_load_async);
  if (self->pending)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_BUSY,
                               _("Another model is being loaded; wait or cancel it first."));
      return;
    }
  entry = self->library && id ? bln_model_library_lookup (self->library, id, NULL) : NULL;
  if (!entry)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                               _("The model “%s” is not in the library any more."),
                               id ? id : "");
      return;
    }
  self->pending_task = g_steal_pointer (&task);
  if (cancellable)
    {
      self->pending_cancellable = g_object_ref (cancellable);
      self->pending_cancel_id = g_cancellable_connect (cancellable, G_CALLBACK (load_cancelled),
                                                       self, NULL);
    }
  /* A sentinel so that a ready callback run from inside acquire sees it. */
  self->pending = (BlnModelLease *) 1;
  self->pending = bln_model_host_acquire (self->host, entry, load_ready, self);
  if (self->pending_task == NULL)
    self->pending = NULL;
  state_changed (self);
}

gboolean
bln_application_load_finish (BlnApplication *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
bln_application_unload (BlnApplication *self)
{
  g_return_if_fail (BLN_IS_APPLICATION (self));
  if (!self->loaded_id && !self->pending)
    return;
  /* The host frees its model only when it is freed itself: replace it. */
  replace_all (self, NULL);
}

/* ---- tray ---------------------------------------------------------------- */

gboolean
bln_application_has_tray (BlnApplication *self)
{
  return self->tray && bln_tray_is_registered (self->tray);
}

static void
update_tray (BlnApplication *self)
{
  g_autoptr (GPtrArray) ids = g_ptr_array_new ();
  g_autoptr (GPtrArray) labels = g_ptr_array_new ();
  guint n;

  if (!self->tray)
    return;
  n = self->library ? bln_model_library_n_models (self->library) : 0;
  for (guint i = 0; i < n; i++)
    {
      const BlnModelEntry *e = bln_model_library_get (self->library, i);
      g_ptr_array_add (ids, e->id);
      g_ptr_array_add (labels, e->name);
    }
  g_ptr_array_add (ids, NULL);
  g_ptr_array_add (labels, NULL);
  bln_tray_set_models (self->tray, (const char *const *) ids->pdata,
                       (const char *const *) labels->pdata, self->loaded_id);
  bln_tray_set_state (self->tray, self->loaded_name, bln_application_busy (self),
                      self->server != NULL, bln_application_server_url (self));
}

static void
tray_load_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;

  if (!bln_application_load_finish (BLN_APPLICATION (source), result, &error) &&
      !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    g_message ("loading from the tray failed: %s", error->message);
}

static void
tray_model_activated (BlnTray *tray, const char *id, BlnApplication *self)
{
  if (g_strcmp0 (id, self->loaded_id) != 0)
    bln_application_load_async (self, id, NULL, tray_load_done, NULL);
}

static void
tray_load_toggled (BlnTray *tray, BlnApplication *self)
{
  g_autofree char *id = NULL;

  if (self->loaded_id)
    {
      bln_application_unload (self);
      return;
    }
  id = self->settings ? bln_ui_settings_get_string (self->settings, "models.default") : NULL;
  if ((!id || !*id) && self->library && bln_model_library_n_models (self->library) > 0)
    {
      g_free (id);
      id = g_strdup (bln_model_library_get (self->library, 0)->id);
    }
  if (id && *id)
    bln_application_load_async (self, id, NULL, tray_load_done, NULL);
}

static void
tray_server_toggled (BlnTray *tray, BlnApplication *self)
{
  g_autoptr (GError) error = NULL;

  if (self->server)
    bln_application_stop_server (self);
  else if (!bln_application_start_server (self, &error))
    g_message ("%s", error->message);
  update_tray (self);
}

static void
tray_copy_address (BlnTray *tray, BlnApplication *self)
{
  g_autofree char *host = bln_application_api_host (self);
  GdkDisplay *display = gdk_display_get_default ();

  if (host && display)
    gdk_clipboard_set_text (gdk_display_get_clipboard (display), host);
}

static void
tray_open_window (BlnTray *tray, BlnApplication *self)
{
  g_application_activate (G_APPLICATION (self));
}

static void
tray_quit (BlnTray *tray, BlnApplication *self)
{
  g_application_quit (G_APPLICATION (self));
}

static void
tray_registered_changed (BlnTray *tray, gboolean registered, BlnApplication *self)
{
  /* While the icon is shown, closing the last window keeps the app alive. */
  if (registered && !self->held)
    g_application_hold (G_APPLICATION (self));
  else if (!registered && self->held)
    g_application_release (G_APPLICATION (self));
  self->held = registered;
  g_signal_emit (self, state_changed_signal, 0);
}

/* Threads and context size are options of the model host: a new host takes
 * them. With nothing loaded that is free; otherwise they apply after the next
 * unload (the Performance page says so). */
static void
engine_setting_changed (BlnUiSettings *settings, const char *key, BlnApplication *self)
{
  if (!self->loaded_id && !self->pending && self->host)
    replace_all (self, NULL);
}

/* ---- GApplication ------------------------------------------------------ */

static void
bln_application_startup (GApplication *app)
{
  BlnApplication *self = BLN_APPLICATION (app);
  GDBusConnection *bus;
  g_autoptr (GError) error = NULL;
  g_autofree char *default_id = NULL;

  static const char *quit_accels[] = { "<Control>q", NULL };

  G_APPLICATION_CLASS (bln_application_parent_class)->startup (app);
  gtk_application_set_accels_for_action (GTK_APPLICATION (self), "app.quit", quit_accels);

  self->db = bln_db_open (NULL, &self->startup_error);
  if (self->db)
    self->core_settings = bln_settings_new (self->db, &self->startup_error);
  if (self->core_settings)
    self->settings = bln_ui_settings_new (self->db, self->core_settings, &self->startup_error);
  if (self->startup_error)
    g_message ("settings unavailable: %s", self->startup_error->message);
  /* The server's safety layer has its own connection to the same file. */
  if (self->db && !(self->safety = bln_safety_new (bln_db_path (self->db), &error)))
    {
      g_message ("no rules, limits or audit log for the server: %s", error->message);
      g_clear_error (&error);
    }

  bus = g_application_get_dbus_connection (app);
  if (bus && !g_getenv ("BALEEN_NO_TRAY"))
    {
      self->tray = bln_tray_new (bus, "org.baleen.Baleen-symbolic", &error);
      if (self->tray)
        {
          g_signal_connect (self->tray, "model-activated", G_CALLBACK (tray_model_activated),
                            self);
          g_signal_connect (self->tray, "load-toggled", G_CALLBACK (tray_load_toggled), self);
          g_signal_connect (self->tray, "server-toggled", G_CALLBACK (tray_server_toggled),
                            self);
          g_signal_connect (self->tray, "copy-address", G_CALLBACK (tray_copy_address), self);
          g_signal_connect (self->tray, "open-window", G_CALLBACK (tray_open_window), self);
          g_signal_connect (self->tray, "quit", G_CALLBACK (tray_quit), self);
          g_signal_connect (self->tray, "registered-changed",
                            G_CALLBACK (tray_registered_changed), self);
        }
      else
        g_message ("no tray icon: %s", error->message);
    }
  bln_application_rescan (self);
  if (self->settings)
    {
      g_signal_connect (self->settings, "changed::perf.threads",
                        G_CALLBACK (engine_setting_changed), self);
      g_signal_connect (self->settings, "changed::perf.context",
                        G_CALLBACK (engine_setting_changed), self);
      for (guint i = 0; i < G_N_ELEMENTS (engine_option_keys); i++)
        {
          g_autofree char *signal = g_strconcat ("changed::", engine_option_keys[i], NULL);
          g_signal_connect (self->settings, signal, G_CALLBACK (engine_option_changed), self);
        }
    }
  self->poll_id = g_timeout_add_seconds (1, poll_loaded, self);

  default_id = self->settings ? bln_ui_settings_get_string (self->settings, "models.default")
                              : NULL;
  if (g_getenv ("BALEEN_NO_AUTOLOAD"))
    return;
  if (default_id && *default_id)
    bln_application_load_async (self, default_id, NULL, tray_load_done, NULL);
  /* The server lists every model and loads one when a request names it, so
   * it can start before anything is loaded. */
  if (self->settings && bln_ui_settings_get_bool (self->settings, "server.autostart") &&
      self->library && bln_model_library_n_models (self->library) > 0 &&
      !bln_application_start_server (self, &self->server_error))
    g_message ("the API server did not start: %s", self->server_error->message);
}

static void
bln_application_activate (GApplication *app)
{
  GtkWindow *window = gtk_application_get_active_window (GTK_APPLICATION (app));

  if (!window)
    window = GTK_WINDOW (bln_window_new (BLN_APPLICATION (app)));
  gtk_window_present (window);
}

static void
bln_application_shutdown (GApplication *app)
{
  BlnApplication *self = BLN_APPLICATION (app);

  g_clear_handle_id (&self->poll_id, g_source_remove);
  cancel_pending (self, NULL);
  if (self->server)
    bln_server_shutdown (self->server);
  /* Let the main context deliver what the shutdown cancelled. */
  while (self->server && bln_server_n_active (self->server) > 0 &&
         g_main_context_iteration (NULL, FALSE))
    ;
  g_clear_pointer (&self->server, bln_server_free);
  while (self->n_retiring > 0)
    g_main_context_iteration (NULL, TRUE);
  /* Lease releases are queued as idles: run them before the host goes. */
  for (int i = 0; i < 100 && g_main_context_iteration (NULL, FALSE); i++)
    ;
  g_clear_pointer (&self->host, bln_model_host_free);
  g_clear_pointer (&self->safety, bln_safety_free);
  g_clear_object (&self->tray);
  G_APPLICATION_CLASS (bln_application_parent_class)->shutdown (app);
}

static void
bln_application_finalize (GObject *object)
{
  BlnApplication *self = BLN_APPLICATION (object);

  g_clear_pointer (&self->library, bln_model_library_free);
  g_clear_object (&self->settings);
  g_clear_object (&self->core_settings);
  g_clear_pointer (&self->db, bln_db_close);
  g_clear_error (&self->startup_error);
  g_clear_error (&self->server_error);
  g_free (self->loaded_id);
  g_free (self->loaded_name);
  g_free (self->api_key);
  G_OBJECT_CLASS (bln_application_parent_class)->finalize (object);
}

static void
quit_activated (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  g_application_quit (G_APPLICATION (user_data));
}

static void
about_activated (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtkWindow *parent = gtk_application_get_active_window (GTK_APPLICATION (user_data));
  AdwAboutWindow *about = ADW_ABOUT_WINDOW (adw_about_window_new ());

  adw_about_window_set_application_name (about, "Baleen");
  adw_about_window_set_application_icon (about, "org.baleen.Baleen");
  adw_about_window_set_version (about, BALEEN_VERSION);
  adw_about_window_set_license_type (about, GTK_LICENSE_MIT_X11);
  adw_about_window_set_comments (about, _("Run DeepSeek-family models on this computer and "
                                          "serve them through an OpenAI-compatible API."));
  gtk_window_set_transient_for (GTK_WINDOW (about), parent);
  gtk_window_present (GTK_WINDOW (about));
}

static void
bln_application_class_init (BlnApplicationClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GApplicationClass *app_class = G_APPLICATION_CLASS (klass);

  object_class->finalize = bln_application_finalize;
  app_class->startup = bln_application_startup;
  app_class->activate = bln_application_activate;
  app_class->shutdown = bln_application_shutdown;
  /* BlnApplication::state-changed: the model, the server or the tray changed. */
  state_changed_signal = g_signal_new ("state-changed", G_TYPE_FROM_CLASS (klass),
                                       G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
bln_application_init (BlnApplication *self)
{
  static const GActionEntry entries[] = {
    { .name = "quit", .activate = quit_activated },
    { .name = "about", .activate = about_activated },
  };

  g_action_map_add_action_entries (G_ACTION_MAP (self), entries, G_N_ELEMENTS (entries), self);
}

BlnApplication *
bln_application_new (void)
{
  return g_object_new (BLN_TYPE_APPLICATION,
                       "application-id", "org.baleen.Baleen",
                       "flags", G_APPLICATION_DEFAULT_FLAGS,
                       "resource-base-path", "/org/baleen/Baleen",
                       NULL);
}

BlnDb *
bln_application_db (BlnApplication *self)
{
  return self->db;
}

BlnUiSettings *
bln_application_settings (BlnApplication *self)
{
  return self->settings;
}

const GError *
bln_application_startup_error (BlnApplication *self)
{
  return self->startup_error;
}

GError *
bln_application_take_server_error (BlnApplication *self)
{
  return g_steal_pointer (&self->server_error);
}

BlnMetrics *
bln_application_metrics (BlnApplication *self)
{
  g_return_val_if_fail (BLN_IS_APPLICATION (self), NULL);
  return self->server ? bln_server_metrics (self->server) : NULL;
}
