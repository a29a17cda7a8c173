/* chat-page.c — the Chat page (see chat-page.h). */
#include "chat-page.h"

#include <string.h>
#include <glib/gi18n-lib.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "window.h"

struct _BlnChatPage
{
  AdwBin parent_instance;

  BlnApplication *app;         /* borrowed */
  SoupSession *session;
  GCancellable *cancellable;   /* the reply streaming now, NULL when idle */
  JsonArray *history;          /* {role, content} objects */
  GDataInputStream *lines;

  /* the reply being streamed */
  GString *raw;                /* content deltas as sent */
  GString *reasoning_delta;    /* reasoning_content deltas */
  char *reply;
  char *reasoning;
  GtkLabel *reply_label;
  GtkLabel *reasoning_label;
  GtkExpander *reasoning_expander;
  gint64 t_send, t_first, t_last;
  guint n_deltas;
  guint n_events;
  gboolean is_sse;
  int usage_tokens;
  double ttft_ms, tps;
  int n_tokens;

  /* template children */
  GtkScrolledWindow *scroller;
  GtkBox *messages_box;
  AdwStatusPage *empty_page;
  GtkLabel *stats_label;
  GtkEntry *prompt_entry;
  GtkButton *send_button;
  GtkButton *stop_button;
};

G_DEFINE_FINAL_TYPE (BlnChatPage, bln_chat_page, ADW_TYPE_BIN)

static void
set_streaming (BlnChatPage *self, gboolean on)
{
  gtk_widget_set_visible (GTK_WIDGET (self->send_button), !on);
  gtk_widget_set_visible (GTK_WIDGET (self->stop_button), on);
}

static GtkLabel *
add_text (BlnChatPage *self, const char *text, const char *css)
{
  GtkWidget *label = gtk_label_new (text);

  gtk_label_set_wrap (GTK_LABEL (label), TRUE);
  gtk_label_set_wrap_mode (GTK_LABEL (label), PANGO_WRAP_WORD_CHAR);
  gtk_label_set_selectable (GTK_LABEL (label), TRUE);
  gtk_label_set_xalign (GTK_LABEL (label), 0);
  if (css)
    gtk_widget_add_css_class (label, css);
  gtk_box_append (self->messages_box, label);
  return GTK_LABEL (label);
}

/* Splits the raw content into reasoning and reply: a reply that starts
 * with <think> keeps everything up to </think> (or to the end while it is
 * still open) as reasoning. Servers that already split send
 * reasoning_content instead, which is appended in front. */
static void
update_reply (BlnChatPage *self)
{
  const char *raw = self->raw->str;
  const char *p = raw;
  g_autoptr (GString) reasoning = g_string_new (self->reasoning_delta->str);

  while (g_ascii_isspace (*p))
    p++;
  g_free (self->reply);
  if (g_str_has_prefix (p, "<think>"))
    {
      const char *body = p + strlen ("<think>");
      const char *end = strstr (body, "</think>");
      g_string_append_len (reasoning, body, end ? end - body : (gssize) strlen (body));
      p = end ? end + strlen ("</think>") : body + strlen (body);
      while (g_ascii_isspace (*p))
        p++;
      self->reply = g_strdup (p);
    }
  else
    self->reply = g_strdup (raw);
  g_free (self->reasoning);
  self->reasoning = g_strdup (g_strstrip (reasoning->str));
  gtk_label_set_text (self->reply_label, self->reply);
  gtk_label_set_text (self->reasoning_label, self->reasoning);
  gtk_widget_set_visible (GTK_WIDGET (self->reasoning_expander), *self->reasoning != '\0');
}

static void
show_stats (BlnChatPage *self)
{
  g_autofree char *text = NULL;
  double gen_s = (self->t_last - self->t_first) / 1e6;

  self->n_tokens = self->usage_tokens > 0 ? self->usage_tokens : (int) self->n_deltas;
  self->ttft_ms = self->t_first ? (self->t_first - self->t_send) / 1e3 : 0;
  /* The first token arrives at t_first: the rate counts the ones after it. */
  self->tps = gen_s > 0 && self->n_tokens > 1 ? (self->n_tokens - 1) / gen_s : 0;
  /* A reply that arrived in one piece has no measurable rate. */
  if (self->tps > 0)
    text = g_strdup_printf (_("Time to first token %.0f ms · %.1f tokens/s · %d tokens"),
                            self->ttft_ms, self->tps, self->n_tokens);
  else
    text = g_strdup_printf (_("Time to first token %.0f ms · %d tokens"), self->ttft_ms,
                            self->n_tokens);
  gtk_label_set_text (self->stats_label, text);
}

static void
finish (BlnChatPage *self, const char *error_text)
{
  if (self->reply && *self->reply)
    {
      JsonObject *m = json_object_new ();
      json_object_set_string_member (m, "role", "assistant");
      json_object_set_string_member (m, "content", self->reply);
      json_array_add_object_element (self->history, m);
    }
  if (error_text)
    bln_error_dialog (GTK_WIDGET (self), _("The reply failed"), error_text);
  g_clear_object (&self->lines);
  g_clear_object (&self->cancellable);
  set_streaming (self, FALSE);
  show_stats (self);
}

static void
handle_event (BlnChatPage *self, const char *data)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *o, *delta = NULL, *usage;
  JsonArray *choices;
  const char *text, *think;

  if (!json_parser_load_from_data (parser, data, -1, NULL) ||
      !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    return;
  o = json_node_get_object (json_parser_get_root (parser));
  if (json_object_has_member (o, "error"))
    return;
  usage = json_object_has_member (o, "usage") && JSON_NODE_HOLDS_OBJECT (
            json_object_get_member (o, "usage")) ? json_object_get_object_member (o, "usage")
                                                 : NULL;
  if (usage)
    self->usage_tokens = (int) json_object_get_int_member_with_default (usage,
                                                                        "completion_tokens", 0);
  choices = json_object_has_member (o, "choices") &&
            JSON_NODE_HOLDS_ARRAY (json_object_get_member (o, "choices"))
            ? json_object_get_array_member (o, "choices") : NULL;
  if (choices && json_array_get_length (choices) > 0)
    {
      JsonObject *c = json_array_get_object_element (choices, 0);
      if (c && json_object_has_member (c, "delta") &&
          JSON_NODE_HOLDS_OBJECT (json_object_get_member (c, "delta")))
        delta = json_object_get_object_member (c, "delta");
    }
  if (!delta)
    return;
  text = json_object_get_string_member_with_default (delta, "content", NULL);
  think = json_object_get_string_member_with_default (delta, "reasoning_content", NULL);
  if ((!text || !*text) && (!think || !*think))
    return;
  self->t_last = g_get_monotonic_time ();
  if (!self->t_first)
    self->t_first = self->t_last;
  self->n_deltas++;
  if (text)
    g_string_append (self->raw, text);
  if (think)
    g_string_append (self->reasoning_delta, think);
  update_reply (self);
}

static void read_next (BlnChatPage *self);

static void
line_read (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BlnChatPage) self = user_data;
  g_autoptr (GError) error = NULL;
  g_autofree char *line = NULL;

  line = g_data_input_stream_read_line_finish_utf8 (G_DATA_INPUT_STREAM (source), result, NULL,
                                                    &error);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    {
      finish (self, NULL);
      return;
    }
  if (!line)
    {
      finish (self, error ? error->message : NULL);
      return;
    }
  if (g_str_has_prefix (line, "data:"))
    {
      const char *data = line + 5;
      while (*data == ' ')
        data++;
      self->n_events++;
      if (g_str_equal (data, "[DONE]"))
        {
          finish (self, NULL);
          return;
        }
      handle_event (self, data);
    }
  read_next (self);
}

static void
read_next (BlnChatPage *self)
{
  g_data_input_stream_read_line_async (self->lines, G_PRIORITY_DEFAULT, self->cancellable,
                                       line_read, g_object_ref (self));
}

static void
sent (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BlnChatPage) self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GInputStream) stream = NULL;
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), result);

  stream = soup_session_send_finish (SOUP_SESSION (source), result, &error);
  if (!stream)
    {
      finish (self, g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED) ? NULL
                                                                              : error->message);
      return;
    }
  if (soup_message_get_status (msg) != 200)
    {
      g_autofree char *text = g_strdup_printf (_("The server answered HTTP %u %s."),
                                               soup_message_get_status (msg),
                                               soup_message_get_reason_phrase (msg));
      finish (self, text);
      return;
    }
  self->is_sse = g_str_has_prefix (soup_message_headers_get_content_type (
                                      soup_message_get_response_headers (msg), NULL) ?: "",
                                    "text/event-stream");
  self->lines = g_data_input_stream_new (stream);
  g_data_input_stream_set_newline_type (self->lines, G_DATA_STREAM_NEWLINE_TYPE_ANY);
  read_next (self);
}

gboolean
bln_chat_page_send (BlnChatPage *self, const char *text)
{
  BlnUiSettings *settings = bln_application_settings (self->app);
  g_autofree char *host = NULL;
  g_autofree char *url = NULL;
  g_autofree char *body = NULL;
  g_autofree char *model = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autoptr (GBytes) bytes = NULL;
  const char *key = bln_application_api_key (self->app);
  SoupMessage *msg;
  JsonObject *m;
  GtkWidget *expander;
  gsize body_len = 0;

  g_return_val_if_fail (BLN_IS_CHAT_PAGE (self), FALSE);
  if (self->cancellable || !text || !*text)
    return FALSE;
  if (!bln_application_server_url (self->app) &&
      !bln_application_start_server (self->app, &error))
    {
      bln_error_dialog (GTK_WIDGET (self), _("Nothing to chat with"), error->message);
      return FALSE;
    }
  host = bln_application_api_host (self->app);
  url = g_strconcat (host, "/chat/completions", NULL);
  if (bln_application_loaded_id (self->app))
    model = g_strdup (bln_application_loaded_id (self->app));
  else
    model = g_strdup (bln_model_library_get (bln_application_library (self->app), 0)->id);

  gtk_widget_set_visible (GTK_WIDGET (self->empty_page), FALSE);
  m = json_object_new ();
  json_object_set_string_member (m, "role", "user");
  json_object_set_string_member (m, "content", text);
  json_array_add_object_element (self->history, m);
  add_text (self, text, "message-user");

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "model");
  json_builder_add_string_value (b, model);
  json_builder_set_member_name (b, "stream");
  json_builder_add_boolean_value (b, TRUE);
  json_builder_set_member_name (b, "stream_options");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "include_usage");
  json_builder_add_boolean_value (b, TRUE);
  json_builder_end_object (b);
  if (settings)
    {
      json_builder_set_member_name (b, "max_tokens");
      json_builder_add_int_value (b, bln_ui_settings_get_int (settings, "chat.max_tokens"));
      json_builder_set_member_name (b, "temperature");
      json_builder_add_double_value (b, bln_ui_settings_get_double (settings,
                                                                    "chat.temperature"));
    }
  json_builder_set_member_name (b, "messages");
  json_builder_add_value (b, json_node_init_array (json_node_alloc (), self->history));
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);

  /* The reply's widgets: reasoning (collapsed) above the text. */
  expander = gtk_expander_new (_("Reasoning"));
  self->reasoning_expander = GTK_EXPANDER (expander);
  self->reasoning_label = GTK_LABEL (gtk_label_new (""));
  gtk_label_set_wrap (self->reasoning_label, TRUE);
  gtk_label_set_xalign (self->reasoning_label, 0);
  gtk_label_set_selectable (self->reasoning_label, TRUE);
  gtk_widget_add_css_class (GTK_WIDGET (self->reasoning_label), "reasoning-text");
  gtk_expander_set_child (self->reasoning_expander, GTK_WIDGET (self->reasoning_label));
  gtk_widget_set_visible (expander, FALSE);
  gtk_box_append (self->messages_box, expander);
  self->reply_label = add_text (self, "", NULL);

  g_string_truncate (self->raw, 0);
  g_string_truncate (self->reasoning_delta, 0);
  g_clear_pointer (&self->reply, g_free);
  g_clear_pointer (&self->reasoning, g_free);
  self->reply = g_strdup ("");
  self->reasoning = g_strdup ("");
  self->t_send = g_get_monotonic_time ();
  self->t_first = self->t_last = 0;
  self->n_deltas = 0;
  self->n_events = 0;
  self->is_sse = FALSE;
  self->usage_tokens = 0;

  msg = soup_message_new ("POST", url);
  body = json_generator_to_data (gen, &body_len);
  bytes = g_bytes_new_take (g_steal_pointer (&body), body_len);
  soup_message_set_request_body_from_bytes (msg, "application/json", bytes);
  if (key)
    {
      g_autofree char *auth = g_strconcat ("Bearer ", key, NULL);
      soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                    auth);
    }
  self->cancellable = g_cancellable_new ();
  set_streaming (self, TRUE);
  gtk_label_set_text (self->stats_label, _("Waiting for the first token…"));
  soup_session_send_async (self->session, msg, G_PRIORITY_DEFAULT, self->cancellable, sent,
                           g_object_ref (self));
  g_object_unref (msg);
  return TRUE;
}

static void
send_clicked (BlnChatPage *self)
{
  g_autofree char *text = g_strdup (gtk_editable_get_text (GTK_EDITABLE (self->prompt_entry)));

  if (bln_chat_page_send (self, g_strstrip (text)))
    gtk_editable_set_text (GTK_EDITABLE (self->prompt_entry), "");
}

static void
stop_clicked (BlnChatPage *self)
{
  if (self->cancellable)
    g_cancellable_cancel (self->cancellable);
}

static void
clear_clicked (BlnChatPage *self)
{
  GtkWidget *child;

  stop_clicked (self);
  json_array_unref (self->history);
  self->history = json_array_new ();
  while ((child = gtk_widget_get_last_child (GTK_WIDGET (self->messages_box))) &&
         child != GTK_WIDGET (self->empty_page))
    gtk_box_remove (self->messages_box, child);
  gtk_widget_set_visible (GTK_WIDGET (self->empty_page), TRUE);
  gtk_label_set_text (self->stats_label, "");
}

static void
bln_chat_page_dispose (GObject *object)
{
  BlnChatPage *self = BLN_CHAT_PAGE (object);

  if (self->cancellable)
    g_cancellable_cancel (self->cancellable);
  g_clear_object (&self->cancellable);
  g_clear_object (&self->lines);
  g_clear_object (&self->session);
  gtk_widget_dispose_template (GTK_WIDGET (self), BLN_TYPE_CHAT_PAGE);
  G_OBJECT_CLASS (bln_chat_page_parent_class)->dispose (object);
}

static void
bln_chat_page_finalize (GObject *object)
{
  BlnChatPage *self = BLN_CHAT_PAGE (object);

  json_array_unref (self->history);
  g_string_free (self->raw, TRUE);
  g_string_free (self->reasoning_delta, TRUE);
  g_free (self->reply);
  g_free (self->reasoning);
  G_OBJECT_CLASS (bln_chat_page_parent_class)->finalize (object);
}

static void
bln_chat_page_class_init (BlnChatPageClass *klass)
{
  GtkWidgetClass *wc = GTK_WIDGET_CLASS (klass);

  G_OBJECT_CLASS (klass)->dispose = bln_chat_page_dispose;
  G_OBJECT_CLASS (klass)->finalize = bln_chat_page_finalize;
  gtk_widget_class_set_template_from_resource (wc, "/org/baleen/Baleen/ui/chat-page.ui");
  gtk_widget_class_bind_template_child (wc, BlnChatPage, scroller);
  gtk_widget_class_bind_template_child (wc, BlnChatPage, messages_box);
  gtk_widget_class_bind_template_child (wc, BlnChatPage, empty_page);
  gtk_widget_class_bind_template_child (wc, BlnChatPage, stats_label);
  gtk_widget_class_bind_template_child (wc, BlnChatPage, prompt_entry);
  gtk_widget_class_bind_template_child (wc, BlnChatPage, send_button);
  gtk_widget_class_bind_template_child (wc, BlnChatPage, stop_button);
  gtk_widget_class_bind_template_callback (wc, send_clicked);
  gtk_widget_class_bind_template_callback (wc, stop_clicked);
  gtk_widget_class_bind_template_callback (wc, clear_clicked);
}

static void
bln_chat_page_init (BlnChatPage *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
  self->session = soup_session_new ();
  self->history = json_array_new ();
  self->raw = g_string_new (NULL);
  self->reasoning_delta = g_string_new (NULL);
  self->reply = g_strdup ("");
  self->reasoning = g_strdup ("");
}

BlnChatPage *
bln_chat_page_new (BlnApplication *app)
{
  BlnChatPage *self = g_object_new (BLN_TYPE_CHAT_PAGE, NULL);

  self->app = app;
  return self;
}

gboolean
bln_chat_page_is_streaming (BlnChatPage *self)
{
  return self->cancellable != NULL;
}

const char *
bln_chat_page_last_reply (BlnChatPage *self)
{
  return self->reply;
}

const char *
bln_chat_page_last_reasoning (BlnChatPage *self)
{
  return self->reasoning;
}

guint
bln_chat_page_last_n_deltas (BlnChatPage *self)
{
  return self->n_deltas;
}

guint
bln_chat_page_last_n_events (BlnChatPage *self, gboolean *is_sse)
{
  if (is_sse)
    *is_sse = self->is_sse;
  return self->n_events;
}

void
bln_chat_page_last_stats (BlnChatPage *self, double *ttft_ms, double *tokens_per_s,
                          int *n_tokens)
{
  if (ttft_ms)
    *ttft_ms = self->ttft_ms;
  if (tokens_per_s)
    *tokens_per_s = self->tps;
  if (n_tokens)
    *n_tokens = self->n_tokens;
}
