/* engine-worker.h — the one thread that runs the model for the server.
 *
 * A BlnEngineWorker owns a loaded model, a CPU thread pool and ONE sequence
 * context. Requests (BlnGenRequest) are queued FIFO on a GAsyncQueue and run
 * one at a time: this is the first increment of the serving layer; continuous
 * batching over several sequences and a paged KV cache come later (issue 4).
 * Between requests the worker keeps the tokens of the last sequence cached
 * and reuses the longest common prefix with the next prompt, so a multi-turn
 * chat recomputes only its new turn.
 *
 * Threads (DESIGN.md §2): the worker never calls the HTTP layer. Text and the
 * end of a request are posted to the GMainContext given to
 * bln_gen_request_new() and the callbacks run there, in order; text produced
 * faster than the main loop dispatches it is coalesced into one call.
 * Cancellation is a flag checked before every token and every prefill chunk.
 */
#pragma once

#include <glib.h>
#include "model.h"
#include "sampler.h"

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

/* Loads the model at @path, creates a pool of @n_threads (0: all cores) and a
 * context of @n_ctx tokens (0: the model's default), and starts the engine
 * thread. Returns NULL with @error set when any of that fails (nothing is
 * left running then). The model must have a tokenizer. */
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
/* The context size in tokens. */
int bln_engine_worker_n_ctx (BlnEngineWorker *worker);
/* Requests waiting in the queue (not counting the running one). */
int bln_engine_worker_queue_length (BlnEngineWorker *worker);

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

/* Asks the request to stop; safe from any thread, any number of times. Its
 * done callback still comes (BLN_FINISH_CANCELLED unless it had already
 * finished), and no text callback is delivered after this call returns when
 * it is called from the request's main context. */
void bln_gen_request_cancel (BlnGenRequest *req);

/* Queues @req (the worker takes its own reference). Requests run FIFO. */
void bln_engine_worker_submit (BlnEngineWorker *worker, BlnGenRequest *req);

G_END_DECLS
