/* settings-page.h — a page of settings built from their declarations.
 *
 * Shows every setting whose key starts with one of @prefixes (from app/core's
 * table and the app's own, ui-settings.h) as a row that fits its type: a
 * switch, a spin button, a choice list or a text entry, each with the
 * setting's summary as its accessible description. Changes are written to
 * SQLite at once; invalid values are refused with a toast. Rows follow
 * changes made elsewhere ("changed::KEY").
 */
#pragma once

#include <adwaita.h>

#include "application.h"

G_BEGIN_DECLS

#define BLN_TYPE_SETTINGS_PAGE (bln_settings_page_get_type ())
G_DECLARE_FINAL_TYPE (BlnSettingsPage, bln_settings_page, BLN, SETTINGS_PAGE, AdwBin)

/* bln_settings_page_new:
 * @prefixes: NULL-terminated key prefixes, e.g. { "cache.", NULL } (copied).
 * @description: a line shown above the settings, or NULL.
 * @live_status: add a "Now" group with the active backend, the loaded model,
 *   its context size and the queue depth, refreshed every second.
 */
BlnSettingsPage *bln_settings_page_new (BlnApplication *app, const char *const *prefixes,
                                        const char *description, gboolean live_status);

/* bln_settings_page_get_row: the widget that edits @key (a GtkSwitch,
 * GtkSpinButton, AdwComboRow or AdwEntryRow), or NULL (borrowed; for tests). */
GtkWidget *bln_settings_page_get_editor (BlnSettingsPage *self, const char *key);

/* bln_settings_page_add_group: adds @group (floating reference taken) to the
 * page: after the description and the "Now" group when @at_top (groups added
 * so keep their order), else at the end. */
void bln_settings_page_add_group (BlnSettingsPage *self, AdwPreferencesGroup *group,
                                  gboolean at_top);

G_END_DECLS
