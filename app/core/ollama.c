/* ollama.c — see ollama.h. */
#include "ollama.h"

#include <string.h>
#include <json-glib/json-glib.h>
#include "bln-error.h"
#include "chat.h"
#include "chat-params.h"
#include "engine-worker.h"
#include "reasoning.h"
#include "tokenizer.h"
#include "toolcalls.h"

/* The Ollama API level these routes follow; clients only display it. */
#define OLLAMA_API_VERSION "0.9.0"

struct _BlnOllama {
  BlnModelLibrary *lib;
  BlnModelHost *host;
  BlnMetrics *metrics;
  gboolean strict;
  gsize max_body;
  GHashTable *active;          /* OReq* set */
  gboolean stopped;
  BlnSafety *safety;           /* borrowed; NULL without --db */
};

/* One /api/chat or /api/generate request. It lives until both the HTTP
 * exchange is finished and the generation (if one started) has ended. */
typedef struct {
  BlnOllama *ol;
  SoupServerMessage *msg;      /* a reference */
  JsonNode *root;              /* the request body */
  gboolean chat;               /* /api/chat, else /api/generate */
  gboolean stream;
  char *model;                 /* the name the client used */
  BlnModelLease *lease;
  BlnGenRequest *gen;
  BlnReasoningSplit *split;
  GString *content, *thinking; /* the whole reply when not streaming */
  gboolean called, paused, msg_done, gen_running;
  gint64 t_start, t_load, t_first, t_last;
  BlnSafetyCall *sc;           /* rules, output filter, audit; NULL without a database */
  char *id;                    /* for the audit record */
  gboolean moderating;         /* waiting for the moderation endpoint */
  BlnFinish mod_finish;        /* ... with the generation's end */
  BlnGenUsage mod_usage;
  BlnToolParser *tools;        /* /api/chat with tools: the model's calls are parsed */
  GPtrArray *calls;            /* BlnToolCall*: the complete calls so far */
} OReq;

/* ---------------------------------------------------------------------- */
/* replies                                                                 */

static char *
to_json (JsonObject *obj)
{
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), obj);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *s = NULL;
  GString *out;

  json_generator_set_root (gen, node);
  s = json_generator_to_data (gen, NULL);
  /* json-glib leaves U+001F unescaped; strict parsers reject it */
  out = g_string_sized_new (strlen (s) + 2);
  for (const char *p = s; *p; p++)
    {
      if (*p == 0x1f)
        g_string_append (out, "\\u001f");
      else
        g_string_append_c (out, *p);
    }
  return g_string_free (out, FALSE);
}

static void
reply_object (SoupServerMessage *msg, guint status, JsonObject *obj)
{
  char *s = to_json (obj);

  soup_message_headers_replace (soup_server_message_get_response_headers (msg),
                                "Access-Control-Allow-Origin", "*");
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_TAKE, s, strlen (s));
}

static void
reply_error (SoupServerMessage *msg, guint status, const char *fmt, ...) G_GNUC_PRINTF (3, 4);

/* Adds name/value pairs (rate-limit headers) to the response of @msg. */
static void
add_headers (SoupServerMessage *msg, const char *const *headers)
{
  for (guint i = 0; headers && headers[i] && headers[i + 1]; i += 2)
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), headers[i],
                                  headers[i + 1]);
}

static void
reply_error (SoupServerMessage *msg, guint status, const char *fmt, ...)
{
  g_autoptr (JsonObject) o = json_object_new ();
  g_autofree char *text = NULL;
  va_list ap;

  va_start (ap, fmt);
  text = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  json_object_set_string_member (o, "error", text);
  reply_object (msg, status, o);
}

static char *
iso_time (gint64 unix_s)
{
  g_autoptr (GDateTime) t = unix_s > 0 ? g_date_time_new_from_unix_utc (unix_s)
                                       : g_date_time_new_now_utc ();

  return g_date_time_format_iso8601 (t);
}

static JsonObject *
details_object (const BlnModelEntry *e)
{
  JsonObject *d = json_object_new ();
  JsonArray *fam = json_array_new ();

  json_object_set_string_member (d, "parent_model", "");
  json_object_set_string_member (d, "format",
                                 e->format == BLN_MODEL_FORMAT_GGUF ? "gguf" : "safetensors");
  json_object_set_string_member (d, "family", e->architecture);
  json_array_add_string_element (fam, e->architecture);
  json_object_set_array_member (d, "families", fam);
  json_object_set_string_member (d, "parameter_size", e->parameter_size);
  json_object_set_string_member (d, "quantization_level", e->quantization);
  return d;
}

/* Ollama's digest is the blob's sha256; hashing gigabytes for a listing is
 * too slow, so this one identifies the file by path, size and time instead. */
static char *
entry_digest (const BlnModelEntry *e)
{
  g_autofree char *key = g_strdup_printf ("%s\n%" G_GINT64_FORMAT "\n%" G_GINT64_FORMAT,
                                          e->path, e->size_bytes, e->modified);

  return g_compute_checksum_for_string (G_CHECKSUM_SHA256, key, -1);
}

static JsonObject *
model_object (const BlnModelEntry *e)
{
  JsonObject *m = json_object_new ();
  g_autofree char *mod = iso_time (e->modified);
  g_autofree char *digest = entry_digest (e);

  json_object_set_string_member (m, "name", e->id);
  json_object_set_string_member (m, "model", e->id);
  json_object_set_string_member (m, "modified_at", mod);
  json_object_set_int_member (m, "size", e->size_bytes);
  json_object_set_string_member (m, "digest", digest);
  json_object_set_object_member (m, "details", details_object (e));
  return m;
}

static void
handle_tags (BlnOllama *ol, SoupServerMessage *msg, gboolean loaded_only)
{
  g_autoptr (JsonObject) root = json_object_new ();
  JsonArray *models = json_array_new ();
  const BlnModelEntry *loaded = bln_model_host_loaded (ol->host);

  for (guint i = 0; i < bln_model_library_n_models (ol->lib); i++)
    {
      const BlnModelEntry *e = bln_model_library_get (ol->lib, i);
      JsonObject *m;
      if (loaded_only && e != loaded)
        continue;
      m = model_object (e);
      if (loaded_only)
        {
          g_autofree char *never = iso_time (G_GINT64_CONSTANT (253402300799));
          json_object_set_int_member (m, "size_vram", 0);
          json_object_set_string_member (m, "expires_at", never);
        }
      json_array_add_object_element (models, m);
    }
  json_object_set_array_member (root, "models", models);
  reply_object (msg, 200, root);
}

/* ---------------------------------------------------------------------- */
/* generation                                                              */

static void
oreq_free (OReq *r)
{
  g_hash_table_remove (r->ol->active, r);
  g_signal_handlers_disconnect_by_data (r->msg, r);
  bln_model_lease_release (r->lease);
  g_clear_pointer (&r->gen, bln_gen_request_unref);
  g_clear_pointer (&r->split, bln_reasoning_split_free);
  g_clear_pointer (&r->tools, bln_tool_parser_free);
  g_clear_pointer (&r->calls, g_ptr_array_unref);
  g_string_free (r->content, TRUE);
  g_string_free (r->thinking, TRUE);
  json_node_unref (r->root);
  g_object_unref (r->msg);
  g_free (r->model);
  bln_safety_call_free (r->sc);
  g_free (r->id);
  g_free (r);
}

/* The common fields of every reply object. */
static JsonObject *
reply_base (OReq *r)
{
  JsonObject *o = json_object_new ();
  g_autofree char *now = iso_time (0);

  json_object_set_string_member (o, "model", r->model);
  json_object_set_string_member (o, "created_at", now);
  return o;
}

/* Puts @content and @thinking where this route wants them. */
static void
set_text (OReq *r, JsonObject *o, const char *content, const char *thinking)
{
  if (r->chat)
    {
      JsonObject *m = json_object_new ();
      json_object_set_string_member (m, "role", "assistant");
      json_object_set_string_member (m, "content", content);
      if (thinking != NULL && *thinking)
        json_object_set_string_member (m, "thinking", thinking);
      json_object_set_object_member (o, "message", m);
    }
  else
    {
      json_object_set_string_member (o, "response", content);
      if (thinking != NULL && *thinking)
        json_object_set_string_member (o, "thinking", thinking);
    }
}

static void
send_line (OReq *r, JsonObject *o)
{
  char *s, *line;

  if (r->msg_done)
    return;
  s = to_json (o);
  line = g_strconcat (s, "\n", NULL);
  g_free (s);
  soup_message_body_append (soup_server_message_get_response_body (r->msg), SOUP_MEMORY_TAKE,
                            line, strlen (line));
  soup_server_message_unpause (r->msg);
}

/* /api/chat with tools: passes the answer text @c through the tool-call
 * parser, leaving in @c only what is content; the calls are kept for the
 * end of the reply. @end: the text is over. */
static void
take_tool_calls (OReq *r, GString *c, gboolean end)
{
  g_autoptr (GString) content = g_string_new (NULL);
  g_autoptr (GPtrArray) pieces = g_ptr_array_new_with_free_func ((GDestroyNotify)
                                                                 bln_tool_call_free);

  bln_tool_parser_push (r->tools, c->str, (gssize) c->len, content, pieces);
  if (end)
    bln_tool_parser_finish (r->tools, content, pieces);
  bln_tool_calls_collect (r->calls, pieces);
  g_string_assign (c, content->str);
}

/* Sends (or keeps, when not streaming) a piece of the answer that may go out. */
static void
emit_text (OReq *r, const char *text)
{
  g_autoptr (GString) c = g_string_new (NULL), t = g_string_new (NULL);

  bln_reasoning_split_push (r->split, text, -1, t, c);
  if (r->tools != NULL)
    take_tool_calls (r, c, FALSE);
  if (!r->stream)
    {
      g_string_append (r->content, c->str);
      g_string_append (r->thinking, t->str);
      return;
    }
  if (c->len > 0 || t->len > 0)
    {
      g_autoptr (JsonObject) o = reply_base (r);
      set_text (r, o, c->str, t->str);
      json_object_set_boolean_member (o, "done", FALSE);
      send_line (r, o);
    }
}

static void
on_text (const char *text, gpointer data)
{
  OReq *r = data;
  gint64 now = g_get_monotonic_time ();
  g_autoptr (GString) safe = NULL;

  if (r->ol->metrics != NULL)
    {
      if (r->t_first == 0)
        bln_metrics_observe_ttft (r->ol->metrics, (now - r->t_start) / 1e6);
      else
        bln_metrics_observe_itl (r->ol->metrics, (now - r->t_last) / 1e6);
    }
  if (r->t_first == 0)
    r->t_first = now;
  r->t_last = now;
  if (r->sc != NULL && text != NULL)
    {
      /* the output rules see the text before the client does */
      safe = g_string_new (NULL);
      if (!bln_safety_call_filter (r->sc, text, safe))
        bln_gen_request_cancel (r->gen);
      if (safe->len == 0)
        return;
      text = safe->str;
    }
  emit_text (r, text);
}

static const char *const finish_names[] = { "stop", "length", "cancelled", "error" };

/* Ends the reply (or frees @r when the client has gone). */
static void
finish_reply (OReq *r, BlnFinish finish, const BlnGenUsage *usage, const GError *error)
{
  g_autoptr (GString) c = g_string_new (NULL), t = g_string_new (NULL);
  g_autoptr (JsonObject) o = NULL;
  gint64 now = g_get_monotonic_time ();
  gint64 first = r->t_first ? r->t_first : now;
  gboolean filtered = r->sc != NULL && bln_safety_call_filtered (r->sc);

  if (r->msg_done)
    {
      oreq_free (r);
      return;
    }
  if (finish == BLN_FINISH_ERROR || finish == BLN_FINISH_CANCELLED)
    {
      const char *why = finish == BLN_FINISH_CANCELLED ? "the server is shutting down"
                        : error ? error->message : "engine failure";
      if (r->stream)
        {
          o = json_object_new ();
          json_object_set_string_member (o, "error", why);
          send_line (r, o);
          soup_message_body_complete (soup_server_message_get_response_body (r->msg));
        }
      else
        reply_error (r->msg, finish == BLN_FINISH_CANCELLED ? 503 : 500, "%s", why);
      soup_server_message_unpause (r->msg);
      return;
    }
  bln_reasoning_split_finish (r->split, t, c);
  if (r->tools != NULL)
    take_tool_calls (r, c, TRUE);
  if (r->stream && r->calls != NULL && r->calls->len > 0)
    {
      /* the calls in a line of their own before the last one, as Ollama does */
      g_autoptr (JsonObject) tl = reply_base (r);

      set_text (r, tl, "", NULL);
      json_object_set_array_member (json_object_get_object_member (tl, "message"), "tool_calls",
                                    bln_tool_calls_to_ollama (r->calls));
      json_object_set_boolean_member (tl, "done", FALSE);
      send_line (r, tl);
    }
  o = reply_base (r);
  if (r->stream)
    set_text (r, o, c->str, t->str);
  else
    {
      g_string_append (r->content, c->str);
      g_string_append (r->thinking, t->str);
      set_text (r, o, r->content->str, r->thinking->str);
      if (r->calls != NULL && r->calls->len > 0)
        json_object_set_array_member (json_object_get_object_member (o, "message"),
                                      "tool_calls", bln_tool_calls_to_ollama (r->calls));
    }
  json_object_set_boolean_member (o, "done", TRUE);
  json_object_set_string_member (o, "done_reason", filtered ? "content_filter"
                                                   : finish == BLN_FINISH_LENGTH ? "length"
                                                   : "stop");
  json_object_set_int_member (o, "total_duration", (now - r->t_start) * 1000);
  json_object_set_int_member (o, "load_duration", (r->t_load - r->t_start) * 1000);
  json_object_set_int_member (o, "prompt_eval_count", usage->prompt_tokens);
  json_object_set_int_member (o, "prompt_eval_duration", (first - r->t_load) * 1000);
  json_object_set_int_member (o, "eval_count", usage->completion_tokens);
  json_object_set_int_member (o, "eval_duration", (now - first) * 1000);
  if (r->stream)
    {
      send_line (r, o);
      soup_message_body_complete (soup_server_message_get_response_body (r->msg));
    }
  else
    reply_object (r->msg, 200, o);
  soup_server_message_unpause (r->msg);
}

/* The audit record of @r (once). */
static void
audit_end (OReq *r, BlnFinish finish, const BlnGenUsage *usage)
{
  const char *reason = finish == BLN_FINISH_CANCELLED || finish == BLN_FINISH_ERROR
                       ? finish_names[finish]
                       : bln_safety_call_filtered (r->sc) ? "content_filter"
                       : finish_names[finish];

  bln_safety_call_end (r->sc, r->id, reason, usage->prompt_tokens, usage->completion_tokens,
                       usage->cached_tokens);
}

static void
on_moderated (GObject *source, GAsyncResult *result, gpointer data)
{
  OReq *r = data;
  g_autoptr (GString) held = g_string_new (NULL);

  r->moderating = FALSE;
  bln_safety_call_moderate_finish (r->sc, result);
  bln_safety_call_release (r->sc, held);   /* nothing when withheld */
  if (held->len > 0 && !r->msg_done)
    emit_text (r, held->str);
  audit_end (r, r->mod_finish, &r->mod_usage);
  finish_reply (r, r->mod_finish, &r->mod_usage, NULL);
}

static void
on_done (BlnFinish finish, const BlnGenUsage *usage, const GError *error, gpointer data)
{
  OReq *r = data;

  r->gen_running = FALSE;
  if (r->ol->metrics != NULL)
    bln_metrics_observe_generation (r->ol->metrics, usage->prompt_tokens, usage->cached_tokens,
                                    usage->completion_tokens, finish_names[finish],
                                    (g_get_monotonic_time () - r->t_start) / 1e6);
  if (r->sc != NULL)
    {
      /* the held-back end of the answer; the moderation endpoint; the audit record */
      if (!bln_safety_call_filtered (r->sc) && finish != BLN_FINISH_CANCELLED
          && finish != BLN_FINISH_ERROR)
        {
          g_autoptr (GString) rest = g_string_new (NULL);

          bln_safety_call_flush (r->sc, rest);
          if (rest->len > 0 && !r->msg_done)
            emit_text (r, rest->str);
        }
      if (bln_safety_call_filtered (r->sc) && finish == BLN_FINISH_CANCELLED && !r->msg_done)
        finish = BLN_FINISH_STOP;   /* stopped by the output filter, not by the client */
      if (bln_safety_call_needs_moderation (r->sc) && !r->msg_done
          && (finish == BLN_FINISH_STOP || finish == BLN_FINISH_LENGTH))
        {
          r->moderating = TRUE;
          r->mod_finish = finish;
          r->mod_usage = *usage;
          bln_safety_call_moderate_async (r->sc, NULL, NULL, on_moderated, r);
          return;
        }
      audit_end (r, finish, usage);
    }
  finish_reply (r, finish, usage, error);
}

/* The "done" reply Ollama gives when a request only loads the model. */
static void
reply_loaded (OReq *r)
{
  g_autoptr (JsonObject) o = reply_base (r);

  set_text (r, o, "", NULL);
  json_object_set_boolean_member (o, "done", TRUE);
  json_object_set_string_member (o, "done_reason", "load");
  reply_object (r->msg, 200, o);
}

/* An OpenAI-shaped request from the Ollama body, for chat-params.c. FALSE
 * with a 400 answered when the body asks for something we cannot do. */
static JsonObject *
openai_body (OReq *r, JsonObject *in, gboolean *empty)
{
  JsonObject *out = json_object_new ();
  JsonArray *msgs = json_array_new ();
  JsonObject *opt = json_object_get_member (in, "options") != NULL
                    && JSON_NODE_HOLDS_OBJECT (json_object_get_member (in, "options"))
                    ? json_object_get_object_member (in, "options") : NULL;
  static const char *const same[][2] = {
    { "temperature", "temperature" }, { "top_p", "top_p" }, { "top_k", "top_k" },
    { "min_p", "min_p" }, { "seed", "seed" }, { "stop", "stop" },
    { "repeat_penalty", "repetition_penalty" }, { "presence_penalty", "presence_penalty" },
    { "frequency_penalty", "frequency_penalty" },
  };

  *empty = FALSE;
  if (r->chat)
    {
      JsonNode *n = json_object_get_member (in, "messages");
      JsonArray *a = n && JSON_NODE_HOLDS_ARRAY (n) ? json_node_get_array (n) : NULL;
      for (guint i = 0; a != NULL && i < json_array_get_length (a); i++)
        {
          JsonNode *mn = json_array_get_element (a, i);
          JsonObject *m, *copy;
          JsonNode *img;
          if (!JSON_NODE_HOLDS_OBJECT (mn))
            {
              json_array_add_element (msgs, json_node_copy (mn));   /* chat-params says why */
              continue;
            }
          m = json_node_get_object (mn);
          img = json_object_get_member (m, "images");
          if (img != NULL && JSON_NODE_HOLDS_ARRAY (img)
              && json_array_get_length (json_node_get_array (img)) > 0)
            {
              reply_error (r->msg, 400, "the model %s reads text only; images are not supported",
                           r->model);
              json_object_unref (out);
              json_array_unref (msgs);
              return NULL;
            }
          copy = json_object_new ();
          if (json_object_has_member (m, "role"))
            json_object_set_member (copy, "role",
                                    json_node_copy (json_object_get_member (m, "role")));
          if (json_object_has_member (m, "content"))
            json_object_set_member (copy, "content",
                                    json_node_copy (json_object_get_member (m, "content")));
          /* earlier calls (arguments as objects) and tool results' names */
          if (json_object_has_member (m, "tool_calls"))
            json_object_set_member (copy, "tool_calls",
                                    json_node_copy (json_object_get_member (m, "tool_calls")));
          if (json_object_has_member (m, "tool_name"))
            json_object_set_member (copy, "name",
                                    json_node_copy (json_object_get_member (m, "tool_name")));
          json_array_add_object_element (msgs, copy);
        }
      *empty = a == NULL || json_array_get_length (a) == 0;
      if (json_object_has_member (in, "tools"))
        json_object_set_member (out, "tools", json_node_copy (json_object_get_member (in,
                                                                                      "tools")));
    }
  else
    {
      const char *system = json_object_get_member (in, "system") != NULL
                           && JSON_NODE_HOLDS_VALUE (json_object_get_member (in, "system"))
                           ? json_object_get_string_member (in, "system") : NULL;
      const char *prompt = json_object_get_member (in, "prompt") != NULL
                           && JSON_NODE_HOLDS_VALUE (json_object_get_member (in, "prompt"))
                           ? json_object_get_string_member (in, "prompt") : NULL;
      JsonObject *m;
      if (system != NULL && *system)
        {
          m = json_object_new ();
          json_object_set_string_member (m, "role", "system");
          json_object_set_string_member (m, "content", system);
          json_array_add_object_element (msgs, m);
        }
      m = json_object_new ();
      json_object_set_string_member (m, "role", "user");
      json_object_set_string_member (m, "content", prompt ? prompt : "");
      json_array_add_object_element (msgs, m);
      *empty = prompt == NULL || *prompt == '\0';
    }
  json_object_set_array_member (out, "messages", msgs);
  for (guint i = 0; opt != NULL && i < G_N_ELEMENTS (same); i++)
    if (json_object_has_member (opt, same[i][0]))
      json_object_set_member (out, same[i][1],
                              json_node_copy (json_object_get_member (opt, same[i][0])));
  if (opt != NULL && json_object_has_member (opt, "num_predict"))
    {
      JsonNode *n = json_object_get_member (opt, "num_predict");
      /* -1 and -2 mean "until the context is full" */
      if (JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_INT64
          && json_node_get_int (n) > 0)
        json_object_set_int_member (out, "max_tokens", json_node_get_int (n));
    }
  return out;
}

static void
start_generation (OReq *r, BlnEngineWorker *worker)
{
  JsonObject *in = json_node_get_object (r->root);
  BlnModel *model = bln_engine_worker_model (worker);
  BlnTokenizer *tok = bln_model_tokenizer (model);
  const char *tmpl = bln_model_chat_template (model);
  g_autoptr (JsonObject) oai = NULL;
  BlnChatParams p = { 0 };
  const char *param = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *prompt = NULL;
  g_autoptr (GArray) ids = NULL;
  gboolean empty, raw;
  int n_ctx = bln_engine_worker_n_ctx (worker), room;

  r->t_load = g_get_monotonic_time ();
  oai = openai_body (r, in, &empty);
  if (oai == NULL)
    return;
  if (empty)
    {
      reply_loaded (r);
      return;
    }
  if (!bln_chat_params_parse (oai, &p, &param, &error))
    {
      reply_error (r->msg, 400, "%s%s%s", param ? param : "", param ? ": " : "", error->message);
      goto out;
    }
  raw = !r->chat && json_object_get_member (in, "raw") != NULL
        && JSON_NODE_HOLDS_VALUE (json_object_get_member (in, "raw"))
        && json_object_get_boolean_member (in, "raw");
  if (raw)
    {
      prompt = g_strdup (json_object_get_string_member (in, "prompt"));
      ids = bln_tokenizer_encode (tok, prompt, -1, bln_tokenizer_add_bos (tok), FALSE, &error);
    }
  else
    {
      BlnToolFormat fmt = bln_tool_format_detect (tmpl);

      if (tmpl == NULL)
        {
          reply_error (r->msg, 400, "the model %s has no chat template; use \"raw\": true",
                       r->model);
          goto out;
        }
      bln_tool_history_adapt (p.messages, fmt);
      prompt = bln_chat_render (tmpl, p.messages, p.tools, TRUE, bln_tokenizer_bos_text (tok),
                                bln_tokenizer_eos_text (tok), NULL, &error);
      if (p.tools != NULL && fmt != BLN_TOOL_FORMAT_NONE)
        {
          r->tools = bln_tool_parser_new (fmt);
          r->calls = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_tool_call_free);
        }
      if (prompt != NULL)
        ids = bln_tokenizer_encode (tok, prompt, -1, FALSE, TRUE, &error);
    }
  if (ids == NULL || ids->len == 0)
    {
      reply_error (r->msg, 400, "%s", error ? error->message : "the prompt is empty");
      goto out;
    }
  room = n_ctx - (int) ids->len;
  if (room < 1)
    {
      reply_error (r->msg, 400, "the prompt is %u tokens; the context holds %d", ids->len, n_ctx);
      goto out;
    }
  r->split = bln_reasoning_split_new (!raw && bln_reasoning_prompt_opens_block (prompt));
  r->gen = bln_gen_request_new (ids, &p.sp, p.max_tokens > 0 ? MIN (p.max_tokens, room) : room,
                                (const char *const *) p.stops->pdata,
                                g_main_context_get_thread_default (), on_text, on_done, r);
  r->gen_running = TRUE;
  soup_server_message_pause (r->msg);
  r->paused = TRUE;
  if (r->stream)
    {
      SoupMessageHeaders *h = soup_server_message_get_response_headers (r->msg);
      soup_message_headers_replace (h, "Access-Control-Allow-Origin", "*");
      soup_server_message_set_status (r->msg, 200, NULL);
      soup_message_headers_set_content_type (h, "application/x-ndjson", NULL);
      soup_message_headers_set_encoding (h, SOUP_ENCODING_CHUNKED);
      soup_server_message_unpause (r->msg);   /* the headers go out at once */
    }
  if (!bln_engine_worker_submit (worker, r->gen, &error))
    {
      BlnGenUsage usage = { (int) ids->len, 0, 0 };

      on_done (BLN_FINISH_ERROR, &usage, error, r);   /* answers with the error */
    }
out:
  bln_chat_params_clear (&p);
}

static void
on_ready (BlnModelLease *lease, BlnEngineWorker *worker, const BlnModelEntry *entry,
          const GError *error, gpointer data)
{
  OReq *r = data;

  r->lease = lease;
  r->called = TRUE;
  if (r->paused)
    {
      soup_server_message_unpause (r->msg);
      r->paused = FALSE;
    }
  if (error != NULL)
    reply_error (r->msg, 500, "cannot load the model %s: %s", entry->id, error->message);
  else if (r->ol->stopped)
    reply_error (r->msg, 503, "the server is shutting down");
  else
    start_generation (r, worker);
}

static void
on_finished (SoupServerMessage *msg, gpointer data)
{
  OReq *r = data;

  r->msg_done = TRUE;
  /* the model may go once nobody is answered from it */
  g_clear_pointer (&r->lease, bln_model_lease_release);
  if (r->gen_running)
    bln_gen_request_cancel (r->gen);   /* the client went away */
  else if (!r->moderating)             /* else on_moderated() frees it */
    oreq_free (r);
}

/* ---------------------------------------------------------------------- */
/* routing                                                                 */

static JsonNode *
parse_body (BlnOllama *ol, SoupServerMessage *msg)
{
  g_autoptr (GBytes) bytes = soup_message_body_flatten (soup_server_message_get_request_body (msg));
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  gsize len;
  const char *raw = g_bytes_get_data (bytes, &len);

  if (len > ol->max_body)
    {
      reply_error (msg, 413, "the request body is %" G_GSIZE_FORMAT " bytes; the limit is %"
                   G_GSIZE_FORMAT, len, ol->max_body);
      return NULL;
    }
  if (!g_utf8_validate_len (raw, len, NULL))
    {
      reply_error (msg, 400, "the request body is not valid UTF-8");
      return NULL;
    }
  if (!json_parser_load_from_data (parser, raw, (gssize) len, &error))
    {
      reply_error (msg, 400, "invalid JSON: %s", error->message);
      return NULL;
    }
  if (!JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    {
      reply_error (msg, 400, "the request body must be a JSON object");
      return NULL;
    }
  return json_node_ref (json_parser_get_root (parser));
}

static const BlnModelEntry *
resolve (BlnOllama *ol, SoupServerMessage *msg, JsonObject *body)
{
  JsonNode *n = json_object_get_member (body, "model");
  g_autoptr (GError) error = NULL;
  const BlnModelEntry *e;

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING
      || *json_node_get_string (n) == '\0')
    {
      reply_error (msg, 400, "model is required");
      return NULL;
    }
  e = bln_model_host_resolve (ol->host, json_node_get_string (n), ol->strict, &error);
  if (e == NULL && g_error_matches (error, BLN_ERROR, BLN_ERROR_INVALID))
    reply_error (msg, 400, "%s", error->message);
  else if (e == NULL)
    reply_error (msg, 404, "model \"%s\" not found", json_node_get_string (n));
  return e;
}

/* Answers a refusal from safety.h in Ollama's shape. */
static void
reply_refusal (SoupServerMessage *msg, BlnSafetyVerdict *v)
{
  add_headers (msg, (const char *const *) v->headers);
  reply_error (msg, v->status ? v->status : 403, "%s", v->message ? v->message : "refused");
}

/* The key check and the rate limits alone (routes without a prompt). */
static gboolean
check_key (BlnOllama *ol, SoupServerMessage *msg)
{
  BlnSafetyRequest req;
  BlnSafetyVerdict v = { 0 };
  gboolean ok;

  bln_safety_http_request (msg, NULL, &req);
  ok = bln_safety_check_request (ol->safety, &req, &v);
  if (ok)
    add_headers (msg, (const char *const *) v.headers);
  else
    reply_refusal (msg, &v);
  bln_safety_verdict_clear (&v);
  return ok;
}

static JsonObject *
member_object (JsonObject *o, const char *key)
{
  JsonNode *n = json_object_get_member (o, key);

  return n != NULL && JSON_NODE_HOLDS_OBJECT (n) ? json_node_get_object (n) : NULL;
}

static gboolean
member_is_string (JsonObject *o, const char *key)
{
  JsonNode *n = json_object_get_member (o, key);

  return n != NULL && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING;
}

/* Admits @r through safety.h: every text the model will read (each chat
 * message's content; generate's system and prompt) is checked, and masked in
 * the request body. FALSE when refused (answered). */
static gboolean
admit (OReq *r, const char *path)
{
  JsonObject *body = json_node_get_object (r->root);
  JsonObject *opt = member_object (body, "options");
  g_autoptr (GPtrArray) texts = g_ptr_array_new ();
  g_autoptr (GPtrArray) owners = g_ptr_array_new ();   /* JsonObject holding each text */
  g_autoptr (GPtrArray) keys = g_ptr_array_new ();     /* ... under this member */
  BlnSafetyRequest req;
  BlnSafetyVerdict refusal = { 0 };
  gint64 max_tokens = 0;

  if (r->chat)
    bln_safety_collect_message_texts (json_object_get_member (body, "messages"), texts, owners,
                                      keys);
  else
    {
      static const char *const members[] = { "system", "prompt" };
      for (guint i = 0; i < G_N_ELEMENTS (members); i++)
        if (member_is_string (body, members[i]))
          {
            g_ptr_array_add (texts, (gpointer) json_object_get_string_member (body, members[i]));
            g_ptr_array_add (owners, body);
            g_ptr_array_add (keys, (gpointer) members[i]);
          }
    }
  g_ptr_array_add (texts, NULL);
  if (opt != NULL && json_object_get_member (opt, "num_predict") != NULL
      && JSON_NODE_HOLDS_VALUE (json_object_get_member (opt, "num_predict"))
      && json_node_get_value_type (json_object_get_member (opt, "num_predict")) == G_TYPE_INT64)
    max_tokens = json_object_get_int_member (opt, "num_predict");

  bln_safety_http_request (r->msg, NULL, &req);
  req.endpoint = path;
  req.texts = (const char *const *) texts->pdata;
  r->sc = bln_safety_call_admit (r->ol->safety, &req, r->model, max_tokens, &refusal);
  if (r->sc == NULL)
    {
      reply_refusal (r->msg, &refusal);
      bln_safety_verdict_clear (&refusal);
      return FALSE;
    }
  add_headers (r->msg, bln_safety_call_headers (r->sc));
  bln_safety_write_back_texts (bln_safety_call_masked_texts (r->sc), owners, keys);
  return TRUE;
}

void
bln_ollama_set_safety (BlnOllama *ol, BlnSafety *safety)
{
  ol->safety = safety;
}

void
bln_ollama_handle (BlnOllama *ol, SoupServerMessage *msg, const char *path)
{
  const char *method = soup_server_message_get_method (msg);
  gboolean get = g_str_equal (method, "GET") || g_str_equal (method, "HEAD");
  g_autoptr (JsonNode) root = NULL;
  const BlnModelEntry *e;
  OReq *r;

  if (ol->safety != NULL && !(g_str_equal (method, "POST") && (g_str_equal (path, "/api/chat")
                                                               || g_str_equal (path,
                                                                               "/api/generate")))
      && !check_key (ol, msg))
    return;   /* answered 401 / 429 / 503 */
  if (g_str_equal (path, "/api/version") && get)
    {
      g_autoptr (JsonObject) o = json_object_new ();
      json_object_set_string_member (o, "version", OLLAMA_API_VERSION);
      reply_object (msg, 200, o);
      return;
    }
  if (g_str_equal (path, "/api/tags") && get)
    {
      handle_tags (ol, msg, FALSE);
      return;
    }
  if (g_str_equal (path, "/api/ps") && get)
    {
      handle_tags (ol, msg, TRUE);
      return;
    }
  if (!g_str_equal (path, "/api/chat") && !g_str_equal (path, "/api/generate")
      && !g_str_equal (path, "/api/embed") && !g_str_equal (path, "/api/embeddings"))
    {
      reply_error (msg, 404, "no route %s %s", method, path);
      return;
    }
  if (!g_str_equal (method, "POST"))
    {
      reply_error (msg, 405, "use POST for %s", path);
      return;
    }
  if ((root = parse_body (ol, msg)) == NULL)
    return;
  if ((e = resolve (ol, msg, json_node_get_object (root))) == NULL)
    return;
  if (g_str_has_prefix (path, "/api/embed"))
    {
      reply_error (msg, 400, "the model %s cannot produce embeddings; no embedding model is "
                   "installed", e->id);
      return;
    }
  if (ol->stopped)
    {
      reply_error (msg, 503, "the server is shutting down");
      return;
    }
  r = g_new0 (OReq, 1);
  r->ol = ol;
  r->msg = g_object_ref (msg);
  r->root = g_steal_pointer (&root);
  r->chat = g_str_equal (path, "/api/chat");
  r->model = g_strdup (json_object_get_string_member (json_node_get_object (r->root), "model"));
  r->stream = TRUE;   /* Ollama streams unless told not to */
  if (json_object_get_member (json_node_get_object (r->root), "stream") != NULL
      && JSON_NODE_HOLDS_VALUE (json_object_get_member (json_node_get_object (r->root),
                                                        "stream")))
    r->stream = json_object_get_boolean_member (json_node_get_object (r->root), "stream");
  r->content = g_string_new (NULL);
  r->thinking = g_string_new (NULL);
  r->t_start = g_get_monotonic_time ();
  r->id = g_strdup_printf ("ollama-%08x%08x", g_random_int (), g_random_int ());
  if (ol->safety != NULL && !admit (r, path))
    {
      oreq_free (r);   /* not yet in the table nor connected: removing is harmless */
      return;
    }
  g_hash_table_add (ol->active, r);
  g_signal_connect (msg, "finished", G_CALLBACK (on_finished), r);
  r->lease = bln_model_host_acquire (ol->host, e, on_ready, r);
  if (!r->called)
    {
      soup_server_message_pause (msg);
      r->paused = TRUE;
    }
}

BlnOllama *
bln_ollama_new (BlnModelLibrary *lib, BlnModelHost *host, BlnMetrics *metrics, gboolean strict,
                gsize max_body)
{
  BlnOllama *ol = g_new0 (BlnOllama, 1);

  ol->lib = lib;
  ol->host = host;
  ol->metrics = metrics;
  ol->strict = strict;
  ol->max_body = max_body ? max_body : 8u << 20;
  ol->active = g_hash_table_new (NULL, NULL);
  return ol;
}

void
bln_ollama_stop (BlnOllama *ol, gboolean cancel)
{
  GHashTableIter it;
  gpointer key;

  ol->stopped = TRUE;
  g_hash_table_iter_init (&it, ol->active);
  while (g_hash_table_iter_next (&it, &key, NULL))
    {
      OReq *r = key;
      if (!r->called)
        {
          /* still waiting for its model */
          r->called = TRUE;
          g_clear_pointer (&r->lease, bln_model_lease_release);
          reply_error (r->msg, 503, "the server is shutting down");
          if (r->paused)
            soup_server_message_unpause (r->msg);
          r->paused = FALSE;
        }
      else if (cancel && r->gen_running)
        bln_gen_request_cancel (r->gen);
    }
}

guint
bln_ollama_n_active (BlnOllama *ol)
{
  return g_hash_table_size (ol->active);
}

void
bln_ollama_free (BlnOllama *ol)
{
  gint64 until;
  GHashTableIter it;
  gpointer key;
  gboolean running = TRUE;

  if (ol == NULL)
    return;
  /* a request the worker still runs must get its done callback first */
  bln_ollama_stop (ol, TRUE);
  until = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
  while (running && g_get_monotonic_time () < until)
    {
      running = FALSE;
      g_hash_table_iter_init (&it, ol->active);
      while (g_hash_table_iter_next (&it, &key, NULL))
        running |= ((OReq *) key)->gen_running || ((OReq *) key)->moderating;
      if (running)
        g_main_context_iteration (NULL, FALSE);
    }
  while (g_hash_table_size (ol->active) > 0)
    {
      OReq *r;
      g_hash_table_iter_init (&it, ol->active);
      g_hash_table_iter_next (&it, &key, NULL);
      r = key;
      if (r->gen_running || r->moderating)
        {
          /* a worker (or moderation service) that never answered: leave the request to it */
          g_hash_table_remove (ol->active, r);
          continue;
        }
      oreq_free (r);
    }
  g_hash_table_unref (ol->active);
  g_free (ol);
}
