/* fuzz-chat-request.c — libFuzzer target for the request parser of the chat
 * and completions APIs (app/core/chat-params.c): any body, however deep,
 * large or malformed, must parse into parameters or fail with an error that
 * names a field — never crash, hang or leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "chat-params.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonNode *root;
  BlnChatParams p;
  const char *param = NULL;
  GError *error = NULL;

  if (size > 256 * 1024)
    return 0;
  if (!json_parser_load_from_data (parser, (const char *) data, (gssize) size, &error))
    {
      g_clear_error (&error);
      return 0;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return 0;

  memset (&p, 0, sizeof p);
  (void) bln_chat_params_parse (json_node_get_object (root), &p, &param, &error);
  g_clear_error (&error);
  bln_chat_params_clear (&p);

  memset (&p, 0, sizeof p);
  (void) bln_completion_params_parse (json_node_get_object (root), &p, &param, &error);
  g_clear_error (&error);
  bln_chat_params_clear (&p);
  return 0;
}
