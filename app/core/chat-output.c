/* chat-output.c — see chat-output.h. */
#include "chat-output.h"

#include "reasoning.h"

struct _BlnChatOutput {
  BlnReasoningSplit *split;    /* NULL: no reasoning */
  BlnToolParser *parser;       /* NULL: no tool parsing */
  char *forced;                /* forced call's name */
  gboolean forced_started;
  GString *reasoning;          /* everything, for the message */
  GString *content;
  GPtrArray *calls;            /* JsonObject* in the message's form */
};

BlnChatOutput *
bln_chat_output_new (gboolean reasoning, gboolean starts_inside, BlnToolFormat tools,
                     const char *forced_tool)
{
  BlnChatOutput *out = g_new0 (BlnChatOutput, 1);

  if (reasoning && forced_tool == NULL)
    out->split = bln_reasoning_split_new (starts_inside);
  if (tools != BLN_TOOL_FORMAT_NONE && forced_tool == NULL)
    out->parser = bln_tool_parser_new (tools);
  out->forced = g_strdup (forced_tool);
  out->reasoning = g_string_new (NULL);
  out->content = g_string_new (NULL);
  out->calls = g_ptr_array_new_with_free_func ((GDestroyNotify) json_object_unref);
  return out;
}

void
bln_chat_output_free (BlnChatOutput *out)
{
  if (out == NULL)
    return;
  g_clear_pointer (&out->split, bln_reasoning_split_free);
  g_clear_pointer (&out->parser, bln_tool_parser_free);
  g_free (out->forced);
  g_string_free (out->reasoning, TRUE);
  g_string_free (out->content, TRUE);
  g_ptr_array_unref (out->calls);
  g_free (out);
}

guint
bln_chat_output_n_tool_calls (BlnChatOutput *out)
{
  return out->calls->len;
}

const char *
bln_chat_output_reasoning (BlnChatOutput *out)
{
  return out->reasoning->str;
}

static JsonObject *
text_delta (const char *field, const char *text)
{
  JsonObject *d = json_object_new ();

  json_object_set_string_member (d, field, text);
  return d;
}

static JsonObject *
call_delta (guint index, const char *id, const char *name, const char *arguments)
{
  JsonObject *d = json_object_new (), *c = json_object_new (), *f = json_object_new ();
  JsonArray *a = json_array_new ();

  json_object_set_int_member (c, "index", index);
  if (id != NULL)
    {
      json_object_set_string_member (c, "id", id);
      json_object_set_string_member (c, "type", "function");
      json_object_set_string_member (f, "name", name);
    }
  json_object_set_string_member (f, "arguments", arguments);
  json_object_set_object_member (c, "function", f);
  json_array_add_object_element (a, c);
  json_object_set_array_member (d, "tool_calls", a);
  return d;
}

/* Records a call for the message and reports its first delta. */
static JsonObject *
add_call (BlnChatOutput *out, const char *name, const char *arguments, GPtrArray *deltas)
{
  g_autofree char *id = g_strdup_printf ("call_%08x%08x", g_random_int (), g_random_int ());
  JsonObject *c = json_object_new (), *f = json_object_new ();
  guint index = out->calls->len;

  json_object_set_string_member (c, "id", id);
  json_object_set_string_member (c, "type", "function");
  json_object_set_string_member (f, "name", name);
  json_object_set_string_member (f, "arguments", arguments);
  json_object_set_object_member (c, "function", f);
  g_ptr_array_add (out->calls, c);
  g_ptr_array_add (deltas, call_delta (index, id, name, ""));
  if (*arguments)
    g_ptr_array_add (deltas, call_delta (index, NULL, NULL, arguments));
  return f;
}

static void
emit_content (BlnChatOutput *out, GString *content, GPtrArray *new_calls, GPtrArray *deltas)
{
  guint i;

  if (content->len > 0)
    {
      g_string_append_len (out->content, content->str, (gssize) content->len);
      g_ptr_array_add (deltas, text_delta ("content", content->str));
    }
  for (i = 0; i < new_calls->len; i++)
    {
      BlnToolCall *tc = new_calls->pdata[i];

      if (tc->continuation && out->calls->len > 0)
        {
          /* more arguments of the last call */
          guint index = out->calls->len - 1;
          JsonObject *f = json_object_get_object_member (out->calls->pdata[index], "function");
          g_autofree char *args = g_strconcat (json_object_get_string_member (f, "arguments"),
                                               tc->arguments, NULL);

          json_object_set_string_member (f, "arguments", args);
          g_ptr_array_add (deltas, call_delta (index, NULL, NULL, tc->arguments));
        }
      else
        add_call (out, tc->name, tc->arguments, deltas);
    }
}

static void
process (BlnChatOutput *out, const char *text, gboolean finish, GPtrArray *deltas)
{
  g_autoptr (GString) reasoning = g_string_new (NULL);
  g_autoptr (GString) answer = g_string_new (NULL);
  g_autoptr (GString) content = g_string_new (NULL);
  g_autoptr (GPtrArray) calls = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_tool_call_free);

  if (out->forced != NULL)
    {
      JsonObject *f;

      if (!out->forced_started)
        {
          add_call (out, out->forced, "", deltas);
          out->forced_started = TRUE;
        }
      f = out->calls->pdata[0];
      f = json_object_get_object_member (f, "function");
      if (text != NULL && *text)
        {
          g_autofree char *args = g_strconcat (json_object_get_string_member (f, "arguments"),
                                               text, NULL);
          json_object_set_string_member (f, "arguments", args);
          g_ptr_array_add (deltas, call_delta (0, NULL, NULL, text));
        }
      return;
    }

  if (out->split != NULL)
    {
      if (text != NULL)
        bln_reasoning_split_push (out->split, text, -1, reasoning, answer);
      if (finish)
        bln_reasoning_split_finish (out->split, reasoning, answer);
    }
  else if (text != NULL)
    g_string_append (answer, text);
  if (reasoning->len > 0)
    {
      g_string_append_len (out->reasoning, reasoning->str, (gssize) reasoning->len);
      g_ptr_array_add (deltas, text_delta ("reasoning_content", reasoning->str));
    }
  if (out->parser != NULL)
    {
      bln_tool_parser_push (out->parser, answer->str, (gssize) answer->len, content, calls);
      if (finish)
        bln_tool_parser_finish (out->parser, content, calls);
    }
  else
    g_string_append_len (content, answer->str, (gssize) answer->len);
  emit_content (out, content, calls, deltas);
}

void
bln_chat_output_push (BlnChatOutput *out, const char *text, GPtrArray *deltas)
{
  process (out, text, FALSE, deltas);
}

void
bln_chat_output_finish (BlnChatOutput *out, GPtrArray *deltas)
{
  process (out, NULL, TRUE, deltas);
}

JsonObject *
bln_chat_output_message (BlnChatOutput *out)
{
  JsonObject *m = json_object_new ();
  guint i;

  json_object_set_string_member (m, "role", "assistant");
  if (out->calls->len > 0 && out->content->len == 0)
    json_object_set_null_member (m, "content");
  else
    json_object_set_string_member (m, "content", out->content->str);
  if (out->split != NULL && out->reasoning->len > 0)
    json_object_set_string_member (m, "reasoning_content", out->reasoning->str);
  if (out->calls->len > 0)
    {
      JsonArray *a = json_array_new ();

      for (i = 0; i < out->calls->len; i++)
        json_array_add_object_element (a, json_object_ref (out->calls->pdata[i]));
      json_object_set_array_member (m, "tool_calls", a);
    }
  return m;
}
