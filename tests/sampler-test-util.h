/* sampler-test-util.h — random logit rows for the compact-sampling tests
 * (test-sampler-compact.c on the CPU, test-cuda-compact.c on the GPU).
 * Header-only.
 *
 * One splitmix64 generator per test program, seeded with rng_seed(): a
 * test that seeds it with a constant sees the same rows on every run and
 * every machine. The order of the draws is part of that: where one
 * expression used to draw twice (gauss(), the spikes of make_row()), the
 * draws are now sequenced in the order GCC gave them, so the rows are the
 * ones the tests saw before.
 */
#pragma once

#include <math.h>
#include <glib.h>

static guint64 rng_state;

static inline void
rng_seed (guint64 seed)
{
  rng_state = seed;
}

/* The next 64 random bits (splitmix64). */
static inline guint64
rnd (void)
{
  guint64 z = (rng_state += 0x9e3779b97f4a7c15ull);

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1), 53 bits. */
static inline double
unif (void)
{
  return (double) (rnd () >> 11) * (1.0 / 9007199254740992.0);
}

/* Standard normal (Box-Muller, one value of the pair). */
static inline double
gauss (void)
{
  double u = unif () + 1e-300, v = unif ();

  return sqrt (-2.0 * log (u)) * cos (2.0 * G_PI * v);
}

enum {
  SHAPE_PEAKED,         /* LLM-like: N(-5, 2.5) with a few spikes in [10, 16) */
  SHAPE_GAUSS,          /* N(0, 1) */
  SHAPE_COARSE,         /* multiples of 0.5 in [0, 6): many ties */
  SHAPE_HOLES,          /* 5% NaN, 10% -inf, the rest N(0, 3) */
  N_USUAL_SHAPES,
  SHAPE_EQUAL = N_USUAL_SHAPES,   /* every logit 0.75 */
  SHAPE_NAN,            /* every logit NaN (and any larger @shape) */
};

/* How make_row() draws where the two tests always differed. */
typedef enum {
  ROW_FIVE_SPIKES = 1 << 0,   /* SHAPE_PEAKED: five spikes, not 1 + rnd() % 6 */
  ROW_NEG_ZERO = 1 << 1,      /* SHAPE_HOLES: 1% of the logits -0.0 */
} RowFlags;

/* Fills @l with @n logits of @shape (SHAPE_*) from the generator. */
static inline void
make_row (float *l, int n, int shape, RowFlags flags)
{
  int i;

  for (i = 0; i < n; i++)
    switch (shape)
      {
      case SHAPE_PEAKED:
        l[i] = (float) (2.5 * gauss () - 5.0);
        break;
      case SHAPE_GAUSS:
        l[i] = (float) gauss ();
        break;
      case SHAPE_COARSE:
        l[i] = (float) (int) (unif () * 12.0) * 0.5f;
        break;
      case SHAPE_HOLES:
        {
          double u = unif ();

          l[i] = u < 0.05 ? NAN
                 : u < 0.15 ? -INFINITY
                 : (flags & ROW_NEG_ZERO) && u < 0.16 ? -0.0f
                 : (float) (3.0 * gauss ());
        }
        break;
      case SHAPE_EQUAL:
        l[i] = 0.75f;
        break;
      default:
        l[i] = NAN;
      }
  if (shape != SHAPE_PEAKED)
    return;
  /* the spike's value is drawn before its place; without ROW_FIVE_SPIKES
   * the bound is drawn again at every turn, as it always was */
  for (i = 0; (flags & ROW_FIVE_SPIKES) ? i < 5 : i < 1 + (int) (rnd () % 6); i++)
    {
      float v = (float) (10.0 + 6.0 * unif ());

      l[rnd () % (guint64) n] = v;
    }
}
