/* rules-editor.c — add, remove and try content rules (see rules-editor.h). */
#include "rules-editor.h"

#include <glib/gi18n-lib.h>

#include "rules.h"
#include "window.h"

struct _BlnRulesEditor
{
  AdwPreferencesGroup parent_instance;

  BlnApplication *app;          /* borrowed: it outlives its windows */
  /* children, owned by the widget tree */
  GtkListBox *rule_list;
  AdwEntryRow *pattern;
  AdwComboRow *kind;
  AdwComboRow *action;
  AdwComboRow *scope;
  GtkSwitch *nocase;
  GtkButton *add;
  AdwEntryRow *test;
  AdwActionRow *test_result;
  GHashTable *remove_buttons;   /* owned: rule id (gint64 *) -> button (borrowed) */
  GHashTable *switches;         /* owned: rule id (gint64 *) -> GtkSwitch (borrowed) */
  guint n_rules;
};

G_DEFINE_FINAL_TYPE (BlnRulesEditor, bln_rules_editor, ADW_TYPE_PREFERENCES_GROUP)

/* The choices of the three combo rows, in the order of the enums. */
static const char *const kind_labels[] = { N_("Word or phrase"), N_("Regular expression"), NULL };
static const char *const action_labels[] = { N_("Block"), N_("Mask with *"), N_("Only log"),
                                             NULL };
static const char *const scope_labels[] = { N_("Requests"), N_("Answers"),
                                             N_("Requests and answers"), NULL };

static const char *
action_label (BlnRuleAction action)
{
  return (guint) action < 3 ? _(action_labels[action]) : "?";
}

static const char *
scope_label (BlnRuleScope scope)
{
  switch (scope)
    {
    case BLN_RULE_INPUT:
      return _(scope_labels[0]);
    case BLN_RULE_OUTPUT:
      return _(scope_labels[1]);
    case BLN_RULE_BOTH:
    default:
      return _(scope_labels[2]);
    }
}

static void
remove_clicked (GtkButton *button, BlnRulesEditor *self)
{
  gint64 id = *(gint64 *) g_object_get_data (G_OBJECT (button), "rule-id");
  BlnDb *db = bln_application_db (self->app);
  g_autoptr (GError) error = NULL;

  if (!db)
    return;
  if (!bln_rules_remove (db, id, &error))
    {
      g_autofree char *msg = g_strdup_printf (_("Not removed: %s"), error->message);
      bln_toast (GTK_WIDGET (self), msg);
    }
  else
    bln_toast (GTK_WIDGET (self), _("Rule removed"));
  bln_rules_editor_reload (self);
}

static void
enabled_changed (GtkSwitch *sw, GParamSpec *pspec, BlnRulesEditor *self)
{
  gint64 id = *(gint64 *) g_object_get_data (G_OBJECT (sw), "rule-id");
  BlnDb *db = bln_application_db (self->app);
  g_autoptr (GError) error = NULL;

  if (!db)
    return;
  if (!bln_rules_set_enabled (db, id, gtk_switch_get_active (sw), &error))
    {
      g_autofree char *msg = g_strdup_printf (_("Not saved: %s"), error->message);
      bln_toast (GTK_WIDGET (self), msg);
      bln_rules_editor_reload (self);
    }
}

static GtkWidget *
rule_row (BlnRulesEditor *self, const BlnRule *rule)
{
  GtkWidget *row = adw_action_row_new ();
  GtkWidget *remove = gtk_button_new_from_icon_name ("user-trash-symbolic");
  GtkWidget *sw = gtk_switch_new ();
  g_autofree char *a11y_sw = g_strdup_printf (_("Use the rule “%s”"), rule->pattern);
  g_autofree char *title = g_markup_escape_text (rule->pattern, -1);
  g_autofree char *a11y = g_strdup_printf (_("Remove the rule “%s”"), rule->pattern);
  GString *sub = g_string_new (NULL);
  g_autofree char *sub_m = NULL;
  gint64 *key = g_new (gint64, 1);

  g_string_append (sub, rule->kind == BLN_RULE_REGEX ? _("Regular expression")
                                                     : _("Word or phrase"));
  g_string_append_printf (sub, " · %s · %s", action_label (rule->action),
                          scope_label (rule->scope));
  if (rule->nocase)
    g_string_append_printf (sub, " · %s", _("any letter case"));
  if (rule->label && *rule->label)
    g_string_append_printf (sub, " · %s", rule->label);
  sub_m = g_markup_escape_text (sub->str, -1);
  g_string_free (sub, TRUE);

  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (row), sub_m);
  gtk_widget_add_css_class (row, "monospace-title");
  gtk_widget_set_valign (remove, GTK_ALIGN_CENTER);
  gtk_widget_add_css_class (remove, "flat");
  gtk_widget_set_tooltip_text (remove, _("Remove Rule"));
  gtk_accessible_update_property (GTK_ACCESSIBLE (remove), GTK_ACCESSIBLE_PROPERTY_LABEL, a11y,
                                  -1);
  *key = rule->id;
  g_object_set_data_full (G_OBJECT (remove), "rule-id", g_memdup2 (key, sizeof *key), g_free);
  g_signal_connect (remove, "clicked", G_CALLBACK (remove_clicked), self);
  gtk_switch_set_active (GTK_SWITCH (sw), rule->enabled);
  gtk_widget_set_valign (sw, GTK_ALIGN_CENTER);
  gtk_widget_set_tooltip_text (sw, _("Use this rule"));
  gtk_accessible_update_property (GTK_ACCESSIBLE (sw), GTK_ACCESSIBLE_PROPERTY_LABEL, a11y_sw,
                                  -1);
  g_object_set_data_full (G_OBJECT (sw), "rule-id", g_memdup2 (key, sizeof *key), g_free);
  g_signal_connect (sw, "notify::active", G_CALLBACK (enabled_changed), self);
  adw_action_row_add_suffix (ADW_ACTION_ROW (row), sw);
  adw_action_row_add_suffix (ADW_ACTION_ROW (row), remove);
  g_hash_table_insert (self->switches, g_memdup2 (key, sizeof *key), sw);
  g_hash_table_insert (self->remove_buttons, key, remove);
  return row;
}

void
bln_rules_editor_reload (BlnRulesEditor *self)
{
  BlnDb *db;
  GtkWidget *child;
  g_autoptr (GPtrArray) rules = NULL;
  g_autoptr (GError) error = NULL;

  g_return_if_fail (BLN_IS_RULES_EDITOR (self));
  g_hash_table_remove_all (self->remove_buttons);
  g_hash_table_remove_all (self->switches);
  while ((child = gtk_widget_get_first_child (GTK_WIDGET (self->rule_list))))
    gtk_list_box_remove (self->rule_list, child);
  self->n_rules = 0;
  db = bln_application_db (self->app);
  if (!db)
    return;
  rules = bln_rules_list (db, &error);
  if (!rules)
    {
      g_autofree char *msg = g_strdup_printf (_("Cannot read the rules: %s"), error->message);
      bln_toast (GTK_WIDGET (self), msg);
      return;
    }
  for (guint i = 0; i < rules->len; i++)
    gtk_list_box_append (self->rule_list, rule_row (self, rules->pdata[i]));
  self->n_rules = rules->len;
}

static void
add_clicked (GtkButton *button, BlnRulesEditor *self)
{
  BlnDb *db = bln_application_db (self->app);
  static const BlnRuleScope scopes[] = { BLN_RULE_INPUT, BLN_RULE_OUTPUT, BLN_RULE_BOTH };
  g_autofree char *pattern = g_strdup (gtk_editable_get_text (GTK_EDITABLE (self->pattern)));
  BlnRule rule = { 0 };
  g_autoptr (GError) error = NULL;
  guint kind = adw_combo_row_get_selected (self->kind);
  guint action = adw_combo_row_get_selected (self->action);
  guint scope = adw_combo_row_get_selected (self->scope);

  if (!db)
    return;
  rule.kind = kind == 1 ? BLN_RULE_REGEX : BLN_RULE_WORD;
  rule.pattern = pattern;
  rule.action = action < 3 ? (BlnRuleAction) action : BLN_RULE_BLOCK;
  rule.scope = scopes[scope < 3 ? scope : 2];
  rule.nocase = gtk_switch_get_active (self->nocase);
  rule.enabled = TRUE;
  if (bln_rules_add (db, &rule, &error) == 0)
    {
      g_autofree char *msg = g_strdup_printf (_("Not added: %s"), error->message);
      bln_toast (GTK_WIDGET (self), msg);
      return;
    }
  gtk_editable_set_text (GTK_EDITABLE (self->pattern), "");
  bln_rules_editor_reload (self);
}

static void
pattern_changed (GtkEditable *editable, BlnRulesEditor *self)
{
  gtk_widget_set_sensitive (GTK_WIDGET (self->add), *gtk_editable_get_text (editable) != '\0');
}

char *
bln_rules_editor_try_text (BlnRulesEditor *self, const char *text)
{
  BlnDb *db;
  g_autoptr (GPtrArray) rules = NULL;
  g_autoptr (BlnRuleSet) set = bln_rule_set_new ();
  g_autoptr (GArray) matches = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *masked = NULL;
  gboolean blocks = FALSE, masks = FALSE;
  GString *out;

  g_return_val_if_fail (BLN_IS_RULES_EDITOR (self), NULL);
  db = bln_application_db (self->app);
  if (!db)
    return g_strdup (_("The settings database is not open."));
  rules = bln_rules_list (db, &error);
  if (!rules)
    return g_strdup_printf (_("Cannot read the rules: %s"), error->message);
  for (guint i = 0; i < rules->len; i++)
    {
      BlnRule *r = rules->pdata[i];
      if (r->enabled && !bln_rule_set_add (set, r, NULL))
        g_debug ("rule %" G_GINT64_FORMAT " does not compile", r->id);
    }
  matches = bln_rule_set_scan (set, text, -1);
  if (matches->len == 0)
    return g_strdup (_("No rule matches this text."));

  out = g_string_new (NULL);
  for (guint i = 0; i < matches->len; i++)
    {
      const BlnRuleMatch *m = &g_array_index (matches, BlnRuleMatch, i);
      const BlnRule *r = bln_rule_set_get_rule (set, m->rule_index);
      g_autofree char *piece = g_strndup (text + m->start, m->end - m->start);

      blocks = blocks || m->action == BLN_RULE_BLOCK;
      masks = masks || m->action == BLN_RULE_MASK;
      if (i > 0)
        g_string_append (out, "; ");
      /* TRANSLATORS: a rule match: the matched text, the rule, its action. */
      g_string_append_printf (out, _("“%s” matches “%s” (%s)"), piece, r->pattern,
                              action_label (m->action));
    }
  g_string_append (out, ". ");
  if (blocks)
    g_string_append (out, _("The request would be refused."));
  else if (masks)
    {
      masked = bln_rule_mask_text (text, -1, matches);
      g_string_append_printf (out, _("Masked: %s"), masked);
    }
  else
    g_string_append (out, _("Only logged."));
  return g_string_free (out, FALSE);
}

static void
test_applied (AdwEntryRow *row, BlnRulesEditor *self)
{
  g_autofree char *result = bln_rules_editor_try_text (
    self, gtk_editable_get_text (GTK_EDITABLE (row)));
  g_autofree char *markup = g_markup_escape_text (result, -1);

  adw_action_row_set_subtitle (self->test_result, markup);
}

guint
bln_rules_editor_n_rules (BlnRulesEditor *self)
{
  g_return_val_if_fail (BLN_IS_RULES_EDITOR (self), 0);
  return self->n_rules;
}

GtkWidget *
bln_rules_editor_get_widget (BlnRulesEditor *self, const char *name)
{
  static const struct { const char *name; gsize offset; } fields[] = {
    { "pattern", G_STRUCT_OFFSET (BlnRulesEditor, pattern) },
    { "kind", G_STRUCT_OFFSET (BlnRulesEditor, kind) },
    { "action", G_STRUCT_OFFSET (BlnRulesEditor, action) },
    { "scope", G_STRUCT_OFFSET (BlnRulesEditor, scope) },
    { "nocase", G_STRUCT_OFFSET (BlnRulesEditor, nocase) },
    { "add", G_STRUCT_OFFSET (BlnRulesEditor, add) },
    { "test", G_STRUCT_OFFSET (BlnRulesEditor, test) },
    { "test-result", G_STRUCT_OFFSET (BlnRulesEditor, test_result) },
  };

  g_return_val_if_fail (BLN_IS_RULES_EDITOR (self), NULL);
  if (g_str_has_prefix (name, "remove:"))
    {
      gint64 id = g_ascii_strtoll (name + 7, NULL, 10);
      return g_hash_table_lookup (self->remove_buttons, &id);
    }
  if (g_str_has_prefix (name, "switch:"))
    {
      gint64 id = g_ascii_strtoll (name + 7, NULL, 10);
      return g_hash_table_lookup (self->switches, &id);
    }
  for (guint i = 0; i < G_N_ELEMENTS (fields); i++)
    if (g_str_equal (fields[i].name, name))
      return G_STRUCT_MEMBER (GtkWidget *, self, fields[i].offset);
  return NULL;
}

static void
bln_rules_editor_finalize (GObject *object)
{
  BlnRulesEditor *self = BLN_RULES_EDITOR (object);

  g_clear_pointer (&self->remove_buttons, g_hash_table_unref);
  g_clear_pointer (&self->switches, g_hash_table_unref);
  G_OBJECT_CLASS (bln_rules_editor_parent_class)->finalize (object);
}

static void
bln_rules_editor_class_init (BlnRulesEditorClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = bln_rules_editor_finalize;
}

static AdwComboRow *
combo_row (GtkListBox *list, const char *title, const char *const *labels, guint selected)
{
  GtkWidget *row = adw_combo_row_new ();
  g_autoptr (GtkStringList) model = gtk_string_list_new (NULL);

  for (guint i = 0; labels[i]; i++)
    gtk_string_list_append (model, _(labels[i]));
  adw_combo_row_set_model (ADW_COMBO_ROW (row), G_LIST_MODEL (model));
  adw_combo_row_set_selected (ADW_COMBO_ROW (row), selected);
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
  gtk_list_box_append (list, row);
  return ADW_COMBO_ROW (row);
}

static GtkListBox *
boxed_list (void)
{
  GtkListBox *list = GTK_LIST_BOX (gtk_list_box_new ());

  gtk_list_box_set_selection_mode (list, GTK_SELECTION_NONE);
  gtk_widget_add_css_class (GTK_WIDGET (list), "boxed-list");
  return list;
}

static void
bln_rules_editor_init (BlnRulesEditor *self)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 18);
  GtkWidget *placeholder;
  GtkListBox *form = boxed_list ();
  GtkListBox *trial = boxed_list ();
  GtkWidget *row;

  self->remove_buttons = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  self->switches = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  adw_preferences_group_set_title (ADW_PREFERENCES_GROUP (self), _("Content Rules"));
  adw_preferences_group_set_description (
    ADW_PREFERENCES_GROUP (self),
    _("Words and regular expressions checked on requests and answers. A matching request is "
      "refused (block), its matches replaced by stars (mask), or only noted in the audit log."));

  /* The stored rules. */
  self->rule_list = boxed_list ();
  placeholder = gtk_label_new (_("No rules yet"));
  gtk_widget_add_css_class (placeholder, "dim-label");
  gtk_widget_set_margin_top (placeholder, 12);
  gtk_widget_set_margin_bottom (placeholder, 12);
  gtk_list_box_set_placeholder (self->rule_list, placeholder);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->rule_list),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, _("Content rules"), -1);
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (self->rule_list));

  /* The form. */
  self->pattern = ADW_ENTRY_ROW (adw_entry_row_new ());
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->pattern), _("New rule: word or pattern"));
  gtk_list_box_append (form, GTK_WIDGET (self->pattern));
  self->kind = combo_row (form, _("Kind"), kind_labels, 0);
  self->action = combo_row (form, _("Action"), action_labels, 0);
  self->scope = combo_row (form, _("Checked on"), scope_labels, 2);
  row = adw_action_row_new ();
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), _("Ignore letter case"));
  self->nocase = GTK_SWITCH (gtk_switch_new ());
  gtk_switch_set_active (self->nocase, TRUE);
  gtk_widget_set_valign (GTK_WIDGET (self->nocase), GTK_ALIGN_CENTER);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->nocase), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _("Ignore letter case"), -1);
  adw_action_row_add_suffix (ADW_ACTION_ROW (row), GTK_WIDGET (self->nocase));
  adw_action_row_set_activatable_widget (ADW_ACTION_ROW (row), GTK_WIDGET (self->nocase));
  gtk_list_box_append (form, row);
  row = adw_action_row_new ();
  self->add = GTK_BUTTON (gtk_button_new_with_mnemonic (_("_Add Rule")));
  gtk_widget_add_css_class (GTK_WIDGET (self->add), "suggested-action");
  gtk_widget_set_valign (GTK_WIDGET (self->add), GTK_ALIGN_CENTER);
  gtk_widget_set_sensitive (GTK_WIDGET (self->add), FALSE);
  adw_action_row_add_suffix (ADW_ACTION_ROW (row), GTK_WIDGET (self->add));
  gtk_list_box_append (form, row);
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (form));

  /* Trying a text. */
  self->test = ADW_ENTRY_ROW (adw_entry_row_new ());
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->test), _("Try a text"));
  adw_entry_row_set_show_apply_button (self->test, TRUE);
  gtk_list_box_append (trial, GTK_WIDGET (self->test));
  self->test_result = ADW_ACTION_ROW (adw_action_row_new ());
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->test_result), _("Result"));
  adw_action_row_set_subtitle (self->test_result,
                               _("Type a text and press Enter to see which rules match it."));
  gtk_list_box_append (trial, GTK_WIDGET (self->test_result));
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (trial));

  adw_preferences_group_add (ADW_PREFERENCES_GROUP (self), box);
  g_signal_connect (self->pattern, "changed", G_CALLBACK (pattern_changed), self);
  g_signal_connect (self->pattern, "entry-activated", G_CALLBACK (add_clicked), self);
  g_signal_connect (self->add, "clicked", G_CALLBACK (add_clicked), self);
  g_signal_connect (self->test, "apply", G_CALLBACK (test_applied), self);
  g_signal_connect (self->test, "entry-activated", G_CALLBACK (test_applied), self);
}

BlnRulesEditor *
bln_rules_editor_new (BlnApplication *app)
{
  BlnRulesEditor *self = g_object_new (BLN_TYPE_RULES_EDITOR, NULL);

  self->app = app;
  bln_rules_editor_reload (self);
  return self;
}
