/* application.h — the `baleen` desktop app: one instance per user session.
 *
 * BlnApplication owns what outlives a window: the settings database, the
 * model library (the models folder), the loaded model's engine worker, the
 * API server (the same BlnServer as baleen-server) and the tray icon. Windows
 * and the tray only ask it to act and listen to "state-changed".
 *
 * At start-up it loads the default model (models.default) and starts the API
 * server (server.autostart); BALEEN_NO_AUTOLOAD=1 skips both (tests).
 * Loading runs on a GTask thread; the main loop never waits for the engine.
 * When a tray host shows the icon the app holds itself, so closing the
 * window leaves it serving in the background.
 */
#pragma once

#include <adwaita.h>

#include "db.h"
#include "model-library.h"
#include "server.h"
#include "ui-settings.h"

G_BEGIN_DECLS

#define BLN_TYPE_APPLICATION (bln_application_get_type ())
G_DECLARE_FINAL_TYPE (BlnApplication, bln_application, BLN, APPLICATION, AdwApplication)

/* bln_application_new: the app, application id org.baleen.Baleen. */
BlnApplication *bln_application_new (void);

/* The settings database and settings (NULL when the database could not be
 * opened; bln_application_startup_error() then says why). Borrowed. */
BlnDb *bln_application_db (BlnApplication *self);
BlnUiSettings *bln_application_settings (BlnApplication *self);
const GError *bln_application_startup_error (BlnApplication *self);

/* Why the API server did not start at start-up (server.autostart), once:
 * the caller owns the error; NULL when it started or was not asked to. */
GError *bln_application_take_server_error (BlnApplication *self);

/* The model library of the models folder (never NULL after startup; empty
 * when the folder is missing), borrowed until the next rescan. */
BlnModelLibrary *bln_application_library (BlnApplication *self);

/* Re-reads the models folder and emits "state-changed". */
void bln_application_rescan (BlnApplication *self);

/* The loaded model's id and display name (NULL when none; owned by @self),
 * and its worker (borrowed, NULL when none). */
const char *bln_application_loaded_id (BlnApplication *self);
const char *bln_application_loaded_name (BlnApplication *self);
BlnEngineWorker *bln_application_worker (BlnApplication *self);

/* Whether a load is under way. */
gboolean bln_application_busy (BlnApplication *self);

/* Loads the library model @id through the model host (model-library.h),
 * which loads on a helper thread and unloads the previous model first; the
 * API server, when running, serves it at once (and starts when
 * server.autostart is on). Cancelling @cancellable gives up the request: it
 * finishes with G_IO_ERROR_CANCELLED at once, and the host finishes or drops
 * the load on its own. Finish with bln_application_load_finish (FALSE with
 * @error: G_IO_ERROR_CANCELLED, G_IO_ERROR_BUSY when a load is already
 * running, G_IO_ERROR_NOT_FOUND for an unknown id, or the engine's error). */
void bln_application_load_async (BlnApplication *self, const char *id, GCancellable *cancellable,
                                 GAsyncReadyCallback callback, gpointer user_data);
gboolean bln_application_load_finish (BlnApplication *self, GAsyncResult *result,
                                      GError **error);

/* Frees the loaded model: the server (when running) is stopped, the model
 * host replaced by an empty one and the server started again, all without
 * blocking. */
void bln_application_unload (BlnApplication *self);

/* Starts the API server over the library with the server.* settings (a
 * request naming a model that is not loaded loads it). FALSE with @error set
 * when the library is empty (G_IO_ERROR_NOT_INITIALIZED), the network
 * exposure has no API key (BLN_ERROR_INVALID), a previous server is still
 * finishing (G_IO_ERROR_PENDING), or binding fails (the socket error, e.g.
 * G_IO_ERROR_ADDRESS_IN_USE). */
gboolean bln_application_start_server (BlnApplication *self, GError **error);

/* Whether the server will start as soon as the previous one has finished
 * (bln_application_start_server() failed with G_IO_ERROR_PENDING). */
gboolean bln_application_server_starting (BlnApplication *self);

/* Stops the server (it finishes in the background). */
void bln_application_stop_server (BlnApplication *self);

/* The running server's base URL ("http://127.0.0.1:8080/"), NULL when off. */
const char *bln_application_server_url (BlnApplication *self);

/* The API host to paste into a client: the URL with "v1" appended; NULL
 * when the server is off. New string. */
char *bln_application_api_host (BlnApplication *self);

/* The API key the server checks (created in this session; NULL when none),
 * and a setter used after creating one. */
const char *bln_application_api_key (BlnApplication *self);
void bln_application_set_api_key (BlnApplication *self, const char *key);

/* The running server's metrics (metrics.h; borrowed, NULL when the server is
 * off). A new server starts from zero. */
BlnMetrics *bln_application_metrics (BlnApplication *self);

/* Whether the tray host shows our icon. */
gboolean bln_application_has_tray (BlnApplication *self);

G_END_DECLS
