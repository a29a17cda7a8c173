/* kernels/mla.cu — multi-head latent attention (deepseek2) over the latent
 * cache: the store of a token's latent and positional key, and the absorbed
 * decode attention (see mla.h for the math).
 *
 * Numerics follow engine/arch-deepseek2.c: float32 arithmetic with accurate
 * expf / sincosf, the RMSNorm's sum of squares in double, so that a float32
 * cache reproduces the CPU logits to rounding.
 */
#include <cstdint>
#include <cmath>
#include <cuda_fp16.h>

#include "mla.h"
#include "launch.cuh"
#include "device-util.cuh"
#include "kernels.h"

namespace {

constexpr int MLA_THREADS = 256;
constexpr int MLA_WARPS = MLA_THREADS / 32;
constexpr int MLA_G = 8;                                   /* query heads per block */
constexpr int MLA_NI = BLN_MLA_MAX_RANK / MLA_THREADS;     /* latent values per thread */
constexpr int MLA_SPLIT_MIN = 64;                          /* fewest positions per split */
constexpr int MLA_MAX_SPLITS = 64;

/* Positions per tile staged in shared memory: 20 KiB either way. */
template <class T> struct Tile { static constexpr int P = sizeof (T) == 2 ? 16 : 8; };

/* ---------------------------------------------------------------------- */
/* the store                                                               */

/* Blocks (token, slice): the latent's RMSNorm (a block reduction in double;
 * every slice computes the same sum in the same order), then the rotations
 * of the positional key and of every head's q_pe, and the copy of the
 * unrotated query parts into their own dense rows, each loop's items dealt
 * over the MLA_STORE_SLICES blocks of the token. One block per token took
 * ~27 us a layer on an H200 (V2-Lite, ncu): the whole store ran on one SM. */
constexpr int MLA_STORE_SLICES = 8;

/* Where a kernel also leaves its output rounded for the matvecs (null: it
 * does not); see kernels.h, BlnKernelsXq. */
struct MlaXq
{
  int8_t *q = nullptr;
  float2 *d = nullptr;
  float4 *s = nullptr;
};

template <class T>
__global__ void __launch_bounds__ (MLA_THREADS)
mla_store_kernel (const float *__restrict__ kva, int kva_ld, const float *__restrict__ q,
                  int q_ld, const int *__restrict__ d_pos, int H, int r, int dr, int nope,
                  const float *__restrict__ norm_w, float eps, const float *__restrict__ inv_freq,
                  float af, int neox, T *__restrict__ cache, float *__restrict__ q_nope,
                  float *__restrict__ q_cat, MlaXq xo)
{
  bln_pdl_wait ();
  __shared__ double red[MLA_WARPS];
  const int t = blockIdx.x, pos = *d_pos + t, W = r + dr, half = dr / 2, dk = nope + dr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float *row = kva + (size_t) t * kva_ld;
  const float *qt = q + (size_t) t * q_ld;
  T *cr = cache + (size_t) pos * W;
  double ss = 0.0;
  float inv;

  for (int i = threadIdx.x; i < r; i += MLA_THREADS)
    ss += (double) row[i] * (double) row[i];
  ss = warp_sum_d (ss);
  if (lane == 0)
    red[warp] = ss;
  __syncthreads ();
  ss = lane < MLA_WARPS ? red[lane] : 0.0;
  ss = warp_sum_d (ss);
  inv = 1.0f / sqrtf ((float) (ss / (double) r) + eps);
  const int first = blockIdx.y * MLA_THREADS + threadIdx.x, step = gridDim.y * MLA_THREADS;

  for (int i = first; i < r; i += step)
    cr[i] = from_f<T> (norm_w[i] * (row[i] * inv));

  for (int j = first; j < (H + 1) * half; j += step)
    {
      const int h = j / half, i = j % half;
      const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
      float s, c, x0, x1;

      sincosf ((float) pos * inv_freq[i], &s, &c);
      c *= af;
      s *= af;
      if (h == H)
        {
          x0 = row[r + a];
          x1 = row[r + b];
          cr[r + a] = from_f<T> (x0 * c - x1 * s);
          cr[r + b] = from_f<T> (x0 * s + x1 * c);
        }
      else
        {
          const float *qh = qt + (size_t) h * dk + nope;
          float *o = q_cat + ((size_t) t * H + h) * W + r;
          x0 = qh[a];
          x1 = qh[b];
          o[a] = x0 * c - x1 * s;
          o[b] = x0 * s + x1 * c;
        }
    }
  for (int j = first; j < H * nope; j += step)
    {
      const int h = j / nope, i = j % nope;
      const float v = qt[(size_t) h * dk + i];

      q_nope[((size_t) t * H + h) * nope + i] = v;
      if (xo.q != nullptr)   /* nope % 32 == 0: a warp holds one 32-value block */
        xq_store32 (v, (size_t) t * H * nope + j, xo.q, xo.d, xo.s);
    }
}

/* ---------------------------------------------------------------------- */
/* decode attention                                                        */

/* How many splits a launch has (the grid's z): enough blocks to fill a large
 * GPU (about two per SM of an H100 / H200), at most MLA_MAX_SPLITS. */
static int
mla_splits (int n_tok, int H)
{
  int bps = (H + MLA_G - 1) / MLA_G * n_tok;
  int s = (264 + bps - 1) / bps;

  return s < 1 ? 1 : s > MLA_MAX_SPLITS ? MLA_MAX_SPLITS : s;
}

/* Positions per split for a token seeing @len positions: the splits share
 * them evenly, in multiples of 16 (whole tiles), at least MLA_SPLIT_MIN. */
__device__ __forceinline__ int
mla_split_len (int len, int n_split)
{
  int split = (len + n_split - 1) / n_split;

  split = (split + 15) / 16 * 16;
  return split < MLA_SPLIT_MIN ? MLA_SPLIT_MIN : split;
}

/* Block (head group blockIdx.x, token blockIdx.y, split blockIdx.z). The
 * group's queries sit in shared memory for the whole block. Per tile of P
 * cache rows (read once, coalesced, into shared memory): warp w scores rows
 * w, w + 8, ... against the gn heads (lanes over the row's W values, then a
 * warp sum); threads 0..gn-1 update their head's running max and sum and
 * turn the scores into weights; then every thread adds the tile's weighted
 * latents to its 2 latent values of each head (registers), after rescaling
 * them by the change of the running max. The block writes (m, l, acc) of its
 * split to @part for the combine kernel. */
template <class T>
__global__ void __launch_bounds__ (MLA_THREADS)
mla_decode_kernel (const float *__restrict__ q, const int *__restrict__ d_pos, int H, int r,
                   int dr, float scale, const T *__restrict__ cache, int n_split,
                   float *__restrict__ part_acc, float *__restrict__ part_ml)
{
  bln_pdl_wait ();
  constexpr int P = Tile<T>::P;
  __shared__ float qs[MLA_G * BLN_MLA_MAX_ROW];
  __shared__ T ct[P * BLN_MLA_MAX_ROW];
  __shared__ float ps[MLA_G][P];
  __shared__ float m_s[MLA_G], l_s[MLA_G], a_s[MLA_G];
  const int W = r + dr, h0 = blockIdx.x * MLA_G, t = blockIdx.y, z = blockIdx.z;
  const int gn = min (MLA_G, H - h0);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int len = *d_pos + t + 1;
  const int split = mla_split_len (len, n_split);
  const int j_begin = z * split, j_end = min (len, j_begin + split);
  float acc[MLA_G][MLA_NI];

#pragma unroll
  for (int g = 0; g < MLA_G; g++)
#pragma unroll
    for (int ni = 0; ni < MLA_NI; ni++)
      acc[g][ni] = 0.f;
  {
    const float *qb = q + ((size_t) t * H + h0) * W;
    for (int k = tid; k < gn * W; k += MLA_THREADS)
      qs[k] = qb[k];
    for (int k = gn * W + tid; k < MLA_G * W; k += MLA_THREADS)
      qs[k] = 0.f;
  }
  if (tid < MLA_G)
    {
      m_s[tid] = -INFINITY;
      l_s[tid] = 0.f;
    }
  __syncthreads ();

  for (int j0 = j_begin; j0 < j_end; j0 += P)
    {
      const int np = min (P, j_end - j0);
      const T *base = cache + (size_t) j0 * W;

      for (int k = tid; k < np * W; k += MLA_THREADS)
        ct[k] = base[k];
      __syncthreads ();
      for (int j = warp; j < np; j += MLA_WARPS)
        {
          float s[MLA_G];
#pragma unroll
          for (int g = 0; g < MLA_G; g++)
            s[g] = 0.f;
          for (int i = lane; i < W; i += 32)
            {
              const float c = to_f<T> (ct[j * W + i]);
#pragma unroll
              for (int g = 0; g < MLA_G; g++)
                s[g] += qs[g * W + i] * c;
            }
#pragma unroll
          for (int g = 0; g < MLA_G; g++)
            s[g] = warp_sum (s[g]);
          if (lane == 0)
#pragma unroll
            for (int g = 0; g < MLA_G; g++)
              ps[g][j] = s[g] * scale;
        }
      __syncthreads ();
      if (tid < gn)
        {
          const float mo = m_s[tid];
          float mx = mo, l;

          for (int j = 0; j < np; j++)
            mx = fmaxf (mx, ps[tid][j]);
          a_s[tid] = expf (mo - mx);
          l = l_s[tid] * a_s[tid];
          for (int j = 0; j < np; j++)
            {
              const float p = expf (ps[tid][j] - mx);
              ps[tid][j] = p;
              l += p;
            }
          m_s[tid] = mx;
          l_s[tid] = l;
        }
      __syncthreads ();
#pragma unroll
      for (int g = 0; g < MLA_G; g++)
        if (g < gn)
          {
            const float a = a_s[g];
#pragma unroll
            for (int ni = 0; ni < MLA_NI; ni++)
              acc[g][ni] *= a;
          }
      for (int j = 0; j < np; j++)
#pragma unroll
        for (int ni = 0; ni < MLA_NI; ni++)
          {
            const int i = tid + ni * MLA_THREADS;
            if (i < r)
              {
                const float c = to_f<T> (ct[j * W + i]);
#pragma unroll
                for (int g = 0; g < MLA_G; g++)
                  acc[g][ni] += ps[g][j] * c;
              }
          }
      __syncthreads ();
    }

#pragma unroll
  for (int g = 0; g < MLA_G; g++)
    if (g < gn)
      {
        const size_t slot = ((size_t) t * H + h0 + g) * n_split + z;
#pragma unroll
        for (int ni = 0; ni < MLA_NI; ni++)
          {
            const int i = tid + ni * MLA_THREADS;
            if (i < r)
              part_acc[slot * r + i] = acc[g][ni];
          }
        if (tid == 0)
          {
            part_ml[2 * slot] = m_s[g];
            part_ml[2 * slot + 1] = l_s[g];
          }
      }
}

/* Block (head blockIdx.x, token blockIdx.y): merges the splits' states,
 * each weighted by exp (m_s - max m). The weights and the sum come from one
 * warp into shared memory first, so the merge loop over the latent values
 * reads only the partial sums, and skips the splits past the token's
 * positions (weight 0; most of them on a short context). Reading every
 * split's state serially per value took ~11 us a layer (V2-Lite, ncu). */
static_assert (MLA_MAX_SPLITS <= 64, "the combine's weights are two per lane of one warp");

__global__ void __launch_bounds__ (MLA_THREADS)
mla_combine_kernel (int H, int r, int n_split, const float *__restrict__ part_acc,
                    const float *__restrict__ part_ml, float *__restrict__ out, MlaXq xo)
{
  __shared__ float w_s[MLA_MAX_SPLITS];
  __shared__ float l_sum;

  bln_pdl_wait ();
  const int h = blockIdx.x, t = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const size_t slot0 = ((size_t) t * H + h) * n_split;

  if (warp == 0)
    {
      const int s0 = lane, s1 = lane + 32;
      const float m0 = s0 < n_split ? part_ml[2 * (slot0 + s0)] : -INFINITY;
      const float m1 = s1 < n_split ? part_ml[2 * (slot0 + s1)] : -INFINITY;
      const float M = warp_max (fmaxf (m0, m1));
      const float w0 = m0 == -INFINITY ? 0.f : expf (m0 - M);
      const float w1 = m1 == -INFINITY ? 0.f : expf (m1 - M);
      const float L = warp_sum ((w0 != 0.f ? w0 * part_ml[2 * (slot0 + s0) + 1] : 0.f)
                                + (w1 != 0.f ? w1 * part_ml[2 * (slot0 + s1) + 1] : 0.f));

      if (s0 < n_split)
        w_s[s0] = w0;
      if (s1 < n_split)
        w_s[s1] = w1;
      if (lane == 0)
        l_sum = L;
    }
  __syncthreads ();
  for (int i = threadIdx.x; i < r; i += MLA_THREADS)
    {
      float o = 0.f;

      for (int s = 0; s < n_split; s++)
        {
          const float w = w_s[s];   /* the same for every thread: no divergence */

          if (w != 0.f)
            o += w * part_acc[(slot0 + s) * r + i];
        }
      o /= l_sum;
      out[((size_t) t * H + h) * r + i] = o;
      if (xo.q != nullptr)   /* r % 32 == 0: a warp holds one 32-value block */
        xq_store32 (o, ((size_t) t * H + h) * r + i, xo.q, xo.d, xo.s);
    }
}

} /* namespace */

/* The matvec scratch as MlaXq when @want and @n values (per token rows of
 * a multiple of 32) fit in it; *rounded says so. */
static MlaXq
mla_xq (int want, size_t n, int row, int *rounded)
{
  MlaXq xo;
  BlnKernelsXq xq;

  if (rounded != nullptr)
    *rounded = 0;
  if (want && rounded != nullptr && row % 32 == 0 && bln_kernels_xq_scratch (&xq) == cudaSuccess
      && n <= (size_t) xq.max_values * BLN_KERNELS_MATVEC_MAX_TOK)
    {
      xo.q = static_cast<int8_t *> (xq.q);
      xo.d = static_cast<float2 *> (xq.d);
      xo.s = static_cast<float4 *> (xq.s);
      *rounded = 1;
    }
  return xo;
}

extern "C" cudaError_t
bln_mla_store_round (const float *kva, int kva_ld, const float *q, int q_ld, int n_tok,
                     const int *d_pos, int H, int r, int dr, int nope, const float *norm_w,
                     float eps, const float *inv_freq, float attn_factor, int neox, void *cache,
                     int kv_f16, float *q_nope, float *q_cat, int *rounded, cudaStream_t stream)
{
  MlaXq xo;

  if (!kva || !q || !d_pos || !norm_w || !inv_freq || !cache || !q_nope || !q_cat
      || n_tok < 1 || n_tok > 65535 || H < 1 || r < 1 || r > BLN_MLA_MAX_RANK || dr < 2
      || dr % 2 != 0 || r + dr > BLN_MLA_MAX_ROW || nope < 1 || kva_ld < r + dr
      || q_ld < H * (nope + dr) || !(eps >= 0.f))
    return cudaErrorInvalidValue;
  xo = mla_xq (1, (size_t) n_tok * H * nope, nope, rounded);
  if (kv_f16)
    return bln_launch (mla_store_kernel<__half>, dim3 (n_tok, MLA_STORE_SLICES),
                       dim3 (MLA_THREADS), 0, stream,
                       kva, kva_ld, q, q_ld, d_pos, H, r, dr, nope, norm_w, eps, inv_freq,
                       attn_factor, neox, static_cast<__half *> (cache), q_nope, q_cat, xo);
  return bln_launch (mla_store_kernel<float>, dim3 (n_tok, MLA_STORE_SLICES),
                     dim3 (MLA_THREADS), 0, stream,
                     kva, kva_ld, q, q_ld, d_pos, H, r, dr, nope, norm_w, eps, inv_freq,
                     attn_factor, neox, static_cast<float *> (cache), q_nope, q_cat, xo);
}

extern "C" cudaError_t
bln_mla_store (const float *kva, int kva_ld, const float *q, int q_ld, int n_tok,
               const int *d_pos, int H, int r, int dr, int nope, const float *norm_w, float eps,
               const float *inv_freq, float attn_factor, int neox, void *cache, int kv_f16,
               float *q_nope, float *q_cat, cudaStream_t stream)
{
  return bln_mla_store_round (kva, kva_ld, q, q_ld, n_tok, d_pos, H, r, dr, nope, norm_w, eps,
                              inv_freq, attn_factor, neox, cache, kv_f16, q_nope, q_cat, nullptr,
                              stream);
}

extern "C" size_t
bln_mla_decode_scratch (int n_tok, int H, int r)
{
  size_t best = 0;

  if (n_tok < 1 || H < 1 || r < 1)
    return 0;
  for (int n = 1; n <= n_tok; n++)
    {
      size_t slots = (size_t) n * H * mla_splits (n, H);
      size_t bytes = slots * (size_t) r * sizeof (float);

      bytes = (bytes + 255) / 256 * 256 + slots * 2 * sizeof (float);
      best = bytes > best ? bytes : best;
    }
  return best;
}

extern "C" cudaError_t
bln_mla_decode_round (const float *q_cat, int n_tok, const int *d_pos, int H, int r, int dr,
                      float scale, const void *cache, int kv_f16, void *scratch, float *out,
                      int *rounded, cudaStream_t stream)
{
  MlaXq xo;
  int n_split;
  size_t acc_bytes;
  float *part_acc, *part_ml;
  dim3 grid;
  cudaError_t rc;

  if (!q_cat || !d_pos || !cache || !scratch || !out || n_tok < 1 || n_tok > 8 || H < 1
      || H > 65535 || r < 1 || r > BLN_MLA_MAX_RANK || dr < 0 || r + dr > BLN_MLA_MAX_ROW
      || ((uintptr_t) scratch & 15))
    return cudaErrorInvalidValue;
  xo = mla_xq (1, (size_t) n_tok * H * r, r, rounded);
  n_split = mla_splits (n_tok, H);
  acc_bytes = ((size_t) n_tok * H * n_split * r * sizeof (float) + 255) / 256 * 256;
  part_acc = static_cast<float *> (scratch);
  part_ml = reinterpret_cast<float *> (static_cast<uint8_t *> (scratch) + acc_bytes);
  grid = dim3 ((H + MLA_G - 1) / MLA_G, n_tok, n_split);
  if (kv_f16)
    rc = bln_launch (mla_decode_kernel<__half>, grid, dim3 (MLA_THREADS), 0, stream, q_cat,
                     d_pos, H, r, dr, scale, static_cast<const __half *> (cache), n_split,
                     part_acc, part_ml);
  else
    rc = bln_launch (mla_decode_kernel<float>, grid, dim3 (MLA_THREADS), 0, stream, q_cat,
                     d_pos, H, r, dr, scale, static_cast<const float *> (cache), n_split,
                     part_acc, part_ml);
  if (rc != cudaSuccess)
    return rc;
  return bln_launch (mla_combine_kernel, dim3 (H, n_tok), dim3 (MLA_THREADS), 0, stream, H, r,
                     n_split, (const float *) part_acc, (const float *) part_ml, out, xo);
}

extern "C" cudaError_t
bln_mla_decode (const float *q_cat, int n_tok, const int *d_pos, int H, int r, int dr,
                float scale, const void *cache, int kv_f16, void *scratch, float *out,
                cudaStream_t stream)
{
  return bln_mla_decode_round (q_cat, n_tok, d_pos, H, r, dr, scale, cache, kv_f16, scratch,
                               out, nullptr, stream);
}
