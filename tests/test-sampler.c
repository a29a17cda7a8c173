/* test-sampler.c — the sampler against HF transformers' logits processors.
 *
 * tests/golden/sampler/cases.json comes from tools/gen_sampler_golden.py:
 * random logits and histories run through transformers'
 * RepetitionPenalty / Temperature / TopK / TopP / MinP processors (plus the
 * OpenAI presence and frequency penalties), with the surviving tokens, their
 * renormalised probabilities, the greedy choice and torch's float64
 * log-softmax of the raw logits.
 */
#include <math.h>
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "bln-error.h"
#include "sampler.h"

typedef struct {
  const char *name;
  int n_vocab;
  float *logits;
  GArray *history;       /* int32_t */
  BlnSamplerParams params;
  GArray *survivors;     /* int32_t, ascending */
  GArray *probs;         /* double, same order */
  int32_t greedy;
  int32_t top_ids[5];
  double top_logprobs[5];
  int n_top;
} Case;

static JsonParser *cases_parser;
static GPtrArray *cases;

static void
case_free (gpointer p)
{
  Case *c = p;

  g_free (c->logits);
  g_array_unref (c->history);
  g_array_unref (c->survivors);
  g_array_unref (c->probs);
  g_free (c);
}

static void
load_cases (void)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *path = g_build_filename (dir != NULL ? dir : "tests/golden", "sampler",
                                            "cases.json", NULL);
  g_autoptr(GError) error = NULL;
  JsonArray *arr;
  guint i, j;

  cases_parser = json_parser_new ();
  json_parser_load_from_file (cases_parser, path, &error);
  g_assert_no_error (error);
  arr = json_object_get_array_member (json_node_get_object (json_parser_get_root (cases_parser)),
                                      "cases");
  cases = g_ptr_array_new_with_free_func (case_free);
  for (i = 0; i < json_array_get_length (arr); i++)
    {
      JsonObject *o = json_array_get_object_element (arr, i);
      JsonObject *p = json_object_get_object_member (o, "params");
      JsonArray *bits = json_object_get_array_member (o, "logits_f32_bits");
      JsonArray *a;
      Case *c = g_new0 (Case, 1);

      c->name = json_object_get_string_member (o, "name");
      c->n_vocab = (int) json_object_get_int_member (o, "n_vocab");
      g_assert_cmpint (json_array_get_length (bits), ==, c->n_vocab);
      c->logits = g_new (float, c->n_vocab);
      for (j = 0; j < (guint) c->n_vocab; j++)
        {
          guint32 b = (guint32) json_array_get_int_element (bits, j);
          memcpy (&c->logits[j], &b, 4);
        }
      c->history = g_array_new (FALSE, FALSE, sizeof (int32_t));
      a = json_object_get_array_member (o, "history");
      for (j = 0; j < json_array_get_length (a); j++)
        {
          int32_t id = (int32_t) json_array_get_int_element (a, j);
          g_array_append_val (c->history, id);
        }
      bln_sampler_params_init (&c->params);
      c->params.temperature = (float) json_object_get_double_member (p, "temperature");
      c->params.top_k = (int) json_object_get_int_member (p, "top_k");
      c->params.top_p = (float) json_object_get_double_member (p, "top_p");
      c->params.min_p = (float) json_object_get_double_member (p, "min_p");
      c->params.repetition_penalty = (float) json_object_get_double_member (p,
                                                                            "repetition_penalty");
      c->params.presence_penalty = (float) json_object_get_double_member (p, "presence_penalty");
      c->params.frequency_penalty = (float) json_object_get_double_member (p,
                                                                           "frequency_penalty");
      c->params.seed = 1000 + i;
      c->survivors = g_array_new (FALSE, FALSE, sizeof (int32_t));
      c->probs = g_array_new (FALSE, FALSE, sizeof (double));
      a = json_object_get_array_member (o, "survivors");
      for (j = 0; j < json_array_get_length (a); j++)
        {
          int32_t id = (int32_t) json_array_get_int_element (a, j);
          double pr = json_array_get_double_element (json_object_get_array_member (o, "probs"), j);

          g_array_append_val (c->survivors, id);
          g_array_append_val (c->probs, pr);
        }
      c->greedy = (int32_t) json_object_get_int_member (o, "greedy");
      a = json_object_get_array_member (o, "top_ids");
      c->n_top = (int) json_array_get_length (a);
      for (j = 0; j < (guint) c->n_top; j++)
        {
          c->top_ids[j] = (int32_t) json_array_get_int_element (a, j);
          c->top_logprobs[j] = json_array_get_double_element (
              json_object_get_array_member (o, "top_logprobs"), j);
        }
      g_ptr_array_add (cases, c);
    }
  g_assert_cmpuint (cases->len, >=, 20);
}

static BlnSampler *
sampler_for (const Case *c, const BlnSamplerParams *params)
{
  BlnSampler *s = bln_sampler_new (params != NULL ? params : &c->params, c->n_vocab);
  guint i;

  g_assert_nonnull (s);
  for (i = 0; i < c->history->len; i++)
    bln_sampler_accept (s, g_array_index (c->history, int32_t, i));
  return s;
}

static int
compare_cand_id (const void *a, const void *b)
{
  const BlnCandidate *x = a, *y = b;

  return (x->id > y->id) - (x->id < y->id);
}

/* Index of @id among the survivors, or -1. */
static int
survivor_index (const Case *c, int32_t id)
{
  guint i;

  for (i = 0; i < c->survivors->len; i++)
    if (g_array_index (c->survivors, int32_t, i) == id)
      return (int) i;
  return -1;
}

static void
test_hf_filter (void)
{
  guint k;

  for (k = 0; k < cases->len; k++)
    {
      const Case *c = g_ptr_array_index (cases, k);
      g_autoptr(BlnSampler) s = sampler_for (c, NULL);
      const BlnCandidate *out;
      g_autofree BlnCandidate *sorted = NULL;
      int n, i;

      n = bln_sampler_filter (s, c->logits, &out);
      if (n != (int) c->survivors->len)
        g_error ("%s: %d survivors, transformers keeps %u", c->name, n, c->survivors->len);
      sorted = g_memdup2 (out, sizeof *out * n);
      qsort (sorted, n, sizeof *sorted, compare_cand_id);
      for (i = 0; i < n; i++)
        {
          double want = g_array_index (c->probs, double, i);

          g_assert_cmpint (sorted[i].id, ==, g_array_index (c->survivors, int32_t, i));
          if (fabs (sorted[i].prob - want) > 1e-6)
            g_error ("%s: token %d has probability %.9g, transformers %.9g", c->name,
                     sorted[i].id, sorted[i].prob, want);
        }
    }
}

static void
test_greedy (void)
{
  guint k;

  for (k = 0; k < cases->len; k++)
    {
      const Case *c = g_ptr_array_index (cases, k);
      BlnSamplerParams p = c->params;
      g_autoptr(BlnSampler) s = NULL;
      const BlnCandidate *out;
      int r;

      p.temperature = 0.0f;
      s = sampler_for (c, &p);
      for (r = 0; r < 3; r++)
        g_assert_cmpint (bln_sampler_sample (s, c->logits, NULL, 0), ==, c->greedy);
      g_assert_cmpint (bln_sampler_filter (s, c->logits, &out), ==, 1);
      g_assert_cmpint (out[0].id, ==, c->greedy);
      g_assert_cmpfloat (out[0].prob, ==, 1.0f);
    }
}

/* A single survivor is always chosen, whatever the seed. */
static void
test_single_survivor (void)
{
  guint k;
  int checked = 0;

  for (k = 0; k < cases->len; k++)
    {
      const Case *c = g_ptr_array_index (cases, k);
      g_autoptr(BlnSampler) s = NULL;
      int r;

      if (c->survivors->len != 1)
        continue;
      s = sampler_for (c, NULL);
      for (r = 0; r < 50; r++)
        g_assert_cmpint (bln_sampler_sample (s, c->logits, NULL, 0), ==,
                         g_array_index (c->survivors, int32_t, 0));
      checked++;
    }
  g_assert_cmpint (checked, >=, 2);
}

static void
run_chain (const Case *c, uint64_t seed, int32_t *out, int n)
{
  BlnSamplerParams p = c->params;
  g_autoptr(BlnSampler) s = NULL;
  int i;

  p.seed = seed;
  s = bln_sampler_new (&p, c->n_vocab);
  for (i = 0; i < n; i++)
    {
      out[i] = bln_sampler_sample (s, c->logits, NULL, 0);
      bln_sampler_accept (s, out[i]);
    }
}

static void
test_seeded (void)
{
  guint k;

  for (k = 0; k < cases->len; k++)
    {
      const Case *c = g_ptr_array_index (cases, k);
      int32_t a[200], b[200], d[200];
      g_autoptr(BlnSampler) s = NULL;
      int i;

      run_chain (c, 42, a, 200);
      run_chain (c, 42, b, 200);
      g_assert_cmpmem (a, sizeof a, b, sizeof b);
      if (c->survivors->len >= 10 && c->params.repetition_penalty == 1.0f
          && c->params.presence_penalty == 0.0f && c->params.frequency_penalty == 0.0f)
        {
          run_chain (c, 43, d, 200);
          g_assert_true (memcmp (a, d, sizeof a) != 0);
        }
      /* reset restarts the same stream */
      s = bln_sampler_new (&c->params, c->n_vocab);
      for (i = 0; i < 20; i++)
        a[i] = bln_sampler_sample (s, c->logits, NULL, 0);
      bln_sampler_reset (s);
      for (i = 0; i < 20; i++)
        g_assert_cmpint (bln_sampler_sample (s, c->logits, NULL, 0), ==, a[i]);
    }
}

/* Upper 1e-5 tail of chi-square with @df degrees of freedom
 * (Wilson-Hilferty approximation). */
static double
chi2_bound (int df)
{
  const double z = 4.265;
  double h = 2.0 / (9.0 * df);

  return df * pow (1.0 - h + z * sqrt (h), 3.0);
}

static void
check_distribution (const Case *c, uint64_t seed)
{
  const int n_samples = 20000;
  BlnSamplerParams p = c->params;
  g_autoptr(BlnSampler) s = NULL;
  g_autofree int *hits = g_new0 (int, c->survivors->len);
  double chi2 = 0.0, pooled_e = 0.0, pooled_o = 0.0;
  int i, df = -1;

  p.seed = seed;
  s = sampler_for (c, &p);
  for (i = 0; i < n_samples; i++)
    {
      int32_t id = bln_sampler_sample (s, c->logits, NULL, 0);
      int at = survivor_index (c, id);

      if (at < 0)
        g_error ("%s: sampled token %d, which transformers filters out", c->name, id);
      hits[at]++;
    }
  /* bins expected to hold fewer than 5 samples are pooled into one */
  for (i = 0; i < (int) c->survivors->len; i++)
    {
      double e = g_array_index (c->probs, double, i) * n_samples;

      if (e < 5.0)
        {
          pooled_e += e;
          pooled_o += hits[i];
          continue;
        }
      chi2 += (hits[i] - e) * (hits[i] - e) / e;
      df++;
    }
  if (pooled_e > 0.0)
    {
      chi2 += (pooled_o - pooled_e) * (pooled_o - pooled_e) / MAX (pooled_e, 1.0);
      df++;
    }
  if (df < 1)
    return;
  if (chi2 > chi2_bound (df))
    g_error ("%s: chi-square %.1f with %d degrees of freedom (bound %.1f)", c->name, chi2, df,
             chi2_bound (df));
}

static void
test_distribution (void)
{
  guint k;
  int checked = 0;

  for (k = 0; k < cases->len; k++)
    {
      const Case *c = g_ptr_array_index (cases, k);

      /* the cases with a handful to a few hundred survivors; of the large
       * vocabularies only the ones with few survivors, to keep this quick */
      if (c->survivors->len < 2 || c->survivors->len > 600
          || (c->n_vocab > 512 && c->survivors->len > 40))
        continue;
      {
        gint64 t0 = g_get_monotonic_time ();
        check_distribution (c, 7 + k);
        g_test_message ("%s: %.2fs", c->name, (g_get_monotonic_time () - t0) / 1e6);
      }
      checked++;
    }
  g_assert_cmpint (checked, >=, 10);
}

static double
logsoftmax64 (const float *l, int n, int id)
{
  double mx = -INFINITY, sum = 0.0;
  int i;

  for (i = 0; i < n; i++)
    mx = MAX (mx, (double) l[i]);
  for (i = 0; i < n; i++)
    sum += exp ((double) l[i] - mx);
  return (double) l[id] - mx - log (sum);
}

static void
test_logprobs (void)
{
  guint k;

  for (k = 0; k < cases->len; k++)
    {
      const Case *c = g_ptr_array_index (cases, k);
      g_autoptr(BlnSampler) s = sampler_for (c, NULL);
      BlnLogprob top[6];
      int32_t id;
      int i, r;

      for (r = 0; r < 5; r++)
        {
          id = bln_sampler_sample (s, c->logits, top, c->n_top);
          g_assert_cmpint (top[0].id, ==, id);
          g_assert_cmpfloat_with_epsilon (top[0].logprob, logsoftmax64 (c->logits, c->n_vocab, id),
                                          1e-5);
          g_assert_cmpfloat_with_epsilon (bln_logprob (c->logits, c->n_vocab, id),
                                          logsoftmax64 (c->logits, c->n_vocab, id), 1e-12);
          for (i = 0; i < c->n_top; i++)
            {
              g_assert_cmpint (top[1 + i].id, ==, c->top_ids[i]);
              g_assert_cmpfloat_with_epsilon (top[1 + i].logprob, c->top_logprobs[i], 1e-5);
            }
        }
      /* logprobs do not depend on the sampling parameters */
      {
        BlnSamplerParams p = c->params;
        g_autoptr(BlnSampler) g = NULL;

        p.temperature = 0.0f;
        g = sampler_for (c, &p);
        id = bln_sampler_sample (g, c->logits, top, 1);
        g_assert_cmpint (top[1].id, ==, c->top_ids[0]);
        g_assert_cmpfloat_with_epsilon (top[0].logprob,
                                        logsoftmax64 (c->logits, c->n_vocab, id), 1e-5);
      }
    }
}

static void
test_edges (void)
{
  BlnSamplerParams p;
  g_autoptr(BlnSampler) s = NULL;
  float l[6] = { NAN, -INFINITY, 1.0f, NAN, 3.0f, -INFINITY };
  float dead[3] = { -INFINITY, NAN, -INFINITY };
  BlnLogprob top[9];
  const BlnCandidate *out;
  int i, n;

  bln_sampler_params_init (&p);
  g_assert_true (bln_sampler_params_validate (&p, NULL));
  p.seed = 5;
  s = bln_sampler_new (&p, 6);
  for (i = 0; i < 200; i++)
    {
      int32_t id = bln_sampler_sample (s, l, top, 8);

      g_assert_true (id == 2 || id == 4);
      g_assert_cmpint (top[1].id, ==, 4);
      g_assert_cmpint (top[2].id, ==, 2);
      g_assert_cmpint (top[3].id, ==, 1);   /* -inf tokens come last, NaN never */
      g_assert_cmpint (top[4].id, ==, 5);
      g_assert_cmpint (top[5].id, ==, -1);
      g_assert_true (isinf (top[3].logprob) && top[3].logprob < 0);
    }
  n = bln_sampler_filter (s, l, &out);
  g_assert_cmpint (n, ==, 2);
  bln_sampler_free (g_steal_pointer (&s));

  s = bln_sampler_new (&p, 3);
  g_assert_cmpint (bln_sampler_sample (s, dead, NULL, 0), ==, 0);
  bln_sampler_accept (s, -1);       /* ignored */
  bln_sampler_accept (s, 3);        /* ignored */
  bln_sampler_free (g_steal_pointer (&s));

  /* the validator names each bad field */
  {
    struct { const char *field; BlnSamplerParams p; } bad[7];
    guint k;

    for (k = 0; k < G_N_ELEMENTS (bad); k++)
      bln_sampler_params_init (&bad[k].p);
    bad[0].field = "temperature"; bad[0].p.temperature = -1.0f;
    bad[1].field = "top_p"; bad[1].p.top_p = 1.5f;
    bad[2].field = "min_p"; bad[2].p.min_p = NAN;
    bad[3].field = "top_k"; bad[3].p.top_k = -3;
    bad[4].field = "repetition_penalty"; bad[4].p.repetition_penalty = 0.0f;
    bad[5].field = "presence_penalty"; bad[5].p.presence_penalty = 2.5f;
    bad[6].field = "frequency_penalty"; bad[6].p.frequency_penalty = -2.5f;
    for (k = 0; k < G_N_ELEMENTS (bad); k++)
      {
        g_autoptr(GError) error = NULL;

        g_assert_false (bln_sampler_params_validate (&bad[k].p, &error));
        g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
        g_assert_nonnull (strstr (error->message, bad[k].field));
      }
  }
}

static int
compare_desc (const void *a, const void *b)
{
  float x = *(const float *) a, y = *(const float *) b;

  return (x < y) - (x > y);
}

/* A 150k vocabulary: the nucleus agrees with a full sort, and the time per
 * token is printed (not asserted). */
static void
test_large_vocab (void)
{
  const int V = 151936;
  g_autofree float *l = g_new (float, V);
  g_autofree float *sorted = NULL;
  g_autoptr(BlnSampler) s = NULL;
  BlnSamplerParams p;
  const BlnCandidate *out;
  double mx, total = 0.0, cum = 0.0;
  gint64 t0;
  int i, n, want = 0, r;
  GRand *rand = g_rand_new_with_seed (99);

  for (i = 0; i < V; i++)
    l[i] = (float) (g_rand_double_range (rand, -4.0, 4.0) + (i % 1000 == 0 ? 8.0 : 0.0));
  g_rand_free (rand);

  bln_sampler_params_init (&p);
  p.top_p = 0.8f;
  p.temperature = 0.9f;
  s = bln_sampler_new (&p, V);
  n = bln_sampler_filter (s, l, &out);

  sorted = g_new (float, V);
  for (i = 0; i < V; i++)
    sorted[i] = l[i] / 0.9f;
  qsort (sorted, V, sizeof (float), compare_desc);
  mx = sorted[0];
  for (i = 0; i < V; i++)
    total += exp (sorted[i] - mx);
  for (i = 0; i < V && cum < 0.8 * total; i++)
    {
      cum += exp (sorted[i] - mx);
      want++;
    }
  g_assert_cmpint (n, ==, want);

  t0 = g_get_monotonic_time ();
  for (r = 0; r < 20; r++)
    bln_sampler_sample (s, l, NULL, 0);
  g_test_message ("150k vocabulary, top_p 0.8 (%d survivors): %.2f ms per token", n,
                  (g_get_monotonic_time () - t0) / 20 / 1000.0);
  bln_sampler_free (g_steal_pointer (&s));
  p.top_p = 1.0f;
  p.top_k = 40;
  s = bln_sampler_new (&p, V);
  t0 = g_get_monotonic_time ();
  for (r = 0; r < 20; r++)
    bln_sampler_sample (s, l, NULL, 0);
  g_test_message ("150k vocabulary, top_k 40: %.2f ms per token",
                  (g_get_monotonic_time () - t0) / 20 / 1000.0);
  g_assert_cmpint (bln_sampler_filter (s, l, &out), ==, 40);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  load_cases ();

  g_test_add_func ("/Baleen/Sampler/hf-filter", test_hf_filter);
  g_test_add_func ("/Baleen/Sampler/greedy", test_greedy);
  g_test_add_func ("/Baleen/Sampler/single-survivor", test_single_survivor);
  g_test_add_func ("/Baleen/Sampler/seeded", test_seeded);
  g_test_add_func ("/Baleen/Sampler/distribution", test_distribution);
  g_test_add_func ("/Baleen/Sampler/logprobs", test_logprobs);
  g_test_add_func ("/Baleen/Sampler/edges", test_edges);
  g_test_add_func ("/Baleen/Sampler/large-vocab", test_large_vocab);

  rc = g_test_run ();
  g_ptr_array_unref (cases);
  g_object_unref (cases_parser);
  return rc;
}
