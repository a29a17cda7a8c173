/* model-test-util.h — helpers shared by the model tests (CPU and GPU):
 * the golden models' paths, loading a model and making a thread pool that
 * must succeed, argmax, and the KL divergence of two logit rows.
 * Header-only. */
#pragma once

#include <math.h>
#include <glib.h>

#include "model.h"

/* tests/golden/models/MODEL/FILE (caller frees), from BALEEN_GOLDEN_DIR. */
static inline char *
golden_path (const char *model, const char *file)
{
  return g_build_filename (g_getenv ("BALEEN_GOLDEN_DIR"), "models", model, file, NULL);
}

/* The model at @path, loaded with the default options (caller frees with
 * bln_model_free()); fails the test when it does not load. */
static inline BlnModel *
test_model_load (const char *path)
{
  g_autoptr (GError) error = NULL;
  BlnModel *m = bln_model_load (path, &error);

  g_assert_no_error (error);
  return m;
}

/* tests/golden/models/MODEL/FILE, loaded as test_model_load() does. */
static inline BlnModel *
golden_model_load (const char *model, const char *file)
{
  g_autofree char *path = golden_path (model, file);

  return test_model_load (path);
}

/* A pool of @n_threads workers (0: one per CPU; caller frees with
 * bln_pool_free()); fails the test when it cannot be made. */
static inline BlnPool *
test_pool_new (int n_threads)
{
  g_autoptr (GError) error = NULL;
  BlnPool *pool = bln_pool_new (n_threads, &error);

  g_assert_no_error (error);
  return pool;
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
