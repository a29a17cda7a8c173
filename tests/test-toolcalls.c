/* test-toolcalls.c — tool calls read back from text that the models' own
 * chat templates wrote: the DeepSeek-V3/R1 and Qwen2.5 conversations of
 * tests/golden/templates/chat_cases.jsonl were rendered by transformers /
 * jinja2; parsing a rendered conversation, fed in pieces of every size, must
 * give back exactly the tool_calls of its messages, in order. */
#include <glib.h>
#include <string.h>
#include <json-glib/json-glib.h>

#include "chat-output.h"
#include "toolcalls.h"

static JsonNode *
parse (const char *s)
{
  JsonNode *n = json_from_string (s, NULL);

  g_assert_nonnull (n);
  return n;
}

/* Compares an arguments text with the message's arguments (a JSON string or
 * an object) as JSON values. */
static void
assert_same_args (const char *got, JsonNode *want)
{
  g_autoptr (JsonNode) g = parse (got);
  g_autoptr (JsonNode) w = NULL;

  if (JSON_NODE_HOLDS_VALUE (want))
    w = parse (json_node_get_string (want));
  else
    w = json_node_copy (want);
  if (!json_node_equal (g, w))
    g_error ("arguments %s differ from %s", got, json_to_string (w, FALSE));
}

/* Joins streamed argument pieces into their calls. */
static void
merge_continuations (GPtrArray *calls)
{
  guint i = 0;

  while (i < calls->len)
    {
      BlnToolCall *c = calls->pdata[i];

      if (c->continuation)
        {
          BlnToolCall *prev;
          char *joined;

          g_assert_cmpuint (i, >, 0);
          prev = calls->pdata[i - 1];
          g_assert_false (prev->continuation);
          joined = g_strconcat (prev->arguments, c->arguments, NULL);
          g_free (prev->arguments);
          prev->arguments = joined;
          g_ptr_array_remove_index (calls, i);
        }
      else
        i++;
    }
}

static void
check_case (JsonObject *c, BlnToolFormat fmt, guint chunk)
{
  const char *rendered = json_object_get_string_member (c, "rendered");
  JsonArray *msgs = json_object_get_array_member (c, "messages");
  g_autoptr (BlnToolParser) p = bln_tool_parser_new (fmt);
  g_autoptr (GPtrArray) calls = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_tool_call_free);
  g_autoptr (GString) content = g_string_new (NULL);
  gsize n = strlen (rendered), at;
  guint i, k = 0;

  for (at = 0; at < n; at += chunk)
    bln_tool_parser_push (p, rendered + at, MIN (chunk, n - at), content, calls);
  bln_tool_parser_finish (p, content, calls);
  merge_continuations (calls);
  for (i = 0; i < json_array_get_length (msgs); i++)
    {
      JsonObject *m = json_array_get_object_element (msgs, i);
      JsonArray *tc;
      guint j;

      if (!json_object_has_member (m, "tool_calls"))
        continue;
      tc = json_object_get_array_member (m, "tool_calls");
      for (j = 0; j < json_array_get_length (tc); j++, k++)
        {
          JsonObject *t = json_array_get_object_element (tc, j);
          JsonObject *f = json_object_has_member (t, "function")
                            ? json_object_get_object_member (t, "function") : t;
          BlnToolCall *got;

          g_assert_cmpuint (k, <, calls->len);
          got = calls->pdata[k];
          g_assert_cmpstr (got->name, ==, json_object_get_string_member (f, "name"));
          assert_same_args (got->arguments, json_object_get_member (f, "arguments"));
        }
    }
  g_assert_cmpuint (calls->len, ==, k);
  g_assert_cmpuint (k, >, 0);
  /* the markers never leak into the content */
  g_assert_null (strstr (content->str, "tool▁call▁begin"));
  g_assert_null (strstr (content->str, "get_weather\n```"));
}

static void
test_rendered (void)
{
  const char *dir = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *path = g_build_filename (dir ? dir : "tests/golden", "templates",
                                            "chat_cases.jsonl", NULL);
  g_autofree char *data = NULL;
  g_auto (GStrv) lines = NULL;
  guint i, n_cases = 0;

  g_assert_true (g_file_get_contents (path, &data, NULL, NULL));
  lines = g_strsplit (data, "\n", -1);
  for (i = 0; lines[i] != NULL; i++)
    {
      g_autoptr (JsonNode) node = NULL;
      g_autofree char *tmpl_path = NULL;
      g_autofree char *tmpl = NULL;
      JsonObject *c;
      BlnToolFormat fmt;
      guint chunk;

      if (!*lines[i] || strstr (lines[i], "\"tool_calls\"") == NULL)
        continue;
      node = parse (lines[i]);
      c = json_node_get_object (node);
      tmpl_path = g_build_filename (dir ? dir : "tests/golden", "templates",
                                    json_object_get_string_member (c, "template"), NULL);
      g_assert_true (g_file_get_contents (tmpl_path, &tmpl, NULL, NULL));
      fmt = bln_tool_format_detect (tmpl);
      g_assert_cmpint (fmt, !=, BLN_TOOL_FORMAT_NONE);
      for (chunk = 1; chunk <= 64; chunk = chunk * 2 + 1)
        check_case (c, fmt, chunk);
      check_case (c, fmt, 1 << 20);
      n_cases++;
    }
  g_assert_cmpuint (n_cases, >=, 10);
}

static void
test_plain_and_cut (void)
{
  g_autoptr (BlnToolParser) p = bln_tool_parser_new (BLN_TOOL_FORMAT_QWEN);
  g_autoptr (GPtrArray) calls = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_tool_call_free);
  g_autoptr (GString) content = g_string_new (NULL);
  BlnToolCall *c;

  /* text without calls passes through at once, except a possible marker start */
  bln_tool_parser_push (p, "Hello <tool", -1, content, calls);
  g_assert_cmpstr (content->str, ==, "Hello ");
  bln_tool_parser_push (p, "box> x", -1, content, calls);
  g_assert_cmpstr (content->str, ==, "Hello <toolbox> x");
  /* a call cut off by max_tokens is still read when complete enough (here it
   * is streamed: its arguments object is complete) */
  bln_tool_parser_push (p, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}", -1, content,
                        calls);
  bln_tool_parser_finish (p, content, calls);
  merge_continuations (calls);
  g_assert_cmpuint (calls->len, ==, 1);
  c = calls->pdata[0];
  g_assert_cmpstr (c->name, ==, "f");
  g_assert_cmpstr (c->arguments, ==, "{\"a\": 1}");
  g_assert_cmpstr (content->str, ==, "Hello <toolbox> x");
  /* the arguments given as a JSON string: read whole, at the end */
  g_ptr_array_set_size (calls, 0);
  bln_tool_parser_push (p, "<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"b\\\": 2}\"}", -1,
                        content, calls);
  g_assert_cmpuint (calls->len, ==, 0);
  bln_tool_parser_push (p, "</tool_call>", -1, content, calls);
  g_assert_cmpuint (calls->len, ==, 1);
  c = calls->pdata[0];
  g_assert_cmpstr (c->name, ==, "g");
  g_assert_cmpstr (c->arguments, ==, "{\"b\": 2}");

  g_assert_cmpint (bln_tool_format_detect (NULL), ==, BLN_TOOL_FORMAT_NONE);
  g_assert_cmpint (bln_tool_format_from_name ("deepseek"), ==, BLN_TOOL_FORMAT_DEEPSEEK);
}

/* A DeepSeek call is reported once its name is known, its arguments as they
 * arrive, never a byte that the whole call would strip. */
static void
test_deepseek_streams (void)
{
  g_autoptr (BlnToolParser) p = bln_tool_parser_new (BLN_TOOL_FORMAT_DEEPSEEK);
  g_autoptr (GPtrArray) calls = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_tool_call_free);
  g_autoptr (GString) content = g_string_new (NULL);
  BlnToolCall *c;

  bln_tool_parser_push (p, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n"
                        "```json\n {\"a\": ", -1, content, calls);
  g_assert_cmpuint (calls->len, ==, 2);
  c = calls->pdata[0];
  g_assert_false (c->continuation);
  g_assert_cmpstr (c->name, ==, "f");
  c = calls->pdata[1];
  g_assert_true (c->continuation);
  g_assert_cmpstr (c->arguments, ==, "{\"a\":");
  bln_tool_parser_push (p, "1}\n``", -1, content, calls);
  g_assert_cmpuint (calls->len, ==, 3);
  g_assert_cmpstr (((BlnToolCall *) calls->pdata[2])->arguments, ==, " 1}");
  bln_tool_parser_push (p, "`<｜tool▁call▁end｜><｜tool▁calls▁end｜>", -1, content, calls);
  bln_tool_parser_finish (p, content, calls);
  g_assert_cmpuint (calls->len, ==, 3);
  g_assert_cmpstr (content->str, ==, "");
}

/* A Qwen call is reported once its name and the start of its arguments
 * object are known, then the object's text as it arrives, never a byte
 * that the whole call would not have (a piece of the end marker, trailing
 * space of an object that is not closed yet). */
static void
test_qwen_streams (void)
{
  g_autoptr (BlnToolParser) p = bln_tool_parser_new (BLN_TOOL_FORMAT_QWEN);
  g_autoptr (GPtrArray) calls = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_tool_call_free);
  g_autoptr (GString) content = g_string_new (NULL);
  BlnToolCall *c;

  bln_tool_parser_push (p, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"argu", -1,
                        content, calls);
  g_assert_cmpuint (calls->len, ==, 0);
  g_assert_cmpstr (content->str, ==, "Let me look.\n");
  bln_tool_parser_push (p, "ments\": {\"city\": \"Par", -1, content, calls);
  g_assert_cmpuint (calls->len, ==, 2);
  c = calls->pdata[0];
  g_assert_false (c->continuation);
  g_assert_cmpstr (c->name, ==, "get_weather");
  g_assert_cmpstr (c->arguments, ==, "");
  c = calls->pdata[1];
  g_assert_true (c->continuation);
  g_assert_cmpstr (c->arguments, ==, "{\"city\": \"Par");
  /* "is\"} " : the object closes; what follows it is not arguments */
  bln_tool_parser_push (p, "is\"}}\n</tool", -1, content, calls);
  g_assert_cmpuint (calls->len, ==, 3);
  g_assert_cmpstr (((BlnToolCall *) calls->pdata[2])->arguments, ==, "is\"}");
  bln_tool_parser_push (p, "_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {  ", -1,
                        content, calls);
  /* second call: its first delta, and "{" but not the trailing spaces yet */
  g_assert_cmpuint (calls->len, ==, 5);
  g_assert_cmpstr (((BlnToolCall *) calls->pdata[3])->name, ==, "now");
  g_assert_cmpstr (((BlnToolCall *) calls->pdata[4])->arguments, ==, "{");
  bln_tool_parser_push (p, "}}\n</tool_call>", -1, content, calls);
  bln_tool_parser_finish (p, content, calls);
  g_assert_cmpuint (calls->len, ==, 6);
  g_assert_cmpstr (((BlnToolCall *) calls->pdata[5])->arguments, ==, "  }");
  g_assert_cmpstr (content->str, ==, "Let me look.\n");
}

static void
test_deepseek_v31_form (void)
{
  g_autoptr (BlnToolParser) p = bln_tool_parser_new (BLN_TOOL_FORMAT_DEEPSEEK);
  g_autoptr (GPtrArray) calls = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_tool_call_free);
  g_autoptr (GString) content = g_string_new (NULL);

  bln_tool_parser_push (p, "ok<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>mcp__fs__read"
                        "<｜tool▁sep｜>{\"path\": \"/a\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                        -1, content, calls);
  bln_tool_parser_finish (p, content, calls);
  g_assert_cmpuint (calls->len, ==, 1);
  g_assert_cmpstr (((BlnToolCall *) calls->pdata[0])->name, ==, "mcp__fs__read");
  g_assert_cmpstr (((BlnToolCall *) calls->pdata[0])->arguments, ==, "{\"path\": \"/a\"}");
  g_assert_cmpstr (content->str, ==, "ok");
}

/* The deltas Cherry Studio's AI SDK accepts, from an R1-style output that
 * thinks (block opened by the prompt) and then calls two tools, fed in pieces
 * of every size: reasoning_content first, then per call one delta with index,
 * id, type and name and argument deltas with index only. */
static void
test_chat_output_deltas (void)
{
  const char *text =
      "I need the weather.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
      "<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n"
      "<｜tool▁call▁begin｜>function<｜tool▁sep｜>mcp__t__now\n```json\n{}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  gsize n = strlen (text), chunk;

  for (chunk = 1; chunk <= n; chunk += (chunk < 16 ? 1 : 37))
    {
      g_autoptr (BlnChatOutput) out = bln_chat_output_new (TRUE, TRUE, BLN_TOOL_FORMAT_DEEPSEEK,
                                                           NULL);
      g_autoptr (GPtrArray) d = g_ptr_array_new_with_free_func ((GDestroyNotify) json_object_unref);
      g_autoptr (GString) reasoning = g_string_new (NULL);
      g_autoptr (JsonObject) msg = NULL;
      GString *args[2] = { g_string_new (NULL), g_string_new (NULL) };
      gboolean seen[2] = { FALSE, FALSE };
      gsize at;
      guint i;

      for (at = 0; at < n; at += chunk)
        {
          g_autofree char *piece = g_strndup (text + at, MIN (chunk, n - at));
          bln_chat_output_push (out, piece, d);
        }
      bln_chat_output_finish (out, d);
      for (i = 0; i < d->len; i++)
        {
          JsonObject *o = d->pdata[i];

          if (json_object_has_member (o, "reasoning_content"))
            {
              g_assert_false (seen[0]);   /* all thinking comes before the calls */
              g_string_append (reasoning, json_object_get_string_member (o, "reasoning_content"));
            }
          else if (json_object_has_member (o, "tool_calls"))
            {
              JsonObject *c = json_array_get_object_element (
                  json_object_get_array_member (o, "tool_calls"), 0);
              JsonObject *f = json_object_get_object_member (c, "function");
              gint64 k = json_object_get_int_member (c, "index");

              g_assert_cmpint (k, >=, 0);
              g_assert_cmpint (k, <, 2);
              if (!seen[k])
                {
                  g_assert_true (g_str_has_prefix (json_object_get_string_member (c, "id"),
                                                   "call_"));
                  g_assert_cmpstr (json_object_get_string_member (c, "type"), ==, "function");
                  g_assert_cmpstr (json_object_get_string_member (f, "name"), ==,
                                   k == 0 ? "get_weather" : "mcp__t__now");
                  seen[k] = TRUE;
                }
              else
                {
                  g_assert_false (json_object_has_member (c, "id"));
                  g_assert_false (json_object_has_member (f, "name"));
                }
              g_string_append (args[k], json_object_get_string_member (f, "arguments"));
            }
          else
            g_assert_cmpstr (json_object_get_string_member (o, "content"), ==, "");
        }
      g_assert_cmpstr (reasoning->str, ==, "I need the weather.\n");
      g_assert_cmpstr (args[0]->str, ==, "{\"city\": \"Paris\"}");
      g_assert_cmpstr (args[1]->str, ==, "{}");
      g_assert_cmpuint (bln_chat_output_n_tool_calls (out), ==, 2);
      msg = bln_chat_output_message (out);
      g_assert_true (json_object_get_null_member (msg, "content"));
      g_assert_cmpstr (json_object_get_string_member (msg, "reasoning_content"), ==,
                       reasoning->str);
      g_assert_cmpuint (json_array_get_length (json_object_get_array_member (msg, "tool_calls")),
                        ==, 2);
      g_string_free (args[0], TRUE);
      g_string_free (args[1], TRUE);
    }
}

/* Parses @text in pieces of @chunk bytes; returns content + "\x01" + every
 * call as name "\x02" arguments "\x03". */
static char *
parse_summary (BlnToolFormat fmt, const char *text, gsize chunk)
{
  g_autoptr (BlnToolParser) p = bln_tool_parser_new (fmt);
  g_autoptr (GPtrArray) calls = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_tool_call_free);
  GString *out = g_string_new (NULL);
  gsize n = strlen (text), at;
  guint i;

  for (at = 0; at < n; at += chunk)
    bln_tool_parser_push (p, text + at, MIN (chunk, n - at), out, calls);
  bln_tool_parser_finish (p, out, calls);
  merge_continuations (calls);
  g_string_append_c (out, '\x01');
  for (i = 0; i < calls->len; i++)
    {
      BlnToolCall *c = calls->pdata[i];
      g_assert_true (*c->name != '\0');
      g_string_append_printf (out, "%s\x02%s\x03", c->name, c->arguments);
    }
  return g_string_free (out, FALSE);
}

/* Random mixtures of markers, JSON and text: never a crash, and the result
 * never depends on how the text was cut into pieces. */
static void
test_random_pieces (void)
{
  static const char *const frags[] = {
    "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
    "<｜tool▁calls▁end｜>", "<｜tool▁sep｜>", "function", "get_x", "\n", "```json\n", "```",
    "{\"a\": 1}", "<tool_call>", "</tool_call>", "{\"name\": \"f\", \"arguments\": {}}",
    "hello ", "<", "｜", "{", "}", " ", "<tool_", "<｜tool", "é",
    "{\"name\": \"g\", \"arguments\": {\"s\": \"", "\"", "</tool_", "\"arguments\": ", "\\",
    "{\"arguments\": {\"x\": [1, {", "]", ", \"name\": \"h\"}",
  };
  GRand *rng = g_rand_new_with_seed (11);
  int round;

  for (round = 0; round < 3000; round++)
    {
      g_autoptr (GString) text = g_string_new (NULL);
      BlnToolFormat fmt = round % 2 ? BLN_TOOL_FORMAT_DEEPSEEK : BLN_TOOL_FORMAT_QWEN;
      g_autofree char *whole = NULL;
      g_autofree char *cut = NULL;
      int k, n = g_rand_int_range (rng, 1, 14);

      for (k = 0; k < n; k++)
        g_string_append (text, frags[g_rand_int_range (rng, 0, G_N_ELEMENTS (frags))]);
      whole = parse_summary (fmt, text->str, text->len);
      cut = parse_summary (fmt, text->str, (gsize) g_rand_int_range (rng, 1, 8));
      if (!g_str_equal (whole, cut))
        g_error ("pieces change the result for %s", text->str);
    }
  g_rand_free (rng);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/ToolCalls/rendered-by-templates", test_rendered);
  g_test_add_func ("/Baleen/ToolCalls/plain-and-cut", test_plain_and_cut);
  g_test_add_func ("/Baleen/ToolCalls/deepseek-v3.1", test_deepseek_v31_form);
  g_test_add_func ("/Baleen/ToolCalls/chat-output-deltas", test_chat_output_deltas);
  g_test_add_func ("/Baleen/ToolCalls/random-pieces", test_random_pieces);
  g_test_add_func ("/Baleen/ToolCalls/deepseek-streams", test_deepseek_streams);
  g_test_add_func ("/Baleen/ToolCalls/qwen-streams", test_qwen_streams);
  return g_test_run ();
}
