/* settings.c — the declared settings, their validation and the SQLite cache. */
#include "settings.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bln-error.h"

static const BlnSettingSpec specs[] = {
  { "auth.require_key", BLN_SETTING_STRING, "remote", 0, 0, "never|remote|always",
    "when a request needs an API key: never, from non-loopback clients, or always" },
  { "privacy.content", BLN_SETTING_STRING, "hashed", 0, 0, "full|hashed|none",
    "what the audit log keeps of prompts and answers: the text, its SHA-256, or nothing" },
  { "audit.enabled", BLN_SETTING_BOOL, "true", 0, 0, NULL,
    "write one audit record per request" },
  { "audit.retention_days", BLN_SETTING_INT, "30", 0, 36500, NULL,
    "delete audit records older than this many days (0 keeps them)" },
  { "audit.max_rows", BLN_SETTING_INT, "1000000", 0, 1e12, NULL,
    "keep at most this many audit records, dropping the oldest (0: no limit)" },
  { "audit.max_mb", BLN_SETTING_INT, "0", 0, 10000000, NULL,
    "keep the settings database (almost all of it the audit log) under this many MiB by "
    "dropping the oldest audit records (0: no limit)" },
  { "audit.jsonl_path", BLN_SETTING_STRING, "", 0, 0, NULL,
    "also append each audit record to this JSON-lines file (empty: off)" },
  { "ratelimit.key_rpm", BLN_SETTING_INT, "0", 0, 1e9, NULL,
    "requests per minute for each API key without its own limit (0: unlimited)" },
  { "ratelimit.key_tpm", BLN_SETTING_INT, "0", 0, 1e12, NULL,
    "tokens per minute for each API key without its own limit (0: unlimited)" },
  { "ratelimit.client_rpm", BLN_SETTING_INT, "0", 0, 1e9, NULL,
    "requests per minute for each client address (0: unlimited)" },
  { "ratelimit.client_tpm", BLN_SETTING_INT, "0", 0, 1e12, NULL,
    "tokens per minute for each client address (0: unlimited)" },
  { "ratelimit.redis_url", BLN_SETTING_STRING, "", 0, 0, NULL,
    "share limits between replicas through Redis, e.g. redis://127.0.0.1:6379 (empty: "
    "in-process)" },
  { "ratelimit.redis_failure", BLN_SETTING_STRING, "open", 0, 0, "open|closed",
    "when Redis cannot be reached: let requests through (open) or refuse them (closed)" },
  { "moderation.output_action", BLN_SETTING_STRING, "stop", 0, 0, "stop|mask",
    "a blocked phrase in an answer stops it (finish_reason content_filter) or is masked" },
  { "moderation.regex_window", BLN_SETTING_INT, "64", 1, 4096, NULL,
    "characters of an answer held back for regular-expression rules" },
  { "moderation.endpoint", BLN_SETTING_STRING, "", 0, 0, NULL,
    "URL of an OpenAI /v1/moderations-compatible service checking each answer (empty: off)" },
  { "moderation.model", BLN_SETTING_STRING, "", 0, 0, NULL,
    "model name sent to the moderation endpoint (empty: none sent)" },
  { "moderation.failure", BLN_SETTING_STRING, "open", 0, 0, "open|closed",
    "when the moderation endpoint fails: keep the answer (open) or withhold it (closed)" },
  { "moderation.timeout_s", BLN_SETTING_DOUBLE, "10", 0.1, 600, NULL,
    "seconds to wait for the moderation endpoint" },
};

const BlnSettingSpec *
bln_settings_specs (guint *n_specs)
{
  if (n_specs)
    *n_specs = G_N_ELEMENTS (specs);
  return specs;
}

const BlnSettingSpec *
bln_settings_find_spec (const char *key)
{
  for (guint i = 0; key && i < G_N_ELEMENTS (specs); i++)
    if (strcmp (specs[i].key, key) == 0)
      return &specs[i];
  return NULL;
}

/* Validates @text for @spec; returns its canonical text form or NULL with
 * @error set. */
static char *
canonical (const BlnSettingSpec *spec, const char *text, GError **error)
{
  char *end = NULL;

  if (!text)
    text = "";
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
            g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                         "%s must be between %.0f and %.0f, not %s", spec->key, spec->min,
                         spec->max, text);
            return NULL;
          }
        return g_strdup_printf ("%" G_GINT64_FORMAT, v);
      }
    case BLN_SETTING_DOUBLE:
      {
        double v;
        char buf[G_ASCII_DTOSTR_BUF_SIZE];
        errno = 0;
        v = g_ascii_strtod (text, &end);
        if (!*text || *end || errno || !isfinite (v))
          break;
        if (v < spec->min || v > spec->max)
          {
            g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be between %g and %g, "
                         "not %s", spec->key, spec->min, spec->max, text);
            return NULL;
          }
        return g_strdup (g_ascii_dtostr (buf, sizeof buf, v));
      }
    case BLN_SETTING_BOOL:
      if (!g_ascii_strcasecmp (text, "true") || !strcmp (text, "1") ||
          !g_ascii_strcasecmp (text, "yes") || !g_ascii_strcasecmp (text, "on"))
        return g_strdup ("true");
      if (!g_ascii_strcasecmp (text, "false") || !strcmp (text, "0") ||
          !g_ascii_strcasecmp (text, "no") || !g_ascii_strcasecmp (text, "off"))
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
              g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be one of %s, not "
                           "'%s'", spec->key, spec->choices, text);
              return NULL;
            }
        }
      return g_strdup (text);
    }
  g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s expects %s, not '%s'", spec->key,
               spec->type == BLN_SETTING_INT ? "an integer"
               : spec->type == BLN_SETTING_DOUBLE ? "a number" : "true or false", text);
  return NULL;
}

struct _BlnSettings {
  GObject parent_instance;
  BlnDb *db;          /* borrowed */
  GHashTable *values; /* key (static spec string) -> canonical text (owned) */
};

G_DEFINE_FINAL_TYPE (BlnSettings, bln_settings, G_TYPE_OBJECT)

enum { SIGNAL_CHANGED, N_SIGNALS };
static guint signals[N_SIGNALS];

static void
bln_settings_finalize (GObject *object)
{
  BlnSettings *self = BLN_SETTINGS (object);

  g_clear_pointer (&self->values, g_hash_table_unref);
  G_OBJECT_CLASS (bln_settings_parent_class)->finalize (object);
}

static void
bln_settings_class_init (BlnSettingsClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = bln_settings_finalize;
  /* BlnSettings::changed (key): emitted after a setting's value changed,
   * detailed by the key. */
  signals[SIGNAL_CHANGED] =
    g_signal_new ("changed", G_TYPE_FROM_CLASS (klass),
                  G_SIGNAL_RUN_LAST | G_SIGNAL_DETAILED, 0, NULL, NULL, NULL, G_TYPE_NONE, 1,
                  G_TYPE_STRING);
}

static void
bln_settings_init (BlnSettings *self)
{
  self->values = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  for (guint i = 0; i < G_N_ELEMENTS (specs); i++)
    g_hash_table_insert (self->values, (gpointer) specs[i].key,
                         g_strdup (specs[i].default_value));
}

/* Reads the stored values into a new table (all keys, defaults filled in). */
static GHashTable *
load (BlnSettings *self, GError **error)
{
  g_autoptr (GHashTable) t = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  sqlite3_stmt *st;
  int rc;

  for (guint i = 0; i < G_N_ELEMENTS (specs); i++)
    g_hash_table_insert (t, (gpointer) specs[i].key, g_strdup (specs[i].default_value));
  st = bln_db_prepare (self->db, "SELECT key, value FROM settings", error);
  if (!st)
    return NULL;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      const char *key = (const char *) sqlite3_column_text (st, 0);
      const char *value = (const char *) sqlite3_column_text (st, 1);
      const BlnSettingSpec *spec = bln_settings_find_spec (key);
      g_autoptr (GError) local = NULL;
      char *canon;

      if (!spec)
        continue;
      canon = canonical (spec, value, &local);
      if (!canon)
        {
          g_message ("ignoring the stored value of %s: %s", key, local->message);
          continue;
        }
      g_hash_table_insert (t, (gpointer) spec->key, canon);
    }
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      bln_db_set_error (self->db, rc, "cannot read the settings", error);
      return NULL;
    }
  return g_steal_pointer (&t);
}

BlnSettings *
bln_settings_new (BlnDb *db, GError **error)
{
  g_autoptr (BlnSettings) self = g_object_new (BLN_TYPE_SETTINGS, NULL);
  GHashTable *t;

  g_return_val_if_fail (db != NULL, NULL);
  self->db = db;
  t = load (self, error);
  if (!t)
    return NULL;
  g_hash_table_unref (self->values);
  self->values = t;
  return g_steal_pointer (&self);
}

gboolean
bln_settings_reload (BlnSettings *self, GError **error)
{
  GHashTable *t, *old;

  g_return_val_if_fail (BLN_IS_SETTINGS (self), FALSE);
  t = load (self, error);
  if (!t)
    return FALSE;
  old = self->values;
  self->values = t;
  for (guint i = 0; i < G_N_ELEMENTS (specs); i++)
    if (g_strcmp0 (g_hash_table_lookup (old, specs[i].key),
                   g_hash_table_lookup (t, specs[i].key)) != 0)
      g_signal_emit (self, signals[SIGNAL_CHANGED], g_quark_from_string (specs[i].key),
                     specs[i].key);
  g_hash_table_unref (old);
  return TRUE;
}

static const char *
lookup (BlnSettings *self, const char *key, BlnSettingType type)
{
  const BlnSettingSpec *spec = bln_settings_find_spec (key);

  if (!spec || spec->type != type)
    {
      g_critical ("setting %s is not declared with the type asked for", key);
      return NULL;
    }
  return g_hash_table_lookup (self->values, spec->key);
}

gint64
bln_settings_get_int (BlnSettings *self, const char *key)
{
  const char *v = lookup (self, key, BLN_SETTING_INT);
  return v ? g_ascii_strtoll (v, NULL, 10) : 0;
}

double
bln_settings_get_double (BlnSettings *self, const char *key)
{
  const char *v = lookup (self, key, BLN_SETTING_DOUBLE);
  return v ? g_ascii_strtod (v, NULL) : 0.0;
}

gboolean
bln_settings_get_bool (BlnSettings *self, const char *key)
{
  const char *v = lookup (self, key, BLN_SETTING_BOOL);
  return v && strcmp (v, "true") == 0;
}

char *
bln_settings_get_string (BlnSettings *self, const char *key)
{
  return g_strdup (lookup (self, key, BLN_SETTING_STRING));
}

char *
bln_settings_get_text (BlnSettings *self, const char *key)
{
  const BlnSettingSpec *spec = bln_settings_find_spec (key);
  return spec ? g_strdup (g_hash_table_lookup (self->values, spec->key)) : NULL;
}

/* Stores @canon (or removes the row when NULL) and notifies. Takes @canon. */
static gboolean
store (BlnSettings *self, const BlnSettingSpec *spec, char *canon, GError **error)
{
  sqlite3_stmt *st;
  int rc;
  gboolean changed;
  const char *shown = canon ? canon : spec->default_value;

  if (!bln_db_begin (self->db, error))
    {
      g_free (canon);
      return FALSE;
    }
  st = bln_db_prepare (self->db, canon ? "INSERT INTO settings (key, value) VALUES (?1, ?2) "
                                         "ON CONFLICT (key) DO UPDATE SET value = ?2"
                                       : "DELETE FROM settings WHERE key = ?1", error);
  if (!st)
    {
      bln_db_rollback (self->db);
      g_free (canon);
      return FALSE;
    }
  sqlite3_bind_text (st, 1, spec->key, -1, SQLITE_STATIC);
  if (canon)
    sqlite3_bind_text (st, 2, canon, -1, SQLITE_TRANSIENT);
  rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      g_autofree char *what = g_strdup_printf ("cannot save the setting %s", spec->key);
      bln_db_set_error (self->db, rc, what, error);
      bln_db_rollback (self->db);
      g_free (canon);
      return FALSE;
    }
  if (!bln_db_commit (self->db, error))
    {
      g_free (canon);
      return FALSE;
    }
  changed = g_strcmp0 (g_hash_table_lookup (self->values, spec->key), shown) != 0;
  g_hash_table_insert (self->values, (gpointer) spec->key, g_strdup (shown));
  g_free (canon);
  if (changed)
    g_signal_emit (self, signals[SIGNAL_CHANGED], g_quark_from_string (spec->key), spec->key);
  return TRUE;
}

gboolean
bln_settings_set_from_string (BlnSettings *self, const char *key, const char *text,
                              GError **error)
{
  const BlnSettingSpec *spec;
  char *canon;

  g_return_val_if_fail (BLN_IS_SETTINGS (self), FALSE);
  spec = bln_settings_find_spec (key);
  if (!spec)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "unknown setting '%s'", key);
      return FALSE;
    }
  canon = canonical (spec, text, error);
  if (!canon)
    return FALSE;
  return store (self, spec, canon, error);
}

static gboolean
set_typed (BlnSettings *self, const char *key, BlnSettingType type, const char *text,
           GError **error)
{
  const BlnSettingSpec *spec = bln_settings_find_spec (key);

  if (spec && spec->type != type)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "setting %s has another type", key);
      return FALSE;
    }
  return bln_settings_set_from_string (self, key, text, error);
}

gboolean
bln_settings_set_int (BlnSettings *self, const char *key, gint64 value, GError **error)
{
  g_autofree char *text = g_strdup_printf ("%" G_GINT64_FORMAT, value);
  return set_typed (self, key, BLN_SETTING_INT, text, error);
}

gboolean
bln_settings_set_double (BlnSettings *self, const char *key, double value, GError **error)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (!isfinite (value))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be a finite number", key);
      return FALSE;
    }
  return set_typed (self, key, BLN_SETTING_DOUBLE, g_ascii_dtostr (buf, sizeof buf, value),
                    error);
}

gboolean
bln_settings_set_bool (BlnSettings *self, const char *key, gboolean value, GError **error)
{
  return set_typed (self, key, BLN_SETTING_BOOL, value ? "true" : "false", error);
}

gboolean
bln_settings_set_string (BlnSettings *self, const char *key, const char *value, GError **error)
{
  return set_typed (self, key, BLN_SETTING_STRING, value, error);
}

gboolean
bln_settings_reset (BlnSettings *self, const char *key, GError **error)
{
  const BlnSettingSpec *spec = bln_settings_find_spec (key);

  if (!spec)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "unknown setting '%s'", key);
      return FALSE;
    }
  return store (self, spec, NULL, error);
}
