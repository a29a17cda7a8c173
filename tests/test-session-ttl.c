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
#include "model-test-util.h"
#include "sched-test-util.h"

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

/* ---- the pool alone ---------------------------------------------------- */

static void
test_kv_expire (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool;
  BlnKvCache *kv;
  BlnKvSeq *a, *b;
  BlnKvStats st;
  BlnKvBatchItem it = { 0 };
  g_autofree int32_t *p = NULL;
  int bs = 4, n_vocab;

  pool = test_pool_new (1);
  n_vocab = bln_model_hparams (m)->n_vocab;
  kv = bln_kv_cache_new (m, pool, 64 * bln_kv_cache_block_bytes_for (m, bs), bs, &error);
  g_assert_no_error (error);
  bln_kv_cache_set_clock (kv, fake_clock, &fake_now);
  bln_kv_cache_set_ttl (kv, 10 * G_TIME_SPAN_SECOND);
  g_assert_cmpint (bln_kv_cache_next_expiry (kv), ==, -1);

  /* prompts of ids well inside the vocabulary, away from the special tokens
   * at its ends */
  p = make_prompt (5, 13, 10, n_vocab - 10);
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

static void
test_sched_ttl (void)
{
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool;
  BlnSchedOptions o;
  BlnSchedResult res;
  BlnSchedStats st;
  BlnSched *s;
  g_autofree int32_t *p = NULL;
  g_autoptr (GArray) want = NULL, r1 = NULL, r2 = NULL, r3 = NULL;
  int bs = 4, n_vocab;
  gint64 t0;

  pool = test_pool_new (2);
  n_vocab = bln_model_hparams (m)->n_vocab;
  p = make_prompt (41, 26, 10, n_vocab - 10);
  want = solo (m, pool, p, 26, 6);

  sched_options_init (&o, m, bs, 128);
  o.session_ttl_s = 60;
  o.clock = fake_clock;
  o.clock_data = &fake_now;
  s = test_sched_new (m, pool, &o);

  r1 = run_one (s, p, 26, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 0);
  assert_same (want, r1, "first run");
  wait_stats (s, 1, &st);
  g_assert_cmpint (st.blocks_cached, >=, 25 / bs);
  g_assert_cmpint (st.blocks_used, ==, 0);
  t0 = fake_now;

  /* 59 s later: still cached, the repeat takes its prefix from the cache */
  fake_set (t0 + 59 * G_TIME_SPAN_SECOND);
  g_assert_cmpint (bln_sched_expire_cached (s), ==, 0);
  r2 = run_one (s, p, 26, 6, &res);
  g_assert_cmpint (res.cached_tokens, ==, 25 / bs * bs);
  assert_same (want, r2, "before the TTL");
  wait_stats (s, 2, &st);
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
  g_autoptr (BlnModel) m = golden_model_load ("llama", "model.gguf");
  BlnPool *pool;
  BlnSchedOptions o;
  BlnSchedResult res;
  BlnSchedStats st;
  BlnSched *s;
  g_autofree int32_t *p = NULL;
  g_autoptr (GArray) r1 = NULL;
  gint64 end;
  guint64 steps;

  pool = test_pool_new (1);
  p = make_prompt (42, 20, 10, bln_model_hparams (m)->n_vocab - 10);
  sched_options_init (&o, m, 4, 64);
  o.session_ttl_s = 1;
  s = test_sched_new (m, pool, &o);
  r1 = run_one (s, p, 20, 2, &res);
  wait_stats (s, 1, &st);
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
