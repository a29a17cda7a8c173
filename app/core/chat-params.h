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
#include "json-constraint.h"

G_BEGIN_DECLS

typedef enum {
  BLN_TOOL_CHOICE_AUTO,       /* the model decides (the default when tools are given) */
  BLN_TOOL_CHOICE_NONE,       /* tools are not shown to the model */
  BLN_TOOL_CHOICE_REQUIRED,   /* some call must be made */
  BLN_TOOL_CHOICE_NAMED,      /* this function must be called (tool_choice_name) */
} BlnToolChoice;

/* A parsed request. Zero-initialise before bln_chat_params_parse(). */
typedef struct {
  JsonNode *messages;         /* normalised copy: content always a string or null */
  JsonNode *prompt;           /* completions: an array of prompts, each a string node or
                               * an array of token ids */
  JsonNode *tools;            /* array of tool objects, or NULL */
  BlnToolChoice tool_choice;
  char *tool_choice_name;     /* for BLN_TOOL_CHOICE_NAMED */
  gboolean logprobs;
  int top_logprobs;           /* 0..20 */
  gboolean json_object;       /* response_format json_object / json_schema: JSON output */
  BlnJsonSchema *json_schema; /* json_schema: the compiled schema (owned), or NULL */
  int thinking;               /* -1 not given, 0 disabled, 1 enabled */
  gboolean echo;              /* completions: the prompt is repeated before the text */
  char *chat_template;        /* a template to use instead of the model's, or NULL */
  JsonObject *template_kwargs;/* chat_template_kwargs: extra template variables, or NULL */
  gboolean stream;
  gboolean include_usage;
  int max_tokens;             /* 0: not given */
  BlnSamplerParams sp;
  gboolean have_seed;
  GPtrArray *stops;           /* char*, NULL-terminated */
} BlnChatParams;

/* Fills @p from the request object @o: messages (required, non-empty; an
 * assistant turn with tool_calls and "" content gets null content, as the
 * DeepSeek templates test for), tools (an array of {"type":"function",
 * "function":{"name",…}}), tool_choice ("none", "auto", "required" or
 * {"type":"function","function":{"name"}} naming one of the tools), logprobs,
 * top_logprobs (0..20), chat_template (a Jinja template string used instead of
 * the model's), chat_template_kwargs (an object of extra template variables,
 * e.g. {"enable_thinking": false}), response_format ({"type": "text" | "json_object" |
 * "json_schema"}; json_schema takes {"json_schema": {"name", "schema", "strict"}}, the
 * schema compiled by bln_json_schema_compile(), whose failure is this function's, with
 * *param "response_format.json_schema.schema"; without a schema it means json_object),
 * thinking ({"type": "enabled" | "disabled"}),
 * stream, stream_options.include_usage, max_tokens / max_completion_tokens
 * (>= 1), temperature, top_p, top_k, min_p, presence_penalty,
 * frequency_penalty, repetition_penalty, seed (random when absent) and stop
 * (a string or an array of at most 16). Returns FALSE with @error set
 * (BLN_ERROR_INVALID for a wrong type or value, BLN_ERROR_UNSUPPORTED for a
 * non-text content part) and *param pointing at the offending field's name
 * (static; NULL when no single field is to blame). Call
 * bln_chat_params_clear() afterwards in both cases. */
gboolean bln_chat_params_parse (JsonObject *o, BlnChatParams *p, const char **param, GError **error);

/* The same for a /v1/completions body: `prompt` (a string, an array of
 * token ids, or an array of up to 16 of those: one choice each) replaces
 * `messages`; `logprobs` is an integer (0..5 alternatives) and
 * `echo` a boolean. Fails the same way. */
gboolean bln_completion_params_parse (JsonObject *o, BlnChatParams *p, const char **param,
                                      GError **error);

/* Frees what bln_chat_params_parse() allocated in @p. */
void bln_chat_params_clear (BlnChatParams *p);

G_END_DECLS
