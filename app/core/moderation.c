/* moderation.c — the streaming output filter and the moderation client. */
#include "moderation.h"

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <string.h>

#include "bln-error.h"

struct _BlnStreamFilter {
  BlnRuleSet *rules;     /* borrowed */
  BlnOutputAction action;
  gsize hold;            /* code points held back */
  GString *pending;      /* not yet emitted, as generated (unmasked, so that masking
                          * never creates or hides a match); may end in an incomplete
                          * character */
  GArray *spans;         /* BlnRuleMatch: ranges of @pending to mask when emitted */
  gsize base;            /* bytes emitted so far */
  gboolean stopped;
  GArray *matches;       /* BlnRuleMatch, absolute offsets */
  GHashTable *seen;      /* "rule:start" of the matches recorded */
};

BlnStreamFilter *
bln_stream_filter_new (BlnRuleSet *rules, BlnOutputAction action, gsize regex_window)
{
  BlnStreamFilter *f = g_new0 (BlnStreamFilter, 1);
  gsize words = 0;

  f->rules = rules;
  f->action = action;
  if (rules)
    {
      words = bln_rule_set_max_word_chars (rules);
      f->hold = words > 0 ? words - 1 : 0;
      if (bln_rule_set_has_regex (rules))
        f->hold = MAX (f->hold, regex_window);
    }
  f->pending = g_string_new (NULL);
  f->spans = g_array_new (FALSE, FALSE, sizeof (BlnRuleMatch));
  f->matches = g_array_new (FALSE, FALSE, sizeof (BlnRuleMatch));
  f->seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  return f;
}

void
bln_stream_filter_free (BlnStreamFilter *f)
{
  if (!f)
    return;
  g_string_free (f->pending, TRUE);
  g_array_unref (f->spans);
  g_array_unref (f->matches);
  g_hash_table_unref (f->seen);
  g_free (f);
}

gboolean
bln_stream_filter_stopped (BlnStreamFilter *f)
{
  return f->stopped;
}

const GArray *
bln_stream_filter_matches (BlnStreamFilter *f)
{
  return f->matches;
}

/* Appends @piece to @s, replacing invalid sequences by U+FFFD except an
 * incomplete character at the very end, which a later piece may complete.
 * Also re-checks the incomplete tail left by the previous piece. */
static void
append_sanitized (GString *s, gsize from, const char *piece, gsize len)
{
  g_autofree char *joined = NULL;
  const char *p, *end;
  gsize n;

  /* Re-validate from the start of any incomplete tail already in @s. */
  g_string_append_len (s, piece, len);
  joined = g_strndup (s->str + from, s->len - from);
  n = s->len - from;
  g_string_truncate (s, from);
  p = joined;
  end = joined + n;
  while (p < end)
    {
      gunichar c = g_utf8_get_char_validated (p, end - p);
      if (c == (gunichar) -2 && end - p < 4)
        {
          g_string_append_len (s, p, end - p); /* may be completed later */
          break;
        }
      if (c == (gunichar) -1 || c == (gunichar) -2)
        {
          g_string_append (s, "\xEF\xBF\xBD");
          p++;
          continue;
        }
      g_string_append_len (s, p, g_utf8_next_char (p) - p);
      p = g_utf8_next_char (p);
    }
}

/* Bytes of @s that form complete characters. */
static gsize
complete_prefix (const GString *s)
{
  const char *end = NULL;

  g_utf8_validate_len (s->str, s->len, &end);
  return end - s->str;
}

/* Adds @m to the matches seen unless it is known; returns whether it was new. */
static gboolean
record (BlnStreamFilter *f, const BlnRuleMatch *m)
{
  BlnRuleMatch abs = *m;
  char *tag;

  abs.start += f->base;
  abs.end += f->base;
  tag = g_strdup_printf ("%" G_GINT64_FORMAT ":%u:%zu", abs.rule_id, abs.rule_index,
                         (size_t) abs.start);
  if (g_hash_table_contains (f->seen, tag))
    {
      g_free (tag);
      return FALSE;
    }
  g_hash_table_add (f->seen, tag);
  g_array_append_val (f->matches, abs);
  return TRUE;
}

/* Emits the first @cut bytes of the pending text with the mask spans applied
 * (clipped to @cut), then drops them and shifts the spans. */
static void
emit_prefix (BlnStreamFilter *f, gsize cut, GString *emit)
{
  g_autoptr (GArray) clipped = g_array_new (FALSE, FALSE, sizeof (BlnRuleMatch));
  g_autofree char *head = NULL;
  guint keep = 0;

  for (guint i = 0; i < f->spans->len; i++)
    {
      BlnRuleMatch m = g_array_index (f->spans, BlnRuleMatch, i);
      if (m.start >= cut)
        continue;
      m.end = MIN (m.end, cut);
      g_array_append_val (clipped, m);
    }
  head = bln_rule_mask_text (f->pending->str, cut, clipped);
  g_string_append (emit, head);
  f->base += cut;
  g_string_erase (f->pending, 0, cut);
  for (guint i = 0; i < f->spans->len; i++)
    {
      BlnRuleMatch m = g_array_index (f->spans, BlnRuleMatch, i);
      if (m.end <= cut)
        continue;
      m.start = m.start > cut ? m.start - cut : 0;
      m.end -= cut;
      g_array_index (f->spans, BlnRuleMatch, keep++) = m;
    }
  g_array_set_size (f->spans, keep);
}

/* Scans the complete part of the pending text (unmasked: each scan sees the
 * text as generated); records mask spans or stops. Emits all but the last
 * @f->hold code points (everything when @final). */
static gboolean
process (BlnStreamFilter *f, GString *emit, gboolean final)
{
  gsize valid = complete_prefix (f->pending);
  g_autoptr (GArray) matches = NULL;
  gsize cut, chars;

  if (!f->rules || bln_rule_set_size (f->rules) == 0)
    {
      emit_prefix (f, valid, emit);
      return TRUE;
    }
  matches = bln_rule_set_scan (f->rules, f->pending->str, valid);
  for (guint i = 0; i < matches->len; i++)
    {
      BlnRuleMatch *m = &g_array_index (matches, BlnRuleMatch, i);

      /* Record what is done: a block match is masked in mask mode. */
      if (m->action == BLN_RULE_BLOCK && f->action == BLN_OUTPUT_MASK)
        m->action = BLN_RULE_MASK;
      if (!record (f, m) && m->action != BLN_RULE_BLOCK)
        continue;  /* seen in an earlier pass; its span is kept */
      if (m->action == BLN_RULE_BLOCK)
        {
          /* Matches are sorted by start: the masks before this one are in
           * the spans already. A longer blocked or masked word may have begun
           * before this one and still be incomplete (its end has not been
           * generated yet): nothing from its start on may go out either. */
          gsize cut_at = m->start;

          if (!final)
            cut_at = MIN (cut_at, bln_rule_set_open_start (f->rules, f->pending->str, valid,
                                                           (1u << BLN_RULE_BLOCK) |
                                                           (1u << BLN_RULE_MASK)));

          emit_prefix (f, cut_at, emit);
          g_string_truncate (f->pending, 0);
          g_array_set_size (f->spans, 0);
          f->stopped = TRUE;
          return FALSE;
        }
      if (m->action == BLN_RULE_MASK)
        g_array_append_val (f->spans, *m);
    }
  if (final)
    cut = valid;
  else
    {
      chars = g_utf8_strlen (f->pending->str, valid);
      if (chars <= f->hold)
        return TRUE;
      cut = g_utf8_offset_to_pointer (f->pending->str, chars - f->hold) - f->pending->str;
    }
  emit_prefix (f, cut, emit);
  return TRUE;
}

gboolean
bln_stream_filter_push (BlnStreamFilter *f, const char *piece, gssize len, GString *emit)
{
  g_return_val_if_fail (f != NULL && emit != NULL, FALSE);
  if (f->stopped)
    return FALSE;
  if (!piece)
    return TRUE;
  if (len < 0)
    len = strlen (piece);
  append_sanitized (f->pending, complete_prefix (f->pending), piece, len);
  return process (f, emit, FALSE);
}

gboolean
bln_stream_filter_finish (BlnStreamFilter *f, GString *emit)
{
  g_return_val_if_fail (f != NULL && emit != NULL, FALSE);
  if (f->stopped)
    return FALSE;
  /* An incomplete character left at the end can no longer be completed. */
  if (complete_prefix (f->pending) < f->pending->len)
    {
      g_string_truncate (f->pending, complete_prefix (f->pending));
      g_string_append (f->pending, "\xEF\xBF\xBD");
    }
  return process (f, emit, TRUE);
}

/* ---- moderation client --------------------------------------------------- */

void
bln_moderation_result_free (BlnModerationResult *res)
{
  if (!res)
    return;
  g_strfreev (res->categories);
  g_free (res);
}

gboolean
bln_moderation_allows (const BlnModerationResult *result, gboolean fail_closed)
{
  if (!result)
    return !fail_closed;
  return !result->flagged;
}

typedef struct {
  char *url;
} CheckData;

static void
check_data_free (gpointer p)
{
  CheckData *d = p;

  g_free (d->url);
  g_free (d);
}

static BlnModerationResult *
parse_response (GBytes *body, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GPtrArray) cats = g_ptr_array_new_with_free_func (g_free);
  BlnModerationResult *res;
  JsonNode *root;
  JsonObject *obj;
  JsonArray *results;
  gsize len = 0;
  const char *data = g_bytes_get_data (body, &len);

  if (!json_parser_load_from_data (parser, data ? data : "", len, error))
    return NULL;
  root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT (root) ||
      !json_object_has_member ((obj = json_node_get_object (root)), "results") ||
      !JSON_NODE_HOLDS_ARRAY (json_object_get_member (obj, "results")) ||
      json_array_get_length ((results = json_object_get_array_member (obj, "results"))) == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "the moderation service answered without a \"results\" array");
      return NULL;
    }
  res = g_new0 (BlnModerationResult, 1);
  for (guint i = 0; i < json_array_get_length (results); i++)
    {
      JsonNode *n = json_array_get_element (results, i);
      JsonObject *r;
      JsonNode *flag;

      if (!JSON_NODE_HOLDS_OBJECT (n))
        continue;
      r = json_node_get_object (n);
      flag = json_object_get_member (r, "flagged");
      if (flag && JSON_NODE_HOLDS_VALUE (flag) && json_node_get_value_type (flag) == G_TYPE_BOOLEAN
          && json_node_get_boolean (flag))
        res->flagged = TRUE;
      if (json_object_has_member (r, "categories") &&
          JSON_NODE_HOLDS_OBJECT (json_object_get_member (r, "categories")))
        {
          JsonObject *c = json_object_get_object_member (r, "categories");
          g_autoptr (GList) names = json_object_get_members (c);
          for (GList *l = names; l; l = l->next)
            {
              JsonNode *v = json_object_get_member (c, l->data);
              if (JSON_NODE_HOLDS_VALUE (v) && json_node_get_value_type (v) == G_TYPE_BOOLEAN &&
                  json_node_get_boolean (v))
                g_ptr_array_add (cats, g_strdup (l->data));
            }
        }
    }
  g_ptr_array_add (cats, NULL);
  res->categories = (char **) g_ptr_array_steal (cats, NULL);
  return res;
}

static void
on_sent (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  CheckData *d = g_task_get_task_data (task);
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), result);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body = soup_session_send_and_read_finish (SOUP_SESSION (source), result,
                                                                &error);
  BlnModerationResult *res = NULL;
  guint status;

  if (!body)
    {
      g_message ("moderation service %s failed: %s", d->url, error->message);
      g_task_return_error (task, g_steal_pointer (&error));
      return;
    }
  status = msg ? soup_message_get_status (msg) : 0;
  if (status < 200 || status >= 300)
    {
      g_message ("moderation service %s answered HTTP %u", d->url, status);
      g_task_return_new_error (task, BLN_ERROR, BLN_ERROR_IO,
                               "the moderation service %s answered HTTP %u", d->url, status);
      return;
    }
  res = parse_response (body, &error);
  if (!res)
    {
      g_message ("moderation service %s: %s", d->url, error->message);
      g_task_return_error (task, g_steal_pointer (&error));
      return;
    }
  g_task_return_pointer (task, res, (GDestroyNotify) bln_moderation_result_free);
}

void
bln_moderation_check_async (gpointer session, const char *url, const char *api_key,
                            const char *model, const char *text, double timeout_s,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data)
{
  g_autoptr (SoupSession) own = NULL;
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autoptr (GBytes) body = NULL;
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);
  CheckData *d = g_new0 (CheckData, 1);
  char *json;

  d->url = g_strdup (url ? url : "");
  g_task_set_task_data (task, d, check_data_free);
  g_task_set_source_tag (task, bln_moderation_check_async);

  msg = url ? soup_message_new ("POST", url) : NULL;
  if (!msg)
    {
      g_message ("moderation service URL '%s' is not valid", d->url);
      g_task_return_new_error (task, BLN_ERROR, BLN_ERROR_INVALID,
                               "the moderation service URL '%s' is not valid", d->url);
      g_object_unref (task);
      return;
    }
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "input");
  json_builder_add_string_value (b, text ? text : "");
  if (model && *model)
    {
      json_builder_set_member_name (b, "model");
      json_builder_add_string_value (b, model);
    }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json = json_generator_to_data (gen, NULL);
  body = g_bytes_new_take (json, strlen (json));
  soup_message_set_request_body_from_bytes (msg, "application/json", body);
  if (api_key && *api_key)
    {
      g_autofree char *auth = g_strconcat ("Bearer ", api_key, NULL);
      soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                    auth);
    }
  if (!session)
    {
      own = soup_session_new ();
      session = own;
    }
  soup_session_set_timeout (SOUP_SESSION (session), (guint) MAX (1.0, timeout_s + 0.999));
  soup_session_send_and_read_async (SOUP_SESSION (session), msg, G_PRIORITY_DEFAULT,
                                    cancellable, on_sent, task);
}

BlnModerationResult *
bln_moderation_check_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
