/* test-hf-convert.c — HF folder to GGUF conversion (app/ui/hf-convert.h),
 * checked by the gguf Python package (tests/ui/check_hf_gguf.py): the tiny
 * llama, llama-tied and qwen2 folders of tests/golden converted to the
 * target types are compared with their model.gguf (written in llama.cpp's
 * converter layout) quantised by gguf.quants; a wider generated folder checks the
 * k-quants within their error; the results load in the engine; the tiny
 * DeepSeek-V2-Lite and V3 folders convert to their model.gguf layout and
 * give the same logits as the folders; cancelling and unsupported folders
 * leave no file. */
#include <math.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "bln-error.h"
#include "hf-convert.h"
#include "model.h"

static char *golden;
static char *script;
static char *tmp;

/* Runs the checker; FALSE (and the test skipped) when its modules are missing. */
static gboolean
check (const char *const *args)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr (GError) error = NULL;
  int status = 0;

  g_ptr_array_add (argv, (gpointer) "python3");
  g_ptr_array_add (argv, script);
  for (guint i = 0; args[i]; i++)
    g_ptr_array_add (argv, (gpointer) args[i]);
  g_ptr_array_add (argv, NULL);
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               &out, &err, &status, &error));
  g_assert_no_error (error);
  if (WIFEXITED (status) && WEXITSTATUS (status) == 77)
    {
      g_test_skip (out);
      return FALSE;
    }
  g_test_message ("%s%s", out, err);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("check_hf_gguf.py %s failed:\n%s%s", args[0], out, err);
  return TRUE;
}

static void
progress (double fraction, gpointer user_data)
{
  double *last = user_data;

  g_assert_cmpfloat (fraction, >=, *last);
  g_assert_cmpfloat (fraction, <=, 1.0);
  *last = fraction;
}

static void
convert_and_compare (const char *model, const char *type_name)
{
  g_autofree char *dir = g_build_filename (golden, "models", model, NULL);
  g_autofree char *ref = g_build_filename (dir, "model.gguf", NULL);
  g_autofree char *out = g_strdup_printf ("%s/%s-%s.gguf", tmp, model, type_name);
  g_autofree char *part = g_strconcat (out, ".part", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) src = NULL;
  g_autoptr (BlnModel) conv = NULL;
  const char *args[] = { "compare", out, ref, type_name, model, NULL };
  double last = 0;
  BlnType type;

  g_assert_true (bln_hf_convert_type_from_name (type_name, &type));
  g_assert_true (bln_hf_convert (dir, out, type, NULL, progress, &last, &error));
  g_assert_no_error (error);
  g_assert_cmpfloat (last, ==, 1.0);
  g_assert_true (g_file_test (out, G_FILE_TEST_IS_REGULAR));
  g_assert_false (g_file_test (part, G_FILE_TEST_EXISTS));
  if (!check (args))
    return;

  /* The engine loads it, with the source's parameters and vocabulary. */
  src = bln_model_load (dir, &error);
  g_assert_no_error (error);
  conv = bln_model_load (out, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_model_n_params (conv), ==, bln_model_n_params (src));
  g_assert_cmpstr (bln_model_arch_name (conv), ==, bln_model_arch_name (src));
  g_assert_cmpint (bln_model_hparams (conv)->tied_embeddings, ==,
                   bln_model_hparams (src)->tied_embeddings);
  g_assert_cmpint (bln_model_hparams (conv)->n_vocab, ==, bln_model_hparams (src)->n_vocab);
  g_assert_cmpstr (bln_model_chat_template (conv), ==, bln_model_chat_template (src));
  g_unlink (out);
}

/* The logits of every position of @ids under @m (n × n_vocab, caller frees). */
static float *
all_logits (BlnModel *m, const int32_t *ids, int n)
{
  g_autoptr (GError) error = NULL;
  BlnPool *pool = bln_pool_new (1, &error);
  BlnContext *ctx;
  float *out = g_new (float, (gsize) n * bln_model_hparams (m)->n_vocab);

  g_assert_no_error (error);
  ctx = bln_context_new (m, n + 1, pool, &error);
  g_assert_no_error (error);
  g_assert_true (bln_context_eval (ctx, ids, n, out, TRUE, &error));
  g_assert_no_error (error);
  bln_context_free (ctx);
  bln_pool_free (pool);
  return out;
}

/* DeepSeek-V2 (Lite) and V3 folders: converted to the types whose rows differ
 * in kind here (48-wide rows fall back to f16, 32- and 96-wide ones take
 * q8_0), each compared with the reference model.gguf by the gguf package;
 * then the f32 conversion must give the engine the same logits as the folder
 * itself, at every position of a prompt. */
static void
test_deepseek2 (gconstpointer data)
{
  static const char *types[] = { "f32", "bf16", "q8_0", NULL };
  g_autofree char *dir = g_build_filename (golden, "models", data, NULL);
  g_autofree char *out = g_strdup_printf ("%s/%s-f32-logits.gguf", tmp, (const char *) data);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) src = NULL;
  g_autoptr (BlnModel) conv = NULL;
  g_autofree float *a = NULL;
  g_autofree float *b = NULL;
  int32_t ids[24];
  int n = G_N_ELEMENTS (ids), n_vocab;
  double worst = 0, scale = 0;

  for (guint i = 0; types[i]; i++)
    convert_and_compare (data, types[i]);

  g_assert_true (bln_hf_convert (dir, out, BLN_TYPE_F32, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  src = bln_model_load (dir, &error);
  g_assert_no_error (error);
  conv = bln_model_load (out, &error);
  g_assert_no_error (error);
  n_vocab = bln_model_hparams (src)->n_vocab;
  g_assert_cmpint (bln_model_hparams (conv)->n_vocab, ==, n_vocab);
  for (int i = 0; i < n; i++)
    ids[i] = (int32_t) (3 + (i * 37) % (n_vocab - 3));
  a = all_logits (src, ids, n);
  b = all_logits (conv, ids, n);
  for (gsize i = 0; i < (gsize) n * n_vocab; i++)
    {
      worst = MAX (worst, fabs (a[i] - b[i]));
      scale = MAX (scale, fabs (a[i]));
    }
  g_test_message ("%s: largest logit difference %.3g (largest |logit| %.3g)",
                  (const char *) data, worst, scale);
  g_assert_cmpfloat (scale, >, 0);
  g_assert_cmpfloat (worst, <=, 1e-5 * scale);
  g_unlink (out);
}

/* transformers 5 saves a layer's experts fused (gate_up_proj, down_proj):
 * such a copy of the V3 folder converts to the same file as the original,
 * and the engine reads the folder itself to the same logits. */
static void
test_deepseek2_fused (void)
{
  g_autofree char *src_dir = g_build_filename (golden, "models", "deepseek2-v3", NULL);
  g_autofree char *dir = g_build_filename (tmp, "deepseek2-v3-fused", NULL);
  g_autofree char *out = g_build_filename (tmp, "fused-f32.gguf", NULL);
  g_autofree char *ref = g_build_filename (src_dir, "model.gguf", NULL);
  const char *make[] = { "make-fused", dir, src_dir, NULL };
  const char *cmp[] = { "compare", out, ref, "f32", "deepseek2-v3-fused", NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) a = NULL;
  g_autoptr (BlnModel) b = NULL;
  g_autofree float *la = NULL;
  g_autofree float *lb = NULL;
  int32_t ids[16];
  int n_vocab;

  if (!check (make))
    return;
  g_assert_true (bln_hf_convert (dir, out, BLN_TYPE_F32, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  if (!check (cmp))
    return;
  a = bln_model_load (dir, &error);
  g_assert_no_error (error);
  b = bln_model_load (out, &error);
  g_assert_no_error (error);
  n_vocab = bln_model_hparams (a)->n_vocab;
  for (guint i = 0; i < G_N_ELEMENTS (ids); i++)
    ids[i] = (int32_t) (5 + (i * 53) % (n_vocab - 5));
  la = all_logits (a, ids, G_N_ELEMENTS (ids));
  lb = all_logits (b, ids, G_N_ELEMENTS (ids));
  for (gsize i = 0; i < G_N_ELEMENTS (ids) * (gsize) n_vocab; i++)
    g_assert_cmpfloat (fabs (la[i] - lb[i]), <=, 1e-5 * MAX (1.0, fabs (la[i])));
  g_unlink (out);
}

/* DeepSeek-V3 / R1 as published: projection weights in float8 e4m3 with a
 * float32 scale per block. check_hf_gguf.py writes such a copy of the tiny
 * V3 folder (values rounded by ml_dtypes, 16 x 32 blocks so that every matrix
 * has several) and the same model with the weights ml_dtypes decodes from it
 * in float32. The engine must read the FP8 folder to the reference folder's
 * logits, convert it to the same logits, and refuse a folder that lacks a
 * scale tensor with a message naming it. */
static void
test_deepseek2_fp8 (void)
{
  g_autofree char *src_dir = g_build_filename (golden, "models", "deepseek2-v3", NULL);
  g_autofree char *dir = g_build_filename (tmp, "deepseek2-v3-fp8", NULL);
  g_autofree char *ref_dir = g_build_filename (tmp, "deepseek2-v3-fp8-ref", NULL);
  g_autofree char *bad_dir = g_build_filename (tmp, "deepseek2-v3-fp8-bad", NULL);
  g_autofree char *out = g_build_filename (tmp, "fp8-f32.gguf", NULL);
  g_autofree char *bad_out = g_build_filename (tmp, "fp8-bad.gguf", NULL);
  const char *make[] = { "make-fp8", dir, ref_dir, bad_dir, src_dir, NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) fp8 = NULL;
  g_autoptr (BlnModel) ref = NULL;
  g_autoptr (BlnModel) conv = NULL;
  g_autoptr (BlnModel) orig = NULL;
  g_autofree float *l_fp8 = NULL;
  g_autofree float *l_ref = NULL;
  g_autofree float *l_conv = NULL;
  g_autofree float *l_orig = NULL;
  int32_t ids[16];
  int n_vocab;
  double moved = 0;

  if (!check (make))
    return;
  fp8 = bln_model_load (dir, &error);
  g_assert_no_error (error);
  ref = bln_model_load (ref_dir, &error);
  g_assert_no_error (error);
  orig = bln_model_load (src_dir, &error);
  g_assert_no_error (error);
  g_assert_true (bln_hf_convert (dir, out, BLN_TYPE_F32, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  conv = bln_model_load (out, &error);
  g_assert_no_error (error);
  n_vocab = bln_model_hparams (ref)->n_vocab;
  for (guint i = 0; i < G_N_ELEMENTS (ids); i++)
    ids[i] = (int32_t) (5 + (i * 53) % (n_vocab - 5));
  l_fp8 = all_logits (fp8, ids, G_N_ELEMENTS (ids));
  l_ref = all_logits (ref, ids, G_N_ELEMENTS (ids));
  l_conv = all_logits (conv, ids, G_N_ELEMENTS (ids));
  l_orig = all_logits (orig, ids, G_N_ELEMENTS (ids));
  for (gsize i = 0; i < G_N_ELEMENTS (ids) * (gsize) n_vocab; i++)
    {
      g_assert_cmpfloat (fabs (l_fp8[i] - l_ref[i]), <=, 1e-5 * MAX (1.0, fabs (l_ref[i])));
      g_assert_cmpfloat (fabs (l_conv[i] - l_ref[i]), <=, 1e-5 * MAX (1.0, fabs (l_ref[i])));
      moved = MAX (moved, fabs (l_ref[i] - l_orig[i]));
    }
  /* FP8 rounding moved the logits: the folders really differ */
  g_test_message ("FP8 rounding moved the logits by up to %.3g", moved);
  g_assert_cmpfloat (moved, >, 1e-4);
  g_unlink (out);

  g_assert_false (bln_hf_convert (bad_dir, bad_out, BLN_TYPE_F32, NULL, NULL, NULL, &error));
  g_assert_nonnull (error);
  g_test_message ("without a scale: %s", error->message);
  g_assert_nonnull (strstr (error->message, "_scale_inv"));
  g_assert_false (g_file_test (bad_out, G_FILE_TEST_EXISTS));
}

/* Every type for llama; for the others the types whose rows differ in kind
 * (qwen2's 48-wide rows fall back to f16 for every quantised type). */
static void
test_types (gconstpointer data)
{
  static const char *all[] = { "f32", "f16", "bf16", "q8_0", "q4_0", "q4_K", "q6_K", NULL };
  static const char *some[] = { "f32", "bf16", "q8_0", NULL };
  const char *const *types = g_str_equal (data, "llama") ? all : some;

  for (guint i = 0; types[i]; i++)
    convert_and_compare (data, types[i]);
}

static void
test_wide_kquants (void)
{
  g_autofree char *dir = g_build_filename (tmp, "wide-llama", NULL);
  g_autofree char *tok = g_build_filename (golden, "models", "llama", NULL);
  const char *make[] = { "make-wide", dir, tok, NULL };
  static const char *types[] = { "q4_K", "q6_K", "q8_0", "q4_0" };

  if (!check (make))
    return;
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    {
      g_autofree char *out = g_strdup_printf ("%s/wide-%s.gguf", tmp, types[i]);
      g_autoptr (GError) error = NULL;
      g_autoptr (BlnModel) m = NULL;
      const char *args[] = { "wide", out, dir, types[i], NULL };
      BlnType type;

      g_assert_true (bln_hf_convert_type_from_name (types[i], &type));
      g_assert_true (bln_hf_convert (dir, out, type, NULL, NULL, NULL, &error));
      g_assert_no_error (error);
      check (args);
      m = bln_model_load (out, &error);
      g_assert_no_error (error);
      g_unlink (out);
    }
}

static void
test_cancel_and_refuse (void)
{
  g_autofree char *llama = g_build_filename (golden, "models", "llama", NULL);
  g_autofree char *other = g_build_filename (tmp, "gemma-like", NULL);
  static const char *files[] = { "model.safetensors", "tokenizer.json", "tokenizer_config.json" };
  g_autofree char *out = g_build_filename (tmp, "no.gguf", NULL);
  g_autofree char *part = g_strconcat (out, ".part", NULL);
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *name = bln_hf_convert_file_name ("/x/My-Model/", BLN_TYPE_Q4_K);

  g_assert_cmpstr (name, ==, "My-Model-q4_K.gguf");
  g_cancellable_cancel (cancellable);
  g_assert_false (bln_hf_convert (llama, out, BLN_TYPE_Q8_0, cancellable, NULL, NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (part, G_FILE_TEST_EXISTS));
  g_clear_error (&error);

  /* an architecture it does not convert: the llama folder relabelled */
  g_assert_cmpint (g_mkdir_with_parents (other, 0755), ==, 0);
  for (guint i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *rel = g_build_filename (llama, files[i], NULL);
      g_autofree char *from = g_canonicalize_filename (rel, NULL);
      g_autofree char *to = g_build_filename (other, files[i], NULL);
      g_assert_cmpint (symlink (from, to), ==, 0);
    }
  {
    g_autofree char *cfg_path = g_build_filename (llama, "config.json", NULL);
    g_autofree char *cfg = NULL;
    g_autofree char *to = g_build_filename (other, "config.json", NULL);
    g_auto (GStrv) parts = NULL;
    g_autofree char *relabelled = NULL;

    g_assert_true (g_file_get_contents (cfg_path, &cfg, NULL, NULL));
    parts = g_strsplit (cfg, "\"llama\"", -1);
    relabelled = g_strjoinv ("\"gemma2\"", parts);
    g_assert_true (g_file_set_contents (to, relabelled, -1, NULL));
  }
  g_assert_false (bln_hf_convert (other, out, BLN_TYPE_Q8_0, NULL, NULL, NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_assert_false (g_file_test (part, G_FILE_TEST_EXISTS));
  g_clear_error (&error);

  g_assert_false (bln_hf_convert (llama, out, BLN_TYPE_Q2_K, NULL, NULL, NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  g_assert_false (bln_hf_convert (tmp, out, BLN_TYPE_Q8_0, NULL, NULL, NULL, &error));
  g_assert_nonnull (error);
  g_assert_false (g_file_test (part, G_FILE_TEST_EXISTS));
}

static void
remove_tree (const char *path)
{
  g_autoptr (GDir) dir = g_dir_open (path, 0, NULL);
  const char *name;

  while (dir && (name = g_dir_read_name (dir)))
    {
      g_autofree char *child = g_build_filename (path, name, NULL);
      if (g_file_test (child, G_FILE_TEST_IS_DIR))
        remove_tree (child);
      else
        g_unlink (child);
    }
  g_rmdir (path);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  golden = g_strdup (g_getenv ("BALEEN_GOLDEN_DIR") ? g_getenv ("BALEEN_GOLDEN_DIR")
                                                     : "tests/golden");
  script = g_strdup (g_getenv ("BALEEN_CHECK_HF_GGUF") ? g_getenv ("BALEEN_CHECK_HF_GGUF")
                                                        : "tests/ui/check_hf_gguf.py");
  tmp = g_dir_make_tmp ("baleen-hfconv-XXXXXX", NULL);
  g_test_add_data_func ("/Baleen/HfConvert/llama", "llama", test_types);
  g_test_add_data_func ("/Baleen/HfConvert/qwen2", "qwen2", test_types);
  g_test_add_data_func ("/Baleen/HfConvert/llama-tied", "llama-tied", test_types);
  g_test_add_data_func ("/Baleen/HfConvert/deepseek2-v2lite", "deepseek2-v2lite",
                        test_deepseek2);
  g_test_add_data_func ("/Baleen/HfConvert/deepseek2-v3", "deepseek2-v3", test_deepseek2);
  g_test_add_func ("/Baleen/HfConvert/deepseek2-fused-experts", test_deepseek2_fused);
  g_test_add_func ("/Baleen/HfConvert/deepseek2-fp8", test_deepseek2_fp8);
  g_test_add_func ("/Baleen/HfConvert/wide-k-quants", test_wide_kquants);
  g_test_add_func ("/Baleen/HfConvert/cancel-and-refuse", test_cancel_and_refuse);
  rc = g_test_run ();
  remove_tree (tmp);
  g_free (tmp);
  g_free (golden);
  g_free (script);
  return rc;
}
