/* audit-view.c — the audit log viewer (see audit-view.h). */
#include "audit-view.h"

#include <string.h>
#include <glib/gi18n-lib.h>
#include <json-glib/json-glib.h>

#include "window.h"

struct _BlnAuditView
{
  AdwPreferencesGroup parent_instance;

  BlnApplication *app;          /* borrowed: it outlives its windows */
  GtkSearchEntry *search;       /* children, owned by the widget tree */
  GtkListBox *list;
  GtkButton *refresh;
  GtkButton *export_jsonl;
  GtkButton *export_csv;
  GtkFileChooserNative *chooser; /* owned while the dialog is open */
  GCancellable *cancellable;    /* owned: exports in flight */
  GStrv words;                  /* owned: the search, case-folded, split at spaces */
  guint n_records;
};

G_DEFINE_FINAL_TYPE (BlnAuditView, bln_audit_view, ADW_TYPE_PREFERENCES_GROUP)

/* Everything a search may match in @rec, case-folded (new string). */
static char *
haystack (const BlnAuditRecord *rec)
{
  g_autofree char *text = g_strdup_printf ("%s\n%s\n%s\n%s\nkey:%" G_GINT64_FORMAT "\n%s\n%s\n"
                                           "%s\n%s",
                                           rec->model ? rec->model : "",
                                           rec->endpoint ? rec->endpoint : "",
                                           rec->client ? rec->client : "",
                                           rec->request_id ? rec->request_id : "",
                                           rec->key_id,
                                           rec->finish_reason ? rec->finish_reason : "",
                                           rec->verdicts ? rec->verdicts : "",
                                           rec->prompt ? rec->prompt : "",
                                           rec->completion ? rec->completion : "");

  return g_utf8_casefold (text, -1);
}

static gboolean
row_matches (BlnAuditView *self, GtkListBoxRow *row)
{
  const char *hay = g_object_get_data (G_OBJECT (row), "haystack");

  if (!hay)
    return TRUE;        /* not a record row */
  for (guint i = 0; self->words && self->words[i]; i++)
    if (*self->words[i] && !strstr (hay, self->words[i]))
      return FALSE;
  return TRUE;
}

static gboolean
filter_row (GtkListBoxRow *row, gpointer user_data)
{
  return row_matches (user_data, row);
}

static void
search_changed (GtkSearchEntry *entry, BlnAuditView *self)
{
  g_autofree char *folded = g_utf8_casefold (gtk_editable_get_text (GTK_EDITABLE (entry)), -1);

  g_clear_pointer (&self->words, g_strfreev);
  self->words = g_strsplit_set (g_strstrip (folded), " \t", -1);
  gtk_list_box_invalidate_filter (self->list);
}

/* A short summary of the verdicts JSON array: "2 rule matches" or "". */
static char *
verdict_summary (const char *verdicts)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonNode *root;
  guint n;

  if (!verdicts || !json_parser_load_from_data (parser, verdicts, -1, NULL))
    return g_strdup ("");
  root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_ARRAY (root))
    return g_strdup ("");
  n = json_array_get_length (json_node_get_array (root));
  if (n == 0)
    return g_strdup ("");
  return g_strdup_printf (ngettext ("%u rule match", "%u rule matches", n), n);
}

static GtkWidget *
make_row (const BlnAuditRecord *rec)
{
  GtkWidget *row = adw_action_row_new ();
  g_autoptr (GDateTime) t = g_date_time_new_from_unix_local (rec->time_us / G_USEC_PER_SEC);
  g_autofree char *when = t ? g_date_time_format (t, "%Y-%m-%d %H:%M:%S") : g_strdup ("?");
  g_autofree char *key = rec->key_id > 0 ? g_strdup_printf (_("key %lld"),
                                                            (long long) rec->key_id)
                                         : g_strdup (_("no key"));
  g_autofree char *verdicts = verdict_summary (rec->verdicts);
  g_autofree char *title = NULL;
  g_autofree char *subtitle = NULL;
  g_autofree char *title_m = NULL;
  g_autofree char *subtitle_m = NULL;

  title = g_strdup_printf ("%s  ·  %s  ·  %s", when,
                           rec->model && *rec->model ? rec->model : "—",
                           rec->endpoint && *rec->endpoint ? rec->endpoint : "—");
  /* TRANSLATORS: one audit record: the client, the API key, the prompt and
   * completion token counts, time to first token, total time, how it ended. */
  subtitle = g_strdup_printf (_("%s, %s, %lld + %lld tokens, first token %.0f ms, %.0f ms in "
                                "all, %s"),
                              rec->client && *rec->client ? rec->client : "—", key,
                              (long long) rec->prompt_tokens,
                              (long long) rec->completion_tokens, rec->ttft_ms,
                              rec->total_ms,
                              rec->finish_reason && *rec->finish_reason ? rec->finish_reason
                                                                        : "—");
  if (*verdicts)
    {
      char *with = g_strconcat (subtitle, " · ", verdicts, NULL);
      g_free (subtitle);
      subtitle = with;
    }
  /* Rows read their titles as Pango markup: escape what came from requests. */
  title_m = g_markup_escape_text (title, -1);
  subtitle_m = g_markup_escape_text (subtitle, -1);
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title_m);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (row), subtitle_m);
  adw_action_row_set_subtitle_lines (ADW_ACTION_ROW (row), 2);
  if (rec->prompt && *rec->prompt)
    gtk_widget_set_tooltip_text (row, rec->prompt);
  g_object_set_data_full (G_OBJECT (row), "haystack", haystack (rec), g_free);
  return row;
}

void
bln_audit_view_refresh (BlnAuditView *self)
{
  BlnDb *db;
  GtkWidget *child;
  g_autoptr (GPtrArray) records = NULL;
  g_autoptr (GError) error = NULL;

  g_return_if_fail (BLN_IS_AUDIT_VIEW (self));
  while ((child = gtk_widget_get_first_child (GTK_WIDGET (self->list))))
    gtk_list_box_remove (self->list, child);
  self->n_records = 0;
  db = bln_application_db (self->app);
  if (!db)
    return;
  records = bln_audit_tail (db, BLN_AUDIT_VIEW_MAX_ROWS, &error);
  if (!records)
    {
      g_autofree char *msg = g_strdup_printf (_("Cannot read the audit log: %s"),
                                              error->message);
      bln_toast (GTK_WIDGET (self), msg);
      return;
    }
  /* bln_audit_tail gives the oldest first; show the newest on top. */
  for (guint i = records->len; i > 0; i--)
    gtk_list_box_append (self->list, make_row (records->pdata[i - 1]));
  self->n_records = records->len;
}

/* ---- export ------------------------------------------------------------- */

typedef struct {
  char *db_path;
  char *path;
  BlnAuditFormat format;
} ExportJob;

static void
export_job_free (gpointer data)
{
  ExportJob *job = data;

  g_free (job->db_path);
  g_free (job->path);
  g_free (job);
}

static void
export_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  ExportJob *job = data;
  g_autoptr (BlnDb) db = NULL;
  GError *error = NULL;

  /* A BlnDb is used by one thread at a time: this one opens its own. */
  db = bln_db_open (job->db_path, &error);
  if (!db || !bln_audit_export (db, job->path, job->format, 0, &error))
    g_task_return_error (task, error);
  else
    g_task_return_boolean (task, TRUE);
}

void
bln_audit_view_export_async (BlnAuditView *self, GFile *file, BlnAuditFormat format,
                             GCancellable *cancellable, GAsyncReadyCallback callback,
                             gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (self, cancellable, callback, user_data);
  BlnDb *db = bln_application_db (self->app);
  ExportJob *job;

  g_task_set_source_tag (task, bln_audit_view_export_async);
  if (!db || !g_file_peek_path (file))
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               db ? _("Choose a local file to export to.")
                                  : _("The settings database is not open."));
      return;
    }
  job = g_new0 (ExportJob, 1);
  job->db_path = g_strdup (bln_db_path (db));
  job->path = g_strdup (g_file_peek_path (file));
  job->format = format;
  g_task_set_task_data (task, job, export_job_free);
  g_task_run_in_thread (task, export_thread);
}

gboolean
bln_audit_view_export_finish (BlnAuditView *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
exported (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = user_data;

  if (!bln_audit_view_export_finish (BLN_AUDIT_VIEW (source), result, &error))
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        bln_error_dialog (GTK_WIDGET (source), _("The audit log was not exported"),
                          error->message);
    }
  else
    {
      g_autofree char *msg = g_strdup_printf (_("Audit log exported to %s"), path);
      bln_toast (GTK_WIDGET (source), msg);
    }
}

static void
chooser_response (GtkNativeDialog *dialog, int response, BlnAuditView *self)
{
  BlnAuditFormat format = GPOINTER_TO_INT (g_object_get_data (G_OBJECT (dialog), "format"));

  if (response == GTK_RESPONSE_ACCEPT)
    {
      g_autoptr (GFile) file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));
      if (file)
        bln_audit_view_export_async (self, file, format, self->cancellable, exported,
                                     g_file_get_parse_name (file));
    }
  gtk_native_dialog_destroy (dialog);
  g_clear_object (&self->chooser);
}

static void
choose_file (BlnAuditView *self, BlnAuditFormat format)
{
  GtkRoot *root = gtk_widget_get_root (GTK_WIDGET (self));
  g_autoptr (GtkFileFilter) filter = gtk_file_filter_new ();

  if (self->chooser)
    return;
  self->chooser = gtk_file_chooser_native_new (_("Export Audit Log"),
                                               GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL,
                                               GTK_FILE_CHOOSER_ACTION_SAVE, _("_Export"),
                                               _("_Cancel"));
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (self->chooser), TRUE);
  if (format == BLN_AUDIT_CSV)
    {
      gtk_file_filter_set_name (filter, _("CSV files"));
      gtk_file_filter_add_suffix (filter, "csv");
      gtk_file_chooser_set_current_name (GTK_FILE_CHOOSER (self->chooser), "baleen-audit.csv");
    }
  else
    {
      gtk_file_filter_set_name (filter, _("JSON Lines files"));
      gtk_file_filter_add_suffix (filter, "jsonl");
      gtk_file_chooser_set_current_name (GTK_FILE_CHOOSER (self->chooser), "baleen-audit.jsonl");
    }
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (self->chooser), filter);
  g_object_set_data (G_OBJECT (self->chooser), "format", GINT_TO_POINTER (format));
  g_signal_connect (self->chooser, "response", G_CALLBACK (chooser_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (self->chooser));
}

static void
export_jsonl_clicked (GtkButton *button, BlnAuditView *self)
{
  choose_file (self, BLN_AUDIT_JSONL);
}

static void
export_csv_clicked (GtkButton *button, BlnAuditView *self)
{
  choose_file (self, BLN_AUDIT_CSV);
}

static void
refresh_clicked (GtkButton *button, BlnAuditView *self)
{
  bln_audit_view_refresh (self);
}

/* ---- object ------------------------------------------------------------- */

guint
bln_audit_view_n_records (BlnAuditView *self)
{
  g_return_val_if_fail (BLN_IS_AUDIT_VIEW (self), 0);
  return self->n_records;
}

guint
bln_audit_view_n_shown (BlnAuditView *self)
{
  guint n = 0;

  g_return_val_if_fail (BLN_IS_AUDIT_VIEW (self), 0);
  for (GtkWidget *c = gtk_widget_get_first_child (GTK_WIDGET (self->list)); c;
       c = gtk_widget_get_next_sibling (c))
    if (GTK_IS_LIST_BOX_ROW (c) && g_object_get_data (G_OBJECT (c), "haystack") &&
        row_matches (self, GTK_LIST_BOX_ROW (c)))
      n++;
  return n;
}

GtkWidget *
bln_audit_view_get_widget (BlnAuditView *self, const char *name)
{
  g_return_val_if_fail (BLN_IS_AUDIT_VIEW (self), NULL);
  if (g_str_equal (name, "search"))
    return GTK_WIDGET (self->search);
  if (g_str_equal (name, "list"))
    return GTK_WIDGET (self->list);
  if (g_str_equal (name, "refresh"))
    return GTK_WIDGET (self->refresh);
  if (g_str_equal (name, "export-jsonl"))
    return GTK_WIDGET (self->export_jsonl);
  if (g_str_equal (name, "export-csv"))
    return GTK_WIDGET (self->export_csv);
  return NULL;
}

static void
mapped (GtkWidget *widget, BlnAuditView *self)
{
  bln_audit_view_refresh (self);
}

static void
bln_audit_view_dispose (GObject *object)
{
  BlnAuditView *self = BLN_AUDIT_VIEW (object);

  g_cancellable_cancel (self->cancellable);
  if (self->chooser)
    gtk_native_dialog_destroy (GTK_NATIVE_DIALOG (self->chooser));
  g_clear_object (&self->chooser);
  G_OBJECT_CLASS (bln_audit_view_parent_class)->dispose (object);
}

static void
bln_audit_view_finalize (GObject *object)
{
  BlnAuditView *self = BLN_AUDIT_VIEW (object);

  g_clear_object (&self->cancellable);
  g_strfreev (self->words);
  G_OBJECT_CLASS (bln_audit_view_parent_class)->finalize (object);
}

static void
bln_audit_view_class_init (BlnAuditViewClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = bln_audit_view_dispose;
  G_OBJECT_CLASS (klass)->finalize = bln_audit_view_finalize;
}

static GtkButton *
header_button (GtkBox *box, const char *icon, const char *label, const char *tooltip)
{
  GtkWidget *b = icon ? gtk_button_new_from_icon_name (icon) : gtk_button_new_with_label (label);

  gtk_widget_set_tooltip_text (b, tooltip);
  gtk_accessible_update_property (GTK_ACCESSIBLE (b), GTK_ACCESSIBLE_PROPERTY_LABEL, tooltip, -1);
  gtk_widget_add_css_class (b, "flat");
  gtk_box_append (box, b);
  return GTK_BUTTON (b);
}

static void
bln_audit_view_init (BlnAuditView *self)
{
  GtkWidget *suffix = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 6);
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 12);
  GtkWidget *placeholder;

  self->cancellable = g_cancellable_new ();
  adw_preferences_group_set_title (ADW_PREFERENCES_GROUP (self), _("Recent Requests"));
  adw_preferences_group_set_description (ADW_PREFERENCES_GROUP (self),
                                         _("The newest entries of the audit log. Type words to "
                                           "keep the entries that contain all of them."));
  self->refresh = header_button (GTK_BOX (suffix), "view-refresh-symbolic", NULL,
                                 _("Read the audit log again"));
  self->export_jsonl = header_button (GTK_BOX (suffix), NULL, _("JSON Lines…"),
                                      _("Export the audit log as JSON Lines"));
  self->export_csv = header_button (GTK_BOX (suffix), NULL, _("CSV…"),
                                    _("Export the audit log as CSV"));
  adw_preferences_group_set_header_suffix (ADW_PREFERENCES_GROUP (self), suffix);

  self->search = GTK_SEARCH_ENTRY (gtk_search_entry_new ());
  g_object_set (self->search, "placeholder-text",
                _("Search text, model, endpoint, or key:N for API key N"), NULL);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->search), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _("Search the audit log"), -1);
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (self->search));

  self->list = GTK_LIST_BOX (gtk_list_box_new ());
  gtk_list_box_set_selection_mode (self->list, GTK_SELECTION_NONE);
  gtk_widget_add_css_class (GTK_WIDGET (self->list), "boxed-list");
  placeholder = gtk_label_new (_("No requests recorded. The server writes one entry per API "
                                 "request while the audit log is on."));
  gtk_label_set_wrap (GTK_LABEL (placeholder), TRUE);
  gtk_widget_add_css_class (placeholder, "dim-label");
  gtk_widget_set_margin_top (placeholder, 12);
  gtk_widget_set_margin_bottom (placeholder, 12);
  gtk_widget_set_margin_start (placeholder, 12);
  gtk_widget_set_margin_end (placeholder, 12);
  gtk_list_box_set_placeholder (self->list, placeholder);
  gtk_list_box_set_filter_func (self->list, filter_row, self, NULL);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self->list), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _("Audit log entries"), -1);
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (self->list));
  adw_preferences_group_add (ADW_PREFERENCES_GROUP (self), box);

  g_signal_connect (self->search, "search-changed", G_CALLBACK (search_changed), self);
  g_signal_connect (self->refresh, "clicked", G_CALLBACK (refresh_clicked), self);
  g_signal_connect (self->export_jsonl, "clicked", G_CALLBACK (export_jsonl_clicked), self);
  g_signal_connect (self->export_csv, "clicked", G_CALLBACK (export_csv_clicked), self);
  g_signal_connect (self, "map", G_CALLBACK (mapped), self);
}

BlnAuditView *
bln_audit_view_new (BlnApplication *app)
{
  BlnAuditView *self = g_object_new (BLN_TYPE_AUDIT_VIEW, NULL);

  self->app = app;
  return self;
}
