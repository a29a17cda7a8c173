/* fuzz-jinja.c — libFuzzer target for the chat-template interpreter: any
 * input, taken as a template, must either fail to parse or render with an
 * error, or render within the limits (jinja.h) — never crash, hang or leak.
 * It is rendered the way chat templates are: with a short conversation, a
 * tool list, the special-token strings and add_generation_prompt. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "chat.h"
#include "jinja.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static const char conversation[] =
  "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
  "{\"role\":\"user\",\"content\":\"Hi <b>there</b>\"},"
  "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"hm\","
  "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":"
  "{\"name\":\"get_time\",\"arguments\":\"{\\\"tz\\\":\\\"UTC\\\"}\"}}]},"
  "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"12:00\"},"
  "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"and now?\"}]}]";
static const char tools[] =
  "[{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"description\":\"Time\","
  "\"parameters\":{\"type\":\"object\",\"properties\":{\"tz\":{\"type\":\"string\"}}}}}]";

static JsonNode *
parse (const char *text)
{
  g_autoptr (JsonParser) p = json_parser_new ();

  if (!json_parser_load_from_data (p, text, -1, NULL))
    return NULL;
  return json_node_copy (json_parser_get_root (p));
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static JsonNode *messages, *tool_list;
  g_autofree char *src = NULL;
  g_autofree char *out = NULL;
  GError *error = NULL;

  if (size > 64 * 1024)
    return 0;   /* templates are small; longer inputs only slow the search */
  if (messages == NULL)
    {
      messages = parse (conversation);
      tool_list = parse (tools);
    }
  src = g_strndup ((const char *) data, size);
  out = bln_chat_render (src, messages, tool_list, TRUE, "<s>", "</s>", NULL, &error);
  g_clear_error (&error);
  return 0;
}
