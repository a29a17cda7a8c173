/* test-cuda-batch.c — batched evaluation over a paged KV cache on the GPU
 * against the same on the CPU.
 *
 * Reference: the CPU backend's paged cache (bln_kv_cache_new, float32 rows),
 * which test-kv-cache.c checks against transformers' logits. The tiny llama
 * and qwen2 models of tools/gen_tiny_models.py (qwen2 with q/k/v biases, a
 * head size of 12 that takes the kernels' unvectorised loads) run the same
 * script of bln_kv_eval() steps on a CPU cache and on a device cache
 * (bln_kv_cache_new_with_options, BLN_DEVICE_CUDA): batches of exactly 1,
 * 3, 8, 17 and 40 tokens mixing prompt chunks (some with every row's
 * logits) and decode tokens of up to five sequences, a sequence that takes
 * another's prefix blocks (bln_kv_seq_match_prefix must find the same
 * blocks on both), a sequence freed and another reset and refilled (blocks
 * reused with stale rows in them), a step of 611 tokens that spans two
 * 512-token chunks of the GPU workspace (one sequence's prompt crossing the
 * chunk boundary, logits of every row of it), then 32 greedy decode steps of
 * six sequences together (the matvec path; a 600-position sequence takes
 * several attention splits). Block sizes 4 and 16.
 *
 * Every logit row must lie within a bound times the row's largest |logit|:
 * 1e-4 with a float32 device cache (the bound test-model-golden.c holds the
 * CPU to against transformers: only summation order differs) and 1e-3 with
 * the default float16 cache (keys and values rounded to 2^-11 relative,
 * through two products; test-cuda-model.c allows 3e-3 against transformers,
 * the first H200 run here saw 3.6e-4 at most). The
 * greedy tokens must be the CPU's at every step (with F16, except where the
 * CPU's top two logits are closer than twice the bound, a tie rounding may
 * break). The caches' block statistics must stay equal throughout.
 * deepseek2 is refused with BLN_ERROR_UNSUPPORTED. With BALEEN_CUDA_TEST_MODEL
 * naming a (quantised, real-shape) llama / qwen2 GGUF, twelve prompts and 8
 * greedy steps compare the two backends by mean KL divergence (< 0.01).
 * The row and split formulas the kernels share with the host (paged.h) are
 * checked against the CPU cache's bln_kv_row() without a GPU.
 * Without a usable GPU every other case skips with the reason.
 */
#include <math.h>
#include <string.h>
#include <glib.h>

#include "bln-error.h"
#include "cpu/cpu.h"
#include "cuda/cuda.h"
#include "kv-cache.h"
#include "model.h"
#include "model-private.h"
#include "kernels/paged.h"
#include "cuda-test-util.h"
#include "model-test-util.h"

#define N_SEQ 8
#define GREEDY_STEPS 32

typedef struct {
  const char *model;
  int kv_bits;
  int block_size;
  double bound;
} Case;

static const Case cases[] = {
  { "llama", 32, 4, 1e-4 },
  { "llama", 16, 16, 1e-3 },
  { "qwen2", 32, 16, 1e-4 },
  { "qwen2", 16, 4, 1e-3 },
};

typedef struct {
  const Case *cs;
  BlnModel *model;
  BlnPool *pool;
  BlnKvCache *cpu, *gpu;
  BlnKvSeq *cseq[N_SEQ], *gseq[N_SEQ];
  int n_vocab;
  double worst;            /* largest error seen, relative to its row's scale */
  int n_checked_rows;
  /* the last logits row of each sequence (CPU) and the GPU's argmax of it */
  float *last[N_SEQ];
  int gpu_argmax[N_SEQ];
} Rig;

/* One sequence's part of a step. */
typedef struct {
  int seq;
  const int32_t *ids;
  int n;
  gboolean all;
} Part;

static void
check_stats (Rig *r)
{
  BlnKvStats a, b;

  bln_kv_cache_get_stats (r->cpu, &a);
  bln_kv_cache_get_stats (r->gpu, &b);
  g_assert_cmpint (a.blocks_used, ==, b.blocks_used);
  g_assert_cmpint (a.blocks_cached, ==, b.blocks_cached);
  g_assert_cmpuint (a.hit_tokens, ==, b.hit_tokens);
  g_assert_cmpuint (a.lookup_tokens, ==, b.lookup_tokens);
}

/* Runs @parts on both caches and compares every logit row. @expect_tokens
 * is the step's size, asserted so that the script keeps its batch sizes. */
static void
step (Rig *r, const Part *parts, int n_parts, int expect_tokens)
{
  BlnKvBatchItem ci[N_SEQ], gi[N_SEQ];
  float *cl[N_SEQ], *gl[N_SEQ];
  GError *error = NULL;
  int i, total = 0;

  g_assert_cmpint (n_parts, <=, N_SEQ);
  for (i = 0; i < n_parts; i++)
    {
      int rows = parts[i].all ? parts[i].n : 1;

      cl[i] = g_new0 (float, (size_t) rows * r->n_vocab);
      gl[i] = g_new0 (float, (size_t) rows * r->n_vocab);
      ci[i] = (BlnKvBatchItem) { r->cseq[parts[i].seq], parts[i].ids, parts[i].n, cl[i],
                                 parts[i].all };
      gi[i] = (BlnKvBatchItem) { r->gseq[parts[i].seq], parts[i].ids, parts[i].n, gl[i],
                                 parts[i].all };
      total += parts[i].n;
    }
  g_assert_cmpint (total, ==, expect_tokens);
  g_assert_true (bln_kv_eval (r->cpu, ci, n_parts, &error));
  g_assert_no_error (error);
  g_assert_true (bln_kv_eval (r->gpu, gi, n_parts, &error));
  g_assert_no_error (error);

  for (i = 0; i < n_parts; i++)
    {
      int rows = parts[i].all ? parts[i].n : 1, row, j;

      g_assert_cmpint (bln_kv_seq_length (r->cseq[parts[i].seq]), ==,
                       bln_kv_seq_length (r->gseq[parts[i].seq]));
      for (row = 0; row < rows; row++)
        {
          const float *c = cl[i] + (size_t) row * r->n_vocab;
          const float *g = gl[i] + (size_t) row * r->n_vocab;
          double scale = 0, err = 0;

          for (j = 0; j < r->n_vocab; j++)
            {
              g_assert_true (isfinite (g[j]));
              scale = MAX (scale, fabs (c[j]));
            }
          for (j = 0; j < r->n_vocab; j++)
            err = MAX (err, fabs ((double) g[j] - c[j]));
          if (err > r->cs->bound * scale)
            g_error ("%s kv%d bs%d: sequence %d row %d of a %d-token step: error %g > %g x %g",
                     r->cs->model, r->cs->kv_bits, r->cs->block_size, parts[i].seq, row,
                     expect_tokens, err, r->cs->bound, scale);
          r->worst = MAX (r->worst, scale > 0 ? err / scale : 0);
          r->n_checked_rows++;
        }
      g_free (r->last[parts[i].seq]);
      r->last[parts[i].seq] = g_memdup2 (cl[i] + (size_t) (rows - 1) * r->n_vocab,
                                         (size_t) r->n_vocab * sizeof (float));
      r->gpu_argmax[parts[i].seq] = argmax (gl[i] + (size_t) (rows - 1) * r->n_vocab,
                                            r->n_vocab);
      g_free (cl[i]);
      g_free (gl[i]);
    }
  check_stats (r);
}

static int32_t *
random_ids (GRand *rnd, int n, int n_vocab)
{
  int32_t *ids = g_new (int32_t, n);
  int i;

  for (i = 0; i < n; i++)
    ids[i] = g_rand_int_range (rnd, 0, n_vocab);
  return ids;
}

static void
seq_new (Rig *r, int s)
{
  r->cseq[s] = bln_kv_seq_new (r->cpu);
  r->gseq[s] = bln_kv_seq_new (r->gpu);
}

static void
test_batch (gconstpointer data)
{
  const Case *cs = data;
  g_autoptr (GRand) rnd = g_rand_new_with_seed (0xba1ee17);
  GError *error = NULL;
  Rig r = { 0 };
  enum { A, B, C, D, E, G, H };
  int32_t *ids[N_SEQ] = { 0 };
  g_autofree int32_t *eids = NULL;
  size_t budget;
  int s, k, hit_c, hit_g, ties = 0;

  if (!need_gpu ())
    return;
  r.cs = cs;
  r.model = golden_model_load (cs->model, "model.gguf");
  r.pool = test_pool_new (2);
  r.n_vocab = bln_model_hparams (r.model)->n_vocab;
  budget = 1024 * bln_kv_cache_block_bytes_for (r.model, cs->block_size);
  r.cpu = bln_kv_cache_new (r.model, r.pool, budget, cs->block_size, &error);
  g_assert_no_error (error);
  r.gpu = gpu_kv_cache (r.model, r.pool, budget, cs->block_size, cs->kv_bits);
  g_assert_cmpint (bln_kv_cache_device (r.gpu), ==, BLN_DEVICE_CUDA);
  g_assert_cmpint (bln_kv_cache_device (r.cpu), ==, BLN_DEVICE_CPU);
  g_assert_cmpuint (bln_kv_cache_block_bytes (r.gpu) * (32 / cs->kv_bits), ==,
                    bln_kv_cache_block_bytes (r.cpu));

  for (s = 0; s < N_SEQ; s++)
    ids[s] = random_ids (rnd, 700, r.n_vocab);
  for (s = A; s <= E; s++)
    seq_new (&r, s);

  /* 1, 3, 8, 17 tokens: prompts, every-row logits, decode tokens */
  {
    Part p1[] = { { A, ids[A], 1, FALSE } };
    Part p2[] = { { A, ids[A] + 1, 3, TRUE } };
    Part p3[] = { { B, ids[B], 7, FALSE }, { A, ids[A] + 4, 1, FALSE } };
    Part p4[] = { { B, ids[B] + 7, 9, TRUE }, { A, ids[A] + 5, 1, FALSE },
                  { C, ids[C], 7, FALSE } };

    step (&r, p1, G_N_ELEMENTS (p1), 1);
    step (&r, p2, G_N_ELEMENTS (p2), 3);
    step (&r, p3, G_N_ELEMENTS (p3), 8);
    step (&r, p4, G_N_ELEMENTS (p4), 17);
  }

  /* E starts with B's first 16 tokens: full blocks of B (16 = 4 blocks of 4
   * or one of 16) that it takes instead of computing them */
  eids = random_ids (rnd, 26, r.n_vocab);
  memcpy (eids, ids[B], 16 * sizeof (int32_t));
  hit_c = bln_kv_seq_match_prefix (r.cseq[E], eids, 25);
  hit_g = bln_kv_seq_match_prefix (r.gseq[E], eids, 25);
  g_assert_cmpint (hit_c, ==, 16);
  g_assert_cmpint (hit_g, ==, 16);
  {
    Part p5[] = { { E, eids + 16, 10, FALSE }, { D, ids[D], 27, TRUE },
                  { A, ids[A] + 6, 1, FALSE }, { B, ids[B] + 16, 1, FALSE },
                  { C, ids[C] + 7, 1, FALSE } };

    step (&r, p5, G_N_ELEMENTS (p5), 40);
  }

  /* C freed, A reset and refilled with a new prompt, H new: blocks come back
   * with stale rows. G's 600-token prompt crosses the 512-token chunk. */
  bln_kv_seq_free (r.cseq[C]);
  bln_kv_seq_free (r.gseq[C]);
  r.cseq[C] = r.gseq[C] = NULL;
  bln_kv_seq_reset (r.cseq[A]);
  bln_kv_seq_reset (r.gseq[A]);
  seq_new (&r, G);
  seq_new (&r, H);
  {
    Part p6[] = { { A, ids[A] + 100, 5, FALSE }, { G, ids[G], 600, TRUE },
                  { B, ids[B] + 17, 1, FALSE }, { D, ids[D] + 27, 1, FALSE },
                  { E, eids + 0, 1, FALSE }, { H, ids[H], 3, FALSE } };

    step (&r, p6, G_N_ELEMENTS (p6), 611);
  }

  /* greedy decoding of six sequences together */
  for (k = 0; k < GREEDY_STEPS; k++)
    {
      const int live[] = { A, B, D, E, G, H };
      int32_t next[G_N_ELEMENTS (live)];
      Part p[G_N_ELEMENTS (live)];
      guint i;

      for (i = 0; i < G_N_ELEMENTS (live); i++)
        {
          const float *lc = r.last[live[i]];
          int best = argmax (lc, r.n_vocab), second = best == 0 ? 1 : 0, j;
          double scale = 0;

          for (j = 0; j < r.n_vocab; j++)
            {
              scale = MAX (scale, fabs (lc[j]));
              if (j != best && lc[j] > lc[second])
                second = j;
            }
          if (r.gpu_argmax[live[i]] != best)
            {
              /* only a near-tie may differ, and only with an F16 cache */
              g_assert_cmpint (cs->kv_bits, ==, 16);
              g_assert_cmpfloat (lc[best] - lc[second], <=, 2 * cs->bound * scale);
              ties++;
            }
          next[i] = best;
          p[i] = (Part) { live[i], &next[i], 1, FALSE };
        }
      step (&r, p, G_N_ELEMENTS (live), G_N_ELEMENTS (live));
    }
  g_test_message ("%s kv%d bs%d: %d rows, largest error %.3g of the row's largest |logit|; "
                  "%d near-ties", cs->model, cs->kv_bits, cs->block_size, r.n_checked_rows,
                  r.worst, ties);

  for (s = 0; s < N_SEQ; s++)
    {
      bln_kv_seq_free (r.cseq[s]);
      bln_kv_seq_free (r.gseq[s]);
      g_free (ids[s]);
      g_free (r.last[s]);
    }
  bln_kv_cache_free (r.gpu);
  bln_kv_cache_free (r.cpu);
  bln_pool_free (r.pool);
  bln_model_free (r.model);
}

#define NR 12

/* A model named by BALEEN_CUDA_TEST_MODEL (a real-shape synthetic model,
 * quantised: the 8-bit matvecs and the F16 GEMMs of the GPU round
 * activations differently from the CPU): twelve prompts of 1..331 tokens in
 * one step (three chunks of up to 512 tokens), then 8 greedy steps of the
 * twelve (matvecs in slices of 8 rows); the mean
 * KL divergence between the CPU's and the GPU's distributions must stay under
 * 0.01, test-cuda-model.c's bound for a single context. */
static void
test_real_model (void)
{
  const char *path = need_test_model ();
  static const int lens[] = { 97, 331, 150, 64, 20, 5, 77, 40, 13, 1, 33, 200 };
  g_autoptr (BlnModel) model = NULL;
  g_autoptr (GRand) rnd = g_rand_new_with_seed (77);
  BlnPool *pool;
  BlnKvCache *cpu, *gpu;
  BlnKvSeq *cs[NR], *gs[NR];
  BlnKvBatchItem ci[NR], gi[NR];
  int32_t *ids[NR], next[NR];
  float *cl, *gl;
  GError *error = NULL;
  double kl_sum = 0;
  int n_kl = 0, n_vocab, i, k, agree = 0;
  size_t budget;

  if (path == NULL || !need_gpu ())
    return;
  model = test_model_load (path);
  pool = test_pool_new (0);
  n_vocab = bln_model_hparams (model)->n_vocab;
  budget = 256 * bln_kv_cache_block_bytes_for (model, 0);
  cpu = bln_kv_cache_new (model, pool, budget, 0, &error);
  g_assert_no_error (error);
  gpu = gpu_kv_cache (model, NULL, budget, 0, 16);
  cl = g_new (float, NR * (size_t) n_vocab);
  gl = g_new (float, NR * (size_t) n_vocab);
  for (i = 0; i < NR; i++)
    {
      ids[i] = random_ids (rnd, lens[i], n_vocab);
      cs[i] = bln_kv_seq_new (cpu);
      gs[i] = bln_kv_seq_new (gpu);
      ci[i] = (BlnKvBatchItem) { cs[i], ids[i], lens[i], cl + (size_t) i * n_vocab, FALSE };
      gi[i] = (BlnKvBatchItem) { gs[i], ids[i], lens[i], gl + (size_t) i * n_vocab, FALSE };
    }
  for (k = 0; k <= 8; k++)
    {
      g_assert_true (bln_kv_eval (cpu, ci, NR, &error));
      g_assert_no_error (error);
      g_assert_true (bln_kv_eval (gpu, gi, NR, &error));
      g_assert_no_error (error);
      for (i = 0; i < NR; i++)
        {
          const float *c = cl + (size_t) i * n_vocab, *g = gl + (size_t) i * n_vocab;

          kl_sum += kl_div (c, g, n_vocab);
          n_kl++;
          next[i] = argmax (c, n_vocab);
          agree += argmax (g, n_vocab) == next[i];
          ci[i].ids = gi[i].ids = &next[i];
          ci[i].n = gi[i].n = 1;
        }
    }
  g_test_message ("real model: mean KL %.3g over %d rows, argmax agrees in %d", kl_sum / n_kl,
                  n_kl, agree);
  g_assert_cmpfloat (kl_sum / n_kl, <, 0.01);
  for (i = 0; i < NR; i++)
    {
      bln_kv_seq_free (cs[i]);
      bln_kv_seq_free (gs[i]);
      g_free (ids[i]);
    }
  g_free (cl);
  g_free (gl);
  bln_kv_cache_free (gpu);
  bln_kv_cache_free (cpu);
  bln_pool_free (pool);
}

/* The index math the kernels share with the host (no GPU needed): the paged
 * row of every position of random tables equals the CPU cache's
 * bln_kv_row() (model-private.h), and the attention splits cover every
 * position with the documented sizes. */
static void
test_index_math (void)
{
  g_autoptr (GRand) rnd = g_rand_new_with_seed (99);
  static const int sizes[] = { 1, 4, 16, 17, 256 };
  int32_t tab[64];
  guint si;
  int i, layer, pos, len, bps;

  for (si = 0; si < G_N_ELEMENTS (sizes); si++)
    {
      int bs = sizes[si], n_layer = 1 + g_rand_int_range (rnd, 0, 40);
      BlnKvView view = { NULL, NULL, tab, bs };

      for (i = 0; i < 64; i++)
        tab[i] = g_rand_int_range (rnd, 0, 1 << 20);
      for (layer = 0; layer < n_layer; layer++)
        for (pos = 0; pos < 64 * bs; pos += 1 + pos / 7)
          g_assert_cmpuint (bln_paged_row (tab, n_layer, layer, bs, pos), ==,
                            bln_kv_row (&view, n_layer, layer, pos));
    }
  for (len = 1; len < 20000; len += 1 + len / 3)
    for (bps = 1; bps <= 264; bps += 1 + bps / 2)
      {
        int split = bln_paged_split_len (len, bps), nz = (len + split - 1) / split;
        int want = (264 + bps - 1) / bps;

        g_assert_cmpint (split, >=, 64);
        g_assert_cmpint (split % 32, ==, 0);
        g_assert_cmpint (nz * split, >=, len);
        g_assert_cmpint ((nz - 1) * split, <, len);
        g_assert_cmpint (nz, <=, want);
      }
}

/* deepseek2 has no batched GPU path yet: a clear refusal, nothing made. */
static void
test_unsupported (void)
{
  g_autoptr (BlnModel) model = NULL;
  GError *error = NULL;
  BlnContextOptions opts;

  if (!need_gpu ())
    return;
  model = golden_model_load ("deepseek2-v2lite", "model.gguf");
  gpu_options_init (&opts, 16);
  g_assert_null (bln_kv_cache_new_with_options (model, NULL,
                                                64 * bln_kv_cache_block_bytes_for (model, 0), 0,
                                                &opts, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_clear_error (&error);
}

int
main (int argc, char **argv)
{
  guint i;

  g_test_init (&argc, &argv, NULL);
  for (i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *name = g_strdup_printf ("/Baleen/CudaBatch/%s/kv%d/bs%d", cases[i].model,
                                               cases[i].kv_bits, cases[i].block_size);
      g_test_add_data_func (name, &cases[i], test_batch);
    }
  g_test_add_func ("/Baleen/CudaBatch/index-math", test_index_math);
  g_test_add_func ("/Baleen/CudaBatch/deepseek2-unsupported", test_unsupported);
  g_test_add_func ("/Baleen/CudaBatch/real-model", test_real_model);
  return g_test_run ();
}
