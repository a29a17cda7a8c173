/* test-session-ttl.c — the session TTL of the prefix cache (kv-cache.h,
 * scheduler.h), on a fake clock that the test moves by hand: cached prefix
 * blocks survive while younger than the TTL, are freed once older, and a
 * request after that computes its whole prompt again. The greedy output
 * after expiry is compared with a plain context (bln_context_eval(), which
 * test-model-golden.c checks against transformers), so a freed block that a
 * stale prefix entry still pointed at would show as wrong tokens. */
#include <string.h>
#include <glib.h>

#include "bln-error.h"
#include "kv-cache.h"
#include "model.h"
#include "scheduler.h"
#include "tokenizer.h"

/* microseconds; the test thread moves it, the scheduler's thread reads it */
static gint64 fake_now = 1000000;
static GMutex fake_lock;

static gint64
fake_clock (gpointer data)
{
  gint64 t;

  g_mutex_lock (&fake_lock);
  t = *(gint64 *) data;
  g_mutex_unlock (&fake_lock);
  return t;
}

static void
fake_set (gint64 t)
{
  g_mutex_lock (&fake_lock);
  fake_now = t;
  g_mutex_unlock (&fake_lock);
}

static char *
model_path (const char *model, const char *file)
{
  return g_build_filename (g_getenv ("BALEEN_GOLDEN_DIR"), "models", model, file, NULL);
}

static int32_t *
make_prompt (guint32 seed, int n, int n_vocab)
{
  GRand *r = g_rand_new_with_seed (seed);
  int32_t *p = g_new (int32_t, n);

  /* ids well inside the vocabulary, away from the special tokens at its ends */
  for (int i = 0; i < n; i++)
    p[i] = g_rand_int_range (r, 10, n_vocab - 10);
  g_rand_free (r);
  return p;
}

/* ---- the pool alone ---------------------------------------------------- */

static void
test_kv_expire (void)
{
  g_autofree char *path = model_path ("llama", "model.gguf");
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = bln_model_load (path, &error);
  BlnPool *pool;
  BlnKvCache *kv;
  BlnKvSeq *a, *b;
  BlnKvStats st;
  BlnKvBatchItem it = { 0 };
  g_autofree int32_t *p = NULL;
  int bs = 4, n_vocab;

  g_assert_no_error (error);
  pool = bln_pool_new (1, &error);
  g_assert_no_error (error);
  n_vocab = bln_model_hparams (m)->n_vocab;
  kv = bln_kv_cache_new (m, pool, 64 * bln_kv_cache_block_bytes_for (m, bs), bs, &error);
  g_assert_no_error (error);
  bln_kv_cache_set_clock (kv, fake_clock, &fake_now);
  bln_kv_cache_set_ttl (kv, 10 * G_TIME_SPAN_SECOND);
  g_assert_cmpint (bln_kv_cache_next_expiry (kv), ==, -1);

  p = make_prompt (5, 13, n_vocab);
  a = bln_kv_seq_new (kv);
  it.seq = a;
  it.ids = p;
  it.n = 13;
  g_assert_true (bln_kv_eval (kv, &it, 1, &error));
  g_assert_no_error (error);
  bln_kv_seq_free (a);   /* 3 full blocks stay cached, the partial one is freed */
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 3);
  g_assert_cmpint (bln_kv_cache_next_expiry (kv), ==, fake_now + 10 * G_TIME_SPAN_SECOND);

  /* just before the TTL: nothing goes, and the prefix still matches */
  fake_set (fake_now + 10 * G_TIME_SPAN_SECOND - 1);
  g_assert_cmpint (bln_kv_cache_expire (kv), ==, 0);
  b = bln_kv_seq_new (kv);
  g_assert_cmpint (bln_kv_seq_match_prefix (b, p, 12), ==, 12);
  bln_kv_seq_free (b);   /* released again: a new period starts now */
  fake_set (fake_now + 5 * G_TIME_SPAN_SECOND);
  g_assert_cmpint (bln_kv_cache_expire (kv), ==, 0);
  fake_set (fake_now + 5 * G_TIME_SPAN_SECOND);
  g_assert_cmpint (bln_kv_cache_expire (kv), ==, 3);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  g_assert_cmpint (st.blocks_free, ==, st.n_blocks);
  g_assert_cmpuint (st.expired, ==, 3);
  b = bln_kv_seq_new (kv);
  g_assert_cmpint (bln_kv_seq_match_prefix (b, p, 12), ==, 0);
  bln_kv_seq_free (b);
  g_assert_cmpint (bln_kv_cache_next_expiry (kv), ==, -1);

  /* TTL 0: never */
  bln_kv_cache_set_ttl (kv, 0);
  a = bln_kv_seq_new (kv);
  it.seq = a;
  g_assert_true (bln_kv_eval (kv, &it, 1, &error));
  bln_kv_seq_free (a);
  fake_set (fake_now + 1000 * G_TIME_SPAN_SECOND);
  g_assert_cmpint (bln_kv_cache_expire (kv), ==, 0);
  bln_kv_cache_get_stats (kv, &st);
  g_assert_cmpint (st.blocks_cached, ==, 3);

  bln_kv_cache_free (kv);
  bln_pool_free (pool);
}

/* ---- through the scheduler -------------------------------------------- */

typedef struct {
  GMutex lock;
  GCond cond;
  gboolean done;
  BlnSchedResult res;
  GArray *got;
} Run;

static gboolean
on_token (const BlnSchedToken *tok, gpointer data)
{
  Run *r = data;

  g_array_append_val (r->got, tok->id);
  return TRUE;
}

static void
on_end (const BlnSchedResult *res, gpointer data)
{
  Run *r = data;

  g_mutex_lock (&r->lock);
  r->res = *res;
  r->res.error = NULL;
  r->done = TRUE;
  g_cond_broadcast (&r->cond);
  g_mutex_unlock (&r->lock);
}

static GArray *
run_one (BlnSched *s, const int32_t *p, int n, int max_tokens, BlnSchedResult *res)
{
  g_autoptr (GError) error = NULL;
  Run r = { 0 };
  gint64 end = g_get_monotonic_time () + 60 * G_TIME_SPAN_SECOND;

  g_mutex_init (&r.lock);
  g_cond_init (&r.cond);
  r.got = g_array_new (FALSE, FALSE, sizeof (int32_t));
  g_assert_cmpuint (bln_sched_submit (s, p, n, NULL, max_tokens, 0, on_token, on_end, &r,
                                      &error), >, 0);
  g_assert_no_error (error);
  g_mutex_lock (&r.lock);
  while (!r.done)
    if (!g_cond_wait_until (&r.cond, &r.lock, end))
      g_error ("request never ended");
  g_mutex_unlock (&r.lock);
  *res = r.res;
  g_mutex_clear (&r.lock);
  g_cond_clear (&r.cond);
  return r.got;
}

/* Waits until the published statistics show @finished requests ended. */
static void
wait_finished (BlnSched *s, guint64 finished, BlnSchedStats *st)
{
  gint64 end = g_get_monotonic_time () + 30 * G_TIME_SPAN_SECOND;

  for (;;)
    {
      bln_sched_get_stats (s, st);
      if (st->finished >= finished)
        return;
      if (g_get_monotonic_time () > end)
        g_error ("stats never showed %" G_GUINT64_FORMAT " finished", finished);
      g_usleep (1000);
    }
}

/* Greedy decoding of @p alone through a plain context: the reference. */
static GArray *
solo (BlnModel *m, BlnPool *pool, const int32_t *p, int n, int max_tokens)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnContext) ctx = bln_context_new (m, n + max_tokens + 1, pool, &error);
  int n_vocab = bln_model_hparams (m)->n_vocab;
  g_autofree float *logits = g_new (float, n_vocab);
  GArray *out = g_array_new (FALSE, FALSE, sizeof (int32_t));
  BlnTokenizer *tok = bln_model_tokenizer (m);
  int32_t next;

  g_assert_no_error (error);
  g_assert_true (bln_context_eval (ctx, p, n, logits, FALSE, &error));
  g_assert_no_error (error);
  for (int i = 0; i < max_tokens; i++)
    {
      next = 0;
      for (int v = 1; v < n_vocab; v++)
        if (logits[v] > logits[next])
          next = v;
      if (tok != NULL && bln_tokenizer_is_eog (tok, next))
        break;
      g_array_append_val (out, next);
      if (i + 1 < max_tokens)
        {
          g_assert_true (bln_context_eval (ctx, &next, 1, logits, FALSE, &error));
          g_assert_no_error (error);
        }
    }
  return out;
}

static void
assert_same (GArray *want, GArray *got, const char *what)
{
  g_assert_cmpuint (want->len, ==, got->len);
  for (guint i = 0; i < want->len; i++)
    if (g_array_index (want, int32_t, i) != g_array_index (got, int32_t, i))
      g_error ("%s: token %u differs", what, i);
}

static void
test_sched_ttl (void)
{
  g_autofree char *path = model_path ("llama", "model.gguf");
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = bln_model_load (path, &error);
  BlnPool *pool;
  BlnSchedOptions o;
  BlnSchedResult res;
  BlnSchedStats st;
  BlnSched *s;
  g_autofree int32_t *p = NULL;
  g_autoptr (GArray) want = NULL, r1 = NULL, r2 = NULL, r3 = NULL;
  int bs = 4, n_vocab;
  gint64 t0;

  g_assert_no_error (error);
  pool = bln_pool_new (2, &error);
  g_assert_no_error (error);
  n_vocab = bln_model_hparams (m)->n_vocab;
  p = make_prompt (41, 26, n_vocab);
  want = solo (m, pool, p, 26, 6);

  bln_sched_options_init (&o);
  o.block_size = bs;
  o.kv_bytes = 128 * bln_kv_cache_block_bytes_for (m, bs);
  o.session_ttl_s = 60;
  o.clock = fake_clock;
  o.clock_data = &fake_now;
  s = bln_sched_new (m, pool, &o, &error);
  g_assert_no_error (error);

  r1 = run_one (s, p, 26, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 0);
  assert_same (want, r1, "first run");
  wait_finished (s, 1, &st);
  g_assert_cmpint (st.blocks_cached, >=, 25 / bs);
  g_assert_cmpint (st.blocks_used, ==, 0);
  t0 = fake_now;

  /* 59 s later: still cached, the repeat takes its prefix from the cache */
  fake_set (t0 + 59 * G_TIME_SPAN_SECOND);
  g_assert_cmpint (bln_sched_expire_cached (s), ==, 0);
  r2 = run_one (s, p, 26, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 25 / bs * bs);
  assert_same (want, r2, "before the TTL");
  wait_finished (s, 2, &st);
  g_assert_cmpint (st.blocks_cached, >, 0);
  g_assert_cmpuint (st.expired_blocks, ==, 0);

  /* the repeat released the blocks again; 61 s after that they are gone */
  fake_set (fake_now + 61 * G_TIME_SPAN_SECOND);
  g_assert_cmpint (bln_sched_expire_cached (s), ==, st.blocks_cached);
  bln_sched_get_stats (s, &st);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  g_assert_cmpint (st.blocks_free, ==, st.blocks_total);
  g_assert_cmpuint (st.expired_blocks, >, 0);

  /* a new request after expiry computes its prompt from scratch */
  r3 = run_one (s, p, 26, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 0);
  assert_same (want, r3, "after the TTL");
  bln_sched_free (s);
  bln_pool_free (pool);
}

/* The idle thread wakes by itself when a block is due (no busy wait, no
 * ask): with the real clock and a 1 s TTL the blocks are gone within ~1 s. */
static void
test_sched_ttl_idle (void)
{
  g_autofree char *path = model_path ("llama", "model.gguf");
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = bln_model_load (path, &error);
  BlnPool *pool;
  BlnSchedOptions o;
  BlnSchedResult res;
  BlnSchedStats st;
  BlnSched *s;
  g_autofree int32_t *p = NULL;
  g_autoptr (GArray) r1 = NULL;
  gint64 end;
  guint64 steps;

  g_assert_no_error (error);
  pool = bln_pool_new (1, &error);
  g_assert_no_error (error);
  p = make_prompt (42, 20, bln_model_hparams (m)->n_vocab);
  bln_sched_options_init (&o);
  o.block_size = 4;
  o.kv_bytes = 64 * bln_kv_cache_block_bytes_for (m, 4);
  o.session_ttl_s = 1;
  s = bln_sched_new (m, pool, &o, &error);
  g_assert_no_error (error);
  r1 = run_one (s, p, 20, 2, &res);
  wait_finished (s, 1, &st);
  g_assert_cmpint (st.blocks_cached, >, 0);
  steps = st.steps;
  end = g_get_monotonic_time () + 5 * G_TIME_SPAN_SECOND;
  do
    {
      g_usleep (20000);
      bln_sched_get_stats (s, &st);
    }
  while (st.blocks_cached > 0 && g_get_monotonic_time () < end);
  g_assert_cmpint (st.blocks_cached, ==, 0);
  g_assert_cmpuint (st.expired_blocks, >, 0);
  g_assert_cmpuint (st.steps, ==, steps);   /* woke to expire, ran no step */
  bln_sched_free (s);
  bln_pool_free (pool);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/SessionTTL/kv-cache", test_kv_expire);
  g_test_add_func ("/Baleen/SessionTTL/scheduler", test_sched_ttl);
  g_test_add_func ("/Baleen/SessionTTL/idle-wakeup", test_sched_ttl_idle);
  return g_test_run ();
}
