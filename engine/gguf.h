/* gguf.h — a validating reader for GGUF v2/v3 files.
 *
 * The file is mapped read-only. Opening parses and checks the whole header,
 * metadata and tensor table up front: every length, count, offset, dimension
 * and type is validated against the file size before it is used, so a
 * truncated or hostile file fails in bln_gguf_open() with a BLN_ERROR_CORRUPT
 * message naming what is wrong, and every accessor below is safe afterwards.
 * Metadata strings are copied out NUL-terminated; tensor data stays in the
 * mapping (aligned to general.alignment).
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include "quant.h"

G_BEGIN_DECLS

typedef enum {
  BLN_GGUF_UINT8 = 0,
  BLN_GGUF_INT8 = 1,
  BLN_GGUF_UINT16 = 2,
  BLN_GGUF_INT16 = 3,
  BLN_GGUF_UINT32 = 4,
  BLN_GGUF_INT32 = 5,
  BLN_GGUF_FLOAT32 = 6,
  BLN_GGUF_BOOL = 7,
  BLN_GGUF_STRING = 8,
  BLN_GGUF_ARRAY = 9,
  BLN_GGUF_UINT64 = 10,
  BLN_GGUF_INT64 = 11,
  BLN_GGUF_FLOAT64 = 12,
} BlnGgufType;

#define BLN_GGUF_MAX_DIMS 4

typedef struct {
  const char *name;          /* owned by the BlnGguf */
  BlnType type;
  int n_dims;
  int64_t ne[BLN_GGUF_MAX_DIMS]; /* ne[0] is the fastest-varying (row length); unused = 1 */
  uint64_t offset;           /* from the start of the data section */
  size_t nbytes;
  const void *data;          /* inside the mapping, valid until bln_gguf_free() */
} BlnGgufTensor;

typedef struct _BlnGguf BlnGguf;

/* Opens and validates @path. Returns NULL with @error set (BLN_ERROR_IO or
 * BLN_ERROR_CORRUPT / BLN_ERROR_UNSUPPORTED) on failure. Free with bln_gguf_free(). */
BlnGguf *bln_gguf_open (const char *path, GError **error);

/* Same over a caller-owned buffer that must outlive the result (fuzzing, tests). */
BlnGguf *bln_gguf_open_memory (const void *data, size_t size, GError **error);

void bln_gguf_free (BlnGguf *gguf);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnGguf, bln_gguf_free)

uint32_t bln_gguf_version (const BlnGguf *gguf);
size_t bln_gguf_alignment (const BlnGguf *gguf);

/* Metadata. Keys are looked up by exact name. */
int64_t bln_gguf_n_kv (const BlnGguf *gguf);
const char *bln_gguf_kv_key (const BlnGguf *gguf, int64_t i);
BlnGgufType bln_gguf_kv_type (const BlnGguf *gguf, int64_t i);
int64_t bln_gguf_find_key (const BlnGguf *gguf, const char *key);   /* -1 when absent */

/* Scalar getters: FALSE when the key is absent or of an incompatible type.
 * get_int accepts any integer type (and bool), get_float any numeric type. */
gboolean bln_gguf_get_int (const BlnGguf *gguf, const char *key, int64_t *out);
gboolean bln_gguf_get_uint64 (const BlnGguf *gguf, const char *key, uint64_t *out);
gboolean bln_gguf_get_float (const BlnGguf *gguf, const char *key, double *out);
gboolean bln_gguf_get_bool (const BlnGguf *gguf, const char *key, gboolean *out);
/* NUL-terminated copy owned by the BlnGguf; @len (may be NULL) gets the byte
 * length (strings may hold NULs). NULL when absent or not a string. */
const char *bln_gguf_get_string (const BlnGguf *gguf, const char *key, size_t *len);

/* Arrays: FALSE when absent or not an array. Elements are read with the
 * indexed getters, which return FALSE for an index out of range or an
 * incompatible element type. */
gboolean bln_gguf_get_array (const BlnGguf *gguf, const char *key,
                             BlnGgufType *elem_type, uint64_t *n);
gboolean bln_gguf_array_int (const BlnGguf *gguf, const char *key, uint64_t i, int64_t *out);
gboolean bln_gguf_array_float (const BlnGguf *gguf, const char *key, uint64_t i, double *out);
const char *bln_gguf_array_string (const BlnGguf *gguf, const char *key, uint64_t i,
                                   size_t *len);

/* Tensors. */
int64_t bln_gguf_n_tensors (const BlnGguf *gguf);
const BlnGgufTensor *bln_gguf_tensor (const BlnGguf *gguf, int64_t i);
const BlnGgufTensor *bln_gguf_find_tensor (const BlnGguf *gguf, const char *name); /* NULL if absent */

G_END_DECLS
