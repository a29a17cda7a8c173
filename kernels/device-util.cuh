/* kernels/device-util.cuh — small device helpers shared by the kernel
 * files: warp reductions and float <-> storage-type conversions. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_fp16.h>

namespace {

/* Weight loads that bypass L1 (each weight byte is used once; L1 keeps the
 * activations): 16 and 8 bytes. */
__device__ __forceinline__ uint4
ldg_stream16 (const uint8_t *p)
{
  uint4 v;
  asm volatile ("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                : "=r" (v.x), "=r" (v.y), "=r" (v.z), "=r" (v.w) : "l" (p));
  return v;
}

__device__ __forceinline__ uint2
ldg_stream8 (const uint8_t *p)
{
  uint2 v;
  asm volatile ("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];"
                : "=r" (v.x), "=r" (v.y) : "l" (p));
  return v;
}

/* Aligned 4- and 2-byte loads through the read-only path (block headers). */
__device__ __forceinline__ uint32_t
ldg_u32 (const uint8_t *p)
{
  return __ldg (reinterpret_cast<const unsigned int *> (p));
}

__device__ __forceinline__ uint32_t
ldg_u16 (const uint8_t *p)
{
  return __ldg (reinterpret_cast<const unsigned short *> (p));
}

/* Asks for the line holding @p to be brought into L2: no register, no
 * wait. */
__device__ __forceinline__ void
prefetch_l2 (const void *p)
{
  asm volatile ("prefetch.global.L2 [%0];" : : "l" (p));
}

/* Asynchronous copies into shared memory (sm_80 and newer; before that a
 * plain copy): 16 or 4 bytes, committed as a group, waited for by count. */
__device__ __forceinline__ void
cp_async16 (void *dst, const void *src)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile ("cp.async.cg.shared.global [%0], [%1], 16;\n"
                :: "r" ((unsigned) __cvta_generic_to_shared (dst)), "l" (src) : "memory");
#else
  *reinterpret_cast<uint4 *> (dst) = *reinterpret_cast<const uint4 *> (src);
#endif
}

__device__ __forceinline__ void
cp_async4 (void *dst, const void *src)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile ("cp.async.ca.shared.global [%0], [%1], 4;\n"
                :: "r" ((unsigned) __cvta_generic_to_shared (dst)), "l" (src) : "memory");
#else
  *reinterpret_cast<uint32_t *> (dst) = *reinterpret_cast<const uint32_t *> (src);
#endif
}

__device__ __forceinline__ void
cp_commit ()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile ("cp.async.commit_group;\n" ::: "memory");
#endif
}

/* Waits until at most N of this thread's committed copy groups are pending. */
template <int N>
__device__ __forceinline__ void
cp_wait ()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile ("cp.async.wait_group %0;\n" :: "n" (N) : "memory");
#endif
}

/* d += a · b on the tensor cores: one m16n8k16 product of F16 fragments,
 * F32 accumulators (sm_80 and newer; nothing before). */
__device__ __forceinline__ void
mma16816 (float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
          uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                : "+f" (c[0]), "+f" (c[1]), "+f" (c[2]), "+f" (c[3])
                : "r" (a0), "r" (a1), "r" (a2), "r" (a3), "r" (b0), "r" (b1));
#else
  (void) c, (void) a0, (void) a1, (void) a2, (void) a3, (void) b0, (void) b1;
#endif
}

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

/* The matvec kernels' 8-bit activations (kernels/matvec.cu): value i of x
 * rounded to int8 with one scale d = amax / 127 per 32 values, and per block
 * (d, d sum) in xd and (d, d sum, d sum of the first 16, d sum of the last
 * 16) in xs. One value per lane: the warp holds values i - lane .. i - lane
 * + 31, one whole block, and all 32 lanes take part. */
__device__ __forceinline__ void
xq_store32 (float v, size_t i, int8_t *xq, float2 *xd, float4 *xs)
{
  float amax = fabsf (v), d, id, r;
  int q, half, sum;

#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    amax = fmaxf (amax, __shfl_xor_sync (0xffffffffu, amax, off));
  d = amax / 127.0f;
  id = amax > 0.0f ? 127.0f / amax : 0.0f;
  r = rintf (v * id);
  r = fmaxf (r, -127.0f);
  r = fminf (r, 127.0f);
  q = (int) r;
  half = q;
#pragma unroll
  for (int off = 8; off > 0; off >>= 1)
    half += __shfl_xor_sync (0xffffffffu, half, off);
  /* half: the sum over this lane's 16-lane half; then the whole block */
  sum = half + __shfl_xor_sync (0xffffffffu, half, 16);
  xq[i] = (int8_t) q;
  if ((threadIdx.x & 31) == 0)
    {
      xd[i / 32] = make_float2 (d, d * (float) sum);
      xs[i / 32] = make_float4 (d, d * (float) sum, d * (float) half, d * (float) (sum - half));
    }
}

/* The same rounding for four consecutive values per lane (v.x is value i, i
 * a multiple of 4): a block of 32 is 8 lanes, lanes 8k .. 8k + 7 of the warp,
 * which must take part together (the others may be idle). */
__device__ __forceinline__ void
xq_store32x4 (float4 v, size_t i, int8_t *xq, float2 *xd, float4 *xs)
{
  const int lane = threadIdx.x & 31;
  const unsigned mask = 0xffu << (lane & 24);
  float amax = fmaxf (fmaxf (fabsf (v.x), fabsf (v.y)), fmaxf (fabsf (v.z), fabsf (v.w)));
  const float vv[4] = { v.x, v.y, v.z, v.w };
  float d, id;
  int q[4], half, sum;

#pragma unroll
  for (int off = 4; off > 0; off >>= 1)
    amax = fmaxf (amax, __shfl_xor_sync (mask, amax, off));
  d = amax / 127.0f;
  id = amax > 0.0f ? 127.0f / amax : 0.0f;
#pragma unroll
  for (int k = 0; k < 4; k++)
    {
      float r = rintf (vv[k] * id);

      r = fmaxf (r, -127.0f);
      r = fminf (r, 127.0f);
      q[k] = (int) r;
    }
  /* the first 16 values of the block are lanes 8k .. 8k + 3 */
  half = q[0] + q[1] + q[2] + q[3];
  half += __shfl_xor_sync (mask, half, 2);
  half += __shfl_xor_sync (mask, half, 1);
  sum = half + __shfl_xor_sync (mask, half, 4);
  *reinterpret_cast<char4 *> (xq + i) = make_char4 ((signed char) q[0], (signed char) q[1],
                                                    (signed char) q[2], (signed char) q[3]);
  if ((lane & 7) == 0)
    {
      xd[i / 32] = make_float2 (d, d * (float) sum);
      xs[i / 32] = make_float4 (d, d * (float) sum, d * (float) half, d * (float) (sum - half));
    }
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

  /* every operation spelt out (no contraction left to the compiler), so
   * that each kernel inlining this rotates bit for bit alike: the fused
   * decode attention (ops.cu) must reproduce rope_store_kernel's values.
   * The forms are those ptxas chose for the plain expressions
   * (x * cs - y * sn, y * sn + x * cs) before they were pinned. */
  sincosf (__fmul_rn ((float) pos, inv_freq[i]), &sn, &cs);
  cs = __fmul_rn (cs, af);
  sn = __fmul_rn (sn, af);
  return first ? __fmaf_rn (x, cs, -__fmul_rn (y, sn)) : __fmaf_rn (y, sn, __fmul_rn (x, cs));
}

} /* namespace */
