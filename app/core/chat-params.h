/* chat-params.h — the fields of an OpenAI chat completion request.
 *
 * Reads what baleen-server honours from a parsed request body and checks
 * types and ranges; unknown fields are ignored (Cherry Studio merges user
 * "custom parameters" at the top level). Message contents are normalised:
 * an array of text parts is joined into one string; other part types (images)
 * are refused, the models served being text-only.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include "sampler.h"

G_BEGIN_DECLS

/* A parsed request. Zero-initialise before bln_chat_params_parse(). */
typedef struct {
  JsonNode *messages;         /* normalised copy: content always a string or null */
  gboolean stream;
  gboolean include_usage;
  int max_tokens;             /* 0: not given */
  BlnSamplerParams sp;
  gboolean have_seed;
  GPtrArray *stops;           /* char*, NULL-terminated */
} BlnChatParams;

/* Fills @p from the request object @o: messages (required, non-empty),
 * stream, stream_options.include_usage, max_tokens / max_completion_tokens
 * (>= 1), temperature, top_p, top_k, min_p, presence_penalty,
 * frequency_penalty, repetition_penalty, seed (random when absent) and stop
 * (a string or an array of at most 16). Returns FALSE with @error set
 * (BLN_ERROR_INVALID for a wrong type or value, BLN_ERROR_UNSUPPORTED for a
 * non-text content part) and *param pointing at the offending field's name
 * (static; NULL when no single field is to blame). Call
 * bln_chat_params_clear() afterwards in both cases. */
gboolean bln_chat_params_parse (JsonObject *o, BlnChatParams *p, const char **param, GError **error);

/* Frees what bln_chat_params_parse() allocated in @p. */
void bln_chat_params_clear (BlnChatParams *p);

G_END_DECLS
