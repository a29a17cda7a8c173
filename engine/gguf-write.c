/* gguf-write.c — a streaming GGUF v3 writer.
 *
 * The metadata is serialised into a byte array as it is added; tensors are
 * only described (name, type, shape) until data arrives. The first data byte
 * (or finish) writes "GGUF", the version, the counts, the metadata, the tensor
 * table and the padding up to the data section, then data flows through a
 * fixed-size buffer straight to the file descriptor.
 */
#include "gguf-write.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bln-error.h"

#define DEFAULT_ALIGNMENT 32
#define MAX_ALIGNMENT (1u << 30)
#define WRITE_BUFFER (4u << 20)
#define FILL_PIECE (4u << 20)

typedef struct {
  char *name;
  BlnType type;
  int n_dims;
  int64_t ne[BLN_GGUF_MAX_DIMS];
  uint64_t offset;   /* from the start of the data section */
  size_t nbytes;
} WTensor;

struct _BlnGgufWriter {
  char *path;
  int fd;
  gboolean remove_on_fail; /* only a regular file we created is ever unlinked */
  gboolean failed;
  gboolean finished;
  gboolean header_done;
  size_t alignment;

  GByteArray *kv;          /* serialised key/value pairs */
  uint64_t n_kv;
  GHashTable *keys;        /* set of keys */

  GPtrArray *tensors;      /* of WTensor* */
  GHashTable *tensor_names;
  uint64_t data_size;      /* sum of padded tensor sizes */

  int64_t cur;             /* tensor receiving data */
  size_t cur_done;         /* bytes of it already written */

  guint8 *buf;
  size_t buf_len;
};

static void
wtensor_free (gpointer p)
{
  WTensor *t = p;

  g_free (t->name);
  g_free (t);
}

static uint64_t
pad_to (uint64_t x, uint64_t a)
{
  return (x + a - 1) / a * a;
}

/* ------------------------------------------------------------------------ */
/* Failure handling and raw I/O */

static void
writer_fail (BlnGgufWriter *w)
{
  if (w->failed)
    return;
  w->failed = TRUE;
  if (w->fd >= 0)
    {
      close (w->fd);
      w->fd = -1;
    }
  if (w->remove_on_fail)
    unlink (w->path);
}

static gboolean
io_error (BlnGgufWriter *w, int err, const char *what, GError **error)
{
  g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot %s “%s”: %s", what, w->path,
               g_strerror (err));
  writer_fail (w);
  return FALSE;
}

static gboolean
check_usable (BlnGgufWriter *w, GError **error)
{
  if (w->failed)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO,
                   "GGUF writer for “%s” failed earlier; the file was removed", w->path);
      return FALSE;
    }
  if (w->finished)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "GGUF writer for “%s” is finished",
                   w->path);
      return FALSE;
    }
  return TRUE;
}

static gboolean
write_all (BlnGgufWriter *w, const void *data, size_t len, GError **error)
{
  const guint8 *p = data;

  while (len > 0)
    {
      ssize_t n = write (w->fd, p, MIN (len, (size_t) 1 << 30));
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return io_error (w, errno, "write", error);
        }
      if (n == 0)
        return io_error (w, ENOSPC, "write", error);
      p += n;
      len -= (size_t) n;
    }
  return TRUE;
}

static gboolean
flush_buf (BlnGgufWriter *w, GError **error)
{
  if (w->buf_len == 0)
    return TRUE;
  if (!write_all (w, w->buf, w->buf_len, error))
    return FALSE;
  w->buf_len = 0;
  return TRUE;
}

static gboolean
put (BlnGgufWriter *w, const void *data, size_t len, GError **error)
{
  const guint8 *p = data;

  if (len == 0)
    return TRUE;   /* an empty string: nothing to copy (data may be NULL) */
  if (w->buf_len + len > WRITE_BUFFER)
    {
      if (!flush_buf (w, error))
        return FALSE;
      if (len >= WRITE_BUFFER)
        return write_all (w, p, len, error);
    }
  memcpy (w->buf + w->buf_len, p, len);
  w->buf_len += len;
  return TRUE;
}

static gboolean
put_zeros (BlnGgufWriter *w, size_t len, GError **error)
{
  static const guint8 zeros[256];

  while (len > 0)
    {
      size_t n = MIN (len, sizeof zeros);
      if (!put (w, zeros, n, error))
        return FALSE;
      len -= n;
    }
  return TRUE;
}

/* ------------------------------------------------------------------------ */
/* Creation */

BlnGgufWriter *
bln_gguf_writer_new (const char *path, size_t alignment, GError **error)
{
  BlnGgufWriter *w;
  struct stat st;
  int fd;

  g_return_val_if_fail (path != NULL, NULL);

  if (alignment == 0)
    alignment = DEFAULT_ALIGNMENT;
  if (alignment > MAX_ALIGNMENT || (alignment & (alignment - 1)) != 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "GGUF alignment %zu is not a power of two up to 1 GiB", alignment);
      return NULL;
    }
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    {
      int err = errno;
      g_set_error (error, BLN_ERROR, BLN_ERROR_IO, "cannot create “%s”: %s", path,
                   g_strerror (err));
      return NULL;
    }

  w = g_new0 (BlnGgufWriter, 1);
  w->path = g_strdup (path);
  w->fd = fd;
  w->remove_on_fail = fstat (fd, &st) == 0 && S_ISREG (st.st_mode);
  w->alignment = alignment;
  w->kv = g_byte_array_new ();
  w->keys = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  w->tensors = g_ptr_array_new_with_free_func (wtensor_free);
  w->tensor_names = g_hash_table_new (g_str_hash, g_str_equal);
  w->buf = g_malloc (WRITE_BUFFER);

  if (alignment != DEFAULT_ALIGNMENT)
    {
      /* Recorded like any other key; the public adders refuse this name. */
      uint64_t klen = strlen ("general.alignment");
      uint32_t type = BLN_GGUF_UINT32, v = (uint32_t) alignment;
      g_byte_array_append (w->kv, (const guint8 *) &klen, 8);
      g_byte_array_append (w->kv, (const guint8 *) "general.alignment", (guint) klen);
      g_byte_array_append (w->kv, (const guint8 *) &type, 4);
      g_byte_array_append (w->kv, (const guint8 *) &v, 4);
      w->n_kv++;
      g_hash_table_add (w->keys, g_strdup ("general.alignment"));
    }
  return w;
}

void
bln_gguf_writer_free (BlnGgufWriter *w)
{
  if (w == NULL)
    return;
  if (!w->finished)
    writer_fail (w);
  if (w->fd >= 0)
    close (w->fd);
  g_free (w->path);
  g_byte_array_unref (w->kv);
  g_hash_table_unref (w->keys);
  g_hash_table_unref (w->tensor_names);
  g_ptr_array_unref (w->tensors);
  g_free (w->buf);
  g_free (w);
}

/* ------------------------------------------------------------------------ */
/* Metadata */

static gboolean
begin_kv (BlnGgufWriter *w, const char *key, BlnGgufType type, GError **error)
{
  uint64_t klen;
  uint32_t t = (uint32_t) type;

  if (!check_usable (w, error))
    return FALSE;
  if (w->header_done)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "GGUF key “%s” added after tensor data writing started", key ? key : "");
      return FALSE;
    }
  if (key == NULL || key[0] == '\0')
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "empty GGUF metadata key");
      return FALSE;
    }
  if (g_str_equal (key, "general.alignment"))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "general.alignment is set through bln_gguf_writer_new()");
      return FALSE;
    }
  if (g_hash_table_contains (w->keys, key))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "GGUF metadata key “%s” added twice",
                   key);
      return FALSE;
    }
  klen = strlen (key);
  g_byte_array_append (w->kv, (const guint8 *) &klen, 8);
  g_byte_array_append (w->kv, (const guint8 *) key, (guint) klen);
  g_byte_array_append (w->kv, (const guint8 *) &t, 4);
  g_hash_table_add (w->keys, g_strdup (key));
  w->n_kv++;
  return TRUE;
}

static gboolean
add_scalar (BlnGgufWriter *w, const char *key, BlnGgufType type, const void *v, size_t size,
            GError **error)
{
  if (!begin_kv (w, key, type, error))
    return FALSE;
  g_byte_array_append (w->kv, v, (guint) size);
  return TRUE;
}

gboolean
bln_gguf_writer_add_uint8 (BlnGgufWriter *w, const char *key, uint8_t v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_UINT8, &v, 1, error);
}

gboolean
bln_gguf_writer_add_int8 (BlnGgufWriter *w, const char *key, int8_t v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_INT8, &v, 1, error);
}

gboolean
bln_gguf_writer_add_uint16 (BlnGgufWriter *w, const char *key, uint16_t v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_UINT16, &v, 2, error);
}

gboolean
bln_gguf_writer_add_int16 (BlnGgufWriter *w, const char *key, int16_t v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_INT16, &v, 2, error);
}

gboolean
bln_gguf_writer_add_uint32 (BlnGgufWriter *w, const char *key, uint32_t v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_UINT32, &v, 4, error);
}

gboolean
bln_gguf_writer_add_int32 (BlnGgufWriter *w, const char *key, int32_t v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_INT32, &v, 4, error);
}

gboolean
bln_gguf_writer_add_uint64 (BlnGgufWriter *w, const char *key, uint64_t v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_UINT64, &v, 8, error);
}

gboolean
bln_gguf_writer_add_int64 (BlnGgufWriter *w, const char *key, int64_t v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_INT64, &v, 8, error);
}

gboolean
bln_gguf_writer_add_float32 (BlnGgufWriter *w, const char *key, float v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_FLOAT32, &v, 4, error);
}

gboolean
bln_gguf_writer_add_float64 (BlnGgufWriter *w, const char *key, double v, GError **error)
{
  return add_scalar (w, key, BLN_GGUF_FLOAT64, &v, 8, error);
}

gboolean
bln_gguf_writer_add_bool (BlnGgufWriter *w, const char *key, gboolean v, GError **error)
{
  uint8_t b = v ? 1 : 0;

  return add_scalar (w, key, BLN_GGUF_BOOL, &b, 1, error);
}

gboolean
bln_gguf_writer_add_string_len (BlnGgufWriter *w, const char *key, const char *v, size_t len,
                                GError **error)
{
  uint64_t l = len;

  if (v == NULL && len > 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "NULL string for GGUF key “%s”",
                   key ? key : "");
      return FALSE;
    }
  if (!begin_kv (w, key, BLN_GGUF_STRING, error))
    return FALSE;
  g_byte_array_append (w->kv, (const guint8 *) &l, 8);
  if (len > 0)
    g_byte_array_append (w->kv, (const guint8 *) v, (guint) len);
  return TRUE;
}

gboolean
bln_gguf_writer_add_string (BlnGgufWriter *w, const char *key, const char *v, GError **error)
{
  return bln_gguf_writer_add_string_len (w, key, v, v ? strlen (v) : 0, error);
}

static size_t
scalar_size (BlnGgufType t)
{
  switch (t)
    {
    case BLN_GGUF_UINT8:
    case BLN_GGUF_INT8:
    case BLN_GGUF_BOOL:
      return 1;
    case BLN_GGUF_UINT16:
    case BLN_GGUF_INT16:
      return 2;
    case BLN_GGUF_UINT32:
    case BLN_GGUF_INT32:
    case BLN_GGUF_FLOAT32:
      return 4;
    case BLN_GGUF_UINT64:
    case BLN_GGUF_INT64:
    case BLN_GGUF_FLOAT64:
      return 8;
    case BLN_GGUF_STRING:
    case BLN_GGUF_ARRAY:
    default:
      return 0;
    }
}

gboolean
bln_gguf_writer_add_array (BlnGgufWriter *w, const char *key, BlnGgufType elem_type,
                           const void *data, uint64_t n, GError **error)
{
  size_t es = scalar_size (elem_type);
  uint32_t et = (uint32_t) elem_type;

  if (es == 0)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "GGUF key “%s”: element type %d is not a scalar type", key ? key : "",
                   (int) elem_type);
      return FALSE;
    }
  if ((n > 0 && data == NULL) || n > G_MAXUINT / es)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "GGUF key “%s”: bad array (%" G_GUINT64_FORMAT
                   " elements)", key ? key : "", n);
      return FALSE;
    }
  if (elem_type == BLN_GGUF_BOOL)
    for (uint64_t i = 0; i < n; i++)
      if (((const uint8_t *) data)[i] > 1)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "GGUF key “%s”: bool element %" G_GUINT64_FORMAT " is not 0 or 1", key,
                       i);
          return FALSE;
        }
  if (!begin_kv (w, key, BLN_GGUF_ARRAY, error))
    return FALSE;
  g_byte_array_append (w->kv, (const guint8 *) &et, 4);
  g_byte_array_append (w->kv, (const guint8 *) &n, 8);
  if (n > 0)
    g_byte_array_append (w->kv, data, (guint) (n * es));
  return TRUE;
}

gboolean
bln_gguf_writer_add_string_array (BlnGgufWriter *w, const char *key, const char *const *strv,
                                  const size_t *lens, uint64_t n, GError **error)
{
  uint32_t et = BLN_GGUF_STRING;

  if (n > 0 && strv == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "GGUF key “%s”: NULL string array",
                   key ? key : "");
      return FALSE;
    }
  for (uint64_t i = 0; i < n; i++)
    if (strv[i] == NULL && (lens == NULL || lens[i] > 0))
      {
        g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                     "GGUF key “%s”: string %" G_GUINT64_FORMAT " is NULL", key ? key : "", i);
        return FALSE;
      }
  if (!begin_kv (w, key, BLN_GGUF_ARRAY, error))
    return FALSE;
  g_byte_array_append (w->kv, (const guint8 *) &et, 4);
  g_byte_array_append (w->kv, (const guint8 *) &n, 8);
  for (uint64_t i = 0; i < n; i++)
    {
      uint64_t l = lens ? lens[i] : (strv[i] ? strlen (strv[i]) : 0);
      g_byte_array_append (w->kv, (const guint8 *) &l, 8);
      if (l > 0)
        g_byte_array_append (w->kv, (const guint8 *) strv[i], (guint) l);
    }
  return TRUE;
}

/* ------------------------------------------------------------------------ */
/* Tensors */

gboolean
bln_gguf_writer_add_tensor (BlnGgufWriter *w, const char *name, BlnType type, int n_dims,
                            const int64_t *ne, GError **error)
{
  const BlnTypeInfo *ti = bln_type_info (type);
  WTensor *t;
  size_t row_bytes, nbytes;
  uint64_t rows = 1;

  if (!check_usable (w, error))
    return FALSE;
  if (w->header_done)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "tensor “%s” declared after data writing started", name ? name : "");
      return FALSE;
    }
  if (name == NULL || name[0] == '\0' || g_hash_table_contains (w->tensor_names, name))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "tensor name “%s” is empty or taken",
                   name ? name : "");
      return FALSE;
    }
  if (ti == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "tensor “%s”: unknown type %d", name,
                   (int) type);
      return FALSE;
    }
  if (n_dims < 1 || n_dims > BLN_GGUF_MAX_DIMS || ne == NULL)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "tensor “%s”: %d dimensions", name,
                   n_dims);
      return FALSE;
    }
  for (int d = 0; d < n_dims; d++)
    if (ne[d] <= 0 || (d > 0 && (uint64_t) ne[d] > G_MAXUINT64 / rows))
      {
        g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                     "tensor “%s”: bad extent %" G_GINT64_FORMAT " in dimension %d", name, ne[d],
                     d);
        return FALSE;
      }
    else if (d > 0)
      rows *= (uint64_t) ne[d];
  if (!bln_type_row_bytes (type, ne[0], &row_bytes))
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "tensor “%s”: row length %" G_GINT64_FORMAT " is not a multiple of the %s "
                   "block size %d", name, ne[0], ti->name, ti->block_size);
      return FALSE;
    }
  if (rows > SIZE_MAX / row_bytes || row_bytes * rows > G_MAXUINT64 / 2 - w->data_size)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID, "tensor “%s” is too large", name);
      return FALSE;
    }
  nbytes = row_bytes * (size_t) rows;

  t = g_new0 (WTensor, 1);
  t->name = g_strdup (name);
  t->type = type;
  t->n_dims = n_dims;
  for (int d = 0; d < BLN_GGUF_MAX_DIMS; d++)
    t->ne[d] = d < n_dims ? ne[d] : 1;
  t->offset = w->data_size;
  t->nbytes = nbytes;
  w->data_size += pad_to (nbytes, w->alignment);
  g_ptr_array_add (w->tensors, t);
  g_hash_table_add (w->tensor_names, t->name);
  return TRUE;
}

size_t
bln_gguf_writer_tensor_nbytes (const BlnGgufWriter *w, int64_t index)
{
  if (index < 0 || index >= (int64_t) w->tensors->len)
    return 0;
  return ((const WTensor *) g_ptr_array_index (w->tensors, index))->nbytes;
}

static uint64_t
header_size (const BlnGgufWriter *w)
{
  uint64_t size = 4 + 4 + 8 + 8 + w->kv->len;

  for (guint i = 0; i < w->tensors->len; i++)
    {
      const WTensor *t = g_ptr_array_index (w->tensors, i);
      size += 8 + strlen (t->name) + 4 + 8 * (uint64_t) t->n_dims + 4 + 8;
    }
  return size;
}

uint64_t
bln_gguf_writer_file_size (const BlnGgufWriter *w)
{
  return pad_to (header_size (w), w->alignment) + w->data_size;
}

int64_t
bln_gguf_writer_current_tensor (const BlnGgufWriter *w)
{
  return w->cur;
}

/* ------------------------------------------------------------------------ */
/* Data */

static gboolean
write_header (BlnGgufWriter *w, GError **error)
{
  uint32_t version = 3;
  uint64_t n_tensors = w->tensors->len, hsize = header_size (w);

  if (!put (w, "GGUF", 4, error) || !put (w, &version, 4, error)
      || !put (w, &n_tensors, 8, error) || !put (w, &w->n_kv, 8, error)
      || !put (w, w->kv->data, w->kv->len, error))
    return FALSE;
  for (guint i = 0; i < w->tensors->len; i++)
    {
      const WTensor *t = g_ptr_array_index (w->tensors, i);
      uint64_t nlen = strlen (t->name);
      uint32_t nd = (uint32_t) t->n_dims, type = (uint32_t) t->type;

      if (!put (w, &nlen, 8, error) || !put (w, t->name, nlen, error) || !put (w, &nd, 4, error))
        return FALSE;
      for (int d = 0; d < t->n_dims; d++)
        {
          uint64_t e = (uint64_t) t->ne[d];
          if (!put (w, &e, 8, error))
            return FALSE;
        }
      if (!put (w, &type, 4, error) || !put (w, &t->offset, 8, error))
        return FALSE;
    }
  if (!put_zeros (w, pad_to (hsize, w->alignment) - hsize, error))
    return FALSE;
  w->header_done = TRUE;
  w->cur = 0;
  w->cur_done = 0;
  return TRUE;
}

static gboolean
ensure_header (BlnGgufWriter *w, GError **error)
{
  if (!check_usable (w, error))
    return FALSE;
  if (!w->header_done)
    return write_header (w, error);
  return TRUE;
}

/* Pads after the current tensor once it is complete and moves on. */
static gboolean
maybe_advance (BlnGgufWriter *w, GError **error)
{
  while (w->cur < (int64_t) w->tensors->len)
    {
      const WTensor *t = g_ptr_array_index (w->tensors, w->cur);
      if (w->cur_done < t->nbytes)
        break;
      if (!put_zeros (w, pad_to (t->nbytes, w->alignment) - t->nbytes, error))
        return FALSE;
      w->cur++;
      w->cur_done = 0;
    }
  return TRUE;
}

gboolean
bln_gguf_writer_write (BlnGgufWriter *w, const void *data, size_t len, GError **error)
{
  const guint8 *p = data;

  if (!ensure_header (w, error) || !maybe_advance (w, error))
    return FALSE;
  while (len > 0)
    {
      const WTensor *t;
      size_t n;

      if (w->cur >= (int64_t) w->tensors->len)
        {
          g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                       "GGUF writer for “%s”: %zu bytes of data beyond the last tensor", w->path,
                       len);
          return FALSE;
        }
      t = g_ptr_array_index (w->tensors, w->cur);
      n = MIN (len, t->nbytes - w->cur_done);
      if (!put (w, p, n, error))
        return FALSE;
      p += n;
      len -= n;
      w->cur_done += n;
      if (!maybe_advance (w, error))
        return FALSE;
    }
  return TRUE;
}

gboolean
bln_gguf_writer_skip_tensor (BlnGgufWriter *w, GError **error)
{
  const WTensor *t;
  uint64_t skip;

  if (!ensure_header (w, error) || !maybe_advance (w, error))
    return FALSE;
  if (w->cur >= (int64_t) w->tensors->len)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "GGUF writer for “%s”: no tensor left to skip", w->path);
      return FALSE;
    }
  t = g_ptr_array_index (w->tensors, w->cur);
  skip = pad_to (t->nbytes, w->alignment) - w->cur_done;
  if (!flush_buf (w, error))
    return FALSE;
  if (lseek (w->fd, (off_t) skip, SEEK_CUR) < 0)
    return io_error (w, errno, "seek in", error);
  w->cur++;
  w->cur_done = 0;
  return TRUE;
}

gboolean
bln_gguf_writer_write_tensor_cb (BlnGgufWriter *w, BlnGgufWriterFill fill, gpointer user_data,
                                 GError **error)
{
  g_autofree guint8 *piece = NULL;
  const WTensor *t;
  int64_t idx;

  if (!ensure_header (w, error) || !maybe_advance (w, error))
    return FALSE;
  if (w->cur >= (int64_t) w->tensors->len)
    {
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "GGUF writer for “%s”: no tensor left to write", w->path);
      return FALSE;
    }
  idx = w->cur;
  t = g_ptr_array_index (w->tensors, idx);
  piece = g_malloc (MIN (FILL_PIECE, MAX (t->nbytes, 1)));
  while (w->cur == idx && w->cur_done < t->nbytes)
    {
      size_t off = w->cur_done, n = MIN ((size_t) FILL_PIECE, t->nbytes - off);
      if (!fill (piece, off, n, user_data, error))
        {
          writer_fail (w);
          return FALSE;
        }
      if (!bln_gguf_writer_write (w, piece, n, error))
        return FALSE;
    }
  return TRUE;
}

gboolean
bln_gguf_writer_finish (BlnGgufWriter *w, GError **error)
{
  uint64_t final_size;

  if (!ensure_header (w, error) || !maybe_advance (w, error))
    return FALSE;
  if (w->cur < (int64_t) w->tensors->len)
    {
      const WTensor *t = g_ptr_array_index (w->tensors, w->cur);
      g_set_error (error, BLN_ERROR, BLN_ERROR_INVALID,
                   "GGUF writer for “%s”: tensor “%s” has %zu of %zu bytes (and %u more "
                   "tensors follow)", w->path, t->name, w->cur_done, t->nbytes,
                   w->tensors->len - (guint) w->cur - 1);
      writer_fail (w);
      return FALSE;
    }
  if (!flush_buf (w, error))
    return FALSE;
  /* A skipped last tensor leaves a hole the file size must still cover. */
  final_size = bln_gguf_writer_file_size (w);
  if (w->remove_on_fail && ftruncate (w->fd, (off_t) final_size) != 0)
    return io_error (w, errno, "extend", error);
  if (fsync (w->fd) != 0 && errno != EINVAL && errno != EROFS)
    return io_error (w, errno, "sync", error);
  if (close (w->fd) != 0)
    {
      w->fd = -1;
      return io_error (w, errno, "close", error);
    }
  w->fd = -1;
  w->finished = TRUE;
  return TRUE;
}
