/* ollama.h — the subset of Ollama's native API that Cherry Studio's Ollama
 * provider (and the official ollama clients) use, so users may pick either
 * provider type:
 *
 *   GET  /api/version   {"version"}
 *   GET  /api/tags      the installed models with details (family, size, quantization)
 *   GET  /api/ps        the loaded model
 *   POST /api/chat      NDJSON stream (default) or one object with "stream": false
 *   POST /api/generate  the same with "prompt" / "response"
 *   POST /api/embed, /api/embeddings   400: no served model can embed yet
 *
 * Ollama's error shape is {"error": "message"} with the HTTP status.
 * Sampling options come in "options" (num_predict, temperature, top_p, top_k,
 * min_p, seed, stop, repeat_penalty, presence_penalty, frequency_penalty);
 * others (num_ctx, keep_alive, …) are accepted and ignored. A DeepSeek-R1
 * `<think>` block goes to message.thinking (chat) or "thinking" (generate).
 * Images in a message are refused (400): the served models read text only.
 *
 * Everything runs on the main context of the HTTP server. Models are taken
 * through a BlnModelHost lease, as the OpenAI routes do.
 */
#pragma once

#include <glib.h>
#include <libsoup/soup.h>
#include "metrics.h"
#include "model-library.h"
#include "safety.h"

G_BEGIN_DECLS

typedef struct _BlnOllama BlnOllama;

/* A handler for the models of @lib through @host (both borrowed, must
 * outlive it), recording into @metrics (borrowed, may be NULL). @strict as
 * in BlnServerOptions.strict_models. Free with bln_ollama_free(). */
BlnOllama *bln_ollama_new (BlnModelLibrary *lib, BlnModelHost *host, BlnMetrics *metrics,
                           gboolean strict, gsize max_body);

/* With @safety (borrowed, must outlive @ollama; NULL turns it off), every
 * route checks the API key and the rate limits, and /api/chat and
 * /api/generate also apply the input rules (to every message's content, and
 * to "system" and "prompt"), the output filter and the moderation endpoint,
 * and write one audit record each (safety.h). Refusals keep Ollama's shape,
 * {"error": "..."}, with the status safety.h gives (400, 401, 429, 503). An
 * answer the output filter stops or the moderation endpoint withholds ends
 * with "done_reason": "content_filter". */
void bln_ollama_set_safety (BlnOllama *ollama, BlnSafety *safety);

/* Frees it; call bln_ollama_cancel_all() and let the requests end first.
 * Leases still held are given back. NULL is ignored. */
void bln_ollama_free (BlnOllama *ollama);

/* Answers @msg for @path (which starts with "/api/"): an Ollama route, or a
 * 404 in Ollama's shape. Without a BlnSafety (bln_ollama_set_safety), auth is
 * the caller's business. */
void bln_ollama_handle (BlnOllama *ollama, SoupServerMessage *msg, const char *path);

/* New generation requests get 503 from now on; those in flight are
 * cancelled and their replies ended (with @cancel TRUE), or left to finish. */
void bln_ollama_stop (BlnOllama *ollama, gboolean cancel);

/* Requests not yet fully answered. */
guint bln_ollama_n_active (BlnOllama *ollama);

G_END_DECLS
