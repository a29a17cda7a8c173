/* model-test-util.h — helpers shared by the model tests (CPU and GPU):
 * the golden models' paths and their goldens.json, loading a model and
 * making a thread pool that must succeed, argmax, the largest |value| of a
 * row, and the KL divergence of two logit rows. Header-only. */
#pragma once

#include <math.h>
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "model.h"

/* tests/golden/models/MODEL/FILE (caller frees), from BALEEN_GOLDEN_DIR. */
static inline char *
golden_path (const char *model, const char *file)
{
  return g_build_filename (g_getenv ("BALEEN_GOLDEN_DIR"), "models", model, file, NULL);
}

/* The float32 array stored in base64 in the string @member of @o (caller
 * frees), its length in *@n; fails the test when the bytes are not whole
 * floats. The goldens are little-endian, as the hosts we test on. */
static inline float *
golden_f32 (JsonObject *o, const char *member, gsize *n)
{
  gsize len = 0;
  guchar *raw = g_base64_decode (json_object_get_string_member (o, member), &len);

  g_assert_cmpuint (len % 4, ==, 0);
  *n = len / 4;
  return (float *) raw;
}

/* One sequence of a tiny model's goldens.json (tools/gen_tiny_models.py):
 * a prompt, transformers' greedy continuation of it, and transformers'
 * float32 logits at every prompt position and at every generation step. */
typedef struct {
  int n_prompt, n_gen;
  int32_t *ids;       /* n_prompt + n_gen: the prompt, then the continuation */
  float *pre;         /* n_prompt × n_vocab */
  float *gen;         /* n_gen × n_vocab: the logits that chose generated[t] */
} GoldenSeq;

static inline void
golden_seq_clear (gpointer data)
{
  GoldenSeq *g = data;

  g_free (g->ids);
  g_free (g->pre);
  g_free (g->gen);
}

/* The sequences of tests/golden/models/MODEL/goldens.json, a GArray of
 * GoldenSeq (caller unrefs; that frees them); fails the test when the file
 * does not parse or a logits array is not n_vocab wide. */
static inline GArray *
golden_seqs_load (const char *model, int n_vocab)
{
  g_autofree char *path = golden_path (model, "goldens.json");
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) error = NULL;
  GArray *out = g_array_new (FALSE, TRUE, sizeof (GoldenSeq));
  JsonArray *seqs;

  g_array_set_clear_func (out, golden_seq_clear);
  json_parser_load_from_file (p, path, &error);
  g_assert_no_error (error);
  seqs = json_object_get_array_member (json_node_get_object (json_parser_get_root (p)),
                                       "sequences");
  for (guint si = 0; si < json_array_get_length (seqs); si++)
    {
      JsonObject *seq = json_array_get_object_element (seqs, si);
      JsonArray *ids_a = json_object_get_array_member (seq, "ids");
      JsonArray *gen_a = json_object_get_array_member (seq, "generated");
      gsize npre, ngen;
      GoldenSeq g;
      int i;

      g.n_prompt = (int) json_array_get_length (ids_a);
      g.n_gen = (int) json_array_get_length (gen_a);
      g.ids = g_new (int32_t, g.n_prompt + g.n_gen);
      for (i = 0; i < g.n_prompt; i++)
        g.ids[i] = (int32_t) json_array_get_int_element (ids_a, i);
      for (i = 0; i < g.n_gen; i++)
        g.ids[g.n_prompt + i] = (int32_t) json_array_get_int_element (gen_a, i);
      g.pre = golden_f32 (seq, "logits_f32_b64", &npre);
      g.gen = golden_f32 (seq, "gen_logits_f32_b64", &ngen);
      g_assert_cmpuint (npre, ==, (gsize) g.n_prompt * n_vocab);
      g_assert_cmpuint (ngen, ==, (gsize) g.n_gen * n_vocab);
      g_array_append_val (out, g);
    }
  return out;
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

/* The largest |v[i]| of @n values (0 when there are none). */
static inline double
max_abs (const float *v, gsize n)
{
  double m = 0;

  for (gsize i = 0; i < n; i++)
    m = MAX (m, fabs (v[i]));
  return m;
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
