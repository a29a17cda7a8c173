/* chat-params.c — see chat-params.h. */
#include "chat-params.h"

#include "bln-error.h"

#define MAX_STOPS 16

void
bln_chat_params_clear (BlnChatParams *p)
{
  g_clear_pointer (&p->messages, json_node_unref);
  g_clear_pointer (&p->stops, g_ptr_array_unref);
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
      json_object_set_member (copy, "content", content);
      json_array_add_object_element (out, copy);
    }
  return json_node_init_array (json_node_alloc (), out);
}

/* Fills @p from a parsed request body. FALSE with @error (whose message
 * names the field, written to *param) for anything a client must fix. */
gboolean
bln_chat_params_parse (JsonObject *o, BlnChatParams *p, const char **param, GError **error)
{
  double d;
  gint64 i;
  gboolean have;
  JsonNode *n;

#define FIELD(name) (*param = (name))
  bln_sampler_params_init (&p->sp);
  p->stops = g_ptr_array_new_with_free_func (g_free);

  FIELD ("messages");
  if ((p->messages = normalise_messages (json_object_get_member (o, "messages"), error)) == NULL)
    return FALSE;
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
