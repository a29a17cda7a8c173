/* kernels/mmq.cu — quantised matrix products on int8 tensor cores ("MMQ").
 *
 * For 9 .. thousands of token rows, where the matvec kernels run out of
 * integer ALU and the dequantise-to-F16 + cuBLAS path re-expands the weights
 * every call. The weights stay in the split-block layout of kernels.h (the
 * buffers the matvec reads). Method:
 *
 *  1. the activations are rounded to int8 per block of 32 values (scale
 *     amax / 127, exactly the matvec's rounding, device-util.cuh's
 *     xq_store32) into a scratch of this file, with each block's scale d_x
 *     and d_x * (sum of its int8 values);
 *  2. a thread block owns MMQ_ROWS weight rows × MMQ_TOKS tokens. Per K step
 *     of MMQ_SUB blocks of 32 values its threads decode the weights into
 *     int8 in shared memory — each 32-value block as w = a * q + c with q
 *     int8, a the block's scale and c its offset (Q4_1 / Q5_1 minimum, the
 *     K-quants' -dmin * min); Q6_K has one scale per 16 values, so a0 for
 *     values 0..15 and a1 for 16..31 — and copy the int8 activations there;
 *  3. each warp runs mma.m16n8k32 (s8 × s8 → s32) over one 32-value block
 *     at a time, so every block's integer dot product is scaled in
 *     registers: acc += a * d_x * dot + c * d_x * sum(x_q). For Q6_K the two
 *     16-value halves go through two mma with the other half zeroed.
 *
 *  4. with few tiles (a handful of tokens, or few rows) the K range is split
 *     over blockIdx.z so that enough blocks stream the weights; the partial
 *     sums then meet through atomicAdd into y (zeroed first unless
 *     accumulating), so the last bits may vary from run to run there.
 *
 * int8 mma needs sm_80: on older GPUs bln_kernels_mmq returns
 * cudaErrorNotSupported and the callers keep their other paths.
 *
 * Fragment layout of mma.m16n8k32.row.col.s8 (PTX ISA), lane = 4 g + t:
 *   A (16 × 32, row-major): a0 = A[g][4t..4t+3], a1 = A[g+8][4t..],
 *                           a2 = A[g][16+4t..],  a3 = A[g+8][16+4t..]
 *   B (32 × 8, column):     b0 = B[4t..4t+3][g], b1 = B[16+4t..][g]
 *   C (16 × 8):             c0 = C[g][2t], c1 = C[g][2t+1],
 *                           c2 = C[g+8][2t], c3 = C[g+8][2t+1]
 * A is the weight tile (row = output row, k = value), B the activations
 * (column = token), both stored k-contiguous in shared memory.
 */
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels.h"
#include "launch.cuh"
#include "device-util.cuh"

namespace {

/* GGUF type ids (engine/quant.h). */
enum { T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8, T_Q4_K = 12, T_Q5_K = 13,
       T_Q6_K = 14 };

constexpr int MMQ_ROWS = 32;   /* weight rows per thread block */
constexpr int MMQ_TOKS = 64;   /* tokens per thread block */
constexpr int MMQ_SUB = 4;     /* 32-value blocks per K step */
constexpr int MMQ_KV = 32 * MMQ_SUB;
constexpr int MMQ_THREADS = 128;
/* shared row stride in bytes: 16 bytes of padding make the fragment loads
 * of a warp (rows g = 0..7 at 36 g words, columns t = 0..3) hit 32
 * different banks */
constexpr int MMQ_STRIDE = MMQ_KV + 16;

static_assert (MMQ_ROWS * MMQ_SUB == MMQ_THREADS, "one weight block per thread and step");

/* Host-callable too, so that the decoding can be checked without a GPU. */
#define MMQ_HD __host__ __device__ __forceinline__

MMQ_HD float
h2f (const uint8_t *p)
{
  return __half2float (__ushort_as_half (*reinterpret_cast<const unsigned short *> (p)));
}

/* Q4_K / Q5_K 6-bit scale and minimum of sub-block j from the twelve GGUF
 * bytes q. */
MMQ_HD void
k_scale_min6 (const uint8_t *q, int j, int *sc, int *mn)
{
  if (j < 4)
    {
      *sc = q[j] & 63;
      *mn = q[j + 4] & 63;
    }
  else
    {
      *sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
      *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Decodes 32-value block kb (0 .. n_in / 32 - 1) of weight row @row into
 * v[0..31] (int8 range) with w[i] = a(i) * v[i] + c, a(i) = a0 for i < 16,
 * a1 otherwise. */
template <int TYPE>
MMQ_HD void
decode32 (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, size_t row,
          int nb32, int kb, int *v, float *a0, float *a1, float *c)
{
  uint8_t b[32];

  if constexpr (TYPE == T_Q8_0)
    {
      const size_t blk = row * nb32 + kb;
      const uint4 *p = reinterpret_cast<const uint4 *> (pay + blk * 32);
      *reinterpret_cast<uint4 *> (b) = p[0];
      *reinterpret_cast<uint4 *> (b + 16) = p[1];
#pragma unroll
      for (int i = 0; i < 32; i++)
        v[i] = (int8_t) b[i];
      *a0 = *a1 = h2f (hdr + blk * 2);
      *c = 0.f;
    }
  else if constexpr (TYPE == T_Q4_0 || TYPE == T_Q4_1 || TYPE == T_Q5_0 || TYPE == T_Q5_1)
    {
      constexpr int HDR = TYPE == T_Q4_0 ? 2 : TYPE == T_Q4_1 ? 4 : TYPE == T_Q5_0 ? 6 : 8;
      const size_t blk = row * nb32 + kb;
      const uint8_t *h = hdr + blk * HDR;
      uint32_t qh = 0;
      *reinterpret_cast<uint4 *> (b) = *reinterpret_cast<const uint4 *> (pay + blk * 16);
      if constexpr (TYPE == T_Q5_0)
        qh = (uint32_t) h[2] | ((uint32_t) h[3] << 8) | ((uint32_t) h[4] << 16)
             | ((uint32_t) h[5] << 24);
      if constexpr (TYPE == T_Q5_1)
        qh = *reinterpret_cast<const uint32_t *> (h + 4);
#pragma unroll
      for (int j = 0; j < 16; j++)
        {
          int lo = b[j] & 15, hi = b[j] >> 4;
          if constexpr (TYPE == T_Q5_0 || TYPE == T_Q5_1)
            {
              lo |= (int) ((qh >> j) & 1) << 4;
              hi |= (int) ((qh >> (j + 16)) & 1) << 4;
            }
          if constexpr (TYPE == T_Q4_0)
            lo -= 8, hi -= 8;
          if constexpr (TYPE == T_Q5_0)
            lo -= 16, hi -= 16;
          v[j] = lo;
          v[j + 16] = hi;
        }
      *a0 = *a1 = h2f (h);
      *c = (TYPE == T_Q4_1 || TYPE == T_Q5_1) ? h2f (h + 2) : 0.f;
    }
  else if constexpr (TYPE == T_Q4_K || TYPE == T_Q5_K)
    {
      /* 256-value blocks; sub-block sb of block blk: qs bytes 32 (sb / 2)
       * .. + 31, low nibbles for even sb, high for odd */
      constexpr int HDR = TYPE == T_Q4_K ? 20 : 48;
      const size_t blk = row * (size_t) (nb32 / 8) + kb / 8;
      const int sb = kb & 7, g = sb >> 1, sh = (sb & 1) * 4;
      const uint8_t *h = hdr + blk * HDR;
      const uint4 *p = reinterpret_cast<const uint4 *> (pay + blk * 128 + 32 * g);
      int sc, mn;
      *reinterpret_cast<uint4 *> (b) = p[0];
      *reinterpret_cast<uint4 *> (b + 16) = p[1];
      if constexpr (TYPE == T_Q4_K)
        {
          /* repacked: bytes 4 + 4 g: scale 2g, scale 2g+1, min 2g, min 2g+1 */
          sc = h[4 + 4 * g + (sb & 1)];
          mn = h[4 + 4 * g + 2 + (sb & 1)];
#pragma unroll
          for (int l = 0; l < 32; l++)
            v[l] = (b[l] >> sh) & 15;
        }
      else
        {
          k_scale_min6 (h + 4, sb, &sc, &mn);
#pragma unroll
          for (int l = 0; l < 32; l++)
            v[l] = ((b[l] >> sh) & 15) | (((h[16 + l] >> sb) & 1) << 4);
        }
      *a0 = *a1 = h2f (h) * (float) sc;
      *c = -h2f (h + 2) * (float) mn;
    }
  else if constexpr (TYPE == T_Q6_K)
    {
      /* sub-block j = kb % 8: half hf = j / 4, jj = j % 4; value 32 jj + l of
       * the half has its low bits in ql byte hf*64 + (32 jj + l) % 64 (high
       * nibble when jj >= 2) and its top bits in qh byte 128 + hf*32 + l,
       * bits 2 jj .. 2 jj + 1 */
      const size_t blk = row * (size_t) (nb32 / 8) + kb / 8;
      const int j = kb & 7, hf = j >> 2, jj = j & 3;
      const uint8_t *blkp = pay + blk * 192;
      const uint8_t *h = hdr + blk * 18;
      uint8_t qh[32];
      const uint4 *pl = reinterpret_cast<const uint4 *> (blkp + hf * 64 + 32 * (jj & 1));
      const uint4 *ph = reinterpret_cast<const uint4 *> (blkp + 128 + hf * 32);
      *reinterpret_cast<uint4 *> (b) = pl[0];
      *reinterpret_cast<uint4 *> (b + 16) = pl[1];
      *reinterpret_cast<uint4 *> (qh) = ph[0];
      *reinterpret_cast<uint4 *> (qh + 16) = ph[1];
      const int nsh = (jj >> 1) * 4;
#pragma unroll
      for (int l = 0; l < 32; l++)
        v[l] = (((b[l] >> nsh) & 15) | (((qh[l] >> (2 * jj)) & 3) << 4)) - 32;
      /* GGUF scale k sits at repacked byte 2 (4 (k / 8) + k % 4) + (k / 4) % 2 */
      const int k0 = 2 * j, k1 = 2 * j + 1;
      const int8_t *sc = reinterpret_cast<const int8_t *> (h);
      const float d = h2f (h + 16);
      *a0 = d * (float) sc[2 * (4 * (k0 >> 3) + (k0 & 3)) + ((k0 >> 2) & 1)];
      *a1 = d * (float) sc[2 * (4 * (k1 >> 3) + (k1 & 3)) + ((k1 >> 2) & 1)];
      *c = 0.f;
    }
}

MMQ_HD uint32_t
pack4 (const int *v)
{
  return (uint32_t) (v[0] & 255) | ((uint32_t) (v[1] & 255) << 8)
         | ((uint32_t) (v[2] & 255) << 16) | ((uint32_t) (v[3] & 255) << 24);
}

__device__ __forceinline__ void
mma_s8 (int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
        uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile ("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
#else
  /* no int8 mma before sm_80: bln_kernels_mmq refuses such GPUs, so this
   * is never reached */
  d[0] = d[1] = d[2] = d[3] = 0;
  __trap ();
#endif
}

/* Rounds n_tok rows of n_in floats into xq / xd (float2: d, d * sum) / xs
 * (unused here, written by xq_store32). One thread per value. */
__global__ void
mmq_quant_kernel (const float *__restrict__ x, size_t n, int8_t *xq, float2 *xd, float4 *xs)
{
  bln_pdl_wait ();
  const size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  /* n is a multiple of 32 and blocks of 256 threads, so a warp is either
   * wholly inside or wholly past the end */
  if (i >= n)
    return;
  xq_store32 (x[i], i, xq, xd, xs);
}

/* Grid: x = token tiles (fastest, so that the blocks sharing weight rows
 * run together and the weights come from memory once), y = row tiles. */
template <int TYPE>
__global__ void __launch_bounds__ (MMQ_THREADS)
mmq_kernel (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, int n_in,
            int n_out, const int8_t *__restrict__ xq, const float2 *__restrict__ xd, int n_tok,
            float *__restrict__ y, int ldy, int accumulate, int split_steps)
{
  __shared__ __align__ (16) uint8_t s_w[MMQ_ROWS * MMQ_STRIDE];
  __shared__ __align__ (16) uint8_t s_x[MMQ_TOKS * MMQ_STRIDE];
  __shared__ float s_a0[MMQ_ROWS][MMQ_SUB], s_a1[MMQ_ROWS][MMQ_SUB], s_c[MMQ_ROWS][MMQ_SUB];
  __shared__ float s_dx[MMQ_TOKS][MMQ_SUB], s_sx[MMQ_TOKS][MMQ_SUB];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int tok0 = blockIdx.x * MMQ_TOKS, row0 = blockIdx.y * MMQ_ROWS;
  /* warp w: rows wr .. wr + 15 and tokens wt .. wt + 31 of the tile */
  const int wr = 16 * (warp & 1), wt = 32 * (warp >> 1);
  const int nb32 = n_in / 32;
  /* this thread's weight block in each K step */
  const int dr = tid / MMQ_SUB, ds = tid % MMQ_SUB;
  const size_t drow = (size_t) min (row0 + dr, n_out - 1);
  float acc[4][4];

#pragma unroll
  for (int n = 0; n < 4; n++)
#pragma unroll
    for (int i = 0; i < 4; i++)
      acc[n][i] = 0.f;

  bln_pdl_wait ();

  /* split K (blockIdx.z): this block's share of the K steps */
  const int k_beg = blockIdx.z * split_steps * MMQ_SUB;
  const int k_end = min (nb32, k_beg + split_steps * MMQ_SUB);

  for (int k0 = k_beg; k0 < k_end; k0 += MMQ_SUB)
    {
      /* weights: one 32-value block per thread; blocks past n_in are
       * zero (rows past n_out repeat the last row, never stored) */
      {
        const int kb = k0 + ds;
        int v[32];
        float a0 = 0.f, a1 = 0.f, c = 0.f;
        uint4 *dst = reinterpret_cast<uint4 *> (s_w + dr * MMQ_STRIDE + ds * 32);

        if (kb < nb32)
          {
            decode32<TYPE> (pay, hdr, drow, nb32, kb, v, &a0, &a1, &c);
            dst[0] = make_uint4 (pack4 (v), pack4 (v + 4), pack4 (v + 8), pack4 (v + 12));
            dst[1] = make_uint4 (pack4 (v + 16), pack4 (v + 20), pack4 (v + 24), pack4 (v + 28));
          }
        else
          dst[0] = dst[1] = make_uint4 (0, 0, 0, 0);
        s_a0[dr][ds] = a0;
        s_a1[dr][ds] = a1;
        s_c[dr][ds] = c;
      }
      /* activations: MMQ_TOKS × MMQ_KV bytes in 16-byte pieces */
#pragma unroll
      for (int p = tid; p < MMQ_TOKS * MMQ_KV / 16; p += MMQ_THREADS)
        {
          const int tt = p / (MMQ_KV / 16), piece = p % (MMQ_KV / 16);
          const int kb = k0 + piece / 2;
          const int tok = tok0 + tt;
          uint4 val = make_uint4 (0, 0, 0, 0);
          if (tok < n_tok && kb < nb32)
            val = *reinterpret_cast<const uint4 *> (xq + (size_t) tok * n_in + (size_t) k0 * 32
                                                    + piece * 16);
          *reinterpret_cast<uint4 *> (s_x + tt * MMQ_STRIDE + piece * 16) = val;
        }
#pragma unroll
      for (int p = tid; p < MMQ_TOKS * MMQ_SUB; p += MMQ_THREADS)
        {
          const int tt = p / MMQ_SUB, j = p % MMQ_SUB;
          const int kb = k0 + j, tok = tok0 + tt;
          float2 dv = make_float2 (0.f, 0.f);
          if (tok < n_tok && kb < nb32)
            dv = xd[(size_t) tok * nb32 + kb];
          s_dx[tt][j] = dv.x;
          s_sx[tt][j] = dv.y;
        }
      __syncthreads ();

#pragma unroll
      for (int j = 0; j < MMQ_SUB; j++)
        {
          const uint8_t *wa = s_w + (wr + g) * MMQ_STRIDE + 32 * j + 4 * t;
          const uint32_t a0 = *reinterpret_cast<const uint32_t *> (wa);
          const uint32_t a1 = *reinterpret_cast<const uint32_t *> (wa + 8 * MMQ_STRIDE);
          const uint32_t a2 = *reinterpret_cast<const uint32_t *> (wa + 16);
          const uint32_t a3 = *reinterpret_cast<const uint32_t *> (wa + 8 * MMQ_STRIDE + 16);
          const float wa0_lo = s_a0[wr + g][j], wa0_hi = s_a0[wr + g + 8][j];
          const float wa1_lo = s_a1[wr + g][j], wa1_hi = s_a1[wr + g + 8][j];
          const float wc_lo = s_c[wr + g][j], wc_hi = s_c[wr + g + 8][j];

#pragma unroll
          for (int n = 0; n < 4; n++)
            {
              const uint8_t *xb = s_x + (wt + 8 * n + g) * MMQ_STRIDE + 32 * j + 4 * t;
              const uint32_t b0 = *reinterpret_cast<const uint32_t *> (xb);
              const uint32_t b1 = *reinterpret_cast<const uint32_t *> (xb + 16);
              /* this thread's outputs: tokens wt + 8n + 2t (+1) */
              const int tc = wt + 8 * n + 2 * t;
              const float dx0 = s_dx[tc][j], dx1 = s_dx[tc + 1][j];
              const float sx0 = s_sx[tc][j], sx1 = s_sx[tc + 1][j];
              int r[4];

              if constexpr (TYPE == T_Q6_K)
                {
                  int r2[4];
                  mma_s8 (r, a0, a1, 0u, 0u, b0, b1);
                  mma_s8 (r2, 0u, 0u, a2, a3, b0, b1);
                  acc[n][0] += dx0 * (wa0_lo * (float) r[0] + wa1_lo * (float) r2[0]);
                  acc[n][1] += dx1 * (wa0_lo * (float) r[1] + wa1_lo * (float) r2[1]);
                  acc[n][2] += dx0 * (wa0_hi * (float) r[2] + wa1_hi * (float) r2[2]);
                  acc[n][3] += dx1 * (wa0_hi * (float) r[3] + wa1_hi * (float) r2[3]);
                }
              else
                {
                  mma_s8 (r, a0, a1, a2, a3, b0, b1);
                  acc[n][0] += wa0_lo * dx0 * (float) r[0] + wc_lo * sx0;
                  acc[n][1] += wa0_lo * dx1 * (float) r[1] + wc_lo * sx1;
                  acc[n][2] += wa0_hi * dx0 * (float) r[2] + wc_hi * sx0;
                  acc[n][3] += wa0_hi * dx1 * (float) r[3] + wc_hi * sx1;
                }
            }
          (void) wa1_lo;
          (void) wa1_hi;
        }
      __syncthreads ();
    }

#pragma unroll
  for (int n = 0; n < 4; n++)
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        const int row = row0 + wr + g + 8 * (i >> 1);
        const int tok = tok0 + wt + 8 * n + 2 * t + (i & 1);
        if (row < n_out && tok < n_tok)
          {
            float *o = y + (size_t) tok * ldy + row;
            if (gridDim.z > 1)
              atomicAdd (o, acc[n][i]);   /* zeroed first unless accumulating */
            else
              *o = accumulate ? *o + acc[n][i] : acc[n][i];
          }
      }
}

/* The activation scratch, one per device, grown on demand (like the
 * matvec's, calls on different streams of one device must not overlap).
 * Growing frees the old buffers, which waits for the device: the first call
 * of a new largest size should not be inside a graph capture. */
constexpr int MMQ_MAX_DEVICES = 64;

struct Scratch
{
  int8_t *q = nullptr;
  float2 *d = nullptr;
  float4 *s = nullptr;
  size_t cap = 0;   /* values */
};

std::mutex g_scratch_lock;
Scratch g_scratch[MMQ_MAX_DEVICES];

cudaError_t
scratch_get (size_t n, int8_t **q, float2 **d, float4 **xs)
{
  std::lock_guard<std::mutex> guard (g_scratch_lock);
  int dev = 0;
  cudaError_t err;

  if ((err = cudaGetDevice (&dev)) != cudaSuccess)
    return err;
  if (dev < 0 || dev >= MMQ_MAX_DEVICES)
    return cudaErrorInvalidDevice;
  Scratch &s = g_scratch[dev];
  if (n > s.cap)
    {
      size_t cap = n < ((size_t) 1 << 20) ? (size_t) 1 << 20 : n + n / 4;
      cap = (cap + 255) / 256 * 256;
      (void) cudaFree (s.q);
      (void) cudaFree (s.d);
      (void) cudaFree (s.s);
      s = Scratch ();
      if ((err = cudaMalloc (&s.q, cap)) != cudaSuccess
          || (err = cudaMalloc (&s.d, cap / 32 * sizeof (float2))) != cudaSuccess
          || (err = cudaMalloc (&s.s, cap / 32 * sizeof (float4))) != cudaSuccess)
        {
          (void) cudaFree (s.q);
          (void) cudaFree (s.d);
          s = Scratch ();
          return err;
        }
      s.cap = cap;
    }
  *q = s.q;
  *d = s.d;
  *xs = s.s;
  return cudaSuccess;
}

template <int TYPE>
cudaError_t
launch_mmq (const void *payload, const void *header, int n_in, int n_out, const int8_t *xq,
            const float2 *xd, int n_tok, float *y, int ldy, int accumulate, cudaStream_t stream)
{
  const int tiles_t = (n_tok + MMQ_TOKS - 1) / MMQ_TOKS;
  const int tiles_r = (n_out + MMQ_ROWS - 1) / MMQ_ROWS;
  const int steps = (n_in / 32 + MMQ_SUB - 1) / MMQ_SUB;
  const long base = (long) tiles_t * tiles_r, want = 4L * bln_sm_count ();
  int split = 1, split_steps;

  /* Few tiles (few tokens, or few rows): split K over blockIdx.z so that
   * enough blocks stream the weights, each keeping at least 4 steps; the
   * partial sums meet through atomicAdd (so their order, and the last bits
   * of the result, vary from run to run). Many tiles: one block per tile,
   * deterministic. */
  if (base < want)
    split = (int) std::min<long> ((want + base - 1) / base, std::max (1, steps / 4));
  split = std::min (split, 64);
  split_steps = (steps + split - 1) / split;
  split = (steps + split_steps - 1) / split_steps;
  if (split > 1 && !accumulate)
    {
      cudaError_t err = cudaMemset2DAsync (y, (size_t) ldy * sizeof (float), 0,
                                           (size_t) n_out * sizeof (float), (size_t) n_tok,
                                           stream);
      if (err != cudaSuccess)
        return err;
    }
  const dim3 grid ((unsigned) tiles_t, (unsigned) tiles_r, (unsigned) split);
  (void) bln_launch (mmq_kernel<TYPE>, grid, dim3 (MMQ_THREADS), 0, stream,
                     static_cast<const uint8_t *> (payload), static_cast<const uint8_t *> (header),
                     n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, split_steps);
  return cudaGetLastError ();
}

} /* namespace */

extern "C" int
bln_kernels_mmq_supports (int type)
{
  switch (type)
    {
    case T_Q8_0:
    case T_Q4_0:
    case T_Q4_1:
    case T_Q5_0:
    case T_Q5_1:
    case T_Q4_K:
    case T_Q5_K:
    case T_Q6_K:
      return bln_device_sm80 () ? 1 : 0;
    default:
      return 0;
    }
}

extern "C" cudaError_t
bln_kernels_mmq (int type, const void *payload, const void *header, int n_in, int n_out,
                 const float *x, int n_tok, float *y, int ldy, int flags, cudaStream_t stream)
{
  const int accumulate = (flags & BLN_KERNELS_MATVEC_ACCUMULATE) != 0;
  const int vpb = (type == T_Q4_K || type == T_Q5_K || type == T_Q6_K) ? 256 : 32;
  int8_t *xq;
  float2 *xd;
  float4 *xs;
  cudaError_t err;

  if (ldy == 0)
    ldy = n_out;
  if (!bln_kernels_mmq_supports (type))
    return cudaErrorNotSupported;
  if (!payload || !header || !x || !y || n_in <= 0 || n_out <= 0 || n_tok < 1 || ldy < n_out
      || n_in % vpb != 0 || n_tok > 65535 * MMQ_TOKS || n_out > 65535 * MMQ_ROWS)
    return cudaErrorInvalidValue;
  const size_t n = (size_t) n_tok * n_in;
  if ((err = scratch_get (n, &xq, &xd, &xs)) != cudaSuccess)
    return err;
  (void) bln_launch (mmq_quant_kernel, dim3 ((unsigned) ((n + 255) / 256)), dim3 (256), 0, stream,
                     x, n, xq, xd, xs);
  if ((err = cudaGetLastError ()) != cudaSuccess)
    return err;

  switch (type)
    {
    case T_Q8_0: return launch_mmq<T_Q8_0> (payload, header, n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, stream);
    case T_Q4_0: return launch_mmq<T_Q4_0> (payload, header, n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, stream);
    case T_Q4_1: return launch_mmq<T_Q4_1> (payload, header, n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, stream);
    case T_Q5_0: return launch_mmq<T_Q5_0> (payload, header, n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, stream);
    case T_Q5_1: return launch_mmq<T_Q5_1> (payload, header, n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, stream);
    case T_Q4_K: return launch_mmq<T_Q4_K> (payload, header, n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, stream);
    case T_Q5_K: return launch_mmq<T_Q5_K> (payload, header, n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, stream);
    case T_Q6_K: return launch_mmq<T_Q6_K> (payload, header, n_in, n_out, xq, xd, n_tok, y, ldy, accumulate, stream);
    default: return cudaErrorNotSupported;
    }
}
