/* test-safety.c — the server-facing safety API: key policy, rate limits,
 * input rules, the configured stream filter, and audit records, including a
 * full database while recording. */
#include <glib.h>
#include <libsoup/soup.h>
#include <string.h>

#include "bln-error.h"
#include "safety.h"
#include "safety-test-util.h"

static const char *
header (char **h, const char *name)
{
  for (guint i = 0; h && h[i] && h[i + 1]; i += 2)
    if (g_ascii_strcasecmp (h[i], name) == 0)
      return h[i + 1];
  return NULL;
}

static void
test_request_checks (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "s.db", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnSafety) s = bln_safety_new (path, &error);
  BlnSettings *st;
  g_autofree char *key = NULL;
  const char *texts[] = { "hello", "my password is hunter2", NULL };
  BlnSafetyRequest req = { 0 };
  BlnSafetyVerdict v = { 0 };
  BlnRule r = { 0 };

  g_assert_no_error (error);
  st = bln_safety_settings (s);
  key = bln_keys_create (bln_safety_db (s), "app", 0, 0, NULL, &error);
  g_assert_no_error (error);
  req.texts = texts;
  req.client = "192.0.2.1";
  req.est_tokens = 10;

  /* remote clients need a key; loopback ones do not */
  g_assert_false (bln_safety_check_request (s, &req, &v));
  g_assert_cmpuint (v.status, ==, 401);
  g_assert_cmpstr (v.code, ==, "invalid_api_key");
  bln_safety_verdict_clear (&v);
  memset (&v, 0, sizeof v);
  req.loopback = TRUE;
  g_assert_true (bln_safety_check_request (s, &req, &v));
  bln_safety_verdict_clear (&v);
  memset (&v, 0, sizeof v);
  req.api_key = "bln-wrong-key-wrong-key";
  g_assert_false (bln_safety_check_request (s, &req, &v));
  g_assert_cmpuint (v.status, ==, 401);
  bln_safety_verdict_clear (&v);
  memset (&v, 0, sizeof v);
  req.api_key = key;
  req.loopback = FALSE;
  g_assert_true (bln_safety_check_request (s, &req, &v));
  g_assert_cmpint (v.key_id, >, 0);
  g_assert_null (v.texts);
  bln_safety_verdict_clear (&v);
  memset (&v, 0, sizeof v);

  /* per-address limit: two per minute */
  g_assert_true (bln_settings_set_int (st, "ratelimit.client_rpm", 2, &error));
  req.client = "192.0.2.2";
  g_assert_true (bln_safety_check_request (s, &req, &v));
  g_assert_cmpstr (header (v.headers, "x-ratelimit-remaining-requests"), ==, "1");
  bln_safety_verdict_clear (&v);
  memset (&v, 0, sizeof v);
  g_assert_true (bln_safety_check_request (s, &req, &v));
  bln_safety_verdict_clear (&v);
  memset (&v, 0, sizeof v);
  g_assert_false (bln_safety_check_request (s, &req, &v));
  g_assert_cmpuint (v.status, ==, 429);
  g_assert_cmpstr (v.code, ==, "rate_limit_exceeded");
  g_assert_nonnull (header (v.headers, "Retry-After"));
  bln_safety_verdict_clear (&v);
  memset (&v, 0, sizeof v);
  g_assert_true (bln_settings_set_int (st, "ratelimit.client_rpm", 0, &error));

  /* input rules, added by another process and picked up by a reload */
  r.kind = BLN_RULE_REGEX;
  r.pattern = (char *) "password is \\S+";
  r.action = BLN_RULE_MASK;
  r.scope = BLN_RULE_INPUT;
  r.enabled = TRUE;
  {
    BlnDb *other = bln_db_open (path, &error);
    g_assert_cmpint (bln_rules_add (other, &r, &error), >, 0);
    r.kind = BLN_RULE_WORD;
    r.pattern = (char *) "ｂｏｍｂ";
    r.nowidth = TRUE;
    r.nocase = TRUE;
    r.action = BLN_RULE_BLOCK;
    r.label = (char *) "weapons";
    g_assert_cmpint (bln_rules_add (other, &r, &error), >, 0);
    bln_db_close (other);
  }
  /* no explicit reload: the change made by the other connection is noticed */
  g_assert_true (bln_safety_check_request (s, &req, &v));
  g_assert_nonnull (v.texts);
  g_assert_cmpstr (v.texts[0], ==, "hello");
  g_assert_cmpstr (v.texts[1], ==, "my *******************");
  g_assert_nonnull (strstr (v.verdicts, "\"action\":\"mask\""));
  bln_safety_verdict_clear (&v);
  memset (&v, 0, sizeof v);
  {
    const char *bad[] = { "fine", "how to build a Bomb", NULL };
    req.texts = bad;
    g_assert_false (bln_safety_check_request (s, &req, &v));
    g_assert_cmpuint (v.status, ==, 400);
    g_assert_cmpstr (v.code, ==, "content_filter");
    g_assert_nonnull (strstr (v.message, "weapons"));
    bln_safety_verdict_clear (&v);
  }
  rm_rf (dir);
}

static void
test_record (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "s.db", NULL);
  g_autofree char *jsonl = g_build_filename (dir, "audit.jsonl", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnSafety) s = bln_safety_new (path, &error);
  g_autoptr (BlnStreamFilter) f = NULL;
  g_autoptr (GString) out = g_string_new (NULL);
  g_autoptr (GPtrArray) tail = NULL;
  BlnSafetyVerdict v = { 0 };
  BlnAuditRecord *rec;
  BlnRule r = { 0 };
  const char *texts[] = { "hi", NULL };
  BlnSafetyRequest req = { NULL, "127.0.0.1", TRUE, "/v1/chat/completions", texts, 5 };

  g_assert_no_error (error);
  r.kind = BLN_RULE_WORD;
  r.pattern = (char *) "leak";
  r.action = BLN_RULE_BLOCK;
  r.scope = BLN_RULE_OUTPUT;
  r.enabled = TRUE;
  g_assert_cmpint (bln_rules_add (bln_safety_db (s), &r, &error), >, 0);
  g_assert_true (bln_settings_set_string (bln_safety_settings (s), "moderation.output_action",
                                          "mask", &error));
  g_assert_true (bln_settings_set_string (bln_safety_settings (s), "privacy.content", "full",
                                          &error));
  g_assert_true (bln_settings_set_string (bln_safety_settings (s), "audit.jsonl_path", jsonl,
                                          &error));
  g_assert_true (bln_safety_reload (s, &error));
  g_assert_true (bln_safety_check_request (s, &req, &v));

  f = bln_safety_stream_filter_new (s);
  g_assert_true (bln_stream_filter_push (f, "no le", -1, out));
  g_assert_true (bln_stream_filter_push (f, "aks here", -1, out));
  g_assert_true (bln_stream_filter_finish (f, out));
  g_assert_cmpstr (out->str, ==, "no ****s here");

  rec = g_new0 (BlnAuditRecord, 1);
  rec->request_id = g_strdup ("chatcmpl-1");
  rec->endpoint = g_strdup ("/v1/chat/completions");
  rec->client = g_strdup ("127.0.0.1");
  rec->prompt = g_strdup ("hi");
  rec->completion = g_strdup (out->str);
  rec->prompt_tokens = 1;
  rec->completion_tokens = 4;
  rec->finish_reason = g_strdup ("stop");
  g_assert_true (bln_safety_record (s, &v, f, rec, &error));
  g_assert_no_error (error);
  bln_audit_record_free (rec);

  tail = bln_audit_tail (bln_safety_db (s), 1, &error);
  g_assert_cmpuint (tail->len, ==, 1);
  rec = tail->pdata[0];
  g_assert_cmpstr (rec->completion, ==, "no ****s here");
  g_assert_nonnull (strstr (rec->verdicts, "\"output\":[{\"rule\":1,\"action\":\"mask\""));
  g_assert_true (g_file_test (jsonl, G_FILE_TEST_EXISTS));

  /* the database fills up: the record fails and says so; nothing else breaks */
  g_assert_true (bln_db_exec (bln_safety_db (s), "PRAGMA max_page_count = 1", &error));
  rec = g_new0 (BlnAuditRecord, 1);
  rec->completion = g_strnfill (100000, 'z');
  rec->privacy = NULL;
  g_assert_false (bln_safety_record (s, &v, f, rec, &error));
  g_assert_error (error, BLN_DB_ERROR, BLN_DB_ERROR_FULL);
  bln_audit_record_free (rec);
  g_clear_error (&error);
  g_assert_true (bln_db_check_integrity (bln_safety_db (s), TRUE, &error));
  bln_safety_verdict_clear (&v);
  rm_rf (dir);
}

/* ---- the HTTP glue, with an in-process server ----------------------------- */

typedef struct {
  BlnSafety *safety;
  GMainLoop *loop;
  SoupSession *session;
  gboolean mod_flag;        /* the moderation endpoint flags everything */
  guint mod_status;         /* its HTTP status */
} Fixture;

typedef struct {
  Fixture *fx;
  SoupServerMessage *msg;
  BlnSafetyCall *call;
  GString *out;
} Pending;

static void
reply_json (SoupServerMessage *msg, const char *json)
{
  soup_server_message_set_status (msg, 200, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_COPY, json,
                                    strlen (json));
}

static void
on_call_moderated (GObject *src, GAsyncResult *res, gpointer data)
{
  Pending *p = data;
  gboolean allowed = bln_safety_call_moderate_finish (p->call, res);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autofree char *json = NULL;
  const char *finish = bln_safety_call_filtered (p->call) ? "content_filter" : "stop";

  /* the answer was held for the service: now it goes out, unless withheld */
  g_assert_false (bln_safety_call_needs_moderation (p->call));
  bln_safety_call_release (p->call, p->out);
  bln_safety_call_release (p->call, p->out);   /* once only */

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "content");
  json_builder_add_string_value (b, p->out->str);
  json_builder_set_member_name (b, "finish");
  json_builder_add_string_value (b, finish);
  json_builder_set_member_name (b, "allowed");
  json_builder_add_boolean_value (b, allowed);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json = json_generator_to_data (gen, NULL);
  bln_safety_call_end (p->call, "req-1", finish, 3, 4, 0);
  reply_json (p->msg, json);
  soup_server_message_unpause (p->msg);
  bln_safety_call_free (p->call);
  g_string_free (p->out, TRUE);
  g_object_unref (p->msg);
  g_free (p);
}

/* POST /chat {"messages": [...], "pieces": ["..", ..]}: the pieces play the
 * generated tokens. */
static void
chat_handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
              gpointer data)
{
  Fixture *fx = data;
  g_autoptr (GBytes) body = soup_message_body_flatten (soup_server_message_get_request_body (msg));
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *o;
  JsonArray *pieces;
  Pending *p;

  g_assert_true (json_parser_load_from_data (parser, g_bytes_get_data (body, NULL),
                                             g_bytes_get_size (body), NULL));
  o = json_node_get_object (json_parser_get_root (parser));
  p = g_new0 (Pending, 1);
  p->fx = fx;
  p->call = bln_safety_call_begin (fx->safety, msg, "/chat", "tiny",
                                   json_object_get_member (o, "messages"), 10);
  if (!p->call)
    {
      g_free (p);
      return;
    }
  pieces = json_object_get_array_member (o, "pieces");
  if (json_object_has_member (o, "twice"))
    {
      /* two answers to one request: a clone each, one audit row each */
      for (int k = 0; k < 2; k++)
        {
          BlnSafetyCall *c = bln_safety_call_clone (p->call);
          g_autoptr (GString) out = g_string_new (NULL);
          g_autofree char *id = g_strdup_printf ("twice-%d", k);

          for (guint i = 0; i < json_array_get_length (pieces); i++)
            bln_safety_call_filter (c, json_array_get_string_element (pieces, i), out);
          bln_safety_call_flush (c, out);
          bln_safety_call_end (c, id, "stop", 1, 1, 0);
          bln_safety_call_free (c);
        }
      bln_safety_call_end (p->call, "original", "stop", 0, 0, 0); /* no row: cloned */
      bln_safety_call_free (p->call);
      g_free (p);
      reply_json (msg, "{}");
      return;
    }
  p->msg = g_object_ref (msg);
  p->out = g_string_new (NULL);
  for (guint i = 0; i < json_array_get_length (pieces); i++)
    if (!bln_safety_call_filter (p->call, json_array_get_string_element (pieces, i), p->out))
      break;
  if (!bln_safety_call_filtered (p->call))
    bln_safety_call_flush (p->call, p->out);
  if (bln_safety_call_needs_moderation (p->call))
    g_assert_cmpuint (p->out->len, ==, 0);   /* held back whole for the service */
  soup_server_message_pause (msg);
  bln_safety_call_moderate_async (p->call, fx->session, NULL, on_call_moderated, p);
}

static void
moderation_handler (SoupServer *server, SoupServerMessage *msg, const char *path,
                    GHashTable *query, gpointer data)
{
  Fixture *fx = data;
  const char *flagged = "{\"results\":[{\"flagged\":true,\"categories\":{\"harm\":true}}]}";
  const char *clean = "{\"results\":[{\"flagged\":false,\"categories\":{\"harm\":false}}]}";

  if (fx->mod_status != 200)
    {
      soup_server_message_set_status (msg, fx->mod_status, NULL);
      return;
    }
  reply_json (msg, fx->mod_flag ? flagged : clean);
}

typedef struct {
  GMainLoop *loop;
  guint status;
  char *body;
  SoupMessageHeaders *headers;
} Reply;

static void
on_reply (GObject *src, GAsyncResult *res, gpointer data)
{
  Reply *r = data;
  SoupMessage *m = soup_session_get_async_result_message (SOUP_SESSION (src), res);
  g_autoptr (GBytes) b = soup_session_send_and_read_finish (SOUP_SESSION (src), res, NULL);

  r->status = soup_message_get_status (m);
  r->headers = soup_message_headers_ref (soup_message_get_response_headers (m));
  r->body = b ? g_strndup (g_bytes_get_data (b, NULL), g_bytes_get_size (b)) : g_strdup ("");
  g_main_loop_quit (r->loop);
}

static void
request (Fixture *fx, const char *url, const char *json, const char *key, Reply *r)
{
  g_autoptr (SoupMessage) m = soup_message_new ("POST", url);
  g_autoptr (GBytes) body = g_bytes_new (json, strlen (json));

  memset (r, 0, sizeof *r);
  r->loop = fx->loop;
  soup_message_set_request_body_from_bytes (m, "application/json", body);
  if (key)
    soup_message_headers_replace (soup_message_get_request_headers (m), "X-Api-Key", key);
  soup_session_send_and_read_async (fx->session, m, G_PRIORITY_DEFAULT, NULL, on_reply, r);
  g_main_loop_run (fx->loop);
}

static void
reply_clear (Reply *r)
{
  g_free (r->body);
  soup_message_headers_unref (r->headers);
}

static void
test_http_glue (void)
{
  g_autofree char *dir = tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "h.db", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (SoupServer) server = soup_server_new (NULL, NULL);
  g_autoptr (GSList) uris = NULL;
  g_autofree char *base = NULL;
  g_autofree char *chat = NULL;
  g_autofree char *mod = NULL;
  g_autofree char *key = NULL;
  g_autoptr (GPtrArray) tail = NULL;
  BlnSettings *st;
  Fixture fx = { 0 };
  Reply r;
  BlnRule rule = { 0 };
  const char *body =
    "{\"messages\":[{\"role\":\"system\",\"content\":\"be nice\"},"
    "{\"role\":\"user\",\"content\":\"my pin is 1234\"}],"
    "\"pieces\":[\"The sec\",\"ret wo\",\"rd is here\"]}";

  fx.safety = bln_safety_new (path, &error);
  g_assert_no_error (error);
  fx.loop = g_main_loop_new (NULL, FALSE);
  fx.session = soup_session_new ();
  fx.mod_status = 200;
  st = bln_safety_settings (fx.safety);
  soup_server_add_handler (server, "/chat", chat_handler, &fx, NULL);
  soup_server_add_handler (server, "/v1/moderations", moderation_handler, &fx, NULL);
  g_assert_true (soup_server_listen_local (server, 0, SOUP_SERVER_LISTEN_IPV4_ONLY, &error));
  uris = soup_server_get_uris (server);
  base = g_uri_to_string (uris->data);
  g_slist_free_full (g_steal_pointer (&uris), (GDestroyNotify) g_uri_unref);
  chat = g_strconcat (base, "chat", NULL);
  mod = g_strconcat (base, "v1/moderations", NULL);

  rule.kind = BLN_RULE_WORD;
  rule.pattern = (char *) "secret word";
  rule.action = BLN_RULE_BLOCK;
  rule.scope = BLN_RULE_OUTPUT;
  rule.enabled = TRUE;
  g_assert_cmpint (bln_rules_add (bln_safety_db (fx.safety), &rule, &error), >, 0);
  rule.kind = BLN_RULE_REGEX;
  rule.pattern = (char *) "\\d{4}";
  rule.action = BLN_RULE_MASK;
  rule.scope = BLN_RULE_INPUT;
  g_assert_cmpint (bln_rules_add (bln_safety_db (fx.safety), &rule, &error), >, 0);
  g_assert_true (bln_safety_reload (fx.safety, &error));
  g_assert_true (bln_settings_set_string (st, "privacy.content", "full", &error));
  g_assert_true (bln_settings_set_int (st, "ratelimit.client_rpm", 3, &error));
  g_assert_true (bln_settings_set_string (st, "moderation.endpoint", mod, &error));

  /* 1: the phrase split over three pieces stops the answer; the moderation
   * service passes it; the input was masked before anything saw it */
  request (&fx, chat, body, NULL, &r);
  g_assert_cmpuint (r.status, ==, 200);
  g_assert_cmpstr (r.body, ==, "{\"content\":\"The \",\"finish\":\"content_filter\","
                               "\"allowed\":true}");
  g_assert_cmpstr (soup_message_headers_get_one (r.headers, "x-ratelimit-limit-requests"), ==,
                   "3");
  reply_clear (&r);
  tail = bln_audit_tail (bln_safety_db (fx.safety), 1, &error);
  g_assert_cmpstr (((BlnAuditRecord *) tail->pdata[0])->prompt, ==, "be nice\nmy pin is ****");
  g_assert_cmpstr (((BlnAuditRecord *) tail->pdata[0])->completion, ==, "The ");
  g_assert_nonnull (strstr (((BlnAuditRecord *) tail->pdata[0])->verdicts,
                            "\"moderation\":{\"allowed\":true,\"flagged\":false"));
  g_clear_pointer (&tail, g_ptr_array_unref);

  /* 2: flagged by the service */
  fx.mod_flag = TRUE;
  request (&fx, chat, "{\"messages\":[],\"pieces\":[\"fine\"]}", NULL, &r);
  g_assert_cmpstr (r.body, ==, "{\"content\":\"\",\"finish\":\"content_filter\","
                               "\"allowed\":false}");
  reply_clear (&r);
  tail = bln_audit_tail (bln_safety_db (fx.safety), 1, &error);
  g_assert_cmpstr (((BlnAuditRecord *) tail->pdata[0])->completion, ==, "fine");  /* withheld */
  g_clear_pointer (&tail, g_ptr_array_unref);

  /* 3: the service fails: logged; fail closed withholds */
  fx.mod_status = 503;
  g_assert_true (bln_settings_set_string (st, "moderation.failure", "closed", &error));
  g_test_expect_message ("baleen-core", G_LOG_LEVEL_MESSAGE, "*HTTP 503*");
  request (&fx, chat, "{\"messages\":[],\"pieces\":[\"fine\"]}", NULL, &r);
  g_test_assert_expected_messages ();
  g_assert_cmpstr (r.body, ==, "{\"content\":\"\",\"finish\":\"content_filter\","
                               "\"allowed\":false}");
  reply_clear (&r);
  tail = bln_audit_tail (bln_safety_db (fx.safety), 1, &error);
  g_assert_nonnull (strstr (((BlnAuditRecord *) tail->pdata[0])->verdicts,
                            "\"policy\":\"fail-closed\""));
  g_clear_pointer (&tail, g_ptr_array_unref);

  /* 4: the fourth request of the minute: 429, with the OpenAI error shape */
  request (&fx, chat, "{\"messages\":[],\"pieces\":[]}", NULL, &r);
  g_assert_cmpuint (r.status, ==, 429);
  g_assert_nonnull (strstr (r.body, "\"code\":\"rate_limit_exceeded\""));
  g_assert_nonnull (soup_message_headers_get_one (r.headers, "Retry-After"));
  reply_clear (&r);

  /* 5: keys through X-Api-Key when they are required */
  g_assert_true (bln_settings_set_int (st, "ratelimit.client_rpm", 0, &error));
  g_assert_true (bln_settings_set_string (st, "auth.require_key", "always", &error));
  g_assert_true (bln_settings_set_string (st, "moderation.endpoint", "", &error));
  key = bln_keys_create (bln_safety_db (fx.safety), "glue", 0, 0, NULL, &error);
  request (&fx, chat, "{\"messages\":[],\"pieces\":[\"a\"]}", NULL, &r);
  g_assert_cmpuint (r.status, ==, 401);
  reply_clear (&r);
  request (&fx, chat, "{\"messages\":[],\"pieces\":[\"a\"]}", key, &r);
  g_assert_cmpuint (r.status, ==, 200);
  reply_clear (&r);
  g_assert_cmpint (bln_audit_count (bln_safety_db (fx.safety), &error), ==, 6);

  /* 6: two answers to one request, each filtered and recorded once */
  request (&fx, chat, "{\"twice\":1,\"messages\":[],\"pieces\":[\"x secr\",\"et\"]}",
           key, &r);
  g_assert_cmpuint (r.status, ==, 200);
  reply_clear (&r);
  g_assert_cmpint (bln_audit_count (bln_safety_db (fx.safety), &error), ==, 8);
  tail = bln_audit_tail (bln_safety_db (fx.safety), 2, &error);
  g_assert_cmpstr (((BlnAuditRecord *) tail->pdata[0])->request_id, ==, "twice-0");
  g_assert_cmpstr (((BlnAuditRecord *) tail->pdata[1])->request_id, ==, "twice-1");
  g_assert_cmpstr (((BlnAuditRecord *) tail->pdata[1])->completion, ==, "x secret");
  g_clear_pointer (&tail, g_ptr_array_unref);

  soup_server_disconnect (server);
  g_object_unref (fx.session);
  g_main_loop_unref (fx.loop);
  bln_safety_free (fx.safety);
  rm_rf (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Safety/request-checks", test_request_checks);
  g_test_add_func ("/Baleen/Safety/record", test_record);
  g_test_add_func ("/Baleen/Safety/http-glue", test_http_glue);
  return g_test_run ();
}
