/* toolcalls.c — see toolcalls.h. */
#include "toolcalls.h"

#include <string.h>
#include <json-glib/json-glib.h>

#define DS_CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define DS_CALLS_END "<｜tool▁calls▁end｜>"
#define DS_CALL_BEGIN "<｜tool▁call▁begin｜>"
#define DS_CALL_END "<｜tool▁call▁end｜>"
#define DS_SEP "<｜tool▁sep｜>"
#define QW_BEGIN "<tool_call>"
#define QW_END "</tool_call>"

struct _BlnToolParser {
  BlnToolFormat format;
  gboolean in_calls;      /* inside a block of calls */
  gboolean saw_call;
  GString *held;
  /* a DeepSeek call being streamed: reported up to `sent` bytes of its
   * arguments, which start `args_off` bytes into the held text */
  gboolean open;
  gsize args_off;
  GString *sent;
};

void
bln_tool_call_free (BlnToolCall *call)
{
  if (call == NULL)
    return;
  g_free (call->name);
  g_free (call->arguments);
  g_free (call);
}

BlnToolFormat
bln_tool_format_detect (const char *src)
{
  if (src == NULL)
    return BLN_TOOL_FORMAT_NONE;
  if (strstr (src, "tool▁call▁begin") != NULL)
    return BLN_TOOL_FORMAT_DEEPSEEK;
  if (strstr (src, "<tool_call>") != NULL)
    return BLN_TOOL_FORMAT_QWEN;
  return BLN_TOOL_FORMAT_NONE;
}

BlnToolFormat
bln_tool_format_from_name (const char *name)
{
  if (name == NULL)
    return BLN_TOOL_FORMAT_NONE;
  if (g_ascii_strcasecmp (name, "deepseek") == 0)
    return BLN_TOOL_FORMAT_DEEPSEEK;
  if (g_ascii_strcasecmp (name, "qwen") == 0 || g_ascii_strcasecmp (name, "hermes") == 0)
    return BLN_TOOL_FORMAT_QWEN;
  return BLN_TOOL_FORMAT_NONE;
}

BlnToolParser *
bln_tool_parser_new (BlnToolFormat format)
{
  BlnToolParser *p = g_new0 (BlnToolParser, 1);

  p->format = format;
  p->held = g_string_new (NULL);
  p->sent = g_string_new (NULL);
  return p;
}

void
bln_tool_parser_free (BlnToolParser *p)
{
  if (p == NULL)
    return;
  g_string_free (p->held, TRUE);
  g_string_free (p->sent, TRUE);
  g_free (p);
}

gboolean
bln_tool_parser_saw_call (BlnToolParser *p)
{
  return p->saw_call;
}

static gboolean
is_space (char c)
{
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static gboolean
has_prefix_len (const char *s, gsize n, const char *prefix)
{
  gsize pl = strlen (prefix);

  return n >= pl && memcmp (s, prefix, pl) == 0;
}

/* TRUE when the @n bytes at @s are a proper prefix of @marker. */
static gboolean
is_partial (const char *s, gsize n, const char *marker)
{
  return n < strlen (marker) && memcmp (s, marker, n) == 0;
}

/* Longest suffix of @s (length @n) that is a proper prefix of @marker. */
static gsize
partial_suffix (const char *s, gsize n, const char *marker)
{
  gsize ml = strlen (marker), k;

  for (k = MIN (n, ml - 1); k > 0; k--)
    if (memcmp (s + n - k, marker, k) == 0)
      return k;
  return 0;
}

static char *
strip_dup (const char *s, gsize n)
{
  while (n > 0 && is_space (*s))
    s++, n--;
  while (n > 0 && is_space (s[n - 1]))
    n--;
  return g_strndup (s, n);
}

/* A DeepSeek call body (between the call markers). NULL when unreadable. */
static BlnToolCall *
parse_deepseek (const char *s, gsize n)
{
  const char *sep = memmem (s, n, DS_SEP, strlen (DS_SEP));
  g_autofree char *before = NULL;
  const char *after, *end = s + n;
  BlnToolCall *call;

  if (sep == NULL)
    return NULL;
  before = strip_dup (s, sep - s);
  after = sep + strlen (DS_SEP);
  call = g_new0 (BlnToolCall, 1);
  if (g_str_equal (before, "function") || *before == '\0')
    {
      const char *nl = memchr (after, '\n', end - after);
      const char *a;
      gsize an;

      if (nl == NULL)
        {
          bln_tool_call_free (call);
          return NULL;
        }
      call->name = strip_dup (after, nl - after);
      a = nl + 1;
      an = end - a;
      while (an > 0 && is_space (*a))
        a++, an--;
      if (has_prefix_len (a, an, "```json"))
        a += 7, an -= 7;
      else if (has_prefix_len (a, an, "```"))
        a += 3, an -= 3;
      while (an > 0 && is_space (a[an - 1]))
        an--;
      if (an >= 3 && memcmp (a + an - 3, "```", 3) == 0)
        an -= 3;
      call->arguments = strip_dup (a, an);
    }
  else
    {
      call->name = g_steal_pointer (&before);
      call->arguments = strip_dup (after, end - after);
    }
  if (*call->name == '\0')
    {
      bln_tool_call_free (call);
      return NULL;
    }
  if (*call->arguments == '\0')
    {
      g_free (call->arguments);
      call->arguments = g_strdup ("{}");
    }
  return call;
}

/* What a scan of a Qwen call body, {"name": …, "arguments": …}, found so far. */
typedef struct {
  char *name;             /* the "name" member, once its string is closed */
  gssize args_start;      /* offset of the "arguments" (or "parameters") value, or -1 */
  gssize args_end;        /* just past it, or -1 while it is not complete */
  gboolean streamable;    /* the name came first and the arguments are an object */
} QwenScan;

/* The end of the JSON value at @i (a string, object, array or scalar), or
 * -1 when it runs past @n (or is not a value). */
static gssize
skip_value (const char *s, gsize n, gsize i)
{
  int depth = 0;
  gboolean in_str = FALSE;

  if (i >= n)
    return -1;
  if (s[i] != '{' && s[i] != '[' && s[i] != '"')
    {
      /* a scalar ends at a delimiter: at the end of the text it may go on */
      while (i < n && strchr (",}] \t\r\n", s[i]) == NULL)
        i++;
      return i < n ? (gssize) i : -1;
    }
  for (; i < n; i++)
    {
      char c = s[i];

      if (in_str)
        {
          if (c == '\\')
            i++;
          else if (c == '"')
            {
              in_str = FALSE;
              if (depth == 0)
                return (gssize) i + 1;
            }
        }
      else if (c == '"')
        in_str = TRUE;
      else if (c == '{' || c == '[')
        depth++;
      else if ((c == '}' || c == ']') && --depth == 0)
        return (gssize) i + 1;
    }
  return -1;
}

static gsize
skip_space (const char *s, gsize n, gsize i)
{
  while (i < n && is_space (s[i]))
    i++;
  return i;
}

/* Scans the members of a Qwen call body as far as the text goes. */
static void
qwen_scan (const char *s, gsize n, QwenScan *q)
{
  gsize i = skip_space (s, n, 0);

  memset (q, 0, sizeof *q);
  q->args_start = q->args_end = -1;
  if (i >= n || s[i] != '{')
    return;
  for (i++;;)
    {
      gsize ks, kl;
      gssize ve;

      i = skip_space (s, n, i);
      if (i >= n || s[i] != '"')
        return;
      ks = i + 1;
      ve = skip_value (s, n, i);
      if (ve < 0)
        return;
      kl = (gsize) ve - 1 - ks;
      i = skip_space (s, n, (gsize) ve);
      if (i >= n || s[i] != ':')
        return;
      i = skip_space (s, n, i + 1);
      if (i >= n)
        return;
      ve = skip_value (s, n, i);
      if (kl == 4 && memcmp (s + ks, "name", 4) == 0 && s[i] == '"' && ve > 0
          && q->name == NULL)
        {
          g_autofree char *text = g_strndup (s + i, (gsize) ve - i);
          g_autoptr (JsonNode) v = json_from_string (text, NULL);

          if (v != NULL && JSON_NODE_HOLDS_VALUE (v))
            q->name = g_strdup (json_node_get_string (v));
        }
      else if (q->args_start < 0 && ((kl == 9 && memcmp (s + ks, "arguments", 9) == 0)
                                     || (kl == 10 && memcmp (s + ks, "parameters", 10) == 0)))
        {
          q->args_start = (gssize) i;
          q->args_end = ve;
          q->streamable = q->name != NULL && s[i] == '{';
        }
      if (ve < 0)
        return;
      i = skip_space (s, n, (gsize) ve);
      if (i >= n || s[i] != ',')
        return;
      i++;
    }
}

/* A Qwen call body: {"name": …, "arguments": …}. NULL when unreadable.
 * Once the name and the start of an arguments object have been written the
 * text is a call, whatever follows (so that it can be streamed): its
 * arguments are then the object's text as written, or, when the object is
 * never closed, everything after its start. */
static BlnToolCall *
parse_qwen (const char *s, gsize n)
{
  g_autoptr (JsonParser) jp = json_parser_new ();
  JsonObject *o;
  JsonNode *name, *args;
  BlnToolCall *call;
  QwenScan q;

  qwen_scan (s, n, &q);
  if (q.streamable)
    {
      gsize end = q.args_end >= 0 ? (gsize) q.args_end : n;

      while (end > (gsize) q.args_start && is_space (s[end - 1]))
        end--;
      call = g_new0 (BlnToolCall, 1);
      call->name = q.name;
      call->arguments = g_strndup (s + q.args_start, end - (gsize) q.args_start);
      return call;
    }
  if (n == 0 || !json_parser_load_from_data (jp, s, (gssize) n, NULL)
      || json_parser_get_root (jp) == NULL || !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (jp)))
    return NULL;
  o = json_node_get_object (json_parser_get_root (jp));
  name = json_object_get_member (o, "name");
  if (name == NULL || !JSON_NODE_HOLDS_VALUE (name)
      || json_node_get_value_type (name) != G_TYPE_STRING)
    {
      g_free (q.name);
      return NULL;
    }
  call = g_new0 (BlnToolCall, 1);
  call->name = g_strdup (json_node_get_string (name));
  args = json_object_get_member (o, "arguments");
  if (args == NULL)
    args = json_object_get_member (o, "parameters");
  if (args == NULL || JSON_NODE_HOLDS_NULL (args))
    call->arguments = g_strdup ("{}");
  else if (JSON_NODE_HOLDS_VALUE (args) && json_node_get_value_type (args) == G_TYPE_STRING)
    call->arguments = g_strdup (json_node_get_string (args));
  else if (q.args_start >= 0 && q.args_end > q.args_start)
    call->arguments = g_strndup (s + q.args_start, (gsize) (q.args_end - q.args_start));
  else
    call->arguments = json_to_string (args, FALSE);
  g_free (q.name);
  return call;
}

static BlnToolCall *
new_call (const char *name, const char *arguments, gboolean continuation)
{
  BlnToolCall *c = g_new0 (BlnToolCall, 1);

  c->name = g_strdup (name);
  c->arguments = g_strdup (arguments);
  c->continuation = continuation;
  return c;
}

/* A DeepSeek call without its end marker yet (h holds it from its begin
 * marker): once the name and the opening fence are there, reports the call
 * and then the arguments written so far, holding back whitespace, backticks
 * and a possible piece of the end marker (what the whole call would strip). */
static void
stream_partial (BlnToolParser *p, GPtrArray *calls)
{
  GString *h = p->held;
  const char *body = h->str + strlen (DS_CALL_BEGIN);
  gsize n = h->len - strlen (DS_CALL_BEGIN), end;

  if (!p->open)
    {
      const char *sep = memmem (body, n, DS_SEP, strlen (DS_SEP));
      const char *name, *nl, *a;
      g_autofree char *before = NULL;
      g_autofree char *nm = NULL;

      if (sep == NULL)
        return;
      before = strip_dup (body, sep - body);
      if (!g_str_equal (before, "function"))
        return;
      name = sep + strlen (DS_SEP);
      nl = memchr (name, '\n', body + n - name);
      if (nl == NULL)
        return;
      a = nl + 1;
      while (a < body + n && is_space (*a))
        a++;
      if (!has_prefix_len (a, body + n - a, "```json"))
        return;
      a += 7;
      nm = strip_dup (name, nl - name);
      if (*nm == '\0')
        return;
      p->open = TRUE;
      p->args_off = a - h->str;
      g_string_truncate (p->sent, 0);
      g_ptr_array_add (calls, new_call (nm, "", FALSE));
    }
  /* what can be sent: no leading whitespace, nothing that may yet be stripped */
  end = h->len;
  for (;;)
    {
      gsize k = partial_suffix (h->str + p->args_off, end - p->args_off, DS_CALL_END);

      if (k > 0)
        end -= k;
      else if (end > p->args_off && (is_space (h->str[end - 1]) || h->str[end - 1] == '`'))
        end--;
      else
        break;
    }
  {
    const char *a = h->str + p->args_off;
    gsize an = end - p->args_off;

    while (an > 0 && p->sent->len == 0 && is_space (*a))
      a++, an--;
    /* a is the start of the arguments; send what lies past `sent` */
    if (p->sent->len == 0)
      p->args_off = a - h->str;
    if (an > p->sent->len)
      {
        g_autofree char *piece = g_strndup (a + p->sent->len, an - p->sent->len);

        g_string_append (p->sent, piece);
        g_ptr_array_add (calls, new_call ("", piece, TRUE));
      }
  }
}

/* A Qwen call without its end marker yet (h holds it from its begin
 * marker): once the name and the start of an arguments object are there,
 * reports the call and then the arguments written so far (all of the object
 * once it is closed; before that, holding back trailing whitespace and a
 * possible piece of the end marker, which the whole call would strip). */
static void
stream_partial_qwen (BlnToolParser *p, GPtrArray *calls)
{
  GString *h = p->held;
  const char *body = h->str + strlen (QW_BEGIN);
  gsize n = h->len - strlen (QW_BEGIN), end;
  QwenScan q;

  qwen_scan (body, n, &q);
  if (!q.streamable)
    {
      g_free (q.name);
      return;
    }
  if (!p->open)
    {
      p->open = TRUE;
      p->args_off = strlen (QW_BEGIN) + (gsize) q.args_start;
      g_string_truncate (p->sent, 0);
      g_ptr_array_add (calls, new_call (q.name, "", FALSE));
    }
  g_free (q.name);
  if (q.args_end >= 0)
    end = strlen (QW_BEGIN) + (gsize) q.args_end;
  else
    {
      end = h->len;
      for (;;)
        {
          gsize k = partial_suffix (h->str + p->args_off, end - p->args_off, QW_END);

          if (k > 0)
            end -= k;
          else if (end > p->args_off && is_space (h->str[end - 1]))
            end--;
          else
            break;
        }
    }
  if (end > p->args_off + p->sent->len)
    {
      g_autofree char *piece = g_strndup (h->str + p->args_off + p->sent->len,
                                          end - p->args_off - p->sent->len);

      g_string_append (p->sent, piece);
      g_ptr_array_add (calls, new_call ("", piece, TRUE));
    }
}

/* The end of a call that was streamed: reports the rest of @whole's
 * arguments (all of them when what was sent is not their start). */
static void
close_streamed (BlnToolParser *p, BlnToolCall *whole, GPtrArray *calls)
{
  const char *args = whole->arguments;

  if (g_str_has_prefix (args, p->sent->str))
    args += p->sent->len;
  if (*args)
    g_ptr_array_add (calls, new_call ("", args, TRUE));
  p->open = FALSE;
  g_string_truncate (p->sent, 0);
  bln_tool_call_free (whole);
}

/* Text state: passes content on until a call marker. */
static gboolean
step_text (BlnToolParser *p, GString *content)
{
  GString *h = p->held;
  const char *m1 = NULL, *m2 = NULL, *hit;
  gsize keep;

  if (p->format == BLN_TOOL_FORMAT_DEEPSEEK)
    {
      m1 = memmem (h->str, h->len, DS_CALLS_BEGIN, strlen (DS_CALLS_BEGIN));
      m2 = memmem (h->str, h->len, DS_CALL_BEGIN, strlen (DS_CALL_BEGIN));
    }
  else
    m1 = memmem (h->str, h->len, QW_BEGIN, strlen (QW_BEGIN));
  hit = m1 == NULL ? m2 : m2 == NULL ? m1 : MIN (m1, m2);
  if (hit != NULL)
    {
      g_string_append_len (content, h->str, hit - h->str);
      g_string_erase (h, 0, hit - h->str);
      p->in_calls = TRUE;
      p->saw_call = TRUE;
      return TRUE;
    }
  if (p->format == BLN_TOOL_FORMAT_DEEPSEEK)
    keep = MAX (partial_suffix (h->str, h->len, DS_CALLS_BEGIN),
                partial_suffix (h->str, h->len, DS_CALL_BEGIN));
  else
    keep = partial_suffix (h->str, h->len, QW_BEGIN);
  g_string_append_len (content, h->str, (gssize) (h->len - keep));
  g_string_erase (h, 0, (gssize) (h->len - keep));
  return FALSE;
}

/* Calls state: reads complete calls. FALSE when more text is needed. */
static gboolean
step_calls (BlnToolParser *p, GString *content, GPtrArray *calls)
{
  GString *h = p->held;
  gboolean ds = p->format == BLN_TOOL_FORMAT_DEEPSEEK;
  const char *begin = ds ? DS_CALL_BEGIN : QW_BEGIN, *end = ds ? DS_CALL_END : QW_END;
  gsize i = 0;

  while (i < h->len && is_space (h->str[i]))
    i++;
  g_string_erase (h, 0, (gssize) i);
  if (h->len == 0)
    return FALSE;
  if (ds && has_prefix_len (h->str, h->len, DS_CALLS_BEGIN))
    {
      g_string_erase (h, 0, strlen (DS_CALLS_BEGIN));
      return TRUE;
    }
  if (ds && has_prefix_len (h->str, h->len, DS_CALLS_END))
    {
      g_string_erase (h, 0, strlen (DS_CALLS_END));
      p->in_calls = FALSE;
      return TRUE;
    }
  if (has_prefix_len (h->str, h->len, begin))
    {
      const char *body = h->str + strlen (begin);
      const char *e = memmem (body, h->len - strlen (begin), end, strlen (end));
      BlnToolCall *call;

      if (e == NULL)
        {
          if (ds)
            stream_partial (p, calls);
          else
            stream_partial_qwen (p, calls);
          return FALSE;
        }
      call = ds ? parse_deepseek (body, e - body) : parse_qwen (body, e - body);
      if (call != NULL && p->open)
        close_streamed (p, call, calls);
      else if (call != NULL)
        g_ptr_array_add (calls, call);
      else
        {
          /* unreadable (a template's own example, say): it is text */
          g_string_append_len (content, h->str, e + strlen (end) - h->str);
          p->in_calls = FALSE;
        }
      g_string_erase (h, 0, (gssize) (e + strlen (end) - h->str));
      return TRUE;
    }
  if (is_partial (h->str, h->len, begin)
      || (ds && (is_partial (h->str, h->len, DS_CALLS_BEGIN)
                 || is_partial (h->str, h->len, DS_CALLS_END))))
    return FALSE;
  /* something else after the calls: plain text again */
  p->in_calls = FALSE;
  return TRUE;
}

static void
drain (BlnToolParser *p, GString *content, GPtrArray *calls)
{
  for (;;)
    {
      if (p->held->len == 0)
        return;
      if (!p->in_calls)
        {
          if (!step_text (p, content))
            return;
        }
      else if (!step_calls (p, content, calls))
        return;
    }
}

void
bln_tool_parser_push (BlnToolParser *p, const char *text, gssize len, GString *content,
                      GPtrArray *calls)
{
  if (text == NULL)
    return;
  if (p->format == BLN_TOOL_FORMAT_NONE)
    {
      g_string_append_len (content, text, len);
      return;
    }
  g_string_append_len (p->held, text, len < 0 ? (gssize) strlen (text) : len);
  drain (p, content, calls);
}

void
bln_tool_parser_finish (BlnToolParser *p, GString *content, GPtrArray *calls)
{
  GString *h = p->held;

  drain (p, content, calls);
  if (h->len > 0 && p->in_calls)
    {
      gboolean ds = p->format == BLN_TOOL_FORMAT_DEEPSEEK;
      const char *begin = ds ? DS_CALL_BEGIN : QW_BEGIN;
      BlnToolCall *call = NULL;

      if (has_prefix_len (h->str, h->len, begin))
        {
          const char *body = h->str + strlen (begin);
          gsize n = h->len - strlen (begin);

          call = ds ? parse_deepseek (body, n) : parse_qwen (body, n);
        }
      if (call != NULL && p->open)
        {
          close_streamed (p, call, calls);
          g_string_truncate (h, 0);
        }
      else if (call != NULL)
        {
          g_ptr_array_add (calls, call);
          g_string_truncate (h, 0);
        }
    }
  g_string_append_len (content, h->str, (gssize) h->len);
  g_string_truncate (h, 0);
  p->in_calls = FALSE;
}

void
bln_tool_calls_collect (GPtrArray *whole, GPtrArray *pieces)
{
  guint i;

  for (i = 0; i < pieces->len; i++)
    {
      BlnToolCall *c = pieces->pdata[i];

      if (c->continuation && whole->len > 0)
        {
          BlnToolCall *last = whole->pdata[whole->len - 1];
          char *joined = g_strconcat (last->arguments, c->arguments, NULL);

          g_free (last->arguments);
          last->arguments = joined;
        }
      else
        {
          g_ptr_array_add (whole, c);
          c->continuation = FALSE;
          pieces->pdata[i] = NULL;
        }
    }
  g_ptr_array_set_size (pieces, 0);
}

JsonArray *
bln_tool_calls_to_ollama (GPtrArray *whole)
{
  JsonArray *a = json_array_new ();
  guint i;

  for (i = 0; i < whole->len; i++)
    {
      BlnToolCall *c = whole->pdata[i];
      JsonObject *call = json_object_new (), *f = json_object_new ();
      JsonNode *args = json_from_string (c->arguments, NULL);

      json_object_set_string_member (f, "name", c->name);
      if (args == NULL || !JSON_NODE_HOLDS_OBJECT (args))
        {
          g_clear_pointer (&args, json_node_unref);
          args = json_node_init_object (json_node_alloc (), json_object_new ());
          json_object_unref (json_node_get_object (args));
        }
      json_object_set_member (f, "arguments", args);
      json_object_set_object_member (call, "function", f);
      json_array_add_object_element (a, call);
    }
  return a;
}

void
bln_tool_history_adapt (JsonNode *messages, BlnToolFormat fmt)
{
  JsonArray *a = json_node_get_array (messages);
  guint i, j;

  for (i = 0; i < json_array_get_length (a); i++)
    {
      JsonNode *mn = json_array_get_element (a, i);
      JsonObject *m;
      JsonNode *tc;

      if (!JSON_NODE_HOLDS_OBJECT (mn))
        continue;
      m = json_node_get_object (mn);
      tc = json_object_get_member (m, "tool_calls");
      if (tc == NULL || !JSON_NODE_HOLDS_ARRAY (tc))
        continue;
      /* a template that knows no tool calls adds content as a string */
      if (fmt == BLN_TOOL_FORMAT_NONE && json_object_has_member (m, "content")
          && json_object_get_null_member (m, "content"))
        json_object_set_string_member (m, "content", "");
      for (j = 0; j < json_array_get_length (json_node_get_array (tc)); j++)
        {
          JsonNode *cn = json_array_get_element (json_node_get_array (tc), j);
          JsonNode *fn, *args;
          JsonObject *f;

          if (!JSON_NODE_HOLDS_OBJECT (cn))
            continue;
          fn = json_object_get_member (json_node_get_object (cn), "function");
          if (fn == NULL || !JSON_NODE_HOLDS_OBJECT (fn))
            continue;
          f = json_node_get_object (fn);
          args = json_object_get_member (f, "arguments");
          if (args == NULL)
            continue;
          if (fmt == BLN_TOOL_FORMAT_QWEN && JSON_NODE_HOLDS_VALUE (args)
              && json_node_get_value_type (args) == G_TYPE_STRING)
            {
              JsonNode *parsed = json_from_string (json_node_get_string (args), NULL);
              if (parsed != NULL)
                json_object_set_member (f, "arguments", parsed);
            }
          else if (fmt != BLN_TOOL_FORMAT_QWEN && !JSON_NODE_HOLDS_VALUE (args))
            {
              g_autofree char *text = json_to_string (args, FALSE);

              json_object_set_string_member (f, "arguments", text);
            }
        }
    }
}
