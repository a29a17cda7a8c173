/* hfdir.c — see hfdir.h. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <glib/gstdio.h>

#include "bln-error.h"
#include "hfdir.h"
#include "quant.h"

/* config.json and the index are small; anything past this is not a model dir. */
#define MAX_JSON_FILE (64u * 1024u * 1024u)
#define MAX_JSON_DEPTH 64

typedef struct {
  BlnSafetensors *st;   /* borrowed from shards */
  int64_t index;        /* in st */
  BlnTensor *fp8;       /* an FP8 tensor decoded to F32 on request (owned) */
  /* an FP8 tensor once checked (fp8_open): its type (F32) and shape with
   * no data (owned), its scales (borrowed) and their block */
  BlnTensor *shape;
  const BlnTensor *scales;
  int64_t br, bc;
} Entry;

static void
entry_free (gpointer p)
{
  Entry *e = p;

  if (e->fp8 != NULL)
    {
      bln_tensor_clear (e->fp8);
      g_free (e->fp8);
    }
  if (e->shape != NULL)
    {
      bln_tensor_clear (e->shape);
      g_free (e->shape);
    }
  g_free (e);
}

struct _BlnHfDir {
  char *path;
  JsonParser *config_parser;
  JsonObject *config;          /* borrowed from config_parser */
  char *tokenizer_json;
  char *tokenizer_config;
  char *generation_config;
  GPtrArray *shards;           /* BlnSafetensors *, owned */
  GHashTable *tensors;         /* name (borrowed from the shard) -> Entry * (owned) */
  GPtrArray *names;            /* sorted, borrowed */
};

void
bln_hfdir_free (BlnHfDir *hf)
{
  if (hf == NULL)
    return;
  g_clear_pointer (&hf->names, g_ptr_array_unref);
  g_clear_pointer (&hf->tensors, g_hash_table_unref);
  g_clear_pointer (&hf->shards, g_ptr_array_unref);
  g_clear_object (&hf->config_parser);
  g_free (hf->tokenizer_json);
  g_free (hf->tokenizer_config);
  g_free (hf->generation_config);
  g_free (hf->path);
  g_free (hf);
}

static gboolean
json_depth_ok (const char *text, size_t len)
{
  size_t i;
  int depth = 0;
  gboolean in_string = FALSE;

  for (i = 0; i < len; i++)
    {
      if (in_string)
        {
          if (text[i] == '\\')
            i++;
          else if (text[i] == '"')
            in_string = FALSE;
        }
      else if (text[i] == '"')
        in_string = TRUE;
      else if ((text[i] == '{' || text[i] == '[') && ++depth > MAX_JSON_DEPTH)
        return FALSE;
      else if (text[i] == '}' || text[i] == ']')
        depth--;
    }
  return TRUE;
}

/* Reads @path and parses it as a JSON object. The parser is returned so the
 * tree outlives this call; the root object is stored in @root. */
static JsonParser *
load_json_object (const char *path, JsonObject **root, GError **error)
{
  g_autoptr(GError) local = NULL;
  g_autoptr(JsonParser) parser = NULL;
  g_autofree char *text = NULL;
  gsize len = 0;
  GStatBuf sb;
  JsonNode *node;

  if (g_stat (path, &sb) != 0 || !S_ISREG (sb.st_mode))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "%s: not found or not a regular file", path);
      return NULL;
    }
  if ((guint64) sb.st_size > MAX_JSON_FILE)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: %" G_GUINT64_FORMAT
                   " bytes is too large for a JSON file here", path, (guint64) sb.st_size);
      return NULL;
    }
  if (!g_file_get_contents (path, &text, &len, &local))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "%s", local->message);
      return NULL;
    }
  if (len > MAX_JSON_FILE || !g_utf8_validate_len (text, len, NULL) || !json_depth_ok (text, len))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: not a UTF-8 JSON document", path);
      return NULL;
    }
  parser = json_parser_new_immutable ();
  if (!json_parser_load_from_data (parser, text, (gssize) len, &local))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: %s", path, local->message);
      return NULL;
    }
  node = json_parser_get_root (parser);
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: the root is not a JSON object", path);
      return NULL;
    }
  *root = json_node_get_object (node);
  return g_steal_pointer (&parser);
}

static char *
optional_file (const char *dir, const char *name)
{
  char *p = g_build_filename (dir, name, NULL);

  if (g_file_test (p, G_FILE_TEST_IS_REGULAR))
    return p;
  g_free (p);
  return NULL;
}

/* A shard name must stay inside the directory: one plain path component. */
static gboolean
shard_name_ok (const char *name)
{
  return name[0] != '\0' && strcmp (name, ".") != 0 && strcmp (name, "..") != 0
         && strchr (name, '/') == NULL && strchr (name, '\\') == NULL
         && !g_path_is_absolute (name);
}

static BlnSafetensors *
open_shard (BlnHfDir *hf, const char *name, GError **error)
{
  g_autofree char *p = g_build_filename (hf->path, name, NULL);
  BlnSafetensors *st = bln_safetensors_open (p, error);

  if (st != NULL)
    g_ptr_array_add (hf->shards, st);
  return st;
}

/* Adds every tensor of @st to the table; a name already taken by another
 * shard means the directory is inconsistent. */
static gboolean
add_shard_tensors (BlnHfDir *hf, BlnSafetensors *st, const char *shard_name, GError **error)
{
  int64_t i, n = bln_safetensors_n_tensors (st);

  for (i = 0; i < n; i++)
    {
      const BlnStTensorInfo *info = bln_safetensors_info (st, i);
      Entry *e = g_hash_table_lookup (hf->tensors, info->name);

      if (e != NULL && e->st != st)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "%s: tensor '%s' is present in two shards (the second is %s)", hf->path,
                       info->name, shard_name);
          return FALSE;
        }
      if (e == NULL)
        {
          e = g_new0 (Entry, 1);
          e->st = st;
          e->index = i;
          g_hash_table_insert (hf->tensors, (gpointer) info->name, e);
        }
    }
  return TRUE;
}

static gboolean
open_sharded (BlnHfDir *hf, const char *index_path, GError **error)
{
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(GHashTable) by_file = g_hash_table_new (g_str_hash, g_str_equal);
  JsonObject *root = NULL, *map;
  JsonNode *node;
  JsonObjectIter iter;
  const char *tensor;
  JsonNode *value;

  parser = load_json_object (index_path, &root, error);
  if (parser == NULL)
    return FALSE;
  node = json_object_get_member (root, "weight_map");
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: no \"weight_map\" object",
                   index_path);
      return FALSE;
    }
  map = json_node_get_object (node);
  if (json_object_get_size (map) == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: \"weight_map\" is empty", index_path);
      return FALSE;
    }

  /* First pass: open each shard once, in the order the index names them. */
  json_object_iter_init (&iter, map);
  while (json_object_iter_next (&iter, &tensor, &value))
    {
      const char *file;
      BlnSafetensors *st;

      if (!JSON_NODE_HOLDS_VALUE (value) || json_node_get_value_type (value) != G_TYPE_STRING)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "%s: the shard of tensor '%s' is not a string", index_path, tensor);
          return FALSE;
        }
      file = json_node_get_string (value);
      if (!shard_name_ok (file))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "%s: shard name '%s' (tensor '%s') is not a file in the model directory",
                       index_path, file, tensor);
          return FALSE;
        }
      if (g_hash_table_contains (by_file, file))
        continue;
      st = open_shard (hf, file, error);
      if (st == NULL)
        return FALSE;
      g_hash_table_insert (by_file, (gpointer) file, st);
      if (!add_shard_tensors (hf, st, file, error))
        return FALSE;
    }

  /* Second pass: every listed tensor is where the index says it is. */
  json_object_iter_init (&iter, map);
  while (json_object_iter_next (&iter, &tensor, &value))
    {
      const char *file = json_node_get_string (value);
      Entry *e = g_hash_table_lookup (hf->tensors, tensor);

      if (e == NULL || e->st != g_hash_table_lookup (by_file, file))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "%s: tensor '%s' is listed in shard %s but not found there", index_path,
                       tensor, file);
          return FALSE;
        }
    }
  return TRUE;
}

/* ---------------------------------------------------------------------- */
/* FP8 weights with block scales (DeepSeek-V3 / R1 as published)          */

#define FP8_SCALE_SUFFIX "_scale_inv"

static const BlnStTensorInfo *
entry_info (const Entry *e)
{
  return bln_safetensors_info (e->st, e->index);
}

/* @name is "<w>_scale_inv" and <w> is an FP8 tensor: the scales are read
 * with <w> and not listed on their own. */
static gboolean
is_fp8_scale (BlnHfDir *hf, const char *name)
{
  size_t n = strlen (name), k = strlen (FP8_SCALE_SUFFIX);
  g_autofree char *base = NULL;
  Entry *e;

  if (n <= k || strcmp (name + n - k, FP8_SCALE_SUFFIX) != 0)
    return FALSE;
  base = g_strndup (name, n - k);
  e = g_hash_table_lookup (hf->tensors, base);
  return e != NULL && entry_info (e)->dtype == BLN_ST_F8_E4M3;
}

/* float8 e4m3 ("fn": no infinities, S.1111.111 is NaN, exponent bias 7) */
static float
fp8_e4m3_value (guint8 b)
{
  int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
  float v;

  if (exp == 15 && man == 7)
    return NAN;
  v = exp == 0 ? ldexpf ((float) man, -9) : ldexpf ((float) (8 + man), exp - 10);
  return sign ? -v : v;
}

/* The scales' block (rows, columns): config.json's
 * quantization_config.weight_block_size, 128 x 128 when absent. */
static void
fp8_block (BlnHfDir *hf, int64_t *br, int64_t *bc)
{
  JsonObject *q = bln_hf_config_get_object (hf->config, "quantization_config");
  JsonNode *node = q ? json_object_get_member (q, "weight_block_size") : NULL;

  *br = *bc = 128;
  if (node != NULL && JSON_NODE_HOLDS_ARRAY (node)
      && json_array_get_length (json_node_get_array (node)) == 2)
    {
      JsonArray *a = json_node_get_array (node);
      gint64 r = json_array_get_int_element (a, 0), c = json_array_get_int_element (a, 1);

      if (r > 0 && c > 0 && r <= (1 << 20) && c <= (1 << 20))
        *br = r, *bc = c;
    }
}

/* Checks the FP8 tensor of entry @e (@name) and its scales once: two
 * dimensions, scales of shape [ceil(rows / br), ceil(cols / bc)] in F32,
 * BF16 or F16. Fills e->shape, e->scales, e->br and e->bc. */
static gboolean
fp8_open (BlnHfDir *hf, const char *name, Entry *e, GError **error)
{
  const BlnStTensorInfo *info = entry_info (e);
  g_autofree char *sname = NULL;
  Entry *se;
  int64_t rows, cols, br, bc;
  const BlnTensor *st;

  if (e->scales != NULL)
    return TRUE;
  sname = g_strconcat (name, FP8_SCALE_SUFFIX, NULL);
  se = g_hash_table_lookup (hf->tensors, sname);
  if (info->n_dims != 2)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "%s: FP8 tensor '%s' has %d dimensions; only matrices are read", hf->path,
                   name, info->n_dims);
      return FALSE;
    }
  if (se == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "%s: FP8 tensor '%s' has no '%s' (only FP8 with block scales, as "
                   "DeepSeek-V3 and R1 are published, can be read)", hf->path, name, sname);
      return FALSE;
    }
  st = bln_safetensors_tensor (se->st, se->index, error);
  if (st == NULL)
    return FALSE;
  fp8_block (hf, &br, &bc);
  rows = info->shape[0];
  cols = info->shape[1];
  if (st->n_dims != 2 || st->ne[1] != (rows + br - 1) / br || st->ne[0] != (cols + bc - 1) / bc)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "%s: '%s' is not [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "] (one scale per "
                   "%" G_GINT64_FORMAT " x %" G_GINT64_FORMAT " block of '%s')", hf->path, sname,
                   (rows + br - 1) / br, (cols + bc - 1) / bc, br, bc, name);
      return FALSE;
    }
  e->shape = g_new0 (BlnTensor, 1);
  e->shape->name = g_strdup (name);
  e->shape->type = BLN_TYPE_F32;
  e->shape->n_dims = 2;
  e->shape->ne[0] = cols;
  e->shape->ne[1] = rows;
  e->shape->ne[2] = e->shape->ne[3] = 1;
  e->scales = st;
  e->br = br;
  e->bc = bc;
  return TRUE;
}

static gboolean
fp8_row (BlnHfDir *hf, const char *name, Entry *e, int64_t r, float *out, GError **error)
{
  const BlnStTensorInfo *info = entry_info (e);
  const BlnTensor *sc;
  int64_t cols;
  size_t srow_bytes;
  const guint8 *q;
  g_autofree float *s = NULL;

  if (!fp8_open (hf, name, e, error))
    return FALSE;
  sc = e->scales;
  cols = e->shape->ne[0];
  if (r < 0 || r >= e->shape->ne[1])
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s: row %" G_GINT64_FORMAT
                   " of '%s' is out of range", hf->path, r, name);
      return FALSE;
    }
  s = g_new (float, sc->ne[0]);
  if (!bln_type_row_bytes (sc->type, sc->ne[0], &srow_bytes)
      || !bln_dequantize_row (sc->type, (const guint8 *) sc->data + (r / e->br) * srow_bytes, s,
                              sc->ne[0]))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED, "%s: the scales of '%s' cannot be "
                   "read", hf->path, name);
      return FALSE;
    }
  q = (const guint8 *) info->data + r * cols;
  for (int64_t c = 0; c < cols; c++)
    out[c] = fp8_e4m3_value (q[c]) * s[c / e->bc];
  return TRUE;
}

/* The whole FP8 tensor decoded to an F32 BlnTensor, kept in @e. */
static const BlnTensor *
fp8_tensor (BlnHfDir *hf, const char *name, Entry *e, GError **error)
{
  int64_t rows, cols;
  BlnTensor *t;
  float *data;

  if (e->fp8 != NULL)
    return e->fp8;
  if (!fp8_open (hf, name, e, error))
    return NULL;
  rows = e->shape->ne[1];
  cols = e->shape->ne[0];
  if ((guint64) rows * (guint64) cols > G_MAXSIZE / sizeof (float)
      || !(data = g_try_malloc ((size_t) rows * cols * sizeof (float))))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM, "%s: no memory to decode FP8 tensor '%s' "
                   "(%" G_GINT64_FORMAT " x %" G_GINT64_FORMAT ")", hf->path, name, rows, cols);
      return NULL;
    }
  for (int64_t r = 0; r < rows; r++)
    if (!fp8_row (hf, name, e, r, data + r * cols, error))
      {
        g_free (data);
        return NULL;
      }
  t = g_new0 (BlnTensor, 1);
  t->name = g_strdup (name);
  t->type = BLN_TYPE_F32;
  t->n_dims = 2;
  t->ne[0] = cols;
  t->ne[1] = rows;
  t->ne[2] = t->ne[3] = 1;
  t->nbytes = (size_t) rows * cols * sizeof (float);
  t->owned = data;
  t->data = data;
  e->fp8 = t;
  return t;
}

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

BlnHfDir *
bln_hfdir_open (const char *path, GError **error)
{
  g_autoptr(BlnHfDir) hf = NULL;
  g_autofree char *config_path = NULL;
  g_autofree char *single = NULL;
  g_autofree char *index = NULL;
  GHashTableIter it;
  gpointer key;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  hf = g_new0 (BlnHfDir, 1);
  hf->path = g_strdup (path);
  hf->shards = g_ptr_array_new_with_free_func ((GDestroyNotify) bln_safetensors_free);
  hf->tensors = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, entry_free);
  hf->names = g_ptr_array_new ();

  if (!g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "%s: not a directory", path);
      return NULL;
    }
  config_path = g_build_filename (path, "config.json", NULL);
  hf->config_parser = load_json_object (config_path, &hf->config, error);
  if (hf->config_parser == NULL)
    return NULL;

  hf->tokenizer_json = optional_file (path, "tokenizer.json");
  hf->tokenizer_config = optional_file (path, "tokenizer_config.json");
  hf->generation_config = optional_file (path, "generation_config.json");

  single = optional_file (path, "model.safetensors");
  index = optional_file (path, "model.safetensors.index.json");
  if (single != NULL)
    {
      BlnSafetensors *st = open_shard (hf, "model.safetensors", error);

      if (st == NULL || !add_shard_tensors (hf, st, "model.safetensors", error))
        return NULL;
    }
  else if (index != NULL)
    {
      if (!open_sharded (hf, index, error))
        return NULL;
    }
  else
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO,
                   "%s: neither model.safetensors nor model.safetensors.index.json is there",
                   path);
      return NULL;
    }

  g_hash_table_iter_init (&it, hf->tensors);
  while (g_hash_table_iter_next (&it, &key, NULL))
    if (!is_fp8_scale (hf, key))
      g_ptr_array_add (hf->names, key);
  g_ptr_array_sort (hf->names, compare_names);
  return g_steal_pointer (&hf);
}

const char *
bln_hfdir_path (const BlnHfDir *hf)
{
  g_return_val_if_fail (hf != NULL, NULL);
  return hf->path;
}

JsonObject *
bln_hfdir_config (const BlnHfDir *hf)
{
  g_return_val_if_fail (hf != NULL, NULL);
  return hf->config;
}

const char *
bln_hfdir_tokenizer_json (const BlnHfDir *hf)
{
  g_return_val_if_fail (hf != NULL, NULL);
  return hf->tokenizer_json;
}

const char *
bln_hfdir_tokenizer_config (const BlnHfDir *hf)
{
  g_return_val_if_fail (hf != NULL, NULL);
  return hf->tokenizer_config;
}

const char *
bln_hfdir_generation_config (const BlnHfDir *hf)
{
  g_return_val_if_fail (hf != NULL, NULL);
  return hf->generation_config;
}

int
bln_hfdir_n_shards (const BlnHfDir *hf)
{
  g_return_val_if_fail (hf != NULL, 0);
  return (int) hf->shards->len;
}

int64_t
bln_hfdir_n_tensors (const BlnHfDir *hf)
{
  g_return_val_if_fail (hf != NULL, 0);
  return hf->names->len;
}

const char *
bln_hfdir_tensor_name (const BlnHfDir *hf, int64_t i)
{
  g_return_val_if_fail (hf != NULL, NULL);
  g_return_val_if_fail (i >= 0 && i < hf->names->len, NULL);
  return g_ptr_array_index (hf->names, i);
}

const BlnStTensorInfo *
bln_hfdir_tensor_info (const BlnHfDir *hf, const char *name)
{
  Entry *e;

  g_return_val_if_fail (hf != NULL && name != NULL, NULL);
  e = g_hash_table_lookup (hf->tensors, name);
  return e != NULL ? bln_safetensors_info (e->st, e->index) : NULL;
}

const BlnTensor *
bln_hfdir_get_tensor (BlnHfDir *hf, const char *name, GError **error)
{
  Entry *e;

  g_return_val_if_fail (hf != NULL && name != NULL, NULL);
  e = g_hash_table_lookup (hf->tensors, name);
  if (e == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "%s: tensor '%s' is missing", hf->path,
                   name);
      return NULL;
    }
  if (entry_info (e)->dtype == BLN_ST_F8_E4M3)
    return fp8_tensor (hf, name, e, error);
  return bln_safetensors_tensor (e->st, e->index, error);
}

const BlnTensor *
bln_hfdir_get_shape (BlnHfDir *hf, const char *name, GError **error)
{
  Entry *e = g_hash_table_lookup (hf->tensors, name);

  if (e == NULL || entry_info (e)->dtype != BLN_ST_F8_E4M3)
    return bln_hfdir_get_tensor (hf, name, error);
  return fp8_open (hf, name, e, error) ? e->shape : NULL;
}

gboolean
bln_hfdir_tensor_is_fp8 (BlnHfDir *hf, const char *name)
{
  Entry *e = g_hash_table_lookup (hf->tensors, name);

  return e != NULL && entry_info (e)->dtype == BLN_ST_F8_E4M3;
}

gboolean
bln_hfdir_fp8_row (BlnHfDir *hf, const char *name, int64_t r, float *out, GError **error)
{
  Entry *e = g_hash_table_lookup (hf->tensors, name);

  if (e == NULL || entry_info (e)->dtype != BLN_ST_F8_E4M3)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "%s: '%s' is not an FP8 tensor",
                   hf->path, name);
      return FALSE;
    }
  return fp8_row (hf, name, e, r, out, error);
}

const BlnTensor *
bln_hfdir_find_tensor (BlnHfDir *hf, const char *name)
{
  return bln_hfdir_get_tensor (hf, name, NULL);
}

/* ---------------------------------------------------------------------- */
/* config.json helpers                                                     */

/* The node at dotted path @key, or NULL when a component is missing, an
 * intermediate is not an object, or the value is JSON null. */
static JsonNode *
lookup_path (JsonObject *obj, const char *key)
{
  g_auto(GStrv) parts = NULL;
  JsonNode *node = NULL;
  int i;

  if (obj == NULL || key == NULL)
    return NULL;
  if (strchr (key, '.') == NULL)
    node = json_object_get_member (obj, key);
  else
    {
      parts = g_strsplit (key, ".", -1);
      for (i = 0; parts[i] != NULL; i++)
        {
          if (obj == NULL)
            return NULL;
          node = json_object_get_member (obj, parts[i]);
          if (node == NULL)
            return NULL;
          obj = JSON_NODE_HOLDS_OBJECT (node) ? json_node_get_object (node) : NULL;
        }
    }
  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return NULL;
  return node;
}

static GType
value_type (JsonNode *node)
{
  if (node == NULL || !JSON_NODE_HOLDS_VALUE (node))
    return G_TYPE_INVALID;
  return json_node_get_value_type (node);
}

int64_t
bln_hf_config_get_int (JsonObject *obj, const char *key, int64_t def)
{
  JsonNode *node = lookup_path (obj, key);
  GType t = value_type (node);
  double d;

  if (t == G_TYPE_INT64)
    return json_node_get_int (node);
  if (t == G_TYPE_BOOLEAN)
    return json_node_get_boolean (node) ? 1 : 0;
  if (t == G_TYPE_DOUBLE)
    {
      /* configs written by Python sometimes say 4096.0 for an integer */
      d = json_node_get_double (node);
      if (isfinite (d) && floor (d) == d && fabs (d) <= 9007199254740992.0)
        return (int64_t) d;
    }
  return def;
}

double
bln_hf_config_get_float (JsonObject *obj, const char *key, double def)
{
  JsonNode *node = lookup_path (obj, key);
  GType t = value_type (node);

  if (t == G_TYPE_INT64)
    return (double) json_node_get_int (node);
  if (t == G_TYPE_DOUBLE)
    return json_node_get_double (node);
  return def;
}

gboolean
bln_hf_config_get_bool (JsonObject *obj, const char *key, gboolean def)
{
  JsonNode *node = lookup_path (obj, key);

  if (value_type (node) == G_TYPE_BOOLEAN)
    return json_node_get_boolean (node);
  return def;
}

const char *
bln_hf_config_get_string (JsonObject *obj, const char *key, const char *def)
{
  JsonNode *node = lookup_path (obj, key);

  if (value_type (node) == G_TYPE_STRING)
    return json_node_get_string (node);
  return def;
}

JsonObject *
bln_hf_config_get_object (JsonObject *obj, const char *key)
{
  JsonNode *node = lookup_path (obj, key);

  if (node != NULL && JSON_NODE_HOLDS_OBJECT (node))
    return json_node_get_object (node);
  return NULL;
}

gboolean
bln_hf_config_has (JsonObject *obj, const char *key)
{
  return lookup_path (obj, key) != NULL;
}
