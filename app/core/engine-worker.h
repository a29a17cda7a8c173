/* engine-worker.h — runs the model for the server.
 *
 * A BlnEngineWorker owns a loaded model and a CPU thread pool, and runs
 * generation requests (BlnGenRequest) on one of two paths:
 *
 * - CPU (the default): the continuous-batching scheduler (engine/scheduler.h)
 *   over a paged KV cache with prefix sharing. Up to @parallel sequences are
 *   generated at once in one batched forward pass per step; more requests
 *   wait in a bounded queue (@max_queue), and a submit beyond it fails at
 *   once with BLN_SCHED_ERROR_QUEUE_FULL (the server answers 429). Requests
 *   constrained to JSON (bln_gen_request_set_json(), _set_json_schema()) run
 *   in the batch too: their logits are masked by a per-sequence filter
 *   (bln_sched_submit_filtered()) on the scheduler's thread.
 * - CUDA (--device cuda): ONE sequence context on the GPU, requests run one
 *   at a time FIFO, and the tokens of the last sequence stay cached so the
 *   next prompt reuses the longest common prefix.
 *
 * Threads (DESIGN.md §2): the worker never calls the HTTP layer. Text and the
 * end of a request are posted to the GMainContext given to
 * bln_gen_request_new() and the callbacks run there, in order; text produced
 * faster than the main loop dispatches it is coalesced into one call.
 * Cancellation is a flag checked before every token (and every prefill chunk
 * on the single-context path); on the scheduler the request's KV blocks are
 * released at the next step.
 */
#pragma once

#include <glib.h>
#include "model.h"
#include "sampler.h"
#include "scheduler.h"
#include "json-constraint.h"

G_BEGIN_DECLS

typedef struct _BlnEngineWorker BlnEngineWorker;
typedef struct _BlnGenRequest BlnGenRequest;

typedef enum {
  BLN_FINISH_STOP,       /* end-of-generation token or a stop string */
  BLN_FINISH_LENGTH,     /* max_tokens reached or the context is full */
  BLN_FINISH_CANCELLED,  /* bln_gen_request_cancel() or the worker shut down */
  BLN_FINISH_ERROR,      /* the engine failed; the error is passed along */
} BlnFinish;

typedef struct {
  int prompt_tokens;
  int completion_tokens;  /* sampled tokens, the end-of-generation token excluded */
  int cached_tokens;      /* prompt tokens reused from the previous sequence */
} BlnGenUsage;

/* Most alternatives a request may ask for per token (OpenAI's limit). */
#define BLN_GEN_MAX_TOP_LOGPROBS 20

/* One sampled token with its log-probability under the model (the raw
 * logits, or the masked ones in JSON mode) and the n_top most likely
 * alternatives, most likely first. */
typedef struct {
  int32_t id;
  float logprob;
  int n_top;
  BlnLogprob top[BLN_GEN_MAX_TOP_LOGPROBS];
} BlnGenToken;

/* Called on the request's main context with tokens sampled since the last
 * call, before the text they produced (see bln_gen_request_set_logprobs()). */
typedef void (*BlnGenTokensFn) (const BlnGenToken *tokens, guint n_tokens, gpointer user_data);

/* Called on the request's main context with a chunk of valid UTF-8 text. */
typedef void (*BlnGenTextFn) (const char *text, gpointer user_data);
/* Called once on the request's main context when the request ends, whatever
 * the reason; @error is set only for BLN_FINISH_ERROR. No text call follows. */
typedef void (*BlnGenDoneFn) (BlnFinish finish, const BlnGenUsage *usage, const GError *error,
                              gpointer user_data);

/* How a worker is built. Zero fields mean the defaults. */
typedef struct {
  int n_threads;       /* CPU threads (0: all cores) */
  int n_ctx;           /* tokens per sequence (0: the model's default, capped at 8192) */
  int parallel;        /* CPU: sequences generated at once (0: 32) */
  int kv_mem_mib;      /* CPU: KV pool in MiB (0: room for parallel × n_ctx tokens, at most
                        * 2048 MiB and at least 64 MiB) */
  int max_queue;       /* CPU: requests waiting at most (0: 256) */
  const char *device;  /* "cpu", "cuda", "cuda:N" or "auto" (NULL: "cpu") */
  gboolean no_prefix_cache;  /* CPU: no prefix reuse between requests */
  int prefix_mib;      /* CPU: cached prefix blocks kept at most, in MiB of the KV pool
                        * (0: no bound but the pool) */
  int kv_bits;         /* CPU KV pool: 8 (int8 rows with a scale per 32 values, about 28%
                        * of F32's bytes; llama / qwen2) or 0 / 32 (F32); the GPU keeps
                        * its own default */
  int session_ttl_s;   /* CPU / batched pool: cached prefix blocks unused for this many
                        * seconds are freed (0: never) */
  int sliding_window;  /* attention window in tokens, every layer (0: off; llama / qwen2
                        * on the CPU or the batched GPU path: on the single-context GPU
                        * path or for deepseek2 the worker is not made, with
                        * BLN_ERROR_INVALID / UNSUPPORTED naming the setting) */
} BlnEngineWorkerOptions;

/* Fills @opts with zeros (the defaults). */
void bln_engine_worker_options_init (BlnEngineWorkerOptions *opts);

/* Sets the process-wide options bln_engine_worker_new() uses for everything
 * but n_threads and n_ctx (copied; NULL restores the defaults). The server
 * calls it once, before any worker is made. */
void bln_engine_worker_set_defaults (const BlnEngineWorkerOptions *opts);

/* Loads the model at @path and starts the path @opts selects (see above):
 * on the CPU a pool of n_threads and a scheduler; on a GPU a context there
 * (when the GPU cannot be used the worker falls back to the CPU scheduler and
 * says so on stderr). The path used is logged on stderr. Returns NULL with
 * @error set when any of that fails (nothing is left running then): the
 * model's errors, BLN_ERROR_INVALID for a bad device name or option,
 * BLN_ERROR_NOMEM when the KV pool cannot be allocated. The model must have
 * a tokenizer (else BLN_ERROR_UNSUPPORTED). */
BlnEngineWorker *bln_engine_worker_new_with_options (const char *path,
                                                     const BlnEngineWorkerOptions *opts,
                                                     GError **error);

/* bln_engine_worker_new_with_options() with @n_threads and @n_ctx and the
 * process-wide defaults (bln_engine_worker_set_defaults()) for the rest. */
BlnEngineWorker *bln_engine_worker_new (const char *path, int n_threads, int n_ctx,
                                        GError **error);

/* Cancels the running and queued requests (their done callbacks are still
 * posted: iterate their main contexts afterwards to deliver them), stops and
 * joins the thread and frees everything. NULL is ignored. */
void bln_engine_worker_free (BlnEngineWorker *worker);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnEngineWorker, bln_engine_worker_free)

/* The model, owned by the worker; immutable, so the main thread may use it
 * (and its tokenizer and chat template) while the worker runs. */
BlnModel *bln_engine_worker_model (BlnEngineWorker *worker);
/* The context size in tokens (per sequence). */
int bln_engine_worker_n_ctx (BlnEngineWorker *worker);
/* Requests waiting in the queue (not counting running ones). */
int bln_engine_worker_queue_length (BlnEngineWorker *worker);

/* A snapshot for /metrics. On the single-context path the KV fields are 0. */
typedef struct {
  gboolean batching;        /* the CPU scheduler is in use */
  int running;              /* requests generating or in their prompt */
  int waiting;              /* requests queued */
  int max_seqs;             /* sequences at once (1 on the single-context path) */
  int kv_blocks_total;
  int kv_blocks_used;       /* referenced by running sequences */
  int kv_blocks_cached;     /* unreferenced prefixes kept for reuse */
  int kv_block_size;        /* positions per block */
  double prefix_hit_rate;   /* prompt tokens found in the prefix cache / looked up */
  guint64 preemptions;
  size_t kv_bytes;          /* memory the KV pool takes */
  guint64 prefix_lookup_tokens;  /* prompt tokens looked up in the prefix cache */
  guint64 prefix_hit_tokens;     /* of those, found */
  guint64 cache_clears;     /* clears of the prefix cache done since the model was loaded */
  guint64 cleared_blocks;   /* blocks those clears freed, in all */
  int sliding_window;       /* the attention window in tokens the engine runs (0: off) */
  guint64 compact_draws;    /* GPU draws from a compact record (docs/GPU-SAMPLING.md) since
                             * the model was loaded; 0 on the CPU and the single-context path */
  guint64 compact_fallbacks; /* of those, the ones that fetched the full logits row */
} BlnEngineWorkerStats;

/* Fills @stats; any thread. */
void bln_engine_worker_get_stats (BlnEngineWorker *worker, BlnEngineWorkerStats *stats);

/* Asks the CPU scheduler's thread to drop every cached prefix block of the
 * KV pool between two steps (bln_sched_request_drop_cached(); blocks of
 * running requests are untouched) and returns at once: the statistics'
 * cache_clears grows by one, and cleared_blocks by the blocks freed, when it
 * is done (within one step); also for the pool on the GPU. Fails with
 * BLN_ERROR_UNSUPPORTED on the single-context GPU path, which keeps no block
 * pool. Any thread. */
gboolean bln_engine_worker_request_clear_cache (BlnEngineWorker *worker, GError **error);

/* A generation request for the token ids @prompt (copied; must not be empty)
 * with the sampler @params (copied), at most @max_tokens new tokens (> 0), and
 * @stops, a NULL-terminated list of stop strings (copied; may be NULL; empty
 * strings are ignored). Text never includes a stop string nor anything after
 * it. The callbacks run on @main_ctx (NULL: the global default context) with
 * @user_data. Returns a new reference. */
BlnGenRequest *bln_gen_request_new (GArray *prompt, const BlnSamplerParams *params,
                                    int max_tokens, const char *const *stops,
                                    GMainContext *main_ctx, BlnGenTextFn on_text,
                                    BlnGenDoneFn on_done, gpointer user_data);
BlnGenRequest *bln_gen_request_ref (BlnGenRequest *req);
void bln_gen_request_unref (BlnGenRequest *req);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnGenRequest, bln_gen_request_unref)

/* Asks for per-token log-probabilities: @on_tokens gets every sampled token
 * (the end-of-generation token excluded) with @n_top (0 to
 * BLN_GEN_MAX_TOP_LOGPROBS, clamped) alternatives. Call before submitting. */
void bln_gen_request_set_logprobs (BlnGenRequest *req, int n_top, BlnGenTokensFn on_tokens);

/* Constrains the output to one JSON text (json-constraint.h; an object when
 * @object_only): before each token the candidates whose bytes would break
 * the JSON prefix, and all special tokens, are masked; the request ends with
 * BLN_FINISH_STOP as soon as the value is complete. Call before submitting. */
void bln_gen_request_set_json (BlnGenRequest *req, gboolean object_only);

/* Constrains the output to one JSON text valid against @schema (a reference
 * is taken; see json-constraint.h for the subset of JSON Schema), masking as
 * bln_gen_request_set_json() does; a reply cut by max_tokens is steered to
 * end in time, so it still validates. Call before submitting. */
void bln_gen_request_set_json_schema (BlnGenRequest *req, BlnJsonSchema *schema);

/* Asks the request to stop; safe from any thread, any number of times. Its
 * done callback still comes (BLN_FINISH_CANCELLED unless it had already
 * finished), and no text callback is delivered after this call returns when
 * it is called from the request's main context. */
void bln_gen_request_cancel (BlnGenRequest *req);

/* Queues @req (the worker takes its own reference); requests are admitted
 * in arrival order. Returns FALSE with @error set, and then @req's callbacks
 * are never called, when: the queue is full (BLN_SCHED_ERROR_QUEUE_FULL:
 * answer 429 with Retry-After), the worker is stopping
 * (BLN_SCHED_ERROR_STOPPED: 503), or the prompt is empty or leaves no room
 * in the context (BLN_ERROR_INVALID: 400). A request is submitted once. */
gboolean bln_engine_worker_submit (BlnEngineWorker *worker, BlnGenRequest *req, GError **error);

G_END_DECLS
