/* metrics.h — server metrics in the Prometheus text exposition format 0.0.4.
 *
 * A BlnMetrics collects counters and histograms while the server runs and
 * renders them for GET /metrics. Every call is thread-safe (one mutex), so
 * the engine thread may record into it too. Metric names (all prefixed
 * "baleen_"):
 *
 *   requests_total{route,method,status}    counter, every answered HTTP request
 *   prompt_tokens_total                    counter
 *   prompt_cached_tokens_total             counter, prompt tokens served by the prefix cache
 *   generated_tokens_total                 counter
 *   generations_total{finish}              counter, finished generations by reason
 *   time_to_first_token_seconds            histogram
 *   inter_token_latency_seconds            histogram
 *   request_duration_seconds               histogram, whole generations
 *   prefix_cache_hit_ratio                 gauge, cached / prompt tokens since start
 *   plus the values of BlnMetricsGauges, sampled when rendering: gauges, and
 *   the engine's own counters (gpu_compact_draws_total,
 *   gpu_compact_fallbacks_total), which start again from 0 with each model load.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _BlnMetrics BlnMetrics;

/* Values sampled at render time; a negative value leaves the metric out.
 * Most are gauges; the engine's counters are rendered as counters. */
typedef struct {
  double requests_running;   /* baleen_requests_running: generations in flight */
  double queue_depth;        /* baleen_queue_depth: requests waiting (for the engine or a model) */
  double kv_blocks_used;     /* baleen_kv_blocks_used */
  double kv_blocks_total;    /* baleen_kv_blocks_total */
  const char *loaded_model;  /* baleen_model_loaded{model} 1; NULL: none loaded */
  double models_installed;   /* baleen_models_installed */
  double kv_blocks_cached;   /* baleen_kv_blocks_cached: unreferenced prefixes kept for reuse */
  double kv_prefix_hit_ratio; /* baleen_kv_prefix_hit_ratio: the scheduler's prefix lookups */
  double engine_running;     /* baleen_engine_sequences_running: admitted by the engine */
  double gpu_compact_draws;  /* baleen_gpu_compact_draws_total (counter): GPU draws that asked
                              * for a compact record of the logits row (docs/GPU-SAMPLING.md) */
  double gpu_compact_fallbacks; /* baleen_gpu_compact_fallbacks_total (counter): of those, the
                                 * ones that fetched the full logits row */
} BlnMetricsGauges;

/* A new, empty set. Free with bln_metrics_free(). */
BlnMetrics *bln_metrics_new (void);
/* NULL is ignored. */
void bln_metrics_free (BlnMetrics *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnMetrics, bln_metrics_free)

/* Counts one answered request. @route is the normalised route ("/v1/chat/completions";
 * the caller maps unknown paths to one label such as "other" so that label
 * values stay few), @method the HTTP method, @status the status code. */
void bln_metrics_count_request (BlnMetrics *m, const char *route, const char *method,
                                guint status);

/* Records one finished generation: its token counts, its finish reason
 * ("stop", "length", "cancelled", "error", ...), and its duration in seconds
 * (negative: not observed). */
void bln_metrics_observe_generation (BlnMetrics *m, gint64 prompt_tokens, gint64 cached_tokens,
                                     gint64 generated_tokens, const char *finish,
                                     double duration_s);

/* Observes a time to first token, and an inter-token latency, in seconds. */
void bln_metrics_observe_ttft (BlnMetrics *m, double seconds);
void bln_metrics_observe_itl (BlnMetrics *m, double seconds);

/* The text exposition (HELP, TYPE and samples, '\n'-terminated lines) with
 * @gauges (may be NULL). Caller frees. */
char *bln_metrics_render (BlnMetrics *m, const BlnMetricsGauges *gauges);

/* Running totals since the set was made, for sampling rates (the desktop
 * app's plots): differences between two calls give tokens per second and the
 * mean time to first token over the interval. */
typedef struct {
  guint64 prompt_tokens;
  guint64 cached_tokens;
  guint64 generated_tokens;
  guint64 ttft_count;        /* first tokens observed */
  double ttft_sum;           /* their times, seconds */
} BlnMetricsTotals;

/* Fills @out with the current totals; any thread. */
void bln_metrics_get_totals (BlnMetrics *m, BlnMetricsTotals *out);

/* Content-Type of the rendering. */
#define BLN_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

G_END_DECLS
