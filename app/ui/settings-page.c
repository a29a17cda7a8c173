/* settings-page.c — rows generated from the settings table (see settings-page.h). */
#include "settings-page.h"

#include <glib/gi18n-lib.h>

#include "baleen-config.h"
#include "window.h"

struct _BlnSettingsPage
{
  AdwBin parent_instance;

  BlnApplication *app;        /* borrowed: it outlives its windows */
  BlnUiSettings *settings;    /* borrowed from the app */
  GHashTable *editors;        /* key -> widget (borrowed) */
  AdwPreferencesPage *page;   /* the child (borrowed) */
  GtkWidget *top_anchor;      /* the group extra groups go after (borrowed), or NULL */
  gulong changed_handler;
  gboolean syncing;
  /* live status */
  AdwActionRow *backend_row;
  AdwActionRow *model_row;
  AdwActionRow *queue_row;
  guint tick;
};

G_DEFINE_FINAL_TYPE (BlnSettingsPage, bln_settings_page, ADW_TYPE_BIN)

/* Translated titles for the group of each key prefix. */
static const char *
section_title (const char *key)
{
  if (g_str_has_prefix (key, "cache."))
    return _("Caches");
  if (g_str_has_prefix (key, "perf."))
    return _("Engine");
  if (g_str_has_prefix (key, "auth.") || g_str_has_prefix (key, "privacy."))
    return _("Access and Privacy");
  if (g_str_has_prefix (key, "ratelimit."))
    return _("Rate Limits");
  if (g_str_has_prefix (key, "moderation."))
    return _("Output Moderation");
  if (g_str_has_prefix (key, "audit."))
    return _("Audit Log");
  return _("Settings");
}

/* Row titles, translated; the key's summary (English, from the table) is
 * the fallback for keys added later. */
static const char *
row_title (const BlnSettingSpec *spec)
{
  static const struct { const char *key; const char *title; } titles[] = {
    { "cache.kv_budget_mb", N_("KV cache budget (MiB)") },
    { "cache.kv_8bit", N_("8-bit KV cache") },
    { "cache.prefix", N_("Prefix cache") },
    { "cache.prefix_mb", N_("Prefix cache size (MiB)") },
    { "cache.sliding_window", N_("Sliding attention window (tokens)") },
    { "cache.session_ttl_s", N_("Session lifetime (seconds)") },
    { "perf.threads", N_("CPU threads") },
    { "perf.context", N_("Context size (tokens)") },
    { "perf.backend", N_("Backend") },
    { "auth.require_key", N_("Require an API key") },
    { "privacy.content", N_("Prompt text in the audit log") },
    { "audit.enabled", N_("Audit log") },
    { "audit.retention_days", N_("Keep entries (days)") },
    { "audit.max_rows", N_("Largest number of entries") },
    { "audit.max_mb", N_("Largest size of the database (MiB)") },
    { "audit.jsonl_path", N_("Also write to a JSON Lines file") },
    { "ratelimit.key_rpm", N_("Requests per minute per key") },
    { "ratelimit.key_tpm", N_("Tokens per minute per key") },
    { "ratelimit.client_rpm", N_("Requests per minute per client") },
    { "ratelimit.client_tpm", N_("Tokens per minute per client") },
    { "ratelimit.redis_url", N_("Shared limits through Redis (URL)") },
    { "ratelimit.redis_failure", N_("When Redis is unreachable") },
    { "moderation.output_action", N_("On a blocked reply") },
    { "moderation.regex_window", N_("Pattern look-back (characters)") },
    { "moderation.endpoint", N_("Moderation service URL") },
    { "moderation.model", N_("Moderation model") },
    { "moderation.failure", N_("When the service fails") },
    { "moderation.timeout_s", N_("Service timeout (seconds)") },
  };

  for (guint i = 0; i < G_N_ELEMENTS (titles); i++)
    if (g_str_equal (titles[i].key, spec->key))
      return _(titles[i].title);
  return _(spec->summary);
}

/* When a setting takes effect, or why it does nothing yet. A setting the
 * engine cannot honour is shown but cannot be changed. */
typedef struct {
  const char *key;
  gboolean available;
  const char *note;
} Note;

static const Note notes[] = {
  { "cache.kv_budget_mb", TRUE, N_("Applies when a model is next loaded.") },
  { "cache.prefix", TRUE, N_("Applies when a model is next loaded.") },
  { "cache.prefix_mb", TRUE, N_("Applies when a model is next loaded.") },
  { "cache.kv_8bit", TRUE,
    N_("Applies when a model is next loaded. CPU, llama and qwen2 models: about 3.5 times the "
       "tokens in the same budget, logits within about 1% (other models keep 32-bit rows).") },
  { "cache.sliding_window", TRUE,
    N_("Applies when a model is next loaded. Each token attends to this many recent tokens "
       "only, and older KV blocks are given back (0: the whole context). llama and qwen2 "
       "models; a DeepSeek model, or the one-sequence GPU path, refuses to load with it.") },
  { "cache.session_ttl_s", TRUE,
    N_("Applies when a model is next loaded. Cached prompt prefixes unused this long are "
       "freed (0: kept until memory is needed).") },
  { "perf.threads", TRUE, N_("Applies to the next model loaded after this one is unloaded.") },
  { "perf.context", TRUE, N_("Applies to the next model loaded after this one is unloaded.") },
  { "perf.backend", TRUE, N_("Applies when a model is next loaded.") },
};

static const Note *
find_note (const char *key)
{
  for (guint i = 0; i < G_N_ELEMENTS (notes); i++)
    if (g_str_equal (notes[i].key, key))
      return &notes[i];
  return NULL;
}

static void
report (BlnSettingsPage *self, const GError *error)
{
  g_autofree char *msg = g_strdup_printf (_("Not saved: %s"), error->message);

  bln_toast (GTK_WIDGET (self), msg);
}

static void
save (BlnSettingsPage *self, const char *key, const char *text)
{
  g_autoptr (GError) error = NULL;

  if (self->syncing || !self->settings)
    return;
  if (!bln_ui_settings_set_text (self->settings, key, text, &error))
    report (self, error);
}

static void
switch_changed (GtkSwitch *sw, GParamSpec *pspec, BlnSettingsPage *self)
{
  save (self, g_object_get_data (G_OBJECT (sw), "key"),
        gtk_switch_get_active (sw) ? "true" : "false");
}

static void
spin_changed (GtkSpinButton *spin, BlnSettingsPage *self)
{
  const BlnSettingSpec *spec = g_object_get_data (G_OBJECT (spin), "spec");
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (spec->type == BLN_SETTING_INT)
    g_snprintf (buf, sizeof buf, "%.0f", gtk_spin_button_get_value (spin));
  else
    g_ascii_dtostr (buf, sizeof buf, gtk_spin_button_get_value (spin));
  save (self, spec->key, buf);
}

static void
combo_changed (AdwComboRow *row, GParamSpec *pspec, BlnSettingsPage *self)
{
  GtkStringObject *item = adw_combo_row_get_selected_item (row);

  if (item)
    save (self, g_object_get_data (G_OBJECT (row), "key"), gtk_string_object_get_string (item));
}

static void
entry_applied (AdwEntryRow *row, BlnSettingsPage *self)
{
  save (self, g_object_get_data (G_OBJECT (row), "key"),
        gtk_editable_get_text (GTK_EDITABLE (row)));
}

/* Shows the stored value of @key in its editor. */
static void
sync_editor (BlnSettingsPage *self, const char *key)
{
  GtkWidget *w = g_hash_table_lookup (self->editors, key);
  g_autofree char *text = NULL;

  if (!w || !self->settings)
    return;
  text = bln_ui_settings_get_text (self->settings, key);
  if (!text)
    return;
  self->syncing = TRUE;
  if (GTK_IS_SWITCH (w))
    gtk_switch_set_active (GTK_SWITCH (w), g_str_equal (text, "true"));
  else if (GTK_IS_SPIN_BUTTON (w))
    gtk_spin_button_set_value (GTK_SPIN_BUTTON (w), g_ascii_strtod (text, NULL));
  else if (ADW_IS_COMBO_ROW (w))
    {
      GListModel *model = adw_combo_row_get_model (ADW_COMBO_ROW (w));
      for (guint i = 0; i < g_list_model_get_n_items (model); i++)
        {
          g_autoptr (GtkStringObject) s = g_list_model_get_item (model, i);
          if (g_str_equal (gtk_string_object_get_string (s), text))
            adw_combo_row_set_selected (ADW_COMBO_ROW (w), i);
        }
    }
  else if (ADW_IS_ENTRY_ROW (w))
    gtk_editable_set_text (GTK_EDITABLE (w), text);
  self->syncing = FALSE;
}

static void
settings_changed (BlnUiSettings *settings, const char *key, BlnSettingsPage *self)
{
  sync_editor (self, key);
}

static GtkWidget *
make_row (BlnSettingsPage *self, const BlnSettingSpec *spec)
{
  const char *title = row_title (spec);
  const Note *note = find_note (spec->key);
  g_autofree char *summary = note ? g_strdup_printf ("%s — %s", _(spec->summary), _(note->note))
                                  : g_strdup (_(spec->summary));
  GtkWidget *row;
  GtkWidget *editor;

  if (spec->type == BLN_SETTING_STRING && spec->choices)
    {
      g_auto (GStrv) choices = g_strsplit (spec->choices, "|", -1);
      row = adw_combo_row_new ();
      adw_combo_row_set_model (ADW_COMBO_ROW (row),
                               G_LIST_MODEL (gtk_string_list_new ((const char *const *) choices)));
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
      adw_action_row_set_subtitle (ADW_ACTION_ROW (row), summary);
      g_object_set_data (G_OBJECT (row), "key", (gpointer) spec->key);
      g_signal_connect (row, "notify::selected", G_CALLBACK (combo_changed), self);
      editor = row;
    }
  else if (spec->type == BLN_SETTING_STRING)
    {
      row = adw_entry_row_new ();
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
      adw_entry_row_set_show_apply_button (ADW_ENTRY_ROW (row), TRUE);
      g_object_set_data (G_OBJECT (row), "key", (gpointer) spec->key);
      g_signal_connect (row, "apply", G_CALLBACK (entry_applied), self);
      gtk_widget_set_tooltip_text (row, summary);
      editor = row;
    }
  else
    {
      row = adw_action_row_new ();
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
      adw_action_row_set_subtitle (ADW_ACTION_ROW (row), summary);
      if (spec->type == BLN_SETTING_BOOL)
        {
          editor = gtk_switch_new ();
          g_signal_connect (editor, "notify::active", G_CALLBACK (switch_changed), self);
          adw_action_row_set_activatable_widget (ADW_ACTION_ROW (row), editor);
        }
      else
        {
          double step = spec->type == BLN_SETTING_INT ? 1 : 0.1;
          editor = gtk_spin_button_new_with_range (spec->min, spec->max, step);
          gtk_spin_button_set_digits (GTK_SPIN_BUTTON (editor),
                                      spec->type == BLN_SETTING_INT ? 0 : 2);
          g_object_set_data (G_OBJECT (editor), "spec", (gpointer) spec);
          g_signal_connect (editor, "value-changed", G_CALLBACK (spin_changed), self);
        }
      gtk_widget_set_valign (editor, GTK_ALIGN_CENTER);
      g_object_set_data (G_OBJECT (editor), "key", (gpointer) spec->key);
      gtk_accessible_update_property (GTK_ACCESSIBLE (editor),
                                      GTK_ACCESSIBLE_PROPERTY_LABEL, title,
                                      GTK_ACCESSIBLE_PROPERTY_DESCRIPTION, summary, -1);
      adw_action_row_add_suffix (ADW_ACTION_ROW (row), editor);
    }
  if (note && !note->available)
    gtk_widget_set_sensitive (editor, FALSE);
  g_hash_table_insert (self->editors, (gpointer) spec->key, editor);
  return row;
}

static void
add_specs (BlnSettingsPage *self, AdwPreferencesPage *page, const char *const *prefixes,
           const BlnSettingSpec *specs, guint n, GHashTable *groups)
{
  for (guint i = 0; i < n; i++)
    {
      const char *title;
      AdwPreferencesGroup *group;
      gboolean match = FALSE;

      for (guint p = 0; prefixes[p]; p++)
        match = match || g_str_has_prefix (specs[i].key, prefixes[p]);
      if (!match)
        continue;
      title = section_title (specs[i].key);
      group = g_hash_table_lookup (groups, title);
      if (!group)
        {
          group = ADW_PREFERENCES_GROUP (adw_preferences_group_new ());
          adw_preferences_group_set_title (group, title);
          adw_preferences_page_add (page, group);
          g_hash_table_insert (groups, (gpointer) title, group);
        }
      adw_preferences_group_add (group, make_row (self, &specs[i]));
      sync_editor (self, specs[i].key);
    }
}

static void
refresh_status (BlnSettingsPage *self)
{
  BlnEngineWorker *worker = bln_application_worker (self->app);
  g_autofree char *model = NULL;
  g_autofree char *queue = NULL;

  if (!self->backend_row)
    return;
  adw_action_row_set_subtitle (self->backend_row,
                               BALEEN_HAVE_CUDA ? _("CPU, and CUDA when a GPU is present")
                                                : _("CPU (built without CUDA)"));
  if (worker)
    model = g_strdup_printf (_("%s, context of %d tokens"), bln_application_loaded_name (self->app),
                             bln_engine_worker_n_ctx (worker));
  adw_action_row_set_subtitle (self->model_row, model ? model : _("No model loaded"));
  if (worker)
    queue = g_strdup_printf ("%d", bln_engine_worker_queue_length (worker));
  adw_action_row_set_subtitle (self->queue_row, queue ? queue : "—");
}

static gboolean
tick (gpointer user_data)
{
  refresh_status (user_data);
  return G_SOURCE_CONTINUE;
}

static void
bln_settings_page_dispose (GObject *object)
{
  BlnSettingsPage *self = BLN_SETTINGS_PAGE (object);

  g_clear_handle_id (&self->tick, g_source_remove);
  if (self->settings && self->changed_handler)
    g_signal_handler_disconnect (self->settings, self->changed_handler);
  self->changed_handler = 0;
  g_clear_pointer (&self->editors, g_hash_table_unref);
  G_OBJECT_CLASS (bln_settings_page_parent_class)->dispose (object);
}

static void
bln_settings_page_class_init (BlnSettingsPageClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = bln_settings_page_dispose;
}

static void
bln_settings_page_init (BlnSettingsPage *self)
{
  self->editors = g_hash_table_new (g_str_hash, g_str_equal);
}

static AdwActionRow *
status_row (AdwPreferencesGroup *group, const char *title)
{
  GtkWidget *row = adw_action_row_new ();

  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
  adw_preferences_group_add (group, row);
  return ADW_ACTION_ROW (row);
}

BlnSettingsPage *
bln_settings_page_new (BlnApplication *app, const char *const *prefixes,
                       const char *description, gboolean live_status)
{
  BlnSettingsPage *self = g_object_new (BLN_TYPE_SETTINGS_PAGE, NULL);
  AdwPreferencesPage *page = ADW_PREFERENCES_PAGE (adw_preferences_page_new ());
  g_autoptr (GHashTable) groups = g_hash_table_new (g_str_hash, g_str_equal);
  const BlnSettingSpec *specs;
  guint n;

  self->app = app;
  self->settings = bln_application_settings (app);
  if (description)
    {
      AdwPreferencesGroup *intro = ADW_PREFERENCES_GROUP (adw_preferences_group_new ());
      adw_preferences_group_set_description (intro, description);
      adw_preferences_page_add (page, intro);
      self->top_anchor = GTK_WIDGET (intro);
    }
  if (live_status)
    {
      AdwPreferencesGroup *now = ADW_PREFERENCES_GROUP (adw_preferences_group_new ());
      adw_preferences_group_set_title (now, _("Now"));
      adw_preferences_group_set_description (now, _("Measured tokens per second and time to "
                                                    "first token of the last reply are shown "
                                                    "on the Chat page."));
      adw_preferences_page_add (page, now);
      self->backend_row = status_row (now, _("Backend"));
      self->model_row = status_row (now, _("Loaded model"));
      self->queue_row = status_row (now, _("Requests waiting"));
      self->top_anchor = GTK_WIDGET (now);
      refresh_status (self);
      self->tick = g_timeout_add_seconds (1, tick, self);
    }
  if (self->settings)
    {
      specs = bln_ui_settings_specs (&n);
      add_specs (self, page, prefixes, specs, n, groups);
      specs = bln_settings_specs (&n);
      add_specs (self, page, prefixes, specs, n, groups);
      self->changed_handler = g_signal_connect (self->settings, "changed",
                                                G_CALLBACK (settings_changed), self);
    }
  self->page = page;
  adw_bin_set_child (ADW_BIN (self), GTK_WIDGET (page));
  return self;
}

void
bln_settings_page_add_group (BlnSettingsPage *self, AdwPreferencesGroup *group, gboolean at_top)
{
  GtkWidget *parent;

  g_return_if_fail (BLN_IS_SETTINGS_PAGE (self));
  adw_preferences_page_add (self->page, group);
  if (!at_top)
    return;
  /* AdwPreferencesPage 1.2 only appends: move the group up in its box. */
  parent = gtk_widget_get_parent (GTK_WIDGET (group));
  if (GTK_IS_BOX (parent))
    {
      GtkWidget *anchor = self->top_anchor && gtk_widget_get_parent (self->top_anchor) == parent
                            ? self->top_anchor : NULL;
      gtk_box_reorder_child_after (GTK_BOX (parent), GTK_WIDGET (group), anchor);
      self->top_anchor = GTK_WIDGET (group);
    }
}

GtkWidget *
bln_settings_page_get_editor (BlnSettingsPage *self, const char *key)
{
  g_return_val_if_fail (BLN_IS_SETTINGS_PAGE (self), NULL);
  return g_hash_table_lookup (self->editors, key);
}
