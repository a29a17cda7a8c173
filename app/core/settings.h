/* settings.h — typed settings stored in the settings database.
 *
 * Every setting Baleen knows is declared once, with its type, default and
 * valid range or choices (bln_settings_specs). A BlnSettings object caches the
 * values of one database, validates and writes changes through to SQLite in a
 * transaction, and emits "changed" (detailed by the key, e.g.
 * "changed::ratelimit.key_rpm") after each change so that the server and the
 * UI apply it live. Keys that are not declared are refused.
 */
#pragma once

#include <glib-object.h>

#include "db.h"

G_BEGIN_DECLS

typedef enum {
  BLN_SETTING_INT,
  BLN_SETTING_DOUBLE,
  BLN_SETTING_BOOL,
  BLN_SETTING_STRING,
} BlnSettingType;

typedef struct {
  const char *key;            /* "section.name" */
  BlnSettingType type;
  const char *default_value;  /* in the text form bln_settings_set_from_string takes */
  double min, max;            /* numbers: the valid range, inclusive */
  const char *choices;        /* strings: "a|b|c" when only these are valid, else NULL */
  const char *summary;        /* one line for `baleen-cli config list` and the UI */
} BlnSettingSpec;

/* bln_settings_specs: the table of every setting; @n_specs receives its length.
 * Static data, never freed. */
const BlnSettingSpec *bln_settings_specs (guint *n_specs);

/* bln_settings_find_spec: the declaration of @key, or NULL when unknown. */
const BlnSettingSpec *bln_settings_find_spec (const char *key);

#define BLN_TYPE_SETTINGS (bln_settings_get_type ())
G_DECLARE_FINAL_TYPE (BlnSettings, bln_settings, BLN, SETTINGS, GObject)

/* bln_settings_new:
 * Loads the settings stored in @db (borrowed: it must outlive the object).
 * Stored values that no longer validate are ignored in favour of the default,
 * with a warning. Returns a new reference; NULL with @error set when the
 * database cannot be read.
 */
BlnSettings *bln_settings_new (BlnDb *db, GError **error);

/* bln_settings_reload:
 * Re-reads the database (another process, such as baleen-cli, may have changed
 * it) and emits "changed" for every value that differs. FALSE with @error set
 * when the database cannot be read; the cached values are then unchanged.
 */
gboolean bln_settings_reload (BlnSettings *self, GError **error);

/* Getters. @key must be declared with the matching type (a programming error
 * otherwise: g_critical and 0 / FALSE / NULL). get_string returns a new string. */
gint64 bln_settings_get_int (BlnSettings *self, const char *key);
double bln_settings_get_double (BlnSettings *self, const char *key);
gboolean bln_settings_get_bool (BlnSettings *self, const char *key);
char *bln_settings_get_string (BlnSettings *self, const char *key);

/* bln_settings_get_text: any setting's value in text form (new string), or
 * NULL for an unknown key. */
char *bln_settings_get_text (BlnSettings *self, const char *key);

/* Setters: validate (type, range, choices), write in one transaction, update
 * the cache and emit "changed::KEY" when the value differs. FALSE with @error
 * set (BLN_ERROR_INVALID for a bad key or value, BLN_DB_ERROR_* when the
 * database refuses the write; the previous value is then kept). */
gboolean bln_settings_set_int (BlnSettings *self, const char *key, gint64 value, GError **error);
gboolean bln_settings_set_double (BlnSettings *self, const char *key, double value,
                                  GError **error);
gboolean bln_settings_set_bool (BlnSettings *self, const char *key, gboolean value,
                                GError **error);
gboolean bln_settings_set_string (BlnSettings *self, const char *key, const char *value,
                                  GError **error);

/* bln_settings_set_from_string: parses @text for @key's type ("true"/"false",
 * numbers in C locale) and sets it; as the setters otherwise. */
gboolean bln_settings_set_from_string (BlnSettings *self, const char *key, const char *text,
                                       GError **error);

/* bln_settings_reset: removes the stored value so @key reads its default. */
gboolean bln_settings_reset (BlnSettings *self, const char *key, GError **error);

G_END_DECLS
