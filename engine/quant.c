/* quant.c — GGUF tensor types: the type table, half/bf16 conversions, and the
 * scalar (reference) dequantisers and quantisers.
 *
 * Everything here is written to give the same bits as the gguf Python package
 * (gguf.quants), which computes in float32 with one rounding per operation.
 * So each product and sum below is a separate float operation, in the order the
 * package does them, and the engine library is built with -ffp-contract=off so
 * the compiler never fuses a multiply and an add into one rounding.
 *
 * Block data is read through byte pointers and memcpy: tensor data sits in a
 * mapping at offsets that only the file chose, so nothing here relies on the
 * alignment of a block struct.
 */
#include "quant.h"

#include <math.h>
#include <string.h>

G_STATIC_ASSERT (sizeof (BlnBlockQ4_0) == 18);
G_STATIC_ASSERT (sizeof (BlnBlockQ4_1) == 20);
G_STATIC_ASSERT (sizeof (BlnBlockQ5_0) == 22);
G_STATIC_ASSERT (sizeof (BlnBlockQ5_1) == 24);
G_STATIC_ASSERT (sizeof (BlnBlockQ8_0) == 34);
G_STATIC_ASSERT (sizeof (BlnBlockQ8_1) == 36);
G_STATIC_ASSERT (sizeof (BlnBlockQ2_K) == 84);
G_STATIC_ASSERT (sizeof (BlnBlockQ3_K) == 110);
G_STATIC_ASSERT (sizeof (BlnBlockQ4_K) == 144);
G_STATIC_ASSERT (sizeof (BlnBlockQ5_K) == 176);
G_STATIC_ASSERT (sizeof (BlnBlockQ6_K) == 210);
G_STATIC_ASSERT (sizeof (BlnBlockQ8_K) == 292);

/* ---------------------------------------------------------------------------
 * The type table
 * ------------------------------------------------------------------------- */

static const BlnTypeInfo type_table[BLN_TYPE_COUNT_] = {
  [BLN_TYPE_F32] = { "f32", 1, 4, TRUE },
  [BLN_TYPE_F16] = { "f16", 1, 2, TRUE },
  [BLN_TYPE_Q4_0] = { "q4_0", BLN_QK, sizeof (BlnBlockQ4_0), TRUE },
  [BLN_TYPE_Q4_1] = { "q4_1", BLN_QK, sizeof (BlnBlockQ4_1), TRUE },
  [BLN_TYPE_Q5_0] = { "q5_0", BLN_QK, sizeof (BlnBlockQ5_0), TRUE },
  [BLN_TYPE_Q5_1] = { "q5_1", BLN_QK, sizeof (BlnBlockQ5_1), TRUE },
  [BLN_TYPE_Q8_0] = { "q8_0", BLN_QK, sizeof (BlnBlockQ8_0), TRUE },
  [BLN_TYPE_Q8_1] = { "q8_1", BLN_QK, sizeof (BlnBlockQ8_1), FALSE },
  [BLN_TYPE_Q2_K] = { "q2_K", BLN_QK_K, sizeof (BlnBlockQ2_K), TRUE },
  [BLN_TYPE_Q3_K] = { "q3_K", BLN_QK_K, sizeof (BlnBlockQ3_K), TRUE },
  [BLN_TYPE_Q4_K] = { "q4_K", BLN_QK_K, sizeof (BlnBlockQ4_K), TRUE },
  [BLN_TYPE_Q5_K] = { "q5_K", BLN_QK_K, sizeof (BlnBlockQ5_K), TRUE },
  [BLN_TYPE_Q6_K] = { "q6_K", BLN_QK_K, sizeof (BlnBlockQ6_K), TRUE },
  [BLN_TYPE_Q8_K] = { "q8_K", BLN_QK_K, sizeof (BlnBlockQ8_K), FALSE },
  [BLN_TYPE_BF16] = { "bf16", 1, 2, TRUE },
};

const BlnTypeInfo *
bln_type_info (int t)
{
  if (t < 0 || t >= BLN_TYPE_COUNT_ || type_table[t].name == NULL)
    return NULL;
  return &type_table[t];
}

const char *
bln_type_name (int t)
{
  const BlnTypeInfo *info = bln_type_info (t);

  return info ? info->name : "unknown";
}

gboolean
bln_type_row_bytes (int t, int64_t n, size_t *out_bytes)
{
  const BlnTypeInfo *info = bln_type_info (t);
  uint64_t blocks;

  if (info == NULL || n < 0 || n % info->block_size != 0)
    return FALSE;
  blocks = (uint64_t) n / (uint64_t) info->block_size;
  if (blocks > SIZE_MAX / info->type_size)
    return FALSE;
  if (out_bytes)
    *out_bytes = (size_t) blocks * info->type_size;
  return TRUE;
}

/* ---------------------------------------------------------------------------
 * Half and bfloat16
 * ------------------------------------------------------------------------- */

static inline uint32_t
f32_bits (float f)
{
  uint32_t u;

  memcpy (&u, &f, 4);
  return u;
}

static inline float
bits_f32 (uint32_t u)
{
  float f;

  memcpy (&f, &u, 4);
  return f;
}

float
bln_half_to_float (bln_half h)
{
  uint32_t sign = (uint32_t) (h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;

  if (exp == 0x1f)  /* inf, or NaN with its payload kept (as numpy does) */
    return bits_f32 (sign | 0x7f800000u | (mant << 13));
  if (exp == 0)
    {
      /* zero or subnormal: mant * 2^-24 is exact in float */
      float v = (float) mant * 0x1p-24f;
      return sign ? -v : v;
    }
  return bits_f32 (sign | ((exp + 112) << 23) | (mant << 13));
}

bln_half
bln_float_to_half (float f)
{
  uint32_t u = f32_bits (f);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t exp = (u >> 23) & 0xff;
  uint32_t sig = u & 0x7fffff;
  int e;
  uint32_t r, rem, halfway;

  if (exp == 0xff)
    {
      if (sig == 0)
        return (bln_half) (sign | 0x7c00);
      /* NaN: keep the top of the payload, but never turn it into inf */
      r = 0x7c00 + (sig >> 13);
      if (r == 0x7c00)
        r++;
      return (bln_half) (sign | r);
    }

  e = (int) exp - 127 + 15;
  if (e >= 31)
    return (bln_half) (sign | 0x7c00);
  if (e <= 0)
    {
      uint32_t m, shift;

      if (e < -10)  /* below half the smallest subnormal: rounds to zero */
        return (bln_half) sign;
      m = sig | 0x800000;
      shift = (uint32_t) (14 - e);
      r = m >> shift;
      rem = m & ((1u << shift) - 1);
      halfway = 1u << (shift - 1);
      if (rem > halfway || (rem == halfway && (r & 1)))
        r++;   /* may carry into the smallest normal, which is the right encoding */
      return (bln_half) (sign | r);
    }

  r = ((uint32_t) e << 10) | (sig >> 13);
  rem = sig & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
    r++;   /* a carry may reach the exponent, up to inf: still correct */
  return (bln_half) (sign | r);
}

float
bln_bf16_to_float (uint16_t b)
{
  return bits_f32 ((uint32_t) b << 16);
}

uint16_t
bln_float_to_bf16 (float f)
{
  uint32_t u = f32_bits (f);

  if ((u & 0x7fffffff) > 0x7f800000)   /* NaN: truncate and force quiet */
    return (uint16_t) ((u >> 16) | 0x40);
  return (uint16_t) (((uint64_t) u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* ---------------------------------------------------------------------------
 * Dequantisation
 * ------------------------------------------------------------------------- */

static inline float
rd_half (const uint8_t *p)
{
  bln_half h;

  memcpy (&h, p, 2);
  return bln_half_to_float (h);
}

static inline void
wr_half (uint8_t *p, float f)
{
  bln_half h = bln_float_to_half (f);

  memcpy (p, &h, 2);
}

/* Q4_0 and Q5_0 store value j of a block in the low nibble of qs[j] and
 * value j + 16 in the high nibble; Q5 adds bit j of the 32-bit qh as bit 4. */
static void
deq_q4_0 (const uint8_t *b, float *y)
{
  float d = rd_half (b);
  const uint8_t *qs = b + 2;

  for (int j = 0; j < 16; j++)
    {
      y[j] = d * (float) ((qs[j] & 0xf) - 8);
      y[j + 16] = d * (float) ((qs[j] >> 4) - 8);
    }
}

static void
deq_q4_1 (const uint8_t *b, float *y)
{
  float d = rd_half (b), m = rd_half (b + 2);
  const uint8_t *qs = b + 4;

  for (int j = 0; j < 16; j++)
    {
      float p0 = d * (float) (qs[j] & 0xf);
      float p1 = d * (float) (qs[j] >> 4);
      y[j] = p0 + m;
      y[j + 16] = p1 + m;
    }
}

static void
deq_q5_0 (const uint8_t *b, float *y)
{
  float d = rd_half (b);
  uint32_t qh;
  const uint8_t *qs = b + 6;

  memcpy (&qh, b + 2, 4);
  qh = GUINT32_FROM_LE (qh);
  for (int j = 0; j < 16; j++)
    {
      int q0 = (qs[j] & 0xf) | (((qh >> j) & 1) << 4);
      int q1 = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      y[j] = d * (float) (q0 - 16);
      y[j + 16] = d * (float) (q1 - 16);
    }
}

static void
deq_q5_1 (const uint8_t *b, float *y)
{
  float d = rd_half (b), m = rd_half (b + 2);
  uint32_t qh;
  const uint8_t *qs = b + 8;

  memcpy (&qh, b + 4, 4);
  qh = GUINT32_FROM_LE (qh);
  for (int j = 0; j < 16; j++)
    {
      int q0 = (qs[j] & 0xf) | (((qh >> j) & 1) << 4);
      int q1 = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      float p0 = d * (float) q0;
      float p1 = d * (float) q1;
      y[j] = p0 + m;
      y[j + 16] = p1 + m;
    }
}

static void
deq_q8_0 (const uint8_t *b, float *y)
{
  float d = rd_half (b);

  for (int j = 0; j < 32; j++)
    y[j] = (float) (int8_t) b[2 + j] * d;
}

static void
deq_q8_1 (const uint8_t *b, float *y)
{
  float d = rd_half (b);

  for (int j = 0; j < 32; j++)
    y[j] = (float) (int8_t) b[4 + j] * d;
}

/* 2-bit fields packed four to a byte: value v of a 256-block lives in byte
 * (v / 128) * 32 + v % 32, at bit 2 * ((v % 128) / 32). Q2_K and Q3_K share it. */
static inline int
crumb (const uint8_t *qs, int v)
{
  return (qs[(v / 128) * 32 + v % 32] >> (2 * ((v % 128) / 32))) & 3;
}

static void
deq_q2_k (const uint8_t *b, float *y)
{
  const uint8_t *scales = b, *qs = b + 16;
  float d = rd_half (b + 80), dmin = rd_half (b + 82);

  for (int s = 0; s < 16; s++)
    {
      float dl = d * (float) (scales[s] & 0xf);
      float ml = dmin * (float) (scales[s] >> 4);

      for (int i = 0; i < 16; i++)
        {
          int v = s * 16 + i;
          float p = dl * (float) crumb (qs, v);
          y[v] = p - ml;
        }
    }
}

static void
deq_q3_k (const uint8_t *b, float *y)
{
  const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
  float d = rd_half (b + 108);

  for (int s = 0; s < 16; s++)
    {
      /* low 4 bits from bytes 0..7 (low nibbles first), high 2 bits from 8..11 */
      int lo = s < 8 ? (sc[s] & 0xf) : (sc[s - 8] >> 4);
      int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
      float dl = d * (float) ((int8_t) (lo | (hi << 4)) - 32);

      for (int i = 0; i < 16; i++)
        {
          int v = s * 16 + i;
          int high = (hmask[v % 32] >> (v / 32)) & 1;
          int q = crumb (qs, v) - (high ? 0 : 4);
          y[v] = dl * (float) q;
        }
    }
}

/* The 6-bit scales and mins of Q4_K / Q5_K, eight of each in 12 bytes. */
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
deq_q4_k (const uint8_t *b, float *y)
{
  float d = rd_half (b), dmin = rd_half (b + 2);
  const uint8_t *sc = b + 4, *qs = b + 16;

  for (int j = 0; j < 8; j++)
    {
      int s, m;
      float ds, dm;

      k_scale_min (sc, j, &s, &m);
      ds = d * (float) s;
      dm = dmin * (float) m;
      for (int i = 0; i < 32; i++)
        {
          int q = (qs[(j / 2) * 32 + i] >> (4 * (j % 2))) & 0xf;
          float p = ds * (float) q;
          y[j * 32 + i] = p - dm;
        }
    }
}

static void
deq_q5_k (const uint8_t *b, float *y)
{
  float d = rd_half (b), dmin = rd_half (b + 2);
  const uint8_t *sc = b + 4, *qh = b + 16, *qs = b + 48;

  for (int j = 0; j < 8; j++)
    {
      int s, m;
      float ds, dm;

      k_scale_min (sc, j, &s, &m);
      ds = d * (float) s;
      dm = dmin * (float) m;
      for (int i = 0; i < 32; i++)
        {
          int q = ((qs[(j / 2) * 32 + i] >> (4 * (j % 2))) & 0xf) | (((qh[i] >> j) & 1) << 4);
          float p = ds * (float) q;
          y[j * 32 + i] = p - dm;
        }
    }
}

/* Q6_K: per 128 values, 64 bytes of low nibbles (values 0..63 low, 64..127
 * high) and 32 bytes holding four 2-bit high parts each. */
static void
deq_q6_k (const uint8_t *b, float *y)
{
  const uint8_t *ql = b, *qh = b + 128;
  const int8_t *sc = (const int8_t *) (b + 192);
  float d = rd_half (b + 208);

  for (int v = 0; v < 256; v++)
    {
      int half = v / 128, w = v % 128;
      int lo = (ql[half * 64 + w % 64] >> (4 * (w / 64))) & 0xf;
      int hi = (qh[half * 32 + w % 32] >> (2 * (w / 32))) & 3;
      float dl = d * (float) sc[v / 16];
      y[v] = dl * (float) ((lo | (hi << 4)) - 32);
    }
}

static void
deq_q8_k (const uint8_t *b, float *y)
{
  float d;

  memcpy (&d, b, 4);
  for (int j = 0; j < 256; j++)
    y[j] = d * (float) (int8_t) b[4 + j];
}

typedef void (*DeqBlockFunc) (const uint8_t *block, float *out);

static DeqBlockFunc
deq_func (int t)
{
  switch (t)
    {
    case BLN_TYPE_Q4_0: return deq_q4_0;
    case BLN_TYPE_Q4_1: return deq_q4_1;
    case BLN_TYPE_Q5_0: return deq_q5_0;
    case BLN_TYPE_Q5_1: return deq_q5_1;
    case BLN_TYPE_Q8_0: return deq_q8_0;
    case BLN_TYPE_Q8_1: return deq_q8_1;
    case BLN_TYPE_Q2_K: return deq_q2_k;
    case BLN_TYPE_Q3_K: return deq_q3_k;
    case BLN_TYPE_Q4_K: return deq_q4_k;
    case BLN_TYPE_Q5_K: return deq_q5_k;
    case BLN_TYPE_Q6_K: return deq_q6_k;
    case BLN_TYPE_Q8_K: return deq_q8_k;
    default: return NULL;
    }
}

gboolean
bln_dequantize_row (int t, const void *src, float *dst, int64_t n)
{
  const BlnTypeInfo *info = bln_type_info (t);
  const uint8_t *p = src;
  DeqBlockFunc f;

  if (!bln_type_row_bytes (t, n, NULL))
    return FALSE;
  switch (t)
    {
    case BLN_TYPE_F32:
      memcpy (dst, src, (size_t) n * 4);
      return TRUE;
    case BLN_TYPE_F16:
      for (int64_t i = 0; i < n; i++)
        dst[i] = rd_half (p + 2 * i);
      return TRUE;
    case BLN_TYPE_BF16:
      for (int64_t i = 0; i < n; i++)
        {
          uint16_t b;
          memcpy (&b, p + 2 * i, 2);
          dst[i] = bln_bf16_to_float (b);
        }
      return TRUE;
    default:
      break;
    }
  f = deq_func (t);
  if (f == NULL)
    return FALSE;
  for (int64_t i = 0; i < n / info->block_size; i++)
    f (p + i * info->type_size, dst + i * info->block_size);
  return TRUE;
}

/* ---------------------------------------------------------------------------
 * Quantisation: the legacy types, as the gguf package computes them
 * ------------------------------------------------------------------------- */

/* The element of largest magnitude, keeping its sign (first one on ties). */
static float
signed_absmax (const float *x, int n, float *amax_out)
{
  float amax = 0.0f, max = 0.0f;

  for (int j = 0; j < n; j++)
    if (fabsf (x[j]) > amax)
      {
        amax = fabsf (x[j]);
        max = x[j];
      }
  if (amax_out)
    *amax_out = amax;
  return max;
}

/* trunc (v) clipped to [0, top], as numpy's trunc + astype + clip does for
 * every value these quantisers can produce. */
static inline int
trunc_clip (float v, int top)
{
  float t = truncf (v);

  if (!(t > 0.0f))
    return 0;
  return t > (float) top ? top : (int) t;
}

/* Q4_0 / Q5_0: d = max / -(half of the range); q = trunc (x / d + offset). */
static void
quant_sym (const float *x, uint8_t *b, int bits)
{
  int top = (1 << bits) - 1;
  float half_range = (float) (1 << (bits - 1));
  float max = signed_absmax (x, 32, NULL);
  float d = max / -half_range;
  float id = d == 0.0f ? 0.0f : 1.0f / d;
  float offset = half_range + 0.5f;
  int q[32];
  uint32_t qh = 0;
  uint8_t *qs;

  for (int j = 0; j < 32; j++)
    {
      float s = x[j] * id;
      q[j] = trunc_clip (s + offset, top);
    }
  wr_half (b, d);
  if (bits == 5)
    {
      for (int j = 0; j < 32; j++)
        qh |= (uint32_t) (q[j] >> 4) << j;
      qh = GUINT32_TO_LE (qh);
      memcpy (b + 2, &qh, 4);
      qs = b + 6;
    }
  else
    qs = b + 2;
  for (int j = 0; j < 16; j++)
    qs[j] = (uint8_t) ((q[j] & 0xf) | ((q[j + 16] & 0xf) << 4));
}

/* Q4_1 / Q5_1: d = (max - min) / top; q = trunc ((x - min) / d + 0.5). */
static void
quant_affine (const float *x, uint8_t *b, int bits)
{
  int top = (1 << bits) - 1;
  float min = x[0], max = x[0];
  float d, id;
  int q[32];
  uint32_t qh = 0;
  uint8_t *qs;

  for (int j = 1; j < 32; j++)
    {
      if (x[j] < min)
        min = x[j];
      if (x[j] > max)
        max = x[j];
    }
  d = (max - min) / (float) top;
  id = d == 0.0f ? 0.0f : 1.0f / d;
  for (int j = 0; j < 32; j++)
    {
      float diff = x[j] - min;
      float s = diff * id;
      q[j] = trunc_clip (s + 0.5f, top);
    }
  wr_half (b, d);
  wr_half (b + 2, min);
  if (bits == 5)
    {
      for (int j = 0; j < 32; j++)
        qh |= (uint32_t) (q[j] >> 4) << j;
      qh = GUINT32_TO_LE (qh);
      memcpy (b + 4, &qh, 4);
      qs = b + 8;
    }
  else
    qs = b + 4;
  for (int j = 0; j < 16; j++)
    qs[j] = (uint8_t) ((q[j] & 0xf) | ((q[j + 16] & 0xf) << 4));
}

/* Q8_0 (and Q8_1, which also stores d * sum (q)): round half away from zero. */
static void
quant_q8 (const float *x, uint8_t *b, gboolean with_sum)
{
  float amax;
  float d, id;
  int sum = 0;
  int8_t *qs = (int8_t *) (b + (with_sum ? 4 : 2));

  signed_absmax (x, 32, &amax);
  d = amax / 127.0f;
  id = d == 0.0f ? 0.0f : 1.0f / d;
  for (int j = 0; j < 32; j++)
    {
      float s = x[j] * id;
      qs[j] = (int8_t) roundf (s);
      sum += qs[j];
    }
  wr_half (b, d);
  if (with_sum)
    wr_half (b + 2, (float) sum * d);
}

static void
quant_q8_k (const float *x, uint8_t *b)
{
  float amax, max = signed_absmax (x, 256, &amax);
  int8_t *qs = (int8_t *) (b + 4);
  float d = 0.0f, iscale;

  if (amax == 0.0f)
    {
      memset (b, 0, sizeof (BlnBlockQ8_K));
      return;
    }
  iscale = -127.0f / max;
  for (int j = 0; j < 256; j++)
    {
      long v = lrintf (iscale * x[j]);
      qs[j] = (int8_t) (v > 127 ? 127 : v);
    }
  for (int g = 0; g < 16; g++)
    {
      int16_t s = 0;
      for (int i = 0; i < 16; i++)
        s = (int16_t) (s + qs[g * 16 + i]);
      memcpy (b + 260 + 2 * g, &s, 2);
    }
  d = 1.0f / iscale;
  memcpy (b, &d, 4);
}

/* ---------------------------------------------------------------------------
 * Quantisation: Q4_K and Q6_K, the reference scale searches
 * ------------------------------------------------------------------------- */

/* Fits x[i] ~ scale * L[i] - min with L in [0, nmax] and min >= 0, weighted
 * by w. Starts from the plain (max - min) / nmax grid, then tries nstep
 * slightly different grid spacings; for each it rounds, solves the weighted
 * least-squares problem for (scale, min) given those levels, and keeps the
 * best. Returns the scale; *the_min gets min (a positive offset). */
static float
fit_scale_min (int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min)
{
  float min = x[0], max = x[0];
  float sum_w = w[0], sum_x = w[0] * x[0];
  float iscale, scale, best_err = 0.0f;
  uint8_t trial[32];

  g_assert (n <= 32);
  for (int i = 1; i < n; i++)
    {
      if (x[i] < min)
        min = x[i];
      if (x[i] > max)
        max = x[i];
      sum_w += w[i];
      sum_x += w[i] * x[i];
    }
  if (min > 0.0f)
    min = 0.0f;
  if (max == min)
    {
      memset (L, 0, (size_t) n);
      *the_min = -min;
      return 0.0f;
    }

  iscale = (float) nmax / (max - min);
  scale = 1.0f / iscale;
  for (int i = 0; i < n; i++)
    {
      int l = (int) lrintf (iscale * (x[i] - min));
      float diff;

      L[i] = (uint8_t) CLAMP (l, 0, nmax);
      diff = scale * L[i] + min - x[i];
      best_err += w[i] * diff * diff;
    }

  for (int step = 0; step <= 20; step++)
    {
      float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f, D;

      iscale = (-1.0f + 0.1f * step + (float) nmax) / (max - min);
      for (int i = 0; i < n; i++)
        {
          int l = CLAMP ((int) lrintf (iscale * (x[i] - min)), 0, nmax);

          trial[i] = (uint8_t) l;
          sum_l += w[i] * l;
          sum_l2 += w[i] * l * l;
          sum_xl += w[i] * l * x[i];
        }
      D = sum_w * sum_l2 - sum_l * sum_l;
      if (D > 0.0f)
        {
          float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
          float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
          float err = 0.0f;

          if (this_min > 0.0f)
            {
              this_min = 0.0f;
              this_scale = sum_xl / sum_l2;
            }
          for (int i = 0; i < n; i++)
            {
              float diff = this_scale * trial[i] + this_min - x[i];
              err += w[i] * diff * diff;
            }
          if (err < best_err)
            {
              memcpy (L, trial, (size_t) n);
              best_err = err;
              scale = this_scale;
              min = this_min;
            }
        }
    }
  *the_min = -min;
  return scale;
}

/* Fits x[i] ~ scale * (L[i] - nmax) with L in [0, 2 nmax - 1], weighting each
 * element by x[i]^2; tries grid spacings around max / nmax and keeps the
 * one whose least-squares scale explains the most of x. Returns the scale. */
static float
fit_scale_sym (int n, int nmax, const float *x, uint8_t *L)
{
  float amax, max = signed_absmax (x, n, &amax);
  float iscale, scale, best, sumlx = 0.0f, suml2 = 0.0f;

  if (amax < 1e-15f)
    {
      memset (L, 0, (size_t) n);
      return 0.0f;
    }
  iscale = -(float) nmax / max;
  for (int i = 0; i < n; i++)
    {
      int l = CLAMP ((int) lrintf (iscale * x[i]), -nmax, nmax - 1);
      float w = x[i] * x[i];

      L[i] = (uint8_t) (l + nmax);
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
  scale = suml2 > 0.0f ? sumlx / suml2 : 0.0f;
  best = scale * sumlx;
  for (int step = -9; step <= 9; step++)
    {
      if (step == 0)
        continue;
      iscale = -((float) nmax + 0.1f * step) / max;
      sumlx = suml2 = 0.0f;
      for (int i = 0; i < n; i++)
        {
          int l = CLAMP ((int) lrintf (iscale * x[i]), -nmax, nmax - 1);
          float w = x[i] * x[i];

          sumlx += w * x[i] * l;
          suml2 += w * l * l;
        }
      if (suml2 > 0.0f && sumlx * sumlx > best * suml2)
        {
          for (int i = 0; i < n; i++)
            {
              int l = CLAMP ((int) lrintf (iscale * x[i]), -nmax, nmax - 1);
              L[i] = (uint8_t) (l + nmax);
            }
          scale = sumlx / suml2;
          best = scale * sumlx;
        }
    }
  return scale;
}

static void
quant_q4_k (const float *x, uint8_t *b)
{
  uint8_t L[256];
  float scales[8], mins[8], weights[32];
  float max_scale = 0.0f, max_min = 0.0f, inv_scale, inv_min, d, dmin;
  uint8_t *sc = b + 4, *qs = b + 16;

  for (int j = 0; j < 8; j++)
    {
      const float *xs = x + 32 * j;
      float sum_x2 = 0.0f, av_x;

      for (int i = 0; i < 32; i++)
        sum_x2 += xs[i] * xs[i];
      av_x = sqrtf (sum_x2 / 32.0f);
      for (int i = 0; i < 32; i++)
        weights[i] = av_x + fabsf (xs[i]);
      scales[j] = fit_scale_min (32, 15, xs, weights, L + 32 * j, &mins[j]);
      if (scales[j] > max_scale)
        max_scale = scales[j];
      if (mins[j] > max_min)
        max_min = mins[j];
    }

  /* the eight scales and mins are themselves stored as 6-bit multiples of
   * two half-precision super-scales */
  inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
  inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
  memset (sc, 0, BLN_K_SCALE_SIZE);
  for (int j = 0; j < 8; j++)
    {
      int ls = MIN ((int) lrintf (inv_scale * scales[j]), 63);
      int lm = MIN ((int) lrintf (inv_min * mins[j]), 63);

      if (j < 4)
        {
          sc[j] = (uint8_t) ls;
          sc[j + 4] = (uint8_t) lm;
        }
      else
        {
          sc[j + 4] = (uint8_t) ((ls & 0xf) | ((lm & 0xf) << 4));
          sc[j - 4] |= (uint8_t) ((ls >> 4) << 6);
          sc[j] |= (uint8_t) ((lm >> 4) << 6);
        }
    }
  wr_half (b, max_scale / 63.0f);
  wr_half (b + 2, max_min / 63.0f);
  d = rd_half (b);
  dmin = rd_half (b + 2);

  /* re-round every value against the scales as they will be decoded */
  for (int j = 0; j < 8; j++)
    {
      int s, m;
      float ds, dm;

      k_scale_min (sc, j, &s, &m);
      ds = d * (float) s;
      if (ds == 0.0f)
        continue;
      dm = dmin * (float) m;
      for (int i = 0; i < 32; i++)
        {
          int l = (int) lrintf ((x[32 * j + i] + dm) / ds);
          L[32 * j + i] = (uint8_t) CLAMP (l, 0, 15);
        }
    }
  for (int c = 0; c < 4; c++)
    for (int i = 0; i < 32; i++)
      qs[c * 32 + i] = (uint8_t) (L[64 * c + i] | (L[64 * c + 32 + i] << 4));
}

static void
quant_q6_k (const float *x, uint8_t *b)
{
  uint8_t L[256];
  float scales[16];
  float max_scale = 0.0f, max_abs = 0.0f, iscale, d;
  uint8_t *ql = b, *qh = b + 128;
  int8_t *sc = (int8_t *) (b + 192);

  for (int s = 0; s < 16; s++)
    {
      scales[s] = fit_scale_sym (16, 32, x + 16 * s, L + 16 * s);
      if (fabsf (scales[s]) > max_abs)
        {
          max_abs = fabsf (scales[s]);
          max_scale = scales[s];
        }
    }
  if (max_abs == 0.0f)
    {
      memset (b, 0, sizeof (BlnBlockQ6_K));
      return;
    }
  iscale = -128.0f / max_scale;
  wr_half (b + 208, 1.0f / iscale);
  for (int s = 0; s < 16; s++)
    sc[s] = (int8_t) MIN (127, (int) lrintf (iscale * scales[s]));

  d = rd_half (b + 208);
  for (int s = 0; s < 16; s++)
    {
      float ds = d * (float) sc[s];

      if (ds == 0.0f)
        continue;
      for (int i = 0; i < 16; i++)
        {
          int l = (int) lrintf (x[16 * s + i] / ds);
          L[16 * s + i] = (uint8_t) (CLAMP (l, -32, 31) + 32);
        }
    }
  for (int h = 0; h < 2; h++)
    {
      const uint8_t *Lh = L + 128 * h;

      for (int i = 0; i < 32; i++)
        {
          ql[64 * h + i] = (uint8_t) ((Lh[i] & 0xf) | ((Lh[i + 64] & 0xf) << 4));
          ql[64 * h + i + 32] = (uint8_t) ((Lh[i + 32] & 0xf) | ((Lh[i + 96] & 0xf) << 4));
          qh[32 * h + i] = (uint8_t) ((Lh[i] >> 4) | ((Lh[i + 32] >> 4) << 2)
                                      | ((Lh[i + 64] >> 4) << 4) | ((Lh[i + 96] >> 4) << 6));
        }
    }
}

gboolean
bln_quantize_row (int t, const float *src, void *dst, int64_t n)
{
  const BlnTypeInfo *info = bln_type_info (t);
  uint8_t *p = dst;
  int64_t nb;

  if (!bln_type_row_bytes (t, n, NULL))
    return FALSE;
  nb = n / info->block_size;
  switch (t)
    {
    case BLN_TYPE_F32:
      memcpy (dst, src, (size_t) n * 4);
      return TRUE;
    case BLN_TYPE_F16:
      for (int64_t i = 0; i < n; i++)
        wr_half (p + 2 * i, src[i]);
      return TRUE;
    case BLN_TYPE_BF16:
      for (int64_t i = 0; i < n; i++)
        {
          uint16_t v = bln_float_to_bf16 (src[i]);
          memcpy (p + 2 * i, &v, 2);
        }
      return TRUE;
    case BLN_TYPE_Q4_0:
    case BLN_TYPE_Q5_0:
      for (int64_t i = 0; i < nb; i++)
        quant_sym (src + 32 * i, p + i * info->type_size, t == BLN_TYPE_Q4_0 ? 4 : 5);
      return TRUE;
    case BLN_TYPE_Q4_1:
    case BLN_TYPE_Q5_1:
      for (int64_t i = 0; i < nb; i++)
        quant_affine (src + 32 * i, p + i * info->type_size, t == BLN_TYPE_Q4_1 ? 4 : 5);
      return TRUE;
    case BLN_TYPE_Q8_0:
    case BLN_TYPE_Q8_1:
      for (int64_t i = 0; i < nb; i++)
        quant_q8 (src + 32 * i, p + i * info->type_size, t == BLN_TYPE_Q8_1);
      return TRUE;
    case BLN_TYPE_Q8_K:
      for (int64_t i = 0; i < nb; i++)
        quant_q8_k (src + 256 * i, p + i * info->type_size);
      return TRUE;
    case BLN_TYPE_Q4_K:
      for (int64_t i = 0; i < nb; i++)
        quant_q4_k (src + 256 * i, p + i * info->type_size);
      return TRUE;
    case BLN_TYPE_Q6_K:
      for (int64_t i = 0; i < nb; i++)
        quant_q6_k (src + 256 * i, p + i * info->type_size);
      return TRUE;
    default:
      return FALSE;
    }
}
