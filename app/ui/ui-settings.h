/* ui-settings.h — every setting the desktop app shows, in one object.
 *
 * The app/core settings (BlnSettings: auth, audit, rate limits, moderation)
 * are used as they are. The settings only the desktop app uses so far
 * (models folder, default model, server port and exposure, CORS origins,
 * chat defaults, cache and performance knobs the engine does not read yet)
 * are declared here with the same BlnSettingSpec shape and stored in the same
 * `settings` table, so `baleen-cli config` and the tests see one store.
 * BlnSettings ignores rows it does not declare, so the two never collide.
 *
 * Lookups and writes dispatch on the key: a key declared here is handled
 * here, any other goes to BlnSettings. "changed::KEY" is emitted for both.
 */
#pragma once

#include <glib-object.h>

#include "settings.h"

G_BEGIN_DECLS

#define BLN_TYPE_UI_SETTINGS (bln_ui_settings_get_type ())
G_DECLARE_FINAL_TYPE (BlnUiSettings, bln_ui_settings, BLN, UI_SETTINGS, GObject)

/* bln_ui_settings_specs: the app's own declarations (static data). */
const BlnSettingSpec *bln_ui_settings_specs (guint *n_specs);

/* bln_ui_settings_new:
 * Loads the app's settings from @db and wraps @core (both borrowed; they must
 * outlive the object). Stored values that do not validate read as defaults.
 * Returns a new object or NULL with @error set when the table cannot be read.
 */
BlnUiSettings *bln_ui_settings_new (BlnDb *db, BlnSettings *core, GError **error);

/* bln_ui_settings_find_spec: the declaration of @key (here or in app/core),
 * or NULL when nobody declares it. */
const BlnSettingSpec *bln_ui_settings_find_spec (const char *key);

/* bln_ui_settings_get_text: the value of @key in text form (new string), or
 * NULL for an unknown key. */
char *bln_ui_settings_get_text (BlnUiSettings *self, const char *key);

/* Typed getters; an unknown key or a type mismatch reads 0 / FALSE / NULL. */
gint64 bln_ui_settings_get_int (BlnUiSettings *self, const char *key);
double bln_ui_settings_get_double (BlnUiSettings *self, const char *key);
gboolean bln_ui_settings_get_bool (BlnUiSettings *self, const char *key);
char *bln_ui_settings_get_string (BlnUiSettings *self, const char *key);

/* bln_ui_settings_set_text:
 * Validates @text for @key's type, range and choices, writes it in one
 * transaction and emits "changed::KEY" when it differs. FALSE with @error set
 * (BLN_ERROR_INVALID for a bad key or value, BLN_DB_ERROR_* when the write
 * fails; the old value is kept).
 */
gboolean bln_ui_settings_set_text (BlnUiSettings *self, const char *key, const char *text,
                                   GError **error);

/* bln_ui_settings_models_dir: the models folder: models.dir, or
 * $XDG_DATA_HOME/baleen/models when that is empty (inside Flatpak the host's
 * ~/.local/share/baleen/models, which the manifest shares). New string. */
char *bln_ui_settings_models_dir (BlnUiSettings *self);

G_END_DECLS
