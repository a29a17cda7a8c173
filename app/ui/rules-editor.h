/* rules-editor.h — the content rules on the Safety page.
 *
 * A group listing the input and output rules stored in the settings database
 * (app/core/rules.h), each with a switch that turns it on or off and a button
 * that removes it; a form that adds a
 * word or a regular expression with its action (block, mask or log), where
 * it applies (requests, answers or both) and whether letter case counts; and
 * a "Try a text" entry that runs the enabled rules over a sample and says
 * which ones match, where, and what masking leaves. The server re-reads the
 * rules by itself when the database changes (safety.h).
 */
#pragma once

#include <adwaita.h>

#include "application.h"

G_BEGIN_DECLS

#define BLN_TYPE_RULES_EDITOR (bln_rules_editor_get_type ())
G_DECLARE_FINAL_TYPE (BlnRulesEditor, bln_rules_editor, BLN, RULES_EDITOR, AdwPreferencesGroup)

/* bln_rules_editor_new: an editor of @app's rules (@app borrowed; it outlives
 * the editor). Floating reference. */
BlnRulesEditor *bln_rules_editor_new (BlnApplication *app);

/* bln_rules_editor_reload: lists the stored rules again. */
void bln_rules_editor_reload (BlnRulesEditor *self);

/* bln_rules_editor_n_rules: the rules listed. */
guint bln_rules_editor_n_rules (BlnRulesEditor *self);

/* bln_rules_editor_get_widget: for tests, borrowed, NULL for an unknown name:
 * "pattern" (AdwEntryRow), "kind", "action", "scope" (AdwComboRow), "nocase"
 * (GtkSwitch), "add" (GtkButton), "test" (AdwEntryRow), "test-result"
 * (AdwActionRow: its subtitle is the outcome), "remove:ID" (the remove
 * button of rule ID) and "switch:ID" (its on/off GtkSwitch). */
GtkWidget *bln_rules_editor_get_widget (BlnRulesEditor *self, const char *name);

/* bln_rules_editor_try_text: runs the enabled rules over @text and returns
 * the sentence the "test-result" row shows (new string). */
char *bln_rules_editor_try_text (BlnRulesEditor *self, const char *text);

G_END_DECLS
