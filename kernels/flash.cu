/* kernels/flash.cu — causal prefill attention in one kernel (flash.h).
 *
 * A block takes 64 query rows of one head, a warp 16 of them. The queries
 * stay in registers as tensor-core fragments; the keys and values pass
 * through shared memory in tiles of 64 positions, the next tile copied
 * (cp.async) while the current one is multiplied. Per tile: scores S = Q Kᵀ
 * (m16n8k16, F32 accumulators), the causal mask on the tiles that reach the
 * diagonal, the running maximum and sum per row (base-2 exponentials of the
 * scores pre-scaled by scale · log2 e), the output rescaled, then O += P V
 * with P rounded to F16 — the score fragments are laid out as the A
 * fragments of the second product, so P never leaves registers. V is read
 * with ldmatrix.trans: its rows are positions, the product wants them as
 * the k dimension. Shared rows are padded by 16 bytes so that the eight
 * rows a fragment load touches fall in distinct banks.
 *
 * The old path (forward.c, attn_prefill: cuBLAS scores, a masked softmax
 * kernel, cuBLAS mix) wrote and read a float score matrix per layer: on an
 * H200 about 1 ms of a 7B layer's 3.2 ms at 2048 tokens.
 */
#include <cstdint>
#include <cmath>
#include <cuda_fp16.h>

#include "flash.h"
#include "launch.cuh"
#include "device-util.cuh"
#include "paged.h"

namespace {

constexpr int FA_BM = 64;      /* query rows per block */
constexpr int FA_BN = 64;      /* positions per tile */
constexpr int FA_WARPS = FA_BM / 16;

template <int D> __host__ __device__ constexpr int
fa_ld ()
{
  return D + 8;   /* halves per shared row */
}

template <int D> constexpr size_t
fa_smem ()
{
  return (size_t) 2 * 2 * FA_BN * fa_ld<D> () * sizeof (__half);   /* K and V, two stages */
}

/* Two values as an F16 pair: two F16 values, or two floats rounded. */
__device__ __forceinline__ uint32_t
ld_h2 (const __half *p)
{
  return *reinterpret_cast<const uint32_t *> (p);
}

__device__ __forceinline__ uint32_t
ld_h2 (const float *p)
{
  const float2 f = *reinterpret_cast<const float2 *> (p);
  const __half2 h = __floats2half2_rn (f.x, f.y);

  return *reinterpret_cast<const uint32_t *> (&h);
}

__device__ __forceinline__ uint32_t
pack_h2 (float lo, float hi)
{
  const __half2 h = __floats2half2_rn (lo, hi);
  return *reinterpret_cast<const uint32_t *> (&h);
}

/* Four 8 x 8 F16 matrices from shared memory, transposed: lane l gives
 * the row address of matrix l / 8. */
__device__ __forceinline__ void
ldmatrix_x4_trans (uint32_t (&r)[4], const __half *p)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile ("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                : "=r" (r[0]), "=r" (r[1]), "=r" (r[2]), "=r" (r[3])
                : "r" ((unsigned) __cvta_generic_to_shared (p)));
#else
  (void) p;
  r[0] = r[1] = r[2] = r[3] = 0;
#endif
}

/* Where the keys and values are: a plain cache (position p at row p) or a
 * paged pool (kernels/paged.h: row bln_paged_row (tab, ...)). Rows of ld
 * elements. */
struct FlashKv
{
  const __half *k, *v;
  int ld;
  const int32_t *tab;   /* null: a plain cache */
  int n_layer, layer, block_size;
};

__device__ __forceinline__ size_t
kv_row (const FlashKv &kv, int pos)
{
  return kv.tab ? bln_paged_row (kv.tab, kv.n_layer, kv.layer, kv.block_size, pos)
                : (size_t) pos;
}

/* Block (query tile, head): blockIdx.x counts tiles from the last, so that
 * the longest rows (most positions) start first. Query row t, head h at q +
 * t * q_ld + h * D. @sl2 = scale · log2 e. */
template <int D, class QT>
__global__ void __launch_bounds__ (FA_WARPS * 32)
flash_prefill_kernel (const QT *__restrict__ q, int q_ld, int n, int pos0, int H, int group,
                      float sl2, FlashKv kv, float *__restrict__ out)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int LD = fa_ld<D> ();
  extern __shared__ __align__ (16) unsigned char fa_shared[];
  __half *ks = reinterpret_cast<__half *> (fa_shared);   /* [2][FA_BN][LD] */
  __half *vs = ks + 2 * FA_BN * LD;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * FA_BM, h = blockIdx.y, hk = h / group;
  const int ra = q0 + warp * 16 + g, rb = ra + 8;          /* this thread's two rows */
  const int pa = pos0 + ra, pb = pos0 + rb;               /* and their positions */
  const int n_keys = pos0 + min (q0 + FA_BM, n);          /* positions the block sees */
  const int n_tiles = (n_keys + FA_BN - 1) / FA_BN;
  const int warp_pos = pos0 + q0 + warp * 16;             /* the warp's first position */
  uint32_t qf[D / 16][4];
  float o[D / 8][4];
  float m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.f, 0.f };

  bln_pdl_wait ();

  /* the block's K and V rows of tile j into stage st; positions past the
   * block's last repeat it (masked: never weighted) */
  auto load_tile = [&] (int j, int st) {
    for (int c = threadIdx.x; c < FA_BN * (D / 8); c += FA_WARPS * 32)
      {
        const int r = c / (D / 8), e = (c % (D / 8)) * 8;
        const size_t src = kv_row (kv, min (j * FA_BN + r, n_keys - 1)) * kv.ld + hk * D + e;

        cp_async16 (ks + (st * FA_BN + r) * LD + e, kv.k + src);
        cp_async16 (vs + (st * FA_BN + r) * LD + e, kv.v + src);
      }
    cp_commit ();
  };

  load_tile (0, 0);
  {
    /* rows past the chunk read its last row; their output is dropped */
    const QT *qa = q + (size_t) min (ra, n - 1) * q_ld + h * D;
    const QT *qb = q + (size_t) min (rb, n - 1) * q_ld + h * D;

#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
      {
        qf[kk][0] = ld_h2 (qa + kk * 16 + c2);
        qf[kk][1] = ld_h2 (qb + kk * 16 + c2);
        qf[kk][2] = ld_h2 (qa + kk * 16 + c2 + 8);
        qf[kk][3] = ld_h2 (qb + kk * 16 + c2 + 8);
      }
  }
#pragma unroll
  for (int nd = 0; nd < D / 8; nd++)
    o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;

  for (int j = 0; j < n_tiles; j++)
    {
      const int k0 = j * FA_BN;

      if (j + 1 < n_tiles)
        {
          load_tile (j + 1, (j + 1) & 1);
          cp_wait<1> ();
        }
      else
        cp_wait<0> ();
      __syncthreads ();

      const __half *kt = ks + (j & 1) * FA_BN * LD;
      const __half *vt = vs + (j & 1) * FA_BN * LD;
      float s[FA_BN / 8][4];

      /* S = Q Kᵀ: B fragment (k = dim, n = position) straight from K's rows */
#pragma unroll
      for (int nt = 0; nt < FA_BN / 8; nt++)
        {
          const __half *kr = kt + (nt * 8 + g) * LD + c2;

          s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
          for (int kk = 0; kk < D / 16; kk++)
            mma16816 (s[nt], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], ld_h2 (kr + kk * 16),
                      ld_h2 (kr + kk * 16 + 8));
        }

      /* scale, mask the positions past each row's own, new maxima */
      const bool diag = k0 + FA_BN - 1 > warp_pos;
      float mx[2] = { m[0], m[1] };

#pragma unroll
      for (int nt = 0; nt < FA_BN / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          {
            float v = s[nt][e] * sl2;

            if (diag && k0 + nt * 8 + c2 + (e & 1) > (e < 2 ? pa : pb))
              v = -INFINITY;
            s[nt][e] = v;
            mx[e >> 1] = fmaxf (mx[e >> 1], v);
          }
#pragma unroll
      for (int i = 0; i < 2; i++)
        {
          mx[i] = fmaxf (mx[i], __shfl_xor_sync (0xffffffffu, mx[i], 1));
          mx[i] = fmaxf (mx[i], __shfl_xor_sync (0xffffffffu, mx[i], 2));
        }
      /* every row sees position 0 in tile 0: the maxima are finite */
      const float alpha[2] = { exp2f (m[0] - mx[0]), exp2f (m[1] - mx[1]) };

      m[0] = mx[0];
      m[1] = mx[1];
      l[0] *= alpha[0];
      l[1] *= alpha[1];
#pragma unroll
      for (int nt = 0; nt < FA_BN / 8; nt++)
        {
#pragma unroll
          for (int e = 0; e < 4; e++)
            s[nt][e] = exp2f (s[nt][e] - m[e >> 1]);
          l[0] += s[nt][0] + s[nt][1];
          l[1] += s[nt][2] + s[nt][3];
        }
#pragma unroll
      for (int nd = 0; nd < D / 8; nd++)
        {
          o[nd][0] *= alpha[0];
          o[nd][1] *= alpha[0];
          o[nd][2] *= alpha[1];
          o[nd][3] *= alpha[1];
        }

      /* O += P V, 16 positions per step: P's A fragment from two score
       * fragments; V's B fragments for two 8-wide dim blocks per ldmatrix */
#pragma unroll
      for (int kk = 0; kk < FA_BN / 16; kk++)
        {
          const uint32_t a0 = pack_h2 (s[2 * kk][0], s[2 * kk][1]);
          const uint32_t a1 = pack_h2 (s[2 * kk][2], s[2 * kk][3]);
          const uint32_t a2 = pack_h2 (s[2 * kk + 1][0], s[2 * kk + 1][1]);
          const uint32_t a3 = pack_h2 (s[2 * kk + 1][2], s[2 * kk + 1][3]);
          /* matrix lane / 8: positions + 8 (mat & 1), dims + 8 (mat >> 1) */
          const __half *vr = vt + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD
                             + (lane >> 4) * 8;

#pragma unroll
          for (int nd = 0; nd < D / 8; nd += 2)
            {
              uint32_t b[4];

              ldmatrix_x4_trans (b, vr + nd * 8);
              mma16816 (o[nd], a0, a1, a2, a3, b[0], b[1]);
              mma16816 (o[nd + 1], a0, a1, a2, a3, b[2], b[3]);
            }
        }
      __syncthreads ();   /* the stage is refilled next iteration but one */
    }

#pragma unroll
  for (int i = 0; i < 2; i++)
    {
      l[i] += __shfl_xor_sync (0xffffffffu, l[i], 1);
      l[i] += __shfl_xor_sync (0xffffffffu, l[i], 2);
    }
  const float ia = 1.f / l[0], ib = 1.f / l[1];

#pragma unroll
  for (int nd = 0; nd < D / 8; nd++)
    {
      if (ra < n)
        *reinterpret_cast<float2 *> (out + ((size_t) ra * H + h) * D + nd * 8 + c2)
          = make_float2 (o[nd][0] * ia, o[nd][1] * ia);
      if (rb < n)
        *reinterpret_cast<float2 *> (out + ((size_t) rb * H + h) * D + nd * 8 + c2)
          = make_float2 (o[nd][2] * ib, o[nd][3] * ib);
    }
#else
  (void) q, (void) q_ld, (void) n, (void) pos0, (void) H, (void) group, (void) sl2, (void) kv;
  (void) out;
#endif
}

template <int D, class QT>
cudaError_t
launch_d (const QT *q, int q_ld, int n, int pos0, int H, int Hkv, float scale, FlashKv kv,
          float *out, cudaStream_t stream)
{
  /* the dynamic shared memory past 48 KiB (per device: asked every time) */
  cudaError_t err = cudaFuncSetAttribute (flash_prefill_kernel<D, QT>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int) fa_smem<D> ());

  if (err != cudaSuccess)
    return err;
  (void) bln_launch (flash_prefill_kernel<D, QT>,
                     dim3 ((unsigned) ((n + FA_BM - 1) / FA_BM), (unsigned) H),
                     dim3 (FA_WARPS * 32), fa_smem<D> (), stream, q, q_ld, n, pos0, H, H / Hkv,
                     (float) (scale * 1.4426950408889634), kv, out);
  return cudaGetLastError ();
}

template <class QT>
cudaError_t
launch_flash (const QT *q, int q_ld, int n, int pos0, int H, int Hkv, int d, float scale,
              FlashKv kv, float *out, cudaStream_t stream)
{
  switch (d)
    {
    case 16: return launch_d<16> (q, q_ld, n, pos0, H, Hkv, scale, kv, out, stream);
    case 64: return launch_d<64> (q, q_ld, n, pos0, H, Hkv, scale, kv, out, stream);
    default: return launch_d<128> (q, q_ld, n, pos0, H, Hkv, scale, kv, out, stream);
    }
}

} /* namespace */

extern "C" int
bln_kernels_flash_prefill_supports (int H, int Hkv, int dk, int dv)
{
  return H > 0 && Hkv > 0 && H % Hkv == 0 && H <= 65535 && dk == dv
         && (dk == 16 || dk == 64 || dk == 128) && bln_device_sm80 ();
}

extern "C" cudaError_t
bln_kernels_flash_prefill (const void *q, int n, int pos0, int H, int Hkv, int d, float scale,
                           const void *k, const void *v, float *out, cudaStream_t stream)
{
  const FlashKv kv = { static_cast<const __half *> (k), static_cast<const __half *> (v),
                       Hkv * d, nullptr, 0, 0, 0 };

  if (!q || !k || !v || !out || n < 1 || pos0 < 0 || pos0 > INT32_MAX - n
      || !bln_kernels_flash_prefill_supports (H, Hkv, d, d))
    return cudaErrorInvalidValue;
  return launch_flash (static_cast<const __half *> (q), H * d, n, pos0, H, Hkv, d, scale, kv,
                       out, stream);
}

extern "C" cudaError_t
bln_kernels_flash_prefill_paged (const float *q, int q_ld, int n, int pos0, int H, int Hkv,
                                 int d, float scale, const void *k_pool, const void *v_pool,
                                 const int32_t *d_tab, int n_layer, int layer, int block_size,
                                 float *out, cudaStream_t stream)
{
  const FlashKv kv = { static_cast<const __half *> (k_pool),
                       static_cast<const __half *> (v_pool), Hkv * d, d_tab, n_layer, layer,
                       block_size };

  if (!q || !k_pool || !v_pool || !d_tab || !out || n < 1 || pos0 < 0 || pos0 > INT32_MAX - n
      || q_ld < H * d || q_ld % 2 != 0 || n_layer < 1 || layer < 0 || layer >= n_layer
      || block_size < 1 || !bln_kernels_flash_prefill_supports (H, Hkv, d, d))
    return cudaErrorInvalidValue;
  return launch_flash (q, q_ld, n, pos0, H, Hkv, d, scale, kv, out, stream);
}
