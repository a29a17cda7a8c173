/* window.h — the main window: a view stack of pages (Models, Server, Chat,
 * Caches, Safety, Performance) under a header bar switcher. */
#pragma once

#include <adwaita.h>

#include "application.h"

G_BEGIN_DECLS

#define BLN_TYPE_WINDOW (bln_window_get_type ())
G_DECLARE_FINAL_TYPE (BlnWindow, bln_window, BLN, WINDOW, AdwApplicationWindow)

/* bln_window_new: a new window of @app (floating reference owned by GTK). */
BlnWindow *bln_window_new (BlnApplication *app);

/* bln_window_show_page: switches to the page named @name ("models",
 * "server", "chat", "caches", "safety", "performance"). */
void bln_window_show_page (BlnWindow *self, const char *name);

/* bln_window_get_page: the page widget named @name, or NULL (borrowed). */
GtkWidget *bln_window_get_page (BlnWindow *self, const char *name);

/* bln_toast: shows @message as a toast in the window that holds @widget
 * (nothing happens when @widget is not in a BlnWindow). */
void bln_toast (GtkWidget *widget, const char *message);

/* bln_error_dialog: a modal message with @heading and @body (what happened
 * and what to do) over the window holding @widget. */
void bln_error_dialog (GtkWidget *widget, const char *heading, const char *body);

G_END_DECLS
