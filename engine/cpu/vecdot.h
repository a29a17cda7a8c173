/* cpu/vecdot.h — internal interface between the CPU matmul and its kernels.
 *
 * Not a public header: only engine/cpu/ and tests/test-cpu-ops.c include it.
 *
 * A quantised weight row is never expanded to floats. The activations are
 * quantised once per matmul to 8-bit blocks that line up with the weight
 * blocks, and each kernel computes integer dot products per block, scaling
 * them in float at the end of the block:
 *
 *   - legacy weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against BlnActQ8: 32
 *     values with a float scale and the exact integer sum of the values (the
 *     sum carries the min term of Q4_1 / Q5_1: sum_i m * a_i = m * d * sum);
 *   - k-quants (Q2_K .. Q6_K) against BlnBlockQ8_K: 256 values, float scale
 *     and the sums of each 16 values (for the mins and the offsets);
 *   - F32, F16 and BF16 weights against the float activations themselves.
 *
 * The activation formats are private: their scales are float (not half as
 * in the file formats) so the only rounding they add is that of the 8-bit
 * values themselves.
 */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "../quant.h"
#include "cpu.h"

G_BEGIN_DECLS

/* 32 activations: x[i] ~ d * qs[i]; sum = sum_i qs[i]. */
typedef struct {
  float d;
  int32_t sum;
  int8_t qs[BLN_QK];
} BlnActQ8;

typedef enum {
  BLN_ACT_NONE,  /* type not supported by the matmul */
  BLN_ACT_F32,   /* the kernel reads the float activations */
  BLN_ACT_Q8,    /* BlnActQ8 blocks of 32 */
  BLN_ACT_Q8K,   /* BlnBlockQ8_K blocks of 256 */
} BlnActKind;

/* The most activation rows one kernel call handles. */
#define BLN_DOT_MAX_NA 4

/* One weight row @w (n values of the kernel's weight type) dotted with @na
 * (1..BLN_DOT_MAX_NA) activation rows: row t starts at (char *) @a + t *
 * @a_stride and its result goes to y[t * y_stride]. @n is a multiple of the
 * weight block size (checked by the caller). */
typedef void (*BlnDotFn) (int64_t n, const void *w, const void *a, size_t a_stride, int na,
                          float *y, size_t y_stride);

typedef void (*BlnQuantActFn) (const float *x, void *dst, int64_t n);

typedef struct {
  const char *name;                   /* "scalar", "avx2", "avx512" */
  BlnDotFn dot[BLN_TYPE_COUNT_];      /* by weight type; NULL = unsupported */
  BlnQuantActFn quant_q8;             /* n % 32 == 0 floats -> BlnActQ8 blocks */
  BlnQuantActFn quant_q8k;            /* n % 256 == 0 floats -> BlnBlockQ8_K blocks */
  float (*dot_f32) (const float *a, const float *b, int64_t n);
  void (*axpy_f32) (float *y, float a, const float *x, int64_t n);
} BlnCpuKernels;

/* The activation format a weight type is multiplied with. */
BlnActKind bln_cpu_act_kind (int wtype);

/* Bytes of one activation row of @n values for weight type @wtype (0 when
 * @n is not a whole number of blocks). */
size_t bln_cpu_act_row_bytes (int wtype, int64_t n);

/* The kernel table in use (chosen once, see dispatch.c). Never NULL. */
const BlnCpuKernels *bln_cpu_kernels (void);

/* Test hook: TRUE makes bln_cpu_kernels() return the portable table until
 * called again with FALSE. Not for use while a matmul runs. */
void bln_cpu_force_scalar (gboolean scalar);

/* The portable table, always available. */
const BlnCpuKernels *bln_cpu_kernels_scalar (void);

/* Fill @k with the SIMD kernels of one level, keeping the entries the level
 * does not implement. Only call after the CPU check in dispatch.c. */
void bln_cpu_kernels_avx2_init (BlnCpuKernels *k);
void bln_cpu_kernels_avx512_init (BlnCpuKernels *k);

/* A scratch buffer owned by @pool, 64-byte aligned, at least @size bytes,
 * valid until the next call. NULL with @error when it cannot be grown. */
void *bln_pool_scratch (BlnPool *pool, size_t size, GError **error);

/* IEEE half -> float without the F16C instructions. */
static inline float
bln_cpu_half_to_float (bln_half h)
{
  uint32_t sign = (uint32_t) (h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  float f;

  if (exp == 0x1f)
    u = sign | 0x7f800000 | (man << 13);
  else if (exp != 0)
    u = sign | ((exp + 112) << 23) | (man << 13);
  else if (man == 0)
    u = sign;
  else
    {
      /* subnormal: value = man * 2^-24, exact in float */
      f = (float) man * 5.9604644775390625e-08f;
      return sign ? -f : f;
    }
  memcpy (&f, &u, 4);
  return f;
}

static inline float
bln_cpu_rd_half (const void *p)
{
  bln_half h;

  memcpy (&h, p, 2);
  return bln_cpu_half_to_float (h);
}

G_END_DECLS
