/* safetensors.c — see safetensors.h for the format and what is checked. */
#include <string.h>
#include <stdlib.h>
#include <json-glib/json-glib.h>

#include "bln-error.h"
#include "safetensors.h"

/* The JSON parser recurses once per nesting level; a legitimate header nests
 * three deep, so anything past this is hostile and refused before parsing. */
#define MAX_JSON_DEPTH 32

struct _BlnSafetensors {
  GMappedFile *mapped;        /* NULL for open_memory */
  const uint8_t *base;
  size_t size;
  const uint8_t *data;        /* start of the data section */
  uint64_t data_size;
  int64_t n_tensors;
  BlnStTensorInfo *infos;     /* sorted by begin; names owned */
  BlnTensor *tensors;         /* built on demand; name == NULL until then */
  GHashTable *by_name;        /* name (borrowed from infos) -> index + 1 */
  GHashTable *metadata;       /* key -> value, both owned */
};

static const struct {
  const char *name;
  size_t size;
} dtype_table[BLN_ST_N_DTYPES_] = {
  [BLN_ST_BOOL] = { "BOOL", 1 },
  [BLN_ST_U8] = { "U8", 1 },
  [BLN_ST_I8] = { "I8", 1 },
  [BLN_ST_F8_E5M2] = { "F8_E5M2", 1 },
  [BLN_ST_F8_E4M3] = { "F8_E4M3", 1 },
  [BLN_ST_F8_E8M0] = { "F8_E8M0", 1 },
  [BLN_ST_I16] = { "I16", 2 },
  [BLN_ST_U16] = { "U16", 2 },
  [BLN_ST_F16] = { "F16", 2 },
  [BLN_ST_BF16] = { "BF16", 2 },
  [BLN_ST_I32] = { "I32", 4 },
  [BLN_ST_U32] = { "U32", 4 },
  [BLN_ST_F32] = { "F32", 4 },
  [BLN_ST_F64] = { "F64", 8 },
  [BLN_ST_I64] = { "I64", 8 },
  [BLN_ST_U64] = { "U64", 8 },
  [BLN_ST_C64] = { "C64", 8 },
};

const char *
bln_st_dtype_name (BlnStDtype dtype)
{
  if ((int) dtype < 0 || dtype >= BLN_ST_N_DTYPES_)
    return "unknown";
  return dtype_table[dtype].name;
}

size_t
bln_st_dtype_size (BlnStDtype dtype)
{
  if ((int) dtype < 0 || dtype >= BLN_ST_N_DTYPES_)
    return 0;
  return dtype_table[dtype].size;
}

static gboolean
dtype_from_name (const char *name, BlnStDtype *out)
{
  int i;

  for (i = 0; i < BLN_ST_N_DTYPES_; i++)
    if (strcmp (dtype_table[i].name, name) == 0)
      {
        *out = (BlnStDtype) i;
        return TRUE;
      }
  return FALSE;
}

void
bln_safetensors_free (BlnSafetensors *st)
{
  int64_t i;

  if (st == NULL)
    return;
  if (st->tensors != NULL)
    for (i = 0; i < st->n_tensors; i++)
      bln_tensor_clear (&st->tensors[i]);
  g_free (st->tensors);
  if (st->infos != NULL)
    for (i = 0; i < st->n_tensors; i++)
      g_free ((char *) st->infos[i].name);
  g_free (st->infos);
  g_clear_pointer (&st->by_name, g_hash_table_unref);
  g_clear_pointer (&st->metadata, g_hash_table_unref);
  g_clear_pointer (&st->mapped, g_mapped_file_unref);
  g_free (st);
}

/* Nesting depth of a JSON text, ignoring brackets inside strings. */
static gboolean
json_depth_ok (const char *text, size_t len)
{
  size_t i;
  int depth = 0;
  gboolean in_string = FALSE;

  for (i = 0; i < len; i++)
    {
      char c = text[i];

      if (in_string)
        {
          if (c == '\\')
            i++;
          else if (c == '"')
            in_string = FALSE;
          continue;
        }
      if (c == '"')
        in_string = TRUE;
      else if (c == '{' || c == '[')
        {
          if (++depth > MAX_JSON_DEPTH)
            return FALSE;
        }
      else if (c == '}' || c == ']')
        depth--;
    }
  return TRUE;
}

/* A JSON integer that is non-negative; doubles, strings and negatives are refused. */
static gboolean
node_get_uint (JsonNode *node, uint64_t *out)
{
  int64_t v;

  if (node == NULL || !JSON_NODE_HOLDS_VALUE (node)
      || json_node_get_value_type (node) != G_TYPE_INT64)
    return FALSE;
  v = json_node_get_int (node);
  if (v < 0)
    return FALSE;
  *out = (uint64_t) v;
  return TRUE;
}

static gboolean
parse_entry (BlnSafetensors *st, const char *name, JsonNode *node, BlnStTensorInfo *info,
             GError **error)
{
  JsonObject *obj;
  JsonNode *dtype_node, *shape_node, *offsets_node;
  JsonArray *shape, *offsets;
  const char *dtype_name;
  uint64_t n_elements = 1, nbytes, begin, end;
  guint i, n_dims;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    goto bad;
  obj = json_node_get_object (node);
  dtype_node = json_object_get_member (obj, "dtype");
  shape_node = json_object_get_member (obj, "shape");
  offsets_node = json_object_get_member (obj, "data_offsets");
  if (dtype_node == NULL || shape_node == NULL || offsets_node == NULL
      || !JSON_NODE_HOLDS_VALUE (dtype_node)
      || json_node_get_value_type (dtype_node) != G_TYPE_STRING
      || !JSON_NODE_HOLDS_ARRAY (shape_node) || !JSON_NODE_HOLDS_ARRAY (offsets_node))
    goto bad;

  dtype_name = json_node_get_string (dtype_node);
  if (!dtype_from_name (dtype_name, &info->dtype))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "safetensors: tensor '%s' has unknown dtype '%s'", name, dtype_name);
      return FALSE;
    }

  shape = json_node_get_array (shape_node);
  n_dims = json_array_get_length (shape);
  if (n_dims > BLN_SAFETENSORS_MAX_DIMS)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "safetensors: tensor '%s' has %u dimensions (at most %d)", name, n_dims,
                   BLN_SAFETENSORS_MAX_DIMS);
      return FALSE;
    }
  info->n_dims = (int) n_dims;
  for (i = 0; i < BLN_SAFETENSORS_MAX_DIMS; i++)
    info->shape[i] = 1;
  for (i = 0; i < n_dims; i++)
    {
      uint64_t d;

      if (!node_get_uint (json_array_get_element (shape, i), &d))
        goto bad;
      info->shape[i] = (int64_t) d;
      if (!g_uint64_checked_mul (&n_elements, n_elements, d) || n_elements > INT64_MAX)
        goto too_big;
    }
  if (!g_uint64_checked_mul (&nbytes, n_elements, dtype_table[info->dtype].size))
    goto too_big;

  offsets = json_node_get_array (offsets_node);
  if (json_array_get_length (offsets) != 2
      || !node_get_uint (json_array_get_element (offsets, 0), &begin)
      || !node_get_uint (json_array_get_element (offsets, 1), &end))
    goto bad;
  if (begin > end || end > st->data_size)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "safetensors: tensor '%s' has data range [%" G_GUINT64_FORMAT ", %"
                   G_GUINT64_FORMAT ") outside the %" G_GUINT64_FORMAT "-byte data section",
                   name, begin, end, st->data_size);
      return FALSE;
    }
  if (end - begin != nbytes)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "safetensors: tensor '%s' (%s, %" G_GUINT64_FORMAT " elements) needs %"
                   G_GUINT64_FORMAT " bytes but its range holds %" G_GUINT64_FORMAT,
                   name, dtype_name, n_elements, nbytes, end - begin);
      return FALSE;
    }
  info->begin = begin;
  info->end = end;
  info->data = st->data + begin;
  return TRUE;

bad:
  g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
               "safetensors: malformed header entry for tensor '%s'", name);
  return FALSE;
too_big:
  g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
               "safetensors: tensor '%s' has a shape too large to address", name);
  return FALSE;
}

static gboolean
parse_metadata (BlnSafetensors *st, JsonNode *node, GError **error)
{
  JsonObjectIter iter;
  const char *key;
  JsonNode *value;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    goto bad;
  json_object_iter_init (&iter, json_node_get_object (node));
  while (json_object_iter_next (&iter, &key, &value))
    {
      if (!JSON_NODE_HOLDS_VALUE (value) || json_node_get_value_type (value) != G_TYPE_STRING)
        goto bad;
      g_hash_table_replace (st->metadata, g_strdup (key), g_strdup (json_node_get_string (value)));
    }
  return TRUE;

bad:
  g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
               "safetensors: \"__metadata__\" must map strings to strings");
  return FALSE;
}

static int
compare_by_begin (const void *a, const void *b)
{
  const BlnStTensorInfo *x = a, *y = b;

  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  /* empty tensors share offsets with their neighbours; keep the order total */
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return strcmp (x->name, y->name);
}

static gboolean
parse_header (BlnSafetensors *st, GError **error)
{
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(GError) json_error = NULL;
  JsonNode *root;
  JsonObject *obj;
  JsonObjectIter iter;
  const char *key;
  JsonNode *value;
  const char *header;
  uint64_t header_len = 0;
  const BlnStTensorInfo *prev = NULL;
  int64_t n = 0, i;
  int k;

  if (st->size < 8)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "safetensors: file of %zu bytes is too short for a header", st->size);
      return FALSE;
    }
  for (k = 7; k >= 0; k--)
    header_len = (header_len << 8) | st->base[k];
  if (header_len > BLN_SAFETENSORS_MAX_HEADER || header_len > st->size - 8)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "safetensors: header length %" G_GUINT64_FORMAT " is invalid for a %zu-byte "
                   "file", header_len, st->size);
      return FALSE;
    }
  header = (const char *) st->base + 8;
  st->data = st->base + 8 + header_len;
  st->data_size = st->size - 8 - header_len;

  if (header_len < 2 || header[0] != '{' || !g_utf8_validate_len (header, header_len, NULL)
      || !json_depth_ok (header, header_len))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "safetensors: the header is not a UTF-8 JSON object");
      return FALSE;
    }
  parser = json_parser_new_immutable ();
  if (!json_parser_load_from_data (parser, header, (gssize) header_len, &json_error))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT, "safetensors: bad JSON header: %s",
                   json_error->message);
      return FALSE;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "safetensors: the header is not a JSON object");
      return FALSE;
    }
  obj = json_node_get_object (root);

  st->infos = g_new0 (BlnStTensorInfo, json_object_get_size (obj));
  json_object_iter_init (&iter, obj);
  while (json_object_iter_next (&iter, &key, &value))
    {
      if (strcmp (key, "__metadata__") == 0)
        {
          if (!parse_metadata (st, value, error))
            return FALSE;
          continue;
        }
      if (g_hash_table_contains (st->by_name, key))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "safetensors: tensor '%s' is declared twice", key);
          return FALSE;
        }
      /* counted before parsing so that a failure still frees the name */
      st->infos[n].name = g_strdup (key);
      st->n_tensors = ++n;
      g_hash_table_insert (st->by_name, (gpointer) st->infos[n - 1].name, GINT_TO_POINTER (n));
      if (!parse_entry (st, st->infos[n - 1].name, value, &st->infos[n - 1], error))
        return FALSE;
    }

  if (n > 1)
    qsort (st->infos, (size_t) n, sizeof *st->infos, compare_by_begin);
  for (i = 0; i < n; i++)
    {
      const BlnStTensorInfo *cur = &st->infos[i];

      /* an empty tensor holds no bytes and overlaps nothing */
      if (cur->begin < cur->end)
        {
          if (prev != NULL && cur->begin < prev->end)
            {
              g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                           "safetensors: the data of tensors '%s' and '%s' overlap",
                           prev->name, cur->name);
              return FALSE;
            }
          prev = cur;
        }
      g_hash_table_insert (st->by_name, (gpointer) st->infos[i].name, GINT_TO_POINTER (i + 1));
    }
  st->tensors = g_new0 (BlnTensor, n > 0 ? n : 1);
  return TRUE;
}

static BlnSafetensors *
open_common (BlnSafetensors *st, GError **error)
{
  st->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  if (!parse_header (st, error))
    {
      bln_safetensors_free (st);
      return NULL;
    }
  return st;
}

BlnSafetensors *
bln_safetensors_open_memory (const void *data, size_t size, GError **error)
{
  BlnSafetensors *st;

  g_return_val_if_fail (data != NULL || size == 0, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  st = g_new0 (BlnSafetensors, 1);
  st->base = data;
  st->size = size;
  return open_common (st, error);
}

BlnSafetensors *
bln_safetensors_open (const char *path, GError **error)
{
  g_autoptr(GError) io_error = NULL;
  g_autoptr(GError) parse_error = NULL;
  BlnSafetensors *st;
  GMappedFile *mapped;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  mapped = g_mapped_file_new (path, FALSE, &io_error);
  if (mapped == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "%s", io_error->message);
      return NULL;
    }
  st = g_new0 (BlnSafetensors, 1);
  st->mapped = mapped;
  st->base = (const uint8_t *) g_mapped_file_get_contents (mapped);
  st->size = g_mapped_file_get_length (mapped);
  st = open_common (st, &parse_error);
  if (st == NULL)
    {
      g_set_error (error, BLN_ERROR, parse_error->code, "%s: %s", path, parse_error->message);
      return NULL;
    }
  return st;
}

int64_t
bln_safetensors_n_tensors (const BlnSafetensors *st)
{
  g_return_val_if_fail (st != NULL, 0);
  return st->n_tensors;
}

const BlnStTensorInfo *
bln_safetensors_info (const BlnSafetensors *st, int64_t i)
{
  g_return_val_if_fail (st != NULL, NULL);
  g_return_val_if_fail (i >= 0 && i < st->n_tensors, NULL);
  return &st->infos[i];
}

int64_t
bln_safetensors_find (const BlnSafetensors *st, const char *name)
{
  g_return_val_if_fail (st != NULL && name != NULL, -1);
  return (int64_t) GPOINTER_TO_INT (g_hash_table_lookup (st->by_name, name)) - 1;
}

const char *
bln_safetensors_metadata (const BlnSafetensors *st, const char *key)
{
  g_return_val_if_fail (st != NULL && key != NULL, NULL);
  return g_hash_table_lookup (st->metadata, key);
}

const BlnTensor *
bln_safetensors_tensor (BlnSafetensors *st, int64_t i, GError **error)
{
  const BlnStTensorInfo *info;
  BlnTensor *t;
  BlnType type;
  size_t elem;
  int d;

  g_return_val_if_fail (st != NULL, NULL);
  g_return_val_if_fail (i >= 0 && i < st->n_tensors, NULL);

  t = &st->tensors[i];
  if (t->name != NULL)
    return t;
  info = &st->infos[i];

  switch (info->dtype)
    {
    case BLN_ST_F32: type = BLN_TYPE_F32; break;
    case BLN_ST_F16: type = BLN_TYPE_F16; break;
    case BLN_ST_BF16: type = BLN_TYPE_BF16; break;
    default:
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "safetensors: tensor '%s' has dtype %s; only F32, F16 and BF16 are supported",
                   info->name, bln_st_dtype_name (info->dtype));
      return NULL;
    }
  if (info->n_dims > 4)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "safetensors: tensor '%s' has %d dimensions; at most 4 are supported",
                   info->name, info->n_dims);
      return NULL;
    }

  t->type = type;
  t->n_dims = info->n_dims > 0 ? info->n_dims : 1;
  for (d = 0; d < 4; d++)
    t->ne[d] = d < info->n_dims ? info->shape[info->n_dims - 1 - d] : 1;
  t->nbytes = (size_t) (info->end - info->begin);
  elem = bln_st_dtype_size (info->dtype);
  if (((uintptr_t) info->data) % elem != 0 && t->nbytes > 0)
    {
      /* The format does not align tensors; readers of this tensor expect
       * naturally aligned elements, so misaligned ones get their own copy. */
      t->owned = g_try_malloc (t->nbytes);
      if (t->owned == NULL)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_NOMEM,
                       "safetensors: cannot allocate %zu bytes to align tensor '%s'", t->nbytes,
                       info->name);
          return NULL;
        }
      memcpy (t->owned, info->data, t->nbytes);
      t->data = t->owned;
    }
  else
    t->data = info->data;
  t->name = g_strdup (info->name);
  return t;
}
