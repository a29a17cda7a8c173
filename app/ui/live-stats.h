/* live-stats.h — live plots on the Performance and Caches pages.
 *
 * Once a second the group samples the running server's metrics (metrics.h:
 * generated tokens and times to first token), the engine worker's statistics
 * (engine-worker.h: queue, KV blocks, prefix-cache hit rate) and, on the
 * Performance page, the GPU through NVML (gpu-monitor.h), and appends one
 * point to each plot (plot.h). A value that cannot be had (server off, no
 * model, no NVIDIA GPU) leaves a gap or a message in its plot, never a made-up
 * number. The plots keep the last BLN_LIVE_STATS_SECONDS samples.
 */
#pragma once

#include <adwaita.h>

#include "application.h"
#include "plot.h"

G_BEGIN_DECLS

#define BLN_LIVE_STATS_SECONDS 120

typedef enum {
  BLN_LIVE_PERFORMANCE,  /* tokens/s, time to first token, queue, GPU use and memory, device */
  BLN_LIVE_CACHES,       /* KV blocks in use, prefix-cache hit rate, usage line */
} BlnLiveKind;

#define BLN_TYPE_LIVE_STATS (bln_live_stats_get_type ())
G_DECLARE_FINAL_TYPE (BlnLiveStats, bln_live_stats, BLN, LIVE_STATS, AdwPreferencesGroup)

/* bln_live_stats_new: the plots of @kind over @app (borrowed; it outlives the
 * group), sampling every second from now on. Floating reference. */
BlnLiveStats *bln_live_stats_new (BlnApplication *app, BlnLiveKind kind);

/* bln_live_stats_sample: takes one sample now (the timer calls it). */
void bln_live_stats_sample (BlnLiveStats *self);

/* bln_live_stats_n_samples: samples taken so far. */
guint bln_live_stats_n_samples (BlnLiveStats *self);

/* bln_live_stats_get_plot: the plot named "tokens-per-second", "ttft",
 * "queue", "gpu-utilization", "gpu-memory" (Performance) or "kv-blocks",
 * "prefix-hit-rate" (Caches); NULL when this group has none of that name.
 * Borrowed. */
BlnPlot *bln_live_stats_get_plot (BlnLiveStats *self, const char *name);

/* bln_live_stats_get_clear_button: the Caches group's *Clear Cache* button
 * (NULL on the Performance page). Clicking it asks the engine worker to drop
 * every cached prefix block (bln_engine_worker_request_clear_cache()) without
 * blocking the main loop; when the engine's statistics show the clear done,
 * the group shows how many blocks it freed. Borrowed. */
GtkWidget *bln_live_stats_get_clear_button (BlnLiveStats *self);

/* bln_live_stats_get_clear_result: what the last clear reported (blocks
 * freed, or why nothing was cleared), or NULL before the first. Borrowed. */
const char *bln_live_stats_get_clear_result (BlnLiveStats *self);

/* bln_live_stats_n_clear_results: how many clear results were shown. */
guint bln_live_stats_n_clear_results (BlnLiveStats *self);

/* bln_live_stats_is_clearing: TRUE while a clear is waiting for the engine. */
gboolean bln_live_stats_is_clearing (BlnLiveStats *self);

/* bln_live_stats_get_row: "device" (Performance: backend and device) or
 * "usage" (Caches: blocks in use, cached, free); NULL otherwise. Borrowed. */
AdwActionRow *bln_live_stats_get_row (BlnLiveStats *self, const char *name);

G_END_DECLS
