/* kernels/paged.cu — rotary embedding with the KV store, and attention, over
 * the paged KV pool of engine/kv-cache.c (layout in paged.h), for batches
 * that mix decode tokens of many sequences with prompt chunks.
 *
 * Numerics follow ops.cu (and so the CPU backend): float32 arithmetic,
 * accurate expf / sincosf; only the cache's element type rounds.
 */
#include <cstdint>
#include <cmath>
#include <cuda_fp16.h>

#include "paged.h"
#include "device-util.cuh"

namespace {

/* ---------------------------------------------------------------------- */
/* rotary embedding and store                                              */

/* A block per (token, head): blockIdx.y < H is query head blockIdx.y, the
 * others KV head blockIdx.y - H. Thread j owns value j of the head: adds its
 * bias, rotates it against its partner (through shared memory, so the whole
 * head is read before any value is written back), and stores it in place
 * and, for K and V, in the token's paged row. */
template <class T>
__global__ void
paged_rope_store_kernel (float *q, float *k, float *v, const float *__restrict__ bq,
                         const float *__restrict__ bk, const float *__restrict__ bv, int ld,
                         const int32_t *__restrict__ d_pos, const int32_t *__restrict__ d_tab_off,
                         const int32_t *__restrict__ d_tab, int H, int Hkv, int dk, int dv,
                         int rope_dim, int neox, const float *__restrict__ inv_freq, float af,
                         T *k_pool, T *v_pool, int n_layer, int layer, int block_size)
{
  __shared__ float xs[256];
  const int t = blockIdx.x, h = blockIdx.y, j = threadIdx.x;
  const int pos = d_pos[t];
  const bool is_q = h < H;
  const int hk = h - H;
  float *row = is_q ? q + (size_t) t * ld + (size_t) h * dk
                    : k + (size_t) t * ld + (size_t) hk * dk;
  const float *bias = is_q ? (bq ? bq + (size_t) h * dk : nullptr)
                           : (bk ? bk + (size_t) hk * dk : nullptr);
  size_t prow = 0;
  float x = 0.f;

  if (!is_q)
    prow = bln_paged_row (d_tab + d_tab_off[t], n_layer, layer, block_size, pos);
  if (j < dk)
    {
      x = row[j];
      if (bias != nullptr)
        x += bias[j];
      xs[j] = x;
    }
  __syncthreads ();
  if (j < dk)
    {
      if (j < rope_dim)
        x = rope_rotate (x, xs, j, rope_dim, neox, pos, inv_freq, af);
      row[j] = x;
      if (!is_q)
        k_pool[prow * ((size_t) Hkv * dk) + (size_t) hk * dk + j] = from_f<T> (x);
    }
  if (!is_q && j < dv)
    {
      float *vr = v + (size_t) t * ld + (size_t) hk * dv;
      float vv = vr[j];

      if (bv != nullptr)
        {
          vv += bv[(size_t) hk * dv + j];
          vr[j] = vv;
        }
      v_pool[prow * ((size_t) Hkv * dv) + (size_t) hk * dv + j] = from_f<T> (vv);
    }
}

/* ---------------------------------------------------------------------- */
/* attention                                                               */

constexpr int PA_WARPS = 4;
constexpr int PA_GMAX = 8;     /* query heads (of one KV head) per block */
constexpr int PA_DMAX = 256;   /* largest head dim */

/* Block (blockIdx.x, blockIdx.y, blockIdx.z): KV head kvh = blockIdx.x /
 * n_gc with its query heads kvh * group + gc * PA_GMAX + 0..gn-1 (gc =
 * blockIdx.x % n_gc), token blockIdx.y, positions [z * split, (z + 1) *
 * split) cut to the token's visible range [lo, d_pos[t] + 1), where lo is 0,
 * or d_pos[t] + 1 - window with a sliding window (lane 0 of the first warp
 * then still holds a visible position). A warp takes 32 positions
 * at a time, one a lane: the lane scores its position against the gn
 * queries (in shared memory, pre-scaled), the warp updates its running max
 * and sum, then every lane accumulates ND of the dv output values over the
 * warp's positions. The warps merge in shared memory and the block writes
 * (max, sum, acc[dv]) of its split to part for the combine. A split past
 * the token's length writes max = -inf (the combine skips it). */
template <class T, int ND>
__global__ void __launch_bounds__ (PA_WARPS * 32)
paged_attn_kernel (const float *__restrict__ q, int q_ld, const int32_t *__restrict__ d_pos,
                   const int32_t *__restrict__ d_tab_off, const int32_t *__restrict__ d_tab,
                   int H, int Hkv, int dk, int dv, float scale, const T *__restrict__ k_pool,
                   const T *__restrict__ v_pool, int n_layer, int layer, int block_size,
                   int split, int window, float *__restrict__ part)
{
  __shared__ float qs[PA_GMAX][PA_DMAX];
  __shared__ float ws_m[PA_WARPS][PA_GMAX], ws_l[PA_WARPS][PA_GMAX];
  __shared__ float ws_acc[PA_WARPS][PA_GMAX][PA_DMAX];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = H / Hkv, n_gc = (group + PA_GMAX - 1) / PA_GMAX;
  const int kvh = blockIdx.x / n_gc, gc = blockIdx.x % n_gc;
  const int h0 = kvh * group + gc * PA_GMAX;
  const int gn = min (PA_GMAX, group - gc * PA_GMAX);
  const int t = blockIdx.y, z = blockIdx.z, zmax = gridDim.z;
  const int len = d_pos[t] + 1;
  const int lo = window > 0 ? max (0, len - window) : 0;
  const int start = max (z * split, lo), end = min (len, z * split + split);
  const int32_t *tab = d_tab + d_tab_off[t];
  const size_t k_ld = (size_t) Hkv * dk, v_ld = (size_t) Hkv * dv;
  float m[PA_GMAX], l[PA_GMAX], acc[PA_GMAX][ND];

  if (start >= end)
    {
      /* nothing to see in this split (past the token, or before its window) */
      for (int g = threadIdx.x; g < gn; g += blockDim.x)
        part[(((size_t) t * H + h0 + g) * zmax + z) * (dv + 2)] = -INFINITY;
      return;
    }

  for (int j = threadIdx.x; j < gn * dk; j += blockDim.x)
    qs[j / dk][j % dk] = q[(size_t) t * q_ld + (size_t) (h0 + j / dk) * dk + j % dk] * scale;
#pragma unroll
  for (int g = 0; g < PA_GMAX; g++)
    {
      m[g] = -INFINITY;
      l[g] = 0.f;
#pragma unroll
      for (int i = 0; i < ND; i++)
        acc[g][i] = 0.f;
    }
  __syncthreads ();

  for (int base = start + warp * 32; base < end; base += PA_WARPS * 32)
    {
      const int p = base + lane;
      const bool valid = p < end;
      float s[PA_GMAX];

#pragma unroll
      for (int g = 0; g < PA_GMAX; g++)
        s[g] = 0.f;
      if (valid)
        {
          const T *kr = k_pool + bln_paged_row (tab, n_layer, layer, block_size, p) * k_ld
                        + (size_t) kvh * dk;
          constexpr int VE = 16 / sizeof (T);   /* values per 16-byte load */

          if (dk % VE == 0)
            {
              /* rows start 16-byte aligned then: dk * sizeof (T) is a
               * multiple of 16 and the pool is 256-byte aligned */
              for (int i0 = 0; i0 < dk; i0 += VE)
                {
                  const uint4 raw = __ldg (reinterpret_cast<const uint4 *> (kr + i0));
                  const T *e = reinterpret_cast<const T *> (&raw);
#pragma unroll
                  for (int u = 0; u < VE; u++)
                    {
                      const float kv = to_f<T> (e[u]);
#pragma unroll
                      for (int g = 0; g < PA_GMAX; g++)
                        if (g < gn)
                          s[g] += qs[g][i0 + u] * kv;
                    }
                }
            }
          else
            for (int i = 0; i < dk; i++)
              {
                const float kv = to_f<T> (kr[i]);
#pragma unroll
                for (int g = 0; g < PA_GMAX; g++)
                  if (g < gn)
                    s[g] += qs[g][i] * kv;
              }
        }
#pragma unroll
      for (int g = 0; g < PA_GMAX; g++)
        if (g < gn)
          {
            const float sv = valid ? s[g] : -INFINITY;
            const float mx = fmaxf (m[g], warp_max (sv));   /* finite: lane 0 is valid */
            const float corr = expf (m[g] - mx);            /* 0 while m is -inf */
            const float e = valid ? expf (sv - mx) : 0.f;

            l[g] = l[g] * corr + warp_sum (e);
            m[g] = mx;
#pragma unroll
            for (int i = 0; i < ND; i++)
              acc[g][i] *= corr;
            s[g] = e;
          }
      /* the warp's V rows, one position at a time, each lane ND values */
      const int nj = min (32, end - base);
      for (int jj = 0; jj < nj; jj++)
        {
          const T *vr = v_pool + bln_paged_row (tab, n_layer, layer, block_size, base + jj) * v_ld
                        + (size_t) kvh * dv;
          float vv[ND];

#pragma unroll
          for (int i = 0; i < ND; i++)
            {
              const int d = lane * ND + i;
              vv[i] = d < dv ? to_f<T> (vr[d]) : 0.f;
            }
#pragma unroll
          for (int g = 0; g < PA_GMAX; g++)
            if (g < gn)
              {
                const float pj = __shfl_sync (0xffffffffu, s[g], jj);
#pragma unroll
                for (int i = 0; i < ND; i++)
                  acc[g][i] += pj * vv[i];
              }
        }
    }

  /* merge the warps (a warp that saw no position has m = -inf) */
#pragma unroll
  for (int g = 0; g < PA_GMAX; g++)
    if (g < gn)
      {
        if (lane == 0)
          {
            ws_m[warp][g] = m[g];
            ws_l[warp][g] = l[g];
          }
#pragma unroll
        for (int i = 0; i < ND; i++)
          if (lane * ND + i < dv)
            ws_acc[warp][g][lane * ND + i] = acc[g][i];
      }
  __syncthreads ();
  for (int j = threadIdx.x; j < gn * dv; j += blockDim.x)
    {
      const int g = j / dv, d = j % dv;
      float mx = -INFINITY, lsum = 0.f, a = 0.f;
      float *dst = part + (((size_t) t * H + h0 + g) * zmax + z) * (dv + 2);

      for (int w = 0; w < PA_WARPS; w++)
        mx = fmaxf (mx, ws_m[w][g]);
      for (int w = 0; w < PA_WARPS; w++)
        if (ws_m[w][g] > -INFINITY)
          {
            const float c = expf (ws_m[w][g] - mx);
            lsum += ws_l[w][g] * c;
            a += ws_acc[w][g][d] * c;
          }
      dst[2 + d] = a;
      if (d == 0)
        {
          dst[0] = mx;
          dst[1] = lsum;
        }
    }
}

/* One block per (head, token): merges the token's splits. */
__global__ void
paged_combine_kernel (const float *__restrict__ part, int H, int dv, int zmax,
                      float *__restrict__ out)
{
  const int h = blockIdx.x, t = blockIdx.y;
  const float *pp = part + ((size_t) t * H + h) * zmax * (dv + 2);
  float mx = -INFINITY, lsum = 0.f;

  for (int z = 0; z < zmax; z++)
    mx = fmaxf (mx, pp[(size_t) z * (dv + 2)]);
  for (int z = 0; z < zmax; z++)
    {
      const float mz = pp[(size_t) z * (dv + 2)];
      if (mz > -INFINITY)
        lsum += pp[(size_t) z * (dv + 2) + 1] * expf (mz - mx);
    }
  for (int d = threadIdx.x; d < dv; d += blockDim.x)
    {
      float a = 0.f;

      for (int z = 0; z < zmax; z++)
        {
          const float mz = pp[(size_t) z * (dv + 2)];
          if (mz > -INFINITY)
            a += pp[(size_t) z * (dv + 2) + 2 + d] * expf (mz - mx);
        }
      out[((size_t) t * H + h) * dv + d] = a / lsum;
    }
}

template <class T, int ND>
void
launch_attn (const float *q, int q_ld, int n_tok, const int32_t *d_pos, const int32_t *d_tab_off,
             const int32_t *d_tab, int H, int Hkv, int dk, int dv, float scale, const void *kp,
             const void *vp, int n_layer, int layer, int block_size, int split, int window,
             int zmax, float *part, float *out, cudaStream_t stream)
{
  const int group = H / Hkv, n_gc = (group + PA_GMAX - 1) / PA_GMAX;
  const dim3 grid ((unsigned) (Hkv * n_gc), (unsigned) n_tok, (unsigned) zmax);

  paged_attn_kernel<T, ND><<<grid, PA_WARPS * 32, 0, stream>>> (
    q, q_ld, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, scale, static_cast<const T *> (kp),
    static_cast<const T *> (vp), n_layer, layer, block_size, split, window, part);
  paged_combine_kernel<<<dim3 ((unsigned) H, (unsigned) n_tok), 128, 0, stream>>> (
    part, H, dv, zmax, out);
}

template <class T>
void
launch_attn_t (const float *q, int q_ld, int n_tok, const int32_t *d_pos,
               const int32_t *d_tab_off, const int32_t *d_tab, int H, int Hkv, int dk, int dv,
               float scale, const void *kp, const void *vp, int n_layer, int layer,
               int block_size, int split, int window, int zmax, float *part, float *out,
               cudaStream_t stream)
{
  if (dv <= 32)
    launch_attn<T, 1> (q, q_ld, n_tok, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, scale, kp, vp,
                       n_layer, layer, block_size, split, window, zmax, part, out,
                       stream);
  else if (dv <= 64)
    launch_attn<T, 2> (q, q_ld, n_tok, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, scale, kp, vp,
                       n_layer, layer, block_size, split, window, zmax, part, out,
                       stream);
  else if (dv <= 128)
    launch_attn<T, 4> (q, q_ld, n_tok, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, scale, kp, vp,
                       n_layer, layer, block_size, split, window, zmax, part, out,
                       stream);
  else
    launch_attn<T, 8> (q, q_ld, n_tok, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, scale, kp, vp,
                       n_layer, layer, block_size, split, window, zmax, part, out,
                       stream);
}

/* The split length and count of a launch. */
void
attn_shape (int n_tok, int H, int Hkv, int max_len, int *split, int *zmax)
{
  const int group = H / Hkv, n_gc = (group + PA_GMAX - 1) / PA_GMAX;
  const long long bps = (long long) Hkv * n_gc * n_tok;

  *split = bln_paged_split_len (max_len, bps > 264 ? 264 : (int) bps);
  *zmax = (max_len + *split - 1) / *split;
}

/* ---------------------------------------------------------------------- */

__global__ void
gather_rows_kernel (const float *__restrict__ x, int d, const int32_t *__restrict__ rows,
                    int row_base, float *__restrict__ out)
{
  const float *src = x + (size_t) (rows[blockIdx.x] - row_base) * d;
  float *dst = out + (size_t) blockIdx.x * d;

  for (int i = threadIdx.x; i < d; i += blockDim.x)
    dst[i] = src[i];
}

} // namespace

extern "C" cudaError_t
bln_kernels_paged_rope_store (float *q, float *k, float *v, const float *bq, const float *bk,
                              const float *bv, int n_tok, int ld, const int32_t *d_pos,
                              const int32_t *d_tab_off, const int32_t *d_tab, int H, int Hkv,
                              int dk, int dv, int rope_dim, int neox, const float *inv_freq,
                              float attn_factor, void *k_pool, void *v_pool, int kv_f16,
                              int n_layer, int layer, int block_size, cudaStream_t stream)
{
  const dim3 grid ((unsigned) n_tok, (unsigned) (H + Hkv));
  const dim3 block ((unsigned) (((dk > dv ? dk : dv) + 31) / 32 * 32));

  if (!q || !k || !v || !d_pos || !d_tab_off || !d_tab || !inv_freq || !k_pool || !v_pool
      || n_tok <= 0 || n_tok > 65535 * 1024 || H <= 0 || Hkv <= 0 || H + Hkv > 65535 || dk <= 0
      || dv <= 0 || dk > 256 || dv > 256 || rope_dim < 0 || rope_dim > dk || (rope_dim & 1)
      || n_layer <= 0 || layer < 0 || layer >= n_layer || block_size <= 0
      || (n_tok > 1 && (ld < H * dk || ld < Hkv * dk || ld < Hkv * dv)))
    return cudaErrorInvalidValue;
  if (kv_f16)
    paged_rope_store_kernel<__half><<<grid, block, 0, stream>>> (
      q, k, v, bq, bk, bv, ld, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, rope_dim, neox,
      inv_freq, attn_factor, static_cast<__half *> (k_pool), static_cast<__half *> (v_pool),
      n_layer, layer, block_size);
  else
    paged_rope_store_kernel<float><<<grid, block, 0, stream>>> (
      q, k, v, bq, bk, bv, ld, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, rope_dim, neox,
      inv_freq, attn_factor, static_cast<float *> (k_pool), static_cast<float *> (v_pool),
      n_layer, layer, block_size);
  return cudaGetLastError ();
}

extern "C" size_t
bln_kernels_paged_attn_scratch (int n_tok, int H, int Hkv, int dv, int max_len)
{
  int split, zmax;

  if (n_tok <= 0 || H <= 0 || Hkv <= 0 || H % Hkv != 0 || dv <= 0 || max_len <= 0)
    return 0;
  attn_shape (n_tok, H, Hkv, max_len, &split, &zmax);
  return (size_t) n_tok * H * (size_t) zmax * (size_t) (dv + 2) * sizeof (float);
}

extern "C" cudaError_t
bln_kernels_paged_attn (const float *q, int q_ld, int n_tok, const int32_t *d_pos,
                        const int32_t *d_tab_off, const int32_t *d_tab, int max_len, int H,
                        int Hkv, int dk, int dv, float scale, const void *k_pool,
                        const void *v_pool, int kv_f16, int n_layer, int layer, int block_size,
                        int window, void *scratch, size_t scratch_bytes, float *out,
                        cudaStream_t stream)
{
  int split, zmax;

  if (q_ld == 0)
    q_ld = H * dk;
  if (!q || !d_pos || !d_tab_off || !d_tab || !k_pool || !v_pool || !scratch || !out
      || n_tok <= 0 || n_tok > 65535 || H <= 0 || Hkv <= 0 || H % Hkv != 0 || q_ld < H * dk
      || dk <= 0 || dk > PA_DMAX || dv <= 0 || dv > PA_DMAX || max_len <= 0 || n_layer <= 0
      || layer < 0 || layer >= n_layer || block_size <= 0 || window < 0
      || scratch_bytes < bln_kernels_paged_attn_scratch (n_tok, H, Hkv, dv, max_len))
    return cudaErrorInvalidValue;
  attn_shape (n_tok, H, Hkv, max_len, &split, &zmax);
  if (zmax > 65535 || (long long) Hkv * ((H / Hkv + PA_GMAX - 1) / PA_GMAX) > 0x7fffffffLL)
    return cudaErrorInvalidValue;
  if (kv_f16)
    launch_attn_t<__half> (q, q_ld, n_tok, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, scale,
                           k_pool, v_pool, n_layer, layer, block_size, split, window, zmax,
                           static_cast<float *> (scratch), out, stream);
  else
    launch_attn_t<float> (q, q_ld, n_tok, d_pos, d_tab_off, d_tab, H, Hkv, dk, dv, scale,
                          k_pool, v_pool, n_layer, layer, block_size, split, window, zmax,
                          static_cast<float *> (scratch), out, stream);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_gather_rows (const float *x, int d, const int32_t *d_rows, int row_base, int n_rows,
                         float *out, cudaStream_t stream)
{
  if (!x || !d_rows || !out || d <= 0 || n_rows <= 0 || n_rows > 0x7fffffff)
    return cudaErrorInvalidValue;
  gather_rows_kernel<<<(unsigned) n_rows, 256, 0, stream>>> (x, d, d_rows, row_base, out);
  return cudaGetLastError ();
}
