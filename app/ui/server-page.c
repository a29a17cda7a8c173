/* server-page.c — the Server page (see server-page.h). */
#include "server-page.h"

#include <glib/gi18n-lib.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "keys.h"
#include "window.h"

struct _BlnServerPage
{
  AdwBin parent_instance;

  BlnApplication *app;       /* borrowed */
  gulong state_handler;
  gboolean syncing;
  SoupSession *session;
  GCancellable *cancellable;

  /* template children */
  AdwActionRow *state_row;
  GtkSwitch *server_switch;
  AdwActionRow *address_row;
  GtkSpinButton *port_spin;
  GtkSwitch *network_switch;
  AdwEntryRow *cors_row;
  GtkListBox *keys_list;
  AdwActionRow *cherry_host_row;
  AdwActionRow *cherry_key_row;
  AdwActionRow *cherry_model_row;
  AdwActionRow *test_row;
  GtkButton *test_button;
};

G_DEFINE_FINAL_TYPE (BlnServerPage, bln_server_page, ADW_TYPE_BIN)

static void refresh (BlnServerPage *self);

static void
copy_text (BlnServerPage *self, const char *text)
{
  if (!text || !*text)
    return;
  gdk_clipboard_set_text (gtk_widget_get_clipboard (GTK_WIDGET (self)), text);
  bln_toast (GTK_WIDGET (self), _("Copied"));
}

static gboolean
server_switch_set (BlnServerPage *self, gboolean state)
{
  g_autoptr (GError) error = NULL;

  if (self->syncing)
    return FALSE;
  if (state && !bln_application_start_server (self->app, &error) &&
      !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_PENDING))
    {
      bln_error_dialog (GTK_WIDGET (self), _("The server could not start"), error->message);
      refresh (self);
      return TRUE;
    }
  if (!state)
    bln_application_stop_server (self->app);
  refresh (self);
  return TRUE;
}

static void
save (BlnServerPage *self, const char *key, const char *text)
{
  BlnUiSettings *settings = bln_application_settings (self->app);
  g_autoptr (GError) error = NULL;

  if (self->syncing || !settings)
    return;
  if (!bln_ui_settings_set_text (settings, key, text, &error))
    bln_toast (GTK_WIDGET (self), error->message);
}

static void
port_changed (BlnServerPage *self)
{
  g_autofree char *text = g_strdup_printf ("%d", gtk_spin_button_get_value_as_int (self->port_spin));

  save (self, "server.port", text);
}

static void
network_changed (BlnServerPage *self)
{
  save (self, "server.network", gtk_switch_get_active (self->network_switch) ? "true" : "false");
}

static void
cors_applied (BlnServerPage *self)
{
  save (self, "server.cors_origins", gtk_editable_get_text (GTK_EDITABLE (self->cors_row)));
}

static void
copy_address_clicked (BlnServerPage *self)
{
  copy_text (self, bln_application_server_url (self->app));
}

static void
copy_host_clicked (BlnServerPage *self)
{
  g_autofree char *host = bln_application_api_host (self->app);

  copy_text (self, host);
}

static void
copy_key_clicked (BlnServerPage *self)
{
  copy_text (self, bln_application_api_key (self->app));
}

static void
copy_model_clicked (BlnServerPage *self)
{
  copy_text (self, adw_action_row_get_subtitle (self->cherry_model_row));
}

/* ---- API keys ------------------------------------------------------------ */

static void
revoke_clicked (GtkButton *button, BlnServerPage *self)
{
  BlnDb *db = bln_application_db (self->app);
  const char *name = g_object_get_data (G_OBJECT (button), "key-name");
  g_autoptr (GError) error = NULL;

  if (!db || !bln_keys_revoke (db, name, &error))
    bln_toast (GTK_WIDGET (self), error ? error->message : _("No settings database"));
  else
    bln_toast (GTK_WIDGET (self), _("Key revoked"));
  refresh (self);
}

static void
fill_keys (BlnServerPage *self)
{
  BlnDb *db = bln_application_db (self->app);
  g_autoptr (GPtrArray) keys = NULL;
  GtkWidget *child;

  while ((child = gtk_widget_get_first_child (GTK_WIDGET (self->keys_list))))
    gtk_list_box_remove (self->keys_list, child);
  keys = db ? bln_keys_list (db, NULL) : NULL;
  for (guint i = 0; keys && i < keys->len; i++)
    {
      BlnKeyInfo *k = g_ptr_array_index (keys, i);
      GtkWidget *row = adw_action_row_new ();
      g_autoptr (GDateTime) created = g_date_time_new_from_unix_local (k->created);
      g_autofree char *when = created ? g_date_time_format (created, "%x") : g_strdup ("");
      g_autofree char *sub = NULL;

      sub = k->revoked ? g_strdup_printf (_("%s… · created %s · revoked"), k->prefix, when)
                       : g_strdup_printf (_("%s… · created %s"), k->prefix, when);
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), k->name);
      adw_action_row_set_subtitle (ADW_ACTION_ROW (row), sub);
      if (!k->revoked)
        {
          GtkWidget *b = gtk_button_new_with_label (_("Revoke"));
          g_autofree char *a11y = g_strdup_printf (_("Revoke the key %s"), k->name);
          gtk_widget_set_valign (b, GTK_ALIGN_CENTER);
          gtk_widget_add_css_class (b, "destructive-action");
          gtk_accessible_update_property (GTK_ACCESSIBLE (b), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                          a11y, -1);
          g_object_set_data_full (G_OBJECT (b), "key-name", g_strdup (k->name), g_free);
          g_signal_connect (b, "clicked", G_CALLBACK (revoke_clicked), self);
          adw_action_row_add_suffix (ADW_ACTION_ROW (row), b);
        }
      gtk_list_box_append (self->keys_list, row);
    }
  gtk_widget_set_visible (GTK_WIDGET (self->keys_list), keys && keys->len > 0);
}

static void
created_response (AdwMessageDialog *dialog, const char *response, BlnServerPage *self)
{
  if (g_str_equal (response, "copy"))
    copy_text (self, g_object_get_data (G_OBJECT (dialog), "key"));
}

static void
create_response (AdwMessageDialog *dialog, const char *response, BlnServerPage *self)
{
  GtkEditable *entry = GTK_EDITABLE (adw_message_dialog_get_extra_child (dialog));
  BlnDb *db = bln_application_db (self->app);
  g_autoptr (GError) error = NULL;
  g_autofree char *key = NULL;
  GtkWidget *shown;

  if (!g_str_equal (response, "create") || !db)
    return;
  key = bln_keys_create (db, gtk_editable_get_text (entry), 0, 0, NULL, &error);
  if (!key)
    {
      bln_error_dialog (GTK_WIDGET (self), _("The key could not be created"), error->message);
      return;
    }
  bln_application_set_api_key (self->app, key);
  shown = adw_message_dialog_new (GTK_WINDOW (gtk_widget_get_root (GTK_WIDGET (self))),
                                  _("Your New API Key"),
                                  _("Copy it now: it is not shown again. The server checks "
                                    "this key from its next start."));
  adw_message_dialog_set_extra_child (ADW_MESSAGE_DIALOG (shown), gtk_label_new (key));
  gtk_label_set_selectable (GTK_LABEL (adw_message_dialog_get_extra_child (
                              ADW_MESSAGE_DIALOG (shown))), TRUE);
  adw_message_dialog_add_responses (ADW_MESSAGE_DIALOG (shown), "close", _("_Close"),
                                    "copy", _("_Copy"), NULL);
  adw_message_dialog_set_default_response (ADW_MESSAGE_DIALOG (shown), "copy");
  g_object_set_data_full (G_OBJECT (shown), "key", g_steal_pointer (&key), g_free);
  g_signal_connect (shown, "response", G_CALLBACK (created_response), self);
  gtk_window_present (GTK_WINDOW (shown));
  refresh (self);
}

static void
create_key_clicked (BlnServerPage *self)
{
  GtkWidget *dialog;
  GtkWidget *entry = gtk_entry_new ();
  g_autoptr (GDateTime) now = g_date_time_new_now_local ();
  g_autofree char *name = g_date_time_format (now, "cherry-studio-%Y%m%d-%H%M%S");

  gtk_editable_set_text (GTK_EDITABLE (entry), name);
  gtk_entry_set_activates_default (GTK_ENTRY (entry), TRUE);
  gtk_accessible_update_property (GTK_ACCESSIBLE (entry), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _("Key name"), -1);
  dialog = adw_message_dialog_new (GTK_WINDOW (gtk_widget_get_root (GTK_WIDGET (self))),
                                   _("Create an API Key"),
                                   _("Name it after the client that will use it."));
  adw_message_dialog_set_extra_child (ADW_MESSAGE_DIALOG (dialog), entry);
  adw_message_dialog_add_responses (ADW_MESSAGE_DIALOG (dialog), "cancel", _("_Cancel"),
                                    "create", _("C_reate"), NULL);
  adw_message_dialog_set_response_appearance (ADW_MESSAGE_DIALOG (dialog), "create",
                                              ADW_RESPONSE_SUGGESTED);
  adw_message_dialog_set_default_response (ADW_MESSAGE_DIALOG (dialog), "create");
  g_signal_connect (dialog, "response", G_CALLBACK (create_response), self);
  gtk_window_present (GTK_WINDOW (dialog));
}

/* ---- connection test ------------------------------------------------------ */

static void
test_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (BlnServerPage) self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), result);
  const char *want = g_object_get_data (G_OBJECT (msg), "want");
  g_autofree char *text = NULL;
  gboolean found = FALSE;
  guint status;

  body = soup_session_send_and_read_finish (SOUP_SESSION (source), result, &error);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  gtk_widget_set_sensitive (GTK_WIDGET (self->test_button), TRUE);
  status = soup_message_get_status (msg);
  if (!body)
    text = g_strdup_printf (_("Failed: %s. Is the server running?"), error->message);
  else if (status == 401)
    text = g_strdup (_("Failed: the server wants an API key. Create one above and paste it."));
  else if (status != 200)
    text = g_strdup_printf (_("Failed: the server answered HTTP %u."), status);
  else if (json_parser_load_from_data (parser, g_bytes_get_data (body, NULL),
                                       g_bytes_get_size (body), NULL))
    {
      JsonNode *root = json_parser_get_root (parser);
      JsonObject *o = JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : NULL;
      JsonArray *data = o && json_object_has_member (o, "data")
                        ? json_object_get_array_member (o, "data") : NULL;
      for (guint i = 0; data && i < json_array_get_length (data); i++)
        {
          JsonObject *m = json_array_get_object_element (data, i);
          if (m && g_strcmp0 (json_object_get_string_member_with_default (m, "id", ""),
                              want) == 0)
            found = TRUE;
        }
      text = found ? g_strdup_printf (_("Connected: the server lists %s."), want)
                   : g_strdup (_("Connected, but the model ID above is not listed."));
    }
  else
    text = g_strdup (_("Failed: the answer is not the JSON an OpenAI client expects."));
  adw_action_row_set_subtitle (self->test_row, text);
}

static void
test_clicked (BlnServerPage *self)
{
  g_autofree char *host = bln_application_api_host (self->app);
  g_autofree char *url = NULL;
  const char *key = bln_application_api_key (self->app);
  SoupMessage *msg;

  if (!host)
    {
      adw_action_row_set_subtitle (self->test_row,
                                   _("The server is off: switch it on above."));
      return;
    }
  url = g_strconcat (host, "/models", NULL);
  msg = soup_message_new ("GET", url);
  if (key)
    {
      g_autofree char *auth = g_strconcat ("Bearer ", key, NULL);
      soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                    auth);
    }
  g_object_set_data_full (G_OBJECT (msg), "want",
                          g_strdup (adw_action_row_get_subtitle (self->cherry_model_row)),
                          g_free);
  gtk_widget_set_sensitive (GTK_WIDGET (self->test_button), FALSE);
  adw_action_row_set_subtitle (self->test_row, _("Testing…"));
  soup_session_send_and_read_async (self->session, msg, G_PRIORITY_DEFAULT, self->cancellable,
                                    test_done, g_object_ref (self));
  g_object_unref (msg);
}

/* ---- state ----------------------------------------------------------------- */

static void
refresh (BlnServerPage *self)
{
  BlnUiSettings *settings = bln_application_settings (self->app);
  const char *url = bln_application_server_url (self->app);
  g_autofree char *host = bln_application_api_host (self->app);
  const char *key = bln_application_api_key (self->app);
  const char *loaded = bln_application_loaded_name (self->app);
  g_autofree char *state = NULL;
  g_autofree char *model_id = NULL;
  gboolean starting;

  self->syncing = TRUE;
  starting = bln_application_server_starting (self->app);
  gtk_switch_set_active (self->server_switch, url != NULL || starting);
  gtk_switch_set_state (self->server_switch, url != NULL || starting);
  if (starting)
    state = g_strdup (_("Starting…"));
  else if (url)
    state = g_strdup_printf (_("Running with %s"), loaded ? loaded : "?");
  else
    state = g_strdup (_("Stopped"));
  adw_action_row_set_subtitle (self->state_row, state);
  adw_action_row_set_subtitle (self->address_row, url ? url : "—");
  if (settings)
    {
      g_autofree char *cors = bln_ui_settings_get_string (settings, "server.cors_origins");
      gtk_spin_button_set_value (self->port_spin,
                                 (double) bln_ui_settings_get_int (settings, "server.port"));
      gtk_switch_set_active (self->network_switch,
                             bln_ui_settings_get_bool (settings, "server.network"));
      gtk_editable_set_text (GTK_EDITABLE (self->cors_row), cors ? cors : "");
    }
  adw_action_row_set_subtitle (self->cherry_host_row,
                               host ? host : _("Start the server to get the address"));
  adw_action_row_set_subtitle (self->cherry_key_row,
                               key ? key : _("Type any text, such as “local”: this computer "
                                             "needs no key"));
  if (bln_application_loaded_id (self->app))
    model_id = g_strdup (bln_application_loaded_id (self->app));
  else if (bln_application_library (self->app) &&
           bln_model_library_n_models (bln_application_library (self->app)) > 0)
    model_id = g_strdup (bln_model_library_get (bln_application_library (self->app), 0)->id);
  adw_action_row_set_subtitle (self->cherry_model_row, model_id ? model_id : "—");
  self->syncing = FALSE;
  fill_keys (self);
}

static void
state_changed (BlnApplication *app, BlnServerPage *self)
{
  refresh (self);
}

static void
bln_server_page_dispose (GObject *object)
{
  BlnServerPage *self = BLN_SERVER_PAGE (object);

  g_cancellable_cancel (self->cancellable);
  g_clear_object (&self->cancellable);
  g_clear_object (&self->session);
  if (self->app && self->state_handler)
    g_signal_handler_disconnect (self->app, self->state_handler);
  self->state_handler = 0;
  gtk_widget_dispose_template (GTK_WIDGET (self), BLN_TYPE_SERVER_PAGE);
  G_OBJECT_CLASS (bln_server_page_parent_class)->dispose (object);
}

static void
bln_server_page_class_init (BlnServerPageClass *klass)
{
  GtkWidgetClass *wc = GTK_WIDGET_CLASS (klass);

  G_OBJECT_CLASS (klass)->dispose = bln_server_page_dispose;
  gtk_widget_class_set_template_from_resource (wc, "/org/baleen/Baleen/ui/server-page.ui");
  gtk_widget_class_bind_template_child (wc, BlnServerPage, state_row);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, server_switch);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, address_row);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, port_spin);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, network_switch);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, cors_row);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, keys_list);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, cherry_host_row);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, cherry_key_row);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, cherry_model_row);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, test_row);
  gtk_widget_class_bind_template_child (wc, BlnServerPage, test_button);
  gtk_widget_class_bind_template_callback (wc, server_switch_set);
  gtk_widget_class_bind_template_callback (wc, port_changed);
  gtk_widget_class_bind_template_callback (wc, network_changed);
  gtk_widget_class_bind_template_callback (wc, cors_applied);
  gtk_widget_class_bind_template_callback (wc, copy_address_clicked);
  gtk_widget_class_bind_template_callback (wc, copy_host_clicked);
  gtk_widget_class_bind_template_callback (wc, copy_key_clicked);
  gtk_widget_class_bind_template_callback (wc, copy_model_clicked);
  gtk_widget_class_bind_template_callback (wc, create_key_clicked);
  gtk_widget_class_bind_template_callback (wc, test_clicked);
}

static void
bln_server_page_init (BlnServerPage *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
  self->session = soup_session_new_with_options ("timeout", 10, NULL);
  self->cancellable = g_cancellable_new ();
}

BlnServerPage *
bln_server_page_new (BlnApplication *app)
{
  BlnServerPage *self = g_object_new (BLN_TYPE_SERVER_PAGE, NULL);

  self->app = app;
  self->state_handler = g_signal_connect (app, "state-changed", G_CALLBACK (state_changed), self);
  refresh (self);
  return self;
}

GtkWidget *
bln_server_page_get_widget (BlnServerPage *self, const char *name)
{
  static const struct { const char *name; gsize offset; } map[] = {
    { "switch", G_STRUCT_OFFSET (BlnServerPage, server_switch) },
    { "port", G_STRUCT_OFFSET (BlnServerPage, port_spin) },
    { "network", G_STRUCT_OFFSET (BlnServerPage, network_switch) },
    { "test", G_STRUCT_OFFSET (BlnServerPage, test_button) },
    { "test-row", G_STRUCT_OFFSET (BlnServerPage, test_row) },
    { "host-row", G_STRUCT_OFFSET (BlnServerPage, cherry_host_row) },
    { "key-row", G_STRUCT_OFFSET (BlnServerPage, cherry_key_row) },
    { "model-row", G_STRUCT_OFFSET (BlnServerPage, cherry_model_row) },
  };

  g_return_val_if_fail (BLN_IS_SERVER_PAGE (self), NULL);
  for (guint i = 0; i < G_N_ELEMENTS (map); i++)
    if (g_str_equal (map[i].name, name))
      return G_STRUCT_MEMBER (GtkWidget *, self, map[i].offset);
  return NULL;
}
