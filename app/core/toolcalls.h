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
 * with its arguments following piece by piece (BlnToolCall.continuation);
 * other calls are reported whole once their end marker has arrived. Joining
 * a call's pieces always gives what the whole call would have given.
 */
#pragma once

#include <glib.h>

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

G_END_DECLS
