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
#include <string.h>
#include <sqlite3.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "application.h"
#include "bln-error.h"
#include "chat-page.h"
#include "models-page.h"
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
  GtkWidget *rpm = bln_settings_page_get_editor (safety, "ratelimit.key_rpm");
  g_autofree char *v_port = NULL;
  g_autofree char *v_kv8 = NULL;
  g_autofree char *v_rpm = NULL;
  g_autofree char *path = g_build_filename (data_home, "baleen", "baleen.db", NULL);
  g_autoptr (BlnDb) db = NULL;
  g_autoptr (BlnSettings) core = NULL;
  g_autoptr (BlnUiSettings) ui = NULL;
  g_autoptr (GError) error = NULL;

  g_assert_true (GTK_IS_SPIN_BUTTON (port));
  g_assert_true (GTK_IS_SWITCH (kv8));
  g_assert_true (GTK_IS_SPIN_BUTTON (rpm));
  g_assert_false (gtk_switch_get_active (GTK_SWITCH (kv8)));

  gtk_spin_button_set_value (GTK_SPIN_BUTTON (port), 18123);
  bln_window_show_page (window, "caches");   /* toggles animate only when mapped */
  g_assert_true (toggle (kv8, TRUE));
  gtk_spin_button_set_value (GTK_SPIN_BUTTON (rpm), 42);

  /* In the file, with plain SQL. */
  v_port = sql_value ("server.port");
  v_kv8 = sql_value ("cache.kv_8bit");
  v_rpm = sql_value ("ratelimit.key_rpm");
  g_assert_cmpstr (v_port, ==, "18123");
  g_assert_cmpstr (v_kv8, ==, "true");
  g_assert_cmpstr (v_rpm, ==, "42");

  /* As a restarted app reads them. */
  db = bln_db_open (path, &error);
  g_assert_no_error (error);
  core = bln_settings_new (db, &error);
  g_assert_no_error (error);
  ui = bln_ui_settings_new (db, core, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_ui_settings_get_int (ui, "server.port"), ==, 18123);
  g_assert_true (bln_ui_settings_get_bool (ui, "cache.kv_8bit"));
  g_assert_cmpint (bln_settings_get_int (core, "ratelimit.key_rpm"), ==, 42);

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

/* With BALEEN_SCREENSHOT_DIR set (tools/screenshots.sh), saves every page as
 * DIR/NAME.png once the cases have run, so the pictures show real state. */
static void
save_screenshots (const char *dir)
{
  static const char *pages[] = { "models", "server", "chat", "caches", "safety", "performance" };

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
      for (int k = 0; k < 50; k++)
        g_main_context_iteration (NULL, FALSE), g_usleep (4000);
      w = gtk_widget_get_width (GTK_WIDGET (window));
      h = gtk_widget_get_height (GTK_WIDGET (window));
      paintable = gtk_widget_paintable_new (GTK_WIDGET (window));
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
  g_test_add_func ("/Baleen/UI/load-model", test_load_model);
  g_test_add_func ("/Baleen/UI/server-start-stop", test_server);
  g_test_add_func ("/Baleen/UI/chat-streams", test_chat);
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
