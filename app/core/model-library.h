/* model-library.h — the installed models, and the one that is loaded.
 *
 * BlnModelLibrary is a list of model entries found on disk: GGUF files and
 * Hugging Face model directories (config.json + *.safetensors). Scanning
 * reads headers and metadata only (engine/gguf.h, engine/hfdir.h), never the
 * weights, so the list is ready at once and can be published by GET
 * /v1/models before anything is loaded. Each entry gets an id that carries
 * the family name from the file name (bln_model_library_derive_id()).
 *
 * BlnModelHost owns the engine worker of at most one loaded model and hands
 * out leases on it. A lease names a model; it is granted once that model is
 * loaded. Leases are granted in FIFO order: when the first waiting lease asks
 * for another model, later ones wait too, the loaded model is unloaded once
 * no lease holds it and the new one is loaded on a helper thread (the main
 * loop keeps running). A model no lease has held for the idle TTL is
 * unloaded. All BlnModelHost calls and callbacks happen on the thread-default
 * main context of the thread that created the host.
 */
#pragma once

#include <glib.h>
#include "engine-worker.h"

G_BEGIN_DECLS

typedef enum {
  BLN_MODEL_FORMAT_GGUF,
  BLN_MODEL_FORMAT_HF,
} BlnModelFormat;

/* One installed model. Every string is owned by the library. */
typedef struct {
  char *id;                /* published id, e.g. "deepseek-r1-distill-qwen-7b-q4_k_m" */
  char *path;              /* the GGUF file or the HF directory */
  BlnModelFormat format;
  char *architecture;      /* "llama", "qwen2", "deepseek2" ... ("unknown" when absent) */
  char *name;              /* general.name, or the file / directory name */
  char *quantization;      /* "Q4_K_M", "Q8_0", "F32", "BF16" ... */
  char *parameter_size;    /* "7.6B", "135M" ... */
  gint64 n_params;         /* 0 when unknown */
  gint64 size_bytes;       /* bytes on disk (all shards) */
  gint64 modified;         /* modification time, seconds since the epoch */
  int context_length;      /* trained context length; 0 when unknown */
} BlnModelEntry;

typedef struct _BlnModelLibrary BlnModelLibrary;

/* Scans the folder @dir (and its sub-folders, three levels deep, hidden
 * entries skipped) for GGUF files and HF model directories. Files that cannot
 * be read as a model are skipped with a warning on stderr. Ids are unique:
 * when several entries derive the same id (bln_model_library_derive_id()),
 * the one with the oldest modification time keeps it (ties: the smaller
 * path), and each other one gets "-" and the first 8 hex digits of the
 * SHA-256 of its path relative to @dir appended — so an id does not change
 * when other files are added or removed (unless its own owner goes). Returns
 * a library (possibly empty), or NULL with @error set (BLN_ERROR_IO) when @dir
 * cannot be read. Free with bln_model_library_free(). */
BlnModelLibrary *bln_model_library_new_from_dir (const char *dir, GError **error);

/* A library holding the one model at @path (a GGUF file or an HF directory).
 * Returns NULL with @error set when its metadata cannot be read. */
BlnModelLibrary *bln_model_library_new_for_path (const char *path, GError **error);

/* Frees the library. NULL is ignored. */
void bln_model_library_free (BlnModelLibrary *lib);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnModelLibrary, bln_model_library_free)

/* Number of entries, and entry @i (0 ≤ i < n; sorted by id). Borrowed. */
guint bln_model_library_n_models (BlnModelLibrary *lib);
const BlnModelEntry *bln_model_library_get (BlnModelLibrary *lib, guint i);

/* The entry whose id is @name. Matching ignores ASCII case and an Ollama tag
 * ":latest". Returns NULL with @error set when there is none: BLN_ERROR_INVALID
 * for a name that looks like a path (contains '/', '\\', "..", a control
 * character, or is longer than 256 bytes) — names are never used to build a
 * path — and G_IO_ERROR_NOT_FOUND (G_IO_ERROR domain) otherwise. */
const BlnModelEntry *bln_model_library_lookup (BlnModelLibrary *lib, const char *name,
                                               GError **error);

/* The id published for a model at @path with the metadata name @name (may be
 * NULL) and quantization label @quant (may be NULL): the file stem (without
 * ".gguf") or the directory name, lowercased, every run of characters other
 * than ASCII letters, digits, '.' and '_' turned into one '-'. A generic stem
 * ("model", "model-q8_0", "ggml-model-f16") is prefixed with the parent
 * folder's name, so tests/golden/models/llama/model-q8_0.gguf is
 * "llama-q8_0", and a GGUF whose stem then has no quantization part gets
 * @quant appended. Never empty. Caller frees. */
char *bln_model_library_derive_id (const char *path, gboolean is_dir, const char *quant);

/* ---------------------------------------------------------------------- */

typedef struct _BlnModelHost BlnModelHost;
typedef struct _BlnModelLease BlnModelLease;

typedef struct {
  int n_threads;          /* CPU threads for a worker; 0: all cores */
  int n_ctx;              /* context size; 0: the model's default */
  guint idle_ttl;         /* seconds without a lease before unloading; 0: never */
} BlnModelHostOptions;

/* Called once for a lease: when its model is loaded (@worker and @entry set,
 * both borrowed and valid until the lease is released) or when loading failed
 * (@error set). May be called from inside bln_model_host_acquire(). */
typedef void (*BlnModelReadyFn) (BlnModelLease *lease, BlnEngineWorker *worker,
                                 const BlnModelEntry *entry, const GError *error,
                                 gpointer user_data);

/* A host for the models of @lib (borrowed; must outlive the host). */
BlnModelHost *bln_model_host_new (BlnModelLibrary *lib, const BlnModelHostOptions *options);

/* Unloads the model (cancelling what still runs on it; the cancelled
 * requests' done callbacks are posted to their contexts) and frees the host.
 * Leases still held become invalid: release them first. NULL is ignored. */
void bln_model_host_free (BlnModelHost *host);

/* Loads @entry now, blocking the caller (used at startup). Returns FALSE with
 * @error set when loading fails. */
gboolean bln_model_host_preload (BlnModelHost *host, const BlnModelEntry *entry,
                                 GError **error);

/* Asks for a lease on @entry; @ready runs once it is granted or loading
 * failed. The returned lease is owned by the caller and must be given to
 * bln_model_lease_release() exactly once (before or after @ready ran;
 * releasing before, @ready is never called). */
BlnModelLease *bln_model_host_acquire (BlnModelHost *host, const BlnModelEntry *entry,
                                       BlnModelReadyFn ready, gpointer user_data);

/* Ends a lease (see above). NULL is ignored. */
void bln_model_lease_release (BlnModelLease *lease);

/* The loaded model's entry, or NULL when none is loaded (or a load is under
 * way). Borrowed. */
const BlnModelEntry *bln_model_host_loaded (BlnModelHost *host);

/* The loaded model's worker, or NULL. Borrowed. */
BlnEngineWorker *bln_model_host_worker (BlnModelHost *host);

/* The entry a request naming @name (may be NULL) is served by. NULL or ""
 * means the loaded model, else the first one of the library. When @strict
 * is FALSE and the library holds one model, any name that is not path-like
 * means that model (a server started with --model answers every name). Returns NULL with @error
 * set as bln_model_library_lookup() does, or G_IO_ERROR_NOT_FOUND when the
 * library is empty. */
const BlnModelEntry *bln_model_host_resolve (BlnModelHost *host, const char *name,
                                             gboolean strict, GError **error);

/* Number of granted leases, and of leases waiting. */
guint bln_model_host_n_leases (BlnModelHost *host);
guint bln_model_host_n_waiting (BlnModelHost *host);

G_END_DECLS
