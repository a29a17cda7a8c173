/* kernels/ops.cu — the forward pass's small kernels: RMSNorm, residual and
 * bias adds, SwiGLU, rotary embedding with the KV store, attention for decode
 * (flash-decoding over the cache) and the masked softmax of the prefill
 * attention (whose two products run on cuBLAS).
 *
 * Numerics follow the CPU backend (engine/cpu/ops.c, engine/model.c): float32
 * arithmetic, accurate expf / sincosf, so that a context with a float32 KV
 * cache reproduces the CPU logits to rounding.
 */
#include <cstdint>
#include <cmath>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "kernels.h"
#include "ops.h"
#include "launch.cuh"
#include "device-util.cuh"

namespace {

/* Sum over a block of up to 1024 threads; every thread gets the result.
 * @red: 32 floats of shared memory. */
__device__ float
block_sum (float v, float *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = (blockDim.x + 31) >> 5;

  v = warp_sum (v);
  __syncthreads ();
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  v = lane < n_warps ? red[lane] : 0.f;
  return warp_sum (v);
}

__device__ float
block_max (float v, float *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = (blockDim.x + 31) >> 5;

  v = warp_max (v);
  __syncthreads ();
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  v = lane < n_warps ? red[lane] : -INFINITY;
  return warp_max (v);
}


/* ---------------------------------------------------------------------- */

/* The sum of squares of row @xr (d values) is accumulated in double, as on
 * the CPU; returns 1 / sqrt (mean + eps), the same in every thread. The
 * summation order follows blockDim.x, so every RMSNorm launch of a width
 * uses the same block size (rmsnorm_threads). @red: 32 doubles of shared
 * memory. */
__device__ __forceinline__ float
rmsnorm_scale (const float *__restrict__ xr, int d, float eps, double *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = (blockDim.x + 31) >> 5;
  double ss = 0.0;

  for (int i = threadIdx.x; i < d; i += blockDim.x)
    ss += (double) xr[i] * (double) xr[i];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    ss += __shfl_xor_sync (0xffffffffu, ss, off);
  if (lane == 0)
    red[warp] = ss;
  __syncthreads ();
  ss = lane < n_warps ? red[lane] : 0.0;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    ss += __shfl_xor_sync (0xffffffffu, ss, off);
  return 1.0f / sqrtf ((float) (ss / (double) d) + eps);
}

/* One normalised value: the float every RMSNorm kernel stores or rounds. */
__device__ __forceinline__ float
rmsnorm_value (float w, float x, float scale)
{
  return w * (x * scale);
}

/* A float rounded to nearest as F16 or BF16: what the convert kernels store,
 * shared by the kernels that produce cuBLAS's 16-bit activations directly;
 * a float stays as it is. */
__device__ __forceinline__ float
round16 (float v, float *)
{
  return v;
}

__device__ __forceinline__ __half
round16 (float v, __half *)
{
  return __float2half_rn (v);
}

__device__ __forceinline__ __nv_bfloat16
round16 (float v, __nv_bfloat16 *)
{
  return __float2bfloat16_rn (v);
}

__global__ void
rmsnorm_kernel (const float *__restrict__ x, const float *__restrict__ w, float *y, int d,
                float eps)
{
  bln_pdl_wait ();
  __shared__ double red[32];
  const float *xr = x + (size_t) blockIdx.x * d;
  float *yr = y + (size_t) blockIdx.x * d;
  const float scale = rmsnorm_scale (xr, d, eps, red);

  for (int i = threadIdx.x; i < d; i += blockDim.x)
    yr[i] = rmsnorm_value (w[i], xr[i], scale);
}

/* rmsnorm_kernel writing the row rounded to T (F16 or BF16) into y16, and
 * the float row into y unless it is NULL: a block per row, the same
 * reduction and value, so y16 holds what rmsnorm_kernel then
 * convert_*_kernel would. The float row is read back by nobody else here, so
 * y may equal x as for rmsnorm_kernel (each thread reads its values before
 * writing them). */
template <class T>
__global__ void
rmsnorm16_kernel (const float *x, const float *__restrict__ w, float *y, T *__restrict__ y16,
                  int d, float eps)
{
  bln_pdl_wait ();
  __shared__ double red[32];
  const float *xr = x + (size_t) blockIdx.x * d;
  T *zr = y16 + (size_t) blockIdx.x * d;
  const float scale = rmsnorm_scale (xr, d, eps, red);

  for (int i = threadIdx.x; i < d; i += blockDim.x)
    {
      const float v = rmsnorm_value (w[i], xr[i], scale);

      if (y != nullptr)
        y[(size_t) blockIdx.x * d + i] = v;
      zr[i] = round16 (v, zr);
    }
}

__global__ void
add_kernel (float *x, const float *__restrict__ y, size_t n)
{
  bln_pdl_wait ();
  size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    x[i] += y[i];
}

__global__ void
add_bias_kernel (float *y, const float *__restrict__ b, size_t n, int width)
{
  bln_pdl_wait ();
  size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] += b[i % width];
}

/* SwiGLU's value: silu (g) * u, in float32 with an accurate expf. */
__device__ __forceinline__ float
silu_mul_value (float gv, float uv)
{
  return gv / (1.0f + expf (-gv)) * uv;
}

/* out = silu (g) * u, a thread per output value, stored as T: float, or
 * rounded to F16 / BF16 as convert_*_kernel rounds it. */
template <class T>
__global__ void
silu_mul_kernel (const float *__restrict__ g, int g_stride, const float *__restrict__ u,
                   int u_stride, T *__restrict__ out, size_t n, int ff)
{
  bln_pdl_wait ();
  size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    {
      size_t t = i / ff, j = i % ff;
      out[i] = round16 (silu_mul_value (g[t * g_stride + j], u[t * u_stride + j]), out);
    }
}

/* A block per (token, head): blockIdx.y < H is query head blockIdx.y, the
 * rest are the KV heads. Each thread owns one value of the head: it adds the
 * bias, rotates it against its pair partner (read from shared memory, so the
 * head is rotated in one pass) and stores it in place, in the cache (K and V)
 * and in q_kv (queries in the cache's type, for prefill). One round trip to
 * memory per value; the decode step's latency used to be a per-token loop. */
template <class T>
__global__ void
rope_store_kernel (float *q, float *k, float *v, const float *__restrict__ bq,
                   const float *__restrict__ bk, const float *__restrict__ bv,
                   int ld, const int *__restrict__ d_pos, int H, int Hkv, int dk, int dv,
                   int rope_dim, int neox, const float *__restrict__ inv_freq, float af,
                   T *k_cache, T *v_cache, T *q_kv)
{
  __shared__ float xs[256];
  bln_pdl_wait ();
  const int t = blockIdx.x, h = blockIdx.y, j = threadIdx.x, pos = *d_pos + t;
  const bool is_q = h < H;
  const int hk = h - H;
  float *row = is_q ? q + (size_t) t * ld + (size_t) h * dk
                    : k + (size_t) t * ld + (size_t) hk * dk;
  const float *bias = is_q ? (bq ? bq + (size_t) h * dk : nullptr)
                           : (bk ? bk + (size_t) hk * dk : nullptr);
  float x = 0.f;

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
      if (is_q)
        {
          if (q_kv != nullptr)
            q_kv[(size_t) t * H * dk + (size_t) h * dk + j] = from_f<T> (x);
        }
      else if (k_cache != nullptr)
        k_cache[((size_t) pos * Hkv + hk) * dk + j] = from_f<T> (x);
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
      if (v_cache != nullptr)
        v_cache[((size_t) pos * Hkv + hk) * dv + j] = from_f<T> (vv);
    }
}

/* ---------------------------------------------------------------------- */
/* decode attention                                                        */

constexpr int AD_WARPS = 4;
constexpr int AD_GMAX = 8;       /* query heads per block */
constexpr int AD_DMAX = 256;     /* largest head dim */
constexpr int AD_SPLIT_MIN = 64; /* fewest positions per split */

/* How a launch cuts n_kv positions: into at most @want splits (want: enough
 * blocks to fill the GPU, about 2 per SM of a large part, over the blocks of
 * one split), each at least AD_SPLIT_MIN positions, a multiple of 32. The
 * kernels compute it from the position held on the device, so one launch
 * shape (and one CUDA graph) serves every context length. */
__host__ __device__ __forceinline__ int
decode_split (int n_kv, int want)
{
  int split = (n_kv + want - 1) / want;

  split = (split + 31) / 32 * 32;
  return split < AD_SPLIT_MIN ? AD_SPLIT_MIN : split;
}

__host__ __device__ __forceinline__ int
decode_want (int blocks_per_split)
{
  return (264 + blocks_per_split - 1) / blocks_per_split;
}


/* A block takes KV head kvh (blockIdx.x / n_gc), query heads kvh * group +
 * gc * AD_GMAX + 0..gn-1 (gc = blockIdx.x % n_gc), token blockIdx.y, and the
 * positions [z * split, (z + 1) * split) of blockIdx.z, cut to what the token
 * sees. Each lane scores one position against all gn heads (queries in shared
 * memory), the warp updates its running max and sum, then every lane
 * accumulates ND of the dv output values over the warp's 32 positions. The
 * warps' states merge in shared memory; the block writes (m, l, acc) of its
 * split for the combine kernel. */
template <class T, int ND>
__global__ void __launch_bounds__ (AD_WARPS * 32)
attn_decode_kernel (const float *__restrict__ q, int q_ld, const int *__restrict__ d_pos, int n_tok,
                    int H, int Hkv, int dk, int dv, float scale, const T *__restrict__ kc,
                    const T *__restrict__ vc, int want, float *__restrict__ part)
{
  bln_pdl_wait ();
  __shared__ float qs[AD_GMAX][AD_DMAX];
  __shared__ float ws_m[AD_WARPS][AD_GMAX], ws_l[AD_WARPS][AD_GMAX];
  __shared__ float ws_acc[AD_WARPS][AD_GMAX][AD_DMAX];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = H / Hkv, n_gc = (group + AD_GMAX - 1) / AD_GMAX;
  const int kvh = blockIdx.x / n_gc, gc = blockIdx.x % n_gc;
  const int h0 = kvh * group + gc * AD_GMAX;
  const int gn = min (AD_GMAX, group - gc * AD_GMAX);
  const int t = blockIdx.y, z = blockIdx.z, zmax = gridDim.z;
  const int pos0 = *d_pos, len = pos0 + t + 1;
  const int split = decode_split (pos0 + n_tok, want);
  const int start = z * split, end = min (len, start + split);
  float m[AD_GMAX], l[AD_GMAX], acc[AD_GMAX][ND];

  if (start >= pos0 + n_tok)
    return;   /* a split past the longest token's reach: the combine skips it */

  for (int j = threadIdx.x; j < gn * dk; j += blockDim.x)
    qs[j / dk][j % dk] = q[(size_t) t * q_ld + (size_t) (h0 + j / dk) * dk + j % dk] * scale;
#pragma unroll
  for (int g = 0; g < AD_GMAX; g++)
    {
      m[g] = -INFINITY;
      l[g] = 0.f;
#pragma unroll
      for (int i = 0; i < ND; i++)
        acc[g][i] = 0.f;
    }
  __syncthreads ();

  for (int base = start + warp * 32; base < end; base += AD_WARPS * 32)
    {
      const int p = base + lane;
      const bool valid = p < end;
      float s[AD_GMAX];

#pragma unroll
      for (int g = 0; g < AD_GMAX; g++)
        s[g] = 0.f;
      if (valid)
        {
          const T *kr = kc + ((size_t) p * Hkv + kvh) * dk;
          constexpr int VE = 16 / sizeof (T);   /* values per 16-byte load */

          if (dk % (4 * VE) == 0)
            {
              /* 16-byte loads, four in flight: the row's latency is paid
               * once per 4 loads instead of once per value */
              for (int i0 = 0; i0 < dk; i0 += 4 * VE)
                {
                  uint4 raw[4];
#pragma unroll
                  for (int c = 0; c < 4; c++)
                    raw[c] = __ldg (reinterpret_cast<const uint4 *> (kr + i0 + c * VE));
#pragma unroll
                  for (int c = 0; c < 4; c++)
                    {
                      const T *e = reinterpret_cast<const T *> (&raw[c]);
#pragma unroll
                      for (int u = 0; u < VE; u++)
                        {
                          const float kv = to_f<T> (e[u]);
#pragma unroll
                          for (int g = 0; g < AD_GMAX; g++)
                            if (g < gn)
                              s[g] += qs[g][i0 + c * VE + u] * kv;
                        }
                    }
                }
            }
          else
            for (int i = 0; i < dk; i++)
              {
                float kv = to_f<T> (kr[i]);
#pragma unroll
                for (int g = 0; g < AD_GMAX; g++)
                  if (g < gn)
                    s[g] += qs[g][i] * kv;
              }
        }
#pragma unroll
      for (int g = 0; g < AD_GMAX; g++)
        if (g < gn)
          {
            float sv = valid ? s[g] : -INFINITY;
            float mx = fmaxf (m[g], warp_max (sv));
            float corr = expf (m[g] - mx);   /* m = -inf at first: 0 */
            float e = valid ? expf (sv - mx) : 0.f;
            l[g] = l[g] * corr + warp_sum (e);
            m[g] = mx;
#pragma unroll
            for (int i = 0; i < ND; i++)
              acc[g][i] *= corr;
            s[g] = e;
          }
      /* V rows of the warp's positions, 8 at a time: their loads are
       * issued together, then the products */
      const int nj = min (32, end - base);
      for (int j0 = 0; j0 < nj; j0 += 8)
        {
          float vv[8][ND];
#pragma unroll
          for (int jj = 0; jj < 8; jj++)
            {
              const T *vr = vc + ((size_t) (base + j0 + jj) * Hkv + kvh) * dv;
#pragma unroll
              for (int i = 0; i < ND; i++)
                {
                  int d = lane * ND + i;
                  vv[jj][i] = (j0 + jj < nj && d < dv) ? to_f<T> (vr[d]) : 0.f;
                }
            }
#pragma unroll
          for (int jj = 0; jj < 8; jj++)
#pragma unroll
            for (int g = 0; g < AD_GMAX; g++)
              if (g < gn)
                {
                  /* lanes past nj hold e = 0 (invalid), so pj is 0 there */
                  float pj = __shfl_sync (0xffffffffu, s[g], (j0 + jj) & 31);
#pragma unroll
                  for (int i = 0; i < ND; i++)
                    acc[g][i] += pj * vv[jj][i];
                }
        }
    }

  /* merge the warps */
#pragma unroll
  for (int g = 0; g < AD_GMAX; g++)
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
      int g = j / dv, d = j % dv;
      float mx = -INFINITY, lsum = 0.f, a = 0.f;
      float *dst = part + (((size_t) t * H + h0 + g) * zmax + z) * (dv + 2);
      for (int w = 0; w < AD_WARPS; w++)
        mx = fmaxf (mx, ws_m[w][g]);
      for (int w = 0; w < AD_WARPS; w++)
        if (ws_m[w][g] > -INFINITY)
          {
            float c = expf (ws_m[w][g] - mx);
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

/* One block per (head, token): merges the splits that ran. */
__global__ void
attn_combine_kernel (const float *__restrict__ part, const int *__restrict__ d_pos, int n_tok,
                     int H, int dv, int want, int zmax, float *__restrict__ out)
{
  bln_pdl_wait ();
  const int h = blockIdx.x, t = blockIdx.y;
  const int n_kv = *d_pos + n_tok, split = decode_split (n_kv, want);
  const int n_split = (n_kv + split - 1) / split;
  const float *pp = part + ((size_t) t * H + h) * zmax * (dv + 2);
  float mx = -INFINITY, lsum = 0.f;

  for (int z = 0; z < n_split; z++)
    mx = fmaxf (mx, pp[(size_t) z * (dv + 2)]);
  for (int z = 0; z < n_split; z++)
    {
      float mz = pp[(size_t) z * (dv + 2)];
      if (mz > -INFINITY)
        lsum += pp[(size_t) z * (dv + 2) + 1] * expf (mz - mx);
    }
  for (int d = threadIdx.x; d < dv; d += blockDim.x)
    {
      float a = 0.f;
      for (int z = 0; z < n_split; z++)
        {
          float mz = pp[(size_t) z * (dv + 2)];
          if (mz > -INFINITY)
            a += pp[(size_t) z * (dv + 2) + 2 + d] * expf (mz - mx);
        }
      out[((size_t) t * H + h) * dv + d] = a / lsum;
    }
}

template <class T, int ND>
void
launch_decode (const float *q, int q_ld, int n_tok, const int *d_pos, int H, int Hkv, int dk,
               int dv,
               float scale, const void *kc, const void *vc, float *part, float *out,
               cudaStream_t stream)
{
  const int group = H / Hkv, n_gc = (group + AD_GMAX - 1) / AD_GMAX;
  const int want = decode_want (Hkv * n_gc * n_tok);
  /* at most want splits, plus one for the rounding of the split length */
  const int zmax = want + 1;
  dim3 grid ((unsigned) (Hkv * n_gc), (unsigned) n_tok, (unsigned) zmax);

  (void) bln_launch (attn_decode_kernel<T, ND>, dim3 (grid), dim3 (AD_WARPS * 32), 0, stream, q,
                      q_ld, d_pos, n_tok, H, Hkv, dk, dv, scale, static_cast<const T *> (kc),
                      static_cast<const T *> (vc), want, part);
  (void) bln_launch (attn_combine_kernel, dim3 ((unsigned) H, (unsigned) n_tok), dim3 (128), 0,
                      stream, part, d_pos, n_tok, H, dv, want, zmax, out);
}

template <class T>
void
launch_decode_t (const float *q, int q_ld, int n_tok, const int *d_pos, int H, int Hkv, int dk,
                 int dv,
                 float scale, const void *kc, const void *vc, float *part, float *out,
                 cudaStream_t stream)
{
  if (dv <= 32)
    launch_decode<T, 1> (q, q_ld, n_tok, d_pos, H, Hkv, dk, dv, scale, kc, vc, part, out, stream);
  else if (dv <= 64)
    launch_decode<T, 2> (q, q_ld, n_tok, d_pos, H, Hkv, dk, dv, scale, kc, vc, part, out, stream);
  else if (dv <= 128)
    launch_decode<T, 4> (q, q_ld, n_tok, d_pos, H, Hkv, dk, dv, scale, kc, vc, part, out, stream);
  else
    launch_decode<T, 8> (q, q_ld, n_tok, d_pos, H, Hkv, dk, dv, scale, kc, vc, part, out, stream);
}

/* ---------------------------------------------------------------------- */
/* decode attention, v2                                                    */

/* The layout of the v2 kernel: a block of A2_WARPS warps per (split, KV head
 * and group chunk, token). A K or V row of D values is read by LR lanes with
 * 16-byte loads (F16, D = 128: 16 lanes, so one warp load covers two
 * positions); each warp takes A2_U such row groups per step, so 2 A2_U rows
 * of K and of V are in flight per lane before the first product. All G query
 * heads of the group are scored against the row at once (queries live in
 * registers), which reads the cache once per group. Every lane keeps its own
 * online softmax state (max, sum, D / LR accumulated values per head); the
 * row groups and warps merge at the end of the split. The block that
 * finishes a (token, group) last — the splits count on a per-(token, group)
 * counter that atomicInc wraps back to 0, so a replayed graph finds it
 * reset — merges the splits in the same launch.
 *
 * The fused variant (ROPE, one token at position pos0 = *d_pos) also does
 * rope_store_kernel's work, so the decode step saves that launch per layer:
 * every block adds the biases to and rotates its own query heads (staged in
 * sm_acc, which is free until the merge); the block of the last split, the
 * one that holds pos0, also rotates the new key, rounds it and the new value
 * to the cache's type into shared memory, and reads that row from there
 * instead of from the cache — no block reads row pos0 from the cache, which
 * the last split's block of the KV head's first group chunk (gc 0) writes in
 * the same launch.
 * The rotation is rope_rotate, operation for operation, and the row goes
 * through the same loads, products and merges at the same lane and step as
 * in the plain kernel, so the outputs, their rounding and the cache row are
 * bit for bit those of rope_store_kernel followed by the plain kernel. q, k
 * and v are only read (not rotated in place). */
constexpr int A2_WARPS = 4;
constexpr int A2_U = 4;          /* row groups per warp and step */
constexpr int A2_ZMAX = 400;     /* the most splits (static shared memory: the 8-head,
                                 * 256-wide kernel must stay under 48 KiB) */
constexpr int A2_SPLIT_MIN = 32;

/* A positive integer from the environment, or @dflt; read once per name by
 * the callers' statics. Tuning knobs for measurements only. */
static int
a2_env (const char *name, int dflt)
{
  const char *env = std::getenv (name);
  int v = env != nullptr ? std::atoi (env) : 0;

  return v > 0 ? v : dflt;
}

__host__ __device__ __forceinline__ int
a2_split (int n_kv, int want, int smin)
{
  int split = (n_kv + want - 1) / want;

  split = (split + 31) / 32 * 32;
  return split < smin ? smin : split;
}

/* Whether the kernel lets the next one launch as soon as all its blocks
 * have started, so that the output projection's blocks can ask for their
 * weights while the attention finishes. On an H200 (session 7, same calls,
 * three alternations): 7B Q4_K_M tg128 507.1-507.8 -> 517.1-517.3 tok/s,
 * Q8_0 and BF16 unchanged (391.2-393.0, 233.5-233.8 either way). On unless
 * BALEEN_CUDA_ATTN_TRIGGER=0; read once. */
static int
a2_trigger ()
{
  static int trig = -1;

  if (trig < 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_ATTN_TRIGGER");

      trig = env != nullptr && std::strcmp (env, "0") == 0 ? 0 : 1;
    }
  return trig;
}

/* The shortest split (positions): BALEEN_CUDA_ATTN_SPLIT_MIN, a multiple
 * of 32, default A2_SPLIT_MIN; read once. */
static int
a2_split_min ()
{
  static int smin = 0;

  if (smin == 0)
    {
      smin = a2_env ("BALEEN_CUDA_ATTN_SPLIT_MIN", A2_SPLIT_MIN);
      smin = (smin + 31) / 32 * 32;
    }
  return smin;
}

/* Blocks a launch aims for: 3 per SM of an H100 / H200 (the F16 / F32
 * kernels with up to 4 query heads a block fit 3 per SM by registers), 2
 * for the 8-bit cache (its kernel needs twice the registers). Measured on
 * an H200 (session 5): the 7B decode 485 -> 512 tok/s with 4 heads and 396
 * blocks against 8 heads and 264. BALEEN_CUDA_ATTN_BLOCKS (up to A2_ZMAX)
 * changes the aim for measurements. */
static int
a2_target (bool q8)
{
  static int target = 0;

  if (target == 0)
    target = std::min (a2_env ("BALEEN_CUDA_ATTN_BLOCKS", 396), A2_ZMAX);
  return q8 ? std::min (target, 264) : target;
}

/* Steps ahead whose K / V rows the kernel asks into L2 (0: none):
 * BALEEN_CUDA_ATTN_PF, default 0 — two steps ahead made the 7B decode at
 * 32k slower on an H200 (session 6: 291 -> 274 tok/s); read once. */
static int
a2_prefetch ()
{
  static int pf = -1;

  if (pf < 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_ATTN_PF");

      pf = env != nullptr ? std::atoi (env) : 0;
      pf = pf < 0 ? 0 : pf > 8 ? 8 : pf;
    }
  return pf;
}

/* splits wanted when each split takes @blocks_per_split blocks */
static int
a2_want (int blocks_per_split, bool q8)
{
  int w = (a2_target (q8) + blocks_per_split - 1) / blocks_per_split;

  return w < 1 ? 1 : (w > A2_ZMAX ? A2_ZMAX : w);
}

/* Query heads per block for a group of @group heads: 1 or 4 (padded).
 * Four heads rather than all eight of a 7-head group: half the registers, so
 * three blocks per SM, and the second block of the group finds the K / V
 * rows in L2 (128 positions: 12.1 -> 7.7 us per launch; 32k: 57.5 -> 53.5
 * us with 396 blocks). BALEEN_CUDA_ATTN_HEADS=8 keeps eight for
 * measurements. */
static int
a2_heads (int group)
{
  static int cap = 0;

  if (cap == 0)
    cap = a2_env ("BALEEN_CUDA_ATTN_HEADS", 4) >= 8 ? 8 : 4;
  return group <= 1 ? 1 : group <= 4 || cap == 4 ? 4 : 8;
}

/* Where v2 also leaves its output rounded for the matvecs (all null: it
 * does not). */
struct A2Xq
{
  int8_t *q = nullptr;
  float2 *d = nullptr;
  float4 *s = nullptr;
};

/* What the fused variant (ROPE, bln_kernels_attn_decode_rope) needs beyond
 * the plain kernel: the new token's un-rotated k and v rows ([Hkv][D] each;
 * q is the kernel's q argument), the biases (each may be null), the RoPE
 * parameters of rope_store_kernel, and the caches again, writable, for the
 * new row. */
struct A2Rope
{
  const float *k = nullptr, *v = nullptr;
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr;
  const float *inv_freq = nullptr;
  int rope_dim = 0, neox = 0;
  float af = 1.f;
  void *k_out = nullptr, *v_out = nullptr;
};

/* 16 bytes of the cache as floats */
template <class T> __device__ __forceinline__ void a2_unpack (const uint4 &r, float *f);

template <>
__device__ __forceinline__ void
a2_unpack<float> (const uint4 &r, float *f)
{
  f[0] = __uint_as_float (r.x);
  f[1] = __uint_as_float (r.y);
  f[2] = __uint_as_float (r.z);
  f[3] = __uint_as_float (r.w);
}

template <>
__device__ __forceinline__ void
a2_unpack<__half> (const uint4 &r, float *f)
{
  const uint32_t w[4] = { r.x, r.y, r.z, r.w };

#pragma unroll
  for (int i = 0; i < 4; i++)
    {
      __half2 h2;
      float2 f2;

      memcpy (&h2, &w[i], 4);
      f2 = __half22float2 (h2);
      f[2 * i] = f2.x;
      f[2 * i + 1] = f2.y;
    }
}

template <>
__device__ __forceinline__ void
a2_unpack<int8_t> (const uint4 &r, float *f)
{
  const uint32_t w[4] = { r.x, r.y, r.z, r.w };

#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int b = 0; b < 4; b++)
      f[4 * i + b] = (float) (int8_t) (w[i] >> (8 * b));
}

/* exp2 of a - b where a = -inf stands for an empty state (weight 0) */
__device__ __forceinline__ float
a2_weight (float a, float b)
{
  return a == -INFINITY ? 0.f : exp2f (a - b);
}

template <class T, int D, int G, bool ROPE>
__global__ void __launch_bounds__ (A2_WARPS * 32)
attn_decode2_kernel (const float *__restrict__ q, int q_ld, const int *__restrict__ d_pos,
                     int n_tok, int H, int Hkv, float scale, const T *__restrict__ kc,
                     const T *__restrict__ vc, const __half *__restrict__ ks,
                     const __half *__restrict__ vs, int want, int zmax, float *part_acc,
                     float *part_ml, unsigned *counters, float *__restrict__ out, A2Xq xo,
                     int pf, int smin, int trig, A2Rope rp)
{
  constexpr int VE = 16 / (int) sizeof (T);   /* values per 16-byte load */
  constexpr int CH = D / VE;                  /* loads per row */
  constexpr int LR = CH < 32 ? CH : 32;       /* lanes per row */
  constexpr int CPL = CH / LR;                /* loads per lane and row */
  constexpr int RPW = 32 / LR;                /* rows per warp load */
  constexpr int NV = VE * CPL;                /* values per lane and row */
  constexpr bool A2_Q8 = sizeof (T) == 1;     /* int8 values, F16 scales per 32 */
  __shared__ float sm_m[A2_WARPS][G], sm_l[A2_WARPS][G];
  __shared__ __align__ (16) float sm_acc[A2_WARPS][G][D];
  __shared__ float sm_w[G][A2_ZMAX];
  __shared__ float sm_lsum[G];
  __shared__ int sm_last;
  /* ROPE: the new token's key, then its value, in the cache's type */
  __shared__ __align__ (16) T sm_new[ROPE ? 2 * D : 1];

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (trig)
    cudaTriggerProgrammaticLaunchCompletion ();
#endif
  bln_pdl_wait ();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r = lane / LR, li = lane % LR;
  const int group = H / Hkv, n_gc = (group + G - 1) / G;
  const int kvh = blockIdx.y / n_gc, gc = blockIdx.y % n_gc;
  const int h0 = kvh * group + gc * G, gn = min (G, group - gc * G);
  const int t = blockIdx.z, z = blockIdx.x;
  const int pos0 = *d_pos, len = pos0 + t + 1;
  const int split = a2_split (pos0 + n_tok, want, smin);
  const int n_split = (len + split - 1) / split;
  const int start = z * split, end = min (len, start + split);
  float qv[G][NV], m[G], l[G], acc[G][NV];

  if (z >= n_split)
    return;   /* past this token's reach: neither counted nor merged */

  if constexpr (ROPE)
    {
      /* rope_store_kernel's work for the block's heads (t = 0, n_tok = 1):
       * rows 0 .. gn - 1 the queries, row gn the key (last split only),
       * biased in xs, rotated into xr (both in sm_acc: 2 (G + 1) D floats
       * of its A2_WARPS G D) */
      float *xs = &sm_acc[0][0][0], *xr = xs + (G + 1) * D;
      const bool owns_new = z == n_split - 1;
      const int n_rows = gn + (owns_new ? 1 : 0);

      for (int j = threadIdx.x; j < n_rows * D; j += blockDim.x)
        {
          const int g = j / D, i = j % D;
          const size_t o = g < gn ? (size_t) (h0 + g) * D + i : (size_t) kvh * D + i;
          const float *bias = g < gn ? rp.bq : rp.bk;
          float x = g < gn ? q[o] : rp.k[o];

          if (bias != nullptr)
            x += bias[o];
          xs[j] = x;
        }
      __syncthreads ();
      for (int j = threadIdx.x; j < n_rows * D; j += blockDim.x)
        {
          const int g = j / D, i = j % D;
          float x = xs[j];

          if (i < rp.rope_dim)
            x = rope_rotate (x, xs + g * D, i, rp.rope_dim, rp.neox, pos0, rp.inv_freq, rp.af);
          if (g < gn)
            xr[j] = x;
          else
            sm_new[i] = from_f<T> (x);
        }
      if (owns_new)
        for (int i = threadIdx.x; i < D; i += blockDim.x)
          {
            float x = rp.v[(size_t) kvh * D + i];

            if (rp.bv != nullptr)
              x += rp.bv[(size_t) kvh * D + i];
            sm_new[D + i] = from_f<T> (x);
          }
      __syncthreads ();
      /* the new row into the caches, once per KV head */
      if (owns_new && gc == 0)
        {
          const size_t row = ((size_t) pos0 * Hkv + kvh) * D;

          for (int i = threadIdx.x; i < D; i += blockDim.x)
            {
              static_cast<T *> (rp.k_out)[row + i] = sm_new[i];
              static_cast<T *> (rp.v_out)[row + i] = sm_new[D + i];
            }
        }
#pragma unroll
      for (int g = 0; g < G; g++)
        {
#pragma unroll
          for (int c = 0; c < CPL; c++)
#pragma unroll
            for (int u = 0; u < VE; u++)
              qv[g][c * VE + u] = g < gn ? xr[g * D + (c * LR + li) * VE + u] * scale
                                             * 1.4426950408889634f
                                         : 0.f;
        }
      /* the warps write sm_acc when their loop is done, which may be before
       * another warp has read its queries */
      __syncthreads ();
    }
  /* the lane's values of the scaled queries, in the exp2 domain */
#pragma unroll
  for (int g = 0; g < G; g++)
    {
      if constexpr (!ROPE)
#pragma unroll
        for (int c = 0; c < CPL; c++)
#pragma unroll
          for (int u = 0; u < VE; u++)
            qv[g][c * VE + u] = g < gn ? q[(size_t) t * q_ld + (size_t) (h0 + g) * D
                                           + (c * LR + li) * VE + u] * scale * 1.4426950408889634f
                                       : 0.f;
      m[g] = -INFINITY;
      l[g] = 0.f;
#pragma unroll
      for (int i = 0; i < NV; i++)
        acc[g][i] = 0.f;
    }

  for (int base = start + warp * (RPW * A2_U); base < end; base += A2_WARPS * RPW * A2_U)
    {
      uint4 kr[A2_U][CPL], vr[A2_U][CPL];
      float ksc[A2_U][CPL], vsc[A2_U][CPL];   /* int8: the 32-value blocks' scales */
      float s[A2_U][G];
      bool ok[A2_U];

      /* the rows this lane loads pf steps later, into L2 now: each step
       * otherwise waits a whole DRAM round trip before its products */
      if (pf > 0)
#pragma unroll
        for (int u = 0; u < A2_U; u++)
          {
            const int p = base + pf * (A2_WARPS * RPW * A2_U) + u * RPW + r;

            if (p < end)
#pragma unroll
              for (int c = 0; c < CPL; c++)
                {
                  const size_t off = ((size_t) p * Hkv + kvh) * D + (size_t) (c * LR + li) * VE;

                  prefetch_l2 (kc + off);
                  prefetch_l2 (vc + off);
                }
          }

#pragma unroll
      for (int u = 0; u < A2_U; u++)
        {
          const int p = base + u * RPW + r;
          const size_t row = ((size_t) p * Hkv + kvh) * D;

          ok[u] = p < end;
#pragma unroll
          for (int c = 0; c < CPL; c++)
            {
              const size_t off = row + (size_t) (c * LR + li) * VE;

              if constexpr (ROPE)
                if (p == pos0)
                  {
                    /* the new row, from shared memory (the same 16 bytes the
                     * cache will hold) */
                    kr[u][c] = *reinterpret_cast<const uint4 *> (sm_new + (c * LR + li) * VE);
                    vr[u][c] = *reinterpret_cast<const uint4 *> (sm_new + D
                                                                 + (c * LR + li) * VE);
                    ksc[u][c] = vsc[u][c] = 1.f;
                    continue;
                  }
              kr[u][c] = ok[u] ? __ldg (reinterpret_cast<const uint4 *> (kc + off))
                               : make_uint4 (0, 0, 0, 0);
              vr[u][c] = ok[u] ? __ldg (reinterpret_cast<const uint4 *> (vc + off))
                               : make_uint4 (0, 0, 0, 0);
              if constexpr (A2_Q8)
                {
                  /* 16 values per load, so one 32-value block per load */
                  const size_t so = ((size_t) p * Hkv + kvh) * (D / 32) + (c * LR + li) / 2;

                  ksc[u][c] = ok[u] ? __half2float (__ldg (ks + so)) : 0.f;
                  vsc[u][c] = ok[u] ? __half2float (__ldg (vs + so)) : 0.f;
                }
              else
                ksc[u][c] = vsc[u][c] = 1.f;
            }
        }
      /* scores: the lane's part of each dot product, summed over the row's
       * lanes (xor offsets below LR stay inside the row group) */
#pragma unroll
      for (int u = 0; u < A2_U; u++)
        {
#pragma unroll
          for (int g = 0; g < G; g++)
            s[u][g] = 0.f;
#pragma unroll
          for (int c = 0; c < CPL; c++)
            {
              float kf[VE];

              a2_unpack<T> (kr[u][c], kf);
#pragma unroll
              for (int g = 0; g < G; g++)
                {
                  float dot = 0.f;

#pragma unroll
                  for (int e = 0; e < VE; e++)
                    dot += qv[g][c * VE + e] * kf[e];
                  s[u][g] += A2_Q8 ? dot * ksc[u][c] : dot;
                }
            }
#pragma unroll
          for (int g = 0; g < G; g++)
#pragma unroll
            for (int o = LR / 2; o > 0; o >>= 1)
              s[u][g] += __shfl_xor_sync (0xffffffffu, s[u][g], o);
        }
      /* online softmax, per lane */
#pragma unroll
      for (int g = 0; g < G; g++)
        {
          float mx = m[g], corr;

#pragma unroll
          for (int u = 0; u < A2_U; u++)
            if (ok[u])
              mx = fmaxf (mx, s[u][g]);
          corr = a2_weight (m[g], mx);
          l[g] *= corr;
#pragma unroll
          for (int i = 0; i < NV; i++)
            acc[g][i] *= corr;
          m[g] = mx;
#pragma unroll
          for (int u = 0; u < A2_U; u++)
            s[u][g] = ok[u] ? exp2f (s[u][g] - mx) : 0.f;
        }
#pragma unroll
      for (int u = 0; u < A2_U; u++)
#pragma unroll
        for (int c = 0; c < CPL; c++)
          {
            float vf[VE];

            a2_unpack<T> (vr[u][c], vf);
#pragma unroll
            for (int g = 0; g < G; g++)
              {
                const float pv = A2_Q8 ? s[u][g] * vsc[u][c] : s[u][g];

                l[g] += c == 0 ? s[u][g] : 0.f;
#pragma unroll
                for (int e = 0; e < VE; e++)
                  acc[g][c * VE + e] += pv * vf[e];
              }
          }
    }

  /* merge the warp's row groups (lanes li, li + LR, ...) */
#pragma unroll
  for (int o = LR; o < 32; o <<= 1)
#pragma unroll
    for (int g = 0; g < G; g++)
      {
        const float m2 = __shfl_xor_sync (0xffffffffu, m[g], o);
        const float l2 = __shfl_xor_sync (0xffffffffu, l[g], o);
        const float mx = fmaxf (m[g], m2);
        const float a = a2_weight (m[g], mx), b = a2_weight (m2, mx);

        l[g] = l[g] * a + l2 * b;
#pragma unroll
        for (int i = 0; i < NV; i++)
          acc[g][i] = acc[g][i] * a + __shfl_xor_sync (0xffffffffu, acc[g][i], o) * b;
        m[g] = mx;
      }
  if (r == 0)
#pragma unroll
    for (int g = 0; g < G; g++)
      {
        if (li == 0)
          {
            sm_m[warp][g] = m[g];
            sm_l[warp][g] = l[g];
          }
#pragma unroll
        for (int c = 0; c < CPL; c++)
#pragma unroll
          for (int e = 0; e < VE; e++)
            sm_acc[warp][g][(c * LR + li) * VE + e] = acc[g][c * VE + e];
      }
  __syncthreads ();

  /* merge the warps: the split's (max, sum, values) per head */
  for (int j = threadIdx.x; j < gn * D; j += blockDim.x)
    {
      const int g = j / D, d = j % D;
      float mx = -INFINITY, lsum = 0.f, a = 0.f;

#pragma unroll
      for (int w = 0; w < A2_WARPS; w++)
        mx = fmaxf (mx, sm_m[w][g]);
#pragma unroll
      for (int w = 0; w < A2_WARPS; w++)
        {
          const float c = a2_weight (sm_m[w][g], mx);

          lsum += sm_l[w][g] * c;
          a += sm_acc[w][g][d] * c;
        }
      if (n_split == 1)
        {
          const size_t oi = ((size_t) t * H + h0 + g) * D + d;
          const float o = a / lsum;

          out[oi] = o;
          if (xo.q != nullptr)   /* a warp holds 32 consecutive values of a head */
            xq_store32 (o, oi, xo.q, xo.d, xo.s);
        }
      else
        {
          const size_t row = ((size_t) t * H + h0 + g) * zmax + z;

          part_acc[row * D + d] = a;
          if (d == 0)
            {
              part_ml[row * 2] = mx;
              part_ml[row * 2 + 1] = lsum;
            }
        }
    }
  if (n_split == 1)
    return;

  /* count the split; the last one merges them all */
  __threadfence ();
  __syncthreads ();
  if (threadIdx.x == 0)
    {
      unsigned *ctr = counters + (size_t) t * Hkv * n_gc + blockIdx.y;

      sm_last = atomicInc (ctr, (unsigned) n_split - 1) == (unsigned) n_split - 1;
    }
  __syncthreads ();
  if (!sm_last)
    return;
  __threadfence ();
  /* a warp per head: the global max, each split's weight, the sum */
  for (int g = warp; g < gn; g += A2_WARPS)
    {
      const float *ml = part_ml + ((size_t) t * H + h0 + g) * zmax * 2;
      float mx = -INFINITY, lsum = 0.f;

      for (int zz = lane; zz < n_split; zz += 32)
        mx = fmaxf (mx, __ldcg (ml + zz * 2));
      mx = warp_max (mx);
      for (int zz = lane; zz < n_split; zz += 32)
        {
          const float w = a2_weight (__ldcg (ml + zz * 2), mx);

          sm_w[g][zz] = w;
          lsum += w * __ldcg (ml + zz * 2 + 1);
        }
      lsum = warp_sum (lsum);
      if (lane == 0)
        sm_lsum[g] = lsum;
    }
  __syncthreads ();
  /* then 4 values per thread: the splits' partial sums, weighted */
  for (int j = threadIdx.x; j < gn * (D / 4); j += blockDim.x)
    {
      const int g = j / (D / 4), d4 = j % (D / 4);
      const float4 *src = reinterpret_cast<const float4 *> (
        part_acc + ((size_t) t * H + h0 + g) * zmax * D) + d4;
      float4 a = make_float4 (0.f, 0.f, 0.f, 0.f);
      const float inv = 1.f / sm_lsum[g];
      float4 *dst;

#pragma unroll 8
      for (int zz = 0; zz < n_split; zz++)
        {
          const float4 v = __ldcg (src + (size_t) zz * (D / 4));
          const float w = sm_w[g][zz];

          a.x += w * v.x;
          a.y += w * v.y;
          a.z += w * v.z;
          a.w += w * v.w;
        }
      dst = reinterpret_cast<float4 *> (out + ((size_t) t * H + h0 + g) * D) + d4;
      const float4 o = make_float4 (a.x * inv, a.y * inv, a.z * inv, a.w * inv);

      *dst = o;
      if (xo.q != nullptr)   /* 8 lanes hold 32 consecutive values of a head */
        xq_store32x4 (o, ((size_t) t * H + h0 + g) * D + 4 * (size_t) d4, xo.q, xo.d, xo.s);
    }
}

/* Splits (and grid columns) of a v2 launch for n_tok tokens. */
static size_t
a2_zmax (int n_tok, int H, int Hkv)
{
  const int G = a2_heads (H / Hkv), n_gc = (H / Hkv + G - 1) / G;

  return (size_t) a2_want (Hkv * n_gc * n_tok, false);
}

template <class T, int D, int G, bool ROPE>
void
launch_decode2 (const float *q, int q_ld, int n_tok, const int *d_pos, int H, int Hkv,
                float scale, const void *kc, const void *vc, const void *ks, const void *vs,
                void *part, unsigned *ctr, float *out, A2Xq xo, const A2Rope &rp,
                cudaStream_t stream)
{
  const int n_gc = (H / Hkv + G - 1) / G;
  const int want = a2_want (Hkv * n_gc * n_tok, sizeof (T) == 1), zmax = want;
  float *part_acc = static_cast<float *> (part);
  float *part_ml = part_acc + (size_t) n_tok * H * zmax * D;
  dim3 grid ((unsigned) zmax, (unsigned) (Hkv * n_gc), (unsigned) n_tok);

  (void) bln_launch (attn_decode2_kernel<T, D, G, ROPE>, grid, dim3 (A2_WARPS * 32), 0, stream,
                     q, q_ld, d_pos, n_tok, H, Hkv, scale, static_cast<const T *> (kc),
                     static_cast<const T *> (vc), static_cast<const __half *> (ks),
                     static_cast<const __half *> (vs), want, zmax, part_acc, part_ml, ctr, out, xo,
                     a2_prefetch (), a2_split_min (), a2_trigger (), rp);
}

template <class T, int D, bool ROPE>
void
launch_decode2_g (const float *q, int q_ld, int n_tok, const int *d_pos, int H, int Hkv,
                  float scale, const void *kc, const void *vc, const void *ks, const void *vs,
                  void *part, unsigned *ctr, float *out, A2Xq xo, const A2Rope &rp,
                  cudaStream_t stream)
{
  switch (a2_heads (H / Hkv))
    {
    case 1:
      launch_decode2<T, D, 1, ROPE> (q, q_ld, n_tok, d_pos, H, Hkv, scale, kc, vc, ks, vs, part,
                                     ctr, out, xo, rp, stream);
      break;
    case 4:
      launch_decode2<T, D, 4, ROPE> (q, q_ld, n_tok, d_pos, H, Hkv, scale, kc, vc, ks, vs, part,
                                     ctr, out, xo, rp, stream);
      break;
    default:
      launch_decode2<T, D, 8, ROPE> (q, q_ld, n_tok, d_pos, H, Hkv, scale, kc, vc, ks, vs, part,
                                     ctr, out, xo, rp, stream);
      break;
    }
}

/* The v2 kernel for head dim d (64, 128 or 256); ROPE: the fused variant
 * (one token; rp says what it needs). */
template <class T, bool ROPE = false>
void
launch_decode2_t (const float *q, int q_ld, int n_tok, const int *d_pos, int H, int Hkv, int d,
                  float scale, const void *kc, const void *vc, const void *ks, const void *vs,
                  void *part, unsigned *ctr, float *out, A2Xq xo, cudaStream_t stream,
                  const A2Rope &rp = A2Rope ())
{
  if (d == 64)
    launch_decode2_g<T, 64, ROPE> (q, q_ld, n_tok, d_pos, H, Hkv, scale, kc, vc, ks, vs, part,
                                   ctr, out, xo, rp, stream);
  else if (d == 128)
    launch_decode2_g<T, 128, ROPE> (q, q_ld, n_tok, d_pos, H, Hkv, scale, kc, vc, ks, vs, part,
                                    ctr, out, xo, rp, stream);
  else
    launch_decode2_g<T, 256, ROPE> (q, q_ld, n_tok, d_pos, H, Hkv, scale, kc, vc, ks, vs, part,
                                    ctr, out, xo, rp, stream);
}

/* 8-bit KV store: a block per (token, KV head, K or V), a thread per value,
 * a warp per 32-value block: scale = amax / 127 rounded to F16, values
 * rounded to nearest with that scale (clamped, as the F16 scale may round
 * below amax / 127). */
__global__ void
kv_store_q8_kernel (const float *__restrict__ k, const float *__restrict__ v, int ld,
                    const int *__restrict__ d_pos, int Hkv, int dk, int dv, int8_t *k_cache,
                    __half *k_scale, int8_t *v_cache, __half *v_scale)
{
  bln_pdl_wait ();
  const int t = blockIdx.x, h = blockIdx.y, is_v = blockIdx.z, j = threadIdx.x;
  const int d = is_v ? dv : dk, pos = *d_pos + t;
  const float *row = (is_v ? v + (size_t) h * dv : k + (size_t) h * dk) + (size_t) t * ld;
  const size_t r = (size_t) pos * Hkv + h;
  const float x = j < d ? row[j] : 0.f;
  const float amax = warp_max (fabsf (x));
  const __half sh = __float2half_rn (amax / 127.f);
  const float sc = __half2float (sh);
  const float qv = sc > 0.f ? fminf (fmaxf (rintf (x / sc), -127.f), 127.f) : 0.f;

  if (j >= d)
    return;
  (is_v ? v_cache : k_cache)[r * d + j] = (int8_t) qv;
  if ((j & 31) == 0)
    (is_v ? v_scale : k_scale)[r * (d / 32) + j / 32] = sh;
}

/* 8-bit rows back to F16, a thread per value */
__global__ void
kv_dequant_q8_kernel (const int8_t *__restrict__ src, const __half *__restrict__ sc, size_t n,
                      int d, __half *__restrict__ dst)
{
  bln_pdl_wait ();
  const size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;

  if (i < n)
    dst[i] = __float2half_rn ((float) src[i] * __half2float (sc[i / 32]));
}

/* ---------------------------------------------------------------------- */
/* prefill softmax                                                         */

template <class T>
__global__ void
softmax_causal_kernel (const float *__restrict__ s, T *__restrict__ p, int n, int n_kv, int pos0,
                       float scale)
{
  bln_pdl_wait ();
  __shared__ float red[32];
  const int row = blockIdx.x;           /* h * n + t */
  const int t = row % n;
  const int len = pos0 + t + 1;
  const float *sr = s + (size_t) row * n_kv;
  T *pr = p + (size_t) row * n_kv;
  float mx = -INFINITY, sum = 0.f, inv;

  for (int j = threadIdx.x; j < len; j += blockDim.x)
    mx = fmaxf (mx, sr[j] * scale);
  mx = block_max (mx, red);
  for (int j = threadIdx.x; j < len; j += blockDim.x)
    sum += expf (sr[j] * scale - mx);
  sum = block_sum (sum, red);
  inv = 1.0f / sum;
  for (int j = threadIdx.x; j < n_kv; j += blockDim.x)
    pr[j] = from_f<T> (j < len ? expf (sr[j] * scale - mx) * inv : 0.f);
}

__global__ void
convert_f16_kernel (const float *__restrict__ x, __half *__restrict__ y, size_t n)
{
  bln_pdl_wait ();
  size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = round16 (x[i], y);
}

__global__ void
convert_bf16_kernel (const float *__restrict__ x, __nv_bfloat16 *__restrict__ y, size_t n)
{
  bln_pdl_wait ();
  size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = round16 (x[i], y);
}

unsigned
blocks_for (size_t n, int per)
{
  return (unsigned) ((n + per - 1) / per);
}

/* Threads of an RMSNorm block for rows of d values: the reduction order, so
 * the same for every RMSNorm launcher. */
unsigned
rmsnorm_threads (int d)
{
  return d >= 1024 ? 1024 : (unsigned) ((d + 31) / 32) * 32;
}

} /* namespace */

extern "C" cudaError_t
bln_kernels_rmsnorm (const float *x, const float *w, float *y, int n_rows, int d, float eps,
                     cudaStream_t stream)
{
  if (!x || !w || !y || n_rows <= 0 || d <= 0)
    return cudaErrorInvalidValue;
  (void) bln_launch (rmsnorm_kernel, dim3 (n_rows), dim3 (rmsnorm_threads (d)), 0, stream, x, w,
                      y, d, eps);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_rmsnorm_f16 (const float *x, const float *w, float *y, void *y16, int n_rows, int d,
                         float eps, int to_bf16, cudaStream_t stream)
{
  if (!x || !w || !y16 || n_rows <= 0 || d <= 0 || (to_bf16 != 0 && to_bf16 != 1))
    return cudaErrorInvalidValue;
  if (to_bf16)
    (void) bln_launch (rmsnorm16_kernel<__nv_bfloat16>, dim3 (n_rows), dim3 (rmsnorm_threads (d)),
                        0, stream, x, w, y, static_cast<__nv_bfloat16 *> (y16), d, eps);
  else
    (void) bln_launch (rmsnorm16_kernel<__half>, dim3 (n_rows), dim3 (rmsnorm_threads (d)), 0,
                        stream, x, w, y, static_cast<__half *> (y16), d, eps);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_add (float *x, const float *y, size_t n, cudaStream_t stream)
{
  if (!x || !y || n == 0)
    return cudaErrorInvalidValue;
  (void) bln_launch (add_kernel, dim3 (blocks_for (n, 256)), dim3 (256), 0, stream, x, y, n);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_add_bias (float *y, const float *b, int n_rows, int width, cudaStream_t stream)
{
  size_t n = (size_t) n_rows * width;

  if (!y || !b || n_rows <= 0 || width <= 0)
    return cudaErrorInvalidValue;
  (void) bln_launch (add_bias_kernel, dim3 (blocks_for (n, 256)), dim3 (256), 0, stream, y, b, n,
                      width);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_silu_mul (const float *g, int g_stride, const float *u, int u_stride, float *out,
                      int n_rows, int ff, cudaStream_t stream)
{
  size_t n = (size_t) n_rows * ff;

  if (!g || !u || !out || n_rows <= 0 || ff <= 0 || g_stride < ff || u_stride < ff)
    return cudaErrorInvalidValue;
  (void) bln_launch (silu_mul_kernel<float>, dim3 (blocks_for (n, 256)), dim3 (256), 0, stream, g,
                      g_stride, u, u_stride, out, n, ff);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_silu_mul_f16 (const float *g, int g_stride, const float *u, int u_stride, void *out,
                          int n_rows, int ff, int to_bf16, cudaStream_t stream)
{
  size_t n = (size_t) n_rows * ff;

  if (!g || !u || !out || n_rows <= 0 || ff <= 0 || g_stride < ff || u_stride < ff
      || (to_bf16 != 0 && to_bf16 != 1))
    return cudaErrorInvalidValue;
  if (to_bf16)
    (void) bln_launch (silu_mul_kernel<__nv_bfloat16>, dim3 (blocks_for (n, 256)), dim3 (256),
                        0, stream, g, g_stride, u, u_stride, static_cast<__nv_bfloat16 *> (out),
                        n, ff);
  else
    (void) bln_launch (silu_mul_kernel<__half>, dim3 (blocks_for (n, 256)), dim3 (256), 0,
                        stream, g, g_stride, u, u_stride, static_cast<__half *> (out), n, ff);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_rope_store (float *q, float *k, float *v, const float *bq, const float *bk,
                        const float *bv, int n_tok, int ld, const int *d_pos, int H, int Hkv,
                        int dk, int dv, int rope_dim, int neox, const float *inv_freq,
                        float attn_factor, void *k_cache, void *v_cache, int kv_f16, void *q_kv,
                        cudaStream_t stream)
{
  const dim3 grid ((unsigned) n_tok, (unsigned) (H + Hkv));
  const dim3 block ((unsigned) (((dk > dv ? dk : dv) + 31) / 32 * 32));

  if (!q || !k || !v || !d_pos || !inv_freq || !k_cache != !v_cache || n_tok <= 0 || H <= 0
      || Hkv <= 0 || dk <= 0 || dv <= 0 || rope_dim < 0 || rope_dim > dk || (rope_dim & 1)
      || (n_tok > 1 && (ld < H * dk || ld < Hkv * dk || ld < Hkv * dv)))
    return cudaErrorInvalidValue;
  if (dk > 256 || dv > 256)
    return cudaErrorInvalidValue;
  if (kv_f16)
    (void) bln_launch (rope_store_kernel<__half>, grid, block, 0, stream, q, k, v, bq,
                        bk, bv, ld, d_pos, H, Hkv, dk, dv, rope_dim, neox, inv_freq, attn_factor,
                        static_cast<__half *> (k_cache), static_cast<__half *> (v_cache),
                        static_cast<__half *> (q_kv));
  else
    (void) bln_launch (rope_store_kernel<float>, grid, block, 0, stream, q, k, v, bq,
                        bk, bv, ld, d_pos, H, Hkv, dk, dv, rope_dim, neox, inv_freq, attn_factor,
                        static_cast<float *> (k_cache), static_cast<float *> (v_cache),
                        static_cast<float *> (q_kv));
  return cudaGetLastError ();
}

namespace {

/* Bytes of the v2 kernels' split counters at the start of the scratch: one
 * per (token, head) for up to A2_MAX_TOK tokens (a fixed size, so that every
 * token count finds them at the same place). */
constexpr int A2_MAX_TOK = 16;

static size_t
a2_counter_bytes (int H)
{
  return ((size_t) A2_MAX_TOK * H * sizeof (unsigned) + 255) / 256 * 256;
}

/* Bytes of v2 partials for n tokens: values, then (max, sum) pairs. */
static size_t
a2_part_bytes (int n, int H, int Hkv, int dv)
{
  return (size_t) n * H * a2_zmax (n, H, Hkv) * (dv + 2) * sizeof (float);
}

/* Which kernel serves an F16 / F32 cache: 2 (one launch, fused merge) when
 * the shape suits it, unless BALEEN_CUDA_ATTN=v1 asks for the first kernel
 * pair. Version 2 passed its tests on an H200 in session 5 and took the 7B
 * decode from 375 to 485 tok/s (docs/BENCHMARKS.md); the 8-bit cache
 * (kv_bits 8) always uses it. */
static int
attn_version (int n_tok, int dk, int dv, const void *k_cache, const void *v_cache)
{
  static int wanted = -1;

  if (wanted < 0)
    {
      const char *env = std::getenv ("BALEEN_CUDA_ATTN");

      wanted = env != nullptr && std::strcmp (env, "v1") == 0 ? 1 : 2;
    }
  if (wanted == 1 || dk != dv || (dk != 64 && dk != 128 && dk != 256) || n_tok > A2_MAX_TOK
      || ((uintptr_t) k_cache & 15) != 0 || ((uintptr_t) v_cache & 15) != 0)
    return 1;
  return 2;
}

/* Where v2 leaves its output rounded for the matvecs: the matvec scratch
 * when @rounded is not null, n_tok <= BLN_KERNELS_MATVEC_MAX_TOK, the heads
 * are whole 32-value blocks and the scratch holds H dv values per token
 * (then *rounded = 1), else nowhere. */
static A2Xq
a2_xq (int n_tok, int H, int dv, int *rounded)
{
  BlnKernelsXq xq;
  A2Xq xo;

  if (rounded != nullptr && n_tok <= BLN_KERNELS_MATVEC_MAX_TOK && dv % 32 == 0
      && bln_kernels_xq_scratch (&xq) == cudaSuccess && H * dv <= xq.max_values)
    {
      xo.q = static_cast<int8_t *> (xq.q);
      xo.d = static_cast<float2 *> (xq.d);
      xo.s = static_cast<float4 *> (xq.s);
      *rounded = 1;
    }
  return xo;
}

} /* namespace */

extern "C" size_t
bln_kernels_attn_decode_scratch (int n_tok, int H, int Hkv, int dv)
{
  size_t best = 0, need;
  int n, group, n_gc;

  if (n_tok <= 0 || H <= 0 || Hkv <= 0 || dv <= 0 || H % Hkv != 0)
    return 0;
  group = H / Hkv;
  n_gc = (group + AD_GMAX - 1) / AD_GMAX;
  for (n = 1; n <= n_tok; n++)
    {
      need = (size_t) n * H * (size_t) (decode_want (Hkv * n_gc * n) + 1) * (dv + 2)
             * sizeof (float);
      if (need > best)
        best = need;
      if (n <= A2_MAX_TOK && (need = a2_part_bytes (n, H, Hkv, dv)) > best)
        best = need;
    }
  return a2_counter_bytes (H) + best;
}

extern "C" cudaError_t
bln_kernels_attn_decode_round (const float *q, int q_ld, int n_tok, const int *d_pos, int H,
                               int Hkv, int dk, int dv, float scale, const void *k_cache,
                               const void *v_cache, int kv_f16, void *scratch, float *out,
                               int *rounded, cudaStream_t stream)
{
  void *part;
  A2Xq xo;

  if (rounded != nullptr)
    *rounded = 0;
  if (q_ld == 0)
    q_ld = H * dk;
  if (q_ld < H * dk || !q || !d_pos || !k_cache || !v_cache || !scratch || !out || n_tok <= 0
      || H <= 0
      || Hkv <= 0 || H % Hkv != 0 || dk <= 0 || dk > AD_DMAX || dv <= 0 || dv > AD_DMAX
      || n_tok > 65535)
    return cudaErrorInvalidValue;
  part = static_cast<char *> (scratch) + a2_counter_bytes (H);
  if (attn_version (n_tok, dk, dv, k_cache, v_cache) == 2)
    {
      unsigned *ctr = static_cast<unsigned *> (scratch);

      xo = a2_xq (n_tok, H, dv, rounded);
      if (kv_f16)
        launch_decode2_t<__half> (q, q_ld, n_tok, d_pos, H, Hkv, dk, scale, k_cache, v_cache,
                                  nullptr, nullptr, part, ctr, out, xo, stream);
      else
        launch_decode2_t<float> (q, q_ld, n_tok, d_pos, H, Hkv, dk, scale, k_cache, v_cache,
                                 nullptr, nullptr, part, ctr, out, xo, stream);
    }
  else if (kv_f16)
    launch_decode_t<__half> (q, q_ld, n_tok, d_pos, H, Hkv, dk, dv, scale, k_cache, v_cache,
                             static_cast<float *> (part), out, stream);
  else
    launch_decode_t<float> (q, q_ld, n_tok, d_pos, H, Hkv, dk, dv, scale, k_cache, v_cache,
                            static_cast<float *> (part), out, stream);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_attn_decode (const float *q, int q_ld, int n_tok, const int *d_pos, int H, int Hkv,
                         int dk, int dv, float scale, const void *k_cache, const void *v_cache,
                         int kv_f16, void *scratch, float *out, cudaStream_t stream)
{
  return bln_kernels_attn_decode_round (q, q_ld, n_tok, d_pos, H, Hkv, dk, dv, scale, k_cache,
                                        v_cache, kv_f16, scratch, out, nullptr, stream);
}

extern "C" int
bln_kernels_attn_decode_rope_supports (int H, int Hkv, int dk, int dv, int rope_dim,
                                       const void *k_cache, const void *v_cache)
{
  return H > 0 && Hkv > 0 && H % Hkv == 0 && rope_dim >= 0 && rope_dim <= dk
         && (rope_dim & 1) == 0 && k_cache != nullptr && v_cache != nullptr
         && attn_version (1, dk, dv, k_cache, v_cache) == 2;
}

extern "C" cudaError_t
bln_kernels_attn_decode_rope (const float *q, const float *k, const float *v, const float *bq,
                              const float *bk, const float *bv, const int *d_pos, int H, int Hkv,
                              int dk, int dv, int rope_dim, int neox, const float *inv_freq,
                              float attn_factor, float scale, void *k_cache, void *v_cache,
                              int kv_f16, void *scratch, float *out, int *rounded,
                              cudaStream_t stream)
{
  A2Rope rp;
  A2Xq xo;
  void *part;

  if (rounded != nullptr)
    *rounded = 0;
  if (!q || !k || !v || !d_pos || !inv_freq || !k_cache || !v_cache || !scratch || !out
      || H <= 0 || Hkv <= 0 || H % Hkv != 0 || dk <= 0 || dk > AD_DMAX || dv <= 0
      || dv > AD_DMAX || rope_dim < 0 || rope_dim > dk || (rope_dim & 1))
    return cudaErrorInvalidValue;
  if (!bln_kernels_attn_decode_rope_supports (H, Hkv, dk, dv, rope_dim, k_cache, v_cache))
    return cudaErrorNotSupported;
  rp.k = k;
  rp.v = v;
  rp.bq = bq;
  rp.bk = bk;
  rp.bv = bv;
  rp.inv_freq = inv_freq;
  rp.rope_dim = rope_dim;
  rp.neox = neox;
  rp.af = attn_factor;
  rp.k_out = k_cache;
  rp.v_out = v_cache;
  part = static_cast<char *> (scratch) + a2_counter_bytes (H);
  xo = a2_xq (1, H, dv, rounded);
  if (kv_f16)
    launch_decode2_t<__half, true> (q, H * dk, 1, d_pos, H, Hkv, dk, scale, k_cache, v_cache,
                                    nullptr, nullptr, part, static_cast<unsigned *> (scratch),
                                    out, xo, stream, rp);
  else
    launch_decode2_t<float, true> (q, H * dk, 1, d_pos, H, Hkv, dk, scale, k_cache, v_cache,
                                   nullptr, nullptr, part, static_cast<unsigned *> (scratch),
                                   out, xo, stream, rp);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_kv_store_q8 (const float *k, const float *v, int n_tok, int ld, const int *d_pos,
                         int Hkv, int dk, int dv, void *k_cache, void *k_scale, void *v_cache,
                         void *v_scale, cudaStream_t stream)
{
  const int dm = dk > dv ? dk : dv;

  if (!k || !v || !d_pos || !k_cache || !k_scale || !v_cache || !v_scale || n_tok <= 0
      || Hkv <= 0 || dk <= 0 || dv <= 0 || dk % 32 != 0 || dv % 32 != 0 || dm > 1024
      || n_tok > 65535 || (n_tok > 1 && (ld < Hkv * dk || ld < Hkv * dv)))
    return cudaErrorInvalidValue;
  (void) bln_launch (kv_store_q8_kernel, dim3 ((unsigned) n_tok, (unsigned) Hkv, 2),
                     dim3 ((unsigned) dm), 0, stream, k, v, ld, d_pos, Hkv, dk, dv,
                     static_cast<int8_t *> (k_cache), static_cast<__half *> (k_scale),
                     static_cast<int8_t *> (v_cache), static_cast<__half *> (v_scale));
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_kv_dequant_q8 (const void *values, const void *scales, size_t n_rows, int d,
                           void *out, cudaStream_t stream)
{
  const size_t n = n_rows * (size_t) d;

  if (!values || !scales || !out || d <= 0 || d % 32 != 0 || n_rows == 0
      || n / 256 + 1 > 0x7fffffffu)
    return cudaErrorInvalidValue;
  (void) bln_launch (kv_dequant_q8_kernel, dim3 (blocks_for (n, 256)), dim3 (256), 0, stream,
                     static_cast<const int8_t *> (values), static_cast<const __half *> (scales),
                     n, d, static_cast<__half *> (out));
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_attn_decode_q8 (const float *q, int q_ld, int n_tok, const int *d_pos, int H,
                            int Hkv, int d, float scale, const void *k_cache, const void *k_scale,
                            const void *v_cache, const void *v_scale, void *scratch, float *out,
                            cudaStream_t stream)
{
  if (q_ld == 0)
    q_ld = H * d;
  if (q_ld < H * d || !q || !d_pos || !k_cache || !k_scale || !v_cache || !v_scale || !scratch
      || !out || n_tok <= 0 || n_tok > A2_MAX_TOK || H <= 0 || Hkv <= 0 || H % Hkv != 0
      || (d != 64 && d != 128 && d != 256) || ((uintptr_t) k_cache & 15) != 0
      || ((uintptr_t) v_cache & 15) != 0)
    return cudaErrorInvalidValue;
  launch_decode2_t<int8_t> (q, q_ld, n_tok, d_pos, H, Hkv, d, scale, k_cache, v_cache, k_scale,
                            v_scale, static_cast<char *> (scratch) + a2_counter_bytes (H),
                            static_cast<unsigned *> (scratch), out, A2Xq (), stream);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_softmax_causal (const float *s, void *p, int p_f16, int H, int n, int n_kv, int pos0,
                            float scale, cudaStream_t stream)
{
  if (!s || !p || H <= 0 || n <= 0 || n_kv < pos0 + n || pos0 < 0)
    return cudaErrorInvalidValue;
  if (p_f16)
    (void) bln_launch (softmax_causal_kernel<__half>, dim3 (H * n), dim3 (256), 0, stream, s,
                        static_cast<__half *> (p), n, n_kv, pos0, scale);
  else
    (void) bln_launch (softmax_causal_kernel<float>, dim3 (H * n), dim3 (256), 0, stream, s,
                        static_cast<float *> (p), n, n_kv, pos0, scale);
  return cudaGetLastError ();
}

extern "C" cudaError_t
bln_kernels_convert (const float *x, void *y, size_t n, int to_bf16, cudaStream_t stream)
{
  if (!x || !y || n == 0)
    return cudaErrorInvalidValue;
  if (to_bf16)
    (void) bln_launch (convert_bf16_kernel, dim3 (blocks_for (n, 256)), dim3 (256), 0, stream, x,
                        static_cast<__nv_bfloat16 *> (y), n);
  else
    (void) bln_launch (convert_f16_kernel, dim3 (blocks_for (n, 256)), dim3 (256), 0, stream, x,
                        static_cast<__half *> (y), n);
  return cudaGetLastError ();
}
