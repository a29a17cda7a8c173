/* safety.h — the one entry point the HTTP server uses for safety and
 * governance: API keys from the database, rate limits, input rules, the
 * output stream filter, the moderation endpoint, and the audit record. Every
 * generation route (OpenAI in server.c, Ollama in ollama.c, WebSocket in
 * websocket.c) goes through the BlnSafetyCall functions below; the OpenAI
 * routes through bln_safety_call_begin(), the others through the
 * route-neutral bln_safety_call_admit(), so that each answers in its own shape.
 *
 * Underneath, per request:
 *   1. bln_safety_check_request() before generating: it verifies the key,
 *      applies the rate limits and the input rules. A refusal comes with the
 *      HTTP status, an OpenAI-style error code and message, and headers.
 *   2. bln_safety_stream_filter_new() and feeds every generated piece
 *      through the filter (moderation.h) before sending it.
 *   3. bln_safety_record() once the answer is complete (or failed): it
 *      charges the tokens used and writes the audit record. Its failures (a
 *      full disk) are logged and never affect the answer.
 * Everything runs on the server's thread.
 */
#pragma once

#include <glib.h>

#include "audit.h"
#include "db.h"
#include "keys.h"
#include "moderation.h"
#include "ratelimit.h"
#include "rules.h"
#include "settings.h"

G_BEGIN_DECLS

typedef struct _BlnSafety BlnSafety;

/* bln_safety_new:
 * Opens the database at @db_path (NULL: the default path), loads settings and
 * rules and sets up the rate limiter (Redis when ratelimit.redis_url is set;
 * if Redis cannot be reached then, a warning is logged and the in-process
 * limiter is used). NULL with @error set when the database cannot be opened.
 */
BlnSafety *bln_safety_new (const char *db_path, GError **error);
void bln_safety_free (BlnSafety *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnSafety, bln_safety_free)

/* Borrowed pointers to the parts, valid while @s lives. */
BlnDb *bln_safety_db (BlnSafety *s);
BlnSettings *bln_safety_settings (BlnSafety *s);

/* bln_safety_reload:
 * Re-reads settings and rules from the database. bln_safety_check_request()
 * does this by itself whenever another process (baleen-cli, the desktop app)
 * has committed a change. FALSE with @error set on a database error; the old
 * state is kept.
 */
gboolean bln_safety_reload (BlnSafety *s, GError **error);

typedef struct {
  const char *api_key;       /* the key presented (Bearer or X-Api-Key), or NULL */
  const char *client;        /* the client address */
  gboolean loopback;         /* the client connects from a loopback address */
  const char *endpoint;      /* e.g. "/v1/chat/completions", for the audit record */
  const char *const *texts;  /* NULL-terminated: every message part of the request */
  gint64 est_tokens;         /* estimated prompt + completion tokens */
} BlnSafetyRequest;

typedef struct {
  guint status;          /* 0 when the request may go on; else 400, 401, 429 or 503 */
  char *code;            /* refused: "invalid_api_key", "rate_limit_exceeded",
                          * "content_filter" or "service_unavailable" */
  char *message;         /* refused: a sentence for the client */
  char **headers;        /* name/value pairs to add to the response (rate limits), or NULL */
  char **texts;          /* when a mask rule matched: the request texts with the masks
                          * applied, same order and length as the request's; else NULL */
  gint64 key_id;         /* the verified key's id, 0 when none */
  gint64 key_tpm;        /* internal: token limits used for the charge after the answer */
  gint64 client_tpm;
  char *key_bucket, *client_bucket;
  char *verdicts;        /* JSON array of the input rule matches, for the audit record */
  char *moderation;      /* JSON object: the moderation endpoint's outcome, or NULL */
} BlnSafetyVerdict;

/* bln_safety_verdict_clear: frees the members of @v (not @v itself). */
void bln_safety_verdict_clear (BlnSafetyVerdict *v);

/* bln_safety_check_request:
 * Applies, in this order, the key check (per auth.require_key: a presented
 * key must be valid; a missing one is refused from non-loopback clients for
 * "remote", from everyone for "always"), the rate limits (the key's own limits
 * or ratelimit.key_*, and ratelimit.client_* per address) and the input rules.
 * Fills @out (initialise it to zeroes). Returns TRUE when the request may go
 * on (@out->texts then holds the masked texts, if any), FALSE when it must be
 * answered with @out->status. Never fails otherwise: database and Redis errors
 * are logged and follow the configured failure policy.
 */
gboolean bln_safety_check_request (BlnSafety *s, const BlnSafetyRequest *req,
                                   BlnSafetyVerdict *out);

/* bln_safety_stream_filter_new:
 * A filter for one answer with the output rules and moderation settings
 * (free with bln_stream_filter_free before @s is freed or reloaded).
 */
BlnStreamFilter *bln_safety_stream_filter_new (BlnSafety *s);

/* bln_safety_record:
 * The request is over: charges @rec->completion_tokens to the token buckets,
 * adds @v's key id, client and input verdicts plus @filter's output matches
 * (may be NULL) to @rec, writes the audit record per audit.* and
 * privacy.content, and prunes the log now and then. Returns FALSE with @error
 * set when the record could not be written (the caller has nothing to undo;
 * the failure is also logged).
 */
gboolean bln_safety_record (BlnSafety *s, const BlnSafetyVerdict *v, BlnStreamFilter *filter,
                            BlnAuditRecord *rec, GError **error);

G_END_DECLS

/* ---- HTTP glue ------------------------------------------------------------
 * For the libsoup server: one BlnSafetyCall per request carries the verdict,
 * the output filter and the timings from admission to the audit record. */

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

typedef struct _BlnSafetyCall BlnSafetyCall;

/* bln_safety_collect_message_texts:
 * The texts a model reads from the message array @messages (OpenAI or Ollama
 * shape; anything else is skipped): each message's "content" when it is a
 * string, and the "text" of each {"type": "text", "text": ...} part when it
 * is an array of parts. Appends each text (borrowed from @messages) to
 * @texts, the JsonObject holding it to @owners, and its member name (a static
 * string) to @members, for bln_safety_write_back_texts().
 */
void bln_safety_collect_message_texts (JsonNode *messages, GPtrArray *texts, GPtrArray *owners,
                                       GPtrArray *members);

/* bln_safety_write_back_texts:
 * Sets member @members[i] of @owners[i] to @masked[i] for each collected
 * text (@masked as from bln_safety_call_masked_texts(); NULL does nothing).
 */
void bln_safety_write_back_texts (const char *const *masked, GPtrArray *owners,
                                  GPtrArray *members);

/* bln_safety_http_request:
 * Fills @req (all of it: the rest is zeroed) with what @msg tells: the key
 * presented (Authorization: Bearer, else X-Api-Key, else @query_key, which
 * may be NULL), the client address, whether it is a loopback address, and the
 * path as the endpoint. The strings are borrowed from @msg and @query_key.
 */
void bln_safety_http_request (SoupServerMessage *msg, const char *query_key,
                              BlnSafetyRequest *req);

/* bln_safety_http_check_key:
 * The key check alone, with the rate limits (for routes without messages,
 * e.g. /v1/models, and before a WebSocket upgrade). The key is taken from the
 * headers, else from @query_key (e.g. ?api_key= for browsers; may be NULL).
 * On a refusal writes the OpenAI-style error reply on @msg and returns FALSE.
 */
gboolean bln_safety_http_check_key (BlnSafety *s, SoupServerMessage *msg,
                                    const char *query_key);

/* bln_safety_call_admit:
 * The route-neutral admission, for routes that answer in their own shape
 * (Ollama, WebSocket): applies bln_safety_check_request() to @req (the key,
 * client, endpoint and texts; when @req->est_tokens is 0 or less, the tokens
 * are estimated as the texts' length / 3 plus @max_tokens). On success returns
 * a new call (free with bln_safety_call_free after bln_safety_call_end); the
 * masked texts, if any, come from bln_safety_call_masked_texts() and the
 * rate-limit headers from bln_safety_call_headers(). On a refusal the refusal
 * is audited (finish_reason "refused:CODE"), NULL is returned, and @refusal
 * (zeroed by the caller; may be NULL; clear with bln_safety_verdict_clear)
 * gets the status, code, message and headers to answer with.
 */
BlnSafetyCall *bln_safety_call_admit (BlnSafety *s, const BlnSafetyRequest *req,
                                      const char *model, gint64 max_tokens,
                                      BlnSafetyVerdict *refusal);

/* bln_safety_call_masked_texts:
 * The request's texts after the mask rules, in the order of the admitted
 * request's texts (owned by @c), or NULL when no mask rule matched.
 */
const char *const *bln_safety_call_masked_texts (BlnSafetyCall *c);

/* bln_safety_call_headers:
 * The rate-limit headers for the response as name/value pairs (owned by @c,
 * NULL-terminated), or NULL when no limit applies.
 */
const char *const *bln_safety_call_headers (BlnSafetyCall *c);

/* bln_safety_call_begin:
 * Admits a request arriving on @msg for @endpoint and @model: reads the key
 * (Authorization: Bearer, or X-Api-Key) and the client address from @msg,
 * takes the "content" strings of the message objects in @messages (a JSON
 * array; may be NULL) as the texts to check, and estimates the tokens as
 * their length / 3 plus @max_tokens. Mask rules rewrite those contents in
 * place. Rate-limit headers are added to @msg's response. On a refusal the
 * OpenAI-style error reply is written on @msg, the refusal is audited, and
 * NULL is returned; otherwise a new call (free with bln_safety_call_free
 * after bln_safety_call_end).
 */
BlnSafetyCall *bln_safety_call_begin (BlnSafety *s, SoupServerMessage *msg, const char *endpoint,
                                      const char *model, JsonNode *messages, gint64 max_tokens);

/* bln_safety_call_begin_prompt:
 * bln_safety_call_begin() for raw prompts (/v1/completions): @prompt is a
 * JSON string or an array of prompts; every string is checked and masked in
 * place when a mask rule matches; token-id prompts are not checked.
 */
BlnSafetyCall *bln_safety_call_begin_prompt (BlnSafety *s, SoupServerMessage *msg,
                                             const char *endpoint, const char *model,
                                             JsonNode *prompt, gint64 max_tokens);

/* bln_safety_call_clone:
 * A call for one more answer to the same admitted request (n > 1, several
 * prompts): the same key, client, verdicts and prompt; its own output filter,
 * completion text and audit record. Once @c has been cloned it writes no
 * audit record of its own (bln_safety_call_end on it does nothing), so each
 * answer is recorded once. Free the clone with bln_safety_call_free.
 */
BlnSafetyCall *bln_safety_call_clone (BlnSafetyCall *c);

/* bln_safety_call_filter:
 * Passes a generated @piece through the output filter, appending to @emit
 * what may be sent now (possibly nothing; always nothing while the answer is
 * held for the moderation endpoint, see bln_safety_call_needs_moderation).
 * Returns FALSE when the answer must stop (finish_reason "content_filter");
 * stop generating then.
 */
gboolean bln_safety_call_filter (BlnSafetyCall *c, const char *piece, GString *emit);

/* bln_safety_call_flush: the answer is complete; appends the held-back
 * rest to @emit (nothing while the answer is held for the moderation
 * endpoint). Harmless after the filter stopped the answer. */
void bln_safety_call_flush (BlnSafetyCall *c, GString *emit);

/* bln_safety_call_filtered:
 * Whether the answer ends with finish_reason "content_filter": the output
 * filter stopped it, or the moderation endpoint withheld it. */
gboolean bln_safety_call_filtered (BlnSafetyCall *c);

/* bln_safety_call_needs_moderation:
 * Whether moderation.endpoint was set when the request was admitted and has
 * not been asked yet. Such an answer is held back whole: the filter functions
 * emit nothing, and after the flush the route calls
 * bln_safety_call_moderate_async(), then bln_safety_call_release() to get the
 * text to send (nothing when the answer is withheld).
 */
gboolean bln_safety_call_needs_moderation (BlnSafetyCall *c);

/* bln_safety_call_release:
 * After the moderation: appends the held answer to @emit unless it was
 * withheld. Does nothing for an answer that was not held, and the second time.
 */
void bln_safety_call_release (BlnSafetyCall *c, GString *emit);

/* bln_safety_call_moderate_async:
 * Sends the completed answer (what was emitted so far) to moderation.endpoint
 * when one is set; completes at once otherwise. @session (a SoupSession,
 * borrowed) may be NULL.
 */
void bln_safety_call_moderate_async (BlnSafetyCall *c, gpointer session,
                                     GCancellable *cancellable, GAsyncReadyCallback callback,
                                     gpointer user_data);

/* bln_safety_call_moderate_finish:
 * Whether the answer may be delivered: FALSE when it was flagged, or when the
 * service failed and moderation.failure is "closed" (bln_safety_call_filtered
 * is TRUE from then on). Failures are logged; the outcome goes into the audit
 * record's verdicts ("moderation"). Never fails. @c must live until the
 * callback has run.
 */
gboolean bln_safety_call_moderate_finish (BlnSafetyCall *c, GAsyncResult *result);

/* bln_safety_call_end:
 * Writes the audit record (@request_id, @finish_reason, token counts; the
 * prompt is the checked texts, the completion what passed the output filter,
 * including an answer the moderation endpoint withheld) and charges
 * the tokens. Failures are logged, never reported to the client. Call once.
 */
void bln_safety_call_end (BlnSafetyCall *c, const char *request_id, const char *finish_reason,
                          gint64 prompt_tokens, gint64 completion_tokens, gint64 cached_tokens);

/* bln_safety_call_free: frees @c. NULL is ignored. */
void bln_safety_call_free (BlnSafetyCall *c);

G_END_DECLS
