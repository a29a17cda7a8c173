/* model-test-util.h — helpers shared by the model tests (CPU and GPU):
 * the golden models' paths, argmax, and the KL divergence of two logit
 * rows. Header-only. */
#pragma once

#include <math.h>
#include <glib.h>

/* tests/golden/models/MODEL/FILE (caller frees), from BALEEN_GOLDEN_DIR. */
static inline char *
golden_path (const char *model, const char *file)
{
  return g_build_filename (g_getenv ("BALEEN_GOLDEN_DIR"), "models", model, file, NULL);
}

/* The index of the largest of n values (the first one on ties). */
static inline int
argmax (const float *v, int n)
{
  int b = 0, i;

  for (i = 1; i < n; i++)
    if (v[i] > v[b])
      b = i;
  return b;
}

/* KL(p || q) of the softmax distributions of logits a (p) and b (q). */
static inline double
kl_div (const float *a, const float *b, int n)
{
  double ma = -INFINITY, mb = -INFINITY, za = 0, zb = 0, kl = 0;
  int i;

  for (i = 0; i < n; i++)
    {
      ma = MAX (ma, a[i]);
      mb = MAX (mb, b[i]);
    }
  for (i = 0; i < n; i++)
    {
      za += exp (a[i] - ma);
      zb += exp (b[i] - mb);
    }
  for (i = 0; i < n; i++)
    {
      double lp = a[i] - ma - log (za), lq = b[i] - mb - log (zb);
      kl += exp (lp) * (lp - lq);
    }
  return kl;
}
