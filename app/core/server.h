/* server.h — the OpenAI-compatible HTTP API (libsoup-3.0 + json-glib).
 *
 * Routes, each with and without the /v1 prefix (Cherry Studio sends both):
 *   GET  /v1/models            the loaded model, as OpenAI's model list
 *   POST /v1/chat/completions  plain JSON or SSE (stream: true)
 *   GET  /health               {"status":"ok"} (no auth)
 * OPTIONS on any path answers a CORS preflight; every response carries
 * Access-Control-Allow-Origin: *. Errors use OpenAI's shape
 * {"error":{"message","type","param","code"}}.
 *
 * All of it runs on the thread-default main context of the thread that
 * creates the server; generation happens on a BlnEngineWorker thread and
 * comes back through its callbacks (DESIGN.md §2).
 *
 * The `model` field of a request is not checked: any id is answered by the
 * one loaded model (a model router comes later).
 *
 * Not done yet (issue 4): DeepSeek-R1 `<think>…</think>` split into
 * reasoning_content (the text is passed through as is), tools / tool_calls,
 * logprobs, response_format, `: keep-alive` comments during a long prefill,
 * a bounded queue answering 429/503, /v1/completions, /v1/embeddings,
 * /metrics, the Ollama routes. The body limit is checked once libsoup has
 * read the body (a Content-Length check before reading would be better).
 */
#pragma once

#include <glib.h>
#include "engine-worker.h"

G_BEGIN_DECLS

typedef struct _BlnServer BlnServer;

typedef struct {
  const char *host;       /* address to bind; NULL: 127.0.0.1 */
  int port;               /* 0: any free port */
  const char *api_key;    /* NULL or "": no auth; otherwise Bearer / X-Api-Key must match */
  gsize max_body;         /* request bodies above this get 413; 0: 8 MiB */
} BlnServerOptions;

/* Creates a server answering with @worker (borrowed; must outlive the server)
 * and starts listening. Refuses (BLN_ERROR_INVALID) a host that is not a
 * loopback address unless an API key is set, and fails with the socket error
 * when binding fails. Returns NULL with @error set on failure. */
BlnServer *bln_server_new (BlnEngineWorker *worker, const BlnServerOptions *options,
                           GError **error);

/* The base URL it listens on, e.g. "http://127.0.0.1:8080/" (owned by the server). */
const char *bln_server_url (BlnServer *server);

/* The model id the server publishes (owned by the server). */
const char *bln_server_model_id (BlnServer *server);

/* Cancels the requests in flight (their replies are ended when the worker
 * reports back) and answers new chat requests with 503. Listening stops in
 * bln_server_free(). Safe to call twice. */
void bln_server_shutdown (BlnServer *server);

/* Number of chat requests not yet finished. */
guint bln_server_n_active (BlnServer *server);

/* Stops listening, closes the connections and frees the server; call
 * bln_server_shutdown() and let the main context drain
 * (bln_server_n_active() == 0, then the replies written) first. NULL is
 * ignored. */
void bln_server_free (BlnServer *server);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnServer, bln_server_free)

/* The id published for a model called @name: lowercase ASCII letters, digits
 * and dots, every other run of characters one '-', no '-' at either end
 * ("SmolLM2 135M Instruct" → "smollm2-135m-instruct"). Never empty ("model"
 * for a name with nothing usable). Caller frees. */
char *bln_server_model_id_from_name (const char *name);

G_END_DECLS
