/* test-cuda-ops.c — the CUDA backend's device probe, weight upload and decode
 * matvec kernels, against the CPU backend and a float64 reference.
 *
 * For every type the kernels handle, several shapes (odd row counts, rows of
 * 256..4096 values) and token counts 1..8, with fresh random weights (the
 * reference quantiser where it exists, random valid blocks otherwise and for
 * every quantised type too, so all scale bit patterns are hit):
 *
 *  - F16 / BF16 (the kernels see the activations unchanged): GPU against
 *    float64 sums of bln_dequantize_row (engine/quant.c, checked bit-exact
 *    against the gguf package by test-quant) times the float activations,
 *    ||gpu - ref|| / ||ref|| < 1e-4 (float32 arithmetic), and against
 *    bln_cpu_matmul within 1e-4;
 *  - quantised weights: both backends round the activations to 8 bits per
 *    block (scale amax / 127, round to nearest), the GPU in blocks of 32
 *    values, the CPU in blocks of 32 (Q8_0 / Q4_x) or 256 (k-quants). Rounding
 *    moves each activation by at most amax(block) / 254, so each output is
 *    checked element by element: against float64 within
 *    1.01 * sum_k |w_k| * amax32(k) / 254 + 1e-4 * sum_k |w_k x_k| (the GPU's
 *    rounding plus float32 accumulation slack), and against the CPU within the
 *    sum of both backends' rounding bounds plus the same slack. The norm-wise
 *    1e-4 bound no longer applies to them (it assumed unrounded activations);
 *  - the output buffer is poisoned with NaN before every launch and every
 *    element must come back finite.
 *
 * Without a usable GPU (no driver, no device), the GPU cases skip with the
 * reason; the argument checks, which need no device, still run.
 *
 * The tensor-core product (bln_kernels_mmq, 9 .. 511 token rows here) is
 * checked output by output against the same float64 reference and 8-bit
 * bound, with a strided output, poisoned padding and the accumulate flag.
 *
 * The fused one-token RoPE + KV store + decode attention
 * (bln_kernels_attn_decode_rope) must write, byte for byte, the output, its
 * 8-bit rounding and the caches that bln_kernels_rope_store followed by
 * bln_kernels_attn_decode_round write.
 *
 * The producers of the prefill's 16-bit cuBLAS activations
 * (bln_kernels_rmsnorm_f16, bln_kernels_silu_mul_f16) must write, byte for
 * byte, what the float kernel followed by bln_kernels_convert writes (F16
 * and BF16, 1..130 rows, widths 32..4864 and one not a multiple of 32); and
 * cuBLAS adding its product into the residual (beta = 1) must leave the bytes
 * of a product into scratch then bln_kernels_add (what the prefill's
 * BALEEN_CUDA_PREFILL_FUSED path relies on).
 *
 * `test-cuda-ops --bench-mmq` times it in the 7B shapes for 8 .. 2048 rows
 * next to the F16 tensor-core product (bln_kernels_mmf) and the dequantise
 * + cublasGemmEx path; `--bench-mmf` the latter two for 2 .. 256 rows.
 *
 * `--bench-rope-attn` times the one-token attention step (RoPE, KV store,
 * attention) of a 7B layer as two launches and as the fused one.
 *
 * `test-cuda-ops --bench` skips the tests and prints the weight streaming
 * rate (GB/s of GGUF-layout bytes) of each type's matvec in decode shapes,
 * timed with CUDA events over weight copies that together exceed the L2, next
 * to a measured device-to-device copy rate.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cublas_v2.h>

#include "bln-error.h"
#include "quant.h"
#include "tensor.h"
#include "cpu/cpu.h"
#include "cuda/cuda.h"
#include "kernels/kernels.h"
#include "kernels/flash.h"
#include "kernels/ops.h"
#include "kernels/paged.h"
#include "model.h"
#include "model-test-util.h"

static const BlnType matvec_types[] = {
  BLN_TYPE_F16, BLN_TYPE_BF16, BLN_TYPE_Q8_0, BLN_TYPE_Q4_0, BLN_TYPE_Q4_1,
  BLN_TYPE_Q5_0, BLN_TYPE_Q5_1, BLN_TYPE_Q4_K, BLN_TYPE_Q5_K, BLN_TYPE_Q6_K,
};

/* ---------------------------------------------------------------------------
 * Random data
 * ------------------------------------------------------------------------- */

static uint64_t rng_state;

static void
rng_seed (void)
{
  /* g_test_rand_int follows --seed, so a failure can be replayed. */
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

/* Byte offsets of the half-precision fields (scales, mins) of each block
 * type, which random bytes could turn into infinities or NaNs. */
static int
half_fields (BlnType type, int offs[2])
{
  switch (type)
    {
    case BLN_TYPE_Q4_0:
    case BLN_TYPE_Q5_0:
    case BLN_TYPE_Q8_0:
      offs[0] = 0;
      return 1;
    case BLN_TYPE_Q4_1:
    case BLN_TYPE_Q5_1:
    case BLN_TYPE_Q4_K:
    case BLN_TYPE_Q5_K:
      offs[0] = 0;
      offs[1] = 2;
      return 2;
    case BLN_TYPE_Q6_K:
      offs[0] = 208;
      return 1;
    default:
      return 0;
    }
}

/* A weight tensor (n_out rows of n_in values, owned data). With @random_blocks
 * (or when there is no reference quantiser for the type) the blocks are
 * random bytes with sane scales; otherwise random floats quantised. */
static void
make_weights (BlnTensor *t, BlnType type, int n_in, int n_out, gboolean random_blocks)
{
  const BlnTypeInfo *info = bln_type_info (type);
  size_t row_bytes = 0;
  g_autofree float *row = g_new (float, n_in);

  g_assert_nonnull (info);
  g_assert_true (bln_type_row_bytes (type, n_in, &row_bytes));
  memset (t, 0, sizeof *t);
  t->name = g_strdup_printf ("w.%s", bln_type_name (type));
  t->type = type;
  t->n_dims = 2;
  t->ne[0] = n_in;
  t->ne[1] = n_out;
  t->ne[2] = t->ne[3] = 1;
  t->nbytes = row_bytes * (size_t) n_out;
  t->owned = g_malloc (t->nbytes);
  t->data = t->owned;

  for (int r = 0; r < n_out; r++)
    {
      uint8_t *dst = (uint8_t *) t->owned + (size_t) r * row_bytes;
      gboolean quantized = FALSE;

      if (!random_blocks || type == BLN_TYPE_F16 || type == BLN_TYPE_BF16)
        {
          for (int k = 0; k < n_in; k++)
            row[k] = rng_float ();
          quantized = bln_quantize_row (type, row, dst, n_in);
        }
      if (!quantized)
        {
          int offs[2];
          int n_half = half_fields (type, offs);

          for (size_t i = 0; i < row_bytes; i++)
            dst[i] = (uint8_t) rng_next ();
          for (size_t b = 0; b < row_bytes / info->type_size; b++)
            for (int h = 0; h < n_half; h++)
              {
                /* scales around 1/64; the k-quant mins stay positive */
                float v = rng_float () / 64.0f;
                bln_half hv = bln_float_to_half (h == 1 ? fabsf (v) : v);

                memcpy (dst + b * info->type_size + offs[h], &hv, 2);
              }
        }
    }
}

/* ---------------------------------------------------------------------------
 * Checks that need no GPU
 * ------------------------------------------------------------------------- */

static void
test_probe (void)
{
  g_autofree char *why = NULL;
  gboolean ok = bln_cuda_available (&why);
  size_t free_b = 1;

  if (!ok)
    {
      g_assert_nonnull (why);
      g_assert_cmpstr (why, !=, "");
      g_test_message ("no GPU: %s", why);
      g_assert_false (bln_cuda_estimate (1, 1, 1, &free_b));
      g_assert_cmpuint (free_b, ==, 0);
    }
  else
    {
      BlnCudaDeviceInfo info;
      GError *error = NULL;

      g_assert_null (why);
      g_assert_true (bln_cuda_device_info (0, &info, &error));
      g_assert_no_error (error);
      g_test_message ("%s: compute %d.%d, %d SMs, %.1f GiB (%.1f free), L2 %zu KiB",
                      info.name, info.cc_major, info.cc_minor, info.n_sm,
                      info.total_mem / 1073741824.0, info.free_mem / 1073741824.0,
                      info.l2_bytes >> 10);
      g_assert_cmpint (info.n_sm, >, 0);
      g_assert_cmpuint (info.total_mem, >, 0);
      /* the plan: a small load fits, an impossible one does not */
      g_assert_true (bln_cuda_estimate (1 << 20, 1 << 20, 1 << 20, &free_b));
      g_assert_cmpuint (free_b, >, 0);
      g_assert_false (bln_cuda_estimate (info.total_mem, 1, 1, NULL));
      g_assert_false (bln_cuda_estimate (G_MAXSIZE, G_MAXSIZE, G_MAXSIZE, NULL));
      /* a device that does not exist is an error, not a crash */
      g_assert_false (bln_cuda_device_info (4096, &info, &error));
      g_assert_error (error, BLN_ERROR, BLN_ERROR_BACKEND);
      g_clear_error (&error);
    }
}

static void
test_arguments (void)
{
  BlnTensor t;
  BlnCudaBuffer fake_buf = { (void *) 0x1000, 16 };
  BlnCudaTensor fake = { BLN_TYPE_Q8_0, 32, 1, 34, &fake_buf, &fake_buf };
  GError *error = NULL;

  /* types without kernels and rows that are not whole blocks are refused
   * before any CUDA call */
  make_weights (&t, BLN_TYPE_Q2_K, 256, 2, TRUE);
  g_assert_false (bln_cuda_matvec_supports (BLN_TYPE_Q2_K));
  g_assert_null (bln_cuda_tensor_upload (&t, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_UNSUPPORTED);
  g_clear_error (&error);
  bln_tensor_clear (&t);

  make_weights (&t, BLN_TYPE_F16, 36, 2, FALSE);  /* 36 % 8 != 0 */
  g_assert_null (bln_cuda_tensor_upload (&t, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  t.nbytes = 2;  /* shorter than its shape */
  t.ne[0] = 32;
  g_assert_null (bln_cuda_tensor_upload (&t, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  bln_tensor_clear (&t);

  g_assert_false (bln_cuda_matvec (&fake, (const float *) 0x2000, 0, (float *) 0x3000, 0,
                                   &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_cuda_matvec (&fake, (const float *) 0x2000, BLN_CUDA_MATVEC_MAX_TOK + 1,
                                   (float *) 0x3000, 0, &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (bln_cuda_matvec (&fake, (const float *) 0x2004, 1, (float *) 0x3000, 0,
                                   &error));
  g_assert_error (error, BLN_ERROR, BLN_ERROR_INVALID);
  g_clear_error (&error);

  for (guint i = 0; i < G_N_ELEMENTS (matvec_types); i++)
    g_assert_true (bln_cuda_matvec_supports (matvec_types[i]));

  /* the producers of prefill's 16-bit activations refuse bad arguments
   * before any CUDA call */
  {
    float *p = (float *) 0x10000;
    void *o = (void *) 0x20000;

    g_assert_cmpint (bln_kernels_rmsnorm_f16 (NULL, p, p, o, 3, 96, 1e-6f, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_rmsnorm_f16 (p, NULL, p, o, 3, 96, 1e-6f, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_rmsnorm_f16 (p, p, p, NULL, 3, 96, 1e-6f, 1, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_rmsnorm_f16 (p, p, NULL, o, 0, 96, 1e-6f, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_rmsnorm_f16 (p, p, NULL, o, 3, 0, 1e-6f, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_rmsnorm_f16 (p, p, NULL, o, 3, 96, 1e-6f, 2, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_silu_mul_f16 (NULL, 96, p, 96, o, 3, 96, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_silu_mul_f16 (p, 96, NULL, 96, o, 3, 96, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_silu_mul_f16 (p, 96, p, 96, NULL, 3, 96, 1, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_silu_mul_f16 (p, 95, p, 96, o, 3, 96, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_silu_mul_f16 (p, 192, p, 95, o, 3, 96, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_silu_mul_f16 (p, 96, p, 96, o, 0, 96, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_silu_mul_f16 (p, 96, p, 96, o, 3, 0, 0, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_silu_mul_f16 (p, 96, p, 96, o, 3, 96, -1, 0), ==,
                     cudaErrorInvalidValue);
  }

  /* the fused RoPE + attention: what it serves, and refusals before any
   * CUDA call (bad arguments; valid ones it does not serve) */
  {
    float *p = (float *) 0x10000;
    void *kc = (void *) 0x20000, *vc = (void *) 0x30000;
    const char *v = g_getenv ("BALEEN_CUDA_ATTN");
    int rounded = -1;

    if (v == NULL || strcmp (v, "v1") != 0)
      {
        g_assert_true (bln_kernels_attn_decode_rope_supports (28, 4, 128, 128, 128, kc, vc));
        g_assert_true (bln_kernels_attn_decode_rope_supports (32, 8, 64, 64, 32, kc, vc));
      }
    g_assert_false (bln_kernels_attn_decode_rope_supports (28, 4, 96, 96, 96, kc, vc));
    g_assert_false (bln_kernels_attn_decode_rope_supports (28, 4, 128, 64, 128, kc, vc));
    g_assert_false (bln_kernels_attn_decode_rope_supports (28, 3, 128, 128, 128, kc, vc));
    g_assert_false (bln_kernels_attn_decode_rope_supports (28, 4, 128, 128, 127, kc, vc));
    g_assert_false (bln_kernels_attn_decode_rope_supports (28, 4, 128, 128, 128,
                                                           (char *) kc + 8, vc));
    g_assert_false (bln_kernels_attn_decode_rope_supports (28, 4, 128, 128, 128, kc, NULL));
    g_assert_cmpint (bln_kernels_attn_decode_rope (NULL, p, p, NULL, NULL, NULL, (int *) p, 28,
                                                   4, 128, 128, 128, 1, p, 1.0f, 0.088f, kc, vc,
                                                   1, p, p, &rounded, 0), ==,
                     cudaErrorInvalidValue);
    g_assert_cmpint (rounded, ==, 0);
    g_assert_cmpint (bln_kernels_attn_decode_rope (p, p, p, NULL, NULL, NULL, (int *) p, 28, 4,
                                                   128, 128, 130, 1, p, 1.0f, 0.088f, kc, vc, 1,
                                                   p, p, NULL, 0), ==, cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_attn_decode_rope (p, p, p, NULL, NULL, NULL, (int *) p, 28, 4,
                                                   512, 512, 128, 1, p, 1.0f, 0.088f, kc, vc, 1,
                                                   p, p, NULL, 0), ==, cudaErrorInvalidValue);
    g_assert_cmpint (bln_kernels_attn_decode_rope (p, p, p, NULL, NULL, NULL, (int *) p, 28, 4,
                                                   96, 96, 96, 1, p, 1.0f, 0.088f, kc, vc, 1, p,
                                                   p, &rounded, 0), ==, cudaErrorNotSupported);
    g_assert_cmpint (rounded, ==, 0);
  }
}

/* ---------------------------------------------------------------------------
 * The matvec against the references
 * ------------------------------------------------------------------------- */

static double
rel_error (const float *a, const double *ref, size_t n)
{
  double num = 0, den = 0;

  for (size_t i = 0; i < n; i++)
    {
      double d = (double) a[i] - ref[i];
      num += d * d;
      den += ref[i] * ref[i];
    }
  return den > 0 ? sqrt (num / den) : sqrt (num);
}

static gboolean
skip_without_gpu (void)
{
  g_autofree char *why = NULL;

  if (bln_cuda_available (&why))
    return FALSE;
  g_test_skip (why);
  return TRUE;
}

static void
run_case (BlnPool *pool, BlnType type, int n_in, int n_out, int n_tok, gboolean random_blocks)
{
  BlnTensor t;
  g_autoptr (BlnCudaTensor) ct = NULL;
  g_autoptr (BlnCudaBuffer) d_x = NULL;
  g_autoptr (BlnCudaBuffer) d_y = NULL;
  g_autofree float *x = g_new (float, (size_t) n_tok * n_in);
  g_autofree float *w_row = g_new (float, n_in);
  g_autofree float *y_gpu = g_new (float, (size_t) n_tok * n_out);
  g_autofree float *y_cpu = g_new (float, (size_t) n_tok * n_out);
  g_autofree double *y_ref = g_new0 (double, (size_t) n_tok * n_out);
  g_autofree double *y_cpu_d = g_new (double, (size_t) n_tok * n_out);
  g_autofree double *cpu_bound = g_new0 (double, (size_t) n_tok * n_out);
  g_autofree float *amax = g_new (float, (size_t) n_tok * n_in);
  g_autofree float *amax32 = g_new (float, (size_t) n_tok * n_in);
  g_autofree double *gpu_bound = g_new0 (double, (size_t) n_tok * n_out);
  int act_block = type >= BLN_TYPE_Q2_K && type <= BLN_TYPE_Q6_K ? BLN_QK_K : BLN_QK;
  size_t row_bytes = 0, ny = (size_t) n_tok * n_out;
  double e_ref, e_cpu, tol_ref, tol_cpu;
  GError *error = NULL;

  make_weights (&t, type, n_in, n_out, random_blocks);
  for (size_t i = 0; i < (size_t) n_tok * n_in; i++)
    x[i] = rng_float ();

  /* each backend rounds each activation to 8 bits per block (the CPU in blocks
   * of act_block, the GPU of 32): |error| <= amax / 254 */
  for (size_t i = 0; i < (size_t) n_tok * n_in; i += act_block)
    {
      float m = 0;
      for (int k = 0; k < act_block && i + k < (size_t) n_tok * n_in; k++)
        m = MAX (m, fabsf (x[i + k]));
      for (int k = 0; k < act_block && i + k < (size_t) n_tok * n_in; k++)
        amax[i + k] = m;
    }
  for (size_t i = 0; i < (size_t) n_tok * n_in; i += BLN_QK)
    {
      float m = 0;
      for (int k = 0; k < BLN_QK && i + k < (size_t) n_tok * n_in; k++)
        m = MAX (m, fabsf (x[i + k]));
      for (int k = 0; k < BLN_QK && i + k < (size_t) n_tok * n_in; k++)
        amax32[i + k] = m;
    }

  /* float64 reference */
  g_assert_true (bln_type_row_bytes (type, n_in, &row_bytes));
  for (int r = 0; r < n_out; r++)
    {
      g_assert_true (bln_dequantize_row (type, (const uint8_t *) t.data + (size_t) r * row_bytes,
                                         w_row, n_in));
      for (int tk = 0; tk < n_tok; tk++)
        {
          double s = 0;

          double b = 0, bg = 0, mag = 0;

          for (int k = 0; k < n_in; k++)
            {
              s += (double) w_row[k] * (double) x[(size_t) tk * n_in + k];
              b += fabs ((double) w_row[k]) * amax[(size_t) tk * n_in + k] / 254.0;
              bg += fabs ((double) w_row[k]) * amax32[(size_t) tk * n_in + k] / 254.0;
              mag += fabs ((double) w_row[k] * (double) x[(size_t) tk * n_in + k]);
            }
          y_ref[(size_t) tk * n_out + r] = s;
          /* GPU vs CPU: both roundings; GPU vs float64: the GPU's alone */
          cpu_bound[(size_t) tk * n_out + r] = 1.01 * (b + bg) + 1e-4 * mag;
          gpu_bound[(size_t) tk * n_out + r] = 1.01 * bg + 1e-4 * mag;
        }
    }

  /* CPU backend */
  g_assert_true (bln_cpu_matmul (pool, &t, x, n_tok, y_cpu, &error));
  g_assert_no_error (error);

  /* GPU */
  ct = bln_cuda_tensor_upload (&t, &error);
  g_assert_no_error (error);
  d_x = bln_cuda_buffer_new_from_host (x, (size_t) n_tok * n_in * sizeof (float), &error);
  g_assert_no_error (error);
  d_y = bln_cuda_buffer_new (ny * sizeof (float), &error);
  g_assert_no_error (error);
  g_assert_true (BLN_CUDA_CHECK (cudaMemset (d_y->ptr, 0xff, d_y->size), &error));  /* NaN */
  g_assert_true (bln_cuda_matvec (ct, d_x->ptr, n_tok, d_y->ptr, 0, &error));
  g_assert_no_error (error);
  g_assert_true (BLN_CUDA_CHECK (cudaDeviceSynchronize (), &error));
  g_assert_no_error (error);
  g_assert_true (BLN_CUDA_CHECK (cudaMemcpy (y_gpu, d_y->ptr, d_y->size,
                                             cudaMemcpyDeviceToHost), &error));
  g_assert_no_error (error);

  for (size_t i = 0; i < ny; i++)
    {
      if (!isfinite (y_gpu[i]))
        g_error ("%s %dx%d n_tok %d: output %zu (token %zu, row %zu) not written or not finite",
                 bln_type_name (type), n_out, n_in, n_tok, i, i / n_out, i % n_out);
      y_cpu_d[i] = y_cpu[i];
    }

  e_ref = rel_error (y_gpu, y_ref, ny);
  e_cpu = rel_error (y_gpu, y_cpu_d, ny);
  tol_ref = 1e-4;
  tol_cpu = 1e-4;
  if (type != BLN_TYPE_F16 && type != BLN_TYPE_BF16)
    {
      /* quantised weights: 8-bit activations, bounded output by output */
      for (size_t i = 0; i < ny; i++)
        {
          if (!(fabs (y_gpu[i] - y_ref[i]) <= gpu_bound[i]))
            g_error ("%s %dx%d n_tok %d: output %zu differs from float64 by %.3e, more than "
                     "the 8-bit activation bound %.3e", bln_type_name (type), n_out, n_in,
                     n_tok, i, fabs (y_gpu[i] - y_ref[i]), gpu_bound[i]);
          if (!(fabs (y_gpu[i] - y_cpu_d[i]) <= cpu_bound[i]))
            g_error ("%s %dx%d n_tok %d: output %zu differs from the CPU by %.3e, more than "
                     "the 8-bit activation bound %.3e", bln_type_name (type), n_out, n_in,
                     n_tok, i, fabs (y_gpu[i] - y_cpu_d[i]), cpu_bound[i]);
        }
      tol_ref = tol_cpu = G_MAXDOUBLE;   /* checked element by element above */
    }
  /* expert selection (MoE): the matrix as 2 experts of n_out / 2 rows; each
   * selection must reproduce its rows of the plain product above */
  if (n_tok >= 2 && n_out >= 6)
    {
      const int rows_e = n_out / 2;
      const int32_t sel_e[4] = { 1, 0, 1, 5 /* clamped to 1 */ };
      const int32_t sel_t[4] = { n_tok - 1, 0, 0, 1 };
      g_autofree float *y_sel = g_new (float, 4 * (size_t) rows_e);
      g_autoptr (BlnCudaBuffer) d_sel = NULL, d_tok = NULL, d_ys = NULL;

      d_sel = bln_cuda_buffer_new_from_host (sel_e, sizeof sel_e, &error);
      g_assert_no_error (error);
      d_tok = bln_cuda_buffer_new_from_host (sel_t, sizeof sel_t, &error);
      g_assert_no_error (error);
      d_ys = bln_cuda_buffer_new (4 * (size_t) rows_e * sizeof (float), &error);
      g_assert_no_error (error);
      g_assert_true (BLN_CUDA_CHECK (cudaMemset (d_ys->ptr, 0xff, d_ys->size), &error));
      g_assert_true (BLN_CUDA_CHECK (bln_kernels_matvec_sel ((int) ct->type, ct->payload->ptr,
                                                             ct->header ? ct->header->ptr : NULL,
                                                             n_in, rows_e, 2, d_x->ptr, n_tok,
                                                             d_sel->ptr, d_tok->ptr, 4,
                                                             d_ys->ptr, 0, 0, 0), &error));
      g_assert_true (BLN_CUDA_CHECK (cudaMemcpy (y_sel, d_ys->ptr, d_ys->size,
                                                 cudaMemcpyDeviceToHost), &error));
      g_assert_no_error (error);
      for (int i = 0; i < 4; i++)
        for (int r = 0; r < rows_e; r++)
          {
            int e = MIN (sel_e[i], 1);
            double want = y_gpu[(size_t) sel_t[i] * n_out + (size_t) e * rows_e + r];
            double got = y_sel[(size_t) i * rows_e + r];

            if (!(fabs (got - want) <= 1e-5 * (fabs (want) + 1e-3)))
              g_error ("%s %dx%d: expert selection %d (expert %d, token %d) row %d: %.6e, "
                       "plain product %.6e", bln_type_name (type), n_out, n_in, i, sel_e[i],
                       sel_t[i], r, got, want);
          }
    }

  g_test_message ("%-5s %4d x %-4d n_tok %d %s: rel err vs f64 %.2e, vs cpu %.2e",
                  bln_type_name (type), n_out, n_in, n_tok,
                  random_blocks ? "random-blocks" : "quantised", e_ref, e_cpu);
  if (!(e_ref < tol_ref) || !(e_cpu < tol_cpu))
    g_error ("%s %dx%d n_tok %d (%s): relative error %.3e vs float64 (bound %.0e), "
             "%.3e vs CPU (bound %.0e)", bln_type_name (type), n_out, n_in, n_tok,
             random_blocks ? "random blocks" : "quantised", e_ref, tol_ref, e_cpu, tol_cpu);
  bln_tensor_clear (&t);
}

static void
test_matvec_type (gconstpointer data)
{
  BlnType type = (BlnType) GPOINTER_TO_INT (data);
  static const int shapes[][2] = {   /* n_in, n_out */
    { 256, 1 }, { 256, 7 }, { 512, 33 }, { 1024, 130 }, { 4096, 259 }, { 4096, 64 },
    /* rows of 14 and 74 K-quant blocks (the 7B model's widths), 6 (1.5B) */
    { 3584, 77 }, { 18944, 9 }, { 1536, 41 },
    /* long rows: one token of float weights takes a thread block per row
     * (short rows too with BALEEN_CUDA_MV_LONG=2), 1 or 2 tokens of the
     * 8-bit path split K over a block's warps when the rows are fewer than
     * 4 blocks per SM; more than 1024 rows, so that the expert selection
     * below (half the rows) stays with the plain product's kernel */
    { 18944, 1040 }, { 3584, 1040 },
  };
  static const int toks[] = { 1, 2, 3, 5, 8 };
  g_autoptr (GError) error = NULL;
  BlnPool *pool;

  if (skip_without_gpu ())
    return;
  rng_seed ();
  pool = bln_pool_new (2, &error);
  g_assert_no_error (error);
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    for (guint k = 0; k < G_N_ELEMENTS (toks); k++)
      for (int mode = 0; mode < 2; mode++)
        run_case (pool, type, shapes[s][0], shapes[s][1], toks[k], mode == 1);
  bln_pool_free (pool);
}

/* ---------------------------------------------------------------------------
 * The tensor-core product (bln_kernels_mmq) against float64
 * ------------------------------------------------------------------------- */

static const BlnType mmq_types[] = {
  BLN_TYPE_Q8_0, BLN_TYPE_Q4_0, BLN_TYPE_Q4_1, BLN_TYPE_Q5_0, BLN_TYPE_Q5_1,
  BLN_TYPE_Q4_K, BLN_TYPE_Q5_K, BLN_TYPE_Q6_K,
};

/* One product of n_tok rows into rows ldy = n_out + 3 apart: the output is
 * poisoned (all bits set, a NaN) first; every (token, row) must then be
 * within the matvec tests' 8-bit activation bound of the float64 product of
 * the dequantised weights (the MMQ rounds activations as the matvec does,
 * in blocks of 32) and the three padding columns of each row must still
 * hold the poison. A second call with ACCUMULATE must give twice that. The
 * first wrong (token, row) is reported. */
typedef cudaError_t (*ProductFn) (int type, const void *payload, const void *header, int n_in,
                                  int n_out, const float *x, int n_tok, float *y, int ldy,
                                  int flags, cudaStream_t stream);

static void
run_mmq_case_fn (BlnType type, int n_in, int n_out, int n_tok, gboolean random_blocks,
                 gboolean f16)
{
  const char *what = f16 ? "mmf" : "mmq";
  const ProductFn prod = f16 ? bln_kernels_mmf : bln_kernels_mmq;
  BlnTensor t;
  g_autoptr (BlnCudaTensor) ct = NULL;
  g_autoptr (BlnCudaBuffer) d_x = NULL;
  g_autoptr (BlnCudaBuffer) d_y = NULL;
  const int ldy = n_out + 3;
  const size_t nx = (size_t) n_tok * n_in, ny = (size_t) n_tok * ldy;
  g_autofree float *x = g_new (float, nx);
  g_autofree float *amax32 = g_new (float, nx);
  g_autofree float *w = g_new (float, (size_t) n_out * n_in);
  g_autofree float *y_gpu = g_new (float, ny);
  g_autofree float *y_acc = g_new (float, ny);
  g_autofree float *y_again = g_new (float, ny);
  g_autofree float *hi32 = g_new (float, (size_t) n_out * n_in);
  g_autofree float *rng32 = g_new (float, (size_t) n_out * n_in);
  size_t row_bytes = 0;
  double worst = 0;
  GError *error = NULL;

  make_weights (&t, type, n_in, n_out, random_blocks);
  for (size_t i = 0; i < nx; i++)
    x[i] = rng_float ();
  for (size_t i = 0; i < nx; i += BLN_QK)
    {
      float m = 0;
      for (int k = 0; k < BLN_QK; k++)
        m = MAX (m, fabsf (x[i + k]));
      for (int k = 0; k < BLN_QK; k++)
        amax32[i + k] = m;
    }
  g_assert_true (bln_type_row_bytes (type, n_in, &row_bytes));
  for (int r = 0; r < n_out; r++)
    g_assert_true (bln_dequantize_row (type, (const uint8_t *) t.data + (size_t) r * row_bytes,
                                       w + (size_t) r * n_in, n_in));

  /* per 32 weights: the largest magnitude and the range (the F16 path's
   * bound: its scale and minimum are rounded to F16 on their own) */
  for (size_t i = 0; i < (size_t) n_out * n_in; i += 32)
    {
      float hi = 0, lo_w = w[i], hi_w = w[i];
      for (int k = 0; k < 32; k++)
        {
          hi = MAX (hi, fabsf (w[i + k]));
          lo_w = MIN (lo_w, w[i + k]);
          hi_w = MAX (hi_w, w[i + k]);
        }
      for (int k = 0; k < 32; k++)
        {
          hi32[i + k] = hi;
          rng32[i + k] = hi_w - lo_w;
        }
    }
  ct = bln_cuda_tensor_upload (&t, &error);
  g_assert_no_error (error);
  d_x = bln_cuda_buffer_new_from_host (x, nx * sizeof (float), &error);
  g_assert_no_error (error);
  d_y = bln_cuda_buffer_new (ny * sizeof (float), &error);
  g_assert_no_error (error);
  g_assert_true (BLN_CUDA_CHECK (cudaMemset (d_y->ptr, 0xff, d_y->size), &error));
  g_assert_true (BLN_CUDA_CHECK (prod ((int) ct->type, ct->payload->ptr,
                                       ct->header ? ct->header->ptr : NULL, n_in, n_out,
                                       d_x->ptr, n_tok, d_y->ptr, ldy, 0, 0), &error));
  g_assert_true (BLN_CUDA_CHECK (cudaMemcpy (y_gpu, d_y->ptr, d_y->size,
                                             cudaMemcpyDeviceToHost), &error));
  if (f16)
    {
      /* deterministic: a second run gives the same bits */
      g_assert_true (BLN_CUDA_CHECK (cudaMemset (d_y->ptr, 0xff, d_y->size), &error));
      g_assert_true (BLN_CUDA_CHECK (prod ((int) ct->type, ct->payload->ptr,
                                           ct->header ? ct->header->ptr : NULL, n_in, n_out,
                                           d_x->ptr, n_tok, d_y->ptr, ldy, 0, 0), &error));
      g_assert_true (BLN_CUDA_CHECK (cudaMemcpy (y_again, d_y->ptr, d_y->size,
                                                 cudaMemcpyDeviceToHost), &error));
      if (memcmp (y_gpu, y_again, ny * sizeof (float)) != 0)
        g_error ("mmf %s %dx%d n_tok %d: two runs differ", bln_type_name (type), n_out, n_in,
                 n_tok);
    }
  g_assert_true (BLN_CUDA_CHECK (prod ((int) ct->type, ct->payload->ptr,
                                       ct->header ? ct->header->ptr : NULL, n_in, n_out,
                                       d_x->ptr, n_tok, d_y->ptr, ldy,
                                       BLN_KERNELS_MATVEC_ACCUMULATE, 0), &error));
  g_assert_true (BLN_CUDA_CHECK (cudaMemcpy (y_acc, d_y->ptr, d_y->size,
                                             cudaMemcpyDeviceToHost), &error));
  g_assert_no_error (error);

  for (int tk = 0; tk < n_tok; tk++)
    {
      const float *xt = x + (size_t) tk * n_in, *at = amax32 + (size_t) tk * n_in;

      for (int r = 0; r < ldy; r++)
        {
          const float got = y_gpu[(size_t) tk * ldy + r], acc = y_acc[(size_t) tk * ldy + r];
          double s = 0, bound = 0, mag = 0;

          if (r >= n_out)
            {
              uint32_t bits, bits2;
              memcpy (&bits, &got, 4);
              memcpy (&bits2, &acc, 4);
              if (bits != 0xffffffffu || bits2 != 0xffffffffu)
                g_error ("%s %s %dx%d n_tok %d: padding column %d of token %d was written",
                         what, bln_type_name (type), n_out, n_in, n_tok, r, tk);
              continue;
            }
          for (int k = 0; k < n_in; k++)
            {
              double wk = w[(size_t) r * n_in + k];
              s += wk * xt[k];
              if (f16)
                /* x and w rounded to F16 (2^-11 each, twice for w: its
                 * scale and the fused multiply-add), the scale and the
                 * minimum rounded on their own (bounded through the
                 * block's largest magnitude and range) */
                bound += fabs (xt[k]) * (2 * fabs (wk) + 2 * hi32[(size_t) r * n_in + k]
                                         + 4 * rng32[(size_t) r * n_in + k]) / 1024.0;
              else
                bound += fabs (wk) * at[k] / 254.0;
              mag += fabs (wk * xt[k]);
            }
          bound = 1.01 * bound + 1e-4 * mag;
          if (!isfinite (got) || !(fabs (got - s) <= bound))
            g_error ("%s %s %dx%d n_tok %d (%s): first wrong output token %d row %d: %.6e, "
                     "float64 %.6e, bound %.3e", what, bln_type_name (type), n_out, n_in, n_tok,
                     random_blocks ? "random blocks" : "quantised", tk, r, got, s, bound);
          if (!isfinite (acc) || !(fabs (acc - 2 * s) <= 2 * bound))
            g_error ("%s %s %dx%d n_tok %d (%s): accumulate: token %d row %d: %.6e, "
                     "want 2 x %.6e, bound %.3e", what, bln_type_name (type), n_out, n_in, n_tok,
                     random_blocks ? "random blocks" : "quantised", tk, r, acc, s, 2 * bound);
          worst = MAX (worst, fabs (got - s) / (bound > 0 ? bound : 1));
        }
    }
  g_test_message ("%s %-5s %5d x %-5d n_tok %3d %s: worst error %.2f of the bound", what,
                  bln_type_name (type), n_out, n_in, n_tok,
                  random_blocks ? "random-blocks" : "quantised", worst);
  bln_tensor_clear (&t);
}

static void
run_mmq_case (BlnType type, int n_in, int n_out, int n_tok, gboolean random_blocks)
{
  run_mmq_case_fn (type, n_in, n_out, n_tok, random_blocks, FALSE);
}

/* The F16 tensor-core product (bln_kernels_mmf) in the same harness: token
 * counts at and around its tiles (8, 16, 32, 64 tokens a block), rows not a
 * multiple of its 128-row blocks, K split or not, the 7B shapes. */
static void
test_mmf_type (gconstpointer data)
{
  BlnType type = (BlnType) GPOINTER_TO_INT (data);
  static const int shapes[][3] = {
    { 256, 64, 9 }, { 256, 100, 70 }, { 512, 64, 16 }, { 256, 4128, 128 }, { 1024, 64, 33 },
    { 3584, 512, 64 }, { 3584, 4128, 17 }, { 3584, 18944, 9 }, { 18944, 96, 65 },
    { 2304, 4128, 33 }, { 1024, 200, 130 }, { 3584, 3584, 40 }, { 3584, 512, 2 },
    { 512, 100, 5 },
  };

  if (skip_without_gpu ())
    return;
  if (!bln_kernels_mmf_supports ((int) type))
    {
      g_test_skip ("this GPU has no F16 mma with F32 accumulation (sm_80+)");
      return;
    }
  rng_seed ();
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    for (int mode = 0; mode < 2; mode++)
      run_mmq_case_fn (type, shapes[s][0], shapes[s][1], shapes[s][2], mode == 1, TRUE);
  g_assert_cmpint (bln_kernels_mmf (BLN_TYPE_Q4_0, (void *) 0x1000, (void *) 0x1000, 256, 64,
                                    (float *) 0x2000, 16, (float *) 0x3000, 0, 0, 0), ==,
                   cudaErrorNotSupported);
  g_assert_cmpint (bln_kernels_mmf ((int) type, (void *) 0x1000, (void *) 0x1000, 288, 64,
                                    (float *) 0x2000, 16, (float *) 0x3000, 0, 0, 0), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpint (bln_kernels_mmf ((int) type, (void *) 0x1000, (void *) 0x1000, 256, 64,
                                    (float *) 0x2000, 16, (float *) 0x3000, 63, 0, 0), ==,
                   cudaErrorInvalidValue);
}

static void
test_mmq_type (gconstpointer data)
{
  BlnType type = (BlnType) GPOINTER_TO_INT (data);
  const gboolean kq = type == BLN_TYPE_Q4_K || type == BLN_TYPE_Q5_K || type == BLN_TYPE_Q6_K;
  /* n_in, n_out, n_tok: tile edges in every direction (32 rows, 64 tokens,
   * 128 values per step; 288 values = 9 blocks of 32, a partial step),
   * the 7B widths; the float64 reference bounds the sizes */
  static const int shapes[][3] = {
    { 256, 64, 9 }, { 256, 64, 16 }, { 512, 64, 33 }, { 256, 4128, 128 }, { 1024, 64, 511 },
    { 3584, 4128, 16 }, { 3584, 18944, 9 }, { 14336, 64, 33 }, { 18944, 96, 65 },
    { 2304, 4128, 33 }, { 288, 100, 70 },
  };
  g_autoptr (GError) error = NULL;

  if (skip_without_gpu ())
    return;
  if (!bln_kernels_mmq_supports ((int) type))
    {
      g_test_skip ("this GPU has no int8 mma (sm_80+)");
      return;
    }
  rng_seed ();
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      if (shapes[s][0] % (kq ? 256 : 32) != 0)
        continue;
      for (int mode = 0; mode < 2; mode++)
        run_mmq_case (type, shapes[s][0], shapes[s][1], shapes[s][2], mode == 1);
    }
  /* a type it lacks and bad arguments are refused, not run */
  g_assert_cmpint (bln_kernels_mmq (BLN_TYPE_F16, (void *) 0x1000, (void *) 0x1000, 256, 64,
                                    (float *) 0x2000, 16, (float *) 0x3000, 0, 0, 0), ==,
                   cudaErrorNotSupported);
  g_assert_cmpint (bln_kernels_mmq ((int) type, (void *) 0x1000, (void *) 0x1000, 256 + 16, 64,
                                    (float *) 0x2000, 16, (float *) 0x3000, 0, 0, 0), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpint (bln_kernels_mmq ((int) type, (void *) 0x1000, (void *) 0x1000, 256, 64,
                                    (float *) 0x2000, 16, (float *) 0x3000, 63, 0, 0), ==,
                   cudaErrorInvalidValue);
}

/* ---------------------------------------------------------------------------
 * Decode attention (bln_kernels_attn_decode) against float64
 * ------------------------------------------------------------------------- */

static const char *const kv_names[] = { "f32", "f16", "q8" };

/* One attention case: Hkv KV heads of head dim d, H = ratio * Hkv query
 * heads, n_tok tokens, the first seeing n_pos positions (token t sees n_pos +
 * t), the caches in F32, F16 (rounded on the host, so the reference sees the
 * very values the GPU reads) or 8 bits (kv 2: random int8 values and random
 * F16 scales per 32 values; the reference multiplies them out). Launched
 * twice on the same scratch, the output poisoned with NaN before each: the
 * second run checks that the split counters were left at 0 (it must
 * reproduce the first bit for bit). Each value is checked against float64
 * within 2e-5 of sum_j p_j |v_j| (float32 scores, exp2 and sums). */
static void
attn_case (int d, int ratio, int Hkv, int n_tok, int n_pos, int kv)
{
  const int H = ratio * Hkv, pos0 = n_pos - 1, n_kv = pos0 + n_tok;
  const size_t n_q = (size_t) n_tok * H * d, n_c = (size_t) n_kv * Hkv * d, n_s = n_c / 32;
  const size_t esz = kv == 0 ? 4 : kv == 1 ? 2 : 1;
  const float scale = 1.0f / sqrtf ((float) d);
  g_autofree float *q = g_new (float, n_q);
  g_autofree float *kf = g_new (float, n_c);
  g_autofree float *vf = g_new (float, n_c);
  g_autofree void *kraw = g_malloc (n_c * esz);
  g_autofree void *vraw = g_malloc (n_c * esz);
  g_autofree bln_half *ks = g_new (bln_half, n_s);
  g_autofree bln_half *vs = g_new (bln_half, n_s);
  g_autofree float *out = g_new (float, n_q);
  g_autofree float *out2 = g_new (float, n_q);
  g_autofree double *sc = g_new (double, n_kv);
  g_autoptr (BlnCudaBuffer) d_q = NULL;
  g_autoptr (BlnCudaBuffer) d_k = NULL;
  g_autoptr (BlnCudaBuffer) d_v = NULL;
  g_autoptr (BlnCudaBuffer) d_ks = NULL;
  g_autoptr (BlnCudaBuffer) d_vs = NULL;
  g_autoptr (BlnCudaBuffer) d_pos = NULL;
  g_autoptr (BlnCudaBuffer) d_out = NULL;
  g_autoptr (BlnCudaBuffer) d_scr = NULL;
  size_t scr = bln_kernels_attn_decode_scratch (MAX (n_tok, 8), H, Hkv, d);
  GError *error = NULL;
  double worst = 0;

  for (size_t i = 0; i < n_q; i++)
    q[i] = 4.0f * rng_float ();   /* scores spread over a few units */
  if (kv == 2)
    for (size_t i = 0; i < n_s; i++)
      {
        ks[i] = bln_float_to_half (0.011f + 0.009f * rng_float ());   /* 0.002 .. 0.02 */
        vs[i] = bln_float_to_half (0.011f + 0.009f * rng_float ());
      }
  for (size_t i = 0; i < n_c; i++)
    {
      kf[i] = rng_float ();
      vf[i] = rng_float ();
      if (kv == 2)
        {
          int8_t a = (int8_t) lrintf (127.0f * kf[i]), b = (int8_t) lrintf (127.0f * vf[i]);

          ((int8_t *) kraw)[i] = a;
          ((int8_t *) vraw)[i] = b;
          kf[i] = (float) a * bln_half_to_float (ks[i / 32]);
          vf[i] = (float) b * bln_half_to_float (vs[i / 32]);
        }
      else if (kv == 1)
        {
          ((bln_half *) kraw)[i] = bln_float_to_half (kf[i]);
          ((bln_half *) vraw)[i] = bln_float_to_half (vf[i]);
          kf[i] = bln_half_to_float (((bln_half *) kraw)[i]);
          vf[i] = bln_half_to_float (((bln_half *) vraw)[i]);
        }
      else
        {
          ((float *) kraw)[i] = kf[i];
          ((float *) vraw)[i] = vf[i];
        }
    }
  g_assert_cmpuint (scr, >, 0);
  d_q = bln_cuda_buffer_new_from_host (q, n_q * sizeof (float), &error);
  g_assert_no_error (error);
  d_k = bln_cuda_buffer_new_from_host (kraw, n_c * esz, &error);
  g_assert_no_error (error);
  d_v = bln_cuda_buffer_new_from_host (vraw, n_c * esz, &error);
  g_assert_no_error (error);
  d_ks = bln_cuda_buffer_new_from_host (ks, n_s * sizeof (bln_half), &error);
  g_assert_no_error (error);
  d_vs = bln_cuda_buffer_new_from_host (vs, n_s * sizeof (bln_half), &error);
  g_assert_no_error (error);
  d_pos = bln_cuda_buffer_new_from_host (&pos0, sizeof (int), &error);
  g_assert_no_error (error);
  d_out = bln_cuda_buffer_new (n_q * sizeof (float), &error);
  g_assert_no_error (error);
  d_scr = bln_cuda_buffer_new (scr, &error);
  g_assert_no_error (error);
  g_assert_cmpint (cudaMemset (d_scr->ptr, 0, scr), ==, cudaSuccess);
  for (int run = 0; run < 2; run++)
    {
      g_assert_cmpint (cudaMemset (d_out->ptr, 0xff, n_q * sizeof (float)), ==, cudaSuccess);
      if (kv == 2)
        g_assert_cmpint (bln_kernels_attn_decode_q8 (d_q->ptr, 0, n_tok, d_pos->ptr, H, Hkv, d,
                                                     scale, d_k->ptr, d_ks->ptr, d_v->ptr,
                                                     d_vs->ptr, d_scr->ptr, d_out->ptr, 0),
                         ==, cudaSuccess);
      else
        g_assert_cmpint (bln_kernels_attn_decode (d_q->ptr, 0, n_tok, d_pos->ptr, H, Hkv, d, d,
                                                  scale, d_k->ptr, d_v->ptr, kv, d_scr->ptr,
                                                  d_out->ptr, 0), ==, cudaSuccess);
      g_assert_cmpint (cudaMemcpy (run == 0 ? out : out2, d_out->ptr, n_q * sizeof (float),
                                   cudaMemcpyDeviceToHost), ==, cudaSuccess);
    }
  g_assert_cmpint (memcmp (out, out2, n_q * sizeof (float)), ==, 0);

  for (int t = 0; t < n_tok; t++)
    for (int h = 0; h < H; h++)
      {
        const int kvh = h / ratio, len = pos0 + t + 1;
        const float *qr = q + ((size_t) t * H + h) * d;
        double mx = -INFINITY, sum = 0;

        for (int j = 0; j < len; j++)
          {
            const float *kr = kf + ((size_t) j * Hkv + kvh) * d;
            double s = 0;

            for (int i = 0; i < d; i++)
              s += (double) qr[i] * kr[i];
            sc[j] = s * scale;
            mx = MAX (mx, sc[j]);
          }
        for (int j = 0; j < len; j++)
          {
            sc[j] = exp (sc[j] - mx);
            sum += sc[j];
          }
        for (int i = 0; i < d; i++)
          {
            double ref = 0, mag = 0, got = out[((size_t) t * H + h) * d + i];

            for (int j = 0; j < len; j++)
              {
                double v = vf[((size_t) j * Hkv + kvh) * d + i];

                ref += sc[j] * v;
                mag += sc[j] * fabs (v);
              }
            ref /= sum;
            mag /= sum;
            if (!isfinite (got) || fabs (got - ref) > 2e-5 * mag + 1e-7)
              g_error ("attention d %d ratio %d Hkv %d n_tok %d n_pos %d %s: token %d head %d "
                       "value %d: %.9g, expected %.9g (magnitude %.3g)",
                       d, ratio, Hkv, n_tok, n_pos, kv_names[kv], t, h, i, got, ref, mag);
            worst = MAX (worst, fabs (got - ref) / (mag + 1e-30));
          }
      }
  g_test_message ("d %d ratio %d Hkv %d n_tok %d n_pos %d %s: worst error / magnitude %.3g", d,
                  ratio, Hkv, n_tok, n_pos, kv_names[kv], worst);
}

/* The 8-bit KV store against its definition: per 32 values, scale = F16
 * rounding of amax / 127, value = round (x / scale) within +-127 (so
 * |q scale - x| <= scale / 2 but where the F16 scale rounded down, at the
 * block's largest value); rows with an outlier channel, K and V of two
 * tokens at position 5. */
/* The flash prefill attention against float64 on the same F16 values:
 * every row of every head, positions pos0 .. pos0 + n - 1 over a cache of
 * pos0 + n rows, GQA groups of 1-7, output poisoned first. The bound allows
 * for the probabilities' F16 rounding (the cuBLAS path rounds them too). */
static void
test_flash_prefill (void)
{
  static const struct { int H, Hkv, d, n, pos0; } cases[] = {
    { 4, 2, 16, 17, 0 },  { 4, 2, 16, 130, 37 }, { 8, 8, 64, 100, 5 },  { 2, 1, 64, 64, 64 },
    { 28, 4, 128, 1, 0 }, { 28, 4, 128, 64, 0 }, { 28, 4, 128, 200, 333 }, { 7, 1, 128, 65, 63 },
  };
  GError *error = NULL;

  if (skip_without_gpu ())
    return;
  g_assert_cmpint (bln_kernels_flash_prefill_supports (28, 4, 128, 128), ==, 1);
  g_assert_cmpint (bln_kernels_flash_prefill_supports (28, 4, 128, 64), ==, 0);
  g_assert_cmpint (bln_kernels_flash_prefill_supports (28, 5, 128, 128), ==, 0);
  g_assert_cmpint (bln_kernels_flash_prefill_supports (4, 2, 12, 12), ==, 0);
  g_assert_cmpint (bln_kernels_flash_prefill (NULL, 1, 0, 4, 2, 16, 1.f, (void *) 16,
                                              (void *) 16, (float *) 16, 0), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpint (bln_kernels_flash_prefill ((void *) 16, 0, 0, 4, 2, 16, 1.f, (void *) 16,
                                              (void *) 16, (float *) 16, 0), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpint (bln_kernels_flash_prefill ((void *) 16, 1, 0, 4, 2, 32, 1.f, (void *) 16,
                                              (void *) 16, (float *) 16, 0), ==,
                   cudaErrorInvalidValue);
  rng_state = 0x3c6ef372fe94f82bULL;
  for (guint ci = 0; ci < G_N_ELEMENTS (cases); ci++)
    {
      const int H = cases[ci].H, Hkv = cases[ci].Hkv, d = cases[ci].d, n = cases[ci].n;
      const int pos0 = cases[ci].pos0, P = pos0 + n, group = H / Hkv;
      const size_t nq = (size_t) n * H * d, nkv = (size_t) P * Hkv * d;
      const float scale = 1.0f / sqrtf ((float) d);
      g_autofree bln_half *q = g_new (bln_half, nq);
      g_autofree bln_half *k = g_new (bln_half, nkv);
      g_autofree bln_half *v = g_new (bln_half, nkv);
      g_autofree float *out = g_new (float, nq);
      g_autofree double *w = g_new (double, P);
      g_autoptr (BlnCudaBuffer) d_q = NULL;
      g_autoptr (BlnCudaBuffer) d_k = NULL;
      g_autoptr (BlnCudaBuffer) d_v = NULL;
      g_autoptr (BlnCudaBuffer) d_o = NULL;
      double worst = 0, vmax = 0;

      /* queries scaled up so that some rows are sharply peaked */
      for (size_t i = 0; i < nq; i++)
        q[i] = bln_float_to_half (rng_float () * (i % 5 == 0 ? 6.0f : 2.0f));
      for (size_t i = 0; i < nkv; i++)
        {
          k[i] = bln_float_to_half (rng_float () * 2.0f);
          v[i] = bln_float_to_half (rng_float ());
          vmax = MAX (vmax, fabs (bln_half_to_float (v[i])));
        }
      for (size_t i = 0; i < nq; i++)
        out[i] = NAN;
      d_q = bln_cuda_buffer_new_from_host (q, nq * 2, &error);
      g_assert_no_error (error);
      d_k = bln_cuda_buffer_new_from_host (k, nkv * 2, &error);
      g_assert_no_error (error);
      d_v = bln_cuda_buffer_new_from_host (v, nkv * 2, &error);
      g_assert_no_error (error);
      d_o = bln_cuda_buffer_new_from_host (out, nq * sizeof (float), &error);
      g_assert_no_error (error);
      g_assert_cmpint (bln_kernels_flash_prefill (d_q->ptr, n, pos0, H, Hkv, d, scale, d_k->ptr,
                                                  d_v->ptr, d_o->ptr, 0), ==, cudaSuccess);
      g_assert_cmpint (cudaDeviceSynchronize (), ==, cudaSuccess);
      g_assert_cmpint (cudaMemcpy (out, d_o->ptr, nq * sizeof (float), cudaMemcpyDeviceToHost),
                       ==, cudaSuccess);
      for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++)
          {
            const bln_half *qr = q + ((size_t) t * H + h) * d;
            const int hk = h / group, last = pos0 + t;
            double mx = -INFINITY, sum = 0;

            for (int j = 0; j <= last; j++)
              {
                const bln_half *kr = k + ((size_t) j * Hkv + hk) * d;
                double dot = 0;

                for (int i = 0; i < d; i++)
                  dot += (double) bln_half_to_float (qr[i]) * bln_half_to_float (kr[i]);
                w[j] = dot * scale;
                mx = MAX (mx, w[j]);
              }
            for (int j = 0; j <= last; j++)
              sum += (w[j] = exp (w[j] - mx));
            for (int i = 0; i < d; i++)
              {
                double ref = 0;
                const float got = out[((size_t) t * H + h) * d + i];

                for (int j = 0; j <= last; j++)
                  ref += w[j] * bln_half_to_float (v[((size_t) j * Hkv + hk) * d + i]);
                ref /= sum;
                g_assert_true (isfinite (got));
                worst = MAX (worst, fabs (got - ref));
              }
          }
      g_test_message ("flash prefill H %d Hkv %d d %d n %d pos0 %d: worst %.3g of max |v| %.3g",
                      H, Hkv, d, n, pos0, worst, vmax);
      g_assert_cmpfloat (worst, <=, 2e-3 * vmax);
    }
}

/* The flash prefill over a paged pool (scattered blocks, another layer's
 * rows in between, float queries with a padded stride) gives bit for bit
 * what the plain kernel gives over the same rows laid out as a cache, with
 * the queries rounded to F16 beforehand. */
static void
test_flash_prefill_paged (void)
{
  static const struct { int H, Hkv, d, n, pos0, bs; } cases[] = {
    { 4, 2, 16, 40, 9, 16 }, { 28, 4, 128, 150, 70, 16 }, { 8, 2, 64, 65, 0, 32 },
  };
  const int n_layer = 3, layer = 1, n_blocks = 24;
  GError *error = NULL;

  if (skip_without_gpu ())
    return;
  g_assert_cmpint (bln_kernels_flash_prefill_paged (NULL, 256, 1, 0, 4, 2, 16, 1.f, (void *) 16,
                                                    (void *) 16, (int32_t *) 16, 3, 1, 16,
                                                    (float *) 16, 0), ==, cudaErrorInvalidValue);
  g_assert_cmpint (bln_kernels_flash_prefill_paged ((float *) 16, 63, 1, 0, 4, 2, 16, 1.f,
                                                    (void *) 16, (void *) 16, (int32_t *) 16, 3,
                                                    1, 16, (float *) 16, 0), ==,
                   cudaErrorInvalidValue);
  g_assert_cmpint (bln_kernels_flash_prefill_paged ((float *) 16, 64, 1, 0, 4, 2, 16, 1.f,
                                                    (void *) 16, (void *) 16, (int32_t *) 16, 3,
                                                    3, 16, (float *) 16, 0), ==,
                   cudaErrorInvalidValue);
  rng_state = 0x510e527fade682d1ULL;
  for (guint ci = 0; ci < G_N_ELEMENTS (cases); ci++)
    {
      const int H = cases[ci].H, Hkv = cases[ci].Hkv, d = cases[ci].d, n = cases[ci].n;
      const int pos0 = cases[ci].pos0, bs = cases[ci].bs, P = pos0 + n, row = Hkv * d;
      const int q_ld = H * d + 6, n_tab = (P + bs - 1) / bs;
      const size_t pool_rows = (size_t) n_blocks * n_layer * bs;
      g_autofree bln_half *kp = g_new (bln_half, pool_rows * row);
      g_autofree bln_half *vp = g_new (bln_half, pool_rows * row);
      g_autofree bln_half *kc = g_new (bln_half, (size_t) P * row);
      g_autofree bln_half *vc = g_new (bln_half, (size_t) P * row);
      g_autofree float *qf = g_new (float, (size_t) n * q_ld);
      g_autofree bln_half *qh = g_new (bln_half, (size_t) n * H * d);
      g_autofree float *o1 = g_new (float, (size_t) n * H * d);
      g_autofree float *o2 = g_new (float, (size_t) n * H * d);
      int32_t tab[64];
      g_autoptr (BlnCudaBuffer) d_kp = NULL;
      g_autoptr (BlnCudaBuffer) d_vp = NULL;
      g_autoptr (BlnCudaBuffer) d_kc = NULL;
      g_autoptr (BlnCudaBuffer) d_vc = NULL;
      g_autoptr (BlnCudaBuffer) d_qf = NULL;
      g_autoptr (BlnCudaBuffer) d_qh = NULL;
      g_autoptr (BlnCudaBuffer) d_tab = NULL;
      g_autoptr (BlnCudaBuffer) d_o1 = NULL;
      g_autoptr (BlnCudaBuffer) d_o2 = NULL;

      g_assert_cmpint (n_tab, <=, n_blocks);
      /* a table of distinct blocks in a shuffled order */
      for (int i = 0; i < n_blocks; i++)
        tab[i] = i;
      for (int i = n_blocks - 1; i > 0; i--)
        {
          int j = (int) (rng_next () % (uint64_t) (i + 1)), tmp = tab[i];

          tab[i] = tab[j];
          tab[j] = tmp;
        }
      for (size_t i = 0; i < pool_rows * row; i++)
        {
          kp[i] = bln_float_to_half (rng_float () * 2.0f);
          vp[i] = bln_float_to_half (rng_float ());
        }
      for (int p = 0; p < P; p++)
        {
          size_t r = bln_paged_row (tab, n_layer, layer, bs, p);

          memcpy (kc + (size_t) p * row, kp + r * row, (size_t) row * 2);
          memcpy (vc + (size_t) p * row, vp + r * row, (size_t) row * 2);
        }
      for (int t = 0; t < n; t++)
        for (int i = 0; i < q_ld; i++)
          {
            float x = rng_float () * 3.0f;

            qf[(size_t) t * q_ld + i] = x;
            if (i < H * d)
              qh[(size_t) t * H * d + i] = bln_float_to_half (x);
          }
      d_kp = bln_cuda_buffer_new_from_host (kp, pool_rows * row * 2, &error);
      g_assert_no_error (error);
      d_vp = bln_cuda_buffer_new_from_host (vp, pool_rows * row * 2, &error);
      g_assert_no_error (error);
      d_kc = bln_cuda_buffer_new_from_host (kc, (size_t) P * row * 2, &error);
      g_assert_no_error (error);
      d_vc = bln_cuda_buffer_new_from_host (vc, (size_t) P * row * 2, &error);
      g_assert_no_error (error);
      d_qf = bln_cuda_buffer_new_from_host (qf, (size_t) n * q_ld * sizeof (float), &error);
      g_assert_no_error (error);
      d_qh = bln_cuda_buffer_new_from_host (qh, (size_t) n * H * d * 2, &error);
      g_assert_no_error (error);
      d_tab = bln_cuda_buffer_new_from_host (tab, sizeof tab, &error);
      g_assert_no_error (error);
      d_o1 = bln_cuda_buffer_new ((size_t) n * H * d * sizeof (float), &error);
      g_assert_no_error (error);
      d_o2 = bln_cuda_buffer_new ((size_t) n * H * d * sizeof (float), &error);
      g_assert_no_error (error);
      g_assert_cmpint (cudaMemset (d_o2->ptr, 0xff, (size_t) n * H * d * sizeof (float)), ==,
                       cudaSuccess);
      g_assert_cmpint (bln_kernels_flash_prefill (d_qh->ptr, n, pos0, H, Hkv, d, 0.125f,
                                                  d_kc->ptr, d_vc->ptr, d_o1->ptr, 0), ==,
                       cudaSuccess);
      g_assert_cmpint (bln_kernels_flash_prefill_paged (d_qf->ptr, q_ld, n, pos0, H, Hkv, d,
                                                        0.125f, d_kp->ptr, d_vp->ptr,
                                                        d_tab->ptr, n_layer, layer, bs,
                                                        d_o2->ptr, 0), ==, cudaSuccess);
      g_assert_cmpint (cudaDeviceSynchronize (), ==, cudaSuccess);
      g_assert_cmpint (cudaMemcpy (o1, d_o1->ptr, (size_t) n * H * d * sizeof (float),
                                   cudaMemcpyDeviceToHost), ==, cudaSuccess);
      g_assert_cmpint (cudaMemcpy (o2, d_o2->ptr, (size_t) n * H * d * sizeof (float),
                                   cudaMemcpyDeviceToHost), ==, cudaSuccess);
      g_assert_cmpmem (o2, (size_t) n * H * d * sizeof (float), o1,
                       (size_t) n * H * d * sizeof (float));
    }
}

static void
test_kv_store_q8 (void)
{
  const int Hkv = 3, dk = 128, dv = 64, n_tok = 2, ld = Hkv * (dk + dv) + 8, pos0 = 5;
  float x[2 * (3 * (128 + 64) + 8)];
  int8_t kq[7 * 3 * 128], vq[7 * 3 * 64];
  bln_half ksc[7 * 3 * 4], vsc[7 * 3 * 2];
  g_autoptr (BlnCudaBuffer) d_x = NULL;
  g_autoptr (BlnCudaBuffer) d_pos = NULL;
  g_autoptr (BlnCudaBuffer) d_kq = NULL;
  g_autoptr (BlnCudaBuffer) d_vq = NULL;
  g_autoptr (BlnCudaBuffer) d_ks = NULL;
  g_autoptr (BlnCudaBuffer) d_vs = NULL;
  GError *error = NULL;

  if (skip_without_gpu ())
    return;
  rng_state = 0xa4093822299f31d0ULL;
  for (guint i = 0; i < G_N_ELEMENTS (x); i++)
    x[i] = rng_float () * (i % 37 == 3 ? 40.0f : 1.0f);
  x[0] = 0.0f;   /* one all-zero block: scale 0, values 0 */
  for (int i = 0; i < 32; i++)
    x[i] = 0.0f;
  d_x = bln_cuda_buffer_new_from_host (x, sizeof x, &error);
  g_assert_no_error (error);
  d_pos = bln_cuda_buffer_new_from_host (&pos0, sizeof pos0, &error);
  g_assert_no_error (error);
  d_kq = bln_cuda_buffer_new (sizeof kq, &error);
  g_assert_no_error (error);
  d_vq = bln_cuda_buffer_new (sizeof vq, &error);
  g_assert_no_error (error);
  d_ks = bln_cuda_buffer_new (sizeof ksc, &error);
  g_assert_no_error (error);
  d_vs = bln_cuda_buffer_new (sizeof vsc, &error);
  g_assert_no_error (error);
  g_assert_cmpint (bln_kernels_kv_store_q8 (d_x->ptr, (float *) d_x->ptr + Hkv * dk, n_tok, ld,
                                            d_pos->ptr, Hkv, dk, dv, d_kq->ptr, d_ks->ptr,
                                            d_vq->ptr, d_vs->ptr, 0), ==, cudaSuccess);
  g_assert_cmpint (cudaMemcpy (kq, d_kq->ptr, sizeof kq, cudaMemcpyDeviceToHost), ==,
                   cudaSuccess);
  g_assert_cmpint (cudaMemcpy (vq, d_vq->ptr, sizeof vq, cudaMemcpyDeviceToHost), ==,
                   cudaSuccess);
  g_assert_cmpint (cudaMemcpy (ksc, d_ks->ptr, sizeof ksc, cudaMemcpyDeviceToHost), ==,
                   cudaSuccess);
  g_assert_cmpint (cudaMemcpy (vsc, d_vs->ptr, sizeof vsc, cudaMemcpyDeviceToHost), ==,
                   cudaSuccess);
  for (int t = 0; t < n_tok; t++)
    for (int h = 0; h < Hkv; h++)
      for (int is_v = 0; is_v < 2; is_v++)
        {
          const int d = is_v ? dv : dk;
          const float *row = x + (size_t) t * ld + (is_v ? Hkv * dk + h * dv : h * dk);
          const size_t r = (size_t) (pos0 + t) * Hkv + h;

          for (int b = 0; b < d / 32; b++)
            {
              float amax = 0, s;
              bln_half sh = (is_v ? vsc : ksc)[r * (d / 32) + b];

              for (int i = 0; i < 32; i++)
                amax = MAX (amax, fabsf (row[b * 32 + i]));
              g_assert_cmpuint (sh, ==, bln_float_to_half (amax / 127.0f));
              s = bln_half_to_float (sh);
              for (int i = 0; i < 32; i++)
                {
                  const int qv = (is_v ? vq : kq)[r * d + b * 32 + i];
                  const float xv = row[b * 32 + i];

                  g_assert_cmpint (abs (qv), <=, 127);
                  if (s == 0.0f)
                    g_assert_cmpint (qv, ==, 0);
                  else if (fabsf (xv / s) <= 127.0f)
                    g_assert_cmpfloat (fabsf ((float) qv * s - xv), <=, 0.5001f * s);
                  else
                    g_assert_cmpint (qv, ==, xv > 0 ? 127 : -127);
                }
            }
        }
}

static void
test_attn_decode (gconstpointer data)
{
  static const int positions[] = { 1, 2, 17, 100, 1000, 5000, 33000 };
  static const int ratios[] = { 1, 4, 7 };
  static const int long_toks[] = { 1, 3, 8 };
  const int kv = GPOINTER_TO_INT (data);

  if (skip_without_gpu ())
    return;
  rng_state = 0x13198a2e03707344ULL ^ (uint64_t) kv;
  for (int d = 64; d <= 128; d *= 2)
    for (guint r = 0; r < G_N_ELEMENTS (ratios); r++)
      for (guint p = 0; p < G_N_ELEMENTS (positions); p++)
        {
          /* every token count at short context, 1 / 3 / 8 (and one KV head,
           * to bound the float64 reference's time) at long context */
          if (positions[p] < 1000)
            for (int n = 1; n <= 8; n++)
              attn_case (d, ratios[r], 2, n, positions[p], kv);
          else
            for (guint k = 0; k < G_N_ELEMENTS (long_toks); k++)
              attn_case (d, ratios[r], 1, long_toks[k], positions[p], kv);
        }
}

/* ---------------------------------------------------------------------------
 * The fused RoPE + KV store + decode attention (bln_kernels_attn_decode_rope)
 * against bln_kernels_rope_store then bln_kernels_attn_decode_round
 * ------------------------------------------------------------------------- */

/* Copies @n bytes of device memory at @dev into a new host block. */
static void *
dev_copy (const void *dev, size_t n)
{
  void *h = g_malloc (n);

  g_assert_cmpint (cudaMemcpy (h, dev, n, cudaMemcpyDeviceToHost), ==, cudaSuccess);
  return h;
}

static void
assert_same_bytes (const void *a, const void *b, size_t n, const char *what, const char *which)
{
  if (memcmp (a, b, n) != 0)
    {
      size_t i = 0;

      while (((const uint8_t *) a)[i] == ((const uint8_t *) b)[i])
        i++;
      g_error ("%s: %s differs from the two-kernel path at byte %zu of %zu", which, what, i, n);
    }
}

/* The matvec's 8-bit scratch for one token of @n values: poisoned, or read
 * back (values, then the float2 and float4 scales of each 32). */
static void
xq_poison (const BlnKernelsXq *xq, int n)
{
  g_assert_cmpint (cudaMemset (xq->q, 0xff, (size_t) n), ==, cudaSuccess);
  g_assert_cmpint (cudaMemset (xq->d, 0xff, (size_t) n / 32 * 8), ==, cudaSuccess);
  g_assert_cmpint (cudaMemset (xq->s, 0xff, (size_t) n / 32 * 16), ==, cudaSuccess);
}

static uint8_t *
xq_read (const BlnKernelsXq *xq, int n)
{
  uint8_t *h = g_malloc ((size_t) n + (size_t) n / 32 * 24);

  g_assert_cmpint (cudaMemcpy (h, xq->q, (size_t) n, cudaMemcpyDeviceToHost), ==, cudaSuccess);
  g_assert_cmpint (cudaMemcpy (h + n, xq->d, (size_t) n / 32 * 8, cudaMemcpyDeviceToHost), ==,
                   cudaSuccess);
  g_assert_cmpint (cudaMemcpy (h + n + (size_t) n / 32 * 8, xq->s, (size_t) n / 32 * 16,
                               cudaMemcpyDeviceToHost), ==, cudaSuccess);
  return h;
}

/* One token at position pos0 over a cache of F16 (kv_f16) or F32 values
 * whose rows 0 .. pos0 - 1 hold random values (rows pos0 and pos0 + 1
 * poisoned with 0xff bytes), H query heads over Hkv KV heads of head dim d,
 * the first rope_dim values rotated; for NeoX and normal RoPE, with and
 * without q / k / v biases. The two-kernel path runs on one copy of the
 * q / k / v row and the caches, the fused kernel (twice, on one scratch, to
 * see the split counters left at 0 and the step repeatable) on another,
 * outputs and the 8-bit scratch poisoned before each run: the attention
 * output, the 8-bit rounding (when the kernels write it), the whole caches
 * must match byte for byte, and the fused kernel must leave q / k / v as
 * they were. */
static void
rope_attn_case (int H, int Hkv, int d, int rope_dim, int pos0, int kv_f16)
{
  const int ld = (H + 2 * Hkv) * d, n_rows = pos0 + 2;
  const size_t esz = kv_f16 ? 2 : 4, n_c = (size_t) n_rows * Hkv * d;
  const size_t c_bytes = n_c * esz, o_bytes = (size_t) H * d * sizeof (float);
  const float scale = 1.0f / sqrtf ((float) d);
  g_autofree float *qkv = g_new (float, ld);
  g_autofree float *bias = g_new (float, ld);
  g_autofree float *inv_freq = g_new (float, MAX (rope_dim / 2, 1));
  g_autofree uint8_t *kraw = g_malloc (c_bytes);
  g_autofree uint8_t *vraw = g_malloc (c_bytes);
  g_autoptr (BlnCudaBuffer) d_qkv_a = NULL;
  g_autoptr (BlnCudaBuffer) d_qkv_b = NULL;
  g_autoptr (BlnCudaBuffer) d_bias = NULL;
  g_autoptr (BlnCudaBuffer) d_inv = NULL;
  g_autoptr (BlnCudaBuffer) d_pos = NULL;
  g_autoptr (BlnCudaBuffer) d_k_a = NULL;
  g_autoptr (BlnCudaBuffer) d_v_a = NULL;
  g_autoptr (BlnCudaBuffer) d_k_b = NULL;
  g_autoptr (BlnCudaBuffer) d_v_b = NULL;
  g_autoptr (BlnCudaBuffer) d_out_a = NULL;
  g_autoptr (BlnCudaBuffer) d_out_b = NULL;
  g_autoptr (BlnCudaBuffer) d_scr = NULL;
  size_t scr = bln_kernels_attn_decode_scratch (8, H, Hkv, d);
  BlnKernelsXq xq;
  GError *error = NULL;

  g_assert_cmpint (bln_kernels_xq_scratch (&xq), ==, cudaSuccess);
  g_assert_cmpint (H * d, <=, xq.max_values);
  for (int i = 0; i < ld; i++)
    {
      qkv[i] = 2.0f * rng_float ();
      bias[i] = 0.5f * rng_float ();
    }
  /* the models' table, theta 1e6 (qwen2) */
  for (int i = 0; i < rope_dim / 2; i++)
    inv_freq[i] = powf (1e6f, -2.0f * (float) i / (float) rope_dim);
  if (rope_dim == 0)
    inv_freq[0] = 1.0f;
  for (size_t i = 0; i < n_c; i++)
    {
      const float kf = rng_float (), vf = rng_float ();

      if (i >= (size_t) pos0 * Hkv * d)
        {
          memset (kraw + i * esz, 0xff, esz);
          memset (vraw + i * esz, 0xff, esz);
        }
      else if (kv_f16)
        {
          ((bln_half *) kraw)[i] = bln_float_to_half (kf);
          ((bln_half *) vraw)[i] = bln_float_to_half (vf);
        }
      else
        {
          ((float *) kraw)[i] = kf;
          ((float *) vraw)[i] = vf;
        }
    }
  g_assert_cmpuint (scr, >, 0);
  d_qkv_a = bln_cuda_buffer_new (ld * sizeof (float), &error);
  g_assert_no_error (error);
  d_qkv_b = bln_cuda_buffer_new (ld * sizeof (float), &error);
  g_assert_no_error (error);
  /* the biases side by side as q / k / v are: bq, then bk, then bv */
  d_bias = bln_cuda_buffer_new_from_host (bias, ld * sizeof (float), &error);
  g_assert_no_error (error);
  d_inv = bln_cuda_buffer_new_from_host (inv_freq, MAX (rope_dim / 2, 1) * sizeof (float),
                                         &error);
  g_assert_no_error (error);
  d_pos = bln_cuda_buffer_new_from_host (&pos0, sizeof (int), &error);
  g_assert_no_error (error);
  d_k_a = bln_cuda_buffer_new (c_bytes, &error);
  g_assert_no_error (error);
  d_v_a = bln_cuda_buffer_new (c_bytes, &error);
  g_assert_no_error (error);
  d_k_b = bln_cuda_buffer_new (c_bytes, &error);
  g_assert_no_error (error);
  d_v_b = bln_cuda_buffer_new (c_bytes, &error);
  g_assert_no_error (error);
  d_out_a = bln_cuda_buffer_new (o_bytes, &error);
  g_assert_no_error (error);
  d_out_b = bln_cuda_buffer_new (o_bytes, &error);
  g_assert_no_error (error);
  d_scr = bln_cuda_buffer_new (scr, &error);
  g_assert_no_error (error);
  g_assert_cmpint (cudaMemset (d_scr->ptr, 0, scr), ==, cudaSuccess);
  g_assert_true (bln_kernels_attn_decode_rope_supports (H, Hkv, d, d, rope_dim, d_k_b->ptr,
                                                        d_v_b->ptr));

  for (int neox = 0; neox < 2; neox++)
    for (int with_bias = 0; with_bias < 2; with_bias++)
      {
        const float *bq = with_bias ? (const float *) d_bias->ptr : NULL;
        const float *bk = with_bias ? bq + (size_t) H * d : NULL;
        const float *bv = with_bias ? bq + (size_t) (H + Hkv) * d : NULL;
        const float af = with_bias ? 1.0f : 1.0986123f;   /* attention factor, YaRN-like */
        float *qa = d_qkv_a->ptr, *qb = d_qkv_b->ptr;
        g_autofree char *which = g_strdup_printf ("H %d Hkv %d d %d rope %d pos %d %s %s%s", H,
                                                  Hkv, d, rope_dim, pos0,
                                                  kv_f16 ? "f16" : "f32",
                                                  neox ? "neox" : "normal",
                                                  with_bias ? " biases" : "");
        g_autofree float *out_a = NULL;
        g_autofree uint8_t *xq_a = NULL;
        g_autofree void *k_a = NULL, *v_a = NULL, *k_b = NULL, *v_b = NULL, *qkv_b = NULL;
        int rounded_a = -1;

        g_assert_cmpint (cudaMemcpy (qa, qkv, ld * sizeof (float), cudaMemcpyHostToDevice), ==,
                         cudaSuccess);
        g_assert_cmpint (cudaMemcpy (qb, qkv, ld * sizeof (float), cudaMemcpyHostToDevice), ==,
                         cudaSuccess);
        g_assert_cmpint (cudaMemcpy (d_k_a->ptr, kraw, c_bytes, cudaMemcpyHostToDevice), ==,
                         cudaSuccess);
        g_assert_cmpint (cudaMemcpy (d_v_a->ptr, vraw, c_bytes, cudaMemcpyHostToDevice), ==,
                         cudaSuccess);
        g_assert_cmpint (cudaMemcpy (d_k_b->ptr, kraw, c_bytes, cudaMemcpyHostToDevice), ==,
                         cudaSuccess);
        g_assert_cmpint (cudaMemcpy (d_v_b->ptr, vraw, c_bytes, cudaMemcpyHostToDevice), ==,
                         cudaSuccess);

        /* the two kernels */
        g_assert_cmpint (cudaMemset (d_out_a->ptr, 0xff, o_bytes), ==, cudaSuccess);
        xq_poison (&xq, H * d);
        g_assert_cmpint (bln_kernels_rope_store (qa, qa + H * d, qa + (H + Hkv) * d, bq, bk, bv,
                                                 1, ld, d_pos->ptr, H, Hkv, d, d, rope_dim, neox,
                                                 d_inv->ptr, af, d_k_a->ptr, d_v_a->ptr, kv_f16,
                                                 NULL, 0), ==, cudaSuccess);
        g_assert_cmpint (bln_kernels_attn_decode_round (qa, ld, 1, d_pos->ptr, H, Hkv, d, d,
                                                        scale, d_k_a->ptr, d_v_a->ptr, kv_f16,
                                                        d_scr->ptr, d_out_a->ptr, &rounded_a,
                                                        0), ==, cudaSuccess);
        g_assert_cmpint (cudaDeviceSynchronize (), ==, cudaSuccess);
        out_a = dev_copy (d_out_a->ptr, o_bytes);
        xq_a = xq_read (&xq, H * d);
        for (int i = 0; i < H * d; i++)
          g_assert_true (isfinite (out_a[i]));

        /* the fused kernel, twice */
        for (int run = 0; run < 2; run++)
          {
            g_autofree float *out_b = NULL;
            g_autofree uint8_t *xq_b = NULL;
            int rounded_b = -1;

            g_assert_cmpint (cudaMemset (d_out_b->ptr, 0xff, o_bytes), ==, cudaSuccess);
            xq_poison (&xq, H * d);
            g_assert_cmpint (bln_kernels_attn_decode_rope (qb, qb + H * d, qb + (H + Hkv) * d,
                                                           bq, bk, bv, d_pos->ptr, H, Hkv, d, d,
                                                           rope_dim, neox, d_inv->ptr, af, scale,
                                                           d_k_b->ptr, d_v_b->ptr, kv_f16,
                                                           d_scr->ptr, d_out_b->ptr, &rounded_b,
                                                           0), ==, cudaSuccess);
            g_assert_cmpint (cudaDeviceSynchronize (), ==, cudaSuccess);
            out_b = dev_copy (d_out_b->ptr, o_bytes);
            xq_b = xq_read (&xq, H * d);
            g_assert_cmpint (rounded_b, ==, rounded_a);
            assert_same_bytes (out_a, out_b, o_bytes, "the attention output", which);
            if (rounded_a)
              assert_same_bytes (xq_a, xq_b, (size_t) H * d + (size_t) H * d / 32 * 24,
                                 "the 8-bit rounding", which);
          }
        k_a = dev_copy (d_k_a->ptr, c_bytes);
        v_a = dev_copy (d_v_a->ptr, c_bytes);
        k_b = dev_copy (d_k_b->ptr, c_bytes);
        v_b = dev_copy (d_v_b->ptr, c_bytes);
        qkv_b = dev_copy (qb, ld * sizeof (float));
        assert_same_bytes (k_a, k_b, c_bytes, "the K cache", which);
        assert_same_bytes (v_a, v_b, c_bytes, "the V cache", which);
        assert_same_bytes (qkv, qkv_b, ld * sizeof (float), "q / k / v (changed)", which);
        /* the new row was written (and nothing after it) */
        g_assert_cmpint (memcmp ((uint8_t *) k_b + (size_t) pos0 * Hkv * d * esz,
                                 kraw + (size_t) pos0 * Hkv * d * esz, (size_t) Hkv * d * esz),
                         !=, 0);
        g_assert_cmpint (memcmp ((uint8_t *) k_b + (size_t) (pos0 + 1) * Hkv * d * esz,
                                 kraw + (size_t) (pos0 + 1) * Hkv * d * esz,
                                 (size_t) Hkv * d * esz), ==, 0);
      }
}

static void
test_attn_decode_rope (gconstpointer data)
{
  /* H, Hkv, head dim, rope dim: the 7B (qwen2) shape, other groups (6: 4 +
   * 2 heads a block; 4; 1; 8 with head dim 256) and a partial rotation */
  static const int shapes[][4] = {
    { 28, 4, 128, 128 }, { 12, 2, 128, 128 }, { 32, 8, 64, 64 }, { 8, 8, 64, 64 },
    { 16, 2, 256, 256 }, { 14, 2, 128, 64 },
  };
  /* 0 and 1; inside the first split; the last of one split and the first
   * of a second (split 32); a few splits; the first of a new split and one
   * past several (split 128 at 7B: 4992 = 39 * 128); a long context (7B
   * shape only) */
  static const int positions[] = { 0, 1, 17, 31, 32, 100, 4992, 5000, 33000 };
  const int kv_f16 = GPOINTER_TO_INT (data);
  const char *v = g_getenv ("BALEEN_CUDA_ATTN");

  if (skip_without_gpu ())
    return;
  if (v != NULL && strcmp (v, "v1") == 0)
    {
      g_test_skip ("BALEEN_CUDA_ATTN=v1: the fused kernel is not used");
      return;
    }
  rng_state = 0xbe5466cf34e90c6cULL ^ (uint64_t) kv_f16;
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    for (guint p = 0; p < G_N_ELEMENTS (positions); p++)
      if (positions[p] < 10000 || s == 0)
        rope_attn_case (shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], positions[p],
                        kv_f16);
}

/* A head dim and token count outside the one-launch kernel's shapes: the
 * first kernel pair, through the same entry point. */
static void
test_attn_decode_other (void)
{
  if (skip_without_gpu ())
    return;
  rng_state = 0x452821e638d01377ULL;
  attn_case (96, 4, 2, 3, 300, 1);
  attn_case (128, 7, 1, 20, 700, 1);
}

/* ---------------------------------------------------------------------------
 * The producers of prefill's 16-bit activations (bln_kernels_rmsnorm_f16,
 * bln_kernels_silu_mul_f16) against the float kernel then
 * bln_kernels_convert, byte for byte, and the residual add by cuBLAS (beta =
 * 1) against a product into scratch then bln_kernels_add
 * ------------------------------------------------------------------------- */

static const int act16_rows[] = { 1, 3, 17, 130 };
static const int act16_widths[] = { 32, 96, 100, 4864 };

/* A device buffer of @n random floats in [-scale, scale), every 53rd value
 * a hundred times larger (F16 overflows and SiLU's saturated tails too). */
static BlnCudaBuffer *
random_dev_floats (size_t n, float scale)
{
  g_autofree float *h = g_new (float, n);
  GError *error = NULL;
  BlnCudaBuffer *b;

  for (size_t i = 0; i < n; i++)
    h[i] = rng_float () * scale * (i % 53 == 7 ? 100.0f : 1.0f);
  b = bln_cuda_buffer_new_from_host (h, n * sizeof (float), &error);
  g_assert_no_error (error);
  return b;
}

static BlnCudaBuffer *
poisoned_dev (size_t bytes)
{
  GError *error = NULL;
  BlnCudaBuffer *b = bln_cuda_buffer_new (bytes, &error);

  g_assert_no_error (error);
  g_assert_cmpint (cudaMemset (b->ptr, 0xff, bytes), ==, cudaSuccess);
  return b;
}

static void
rmsnorm_f16_case (int n_rows, int d, int to_bf16)
{
  const size_t n = (size_t) n_rows * d;
  const char *which = to_bf16 ? "rmsnorm bf16" : "rmsnorm f16";
  g_autoptr (BlnCudaBuffer) x = random_dev_floats (n, 3.0f);
  g_autoptr (BlnCudaBuffer) w = random_dev_floats ((size_t) d, 1.5f);
  g_autoptr (BlnCudaBuffer) y_ref = poisoned_dev (n * sizeof (float));
  g_autoptr (BlnCudaBuffer) z_ref = poisoned_dev (n * 2);
  g_autoptr (BlnCudaBuffer) y = poisoned_dev (n * sizeof (float));
  g_autoptr (BlnCudaBuffer) z = poisoned_dev (n * 2);
  g_autoptr (BlnCudaBuffer) z_only = poisoned_dev (n * 2);
  g_autofree void *h_yref = NULL;
  g_autofree void *h_zref = NULL;
  g_autofree void *h_y = NULL;
  g_autofree void *h_z = NULL;
  g_autofree void *h_zo = NULL;

  g_assert_cmpint (bln_kernels_rmsnorm (x->ptr, w->ptr, y_ref->ptr, n_rows, d, 1e-6f, 0), ==,
                   cudaSuccess);
  g_assert_cmpint (bln_kernels_convert (y_ref->ptr, z_ref->ptr, n, to_bf16, 0), ==,
                   cudaSuccess);
  g_assert_cmpint (bln_kernels_rmsnorm_f16 (x->ptr, w->ptr, y->ptr, z->ptr, n_rows, d, 1e-6f,
                                            to_bf16, 0), ==, cudaSuccess);
  g_assert_cmpint (bln_kernels_rmsnorm_f16 (x->ptr, w->ptr, NULL, z_only->ptr, n_rows, d, 1e-6f,
                                            to_bf16, 0), ==, cudaSuccess);
  g_assert_cmpint (cudaDeviceSynchronize (), ==, cudaSuccess);
  h_yref = dev_copy (y_ref->ptr, n * sizeof (float));
  h_zref = dev_copy (z_ref->ptr, n * 2);
  h_y = dev_copy (y->ptr, n * sizeof (float));
  h_z = dev_copy (z->ptr, n * 2);
  h_zo = dev_copy (z_only->ptr, n * 2);
  assert_same_bytes (h_y, h_yref, n * sizeof (float), "the float rows", which);
  assert_same_bytes (h_z, h_zref, n * 2, "the 16-bit rows", which);
  assert_same_bytes (h_zo, h_zref, n * 2, "the 16-bit rows (no float rows)", which);
}

/* bln_kernels_rmsnorm_f16 (data: to_bf16) writes what bln_kernels_rmsnorm
 * then bln_kernels_convert write, with and without the float rows. */
static void
test_rmsnorm_f16 (gconstpointer data)
{
  if (skip_without_gpu ())
    return;
  rng_state = 0x5deece66d1234567ULL;
  for (guint r = 0; r < G_N_ELEMENTS (act16_rows); r++)
    for (guint k = 0; k < G_N_ELEMENTS (act16_widths); k++)
      rmsnorm_f16_case (act16_rows[r], act16_widths[k], GPOINTER_TO_INT (data));
}

static void
silu_mul_f16_case (int n_rows, int ff, gboolean stacked, int to_bf16)
{
  const size_t n = (size_t) n_rows * ff;
  const char *which = to_bf16 ? "silu_mul bf16" : "silu_mul f16";
  g_autoptr (BlnCudaBuffer) gu = random_dev_floats (2 * n, 6.0f);
  g_autoptr (BlnCudaBuffer) o_ref = poisoned_dev (n * sizeof (float));
  g_autoptr (BlnCudaBuffer) z_ref = poisoned_dev (n * 2);
  g_autoptr (BlnCudaBuffer) z = poisoned_dev (n * 2);
  g_autofree void *h_zref = NULL;
  g_autofree void *h_z = NULL;
  /* stacked: row t holds gate then up; separate: n rows of gate, then up */
  const float *g = gu->ptr;
  const float *u = stacked ? g + ff : g + n;
  const int stride = stacked ? 2 * ff : ff;

  g_assert_cmpint (bln_kernels_silu_mul (g, stride, u, stride, o_ref->ptr, n_rows, ff, 0), ==,
                   cudaSuccess);
  g_assert_cmpint (bln_kernels_convert (o_ref->ptr, z_ref->ptr, n, to_bf16, 0), ==,
                   cudaSuccess);
  g_assert_cmpint (bln_kernels_silu_mul_f16 (g, stride, u, stride, z->ptr, n_rows, ff, to_bf16,
                                             0), ==, cudaSuccess);
  g_assert_cmpint (cudaDeviceSynchronize (), ==, cudaSuccess);
  h_zref = dev_copy (z_ref->ptr, n * 2);
  h_z = dev_copy (z->ptr, n * 2);
  assert_same_bytes (h_z, h_zref, n * 2, stacked ? "the stacked product" : "the product", which);
}

/* bln_kernels_silu_mul_f16 (data: to_bf16) writes what bln_kernels_silu_mul
 * then bln_kernels_convert write, gate and up stacked or separate. */
static void
test_silu_mul_f16 (gconstpointer data)
{
  if (skip_without_gpu ())
    return;
  rng_state = 0x2545f4914f6cdd1dULL;
  for (guint r = 0; r < G_N_ELEMENTS (act16_rows); r++)
    for (guint k = 0; k < G_N_ELEMENTS (act16_widths); k++)
      for (int stacked = 0; stacked < 2; stacked++)
        silu_mul_f16_case (act16_rows[r], act16_widths[k], stacked, GPOINTER_TO_INT (data));
}

/* The residual add of the prefill's output and down projections: cuBLAS
 * (F16 or BF16 operands, float32 compute and output, as bln_cuda_linear
 * calls it) adding into x with beta = 1 must leave the bytes that the
 * product into scratch (beta = 0) then bln_kernels_add leave. This holds only
 * while cuBLAS picks the same accumulation order for both betas, which is
 * what this checks on the GPU at hand (data: to_bf16). */
static void
test_gemm_accumulate (gconstpointer data)
{
  static const int shapes[][3] = {   /* rows, n_in, n_out */
    { 17, 896, 512 }, { 130, 4864, 896 }, { 512, 3584, 3584 }, { 2048, 18944, 3584 },
  };
  const int to_bf16 = GPOINTER_TO_INT (data);
  const cudaDataType_t t16 = to_bf16 ? CUDA_R_16BF : CUDA_R_16F;
  cublasHandle_t blas = NULL;

  if (skip_without_gpu ())
    return;
  rng_state = 0x9e3779b97f4a7c15ULL;
  g_assert_cmpint (cublasCreate (&blas), ==, CUBLAS_STATUS_SUCCESS);
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      const int n = shapes[s][0], n_in = shapes[s][1], n_out = shapes[s][2];
      const size_t ny = (size_t) n * n_out;
      const float one = 1.0f, zero = 0.0f;
      g_autoptr (BlnCudaBuffer) wf = random_dev_floats ((size_t) n_in * n_out, 0.05f);
      g_autoptr (BlnCudaBuffer) af = random_dev_floats ((size_t) n * n_in, 2.0f);
      g_autoptr (BlnCudaBuffer) w16 = poisoned_dev ((size_t) n_in * n_out * 2);
      g_autoptr (BlnCudaBuffer) a16 = poisoned_dev ((size_t) n * n_in * 2);
      g_autoptr (BlnCudaBuffer) x0 = random_dev_floats (ny, 4.0f);
      g_autoptr (BlnCudaBuffer) x_ref = poisoned_dev (ny * sizeof (float));
      g_autoptr (BlnCudaBuffer) x_acc = poisoned_dev (ny * sizeof (float));
      g_autoptr (BlnCudaBuffer) tmp = poisoned_dev (ny * sizeof (float));
      g_autofree void *h_ref = NULL;
      g_autofree void *h_acc = NULL;

      g_assert_cmpint (bln_kernels_convert (wf->ptr, w16->ptr, (size_t) n_in * n_out, to_bf16,
                                            0), ==, cudaSuccess);
      g_assert_cmpint (bln_kernels_convert (af->ptr, a16->ptr, (size_t) n * n_in, to_bf16, 0),
                       ==, cudaSuccess);
      g_assert_cmpint (cudaMemcpy (x_ref->ptr, x0->ptr, ny * sizeof (float),
                                   cudaMemcpyDeviceToDevice), ==, cudaSuccess);
      g_assert_cmpint (cudaMemcpy (x_acc->ptr, x0->ptr, ny * sizeof (float),
                                   cudaMemcpyDeviceToDevice), ==, cudaSuccess);
      g_assert_cmpint (cublasGemmEx (blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n, n_in, &one,
                                     w16->ptr, t16, n_in, a16->ptr, t16, n_in, &zero, tmp->ptr,
                                     CUDA_R_32F, n_out, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT), ==, CUBLAS_STATUS_SUCCESS);
      g_assert_cmpint (bln_kernels_add (x_ref->ptr, tmp->ptr, ny, 0), ==, cudaSuccess);
      g_assert_cmpint (cublasGemmEx (blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n, n_in, &one,
                                     w16->ptr, t16, n_in, a16->ptr, t16, n_in, &one,
                                     x_acc->ptr, CUDA_R_32F, n_out, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT), ==, CUBLAS_STATUS_SUCCESS);
      g_assert_cmpint (cudaDeviceSynchronize (), ==, cudaSuccess);
      h_ref = dev_copy (x_ref->ptr, ny * sizeof (float));
      h_acc = dev_copy (x_acc->ptr, ny * sizeof (float));
      assert_same_bytes (h_acc, h_ref, ny * sizeof (float), "the residual",
                         to_bf16 ? "gemm beta 1 bf16" : "gemm beta 1 f16");
    }
  g_assert_cmpint (cublasDestroy (blas), ==, CUBLAS_STATUS_SUCCESS);
}

/* The 8-bit KV cache end to end (BALEEN_DEFAULT_MODEL, SmolLM2-135M: head
 * dim 64, 9 query heads over 3 KV heads): a 300-token prompt (the prefill
 * path: cuBLAS over F16 copies of the 8-bit cache), 12 one-token steps and a
 * 5-token step (the 8-bit decode kernel, its CUDA graphs), against the CPU
 * backend (float32 KV; itself checked against llama.cpp by test-smollm2).
 * The mean KL divergence of the next-token distributions must stay within
 * twice the bound the F16 cache meets in test-cuda-model (1e-2: both
 * backends round activations differently); the F16 cache's figure is
 * printed next to it. */
static void
test_kv8_model (void)
{
  const char *path = g_getenv ("BALEEN_DEFAULT_MODEL");
  const int n_prompt = 300, n_ctx = 400;
  const int steps[] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5 };
  g_autoptr (GError) error = NULL;
  g_autoptr (BlnModel) model = NULL;
  g_autoptr (BlnContext) cpu = NULL, g8 = NULL, g16 = NULL;
  g_autofree int32_t *ids = NULL;
  g_autofree float *lc = NULL, *l8 = NULL, *l16 = NULL;
  BlnContextOptions o;
  BlnPool *pool;
  GRand *rand;
  int n_vocab, off = 0, n_total = n_prompt;
  double kl8 = 0, kl16 = 0;

  if (skip_without_gpu ())
    return;
  if (path == NULL || *path == '\0')
    {
      g_test_skip ("BALEEN_DEFAULT_MODEL is not set");
      return;
    }
  model = bln_model_load (path, &error);
  g_assert_no_error (error);
  n_vocab = bln_model_hparams (model)->n_vocab;
  pool = bln_pool_new (0, &error);
  g_assert_no_error (error);
  cpu = bln_context_new (model, n_ctx, pool, &error);
  g_assert_no_error (error);
  bln_context_options_init (&o);
  o.device = BLN_DEVICE_CUDA;
  o.kv_bits = 8;
  g8 = bln_context_new_with_options (model, n_ctx, pool, &o, &error);
  g_assert_no_error (error);
  o.kv_bits = 16;
  g16 = bln_context_new_with_options (model, n_ctx, pool, &o, &error);
  g_assert_no_error (error);

  for (guint s = 0; s < G_N_ELEMENTS (steps); s++)
    n_total += steps[s];
  rand = g_rand_new_with_seed (4321);
  ids = g_new (int32_t, n_total);
  for (int i = 0; i < n_total; i++)
    ids[i] = (int32_t) g_rand_int_range (rand, 0, n_vocab);
  g_rand_free (rand);
  lc = g_new (float, n_vocab);
  l8 = g_new (float, n_vocab);
  l16 = g_new (float, n_vocab);
  for (int s = -1; s < (int) G_N_ELEMENTS (steps); s++)
    {
      const int n = s < 0 ? n_prompt : steps[s];

      for (int i = 0; i < n_vocab; i++)
        l8[i] = NAN;
      g_assert_true (bln_context_eval (cpu, ids + off, n, lc, FALSE, &error));
      g_assert_true (bln_context_eval (g8, ids + off, n, l8, FALSE, &error));
      g_assert_true (bln_context_eval (g16, ids + off, n, l16, FALSE, &error));
      g_assert_no_error (error);
      for (int i = 0; i < n_vocab; i++)
        g_assert_true (isfinite (l8[i]));
      kl8 += kl_div (lc, l8, n_vocab);
      kl16 += kl_div (lc, l16, n_vocab);
      off += n;
    }
  kl8 /= G_N_ELEMENTS (steps) + 1;
  kl16 /= G_N_ELEMENTS (steps) + 1;
  g_test_message ("8-bit KV vs CPU: mean KL %.3g (F16 KV: %.3g)", kl8, kl16);
  g_assert_cmpfloat (kl8, <=, 2e-2);
  bln_pool_free (pool);
}

/* ---------------------------------------------------------------------------
 * --bench
 * ------------------------------------------------------------------------- */

static int
cmp_float (const void *a, const void *b)
{
  float x = *(const float *) a, y = *(const float *) b;

  return x < y ? -1 : x > y;
}

#define BENCH_CHECK(call) \
  G_STMT_START { \
    if (!BLN_CUDA_CHECK (call, &error)) \
      { \
        g_printerr ("bench: %s\n", error->message); \
        return 1; \
      } \
  } G_STMT_END

/* Device-to-device copy rate (bytes read + written per second) of 1 GiB. */
static int
bench_copy (double *gbps)
{
  g_autoptr (BlnCudaBuffer) a = NULL;
  g_autoptr (BlnCudaBuffer) b = NULL;
  GError *error = NULL;
  cudaEvent_t e0, e1;
  size_t n = (size_t) 1 << 30;
  float ms = 0, times[10];

  a = bln_cuda_buffer_new (n, &error);
  b = a ? bln_cuda_buffer_new (n, &error) : NULL;
  if (!b)
    {
      g_printerr ("bench: %s\n", error->message);
      return 1;
    }
  BENCH_CHECK (cudaMemset (a->ptr, 1, n));
  BENCH_CHECK (cudaEventCreate (&e0));
  BENCH_CHECK (cudaEventCreate (&e1));
  BENCH_CHECK (cudaMemcpy (b->ptr, a->ptr, n, cudaMemcpyDeviceToDevice));
  for (int i = 0; i < 10; i++)
    {
      BENCH_CHECK (cudaEventRecord (e0, 0));
      BENCH_CHECK (cudaMemcpyAsync (b->ptr, a->ptr, n, cudaMemcpyDeviceToDevice, 0));
      BENCH_CHECK (cudaEventRecord (e1, 0));
      BENCH_CHECK (cudaEventSynchronize (e1));
      BENCH_CHECK (cudaEventElapsedTime (&ms, e0, e1));
      times[i] = ms;
    }
  qsort (times, 10, sizeof (float), cmp_float);
  *gbps = 2.0 * (double) n / (times[5] * 1e-3) / 1e9;
  cudaEventDestroy (e0);
  cudaEventDestroy (e1);
  return 0;
}

static int
bench_one (BlnType type, int n_in, int n_out, int n_tok, double copy_gbps)
{
  BlnTensor t;
  BlnCudaTensor *copies[64] = { NULL };
  g_autoptr (BlnCudaBuffer) d_x = NULL;
  g_autoptr (BlnCudaBuffer) d_y = NULL;
  g_autofree float *x = g_new (float, (size_t) n_in * n_tok);
  GError *error = NULL;
  cudaEvent_t e0, e1;
  int n_copies, reps = 25;
  float ms = 0, times[25];
  double per_us, gbps;

  make_weights (&t, type, n_in, n_out, TRUE);
  /* Enough copies that one round streams >= 1 GiB: far past the 60 MB L2 */
  n_copies = (int) CLAMP (((size_t) 1 << 30) / t.nbytes + 1, 4, 64);
  for (int c = 0; c < n_copies; c++)
    if (!(copies[c] = bln_cuda_tensor_upload (&t, &error)))
      {
        g_printerr ("bench: %s\n", error->message);
        return 1;
      }
  for (size_t i = 0; i < (size_t) n_in * n_tok; i++)
    x[i] = rng_float ();
  d_x = bln_cuda_buffer_new_from_host (x, (size_t) n_in * n_tok * sizeof (float), &error);
  d_y = d_x ? bln_cuda_buffer_new ((size_t) n_out * n_tok * sizeof (float), &error) : NULL;
  if (!d_y)
    {
      g_printerr ("bench: %s\n", error->message);
      return 1;
    }
  BENCH_CHECK (cudaEventCreate (&e0));
  BENCH_CHECK (cudaEventCreate (&e1));
  for (int c = 0; c < n_copies; c++)  /* warm-up */
    if (!bln_cuda_matvec (copies[c], d_x->ptr, n_tok, d_y->ptr, 0, &error))
      {
        g_printerr ("bench: %s\n", error->message);
        return 1;
      }
  BENCH_CHECK (cudaDeviceSynchronize ());
  for (int r = 0; r < reps; r++)
    {
      BENCH_CHECK (cudaEventRecord (e0, 0));
      for (int c = 0; c < n_copies; c++)
        bln_cuda_matvec (copies[c], d_x->ptr, n_tok, d_y->ptr, 0, NULL);
      BENCH_CHECK (cudaEventRecord (e1, 0));
      BENCH_CHECK (cudaEventSynchronize (e1));
      BENCH_CHECK (cudaGetLastError ());
      BENCH_CHECK (cudaEventElapsedTime (&ms, e0, e1));
      times[r] = ms / n_copies;
    }
  qsort (times, reps, sizeof (float), cmp_float);
  per_us = times[reps / 2] * 1e3;
  gbps = (double) t.nbytes / (per_us * 1e-6) / 1e9;
  g_print ("%-5s %6d %6d %5d %10.2f %9.1f %7.1f%%   (min %.2f us, max %.2f us, %d copies)\n",
           bln_type_name (type), n_out, n_in, n_tok, per_us, gbps, 100.0 * gbps / copy_gbps,
           times[0] * 1e3, times[reps - 1] * 1e3, n_copies);
  for (int c = 0; c < n_copies; c++)
    bln_cuda_tensor_free (copies[c]);
  cudaEventDestroy (e0);
  cudaEventDestroy (e1);
  bln_tensor_clear (&t);
  return 0;
}

static int
run_bench (void)
{
  static const int shapes[][2] = {   /* n_in, n_out */
    { 4096, 4096 }, { 4096, 14336 }, { 14336, 4096 }, { 3584, 18944 }, { 18944, 3584 },
  };
  static const int toks[] = { 1, 2, 8 };
  g_autofree char *why = NULL;
  BlnCudaDeviceInfo info;
  GError *error = NULL;
  double copy_gbps = 0;
  g_auto (GStrv) only = NULL;

  if (!bln_cuda_available (&why))
    {
      g_print ("bench: no GPU: %s\n", why);
      return 0;
    }
  if (!bln_cuda_device_info (0, &info, &error))
    {
      g_printerr ("bench: %s\n", error->message);
      return 1;
    }
  rng_state = 0x243f6a8885a308d3ULL;
  if (bench_copy (&copy_gbps) != 0)
    return 1;
  g_print ("device: %s, compute %d.%d, %d SMs, %.1f GiB, L2 %zu KiB\n", info.name,
           info.cc_major, info.cc_minor, info.n_sm, info.total_mem / 1073741824.0,
           info.l2_bytes >> 10);
  g_print ("device-to-device copy: %.1f GB/s (read + write, 1 GiB, median of 10)\n", copy_gbps);
  g_print ("matvec: median time per launch over 25 rounds; GB/s = GGUF weight bytes / time; "
           "%% of the copy rate\n");
  g_print ("%-5s %6s %6s %5s %10s %9s %8s\n", "type", "n_out", "n_in", "n_tok", "us",
           "GB/s", "of copy");
  /* BALEEN_BENCH_ONLY=q4_K:3584:1 narrows the run to one type (and a row
   * length, a token count), e.g. for a profiler */
  only = g_strsplit (g_getenv ("BALEEN_BENCH_ONLY") ? g_getenv ("BALEEN_BENCH_ONLY") : "", ":",
                     3);
  for (guint i = 0; i < G_N_ELEMENTS (matvec_types); i++)
    for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
      for (guint k = 0; k < G_N_ELEMENTS (toks); k++)
        {
          if (shapes[s][0] % 256 != 0 && matvec_types[i] >= BLN_TYPE_Q2_K
              && matvec_types[i] <= BLN_TYPE_Q8_K)
            continue;
          if ((only[0] && *only[0] && g_strcmp0 (only[0], bln_type_name (matvec_types[i])) != 0)
              || (only[0] && only[1] && atoi (only[1]) != shapes[s][0])
              || (only[0] && only[1] && only[2] && atoi (only[2]) != toks[k]))
            continue;
          if (bench_one (matvec_types[i], shapes[s][0], shapes[s][1], toks[k], copy_gbps) != 0)
            return 1;
        }
  return 0;
}

/* --bench-attn: the decode attention of a 7B qwen2 layer (28 query heads, 4
 * KV heads, head dim 128) over n_pos positions, n_tok tokens, F16 / 8-bit /
 * F32 KV (kv 1 / 2 / 0). Each timed round
 * launches over n_copies caches that together exceed the L2 (up to 1024
 * layers' worth), so every K and V byte comes from memory; GB/s counts the K
 * and V bytes a launch reads. */
static int
bench_attn_one (int n_pos, int kv, int n_tok, double copy_gbps)
{
  const int H = 28, Hkv = 4, d = 128, pos0 = n_pos - n_tok, reps = 25;
  const size_t esz = kv == 0 ? 4 : kv == 1 ? 2 : 1;
  const size_t vals = (size_t) n_pos * Hkv * d * esz;
  /* 8 bits: the F16 scales (one per 32 values) follow the values */
  const size_t layer = vals + (kv == 2 ? (size_t) n_pos * Hkv * (d / 32) * 2 : 0);
  const int n_copies = (int) CLAMP (((size_t) 512 << 20) / layer + 1, 2, 1024);
  size_t scr = bln_kernels_attn_decode_scratch (n_tok, H, Hkv, d);
  g_autofree float *q = g_new (float, (size_t) n_tok * H * d);
  g_autoptr (BlnCudaBuffer) d_q = NULL;
  g_autoptr (BlnCudaBuffer) d_k = NULL;
  g_autoptr (BlnCudaBuffer) d_v = NULL;
  g_autoptr (BlnCudaBuffer) d_pos = NULL;
  g_autoptr (BlnCudaBuffer) d_out = NULL;
  g_autoptr (BlnCudaBuffer) d_scr = NULL;
  GError *error = NULL;
  cudaEvent_t e0, e1;
  float ms = 0, times[25];
  double per_us, gbps;

  for (size_t i = 0; i < (size_t) n_tok * H * d; i++)
    q[i] = rng_float ();
  d_q = bln_cuda_buffer_new_from_host (q, (size_t) n_tok * H * d * sizeof (float), &error);
  d_k = d_q ? bln_cuda_buffer_new (layer * n_copies, &error) : NULL;
  d_v = d_k ? bln_cuda_buffer_new (layer * n_copies, &error) : NULL;
  d_pos = d_v ? bln_cuda_buffer_new_from_host (&pos0, sizeof (int), &error) : NULL;
  d_out = d_pos ? bln_cuda_buffer_new ((size_t) n_tok * H * d * sizeof (float), &error) : NULL;
  d_scr = d_out ? bln_cuda_buffer_new (scr, &error) : NULL;
  if (!d_scr)
    {
      g_printerr ("bench: %s\n", error->message);
      return 1;
    }
  /* small values (0x1c bytes: 0.0039 in F16, 5e-22 in F32, 28 in int8 with
   * scales 0.0039), finite in every mode */
  BENCH_CHECK (cudaMemset (d_k->ptr, 0x1c, layer * n_copies));
  BENCH_CHECK (cudaMemset (d_v->ptr, 0x1c, layer * n_copies));
  BENCH_CHECK (cudaMemset (d_scr->ptr, 0, scr));
  BENCH_CHECK (cudaEventCreate (&e0));
  BENCH_CHECK (cudaEventCreate (&e1));
  for (int r = -1; r < reps; r++)
    {
      BENCH_CHECK (cudaEventRecord (e0, 0));
      for (int c = 0; c < n_copies; c++)
        {
          char *kc = (char *) d_k->ptr + layer * c, *vc = (char *) d_v->ptr + layer * c;

          if (kv == 2)
            BENCH_CHECK (bln_kernels_attn_decode_q8 (d_q->ptr, 0, n_tok, d_pos->ptr, H, Hkv, d,
                                                     0.088f, kc, kc + vals, vc, vc + vals,
                                                     d_scr->ptr, d_out->ptr, 0));
          else
            BENCH_CHECK (bln_kernels_attn_decode (d_q->ptr, 0, n_tok, d_pos->ptr, H, Hkv, d, d,
                                                  0.088f, kc, vc, kv, d_scr->ptr, d_out->ptr,
                                                  0));
        }
      BENCH_CHECK (cudaEventRecord (e1, 0));
      BENCH_CHECK (cudaEventSynchronize (e1));
      BENCH_CHECK (cudaGetLastError ());
      BENCH_CHECK (cudaEventElapsedTime (&ms, e0, e1));
      if (r >= 0)   /* round -1 warms up */
        times[r] = ms / n_copies;
    }
  qsort (times, reps, sizeof (float), cmp_float);
  per_us = times[reps / 2] * 1e3;
  gbps = 2.0 * (double) layer / (per_us * 1e-6) / 1e9;
  g_print ("%-4s %6d %5d %10.2f %9.1f %7.1f%%   (min %.2f us, max %.2f us, %d caches)\n",
           kv_names[kv], n_pos, n_tok, per_us, gbps, 100.0 * gbps / copy_gbps,
           times[0] * 1e3, times[reps - 1] * 1e3, n_copies);
  cudaEventDestroy (e0);
  cudaEventDestroy (e1);
  return 0;
}

static int
run_bench_attn (void)
{
  static const int positions[] = { 128, 1024, 4096, 32768 };
  static const int toks[] = { 1, 4 };
  static const int kv_modes[] = { 1, 2, 0 };   /* f16, q8, f32 */
  g_autofree char *why = NULL;
  double copy_gbps = 0;
  const char *v = g_getenv ("BALEEN_CUDA_ATTN");

  if (!bln_cuda_available (&why))
    {
      g_print ("bench: no GPU: %s\n", why);
      return 0;
    }
  rng_state = 0x243f6a8885a308d3ULL;
  if (bench_copy (&copy_gbps) != 0)
    return 1;
  g_print ("device-to-device copy: %.1f GB/s (read + write, 1 GiB, median of 10)\n", copy_gbps);
  g_print ("decode attention (%s), 28 query heads, 4 KV heads, head dim 128: median time per "
           "launch over 25 rounds; GB/s = K + V bytes read / time; %% of the copy rate\n",
           v && strcmp (v, "v1") == 0 ? "v1, BALEEN_CUDA_ATTN=v1" : "v2, the default");
  g_print ("%-4s %6s %5s %10s %9s %8s\n", "kv", "n_pos", "n_tok", "us", "GB/s", "of copy");
  for (guint m = 0; m < G_N_ELEMENTS (kv_modes); m++)
    for (guint p = 0; p < G_N_ELEMENTS (positions); p++)
      for (guint k = 0; k < G_N_ELEMENTS (toks); k++)
        if (bench_attn_one (positions[p], kv_modes[m], toks[k], copy_gbps) != 0)
          return 1;
  return 0;
}

/* --bench-rope-attn: the one-token attention step of a 7B qwen2 layer (28
 * query heads, 4 KV heads, head dim 128, q / k / v biases, F16 cache) over
 * n_pos positions: bln_kernels_rope_store then
 * bln_kernels_attn_decode_round against bln_kernels_attn_decode_rope, each
 * over n_copies layers' caches (past the L2) launched back to back, as the
 * decode step does. Median time per layer of 25 rounds. */
static int
bench_rope_attn_one (int n_pos, int fused)
{
  const int H = 28, Hkv = 4, d = 128, ld = (H + 2 * Hkv) * d, pos0 = n_pos - 1, reps = 25;
  const size_t layer = (size_t) n_pos * Hkv * d * 2;
  const int n_copies = (int) CLAMP (((size_t) 512 << 20) / layer + 1, 2, 1024);
  size_t scr = bln_kernels_attn_decode_scratch (8, H, Hkv, d);
  g_autofree float *qkv = g_new (float, ld);
  g_autoptr (BlnCudaBuffer) d_qkv = NULL;
  g_autoptr (BlnCudaBuffer) d_b = NULL;
  g_autoptr (BlnCudaBuffer) d_inv = NULL;
  g_autoptr (BlnCudaBuffer) d_k = NULL;
  g_autoptr (BlnCudaBuffer) d_v = NULL;
  g_autoptr (BlnCudaBuffer) d_pos = NULL;
  g_autoptr (BlnCudaBuffer) d_out = NULL;
  g_autoptr (BlnCudaBuffer) d_scr = NULL;
  GError *error = NULL;
  cudaEvent_t e0, e1;
  float ms = 0, times[25], inv[64];
  int rounded = 0;

  for (int i = 0; i < ld; i++)
    qkv[i] = rng_float ();
  for (int i = 0; i < 64; i++)
    inv[i] = powf (1e6f, -(float) i / 64.0f);
  d_qkv = bln_cuda_buffer_new_from_host (qkv, ld * sizeof (float), &error);
  d_b = d_qkv ? bln_cuda_buffer_new_from_host (qkv, ld * sizeof (float), &error) : NULL;
  d_inv = d_b ? bln_cuda_buffer_new_from_host (inv, sizeof inv, &error) : NULL;
  d_k = d_inv ? bln_cuda_buffer_new (layer * n_copies, &error) : NULL;
  d_v = d_k ? bln_cuda_buffer_new (layer * n_copies, &error) : NULL;
  d_pos = d_v ? bln_cuda_buffer_new_from_host (&pos0, sizeof (int), &error) : NULL;
  d_out = d_pos ? bln_cuda_buffer_new ((size_t) H * d * sizeof (float), &error) : NULL;
  d_scr = d_out ? bln_cuda_buffer_new (scr, &error) : NULL;
  if (!d_scr)
    {
      g_printerr ("bench: %s\n", error->message);
      return 1;
    }
  BENCH_CHECK (cudaMemset (d_k->ptr, 0x1c, layer * n_copies));
  BENCH_CHECK (cudaMemset (d_v->ptr, 0x1c, layer * n_copies));
  BENCH_CHECK (cudaMemset (d_scr->ptr, 0, scr));
  BENCH_CHECK (cudaEventCreate (&e0));
  BENCH_CHECK (cudaEventCreate (&e1));
  for (int r = -1; r < reps; r++)
    {
      BENCH_CHECK (cudaEventRecord (e0, 0));
      for (int c = 0; c < n_copies; c++)
        {
          char *kc = (char *) d_k->ptr + layer * c, *vc = (char *) d_v->ptr + layer * c;
          float *q = d_qkv->ptr;
          const float *b = d_b->ptr;

          if (fused)
            BENCH_CHECK (bln_kernels_attn_decode_rope (q, q + H * d, q + (H + Hkv) * d, b,
                                                       b + H * d, b + (H + Hkv) * d, d_pos->ptr,
                                                       H, Hkv, d, d, d, 1, d_inv->ptr, 1.0f,
                                                       0.088f, kc, vc, 1, d_scr->ptr,
                                                       d_out->ptr, &rounded, 0));
          else
            {
              BENCH_CHECK (bln_kernels_rope_store (q, q + H * d, q + (H + Hkv) * d, b, b + H * d,
                                                   b + (H + Hkv) * d, 1, ld, d_pos->ptr, H, Hkv,
                                                   d, d, d, 1, d_inv->ptr, 1.0f, kc, vc, 1,
                                                   NULL, 0));
              BENCH_CHECK (bln_kernels_attn_decode_round (q, ld, 1, d_pos->ptr, H, Hkv, d, d,
                                                          0.088f, kc, vc, 1, d_scr->ptr,
                                                          d_out->ptr, &rounded, 0));
            }
        }
      BENCH_CHECK (cudaEventRecord (e1, 0));
      BENCH_CHECK (cudaEventSynchronize (e1));
      BENCH_CHECK (cudaGetLastError ());
      BENCH_CHECK (cudaEventElapsedTime (&ms, e0, e1));
      if (r >= 0)
        times[r] = ms / n_copies;
    }
  qsort (times, reps, sizeof (float), cmp_float);
  g_print ("%6d %-26s %9.2f   (min %.2f us, max %.2f us, %d caches)\n", n_pos,
           fused ? "attn_decode_rope" : "rope_store + attn_round", times[reps / 2] * 1e3,
           times[0] * 1e3, times[reps - 1] * 1e3, n_copies);
  cudaEventDestroy (e0);
  cudaEventDestroy (e1);
  return 0;
}

static int
run_bench_rope_attn (void)
{
  static const int positions[] = { 128, 1024, 4096, 32768 };
  g_autofree char *why = NULL;

  if (!bln_cuda_available (&why))
    {
      g_print ("bench: no GPU: %s\n", why);
      return 0;
    }
  rng_state = 0x3f84d5b5b5470917ULL;
  g_print ("one-token attention step, 7B qwen2 layer (28 / 4 heads, head dim 128, biases, F16 "
           "KV): median us per layer over 25 rounds\n");
  g_print ("%6s %-26s %9s\n", "n_pos", "path", "us");
  for (guint p = 0; p < G_N_ELEMENTS (positions); p++)
    for (int fused = 0; fused < 2; fused++)
      if (bench_rope_attn_one (positions[p], fused) != 0)
        return 1;
  return 0;
}

/* --bench-mmq: the tensor-core product in the 7B (qwen2) shapes against the
 * prefill path it replaces (dequantise to F16, convert x, cublasGemmEx),
 * for 8 .. 2048 token rows. Weight copies rotate so that one round streams
 * past the L2. */
/* --bench-mmf: the same without the (slow) MMQ column, for 2 .. 256 rows */
static gboolean bench_skip_mmq;

static int
bench_mmq_one (cublasHandle_t blas, BlnType type, int n_in, int n_out, int n_tok,
               double copy_gbps)
{
  BlnTensor t;
  BlnCudaTensor *copies[32] = { NULL };
  g_autoptr (BlnCudaBuffer) d_x = NULL;
  g_autoptr (BlnCudaBuffer) d_y = NULL;
  g_autoptr (BlnCudaBuffer) d_deq = NULL;
  g_autoptr (BlnCudaBuffer) d_x16 = NULL;
  g_autofree float *x = g_new (float, (size_t) n_in * n_tok);
  GError *error = NULL;
  cudaEvent_t e0, e1;
  const float one = 1.0f, zero = 0.0f;
  int n_copies, reps = 15;
  float ms = 0, times[3][15];
  double us[3];
  const gboolean has_mmf = bln_kernels_mmf_supports ((int) type) && n_in % 256 == 0;

  make_weights (&t, type, n_in, n_out, FALSE);
  n_copies = (int) CLAMP (((size_t) 256 << 20) / t.nbytes + 1, 2, 32);
  for (int c = 0; c < n_copies; c++)
    if (!(copies[c] = bln_cuda_tensor_upload (&t, &error)))
      {
        g_printerr ("bench: %s\n", error->message);
        return 1;
      }
  for (size_t i = 0; i < (size_t) n_in * n_tok; i++)
    x[i] = rng_float ();
  d_x = bln_cuda_buffer_new_from_host (x, (size_t) n_in * n_tok * sizeof (float), &error);
  d_y = d_x ? bln_cuda_buffer_new ((size_t) n_out * n_tok * sizeof (float), &error) : NULL;
  d_deq = d_y ? bln_cuda_buffer_new ((size_t) n_out * n_in * 2, &error) : NULL;
  d_x16 = d_deq ? bln_cuda_buffer_new ((size_t) n_tok * n_in * 2, &error) : NULL;
  if (!d_x16)
    {
      g_printerr ("bench: %s\n", error->message);
      return 1;
    }
  BENCH_CHECK (cudaEventCreate (&e0));
  BENCH_CHECK (cudaEventCreate (&e1));
  for (int path = 0; path < 3; path++)
    for (int r = -1; r < reps && (path != 2 || has_mmf) && (path != 0 || !bench_skip_mmq);
         r++)   /* r = -1: warm-up */
      {
        BENCH_CHECK (cudaEventRecord (e0, 0));
        for (int c = 0; c < n_copies; c++)
          {
            const BlnCudaTensor *w = copies[c];
            const void *hdr = w->header ? w->header->ptr : NULL;

            if (path == 0)
              BENCH_CHECK (bln_kernels_mmq ((int) type, w->payload->ptr, hdr, n_in, n_out,
                                            d_x->ptr, n_tok, d_y->ptr, 0, 0, 0));
            else if (path == 2)
              BENCH_CHECK (bln_kernels_mmf ((int) type, w->payload->ptr, hdr, n_in, n_out,
                                            d_x->ptr, n_tok, d_y->ptr, 0, 0, 0));
            else
              {
                BENCH_CHECK (bln_kernels_dequant_f16 ((int) type, w->payload->ptr, hdr, n_in,
                                                      n_out, d_deq->ptr, 0));
                BENCH_CHECK (bln_kernels_convert (d_x->ptr, d_x16->ptr, (size_t) n_tok * n_in,
                                                  0, 0));
                if (cublasGemmEx (blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n_tok, n_in, &one,
                                  d_deq->ptr, CUDA_R_16F, n_in, d_x16->ptr, CUDA_R_16F, n_in,
                                  &zero, d_y->ptr, CUDA_R_32F, n_out, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
                  {
                    g_printerr ("bench: cublasGemmEx failed\n");
                    return 1;
                  }
              }
          }
        BENCH_CHECK (cudaEventRecord (e1, 0));
        BENCH_CHECK (cudaEventSynchronize (e1));
        BENCH_CHECK (cudaGetLastError ());
        BENCH_CHECK (cudaEventElapsedTime (&ms, e0, e1));
        if (r >= 0)
          times[path][r] = ms / n_copies;
      }
  for (int path = bench_skip_mmq ? 1 : 0; path < (has_mmf ? 3 : 2); path++)
    {
      qsort (times[path], reps, sizeof (float), cmp_float);
      us[path] = times[path][reps / 2] * 1e3;
    }
  if (!has_mmf)
    us[2] = 0;
  if (bench_skip_mmq)
    us[0] = 0;
  g_print ("%-5s %6d %6d %5d | mmq %9.1f us %7.1f GB/s | mmf %9.1f us %7.1f GB/s %6.1f TFLOPS "
           "| deq+gemm %9.1f us %6.1f TFLOPS | mmf x%.2f\n",
           bln_type_name (type), n_out, n_in, n_tok, us[0], (double) t.nbytes / us[0] / 1e3,
           us[2], has_mmf ? (double) t.nbytes / us[2] / 1e3 : 0.0,
           has_mmf ? 2.0 * n_out * (double) n_in * n_tok / us[2] / 1e6 : 0.0, us[1],
           2.0 * n_out * (double) n_in * n_tok / us[1] / 1e6, has_mmf ? us[1] / us[2] : 0.0);
  (void) copy_gbps;
  for (int c = 0; c < n_copies; c++)
    bln_cuda_tensor_free (copies[c]);
  cudaEventDestroy (e0);
  cudaEventDestroy (e1);
  bln_tensor_clear (&t);
  return 0;
}

static int
run_bench_mmq (gboolean mmf_only)
{
  static const struct { BlnType type; int n_in, n_out; } shapes[] = {
    { BLN_TYPE_Q4_K, 3584, 3584 }, { BLN_TYPE_Q4_K, 3584, 18944 }, { BLN_TYPE_Q6_K, 18944, 3584 },
    { BLN_TYPE_Q4_K, 3584, 512 }, { BLN_TYPE_Q6_K, 3584, 152064 }, { BLN_TYPE_Q8_0, 3584, 3584 },
    { BLN_TYPE_Q4_0, 3584, 18944 },
  };
  static const int toks_mmq[] = { 8, 16, 32, 64, 128, 512, 2048 };
  static const int toks_mmf[] = { 2, 4, 8, 16, 32, 64, 128, 256 };
  const int *toks = mmf_only ? toks_mmf : toks_mmq;
  const guint n_toks = mmf_only ? G_N_ELEMENTS (toks_mmf) : G_N_ELEMENTS (toks_mmq);
  const char *only;
  char name[64];
  g_autofree char *why = NULL;
  GError *error = NULL;
  double copy_gbps = 0;
  cublasHandle_t blas;

  if (!bln_cuda_available (&why))
    {
      g_print ("bench: no GPU: %s\n", why);
      return 0;
    }
  if (!bln_kernels_mmq_supports (BLN_TYPE_Q4_K))
    {
      g_print ("bench: this GPU has no int8 mma\n");
      return 0;
    }
  rng_state = 0x243f6a8885a308d3ULL;
  if (bench_copy (&copy_gbps) != 0)
    return 1;
  if (cublasCreate (&blas) != CUBLAS_STATUS_SUCCESS)
    {
      g_printerr ("bench: cublasCreate failed\n");
      return 1;
    }
  g_print ("device-to-device copy: %.1f GB/s\n", copy_gbps);
  g_print ("median per product over 15 rounds; GB/s = GGUF weight bytes / time; the 7B "
           "Q4_K_M layer: 3584x3584 (q, o), 3584x512 (k, v), 3584x18944 (gate, up), "
           "18944x3584 (down, Q6_K in half the layers), 152064x3584 (output, Q6_K)\n");
  /* BALEEN_BENCH_ONLY=ROWSxCOLSxTOKENS (e.g. 18944x3584x64) times that case
   * alone (for a profiler) */
  only = g_getenv ("BALEEN_BENCH_ONLY");
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    for (guint k = 0; k < n_toks; k++)
      if ((!mmf_only || shapes[s].type != BLN_TYPE_Q4_0)
          && (g_snprintf (name, sizeof name, "%dx%dx%d", shapes[s].n_out, shapes[s].n_in,
                          toks[k]), only == NULL || strcmp (only, name) == 0)
          && bench_mmq_one (blas, shapes[s].type, shapes[s].n_in, shapes[s].n_out, toks[k],
                         copy_gbps) != 0)
        {
          cublasDestroy (blas);
          return 1;
        }
  cublasDestroy (blas);
  (void) error;
  return 0;
}

int
main (int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    if (strcmp (argv[i], "--bench") == 0)
      return run_bench ();
    else if (strcmp (argv[i], "--bench-attn") == 0)
      return run_bench_attn ();
    else if (strcmp (argv[i], "--bench-rope-attn") == 0)
      return run_bench_rope_attn ();
    else if (strcmp (argv[i], "--bench-mmq") == 0)
      return run_bench_mmq (FALSE);
    else if (strcmp (argv[i], "--bench-mmf") == 0)
      {
        bench_skip_mmq = TRUE;
        return run_bench_mmq (TRUE);
      }

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/CudaOps/probe", test_probe);
  g_test_add_func ("/Baleen/CudaOps/arguments", test_arguments);
  for (guint i = 0; i < G_N_ELEMENTS (matvec_types); i++)
    {
      g_autofree char *path = g_strdup_printf ("/Baleen/CudaOps/matvec/%s",
                                               bln_type_name (matvec_types[i]));

      g_test_add_data_func (path, GINT_TO_POINTER ((int) matvec_types[i]), test_matvec_type);
    }
  for (guint i = 0; i < G_N_ELEMENTS (mmq_types); i++)
    {
      g_autofree char *path = g_strdup_printf ("/Baleen/CudaOps/mmq/%s",
                                               bln_type_name (mmq_types[i]));

      g_test_add_data_func (path, GINT_TO_POINTER ((int) mmq_types[i]), test_mmq_type);
    }
  {
    static const BlnType mmf_types[] = { BLN_TYPE_Q4_K, BLN_TYPE_Q6_K, BLN_TYPE_Q8_0 };
    for (guint i = 0; i < G_N_ELEMENTS (mmf_types); i++)
      {
        g_autofree char *path = g_strdup_printf ("/Baleen/CudaOps/mmf/%s",
                                                 bln_type_name (mmf_types[i]));
        g_test_add_data_func (path, GINT_TO_POINTER ((int) mmf_types[i]), test_mmf_type);
      }
  }
  g_test_add_data_func ("/Baleen/CudaOps/attn-decode/f32", GINT_TO_POINTER (0),
                        test_attn_decode);
  g_test_add_data_func ("/Baleen/CudaOps/attn-decode/f16", GINT_TO_POINTER (1),
                        test_attn_decode);
  g_test_add_data_func ("/Baleen/CudaOps/attn-decode/q8", GINT_TO_POINTER (2),
                        test_attn_decode);
  g_test_add_func ("/Baleen/CudaOps/attn-decode/other-shapes", test_attn_decode_other);
  g_test_add_data_func ("/Baleen/CudaOps/attn-decode-rope/f32", GINT_TO_POINTER (0),
                        test_attn_decode_rope);
  g_test_add_data_func ("/Baleen/CudaOps/attn-decode-rope/f16", GINT_TO_POINTER (1),
                        test_attn_decode_rope);
  g_test_add_func ("/Baleen/CudaOps/kv-store-q8", test_kv_store_q8);
  g_test_add_func ("/Baleen/CudaOps/flash-prefill", test_flash_prefill);
  g_test_add_func ("/Baleen/CudaOps/flash-prefill-paged", test_flash_prefill_paged);
  g_test_add_data_func ("/Baleen/CudaOps/rmsnorm-f16/f16", GINT_TO_POINTER (0), test_rmsnorm_f16);
  g_test_add_data_func ("/Baleen/CudaOps/rmsnorm-f16/bf16", GINT_TO_POINTER (1),
                        test_rmsnorm_f16);
  g_test_add_data_func ("/Baleen/CudaOps/silu-mul-f16/f16", GINT_TO_POINTER (0),
                        test_silu_mul_f16);
  g_test_add_data_func ("/Baleen/CudaOps/silu-mul-f16/bf16", GINT_TO_POINTER (1),
                        test_silu_mul_f16);
  g_test_add_data_func ("/Baleen/CudaOps/gemm-accumulate/f16", GINT_TO_POINTER (0),
                        test_gemm_accumulate);
  g_test_add_data_func ("/Baleen/CudaOps/gemm-accumulate/bf16", GINT_TO_POINTER (1),
                        test_gemm_accumulate);
  g_test_add_func ("/Baleen/CudaOps/kv8-model", test_kv8_model);
  return g_test_run ();
}
