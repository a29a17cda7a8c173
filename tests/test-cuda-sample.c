/* test-cuda-sample.c — GPU sampling (engine/cuda/sample.h) against the CPU
 * sampler (engine/sampler.c, itself checked against HF transformers' logits
 * processors by test-sampler).
 *
 *  - /golden: the transformers cases of tests/golden/sampler: the GPU's greedy
 *    token is the golden argmax, its top-5 logprobs are torch's float64
 *    log-softmax within 1e-5, and for 40 seeds per case its sampled token is
 *    the CPU sampler's (and one of the golden survivors);
 *  - /random/<vocab>: rows of 1,000, 32,000, 102,400 and 151,936 logits of
 *    four shapes (a peaked "LLM-like" row, a Gaussian row, a coarse row full
 *    of ties, a row with -inf and NaN entries), under 22 parameter sets
 *    (greedy; temperature; top-k small, large and above the candidate limit;
 *    top-p; min-p; everything combined; repetition / presence / frequency
 *    penalties over a history that grows with the sampled tokens), several
 *    steps each: the GPU's token equals bln_sampler_sample()'s, its logprobs
 *    (chosen + top 5) are the CPU's within 1e-5 with the same ids, and both
 *    generators are still in step afterwards (the GPU used the uniform
 *    number exactly when the CPU did). On the peaked rows, where the GPU
 *    must decide alone, no call may fall back to the CPU sampler;
 *  - /edge: all -inf, a single usable logit, +inf, NaN, all-equal rows,
 *    top_p 0, min_p 1, top_k 1;
 *  - outputs are poisoned before every call (the host's result slots, and on
 *    every other call all device scratch and result memory), so that stale
 *    values cannot pass; the calls in between run on the state left by the
 *    previous call, as in real use.
 *
 * Without a usable GPU the cases skip with the reason (the argument checks
 * still run). BALEEN_BENCH=1 adds /bench: microseconds per call on a
 * 151,936-token row for greedy, temperature, top-p and combined settings,
 * next to the CPU sampler and the plain copy of the row to the host.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "bln-error.h"
#include "cuda-test-util.h"
#include "sampler.h"
#include "cuda/cuda.h"
#include "cuda/sample.h"

#define N_TOP 5

/* ---------------------------------------------------------------------------
 * Random data
 * ------------------------------------------------------------------------- */

static uint64_t rng_state;

static void
rng_seed (void)
{
  /* g_test_rand_int follows --seed, so a failure can be replayed. */
  rng_state = ((uint64_t) g_test_rand_int () << 32) ^ (uint64_t) g_test_rand_int ()
              ^ 0x9e3779b97f4a7c15ULL;
}

static uint64_t
rng_next (void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static double
rng_unit (void)
{
  return (double) (rng_next () >> 11) / 9007199254740992.0;
}

static double
rng_normal (void)
{
  double u = rng_unit (), v = rng_unit ();

  return sqrt (-2.0 * log (u + 1e-300)) * cos (2.0 * G_PI * v);
}

enum {
  ROW_PEAKED,     /* background N(0, 1.5) plus a few tokens 14..22 higher */
  ROW_GAUSS,      /* N(0, 2): mass over the whole vocabulary */
  ROW_TIES,       /* N(0, 2) rounded to quarters: many equal values */
  ROW_MASKED,     /* peaked, 40% -inf, 0.05% NaN */
  N_ROWS
};

static const char *const row_names[] = { "peaked", "gauss", "ties", "masked" };

static void
fill_row (float *x, int n, int kind)
{
  int i, n_hot = 3 + (int) (rng_next () % 10);

  for (i = 0; i < n; i++)
    {
      double g = rng_normal ();

      switch (kind)
        {
        case ROW_GAUSS:
          x[i] = (float) (2.0 * g);
          break;
        case ROW_TIES:
          x[i] = (float) (floor (8.0 * g + 0.5) / 4.0);
          break;
        default:
          x[i] = (float) (1.5 * g);
          break;
        }
    }
  if (kind == ROW_PEAKED || kind == ROW_MASKED)
    for (i = 0; i < n_hot; i++)
      x[rng_next () % (uint64_t) n] += (float) (14.0 + 8.0 * rng_unit ());
  if (kind == ROW_MASKED)
    for (i = 0; i < n; i++)
      {
        uint64_t r = rng_next () % 10000;

        if (x[i] < 10.0f && r < 4000)
          x[i] = -INFINITY;
        else if (x[i] < 10.0f && r < 4005)
          x[i] = NAN;
      }
}

/* ---------------------------------------------------------------------------
 * GPU plumbing
 * ------------------------------------------------------------------------- */

typedef struct {
  int n_vocab;
  BlnCudaSampler *gs;
  BlnCudaBuffer *d_logits;
  guint64 n_calls;
} Gpu;

static void
gpu_init (Gpu *g, int n_vocab)
{
  GError *error = NULL;

  g->n_vocab = n_vocab;
  g->gs = bln_cuda_sampler_new (n_vocab, &error);
  g_assert_no_error (error);
  g_assert_nonnull (g->gs);
  g->d_logits = bln_cuda_buffer_new ((size_t) n_vocab * sizeof (float), &error);
  g_assert_no_error (error);
  g->n_calls = 0;
}

static void
gpu_clear (Gpu *g)
{
  bln_cuda_sampler_free (g->gs);
  bln_cuda_buffer_free (g->d_logits);
}

static void
gpu_upload (Gpu *g, const float *x)
{
  GError *error = NULL;

  g_assert_true (BLN_CUDA_CHECK (cudaMemcpy (g->d_logits->ptr, x, (size_t) g->n_vocab * 4,
                                             cudaMemcpyHostToDevice), &error));
  g_assert_no_error (error);
}

static gboolean
lp_close (float a, float b)
{
  if (isinf (a) || isinf (b) || isnan (a) || isnan (b))
    return a == b;
  return fabsf (a - b) <= 1e-5f;
}

/* One step on the row already uploaded to @g: the GPU and the CPU sampler
 * (same parameters, history and generator state) must pick the same token
 * and report the same logprobs; both generators must stay in step. Returns
 * the token; *drew tells whether the CPU took a number. */
static int32_t
compare_step (Gpu *g, BlnSampler *cpu, BlnSampler *gpu, const float *x, int n_top,
              gboolean *drew)
{
  BlnLogprob top_c[N_TOP + 1], top_g[N_TOP + 1];
  int32_t id_c, id_g = -12345;
  double u_before = bln_sampler_peek_uniform (cpu);
  GError *error = NULL;
  int i;

  g_assert_cmpfloat (u_before, ==, bln_sampler_peek_uniform (gpu));
  for (i = 0; i <= N_TOP; i++)
    {
      top_g[i].id = 0x7eadbeef;
      top_g[i].logprob = NAN;
    }
  if (g->n_calls++ % 2 == 0)
    {
      g_assert_true (bln_cuda_sampler_poison (g->gs, &error));
      g_assert_no_error (error);
    }
  g_assert_true (bln_cuda_sample (g->gs, 0, g->d_logits->ptr, gpu, &id_g,
                                  n_top >= 0 ? top_g : NULL, MAX (n_top, 0), &error));
  g_assert_no_error (error);
  id_c = bln_sampler_sample (cpu, x, n_top >= 0 ? top_c : NULL, MAX (n_top, 0));
  if (id_g != id_c)
    g_test_message ("GPU picked %d (logit %g), CPU %d (logit %g)", id_g,
                    id_g >= 0 && id_g < g->n_vocab ? x[id_g] : NAN, id_c, x[id_c]);
  g_assert_cmpint (id_g, ==, id_c);
  *drew = bln_sampler_peek_uniform (cpu) != u_before;
  g_assert_cmpfloat (bln_sampler_peek_uniform (cpu), ==, bln_sampler_peek_uniform (gpu));
  if (n_top >= 0)
    for (i = 0; i <= n_top; i++)
      {
        g_assert_cmpint (top_g[i].id, ==, top_c[i].id);
        if (!lp_close (top_g[i].logprob, top_c[i].logprob))
          g_error ("logprob %d (id %d): GPU %.9g, CPU %.9g", i, top_c[i].id,
                   top_g[i].logprob, top_c[i].logprob);
      }
  return id_c;
}

/* ---------------------------------------------------------------------------
 * Parameter sets
 * ------------------------------------------------------------------------- */

typedef struct {
  const char *name;
  float temperature, top_p, min_p;
  int top_k;
  float rep, presence, frequency;
  int history;      /* random prompt tokens accepted first */
  int n_top;        /* -1: no logprobs */
} Combo;

static const Combo combos[] = {
  { "greedy", 0.0f, 1.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 0, N_TOP },
  { "greedy-penalties", 0.0f, 1.0f, 0.0f, 0, 1.3f, 0.5f, 0.25f, 200, -1 },
  { "temp1", 1.0f, 1.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 0, N_TOP },
  { "temp0.7", 0.7f, 1.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "temp1.5", 1.5f, 1.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 0, 0 },
  { "topk1", 1.0f, 1.0f, 0.0f, 1, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "topk40", 0.9f, 1.0f, 0.0f, 40, 1.0f, 0.0f, 0.0f, 0, N_TOP },
  { "topk1000", 1.2f, 1.0f, 0.0f, 1000, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "topk3000", 1.0f, 1.0f, 0.0f, 3000, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "topp0.9", 1.0f, 0.9f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 0, N_TOP },
  { "topp0.5-temp0.8", 0.8f, 0.5f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "topp0.999", 1.0f, 0.999f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "topp0", 1.0f, 0.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "minp0.05", 1.0f, 1.0f, 0.05f, 0, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "minp0.2-temp1.3", 1.3f, 1.0f, 0.2f, 0, 1.0f, 0.0f, 0.0f, 0, N_TOP },
  { "topk50-topp0.95", 0.8f, 0.95f, 0.0f, 50, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "topk2000-topp0.9", 1.0f, 0.9f, 0.0f, 2000, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "topk100-minp0.02", 1.0f, 1.0f, 0.02f, 100, 1.0f, 0.0f, 0.0f, 0, -1 },
  { "all", 0.8f, 0.95f, 0.02f, 50, 1.1f, 0.3f, 0.2f, 300, N_TOP },
  { "rep1.3", 1.0f, 1.0f, 0.0f, 0, 1.3f, 0.0f, 0.0f, 400, -1 },
  { "presence-frequency", 0.9f, 0.9f, 0.0f, 0, 1.0f, 1.5f, 0.7f, 400, N_TOP },
  { "negative-penalties", 1.0f, 1.0f, 0.05f, 0, 0.8f, -1.0f, -0.5f, 300, -1 },
};

/* Whether the GPU may hand a call to the CPU sampler (sample.h's list), for
 * a row of @kind: a wide nucleus, or top-k without top-p when the CPU's
 * order is its quickselect's. */
static gboolean
may_fall_back (const Combo *c, int n_vocab, int kind)
{
  gboolean topp = c->temperature > 0.0f && c->top_p < 1.0f && c->top_p > 0.0f;
  gboolean topk = c->temperature > 0.0f && c->top_k > 0;

  if (topp && (kind == ROW_GAUSS || kind == ROW_TIES || c->top_p > 0.99f))
    return TRUE;
  if (topk && !topp && (c->top_k > n_vocab / 8 || kind == ROW_TIES))
    return TRUE;
  return FALSE;
}

static void
run_combo (Gpu *g, const Combo *c, int kind, int steps, uint64_t seed, int *n_drew)
{
  BlnSamplerParams p;
  g_autoptr (BlnSampler) cpu = NULL;
  g_autoptr (BlnSampler) gpu = NULL;
  g_autofree float *x = g_new (float, g->n_vocab);
  guint64 fb0 = bln_cuda_sampler_fallbacks (g->gs);
  int i;

  bln_sampler_params_init (&p);
  p.temperature = c->temperature;
  p.top_p = c->top_p;
  p.min_p = c->min_p;
  p.top_k = c->top_k;
  p.repetition_penalty = c->rep;
  p.presence_penalty = c->presence;
  p.frequency_penalty = c->frequency;
  p.seed = seed;
  cpu = bln_sampler_new (&p, g->n_vocab);
  gpu = bln_sampler_new (&p, g->n_vocab);
  for (i = 0; i < c->history; i++)
    {
      /* repeats, so that counts above 1 occur */
      int32_t id = (int32_t) (rng_next () % (uint64_t) MIN (g->n_vocab, 2 * c->history + 1));

      bln_sampler_accept (cpu, id);
      bln_sampler_accept (gpu, id);
    }
  for (i = 0; i < steps; i++)
    {
      gboolean drew;
      int32_t id;

      fill_row (x, g->n_vocab, kind);
      /* tokens already seen get a push, so the penalties change choices */
      if (c->history > 0)
        x[rng_next () % (uint64_t) MIN (g->n_vocab, 2 * c->history + 1)] += 20.0f;
      gpu_upload (g, x);
      id = compare_step (g, cpu, gpu, x, c->n_top, &drew);
      *n_drew += drew;
      bln_sampler_accept (cpu, id);
      bln_sampler_accept (gpu, id);
    }
  if (!may_fall_back (c, g->n_vocab, kind))
    g_assert_cmpuint (bln_cuda_sampler_fallbacks (g->gs) - fb0, ==, 0);
}

static void
test_random (gconstpointer data)
{
  const int n_vocab = GPOINTER_TO_INT (data);
  const int steps = n_vocab > 50000 ? 6 : 12;
  Gpu g;
  int n_drew = 0;
  guint64 calls0, fb;

  if (!need_gpu ())
    return;
  rng_seed ();
  gpu_init (&g, n_vocab);
  calls0 = bln_cuda_sampler_calls (g.gs);
  for (guint c = 0; c < G_N_ELEMENTS (combos); c++)
    for (int kind = 0; kind < N_ROWS; kind++)
      {
        int before = n_drew;

        run_combo (&g, &combos[c], kind, steps, rng_next (), &n_drew);
        g_test_message ("%s on %s rows: %d draws", combos[c].name, row_names[kind],
                        n_drew - before);
      }
  fb = bln_cuda_sampler_fallbacks (g.gs);
  g_test_message ("vocabulary %d: %" G_GUINT64_FORMAT " calls, %d draws, %" G_GUINT64_FORMAT
                  " handed to the CPU sampler", n_vocab, bln_cuda_sampler_calls (g.gs) - calls0,
                  n_drew, fb);
  /* the draw path must really have run, and mostly on the GPU */
  g_assert_cmpint (n_drew, >, (int) G_N_ELEMENTS (combos) * steps);
  g_assert_cmpuint (fb * 2, <, bln_cuda_sampler_calls (g.gs) - calls0);
  gpu_clear (&g);
}

/* ---------------------------------------------------------------------------
 * Golden cases (transformers)
 * ------------------------------------------------------------------------- */

static void
test_golden (void)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *path = NULL;
  g_autoptr (JsonParser) parser = NULL;
  g_autoptr (GError) error = NULL;
  JsonArray *arr;
  guint n_cases, ci;

  if (!need_gpu ())
    return;
  path = g_build_filename (dir != NULL ? dir : "tests/golden", "sampler", "cases.json", NULL);
  parser = json_parser_new ();
  json_parser_load_from_file (parser, path, &error);
  g_assert_no_error (error);
  arr = json_object_get_array_member (json_node_get_object (json_parser_get_root (parser)),
                                      "cases");
  n_cases = json_array_get_length (arr);
  g_assert_cmpuint (n_cases, >=, 20);
  for (ci = 0; ci < n_cases; ci++)
    {
      JsonObject *o = json_array_get_object_element (arr, ci);
      JsonObject *jp = json_object_get_object_member (o, "params");
      JsonArray *bits = json_object_get_array_member (o, "logits_f32_bits");
      JsonArray *hist = json_object_get_array_member (o, "history");
      JsonArray *surv = json_object_get_array_member (o, "survivors");
      JsonArray *tids = json_object_get_array_member (o, "top_ids");
      JsonArray *tlps = json_object_get_array_member (o, "top_logprobs");
      int n_vocab = (int) json_object_get_int_member (o, "n_vocab");
      g_autofree float *x = g_new (float, n_vocab);
      g_autofree gboolean *is_surv = g_new0 (gboolean, n_vocab);
      BlnSamplerParams p, pg;
      BlnLogprob top[N_TOP + 1];
      int32_t id = -1;
      Gpu g;
      guint j;

      for (j = 0; j < (guint) n_vocab; j++)
        {
          guint32 b = (guint32) json_array_get_int_element (bits, j);

          memcpy (&x[j], &b, 4);
        }
      for (j = 0; j < json_array_get_length (surv); j++)
        is_surv[json_array_get_int_element (surv, j)] = TRUE;
      bln_sampler_params_init (&p);
      p.temperature = (float) json_object_get_double_member (jp, "temperature");
      p.top_k = (int) json_object_get_int_member (jp, "top_k");
      p.top_p = (float) json_object_get_double_member (jp, "top_p");
      p.min_p = (float) json_object_get_double_member (jp, "min_p");
      p.repetition_penalty = (float) json_object_get_double_member (jp, "repetition_penalty");
      p.presence_penalty = (float) json_object_get_double_member (jp, "presence_penalty");
      p.frequency_penalty = (float) json_object_get_double_member (jp, "frequency_penalty");

      gpu_init (&g, n_vocab);
      gpu_upload (&g, x);

      /* greedy and the raw logprobs, against transformers / torch */
      pg = p;
      pg.temperature = 0.0f;
      {
        g_autoptr (BlnSampler) s = bln_sampler_new (&pg, n_vocab);
        guint n_t = MIN (json_array_get_length (tids), N_TOP);

        for (j = 0; j < json_array_get_length (hist); j++)
          bln_sampler_accept (s, (int32_t) json_array_get_int_element (hist, j));
        for (j = 0; j <= N_TOP; j++)
          top[j].id = -7;
        g_assert_true (bln_cuda_sample (g.gs, 0, g.d_logits->ptr, s, &id, top, (int) n_t,
                                        &error));
        g_assert_no_error (error);
        g_assert_cmpint (id, ==, json_object_get_int_member (o, "greedy"));
        for (j = 0; j < n_t; j++)
          {
            g_assert_cmpint (top[1 + j].id, ==, json_array_get_int_element (tids, j));
            g_assert_cmpfloat_with_epsilon (top[1 + j].logprob,
                                            json_array_get_double_element (tlps, j), 1e-5);
          }
      }

      /* 40 seeded draws: the CPU's token, one of the golden survivors */
      for (int seed = 0; seed < 40; seed++)
        {
          g_autoptr (BlnSampler) cpu = NULL;
          g_autoptr (BlnSampler) gpu = NULL;
          gboolean drew;

          p.seed = 7000 + 100 * ci + seed;
          cpu = bln_sampler_new (&p, n_vocab);
          gpu = bln_sampler_new (&p, n_vocab);
          for (j = 0; j < json_array_get_length (hist); j++)
            {
              bln_sampler_accept (cpu, (int32_t) json_array_get_int_element (hist, j));
              bln_sampler_accept (gpu, (int32_t) json_array_get_int_element (hist, j));
            }
          id = compare_step (&g, cpu, gpu, x, seed % 2 == 0 ? N_TOP : -1, &drew);
          if (p.temperature > 0.0f)
            g_assert_true (is_surv[id]);
        }
      g_test_message ("%s: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                      " calls handed to the CPU", json_object_get_string_member (o, "name"),
                      bln_cuda_sampler_fallbacks (g.gs), bln_cuda_sampler_calls (g.gs));
      gpu_clear (&g);
    }
}

/* ---------------------------------------------------------------------------
 * Edge cases
 * ------------------------------------------------------------------------- */

static void
edge_run (Gpu *g, const float *x, float temperature, float top_p, float min_p, int top_k,
          int draws)
{
  BlnSamplerParams p;
  g_autoptr (BlnSampler) cpu = NULL;
  g_autoptr (BlnSampler) gpu = NULL;
  int i;

  bln_sampler_params_init (&p);
  p.temperature = temperature;
  p.top_p = top_p;
  p.min_p = min_p;
  p.top_k = top_k;
  p.seed = rng_next ();
  cpu = bln_sampler_new (&p, g->n_vocab);
  gpu = bln_sampler_new (&p, g->n_vocab);
  gpu_upload (g, x);
  for (i = 0; i < draws; i++)
    {
      gboolean drew;

      compare_step (g, cpu, gpu, x, i % 2 == 0 ? N_TOP : -1, &drew);
    }
}

static void
edge_row (Gpu *g, const float *x)
{
  static const float settings[][4] = {
    /* temperature, top_p, min_p, top_k */
    { 0.0f, 1.0f, 0.0f, 0 },
    { 1.0f, 1.0f, 0.0f, 0 },
    { 0.5f, 0.9f, 0.0f, 0 },
    { 1.0f, 0.0f, 0.0f, 0 },
    { 1.0f, 1.0f, 1.0f, 0 },
    { 1.0f, 1.0f, 0.1f, 0 },
    { 1.0f, 1.0f, 0.0f, 1 },
    { 1.0f, 1.0f, 0.0f, 7 },
    { 1.0f, 0.5f, 0.0f, 7 },
  };

  for (guint s = 0; s < G_N_ELEMENTS (settings); s++)
    edge_run (g, x, settings[s][0], settings[s][1], settings[s][2], (int) settings[s][3], 6);
}

static void
test_edge (void)
{
  static const int sizes[] = { 1000, 151936 };

  if (!need_gpu ())
    return;
  rng_seed ();
  for (guint si = 0; si < G_N_ELEMENTS (sizes); si++)
    {
      const int n = sizes[si];
      g_autofree float *x = g_new (float, n);
      Gpu g;
      int i;

      gpu_init (&g, n);
      /* nothing usable */
      for (i = 0; i < n; i++)
        x[i] = -INFINITY;
      edge_row (&g, x);
      /* one usable token */
      x[n / 3] = -3.0f;
      edge_row (&g, x);
      /* two usable, equal */
      x[n / 2] = -3.0f;
      edge_row (&g, x);
      /* all equal (ties everywhere; the CPU draws in id order) */
      for (i = 0; i < n; i++)
        x[i] = 0.25f;
      edge_row (&g, x);
      /* a +inf among ordinary values */
      fill_row (x, n, ROW_PEAKED);
      x[n - 1] = INFINITY;
      edge_row (&g, x);
      /* a NaN among ordinary values */
      fill_row (x, n, ROW_PEAKED);
      x[5] = NAN;
      edge_row (&g, x);
      /* -0 and +0 at the top */
      fill_row (x, n, ROW_GAUSS);
      for (i = 0; i < n; i++)
        x[i] = MIN (x[i], -1.0f);
      x[3] = -0.0f;
      x[n - 2] = 0.0f;
      edge_row (&g, x);
      gpu_clear (&g);
    }
}

/* ---------------------------------------------------------------------------
 * Checks that need no GPU
 * ------------------------------------------------------------------------- */

static void
test_arguments (void)
{
  g_autoptr (GError) error = NULL;
  BlnSamplerParams p;
  g_autoptr (BlnSampler) s = NULL;
  int32_t id = -1;

  g_assert_null (bln_cuda_sampler_new (0, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_null (bln_cuda_sampler_new ((1 << 24) + 1, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  bln_sampler_params_init (&p);
  s = bln_sampler_new (&p, 100);
  g_assert_false (bln_cuda_sample (NULL, 0, NULL, s, &id, NULL, 0, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  /* the generator helpers agree with the sampler's own draws: a sampler
   * that peeks and skips stays in step with one that samples */
  {
    float x[100];
    g_autoptr (BlnSampler) a = bln_sampler_new (&p, 100);
    g_autoptr (BlnSampler) b = bln_sampler_new (&p, 100);
    const int32_t *ids, *counts;

    for (int i = 0; i < 100; i++)
      x[i] = (float) (i % 7);
    for (int i = 0; i < 10; i++)
      {
        double u = bln_sampler_peek_uniform (b);

        g_assert_cmpfloat (u, >=, 0.0);
        g_assert_cmpfloat (u, <, 1.0);
        g_assert_cmpfloat (u, ==, bln_sampler_peek_uniform (a));
        (void) bln_sampler_sample (a, x, NULL, 0);
        bln_sampler_skip_uniform (b);
        g_assert_cmpfloat (bln_sampler_peek_uniform (a), ==, bln_sampler_peek_uniform (b));
      }
    g_assert_cmpint (bln_sampler_n_vocab (a), ==, 100);
    bln_sampler_accept (a, 5);
    bln_sampler_accept (a, 9);
    bln_sampler_accept (a, 5);
    g_assert_cmpint (bln_sampler_history (a, &ids, &counts), ==, 2);
    g_assert_cmpint (ids[0], ==, 5);
    g_assert_cmpint (ids[1], ==, 9);
    g_assert_cmpint (counts[5], ==, 2);
    g_assert_cmpint (counts[9], ==, 1);
  }
}

/* ---------------------------------------------------------------------------
 * Benchmark (BALEEN_BENCH=1)
 * ------------------------------------------------------------------------- */

static double
bench_gpu (Gpu *g, BlnSampler *s, int n_top, int iters)
{
  BlnLogprob top[N_TOP + 1];
  GError *error = NULL;
  int32_t id;
  gint64 t0;

  for (int i = 0; i < 20; i++)
    g_assert_true (bln_cuda_sample (g->gs, 0, g->d_logits->ptr, s, &id,
                                    n_top >= 0 ? top : NULL, MAX (n_top, 0), &error));
  t0 = g_get_monotonic_time ();
  for (int i = 0; i < iters; i++)
    g_assert_true (bln_cuda_sample (g->gs, 0, g->d_logits->ptr, s, &id,
                                    n_top >= 0 ? top : NULL, MAX (n_top, 0), &error));
  g_assert_no_error (error);
  return (double) (g_get_monotonic_time () - t0) / iters;
}

static void
test_bench (void)
{
  const int n = 151936;
  g_autofree float *x = g_new (float, n);
  g_autofree float *back = g_new (float, n);
  Gpu g;
  gint64 t0;

  if (!need_gpu ())
    return;
  rng_state = 0x243f6a8885a308d3ULL;
  gpu_init (&g, n);
  fill_row (x, n, ROW_PEAKED);
  gpu_upload (&g, x);
  t0 = g_get_monotonic_time ();
  for (int i = 0; i < 200; i++)
    g_assert_cmpint (cudaMemcpy (back, g.d_logits->ptr, (size_t) n * 4,
                                 cudaMemcpyDeviceToHost), ==, cudaSuccess);
  g_test_message ("bench: copying the %d logits to pageable host memory: %.1f us", n,
                  (double) (g_get_monotonic_time () - t0) / 200);
  for (guint c = 0; c < G_N_ELEMENTS (combos); c++)
    {
      const Combo *cb = &combos[c];
      BlnSamplerParams p;
      g_autoptr (BlnSampler) s = NULL;
      double gpu_us, cpu_us;
      guint64 fb0 = bln_cuda_sampler_fallbacks (g.gs);

      bln_sampler_params_init (&p);
      p.temperature = cb->temperature;
      p.top_p = cb->top_p;
      p.min_p = cb->min_p;
      p.top_k = cb->top_k;
      p.repetition_penalty = cb->rep;
      p.presence_penalty = cb->presence;
      p.frequency_penalty = cb->frequency;
      s = bln_sampler_new (&p, n);
      for (int i = 0; i < MAX (cb->history, 0); i++)
        bln_sampler_accept (s, (int32_t) (rng_next () % n));
      gpu_us = bench_gpu (&g, s, cb->n_top, 300);
      t0 = g_get_monotonic_time ();
      for (int i = 0; i < 30; i++)
        (void) bln_sampler_sample (s, x, NULL, 0);
      cpu_us = (double) (g_get_monotonic_time () - t0) / 30;
      g_test_message ("bench: %-20s logprobs %2d: GPU %8.1f us/token (%" G_GUINT64_FORMAT
                      " of 320 to the CPU), CPU sampler %8.1f us", cb->name, cb->n_top, gpu_us,
                      bln_cuda_sampler_fallbacks (g.gs) - fb0, cpu_us);
    }
  gpu_clear (&g);
}

int
main (int argc, char **argv)
{
  static const int vocabs[] = { 1000, 32000, 102400, 151936 };

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/CudaSample/arguments", test_arguments);
  g_test_add_func ("/Baleen/CudaSample/golden", test_golden);
  g_test_add_func ("/Baleen/CudaSample/edge", test_edge);
  for (guint i = 0; i < G_N_ELEMENTS (vocabs); i++)
    {
      g_autofree char *path = g_strdup_printf ("/Baleen/CudaSample/random/%d", vocabs[i]);

      g_test_add_data_func (path, GINT_TO_POINTER (vocabs[i]), test_random);
    }
  if (g_strcmp0 (g_getenv ("BALEEN_BENCH"), "1") == 0)
    g_test_add_func ("/Baleen/CudaSample/bench", test_bench);
  return g_test_run ();
}
