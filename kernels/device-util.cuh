/* kernels/device-util.cuh — small device helpers shared by the kernel
 * files: warp reductions and float <-> storage-type conversions. */
#pragma once

#include <cuda_fp16.h>

namespace {

/* Sum / maximum over the 32 lanes of a warp; every lane gets the result. */
__device__ __forceinline__ float
warp_sum (float v)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v += __shfl_xor_sync (0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ double
warp_sum_d (double v)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v += __shfl_xor_sync (0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ float
warp_max (float v)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v = fmaxf (v, __shfl_xor_sync (0xffffffffu, v, off));
  return v;
}

/* A cache element (float or half) to float and back (round to nearest). */
template <class T> __device__ __forceinline__ float to_f (T v);
template <> __device__ __forceinline__ float to_f<float> (float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half> (__half v) { return __half2float (v); }

template <class T> __device__ __forceinline__ T from_f (float v);
template <> __device__ __forceinline__ float from_f<float> (float v) { return v; }
template <> __device__ __forceinline__ __half
from_f<__half> (float v)
{
  return __float2half_rn (v);
}

/* Value j (< rope_dim) of a head's row after rotary embedding at position
 * @pos: x is the value, @xs the whole row (its partner's value is read from
 * there), pairs (i, i + rope_dim / 2) in NeoX order, (2i, 2i + 1)
 * otherwise, frequencies @inv_freq, @af the attention factor (YaRN). */
__device__ __forceinline__ float
rope_rotate (float x, const float *xs, int j, int rope_dim, bool neox, int pos,
             const float *inv_freq, float af)
{
  const int half = rope_dim / 2;
  const int i = neox ? (j < half ? j : j - half) : j / 2;
  const bool first = neox ? j < half : (j & 1) == 0;
  const int partner = neox ? (first ? j + half : j - half) : (j ^ 1);
  const float y = xs[partner];
  float sn, cs;

  sincosf ((float) pos * inv_freq[i], &sn, &cs);
  cs *= af;
  sn *= af;
  return first ? x * cs - y * sn : y * sn + x * cs;
}

} /* namespace */
