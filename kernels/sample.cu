/* kernels/sample.cu — token sampling on the GPU; see sample.h for what it
 * computes and engine/sampler.c for the CPU code it must agree with.
 *
 * The row passes use blocks of TPB threads, EPT values each (EPB values per
 * block, so ~150 blocks for a 152k vocabulary). A pass that needs a global
 * answer (a maximum, a sum, a histogram) writes per-block partials and lets
 * the last block to finish (an atomic counter, reset by that block) combine
 * them in block order, so every result is deterministic. Kernels that follow
 * read the answers from a small State struct in the scratch; a kernel whose
 * work was already decided (State.done) returns at once.
 *
 * Float arithmetic that the CPU does in float uses the _rn intrinsics, so
 * that nvcc never fuses it into an FMA the CPU does not do.
 */
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

#include "sample.h"
#include "launch.cuh"

namespace {

constexpr int TPB = 256;          /* threads per block of the row passes */
constexpr int EPT = 4;            /* values per thread */
constexpr int EPB = TPB * EPT;    /* values per block */
constexpr int FIN_T = 1024;       /* threads of the final (sort) kernel */
constexpr int HIST_BINS = 2048;   /* radix-select digits: 11, 11 and 10 bits */
constexpr unsigned FULL = 0xffffffffu;

static_assert (HIST_BINS == TPB * 8, "select_step gives each thread 8 bins");
static_assert (BLN_SAMPLE_CAND_CAP == 2 * FIN_T, "k_final gives each thread 2 candidates");

struct Best {
  float v;
  int id;     /* -1: none */
};

struct Pair {
  float v;
  int id;
};

/* One block's partial results. */
struct Part {
  float v;
  int id;
  int count;
  int first_id;
  int last_id;
  int pad;
  double d;
};

/* A radix selection of the rank-th largest usable value. */
struct SelSlot {
  int active;
  int rank;             /* rank still to find inside the current prefix */
  unsigned prefix;      /* key bits fixed so far */
  unsigned mask;        /* which bits those are */
  int n_greater;        /* values above the prefix's bucket, so far */
  int n_equal;          /* after the last pass: values equal to the answer */
  float value;          /* after the last pass: the answer */
  int pad;
};

struct State {
  unsigned counter;     /* blocks finished in the current pass */
  int done;             /* the result is written */
  int n_usable;         /* scaled logits that are neither NaN nor -inf */
  int best_id;
  float M;              /* the largest usable value */
  int topk_active;      /* 0 < top_k < n_usable */
  int n_cand;           /* candidates appended by k_collect */
  int n_S;              /* survivors (id-order path) */
  int last_S;           /* the largest surviving id */
  int pad;
  double Z;             /* sum of exp(v - M) over the mass set */
  double lse;           /* log-sum-exp of the raw logits */
  SelSlot sel[2];
  int hist[HIST_BINS];
};

/* Everything a kernel needs, passed by value. */
struct KP {
  const float *raw;
  int V;
  float temp, top_p, min_p;
  int top_k;
  float rp, pres, freq;
  double u;
  int n_top;
  const int32_t *hist;
  int n_hist;
  int greedy;
  State *st;
  float *work;
  int *flags;
  Part *parts;
  Pair *tparts;
  Pair *cand;
  BlnSampleResult *res;
};

/* ---------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------- */

/* a before b in the CPU's total order (larger value, then smaller id); a
 * missing entry (id < 0) comes last. */
__device__ __forceinline__ bool
better (float av, int aid, float bv, int bid)
{
  return aid >= 0 && (bid < 0 || av > bv || (av == bv && aid < bid));
}

/* Order-preserving unsigned key of a float that is not NaN. */
__device__ __forceinline__ unsigned
ord_key (float v)
{
  unsigned b = __float_as_uint (v);

  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float
key_float (unsigned k)
{
  return __uint_as_float ((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* Sort key of a candidate: descending order = larger value, then smaller id. */
__device__ __forceinline__ unsigned long long
cand_key (float v, int id)
{
  return ((unsigned long long) ord_key (v) << 32) | (unsigned long long) (~(unsigned) id);
}

__device__ __forceinline__ int
cand_key_id (unsigned long long k)
{
  return (int) ~(unsigned) (k & 0xffffffffull);
}

/* The history penalties, as sampler.c's penalised() for a count > 0. */
__device__ __forceinline__ float
penalise (float l, int cnt, const KP &p)
{
  float rp = p.rp;

  if (rp > 0.f && rp != 1.f)
    l = l < 0.f ? __fmul_rn (l, rp) : __fdiv_rn (l, rp);
  return __fsub_rn (l, __fadd_rn (p.pres, __fmul_rn (p.freq, __int2float_rn (cnt))));
}

/* sampler.c's scaled_logit(): -inf for a token that can never be chosen, +inf
 * clamped to FLT_MAX, and -0 made +0 (so that the integer keys order the
 * values as float comparisons do). */
__device__ __forceinline__ float
scale (float l, float temp)
{
  if (isnan (l) || l == -INFINITY)
    return -INFINITY;
  if (temp != 1.f)
    {
      l = __fdiv_rn (l, temp);
      if (isnan (l) || l == -INFINITY)
        return -INFINITY;
    }
  if (l > FLT_MAX)
    l = FLT_MAX;
  return l == 0.f ? 0.f : l;
}

/* sampler.c's logprob_of(). */
__device__ __forceinline__ float
logprob_of (double lse, float x)
{
  if (isnan (x))
    return -INFINITY;
  if (!isfinite (lse))
    return (double) x == lse ? 0.f : -INFINITY;
  return (float) ((double) x - lse);
}

template <typename T>
__device__ __forceinline__ T
warp_sum (T v)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v += __shfl_xor_sync (FULL, v, off);
  return v;
}

/* Sum over the block, returned to every thread. @red: 33 T of shared memory. */
template <typename T>
__device__ T
block_sum (T v, T *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

  v = warp_sum (v);
  __syncthreads ();
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  v = lane < nw ? red[lane] : T (0);
  return warp_sum (v);
}

__device__ __forceinline__ int
warp_min (int v)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v = min (v, __shfl_xor_sync (FULL, v, off));
  return v;
}

__device__ __forceinline__ int
warp_max (int v)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v = max (v, __shfl_xor_sync (FULL, v, off));
  return v;
}

__device__ __forceinline__ float
warp_fmax (float v)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v = fmaxf (v, __shfl_xor_sync (FULL, v, off));
  return v;
}

__device__ int
block_min (int v, int *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

  v = warp_min (v);
  __syncthreads ();
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  v = lane < nw ? red[lane] : INT_MAX;
  return warp_min (v);
}

__device__ int
block_max (int v, int *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

  v = warp_max (v);
  __syncthreads ();
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  v = lane < nw ? red[lane] : INT_MIN;
  return warp_max (v);
}

__device__ float
block_fmax (float v, float *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

  v = warp_fmax (v);
  __syncthreads ();
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  v = lane < nw ? red[lane] : -INFINITY;
  return warp_fmax (v);
}

__device__ __forceinline__ Best
warp_best (Best b)
{
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    {
      float ov = __shfl_xor_sync (FULL, b.v, off);
      int oid = __shfl_xor_sync (FULL, b.id, off);

      if (better (ov, oid, b.v, b.id))
        {
          b.v = ov;
          b.id = oid;
        }
    }
  return b;
}

/* The first entry in the total order over the block, returned to every
 * thread. @red: 33 Best. */
__device__ Best
block_best (Best b, Best *red)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

  b = warp_best (b);
  __syncthreads ();
  if (lane == 0)
    red[warp] = b;
  __syncthreads ();
  if (lane < nw)
    b = red[lane];
  else
    {
      b.v = -INFINITY;
      b.id = -1;
    }
  return warp_best (b);
}

/* Exclusive prefix sum over the threads of the block in thread order; *total
 * gets the block's sum. @red: 33 T. */
template <typename T>
__device__ T
block_excl_scan (T v, T *red, T *total)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  T x = v, ex;

#pragma unroll
  for (int off = 1; off < 32; off <<= 1)
    {
      T y = __shfl_up_sync (FULL, x, off);

      if (lane >= off)
        x += y;
    }
  ex = __shfl_up_sync (FULL, x, 1);
  if (lane == 0)
    ex = T (0);
  __syncthreads ();
  if (lane == 31)
    red[warp] = x;
  __syncthreads ();
  if (warp == 0)
    {
      T w = lane < nw ? red[lane] : T (0), s = w, e;

#pragma unroll
      for (int off = 1; off < 32; off <<= 1)
        {
          T y = __shfl_up_sync (FULL, s, off);

          if (lane >= off)
            s += y;
        }
      e = __shfl_up_sync (FULL, s, 1);
      if (lane == 0)
        e = T (0);
      __syncwarp ();
      if (lane < nw)
        red[lane] = e;
      if (lane == 31)
        red[32] = s;
    }
  __syncthreads ();
  *total = red[32];
  return red[warp] + ex;
}

/* The last-block-done handshake: TRUE in the one block that finishes last,
 * which then sees every other block's writes. */
__device__ bool
last_block (State *st)
{
  __shared__ int sh_last;

  __threadfence ();
  __syncthreads ();
  if (threadIdx.x == 0)
    sh_last = atomicAdd (&st->counter, 1u) == gridDim.x - 1;
  __syncthreads ();
  if (sh_last)
    __threadfence ();
  return sh_last != 0;
}

/* Ends the pass for the next one: called by the last block, after its last
 * read of the counter. */
__device__ __forceinline__ void
end_pass (State *st)
{
  if (threadIdx.x == 0)
    st->counter = 0;
}

__device__ void
fallback (const KP &p)
{
  p.res->id = -1;
  p.res->n_survivors = 0;
  p.res->status = BLN_SAMPLE_FALLBACK;
  p.st->done = 1;
}

__device__ void
finish (const KP &p, int id, int n)
{
  BlnSampleResult *r = p.res;

  if (id < 0 || id >= p.V)
    {
      fallback (p);   /* cannot happen; never read out of bounds if it does */
      return;
    }
  r->id = id;
  r->n_survivors = n;
  r->status = BLN_SAMPLE_OK;
  r->logprob = p.n_top >= 0 ? logprob_of (p.st->lse, p.raw[id]) : 0.f;
  p.st->done = 1;
}

__device__ __forceinline__ Part
load_part (const Part *pt)
{
  Part r;

  r.v = __ldcg (&pt->v);
  r.id = __ldcg (&pt->id);
  r.count = __ldcg (&pt->count);
  r.first_id = __ldcg (&pt->first_id);
  r.last_id = __ldcg (&pt->last_id);
  r.pad = 0;
  r.d = __ldcg (&pt->d);
  return r;
}

/* One radix-select step, run by every thread of a pass's last block (TPB
 * threads): picks the bucket of slot @slot's rank in the global histogram of
 * pass @pass, then clears the histogram. */
__device__ void
select_step (const KP &p, int slot, int pass, int *red)
{
  State *st = p.st;
  SelSlot *s = &st->sel[slot];
  const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
  const int nbins = pass == 2 ? 1024 : 2048;

  __syncthreads ();
  if (s->active)
    {
      int c[8], local = 0, total, above, rank = s->rank;

#pragma unroll
      for (int j = 0; j < 8; j++)
        {
          int b = nbins - 1 - ((int) threadIdx.x * 8 + j);

          c[j] = b >= 0 ? __ldcg (&st->hist[b]) : 0;
          local += c[j];
        }
      above = block_excl_scan (local, red, &total);
      if (above < rank && rank <= above + local)
        {
          int acc = above;

          for (int j = 0; j < 8; j++)
            {
              if (acc + c[j] >= rank)
                {
                  unsigned b = (unsigned) (nbins - 1 - ((int) threadIdx.x * 8 + j));

                  s->rank = rank - acc;
                  s->n_greater += acc;
                  s->prefix |= b << shift;
                  s->mask |= (unsigned) (nbins - 1) << shift;
                  if (pass == 2)
                    {
                      s->n_equal = c[j];
                      s->value = key_float (s->prefix);
                    }
                  break;
                }
              acc += c[j];
            }
        }
    }
  __syncthreads ();
  for (int b = threadIdx.x; b < HIST_BINS; b += blockDim.x)
    st->hist[b] = 0;
}

/* How the top-k set looks after the selections (valid from k_mass on). */
struct TopK {
  bool on;
  float floor_v;     /* kth largest value, or -inf */
  int n_post;        /* tokens in the top-k set */
};

__device__ __forceinline__ TopK
topk_of (const State *st)
{
  TopK t;

  t.on = st->topk_active != 0;
  t.floor_v = t.on ? st->sel[0].value : -INFINITY;
  t.n_post = t.on ? st->sel[0].n_greater + st->sel[0].n_equal : st->n_usable;
  return t;
}

/* ---------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------- */

/* The penalised (and, when sampling, scaled) values of the history's tokens,
 * flagged for the row pass that follows. */
__global__ void __launch_bounds__ (TPB)
k_pen (KP p)
{
  int j, id, cnt;
  float l;

  bln_pdl_wait ();
  j = blockIdx.x * TPB + threadIdx.x;
  if (j >= p.n_hist)
    return;
  id = p.hist[2 * j];
  cnt = p.hist[2 * j + 1];
  if (id < 0 || id >= p.V || cnt <= 0)
    return;
  l = penalise (p.raw[id], cnt, p);
  p.work[id] = p.greedy ? l : scale (l, p.temp);
  p.flags[id] = 1;
}

/* Log-sum-exp of the raw logits and their n_top largest (k_lp's last block
 * writes st->lse and the result's top list). */
__global__ void __launch_bounds__ (TPB)
k_lp (KP p)
{
  __shared__ float red_f[33];
  __shared__ double red_d[33];
  __shared__ int red_i[33];
  __shared__ Best red_b[33];
  State *st = p.st;
  const int tid = threadIdx.x, base = blockIdx.x * EPB;
  float x[EPT], mb = -INFINITY;
  bool ok[EPT];
  int nan = 0;
  double s = 0.0;
  Best prev = { -INFINITY, -1 };

  bln_pdl_wait ();
#pragma unroll
  for (int k = 0; k < EPT; k++)
    {
      int i = base + k * TPB + tid;

      ok[k] = i < p.V;
      x[k] = ok[k] ? p.raw[i] : 0.f;
      if (ok[k] && isnan (x[k]))
        {
          nan = 1;
          ok[k] = false;
        }
      else if (ok[k])
        mb = fmaxf (mb, x[k]);
    }
  mb = block_fmax (mb, red_f);
  nan = block_sum (nan, red_i);
  if (isfinite (mb))
#pragma unroll
    for (int k = 0; k < EPT; k++)
      if (ok[k])
        s += exp ((double) x[k] - (double) mb);
  s = block_sum (s, red_d);

  for (int r = 0; r < p.n_top; r++)
    {
      Best b = { -INFINITY, -1 };

#pragma unroll
      for (int k = 0; k < EPT; k++)
        {
          int i = base + k * TPB + tid;

          if (ok[k] && (r == 0 || x[k] < prev.v || (x[k] == prev.v && i > prev.id))
              && better (x[k], i, b.v, b.id))
            {
              b.v = x[k];
              b.id = i;
            }
        }
      b = block_best (b, red_b);
      if (tid == 0)
        {
          p.tparts[blockIdx.x * BLN_SAMPLE_MAX_TOP + r].v = b.v;
          p.tparts[blockIdx.x * BLN_SAMPLE_MAX_TOP + r].id = b.id;
        }
      if (b.id < 0)
        {
          if (tid == 0)
            for (int q = r + 1; q < p.n_top; q++)
              p.tparts[blockIdx.x * BLN_SAMPLE_MAX_TOP + q].id = -1;
          break;
        }
      prev = b;
    }
  if (tid == 0)
    {
      p.parts[blockIdx.x].v = mb;
      p.parts[blockIdx.x].count = nan;
      p.parts[blockIdx.x].d = s;
    }
  if (!last_block (st))
    return;

  {
    const int G = gridDim.x, n_entries = G * p.n_top;
    float M = -INFINITY;
    int anynan = 0;
    double S = 0.0, lse;

    for (int b = tid; b < G; b += TPB)
      {
        M = fmaxf (M, __ldcg (&p.parts[b].v));
        anynan |= __ldcg (&p.parts[b].count);
      }
    M = block_fmax (M, red_f);
    anynan = block_sum (anynan, red_i);
    if (isfinite (M) && anynan == 0)
      for (int b = tid; b < G; b += TPB)
        {
          float pv = __ldcg (&p.parts[b].v);

          if (pv != -INFINITY)
            S += __ldcg (&p.parts[b].d) * exp ((double) pv - (double) M);
        }
    S = block_sum (S, red_d);
    if (!isfinite (M))
      lse = (double) M;
    else if (anynan)
      lse = NAN;
    else
      lse = (double) M + log (S);
    if (tid == 0)
      st->lse = lse;

    prev.v = -INFINITY;
    prev.id = -1;
    for (int r = 0; r < p.n_top; r++)
      {
        Best b = { -INFINITY, -1 };

        for (int e = tid; e < n_entries; e += TPB)
          {
            float v = __ldcg (&p.tparts[(e / p.n_top) * BLN_SAMPLE_MAX_TOP + e % p.n_top].v);
            int i = __ldcg (&p.tparts[(e / p.n_top) * BLN_SAMPLE_MAX_TOP + e % p.n_top].id);

            if (i >= 0 && (r == 0 || v < prev.v || (v == prev.v && i > prev.id))
                && better (v, i, b.v, b.id))
              {
                b.v = v;
                b.id = i;
              }
          }
        b = block_best (b, red_b);
        if (tid == 0)
          {
            p.res->top_id[r] = b.id;
            p.res->top_logprob[r] = b.id >= 0 ? logprob_of (lse, b.v) : -INFINITY;
          }
        if (b.id < 0)
          {
            if (tid == 0)
              for (int q = r + 1; q < p.n_top; q++)
                {
                  p.res->top_id[q] = -1;
                  p.res->top_logprob[q] = -INFINITY;
                }
            break;
          }
        prev = b;
      }
    end_pass (st);
  }
}

/* Greedy: the first largest penalised logit. */
__global__ void __launch_bounds__ (TPB)
k_argmax (KP p)
{
  __shared__ Best red_b[33];
  State *st = p.st;
  const int tid = threadIdx.x, base = blockIdx.x * EPB;
  Best b = { -INFINITY, -1 };

  bln_pdl_wait ();
#pragma unroll
  for (int k = 0; k < EPT; k++)
    {
      int i = base + k * TPB + tid;
      float v;

      if (i >= p.V)
        continue;
      if (p.n_hist > 0 && p.flags[i])
        {
          v = p.work[i];
          p.flags[i] = 0;
        }
      else
        v = p.raw[i];
      if (v > -INFINITY && better (v, i, b.v, b.id))
        {
          b.v = v;
          b.id = i;
        }
    }
  b = block_best (b, red_b);
  if (tid == 0)
    {
      p.parts[blockIdx.x].v = b.v;
      p.parts[blockIdx.x].id = b.id;
    }
  if (!last_block (st))
    return;
  b.v = -INFINITY;
  b.id = -1;
  for (int g = tid; g < (int) gridDim.x; g += TPB)
    {
      float v = __ldcg (&p.parts[g].v);
      int id = __ldcg (&p.parts[g].id);

      if (better (v, id, b.v, b.id))
        {
          b.v = v;
          b.id = id;
        }
    }
  b = block_best (b, red_b);
  if (tid == 0)
    finish (p, b.id >= 0 ? b.id : 0, 1);
  end_pass (st);
}

/* Sampling, first pass: the scaled values into work[], their maximum, how many
 * are usable, and the first radix-select histogram; the last block decides
 * which selections follow (or the answer, when it is already known). */
__global__ void __launch_bounds__ (TPB)
k_prep (KP p)
{
  __shared__ int sh_hist[HIST_BINS];
  __shared__ Best red_b[33];
  __shared__ int red_i[33];
  State *st = p.st;
  const int tid = threadIdx.x, base = blockIdx.x * EPB;
  Best b = { -INFINITY, -1 };
  int cnt = 0;

  bln_pdl_wait ();
  if (blockIdx.x == 0 && tid == 0)
    {
      st->done = 0;
      st->n_cand = 0;
    }
  for (int h = tid; h < HIST_BINS; h += TPB)
    sh_hist[h] = 0;
  __syncthreads ();
#pragma unroll
  for (int k = 0; k < EPT; k++)
    {
      int i = base + k * TPB + tid;
      float v;

      if (i >= p.V)
        continue;
      if (p.n_hist > 0 && p.flags[i])
        {
          v = p.work[i];
          p.flags[i] = 0;
        }
      else
        {
          v = scale (p.raw[i], p.temp);
          p.work[i] = v;
        }
      if (v != -INFINITY)
        {
          cnt++;
          if (better (v, i, b.v, b.id))
            {
              b.v = v;
              b.id = i;
            }
          atomicAdd (&sh_hist[ord_key (v) >> 21], 1);
        }
    }
  b = block_best (b, red_b);
  cnt = block_sum (cnt, red_i);
  __syncthreads ();
  for (int h = tid; h < HIST_BINS; h += TPB)
    if (sh_hist[h] != 0)
      atomicAdd (&st->hist[h], sh_hist[h]);
  if (tid == 0)
    {
      p.parts[blockIdx.x].v = b.v;
      p.parts[blockIdx.x].id = b.id;
      p.parts[blockIdx.x].count = cnt;
    }
  if (!last_block (st))
    return;

  b.v = -INFINITY;
  b.id = -1;
  cnt = 0;
  for (int g = tid; g < (int) gridDim.x; g += TPB)
    {
      Part pt = load_part (&p.parts[g]);

      if (better (pt.v, pt.id, b.v, b.id))
        {
          b.v = pt.v;
          b.id = pt.id;
        }
      cnt += pt.count;
    }
  b = block_best (b, red_b);
  cnt = block_sum (cnt, red_i);
  if (tid == 0)
    {
      const bool sorted = !((double) p.top_p >= 1.0);
      SelSlot s0 = {}, s1 = {};

      st->M = b.v;
      st->best_id = b.id;
      st->n_usable = cnt;
      st->topk_active = 0;
      if (cnt == 0)
        finish (p, 0, 1);           /* nothing usable: the CPU answers id 0 */
      else if (cnt == 1 || (sorted && !((double) p.top_p > 0.0)))
        finish (p, b.id, 1);        /* one candidate, or top_p <= 0: the first */
      else
        {
          const bool topk_on = p.top_k > 0 && p.top_k < cnt;

          st->topk_active = topk_on;
          if (topk_on)
            {
              s0.active = 1;
              s0.rank = p.top_k;
            }
          else if (sorted && cnt > BLN_SAMPLE_CAND)
            {
              s0.active = 1;
              s0.rank = BLN_SAMPLE_CAND;
            }
          if (sorted && topk_on && p.top_k > BLN_SAMPLE_CAND)
            {
              s1.active = 1;
              s1.rank = BLN_SAMPLE_CAND;
            }
        }
      st->sel[0] = s0;
      st->sel[1] = s1;
    }
  select_step (p, 0, 0, red_i);
  end_pass (st);
}

/* One radix-select pass of slot @slot (pass 0 recounts from scratch). */
__global__ void __launch_bounds__ (TPB)
k_sel (KP p, int slot, int pass)
{
  __shared__ int sh_hist[HIST_BINS];
  __shared__ int red_i[33];
  State *st = p.st;
  const int tid = threadIdx.x, base = blockIdx.x * EPB;
  const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
  const unsigned dmask = pass == 2 ? 1023u : 2047u;
  unsigned prefix, mask;

  bln_pdl_wait ();
  if (st->done || !st->sel[slot].active)
    return;
  prefix = st->sel[slot].prefix;
  mask = st->sel[slot].mask;
  for (int h = tid; h < HIST_BINS; h += TPB)
    sh_hist[h] = 0;
  __syncthreads ();
#pragma unroll
  for (int k = 0; k < EPT; k++)
    {
      int i = base + k * TPB + tid;

      if (i < p.V)
        {
          float v = p.work[i];

          if (v != -INFINITY)
            {
              unsigned key = ord_key (v);

              if ((key & mask) == prefix)
                atomicAdd (&sh_hist[(key >> shift) & dmask], 1);
            }
        }
    }
  __syncthreads ();
  for (int h = tid; h < HIST_BINS; h += TPB)
    if (sh_hist[h] != 0)
      atomicAdd (&st->hist[h], sh_hist[h]);
  if (!last_block (st))
    return;
  select_step (p, slot, pass, red_i);
  end_pass (st);
}

/* Whether a scaled value survives top-k and min-p (the id-order path). */
__device__ __forceinline__ bool
survives (float v, const TopK &t, bool minp_on, double M, double min_p, double *e)
{
  if (v == -INFINITY || v < t.floor_v)
    return false;
  *e = exp ((double) v - M);
  return !minp_on || *e >= min_p;
}

/* id-order path, pass 1: the survivors' softmax normaliser and count. */
__global__ void __launch_bounds__ (TPB)
k_mass (KP p)
{
  __shared__ double red_d[33];
  __shared__ int red_i[33];
  State *st = p.st;
  const int tid = threadIdx.x, base = blockIdx.x * EPB;
  double sum = 0.0, M;
  int cnt = 0, first_post = INT_MAX, last = -1;
  TopK t;
  bool minp_on;

  bln_pdl_wait ();
  if (st->done)
    return;
  t = topk_of (st);
  M = (double) st->M;
  minp_on = p.min_p > 0.f && t.n_post > 1;
#pragma unroll
  for (int k = 0; k < EPT; k++)
    {
      int i = base + k * TPB + tid;
      double e;

      if (i >= p.V)
        continue;
      if (survives (p.work[i], t, minp_on, M, (double) p.min_p, &e))
        {
          sum += e;
          cnt++;
          last = max (last, i);
        }
      if (p.work[i] != -INFINITY && p.work[i] >= t.floor_v)
        first_post = min (first_post, i);
    }
  sum = block_sum (sum, red_d);
  cnt = block_sum (cnt, red_i);
  first_post = block_min (first_post, red_i);
  last = block_max (last, red_i);
  if (tid == 0)
    {
      p.parts[blockIdx.x].d = sum;
      p.parts[blockIdx.x].count = cnt;
      p.parts[blockIdx.x].first_id = first_post;
      p.parts[blockIdx.x].last_id = last;
    }
  if (!last_block (st))
    return;

  sum = 0.0;
  cnt = 0;
  first_post = INT_MAX;
  last = -1;
  for (int g = tid; g < (int) gridDim.x; g += TPB)
    {
      Part pt = load_part (&p.parts[g]);

      sum += pt.d;
      cnt += pt.count;
      first_post = min (first_post, pt.first_id);
      last = max (last, pt.last_id);
    }
  sum = block_sum (sum, red_d);
  cnt = block_sum (cnt, red_i);
  first_post = block_min (first_post, red_i);
  last = block_max (last, red_i);
  if (tid == 0)
    {
      /* the CPU draws in the order its quickselect left when top-k cut a set
       * it did not build in id order (sampler.c, apply_top_k) */
      const bool perm = t.on && (p.top_k > p.V / 8 || t.n_post > p.top_k);

      if (cnt == 0)
        {
          /* min_p > 1: the CPU keeps its first candidate */
          if (perm)
            fallback (p);
          else
            finish (p, first_post, 1);
        }
      else if (cnt == 1)
        finish (p, last, 1);
      else if (perm)
        fallback (p);
      else
        {
          st->Z = sum;
          st->n_S = cnt;
          st->last_S = last;
        }
    }
  end_pass (st);
}

/* id-order path, pass 2: the draw. Block sums of the survivors' float
 * probabilities; the last block finds the block where the running sum passes
 * u * total and scans that block in id order. */
__global__ void __launch_bounds__ (TPB)
k_draw (KP p)
{
  __shared__ double red_d[33];
  __shared__ int red_i[33];
  __shared__ double sh_pre;
  State *st = p.st;
  const int tid = threadIdx.x, base = blockIdx.x * EPB;
  double sum = 0.0, M, Z;
  TopK t;
  bool minp_on;

  bln_pdl_wait ();
  if (st->done)
    return;
  t = topk_of (st);
  M = (double) st->M;
  Z = st->Z;
  minp_on = p.min_p > 0.f && t.n_post > 1;
#pragma unroll
  for (int k = 0; k < EPT; k++)
    {
      int i = base + k * TPB + tid;
      double e;

      if (i < p.V && survives (p.work[i], t, minp_on, M, (double) p.min_p, &e))
        sum += (double) (float) (e / Z);
    }
  sum = block_sum (sum, red_d);
  if (tid == 0)
    p.parts[blockIdx.x].d = sum;
  if (!last_block (st))
    return;

  {
    const int G = gridDim.x, chunk = (G + TPB - 1) / TPB;
    const int lo = min (G, tid * chunk), hi = min (G, lo + chunk);
    const int n_S = st->n_S;
    double local = 0.0, total, acc, target, pr[EPT];
    int j = INT_MAX, cand = INT_MAX, last_in = -1, i0;
    bool in[EPT];

    for (int g = lo; g < hi; g++)
      local += __ldcg (&p.parts[g].d);
    acc = block_excl_scan (local, red_d, &total);
    target = p.u * total;
    for (int g = lo; g < hi; g++)
      {
        double d = __ldcg (&p.parts[g].d);

        if (acc + d > target)
          {
            j = g;
            break;
          }
        acc += d;
      }
    {
      int jj = block_min (j, red_i);

      if (j != INT_MAX && j == jj)
        sh_pre = acc;
      j = jj;
    }
    __syncthreads ();
    if (j == INT_MAX)
      {
        if (tid == 0)
          finish (p, st->last_S, n_S);   /* u * total at the very end */
        end_pass (st);
        return;
      }

    /* block j, in id order: thread t holds values 4t .. 4t + 3 */
    local = 0.0;
    i0 = j * EPB + tid * EPT;
#pragma unroll
    for (int k = 0; k < EPT; k++)
      {
        double e;

        in[k] = i0 + k < p.V && survives (p.work[i0 + k], t, minp_on, M, (double) p.min_p, &e);
        pr[k] = in[k] ? (double) (float) (e / Z) : 0.0;
        local += pr[k];
      }
    acc = sh_pre + block_excl_scan (local, red_d, &total);
#pragma unroll
    for (int k = 0; k < EPT; k++)
      if (in[k])
        {
          acc += pr[k];
          if (acc > target && cand == INT_MAX)
            cand = i0 + k;
          last_in = i0 + k;
        }
    cand = block_min (cand, red_i);
    last_in = block_max (last_in, red_i);
    if (tid == 0)
      finish (p, cand != INT_MAX ? cand : last_in, n_S);
    end_pass (st);
  }
}

/* top-p path, pass 1: the normaliser over the top-k set, and the candidates
 * (every usable value >= the collection threshold) appended to cand[]. */
__global__ void __launch_bounds__ (TPB)
k_collect (KP p)
{
  __shared__ double red_d[33];
  State *st = p.st;
  const int tid = threadIdx.x, lane = tid & 31, base = blockIdx.x * EPB;
  double sum = 0.0, M;
  float T;
  TopK t;

  bln_pdl_wait ();
  if (st->done)
    return;
  t = topk_of (st);
  M = (double) st->M;
  T = st->sel[1].active ? st->sel[1].value : st->sel[0].active ? st->sel[0].value : -INFINITY;
#pragma unroll
  for (int k = 0; k < EPT; k++)
    {
      int i = base + k * TPB + tid;
      float v = i < p.V ? p.work[i] : -INFINITY;
      bool take = v != -INFINITY && v >= T;
      unsigned m = __ballot_sync (FULL, take);

      if (v != -INFINITY && v >= t.floor_v)
        sum += exp ((double) v - M);
      if (m != 0)
        {
          int leader = __ffs (m) - 1, at = 0;

          if (lane == leader)
            at = atomicAdd (&st->n_cand, __popc (m));
          at = __shfl_sync (FULL, at, leader);
          if (take)
            {
              int idx = at + __popc (m & ((1u << lane) - 1u));

              if (idx < BLN_SAMPLE_CAND_CAP)
                {
                  p.cand[idx].v = v;
                  p.cand[idx].id = i;
                }
            }
        }
    }
  sum = block_sum (sum, red_d);
  if (tid == 0)
    p.parts[blockIdx.x].d = sum;
  if (!last_block (st))
    return;
  sum = 0.0;
  for (int g = tid; g < (int) gridDim.x; g += TPB)
    sum += __ldcg (&p.parts[g].d);
  sum = block_sum (sum, red_d);
  if (tid == 0)
    st->Z = sum;
  end_pass (st);
}

/* top-p path, pass 2 (one block): sort the candidates by value (ties: smaller
 * id first), then top-p, min-p and the draw as the CPU does them. */
__global__ void __launch_bounds__ (FIN_T)
k_final (KP p)
{
  __shared__ unsigned long long keys[BLN_SAMPLE_CAND_CAP];
  __shared__ double red_d[33];
  __shared__ int red_i[33];
  State *st = p.st;
  const int tid = threadIdx.x;
  int n_c, P, m, n_s, pick;
  double M, e[2], pr[2], total, c0, c1, target;
  bool keep[2];
  TopK t;

  bln_pdl_wait ();
  if (st->done)
    return;
  n_c = st->n_cand;
  t = topk_of (st);
  M = (double) st->M;
  __syncthreads ();
  if (tid == 0)
    st->n_cand = 0;
  if (n_c <= 0 || n_c > BLN_SAMPLE_CAND_CAP)
    {
      if (tid == 0)
        fallback (p);
      return;
    }
  for (P = 32; P < n_c; P <<= 1)
    ;
  for (int i = tid; i < P; i += FIN_T)
    keys[i] = i < n_c ? cand_key (__ldcg (&p.cand[i].v), __ldcg (&p.cand[i].id)) : 0ull;
  __syncthreads ();
  /* bitonic sort, descending */
  for (int k = 2; k <= P; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1)
      {
        for (int i = tid; i < P; i += FIN_T)
          {
            int ixj = i ^ j;

            if (ixj > i)
              {
                unsigned long long a = keys[i], b = keys[ixj];
                bool desc = (i & k) == 0;

                if (desc ? a < b : a > b)
                  {
                    keys[i] = b;
                    keys[ixj] = a;
                  }
              }
          }
        __syncthreads ();
      }

  /* thread t holds sorted candidates 2t and 2t + 1 */
  for (int q = 0; q < 2; q++)
    {
      int i = 2 * tid + q;

      e[q] = i < n_c ? exp ((double) key_float ((unsigned) (keys[i] >> 32)) - M) : 0.0;
    }

  /* top-p: the shortest prefix whose mass reaches top_p of the top-k set's */
  if (t.n_post <= 1)
    m = t.n_post;
  else
    {
      int first = INT_MAX;

      target = (double) p.top_p * st->Z;
      c0 = block_excl_scan (e[0] + e[1], red_d, &total) + e[0];
      c1 = c0 + e[1];
      if (2 * tid < n_c && c0 >= target)
        first = 2 * tid;
      else if (2 * tid + 1 < n_c && c1 >= target)
        first = 2 * tid + 1;
      first = block_min (first, red_i);
      if (first != INT_MAX)
        m = first + 1;
      else if (n_c == t.n_post)
        m = n_c;               /* rounding left the sum short: keep them all */
      else
        {
          if (tid == 0)
            fallback (p);      /* the nucleus is larger than the candidates */
          return;
        }
    }

  /* min-p, then the draw over the survivors in sorted order */
  {
    const bool minp_on = p.min_p > 0.f && m > 1;
    int first = INT_MAX, last_kept;

    for (int q = 0; q < 2; q++)
      keep[q] = 2 * tid + q < m && (!minp_on || e[q] >= (double) p.min_p);
    n_s = block_sum ((int) keep[0] + (int) keep[1], red_i);
    if (n_s == 0)
      {
        keep[0] = tid == 0;   /* the CPU keeps its first candidate */
        keep[1] = false;
        n_s = 1;
      }
    if (n_s == 1)
      {
        pick = block_min (keep[0] ? 2 * tid : keep[1] ? 2 * tid + 1 : INT_MAX, red_i);
        if (tid == 0)
          finish (p, cand_key_id (keys[pick]), 1);
        return;
      }
    {
      double z = block_sum ((keep[0] ? e[0] : 0.0) + (keep[1] ? e[1] : 0.0), red_d);

      for (int q = 0; q < 2; q++)
        pr[q] = keep[q] ? (double) (float) (e[q] / z) : 0.0;
    }
    c0 = block_excl_scan (pr[0] + pr[1], red_d, &total) + pr[0];
    c1 = c0 + pr[1];
    target = p.u * total;
    if (keep[0] && c0 > target)
      first = 2 * tid;
    else if (keep[1] && c1 > target)
      first = 2 * tid + 1;
    first = block_min (first, red_i);
    last_kept = block_max (keep[1] ? 2 * tid + 1 : keep[0] ? 2 * tid : -1, red_i);
    pick = first != INT_MAX ? first : last_kept;
    if (tid == 0)
      finish (p, cand_key_id (keys[pick]), n_s);
  }
}

/* ---------------------------------------------------------------------------
 * Host side
 * ------------------------------------------------------------------------- */

struct Layout {
  size_t st, work, flags, parts, tparts, cand, total;
  int G;
};

static size_t
align256 (size_t n)
{
  return (n + 255) & ~(size_t) 255;
}

static bool
layout (int V, Layout *L)
{
  size_t off = 0;

  if (V < 1 || V > BLN_SAMPLE_MAX_VOCAB)
    return false;
  L->G = (V + EPB - 1) / EPB;
  L->st = off;
  off += align256 (sizeof (State));
  L->work = off;
  off += align256 ((size_t) V * sizeof (float));
  L->flags = off;
  off += align256 ((size_t) V * sizeof (int));
  L->parts = off;
  off += align256 ((size_t) L->G * sizeof (Part));
  L->tparts = off;
  off += align256 ((size_t) L->G * BLN_SAMPLE_MAX_TOP * sizeof (Pair));
  L->cand = off;
  off += align256 ((size_t) BLN_SAMPLE_CAND_CAP * sizeof (Pair));
  L->total = off;
  return true;
}

} /* namespace */

extern "C" size_t
bln_kernels_sample_scratch_bytes (int n_vocab)
{
  Layout L;

  return layout (n_vocab, &L) ? L.total : 0;
}

extern "C" cudaError_t
bln_kernels_sample_reset (void *d_scratch, int n_vocab, cudaStream_t stream)
{
  Layout L;
  cudaError_t e;

  if (d_scratch == nullptr || !layout (n_vocab, &L))
    return cudaErrorInvalidValue;
  e = cudaMemsetAsync ((char *) d_scratch + L.st, 0, sizeof (State), stream);
  if (e != cudaSuccess)
    return e;
  return cudaMemsetAsync ((char *) d_scratch + L.flags, 0, (size_t) n_vocab * sizeof (int),
                          stream);
}

extern "C" cudaError_t
bln_kernels_sample (const float *d_logits, int n_vocab, const int32_t *d_hist, int n_hist,
                    const BlnSampleArgs *args, void *d_scratch, BlnSampleResult *d_result,
                    cudaStream_t stream)
{
  Layout L;
  KP p;
  char *s = (char *) d_scratch;
  cudaError_t e;
  bool sorted;

  if (d_logits == nullptr || args == nullptr || d_scratch == nullptr || d_result == nullptr
      || !layout (n_vocab, &L) || n_hist < 0 || n_hist > n_vocab
      || (n_hist > 0 && d_hist == nullptr) || args->n_top < -1
      || args->n_top > BLN_SAMPLE_MAX_TOP || ((uintptr_t) d_scratch & 255) != 0)
    return cudaErrorInvalidValue;

  p.raw = d_logits;
  p.V = n_vocab;
  p.temp = args->temperature;
  p.top_p = args->top_p;
  p.min_p = args->min_p;
  p.top_k = args->top_k;
  p.rp = args->repetition_penalty;
  p.pres = args->presence_penalty;
  p.freq = args->frequency_penalty;
  p.u = args->u;
  p.n_top = args->n_top;
  p.hist = d_hist;
  p.n_hist = n_hist;
  p.greedy = !(args->temperature > 0.f);
  p.st = (State *) (s + L.st);
  p.work = (float *) (s + L.work);
  p.flags = (int *) (s + L.flags);
  p.parts = (Part *) (s + L.parts);
  p.tparts = (Pair *) (s + L.tparts);
  p.cand = (Pair *) (s + L.cand);
  p.res = d_result;
  sorted = !p.greedy && !((double) args->top_p >= 1.0);

#define LAUNCH(kernel, grid, block, ...)                                                   \
  do                                                                                       \
    {                                                                                      \
      e = bln_launch (kernel, dim3 (grid), dim3 (block), 0, stream, __VA_ARGS__);          \
      if (e != cudaSuccess)                                                                \
        return e;                                                                          \
    }                                                                                      \
  while (0)

  if (n_hist > 0)
    LAUNCH (k_pen, (n_hist + TPB - 1) / TPB, TPB, p);
  if (p.n_top >= 0)
    LAUNCH (k_lp, L.G, TPB, p);
  if (p.greedy)
    {
      LAUNCH (k_argmax, L.G, TPB, p);
      return cudaSuccess;
    }
  LAUNCH (k_prep, L.G, TPB, p);
  if (p.top_k > 0 || sorted)
    {
      LAUNCH (k_sel, L.G, TPB, p, 0, 1);
      LAUNCH (k_sel, L.G, TPB, p, 0, 2);
    }
  if (sorted && p.top_k > BLN_SAMPLE_CAND)
    {
      LAUNCH (k_sel, L.G, TPB, p, 1, 0);
      LAUNCH (k_sel, L.G, TPB, p, 1, 1);
      LAUNCH (k_sel, L.G, TPB, p, 1, 2);
    }
  if (sorted)
    {
      LAUNCH (k_collect, L.G, TPB, p);
      LAUNCH (k_final, 1, FIN_T, p);
    }
  else
    {
      LAUNCH (k_mass, L.G, TPB, p);
      LAUNCH (k_draw, L.G, TPB, p);
    }
#undef LAUNCH
  return cudaSuccess;
}
