/* test-model-golden.c — whole models against HF transformers.
 *
 * tools/gen_tiny_models.py builds tiny random llama, qwen2, DeepSeek-V2-Lite-
 * and DeepSeek-V3-style models with transformers, saves them as safetensors
 * and as GGUF (llama.cpp's naming), and records transformers' float32 logits
 * at every position of fixed token sequences plus a greedy continuation. Here
 * every file of every model must give:
 *   - F32 (GGUF and safetensors): logits within 1e-4 of the largest |logit|,
 *     at every position, teacher-forced in one batch;
 *   - the same 32 greedy tokens, decoding one token at a time through the
 *     KV cache, with each step's logits within the same bound;
 *   - quantised variants (GGUF F16 / Q8_0, safetensors converted on load)
 *     within the bounds stated below, which follow from the weight rounding.
 */
#include <math.h>
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "bln-error.h"
#include "model.h"
#include "tokenizer.h"
#include "model-test-util.h"

typedef struct {
  const char *model;  /* folder under tests/golden/models */
  const char *file;   /* file in it, or NULL for the HF directory */
  BlnType hf_quant;   /* conversion on load for HF directories */
  double bound;       /* max |ours - ref| / max |ref| */
  gboolean greedy;    /* greedy tokens must match exactly */
} Case;

static const Case cases[] = {
  { "llama", "model.gguf", BLN_TYPE_F32, 1e-4, TRUE },
  { "llama", NULL, BLN_TYPE_F32, 1e-4, TRUE },
  { "llama-sharded", NULL, BLN_TYPE_F32, 1e-4, TRUE },
  { "llama-tied", "model.gguf", BLN_TYPE_F32, 1e-4, TRUE },
  { "llama-tied", NULL, BLN_TYPE_F32, 1e-4, TRUE },
  { "qwen2", "model.gguf", BLN_TYPE_F32, 1e-4, TRUE },
  { "qwen2", NULL, BLN_TYPE_F32, 1e-4, TRUE },
  { "deepseek2-v2lite", "model.gguf", BLN_TYPE_F32, 1e-4, TRUE },
  { "deepseek2-v2lite", "model-legacy-kvb.gguf", BLN_TYPE_F32, 1e-4, TRUE },
  { "deepseek2-v2lite", NULL, BLN_TYPE_F32, 1e-4, TRUE },
  { "deepseek2-v3", "model.gguf", BLN_TYPE_F32, 1e-4, TRUE },
  { "deepseek2-v3", "model-legacy-kvb.gguf", BLN_TYPE_F32, 1e-4, TRUE },
  { "deepseek2-v3", NULL, BLN_TYPE_F32, 1e-4, TRUE },
  /* Half-precision weights: relative rounding 2^-11 per weight. */
  { "llama", "model-f16.gguf", BLN_TYPE_F32, 3e-3, FALSE },
  { "llama", NULL, BLN_TYPE_F16, 3e-3, FALSE },
  { "llama", NULL, BLN_TYPE_BF16, 2.5e-2, FALSE },
  /* 8-bit blocks (and 8-bit activations in the integer dot products). */
  { "llama", "model-q8_0.gguf", BLN_TYPE_F32, 5e-2, FALSE },
  { "llama", NULL, BLN_TYPE_Q8_0, 5e-2, FALSE },
  { "qwen2", NULL, BLN_TYPE_Q8_0, 5e-2, FALSE },
  { "deepseek2-v3", NULL, BLN_TYPE_Q8_0, 5e-2, FALSE },
  /* The k-quants need rows of 256 values; these models' rows are 64 wide, so
   * their conversion is covered by test-quant and test-cpu-ops instead. */
};

static char *
model_dir (const char *model)
{
  return g_build_filename (g_getenv ("BALEEN_GOLDEN_DIR"), "models", model, NULL);
}

static JsonNode *
load_goldens (const char *model)
{
  g_autofree char *dir = model_dir (model);
  g_autofree char *path = NULL;
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) error = NULL;

  /* the sharded copy shares the llama goldens */
  if (g_str_equal (model, "llama-sharded"))
    {
      g_free (dir);
      dir = model_dir ("llama");
    }
  path = g_build_filename (dir, "goldens.json", NULL);
  json_parser_load_from_file (p, path, &error);
  g_assert_no_error (error);
  return json_node_copy (json_parser_get_root (p));
}

static void
test_case (gconstpointer data)
{
  const Case *c = data;
  g_autofree char *dir = model_dir (c->model);
  g_autofree char *path = c->file ? g_build_filename (dir, c->file, NULL) : g_strdup (dir);
  g_autoptr (JsonNode) gold = load_goldens (c->model);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) model = NULL;
  BlnModelOptions opts = { .hf_quant = c->hf_quant, .load_tokenizer = TRUE };
  JsonArray *seqs = json_object_get_array_member (json_node_get_object (gold), "sequences");
  BlnPool *pool;
  int n_vocab;
  guint si;

  model = bln_model_load_with_options (path, &opts, &error);
  g_assert_no_error (error);
  n_vocab = bln_model_hparams (model)->n_vocab;
  g_assert_cmpint (n_vocab, ==,
                   json_object_get_int_member (json_node_get_object (gold), "vocab_size"));
  g_assert_nonnull (bln_model_tokenizer (model));
  pool = bln_pool_new (2, &error);
  g_assert_no_error (error);

  for (si = 0; si < json_array_get_length (seqs); si++)
    {
      JsonObject *seq = json_array_get_object_element (seqs, si);
      JsonArray *ids_a = json_object_get_array_member (seq, "ids");
      JsonArray *gen_a = json_object_get_array_member (seq, "generated");
      int n = (int) json_array_get_length (ids_a), n_gen = (int) json_array_get_length (gen_a);
      g_autofree int32_t *ids = g_new (int32_t, n + n_gen);
      g_autofree float *ref = NULL, *gref = NULL, *out = NULL;
      g_autoptr (BlnContext) ctx = NULL;
      gsize nref, ngref;
      double scale, worst = 0, sum_pos = 0;
      int i, t, mismatches = 0, over = 0;

      for (i = 0; i < n; i++)
        ids[i] = (int32_t) json_array_get_int_element (ids_a, i);
      ref = golden_f32 (seq, "logits_f32_b64", &nref);
      g_assert_cmpuint (nref, ==, (gsize) n * n_vocab);
      scale = max_abs (ref, nref);

      /* teacher-forced, all positions in one batch (the prefill path) */
      ctx = bln_context_new (model, n + n_gen + 1, pool, &error);
      g_assert_no_error (error);
      out = g_new (float, (size_t) n * n_vocab);
      for (i = 0; i < n * n_vocab; i++)
        out[i] = NAN;
      g_assert_true (bln_context_eval (ctx, ids, n, out, TRUE, &error));
      g_assert_no_error (error);
      for (t = 0; t < n; t++)
        {
          double pos_err = 0;
          for (i = t * n_vocab; i < (t + 1) * n_vocab; i++)
            pos_err = MAX (pos_err, fabs (out[i] - ref[i]) / scale);
          worst = MAX (worst, pos_err);
          sum_pos += pos_err;
          over += pos_err > c->bound;
        }
      g_test_message ("%s %s seq %u: prefill max rel err %.3g, mean %.3g (bound %.1g)",
                      c->model, c->file ? c->file : "(hf)", si, worst, sum_pos / n, c->bound);
      if (c->greedy)
        g_assert_cmpfloat (worst, <=, c->bound);
      else
        {
          /* Rounded weights can flip a near-tie in MoE routing, which moves
           * that position's logits a lot; a few such positions are expected,
           * the typical error must stay within the bound. */
          g_assert_cmpfloat (sum_pos / n, <=, c->bound);
          g_assert_cmpint (over * 5, <=, n);
        }

      /* greedy decoding one token at a time through the cache */
      gref = golden_f32 (seq, "gen_logits_f32_b64", &ngref);
      g_assert_cmpuint (ngref, ==, (gsize) n_gen * n_vocab);
      bln_context_truncate (ctx, 0);
      g_assert_true (bln_context_eval (ctx, ids, n, out, FALSE, &error));
      for (t = 0; t < n_gen; t++)
        {
          int32_t want = (int32_t) json_array_get_int_element (gen_a, t);
          const float *gl = gref + (size_t) t * n_vocab;
          int32_t got = argmax (out, n_vocab);
          double err = 0;

          for (i = 0; i < n_vocab; i++)
            err = MAX (err, fabs (out[i] - gl[i]) / max_abs (gl, n_vocab));
          if (c->greedy)
            {
              g_assert_cmpfloat (err, <=, c->bound);
              g_assert_cmpint (got, ==, want);
            }
          else if (got != want)
            mismatches++;
          /* follow the reference's tokens so the steps stay comparable */
          g_assert_true (bln_context_eval (ctx, &want, 1, out, FALSE, &error));
          g_assert_no_error (error);
        }
      if (!c->greedy)
        g_test_message ("%s: %d of %d greedy steps differ", c->model, mismatches, n_gen);
    }
  bln_pool_free (pool);
}

/* A model file cut short, or with a tensor missing, is refused cleanly. */
static void
test_truncated_file (void)
{
  g_autofree char *dir = model_dir ("llama");
  g_autofree char *path = g_build_filename (dir, "model.gguf", NULL);
  g_autofree char *data = NULL;
  g_autofree char *tmp = g_build_filename (g_get_tmp_dir (), "baleen-trunc-XXXXXX.gguf", NULL);
  gsize len, cut;
  int fd;

  g_assert_true (g_file_get_contents (path, &data, &len, NULL));
  fd = g_mkstemp (tmp);
  g_assert_cmpint (fd, >=, 0);
  close (fd);
  for (cut = 0; cut < len; cut += len / 97 + 1)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (BlnModel) m = NULL;

      g_assert_true (g_file_set_contents (tmp, data, cut, NULL));
      m = bln_model_load (tmp, &error);
      g_assert_null (m);
      g_assert_error (error, BLN_ERROR, BLN_ERROR_CORRUPT);
    }
  g_unlink (tmp);
}

static void
test_bad_ids (void)
{
  g_autofree char *dir = model_dir ("qwen2");
  g_autofree char *path = g_build_filename (dir, "model.gguf", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = bln_model_load (path, &error);
  g_autoptr (BlnContext) ctx = NULL;
  BlnPool *pool = bln_pool_new (1, &error);
  int32_t ids[4] = { 1, 2, 3, 100000 };
  float *logits;

  g_assert_no_error (error);
  ctx = bln_context_new (m, 3, pool, &error);
  g_assert_no_error (error);
  logits = g_new (float, bln_model_hparams (m)->n_vocab);
  g_assert_false (bln_context_eval (ctx, ids, 4, logits, FALSE, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_cmpint (bln_context_n_past (ctx), ==, 0);
  /* four tokens do not fit in a context of three */
  ids[3] = 4;
  g_assert_false (bln_context_eval (ctx, ids, 4, logits, FALSE, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_true (bln_context_eval (ctx, ids, 3, logits, FALSE, &error));
  g_assert_cmpint (bln_context_n_past (ctx), ==, 3);
  g_free (logits);
  g_clear_pointer (&ctx, bln_context_free);
  bln_pool_free (pool);
}

int
main (int argc, char **argv)
{
  guint i;

  g_test_init (&argc, &argv, NULL);
  for (i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const Case *c = &cases[i];
      g_autofree char *p = g_strdup_printf ("/Baleen/Model/%s/%s%s%s", c->model,
                                            c->file ? c->file : "hf",
                                            c->hf_quant != BLN_TYPE_F32 ? "-" : "",
                                            c->hf_quant != BLN_TYPE_F32
                                              ? bln_type_name (c->hf_quant) : "");
      g_test_add_data_func (p, c, test_case);
    }
  g_test_add_func ("/Baleen/Model/truncated-file", test_truncated_file);
  g_test_add_func ("/Baleen/Model/bad-ids", test_bad_ids);
  return g_test_run ();
}
