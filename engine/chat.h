/* chat.h — render an OpenAI-style conversation with a model's chat template.
 *
 * This is what transformers' apply_chat_template(..., tokenize=False) does: the
 * template (Jinja2 source, from tokenizer_config.json or GGUF metadata) is
 * rendered by jinja.h with the variables `messages`, `tools`, `documents`
 * (always None), `add_generation_prompt`, `bos_token`, `eos_token`, and any
 * extra caller variables.
 *
 * Messages are passed exactly as given: a JSON null `content` reaches the
 * template as None (which DeepSeek's tool-call branch tests for). Note that
 * transformers >= 5 drops null-valued message keys and copies a `reasoning`
 * field to `reasoning_content` / `thinking` before rendering; callers that
 * want that normalisation do it on the JSON first.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Renders @template_src for a conversation.
 * @messages: a JSON array node of message objects ({"role", "content", ...}).
 * @tools: a JSON array node of tool schemas, or NULL (the template sees None).
 * @bos / @eos: the tokenizer's special-token strings, or NULL for "".
 * @extra: more template variables (e.g. "enable_thinking"), or NULL; a member
 *   named like one of the above replaces it.
 * Returns the rendered prompt (g_free it), or NULL with @error set:
 * BLN_ERROR_INVALID when @messages is not an array, BLN_ERROR_TEMPLATE when
 * the template does not parse or fails (raise_exception, limits, ...). */
char *bln_chat_render (const char *template_src, JsonNode *messages, JsonNode *tools,
                       gboolean add_generation_prompt, const char *bos, const char *eos,
                       JsonObject *extra, GError **error);

G_END_DECLS
