/* kernels/moe.cu — the MoE router and the weighted sum of the experts (see
 * moe.h). The router reproduces engine/arch-deepseek2.c's route_token step
 * by step (same comparisons, same tie-breaking, the softmax sum in double),
 * so the GPU picks the experts the CPU picks. */
#include <cstdint>
#include <cmath>

#include "moe.h"
#include "launch.cuh"

namespace {

constexpr int COMBINE_THREADS = 256;

/* Reduces (value, index) to the best over the warp: the larger value, ties
 * (and a missing candidate, index < 0) resolved towards the lower index. */
__device__ __forceinline__ void
warp_best (float &v, int &idx)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    {
      const float ov = __shfl_xor_sync (0xffffffffu, v, off);
      const int oi = __shfl_xor_sync (0xffffffffu, idx, off);
      if (oi >= 0 && (idx < 0 || ov > v || (ov == v && oi < idx)))
        {
          v = ov;
          idx = oi;
        }
    }
}

/* One warp per token (blockIdx.x). */
__global__ void __launch_bounds__ (32)
moe_route_kernel (const float *__restrict__ logits, const float *__restrict__ bias,
                  BlnMoeRouting rt, int32_t *__restrict__ ids, float *__restrict__ weights)
{
  bln_pdl_wait ();
  __shared__ float sel[BLN_MOE_MAX_EXPERTS], prob[BLN_MOE_MAX_EXPERTS];
  __shared__ float gscore[BLN_MOE_MAX_EXPERTS];
  __shared__ unsigned char taken[BLN_MOE_MAX_EXPERTS], keep[BLN_MOE_MAX_EXPERTS];
  __shared__ int chosen[BLN_MOE_MAX_EXPERTS];
  const int t = blockIdx.x, lane = threadIdx.x, E = rt.n_expert, K = rt.n_used;
  const int G = rt.n_groups, per = E / G;
  const float *lg = logits + (size_t) t * E;

  if (rt.sigmoid)
    for (int e = lane; e < E; e += 32)
      prob[e] = 1.0f / (1.0f + expf (-lg[e]));
  else
    {
      float mx = -INFINITY;
      double sum = 0.0;
      float inv;

      for (int e = lane; e < E; e += 32)
        mx = fmaxf (mx, lg[e]);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
        mx = fmaxf (mx, __shfl_xor_sync (0xffffffffu, mx, off));
      for (int e = lane; e < E; e += 32)
        {
          prob[e] = expf (lg[e] - mx);
          sum += prob[e];
        }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
        sum += __shfl_xor_sync (0xffffffffu, sum, off);
      inv = (float) (1.0 / sum);
      for (int e = lane; e < E; e += 32)
        prob[e] *= inv;
    }
  for (int e = lane; e < E; e += 32)
    {
      sel[e] = prob[e] + (bias != nullptr ? bias[e] : 0.0f);
      taken[e] = 0;
    }
  __syncwarp ();

  if (G > 1 && rt.n_groups_used < G)
    {
      for (int g = lane; g < G; g += 32)
        {
          const float *gs = sel + g * per;
          if (rt.sigmoid)
            {
              float b1 = -INFINITY, b2 = -INFINITY;
              for (int e = 0; e < per; e++)
                if (gs[e] > b1)
                  b2 = b1, b1 = gs[e];
                else if (gs[e] > b2)
                  b2 = gs[e];
              gscore[g] = per > 1 ? b1 + b2 : b1;
            }
          else
            {
              float b = -INFINITY;
              for (int e = 0; e < per; e++)
                b = fmaxf (b, gs[e]);
              gscore[g] = b;
            }
          keep[g] = 0;
        }
      __syncwarp ();
      if (lane == 0)
        for (int k = 0; k < rt.n_groups_used; k++)
          {
            int best = -1;
            for (int g = 0; g < G; g++)
              if (!keep[g] && (best < 0 || gscore[g] > gscore[best]))
                best = g;
            keep[best] = 1;
          }
      __syncwarp ();
      for (int e = lane; e < E; e += 32)
        if (!keep[e / per])
          sel[e] = -INFINITY;
      __syncwarp ();
    }

  for (int k = 0; k < K; k++)
    {
      float v = -INFINITY;
      int idx = -1;

      for (int e = lane; e < E; e += 32)
        if (!taken[e] && (idx < 0 || sel[e] > v))
          {
            v = sel[e];
            idx = e;
          }
      warp_best (v, idx);
      if (lane == 0)
        {
          chosen[k] = idx;
          taken[idx] = 1;
        }
      __syncwarp ();
    }

  if (lane == 0)
    {
      float sum = 0.0f;
      for (int k = 0; k < K; k++)
        sum += prob[chosen[k]];
      for (int k = 0; k < K; k++)
        {
          float w = prob[chosen[k]];
          if (rt.norm)
            w /= sum + 1e-20f;
          w *= rt.scale;
          ids[(size_t) t * K + k] = chosen[k];
          weights[(size_t) t * K + k] = w;
        }
    }
}

/* Thread per (token blockIdx.y, value); the K terms in order of k. */
__global__ void
moe_combine_kernel (float *x, int d, int K, const float *__restrict__ y, int ldy,
                    const int32_t *__restrict__ rows, const float *__restrict__ weights)
{
  bln_pdl_wait ();
  const int t = blockIdx.y, i = blockIdx.x * COMBINE_THREADS + threadIdx.x;
  float s = 0.f;

  if (i >= d)
    return;
  for (int k = 0; k < K; k++)
    {
      const size_t slot = (size_t) t * K + k;
      const size_t row = rows != nullptr ? (size_t) rows[slot] : slot;
      s += weights[slot] * y[row * ldy + i];
    }
  x[(size_t) t * d + i] += s;
}

/* Thread per (row blockIdx.y, value). */
__global__ void
moe_gather_kernel (const float *__restrict__ x, int d, const int32_t *__restrict__ rows,
                   float *__restrict__ out)
{
  bln_pdl_wait ();
  const int j = blockIdx.y, i = blockIdx.x * COMBINE_THREADS + threadIdx.x;

  if (i < d)
    out[(size_t) j * d + i] = x[(size_t) rows[j] * d + i];
}

} /* namespace */

extern "C" cudaError_t
bln_moe_route (const float *logits, int n_tok, const float *bias, const BlnMoeRouting *rt,
               int32_t *ids, float *weights, cudaStream_t stream)
{
  if (!logits || !rt || !ids || !weights || n_tok < 1 || n_tok > 65535 || rt->n_expert < 1
      || rt->n_expert > BLN_MOE_MAX_EXPERTS || rt->n_used < 1 || rt->n_used > rt->n_expert
      || rt->n_groups < 1 || rt->n_expert % rt->n_groups != 0 || rt->n_groups_used < 1
      || rt->n_groups_used > rt->n_groups
      || (rt->n_groups_used < rt->n_groups
          && rt->n_groups_used * (rt->n_expert / rt->n_groups) < rt->n_used))
    return cudaErrorInvalidValue;
  return bln_launch (moe_route_kernel, dim3 (n_tok), dim3 (32), 0, stream, logits, bias, *rt,
                     ids, weights);
}

extern "C" cudaError_t
bln_moe_combine (float *x, int d, int n_tok, int K, const float *y, int ldy,
                 const int32_t *rows, const float *weights, cudaStream_t stream)
{
  if (!x || !y || !weights || d < 1 || n_tok < 1 || n_tok > 65535 || K < 1 || ldy < d)
    return cudaErrorInvalidValue;
  return bln_launch (moe_combine_kernel, dim3 ((d + COMBINE_THREADS - 1) / COMBINE_THREADS, n_tok),
                     dim3 (COMBINE_THREADS), 0, stream, x, d, K, y, ldy, rows, weights);
}

extern "C" cudaError_t
bln_moe_gather (const float *x, int d, const int32_t *rows, int n_rows, float *out,
                cudaStream_t stream)
{
  if (!x || !rows || !out || d < 1 || n_rows < 1 || n_rows > 65535)
    return cudaErrorInvalidValue;
  return bln_launch (moe_gather_kernel, dim3 ((d + COMBINE_THREADS - 1) / COMBINE_THREADS, n_rows),
                     dim3 (COMBINE_THREADS), 0, stream, x, d, rows, out);
}
