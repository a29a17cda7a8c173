/* live-stats.c — sampling metrics into plots once a second (see live-stats.h). */
#include "live-stats.h"

#include <math.h>
#include <string.h>
#include <glib/gi18n-lib.h>

#include "baleen-config.h"
#include "gpu-monitor.h"
#include "window.h"

struct _BlnLiveStats
{
  AdwPreferencesGroup parent_instance;

  BlnApplication *app;          /* borrowed */
  BlnLiveKind kind;
  GHashTable *plots;            /* name -> BlnPlot (borrowed; in the widget tree) */
  AdwActionRow *row;            /* "device" or "usage" */
  BlnGpuMonitor *gpu;           /* owned; Performance only */
  guint timer;
  guint n_samples;

  /* the previous sample, for rates */
  BlnMetrics *last_metrics;     /* only compared, never dereferenced */
  BlnMetricsTotals last;
  gint64 last_time;             /* monotonic µs of the last sample, 0: none */

  /* Caches: the clear button and the clear in flight */
  GtkWidget *clear_button;      /* borrowed; in the widget tree */
  GtkWidget *clear_result;      /* borrowed: a label saying what the last clear freed */
  BlnEngineWorker *clear_worker;  /* only compared, never dereferenced */
  guint64 clear_from;           /* the worker's cache_clears when asked */
  guint64 clear_base;           /* and its cleared_blocks */
  gint64 clear_deadline;        /* monotonic µs */
  guint clear_poll;
  guint n_clear_results;
};

G_DEFINE_FINAL_TYPE (BlnLiveStats, bln_live_stats, ADW_TYPE_PREFERENCES_GROUP)

static BlnPlot *
plot (BlnLiveStats *self, const char *name)
{
  return g_hash_table_lookup (self->plots, name);
}

/* Tokens per second and the mean time to first token (ms) since the last
 * sample, from the server's running totals. NAN when the server is off, or
 * for the time to first token when no reply started in the interval. */
static void
sample_rates (BlnLiveStats *self, double *tps, double *ttft_ms)
{
  BlnMetrics *m = bln_application_metrics (self->app);
  BlnMetricsTotals now;
  gint64 t = g_get_monotonic_time ();
  double dt = self->last_time > 0 && t > self->last_time ? (t - self->last_time) / 1e6 : 1.0;

  *tps = NAN;
  *ttft_ms = NAN;
  self->last_time = t;
  if (!m)
    {
      self->last_metrics = NULL;
      return;
    }
  /* A new server starts from zero: what it counted so far happened since
   * the previous sample. */
  if (m != self->last_metrics)
    memset (&self->last, 0, sizeof self->last);
  bln_metrics_get_totals (m, &now);
  if (now.generated_tokens >= self->last.generated_tokens)
    *tps = (now.generated_tokens - self->last.generated_tokens) / dt;
  if (now.ttft_count > self->last.ttft_count)
    *ttft_ms = (now.ttft_sum - self->last.ttft_sum) / (now.ttft_count - self->last.ttft_count)
               * 1000;
  self->last_metrics = m;
  self->last = now;
}

static void
sample_performance (BlnLiveStats *self, BlnEngineWorker *worker,
                    const BlnEngineWorkerStats *st)
{
  double tps, ttft;
  BlnGpuSample g;
  g_autofree char *device = NULL;

  sample_rates (self, &tps, &ttft);
  bln_plot_push (plot (self, "tokens-per-second"), tps);
  bln_plot_push (plot (self, "ttft"), ttft);
  bln_plot_push (plot (self, "queue"), worker ? st->waiting : NAN);

  if (bln_gpu_monitor_sample (self->gpu, &g))
    {
      bln_plot_set_fixed_top (plot (self, "gpu-memory"), g.memory_total / 1073741824.0);
      bln_plot_push (plot (self, "gpu-utilization"), g.utilization);
      bln_plot_push (plot (self, "gpu-memory"), g.memory_used / 1073741824.0);
    }
  else
    {
      const char *why = bln_gpu_monitor_reason (self->gpu);
      bln_plot_set_message (plot (self, "gpu-utilization"), why ? why : _("No NVIDIA GPU"));
      bln_plot_set_message (plot (self, "gpu-memory"), why ? why : _("No NVIDIA GPU"));
    }

  if (!worker)
    device = g_strdup (BALEEN_HAVE_CUDA ? _("No model loaded (this build runs on the CPU and "
                                            "on NVIDIA GPUs)")
                                        : _("No model loaded (this build runs on the CPU "
                                            "only)"));
  else if (st->batching)
    /* TRANSLATORS: the backend, then the loaded model and its context size. */
    device = g_strdup_printf (_("CPU: continuous batching, up to %d sequences at once — %s, "
                                "context of %d tokens"),
                              st->max_seqs, bln_application_loaded_name (self->app),
                              bln_engine_worker_n_ctx (worker));
  else
    device = g_strdup_printf (_("GPU (CUDA): %s, one sequence at a time — %s, context of %d "
                                "tokens"),
                              bln_gpu_monitor_name (self->gpu) ? bln_gpu_monitor_name (self->gpu)
                                                               : _("NVIDIA GPU"),
                              bln_application_loaded_name (self->app),
                              bln_engine_worker_n_ctx (worker));
  adw_action_row_set_subtitle (self->row, device);
}

static void
sample_caches (BlnLiveStats *self, BlnEngineWorker *worker, const BlnEngineWorkerStats *st)
{
  BlnPlot *kv = plot (self, "kv-blocks");
  BlnPlot *hit = plot (self, "prefix-hit-rate");
  g_autofree char *usage = NULL;

  if (!worker)
    {
      bln_plot_set_message (kv, _("No model loaded"));
      bln_plot_set_message (hit, _("No model loaded"));
      adw_action_row_set_subtitle (self->row, _("No model loaded"));
      return;
    }
  if (!st->batching || st->kv_blocks_total <= 0)
    {
      const char *why = _("The GPU path keeps one sequence, without a block pool");
      bln_plot_set_message (kv, why);
      bln_plot_set_message (hit, why);
      adw_action_row_set_subtitle (self->row, why);
      return;
    }
  bln_plot_set_message (kv, NULL);
  bln_plot_set_message (hit, NULL);
  bln_plot_set_fixed_top (kv, st->kv_blocks_total);
  bln_plot_push (kv, st->kv_blocks_used);
  bln_plot_push (hit, st->prefix_hit_rate * 100);
  usage = g_strdup_printf (_("%d of %d blocks of %d tokens in use, %d kept for reuse, "
                             "%d requests running, %d waiting"),
                           st->kv_blocks_used, st->kv_blocks_total, st->kv_block_size,
                           st->kv_blocks_cached, st->running, st->waiting);
  adw_action_row_set_subtitle (self->row, usage);
}

/* Ends the clear in flight, showing @message under the button. */
static void
clear_finished (BlnLiveStats *self, const char *message)
{
  self->clear_poll = 0;
  self->clear_worker = NULL;
  gtk_widget_set_sensitive (self->clear_button, TRUE);
  gtk_label_set_text (GTK_LABEL (self->clear_result), message);
  gtk_widget_set_visible (self->clear_result, TRUE);
  self->n_clear_results++;
  bln_toast (GTK_WIDGET (self), message);
}

/* Watches the worker's statistics until the scheduler's thread has done the
 * clear (before its next step, so within one step). */
static gboolean
clear_check (gpointer user_data)
{
  BlnLiveStats *self = user_data;
  BlnEngineWorker *worker = bln_application_worker (self->app);
  BlnEngineWorkerStats st;
  g_autofree char *msg = NULL;
  guint64 freed;

  if (worker != self->clear_worker)
    {
      clear_finished (self, _("The model was unloaded before the cache was cleared."));
      return G_SOURCE_REMOVE;
    }
  bln_engine_worker_get_stats (worker, &st);
  if (st.cache_clears <= self->clear_from)
    {
      if (g_get_monotonic_time () < self->clear_deadline)
        return G_SOURCE_CONTINUE;
      clear_finished (self, _("The engine did not clear the cache in time; try again."));
      return G_SOURCE_REMOVE;
    }
  freed = st.cleared_blocks - self->clear_base;
  if (freed == 0)
    msg = g_strdup (_("Nothing to clear: no cached prefix blocks."));
  else
    /* TRANSLATORS: blocks of the KV cache, each holding %d tokens. */
    msg = g_strdup_printf (ngettext ("Cleared %d cached block (%d tokens each).",
                                     "Cleared %d cached blocks (%d tokens each).",
                                     (gulong) MIN (freed, G_MAXINT)),
                           (int) MIN (freed, G_MAXINT), st.kv_block_size);
  clear_finished (self, msg);
  bln_live_stats_sample (self);
  return G_SOURCE_REMOVE;
}

static void
clear_clicked (GtkButton *button, BlnLiveStats *self)
{
  BlnEngineWorker *worker = bln_application_worker (self->app);
  BlnEngineWorkerStats st;
  g_autoptr (GError) error = NULL;

  if (self->clear_poll)
    return;
  if (!worker)
    {
      clear_finished (self, _("No model loaded: there is no cache to clear."));
      return;
    }
  bln_engine_worker_get_stats (worker, &st);
  if (!st.batching)
    {
      clear_finished (self, _("The GPU path keeps no prefix cache to clear."));
      return;
    }
  if (!bln_engine_worker_request_clear_cache (worker, &error))
    {
      clear_finished (self, error->message);
      return;
    }
  self->clear_worker = worker;
  self->clear_from = st.cache_clears;
  self->clear_base = st.cleared_blocks;
  self->clear_deadline = g_get_monotonic_time () + 60 * G_USEC_PER_SEC;
  gtk_widget_set_sensitive (self->clear_button, FALSE);
  self->clear_poll = g_timeout_add (20, clear_check, self);
}

void
bln_live_stats_sample (BlnLiveStats *self)
{
  BlnEngineWorker *worker;
  BlnEngineWorkerStats st = { 0 };

  g_return_if_fail (BLN_IS_LIVE_STATS (self));
  worker = bln_application_worker (self->app);
  if (worker)
    bln_engine_worker_get_stats (worker, &st);
  if (self->kind == BLN_LIVE_PERFORMANCE)
    sample_performance (self, worker, &st);
  else
    sample_caches (self, worker, &st);
  self->n_samples++;
}

static gboolean
tick (gpointer user_data)
{
  bln_live_stats_sample (user_data);
  return G_SOURCE_CONTINUE;
}

guint
bln_live_stats_n_samples (BlnLiveStats *self)
{
  g_return_val_if_fail (BLN_IS_LIVE_STATS (self), 0);
  return self->n_samples;
}

BlnPlot *
bln_live_stats_get_plot (BlnLiveStats *self, const char *name)
{
  g_return_val_if_fail (BLN_IS_LIVE_STATS (self), NULL);
  return plot (self, name);
}

GtkWidget *
bln_live_stats_get_clear_button (BlnLiveStats *self)
{
  g_return_val_if_fail (BLN_IS_LIVE_STATS (self), NULL);
  return self->clear_button;
}

const char *
bln_live_stats_get_clear_result (BlnLiveStats *self)
{
  g_return_val_if_fail (BLN_IS_LIVE_STATS (self), NULL);
  if (!self->clear_result || !gtk_widget_get_visible (self->clear_result))
    return NULL;
  return gtk_label_get_text (GTK_LABEL (self->clear_result));
}

guint
bln_live_stats_n_clear_results (BlnLiveStats *self)
{
  g_return_val_if_fail (BLN_IS_LIVE_STATS (self), 0);
  return self->n_clear_results;
}

gboolean
bln_live_stats_is_clearing (BlnLiveStats *self)
{
  g_return_val_if_fail (BLN_IS_LIVE_STATS (self), FALSE);
  return self->clear_poll != 0;
}

AdwActionRow *
bln_live_stats_get_row (BlnLiveStats *self, const char *name)
{
  g_return_val_if_fail (BLN_IS_LIVE_STATS (self), NULL);
  if ((self->kind == BLN_LIVE_PERFORMANCE && g_str_equal (name, "device")) ||
      (self->kind == BLN_LIVE_CACHES && g_str_equal (name, "usage")))
    return self->row;
  return NULL;
}

static void
bln_live_stats_dispose (GObject *object)
{
  BlnLiveStats *self = BLN_LIVE_STATS (object);

  g_clear_handle_id (&self->timer, g_source_remove);
  g_clear_handle_id (&self->clear_poll, g_source_remove);
  G_OBJECT_CLASS (bln_live_stats_parent_class)->dispose (object);
}

static void
bln_live_stats_finalize (GObject *object)
{
  BlnLiveStats *self = BLN_LIVE_STATS (object);

  g_clear_pointer (&self->plots, g_hash_table_unref);
  g_clear_pointer (&self->gpu, bln_gpu_monitor_free);
  G_OBJECT_CLASS (bln_live_stats_parent_class)->finalize (object);
}

static void
bln_live_stats_class_init (BlnLiveStatsClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = bln_live_stats_dispose;
  G_OBJECT_CLASS (klass)->finalize = bln_live_stats_finalize;
}

static void
bln_live_stats_init (BlnLiveStats *self)
{
  self->plots = g_hash_table_new (g_str_hash, g_str_equal);
}

/* Adds a plot in a card to @grid at cell @n (two columns). */
static BlnPlot *
add_plot (BlnLiveStats *self, GtkGrid *grid, guint n, const char *name, const char *title,
          const char *unit, double least, double fixed_top)
{
  BlnPlot *p = bln_plot_new (title, unit, BLN_LIVE_STATS_SECONDS, least);
  GtkWidget *frame = gtk_frame_new (NULL);

  gtk_widget_add_css_class (frame, "card");
  gtk_frame_set_child (GTK_FRAME (frame), GTK_WIDGET (p));
  if (fixed_top > 0)
    bln_plot_set_fixed_top (p, fixed_top);
  gtk_grid_attach (grid, frame, n % 2, n / 2, 1, 1);
  g_hash_table_insert (self->plots, (gpointer) name, p);
  return p;
}

BlnLiveStats *
bln_live_stats_new (BlnApplication *app, BlnLiveKind kind)
{
  BlnLiveStats *self = g_object_new (BLN_TYPE_LIVE_STATS, NULL);
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 12);
  GtkWidget *grid = gtk_grid_new ();
  GtkWidget *rows = gtk_list_box_new ();

  self->app = app;
  self->kind = kind;
  gtk_grid_set_row_spacing (GTK_GRID (grid), 12);
  gtk_grid_set_column_spacing (GTK_GRID (grid), 12);
  gtk_grid_set_column_homogeneous (GTK_GRID (grid), TRUE);
  gtk_list_box_set_selection_mode (GTK_LIST_BOX (rows), GTK_SELECTION_NONE);
  gtk_widget_add_css_class (rows, "boxed-list");
  self->row = ADW_ACTION_ROW (adw_action_row_new ());
  gtk_list_box_append (GTK_LIST_BOX (rows), GTK_WIDGET (self->row));

  if (kind == BLN_LIVE_PERFORMANCE)
    {
      adw_preferences_group_set_title (ADW_PREFERENCES_GROUP (self), _("Live"));
      adw_preferences_group_set_description (
        ADW_PREFERENCES_GROUP (self),
        _("The last two minutes, one point a second. Tokens are counted when a reply "
          "finishes; the GPU plots read the NVIDIA driver."));
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->row),
                                     _("Backend, device and model"));
      self->gpu = bln_gpu_monitor_new (0);
      add_plot (self, GTK_GRID (grid), 0, "tokens-per-second", _("Tokens per second"),
                _("tok/s"), 10, 0);
      add_plot (self, GTK_GRID (grid), 1, "ttft", _("Time to first token"), _("ms"), 100, 0);
      add_plot (self, GTK_GRID (grid), 2, "queue", _("Requests waiting"), "", 5, 0);
      add_plot (self, GTK_GRID (grid), 3, "gpu-utilization", _("GPU utilisation"), "%", 100,
                100);
      add_plot (self, GTK_GRID (grid), 4, "gpu-memory", _("GPU memory used"), _("GiB"), 1, 0);
    }
  else
    {
      adw_preferences_group_set_title (ADW_PREFERENCES_GROUP (self), _("Live Usage"));
      adw_preferences_group_set_description (
        ADW_PREFERENCES_GROUP (self),
        _("The loaded model's KV cache, one point a second: blocks held by running requests, "
          "and the share of prompt tokens found in the prefix cache since the model was "
          "loaded."));
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->row), _("KV cache"));
      add_plot (self, GTK_GRID (grid), 0, "kv-blocks", _("KV blocks in use"), "", 10, 0);
      add_plot (self, GTK_GRID (grid), 1, "prefix-hit-rate", _("Prefix cache hit rate"), "%",
                100, 100);

      /* Clear: frees the cached prefix blocks; running requests keep theirs. */
      self->clear_button = gtk_button_new_with_mnemonic (_("_Clear Cache"));
      gtk_widget_set_valign (self->clear_button, GTK_ALIGN_CENTER);
      gtk_widget_set_tooltip_text (self->clear_button,
                                   _("Forget the cached prompt prefixes; requests running now "
                                     "keep their blocks"));
      g_signal_connect (self->clear_button, "clicked", G_CALLBACK (clear_clicked), self);
      adw_action_row_add_suffix (self->row, self->clear_button);
      self->clear_result = gtk_label_new (NULL);
      gtk_label_set_wrap (GTK_LABEL (self->clear_result), TRUE);
      gtk_label_set_xalign (GTK_LABEL (self->clear_result), 0);
      gtk_widget_add_css_class (self->clear_result, "dim-label");
      gtk_widget_set_visible (self->clear_result, FALSE);
    }
  gtk_box_append (GTK_BOX (box), rows);
  if (self->clear_result)
    gtk_box_append (GTK_BOX (box), self->clear_result);
  gtk_box_append (GTK_BOX (box), grid);
  adw_preferences_group_add (ADW_PREFERENCES_GROUP (self), box);
  bln_live_stats_sample (self);
  self->timer = g_timeout_add_seconds (1, tick, self);
  return self;
}
