/* quant.h — GGUF tensor types: block layouts, sizes, dequantisation.
 *
 * The numbering and the block layouts are those of the GGUF file format
 * (ggml's type ids), so a type read from a file maps directly. Rows are made
 * of whole blocks: a row of n values of type t takes n / block_size(t) blocks.
 * The reference (scalar) conversions here are bit-exact with the gguf Python
 * package; engine/cpu/ has the SIMD dot products that use the same layouts.
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <stddef.h>

G_BEGIN_DECLS

typedef enum {
  BLN_TYPE_F32 = 0,
  BLN_TYPE_F16 = 1,
  BLN_TYPE_Q4_0 = 2,
  BLN_TYPE_Q4_1 = 3,
  BLN_TYPE_Q5_0 = 6,
  BLN_TYPE_Q5_1 = 7,
  BLN_TYPE_Q8_0 = 8,
  BLN_TYPE_Q8_1 = 9,
  BLN_TYPE_Q2_K = 10,
  BLN_TYPE_Q3_K = 11,
  BLN_TYPE_Q4_K = 12,
  BLN_TYPE_Q5_K = 13,
  BLN_TYPE_Q6_K = 14,
  BLN_TYPE_Q8_K = 15,
  BLN_TYPE_BF16 = 30,
  BLN_TYPE_COUNT_ = 40,   /* upper bound on ids; not a type */
} BlnType;

#define BLN_QK 32     /* values per block in the legacy quants */
#define BLN_QK_K 256  /* values per super-block in the k-quants */
#define BLN_K_SCALE_SIZE 12

typedef uint16_t bln_half;  /* IEEE binary16 bits */

typedef struct { bln_half d; uint8_t qs[BLN_QK / 2]; } BlnBlockQ4_0;
typedef struct { bln_half d, m; uint8_t qs[BLN_QK / 2]; } BlnBlockQ4_1;
typedef struct { bln_half d; uint8_t qh[4]; uint8_t qs[BLN_QK / 2]; } BlnBlockQ5_0;
typedef struct { bln_half d, m; uint8_t qh[4]; uint8_t qs[BLN_QK / 2]; } BlnBlockQ5_1;
typedef struct { bln_half d; int8_t qs[BLN_QK]; } BlnBlockQ8_0;
typedef struct { bln_half d, s; int8_t qs[BLN_QK]; } BlnBlockQ8_1;   /* s = d * sum(qs) */
typedef struct {
  uint8_t scales[BLN_QK_K / 16];
  uint8_t qs[BLN_QK_K / 4];
  bln_half d, dmin;
} BlnBlockQ2_K;
typedef struct {
  uint8_t hmask[BLN_QK_K / 8];
  uint8_t qs[BLN_QK_K / 4];
  uint8_t scales[12];
  bln_half d;
} BlnBlockQ3_K;
typedef struct {
  bln_half d, dmin;
  uint8_t scales[BLN_K_SCALE_SIZE];
  uint8_t qs[BLN_QK_K / 2];
} BlnBlockQ4_K;
typedef struct {
  bln_half d, dmin;
  uint8_t scales[BLN_K_SCALE_SIZE];
  uint8_t qh[BLN_QK_K / 8];
  uint8_t qs[BLN_QK_K / 2];
} BlnBlockQ5_K;
typedef struct {
  uint8_t ql[BLN_QK_K / 2];
  uint8_t qh[BLN_QK_K / 4];
  int8_t scales[BLN_QK_K / 16];
  bln_half d;
} BlnBlockQ6_K;
typedef struct {
  float d;
  int8_t qs[BLN_QK_K];
  int16_t bsums[BLN_QK_K / 16];
} BlnBlockQ8_K;

typedef struct {
  const char *name;      /* "q4_K", as the gguf package spells it */
  int block_size;        /* values per block */
  size_t type_size;      /* bytes per block */
  gboolean can_load;     /* a model tensor of this type can be used */
} BlnTypeInfo;

/* Returns the description of type id @t, or NULL when @t is not a type we
 * know. Never fails otherwise; the returned pointer is static. */
const BlnTypeInfo *bln_type_info (int t);

/* The name of @t ("f32", "q4_K"...), or "unknown". Static string. */
const char *bln_type_name (int t);

/* Bytes taken by @n values of type @t. FALSE when @t is unknown, @n is not
 * a multiple of the block size, or the size overflows. */
gboolean bln_type_row_bytes (int t, int64_t n, size_t *out_bytes);

/* Half and bfloat16 conversions, exact (round to nearest even on the way in). */
float bln_half_to_float (bln_half h);
bln_half bln_float_to_half (float f);
float bln_bf16_to_float (uint16_t b);
uint16_t bln_float_to_bf16 (float f);

/* Dequantises @n values (a multiple of the block size) of type @t from @src
 * into @dst. Returns FALSE for a type that cannot be dequantised. */
gboolean bln_dequantize_row (int t, const void *src, float *dst, int64_t n);

/* Quantises @n floats into @dst (bln_type_row_bytes (t, n) bytes) as the
 * reference quantiser does. Supported targets: F32, F16, BF16, Q8_0, Q8_1,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_K, Q4_K, Q6_K (others return FALSE). */
gboolean bln_quantize_row (int t, const float *src, void *dst, int64_t n);

G_END_DECLS
