/* server.c — see server.h. */
#include "server.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <libsoup/soup.h>
#include <json-glib/json-glib.h>
#include "baleen-config.h"
#include "bln-error.h"
#include "chat.h"
#include "chat-params.h"
#include "tokenizer.h"

#define DEFAULT_MAX_BODY (8u << 20)

struct _BlnServer {
  SoupServer *soup;
  BlnEngineWorker *worker;
  char *url;
  char *model_id;
  char *api_key;
  gsize max_body;
  gint64 created;
  GHashTable *active;     /* ChatReq* set */
  gboolean shut_down;
};

/* One chat completion in flight. */
typedef struct {
  BlnServer *srv;
  SoupServerMessage *msg;     /* a reference */
  BlnGenRequest *gen;
  gboolean stream;
  gboolean include_usage;
  gboolean msg_finished;      /* the connection is done with it (sent or gone) */
  char *id;
  gint64 created;
  GString *text;              /* the whole reply, for the non-streamed answer */
  GSource *watch;             /* notices a client that hangs up while we generate */
} ChatReq;

/* ---------------------------------------------------------------------- */
/* replies                                                                 */

static char *
json_to_str (JsonNode *node, gsize *len)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();

  json_generator_set_root (gen, node);
  return json_generator_to_data (gen, len);
}

static char *
object_to_str (JsonObject *obj, gsize *len)
{
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), obj);

  return json_to_str (node, len);
}

static void
add_cors (SoupServerMessage *msg)
{
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);

  soup_message_headers_replace (h, "Access-Control-Allow-Origin", "*");
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
usage_object (const BlnGenUsage *u)
{
  JsonObject *o = json_object_new (), *details = json_object_new ();

  json_object_set_int_member (o, "prompt_tokens", u->prompt_tokens);
  json_object_set_int_member (o, "completion_tokens", u->completion_tokens);
  json_object_set_int_member (o, "total_tokens", u->prompt_tokens + u->completion_tokens);
  json_object_set_int_member (details, "cached_tokens", u->cached_tokens);
  json_object_set_object_member (o, "prompt_tokens_details", details);
  return o;
}

static const char *
finish_name (BlnFinish f)
{
  return f == BLN_FINISH_LENGTH ? "length" : "stop";
}

/* A chat.completion.chunk with one choice (delta set, finish or null), or
 * with no choice at all (@delta NULL: the usage chunk). Takes @delta. */
static JsonObject *
chunk_object (ChatReq *cr, JsonObject *delta, const char *finish, const BlnGenUsage *usage)
{
  JsonObject *o = json_object_new ();
  JsonArray *choices = json_array_new ();

  json_object_set_string_member (o, "id", cr->id);
  json_object_set_string_member (o, "object", "chat.completion.chunk");
  json_object_set_int_member (o, "created", cr->created);
  json_object_set_string_member (o, "model", cr->srv->model_id);
  json_object_set_string_member (o, "system_fingerprint", "baleen-" BALEEN_VERSION);
  if (delta != NULL)
    {
      JsonObject *c = json_object_new ();
      json_object_set_int_member (c, "index", 0);
      json_object_set_object_member (c, "delta", delta);
      json_object_set_null_member (c, "logprobs");
      if (finish != NULL)
        json_object_set_string_member (c, "finish_reason", finish);
      else
        json_object_set_null_member (c, "finish_reason");
      json_array_add_object_element (choices, c);
    }
  json_object_set_array_member (o, "choices", choices);
  if (usage != NULL)
    json_object_set_object_member (o, "usage", usage_object (usage));
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
}

static void
chat_req_free (ChatReq *cr)
{
  if (cr->watch != NULL)
    {
      g_source_destroy (cr->watch);
      g_source_unref (cr->watch);
    }
  g_hash_table_remove (cr->srv->active, cr);
  g_signal_handlers_disconnect_by_data (cr->msg, cr);
  g_object_unref (cr->msg);
  bln_gen_request_unref (cr->gen);
  g_free (cr->id);
  g_string_free (cr->text, TRUE);
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

static void
on_gen_text (const char *text, gpointer data)
{
  ChatReq *cr = data;
  JsonObject *delta;

  if (!cr->stream)
    {
      g_string_append (cr->text, text);
      return;
    }
  delta = json_object_new ();
  json_object_set_string_member (delta, "content", text);
  sse_send (cr, chunk_object (cr, delta, NULL, NULL), NULL);
}

static void
on_gen_done (BlnFinish finish, const BlnGenUsage *usage, const GError *error, gpointer data)
{
  ChatReq *cr = data;
  static const char *const names[] = { "stop", "length", "cancelled", "error" };

  /* a one-line log of every completion, on stderr */
  g_printerr ("baleen-server: %s %s: %s, prompt %d (cached %d), completion %d\n", cr->id,
              cr->stream ? "stream" : "plain", names[finish], usage->prompt_tokens,
              usage->cached_tokens, usage->completion_tokens);
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

  if (cr->stream)
    {
      if (finish == BLN_FINISH_ERROR)
        {
          g_autoptr (JsonObject) err = error_object (error ? error->message : "engine failure",
                                                     "server_error", NULL, NULL);
          g_autofree char *json = object_to_str (err, NULL);
          g_autofree char *line = g_strdup_printf ("data: %s\n\n", json);
          sse_send (cr, NULL, line);
        }
      else
        {
          sse_send (cr, chunk_object (cr, json_object_new (), finish_name (finish), NULL), NULL);
          if (cr->include_usage)
            sse_send (cr, chunk_object (cr, NULL, NULL, usage), NULL);
        }
      sse_send (cr, NULL, "data: [DONE]\n\n");
      soup_message_body_complete (soup_server_message_get_response_body (cr->msg));
      soup_server_message_unpause (cr->msg);
    }
  else if (finish == BLN_FINISH_ERROR)
    {
      reply_error (cr->msg, 500, NULL, NULL, "%s", error ? error->message : "engine failure");
      soup_server_message_unpause (cr->msg);
    }
  else
    {
      g_autoptr (JsonObject) o = json_object_new ();
      JsonArray *choices = json_array_new ();
      JsonObject *c = json_object_new (), *m = json_object_new ();

      json_object_set_string_member (o, "id", cr->id);
      json_object_set_string_member (o, "object", "chat.completion");
      json_object_set_int_member (o, "created", cr->created);
      json_object_set_string_member (o, "model", cr->srv->model_id);
      json_object_set_string_member (o, "system_fingerprint", "baleen-" BALEEN_VERSION);
      json_object_set_string_member (m, "role", "assistant");
      json_object_set_string_member (m, "content", cr->text->str);
      json_object_set_int_member (c, "index", 0);
      json_object_set_object_member (c, "message", m);
      json_object_set_null_member (c, "logprobs");
      json_object_set_string_member (c, "finish_reason", finish_name (finish));
      json_array_add_object_element (choices, c);
      json_object_set_array_member (o, "choices", choices);
      json_object_set_object_member (o, "usage", usage_object (usage));
      reply_json (cr->msg, 200, o);
      soup_server_message_unpause (cr->msg);
    }
  chat_req_free (cr);
}

static void
handle_chat (BlnServer *srv, SoupServerMessage *msg, JsonObject *body)
{
  BlnModel *model = bln_engine_worker_model (srv->worker);
  BlnTokenizer *tok = bln_model_tokenizer (model);
  const char *tmpl = bln_model_chat_template (model);
  BlnChatParams p = { 0 };
  const char *param = NULL;
  GError *error = NULL;
  g_autofree char *prompt = NULL;
  g_autoptr (GArray) ids = NULL;
  ChatReq *cr;
  int n_ctx = bln_engine_worker_n_ctx (srv->worker), room;

  if (!bln_chat_params_parse (body, &p, &param, &error))
    {
      reply_error (msg, 400, param, error->code == BLN_ERROR_UNSUPPORTED ? "unsupported_content"
                                                                         : "invalid_value",
                   "%s", error->message);
      goto out;
    }
  if (tmpl == NULL)
    {
      reply_error (msg, 400, "model", "no_chat_template",
                   "the model has no chat template; chat completions are not available");
      goto out;
    }
  prompt = bln_chat_render (tmpl, p.messages, NULL, TRUE, bln_tokenizer_bos_text (tok),
                            bln_tokenizer_eos_text (tok), NULL, &error);
  if (prompt == NULL)
    {
      reply_error (msg, 400, "messages", "template_error", "the chat template failed: %s",
                   error->message);
      goto out;
    }
  /* the template writes the special tokens itself: parse them in its output */
  ids = bln_tokenizer_encode (tok, prompt, -1, FALSE, TRUE, &error);
  if (ids == NULL || ids->len == 0)
    {
      reply_error (msg, 400, "messages", "invalid_value", "%s",
                   error ? error->message : "the prompt is empty");
      goto out;
    }
  room = n_ctx - (int) ids->len;
  if (room < 1 || (p.max_tokens > 0 && p.max_tokens > room))
    {
      reply_error (msg, 400, "messages", "context_length_exceeded",
                   "this model's context is %d tokens; the messages take %u and %d more were "
                   "asked for", n_ctx, ids->len, p.max_tokens > 0 ? p.max_tokens : 1);
      goto out;
    }

  cr = g_new0 (ChatReq, 1);
  cr->srv = srv;
  cr->msg = g_object_ref (msg);
  cr->stream = p.stream;
  cr->include_usage = p.include_usage;
  cr->id = g_strdup_printf ("chatcmpl-%08x%08x", g_random_int (), g_random_int ());
  cr->created = g_get_real_time () / G_USEC_PER_SEC;
  cr->text = g_string_new (NULL);
  cr->gen = bln_gen_request_new (ids, &p.sp, p.max_tokens > 0 ? p.max_tokens : room,
                                 (const char *const *) p.stops->pdata,
                                 g_main_context_get_thread_default (), on_gen_text, on_gen_done,
                                 cr);
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
      soup_message_headers_set_encoding (h, SOUP_ENCODING_CHUNKED);
      /* headers and the role chunk go out at once */
      json_object_set_string_member (delta, "role", "assistant");
      json_object_set_string_member (delta, "content", "");
      sse_send (cr, chunk_object (cr, delta, NULL, NULL), NULL);
    }
  watch_client (cr);
  bln_engine_worker_submit (srv->worker, cr->gen);

out:
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
  JsonObject *m = json_object_new ();

  json_object_set_string_member (m, "id", srv->model_id);
  json_object_set_string_member (m, "object", "model");
  json_object_set_int_member (m, "created", srv->created);
  json_object_set_string_member (m, "owned_by", "baleen");
  json_array_add_object_element (data, m);
  json_object_set_string_member (root, "object", "list");
  json_object_set_array_member (root, "data", data);
  reply_json (msg, 200, root);
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
  if (!auth_ok (srv, msg))
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
  if (!g_str_equal (route, "/chat/completions") && !g_str_equal (route, "/chat/completions/"))
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
  handle_chat (srv, msg, json_node_get_object (json_parser_get_root (parser)));
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

BlnServer *
bln_server_new (BlnEngineWorker *worker, const BlnServerOptions *options, GError **error)
{
  const char *host = options->host ? options->host : "127.0.0.1";
  g_autoptr (GInetAddress) addr = NULL;
  g_autoptr (GSocketAddress) sa = NULL;
  BlnServer *srv;
  GSList *uris;
  const char *name;
  g_autofree char *stem = NULL;

  if (g_ascii_strcasecmp (host, "localhost") == 0)
    host = "127.0.0.1";
  addr = g_inet_address_new_from_string (host);
  if (addr == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "--host must be an IP address (got '%s')", host);
      return NULL;
    }
  if (!host_is_loopback (host) && (options->api_key == NULL || !*options->api_key))
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
  srv->worker = worker;
  srv->api_key = options->api_key && *options->api_key ? g_strdup (options->api_key) : NULL;
  srv->max_body = options->max_body ? options->max_body : DEFAULT_MAX_BODY;
  srv->created = g_get_real_time () / G_USEC_PER_SEC;
  srv->active = g_hash_table_new (NULL, NULL);
  name = bln_model_name (bln_engine_worker_model (worker));
  if (name == NULL || !*name)
    {
      stem = g_path_get_basename (bln_model_path (bln_engine_worker_model (worker)));
      if (g_str_has_suffix (stem, ".gguf"))
        stem[strlen (stem) - 5] = '\0';
      name = stem;
    }
  srv->model_id = bln_server_model_id_from_name (name);
  srv->soup = soup_server_new ("server-header", "baleen/" BALEEN_VERSION, NULL);
  soup_server_add_handler (srv->soup, NULL, server_callback, srv, NULL);
  sa = g_inet_socket_address_new (addr, (guint16) options->port);
  if (!soup_server_listen (srv->soup, sa, 0, error))
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
  return g_hash_table_size (srv->active);
}

void
bln_server_shutdown (BlnServer *srv)
{
  GHashTableIter it;
  gpointer key;

  if (srv->shut_down)
    return;
  srv->shut_down = TRUE;
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
  g_hash_table_unref (srv->active);
  g_free (srv->url);
  g_free (srv->model_id);
  g_free (srv->api_key);
  g_free (srv);
}
