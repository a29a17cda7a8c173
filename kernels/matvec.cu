/* kernels/matvec.cu — fused dequantise-and-multiply matvec for decode.
 *
 * y[t][r] = W[r] . x[t] for a few token rows t (1..8), W quantised in one of
 * the GGUF types, stored in the split-block layout of kernels.h (payload and
 * header in two buffers, so every payload read is a 16-byte aligned load).
 *
 * Why this shape. At batch 1..8 a matvec does ~2 * n_tok FLOPs per weight
 * value and reads the weight once: it is bound by the HBM stream of W and
 * nothing else matters as much as reading W at full bandwidth. So:
 *
 *  - One warp owns ROWS (2) whole output rows. Its 32 lanes walk the rows'
 *    "units" (16 bytes of payload each: 32 values of Q4_K, 16 of Q8_0, 8 of
 *    F16...) with a stride of 32 units, so in each step the warp reads 512
 *    consecutive payload bytes of each row: one 16-byte load (LDG.128) per
 *    lane per row, fully coalesced, each weight byte read exactly once. The
 *    two rows give each lane two independent loads in flight per step.
 *  - The few header bytes a unit needs (scales, minimums, Q5_K's high bits)
 *    come from the header buffer; lanes of neighbouring units read
 *    neighbouring headers, so these loads coalesce too (they are 1-20% of the
 *    bytes depending on the type).
 *  - x is float and small (n_tok * n_in * 4 bytes, L2/L1 resident); a lane
 *    loads the x values matching its unit with float4 loads once per token and
 *    reuses them for its ROWS rows. Weights are dequantised in registers and
 *    folded with the affine trick: sum x * (d*q - m) = d * sum(x*q) - m * sum(x).
 *  - Each lane keeps ROWS * MAXTOK partial sums in registers (MAXTOK is a
 *    template parameter, 1/2/4/8, so the arrays are indexed by constants after
 *    unrolling and never spill to local memory); a butterfly of warp shuffles
 *    reduces them at the end and lane 0 writes the outputs. No shared memory,
 *    no block barrier.
 *  - 4 warps (8 rows) per thread block: a 4096-row matrix is 512 blocks, a
 *    14336-row one 1792 blocks, enough to fill 132 SMs.
 *
 * That float kernel serves F16 / BF16 (matrices of at most 512 rows: one
 * block per row, matvec_row_kernel). The quantised types take the 8-bit
 * activation path further down (the activations rounded to int8 once per
 * call, dp4a on the expanded weight nibbles), since the float kernel was ALU
 * bound on them (17-36% of the H200's bandwidth at one token,
 * docs/BENCHMARKS.md). That path has had three generations, all kept
 * selectable for comparison (BALEEN_CUDA_MATVEC): v3 (matvec_q8_kernel,
 * registers, one unit per lane), v5 (matvec_pipe_kernel, cp.async through
 * shared memory) and v6 (matvec_v6_kernel, the default for Q8_0, Q4_0, Q5_0,
 * Q4_K and Q6_K: register streaming with fewer instructions per byte).
 *
 * Known limits, to measure on the H200 before changing: there is no split
 * over n_in, so a matrix with few rows and very long rows under-fills the GPU;
 * small matrices (a few MB) are bound by launch, ramp-up and tail, not by the
 * stream.
 */
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <cuda_fp16.h>

#include "device-util.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace {

/* The block decoders are host-callable too, so that they can be checked
 * against the CPU dequantiser on a machine without a GPU. */
#define BLN_HD __host__ __device__ __forceinline__

/* Plain loads: the unit decoders read global memory (the one-unit-per-lane
 * kernels, whose __restrict__ const pointers let the compiler use the
 * read-only path anyway) and shared memory (the pipelined kernel). */
#define BLN_LDG(p) (*(p))

constexpr int WARPS = 4;  /* warps per thread block */
constexpr int ROWS = 2;   /* output rows per warp */
/* Tuning knobs of the 8-bit path for one token row, overridable at build
 * time for experiments (-DBLN_MV_ROWS1=4): output rows per warp and how many
 * iterations of the unit loop are unrolled (loads in flight per lane). */
#ifndef BLN_MV_ROWS1
#define BLN_MV_ROWS1 2
#endif
#ifndef BLN_MV_UNROLL
#define BLN_MV_UNROLL 2
#endif
constexpr int MV_UNROLL = BLN_MV_UNROLL;

BLN_HD float
half_at (const uint8_t *p)
{
  return __half2float (__ushort_as_half (BLN_LDG (reinterpret_cast<const unsigned short *> (p))));
}

BLN_HD float
bits_float (uint32_t u)
{
#ifdef __CUDA_ARCH__
  return __uint_as_float (u);
#else
  float f;
  memcpy (&f, &u, 4);
  return f;
#endif
}

BLN_HD uint4
load16 (const uint8_t *p)
{
  return BLN_LDG (reinterpret_cast<const uint4 *> (p));
}

/* Byte j (0..15) of a 16-byte vector; j is a constant after unrolling. */
BLN_HD uint32_t
byte_of (const uint4 &v, int j)
{
  uint32_t w = j < 4 ? v.x : j < 8 ? v.y : j < 12 ? v.z : v.w;
  return (w >> (8 * (j & 3))) & 0xffu;
}

/* N consecutive floats (N a multiple of 4, p 16-byte aligned) into dst. */
template <int N>
BLN_HD void
load_floats (const float *p, float *dst)
{
#pragma unroll
  for (int i = 0; i < N; i += 4)
    {
      float4 v = BLN_LDG (reinterpret_cast<const float4 *> (p + i));
      dst[i] = v.x;
      dst[i + 1] = v.y;
      dst[i + 2] = v.z;
      dst[i + 3] = v.w;
    }
}

/* Expert selection of bln_kernels_matvec_sel: launch row blockIdx.y computes
 * output row i = blockIdx.y with the weights of expert expert[i] (clamped to
 * [0, n_expert)) and the activations of token row tok[i] (i when tok is
 * NULL). expert == NULL: a plain matvec. */
struct Sel
{
  const int32_t *expert = nullptr;
  const int32_t *tok = nullptr;
  int n_sel = 0;
  int n_expert = 0;
};

/* Applies @sel for this launch row: sets *x_off to the offset of the selected
 * token row's activations (values), moves @y to the output row and returns
 * the first weight row of the selected expert (all 0 without a selection). */
__device__ __forceinline__ size_t
sel_apply (const Sel &sel, int n_out, int n_in, int ldy, size_t &x_off, float *__restrict__ &y)
{
  x_off = 0;
  if (sel.expert == nullptr)
    return 0;
  const int i = blockIdx.y;
  const int e = min (max (sel.expert[i], 0), sel.n_expert - 1);
  const int t = sel.tok ? sel.tok[i] : i;

  x_off = (size_t) t * n_in;
  y += (size_t) i * ldy;
  return (size_t) e * n_out;
}

/* Each type below describes one unit of work: VPB values per block, UPB
 * units per block, PAY / HDR bytes of payload / header per block, XN x values
 * per unit. load() fetches what unit s of a block needs from memory, load_x()
 * the matching x values (in the order dot() expects), dot() the unit's share
 * of the dot product. */

/* Q8_0: a unit is half a block, 16 int8 quants; value = d * q. */
struct TypeQ8_0
{
  static constexpr int VPB = 32, UPB = 2, PAY = 32, HDR = 2, XN = 16;
  struct W { uint4 q; float d; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay + s * 16);
    w.d = half_at (hdr);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    load_floats<16> (xb + s * 16, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++)
      sum += xf[i] * (float) (int8_t) byte_of (w.q, i);
    return w.d * sum;
  }
};

/* Q4_0: a unit is a whole block; byte j holds value j (low nibble) and
 * value j + 16 (high nibble); value = d * (q - 8). */
struct TypeQ4_0
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 2, XN = 32;
  struct W { uint4 q; float d; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay);
    w.d = half_at (hdr);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    load_floats<32> (xb, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < 16; j++)
      {
        uint32_t b = byte_of (w.q, j);
        sum += xf[j] * (float) ((int) (b & 15) - 8) + xf[j + 16] * (float) ((int) (b >> 4) - 8);
      }
    return w.d * sum;
  }
};

/* Q4_1: as Q4_0 with value = d * q + m. */
struct TypeQ4_1
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 4, XN = 32;
  struct W { uint4 q; float d, m; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay);
    w.d = half_at (hdr);
    w.m = half_at (hdr + 2);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    load_floats<32> (xb, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    float sq = 0.f, sx = 0.f;
#pragma unroll
    for (int j = 0; j < 16; j++)
      {
        uint32_t b = byte_of (w.q, j);
        sq += xf[j] * (float) (b & 15) + xf[j + 16] * (float) (b >> 4);
        sx += xf[j] + xf[j + 16];
      }
    return w.d * sq + w.m * sx;
  }
};

/* Q5_0 / Q5_1: as Q4_0 / Q4_1 with a fifth bit per value: bit j of the
 * 32-bit qh (after d, or d and m, in the header) is the high bit of value j.
 * The header is 2-byte aligned only, so qh is read as two halves. */
BLN_HD uint32_t
qh_at (const uint8_t *p)
{
  const unsigned short *h = reinterpret_cast<const unsigned short *> (p);
  return (uint32_t) BLN_LDG (h) | ((uint32_t) BLN_LDG (h + 1) << 16);
}

struct TypeQ5_0
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 6, XN = 32;
  struct W { uint4 q; float d; uint32_t qh; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay);
    w.d = half_at (hdr);
    w.qh = qh_at (hdr + 2);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    load_floats<32> (xb, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < 16; j++)
      {
        uint32_t b = byte_of (w.q, j);
        int lo = (int) ((b & 15) | (((w.qh >> j) & 1) << 4)) - 16;
        int hi = (int) ((b >> 4) | (((w.qh >> (j + 16)) & 1) << 4)) - 16;
        sum += xf[j] * (float) lo + xf[j + 16] * (float) hi;
      }
    return w.d * sum;
  }
};

struct TypeQ5_1
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 8, XN = 32;
  struct W { uint4 q; float d, m; uint32_t qh; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay);
    w.d = half_at (hdr);
    w.m = half_at (hdr + 2);
    w.qh = qh_at (hdr + 4);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    load_floats<32> (xb, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    float sq = 0.f, sx = 0.f;
#pragma unroll
    for (int j = 0; j < 16; j++)
      {
        uint32_t b = byte_of (w.q, j);
        uint32_t lo = (b & 15) | (((w.qh >> j) & 1) << 4);
        uint32_t hi = (b >> 4) | (((w.qh >> (j + 16)) & 1) << 4);
        sq += xf[j] * (float) lo + xf[j + 16] * (float) hi;
        sx += xf[j] + xf[j + 16];
      }
    return w.d * sq + w.m * sx;
  }
};

/* The 6-bit scale and min of sub-block j (0..7) of Q4_K / Q5_K, from the 12
 * scale bytes held in words a, b, c (bytes 0-3, 4-7, 8-11). */
BLN_HD void
k_scale_min (uint32_t a, uint32_t b, uint32_t c, int j, float *sc, float *mn)
{
  /* selects, not an array: j is not a compile-time constant here */
  auto byte = [&] (int k) { return ((k < 4 ? a : k < 8 ? b : c) >> (8 * (k & 3))) & 0xffu; };
  uint32_t s, m;

  if (j < 4)
    {
      s = byte (j) & 63;
      m = byte (j + 4) & 63;
    }
  else
    {
      s = (byte (j + 4) & 15) | ((byte (j - 4) >> 2) & 0x30);
      m = (byte (j + 4) >> 4) | ((byte (j) >> 2) & 0x30);
    }
  *sc = (float) s;
  *mn = (float) m;
}

/* Q4_K: 256 values in 8 sub-blocks of 32, each with a 6-bit scale and min.
 * Quant byte g*32 + i holds value g*64 + i (sub-block 2g, low nibble) and
 * g*64 + 32 + i (sub-block 2g + 1, high nibble). Unit s (0..7) is payload
 * bytes s*16..s*16+15: g = s / 2, i = (s % 2) * 16 + 0..15, so it touches two
 * runs of 16 values and two (scale, min) pairs. */
struct TypeQ4_K
{
  static constexpr int VPB = 256, UPB = 8, PAY = 128, HDR = 20, XN = 32;
  struct W { uint4 q; float ds0, dm0, ds1, dm1; };

  /* The repacked header (see kernels.h): d and dmin, then for each pair g
   * of sub-blocks (2g, 2g + 1) their scales and mins widened to a byte each,
   * so a unit needs two aligned 4-byte loads and no bit unpacking. */
  static BLN_HD void
  load_scales (W &w, const uint8_t *hdr, int s)
  {
    const int g = s >> 1;
    const uint32_t dd = BLN_LDG (reinterpret_cast<const uint32_t *> (hdr));
    const uint32_t sm = BLN_LDG (reinterpret_cast<const uint32_t *> (hdr + 4 + 4 * g));
    const float d = __half2float (__ushort_as_half ((unsigned short) (dd & 0xffff)));
    const float dmin = __half2float (__ushort_as_half ((unsigned short) (dd >> 16)));

    w.ds0 = d * (float) (sm & 0xff);
    w.ds1 = d * (float) ((sm >> 8) & 0xff);
    w.dm0 = dmin * (float) ((sm >> 16) & 0xff);
    w.dm1 = dmin * (float) (sm >> 24);
  }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay + s * 16);
    load_scales (w, hdr, s);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    const float *p = xb + (s >> 1) * 64 + (s & 1) * 16;
    load_floats<16> (p, xf);
    load_floats<16> (p + 32, xf + 16);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    float sq0 = 0.f, sx0 = 0.f, sq1 = 0.f, sx1 = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++)
      {
        uint32_t b = byte_of (w.q, i);
        sq0 += xf[i] * (float) (b & 15);
        sx0 += xf[i];
        sq1 += xf[16 + i] * (float) (b >> 4);
        sx1 += xf[16 + i];
      }
    return w.ds0 * sq0 - w.dm0 * sx0 + w.ds1 * sq1 - w.dm1 * sx1;
  }
};

/* Q5_K: Q4_K plus a fifth bit: bit j of qh[i] is the high bit of value i of
 * sub-block j. Its header keeps the GGUF layout (d, dmin, the packed 6-bit
 * scales, then qh), so unit s loads the 16 qh bytes of its i range with one
 * more 16-byte load and unpacks its two scales itself. */
struct TypeQ5_K
{
  static constexpr int VPB = 256, UPB = 8, PAY = 128, HDR = 48, XN = 32;
  struct W { uint4 q, qh; int shift; float ds0, dm0, ds1, dm1; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    uint4 h = load16 (hdr);
    int g = s >> 1;
    float d = __half2float (__ushort_as_half ((unsigned short) (h.x & 0xffff)));
    float dmin = __half2float (__ushort_as_half ((unsigned short) (h.x >> 16)));
    float s0, m0, s1, m1;

    w.q = load16 (pay + s * 16);
    w.qh = load16 (hdr + 16 + (s & 1) * 16);
    w.shift = 2 * g;
    k_scale_min (h.y, h.z, h.w, 2 * g, &s0, &m0);
    k_scale_min (h.y, h.z, h.w, 2 * g + 1, &s1, &m1);
    w.ds0 = d * s0;
    w.dm0 = dmin * m0;
    w.ds1 = d * s1;
    w.dm1 = dmin * m1;
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    TypeQ4_K::load_x (xb, s, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    float sq0 = 0.f, sx0 = 0.f, sq1 = 0.f, sx1 = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++)
      {
        uint32_t b = byte_of (w.q, i);
        uint32_t hb = byte_of (w.qh, i) >> w.shift;
        sq0 += xf[i] * (float) ((b & 15) | ((hb & 1) << 4));
        sx0 += xf[i];
        sq1 += xf[16 + i] * (float) ((b >> 4) | ((hb & 2) << 3));
        sx1 += xf[16 + i];
      }
    return w.ds0 * sq0 - w.dm0 * sx0 + w.ds1 * sq1 - w.dm1 * sx1;
  }
};

/* Q6_K: two halves of 128 values. In half h, ql byte h*64 + k (k < 64) holds
 * the low 4 bits of values k (low nibble) and k + 64 (high nibble); qh byte
 * h*32 + m holds the top 2 bits of values m, m + 32, m + 64, m + 96 (bits
 * 0-1, 2-3, 4-5, 6-7). value = d * scale[v / 16] * (q - 32). Unit s: h = s / 4,
 * k = (s % 4) * 16 + 0..15: 16 ql bytes and the 16 qh bytes at m = k % 32
 * (each qh byte is loaded by two lanes of the same load instruction, so it is
 * still fetched once from memory). Its two scales, 16 values apart, are
 * bytes 2s and 2s + 1 of the repacked header (kernels.h), d after them. */
struct TypeQ6_K
{
  static constexpr int VPB = 256, UPB = 8, PAY = 192, HDR = 18, XN = 32;
  struct W { uint4 ql, qh; int shift; float d0, d1; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    int h = s >> 2, k0 = (s & 3) * 16;
    float d = half_at (hdr + 16);
    const int8_t *sc = reinterpret_cast<const int8_t *> (hdr);

    w.ql = load16 (pay + h * 64 + k0);
    w.qh = load16 (pay + 128 + h * 32 + (k0 & 31));
    w.shift = 2 * (k0 >> 5);
    w.d0 = d * (float) BLN_LDG (sc + 2 * (s & 7));
    w.d1 = d * (float) BLN_LDG (sc + 2 * (s & 7) + 1);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    const float *p = xb + (s >> 2) * 128 + (s & 3) * 16;
    load_floats<16> (p, xf);
    load_floats<16> (p + 64, xf + 16);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++)
      {
        uint32_t b = byte_of (w.ql, i);
        uint32_t hb = byte_of (w.qh, i) >> w.shift;
        int lo = (int) ((b & 15) | ((hb & 3) << 4)) - 32;
        int hi = (int) ((b >> 4) | (((hb >> 4) & 3) << 4)) - 32;
        s0 += xf[i] * (float) lo;
        s1 += xf[16 + i] * (float) hi;
      }
    return w.d0 * s0 + w.d1 * s1;
  }
};

/* F16 and BF16: a unit is 8 values (16 bytes). */
struct TypeF16
{
  static constexpr int VPB = 8, UPB = 1, PAY = 16, HDR = 0, XN = 8;
  struct W { uint4 q; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    load_floats<8> (xb, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    const uint32_t v[4] = { w.q.x, w.q.y, w.q.z, w.q.w };
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        float lo = __half2float (__ushort_as_half ((unsigned short) (v[i] & 0xffff)));
        float hi = __half2float (__ushort_as_half ((unsigned short) (v[i] >> 16)));
        sum += xf[2 * i] * lo + xf[2 * i + 1] * hi;
      }
    return sum;
  }
};

struct TypeBF16
{
  static constexpr int VPB = 8, UPB = 1, PAY = 16, HDR = 0, XN = 8;
  struct W { uint4 q; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    load_floats<8> (xb, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    const uint32_t v[4] = { w.q.x, w.q.y, w.q.z, w.q.w };
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        sum += xf[2 * i] * bits_float (v[i] << 16);
        sum += xf[2 * i + 1] * bits_float (v[i] & 0xffff0000u);
      }
    return sum;
  }
};

/* F32: a unit is 4 values (16 bytes); tiny and odd-shaped tensors. */
struct TypeF32
{
  static constexpr int VPB = 4, UPB = 1, PAY = 16, HDR = 0, XN = 4;
  struct W { uint4 q; };

  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = load16 (pay);
  }
  static BLN_HD void
  load_x (const float *xb, int s, float *xf)
  {
    load_floats<4> (xb, xf);
  }
  static BLN_HD float
  dot (const W &w, const float *xf)
  {
    return xf[0] * bits_float (w.q.x) + xf[1] * bits_float (w.q.y) + xf[2] * bits_float (w.q.z)
           + xf[3] * bits_float (w.q.w);
  }
};

/* ---- Dequantisation to F16 (the prefill path multiplies on tensor cores) ----
 *
 * For each type: deq() expands one unit into XN values in the order load_x()
 * reads x, and xoff(s, i) is the index inside the block of value i of unit s,
 * so that the dequantiser and the matvec share one description of the
 * layout. */
BLN_HD int
xoff_q8_0 (int s, int i) { return s * 16 + i; }
BLN_HD int
xoff_q4 (int s, int i) { return i; }
BLN_HD int
xoff_k4 (int s, int i) { return (s >> 1) * 64 + (s & 1) * 16 + (i < 16 ? i : 32 + i - 16); }
BLN_HD int
xoff_k6 (int s, int i) { return (s >> 2) * 128 + (s & 3) * 16 + (i < 16 ? i : 64 + i - 16); }

BLN_HD void
deq (const TypeQ8_0::W &w, float *v)
{
  for (int i = 0; i < 16; i++)
    v[i] = w.d * (float) (int8_t) byte_of (w.q, i);
}
BLN_HD void
deq (const TypeQ4_0::W &w, float *v)
{
  for (int j = 0; j < 16; j++)
    {
      uint32_t b = byte_of (w.q, j);
      v[j] = w.d * (float) ((int) (b & 15) - 8);
      v[j + 16] = w.d * (float) ((int) (b >> 4) - 8);
    }
}
BLN_HD void
deq (const TypeQ4_1::W &w, float *v)
{
  for (int j = 0; j < 16; j++)
    {
      uint32_t b = byte_of (w.q, j);
      v[j] = w.d * (float) (b & 15) + w.m;
      v[j + 16] = w.d * (float) (b >> 4) + w.m;
    }
}
BLN_HD void
deq (const TypeQ5_0::W &w, float *v)
{
  for (int j = 0; j < 16; j++)
    {
      uint32_t b = byte_of (w.q, j);
      v[j] = w.d * (float) ((int) ((b & 15) | (((w.qh >> j) & 1) << 4)) - 16);
      v[j + 16] = w.d * (float) ((int) ((b >> 4) | (((w.qh >> (j + 16)) & 1) << 4)) - 16);
    }
}
BLN_HD void
deq (const TypeQ5_1::W &w, float *v)
{
  for (int j = 0; j < 16; j++)
    {
      uint32_t b = byte_of (w.q, j);
      v[j] = w.d * (float) ((b & 15) | (((w.qh >> j) & 1) << 4)) + w.m;
      v[j + 16] = w.d * (float) ((b >> 4) | (((w.qh >> (j + 16)) & 1) << 4)) + w.m;
    }
}
BLN_HD void
deq (const TypeQ4_K::W &w, float *v)
{
  for (int i = 0; i < 16; i++)
    {
      uint32_t b = byte_of (w.q, i);
      v[i] = w.ds0 * (float) (b & 15) - w.dm0;
      v[16 + i] = w.ds1 * (float) (b >> 4) - w.dm1;
    }
}
BLN_HD void
deq (const TypeQ5_K::W &w, float *v)
{
  for (int i = 0; i < 16; i++)
    {
      uint32_t b = byte_of (w.q, i);
      uint32_t hb = byte_of (w.qh, i) >> w.shift;
      v[i] = w.ds0 * (float) ((b & 15) | ((hb & 1) << 4)) - w.dm0;
      v[16 + i] = w.ds1 * (float) ((b >> 4) | ((hb & 2) << 3)) - w.dm1;
    }
}
BLN_HD void
deq (const TypeQ6_K::W &w, float *v)
{
  for (int i = 0; i < 16; i++)
    {
      uint32_t b = byte_of (w.ql, i);
      uint32_t hb = byte_of (w.qh, i) >> w.shift;
      v[i] = w.d0 * (float) ((int) ((b & 15) | ((hb & 3) << 4)) - 32);
      v[16 + i] = w.d1 * (float) ((int) ((b >> 4) | (((hb >> 4) & 3) << 4)) - 32);
    }
}

/* One thread per unit; writes row-major n_out x n_in halves. */
template <class T, int (*XOFF) (int, int)>
__global__ void
dequant_f16_kernel (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, int nb,
                    int n_in, size_t n_units, __half *__restrict__ out)
{
  bln_pdl_wait ();
  const size_t u = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  if (u >= n_units)
    return;
  const size_t blk = u / T::UPB;
  const int s = (int) (u % T::UPB);
  const size_t row = blk / nb;
  const int b = (int) (blk % nb);
  typename T::W w;
  float v[T::XN];
  __half *o = out + row * (size_t) n_in + (size_t) b * T::VPB;

  T::load (w, pay + blk * T::PAY, T::HDR ? hdr + blk * T::HDR : hdr, s);
  deq (w, v);
  /* A unit's values come in runs of 16 consecutive positions (32 bytes,
   * 32-byte aligned): two 16-byte stores per run instead of 16 scattered
   * 2-byte ones. */
#pragma unroll
  for (int r = 0; r < T::XN / 16; r++)
    {
      uint32_t h2[8];
#pragma unroll
      for (int i = 0; i < 8; i++)
        {
          __half2 pair = __floats2half2_rn (v[16 * r + 2 * i], v[16 * r + 2 * i + 1]);
          h2[i] = *reinterpret_cast<uint32_t *> (&pair);
        }
      uint4 *dst = reinterpret_cast<uint4 *> (o + XOFF (s, 16 * r));
      dst[0] = make_uint4 (h2[0], h2[1], h2[2], h2[3]);
      dst[1] = make_uint4 (h2[4], h2[5], h2[6], h2[7]);
    }
}

template <class T, int (*XOFF) (int, int)>
cudaError_t
launch_dequant (const void *payload, const void *header, int n_in, int n_out, __half *out,
                cudaStream_t stream)
{
  const int nb = n_in / T::VPB;
  const size_t n_units = (size_t) n_out * nb * T::UPB;

  if (n_in % T::VPB != 0 || !header)
    return cudaErrorInvalidValue;
  (void) bln_launch (dequant_f16_kernel<T, XOFF>, dim3 ((unsigned) ((n_units + 255) / 256)),
                      dim3 (256), 0, stream, static_cast<const uint8_t *> (payload),
                      static_cast<const uint8_t *> (header), nb, n_in, n_units, out);
  return cudaGetLastError ();
}

/* The kernel. Thread block = WARPS warps; warp w of block b owns rows
 * (b * WARPS + w) * ROWS + 0..ROWS-1. Lane l handles units l, l + 32, ... of
 * those rows (unit u = block u / UPB, part u % UPB). Rows past n_out (last
 * warp only) are clamped to the last row — read again from cache, never
 * written. UNR iterations of the unit loop are unrolled (UNR * ROWS loads
 * in flight per lane). */
template <class T, int MAXTOK, int UNR = (MAXTOK <= 2 ? 2 : 1)>
__global__ void __launch_bounds__ (WARPS * 32)
matvec_kernel (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, int nb,
               int n_in, int n_out, const float *__restrict__ x, int n_tok,
               float *__restrict__ y, int accumulate, int ldy, Sel sel)
{
  /* a plain product: the first units' weights into L2 while the previous
   * kernel finishes */
  if (sel.expert == nullptr)
    {
      const int r0 = (blockIdx.x * WARPS + (threadIdx.x >> 5)) * ROWS;

#pragma unroll
      for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int j = 0; j < UNR; j++)
          {
            const int u = (threadIdx.x & 31) + 32 * j;

            if (r0 + r < n_out && u < nb * T::UPB)
              prefetch_l2 (pay + ((size_t) (r0 + r) * nb + u / T::UPB) * T::PAY);
          }
    }
  bln_pdl_wait ();
  const int lane = threadIdx.x & 31;
  size_t x_off;
  const size_t row_base = sel_apply (sel, n_out, n_in, ldy, x_off, y);
  const int row0 = (blockIdx.x * WARPS + (threadIdx.x >> 5)) * ROWS;
  const int n_units = nb * T::UPB;
  int rows[ROWS];
  float acc[ROWS][MAXTOK];

  if (row0 >= n_out)
    return;  /* the whole warp leaves together */

#pragma unroll
  for (int r = 0; r < ROWS; r++)
    {
      rows[r] = min (row0 + r, n_out - 1);
#pragma unroll
      for (int t = 0; t < MAXTOK; t++)
        acc[r][t] = 0.f;
    }

#pragma unroll (UNR)
  for (int u = lane; u < n_units; u += 32)
    {
      const int b = u / T::UPB, s = u % T::UPB;
      typename T::W w[ROWS];

#pragma unroll
      for (int r = 0; r < ROWS; r++)
        {
          const size_t blk = (row_base + rows[r]) * nb + b;
          T::load (w[r], pay + blk * T::PAY, T::HDR ? hdr + blk * T::HDR : hdr, s);
        }
#pragma unroll
      for (int t = 0; t < MAXTOK; t++)
        {
          if (t < n_tok)
            {
              float xf[T::XN];

              T::load_x (x + x_off + (size_t) t * n_in + (size_t) b * T::VPB, s, xf);
#pragma unroll
              for (int r = 0; r < ROWS; r++)
                acc[r][t] += T::dot (w[r], xf);
            }
        }
    }

#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int t = 0; t < MAXTOK; t++)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
        acc[r][t] += __shfl_xor_sync (0xffffffffu, acc[r][t], off);

  if (lane == 0)
    {
#pragma unroll
      for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < MAXTOK; t++)
          if (row0 + r < n_out && t < n_tok)
            {
              float *dst = y + (size_t) t * ldy + row0 + r;
              *dst = accumulate ? *dst + acc[r][t] : acc[r][t];
            }
    }
}

/* Few rows (a MoE router: 64 or 256 rows of F32): one thread block per
 * row, its 4 warps splitting the row, so that the rows' bytes are fetched
 * by many SMs at once instead of by the few warps the kernel above would
 * give them (a V2-Lite router took 10.5 us that way on an H200). */
template <class T, int MAXTOK, int UNR = 1>
__global__ void __launch_bounds__ (WARPS * 32)
matvec_row_kernel (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, int nb,
                   int n_in, int n_out, const float *__restrict__ x, int n_tok,
                   float *__restrict__ y, int accumulate, int ldy, Sel sel)
{
  __shared__ float part[WARPS][MAXTOK];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int row = blockIdx.x;
  const int n_units = nb * T::UPB;
  float acc[MAXTOK];
  size_t x_off;

  if (sel.expert == nullptr)
#pragma unroll
    for (int j = 0; j < UNR; j++)
      {
        const int u = threadIdx.x + WARPS * 32 * j;

        if (u < n_units)
          prefetch_l2 (pay + ((size_t) row * nb + u / T::UPB) * T::PAY);
      }
  bln_pdl_wait ();
  const size_t row_base = sel_apply (sel, n_out, n_in, ldy, x_off, y);
#pragma unroll
  for (int t = 0; t < MAXTOK; t++)
    acc[t] = 0.f;
#pragma unroll (UNR)
  for (int u = threadIdx.x; u < n_units; u += WARPS * 32)
    {
      const int b = u / T::UPB, s = u % T::UPB;
      const size_t blk = (row_base + row) * nb + b;
      typename T::W w;

      T::load (w, pay + blk * T::PAY, T::HDR ? hdr + blk * T::HDR : hdr, s);
#pragma unroll
      for (int t = 0; t < MAXTOK; t++)
        if (t < n_tok)
          {
            float xf[T::XN];

            T::load_x (x + x_off + (size_t) t * n_in + (size_t) b * T::VPB, s, xf);
            acc[t] += T::dot (w, xf);
          }
    }
#pragma unroll
  for (int t = 0; t < MAXTOK; t++)
    {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
        acc[t] += __shfl_xor_sync (0xffffffffu, acc[t], off);
      if (lane == 0)
        part[warp][t] = acc[t];
    }
  __syncthreads ();
  if (threadIdx.x < MAXTOK && threadIdx.x < n_tok)
    {
      const int t = threadIdx.x;
      float v = 0.f;

#pragma unroll
      for (int k = 0; k < WARPS; k++)
        v += part[k][t];
      float *dst = y + (size_t) t * ldy + row;
      *dst = accumulate ? *dst + v : v;
    }
}

/* Unit iterations the float kernel unrolls for one token: 4, or 2 with
 * BALEEN_CUDA_MV_FUNROLL=2; read once. */
static int
float_unroll ()
{
  static int u = 0;

  if (u == 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_MV_FUNROLL");

      u = env != nullptr && std::strcmp (env, "2") == 0 ? 2 : 4;
    }
  return u;
}

/* Which float products of one token take the row-per-block kernel: 1 (the
 * default) rows of 8192 values or more, 0 none (BALEEN_CUDA_MV_LONG=0), 2
 * also matrices of fewer than 8192 rows (BALEEN_CUDA_MV_LONG=2); read once. */
static int
float_long_rows ()
{
  static int v = -1;

  if (v < 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_MV_LONG");

      v = env != nullptr && std::strcmp (env, "0") == 0   ? 0
          : env != nullptr && std::strcmp (env, "2") == 0 ? 2
                                                          : 1;
    }
  return v;
}

template <class T>
cudaError_t
launch (const void *payload, const void *header, int n_in, int n_out, const float *x,
        int n_tok, float *y, cudaStream_t stream, int accumulate = 0, int ldy = 0,
        Sel sel = Sel ())
{
  const int nb = n_in / T::VPB;
  const int rows_per_block = WARPS * ROWS;
  const dim3 grid ((unsigned) ((n_out + rows_per_block - 1) / rows_per_block),
                   sel.expert ? (unsigned) sel.n_sel : 1u);
  const dim3 block (WARPS * 32);
  const uint8_t *p = static_cast<const uint8_t *> (payload);
  const uint8_t *h = static_cast<const uint8_t *> (header);

  if (n_in % T::VPB != 0 || (T::HDR && !header))
    return cudaErrorInvalidValue;
  /* The float types with few rows, whatever the token count, so that an
   * expert selection (one token) and a plain product of the same rows
   * (several) take the same kernel and sum in the same order. */
  if constexpr (T::HDR == 0)
    if (n_out <= 512)
      {
        const dim3 rgrid ((unsigned) n_out, grid.y);
        const int ld = ldy ? ldy : n_out;

        if (n_tok <= 1)
          (void) bln_launch (matvec_row_kernel<T, 1>, rgrid, block, 0, stream, p, h, nb, n_in,
                             n_out, x, n_tok, y, accumulate, ld, sel);
        else if (n_tok <= 2)
          (void) bln_launch (matvec_row_kernel<T, 2>, rgrid, block, 0, stream, p, h, nb, n_in,
                             n_out, x, n_tok, y, accumulate, ld, sel);
        else if (n_tok <= 4)
          (void) bln_launch (matvec_row_kernel<T, 4>, rgrid, block, 0, stream, p, h, nb, n_in,
                             n_out, x, n_tok, y, accumulate, ld, sel);
        else
          (void) bln_launch (matvec_row_kernel<T, 8>, rgrid, block, 0, stream, p, h, nb, n_in,
                             n_out, x, n_tok, y, accumulate, ld, sel);
        return cudaGetLastError ();
      }
  /* float weights, one token, a plain product with long rows (the 7B's
   * 18944-value down projection): a thread block per row, so that its few
   * rows still give every SM many warps streaming. On an H200 (session 6)
   * BF16 3584 x 18944 went from 72.1% to 82.9% of the copy rate, 4096 x
   * 14336 from 76.7% to 84.8%, the 7B BF16 decode from 227 to 234 tok/s.
   * BALEEN_CUDA_MV_LONG=0 keeps the kernel below; =2 also sends matrices of
   * fewer than 8192 rows here (an experiment). Expert selections keep the
   * kernel below: it sums in the same order for one token as for several. */
  if constexpr (T::HDR == 0)
    if (n_tok <= 1 && sel.expert == nullptr && float_long_rows () > 0
        && (n_in >= 8192 || (float_long_rows () == 2 && n_out < 8192)))
      {
        const dim3 rgrid ((unsigned) n_out, grid.y);

        (void) bln_launch (matvec_row_kernel<T, 1, 4>, rgrid, block, 0, stream, p, h, nb, n_in,
                           n_out, x, n_tok, y, accumulate, ldy ? ldy : n_out, sel);
        return cudaGetLastError ();
      }
  /* float weights, one token: four unit iterations unrolled instead of two
   * (eight 16-byte loads in flight per lane). On an H200 (session 5) BF16
   * 14336-value rows went from 53.8% to 77.8% of the copy rate, 3584-value
   * rows from 85.8% to 96.0%, the 7B BF16 decode from 189 to 230 tok/s.
   * BALEEN_CUDA_MV_FUNROLL=2 keeps two, for comparison. */
  if constexpr (T::HDR == 0)
    if (n_tok <= 1 && float_unroll () == 4)
      {
        (void) bln_launch (matvec_kernel<T, 1, 4>, dim3 (grid), dim3 (block), 0, stream, p, h,
                           nb, n_in, n_out, x, n_tok, y, accumulate, ldy ? ldy : n_out, sel);
        return cudaGetLastError ();
      }
  if (n_tok <= 1)
    (void) bln_launch (matvec_kernel<T, 1>, dim3 (grid), dim3 (block), 0, stream, p, h, nb, n_in,
                        n_out, x, n_tok, y, accumulate, ldy ? ldy : n_out, sel);
  else if (n_tok <= 2)
    (void) bln_launch (matvec_kernel<T, 2>, dim3 (grid), dim3 (block), 0, stream, p, h, nb, n_in,
                        n_out, x, n_tok, y, accumulate, ldy ? ldy : n_out, sel);
  else if (n_tok <= 4)
    (void) bln_launch (matvec_kernel<T, 4>, dim3 (grid), dim3 (block), 0, stream, p, h, nb, n_in,
                        n_out, x, n_tok, y, accumulate, ldy ? ldy : n_out, sel);
  else
    (void) bln_launch (matvec_kernel<T, 8>, dim3 (grid), dim3 (block), 0, stream, p, h, nb, n_in,
                        n_out, x, n_tok, y, accumulate, ldy ? ldy : n_out, sel);
  return cudaGetLastError ();
}

/* ---- The 8-bit activation path (quantised weights) ----
 *
 * For the quantised types the kernel above is bound by its float work, not by
 * memory: every weight value costs a nibble extraction, an int-to-float
 * conversion and a multiply-add per token. The path below instead
 *
 *  1. rounds the activations once per call to 8 bits (quantize_x_kernel):
 *     blocks of 32 values, scale d = amax / 127, q = x / d rounded to nearest
 *     (ties to even), clamped to [-127, 127], plus s = d * sum(q) for the
 *     affine types. This is the rounding of the CPU backend's activation
 *     quantiser (engine/cpu/vecdot-scalar.c), so every output is off the
 *     exact product by at most sum |w| * amax(block) / 254;
 *  2. in the matvec, expands each 16-byte weight unit once into int8 words
 *     (kept in registers across the token loop), then multiplies them with
 *     the 8-bit activations by dp4a (4 multiply-adds per instruction, int32
 *     accumulation, exact) and applies the weight and activation block scales
 *     in float once per 16 values.
 *
 * The rounded activations live in a per-device scratch (g_xq, g_xd): calls
 * of bln_kernels_matvec for the quantised types must therefore not run
 * concurrently on two streams of the same device. Rows longer than
 * XQ_MAX_IN values fall back to the float kernel. */

constexpr int XQ_MAX_IN = 65536;   /* longest row of the 8-bit path */

__device__ __align__ (16) int8_t g_xq[BLN_KERNELS_MATVEC_MAX_TOK * XQ_MAX_IN];
/* (d, d * sum q) of each block */
__device__ __align__ (16) float2 g_xd[BLN_KERNELS_MATVEC_MAX_TOK * XQ_MAX_IN / 32];
/* (d, d * sum q, d * sum of q 0..15, d * sum of q 16..31) of each block, for
 * the version 6 kernels (their units cover half blocks) */
__device__ __align__ (16) float4 g_xs[BLN_KERNELS_MATVEC_MAX_TOK * XQ_MAX_IN / 32];

__device__ __forceinline__ void quant_warp_store (float v, size_t i);

/* The decode step's kernels here let the next kernel launch as soon as all
 * their blocks are running, so that the next matvec's blocks fetch their
 * first weights during this kernel's tail (7B Q4_K_M decode +3% on an H200,
 * prefill unchanged; docs/BENCHMARKS.md; -DBLN_MV_TRIGGER=0 turns it off).
 * Safe because every kernel waits in bln_pdl_wait() before it reads what an
 * earlier one wrote. (The same trigger in every kernel, prefill included,
 * cost prefill 5%: launch.cuh's BLN_PDL_TRIGGER.) */
#ifndef BLN_MV_TRIGGER
#define BLN_MV_TRIGGER 1
#endif
__device__ __forceinline__ void
decode_trigger ()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && BLN_MV_TRIGGER
  cudaTriggerProgrammaticLaunchCompletion ();
#endif
}

/* One warp per block of 32 activations, one lane per value. */
__global__ void
quantize_x_kernel (const float *__restrict__ x, int n)
{
  decode_trigger ();
  bln_pdl_wait ();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;

  /* n is a multiple of 32, so whole warps are in or out */
  if (i < n)
    quant_warp_store (x[i], (size_t) i);
}

/* Rounds value v of a warp's 32 consecutive activations (index i of the
 * scratch, i a multiple of 32 at lane 0): scale d = amax / 127, q = v / d
 * rounded to nearest, clamped to [-127, 127] (NaN -> -127, as the CPU
 * quantiser); stores q and the block's sums. */
__device__ __forceinline__ void
quant_warp_store (float v, size_t i)
{
  xq_store32 (v, i, g_xq, g_xd, g_xs);
}

/* RMSNorm with the float result to y and its 8-bit rounding to the scratch.
 * Block (blockIdx.x, row) handles values NORM_SLICE * blockIdx.x .. of row
 * `row`; every block sums the squares of the whole row itself (in double,
 * as the CPU; the row is a few KiB in L2) instead of one block doing the
 * row alone, which left a decode step's norms latency-bound on a single SM
 * (8.6 us each for a 3584-wide row on an H200). d % 32 == 0. */
constexpr int NORM_SLICE = 256;   /* values per block = threads per block */

__global__ void __launch_bounds__ (NORM_SLICE)
rmsnorm_quant_kernel (const float *__restrict__ x, const float *__restrict__ w,
                      float *__restrict__ y, int d, float eps)
{
  __shared__ double red[NORM_SLICE / 32];
  const size_t row = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int i = blockIdx.x * NORM_SLICE + threadIdx.x;
  double ss = 0.0;
  float scale, xi = 0.f, wi = 0.f;

  decode_trigger ();
  if (i < d)
    wi = w[i];   /* a weight: needs nothing from the previous kernel */
  bln_pdl_wait ();
  const float *xr = x + row * d;
  if (i < d)
    xi = xr[i];
  {
    /* four loads in flight per thread (the row is in L2: latency-bound) */
    double s4[4] = { 0.0, 0.0, 0.0, 0.0 };
    int k = threadIdx.x;

    for (; k + 3 * NORM_SLICE < d; k += 4 * NORM_SLICE)
      {
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
          v[j] = xr[k + j * NORM_SLICE];
#pragma unroll
        for (int j = 0; j < 4; j++)
          s4[j] += (double) v[j] * (double) v[j];
      }
    for (; k < d; k += NORM_SLICE)
      s4[0] += (double) xr[k] * (double) xr[k];
    ss = (s4[0] + s4[1]) + (s4[2] + s4[3]);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    ss += __shfl_xor_sync (0xffffffffu, ss, off);
  if (lane == 0)
    red[warp] = ss;
  __syncthreads ();
  ss = lane < NORM_SLICE / 32 ? red[lane] : 0.0;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    ss += __shfl_xor_sync (0xffffffffu, ss, off);
  scale = 1.0f / sqrtf ((float) (ss / (double) d) + eps);
  /* d % 32 == 0: whole warps are in or out */
  if (i < d)
    {
      const float v = wi * (xi * scale);
      y[row * d + i] = v;
      quant_warp_store (v, row * d + i);
    }
}

/* out = silu(g) * u (see ops.h), also rounded to the scratch; ff % 32 == 0. */
__global__ void
silu_mul_quant_kernel (const float *__restrict__ g, int gs, const float *__restrict__ u, int us,
                       float *__restrict__ out, size_t n, int ff)
{
  decode_trigger ();
  bln_pdl_wait ();
  const size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  float v = 0.f;

  if (i < n)
    {
      size_t t = i / ff, j = i % ff;
      float gv = g[t * gs + j], uv = u[t * us + j];
      v = gv / (1.0f + expf (-gv)) * uv;
      out[i] = v;
    }
  /* n is a multiple of 32: whole warps are in or out */
  if (i < n)
    quant_warp_store (v, i);
}

/* __dp4a and __vsub4 on the host too, for checking the unit decoders there. */
BLN_HD int
dp4a (int a, int b, int c)
{
#ifdef __CUDA_ARCH__
  return __dp4a (a, b, c);
#else
  for (int i = 0; i < 4; i++)
    c += (int) (int8_t) (a >> (8 * i)) * (int) (int8_t) (b >> (8 * i));
  return c;
#endif
}

BLN_HD unsigned
vsub4 (unsigned a, unsigned b)
{
#ifdef __CUDA_ARCH__
  return __vsub4 (a, b);
#else
  unsigned r = 0;
  for (int i = 0; i < 4; i++)
    r |= (((a >> (8 * i)) - (b >> (8 * i))) & 0xffu) << (8 * i);
  return r;
#endif
}

BLN_HD int
dot16 (const int (&a)[4], const int4 &b, int acc)
{
  acc = dp4a (a[0], b.x, acc);
  acc = dp4a (a[1], b.y, acc);
  acc = dp4a (a[2], b.z, acc);
  return dp4a (a[3], b.w, acc);
}

BLN_HD int
sum16 (const int4 &b)
{
  const int ones = 0x01010101;
  return dp4a (ones, b.x, dp4a (ones, b.y, dp4a (ones, b.z, dp4a (ones, b.w, 0))));
}

BLN_HD int
word_of (const uint4 &v, int i)
{
  return (int) (i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w);
}

/* Each type: NRUN runs of 16 values per unit (the same units as the float
 * path); xpos(s, run) is where run @run of unit @s starts inside the weight
 * block (a multiple of 16); load() fetches and expands unit s to int8 words,
 * run by run, in value order; dot() combines the exact int sums with the
 * scales (xq: the 16 activation bytes of each run, xd: (d, d * sum q) of the
 * 32-block holding each run). */

struct QTypeQ8_0
{
  static constexpr int VPB = 32, UPB = 2, PAY = 32, HDR = 2, NRUN = 1;
  struct W { int q[1][4]; float d; };

  static BLN_HD int xpos (int s, int run) { return s * 16; }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    uint4 v = load16 (pay + s * 16);
#pragma unroll
    for (int i = 0; i < 4; i++)
      w.q[0][i] = word_of (v, i);
    w.d = half_at (hdr);
  }
  static BLN_HD float
  dot (const W &w, const int4 *xq, const float2 *xd)
  {
    return w.d * xd[0].x * (float) dot16 (w.q[0], xq[0], 0);
  }
};

struct QTypeQ4_0
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 2, NRUN = 2;
  struct W { int q[2][4]; float d; };

  static BLN_HD int xpos (int s, int run) { return run * 16; }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    uint4 v = load16 (pay);
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        unsigned b = (unsigned) word_of (v, i);
        w.q[0][i] = (int) vsub4 (b & 0x0f0f0f0fu, 0x08080808u);
        w.q[1][i] = (int) vsub4 ((b >> 4) & 0x0f0f0f0fu, 0x08080808u);
      }
    w.d = half_at (hdr);
  }
  static BLN_HD float
  dot (const W &w, const int4 *xq, const float2 *xd)
  {
    return w.d * xd[0].x * (float) dot16 (w.q[1], xq[1], dot16 (w.q[0], xq[0], 0));
  }
};

struct QTypeQ4_1
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 4, NRUN = 2;
  struct W { int q[2][4]; float d, m; };

  static BLN_HD int xpos (int s, int run) { return run * 16; }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    uint4 v = load16 (pay);
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        unsigned b = (unsigned) word_of (v, i);
        w.q[0][i] = (int) (b & 0x0f0f0f0fu);
        w.q[1][i] = (int) ((b >> 4) & 0x0f0f0f0fu);
      }
    w.d = half_at (hdr);
    w.m = half_at (hdr + 2);
  }
  static BLN_HD float
  dot (const W &w, const int4 *xq, const float2 *xd)
  {
    /* both runs are in the same activation block: xd[0].y covers all 32 */
    return w.d * xd[0].x * (float) dot16 (w.q[1], xq[1], dot16 (w.q[0], xq[0], 0))
           + w.m * xd[0].y;
  }
};

/* Four high bits (bit k of @b) moved to bit 4 of byte k. */
BLN_HD uint32_t
spread4 (uint32_t b)
{
  return ((b & 1u) | ((b & 2u) << 7) | ((b & 4u) << 14) | ((b & 8u) << 21)) << 4;
}

struct QTypeQ5_0
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 6, NRUN = 2;
  struct W { int q[2][4]; float d; };

  static BLN_HD int xpos (int s, int run) { return run * 16; }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    uint4 v = load16 (pay);
    uint32_t qh = qh_at (hdr + 2);
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        unsigned b = (unsigned) word_of (v, i);
        w.q[0][i] = (int) vsub4 ((b & 0x0f0f0f0fu) | spread4 ((qh >> (4 * i)) & 15u),
                                 0x10101010u);
        w.q[1][i] = (int) vsub4 (((b >> 4) & 0x0f0f0f0fu) | spread4 ((qh >> (16 + 4 * i)) & 15u),
                                 0x10101010u);
      }
    w.d = half_at (hdr);
  }
  static BLN_HD float
  dot (const W &w, const int4 *xq, const float2 *xd)
  {
    return w.d * xd[0].x * (float) dot16 (w.q[1], xq[1], dot16 (w.q[0], xq[0], 0));
  }
};

struct QTypeQ5_1
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 8, NRUN = 2;
  struct W { int q[2][4]; float d, m; };

  static BLN_HD int xpos (int s, int run) { return run * 16; }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    uint4 v = load16 (pay);
    uint32_t qh = qh_at (hdr + 4);
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        unsigned b = (unsigned) word_of (v, i);
        w.q[0][i] = (int) ((b & 0x0f0f0f0fu) | spread4 ((qh >> (4 * i)) & 15u));
        w.q[1][i] = (int) (((b >> 4) & 0x0f0f0f0fu) | spread4 ((qh >> (16 + 4 * i)) & 15u));
      }
    w.d = half_at (hdr);
    w.m = half_at (hdr + 2);
  }
  static BLN_HD float
  dot (const W &w, const int4 *xq, const float2 *xd)
  {
    return w.d * xd[0].x * (float) dot16 (w.q[1], xq[1], dot16 (w.q[0], xq[0], 0))
           + w.m * xd[0].y;
  }
};

/* Q4_K and Q5_K: run 0 = 16 values of sub-block 2g (low nibbles), run 1 = the
 * same positions of sub-block 2g + 1 (high nibbles); each run covers half an
 * activation block, so its activation sum comes from dp4a with ones. */
struct QTypeQ4_K
{
  static constexpr int VPB = 256, UPB = 8, PAY = 128, HDR = 20, NRUN = 2;
  struct W { int q[2][4]; float ds0, dm0, ds1, dm1; };

  static BLN_HD int xpos (int s, int run) { return (s >> 1) * 64 + (s & 1) * 16 + run * 32; }
  static BLN_HD void
  load_scales (W &w, const uint8_t *hdr, int s)
  {
    TypeQ4_K::W t;
    TypeQ4_K::load_scales (t, hdr, s);
    w.ds0 = t.ds0;
    w.dm0 = t.dm0;
    w.ds1 = t.ds1;
    w.dm1 = t.dm1;
  }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    uint4 v = load16 (pay + s * 16);
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        unsigned b = (unsigned) word_of (v, i);
        w.q[0][i] = (int) (b & 0x0f0f0f0fu);
        w.q[1][i] = (int) ((b >> 4) & 0x0f0f0f0fu);
      }
    load_scales (w, hdr, s);
  }
  static BLN_HD float
  dot (const W &w, const int4 *xq, const float2 *xd)
  {
    float a0 = w.ds0 * (float) dot16 (w.q[0], xq[0], 0) - w.dm0 * (float) sum16 (xq[0]);
    float a1 = w.ds1 * (float) dot16 (w.q[1], xq[1], 0) - w.dm1 * (float) sum16 (xq[1]);
    return xd[0].x * a0 + xd[1].x * a1;
  }
};

struct QTypeQ5_K
{
  static constexpr int VPB = 256, UPB = 8, PAY = 128, HDR = 48, NRUN = 2;
  typedef QTypeQ4_K::W W;

  static BLN_HD int xpos (int s, int run) { return QTypeQ4_K::xpos (s, run); }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    uint4 v = load16 (pay + s * 16);
    uint4 qh = load16 (hdr + 16 + (s & 1) * 16);
    int shift = 2 * (s >> 1);
#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        unsigned b = (unsigned) word_of (v, i), h = (unsigned) word_of (qh, i) >> shift;
        w.q[0][i] = (int) ((b & 0x0f0f0f0fu) | ((h & 0x01010101u) << 4));
        w.q[1][i] = (int) (((b >> 4) & 0x0f0f0f0fu) | ((h & 0x02020202u) << 3));
      }
    {
      uint4 h = load16 (hdr);
      int g = s >> 1;
      float d = __half2float (__ushort_as_half ((unsigned short) (h.x & 0xffff)));
      float dmin = __half2float (__ushort_as_half ((unsigned short) (h.x >> 16)));
      float s0, m0, s1, m1;

      k_scale_min (h.y, h.z, h.w, 2 * g, &s0, &m0);
      k_scale_min (h.y, h.z, h.w, 2 * g + 1, &s1, &m1);
      w.ds0 = d * s0;
      w.dm0 = dmin * m0;
      w.ds1 = d * s1;
      w.dm1 = dmin * m1;
    }
  }
  static BLN_HD float
  dot (const W &w, const int4 *xq, const float2 *xd)
  {
    return QTypeQ4_K::dot (w, xq, xd);
  }
};

/* Q6_K: run 0 = values k0..k0+15 of half h, run 1 = k0+64..k0+79; the -32
 * offset is folded into the int8 weights (__vsub4), so no activation sum. */
struct QTypeQ6_K
{
  static constexpr int VPB = 256, UPB = 8, PAY = 192, HDR = 18, NRUN = 2;
  struct W { int q[2][4]; float d0, d1; };

  static BLN_HD int xpos (int s, int run) { return (s >> 2) * 128 + (s & 3) * 16 + run * 64; }
  static BLN_HD void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    int h = s >> 2, k0 = (s & 3) * 16, shift = 2 * (k0 >> 5);
    uint4 ql = load16 (pay + h * 64 + k0);
    uint4 qh = load16 (pay + 128 + h * 32 + (k0 & 31));
    float d = half_at (hdr + 16);
    const int8_t *sc = reinterpret_cast<const int8_t *> (hdr);

#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        unsigned b = (unsigned) word_of (ql, i), hb = (unsigned) word_of (qh, i) >> shift;
        w.q[0][i] = (int) vsub4 ((b & 0x0f0f0f0fu) | ((hb & 0x03030303u) << 4), 0x20202020u);
        w.q[1][i] = (int) vsub4 (((b >> 4) & 0x0f0f0f0fu) | (((hb >> 4) & 0x03030303u) << 4),
                                   0x20202020u);
      }
    w.d0 = d * (float) BLN_LDG (sc + 2 * (s & 7));
    w.d1 = d * (float) BLN_LDG (sc + 2 * (s & 7) + 1);
  }
  static BLN_HD float
  dot (const W &w, const int4 *xq, const float2 *xd)
  {
    return w.d0 * xd[0].x * (float) dot16 (w.q[0], xq[0], 0)
           + w.d1 * xd[1].x * (float) dot16 (w.q[1], xq[1], 0);
  }
};

/* The 8-bit activation matvec: the same warp / lane / row mapping as
 * matvec_kernel, reading the activations from g_xq / g_xd. */
template <class T, int MAXTOK, int NROWS>
__global__ void __launch_bounds__ (WARPS * 32)
matvec_q8_kernel (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, int nb,
                  int n_in, int n_out, int n_tok, float *__restrict__ y, int accumulate, int ldy,
                  Sel sel)
{
  bln_pdl_wait ();
  const int lane = threadIdx.x & 31;
  size_t xq0;   /* the rounded activations of this launch's first token row */
  const size_t row_base = sel_apply (sel, n_out, n_in, ldy, xq0, y);
  const int row0 = (blockIdx.x * WARPS + (threadIdx.x >> 5)) * NROWS;
  const int n_units = nb * T::UPB;
  int rows[NROWS];
  float acc[NROWS][MAXTOK];

  if (row0 >= n_out)
    return;

#pragma unroll
  for (int r = 0; r < NROWS; r++)
    {
      rows[r] = min (row0 + r, n_out - 1);
#pragma unroll
      for (int t = 0; t < MAXTOK; t++)
        acc[r][t] = 0.f;
    }

#pragma unroll (MAXTOK <= 2 ? MV_UNROLL : 1)
  for (int u = lane; u < n_units; u += 32)
    {
      const int b = u / T::UPB, s = u % T::UPB;
      typename T::W w[NROWS];

#pragma unroll
      for (int r = 0; r < NROWS; r++)
        {
          const size_t blk = (row_base + rows[r]) * nb + b;
          T::load (w[r], pay + blk * T::PAY, hdr + blk * T::HDR, s);
        }
#pragma unroll
      for (int t = 0; t < MAXTOK; t++)
        {
          if (t < n_tok)
            {
              int4 xq[T::NRUN];
              float2 xd[T::NRUN];

#pragma unroll
              for (int k = 0; k < T::NRUN; k++)
                {
                  const size_t pos = xq0 + (size_t) t * n_in + (size_t) b * T::VPB
                                     + T::xpos (s, k);
                  /* read-only during this kernel: the non-coherent path */
                  xq[k] = __ldg (reinterpret_cast<const int4 *> (g_xq + pos));
                  xd[k] = __ldg (g_xd + pos / 32);
                }
#pragma unroll
              for (int r = 0; r < NROWS; r++)
                acc[r][t] += T::dot (w[r], xq, xd);
            }
        }
    }

#pragma unroll
  for (int r = 0; r < NROWS; r++)
#pragma unroll
    for (int t = 0; t < MAXTOK; t++)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
        acc[r][t] += __shfl_xor_sync (0xffffffffu, acc[r][t], off);

  if (lane == 0)
    {
#pragma unroll
      for (int r = 0; r < NROWS; r++)
#pragma unroll
        for (int t = 0; t < MAXTOK; t++)
          if (row0 + r < n_out && t < n_tok)
            {
              float *dst = y + (size_t) t * ldy + row0 + r;
              *dst = accumulate ? *dst + acc[r][t] : acc[r][t];
            }
    }
}

template <class T, int MAXTOK, int NROWS>
void
launch_q8_rows (const uint8_t *p, const uint8_t *h, int nb, int n_in, int n_out, int n_tok,
                float *y, cudaStream_t stream, int accumulate, int ldy, Sel sel = Sel ())
{
  const int rows_per_block = WARPS * NROWS;
  const dim3 grid ((unsigned) ((n_out + rows_per_block - 1) / rows_per_block),
                   sel.expert ? (unsigned) sel.n_sel : 1u);

  (void) bln_launch (matvec_q8_kernel<T, MAXTOK, NROWS>, dim3 (grid), dim3 (WARPS * 32), 0, stream,
                      p, h, nb, n_in, n_out, n_tok, y, accumulate, ldy, sel);
}

/* ---- Version 5: the pipelined 8-bit path (sm_80 and newer) ----
 *
 * The kernels above keep too few bytes in flight: each lane holds one or two
 * 16-byte weight loads at a time in registers, so at the occupancy their
 * registers allow an SM has ~40 KB outstanding where the H200's latency times
 * its bandwidth asks for 64 KB or more (docs/BENCHMARKS.md, matvec v3/v4).
 * Here the weights go through shared memory instead: every warp streams its
 * rows through a private ring of PIPE_STAGES stages with cp.async (16-byte
 * copies that land in shared memory without holding registers, bypassing
 * L1), so STAGES - 1 steps of every warp are in flight while it multiplies
 * the oldest one.
 *
 *  - A warp owns groups of NR consecutive rows (group g, g + total warps,
 *    ...). A step of a group covers BPS weight blocks (32 units, one per
 *    lane) of each of its NR rows: payload bytes copied as 16-byte pieces,
 *    header bytes as 4-byte words (headers are 2- or 4-byte aligned; the
 *    copy starts at the aligned word below and the tensor upload pads the
 *    header buffer so the word above the end exists).
 *  - Lane l multiplies unit l of the step for all NR rows with one load of
 *    the matching 8-bit activations (global, L1-resident: the weights no
 *    longer pass through L1), so activation traffic is shared by NR rows.
 *  - The first STAGES - 1 steps are requested before bln_pdl_wait(): the
 *    weights do not depend on the previous kernel, so under programmatic
 *    dependent launch their fetch overlaps that kernel's tail.
 *  - Sums are reduced across the warp with shuffles when a group's last step
 *    is done and written by one lane per (row, token).
 *
 * The unit decoders (QType*::load) read the staged copy exactly as they read
 * global memory, because a step stages whole blocks with their headers at
 * the same alignment. */

#ifndef BLN_MV_STAGES
#define BLN_MV_STAGES 3
#endif
constexpr int PIPE_WARPS = 4;
constexpr int PIPE_STAGES = BLN_MV_STAGES;
/* -DBLN_MV_EXPERIMENT=1 drops the arithmetic (measures the weight stream
 * alone), =2 drops the copies (the arithmetic alone); docs/BENCHMARKS.md */
#if defined(BLN_MV_EXPERIMENT) && BLN_MV_EXPERIMENT == 1
constexpr bool PIPE_MATH = false;
#else
constexpr bool PIPE_MATH = true;
#endif

template <class T>
struct Pipe
{
  static constexpr int BPS = 32 / T::UPB;                /* blocks per step */
  static constexpr int PAY_STEP = BPS * T::PAY;          /* payload bytes per row per step */
  static constexpr int HDR_AREA = (BPS * T::HDR + 8 + 15) / 16 * 16;
  static constexpr int ROW_BYTES = PAY_STEP + HDR_AREA;  /* per row per stage */
};

/* Issues the copies of step @step of row group @group into stage @st, as one
 * commit group (empty when the group has no rows left). Row r's payload
 * lands at st + r * ROW_BYTES, its headers PAY_STEP bytes further, starting
 * (blk * HDR) & 3 bytes in (the copy starts at the aligned word below). */
template <class T, int NR>
__device__ __forceinline__ void
pipe_issue (uint8_t *st, const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr,
            size_t row_base, int group, int step, int nb, int n_out, int lane)
{
  typedef Pipe<T> P;
  const int b0 = step * P::BPS;
  const int nblk = min (P::BPS, nb - b0);

#if defined(BLN_MV_EXPERIMENT) && BLN_MV_EXPERIMENT == 2
  /* experiment: no weight traffic (measures the arithmetic alone) */
  cp_commit ();
  return;
#endif

#pragma unroll
  for (int r = 0; r < NR; r++)
    {
      const int row = group * NR + r;
      if (row < n_out)
        {
          const size_t blk = (row_base + (size_t) row) * nb + b0;
          const uint8_t *src = pay + blk * T::PAY;
          uint8_t *dst = st + r * P::ROW_BYTES;
          const int n16 = nblk * T::PAY / 16;

#pragma unroll
          for (int c = lane; c < P::PAY_STEP / 16; c += 32)
            if (c < n16)
              cp_async16 (dst + c * 16, src + c * 16);
          if (T::HDR)
            {
              const size_t h0 = blk * T::HDR;
              const size_t a0 = h0 & ~(size_t) 3;
              const int nw = (int) ((h0 + (size_t) nblk * T::HDR + 3 - a0) >> 2);
              uint8_t *hd = dst + P::PAY_STEP;

              for (int w = lane; w < nw; w += 32)
                cp_async4 (hd + 4 * w, hdr + a0 + 4 * (size_t) w);
            }
        }
    }
  cp_commit ();
}

template <class T, int MAXTOK, int NR>
__global__ void __launch_bounds__ (PIPE_WARPS * 32)
matvec_pipe_kernel (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, int nb,
                    int n_in, int n_out, int n_tok, float *__restrict__ y, int accumulate,
                    int ldy, Sel sel)
{
  typedef Pipe<T> P;
  extern __shared__ __align__ (16) uint8_t pipe_smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gw = blockIdx.x * PIPE_WARPS + warp;
  const int n_warps = gridDim.x * PIPE_WARPS;
  const int n_groups = (n_out + NR - 1) / NR;
  const int n_steps = (nb + P::BPS - 1) / P::BPS;
  uint8_t *ring = pipe_smem + (size_t) warp * PIPE_STAGES * NR * P::ROW_BYTES;
  size_t xq0;
  float *yy = y;
  const size_t row_base = sel_apply (sel, n_out, n_in, ldy, xq0, yy);
  /* this warp's items: (group, step) for its groups gw, gw + n_warps, ... */
  const int my_groups = gw < n_groups ? (n_groups - 1 - gw) / n_warps + 1 : 0;
  const int n_items = my_groups * n_steps;
  float acc[NR][MAXTOK];

  /* prologue: weights only, before waiting for the previous kernel */
  bln_pdl_trigger ();
#pragma unroll
  for (int k = 0; k < PIPE_STAGES - 1; k++)
    {
      if (k < n_items)
        pipe_issue<T, NR> (ring + k * NR * P::ROW_BYTES, pay, hdr, row_base,
                           gw + (k / n_steps) * n_warps, k % n_steps, nb, n_out, lane);
      else
        cp_commit ();
    }
  bln_pdl_wait ();

#pragma unroll
  for (int r = 0; r < NR; r++)
#pragma unroll
    for (int t = 0; t < MAXTOK; t++)
      acc[r][t] = 0.f;

  for (int k = 0; k < n_items; k++)
    {
      const int group = gw + (k / n_steps) * n_warps;
      const int step = k % n_steps;
      const int b0 = step * P::BPS;
      const uint8_t *st = ring + (k % PIPE_STAGES) * NR * P::ROW_BYTES;

      cp_wait<PIPE_STAGES - 2> ();
      __syncwarp ();
      {
        const int bl = lane / T::UPB, s = lane % T::UPB;
        const int b = b0 + bl;

        if (!PIPE_MATH && b < nb)   /* experiment: the weight stream alone */
          acc[0][0] += (float) st[lane * 16];
        if (PIPE_MATH && b < nb && MAXTOK == 1)
          {
            /* one token: activations once, then each row decoded and
             * multiplied at once (few live registers) */
            int4 xq[T::NRUN];
            float2 xd[T::NRUN];

#pragma unroll
            for (int q = 0; q < T::NRUN; q++)
              {
                const size_t pos = xq0 + (size_t) b * T::VPB + T::xpos (s, q);
                xq[q] = __ldg (reinterpret_cast<const int4 *> (g_xq + pos));
                xd[q] = __ldg (g_xd + pos / 32);
              }
#pragma unroll
            for (int r = 0; r < NR; r++)
              if (group * NR + r < n_out)
                {
                  const size_t blk = (row_base + (size_t) (group * NR + r)) * nb + b0;
                  const int delta = T::HDR ? (int) ((blk * T::HDR) & 3) : 0;
                  const uint8_t *srow = st + r * P::ROW_BYTES;
                  typename T::W w;

                  T::load (w, srow + bl * T::PAY, srow + P::PAY_STEP + delta + bl * T::HDR, s);
                  acc[r][0] += T::dot (w, xq, xd);
                }
          }
        else if (PIPE_MATH && b < nb)
          {
            typename T::W w[NR];

#pragma unroll
            for (int r = 0; r < NR; r++)
              {
                const size_t blk = (row_base + (size_t) min (group * NR + r, n_out - 1)) * nb
                                   + b0;
                const int delta = T::HDR ? (int) ((blk * T::HDR) & 3) : 0;
                const uint8_t *srow = st + r * P::ROW_BYTES;

                if (group * NR + r < n_out)
                  T::load (w[r], srow + bl * T::PAY, srow + P::PAY_STEP + delta + bl * T::HDR, s);
              }
#pragma unroll
            for (int t = 0; t < MAXTOK; t++)
              {
                if (t < n_tok)
                  {
                    int4 xq[T::NRUN];
                    float2 xd[T::NRUN];

#pragma unroll
                    for (int q = 0; q < T::NRUN; q++)
                      {
                        const size_t pos = xq0 + (size_t) t * n_in + (size_t) b * T::VPB
                                           + T::xpos (s, q);
                        xq[q] = __ldg (reinterpret_cast<const int4 *> (g_xq + pos));
                        xd[q] = __ldg (g_xd + pos / 32);
                      }
#pragma unroll
                    for (int r = 0; r < NR; r++)
                      if (group * NR + r < n_out)
                        acc[r][t] += T::dot (w[r], xq, xd);
                  }
              }
          }
      }
      __syncwarp ();
      /* refill the stage consumed one iteration ago */
      if (k + PIPE_STAGES - 1 < n_items)
        {
          const int kn = k + PIPE_STAGES - 1;
          pipe_issue<T, NR> (ring + (kn % PIPE_STAGES) * NR * P::ROW_BYTES, pay, hdr, row_base,
                             gw + (kn / n_steps) * n_warps, kn % n_steps, nb, n_out, lane);
        }
      else
        cp_commit ();

      if (step == n_steps - 1)
        {
#pragma unroll
          for (int r = 0; r < NR; r++)
#pragma unroll
            for (int t = 0; t < MAXTOK; t++)
              {
#pragma unroll
                for (int off = 16; off > 0; off >>= 1)
                  acc[r][t] += __shfl_xor_sync (0xffffffffu, acc[r][t], off);
              }
#pragma unroll
          for (int r = 0; r < NR; r++)
#pragma unroll
            for (int t = 0; t < MAXTOK; t++)
              {
                const int row = group * NR + r;
                if (lane == r * MAXTOK + t && row < n_out && t < n_tok)
                  {
                    float *dst = yy + (size_t) t * ldy + row;
                    *dst = accumulate ? *dst + acc[r][t] : acc[r][t];
                  }
                acc[r][t] = 0.f;
              }
        }
    }
  cp_wait<0> ();
}

/* Shared memory per block of the pipelined kernel. */
template <class T, int NR>
constexpr size_t
pipe_smem_bytes ()
{
  return (size_t) PIPE_WARPS * PIPE_STAGES * NR * Pipe<T>::ROW_BYTES;
}

/* Whether the current device runs the pipelined kernel: compute capability
 * 8.0 or newer, and BALEEN_CUDA_MATVEC is not "v3". Decided once. */
bool
pipe_enabled ()
{
  static int state = -1;

  if (state < 0)
    {
      int dev = 0, major = 0;
      const char *env = std::getenv ("BALEEN_CUDA_MATVEC");

      state = 0;
      if ((env == nullptr || std::strcmp (env, "v3") != 0) && cudaGetDevice (&dev) == cudaSuccess
          && cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor, dev)
               == cudaSuccess && major >= 8)
        state = 1;
      (void) cudaGetLastError ();
    }
  return state == 1;
}

/* Launches the pipelined kernel: as many blocks as fit on the device at once
 * (they loop over the row groups), fewer when there are few groups. Returns
 * false when it cannot run here (the caller uses the older kernel). */
template <class T, int MAXTOK, int NR>
bool
launch_pipe (const uint8_t *p, const uint8_t *h, int nb, int n_in, int n_out, int n_tok,
             float *y, cudaStream_t stream, int accumulate, int ldy, Sel sel)
{
  static int blocks_per_sm = -1;   /* per instantiation; the device is assumed fixed */
  static int n_sm = 0;
  const size_t smem = pipe_smem_bytes<T, NR> ();
  const int n_groups = (n_out + NR - 1) / NR;
  int grid;

  if (!pipe_enabled ())
    return false;
  if (blocks_per_sm < 0)
    {
      int dev = 0, bps = 0, sms = 0;

      if (cudaGetDevice (&dev) != cudaSuccess
          || cudaFuncSetAttribute (matvec_pipe_kernel<T, MAXTOK, NR>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int) smem)
               != cudaSuccess
          || cudaOccupancyMaxActiveBlocksPerMultiprocessor (&bps,
                                                            matvec_pipe_kernel<T, MAXTOK, NR>,
                                                            PIPE_WARPS * 32, smem) != cudaSuccess
          || cudaDeviceGetAttribute (&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess
          || bps < 1)
        {
          (void) cudaGetLastError ();
          blocks_per_sm = 0;
        }
      else
        {
          n_sm = sms;
          blocks_per_sm = bps;
        }
    }
  if (blocks_per_sm == 0)
    return false;
  grid = min ((n_groups + PIPE_WARPS - 1) / PIPE_WARPS, blocks_per_sm * n_sm);
  (void) bln_launch (matvec_pipe_kernel<T, MAXTOK, NR>,
                     dim3 ((unsigned) grid, sel.expert ? (unsigned) sel.n_sel : 1u),
                     dim3 (PIPE_WARPS * 32), smem, stream, p, h, nb, n_in, n_out, n_tok, y,
                     accumulate, ldy, sel);
  return true;
}

#ifndef BLN_MV_PIPE_NR
#define BLN_MV_PIPE_NR 4
#endif

/* The pipelined kernel for 1..8 token rows (selections: one row each). */
template <class T>
bool
launch_pipe_tok (const uint8_t *p, const uint8_t *h, int nb, int n_in, int n_out, int n_tok,
                 float *y, cudaStream_t stream, int accumulate, int ldy, Sel sel)
{
  if (n_tok <= 1)
    return launch_pipe<T, 1, BLN_MV_PIPE_NR> (p, h, nb, n_in, n_out, n_tok, y, stream,
                                              accumulate, ldy, sel);
  if (n_tok <= 2)
    return launch_pipe<T, 2, BLN_MV_PIPE_NR> (p, h, nb, n_in, n_out, n_tok, y, stream,
                                              accumulate, ldy, sel);
  if (n_tok <= 4)
    return launch_pipe<T, 4, 4> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy, sel);
  return launch_pipe<T, 8, 4> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy, sel);
}

/* ---- Version 6: register streaming with lane-constant units ----
 *
 * The pipelined kernel above streams at 60-66% of the copy rate even with no
 * arithmetic at all, and its arithmetic alone takes half the time budget: an
 * ncu profile of the 7B model's 18944 x 3584 Q4_K matrix counts ~180 issued
 * instructions per 16-byte unit and row (copy bookkeeping, 64-bit address
 * arithmetic, scale unpacking, activation sums by dp4a), where the SM has
 * room for ~110 per unit at the full HBM rate (docs/BENCHMARKS.md). This
 * version cuts the instruction count per byte instead:
 *
 *  - Plain 16-byte loads into registers (ld.global.nc, no L1 allocation),
 *    U units per lane per row issued back to back before any is used, NR rows
 *    per warp: U * NR independent loads in flight per lane, the latency
 *    hidden by the other warps of the SM (no shared memory, no barrier).
 *  - A lane's units are lane, lane + 32, lane + 64, ... of the row: since 32
 *    is a multiple of every type's units per block, the unit's place inside
 *    its weight block (s = lane % UPB) is the same for all of them, so the
 *    scale and activation offsets are loop-invariant and each step advances
 *    all pointers by one constant.
 *  - The headers are laid out so that a unit's scales come in one or two
 *    aligned loads (Q4_K: d and dmin, then the pair's scales and mins; Q6_K:
 *    the unit's two scales side by side; kernels.h).
 *  - The activation side: besides the 8-bit values, the quantiser stores per
 *    block of 32 the scale and the scaled sums of the whole block and of each
 *    half (g_xs), so the minimum and offset terms (Q4_K's dmin, Q6_K's -32,
 *    Q4_0's -8) cost one multiply-add per 16 values instead of a dp4a pass
 *    over the activations; high nibbles are multiplied in place (dp4a of
 *    the masked byte, 16 times the value) and the 1/16 folded into a scale.
 *
 * Types: Q8_0, Q4_0, Q5_0, Q4_K, Q6_K (the types of the Q4_K_M, Q8_0 and
 * Q4_0 files); the others keep the pipelined kernel. */

#ifndef BLN_MV6_U
#define BLN_MV6_U 4
#endif
#ifndef BLN_MV6_NR
#define BLN_MV6_NR 2
#endif
/* 1: double-buffered registers (an experiment; docs/BENCHMARKS.md) */
#ifndef BLN_MV6_DB
#define BLN_MV6_DB 0
#endif

/* Sum of the four products of unsigned bytes of a and signed bytes of b. */
__device__ __forceinline__ int
dp4a_us (uint32_t a, int b, int c)
{
  int d;
  asm ("dp4a.u32.s32 %0, %1, %2, %3;" : "=r" (d) : "r" (a), "r" (b), "r" (c));
  return d;
}

__device__ __forceinline__ float
half_lo (uint32_t v)
{
  return __half2float (__ushort_as_half ((unsigned short) (v & 0xffffu)));
}

__device__ __forceinline__ float
half_hi (uint32_t v)
{
  return __half2float (__ushort_as_half ((unsigned short) (v >> 16)));
}

/* Each type: load() fetches unit s of a weight block (pay: the block's
 * payload, hdr: its header) into registers; load_x() the activations unit s
 * of block @b needs for one token row (xq: that row's 8-bit values, xs: its
 * block sums); dot() the unit's share of the dot product. */

struct V6Q8_0
{
  static constexpr int VPB = 32, UPB = 2, PAY = 32, HDR = 2;
  struct W { uint4 q; uint32_t d; };
  struct X { int4 q; float d; };

  static __device__ void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = ldg_stream16 (pay + s * 16);
    w.d = ldg_u16 (hdr);
  }
  static BLN_HD constexpr int xq_off (int s) { return s * 16; }
  static BLN_HD constexpr int xs_off (int s) { return 0; }
  static __device__ void
  load_x (X &x, const int8_t *xq, const float4 *xs, int s)
  {
    x.q = __ldg (reinterpret_cast<const int4 *> (xq));
    x.d = __ldg (&xs->x);
  }
  static __device__ float
  dot (const W &w, const X &x, int s)
  {
    int i = __dp4a ((int) w.q.x, x.q.x, 0);
    i = __dp4a ((int) w.q.y, x.q.y, i);
    i = __dp4a ((int) w.q.z, x.q.z, i);
    i = __dp4a ((int) w.q.w, x.q.w, i);
    return half_lo (w.d) * x.d * (float) i;
  }
};

/* The 16 bytes of @q as 32 nibbles: lo = low nibbles . a, hi = (16 x high
 * nibbles) . b (the high nibbles masked in place, not shifted). */
__device__ __forceinline__ void
nibble_dots (const uint4 &q, const int4 &a, const int4 &b, int &lo, int &hi)
{
  const uint32_t m = 0x0f0f0f0fu, mh = 0xf0f0f0f0u;

  lo = dp4a_us (q.x & m, a.x, 0);
  hi = dp4a_us (q.x & mh, b.x, 0);
  lo = dp4a_us (q.y & m, a.y, lo);
  hi = dp4a_us (q.y & mh, b.y, hi);
  lo = dp4a_us (q.z & m, a.z, lo);
  hi = dp4a_us (q.z & mh, b.z, hi);
  lo = dp4a_us (q.w & m, a.w, lo);
  hi = dp4a_us (q.w & mh, b.w, hi);
}

/* Q4_0: a unit is a whole block, low nibbles values 0..15, high 16..31;
 * value = d (q - 8). */
struct V6Q4_0
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 2;
  struct W { uint4 q; uint32_t d; };
  struct X { int4 lo, hi; float d, sum; };

  static __device__ void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = ldg_stream16 (pay);
    w.d = ldg_u16 (hdr);
  }
  static BLN_HD constexpr int xq_off (int s) { return 0; }
  static BLN_HD constexpr int xs_off (int s) { return 0; }
  static __device__ void
  load_x (X &x, const int8_t *xq, const float4 *xs, int s)
  {
    const int4 *p = reinterpret_cast<const int4 *> (xq);
    const float4 st = __ldg (xs);

    x.lo = __ldg (p);
    x.hi = __ldg (p + 1);
    x.d = st.x;
    x.sum = st.y;
  }
  static __device__ float
  dot (const W &w, const X &x, int s)
  {
    int lo, hi;

    nibble_dots (w.q, x.lo, x.hi, lo, hi);
    /* hi is exactly 16 times the high nibbles' sum */
    return half_lo (w.d) * (x.d * (float) (lo + (hi >> 4)) - 8.0f * x.sum);
  }
};

/* The four high bits of @b (bits 0..3) to bit 4 of bytes 0..3: the multiply
 * places copies of b at shifts 4, 11, 18, 25, which cannot carry into each
 * other, and bit k of the copy at 4 + 7k lands on 8k + 4. */
__device__ __forceinline__ uint32_t
spread4_fast (uint32_t b)
{
  return ((b & 15u) * 0x02040810u) & 0x10101010u;
}

/* Q5_0: as Q4_0 with a fifth bit per value (bit j of qh: value j), value
 * = d (q - 16). The header (d, qh) is 2-byte aligned. */
struct V6Q5_0
{
  static constexpr int VPB = 32, UPB = 1, PAY = 16, HDR = 6;
  struct W { uint4 q; uint32_t d, qh; };
  typedef V6Q4_0::X X;

  static __device__ void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = ldg_stream16 (pay);
    w.d = ldg_u16 (hdr);
    w.qh = ldg_u16 (hdr + 2) | (ldg_u16 (hdr + 4) << 16);
  }
  static BLN_HD constexpr int xq_off (int s) { return 0; }
  static BLN_HD constexpr int xs_off (int s) { return 0; }
  static __device__ void
  load_x (X &x, const int8_t *xq, const float4 *xs, int s)
  {
    V6Q4_0::load_x (x, xq, xs, s);
  }
  static __device__ float
  dot (const W &w, const X &x, int s)
  {
    const uint32_t m = 0x0f0f0f0fu;
    const uint32_t q[4] = { w.q.x, w.q.y, w.q.z, w.q.w };
    const int xl[4] = { x.lo.x, x.lo.y, x.lo.z, x.lo.w };
    const int xh[4] = { x.hi.x, x.hi.y, x.hi.z, x.hi.w };
    int sum = 0;

#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        sum = dp4a_us ((q[i] & m) | spread4_fast (w.qh >> (4 * i)), xl[i], sum);
        sum = dp4a_us (((q[i] >> 4) & m) | spread4_fast (w.qh >> (16 + 4 * i)), xh[i], sum);
      }
    return half_lo (w.d) * (x.d * (float) sum - 16.0f * x.sum);
  }
};

/* The activations of a K-quant unit: two runs of 16 values, the second
 * BLK activation blocks (32 values each) after the first, both in half
 * s % 2 of their block; with each block's scale and that half's sum. */
struct XRuns { int4 q0, q1; float d0, h0, d1, h1; };

template <int BLK>
__device__ __forceinline__ void
load_two_runs (XRuns &x, const int8_t *p, const float4 *xs, int s)
{
  const int half = s & 1;
  const float4 s0 = __ldg (xs), s1 = __ldg (xs + BLK);

  x.q0 = __ldg (reinterpret_cast<const int4 *> (p));
  x.q1 = __ldg (reinterpret_cast<const int4 *> (p + 32 * BLK));
  x.d0 = s0.x;
  x.h0 = half ? s0.w : s0.z;
  x.d1 = s1.x;
  x.h1 = half ? s1.w : s1.z;
}

/* Q4_K: unit s (payload bytes 16s..16s+15 of the block) holds values
 * 16 (s % 2) + 0..15 of sub-blocks 2g (low nibbles) and 2g + 1 (high),
 * g = s / 2: half (s % 2) of activation blocks 2g and 2g + 1. */
struct V6Q4_K
{
  static constexpr int VPB = 256, UPB = 8, PAY = 128, HDR = 20;
  struct W { uint4 q; uint32_t dd, sm; };
  typedef XRuns X;

  static __device__ void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    w.q = ldg_stream16 (pay + s * 16);
    w.dd = ldg_u32 (hdr);
    w.sm = ldg_u32 (hdr + 4 + 4 * (s >> 1));
  }
  /* run 0: half s % 2 of activation block 2g; run 1: the same half of the
   * next block */
  static BLN_HD constexpr int xq_off (int s) { return (s >> 1) * 64 + (s & 1) * 16; }
  static BLN_HD constexpr int xs_off (int s) { return (s >> 1) * 2; }
  static __device__ void
  load_x (X &x, const int8_t *p, const float4 *xs, int s)
  {
    load_two_runs<1> (x, p, xs, s);
  }
  static __device__ float
  dot (const W &w, const X &x, int s)
  {
    int lo, hi;

    nibble_dots (w.q, x.q0, x.q1, lo, hi);
    const float d = half_lo (w.dd), dmin = half_hi (w.dd);
    const float sc0 = (float) (w.sm & 0xffu), sc1 = (float) ((w.sm >> 8) & 0xffu);
    const float mn0 = (float) ((w.sm >> 16) & 0xffu), mn1 = (float) (w.sm >> 24);
    return d * (sc0 * x.d0 * (float) lo + sc1 * (0.0625f * x.d1) * (float) hi)
           - dmin * (mn0 * x.h0 + mn1 * x.h1);
  }
};

/* Q6_K: unit s: h = s / 4, k0 = 16 (s % 4): ql bytes h*64 + k0 + 0..15 (low
 * nibbles: values h*128 + k0 + i, high: + 64) and qh bytes h*32 + k0 % 32 +
 * 0..15 (bits 2 (k0 / 32) up for the first run, 4 more for the second);
 * value = d * scale * (q - 32). */
struct V6Q6_K
{
  static constexpr int VPB = 256, UPB = 8, PAY = 192, HDR = 18;
  struct W { uint4 ql, qh; uint32_t sc, d; };
  typedef V6Q4_K::X X;

  static __device__ void
  load (W &w, const uint8_t *pay, const uint8_t *hdr, int s)
  {
    const int h = s >> 2, k0 = (s & 3) * 16;

    w.ql = ldg_stream16 (pay + h * 64 + k0);
    w.qh = ldg_stream16 (pay + 128 + h * 32 + (k0 & 31));
    w.sc = ldg_u16 (hdr + 2 * s);
    w.d = ldg_u16 (hdr + 16);
  }
  /* run 0: values h*128 + k0 + 0..15 (half s % 2 of activation block
   * 4h + k0 / 32); run 1: 64 values (two blocks) later */
  static BLN_HD constexpr int xq_off (int s) { return (s >> 2) * 128 + (s & 3) * 16; }
  static BLN_HD constexpr int xs_off (int s) { return (s >> 2) * 4 + ((s & 3) >> 1); }
  static __device__ void
  load_x (X &x, const int8_t *p, const float4 *xs, int s)
  {
    load_two_runs<2> (x, p, xs, s);
  }
  static __device__ float
  dot (const W &w, const X &x, int s)
  {
    const uint32_t m = 0x0f0f0f0fu, m2 = 0x30303030u;
    const int shift = s & 2;   /* 2 (k0 / 32) */
    const uint32_t ql[4] = { w.ql.x, w.ql.y, w.ql.z, w.ql.w };
    const uint32_t qh[4] = { w.qh.x, w.qh.y, w.qh.z, w.qh.w };
    const int x0[4] = { x.q0.x, x.q0.y, x.q0.z, x.q0.w };
    const int x1[4] = { x.q1.x, x.q1.y, x.q1.z, x.q1.w };
    int lo = 0, hi = 0;

#pragma unroll
    for (int i = 0; i < 4; i++)
      {
        lo = dp4a_us ((ql[i] & m) | ((qh[i] << (4 - shift)) & m2), x0[i], lo);
        hi = dp4a_us (((ql[i] >> 4) & m) | ((qh[i] >> shift) & m2), x1[i], hi);
      }
    const float d = half_lo (w.d);
    const float sc0 = (float) (int8_t) (w.sc & 0xffu), sc1 = (float) (int8_t) (w.sc >> 8);
    return d * (sc0 * (x.d0 * (float) lo - 32.0f * x.h0) + sc1 * (x.d1 * (float) hi - 32.0f * x.h1));
  }
};

/* The kernel. Warp w of block b owns rows (b * WARPS + w) * NR + 0..NR-1
 * (the last ones clamped to n_out - 1: read, never written). Lane l takes
 * units l + 32 k of each row, U at a time. With KS = WARPS (few, long rows)
 * the warps of block b instead share rows b * NR + 0..NR-1 and split
 * each row into WARPS runs of whole 32-unit groups, their sums meeting in
 * shared memory: four times the warps stream a matrix of few rows. */
template <class T, int MAXTOK, int NR, int U, bool DB, int KS = 1>
__global__ void __launch_bounds__ (WARPS * 32)
matvec_v6_kernel (const uint8_t *__restrict__ pay, const uint8_t *__restrict__ hdr, int nb,
                  int n_in, int n_out, int n_tok, float *__restrict__ y, int accumulate, int ldy,
                  Sel sel)
{
  constexpr int BPS = 32 / T::UPB;   /* weight blocks per 32 units */
  constexpr int XB = T::VPB / 32;    /* activation blocks per weight block */
  static_assert (KS == 1 || KS == WARPS, "K splits over the warps of a block or not at all");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int s = lane % T::UPB, bl = lane / T::UPB;
  const int row0 = KS == 1 ? (blockIdx.x * WARPS + warp) * NR : blockIdx.x * NR;
  /* this warp's 32-unit groups [g0, g1) of each row */
  const int n_groups = (nb * T::UPB + 31) / 32, per = (n_groups + KS - 1) / KS;
  const int g0 = KS == 1 ? 0 : min (n_groups, warp * per);
  const int g1 = KS == 1 ? n_groups : min (n_groups, g0 + per);
  /* units of this lane per row */
  const int n_k = max (0, min (g1, (nb * T::UPB - lane + 31) / 32) - g0);
  const uint8_t *pk[NR];   /* the current group's first unit, per row */
  const uint8_t *hk[NR];
  /* two register buffers when DB (loads of the next group in flight while
   * this one is multiplied), else one */
  typename T::W w[DB ? 2 : 1][NR][U];
  float acc[NR][MAXTOK];
  size_t x_off = 0;
  float *yy = y;

  decode_trigger ();
  if (row0 >= n_out)
    return;   /* the whole warp leaves together */

  auto rows_at = [&] (size_t row_base) {
#pragma unroll
    for (int r = 0; r < NR; r++)
      {
        const size_t blk = (row_base + (size_t) min (row0 + r, n_out - 1)) * nb + bl
                           + (size_t) g0 * BPS;
        pk[r] = pay + blk * T::PAY;
        hk[r] = hdr + blk * T::HDR;
      }
  };
  /* loads units k0 .. k0 + U - 1 (those that exist) and moves on */
  auto load_group = [&] (typename T::W (&buf)[NR][U], int k0) {
#pragma unroll
    for (int j = 0; j < U; j++)
      if (k0 + j < n_k)
#pragma unroll
        for (int r = 0; r < NR; r++)
          T::load (buf[r][j], pk[r] + j * (BPS * T::PAY), hk[r] + j * (BPS * T::HDR), s);
#pragma unroll
    for (int r = 0; r < NR; r++)
      {
        pk[r] += U * BPS * T::PAY;
        hk[r] += U * BPS * T::HDR;
      }
  };

  if (sel.expert == nullptr)
    {
      /* the weights need nothing from the previous kernel: fetch the first
       * group while it finishes */
      rows_at (0);
      load_group (w[0], 0);
      bln_pdl_wait ();
    }
  else
    {
      bln_pdl_wait ();
      rows_at (sel_apply (sel, n_out, n_in, ldy, x_off, yy));
      load_group (w[0], 0);
    }

#pragma unroll
  for (int r = 0; r < NR; r++)
#pragma unroll
    for (int t = 0; t < MAXTOK; t++)
      acc[r][t] = 0.f;

  {
    /* this lane's activations (run 0 of its first unit), token row 0 */
    const int8_t *xq = g_xq + x_off + ((size_t) g0 * BPS + bl) * T::VPB + T::xq_off (s);
    const float4 *xs = g_xs + x_off / 32 + ((size_t) g0 * BPS + bl) * XB + T::xs_off (s);

    /* multiplies group k0 held in buf, then moves the activations on */
    auto compute = [&] (const typename T::W (&buf)[NR][U], int k0) {
#pragma unroll
      for (int j = 0; j < U; j++)
        if (k0 + j < n_k)
          {
#pragma unroll
            for (int t = 0; t < MAXTOK; t++)
              if (t < n_tok)
                {
                  typename T::X x;

                  T::load_x (x, xq + (size_t) t * n_in + j * (BPS * T::VPB),
                             xs + (size_t) t * (n_in / 32) + j * (BPS * XB), s);
#pragma unroll
                  for (int r = 0; r < NR; r++)
                    acc[r][t] += T::dot (buf[r][j], x, s);
                }
          }
      xq += U * BPS * T::VPB;
      xs += U * BPS * XB;
    };

    if (DB)
      for (int k0 = 0; k0 < n_k; k0 += 2 * U)
        {
          load_group (w[DB ? 1 : 0], k0 + U);
          compute (w[0], k0);
          if (k0 + U >= n_k)
            break;
          load_group (w[0], k0 + 2 * U);
          compute (w[DB ? 1 : 0], k0 + U);
        }
    else
      for (int k0 = 0; k0 < n_k; k0 += U)
        {
          if (k0 > 0)
            load_group (w[0], k0);
          compute (w[0], k0);
        }
  }

#pragma unroll
  for (int r = 0; r < NR; r++)
#pragma unroll
    for (int t = 0; t < MAXTOK; t++)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1)
        acc[r][t] += __shfl_xor_sync (0xffffffffu, acc[r][t], off);
  if constexpr (KS > 1)
    {
      /* the warps' runs of the same rows, added in warp order */
      __shared__ float part[KS][NR][MAXTOK];

      if (lane == 0)
#pragma unroll
        for (int r = 0; r < NR; r++)
#pragma unroll
          for (int t = 0; t < MAXTOK; t++)
            part[warp][r][t] = acc[r][t];
      __syncthreads ();
      if (warp != 0)
        return;
#pragma unroll
      for (int r = 0; r < NR; r++)
#pragma unroll
        for (int t = 0; t < MAXTOK; t++)
          {
            float v = 0.f;
#pragma unroll
            for (int w = 0; w < KS; w++)
              v += part[w][r][t];
            acc[r][t] = v;
          }
    }
#pragma unroll
  for (int r = 0; r < NR; r++)
#pragma unroll
    for (int t = 0; t < MAXTOK; t++)
      if (lane == r * MAXTOK + t && row0 + r < n_out && t < n_tok)
        {
          float *dst = yy + (size_t) t * ldy + row0 + r;
          *dst = accumulate ? *dst + acc[r][t] : acc[r][t];
        }
}

/* Which matvec generation runs the 8-bit path: BALEEN_CUDA_MATVEC=v3 or v5
 * selects an older one (for comparison), anything else version 6 where it
 * has the type. Decided once. */
int
matvec_version ()
{
  static int v = 0;

  if (v == 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_MATVEC");

      v = env && std::strcmp (env, "v3") == 0 ? 3 : env && std::strcmp (env, "v5") == 0 ? 5 : 6;
    }
  return v;
}

template <class T> struct V6Of { typedef void type; };
template <> struct V6Of<QTypeQ8_0> { typedef V6Q8_0 type; };
template <> struct V6Of<QTypeQ4_0> { typedef V6Q4_0 type; };
template <> struct V6Of<QTypeQ5_0> { typedef V6Q5_0 type; };
template <> struct V6Of<QTypeQ4_K> { typedef V6Q4_K type; };
template <> struct V6Of<QTypeQ6_K> { typedef V6Q6_K type; };

/* Whether a plain product of one token splits K over the warps of a
 * block: long rows (8192 values or more) in a matrix whose usual grid
 * would give fewer than four blocks per SM (the 7B's down projection, 3584
 * rows of 18944: 14 warps per SM). On an H200 (session 6, one token, % of
 * the copy rate) 3584 x 18944 went Q4_K 50.7 -> 59.3, Q6_K 58.5 -> 63.6,
 * Q8_0 53.2 -> 78.6; short rows lost for Q4_K and Q6_K (4096 x 4096 35.1
 * -> 22.0 and 44.3 -> 36.8), so they keep the usual grid there, and gained
 * for Q8_0 (42.5 -> 52.5), which splits them too. BALEEN_CUDA_MV_KSPLIT=0
 * turns it off; read once. */
static bool
v6_ksplit (int n_out, int n_in, bool short_rows_too)
{
  static int on = -1, sms = 0;

  if (on < 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_MV_KSPLIT");

      on = env != nullptr && std::strcmp (env, "0") == 0 ? 0 : 1;
      sms = bln_sm_count ();
    }
  return on == 1 && (n_in >= 8192 || short_rows_too) && n_out < 4 * sms * WARPS * BLN_MV6_NR;
}

template <class V, int MAXTOK, int U>
void
launch_v6_tok (const uint8_t *p, const uint8_t *h, int nb, int n_in, int n_out, int n_tok,
               float *y, cudaStream_t stream, int accumulate, int ldy, Sel sel)
{
  constexpr int NR = BLN_MV6_NR;
  const int rows_per_block = WARPS * NR;
  const dim3 grid ((unsigned) ((n_out + rows_per_block - 1) / rows_per_block),
                   sel.expert ? (unsigned) sel.n_sel : 1u);

  /* one token only: an expert selection, and products of several tokens,
   * keep the usual grid, so that they sum in the same order as each other */
  if constexpr (MAXTOK == 1)
    if (sel.expert == nullptr && n_tok == 1
        && v6_ksplit (n_out, n_in, std::is_same<V, V6Q8_0>::value))
      {
        (void) bln_launch (matvec_v6_kernel<V, MAXTOK, NR, U, BLN_MV6_DB != 0, WARPS>,
                           dim3 ((unsigned) ((n_out + NR - 1) / NR)), dim3 (WARPS * 32), 0,
                           stream, p, h, nb, n_in, n_out, n_tok, y, accumulate, ldy, sel);
        return;
      }
  (void) bln_launch (matvec_v6_kernel<V, MAXTOK, NR, U, BLN_MV6_DB != 0>, grid,
                     dim3 (WARPS * 32), 0, stream, p,
                     h, nb, n_in, n_out, n_tok, y, accumulate, ldy, sel);
}

/* Runs version 6 for QType T when it has the type and is selected; returns
 * whether it did. */
template <class T>
bool
launch_v6 (const uint8_t *p, const uint8_t *h, int nb, int n_in, int n_out, int n_tok,
           float *y, cudaStream_t stream, int accumulate, int ldy, Sel sel)
{
  typedef typename V6Of<T>::type V;

  if constexpr (std::is_void<V>::value)
    return false;
  else
    {
      if (matvec_version () != 6)
        return false;
      if (n_tok <= 1)
        launch_v6_tok<V, 1, BLN_MV6_U> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy,
                                        sel);
      else if (n_tok <= 2)
        launch_v6_tok<V, 2, BLN_MV6_U> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy,
                                        sel);
      else if (n_tok <= 4)
        launch_v6_tok<V, 4, 2> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy, sel);
      else
        launch_v6_tok<V, 8, 2> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy, sel);
      return true;
    }
}

/* The 8-bit path for type T: round the activations, then the matvec. Falls
 * back to the float kernel of FT for rows longer than the scratch. */
template <class T, class FT>
cudaError_t
launch_q8 (const void *payload, const void *header, int n_in, int n_out, const float *x,
           int n_tok, float *y, cudaStream_t stream, int flags, int ldy, Sel sel = Sel ())
{
  const int accumulate = (flags & BLN_KERNELS_MATVEC_ACCUMULATE) != 0;
  const int nb = n_in / T::VPB;
  const int n = n_tok * n_in;
  const uint8_t *p = static_cast<const uint8_t *> (payload);
  const uint8_t *h = static_cast<const uint8_t *> (header);

  if (n_in % T::VPB != 0 || !header)
    return cudaErrorInvalidValue;
  if (n_in > XQ_MAX_IN || (sel.expert && (size_t) n > (size_t) BLN_KERNELS_MATVEC_MAX_TOK
                                                          * XQ_MAX_IN))
    return launch<FT> (payload, header, n_in, n_out, x, sel.expert ? 1 : n_tok, y, stream,
                       accumulate, ldy, sel);
  if (!(flags & BLN_KERNELS_MATVEC_XQ_READY))
    (void) bln_launch (quantize_x_kernel, dim3 ((n + 255) / 256), dim3 (256), 0, stream, x, n);
  if (launch_v6<T> (p, h, nb, n_in, n_out, sel.expert ? 1 : n_tok, y, stream, accumulate, ldy,
                    sel))
    return cudaGetLastError ();
  if (launch_pipe_tok<T> (p, h, nb, n_in, n_out, sel.expert ? 1 : n_tok, y, stream, accumulate,
                          ldy, sel))
    return cudaGetLastError ();
  if (sel.expert)
    {
      launch_q8_rows<T, 1, BLN_MV_ROWS1> (p, h, nb, n_in, n_out, 1, y, stream, accumulate, ldy,
                                          sel);
      return cudaGetLastError ();
    }
  /* From 3 tokens on, 4 rows per warp: each activation load then serves
   * twice as many weight rows (an unmeasured guess: the activation traffic
   * through L1 grows with n_tok, the weight traffic does not). */
  if (n_tok <= 1)
    launch_q8_rows<T, 1, BLN_MV_ROWS1> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate,
                                        ldy);
  else if (n_tok <= 2)
    launch_q8_rows<T, 2, ROWS> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy);
  else if (n_tok <= 4)
    launch_q8_rows<T, 4, 2 * ROWS> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy);
  else
    launch_q8_rows<T, 8, 2 * ROWS> (p, h, nb, n_in, n_out, n_tok, y, stream, accumulate, ldy);
  return cudaGetLastError ();
}

/* GGUF type ids (engine/quant.h); kept as literals so that this file needs
 * nothing but the CUDA toolkit. */
enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14,
       T_BF16 = 30 };

} /* namespace */

extern "C" int
bln_kernels_split_layout (int type, BlnSplitLayout *out)
{
  BlnSplitLayout l;

  switch (type)
    {
    case T_Q8_0: l = { 32, 34, 2, 32, 2 }; break;
    case T_Q4_0: l = { 32, 18, 2, 16, 2 }; break;
    case T_Q4_1: l = { 32, 20, 4, 16, 4 }; break;
    case T_Q5_0: l = { 32, 22, 6, 16, 6 }; break;
    case T_Q5_1: l = { 32, 24, 8, 16, 8 }; break;
    case T_Q4_K: l = { 256, 144, 16, 128, 20 }; break;   /* header repacked, see kernels.h */
    case T_Q5_K: l = { 256, 176, 48, 128, 48 }; break;
    case T_Q6_K: l = { 256, 210, 0, 192, 18 }; break;
    case T_F16:
    case T_BF16: l = { 8, 16, 0, 16, 0 }; break;
    case T_F32: l = { 4, 16, 0, 16, 0 }; break;
    default: return 0;
    }
  if (out)
    *out = l;
  return 1;
}

extern "C" cudaError_t
bln_kernels_xq_scratch (BlnKernelsXq *xq)
{
  static BlnKernelsXq cached;
  static bool have = false;
  cudaError_t err;

  if (!have)
    {
      if ((err = cudaGetSymbolAddress (&cached.q, g_xq)) != cudaSuccess
          || (err = cudaGetSymbolAddress (&cached.d, g_xd)) != cudaSuccess
          || (err = cudaGetSymbolAddress (&cached.s, g_xs)) != cudaSuccess)
        return err;
      cached.max_values = (int) (sizeof (g_xq) / BLN_KERNELS_MATVEC_MAX_TOK);
      have = true;
    }
  *xq = cached;
  return cudaSuccess;
}

extern "C" cudaError_t
bln_kernels_matvec (int type, const void *payload, const void *header, int n_in, int n_out,
                    const float *d_x, int n_tok, float *d_y, cudaStream_t stream)
{
  return bln_kernels_matvec_ex (type, payload, header, n_in, n_out, d_x, n_tok, d_y, 0, 0,
                                stream);
}

extern "C" cudaError_t
bln_kernels_matvec_ex (int type, const void *payload, const void *header, int n_in, int n_out,
                       const float *d_x, int n_tok, float *d_y, int ldy, int flags,
                       cudaStream_t stream)
{
  const int accumulate = (flags & BLN_KERNELS_MATVEC_ACCUMULATE) != 0;

  if (ldy == 0)
    ldy = n_out;
  if (ldy < n_out)
    return cudaErrorInvalidValue;

  if (!payload || !d_x || !d_y || n_in <= 0 || n_out <= 0 || n_tok < 1
      || n_tok > BLN_KERNELS_MATVEC_MAX_TOK
      || ((uintptr_t) payload & 15) || ((uintptr_t) d_x & 15))
    return cudaErrorInvalidValue;

  switch (type)
    {
    case T_Q8_0:
      return launch_q8<QTypeQ8_0, TypeQ8_0> (payload, header, n_in, n_out, d_x, n_tok, d_y,
                                             stream, flags, ldy);
    case T_Q4_0:
      return launch_q8<QTypeQ4_0, TypeQ4_0> (payload, header, n_in, n_out, d_x, n_tok, d_y,
                                             stream, flags, ldy);
    case T_Q4_1:
      return launch_q8<QTypeQ4_1, TypeQ4_1> (payload, header, n_in, n_out, d_x, n_tok, d_y,
                                             stream, flags, ldy);
    case T_Q5_0:
      return launch_q8<QTypeQ5_0, TypeQ5_0> (payload, header, n_in, n_out, d_x, n_tok, d_y,
                                             stream, flags, ldy);
    case T_Q5_1:
      return launch_q8<QTypeQ5_1, TypeQ5_1> (payload, header, n_in, n_out, d_x, n_tok, d_y,
                                             stream, flags, ldy);
    case T_Q4_K:
      return launch_q8<QTypeQ4_K, TypeQ4_K> (payload, header, n_in, n_out, d_x, n_tok, d_y,
                                             stream, flags, ldy);
    case T_Q5_K:
      return launch_q8<QTypeQ5_K, TypeQ5_K> (payload, header, n_in, n_out, d_x, n_tok, d_y,
                                             stream, flags, ldy);
    case T_Q6_K:
      return launch_q8<QTypeQ6_K, TypeQ6_K> (payload, header, n_in, n_out, d_x, n_tok, d_y,
                                             stream, flags, ldy);
    case T_F16:
      return launch<TypeF16> (payload, header, n_in, n_out, d_x, n_tok, d_y, stream, accumulate,
                              ldy);
    case T_BF16:
      return launch<TypeBF16> (payload, header, n_in, n_out, d_x, n_tok, d_y, stream, accumulate,
                              ldy);
    case T_F32:
      return launch<TypeF32> (payload, header, n_in, n_out, d_x, n_tok, d_y, stream, accumulate,
                              ldy);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" cudaError_t
bln_kernels_matvec_sel (int type, const void *payload, const void *header, int n_in, int n_out,
                        int n_expert, const float *d_x, int n_x_rows, const int32_t *d_expert,
                        const int32_t *d_tok, int n_sel, float *d_y, int ldy, int flags,
                        cudaStream_t stream)
{
  const int accumulate = (flags & BLN_KERNELS_MATVEC_ACCUMULATE) != 0;
  Sel sel;

  if (ldy == 0)
    ldy = n_out;
  if (!payload || !d_x || !d_y || !d_expert || n_in <= 0 || n_out <= 0 || n_expert <= 0
      || n_x_rows < 1 || n_sel < 1 || n_sel > 65535 || ldy < n_out
      || (size_t) n_expert * n_out > (size_t) INT32_MAX
      || ((uintptr_t) payload & 15) || ((uintptr_t) d_x & 15))
    return cudaErrorInvalidValue;
  sel.expert = d_expert;
  sel.tok = d_tok;
  sel.n_sel = n_sel;
  sel.n_expert = n_expert;
  switch (type)
    {
    case T_Q8_0:
      return launch_q8<QTypeQ8_0, TypeQ8_0> (payload, header, n_in, n_out, d_x, n_x_rows, d_y,
                                             stream, flags, ldy, sel);
    case T_Q4_0:
      return launch_q8<QTypeQ4_0, TypeQ4_0> (payload, header, n_in, n_out, d_x, n_x_rows, d_y,
                                             stream, flags, ldy, sel);
    case T_Q4_1:
      return launch_q8<QTypeQ4_1, TypeQ4_1> (payload, header, n_in, n_out, d_x, n_x_rows, d_y,
                                             stream, flags, ldy, sel);
    case T_Q5_0:
      return launch_q8<QTypeQ5_0, TypeQ5_0> (payload, header, n_in, n_out, d_x, n_x_rows, d_y,
                                             stream, flags, ldy, sel);
    case T_Q5_1:
      return launch_q8<QTypeQ5_1, TypeQ5_1> (payload, header, n_in, n_out, d_x, n_x_rows, d_y,
                                             stream, flags, ldy, sel);
    case T_Q4_K:
      return launch_q8<QTypeQ4_K, TypeQ4_K> (payload, header, n_in, n_out, d_x, n_x_rows, d_y,
                                             stream, flags, ldy, sel);
    case T_Q5_K:
      return launch_q8<QTypeQ5_K, TypeQ5_K> (payload, header, n_in, n_out, d_x, n_x_rows, d_y,
                                             stream, flags, ldy, sel);
    case T_Q6_K:
      return launch_q8<QTypeQ6_K, TypeQ6_K> (payload, header, n_in, n_out, d_x, n_x_rows, d_y,
                                             stream, flags, ldy, sel);
    case T_F16:
      return launch<TypeF16> (payload, header, n_in, n_out, d_x, 1, d_y, stream, accumulate, ldy,
                              sel);
    case T_BF16:
      return launch<TypeBF16> (payload, header, n_in, n_out, d_x, 1, d_y, stream, accumulate,
                               ldy, sel);
    case T_F32:
      return launch<TypeF32> (payload, header, n_in, n_out, d_x, 1, d_y, stream, accumulate, ldy,
                              sel);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" cudaError_t
bln_kernels_dequant_f16 (int type, const void *payload, const void *header, int n_in, int n_out,
                         void *out, cudaStream_t stream)
{
  __half *o = static_cast<__half *> (out);

  if (!payload || !out || n_in <= 0 || n_out <= 0 || ((uintptr_t) payload & 15))
    return cudaErrorInvalidValue;
  switch (type)
    {
    case T_Q8_0:
      return launch_dequant<TypeQ8_0, xoff_q8_0> (payload, header, n_in, n_out, o, stream);
    case T_Q4_0:
      return launch_dequant<TypeQ4_0, xoff_q4> (payload, header, n_in, n_out, o, stream);
    case T_Q4_1:
      return launch_dequant<TypeQ4_1, xoff_q4> (payload, header, n_in, n_out, o, stream);
    case T_Q5_0:
      return launch_dequant<TypeQ5_0, xoff_q4> (payload, header, n_in, n_out, o, stream);
    case T_Q5_1:
      return launch_dequant<TypeQ5_1, xoff_q4> (payload, header, n_in, n_out, o, stream);
    case T_Q4_K:
      return launch_dequant<TypeQ4_K, xoff_k4> (payload, header, n_in, n_out, o, stream);
    case T_Q5_K:
      return launch_dequant<TypeQ5_K, xoff_k4> (payload, header, n_in, n_out, o, stream);
    case T_Q6_K:
      return launch_dequant<TypeQ6_K, xoff_k6> (payload, header, n_in, n_out, o, stream);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" cudaError_t
bln_kernels_rmsnorm_quant (const float *x, const float *w, float *y, int n_rows, int d,
                           float eps, cudaStream_t stream)
{
  if (!x || !w || !y || n_rows <= 0 || n_rows > BLN_KERNELS_MATVEC_MAX_TOK || d <= 0
      || d % 32 != 0 || d > XQ_MAX_IN)
    return cudaErrorInvalidValue;
  (void) bln_launch (rmsnorm_quant_kernel, dim3 ((d + NORM_SLICE - 1) / NORM_SLICE, n_rows),
                     dim3 (NORM_SLICE), 0, stream, x, w, y, d, eps);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_silu_mul_quant (const float *g, int g_stride, const float *u, int u_stride,
                            float *out, int n_rows, int ff, cudaStream_t stream)
{
  size_t n = (size_t) n_rows * ff;

  if (!g || !u || !out || n_rows <= 0 || n_rows > BLN_KERNELS_MATVEC_MAX_TOK || ff <= 0
      || ff % 32 != 0 || ff > XQ_MAX_IN || g_stride < ff || u_stride < ff)
    return cudaErrorInvalidValue;
  (void) bln_launch (silu_mul_quant_kernel, dim3 ((unsigned) ((n + 255) / 256)), dim3 (256), 0,
                      stream, g, g_stride, u, u_stride, out, n, ff);
  return cudaGetLastError ();
}
