/* server-page.h — the Server page: state, address, port, exposure, CORS, API
 * keys, and the "Connect Cherry Studio" panel with a live connection test. */
#pragma once

#include <adwaita.h>

#include "application.h"

G_BEGIN_DECLS

#define BLN_TYPE_SERVER_PAGE (bln_server_page_get_type ())
G_DECLARE_FINAL_TYPE (BlnServerPage, bln_server_page, BLN, SERVER_PAGE, AdwBin)

/* bln_server_page_new: the page for @app (floating reference). */
BlnServerPage *bln_server_page_new (BlnApplication *app);

/* Widgets the tests drive (borrowed): "switch", "port", "network", "test",
 * "test-row", "host-row", "key-row", "model-row". NULL for other names. */
GtkWidget *bln_server_page_get_widget (BlnServerPage *self, const char *name);

G_END_DECLS
