/* test-sched.c — the continuous-batching scheduler.
 *
 * References, none written here:
 *   - transformers' greedy continuations of the tiny models' golden prompts
 *     (tests/golden/models/<model>/goldens.json, from tools/gen_tiny_models.py);
 *   - for other prompts, the same model run alone through bln_context_eval(),
 *     which test-model-golden.c checks against transformers (and
 *     test-smollm2.c against llama.cpp for SmolLM2).
 * Many requests run at once, with small step budgets (chunked prefill mixed
 * with decodes), a KV pool too small for all of them (preemption and
 * recompute), cancellations and a bounded queue; every request that is not
 * cancelled must produce exactly its reference tokens. Block counts must
 * return to zero in use, and the prefix cache must save the tokens that the
 * block size says it can.
 */
#include <math.h>
#include <string.h>
#include <glib.h>

#include "bln-error.h"
#include "kv-cache.h"
#include "model.h"
#include "scheduler.h"
#include "tokenizer.h"
#include "model-test-util.h"
#include "sched-test-util.h"

/* Truncates @ids at the first end-of-generation token (the scheduler ends a
 * request there without reporting the token). */
static void
cut_at_eog (BlnModel *m, GArray *ids)
{
  BlnTokenizer *tok = bln_model_tokenizer (m);

  for (guint i = 0; tok != NULL && i < ids->len; i++)
    if (bln_tokenizer_is_eog (tok, g_array_index (ids, int32_t, i)))
      {
        g_array_set_size (ids, i);
        return;
      }
}

typedef struct {
  int n;
  int32_t *ids;
  int max_tokens;
  GArray *want;
} Prompt;

/* Golden prompts with transformers' continuations, then @n_extra prompts
 * (lengths 1..41) with their solo continuations. */
static GArray *
load_prompts (BlnModel *m, BlnPool *pool, const char *model, int n_extra, int extra_tokens)
{
  GArray *out = g_array_new (FALSE, TRUE, sizeof (Prompt));
  int n_vocab = bln_model_hparams (m)->n_vocab;

  if (model != NULL)
    {
      g_autoptr (GArray) seqs = golden_seqs_load (model, n_vocab);

      for (guint si = 0; si < seqs->len; si++)
        {
          const GoldenSeq *g = &g_array_index (seqs, GoldenSeq, si);
          Prompt pr;

          pr.n = g->n_prompt;
          pr.ids = g_new (int32_t, pr.n);
          memcpy (pr.ids, g->ids, (size_t) pr.n * sizeof (int32_t));
          pr.max_tokens = g->n_gen;
          pr.want = g_array_new (FALSE, FALSE, sizeof (int32_t));
          g_array_append_vals (pr.want, g->ids + g->n_prompt, pr.max_tokens);
          cut_at_eog (m, pr.want);
          g_array_append_val (out, pr);
        }
    }
  for (int k = 0; k < n_extra; k++)
    {
      Prompt pr;

      pr.n = 1 + (k * 13) % 41;
      pr.ids = make_prompt (1000 + k, pr.n, 3, n_vocab);
      pr.max_tokens = extra_tokens + k % 5;
      pr.want = solo (m, pool, pr.ids, pr.n, pr.max_tokens);
      g_array_append_val (out, pr);
    }
  return out;
}

static void
prompts_free (GArray *a)
{
  for (guint i = 0; i < a->len; i++)
    {
      Prompt *p = &g_array_index (a, Prompt, i);
      g_free (p->ids);
      g_array_unref (p->want);
    }
  g_array_unref (a);
}

/* Submits every prompt at once, waits, and checks each output. */
static void
run_all (BlnSched *s, GArray *prompts, const char *what)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) cols = g_ptr_array_new_with_free_func ((GDestroyNotify) collector_free);
  int n_done = 0;
  guint i;

  for (i = 0; i < prompts->len; i++)
    {
      Prompt *p = &g_array_index (prompts, Prompt, i);
      Collector *c = collector_new (&n_done);

      g_ptr_array_add (cols, c);
      c->sched = s;
      c->handle = bln_sched_submit (s, p->ids, p->n, NULL, p->max_tokens, 0, on_token, on_end,
                                    c, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (c->handle, >, 0);
    }
  wait_done (&n_done, (int) prompts->len);
  for (i = 0; i < prompts->len; i++)
    {
      Prompt *p = &g_array_index (prompts, Prompt, i);
      Collector *c = g_ptr_array_index (cols, i);
      g_autofree char *name = g_strdup_printf ("%s prompt %u", what, i);

      assert_same (p->want, c->got, name);
      g_assert_cmpint (c->res.finish, ==, (int) p->want->len == p->max_tokens
                                            ? BLN_SCHED_FINISH_LENGTH : BLN_SCHED_FINISH_STOP);
      g_assert_cmpint (c->res.prompt_tokens, ==, p->n);
      g_assert_cmpint (c->res.completion_tokens, ==, (int) p->want->len);
    }
}

static void
assert_no_blocks_used (BlnSched *s, guint64 finished)
{
  BlnSchedStats st;

  wait_stats (s, finished, &st);
  g_assert_cmpint (st.running, ==, 0);
  g_assert_cmpint (st.waiting, ==, 0);
  g_assert_cmpint (st.blocks_used, ==, 0);
  g_assert_cmpint (st.blocks_free + st.blocks_cached, ==, st.blocks_total);
}

typedef struct {
  const char *model;
  const char *file;
} Case;

static const Case cases[] = {
  { "llama", "model.gguf" },
  { "qwen2", "model.gguf" },
  { "deepseek2-v2lite", "model.gguf" },
  { "deepseek2-v3", "model.gguf" },
};

/* Runs @c's prompts (its goldens, then @n_extra others of @extra_tokens to
 * @extra_tokens + 4 tokens) at once through a scheduler of 8 sequences,
 * @step_tokens a step, and a pool of @n_blocks blocks of 4 positions:
 * every output must be its reference, and no block may stay in use.
 * *@st gets the statistics at the end. */
static void
run_case (const Case *c, int n_extra, int extra_tokens, int step_tokens, int n_blocks,
          const char *what, BlnSchedStats *st)
{
  g_autoptr (BlnModel) m = golden_model_load (c->model, c->file);
  BlnPool *pool = test_pool_new (2);
  GArray *prompts = load_prompts (m, pool, c->model, n_extra, extra_tokens);
  BlnSchedOptions o;
  BlnSched *s;

  sched_options_init (&o, m, 4, n_blocks);
  o.max_seqs = 8;
  o.step_tokens = step_tokens;
  s = test_sched_new (m, pool, &o);
  run_all (s, prompts, what);
  assert_no_blocks_used (s, prompts->len);
  bln_sched_get_stats (s, st);
  bln_sched_free (s);
  prompts_free (prompts);
  bln_pool_free (pool);
}

/* 12 concurrent requests, 8 at a time, 16 tokens a step. */
static void
test_concurrent (gconstpointer data)
{
  const Case *c = data;
  BlnSchedStats st;

  run_case (c, 9, 12, 16, 256, c->model, &st);
  g_assert_cmpint (st.preemptions, ==, 0);
  g_assert_cmpint (st.max_seqs, ==, 8);
  g_test_message ("%s: %" G_GUINT64_FORMAT " steps, %" G_GUINT64_FORMAT " tokens computed",
                  c->model, st.steps, st.computed_tokens);
}

/* A pool of 20 blocks of 4 tokens for 8 requests of up to 60 tokens each:
 * sequences are preempted and recomputed, and still give their tokens. */
static void
test_preemption (gconstpointer data)
{
  const Case *c = data;
  BlnSchedStats st;

  run_case (c, 5, 18, 24, 20, "preemption", &st);
  g_test_message ("%s: %" G_GUINT64_FORMAT " preemptions, %" G_GUINT64_FORMAT " evictions",
                  c->model, st.preemptions, st.evictions);
  g_assert_cmpuint (st.preemptions, >, 0);
  g_assert_cmpint (st.blocks_total, ==, 20);
}

/* Cancellation from the token callback, right after submit, and a stop
 * asked by the token callback; the others are unaffected. */
static void
test_cancel (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool = test_pool_new (2);
  g_autoptr (GPtrArray) cols = g_ptr_array_new_with_free_func ((GDestroyNotify) collector_free);
  BlnSchedOptions o;
  BlnSched *s;
  GArray *prompts;
  int n_done = 0;
  guint i;

  prompts = load_prompts (m, pool, NULL, 6, 30);
  sched_options_init (&o, m, 4, 128);
  o.max_seqs = 4;
  o.step_tokens = 8;
  s = test_sched_new (m, pool, &o);
  for (i = 0; i < prompts->len; i++)
    {
      Prompt *p = &g_array_index (prompts, Prompt, i);
      Collector *c = collector_new (&n_done);

      g_ptr_array_add (cols, c);
      c->sched = s;
      if (i == 0)
        c->cancel_at = 5;
      if (i == 2)
        c->stop_at = 3;
      c->handle = bln_sched_submit (s, p->ids, p->n, NULL, p->max_tokens, 2, on_token, on_end,
                                    c, &error);
      g_assert_no_error (error);
      if (i == 4)
        g_assert_true (bln_sched_cancel (s, c->handle));
    }
  g_assert_false (bln_sched_cancel (s, 987654));
  wait_done (&n_done, (int) prompts->len);
  for (i = 0; i < prompts->len; i++)
    {
      Prompt *p = &g_array_index (prompts, Prompt, i);
      Collector *c = g_ptr_array_index (cols, i);
      g_autoptr (GArray) prefix = g_array_new (FALSE, FALSE, sizeof (int32_t));

      /* whatever came before the end is a prefix of the reference */
      g_array_append_vals (prefix, p->want->data, MIN (p->want->len, c->got->len));
      assert_same (prefix, c->got, "cancel");
      g_assert_false (bln_sched_cancel (s, c->handle));
      if (i == 0)
        {
          g_assert_cmpint (c->res.finish, ==, BLN_SCHED_FINISH_CANCELLED);
          g_assert_cmpint (c->got->len, ==, 5);
        }
      else if (i == 2)
        {
          g_assert_cmpint (c->res.finish, ==, BLN_SCHED_FINISH_STOP);
          g_assert_cmpint (c->got->len, ==, 3);
        }
      else if (i == 4)
        {
          g_assert_cmpint (c->res.finish, ==, BLN_SCHED_FINISH_CANCELLED);
          g_assert_cmpint (c->got->len, <, (int) p->want->len);
        }
      else
        assert_same (p->want, c->got, "not cancelled");
    }
  assert_no_blocks_used (s, prompts->len);
  bln_sched_free (s);
  prompts_free (prompts);
  bln_pool_free (pool);
}

/* With the one running request held inside its token callback, the queue
 * fills and the next submit fails with QUEUE_FULL at once. */
static void
test_queue_full (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool = test_pool_new (1);
  GMutex gate_lock;
  GCond gate_cond;
  gboolean open = FALSE, entered = FALSE;
  Collector *cols[4];
  int32_t prompt[5] = { 1, 5, 9, 13, 17 };
  BlnSchedOptions o;
  BlnSchedStats st;
  BlnSched *s;
  int n_done = 0, i;

  g_mutex_init (&gate_lock);
  g_cond_init (&gate_cond);
  sched_options_init (&o, m, 0, 64);
  o.max_seqs = 1;
  o.max_queue = 2;
  s = test_sched_new (m, pool, &o);
  for (i = 0; i < 4; i++)
    cols[i] = collector_new (&n_done);
  cols[0]->gate_lock = &gate_lock;
  cols[0]->gate_cond = &gate_cond;
  cols[0]->gate_open = &open;
  cols[0]->gate_entered = &entered;
  g_assert_cmpuint (bln_sched_submit (s, prompt, 5, NULL, 4, 0, on_token, on_end, cols[0],
                                      &error), >, 0);
  g_mutex_lock (&gate_lock);
  while (!entered)
    g_cond_wait (&gate_cond, &gate_lock);
  g_mutex_unlock (&gate_lock);
  /* the scheduler is inside request 0's callback: two fit in the queue */
  for (i = 1; i < 3; i++)
    {
      g_assert_cmpuint (bln_sched_submit (s, prompt, 5 - i, NULL, 3, 0, on_token, on_end,
                                          cols[i], &error), >, 0);
      g_assert_no_error (error);
    }
  g_assert_cmpuint (bln_sched_submit (s, prompt, 5, NULL, 3, 0, on_token, on_end, cols[3],
                                      &error), ==, 0);
  g_assert_error (error, BLN_SCHED_ERROR, BLN_SCHED_ERROR_QUEUE_FULL);
  g_clear_error (&error);
  bln_sched_get_stats (s, &st);
  g_assert_cmpint (st.waiting, ==, 2);
  /* bad requests are refused before queueing */
  g_assert_cmpuint (bln_sched_submit (s, prompt, 0, NULL, 3, 0, NULL, on_end, NULL, &error), ==, 0);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  prompt[4] = bln_model_hparams (m)->n_vocab;
  g_assert_cmpuint (bln_sched_submit (s, prompt, 5, NULL, 3, 0, NULL, on_end, NULL, &error), ==, 0);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  g_mutex_lock (&gate_lock);
  open = TRUE;
  g_cond_broadcast (&gate_cond);
  g_mutex_unlock (&gate_lock);
  wait_done (&n_done, 3);
  for (i = 0; i < 3; i++)
    g_assert_cmpint (cols[i]->res.completion_tokens, >, 0);
  g_assert_false (cols[3]->done);
  assert_no_blocks_used (s, 3);
  bln_sched_free (s);
  for (i = 0; i < 4; i++)
    collector_free (cols[i]);
  g_mutex_clear (&gate_lock);
  g_cond_clear (&gate_cond);
  bln_pool_free (pool);
}

/* Prefix reuse in cached tokens, and a multi-turn conversation whose second
 * turn computes only its new part (to within a block). */
static void
test_prefix_reuse (void)
{
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool = test_pool_new (2);
  int n_vocab = bln_model_hparams (m)->n_vocab, bs = 4;
  g_autofree int32_t *p1 = NULL, *u2 = NULL;
  g_autoptr (GArray) r1 = NULL, r1b = NULL, r2 = NULL, want2 = NULL;
  g_autoptr (GArray) turn2 = g_array_new (FALSE, FALSE, sizeof (int32_t));
  BlnSchedResult res;
  BlnSchedStats st0, st1;
  BlnSchedOptions o;
  BlnSched *s;
  int cached, computed;

  sched_options_init (&o, m, bs, 256);
  s = test_sched_new (m, pool, &o);
  p1 = make_prompt (77, 30, 3, n_vocab);
  u2 = make_prompt (78, 7, 3, n_vocab);

  /* turn 1: nothing cached */
  r1 = run_one (s, p1, 30, 10, &res);
  g_assert_cmpint (res.cached_tokens, ==, 0);
  /* the same prompt again: every full block before the last token is reused */
  r1b = run_one (s, p1, 30, 10, &res);
  g_assert_cmpint (res.cached_tokens, ==, 29 / bs * bs);
  assert_same (r1, r1b, "repeat");

  /* turn 2 = turn 1 + its answer + a new message */
  g_array_append_vals (turn2, p1, 30);
  g_array_append_vals (turn2, r1->data, r1->len);
  g_array_append_vals (turn2, u2, 7);
  want2 = solo (m, pool, (int32_t *) turn2->data, (int) turn2->len, 8);
  wait_stats (s, 2, &st0);
  r2 = run_one (s, (int32_t *) turn2->data, (int) turn2->len, 8, &res);
  wait_stats (s, 3, &st1);
  assert_same (want2, r2, "turn 2");
  /* the answer's last token was sampled but never run through the model,
   * so the history holds 30 + len(r1) - 1 computed positions */
  cached = res.cached_tokens;
  g_assert_cmpint (cached, ==, (30 + (int) r1->len - 1) / bs * bs);
  g_assert_cmpint ((int) turn2->len - cached, <=, 7 + bs);
  /* tokens the model ran for turn 2: the uncached prompt, then every
   * generated token but the last one (LENGTH) or all of them (STOP) */
  computed = (int) (st1.computed_tokens - st0.computed_tokens);
  g_assert_cmpint (computed, ==, (int) turn2->len - cached + (int) r2->len
                                   - (res.finish == BLN_SCHED_FINISH_LENGTH ? 1 : 0));
  g_test_message ("turn 2: %u prompt tokens, %d cached, %d computed", turn2->len, cached,
                  computed);
  g_assert_cmpuint (st1.cached_tokens, ==, (guint64) (29 / bs * bs + cached));
  g_assert_cmpuint (st1.hit_tokens, ==, st1.cached_tokens);
  g_assert_cmpfloat (st1.prefix_hit_rate, >, 0.0);
  g_assert_cmpfloat (st1.prefix_hit_rate, ==, (double) st1.hit_tokens / st1.lookup_tokens);
  assert_no_blocks_used (s, 3);
  bln_sched_free (s);
  bln_pool_free (pool);
}

/* bln_sched_drop_cached() between steps: the cached blocks go, a repeated
 * prompt then finds no prefix and still produces its solo reference; with
 * the prefix cache off (no_prefix_cache) nothing is cached or looked up. */
static void
test_drop_cached (void)
{
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool = test_pool_new (2);
  int n_vocab = bln_model_hparams (m)->n_vocab, bs = 4;
  g_autofree int32_t *p1 = NULL;
  g_autoptr (GArray) want = NULL, r1 = NULL, r2 = NULL, r3 = NULL, r4 = NULL;
  BlnSchedResult res;
  BlnSchedStats st;
  BlnSchedOptions o;
  BlnSched *s;
  int freed;

  sched_options_init (&o, m, bs, 64);
  s = test_sched_new (m, pool, &o);
  p1 = make_prompt (91, 30, 3, n_vocab);
  want = solo (m, pool, p1, 30, 6);

  /* nothing to drop yet */
  g_assert_cmpint (bln_sched_drop_cached (s), ==, 0);
  r1 = run_one (s, p1, 30, 6, &res);
  assert_same (want, r1, "first");
  wait_stats (s, 1, &st);
  g_assert_cmpint (st.blocks_cached, >, 0);
  freed = bln_sched_drop_cached (s);
  g_assert_cmpint (freed, ==, st.blocks_cached);
  /* the stats show the drop as soon as the call returns */
  bln_sched_get_stats (s, &st);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  g_assert_cmpint (st.blocks_free, ==, st.blocks_total);
  r2 = run_one (s, p1, 30, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 0);
  assert_same (want, r2, "after the drop");
  wait_stats (s, 2, &st);
  g_assert_cmpuint (st.hit_tokens, ==, 0);
  /* and the cache works again afterwards */
  r3 = run_one (s, p1, 30, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 29 / bs * bs);
  assert_same (want, r3, "cached again");
  /* two drops so far (the first found nothing); the third without waiting */
  wait_stats (s, 3, &st);
  g_assert_cmpuint (st.cache_clears, ==, 2);
  g_assert_cmpuint (st.cleared_blocks, ==, (guint64) freed);
  {
    int cached = st.blocks_cached;
    gint64 end = g_get_monotonic_time () + 30 * G_TIME_SPAN_SECOND;

    g_assert_cmpint (cached, >, 0);
    bln_sched_request_drop_cached (s);
    do
      {
        g_assert_cmpint (g_get_monotonic_time (), <, end);
        g_usleep (1000);
        bln_sched_get_stats (s, &st);
      }
    while (st.cache_clears < 3);
    g_assert_cmpuint (st.cache_clears, ==, 3);
    g_assert_cmpuint (st.cleared_blocks, ==, (guint64) (freed + cached));
    g_assert_cmpint (st.blocks_cached, ==, 0);
  }
  bln_sched_free (s);

  /* the prefix cache off */
  o.no_prefix_cache = TRUE;
  s = test_sched_new (m, pool, &o);
  g_clear_pointer (&r1, g_array_unref);
  r1 = run_one (s, p1, 30, 6, &res);
  r4 = run_one (s, p1, 30, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 0);
  assert_same (want, r4, "prefix cache off");
  wait_stats (s, 2, &st);
  g_assert_cmpuint (st.lookup_tokens, ==, 0);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  g_assert_cmpfloat (st.prefix_hit_rate, ==, 0.0);
  g_assert_cmpint (bln_sched_drop_cached (s), ==, 0);
  bln_sched_free (s);

  /* a bound of 2 blocks of cached prefix */
  o.no_prefix_cache = FALSE;
  o.prefix_bytes = 2 * bln_kv_cache_block_bytes_for (m, bs);
  s = test_sched_new (m, pool, &o);
  g_clear_pointer (&r1, g_array_unref);
  r1 = run_one (s, p1, 30, 6, &res);
  wait_stats (s, 1, &st);
  g_assert_cmpint (st.blocks_cached, ==, 2);
  g_clear_pointer (&r1, g_array_unref);
  r1 = run_one (s, p1, 30, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 2 * bs);
  assert_same (want, r1, "bounded prefix cache");
  bln_sched_free (s);
  bln_pool_free (pool);
}

#define N_STRESS 40

/* 40 requests with seeded sampling into a pool of 12 blocks, a few at a
 * time, some cancelled: each request that is not cancelled draws exactly the
 * tokens it draws alone (so preemption keeps the sampler's state), every
 * request ends once, and no block stays in use. */
static void
test_stress (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool = test_pool_new (2);
  g_autoptr (GPtrArray) cols = g_ptr_array_new_with_free_func ((GDestroyNotify) collector_free);
  g_autoptr (GRand) rnd = g_rand_new_with_seed (4242);
  int n_vocab = bln_model_hparams (m)->n_vocab, n_done = 0, n_req = N_STRESS, i;
  GPtrArray *wants = g_ptr_array_new_with_free_func ((GDestroyNotify) g_array_unref);
  g_autoptr (GPtrArray) prompts = g_ptr_array_new_with_free_func (g_free);
  gboolean cancelled_now[N_STRESS] = { FALSE };
  int n_prompt[N_STRESS], n_max[N_STRESS];
  BlnSamplerParams params[N_STRESS];
  BlnSchedOptions o;
  BlnSchedStats st;
  BlnSched *s;

  sched_options_init (&o, m, 4, 12);
  o.max_seqs = 6;
  o.step_tokens = 7;
  /* the references first: the pool runs one thing at a time */
  for (i = 0; i < n_req; i++)
    {
      int n = g_rand_int_range (rnd, 1, 25), max_tokens = g_rand_int_range (rnd, 1, 21);
      int32_t *prompt = make_prompt (500 + i, n, 3, n_vocab);

      bln_sampler_params_init (&params[i]);
      params[i].temperature = 0.9f;
      params[i].top_p = 0.95f;
      params[i].seed = 1000 + i;
      /* share prefixes now and then: copy the start of an earlier prompt */
      if (i % 3 == 2)
        {
          g_autofree int32_t *earlier = make_prompt (500 + i - 1, 24, 3, n_vocab);
          memcpy (prompt, earlier, MIN (n, 12) * sizeof (int32_t));
        }
      g_ptr_array_add (prompts, prompt);
      n_prompt[i] = n;
      n_max[i] = max_tokens;
      g_ptr_array_add (wants, solo_with (m, pool, prompt, n, max_tokens, &params[i], NULL));
    }
  s = test_sched_new (m, pool, &o);
  for (i = 0; i < n_req; i++)
    {
      Collector *c = collector_new (&n_done);

      g_ptr_array_add (cols, c);
      c->sched = s;
      if (i % 7 == 3)
        c->cancel_at = g_rand_int_range (rnd, 1, 4);
      c->handle = bln_sched_submit (s, g_ptr_array_index (prompts, i), n_prompt[i], &params[i],
                                    n_max[i], 0, on_token, on_end, c, &error);
      g_assert_no_error (error);
      if (i % 11 == 5)
        cancelled_now[i] = bln_sched_cancel (s, c->handle);
    }
  wait_done (&n_done, n_req);
  for (i = 0; i < n_req; i++)
    {
      Collector *c = g_ptr_array_index (cols, i);
      GArray *want = g_ptr_array_index (wants, i);
      g_autoptr (GArray) prefix = g_array_new (FALSE, FALSE, sizeof (int32_t));

      g_array_append_vals (prefix, want->data, MIN (want->len, c->got->len));
      assert_same (prefix, c->got, "stress (prefix)");
      if (c->res.finish != BLN_SCHED_FINISH_CANCELLED)
        assert_same (want, c->got, "stress");
      else
        g_assert_true (c->cancel_at > 0 || cancelled_now[i]);
    }
  assert_no_blocks_used (s, n_req);
  bln_sched_get_stats (s, &st);
  g_test_message ("stress: %" G_GUINT64_FORMAT " steps, %" G_GUINT64_FORMAT " preemptions, "
                  "%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " looked-up tokens cached",
                  st.steps, st.preemptions, st.hit_tokens, st.lookup_tokens);
  g_assert_cmpuint (st.preemptions, >, 0);
  g_assert_cmpuint (st.hit_tokens, >, 0);
  bln_sched_free (s);
  g_ptr_array_unref (wants);
  bln_pool_free (pool);
}

/* A real model (SmolLM2-135M-Instruct, Q4_1): eight prompts at once give
 * what each gives alone. */
static void
test_smollm2 (void)
{
  const char *path = g_getenv ("BALEEN_DEFAULT_MODEL");
  static const char *texts[] = {
    "The capital of France is", "Once upon a time", "def fibonacci(n):",
    "The three primary colours are", "Water boils at", "In 1492,",
    "A haiku about the sea:", "The quick brown fox",
  };
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = NULL;
  BlnPool *pool;
  GArray *prompts;
  BlnSchedOptions o;
  BlnSched *s;

  if (path == NULL || !g_file_test (path, G_FILE_TEST_EXISTS))
    {
      g_test_skip ("BALEEN_DEFAULT_MODEL is not set (tools/test.sh sets it)");
      return;
    }
  m = test_model_load (path);
  pool = test_pool_new (2);
  prompts = g_array_new (FALSE, TRUE, sizeof (Prompt));
  for (guint i = 0; i < G_N_ELEMENTS (texts); i++)
    {
      Prompt p;
      g_autoptr (GArray) ids = bln_tokenizer_encode (bln_model_tokenizer (m), texts[i], -1, TRUE,
                                                   FALSE, &error);

      g_assert_no_error (error);
      p.n = (int) ids->len;
      p.ids = g_memdup2 (ids->data, ids->len * sizeof (int32_t));
      p.max_tokens = 12;
      p.want = solo (m, pool, p.ids, p.n, p.max_tokens);
      g_array_append_val (prompts, p);
    }
  sched_options_init (&o, m, 0, 64);
  o.step_tokens = 32;
  s = test_sched_new (m, pool, &o);
  run_all (s, prompts, "smollm2");
  assert_no_blocks_used (s, prompts->len);
  bln_sched_free (s);
  prompts_free (prompts);
  bln_pool_free (pool);
}

/* A logits filter: only ids that are multiples of 3 (plus its own data). */
typedef struct {
  int calls;
  int last_left;
  int refuse_at;             /* return FALSE at this call (0: never) */
  gboolean left_ok;          /* every @left was one less than the one before */
} FilterData;

typedef struct {
  Collector *c;
  FilterData f;
} Filtered;

/* Keeps only the ids that are multiples of 3. */
static void
mult3_mask (float *logits, int n_vocab)
{
  for (int i = 0; i < n_vocab; i++)
    if (i % 3 != 0)
      logits[i] = -INFINITY;
}

static gboolean
mult3_filter (float *logits, int n_vocab, int left, gpointer data)
{
  Filtered *fd = data;

  if (fd->f.calls > 0 && left != fd->f.last_left - 1)
    fd->f.left_ok = FALSE;
  fd->f.last_left = left;
  if (++fd->f.calls == fd->f.refuse_at)
    return FALSE;
  mult3_mask (logits, n_vocab);
  return TRUE;
}

static gboolean
filtered_token (const BlnSchedToken *tok, gpointer data)
{
  return on_token (tok, ((Filtered *) data)->c);
}

static void
filtered_end (const BlnSchedResult *res, gpointer data)
{
  on_end (res, ((Filtered *) data)->c);
}

/* Filtered requests (constrained decoding) run in the batch with plain
 * ones: each gets exactly what it gets alone, the filter sees the budget
 * shrink by one per token, and a filter that refuses ends its request. */
static void
test_filter (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool = test_pool_new (2);
  int n_vocab = bln_model_hparams (m)->n_vocab, n_done = 0, i;
  const int n_req = 8, max_tokens = 12;
  Filtered fds[8];
  int32_t *prompts[8];
  BlnSchedOptions o;
  BlnSched *s;

  bln_sched_options_init (&o);
  o.step_tokens = 16;
  s = test_sched_new (m, pool, &o);
  for (i = 0; i < n_req; i++)
    {
      gboolean filtered = i % 2 == 0;

      prompts[i] = make_prompt (200 + i, 5 + 3 * i, 3, n_vocab);
      memset (&fds[i], 0, sizeof fds[i]);
      fds[i].c = collector_new (&n_done);
      fds[i].f.left_ok = TRUE;
      fds[i].f.refuse_at = i == 6 ? 3 : 0;
      g_assert_cmpuint (bln_sched_submit_filtered (s, prompts[i], 5 + 3 * i, NULL, max_tokens, 0,
                                                   filtered ? mult3_filter : NULL,
                                                   filtered_token, filtered_end, &fds[i],
                                                   &error), >, 0);
      g_assert_no_error (error);
    }
  wait_done (&n_done, n_req);
  for (i = 0; i < n_req; i++)
    {
      gboolean filtered = i % 2 == 0;
      g_autoptr (GArray) want = solo_with (m, pool, prompts[i], 5 + 3 * i, max_tokens, NULL,
                                           filtered ? mult3_mask : NULL);
      g_autofree char *what = g_strdup_printf ("request %d (%s)", i,
                                               filtered ? "filtered" : "plain");

      if (i == 6)
        {
          /* refused at its third token: two came, and it ended as LENGTH */
          g_array_set_size (want, MIN (want->len, 2));
          g_assert_cmpint (fds[i].c->res.finish, ==, BLN_SCHED_FINISH_LENGTH);
        }
      assert_same (want, fds[i].c->got, what);
      for (guint k = 0; filtered && k < fds[i].c->got->len; k++)
        g_assert_cmpint (g_array_index (fds[i].c->got, int32_t, k) % 3, ==, 0);
      if (filtered)
        {
          g_assert_true (fds[i].f.left_ok);
          g_assert_cmpint (fds[i].f.calls, >=, 1);
        }
      else
        g_assert_cmpint (fds[i].f.calls, ==, 0);
      collector_free (fds[i].c);
      g_free (prompts[i]);
    }
  assert_no_blocks_used (s, n_req);
  bln_sched_free (s);
  bln_pool_free (pool);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *p = g_strdup_printf ("/Baleen/Sched/concurrent/%s", cases[i].model);
      g_autofree char *q = g_strdup_printf ("/Baleen/Sched/preemption/%s", cases[i].model);
      g_test_add_data_func (p, &cases[i], test_concurrent);
      g_test_add_data_func (q, &cases[i], test_preemption);
    }
  g_test_add_func ("/Baleen/Sched/cancel", test_cancel);
  g_test_add_func ("/Baleen/Sched/queue-full", test_queue_full);
  g_test_add_func ("/Baleen/Sched/prefix-reuse", test_prefix_reuse);
  g_test_add_func ("/Baleen/Sched/drop-cached", test_drop_cached);
  g_test_add_func ("/Baleen/Sched/stress", test_stress);
  g_test_add_func ("/Baleen/Sched/smollm2", test_smollm2);
  g_test_add_func ("/Baleen/Sched/filter", test_filter);
  return g_test_run ();
}
