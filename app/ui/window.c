/* window.c — the main window and its pages. */
#include "window.h"

#include <glib/gi18n-lib.h>

#include "audit-view.h"
#include "chat-page.h"
#include "live-stats.h"
#include "models-page.h"
#include "rules-editor.h"
#include "server-page.h"
#include "settings-page.h"

struct _BlnWindow
{
  AdwApplicationWindow parent_instance;

  /* template children */
  AdwToastOverlay *toast_overlay;
  AdwViewStack *stack;
  GtkShortcutController *shortcuts;  /* owned by the widget */
};

G_DEFINE_FINAL_TYPE (BlnWindow, bln_window, ADW_TYPE_APPLICATION_WINDOW)

static gboolean
close_request (GtkWindow *window)
{
  BlnApplication *app = BLN_APPLICATION (gtk_window_get_application (window));

  /* With a tray icon the app keeps serving: only hide the window. */
  if (app && bln_application_has_tray (app))
    {
      gtk_widget_set_visible (GTK_WIDGET (window), FALSE);
      return TRUE;
    }
  return GTK_WINDOW_CLASS (bln_window_parent_class)->close_request (window);
}

static void
bln_window_class_init (BlnWindowClass *klass)
{
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  GTK_WINDOW_CLASS (klass)->close_request = close_request;
  gtk_widget_class_set_template_from_resource (widget_class, "/org/baleen/Baleen/ui/window.ui");
  gtk_widget_class_bind_template_child (widget_class, BlnWindow, toast_overlay);
  gtk_widget_class_bind_template_child (widget_class, BlnWindow, stack);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_w, GDK_CONTROL_MASK,
                                       "window.close", NULL);
}

static void
bln_window_init (BlnWindow *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
  self->shortcuts = GTK_SHORTCUT_CONTROLLER (gtk_shortcut_controller_new ());
  gtk_widget_add_controller (GTK_WIDGET (self), GTK_EVENT_CONTROLLER (self->shortcuts));
}

static gboolean
switch_page (GtkWidget *widget, GVariant *args, gpointer user_data)
{
  bln_window_show_page (BLN_WINDOW (widget), user_data);
  return TRUE;
}

static void
add_page (BlnWindow *self, GtkWidget *page, const char *name, const char *title,
          const char *icon, guint key)
{
  AdwViewStackPage *p = adw_view_stack_add_titled (self->stack, page, name, title);
  GtkShortcut *shortcut;

  adw_view_stack_page_set_icon_name (p, icon);
  shortcut = gtk_shortcut_new (gtk_keyval_trigger_new (key, GDK_ALT_MASK),
                               gtk_callback_action_new (switch_page, (gpointer) name, NULL));
  gtk_shortcut_controller_add_shortcut (self->shortcuts, shortcut);
}

BlnWindow *
bln_window_new (BlnApplication *app)
{
  BlnWindow *self = g_object_new (BLN_TYPE_WINDOW, "application", app, NULL);
  const GError *error = bln_application_startup_error (app);
  static const char *cache_keys[] = { "cache.", NULL };
  BlnSettingsPage *safety, *caches, *perf;
  static const char *safety_keys[] = { "auth.", "privacy.", "ratelimit.", "moderation.",
                                       "audit.", NULL };

  add_page (self, GTK_WIDGET (bln_models_page_new (app)), "models", _("Models"),
            "view-list-symbolic", GDK_KEY_1);
  add_page (self, GTK_WIDGET (bln_server_page_new (app)), "server", _("Server"),
            "network-server-symbolic", GDK_KEY_2);
  add_page (self, GTK_WIDGET (bln_chat_page_new (app)), "chat", _("Chat"),
            "chat-message-new-symbolic", GDK_KEY_3);
  caches = bln_settings_page_new (app, cache_keys,
                                  _("The CPU engine reads the KV cache budget and the prefix "
                                    "cache settings when a model is loaded. Settings it cannot "
                                    "honour yet are greyed out, with the reason."), FALSE);
  bln_settings_page_add_group (caches,
                               ADW_PREFERENCES_GROUP (bln_live_stats_new (app, BLN_LIVE_CACHES)),
                               TRUE);
  add_page (self, GTK_WIDGET (caches), "caches", _("Caches"), "drive-harddisk-symbolic",
            GDK_KEY_4);
  safety = bln_settings_page_new (app, safety_keys,
                                  _("The API server applies these rules and limits to every "
                                    "request and writes the audit log."), FALSE);
  bln_settings_page_add_group (safety, ADW_PREFERENCES_GROUP (bln_rules_editor_new (app)), TRUE);
  bln_settings_page_add_group (safety, ADW_PREFERENCES_GROUP (bln_audit_view_new (app)), TRUE);
  add_page (self, GTK_WIDGET (safety), "safety", _("Safety"), "security-high-symbolic",
            GDK_KEY_5);
  perf = bln_settings_page_new (app, (const char *[]) { "perf.", NULL },
                                _("Threads and context size apply to the next model loaded "
                                  "after the current one is unloaded."), FALSE);
  bln_settings_page_add_group (perf,
                               ADW_PREFERENCES_GROUP (bln_live_stats_new (app,
                                                                          BLN_LIVE_PERFORMANCE)),
                               TRUE);
  add_page (self, GTK_WIDGET (perf), "performance", _("Performance"),
            "power-profile-balanced-symbolic", GDK_KEY_6);

  if (error)
    bln_error_dialog (GTK_WIDGET (self), _("Settings cannot be saved"), error->message);
  else
    {
      g_autoptr (GError) server_error = bln_application_take_server_error (app);
      if (server_error)
        bln_error_dialog (GTK_WIDGET (self), _("The server could not start"),
                          server_error->message);
    }
  return self;
}

void
bln_window_show_page (BlnWindow *self, const char *name)
{
  g_return_if_fail (BLN_IS_WINDOW (self));
  adw_view_stack_set_visible_child_name (self->stack, name);
}

GtkWidget *
bln_window_get_page (BlnWindow *self, const char *name)
{
  g_return_val_if_fail (BLN_IS_WINDOW (self), NULL);
  return adw_view_stack_get_child_by_name (self->stack, name);
}

void
bln_toast (GtkWidget *widget, const char *message)
{
  GtkWidget *window = gtk_widget_get_ancestor (widget, BLN_TYPE_WINDOW);

  if (!window)
    {
      g_message ("%s", message);
      return;
    }
  adw_toast_overlay_add_toast (BLN_WINDOW (window)->toast_overlay, adw_toast_new (message));
}

void
bln_error_dialog (GtkWidget *widget, const char *heading, const char *body)
{
  GtkWidget *window = gtk_widget_get_ancestor (widget, GTK_TYPE_WINDOW);
  GtkWidget *dialog = adw_message_dialog_new (GTK_WINDOW (window), heading, body);

  g_debug ("error shown: %s: %s", heading, body);

  adw_message_dialog_add_response (ADW_MESSAGE_DIALOG (dialog), "close", _("_Close"));
  gtk_window_present (GTK_WINDOW (dialog));
}
