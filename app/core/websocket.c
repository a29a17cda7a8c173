/* websocket.c — see websocket.h. */
#include "websocket.h"

#include <string.h>
#include <json-glib/json-glib.h>
#include "bln-error.h"
#include "chat.h"
#include "chat-params.h"
#include "engine-worker.h"
#include "reasoning.h"
#include "tokenizer.h"

struct _BlnWs {
  BlnModelLibrary *lib;
  BlnModelHost *host;
  BlnMetrics *metrics;
  gboolean strict;
  gboolean stopped;
  GHashTable *conns;           /* WsConn* set */
  BlnSafety *safety;           /* borrowed; NULL without --db */
};

/* One socket. Freed once it is closed and no request of it is left. */
typedef struct {
  BlnWs *ws;
  SoupWebsocketConnection *conn;
  GHashTable *reqs;            /* request_id -> WsReq* */
  gboolean closed;
  guint busy;                  /* > 0 while cancel_all() walks the requests */
  char *api_key, *client;      /* from the upgrade request, for safety.h */
  gboolean loopback;
} WsConn;

/* One generation. Freed when it is over (done sent, or never started). */
typedef struct {
  WsConn *c;
  char *id;
  JsonNode *payload;           /* the request's payload object */
  BlnModelLease *lease;
  BlnGenRequest *gen;
  BlnReasoningSplit *split;
  gboolean called, running;
  gboolean in_acquire;         /* inside bln_model_host_acquire(): freeing waits */
  gboolean doomed;             /* req_free() was asked for meanwhile */
  gint64 t_start, t_last;
  BlnSafetyCall *sc;           /* rules, output filter, audit; NULL without a database */
  gboolean moderating;         /* waiting for the moderation endpoint */
  gboolean cancelled;          /* ... and cancelled meanwhile */
  BlnFinish mod_finish;
  BlnGenUsage mod_usage;
} WsReq;

/* ---------------------------------------------------------------------- */
/* frames                                                                  */

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

/* Sends one frame for @request_id (may be NULL) with the event @event; takes @payload. */
static void
send_frame (WsConn *c, const char *request_id, const char *event, JsonObject *payload)
{
  g_autoptr (JsonObject) frame = json_object_new ();
  JsonObject *h = json_object_new ();
  g_autofree char *s = NULL;

  json_object_set_string_member (h, "version", "1.0");
  if (request_id != NULL)
    json_object_set_string_member (h, "request_id", request_id);
  else
    json_object_set_null_member (h, "request_id");
  json_object_set_int_member (h, "timestamp", g_get_real_time () / 1000);
  json_object_set_string_member (h, "event", event);
  json_object_set_object_member (frame, "header", h);
  json_object_set_object_member (frame, "payload", payload);
  if (c->closed
      || soup_websocket_connection_get_state (c->conn) != SOUP_WEBSOCKET_STATE_OPEN)
    return;
  s = to_json (frame);
  soup_websocket_connection_send_text (c->conn, s);
}

static void
send_error (WsConn *c, const char *request_id, const char *code, const char *fmt, ...)
  G_GNUC_PRINTF (4, 5);

static void
send_error (WsConn *c, const char *request_id, const char *code, const char *fmt, ...)
{
  JsonObject *p = json_object_new ();
  g_autofree char *text = NULL;
  va_list ap;

  va_start (ap, fmt);
  text = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  json_object_set_string_member (p, "code", code);
  json_object_set_string_member (p, "message", text);
  send_frame (c, request_id, "error", p);
}

/* ---------------------------------------------------------------------- */
/* lifetimes                                                               */

static void
conn_maybe_free (WsConn *c)
{
  if (!c->closed || c->busy > 0 || g_hash_table_size (c->reqs) > 0)
    return;
  g_hash_table_remove (c->ws->conns, c);
  g_signal_handlers_disconnect_by_data (c->conn, c);
  g_object_unref (c->conn);
  g_hash_table_unref (c->reqs);
  g_free (c->api_key);
  g_free (c->client);
  g_free (c);
}

/* Ends @r: it leaves its socket's table and is freed. */
static void
req_free (WsReq *r)
{
  WsConn *c = r->c;

  if (r->in_acquire)
    {
      /* on_ready() ran from inside bln_model_host_acquire(): finish after it returns */
      r->doomed = TRUE;
      return;
    }
  g_hash_table_remove (c->reqs, r->id);
  bln_model_lease_release (r->lease);
  g_clear_pointer (&r->gen, bln_gen_request_unref);
  g_clear_pointer (&r->split, bln_reasoning_split_free);
  json_node_unref (r->payload);
  bln_safety_call_free (r->sc);
  g_free (r->id);
  g_free (r);
  conn_maybe_free (c);
}

/* Stops @r: a request still waiting for its model ends now, a running one
 * when the worker reports back. */
static void
req_cancel (WsReq *r)
{
  if (r->running)
    {
      r->cancelled = TRUE;
      bln_gen_request_cancel (r->gen);
    }
  else if (r->moderating)
    r->cancelled = TRUE;   /* on_moderated() ends it */
  else
    {
      JsonObject *p = json_object_new ();
      json_object_set_string_member (p, "finish_reason", "cancelled");
      send_frame (r->c, r->id, "done", p);
      req_free (r);
    }
}

/* ---------------------------------------------------------------------- */
/* generation                                                              */

/* Sends a piece of the answer that may go out. */
static void
emit_text (WsReq *r, const char *text)
{
  g_autoptr (GString) c = g_string_new (NULL), t = g_string_new (NULL);
  JsonObject *p;

  bln_reasoning_split_push (r->split, text, -1, t, c);
  if (c->len == 0 && t->len == 0)
    return;
  p = json_object_new ();
  if (c->len > 0)
    json_object_set_string_member (p, "text", c->str);
  if (t->len > 0)
    json_object_set_string_member (p, "reasoning", t->str);
  send_frame (r->c, r->id, "delta", p);
}

static void
on_text (const char *text, gpointer data)
{
  WsReq *r = data;
  gint64 now = g_get_monotonic_time ();
  g_autoptr (GString) safe = NULL;

  if (r->c->ws->metrics != NULL)
    {
      if (r->t_last == 0)
        bln_metrics_observe_ttft (r->c->ws->metrics, (now - r->t_start) / 1e6);
      else
        bln_metrics_observe_itl (r->c->ws->metrics, (now - r->t_last) / 1e6);
    }
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

/* Sends the end of the answer and the "done" (or "error") frame; frees @r. */
static void
finish_reply (WsReq *r, BlnFinish finish, const BlnGenUsage *usage, const GError *error)
{
  const char *const *names = finish_names;
  g_autoptr (GString) c = g_string_new (NULL), t = g_string_new (NULL);
  JsonObject *p, *u;
  gboolean filtered = r->sc != NULL && bln_safety_call_filtered (r->sc);

  if (finish == BLN_FINISH_ERROR)
    {
      send_error (r->c, r->id, "engine_error", "%s", error ? error->message : "engine failure");
      req_free (r);
      return;
    }
  bln_reasoning_split_finish (r->split, t, c);
  if (c->len > 0 || t->len > 0)
    {
      p = json_object_new ();
      if (c->len > 0)
        json_object_set_string_member (p, "text", c->str);
      if (t->len > 0)
        json_object_set_string_member (p, "reasoning", t->str);
      send_frame (r->c, r->id, "delta", p);
    }
  p = json_object_new ();
  u = json_object_new ();
  json_object_set_string_member (p, "finish_reason", filtered && finish != BLN_FINISH_CANCELLED
                                                     ? "content_filter" : names[finish]);
  json_object_set_int_member (u, "prompt_tokens", usage->prompt_tokens);
  json_object_set_int_member (u, "completion_tokens", usage->completion_tokens);
  json_object_set_int_member (u, "total_tokens", usage->prompt_tokens + usage->completion_tokens);
  json_object_set_int_member (u, "cached_tokens", usage->cached_tokens);
  json_object_set_object_member (p, "usage", u);
  send_frame (r->c, r->id, "done", p);
  req_free (r);
}

/* The audit record of @r (once). */
static void
audit_end (WsReq *r, BlnFinish finish, const BlnGenUsage *usage)
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
  WsReq *r = data;
  g_autoptr (GString) held = g_string_new (NULL);
  BlnFinish finish = r->cancelled ? BLN_FINISH_CANCELLED : r->mod_finish;

  r->moderating = FALSE;
  bln_safety_call_moderate_finish (r->sc, result);
  bln_safety_call_release (r->sc, held);   /* nothing when withheld */
  if (held->len > 0 && !r->cancelled)
    emit_text (r, held->str);
  audit_end (r, r->mod_finish, &r->mod_usage);
  finish_reply (r, finish, &r->mod_usage, NULL);
}

static void
on_done (BlnFinish finish, const BlnGenUsage *usage, const GError *error, gpointer data)
{
  WsReq *r = data;

  r->running = FALSE;
  if (r->c->ws->metrics != NULL)
    bln_metrics_observe_generation (r->c->ws->metrics, usage->prompt_tokens,
                                    usage->cached_tokens, usage->completion_tokens,
                                    finish_names[finish],
                                    (g_get_monotonic_time () - r->t_start) / 1e6);
  if (r->sc != NULL)
    {
      /* the held-back end of the answer; the moderation endpoint; the audit record */
      if (!bln_safety_call_filtered (r->sc) && finish != BLN_FINISH_CANCELLED
          && finish != BLN_FINISH_ERROR)
        {
          g_autoptr (GString) rest = g_string_new (NULL);

          bln_safety_call_flush (r->sc, rest);
          if (rest->len > 0)
            emit_text (r, rest->str);
        }
      if (bln_safety_call_filtered (r->sc) && finish == BLN_FINISH_CANCELLED && !r->cancelled
          && !r->c->closed)
        finish = BLN_FINISH_STOP;   /* stopped by the output filter, not by the client */
      if (bln_safety_call_needs_moderation (r->sc) && !r->c->closed
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

/* An OpenAI-shaped body from the payload, for chat-params.c. */
static JsonObject *
openai_body (JsonObject *payload)
{
  JsonObject *o = json_object_new ();
  JsonNode *params = json_object_get_member (payload, "parameters");
  JsonNode *n = json_object_get_member (payload, "messages");

  if (n != NULL)
    json_object_set_member (o, "messages", json_node_copy (n));
  else
    {
      JsonArray *a = json_array_new ();
      JsonObject *m = json_object_new ();
      JsonNode *prompt = json_object_get_member (payload, "prompt");
      json_object_set_string_member (m, "role", "user");
      if (prompt != NULL)
        json_object_set_member (m, "content", json_node_copy (prompt));
      json_array_add_object_element (a, m);
      json_object_set_array_member (o, "messages", a);
    }
  if (params != NULL && JSON_NODE_HOLDS_OBJECT (params))
    {
      static const char *const keys[] = { "max_tokens", "temperature", "top_p", "top_k",
                                          "min_p", "seed", "stop", "presence_penalty",
                                          "frequency_penalty", "repetition_penalty" };
      JsonObject *po = json_node_get_object (params);
      for (guint i = 0; i < G_N_ELEMENTS (keys); i++)
        if (json_object_has_member (po, keys[i]))
          json_object_set_member (o, keys[i],
                                  json_node_copy (json_object_get_member (po, keys[i])));
    }
  return o;
}

static void
start_generation (WsReq *r, BlnEngineWorker *worker, const BlnModelEntry *entry)
{
  BlnModel *model = bln_engine_worker_model (worker);
  BlnTokenizer *tok = bln_model_tokenizer (model);
  const char *tmpl = bln_model_chat_template (model);
  g_autoptr (JsonObject) oai = openai_body (json_node_get_object (r->payload));
  BlnChatParams p = { 0 };
  const char *param = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *prompt = NULL;
  g_autoptr (GArray) ids = NULL;
  int n_ctx = bln_engine_worker_n_ctx (worker), room;
  JsonObject *start;

  if (!bln_chat_params_parse (oai, &p, &param, &error))
    {
      send_error (r->c, r->id, "invalid_value", "%s%s%s", param ? param : "",
                  param ? ": " : "", error->message);
      goto fail;
    }
  if (tmpl != NULL)
    {
      prompt = bln_chat_render (tmpl, p.messages, NULL, TRUE, bln_tokenizer_bos_text (tok),
                                bln_tokenizer_eos_text (tok), NULL, &error);
      if (prompt != NULL)
        ids = bln_tokenizer_encode (tok, prompt, -1, FALSE, TRUE, &error);
    }
  else
    {
      /* no template: the prompt text as it is */
      JsonNode *pn = json_object_get_member (json_node_get_object (r->payload), "prompt");
      prompt = g_strdup (pn && JSON_NODE_HOLDS_VALUE (pn) ? json_node_get_string (pn) : "");
      ids = bln_tokenizer_encode (tok, prompt, -1, bln_tokenizer_add_bos (tok), FALSE, &error);
    }
  if (ids == NULL || ids->len == 0)
    {
      send_error (r->c, r->id, "invalid_value", "%s",
                  error ? error->message : "the prompt is empty");
      goto fail;
    }
  room = n_ctx - (int) ids->len;
  if (room < 1 || (p.max_tokens > 0 && p.max_tokens > room))
    {
      send_error (r->c, r->id, "context_length_exceeded",
                  "the context is %d tokens; the prompt takes %u and %d more were asked for",
                  n_ctx, ids->len, MAX (p.max_tokens, 1));
      goto fail;
    }
  r->split = bln_reasoning_split_new (tmpl != NULL && bln_reasoning_prompt_opens_block (prompt));
  r->gen = bln_gen_request_new (ids, &p.sp, p.max_tokens > 0 ? p.max_tokens : room,
                                (const char *const *) p.stops->pdata,
                                g_main_context_get_thread_default (), on_text, on_done, r);
  r->running = TRUE;
  start = json_object_new ();
  json_object_set_string_member (start, "model", entry->id);
  send_frame (r->c, r->id, "start", start);
  if (!bln_engine_worker_submit (worker, r->gen, &error))
    {
      BlnGenUsage usage = { (int) ids->len, 0, 0 };

      on_done (BLN_FINISH_ERROR, &usage, error, r);   /* sends the error frame */
    }
  bln_chat_params_clear (&p);
  return;

fail:
  bln_chat_params_clear (&p);
  req_free (r);
}

static void
on_ready (BlnModelLease *lease, BlnEngineWorker *worker, const BlnModelEntry *entry,
          const GError *error, gpointer data)
{
  WsReq *r = data;

  r->lease = lease;
  r->called = TRUE;
  if (error != NULL)
    {
      send_error (r->c, r->id, "model_load_failed", "cannot load the model %s: %s", entry->id,
                  error->message);
      req_free (r);
    }
  else if (r->c->ws->stopped || r->c->closed)
    {
      send_error (r->c, r->id, "server_shutting_down", "the server is shutting down");
      req_free (r);
    }
  else
    start_generation (r, worker, entry);
}

/* ---------------------------------------------------------------------- */
/* incoming frames                                                         */

static const char *
member_string (JsonObject *o, const char *key)
{
  JsonNode *n = o ? json_object_get_member (o, key) : NULL;

  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING
         ? json_node_get_string (n) : NULL;
}

/* Admits @r through safety.h: the rate limits, and the input rules on the
 * prompt or on every message's content (masked in the payload). FALSE when
 * refused: the error frame has gone out. */
static gboolean
admit (WsReq *r, const char *model)
{
  JsonObject *payload = json_node_get_object (r->payload);
  JsonNode *params = json_object_get_member (payload, "parameters");
  JsonNode *msgs = json_object_get_member (payload, "messages");
  JsonNode *mt;
  g_autoptr (GPtrArray) texts = g_ptr_array_new ();
  g_autoptr (GPtrArray) owners = g_ptr_array_new ();   /* JsonObject holding each text */
  g_autoptr (GPtrArray) keys = g_ptr_array_new ();
  BlnSafetyRequest req = { 0 };
  BlnSafetyVerdict refusal = { 0 };
  gint64 max_tokens = 0;

  if (msgs != NULL)
    bln_safety_collect_message_texts (msgs, texts, owners, keys);
  else if (msgs == NULL && member_string (payload, "prompt") != NULL)
    {
      g_ptr_array_add (texts, (gpointer) member_string (payload, "prompt"));
      g_ptr_array_add (owners, payload);
      g_ptr_array_add (keys, (gpointer) "prompt");
    }
  g_ptr_array_add (texts, NULL);
  if (params != NULL && JSON_NODE_HOLDS_OBJECT (params)
      && (mt = json_object_get_member (json_node_get_object (params), "max_tokens")) != NULL
      && JSON_NODE_HOLDS_VALUE (mt) && json_node_get_value_type (mt) == G_TYPE_INT64)
    max_tokens = json_node_get_int (mt);

  req.api_key = r->c->api_key;
  req.client = r->c->client;
  req.loopback = r->c->loopback;
  req.endpoint = "/v1/ws";
  req.texts = (const char *const *) texts->pdata;
  r->sc = bln_safety_call_admit (r->c->ws->safety, &req, model, max_tokens, &refusal);
  if (r->sc == NULL)
    {
      JsonObject *p = json_object_new ();
      json_object_set_string_member (p, "code", refusal.code ? refusal.code : "refused");
      json_object_set_string_member (p, "message", refusal.message ? refusal.message : "");
      json_object_set_int_member (p, "status", refusal.status);
      for (guint i = 0; refusal.headers && refusal.headers[i] && refusal.headers[i + 1]; i += 2)
        if (g_ascii_strcasecmp (refusal.headers[i], "Retry-After") == 0)
          json_object_set_int_member (p, "retry_after",
                                      g_ascii_strtoll (refusal.headers[i + 1], NULL, 10));
      send_frame (r->c, r->id, "error", p);
      bln_safety_verdict_clear (&refusal);
      return FALSE;
    }
  bln_safety_write_back_texts (bln_safety_call_masked_texts (r->sc), owners, keys);
  return TRUE;
}

static void
handle_frame (WsConn *c, const char *text, gsize len)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  JsonObject *root, *header, *payload;
  JsonNode *hn, *pn;
  const char *id, *version, *action, *model;
  const BlnModelEntry *e;
  WsReq *r;

  if (!g_utf8_validate_len (text, len, NULL)
      || !json_parser_load_from_data (parser, text, (gssize) len, &error)
      || !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    {
      send_error (c, NULL, "invalid_json", "a frame must be a JSON object%s%s",
                  error ? ": " : "", error ? error->message : "");
      return;
    }
  root = json_node_get_object (json_parser_get_root (parser));
  hn = json_object_get_member (root, "header");
  header = hn && JSON_NODE_HOLDS_OBJECT (hn) ? json_node_get_object (hn) : NULL;
  id = member_string (header, "request_id");
  if (header == NULL || id == NULL || *id == '\0' || strlen (id) > 256)
    {
      send_error (c, NULL, "invalid_envelope",
                  "a frame needs a header object with a request_id string (1 to 256 bytes)");
      return;
    }
  version = member_string (header, "version");
  if (version == NULL || !g_str_equal (version, "1.0"))
    {
      send_error (c, id, "unsupported_version", "header.version must be \"1.0\"");
      return;
    }
  action = member_string (header, "action");
  if (action != NULL && g_str_equal (action, "cancel"))
    {
      r = g_hash_table_lookup (c->reqs, id);
      if (r == NULL)
        send_error (c, id, "unknown_request", "no request %s is in flight on this socket", id);
      else
        req_cancel (r);
      return;
    }
  if (action != NULL && !g_str_equal (action, "generate"))
    {
      send_error (c, id, "invalid_envelope", "header.action must be \"generate\" or \"cancel\"");
      return;
    }
  if (g_hash_table_contains (c->reqs, id))
    {
      send_error (c, id, "duplicate_request_id", "request %s is already in flight", id);
      return;
    }
  if (g_hash_table_size (c->reqs) >= BLN_WS_MAX_IN_FLIGHT)
    {
      send_error (c, id, "too_many_requests", "at most %d requests may be in flight on a socket",
                  BLN_WS_MAX_IN_FLIGHT);
      return;
    }
  if (c->ws->stopped)
    {
      send_error (c, id, "server_shutting_down", "the server is shutting down");
      return;
    }
  pn = json_object_get_member (root, "payload");
  payload = pn && JSON_NODE_HOLDS_OBJECT (pn) ? json_node_get_object (pn) : NULL;
  if (payload == NULL || (!json_object_has_member (payload, "prompt")
                          && !json_object_has_member (payload, "messages")))
    {
      send_error (c, id, "invalid_envelope", "payload must be an object with a prompt");
      return;
    }
  model = member_string (payload, "model");
  if (model == NULL)
    model = member_string (header, "model");
  e = bln_model_host_resolve (c->ws->host, model, c->ws->strict, &error);
  if (e == NULL)
    {
      send_error (c, id, g_error_matches (error, BLN_ERROR, BLN_ERROR_INVALID)
                         ? "invalid_value" : "model_not_found", "%s", error->message);
      return;
    }
  r = g_new0 (WsReq, 1);
  r->c = c;
  r->id = g_strdup (id);
  r->payload = json_node_ref (pn);
  r->t_start = g_get_monotonic_time ();
  g_hash_table_insert (c->reqs, r->id, r);
  if (c->ws->safety != NULL && !admit (r, e->id))
    {
      req_free (r);
      return;
    }
  r->in_acquire = TRUE;
  r->lease = bln_model_host_acquire (c->ws->host, e, on_ready, r);
  r->in_acquire = FALSE;
  if (r->doomed)
    req_free (r);
}

static void
on_message (SoupWebsocketConnection *conn, gint type, GBytes *message, gpointer data)
{
  WsConn *c = data;
  gsize len;
  const char *text = g_bytes_get_data (message, &len);

  if (type != SOUP_WEBSOCKET_DATA_TEXT)
    {
      send_error (c, NULL, "invalid_json", "send text frames holding JSON");
      return;
    }
  handle_frame (c, text, len);
}

/* Cancels every request of @c. When @c is closed this may free it: do not
 * touch @c afterwards. */
static void
cancel_all (WsConn *c)
{
  GList *ids = g_hash_table_get_keys (c->reqs);

  /* ending one request may grant (and end) another: look each one up again */
  for (GList *l = ids; l != NULL; l = l->next)
    l->data = g_strdup (l->data);
  c->busy++;
  for (GList *l = ids; l != NULL; l = l->next)
    {
      WsReq *r = g_hash_table_lookup (c->reqs, l->data);
      if (r != NULL)
        req_cancel (r);
    }
  c->busy--;
  g_list_free_full (ids, g_free);
  conn_maybe_free (c);
}

static void
on_closed (SoupWebsocketConnection *conn, gpointer data)
{
  WsConn *c = data;

  c->closed = TRUE;
  if (g_hash_table_size (c->reqs) == 0)
    conn_maybe_free (c);
  else
    cancel_all (c);
}

/* ---------------------------------------------------------------------- */
/* public                                                                  */

BlnWs *
bln_ws_new (BlnModelLibrary *lib, BlnModelHost *host, BlnMetrics *metrics, gboolean strict)
{
  BlnWs *ws = g_new0 (BlnWs, 1);

  ws->lib = lib;
  ws->host = host;
  ws->metrics = metrics;
  ws->strict = strict;
  ws->conns = g_hash_table_new (NULL, NULL);
  return ws;
}

static WsConn *
accept_conn (BlnWs *ws, SoupWebsocketConnection *conn)
{
  WsConn *c = g_new0 (WsConn, 1);

  c->ws = ws;
  c->conn = g_object_ref (conn);
  c->reqs = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_add (ws->conns, c);
  /* long generations: do not let an idle proxy drop the socket silently */
  soup_websocket_connection_set_keepalive_interval (conn, 30);
  g_signal_connect (conn, "message", G_CALLBACK (on_message), c);
  g_signal_connect (conn, "closed", G_CALLBACK (on_closed), c);
  return c;
}

void
bln_ws_accept (BlnWs *ws, SoupWebsocketConnection *conn)
{
  accept_conn (ws, conn);
}

void
bln_ws_accept_message (BlnWs *ws, SoupWebsocketConnection *conn, SoupServerMessage *msg)
{
  WsConn *c;
  BlnSafetyRequest req;
  g_autoptr (GHashTable) query = NULL;
  GUri *uri = soup_server_message_get_uri (msg);

  c = accept_conn (ws, conn);
  if (uri != NULL && g_uri_get_query (uri) != NULL)
    query = g_uri_parse_params (g_uri_get_query (uri), -1, "&", G_URI_PARAMS_NONE, NULL);
  bln_safety_http_request (msg, query ? g_hash_table_lookup (query, "api_key") : NULL, &req);
  c->api_key = g_strdup (req.api_key);
  c->client = g_strdup (req.client);
  c->loopback = req.loopback;
}

void
bln_ws_set_safety (BlnWs *ws, BlnSafety *safety)
{
  ws->safety = safety;
}

void
bln_ws_stop (BlnWs *ws, gboolean cancel)
{
  GList *conns = g_hash_table_get_keys (ws->conns);

  ws->stopped = TRUE;
  for (GList *l = conns; cancel && l != NULL; l = l->next)
    if (g_hash_table_contains (ws->conns, l->data))
      cancel_all (l->data);
  g_list_free (conns);
}

guint
bln_ws_n_active (BlnWs *ws)
{
  GHashTableIter it;
  gpointer key;
  guint n = 0;

  g_hash_table_iter_init (&it, ws->conns);
  while (g_hash_table_iter_next (&it, &key, NULL))
    n += g_hash_table_size (((WsConn *) key)->reqs);
  return n;
}

void
bln_ws_free (BlnWs *ws)
{
  gint64 until;
  GList *conns;

  if (ws == NULL)
    return;
  bln_ws_stop (ws, TRUE);
  conns = g_hash_table_get_keys (ws->conns);
  for (GList *l = conns; l != NULL; l = l->next)
    if (g_hash_table_contains (ws->conns, l->data)
        && soup_websocket_connection_get_state (((WsConn *) l->data)->conn)
           == SOUP_WEBSOCKET_STATE_OPEN)
      soup_websocket_connection_close (((WsConn *) l->data)->conn,
                                       SOUP_WEBSOCKET_CLOSE_GOING_AWAY, "server stopping");
  g_list_free (conns);
  /* the worker reports the cancelled requests; the sockets finish closing */
  until = g_get_monotonic_time () + 3 * G_USEC_PER_SEC;
  while (g_hash_table_size (ws->conns) > 0 && g_get_monotonic_time () < until)
    g_main_context_iteration (NULL, FALSE);
  if (g_hash_table_size (ws->conns) > 0)
    g_printerr ("baleen: %u WebSocket connections did not close in time\n",
                g_hash_table_size (ws->conns));
  else
    {
      g_hash_table_unref (ws->conns);
      g_free (ws);
    }
}
