/* test-cuda-swa.c — the sliding attention window of the GPU's paged pool.
 *
 * References: HF transformers' sliding-window logits for the tiny qwen2 and
 * llama models (tests/golden/swa/, W = 5 over a 24-token prompt, then 16
 * greedy steps; tools/gen_swa_golden.py), and the CPU pool with the same
 * window, which test-swa.c checks against those goldens. The same script of
 * bln_kv_eval() steps runs on a CPU pool and a GPU pool (float32 and float16
 * rows, blocks of 4 and 16): sequence A's prompt with every row's logits,
 * sequence B taking A's prefix blocks (some of which A already gave back to
 * its window) and computing the rest, then both decoding in one batch.
 * Bounds as test-cuda-batch.c's: 1e-4 of the row's largest |logit| with F32
 * rows, 1e-3 with F16, against both references; the pools' block statistics
 * stay equal (the GPU pool gives blocks back the same way). A 600-token
 * prompt with a window of 100 (several attention splits, some wholly before
 * the window, some cut by it) must match the CPU row for row, and differ
 * from the same prompt without a window. A single GPU context with a window
 * is refused (BLN_ERROR_INVALID, no CPU fallback). Without a usable GPU
 * every case skips with the reason.
 */
#include <math.h>
#include <string.h>
#include <glib.h>

#include "bln-error.h"
#include "kv-cache.h"
#include "model.h"
#include "cuda-test-util.h"
#include "swa-test-util.h"

typedef struct {
  const char *model;
  int kv_bits;
  int block_size;
  double bound;
} Case;

static const Case cases[] = {
  { "qwen2", 32, 4, 1e-4 },  { "qwen2", 32, 16, 1e-4 }, { "qwen2", 16, 4, 1e-3 },
  { "llama", 32, 4, 1e-4 },  { "llama", 32, 16, 1e-4 }, { "llama", 16, 4, 1e-3 },
};

static BlnKvCache *
gpu_pool (BlnModel *m, BlnPool *pool, int kv_bits, int block_size, int n_blocks, int window)
{
  g_autoptr (GError) error = NULL;
  BlnKvCache *kv = gpu_kv_cache (m, pool,
                                 (size_t) n_blocks * bln_kv_cache_block_bytes_for (m, block_size),
                                 block_size, kv_bits);

  g_assert_true (bln_kv_cache_set_sliding_window (kv, window, &error));
  g_assert_no_error (error);
  return kv;
}

static BlnKvCache *
cpu_pool (BlnModel *m, BlnPool *pool, int block_size, int n_blocks, int window)
{
  g_autoptr (GError) error = NULL;
  BlnKvCache *kv = bln_kv_cache_new (m, pool, (size_t) n_blocks
                                                * bln_kv_cache_block_bytes_for (m, block_size),
                                     block_size, &error);

  g_assert_no_error (error);
  g_assert_true (bln_kv_cache_set_sliding_window (kv, window, &error));
  return kv;
}

/* One step of the script on @kv: items for A and/or B. */
static void
eval (BlnKvCache *kv, BlnKvBatchItem *items, int n)
{
  g_autoptr (GError) error = NULL;

  g_assert_true (bln_kv_eval (kv, items, n, &error));
  g_assert_no_error (error);
}

static void
same_stats (BlnKvCache *a, BlnKvCache *b)
{
  BlnKvStats sa, sb;

  bln_kv_cache_get_stats (a, &sa);
  bln_kv_cache_get_stats (b, &sb);
  g_assert_cmpint (sa.blocks_used, ==, sb.blocks_used);
  g_assert_cmpint (sa.blocks_cached, ==, sb.blocks_cached);
}

static void
test_case (gconstpointer data)
{
  const Case *c = data;
  Golden g;
  BlnKvCache *kc, *kg;
  BlnKvSeq *ac, *bc, *ag, *bg;
  BlnKvBatchItem ic[2], ig[2];
  float *lac, *lbc, *lag, *lbg;
  double worst = 0;
  int m, t, nv;

  if (!need_gpu ())
    return;
  golden_load (&g, c->model);
  nv = g.n_vocab;
  kc = cpu_pool (g.m, g.pool, c->block_size, 64, g.window);
  kg = gpu_pool (g.m, g.pool, c->kv_bits, c->block_size, 64, g.window);
  lac = g_new (float, (size_t) g.n * nv);
  lbc = g_new (float, (size_t) g.n * nv);
  lag = g_new (float, (size_t) g.n * nv);
  lbg = g_new (float, (size_t) g.n * nv);

  ac = bln_kv_seq_new (kc);
  ag = bln_kv_seq_new (kg);
  ic[0] = (BlnKvBatchItem) { ac, g.ids, g.n, lac, TRUE };
  ig[0] = (BlnKvBatchItem) { ag, g.ids, g.n, lag, TRUE };
  eval (kc, ic, 1);
  eval (kg, ig, 1);
  worst = MAX (worst, rel_err (lag, g.logits, g.n, nv));
  worst = MAX (worst, rel_err (lag, lac, g.n, nv));
  same_stats (kc, kg);

  bc = bln_kv_seq_new (kc);
  bg = bln_kv_seq_new (kg);
  m = bln_kv_seq_match_prefix (bc, g.ids, g.n - 1);
  g_assert_cmpint (bln_kv_seq_match_prefix (bg, g.ids, g.n - 1), ==, m);
  g_assert_cmpint (m, >, 0);
  ic[0] = (BlnKvBatchItem) { bc, g.ids + m, g.n - m, lbc, TRUE };
  ig[0] = (BlnKvBatchItem) { bg, g.ids + m, g.n - m, lbg, TRUE };
  eval (kc, ic, 1);
  eval (kg, ig, 1);
  worst = MAX (worst, rel_err (lbg, g.logits + (size_t) m * nv, g.n - m, nv));
  worst = MAX (worst, rel_err (lbg, lbc, g.n - m, nv));
  same_stats (kc, kg);

  for (t = 0; t < g.n_gen; t++)
    {
      const float *ref = g.gen_logits + (size_t) t * nv;
      const float *ra = lag + (size_t) (t == 0 ? g.n - 1 : 0) * nv;
      const float *rb = lbg + (size_t) (t == 0 ? g.n - m - 1 : 0) * nv;

      worst = MAX (worst, rel_err (ra, ref, 1, nv));
      worst = MAX (worst, rel_err (rb, ref, 1, nv));
      ic[0] = (BlnKvBatchItem) { ac, &g.ids[g.n + t], 1, lac, FALSE };
      ic[1] = (BlnKvBatchItem) { bc, &g.ids[g.n + t], 1, lbc, FALSE };
      ig[0] = (BlnKvBatchItem) { ag, &g.ids[g.n + t], 1, lag, FALSE };
      ig[1] = (BlnKvBatchItem) { bg, &g.ids[g.n + t], 1, lbg, FALSE };
      eval (kc, ic, 2);
      eval (kg, ig, 2);
      worst = MAX (worst, rel_err (lag, lac, 1, nv));
      worst = MAX (worst, rel_err (lbg, lbc, 1, nv));
      same_stats (kc, kg);
    }
  g_test_message ("%s kv%d block %d: worst %.3g (bound %.1g)", c->model, c->kv_bits,
                  c->block_size, worst, c->bound);
  g_assert_cmpfloat (worst, <=, c->bound);

  bln_kv_seq_free (ac);
  bln_kv_seq_free (bc);
  bln_kv_seq_free (ag);
  bln_kv_seq_free (bg);
  same_stats (kc, kg);
  bln_kv_cache_free (kc);
  bln_kv_cache_free (kg);
  g_free (lac);
  g_free (lbc);
  g_free (lag);
  g_free (lbg);
  golden_clear (&g);
}

/* 600 positions, window 100: the attention splits (at least 64 positions
 * each) fall wholly before, across and inside each token's window. */
static void
test_long (gconstpointer data)
{
  const char *model = data;
  enum { N = 600, W = 100 };
  Golden g;
  BlnKvCache *kc, *kg, *kf;
  BlnKvSeq *sc, *sg, *sf;
  BlnKvBatchItem it;
  int32_t ids[N];
  float *lc, *lg, *lf;
  double err, off;
  int i, nv;

  if (!need_gpu ())
    return;
  golden_load (&g, model);
  nv = g.n_vocab;
  for (i = 0; i < N; i++)
    ids[i] = (int32_t) ((i * 37 + 11) % nv);
  kc = cpu_pool (g.m, g.pool, 16, 64, W);
  kg = gpu_pool (g.m, g.pool, 32, 16, 64, W);
  kf = gpu_pool (g.m, g.pool, 32, 16, 64, 0);
  lc = g_new (float, (size_t) N * nv);
  lg = g_new (float, (size_t) N * nv);
  lf = g_new (float, (size_t) N * nv);
  sc = bln_kv_seq_new (kc);
  sg = bln_kv_seq_new (kg);
  sf = bln_kv_seq_new (kf);
  it = (BlnKvBatchItem) { sc, ids, N, lc, TRUE };
  eval (kc, &it, 1);
  it = (BlnKvBatchItem) { sg, ids, N, lg, TRUE };
  eval (kg, &it, 1);
  it = (BlnKvBatchItem) { sf, ids, N, lf, TRUE };
  eval (kf, &it, 1);
  err = rel_err (lg, lc, N, nv);
  off = rel_err (lf + (size_t) (W + 50) * nv, lc + (size_t) (W + 50) * nv, N - W - 50, nv);
  g_test_message ("%s: 600 positions, window %d: GPU vs CPU %.3g; without the window %.3g",
                  model, W, err, off);
  g_assert_cmpfloat (err, <=, 1e-4);
  g_assert_cmpfloat (off, >, 1e-2);
  /* the first W rows see the same positions either way */
  g_assert_cmpfloat (rel_err (lf, lc, W, nv), <=, 1e-4);
  same_stats (kc, kg);
  bln_kv_seq_free (sc);
  bln_kv_seq_free (sg);
  bln_kv_seq_free (sf);
  bln_kv_cache_free (kc);
  bln_kv_cache_free (kg);
  bln_kv_cache_free (kf);
  g_free (lc);
  g_free (lg);
  g_free (lf);
  golden_clear (&g);
}

/* A single GPU context has no windowed attention: refused with the setting
 * named, and not turned into a CPU fallback. */
static void
test_single_context_refused (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = NULL;
  BlnPool *pool;
  BlnContextOptions o;

  if (!need_gpu ())
    return;
  m = golden_model_load ("qwen2", "model.gguf");
  pool = test_pool_new (1);
  gpu_options_init (&o, 16);
  o.sliding_window = 5;
  g_assert_null (bln_context_new_with_options (m, 64, pool, &o, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "sliding"));
  g_clear_error (&error);
  g_assert_null (bln_context_new_on_device (m, 64, pool, &o, NULL, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  bln_pool_free (pool);
}

int
main (int argc, char **argv)
{
  guint i;

  g_test_init (&argc, &argv, NULL);
  for (i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *p = g_strdup_printf ("/Baleen/CudaSwa/%s/kv%d/block%d", cases[i].model,
                                            cases[i].kv_bits, cases[i].block_size);
      g_test_add_data_func (p, &cases[i], test_case);
    }
  g_test_add_data_func ("/Baleen/CudaSwa/qwen2/long", "qwen2", test_long);
  g_test_add_data_func ("/Baleen/CudaSwa/llama/long", "llama", test_long);
  g_test_add_func ("/Baleen/CudaSwa/single-context-refused", test_single_context_refused);
  return g_test_run ();
}
