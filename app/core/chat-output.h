/* chat-output.h — turns a chat model's generated text into OpenAI deltas.
 *
 * The text of one completion goes through, in order: the `<think>` splitter
 * (reasoning.h) when the model reasons, then the tool-call parser
 * (toolcalls.h) when tools were offered. What comes out is a series of
 * chat.completion.chunk deltas exactly as Cherry Studio's AI SDK checks
 * them (CHERRY.md):
 *   {"reasoning_content": "…"}          thinking, never with a tag in it
 *   {"content": "…"}                    the answer
 *   {"tool_calls": [{"index": i, "id": "call_…", "type": "function",
 *                    "function": {"name": "…", "arguments": ""}}]}
 *                                        the first delta of call i
 *   {"tool_calls": [{"index": i, "function": {"arguments": "…"}}]}
 *                                        its arguments, in one or more pieces
 * and, for a non-streamed reply, the assembled message.
 *
 * A forced call (tool_choice naming a function, the text being constrained to
 * a JSON object) reports the call's first delta before any text and the text
 * as its arguments, piece by piece.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include "toolcalls.h"

G_BEGIN_DECLS

typedef struct _BlnChatOutput BlnChatOutput;

/* A new output shaper. @reasoning: split `<think>` blocks (@starts_inside:
 * the prompt opened one). @tools: the format tool calls are parsed in (NONE:
 * no parsing). @forced_tool: the name of the function whose arguments the
 * whole text is, or NULL. Free with bln_chat_output_free(). */
BlnChatOutput *bln_chat_output_new (gboolean reasoning, gboolean starts_inside,
                                    BlnToolFormat tools, const char *forced_tool);
void bln_chat_output_free (BlnChatOutput *out);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnChatOutput, bln_chat_output_free)

/* Feeds generated @text and appends the deltas it completes (new JsonObject
 * references, owned by @deltas, which should free with json_object_unref) to
 * @deltas. */
void bln_chat_output_push (BlnChatOutput *out, const char *text, GPtrArray *deltas);

/* Ends the text: appends the deltas of whatever was held back. */
void bln_chat_output_finish (BlnChatOutput *out, GPtrArray *deltas);

/* Number of tool calls reported so far. */
guint bln_chat_output_n_tool_calls (BlnChatOutput *out);

/* All the thinking so far (owned by @out). */
const char *bln_chat_output_reasoning (BlnChatOutput *out);

/* The assistant message of a non-streamed reply, after
 * bln_chat_output_finish(): role, content (null when only tool calls were
 * made), reasoning_content when there was thinking, tool_calls when calls
 * were made. A new object. */
JsonObject *bln_chat_output_message (BlnChatOutput *out);

G_END_DECLS
