/* test-kv-cache.c — the paged KV cache and batched evaluation.
 *
 * References: the transformers float32 logits recorded by
 * tools/gen_tiny_models.py (tests/golden/models/<model>/goldens.json), the
 * same ones test-model-golden.c checks bln_context_eval() against. Each
 * golden sequence is its prompt followed by transformers' own greedy
 * continuation; the logits of every position but the last are known (the
 * prompt's from one teacher-forced pass, the continuation's from each
 * generation step). Here several such sequences run in one batch, in chunks
 * that cross block boundaries, next to each other and sharing prefix blocks,
 * and every position must stay within test-model-golden's bound (1e-4 of the
 * largest |logit|).
 *
 * Block accounting is checked against counts that follow from the
 * definitions in kv-cache.h (blocks needed = ceil (tokens / block size)).
 */
#include <math.h>
#include <string.h>
#include <glib.h>

#include "bln-error.h"
#include "kv-cache.h"
#include "model.h"
#include "model-test-util.h"

#define BOUND 1e-4

typedef struct {
  const char *model;
  const char *file;   /* NULL: the HF directory */
} Case;

static const Case cases[] = {
  { "llama", "model.gguf" },
  { "llama", NULL },
  { "llama-tied", "model.gguf" },
  { "qwen2", "model.gguf" },
  { "qwen2", NULL },
  { "deepseek2-v2lite", "model.gguf" },
  { "deepseek2-v2lite", NULL },
  { "deepseek2-v3", "model.gguf" },
  { "deepseek2-v3", "model-legacy-kvb.gguf" },
};

/* One golden sequence: tokens, and reference logits with the scale each
 * position's error is measured against. */
typedef struct {
  int n;              /* tokens with reference logits */
  int32_t *ids;
  float *ref;         /* n × n_vocab */
  double *scale;      /* n */
} Golden;

/* Reads the golden sequences of @model: prompt + greedy continuation, the
 * last generated token dropped (its logits are not recorded). Prompt
 * positions are measured against the largest |logit| of the whole prompt,
 * generated ones against their own row's, as test-model-golden.c does. */
static GArray *
load_goldens (const char *model, int n_vocab)
{
  g_autoptr (GArray) seqs = golden_seqs_load (model, n_vocab);
  GArray *out = g_array_new (FALSE, TRUE, sizeof (Golden));

  for (guint si = 0; si < seqs->len; si++)
    {
      const GoldenSeq *s = &g_array_index (seqs, GoldenSeq, si);
      int n = s->n_prompt, n_gen = s->n_gen;
      double pscale = max_abs (s->pre, (gsize) n * n_vocab);
      Golden g;
      int i;

      g.n = n + n_gen - 1;
      g.ids = g_new (int32_t, g.n);
      g.ref = g_new (float, (size_t) g.n * n_vocab);
      g.scale = g_new (double, g.n);
      memcpy (g.ids, s->ids, (size_t) g.n * sizeof (int32_t));
      memcpy (g.ref, s->pre, (size_t) n * n_vocab * sizeof (float));
      for (i = 0; i < n; i++)
        g.scale[i] = pscale;
      /* gen step t predicts generated[t] after prompt + generated[0..t):
       * those are the logits of position n - 1 + t; t = 0 repeats the
       * prompt's last position, which keeps its prompt-wide scale */
      for (i = 1; i < n_gen; i++)
        {
          const float *row = s->gen + (size_t) i * n_vocab;
          memcpy (g.ref + (size_t) (n - 1 + i) * n_vocab, row, n_vocab * sizeof (float));
          g.scale[n - 1 + i] = max_abs (row, n_vocab);
        }
      g_array_append_val (out, g);
    }
  return out;
}

static void
goldens_free (GArray *a)
{
  for (guint i = 0; i < a->len; i++)
    {
      Golden *g = &g_array_index (a, Golden, i);
      g_free (g->ids);
      g_free (g->ref);
      g_free (g->scale);
    }
  g_array_unref (a);
}

/* Largest error of @n rows of @logits against the golden's positions
 * first..first+n-1. */
static double
rel_err (const Golden *g, int first, int n, const float *logits, int n_vocab)
{
  double worst = 0;

  for (int t = 0; t < n; t++)
    {
      const float *ref = g->ref + (size_t) (first + t) * n_vocab;
      const float *got = logits + (size_t) t * n_vocab;
      for (int i = 0; i < n_vocab; i++)
        worst = MAX (worst, fabs (got[i] - ref[i]) / g->scale[first + t]);
    }
  return worst;
}

static BlnModel *
load_case (const Case *c)
{
  return golden_model_load (c->model, c->file);
}

static void
check_no_leak (BlnKvCache *kv)
{
  BlnKvStats st;

  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_used, ==, 0);
  g_assert_cmpint (st.blocks_free + st.blocks_cached, ==, st.n_blocks);
  bln_kv_cache_drop_cached (kv);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_free, ==, st.n_blocks);
}

/* The golden sequences of different lengths, batched together in uneven
 * chunks (block size 4, so chunks straddle blocks), then sequences that
 * reuse the prefix blocks of the longest one, alone and next to a fresh
 * sequence. */
static void
test_batched (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (BlnModel) model = load_case (c);
  g_autoptr (GError) error = NULL;
  int n_vocab = bln_model_hparams (model)->n_vocab;
  GArray *gold = load_goldens (c->model, n_vocab);
  BlnPool *pool = bln_pool_new (2, &error);
  BlnKvCache *kv;
  BlnKvSeq *seqs[8] = { NULL };
  int done[8] = { 0 }, n_seq = (int) gold->len;
  /* chunk sizes per step, cycled: prefill chunks and single-token decodes */
  static const int chunks[] = { 5, 1, 7, 3, 1, 1, 9, 2, 4, 1 };
  g_autofree float *logits = NULL;
  double worst = 0;
  int step, i;

  g_assert_no_error (error);
  g_assert_cmpint (n_seq, >=, 3);
  g_assert_cmpint (n_seq, <=, 8);
  kv = bln_kv_cache_new (model, pool, 256 * bln_kv_cache_block_bytes_for (model, 4), 4, &error);
  g_assert_no_error (error);
  logits = g_new (float, (size_t) 64 * n_vocab * n_seq);

  for (i = 0; i < n_seq; i++)
    seqs[i] = bln_kv_seq_new (kv);
  for (step = 0;; step++)
    {
      BlnKvBatchItem items[8];
      int n_items = 0, off = 0;

      for (i = 0; i < n_seq; i++)
        {
          const Golden *g = &g_array_index (gold, Golden, i);
          int k = MIN (chunks[(step + 3 * i) % G_N_ELEMENTS (chunks)], g->n - done[i]);
          if (k <= 0)
            continue;
          items[n_items].seq = seqs[i];
          items[n_items].ids = g->ids + done[i];
          items[n_items].n = k;
          items[n_items].logits = logits + (size_t) off * n_vocab;
          items[n_items].all_logits = TRUE;
          off += k;
          n_items++;
        }
      if (n_items == 0)
        break;
      g_assert_true (bln_kv_eval (kv, items, n_items, &error));
      g_assert_no_error (error);
      off = 0;
      for (i = 0; i < n_items; i++)
        {
          int si = 0;
          while (seqs[si] != items[i].seq)
            si++;
          worst = MAX (worst, rel_err (&g_array_index (gold, Golden, si), done[si], items[i].n,
                                       items[i].logits, n_vocab));
          done[si] += items[i].n;
          off += items[i].n;
        }
    }
  g_test_message ("%s %s: batched max rel err %.3g over %d steps", c->model,
                  c->file ? c->file : "(hf)", worst, step);
  g_assert_cmpfloat (worst, <=, BOUND);

  /* prefix sharing: the longest sequence stays alive, copies of it reuse its
   * full blocks and compute only the rest */
  {
    int li = 0;
    const Golden *g;
    BlnKvSeq *a, *b, *fresh;
    BlnKvBatchItem items[3];
    int cached_a, cached_b, n_b;
    BlnKvStats st;

    for (i = 1; i < n_seq; i++)
      if (g_array_index (gold, Golden, i).n > g_array_index (gold, Golden, li).n)
        li = i;
    g = &g_array_index (gold, Golden, li);
    for (i = 0; i < n_seq; i++)
      if (i != li)
        g_clear_pointer (&seqs[i], bln_kv_seq_free);

    a = bln_kv_seq_new (kv);
    b = bln_kv_seq_new (kv);
    fresh = bln_kv_seq_new (kv);
    /* a: the whole sequence; b: its first 30 tokens */
    cached_a = bln_kv_seq_match_prefix (a, g->ids, g->n - 1);
    g_assert_cmpint (cached_a, ==, (g->n - 1) / 4 * 4);
    n_b = 30;
    cached_b = bln_kv_seq_match_prefix (b, g->ids, n_b - 1);
    g_assert_cmpint (cached_b, ==, (n_b - 1) / 4 * 4);
    /* the shared blocks are referenced, not copied */
    bln_kv_cache_get_stats (kv, &st);
    g_assert_cmpint (st.blocks_used, ==, bln_kv_seq_n_blocks (seqs[li]));
    g_assert_cmpint (st.hit_tokens, ==, cached_a + cached_b);

    items[0] = (BlnKvBatchItem) { a, g->ids + cached_a, g->n - cached_a, logits, TRUE };
    items[1] = (BlnKvBatchItem) { b, g->ids + cached_b, n_b - cached_b,
                                  logits + (size_t) (g->n - cached_a) * n_vocab, TRUE };
    /* a fresh sequence (another golden) in the same batch, from scratch */
    {
      const Golden *o = &g_array_index (gold, Golden, (li + 1) % n_seq);
      items[2] = (BlnKvBatchItem) { fresh, o->ids, o->n,
                                    logits + (size_t) (g->n - cached_a + n_b - cached_b)
                                      * n_vocab, TRUE };
      g_assert_true (bln_kv_eval (kv, items, 3, &error));
      g_assert_no_error (error);
      worst = rel_err (g, cached_a, g->n - cached_a, items[0].logits, n_vocab);
      worst = MAX (worst, rel_err (g, cached_b, n_b - cached_b, items[1].logits, n_vocab));
      worst = MAX (worst, rel_err (o, 0, o->n, items[2].logits, n_vocab));
    }
    g_test_message ("prefix-shared max rel err %.3g (cached %d and %d tokens)", worst,
                    cached_a, cached_b);
    g_assert_cmpfloat (worst, <=, BOUND);
    g_assert_cmpint (bln_kv_seq_length (a), ==, g->n);
    g_assert_cmpint (bln_kv_seq_length (b), ==, n_b);

    bln_kv_seq_free (a);
    bln_kv_seq_free (b);
    bln_kv_seq_free (fresh);
    g_clear_pointer (&seqs[li], bln_kv_seq_free);
  }
  check_no_leak (kv);
  bln_kv_cache_free (kv);
  bln_pool_free (pool);
  goldens_free (gold);
}

/* Block states, all-or-nothing reservation, LRU eviction order, statistics
 * and errors, on the llama model with blocks of 4 tokens. */
static void
test_accounting (void)
{
  static const Case c = { "llama", "model.gguf" };
  g_autoptr (BlnModel) model = load_case (&c);
  g_autoptr (GError) error = NULL;
  BlnPool *pool = bln_pool_new (1, &error);
  size_t bb = bln_kv_cache_block_bytes_for (model, 4);
  BlnKvCache *kv;
  BlnKvSeq *a, *b, *d;
  BlnKvStats st;
  int32_t ids[40], other[40];
  float *logits = g_new (float, bln_model_hparams (model)->n_vocab);
  BlnKvBatchItem it;
  int i;

  for (i = 0; i < 40; i++)
    {
      ids[i] = 1 + (i * 7) % 300;
      other[i] = 2 + (i * 11) % 300;
    }
  /* the budget rounds down to whole blocks; fewer than 2 is refused */
  g_assert_null (bln_kv_cache_new (model, pool, bb + bb / 2, 4, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_NOMEM);
  g_clear_error (&error);
  g_assert_null (bln_kv_cache_new (model, pool, 100 * bb, -1, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  kv = bln_kv_cache_new (model, pool, 10 * bb + bb / 2, 4, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_kv_cache_n_blocks (kv), ==, 10);

  /* a: 22 tokens = 5 full blocks + 2 tokens in a sixth */
  a = bln_kv_seq_new (kv);
  g_assert_cmpint (bln_kv_seq_match_prefix (a, ids, 21), ==, 0);
  it = (BlnKvBatchItem) { a, ids, 22, logits, FALSE };
  g_assert_true (bln_kv_eval (kv, &it, 1, &error));
  g_assert_no_error (error);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_used, ==, 6);
  g_assert_cmpint (st.blocks_free, ==, 4);
  g_assert_cmpint (st.blocks_cached, ==, 0);

  /* b needs 5 blocks for 20 other tokens: only 4 are free, nothing is taken */
  b = bln_kv_seq_new (kv);
  g_assert_cmpint (bln_kv_seq_blocks_needed (b, 20), ==, 5);
  g_assert_false (bln_kv_seq_reserve (b, 20));
  g_assert_cmpint (bln_kv_seq_n_blocks (b), ==, 0);
  it = (BlnKvBatchItem) { b, other, 20, logits, FALSE };
  g_assert_false (bln_kv_eval (kv, &it, 1, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_NOMEM);
  g_clear_error (&error);
  g_assert_cmpint (bln_kv_seq_length (b), ==, 0);

  /* releasing a: its 5 full blocks stay cached, the partial one is freed */
  bln_kv_seq_free (a);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_used, ==, 0);
  g_assert_cmpint (st.blocks_cached, ==, 5);
  g_assert_cmpint (st.blocks_free, ==, 5);

  /* b now fits (5 free blocks) without evicting anything */
  g_assert_true (bln_kv_eval (kv, &it, 1, &error));
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.evictions, ==, 0);
  g_assert_cmpint (st.blocks_cached, ==, 5);
  /* 8 more tokens for b: 2 blocks, taken from the cached ones, least recently
   * released first — a released its blocks newest first, so its last two
   * blocks (the chain's tail) go and its first three remain */
  it = (BlnKvBatchItem) { b, other + 20, 8, logits, FALSE };
  g_assert_true (bln_kv_eval (kv, &it, 1, &error));
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.evictions, ==, 2);
  g_assert_cmpint (st.blocks_cached, ==, 3);
  d = bln_kv_seq_new (kv);
  g_assert_cmpint (bln_kv_seq_match_prefix (d, ids, 21), ==, 12);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  g_assert_cmpint (st.blocks_used, ==, 10);
  g_assert_cmpint (st.hit_tokens, ==, 12);
  g_assert_cmpint (st.lookup_tokens, ==, 21 + 21);
  /* the pool is full: d cannot grow by a block */
  g_assert_false (bln_kv_seq_reserve (d, 1));

  /* errors leave lengths unchanged: a bad id, a sequence twice */
  {
    int32_t bad = 100000;
    BlnKvBatchItem two[2] = { { b, other, 1, NULL, FALSE }, { b, other, 1, NULL, FALSE } };

    it = (BlnKvBatchItem) { b, &bad, 1, logits, FALSE };
    g_assert_false (bln_kv_eval (kv, &it, 1, &error));
    g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
    g_clear_error (&error);
    g_assert_false (bln_kv_eval (kv, two, 2, &error));
    g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
    g_clear_error (&error);
    g_assert_cmpint (bln_kv_seq_length (b), ==, 28);
  }

  bln_kv_seq_free (b);
  bln_kv_seq_free (d);
  check_no_leak (kv);
  bln_kv_cache_free (kv);
  bln_pool_free (pool);
  g_free (logits);
}

/* Runs @n tokens of @ids as a new sequence, then releases it. */
static void
run_and_release (BlnKvCache *kv, const int32_t *ids, int n, float *logits, int *hit)
{
  g_autoptr (GError) error = NULL;
  BlnKvSeq *seq = bln_kv_seq_new (kv);
  int got = bln_kv_seq_match_prefix (seq, ids, n - 1);
  BlnKvBatchItem it = { seq, ids + got, n - got, logits, FALSE };

  g_assert_true (bln_kv_eval (kv, &it, 1, &error));
  g_assert_no_error (error);
  if (hit != NULL)
    *hit = got;
  bln_kv_seq_free (seq);
}

/* bln_kv_cache_drop_cached() and the prefix policy: counts follow from the
 * definitions in kv-cache.h (a 22-token sequence fills 5 blocks of 4). */
static void
test_prefix_policy (void)
{
  static const Case c = { "llama", "model.gguf" };
  g_autoptr (BlnModel) model = load_case (&c);
  g_autoptr (GError) error = NULL;
  BlnPool *pool = bln_pool_new (1, &error);
  size_t bb = bln_kv_cache_block_bytes_for (model, 4);
  float *logits = g_new (float, bln_model_hparams (model)->n_vocab);
  BlnKvCache *kv;
  BlnKvSeq *held;
  BlnKvStats st;
  int32_t ids[40], other[40];
  int hit, i;

  for (i = 0; i < 40; i++)
    {
      ids[i] = 1 + (i * 7) % 300;
      other[i] = 2 + (i * 11) % 300;
    }
  kv = bln_kv_cache_new (model, pool, 20 * bb, 4, &error);
  g_assert_no_error (error);

  /* clearing: the 5 cached blocks are freed, and the same prompt then finds
   * nothing */
  run_and_release (kv, ids, 22, logits, &hit);
  g_assert_cmpint (hit, ==, 0);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 5);
  g_assert_cmpint (bln_kv_cache_drop_cached (kv), ==, 5);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  g_assert_cmpint (st.blocks_free, ==, 20);
  run_and_release (kv, ids, 22, logits, &hit);
  g_assert_cmpint (hit, ==, 0);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpuint (st.hit_tokens, ==, 0);
  g_assert_cmpuint (st.lookup_tokens, ==, 21 + 21);
  /* now it is cached again: a repeat hits 5 blocks (20 of its 21 tokens) */
  run_and_release (kv, ids, 22, logits, &hit);
  g_assert_cmpint (hit, ==, 20);

  /* blocks held by a live sequence survive a clear and stay shared */
  held = bln_kv_seq_new (kv);
  g_assert_cmpint (bln_kv_seq_match_prefix (held, ids, 21), ==, 20);
  g_assert_cmpint (bln_kv_cache_drop_cached (kv), ==, 0);
  run_and_release (kv, ids, 22, logits, &hit);
  g_assert_cmpint (hit, ==, 20);
  bln_kv_seq_free (held);

  /* a bound of 3 cached blocks: releasing 5 keeps the first 3 (a chain is
   * released tail first, so its head is the most recently released) */
  bln_kv_cache_set_prefix_cache (kv, TRUE, 3);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 3);
  run_and_release (kv, ids, 22, logits, &hit);
  g_assert_cmpint (hit, ==, 12);
  run_and_release (kv, other, 30, logits, NULL);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 3);
  g_assert_cmpint (st.blocks_used, ==, 0);

  /* off: what was cached goes, nothing is registered or looked up */
  bln_kv_cache_set_prefix_cache (kv, FALSE, 0);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  {
    guint64 lookups = st.lookup_tokens;

    run_and_release (kv, ids, 22, logits, &hit);
    g_assert_cmpint (hit, ==, 0);
    run_and_release (kv, ids, 22, logits, &hit);
    g_assert_cmpint (hit, ==, 0);
    bln_kv_cache_get_stats (kv, &st);
    g_assert_cmpuint (st.lookup_tokens, ==, lookups);
    g_assert_cmpint (st.blocks_cached, ==, 0);
    g_assert_cmpint (st.blocks_free, ==, 20);
  }
  /* blocks registered while it was on and freed after it went off are not
   * kept either */
  bln_kv_cache_set_prefix_cache (kv, TRUE, 0);
  held = bln_kv_seq_new (kv);
  {
    BlnKvBatchItem it = { held, ids, 22, logits, FALSE };
    g_assert_true (bln_kv_eval (kv, &it, 1, &error));
  }
  bln_kv_cache_set_prefix_cache (kv, FALSE, 0);
  bln_kv_seq_free (held);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  g_assert_cmpint (st.blocks_free, ==, 20);

  check_no_leak (kv);
  bln_kv_cache_free (kv);
  bln_pool_free (pool);
  g_free (logits);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *p = g_strdup_printf ("/Baleen/KvCache/batched/%s/%s", cases[i].model,
                                            cases[i].file ? cases[i].file : "hf");
      g_test_add_data_func (p, &cases[i], test_batched);
    }
  g_test_add_func ("/Baleen/KvCache/accounting", test_accounting);
  g_test_add_func ("/Baleen/KvCache/prefix-policy", test_prefix_policy);
  return g_test_run ();
}
