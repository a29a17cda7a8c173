/* scheduler.h — continuous batching: many generation requests share one model,
 * one paged KV cache (kv-cache.h) and one thread.
 *
 * A BlnSched owns a thread that runs steps. Each step builds one batch for
 * bln_kv_eval() under a token budget (@step_tokens):
 *   1. the decode token of every running sequence that is generating, oldest
 *      request first;
 *   2. the next prompt chunk of running sequences still in their prompt;
 *   3. new requests from the waiting queue, in arrival order (FIFO), while
 *      fewer than @max_seqs run and budget remains: each first takes the
 *      longest cached prefix of its prompt (full blocks of earlier sequences
 *      with the same leading tokens, see kv-cache.h), then a chunk of the rest
 *      (chunked prefill: a long prompt spreads over several steps and never
 *      stalls the decodes of the others).
 * After the pass, every sequence whose chunk reached its last token samples
 * its next token with its own sampler and reports it through its callback.
 *
 * Preemption by recompute. Blocks are reserved before the pass. When the
 * pool has none left, the newest running sequence is preempted: its blocks
 * are released (the full ones stay cached, so its recompute often finds them
 * again) and it goes back to the head of the waiting queue, keeping its
 * prompt, the tokens generated so far and its sampler state, so its output
 * is the same as if it had never been interrupted. Older sequences therefore
 * always make progress (FIFO fairness).
 *
 * Cancellation. bln_sched_cancel() marks a request; at the start of the next
 * step it leaves the queue or the batch, its blocks are released and its end
 * callback runs with BLN_SCHED_FINISH_CANCELLED.
 *
 * Overload. The waiting queue is bounded (@max_queue): bln_sched_submit()
 * then fails at once with BLN_SCHED_ERROR_QUEUE_FULL, which a server answers
 * with 429 or 503 and a Retry-After header; nothing blocks.
 *
 * Threads and callbacks. Submit, cancel and stats may be called from any
 * thread. The callbacks run on the scheduler's thread, without its lock held
 * (they may call submit, cancel and stats), and must return quickly: post
 * the data to another thread's main context and return. For one request the
 * token callbacks come in order and the end callback comes exactly once,
 * last.
 *
 * Device: the batched pass runs on the CPU backend (engine/cpu/).
 *
 * (This header is not called sched.h: with -Iengine that name would shadow
 * the C library's <sched.h>, which <pthread.h> includes.)
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include "kv-cache.h"
#include "model.h"
#include "sampler.h"

G_BEGIN_DECLS

#define BLN_SCHED_ERROR (bln_sched_error_quark ())

typedef enum {
  BLN_SCHED_ERROR_QUEUE_FULL,  /* the waiting queue holds max_queue requests: retry later */
  BLN_SCHED_ERROR_STOPPED,     /* the scheduler is shutting down */
} BlnSchedErrorCode;

GQuark bln_sched_error_quark (void);

typedef struct {
  size_t kv_bytes;     /* KV pool budget in bytes (0: 512 MiB) */
  int block_size;      /* positions per KV block (0: 16) */
  int max_seqs;        /* sequences running at once (0: 32) */
  int step_tokens;     /* tokens per step, decodes and prompt chunks (0: 512; at least max_seqs) */
  int max_queue;       /* requests waiting at most (0: 256) */
  int n_ctx;           /* tokens per sequence, prompt + generated (0: the model's
                        * training context, capped at 8192) */
  gboolean no_prefix_cache;  /* TRUE: no prefix reuse (kv-cache.h) */
  size_t prefix_bytes; /* cached prefix blocks kept at most, in bytes of blocks (0: no
                        * bound but the pool; at least one block when set) */
  const BlnContextOptions *device;  /* where the KV pool lives and the batched forward pass
                                     * runs (NULL: the CPU); borrowed during bln_sched_new()
                                     * only; see bln_kv_cache_new_with_options() */
  int kv_bits;         /* CPU pool (device NULL or the CPU): 8 for the 8-bit KV cache
                        * (kv-cache.h; llama / qwen2), 0 or 32 for F32 rows; a GPU pool
                        * follows device->kv_bits instead */
  int session_ttl_s;   /* cached prefix blocks unused for this many seconds are freed,
                        * checked between steps and when idle (0: never; kv-cache.h) */
  int sliding_window;  /* attention window in tokens (0: off): each position attends to the
                        * last this many, and a sequence gives back the KV blocks wholly
                        * before its window (bln_kv_cache_set_sliding_window(); llama /
                        * qwen2, CPU or GPU pool: bln_sched_new() fails otherwise) */
  BlnKvClockFn clock;  /* the TTL's clock (NULL: monotonic); for tests */
  gpointer clock_data;
} BlnSchedOptions;

/* Fills @opts with zeros, meaning the defaults above. */
void bln_sched_options_init (BlnSchedOptions *opts);

typedef struct _BlnSched BlnSched;

typedef enum {
  BLN_SCHED_FINISH_STOP,       /* an end-of-generation token, or the token callback said stop */
  BLN_SCHED_FINISH_LENGTH,     /* max_tokens generated, or n_ctx (or the whole pool) reached */
  BLN_SCHED_FINISH_CANCELLED,  /* bln_sched_cancel() or bln_sched_free() */
  BLN_SCHED_FINISH_ERROR,      /* the backend failed; see the result's error */
} BlnSchedFinish;

/* One sampled token, for the token callback (valid during the call only). */
typedef struct {
  int32_t id;
  float logprob;            /* of @id under the model's raw logits (the filtered ones
                             * for a request with a filter) */
  int index;                /* 0 for the first generated token */
  const BlnLogprob *top;    /* the n_top most likely tokens, most likely first; NULL when
                             * the request asked for none */
  int n_top;
} BlnSchedToken;

/* How a request ended, for the end callback (valid during the call only). */
typedef struct {
  BlnSchedFinish finish;
  int prompt_tokens;
  int cached_tokens;        /* prompt tokens taken from the prefix cache when the request
                             * was first admitted (what OpenAI reports as cached_tokens) */
  int completion_tokens;    /* tokens passed to the token callback (an end-of-generation
                             * token is not passed nor counted) */
  int preemptions;          /* times the request was preempted and recomputed */
  const GError *error;      /* for BLN_SCHED_FINISH_ERROR, else NULL */
} BlnSchedResult;

/* Called with each generated token; return FALSE to end the request now
 * (finish STOP, e.g. when the caller saw a stop string). */
typedef gboolean (*BlnSchedTokenFn) (const BlnSchedToken *token, gpointer user_data);
/* Called once when the request ends, whatever the reason. */
typedef void (*BlnSchedEndFn) (const BlnSchedResult *result, gpointer user_data);
/* Called before each token of a request is sampled (constrained decoding:
 * JSON mode, schemas), with the request's row of logits (@n_vocab floats,
 * writable, valid during the call only): set the logit of every token that
 * must not come next to -INFINITY. @left is how many tokens the request may
 * still generate (max_tokens and n_ctx both counted), so that a constraint
 * can steer towards an ending that fits. Return FALSE when no token may
 * come: the request then ends with BLN_SCHED_FINISH_LENGTH. */
typedef gboolean (*BlnSchedFilterFn) (float *logits, int n_vocab, int left, gpointer user_data);

/* Statistics for /metrics: a consistent snapshot taken after the last step. */
typedef struct {
  int waiting;              /* requests in the queue (preempted ones included) */
  int running;              /* sequences admitted, in prompt or generating */
  int max_seqs;
  int blocks_total;
  int blocks_used;          /* referenced by running sequences */
  int blocks_cached;        /* unreferenced prefixes kept for reuse (evictable) */
  int blocks_free;
  int block_size;
  int sliding_window;       /* the attention window in tokens (0: off) */
  guint64 prompt_tokens;    /* prompt tokens of admitted requests (first admission) */
  guint64 cached_tokens;    /* of those, taken from the prefix cache */
  guint64 lookup_tokens;    /* tokens looked up in the prefix cache (recomputes included) */
  guint64 hit_tokens;       /* of those, found */
  double prefix_hit_rate;   /* hit_tokens / lookup_tokens (0 before any lookup) */
  guint64 computed_tokens;  /* tokens run through the model */
  guint64 generated_tokens; /* tokens sampled */
  guint64 steps;
  guint64 preemptions;
  guint64 evictions;        /* cached blocks evicted for room */
  guint64 finished;         /* requests ended, whatever the reason */
  guint64 cache_clears;     /* drops of the cached blocks done (bln_sched_drop_cached()) */
  guint64 cleared_blocks;   /* blocks those drops freed, in all */
  guint64 expired_blocks;   /* cached blocks freed by the session TTL, in all */
  guint64 compact_draws;    /* GPU draws that asked for a compact record
                             * (docs/GPU-SAMPLING.md) */
  guint64 compact_fallbacks; /* of those, the ones that fetched the full row */
} BlnSchedStats;

/* Makes a KV pool for @model from @opts (NULL: defaults) and starts the
 * scheduler's thread, which runs the model on @pool (borrowed; the model and
 * the pool must outlive the scheduler, and nothing else may use the pool
 * meanwhile). Fails as bln_kv_cache_new() does (BLN_ERROR_NOMEM for a budget
 * below two blocks or an allocation that fails, BLN_ERROR_INVALID for a bad
 * option). */
BlnSched *bln_sched_new (BlnModel *model, BlnPool *pool, const BlnSchedOptions *opts,
                         GError **error);

/* Cancels every request (their end callbacks run, on the scheduler's
 * thread, before this returns), stops and joins the thread and frees the
 * pool. NULL is ignored. */
void bln_sched_free (BlnSched *sched);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnSched, bln_sched_free)

/* Queues a request: @prompt (@n_prompt ids, copied), sampled with @params
 * (copied; NULL: greedy), at most @max_tokens (> 0) new tokens, with the
 * @n_top (0..20) most likely alternatives reported for each. The penalties
 * see the prompt as history. Returns a handle (> 0) for bln_sched_cancel(),
 * after which @on_end (required) is called exactly once. Returns 0 with
 * @error set, and calls nothing, when: the queue is full
 * (BLN_SCHED_ERROR_QUEUE_FULL) or the scheduler is stopping
 * (BLN_SCHED_ERROR_STOPPED); the prompt is empty, holds an id outside the
 * vocabulary, leaves no room for a token in n_ctx or cannot fit in the
 * whole KV pool, or an argument is out of range (BLN_ERROR_INVALID). */
guint64 bln_sched_submit (BlnSched *sched, const int32_t *prompt, int n_prompt,
                          const BlnSamplerParams *params, int max_tokens, int n_top,
                          BlnSchedTokenFn on_token, BlnSchedEndFn on_end, gpointer user_data,
                          GError **error);

/* bln_sched_submit() with a logits filter (@filter, may be NULL) called on
 * the scheduler's thread before each of the request's tokens is sampled;
 * the sampler, the reported logprob and top alternatives then see the
 * filtered logits. A filtered request runs in the batch like any other.
 * Fails as bln_sched_submit() does. */
guint64 bln_sched_submit_filtered (BlnSched *sched, const int32_t *prompt, int n_prompt,
                                   const BlnSamplerParams *params, int max_tokens, int n_top,
                                   BlnSchedFilterFn filter, BlnSchedTokenFn on_token,
                                   BlnSchedEndFn on_end, gpointer user_data, GError **error);

/* Asks request @handle to end; it does at the start of the next step
 * (BLN_SCHED_FINISH_CANCELLED, unless it ended first). Returns FALSE when
 * the handle is unknown or has already ended. Any thread. */
gboolean bln_sched_cancel (BlnSched *sched, guint64 handle);

/* Copies the statistics. Any thread. */
void bln_sched_get_stats (BlnSched *sched, BlnSchedStats *stats);

/* The per-sequence token limit in use (prompt + generated). */
int bln_sched_n_ctx (BlnSched *sched);

/* Has the scheduler's thread drop every cached (unreferenced) prefix block
 * between two steps (bln_kv_cache_drop_cached()) and waits for it; blocks
 * of running sequences are untouched. Returns the number of blocks freed
 * (0 when the scheduler is stopping). The statistics show the result when
 * it returns. Any thread but the scheduler's own (not from a callback). */
int bln_sched_drop_cached (BlnSched *sched);

/* Has the scheduler's thread free the cached blocks whose session TTL has
 * run out now (it also does so on its own between steps and when idle) and
 * waits for it. Returns the number freed by that check, 0 when the scheduler
 * is stopping or has no TTL. Any thread but the scheduler's own. */
int bln_sched_expire_cached (BlnSched *sched);

/* The same drop, without waiting: returns at once; the statistics'
 * cache_clears grows by one (and cleared_blocks by the blocks freed) when it
 * is done, before the next step. Several requests made before the thread
 * gets to them are served by one drop. Any thread. */
void bln_sched_request_drop_cached (BlnSched *sched);

G_END_DECLS
