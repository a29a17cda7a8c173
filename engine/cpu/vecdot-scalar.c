/* cpu/vecdot-scalar.c — portable dot products and activation quantisers.
 *
 * The reference for the SIMD kernels and the fallback on CPUs without them.
 * Every weight block is unpacked to small integers and dotted with the 8-bit
 * activations in integer arithmetic; the float scales are applied once per
 * block (legacy types) or per super-block (k-quants), in the same way the
 * SIMD kernels do, so both paths agree to float rounding.
 */
#include <math.h>
#include <string.h>

#include "vecdot.h"

/* ---------------------------------------------------------------------------
 * Activation quantisers
 * ------------------------------------------------------------------------- */

/* x * id rounded to nearest (ties to even) and clamped to [-127, 127]; NaN
 * becomes -127. The AVX2 quantiser computes exactly the same values. */
static inline int
q8_round (float x, float id)
{
  float v = nearbyintf (x * id);

  v = fmaxf (v, -127.0f);
  v = fminf (v, 127.0f);
  return (int) v;
}

static float
absmax (const float *x, int n)
{
  float m = 0.0f;

  for (int i = 0; i < n; i++)
    m = fmaxf (m, fabsf (x[i]));
  return m;
}

static void
quant_q8_scalar (const float *x, void *dst, int64_t n)
{
  BlnActQ8 *y = dst;

  for (int64_t b = 0; b < n / BLN_QK; b++, x += BLN_QK)
    {
      float amax = absmax (x, BLN_QK);
      float id = amax > 0.0f ? 127.0f / amax : 0.0f;
      int sum = 0;

      for (int i = 0; i < BLN_QK; i++)
        {
          int q = q8_round (x[i], id);
          y[b].qs[i] = (int8_t) q;
          sum += q;
        }
      y[b].d = amax / 127.0f;
      y[b].sum = sum;
    }
}

static void
quant_q8k_scalar (const float *x, void *dst, int64_t n)
{
  BlnBlockQ8_K *y = dst;

  for (int64_t b = 0; b < n / BLN_QK_K; b++, x += BLN_QK_K)
    {
      float amax = absmax (x, BLN_QK_K);
      float id = amax > 0.0f ? 127.0f / amax : 0.0f;

      for (int i = 0; i < BLN_QK_K; i++)
        y[b].qs[i] = (int8_t) q8_round (x[i], id);
      for (int g = 0; g < BLN_QK_K / 16; g++)
        {
          int s = 0;
          for (int i = 0; i < 16; i++)
            s += y[b].qs[g * 16 + i];
          y[b].bsums[g] = (int16_t) s;
        }
      y[b].d = amax / 127.0f;
    }
}

/* ---------------------------------------------------------------------------
 * Float weights
 * ------------------------------------------------------------------------- */

/* Eight partial sums: as fast as a simple loop gets without SIMD, and
 * closer to the float64 result than one running sum. */
static float
dot_f32_scalar (const float *a, const float *b, int64_t n)
{
  float acc[8] = { 0 };
  float s = 0.0f;
  int64_t i = 0;

  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++)
      acc[l] += a[i + l] * b[i + l];
  for (; i < n; i++)
    s += a[i] * b[i];
  return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static void
axpy_f32_scalar (float *y, float a, const float *x, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    y[i] += a * x[i];
}

static float
bf16_to_float (uint16_t b)
{
  uint32_t u = (uint32_t) b << 16;
  float f;

  memcpy (&f, &u, 4);
  return f;
}

static void
dot_f32w (int64_t n, const void *w, const void *a, size_t as, int na, float *y, size_t ys)
{
  for (int t = 0; t < na; t++)
    y[t * ys] = dot_f32_scalar (w, (const float *) ((const char *) a + t * as), n);
}

/* F16 / BF16: converted 64 at a time into a float buffer, then the F32 dot. */
static void
dot_half_common (int64_t n, const uint16_t *w, gboolean bf16, const void *a, size_t as, int na,
                 float *y, size_t ys)
{
  float acc[BLN_DOT_MAX_NA] = { 0 };
  float buf[64];

  for (int64_t i = 0; i < n; i += 64)
    {
      int m = n - i < 64 ? (int) (n - i) : 64;

      for (int j = 0; j < m; j++)
        buf[j] = bf16 ? bf16_to_float (w[i + j]) : bln_cpu_half_to_float (w[i + j]);
      for (int t = 0; t < na; t++)
        acc[t] += dot_f32_scalar (buf, (const float *) ((const char *) a + t * as) + i, m);
    }
  for (int t = 0; t < na; t++)
    y[t * ys] = acc[t];
}

static void
dot_f16w (int64_t n, const void *w, const void *a, size_t as, int na, float *y, size_t ys)
{
  dot_half_common (n, w, FALSE, a, as, na, y, ys);
}

static void
dot_bf16w (int64_t n, const void *w, const void *a, size_t as, int na, float *y, size_t ys)
{
  dot_half_common (n, w, TRUE, a, as, na, y, ys);
}

/* ---------------------------------------------------------------------------
 * Legacy quants against BlnActQ8
 * ------------------------------------------------------------------------- */

/* Unpacks one legacy block to q[32] (the stored integers, without offset)
 * and returns the scale; *m gets the min term's factor for the affine types
 * (the value is d * q + m) and *off the integer offset of the symmetric ones
 * (the value is d * (q - off)). */
static float
unpack_legacy (int t, const uint8_t *b, int q[32], float *m, int *off)
{
  const uint8_t *qs;
  uint32_t qh = 0;
  float d = bln_cpu_rd_half (b);

  *m = 0.0f;
  *off = 0;
  switch (t)
    {
    case BLN_TYPE_Q8_0:
      for (int j = 0; j < 32; j++)
        q[j] = (int8_t) b[2 + j];
      return d;
    case BLN_TYPE_Q4_0:
      qs = b + 2;
      *off = 8;
      break;
    case BLN_TYPE_Q4_1:
      qs = b + 4;
      *m = bln_cpu_rd_half (b + 2);
      break;
    case BLN_TYPE_Q5_0:
      memcpy (&qh, b + 2, 4);
      qs = b + 6;
      *off = 16;
      break;
    case BLN_TYPE_Q5_1:
    default:
      memcpy (&qh, b + 4, 4);
      qs = b + 8;
      *m = bln_cpu_rd_half (b + 2);
      break;
    }
  qh = GUINT32_FROM_LE (qh);
  for (int j = 0; j < 16; j++)
    {
      q[j] = (qs[j] & 0xf) | (((qh >> j) & 1) << 4);
      q[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    }
  return d;
}

static void
dot_legacy (int t, size_t bsize, int64_t n, const void *w, const void *a, size_t as, int na,
            float *y, size_t ys)
{
  float acc[BLN_DOT_MAX_NA] = { 0 };
  const uint8_t *wb = w;
  int q[32];

  for (int64_t b = 0; b < n / BLN_QK; b++, wb += bsize)
    {
      float m;
      int off;
      float d = unpack_legacy (t, wb, q, &m, &off);

      for (int k = 0; k < na; k++)
        {
          const BlnActQ8 *ab = (const BlnActQ8 *) ((const char *) a + k * as) + b;
          int isum = 0;

          for (int j = 0; j < 32; j++)
            isum += (q[j] - off) * ab->qs[j];
          acc[k] += (d * ab->d) * (float) isum + (m * ab->d) * (float) ab->sum;
        }
    }
  for (int k = 0; k < na; k++)
    y[k * ys] = acc[k];
}

#define LEGACY_DOT(name, type, block)                                                   \
  static void                                                                           \
  name (int64_t n, const void *w, const void *a, size_t as, int na, float *y, size_t ys) \
  {                                                                                     \
    dot_legacy (type, sizeof (block), n, w, a, as, na, y, ys);                          \
  }

LEGACY_DOT (dot_q4_0, BLN_TYPE_Q4_0, BlnBlockQ4_0)
LEGACY_DOT (dot_q4_1, BLN_TYPE_Q4_1, BlnBlockQ4_1)
LEGACY_DOT (dot_q5_0, BLN_TYPE_Q5_0, BlnBlockQ5_0)
LEGACY_DOT (dot_q5_1, BLN_TYPE_Q5_1, BlnBlockQ5_1)
LEGACY_DOT (dot_q8_0, BLN_TYPE_Q8_0, BlnBlockQ8_0)

/* ---------------------------------------------------------------------------
 * k-quants against BlnBlockQ8_K
 *
 * Each super-block is unpacked to q[256] (integers, offsets applied), 16
 * integer scales (one per 16 values) and, for the affine types, 16 integer
 * mins; the value is d * sc * q - dmin * mn. Q4_K / Q5_K have one scale per
 * 32 values, repeated for both halves.
 * ------------------------------------------------------------------------- */

typedef struct {
  int q[BLN_QK_K];
  int sc[16];
  int mn[16];
  float d, dmin;
} KUnpacked;

static inline int
crumb (const uint8_t *qs, int v)
{
  return (qs[(v / 128) * 32 + v % 32] >> (2 * ((v % 128) / 32))) & 3;
}

static void
k_scale_min (const uint8_t *sc, int j, int *scale, int *min)
{
  if (j < 4)
    {
      *scale = sc[j] & 0x3f;
      *min = sc[j + 4] & 0x3f;
    }
  else
    {
      *scale = (sc[j + 4] & 0xf) | ((sc[j - 4] >> 2) & 0x30);
      *min = (sc[j + 4] >> 4) | ((sc[j] >> 2) & 0x30);
    }
}

static void
unpack_k (int t, const uint8_t *b, KUnpacked *u)
{
  memset (u->mn, 0, sizeof u->mn);
  u->dmin = 0.0f;
  switch (t)
    {
    case BLN_TYPE_Q2_K:
      {
        const uint8_t *scales = b, *qs = b + 16;
        u->d = bln_cpu_rd_half (b + 80);
        u->dmin = bln_cpu_rd_half (b + 82);
        for (int s = 0; s < 16; s++)
          {
            u->sc[s] = scales[s] & 0xf;
            u->mn[s] = scales[s] >> 4;
          }
        for (int v = 0; v < 256; v++)
          u->q[v] = crumb (qs, v);
        break;
      }
    case BLN_TYPE_Q3_K:
      {
        const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
        u->d = bln_cpu_rd_half (b + 108);
        for (int s = 0; s < 16; s++)
          {
            int lo = s < 8 ? (sc[s] & 0xf) : (sc[s - 8] >> 4);
            int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
            u->sc[s] = (lo | (hi << 4)) - 32;
          }
        for (int v = 0; v < 256; v++)
          u->q[v] = crumb (qs, v) - (((hmask[v % 32] >> (v / 32)) & 1) ? 0 : 4);
        break;
      }
    case BLN_TYPE_Q4_K:
    case BLN_TYPE_Q5_K:
      {
        const uint8_t *sc = b + 4, *qh = b + 16;
        const uint8_t *qs = t == BLN_TYPE_Q4_K ? b + 16 : b + 48;
        u->d = bln_cpu_rd_half (b);
        u->dmin = bln_cpu_rd_half (b + 2);
        for (int j = 0; j < 8; j++)
          {
            int s, m;
            k_scale_min (sc, j, &s, &m);
            u->sc[2 * j] = u->sc[2 * j + 1] = s;
            u->mn[2 * j] = u->mn[2 * j + 1] = m;
            for (int i = 0; i < 32; i++)
              {
                int q = (qs[(j / 2) * 32 + i] >> (4 * (j % 2))) & 0xf;
                if (t == BLN_TYPE_Q5_K)
                  q |= ((qh[i] >> j) & 1) << 4;
                u->q[j * 32 + i] = q;
              }
          }
        break;
      }
    case BLN_TYPE_Q6_K:
    default:
      {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *) (b + 192);
        u->d = bln_cpu_rd_half (b + 208);
        for (int s = 0; s < 16; s++)
          u->sc[s] = sc[s];
        for (int v = 0; v < 256; v++)
          {
            int half = v / 128, x = v % 128;
            int lo = (ql[half * 64 + x % 64] >> (4 * (x / 64))) & 0xf;
            int hi = (qh[half * 32 + x % 32] >> (2 * (x / 32))) & 3;
            u->q[v] = (lo | (hi << 4)) - 32;
          }
        break;
      }
    }
}

static void
dot_kquant (int t, size_t bsize, int64_t n, const void *w, const void *a, size_t as, int na,
            float *y, size_t ys)
{
  float acc[BLN_DOT_MAX_NA] = { 0 };
  const uint8_t *wb = w;
  KUnpacked u;

  for (int64_t b = 0; b < n / BLN_QK_K; b++, wb += bsize)
    {
      unpack_k (t, wb, &u);
      for (int k = 0; k < na; k++)
        {
          const BlnBlockQ8_K *ab = (const BlnBlockQ8_K *) ((const char *) a + k * as) + b;
          int32_t isum = 0, msum = 0;

          for (int s = 0; s < 16; s++)
            {
              int32_t ss = 0;
              for (int i = 0; i < 16; i++)
                ss += u.q[s * 16 + i] * ab->qs[s * 16 + i];
              isum += u.sc[s] * ss;
              msum += u.mn[s] * ab->bsums[s];
            }
          acc[k] += ab->d * (u.d * (float) isum - u.dmin * (float) msum);
        }
    }
  for (int k = 0; k < na; k++)
    y[k * ys] = acc[k];
}

#define K_DOT(name, type, block)                                                        \
  static void                                                                           \
  name (int64_t n, const void *w, const void *a, size_t as, int na, float *y, size_t ys) \
  {                                                                                     \
    dot_kquant (type, sizeof (block), n, w, a, as, na, y, ys);                          \
  }

K_DOT (dot_q2_k, BLN_TYPE_Q2_K, BlnBlockQ2_K)
K_DOT (dot_q3_k, BLN_TYPE_Q3_K, BlnBlockQ3_K)
K_DOT (dot_q4_k, BLN_TYPE_Q4_K, BlnBlockQ4_K)
K_DOT (dot_q5_k, BLN_TYPE_Q5_K, BlnBlockQ5_K)
K_DOT (dot_q6_k, BLN_TYPE_Q6_K, BlnBlockQ6_K)

/* ---------------------------------------------------------------------------
 * The table
 * ------------------------------------------------------------------------- */

const BlnCpuKernels *
bln_cpu_kernels_scalar (void)
{
  static BlnCpuKernels k = {
    .name = "scalar",
    .dot = {
      [BLN_TYPE_F32] = dot_f32w,
      [BLN_TYPE_F16] = dot_f16w,
      [BLN_TYPE_BF16] = dot_bf16w,
      [BLN_TYPE_Q4_0] = dot_q4_0,
      [BLN_TYPE_Q4_1] = dot_q4_1,
      [BLN_TYPE_Q5_0] = dot_q5_0,
      [BLN_TYPE_Q5_1] = dot_q5_1,
      [BLN_TYPE_Q8_0] = dot_q8_0,
      [BLN_TYPE_Q2_K] = dot_q2_k,
      [BLN_TYPE_Q3_K] = dot_q3_k,
      [BLN_TYPE_Q4_K] = dot_q4_k,
      [BLN_TYPE_Q5_K] = dot_q5_k,
      [BLN_TYPE_Q6_K] = dot_q6_k,
    },
    .quant_q8 = quant_q8_scalar,
    .quant_q8k = quant_q8k_scalar,
    .dot_f32 = dot_f32_scalar,
    .axpy_f32 = axpy_f32_scalar,
  };

  return &k;
}
