/* test-ui.c — the desktop app's real widgets, driven in-process under Xvfb.
 *
 * One BlnApplication with a private $XDG_DATA_HOME (settings database and a
 * models folder holding a tiny GGUF from tests/golden). The cases run in
 * order and build on each other: settings written through the pages are read
 * back from the SQLite file with plain SQL and by a fresh settings object;
 * a model is loaded with the Models page's Load button; the Server page's
 * switch starts a server that answers /health and the connection test; the
 * Chat page streams a reply, checked against a non-streamed request at
 * temperature 0.
 */
#include <math.h>
#include <string.h>
#include <sqlite3.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "application.h"
#include "audit-view.h"
#include "bln-error.h"
#include "chat-page.h"
#include "kv-cache.h"
#include "live-stats.h"
#include "models-page.h"
#include "rules-editor.h"
#include "rules.h"
#include "server-page.h"
#include "settings-page.h"
#include "window.h"

static BlnApplication *app;
static BlnWindow *window;
static char *data_home;
static char *model_id;

typedef gboolean (*CondFn) (gpointer data);

static gboolean
wait_until (CondFn cond, gpointer data, double seconds)
{
  gint64 end = g_get_monotonic_time () + (gint64) (seconds * G_USEC_PER_SEC);

  while (!cond (data))
    {
      if (g_get_monotonic_time () > end)
        return FALSE;
      g_main_context_iteration (NULL, FALSE);
      g_usleep (2000);
    }
  return TRUE;
}

static char *
sql_value (const char *key)
{
  g_autofree char *path = g_build_filename (data_home, "baleen", "baleen.db", NULL);
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  char *out = NULL;

  g_assert_cmpint (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
  g_assert_cmpint (sqlite3_prepare_v2 (db, "SELECT value FROM settings WHERE key = ?1", -1, &st,
                                       NULL), ==, SQLITE_OK);
  sqlite3_bind_text (st, 1, key, -1, SQLITE_STATIC);
  if (sqlite3_step (st) == SQLITE_ROW)
    out = g_strdup ((const char *) sqlite3_column_text (st, 0));
  sqlite3_finalize (st);
  sqlite3_close (db);
  return out;
}

static gboolean
switch_is (gpointer data)
{
  return gtk_switch_get_active (GTK_SWITCH (data)) ==
         GPOINTER_TO_INT (g_object_get_data (G_OBJECT (data), "want"));
}

/* Activates @sw as the keyboard does (GTK animates the toggle) and waits
 * until it reads @want. */
static gboolean
toggle (GtkWidget *sw, gboolean want)
{
  g_object_set_data (G_OBJECT (sw), "want", GINT_TO_POINTER (want));
  gtk_widget_activate (sw);
  return wait_until (switch_is, sw, 5);
}

typedef struct {
  GBytes *body;
  GError *error;
  gboolean done;
} Fetch;

static void
fetched (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Fetch *f = user_data;

  f->body = soup_session_send_and_read_finish (SOUP_SESSION (source), result, &f->error);
  f->done = TRUE;
}

static gboolean
fetch_done (gpointer data)
{
  return ((Fetch *) data)->done;
}

/* Sends @msg without blocking the main loop, which serves the in-process
 * server. Returns the body or NULL with @error set. */
static GBytes *
fetch (SoupSession *session, SoupMessage *msg, GError **error)
{
  Fetch f = { 0 };

  soup_session_send_and_read_async (session, msg, G_PRIORITY_DEFAULT, NULL, fetched, &f);
  g_assert_true (wait_until (fetch_done, &f, 60));
  if (f.error)
    g_propagate_error (error, f.error);
  return f.body;
}

static void
test_settings_persist (void)
{
  BlnServerPage *server = BLN_SERVER_PAGE (bln_window_get_page (window, "server"));
  BlnSettingsPage *caches = BLN_SETTINGS_PAGE (bln_window_get_page (window, "caches"));
  BlnSettingsPage *safety = BLN_SETTINGS_PAGE (bln_window_get_page (window, "safety"));
  GtkWidget *port = bln_server_page_get_widget (server, "port");
  GtkWidget *kv8 = bln_settings_page_get_editor (caches, "cache.kv_8bit");
  GtkWidget *prefix = bln_settings_page_get_editor (caches, "cache.prefix");
  GtkWidget *rpm = bln_settings_page_get_editor (safety, "ratelimit.key_rpm");
  g_autofree char *v_port = NULL;
  g_autofree char *v_prefix = NULL;
  g_autofree char *v_rpm = NULL;
  g_autofree char *path = g_build_filename (data_home, "baleen", "baleen.db", NULL);
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (BlnSettings) core = NULL;
  g_autoptr (BlnUiSettings) ui = NULL;
  g_autoptr (GError) error = NULL;

  g_assert_true (GTK_IS_SPIN_BUTTON (port));
  g_assert_true (GTK_IS_SWITCH (kv8));
  g_assert_true (GTK_IS_SWITCH (prefix));
  g_assert_true (GTK_IS_SPIN_BUTTON (rpm));
  /* the 8-bit KV cache, the sliding window and the session TTL can be set
   * (next load) */
  g_assert_true (gtk_widget_get_sensitive (kv8));
  g_assert_true (gtk_widget_get_sensitive (
                   bln_settings_page_get_editor (caches, "cache.sliding_window")));
  g_assert_true (gtk_widget_get_sensitive (
                    bln_settings_page_get_editor (caches, "cache.session_ttl_s")));
  g_assert_true (gtk_switch_get_active (GTK_SWITCH (prefix)));

  gtk_spin_button_set_value (GTK_SPIN_BUTTON (port), 18123);
  bln_window_show_page (window, "caches");   /* toggles animate only when mapped */
  g_assert_true (toggle (prefix, FALSE));
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (rpm), 42);

  /* In the file, with plain SQL. */
  v_port = sql_value ("server.port");
  v_prefix = sql_value ("cache.prefix");
  v_rpm = sql_value ("ratelimit.key_rpm");
  g_assert_cmpstr (v_port, ==, "18123");
  g_assert_cmpstr (v_prefix, ==, "false");
  g_assert_cmpstr (v_rpm, ==, "42");

  /* As a restarted app reads them. */
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  core = bln_settings_new (db, &error);
  g_assert_no_error (error);
  ui = bln_ui_settings_new (db, core, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_ui_settings_get_int (ui, "server.port"), ==, 18123);
  g_assert_false (bln_ui_settings_get_bool (ui, "cache.prefix"));
  g_assert_cmpint (bln_settings_get_int (core, "ratelimit.key_rpm"), ==, 42);
  /* back on for the cases that follow (the live-stats case needs prefix hits) */
  g_assert_true (toggle (prefix, TRUE));
  g_free (v_prefix);
  v_prefix = sql_value ("cache.prefix");
  g_assert_cmpstr (v_prefix, ==, "true");

  /* A value out of range is refused and not stored. */
  g_assert_false (bln_ui_settings_set_text (bln_application_settings (app), "server.port",
                                            "70000", &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_free (v_port);
  v_port = sql_value ("server.port");
  g_assert_cmpstr (v_port, ==, "18123");
}

static gboolean
is_loaded (gpointer data)
{
  return g_strcmp0 (bln_application_loaded_id (app), data) == 0 && !bln_application_busy (app);
}

static gboolean
default_is (gpointer data)
{
  g_autofree char *v = sql_value ("models.default");
  return g_strcmp0 (v, data) == 0;
}

static void
test_load_model (void)
{
  BlnModelsPage *page = BLN_MODELS_PAGE (bln_window_get_page (window, "models"));
  GtkWidget *load = bln_models_page_get_button (page, model_id, "load");

  bln_window_show_page (window, "models");
  g_assert_nonnull (load);
  g_assert_null (bln_application_loaded_id (app));
  g_assert_cmpstr (gtk_button_get_label (GTK_BUTTON (load)), ==, "Load");
  gtk_widget_activate (load);
  /* GtkButton emits "clicked" a moment after activation; the load then runs
   * on the host's thread while this loop keeps turning. */
  g_assert_true (wait_until (is_loaded, model_id, 60));
  g_assert_nonnull (bln_application_worker (app));
  g_assert_cmpint (bln_engine_worker_n_ctx (bln_application_worker (app)), >, 0);
  /* The rows were rebuilt: the button now unloads. */
  load = bln_models_page_get_button (page, model_id, "load");
  g_assert_cmpstr (gtk_button_get_label (GTK_BUTTON (load)), ==, "Unload");

  /* The star makes it the default model, loaded at the next start. */
  gtk_widget_activate (bln_models_page_get_button (page, model_id, "default"));
  g_assert_true (wait_until (default_is, model_id, 5));
}

static gboolean
server_on (gpointer data)
{
  return bln_application_server_url (app) != NULL;
}

static gboolean
subtitle_settled (gpointer data)
{
  const char *s = adw_action_row_get_subtitle (ADW_ACTION_ROW (data));
  return s && (g_str_has_prefix (s, "Connected") || g_str_has_prefix (s, "Failed"));
}

static void
test_server (void)
{
  BlnServerPage *page = BLN_SERVER_PAGE (bln_window_get_page (window, "server"));
  GtkWidget *sw = bln_server_page_get_widget (page, "switch");
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *url = NULL;
  g_autofree char *health = NULL;
  GtkWidget *test_row;

  bln_window_show_page (window, "server");
  /* Any free port, so parallel runs never collide. */
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (bln_server_page_get_widget (page, "port")), 0);
  if (bln_application_server_url (app))   /* autostart after the load */
    {
      gtk_switch_set_active (GTK_SWITCH (sw), FALSE);
      g_assert_null (bln_application_server_url (app));
    }
  gtk_switch_set_active (GTK_SWITCH (sw), TRUE);
  g_assert_true (wait_until (server_on, NULL, 10));
  g_assert_true (gtk_switch_get_active (GTK_SWITCH (sw)));
  url = g_strdup (bln_application_server_url (app));
  health = g_strconcat (url, "health", NULL);

  msg = soup_message_new ("GET", health);
  body = fetch (session, msg, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (soup_message_get_status (msg), ==, 200);
  g_assert_true (json_parser_load_from_data (parser, g_bytes_get_data (body, NULL),
                                             g_bytes_get_size (body), &error));
  g_assert_cmpstr (json_object_get_string_member (json_node_get_object (
                     json_parser_get_root (parser)), "status"), ==, "ok");

  /* The Cherry Studio panel shows the address and its test passes. */
  g_assert_true (g_str_has_prefix (adw_action_row_get_subtitle (
                   ADW_ACTION_ROW (bln_server_page_get_widget (page, "host-row"))), url));
  test_row = bln_server_page_get_widget (page, "test-row");
  gtk_widget_activate (bln_server_page_get_widget (page, "test"));
  g_assert_true (wait_until (subtitle_settled, test_row, 10));
  g_assert_true (g_str_has_prefix (adw_action_row_get_subtitle (ADW_ACTION_ROW (test_row)),
                                   "Connected: the server lists"));

  /* Off: the address stops answering once the server is gone. */
  gtk_switch_set_active (GTK_SWITCH (sw), FALSE);
  g_assert_null (bln_application_server_url (app));
  g_assert_false (gtk_switch_get_state (GTK_SWITCH (sw)));
  for (int i = 0; i < 200; i++)
    g_main_context_iteration (NULL, FALSE), g_usleep (2000);
  g_clear_object (&msg);
  g_clear_pointer (&body, g_bytes_unref);
  g_clear_error (&error);
  msg = soup_message_new ("GET", health);
  body = fetch (session, msg, &error);
  g_assert_nonnull (error);
}

static gboolean
chat_done (gpointer data)
{
  return !bln_chat_page_is_streaming (data);
}

static void
test_chat (void)
{
  BlnChatPage *page = BLN_CHAT_PAGE (bln_window_get_page (window, "chat"));
  BlnUiSettings *settings = bln_application_settings (app);
  g_autoptr (GError) error = NULL;
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autofree char *url = NULL;
  g_autofree char *req = NULL;
  g_autofree char *model = NULL;
  const char *content;
  double ttft, tps;
  gboolean sse = FALSE;
  int n;

  bln_window_show_page (window, "chat");
  g_assert_true (bln_ui_settings_set_text (settings, "chat.temperature", "0", &error));
  g_assert_true (bln_ui_settings_set_text (settings, "chat.max_tokens", "12", &error));
  /* Sending starts the server when it is off. */
  g_assert_true (bln_chat_page_send (page, "Hello"));
  g_assert_true (bln_chat_page_is_streaming (page));
  g_assert_true (wait_until (chat_done, page, 120));
  /* It came as a stream: an SSE response with the role chunk, text, the
   * finish chunk and [DONE] at least. The worker may coalesce text that is
   * produced faster than the loop turns, so the number of text deltas is
   * only known to be positive. */
  g_assert_cmpuint (bln_chat_page_last_n_events (page, &sse), >=, 4);
  g_assert_true (sse);
  g_assert_cmpuint (bln_chat_page_last_n_deltas (page), >=, 1);
  bln_chat_page_last_stats (page, &ttft, &tps, &n);
  g_assert_cmpfloat (ttft, >, 0);
  g_assert_cmpint (n, >=, 1);
  g_assert_cmpint (n, <=, 12);
  if (bln_chat_page_last_n_deltas (page) >= 2)
    g_assert_cmpfloat (tps, >, 0);

  /* The same conversation without streaming gives the same text (greedy). */
  model = g_strdup (bln_application_loaded_id (app));
  url = g_strconcat (bln_application_server_url (app), "v1/chat/completions", NULL);
  req = g_strdup_printf ("{\"model\":\"%s\",\"temperature\":0,\"max_tokens\":12,"
                         "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}", model);
  msg = soup_message_new ("POST", url);
  soup_message_set_request_body_from_bytes (msg, "application/json",
                                            g_bytes_new_static (req, strlen (req)));
  body = fetch (session, msg, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (soup_message_get_status (msg), ==, 200);
  g_assert_true (json_parser_load_from_data (parser, g_bytes_get_data (body, NULL),
                                             g_bytes_get_size (body), &error));
  content = json_object_get_string_member (
    json_object_get_object_member (
      json_array_get_object_element (
        json_object_get_array_member (json_node_get_object (json_parser_get_root (parser)),
                                      "choices"), 0), "message"), "content");
  if (*bln_chat_page_last_reasoning (page) == '\0')
    g_assert_cmpstr (bln_chat_page_last_reply (page), ==, content);
  else
    g_assert_nonnull (strstr (content, bln_chat_page_last_reply (page)));
}

/* The first widget of @type under @root, depth first (borrowed), or NULL. */
static GtkWidget *
find_widget (GtkWidget *root, GType type)
{
  if (G_TYPE_CHECK_INSTANCE_TYPE (root, type))
    return root;
  for (GtkWidget *c = gtk_widget_get_first_child (root); c; c = gtk_widget_get_next_sibling (c))
    {
      GtkWidget *found = find_widget (c, type);
      if (found)
        return found;
    }
  return NULL;
}

static gint64
sql_count (const char *sql)
{
  g_autofree char *path = g_build_filename (data_home, "baleen", "baleen.db", NULL);
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  gint64 n = -1;

  g_assert_cmpint (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
  g_assert_cmpint (sqlite3_prepare_v2 (db, sql, -1, &st, NULL), ==, SQLITE_OK);
  if (sqlite3_step (st) == SQLITE_ROW)
    n = sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  sqlite3_close (db);
  return n;
}

static gboolean
n_rules_is (gpointer data)
{
  BlnRulesEditor *ed = g_object_get_data (G_OBJECT (data), "editor");
  return bln_rules_editor_n_rules (ed) == GPOINTER_TO_UINT (g_object_get_data (data, "want"));
}

/* Fills the rule form and presses Add; waits until the list has @want rules. */
static gboolean
add_rule (BlnRulesEditor *ed, const char *pattern, guint kind, guint action, guint want)
{
  GtkWidget *add = bln_rules_editor_get_widget (ed, "add");

  gtk_editable_set_text (GTK_EDITABLE (bln_rules_editor_get_widget (ed, "pattern")), pattern);
  adw_combo_row_set_selected (ADW_COMBO_ROW (bln_rules_editor_get_widget (ed, "kind")), kind);
  adw_combo_row_set_selected (ADW_COMBO_ROW (bln_rules_editor_get_widget (ed, "action")), action);
  adw_combo_row_set_selected (ADW_COMBO_ROW (bln_rules_editor_get_widget (ed, "scope")), 2);
  g_assert_true (gtk_widget_get_sensitive (add));
  g_object_set_data (G_OBJECT (add), "editor", ed);
  g_object_set_data (G_OBJECT (add), "want", GUINT_TO_POINTER (want));
  gtk_widget_activate (add);
  return wait_until (n_rules_is, add, 5);
}

static void
test_rules (void)
{
  BlnRulesEditor *ed;
  g_autofree char *path = g_build_filename (data_home, "baleen", "baleen.db", NULL);
  g_autofree char *pattern = NULL;
  g_autofree char *action = NULL;
  g_autofree char *result = NULL;
  g_autofree char *remove_name = NULL;
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (GPtrArray) rules = NULL;
  g_autoptr (GError) error = NULL;
  const BlnRule *r;

  bln_window_show_page (window, "safety");
  ed = BLN_RULES_EDITOR (find_widget (bln_window_get_page (window, "safety"),
                                      BLN_TYPE_RULES_EDITOR));
  g_assert_nonnull (ed);
  g_assert_cmpuint (bln_rules_editor_n_rules (ed), ==, 0);

  /* A word, masked, case-insensitive (the form's default), both ways. */
  g_assert_true (add_rule (ed, "forbidden", 0, 1, 1));
  /* A regular expression that does not compile is refused and not stored. */
  g_assert_false (add_rule (ed, "(unclosed", 1, 0, 2));
  g_assert_cmpuint (bln_rules_editor_n_rules (ed), ==, 1);
  g_assert_cmpint (sql_count ("SELECT count(*) FROM rules"), ==, 1);
  /* A second one to remove again. */
  g_assert_true (add_rule (ed, "gr[ae]y", 1, 2, 2));
  g_assert_cmpint (sql_count ("SELECT count(*) FROM rules"), ==, 2);

  /* In the file, with plain SQL. */
  pattern = g_strdup_printf ("%" G_GINT64_FORMAT,
                             sql_count ("SELECT count(*) FROM rules WHERE pattern = 'forbidden' "
                                        "AND kind = 'word' AND action = 'mask' AND scope = 'both' "
                                        "AND nocase = 1 AND enabled = 1"));
  g_assert_cmpstr (pattern, ==, "1");
  action = g_strdup_printf ("%" G_GINT64_FORMAT,
                            sql_count ("SELECT count(*) FROM rules WHERE pattern = 'gr[ae]y' AND "
                                       "kind = 'regex' AND action = 'log'"));
  g_assert_cmpstr (action, ==, "1");

  /* Trying a text: the word matches whatever its case and is masked. */
  result = bln_rules_editor_try_text (ed, "This is FORBIDDEN, and grey.");
  g_assert_nonnull (strstr (result, "Masked: This is *********, and grey."));
  g_assert_nonnull (strstr (result, "“grey” matches “gr[ae]y”"));
  g_free (result);
  result = bln_rules_editor_try_text (ed, "nothing here");
  g_assert_cmpstr (result, ==, "No rule matches this text.");
  gtk_editable_set_text (GTK_EDITABLE (bln_rules_editor_get_widget (ed, "test")), "gray sky");
  g_signal_emit_by_name (bln_rules_editor_get_widget (ed, "test"), "apply");
  g_assert_nonnull (strstr (adw_action_row_get_subtitle (ADW_ACTION_ROW (
                      bln_rules_editor_get_widget (ed, "test-result"))), "Only logged."));

  /* Switched off with its switch: kept, but no longer matched. */
  {
    g_autofree char *sw_name = g_strdup_printf (
      "switch:%" G_GINT64_FORMAT, sql_count ("SELECT id FROM rules WHERE kind = 'regex'"));
    GtkWidget *sw = bln_rules_editor_get_widget (ed, sw_name);
    g_autofree char *off = NULL;

    g_assert_true (GTK_IS_SWITCH (sw));
    g_assert_true (gtk_switch_get_active (GTK_SWITCH (sw)));
    gtk_switch_set_active (GTK_SWITCH (sw), FALSE);
    g_assert_cmpint (sql_count ("SELECT enabled FROM rules WHERE kind = 'regex'"), ==, 0);
    off = bln_rules_editor_try_text (ed, "gray sky");
    g_assert_cmpstr (off, ==, "No rule matches this text.");
    gtk_switch_set_active (GTK_SWITCH (sw), TRUE);
    g_assert_cmpint (sql_count ("SELECT enabled FROM rules WHERE kind = 'regex'"), ==, 1);
  }

  /* Removing the regex with its button. */
  remove_name = g_strdup_printf ("remove:%" G_GINT64_FORMAT,
                                 sql_count ("SELECT id FROM rules WHERE kind = 'regex'"));
  gtk_widget_activate (bln_rules_editor_get_widget (ed, remove_name));
  g_object_set_data (G_OBJECT (ed), "editor", ed);
  g_object_set_data (G_OBJECT (ed), "want", GUINT_TO_POINTER (1));
  g_assert_true (wait_until (n_rules_is, ed, 5));
  g_assert_cmpint (sql_count ("SELECT count(*) FROM rules"), ==, 1);

  /* As a restarted app reads them. */
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  rules = bln_rules_list (db, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (rules->len, ==, 1);
  r = rules->pdata[0];
  g_assert_cmpstr (r->pattern, ==, "forbidden");
  g_assert_cmpint (r->kind, ==, BLN_RULE_WORD);
  g_assert_cmpint (r->action, ==, BLN_RULE_MASK);
  g_assert_cmpint (r->scope, ==, BLN_RULE_BOTH);
  g_assert_true (r->nocase);
}

/* The server enforces a rule added in the window: a request containing a
 * blocked word is refused with 400 content_filter. */
static void
test_rule_enforced (void)
{
  BlnRulesEditor *ed = BLN_RULES_EDITOR (find_widget (bln_window_get_page (window, "safety"),
                                                      BLN_TYPE_RULES_EDITOR));
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *url = NULL;
  g_autofree char *req = NULL;
  guint n = bln_rules_editor_n_rules (ed);

  g_assert_true (add_rule (ed, "zebra", 0, 0, n + 1));
  if (!bln_application_server_url (app))
    g_assert_true (bln_application_start_server (app, &error));
  g_assert_true (wait_until (server_on, NULL, 10));
  url = g_strconcat (bln_application_server_url (app), "v1/chat/completions", NULL);
  req = g_strdup_printf ("{\"model\":\"%s\",\"max_tokens\":4,\"messages\":[{\"role\":"
                         "\"user\",\"content\":\"Tell me about the Zebra\"}]}", model_id);
  msg = soup_message_new ("POST", url);
  soup_message_set_request_body_from_bytes (msg, "application/json",
                                            g_bytes_new_static (req, strlen (req)));
  body = fetch (session, msg, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (soup_message_get_status (msg), ==, 400);
  g_assert_nonnull (g_strstr_len (g_bytes_get_data (body, NULL), g_bytes_get_size (body),
                                  "content_filter"));
}

static gboolean
shown_is (gpointer data)
{
  return bln_audit_view_n_shown (data) == GPOINTER_TO_UINT (g_object_get_data (data, "want"));
}

static gboolean
search_for (BlnAuditView *view, const char *text, guint want)
{
  g_object_set_data (G_OBJECT (view), "want", GUINT_TO_POINTER (want));
  gtk_editable_set_text (GTK_EDITABLE (bln_audit_view_get_widget (view, "search")), text);
  return wait_until (shown_is, view, 5);
}

typedef struct {
  gboolean done, ok;
  GError *error;
} Exported;

static void
export_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Exported *e = user_data;

  e->ok = bln_audit_view_export_finish (BLN_AUDIT_VIEW (source), result, &e->error);
  e->done = TRUE;
}

static gboolean
export_finished (gpointer data)
{
  return ((Exported *) data)->done;
}

static void
export_to (BlnAuditView *view, const char *path, BlnAuditFormat format)
{
  g_autoptr (GFile) file = g_file_new_for_path (path);
  Exported e = { 0 };

  bln_audit_view_export_async (view, file, format, NULL, export_done, &e);
  g_assert_true (wait_until (export_finished, &e, 30));
  g_assert_no_error (e.error);
  g_assert_true (e.ok);
}

static void
test_audit (void)
{
  BlnAuditView *view;
  BlnDb *db = bln_application_db (app);
  g_autoptr (GError) error = NULL;
  g_autofree char *jsonl = g_build_filename (data_home, "audit.jsonl", NULL);
  g_autofree char *csv = g_build_filename (data_home, "audit.csv", NULL);
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GPtrArray) tail = NULL;
  static const struct { const char *model, *endpoint, *client, *prompt; gint64 key; } recs[] = {
    { "alpha-model", "/v1/chat/completions", "10.0.0.7", "a question about whales", 7 },
    { "beta-model", "/v1/completions", "10.0.0.8", "comma, \"quote\" and\nnewline", 0 },
    { "beta-model", "/v1/embeddings", "192.168.1.2", "krill", 9 },
  };
  const char *argv[] = { "python3", "-c",
    "import csv, json, sys\n"
    "rows = [json.loads(l) for l in open(sys.argv[1], encoding='utf-8') if l.strip()]\n"
    "with open(sys.argv[2], newline='', encoding='utf-8') as f:\n"
    "    table = list(csv.DictReader(f))\n"
    "print(json.dumps({'jsonl': rows, 'csv': table}))\n",
    jsonl, csv, NULL };
  gint64 n_before, total;
  int status;
  JsonObject *root;
  JsonArray *lines, *table;

  g_assert_nonnull (db);
  bln_window_show_page (window, "safety");
  view = BLN_AUDIT_VIEW (find_widget (bln_window_get_page (window, "safety"),
                                      BLN_TYPE_AUDIT_VIEW));
  g_assert_nonnull (view);
  /* The chat and the refused request before were recorded by the server. */
  bln_audit_view_refresh (view);
  n_before = bln_audit_count (db, &error);
  g_assert_no_error (error);
  g_assert_cmpint (n_before, >=, 2);
  g_assert_cmpuint (bln_audit_view_n_records (view), ==, n_before);
  g_assert_true (search_for (view, "content_filter", 1) || search_for (view, "refused", 1));

  for (guint i = 0; i < G_N_ELEMENTS (recs); i++)
    {
      BlnAuditRecord rec = { 0 };
      rec.time_us = g_get_real_time () - (3 - i) * G_USEC_PER_SEC;
      rec.request_id = g_strdup_printf ("req-%u", i);
      rec.client = (char *) recs[i].client;
      rec.key_id = recs[i].key;
      rec.model = (char *) recs[i].model;
      rec.endpoint = (char *) recs[i].endpoint;
      rec.prompt_tokens = 10 + i;
      rec.completion_tokens = 20 + i;
      rec.ttft_ms = 12.5;
      rec.total_ms = 99;
      rec.finish_reason = (char *) "stop";
      rec.prompt = (char *) recs[i].prompt;
      rec.completion = (char *) "ok";
      g_assert_cmpint (bln_audit_write (db, &rec, BLN_PRIVACY_FULL, &error), >, 0);
      g_assert_no_error (error);
      g_free (rec.request_id);
    }
  gtk_widget_activate (bln_audit_view_get_widget (view, "refresh"));
  g_object_set_data (G_OBJECT (view), "want", GUINT_TO_POINTER (n_before + 3));
  g_assert_true (search_for (view, "", n_before + 3));
  g_assert_cmpuint (bln_audit_view_n_records (view), ==, n_before + 3);

  /* Filtered by model, endpoint, key, client, prompt text, several words. */
  g_assert_true (search_for (view, "alpha-model", 1));
  g_assert_true (search_for (view, "beta-model", 2));
  g_assert_true (search_for (view, "/v1/embeddings", 1));
  g_assert_true (search_for (view, "key:9", 1));
  g_assert_true (search_for (view, "10.0.0.", 2));
  g_assert_true (search_for (view, "WHALES", 1));
  g_assert_true (search_for (view, "beta krill", 1));
  g_assert_true (search_for (view, "no-such-thing", 0));
  g_assert_true (search_for (view, "", n_before + 3));

  /* Exported, and read back by Python's json and csv modules. */
  export_to (view, jsonl, BLN_AUDIT_JSONL);
  export_to (view, csv, BLN_AUDIT_CSV);
  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               &out, &err, &status, &error));
  g_assert_no_error (error);
  if (status != 0)
    g_printerr ("%s", err);
  g_assert_cmpint (status, ==, 0);
  g_assert_true (json_parser_load_from_data (parser, out, -1, &error));
  root = json_node_get_object (json_parser_get_root (parser));
  lines = json_object_get_array_member (root, "jsonl");
  table = json_object_get_array_member (root, "csv");
  total = bln_audit_count (db, NULL);
  g_assert_cmpint (json_array_get_length (lines), ==, total);
  g_assert_cmpint (json_array_get_length (table), ==, total);
  tail = bln_audit_tail (db, (guint) total, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < total; i++)
    {
      const BlnAuditRecord *rec = tail->pdata[i];
      JsonObject *line = json_array_get_object_element (lines, i);
      JsonObject *row = json_array_get_object_element (table, i);
      g_autofree char *tokens = g_strdup_printf ("%" G_GINT64_FORMAT, rec->prompt_tokens);

      g_assert_cmpstr (json_object_get_string_member (line, "model"), ==, rec->model);
      g_assert_cmpstr (json_object_get_string_member (line, "endpoint"), ==, rec->endpoint);
      g_assert_cmpint (json_object_get_int_member (line, "prompt_tokens"), ==,
                       rec->prompt_tokens);
      g_assert_cmpstr (json_object_get_string_member (row, "model"), ==, rec->model);
      g_assert_cmpstr (json_object_get_string_member (row, "client"), ==, rec->client);
      g_assert_cmpstr (json_object_get_string_member (row, "prompt_tokens"), ==, tokens);
      if (rec->prompt)
        {
          g_assert_cmpstr (json_object_get_string_member (line, "prompt"), ==, rec->prompt);
          g_assert_cmpstr (json_object_get_string_member (row, "prompt"), ==, rec->prompt);
        }
    }
}

static gboolean
has_positive (gpointer data)
{
  BlnPlotSeries *s = bln_plot_get_series (data);

  for (guint i = 0; i < bln_plot_series_length (s); i++)
    if (bln_plot_series_get (s, i) > 0)
      return TRUE;
  return FALSE;
}

static gboolean
samples_at_least (gpointer data)
{
  return bln_live_stats_n_samples (data) >=
         GPOINTER_TO_UINT (g_object_get_data (G_OBJECT (data), "want"));
}

/* A gauge's value in a Prometheus text exposition (the server's /metrics). */
static double
prometheus_value (const char *text, const char *name)
{
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);

  for (guint i = 0; lines[i]; i++)
    if (g_str_has_prefix (lines[i], name) && lines[i][strlen (name)] == ' ')
      return g_ascii_strtod (lines[i] + strlen (name) + 1, NULL);
  return NAN;
}

/* After the chat: the Performance and Caches plots have sampled the server
 * and the engine once a second. */
static void
test_live_stats (void)
{
  BlnLiveStats *perf = BLN_LIVE_STATS (find_widget (bln_window_get_page (window, "performance"),
                                                    BLN_TYPE_LIVE_STATS));
  BlnLiveStats *caches = BLN_LIVE_STATS (find_widget (bln_window_get_page (window, "caches"),
                                                      BLN_TYPE_LIVE_STATS));
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *url = NULL;
  g_autofree char *text = NULL;
  g_autofree char *total = NULL;
  BlnPlot *p;
  guint n;

  g_assert_nonnull (perf);
  g_assert_nonnull (caches);
  bln_window_show_page (window, "performance");
  /* The pages keep sampling: two more points within three seconds. */
  n = bln_live_stats_n_samples (perf);
  g_object_set_data (G_OBJECT (perf), "want", GUINT_TO_POINTER (n + 2));
  g_assert_true (wait_until (samples_at_least, perf, 3.5));
  g_assert_cmpuint (bln_plot_series_length (bln_plot_get_series (
                      bln_live_stats_get_plot (perf, "queue"))), >=, n + 2);

  /* The chat's tokens and first-token times went through the server. */
  g_assert_true (has_positive (bln_live_stats_get_plot (perf, "tokens-per-second")));
  g_assert_true (has_positive (bln_live_stats_get_plot (perf, "ttft")));
  p = bln_live_stats_get_plot (perf, "queue");
  g_assert_cmpfloat (bln_plot_series_last (bln_plot_get_series (p)), ==, 0);
  g_assert_cmpstr (bln_plot_get_value_text (p), ==, "0");
  g_assert_true (g_str_has_prefix (adw_action_row_get_subtitle (
                   bln_live_stats_get_row (perf, "device")), "CPU: continuous batching"));
  /* No NVML here (the test points BALEEN_NVML_LIBRARY at nothing): the GPU
   * plots say so and hold no made-up samples. */
  p = bln_live_stats_get_plot (perf, "gpu-utilization");
  g_assert_nonnull (bln_plot_get_message (p));
  g_assert_true (g_str_has_prefix (bln_plot_get_message (p), "No NVIDIA GPU"));
  g_assert_cmpuint (bln_plot_series_length (bln_plot_get_series (p)), ==, 0);
  g_assert_nonnull (bln_plot_get_message (bln_live_stats_get_plot (perf, "gpu-memory")));

  /* Caches: the same numbers the server exports on /metrics. */
  bln_window_show_page (window, "caches");
  bln_live_stats_sample (caches);
  if (!bln_application_server_url (app))
    g_assert_true (bln_application_start_server (app, &error));
  url = g_strconcat (bln_application_server_url (app), "metrics", NULL);
  msg = soup_message_new ("GET", url);
  body = fetch (session, msg, &error);
  g_assert_no_error (error);
  text = g_strndup (g_bytes_get_data (body, NULL), g_bytes_get_size (body));
  p = bln_live_stats_get_plot (caches, "prefix-hit-rate");
  g_assert_null (bln_plot_get_message (p));
  /* The plain request after the streamed one reused its prompt's blocks. */
  g_assert_cmpfloat (bln_plot_series_last (bln_plot_get_series (p)), >, 0);
  g_assert_cmpfloat (fabs (bln_plot_series_last (bln_plot_get_series (p)) -
                           100 * prometheus_value (text, "baleen_kv_prefix_hit_ratio")), <, 1e-6);
  p = bln_live_stats_get_plot (caches, "kv-blocks");
  g_assert_cmpfloat (bln_plot_series_last (bln_plot_get_series (p)), ==,
                     prometheus_value (text, "baleen_kv_blocks_used"));
  g_assert_cmpfloat (bln_plot_get_top (p), ==, prometheus_value (text, "baleen_kv_blocks_total"));
  total = g_strdup_printf (" of %.0f blocks", prometheus_value (text, "baleen_kv_blocks_total"));
  g_assert_nonnull (strstr (adw_action_row_get_subtitle (bln_live_stats_get_row (caches, "usage")),
                            total));
}

/* POSTs a greedy chat request with @content to the app's server and returns
 * the prompt tokens the server says came from the prefix cache
 * (usage.prompt_tokens_details.cached_tokens). */
static gint64
chat_cached_tokens (const char *content)
{
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *url = NULL;
  g_autofree char *req = NULL;
  JsonObject *usage;

  g_assert_nonnull (bln_application_server_url (app));
  url = g_strconcat (bln_application_server_url (app), "v1/chat/completions", NULL);
  req = g_strdup_printf ("{\"model\":\"%s\",\"temperature\":0,\"max_tokens\":4,"
                         "\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                         bln_application_loaded_id (app), content);
  msg = soup_message_new ("POST", url);
  soup_message_set_request_body_from_bytes (msg, "application/json",
                                            g_bytes_new_static (req, strlen (req)));
  body = fetch (session, msg, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (soup_message_get_status (msg), ==, 200);
  g_assert_true (json_parser_load_from_data (parser, g_bytes_get_data (body, NULL),
                                             g_bytes_get_size (body), &error));
  usage = json_object_get_object_member (json_node_get_object (json_parser_get_root (parser)),
                                         "usage");
  g_assert_cmpint (json_object_get_int_member (usage, "prompt_tokens"), >, 32);
  return json_object_get_int_member (json_object_get_object_member (usage,
                                                                    "prompt_tokens_details"),
                                     "cached_tokens");
}

static gboolean
clear_reported (gpointer data)
{
  return bln_live_stats_n_clear_results (data) >
         GPOINTER_TO_UINT (g_object_get_data (G_OBJECT (data), "before"));
}

/* Presses *Clear Cache* and returns what the page then says. */
static const char *
click_clear (BlnLiveStats *caches)
{
  GtkWidget *button = bln_live_stats_get_clear_button (caches);

  g_assert_nonnull (button);
  g_assert_true (gtk_widget_get_sensitive (button));
  g_object_set_data (G_OBJECT (caches), "before",
                     GUINT_TO_POINTER (bln_live_stats_n_clear_results (caches)));
  gtk_widget_activate (button);
  g_assert_true (wait_until (clear_reported, caches, 30));
  g_assert_false (bln_live_stats_is_clearing (caches));
  g_assert_nonnull (bln_live_stats_get_clear_result (caches));
  return bln_live_stats_get_clear_result (caches);
}

static const char *long_prompt =
  "Tell me, in a few words, why whales and krill share the cold southern ocean, "
  "and what each of them eats through the long winter.";

/* The Caches page's Clear Cache button: the cached prefix blocks of the
 * running engine are freed (the page says how many, the engine's statistics
 * and the server's /metrics agree), and the next identical request finds no
 * prefix until it is cached again. */
static void
test_clear_cache (void)
{
  BlnLiveStats *caches = BLN_LIVE_STATS (find_widget (bln_window_get_page (window, "caches"),
                                                      BLN_TYPE_LIVE_STATS));
  BlnEngineWorkerStats st;
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *url = NULL;
  g_autofree char *text = NULL;
  g_autofree char *want = NULL;
  int cached_blocks;

  bln_window_show_page (window, "caches");
  g_assert_nonnull (bln_application_worker (app));
  if (!bln_application_server_url (app))
    g_assert_true (bln_application_start_server (app, &error));
  chat_cached_tokens (long_prompt);
  g_assert_cmpint (chat_cached_tokens (long_prompt), >, 0);
  bln_engine_worker_get_stats (bln_application_worker (app), &st);
  cached_blocks = st.kv_blocks_cached;
  g_assert_cmpint (cached_blocks, >, 0);

  want = g_strdup_printf ("Cleared %d cached block%s (%d tokens each).", cached_blocks,
                          cached_blocks == 1 ? "" : "s", st.kv_block_size);
  g_assert_cmpstr (click_clear (caches), ==, want);
  bln_engine_worker_get_stats (bln_application_worker (app), &st);
  g_assert_cmpint (st.kv_blocks_cached, ==, 0);
  g_assert_cmpint (st.kv_blocks_used, ==, 0);
  g_assert_true (gtk_widget_get_sensitive (bln_live_stats_get_clear_button (caches)));
  url = g_strconcat (bln_application_server_url (app), "metrics", NULL);
  msg = soup_message_new ("GET", url);
  body = fetch (session, msg, &error);
  g_assert_no_error (error);
  text = g_strndup (g_bytes_get_data (body, NULL), g_bytes_get_size (body));
  g_assert_cmpfloat (prometheus_value (text, "baleen_kv_blocks_cached"), ==, 0);

  /* nothing left: a second press says so */
  g_assert_cmpstr (click_clear (caches), ==, "Nothing to clear: no cached prefix blocks.");
  /* the same request again computes its whole prompt, then is cached again */
  g_assert_cmpint (chat_cached_tokens (long_prompt), ==, 0);
  g_assert_cmpint (chat_cached_tokens (long_prompt), >, 0);
}

static gboolean
server_up (gpointer data)
{
  return bln_application_server_url (app) != NULL;
}

static gboolean
model_unloaded (gpointer data)
{
  return bln_application_loaded_id (app) == NULL && bln_application_worker (app) == NULL;
}

static gboolean
model_loaded (gpointer data)
{
  return g_strcmp0 (bln_application_loaded_id (app), data) == 0 && !bln_application_busy (app)
         && bln_application_worker (app) != NULL;
}

static gboolean
load_button_says (gpointer data)
{
  BlnModelsPage *page = BLN_MODELS_PAGE (bln_window_get_page (window, "models"));
  GtkWidget *b = bln_models_page_get_button (page, model_id, "load");

  return b && g_strcmp0 (gtk_button_get_label (GTK_BUTTON (b)), data) == 0;
}

/* Unloads and loads the model again with the Models page's button. */
static void
reload_model (void)
{
  BlnModelsPage *page = BLN_MODELS_PAGE (bln_window_get_page (window, "models"));

  /* "clicked" at once: an activated button emits it a moment later, and the
   * rows may be rebuilt meanwhile (the old host is retired asynchronously) */
  bln_window_show_page (window, "models");
  g_assert_true (wait_until (load_button_says, (gpointer) "Unload", 10));
  g_signal_emit_by_name (bln_models_page_get_button (page, model_id, "load"), "clicked");
  g_assert_true (wait_until (model_unloaded, NULL, 30));
  g_assert_true (wait_until (load_button_says, (gpointer) "Load", 10));
  g_signal_emit_by_name (bln_models_page_get_button (page, model_id, "load"), "clicked");
  g_assert_true (wait_until (model_loaded, model_id, 60));
  g_assert_true (wait_until (server_up, NULL, 30));
}

/* The Caches page's KV budget and prefix cache switch, set through their
 * widgets, are in SQLite and reach the engine at the next load: the pool
 * has as many blocks as the budget holds, and with the prefix cache off a
 * repeated prompt finds nothing and nothing stays cached. */
static void
test_cache_settings_apply (void)
{
  BlnSettingsPage *page = BLN_SETTINGS_PAGE (bln_window_get_page (window, "caches"));
  BlnLiveStats *caches = BLN_LIVE_STATS (find_widget (GTK_WIDGET (page), BLN_TYPE_LIVE_STATS));
  GtkWidget *budget = bln_settings_page_get_editor (page, "cache.kv_budget_mb");
  GtkWidget *prefix = bln_settings_page_get_editor (page, "cache.prefix");
  BlnEngineWorker *worker;
  BlnEngineWorkerStats st;
  g_autofree char *v_budget = NULL;
  g_autofree char *v_prefix = NULL;
  size_t block_bytes;

  bln_window_show_page (window, "caches");
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (budget), 3);
  g_assert_true (toggle (prefix, FALSE));
  v_budget = sql_value ("cache.kv_budget_mb");
  v_prefix = sql_value ("cache.prefix");
  g_assert_cmpstr (v_budget, ==, "3");
  g_assert_cmpstr (v_prefix, ==, "false");

  reload_model ();
  worker = bln_application_worker (app);
  bln_engine_worker_get_stats (worker, &st);
  g_assert_true (st.batching);
  block_bytes = bln_kv_cache_block_bytes_for (bln_engine_worker_model (worker),
                                              st.kv_block_size);
  /* the budget holds floor (3 MiB / block) blocks */
  g_assert_cmpint (st.kv_blocks_total, ==, (int) ((3u << 20) / block_bytes));
  g_assert_cmpuint (st.kv_bytes, <=, 3u << 20);
  g_assert_cmpint (chat_cached_tokens (long_prompt), ==, 0);
  g_assert_cmpint (chat_cached_tokens (long_prompt), ==, 0);
  bln_engine_worker_get_stats (worker, &st);
  g_assert_cmpuint (st.prefix_lookup_tokens, ==, 0);
  g_assert_cmpint (st.kv_blocks_cached, ==, 0);
  bln_window_show_page (window, "caches");
  g_assert_cmpstr (click_clear (caches), ==, "Nothing to clear: no cached prefix blocks.");

  /* back to the defaults: a pool sized from the context, prefixes reused */
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (budget), 0);
  g_assert_true (toggle (prefix, TRUE));
  reload_model ();
  worker = bln_application_worker (app);
  bln_engine_worker_get_stats (worker, &st);
  g_assert_cmpint (st.kv_blocks_total, >, (int) ((3u << 20) / block_bytes));
  chat_cached_tokens (long_prompt);
  g_assert_cmpint (chat_cached_tokens (long_prompt), >, 0);
}

static gboolean
no_cached_blocks (gpointer data)
{
  BlnEngineWorkerStats st;

  bln_engine_worker_get_stats (bln_application_worker (app), &st);
  return st.kv_blocks_cached == 0;
}

/* The Caches page's session lifetime: stored in SQLite (and read back as a
 * restarted app does), applied at the next load. With 1 s the engine frees
 * the cached prefix of a finished request by itself about a second later
 * (the scheduler's idle wake-up), so the same prompt again finds nothing;
 * with 0 (never) the blocks stay past that time and are reused. */
static void
test_session_ttl_apply (void)
{
  BlnSettingsPage *page = BLN_SETTINGS_PAGE (bln_window_get_page (window, "caches"));
  GtkWidget *ttl = bln_settings_page_get_editor (page, "cache.session_ttl_s");
  g_autofree char *path = g_build_filename (data_home, "baleen", "baleen.db", NULL);
  g_autofree char *v_ttl = NULL;
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (BlnSettings) core = NULL;
  g_autoptr (BlnUiSettings) ui = NULL;
  g_autoptr (GError) error = NULL;

  bln_window_show_page (window, "caches");
  g_assert_true (GTK_IS_SPIN_BUTTON (ttl));
  g_assert_true (gtk_widget_get_sensitive (ttl));
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (ttl), 1);
  v_ttl = sql_value ("cache.session_ttl_s");
  g_assert_cmpstr (v_ttl, ==, "1");
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  core = bln_settings_new (db, &error);
  g_assert_no_error (error);
  ui = bln_ui_settings_new (db, core, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_ui_settings_get_int (ui, "cache.session_ttl_s"), ==, 1);

  reload_model ();
  chat_cached_tokens (long_prompt);
  g_assert_true (wait_until (no_cached_blocks, NULL, 10));
  g_assert_cmpint (chat_cached_tokens (long_prompt), ==, 0);

  /* 0: never expire; the blocks outlive the same wait */
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (ttl), 0);
  g_free (v_ttl);
  v_ttl = sql_value ("cache.session_ttl_s");
  g_assert_cmpstr (v_ttl, ==, "0");
  reload_model ();
  chat_cached_tokens (long_prompt);
  g_assert_false (wait_until (no_cached_blocks, NULL, 2));
  g_assert_cmpint (chat_cached_tokens (long_prompt), >, 0);
}

/* The Caches page's sliding attention window: stored in SQLite (read back as
 * a restarted app does), applied at the next load (the engine reports the
 * window it runs with, and a chat is answered under it), and off again with
 * 0. The CPU backend is chosen for the case: the GPU refuses a window. */
static void
test_sliding_window_apply (void)
{
  BlnSettingsPage *page = BLN_SETTINGS_PAGE (bln_window_get_page (window, "caches"));
  GtkWidget *win = bln_settings_page_get_editor (page, "cache.sliding_window");
  BlnUiSettings *live = bln_application_settings (app);
  g_autofree char *path = g_build_filename (data_home, "baleen", "baleen.db", NULL);
  g_autofree char *v_win = NULL;
  g_autofree char *backend = bln_ui_settings_get_string (live, "perf.backend");
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (BlnSettings) core = NULL;
  g_autoptr (BlnUiSettings) ui = NULL;
  g_autoptr (GError) error = NULL;
  BlnEngineWorkerStats st;

  g_assert_true (bln_ui_settings_set_text (live, "perf.backend", "cpu", &error));
  g_assert_no_error (error);
  bln_window_show_page (window, "caches");
  g_assert_true (GTK_IS_SPIN_BUTTON (win));
  g_assert_true (gtk_widget_get_sensitive (win));
  reload_model ();
  bln_engine_worker_get_stats (bln_application_worker (app), &st);
  g_assert_cmpint (st.sliding_window, ==, 0);

  bln_window_show_page (window, "caches");
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (win), 8);
  v_win = sql_value ("cache.sliding_window");
  g_assert_cmpstr (v_win, ==, "8");
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  core = bln_settings_new (db, &error);
  g_assert_no_error (error);
  ui = bln_ui_settings_new (db, core, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_ui_settings_get_int (ui, "cache.sliding_window"), ==, 8);
  /* not before the next load */
  bln_engine_worker_get_stats (bln_application_worker (app), &st);
  g_assert_cmpint (st.sliding_window, ==, 0);

  reload_model ();
  bln_engine_worker_get_stats (bln_application_worker (app), &st);
  g_assert_true (st.batching);
  g_assert_cmpint (st.sliding_window, ==, 8);
  chat_cached_tokens (long_prompt);

  bln_window_show_page (window, "caches");
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (win), 0);
  g_free (v_win);
  v_win = sql_value ("cache.sliding_window");
  g_assert_cmpstr (v_win, ==, "0");
  g_assert_true (bln_ui_settings_set_text (live, "perf.backend", backend, &error));
  g_assert_no_error (error);
  reload_model ();
  bln_engine_worker_get_stats (bln_application_worker (app), &st);
  g_assert_cmpint (st.sliding_window, ==, 0);
}

static gboolean
page_idle (gpointer data)
{
  return !bln_models_page_is_busy (data);
}

/* Importing the tiny llama's HF folder as q8_0 from the Models page: it is
 * converted off the main thread, listed, and matches the gguf package's
 * quantisation of the reference GGUF of the same model. */
static void
test_import_hf (void)
{
  BlnModelsPage *page = BLN_MODELS_PAGE (bln_window_get_page (window, "models"));
  const char *golden = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *src = g_build_filename (golden ? golden : "tests/golden", "models", "llama",
                                           NULL);
  g_autofree char *ref = g_build_filename (src, "model.gguf", NULL);
  /* A folder name of its own: the library would give "llama/model-q8_0.gguf"
   * and "llama-q8_0.gguf" the same id. */
  g_autofree char *folder = g_build_filename (data_home, "downloads", "tiny-hf-llama", NULL);
  static const char *files[] = { "config.json", "model.safetensors", "tokenizer.json",
                                 "tokenizer_config.json" };
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr (GError) error = NULL;
  BlnModelLibrary *lib;
  const char *converted;
  const char *script = g_getenv ("BALEEN_CHECK_HF_GGUF");
  gboolean listed = FALSE;
  guint n_before;
  int status;

  g_mkdir_with_parents (folder, 0755);
  for (guint i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *from = g_build_filename (src, files[i], NULL);
      g_autofree char *to = g_build_filename (folder, files[i], NULL);
      g_autofree char *contents = NULL;
      gsize len;
      g_assert_true (g_file_get_contents (from, &contents, &len, NULL));
      g_assert_true (g_file_set_contents (to, contents, len, NULL));
    }
  bln_window_show_page (window, "models");
  n_before = bln_model_library_n_models (bln_application_library (app));
  g_assert_true (bln_models_page_import_hf (page, folder, BLN_TYPE_Q8_0, &error));
  g_assert_no_error (error);
  g_assert_true (bln_models_page_is_busy (page));
  /* One thing at a time. */
  g_assert_false (bln_models_page_import_hf (page, folder, BLN_TYPE_F16, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_BUSY);
  g_clear_error (&error);
  g_assert_true (wait_until (page_idle, page, 60));

  converted = bln_models_page_last_converted (page);
  g_assert_nonnull (converted);
  g_assert_true (g_str_has_suffix (converted, "/tiny-hf-llama-q8_0.gguf"));
  lib = bln_application_library (app);
  g_assert_cmpuint (bln_model_library_n_models (lib), ==, n_before + 1);
  for (guint i = 0; i < bln_model_library_n_models (lib); i++)
    listed = listed || g_strcmp0 (bln_model_library_get (lib, i)->path, converted) == 0;
  g_assert_true (listed);

  /* The old library is retired on a timer, which rebuilds the rows: let it
   * happen before the next case holds a row's button. */
  for (int i = 0; i < 100; i++)
    g_main_context_iteration (NULL, FALSE), g_usleep (2000);

  /* The same again would overwrite it: refused. */
  g_assert_false (bln_models_page_import_hf (page, folder, BLN_TYPE_Q8_0, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS);

  if (script)
    {
      const char *argv[] = { "python3", script, "compare", converted, ref, "q8_0",
                             "tiny-hf-llama", NULL };
      g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                                   &out, &err, &status, NULL));
      if (WIFEXITED (status) && WEXITSTATUS (status) == 77)
        g_test_message ("gguf check skipped: %s", out);
      else
        {
          if (status != 0)
            g_printerr ("%s%s", out, err);
          g_assert_cmpint (status, ==, 0);
        }
    }
}

/* With BALEEN_SCREENSHOT_DIR set (tools/screenshots.sh), saves every page as
 * DIR/NAME.png once the cases have run, so the pictures show real state. */
static void
save_screenshots (const char *dir)
{
  static const char *pages[] = { "models", "server", "chat", "caches", "safety", "performance" };

  /* The window's content under the toast overlay: header bar and page,
   * without the toasts the cases left. */
  GtkWidget *content = adw_toast_overlay_get_child (ADW_TOAST_OVERLAY (
    adw_application_window_get_content (ADW_APPLICATION_WINDOW (window))));

  g_mkdir_with_parents (dir, 0755);
  gtk_window_set_default_size (GTK_WINDOW (window), 1000, 720);
  for (guint i = 0; i < G_N_ELEMENTS (pages); i++)
    {
      g_autoptr (GdkPaintable) paintable = NULL;
      g_autoptr (GtkSnapshot) snapshot = gtk_snapshot_new ();
      g_autoptr (GskRenderNode) node = NULL;
      g_autoptr (GdkTexture) texture = NULL;
      g_autofree char *path = g_strdup_printf ("%s/%s.png", dir, pages[i]);
      int w, h;

      bln_window_show_page (window, pages[i]);
      for (int k = 0; k < 150; k++)
        g_main_context_iteration (NULL, FALSE), g_usleep (4000);
      w = gtk_widget_get_width (content);
      h = gtk_widget_get_height (content);
      paintable = gtk_widget_paintable_new (content);
      gdk_paintable_snapshot (paintable, GDK_SNAPSHOT (snapshot), w, h);
      node = gtk_snapshot_to_node (snapshot);
      if (!node)
        continue;
      texture = gsk_renderer_render_texture (gtk_native_get_renderer (GTK_NATIVE (window)), node,
                                             &GRAPHENE_RECT_INIT (0, 0, w, h));
      if (!gdk_texture_save_to_png (texture, path))
        g_printerr ("cannot write %s\n", path);
    }
}

static gboolean
unloaded (gpointer data)
{
  return bln_application_loaded_id (app) == NULL && bln_application_worker (app) == NULL;
}

static void
test_unload (void)
{
  BlnModelsPage *page = BLN_MODELS_PAGE (bln_window_get_page (window, "models"));

  bln_window_show_page (window, "models");
  g_assert_nonnull (bln_application_loaded_id (app));
  gtk_widget_activate (bln_models_page_get_button (page, model_id, "load"));
  g_assert_true (wait_until (unloaded, NULL, 30));
  g_assert_cmpstr (gtk_button_get_label (GTK_BUTTON (bln_models_page_get_button (
                     page, model_id, "load"))), ==, "Load");
}

static void
remove_tree (const char *path)
{
  g_autoptr (GDir) dir = g_dir_open (path, 0, NULL);
  const char *name;

  while (dir && (name = g_dir_read_name (dir)))
    {
      g_autofree char *child = g_build_filename (path, name, NULL);
      if (g_file_test (child, G_FILE_TEST_IS_DIR) && !g_file_test (child, G_FILE_TEST_IS_SYMLINK))
        remove_tree (child);
      else
        g_unlink (child);
    }
  g_rmdir (path);
}

static gboolean
idle (gpointer data)
{
  return bln_application_server_url (app) == NULL;
}

int
main (int argc, char **argv)
{
  const char *golden = g_getenv ("BALEEN_GOLDEN_DIR");
  g_autofree char *src = NULL;
  g_autofree char *dir = NULL;
  g_autofree char *dst = NULL;
  g_autofree char *contents = NULL;
  gsize len;
  int rc;

  g_test_init (&argc, &argv, NULL);
  if (!g_getenv ("DISPLAY") && !g_getenv ("WAYLAND_DISPLAY"))
    {
      g_test_skip ("no display (run under xvfb-run)");
      return 77;
    }
  data_home = g_dir_make_tmp ("baleen-ui-XXXXXX", NULL);
  g_setenv ("XDG_DATA_HOME", data_home, TRUE);
  g_setenv ("GSETTINGS_BACKEND", "memory", TRUE);
  g_setenv ("BALEEN_NO_AUTOLOAD", "1", TRUE);
  src = g_build_filename (golden ? golden : "tests/golden", "models", "llama", "model-q8_0.gguf",
                          NULL);
  dir = g_build_filename (data_home, "baleen", "models", "llama", NULL);
  g_mkdir_with_parents (dir, 0755);
  dst = g_build_filename (dir, "model-q8_0.gguf", NULL);
  g_assert_true (g_file_get_contents (src, &contents, &len, NULL));
  g_assert_true (g_file_set_contents (dst, contents, len, NULL));

  app = bln_application_new ();
  g_application_set_flags (G_APPLICATION (app), G_APPLICATION_NON_UNIQUE);
  g_assert_true (g_application_register (G_APPLICATION (app), NULL, NULL));
  g_application_activate (G_APPLICATION (app));
  window = BLN_WINDOW (gtk_application_get_active_window (GTK_APPLICATION (app)));
  g_assert_nonnull (window);
  g_assert_cmpuint (bln_model_library_n_models (bln_application_library (app)), ==, 1);
  model_id = g_strdup (bln_model_library_get (bln_application_library (app), 0)->id);

  g_test_add_func ("/Baleen/UI/settings-persist", test_settings_persist);
  g_test_add_func ("/Baleen/UI/import-hf-folder", test_import_hf);
  g_test_add_func ("/Baleen/UI/load-model", test_load_model);
  g_test_add_func ("/Baleen/UI/server-start-stop", test_server);
  g_test_add_func ("/Baleen/UI/chat-streams", test_chat);
  g_test_add_func ("/Baleen/UI/live-stats", test_live_stats);
  g_test_add_func ("/Baleen/UI/clear-cache", test_clear_cache);
  g_test_add_func ("/Baleen/UI/cache-settings-apply", test_cache_settings_apply);
  g_test_add_func ("/Baleen/UI/session-ttl-apply", test_session_ttl_apply);
  g_test_add_func ("/Baleen/UI/sliding-window-apply", test_sliding_window_apply);
  g_test_add_func ("/Baleen/UI/safety-rules", test_rules);
  g_test_add_func ("/Baleen/UI/safety-rule-enforced", test_rule_enforced);
  g_test_add_func ("/Baleen/UI/safety-audit", test_audit);
  if (!g_getenv ("BALEEN_SCREENSHOT_DIR"))   /* the pictures show a loaded model */
    g_test_add_func ("/Baleen/UI/unload", test_unload);
  rc = g_test_run ();
  if (rc == 0 && g_getenv ("BALEEN_SCREENSHOT_DIR"))
    save_screenshots (g_getenv ("BALEEN_SCREENSHOT_DIR"));

  bln_application_stop_server (app);
  wait_until (idle, NULL, 5);
  gtk_window_destroy (GTK_WINDOW (window));
  g_application_quit (G_APPLICATION (app));
  g_object_unref (app);
  g_free (model_id);
  remove_tree (data_home);
  g_free (data_home);
  return rc;
}
