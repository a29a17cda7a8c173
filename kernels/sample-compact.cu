/* kernels/sample-compact.cu — compact sampling records; see sample-compact.h.
 *
 * One block of TPB threads per row. What a block does, pass by pass over its
 * row (each pass reads the row once, strided by thread so that a warp reads
 * consecutive floats):
 *   0. (rows with a history and T > 0) the history ids go into a bitmap;
 *   1. count of non-NaN logits, raw max, max over the tokens outside the
 *      history, and the histogram of the top 8 bits of each logit's
 *      order-preserving key (the float's bits, sign-flipped so that unsigned
 *      order is float order; -0 is mapped to +0 first);
 *   2. sum of exp (l - max) in double (the raw log-sum-exp), sum of
 *      exp (l / T - t_max) in double over the tokens outside the history,
 *      and the histogram of the next 8 bits among the keys that share the
 *      digit chosen after pass 1;
 *   3, 4. the last two 8-bit digits: together a radix select that finds the
 *      exact key of rank K + 1 (counted from the top) and how many keys are
 *      strictly above it, never sorting the row;
 *   5. gather: keys above the (K+1)-th go to slots by a shared counter;
 *      keys equal to it fill the remaining slots in id order (a block-wide
 *      ordered scan per chunk of TPB tokens), so ties at the boundary keep
 *      the smallest ids, as the sampler's total order wants.
 * The K (key, id) pairs are then sorted in shared memory by a bitonic sort
 * on 64-bit composites (key high, ~id low: descending composite order is
 * larger logit first, smaller id on a tie), and written out with the raw
 * values read back from the row (so -0 stays -0). A row with at most K
 * non-NaN logits skips the select and lists them all.
 *
 * Temperature division is __fdiv_rn (what the CPU's IEEE division gives);
 * exp() is CUDA's double exp, within an ulp of the C library's, and the sums
 * run in another order than the CPU's, so raw_lse and t_sum match the CPU's
 * to about 1e-15 relative (docs/GPU-SAMPLING.md says what that can change).
 */
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "sample-compact.h"

namespace {

constexpr int TPB = 512;
constexpr int WARPS = TPB / 32;

__device__ __forceinline__ uint32_t
key_of (float f)
{
  uint32_t b = __float_as_uint (f);

  if ((b & 0x7fffffffu) == 0)
    b = 0;      /* -0 is +0 in the sampler's order */
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float
float_of (uint32_t k)
{
  return __uint_as_float ((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* The sampler's scaling: l / T, +inf clamped; false for NaN or -inf. */
__device__ __forceinline__ bool
scale (float l, float T, float *out)
{
  if (isnan (l) || l == -INFINITY)
    return false;
  if (T != 1.0f)
    {
      l = __fdiv_rn (l, T);
      if (isnan (l) || l == -INFINITY)
        return false;
    }
  *out = l > FLT_MAX ? FLT_MAX : l;
  return true;
}

struct Sum {
  template <class T> __device__ T operator() (T a, T b) const { return a + b; }
};
struct Max {
  __device__ float operator() (float a, float b) const { return fmaxf (a, b); }
};

template <class T, class Op>
__device__ T
block_reduce (T v, Op op, T *sh)
{
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;

  for (int o = 16; o > 0; o >>= 1)
    v = op (v, __shfl_xor_sync (0xffffffffu, v, o));
  __syncthreads ();
  if (lane == 0)
    sh[w] = v;
  __syncthreads ();
  v = sh[0];
  for (int i = 1; i < WARPS; i++)
    v = op (v, sh[i]);
  return v;
}

struct Sel {
  uint32_t prefix, mask;
  int rank;       /* remaining rank among keys matching prefix, 1-based from the top */
  int above;      /* keys strictly above the prefix's bucket so far */
};

/* After a histogram of one digit (at @shift): picks the bucket that holds
 * the rank. One thread. */
__device__ void
pick_digit (const int *hist, int shift, Sel *s)
{
  int cum = 0;

  for (int b = 255; b >= 0; b--)
    {
      if (cum + hist[b] >= s->rank)
        {
          s->rank -= cum;
          s->above += cum;
          s->prefix |= (uint32_t) b << shift;
          s->mask |= 255u << shift;
          return;
        }
      cum += hist[b];
    }
}

__global__ void __launch_bounds__ (TPB)
k_compact (const float *logits, size_t stride, int V, int K, const float *temps,
           const int32_t *hist_off, const int32_t *hist_ids, int32_t *out_ids, float *out_vals,
           BlnCompactStats *stats, float *hist_vals, uint32_t *bitmaps)
{
  __shared__ int hist[256];
  __shared__ unsigned long long buf[BLN_KERNELS_COMPACT_MAX_K];
  __shared__ double red_d[WARPS];
  __shared__ float red_f[WARPS];
  __shared__ int red_i[WARPS];
  __shared__ int warp_cnt[WARPS];
  __shared__ Sel sel;
  __shared__ int n_slot, eq_base;
  const int r = blockIdx.x, tid = threadIdx.x;
  const float *row = logits + (size_t) r * stride;
  const float T = temps[r];
  const bool scaled = T > 0.0f;
  const int h0 = hist_off != nullptr ? hist_off[r] : 0;
  const int h1 = hist_off != nullptr ? hist_off[r + 1] : 0;
  const bool use_bits = scaled && h1 > h0;
  const int words = (V + 31) / 32;
  uint32_t *bits = bitmaps + (size_t) r * words;
  int n_valid = 0;
  float mx = -INFINITY, mx_nh = -INFINITY;

  /* 0: the history bitmap; the raw logits at the history ids */
  for (int j = h0 + tid; j < h1; j += TPB)
    {
      int32_t id = hist_ids[j];

      hist_vals[j] = (id >= 0 && id < V) ? row[id] : NAN;
    }
  if (use_bits)
    {
      for (int w = tid; w < words; w += TPB)
        bits[w] = 0;
      __syncthreads ();
      for (int j = h0 + tid; j < h1; j += TPB)
        {
          int32_t id = hist_ids[j];

          if (id >= 0 && id < V)
            atomicOr (&bits[id >> 5], 1u << (id & 31));
        }
    }
  for (int b = tid; b < 256; b += TPB)
    hist[b] = 0;
  __syncthreads ();

  /* 1: counts, maxima, first digit */
  for (int i = tid; i < V; i += TPB)
    {
      float v = row[i];

      if (isnan (v))
        continue;
      n_valid++;
      mx = fmaxf (mx, v);
      if (!use_bits || !((bits[i >> 5] >> (i & 31)) & 1u))
        mx_nh = fmaxf (mx_nh, v);
      atomicAdd (&hist[key_of (v) >> 24], 1);
    }
  n_valid = block_reduce (n_valid, Sum (), red_i);
  mx = block_reduce (mx, Max (), red_f);
  mx_nh = block_reduce (mx_nh, Max (),
                        red_f);
  const bool complete = n_valid <= K;
  float t_max = -INFINITY;
  if (scaled && !scale (mx_nh, T, &t_max))
    t_max = -INFINITY;
  if (tid == 0)
    {
      sel.prefix = 0;
      sel.mask = 0;
      sel.rank = K + 1;
      sel.above = 0;
      if (!complete)
        pick_digit (hist, 24, &sel);
    }
  __syncthreads ();
  for (int b = tid; b < 256; b += TPB)
    hist[b] = 0;
  __syncthreads ();

  /* 2: the sums, second digit */
  {
    double s_raw = 0.0, s_t = 0.0;
    const bool raw_ok = isfinite (mx), t_ok = t_max > -INFINITY;
    const uint32_t prefix = sel.prefix, mask = sel.mask;

    for (int i = tid; i < V; i += TPB)
      {
        float v = row[i], sv;

        if (isnan (v))
          continue;
        if (raw_ok)
          s_raw += exp ((double) v - (double) mx);
        if (t_ok && (!use_bits || !((bits[i >> 5] >> (i & 31)) & 1u)) && scale (v, T, &sv))
          s_t += exp ((double) sv - (double) t_max);
        uint32_t k = key_of (v);
        if (!complete && (k & mask) == prefix)
          atomicAdd (&hist[(k >> 16) & 255], 1);
      }
    s_raw = block_reduce (s_raw, Sum (), red_d);
    s_t = block_reduce (s_t, Sum (), red_d);
    if (tid == 0)
      {
        BlnCompactStats st;

        st.raw_max = mx;
        /* the CPU sums over every logit, so a NaN makes its sum NaN */
        st.raw_lse = !raw_ok ? (double) mx : n_valid < V ? (double) NAN
                                                         : (double) mx + log (s_raw);
        st.t_max = t_max;
        st.t_sum = t_ok ? s_t : 0.0;
        st.next = -INFINITY;
        st.n_valid = n_valid;
        st.k = complete ? n_valid : K;
        st.pad = 0;
        stats[r] = st;
        if (!complete)
          pick_digit (hist, 16, &sel);
      }
    __syncthreads ();
  }

  /* 3, 4: the last two digits */
  if (!complete)
    for (int shift = 8; shift >= 0; shift -= 8)
      {
        for (int b = tid; b < 256; b += TPB)
          hist[b] = 0;
        __syncthreads ();
        const uint32_t prefix = sel.prefix, mask = sel.mask;
        for (int i = tid; i < V; i += TPB)
          {
            float v = row[i];

            if (isnan (v))
              continue;
            uint32_t k = key_of (v);
            if ((k & mask) == prefix)
              atomicAdd (&hist[(k >> shift) & 255], 1);
          }
        __syncthreads ();
        if (tid == 0)
          pick_digit (hist, shift, &sel);
        __syncthreads ();
      }

  /* 5: gather */
  const int n_out = complete ? n_valid : K;
  const uint32_t kp = sel.prefix;
  const int need_eq = complete ? 0 : K - sel.above;
  if (tid == 0)
    {
      n_slot = 0;
      eq_base = 0;
      if (!complete)
        stats[r].next = float_of (kp);
    }
  __syncthreads ();
  for (int base = 0; base < V; base += TPB)
    {
      int i = base + tid;
      bool eq = false;

      if (i < V)
        {
          float v = row[i];

          if (!isnan (v))
            {
              uint32_t k = key_of (v);
              unsigned long long c = ((unsigned long long) k << 32) | (uint32_t) ~(uint32_t) i;

              if (complete || k > kp)
                buf[atomicAdd (&n_slot, 1)] = c;
              else
                eq = k == kp;
            }
        }
      if (complete)
        continue;
      unsigned ballot = __ballot_sync (0xffffffffu, eq);
      int lane = tid & 31, w = tid >> 5;
      if (lane == 0)
        warp_cnt[w] = __popc (ballot);
      __syncthreads ();
      int pre = eq_base;
      for (int j = 0; j < w; j++)
        pre += warp_cnt[j];
      pre += __popc (ballot & ((1u << lane) - 1u));
      if (eq && pre < need_eq)
        buf[sel.above + pre] = ((unsigned long long) kp << 32) | (uint32_t) ~(uint32_t) i;
      __syncthreads ();
      if (tid == 0)
        for (int j = 0; j < WARPS; j++)
          eq_base += warp_cnt[j];
      __syncthreads ();
    }
  __syncthreads ();

  /* sort: bitonic over P = the power of two >= n_out, descending */
  int P = 1;
  while (P < n_out)
    P <<= 1;
  for (int i = n_out + tid; i < P; i += TPB)
    buf[i] = 0ull;
  __syncthreads ();
  for (int size = 2; size <= P; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1)
      {
        for (int i = tid; i < P; i += TPB)
          {
            int j = i ^ stride;

            if (j > i)
              {
                bool desc = (i & size) == 0;
                unsigned long long a = buf[i], b = buf[j];

                if (desc ? a < b : a > b)
                  {
                    buf[i] = b;
                    buf[j] = a;
                  }
              }
          }
        __syncthreads ();
      }
  for (int i = tid; i < n_out; i += TPB)
    {
      int32_t id = (int32_t) ~(uint32_t) (buf[i] & 0xffffffffull);

      out_ids[(size_t) r * K + i] = id;
      out_vals[(size_t) r * K + i] = row[id];
    }
}

} /* namespace */

extern "C" size_t
bln_kernels_compact_scratch_bytes (int n_rows, int n_vocab)
{
  if (n_rows < 1 || n_vocab < 1)
    return 0;
  return (size_t) n_rows * (size_t) ((n_vocab + 31) / 32) * sizeof (uint32_t);
}

extern "C" cudaError_t
bln_kernels_compact (const float *d_logits, size_t row_stride, int n_rows, int n_vocab, int K,
                     const float *d_temp, const int32_t *d_hist_off, const int32_t *d_hist_ids,
                     int32_t *d_ids, float *d_vals, BlnCompactStats *d_stats, float *d_hist_vals,
                     void *d_scratch, cudaStream_t stream)
{
  if (d_logits == nullptr || n_rows < 1 || n_vocab < 1 || row_stride < (size_t) n_vocab
      || K < 1 || K > BLN_KERNELS_COMPACT_MAX_K || (K & (K - 1)) != 0 || d_temp == nullptr
      || d_ids == nullptr || d_vals == nullptr || d_stats == nullptr || d_scratch == nullptr
      || (d_hist_off != nullptr && (d_hist_ids == nullptr || d_hist_vals == nullptr))
      || n_rows > (1 << 30))
    return cudaErrorInvalidValue;
  k_compact<<<n_rows, TPB, 0, stream>>> (d_logits, row_stride, n_vocab, K, d_temp, d_hist_off,
                                         d_hist_ids, d_ids, d_vals, d_stats, d_hist_vals,
                                         (uint32_t *) d_scratch);
  return cudaGetLastError ();
}
