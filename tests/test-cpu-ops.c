/* test-cpu-ops.c — the CPU backend's pool, matmul kernels and float helpers.
 *
 * The matmul of every weight type is checked, on both the SIMD and the
 * portable kernel tables, against float64 sums computed here from
 * bln_dequantize_row (engine/quant.c, itself checked bit-exact against the
 * gguf Python package by test-quant):
 *
 *  - against the activations rounded through the same 8-bit quantisation the
 *    matmul uses: the integer paths must then agree to float rounding, within
 *    1e-5 of sum_k |w_k x_k| (the scale of the rounding errors of the sum);
 *  - against the unquantised activations, within the error the 8-bit
 *    activations bring: each x_k moves by at most half a step, amax/254 of
 *    its block, so |error| <= sum_k |w_k| amax(block of k) / 254 (+ the
 *    rounding tolerance above).
 *
 * Float weights (F32, F16, BF16) see the activations unchanged and must agree
 * within 1e-5 of sum_k |w_k x_k|.
 *
 * `test-cpu-ops --bench` skips the tests and prints the weight streaming
 * rate of 4096 x 4096 matrix-vector products with two threads.
 */
#include <math.h>
#include <time.h>
#include <string.h>

#include "bln-error.h"
#include "quant.h"
#include "tensor.h"
#include "cpu/cpu.h"
#include "cpu/vecdot.h"

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng_next (void)
{
  uint64_t x = rng_state;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  rng_state = x;
  return x;
}

/* Uniform in [-1, 1). */
static float
rng_float (void)
{
  return (float) ((double) (rng_next () >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Roughly normal, with a few larger values: what activations look like. */
static float
rng_act (void)
{
  float s = rng_float () + rng_float () + rng_float ();

  if ((rng_next () & 63) == 0)
    s *= 8.0f;
  return s;
}

static void
fill_weights (int type, int64_t n_in, int64_t n_out, uint8_t *dst, size_t row_bytes)
{
  g_autofree float *row = g_new (float, n_in);
  const BlnTypeInfo *info = bln_type_info (type);

  for (int64_t r = 0; r < n_out; r++)
    {
      uint8_t *p = dst + r * row_bytes;

      for (int64_t k = 0; k < n_in; k++)
        row[k] = rng_float () * 0.1f + (k % 7 == 0 ? 0.02f : 0.0f);
      if (bln_quantize_row (type, row, p, n_in))
        continue;
      /* No reference quantiser (Q2_K, Q3_K, Q5_K): random blocks with sane
       * scales. Every bit pattern of the other fields is a valid block. */
      for (size_t i = 0; i < row_bytes; i++)
        p[i] = (uint8_t) rng_next ();
      for (int64_t b = 0; b < n_in / info->block_size; b++)
        {
          uint8_t *blk = p + b * info->type_size;
          bln_half d = bln_float_to_half (0.001f + 0.01f * fabsf (rng_float ()));
          bln_half dm = bln_float_to_half (0.001f + 0.01f * fabsf (rng_float ()));

          switch (type)
            {
            case BLN_TYPE_Q2_K:
              memcpy (blk + 80, &d, 2);
              memcpy (blk + 82, &dm, 2);
              break;
            case BLN_TYPE_Q3_K:
              memcpy (blk + 108, &d, 2);
              break;
            case BLN_TYPE_Q5_K:
              memcpy (blk, &d, 2);
              memcpy (blk + 2, &dm, 2);
              break;
            default:
              g_assert_not_reached ();
            }
        }
    }
}

/* The activation row as the matmul quantises it, back in double. */
static void
act_roundtrip (const BlnCpuKernels *k, int wtype, const float *x, int64_t n, double *out,
               double *step)
{
  BlnActKind kind = bln_cpu_act_kind (wtype);
  g_autofree void *buf = g_malloc (bln_cpu_act_row_bytes (wtype, n));

  if (kind == BLN_ACT_F32)
    {
      for (int64_t i = 0; i < n; i++)
        {
          out[i] = x[i];
          step[i] = 0.0;
        }
    }
  else if (kind == BLN_ACT_Q8)
    {
      const BlnActQ8 *b = buf;
      k->quant_q8 (x, buf, n);
      for (int64_t i = 0; i < n; i++)
        {
          out[i] = (double) b[i / 32].d * b[i / 32].qs[i % 32];
          step[i] = b[i / 32].d;
        }
      for (int64_t j = 0; j < n / 32; j++)
        {
          int s = 0;
          for (int i = 0; i < 32; i++)
            s += b[j].qs[i];
          g_assert_cmpint (s, ==, b[j].sum);
        }
    }
  else
    {
      const BlnBlockQ8_K *b = buf;
      k->quant_q8k (x, buf, n);
      for (int64_t i = 0; i < n; i++)
        {
          out[i] = (double) b[i / 256].d * b[i / 256].qs[i % 256];
          step[i] = b[i / 256].d;
        }
      for (int64_t j = 0; j < n / 256; j++)
        for (int g = 0; g < 16; g++)
          {
            int s = 0;
            for (int i = 0; i < 16; i++)
              s += b[j].qs[g * 16 + i];
            g_assert_cmpint (s, ==, b[j].bsums[g]);
          }
    }
}

/* ---------------------------------------------------------------------------
 * Pool
 * ------------------------------------------------------------------------- */

typedef struct {
  int counts[16];
  int nth_seen;
} PoolCtx;

static void
pool_fn (void *data, int ith, int nth)
{
  PoolCtx *c = data;

  c->counts[ith]++;
  if (ith == 0)
    c->nth_seen = nth;
}

static void
test_pool (void)
{
  int sizes[] = { 1, 2, 3, 8 };

  for (guint s = 0; s < G_N_ELEMENTS (sizes); s++)
    {
      g_autoptr (GError) error = NULL;
      BlnPool *pool = bln_pool_new (sizes[s], &error);
      PoolCtx c = { 0 };

      g_assert_no_error (error);
      g_assert_cmpint (bln_pool_n_threads (pool), ==, sizes[s]);
      for (int i = 0; i < 2000; i++)
        {
          bln_pool_run (pool, pool_fn, &c);
          /* every share ran exactly once per run, and finished before return */
          for (int t = 0; t < sizes[s]; t++)
            g_assert_cmpint (c.counts[t], ==, i + 1);
        }
      g_assert_cmpint (c.nth_seen, ==, sizes[s]);
      /* let the workers fall asleep, then wake them again */
      g_usleep (20000);
      bln_pool_run (pool, pool_fn, &c);
      for (int t = 0; t < sizes[s]; t++)
        g_assert_cmpint (c.counts[t], ==, 2001);
      bln_pool_free (pool);
    }
}

/* ---------------------------------------------------------------------------
 * Matmul
 * ------------------------------------------------------------------------- */

typedef struct {
  int type;
  const int *n_ins;
  int n_n_in;
} TypeCase;

static void
check_matmul (BlnPool *pool, int type, int64_t n_in, int64_t n_out, int n_tok, gboolean scalar)
{
  g_autoptr (GError) error = NULL;
  const BlnCpuKernels *k;
  size_t row_bytes = 0;
  g_autofree uint8_t *wdata = NULL;
  g_autofree float *wf = NULL, *x = NULL, *y = NULL;
  g_autofree double *xq = NULL, *step = NULL;
  BlnTensor w = { 0 };
  double max_rel = 0.0;

  bln_cpu_force_scalar (scalar);
  k = bln_cpu_kernels ();
  g_assert_cmpstr (k->name, ==, scalar ? "scalar" : bln_cpu_simd_level ());
  g_assert_true (bln_type_row_bytes (type, n_in, &row_bytes));
  wdata = g_malloc (row_bytes * n_out);
  fill_weights (type, n_in, n_out, wdata, row_bytes);
  wf = g_new (float, n_in * n_out);
  for (int64_t r = 0; r < n_out; r++)
    g_assert_true (bln_dequantize_row (type, wdata + r * row_bytes, wf + r * n_in, n_in));

  x = g_new (float, n_in * n_tok);
  for (int64_t i = 0; i < n_in * n_tok; i++)
    x[i] = rng_act ();
  y = g_new (float, n_out * n_tok);
  for (int64_t i = 0; i < n_out * n_tok; i++)
    y[i] = NAN;

  w.name = (char *) "w";
  w.type = type;
  w.n_dims = 2;
  w.ne[0] = n_in;
  w.ne[1] = n_out;
  w.ne[2] = w.ne[3] = 1;
  w.data = wdata;
  w.nbytes = row_bytes * n_out;
  g_assert_true (bln_cpu_matmul (pool, &w, x, n_tok, y, &error));
  g_assert_no_error (error);

  xq = g_new (double, n_in);
  step = g_new (double, n_in);
  for (int t = 0; t < n_tok; t++)
    {
      act_roundtrip (k, type, x + t * n_in, n_in, xq, step);
      for (int64_t r = 0; r < n_out; r++)
        {
          const float *wr = wf + r * n_in;
          double ref_q = 0.0, ref_x = 0.0, mag = 0.0, qbound = 0.0;
          double got = y[t * n_out + r];

          for (int64_t i = 0; i < n_in; i++)
            {
              ref_q += (double) wr[i] * xq[i];
              ref_x += (double) wr[i] * x[t * n_in + i];
              mag += fabs ((double) wr[i] * xq[i]);
              qbound += fabs ((double) wr[i]) * step[i] * 0.5;
            }
          if (!(fabs (got - ref_q) <= 1e-5 * mag + 1e-30))
            g_error ("%s %s n_in %" G_GINT64_FORMAT " n_out %" G_GINT64_FORMAT
                     " n_tok %d: y[%d][%" G_GINT64_FORMAT "] = %.9g, reference %.9g (scale %g)",
                     k->name, bln_type_name (type), n_in, n_out, n_tok, t, r, got, ref_q, mag);
          if (!(fabs (got - ref_x) <= qbound * 1.0001 + 1e-5 * mag + 1e-30))
            g_error ("%s %s: y[%d][%" G_GINT64_FORMAT "] = %.9g, unquantised reference %.9g,"
                     " bound %g", k->name, bln_type_name (type), t, r, got, ref_x, qbound);
          if (mag > 0)
            max_rel = MAX (max_rel, fabs (got - ref_q) / mag);
        }
    }
  g_test_message ("%s %s %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " x %d: max error %.2g",
                  k->name, bln_type_name (type), n_out, n_in, n_tok, max_rel);
  bln_cpu_force_scalar (FALSE);
}

static void
test_matmul_type (gconstpointer data)
{
  const TypeCase *tc = data;
  const int n_outs[] = { 1, 7, 65 };
  const int n_toks[] = { 1, 3, 8, 17 };
  g_autoptr (GError) error = NULL;
  BlnPool *pool = bln_pool_new (3, &error);

  g_assert_no_error (error);
  for (int s = 0; s < 2; s++)
    for (int i = 0; i < tc->n_n_in; i++)
      for (guint o = 0; o < G_N_ELEMENTS (n_outs); o++)
        for (guint t = 0; t < G_N_ELEMENTS (n_toks); t++)
          check_matmul (pool, tc->type, tc->n_ins[i], n_outs[o], n_toks[t], s == 1);
  /* no pool, and a pool of two */
  check_matmul (NULL, tc->type, tc->n_ins[0], 9, 5, FALSE);
  bln_pool_free (pool);
  pool = bln_pool_new (2, &error);
  check_matmul (pool, tc->type, tc->n_ins[tc->n_n_in - 1], 130, 2, FALSE);
  bln_pool_free (pool);
}

/* The two quantisers of each kind must write the same bytes. */
static void
test_quantizers_agree (void)
{
  const BlnCpuKernels *s = bln_cpu_kernels_scalar (), *v = bln_cpu_kernels ();
  const int64_t n = 1024;
  g_autofree float *x = g_new (float, n);
  size_t size = MAX (bln_cpu_act_row_bytes (BLN_TYPE_Q4_K, n),
                     bln_cpu_act_row_bytes (BLN_TYPE_Q4_0, n));
  g_autofree uint8_t *a = g_malloc0 (size);
  g_autofree uint8_t *b = g_malloc0 (size);

  g_test_message ("SIMD kernels in use: %s", bln_cpu_simd_level ());
  for (int64_t i = 0; i < n; i++)
    x[i] = rng_act ();
  for (int i = 0; i < 32; i++)
    x[64 + i] = 0.0f;   /* an all-zero block */
  x[200] = 0.5f;        /* a tie after scaling is possible but not forced */

  s->quant_q8 (x, a, n);
  v->quant_q8 (x, b, n);
  g_assert_cmpmem (a, bln_cpu_act_row_bytes (BLN_TYPE_Q4_0, n), b,
                   bln_cpu_act_row_bytes (BLN_TYPE_Q4_0, n));
  s->quant_q8k (x, a, n);
  v->quant_q8k (x, b, n);
  g_assert_cmpmem (a, bln_cpu_act_row_bytes (BLN_TYPE_Q4_K, n), b,
                   bln_cpu_act_row_bytes (BLN_TYPE_Q4_K, n));
}

static void
test_matmul_errors (void)
{
  g_autoptr (GError) error = NULL;
  uint8_t data[1024] = { 0 };
  float x[256] = { 0 }, y[4];
  BlnTensor w = { .name = (char *) "bad", .type = BLN_TYPE_Q8_K, .n_dims = 2,
                  .ne = { 256, 1, 1, 1 }, .data = data, .nbytes = sizeof data };

  g_assert_false (bln_cpu_matmul (NULL, &w, x, 1, y, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_clear_error (&error);

  /* n_in not a whole number of blocks */
  w.type = BLN_TYPE_Q4_0;
  w.ne[0] = 48;
  g_assert_false (bln_cpu_matmul (NULL, &w, x, 1, y, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  /* more rows than the data holds */
  w.ne[0] = 256;
  w.ne[1] = 8;
  g_assert_false (bln_cpu_matmul (NULL, &w, x, 1, y, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
}

static void
test_get_rows (void)
{
  g_autoptr (GError) error = NULL;
  const int64_t n_in = 256, n_rows = 5;
  size_t rb = 0;
  g_autofree uint8_t *data = NULL;
  float out[3 * 256], ref[256];
  int32_t ids[3] = { 4, 0, 4 };
  BlnTensor w = { .name = (char *) "emb", .type = BLN_TYPE_Q6_K, .n_dims = 2,
                  .ne = { n_in, n_rows, 1, 1 } };

  g_assert_true (bln_type_row_bytes (BLN_TYPE_Q6_K, n_in, &rb));
  data = g_malloc (rb * n_rows);
  fill_weights (BLN_TYPE_Q6_K, n_in, n_rows, data, rb);
  w.data = data;
  w.nbytes = rb * n_rows;
  g_assert_true (bln_cpu_get_rows (&w, ids, 3, out, &error));
  g_assert_no_error (error);
  for (int i = 0; i < 3; i++)
    {
      bln_dequantize_row (BLN_TYPE_Q6_K, data + ids[i] * rb, ref, n_in);
      g_assert_cmpmem (out + i * n_in, sizeof ref, ref, sizeof ref);
    }
  ids[1] = 5;
  g_assert_false (bln_cpu_get_rows (&w, ids, 3, out, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  ids[1] = -1;
  g_assert_false (bln_cpu_get_rows (&w, ids, 3, out, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
}

/* ---------------------------------------------------------------------------
 * Float helpers, against float64 formulas
 * ------------------------------------------------------------------------- */

static void
test_ops (void)
{
  const int64_t sizes[] = { 1, 7, 64, 576, 1000 };

  for (int s = 0; s < 2; s++)
    for (guint si = 0; si < G_N_ELEMENTS (sizes); si++)
      {
        int64_t n = sizes[si];
        g_autofree float *x = g_new (float, n), *w = g_new (float, n), *y = g_new (float, n);
        g_autofree float *z = g_new (float, n);
        double ss = 0.0, mx = -INFINITY, se = 0.0, mag = 0.0, dot = 0.0;
        float got;

        bln_cpu_force_scalar (s == 1);
        for (int64_t i = 0; i < n; i++)
          {
            x[i] = rng_act ();
            w[i] = 1.0f + 0.1f * rng_float ();
          }

        /* rmsnorm */
        for (int64_t i = 0; i < n; i++)
          ss += (double) x[i] * x[i];
        bln_cpu_rmsnorm (y, x, w, n, 1e-5f);
        for (int64_t i = 0; i < n; i++)
          {
            double ref = x[i] / sqrt (ss / n + 1e-5) * w[i];
            g_assert_cmpfloat_with_epsilon (y[i], ref, 1e-6 * fabs (ref) + 1e-30);
          }
        /* in place, without weight */
        memcpy (z, x, n * sizeof *z);
        bln_cpu_rmsnorm (z, z, NULL, n, 1e-5f);
        for (int64_t i = 0; i < n; i++)
          {
            double ref = x[i] / sqrt (ss / n + 1e-5);
            g_assert_cmpfloat_with_epsilon (z[i], ref, 1e-6 * fabs (ref) + 1e-30);
          }

        /* softmax */
        memcpy (z, x, n * sizeof *z);
        bln_cpu_softmax (z, n);
        for (int64_t i = 0; i < n; i++)
          mx = MAX (mx, x[i]);
        for (int64_t i = 0; i < n; i++)
          se += exp (x[i] - mx);
        for (int64_t i = 0; i < n; i++)
          {
            double ref = exp (x[i] - mx) / se;
            g_assert_cmpfloat_with_epsilon (z[i], ref, 1e-6 * ref + 1e-12);
          }

        /* silu * mul */
        bln_cpu_silu_mul (y, x, w, n);
        for (int64_t i = 0; i < n; i++)
          {
            double ref = x[i] / (1.0 + exp (-(double) x[i])) * w[i];
            g_assert_cmpfloat_with_epsilon (y[i], ref, 1e-6 * fabs (ref) + 1e-12);
          }

        /* dot */
        for (int64_t i = 0; i < n; i++)
          {
            dot += (double) x[i] * w[i];
            mag += fabs ((double) x[i] * w[i]);
          }
        got = bln_cpu_dot (x, w, n);
        g_assert_cmpfloat_with_epsilon (got, dot, 1e-6 * mag);

        /* axpy, add, scale */
        memcpy (z, w, n * sizeof *z);
        bln_cpu_axpy (z, 0.25f, x, n);
        for (int64_t i = 0; i < n; i++)
          g_assert_cmpfloat_with_epsilon (z[i], w[i] + 0.25 * x[i],
                                          1e-6 * (fabs (w[i]) + fabs (0.25 * x[i])));
        bln_cpu_add (y, x, w, n);
        for (int64_t i = 0; i < n; i++)
          g_assert_cmpfloat (y[i], ==, x[i] + w[i]);
        memcpy (z, x, n * sizeof *z);
        bln_cpu_scale (z, 0.5f, n);
        for (int64_t i = 0; i < n; i++)
          g_assert_cmpfloat (z[i], ==, x[i] * 0.5f);
      }
  bln_cpu_force_scalar (FALSE);
}

/* ---------------------------------------------------------------------------
 * Benchmark
 * ------------------------------------------------------------------------- */

static void
pool_nop (void *ctx, int ith, int nth)
{
}

static int
run_bench (int n_threads)
{
  const int types[] = { BLN_TYPE_Q4_0, BLN_TYPE_Q4_1, BLN_TYPE_Q8_0, BLN_TYPE_Q4_K,
                        BLN_TYPE_Q6_K, BLN_TYPE_Q5_K, BLN_TYPE_F16 };
  const int64_t n = 4096;
  g_autoptr (GError) error = NULL;
  BlnPool *pool = bln_pool_new (n_threads, &error);
  g_autofree float *x = g_new (float, n * 64);
  g_autofree float *y = g_new (float, n * 64);
  gint64 t0;
  int iters = 20000;

  g_assert_no_error (error);
  for (int64_t i = 0; i < n * 64; i++)
    x[i] = rng_act ();
  t0 = g_get_monotonic_time ();
  for (int i = 0; i < iters; i++)
    bln_pool_run (pool, pool_nop, NULL);
  g_print ("kernels %s, %d threads; empty pool run: %.2f us\n", bln_cpu_simd_level (),
           n_threads, (double) (g_get_monotonic_time () - t0) / iters);

  for (guint ti = 0; ti < G_N_ELEMENTS (types); ti++)
    {
      size_t rb = 0;
      g_autofree uint8_t *data = NULL;
      BlnTensor w = { .name = (char *) "bench", .type = types[ti], .n_dims = 2,
                      .ne = { n, n, 1, 1 } };
      double dt, dtp;
      int reps = 30;

      bln_type_row_bytes (types[ti], n, &rb);
      data = g_malloc (rb * n);
      for (size_t i = 0; i < rb * n; i++)
        data[i] = (uint8_t) rng_next ();
      /* keep the scales finite: fill from real quantisation for one row and copy it */
      fill_weights (types[ti] == BLN_TYPE_Q5_K ? BLN_TYPE_Q5_K : types[ti], n, 1, data, rb);
      for (int64_t r = 1; r < n; r++)
        memcpy (data + r * rb, data, rb);
      w.data = data;
      w.nbytes = rb * n;
      bln_cpu_matmul (pool, &w, x, 1, y, NULL);
      t0 = g_get_monotonic_time ();
      for (int i = 0; i < reps; i++)
        bln_cpu_matmul (pool, &w, x, 1, y, NULL);
      dt = (double) (g_get_monotonic_time () - t0) / reps / 1e6;
      t0 = g_get_monotonic_time ();
      for (int i = 0; i < 3; i++)
        bln_cpu_matmul (pool, &w, x, 64, y, NULL);
      dtp = (double) (g_get_monotonic_time () - t0) / 3 / 1e6;
      g_print ("%-5s 4096x4096 matvec: %7.3f ms, %6.2f GB/s weights; 64 tokens: %7.2f ms,"
               " %6.1f GFLOP/s\n", bln_type_name (types[ti]), dt * 1e3,
               (double) (rb * n) / dt / 1e9, dtp * 1e3, 2.0 * n * n * 64 / dtp / 1e9);
      /* the kernel alone, in CPU time of this thread (meaningful on a busy
       * machine too): 256 rows, which stay in cache */
      {
        const BlnCpuKernels *k = bln_cpu_kernels ();
        g_autofree void *act = g_malloc (bln_cpu_act_row_bytes (types[ti], n) * 4);
        struct timespec c0, c1;
        double ns;

        if (bln_cpu_act_kind (types[ti]) == BLN_ACT_Q8)
          k->quant_q8 (x, act, n);
        else if (bln_cpu_act_kind (types[ti]) == BLN_ACT_Q8K)
          k->quant_q8k (x, act, n);
        else
          memcpy (act, x, n * 4);
        clock_gettime (CLOCK_THREAD_CPUTIME_ID, &c0);
        for (int it = 0; it < 20; it++)
          for (int r = 0; r < 256; r++)
            k->dot[types[ti]] (n, data + r * rb, act, 0, 1, y + r, 1);
        clock_gettime (CLOCK_THREAD_CPUTIME_ID, &c1);
        ns = ((c1.tv_sec - c0.tv_sec) * 1e9 + (c1.tv_nsec - c0.tv_nsec)) / (20.0 * 256 * n);
        g_print ("      kernel, one thread, cached: %.3f ns/weight (%.2f GB/s)\n", ns,
                 (double) rb / n / ns);
      }
    }
  bln_pool_free (pool);
  return 0;
}

int
main (int argc, char **argv)
{
  static const int legacy_n[] = { 32, 96, 512 };
  static const int k_n[] = { 256, 512, 1536 };
  static const int float_n[] = { 1, 13, 96, 515 };
  static TypeCase cases[] = {
    { BLN_TYPE_F32, float_n, 4 }, { BLN_TYPE_F16, float_n, 4 }, { BLN_TYPE_BF16, float_n, 4 },
    { BLN_TYPE_Q4_0, legacy_n, 3 }, { BLN_TYPE_Q4_1, legacy_n, 3 },
    { BLN_TYPE_Q5_0, legacy_n, 3 }, { BLN_TYPE_Q5_1, legacy_n, 3 },
    { BLN_TYPE_Q8_0, legacy_n, 3 },
    { BLN_TYPE_Q2_K, k_n, 3 }, { BLN_TYPE_Q3_K, k_n, 3 }, { BLN_TYPE_Q4_K, k_n, 3 },
    { BLN_TYPE_Q5_K, k_n, 3 }, { BLN_TYPE_Q6_K, k_n, 3 },
  };

  for (int i = 1; i < argc; i++)
    if (strcmp (argv[i], "--bench") == 0)
      return run_bench (i + 1 < argc ? atoi (argv[i + 1]) : 2);

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/CpuOps/pool", test_pool);
  g_test_add_func ("/Baleen/CpuOps/quantizers-agree", test_quantizers_agree);
  g_test_add_func ("/Baleen/CpuOps/matmul-errors", test_matmul_errors);
  g_test_add_func ("/Baleen/CpuOps/get-rows", test_get_rows);
  g_test_add_func ("/Baleen/CpuOps/ops", test_ops);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/Baleen/CpuOps/matmul/%s",
                                               bln_type_name (cases[i].type));
      g_test_add_data_func (path, &cases[i], test_matmul_type);
    }
  return g_test_run ();
}
