/* safety.c — keys, limits, rules, output filter and audit, for the server. */
#include "safety.h"

#include <string.h>

#include "bln-error.h"

#define PRUNE_EVERY 500 /* records between two retention passes */

struct _BlnSafety {
  BlnDb *db;
  BlnSettings *settings;
  BlnRuleSet *input_rules;
  BlnRuleSet *output_rules;
  BlnRateLimiter *limiter;
  char *limiter_url;       /* the Redis URL the limiter uses; "" in-process */
  guint since_prune;
  gint64 data_version;     /* PRAGMA data_version when settings and rules were loaded */
};

/* PRAGMA data_version: changes whenever another connection (baleen-cli, the
 * desktop app) commits to the database; -1 on error. */
static gint64
data_version (BlnDb *db)
{
  sqlite3_stmt *st = bln_db_prepare (db, "PRAGMA data_version", NULL);
  gint64 v = -1;

  if (st && sqlite3_step (st) == SQLITE_ROW)
    v = sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  return v;
}

/* Reloads settings and rules when another process changed the database. */
static void
refresh (BlnSafety *s)
{
  g_autoptr (GError) error = NULL;
  gint64 v = data_version (s->db);

  if (v < 0 || v == s->data_version)
    return;
  if (!bln_safety_reload (s, &error))
    g_message ("keeping the previous safety settings: %s", error->message);
}

BlnDb *
bln_safety_db (BlnSafety *s)
{
  return s->db;
}

BlnSettings *
bln_safety_settings (BlnSafety *s)
{
  return s->settings;
}

/* (Re)creates the limiter when the Redis URL changed. */
static void
setup_limiter (BlnSafety *s)
{
  g_autofree char *url = bln_settings_get_string (s->settings, "ratelimit.redis_url");
  g_autoptr (GError) error = NULL;
  BlnRateLimiter *rl = NULL;

  if (s->limiter && g_strcmp0 (url, s->limiter_url) == 0)
    return;
  if (url && *url)
    {
      rl = bln_rate_limiter_new_redis (url, NULL, &error);
      if (!rl)
        g_message ("rate limits stay in-process: %s", error->message);
    }
  if (!rl)
    rl = bln_rate_limiter_new_memory ();
  g_clear_pointer (&s->limiter, bln_rate_limiter_free);
  g_free (s->limiter_url);
  s->limiter = rl;
  s->limiter_url = g_strdup (url ? url : "");
}

static void
on_setting_changed (BlnSettings *settings, const char *key, gpointer data)
{
  if (g_strcmp0 (key, "ratelimit.redis_url") == 0)
    setup_limiter (data);
}

gboolean
bln_safety_reload (BlnSafety *s, GError **error)
{
  BlnRuleSet *in, *out;

  if (!bln_settings_reload (s->settings, error))
    return FALSE;
  in = bln_rule_set_load (s->db, BLN_RULE_INPUT, error);
  if (!in)
    return FALSE;
  out = bln_rule_set_load (s->db, BLN_RULE_OUTPUT, error);
  if (!out)
    {
      bln_rule_set_free (in);
      return FALSE;
    }
  g_clear_pointer (&s->input_rules, bln_rule_set_free);
  g_clear_pointer (&s->output_rules, bln_rule_set_free);
  s->input_rules = in;
  s->output_rules = out;
  s->data_version = data_version (s->db);
  return TRUE;
}

BlnSafety *
bln_safety_new (const char *db_path, GError **error)
{
  g_autoptr (BlnSafety) s = g_new0 (BlnSafety, 1);

  s->db = bln_db_open (db_path, error);
  if (!s->db)
    return NULL;
  s->settings = bln_settings_new (s->db, error);
  if (!s->settings || !bln_safety_reload (s, error))
    return NULL;
  setup_limiter (s);
  g_signal_connect (s->settings, "changed", G_CALLBACK (on_setting_changed), s);
  s->since_prune = PRUNE_EVERY - 1; /* apply the retention with the first record */
  return g_steal_pointer (&s);
}

void
bln_safety_free (BlnSafety *s)
{
  if (!s)
    return;
  if (s->settings)
    g_signal_handlers_disconnect_by_data (s->settings, s);
  g_clear_pointer (&s->input_rules, bln_rule_set_free);
  g_clear_pointer (&s->output_rules, bln_rule_set_free);
  g_clear_pointer (&s->limiter, bln_rate_limiter_free);
  g_clear_object (&s->settings);
  g_clear_pointer (&s->db, bln_db_close);
  g_free (s->limiter_url);
  g_free (s);
}

void
bln_safety_verdict_clear (BlnSafetyVerdict *v)
{
  g_clear_pointer (&v->code, g_free);
  g_clear_pointer (&v->message, g_free);
  g_clear_pointer (&v->headers, g_strfreev);
  g_clear_pointer (&v->texts, g_strfreev);
  g_clear_pointer (&v->key_bucket, g_free);
  g_clear_pointer (&v->client_bucket, g_free);
  g_clear_pointer (&v->verdicts, g_free);
  g_clear_pointer (&v->moderation, g_free);
}

static gboolean
refuse (BlnSafetyVerdict *out, guint status, const char *code, const char *message)
{
  out->status = status;
  out->code = g_strdup (code);
  out->message = g_strdup (message);
  return FALSE;
}

/* Applies one bucket; FALSE when it refuses. Keeps the tighter headers. */
static gboolean
limit (BlnSafety *s, BlnSafetyVerdict *out, const char *bucket, gint64 rpm, gint64 tpm,
       gint64 tokens)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *failure = NULL;
  BlnRateDecision d;

  if (rpm <= 0 && tpm <= 0)
    return TRUE;
  if (!bln_rate_limiter_check (s->limiter, bucket, rpm, tpm, tokens, &d, &error))
    {
      failure = bln_settings_get_string (s->settings, "ratelimit.redis_failure");
      g_message ("rate limiter failed (%s policy): %s", failure, error->message);
      if (g_strcmp0 (failure, "closed") == 0)
        return refuse (out, 503, "service_unavailable",
                       "the rate limiter is unavailable; try again later");
      return TRUE;
    }
  if (!out->headers || !d.allowed)
    {
      g_clear_pointer (&out->headers, g_strfreev);
      out->headers = bln_rate_decision_headers (&d);
    }
  if (!d.allowed)
    return refuse (out, 429, "rate_limit_exceeded",
                   "rate limit reached; retry after the time in the Retry-After header");
  return TRUE;
}

gboolean
bln_safety_check_request (BlnSafety *s, const BlnSafetyRequest *req, BlnSafetyVerdict *out)
{
  g_autofree char *require = NULL;
  g_autoptr (GArray) all = g_array_new (FALSE, FALSE, sizeof (BlnRuleMatch));
  gint64 rpm, tpm;
  gboolean any_mask = FALSE;
  guint n_texts = 0;

  refresh (s);
  require = bln_settings_get_string (s->settings, "auth.require_key");

  /* 1. the key */
  if (req->api_key && *req->api_key)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (BlnKeyInfo) info = bln_keys_verify (s->db, req->api_key, &error);
      if (!info)
        {
          if (error->domain == BLN_DB_ERROR)
            {
              g_message ("cannot check an API key: %s", error->message);
              return refuse (out, 503, "service_unavailable",
                             "the key database is unavailable; try again later");
            }
          return refuse (out, 401, "invalid_api_key", "invalid API key");
        }
      out->key_id = info->id;
      rpm = info->rpm > 0 ? info->rpm : bln_settings_get_int (s->settings, "ratelimit.key_rpm");
      tpm = info->tpm > 0 ? info->tpm : bln_settings_get_int (s->settings, "ratelimit.key_tpm");
      out->key_bucket = g_strdup_printf ("key:%" G_GINT64_FORMAT, info->id);
      out->key_tpm = tpm;
      if (!limit (s, out, out->key_bucket, rpm, tpm, req->est_tokens))
        return FALSE;
    }
  else if (g_strcmp0 (require, "always") == 0 ||
           (g_strcmp0 (require, "remote") == 0 && !req->loopback))
    return refuse (out, 401, "invalid_api_key", "an API key is required");

  /* 2. the client address */
  out->client_bucket = g_strconcat ("addr:", req->client ? req->client : "", NULL);
  out->client_tpm = bln_settings_get_int (s->settings, "ratelimit.client_tpm");
  if (!limit (s, out, out->client_bucket, bln_settings_get_int (s->settings,
                                                                "ratelimit.client_rpm"),
              out->client_tpm, req->est_tokens))
    return FALSE;

  /* 3. the input rules, on every text */
  for (const char *const *t = req->texts; t && *t; t++)
    n_texts++;
  for (guint i = 0; i < n_texts; i++)
    {
      g_autoptr (GArray) m = bln_rule_set_scan (s->input_rules, req->texts[i], -1);
      for (guint j = 0; j < m->len; j++)
        {
          BlnRuleMatch *x = &g_array_index (m, BlnRuleMatch, j);
          if (x->action == BLN_RULE_MASK)
            any_mask = TRUE;
          g_array_append_val (all, *x);
        }
      for (guint j = 0; j < m->len; j++)
        if (g_array_index (m, BlnRuleMatch, j).action == BLN_RULE_BLOCK)
          {
            const BlnRule *r = bln_rule_set_get_rule (
              s->input_rules, g_array_index (m, BlnRuleMatch, j).rule_index);
            g_autofree char *msg = g_strdup_printf (
              "the request was blocked by content rule %" G_GINT64_FORMAT "%s%s%s", r->id,
              r->label && *r->label ? " (" : "", r->label ? r->label : "",
              r->label && *r->label ? ")" : "");
            out->verdicts = bln_rule_matches_to_json (all);
            return refuse (out, 400, "content_filter", msg);
          }
    }
  out->verdicts = bln_rule_matches_to_json (all);
  if (any_mask)
    {
      out->texts = g_new0 (char *, n_texts + 1);
      for (guint i = 0; i < n_texts; i++)
        {
          g_autoptr (GArray) m = bln_rule_set_scan (s->input_rules, req->texts[i], -1);
          out->texts[i] = bln_rule_mask_text (req->texts[i], -1, m);
        }
    }
  return TRUE;
}

BlnStreamFilter *
bln_safety_stream_filter_new (BlnSafety *s)
{
  g_autofree char *action = bln_settings_get_string (s->settings, "moderation.output_action");

  return bln_stream_filter_new (s->output_rules,
                                g_strcmp0 (action, "mask") == 0 ? BLN_OUTPUT_MASK
                                                                : BLN_OUTPUT_STOP,
                                bln_settings_get_int (s->settings, "moderation.regex_window"));
}

gboolean
bln_safety_record (BlnSafety *s, const BlnSafetyVerdict *v, BlnStreamFilter *filter,
                   BlnAuditRecord *rec, GError **error)
{
  g_autofree char *privacy_name = bln_settings_get_string (s->settings, "privacy.content");
  g_autofree char *jsonl = bln_settings_get_string (s->settings, "audit.jsonl_path");
  g_autofree char *verdicts = NULL;
  g_autoptr (GError) local = NULL;
  BlnPrivacy privacy = BLN_PRIVACY_HASHED;
  GString *vs;
  gboolean ok = TRUE;
  gint64 id;
  gint64 max_age_s = bln_settings_get_int (s->settings, "audit.retention_days") * 86400;
  gint64 max_rows = bln_settings_get_int (s->settings, "audit.max_rows");

  if (v)
    {
      gint64 used = rec->prompt_tokens + rec->completion_tokens;
      /* The estimate was taken at admission; charge what it missed. */
      if (v->key_bucket && v->key_tpm > 0)
        bln_rate_limiter_charge (s->limiter, v->key_bucket, v->key_tpm,
                                 MAX (0, used - rec->prompt_tokens), NULL);
      if (v->client_bucket && v->client_tpm > 0)
        bln_rate_limiter_charge (s->limiter, v->client_bucket, v->client_tpm,
                                 MAX (0, used - rec->prompt_tokens), NULL);
      if (!rec->key_id)
        rec->key_id = v->key_id;
    }
  if (!bln_settings_get_bool (s->settings, "audit.enabled"))
    return TRUE;
  bln_privacy_from_string (privacy_name, &privacy);

  /* {"input": [...], "output": [...]} */
  vs = g_string_new ("{\"input\":");
  g_string_append (vs, v && v->verdicts ? v->verdicts : "[]");
  g_string_append (vs, ",\"output\":");
  {
    g_autofree char *o = bln_rule_matches_to_json (filter ? bln_stream_filter_matches (filter)
                                                          : NULL);
    g_string_append (vs, o);
  }
  if (v && v->moderation)
    {
      g_string_append (vs, ",\"moderation\":");
      g_string_append (vs, v->moderation);
    }
  g_string_append_c (vs, '}');
  verdicts = g_string_free (vs, FALSE);
  if (!rec->verdicts)
    rec->verdicts = g_strdup (verdicts);

  id = bln_audit_write (s->db, rec, privacy, &local);
  if (id <= 0)
    {
      g_message ("audit record %s not written: %s", rec->request_id ? rec->request_id : "",
                 local->message);
      g_propagate_error (error, g_steal_pointer (&local));
      ok = FALSE;
    }
  if (jsonl && *jsonl && !bln_audit_append_jsonl (jsonl, rec, privacy, ok ? error : NULL))
    {
      g_message ("audit record %s not appended to %s", rec->request_id ? rec->request_id : "",
                 jsonl);
      ok = FALSE;
    }
  /* retention by age and count with every record (cheap), and now and then
   * the exact count (which walks max_rows index entries) */
  if (id > 0 && bln_audit_trim (s->db, id, max_age_s, max_rows, &local) < 0)
    {
      g_message ("audit log not trimmed: %s", local->message);
      g_clear_error (&local);
    }
  if (id > 0 && bln_audit_trim_bytes (s->db, bln_settings_get_int (s->settings, "audit.max_mb")
                                                * 1024 * 1024, &local) < 0)
    {
      g_message ("audit log not trimmed to its size: %s", local->message);
      g_clear_error (&local);
    }
  if (++s->since_prune >= PRUNE_EVERY)
    {
      s->since_prune = 0;
      if (bln_audit_prune (s->db, max_age_s, max_rows, &local) < 0)
        g_message ("audit log not pruned: %s", local ? local->message : "");
    }
  return ok;
}

/* ---- HTTP glue ----------------------------------------------------------- */

struct _BlnSafetyCall {
  BlnSafety *safety;       /* borrowed */
  BlnSafetyVerdict verdict;
  BlnStreamFilter *filter;
  char *client, *endpoint, *model, *prompt;
  GString *completion;     /* what passed the output filter */
  gint64 t_start, t_first;
  gboolean ended;
  gboolean cloned;         /* its clones write the records */
  gboolean hold;           /* a moderation endpoint is set: nothing goes out before it */
  gboolean moderated;      /* the endpoint has answered (or failed) */
  gboolean withheld;       /* ... and the answer may not be delivered */
  gboolean released;       /* bln_safety_call_release() has run */
};

static void
http_error (SoupServerMessage *msg, guint status, const char *code, const char *message,
            char **headers)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  const char *type = status == 429 ? "rate_limit_error"
                     : status == 401 ? "authentication_error"
                     : status >= 500 ? "server_error" : "invalid_request_error";
  char *json;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "error");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "message");
  json_builder_add_string_value (b, message ? message : "");
  json_builder_set_member_name (b, "type");
  json_builder_add_string_value (b, type);
  json_builder_set_member_name (b, "param");
  json_builder_add_null_value (b);
  json_builder_set_member_name (b, "code");
  json_builder_add_string_value (b, code ? code : "");
  json_builder_end_object (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json = json_generator_to_data (gen, NULL);
  for (guint i = 0; headers && headers[i] && headers[i + 1]; i += 2)
    soup_message_headers_replace (h, headers[i], headers[i + 1]);
  soup_message_headers_replace (h, "Access-Control-Allow-Origin", "*");
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_TAKE, json,
                                    strlen (json));
}

/* The key presented on @msg (Bearer or X-Api-Key), or NULL. Borrowed. */
static const char *
presented_key (SoupServerMessage *msg)
{
  SoupMessageHeaders *h = soup_server_message_get_request_headers (msg);
  const char *auth = soup_message_headers_get_one (h, "Authorization");

  if (auth && g_ascii_strncasecmp (auth, "Bearer ", 7) == 0)
    {
      auth += 7;
      while (*auth == ' ')
        auth++;
      if (*auth)
        return auth;
    }
  return soup_message_headers_get_one (h, "X-Api-Key");
}

static gboolean
client_is_loopback (SoupServerMessage *msg)
{
  GSocketAddress *a = soup_server_message_get_remote_address (msg);

  return a && G_IS_INET_SOCKET_ADDRESS (a) &&
         g_inet_address_get_is_loopback (
           g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (a)));
}

void
bln_safety_http_request (SoupServerMessage *msg, const char *query_key, BlnSafetyRequest *req)
{
  memset (req, 0, sizeof *req);
  req->api_key = presented_key (msg);
  if (!req->api_key || !*req->api_key)
    req->api_key = query_key;
  req->client = soup_server_message_get_remote_host (msg);
  req->loopback = client_is_loopback (msg);
  req->endpoint = soup_server_message_get_uri (msg) ? g_uri_get_path (
                    soup_server_message_get_uri (msg)) : "";
}

gboolean
bln_safety_http_check_key (BlnSafety *s, SoupServerMessage *msg, const char *query_key)
{
  BlnSafetyRequest req;
  BlnSafetyVerdict v = { 0 };
  gboolean ok;

  bln_safety_http_request (msg, query_key, &req);
  ok = bln_safety_check_request (s, &req, &v);
  if (!ok)
    http_error (msg, v.status, v.code, v.message, v.headers);
  bln_safety_verdict_clear (&v);
  return ok;
}

/* Whether a moderation endpoint is set (answers are then held back for it). */
static gboolean
moderation_configured (BlnSafety *s)
{
  g_autofree char *url = bln_settings_get_string (s->settings, "moderation.endpoint");

  return url && *url;
}

BlnSafetyCall *
bln_safety_call_admit (BlnSafety *s, const BlnSafetyRequest *req, const char *model,
                       gint64 max_tokens, BlnSafetyVerdict *refusal)
{
  BlnSafetyCall *c = g_new0 (BlnSafetyCall, 1);
  BlnSafetyRequest r = *req;
  gint64 chars = 0;
  gboolean ok;

  c->safety = s;
  c->t_start = g_get_monotonic_time ();
  c->client = g_strdup (req->client ? req->client : "");
  c->endpoint = g_strdup (req->endpoint ? req->endpoint : "");
  c->model = g_strdup (model ? model : "");
  c->completion = g_string_new (NULL);
  for (const char *const *t = req->texts; t && *t; t++)
    chars += strlen (*t);
  if (r.est_tokens <= 0)
    r.est_tokens = chars / 3 + MAX (max_tokens, 0);
  ok = bln_safety_check_request (s, &r, &c->verdict);
  if (c->verdict.texts)
    c->prompt = g_strjoinv ("\n", c->verdict.texts);
  else if (req->texts)
    c->prompt = g_strjoinv ("\n", (char **) req->texts);
  else
    c->prompt = g_strdup ("");
  if (!ok)
    {
      g_autofree char *reason = g_strconcat ("refused:", c->verdict.code, NULL);
      g_autofree char *id = g_strdup_printf ("refused-%08x%08x", g_random_int (),
                                             g_random_int ());
      bln_safety_call_end (c, id, reason, 0, 0, 0);
      if (refusal)
        {
          *refusal = c->verdict;
          memset (&c->verdict, 0, sizeof c->verdict);
        }
      bln_safety_call_free (c);
      return NULL;
    }
  c->filter = bln_safety_stream_filter_new (s);
  c->hold = moderation_configured (s);
  return c;
}

const char *const *
bln_safety_call_masked_texts (BlnSafetyCall *c)
{
  return (const char *const *) c->verdict.texts;
}

const char *const *
bln_safety_call_headers (BlnSafetyCall *c)
{
  return (const char *const *) c->verdict.headers;
}

void
bln_safety_collect_message_texts (JsonNode *messages, GPtrArray *texts, GPtrArray *owners,
                                  GPtrArray *members)
{
  JsonArray *arr = messages && JSON_NODE_HOLDS_ARRAY (messages)
                     ? json_node_get_array (messages) : NULL;

  for (guint i = 0; arr && i < json_array_get_length (arr); i++)
    {
      JsonNode *n = json_array_get_element (arr, i);
      JsonNode *content;
      JsonArray *parts;

      if (!JSON_NODE_HOLDS_OBJECT (n))
        continue;
      content = json_object_get_member (json_node_get_object (n), "content");
      if (content && JSON_NODE_HOLDS_VALUE (content)
          && json_node_get_value_type (content) == G_TYPE_STRING)
        {
          g_ptr_array_add (texts, (gpointer) json_node_get_string (content));
          g_ptr_array_add (owners, json_node_get_object (n));
          g_ptr_array_add (members, (gpointer) "content");
          continue;
        }
      if (!content || !JSON_NODE_HOLDS_ARRAY (content))
        continue;
      /* an array of parts: every text part */
      parts = json_node_get_array (content);
      for (guint k = 0; k < json_array_get_length (parts); k++)
        {
          JsonNode *pn = json_array_get_element (parts, k);
          JsonObject *part;
          JsonNode *text;

          if (!JSON_NODE_HOLDS_OBJECT (pn))
            continue;
          part = json_node_get_object (pn);
          text = json_object_get_member (part, "text");
          if (text && JSON_NODE_HOLDS_VALUE (text)
              && json_node_get_value_type (text) == G_TYPE_STRING)
            {
              g_ptr_array_add (texts, (gpointer) json_node_get_string (text));
              g_ptr_array_add (owners, part);
              g_ptr_array_add (members, (gpointer) "text");
            }
        }
    }
}

void
bln_safety_write_back_texts (const char *const *masked, GPtrArray *owners, GPtrArray *members)
{
  for (guint i = 0; masked && i < owners->len && i < members->len; i++)
    json_object_set_string_member (owners->pdata[i], members->pdata[i], masked[i]);
}

BlnSafetyCall *
bln_safety_call_begin (BlnSafety *s, SoupServerMessage *msg, const char *endpoint,
                       const char *model, JsonNode *messages, gint64 max_tokens)
{
  BlnSafetyCall *c;
  g_autoptr (GPtrArray) texts = g_ptr_array_new ();
  g_autoptr (GPtrArray) owners = g_ptr_array_new ();   /* JsonObject per text */
  g_autoptr (GPtrArray) members = g_ptr_array_new ();  /* ... and its member */
  BlnSafetyRequest req;
  BlnSafetyVerdict refusal = { 0 };

  bln_safety_collect_message_texts (messages, texts, owners, members);
  g_ptr_array_add (texts, NULL);

  bln_safety_http_request (msg, NULL, &req);
  req.endpoint = endpoint;
  req.texts = (const char *const *) texts->pdata;
  c = bln_safety_call_admit (s, &req, model, max_tokens, &refusal);
  if (!c)
    {
      http_error (msg, refusal.status, refusal.code, refusal.message, refusal.headers);
      bln_safety_verdict_clear (&refusal);
      return NULL;
    }
  bln_safety_write_back_texts ((const char *const *) c->verdict.texts, owners, members);
  for (guint i = 0; c->verdict.headers && c->verdict.headers[i] && c->verdict.headers[i + 1];
       i += 2)
    soup_message_headers_replace (soup_server_message_get_response_headers (msg),
                                  c->verdict.headers[i], c->verdict.headers[i + 1]);
  return c;
}

static gboolean
is_string (JsonNode *n)
{
  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING;
}

BlnSafetyCall *
bln_safety_call_begin_prompt (BlnSafety *s, SoupServerMessage *msg, const char *endpoint,
                              const char *model, JsonNode *prompt, gint64 max_tokens)
{
  g_autoptr (JsonArray) arr = json_array_new ();
  g_autoptr (JsonNode) node = json_node_new (JSON_NODE_ARRAY);
  g_autoptr (GPtrArray) strings = g_ptr_array_new ();  /* JsonNode * of each text prompt */
  BlnSafetyCall *c;

  if (is_string (prompt))
    g_ptr_array_add (strings, prompt);
  else if (prompt && JSON_NODE_HOLDS_ARRAY (prompt))
    for (guint i = 0; i < json_array_get_length (json_node_get_array (prompt)); i++)
      if (is_string (json_array_get_element (json_node_get_array (prompt), i)))
        g_ptr_array_add (strings, json_array_get_element (json_node_get_array (prompt), i));
  for (guint i = 0; i < strings->len; i++)
    {
      JsonObject *o = json_object_new ();
      json_object_set_string_member (o, "content", json_node_get_string (strings->pdata[i]));
      json_array_add_object_element (arr, o);
    }
  json_node_set_array (node, arr);
  c = bln_safety_call_begin (s, msg, endpoint, model, node, max_tokens);
  for (guint i = 0; c && i < strings->len; i++)
    json_node_set_string (strings->pdata[i], json_object_get_string_member (
                                               json_array_get_object_element (arr, i),
                                               "content"));
  return c;
}

BlnSafetyCall *
bln_safety_call_clone (BlnSafetyCall *c)
{
  BlnSafetyCall *n = g_new0 (BlnSafetyCall, 1);

  c->cloned = TRUE;
  n->safety = c->safety;
  n->verdict.key_id = c->verdict.key_id;
  n->verdict.key_tpm = c->verdict.key_tpm;
  n->verdict.client_tpm = c->verdict.client_tpm;
  n->verdict.key_bucket = g_strdup (c->verdict.key_bucket);
  n->verdict.client_bucket = g_strdup (c->verdict.client_bucket);
  n->verdict.verdicts = g_strdup (c->verdict.verdicts);
  n->client = g_strdup (c->client);
  n->endpoint = g_strdup (c->endpoint);
  n->model = g_strdup (c->model);
  n->prompt = g_strdup (c->prompt);
  n->completion = g_string_new (NULL);
  n->t_start = c->t_start;
  n->filter = bln_safety_stream_filter_new (c->safety);
  n->hold = c->hold;
  return n;
}

gboolean
bln_safety_call_filter (BlnSafetyCall *c, const char *piece, GString *emit)
{
  gsize before = c->completion->len;
  gboolean go;

  if (!c->t_first)
    c->t_first = g_get_monotonic_time ();
  go = bln_stream_filter_push (c->filter, piece, -1, c->completion);
  if (!c->hold)
    g_string_append_len (emit, c->completion->str + before, c->completion->len - before);
  return go;
}

void
bln_safety_call_flush (BlnSafetyCall *c, GString *emit)
{
  gsize before = c->completion->len;

  if (!bln_stream_filter_stopped (c->filter))
    bln_stream_filter_finish (c->filter, c->completion);
  if (!c->hold)
    g_string_append_len (emit, c->completion->str + before, c->completion->len - before);
}

gboolean
bln_safety_call_filtered (BlnSafetyCall *c)
{
  return c->withheld || (c->filter && bln_stream_filter_stopped (c->filter));
}

gboolean
bln_safety_call_needs_moderation (BlnSafetyCall *c)
{
  return c->hold && !c->moderated;
}

void
bln_safety_call_release (BlnSafetyCall *c, GString *emit)
{
  if (!c->hold || c->released || c->withheld)
    return;
  c->released = TRUE;
  g_string_append (emit, c->completion->str);
}

static void
on_moderated (GObject *source, GAsyncResult *result, gpointer data)
{
  g_autoptr (GTask) task = data;
  BlnSafetyCall *c = g_task_get_task_data (task);
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModerationResult) res = bln_moderation_check_finish (result, &error);
  g_autofree char *policy = bln_settings_get_string (c->safety->settings, "moderation.failure");
  gboolean closed = g_strcmp0 (policy, "closed") == 0;
  gboolean allowed = bln_moderation_allows (res, closed);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "allowed");
  json_builder_add_boolean_value (b, allowed);
  if (res)
    {
      json_builder_set_member_name (b, "flagged");
      json_builder_add_boolean_value (b, res->flagged);
      json_builder_set_member_name (b, "categories");
      json_builder_begin_array (b);
      for (char **cat = res->categories; cat && *cat; cat++)
        json_builder_add_string_value (b, *cat);
      json_builder_end_array (b);
    }
  else
    {
      json_builder_set_member_name (b, "error");
      json_builder_add_string_value (b, error ? error->message : "failed");
      json_builder_set_member_name (b, "policy");
      json_builder_add_string_value (b, closed ? "fail-closed" : "fail-open");
    }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  g_free (c->verdict.moderation);
  c->verdict.moderation = json_generator_to_data (gen, NULL);
  g_task_return_boolean (task, allowed);
}

void
bln_safety_call_moderate_async (BlnSafetyCall *c, gpointer session, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);
  g_autofree char *url = bln_settings_get_string (c->safety->settings, "moderation.endpoint");
  g_autofree char *model = bln_settings_get_string (c->safety->settings, "moderation.model");

  g_task_set_task_data (task, c, NULL);
  if (!url || !*url)
    {
      g_task_return_boolean (task, TRUE);
      g_object_unref (task);
      return;
    }
  bln_moderation_check_async (session, url, NULL, model, c->completion->str,
                              bln_settings_get_double (c->safety->settings,
                                                       "moderation.timeout_s"),
                              cancellable, on_moderated, task);
}

gboolean
bln_safety_call_moderate_finish (BlnSafetyCall *c, GAsyncResult *result)
{
  gboolean allowed = g_task_propagate_boolean (G_TASK (result), NULL);

  c->moderated = TRUE;
  c->withheld = !allowed;
  return allowed;
}

void
bln_safety_call_end (BlnSafetyCall *c, const char *request_id, const char *finish_reason,
                     gint64 prompt_tokens, gint64 completion_tokens, gint64 cached_tokens)
{
  g_autoptr (GError) error = NULL;
  BlnAuditRecord rec = { 0 };
  gint64 now = g_get_monotonic_time ();

  if (c->ended || c->cloned)
    return;
  c->ended = TRUE;
  rec.request_id = (char *) request_id;
  rec.client = c->client;
  rec.model = c->model;
  rec.endpoint = c->endpoint;
  rec.prompt_tokens = prompt_tokens;
  rec.completion_tokens = completion_tokens;
  rec.cached_tokens = cached_tokens;
  rec.ttft_ms = c->t_first ? (c->t_first - c->t_start) / 1e3 : 0;
  rec.total_ms = (now - c->t_start) / 1e3;
  rec.finish_reason = (char *) finish_reason;
  rec.prompt = c->prompt;
  /* the answer as filtered; for one the moderation withheld, what was withheld */
  rec.completion = c->completion->str;
  if (!bln_safety_record (c->safety, &c->verdict, c->filter, &rec, &error))
    g_printerr ("baleen-server: audit record %s not written: %s\n", request_id,
                error ? error->message : "see above");
  g_free (rec.verdicts);
}

void
bln_safety_call_free (BlnSafetyCall *c)
{
  if (!c)
    return;
  bln_safety_verdict_clear (&c->verdict);
  bln_stream_filter_free (c->filter);
  g_free (c->client);
  g_free (c->endpoint);
  g_free (c->model);
  g_free (c->prompt);
  g_string_free (c->completion, TRUE);
  g_free (c);
}
