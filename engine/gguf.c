/* gguf.c — a validating reader for GGUF v2/v3 files.
 *
 * Layout (all little-endian):
 *   "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x (string key, u32 value type, value),
 *   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset),
 *   padding to general.alignment (default 32), then the tensor data.
 * A string is a u64 byte length and the bytes (no NUL). An array value is a
 * u32 element type, a u64 count and the elements.
 *
 * Everything is parsed up front through a bounds-checked cursor. A count read
 * from the file is first checked against the bytes that remain (each element
 * takes at least a known number of bytes), so a hostile count can never make
 * us allocate more than a small multiple of the file size.
 */
#include "gguf.h"

#include <string.h>

#include "bln-error.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ALIGNMENT (1u << 30)
#define GGUF_MAX_ARRAY_DEPTH 8

typedef struct {
  char *key;
  size_t key_len;
  BlnGgufType type;
  /* scalars: the value widened; strings: a NUL-terminated copy */
  union {
    uint64_t u;
    int64_t i;
    double f;
  } v;
  char *str;
  size_t str_len;
  /* arrays */
  BlnGgufType elem_type;
  uint64_t n;
  const uint8_t *elems;    /* numeric elements, in the mapping */
  char **strs;             /* string elements, copied */
  size_t *str_lens;
} GgufKV;

struct _BlnGguf {
  GMappedFile *mapped;     /* NULL for bln_gguf_open_memory() */
  const uint8_t *data;
  size_t size;
  uint32_t version;
  size_t alignment;
  size_t data_offset;      /* start of the tensor data section */

  GgufKV *kvs;
  int64_t n_kv;
  GHashTable *kv_index;    /* key -> index + 1 */

  BlnGgufTensor *tensors;
  int64_t n_tensors;
  GHashTable *tensor_index; /* name -> index + 1 */
};

/* ---------------------------------------------------------------------------
 * Cursor
 * ------------------------------------------------------------------------- */

typedef struct {
  const uint8_t *base;
  size_t size;
  size_t pos;
} Cursor;

static inline size_t
cur_left (const Cursor *c)
{
  return c->size - c->pos;
}

static gboolean
cur_need (Cursor *c, size_t n, const char *what, GError **error)
{
  if (cur_left (c) < n)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: file ends at byte %" G_GSIZE_FORMAT " while reading %s "
                   "(%" G_GSIZE_FORMAT " more bytes needed)",
                   c->size, what, n - cur_left (c));
      return FALSE;
    }
  return TRUE;
}

static gboolean
cur_bytes (Cursor *c, void *out, size_t n, const char *what, GError **error)
{
  if (!cur_need (c, n, what, error))
    return FALSE;
  memcpy (out, c->base + c->pos, n);
  c->pos += n;
  return TRUE;
}

static gboolean
cur_u32 (Cursor *c, uint32_t *out, const char *what, GError **error)
{
  uint32_t v;

  if (!cur_bytes (c, &v, 4, what, error))
    return FALSE;
  *out = GUINT32_FROM_LE (v);
  return TRUE;
}

static gboolean
cur_u64 (Cursor *c, uint64_t *out, const char *what, GError **error)
{
  uint64_t v;

  if (!cur_bytes (c, &v, 8, what, error))
    return FALSE;
  *out = GUINT64_FROM_LE (v);
  return TRUE;
}

/* Reads a string and returns a NUL-terminated copy (NULL on error). */
static char *
cur_string (Cursor *c, size_t *len_out, const char *what, GError **error)
{
  uint64_t len;
  char *s;

  if (!cur_u64 (c, &len, what, error))
    return NULL;
  if (len > cur_left (c))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: %s at byte %" G_GSIZE_FORMAT " claims %" G_GUINT64_FORMAT
                   " bytes, but only %" G_GSIZE_FORMAT " remain in the file",
                   what, c->pos - 8, len, cur_left (c));
      return NULL;
    }
  s = g_malloc ((size_t) len + 1);
  memcpy (s, c->base + c->pos, (size_t) len);
  s[len] = '\0';
  c->pos += (size_t) len;
  if (len_out)
    *len_out = (size_t) len;
  return s;
}

/* ---------------------------------------------------------------------------
 * Metadata values
 * ------------------------------------------------------------------------- */

/* Size of a fixed-size value type, 0 for string / array / unknown. */
static size_t
scalar_size (uint32_t t)
{
  switch (t)
    {
    case BLN_GGUF_UINT8: case BLN_GGUF_INT8: case BLN_GGUF_BOOL: return 1;
    case BLN_GGUF_UINT16: case BLN_GGUF_INT16: return 2;
    case BLN_GGUF_UINT32: case BLN_GGUF_INT32: case BLN_GGUF_FLOAT32: return 4;
    case BLN_GGUF_UINT64: case BLN_GGUF_INT64: case BLN_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static gboolean
type_is_known (uint32_t t)
{
  return t <= BLN_GGUF_FLOAT64;
}

/* The smallest number of bytes one element of type @t can take. */
static size_t
min_elem_size (uint32_t t)
{
  if (t == BLN_GGUF_STRING)
    return 8;
  if (t == BLN_GGUF_ARRAY)
    return 12;
  return scalar_size (t);
}

static gboolean
check_count (Cursor *c, uint64_t n, size_t elem_min, const char *key, GError **error)
{
  if (elem_min > 0 && n > cur_left (c) / elem_min)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: array '%s' claims %" G_GUINT64_FORMAT " elements, more than the "
                   "%" G_GSIZE_FORMAT " bytes left in the file can hold", key, n, cur_left (c));
      return FALSE;
    }
  return TRUE;
}

/* Skips an array nested inside an array: its contents are validated but not
 * kept (no GGUF key we use has them). */
static gboolean
skip_array (Cursor *c, int depth, const char *key, GError **error)
{
  uint32_t et;
  uint64_t n;

  if (depth > GGUF_MAX_ARRAY_DEPTH)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: array '%s' nests more than %d levels deep", key,
                   GGUF_MAX_ARRAY_DEPTH);
      return FALSE;
    }
  if (!cur_u32 (c, &et, "a nested array's element type", error)
      || !cur_u64 (c, &n, "a nested array's length", error))
    return FALSE;
  if (!type_is_known (et))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: array '%s' has a nested array of unknown element type %u", key, et);
      return FALSE;
    }
  if (!check_count (c, n, min_elem_size (et), key, error))
    return FALSE;
  if (scalar_size (et) > 0)
    {
      c->pos += (size_t) n * scalar_size (et);
      return TRUE;
    }
  for (uint64_t i = 0; i < n; i++)
    {
      if (et == BLN_GGUF_STRING)
        {
          uint64_t len;
          if (!cur_u64 (c, &len, "a string in a nested array", error))
            return FALSE;
          if (len > cur_left (c))
            return cur_need (c, len > SIZE_MAX ? SIZE_MAX : (size_t) len,
                             "a string in a nested array", error);
          c->pos += (size_t) len;
        }
      else if (!skip_array (c, depth + 1, key, error))
        return FALSE;
    }
  return TRUE;
}

static gboolean
read_array (Cursor *c, GgufKV *kv, GError **error)
{
  uint32_t et;
  uint64_t n;

  if (!cur_u32 (c, &et, "an array's element type", error)
      || !cur_u64 (c, &n, "an array's length", error))
    return FALSE;
  if (!type_is_known (et))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: array '%s' has unknown element type %u", kv->key, et);
      return FALSE;
    }
  if (!check_count (c, n, min_elem_size (et), kv->key, error))
    return FALSE;
  kv->elem_type = (BlnGgufType) et;
  kv->n = n;

  if (scalar_size (et) > 0)
    {
      kv->elems = c->base + c->pos;
      c->pos += (size_t) n * scalar_size (et);
      return TRUE;
    }
  if (et == BLN_GGUF_STRING)
    {
      /* n <= bytes left / 8, so these two allocations are bounded by the file size */
      kv->strs = g_new0 (char *, n);
      kv->str_lens = g_new0 (size_t, n);
      for (uint64_t i = 0; i < n; i++)
        {
          kv->strs[i] = cur_string (c, &kv->str_lens[i], "a string in an array", error);
          if (kv->strs[i] == NULL)
            {
              g_prefix_error (error, "element %" G_GUINT64_FORMAT " of '%s': ", i, kv->key);
              return FALSE;
            }
        }
      return TRUE;
    }
  for (uint64_t i = 0; i < n; i++)
    if (!skip_array (c, 1, kv->key, error))
      return FALSE;
  return TRUE;
}

static gboolean
read_value (Cursor *c, GgufKV *kv, GError **error)
{
  uint8_t raw[8] = { 0 };
  size_t sz = scalar_size (kv->type);
  uint64_t u = 0;

  if (kv->type == BLN_GGUF_STRING)
    {
      kv->str = cur_string (c, &kv->str_len, "a string value", error);
      return kv->str != NULL;
    }
  if (kv->type == BLN_GGUF_ARRAY)
    return read_array (c, kv, error);
  if (!cur_bytes (c, raw, sz, "a metadata value", error))
    return FALSE;
  for (size_t k = 0; k < sz; k++)
    u |= (uint64_t) raw[k] << (8 * k);
  switch (kv->type)
    {
    case BLN_GGUF_INT8: kv->v.i = (int8_t) u; break;
    case BLN_GGUF_INT16: kv->v.i = (int16_t) u; break;
    case BLN_GGUF_INT32: kv->v.i = (int32_t) u; break;
    case BLN_GGUF_INT64: kv->v.i = (int64_t) u; break;
    case BLN_GGUF_FLOAT32:
      {
        uint32_t u32 = (uint32_t) u;
        float f;
        memcpy (&f, &u32, 4);
        kv->v.f = f;
        break;
      }
    case BLN_GGUF_FLOAT64:
      memcpy (&kv->v.f, &u, 8);
      break;
    default:   /* the unsigned types and bool */
      kv->v.u = u;
      break;
    }
  return TRUE;
}

/* ---------------------------------------------------------------------------
 * Opening
 * ------------------------------------------------------------------------- */

static void
kv_clear (GgufKV *kv)
{
  g_free (kv->key);
  g_free (kv->str);
  if (kv->strs)
    for (uint64_t i = 0; i < kv->n; i++)
      g_free (kv->strs[i]);
  g_free (kv->strs);
  g_free (kv->str_lens);
}

void
bln_gguf_free (BlnGguf *gguf)
{
  if (gguf == NULL)
    return;
  for (int64_t i = 0; i < gguf->n_kv; i++)
    kv_clear (&gguf->kvs[i]);
  g_free (gguf->kvs);
  for (int64_t i = 0; i < gguf->n_tensors; i++)
    g_free ((char *) gguf->tensors[i].name);
  g_free (gguf->tensors);
  g_clear_pointer (&gguf->kv_index, g_hash_table_unref);
  g_clear_pointer (&gguf->tensor_index, g_hash_table_unref);
  g_clear_pointer (&gguf->mapped, g_mapped_file_unref);
  g_free (gguf);
}

static gboolean
parse_header (BlnGguf *g, Cursor *c, uint64_t *n_tensors, uint64_t *n_kv, GError **error)
{
  char magic[4];

  if (!cur_bytes (c, magic, 4, "the magic", error))
    return FALSE;
  if (memcmp (magic, GGUF_MAGIC, 4) != 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "not a GGUF file: it starts with %02x %02x %02x %02x, not \"GGUF\"",
                   (guint8) magic[0], (guint8) magic[1], (guint8) magic[2], (guint8) magic[3]);
      return FALSE;
    }
  if (!cur_u32 (c, &g->version, "the version", error))
    return FALSE;
  if (g->version == 1)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "GGUF version 1 is not supported (it predates 64-bit counts); "
                   "convert the file again with a current tool");
      return FALSE;
    }
  if (g->version != 2 && g->version != 3)
    {
      if ((g->version & 0xffff) == 0 && GUINT32_SWAP_LE_BE (g->version) <= 3)
        g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                     "GGUF file is big-endian; only little-endian files are supported");
      else
        g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                     "GGUF version %u is not supported (only 2 and 3)", g->version);
      return FALSE;
    }
  if (!cur_u64 (c, n_tensors, "the tensor count", error)
      || !cur_u64 (c, n_kv, "the metadata count", error))
    return FALSE;
  /* a metadata entry takes at least 8 + 1 (key) + 4 + 1 bytes, a tensor entry
   * at least 8 + 4 + 4 + 8 */
  if (*n_kv > cur_left (c) / 14)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: the header claims %" G_GUINT64_FORMAT " metadata entries, more than "
                   "a %" G_GSIZE_FORMAT "-byte file can hold", *n_kv, c->size);
      return FALSE;
    }
  if (*n_tensors > cur_left (c) / 24)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: the header claims %" G_GUINT64_FORMAT " tensors, more than "
                   "a %" G_GSIZE_FORMAT "-byte file can hold", *n_tensors, c->size);
      return FALSE;
    }
  return TRUE;
}

static gboolean
parse_kvs (BlnGguf *g, Cursor *c, uint64_t n_kv, GError **error)
{
  g->kvs = g_new0 (GgufKV, n_kv);
  for (uint64_t i = 0; i < n_kv; i++)
    {
      GgufKV *kv = &g->kvs[i];
      uint32_t type;

      kv->key = cur_string (c, &kv->key_len, "a metadata key", error);
      if (kv->key == NULL)
        {
          g_prefix_error (error, "metadata entry %" G_GUINT64_FORMAT ": ", i);
          return FALSE;
        }
      g->n_kv = (int64_t) i + 1;   /* from here on, bln_gguf_free() clears it */
      if (strlen (kv->key) != kv->key_len || kv->key_len == 0)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF: metadata key %" G_GUINT64_FORMAT " is empty or holds a NUL byte", i);
          return FALSE;
        }
      if (g_hash_table_contains (g->kv_index, kv->key))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF: metadata key '%s' appears twice", kv->key);
          return FALSE;
        }
      g_hash_table_insert (g->kv_index, kv->key, GSIZE_TO_POINTER ((gsize) i + 1));
      if (!cur_u32 (c, &type, "a metadata value type", error))
        {
          g_prefix_error (error, "key '%s': ", kv->key);
          return FALSE;
        }
      if (!type_is_known (type))
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF: metadata key '%s' has unknown value type %u", kv->key, type);
          return FALSE;
        }
      kv->type = (BlnGgufType) type;
      if (!read_value (c, kv, error))
        {
          g_prefix_error (error, "key '%s': ", kv->key);
          return FALSE;
        }
    }
  return TRUE;
}

static gboolean
parse_alignment (BlnGguf *g, GError **error)
{
  int64_t idx = bln_gguf_find_key (g, "general.alignment");
  const GgufKV *kv;
  uint64_t a;

  g->alignment = GGUF_DEFAULT_ALIGNMENT;
  if (idx < 0)
    return TRUE;
  kv = &g->kvs[idx];
  if (!bln_gguf_get_uint64 (g, "general.alignment", &a) || kv->type == BLN_GGUF_BOOL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: general.alignment must be an unsigned integer");
      return FALSE;
    }
  if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: general.alignment is %" G_GUINT64_FORMAT
                   ", not a power of two between 1 and 2^30", a);
      return FALSE;
    }
  g->alignment = (size_t) a;
  return TRUE;
}

static gboolean
parse_tensor_info (BlnGguf *g, Cursor *c, int64_t i, GError **error)
{
  BlnGgufTensor *t = &g->tensors[i];
  size_t name_len;
  uint32_t n_dims, type;
  const BlnTypeInfo *info;
  int64_t nelem = 1;
  size_t row_bytes;
  uint64_t rows = 1;
  char *name;

  name = cur_string (c, &name_len, "a tensor name", error);
  if (name == NULL)
    {
      g_prefix_error (error, "tensor %" G_GINT64_FORMAT ": ", i);
      return FALSE;
    }
  t->name = name;
  g->n_tensors = i + 1;
  if (strlen (name) != name_len || name_len == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: tensor %" G_GINT64_FORMAT " has an empty name or one holding a NUL", i);
      return FALSE;
    }
  if (g_hash_table_contains (g->tensor_index, name))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: tensor '%s' appears twice", name);
      return FALSE;
    }
  g_hash_table_insert (g->tensor_index, name, GSIZE_TO_POINTER ((gsize) i + 1));

  if (!cur_u32 (c, &n_dims, "a tensor's dimension count", error))
    goto prefix;
  if (n_dims > BLN_GGUF_MAX_DIMS)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: tensor '%s' has %u dimensions (at most %d)", name, n_dims,
                   BLN_GGUF_MAX_DIMS);
      return FALSE;
    }
  t->n_dims = (int) n_dims;
  for (int d = 0; d < BLN_GGUF_MAX_DIMS; d++)
    t->ne[d] = 1;
  for (uint32_t d = 0; d < n_dims; d++)
    {
      uint64_t ne;

      if (!cur_u64 (c, &ne, "a tensor dimension", error))
        goto prefix;
      if (ne > (uint64_t) INT64_MAX)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF: tensor '%s' dimension %u is %" G_GUINT64_FORMAT
                       ", which is negative as a signed count", name, d, ne);
          return FALSE;
        }
      t->ne[d] = (int64_t) ne;
      if (ne != 0 && nelem > INT64_MAX / (int64_t) ne)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF: tensor '%s' has more elements than fit in 64 bits", name);
          return FALSE;
        }
      nelem *= (int64_t) ne;
    }
  if (!cur_u32 (c, &type, "a tensor type", error))
    goto prefix;
  info = bln_type_info ((int) type);
  if (info == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED,
                   "GGUF: tensor '%s' has type %u, which is not a type this reader knows",
                   name, type);
      return FALSE;
    }
  t->type = (BlnType) type;
  if (!bln_type_row_bytes ((int) type, t->ne[0], &row_bytes))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: tensor '%s' of type %s has rows of %" G_GINT64_FORMAT
                   " values, not a multiple of the block size %d", name, info->name, t->ne[0],
                   info->block_size);
      return FALSE;
    }
  for (int d = 1; d < BLN_GGUF_MAX_DIMS; d++)
    rows *= (uint64_t) t->ne[d];   /* bounded by nelem, no overflow */
  if (row_bytes != 0 && rows > SIZE_MAX / row_bytes)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: tensor '%s' is larger than the address space", name);
      return FALSE;
    }
  t->nbytes = row_bytes * (size_t) rows;
  if (!cur_u64 (c, &t->offset, "a tensor offset", error))
    goto prefix;
  if (t->offset % g->alignment != 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                   "GGUF: tensor '%s' data offset %" G_GUINT64_FORMAT
                   " is not a multiple of the alignment %" G_GSIZE_FORMAT,
                   name, t->offset, g->alignment);
      return FALSE;
    }
  return TRUE;

prefix:
  g_prefix_error (error, "tensor '%s': ", name);
  return FALSE;
}

static int
cmp_by_offset (gconstpointer a, gconstpointer b)
{
  const BlnGgufTensor *x = *(BlnGgufTensor * const *) a, *y = *(BlnGgufTensor * const *) b;

  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Places each tensor's data in the file and checks that none runs past the
 * end or overlaps another. */
static gboolean
place_tensors (BlnGguf *g, size_t header_end, GError **error)
{
  g_autofree BlnGgufTensor **order = NULL;
  size_t pad = (g->alignment - header_end % g->alignment) % g->alignment;

  g->data_offset = header_end + pad;   /* header_end <= size and alignment <= 2^30 */
  order = g_new (BlnGgufTensor *, g->n_tensors + 1);
  for (int64_t i = 0; i < g->n_tensors; i++)
    {
      BlnGgufTensor *t = &g->tensors[i];
      uint64_t start;

      order[i] = t;
      start = (uint64_t) g->data_offset + t->offset;
      if (t->offset > (uint64_t) g->size || start > (uint64_t) g->size
          || t->nbytes > g->size - start)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF: tensor '%s': data [%" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT
                       ") lies past the end of the file (size %" G_GSIZE_FORMAT ")",
                       t->name, t->offset > g->size ? t->offset : start,
                       t->offset > g->size ? t->offset : start + t->nbytes, g->size);
          return FALSE;
        }
      t->data = g->data + start;
    }
  qsort (order, (size_t) g->n_tensors, sizeof *order, cmp_by_offset);
  for (int64_t i = 1; i < g->n_tensors; i++)
    {
      const BlnGgufTensor *a = order[i - 1], *b = order[i];

      if (a->offset + a->nbytes > b->offset)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_CORRUPT,
                       "GGUF: tensors '%s' and '%s' overlap: data [%" G_GUINT64_FORMAT "..%"
                       G_GUINT64_FORMAT ") and [%" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT ")",
                       a->name, b->name, a->offset, a->offset + a->nbytes, b->offset,
                       b->offset + b->nbytes);
          return FALSE;
        }
    }
  return TRUE;
}

static BlnGguf *
parse (GMappedFile *mapped, const void *data, size_t size, GError **error)
{
  g_autoptr (BlnGguf) g = g_new0 (BlnGguf, 1);
  Cursor c = { data, size, 0 };
  uint64_t n_tensors, n_kv;

  g->mapped = mapped;
  g->data = data;
  g->size = size;
  g->kv_index = g_hash_table_new (g_str_hash, g_str_equal);
  g->tensor_index = g_hash_table_new (g_str_hash, g_str_equal);

  if (!parse_header (g, &c, &n_tensors, &n_kv, error)
      || !parse_kvs (g, &c, n_kv, error)
      || !parse_alignment (g, error))
    return NULL;
  g->tensors = g_new0 (BlnGgufTensor, n_tensors);
  for (int64_t i = 0; i < (int64_t) n_tensors; i++)
    if (!parse_tensor_info (g, &c, i, error))
      return NULL;
  if (!place_tensors (g, c.pos, error))
    return NULL;
  return g_steal_pointer (&g);
}

BlnGguf *
bln_gguf_open_memory (const void *data, size_t size, GError **error)
{
  g_return_val_if_fail (data != NULL || size == 0, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return parse (NULL, data ? data : "", size, error);
}

BlnGguf *
bln_gguf_open (const char *path, GError **error)
{
  GMappedFile *mapped;
  g_autoptr (GError) local = NULL;
  const char *contents;
  BlnGguf *g;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  mapped = g_mapped_file_new (path, FALSE, &local);
  if (mapped == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot map %s: %s", path, local->message);
      return NULL;
    }
  contents = g_mapped_file_get_contents (mapped);   /* NULL for an empty file */
  g = parse (mapped, contents ? contents : "", g_mapped_file_get_length (mapped), &local);
  if (g == NULL)
    {
      /* parse() took ownership of the mapping with the half-built reader */
      g_propagate_prefixed_error (error, g_steal_pointer (&local), "%s: ", path);
      return NULL;
    }
  return g;
}

/* ---------------------------------------------------------------------------
 * Accessors
 * ------------------------------------------------------------------------- */

uint32_t
bln_gguf_version (const BlnGguf *gguf)
{
  g_return_val_if_fail (gguf != NULL, 0);
  return gguf->version;
}

size_t
bln_gguf_alignment (const BlnGguf *gguf)
{
  g_return_val_if_fail (gguf != NULL, 0);
  return gguf->alignment;
}

int64_t
bln_gguf_n_kv (const BlnGguf *gguf)
{
  g_return_val_if_fail (gguf != NULL, 0);
  return gguf->n_kv;
}

const char *
bln_gguf_kv_key (const BlnGguf *gguf, int64_t i)
{
  g_return_val_if_fail (gguf != NULL, NULL);
  if (i < 0 || i >= gguf->n_kv)
    return NULL;
  return gguf->kvs[i].key;
}

BlnGgufType
bln_gguf_kv_type (const BlnGguf *gguf, int64_t i)
{
  g_return_val_if_fail (gguf != NULL, BLN_GGUF_UINT8);
  g_return_val_if_fail (i >= 0 && i < gguf->n_kv, BLN_GGUF_UINT8);
  return gguf->kvs[i].type;
}

int64_t
bln_gguf_find_key (const BlnGguf *gguf, const char *key)
{
  gpointer v;

  g_return_val_if_fail (gguf != NULL, -1);
  g_return_val_if_fail (key != NULL, -1);
  v = g_hash_table_lookup (gguf->kv_index, key);
  return v ? (int64_t) GPOINTER_TO_SIZE (v) - 1 : -1;
}

static const GgufKV *
lookup (const BlnGguf *gguf, const char *key)
{
  int64_t i = bln_gguf_find_key (gguf, key);

  return i < 0 ? NULL : &gguf->kvs[i];
}

static gboolean
is_signed_int (BlnGgufType t)
{
  return t == BLN_GGUF_INT8 || t == BLN_GGUF_INT16 || t == BLN_GGUF_INT32 || t == BLN_GGUF_INT64;
}

static gboolean
is_unsigned_int (BlnGgufType t)
{
  return t == BLN_GGUF_UINT8 || t == BLN_GGUF_UINT16 || t == BLN_GGUF_UINT32
         || t == BLN_GGUF_UINT64 || t == BLN_GGUF_BOOL;
}

gboolean
bln_gguf_get_int (const BlnGguf *gguf, const char *key, int64_t *out)
{
  const GgufKV *kv = lookup (gguf, key);

  if (kv == NULL)
    return FALSE;
  if (is_signed_int (kv->type))
    *out = kv->v.i;
  else if (is_unsigned_int (kv->type) && kv->v.u <= (uint64_t) INT64_MAX)
    *out = (int64_t) kv->v.u;
  else
    return FALSE;
  return TRUE;
}

gboolean
bln_gguf_get_uint64 (const BlnGguf *gguf, const char *key, uint64_t *out)
{
  const GgufKV *kv = lookup (gguf, key);

  if (kv == NULL)
    return FALSE;
  if (is_unsigned_int (kv->type))
    *out = kv->v.u;
  else if (is_signed_int (kv->type) && kv->v.i >= 0)
    *out = (uint64_t) kv->v.i;
  else
    return FALSE;
  return TRUE;
}

gboolean
bln_gguf_get_float (const BlnGguf *gguf, const char *key, double *out)
{
  const GgufKV *kv = lookup (gguf, key);

  if (kv == NULL)
    return FALSE;
  if (kv->type == BLN_GGUF_FLOAT32 || kv->type == BLN_GGUF_FLOAT64)
    *out = kv->v.f;
  else if (is_signed_int (kv->type))
    *out = (double) kv->v.i;
  else if (is_unsigned_int (kv->type) && kv->type != BLN_GGUF_BOOL)
    *out = (double) kv->v.u;
  else
    return FALSE;
  return TRUE;
}

gboolean
bln_gguf_get_bool (const BlnGguf *gguf, const char *key, gboolean *out)
{
  const GgufKV *kv = lookup (gguf, key);

  if (kv == NULL || kv->type != BLN_GGUF_BOOL)
    return FALSE;
  *out = kv->v.u != 0;
  return TRUE;
}

const char *
bln_gguf_get_string (const BlnGguf *gguf, const char *key, size_t *len)
{
  const GgufKV *kv = lookup (gguf, key);

  if (kv == NULL || kv->type != BLN_GGUF_STRING)
    return NULL;
  if (len)
    *len = kv->str_len;
  return kv->str;
}

gboolean
bln_gguf_get_array (const BlnGguf *gguf, const char *key, BlnGgufType *elem_type, uint64_t *n)
{
  const GgufKV *kv = lookup (gguf, key);

  if (kv == NULL || kv->type != BLN_GGUF_ARRAY)
    return FALSE;
  if (elem_type)
    *elem_type = kv->elem_type;
  if (n)
    *n = kv->n;
  return TRUE;
}

/* Reads numeric element @i of an array into the widened forms. */
static gboolean
array_elem (const BlnGguf *gguf, const char *key, uint64_t i, BlnGgufType *type,
            int64_t *si, uint64_t *ui, double *f)
{
  const GgufKV *kv = lookup (gguf, key);
  size_t sz;
  const uint8_t *p;

  if (kv == NULL || kv->type != BLN_GGUF_ARRAY || i >= kv->n)
    return FALSE;
  sz = scalar_size (kv->elem_type);
  if (sz == 0)
    return FALSE;
  p = kv->elems + i * sz;
  *type = kv->elem_type;
  *si = 0;
  *ui = 0;
  *f = 0;
  switch (kv->elem_type)
    {
    case BLN_GGUF_UINT8: case BLN_GGUF_BOOL: *ui = p[0]; break;
    case BLN_GGUF_INT8: *si = (int8_t) p[0]; break;
    case BLN_GGUF_UINT16: case BLN_GGUF_INT16:
    case BLN_GGUF_UINT32: case BLN_GGUF_INT32:
    case BLN_GGUF_UINT64: case BLN_GGUF_INT64:
      {
        uint64_t u = 0;

        for (size_t k = 0; k < sz; k++)
          u |= (uint64_t) p[k] << (8 * k);
        if (kv->elem_type == BLN_GGUF_INT16)
          *si = (int16_t) u;
        else if (kv->elem_type == BLN_GGUF_INT32)
          *si = (int32_t) u;
        else if (kv->elem_type == BLN_GGUF_INT64)
          *si = (int64_t) u;
        else
          *ui = u;
        break;
      }
    case BLN_GGUF_FLOAT32:
      {
        uint32_t v;
        float x;
        memcpy (&v, p, 4);
        v = GUINT32_FROM_LE (v);
        memcpy (&x, &v, 4);
        *f = x;
        break;
      }
    case BLN_GGUF_FLOAT64:
      {
        uint64_t v;
        memcpy (&v, p, 8);
        v = GUINT64_FROM_LE (v);
        memcpy (f, &v, 8);
        break;
      }
    default:
      return FALSE;
    }
  return TRUE;
}

gboolean
bln_gguf_array_int (const BlnGguf *gguf, const char *key, uint64_t i, int64_t *out)
{
  BlnGgufType t;
  int64_t si;
  uint64_t ui;
  double f;

  if (!array_elem (gguf, key, i, &t, &si, &ui, &f))
    return FALSE;
  if (is_signed_int (t))
    *out = si;
  else if (is_unsigned_int (t) && ui <= (uint64_t) INT64_MAX)
    *out = (int64_t) ui;
  else
    return FALSE;
  return TRUE;
}

gboolean
bln_gguf_array_float (const BlnGguf *gguf, const char *key, uint64_t i, double *out)
{
  BlnGgufType t;
  int64_t si;
  uint64_t ui;
  double f;

  if (!array_elem (gguf, key, i, &t, &si, &ui, &f))
    return FALSE;
  if (t == BLN_GGUF_FLOAT32 || t == BLN_GGUF_FLOAT64)
    *out = f;
  else if (is_signed_int (t))
    *out = (double) si;
  else if (t != BLN_GGUF_BOOL)
    *out = (double) ui;
  else
    return FALSE;
  return TRUE;
}

const char *
bln_gguf_array_string (const BlnGguf *gguf, const char *key, uint64_t i, size_t *len)
{
  const GgufKV *kv = lookup (gguf, key);

  if (kv == NULL || kv->type != BLN_GGUF_ARRAY || kv->elem_type != BLN_GGUF_STRING
      || i >= kv->n)
    return NULL;
  if (len)
    *len = kv->str_lens[i];
  return kv->strs[i];
}

int64_t
bln_gguf_n_tensors (const BlnGguf *gguf)
{
  g_return_val_if_fail (gguf != NULL, 0);
  return gguf->n_tensors;
}

const BlnGgufTensor *
bln_gguf_tensor (const BlnGguf *gguf, int64_t i)
{
  g_return_val_if_fail (gguf != NULL, NULL);
  if (i < 0 || i >= gguf->n_tensors)
    return NULL;
  return &gguf->tensors[i];
}

const BlnGgufTensor *
bln_gguf_find_tensor (const BlnGguf *gguf, const char *name)
{
  gpointer v;

  g_return_val_if_fail (gguf != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);
  v = g_hash_table_lookup (gguf->tensor_index, name);
  return v ? &gguf->tensors[GPOINTER_TO_SIZE (v) - 1] : NULL;
}
