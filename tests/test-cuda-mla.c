/* test-cuda-mla.c — the deepseek2 kernels (kernels/mla.h, kernels/moe.h) in
 * the real shapes, against float64 references of their definitions.
 *
 * The tiny golden models (test-cuda-model.c) check the kernels end to end
 * against transformers, but with a latent rank of 32, 4 heads, 8 or 16
 * experts and short prompts; these cases take the shapes of DeepSeek-V2-Lite
 * and V3 (latent 512 + rope 64, 16 and 128 heads, 64 to 256 experts, group
 * limited routing) and contexts of up to 5,000 positions (many sequence
 * splits of the decode kernel), on fresh random inputs:
 *
 *  - the latent store: RMSNorm of the latent, rotation of the positional
 *    key (both pairings), the split of the query; within float32 rounding of
 *    float64 (F16 caches: half-precision rounding, 2^-11 relative);
 *  - absorbed decode attention: softmax (q · [c, k_pe] scale) weighted sums
 *    of the latents, for 1, 3 and 8 tokens at several positions, float32 and
 *    float16 caches (the reference reads the rounded cache), every output
 *    within 1e-4 of the largest reference value (float32 sums of 576
 *    products and of up to 5,000 weights);
 *  - the router: for V2 (softmax, optionally group limited by the best
 *    expert of each group) and V3 (sigmoid + correction bias, groups scored
 *    by their two best, top-k renormalised and scaled), the same experts in
 *    the same order as the definition computed in float64, weights within
 *    1e-5 (random scores are never within float rounding of a tie here);
 *  - the weighted sum of the experts and the row gather.
 * Outputs are poisoned with NaN before each launch. The argument checks run
 * without a GPU; everything else skips cleanly without one.
 */
#include <math.h>
#include <string.h>
#include <glib.h>

#include "quant.h"
#include "cuda/cuda.h"
#include "kernels/mla.h"
#include "kernels/moe.h"
#include "cuda-test-util.h"

static uint64_t rng_state;

static void
rng_seed (void)
{
  /* g_test_rand_int follows --seed, so a failure can be replayed */
  rng_state = ((uint64_t) g_test_rand_int () << 32) ^ (uint64_t) g_test_rand_int ()
              ^ 0x9e3779b97f4a7c15ULL;
}

static uint64_t
rng_next (void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Uniform in [-1, 1). */
static float
rng_float (void)
{
  return (float) ((double) (rng_next () >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void *
dev_alloc (size_t bytes)
{
  void *p = NULL;

  g_assert_cmpint (cudaMalloc (&p, MAX (bytes, 16)), ==, cudaSuccess);
  return p;
}

static void *
dev_upload (const void *host, size_t bytes)
{
  void *p = dev_alloc (bytes);

  g_assert_cmpint (cudaMemcpy (p, host, bytes, cudaMemcpyHostToDevice), ==, cudaSuccess);
  return p;
}

static void
dev_download (void *host, const void *dev, size_t bytes)
{
  g_assert_cmpint (cudaDeviceSynchronize (), ==, cudaSuccess);
  g_assert_cmpint (cudaMemcpy (host, dev, bytes, cudaMemcpyDeviceToHost), ==, cudaSuccess);
}

/* Fills @n floats of device memory with NaN. */
static void
poison (void *dev, size_t n)
{
  g_assert_cmpint (cudaMemset (dev, 0xff, n * sizeof (float)), ==, cudaSuccess);
}

/* ---------------------------------------------------------------------- */
/* arguments (no GPU needed)                                               */

static void
test_arguments (void)
{
  float f[16] __attribute__ ((aligned (16))) = { 0 };
  int pos = 0;
  int32_t ids[4] = { 0 };
  BlnMoeRouting rt = { 8, 2, 1, 1, 0, 0, 1.0f };

  /* a latent rank past BLN_MLA_MAX_RANK, an odd rope width, a row past
   * BLN_MLA_MAX_ROW, NULL pointers, no tokens */
  g_assert_cmpint (bln_mla_store (f, 1024 + 64, f, 4096, 1, &pos, 1, 1024, 64, 8, f, 1e-6f, f,
                                  1.0f, 0, f, 0, f, f, 0), ==, cudaErrorInvalidValue);
  g_assert_cmpint (bln_mla_store (f, 40, f, 400, 1, &pos, 1, 32, 7, 8, f, 1e-6f, f, 1.0f, 0, f,
                                  0, f, f, 0), ==, cudaErrorInvalidValue);
  g_assert_cmpint (bln_mla_store (NULL, 40, f, 400, 1, &pos, 1, 32, 8, 8, f, 1e-6f, f, 1.0f, 0,
                                  f, 0, f, f, 0), ==, cudaErrorInvalidValue);
  g_assert_cmpint (bln_mla_store (f, 40, f, 400, 0, &pos, 1, 32, 8, 8, f, 1e-6f, f, 1.0f, 0, f,
                                  0, f, f, 0), ==, cudaErrorInvalidValue);
  g_assert_cmpint (bln_mla_decode (f, 1, &pos, 1, 512, 200, 1.0f, f, 0, f, f, 0), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpint (bln_mla_decode (f, 9, &pos, 1, 32, 8, 1.0f, f, 0, f, f, 0), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpint (bln_mla_decode (f, 1, &pos, 1, 32, 8, 1.0f, NULL, 0, f, f, 0), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpuint (bln_mla_decode_scratch (0, 16, 512), ==, 0);
  g_assert_cmpuint (bln_mla_decode_scratch (8, 16, 512), >=,
                    bln_mla_decode_scratch (1, 16, 512) / 8);

  g_assert_cmpint (bln_moe_route (f, 1, NULL, NULL, ids, f, 0), ==, cudaErrorInvalidValue);
  rt.n_expert = BLN_MOE_MAX_EXPERTS + 1;
  g_assert_cmpint (bln_moe_route (f, 1, NULL, &rt, ids, f, 0), ==, cudaErrorInvalidValue);
  rt.n_expert = 8;
  rt.n_used = 9;
  g_assert_cmpint (bln_moe_route (f, 1, NULL, &rt, ids, f, 0), ==, cudaErrorInvalidValue);
  /* groups that do not divide the experts; too few kept groups for k */
  rt.n_used = 2;
  rt.n_groups = 3;
  g_assert_cmpint (bln_moe_route (f, 1, NULL, &rt, ids, f, 0), ==, cudaErrorInvalidValue);
  rt.n_used = 4;
  rt.n_groups = 4;
  rt.n_groups_used = 1;
  g_assert_cmpint (bln_moe_route (f, 1, NULL, &rt, ids, f, 0), ==, cudaErrorInvalidValue);
  g_assert_cmpint (bln_moe_combine (f, 4, 1, 2, f, 2, NULL, f, 0), ==, cudaErrorInvalidValue);
  g_assert_cmpint (bln_moe_gather (f, 4, NULL, 1, f, 0), ==, cudaErrorInvalidValue);
}

/* ---------------------------------------------------------------------- */
/* the latent store                                                        */

static void
rope_ref (const float *in, double *out, int dr, int pos, const float *inv_freq, float af,
          int neox)
{
  int half = dr / 2, i;

  for (i = 0; i < half; i++)
    {
      int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
      double th = (double) ((float) pos * inv_freq[i]);
      double c = cos (th) * af, s = sin (th) * af;
      out[a] = in[a] * c - in[b] * s;
      out[b] = in[a] * s + in[b] * c;
    }
}

typedef struct {
  int H, r, dr, nope, n_tok, pos0, neox, kv_f16;
} StoreCase;

static void
test_store (gconstpointer data)
{
  const StoreCase *sc = data;
  int H = sc->H, r = sc->r, dr = sc->dr, nope = sc->nope, n = sc->n_tok, W = r + dr;
  int dk = nope + dr, n_ctx = sc->pos0 + n, i, t, h;
  size_t es = sc->kv_f16 ? 2 : 4;
  g_autofree float *kva = g_new (float, (size_t) n * W);
  g_autofree float *q = g_new (float, (size_t) n * H * dk);
  g_autofree float *w = g_new (float, r);
  g_autofree float *inv = g_new (float, dr / 2);
  g_autofree float *qn = g_new (float, (size_t) n * H * nope);
  g_autofree float *qc = g_new (float, (size_t) n * H * W);
  g_autofree uint8_t *cache = g_malloc ((size_t) n_ctx * W * es);
  g_autofree double *rot = g_new (double, dr);
  void *d_kva, *d_q, *d_w, *d_inv, *d_qn, *d_qc, *d_cache, *d_pos;
  const float eps = 1e-6f, af = 1.1f;
  double worst_c = 0, worst_q = 0;

  if (!need_gpu ())
    return;
  rng_seed ();
  for (i = 0; i < n * W; i++)
    kva[i] = rng_float () * 3.0f;
  for (i = 0; i < n * H * dk; i++)
    q[i] = rng_float ();
  for (i = 0; i < r; i++)
    w[i] = 0.5f + rng_float () * 0.25f;
  for (i = 0; i < dr / 2; i++)
    inv[i] = powf (10000.0f, -2.0f * i / dr);
  d_kva = dev_upload (kva, (size_t) n * W * 4);
  d_q = dev_upload (q, (size_t) n * H * dk * 4);
  d_w = dev_upload (w, (size_t) r * 4);
  d_inv = dev_upload (inv, (size_t) dr / 2 * 4);
  d_pos = dev_upload (&sc->pos0, sizeof (int));
  d_qn = dev_alloc ((size_t) n * H * nope * 4);
  d_qc = dev_alloc ((size_t) n * H * W * 4);
  d_cache = dev_alloc ((size_t) n_ctx * W * es);
  poison (d_qn, (size_t) n * H * nope);
  poison (d_qc, (size_t) n * H * W);
  g_assert_cmpint (cudaMemset (d_cache, 0xff, (size_t) n_ctx * W * es), ==, cudaSuccess);

  g_assert_cmpint (bln_mla_store (d_kva, W, d_q, H * dk, n, d_pos, H, r, dr, nope, d_w, eps,
                                  d_inv, af, sc->neox, d_cache, sc->kv_f16, d_qn, d_qc, 0), ==,
                   cudaSuccess);
  dev_download (qn, d_qn, (size_t) n * H * nope * 4);
  dev_download (qc, d_qc, (size_t) n * H * W * 4);
  dev_download (cache, d_cache, (size_t) n_ctx * W * es);

  for (t = 0; t < n; t++)
    {
      const float *row = kva + (size_t) t * W;
      int pos = sc->pos0 + t;
      double ss = 0, inv_rms;

      for (i = 0; i < r; i++)
        ss += (double) row[i] * row[i];
      inv_rms = 1.0 / sqrt (ss / r + eps);
      rope_ref (row + r, rot, dr, pos, inv, af, sc->neox);
      for (i = 0; i < W; i++)
        {
          double want = i < r ? w[i] * row[i] * inv_rms : rot[i - r];
          size_t at = (size_t) pos * W + i;
          double got = sc->kv_f16 ? bln_half_to_float (((const bln_half *) cache)[at])
                                  : ((const float *) cache)[at];
          worst_c = MAX (worst_c, fabs (got - want) / MAX (fabs (want), 1e-2));
        }
      for (h = 0; h < H; h++)
        {
          const float *qh = q + ((size_t) t * H + h) * dk;

          for (i = 0; i < nope; i++)
            g_assert_cmpfloat (qn[((size_t) t * H + h) * nope + i], ==, qh[i]);
          rope_ref (qh + nope, rot, dr, pos, inv, af, sc->neox);
          for (i = 0; i < dr; i++)
            worst_q = MAX (worst_q, fabs (qc[((size_t) t * H + h) * W + r + i] - rot[i])
                                    / MAX (fabs (rot[i]), 1e-2));
        }
    }
  g_test_message ("store H %d r %d dr %d n %d pos %d neox %d f16 %d: cache %.3g, q_pe %.3g",
                  H, r, dr, n, sc->pos0, sc->neox, sc->kv_f16, worst_c, worst_q);
  /* float32 angles (pos * inv_freq), as the CPU backend computes them */
  g_assert_cmpfloat (worst_c, <=, sc->kv_f16 ? 1e-3 : 1e-4);
  g_assert_cmpfloat (worst_q, <=, 1e-4);
  cudaFree (d_kva);
  cudaFree (d_q);
  cudaFree (d_w);
  cudaFree (d_inv);
  cudaFree (d_pos);
  cudaFree (d_qn);
  cudaFree (d_qc);
  cudaFree (d_cache);
}

/* ---------------------------------------------------------------------- */
/* decode attention                                                        */

typedef struct {
  int H, r, dr, n_tok, pos0, kv_f16;
} DecodeCase;

static void
test_decode (gconstpointer data)
{
  const DecodeCase *dc = data;
  int H = dc->H, r = dc->r, dr = dc->dr, n = dc->n_tok, W = r + dr, len_max = dc->pos0 + n;
  size_t es = dc->kv_f16 ? 2 : 4, i;
  g_autofree float *q = g_new (float, (size_t) n * H * W);
  g_autofree float *cf = g_new (float, (size_t) len_max * W);   /* as the GPU reads it */
  g_autofree uint8_t *cache = g_malloc ((size_t) len_max * W * es);
  g_autofree float *out = g_new (float, (size_t) n * H * r);
  g_autofree double *sc = g_new (double, len_max);
  g_autofree double *ref = g_new (double, r);
  void *d_q, *d_cache, *d_pos, *d_scratch, *d_out;
  const float scale = 0.0722f;
  double worst = 0, top = 0;
  int t, h, j, k;

  if (!need_gpu ())
    return;
  rng_seed ();
  for (i = 0; i < (size_t) n * H * W; i++)
    q[i] = rng_float () * 2.0f;
  for (i = 0; i < (size_t) len_max * W; i++)
    {
      float v = rng_float () * 2.0f;
      if (dc->kv_f16)
        {
          ((bln_half *) cache)[i] = bln_float_to_half (v);
          cf[i] = bln_half_to_float (((bln_half *) cache)[i]);
        }
      else
        ((float *) cache)[i] = cf[i] = v;
    }
  d_q = dev_upload (q, (size_t) n * H * W * 4);
  d_cache = dev_upload (cache, (size_t) len_max * W * es);
  d_pos = dev_upload (&dc->pos0, sizeof (int));
  d_scratch = dev_alloc (bln_mla_decode_scratch (n, H, r));
  d_out = dev_alloc ((size_t) n * H * r * 4);
  poison (d_out, (size_t) n * H * r);
  g_assert_cmpint (bln_mla_decode (d_q, n, d_pos, H, r, dr, scale, d_cache, dc->kv_f16, d_scratch,
                                   d_out, 0), ==, cudaSuccess);
  dev_download (out, d_out, (size_t) n * H * r * 4);

  for (t = 0; t < n; t++)
    for (h = 0; h < H; h++)
      {
        const float *qh = q + ((size_t) t * H + h) * W;
        const float *o = out + ((size_t) t * H + h) * r;
        int len = dc->pos0 + t + 1;
        double mx = -INFINITY, sum = 0;

        for (j = 0; j < len; j++)
          {
            double s = 0;
            for (k = 0; k < W; k++)
              s += (double) qh[k] * cf[(size_t) j * W + k];
            sc[j] = s * scale;
            mx = MAX (mx, sc[j]);
          }
        for (j = 0; j < len; j++)
          {
            sc[j] = exp (sc[j] - mx);
            sum += sc[j];
          }
        memset (ref, 0, r * sizeof (double));
        for (j = 0; j < len; j++)
          for (k = 0; k < r; k++)
            ref[k] += sc[j] / sum * cf[(size_t) j * W + k];
        for (k = 0; k < r; k++)
          {
            g_assert_true (isfinite (o[k]));
            top = MAX (top, fabs (ref[k]));
            worst = MAX (worst, fabs (o[k] - ref[k]));
          }
      }
  g_test_message ("decode H %d r %d n %d pos %d f16 %d: max err %.3g of max %.3g", H, r, n,
                  dc->pos0, dc->kv_f16, worst, top);
  g_assert_cmpfloat (worst, <=, 1e-4 * MAX (top, 1e-3));
  cudaFree (d_q);
  cudaFree (d_cache);
  cudaFree (d_pos);
  cudaFree (d_scratch);
  cudaFree (d_out);
}

/* ---------------------------------------------------------------------- */
/* routing                                                                 */

typedef struct {
  const char *name;
  BlnMoeRouting rt;
  gboolean bias;
} RouteCase;

/* The definition in float64: scores, selection scores, kept groups, the
 * top k (ties to the lower id), their weights. */
static void
route_ref (const BlnMoeRouting *rt, const float *lg, const float *bias, int *idx, double *wt)
{
  int E = rt->n_expert, K = rt->n_used, G = rt->n_groups, per = E / G, e, g, k;
  double prob[BLN_MOE_MAX_EXPERTS], sel[BLN_MOE_MAX_EXPERTS], gs[BLN_MOE_MAX_EXPERTS];
  gboolean keep[BLN_MOE_MAX_EXPERTS] = { FALSE }, taken[BLN_MOE_MAX_EXPERTS] = { FALSE };
  double mx = -INFINITY, sum = 0;

  for (e = 0; e < E; e++)
    mx = MAX (mx, lg[e]);
  for (e = 0; e < E; e++)
    {
      prob[e] = rt->sigmoid ? 1.0 / (1.0 + exp (-(double) lg[e])) : exp ((double) lg[e] - mx);
      sum += prob[e];
    }
  for (e = 0; e < E; e++)
    {
      if (!rt->sigmoid)
        prob[e] /= sum;
      sel[e] = prob[e] + (bias ? bias[e] : 0.0);
    }
  if (G > 1 && rt->n_groups_used < G)
    {
      for (g = 0; g < G; g++)
        {
          double b1 = -INFINITY, b2 = -INFINITY;
          for (e = g * per; e < (g + 1) * per; e++)
            if (sel[e] > b1)
              b2 = b1, b1 = sel[e];
            else if (sel[e] > b2)
              b2 = sel[e];
          gs[g] = rt->sigmoid && per > 1 ? b1 + b2 : b1;
        }
      for (k = 0; k < rt->n_groups_used; k++)
        {
          int best = -1;
          for (g = 0; g < G; g++)
            if (!keep[g] && (best < 0 || gs[g] > gs[best]))
              best = g;
          keep[best] = TRUE;
        }
      for (e = 0; e < E; e++)
        if (!keep[e / per])
          sel[e] = -INFINITY;
    }
  sum = 0;
  for (k = 0; k < K; k++)
    {
      int best = -1;
      for (e = 0; e < E; e++)
        if (!taken[e] && (best < 0 || sel[e] > sel[best]))
          best = e;
      taken[best] = TRUE;
      idx[k] = best;
      wt[k] = prob[best];
      sum += wt[k];
    }
  for (k = 0; k < K; k++)
    wt[k] = (rt->norm ? wt[k] / sum : wt[k]) * rt->scale;
}

static void
test_route (gconstpointer data)
{
  const RouteCase *rc = data;
  const BlnMoeRouting *rt = &rc->rt;
  const int n = 300;
  int E = rt->n_expert, K = rt->n_used, t, k, i;
  g_autofree float *lg = g_new (float, (size_t) n * E);
  g_autofree float *bias = g_new (float, E);
  g_autofree int32_t *ids = g_new (int32_t, (size_t) n * K);
  g_autofree float *w = g_new (float, (size_t) n * K);
  int ref_idx[BLN_MOE_MAX_EXPERTS];
  double ref_w[BLN_MOE_MAX_EXPERTS], worst = 0;
  void *d_lg, *d_bias, *d_ids, *d_w;

  if (!need_gpu ())
    return;
  rng_seed ();
  for (i = 0; i < n * E; i++)
    lg[i] = rng_float () * 4.0f;
  for (i = 0; i < E; i++)
    bias[i] = rng_float () * 0.1f;
  d_lg = dev_upload (lg, (size_t) n * E * 4);
  d_bias = dev_upload (bias, (size_t) E * 4);
  d_ids = dev_alloc ((size_t) n * K * 4);
  d_w = dev_alloc ((size_t) n * K * 4);
  poison (d_w, (size_t) n * K);
  g_assert_cmpint (cudaMemset (d_ids, 0xff, (size_t) n * K * 4), ==, cudaSuccess);
  g_assert_cmpint (bln_moe_route (d_lg, n, rc->bias ? d_bias : NULL, rt, d_ids, d_w, 0), ==,
                   cudaSuccess);
  dev_download (ids, d_ids, (size_t) n * K * 4);
  dev_download (w, d_w, (size_t) n * K * 4);
  for (t = 0; t < n; t++)
    {
      route_ref (rt, lg + (size_t) t * E, rc->bias ? bias : NULL, ref_idx, ref_w);
      for (k = 0; k < K; k++)
        {
          g_assert_cmpint (ids[(size_t) t * K + k], ==, ref_idx[k]);
          worst = MAX (worst, fabs (w[(size_t) t * K + k] - ref_w[k]) / MAX (fabs (ref_w[k]),
                                                                             1e-3));
        }
    }
  g_test_message ("route %s: weights within %.3g", rc->name, worst);
  g_assert_cmpfloat (worst, <=, 1e-5);
  cudaFree (d_lg);
  cudaFree (d_bias);
  cudaFree (d_ids);
  cudaFree (d_w);
}

/* combine (with and without a row map) and gather against host sums */
static void
test_combine (void)
{
  const int d = 2048, n = 5, K = 6, ldy = d + 4;
  g_autofree float *x = g_new (float, (size_t) n * d);
  g_autofree float *y = g_new (float, (size_t) n * K * ldy);
  g_autofree float *w = g_new (float, (size_t) n * K);
  g_autofree float *out = g_new (float, (size_t) n * d);
  g_autofree float *g = g_new (float, (size_t) n * K * d);
  g_autofree int32_t *rows = g_new (int32_t, (size_t) n * K);
  void *d_x, *d_y, *d_w, *d_rows, *d_g;
  double worst = 0;
  int t, i, k, pass;

  if (!need_gpu ())
    return;
  rng_seed ();
  for (i = 0; i < n * d; i++)
    x[i] = rng_float ();
  for (i = 0; i < n * K * ldy; i++)
    y[i] = rng_float ();
  for (i = 0; i < n * K; i++)
    {
      w[i] = rng_float ();
      rows[i] = (i * 7 + 3) % (n * K);   /* a permutation: 7 is prime to 30 */
    }
  d_y = dev_upload (y, (size_t) n * K * ldy * 4);
  d_w = dev_upload (w, (size_t) n * K * 4);
  d_rows = dev_upload (rows, (size_t) n * K * 4);
  for (pass = 0; pass < 2; pass++)
    {
      d_x = dev_upload (x, (size_t) n * d * 4);
      g_assert_cmpint (bln_moe_combine (d_x, d, n, K, d_y, ldy, pass ? d_rows : NULL, d_w, 0), ==,
                       cudaSuccess);
      dev_download (out, d_x, (size_t) n * d * 4);
      for (t = 0; t < n; t++)
        for (i = 0; i < d; i++)
          {
            double want = x[(size_t) t * d + i];
            for (k = 0; k < K; k++)
              {
                int s = t * K + k, row = pass ? rows[s] : s;
                want += (double) w[s] * y[(size_t) row * ldy + i];
              }
            worst = MAX (worst, fabs (out[(size_t) t * d + i] - want));
          }
      cudaFree (d_x);
    }
  g_assert_cmpfloat (worst, <=, 1e-5);

  d_x = dev_upload (x, (size_t) n * d * 4);
  d_g = dev_alloc ((size_t) n * K * d * 4);
  poison (d_g, (size_t) n * K * d);
  for (i = 0; i < n * K; i++)
    rows[i] = i % n;
  g_assert_cmpint (cudaMemcpy (d_rows, rows, (size_t) n * K * 4, cudaMemcpyHostToDevice), ==,
                   cudaSuccess);
  g_assert_cmpint (bln_moe_gather (d_x, d, d_rows, n * K, d_g, 0), ==, cudaSuccess);
  dev_download (g, d_g, (size_t) n * K * d * 4);
  for (i = 0; i < n * K; i++)
    g_assert_cmpint (memcmp (g + (size_t) i * d, x + (size_t) rows[i] * d, (size_t) d * 4), ==, 0);
  cudaFree (d_x);
  cudaFree (d_y);
  cudaFree (d_w);
  cudaFree (d_rows);
  cudaFree (d_g);
}

static const StoreCase store_cases[] = {
  { 16, 512, 64, 128, 1, 0, 0, 0 },
  { 16, 512, 64, 128, 8, 4000, 0, 1 },
  { 128, 512, 64, 128, 3, 77, 1, 0 },
  { 4, 32, 8, 16, 5, 2, 0, 0 },
};

static const DecodeCase decode_cases[] = {
  { 16, 512, 64, 1, 0, 0 },
  { 16, 512, 64, 1, 63, 1 },
  { 16, 512, 64, 3, 64, 0 },
  { 16, 512, 64, 8, 1000, 1 },
  { 16, 512, 64, 1, 4999, 0 },
  { 128, 512, 64, 8, 300, 1 },
  { 128, 512, 64, 1, 2047, 0 },
  { 20, 512, 64, 2, 129, 0 },     /* a partial head group */
  { 4, 32, 8, 8, 200, 0 },        /* the tiny golden models' shape */
};

static const RouteCase route_cases[] = {
  /* V2-Lite: softmax, top 6 of 64 */
  { "v2-lite", { 64, 6, 1, 1, 0, 0, 1.0f }, FALSE },
  /* V2: softmax, best 3 of 8 groups (group score: its best expert), scaled */
  { "v2", { 160, 6, 8, 3, 0, 0, 16.0f }, FALSE },
  /* V3: sigmoid + bias, best 4 of 8 groups by their two best, renormalised */
  { "v3", { 256, 8, 8, 4, 1, 1, 2.5f }, TRUE },
  /* the tiny V3 golden model's shape */
  { "v3-tiny", { 16, 4, 4, 2, 1, 1, 2.5f }, TRUE },
  /* more experts than a warp has lanes times 16, groups over 32 */
  { "wide", { 512, 8, 64, 6, 1, 0, 1.0f }, TRUE },
};

int
main (int argc, char **argv)
{
  guint i;

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/CudaMla/arguments", test_arguments);
  for (i = 0; i < G_N_ELEMENTS (store_cases); i++)
    {
      const StoreCase *c = &store_cases[i];
      g_autofree char *p = g_strdup_printf ("/Baleen/CudaMla/store/H%d-r%d-n%d-pos%d-%s-%s",
                                            c->H, c->r, c->n_tok, c->pos0,
                                            c->neox ? "neox" : "pairs", c->kv_f16 ? "f16" : "f32");
      g_test_add_data_func (p, c, test_store);
    }
  for (i = 0; i < G_N_ELEMENTS (decode_cases); i++)
    {
      const DecodeCase *c = &decode_cases[i];
      g_autofree char *p = g_strdup_printf ("/Baleen/CudaMla/decode/H%d-r%d-n%d-pos%d-%s", c->H,
                                            c->r, c->n_tok, c->pos0, c->kv_f16 ? "f16" : "f32");
      g_test_add_data_func (p, c, test_decode);
    }
  for (i = 0; i < G_N_ELEMENTS (route_cases); i++)
    {
      g_autofree char *p = g_strdup_printf ("/Baleen/CudaMoe/route/%s", route_cases[i].name);
      g_test_add_data_func (p, &route_cases[i], test_route);
    }
  g_test_add_func ("/Baleen/CudaMoe/combine-gather", test_combine);
  return g_test_run ();
}
