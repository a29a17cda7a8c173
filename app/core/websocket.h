/* websocket.h — the WebSocket endpoint /v1/ws (and /ws).
 *
 * Every frame is a JSON text message with a header and a payload. A client
 * starts a generation with
 *
 *   {"header": {"version": "1.0", "request_id": "r1", "timestamp": 1764000000000},
 *    "payload": {"prompt": "Hello", "model": "…" (optional),
 *                "parameters": {"max_tokens": 64, "temperature": 0.7, "top_p", "top_k",
 *                               "seed", "stop"}}}
 *
 * ("messages", an OpenAI message array, may replace "prompt"; a prompt is sent
 * to the model as one user turn through its chat template), and cancels it
 * with {"header": {"version": "1.0", "request_id": "r1", "action": "cancel"}}.
 * Any number of requests (up to BLN_WS_MAX_IN_FLIGHT) may be in flight on one
 * socket; request ids must be unique among those in flight.
 *
 * The server answers with frames of the same shape, the client's request_id
 * in the header and the kind of frame in header.event:
 *
 *   "start"  payload {"model"}                               the model is loaded, generation queued
 *   "delta"  payload {"text"} and/or {"reasoning"}           a piece of the answer / of <think>
 *   "done"   payload {"finish_reason": "stop" | "length" | "cancelled",
 *                     "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}
 *   "error"  payload {"code", "message"}                     the request failed (it is over)
 *
 * header.timestamp is the server's time in milliseconds since the epoch.
 * Error codes: invalid_json, invalid_envelope, unsupported_version,
 * duplicate_request_id, unknown_request (cancel of an id not in flight),
 * too_many_requests, model_not_found, invalid_value, context_length_exceeded,
 * model_load_failed, server_shutting_down, engine_error; with a database
 * (bln_ws_set_safety) also invalid_api_key, rate_limit_exceeded,
 * content_filter and service_unavailable. Closing the socket
 * cancels everything in flight on it.
 */
#pragma once

#include <glib.h>
#include <libsoup/soup.h>
#include "metrics.h"
#include "model-library.h"
#include "safety.h"

G_BEGIN_DECLS

#define BLN_WS_MAX_IN_FLIGHT 16

typedef struct _BlnWs BlnWs;

/* An endpoint for the models of @lib through @host (borrowed; must outlive
 * it), recording into @metrics (borrowed, may be NULL); @strict as in
 * BlnServerOptions.strict_models. */
BlnWs *bln_ws_new (BlnModelLibrary *lib, BlnModelHost *host, BlnMetrics *metrics,
                   gboolean strict);

/* Takes over an accepted connection (a new reference is taken). */
void bln_ws_accept (BlnWs *ws, SoupWebsocketConnection *conn);

/* bln_ws_accept() for a connection upgraded from @msg: with a BlnSafety set,
 * the key (headers or ?api_key=) and the client address of @msg apply to
 * every request on the socket. */
void bln_ws_accept_message (BlnWs *ws, SoupWebsocketConnection *conn, SoupServerMessage *msg);

/* With @safety (borrowed, must outlive @ws; NULL turns it off), every
 * generation request on a socket goes through safety.h: the rate limits (per
 * key and per address, each request counts), the input rules on the prompt or
 * on every message's content, the output filter, the moderation endpoint, and
 * one audit record (endpoint "/v1/ws"). A refusal is an "error" frame with the
 * request_id and payload {"code", "message", "status"} (status as HTTP would
 * give it; "retry_after" in seconds for rate_limit_exceeded). An answer the
 * output filter stops or the moderation endpoint withholds ends with a "done"
 * frame whose finish_reason is "content_filter". The key itself is checked
 * before the upgrade (server.c). */
void bln_ws_set_safety (BlnWs *ws, BlnSafety *safety);

/* New requests are refused (server_shutting_down) from now on; with @cancel
 * the ones in flight are cancelled too. */
void bln_ws_stop (BlnWs *ws, gboolean cancel);

/* Requests in flight on all sockets. */
guint bln_ws_n_active (BlnWs *ws);

/* Closes every socket, waits (briefly) for the worker to report the
 * cancelled requests, and frees it. NULL is ignored. */
void bln_ws_free (BlnWs *ws);

G_END_DECLS
