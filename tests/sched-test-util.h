/* sched-test-util.h — shared by the scheduler tests (test-sched.c,
 * test-session-ttl.c): making a scheduler that must succeed, collecting a
 * request's tokens and end through the callbacks, waiting for requests and
 * for the published statistics, deterministic prompts, and the reference
 * outputs through a plain context. Header-only. */
#pragma once

#include <string.h>
#include <glib.h>

#include "kv-cache.h"
#include "model.h"
#include "scheduler.h"
#include "tokenizer.h"
#include "model-test-util.h"

/* ---- set-up ------------------------------------------------------------ */

/* Initialises @o as bln_sched_options_init() does, then asks for blocks of
 * @block_size positions (0: the default) and a KV pool of @n_blocks such
 * blocks of @m. */
static inline void
sched_options_init (BlnSchedOptions *o, BlnModel *m, int block_size, int n_blocks)
{
  bln_sched_options_init (o);
  o->block_size = block_size;
  o->kv_bytes = (size_t) n_blocks * bln_kv_cache_block_bytes_for (m, block_size);
}

/* A scheduler for @m on @pool (caller frees with bln_sched_free()); fails
 * the test when it cannot be made. */
static inline BlnSched *
test_sched_new (BlnModel *m, BlnPool *pool, const BlnSchedOptions *o)
{
  g_autoptr (GError) error = NULL;
  BlnSched *s = bln_sched_new (m, pool, o, &error);

  g_assert_no_error (error);
  return s;
}

/* A deterministic prompt of @n ids in [@lo, @hi) (caller frees). */
static inline int32_t *
make_prompt (guint32 seed, int n, int lo, int hi)
{
  g_autoptr (GRand) r = g_rand_new_with_seed (seed);
  int32_t *p = g_new (int32_t, n);

  for (int i = 0; i < n; i++)
    p[i] = g_rand_int_range (r, lo, hi);
  return p;
}

/* ---- one request's callbacks ------------------------------------------- */

typedef struct {
  GMutex *lock;
  GCond *cond;
  int *n_done;
  GArray *got;               /* int32_t generated ids */
  gboolean done;
  BlnSchedResult res;
  /* behaviour */
  BlnSched *sched;
  guint64 handle;
  int cancel_at;             /* cancel itself when this many tokens came (0: never) */
  int stop_at;               /* return FALSE at this many tokens (0: never) */
  GMutex *gate_lock;         /* when set, the first token waits for *gate_open */
  GCond *gate_cond;
  gboolean *gate_open;
  gboolean *gate_entered;
} Collector;

/* what every Collector's end is signalled under */
static GMutex collector_lock;
static GCond collector_cond;

/* The token callback of a request whose data is a Collector. */
static inline gboolean
on_token (const BlnSchedToken *tok, gpointer data)
{
  Collector *c = data;

  g_assert_cmpint (tok->index, ==, (int) c->got->len);
  g_assert_false (c->done);
  g_array_append_val (c->got, tok->id);
  if (c->gate_lock != NULL)
    {
      g_mutex_lock (c->gate_lock);
      *c->gate_entered = TRUE;
      g_cond_broadcast (c->gate_cond);
      while (!*c->gate_open)
        g_cond_wait (c->gate_cond, c->gate_lock);
      g_mutex_unlock (c->gate_lock);
    }
  if (c->cancel_at > 0 && (int) c->got->len == c->cancel_at)
    g_assert_true (bln_sched_cancel (c->sched, c->handle));
  return c->stop_at == 0 || (int) c->got->len < c->stop_at;
}

/* The end callback of a request whose data is a Collector: it must come
 * once; counts the request in *n_done. */
static inline void
on_end (const BlnSchedResult *res, gpointer data)
{
  Collector *c = data;

  g_mutex_lock (c->lock);
  g_assert_false (c->done);
  c->done = TRUE;
  c->res = *res;
  c->res.error = NULL;
  (*c->n_done)++;
  g_cond_broadcast (c->cond);
  g_mutex_unlock (c->lock);
}

/* A Collector that counts its end in *@n_done (caller frees with
 * collector_free()). */
static inline Collector *
collector_new (int *n_done)
{
  Collector *c = g_new0 (Collector, 1);

  c->lock = &collector_lock;
  c->cond = &collector_cond;
  c->n_done = n_done;
  c->got = g_array_new (FALSE, FALSE, sizeof (int32_t));
  return c;
}

static inline void
collector_free (Collector *c)
{
  g_array_unref (c->got);
  g_free (c);
}

/* Waits until *@n_done reaches @want; fails the test after two minutes. */
static inline void
wait_done (int *n_done, int want)
{
  gint64 end = g_get_monotonic_time () + 120 * G_TIME_SPAN_SECOND;

  g_mutex_lock (&collector_lock);
  while (*n_done < want)
    if (!g_cond_wait_until (&collector_cond, &collector_lock, end))
      g_error ("timed out waiting for %d requests (%d done)", want, *n_done);
  g_mutex_unlock (&collector_lock);
}

/* Runs one greedy request alone and returns its tokens (caller frees);
 * *@res gets its result. */
static inline GArray *
run_one (BlnSched *s, const int32_t *ids, int n, int max_tokens, BlnSchedResult *res)
{
  g_autoptr (GError) error = NULL;
  int n_done = 0;
  Collector *c = collector_new (&n_done);
  GArray *out;

  g_assert_cmpuint (bln_sched_submit (s, ids, n, NULL, max_tokens, 0, on_token, on_end, c,
                                      &error), >, 0);
  g_assert_no_error (error);
  wait_done (&n_done, 1);
  *res = c->res;
  out = g_array_ref (c->got);
  collector_free (c);
  return out;
}

/* Waits until the scheduler's published statistics show @finished
 * requests ended; *@st gets them. Fails the test after 30 s. */
static inline void
wait_stats (BlnSched *s, guint64 finished, BlnSchedStats *st)
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

/* ---- references -------------------------------------------------------- */

/* A request run alone through a plain context: the reference for the same
 * request through the scheduler (caller frees). At most @max_tokens ids,
 * each picked by a sampler with @params that has seen the prompt (NULL:
 * greedy, the largest logit) after @mask (NULL: none) has edited the row;
 * ends before an end-of-generation token, as the scheduler does. */
static inline GArray *
solo_with (BlnModel *m, BlnPool *pool, const int32_t *prompt, int n, int max_tokens,
           const BlnSamplerParams *params, void (*mask) (float *logits, int n_vocab))
{
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnContext) ctx = bln_context_new (m, n + max_tokens + 1, pool, &error);
  int n_vocab = bln_model_hparams (m)->n_vocab;
  g_autoptr (BlnSampler) smp = params != NULL ? bln_sampler_new (params, n_vocab) : NULL;
  g_autofree float *logits = g_new (float, n_vocab);
  GArray *out = g_array_new (FALSE, FALSE, sizeof (int32_t));
  BlnTokenizer *tok = bln_model_tokenizer (m);

  g_assert_no_error (error);
  for (int i = 0; smp != NULL && i < n; i++)
    bln_sampler_accept (smp, prompt[i]);
  g_assert_true (bln_context_eval (ctx, prompt, n, logits, FALSE, &error));
  g_assert_no_error (error);
  while ((int) out->len < max_tokens)
    {
      int32_t id;

      if (mask != NULL)
        mask (logits, n_vocab);
      id = smp != NULL ? bln_sampler_sample (smp, logits, NULL, 0) : argmax (logits, n_vocab);
      if (tok != NULL && bln_tokenizer_is_eog (tok, id))
        break;
      if (smp != NULL)
        bln_sampler_accept (smp, id);
      g_array_append_val (out, id);
      g_assert_true (bln_context_eval (ctx, &id, 1, logits, FALSE, &error));
      g_assert_no_error (error);
    }
  return out;
}

/* Greedy decoding of @prompt alone: solo_with() without sampler or mask. */
static inline GArray *
solo (BlnModel *m, BlnPool *pool, const int32_t *prompt, int n, int max_tokens)
{
  return solo_with (m, pool, prompt, n, max_tokens, NULL, NULL);
}

/* Fails the test, listing both, unless @got holds the ids of @want. */
static inline void
assert_same (GArray *want, GArray *got, const char *what)
{
  if (want->len != got->len
      || (want->len > 0 && memcmp (want->data, got->data, want->len * sizeof (int32_t)) != 0))
    {
      GString *s = g_string_new (NULL);

      for (guint i = 0; i < MAX (want->len, got->len); i++)
        g_string_append_printf (s, " %d/%d", i < want->len ? g_array_index (want, int32_t, i) : -1,
                                i < got->len ? g_array_index (got, int32_t, i) : -1);
      g_error ("%s: tokens differ (want/got):%s", what, s->str);
    }
}
