/* test-moderation.c — the streaming output filter and the moderation client.
 *
 * Every text is streamed split at every possible byte boundary (one cut, two
 * cuts, and one byte per piece), and what the filter emits must equal what
 * the rule engine (itself checked against Python in test-rules) finds on the
 * whole text: cut before the first blocked phrase, masks applied. The
 * moderation client talks to an in-process HTTP server shaped like OpenAI's
 * /v1/moderations. */
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <string.h>

#include "bln-error.h"
#include "moderation.h"

static BlnRuleSet *
make_rules (void)
{
  BlnRuleSet *set = bln_rule_set_new ();
  BlnRule r[] = {
    { 1, BLN_RULE_WORD, (char *) "forbidden phrase", BLN_RULE_BLOCK, BLN_RULE_BOTH, TRUE, FALSE,
      TRUE, NULL, 0 },
    { 2, BLN_RULE_WORD, (char *) "坏词语", BLN_RULE_BLOCK, BLN_RULE_BOTH, FALSE, TRUE, TRUE,
      NULL, 0 },
    { 3, BLN_RULE_WORD, (char *) "secret", BLN_RULE_MASK, BLN_RULE_BOTH, TRUE, TRUE, TRUE, NULL,
      0 },
    { 4, BLN_RULE_REGEX, (char *) "\\d{4}-\\d{4}", BLN_RULE_MASK, BLN_RULE_BOTH, FALSE, FALSE,
      TRUE, NULL, 0 },
    { 5, BLN_RULE_WORD, (char *) "note", BLN_RULE_LOG, BLN_RULE_BOTH, FALSE, FALSE, TRUE, NULL,
      0 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (r); i++)
    g_assert_true (bln_rule_set_add (set, &r[i], NULL));
  return set;
}

static const char *texts[] = {
  "A note: the Secret code is 1234-5678, then a FORBIDDEN Phrase appears, and more text.",
  "中文回答里有坏词语，后面还有 ｓｅｃｒｅｔ 和 secret。",
  "Nothing to see, just a note and 12-34.",
  "secretsecret forbidden phras",
  "坏词 坏词语",
};

/* What the filter must emit for @text as a whole. */
static char *
expected (BlnRuleSet *set, const char *text, BlnOutputAction action)
{
  g_autoptr (GArray) m = bln_rule_set_scan (set, text, -1);
  gsize end = strlen (text);

  for (guint i = 0; i < m->len; i++)
    {
      BlnRuleMatch *x = &g_array_index (m, BlnRuleMatch, i);
      if (x->action == BLN_RULE_BLOCK && action == BLN_OUTPUT_STOP)
        {
          end = x->start;
          g_array_set_size (m, i);
          break;
        }
      if (x->action == BLN_RULE_BLOCK)
        x->action = BLN_RULE_MASK;
    }
  return bln_rule_mask_text (text, end, m);
}

/* Streams @text cut at the byte offsets in @cuts (sorted, n_cuts of them). */
static char *
stream (BlnRuleSet *set, BlnOutputAction action, const char *text, const gsize *cuts,
        guint n_cuts, gboolean *stopped)
{
  g_autoptr (BlnStreamFilter) f = bln_stream_filter_new (set, action, 16);
  GString *out = g_string_new (NULL);
  gsize from = 0, len = strlen (text);
  gboolean go = TRUE;

  for (guint i = 0; i <= n_cuts && go; i++)
    {
      gsize to = i < n_cuts ? cuts[i] : len;
      go = bln_stream_filter_push (f, text + from, to - from, out);
      /* What was emitted so far is always valid UTF-8. */
      g_assert_true (g_utf8_validate_len (out->str, out->len, NULL));
      from = to;
    }
  if (go)
    go = bln_stream_filter_finish (f, out);
  *stopped = bln_stream_filter_stopped (f);
  g_assert_true (go == !*stopped);
  return g_string_free (out, FALSE);
}

static void
check_all_splits (BlnOutputAction action)
{
  g_autoptr (BlnRuleSet) set = make_rules ();
  guint checked = 0;

  for (guint t = 0; t < G_N_ELEMENTS (texts); t++)
    {
      const char *text = texts[t];
      gsize len = strlen (text);
      g_autofree char *want = expected (set, text, action);
      g_autofree gsize *bytes = g_new (gsize, len);
      gboolean stopped;

      /* one cut anywhere, two cuts anywhere */
      for (gsize i = 0; i <= len; i++)
        for (gsize j = i; j <= len; j++)
          {
            gsize cuts[2] = { i, j };
            g_autofree char *got = stream (set, action, text, cuts, 2, &stopped);
            g_assert_cmpstr (got, ==, want);
            g_assert_null (strstr (got, "坏词语"));
            g_assert_null (g_strstr_len (got, -1, "FORBIDDEN Phrase"));
            checked++;
          }
      /* one byte per piece */
      for (gsize i = 0; i < len; i++)
        bytes[i] = i + 1;
      {
        g_autofree char *got = stream (set, action, text, bytes, len - 1, &stopped);
        g_assert_cmpstr (got, ==, want);
      }
    }
  g_test_message ("%u split streams checked", checked);
}

static void
test_split_stop (void)
{
  check_all_splits (BLN_OUTPUT_STOP);
}

static void
test_split_mask (void)
{
  check_all_splits (BLN_OUTPUT_MASK);
}

static void
test_matches_and_passthrough (void)
{
  g_autoptr (BlnRuleSet) set = make_rules ();
  g_autoptr (BlnStreamFilter) f = bln_stream_filter_new (set, BLN_OUTPUT_STOP, 16);
  g_autoptr (BlnStreamFilter) none = bln_stream_filter_new (NULL, BLN_OUTPUT_STOP, 16);
  g_autoptr (GString) out = g_string_new (NULL);
  const GArray *m;

  g_assert_true (bln_stream_filter_push (f, "a no", -1, out));
  g_assert_true (bln_stream_filter_push (f, "te, a note", -1, out));
  g_assert_true (bln_stream_filter_finish (f, out));
  m = bln_stream_filter_matches (f);
  g_assert_cmpuint (m->len, ==, 2); /* each "note" once, though rescanned */
  g_assert_cmpuint (g_array_index (m, BlnRuleMatch, 0).start, ==, 2);
  g_assert_cmpuint (g_array_index (m, BlnRuleMatch, 1).start, ==, 10);
  g_assert_cmpstr (out->str, ==, "a note, a note");

  /* no rules: everything goes straight through; bad UTF-8 is replaced */
  g_string_truncate (out, 0);
  g_assert_true (bln_stream_filter_push (none, "abc\xff", -1, out));
  g_assert_true (bln_stream_filter_push (none, "\xe4\xb8", -1, out));
  g_assert_cmpstr (out->str, ==, "abc\xef\xbf\xbd");
  g_assert_true (bln_stream_filter_push (none, "\xad!", -1, out));
  g_assert_cmpstr (out->str, ==, "abc\xef\xbf\xbd中!");
  g_assert_true (bln_stream_filter_push (none, "\xe4", -1, out));
  g_assert_true (bln_stream_filter_finish (none, out));
  g_assert_cmpstr (out->str, ==, "abc\xef\xbf\xbd中!\xef\xbf\xbd");
}

/* Streams @text in pieces of the sizes in @sizes (0-terminated; the rest in
 * one piece) in stop mode; returns what went out. */
static char *
stream_sizes (BlnRuleSet *set, const char *text, const gsize *sizes, gboolean *stopped)
{
  g_autoptr (BlnStreamFilter) f = bln_stream_filter_new (set, BLN_OUTPUT_STOP, 8);
  GString *out = g_string_new (NULL);
  gsize at = 0, len = strlen (text);
  gboolean go = TRUE;

  for (guint i = 0; sizes[i] && go && at < len; i++)
    {
      gsize n = MIN (sizes[i], len - at);
      go = bln_stream_filter_push (f, text + at, n, out);
      at += n;
    }
  if (go && at < len)
    go = bln_stream_filter_push (f, text + at, len - at, out);
  if (go)
    go = bln_stream_filter_finish (f, out);
  *stopped = !go;
  return g_string_free (out, FALSE);
}

/* Whether @got is @text masked as a whole, cut at a character boundary at or
 * before the start of the first blocked phrase. */
static gboolean
is_masked_prefix_before_block (BlnRuleSet *set, const char *text, const char *got)
{
  g_autoptr (GArray) m = bln_rule_set_scan (set, text, -1);
  g_autofree char *whole = NULL;
  gsize start = strlen (text);

  for (guint i = 0; i < m->len; i++)
    if (g_array_index (m, BlnRuleMatch, i).action == BLN_RULE_BLOCK)
      {
        start = g_array_index (m, BlnRuleMatch, i).start;
        g_array_set_size (m, i);
        break;
      }
  whole = bln_rule_mask_text (text, start, m);
  return g_str_has_prefix (whole, got);
}

/* The fuzzer's finding rules-stream-stop-1: the blocked word "b" completes
 * while the masked word "abc", which began one character earlier, is still
 * incomplete. Stopping there used to send "xa" — the unmasked start of
 * "abc" — where the text masked as a whole reads "x*". And a short blocked
 * word inside a longer blocked phrase that began earlier used to let the
 * longer phrase's beginning out. */
static void
test_stop_before_open_words (void)
{
  g_autoptr (BlnRuleSet) set = bln_rule_set_new ();
  g_autoptr (BlnRuleSet) set2 = bln_rule_set_new ();
  BlnRule r[] = {
    { 2, BLN_RULE_WORD, (char *) "lwbabc", BLN_RULE_LOG, BLN_RULE_BOTH, FALSE, FALSE, TRUE,
      NULL, 0 },
    { 3, BLN_RULE_WORD, (char *) "b", BLN_RULE_BLOCK, BLN_RULE_BOTH, FALSE, FALSE, TRUE, NULL,
      0 },
    { 4, BLN_RULE_WORD, (char *) "abc", BLN_RULE_MASK, BLN_RULE_BOTH, FALSE, FALSE, TRUE, NULL,
      0 },
    { 7, BLN_RULE_WORD, (char *) "c", BLN_RULE_LOG, BLN_RULE_BOTH, FALSE, FALSE, TRUE, NULL, 0 },
  };
  BlnRule r2[] = {
    { 1, BLN_RULE_WORD, (char *) "Forbidden Phrase", BLN_RULE_BLOCK, BLN_RULE_BOTH, TRUE, FALSE,
      TRUE, NULL, 0 },
    { 2, BLN_RULE_WORD, (char *) "bid", BLN_RULE_BLOCK, BLN_RULE_BOTH, TRUE, FALSE, TRUE, NULL,
      0 },
  };
  const char *text = "xabcda)cwcmcbd\n";
  const char *text2 = "Here: the FORBIDDEN PHRASE.";
  /* the piece sizes the fuzz target used: 1 + (first byte % 7) */
  const gsize sizes[] = { 2, 1, 0 };
  const gsize sizes2[] = { 16, 0 };
  gsize len = strlen (text), len2 = strlen (text2);
  g_autofree char *got = NULL;
  g_autofree char *got2 = NULL;
  gboolean stopped = FALSE;

  for (guint i = 0; i < G_N_ELEMENTS (r); i++)
    g_assert_true (bln_rule_set_add (set, &r[i], NULL));
  for (guint i = 0; i < G_N_ELEMENTS (r2); i++)
    g_assert_true (bln_rule_set_add (set2, &r2[i], NULL));

  got = stream_sizes (set, text, sizes, &stopped);
  g_assert_true (stopped);
  g_assert_cmpstr (got, ==, "x");
  g_assert_true (is_masked_prefix_before_block (set, text, got));

  /* "bid" completes inside "FORBIDDEN" (after "Here: the FORBID") */
  got2 = stream_sizes (set2, text2, sizes2, &stopped);
  g_assert_true (stopped);
  g_assert_cmpstr (got2, ==, "Here: the ");

  /* and so for every split into up to three pieces */
  for (gsize i = 0; i <= len2; i++)
    for (gsize j = i; j <= len2; j++)
      {
        gsize c[3] = { i, j - i, 0 };
        g_autofree char *a = NULL;
        g_autofree char *b = NULL;

        if (j <= len)
          {
            a = stream_sizes (set, text, c, &stopped);
            g_assert_true (stopped);
            g_assert_true (is_masked_prefix_before_block (set, text, a));
          }
        b = stream_sizes (set2, text2, c, &stopped);
        g_assert_true (stopped);
        g_assert_true (is_masked_prefix_before_block (set2, text2, b));
        g_assert_null (strstr (b, "FORB"));
      }
}

/* ---- moderation endpoint ------------------------------------------------- */

typedef struct {
  GMainLoop *loop;
  BlnModerationResult *result;
  GError *error;
  char *last_auth;
  char *last_model;
} Ctx;

static void
moderation_handler (SoupServer *server, SoupServerMessage *msg, const char *path,
                    GHashTable *query, gpointer data)
{
  Ctx *ctx = data;
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  g_autoptr (GBytes) bytes = soup_message_body_flatten (body);
  g_autoptr (JsonParser) p = json_parser_new ();
  const char *input = "";
  const char *reply;

  g_free (ctx->last_auth);
  ctx->last_auth = g_strdup (soup_message_headers_get_one (
    soup_server_message_get_request_headers (msg), "Authorization"));
  if (json_parser_load_from_data (p, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes),
                                  NULL))
    {
      JsonObject *o = json_node_get_object (json_parser_get_root (p));
      input = json_object_get_string_member_with_default (o, "input", "");
      g_free (ctx->last_model);
      ctx->last_model = g_strdup (json_object_get_string_member_with_default (o, "model", ""));
    }
  if (strstr (input, "boom"))
    {
      soup_server_message_set_status (msg, 500, NULL);
      return;
    }
  if (strstr (input, "garbage"))
    reply = "{\"id\": 1}";
  else if (strstr (input, "attack"))
    reply = "{\"id\":\"modr-1\",\"model\":\"guard\",\"results\":[{\"flagged\":true,"
            "\"categories\":{\"violence\":true,\"hate\":false},"
            "\"category_scores\":{\"violence\":0.97,\"hate\":0.01}}]}";
  else
    reply = "{\"id\":\"modr-2\",\"model\":\"guard\",\"results\":[{\"flagged\":false,"
            "\"categories\":{\"violence\":false},\"category_scores\":{\"violence\":0.01}}]}";
  soup_server_message_set_status (msg, 200, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_COPY, reply,
                                    strlen (reply));
}

static void
on_checked (GObject *src, GAsyncResult *res, gpointer data)
{
  Ctx *ctx = data;

  ctx->result = bln_moderation_check_finish (res, &ctx->error);
  g_main_loop_quit (ctx->loop);
}

static BlnModerationResult *
check (Ctx *ctx, const char *url, const char *text, GError **error)
{
  ctx->result = NULL;
  ctx->error = NULL;
  bln_moderation_check_async (NULL, url, "sk-test", "guard", text, 5, NULL, on_checked, ctx);
  g_main_loop_run (ctx->loop);
  if (ctx->error)
    g_propagate_error (error, ctx->error);
  return ctx->result;
}

static void
test_endpoint (void)
{
  g_autoptr (SoupServer) server = soup_server_new (NULL, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GSList) uris = NULL;
  g_autofree char *base = NULL;
  g_autofree char *url = NULL;
  g_autofree char *dead = NULL;
  Ctx ctx = { 0 };
  BlnModerationResult *r;

  ctx.loop = g_main_loop_new (NULL, FALSE);
  soup_server_add_handler (server, "/v1/moderations", moderation_handler, &ctx, NULL);
  g_assert_true (soup_server_listen_local (server, 0, SOUP_SERVER_LISTEN_IPV4_ONLY, &error));
  uris = soup_server_get_uris (server);
  base = g_uri_to_string (uris->data);
  g_slist_free_full (g_steal_pointer (&uris), (GDestroyNotify) g_uri_unref);
  url = g_strconcat (base, "v1/moderations", NULL);

  r = check (&ctx, url, "a calm answer", &error);
  g_assert_no_error (error);
  g_assert_false (r->flagged);
  g_assert_true (bln_moderation_allows (r, TRUE));
  g_assert_cmpstr (ctx.last_auth, ==, "Bearer sk-test");
  g_assert_cmpstr (ctx.last_model, ==, "guard");
  bln_moderation_result_free (r);

  r = check (&ctx, url, "an attack plan", &error);
  g_assert_no_error (error);
  g_assert_true (r->flagged);
  g_assert_cmpuint (g_strv_length (r->categories), ==, 1);
  g_assert_cmpstr (r->categories[0], ==, "violence");
  g_assert_false (bln_moderation_allows (r, FALSE));
  bln_moderation_result_free (r);

  /* failures are logged and left to the policy */
  g_test_expect_message ("baleen-core", G_LOG_LEVEL_MESSAGE, "*moderation service*HTTP 500*");
  r = check (&ctx, url, "boom", &error);
  g_test_assert_expected_messages ();
  g_assert_null (r);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_IO);
  g_clear_error (&error);
  g_assert_true (bln_moderation_allows (NULL, FALSE));  /* fail open */
  g_assert_false (bln_moderation_allows (NULL, TRUE));  /* fail closed */

  g_test_expect_message ("baleen-core", G_LOG_LEVEL_MESSAGE, "*results*");
  r = check (&ctx, url, "garbage", &error);
  g_test_assert_expected_messages ();
  g_assert_null (r);
  g_assert_nonnull (error);
  g_clear_error (&error);

  soup_server_disconnect (server);
  dead = g_strdup (url);
  g_test_expect_message ("baleen-core", G_LOG_LEVEL_MESSAGE, "*moderation service*failed*");
  r = check (&ctx, dead, "anything", &error);
  g_test_assert_expected_messages ();
  g_assert_null (r);
  g_assert_nonnull (error);
  g_clear_error (&error);

  g_test_expect_message ("baleen-core", G_LOG_LEVEL_MESSAGE, "*not valid*");
  r = check (&ctx, "not a url", "anything", &error);
  g_test_assert_expected_messages ();
  g_assert_null (r);
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);

  g_main_loop_unref (ctx.loop);
  g_free (ctx.last_auth);
  g_free (ctx.last_model);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Moderation/split-everywhere-stop", test_split_stop);
  g_test_add_func ("/Baleen/Moderation/split-everywhere-mask", test_split_mask);
  g_test_add_func ("/Baleen/Moderation/matches-and-passthrough", test_matches_and_passthrough);
  g_test_add_func ("/Baleen/Moderation/stop-before-open-words", test_stop_before_open_words);
  g_test_add_func ("/Baleen/Moderation/endpoint", test_endpoint);
  return g_test_run ();
}
