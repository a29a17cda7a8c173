/* toolcalls.h — find tool calls in a model's own output format.
 *
 * Models write tool calls as text in the format their chat template taught
 * them; OpenAI clients expect `tool_calls` with a name and a JSON arguments
 * string. Two formats are understood:
 *
 *  - DeepSeek-V3 / R1 (special tokens, as their templates render history):
 *      <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n
 *      ```json\nARGS\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>…<｜tool▁calls▁end｜>
 *    (also the later V3.1 form `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>`);
 *  - Qwen2.5 (and Hermes-style templates):
 *      <tool_call>\n{"name": NAME, "arguments": {…}}\n</tool_call>
 *
 * The parser is incremental: text before the first call marker is passed on
 * as content at once (holding back only a possible piece of a marker). A
 * DeepSeek call in the fenced form is reported as soon as its name is known,
 * and a Qwen call as soon as its "name" and the start of its "arguments"
 * object have been written, with the arguments following piece by piece
 * (BlnToolCall.continuation; for Qwen, the object's text exactly as the model
 * wrote it); other calls are reported whole once their end marker has
 * arrived. Joining a call's pieces always gives what the whole call would
 * have given.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef enum {
  BLN_TOOL_FORMAT_NONE,       /* no tool calls are looked for */
  BLN_TOOL_FORMAT_DEEPSEEK,
  BLN_TOOL_FORMAT_QWEN,
} BlnToolFormat;

/* One parsed call. */
typedef struct {
  char *name;        /* the function name */
  char *arguments;   /* a JSON text (an object when the model wrote valid JSON), or the
                      * next piece of it when continuation is set */
  gboolean continuation;  /* more arguments of the call reported just before */
} BlnToolCall;

void bln_tool_call_free (BlnToolCall *call);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnToolCall, bln_tool_call_free)

/* The format a chat template renders tool calls in, from the markers it
 * contains; BLN_TOOL_FORMAT_NONE when neither (or @template_src is NULL). */
BlnToolFormat bln_tool_format_detect (const char *template_src);

/* The format named "deepseek" or "qwen" ("hermes" is an alias); NONE for anything else. */
BlnToolFormat bln_tool_format_from_name (const char *name);

typedef struct _BlnToolParser BlnToolParser;

/* A parser for @format (NONE passes everything through as content). Free
 * with bln_tool_parser_free(). */
BlnToolParser *bln_tool_parser_new (BlnToolFormat format);
void bln_tool_parser_free (BlnToolParser *parser);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnToolParser, bln_tool_parser_free)

/* Feeds @len bytes of @text (-1: NUL-terminated). Appends plain text to
 * @content and each completed call (a new BlnToolCall, owned by the array,
 * which should have bln_tool_call_free as its free function) to @calls. */
void bln_tool_parser_push (BlnToolParser *parser, const char *text, gssize len,
                           GString *content, GPtrArray *calls);

/* Ends the output. A call cut off before its end marker is still reported
 * when its name and arguments can be read; anything else left is content. */
void bln_tool_parser_finish (BlnToolParser *parser, GString *content, GPtrArray *calls);

/* TRUE once the parser has seen the start of a tool call. */
gboolean bln_tool_parser_saw_call (BlnToolParser *parser);

/* Moves the calls of @pieces (what bln_tool_parser_push() / _finish()
 * appended) to @whole, joining each continuation to the call before it, so
 * that @whole holds complete calls. Both arrays free with
 * bln_tool_call_free; @pieces is left empty. */
void bln_tool_calls_collect (GPtrArray *whole, GPtrArray *pieces);

/* Ollama's form of complete calls: [{"function": {"name", "arguments": {…}}}],
 * the arguments as a JSON object (an empty one when the model's text is not
 * an object). A new array. */
JsonArray *bln_tool_calls_to_ollama (GPtrArray *whole);

/* Prepares the tool calls in the history @messages (an array of message
 * objects, changed in place) for a template of format @fmt: Qwen-style
 * templates print arguments with tojson and get an object (a JSON string is
 * parsed), DeepSeek's concatenate them and get a string (an object is
 * serialised); for a template without tool calls a null content becomes "". */
void bln_tool_history_adapt (JsonNode *messages, BlnToolFormat fmt);

G_END_DECLS
