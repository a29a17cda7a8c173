/* models-page.h — the Models page: the library, loading, import, delete. */
#pragma once

#include <adwaita.h>

#include "application.h"
#include "quant.h"

G_BEGIN_DECLS

#define BLN_TYPE_MODELS_PAGE (bln_models_page_get_type ())
G_DECLARE_FINAL_TYPE (BlnModelsPage, bln_models_page, BLN, MODELS_PAGE, AdwBin)

/* bln_models_page_new: the page for @app's library (floating reference). */
BlnModelsPage *bln_models_page_new (BlnApplication *app);

/* bln_models_page_get_button: the row button @what ("load", "default",
 * "delete") of the model @id, or NULL (borrowed; for tests and shortcuts). */
GtkWidget *bln_models_page_get_button (BlnModelsPage *self, const char *id, const char *what);

/* bln_models_page_import_hf:
 * Converts the Hugging Face folder @folder to a GGUF file of @type in the
 * models folder (hf-convert.h) on a worker thread, showing its progress with
 * a Cancel button; the library is scanned again when it is done, and errors
 * are shown in a dialog. The Import HF Folder button calls it after asking
 * for the folder and the type. FALSE with @error set, and nothing started,
 * when a load or import is under way (G_IO_ERROR_BUSY) or the file exists
 * (G_IO_ERROR_EXISTS).
 */
gboolean bln_models_page_import_hf (BlnModelsPage *self, const char *folder, BlnType type,
                                    GError **error);

/* bln_models_page_is_busy: whether a load, import or conversion is under way. */
gboolean bln_models_page_is_busy (BlnModelsPage *self);

/* bln_models_page_last_converted: the GGUF file of the last conversion that
 * finished, or NULL (owned by the page). */
const char *bln_models_page_last_converted (BlnModelsPage *self);

/* bln_models_free_memory: bytes of memory a model can use: the current
 * GPU's free memory when CUDA is built in and a GPU is present (*@is_gpu set
 * to TRUE), else the MemAvailable of /proc/meminfo. 0 when unknown. */
guint64 bln_models_free_memory (gboolean *is_gpu);

G_END_DECLS
