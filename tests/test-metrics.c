/* test-metrics.c — app/core/metrics.c: counters, histograms and the text
 * exposition. The format itself is checked against prometheus_client's
 * parser in tests/api/test_server.py; here the arithmetic and escaping. */
#include <string.h>
#include <glib.h>
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

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Metrics/counters", test_counters);
  g_test_add_func ("/Baleen/Metrics/histogram", test_histogram);
  g_test_add_func ("/Baleen/Metrics/escaping-and-gauges", test_escaping_and_gauges);
  g_test_add_func ("/Baleen/ModelLibrary/ids", test_ids);
  return g_test_run ();
}
