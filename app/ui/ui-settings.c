/* ui-settings.c — the desktop app's settings next to app/core's (see ui-settings.h). */
#include "ui-settings.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include <glib/gi18n-lib.h>

#include "bln-error.h"

static const BlnSettingSpec ui_specs[] = {
  { "models.dir", BLN_SETTING_STRING, "", 0, 0, NULL,
    N_("folder scanned for models (empty: the user data folder)") },
  { "models.default", BLN_SETTING_STRING, "", 0, 0, NULL,
    N_("id of the model loaded at start-up (empty: none)") },
  { "server.port", BLN_SETTING_INT, "8080", 0, 65535, NULL,
    N_("TCP port of the API server (0: any free port)") },
  { "server.network", BLN_SETTING_BOOL, "false", 0, 0, NULL,
    N_("listen on every network interface instead of this computer only") },
  { "server.autostart", BLN_SETTING_BOOL, "true", 0, 0, NULL,
    N_("start the API server when a model is loaded") },
  { "server.cors_origins", BLN_SETTING_STRING, "*", 0, 0, NULL,
    N_("origins allowed to call the API from a browser, space separated") },
  { "chat.temperature", BLN_SETTING_DOUBLE, "0.6", 0, 2, NULL,
    N_("sampling temperature of the chat playground") },
  { "chat.max_tokens", BLN_SETTING_INT, "1024", 1, 1000000, NULL,
    N_("longest reply of the chat playground, in tokens") },
  { "cache.kv_budget_mb", BLN_SETTING_INT, "0", 0, 1048576, NULL,
    N_("memory for the KV cache in MiB (0: sized from the context)") },
  { "cache.kv_8bit", BLN_SETTING_BOOL, "false", 0, 0, NULL,
    N_("store the KV cache in 8 bits") },
  { "cache.prefix", BLN_SETTING_BOOL, "true", 0, 0, NULL,
    N_("reuse the cached prefix of earlier prompts") },
  { "cache.prefix_mb", BLN_SETTING_INT, "512", 0, 1048576, NULL,
    N_("most memory cached prompt prefixes keep in the KV cache, in MiB (0: no limit)") },
  { "cache.sliding_window", BLN_SETTING_INT, "0", 0, 1048576, NULL,
    N_("sliding attention window in tokens (0: off)") },
  { "cache.session_ttl_s", BLN_SETTING_INT, "600", 0, 604800, NULL,
    N_("seconds an idle session keeps its cache") },
  { "perf.threads", BLN_SETTING_INT, "0", 0, 1024, NULL,
    N_("CPU threads for the engine (0: all cores)") },
  { "perf.context", BLN_SETTING_INT, "0", 0, 1048576, NULL,
    N_("context size in tokens (0: the model's default)") },
  { "perf.backend", BLN_SETTING_STRING, "auto", 0, 0, "auto|cpu|cuda",
    N_("where the model runs") },
};

struct _BlnUiSettings
{
  GObject parent_instance;

  BlnDb *db;             /* borrowed */
  BlnSettings *core;     /* borrowed */
  GHashTable *values;    /* key (static) -> canonical text */
  gulong core_handler;
};

G_DEFINE_FINAL_TYPE (BlnUiSettings, bln_ui_settings, G_TYPE_OBJECT)

static guint changed_signal;

const BlnSettingSpec *
bln_ui_settings_specs (guint *n_specs)
{
  if (n_specs)
    *n_specs = G_N_ELEMENTS (ui_specs);
  return ui_specs;
}

static const BlnSettingSpec *
find_own (const char *key)
{
  for (guint i = 0; key && i < G_N_ELEMENTS (ui_specs); i++)
    if (strcmp (ui_specs[i].key, key) == 0)
      return &ui_specs[i];
  return NULL;
}

const BlnSettingSpec *
bln_ui_settings_find_spec (const char *key)
{
  const BlnSettingSpec *spec = find_own (key);

  return spec ? spec : bln_settings_find_spec (key);
}

/* The canonical text of @text for @spec, or NULL with @error set. */
static char *
canonical (const BlnSettingSpec *spec, const char *text, GError **error)
{
  char *end = NULL;
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  text = text ? text : "";
  switch (spec->type)
    {
    case BLN_SETTING_INT:
      {
        gint64 v;

        errno = 0;
        v = g_ascii_strtoll (text, &end, 10);
        if (!*text || *end || errno)
          break;
        if ((double) v < spec->min || (double) v > spec->max)
          {
            g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be between %.0f and %.0f",
                         spec->key, spec->min, spec->max);
            return NULL;
          }
        return g_strdup_printf ("%" G_GINT64_FORMAT, v);
      }
    case BLN_SETTING_DOUBLE:
      {
        double v;

        errno = 0;
        v = g_ascii_strtod (text, &end);
        if (!*text || *end || errno || !isfinite (v))
          break;
        if (v < spec->min || v > spec->max)
          {
            g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be between %g and %g",
                         spec->key, spec->min, spec->max);
            return NULL;
          }
        return g_strdup (g_ascii_dtostr (buf, sizeof buf, v));
      }
    case BLN_SETTING_BOOL:
      if (!g_ascii_strcasecmp (text, "true") || !strcmp (text, "1"))
        return g_strdup ("true");
      if (!g_ascii_strcasecmp (text, "false") || !strcmp (text, "0"))
        return g_strdup ("false");
      break;
    case BLN_SETTING_STRING:
      if (!g_utf8_validate (text, -1, NULL))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s: not valid UTF-8", spec->key);
          return NULL;
        }
      if (spec->choices)
        {
          g_auto (GStrv) choices = g_strsplit (spec->choices, "|", -1);
          if (!g_strv_contains ((const char *const *) choices, text))
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be one of %s",
                           spec->key, spec->choices);
              return NULL;
            }
        }
      return g_strdup (text);
    }
  g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s: '%s' is not a valid %s", spec->key,
               text, spec->type == BLN_SETTING_BOOL ? "switch value" : "number");
  return NULL;
}

static void
core_changed (BlnSettings *core, const char *key, gpointer user_data)
{
  g_signal_emit (user_data, changed_signal, g_quark_from_string (key), key);
}

static void
bln_ui_settings_dispose (GObject *object)
{
  BlnUiSettings *self = BLN_UI_SETTINGS (object);

  if (self->core && self->core_handler)
    g_signal_handler_disconnect (self->core, self->core_handler);
  self->core_handler = 0;
  self->core = NULL;
  G_OBJECT_CLASS (bln_ui_settings_parent_class)->dispose (object);
}

static void
bln_ui_settings_finalize (GObject *object)
{
  g_hash_table_unref (BLN_UI_SETTINGS (object)->values);
  G_OBJECT_CLASS (bln_ui_settings_parent_class)->finalize (object);
}

static void
bln_ui_settings_class_init (BlnUiSettingsClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = bln_ui_settings_dispose;
  object_class->finalize = bln_ui_settings_finalize;
  /* "changed" (const char *key), detailed by the key. */
  changed_signal = g_signal_new ("changed", G_TYPE_FROM_CLASS (klass),
                                 G_SIGNAL_RUN_LAST | G_SIGNAL_DETAILED, 0, NULL, NULL, NULL,
                                 G_TYPE_NONE, 1, G_TYPE_STRING);
}

static void
bln_ui_settings_init (BlnUiSettings *self)
{
  self->values = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
}

BlnUiSettings *
bln_ui_settings_new (BlnDb *db, BlnSettings *core, GError **error)
{
  g_autoptr (BlnUiSettings) self = NULL;
  sqlite3_stmt *st;
  int rc;

  g_return_val_if_fail (db != NULL && BLN_IS_SETTINGS (core), NULL);
  self = g_object_new (BLN_TYPE_UI_SETTINGS, NULL);
  self->db = db;
  self->core = core;
  for (guint i = 0; i < G_N_ELEMENTS (ui_specs); i++)
    g_hash_table_insert (self->values, (gpointer) ui_specs[i].key,
                         g_strdup (ui_specs[i].default_value));
  st = bln_db_prepare (db, "SELECT key, value FROM settings", error);
  if (!st)
    return NULL;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      const BlnSettingSpec *spec = find_own ((const char *) sqlite3_column_text (st, 0));
      char *canon;

      if (!spec)
        continue;
      canon = canonical (spec, (const char *) sqlite3_column_text (st, 1), NULL);
      if (canon)
        g_hash_table_insert (self->values, (gpointer) spec->key, canon);
    }
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (db, rc, "cannot read the settings", error);
      return NULL;
    }
  self->core_handler = g_signal_connect (core, "changed", G_CALLBACK (core_changed), self);
  return g_steal_pointer (&self);
}

char *
bln_ui_settings_get_text (BlnUiSettings *self, const char *key)
{
  g_return_val_if_fail (BLN_IS_UI_SETTINGS (self), NULL);
  if (find_own (key))
    return g_strdup (g_hash_table_lookup (self->values, key));
  return bln_settings_get_text (self->core, key);
}

gint64
bln_ui_settings_get_int (BlnUiSettings *self, const char *key)
{
  g_autofree char *text = bln_ui_settings_get_text (self, key);

  return text ? g_ascii_strtoll (text, NULL, 10) : 0;
}

double
bln_ui_settings_get_double (BlnUiSettings *self, const char *key)
{
  g_autofree char *text = bln_ui_settings_get_text (self, key);

  return text ? g_ascii_strtod (text, NULL) : 0;
}

gboolean
bln_ui_settings_get_bool (BlnUiSettings *self, const char *key)
{
  g_autofree char *text = bln_ui_settings_get_text (self, key);

  return g_strcmp0 (text, "true") == 0;
}

char *
bln_ui_settings_get_string (BlnUiSettings *self, const char *key)
{
  return bln_ui_settings_get_text (self, key);
}

gboolean
bln_ui_settings_set_text (BlnUiSettings *self, const char *key, const char *text,
                          GError **error)
{
  const BlnSettingSpec *spec;
  g_autofree char *canon = NULL;
  sqlite3_stmt *st;
  int rc;

  g_return_val_if_fail (BLN_IS_UI_SETTINGS (self), FALSE);
  spec = find_own (key);
  if (!spec)
    {
      if (!bln_settings_find_spec (key))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "unknown setting '%s'",
                       key ? key : "(null)");
          return FALSE;
        }
      return bln_settings_set_from_string (self->core, key, text, error);
    }
  canon = canonical (spec, text, error);
  if (!canon)
    return FALSE;
  if (g_strcmp0 (canon, g_hash_table_lookup (self->values, spec->key)) == 0)
    return TRUE;
  if (!bln_db_begin (self->db, error))
    return FALSE;
  st = bln_db_prepare (self->db,
                       "INSERT INTO settings (key, value) VALUES (?1, ?2) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value", error);
  if (!st)
    {
      bln_db_rollback (self->db);
      return FALSE;
    }
  sqlite3_bind_text (st, 1, spec->key, -1, SQLITE_STATIC);
  sqlite3_bind_text (st, 2, canon, -1, SQLITE_STATIC);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (self->db, rc, "cannot save the setting", error);
      bln_db_rollback (self->db);
      return FALSE;
    }
  if (!bln_db_commit (self->db, error))
    {
      bln_db_rollback (self->db);
      return FALSE;
    }
  g_hash_table_insert (self->values, (gpointer) spec->key, g_steal_pointer (&canon));
  g_signal_emit (self, changed_signal, g_quark_from_string (spec->key), spec->key);
  return TRUE;
}

char *
bln_ui_settings_models_dir (BlnUiSettings *self)
{
  g_autofree char *dir = bln_ui_settings_get_text (self, "models.dir");

  if (dir && *dir)
    return g_steal_pointer (&dir);
  /* Inside Flatpak the user data dir is private to the sandbox; the
   * manifest shares the host's ~/.local/share/baleen/models instead, so the
   * app, baleen-cli and baleen-server use the same folder. */
  if (g_getenv ("FLATPAK_ID"))
    return g_build_filename (g_get_home_dir (), ".local", "share", "baleen", "models", NULL);
  return g_build_filename (g_get_user_data_dir (), "baleen", "models", NULL);
}
