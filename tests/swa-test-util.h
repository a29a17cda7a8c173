/* swa-test-util.h — the sliding-window goldens (tests/golden/swa/, from
 * tools/gen_swa_golden.py) for test-swa.c and test-cuda-swa.c. Header-only. */
#pragma once

#include <math.h>
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "model.h"
#include "model-test-util.h"

typedef struct {
  const char *model;
  int window;
  int n, n_gen, n_vocab;
  int32_t *ids;              /* prompt then the golden continuation */
  float *logits;             /* n × n_vocab */
  float *gen_logits;         /* n_gen × n_vocab: step t predicts token t of the continuation */
  BlnModel *m;
  BlnPool *pool;
} Golden;

/* The float32 array @member of @o, of exactly @want values. */
static inline float *
decode_f32 (JsonObject *o, const char *member, gsize want)
{
  gsize n = 0;
  float *v = golden_f32 (o, member, &n);

  g_assert_cmpuint (n, ==, want);
  return v;
}

static inline void
golden_load (Golden *g, const char *model)
{
  g_autofree char *path = g_build_filename (g_getenv ("BALEEN_GOLDEN_DIR"), "swa",
                                            "goldens.json", NULL);
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) error = NULL;
  JsonArray *models;
  JsonObject *o = NULL;
  JsonArray *ids, *gen;
  guint i;

  memset (g, 0, sizeof *g);
  json_parser_load_from_file (p, path, &error);
  g_assert_no_error (error);
  models = json_object_get_array_member (json_node_get_object (json_parser_get_root (p)),
                                         "models");
  for (i = 0; i < json_array_get_length (models); i++)
    if (g_str_equal (json_object_get_string_member (json_array_get_object_element (models, i),
                                                    "model"), model))
      o = json_array_get_object_element (models, i);
  g_assert_nonnull (o);

  g->model = model;
  g->m = golden_model_load (model, "model.gguf");
  g->n_vocab = bln_model_hparams (g->m)->n_vocab;
  g->window = (int) json_object_get_int_member (o, "window");
  ids = json_object_get_array_member (o, "ids");
  gen = json_object_get_array_member (o, "generated");
  g->n = (int) json_array_get_length (ids);
  g->n_gen = (int) json_array_get_length (gen);
  g_assert_cmpint (g->window, >, 0);
  g_assert_cmpint (g->n, >, 4 * g->window);
  g->ids = g_new (int32_t, g->n + g->n_gen);
  for (i = 0; i < (guint) g->n; i++)
    g->ids[i] = (int32_t) json_array_get_int_element (ids, i);
  for (i = 0; i < (guint) g->n_gen; i++)
    g->ids[g->n + i] = (int32_t) json_array_get_int_element (gen, i);
  g->logits = decode_f32 (o, "logits_f32_b64", (gsize) g->n * g->n_vocab);
  g->gen_logits = decode_f32 (o, "gen_logits_f32_b64", (gsize) g->n_gen * g->n_vocab);
  g->pool = test_pool_new (2);
}

static inline void
golden_clear (Golden *g)
{
  bln_pool_free (g->pool);
  bln_model_free (g->m);
  g_free (g->ids);
  g_free (g->logits);
  g_free (g->gen_logits);
}

/* max |got - ref| / max |ref| over @rows rows */
static inline double
rel_err (const float *got, const float *ref, int rows, int n_vocab)
{
  double scale = 0, err = 0;
  int i;

  for (i = 0; i < rows * n_vocab; i++)
    scale = MAX (scale, fabs (ref[i]));
  for (i = 0; i < rows * n_vocab; i++)
    err = MAX (err, fabs (got[i] - ref[i]));
  return err / scale;
}

