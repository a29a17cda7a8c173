/* engine-worker.c — see engine-worker.h. */
#include "engine-worker.h"

#include <string.h>
#include <math.h>
#include "bln-error.h"
#include "kv-cache.h"
#include "json-constraint.h"
#include "tokenizer.h"

/* Prompt tokens evaluated per call, so a cancel is seen during long prompts. */
#define PREFILL_CHUNK 128
/* the same on the GPU (see prefill) */
#define PREFILL_CHUNK_GPU 2048

struct _BlnGenRequest {
  gint ref_count;
  gint cancelled;              /* atomic */

  /* set at creation, read-only afterwards */
  GArray *prompt;
  BlnSamplerParams params;
  int max_tokens;
  char **stops;
  GMainContext *main_ctx;
  BlnGenTokensFn on_tokens;    /* logprobs wanted when set */
  int n_top;
  gboolean json;               /* constrained to JSON */
  gboolean json_object_only;
  BlnJsonSchema *json_schema;  /* and to this schema (a reference), or NULL */
  BlnGenTextFn on_text;
  BlnGenDoneFn on_done;
  gpointer user_data;

  /* shared between the worker and the main context, under lock */
  GMutex lock;
  GString *pending;            /* text not yet delivered */
  GArray *pending_tokens;      /* BlnGenToken not yet delivered */
  gboolean done;
  gboolean scheduled;          /* a delivery source is attached */
  BlnFinish finish;
  BlnGenUsage usage;
  GError *error;

  /* main context only */
  gboolean delivered_done;

  /* scheduler path */
  BlnSched *sched;             /* under lock: set while the scheduler holds the request */
  guint64 handle;              /* under lock */
  BlnDetok *dt;                /* scheduler thread only (created at submit) */
  GString *held;               /* scheduler thread only: text not yet posted */
  gboolean stopped;            /* scheduler thread only: a stop string ended it */
  gboolean cancel_seen;        /* scheduler thread only: ended because of the flag */
  BlnJsonConstraint *jc;       /* scheduler thread only: JSON mode's recogniser */
  const BlnTokenizer *tok;     /* scheduler path: the model's */
};

struct _BlnEngineWorker {
  BlnModel *model;
  BlnPool *pool;               /* the scheduler's, or the GPU context's */
  BlnSched *sched;             /* batching path (CPU, or GPU pool); NULL on the
                                * single-context path */
  int n_ctx;
  int n_threads;
  double kv_block_scale;       /* the pool's bytes a block / the F32 size (GPU F16: 0.5) */
  gboolean started;            /* under lock: the single-context thread runs */
  /* single-context path: the GPU (fifo_pool is only made, on the thread,
   * should a request ever reach it without a context) */
  BlnPool *fifo_pool;
  BlnContext *ctx;
  GArray *cached;              /* ids whose keys/values are in ctx */
  float *logits;
  GAsyncQueue *queue;          /* BlnGenRequest*, or the worker itself to quit */
  GThread *thread;
  GMutex lock;
  BlnGenRequest *running;      /* under lock */
  gint quitting;               /* atomic */
};

/* ---------------------------------------------------------------------- */
/* requests                                                                */

BlnGenRequest *
bln_gen_request_new (GArray *prompt, const BlnSamplerParams *params, int max_tokens,
                     const char *const *stops, GMainContext *main_ctx, BlnGenTextFn on_text,
                     BlnGenDoneFn on_done, gpointer user_data)
{
  BlnGenRequest *req = g_new0 (BlnGenRequest, 1);
  GPtrArray *s = g_ptr_array_new ();

  req->ref_count = 1;
  req->prompt = g_array_sized_new (FALSE, FALSE, sizeof (int32_t), prompt->len);
  g_array_append_vals (req->prompt, prompt->data, prompt->len);
  req->params = *params;
  req->max_tokens = MAX (max_tokens, 1);
  for (; stops != NULL && *stops != NULL; stops++)
    if (**stops)
      g_ptr_array_add (s, g_strdup (*stops));
  g_ptr_array_add (s, NULL);
  req->stops = (char **) g_ptr_array_free (s, FALSE);
  req->main_ctx = g_main_context_ref (main_ctx ? main_ctx : g_main_context_default ());
  req->on_text = on_text;
  req->on_done = on_done;
  req->user_data = user_data;
  g_mutex_init (&req->lock);
  req->pending = g_string_new (NULL);
  req->pending_tokens = g_array_new (FALSE, FALSE, sizeof (BlnGenToken));
  return req;
}

void
bln_gen_request_set_logprobs (BlnGenRequest *req, int n_top, BlnGenTokensFn on_tokens)
{
  req->n_top = CLAMP (n_top, 0, BLN_GEN_MAX_TOP_LOGPROBS);
  req->on_tokens = on_tokens;
}

void
bln_gen_request_set_json (BlnGenRequest *req, gboolean object_only)
{
  req->json = TRUE;
  req->json_object_only = object_only;
}

void
bln_gen_request_set_json_schema (BlnGenRequest *req, BlnJsonSchema *schema)
{
  req->json = TRUE;
  req->json_object_only = FALSE;
  g_clear_pointer (&req->json_schema, bln_json_schema_unref);
  req->json_schema = bln_json_schema_ref (schema);
}

/* Starts @req's recogniser in @jc. */
static void
json_init (BlnGenRequest *req, BlnJsonConstraint *jc)
{
  if (req->json_schema != NULL)
    bln_json_constraint_init_schema (jc, req->json_schema);
  else
    bln_json_constraint_init (jc, req->json_object_only);
}

BlnGenRequest *
bln_gen_request_ref (BlnGenRequest *req)
{
  g_atomic_int_inc (&req->ref_count);
  return req;
}

void
bln_gen_request_unref (BlnGenRequest *req)
{
  if (req == NULL || !g_atomic_int_dec_and_test (&req->ref_count))
    return;
  g_array_unref (req->prompt);
  g_strfreev (req->stops);
  g_main_context_unref (req->main_ctx);
  g_mutex_clear (&req->lock);
  g_string_free (req->pending, TRUE);
  g_array_unref (req->pending_tokens);
  g_clear_error (&req->error);
  g_clear_pointer (&req->dt, bln_detok_free);
  g_free (req->jc);
  g_clear_pointer (&req->json_schema, bln_json_schema_unref);
  if (req->held != NULL)
    g_string_free (req->held, TRUE);
  g_free (req);
}

void
bln_gen_request_cancel (BlnGenRequest *req)
{
  g_atomic_int_set (&req->cancelled, 1);
  /* on the scheduler, free its KV blocks at the next step */
  g_mutex_lock (&req->lock);
  if (req->sched != NULL && req->handle != 0)
    bln_sched_cancel (req->sched, req->handle);
  g_mutex_unlock (&req->lock);
}

/* Runs on the main context: hands over pending text and the end. */
static gboolean
deliver (gpointer data)
{
  BlnGenRequest *req = data;
  g_autofree char *text = NULL;
  g_autoptr (GArray) tokens = NULL;
  gboolean done;

  g_mutex_lock (&req->lock);
  req->scheduled = FALSE;
  if (req->pending_tokens->len > 0)
    {
      tokens = req->pending_tokens;
      req->pending_tokens = g_array_new (FALSE, FALSE, sizeof (BlnGenToken));
    }
  if (req->pending->len > 0)
    {
      text = g_strndup (req->pending->str, req->pending->len);
      g_string_truncate (req->pending, 0);
    }
  done = req->done;
  g_mutex_unlock (&req->lock);

  if (req->delivered_done)
    return G_SOURCE_REMOVE;
  if (tokens != NULL && !g_atomic_int_get (&req->cancelled) && req->on_tokens != NULL)
    req->on_tokens ((const BlnGenToken *) tokens->data, tokens->len, req->user_data);
  if (text != NULL && !g_atomic_int_get (&req->cancelled) && req->on_text != NULL)
    req->on_text (text, req->user_data);
  if (done)
    {
      req->delivered_done = TRUE;
      if (req->on_done != NULL)
        req->on_done (req->finish, &req->usage, req->error, req->user_data);
    }
  return G_SOURCE_REMOVE;
}

/* Worker side: makes sure a delivery is pending. Call with req->lock held. */
static void
schedule_locked (BlnGenRequest *req)
{
  GSource *src;

  if (req->scheduled)
    return;
  req->scheduled = TRUE;
  src = g_idle_source_new ();
  g_source_set_priority (src, G_PRIORITY_DEFAULT);
  g_source_set_callback (src, deliver, bln_gen_request_ref (req),
                         (GDestroyNotify) bln_gen_request_unref);
  g_source_attach (src, req->main_ctx);
  g_source_unref (src);
}

static void
post_text (BlnGenRequest *req, const char *text, gsize len)
{
  if (len == 0)
    return;
  g_mutex_lock (&req->lock);
  g_string_append_len (req->pending, text, (gssize) len);
  schedule_locked (req);
  g_mutex_unlock (&req->lock);
}

static void
post_token (BlnGenRequest *req, const BlnGenToken *t)
{
  g_mutex_lock (&req->lock);
  g_array_append_vals (req->pending_tokens, t, 1);
  schedule_locked (req);
  g_mutex_unlock (&req->lock);
}

/* JSON mode: -inf for every token that cannot continue the text, and,
 * when only @left tokens remain, for every token after which the shortest
 * ending would no longer fit (so a reply cut by max_tokens still parses).
 * Returns FALSE when nothing is left. */
static gboolean
mask_json (const BlnTokenizer *tok, const BlnJsonConstraint *jc, int left, float *logits,
           int n_vocab)
{
  g_autoptr (GString) tail = g_string_new (NULL);
  gboolean any = FALSE;
  guint8 first[256];
  int i;

  /* most tokens fail at their first byte: try each byte once */
  for (i = 0; i < 256; i++)
    {
      char ch = (char) i;

      first[i] = bln_json_constraint_accepts (jc, &ch, 1);
    }
  for (i = 0; i < n_vocab; i++)
    {
      const char *b;
      gsize len = 0;

      if (isinf (logits[i]) && logits[i] < 0)
        continue;
      b = bln_tokenizer_token_bytes (tok, i, &len);
      if (b == NULL || len == 0 || !first[(guint8) b[0]] || bln_tokenizer_is_special (tok, i)
          || bln_tokenizer_is_eog (tok, i) || !bln_json_constraint_accepts (jc, b, len))
        logits[i] = -INFINITY;
      else if (left < 256)
        {
          BlnJsonConstraint next = *jc;

          bln_json_constraint_feed (&next, b, len);
          g_string_truncate (tail, 0);
          bln_json_constraint_closing (&next, tail);
          if ((int) tail->len > left - 1)
            logits[i] = -INFINITY;
          else
            any = TRUE;
        }
      else
        any = TRUE;
    }
  return any;
}

/* JSON mode near the end of the budget: only the tokens that spell the
 * start of @tail (the shortest completion of the text) survive. */
static gboolean
mask_to_tail (const BlnTokenizer *tok, const GString *tail, float *logits, int n_vocab)
{
  gboolean any = FALSE;
  int i;

  for (i = 0; i < n_vocab; i++)
    {
      gsize len = 0;
      const char *b = bln_tokenizer_token_bytes (tok, i, &len);

      if (b == NULL || len == 0 || len > tail->len || memcmp (b, tail->str, len) != 0
          || bln_tokenizer_is_special (tok, i) || bln_tokenizer_is_eog (tok, i))
        logits[i] = -INFINITY;
      else if (!(isinf (logits[i]) && logits[i] < 0))
        any = TRUE;
    }
  return any;
}

static void
post_done (BlnGenRequest *req, BlnFinish finish, const BlnGenUsage *usage, GError *error)
{
  g_mutex_lock (&req->lock);
  req->done = TRUE;
  req->finish = finish;
  if (usage != NULL)
    req->usage = *usage;
  req->error = error;
  schedule_locked (req);
  g_mutex_unlock (&req->lock);
}

/* ---------------------------------------------------------------------- */
/* stop strings                                                            */

/* Length of the longest suffix of @buf (length @len) that is a proper prefix
 * of some stop string: those bytes must be held back. */
static gsize
stop_holdback (char **stops, const char *buf, gsize len)
{
  gsize best = 0;

  for (; *stops != NULL; stops++)
    {
      gsize sl = strlen (*stops);
      gsize k = MIN (len, sl - 1);

      for (; k > best; k--)
        if (memcmp (buf + len - k, *stops, k) == 0)
          {
            best = k;
            break;
          }
    }
  return best;
}

/* The position of the earliest stop string in @buf, or -1. */
static gssize
stop_find (char **stops, const char *buf, gsize len)
{
  gssize best = -1;

  for (; *stops != NULL; stops++)
    {
      const char *p = memmem (buf, len, *stops, strlen (*stops));
      if (p != NULL && (best < 0 || p - buf < best))
        best = p - buf;
    }
  return best;
}

/* ---------------------------------------------------------------------- */
/* the scheduler path (callbacks run on the scheduler's thread)            */

static gboolean
sched_on_token (const BlnSchedToken *t, gpointer data)
{
  BlnGenRequest *req = data;
  gsize hold;
  gssize at;

  if (g_atomic_int_get (&req->cancelled))
    {
      req->cancel_seen = TRUE;
      return FALSE;
    }
  if (req->on_tokens != NULL)
    {
      BlnGenToken gt;

      gt.id = t->id;
      gt.logprob = t->logprob;
      gt.n_top = t->top != NULL ? MIN (t->n_top, req->n_top) : 0;
      if (gt.n_top > 0)
        memcpy (gt.top, t->top, sizeof (BlnLogprob) * (gsize) gt.n_top);
      post_token (req, &gt);
    }
  bln_detok_push_append (req->dt, t->id, req->held);
  if (req->jc != NULL)
    {
      gsize blen = 0;
      const char *b = bln_tokenizer_token_bytes (req->tok, t->id, &blen);

      /* the filter let only acceptable tokens through */
      bln_json_constraint_feed (req->jc, b, blen);
      if (bln_json_constraint_complete (req->jc))
        {
          g_autofree char *rest = bln_detok_flush (req->dt);

          g_string_append (req->held, rest);
          at = stop_find (req->stops, req->held->str, req->held->len);
          if (at >= 0)
            g_string_truncate (req->held, (gsize) at);
          post_text (req, req->held->str, req->held->len);
          g_string_truncate (req->held, 0);
          req->stopped = TRUE;
          return FALSE;
        }
    }
  at = stop_find (req->stops, req->held->str, req->held->len);
  if (at >= 0)
    {
      g_string_truncate (req->held, (gsize) at);
      post_text (req, req->held->str, req->held->len);
      g_string_truncate (req->held, 0);
      req->stopped = TRUE;
      return FALSE;
    }
  hold = stop_holdback (req->stops, req->held->str, req->held->len);
  post_text (req, req->held->str, req->held->len - hold);
  g_string_erase (req->held, 0, (gssize) (req->held->len - hold));
  return TRUE;
}

static void
sched_on_end (const BlnSchedResult *r, gpointer data)
{
  BlnGenRequest *req = data;
  BlnGenUsage usage = { r->prompt_tokens, r->completion_tokens, r->cached_tokens };
  BlnFinish finish;

  switch (r->finish)
    {
    case BLN_SCHED_FINISH_STOP:
      finish = BLN_FINISH_STOP;
      break;
    case BLN_SCHED_FINISH_LENGTH:
      finish = BLN_FINISH_LENGTH;
      break;
    case BLN_SCHED_FINISH_ERROR:
      finish = BLN_FINISH_ERROR;
      break;
    case BLN_SCHED_FINISH_CANCELLED:
    default:
      finish = BLN_FINISH_CANCELLED;
      break;
    }
  if (req->cancel_seen)
    finish = BLN_FINISH_CANCELLED;
  else if (req->stopped)
    finish = BLN_FINISH_STOP;
  if (finish == BLN_FINISH_STOP || finish == BLN_FINISH_LENGTH)
    {
      if (!req->stopped)
        {
          g_autofree char *rest = bln_detok_flush (req->dt);
          gssize at;

          g_string_append (req->held, rest);
          at = stop_find (req->stops, req->held->str, req->held->len);
          if (at >= 0)
            {
              g_string_truncate (req->held, (gsize) at);
              finish = BLN_FINISH_STOP;
            }
        }
      post_text (req, req->held->str, req->held->len);
    }
  else if (finish == BLN_FINISH_ERROR)
    post_text (req, req->held->str, req->held->len);
  g_string_truncate (req->held, 0);
  g_mutex_lock (&req->lock);
  req->sched = NULL;
  req->handle = 0;
  g_mutex_unlock (&req->lock);
  post_done (req, finish, &usage, r->error != NULL ? g_error_copy (r->error) : NULL);
  bln_gen_request_unref (req);
}

/* JSON mode on the scheduler: masks the logits before each token (as
 * run_request() does on the single-context path). */
static gboolean
sched_filter (float *logits, int n_vocab, int left, gpointer data)
{
  BlnGenRequest *req = data;
  g_autoptr (GString) tail = g_string_new (NULL);

  if (g_atomic_int_get (&req->cancelled))
    return TRUE;   /* the token callback ends it */
  bln_json_constraint_closing (req->jc, tail);
  /* the ending no longer fits: spell it out; otherwise keep it within reach */
  return (int) tail->len >= left ? mask_to_tail (req->tok, tail, logits, n_vocab)
                                 : mask_json (req->tok, req->jc, left, logits, n_vocab);
}

static gboolean
sched_submit (BlnEngineWorker *w, BlnGenRequest *req, GError **error)
{
  guint64 handle;

  req->tok = bln_model_tokenizer (w->model);
  req->dt = bln_detok_new (bln_model_tokenizer (w->model));
  req->held = g_string_new (NULL);
  if (req->json)
    {
      req->jc = g_new (BlnJsonConstraint, 1);
      json_init (req, req->jc);
    }
  bln_gen_request_ref (req);   /* dropped by sched_on_end */
  g_mutex_lock (&req->lock);   /* so a cancel cannot slip between submit and the handle */
  handle = bln_sched_submit_filtered (w->sched, (const int32_t *) req->prompt->data,
                                      (int) req->prompt->len, &req->params, req->max_tokens,
                                      req->on_tokens != NULL ? req->n_top : 0,
                                      req->json ? sched_filter : NULL, sched_on_token,
                                      sched_on_end, req, error);
  if (handle == 0)
    {
      g_mutex_unlock (&req->lock);
      bln_gen_request_unref (req);
      return FALSE;
    }
  if (!req->done)
    {
      req->sched = w->sched;
      req->handle = handle;
    }
  g_mutex_unlock (&req->lock);
  if (g_atomic_int_get (&req->cancelled))
    bln_gen_request_cancel (req);
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* the engine thread                                                       */

/* Brings the context to hold @prompt minus nothing, reusing the common
 * prefix, leaving the logits of its last token in w->logits — or, when
 * @sampler is not NULL, sampling the next token from them into *@next (and
 * its logprobs into @top, n_top + 1 entries) without bringing the logits
 * back from the GPU. Stops early when cancelled (returns TRUE with
 * *cancelled set). */
static gboolean
prefill (BlnEngineWorker *w, BlnGenRequest *req, BlnSampler *sampler, int32_t *next,
         BlnLogprob *top, int *cached_out, gboolean *cancelled, GError **error)
{
  const int32_t *ids = (const int32_t *) req->prompt->data;
  guint n = req->prompt->len, common = 0;

  while (common < n && common < w->cached->len
         && g_array_index (w->cached, int32_t, common) == ids[common])
    common++;
  if (common == n)
    common--;   /* re-run the last token to get its logits */
  *cached_out = (int) common;
  bln_context_truncate (w->ctx, (int) common);
  g_array_set_size (w->cached, common);
  while (common < n)
    {
      /* GPU: the context's own chunking (2,048 tokens) expands the weights
       * once per chunk, so small chunks here would cost that many times */
      guint chunk = bln_context_device (w->ctx) != BLN_DEVICE_CPU ? PREFILL_CHUNK_GPU
                                                                  : PREFILL_CHUNK;
      guint k = MIN (n - common, chunk);

      if (g_atomic_int_get (&req->cancelled) || g_atomic_int_get (&w->quitting))
        {
          *cancelled = TRUE;
          return TRUE;
        }
      if (sampler != NULL && common + k == n)
        {
          if (!bln_context_eval_sample (w->ctx, ids + common, (int) k, sampler, next, top,
                                        req->n_top, error))
            return FALSE;
        }
      else if (!bln_context_eval (w->ctx, ids + common, (int) k, w->logits, FALSE, error))
        return FALSE;
      g_array_append_vals (w->cached, ids + common, k);
      common += k;
    }
  return TRUE;
}

static void
run_request (BlnEngineWorker *w, BlnGenRequest *req)
{
  BlnTokenizer *tok = bln_model_tokenizer (w->model);
  g_autoptr (BlnDetok) dt = bln_detok_new (tok);
  g_autoptr (BlnSampler) sampler = NULL;
  g_autoptr (GString) text = g_string_new (NULL);  /* generated, not yet posted */
  g_autoptr (GString) tail = g_string_new (NULL);  /* JSON mode: the shortest ending */
  BlnGenUsage usage = { 0 };
  BlnFinish finish = BLN_FINISH_LENGTH;
  GError *error = NULL;
  gboolean cancelled = FALSE, stopped = FALSE;
  BlnJsonConstraint jc;
  BlnGenToken gt;
  int n_vocab = bln_model_hparams (w->model)->n_vocab;
  guint i;
  /* on the GPU, unconstrained requests sample there: each step brings back
   * the next id (and its logprobs), not the logits */
  gboolean on_dev = bln_context_device (w->ctx) != BLN_DEVICE_CPU && !req->json;
  BlnLogprob dev_top[BLN_GEN_MAX_TOP_LOGPROBS + 1];
  int32_t next = -1;

  usage.prompt_tokens = (int) req->prompt->len;
  if (req->prompt->len == 0 || (int) req->prompt->len >= bln_context_n_ctx (w->ctx))
    {
      g_set_error (&error, BLN_ERROR, BLN_ERROR_INVALID,
                   "the prompt (%u tokens) does not fit the context (%d tokens)",
                   req->prompt->len, bln_context_n_ctx (w->ctx));
      post_done (req, BLN_FINISH_ERROR, &usage, error);
      return;
    }
  sampler = bln_sampler_new (&req->params, n_vocab);
  /* the penalties see the prompt as history, as OpenAI's do */
  for (i = 0; i < req->prompt->len; i++)
    bln_sampler_accept (sampler, g_array_index (req->prompt, int32_t, i));
  if (!prefill (w, req, on_dev ? sampler : NULL, &next, dev_top, &usage.cached_tokens,
                &cancelled, &error))
    {
      post_done (req, BLN_FINISH_ERROR, &usage, error);
      return;
    }
  if (cancelled)
    {
      post_done (req, BLN_FINISH_CANCELLED, &usage, NULL);
      return;
    }
  if (req->json)
    json_init (req, &jc);

  while (usage.completion_tokens < req->max_tokens)
    {
      int32_t id;
      gsize hold;
      gssize at;

      if (g_atomic_int_get (&req->cancelled) || g_atomic_int_get (&w->quitting))
        {
          cancelled = TRUE;
          break;
        }
      if (req->json)
        {
          int left = MIN (req->max_tokens - usage.completion_tokens,
                          bln_context_n_ctx (w->ctx) - bln_context_n_past (w->ctx));
          gboolean ok;

          g_string_truncate (tail, 0);
          bln_json_constraint_closing (&jc, tail);
          /* the ending no longer fits (a prompt near the context's end):
           * spell it out; otherwise keep it within reach */
          ok = (int) tail->len >= left ? mask_to_tail (tok, tail, w->logits, n_vocab)
                                       : mask_json (tok, &jc, left, w->logits, n_vocab);
          if (!ok)
            break;   /* no token can continue: report it as a length stop */
        }
      if (on_dev)
        {
          id = next;
          if (req->on_tokens != NULL)
            {
              gt.id = id;
              gt.logprob = dev_top[0].logprob;
              gt.n_top = req->n_top;
              memcpy (gt.top, dev_top + 1, sizeof (BlnLogprob) * req->n_top);
            }
        }
      else if (req->on_tokens != NULL)
        {
          BlnLogprob top[BLN_GEN_MAX_TOP_LOGPROBS + 1];

          id = bln_sampler_sample (sampler, w->logits, top, req->n_top);
          gt.id = id;
          gt.logprob = top[0].logprob;
          gt.n_top = req->n_top;
          memcpy (gt.top, top + 1, sizeof (BlnLogprob) * req->n_top);
        }
      else
        id = bln_sampler_sample (sampler, w->logits, NULL, 0);
      bln_sampler_accept (sampler, id);
      if (bln_tokenizer_is_eog (tok, id))
        {
          finish = BLN_FINISH_STOP;
          break;
        }
      usage.completion_tokens++;
      if (req->on_tokens != NULL)
        post_token (req, &gt);
      if (req->json)
        {
          gsize blen = 0;
          const char *b = bln_tokenizer_token_bytes (tok, id, &blen);

          bln_json_constraint_feed (&jc, b, blen);
          if (bln_json_constraint_complete (&jc))
            {
              g_autofree char *rest = NULL;

              bln_detok_push_append (dt, id, text);
              rest = bln_detok_flush (dt);
              g_string_append (text, rest);
              finish = BLN_FINISH_STOP;
              stopped = TRUE;
              break;
            }
        }
      bln_detok_push_append (dt, id, text);
      at = stop_find (req->stops, text->str, text->len);
      if (at >= 0)
        {
          g_string_truncate (text, (gsize) at);
          finish = BLN_FINISH_STOP;
          stopped = TRUE;
          break;
        }
      hold = stop_holdback (req->stops, text->str, text->len);
      post_text (req, text->str, text->len - hold);
      g_string_erase (text, 0, (gssize) (text->len - hold));
      if (usage.completion_tokens >= req->max_tokens
          || bln_context_n_past (w->ctx) >= bln_context_n_ctx (w->ctx))
        break;   /* finish stays LENGTH; the last token is not evaluated */
      if (on_dev ? !bln_context_eval_sample (w->ctx, &id, 1, sampler, &next,
                                             req->on_tokens != NULL ? dev_top : NULL,
                                             req->n_top, &error)
                 : !bln_context_eval (w->ctx, &id, 1, w->logits, FALSE, &error))
        {
          post_text (req, text->str, text->len);
          post_done (req, BLN_FINISH_ERROR, &usage, error);
          return;
        }
      g_array_append_val (w->cached, id);
    }

  if (!stopped && !cancelled)
    {
      g_autofree char *rest = bln_detok_flush (dt);
      gssize at;

      g_string_append (text, rest);
      at = stop_find (req->stops, text->str, text->len);
      if (at >= 0)
        {
          g_string_truncate (text, (gsize) at);
          finish = BLN_FINISH_STOP;
        }
    }
  if (!cancelled)
    post_text (req, text->str, text->len);
  post_done (req, cancelled ? BLN_FINISH_CANCELLED : finish, &usage, NULL);
}

static gpointer
worker_main (gpointer data)
{
  BlnEngineWorker *w = data;
  GError *ctx_error = NULL;

  for (;;)
    {
      gpointer item = g_async_queue_pop (w->queue);
      BlnGenRequest *req;

      if (item == (gpointer) w)
        break;
      req = item;
      g_mutex_lock (&w->lock);
      w->running = req;
      g_mutex_unlock (&w->lock);
      if (w->ctx == NULL && ctx_error == NULL)
        {
          /* CPU JSON requests: a context of their own, on a pool of their own */
          w->fifo_pool = bln_pool_new (w->n_threads, &ctx_error);
          if (w->fifo_pool != NULL)
            w->ctx = bln_context_new (w->model, w->n_ctx, w->fifo_pool, &ctx_error);
        }
      if (g_atomic_int_get (&req->cancelled) || g_atomic_int_get (&w->quitting))
        {
          BlnGenUsage usage = { .prompt_tokens = (int) req->prompt->len };
          post_done (req, BLN_FINISH_CANCELLED, &usage, NULL);
        }
      else if (w->ctx == NULL)
        {
          BlnGenUsage usage = { .prompt_tokens = (int) req->prompt->len };
          post_done (req, BLN_FINISH_ERROR, &usage, g_error_copy (ctx_error));
        }
      else
        run_request (w, req);
      g_mutex_lock (&w->lock);
      w->running = NULL;
      g_mutex_unlock (&w->lock);
      bln_gen_request_unref (req);
    }
  g_clear_error (&ctx_error);
  return NULL;
}

/* ---------------------------------------------------------------------- */
/* public                                                                  */

static GMutex defaults_lock;
static BlnEngineWorkerOptions defaults;
static char *defaults_device;

void
bln_engine_worker_options_init (BlnEngineWorkerOptions *opts)
{
  memset (opts, 0, sizeof *opts);
}

void
bln_engine_worker_set_defaults (const BlnEngineWorkerOptions *opts)
{
  g_mutex_lock (&defaults_lock);
  g_clear_pointer (&defaults_device, g_free);
  if (opts != NULL)
    {
      defaults = *opts;
      defaults_device = g_strdup (opts->device);
      defaults.device = defaults_device;
    }
  else
    bln_engine_worker_options_init (&defaults);
  g_mutex_unlock (&defaults_lock);
}

/* Starts the single-context thread if it is not running. */
static void
ensure_thread (BlnEngineWorker *w)
{
  g_mutex_lock (&w->lock);
  if (!w->started)
    {
      w->started = TRUE;
      w->thread = g_thread_new ("baleen-engine", worker_main, w);
    }
  g_mutex_unlock (&w->lock);
}

/* The continuous-batching scheduler for @o, its KV pool on @device (NULL:
 * the CPU). Without --kv-mem the pool has room for every sequence at full
 * length: within 64 MiB .. 2 GiB on the CPU, 64 MiB .. 16 GiB on the GPU
 * (F16 rows there by default: half the bytes a block). */
static BlnSched *
make_sched (BlnModel *model, BlnPool *pool, const BlnEngineWorkerOptions *o,
            const BlnContextOptions *device, GError **error)
{
  BlnSchedOptions so;
  int n_ctx, max_seqs = o->parallel > 0 ? o->parallel : 32;
  gboolean gpu = device != NULL && device->device != BLN_DEVICE_CPU;

  n_ctx = o->n_ctx > 0 ? o->n_ctx : MIN (bln_model_hparams (model)->n_ctx_train, 8192);
  if (n_ctx <= 0)
    n_ctx = 8192;
  bln_sched_options_init (&so);
  so.n_ctx = n_ctx;
  so.max_seqs = max_seqs;
  so.max_queue = o->max_queue;
  so.device = gpu ? device : NULL;
  so.kv_bits = gpu ? 0 : o->kv_bits;
  if (o->kv_mem_mib > 0)
    so.kv_bytes = (size_t) o->kv_mem_mib << 20;
  else
    {
      size_t per_block = bln_kv_cache_block_bytes_for (model, BLN_KV_BLOCK_SIZE_DEFAULT);
      guint64 want;

      if (!gpu && o->kv_bits == 8
          && bln_kv_cache_block_bytes_for_bits (model, BLN_KV_BLOCK_SIZE_DEFAULT, 8) > 0)
        per_block = bln_kv_cache_block_bytes_for_bits (model, BLN_KV_BLOCK_SIZE_DEFAULT, 8);

      if (gpu && device->kv_bits == 16)
        per_block /= 2;
      want = (guint64) per_block * (guint64) ((n_ctx + BLN_KV_BLOCK_SIZE_DEFAULT - 1)
                                              / BLN_KV_BLOCK_SIZE_DEFAULT + 1)
             * (guint64) max_seqs;
      so.kv_bytes = (size_t) CLAMP (want, (guint64) 64 << 20,
                                    (guint64) (gpu ? 16384 : 2048) << 20);
    }
  so.no_prefix_cache = o->no_prefix_cache;
  so.prefix_bytes = o->prefix_mib > 0 ? (size_t) o->prefix_mib << 20 : 0;
  so.session_ttl_s = MAX (o->session_ttl_s, 0);
  so.sliding_window = o->sliding_window;
  return bln_sched_new (model, pool, &so, error);
}

BlnEngineWorker *
bln_engine_worker_new_with_options (const char *path, const BlnEngineWorkerOptions *opts,
                                    GError **error)
{
  g_autoptr (BlnModel) model = NULL;
  g_autofree char *note = NULL;
  BlnEngineWorkerOptions o;
  BlnContextOptions copts;
  BlnPool *pool = NULL;
  BlnContext *ctx = NULL;
  BlnSched *sched = NULL;
  BlnEngineWorker *w;
  gboolean sched_gpu = FALSE;

  if (opts != NULL)
    o = *opts;
  else
    bln_engine_worker_options_init (&o);
  if (o.n_threads < 0 || o.n_ctx < 0 || o.parallel < 0 || o.kv_mem_mib < 0 || o.max_queue < 0
      || o.prefix_mib < 0 || o.sliding_window < 0
      || (o.kv_bits != 0 && o.kv_bits != 8 && o.kv_bits != 32))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "engine worker option out of range (negative, or KV bits not 8 or 32)");
      return NULL;
    }
  bln_context_options_init (&copts);
  if (!bln_device_parse (o.device != NULL ? o.device : "cpu", &copts, error))
    return NULL;
  copts.sliding_window = o.sliding_window;
  model = bln_model_load (path, error);
  if (model == NULL)
    return NULL;
  if (bln_model_tokenizer (model) == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "the model %s has no tokenizer",
                   path);
      return NULL;
    }
  if (o.kv_bits == 8 && bln_kv_cache_block_bytes_for_bits (model, 0, 8) == 0)
    {
      /* deepseek2's MLA latent (or an odd head dim): F32 rows, said once */
      g_printerr ("baleen-server: the 8-bit KV cache takes llama and qwen2 models only; "
                  "F32 rows for %s\n", path);
      o.kv_bits = 0;
    }
  pool = bln_pool_new (o.n_threads, error);
  if (pool == NULL)
    return NULL;
  /* the GPU: continuous batching over a paged KV pool on the device, unless
   * --parallel 1 or BALEEN_GPU_SINGLE_CONTEXT=1 asks for the
   * one-sequence-at-a-time path (CUDA graphs and sampling on the GPU: the
   * faster one for a single stream), or the architecture has no batched GPU
   * path yet (then that path, too) */
  if (copts.device != BLN_DEVICE_CPU && o.parallel != 1
      && g_strcmp0 (g_getenv ("BALEEN_GPU_SINGLE_CONTEXT"), "1") != 0)
    {
      GError *local = NULL;

      sched = make_sched (model, pool, &o, &copts, &local);
      if (sched != NULL)
        sched_gpu = TRUE;
      else if (g_error_matches (local, BLN_ERROR, BLN_ERROR_UNSUPPORTED)
               || g_error_matches (local, BLN_ERROR, BLN_ERROR_BACKEND))
        {
          /* no GPU at all: the single-context path below says so and falls
           * back to the CPU */
          if (local->code == BLN_ERROR_UNSUPPORTED)
            g_printerr ("baleen-server: no batched decoding on the GPU (%s); one sequence at "
                        "a time instead\n", local->message);
          g_clear_error (&local);
        }
      else
        {
          g_propagate_error (error, local);
          bln_pool_free (pool);
          return NULL;
        }
    }
  if (sched == NULL && copts.device != BLN_DEVICE_CPU)
    {
      ctx = bln_context_new_on_device (model, o.n_ctx, pool, &copts, &note, error);
      if (ctx == NULL)
        {
          bln_pool_free (pool);
          return NULL;
        }
      if (note != NULL)
        g_printerr ("baleen-server: %s\n", note);
      if (bln_context_device (ctx) == BLN_DEVICE_CPU)
        g_clear_pointer (&ctx, bln_context_free);   /* fell back: batch on the CPU */
    }
  if (sched == NULL && ctx == NULL)
    {
      sched = make_sched (model, pool, &o, NULL, error);
      if (sched == NULL)
        {
          bln_pool_free (pool);
          return NULL;
        }
    }
  w = g_new0 (BlnEngineWorker, 1);
  w->model = g_steal_pointer (&model);
  w->pool = pool;
  w->sched = sched;
  w->ctx = ctx;
  w->n_threads = o.n_threads;
  w->kv_block_scale = sched_gpu && copts.kv_bits == 16 ? 0.5 : 1.0;
  if (!sched_gpu && sched != NULL && o.kv_bits == 8)
    w->kv_block_scale = (double) bln_kv_cache_block_bytes_for_bits (w->model,
                                                                   BLN_KV_BLOCK_SIZE_DEFAULT, 8)
                        / bln_kv_cache_block_bytes_for (w->model, BLN_KV_BLOCK_SIZE_DEFAULT);
  w->n_ctx = sched != NULL ? bln_sched_n_ctx (sched) : bln_context_n_ctx (ctx);
  w->cached = g_array_new (FALSE, FALSE, sizeof (int32_t));
  w->logits = g_new (float, bln_model_hparams (w->model)->n_vocab);
  w->queue = g_async_queue_new ();
  g_mutex_init (&w->lock);
  if (sched != NULL)
    {
      BlnSchedStats st;

      bln_sched_get_stats (sched, &st);
      g_printerr ("baleen-server: engine: continuous batching on the %s: %d sequences at once, "
                  "%d tokens each, KV pool %d blocks of %d (%.0f MiB%s)\n",
                  sched_gpu ? "GPU" : "CPU", st.max_seqs, w->n_ctx, st.blocks_total,
                  st.block_size,
                  (double) bln_kv_cache_block_bytes_for (w->model, st.block_size)
                    * w->kv_block_scale * st.blocks_total / (1 << 20),
                  !sched_gpu && o.kv_bits == 8 ? ", 8-bit rows" : "");
    }
  else
    {
      g_printerr ("baleen-server: engine: one sequence at a time (FIFO) on the GPU, "
                  "%d tokens\n", w->n_ctx);
      ensure_thread (w);
    }
  return w;
}

BlnEngineWorker *
bln_engine_worker_new (const char *path, int n_threads, int n_ctx, GError **error)
{
  BlnEngineWorkerOptions o;
  g_autofree char *device = NULL;

  g_mutex_lock (&defaults_lock);
  o = defaults;
  device = g_strdup (defaults.device);
  g_mutex_unlock (&defaults_lock);
  o.device = device;
  o.n_threads = n_threads;
  o.n_ctx = n_ctx;
  return bln_engine_worker_new_with_options (path, &o, error);
}

void
bln_engine_worker_free (BlnEngineWorker *w)
{
  gpointer item;

  if (w == NULL)
    return;
  g_atomic_int_set (&w->quitting, 1);
  /* ends every scheduled request as CANCELLED; sched_on_end clears their
   * pointers to the scheduler */
  g_clear_pointer (&w->sched, bln_sched_free);
  g_mutex_lock (&w->lock);
  if (w->running != NULL)
    bln_gen_request_cancel (w->running);
  g_mutex_unlock (&w->lock);
  if (w->started)
    {
      g_async_queue_push (w->queue, w);
      g_thread_join (w->thread);
    }
  /* anything queued after the sentinel */
  while ((item = g_async_queue_try_pop (w->queue)) != NULL)
    if (item != (gpointer) w)
      {
        post_done (item, BLN_FINISH_CANCELLED, NULL, NULL);
        bln_gen_request_unref (item);
      }
  g_async_queue_unref (w->queue);
  g_mutex_clear (&w->lock);
  g_clear_pointer (&w->ctx, bln_context_free);
  g_clear_pointer (&w->fifo_pool, bln_pool_free);
  bln_pool_free (w->pool);
  bln_model_free (w->model);
  g_array_unref (w->cached);
  g_free (w->logits);
  g_free (w);
}

BlnModel *
bln_engine_worker_model (BlnEngineWorker *w)
{
  return w->model;
}

int
bln_engine_worker_n_ctx (BlnEngineWorker *w)
{
  return w->n_ctx;
}

int
bln_engine_worker_queue_length (BlnEngineWorker *w)
{
  int n = MAX (g_async_queue_length (w->queue), 0);

  if (w->sched != NULL)
    {
      BlnSchedStats st;

      bln_sched_get_stats (w->sched, &st);
      n += st.waiting;
    }
  return n;
}

void
bln_engine_worker_get_stats (BlnEngineWorker *w, BlnEngineWorkerStats *stats)
{
  gboolean busy;

  memset (stats, 0, sizeof *stats);
  g_mutex_lock (&w->lock);
  busy = w->running != NULL;
  g_mutex_unlock (&w->lock);
  stats->running = busy ? 1 : 0;
  stats->waiting = MAX (g_async_queue_length (w->queue), 0);
  stats->max_seqs = 1;
  if (w->sched != NULL)
    {
      BlnSchedStats st;

      bln_sched_get_stats (w->sched, &st);
      stats->batching = TRUE;
      stats->running += st.running;
      stats->waiting += st.waiting;
      stats->max_seqs = st.max_seqs;
      stats->kv_blocks_total = st.blocks_total;
      stats->kv_blocks_used = st.blocks_used;
      stats->kv_blocks_cached = st.blocks_cached;
      stats->kv_block_size = st.block_size;
      stats->prefix_hit_rate = st.prefix_hit_rate;
      stats->preemptions = st.preemptions;
      stats->kv_bytes = (size_t) (st.blocks_total * w->kv_block_scale
                                  * bln_kv_cache_block_bytes_for (w->model, st.block_size));
      stats->prefix_lookup_tokens = st.lookup_tokens;
      stats->prefix_hit_tokens = st.hit_tokens;
      stats->cache_clears = st.cache_clears;
      stats->cleared_blocks = st.cleared_blocks;
      stats->sliding_window = st.sliding_window;
      stats->compact_draws = st.compact_draws;
      stats->compact_fallbacks = st.compact_fallbacks;
    }
}

gboolean
bln_engine_worker_request_clear_cache (BlnEngineWorker *w, GError **error)
{
  g_return_val_if_fail (w != NULL, FALSE);

  if (w->sched == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "the GPU path keeps no shared prefix cache to clear");
      return FALSE;
    }
  bln_sched_request_drop_cached (w->sched);
  return TRUE;
}

/* Asks the CPU scheduler's thread to drop every cached prefix block of the
 * KV pool between two steps (bln_sched_request_drop_cached(); blocks of
 * running requests are untouched) and returns at once: the statistics'
 * cache_clears grows by one, and cleared_blocks by the blocks freed, when it
 * is done (within one step). Fails with BLN_ERROR_UNSUPPORTED on the GPU
 * path, which keeps no block pool. Any thread. */
gboolean bln_engine_worker_request_clear_cache (BlnEngineWorker *worker, GError **error);

gboolean
bln_engine_worker_submit (BlnEngineWorker *w, BlnGenRequest *req, GError **error)
{
  if (g_atomic_int_get (&w->quitting))
    {
      g_set_error (error, BLN_SCHED_ERROR, BLN_SCHED_ERROR_STOPPED, "the engine is stopping");
      return FALSE;
    }
  if (req->prompt->len == 0 || (int) req->prompt->len >= w->n_ctx)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "the prompt (%u tokens) does not fit the context (%d tokens)",
                   req->prompt->len, w->n_ctx);
      return FALSE;
    }
  if (w->sched != NULL)
    return sched_submit (w, req, error);
  ensure_thread (w);
  g_async_queue_push (w->queue, bln_gen_request_ref (req));
  return TRUE;
}
