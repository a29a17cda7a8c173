/* test-metrics.c — app/core/metrics.c: counters, histograms and the text
 * exposition. The format itself is checked against prometheus_client's
 * parser in tests/api/test_server.py; here the arithmetic and escaping. */
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <gio/gio.h>
#include "metrics.h"
#include "model-library.h"

/* The value of the sample line that starts with @prefix followed by ' '. */
static double
value_of (const char *text, const char *prefix)
{
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);

  for (char **l = lines; *l != NULL; l++)
    if (g_str_has_prefix (*l, prefix) && (*l)[strlen (prefix)] == ' ')
      return g_ascii_strtod (*l + strlen (prefix) + 1, NULL);
  return -1;
}

static void
test_counters (void)
{
  g_autoptr (BlnMetrics) m = bln_metrics_new ();
  g_autofree char *text = NULL;

  bln_metrics_count_request (m, "/v1/models", "GET", 200);
  bln_metrics_count_request (m, "/v1/models", "GET", 200);
  bln_metrics_count_request (m, "/v1/chat/completions", "POST", 404);
  bln_metrics_observe_generation (m, 100, 40, 7, "stop", 0.5);
  bln_metrics_observe_generation (m, 50, 10, 3, "length", -1);
  text = bln_metrics_render (m, NULL);
  g_assert_cmpfloat (value_of (text, "baleen_requests_total{route=\"/v1/models\",method=\"GET\","
                                     "status=\"200\"}"), ==, 2);
  g_assert_cmpfloat (value_of (text, "baleen_requests_total{route=\"/v1/chat/completions\","
                                     "method=\"POST\",status=\"404\"}"), ==, 1);
  g_assert_cmpfloat (value_of (text, "baleen_prompt_tokens_total"), ==, 150);
  g_assert_cmpfloat (value_of (text, "baleen_prompt_cached_tokens_total"), ==, 50);
  g_assert_cmpfloat (value_of (text, "baleen_generated_tokens_total"), ==, 10);
  g_assert_cmpfloat (value_of (text, "baleen_prefix_cache_hit_ratio"), ==, 50.0 / 150.0);
  g_assert_cmpfloat (value_of (text, "baleen_generations_total{finish=\"stop\"}"), ==, 1);
  /* only the observed duration counts */
  g_assert_cmpfloat (value_of (text, "baleen_request_duration_seconds_count"), ==, 1);
  g_assert_nonnull (strstr (text, "# TYPE baleen_requests_total counter\n"));
}

static void
test_histogram (void)
{
  g_autoptr (BlnMetrics) m = bln_metrics_new ();
  g_autofree char *text = NULL;
  const double obs[] = { 0.004, 0.005, 0.2, 3.0, 1000.0 };

  for (guint i = 0; i < G_N_ELEMENTS (obs); i++)
    bln_metrics_observe_ttft (m, obs[i]);
  bln_metrics_observe_ttft (m, -1);    /* ignored */
  text = bln_metrics_render (m, NULL);
  /* le is inclusive: 0.005 falls in the 0.005 bucket */
  g_assert_cmpfloat (value_of (text, "baleen_time_to_first_token_seconds_bucket{le=\"0.005\"}"),
                     ==, 2);
  g_assert_cmpfloat (value_of (text, "baleen_time_to_first_token_seconds_bucket{le=\"0.25\"}"),
                     ==, 3);
  g_assert_cmpfloat (value_of (text, "baleen_time_to_first_token_seconds_bucket{le=\"5\"}"),
                     ==, 4);
  g_assert_cmpfloat (value_of (text, "baleen_time_to_first_token_seconds_bucket{le=\"+Inf\"}"),
                     ==, 5);
  g_assert_cmpfloat (value_of (text, "baleen_time_to_first_token_seconds_count"), ==, 5);
  g_assert_cmpfloat_with_epsilon (value_of (text, "baleen_time_to_first_token_seconds_sum"),
                                  1003.209, 1e-9);
}

static void
test_escaping_and_gauges (void)
{
  g_autoptr (BlnMetrics) m = bln_metrics_new ();
  g_autofree char *text = NULL;
  BlnMetricsGauges g = { 2, 5, -1, -1, "we\"ird\\model\n", 3 };

  bln_metrics_count_request (m, "other", "GET", 404);
  text = bln_metrics_render (m, &g);
  g_assert_cmpfloat (value_of (text, "baleen_requests_running"), ==, 2);
  g_assert_cmpfloat (value_of (text, "baleen_queue_depth"), ==, 5);
  g_assert_null (strstr (text, "baleen_kv_blocks_used"));   /* negative: left out */
  g_assert_nonnull (strstr (text, "baleen_model_loaded{model=\"we\\\"ird\\\\model\\n\"} 1\n"));
}

/* The engine's counters come in through BlnMetricsGauges but are counters:
 * HELP, TYPE counter and one sample each, exact integers (no exponent), 0
 * rendered (the CPU engine's value), negative left out. */
static void
test_engine_counters (void)
{
  g_autoptr (BlnMetrics) m = bln_metrics_new ();
  g_autofree char *text = NULL;
  BlnMetricsGauges g = { -1, -1, -1, -1, NULL, -1, -1, -1, -1,
                         .gpu_compact_draws = 123456789012.0, .gpu_compact_fallbacks = 0 };

  text = bln_metrics_render (m, &g);
  g_assert_nonnull (strstr (text, "# HELP baleen_gpu_compact_draws_total GPU "));
  g_assert_nonnull (strstr (text, "# TYPE baleen_gpu_compact_draws_total counter\n"
                                  "baleen_gpu_compact_draws_total 123456789012\n"));
  g_assert_nonnull (strstr (text, "# HELP baleen_gpu_compact_fallbacks_total GPU "));
  g_assert_nonnull (strstr (text, "# TYPE baleen_gpu_compact_fallbacks_total counter\n"
                                  "baleen_gpu_compact_fallbacks_total 0\n"));
  g_assert_cmpfloat (value_of (text, "baleen_gpu_compact_draws_total"), ==, 123456789012.0);
  g_assert_cmpfloat (value_of (text, "baleen_gpu_compact_fallbacks_total"), ==, 0);
  g_clear_pointer (&text, g_free);

  g.gpu_compact_draws = 40;
  g.gpu_compact_fallbacks = 3;
  text = bln_metrics_render (m, &g);
  g_assert_cmpfloat (value_of (text, "baleen_gpu_compact_draws_total"), ==, 40);
  g_assert_cmpfloat (value_of (text, "baleen_gpu_compact_fallbacks_total"), ==, 3);
  g_clear_pointer (&text, g_free);

  g.gpu_compact_draws = g.gpu_compact_fallbacks = -1;
  text = bln_metrics_render (m, &g);
  g_assert_null (strstr (text, "baleen_gpu_compact_"));
}

static void
test_ids (void)
{
  struct { const char *path; gboolean dir; const char *quant; const char *id; } cases[] = {
    { "/m/DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf", FALSE, "Q4_K_M",
      "deepseek-r1-distill-qwen-7b-q4_k_m" },
    { "/m/SmolLM2-135M-Instruct.Q4_1.gguf", FALSE, "Q4_1", "smollm2-135m-instruct.q4_1" },
    { "/m/llama/model-q8_0.gguf", FALSE, "Q8_0", "llama-q8_0" },
    { "/m/qwen2/model.gguf", FALSE, "F32", "qwen2-f32" },
    { "/m/x/ggml-model-f16.gguf", FALSE, "F16", "x-f16" },
    { "/m/DeepSeek-V2-Lite-Chat", TRUE, NULL, "deepseek-v2-lite-chat" },
    { "/m/Qwen2.5 Coder (7B).GGUF", FALSE, "Q6_K", "qwen2.5-coder-7b-q6_k" },
    { "/m/---.gguf", FALSE, NULL, "model" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *id = bln_model_library_derive_id (cases[i].path, cases[i].dir,
                                                         cases[i].quant);
      g_assert_cmpstr (id, ==, cases[i].id);
    }
}

/* Copies the tiny llama GGUF to @root/@rel with modification time @mtime. */
static void
put_model (const char *root, const char *rel, gint64 mtime)
{
  g_autofree char *src = g_build_filename (g_getenv ("BALEEN_GOLDEN_DIR"), "models", "llama",
                                           "model-q8_0.gguf", NULL);
  g_autofree char *dst = g_build_filename (root, rel, NULL);
  g_autofree char *dir = g_path_get_dirname (dst);
  g_autofree char *data = NULL;
  g_autoptr (GFile) f = g_file_new_for_path (dst);
  g_autoptr (GError) error = NULL;
  gsize len;

  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  g_assert_true (g_file_get_contents (src, &data, &len, NULL));
  g_assert_true (g_file_set_contents (dst, data, len, NULL));
  g_assert_true (g_file_set_attribute_uint64 (f, G_FILE_ATTRIBUTE_TIME_MODIFIED, (guint64) mtime,
                                              G_FILE_QUERY_INFO_NONE, NULL, &error));
  g_assert_no_error (error);
}

/* The id the library gives the model at @rel below @root; checks that the
 * id finds that file again. */
static char *
id_of (BlnModelLibrary *lib, const char *root, const char *rel)
{
  g_autofree char *path = g_build_filename (root, rel, NULL);

  for (guint i = 0; i < bln_model_library_n_models (lib); i++)
    {
      const BlnModelEntry *e = bln_model_library_get (lib, i);
      if (g_str_equal (e->path, path))
        {
          g_assert_true (bln_model_library_lookup (lib, e->id, NULL) == e);
          return g_strdup (e->id);
        }
    }
  g_error ("%s is not in the library", rel);
  return NULL;
}

/* "-" and the first 8 hex digits of the SHA-256 of @rel (GLib's checksum). */
static char *
suffixed (const char *id, const char *rel)
{
  g_autofree char *sum = g_compute_checksum_for_string (G_CHECKSUM_SHA256, rel, -1);

  return g_strdup_printf ("%s-%.8s", id, sum);
}

static void
assert_all_unique (BlnModelLibrary *lib)
{
  for (guint i = 0; i < bln_model_library_n_models (lib); i++)
    for (guint j = i + 1; j < bln_model_library_n_models (lib); j++)
      g_assert_cmpstr (bln_model_library_get (lib, i)->id, !=, bln_model_library_get (lib, j)->id);
}

/* Files that derive the same id (a copy in a sub-folder, an imported copy
 * next to it, a name differing only in case) get distinct ids; the oldest
 * file keeps the plain one; the others' ids depend on their own path only,
 * so adding a file that sorts first does not rename anyone. */
static void
test_unique_ids (void)
{
  g_autofree char *root = g_dir_make_tmp ("baleen-lib-XXXXXX", NULL);
  g_autoptr (GError) error = NULL;
  BlnModelLibrary *lib;
  g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *want = NULL;
  g_autofree char *dpath = NULL, *argv_rm = NULL;

  put_model (root, "zoo/llama/model-q8_0.gguf", 1000000);
  put_model (root, "llama-q8_0.gguf", 2000000);
  put_model (root, "Llama-Q8_0.gguf", 2000000);
  put_model (root, "other/qwen.gguf", 3000000);

  lib = bln_model_library_new_from_dir (root, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (bln_model_library_n_models (lib), ==, 4);
  assert_all_unique (lib);
  a = id_of (lib, root, "zoo/llama/model-q8_0.gguf");
  b = id_of (lib, root, "llama-q8_0.gguf");
  c = id_of (lib, root, "Llama-Q8_0.gguf");
  g_assert_cmpstr (a, ==, "llama-q8_0");
  want = suffixed ("llama-q8_0", "llama-q8_0.gguf");
  g_assert_cmpstr (b, ==, want);
  g_clear_pointer (&want, g_free);
  want = suffixed ("llama-q8_0", "Llama-Q8_0.gguf");
  g_assert_cmpstr (c, ==, want);
  g_clear_pointer (&want, g_free);
  /* case is ignored in lookups: the plain id is the oldest file's */
  g_assert_cmpstr (bln_model_library_lookup (lib, "LLAMA-Q8_0", NULL)->id, ==, a);
  bln_model_library_free (lib);

  /* a newer copy in a folder that is scanned first changes nobody's id */
  put_model (root, "a/llama/model-q8_0.gguf", 4000000);
  lib = bln_model_library_new_from_dir (root, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (bln_model_library_n_models (lib), ==, 5);
  assert_all_unique (lib);
  {
    g_autofree char *a2 = id_of (lib, root, "zoo/llama/model-q8_0.gguf");
    g_autofree char *b2 = id_of (lib, root, "llama-q8_0.gguf");
    g_autofree char *c2 = id_of (lib, root, "Llama-Q8_0.gguf");

    g_assert_cmpstr (a2, ==, a);
    g_assert_cmpstr (b2, ==, b);
    g_assert_cmpstr (c2, ==, c);
  }
  d = id_of (lib, root, "a/llama/model-q8_0.gguf");
  want = suffixed ("llama-q8_0", "a/llama/model-q8_0.gguf");
  g_assert_cmpstr (d, ==, want);
  g_clear_pointer (&want, g_free);
  bln_model_library_free (lib);

  /* the owner gone: the oldest remaining file (ties: the smaller path) takes
   * the plain id, the others keep theirs; a root given with a trailing '/'
   * gives the same ids */
  dpath = g_build_filename (root, "zoo", "llama", "model-q8_0.gguf", NULL);
  g_assert_cmpint (g_remove (dpath), ==, 0);
  argv_rm = g_strconcat (root, "/", NULL);
  lib = bln_model_library_new_from_dir (argv_rm, &error);
  g_assert_no_error (error);
  assert_all_unique (lib);
  {
    g_autofree char *c3 = NULL, *b3 = NULL, *d3 = NULL;
    const BlnModelEntry *e = bln_model_library_lookup (lib, "llama-q8_0", NULL);

    g_assert_nonnull (e);
    g_assert_true (g_str_has_suffix (e->path, "Llama-Q8_0.gguf"));
    for (guint i = 0; i < bln_model_library_n_models (lib); i++)
      {
        const BlnModelEntry *x = bln_model_library_get (lib, i);
        if (g_str_has_suffix (x->path, "/llama-q8_0.gguf"))
          b3 = g_strdup (x->id);
        if (g_str_has_suffix (x->path, "a/llama/model-q8_0.gguf"))
          d3 = g_strdup (x->id);
      }
    g_assert_cmpstr (b3, ==, b);
    g_assert_cmpstr (d3, ==, d);
  }
  bln_model_library_free (lib);

  {
    const char *rels[] = { "llama-q8_0.gguf", "Llama-Q8_0.gguf", "other/qwen.gguf",
                           "a/llama/model-q8_0.gguf", "a/llama", "a", "zoo/llama", "zoo",
                           "other" };
    for (guint i = 0; i < G_N_ELEMENTS (rels); i++)
      {
        g_autofree char *p = g_build_filename (root, rels[i], NULL);
        g_remove (p);
      }
    g_rmdir (root);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Metrics/counters", test_counters);
  g_test_add_func ("/Baleen/Metrics/histogram", test_histogram);
  g_test_add_func ("/Baleen/Metrics/escaping-and-gauges", test_escaping_and_gauges);
  g_test_add_func ("/Baleen/Metrics/engine-counters", test_engine_counters);
  g_test_add_func ("/Baleen/ModelLibrary/ids", test_ids);
  g_test_add_func ("/Baleen/ModelLibrary/unique-ids", test_unique_ids);
  return g_test_run ();
}
