/* kernels/mmf.cu — quantised weights times F16 activations on the F16
 * tensor cores, the weights decoded in registers ("MMF").
 *
 * For the batched decode of the serving engine: 9 .. a few hundred token
 * rows, where the matvec kernels run out of integer ALU (each weight byte
 * costs n_tok dot-product steps) and dequantising every weight to F16 for
 * cuBLAS writes and rereads 3.6 times the quantised bytes per call. Here
 * each weight byte is read once from memory, decoded once into F16 in
 * registers, and used for every token of the call.
 *
 * Method:
 *
 *  1. the float activations are converted to F16 into a scratch of this
 *     file, each group of 8 values stored in the order 0 2 1 3 4 6 5 7 (see
 *     below), so that a thread's operand for two products is one 16-byte
 *     load;
 *  2. a thread block of 4 warps owns 128 output rows, a range of K (split
 *     over blockIdx.y when there are few row blocks, so that every SM
 *     streams weights) and 8 NT tokens (blockIdx.z walks the tokens). Each
 *     warp owns 32 rows: two 16-row tiles of mma.m16n8k16 (F16 × F16 → F32);
 *  3. per 256 weights of a row (one Q4_K or Q6_K block, eight Q8_0 blocks) a
 *     lane loads, for each of its four rows, the 8 bytes per 32-value
 *     sub-block that its fragment needs straight from global memory (the
 *     four lanes of a quad read 32 consecutive bytes: whole sectors), then
 *     expands them to F16 with the block scales applied — w = q S + M in one
 *     F16 fused multiply-add, S = d · scale and M = -dmin · min rounded to
 *     F16 once — and runs the products for all its tokens;
 *  4. split K: each part writes its partial sums to a scratch and a second
 *     kernel adds them in a fixed order (deterministic: the same bits every
 *     run), then accumulates into y or stores.
 *
 * The fragment order. mma.m16n8k16.row.col takes, per lane 4 g + t, A
 * registers a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9],
 * a3 = A[g+8][2t+8, 2t+9] and B registers b0 = B[2t, 2t+1][g], b1 = B[2t+8,
 * 2t+9][g]; C c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]. The sum
 * over k does not care which value is called which k, as long as A and B
 * agree. Lane t takes values 8t .. 8t+7 of each 32-value sub-block; the
 * cheapest way to widen four packed quants of a 32-bit word into two F16
 * pairs gives the pairs (0, 2) and (1, 3) (bytes 0 and 2 land in the two
 * halves of one mask), so the first product gets values 0 2 | 1 3 as k 2t,
 * 2t+1 | 2t+8, 2t+9 and the second 4 6 | 5 7. The activations are stored in
 * that order, and one 16-byte load gives b0 b1 of both products.
 *
 * Precision: F16 activations (11-bit significand) and weights rounded to
 * F16 after scaling, F32 accumulation — the class of the dequantise +
 * cublasGemmEx path (which rounds the weights to F16 once, here S and M are
 * rounded too). Activations beyond the F16 range (65504) would overflow;
 * the model's hidden states stay far below it, as the prefill path already
 * assumes.
 *
 * Types: Q4_K, Q6_K, Q8_0, rows a multiple of 256 values (the Q4_K_M and
 * Q8_0 files of the 7B); the others return cudaErrorNotSupported and the
 * callers keep their other paths. Needs sm_80 (mma.m16n8k16 F16 with F32
 * accumulation; for older GPUs the kernel is compiled without the mma and
 * bln_kernels_mmf_supports() says no, so it is never launched there). */
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels.h"
#include "launch.cuh"
#include "device-util.cuh"

namespace {

enum { T_Q8_0 = 8, T_Q4_K = 12, T_Q6_K = 14 };

constexpr int MMF_WARPS = 4;
constexpr int MMF_ROWS = 32 * MMF_WARPS;   /* output rows per thread block */
constexpr int MMF_UNIT = 256;              /* weights per row per step */

/* F16 pairs as 32-bit words */
__device__ __forceinline__ uint32_t
h2_sub (uint32_t a, uint32_t b)
{
  uint32_t r;
  asm ("sub.rn.f16x2 %0, %1, %2;" : "=r" (r) : "r" (a), "r" (b));
  return r;
}

__device__ __forceinline__ uint32_t
h2_mul (uint32_t a, uint32_t b)
{
  uint32_t r;
  asm ("mul.rn.f16x2 %0, %1, %2;" : "=r" (r) : "r" (a), "r" (b));
  return r;
}

__device__ __forceinline__ uint32_t
h2_fma (uint32_t a, uint32_t b, uint32_t c)
{
  uint32_t r;
  asm ("fma.rn.f16x2 %0, %1, %2, %3;" : "=r" (r) : "r" (a), "r" (b), "r" (c));
  return r;
}

/* both halves = the low (high) half of x */
__device__ __forceinline__ uint32_t
h2_lo (uint32_t x)
{
  return __byte_perm (x, 0, 0x1010);
}

__device__ __forceinline__ uint32_t
h2_hi (uint32_t x)
{
  return __byte_perm (x, 0, 0x3232);
}

constexpr uint32_t H1024 = 0x64006400u;   /* F16 1024.0 twice */

/* Four unsigned 4-bit (or up to 8-bit) values in bytes 0..3 of v (masked to
 * the low byte of each 16-bit lane by @m) as F16 pairs 1024 + value:
 * out[0] = bytes (0, 2), out[1] = bytes (1, 3). */
__device__ __forceinline__ void
widen (uint32_t v, uint32_t m, uint32_t &p02, uint32_t &p13)
{
  p02 = (v & m) | H1024;
  p13 = ((v >> 8) & m) | H1024;
}

/* Q4_K (split layout, kernels.h): payload 128 bytes, run j (bytes 32 j ..
 * 32 j + 31) holds value i of sub-block 2 j in the low nibble of byte i and
 * of sub-block 2 j + 1 in the high one; header d, dmin (F16), then per run
 * j the bytes scale 2j, scale 2j+1, min 2j, min 2j+1. */
struct FQ4_K
{
  static constexpr int PAY = 128, HDR = 20, BPU = 1;   /* blocks per unit */
  struct Raw { uint2 q[4]; uint32_t dd, sm[4]; };

  static __device__ void
  load (Raw &r, const uint8_t *pay, const uint8_t *hdr, int t)
  {
#pragma unroll
    for (int j = 0; j < 4; j++)
      r.q[j] = ldg_stream8 (pay + 32 * j + 8 * t);
    r.dd = ldg_u32 (hdr);
#pragma unroll
    for (int j = 0; j < 4; j++)
      r.sm[j] = ldg_u32 (hdr + 4 + 4 * j);
  }

  /* lane t's values 8t .. 8t+7 of sub-blocks 2j and 2j+1 as F16 pairs in
   * fragment order: lo[0..3] for sub-block 2j, hi[0..3] for 2j+1 */
  static __device__ void
  frag2 (const Raw &r, int j, uint32_t lo[4], uint32_t hi[4])
  {
    /* (scale, min) of both sub-blocks as F16 pairs, times (d, -dmin) */
    const uint32_t dm = r.dd ^ 0x80000000u;   /* (d, -dmin) */
    const uint32_t sm0 = h2_mul (h2_sub ((r.sm[j] & 0x00ff00ffu) | H1024, H1024), dm);
    const uint32_t sm1 = h2_mul (h2_sub (((r.sm[j] >> 8) & 0x00ff00ffu) | H1024, H1024), dm);
    const uint32_t s0 = h2_lo (sm0), m0 = h2_hi (sm0), s1 = h2_lo (sm1), m1 = h2_hi (sm1);
    const uint32_t w[2] = { r.q[j].x, r.q[j].y };

#pragma unroll
    for (int k = 0; k < 2; k++)
      {
        uint32_t a, b;

        widen (w[k], 0x000f000fu, a, b);
        lo[2 * k] = h2_fma (h2_sub (a, H1024), s0, m0);
        lo[2 * k + 1] = h2_fma (h2_sub (b, H1024), s0, m0);
        widen (w[k] >> 4, 0x000f000fu, a, b);
        hi[2 * k] = h2_fma (h2_sub (a, H1024), s1, m1);
        hi[2 * k + 1] = h2_fma (h2_sub (b, H1024), s1, m1);
      }
  }

  /* sub-block s (0..7) of the unit: run s / 2, low or high nibbles */
  static __device__ void
  frag (const Raw &r, int s, uint32_t v[4])
  {
    uint32_t lo[4], hi[4];

    frag2 (r, s >> 1, lo, hi);
#pragma unroll
    for (int i = 0; i < 4; i++)
      v[i] = (s & 1) ? hi[i] : lo[i];
  }
};

/* Q6_K (split layout): payload ql[128] then qh[64]; header the sixteen int8
 * scales reordered (bytes 2s, 2s+1 = scale 8 (s/4) + s%4 and the one four
 * places later), then d. In half n of the block, byte l < 32 of ql (at 64 n
 * + l) holds value 128 n + l (low nibble) and 128 n + 64 + l (high), byte 32
 * + l holds 128 n + 32 + l and 128 n + 96 + l, and qh byte 32 n + l the two
 * high bits of all four (bits 0, 2, 4, 6); value = d scale (q - 32) with
 * scale 8 n + l / 16 + 2 c for the c-th of the four. */
struct FQ6_K
{
  static constexpr int PAY = 192, HDR = 18, BPU = 1;
  struct Raw { uint2 qa[2], qb[2], qh[2]; uint32_t sc[2][2], d; };

  static __device__ void
  load (Raw &r, const uint8_t *pay, const uint8_t *hdr, int t)
  {
    const int is = t >> 1;

#pragma unroll
    for (int n = 0; n < 2; n++)
      {
        r.qa[n] = ldg_stream8 (pay + 64 * n + 8 * t);
        r.qb[n] = ldg_stream8 (pay + 64 * n + 32 + 8 * t);
        r.qh[n] = ldg_stream8 (pay + 128 + 32 * n + 8 * t);
        /* (scale for c = 0, c = 2) and (c = 1, c = 3) */
        r.sc[n][0] = ldg_u16 (hdr + 2 * (4 * n + is));
        r.sc[n][1] = ldg_u16 (hdr + 2 * (4 * n + is + 2));
      }
    r.d = ldg_u16 (hdr + 16);
  }

  /* sub-block s = 4 n + c */
  static __device__ void
  frag (const Raw &r, int s, uint32_t v[4])
  {
    const int n = s >> 2, c = s & 3;
    /* int8 scales of (c, c + 2) as F16 pairs 1024 + 128 + scale */
    const uint32_t sp = __byte_perm (r.sc[n][c & 1] ^ 0x8080u, 0x64646464u, 0x4140);
    const uint32_t sd = h2_mul (h2_sub (sp, 0x64806480u), h2_lo (r.d));
    const uint32_t S = (c & 2) ? h2_hi (sd) : h2_lo (sd);
    const uint2 ql = (c & 1) ? r.qb[n] : r.qa[n];
    const uint32_t w[2] = { ql.x, ql.y }, h[2] = { r.qh[n].x, r.qh[n].y };

#pragma unroll
    for (int k = 0; k < 2; k++)
      {
        /* 6-bit values of this sub-block in the four bytes */
        const uint32_t lo4 = (c & 2) ? (w[k] >> 4) & 0x0f0f0f0fu : w[k] & 0x0f0f0f0fu;
        const uint32_t hb = c == 0 ? h[k] << 4 : c == 1 ? h[k] << 2 : c == 2 ? h[k] : h[k] >> 2;
        uint32_t a, b;

        widen (lo4 | (hb & 0x30303030u), 0x00ff00ffu, a, b);
        /* 1024 + q - 1056 = q - 32, exact */
        v[2 * k] = h2_mul (h2_sub (a, 0x64206420u), S);
        v[2 * k + 1] = h2_mul (h2_sub (b, 0x64206420u), S);
      }
  }
};

/* Q8_0 (split layout): payload 32 int8 per block, header d. A unit is 8
 * blocks. */
struct FQ8_0
{
  static constexpr int PAY = 32, HDR = 2, BPU = 8;
  struct Raw { uint2 q[8]; uint32_t d[4]; };

  static __device__ void
  load (Raw &r, const uint8_t *pay, const uint8_t *hdr, int t)
  {
#pragma unroll
    for (int b = 0; b < 8; b++)
      r.q[b] = ldg_stream8 (pay + 32 * b + 8 * t);
#pragma unroll
    for (int b = 0; b < 4; b++)
      r.d[b] = ldg_u16 (hdr + 4 * b) | (ldg_u16 (hdr + 4 * b + 2) << 16);
  }

  static __device__ void
  frag (const Raw &r, int s, uint32_t v[4])
  {
    const uint32_t d = (s & 1) ? h2_hi (r.d[s >> 1]) : h2_lo (r.d[s >> 1]);
    const uint32_t w[2] = { r.q[s].x ^ 0x80808080u, r.q[s].y ^ 0x80808080u };

#pragma unroll
    for (int k = 0; k < 2; k++)
      {
        /* bytes (0, 2) and (1, 3) as F16 1024 + 128 + q, less 1152 */
        v[2 * k] = h2_mul (h2_sub (__byte_perm (w[k], 0x64646464u, 0x4240), 0x64806480u), d);
        v[2 * k + 1] = h2_mul (h2_sub (__byte_perm (w[k], 0x64646464u, 0x4341), 0x64806480u), d);
      }
  }
};

/* Converts n_tok rows of n_in floats (n_in a multiple of 8) to F16 in
 * fragment order: one thread per group of 8. */
__global__ void
mmf_convert_kernel (const float *__restrict__ x, size_t n_groups, uint4 *__restrict__ xh)
{
  const size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;

  bln_pdl_wait ();
  if (i >= n_groups)
    return;
  const float4 a = reinterpret_cast<const float4 *> (x)[2 * i];
  const float4 b = reinterpret_cast<const float4 *> (x)[2 * i + 1];
  auto pack = [] (float lo, float hi) {
    const __half2 h = __floats2half2_rn (lo, hi);
    uint32_t r;
    memcpy (&r, &h, 4);
    return r;
  };
  xh[i] = make_uint4 (pack (a.x, a.z), pack (a.y, a.w), pack (b.x, b.z), pack (b.y, b.w));
}

/* The product. Block (bx, by, bz): rows 128 bx .. (warp w: 32 w + 0..31),
 * units [by * ups, (by + 1) * ups) of K, tokens 8 NT bz .. ; rows past n_out
 * and tokens past n_tok are clamped for reading and never written. With
 * gridDim.y > 1 the sums go to part[by][tok][row] (mmf_reduce_kernel adds
 * them), else to y. */
template <class T, int NT, bool PF>
__global__ void __launch_bounds__ (MMF_WARPS * 32)
mmf_kernel (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, int n_units,
            int ups, int n_in, int n_out, const uint4 *__restrict__ xh, int n_tok,
            float *__restrict__ y, int ldy, int accumulate, float *__restrict__ part)
{
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.x * MMF_ROWS + (threadIdx.x >> 5) * 32;
  const int tok0 = blockIdx.z * 8 * NT;
  const int u0 = blockIdx.y * ups, u1 = min (n_units, u0 + ups);
  const size_t row_units = (size_t) n_units * T::BPU;   /* blocks per row */
  const uint8_t *pr[4], *hr[4];
  const uint4 *xr[NT];
  float acc[2][NT][4];

  if (row0 >= n_out)
    return;   /* the whole warp */
#pragma unroll
  for (int i = 0; i < 4; i++)
    {
      /* rows g, g + 8, 16 + g, 24 + g */
      const size_t row = (size_t) min (row0 + g + 8 * i, n_out - 1);
      const size_t blk = row * row_units + (size_t) u0 * T::BPU;
      pr[i] = pay + blk * T::PAY;
      hr[i] = hdr + blk * T::HDR;
    }
#pragma unroll
  for (int n = 0; n < NT; n++)
    {
      const int tok = min (tok0 + 8 * n + g, n_tok - 1);
      /* 16-byte groups: 4 per 32 values; lane t's is the t-th */
      xr[n] = xh + ((size_t) tok * n_in + (size_t) u0 * MMF_UNIT) / 8 + t;
    }
#pragma unroll
  for (int m = 0; m < 2; m++)
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int i = 0; i < 4; i++)
        acc[m][n][i] = 0.f;

  /* with PF, the next unit's weights are loaded into a second set of
   * registers before this unit's products (more bytes in flight per warp,
   * more registers) */
  typename T::Raw raw[4], nxt[PF ? 4 : 1];

  /* the weights need nothing from the previous kernel */
  if (u0 < u1)
#pragma unroll
    for (int i = 0; i < 4; i++)
      T::load (raw[i], pr[i], hr[i], t);
  bln_pdl_wait ();

  for (int u = u0; u < u1; u++)
    {
      if (PF && u + 1 < u1)
#pragma unroll
        for (int i = 0; i < 4; i++)
          T::load (nxt[PF ? i : 0], pr[i] + T::BPU * T::PAY, hr[i] + T::BPU * T::HDR, t);
#pragma unroll
      for (int s = 0; s < 8; s++)
        {
          uint4 b[NT];

#pragma unroll
          for (int n = 0; n < NT; n++)
            b[n] = __ldg (xr[n] + 4 * s);
#pragma unroll
          for (int m = 0; m < 2; m++)
            {
              uint32_t a[4], c[4];

              T::frag (raw[2 * m], s, a);       /* row g of the tile */
              T::frag (raw[2 * m + 1], s, c);   /* row g + 8 */
#pragma unroll
              for (int n = 0; n < NT; n++)
                {
                  mma16816 (acc[m][n], a[0], c[0], a[1], c[1], b[n].x, b[n].y);
                  mma16816 (acc[m][n], a[2], c[2], a[3], c[3], b[n].z, b[n].w);
                }
            }
        }
#pragma unroll
      for (int n = 0; n < NT; n++)
        xr[n] += MMF_UNIT / 8;
#pragma unroll
      for (int i = 0; i < 4; i++)
        {
          pr[i] += T::BPU * T::PAY;
          hr[i] += T::BPU * T::HDR;
        }
      if (u + 1 < u1)
#pragma unroll
        for (int i = 0; i < 4; i++)
          {
            if (PF)
              raw[i] = nxt[PF ? i : 0];
            else
              T::load (raw[i], pr[i], hr[i], t);
          }
    }

#pragma unroll
  for (int m = 0; m < 2; m++)
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int i = 0; i < 4; i++)
        {
          const int row = row0 + 16 * m + g + 8 * (i >> 1);
          const int tok = tok0 + 8 * n + 2 * t + (i & 1);

          if (row >= n_out || tok >= n_tok)
            continue;
          if (part != nullptr)
            part[((size_t) blockIdx.y * n_tok + tok) * n_out + row] = acc[m][n][i];
          else
            {
              float *o = y + (size_t) tok * ldy + row;
              *o = accumulate ? *o + acc[m][n][i] : acc[m][n][i];
            }
        }
}

/* y[tok][row] (+)= the sum of the parts, in part order (the same bits every
 * run). */
__global__ void
mmf_reduce_kernel (const float *__restrict__ part, int n_parts, int n_tok, int n_out,
                   float *__restrict__ y, int ldy, int accumulate)
{
  const size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  const size_t plane = (size_t) n_tok * n_out;

  bln_pdl_wait ();
  if (i >= plane)
    return;
  const int tok = (int) (i / n_out), row = (int) (i % n_out);
  float s = 0.f;
  for (int p = 0; p < n_parts; p++)
    s += part[(size_t) p * plane + i];
  float *o = y + (size_t) tok * ldy + row;
  *o = accumulate ? *o + s : s;
}

/* Scratch, one per device, grown on demand: the activations in F16 and the
 * parts of a split K. Growing frees the old buffers, which waits for the
 * device, so the first call of a new largest size should not be inside a
 * graph capture; calls on different streams of one device must not
 * overlap. */
constexpr int MMF_MAX_DEVICES = 64;

struct Scratch
{
  void *xh = nullptr;
  size_t xh_cap = 0;   /* bytes */
  void *part = nullptr;
  size_t part_cap = 0;   /* bytes */
};

std::mutex g_lock;
Scratch g_scratch[MMF_MAX_DEVICES];

cudaError_t
grow (void **p, size_t *cap, size_t want)
{
  cudaError_t err;

  if (want <= *cap)
    return cudaSuccess;
  want = std::max (want + want / 4, (size_t) 1 << 20);
  want = (want + 255) / 256 * 256;
  (void) cudaFree (*p);
  *p = nullptr;
  *cap = 0;
  if ((err = cudaMalloc (p, want)) != cudaSuccess)
    {
      *p = nullptr;
      return err;
    }
  *cap = want;
  return cudaSuccess;
}

cudaError_t
scratch_get (size_t xh_bytes, size_t part_bytes, void **xh, float **part)
{
  std::lock_guard<std::mutex> guard (g_lock);
  int dev = 0;
  cudaError_t err;

  if ((err = cudaGetDevice (&dev)) != cudaSuccess)
    return err;
  if (dev < 0 || dev >= MMF_MAX_DEVICES)
    return cudaErrorInvalidDevice;
  Scratch &s = g_scratch[dev];
  if ((err = grow (&s.xh, &s.xh_cap, xh_bytes)) != cudaSuccess
      || (part_bytes > 0 && (err = grow (&s.part, &s.part_cap, part_bytes)) != cudaSuccess))
    return err;
  *xh = s.xh;
  *part = static_cast<float *> (s.part);
  return cudaSuccess;
}

/* Tokens per block: 8 NT, NT the smallest power of two covering n_tok, at
 * most BALEEN_CUDA_MMF_NT (default 8: 64 tokens; more tokens take several
 * blocks along z, each rereading the weights). Read once. */
int
max_nt ()
{
  static int n = 0;

  if (n == 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_MMF_NT");
      int v = env ? std::atoi (env) : 8;
      n = v >= 8 ? 8 : v >= 4 ? 4 : v >= 2 ? 2 : 1;
    }
  return n;
}

int
nt_for (int n_tok)
{
  int nt = 1;

  while (nt < max_nt () && 8 * nt < n_tok)
    nt *= 2;
  return nt;
}

/* Thread blocks wanted in flight: BALEEN_CUDA_MMF_BLOCKS, else three per
 * SM. Read once. */
long
blocks_wanted ()
{
  static long n = 0;

  if (n == 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_MMF_BLOCKS");
      long v = env ? std::strtol (env, nullptr, 10) : 0;
      n = v > 0 ? v : 3L * bln_sm_count ();
    }
  return n;
}

/* How many parts K is split into: the fewest that give about
 * blocks_wanted() blocks, each part at least two units of 256 weights
 * (measured on an H200, session 6: filling exactly one wave of resident
 * blocks with one-unit parts summed by the last block was slower). */
int
split_parts (int n_in, int n_out, int n_tok, int *ups)
{
  const int n_units = n_in / MMF_UNIT, nt = nt_for (n_tok);
  const long base = (long) ((n_out + MMF_ROWS - 1) / MMF_ROWS)
                    * ((n_tok + 8 * nt - 1) / (8 * nt));
  const long want = blocks_wanted ();
  int parts = 1;

  if (base < want)
    parts = (int) std::min<long> ((want + base - 1) / base, std::max (1, n_units / 2));
  parts = std::min (parts, 65535);
  *ups = (n_units + parts - 1) / parts;
  return (n_units + *ups - 1) / *ups;
}

template <class T, int NT>
cudaError_t
launch_nt (const uint8_t *pay, const uint8_t *hdr, int n_in, int n_out, const uint4 *xh,
           int n_tok, float *y, int ldy, int accumulate, float *part, int parts, int ups,
           cudaStream_t stream)
{
  /* prefetch where the registers allow (Q6_K's and Q8_0's raw sets are
   * larger) */
  constexpr bool PF = NT <= (sizeof (typename T::Raw) > 64 ? 2 : 4);
  const dim3 grid ((unsigned) ((n_out + MMF_ROWS - 1) / MMF_ROWS), (unsigned) parts,
                   (unsigned) ((n_tok + 8 * NT - 1) / (8 * NT)));

  return bln_launch (mmf_kernel<T, NT, PF>, grid, dim3 (MMF_WARPS * 32), 0, stream, pay, hdr,
                     n_in / MMF_UNIT, ups, n_in, n_out, xh, n_tok, y, ldy, accumulate,
                     parts > 1 ? part : static_cast<float *> (nullptr));
}

template <class T>
cudaError_t
launch_type (const void *payload, const void *header, int n_in, int n_out, const uint4 *xh,
             int n_tok, float *y, int ldy, int accumulate, float *part, int parts, int ups,
             cudaStream_t stream)
{
  const uint8_t *p = static_cast<const uint8_t *> (payload);
  const uint8_t *h = static_cast<const uint8_t *> (header);
  cudaError_t err;

  switch (nt_for (n_tok))
    {
    case 1: err = launch_nt<T, 1> (p, h, n_in, n_out, xh, n_tok, y, ldy, accumulate, part, parts, ups, stream); break;
    case 2: err = launch_nt<T, 2> (p, h, n_in, n_out, xh, n_tok, y, ldy, accumulate, part, parts, ups, stream); break;
    case 4: err = launch_nt<T, 4> (p, h, n_in, n_out, xh, n_tok, y, ldy, accumulate, part, parts, ups, stream); break;
    default: err = launch_nt<T, 8> (p, h, n_in, n_out, xh, n_tok, y, ldy, accumulate, part, parts, ups, stream); break;
    }
  if (err != cudaSuccess || parts == 1)
    return err;
  const size_t plane = (size_t) n_tok * n_out;
  return bln_launch (mmf_reduce_kernel, dim3 ((unsigned) ((plane + 255) / 256)), dim3 (256), 0,
                     stream, static_cast<const float *> (part), parts, n_tok, n_out, y, ldy,
                     accumulate);
}

} /* namespace */

extern "C" int
bln_kernels_mmf_supports (int type)
{
  switch (type)
    {
    case T_Q8_0:
    case T_Q4_K:
    case T_Q6_K:
      return bln_device_sm80 () ? 1 : 0;
    default:
      return 0;
    }
}

extern "C" cudaError_t
bln_kernels_mmf (int type, const void *payload, const void *header, int n_in, int n_out,
                 const float *x, int n_tok, float *y, int ldy, int flags, cudaStream_t stream)
{
  const int accumulate = (flags & BLN_KERNELS_MATVEC_ACCUMULATE) != 0;
  void *xh;
  float *part;
  int ups = 0;
  cudaError_t err;

  if (ldy == 0)
    ldy = n_out;
  if (!bln_kernels_mmf_supports (type))
    return cudaErrorNotSupported;
  if (!payload || !header || !x || !y || n_in <= 0 || n_out <= 0 || n_tok < 1 || ldy < n_out
      || n_in % MMF_UNIT != 0 || n_out > 65535 * MMF_ROWS || n_tok > 65535 * 8)
    return cudaErrorInvalidValue;
  const size_t n = (size_t) n_tok * n_in;
  const int parts = split_parts (n_in, n_out, n_tok, &ups);
  if ((err = scratch_get (n * sizeof (__half),
                          parts > 1 ? (size_t) parts * n_tok * n_out * sizeof (float) : 0, &xh,
                          &part)) != cudaSuccess)
    return err;
  if ((err = bln_launch (mmf_convert_kernel, dim3 ((unsigned) ((n / 8 + 255) / 256)), dim3 (256),
                         0, stream, x, n / 8, static_cast<uint4 *> (xh))) != cudaSuccess)
    return err;
  const uint4 *xq = static_cast<const uint4 *> (xh);
  switch (type)
    {
    case T_Q4_K: return launch_type<FQ4_K> (payload, header, n_in, n_out, xq, n_tok, y, ldy, accumulate, part, parts, ups, stream);
    case T_Q6_K: return launch_type<FQ6_K> (payload, header, n_in, n_out, xq, n_tok, y, ldy, accumulate, part, parts, ups, stream);
    case T_Q8_0: return launch_type<FQ8_0> (payload, header, n_in, n_out, xq, n_tok, y, ldy, accumulate, part, parts, ups, stream);
    default: return cudaErrorNotSupported;
    }
}
