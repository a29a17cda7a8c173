/* server.c — see server.h. */
#include "server.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <libsoup/soup.h>
#include <sqlite3.h>
#include <json-glib/json-glib.h>
#include "baleen-config.h"
#include "bln-error.h"
#include "chat.h"
#include "chat-params.h"
#include "safety.h"
#include "db.h"
#include "chat-output.h"
#include "reasoning.h"
#include "tokenizer.h"
#include "metrics.h"
#include "model-library.h"
#include "ollama.h"
#include "websocket.h"

#define DEFAULT_MAX_BODY (8u << 20)

struct _BlnServer {
  SoupServer *soup;
  BlnEngineWorker *worker;    /* the worker of the request being dispatched (with_model) */
  char *url;
  char *model_id;             /* the id of that request's model */
  BlnModelLibrary *lib;       /* borrowed */
  BlnModelHost *host;         /* borrowed */
  gboolean strict_models;     /* unknown model names get 404 */
  BlnMetrics *metrics;
  BlnOllama *ollama;          /* the /api/ routes */
  BlnWs *ws;                  /* /v1/ws */
  GHashTable *waits;          /* ModelWait* set: requests waiting for their model */
  char *api_key;
  gsize max_body;
  guint keepalive_ms;         /* SSE comment after this much silence */
  gint64 created;
  GHashTable *active;     /* ChatReq* set */
  gboolean shut_down;
  BlnSafety *safety;      /* borrowed; NULL without --db */
  BlnSafetyCall *admitted; /* admitted request, while its handler runs (cloned per answer) */
};

/* The prompts of one /v1/completions request: one generation each, one
 * reply; the last generation to end writes it. */
typedef struct {
  int n, n_done;
  char **texts;               /* by index (plain replies) */
  const char **finishes;
  JsonArray **logprobs;       /* by index; NULL when not asked for */
  BlnGenUsage usage;          /* summed */
  char *error;                /* the first engine failure */
  char *id;                   /* the reply's id, shared by every choice */
} CmplGroup;

static void
cmpl_group_free (CmplGroup *g)
{
  int i;

  for (i = 0; i < g->n; i++)
    {
      g_free (g->texts[i]);
      if (g->logprobs[i] != NULL)
        json_array_unref (g->logprobs[i]);
    }
  g_free (g->texts);
  g_free (g->finishes);
  g_free (g->logprobs);
  g_free (g->error);
  g_free (g->id);
  g_free (g);
}

/* One chat completion (or completion) in flight. */
typedef struct {
  CmplGroup *group;           /* completions with several prompts; else NULL */
  int index;                  /* the choice index */
  BlnServer *srv;
  SoupServerMessage *msg;     /* a reference */
  BlnGenRequest *gen;
  gboolean completion;        /* /v1/completions rather than chat */
  BlnChatOutput *out;         /* chat: reasoning and tool-call shaping */
  const BlnTokenizer *tok;    /* the model's (held by the request's model lease) */
  char *model;                /* the id answered with */
  JsonArray *lp_pending;      /* logprob entries not yet sent (stream) */
  JsonArray *lp_all;          /* every logprob entry; NULL when not asked for */
  int reasoning_tokens;
  GSource *keepalive;         /* SSE comments during silence */
  gint64 last_send;           /* monotonic µs of the last write */
  gboolean stream;
  gboolean include_usage;
  gboolean msg_finished;      /* the connection is done with it (sent or gone) */
  char *id;
  gint64 created;
  GString *text;              /* the whole reply, for the non-streamed answer */
  GSource *watch;             /* notices a client that hangs up while we generate */
  gint64 t_start, t_last;     /* monotonic µs: arrival, last text (for the metrics) */
  BlnSafetyCall *sc;          /* output filter and audit record; NULL without --db */
} ChatReq;

/* ---------------------------------------------------------------------- */
/* replies                                                                 */

static char *
json_to_str (JsonNode *node, gsize *len)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *s = NULL;
  GString *out;

  json_generator_set_root (gen, node);
  s = json_generator_to_data (gen, NULL);
  /* json-glib leaves U+001F unescaped, which strict parsers (Python's json,
   * the AI SDK) reject; the byte can only occur inside a string here */
  out = g_string_sized_new (strlen (s) + 8);
  for (const char *p = s; *p; p++)
    {
      if (*p == 0x1f)
        g_string_append (out, "\\u001f");
      else
        g_string_append_c (out, *p);
    }
  if (len != NULL)
    *len = out->len;
  return g_string_free (out, FALSE);
}

static char *
object_to_str (JsonObject *obj, gsize *len)
{
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), obj);

  return json_to_str (node, len);
}

/* The origins browsers may call from: the setting server.cors_origins of
 * the database (the desktop app's Server page writes it; read at every
 * answer, so a change applies at once), or NULL for any ("*", the default,
 * and always without --db). A new string. */
static char *
cors_origins (BlnServer *srv)
{
  sqlite3_stmt *st;
  char *v = NULL;

  if (srv == NULL || srv->safety == NULL)
    return NULL;
  st = bln_db_prepare (bln_safety_db (srv->safety),
                       "SELECT value FROM settings WHERE key = 'server.cors_origins'", NULL);
  if (st == NULL)
    return NULL;
  if (sqlite3_step (st) == SQLITE_ROW && sqlite3_column_text (st, 0) != NULL)
    v = g_strstrip (g_strdup ((const char *) sqlite3_column_text (st, 0)));
  sqlite3_finalize (st);
  if (v != NULL && g_str_equal (v, "*"))
    g_clear_pointer (&v, g_free);
  return v;
}

/* CORS: Access-Control-Allow-Origin is "*", or, when the database lists
 * origins (space or comma separated), the request's Origin when it is one
 * of them and nothing otherwise (the browser then refuses the answer). */
static void
add_cors (SoupServerMessage *msg)
{
  BlnServer *srv = g_object_get_data (G_OBJECT (msg), "bln-server");
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  const char *origin = soup_message_headers_get_one (
      soup_server_message_get_request_headers (msg), "Origin");
  g_autofree char *allowed = cors_origins (srv);
  g_auto (GStrv) list = NULL;
  guint i;

  if (allowed == NULL)
    {
      soup_message_headers_replace (h, "Access-Control-Allow-Origin", "*");
      return;
    }
  soup_message_headers_replace (h, "Vary", "Origin");
  soup_message_headers_remove (h, "Access-Control-Allow-Origin");
  if (origin == NULL)
    return;
  list = g_strsplit_set (allowed, " ,\t\n", -1);
  for (i = 0; list[i] != NULL; i++)
    if (*list[i] && g_ascii_strcasecmp (list[i], origin) == 0)
      {
        soup_message_headers_replace (h, "Access-Control-Allow-Origin", origin);
        return;
      }
}

static void
reply_json (SoupServerMessage *msg, guint status, JsonObject *obj)
{
  gsize len;
  char *s = object_to_str (obj, &len);

  add_cors (msg);
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_TAKE, s, len);
}

static JsonObject *
error_object (const char *message, const char *type, const char *param, const char *code)
{
  JsonObject *err = json_object_new (), *root = json_object_new ();

  json_object_set_string_member (err, "message", message);
  json_object_set_string_member (err, "type", type);
  if (param != NULL)
    json_object_set_string_member (err, "param", param);
  else
    json_object_set_null_member (err, "param");
  if (code != NULL)
    json_object_set_string_member (err, "code", code);
  else
    json_object_set_null_member (err, "code");
  json_object_set_object_member (root, "error", err);
  return root;
}

static void
reply_error (SoupServerMessage *msg, guint status, const char *param, const char *code,
             const char *fmt, ...) G_GNUC_PRINTF (5, 6);

static void
reply_error (SoupServerMessage *msg, guint status, const char *param, const char *code,
             const char *fmt, ...)
{
  g_autofree char *text = NULL;
  g_autoptr (JsonObject) obj = NULL;
  const char *type = status == 401 ? "authentication_error"
                   : status >= 500 ? "server_error" : "invalid_request_error";
  va_list ap;

  va_start (ap, fmt);
  text = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  obj = error_object (text, type, param, code);
  reply_json (msg, status, obj);
}

/* ---------------------------------------------------------------------- */
/* chat completions                                                        */

static JsonObject *
usage_object (const BlnGenUsage *u, int reasoning_tokens)
{
  JsonObject *o = json_object_new (), *details = json_object_new ();
  JsonObject *cdetails = json_object_new ();

  json_object_set_int_member (o, "prompt_tokens", u->prompt_tokens);
  json_object_set_int_member (o, "completion_tokens", u->completion_tokens);
  json_object_set_int_member (o, "total_tokens", u->prompt_tokens + u->completion_tokens);
  json_object_set_int_member (details, "cached_tokens", u->cached_tokens);
  json_object_set_object_member (o, "prompt_tokens_details", details);
  json_object_set_int_member (cdetails, "reasoning_tokens", reasoning_tokens);
  json_object_set_object_member (o, "completion_tokens_details", cdetails);
  return o;
}

static const char *
finish_name (ChatReq *cr, BlnFinish f)
{
  if (cr->sc != NULL && bln_safety_call_filtered (cr->sc))
    return "content_filter";
  if (f == BLN_FINISH_LENGTH)
    return "length";
  return cr->out != NULL && bln_chat_output_n_tool_calls (cr->out) > 0 ? "tool_calls" : "stop";
}

/* The start of every chunk or reply object. */
static JsonObject *
reply_head (ChatReq *cr, const char *object)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "id", cr->id);
  json_object_set_string_member (o, "object", object);
  json_object_set_int_member (o, "created", cr->created);
  json_object_set_string_member (o, "model", cr->model);
  json_object_set_string_member (o, "system_fingerprint", "baleen-" BALEEN_VERSION);
  return o;
}

/* Moves the log-probabilities gathered since the last chunk into @choice. */
static void
take_logprobs (ChatReq *cr, JsonObject *choice)
{
  JsonObject *lp;

  if (cr->lp_pending == NULL || json_array_get_length (cr->lp_pending) == 0)
    {
      json_object_set_null_member (choice, "logprobs");
      return;
    }
  lp = json_object_new ();
  json_object_set_array_member (lp, "content", g_steal_pointer (&cr->lp_pending));
  json_object_set_object_member (choice, "logprobs", lp);
  cr->lp_pending = json_array_new ();
}

/* A chat.completion.chunk (or a text_completion chunk) with one choice
 * (@delta set, finish or null), or with none (@delta NULL: the usage chunk,
 * "choices": []). Takes @delta. For completions @delta holds {"text"}. */
static JsonObject *
chunk_object (ChatReq *cr, JsonObject *delta, const char *finish, const BlnGenUsage *usage)
{
  JsonObject *o = reply_head (cr, cr->completion ? "text_completion" : "chat.completion.chunk");
  JsonArray *choices = json_array_new ();

  if (delta != NULL)
    {
      JsonObject *c = json_object_new ();
      json_object_set_int_member (c, "index", cr->index);
      if (cr->completion)
        {
          json_object_set_string_member (c, "text",
                                         json_object_get_string_member_with_default (delta, "text",
                                                                                     ""));
          json_object_unref (delta);
          json_object_set_null_member (c, "logprobs");
        }
      else
        {
          json_object_set_object_member (c, "delta", delta);
          take_logprobs (cr, c);
        }
      if (finish != NULL)
        json_object_set_string_member (c, "finish_reason", finish);
      else
        json_object_set_null_member (c, "finish_reason");
      json_array_add_object_element (choices, c);
    }
  json_object_set_array_member (o, "choices", choices);
  if (usage != NULL)
    json_object_set_object_member (o, "usage", usage_object (usage, cr->reasoning_tokens));
  return o;
}

/* Appends "data: <json>\n\n" (or raw @text when @obj is NULL) to the stream. */
static void
sse_send (ChatReq *cr, JsonObject *obj, const char *text)
{
  SoupMessageBody *body;
  g_autofree char *json = NULL;
  char *line;

  if (cr->msg_finished)
    {
      if (obj != NULL)
        json_object_unref (obj);
      return;
    }
  body = soup_server_message_get_response_body (cr->msg);
  if (obj != NULL)
    {
      json = object_to_str (obj, NULL);
      json_object_unref (obj);
      line = g_strdup_printf ("data: %s\n\n", json);
    }
  else
    line = g_strdup (text);
  soup_message_body_append (body, SOUP_MEMORY_TAKE, line, strlen (line));
  soup_server_message_unpause (cr->msg);
  cr->last_send = g_get_monotonic_time ();
}

static void
chat_req_free (ChatReq *cr)
{
  if (cr->watch != NULL)
    {
      g_source_destroy (cr->watch);
      g_source_unref (cr->watch);
    }
  if (cr->keepalive != NULL)
    {
      g_source_destroy (cr->keepalive);
      g_source_unref (cr->keepalive);
    }
  if (cr->srv != NULL)
    g_hash_table_remove (cr->srv->active, cr);
  g_signal_handlers_disconnect_by_data (cr->msg, cr);
  g_object_unref (cr->msg);
  bln_gen_request_unref (cr->gen);
  g_clear_pointer (&cr->out, bln_chat_output_free);
  g_clear_pointer (&cr->group, cmpl_group_free);
  g_clear_pointer (&cr->lp_pending, json_array_unref);
  g_clear_pointer (&cr->lp_all, json_array_unref);
  g_free (cr->id);
  g_free (cr->model);
  g_string_free (cr->text, TRUE);
  bln_safety_call_free (cr->sc);
  g_free (cr);
}

static void
on_msg_finished (SoupServerMessage *msg, gpointer data)
{
  ChatReq *cr = data;

  cr->msg_finished = TRUE;
  /* when generation is still going, the client went away: stop it */
  bln_gen_request_cancel (cr->gen);
}

/* While a reply is paused libsoup does not read the connection, so a client
 * that hangs up (Stop button, a timed-out non-streamed request) would only be
 * noticed at the next write. Peek at the socket instead: end of file or an
 * error cancels the generation; pipelined data ends the watch. */
static gboolean
on_socket_event (GSocket *sock, GIOCondition cond, gpointer data)
{
  ChatReq *cr = data;
  char b;
  gssize n = recv (g_socket_get_fd (sock), &b, 1, MSG_PEEK | MSG_DONTWAIT);

  if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(cond & (G_IO_HUP | G_IO_ERR)))
    return G_SOURCE_CONTINUE;
  if (n <= 0)
    bln_gen_request_cancel (cr->gen);
  g_clear_pointer (&cr->watch, g_source_unref);
  return G_SOURCE_REMOVE;
}

static void
watch_client (ChatReq *cr)
{
  GSocket *sock = soup_server_message_get_socket (cr->msg);

  if (sock == NULL)
    return;
  cr->watch = g_socket_create_source (sock, G_IO_IN | G_IO_HUP | G_IO_ERR, NULL);
  g_source_set_callback (cr->watch, G_SOURCE_FUNC (on_socket_event), cr, NULL);
  g_source_attach (cr->watch, g_main_context_get_thread_default ());
}

/* A stream silent for the keep-alive interval (a long prompt being read)
 * gets an SSE comment, which clients ignore but which keeps proxies and
 * client timeouts from cutting it. */
static gboolean
on_keepalive (gpointer data)
{
  ChatReq *cr = data;

  if (g_get_monotonic_time () - cr->last_send >= (gint64) cr->srv->keepalive_ms * 900)
    sse_send (cr, NULL, ": keep-alive\n\n");
  return G_SOURCE_CONTINUE;
}

/* One OpenAI logprob entry: token text, logprob, bytes. */
static JsonObject *
logprob_entry (const BlnTokenizer *tok, int32_t id, float logprob)
{
  JsonObject *e = json_object_new ();
  JsonArray *bytes = json_array_new ();
  gsize len = 0, i;
  const char *b = bln_tokenizer_token_bytes (tok, id, &len);
  g_autofree char *valid = g_utf8_make_valid (b ? b : "", b ? (gssize) len : 0);

  json_object_set_string_member (e, "token", valid);
  json_object_set_double_member (e, "logprob", logprob);
  for (i = 0; i < len; i++)
    json_array_add_int_element (bytes, (guint8) b[i]);
  json_object_set_array_member (e, "bytes", bytes);
  return e;
}

static void
on_gen_tokens (const BlnGenToken *tokens, guint n, gpointer data)
{
  ChatReq *cr = data;
  guint i;
  int k;

  if (cr->srv == NULL)
    return;   /* orphaned by bln_server_free() */

  for (i = 0; i < n; i++)
    {
      JsonObject *e = logprob_entry (cr->tok, tokens[i].id, tokens[i].logprob);
      JsonArray *top = json_array_new ();

      for (k = 0; k < tokens[i].n_top; k++)
        if (tokens[i].top[k].id >= 0)
          json_array_add_object_element (top, logprob_entry (cr->tok, tokens[i].top[k].id,
                                                             tokens[i].top[k].logprob));
      json_object_set_array_member (e, "top_logprobs", top);
      json_array_add_object_element (cr->lp_all, json_object_ref (e));
      json_array_add_object_element (cr->lp_pending, e);
    }
}

static void
send_deltas (ChatReq *cr, GPtrArray *deltas)
{
  guint i;

  for (i = 0; i < deltas->len; i++)
    sse_send (cr, chunk_object (cr, json_object_ref (deltas->pdata[i]), NULL, NULL), NULL);
}

static void
on_gen_text (const char *text, gpointer data)
{
  ChatReq *cr = data;
  g_autoptr (GPtrArray) deltas = NULL;
  gint64 now = g_get_monotonic_time ();
  g_autoptr (GString) safe = NULL;

  if (cr->srv == NULL)
    return;   /* orphaned by bln_server_free() */

  if (cr->sc != NULL && text != NULL)
    {
      /* the output rules see the text before the client does */
      safe = g_string_new (NULL);
      if (!bln_safety_call_filter (cr->sc, text, safe))
        bln_gen_request_cancel (cr->gen);
      if (safe->len == 0)
        return;
      text = safe->str;
    }

  if (cr->t_last == 0)
    bln_metrics_observe_ttft (cr->srv->metrics, (now - cr->t_start) / 1e6);
  else
    bln_metrics_observe_itl (cr->srv->metrics, (now - cr->t_last) / 1e6);
  cr->t_last = now;
  if (cr->completion)
    {
      JsonObject *d;

      if (!cr->stream)
        {
          g_string_append (cr->text, text);
          return;
        }
      d = json_object_new ();
      json_object_set_string_member (d, "text", text);
      sse_send (cr, chunk_object (cr, d, NULL, NULL), NULL);
      return;
    }
  deltas = g_ptr_array_new_with_free_func ((GDestroyNotify) json_object_unref);
  bln_chat_output_push (cr->out, text, deltas);
  if (cr->stream)
    send_deltas (cr, deltas);
}

/* The legacy completions logprobs object, from the chat-style entries. */
static JsonObject *
legacy_logprobs (JsonArray *entries)
{
  JsonObject *o = json_object_new ();
  JsonArray *tokens = json_array_new (), *lps = json_array_new (), *tops = json_array_new ();
  JsonArray *offsets = json_array_new ();
  guint i, k;
  gint64 off = 0;

  for (i = 0; i < json_array_get_length (entries); i++)
    {
      JsonObject *e = json_array_get_object_element (entries, i);
      JsonArray *t = json_object_get_array_member (e, "top_logprobs");
      JsonObject *m = json_object_new ();
      const char *s = json_object_get_string_member (e, "token");

      json_array_add_string_element (tokens, s);
      json_array_add_double_element (lps, json_object_get_double_member (e, "logprob"));
      for (k = 0; k < json_array_get_length (t); k++)
        {
          JsonObject *te = json_array_get_object_element (t, k);
          json_object_set_double_member (m, json_object_get_string_member (te, "token"),
                                         json_object_get_double_member (te, "logprob"));
        }
      json_array_add_object_element (tops, m);
      json_array_add_int_element (offsets, off);
      off += (gint64) strlen (s);
    }
  json_object_set_array_member (o, "tokens", tokens);
  json_object_set_array_member (o, "token_logprobs", lps);
  json_object_set_array_member (o, "top_logprobs", tops);
  json_object_set_array_member (o, "text_offset", offsets);
  return o;
}

static void on_gen_done (BlnFinish finish, const BlnGenUsage *usage, const GError *error,
                         gpointer data);

/* An answer held for the moderation endpoint (safety.h), waiting for it. */
typedef struct {
  ChatReq *cr;
  BlnFinish finish;
  BlnGenUsage usage;
} ModerationWait;

static void
on_moderated (GObject *source, GAsyncResult *result, gpointer data)
{
  ModerationWait *w = data;
  ChatReq *cr = w->cr;
  BlnSafetyCall *sc = cr->sc;
  g_autoptr (GString) held = g_string_new (NULL);

  bln_safety_call_moderate_finish (sc, result);
  bln_safety_call_release (sc, held);   /* nothing when withheld */
  cr->sc = NULL;                        /* already filtered: send as is */
  if (held->len > 0)
    on_gen_text (held->str, cr);
  cr->sc = sc;
  on_gen_done (w->finish, &w->usage, NULL, cr);
  g_free (w);
}

static void
on_gen_done (BlnFinish finish, const BlnGenUsage *usage, const GError *error, gpointer data)
{
  ChatReq *cr = data;
  static const char *const names[] = { "stop", "length", "cancelled", "error" };
  g_autoptr (GPtrArray) deltas = g_ptr_array_new_with_free_func ((GDestroyNotify) json_object_unref);

  if (cr->srv == NULL)
    {
      /* orphaned by bln_server_free(): the server and its client are gone */
      if (cr->group != NULL && ++cr->group->n_done < cr->group->n)
        cr->group = NULL;   /* the last choice of the group frees it */
      chat_req_free (cr);
      return;
    }

  if (cr->sc != NULL)
    {
      /* the held-back end of the answer, then the audit record */
      if (!bln_safety_call_filtered (cr->sc) && finish != BLN_FINISH_CANCELLED)
        {
          g_autoptr (GString) rest = g_string_new (NULL);
          BlnSafetyCall *sc = cr->sc;

          bln_safety_call_flush (sc, rest);
          cr->sc = NULL;          /* already filtered: send as is */
          if (rest->len > 0)
            on_gen_text (rest->str, cr);
          cr->sc = sc;
        }
      if (bln_safety_call_filtered (cr->sc) && finish == BLN_FINISH_CANCELLED)
        finish = BLN_FINISH_STOP; /* stopped by the output filter, not by the client */
      if (bln_safety_call_needs_moderation (cr->sc) && !cr->msg_finished
          && (finish == BLN_FINISH_STOP || finish == BLN_FINISH_LENGTH))
        {
          /* the whole answer was held back; the endpoint decides (safety.h) */
          ModerationWait *w = g_new0 (ModerationWait, 1);

          w->cr = cr;
          w->finish = finish;
          w->usage = *usage;
          bln_safety_call_moderate_async (cr->sc, NULL, NULL, on_moderated, w);
          return;
        }
      bln_safety_call_end (cr->sc, cr->id,
                           finish == BLN_FINISH_CANCELLED || finish == BLN_FINISH_ERROR
                             ? names[finish] : finish_name (cr, finish),
                           usage->prompt_tokens, usage->completion_tokens, usage->cached_tokens);
    }

  /* a one-line log of every completion, on stderr */
  g_printerr ("baleen-server: %s %s: %s, prompt %d (cached %d), completion %d\n", cr->id,
              cr->stream ? "stream" : "plain", names[finish], usage->prompt_tokens,
              usage->cached_tokens, usage->completion_tokens);
  bln_metrics_observe_generation (cr->srv->metrics, usage->prompt_tokens, usage->cached_tokens,
                                  usage->completion_tokens, names[finish],
                                  (g_get_monotonic_time () - cr->t_start) / 1e6);
  if (cr->group != NULL)
    {
      CmplGroup *g = cr->group;

      g->usage.prompt_tokens += usage->prompt_tokens;
      g->usage.completion_tokens += usage->completion_tokens;
      g->usage.cached_tokens += usage->cached_tokens;
      g->texts[cr->index] = g_strdup (cr->text->str);
      g->finishes[cr->index] = finish_name (cr, finish);
      g->logprobs[cr->index] = cr->lp_all ? json_array_ref (cr->lp_all) : NULL;
      if (finish == BLN_FINISH_ERROR && g->error == NULL)
        g->error = g_strdup (error ? error->message : "engine failure");
      if (++g->n_done < g->n)
        {
          /* not the last: its choice ends here, the reply goes on */
          if (cr->stream && finish != BLN_FINISH_CANCELLED && finish != BLN_FINISH_ERROR)
            sse_send (cr, chunk_object (cr, json_object_new (), finish_name (cr, finish), NULL),
                      NULL);
          cr->group = NULL;
          chat_req_free (cr);
          return;
        }
      usage = &g->usage;
      if (g->error != NULL && finish != BLN_FINISH_CANCELLED)
        finish = BLN_FINISH_ERROR;
    }
  if (cr->msg_finished || finish == BLN_FINISH_CANCELLED)
    {
      if (!cr->msg_finished)
        {
          /* cancelled by shutdown: end the reply */
          if (cr->stream)
            {
              g_autoptr (JsonObject) err = error_object ("the server is shutting down",
                                                         "server_error", NULL,
                                                         "server_shutting_down");
              g_autofree char *json = object_to_str (err, NULL);
              g_autofree char *line = g_strdup_printf ("data: %s\n\ndata: [DONE]\n\n", json);

              sse_send (cr, NULL, line);
              soup_message_body_complete (soup_server_message_get_response_body (cr->msg));
              soup_server_message_unpause (cr->msg);
            }
          else
            {
              reply_error (cr->msg, 503, NULL, "server_shutting_down",
                           "the server is shutting down");
              soup_server_message_unpause (cr->msg);
            }
        }
      chat_req_free (cr);
      return;
    }

  if (cr->out != NULL)
    {
      const char *r;

      bln_chat_output_finish (cr->out, deltas);
      r = bln_chat_output_reasoning (cr->out);
      if (*r)
        {
          g_autoptr (GArray) rids = bln_tokenizer_encode (cr->tok, r, -1, FALSE, FALSE, NULL);
          cr->reasoning_tokens = rids ? MIN ((int) rids->len, usage->completion_tokens) : 0;
        }
    }
  if (cr->stream)
    {
      if (finish == BLN_FINISH_ERROR)
        {
          g_autoptr (JsonObject) err = error_object (
              cr->group && cr->group->error ? cr->group->error
              : error ? error->message : "engine failure", "server_error", NULL, NULL);
          g_autofree char *json = object_to_str (err, NULL);
          g_autofree char *line = g_strdup_printf ("data: %s\n\n", json);

          send_deltas (cr, deltas);
          sse_send (cr, NULL, line);
        }
      else
        {
          send_deltas (cr, deltas);
          sse_send (cr, chunk_object (cr, json_object_new (), finish_name (cr, finish), NULL),
                    NULL);
          if (cr->include_usage)
            sse_send (cr, chunk_object (cr, NULL, NULL, usage), NULL);
        }
      sse_send (cr, NULL, "data: [DONE]\n\n");
      soup_message_body_complete (soup_server_message_get_response_body (cr->msg));
      soup_server_message_unpause (cr->msg);
    }
  else if (finish == BLN_FINISH_ERROR)
    {
      reply_error (cr->msg, 500, NULL, NULL, "%s",
                   cr->group && cr->group->error ? cr->group->error
                   : error ? error->message : "engine failure");
      soup_server_message_unpause (cr->msg);
    }
  else
    {
      g_autoptr (JsonObject) o = reply_head (cr, cr->completion ? "text_completion"
                                                                : "chat.completion");
      JsonArray *choices = json_array_new ();
      JsonObject *c = json_object_new ();

      json_object_set_int_member (c, "index", cr->index);
      if (cr->completion && cr->group != NULL)
        {
          CmplGroup *g = cr->group;
          int i;

          /* every prompt's choice, in order */
          json_object_unref (c);
          c = NULL;
          for (i = 0; i < g->n; i++)
            {
              JsonObject *ci = json_object_new ();

              json_object_set_int_member (ci, "index", i);
              json_object_set_string_member (ci, "text", g->texts[i] ? g->texts[i] : "");
              if (g->logprobs[i] != NULL)
                json_object_set_object_member (ci, "logprobs", legacy_logprobs (g->logprobs[i]));
              else
                json_object_set_null_member (ci, "logprobs");
              json_object_set_string_member (ci, "finish_reason",
                                             g->finishes[i] ? g->finishes[i] : "stop");
              json_array_add_object_element (choices, ci);
            }
        }
      else if (cr->completion)
        {
          json_object_set_string_member (c, "text", cr->text->str);
          if (cr->lp_all != NULL)
            json_object_set_object_member (c, "logprobs", legacy_logprobs (cr->lp_all));
          else
            json_object_set_null_member (c, "logprobs");
        }
      else
        {
          json_object_set_object_member (c, "message", bln_chat_output_message (cr->out));
          if (cr->lp_all != NULL)
            {
              JsonObject *lp = json_object_new ();
              json_object_set_array_member (lp, "content", json_array_ref (cr->lp_all));
              json_object_set_object_member (c, "logprobs", lp);
            }
          else
            json_object_set_null_member (c, "logprobs");
        }
      if (c != NULL)
        {
          json_object_set_string_member (c, "finish_reason", finish_name (cr, finish));
          json_array_add_object_element (choices, c);
        }
      json_object_set_array_member (o, "choices", choices);
      json_object_set_object_member (o, "usage", usage_object (usage, cr->reasoning_tokens));
      reply_json (cr->msg, 200, o);
      soup_server_message_unpause (cr->msg);
    }
  chat_req_free (cr);
}

/* Answers a request the engine would not take: 429 with Retry-After when
 * its queue is full, 503 when it is stopping, 400 otherwise. */
static void
reply_submit_error (SoupServerMessage *msg, const GError *error)
{
  g_autoptr (JsonObject) obj = NULL;
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);

  if (g_error_matches (error, BLN_SCHED_ERROR, BLN_SCHED_ERROR_QUEUE_FULL))
    {
      obj = error_object ("the server is overloaded: too many requests are waiting; retry "
                          "after the time in the Retry-After header", "rate_limit_exceeded",
                          NULL, "server_overloaded");
      soup_message_headers_replace (h, "Retry-After", "1");
      reply_json (msg, 429, obj);
    }
  else if (g_error_matches (error, BLN_SCHED_ERROR, BLN_SCHED_ERROR_STOPPED))
    {
      obj = error_object (error->message, "server_error", NULL, "server_stopping");
      soup_message_headers_replace (h, "Retry-After", "5");
      reply_json (msg, 503, obj);
    }
  else
    reply_error (msg, 400, NULL, "context_length_exceeded", "%s", error->message);
}

/* Starts generating @ids for @msg: the part chat and completions share.
 * Takes @out. */
static void
start_generation (BlnServer *srv, SoupServerMessage *msg, BlnChatParams *p, GArray *ids,
                  int room, BlnChatOutput *out, gboolean completion, const char *echo,
                  CmplGroup *group, int index)
{
  ChatReq *cr = g_new0 (ChatReq, 1);
  BlnModel *model = bln_engine_worker_model (srv->worker);
  g_autoptr (GError) error = NULL;
  BlnGenUsage no_usage = { (int) ids->len, 0, 0 };

  /* one filter and one audit row per answer (several prompts: several) */
  cr->sc = srv->admitted != NULL ? bln_safety_call_clone (srv->admitted) : NULL;
  cr->srv = srv;
  cr->msg = g_object_ref (msg);
  cr->stream = p->stream;
  cr->include_usage = p->include_usage;
  cr->completion = completion;
  cr->group = group;
  cr->index = index;
  cr->out = out;
  cr->tok = bln_model_tokenizer (model);
  cr->id = group != NULL ? g_strdup (group->id)
                        : g_strdup_printf ("%s-%08x%08x", completion ? "cmpl" : "chatcmpl",
                                           g_random_int (), g_random_int ());
  cr->model = g_strdup (srv->model_id);
  cr->created = g_get_real_time () / G_USEC_PER_SEC;
  cr->t_start = g_get_monotonic_time ();
  cr->text = g_string_new (echo);
  cr->gen = bln_gen_request_new (ids, &p->sp, p->max_tokens > 0 ? p->max_tokens : room,
                                 (const char *const *) p->stops->pdata,
                                 g_main_context_get_thread_default (), on_gen_text, on_gen_done,
                                 cr);
  if (p->logprobs)
    {
      cr->lp_pending = json_array_new ();
      cr->lp_all = json_array_new ();
      bln_gen_request_set_logprobs (cr->gen, p->top_logprobs, on_gen_tokens);
    }
  if (p->json_schema != NULL)
    bln_gen_request_set_json_schema (cr->gen, p->json_schema);
  else if (p->json_object)
    bln_gen_request_set_json (cr->gen, TRUE);
  /* a single answer is admitted before the reply starts, so an overloaded
   * engine can still say 429 (several prompts: see the end) */
  if (group == NULL && !bln_engine_worker_submit (srv->worker, cr->gen, &error))
    {
      reply_submit_error (msg, error);
      chat_req_free (cr);
      return;
    }
  g_hash_table_add (srv->active, cr);
  g_signal_connect (msg, "finished", G_CALLBACK (on_msg_finished), cr);
  soup_server_message_pause (msg);
  if (cr->stream)
    {
      JsonObject *delta = json_object_new ();
      SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);

      add_cors (msg);
      soup_server_message_set_status (msg, 200, NULL);
      soup_message_headers_set_content_type (h, "text/event-stream", NULL);
      soup_message_headers_replace (h, "Cache-Control", "no-cache");
      soup_message_headers_replace (h, "X-Accel-Buffering", "no");
      soup_message_headers_set_encoding (h, SOUP_ENCODING_CHUNKED);
      /* headers and the first chunk go out at once, before the prompt is read */
      if (completion)
        json_object_set_string_member (delta, "text", echo ? echo : "");
      else
        {
          json_object_set_string_member (delta, "role", "assistant");
          json_object_set_string_member (delta, "content", "");
        }
      sse_send (cr, chunk_object (cr, delta, NULL, NULL), NULL);
      cr->keepalive = g_timeout_source_new (MAX (srv->keepalive_ms / 4, 10));
      g_source_set_callback (cr->keepalive, on_keepalive, cr, NULL);
      g_source_attach (cr->keepalive, g_main_context_get_thread_default ());
    }
  watch_client (cr);
  if (group != NULL && !bln_engine_worker_submit (srv->worker, cr->gen, &error))
    on_gen_done (BLN_FINISH_ERROR, &no_usage, error, cr);   /* ends this choice with the error */
}

/* Checks the prompt against the context; FALSE after answering 400. */
static gboolean
check_room (SoupServerMessage *msg, BlnChatParams *p, GArray *ids, int n_ctx, int *room)
{
  *room = n_ctx - (int) ids->len;
  if (*room < 1 || (p->max_tokens > 0 && p->max_tokens > *room))
    {
      reply_error (msg, 400, "messages", "context_length_exceeded",
                   "this model's context is %d tokens; the prompt takes %u and %d more were "
                   "asked for", n_ctx, ids->len, p->max_tokens > 0 ? p->max_tokens : 1);
      return FALSE;
    }
  return TRUE;
}

/* The arguments schema of the function @name among @tools, compiled, when
 * it is inside the supported subset; NULL otherwise (the arguments are then
 * only held to be a JSON object: tool schemas come from MCP servers and the
 * like, which a client cannot change, so they are not refused). */
static BlnJsonSchema *
forced_schema (JsonNode *tools, const char *name)
{
  JsonArray *a = tools != NULL && JSON_NODE_HOLDS_ARRAY (tools) ? json_node_get_array (tools)
                                                                : NULL;
  guint i;

  for (i = 0; a != NULL && i < json_array_get_length (a); i++)
    {
      JsonNode *t = json_array_get_element (a, i), *f, *params;
      JsonObject *fo;

      if (!JSON_NODE_HOLDS_OBJECT (t)
          || (f = json_object_get_member (json_node_get_object (t), "function")) == NULL
          || !JSON_NODE_HOLDS_OBJECT (f))
        continue;
      fo = json_node_get_object (f);
      if (g_strcmp0 (json_object_get_string_member_with_default (fo, "name", NULL), name) != 0)
        continue;
      params = json_object_get_member (fo, "parameters");
      if (params == NULL || !JSON_NODE_HOLDS_OBJECT (params))
        return NULL;
      {
        g_autoptr (BlnJsonSchema) s = bln_json_schema_compile (params, NULL);

        /* the arguments must stay an object */
        if (s != NULL && bln_json_schema_objects_only (s))
          return g_steal_pointer (&s);
      }
      return NULL;
    }
  return NULL;
}

static void
handle_chat (BlnServer *srv, SoupServerMessage *msg, JsonObject *body)
{
  BlnModel *model = bln_engine_worker_model (srv->worker);
  BlnTokenizer *tok = bln_model_tokenizer (model);
  const char *tmpl = bln_model_chat_template (model);
  BlnChatParams p = { 0 };
  const char *param = NULL, *forced = NULL;
  GError *error = NULL;
  g_autofree char *prompt = NULL;
  g_autoptr (GArray) ids = NULL;
  g_autoptr (JsonObject) extra = NULL;
  JsonNode *tools;
  BlnToolFormat fmt;
  gboolean inside, reasoning;
  int room;

  if (!bln_chat_params_parse (body, &p, &param, &error))
    {
      gboolean schema = param != NULL && g_str_has_prefix (param, "response_format");

      reply_error (msg, 400, param, error->code != BLN_ERROR_UNSUPPORTED ? "invalid_value"
                                    : schema ? "unsupported_schema" : "unsupported_content",
                   "%s", error->message);
      goto out;
    }
  if (srv->safety != NULL)
    {
      srv->admitted = bln_safety_call_begin (srv->safety, msg, "/v1/chat/completions",
                                             srv->model_id, p.messages, p.max_tokens);
      if (srv->admitted == NULL)
        goto out;         /* refused: the reply and the audit record are written */
    }
  if (tmpl == NULL && p.chat_template == NULL)
    {
      reply_error (msg, 400, "model", "no_chat_template",
                   "the model has no chat template; chat completions are not available");
      goto out;
    }
  if (p.chat_template != NULL)
    tmpl = p.chat_template;
  tools = p.tool_choice != BLN_TOOL_CHOICE_NONE ? p.tools : NULL;
  fmt = bln_tool_format_detect (tmpl);
  bln_tool_history_adapt (p.messages, fmt);
  if (p.thinking >= 0 || p.template_kwargs != NULL)
    {
      GList *names, *l;

      extra = json_object_new ();
      if (p.thinking >= 0)
        {
          /* the names templates use: DeepSeek-V3.1 `thinking`, Qwen3 `enable_thinking` */
          json_object_set_boolean_member (extra, "thinking", p.thinking);
          json_object_set_boolean_member (extra, "enable_thinking", p.thinking);
        }
      names = p.template_kwargs ? json_object_get_members (p.template_kwargs) : NULL;
      for (l = names; l != NULL; l = l->next)
        json_object_set_member (extra, l->data,
                                json_node_copy (json_object_get_member (p.template_kwargs,
                                                                        l->data)));
      g_list_free (names);
    }
  prompt = bln_chat_render (tmpl, p.messages, tools, TRUE, bln_tokenizer_bos_text (tok),
                            bln_tokenizer_eos_text (tok), extra, &error);
  if (prompt == NULL)
    {
      reply_error (msg, 400, "messages", "template_error", "the chat template failed: %s",
                   error->message);
      goto out;
    }
  if (p.tool_choice == BLN_TOOL_CHOICE_NAMED)
    forced = p.tool_choice_name;
  else if (p.tool_choice == BLN_TOOL_CHOICE_REQUIRED
           && json_array_get_length (json_node_get_array (p.tools)) == 1)
    forced = json_object_get_string_member (
        json_object_get_object_member (json_array_get_object_element (
                                           json_node_get_array (p.tools), 0), "function"), "name");
  if (forced != NULL)
    {
      p.json_object = TRUE;   /* the text is the call's arguments */
      g_clear_pointer (&p.json_schema, bln_json_schema_unref);
      p.json_schema = forced_schema (p.tools, forced);
    }
  /* R1's templates open the thinking block in the prompt; "disabled" closes
   * it empty, as DeepSeek's hybrid templates do, and so does a reply that
   * must be JSON (the constraint holds from the first token) */
  inside = bln_reasoning_prompt_opens_block (prompt);
  if (inside && (p.thinking == 0 || p.json_object))
    {
      char *closed = g_strconcat (prompt, "\n</think>\n\n", NULL);
      g_free (prompt);
      prompt = closed;
      inside = FALSE;
    }
  reasoning = inside || strstr (tmpl, "</think>") != NULL;
  /* the template writes the special tokens itself: parse them in its output */
  ids = bln_tokenizer_encode (tok, prompt, -1, FALSE, TRUE, &error);
  if (ids == NULL || ids->len == 0)
    {
      reply_error (msg, 400, "messages", "invalid_value", "%s",
                   error ? error->message : "the prompt is empty");
      goto out;
    }
  if (!check_room (msg, &p, ids, bln_engine_worker_n_ctx (srv->worker), &room))
    goto out;
  start_generation (srv, msg, &p, ids, room,
                    bln_chat_output_new (reasoning, inside, tools ? fmt : BLN_TOOL_FORMAT_NONE,
                                         forced),
                    FALSE, NULL, NULL, 0);

out:
  if (srv->admitted != NULL)
    {
      /* a row unless an answer took over (refused after admission: template,
       * context length) */
      bln_safety_call_end (srv->admitted, "", "refused", 0, 0, 0);
      g_clear_pointer (&srv->admitted, bln_safety_call_free);
    }
  g_clear_error (&error);
  bln_chat_params_clear (&p);
}

/* POST /v1/completions: a raw prompt, no template. */
static void
handle_completions (BlnServer *srv, SoupServerMessage *msg, JsonObject *body)
{
  BlnModel *model = bln_engine_worker_model (srv->worker);
  BlnTokenizer *tok = bln_model_tokenizer (model);
  BlnChatParams p = { 0 };
  const char *param = NULL;
  GError *error = NULL;
  g_autoptr (GPtrArray) all_ids = NULL;
  g_autoptr (GPtrArray) echoes = NULL;
  CmplGroup *group = NULL;
  int rooms[16];
  guint k, n_prompts;

  if (!bln_completion_params_parse (body, &p, &param, &error))
    {
      reply_error (msg, 400, param, "invalid_value", "%s", error->message);
      goto out;
    }
  if (srv->safety != NULL)
    {
      srv->admitted = bln_safety_call_begin_prompt (srv->safety, msg, "/v1/completions",
                                                    srv->model_id, p.prompt, p.max_tokens);
      if (srv->admitted == NULL)
        goto out;         /* refused: the reply and the audit record are written */
    }
  /* every prompt is checked before any generation starts */
  n_prompts = MIN (json_array_get_length (json_node_get_array (p.prompt)), G_N_ELEMENTS (rooms));
  all_ids = g_ptr_array_new_with_free_func ((GDestroyNotify) g_array_unref);
  echoes = g_ptr_array_new_with_free_func (g_free);
  for (k = 0; k < n_prompts; k++)
    {
      JsonNode *pn = json_array_get_element (json_node_get_array (p.prompt), k);
      GArray *ids;

      if (JSON_NODE_HOLDS_ARRAY (pn))
        {
          JsonArray *a = json_node_get_array (pn);
          guint i;

          ids = g_array_new (FALSE, FALSE, sizeof (int32_t));
          g_ptr_array_add (all_ids, ids);
          for (i = 0; i < json_array_get_length (a); i++)
            {
              gint64 id = json_array_get_int_element (a, i);
              int32_t id32 = (int32_t) id;

              if (id < 0 || id >= bln_tokenizer_n_vocab (tok))
                {
                  reply_error (msg, 400, "prompt", "invalid_value",
                               "prompt token %" G_GINT64_FORMAT " is not a token id of this model",
                               id);
                  goto out;
                }
              g_array_append_val (ids, id32);
            }
          g_ptr_array_add (echoes, p.echo ? bln_tokenizer_decode (tok, (const int32_t *) ids->data,
                                                                  ids->len, NULL) : NULL);
        }
      else
        {
          const char *text = json_node_get_string (pn);
          const char *bos = bln_tokenizer_bos_text (tok);

          /* BOS is added as the tokenizer says, unless the prompt already starts
           * with it (a rendered chat template, say): never twice */
          ids = bln_tokenizer_encode (tok, text, -1,
                                      bos == NULL || !*bos || !g_str_has_prefix (text, bos), TRUE,
                                      &error);
          if (ids == NULL || ids->len == 0)
            {
              if (ids != NULL)
                g_array_unref (ids);
              reply_error (msg, 400, "prompt", "invalid_value", "%s",
                           error ? error->message : "the prompt is empty");
              goto out;
            }
          g_ptr_array_add (all_ids, ids);
          g_ptr_array_add (echoes, p.echo ? g_strdup (text) : NULL);
        }
      if (!check_room (msg, &p, ids, bln_engine_worker_n_ctx (srv->worker), &rooms[k]))
        goto out;
    }
  if (n_prompts > 1)
    {
      group = g_new0 (CmplGroup, 1);
      group->n = (int) n_prompts;
      group->texts = g_new0 (char *, n_prompts);
      group->finishes = g_new0 (const char *, n_prompts);
      group->logprobs = g_new0 (JsonArray *, n_prompts);
      group->id = g_strdup_printf ("cmpl-%08x%08x", g_random_int (), g_random_int ());
    }
  for (k = 0; k < n_prompts; k++)
    start_generation (srv, msg, &p, all_ids->pdata[k], rooms[k], NULL, TRUE, echoes->pdata[k],
                      group, (int) k);

out:
  if (srv->admitted != NULL)
    {
      bln_safety_call_end (srv->admitted, "", "refused", 0, 0, 0);
      g_clear_pointer (&srv->admitted, bln_safety_call_free);
    }
  g_clear_error (&error);
  bln_chat_params_clear (&p);
}

/* ---------------------------------------------------------------------- */
/* routing                                                                 */

static void
handle_models (BlnServer *srv, SoupServerMessage *msg)
{
  g_autoptr (JsonObject) root = json_object_new ();
  JsonArray *data = json_array_new ();

  /* every installed model, loaded or not (Cherry Studio lists them before the first chat) */
  for (guint i = 0; i < bln_model_library_n_models (srv->lib); i++)
    {
      const BlnModelEntry *e = bln_model_library_get (srv->lib, i);
      JsonObject *m = json_object_new ();

      json_object_set_string_member (m, "id", e->id);
      json_object_set_string_member (m, "object", "model");
      json_object_set_int_member (m, "created", e->modified > 0 ? e->modified : srv->created);
      json_object_set_string_member (m, "owned_by", "baleen");
      json_array_add_object_element (data, m);
    }
  json_object_set_string_member (root, "object", "list");
  json_object_set_array_member (root, "data", data);
  reply_json (msg, 200, root);
}

/* ---------------------------------------------------------------------- */
/* model routing: a request waits for its model, then runs its handler     */

typedef void (*ModelHandler) (BlnServer *srv, SoupServerMessage *msg, JsonObject *body);

typedef struct {
  BlnServer *srv;
  SoupServerMessage *msg;      /* a reference */
  JsonNode *root;              /* the parsed body */
  ModelHandler handler;
  BlnModelLease *lease;
  gboolean called;             /* model_ready() ran */
  gboolean paused;
} ModelWait;

/* The lease lasts as long as the HTTP exchange: the model is not unloaded
 * while a reply is being written. */
static void
model_wait_finished (SoupServerMessage *msg, gpointer data)
{
  ModelWait *w = data;

  g_signal_handlers_disconnect_by_data (msg, w);
  g_hash_table_remove (w->srv->waits, w);
  bln_model_lease_release (w->lease);
  json_node_unref (w->root);
  g_object_unref (w->msg);
  g_free (w);
}

static void
model_ready (BlnModelLease *lease, BlnEngineWorker *worker, const BlnModelEntry *entry,
             const GError *error, gpointer data)
{
  ModelWait *w = data;
  BlnServer *srv = w->srv;

  w->lease = lease;
  w->called = TRUE;
  if (w->paused)
    {
      soup_server_message_unpause (w->msg);
      w->paused = FALSE;
    }
  if (error != NULL)
    {
      reply_error (w->msg, 500, "model", "model_load_failed", "cannot load the model %s: %s",
                   entry->id, error->message);
      return;
    }
  if (srv->shut_down)
    {
      reply_error (w->msg, 503, NULL, "server_shutting_down", "the server is shutting down");
      return;
    }
  srv->worker = worker;
  if (srv->model_id == NULL || !g_str_equal (srv->model_id, entry->id))
    {
      g_free (srv->model_id);
      srv->model_id = g_strdup (entry->id);
    }
  w->handler (srv, w->msg, json_node_get_object (w->root));
}

/* The entry the body's "model" names, or NULL after answering a bad or
 * unknown name in OpenAI's shape. */
static const BlnModelEntry *
resolve_model (BlnServer *srv, SoupServerMessage *msg, JsonObject *body)
{
  JsonNode *n = json_object_get_member (body, "model");
  const char *name = NULL;
  const BlnModelEntry *e;
  g_autoptr (GError) error = NULL;

  if (n != NULL && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING)
    name = json_node_get_string (n);
  else if (n != NULL && !JSON_NODE_HOLDS_NULL (n))
    {
      reply_error (msg, 400, "model", "invalid_type", "'model' must be a string");
      return NULL;
    }
  e = bln_model_host_resolve (srv->host, name, srv->strict_models, &error);
  if (e == NULL && g_error_matches (error, BLN_ERROR, BLN_ERROR_INVALID))
    reply_error (msg, 400, "model", "invalid_value", "%s", error->message);
  else if (e == NULL)
    reply_error (msg, 404, "model", "model_not_found", "%s; GET /v1/models lists the models",
                 error->message);
  return e;
}

/* Runs @handler once the model @root names is loaded: at once when it is,
 * otherwise after the load (other requests are served meanwhile). */
static void
with_model (BlnServer *srv, SoupServerMessage *msg, JsonNode *root, ModelHandler handler)
{
  const BlnModelEntry *e = resolve_model (srv, msg, json_node_get_object (root));
  ModelWait *w;
  BlnModelLease *lease;

  if (e == NULL)
    return;
  w = g_new0 (ModelWait, 1);
  w->srv = srv;
  w->msg = g_object_ref (msg);
  w->root = json_node_ref (root);
  w->handler = handler;
  g_hash_table_add (srv->waits, w);
  g_signal_connect (msg, "finished", G_CALLBACK (model_wait_finished), w);
  lease = bln_model_host_acquire (srv->host, e, model_ready, w);
  w->lease = lease;
  if (!w->called)
    {
      /* not granted yet: hold the reply until the model is there */
      soup_server_message_pause (msg);
      w->paused = TRUE;
    }
}

static void
handle_metrics (BlnServer *srv, SoupServerMessage *msg)
{
  BlnMetricsGauges g = { 0 };
  const BlnModelEntry *loaded = bln_model_host_loaded (srv->host);
  BlnEngineWorker *worker = bln_model_host_worker (srv->host);
  char *text;

  g.requests_running = g_hash_table_size (srv->active);
  g.queue_depth = bln_model_host_n_waiting (srv->host)
                  + (worker ? bln_engine_worker_queue_length (worker) : 0);
  g.kv_blocks_used = g.kv_blocks_total = g.kv_blocks_cached = -1;
  g.kv_prefix_hit_ratio = g.engine_running = -1;
  /* counters stay in the exposition when no model is loaded (0: a reset,
   * which rate() handles), so that a dashboard's series do not vanish */
  g.gpu_compact_draws = g.gpu_compact_fallbacks = 0;
  if (worker != NULL)
    {
      BlnEngineWorkerStats st;

      bln_engine_worker_get_stats (worker, &st);
      g.engine_running = st.running;
      g.gpu_compact_draws = (double) st.compact_draws;
      g.gpu_compact_fallbacks = (double) st.compact_fallbacks;
      if (st.batching)   /* the single-context path has no block pool */
        {
          g.kv_blocks_used = st.kv_blocks_used;
          g.kv_blocks_total = st.kv_blocks_total;
          g.kv_blocks_cached = st.kv_blocks_cached;
          g.kv_prefix_hit_ratio = st.prefix_hit_rate;
        }
    }
  g.loaded_model = loaded ? loaded->id : NULL;
  g.models_installed = bln_model_library_n_models (srv->lib);
  text = bln_metrics_render (srv->metrics, &g);
  add_cors (msg);
  soup_server_message_set_status (msg, 200, NULL);
  soup_server_message_set_response (msg, BLN_METRICS_CONTENT_TYPE, SOUP_MEMORY_TAKE, text,
                                    strlen (text));
}

typedef struct {
  BlnServer *srv;
  char *route;
  char *method;
} ReqLabel;

static void
req_label_free (gpointer data, GClosure *closure)
{
  ReqLabel *l = data;

  g_free (l->route);
  g_free (l->method);
  g_free (l);
}

static void
count_request (SoupServerMessage *msg, gpointer data)
{
  ReqLabel *l = data;

  bln_metrics_count_request (l->srv->metrics, l->route, l->method,
                             soup_server_message_get_status (msg));
}

/* The route label for the metrics: known routes as themselves (with /v1),
 * everything else one label, so a scan of random paths cannot grow the set. */
static const char *
route_label (const char *path)
{
  static const char *const known[] = {
    "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank",
    "/v1/ws",
    "/health", "/metrics", "/api/tags", "/api/chat", "/api/generate", "/api/embed",
    "/api/embeddings", "/api/version", "/api/show", "/api/ps",
  };
  const char *r = g_str_has_prefix (path, "/v1/") ? path + 3 : path;

  for (guint i = 0; i < G_N_ELEMENTS (known); i++)
    {
      const char *k = g_str_has_prefix (known[i], "/v1/") ? known[i] + 3 : known[i];
      if (g_str_equal (r, k))
        return known[i];
    }
  return "other";
}

/* Oversize bodies: answered 413 from the headers and never stored. With
 * "Expect: 100-continue" (curl sends it for large bodies) libsoup then skips
 * the body altogether; otherwise it reads it but keeps none of it. */
static void
refuse_body (BlnServer *srv, SoupServerMessage *msg, goffset len)
{
  soup_message_body_set_accumulate (soup_server_message_get_request_body (msg), FALSE);
  if (soup_server_message_get_status (msg) != 0)
    return;
  reply_error (msg, 413, NULL, "request_too_large",
               "the request body is %s%" G_GOFFSET_FORMAT " bytes; the limit is %"
               G_GSIZE_FORMAT, len < 0 ? "over " : "", len < 0 ? (goffset) srv->max_body : len,
               srv->max_body);
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Connection",
                                "close");
}

static void
on_got_headers (SoupServerMessage *msg, gpointer data)
{
  BlnServer *srv = data;
  SoupMessageHeaders *h = soup_server_message_get_request_headers (msg);
  goffset len = soup_message_headers_get_content_length (h);

  if (soup_message_headers_get_encoding (h) == SOUP_ENCODING_CONTENT_LENGTH
      && len > (goffset) srv->max_body)
    refuse_body (srv, msg, len);
}

/* A chunked body is counted as it arrives. */
static void
on_got_chunk (SoupServerMessage *msg, GBytes *chunk, gpointer data)
{
  BlnServer *srv = data;
  SoupMessageBody *body = soup_server_message_get_request_body (msg);

  if (body->length > (goffset) srv->max_body)
    refuse_body (srv, msg, -1);
}

static void
on_request_started (SoupServer *soup, SoupServerMessage *msg, gpointer data)
{
  g_signal_connect (msg, "got-headers", G_CALLBACK (on_got_headers), data);
  g_signal_connect (msg, "got-chunk", G_CALLBACK (on_got_chunk), data);
}

/* POST /v1/embeddings: the models served generate text; none can embed yet.
 * The body is still checked so that a client learns about its own mistakes
 * first. */
static void
handle_embeddings (BlnServer *srv, SoupServerMessage *msg, JsonObject *body)
{
  JsonNode *input = json_object_get_member (body, "input");
  const BlnModelEntry *e;

  if (input == NULL || !(JSON_NODE_HOLDS_ARRAY (input)
                         || (JSON_NODE_HOLDS_VALUE (input)
                             && json_node_get_value_type (input) == G_TYPE_STRING)))
    {
      reply_error (msg, 400, "input", "invalid_value",
                   "input must be a string or an array of strings or token ids");
      return;
    }
  e = resolve_model (srv, msg, body);
  if (e == NULL)
    return;
  reply_error (msg, 400, "model", "model_cannot_embed",
               "the model '%s' generates text and cannot produce embeddings; load an embedding "
               "model for /v1/embeddings", e->id);
}

/* POST /v1/rerank: no reranker models yet; the body is checked first. */
static void
handle_rerank (BlnServer *srv, SoupServerMessage *msg, JsonObject *body)
{
  JsonNode *q = json_object_get_member (body, "query");
  JsonNode *docs = json_object_get_member (body, "documents");
  const BlnModelEntry *e;

  if (q == NULL || !JSON_NODE_HOLDS_VALUE (q) || json_node_get_value_type (q) != G_TYPE_STRING)
    {
      reply_error (msg, 400, "query", "invalid_value", "query must be a string");
      return;
    }
  if (docs == NULL || !JSON_NODE_HOLDS_ARRAY (docs))
    {
      reply_error (msg, 400, "documents", "invalid_value", "documents must be an array");
      return;
    }
  e = resolve_model (srv, msg, body);
  if (e == NULL)
    return;
  reply_error (msg, 400, "model", "model_cannot_rerank",
               "the model '%s' generates text and cannot rerank; load a reranker model for "
               "/v1/rerank", e->id);
}

static gboolean
auth_ok (BlnServer *srv, SoupServerMessage *msg)
{
  SoupMessageHeaders *h = soup_server_message_get_request_headers (msg);
  const char *auth, *xkey;

  if (srv->api_key == NULL)
    return TRUE;   /* no key configured: accept whatever is sent */
  auth = soup_message_headers_get_one (h, "Authorization");
  xkey = soup_message_headers_get_one (h, "X-Api-Key");
  if (auth != NULL && g_ascii_strncasecmp (auth, "Bearer ", 7) == 0)
    {
      auth += 7;
      while (*auth == ' ')
        auth++;
      if (g_str_equal (auth, srv->api_key))
        return TRUE;
    }
  return xkey != NULL && g_str_equal (xkey, srv->api_key);
}

/* /v1/ws before the upgrade: the API key (headers, or ?api_key= for browsers,
 * which cannot set headers on a WebSocket) and shutdown. Setting a status
 * here refuses the upgrade. */
static void
ws_http_callback (SoupServer *soup, SoupServerMessage *msg, const char *path, GHashTable *query,
                  gpointer data)
{
  BlnServer *srv = data;
  const char *qkey = query ? g_hash_table_lookup (query, "api_key") : NULL;
  ReqLabel *label = g_new0 (ReqLabel, 1);

  label->srv = srv;
  label->route = g_strdup ("/v1/ws");
  label->method = g_strdup (soup_server_message_get_method (msg));
  g_signal_connect_data (msg, "finished", G_CALLBACK (count_request), label, req_label_free, 0);
  if (srv->safety != NULL)
    {
      /* keys from the database (headers or ?api_key=) */
      if (!bln_safety_http_check_key (srv->safety, msg, qkey))
        return;           /* answered 401 / 429 */
      if (srv->shut_down)
        reply_error (msg, 503, NULL, "server_shutting_down", "the server is shutting down");
    }
  else if (!auth_ok (srv, msg) && !(qkey != NULL && g_str_equal (qkey, srv->api_key)))
    reply_error (msg, 401, NULL, "invalid_api_key", "invalid or missing API key");
  else if (srv->shut_down)
    reply_error (msg, 503, NULL, "server_shutting_down", "the server is shutting down");
}

static void
ws_callback (SoupServer *soup, SoupServerMessage *msg, const char *path,
             SoupWebsocketConnection *conn, gpointer data)
{
  BlnServer *srv = data;

  bln_ws_accept_message (srv->ws, conn, msg);
}

static void
server_callback (SoupServer *soup, SoupServerMessage *msg, const char *path, GHashTable *query,
                 gpointer data)
{
  BlnServer *srv = data;
  const char *method = soup_server_message_get_method (msg);
  const char *route = path;
  SoupMessageBody *req_body;
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (JsonParser) parser = NULL;
  g_autoptr (GError) error = NULL;
  const char *raw;
  gsize len;
  ModelHandler handler;
  ReqLabel *label = g_new0 (ReqLabel, 1);

  label->srv = srv;
  label->route = g_strdup (route_label (path));
  label->method = g_strdup (method);
  g_signal_connect_data (msg, "finished", G_CALLBACK (count_request), label, req_label_free, 0);
  g_object_set_data (G_OBJECT (msg), "bln-server", srv);   /* for add_cors() */
  if (g_str_equal (method, "OPTIONS"))
    {
      SoupMessageHeaders *rq = soup_server_message_get_request_headers (msg);
      SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
      const char *want = soup_message_headers_get_one (rq, "Access-Control-Request-Headers");

      add_cors (msg);
      soup_message_headers_replace (h, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      soup_message_headers_replace (h, "Access-Control-Allow-Headers",
                                    want ? want : "Authorization, Content-Type, X-Api-Key");
      soup_message_headers_replace (h, "Access-Control-Max-Age", "86400");
      soup_server_message_set_status (msg, 204, NULL);
      return;
    }
  if (g_str_has_prefix (route, "/v1/"))
    route += 3;
  if (g_str_equal (route, "/health"))
    {
      g_autoptr (JsonObject) o = json_object_new ();
      json_object_set_string_member (o, "status", "ok");
      reply_json (msg, 200, o);
      return;
    }
  if (srv->safety != NULL && !g_str_equal (route, "/chat/completions") &&
      !g_str_equal (route, "/completions") && !g_str_has_prefix (route, "/api/"))
    {
      if (!bln_safety_http_check_key (srv->safety, msg, NULL))
        return;           /* answered 401 / 429 */
    }
  else if (srv->safety == NULL && !auth_ok (srv, msg))
    {
      reply_error (msg, 401, NULL, "invalid_api_key", "invalid or missing API key");
      return;
    }
  if (g_str_equal (route, "/models") || g_str_equal (route, "/models/"))
    {
      if (!g_str_equal (method, "GET"))
        reply_error (msg, 405, NULL, NULL, "use GET for %s", path);
      else
        handle_models (srv, msg);
      return;
    }
  if (g_str_has_prefix (path, "/api/"))
    {
      bln_ollama_handle (srv->ollama, msg, path);
      return;
    }
  if (g_str_equal (route, "/metrics"))
    {
      if (!g_str_equal (method, "GET"))
        reply_error (msg, 405, NULL, NULL, "use GET for %s", path);
      else
        handle_metrics (srv, msg);
      return;
    }
  if (g_str_equal (route, "/chat/completions") || g_str_equal (route, "/chat/completions/"))
    handler = handle_chat;
  else if (g_str_equal (route, "/completions") || g_str_equal (route, "/completions/"))
    handler = handle_completions;
  else if (g_str_equal (route, "/embeddings") || g_str_equal (route, "/embeddings/"))
    handler = handle_embeddings;
  else if (g_str_equal (route, "/rerank") || g_str_equal (route, "/rerank/"))
    handler = handle_rerank;
  else
    {
      reply_error (msg, 404, NULL, "not_found", "no route %s %s", method, path);
      return;
    }
  if (!g_str_equal (method, "POST"))
    {
      reply_error (msg, 405, NULL, NULL, "use POST for %s", path);
      return;
    }
  if (srv->shut_down)
    {
      reply_error (msg, 503, NULL, "server_shutting_down", "the server is shutting down");
      return;
    }
  req_body = soup_server_message_get_request_body (msg);
  bytes = soup_message_body_flatten (req_body);
  raw = g_bytes_get_data (bytes, &len);
  if (len > srv->max_body)
    {
      reply_error (msg, 413, NULL, "request_too_large",
                   "the request body is %" G_GSIZE_FORMAT " bytes; the limit is %" G_GSIZE_FORMAT,
                   len, srv->max_body);
      return;
    }
  if (!g_utf8_validate_len (raw, len, NULL))
    {
      reply_error (msg, 400, NULL, "invalid_utf8", "the request body is not valid UTF-8");
      return;
    }
  parser = json_parser_new ();
  if (!json_parser_load_from_data (parser, raw, (gssize) len, &error))
    {
      reply_error (msg, 400, NULL, "invalid_json", "the request body is not valid JSON: %s",
                   error->message);
      return;
    }
  if (!JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    {
      reply_error (msg, 400, NULL, "invalid_json", "the request body must be a JSON object");
      return;
    }
  if (handler == handle_embeddings || handler == handle_rerank)
    handler (srv, msg, json_node_get_object (json_parser_get_root (parser)));
  else
    with_model (srv, msg, json_parser_get_root (parser), handler);
}

/* ---------------------------------------------------------------------- */
/* public                                                                  */

char *
bln_server_model_id_from_name (const char *name)
{
  GString *s = g_string_new (NULL);
  gboolean dash = FALSE;

  for (; name != NULL && *name; name++)
    {
      char c = *name;
      if (g_ascii_isalnum (c) || c == '.')
        {
          if (dash && s->len > 0)
            g_string_append_c (s, '-');
          dash = FALSE;
          g_string_append_c (s, g_ascii_tolower (c));
        }
      else
        dash = TRUE;
    }
  if (s->len == 0)
    g_string_append (s, "model");
  return g_string_free (s, FALSE);
}

static gboolean
host_is_loopback (const char *host)
{
  g_autoptr (GInetAddress) addr = NULL;

  if (g_ascii_strcasecmp (host, "localhost") == 0)
    return TRUE;
  addr = g_inet_address_new_from_string (host);
  return addr != NULL && g_inet_address_get_is_loopback (addr);
}

/* Listens on @sa with a deep accept queue. soup_server_listen() leaves the
 * kernel's backlog at 10, so a burst of clients connecting at once (a chat
 * UI reopening many tabs, the 64-client load test) could see connection
 * resets before the main loop gets to accept them. */
static gboolean
listen_with_backlog (SoupServer *soup, GSocketAddress *sa, GError **error)
{
  g_autoptr (GSocket) sock = NULL;

  sock = g_socket_new (g_socket_address_get_family (sa), G_SOCKET_TYPE_STREAM,
                       G_SOCKET_PROTOCOL_TCP, error);
  if (sock == NULL)
    return FALSE;
  g_socket_set_listen_backlog (sock, 1024);
  return g_socket_bind (sock, sa, TRUE, error) && g_socket_listen (sock, error)
         && soup_server_listen_socket (soup, sock, 0, error);
}

BlnServer *
bln_server_new (BlnModelHost *host_, BlnModelLibrary *lib, const BlnServerOptions *options,
                GError **error)
{
  const char *host = options->host ? options->host : "127.0.0.1";
  g_autoptr (GInetAddress) addr = NULL;
  g_autoptr (GSocketAddress) sa = NULL;
  BlnServer *srv;
  GSList *uris;
  const BlnModelEntry *loaded = bln_model_host_loaded (host_);

  if (g_ascii_strcasecmp (host, "localhost") == 0)
    host = "127.0.0.1";
  addr = g_inet_address_new_from_string (host);
  if (addr == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "--host must be an IP address (got '%s')", host);
      return NULL;
    }
  if (!host_is_loopback (host) && (options->api_key == NULL || !*options->api_key) &&
      options->safety == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "refusing to listen on %s, which is not a loopback address, without an API "
                   "key (--api-key)", host);
      return NULL;
    }
  if (options->port < 0 || options->port > 65535)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "invalid port %d", options->port);
      return NULL;
    }

  srv = g_new0 (BlnServer, 1);
  srv->host = host_;
  srv->lib = lib;
  srv->strict_models = options->strict_models;
  srv->worker = bln_model_host_worker (host_);
  srv->metrics = bln_metrics_new ();
  srv->waits = g_hash_table_new (NULL, NULL);
  srv->api_key = options->api_key && *options->api_key ? g_strdup (options->api_key) : NULL;
  srv->safety = options->safety;
  srv->max_body = options->max_body ? options->max_body : DEFAULT_MAX_BODY;
  srv->ollama = bln_ollama_new (lib, host_, srv->metrics, srv->strict_models, srv->max_body);
  srv->ws = bln_ws_new (lib, host_, srv->metrics, srv->strict_models);
  /* with --db, the Ollama and WebSocket routes check keys, limits, rules and audit themselves */
  bln_ollama_set_safety (srv->ollama, srv->safety);
  bln_ws_set_safety (srv->ws, srv->safety);
  srv->keepalive_ms = options->keepalive_ms ? options->keepalive_ms : 10000;
  srv->created = g_get_real_time () / G_USEC_PER_SEC;
  srv->active = g_hash_table_new (NULL, NULL);
  if (loaded != NULL)
    srv->model_id = g_strdup (loaded->id);
  else if (bln_model_library_n_models (lib) > 0)
    srv->model_id = g_strdup (bln_model_library_get (lib, 0)->id);
  srv->soup = soup_server_new ("server-header", "baleen/" BALEEN_VERSION, NULL);
  soup_server_add_handler (srv->soup, NULL, server_callback, srv, NULL);
  for (guint i = 0; i < 2; i++)
    {
      const char *ws_path = i == 0 ? "/v1/ws" : "/ws";
      /* the plain handler runs first and may refuse the upgrade (auth, shutdown) */
      soup_server_add_handler (srv->soup, ws_path, ws_http_callback, srv, NULL);
      soup_server_add_websocket_handler (srv->soup, ws_path, NULL, NULL, ws_callback, srv, NULL);
    }
  g_signal_connect (srv->soup, "request-started", G_CALLBACK (on_request_started), srv);
  sa = g_inet_socket_address_new (addr, (guint16) options->port);
  if (!listen_with_backlog (srv->soup, sa, error))
    {
      bln_server_free (srv);
      return NULL;
    }
  uris = soup_server_get_uris (srv->soup);
  if (uris != NULL)
    srv->url = g_uri_to_string (uris->data);
  g_slist_free_full (uris, (GDestroyNotify) g_uri_unref);
  return srv;
}

const char *
bln_server_url (BlnServer *srv)
{
  return srv->url;
}

const char *
bln_server_model_id (BlnServer *srv)
{
  return srv->model_id;
}

guint
bln_server_n_active (BlnServer *srv)
{
  return g_hash_table_size (srv->active) + bln_ollama_n_active (srv->ollama)
         + bln_ws_n_active (srv->ws);
}

void
bln_server_stop_accepting (BlnServer *srv)
{
  GHashTableIter it;
  gpointer key;

  srv->shut_down = TRUE;
  bln_ollama_stop (srv->ollama, FALSE);
  bln_ws_stop (srv->ws, FALSE);
  /* requests still waiting for a model will not get one */
  g_hash_table_iter_init (&it, srv->waits);
  while (g_hash_table_iter_next (&it, &key, NULL))
    {
      ModelWait *w = key;
      if (!w->called)
        {
          w->called = TRUE;
          reply_error (w->msg, 503, NULL, "server_shutting_down", "the server is shutting down");
          if (w->paused)
            soup_server_message_unpause (w->msg);
          w->paused = FALSE;
        }
    }
}

guint
bln_server_n_waiting (BlnServer *srv)
{
  return g_hash_table_size (srv->waits) + bln_ollama_n_active (srv->ollama);
}

BlnMetrics *
bln_server_metrics (BlnServer *srv)
{
  return srv->metrics;
}

void
bln_server_shutdown (BlnServer *srv)
{
  GHashTableIter it;
  gpointer key;

  bln_server_stop_accepting (srv);
  bln_ollama_stop (srv->ollama, TRUE);
  bln_ws_stop (srv->ws, TRUE);
  /* the listening sockets stay open until bln_server_free(): disconnecting
   * now would tear down the connections whose replies are still to be ended;
   * new chat requests meanwhile get 503 */
  g_hash_table_iter_init (&it, srv->active);
  while (g_hash_table_iter_next (&it, &key, NULL))
    bln_gen_request_cancel (((ChatReq *) key)->gen);
}

void
bln_server_free (BlnServer *srv)
{
  if (srv == NULL)
    return;
  soup_server_disconnect (srv->soup);
  g_clear_object (&srv->soup);
  /* generations whose end has not been reported yet (a cancel that takes
   * longer than the caller waited): they are cancelled, and their done
   * callback, when the worker delivers it, only frees them */
  {
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init (&it, srv->active);
    while (g_hash_table_iter_next (&it, &key, NULL))
      {
        ChatReq *cr = key;

        cr->srv = NULL;
        if (cr->keepalive != NULL)
          {
            g_source_destroy (cr->keepalive);
            g_clear_pointer (&cr->keepalive, g_source_unref);
          }
        bln_gen_request_cancel (cr->gen);
      }
  }
  g_hash_table_unref (srv->active);
  /* give back the leases of replies that were never finished */
  while (g_hash_table_size (srv->waits) > 0)
    {
      GHashTableIter it;
      gpointer key;
      g_hash_table_iter_init (&it, srv->waits);
      g_hash_table_iter_next (&it, &key, NULL);
      model_wait_finished (((ModelWait *) key)->msg, key);
    }
  g_clear_pointer (&srv->waits, g_hash_table_unref);
  g_clear_pointer (&srv->ollama, bln_ollama_free);
  g_clear_pointer (&srv->ws, bln_ws_free);
  g_clear_pointer (&srv->metrics, bln_metrics_free);
  g_free (srv->url);
  g_free (srv->model_id);
  g_free (srv->api_key);
  g_free (srv);
}
