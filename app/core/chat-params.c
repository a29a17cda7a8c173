/* chat-params.c — see chat-params.h. */
#include "chat-params.h"

#include "bln-error.h"

#define MAX_STOPS 16
#define MAX_PROMPTS 16

void
bln_chat_params_clear (BlnChatParams *p)
{
  g_clear_pointer (&p->messages, json_node_unref);
  g_clear_pointer (&p->prompt, json_node_unref);
  g_clear_pointer (&p->tools, json_node_unref);
  g_clear_pointer (&p->tool_choice_name, g_free);
  g_clear_pointer (&p->chat_template, g_free);
  g_clear_pointer (&p->template_kwargs, json_object_unref);
  g_clear_pointer (&p->stops, g_ptr_array_unref);
  g_clear_pointer (&p->json_schema, bln_json_schema_unref);
}

/* Reads an optional number member; FALSE (and @error) when it has another type. */
static gboolean
get_number (JsonObject *o, const char *name, double *out, gboolean *present, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);
  GType t;

  *present = FALSE;
  if (n == NULL || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  t = JSON_NODE_HOLDS_VALUE (n) ? json_node_get_value_type (n) : G_TYPE_INVALID;
  if (t != G_TYPE_INT64 && t != G_TYPE_DOUBLE)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be a number", name);
      return FALSE;
    }
  *out = json_node_get_double (n);
  *present = TRUE;
  return TRUE;
}

static gboolean
get_int (JsonObject *o, const char *name, gint64 *out, gboolean *present, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);

  *present = FALSE;
  if (n == NULL || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be an integer", name);
      return FALSE;
    }
  *out = json_node_get_int (n);
  *present = TRUE;
  return TRUE;
}

static gboolean
get_bool (JsonObject *o, const char *name, gboolean *out, GError **error)
{
  JsonNode *n = json_object_get_member (o, name);

  if (n == NULL || JSON_NODE_HOLDS_NULL (n))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be a boolean", name);
      return FALSE;
    }
  *out = json_node_get_boolean (n);
  return TRUE;
}

/* Turns a message's content (string, array of parts or null) into a string
 * node or null. Images are refused: the models served are text-only. */
static JsonNode *
normalise_content (JsonNode *content, guint index, GError **error)
{
  g_autoptr (GString) joined = NULL;
  JsonArray *parts;
  guint i;

  if (content == NULL || JSON_NODE_HOLDS_NULL (content))
    return json_node_new (JSON_NODE_NULL);
  if (JSON_NODE_HOLDS_VALUE (content) && json_node_get_value_type (content) == G_TYPE_STRING)
    return json_node_copy (content);
  if (!JSON_NODE_HOLDS_ARRAY (content))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "messages[%u].content must be a string or an array of parts", index);
      return NULL;
    }
  joined = g_string_new (NULL);
  parts = json_node_get_array (content);
  for (i = 0; i < json_array_get_length (parts); i++)
    {
      JsonNode *pn = json_array_get_element (parts, i);
      JsonObject *part = JSON_NODE_HOLDS_OBJECT (pn) ? json_node_get_object (pn) : NULL;
      const char *type = part ? json_object_get_string_member_with_default (part, "type", NULL)
                              : NULL;
      JsonNode *tn;

      if (type == NULL)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "messages[%u].content[%u] must be an object with a type", index, i);
          return NULL;
        }
      if (!g_str_equal (type, "text"))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                       "messages[%u].content[%u]: the model accepts only text, not '%s'", index,
                       i, type);
          return NULL;
        }
      tn = json_object_get_member (part, "text");
      if (tn == NULL || !JSON_NODE_HOLDS_VALUE (tn)
          || json_node_get_value_type (tn) != G_TYPE_STRING)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "messages[%u].content[%u].text must be a string", index, i);
          return NULL;
        }
      g_string_append (joined, json_node_get_string (tn));
    }
  return json_node_init_string (json_node_alloc (), joined->str);
}

static JsonNode *
normalise_messages (JsonNode *node, GError **error)
{
  g_autoptr (JsonArray) out = NULL;
  JsonArray *in;
  guint i;

  if (node == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "messages is required");
      return NULL;
    }
  if (!JSON_NODE_HOLDS_ARRAY (node) || json_array_get_length (json_node_get_array (node)) == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "messages must be a non-empty array of message objects");
      return NULL;
    }
  in = json_node_get_array (node);
  out = json_array_new ();
  for (i = 0; i < json_array_get_length (in); i++)
    {
      JsonNode *mn = json_array_get_element (in, i);
      JsonObject *m, *copy;
      JsonNode *role, *content;
      GList *members, *l;

      if (!JSON_NODE_HOLDS_OBJECT (mn))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "messages[%u] must be an object", i);
          return NULL;
        }
      m = json_node_get_object (mn);
      role = json_object_get_member (m, "role");
      if (role == NULL || !JSON_NODE_HOLDS_VALUE (role)
          || json_node_get_value_type (role) != G_TYPE_STRING)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "messages[%u].role must be a string", i);
          return NULL;
        }
      content = normalise_content (json_object_get_member (m, "content"), i, error);
      if (content == NULL)
        return NULL;
      copy = json_object_new ();
      members = json_object_get_members (m);
      for (l = members; l != NULL; l = l->next)
        if (!g_str_equal (l->data, "content"))
          json_object_set_member (copy, l->data,
                                  json_node_copy (json_object_get_member (m, l->data)));
      g_list_free (members);
      if (JSON_NODE_HOLDS_VALUE (content) && *json_node_get_string (content) == '\0'
          && json_object_has_member (m, "tool_calls")
          && JSON_NODE_HOLDS_ARRAY (json_object_get_member (m, "tool_calls")))
        {
          json_node_unref (content);
          content = json_node_new (JSON_NODE_NULL);
        }
      json_object_set_member (copy, "content", content);
      json_array_add_object_element (out, copy);
    }
  return json_node_init_array (json_node_alloc (), out);
}

/* Fills @p from a parsed request body. FALSE with @error (whose message
 * names the field, written to *param) for anything a client must fix. */
static gboolean
invalid (GError **error, const char *msg)
{
  g_set_error_literal (error, BLN_ERROR, BLN_ERROR_INVALID, msg);
  return FALSE;
}

static const char *
string_member (JsonObject *o, const char *name)
{
  JsonNode *n = o ? json_object_get_member (o, name) : NULL;

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string (n);
}

/* tools, tool_choice, logprobs, response_format, thinking: the chat-only fields */
static gboolean
parse_chat_extras (JsonObject *o, BlnChatParams *p, const char **param, GError **error)
{
  JsonNode *n;
  gint64 i;
  gboolean have;

#define FIELD(name) (*param = (name))
  FIELD ("tools");
  n = json_object_get_member (o, "tools");
  if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    {
      JsonArray *a;
      guint k;

      if (!JSON_NODE_HOLDS_ARRAY (n))
        return invalid (error, "tools must be an array of tool objects");
      a = json_node_get_array (n);
      for (k = 0; k < json_array_get_length (a); k++)
        {
          JsonNode *t = json_array_get_element (a, k);
          JsonObject *f;

          if (!JSON_NODE_HOLDS_OBJECT (t))
            return invalid (error, "tools must be an array of tool objects");
          n = json_object_get_member (json_node_get_object (t), "function");
          f = n && JSON_NODE_HOLDS_OBJECT (n) ? json_node_get_object (n) : NULL;
          if (string_member (f, "name") == NULL)
            return invalid (error, "every tool needs function.name (a string)");
        }
      if (json_array_get_length (a) > 0)
        p->tools = json_node_copy (json_object_get_member (o, "tools"));
    }
  FIELD ("tool_choice");
  n = json_object_get_member (o, "tool_choice");
  p->tool_choice = BLN_TOOL_CHOICE_AUTO;
  if (n != NULL && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING)
    {
      const char *c = json_node_get_string (n);

      if (g_str_equal (c, "none"))
        p->tool_choice = BLN_TOOL_CHOICE_NONE;
      else if (g_str_equal (c, "required"))
        p->tool_choice = BLN_TOOL_CHOICE_REQUIRED;
      else if (!g_str_equal (c, "auto"))
        return invalid (error, "tool_choice must be \"none\", \"auto\", \"required\" or "
                               "a function object");
    }
  else if (n != NULL && JSON_NODE_HOLDS_OBJECT (n))
    {
      JsonNode *f = json_object_get_member (json_node_get_object (n), "function");
      const char *name = f && JSON_NODE_HOLDS_OBJECT (f)
                           ? string_member (json_node_get_object (f), "name") : NULL;
      gboolean found = FALSE;
      guint k;

      if (name == NULL)
        return invalid (error, "tool_choice.function.name must be a string");
      for (k = 0; p->tools && k < json_array_get_length (json_node_get_array (p->tools)); k++)
        {
          JsonObject *t = json_array_get_object_element (json_node_get_array (p->tools), k);
          if (g_strcmp0 (string_member (json_object_get_object_member (t, "function"), "name"),
                         name) == 0)
            found = TRUE;
        }
      if (!found)
        return invalid (error, "tool_choice names a function that is not in tools");
      p->tool_choice = BLN_TOOL_CHOICE_NAMED;
      p->tool_choice_name = g_strdup (name);
    }
  else if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    return invalid (error, "tool_choice must be a string or an object");
  if (p->tools == NULL && p->tool_choice != BLN_TOOL_CHOICE_AUTO
      && p->tool_choice != BLN_TOOL_CHOICE_NONE)
    return invalid (error, "tool_choice needs tools");

  FIELD ("logprobs");
  if (!get_bool (o, "logprobs", &p->logprobs, error))
    return FALSE;
  FIELD ("top_logprobs");
  if (!get_int (o, "top_logprobs", &i, &have, error))
    return FALSE;
  if (have && (i < 0 || i > 20))
    return invalid (error, "top_logprobs must be between 0 and 20");
  if (have && !p->logprobs && i > 0)
    return invalid (error, "top_logprobs needs logprobs: true");
  p->top_logprobs = have ? (int) i : 0;

  FIELD ("response_format");
  n = json_object_get_member (o, "response_format");
  if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    {
      const char *t = JSON_NODE_HOLDS_OBJECT (n) ? string_member (json_node_get_object (n), "type")
                                                 : NULL;
      if (t == NULL)
        return invalid (error, "response_format must be an object with a type");
      if (g_str_equal (t, "json_object"))
        p->json_object = TRUE;
      else if (g_str_equal (t, "json_schema"))
        {
          JsonNode *js = json_object_get_member (json_node_get_object (n), "json_schema");
          JsonObject *jo;
          JsonNode *schema, *name, *strict;

          p->json_object = TRUE;
          FIELD ("response_format.json_schema");
          if (js == NULL || !JSON_NODE_HOLDS_OBJECT (js))
            return invalid (error, "response_format.json_schema must be an object with a name "
                                   "and a schema");
          jo = json_node_get_object (js);
          name = json_object_get_member (jo, "name");
          if (name != NULL && (!JSON_NODE_HOLDS_VALUE (name)
                               || json_node_get_value_type (name) != G_TYPE_STRING))
            return invalid (error, "response_format.json_schema.name must be a string");
          strict = json_object_get_member (jo, "strict");
          if (strict != NULL && !JSON_NODE_HOLDS_NULL (strict)
              && (!JSON_NODE_HOLDS_VALUE (strict)
                  || json_node_get_value_type (strict) != G_TYPE_BOOLEAN))
            return invalid (error, "response_format.json_schema.strict must be a boolean");
          schema = json_object_get_member (jo, "schema");
          FIELD ("response_format.json_schema.schema");
          if (schema != NULL && !JSON_NODE_HOLDS_NULL (schema))
            {
              g_autoptr (GError) serr = NULL;

              /* the schema is always enforced (strict or not): one outside the
               * supported subset is refused, never ignored */
              p->json_schema = bln_json_schema_compile (schema, &serr);
              if (p->json_schema == NULL)
                {
                  g_set_error (error, BLN_ERROR, serr->code, "response_format.json_schema.schema: "
                               "%s", serr->message);
                  return FALSE;
                }
            }
        }
      else if (!g_str_equal (t, "text"))
        return invalid (error, "response_format.type must be text, json_object or json_schema");
    }

  FIELD ("thinking");
  p->thinking = -1;
  n = json_object_get_member (o, "thinking");
  if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    {
      const char *t = JSON_NODE_HOLDS_OBJECT (n) ? string_member (json_node_get_object (n), "type")
                                                 : NULL;
      if (t == NULL || (!g_str_equal (t, "enabled") && !g_str_equal (t, "disabled")))
        return invalid (error, "thinking must be {\"type\": \"enabled\" | \"disabled\"}");
      p->thinking = g_str_equal (t, "enabled");
    }

  FIELD ("chat_template");
  n = json_object_get_member (o, "chat_template");
  if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    {
      if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
        return invalid (error, "chat_template must be a string");
      p->chat_template = g_strdup (json_node_get_string (n));
    }
  FIELD ("chat_template_kwargs");
  n = json_object_get_member (o, "chat_template_kwargs");
  if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    {
      if (!JSON_NODE_HOLDS_OBJECT (n))
        return invalid (error, "chat_template_kwargs must be an object");
      p->template_kwargs = json_object_ref (json_node_get_object (n));
    }
#undef FIELD
  return TRUE;
}

static gboolean parse_common (JsonObject *o, BlnChatParams *p, const char **param,
                              GError **error);

gboolean
bln_chat_params_parse (JsonObject *o, BlnChatParams *p, const char **param, GError **error)
{
  bln_sampler_params_init (&p->sp);
  p->stops = g_ptr_array_new_with_free_func (g_free);
  *param = "messages";
  if ((p->messages = normalise_messages (json_object_get_member (o, "messages"), error)) == NULL)
    return FALSE;
  if (!parse_chat_extras (o, p, param, error))
    return FALSE;
  return parse_common (o, p, param, error);
}

/* One prompt: a string or a non-empty array of integers. */
static gboolean
is_prompt (JsonNode *n)
{
  JsonArray *a;
  guint k;

  if (JSON_NODE_HOLDS_VALUE (n))
    return json_node_get_value_type (n) == G_TYPE_STRING;
  if (!JSON_NODE_HOLDS_ARRAY (n) || json_array_get_length (json_node_get_array (n)) == 0)
    return FALSE;
  a = json_node_get_array (n);
  for (k = 0; k < json_array_get_length (a); k++)
    {
      JsonNode *e = json_array_get_element (a, k);
      if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_INT64)
        return FALSE;
    }
  return TRUE;
}

gboolean
bln_completion_params_parse (JsonObject *o, BlnChatParams *p, const char **param,
                             GError **error)
{
  JsonNode *n = json_object_get_member (o, "prompt");
  g_autoptr (JsonArray) prompts = json_array_new ();
  gint64 i;
  gboolean have;

  bln_sampler_params_init (&p->sp);
  p->stops = g_ptr_array_new_with_free_func (g_free);
  p->thinking = -1;
  *param = "prompt";
  if (n == NULL)
    return invalid (error, "prompt is required");
  p->prompt = json_node_init_array (json_node_alloc (), prompts);
  if (is_prompt (n))
    json_array_add_element (json_node_get_array (p->prompt), json_node_copy (n));
  else if (JSON_NODE_HOLDS_ARRAY (n) && json_array_get_length (json_node_get_array (n)) > 0
           && json_array_get_length (json_node_get_array (n)) <= MAX_PROMPTS)
    {
      JsonArray *a = json_node_get_array (n);
      guint k;

      for (k = 0; k < json_array_get_length (a); k++)
        {
          if (!is_prompt (json_array_get_element (a, k)))
            return invalid (error, "prompt must be a string, an array of token ids, or an "
                                   "array of up to 16 of those");
          json_array_add_element (json_node_get_array (p->prompt),
                                  json_node_copy (json_array_get_element (a, k)));
        }
    }
  else
    return invalid (error, "prompt must be a string, an array of token ids, or an array of "
                           "up to 16 of those");
  *param = "echo";
  if (!get_bool (o, "echo", &p->echo, error))
    return FALSE;
  *param = "logprobs";
  if (!get_int (o, "logprobs", &i, &have, error))
    return FALSE;
  if (have && (i < 0 || i > 5))
    return invalid (error, "logprobs must be between 0 and 5");
  p->logprobs = have;
  p->top_logprobs = have ? (int) i : 0;
  return parse_common (o, p, param, error);
}

/* The fields chat and completions share. */
static gboolean
parse_common (JsonObject *o, BlnChatParams *p, const char **param, GError **error)
{
  double d;
  gint64 i;
  gboolean have;
  JsonNode *n;

#define FIELD(name) (*param = (name))
  FIELD ("stream");
  if (!get_bool (o, "stream", &p->stream, error))
    return FALSE;
  n = json_object_get_member (o, "stream_options");
  if (n != NULL && JSON_NODE_HOLDS_OBJECT (n))
    {
      FIELD ("stream_options.include_usage");
      if (!get_bool (json_node_get_object (n), "include_usage", &p->include_usage, error))
        return FALSE;
    }
  else if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    {
      FIELD ("stream_options");
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "stream_options must be an object");
      return FALSE;
    }
  FIELD ("max_tokens");
  if (!get_int (o, "max_tokens", &i, &have, error))
    return FALSE;
  if (!have)
    {
      FIELD ("max_completion_tokens");
      if (!get_int (o, "max_completion_tokens", &i, &have, error))
        return FALSE;
    }
  if (have)
    {
      if (i < 1 || i > G_MAXINT)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s must be at least 1", *param);
          return FALSE;
        }
      p->max_tokens = (int) i;
    }
#define NUM(name, field) \
  FIELD (name); \
  if (!get_number (o, name, &d, &have, error)) \
    return FALSE; \
  if (have) \
    p->sp.field = (float) d;
  NUM ("temperature", temperature);
  NUM ("top_p", top_p);
  NUM ("min_p", min_p);
  NUM ("presence_penalty", presence_penalty);
  NUM ("frequency_penalty", frequency_penalty);
  NUM ("repetition_penalty", repetition_penalty);
#undef NUM
  FIELD ("top_k");
  if (!get_int (o, "top_k", &i, &have, error))
    return FALSE;
  if (have)
    p->sp.top_k = (int) CLAMP (i, 0, G_MAXINT);
  FIELD ("seed");
  if (!get_int (o, "seed", &i, &have, error))
    return FALSE;
  p->have_seed = have;
  p->sp.seed = have ? (guint64) i : ((guint64) g_random_int () << 32) | g_random_int ();
  if (!bln_sampler_params_validate (&p->sp, error))
    {
      *param = NULL;
      return FALSE;
    }

  FIELD ("stop");
  n = json_object_get_member (o, "stop");
  if (n != NULL && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING)
    g_ptr_array_add (p->stops, g_strdup (json_node_get_string (n)));
  else if (n != NULL && JSON_NODE_HOLDS_ARRAY (n))
    {
      JsonArray *a = json_node_get_array (n);
      guint k;

      if (json_array_get_length (a) > MAX_STOPS)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "stop has more than %d strings",
                       MAX_STOPS);
          return FALSE;
        }
      for (k = 0; k < json_array_get_length (a); k++)
        {
          JsonNode *s = json_array_get_element (a, k);
          if (!JSON_NODE_HOLDS_VALUE (s) || json_node_get_value_type (s) != G_TYPE_STRING)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                           "stop must be a string or an array of strings");
              return FALSE;
            }
          g_ptr_array_add (p->stops, g_strdup (json_node_get_string (s)));
        }
    }
  else if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "stop must be a string or an array of strings");
      return FALSE;
    }
  g_ptr_array_add (p->stops, NULL);
#undef FIELD
  *param = NULL;
  return TRUE;
}
