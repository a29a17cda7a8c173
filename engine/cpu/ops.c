/* cpu/ops.c — the float helpers the model code needs between matmuls.
 *
 * These run on vectors of the hidden size (a few thousand values), far less
 * work than the matmuls, so they are plain loops the compiler can vectorise;
 * only dot and axpy, which attention calls once per cached position, go
 * through the SIMD kernel table.
 */
#include <math.h>

#include "vecdot.h"

void
bln_cpu_rmsnorm (float *y, const float *x, const float *w, int64_t n, float eps)
{
  double acc[4] = { 0 };
  double sum = 0.0;
  float mean, inv;
  int64_t i = 0;

  g_return_if_fail (n > 0);
  for (; i + 4 <= n; i += 4)
    for (int l = 0; l < 4; l++)
      acc[l] += (double) x[i + l] * x[i + l];
  for (; i < n; i++)
    sum += (double) x[i] * x[i];
  sum += (acc[0] + acc[2]) + (acc[1] + acc[3]);
  mean = (float) (sum / (double) n);
  inv = 1.0f / sqrtf (mean + eps);
  if (w != NULL)
    for (i = 0; i < n; i++)
      y[i] = w[i] * (x[i] * inv);
  else
    for (i = 0; i < n; i++)
      y[i] = x[i] * inv;
}

void
bln_cpu_softmax (float *x, int64_t n)
{
  float max = -INFINITY;
  double sum = 0.0;
  float inv;

  g_return_if_fail (n > 0);
  for (int64_t i = 0; i < n; i++)
    max = fmaxf (max, x[i]);
  for (int64_t i = 0; i < n; i++)
    {
      x[i] = expf (x[i] - max);
      sum += x[i];
    }
  inv = (float) (1.0 / sum);
  for (int64_t i = 0; i < n; i++)
    x[i] *= inv;
}

void
bln_cpu_silu_mul (float *y, const float *gate, const float *up, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      float g = gate[i];
      y[i] = g / (1.0f + expf (-g)) * up[i];
    }
}

void
bln_cpu_add (float *y, const float *a, const float *b, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    y[i] = a[i] + b[i];
}

float
bln_cpu_dot (const float *a, const float *b, int64_t n)
{
  return bln_cpu_kernels ()->dot_f32 (a, b, n);
}

void
bln_cpu_axpy (float *y, float a, const float *x, int64_t n)
{
  bln_cpu_kernels ()->axpy_f32 (y, a, x, n);
}

void
bln_cpu_scale (float *x, float s, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    x[i] *= s;
}
