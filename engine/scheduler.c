/* scheduler.c — the continuous-batching scheduler; see scheduler.h for the policy.
 *
 * Ownership: a request (Req) is created by bln_sched_submit() and freed by
 * the scheduler's thread right after its end callback. While it lives it is
 * in the `live` table (so bln_sched_cancel() can find it) and in exactly one
 * of `waiting` (guarded by the lock) or `running` (the thread's own).
 */
#include <string.h>

#include "bln-error.h"
#include "kv-cache.h"
#include "scheduler.h"
#include "tokenizer.h"

#define DEFAULT_KV_BYTES ((size_t) 512 << 20)
#define DEFAULT_MAX_SEQS 32
#define DEFAULT_STEP_TOKENS 512
#define DEFAULT_MAX_QUEUE 256
#define MAX_TOP 20

G_DEFINE_QUARK (bln-sched-error-quark, bln_sched_error)

typedef struct {
  guint64 id;
  GArray *tokens;             /* int32_t: prompt, then generated */
  int n_prompt;
  BlnSamplerParams params;
  int max_tokens;
  int n_top;
  BlnSchedFilterFn filter;
  BlnSchedTokenFn on_token;
  BlnSchedEndFn on_end;
  gpointer user_data;
  gint cancelled;             /* atomic */

  /* the scheduler thread's */
  BlnKvSeq *kv;               /* NULL while waiting */
  BlnSampler *sampler;        /* made at first admission */
  gboolean admitted;          /* has been admitted at least once */
  int cached_tokens;          /* prefix hit at first admission */
  int n_gen;
  int preemptions;
  int chunk;                  /* tokens scheduled in the step being built */
} Req;

struct _BlnSched {
  BlnModel *model;
  BlnPool *pool;
  BlnKvCache *kv;
  BlnSchedOptions o;
  int n_vocab;
  const BlnTokenizer *tok;

  GThread *thread;
  GMutex lock;
  GCond cond;
  /* guarded by lock */
  GQueue waiting;             /* Req *, ascending id */
  GHashTable *live;           /* &Req.id -> Req * */
  gboolean stopping;
  guint64 next_id;
  BlnSchedStats stats;
  guint64 drop_asked, drop_done;  /* bln_sched_drop_cached() tickets */
  int drop_freed;             /* blocks the last drop freed */
  GCond drop_cond;            /* signalled when drop_done moves */
  guint64 expire_asked, expire_done;  /* bln_sched_expire_cached() tickets */
  int expire_freed;           /* blocks the last asked expiry freed */

  /* the thread's own */
  GPtrArray *running;         /* Req *, ascending id */
  float *logits;              /* max_seqs × n_vocab */
  BlnLogprob *tops;           /* max_seqs × (MAX_TOP + 1): each row's draw */
  int32_t *drawn;             /* max_seqs: the token drawn for each row */
  BlnKvBatchItem *items;      /* max_seqs */
  /* compact sampling on the GPU (docs/GPU-SAMPLING.md; off with
   * BALEEN_GPU_COMPACT_SAMPLING=0): each row's ask, and whether the record
   * decided its draw (else the full row is fetched) */
  gboolean compact;
  BlnKvCompactAsk *asks;      /* max_seqs */
  gboolean *need_row;         /* max_seqs: the record could not decide */
  guint64 compact_draws, compact_fallbacks;
  guint64 computed, generated, steps, preemptions, prompt_tokens, cached_tokens, finished;
  guint64 clears, cleared;
};

void
bln_sched_options_init (BlnSchedOptions *opts)
{
  memset (opts, 0, sizeof *opts);
}

static void
req_free (Req *r)
{
  g_array_unref (r->tokens);
  bln_kv_seq_free (r->kv);
  if (r->sampler != NULL)
    bln_sampler_free (r->sampler);
  g_free (r);
}

static gint
req_cmp (gconstpointer a, gconstpointer b, gpointer unused)
{
  guint64 x = ((const Req *) a)->id, y = ((const Req *) b)->id;

  return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------------- */
/* the end of a request (scheduler thread)                                 */

static void
running_remove (BlnSched *s, Req *r)
{
  g_ptr_array_remove (s->running, r);
}

/* Releases @r's blocks, takes it out of the live table, calls its end
 * callback and frees it. @r must be in neither list any more. */
static void
finish (BlnSched *s, Req *r, BlnSchedFinish how, const GError *error)
{
  BlnSchedResult res = { 0 };

  g_clear_pointer (&r->kv, bln_kv_seq_free);
  g_mutex_lock (&s->lock);
  g_hash_table_remove (s->live, &r->id);
  g_mutex_unlock (&s->lock);
  s->finished++;
  res.finish = how;
  res.prompt_tokens = r->n_prompt;
  res.cached_tokens = r->cached_tokens;
  res.completion_tokens = r->n_gen;
  res.preemptions = r->preemptions;
  res.error = how == BLN_SCHED_FINISH_ERROR ? error : NULL;
  r->on_end (&res, r->user_data);
  req_free (r);
}

/* Preemption by recompute: drop the blocks, keep the tokens and the sampler,
 * and queue the request again in arrival order (ahead of newer ones). */
static void
preempt (BlnSched *s, Req *r)
{
  g_clear_pointer (&r->kv, bln_kv_seq_free);
  r->chunk = 0;
  r->preemptions++;
  s->preemptions++;
  running_remove (s, r);
  g_mutex_lock (&s->lock);
  g_queue_insert_sorted (&s->waiting, r, req_cmp, NULL);
  g_mutex_unlock (&s->lock);
}

static void
publish_stats (BlnSched *s)
{
  BlnKvStats kst;
  BlnSchedStats *st = &s->stats;

  bln_kv_cache_get_stats (s->kv, &kst);
  g_mutex_lock (&s->lock);
  st->waiting = (int) s->waiting.length;
  st->running = (int) s->running->len;
  st->max_seqs = s->o.max_seqs;
  st->compact_draws = s->compact_draws;
  st->compact_fallbacks = s->compact_fallbacks;
  st->blocks_total = kst.n_blocks;
  st->blocks_used = kst.blocks_used;
  st->blocks_cached = kst.blocks_cached;
  st->blocks_free = kst.blocks_free;
  st->block_size = kst.block_size;
  st->sliding_window = bln_kv_cache_sliding_window (s->kv);
  st->prompt_tokens = s->prompt_tokens;
  st->cached_tokens = s->cached_tokens;
  st->lookup_tokens = kst.lookup_tokens;
  st->hit_tokens = kst.hit_tokens;
  st->prefix_hit_rate = kst.lookup_tokens > 0
                          ? (double) kst.hit_tokens / (double) kst.lookup_tokens : 0.0;
  st->computed_tokens = s->computed;
  st->generated_tokens = s->generated;
  st->steps = s->steps;
  st->preemptions = s->preemptions;
  st->evictions = kst.evictions;
  st->finished = s->finished;
  st->cache_clears = s->clears;
  st->cleared_blocks = s->cleared;
  st->expired_blocks = kst.expired;
  g_mutex_unlock (&s->lock);
}

/* ---------------------------------------------------------------------- */
/* one step                                                                */

/* Tokens @r can still take without new blocks plus what the pool could give,
 * leaving @keep blocks to others. */
static int
room (BlnSched *s, Req *r, int keep)
{
  int bs = bln_kv_cache_block_size (s->kv);
  int have = bln_kv_seq_n_blocks (r->kv) * bs - bln_kv_seq_length (r->kv);

  return have + MAX (bln_kv_cache_n_available (s->kv) - keep, 0) * bs;
}

/* Reserves room for @want tokens of @r, shrinking a prompt chunk to what
 * fits, then preempting the newest other running sequences. Returns the
 * tokens reserved (> 0), 0 when @r itself had to be preempted, or -1 when
 * @r cannot grow even with the pool to itself (it is finished LENGTH by the
 * caller). @budget is given back the chunks of preempted sequences. */
static int
reserve (BlnSched *s, Req *r, int want, int *budget)
{
  for (;;)
    {
      int fit = MIN (want, room (s, r, 0));
      Req *victim;

      if (fit > 0 && bln_kv_seq_reserve (r->kv, fit))
        return fit;
      victim = g_ptr_array_index (s->running, s->running->len - 1);
      if (victim == r)
        {
          /* r is the newest: if it is also alone, it will never fit */
          if (s->running->len == 1)
            return -1;
          preempt (s, r);
          return 0;
        }
      *budget += victim->chunk;
      preempt (s, victim);
    }
}

/* Cancelled requests leave the queue and the batch. */
static void
reap_cancelled (BlnSched *s)
{
  GQueue gone = G_QUEUE_INIT;
  GList *l, *next;
  guint i;

  for (i = s->running->len; i > 0; i--)
    {
      Req *r = g_ptr_array_index (s->running, i - 1);
      if (g_atomic_int_get (&r->cancelled))
        {
          running_remove (s, r);
          g_queue_push_tail (&gone, r);
        }
    }
  g_mutex_lock (&s->lock);
  for (l = s->waiting.head; l != NULL; l = next)
    {
      Req *r = l->data;
      next = l->next;
      if (g_atomic_int_get (&r->cancelled))
        {
          g_queue_delete_link (&s->waiting, l);
          g_queue_push_tail (&gone, r);
        }
    }
  g_mutex_unlock (&s->lock);
  while (!g_queue_is_empty (&gone))
    finish (s, g_queue_pop_head (&gone), BLN_SCHED_FINISH_CANCELLED, NULL);
}

/* Schedules the running sequences: decodes first, then prompt chunks. */
static void
schedule_running (BlnSched *s, int *budget)
{
  int phase;
  guint i;

  for (phase = 0; phase < 2; phase++)
    for (i = 0; i < s->running->len && *budget > 0; i++)
      {
        Req *r = g_ptr_array_index (s->running, i);
        int pending = (int) r->tokens->len - bln_kv_seq_length (r->kv);
        int got;

        if (r->chunk > 0 || (phase == 0) != (pending == 1))
          continue;
        got = reserve (s, r, MIN (pending, *budget), budget);
        if (got < 0)
          {
            running_remove (s, r);
            finish (s, r, BLN_SCHED_FINISH_LENGTH, NULL);
            i--;
            continue;
          }
        if (got == 0)
          break;   /* r was the newest and went back to the queue */
        r->chunk = got;
        *budget -= got;
      }
}

/* Admits waiting requests, oldest first, while there is room. */
static void
admit (BlnSched *s, int *budget)
{
  while (*budget > 0 && (int) s->running->len < s->o.max_seqs)
    {
      Req *r;
      int cached, want, fit, i;

      g_mutex_lock (&s->lock);
      r = g_queue_peek_head (&s->waiting);
      g_mutex_unlock (&s->lock);
      if (r == NULL)
        return;
      r->kv = bln_kv_seq_new (s->kv);
      cached = bln_kv_seq_match_prefix (r->kv, (const int32_t *) r->tokens->data,
                                        (int) r->tokens->len - 1);
      want = MIN ((int) r->tokens->len - cached, *budget);
      /* a newcomer leaves a block per running sequence for its next
       * tokens, so that admitting it does not preempt it (or them) at once */
      fit = MIN (want, room (s, r, (int) s->running->len));
      if (fit <= 0 || !bln_kv_seq_reserve (r->kv, fit))
        {
          g_clear_pointer (&r->kv, bln_kv_seq_free);
          if (s->running->len > 0)
            return;    /* wait for running sequences to free blocks */
          /* alone with the whole pool and still no room: it never fits */
          g_mutex_lock (&s->lock);
          g_queue_pop_head (&s->waiting);
          g_mutex_unlock (&s->lock);
          finish (s, r, BLN_SCHED_FINISH_LENGTH, NULL);
          continue;
        }
      g_mutex_lock (&s->lock);
      g_queue_pop_head (&s->waiting);
      g_mutex_unlock (&s->lock);
      if (!r->admitted)
        {
          r->admitted = TRUE;
          r->cached_tokens = cached;
          s->prompt_tokens += r->n_prompt;
          s->cached_tokens += cached;
          r->sampler = bln_sampler_new (&r->params, s->n_vocab);
          for (i = 0; i < r->n_prompt; i++)
            bln_sampler_accept (r->sampler, g_array_index (r->tokens, int32_t, i));
        }
      /* keep running in arrival order (a recomputed request is older) */
      for (i = 0; i < (int) s->running->len; i++)
        if (((Req *) g_ptr_array_index (s->running, i))->id > r->id)
          break;
      g_ptr_array_insert (s->running, i, r);
      r->chunk = fit;
      *budget -= fit;
    }
}

/* The token of @r's row @logits into *@id, its logprobs into @top: FALSE
 * when the request's logits filter found no token that fits (a JSON reply
 * out of room). Touches only @r's own state: rows are drawn in parallel. */
static gboolean
draw (BlnSched *s, Req *r, float *logits, BlnLogprob *top, int32_t *id)
{
  if (r->filter != NULL)
    {
      int left = MIN (r->max_tokens - r->n_gen, s->o.n_ctx - (int) r->tokens->len);

      if (!r->filter (logits, s->n_vocab, left, r->user_data))
        return FALSE;
    }
  *id = bln_sampler_sample (r->sampler, logits, top, r->n_top);
  return TRUE;
}

/* After the draw: the token joins @r's sequence (or ends it), in batch
 * order on the scheduler thread. @ok is draw()'s answer. */
static void
take (BlnSched *s, Req *r, gboolean ok, int32_t id, const BlnLogprob *top)
{
  BlnSchedToken tok = { 0 };

  if (!ok)
    {
      running_remove (s, r);
      finish (s, r, BLN_SCHED_FINISH_LENGTH, NULL);
      return;
    }
  if (s->tok != NULL && bln_tokenizer_is_eog (s->tok, id))
    {
      running_remove (s, r);
      finish (s, r, BLN_SCHED_FINISH_STOP, NULL);
      return;
    }
  bln_sampler_accept (r->sampler, id);
  g_array_append_val (r->tokens, id);
  s->generated++;
  tok.id = id;
  tok.logprob = top[0].logprob;
  tok.index = r->n_gen++;
  tok.top = r->n_top > 0 ? top + 1 : NULL;
  tok.n_top = r->n_top;
  if (r->on_token != NULL && !r->on_token (&tok, r->user_data))
    {
      running_remove (s, r);
      finish (s, r, BLN_SCHED_FINISH_STOP, NULL);
    }
  else if (r->n_gen >= r->max_tokens || (int) r->tokens->len >= s->o.n_ctx)
    {
      running_remove (s, r);
      finish (s, r, BLN_SCHED_FINISH_LENGTH, NULL);
    }
}

/* The draws of a step: rows without a logits filter spread over the pool's
 * threads (each request has its own sampler and RNG, so the tokens are the
 * same as drawn one after another); filtered rows (JSON mode, whose masks
 * read the shared tokenizer tables) stay on the scheduler thread. */
typedef struct {
  BlnSched *s;
  GPtrArray *batch;           /* Req * of the step, in item order */
  gboolean *ok;
} DrawJob;

static void
draw_worker (void *p, int ith, int nth)
{
  DrawJob *j = p;
  BlnSched *s = j->s;

  for (guint i = ith; i < j->batch->len; i += nth)
    {
      Req *r = g_ptr_array_index (j->batch, i);
      float *lg = s->items[i].logits;
      BlnLogprob *top = s->tops + (size_t) i * (MAX_TOP + 1);
      BlnCompactRow row;

      if (lg == NULL || r->filter != NULL)
        continue;
      if (s->items[i].compact != NULL && bln_kv_compact_row (s->kv, (int) i, &row))
        {
          /* the row is still on the device: draw from its record, or
           * leave it to the scheduler thread to fetch */
          s->need_row[i] = !bln_sampler_sample_compact (r->sampler, &row, top, r->n_top,
                                                        &s->drawn[i]);
          j->ok[i] = !s->need_row[i];
          continue;
        }
      j->ok[i] = draw (s, r, lg, top, &s->drawn[i]);
    }
}

/* What a row asks of its compact record, or NULL for a full-row draw (JSON
 * filters edit the row; plain sampling needs every token). */
static const BlnKvCompactAsk *
compact_ask (BlnSched *s, Req *r, BlnKvCompactAsk *ask)
{
  int k;

  if (!s->compact || r->filter != NULL)
    return NULL;
  k = bln_sampler_compact_k (r->sampler, r->n_top);
  if (k == 0)
    return NULL;
  ask->k = k;
  ask->temperature = bln_sampler_params (r->sampler)->temperature;
  ask->hist = NULL;
  ask->n_hist = 0;
  if (bln_sampler_compact_needs_history (r->sampler))
    {
      const int32_t *counts;

      ask->n_hist = bln_sampler_history (r->sampler, &ask->hist, &counts);
    }
  return ask;
}

static void
step (BlnSched *s)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) batch = g_ptr_array_new ();
  int budget = s->o.step_tokens, n_items = 0, n_out = 0, total = 0;
  guint i;

  reap_cancelled (s);
  schedule_running (s, &budget);
  admit (s, &budget);

  for (i = 0; i < s->running->len; i++)
    {
      Req *r = g_ptr_array_index (s->running, i);
      int len = bln_kv_seq_length (r->kv);
      BlnKvBatchItem *it;

      if (r->chunk == 0)
        continue;
      it = &s->items[n_items++];
      it->seq = r->kv;
      it->ids = (const int32_t *) r->tokens->data + len;
      it->n = r->chunk;
      it->all_logits = FALSE;
      it->logits = NULL;
      it->compact = NULL;
      if (len + r->chunk == (int) r->tokens->len)
        {
          it->logits = s->logits + (size_t) n_out++ * s->n_vocab;
          it->compact = compact_ask (s, r, &s->asks[n_items - 1]);
        }
      s->need_row[n_items - 1] = FALSE;
      total += r->chunk;
      g_ptr_array_add (batch, r);
    }
  if (n_items == 0)
    return;

  s->steps++;
  if (!bln_kv_eval (s->kv, s->items, n_items, &error))
    {
      g_warning ("scheduler step failed: %s", error->message);
      for (i = 0; i < batch->len; i++)
        {
          Req *r = g_ptr_array_index (batch, i);
          running_remove (s, r);
          finish (s, r, BLN_SCHED_FINISH_ERROR, error);
        }
      return;
    }
  s->computed += total;
  {
    g_autofree gboolean *ok = g_new0 (gboolean, batch->len);
    DrawJob job = { s, batch, ok };
    int n_draw = 0;

    for (i = 0; i < batch->len; i++)
      if (s->items[i].logits != NULL)
        n_draw++;
    if (n_draw > 1)
      bln_pool_run (s->pool, draw_worker, &job);
    else
      draw_worker (&job, 0, 1);
    /* rows whose record could not decide: the full row, the CPU sampler */
    for (i = 0; i < batch->len; i++)
      {
        Req *r = g_ptr_array_index (batch, i);

        if (s->items[i].compact == NULL || s->items[i].logits == NULL)
          continue;
        s->compact_draws++;
        if (!s->need_row[i])
          continue;
        s->compact_fallbacks++;
        if (!bln_kv_fetch_logits (s->kv, (int) i, s->items[i].logits, &error))
          {
            g_warning ("scheduler: fetching a logits row failed: %s", error->message);
            ok[i] = FALSE;
            g_clear_error (&error);
            continue;
          }
        ok[i] = draw (s, r, s->items[i].logits, s->tops + (size_t) i * (MAX_TOP + 1),
                      &s->drawn[i]);
      }
    for (i = 0; i < batch->len; i++)
      {
        Req *r = g_ptr_array_index (batch, i);
        float *lg = s->items[i].logits;
        BlnLogprob *top = s->tops + (size_t) i * (MAX_TOP + 1);

        r->chunk = 0;
        if (lg == NULL)
          continue;
        if (r->filter != NULL)
          ok[i] = draw (s, r, lg, top, &s->drawn[i]);
        take (s, r, ok[i], s->drawn[i], top);
      }
  }
}

/* ---------------------------------------------------------------------- */
/* the thread                                                              */

static gboolean
bln_sched_queue_empty (BlnSched *s)
{
  gboolean empty;

  g_mutex_lock (&s->lock);
  empty = s->waiting.length == 0;
  g_mutex_unlock (&s->lock);
  return empty;
}

static gpointer
sched_thread (gpointer data)
{
  BlnSched *s = data;
  GQueue rest = G_QUEUE_INIT;

  for (;;)
    {
      gboolean stop;
      guint64 drop;

      guint64 expire;
      int n_expired;

      /* the session TTL, checked between steps: the LRU is sorted by release
       * time, so this looks at its head only */
      n_expired = bln_kv_cache_expire (s->kv);
      if (n_expired > 0)
        publish_stats (s);
      g_mutex_lock (&s->lock);
      while (!s->stopping && s->waiting.length == 0 && s->running->len == 0
             && s->drop_asked == s->drop_done && s->expire_asked == s->expire_done)
        {
          gint64 due = bln_kv_cache_next_expiry (s->kv);

          if (due < 0)
            {
              g_cond_wait (&s->cond, &s->lock);
              continue;
            }
          /* idle: sleep until the oldest cached block is due (on the real
           * clock; a test clock is advanced and then bln_sched_expire_cached()
           * wakes us) and no longer */
          due -= bln_kv_cache_now (s->kv);
          if (due <= 0)
            break;
          if (!g_cond_wait_until (&s->cond, &s->lock, g_get_monotonic_time () + due))
            break;
        }
      stop = s->stopping;
      drop = s->drop_asked;
      expire = s->expire_asked;
      g_mutex_unlock (&s->lock);
      if (expire != s->expire_done)
        {
          n_expired += bln_kv_cache_expire (s->kv);
          publish_stats (s);
          g_mutex_lock (&s->lock);
          s->expire_freed = n_expired;
          s->expire_done = expire;
          g_cond_broadcast (&s->drop_cond);
          g_mutex_unlock (&s->lock);
        }
      if (drop != s->drop_done)
        {
          /* between steps: no sequence is in the middle of a pass */
          int n = bln_kv_cache_drop_cached (s->kv);

          s->clears++;
          s->cleared += (guint64) n;
          publish_stats (s);
          g_mutex_lock (&s->lock);
          s->drop_freed = n;
          s->drop_done = drop;
          g_cond_broadcast (&s->drop_cond);
          g_mutex_unlock (&s->lock);
        }
      if (stop)
        break;
      if (s->running->len == 0 && bln_sched_queue_empty (s))
        continue;
      step (s);
      publish_stats (s);
    }

  /* shutting down: every request left ends as cancelled */
  while (s->running->len > 0)
    {
      Req *r = g_ptr_array_index (s->running, s->running->len - 1);
      running_remove (s, r);
      finish (s, r, BLN_SCHED_FINISH_CANCELLED, NULL);
    }
  g_mutex_lock (&s->lock);
  rest = s->waiting;
  g_queue_init (&s->waiting);
  g_mutex_unlock (&s->lock);
  while (!g_queue_is_empty (&rest))
    finish (s, g_queue_pop_head (&rest), BLN_SCHED_FINISH_CANCELLED, NULL);
  publish_stats (s);
  /* nobody waits for a drop past this point */
  g_mutex_lock (&s->lock);
  s->drop_done = s->drop_asked;
  s->drop_freed = 0;
  s->expire_done = s->expire_asked;
  s->expire_freed = 0;
  g_cond_broadcast (&s->drop_cond);
  g_mutex_unlock (&s->lock);
  return NULL;
}

/* ---------------------------------------------------------------------- */
/* public API                                                              */

BlnSched *
bln_sched_new (BlnModel *model, BlnPool *pool, const BlnSchedOptions *opts, GError **error)
{
  const BlnHParams *hp;
  BlnSched *s;
  BlnSchedOptions o;
  BlnContextOptions cpu8;

  g_return_val_if_fail (model != NULL && pool != NULL, NULL);

  hp = bln_model_hparams (model);
  if (opts != NULL)
    o = *opts;
  else
    bln_sched_options_init (&o);
  if (o.max_seqs < 0 || o.step_tokens < 0 || o.max_queue < 0 || o.n_ctx < 0
      || o.session_ttl_s < 0
      || o.max_seqs > 4096 || o.n_ctx > (1 << 22))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "scheduler options out of range (max_seqs %d, step_tokens %d, max_queue %d, "
                   "n_ctx %d)", o.max_seqs, o.step_tokens, o.max_queue, o.n_ctx);
      return NULL;
    }
  if (o.kv_bytes == 0)
    o.kv_bytes = DEFAULT_KV_BYTES;
  if (o.block_size == 0)
    o.block_size = BLN_KV_BLOCK_SIZE_DEFAULT;
  if (o.max_seqs == 0)
    o.max_seqs = DEFAULT_MAX_SEQS;
  if (o.step_tokens == 0)
    o.step_tokens = DEFAULT_STEP_TOKENS;
  o.step_tokens = MAX (o.step_tokens, o.max_seqs);
  if (o.max_queue == 0)
    o.max_queue = DEFAULT_MAX_QUEUE;
  if (o.n_ctx == 0)
    o.n_ctx = MIN (hp->n_ctx_train > 0 ? hp->n_ctx_train : 8192, 8192);

  if (o.kv_bits != 0 && o.kv_bits != 8 && o.kv_bits != 32)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "scheduler KV bits must be 8 or 32, not %d", o.kv_bits);
      return NULL;
    }
  if (o.kv_bits == 8 && (o.device == NULL || o.device->device == BLN_DEVICE_CPU))
    {
      bln_context_options_init (&cpu8);
      cpu8.kv_bits = 8;
      o.device = &cpu8;
    }
  /* before the pool: a window the device cannot run fails with nothing allocated */
  if (!bln_sliding_window_check (model, o.sliding_window,
                                 o.device != NULL ? o.device->device : BLN_DEVICE_CPU, TRUE,
                                 error))
    return NULL;
  s = g_new0 (BlnSched, 1);
  s->kv = bln_kv_cache_new_with_options (model, pool, o.kv_bytes, o.block_size, o.device,
                                         error);
  if (s->kv == NULL)
    {
      g_free (s);
      return NULL;
    }
  if (!bln_kv_cache_set_sliding_window (s->kv, o.sliding_window, error))
    {
      bln_kv_cache_free (s->kv);
      g_free (s);
      return NULL;
    }
  s->model = model;
  s->pool = pool;
  s->o = o;
  s->o.device = NULL;   /* borrowed only while the pool is made */
  s->n_vocab = hp->n_vocab;
  s->tok = bln_model_tokenizer (model);
  s->logits = g_try_new (float, (size_t) o.max_seqs * hp->n_vocab);
  if (s->logits == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "out of memory for %d logit rows",
                   o.max_seqs);
      bln_kv_cache_free (s->kv);
      g_free (s);
      return NULL;
    }
  s->items = g_new0 (BlnKvBatchItem, o.max_seqs);
  s->asks = g_new0 (BlnKvCompactAsk, o.max_seqs);
  s->need_row = g_new0 (gboolean, o.max_seqs);
  s->compact = bln_kv_cache_device (s->kv) == BLN_DEVICE_CUDA
               && g_strcmp0 (g_getenv ("BALEEN_GPU_COMPACT_SAMPLING"), "0") != 0;
  s->tops = g_new0 (BlnLogprob, (size_t) o.max_seqs * (MAX_TOP + 1));
  s->drawn = g_new0 (int32_t, o.max_seqs);
  if (o.no_prefix_cache || o.prefix_bytes > 0)
    {
      size_t bb = bln_kv_cache_block_bytes (s->kv);
      size_t nb = o.prefix_bytes / bb;

      bln_kv_cache_set_prefix_cache (s->kv, !o.no_prefix_cache,
                                     o.prefix_bytes > 0 ? (int) CLAMP (nb, 1, G_MAXINT / 2) : 0);
    }
  if (o.session_ttl_s > 0)
    bln_kv_cache_set_ttl (s->kv, (gint64) o.session_ttl_s * G_TIME_SPAN_SECOND);
  if (o.clock != NULL)
    bln_kv_cache_set_clock (s->kv, o.clock, o.clock_data);
  g_mutex_init (&s->lock);
  g_cond_init (&s->cond);
  g_cond_init (&s->drop_cond);
  g_queue_init (&s->waiting);
  s->live = g_hash_table_new (g_int64_hash, g_int64_equal);
  s->running = g_ptr_array_new ();
  s->next_id = 1;
  publish_stats (s);
  s->thread = g_thread_new ("bln-sched", sched_thread, s);
  return s;
}

void
bln_sched_free (BlnSched *s)
{
  if (s == NULL)
    return;
  g_mutex_lock (&s->lock);
  s->stopping = TRUE;
  g_cond_signal (&s->cond);
  g_mutex_unlock (&s->lock);
  g_thread_join (s->thread);
  g_ptr_array_unref (s->running);
  g_hash_table_destroy (s->live);
  bln_kv_cache_free (s->kv);
  g_free (s->logits);
  g_free (s->items);
  g_free (s->asks);
  g_free (s->need_row);
  g_free (s->tops);
  g_free (s->drawn);
  g_mutex_clear (&s->lock);
  g_cond_clear (&s->cond);
  g_cond_clear (&s->drop_cond);
  g_free (s);
}

guint64
bln_sched_submit (BlnSched *s, const int32_t *prompt, int n_prompt,
                  const BlnSamplerParams *params, int max_tokens, int n_top,
                  BlnSchedTokenFn on_token, BlnSchedEndFn on_end, gpointer user_data,
                  GError **error)
{
  return bln_sched_submit_filtered (s, prompt, n_prompt, params, max_tokens, n_top, NULL,
                                    on_token, on_end, user_data, error);
}

guint64
bln_sched_submit_filtered (BlnSched *s, const int32_t *prompt, int n_prompt,
                           const BlnSamplerParams *params, int max_tokens, int n_top,
                           BlnSchedFilterFn filter, BlnSchedTokenFn on_token,
                           BlnSchedEndFn on_end, gpointer user_data, GError **error)
{
  int pool_tokens = bln_kv_cache_n_blocks (s->kv) * bln_kv_cache_block_size (s->kv);
  Req *r;
  guint64 id;
  int i;

  g_return_val_if_fail (s != NULL && on_end != NULL, 0);

  if (prompt == NULL || n_prompt <= 0 || max_tokens <= 0 || n_top < 0 || n_top > MAX_TOP)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "a request needs a prompt, max_tokens > 0 and 0..%d top logprobs", MAX_TOP);
      return 0;
    }
  if (n_prompt >= s->o.n_ctx || n_prompt > pool_tokens)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "the prompt has %d tokens; at most %d fit (context %d, KV pool %d tokens)",
                   n_prompt, MIN (s->o.n_ctx - 1, pool_tokens), s->o.n_ctx, pool_tokens);
      return 0;
    }
  for (i = 0; i < n_prompt; i++)
    if (prompt[i] < 0 || prompt[i] >= s->n_vocab)
      {
        g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                     "token id %d is outside the vocabulary (0..%d)", prompt[i], s->n_vocab - 1);
        return 0;
      }

  r = g_new0 (Req, 1);
  r->tokens = g_array_sized_new (FALSE, FALSE, sizeof (int32_t), n_prompt + MIN (max_tokens, 256));
  g_array_append_vals (r->tokens, prompt, n_prompt);
  r->n_prompt = n_prompt;
  if (params != NULL)
    r->params = *params;
  else
    {
      bln_sampler_params_init (&r->params);
      r->params.temperature = 0.0f;
    }
  r->max_tokens = max_tokens;
  r->n_top = n_top;
  r->filter = filter;
  r->on_token = on_token;
  r->on_end = on_end;
  r->user_data = user_data;

  g_mutex_lock (&s->lock);
  if (s->stopping || (int) s->waiting.length >= s->o.max_queue)
    {
      gboolean stopping = s->stopping;
      g_mutex_unlock (&s->lock);
      if (stopping)
        g_set_error (error, BLN_SCHED_ERROR, BLN_SCHED_ERROR_STOPPED,
                     "the scheduler is shutting down");
      else
        g_set_error (error, BLN_SCHED_ERROR, BLN_SCHED_ERROR_QUEUE_FULL,
                     "the queue is full (%d requests waiting); retry later", s->o.max_queue);
      req_free (r);
      return 0;
    }
  id = r->id = s->next_id++;
  g_queue_push_tail (&s->waiting, r);
  g_hash_table_insert (s->live, &r->id, r);
  s->stats.waiting = (int) s->waiting.length;
  g_cond_signal (&s->cond);
  g_mutex_unlock (&s->lock);
  return id;
}

gboolean
bln_sched_cancel (BlnSched *s, guint64 handle)
{
  Req *r;

  g_return_val_if_fail (s != NULL, FALSE);

  g_mutex_lock (&s->lock);
  r = g_hash_table_lookup (s->live, &handle);
  if (r != NULL)
    {
      g_atomic_int_set (&r->cancelled, 1);
      /* wake the thread when it sleeps with this request queued */
      g_cond_signal (&s->cond);
    }
  g_mutex_unlock (&s->lock);
  return r != NULL;
}

void
bln_sched_get_stats (BlnSched *s, BlnSchedStats *stats)
{
  g_return_if_fail (s != NULL && stats != NULL);

  g_mutex_lock (&s->lock);
  *stats = s->stats;
  g_mutex_unlock (&s->lock);
}

int
bln_sched_n_ctx (BlnSched *s)
{
  return s->o.n_ctx;
}

/* Asks the scheduler thread for a cache pass by taking a ticket from
 * *@asked, waits until *@done reaches it (or the scheduler stops: the
 * shutdown marks every ticket done) and returns *@freed, the blocks that
 * pass freed; 0 once stopping. */
static int
ask_thread (BlnSched *s, guint64 *asked, const guint64 *done, const int *freed)
{
  guint64 ticket;
  int n = 0;

  g_mutex_lock (&s->lock);
  if (!s->stopping)
    {
      ticket = ++*asked;
      g_cond_signal (&s->cond);
      while (*done < ticket && !s->stopping)
        g_cond_wait (&s->drop_cond, &s->lock);
      n = *done >= ticket ? *freed : 0;
    }
  g_mutex_unlock (&s->lock);
  return n;
}

int
bln_sched_drop_cached (BlnSched *s)
{
  g_return_val_if_fail (s != NULL, 0);
  return ask_thread (s, &s->drop_asked, &s->drop_done, &s->drop_freed);
}

int
bln_sched_expire_cached (BlnSched *s)
{
  g_return_val_if_fail (s != NULL, 0);
  return ask_thread (s, &s->expire_asked, &s->expire_done, &s->expire_freed);
}

void
bln_sched_request_drop_cached (BlnSched *s)
{
  g_return_if_fail (s != NULL);

  g_mutex_lock (&s->lock);
  if (!s->stopping)
    {
      s->drop_asked++;
      g_cond_signal (&s->cond);
    }
  g_mutex_unlock (&s->lock);
}
