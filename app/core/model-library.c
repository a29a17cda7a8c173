/* model-library.c — see model-library.h. */
#include "model-library.h"

#include <gio/gio.h>
#include <string.h>
#include "bln-error.h"
#include "gguf.h"
#include "hfdir.h"

#define MAX_DEPTH 3
#define MAX_NAME 256

struct _BlnModelLibrary {
  GPtrArray *entries;      /* BlnModelEntry*, sorted by id */
};

/* ---------------------------------------------------------------------- */
/* ids                                                                     */

/* A '-' or '.' separated part of a stem that names a weight type, as in
 * "q4_k_m", "iq2_xs", "f16", "bf16". */
static gboolean
has_quant_part (const char *stem)
{
  g_auto (GStrv) parts = g_strsplit_set (stem, "-.", -1);

  for (char **p = parts; *p != NULL; p++)
    {
      const char *s = *p;
      if (s[0] == 'i' && s[1] == 'q')
        s++;
      if (s[0] == 'q' && g_ascii_isdigit (s[1]))
        return TRUE;
      if (g_str_equal (*p, "f16") || g_str_equal (*p, "f32") || g_str_equal (*p, "bf16")
          || g_str_equal (*p, "fp16") || g_str_equal (*p, "fp32"))
        return TRUE;
    }
  return FALSE;
}

static char *
sanitize (const char *s)
{
  GString *out = g_string_new (NULL);
  gboolean dash = FALSE;

  for (; *s; s++)
    {
      char c = g_ascii_tolower (*s);
      if (g_ascii_isalnum (c) || c == '.' || c == '_')
        {
          if (dash && out->len > 0)
            g_string_append_c (out, '-');
          dash = FALSE;
          g_string_append_c (out, c);
        }
      else
        dash = TRUE;
    }
  return g_string_free (out, FALSE);
}

char *
bln_model_library_derive_id (const char *path, gboolean is_dir, const char *quant)
{
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *lower = NULL, *stem = NULL;
  const char *rest = NULL;
  char *id;

  lower = g_ascii_strdown (base, -1);
  if (!is_dir && g_str_has_suffix (lower, ".gguf"))
    lower[strlen (lower) - 5] = '\0';
  if (g_str_equal (lower, "model") || g_str_has_prefix (lower, "model-")
      || g_str_has_prefix (lower, "model."))
    rest = lower + 5;
  else if (g_str_has_prefix (lower, "ggml-model"))
    rest = lower + 10;
  if (rest != NULL)
    {
      g_autofree char *dir = g_path_get_dirname (path);
      g_autofree char *parent = g_path_get_basename (dir);
      stem = g_strconcat (parent, "-", rest, NULL);
    }
  else
    stem = g_strdup (lower);
  id = sanitize (stem);
  if (!is_dir && quant != NULL && *quant && !has_quant_part (id))
    {
      g_autofree char *q = sanitize (quant);
      char *with = *id ? g_strconcat (id, "-", q, NULL) : g_strdup (q);
      g_free (id);
      id = with;
    }
  if (*id == '\0')
    {
      g_free (id);
      id = g_strdup ("model");
    }
  return id;
}

/* ---------------------------------------------------------------------- */
/* metadata                                                                */

static void
entry_free (BlnModelEntry *e)
{
  g_free (e->id);
  g_free (e->path);
  g_free (e->architecture);
  g_free (e->name);
  g_free (e->quantization);
  g_free (e->parameter_size);
  g_free (e);
}

static char *
format_params (gint64 n)
{
  if (n >= 1000000000)
    return g_strdup_printf ("%.1fB", n / 1e9);
  if (n >= 1000000)
    return g_strdup_printf ("%.0fM", n / 1e6);
  if (n >= 1000)
    return g_strdup_printf ("%.0fK", n / 1e3);
  return g_strdup_printf ("%" G_GINT64_FORMAT, n);
}

/* general.file_type, as llama.cpp's converters and quantizer write it. */
static const char *
file_type_name (gint64 ft)
{
  static const struct { int id; const char *name; } table[] = {
    { 0, "F32" }, { 1, "F16" }, { 2, "Q4_0" }, { 3, "Q4_1" }, { 7, "Q8_0" }, { 8, "Q5_0" },
    { 9, "Q5_1" }, { 10, "Q2_K" }, { 11, "Q3_K_S" }, { 12, "Q3_K_M" }, { 13, "Q3_K_L" },
    { 14, "Q4_K_S" }, { 15, "Q4_K_M" }, { 16, "Q5_K_S" }, { 17, "Q5_K_M" }, { 18, "Q6_K" },
    { 32, "BF16" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (table); i++)
    if (table[i].id == ft)
      return table[i].name;
  return NULL;
}

static gint64
file_mtime (const char *path, gint64 *size)
{
  g_autoptr (GFile) f = g_file_new_for_path (path);
  g_autoptr (GFileInfo) info = g_file_query_info (f, G_FILE_ATTRIBUTE_TIME_MODIFIED ","
                                                  G_FILE_ATTRIBUTE_STANDARD_SIZE,
                                                  G_FILE_QUERY_INFO_NONE, NULL, NULL);

  if (info == NULL)
    return 0;
  if (size != NULL)
    *size = g_file_info_get_size (info);
  return (gint64) g_file_info_get_attribute_uint64 (info, G_FILE_ATTRIBUTE_TIME_MODIFIED);
}

static BlnModelEntry *
entry_from_gguf (const char *path, GError **error)
{
  g_autoptr (BlnGguf) g = bln_gguf_open (path, error);
  BlnModelEntry *e;
  const char *arch, *name, *label;
  gint64 ft = -1, ctx = 0;
  guint64 type_bytes[BLN_TYPE_COUNT_] = { 0 };
  int best = -1;

  if (g == NULL)
    return NULL;
  if (bln_gguf_n_tensors (g) == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s has no tensors (vocabulary only)",
                   path);
      return NULL;
    }
  e = g_new0 (BlnModelEntry, 1);
  e->format = BLN_MODEL_FORMAT_GGUF;
  e->path = g_strdup (path);
  arch = bln_gguf_get_string (g, "general.architecture", NULL);
  e->architecture = g_strdup (arch ? arch : "unknown");
  name = bln_gguf_get_string (g, "general.name", NULL);
  if (name == NULL || !*name)
    name = NULL;
  for (int64_t i = 0; i < bln_gguf_n_tensors (g); i++)
    {
      const BlnGgufTensor *t = bln_gguf_tensor (g, i);
      gint64 n = 1;
      for (int d = 0; d < t->n_dims; d++)
        n *= t->ne[d];
      e->n_params += n;
      if (t->n_dims >= 2 && t->type >= 0 && t->type < BLN_TYPE_COUNT_)
        type_bytes[t->type] += t->nbytes;
    }
  if (bln_gguf_get_int (g, "general.file_type", &ft) && file_type_name (ft) != NULL)
    e->quantization = g_strdup (file_type_name (ft));
  else
    {
      for (int t = 0; t < BLN_TYPE_COUNT_; t++)
        if (type_bytes[t] > 0 && (best < 0 || type_bytes[t] > type_bytes[best]))
          best = t;
      e->quantization = g_ascii_strup (best >= 0 ? bln_type_name (best) : "unknown", -1);
    }
  label = bln_gguf_get_string (g, "general.size_label", NULL);
  e->parameter_size = label && *label ? g_strdup (label) : format_params (e->n_params);
  if (arch != NULL)
    {
      g_autofree char *key = g_strconcat (arch, ".context_length", NULL);
      if (bln_gguf_get_int (g, key, &ctx) && ctx > 0 && ctx <= G_MAXINT)
        e->context_length = (int) ctx;
    }
  e->modified = file_mtime (path, &e->size_bytes);
  e->id = bln_model_library_derive_id (path, FALSE, e->quantization);
  e->name = name ? g_strdup (name) : g_strdup (e->id);
  return e;
}

static BlnModelEntry *
entry_from_hf (const char *path, GError **error)
{
  g_autoptr (BlnHfDir) hf = bln_hfdir_open (path, error);
  JsonObject *cfg;
  BlnModelEntry *e;
  const char *dtype;
  g_autoptr (GDir) dir = NULL;
  const char *f;

  if (hf == NULL)
    return NULL;
  cfg = bln_hfdir_config (hf);
  e = g_new0 (BlnModelEntry, 1);
  e->format = BLN_MODEL_FORMAT_HF;
  e->path = g_strdup (path);
  e->architecture = g_strdup (bln_hf_config_get_string (cfg, "model_type", "unknown"));
  for (int64_t i = 0; i < bln_hfdir_n_tensors (hf); i++)
    {
      const BlnStTensorInfo *t = bln_hfdir_tensor_info (hf, bln_hfdir_tensor_name (hf, i));
      gint64 n = 1;
      if (t == NULL)
        continue;
      for (int d = 0; d < t->n_dims; d++)
        n *= t->shape[d];
      e->n_params += n;
    }
  dtype = bln_hf_config_get_string (cfg, "torch_dtype", NULL);
  if (dtype == NULL)
    dtype = bln_hf_config_get_string (cfg, "dtype", "float32");
  e->quantization = g_strdup (g_str_equal (dtype, "bfloat16") ? "BF16"
                              : g_str_equal (dtype, "float16") ? "F16" : "F32");
  e->parameter_size = format_params (e->n_params);
  e->context_length = (int) CLAMP (bln_hf_config_get_int (cfg, "max_position_embeddings", 0),
                                   0, G_MAXINT);
  e->modified = file_mtime (path, NULL);
  dir = g_dir_open (path, 0, NULL);
  while (dir != NULL && (f = g_dir_read_name (dir)) != NULL)
    if (g_str_has_suffix (f, ".safetensors"))
      {
        g_autofree char *p = g_build_filename (path, f, NULL);
        gint64 sz = 0;
        file_mtime (p, &sz);
        e->size_bytes += sz;
      }
  e->id = bln_model_library_derive_id (path, TRUE, NULL);
  e->name = g_path_get_basename (path);
  return e;
}

static gboolean
is_hf_dir (const char *path)
{
  g_autofree char *cfg = g_build_filename (path, "config.json", NULL);
  g_autofree char *one = g_build_filename (path, "model.safetensors", NULL);
  g_autofree char *idx = g_build_filename (path, "model.safetensors.index.json", NULL);

  return g_file_test (cfg, G_FILE_TEST_IS_REGULAR)
         && (g_file_test (one, G_FILE_TEST_EXISTS) || g_file_test (idx, G_FILE_TEST_EXISTS));
}

static int
cmp_str (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static void
add_entry (BlnModelLibrary *lib, BlnModelEntry *e)
{
  g_ptr_array_add (lib->entries, e);
}

/* Orders the entries of one derived id: the one installed first (oldest
 * modification time) keeps the plain id, ties broken by path. */
static int
cmp_claim (gconstpointer a, gconstpointer b)
{
  const BlnModelEntry *x = *(BlnModelEntry *const *) a, *y = *(BlnModelEntry *const *) b;
  int c = strcmp (x->id, y->id);

  if (c != 0)
    return c;
  if (x->modified != y->modified)
    return x->modified < y->modified ? -1 : 1;
  return strcmp (x->path, y->path);
}

/* Makes every id unique after a scan of @root, so that each id names one
 * file and keeps naming it when other files come and go. Derived ids are
 * lowercase, so equal ids are equal strings. Of the entries that derive the
 * same id, the oldest keeps it; each other one gets "-" and the first 8 hex
 * digits of the SHA-256 of its path below @root, which depend on nothing
 * but its own place in the folder (a number follows in the unlikely case
 * that this is taken too). */
static void
make_ids_unique (BlnModelLibrary *lib, const char *root)
{
  g_autoptr (GHashTable) taken = g_hash_table_new (g_str_hash, g_str_equal);
  GPtrArray *es = lib->entries;
  gsize root_len = strlen (root);
  guint i;

  while (root_len > 1 && G_IS_DIR_SEPARATOR (root[root_len - 1]))
    root_len--;
  g_ptr_array_sort (es, cmp_claim);
  for (i = 0; i < es->len; i++)
    {
      BlnModelEntry *e = es->pdata[i];
      if (i == 0 || strcmp (e->id, ((BlnModelEntry *) es->pdata[i - 1])->id) != 0)
        g_hash_table_add (taken, e->id);
    }
  for (i = 1; i < es->len; i++)
    {
      BlnModelEntry *e = es->pdata[i];
      const char *rel = e->path;
      g_autofree char *sum = NULL;
      char *id;

      if (g_hash_table_contains (taken, e->id) && g_hash_table_lookup (taken, e->id) == e->id)
        continue;   /* the first of its group */
      if (strncmp (rel, root, root_len) == 0 && G_IS_DIR_SEPARATOR (rel[root_len]))
        rel += root_len + 1;
      while (G_IS_DIR_SEPARATOR (*rel))
        rel++;
      sum = g_compute_checksum_for_string (G_CHECKSUM_SHA256, rel, -1);
      id = g_strdup_printf ("%s-%.8s", e->id, sum);
      for (int n = 2; g_hash_table_contains (taken, id); n++)
        {
          g_free (id);
          id = g_strdup_printf ("%s-%.8s-%d", e->id, sum, n);
        }
      g_free (e->id);
      e->id = id;
      g_hash_table_add (taken, e->id);
    }
}

static void
scan (BlnModelLibrary *lib, const char *dir, int depth)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *n;

  if (d == NULL)
    return;
  while ((n = g_dir_read_name (d)) != NULL)
    if (n[0] != '.')
      g_ptr_array_add (names, g_strdup (n));
  g_ptr_array_sort (names, cmp_str);
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree char *p = g_build_filename (dir, names->pdata[i], NULL);
      g_autofree char *lower = g_ascii_strdown (names->pdata[i], -1);
      g_autoptr (GError) error = NULL;
      BlnModelEntry *e = NULL;

      if (g_file_test (p, G_FILE_TEST_IS_DIR))
        {
          if (is_hf_dir (p))
            {
              e = entry_from_hf (p, &error);
              if (e == NULL)
                g_printerr ("baleen: skipping %s: %s\n", p, error->message);
              else
                add_entry (lib, e);
            }
          if (depth < MAX_DEPTH)
            scan (lib, p, depth + 1);
        }
      else if (g_str_has_suffix (lower, ".gguf"))
        {
          e = entry_from_gguf (p, &error);
          if (e == NULL)
            g_printerr ("baleen: skipping %s: %s\n", p, error->message);
          else
            add_entry (lib, e);
        }
    }
}

static int
cmp_entry (gconstpointer a, gconstpointer b)
{
  const BlnModelEntry *x = *(BlnModelEntry *const *) a, *y = *(BlnModelEntry *const *) b;

  return strcmp (x->id, y->id);
}

BlnModelLibrary *
bln_model_library_new_from_dir (const char *dir, GError **error)
{
  BlnModelLibrary *lib;
  g_autoptr (GDir) d = g_dir_open (dir, 0, error);

  if (d == NULL)
    {
      if (error != NULL && *error != NULL)
        {
          g_autofree char *msg = g_strdup ((*error)->message);
          g_clear_error (error);
          g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot read the models folder: %s", msg);
        }
      return NULL;
    }
  lib = g_new0 (BlnModelLibrary, 1);
  lib->entries = g_ptr_array_new_with_free_func ((GDestroyNotify) entry_free);
  scan (lib, dir, 1);
  make_ids_unique (lib, dir);
  g_ptr_array_sort (lib->entries, cmp_entry);
  return lib;
}

BlnModelLibrary *
bln_model_library_new_for_path (const char *path, GError **error)
{
  BlnModelLibrary *lib;
  BlnModelEntry *e;

  if (g_file_test (path, G_FILE_TEST_IS_DIR))
    e = entry_from_hf (path, error);
  else
    e = entry_from_gguf (path, error);
  if (e == NULL)
    return NULL;
  lib = g_new0 (BlnModelLibrary, 1);
  lib->entries = g_ptr_array_new_with_free_func ((GDestroyNotify) entry_free);
  g_ptr_array_add (lib->entries, e);
  return lib;
}

void
bln_model_library_free (BlnModelLibrary *lib)
{
  if (lib == NULL)
    return;
  g_ptr_array_unref (lib->entries);
  g_free (lib);
}

guint
bln_model_library_n_models (BlnModelLibrary *lib)
{
  return lib->entries->len;
}

const BlnModelEntry *
bln_model_library_get (BlnModelLibrary *lib, guint i)
{
  g_return_val_if_fail (i < lib->entries->len, NULL);
  return lib->entries->pdata[i];
}

const BlnModelEntry *
bln_model_library_lookup (BlnModelLibrary *lib, const char *name, GError **error)
{
  gsize len;

  g_return_val_if_fail (name != NULL, NULL);
  len = strlen (name);
  if (len > MAX_NAME || strchr (name, '/') || strchr (name, '\\') || strstr (name, ".."))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "invalid model name: a model is named by its id from the model list, "
                   "never by a path");
      return NULL;
    }
  for (const char *p = name; *p; p++)
    if ((guchar) *p < 0x20 || *p == 0x7f)
      {
        g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                     "invalid model name: control characters");
        return NULL;
      }
  if (len > 7 && g_ascii_strcasecmp (name + len - 7, ":latest") == 0)
    len -= 7;
  for (guint i = 0; i < lib->entries->len; i++)
    {
      BlnModelEntry *e = lib->entries->pdata[i];
      if (strlen (e->id) == len && g_ascii_strncasecmp (e->id, name, len) == 0)
        return e;
    }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "the model '%s' does not exist", name);
  return NULL;
}

/* ---------------------------------------------------------------------- */
/* host                                                                    */

typedef enum { LEASE_WAITING, LEASE_GRANTED, LEASE_DONE } LeaseState;

struct _BlnModelLease {
  BlnModelHost *host;
  const BlnModelEntry *entry;
  BlnModelReadyFn ready;
  gpointer user_data;
  LeaseState state;
};

struct _BlnModelHost {
  BlnModelLibrary *lib;
  BlnModelHostOptions opts;
  GMainContext *ctx;
  BlnEngineWorker *worker;
  const BlnModelEntry *loaded;
  GQueue waiting;            /* BlnModelLease* */
  guint n_granted;
  gboolean busy;             /* a load or unload runs on a helper thread */
  GSource *idle;             /* the idle-TTL timer */
};

typedef struct {
  BlnEngineWorker *old;      /* to free, or NULL */
  const BlnModelEntry *entry;  /* to load, or NULL (unload only) */
  int n_threads, n_ctx;
  BlnEngineWorker *result;
} LoadJob;

static void pump (BlnModelHost *host);

static void
load_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  LoadJob *job = data;
  GError *error = NULL;

  g_clear_pointer (&job->old, bln_engine_worker_free);
  if (job->entry == NULL)
    {
      g_task_return_boolean (task, TRUE);
      return;
    }
  job->result = bln_engine_worker_new (job->entry->path, job->n_threads, job->n_ctx, &error);
  if (job->result == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_boolean (task, TRUE);
}

static void
load_done (GObject *source, GAsyncResult *res, gpointer data)
{
  BlnModelHost *host = data;
  LoadJob *job = g_task_get_task_data (G_TASK (res));
  g_autoptr (GError) error = NULL;

  host->busy = FALSE;
  if (!g_task_propagate_boolean (G_TASK (res), &error))
    {
      /* every lease waiting for this model gets the error */
      GList *l = host->waiting.head;
      g_printerr ("baleen: cannot load %s: %s\n", job->entry->id, error->message);
      while (l != NULL)
        {
          GList *next = l->next;
          BlnModelLease *lease = l->data;
          if (lease->entry == job->entry)
            {
              g_queue_delete_link (&host->waiting, l);
              lease->state = LEASE_DONE;
              lease->ready (lease, NULL, lease->entry, error, lease->user_data);
            }
          l = next;
        }
    }
  else if (job->entry != NULL)
    {
      host->worker = g_steal_pointer (&job->result);
      host->loaded = job->entry;
      g_printerr ("baleen: loaded %s\n", job->entry->id);
    }
  pump (host);
}

static void
job_free (gpointer data)
{
  LoadJob *job = data;

  g_clear_pointer (&job->old, bln_engine_worker_free);
  g_clear_pointer (&job->result, bln_engine_worker_free);
  g_free (job);
}

/* Frees the loaded worker and loads @entry (NULL: only unloads) on a helper thread. */
static void
start_load (BlnModelHost *host, const BlnModelEntry *entry)
{
  LoadJob *job = g_new0 (LoadJob, 1);
  g_autoptr (GTask) task = NULL;

  if (host->loaded != NULL)
    g_printerr ("baleen: unloading %s\n", host->loaded->id);
  job->old = g_steal_pointer (&host->worker);
  job->entry = entry;
  job->n_threads = host->opts.n_threads;
  job->n_ctx = host->opts.n_ctx;
  host->loaded = NULL;
  host->busy = TRUE;
  task = g_task_new (NULL, NULL, load_done, host);
  g_task_set_task_data (task, job, job_free);
  g_task_run_in_thread (task, load_thread);
}

static gboolean
on_idle_ttl (gpointer data)
{
  BlnModelHost *host = data;

  g_clear_pointer (&host->idle, g_source_unref);
  if (!host->busy && host->n_granted == 0 && host->waiting.length == 0 && host->loaded != NULL)
    start_load (host, NULL);
  return G_SOURCE_REMOVE;
}

static void
stop_idle (BlnModelHost *host)
{
  if (host->idle != NULL)
    {
      g_source_destroy (host->idle);
      g_clear_pointer (&host->idle, g_source_unref);
    }
}

static void
pump (BlnModelHost *host)
{
  BlnModelLease *head;

  while (!host->busy && (head = g_queue_peek_head (&host->waiting)) != NULL)
    {
      if (head->entry == host->loaded)
        {
          g_queue_pop_head (&host->waiting);
          head->state = LEASE_GRANTED;
          host->n_granted++;
          stop_idle (host);
          head->ready (head, host->worker, head->entry, NULL, head->user_data);
          continue;
        }
      if (host->n_granted > 0)
        return;   /* the switch waits for the requests on the loaded model */
      stop_idle (host);
      start_load (host, head->entry);
      return;
    }
  if (!host->busy && host->n_granted == 0 && host->waiting.length == 0 && host->loaded != NULL
      && host->opts.idle_ttl > 0 && host->idle == NULL)
    {
      host->idle = g_timeout_source_new_seconds (host->opts.idle_ttl);
      g_source_set_callback (host->idle, on_idle_ttl, host, NULL);
      g_source_attach (host->idle, host->ctx);
    }
}

BlnModelHost *
bln_model_host_new (BlnModelLibrary *lib, const BlnModelHostOptions *options)
{
  BlnModelHost *host = g_new0 (BlnModelHost, 1);

  host->lib = lib;
  if (options != NULL)
    host->opts = *options;
  host->ctx = g_main_context_ref_thread_default ();
  g_queue_init (&host->waiting);
  return host;
}

void
bln_model_host_free (BlnModelHost *host)
{
  if (host == NULL)
    return;
  while (host->busy)
    g_main_context_iteration (host->ctx, TRUE);
  stop_idle (host);
  g_clear_pointer (&host->worker, bln_engine_worker_free);
  g_queue_clear (&host->waiting);
  g_main_context_unref (host->ctx);
  g_free (host);
}

gboolean
bln_model_host_preload (BlnModelHost *host, const BlnModelEntry *entry, GError **error)
{
  BlnEngineWorker *w;

  g_return_val_if_fail (!host->busy && host->n_granted == 0, FALSE);
  w = bln_engine_worker_new (entry->path, host->opts.n_threads, host->opts.n_ctx, error);
  if (w == NULL)
    return FALSE;
  g_clear_pointer (&host->worker, bln_engine_worker_free);
  host->worker = w;
  host->loaded = entry;
  pump (host);
  return TRUE;
}

BlnModelLease *
bln_model_host_acquire (BlnModelHost *host, const BlnModelEntry *entry, BlnModelReadyFn ready,
                        gpointer user_data)
{
  BlnModelLease *lease = g_new0 (BlnModelLease, 1);

  lease->host = host;
  lease->entry = entry;
  lease->ready = ready;
  lease->user_data = user_data;
  lease->state = LEASE_WAITING;
  g_queue_push_tail (&host->waiting, lease);
  pump (host);
  return lease;
}

void
bln_model_lease_release (BlnModelLease *lease)
{
  BlnModelHost *host;

  if (lease == NULL)
    return;
  host = lease->host;
  if (lease->state == LEASE_WAITING)
    g_queue_remove (&host->waiting, lease);
  else if (lease->state == LEASE_GRANTED)
    host->n_granted--;
  g_free (lease);
  pump (host);
}

const BlnModelEntry *
bln_model_host_loaded (BlnModelHost *host)
{
  return host->loaded;
}

BlnEngineWorker *
bln_model_host_worker (BlnModelHost *host)
{
  return host->worker;
}

const BlnModelEntry *
bln_model_host_resolve (BlnModelHost *host, const char *name, gboolean strict, GError **error)
{
  const BlnModelEntry *e;
  g_autoptr (GError) local = NULL;

  if (bln_model_library_n_models (host->lib) == 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no models are installed");
      return NULL;
    }
  if (name == NULL || *name == '\0')
    return host->loaded ? host->loaded : bln_model_library_get (host->lib, 0);
  e = bln_model_library_lookup (host->lib, name, &local);
  if (e == NULL && !strict && bln_model_library_n_models (host->lib) == 1
      && g_error_matches (local, G_IO_ERROR, G_IO_ERROR_NOT_FOUND))
    return bln_model_library_get (host->lib, 0);
  if (e == NULL)
    g_propagate_error (error, g_steal_pointer (&local));
  return e;
}

guint
bln_model_host_n_leases (BlnModelHost *host)
{
  return host->n_granted;
}

guint
bln_model_host_n_waiting (BlnModelHost *host)
{
  return host->waiting.length;
}
