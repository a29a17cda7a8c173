/* models-page.c — the Models page (see models-page.h). */
#include "models-page.h"

#include <string.h>
#include <glib/gi18n-lib.h>

#include "baleen-config.h"
#include "hf-convert.h"
#include "window.h"
#if BALEEN_HAVE_CUDA
#include "cuda/cuda.h"
#endif

struct _BlnModelsPage
{
  AdwBin parent_instance;

  BlnApplication *app;      /* borrowed */
  gulong state_handler;
  GHashTable *buttons;      /* "id\nwhat" -> button (borrowed) */
  GCancellable *cancellable; /* the load or import in flight */
  guint pulse_id;
  gint convert_permille;    /* atomic: progress of the conversion in flight */
  char *converted;          /* the file of the last finished conversion */

  /* template children */
  GtkLabel *folder_label;
  GtkLabel *memory_label;
  GtkBox *progress_box;
  GtkLabel *progress_label;
  GtkProgressBar *progress_bar;
  GtkListBox *model_list;
  AdwStatusPage *empty_page;
};

G_DEFINE_FINAL_TYPE (BlnModelsPage, bln_models_page, ADW_TYPE_BIN)

guint64
bln_models_free_memory (gboolean *is_gpu)
{
  g_autofree char *meminfo = NULL;
  guint64 kb = 0;

  if (is_gpu)
    *is_gpu = FALSE;
#if BALEEN_HAVE_CUDA
  if (bln_cuda_available (NULL))
    {
      size_t free_bytes = 0;
      bln_cuda_estimate (0, 0, 0, &free_bytes);
      if (free_bytes > 0)
        {
          if (is_gpu)
            *is_gpu = TRUE;
          return free_bytes;
        }
    }
#endif
  if (g_file_get_contents ("/proc/meminfo", &meminfo, NULL, NULL))
    {
      const char *line = strstr (meminfo, "MemAvailable:");
      if (line)
        kb = g_ascii_strtoull (line + strlen ("MemAvailable:"), NULL, 10);
    }
  return kb * 1024;
}

static void refresh (BlnModelsPage *self);

static void
set_busy (BlnModelsPage *self, const char *what)
{
  gtk_widget_set_visible (GTK_WIDGET (self->progress_box), what != NULL);
  if (what)
    gtk_label_set_text (self->progress_label, what);
}

static gboolean
pulse (gpointer user_data)
{
  BlnModelsPage *self = user_data;

  gtk_progress_bar_pulse (self->progress_bar);
  return G_SOURCE_CONTINUE;
}

static void
stop_progress (BlnModelsPage *self)
{
  g_clear_handle_id (&self->pulse_id, g_source_remove);
  g_clear_object (&self->cancellable);
  set_busy (self, NULL);
}

static void
load_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BlnModelsPage) self = user_data;
  g_autoptr (GError) error = NULL;

  stop_progress (self);
  if (bln_application_load_finish (BLN_APPLICATION (source), result, &error))
    {
      g_autofree char *msg = g_strdup_printf (_("Loaded %s"),
                                              bln_application_loaded_name (self->app));
      bln_toast (GTK_WIDGET (self), msg);
    }
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    bln_toast (GTK_WIDGET (self), _("Loading cancelled."));
  else
    bln_error_dialog (GTK_WIDGET (self), _("The model could not be loaded"),
                      error->message);
  refresh (self);
}

static const char *
row_id (GtkWidget *button)
{
  return g_object_get_data (G_OBJECT (button), "model-id");
}

static void
load_clicked (GtkButton *button, BlnModelsPage *self)
{
  const char *id = row_id (GTK_WIDGET (button));

  if (g_strcmp0 (id, bln_application_loaded_id (self->app)) == 0)
    {
      bln_application_unload (self->app);
      return;
    }
  if (self->cancellable)
    return;
  self->cancellable = g_cancellable_new ();
  set_busy (self, _("Loading…"));
  self->pulse_id = g_timeout_add (100, pulse, self);
  bln_application_load_async (self->app, id, self->cancellable, load_done, g_object_ref (self));
}

static void
default_clicked (GtkButton *button, BlnModelsPage *self)
{
  BlnUiSettings *settings = bln_application_settings (self->app);
  g_autofree char *current = NULL;
  g_autoptr (GError) error = NULL;
  const char *id = row_id (GTK_WIDGET (button));

  if (!settings)
    return;
  current = bln_ui_settings_get_string (settings, "models.default");
  if (!bln_ui_settings_set_text (settings, "models.default",
                                 g_strcmp0 (current, id) == 0 ? "" : id, &error))
    bln_toast (GTK_WIDGET (self), error->message);
  refresh (self);
}

static void
delete_response (AdwMessageDialog *dialog, const char *response, BlnModelsPage *self)
{
  const char *path = g_object_get_data (G_OBJECT (dialog), "path");
  const char *id = g_object_get_data (G_OBJECT (dialog), "model-id");
  g_autoptr (GFile) file = NULL;
  g_autoptr (GError) error = NULL;

  if (g_strcmp0 (response, "delete") != 0)
    return;
  if (g_strcmp0 (id, bln_application_loaded_id (self->app)) == 0)
    bln_application_unload (self->app);
  file = g_file_new_for_path (path);
  /* The trash first, so a mistake can be undone in Files. */
  if (!g_file_trash (file, NULL, &error))
    {
      g_clear_error (&error);
      if (!g_file_delete (file, NULL, &error))
        {
          bln_error_dialog (GTK_WIDGET (self), _("The model could not be deleted"),
                            error->message);
          return;
        }
    }
  bln_application_rescan (self->app);
}

static void
delete_clicked (GtkButton *button, BlnModelsPage *self)
{
  const char *id = row_id (GTK_WIDGET (button));
  const BlnModelEntry *e = bln_model_library_lookup (bln_application_library (self->app), id,
                                                     NULL);
  GtkWidget *dialog;
  g_autofree char *body = NULL;

  if (!e)
    return;
  if (e->format != BLN_MODEL_FORMAT_GGUF)
    {
      bln_error_dialog (GTK_WIDGET (self), _("This model is a folder"),
                        _("Delete Hugging Face model folders with the file manager."));
      return;
    }
  body = g_strdup_printf (_("%s will be moved to the trash."), e->path);
  dialog = adw_message_dialog_new (GTK_WINDOW (gtk_widget_get_root (GTK_WIDGET (self))),
                                   _("Delete this model?"), body);
  adw_message_dialog_add_responses (ADW_MESSAGE_DIALOG (dialog), "cancel", _("_Cancel"),
                                    "delete", _("_Delete"), NULL);
  adw_message_dialog_set_response_appearance (ADW_MESSAGE_DIALOG (dialog), "delete",
                                              ADW_RESPONSE_DESTRUCTIVE);
  g_object_set_data_full (G_OBJECT (dialog), "path", g_strdup (e->path), g_free);
  g_object_set_data_full (G_OBJECT (dialog), "model-id", g_strdup (e->id), g_free);
  g_signal_connect (dialog, "response", G_CALLBACK (delete_response), self);
  gtk_window_present (GTK_WINDOW (dialog));
}

static GtkWidget *
row_button (BlnModelsPage *self, const BlnModelEntry *e, const char *what, const char *label,
            const char *icon, const char *accessible, GCallback cb)
{
  GtkWidget *b = icon ? gtk_button_new_from_icon_name (icon) : gtk_button_new_with_label (label);

  gtk_widget_set_valign (b, GTK_ALIGN_CENTER);
  if (icon)
    {
      gtk_widget_add_css_class (b, "flat");
      gtk_widget_set_tooltip_text (b, accessible);
    }
  gtk_accessible_update_property (GTK_ACCESSIBLE (b), GTK_ACCESSIBLE_PROPERTY_LABEL, accessible,
                                  -1);
  g_object_set_data_full (G_OBJECT (b), "model-id", g_strdup (e->id), g_free);
  g_signal_connect (b, "clicked", cb, self);
  g_hash_table_insert (self->buttons, g_strdup_printf ("%s\n%s", e->id, what), b);
  return b;
}

static GtkWidget *
make_row (BlnModelsPage *self, const BlnModelEntry *e, const char *default_id, guint64 free_mem,
          gboolean is_gpu)
{
  GtkWidget *row = adw_action_row_new ();
  g_autofree char *size = g_format_size (e->size_bytes);
  g_autofree char *subtitle = NULL;
  g_autofree char *ctx = NULL;
  g_autofree char *a11y = NULL;
  gboolean loaded = g_strcmp0 (e->id, bln_application_loaded_id (self->app)) == 0;
  gboolean is_default = g_strcmp0 (e->id, default_id) == 0;

  ctx = e->context_length > 0 ? g_strdup_printf (_("%d context"), e->context_length)
                              : g_strdup (_("context unknown"));
  subtitle = g_strdup_printf ("%s · %s · %s · %s · %s", e->architecture,
                              e->parameter_size ? e->parameter_size : "?",
                              e->quantization ? e->quantization : "?", size, ctx);
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), e->name);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (row), subtitle);
  adw_action_row_set_subtitle_lines (ADW_ACTION_ROW (row), 2);

  /* The weights must fit with room for the KV cache and scratch: warn when
   * the file alone takes more than 90 % of what is free. */
  if (free_mem > 0 && (guint64) e->size_bytes > free_mem / 10 * 9)
    {
      GtkWidget *warn = gtk_image_new_from_icon_name ("dialog-warning-symbolic");
      g_autofree char *free_s = g_format_size (free_mem);
      g_autofree char *tip = g_strdup_printf (is_gpu ? _("May not fit: %s of GPU memory is "
                                                         "free")
                                                     : _("May not fit: %s of memory is "
                                                         "available"), free_s);
      gtk_widget_set_tooltip_text (warn, tip);
      gtk_accessible_update_property (GTK_ACCESSIBLE (warn), GTK_ACCESSIBLE_PROPERTY_LABEL, tip,
                                      -1);
      adw_action_row_add_prefix (ADW_ACTION_ROW (row), warn);
    }
  if (loaded)
    {
      GtkWidget *tag = gtk_label_new (_("Loaded"));
      gtk_widget_add_css_class (tag, "success");
      adw_action_row_add_suffix (ADW_ACTION_ROW (row), tag);
    }
  a11y = g_strdup_printf (loaded ? _("Unload %s") : _("Load %s"), e->name);
  adw_action_row_add_suffix (ADW_ACTION_ROW (row),
                             row_button (self, e, "load", loaded ? _("Unload") : _("Load"), NULL,
                                         a11y, G_CALLBACK (load_clicked)));
  adw_action_row_add_suffix (ADW_ACTION_ROW (row),
                             row_button (self, e, "default", NULL,
                                         is_default ? "starred-symbolic" : "non-starred-symbolic",
                                         is_default ? _("Default model (loaded at start)")
                                                    : _("Set as default model"),
                                         G_CALLBACK (default_clicked)));
  adw_action_row_add_suffix (ADW_ACTION_ROW (row),
                             row_button (self, e, "delete", NULL, "user-trash-symbolic",
                                         _("Delete model"), G_CALLBACK (delete_clicked)));
  return row;
}

static void
refresh (BlnModelsPage *self)
{
  BlnModelLibrary *lib = bln_application_library (self->app);
  BlnUiSettings *settings = bln_application_settings (self->app);
  g_autofree char *dir = NULL;
  g_autofree char *default_id = NULL;
  g_autofree char *folder = NULL;
  g_autofree char *free_s = NULL;
  g_autofree char *mem = NULL;
  GtkWidget *child;
  guint n = lib ? bln_model_library_n_models (lib) : 0;
  gboolean is_gpu;
  guint64 free_mem = bln_models_free_memory (&is_gpu);

  dir = settings ? bln_ui_settings_models_dir (settings) : g_strdup ("");
  folder = g_strdup_printf (_("Models folder: %s"), dir);
  gtk_label_set_text (self->folder_label, folder);
  free_s = g_format_size (free_mem);
  mem = free_mem == 0 ? g_strdup (_("Free memory unknown."))
        : is_gpu ? g_strdup_printf (_("GPU: %s free. Models marked with a warning may not fit."),
                                    free_s)
        : g_strdup_printf (_("No GPU in use: models run on the CPU, with %s of memory "
                             "available."), free_s);
  gtk_label_set_text (self->memory_label, mem);

  default_id = settings ? bln_ui_settings_get_string (settings, "models.default") : NULL;
  g_hash_table_remove_all (self->buttons);
  while ((child = gtk_widget_get_first_child (GTK_WIDGET (self->model_list))))
    gtk_list_box_remove (self->model_list, child);
  for (guint i = 0; i < n; i++)
    gtk_list_box_append (self->model_list,
                         make_row (self, bln_model_library_get (lib, i), default_id, free_mem,
                                   is_gpu));
  gtk_widget_set_visible (GTK_WIDGET (self->model_list), n > 0);
  gtk_widget_set_visible (GTK_WIDGET (self->empty_page), n == 0);
  gtk_widget_set_sensitive (GTK_WIDGET (self->model_list), !bln_application_busy (self->app));
}

static void
state_changed (BlnApplication *app, BlnModelsPage *self)
{
  refresh (self);
}

static void
rescan_clicked (BlnModelsPage *self)
{
  bln_application_rescan (self->app);
}

static void
cancel_clicked (BlnModelsPage *self)
{
  if (self->cancellable)
    g_cancellable_cancel (self->cancellable);
}

static void
copy_progress (goffset current, goffset total, gpointer user_data)
{
  BlnModelsPage *self = user_data;

  if (total > 0)
    gtk_progress_bar_set_fraction (self->progress_bar, (double) current / (double) total);
}

static void
copy_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BlnModelsPage) self = user_data;
  g_autoptr (GError) error = NULL;

  stop_progress (self);
  if (!g_file_copy_finish (G_FILE (source), result, &error))
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        bln_error_dialog (GTK_WIDGET (self), _("The file could not be imported"),
                          error->message);
      return;
    }
  bln_application_rescan (self->app);
  bln_toast (GTK_WIDGET (self), _("Model imported"));
}

static void
import_response (GtkNativeDialog *chooser, int response, BlnModelsPage *self)
{
  g_autoptr (GFile) src = NULL;
  g_autoptr (GFile) dest = NULL;
  g_autofree char *dir = NULL;
  g_autofree char *base = NULL;
  BlnUiSettings *settings = bln_application_settings (self->app);

  if (response == GTK_RESPONSE_ACCEPT && !self->cancellable)
    {
      src = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (chooser));
      dir = settings ? bln_ui_settings_models_dir (settings)
                     : g_build_filename (g_get_user_data_dir (), "baleen", "models", NULL);
      g_mkdir_with_parents (dir, 0755);
      base = g_file_get_basename (src);
      dest = g_file_new_build_filename (dir, base, NULL);
      self->cancellable = g_cancellable_new ();
      set_busy (self, _("Importing…"));
      gtk_progress_bar_set_fraction (self->progress_bar, 0);
      /* No overwrite: an existing model of the same name is an error. */
      g_file_copy_async (src, dest, G_FILE_COPY_NONE, G_PRIORITY_DEFAULT, self->cancellable,
                         copy_progress, self, copy_done, g_object_ref (self));
    }
  g_object_unref (chooser);
}

/* ---- HF folders: converted to GGUF on a worker thread -------------------- */

typedef struct {
  char *folder;
  char *out;
  BlnType type;
  gint *permille;           /* the page's counter; the page outlives the task */
} ConvertJob;

static void
convert_job_free (gpointer data)
{
  ConvertJob *job = data;

  g_free (job->folder);
  g_free (job->out);
  g_free (job);
}

static void
convert_progress (double fraction, gpointer user_data)
{
  g_atomic_int_set ((gint *) user_data, (gint) (fraction * 1000));
}

static void
convert_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  ConvertJob *job = data;
  GError *error = NULL;

  if (bln_hf_convert (job->folder, job->out, job->type, cancellable, convert_progress,
                      job->permille, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

static gboolean
convert_tick (gpointer user_data)
{
  BlnModelsPage *self = user_data;

  gtk_progress_bar_set_fraction (self->progress_bar,
                                 g_atomic_int_get (&self->convert_permille) / 1000.0);
  return G_SOURCE_CONTINUE;
}

static void
convert_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  BlnModelsPage *self = BLN_MODELS_PAGE (source);
  g_autoptr (GError) error = NULL;
  ConvertJob *job = g_task_get_task_data (G_TASK (result));

  if (!self->progress_box)
    return;   /* the page went away while the task ran (its file is kept or removed) */
  stop_progress (self);
  if (!g_task_propagate_boolean (G_TASK (result), &error))
    {
      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        bln_toast (GTK_WIDGET (self), _("Conversion cancelled."));
      else
        bln_error_dialog (GTK_WIDGET (self), _("The folder could not be converted"),
                          error->message);
      return;
    }
  g_free (self->converted);
  self->converted = g_strdup (job->out);
  bln_application_rescan (self->app);
  bln_toast (GTK_WIDGET (self), _("Model converted and added to the library"));
}

gboolean
bln_models_page_import_hf (BlnModelsPage *self, const char *folder, BlnType type,
                           GError **error)
{
  BlnUiSettings *settings = bln_application_settings (self->app);
  g_autofree char *dir = NULL;
  g_autofree char *name = NULL;
  g_autofree char *label = NULL;
  g_autofree char *base = NULL;
  g_autoptr (GTask) task = NULL;
  ConvertJob *job;
  guint n;
  const BlnConvertType *types = bln_hf_convert_types (&n);

  g_return_val_if_fail (BLN_IS_MODELS_PAGE (self), FALSE);
  if (self->cancellable)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY,
                   _("Wait for the load or import under way to finish."));
      return FALSE;
    }
  dir = settings ? bln_ui_settings_models_dir (settings)
                 : g_build_filename (g_get_user_data_dir (), "baleen", "models", NULL);
  g_mkdir_with_parents (dir, 0755);
  name = bln_hf_convert_file_name (folder, type);
  job = g_new0 (ConvertJob, 1);
  job->folder = g_strdup (folder);
  job->out = g_build_filename (dir, name, NULL);
  job->type = type;
  job->permille = &self->convert_permille;
  if (g_file_test (job->out, G_FILE_TEST_EXISTS))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                   _("%s is already in the models folder: delete it first or choose another "
                     "type."), name);
      convert_job_free (job);
      return FALSE;
    }
  for (guint i = 0; i < n; i++)
    if (types[i].type == type)
      label = g_strdup (types[i].name);
  base = g_path_get_basename (folder);
  self->cancellable = g_cancellable_new ();
  g_atomic_int_set (&self->convert_permille, 0);
  {
    g_autofree char *what = g_strdup_printf (_("Converting %s to %s…"), base,
                                             label ? label : "?");
    set_busy (self, what);
  }
  gtk_progress_bar_set_fraction (self->progress_bar, 0);
  self->pulse_id = g_timeout_add (100, convert_tick, self);
  task = g_task_new (self, self->cancellable, convert_done, NULL);
  g_task_set_source_tag (task, bln_models_page_import_hf);
  g_task_set_task_data (task, job, convert_job_free);
  g_task_run_in_thread (task, convert_thread);
  return TRUE;
}

const char *
bln_models_page_last_converted (BlnModelsPage *self)
{
  g_return_val_if_fail (BLN_IS_MODELS_PAGE (self), NULL);
  return self->converted;
}

gboolean
bln_models_page_is_busy (BlnModelsPage *self)
{
  g_return_val_if_fail (BLN_IS_MODELS_PAGE (self), FALSE);
  return self->cancellable != NULL;
}

static void
type_response (AdwMessageDialog *dialog, const char *response, BlnModelsPage *self)
{
  GtkDropDown *drop = g_object_get_data (G_OBJECT (dialog), "types");
  const char *folder = g_object_get_data (G_OBJECT (dialog), "folder");
  g_autoptr (GError) error = NULL;
  guint n;
  const BlnConvertType *types = bln_hf_convert_types (&n);
  guint i = gtk_drop_down_get_selected (drop);

  if (g_str_equal (response, "convert") && i < n &&
      !bln_models_page_import_hf (self, folder, types[i].type, &error))
    bln_error_dialog (GTK_WIDGET (self), _("The folder could not be converted"), error->message);
}

/* Asks which type to store the weights as. */
static void
choose_type (BlnModelsPage *self, const char *folder)
{
  static const char *const labels[] = {
    N_("q8_0 — 8-bit, nearly lossless"), N_("q4_0 — 4-bit, simple"),
    N_("q4_K — 4-bit, smallest"), N_("q6_K — 6-bit, close to 8-bit quality"),
    N_("f16 — 16-bit floats"), N_("bf16 — 16-bit brain floats"), N_("f32 — no conversion"),
  };
  GtkWidget *dialog;
  g_autoptr (GtkStringList) model = gtk_string_list_new (NULL);
  GtkWidget *drop;
  g_autofree char *base = g_path_get_basename (folder);
  g_autofree char *body = g_strdup_printf (_("Baleen writes %s as one GGUF file in the models "
                                             "folder. Choose how to store its weights:"), base);

  for (guint i = 0; i < G_N_ELEMENTS (labels); i++)
    gtk_string_list_append (model, _(labels[i]));
  drop = gtk_drop_down_new (G_LIST_MODEL (g_object_ref (model)), NULL);
  gtk_accessible_update_property (GTK_ACCESSIBLE (drop), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _("Weight type"), -1);
  dialog = adw_message_dialog_new (GTK_WINDOW (gtk_widget_get_root (GTK_WIDGET (self))),
                                   _("Convert a Hugging Face Folder"), body);
  adw_message_dialog_set_extra_child (ADW_MESSAGE_DIALOG (dialog), drop);
  adw_message_dialog_add_responses (ADW_MESSAGE_DIALOG (dialog), "cancel", _("_Cancel"),
                                    "convert", _("C_onvert"), NULL);
  adw_message_dialog_set_response_appearance (ADW_MESSAGE_DIALOG (dialog), "convert",
                                              ADW_RESPONSE_SUGGESTED);
  adw_message_dialog_set_default_response (ADW_MESSAGE_DIALOG (dialog), "convert");
  g_object_set_data (G_OBJECT (dialog), "types", drop);
  g_object_set_data_full (G_OBJECT (dialog), "folder", g_strdup (folder), g_free);
  g_signal_connect (dialog, "response", G_CALLBACK (type_response), self);
  gtk_window_present (GTK_WINDOW (dialog));
}

static void
import_hf_response (GtkNativeDialog *chooser, int response, BlnModelsPage *self)
{
  if (response == GTK_RESPONSE_ACCEPT)
    {
      g_autoptr (GFile) folder = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (chooser));
      if (folder && g_file_peek_path (folder))
        choose_type (self, g_file_peek_path (folder));
    }
  g_object_unref (chooser);
}

static void
import_hf_clicked (BlnModelsPage *self)
{
  GtkFileChooserNative *chooser;

  chooser = gtk_file_chooser_native_new (_("Choose a Hugging Face Model Folder"),
                                         GTK_WINDOW (gtk_widget_get_root (GTK_WIDGET (self))),
                                         GTK_FILE_CHOOSER_ACTION_SELECT_FOLDER, _("_Choose"),
                                         _("_Cancel"));
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (chooser), TRUE);
  g_signal_connect (chooser, "response", G_CALLBACK (import_hf_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (chooser));
}

static void
import_clicked (BlnModelsPage *self)
{
  GtkFileChooserNative *chooser;
  g_autoptr (GtkFileFilter) filter = gtk_file_filter_new ();

  chooser = gtk_file_chooser_native_new (_("Import a GGUF Model"),
                                         GTK_WINDOW (gtk_widget_get_root (GTK_WIDGET (self))),
                                         GTK_FILE_CHOOSER_ACTION_OPEN, _("_Import"), _("_Cancel"));
  gtk_file_filter_set_name (filter, _("GGUF models"));
  gtk_file_filter_add_pattern (filter, "*.gguf");
  gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (chooser), filter);
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (chooser), TRUE);
  g_signal_connect (chooser, "response", G_CALLBACK (import_response), self);
  gtk_native_dialog_show (GTK_NATIVE_DIALOG (chooser));
}

static void
bln_models_page_dispose (GObject *object)
{
  BlnModelsPage *self = BLN_MODELS_PAGE (object);

  if (self->cancellable)
    g_cancellable_cancel (self->cancellable);
  g_clear_handle_id (&self->pulse_id, g_source_remove);
  g_clear_object (&self->cancellable);
  if (self->app && self->state_handler)
    g_signal_handler_disconnect (self->app, self->state_handler);
  self->state_handler = 0;
  g_clear_pointer (&self->buttons, g_hash_table_unref);
  g_clear_pointer (&self->converted, g_free);
  gtk_widget_dispose_template (GTK_WIDGET (self), BLN_TYPE_MODELS_PAGE);
  G_OBJECT_CLASS (bln_models_page_parent_class)->dispose (object);
}

static void
bln_models_page_class_init (BlnModelsPageClass *klass)
{
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  G_OBJECT_CLASS (klass)->dispose = bln_models_page_dispose;
  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/org/baleen/Baleen/ui/models-page.ui");
  gtk_widget_class_bind_template_child (widget_class, BlnModelsPage, folder_label);
  gtk_widget_class_bind_template_child (widget_class, BlnModelsPage, memory_label);
  gtk_widget_class_bind_template_child (widget_class, BlnModelsPage, progress_box);
  gtk_widget_class_bind_template_child (widget_class, BlnModelsPage, progress_label);
  gtk_widget_class_bind_template_child (widget_class, BlnModelsPage, progress_bar);
  gtk_widget_class_bind_template_child (widget_class, BlnModelsPage, model_list);
  gtk_widget_class_bind_template_child (widget_class, BlnModelsPage, empty_page);
  gtk_widget_class_bind_template_callback (widget_class, rescan_clicked);
  gtk_widget_class_bind_template_callback (widget_class, import_clicked);
  gtk_widget_class_bind_template_callback (widget_class, import_hf_clicked);
  gtk_widget_class_bind_template_callback (widget_class, cancel_clicked);
}

static void
bln_models_page_init (BlnModelsPage *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
  self->buttons = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
}

BlnModelsPage *
bln_models_page_new (BlnApplication *app)
{
  BlnModelsPage *self = g_object_new (BLN_TYPE_MODELS_PAGE, NULL);

  self->app = app;
  self->state_handler = g_signal_connect (app, "state-changed", G_CALLBACK (state_changed), self);
  refresh (self);
  return self;
}

GtkWidget *
bln_models_page_get_button (BlnModelsPage *self, const char *id, const char *what)
{
  g_autofree char *key = g_strdup_printf ("%s\n%s", id, what);

  g_return_val_if_fail (BLN_IS_MODELS_PAGE (self), NULL);
  return g_hash_table_lookup (self->buttons, key);
}
