/* metrics.c — see metrics.h. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds (seconds) of the latency buckets; +Inf is implicit. */
static const double ttft_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                      30, 60 };
static const double itl_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32,
                                     0.64, 1.28 };
static const double dur_bounds[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 };

#define MAX_BUCKETS 16

typedef struct {
  const double *bounds;
  guint n_bounds;
  guint64 counts[MAX_BUCKETS];   /* per bucket, not cumulative */
  guint64 count;
  double sum;
} Histogram;

struct _BlnMetrics {
  GMutex lock;
  GHashTable *requests;          /* "route\tmethod\tstatus" -> guint64* */
  GHashTable *finishes;          /* finish -> guint64* */
  guint64 prompt_tokens, cached_tokens, generated_tokens;
  Histogram ttft, itl, duration;
};

static void
hist_init (Histogram *h, const double *bounds, guint n)
{
  memset (h, 0, sizeof *h);
  h->bounds = bounds;
  h->n_bounds = MIN (n, MAX_BUCKETS - 1);
}

static void
hist_observe (Histogram *h, double v)
{
  guint i;

  if (!isfinite (v) || v < 0)
    return;
  for (i = 0; i < h->n_bounds && v > h->bounds[i]; i++)
    ;
  h->counts[i]++;
  h->count++;
  h->sum += v;
}

BlnMetrics *
bln_metrics_new (void)
{
  BlnMetrics *m = g_new0 (BlnMetrics, 1);

  g_mutex_init (&m->lock);
  m->requests = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  m->finishes = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  hist_init (&m->ttft, ttft_bounds, G_N_ELEMENTS (ttft_bounds));
  hist_init (&m->itl, itl_bounds, G_N_ELEMENTS (itl_bounds));
  hist_init (&m->duration, dur_bounds, G_N_ELEMENTS (dur_bounds));
  return m;
}

void
bln_metrics_free (BlnMetrics *m)
{
  if (m == NULL)
    return;
  g_hash_table_unref (m->requests);
  g_hash_table_unref (m->finishes);
  g_mutex_clear (&m->lock);
  g_free (m);
}

static void
bump (GHashTable *t, char *key)
{
  guint64 *v = g_hash_table_lookup (t, key);

  if (v == NULL)
    {
      v = g_new0 (guint64, 1);
      g_hash_table_insert (t, key, v);
    }
  else
    g_free (key);
  (*v)++;
}

void
bln_metrics_count_request (BlnMetrics *m, const char *route, const char *method, guint status)
{
  g_return_if_fail (m != NULL && route != NULL && method != NULL);
  g_mutex_lock (&m->lock);
  bump (m->requests, g_strdup_printf ("%s\t%s\t%u", route, method, status));
  g_mutex_unlock (&m->lock);
}

void
bln_metrics_observe_generation (BlnMetrics *m, gint64 prompt_tokens, gint64 cached_tokens,
                                gint64 generated_tokens, const char *finish, double duration_s)
{
  g_return_if_fail (m != NULL);
  g_mutex_lock (&m->lock);
  m->prompt_tokens += MAX (prompt_tokens, 0);
  m->cached_tokens += MAX (cached_tokens, 0);
  m->generated_tokens += MAX (generated_tokens, 0);
  bump (m->finishes, g_strdup (finish ? finish : "unknown"));
  if (duration_s >= 0)
    hist_observe (&m->duration, duration_s);
  g_mutex_unlock (&m->lock);
}

void
bln_metrics_observe_ttft (BlnMetrics *m, double seconds)
{
  g_mutex_lock (&m->lock);
  hist_observe (&m->ttft, seconds);
  g_mutex_unlock (&m->lock);
}

void
bln_metrics_observe_itl (BlnMetrics *m, double seconds)
{
  g_mutex_lock (&m->lock);
  hist_observe (&m->itl, seconds);
  g_mutex_unlock (&m->lock);
}

/* ---------------------------------------------------------------------- */
/* rendering                                                               */

/* A label value with '\\', '"' and newlines escaped, as the format asks. */
static void
append_label_value (GString *out, const char *v)
{
  for (; *v; v++)
    {
      if (*v == '\\')
        g_string_append (out, "\\\\");
      else if (*v == '"')
        g_string_append (out, "\\\"");
      else if (*v == '\n')
        g_string_append (out, "\\n");
      else
        g_string_append_c (out, *v);
    }
}

/* Numbers in a form every Prometheus parser reads ("+Inf", no locale). */
static void
append_double (GString *out, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (isinf (v))
    g_string_append (out, v > 0 ? "+Inf" : "-Inf");
  else if (isnan (v))
    g_string_append (out, "NaN");
  else
    {
      /* the shortest of 15 or 17 digits that reads back as @v */
      g_ascii_formatd (buf, sizeof buf, "%.15g", v);
      if (g_ascii_strtod (buf, NULL) != v)
        g_ascii_formatd (buf, sizeof buf, "%.17g", v);
      g_string_append (out, buf);
    }
}

static void
header (GString *out, const char *name, const char *type, const char *help)
{
  g_string_append_printf (out, "# HELP baleen_%s %s\n# TYPE baleen_%s %s\n", name, help, name,
                          type);
}

static void
scalar (GString *out, const char *name, const char *type, const char *help, double v)
{
  header (out, name, type, help);
  g_string_append_printf (out, "baleen_%s ", name);
  append_double (out, v);
  g_string_append_c (out, '\n');
}

static void
histogram (GString *out, const char *name, const char *help, const Histogram *h)
{
  guint64 cum = 0;

  header (out, name, "histogram", help);
  for (guint i = 0; i <= h->n_bounds; i++)
    {
      cum += h->counts[i];
      g_string_append_printf (out, "baleen_%s_bucket{le=\"", name);
      append_double (out, i < h->n_bounds ? h->bounds[i] : INFINITY);
      g_string_append_printf (out, "\"} %" G_GUINT64_FORMAT "\n", cum);
    }
  g_string_append_printf (out, "baleen_%s_sum ", name);
  append_double (out, h->sum);
  g_string_append_printf (out, "\nbaleen_%s_count %" G_GUINT64_FORMAT "\n", name, h->count);
}

static int
cmp_keys (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

char *
bln_metrics_render (BlnMetrics *m, const BlnMetricsGauges *g)
{
  GString *out = g_string_new (NULL);
  g_autofree gpointer *keys = NULL;
  guint n;

  g_mutex_lock (&m->lock);

  header (out, "requests_total", "counter", "HTTP requests answered, by route, method and status.");
  keys = g_hash_table_get_keys_as_array (m->requests, &n);
  qsort (keys, n, sizeof (gpointer), cmp_keys);
  for (guint i = 0; i < n; i++)
    {
      g_auto (GStrv) f = g_strsplit (keys[i], "\t", 3);
      guint64 *v = g_hash_table_lookup (m->requests, keys[i]);
      g_string_append (out, "baleen_requests_total{route=\"");
      append_label_value (out, f[0]);
      g_string_append (out, "\",method=\"");
      append_label_value (out, f[1]);
      g_string_append_printf (out, "\",status=\"%s\"} %" G_GUINT64_FORMAT "\n", f[2], *v);
    }
  g_clear_pointer (&keys, g_free);

  header (out, "generations_total", "counter", "Finished generations, by finish reason.");
  keys = g_hash_table_get_keys_as_array (m->finishes, &n);
  qsort (keys, n, sizeof (gpointer), cmp_keys);
  for (guint i = 0; i < n; i++)
    {
      guint64 *v = g_hash_table_lookup (m->finishes, keys[i]);
      g_string_append (out, "baleen_generations_total{finish=\"");
      append_label_value (out, keys[i]);
      g_string_append_printf (out, "\"} %" G_GUINT64_FORMAT "\n", *v);
    }

  scalar (out, "prompt_tokens_total", "counter", "Prompt tokens of finished generations.",
          (double) m->prompt_tokens);
  scalar (out, "prompt_cached_tokens_total", "counter",
          "Prompt tokens served from the prefix cache.", (double) m->cached_tokens);
  scalar (out, "generated_tokens_total", "counter", "Tokens generated.",
          (double) m->generated_tokens);
  scalar (out, "prefix_cache_hit_ratio", "gauge",
          "Share of prompt tokens served from the prefix cache since start.",
          m->prompt_tokens > 0 ? (double) m->cached_tokens / (double) m->prompt_tokens : 0.0);
  histogram (out, "time_to_first_token_seconds",
             "Time from a request's arrival to its first generated text.", &m->ttft);
  histogram (out, "inter_token_latency_seconds",
             "Time between successive pieces of generated text of one request.", &m->itl);
  histogram (out, "request_duration_seconds", "Duration of whole generations.", &m->duration);
  g_mutex_unlock (&m->lock);

  if (g != NULL)
    {
      if (g->requests_running >= 0)
        scalar (out, "requests_running", "gauge", "Generations in flight.", g->requests_running);
      if (g->queue_depth >= 0)
        scalar (out, "queue_depth", "gauge", "Requests waiting for the engine or for a model.",
                g->queue_depth);
      if (g->kv_blocks_used >= 0)
        scalar (out, "kv_blocks_used", "gauge", "KV cache blocks in use.", g->kv_blocks_used);
      if (g->kv_blocks_total >= 0)
        scalar (out, "kv_blocks_total", "gauge", "KV cache blocks in all.", g->kv_blocks_total);
      if (g->kv_blocks_cached >= 0)
        scalar (out, "kv_blocks_cached", "gauge",
                "KV cache blocks holding reusable prefixes, not in use (evictable).",
                g->kv_blocks_cached);
      if (g->kv_prefix_hit_ratio >= 0)
        scalar (out, "kv_prefix_hit_ratio", "gauge",
                "Share of prompt tokens looked up in the KV prefix cache that were found.",
                g->kv_prefix_hit_ratio);
      if (g->engine_running >= 0)
        scalar (out, "engine_sequences_running", "gauge",
                "Sequences the engine is running (prompt or generating).", g->engine_running);
      if (g->gpu_compact_draws >= 0)
        scalar (out, "gpu_compact_draws_total", "counter",
                "GPU sampling draws that asked for a compact record of the logits row, "
                "since the model was loaded.", g->gpu_compact_draws);
      if (g->gpu_compact_fallbacks >= 0)
        scalar (out, "gpu_compact_fallbacks_total", "counter",
                "GPU sampling draws whose compact record could not decide the token, "
                "so the full logits row was fetched.", g->gpu_compact_fallbacks);
      if (g->models_installed >= 0)
        scalar (out, "models_installed", "gauge", "Models found in the library.",
                g->models_installed);
      header (out, "model_loaded", "gauge", "1 for the model that is loaded.");
      if (g->loaded_model != NULL)
        {
          g_string_append (out, "baleen_model_loaded{model=\"");
          append_label_value (out, g->loaded_model);
          g_string_append (out, "\"} 1\n");
        }
    }
  return g_string_free (out, FALSE);
}

void
bln_metrics_get_totals (BlnMetrics *m, BlnMetricsTotals *out)
{
  g_mutex_lock (&m->lock);
  out->prompt_tokens = m->prompt_tokens;
  out->cached_tokens = m->cached_tokens;
  out->generated_tokens = m->generated_tokens;
  out->ttft_count = m->ttft.count;
  out->ttft_sum = m->ttft.sum;
  g_mutex_unlock (&m->lock);
}
