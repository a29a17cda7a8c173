/* safetensors.h — a validating reader for one .safetensors file.
 *
 * Layout of the format: an 8-byte little-endian header length N, then N bytes
 * of UTF-8 JSON (an object mapping tensor names to {"dtype", "shape",
 * "data_offsets": [begin, end]}, plus an optional "__metadata__" object of
 * string pairs), then the data section. Offsets are relative to the start of
 * the data section; values are stored row-major, little-endian.
 *
 * The file is mapped read-only and the whole header is checked on open: the
 * header length against the file size and BLN_SAFETENSORS_MAX_HEADER, every
 * dtype, every dimension (non-negative, product and byte size free of
 * overflow), every [begin, end) range (inside the data section, end - begin
 * equal to the element count times the dtype size, no two ranges
 * overlapping). A file that fails any check is rejected by the open call
 * with BLN_ERROR_CORRUPT; accessors are safe afterwards.
 *
 * Any dtype the format names is accepted on open (so a file with, say, an I64
 * position-id buffer still opens), but only F32, F16 and BF16 tensors of at
 * most four dimensions can be turned into a BlnTensor; asking for another
 * fails with BLN_ERROR_UNSUPPORTED.
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include "tensor.h"

G_BEGIN_DECLS

/* Upper bound on the JSON header (the format's reference reader uses the same). */
#define BLN_SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)
/* Most dimensions a tensor may declare (the header is rejected above this). */
#define BLN_SAFETENSORS_MAX_DIMS 8

typedef enum {
  BLN_ST_BOOL,
  BLN_ST_U8,
  BLN_ST_I8,
  BLN_ST_F8_E5M2,
  BLN_ST_F8_E4M3,
  BLN_ST_F8_E8M0,
  BLN_ST_I16,
  BLN_ST_U16,
  BLN_ST_F16,
  BLN_ST_BF16,
  BLN_ST_I32,
  BLN_ST_U32,
  BLN_ST_F32,
  BLN_ST_F64,
  BLN_ST_I64,
  BLN_ST_U64,
  BLN_ST_C64,
  BLN_ST_N_DTYPES_,   /* not a dtype */
} BlnStDtype;

/* One entry of the header, as the file declares it. */
typedef struct {
  const char *name;      /* owned by the BlnSafetensors */
  BlnStDtype dtype;
  int n_dims;            /* 0 for a scalar */
  int64_t shape[BLN_SAFETENSORS_MAX_DIMS];  /* file (row-major) order: shape[n_dims-1] varies fastest */
  uint64_t begin, end;   /* byte range relative to the data section */
  const void *data;      /* inside the mapping; unaligned in general */
} BlnStTensorInfo;

typedef struct _BlnSafetensors BlnSafetensors;

/* Maps and validates the file at @path. Returns NULL with @error set on
 * failure: BLN_ERROR_IO when the file cannot be read, BLN_ERROR_CORRUPT for a
 * malformed file, BLN_ERROR_UNSUPPORTED for a dtype name this reader does
 * not know. Free with bln_safetensors_free(). */
BlnSafetensors *bln_safetensors_open (const char *path, GError **error);

/* The same over a caller-owned buffer, which must outlive the result
 * (tests, fuzzing). @data may be NULL when @size is 0. */
BlnSafetensors *bln_safetensors_open_memory (const void *data, size_t size, GError **error);

/* Unmaps the file and frees every tensor and string handed out. NULL is fine. */
void bln_safetensors_free (BlnSafetensors *st);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnSafetensors, bln_safetensors_free)

/* The dtype's name as the format spells it ("F32", "BF16"), or "unknown". Static. */
const char *bln_st_dtype_name (BlnStDtype dtype);

/* Bytes per element of @dtype, or 0 for an invalid value. */
size_t bln_st_dtype_size (BlnStDtype dtype);

/* Tensors, in the order of their data offsets. @i must be in [0, n_tensors). */
int64_t bln_safetensors_n_tensors (const BlnSafetensors *st);
const BlnStTensorInfo *bln_safetensors_info (const BlnSafetensors *st, int64_t i);

/* Index of the tensor called @name, or -1 when there is none. */
int64_t bln_safetensors_find (const BlnSafetensors *st, const char *name);

/* The tensor @i as a BlnTensor in the engine's order (ne[0] = the last, fastest
 * file dimension). The result is owned by @st and lives until it is freed;
 * its data is borrowed from the mapping (or, when the mapping is not aligned
 * for the element size, copied once into memory the tensor owns). Returns
 * NULL with BLN_ERROR_UNSUPPORTED for a dtype other than F32/F16/BF16 or more
 * than four dimensions, BLN_ERROR_NOMEM when an alignment copy fails. */
const BlnTensor *bln_safetensors_tensor (BlnSafetensors *st, int64_t i, GError **error);

/* The value stored under @key in "__metadata__", or NULL. Owned by @st. */
const char *bln_safetensors_metadata (const BlnSafetensors *st, const char *key);

G_END_DECLS
