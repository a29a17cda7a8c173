/* test-swa.c — the sliding attention window on the CPU.
 *
 * Reference, not written here: HF transformers' logits for the tiny qwen2
 * model (Qwen2ForCausalLM, window on every layer) and the tiny llama model
 * (its weights as MistralForCausalLM), with a window of 5 over a 24-token
 * prompt, then 16 greedy steps (tests/golden/swa/goldens.json, from
 * tools/gen_swa_golden.py). Checked with the bound of test-model-golden.c
 * (1e-4 of the largest |logit|), through:
 *   - a single context: prefill in one batch and in pieces, then decode;
 *   - the paged cache: two sequences in one batch, the second sharing the
 *     first's prefix blocks (some of them already given back by the first
 *     to its window), each then decoding; blocks in use stay bounded, a pool
 *     far smaller than the sequence suffices, refcounts return to zero;
 *   - the scheduler: several requests of the same prompt, prefix cache on,
 *     must each produce transformers' greedy tokens;
 *   - the 8-bit CPU pool, with test-kv8.c's bound (2e-2).
 * Each path is also run with the window off, which must miss the golden by
 * far (so the comparisons can fail). Finally the refusals: a negative
 * window, deepseek2, and a single GPU context when there is a GPU (without
 * one, as here, the CPU fallback must keep the window); the GPU pool's
 * window is tests/test-cuda-swa.c's.
 */
#include <math.h>
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "bln-error.h"
#include "kv-cache.h"
#include "model.h"
#include "scheduler.h"
#include "model-test-util.h"
#include "swa-test-util.h"

#define BOUND 1e-4

/* ---------------------------------------------------------------------- */
/* single context                                                          */

/* Prefill logits of @g's prompt with @window, in pieces of @piece tokens
 * (all of it at once when 0), then the greedy steps (teacher-forced on the
 * golden continuation): the largest relative error of each part. */
static void
run_context (Golden *g, int window, int piece, double *prefill_err, double *decode_err)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnContext) ctx = NULL;
  g_autofree float *out = g_new (float, (size_t) g->n * g->n_vocab);
  g_autofree float *step = g_new (float, g->n_vocab);
  BlnContextOptions o;
  int done = 0, t;

  bln_context_options_init (&o);
  o.sliding_window = window;
  ctx = bln_context_new_with_options (g->m, g->n + g->n_gen, g->pool, &o, &error);
  g_assert_no_error (error);
  while (done < g->n)
    {
      int k = piece > 0 ? MIN (piece, g->n - done) : g->n;

      g_assert_true (bln_context_eval (ctx, g->ids + done, k,
                                       out + (size_t) done * g->n_vocab, TRUE, &error));
      g_assert_no_error (error);
      done += k;
    }
  *prefill_err = rel_err (out, g->logits, g->n, g->n_vocab);
  *decode_err = 0;
  memcpy (step, out + (size_t) (g->n - 1) * g->n_vocab, g->n_vocab * sizeof (float));
  for (t = 0; t < g->n_gen; t++)
    {
      *decode_err = MAX (*decode_err,
                         rel_err (step, g->gen_logits + (size_t) t * g->n_vocab, 1, g->n_vocab));
      if (window > 0 && argmax (step, g->n_vocab) != g->ids[g->n + t])
        *decode_err = MAX (*decode_err, 1.0);   /* a greedy token differs */
      g_assert_true (bln_context_eval (ctx, &g->ids[g->n + t], 1, step, FALSE, &error));
      g_assert_no_error (error);
    }
}

static void
test_context (gconstpointer data)
{
  Golden g;
  double pe, de;

  golden_load (&g, data);
  run_context (&g, g.window, 0, &pe, &de);
  g_test_message ("%s window %d: prefill %.3g, decode %.3g", g.model, g.window, pe, de);
  g_assert_cmpfloat (pe, <=, BOUND);
  g_assert_cmpfloat (de, <=, BOUND);
  /* in pieces that do not line up with the window */
  run_context (&g, g.window, 7, &pe, &de);
  g_assert_cmpfloat (pe, <=, BOUND);
  g_assert_cmpfloat (de, <=, BOUND);
  /* the window must matter: full attention misses the golden by far */
  run_context (&g, 0, 0, &pe, &de);
  g_test_message ("%s window off: prefill %.3g, decode %.3g", g.model, pe, de);
  g_assert_cmpfloat (pe, >, 1e-2);
  g_assert_cmpfloat (de, >, 1e-2);
  /* a window as long as the context is full attention, bit for bit */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (BlnContext) a = bln_context_new (g.m, g.n, g.pool, &error);
    g_autoptr (BlnContext) b = NULL;
    g_autofree float *la = g_new (float, (size_t) g.n * g.n_vocab);
    g_autofree float *lb = g_new (float, (size_t) g.n * g.n_vocab);
    BlnContextOptions o;

    bln_context_options_init (&o);
    o.sliding_window = g.n;
    b = bln_context_new_with_options (g.m, g.n, g.pool, &o, &error);
    g_assert_no_error (error);
    g_assert_true (bln_context_eval (a, g.ids, g.n, la, TRUE, &error));
    g_assert_true (bln_context_eval (b, g.ids, g.n, lb, TRUE, &error));
    g_assert_cmpmem (la, (size_t) g.n * g.n_vocab * sizeof (float),
                     lb, (size_t) g.n * g.n_vocab * sizeof (float));
  }
  golden_clear (&g);
}

/* ---------------------------------------------------------------------- */
/* paged cache                                                             */

static void
check_stats (BlnKvCache *kv, BlnKvStats *st)
{
  bln_kv_cache_get_stats (kv, st);
  g_assert_cmpint (st->blocks_used + st->blocks_cached + st->blocks_free, ==, st->n_blocks);
}

/* Runs @g through the paged cache with @window, prefix cache on or off:
 * sequence A takes the whole prompt, then B matches A's prefix and runs the
 * rest; both then decode in one batch per step. Returns the largest error
 * against the golden; checks blocks in use after every step. */
static double
run_paged (Golden *g, int window, int block_size, gboolean prefix, int *max_used)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnKvCache) kv = NULL;
  g_autofree float *la = g_new (float, (size_t) g->n * g->n_vocab);
  g_autofree float *lb = g_new (float, (size_t) g->n * g->n_vocab);
  BlnKvSeq *a, *b;
  BlnKvStats st;
  BlnKvBatchItem items[2];
  double err;
  int m, t;

  kv = bln_kv_cache_new (g->m, g->pool, 128 * bln_kv_cache_block_bytes_for (g->m, block_size),
                         block_size, &error);
  g_assert_no_error (error);
  bln_kv_cache_set_prefix_cache (kv, prefix, 0);
  g_assert_true (bln_kv_cache_set_sliding_window (kv, window, &error));
  g_assert_no_error (error);
  g_assert_cmpint (bln_kv_cache_sliding_window (kv), ==, window);

  a = bln_kv_seq_new (kv);
  items[0] = (BlnKvBatchItem) { a, g->ids, g->n, la, TRUE };
  g_assert_true (bln_kv_eval (kv, items, 1, &error));
  g_assert_no_error (error);
  err = rel_err (la, g->logits, g->n, g->n_vocab);

  /* B: the first n - 1 tokens from the cache as far as full blocks go */
  b = bln_kv_seq_new (kv);
  m = bln_kv_seq_match_prefix (b, g->ids, g->n - 1);
  if (prefix)
    g_assert_cmpint (m, ==, (g->n - 1) / block_size * block_size);
  else
    g_assert_cmpint (m, ==, 0);
  items[0] = (BlnKvBatchItem) { b, g->ids + m, g->n - m, lb, TRUE };
  g_assert_true (bln_kv_eval (kv, items, 1, &error));
  g_assert_no_error (error);
  err = MAX (err, rel_err (lb, g->logits + (size_t) m * g->n_vocab, g->n - m, g->n_vocab));

  *max_used = 0;
  for (t = 0; t < g->n_gen; t++)
    {
      const float *ref = g->gen_logits + (size_t) t * g->n_vocab;

      err = MAX (err, rel_err (la + (size_t) (t == 0 ? g->n - 1 : 0) * g->n_vocab, ref, 1,
                               g->n_vocab));
      err = MAX (err, rel_err (lb + (size_t) (t == 0 ? g->n - m - 1 : 0) * g->n_vocab, ref, 1,
                               g->n_vocab));
      items[0] = (BlnKvBatchItem) { a, &g->ids[g->n + t], 1, la, FALSE };
      items[1] = (BlnKvBatchItem) { b, &g->ids[g->n + t], 1, lb, FALSE };
      g_assert_true (bln_kv_eval (kv, items, 2, &error));
      g_assert_no_error (error);
      check_stats (kv, &st);
      *max_used = MAX (*max_used, st.blocks_used);
    }
  g_assert_cmpint (bln_kv_seq_n_blocks (a), ==,
                   (g->n + g->n_gen + block_size - 1) / block_size);
  bln_kv_seq_free (a);
  bln_kv_seq_free (b);
  check_stats (kv, &st);
  g_assert_cmpint (st.blocks_used, ==, 0);
  if (!prefix)
    g_assert_cmpint (st.blocks_cached, ==, 0);
  return err;
}

static void
test_paged (gconstpointer data)
{
  Golden g;
  int bs, used, prefix;
  double err;

  golden_load (&g, data);
  for (prefix = 0; prefix <= 1; prefix++)
    for (bs = 1; bs <= 8; bs *= 2)
      {
        /* each sequence holds the blocks of its last `window` positions plus
         * the one being written: at most window / bs + 2 */
        int bound = 2 * (g.window / bs + 2);

        err = run_paged (&g, g.window, bs, prefix, &used);
        g_test_message ("%s block %d prefix %d: err %.3g, blocks in use at most %d (bound %d)",
                        g.model, bs, prefix, err, used, bound);
        g_assert_cmpfloat (err, <=, BOUND);
        g_assert_cmpint (used, <=, bound);
        /* without the window the same sequences hold every block */
        err = run_paged (&g, 0, bs, prefix, &used);
        g_assert_cmpfloat (err, >, 1e-2);
        g_assert_cmpint (used, ==, 2 * ((g.n + g.n_gen + bs - 1) / bs)
                                   - (prefix ? (g.n - 1) / bs : 0));
      }
  golden_clear (&g);
}

/* The 8-bit CPU pool with the window: prompt and decode against the
 * goldens within test-kv8.c's bound (2e-2 of the largest |logit|), and far
 * from them without the window. */
static void
test_kv8 (gconstpointer data)
{
  Golden g;
  int window;

  golden_load (&g, data);
  for (window = g.window; window >= 0; window -= g.window)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (BlnKvCache) kv = NULL;
      g_autofree float *lg = g_new (float, (size_t) g.n * g.n_vocab);
      BlnContextOptions o;
      BlnKvSeq *s;
      BlnKvBatchItem it;
      double err;
      int t;

      bln_context_options_init (&o);
      o.kv_bits = 8;
      kv = bln_kv_cache_new_with_options (g.m, g.pool,
                                          64 * bln_kv_cache_block_bytes_for_bits (g.m, 4, 8), 4,
                                          &o, &error);
      g_assert_no_error (error);
      g_assert_cmpint (bln_kv_cache_kv_bits (kv), ==, 8);
      g_assert_true (bln_kv_cache_set_sliding_window (kv, window, &error));
      s = bln_kv_seq_new (kv);
      it = (BlnKvBatchItem) { s, g.ids, g.n, lg, TRUE };
      g_assert_true (bln_kv_eval (kv, &it, 1, &error));
      err = rel_err (lg, g.logits, g.n, g.n_vocab);
      for (t = 0; t < g.n_gen; t++)
        {
          err = MAX (err, rel_err (lg + (size_t) (t == 0 ? g.n - 1 : 0) * g.n_vocab,
                                   g.gen_logits + (size_t) t * g.n_vocab, 1, g.n_vocab));
          it = (BlnKvBatchItem) { s, &g.ids[g.n + t], 1, lg, FALSE };
          g_assert_true (bln_kv_eval (kv, &it, 1, &error));
          g_assert_no_error (error);
        }
      g_test_message ("%s 8-bit pool, window %d: err %.3g", g.model, window, err);
      if (window > 0)
        g_assert_cmpfloat (err, <=, 2e-2);
      else
        g_assert_cmpfloat (err, >, 1e-1);
      bln_kv_seq_free (s);
    }
  golden_clear (&g);
}

/* A sequence far longer than the pool decodes with a small window: the
 * blocks it gives back are reused. Without the window the pool runs out. */
static void
test_long_decode (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnKvCache) kv = NULL;
  g_autofree char *mpath = golden_path ("qwen2", "model.gguf");
  g_autoptr (BlnModel) m = bln_model_load (mpath, &error);
  BlnPool *pool = bln_pool_new (2, &error);
  int bs = 4, window = 6, n_blocks = 5, t, prefix;

  g_assert_no_error (error);
  for (prefix = 0; prefix <= 1; prefix++)
    {
      BlnKvSeq *s;
      BlnKvStats st;
      int32_t id = 1;
      float *lg = g_new (float, bln_model_hparams (m)->n_vocab);

      kv = bln_kv_cache_new (m, pool, n_blocks * bln_kv_cache_block_bytes_for (m, bs), bs,
                             &error);
      g_assert_no_error (error);
      bln_kv_cache_set_prefix_cache (kv, prefix, 0);
      g_assert_true (bln_kv_cache_set_sliding_window (kv, window, &error));
      s = bln_kv_seq_new (kv);
      for (t = 0; t < 200; t++)
        {
          BlnKvBatchItem it = { s, &id, 1, lg, FALSE };

          g_assert_true (bln_kv_eval (kv, &it, 1, &error));
          g_assert_no_error (error);
          id = argmax (lg, bln_model_hparams (m)->n_vocab);
          bln_kv_cache_get_stats (kv, &st);
          g_assert_cmpint (st.blocks_used, <=, window / bs + 2);
        }
      g_assert_cmpint (bln_kv_seq_length (s), ==, 200);
      /* changing the window under a live sequence is refused */
      g_assert_false (bln_kv_cache_set_sliding_window (kv, 0, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
      g_clear_error (&error);
      bln_kv_seq_free (s);
      bln_kv_cache_get_stats (kv, &st);
      g_assert_cmpint (st.blocks_used, ==, 0);

      /* without the window: full after n_blocks * bs tokens */
      g_assert_true (bln_kv_cache_set_sliding_window (kv, 0, &error));
      s = bln_kv_seq_new (kv);
      for (t = 0; t < 200; t++)
        {
          BlnKvBatchItem it = { s, &id, 1, NULL, FALSE };

          if (!bln_kv_eval (kv, &it, 1, &error))
            break;
        }
      g_assert_error (error, BLN_ERROR, BLN_ERROR_NOMEM);
      g_clear_error (&error);
      g_assert_cmpint (t, ==, n_blocks * bs);
      bln_kv_seq_free (s);
      g_clear_pointer (&kv, bln_kv_cache_free);
      g_free (lg);
    }
  bln_pool_free (pool);
}

/* ---------------------------------------------------------------------- */
/* scheduler                                                               */

typedef struct {
  GMutex lock;
  GCond cond;
  int done;
  GArray *got[4];
  BlnSchedResult res[4];
} SchedRun;

typedef struct {
  SchedRun *run;
  int i;
} SchedSlot;

static gboolean
sched_token (const BlnSchedToken *tok, gpointer data)
{
  SchedSlot *sl = data;

  g_array_append_val (sl->run->got[sl->i], tok->id);
  return TRUE;
}

static void
sched_end (const BlnSchedResult *res, gpointer data)
{
  SchedSlot *sl = data;

  g_mutex_lock (&sl->run->lock);
  sl->run->res[sl->i] = *res;
  sl->run->res[sl->i].error = NULL;
  sl->run->done++;
  g_cond_broadcast (&sl->run->cond);
  g_mutex_unlock (&sl->run->lock);
}

/* Four requests of @g's prompt (two at first, two once those ended, so the
 * latter find its prefix cached) with @window; returns how many of the 4 ×
 * n_gen tokens differ from the golden continuation. */
static int
run_sched (Golden *g, int window)
{
  g_autoptr (GError) error = NULL;
  BlnSchedOptions o;
  BlnSched *s;
  BlnSchedStats st;
  SchedRun run = { 0 };
  SchedSlot slots[4];
  int i, t, wrong = 0;

  bln_sched_options_init (&o);
  o.block_size = 4;
  o.step_tokens = 8;          /* chunked prefill: 3 chunks of the prompt */
  o.max_seqs = 4;
  o.kv_bytes = 64 * bln_kv_cache_block_bytes_for (g->m, 4);
  o.sliding_window = window;
  s = bln_sched_new (g->m, g->pool, &o, &error);
  g_assert_no_error (error);
  g_mutex_init (&run.lock);
  g_cond_init (&run.cond);
  for (i = 0; i < 4; i++)
    {
      run.got[i] = g_array_new (FALSE, FALSE, sizeof (int32_t));
      slots[i] = (SchedSlot) { &run, i };
    }
  for (i = 0; i < 4; i++)
    {
      g_assert_cmpuint (bln_sched_submit (s, g->ids, g->n, NULL, g->n_gen, 0, sched_token,
                                          sched_end, &slots[i], &error), >, 0);
      g_assert_no_error (error);
      if (i == 1 || i == 3)
        {
          g_mutex_lock (&run.lock);
          while (run.done < i + 1)
            g_cond_wait (&run.cond, &run.lock);
          g_mutex_unlock (&run.lock);
        }
    }
  for (i = 0; i < 4; i++)
    {
      g_assert_cmpint (run.res[i].finish, ==, BLN_SCHED_FINISH_LENGTH);
      g_assert_cmpint ((int) run.got[i]->len, ==, g->n_gen);
      for (t = 0; t < g->n_gen; t++)
        wrong += g_array_index (run.got[i], int32_t, t) != g->ids[g->n + t];
      g_array_unref (run.got[i]);
    }
  /* the later two found the prompt's full blocks in the prefix cache */
  g_assert_cmpint (run.res[2].cached_tokens, ==, (g->n - 1) / 4 * 4);
  g_assert_cmpint (run.res[3].cached_tokens, ==, (g->n - 1) / 4 * 4);
  /* the statistics are published after the step that ended the last one */
  do
    {
      g_usleep (1000);
      bln_sched_get_stats (s, &st);
    }
  while (st.finished < 4);
  g_assert_cmpint (st.blocks_used, ==, 0);
  g_assert_cmpint (st.sliding_window, ==, window);
  bln_sched_free (s);
  g_mutex_clear (&run.lock);
  g_cond_clear (&run.cond);
  return wrong;
}

static void
test_sched (gconstpointer data)
{
  Golden g;
  int wrong;

  golden_load (&g, data);
  wrong = run_sched (&g, g.window);
  g_assert_cmpint (wrong, ==, 0);
  wrong = run_sched (&g, 0);
  g_test_message ("%s: window off, %d of %d tokens differ", g.model, wrong, 4 * g.n_gen);
  g_assert_cmpint (wrong, >, 0);
  golden_clear (&g);
}

/* ---------------------------------------------------------------------- */
/* refusals                                                                */

static void
test_refusals (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *qpath = golden_path ("qwen2", "model.gguf");
  g_autofree char *dpath = golden_path ("deepseek2-v2lite", "model.gguf");
  g_autoptr (BlnModel) q = bln_model_load (qpath, &error);
  g_autoptr (BlnModel) d = bln_model_load (dpath, &error);
  BlnPool *pool = bln_pool_new (1, &error);
  BlnContextOptions o;
  BlnSchedOptions so;
  BlnContext *ctx;
  g_autoptr (BlnKvCache) kv = NULL;

  g_assert_no_error (error);
  bln_context_options_init (&o);

  o.sliding_window = -1;
  g_assert_null (bln_context_new_with_options (q, 64, pool, &o, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  o.sliding_window = 8;
  g_assert_null (bln_context_new_with_options (d, 64, pool, &o, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_clear_error (&error);

  /* a single GPU context: with a GPU, refused before any GPU work, naming
   * the setting, and never turned into a CPU fallback; without one (here),
   * the usual fallback, which keeps the window (the golden says so) */
  o.device = BLN_DEVICE_CUDA;
  g_assert_null (bln_context_new_with_options (q, 64, pool, &o, &error));
  if (g_error_matches (error, BLN_ERROR, BLN_ERROR_INVALID))
    {
      g_assert_nonnull (strstr (error->message, "sliding"));
      g_clear_error (&error);
      g_assert_null (bln_context_new_on_device (q, 64, pool, &o, NULL, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
      g_clear_error (&error);
    }
  else
    {
      Golden g;
      g_autofree char *note = NULL;
      g_autofree float *lg = NULL;

      g_assert_true (g_error_matches (error, BLN_ERROR, BLN_ERROR_BACKEND)
                     || g_error_matches (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED));
      g_clear_error (&error);
      golden_load (&g, "qwen2");
      o.sliding_window = g.window;
      ctx = bln_context_new_on_device (g.m, 64, g.pool, &o, &note, &error);
      g_assert_no_error (error);
      g_assert_nonnull (note);
      g_assert_cmpint (bln_context_device (ctx), ==, BLN_DEVICE_CPU);
      lg = g_new (float, (size_t) g.n * g.n_vocab);
      g_assert_true (bln_context_eval (ctx, g.ids, g.n, lg, TRUE, &error));
      g_assert_cmpfloat (rel_err (lg, g.logits, g.n, g.n_vocab), <=, BOUND);
      bln_context_free (ctx);
      golden_clear (&g);
      o.sliding_window = 8;
    }

  /* a GPU pool takes it (kernels/paged.cu; tests/test-cuda-swa.c) */
  g_assert_true (bln_sliding_window_check (q, 8, BLN_DEVICE_CUDA, TRUE, &error));
  g_assert_no_error (error);
  g_assert_false (bln_sliding_window_check (q, 8, BLN_DEVICE_CUDA, FALSE, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  bln_sched_options_init (&so);
  so.sliding_window = 8;
  g_assert_null (bln_sched_new (d, pool, &so, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_clear_error (&error);

  kv = bln_kv_cache_new (d, pool, 8 * bln_kv_cache_block_bytes_for (d, 16), 16, &error);
  g_assert_no_error (error);
  g_assert_false (bln_kv_cache_set_sliding_window (kv, 4, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_assert_cmpint (bln_kv_cache_sliding_window (kv), ==, 0);
  g_clear_pointer (&kv, bln_kv_cache_free);
  bln_pool_free (pool);
}

int
main (int argc, char **argv)
{
  static const char *models[] = { "qwen2", "llama" };
  guint i;

  g_test_init (&argc, &argv, NULL);
  for (i = 0; i < G_N_ELEMENTS (models); i++)
    {
      g_autofree char *p1 = g_strdup_printf ("/Baleen/Swa/context/%s", models[i]);
      g_autofree char *p2 = g_strdup_printf ("/Baleen/Swa/paged/%s", models[i]);
      g_autofree char *p3 = g_strdup_printf ("/Baleen/Swa/sched/%s", models[i]);
      g_autofree char *p4 = g_strdup_printf ("/Baleen/Swa/kv8/%s", models[i]);

      g_test_add_data_func (p1, models[i], test_context);
      g_test_add_data_func (p2, models[i], test_paged);
      g_test_add_data_func (p3, models[i], test_sched);
      g_test_add_data_func (p4, models[i], test_kv8);
    }
  g_test_add_func ("/Baleen/Swa/long-decode", test_long_decode);
  g_test_add_func ("/Baleen/Swa/refusals", test_refusals);
  return g_test_run ();
}
