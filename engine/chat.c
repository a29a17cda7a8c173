/* chat.c — chat-template rendering on top of the Jinja2 interpreter. */
#include "chat.h"
#include "jinja.h"
#include "bln-error.h"

char *
bln_chat_render (const char *template_src, JsonNode *messages, JsonNode *tools,
                 gboolean add_generation_prompt, const char *bos, const char *eos,
                 JsonObject *extra, GError **error)
{
  g_autoptr (BlnTemplate) tmpl = NULL;
  g_autoptr (JsonObject) vars = NULL;
  g_autoptr (JsonNode) root = NULL;

  g_return_val_if_fail (template_src != NULL, NULL);
  if (messages == NULL || !JSON_NODE_HOLDS_ARRAY (messages)) {
    g_set_error_literal (error, BLN_ERROR, BLN_ERROR_INVALID, "messages must be a JSON array");
    return NULL;
  }
  if (tools != NULL && !JSON_NODE_HOLDS_ARRAY (tools) && !JSON_NODE_HOLDS_NULL (tools)) {
    g_set_error_literal (error, BLN_ERROR, BLN_ERROR_INVALID, "tools must be a JSON array");
    return NULL;
  }
  if (!(tmpl = bln_template_new (template_src, error)))
    return NULL;

  vars = json_object_new ();
  json_object_set_member (vars, "messages", json_node_copy (messages));
  json_object_set_member (vars, "tools", tools ? json_node_copy (tools)
                                               : json_node_new (JSON_NODE_NULL));
  json_object_set_null_member (vars, "documents");
  json_object_set_boolean_member (vars, "add_generation_prompt", add_generation_prompt);
  json_object_set_string_member (vars, "bos_token", bos ? bos : "");
  json_object_set_string_member (vars, "eos_token", eos ? eos : "");
  if (extra) {
    JsonObjectIter it;
    const char *name;
    JsonNode *member;
    json_object_iter_init_ordered (&it, extra);
    while (json_object_iter_next_ordered (&it, &name, &member))
      json_object_set_member (vars, name, json_node_copy (member));
  }
  root = json_node_init_object (json_node_alloc (), vars);
  return bln_template_render (tmpl, root, error);
}
