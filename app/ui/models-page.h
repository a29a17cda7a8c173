/* models-page.h — the Models page: the library, loading, import, delete. */
#pragma once

#include <adwaita.h>

#include "application.h"

G_BEGIN_DECLS

#define BLN_TYPE_MODELS_PAGE (bln_models_page_get_type ())
G_DECLARE_FINAL_TYPE (BlnModelsPage, bln_models_page, BLN, MODELS_PAGE, AdwBin)

/* bln_models_page_new: the page for @app's library (floating reference). */
BlnModelsPage *bln_models_page_new (BlnApplication *app);

/* bln_models_page_get_button: the row button @what ("load", "default",
 * "delete") of the model @id, or NULL (borrowed; for tests and shortcuts). */
GtkWidget *bln_models_page_get_button (BlnModelsPage *self, const char *id, const char *what);

/* bln_models_free_memory: bytes of memory a model can use: the current
 * GPU's free memory when CUDA is built in and a GPU is present (*@is_gpu set
 * to TRUE), else the MemAvailable of /proc/meminfo. 0 when unknown. */
guint64 bln_models_free_memory (gboolean *is_gpu);

G_END_DECLS
