/* server.h — the OpenAI-compatible HTTP API (libsoup-3.0 + json-glib).
 *
 * Routes, each with and without the /v1 prefix (Cherry Studio sends both):
 *   GET  /v1/models            every installed model (model-library.h), loaded or not
 *   POST /v1/chat/completions  plain JSON or SSE (stream: true); reasoning and tool
 *                              calls shaped by chat-output.h, JSON mode, json_schema
 *                              (json-constraint.h) and logprobs by the engine worker
 *   POST /v1/completions       raw prompt, plain or SSE
 *   POST /v1/embeddings        400 model_cannot_embed (no embedding models yet)
 *   POST /v1/rerank            400 model_cannot_rerank (no reranker models yet)
 *   GET  /health               {"status":"ok"} (no auth)
 *   GET  /metrics              Prometheus text (metrics.h)
 *   /api/...                   the Ollama subset (ollama.h), no /v1 prefix
 *   GET  /v1/ws, /ws           WebSocket endpoint (websocket.h); the key may also
 *                              come as ?api_key= (browsers cannot set headers there)
 * OPTIONS on any path answers a CORS preflight; responses carry
 * Access-Control-Allow-Origin: *, or, when the database (options->safety)
 * holds the setting server.cors_origins with a list of origins, the
 * request's Origin when it is listed and nothing otherwise. Errors use OpenAI's shape
 * {"error":{"message","type","param","code"}}.
 *
 * All of it runs on the thread-default main context of the thread that
 * creates the server; generation happens on a BlnEngineWorker thread and
 * comes back through its callbacks (DESIGN.md §2).
 *
 * The `model` field picks an installed model; a model that is not loaded is
 * loaded first (the request waits, others are served), see model-library.h.
 * Unknown ids get 404 model_not_found (options->strict_models), names that
 * look like paths 400.
 *
 * Streams get an SSE comment ": keep-alive" after keepalive_ms of silence
 * (a long prompt being read). A body announced over max_body is answered 413
 * from its headers and never stored (libsoup skips reading it only when the
 * client sent "Expect: 100-continue"; otherwise it reads and discards it).
 */
#pragma once

#include <glib.h>
#include "engine-worker.h"
#include "metrics.h"
#include "model-library.h"

G_BEGIN_DECLS

typedef struct _BlnServer BlnServer;

typedef struct {
  const char *host;       /* address to bind; NULL: 127.0.0.1 */
  int port;               /* 0: any free port */
  const char *api_key;    /* NULL or "": no auth; otherwise Bearer / X-Api-Key must match */
  gsize max_body;         /* request bodies above this get 413; 0: 8 MiB */
  guint keepalive_ms;     /* SSE ": keep-alive" comment after this much silence; 0: 10 s */
  gboolean strict_models; /* FALSE: with one model installed, any model name means it;
                           * TRUE: an unknown name gets 404 model_not_found */
  gpointer safety;        /* BlnSafety * (safety.h), borrowed, or NULL: API keys from the
                           * database, rate limits, input rules, output filter, audit log */
} BlnServerOptions;

/* Creates a server for the models of @lib, loaded through @host (both
 * borrowed; they must outlive the server), and starts listening. A request
 * naming a model that is not loaded waits while @host loads it. Refuses (BLN_ERROR_INVALID) a host that is not a
 * loopback address unless an API key is set, and fails with the socket error
 * when binding fails. Returns NULL with @error set on failure. */
BlnServer *bln_server_new (BlnModelHost *host, BlnModelLibrary *lib,
                           const BlnServerOptions *options, GError **error);

/* The base URL it listens on, e.g. "http://127.0.0.1:8080/" (owned by the server). */
const char *bln_server_url (BlnServer *server);

/* The id of the model that served the last request (at start, the loaded
 * model or the library's first); NULL for an empty library. Owned by the
 * server; changes when another model is used. */
const char *bln_server_model_id (BlnServer *server);

/* Stops taking new work: new generation requests get 503, and requests still
 * waiting for a model load are answered 503. Requests in flight go on.
 * Safe to call more than once. */
void bln_server_stop_accepting (BlnServer *server);

/* Requests waiting for their model or holding it (not yet fully answered). */
guint bln_server_n_waiting (BlnServer *server);

/* The server's metrics (owned by the server). */
BlnMetrics *bln_server_metrics (BlnServer *server);

/* Stops taking new work (bln_server_stop_accepting()) and cancels the requests in flight (their replies are ended when the worker
 * reports back) and answers new chat requests with 503. Listening stops in
 * bln_server_free(). Safe to call twice. */
void bln_server_shutdown (BlnServer *server);

/* Number of chat requests not yet finished. */
guint bln_server_n_active (BlnServer *server);

/* Stops listening, closes the connections and frees the server; call
 * bln_server_shutdown() and let the main context drain
 * (bln_server_n_active() == 0, then the replies written) first. Generations
 * still running then are cancelled and left to end on their own: their
 * worker callbacks, whenever delivered, only free them (the worker, or the
 * model host, must still be freed afterwards). NULL is ignored. */
void bln_server_free (BlnServer *server);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnServer, bln_server_free)

/* The id published for a model called @name: lowercase ASCII letters, digits
 * and dots, every other run of characters one '-', no '-' at either end
 * ("SmolLM2 135M Instruct" → "smollm2-135m-instruct"). Never empty ("model"
 * for a name with nothing usable). Caller frees. */
char *bln_server_model_id_from_name (const char *name);

G_END_DECLS
