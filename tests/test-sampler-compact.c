/* test-sampler-compact.c — the compact sampler (bln_sampler_sample_compact,
 * docs/GPU-SAMPLING.md) against bln_sampler_sample() on the full row.
 *
 * Records are built on the CPU by bln_compact_row_build() (what the GPU
 * kernel computes, summed in id order), with raw_lse nudged by a relative
 * 1e-15 as a GPU's different summation order would. For every row two
 * samplers with the same parameters, history and generator position run:
 * one on the full row, one on the record. Whenever the record decides
 * (TRUE), the token must be the same, the generators must still be in step,
 * and the chosen and top logprobs equal within 1e-6 (absolute, plus 1e-6
 * relative); when it does not, its sampler must be untouched.
 *
 *  - /random: 6,000 rows of four shapes (peaked "LLM-like", Gaussian, coarse
 *    with many ties, with NaN / -inf) under 16 parameter sets (greedy,
 *    temperature with top-k / top-p / min-p, penalties, combinations, top
 *    logprobs), with K = bln_sampler_compact_k(); fallbacks counted per set.
 *    Greedy without penalties must never fall back; on peaked rows every
 *    typical set must decide at least 97% of its draws;
 *  - /adversarial: ties across the K boundary, all-equal rows, all -inf,
 *    all NaN, +inf, a single usable logit, rows smaller than K, penalties
 *    that push every listed token below the (K+1)-th value: same checks.
 */
#include <math.h>
#include <string.h>
#include <glib.h>

#include "sampler.h"
#include "sampler-test-util.h"

#define VOCAB 5003          /* not a multiple of anything useful */
#define MAX_NTOP 20

typedef struct {
  const char *name;
  float temperature, top_p, min_p;
  int top_k;
  float rep, pres, freq;
  int n_top;              /* -1: no logprobs */
  gboolean typical;       /* must rarely fall back on peaked rows */
} Mix;

static const Mix mixes[] = {
  { "greedy", 0.0f, 1.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, -1, TRUE },
  { "greedy-top5", 0.0f, 1.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 5, TRUE },
  { "greedy-penalties", 0.0f, 1.0f, 0.0f, 0, 1.3f, 0.5f, 0.2f, 2, TRUE },
  { "top-k-40", 0.8f, 1.0f, 0.0f, 40, 1.0f, 0.0f, 0.0f, 0, TRUE },
  { "top-k-1", 1.0f, 1.0f, 0.0f, 1, 1.0f, 0.0f, 0.0f, -1, TRUE },
  { "top-k-256-p", 1.2f, 0.9f, 0.0f, 256, 1.0f, 0.0f, 0.0f, 3, TRUE },
  { "top-p-0.9", 0.7f, 0.9f, 0.0f, 0, 1.0f, 0.0f, 0.0f, 1, TRUE },
  { "top-p-0.95", 1.0f, 0.95f, 0.0f, 0, 1.0f, 0.0f, 0.0f, -1, TRUE },
  { "top-p-0", 1.0f, 0.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, -1, TRUE },
  { "min-p-0.05", 1.0f, 1.0f, 0.05f, 0, 1.0f, 0.0f, 0.0f, 0, TRUE },
  { "top-p-min-p", 0.6f, 0.8f, 0.1f, 0, 1.0f, 0.0f, 0.0f, 20, TRUE },
  { "top-p-penalties", 0.7f, 0.9f, 0.0f, 0, 1.1f, 0.3f, 0.1f, 2, TRUE },
  { "top-k-penalties", 0.9f, 1.0f, 0.0f, 50, 0.8f, -0.5f, 0.4f, -1, TRUE },
  { "min-p-penalties", 1.3f, 1.0f, 0.02f, 0, 1.0f, 1.0f, -0.3f, 5, TRUE },
  { "all", 0.5f, 0.92f, 0.03f, 100, 1.2f, 0.2f, 0.2f, 4, TRUE },
  { "plain", 1.0f, 1.0f, 0.0f, 0, 1.0f, 0.0f, 0.0f, -1, FALSE },
};
#define N_MIXES G_N_ELEMENTS (mixes)

typedef struct {
  guint64 draws, decided;
} Count;

/* One draw on @row both ways; returns TRUE when the record decided. */
static gboolean
check_row (const float *row, int n_vocab, const Mix *m, const int32_t *hist, int n_hist,
           guint64 seed, int skips)
{
  BlnSamplerParams p;
  g_autoptr (BlnSampler) a = NULL;
  g_autoptr (BlnSampler) b = NULL;
  BlnLogprob ta[MAX_NTOP + 1], tb[MAX_NTOP + 1];
  BlnCompactRow rec;
  int32_t ia, ib = -1;
  gboolean decided;
  double peek_before;
  int i, k, n_top = MAX (m->n_top, 0);

  bln_sampler_params_init (&p);
  p.temperature = m->temperature;
  p.top_p = m->top_p;
  p.min_p = m->min_p;
  p.top_k = m->top_k;
  p.repetition_penalty = m->rep;
  p.presence_penalty = m->pres;
  p.frequency_penalty = m->freq;
  p.seed = seed;
  a = bln_sampler_new (&p, n_vocab);
  b = bln_sampler_new (&p, n_vocab);
  for (i = 0; i < n_hist; i++)
    {
      bln_sampler_accept (a, hist[i]);
      bln_sampler_accept (b, hist[i]);
    }
  for (i = 0; i < skips; i++)
    {
      bln_sampler_skip_uniform (a);
      bln_sampler_skip_uniform (b);
    }

  k = bln_sampler_compact_k (b, n_top);
  if (k == 0)
    {
      /* only plain sampling, or a top-k the record cannot cover */
      g_assert_true (m->temperature > 0.0f && (m->top_k > n_vocab / 8
                                               || (m->top_k == 0 && m->top_p >= 1.0f
                                                   && m->min_p <= 0.0f)));
      return FALSE;
    }
  g_assert_cmpint (k, >=, 256);
  g_assert_cmpint (k, >=, m->top_k);
  bln_compact_row_build (b, row, k, &rec);
  rec.raw_lse *= 1.0 + 1e-15;
  peek_before = bln_sampler_peek_uniform (b);

  memset (ta, 0x55, sizeof ta);
  memset (tb, 0x55, sizeof tb);
  ia = bln_sampler_sample (a, row, m->n_top >= 0 ? ta : NULL, n_top);
  decided = bln_sampler_sample_compact (b, &rec, m->n_top >= 0 ? tb : NULL, n_top, &ib);
  if (decided)
    {
      if (ia != ib)
        g_error ("mix %s: full row drew %d, record %d", m->name, ia, ib);
      g_assert_cmpfloat (bln_sampler_peek_uniform (a), ==, bln_sampler_peek_uniform (b));
      if (m->n_top >= 0)
        for (i = 0; i <= n_top; i++)
          {
            g_assert_cmpint (ta[i].id, ==, tb[i].id);
            if (isinf (ta[i].logprob) || isinf (tb[i].logprob))
              g_assert_cmpfloat (ta[i].logprob, ==, tb[i].logprob);
            else
              g_assert_cmpfloat (fabs (ta[i].logprob - tb[i].logprob), <=,
                                 1e-6 + 1e-6 * fabs (ta[i].logprob));
          }
    }
  else
    g_assert_cmpfloat (bln_sampler_peek_uniform (b), ==, peek_before);
  bln_compact_row_clear (&rec);
  return decided;
}

/* A history of @n ids: some of the row's largest tokens (so the penalties
 * matter) and random others. */
static int
make_history (const float *row, int n_vocab, int32_t *hist, int n)
{
  int i;

  for (i = 0; i < n; i++)
    {
      if (rnd () % 3 == 0)
        {
          /* the best of a few random picks */
          int32_t best = (int32_t) (rnd () % (guint64) n_vocab), j;

          for (j = 0; j < 64; j++)
            {
              int32_t c = (int32_t) (rnd () % (guint64) n_vocab);

              if (row[c] > row[best])
                best = c;
            }
          hist[i] = best;
        }
      else
        hist[i] = (int32_t) (rnd () % (guint64) n_vocab);
    }
  return n;
}

static void
test_random (void)
{
  g_autofree float *row = g_new (float, VOCAB);
  int32_t hist[300];
  Count count[N_MIXES][N_USUAL_SHAPES] = { { { 0 } } };
  int r, mi, sh;

  rng_seed (g_test_rand_int ());
  for (r = 0; r < 6000; r++)
    {
      int n_hist;

      sh = r % N_USUAL_SHAPES;
      mi = (r / N_USUAL_SHAPES) % N_MIXES;
      make_row (row, VOCAB, sh, 0);
      n_hist = make_history (row, VOCAB, hist, (int) (rnd () % 300));
      count[mi][sh].draws++;
      if (check_row (row, VOCAB, &mixes[mi], hist, n_hist, rnd (), (int) (rnd () % 3)))
        count[mi][sh].decided++;
    }
  for (mi = 0; mi < (int) N_MIXES; mi++)
    {
      g_autoptr (GString) line = g_string_new (NULL);

      for (sh = 0; sh < N_USUAL_SHAPES; sh++)
        g_string_append_printf (line, " %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT,
                                count[mi][sh].decided, count[mi][sh].draws);
      g_test_message ("%-18s decided (peaked gauss coarse holes):%s", mixes[mi].name, line->str);
      if (mixes[mi].temperature == 0.0f && mixes[mi].rep == 1.0f && mixes[mi].pres == 0.0f
          && mixes[mi].freq == 0.0f)
        for (sh = 0; sh < N_USUAL_SHAPES; sh++)
          g_assert_cmpuint (count[mi][sh].decided, ==, count[mi][sh].draws);
      if (mixes[mi].typical)
        g_assert_cmpuint (count[mi][SHAPE_PEAKED].decided * 100, >=,
                          count[mi][SHAPE_PEAKED].draws * 97);
      else
        g_assert_cmpuint (count[mi][SHAPE_PEAKED].decided, ==, 0);
    }
}

static void
test_adversarial (void)
{
  g_autofree float *row = g_new (float, VOCAB);
  int32_t hist[300];
  guint64 decided = 0, draws = 0;
  int r, i, mi;

  rng_seed (g_test_rand_int () ^ 0x1234);
  for (r = 0; r < 1400; r++)
    {
      int n = VOCAB, n_hist = 0, kind = r % 10;

      switch (kind)
        {
        case 0:   /* a plateau spanning ranks 200..300: ties at the K boundary */
          for (i = 0; i < n; i++)
            row[i] = (float) gauss () - 10.0f;
          for (i = 0; i < 200; i++)
            row[rnd () % (guint64) n] = 5.0f + (float) unif ();
          for (i = 0; i < 100; i++)
            row[rnd () % (guint64) n] = 4.0f;
          break;
        case 1:   /* all equal */
          for (i = 0; i < n; i++)
            row[i] = 1.5f;
          break;
        case 2:   /* all -inf, some NaN */
          for (i = 0; i < n; i++)
            row[i] = unif () < 0.3 ? NAN : -INFINITY;
          break;
        case 3:   /* all NaN */
          for (i = 0; i < n; i++)
            row[i] = NAN;
          break;
        case 4:   /* +inf among ordinary values */
          make_row (row, n, SHAPE_GAUSS, 0);
          row[rnd () % (guint64) n] = INFINITY;
          if (unif () < 0.5)
            row[rnd () % (guint64) n] = INFINITY;
          break;
        case 5:   /* a single usable logit */
          for (i = 0; i < n; i++)
            row[i] = -INFINITY;
          row[rnd () % (guint64) n] = 0.25f;
          break;
        case 6:   /* a vocabulary smaller than K */
          n = 100 + (int) (rnd () % 150);
          make_row (row, n, (int) (rnd () % N_USUAL_SHAPES), 0);
          break;
        case 7:   /* the 300 largest all in the history, heavily penalised */
          make_row (row, n, SHAPE_GAUSS, 0);
          for (i = 0; i < 300; i++)
            {
              hist[i] = (int32_t) (i * 16);
              row[hist[i]] = 8.0f + (float) unif ();
            }
          n_hist = 300;
          break;
        case 8:   /* two levels: 255 high, the rest one low value */
          for (i = 0; i < n; i++)
            row[i] = -2.0f;
          for (i = 0; i < 255; i++)
            row[rnd () % (guint64) n] = 3.0f;
          break;
        default:  /* ties at the top, negative zero */
          make_row (row, n, SHAPE_COARSE, 0);
          row[7] = row[3] = 7.0f;
          row[11] = -0.0f;
          break;
        }
      if (kind != 7)
        n_hist = make_history (row, n, hist, (int) (rnd () % 64));
      for (mi = 0; mi < (int) N_MIXES; mi++)
        {
          draws++;
          if (check_row (row, n, &mixes[mi], hist, n_hist, rnd (), 0))
            decided++;
        }
    }
  g_test_message ("adversarial: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " decided",
                  decided, draws);
  g_assert_cmpuint (decided, >, draws / 4);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/SamplerCompact/random", test_random);
  g_test_add_func ("/Baleen/SamplerCompact/adversarial", test_adversarial);
  return g_test_run ();
}
