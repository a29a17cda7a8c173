/* live-stats.c — sampling metrics into plots once a second (see live-stats.h). */
#include "live-stats.h"

#include <math.h>
#include <string.h>
#include <glib/gi18n-lib.h>

#include "baleen-config.h"
#include "gpu-monitor.h"

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
    }
  gtk_box_append (GTK_BOX (box), rows);
  gtk_box_append (GTK_BOX (box), grid);
  adw_preferences_group_add (ADW_PREFERENCES_GROUP (self), box);
  bln_live_stats_sample (self);
  self->timer = g_timeout_add_seconds (1, tick, self);
  return self;
}
