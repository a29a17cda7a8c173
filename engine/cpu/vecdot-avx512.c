/* cpu/vecdot-avx512.c — AVX-512 (F, BW, VL) dot products and activation quantisers.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c;
 * dispatch.c only calls in here after checking the CPU, and after filling
 * the table with the AVX2 kernels: the types not set here keep those (see
 * bln_cpu_kernels_avx512_init at the end for which, and why). Same contracts and results as
 * vecdot-scalar.c: exact integer sums per block, the float scales applied
 * once per block (legacy) or super-block (k-quants); only the order of the
 * float accumulation differs.
 *
 * The integer core is still the byte multiply-add (vpmaddubsw, then vpmaddwd
 * with ones or with the 16-bit sub-block scales), now 64 bytes wide:
 *
 *   - legacy types put two 32-value blocks in one register (lanes 0-7 of the
 *     32-bit sums belong to the first block, 8-15 to the second) and scale
 *     them with a blend of the two blocks' float scales;
 *   - k-quants lay the weights out so that one register matches 64
 *     consecutive activations (one 64-byte load per activation row), and
 *     spread the sub-block scales over the 16-bit lanes with vpermw.
 *
 * Signed weights use the sign trick as in the AVX2 file, written with
 * AVX-512 masks: |w| * (a negated where w < 0) = w * a. The activations are
 * within [-127, 127], so negating them never overflows, and |w| <= 128 keeps
 * each pair of vpmaddubsw products below the int16 limit.
 *
 * Float weights (F32, F16, BF16) handle the tail with masked loads, which do
 * not fault on the masked-off elements past the end of the row.
 */
/* GCC 12's AVX-512 headers initialise their "undefined" vectors with
 * themselves, which its -Wuninitialized reports at every inlined use (fixed
 * in later GCC releases); the warnings are about the header, not this code. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#include <string.h>

#include "vecdot.h"

#define INLINE static inline __attribute__ ((always_inline))

INLINE float
half_at (const void *p)
{
  uint16_t h;

  memcpy (&h, p, 2);
  return _cvtsh_ss (h);
}

INLINE float
hsum256_ps (__m256 v)
{
  __m128 s = _mm_add_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));

  s = _mm_add_ps (s, _mm_movehl_ps (s, s));
  s = _mm_add_ss (s, _mm_movehdup_ps (s));
  return _mm_cvtss_f32 (s);
}

/* Horizontal sums and maxima: halve the span four times with in-register
 * shuffles, then read lane 0. */
INLINE float
hsum512_ps (__m512 v)
{
  v = _mm512_add_ps (v, _mm512_shuffle_f32x4 (v, v, _MM_SHUFFLE (1, 0, 3, 2)));
  v = _mm512_add_ps (v, _mm512_shuffle_f32x4 (v, v, _MM_SHUFFLE (2, 3, 0, 1)));
  v = _mm512_add_ps (v, _mm512_permute_ps (v, _MM_SHUFFLE (1, 0, 3, 2)));
  v = _mm512_add_ps (v, _mm512_permute_ps (v, _MM_SHUFFLE (2, 3, 0, 1)));
  return _mm512_cvtss_f32 (v);
}

INLINE float
hmax512_ps (__m512 v)
{
  v = _mm512_max_ps (v, _mm512_shuffle_f32x4 (v, v, _MM_SHUFFLE (1, 0, 3, 2)));
  v = _mm512_max_ps (v, _mm512_shuffle_f32x4 (v, v, _MM_SHUFFLE (2, 3, 0, 1)));
  v = _mm512_max_ps (v, _mm512_permute_ps (v, _MM_SHUFFLE (1, 0, 3, 2)));
  v = _mm512_max_ps (v, _mm512_permute_ps (v, _MM_SHUFFLE (2, 3, 0, 1)));
  return _mm512_cvtss_f32 (v);
}

INLINE int32_t
hsum512_epi32 (__m512i v)
{
  v = _mm512_add_epi32 (v, _mm512_shuffle_i32x4 (v, v, _MM_SHUFFLE (1, 0, 3, 2)));
  v = _mm512_add_epi32 (v, _mm512_shuffle_i32x4 (v, v, _MM_SHUFFLE (2, 3, 0, 1)));
  v = _mm512_add_epi32 (v, _mm512_shuffle_epi32 (v, _MM_SHUFFLE (1, 0, 3, 2)));
  v = _mm512_add_epi32 (v, _mm512_shuffle_epi32 (v, _MM_SHUFFLE (2, 3, 0, 1)));
  return _mm512_cvtsi512_si32 (v);
}

INLINE __m256i
load256 (const void *p)
{
  return _mm256_loadu_si256 ((const __m256i *) p);
}

INLINE __m512i
load512 (const void *p)
{
  return _mm512_loadu_si512 (p);
}

/* Two 32-byte halves in one register. */
INLINE __m512i
join256 (__m256i lo, __m256i hi)
{
  return _mm512_inserti64x4 (_mm512_castsi256_si512 (lo), hi, 1);
}

/* A 256-bit vector in the low half, zeros above. */
INLINE __m512i
zext256 (__m256i v)
{
  return _mm512_inserti64x4 (_mm512_setzero_si512 (), v, 0);
}

/* Sixteen 32-bit sums of u[i] * s[i] (u unsigned bytes, s signed), each
 * over four consecutive bytes. */
INLINE __m512i
dot_us16 (__m512i u, __m512i s)
{
  return _mm512_madd_epi16 (_mm512_maddubs_epi16 (u, s), _mm512_set1_epi16 (1));
}

/* ---------------------------------------------------------------------------
 * Activation quantisers (byte-identical with the scalar ones)
 * ------------------------------------------------------------------------- */

INLINE __m512
abs512_ps (__m512 v)
{
  return _mm512_castsi512_ps (_mm512_and_si512 (_mm512_castps_si512 (v),
                                                _mm512_set1_epi32 (0x7fffffff)));
}

INLINE float
absmax_n (const float *x, int n)
{
  __m512 m = _mm512_setzero_ps ();

  /* abs (x) first: vmaxps returns its second operand when one is NaN, so a
   * NaN is skipped, as fmaxf does */
  for (int i = 0; i < n; i += 16)
    m = _mm512_max_ps (abs512_ps (_mm512_loadu_ps (x + i)), m);
  return hmax512_ps (m);
}

/* 16 floats -> 16 int32 in [-127, 127]: x * id rounded to nearest even,
 * NaN -> -127 (vmaxps returns the second operand), as q8_round does. */
INLINE __m512i
quant16 (const float *x, __m512 id)
{
  __m512 r = _mm512_mul_ps (_mm512_loadu_ps (x), id);

  r = _mm512_roundscale_ps (r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm512_max_ps (r, _mm512_set1_ps (-127.0f));
  r = _mm512_min_ps (r, _mm512_set1_ps (127.0f));
  return _mm512_cvtps_epi32 (r);
}

static void
quant_q8_avx512 (const float *x, void *dst, int64_t n)
{
  BlnActQ8 *y = dst;

  for (int64_t b = 0; b < n / BLN_QK; b++, x += BLN_QK)
    {
      float amax = absmax_n (x, BLN_QK);
      float id = amax > 0.0f ? 127.0f / amax : 0.0f;
      __m512 idv = _mm512_set1_ps (id);
      __m512i i0 = quant16 (x, idv), i1 = quant16 (x + 16, idv);

      _mm_storeu_si128 ((__m128i *) y[b].qs, _mm512_cvtepi32_epi8 (i0));
      _mm_storeu_si128 ((__m128i *) (y[b].qs + 16), _mm512_cvtepi32_epi8 (i1));
      y[b].sum = hsum512_epi32 (_mm512_add_epi32 (i0, i1));
      y[b].d = amax / 127.0f;
    }
}

static void
quant_q8k_avx512 (const float *x, void *dst, int64_t n)
{
  BlnBlockQ8_K *y = dst;

  for (int64_t b = 0; b < n / BLN_QK_K; b++, x += BLN_QK_K)
    {
      float amax = absmax_n (x, BLN_QK_K);
      float id = amax > 0.0f ? 127.0f / amax : 0.0f;
      __m512 idv = _mm512_set1_ps (id);

      /* one register is one group of 16, the unit of bsums */
      for (int g = 0; g < 16; g++)
        {
          __m512i v = quant16 (x + 16 * g, idv);

          _mm_storeu_si128 ((__m128i *) (y[b].qs + 16 * g), _mm512_cvtepi32_epi8 (v));
          y[b].bsums[g] = (int16_t) hsum512_epi32 (v);
        }
      y[b].d = amax / 127.0f;
    }
}

/* ---------------------------------------------------------------------------
 * Float weights
 * ------------------------------------------------------------------------- */

/* 16 weights from i on, as floats; only the lanes of @m are read. */
INLINE __m512
load_w16 (int t, const void *w, int64_t i, __mmask16 m)
{
  const uint16_t *h = (const uint16_t *) w + i;
  const __mmask16 all16 = 0xffff;

  if (t == BLN_TYPE_F32)
    return _mm512_maskz_loadu_ps (m, (const float *) w + i);
  if (t == BLN_TYPE_F16)
    return _mm512_maskz_cvtph_ps (all16, _mm256_maskz_loadu_epi16 (m, h));
  return _mm512_castsi512_ps (_mm512_slli_epi32 (
      _mm512_cvtepu16_epi32 (_mm256_maskz_loadu_epi16 (m, h)), 16));
}

INLINE void
dot_float_impl (const int t, int64_t n, const void *w, const void *a, size_t as, const int na,
                float *y, size_t ys)
{
  const float *x[BLN_DOT_MAX_NA];
  const __mmask16 all = 0xffff;
  int64_t i = 0;

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    x[k] = (const float *) ((const char *) a + k * as);
  if (na == 1)
    {
      __m512 s0 = _mm512_setzero_ps (), s1 = s0, s2 = s0, s3 = s0;

      for (; i + 64 <= n; i += 64)
        {
          s0 = _mm512_fmadd_ps (load_w16 (t, w, i, all), _mm512_loadu_ps (x[0] + i), s0);
          s1 = _mm512_fmadd_ps (load_w16 (t, w, i + 16, all), _mm512_loadu_ps (x[0] + i + 16),
                                s1);
          s2 = _mm512_fmadd_ps (load_w16 (t, w, i + 32, all), _mm512_loadu_ps (x[0] + i + 32),
                                s2);
          s3 = _mm512_fmadd_ps (load_w16 (t, w, i + 48, all), _mm512_loadu_ps (x[0] + i + 48),
                                s3);
        }
      for (; i < n; i += 16)
        {
          __mmask16 m = n - i >= 16 ? all : (__mmask16) ((1u << (n - i)) - 1);
          s0 = _mm512_fmadd_ps (load_w16 (t, w, i, m), _mm512_maskz_loadu_ps (m, x[0] + i), s0);
        }
      y[0] = hsum512_ps (_mm512_add_ps (_mm512_add_ps (s0, s1),
                                                  _mm512_add_ps (s2, s3)));
    }
  else
    {
      __m512 s[2][BLN_DOT_MAX_NA];

      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        s[0][k] = s[1][k] = _mm512_setzero_ps ();
      for (; i + 32 <= n; i += 32)
        {
          __m512 w0 = load_w16 (t, w, i, all), w1 = load_w16 (t, w, i + 16, all);
          #pragma GCC unroll 4
          for (int k = 0; k < na; k++)
            {
              s[0][k] = _mm512_fmadd_ps (w0, _mm512_loadu_ps (x[k] + i), s[0][k]);
              s[1][k] = _mm512_fmadd_ps (w1, _mm512_loadu_ps (x[k] + i + 16), s[1][k]);
            }
        }
      for (; i < n; i += 16)
        {
          __mmask16 m = n - i >= 16 ? all : (__mmask16) ((1u << (n - i)) - 1);
          __m512 w0 = load_w16 (t, w, i, m);
          #pragma GCC unroll 4
          for (int k = 0; k < na; k++)
            s[0][k] = _mm512_fmadd_ps (w0, _mm512_maskz_loadu_ps (m, x[k] + i), s[0][k]);
        }
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        y[k * ys] = hsum512_ps (_mm512_add_ps (s[0][k], s[1][k]));
    }
}

static float
dot_f32_avx512 (const float *a, const float *b, int64_t n)
{
  float r;

  dot_float_impl (BLN_TYPE_F32, n, a, b, 0, 1, &r, 0);
  return r;
}

static void
axpy_f32_avx512 (float *y, float a, const float *x, int64_t n)
{
  __m512 av = _mm512_set1_ps (a);
  int64_t i = 0;

  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps (y + i, _mm512_fmadd_ps (av, _mm512_loadu_ps (x + i),
                                              _mm512_loadu_ps (y + i)));
  if (i < n)
    {
      __mmask16 m = (__mmask16) ((1u << (n - i)) - 1);
      _mm512_mask_storeu_ps (y + i, m, _mm512_fmadd_ps (av, _mm512_maskz_loadu_ps (m, x + i),
                                                        _mm512_maskz_loadu_ps (m, y + i)));
    }
}

/* ---------------------------------------------------------------------------
 * Legacy quants (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against BlnActQ8, two blocks
 * per register
 * ------------------------------------------------------------------------- */

/* The 16 packed-nibble bytes of two blocks -> 64 bytes: block 0's low then
 * high nibbles, then block 1's (the order of the values in each block). */
INLINE __m512i
nibbles64 (const uint8_t *qs0, const uint8_t *qs1)
{
  __m256i u = _mm256_inserti128_si256 (
      _mm256_castsi128_si256 (_mm_loadu_si128 ((const __m128i *) qs0)),
      _mm_loadu_si128 ((const __m128i *) qs1), 1);
  __m512i z = join256 (u, u);

  /* [q0, q1, q0 >> 4, q1 >> 4] in 128-bit lanes, then lanes 0, 2, 1, 3 */
  z = _mm512_mask_srli_epi16 (z, (__mmask32) 0xffff0000u, z, 4);
  z = _mm512_shuffle_i64x2 (z, z, _MM_SHUFFLE (3, 1, 2, 0));
  return _mm512_and_si512 (z, _mm512_set1_epi8 (0x0f));
}

/* The fifth bits of two Q5 blocks (bit j of each 32-bit word is value j)
 * as a byte mask over the 64 values. */
INLINE __mmask64
bit4_mask (const uint8_t *p0, const uint8_t *p1)
{
  uint32_t h0, h1;

  memcpy (&h0, p0, 4);
  memcpy (&h1, p1, 4);
  return (__mmask64) h0 | ((__mmask64) h1 << 32);
}

/* Blocks b0 and b1 of one weight row against na activation rows. With
 * two == FALSE only b0 counts (b1 == b0 is read again and scaled by 0). */
INLINE void
legacy_pair (const int t, const uint8_t *w0, const uint8_t *w1, const char *a, size_t as,
             int64_t b0, int64_t b1, const gboolean two, const int na, __m512 *acc, float *macc)
{
  float d0 = half_at (w0), d1 = two ? half_at (w1) : 0.0f, m0 = 0.0f, m1 = 0.0f;
  gboolean sgn = TRUE;
  __m512i q, qa = _mm512_setzero_si512 ();
  __mmask64 neg = 0;

  switch (t)
    {
    case BLN_TYPE_Q4_0:
      q = _mm512_sub_epi8 (nibbles64 (w0 + 2, w1 + 2), _mm512_set1_epi8 (8));
      break;
    case BLN_TYPE_Q4_1:
      m0 = half_at (w0 + 2);
      m1 = two ? half_at (w1 + 2) : 0.0f;
      q = nibbles64 (w0 + 4, w1 + 4);
      sgn = FALSE;
      break;
    case BLN_TYPE_Q5_0:
      q = nibbles64 (w0 + 6, w1 + 6);
      q = _mm512_mask_add_epi8 (q, bit4_mask (w0 + 2, w1 + 2), q, _mm512_set1_epi8 (0x10));
      q = _mm512_sub_epi8 (q, _mm512_set1_epi8 (16));
      break;
    case BLN_TYPE_Q5_1:
      m0 = half_at (w0 + 2);
      m1 = two ? half_at (w1 + 2) : 0.0f;
      q = nibbles64 (w0 + 8, w1 + 8);
      q = _mm512_mask_add_epi8 (q, bit4_mask (w0 + 4, w1 + 4), q, _mm512_set1_epi8 (0x10));
      sgn = FALSE;
      break;
    case BLN_TYPE_Q8_0:
    default:
      q = join256 (load256 (w0 + 2), load256 (w1 + 2));
      break;
    }
  if (sgn)
    {
      qa = _mm512_abs_epi8 (q);
      neg = _mm512_movepi8_mask (q);
    }
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    {
      const BlnActQ8 *ab = (const BlnActQ8 *) (a + k * as);
      __m512i av = join256 (load256 (ab[b0].qs), load256 (ab[b1].qs));
      __m512i p;
      __m512 s = _mm512_mask_blend_ps ((__mmask16) 0xff00, _mm512_set1_ps (d0 * ab[b0].d),
                                       _mm512_set1_ps (d1 * ab[b1].d));

      if (sgn)
        p = dot_us16 (qa, _mm512_mask_sub_epi8 (av, neg, _mm512_setzero_si512 (), av));
      else
        p = dot_us16 (q, av);
      acc[k] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (p), s, acc[k]);
      if (!sgn)
        macc[k] += (m0 * ab[b0].d) * (float) ab[b0].sum
                   + (two ? (m1 * ab[b1].d) * (float) ab[b1].sum : 0.0f);
    }
}

INLINE void
dot_legacy_impl (const int t, const size_t bsize, int64_t n, const void *w, const void *a,
                 size_t as, const int na, float *y, size_t ys)
{
  __m512 acc0[BLN_DOT_MAX_NA], acc1[BLN_DOT_MAX_NA];
  float macc0[BLN_DOT_MAX_NA], macc1[BLN_DOT_MAX_NA];
  const uint8_t *wb = w;
  int64_t nb = n / BLN_QK, b = 0;

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    {
      acc0[k] = acc1[k] = _mm512_setzero_ps ();
      macc0[k] = macc1[k] = 0.0f;
    }
  /* four blocks per step, into two sets of accumulators (FMA latency) */
  for (; b + 4 <= nb; b += 4)
    {
      legacy_pair (t, wb + b * bsize, wb + (b + 1) * bsize, a, as, b, b + 1, TRUE, na,
                   acc0, macc0);
      legacy_pair (t, wb + (b + 2) * bsize, wb + (b + 3) * bsize, a, as, b + 2, b + 3, TRUE, na,
                   acc1, macc1);
    }
  if (b + 2 <= nb)
    {
      legacy_pair (t, wb + b * bsize, wb + (b + 1) * bsize, a, as, b, b + 1, TRUE, na,
                   acc0, macc0);
      b += 2;
    }
  if (b < nb)
    legacy_pair (t, wb + b * bsize, wb + b * bsize, a, as, b, b, FALSE, na, acc1, macc1);
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    y[k * ys] = hsum512_ps (_mm512_add_ps (acc0[k], acc1[k])) + (macc0[k] + macc1[k]);
}

/* ---------------------------------------------------------------------------
 * k-quants against BlnBlockQ8_K
 * ------------------------------------------------------------------------- */

INLINE const BlnBlockQ8_K *
act_k (const void *a, size_t as, int k, int64_t b)
{
  return (const BlnBlockQ8_K *) ((const char *) a + k * as) + b;
}

/* 32 int16 lanes [s[j] x 16 | s[j + 1] x 16] from the int16 scales in the
 * low lanes of @sc16 (vpermw). */
INLINE __m512i
scales_2x16 (__m512i sc16, int j)
{
  __m512i idx = _mm512_add_epi16 (
      _mm512_mask_blend_epi16 ((__mmask32) 0xffff0000u, _mm512_setzero_si512 (),
                               _mm512_set1_epi16 (1)),
      _mm512_set1_epi16 ((short) j));

  return _mm512_permutexvar_epi16 (idx, sc16);
}

/* 32 int16 lanes [s[j] x 8 | s[j+1] x 8 | s[j+2] x 8 | s[j+3] x 8]. */
INLINE __m512i
scales_4x8 (__m512i sc16, int j)
{
  __m512i idx = _mm512_add_epi16 (
      _mm512_setr_epi64 (0, 0, 0x0001000100010001LL, 0x0001000100010001LL,
                         0x0002000200020002LL, 0x0002000200020002LL,
                         0x0003000300030003LL, 0x0003000300030003LL),
      _mm512_set1_epi16 ((short) j));

  return _mm512_permutexvar_epi16 (idx, sc16);
}

/* Q4_K and Q5_K: eight 32-value sub-blocks with 6-bit scales and mins. Each
 * 32 bytes of qs hold sub-blocks 2p (low nibbles) and 2p + 1 (high), the 64
 * activations from 64 p on: one register [low | high] per p. */
INLINE void
dot_q45k_impl (const int five, int64_t n, const void *w, const void *a, size_t as, const int na,
               float *y, size_t ys)
{
  __m512 acc[BLN_DOT_MAX_NA];
  __m256 macc[BLN_DOT_MAX_NA];
  const size_t bsize = five ? sizeof (BlnBlockQ5_K) : sizeof (BlnBlockQ4_K);

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    {
      acc[k] = _mm512_setzero_ps ();
      macc[k] = _mm256_setzero_ps ();
    }
  for (int64_t b = 0; b < n / BLN_QK_K; b++)
    {
      const uint8_t *x = (const uint8_t *) w + b * bsize;
      const uint8_t *qs = x + (five ? 48 : 16);
      float d = half_at (x), dmin = half_at (x + 2);
      uint32_t u[3], sc_lo, sc_hi, mn_lo, mn_hi;
      __m128i mn8;
      __m256i mins16;
      __m512i sc16, qh = _mm512_setzero_si512 (), isum[BLN_DOT_MAX_NA];

      memcpy (u, x + 4, 12);
      /* scale j < 4: low 6 bits of byte j; j >= 4: low nibble of byte j + 4
       * and the top two bits of byte j - 4. Mins likewise, from 4 on. */
      sc_lo = u[0] & 0x3f3f3f3f;
      sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
      mn_lo = u[1] & 0x3f3f3f3f;
      mn_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
      sc16 = _mm512_castsi128_si512 (
          _mm_cvtepu8_epi16 (_mm_setr_epi32 ((int) sc_lo, (int) sc_hi, 0, 0)));
      /* each min twice: sub-block j covers bsums 2j and 2j + 1 */
      mn8 = _mm_shuffle_epi8 (_mm_setr_epi32 ((int) mn_lo, (int) mn_hi, 0, 0),
                              _mm_setr_epi8 (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
      mins16 = _mm256_cvtepu8_epi16 (mn8);
      if (five)
        {
          /* bit 2p of qh[j] is value j of sub-block 2p, bit 2p + 1 of
           * sub-block 2p + 1: [qh | qh >> 1], then bit 2p of each byte */
          __m256i h = load256 (x + 16);
          qh = join256 (h, _mm256_srli_epi16 (h, 1));
        }

      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        {
          const BlnBlockQ8_K *ab = act_k (a, as, k, b);
          __m256i mp = _mm256_madd_epi16 (load256 (ab->bsums), mins16);

          macc[k] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (mp), _mm256_set1_ps (-dmin * ab->d),
                                     macc[k]);
          isum[k] = _mm512_setzero_si512 ();
        }
      for (int p = 0; p < 4; p++)
        {
          __m256i q = load256 (qs + 32 * p);
          __m512i z = join256 (q, _mm256_srli_epi16 (q, 4));
          __m512i s = scales_2x16 (sc16, 2 * p);

          z = _mm512_and_si512 (z, _mm512_set1_epi8 (0x0f));
          if (five)
            {
              __mmask64 hb = _mm512_test_epi8_mask (qh, _mm512_set1_epi8 ((char) (1 << (2 * p))));
              z = _mm512_mask_add_epi8 (z, hb, z, _mm512_set1_epi8 (0x10));
            }
          #pragma GCC unroll 4
          for (int k = 0; k < na; k++)
            {
              const BlnBlockQ8_K *ab = act_k (a, as, k, b);
              __m512i pr = _mm512_madd_epi16 (
                  _mm512_maddubs_epi16 (z, load512 (ab->qs + 64 * p)), s);

              isum[k] = _mm512_add_epi32 (isum[k], pr);
            }
        }
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        acc[k] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (isum[k]),
                                  _mm512_set1_ps (d * act_k (a, as, k, b)->d), acc[k]);
    }
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    y[k * ys] = hsum512_ps (acc[k]) + hsum256_ps (macc[k]);
}

/* Q6_K: unsigned 6-bit q, value (q - 32) * scale; 16 signed 8-bit scales.
 * Half h (128 values) is ql[64 h, +64) and qh[32 h, +32): the low nibbles
 * of the 64 ql bytes with qh bits 0-1 / 2-3 are values 0-63 of the half,
 * the high nibbles with qh bits 4-5 / 6-7 values 64-127. With [qh | qh >> 2]
 * both take their high bits from the same places. */
INLINE void
dot_q6k_impl (int64_t n, const void *w, const void *a, size_t as, const int na, float *y,
              size_t ys)
{
  __m512 acc[BLN_DOT_MAX_NA];

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    acc[k] = _mm512_setzero_ps ();
  for (int64_t b = 0; b < n / BLN_QK_K; b++)
    {
      const BlnBlockQ6_K *x = (const BlnBlockQ6_K *) w + b;
      float d = half_at (&x->d);
      __m256i sc16 = _mm256_cvtepi8_epi16 (_mm_loadu_si128 ((const __m128i *) x->scales));
      __m512i sc512 = _mm512_castsi256_si512 (sc16);
      __m512i isum[BLN_DOT_MAX_NA];

      /* the -32 offset: isum -= 32 * sum_g scale_g * bsum_g */
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        isum[k] = zext256 (_mm256_sub_epi32 (_mm256_setzero_si256 (), _mm256_slli_epi32 (
            _mm256_madd_epi16 (load256 (act_k (a, as, k, b)->bsums), sc16), 5)));
      for (int h = 0; h < 2; h++)
        {
          __m512i ql = load512 (x->ql + 64 * h);
          __m256i qh8 = load256 (x->qh + 32 * h);
          __m512i qh = join256 (qh8, _mm256_srli_epi16 (qh8, 2));
          __m512i m4 = _mm512_set1_epi8 (0x0f);
          __m512i q[2];

          q[0] = _mm512_or_si512 (_mm512_and_si512 (ql, m4), _mm512_slli_epi16 (
              _mm512_and_si512 (qh, _mm512_set1_epi8 (0x03)), 4));
          q[1] = _mm512_or_si512 (_mm512_and_si512 (_mm512_srli_epi16 (ql, 4), m4),
                                  _mm512_and_si512 (qh, _mm512_set1_epi8 (0x30)));
          for (int i = 0; i < 2; i++)
            {
              __m512i s = scales_4x8 (sc512, 8 * h + 4 * i);
              #pragma GCC unroll 4
              for (int k = 0; k < na; k++)
                {
                  const int8_t *aq = act_k (a, as, k, b)->qs + 128 * h + 64 * i;
                  isum[k] = _mm512_add_epi32 (isum[k], _mm512_madd_epi16 (
                      _mm512_maddubs_epi16 (q[i], load512 (aq)), s));
                }
            }
        }
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        acc[k] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (isum[k]),
                                  _mm512_set1_ps (d * act_k (a, as, k, b)->d), acc[k]);
    }
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    y[k * ys] = hsum512_ps (acc[k]);
}

/* ---------------------------------------------------------------------------
 * Entry points: one specialisation per row count
 * ------------------------------------------------------------------------- */

#define KERNEL(name, call)                                                              \
  static void                                                                           \
  name (int64_t n, const void *w, const void *a, size_t as, int na, float *y, size_t ys) \
  {                                                                                     \
    switch (na)                                                                         \
      {                                                                                 \
      case 1: call (1); break;                                                          \
      case 2: call (2); break;                                                          \
      case 3: call (3); break;                                                          \
      default: call (4); break;                                                         \
      }                                                                                 \
  }

#define CALL_F32(NA) dot_float_impl (BLN_TYPE_F32, n, w, a, as, NA, y, ys)
#define CALL_F16(NA) dot_float_impl (BLN_TYPE_F16, n, w, a, as, NA, y, ys)
#define CALL_BF16(NA) dot_float_impl (BLN_TYPE_BF16, n, w, a, as, NA, y, ys)
#define CALL_Q4_0(NA) dot_legacy_impl (BLN_TYPE_Q4_0, sizeof (BlnBlockQ4_0), n, w, a, as, NA, y, ys)
#define CALL_Q4_1(NA) dot_legacy_impl (BLN_TYPE_Q4_1, sizeof (BlnBlockQ4_1), n, w, a, as, NA, y, ys)
#define CALL_Q5_0(NA) dot_legacy_impl (BLN_TYPE_Q5_0, sizeof (BlnBlockQ5_0), n, w, a, as, NA, y, ys)
#define CALL_Q5_1(NA) dot_legacy_impl (BLN_TYPE_Q5_1, sizeof (BlnBlockQ5_1), n, w, a, as, NA, y, ys)
#define CALL_Q8_0(NA) dot_legacy_impl (BLN_TYPE_Q8_0, sizeof (BlnBlockQ8_0), n, w, a, as, NA, y, ys)
#define CALL_Q4_K(NA) dot_q45k_impl (0, n, w, a, as, NA, y, ys)
#define CALL_Q5_K(NA) dot_q45k_impl (1, n, w, a, as, NA, y, ys)
#define CALL_Q6_K(NA) dot_q6k_impl (n, w, a, as, NA, y, ys)

KERNEL (dot_f32w, CALL_F32)
KERNEL (dot_f16w, CALL_F16)
KERNEL (dot_bf16w, CALL_BF16)
KERNEL (dot_q4_0, CALL_Q4_0)
KERNEL (dot_q4_1, CALL_Q4_1)
KERNEL (dot_q5_0, CALL_Q5_0)
KERNEL (dot_q5_1, CALL_Q5_1)
KERNEL (dot_q8_0, CALL_Q8_0)
KERNEL (dot_q4_k, CALL_Q4_K)
KERNEL (dot_q5_k, CALL_Q5_K)
KERNEL (dot_q6_k, CALL_Q6_K)

/* Which types take the 512-bit kernels. Q2_K and Q3_K always keep the
 * AVX2 ones that dispatch.c installs first. On a Sapphire Rapids class Xeon
 * (tools/cpu-avx512-check.sh, one thread, rows in cache) Q6_K and the float
 * types gained 15-25%, Q5_K was even, while the legacy types were 15-30%
 * slower and Q4_K 5% slower than with AVX2: their 32-byte blocks need
 * cross-lane shuffles to fill a 512-bit register, and 512-bit operations
 * issue on two ports where 256-bit ones have three. Those keep the AVX2
 * kernels unless BALEEN_CPU_AVX512=all (for the tests and for measuring on
 * other CPUs). */
void
bln_cpu_kernels_avx512_init (BlnCpuKernels *k)
{
  const char *env = g_getenv ("BALEEN_CPU_AVX512");
  gboolean all = env != NULL && strcmp (env, "all") == 0;

  k->name = "avx512";
  k->dot[BLN_TYPE_F32] = dot_f32w;
  k->dot[BLN_TYPE_F16] = dot_f16w;
  k->dot[BLN_TYPE_BF16] = dot_bf16w;
  k->dot[BLN_TYPE_Q5_K] = dot_q5_k;
  k->dot[BLN_TYPE_Q6_K] = dot_q6_k;
  if (all)
    {
      k->dot[BLN_TYPE_Q4_0] = dot_q4_0;
      k->dot[BLN_TYPE_Q4_1] = dot_q4_1;
      k->dot[BLN_TYPE_Q5_0] = dot_q5_0;
      k->dot[BLN_TYPE_Q5_1] = dot_q5_1;
      k->dot[BLN_TYPE_Q8_0] = dot_q8_0;
      k->dot[BLN_TYPE_Q4_K] = dot_q4_k;
    }
  k->quant_q8 = quant_q8_avx512;
  k->quant_q8k = quant_q8k_avx512;
  k->dot_f32 = dot_f32_avx512;
  k->axpy_f32 = axpy_f32_avx512;
}
