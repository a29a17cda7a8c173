/* cpu/vecdot-avx2.c — AVX2 + FMA + F16C dot products and activation quantisers.
 *
 * Compiled with -mavx2 -mfma -mf16c; dispatch.c only calls in here after
 * checking the CPU. Same contracts and results as vecdot-scalar.c (the sums
 * are exact integers per block in both; only the float accumulation order
 * differs).
 *
 * The integer core is the byte multiply-add: _mm256_maddubs_epi16 multiplies
 * 32 unsigned weight bytes by 32 signed activation bytes and adds adjacent
 * pairs to 16-bit lanes; _mm256_madd_epi16 with ones (or with the sub-block
 * scales) widens to eight 32-bit lanes. Signed weights use the sign trick:
 * |w| * (a * sign w) = w * a. Unsigned weights with an offset (Q6_K's -32,
 * Q3_K's -4) subtract offset * (scale * sum of the activations), using the
 * per-16 sums stored in the Q8_K blocks.
 *
 * Each kernel decodes a weight block once and dots it with up to four
 * activation rows (the `na` argument, a compile-time constant inside the
 * always-inlined bodies; the loops over it are unrolled so that the
 * accumulators stay in registers), so prefill reads each weight row once per
 * four tokens.
 */
#include <immintrin.h>
#include <string.h>

#include "vecdot.h"

#define INLINE static inline __attribute__ ((always_inline))

INLINE float
hsum_ps (__m256 v)
{
  __m128 s = _mm_add_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));

  s = _mm_add_ps (s, _mm_movehl_ps (s, s));
  s = _mm_add_ss (s, _mm_movehdup_ps (s));
  return _mm_cvtss_f32 (s);
}

INLINE int32_t
hsum_epi32 (__m256i v)
{
  __m128i s = _mm_add_epi32 (_mm256_castsi256_si128 (v), _mm256_extracti128_si256 (v, 1));

  s = _mm_add_epi32 (s, _mm_unpackhi_epi64 (s, s));
  s = _mm_add_epi32 (s, _mm_shuffle_epi32 (s, 1));
  return _mm_cvtsi128_si32 (s);
}

INLINE float
half_at (const void *p)
{
  uint16_t h;

  memcpy (&h, p, 2);
  return _cvtsh_ss (h);
}

INLINE __m256i
load256 (const void *p)
{
  return _mm256_loadu_si256 ((const __m256i *) p);
}

/* 16 bytes of packed nibbles -> 32 bytes: low nibbles then high nibbles,
 * the order of the legacy blocks' values. */
INLINE __m256i
nibbles32 (const uint8_t *qs)
{
  __m128i t = _mm_loadu_si128 ((const __m128i *) qs);
  __m256i v = _mm256_inserti128_si256 (_mm256_castsi128_si256 (t), _mm_srli_epi16 (t, 4), 1);

  return _mm256_and_si256 (v, _mm256_set1_epi8 (0x0f));
}

/* Bit j of the 32-bit little-endian word at p -> byte j is 0x10 or 0. */
INLINE __m256i
bit4_bytes (const uint8_t *p)
{
  uint32_t bits;
  __m256i v, sel;

  memcpy (&bits, p, 4);
  v = _mm256_set1_epi32 ((int) bits);
  /* byte j takes byte j / 8 of the word */
  v = _mm256_shuffle_epi8 (v, _mm256_setr_epi64x (0, 0x0101010101010101LL,
                                                 0x0202020202020202LL, 0x0303030303030303LL));
  sel = _mm256_set1_epi64x ((long long) 0x8040201008040201ULL);
  v = _mm256_cmpeq_epi8 (_mm256_and_si256 (v, sel), sel);
  return _mm256_and_si256 (v, _mm256_set1_epi8 (0x10));
}

/* Eight 32-bit sums of u[i] * s[i] (u unsigned bytes, s signed). */
INLINE __m256i
dot_us8 (__m256i u, __m256i s)
{
  return _mm256_madd_epi16 (_mm256_maddubs_epi16 (u, s), _mm256_set1_epi16 (1));
}

/* ---------------------------------------------------------------------------
 * Activation quantisers (bit-identical with the scalar ones)
 * ------------------------------------------------------------------------- */

INLINE __m256
abs_ps (__m256 v)
{
  return _mm256_andnot_ps (_mm256_set1_ps (-0.0f), v);
}

INLINE float
hmax_ps (__m256 v)
{
  __m128 s = _mm_max_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));

  s = _mm_max_ps (s, _mm_movehl_ps (s, s));
  s = _mm_max_ss (s, _mm_movehdup_ps (s));
  return _mm_cvtss_f32 (s);
}

/* 32 floats -> 32 int8 (stored at q); returns the sum of the integers. */
INLINE int32_t
quant32 (const float *x, __m256 id, int8_t *q)
{
  __m256i i[4], p01, p23, p;

  for (int k = 0; k < 4; k++)
    {
      __m256 r = _mm256_mul_ps (_mm256_loadu_ps (x + 8 * k), id);
      r = _mm256_round_ps (r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      r = _mm256_max_ps (r, _mm256_set1_ps (-127.0f));   /* NaN -> -127, as fmaxf */
      r = _mm256_min_ps (r, _mm256_set1_ps (127.0f));
      i[k] = _mm256_cvtps_epi32 (r);
    }
  p01 = _mm256_packs_epi32 (i[0], i[1]);
  p23 = _mm256_packs_epi32 (i[2], i[3]);
  p = _mm256_packs_epi16 (p01, p23);
  p = _mm256_permutevar8x32_epi32 (p, _mm256_setr_epi32 (0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256 ((__m256i *) q, p);
  return hsum_epi32 (_mm256_add_epi32 (_mm256_add_epi32 (i[0], i[1]),
                                       _mm256_add_epi32 (i[2], i[3])));
}

INLINE float
absmax_n (const float *x, int n)
{
  __m256 m = _mm256_setzero_ps ();

  /* abs (x) first: max_ps returns its second operand when one is NaN */
  for (int i = 0; i < n; i += 8)
    m = _mm256_max_ps (abs_ps (_mm256_loadu_ps (x + i)), m);
  return hmax_ps (m);
}

static void
quant_q8_avx2 (const float *x, void *dst, int64_t n)
{
  BlnActQ8 *y = dst;

  for (int64_t b = 0; b < n / BLN_QK; b++, x += BLN_QK)
    {
      float amax = absmax_n (x, BLN_QK);
      float id = amax > 0.0f ? 127.0f / amax : 0.0f;

      y[b].sum = quant32 (x, _mm256_set1_ps (id), y[b].qs);
      y[b].d = amax / 127.0f;
    }
}

static void
quant_q8k_avx2 (const float *x, void *dst, int64_t n)
{
  BlnBlockQ8_K *y = dst;

  for (int64_t b = 0; b < n / BLN_QK_K; b++, x += BLN_QK_K)
    {
      float amax = absmax_n (x, BLN_QK_K);
      float id = amax > 0.0f ? 127.0f / amax : 0.0f;
      __m256 idv = _mm256_set1_ps (id);

      for (int c = 0; c < 8; c++)
        quant32 (x + 32 * c, idv, y[b].qs + 32 * c);
      for (int g = 0; g < 16; g++)
        {
          __m256i v = _mm256_cvtepi8_epi16 (_mm_loadu_si128 ((const __m128i *) (y[b].qs + 16 * g)));
          __m256i s = _mm256_madd_epi16 (v, _mm256_set1_epi16 (1));
          y[b].bsums[g] = (int16_t) hsum_epi32 (s);
        }
      y[b].d = amax / 127.0f;
    }
}

/* ---------------------------------------------------------------------------
 * Float weights
 * ------------------------------------------------------------------------- */

INLINE __m256
load_w8 (int t, const void *w, int64_t i)
{
  if (t == BLN_TYPE_F32)
    return _mm256_loadu_ps ((const float *) w + i);
  if (t == BLN_TYPE_F16)
    return _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) ((const uint16_t *) w + i)));
  return _mm256_castsi256_ps (_mm256_slli_epi32 (
      _mm256_cvtepu16_epi32 (_mm_loadu_si128 ((const __m128i *) ((const uint16_t *) w + i))), 16));
}

INLINE float
load_w1 (int t, const void *w, int64_t i)
{
  uint16_t h;
  uint32_t u;
  float f;

  if (t == BLN_TYPE_F32)
    return ((const float *) w)[i];
  h = ((const uint16_t *) w)[i];
  if (t == BLN_TYPE_F16)
    return _cvtsh_ss (h);
  u = (uint32_t) h << 16;
  memcpy (&f, &u, 4);
  return f;
}

INLINE void
dot_float_impl (const int t, int64_t n, const void *w, const void *a, size_t as, const int na,
                float *y, size_t ys)
{
  const float *x[BLN_DOT_MAX_NA];
  int64_t i = 0;

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    x[k] = (const float *) ((const char *) a + k * as);
  if (na == 1)
    {
      __m256 s0 = _mm256_setzero_ps (), s1 = s0, s2 = s0, s3 = s0;
      float tail = 0.0f;

      for (; i + 32 <= n; i += 32)
        {
          s0 = _mm256_fmadd_ps (load_w8 (t, w, i), _mm256_loadu_ps (x[0] + i), s0);
          s1 = _mm256_fmadd_ps (load_w8 (t, w, i + 8), _mm256_loadu_ps (x[0] + i + 8), s1);
          s2 = _mm256_fmadd_ps (load_w8 (t, w, i + 16), _mm256_loadu_ps (x[0] + i + 16), s2);
          s3 = _mm256_fmadd_ps (load_w8 (t, w, i + 24), _mm256_loadu_ps (x[0] + i + 24), s3);
        }
      for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps (load_w8 (t, w, i), _mm256_loadu_ps (x[0] + i), s0);
      for (; i < n; i++)
        tail += load_w1 (t, w, i) * x[0][i];
      y[0] = hsum_ps (_mm256_add_ps (_mm256_add_ps (s0, s1), _mm256_add_ps (s2, s3))) + tail;
    }
  else
    {
      __m256 s[2][BLN_DOT_MAX_NA];
      float tail[BLN_DOT_MAX_NA] = { 0 };

      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        s[0][k] = s[1][k] = _mm256_setzero_ps ();
      for (; i + 16 <= n; i += 16)
        {
          __m256 w0 = load_w8 (t, w, i), w1 = load_w8 (t, w, i + 8);
          #pragma GCC unroll 4
          for (int k = 0; k < na; k++)
            {
              s[0][k] = _mm256_fmadd_ps (w0, _mm256_loadu_ps (x[k] + i), s[0][k]);
              s[1][k] = _mm256_fmadd_ps (w1, _mm256_loadu_ps (x[k] + i + 8), s[1][k]);
            }
        }
      for (; i < n; i++)
        {
          float wv = load_w1 (t, w, i);
          #pragma GCC unroll 4
          for (int k = 0; k < na; k++)
            tail[k] += wv * x[k][i];
        }
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        y[k * ys] = hsum_ps (_mm256_add_ps (s[0][k], s[1][k])) + tail[k];
    }
}

static float
dot_f32_avx2 (const float *a, const float *b, int64_t n)
{
  float r;

  dot_float_impl (BLN_TYPE_F32, n, a, b, 0, 1, &r, 0);
  return r;
}

static void
axpy_f32_avx2 (float *y, float a, const float *x, int64_t n)
{
  __m256 av = _mm256_set1_ps (a);
  int64_t i = 0;

  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps (y + i, _mm256_fmadd_ps (av, _mm256_loadu_ps (x + i),
                                              _mm256_loadu_ps (y + i)));
  for (; i < n; i++)
    y[i] += a * x[i];
}

/* ---------------------------------------------------------------------------
 * Legacy quants (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against BlnActQ8
 * ------------------------------------------------------------------------- */

/* One weight block against na activation blocks, accumulating into acc[]
 * (the scaled integer dot) and macc[] (the min term of the affine types). */
INLINE void
legacy_block (const int t, const uint8_t *wb, const char *a, size_t as, int64_t b, const int na,
              __m256 *acc, float *macc)
{
  float d = half_at (wb), m = 0.0f;
  gboolean sgn = TRUE;
  __m256i q, qa = _mm256_setzero_si256 ();

  switch (t)
    {
    case BLN_TYPE_Q4_0:
      q = _mm256_sub_epi8 (nibbles32 (wb + 2), _mm256_set1_epi8 (8));
      break;
    case BLN_TYPE_Q4_1:
      m = half_at (wb + 2);
      q = nibbles32 (wb + 4);
      sgn = FALSE;
      break;
    case BLN_TYPE_Q5_0:
      q = _mm256_or_si256 (nibbles32 (wb + 6), bit4_bytes (wb + 2));
      q = _mm256_sub_epi8 (q, _mm256_set1_epi8 (16));
      break;
    case BLN_TYPE_Q5_1:
      m = half_at (wb + 2);
      q = _mm256_or_si256 (nibbles32 (wb + 8), bit4_bytes (wb + 4));
      sgn = FALSE;
      break;
    case BLN_TYPE_Q8_0:
    default:
      q = load256 (wb + 2);
      break;
    }
  if (sgn)
    qa = _mm256_sign_epi8 (q, q);
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    {
      const BlnActQ8 *ab = (const BlnActQ8 *) (a + k * as) + b;
      __m256i av = load256 (ab->qs);
      __m256i p = sgn ? dot_us8 (qa, _mm256_sign_epi8 (av, q)) : dot_us8 (q, av);

      acc[k] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (p), _mm256_set1_ps (d * ab->d), acc[k]);
      if (!sgn)
        macc[k] += (m * ab->d) * (float) ab->sum;
    }
}

INLINE void
dot_legacy_impl (const int t, const size_t bsize, int64_t n, const void *w, const void *a,
                 size_t as, const int na, float *y, size_t ys)
{
  __m256 acc0[BLN_DOT_MAX_NA], acc1[BLN_DOT_MAX_NA];
  float macc0[BLN_DOT_MAX_NA], macc1[BLN_DOT_MAX_NA];
  const uint8_t *wb = w;
  int64_t nb = n / BLN_QK, b = 0;

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    {
      acc0[k] = acc1[k] = _mm256_setzero_ps ();
      macc0[k] = macc1[k] = 0.0f;
    }
  /* two blocks per step, into two sets of accumulators: hides the latency
   * of the FMA and of the scalar adds of the min terms */
  for (; b + 2 <= nb; b += 2)
    {
      legacy_block (t, wb + b * bsize, a, as, b, na, acc0, macc0);
      legacy_block (t, wb + (b + 1) * bsize, a, as, b + 1, na, acc1, macc1);
    }
  if (b < nb)
    legacy_block (t, wb + b * bsize, a, as, b, na, acc0, macc0);
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    y[k * ys] = hsum_ps (_mm256_add_ps (acc0[k], acc1[k])) + (macc0[k] + macc1[k]);
}

/* ---------------------------------------------------------------------------
 * k-quants against BlnBlockQ8_K
 * ------------------------------------------------------------------------- */

/* int16 vector [s[2c] x 8 | s[2c+1] x 8] from 16 scale bytes (signed). */
INLINE __m256i
scale_pair (__m128i sc8, int c)
{
  /* built by an add, so that it is cheap when c is not a constant */
  __m128i m = _mm_add_epi8 (_mm_setr_epi8 (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                            _mm_set1_epi8 ((char) (2 * c)));

  return _mm256_cvtepi8_epi16 (_mm_shuffle_epi8 (sc8, m));
}

INLINE const BlnBlockQ8_K *
act_k (const void *a, size_t as, int k, int64_t b)
{
  return (const BlnBlockQ8_K *) ((const char *) a + k * as) + b;
}

/* Q4_K and Q5_K: eight 32-value sub-blocks with 6-bit scales and mins. */
INLINE void
dot_q45k_impl (const int five, int64_t n, const void *w, const void *a, size_t as, const int na,
               float *y, size_t ys)
{
  __m256 acc[BLN_DOT_MAX_NA];
  const size_t bsize = five ? sizeof (BlnBlockQ5_K) : sizeof (BlnBlockQ4_K);

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    acc[k] = _mm256_setzero_ps ();
  for (int64_t b = 0; b < n / BLN_QK_K; b++)
    {
      const uint8_t *x = (const uint8_t *) w + b * bsize;
      const uint8_t *qs = x + (five ? 48 : 16);
      float d = half_at (x), dmin = half_at (x + 2);
      uint32_t u[3], sc_lo, sc_hi, mn_lo, mn_hi;
      __m128i sc8, mn8;
      __m256i mins16, isum[BLN_DOT_MAX_NA], qh = _mm256_setzero_si256 ();

      memcpy (u, x + 4, 12);
      /* scale j < 4: low 6 bits of byte j; j >= 4: low nibble of byte j + 4
       * and the top two bits of byte j - 4. Mins likewise, from 4 on. */
      sc_lo = u[0] & 0x3f3f3f3f;
      sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
      mn_lo = u[1] & 0x3f3f3f3f;
      mn_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
      /* each scale twice: scale_pair (sc8, j) is then [s_j x 16] */
      sc8 = _mm_shuffle_epi8 (_mm_setr_epi32 ((int) sc_lo, (int) sc_hi, 0, 0),
                              _mm_setr_epi8 (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
      mn8 = _mm_shuffle_epi8 (_mm_setr_epi32 ((int) mn_lo, (int) mn_hi, 0, 0),
                              _mm_setr_epi8 (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
      mins16 = _mm256_cvtepu8_epi16 (mn8);
      if (five)
        qh = load256 (x + 16);

      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        {
          const BlnBlockQ8_K *ab = act_k (a, as, k, b);
          __m256i mp = _mm256_madd_epi16 (load256 (ab->bsums), mins16);

          acc[k] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (mp), _mm256_set1_ps (-dmin * ab->d),
                                    acc[k]);
          isum[k] = _mm256_setzero_si256 ();
        }
      for (int p = 0; p < 4; p++)
        {
          __m256i q = load256 (qs + 32 * p);
          __m256i lo = _mm256_and_si256 (q, _mm256_set1_epi8 (0x0f));
          __m256i hi = _mm256_and_si256 (_mm256_srli_epi16 (q, 4), _mm256_set1_epi8 (0x0f));
          __m256i s_lo = scale_pair (sc8, 2 * p), s_hi = scale_pair (sc8, 2 * p + 1);

          if (five)
            {
              lo = _mm256_or_si256 (lo, _mm256_slli_epi16 (
                  _mm256_and_si256 (qh, _mm256_set1_epi8 (1)), 4));
              hi = _mm256_or_si256 (hi, _mm256_slli_epi16 (
                  _mm256_and_si256 (qh, _mm256_set1_epi8 (2)), 3));
              qh = _mm256_srli_epi16 (qh, 2);
            }
          #pragma GCC unroll 4
          for (int k = 0; k < na; k++)
            {
              const BlnBlockQ8_K *ab = act_k (a, as, k, b);
              __m256i pl = _mm256_madd_epi16 (
                  _mm256_maddubs_epi16 (lo, load256 (ab->qs + 64 * p)), s_lo);
              __m256i ph = _mm256_madd_epi16 (
                  _mm256_maddubs_epi16 (hi, load256 (ab->qs + 64 * p + 32)), s_hi);

              isum[k] = _mm256_add_epi32 (isum[k], _mm256_add_epi32 (pl, ph));
            }
        }
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        acc[k] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (isum[k]),
                                  _mm256_set1_ps (d * act_k (a, as, k, b)->d), acc[k]);
    }
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    y[k * ys] = hsum_ps (acc[k]);
}

/* Q6_K: unsigned 6-bit q, value (q - 32) * scale; 16 signed 8-bit scales. */
INLINE void
dot_q6k_impl (int64_t n, const void *w, const void *a, size_t as, const int na, float *y,
              size_t ys)
{
  __m256 acc[BLN_DOT_MAX_NA];

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    acc[k] = _mm256_setzero_ps ();
  for (int64_t b = 0; b < n / BLN_QK_K; b++)
    {
      const BlnBlockQ6_K *x = (const BlnBlockQ6_K *) w + b;
      float d = half_at (&x->d);
      __m128i sc8 = _mm_loadu_si128 ((const __m128i *) x->scales);
      __m256i sc16 = _mm256_cvtepi8_epi16 (sc8);
      __m256i isum[BLN_DOT_MAX_NA];

      /* the -32 offset: isum -= 32 * sum_g scale_g * bsum_g */
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        isum[k] = _mm256_sub_epi32 (_mm256_setzero_si256 (), _mm256_slli_epi32 (
            _mm256_madd_epi16 (load256 (act_k (a, as, k, b)->bsums), sc16), 5));
      for (int h = 0; h < 2; h++)
        {
          __m256i ql0 = load256 (x->ql + 64 * h), ql1 = load256 (x->ql + 64 * h + 32);
          __m256i qh = load256 (x->qh + 32 * h);
          __m256i m4 = _mm256_set1_epi8 (0x0f);
          __m256i q[4];

          q[0] = _mm256_or_si256 (_mm256_and_si256 (ql0, m4), _mm256_slli_epi16 (
              _mm256_and_si256 (qh, _mm256_set1_epi8 (0x03)), 4));
          q[1] = _mm256_or_si256 (_mm256_and_si256 (ql1, m4), _mm256_slli_epi16 (
              _mm256_and_si256 (qh, _mm256_set1_epi8 (0x0c)), 2));
          q[2] = _mm256_or_si256 (_mm256_and_si256 (_mm256_srli_epi16 (ql0, 4), m4),
                                  _mm256_and_si256 (qh, _mm256_set1_epi8 (0x30)));
          q[3] = _mm256_or_si256 (_mm256_and_si256 (_mm256_srli_epi16 (ql1, 4), m4),
                                  _mm256_and_si256 (_mm256_srli_epi16 (qh, 2),
                                                    _mm256_set1_epi8 (0x30)));
          for (int i = 0; i < 4; i++)
            {
              __m256i s = scale_pair (sc8, 4 * h + i);
              #pragma GCC unroll 4
              for (int k = 0; k < na; k++)
                {
                  const int8_t *aq = act_k (a, as, k, b)->qs + 128 * h + 32 * i;
                  isum[k] = _mm256_add_epi32 (isum[k], _mm256_madd_epi16 (
                      _mm256_maddubs_epi16 (q[i], load256 (aq)), s));
                }
            }
        }
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        acc[k] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (isum[k]),
                                  _mm256_set1_ps (d * act_k (a, as, k, b)->d), acc[k]);
    }
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    y[k * ys] = hsum_ps (acc[k]);
}

/* Q2_K and Q3_K: 2-bit fields four to a byte (value 128 h + 32 i + j is
 * bits 2i of byte 32 h + j), 16 scales. Q2_K: value d * sc * q - dmin * mn,
 * 4-bit sc and mn. Q3_K: a high bit from hmask (bit 4 h + i of byte j; clear
 * means subtract 4), 6-bit scales offset by 32. */
INLINE void
dot_q23k_impl (const int three, int64_t n, const void *w, const void *a, size_t as, const int na,
               float *y, size_t ys)
{
  __m256 acc[BLN_DOT_MAX_NA];
  const size_t bsize = three ? sizeof (BlnBlockQ3_K) : sizeof (BlnBlockQ2_K);

  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    acc[k] = _mm256_setzero_ps ();
  for (int64_t b = 0; b < n / BLN_QK_K; b++)
    {
      const uint8_t *x = (const uint8_t *) w + b * bsize;
      const uint8_t *qs = three ? x + 32 : x + 16;
      float d, dmin = 0.0f;
      __m128i sc8;
      __m256i sc16, hm = _mm256_setzero_si256 (), isum[BLN_DOT_MAX_NA];

      if (three)
        {
          uint32_t u[3];
          memcpy (u, x + 96, 12);
          d = half_at (x + 108);
          sc8 = _mm_setr_epi32 ((int) ((u[0] & 0x0f0f0f0f) | ((u[2] & 0x03030303) << 4)),
                                (int) ((u[1] & 0x0f0f0f0f) | ((u[2] & 0x0c0c0c0c) << 2)),
                                (int) (((u[0] >> 4) & 0x0f0f0f0f) | (u[2] & 0x30303030)),
                                (int) (((u[1] >> 4) & 0x0f0f0f0f) | ((u[2] >> 2) & 0x30303030)));
          sc8 = _mm_sub_epi8 (sc8, _mm_set1_epi8 (32));
          sc16 = _mm256_cvtepi8_epi16 (sc8);
          hm = load256 (x);
          /* the -4 offset: isum -= 4 * sum_g scale_g * bsum_g */
          #pragma GCC unroll 4
          for (int k = 0; k < na; k++)
            isum[k] = _mm256_sub_epi32 (_mm256_setzero_si256 (), _mm256_slli_epi32 (
                _mm256_madd_epi16 (load256 (act_k (a, as, k, b)->bsums), sc16), 2));
        }
      else
        {
          __m128i raw = _mm_loadu_si128 ((const __m128i *) x);
          __m256i mn16 = _mm256_cvtepu8_epi16 (
              _mm_and_si128 (_mm_srli_epi16 (raw, 4), _mm_set1_epi8 (0x0f)));
          d = half_at (x + 80);
          dmin = half_at (x + 82);
          sc8 = _mm_and_si128 (raw, _mm_set1_epi8 (0x0f));
          #pragma GCC unroll 4
          for (int k = 0; k < na; k++)
            {
              const BlnBlockQ8_K *ab = act_k (a, as, k, b);
              __m256i mp = _mm256_madd_epi16 (load256 (ab->bsums), mn16);
              acc[k] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (mp), _mm256_set1_ps (-dmin * ab->d),
                                        acc[k]);
              isum[k] = _mm256_setzero_si256 ();
            }
        }
      for (int h = 0; h < 2; h++)
        {
          __m256i raw = load256 (qs + 32 * h);
          for (int i = 0; i < 4; i++)
            {
              __m256i q = _mm256_and_si256 (raw, _mm256_set1_epi8 (3));
              __m256i s = scale_pair (sc8, 4 * h + i);

              raw = _mm256_srli_epi16 (raw, 2);
              if (three)
                {
                  q = _mm256_or_si256 (q, _mm256_slli_epi16 (
                      _mm256_and_si256 (hm, _mm256_set1_epi8 (1)), 2));
                  hm = _mm256_srli_epi16 (hm, 1);
                }
              #pragma GCC unroll 4
              for (int k = 0; k < na; k++)
                {
                  const int8_t *aq = act_k (a, as, k, b)->qs + 128 * h + 32 * i;
                  isum[k] = _mm256_add_epi32 (isum[k], _mm256_madd_epi16 (
                      _mm256_maddubs_epi16 (q, load256 (aq)), s));
                }
            }
        }
      #pragma GCC unroll 4
      for (int k = 0; k < na; k++)
        acc[k] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (isum[k]),
                                  _mm256_set1_ps (d * act_k (a, as, k, b)->d), acc[k]);
    }
  #pragma GCC unroll 4
  for (int k = 0; k < na; k++)
    y[k * ys] = hsum_ps (acc[k]);
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
#define CALL_Q2_K(NA) dot_q23k_impl (0, n, w, a, as, NA, y, ys)
#define CALL_Q3_K(NA) dot_q23k_impl (1, n, w, a, as, NA, y, ys)
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
KERNEL (dot_q2_k, CALL_Q2_K)
KERNEL (dot_q3_k, CALL_Q3_K)
KERNEL (dot_q4_k, CALL_Q4_K)
KERNEL (dot_q5_k, CALL_Q5_K)
KERNEL (dot_q6_k, CALL_Q6_K)

void
bln_cpu_kernels_avx2_init (BlnCpuKernels *k)
{
  k->name = "avx2";
  k->dot[BLN_TYPE_F32] = dot_f32w;
  k->dot[BLN_TYPE_F16] = dot_f16w;
  k->dot[BLN_TYPE_BF16] = dot_bf16w;
  k->dot[BLN_TYPE_Q4_0] = dot_q4_0;
  k->dot[BLN_TYPE_Q4_1] = dot_q4_1;
  k->dot[BLN_TYPE_Q5_0] = dot_q5_0;
  k->dot[BLN_TYPE_Q5_1] = dot_q5_1;
  k->dot[BLN_TYPE_Q8_0] = dot_q8_0;
  k->dot[BLN_TYPE_Q2_K] = dot_q2_k;
  k->dot[BLN_TYPE_Q3_K] = dot_q3_k;
  k->dot[BLN_TYPE_Q4_K] = dot_q4_k;
  k->dot[BLN_TYPE_Q5_K] = dot_q5_k;
  k->dot[BLN_TYPE_Q6_K] = dot_q6_k;
  k->quant_q8 = quant_q8_avx2;
  k->quant_q8k = quant_q8k_avx2;
  k->dot_f32 = dot_f32_avx2;
  k->axpy_f32 = axpy_f32_avx2;
}
